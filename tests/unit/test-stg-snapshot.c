/* tests/unit/test-stg-snapshot.c — external snapshots of an open device
 * (stg_snapshot_prepare / _commit / _abort, storage/blockdev.h).
 *
 * For each kind of device (qcow2 with standard and with extended L2
 * entries, qcow2 on top of a backing file, qcow2 with a persistent bitmap
 * made by qemu-img, raw) on the io_uring engine and on the worker threads,
 * buffered and O_DIRECT: pattern A written, prepare + commit, pattern B
 * written over part of it, the whole disk read back against a model (A
 * where not overwritten, B where written), closed; then both files are
 * checked by cow_check and, where qemu-img is installed, by `qemu-img check`,
 * `qemu-img compare` (the old image against a model of A alone, the overlay
 * against A+B) and `qemu-img info` (the overlay names the old image and its
 * format). Locks: before commit a second open file description in this
 * process (OFD locks: like another process) gets no lock on the old image
 * and `qemu-img info` (no -U) of a qcow2 one fails (we write it); after
 * commit the description takes a shared lock but not a write lock and
 * `qemu-img info` succeeds (a backing layer's shared lock), while the
 * overlay is locked for writing (qemu-img info fails); and QEMU (qemu-io)
 * writes a clone overlay of its own on the frozen layer while the device
 * runs (a live clone), checked after. QEMU's read-only
 * opens of a raw file share writes, so for raw only the first checks mean
 * something. Two cases snapshot twice in a row (a chain of 3).
 * Error cases: an existing file without STG_SNAP_EXISTING (-EEXIST, the file
 * left alone, the device still writes its image), a read-only device
 * (-EROFS), a backend without the snapshot op (-ENOTSUP),
 * STG_SNAP_EXISTING with a wrong backing file, size, format or backing
 * format, or none, and with a right one (then abort leaves it), a directory
 * that does not exist, abort removing the created file, and a commit that
 * fails (the old image renamed and another file put at its name between
 * prepare and commit): the device keeps writing the old image (qcow2, and
 * raw buffered and O_DIRECT, then snapshotted once it is back); the failed
 * commit leaves the overlay at its name for the caller, whose abort
 * removes it or whose keep (raw buffered) leaves it, clean (cow_check,
 * qemu-img check). In cow/
 * alone: the frozen layer refuses every write and its file stays the same.
 *
 * Runs in /var/tmp (O_DIRECT needs a real file system). Exit 0 pass, 1
 * fail. */
#include "storage/blockdev.h"
#include "cow/cow.h"
#include "cow/lock.h"
#include "tests/unit/test-stg-snap.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/var/tmp/stgsnap.XXXXXX";

/* Write @len bytes of pattern @seed at @off through the device and into
 * @model. */
static void dev_write(struct stg_dev *d, uint8_t *model, uint64_t off, uint64_t len, unsigned seed)
{
	uint8_t *buf = aligned_alloc(4096, (len + 4095) & ~4095ull);

	ts_fill(buf, len, seed + (unsigned)(off >> 12));
	CHECK(stg_pwrite(d, buf, len, off) == 0);
	memcpy(model + off, buf, len);
	free(buf);
}

/* A second open file description of @path (like another process, OFD
 * locks): a shared lock yes, a write lock no. */
static void check_shared_only(const char *path)
{
	struct ut_err err;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	CHECK(fd >= 0);
	CHECK(cow_lock_fd(fd, path, COW_LOCK_SHARED, &err) == 1);
	cow_unlock_fd(fd);
	CHECK(cow_lock_fd(fd, path, COW_LOCK_WRITE, &err) == -EBUSY);
	close(fd);
}

/* A second description of @path gets no lock at all (we write it). */
static void check_locked(const char *path)
{
	struct ut_err err;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	CHECK(fd >= 0);
	CHECK(cow_lock_fd(fd, path, COW_LOCK_SHARED, &err) == -EBUSY);
	close(fd);
}

enum kind { K_QCOW2, K_QCOW2_EXTL2, K_CHAIN, K_BITMAP, K_RAW };
static const char *const kind_names[] = { "qcow2", "qcow2-extl2", "chain", "bitmap", "raw" };

