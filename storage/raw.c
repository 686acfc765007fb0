/* storage/raw.c — the raw-file backend: the image is the disk, byte for byte.
 * Discard punches holes; write-zeroes punches a hole when it may unmap
 * (STG_REQ_MAY_UNMAP), else uses FALLOC_FL_ZERO_RANGE, which keeps the
 * blocks (where that is not supported: a hole, allocated again; see
 * wz_mode). Where the file system supports neither mode (vfat, some FUSE
 * and network file systems), the zeros are written (wz_write), as QEMU's
 * block layer falls back to writing a zeroed buffer. The file is locked
 * like QEMU's raw files (cow/lock.h) from open to close.
 *
 * STG_O_DIRECT (cache=none): the file is opened through cow/ as a raw layer
 * with COW_O_DIRECT (which checks the file system, finds the alignment and
 * takes the locks); aligned reads and writes go to the engine on its
 * O_DIRECT fd, misaligned ones run synchronously through cow/'s bounce
 * buffers (after the engine ops in flight, since a padded write rewrites
 * neighbouring bytes).
 *
 * An external snapshot (raw_snapshot) hands the open fd, locks and all, to
 * a qcow2 overlay as its raw backing layer: the device becomes a qcow2
 * device (stg_qcow2_adopt).
 */
#include "storage/blockdev.h"
#include "storage/engine.h"
#include "cow/cow.h"
#include "cow/lock.h"
#include "util/io.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

struct raw {
	int fd;
	bool locked;    /* fd holds image locks */
	struct cow_img *dio;     /* STG_O_DIRECT: owns fd */
	void *zeros;             /* RAW_ZCHUNK zero bytes for wz_write, made at first use */
	bool no_fzero;           /* fallocate zeroes nothing here: write zeros at once */
};

/* Writing zeros where fallocate cannot: RAW_ZIOV vectors of one shared
 * zeroed RAW_ZCHUNK buffer per engine write. */
#define RAW_ZCHUNK (1u << 20)
#define RAW_ZIOV   8
/* Steps of a write-zeroes (req->priv[1]): 0..2 are cow_zero_fmode's
 * fallocate steps; WZ_WRITE writes zeros, req->priv[2] bytes written so
 * far of req->priv[3]. */
#define WZ_WRITE   3

static int raw_probe(const uint8_t *buf, size_t len)
{
	(void)buf;
	(void)len;
	return 1;   /* anything is a raw image; other formats score higher */
}

static int raw_open(struct stg_dev *d, struct ut_err *err)
{
	struct raw *raw = calloc(1, sizeof(*raw));
	int flags = O_CLOEXEC | ((d->flags & STG_O_RDONLY) ? O_RDONLY : O_RDWR);
	struct stat st;
	int r;

	if (!raw)
		return ut_errf(err, -ENOMEM, "out of memory opening '%s'", d->path);
	if (d->flags & STG_O_DIRECT) {
		r = cow_open(d->path, "raw", COW_O_DIRECT | COW_O_NO_BACKING |
			     ((d->flags & STG_O_RDONLY) ? COW_O_RDONLY : 0) |
			     ((d->flags & STG_O_NO_LOCK) ? COW_O_NO_LOCK : 0), &raw->dio, err);
		if (r < 0)
			goto out;
		raw->fd = cow_layer_fd(raw->dio);
	} else {
		raw->fd = ut_open_image(d->path, flags, 0, err);
	}
	if (raw->fd < 0) {
		r = raw->fd;
		goto out;
	}
	if (fstat(raw->fd, &st) < 0) {
		r = ut_errf_sys(err, -errno, "unable to stat '%s'", d->path);
		goto out_close;
	}
	if (S_ISBLK(st.st_mode)) {
		uint64_t sz;

		if (ioctl(raw->fd, BLKGETSIZE64, &sz) < 0) {
			r = ut_errf_sys(err, -errno, "unable to size block device '%s'", d->path);
			goto out_close;
		}
		d->size = sz;
	} else if (S_ISREG(st.st_mode)) {
		/* whole sectors, as cow/ and QEMU size it: reads past the end
		 * of the file are zero-filled by the engine */
		d->size = ((uint64_t)st.st_size + 511) & ~511ull;
	} else {
		r = ut_errf(err, -EINVAL, "'%s' is not a regular file or block device", d->path);
		goto out_close;
	}
	if (!(d->flags & STG_O_NO_LOCK) && !raw->dio) {   /* cow_open locked dio */
		r = cow_lock_fd(raw->fd, d->path,
				(d->flags & STG_O_RDONLY) ? COW_LOCK_SHARED : COW_LOCK_WRITE, err);
		if (r < 0)
			goto out_close;
		raw->locked = r > 0;
	}
	if (raw->dio && S_ISREG(st.st_mode) && !(d->flags & STG_O_RDONLY) &&
	    fallocate(raw->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st.st_size, 4096) < 0 &&
	    errno == EOPNOTSUPP)
		/* known before the first write-zeroes, which may not be
		 * aligned for a direct write of the zeros (raw_submit) */
		raw->no_fzero = true;
	d->priv = raw;
	stg_engine_register_fd(d->engine, raw->fd);   /* raw_close unregisters it */
	return 0;
out_close:
	if (raw->dio)
		cow_close(raw->dio);
	else
		close(raw->fd);
out:
	free(raw);
	return r;
}

