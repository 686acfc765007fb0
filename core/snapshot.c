/* core/snapshot.c — an external snapshot of a running VM's disk (QMP's
 * blockdev-snapshot-sync): vmm_machine_disk_snapshot, contract in
 * core/machine.h.
 *
 *   running or paused (the vCPUs are never paused for it: no STOP/RESUME)
 *     ──vmm_blk_snapshot_prepare: the drained section begins (the disk's
 *       lock held; requests in flight finish; the overlay file is made
 *       durable)──> prepared
 *     ──on_disk_snapshot hook (the catalog records the overlay)──> recorded
 *     ──vmm_blk_snapshot_commit──> the disk writes the overlay; the section
 *       ends; cfg.disks names it (for a later save)
 *   prepare fails: nothing to undo; the hook fails: abort (the file prepare
 *   created is removed); commit fails: it aborts, and the hook is called
 *   again with undo. A request that failed while the disk drained may
 *   pause the VM on the error, as it would have anyway.
 * Runs on the loop thread (the control socket's): no kick, completion or
 * retry of the disk runs meanwhile; a vCPU thread that touches the disk's
 * registers waits for the section's end (core/virtio/blk.h), as a QEMU vCPU
 * waits for the big lock while the main loop takes the snapshot.
 */
#include "core/machine.h"
#include "core/device.h"
#include "core/virtio/blk.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Find disk @device: "virtio-blkN", or "vdX": the disk given target=vdX
 * (cowvm start passes the catalog's targets) when the disks have targets,
 * else the X-th disk given. Its index in cfg.disks and its device. Returns
 * 0 or -ENODEV with @err. */
static int find_disk(struct vmm_machine *m, const char *device, int *idx,
		     struct vmm_device **dev, struct ut_err *err)
{
	struct vmm_vm *vm = &m->vm;
	int want = vmm_blk_target_index(device), n = 0, by_target = -1;
	char t[16], names[256] = "";
	size_t len = 0;

	for (int i = 0; i < m->cfg.ndisks; i++) {
		if (vmm_opt_get(m->cfg.disks[i], "target", t, sizeof(t)) != 1)
			continue;
		if (by_target < 0)
			by_target = -2;   /* the disks have targets: names are theirs */
		if (!strcmp(t, device))
			by_target = i;
		if (len < sizeof(names))
			len += (size_t)snprintf(names + len, sizeof(names) - len, "%svirtio-blk%d %s",
						len ? ", " : "", i, t);
	}
	if (want >= 0 && by_target != -1)
		want = by_target;   /* -2: no disk has that target */
	for (int i = 0; i < vm->ndevs; i++) {
		if (!vmm_blk_is(vm->devs[i]))
			continue;
		if (n == want || !strcmp(vm->devs[i]->id, device)) {
			*idx = n;
			*dev = vm->devs[i];
			return 0;
		}
		n++;
	}
	if (!n)
		return ut_errf(err, -ENODEV, "device '%s' not found: the VM has no disk", device);
	if (by_target != -1)
		return ut_errf(err, -ENODEV, "device '%s' not found: the VM's disks are %s", device,
			       names);
	if (n == 1)
		return ut_errf(err, -ENODEV, "device '%s' not found: the VM's disk is virtio-blk0 "
			       "(vda)", device);
	return ut_errf(err, -ENODEV, "device '%s' not found: the VM's disks are virtio-blk0 to "
		       "virtio-blk%d (vda to vd%s%c)", device, n - 1,
		       n > 26 ? (char[2]){ (char)('a' + (n - 1) / 26 - 1), 0 } : "",
		       (char)('a' + (n - 1) % 26));
}

/* @opts ("path=F,format=raw,cache=none,...") with path=@overlay and
 * format=qcow2, and serial=@serial when it had none (the default serial
 * is the file's base name: a restore from a later save must not show
 * the guest another one): a new string (malloc'd) or NULL (out of
 * memory). */
static char *opts_with_overlay(const char *opts, const char *overlay, const char *serial)
{
	size_t cap = strlen(opts) + strlen(overlay) + strlen(serial) + 48, n = 0;
	char *out = malloc(cap);
	bool format = false, has_serial = false;
	const char *p = opts;

	if (!out)
		return NULL;
	n += (size_t)snprintf(out + n, cap - n, "path=%s", overlay);
	while (*p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (len >= 7 && !strncmp(p, "format=", 7)) {
			n += (size_t)snprintf(out + n, cap - n, ",format=qcow2");
			format = true;
		} else if (len && strncmp(p, "path=", 5)) {
			if (len >= 7 && !strncmp(p, "serial=", 7))
				has_serial = true;
			n += (size_t)snprintf(out + n, cap - n, ",%.*s", (int)len, p);
		}
		p += len + (end ? 1 : 0);
	}
	if (!format)
		n += (size_t)snprintf(out + n, cap - n, ",format=qcow2");
	if (!has_serial && serial[0] && !strchr(serial, ','))
		snprintf(out + n, cap - n, ",serial=%s", serial);
	return out;
}

int vmm_machine_disk_snapshot(struct vmm_machine *m, const char *device, const char *path,
			      unsigned flags, struct ut_err *err)
{
	struct stg_snapshot snap = { 0 };
	struct vmm_device *dev = NULL;
	struct vmm_disk_snapshot s = { 0 };
	char image[PATH_MAX], cur[PATH_MAX], overlay[PATH_MAX], serial[21];
	char *opts = NULL;
	bool ro, prepared = false, hooked = false;
	int idx = -1, r;

	r = find_disk(m, device, &idx, &dev, err);
	if (r)
		return r;
	if (idx >= m->cfg.ndisks)   /* every virtio-blk is a cfg.disks entry */
		return ut_errf(err, -ENODEV, "device '%s': not one of the machine's disks", dev->id);
	if (!path[0])
		return ut_errf(err, -EINVAL, "device '%s': the snapshot file name is empty", dev->id);
	if (strchr(path, ','))
		return ut_errf(err, -EINVAL, "device '%s': snapshot file '%s': a ',' cannot stand in "
			       "a disk's options (the state file and --disk keep them)", dev->id, path);
	r = vmm_blk_disk_info(dev, cur, sizeof(cur), &s.virtual_size, &ro);
	if (r)
		return ut_errf(err, r, "device '%s': image path too long", dev->id);
	if (ro)
		return ut_errf(err, -EROFS, "device '%s': disk '%s' is read-only: nothing to "
			       "snapshot", dev->id, cur);
	if (!realpath(cur, image))
		return ut_errf_sys(err, -errno, "device '%s': unable to resolve '%s'", dev->id, cur);

	vmm_blk_serial(dev, serial);   /* before the section: it takes the device's lock */
	r = vmm_blk_snapshot_prepare(dev, path, flags & VMM_SNAP_EXISTING ? STG_SNAP_EXISTING : 0,
				     &snap, err);
	if (r)
		goto out;
	prepared = true;
	if (!realpath(path, overlay)) {
		r = ut_errf_sys(err, -errno, "device '%s': unable to resolve '%s'", dev->id, path);
		goto out;
	}
	opts = opts_with_overlay(m->cfg.disks[idx], overlay, serial);
	if (!opts) {
		r = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	s.disk = idx;
	s.device = dev->id;
	s.image = image;
	s.overlay = overlay;
	if (m->on_disk_snapshot) {
		r = m->on_disk_snapshot(m, m->on_disk_snapshot_opaque, &s, false, err);
		if (r) {
			ut_err_prefix(err, "device '%s': snapshot '%s' cancelled", dev->id, overlay);
			goto out;
		}
		hooked = true;
	}
	prepared = false;   /* commit ends the section, aborting when it fails */
	r = vmm_blk_snapshot_commit(dev, &snap, err);
	if (r)
		goto out;
	hooked = false;
	free(m->disk_opts[idx]);
	m->disk_opts[idx] = opts;
	m->cfg.disks[idx] = opts;
	opts = NULL;
out:
	if (prepared)
		vmm_blk_snapshot_abort(dev, &snap);
	if (hooked) {
		struct ut_err undo = { 0, "" };

		/* the catalog (or whatever the hook recorded) is put back */
		if (m->on_disk_snapshot(m, m->on_disk_snapshot_opaque, &s, true, &undo)) {
			char msg[2 * UT_ERR_MSG_MAX + 64];

			snprintf(msg, sizeof(msg), "%s; and the record of the snapshot could not be "
				 "put back: %s", err->msg, undo.msg);
			ut_errf(err, r, "%s", msg);
		}
	}
	free(opts);
	return r;
}