/* Make the device's image @cur for @kind; @model gets what it reads.
 * Returns 0, 77 (skip: no qemu-img for the bitmap) or 1. */
static int make_image(enum kind k, const char *cur, uint8_t *model)
{
	struct cow_create_opts o = { .size = DISK };
	struct ut_err err;
	char lower[700];

	memset(model, 0, DISK);
	switch (k) {
	case K_QCOW2:
		return cow_create(cur, &o, &err) < 0;
	case K_QCOW2_EXTL2:
		o.extended_l2 = true;
		return cow_create(cur, &o, &err) < 0;
	case K_CHAIN: {
		struct cow_img *img;
		uint8_t *buf = malloc(DISK);
		int r;

		snprintf(lower, sizeof(lower), "%s.lower", cur);
		if (cow_create(lower, &o, &err) < 0 || cow_open(lower, NULL, 0, &img, &err) < 0) {
			free(buf);
			return 1;
		}
		ts_fill(buf, DISK, 99);
		r = cow_write(img, buf, DISK, 0, &err) < 0;
		cow_close(img);
		memcpy(model, buf, DISK);
		free(buf);
		o.size = 0;
		o.backing = lower;
		o.extended_l2 = true;
		return r || cow_create(cur, &o, &err) < 0;
	}
	case K_BITMAP:
		if (!ts_have_qemu)
			return 77;
		return ts_sh("qemu-img create -f qcow2 '%s' %u", cur, DISK) != 0 ||
		       ts_sh("qemu-img bitmap --add '%s' b0", cur) != 0;
	case K_RAW:
		return ts_make_image(cur, true, DISK, &err) < 0;
	}
	return 1;
}

