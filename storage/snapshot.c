/* storage/snapshot.c — external snapshots of an open device
 * (stg_snapshot_prepare / _commit / _abort; the contract is in blockdev.h).
 *
 * prepare does everything that may fail for ordinary reasons (flush, file
 * creation, the checks, opening the overlay and taking its write lock);
 * commit hands the open overlay to the backend's snapshot op, which checks
 * the pair again against the open image (cow_overlay_check: the same file
 * by st_dev/st_ino of its fd, the size), makes the image durable, and only
 * then changes anything (cow_overlay_attach, which cannot fail).
 */
#include "storage/blockdev.h"
#include "cow/cow.h"
#include "util/io.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* fsync @path itself (@dir false) or the directory that holds it. 0 or
 * -errno. */
static int sync_path(const char *path, bool dir)
{
	char *dup = strdup(path);
	int fd, r = 0;

	if (!dup)
		return -ENOMEM;
	fd = open(dir ? dirname(dup) : path, O_RDONLY | O_CLOEXEC | (dir ? O_DIRECTORY : 0));
	if (fd < 0) {
		r = -errno;
	} else {
		if (fsync(fd) < 0)
			r = -errno;
		close(fd);
	}
	free(dup);
	return r;
}

/* Create @path (O_EXCL) as the overlay of @dev's current image.
 * snap->created once the file exists. */
static int create_overlay(struct stg_dev *dev, const char *path, struct stg_snapshot *snap,
			  struct ut_err *err)
{
	struct cow_create_opts o = { 0 };
	char *base = realpath(dev->path, NULL);
	int fd, r;

	if (!base)
		return ut_errf_sys(err, -errno, "unable to resolve the path of '%s'", dev->path);
	fd = ut_open_image(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644, err);
	if (fd < 0) {
		r = fd;
		goto out;
	}
	close(fd);
	snap->created = true;
	/* as `cowvm image create -b` makes an overlay */
	o.size = dev->size;
	o.cluster_size = 65536;
	o.version = 3;
	o.extended_l2 = true;
	o.backing = base;
	o.backing_fmt = dev->ops->name;
	o.backing_open = true;   /* not opened again: the device's locks stay */
	r = cow_create(path, &o, err);
out:
	free(base);
	return r;
}

/* Is the open overlay @ov one for @dev (cow_overlay_match against the file
 * at the device's name: commit checks again against the open image)? 0 or
 * -errno with @err saying what differs. */
static int check_overlay(struct stg_dev *dev, struct cow_img *ov, struct ut_err *err)
{
	struct stat st;

	if (stat(dev->path, &st) < 0)
		return ut_errf_sys(err, -errno, "unable to stat '%s'", dev->path);
	return cow_overlay_match(ov, dev->path, &st, dev->ops->name, dev->size, err);
}

int stg_snapshot_prepare(struct stg_dev *dev, const char *path, unsigned flags,
			 struct stg_snapshot *snap, struct ut_err *err)
{
	struct cow_img *ov = NULL;
	char msg[UT_ERR_MSG_MAX];
	unsigned cf = COW_O_NO_BACKING;
	int r;

	memset(snap, 0, sizeof(*snap));
	if (dev->flags & STG_O_RDONLY)
		return ut_errf(err, -EROFS, "unable to snapshot '%s': the device is read-only", dev->path);
	if (!dev->ops->snapshot)
		return ut_errf(err, -ENOTSUP, "unable to snapshot '%s': the %s backend has no external snapshots",
			       dev->path, dev->ops->name);
	if (stg_inflight(dev))
		return ut_errf(err, -EBUSY, "unable to snapshot '%s': requests in flight", dev->path);
	r = stg_flush(dev);
	if (r < 0) {
		stg_take_error(dev, msg, sizeof(msg));
		return ut_errf(err, r, "unable to snapshot '%s': flush failed: %s", dev->path,
			       msg[0] ? msg : strerror(-r));
	}
	snap->path = strdup(path);
	if (!snap->path) {
		r = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (!(flags & STG_SNAP_EXISTING)) {
		r = create_overlay(dev, path, snap, err);
		if (r < 0)
			goto out;
	}
	/* durable, file and directory entry, before the image is frozen: an
	 * existing one too (qemu-img create syncs nothing), or a power cut
	 * after the switch could lose it and every write acknowledged since */
	r = sync_path(path, false);
	if (r == 0)
		r = sync_path(path, true);
	if (r < 0) {
		r = ut_errf_sys(err, r, "unable to make '%s' durable", path);
		goto out;
	}
	if (dev->flags & STG_O_DIRECT)
		cf |= COW_O_DIRECT;
	if (dev->flags & STG_O_NO_LOCK)
		cf |= COW_O_NO_LOCK;
	/* probed: an existing file may be anything */
	r = cow_open(path, NULL, cf, &ov, err);
	if (r < 0)
		goto out;
	r = check_overlay(dev, ov, err);
	if (r < 0)
		goto out;
	snap->priv = ov;
	ov = NULL;
out:
	if (r < 0) {
		if (ov)
			snap->priv = ov;   /* abort closes it, and knows its file */
		stg_snapshot_abort(dev, snap);
	}
	return r;
}

int stg_snapshot_commit(struct stg_dev *dev, struct stg_snapshot *snap, struct ut_err *err)
{
	int r;

	if (!snap->priv || !snap->path)
		return ut_errf(err, -EINVAL, "unable to snapshot '%s': no overlay prepared", dev->path);
	if (stg_inflight(dev))
		return ut_errf(err, -EBUSY, "unable to snapshot '%s': requests in flight", dev->path);
	if (!dev->ops->snapshot)
		return ut_errf(err, -ENOTSUP, "unable to snapshot '%s': the %s backend has no external snapshots",
			       dev->path, dev->ops->name);
	r = dev->ops->snapshot(dev, snap->priv, err);
	if (r < 0)
		return r;
	snap->priv = NULL;   /* the device's now */
	free(dev->path);
	dev->path = snap->path;
	snap->path = NULL;
	snap->created = false;
	return 0;
}

void stg_snapshot_abort(struct stg_dev *dev, struct stg_snapshot *snap)
{
	struct stat a, b;
	bool ours = true;

	(void)dev;
	if (snap->priv) {
		/* remove the overlay, not a file that took its name since */
		if (snap->created && snap->path)
			ours = fstat(cow_layer_fd(snap->priv), &a) == 0 && stat(snap->path, &b) == 0 &&
			       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
		cow_close(snap->priv);   /* unlocks it */
	}
	if (snap->created && snap->path && ours && unlink(snap->path) == 0)
		(void)sync_path(snap->path, true);
	free(snap->path);
	memset(snap, 0, sizeof(*snap));
}