/* The fallocate mode of step @step of a write-zeroes (req->priv[1] counts
 * them): cow_zero_fmode's, the steps cow/ takes for a raw layer. */
static int wz_mode(const struct stg_req *req, uint64_t step)
{
	return cow_zero_fmode(req->flags & STG_REQ_MAY_UNMAP, (unsigned)step);
}

static void raw_engine_done(void *opaque, int result);

/* Queue the next write of zeros of @req (step WZ_WRITE): up to RAW_ZIOV *
 * RAW_ZCHUNK bytes at req->offset + req->priv[2]; advances priv[2].
 * Returns 0 (queued; raw_engine_done continues) or -errno. */
static int wz_write(struct stg_dev *d, struct stg_req *req)
{
	struct raw *raw = d->priv;
	struct iovec iov[RAW_ZIOV];
	uint64_t at = req->priv[2], left = req->priv[3] - at, n = 0;
	int cnt = 0;

	if (!raw->zeros) {
		if (posix_memalign(&raw->zeros, 4096, RAW_ZCHUNK))
			return -ENOMEM;
		memset(raw->zeros, 0, RAW_ZCHUNK);
	}
	while (left > n && cnt < RAW_ZIOV) {
		uint64_t len = left - n < RAW_ZCHUNK ? left - n : RAW_ZCHUNK;

		iov[cnt].iov_base = raw->zeros;
		iov[cnt++].iov_len = (size_t)len;
		n += len;
	}
	req->priv[2] = at + n;
	return stg_engine_queue(d->engine, STG_EOP_WRITEV, raw->fd, iov, cnt, req->offset + at, n, 0,
				raw_engine_done, req);
}

/* Start writing @req's zeros instead of asking the file system. A regular
 * file is written only up to its size (past it reads as zeros, and the
 * disk's last sector may end past it), except under O_DIRECT, whose
 * requests here are aligned (raw_submit sends a misaligned one to cow/).
 * Returns 0 (queued, or nothing to write: completed) or -errno. */