/* The main round trip (see the top); @twice: a second snapshot on top. */
static void round_trip(enum kind k, unsigned flags, bool twice)
{
	char cur[600], ov[600], ov2[600], ma[600], mab[600], clone[600], real[PATH_MAX];
	const char *fmt = k == K_RAW ? "raw" : "qcow2";
	uint8_t *model = malloc(DISK), *model_a = malloc(DISK);
	struct stg_snapshot snap = { 0 };
	struct stg_info info;
	struct ut_err err;
	struct stg_dev *d;
	int depth0, r;

	snprintf(cur, sizeof(cur), "%s/%s-%x.img", dir, kind_names[k], flags);
	snprintf(ov, sizeof(ov), "%s/%s-%x.ov1", dir, kind_names[k], flags);
	snprintf(ov2, sizeof(ov2), "%s/%s-%x.ov2", dir, kind_names[k], flags);
	snprintf(clone, sizeof(clone), "%s/%s-%x.clone", dir, kind_names[k], flags);
	snprintf(ma, sizeof(ma), "%s/model-a.raw", dir);
	snprintf(mab, sizeof(mab), "%s/model-ab.raw", dir);
	r = make_image(k, cur, model);
	if (r == 77) {
		printf("SKIP: %s case: qemu-img is not installed\n", kind_names[k]);
		goto out;
	}
	CHECK(r == 0);
	r = stg_open(cur, NULL, flags, &d, &err);
	CHECKE(r == 0, &err);
	if (r < 0)
		goto out;
	printf("case %s, flags 0x%x%s\n", kind_names[k], flags, twice ? ", twice" : "");
	stg_get_info(d, &info);
	CHECK(!strcmp(info.format, fmt) && info.virtual_size == DISK);
	depth0 = info.chain_depth;

	/* A over the first 3/4 (the chain case keeps its lower layer's data
	 * in the last quarter) */
	dev_write(d, model, 0, DISK / 4 * 3, 1);
	CHECKE(stg_snapshot_prepare(d, ov, 0, &snap, &err) == 0, &err);
	CHECK(snap.created && snap.path && !strcmp(snap.path, ov) && access(ov, F_OK) == 0);
	check_locked(cur);   /* still written by us */
	check_locked(ov);    /* locked by prepare */
	if (ts_have_qemu) {
		/* (a raw file: QEMU's read-only opens share writes, so
		 * qemu-img info of a raw file in use succeeds anyway) */
		if (k != K_RAW)
			CHECK(ts_sh("qemu-img info '%s'", cur) != 0);
		CHECK(ts_sh("qemu-img info '%s'", ov) != 0);
	}
	CHECKE(stg_snapshot_commit(d, &snap, &err) == 0, &err);
	CHECK(!snap.path && !snap.priv);
	stg_snapshot_abort(d, &snap);   /* harmless after commit */
	CHECK(access(ov, F_OK) == 0);
	memcpy(model_a, model, DISK);
	CHECK(!strcmp(d->path, ov) && d->size == DISK);
	stg_get_info(d, &info);
	CHECK(!strcmp(info.format, "qcow2") && info.chain_depth == depth0 + 1);
	CHECK(realpath(cur, real) && !strcmp(info.backing, real));
	CHECK(!strcmp(info.backing_format, fmt));
	check_shared_only(cur);
	check_locked(ov);
	if (ts_have_qemu) {
		CHECK(ts_sh("qemu-img info '%s'", cur) == 0);   /* shared: readers welcome */
		CHECK(ts_sh("qemu-img info '%s'", ov) != 0);    /* the new top: in use */
		/* a live clone: QEMU writes its own overlay of the frozen
		 * layer while we run on ours */
		CHECK(ts_sh("qemu-img create -q -f qcow2 -b '%s' -F %s '%s'", cur, fmt, clone) == 0);
		CHECK(ts_sh("qemu-io -f qcow2 -c 'write -P 0x5a 0 64k' '%s'", clone) == 0);
	}
	/* B: aligned pieces, one misaligned, one across the A/unwritten edge */
	dev_write(d, model, 64 << 10, 128 << 10, 2);
	dev_write(d, model, (1 << 20) + 1000, 70001, 3);
	dev_write(d, model, DISK / 4 * 3 - (32 << 10), 96 << 10, 4);
	dev_write(d, model, DISK - 4096, 4096, 5);
	ts_dev_compare(d, model, "after the snapshot");
	if (twice) {
		ts_snapshot(d, ov2);
		stg_get_info(d, &info);
		CHECK(info.chain_depth == depth0 + 2);
		CHECK(realpath(ov, real) && !strcmp(info.backing, real) &&
		      !strcmp(info.backing_format, "qcow2"));
		check_shared_only(ov);
		check_shared_only(cur);
		ts_write_model(mab, model);   /* A+B: what ov holds */
		dev_write(d, model, 0, 8192, 6);
		dev_write(d, model, DISK / 2 + 512, 512, 7);
		ts_dev_compare(d, model, "after the second snapshot");
	}
	stg_close(d);

	/* the files */
	if (k != K_RAW)
		ts_check_clean(cur);
	ts_check_clean(ov);
	if (twice)
		ts_check_clean(ov2);
	if (ts_have_qemu) {
		ts_write_model(ma, model_a);
		CHECK(ts_sh("qemu-img compare -q '%s' '%s'", cur, ma) == 0);
		if (!twice)
			ts_write_model(mab, model);
		CHECK(ts_sh("qemu-img compare -q '%s' '%s'", ov, mab) == 0);
		CHECK(ts_sh("qemu-img info --output=json '%s' | grep -q '\"backing-filename\": \"%s\"'",
			 ov, realpath(cur, real) ? real : cur) == 0);
		CHECK(ts_sh("qemu-img info --output=json '%s' | grep -q '\"backing-filename-format\": \"%s\"'",
			 ov, fmt) == 0);
		if (twice) {
			ts_write_model(ma, model);
			CHECK(ts_sh("qemu-img compare -q '%s' '%s'", ov2, ma) == 0);
		}
		/* the clone: A, its own write over it */
		memset(model_a, 0x5a, 64 << 10);
		ts_write_model(ma, model_a);
		CHECK(ts_sh("qemu-img compare -q '%s' '%s'", clone, ma) == 0);
		ts_check_clean(clone);
		unlink(clone);
		if (k == K_BITMAP)   /* still listed (marked in use, as after a close) */
			CHECK(ts_sh("qemu-img info '%s' | grep -q 'name: b0'", cur) == 0);
	}
	/* cow/ reads the overlay's chain as the model too */
	{
		struct cow_img *img;
		uint8_t *buf = malloc(DISK);

		r = cow_open(twice ? ov2 : ov, NULL, COW_O_RDONLY, &img, &err);
		CHECKE(r == 0, &err);
		if (r == 0) {
			CHECK(cow_read(img, buf, DISK, 0, &err) == 0 && !memcmp(buf, model, DISK));
			cow_close(img);
		}
		free(buf);
	}
	unlink(ov);
	unlink(ov2);
out:
	free(model);
	free(model_a);
}

