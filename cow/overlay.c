/* cow/overlay.c — external snapshots: an open, writable image becomes the
 * frozen backing layer of a new overlay (storage/'s stg_snapshot_commit,
 * QMP's blockdev-snapshot-sync), without being closed or unlocked; and
 * raw file descriptors opened outside cow/ wrapped as layers for it.
 *
 * Transition (cow/cow.h, "of an image that gets an overlay"):
 *   TOP (writable, write lock)
 *     --cow_overlay_check: checks, everything made durable (cow_flush or
 *       fdatasync), preallocated blocks released (cow_prealloc_trim)-->
 *   TOP, clean (a failure here leaves it TOP and writable)
 *     --cow_overlay_attach: lock bytes 101/103 released (cow_lock_downgrade),
 *       img->ro set, the overlay's backing-->
 *   BACKING (read-only for good: cow_data_writable, cow_flush and cow_sync
 *       refuse or skip it; its fd keeps the O_RDWR mode it was opened with,
 *       but nothing in cow/ or storage/ writes through it, I7)
 */
#include "cow/qcow2.h"
#include "cow/lock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cow_wrap_raw_fd(int fd, const char *path, bool locked, struct cow_img **out,
		    struct ut_err *err)
{
	struct cow_img *img;
	struct stat st;

	*out = NULL;
	if (fstat(fd, &st) < 0)
		return ut_errf_sys(err, -errno, "unable to stat '%s'", path);
	img = calloc(1, sizeof(*img));
	if (!img)
		return ut_errf(err, -ENOMEM, "out of memory");
	img->path = strdup(path);
	if (!img->path) {
		free(img);
		return ut_errf(err, -ENOMEM, "out of memory");
	}
	img->fd = fd;
	img->locked = locked;
	img->fmt = COW_FMT_RAW;
	img->depth = 1;
	img->file_size = cow_fd_size(fd, &st);
	/* whole sectors, as cow_open_layer and storage/raw.c size it */
	img->size = (img->file_size + 511) & ~511ull;
	*out = img;
	return 0;
}

void cow_unwrap_fd(struct cow_img *img)
{
	if (!img)
		return;
	img->fd = -1;            /* neither unlocked nor closed: the caller's */
	img->locked = false;
	cow_img_free(img);
}

static const char *fmt_name(enum cow_fmt f)
{
	return f == COW_FMT_QCOW2 ? "qcow2" : "raw";
}

/* The overlay's backing file is another file than @img_path's: when both
 * names resolve to the same path, the file at that name was replaced
 * (renamed away, another put there) since it was opened. */
static int mismatch(struct cow_img *overlay, const char *img_path, struct ut_err *err)
{
	char *a = realpath(overlay->backing_path, NULL), *b = realpath(img_path, NULL);
	int r;

	if (a && b && !strcmp(a, b))
		r = ut_errf(err, -EINVAL, "'%s': the file at '%s' changed (was replaced) since it was opened: the overlay would not be backed by the open image",
			    overlay->path, a);
	else
		r = ut_errf(err, -EINVAL, "'%s': its backing file '%s' is not '%s'", overlay->path,
			    overlay->backing_path, img_path);
	free(a);
	free(b);
	return r;
}

int cow_overlay_match(struct cow_img *overlay, const char *img_path, const struct stat *img_st,
		      const char *img_fmt, uint64_t img_size, struct ut_err *err)
{
	struct stat a;

	if (overlay->fmt != COW_FMT_QCOW2)
		return ut_errf(err, -EINVAL, "'%s': not a qcow2 image (an overlay must be one)",
			       overlay->path);
	if (!overlay->h.backing[0])
		return ut_errf(err, -EINVAL, "'%s': has no backing file (it must be '%s')",
			       overlay->path, img_path);
	if (!overlay->backing_path) {
		overlay->backing_path = cow_resolve_backing(overlay->path, overlay->h.backing);
		if (!overlay->backing_path)
			return ut_errf(err, -ENOMEM, "out of memory");
	}
	if (overlay->size != img_size)
		return ut_errf(err, -EINVAL, "'%s': virtual size %llu differs from that of '%s' (%llu)",
			       overlay->path, (unsigned long long)overlay->size, img_path,
			       (unsigned long long)img_size);
	if (stat(overlay->backing_path, &a) < 0)
		return ut_errf_sys(err, -errno, "'%s': unable to open backing file '%s'", overlay->path,
				   overlay->backing_path);
	if (a.st_dev != img_st->st_dev || a.st_ino != img_st->st_ino)
		return mismatch(overlay, img_path, err);
	if (overlay->h.has_backing_fmt && strcmp(overlay->h.backing_fmt, img_fmt))
		return ut_errf(err, -EINVAL, "'%s': backing format '%s', but '%s' is %s", overlay->path,
			       overlay->h.backing_fmt, img_path, img_fmt);
	return 0;
}

int cow_overlay_check(struct cow_img *overlay, struct cow_img *img, struct ut_err *err)
{
	struct stat st;
	int ret;

	if (overlay->ro || overlay->hdr_only || overlay->keep_bitmaps)
		return ut_errf(err, -EROFS, "'%s': overlay is not opened for writing", overlay->path);
	if (overlay->backing)
		return ut_errf(err, -EINVAL, "'%s': overlay already has its backing chain open",
			       overlay->path);
	ret = cow_data_writable(img, err);
	if (ret < 0)
		return ret;
	/* against the open file, not whatever is at its name now */
	if (fstat(img->fd, &st) < 0)
		return ut_errf_sys(err, -errno, "unable to stat '%s'", img->path);
	ret = cow_overlay_match(overlay, img->path, &st, fmt_name(img->fmt), img->size, err);
	if (ret < 0)
		return ret;
	if (img->depth >= COW_MAX_CHAIN)
		return ut_errf(err, -ELOOP, "'%s': backing chain deeper than %d", overlay->path,
			       COW_MAX_CHAIN);
	/* durable before it is frozen: every write that reached the file
	 * (cow/'s and the caller's own on cow_layer_fd) */
	ret = img->fmt == COW_FMT_QCOW2 ? cow_flush(img, err) : cow_sync(img, err);
	/* its tracked bitmaps stored consistent, as QEMU stores them when
	 * an image becomes read-only (a write after a failed snapshot marks
	 * them in use again first: cow_bitmaps_dirty) */
	if (ret == 0)
		ret = cow_bitmaps_store(img, err);
	if (ret < 0)
		return ret;
	/* what cow_close does after its flush: no write may reach the file
	 * once it is a backing layer (I12) */
	return cow_prealloc_trim(img, err);
}

void cow_overlay_attach(struct cow_img *overlay, struct cow_img *img)
{
	/* the bytes a writer holds go, the shared ones stay: the file is
	 * never unlocked (cow/lock.h) */
	if (img->locked)
		(void)cow_lock_downgrade(img->fd);
	img->ro = true;
	/* its bitmaps were stored by the check and never change again */
	cow_bitmaps_track_free(img);
	overlay->backing = img;
	overlay->depth = img->depth + 1;
}