static int wz_write_start(struct stg_dev *d, struct stg_req *req)
{
	struct raw *raw = d->priv;
	uint64_t end = req->offset + req->len;
	struct stat st;

	if (raw->dio && !cow_layer_dio_ok(raw->dio, NULL, 0, req->offset, req->len, req->offset))
		return -EOPNOTSUPP;   /* only if raw_open's probe was wrong */
	if (fstat(raw->fd, &st) < 0)
		return -errno;
	if (!raw->dio && S_ISREG(st.st_mode) && end > (uint64_t)st.st_size)
		end = (uint64_t)st.st_size > req->offset ? (uint64_t)st.st_size : req->offset;
	req->priv[1] = WZ_WRITE;
	req->priv[2] = 0;
	req->priv[3] = end - req->offset;
	if (!req->priv[3]) {
		stg_complete(d, req, 0);
		return 0;
	}
	return wz_write(d, req);
}

static void raw_engine_done(void *opaque, int result)
{
	struct stg_req *req = opaque;
	struct stg_dev *d = (struct stg_dev *)(uintptr_t)req->priv[0];

	if (req->op == STG_OP_WRITE_ZEROES) {
		struct raw *raw = d->priv;
		uint64_t step = req->priv[1];
		/* step 0 not supported: try the other mode; after a hole made
		 * in place of ZERO_RANGE: allocate */
		bool next = (step == 0 && result == -EOPNOTSUPP) || (step == 1 && result == 0);
		int mode = next ? wz_mode(req, step + 1) : -1;

		if (step == 2 && result == -EOPNOTSUPP)
			result = 0;   /* zeros are there; allocation is best effort */
		if (step == 1 && result == -EOPNOTSUPP) {
			/* neither mode: write the zeros, now and from now on */
			raw->no_fzero = true;
			result = wz_write_start(d, req);
			if (result == 0)
				return;
		} else if (step == WZ_WRITE && result >= 0 && req->priv[2] < req->priv[3]) {
			result = wz_write(d, req);
			if (result == 0)
				return;
		}
		if (mode >= 0) {
			req->priv[1] = step + 1;
			if (stg_engine_queue(d->engine, STG_EOP_FALLOCATE, raw->fd, NULL, 0, req->offset,
					     req->len, mode, raw_engine_done, req) == 0)
				return;
		}
	}
	if (result == -EOPNOTSUPP && req->op == STG_OP_DISCARD)
		result = 0;   /* discard is advisory */
	stg_complete(d, req, result < 0 ? result : 0);
}

/* With O_DIRECT: are the offset and every vector aligned for the fd? */
static bool dio_ok(const struct raw *raw, const struct stg_req *req)
{
	return !raw->dio || cow_layer_dio_ok(raw->dio, req->iov, req->iovcnt, 0, req->len, req->offset);
}

/* A misaligned O_DIRECT read or write, or a misaligned write-zeroes on a
 * file system that cannot zero with fallocate (raw_open probes a punch
 * past the end of the file), synchronously through cow/ (which bounces
 * them, writing the zeros' partial blocks by read-modify-write) once
 * nothing else is in flight. */
static int dio_bounce(struct stg_dev *d, struct stg_req *req)
{
	struct raw *raw = d->priv;
	int r;

	stg_engine_drain(d->engine);
	if (req->op == STG_OP_READ)
		r = cow_readv(raw->dio, req->iov, req->iovcnt, req->offset, NULL);
	else if (req->op == STG_OP_WRITE)
		r = cow_writev(raw->dio, req->iov, req->iovcnt, req->offset, NULL);
	else
		r = cow_write_zeroes(raw->dio, req->len, req->offset,
				     (req->flags & STG_REQ_MAY_UNMAP) ? COW_ZERO_MAY_UNMAP : 0, NULL);
	stg_complete(d, req, r);
	return 0;
}

