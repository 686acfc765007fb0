/* core/snapshot.c — an external snapshot of a running VM's disk (QMP's
 * blockdev-snapshot-sync): vmm_machine_disk_snapshot and
 * vmm_machine_disk_snapshot_start, contracts in core/machine.h.
 *
 *   running or paused (the vCPUs are never paused for it: no STOP/RESUME;
 *   the guest's disk goes on serving requests until the drained section)
 *     ──job_begin (loop thread): the disk found and checked──> begun
 *     ──job_create (a worker thread for _start, the caller's for the
 *       synchronous call): vmm_blk_snapshot_create: the overlay file made
 *       (unnamed and linked, or under a temporary name and renamed),
 *       durable, opened; the image's data so far pushed to the
 *       disk──> created
 *     ──job_finish, loop thread: on_disk_snapshot hook (the catalog
 *       records the overlay)──> recorded
 *     ──vmm_blk_snapshot_prepare: the drained section begins (the disk's
 *       lock held; requests in flight finish; the flush of what was
 *       written since job_create)──> prepared
 *     ──vmm_blk_snapshot_commit──> the disk writes the overlay; the section
 *       ends; cfg.disks names it (for a later save)
 *   job_create fails: nothing to undo (the file is gone); the hook fails:
 *   the created file is removed (vmm_blk_snapshot_abort_created); prepare
 *   or commit fails (the section closed, the file still at its name and
 *   held in job->snap): the record first, then the file (undo_record):
 *     ──hook with undo succeeds──> the file removed (abort_created): as
 *       before the snapshot
 *     ──hook with undo fails──> the file KEPT (vmm_blk_snapshot_keep_created):
 *       the record still names it, and it works (a complete overlay of the
 *       image, nothing written to it: `cowvm start` opens it); the error
 *       says both failures and that the file was kept. Removing it would
 *       leave a record naming no file.
 *   Removal is by identity (storage/: st_dev/st_ino noted when made): a
 *   file that took the overlay's name meanwhile is never removed; a
 *   file at the image's name replaced meanwhile (what makes commit fail)
 *   is not touched either way, and nothing is made again.
 *   The run ends while a worker creates (vmm_machine_disk_job_cancel):
 *   the worker is joined, the file removed (the hook has not run: it runs
 *   in job_finish only), the caller told -ECANCELED. The synchronous
 *   vmm_machine_disk_snapshot runs the same job_finish.
 *   A request that failed while the disk drained may pause the VM on the
 *   error, as it would have anyway.
 * The drained section runs on the loop thread (the control socket's): no
 * kick, completion or retry of the disk runs meanwhile; a vCPU thread that
 * touches the disk's registers waits for the section's end
 * (core/virtio/blk.h), as a QEMU vCPU waits for the big lock while the
 * main loop takes the snapshot. Only the flush of what the guest wrote
 * during job_create and the switch itself happen inside it; QEMU drains
 * the disk for its whole command (file creation and the full flush
 * included).
 */
#include "core/machine.h"
#include "core/device.h"
#include "core/virtio/blk.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

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

/* One snapshot of one disk, from job_begin to the end of job_finish. */
struct vmm_disk_job {
	struct vmm_machine *m;
	struct vmm_device *dev;
	int idx;                     /* in cfg.disks */
	unsigned flags;              /* VMM_SNAP_* */
	char *path;                  /* the overlay, as given (owned) */
	char image[PATH_MAX];        /* realpath of the disk's image */
	char serial[21];
	uint64_t virtual_size;
	struct stg_snapshot snap;    /* from job_create until prepare */
	unsigned recorded_delay_ms;  /* test hook, see job_finish */
	/* _start only */
	pthread_t thread;
	int efd;                     /* eventfd: the worker is done */
	unsigned delay_ms;           /* test hook, see job_thread */
	int r;                       /* job_create's */
	struct ut_err err;           /* job_create's */
	vmm_disk_snapshot_done_fn done;
	void *opaque;
};

/* Find and check the disk, and what the job needs of it, @path copied
 * into job->path (loop thread). 0 or -errno with @err; the caller frees
 * job->path either way. */