/* The device still writes @path's file: a write is read back. */
static void still_writes(struct stg_dev *d)
{
	uint8_t w[4096], r[4096];

	ts_fill(w, sizeof(w), 42);
	CHECK(stg_pwrite(d, w, sizeof(w), 8192) == 0);
	CHECK(stg_pread(d, r, sizeof(r), 8192) == 0 && !memcmp(w, r, sizeof(w)));
	CHECK(stg_flush(d) == 0);
}

static void error_cases(void)
{
	char cur[600], ov[600], other[600], moved[600];
	struct cow_create_opts o = { .size = DISK };
	struct stg_snapshot snap = { 0 };
	struct stg_info info;
	struct ut_err err;
	struct stg_dev *d, *ro;
	struct cow_img *img;
	uint8_t w[4096], r[4096];
	int fd;

	snprintf(cur, sizeof(cur), "%s/err.qcow2", dir);
	snprintf(ov, sizeof(ov), "%s/err.ov", dir);
	snprintf(other, sizeof(other), "%s/other.qcow2", dir);
	snprintf(moved, sizeof(moved), "%s/err-moved.qcow2", dir);
	d = ts_make_open(cur, false, 0);
	if (!d)
		return;

	/* an existing file, no STG_SNAP_EXISTING: -EEXIST, left alone */
	fd = open(ov, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	CHECK(fd >= 0 && write(fd, "keep", 4) == 4);
	close(fd);
	CHECK(stg_snapshot_prepare(d, ov, 0, &snap, &err) == -EEXIST);
	CHECK(strstr(err.msg, ov) && strstr(err.msg, "exists"));
	stg_snapshot_abort(d, &snap);   /* harmless after a failed prepare */
	{
		struct stat st;
		CHECK(stat(ov, &st) == 0 && st.st_size == 4);
	}
	still_writes(d);
	if (ts_have_qemu)
		CHECK(ts_sh("qemu-img info '%s'", cur) != 0);

	/* STG_SNAP_EXISTING with a file that is not qcow2 */
	CHECK(stg_snapshot_prepare(d, ov, STG_SNAP_EXISTING, &snap, &err) == -EINVAL);
	CHECK(strstr(err.msg, "not a qcow2 image") != NULL);
	CHECK(access(ov, F_OK) == 0);   /* not ours to remove */
	unlink(ov);

	/* ... whose backing file is another file */
	CHECK(cow_create(other, &o, &err) == 0);
	o.backing = other;
	CHECK(cow_create(ov, &o, &err) == 0);
	CHECK(stg_snapshot_prepare(d, ov, STG_SNAP_EXISTING, &snap, &err) == -EINVAL);
	CHECK(strstr(err.msg, "is not") && strstr(err.msg, ov));
	CHECK(access(ov, F_OK) == 0);
	/* ... of another size */
	o.backing = cur;
	o.size = DISK * 2;
	CHECK(cow_create(ov, &o, &err) == 0);
	CHECK(stg_snapshot_prepare(d, ov, STG_SNAP_EXISTING, &snap, &err) == -EINVAL);
	CHECK(strstr(err.msg, "virtual size") != NULL);
	/* ... another backing format */
	o.size = DISK;
	o.backing_fmt = "raw";
	CHECK(cow_create(ov, &o, &err) == 0);
	CHECK(stg_snapshot_prepare(d, ov, STG_SNAP_EXISTING, &snap, &err) == -EINVAL);
	CHECK(strstr(err.msg, "backing format") != NULL);
	/* ... without a backing file */
	o.backing = NULL;
	o.backing_fmt = NULL;
	CHECK(cow_create(ov, &o, &err) == 0);
	CHECK(stg_snapshot_prepare(d, ov, STG_SNAP_EXISTING, &snap, &err) == -EINVAL);
	CHECK(strstr(err.msg, "no backing file") != NULL);
	/* ... a right one (a relative backing name): abort leaves it */
	o.backing = "err.qcow2";
	CHECK(cow_create(ov, &o, &err) == 0);
	CHECKE(stg_snapshot_prepare(d, ov, STG_SNAP_EXISTING, &snap, &err) == 0, &err);
	CHECK(!snap.created);
	if (ts_have_qemu)
		CHECK(ts_sh("qemu-img info -U '%s'", ov) == 0 && ts_sh("qemu-img info '%s'", ov) != 0);
	stg_snapshot_abort(d, &snap);
	CHECK(access(ov, F_OK) == 0);
	if (ts_have_qemu)
		CHECK(ts_sh("qemu-img info '%s'", ov) == 0);   /* unlocked again */
	still_writes(d);
	unlink(ov);
	o.backing = NULL;

	/* a backend without the snapshot op: -ENOTSUP, nothing created */
	{
		const struct stg_backend_ops *keep = d->ops;
		struct stg_backend_ops none = *d->ops;

		none.snapshot = NULL;
		d->ops = &none;
		CHECK(stg_snapshot_prepare(d, ov, 0, &snap, &err) == -ENOTSUP);
		CHECK(strstr(err.msg, "no external snapshots") != NULL);
		CHECK(access(ov, F_OK) < 0);
		d->ops = keep;
	}

	/* a directory that does not exist */
	{
		char bad[700];
		snprintf(bad, sizeof(bad), "%s/no/such/dir.qcow2", dir);
		CHECK(stg_snapshot_prepare(d, bad, 0, &snap, &err) == -ENOENT);
		CHECK(strstr(err.msg, bad) != NULL);
	}

	/* abort removes the file prepare created */
	CHECKE(stg_snapshot_prepare(d, ov, 0, &snap, &err) == 0, &err);
	CHECK(access(ov, F_OK) == 0);
	stg_snapshot_abort(d, &snap);
	CHECK(access(ov, F_OK) < 0 && errno == ENOENT);
	CHECK(!snap.path && !snap.priv && !snap.created);
	still_writes(d);
	stg_get_info(d, &info);
	CHECK(info.chain_depth == 1 && !strcmp(d->path, cur));

	/* commit fails: the old image renamed and another file put at its
	 * name after prepare (the overlay's backing is no longer the device's
	 * image); the device keeps writing the old one, locked */
	CHECKE(stg_snapshot_prepare(d, ov, 0, &snap, &err) == 0, &err);
	CHECK(rename(cur, moved) == 0);
	CHECK(cow_create(cur, &o, &err) == 0);
	CHECK(stg_snapshot_commit(d, &snap, &err) == -EINVAL);
	CHECK(strstr(err.msg, "was replaced") != NULL);
	CHECK(snap.priv && access(ov, F_OK) == 0);   /* the caller's to remove */
	stg_snapshot_abort(d, &snap);
	CHECK(access(ov, F_OK) < 0);
	ts_fill(w, sizeof(w), 77);
	CHECK(stg_pwrite(d, w, sizeof(w), 1 << 20) == 0 && stg_flush(d) == 0);
	stg_get_info(d, &info);
	CHECK(info.chain_depth == 1 && !strcmp(info.format, "qcow2"));
	if (ts_have_qemu)
		CHECK(ts_sh("qemu-img info '%s'", moved) != 0);   /* still our write lock */
	stg_close(d);
	CHECKE(cow_open(moved, NULL, COW_O_RDONLY, &img, &err) == 0, &err);
	if (img) {
		CHECK(cow_read(img, r, sizeof(r), 1 << 20, &err) == 0 && !memcmp(w, r, sizeof(w)));
		cow_close(img);
	}
	ts_check_clean(moved);

	/* a read-only device */
	CHECKE(stg_open(moved, NULL, STG_O_RDONLY, &ro, &err) == 0, &err);
	if (ro) {
		CHECK(stg_snapshot_prepare(ro, ov, 0, &snap, &err) == -EROFS);
		CHECK(strstr(err.msg, "read-only") != NULL);
		CHECK(access(ov, F_OK) < 0);
		stg_close(ro);
	}
	/* commit without prepare */
	CHECKE(stg_open(moved, NULL, 0, &d, &err) == 0, &err);
	if (d) {
		memset(&snap, 0, sizeof(snap));
		CHECK(stg_snapshot_commit(d, &snap, &err) == -EINVAL);
		stg_close(d);
	}
	unlink(cur);
	unlink(moved);
	unlink(other);
}

/* A raw device whose commit fails (the same injection as above): its fd,
 * wrapped for the commit (buffered) or its O_DIRECT layer, stays the
 * device's, writable and locked; then a snapshot that works. */
static void raw_commit_failure(unsigned flags)
{
	char cur[600], ov[600], moved[600];
	struct stg_snapshot snap = { 0 };
	struct stg_info info;
	struct ut_err err;
	struct stg_dev *d;
	uint8_t w[4096], r[4096];

	snprintf(cur, sizeof(cur), "%s/rawfail-%x.raw", dir, flags);
	snprintf(ov, sizeof(ov), "%s/rawfail-%x.ov", dir, flags);
	snprintf(moved, sizeof(moved), "%s/rawfail-%x.moved", dir, flags);
	d = ts_make_open(cur, true, flags);
	if (!d)
		return;
	CHECKE(stg_snapshot_prepare(d, ov, 0, &snap, &err) == 0, &err);
	CHECK(rename(cur, moved) == 0);
	CHECKE(ts_make_image(cur, true, DISK, &err) == 0, &err);
	CHECK(stg_snapshot_commit(d, &snap, &err) == -EINVAL);
	CHECK(strstr(err.msg, "was replaced") != NULL);
	CHECK(snap.priv && access(ov, F_OK) == 0);   /* the caller's to remove */
	if (flags & STG_O_DIRECT) {
		stg_snapshot_abort(d, &snap);
		CHECK(access(ov, F_OK) < 0);
	} else {
		/* kept (as when a record of it could not be undone): a clean
		 * overlay at its name, closed; not the device's */
		stg_snapshot_keep(d, &snap);
		CHECK(!snap.priv && !snap.path && access(ov, F_OK) == 0);
		ts_check_clean(ov);
		CHECK(unlink(ov) == 0);
	}
	stg_get_info(d, &info);
	CHECK(!strcmp(info.format, "raw") && info.chain_depth == 1);
	still_writes(d);
	check_locked(moved);
	/* back under its name: a snapshot now works */
	CHECK(rename(moved, cur) == 0);
	ts_snapshot(d, ov);
	ts_fill(w, sizeof(w), 5);
	CHECK(stg_pwrite(d, w, sizeof(w), 0) == 0);
	CHECK(stg_pread(d, r, sizeof(r), 0) == 0 && !memcmp(w, r, sizeof(w)));
	CHECK(stg_pread(d, r, sizeof(r), 8192) == 0);
	ts_fill(w, sizeof(w), 42);   /* still_writes' data, in the backing layer */
	CHECK(!memcmp(w, r, sizeof(w)));
	check_shared_only(cur);
	stg_close(d);
	ts_check_clean(ov);
	unlink(cur);
	unlink(ov);
}

/* cow/ alone: after cow_overlay_attach the old top layer refuses every
 * write (data, zeros, discard, backing name, resize) and its file does not
 * change, as for any backing layer; a check that fails (size) changes
 * nothing and leaves it writable. */
static void cow_frozen_case(void)
{
	char base[600], ov[600], bad[600];
	struct cow_create_opts o = { .size = DISK, .extended_l2 = true };
	struct cow_img *img, *top, *wrong;
	struct ut_err err;
	struct stat st0, st1;
	uint8_t buf[4096], *before = malloc(DISK), *after = malloc(DISK);
	FILE *f;

	snprintf(base, sizeof(base), "%s/frozen.qcow2", dir);
	snprintf(ov, sizeof(ov), "%s/frozen.ov", dir);
	snprintf(bad, sizeof(bad), "%s/frozen.bad", dir);
	CHECK(cow_create(base, &o, &err) == 0);
	o.backing = base;
	CHECK(cow_create(ov, &o, &err) == 0);
	o.size = DISK * 2;
	CHECK(cow_create(bad, &o, &err) == 0);
	CHECK(cow_open(base, NULL, 0, &img, &err) == 0);
	CHECK(cow_open(ov, NULL, COW_O_NO_BACKING, &top, &err) == 0);
	CHECK(cow_open(bad, NULL, COW_O_NO_BACKING, &wrong, &err) == 0);
	if (!img || !top || !wrong)
		goto out;
	ts_fill(buf, sizeof(buf), 3);
	CHECK(cow_write(img, buf, sizeof(buf), 65536, &err) == 0);
	CHECK(cow_overlay_check(wrong, img, &err) == -EINVAL && strstr(err.msg, "virtual size"));
	CHECK(cow_write(img, buf, sizeof(buf), 0, &err) == 0);   /* still writable */
	CHECKE(cow_overlay_check(top, img, &err) == 0, &err);
	cow_overlay_attach(top, img);
	CHECK(cow_backing(top) == img);
	f = fopen(base, "rb");
	CHECK(f && fread(before, 1, DISK, f) > 0);
	if (f)
		fclose(f);
	CHECK(stat(base, &st0) == 0);
	CHECK(cow_write(img, buf, sizeof(buf), 0, &err) == -EROFS);
	CHECK(cow_write_zeroes(img, 65536, 0, COW_ZERO_MAY_UNMAP, &err) == -EROFS);
	CHECK(cow_discard(img, 65536, 65536, false, &err) == -EROFS);
	CHECK(cow_set_backing(img, "x", "raw", &err) == -EROFS);
	CHECK(cow_grow(img, DISK * 2, &err) < 0);
	CHECK(cow_flush(img, &err) == 0);   /* nothing to do */
	/* the overlay reads the frozen data and takes the writes */
	CHECK(cow_read(top, after, sizeof(buf), 65536, &err) == 0 && !memcmp(after, buf, sizeof(buf)));
	ts_fill(buf, sizeof(buf), 4);
	CHECK(cow_write(top, buf, sizeof(buf), 65536, &err) == 0);
	CHECK(cow_close(top) == 0);   /* closes img too */
	top = img = NULL;
	f = fopen(base, "rb");
	CHECK(f && fread(after, 1, DISK, f) > 0);
	if (f)
		fclose(f);
	CHECK(stat(base, &st1) == 0 && st1.st_size == st0.st_size && !memcmp(before, after, (size_t)st0.st_size));
	ts_check_clean(base);
	ts_check_clean(ov);
out:
	cow_close(wrong);
	cow_close(top);   /* (img: only before the attach) */
	cow_close(img);
	unlink(base);
	unlink(ov);
	unlink(bad);
	free(before);
	free(after);
}

int main(void)
{
	if (ts_start(dir))
		return 1;
	ts_have_qemu = ts_sh("qemu-img --version") == 0;
	if (!ts_have_qemu)
		printf("SKIP: qemu-img is not installed: no qemu-img checks, no bitmap case\n");
	for (unsigned f = 0; f < TS_NFLAGSETS; f++)
		for (int k = K_QCOW2; k <= K_RAW; k++)
			round_trip((enum kind)k, ts_flagset(f), false);
	round_trip(K_QCOW2, 0, true);
	round_trip(K_RAW, STG_O_DIRECT, true);
	cow_frozen_case();
	error_cases();
	raw_commit_failure(0);
	raw_commit_failure(STG_O_DIRECT | STG_O_THREADS);
	return ts_end(dir);
}