static int raw_submit(struct stg_dev *d, struct stg_req *req)
{
	struct raw *raw = d->priv;

	req->priv[0] = (uint64_t)(uintptr_t)d;
	req->priv[1] = 0;
	if ((req->op == STG_OP_READ || req->op == STG_OP_WRITE) && !dio_ok(raw, req))
		return dio_bounce(d, req);
	switch (req->op) {
	case STG_OP_READ:
		return stg_engine_queue_wait(d->engine, STG_EOP_READV, raw->fd, req->iov, req->iovcnt,
					req->offset, req->len, 0, raw_engine_done, req);
	case STG_OP_WRITE:
		return stg_engine_queue_wait(d->engine, STG_EOP_WRITEV, raw->fd, req->iov, req->iovcnt,
					req->offset, req->len, 0, raw_engine_done, req);
	case STG_OP_FLUSH:
		return stg_engine_queue_wait(d->engine, STG_EOP_FSYNC, raw->fd, NULL, 0, 0, 0, 0,
					raw_engine_done, req);
	case STG_OP_DISCARD:
		return stg_engine_queue_wait(d->engine, STG_EOP_FALLOCATE, raw->fd, NULL, 0, req->offset,
					req->len, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					raw_engine_done, req);
	case STG_OP_WRITE_ZEROES:
		if (raw->no_fzero) {
			int r;

			if (raw->dio &&
			    !cow_layer_dio_ok(raw->dio, NULL, 0, req->offset, req->len, req->offset))
				return dio_bounce(d, req);
			r = wz_write_start(d, req);
			if (r < 0)
				stg_complete(d, req, r);
			return 0;
		}
		return stg_engine_queue_wait(d->engine, STG_EOP_FALLOCATE, raw->fd, NULL, 0, req->offset,
					req->len, wz_mode(req, 0), raw_engine_done, req);
	}
	return -EINVAL;
}

static int raw_get_info(struct stg_dev *d, struct stg_info *info)
{
	struct raw *raw = d->priv;
	struct stat st;

	if (fstat(raw->fd, &st) == 0)
		info->actual_size = (uint64_t)st.st_blocks * 512;
	info->discard = true;
	return 0;
}

static int raw_close(struct stg_dev *d)
{
	struct raw *raw = d->priv;
	int r = 0;

	if (!raw)
		return 0;
	stg_engine_unregister_fd(d->engine, raw->fd);
	if (raw->dio) {
		r = cow_close(raw->dio);
	} else {
		if (raw->locked)
			cow_unlock_fd(raw->fd);
		close(raw->fd);
	}
	free(raw->zeros);
	free(raw);
	d->priv = NULL;
	return r;
}

/* External snapshot (blockdev.h): the raw file becomes a raw backing
 * layer of @overlay and the device a qcow2 device. Its fd is kept (never
 * unlocked, still registered with the engine: q2_close unregisters it as
 * a layer); without O_DIRECT it gets a cow/ layer around it. */
static int raw_snapshot(struct stg_dev *d, struct cow_img *overlay, struct ut_err *err)
{
	struct raw *raw = d->priv;
	struct cow_img *img = raw->dio;
	int r;

	stg_engine_drain(d->engine);
	if (!img) {
		r = cow_wrap_raw_fd(raw->fd, d->path, raw->locked, &img, err);
		if (r < 0)
			return r;
	}
	r = cow_overlay_check(overlay, img, err);
	if (r == 0 && stg_qcow2_adopt(d, overlay, img) < 0)
		r = ut_errf(err, -ENOMEM, "out of memory switching '%s' to its overlay", d->path);
	if (r < 0) {
		/* the image's fdatasync failed: Linux reported it to this
		 * call only, the device's own flushes would succeed */
		if (cow_sync_failed(img))
			stg_note_flush_failed(d);
		if (!raw->dio)
			cow_unwrap_fd(img);
		return r;
	}
	free(raw->zeros);
	free(raw);
	return 0;
}

/* The raw file's fd (set at open, kept until close; blockdev.h). */
static int raw_image_fd(struct stg_dev *d)
{
	const struct raw *raw = d->priv;

	return raw->fd;
}

const struct stg_backend_ops stg_raw_ops = {
	.name = "raw",
	.probe = raw_probe,
	.open = raw_open,
	.submit = raw_submit,
	.get_info = raw_get_info,
	.close = raw_close,
	.snapshot = raw_snapshot,
	.image_fd = raw_image_fd,
};