static int job_begin(struct vmm_machine *m, const char *device, const char *path,
		     unsigned flags, struct vmm_disk_job *job, struct ut_err *err)
{
	char cur[PATH_MAX];
	bool ro;
	int r;

	job->m = m;
	job->flags = flags;
	r = find_disk(m, device, &job->idx, &job->dev, err);
	if (r)
		return r;
	if (job->idx >= m->cfg.ndisks)   /* every virtio-blk is a cfg.disks entry */
		return ut_errf(err, -ENODEV, "device '%s': not one of the machine's disks",
			       job->dev->id);
	if (!path[0])
		return ut_errf(err, -EINVAL, "device '%s': the snapshot file name is empty",
			       job->dev->id);
	if (strchr(path, ','))
		return ut_errf(err, -EINVAL, "device '%s': snapshot file '%s': a ',' cannot stand in "
			       "a disk's options (the state file and --disk keep them)", job->dev->id,
			       path);
	if (m->disk_job)
		return ut_errf(err, -EBUSY, "device '%s': another disk snapshot (device '%s', file "
			       "'%s') is in progress; try again when it has answered", job->dev->id,
			       m->disk_job->dev->id, m->disk_job->path);
	r = vmm_blk_disk_info(job->dev, cur, sizeof(cur), &job->virtual_size, &ro);
	if (r)
		return ut_errf(err, r, "device '%s': image path too long", job->dev->id);
	if (ro)
		return ut_errf(err, -EROFS, "device '%s': disk '%s' is read-only: nothing to "
			       "snapshot", job->dev->id, cur);
	if (!realpath(cur, job->image))
		return ut_errf_sys(err, -errno, "device '%s': unable to resolve '%s'", job->dev->id,
				   cur);
	vmm_blk_serial(job->dev, job->serial);   /* takes the device's lock */
	if (getenv("COWVM_TEST_SNAPSHOT_RECORDED_DELAY_MS"))
		job->recorded_delay_ms =
			(unsigned)strtoul(getenv("COWVM_TEST_SNAPSHOT_RECORDED_DELAY_MS"), NULL, 10);
	job->path = strdup(path);
	if (!job->path)
		return ut_errf(err, -ENOMEM, "out of memory");
	return 0;
}

static unsigned stg_flags(const struct vmm_disk_job *job)
{
	return job->flags & VMM_SNAP_EXISTING ? STG_SNAP_EXISTING : 0;
}

/* The slow part, while the disk serves the guest (any thread). */
static int job_create(struct vmm_disk_job *job, struct ut_err *err)
{
	return vmm_blk_snapshot_create(job->dev, job->path, stg_flags(job), &job->snap, err);
}

/* The drain, the flush or the switch failed (@r, @err) after the hook
 * recorded snapshot @s: the hook called to undo that. 0 (undone: the
 * caller removes the overlay's file), or -errno when the record stays:
 * then the caller keeps the file (the record names it, and it works: a
 * complete overlay of the image with nothing written to it) and @err
 * says both problems and that the file was kept. */
static int undo_record(struct vmm_disk_job *job, const struct vmm_disk_snapshot *s, int r,
		       struct ut_err *err)
{
	struct vmm_machine *m = job->m;
	struct ut_err undo = { 0, "" };
	char msg[2 * UT_ERR_MSG_MAX + 2 * PATH_MAX + 160];
	int u;

	u = m->on_disk_snapshot(m, m->on_disk_snapshot_opaque, s, true, &undo);
	if (u == 0)
		return 0;
	/* the file kept comes before the undo's message: if the whole is
	 * cut to UT_ERR_MSG_MAX, the undo's detail goes, not that */
	snprintf(msg, sizeof(msg), "%s; and the record of the snapshot could not be put back, so "
		 "'%s' was kept (the record names it; an overlay of '%s' with nothing written to "
		 "it): %s", err->msg, s->overlay, s->image, undo.msg[0] ? undo.msg : strerror(-u));
	ut_errf(err, r, "%s", msg);
	return u;
}

