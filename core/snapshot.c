/* core/snapshot.c — an external snapshot of a running VM's disk (QMP's
 * blockdev-snapshot-sync): vmm_machine_disk_snapshot, contract in
 * core/machine.h.
 *
 *   running or paused ──vmm_vm_pause──> paused
 *     ──vmm_blk_snapshot_prepare (requests in flight finish; the overlay
 *       file is made durable)──> prepared
 *     ──on_disk_snapshot hook (the catalog records the overlay)──> recorded
 *     ──vmm_blk_snapshot_commit──> the disk writes the overlay; cfg.disks
 *       names it (for a later save)
 *     ──vmm_vm_resume, only if it ran before──> as before
 *   prepare fails: nothing to undo; the hook fails: abort (the file prepare
 *   created is removed); commit fails: abort and the hook is called again
 *   with undo. In every failure the VM runs again if it ran (unless a
 *   request that failed while the disk drained paused it on the error:
 *   then it stays paused, told as any such pause).
 * Everything runs on the loop thread (the control socket's): no kick,
 * completion or retry of the disk can run between the steps.
 */
#include "core/machine.h"
#include "core/virtio/blk.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "vda" -> 0, "vdz" -> 25, "vdaa" -> 26 (Linux's sd/vd naming). Returns the
 * index or -1. */
static int vd_index(const char *name)
{
	long idx = 0;

	if (strncmp(name, "vd", 2) || !name[2] || strlen(name) > 5)
		return -1;
	for (const char *p = name + 2; *p; p++) {
		if (*p < 'a' || *p > 'z')
			return -1;
		idx = idx * 26 + (*p - 'a' + 1);
	}
	return (int)(idx - 1);
}

/* Find disk @device ("virtio-blkN" or "vdX"): its index in cfg.disks and
 * its device. Returns 0 or -ENODEV with @err. */
static int find_disk(struct vmm_machine *m, const char *device, int *idx,
		     struct vmm_device **dev, struct ut_err *err)
{
	struct vmm_vm *vm = &m->vm;
	int want = vd_index(device), n = 0;

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
	if (n == 1)
		return ut_errf(err, -ENODEV, "device '%s' not found: the VM's disk is virtio-blk0 "
			       "(vda)", device);
	return ut_errf(err, -ENODEV, "device '%s' not found: the VM's disks are virtio-blk0 to "
		       "virtio-blk%d (vda to vd%s%c)", device, n - 1,
		       n > 26 ? (char[2]){ (char)('a' + (n - 1) / 26 - 1), 0 } : "",
		       (char)('a' + (n - 1) % 26));
}

/* @opts ("path=F,format=raw,cache=none,...") with path=@overlay and
 * format=qcow2: a new string (malloc'd) or NULL (out of memory). */
static char *opts_with_overlay(const char *opts, const char *overlay)
{
	size_t cap = strlen(opts) + strlen(overlay) + 32, n = 0;
	char *out = malloc(cap);
	bool format = false;
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
			n += (size_t)snprintf(out + n, cap - n, ",%.*s", (int)len, p);
		}
		p += len + (end ? 1 : 0);
	}
	if (!format)
		snprintf(out + n, cap - n, ",format=qcow2");
	return out;
}

/* Did a device pause the VM on a disk error (a request that failed while
 * the disk's requests in flight were finished)? Then it stays paused, as
 * it would have without the snapshot: a resume would retry at once. */
static bool paused_on_error(struct vmm_vm *vm)
{
	bool r;

	pthread_mutex_lock(&vm->lock);
	r = vm->pause_why[0] != '\0';
	pthread_mutex_unlock(&vm->lock);
	return r;
}

int vmm_machine_disk_snapshot(struct vmm_machine *m, const char *device, const char *path,
			      unsigned flags, struct ut_err *err)
{
	struct stg_snapshot snap = { 0 };
	struct vmm_device *dev = NULL;
	struct vmm_disk_snapshot s = { 0 };
	char image[PATH_MAX], cur[PATH_MAX], overlay[PATH_MAX];
	char *opts = NULL;
	bool ro, was_paused, prepared = false, hooked = false;
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

	was_paused = vmm_vm_paused(&m->vm);
	r = vmm_vm_pause(&m->vm);
	if (r) {
		r = ut_errf(err, r, "unable to pause the vCPUs for the snapshot of '%s'", dev->id);
		goto out;
	}
	r = vmm_blk_snapshot_prepare(dev, path, flags & VMM_SNAP_EXISTING ? STG_SNAP_EXISTING : 0,
				     &snap, err);
	if (r)
		goto out;
	prepared = true;
	if (!realpath(path, overlay)) {
		r = ut_errf_sys(err, -errno, "device '%s': unable to resolve '%s'", dev->id, path);
		goto out;
	}
	opts = opts_with_overlay(m->cfg.disks[idx], overlay);
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
	r = vmm_blk_snapshot_commit(dev, &snap, err);
	if (r)
		goto out;
	prepared = hooked = false;
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
	if (!was_paused && !paused_on_error(&m->vm))
		vmm_vm_resume(&m->vm);
	return r;
}