/* After a successful job_create, on the loop thread: the hook, the
 * drained section, the switch. 0, or -errno with @err and everything
 * undone (job->snap released either way), but for a record the hook
 * could not undo: then the overlay's file is kept (undo_record). */
static int job_finish(struct vmm_disk_job *job, struct ut_err *err)
{
	struct vmm_machine *m = job->m;
	struct vmm_device *dev = job->dev;
	struct vmm_disk_snapshot s = { 0 };
	char overlay[PATH_MAX];
	char *opts = NULL;
	bool hooked = false;
	int r;

	if (!realpath(job->path, overlay)) {
		r = ut_errf_sys(err, -errno, "device '%s': unable to resolve '%s'", dev->id,
				job->path);
		goto out;
	}
	/* job_begin refused a ',' in the name given; a directory (a symbolic
	 * link, the working directory) may still bring one into the
	 * absolute name the disk's options carry */
	if (strchr(overlay, ',')) {
		r = ut_errf(err, -EINVAL, "device '%s': snapshot file '%s' is '%s': a ',' cannot "
			    "stand in a disk's options (the state file and --disk keep them)", dev->id,
			    job->path, overlay);
		goto out;
	}
	opts = opts_with_overlay(m->cfg.disks[job->idx], overlay, job->serial);
	if (!opts) {
		r = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	s.disk = job->idx;
	s.device = dev->id;
	s.image = job->image;
	s.overlay = overlay;
	s.virtual_size = job->virtual_size;
	if (m->on_disk_snapshot) {
		r = m->on_disk_snapshot(m, m->on_disk_snapshot_opaque, &s, false, err);
		if (r) {
			ut_err_prefix(err, "device '%s': snapshot '%s' cancelled", dev->id, overlay);
			goto out;
		}
		hooked = true;
	}
	/* test hook COWVM_TEST_SNAPSHOT_RECORDED_DELAY_MS (read when the job
	 * begins): the loop thread waits that long between the record and
	 * the drained section (the VM's disks and control socket wait too),
	 * so that tests/integration/snapshot-catalog-undo.sh can make the
	 * prepare fail (the image's name moved away) and the undo too (the
	 * catalog's lock taken) */
	if (job->recorded_delay_ms)
		nanosleep(&(struct timespec){ job->recorded_delay_ms / 1000,
					      (long)(job->recorded_delay_ms % 1000) * 1000000L }, NULL);
	/* the drained section: prepare opens it, commit closes it; when
	 * either fails the section is closed and job->snap still holds the
	 * overlay's file (removed or kept below) */
	r = vmm_blk_snapshot_prepare(dev, job->path, stg_flags(job), &job->snap, err);
	if (r == 0)
		r = vmm_blk_snapshot_commit(dev, &job->snap, err);   /* releases job->snap */
	if (r)
		goto out;
	hooked = false;
	free(m->disk_opts[job->idx]);
	m->disk_opts[job->idx] = opts;
	m->cfg.disks[job->idx] = opts;
	opts = NULL;
out:
	/* the record first, then the file: the file goes only when nothing
	 * names it any more */
	if (hooked && undo_record(job, &s, r, err))
		vmm_blk_snapshot_keep_created(dev, &job->snap);
	else
		vmm_blk_snapshot_abort_created(dev, &job->snap);   /* none after a commit */
	free(opts);
	return r;
}

int vmm_machine_disk_snapshot(struct vmm_machine *m, const char *device, const char *path,
			      unsigned flags, struct ut_err *err)
{
	struct vmm_disk_job job = { 0 };
	int r;

	r = job_begin(m, device, path, flags, &job, err);
	if (r == 0)
		r = job_create(&job, err);
	if (r == 0)
		r = job_finish(&job, err);
	free(job.path);
	return r;
}

/* ---- the same with job_create on a worker thread ---- */

static void job_free(struct vmm_disk_job *job)
{
	if (job->efd >= 0) {
		vmm_loop_del(&job->m->vm.loop, job->efd);   /* nothing if not watched */
		close(job->efd);
	}
	free(job->path);
	free(job);
}

static void *job_thread(void *opaque)
{
	struct vmm_disk_job *job = opaque;
	uint64_t one = 1;

	job->r = job_create(job, &job->err);
	/* test hook COWVM_TEST_SNAPSHOT_DELAY_MS (read when the job starts):
	 * the worker's part takes that much longer, as a large flush would,
	 * with the overlay complete at its name: tests/integration/
	 * snapshot-live.sh checks what the guest and the control socket can do
	 * meanwhile */
	if (job->delay_ms)
		nanosleep(&(struct timespec){ job->delay_ms / 1000,
					      (long)(job->delay_ms % 1000) * 1000000L }, NULL);
	if (write(job->efd, &one, sizeof(one)) < 0) {
		/* an eventfd write fails only on overflow: it is readable then */
	}
	return NULL;
}

/* The worker is done (loop thread). */
static void job_ready(void *opaque, uint32_t events)
{
	struct vmm_disk_job *job = opaque;
	struct vmm_machine *m = job->m;
	uint64_t n;
	int r;

	(void)events;
	if (read(job->efd, &n, sizeof(n)) < 0 && errno == EAGAIN)
		return;
	pthread_join(job->thread, NULL);
	r = job->r;
	if (r == 0)
		r = job_finish(job, &job->err);
	m->disk_job = NULL;   /* before done: it may start the next one */
	job->done(job->opaque, r, &job->err);
	job_free(job);
	vmm_machine_disk_job_ended(m, false);
}

int vmm_machine_disk_snapshot_start(struct vmm_machine *m, const char *device, const char *path,
				    unsigned flags, vmm_disk_snapshot_done_fn done, void *opaque,
				    struct ut_err *err)
{
	struct vmm_disk_job *job = calloc(1, sizeof(*job));
	int r;

	if (!job)
		return ut_errf(err, -ENOMEM, "out of memory");
	job->efd = -1;
	r = job_begin(m, device, path, flags, job, err);
	if (r)
		goto out;
	job->done = done;
	job->opaque = opaque;
	if (getenv("COWVM_TEST_SNAPSHOT_DELAY_MS"))
		job->delay_ms = (unsigned)strtoul(getenv("COWVM_TEST_SNAPSHOT_DELAY_MS"), NULL, 10);
	job->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (job->efd < 0) {
		r = ut_errf_sys(err, -errno, "device '%s': unable to create an eventfd",
				job->dev->id);
		goto out;
	}
	r = vmm_loop_add(&m->vm.loop, job->efd, EPOLLIN, job_ready, job);
	if (r) {
		ut_errf_sys(err, r, "device '%s': unable to watch an eventfd", job->dev->id);
		goto out;
	}
	/* the worker inherits the loop thread's signal mask (the stop
	 * signals blocked, vmm_machine_run) */
	r = -pthread_create(&job->thread, NULL, job_thread, job);
	if (r) {
		ut_errf_sys(err, r, "device '%s': unable to start a thread", job->dev->id);
		goto out;
	}
	m->disk_job = job;
	return 0;
out:
	job_free(job);
	return r;
}

void vmm_machine_disk_job_cancel(struct vmm_machine *m)
{
	struct vmm_disk_job *job = m->disk_job;
	struct ut_err err = { 0, "" };

	if (!job)
		return;
	pthread_join(job->thread, NULL);
	if (job->r == 0)
		vmm_blk_snapshot_abort_created(job->dev, &job->snap);
	m->disk_job = NULL;
	ut_errf(&err, -ECANCELED, "device '%s': snapshot '%s' cancelled: the VM's run ended "
		"first", job->dev->id, job->path);
	job->done(job->opaque, -ECANCELED, &err);
	job_free(job);
	vmm_machine_disk_job_ended(m, true);
}

bool vmm_machine_disk_job_info(struct vmm_machine *m, const char **device, const char **file)
{
	if (!m->disk_job)
		return false;
	*device = m->disk_job->dev->id;
	*file = m->disk_job->path;
	return true;
}
