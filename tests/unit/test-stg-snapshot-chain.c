/* tests/unit/test-stg-snapshot-chain.c — external snapshots in a row and
 * their edges (stg_snapshot_prepare / _commit / _abort, storage/blockdev.h;
 * test-stg-snapshot.c covers one or two snapshots of each kind of device).
 *
 *  - chain: ten snapshots in a row of a qcow2 and of a raw device, on the
 *    io_uring engine (8 registered-file slots: more layers than slots) and
 *    on the worker threads, buffered and O_DIRECT, a different block
 *    written before each: after every commit each earlier block reads
 *    back, the chain depth grows by one, the overlay's backing is the
 *    previous layer (absolute); after close, every layer reads back the
 *    blocks written up to its freeze (cow/, read-only) and passes cow_check.
 *    On io_uring the top layer (the one the writes go to) holds a
 *    registered slot after every commit (stg_engine_fd_registered).
 *  - locks in a chain of three: the bottom and the middle layer hold
 *    exactly a backing layer's locks (probe from another description:
 *    byte 100 held, 201/202 not shared, 101/102 free), the top a writer's;
 *    after stg_close no byte of any of the three is locked and each opens
 *    for writing.
 *  - a request in flight at prepare or at commit: -EBUSY, nothing changed.
 *  - STG_O_NO_LOCK: no layer locked, before or after commit.
 *  - abort twice, abort after commit (the committed overlay stays), abort
 *    when another file has taken the overlay's name (left alone).
 *  - a commit refused because another file took the image's name after
 *    prepare says that the file at that name was replaced since the device
 *    opened it (not "its backing file 'x' is not 'x'").
 *
 * Runs in /var/tmp (O_DIRECT needs a real file system). Exit 0 pass, 1
 * fail. */
#include "storage/blockdev.h"
#include "storage/engine.h"
#include "cow/cow.h"
#include "cow/lock.h"
#include "tests/unit/test-stg-snap.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NSNAP 10

static char dir[] = "/var/tmp/stgsnapc.XXXXXX";

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 29 + i * 7 + 1);
}

/* Block @i (4 KiB at i * 64 KiB + 512, so misaligned for a cluster)
 * holds pattern @i + 1 on @d. */
static int blk_check(struct stg_dev *d, unsigned i)
{
	uint8_t *w = aligned_alloc(4096, 8192), *r = aligned_alloc(4096, 8192);
	int ok;

	fill(w, 4096, i + 1);
	ok = stg_pread(d, r, 8192, (uint64_t)i * 65536) == 0 && !memcmp(w, r + 512, 4096);
	free(w);
	free(r);
	return ok;
}

static int blk_write(struct stg_dev *d, unsigned i)
{
	uint8_t *w = aligned_alloc(4096, 8192);
	int r;

	memset(w, 0, 8192);
	fill(w + 512, 4096, i + 1);
	/* a whole 8 KiB: aligned for O_DIRECT */
	r = stg_pwrite(d, w, 8192, (uint64_t)i * 65536);
	free(w);
	return r;
}

/* Does some fd of this process open on @path hold a registered slot of
 * @d's engine? */
static bool path_registered(struct stg_dev *d, const char *path)
{
	char link[64], target[PATH_MAX + 1];
	bool found = false;

	for (int fd = 3; fd < 1024 && !found; fd++) {
		ssize_t n;

		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = 0;
		if (!strcmp(target, path) && stg_engine_fd_registered(d->engine, fd))
			found = true;
	}
	return found;
}

static void chain(bool raw, unsigned flags)
{
	char base[600], ov[NSNAP + 1][600];
	struct stg_dev *d;
	struct stg_info info;
	struct ut_err err;

	snprintf(base, sizeof(base), "%s/chain-%d-%x.%s", dir, raw, flags, raw ? "raw" : "qcow2");
	snprintf(ov[0], sizeof(ov[0]), "%s", base);
	d = ts_make_open(base, raw, flags);
	if (!d)
		return;
	for (unsigned k = 1; k <= NSNAP; k++) {
		CHECK(blk_write(d, k - 1) == 0);
		snprintf(ov[k], sizeof(ov[k]), "%s/chain-%d-%x.ov%u", dir, raw, flags, k);
		ts_snapshot(d, ov[k]);
		memset(&info, 0, sizeof(info));
		CHECK(stg_get_info(d, &info) == 0);
		CHECK(info.chain_depth == (int)k + 1);
		CHECK(!strcmp(info.format, "qcow2"));
		CHECK(info.backing[0] == '/' && !strcmp(info.backing, ov[k - 1]));
		CHECK(d->size == DISK);
		for (unsigned i = 0; i < k; i++)
			if (!blk_check(d, i)) {
				fprintf(stderr, "chain raw=%d flags %x: block %u after snapshot %u\n", raw,
					flags, i, k);
				failures++;
			}
		if (!(flags & STG_O_THREADS) && !path_registered(d, ov[k])) {
			fprintf(stderr, "chain raw=%d flags %x: the top layer holds no registered slot after snapshot %u\n",
				raw, flags, k);
			failures++;
		}
	}
	CHECK(blk_write(d, NSNAP) == 0 && stg_flush(d) == 0);
	for (unsigned i = 0; i <= NSNAP; i++)
		CHECK(blk_check(d, i));
	stg_close(d);
	/* each layer as it was frozen: blocks 0..k (block k was written
	 * just before the snapshot that froze layer k), not k + 1 */
	for (unsigned k = 0; k <= NSNAP; k++) {
		CHECKE(stg_open(ov[k], NULL, STG_O_RDONLY, &d, &err) == 0, &err);
		if (!d)
			continue;
		for (unsigned i = 0; i <= NSNAP; i++)
			if (blk_check(d, i) != (i <= k)) {
				fprintf(stderr, "chain raw=%d flags %x: layer %u block %u\n", raw, flags, k, i);
				failures++;
			}
		stg_close(d);
		if (k || !raw) {
			struct cow_check_res r;
			memset(&r, 0, sizeof(r));
			CHECKE(cow_check(ov[k], COW_REPAIR_NONE, &r, &err) == 0 && r.corruptions == 0 &&
			       r.leaks == 0, &err);
			ut_buf_release(&r.msgs);
		}
	}
	for (unsigned k = 0; k <= NSNAP; k++)
		unlink(ov[k]);
}

/* The locks of @path seen from another description: @writer a top layer's
 * (bytes 100-102 held, 201-202 not shared), else a backing layer's (100
 * held, 201-202 not shared, 101-102 free); @none: nothing at all. */
static void check_lock_bytes(const char *path, bool writer, bool none)
{
	unsigned perm = 0, unshared = 0;
	unsigned want_perm = none ? 0 : (1u << COW_PERM_CONSISTENT_READ) |
		(writer ? (1u << COW_PERM_WRITE) | (1u << COW_PERM_RESIZE) : 0);
	unsigned want_unshared = none ? 0 : (1u << COW_PERM_WRITE) | (1u << COW_PERM_RESIZE);
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	CHECK(fd >= 0 && cow_lock_probe(fd, &perm, &unshared) == 0);
	if (perm != want_perm || unshared != want_unshared) {
		fprintf(stderr, "'%s': locks held %#x (expected %#x), not shared %#x (expected %#x)\n",
			path, perm, want_perm, unshared, want_unshared);
		failures++;
	}
	close(fd);
}

static void locks_and_aborts(void)
{
	char base[600], ov1[600], ov2[600];
	struct stg_snapshot snap = { 0 };
	struct ut_err err;
	struct stg_dev *d, *w;
	const char *all[3] = { base, ov1, ov2 };

	snprintf(base, sizeof(base), "%s/locks.qcow2", dir);
	snprintf(ov1, sizeof(ov1), "%s/locks.ov1", dir);
	snprintf(ov2, sizeof(ov2), "%s/locks.ov2", dir);
	d = ts_make_open(base, false, 0);
	if (!d)
		return;
	/* abort twice */
	CHECKE(stg_snapshot_prepare(d, ov1, 0, &snap, &err) == 0, &err);
	check_lock_bytes(ov1, true, false);
	stg_snapshot_abort(d, &snap);
	stg_snapshot_abort(d, &snap);
	CHECK(access(ov1, F_OK) < 0);
	check_lock_bytes(base, true, false);
	/* two snapshots, each aborted after its commit: nothing undone */
	CHECKE(stg_snapshot_prepare(d, ov1, 0, &snap, &err) == 0, &err);
	CHECKE(stg_snapshot_commit(d, &snap, &err) == 0, &err);
	stg_snapshot_abort(d, &snap);
	CHECKE(stg_snapshot_prepare(d, ov2, 0, &snap, &err) == 0, &err);
	CHECKE(stg_snapshot_commit(d, &snap, &err) == 0, &err);
	stg_snapshot_abort(d, &snap);
	CHECK(access(ov1, F_OK) == 0 && access(ov2, F_OK) == 0);
	CHECK(blk_write(d, 3) == 0 && blk_check(d, 3));
	check_lock_bytes(base, false, false);
	check_lock_bytes(ov1, false, false);
	check_lock_bytes(ov2, true, false);
	stg_close(d);
	for (int i = 0; i < 3; i++) {
		check_lock_bytes(all[i], false, true);
		w = NULL;
		CHECKE(stg_open(all[i], "qcow2", STG_O_NO_LOCK, &w, &err) == 0, &err);
		if (w)
			stg_close(w);
		{
			int fd = open(all[i], O_RDWR | O_CLOEXEC);
			CHECK(fd >= 0 && cow_lock_fd(fd, all[i], COW_LOCK_WRITE, &err) == 1);
			cow_unlock_fd(fd);
			close(fd);
		}
	}
	/* the whole chain opens for writing through its top */
	CHECKE(stg_open(ov2, NULL, 0, &w, &err) == 0, &err);
	if (w) {
		CHECK(blk_check(w, 3));
		stg_close(w);
	}
	unlink(base);
	unlink(ov1);
	unlink(ov2);
}

/* Another file at the image's name after prepare: commit refused, saying
 * that the file at that name was replaced. */
static void replaced_message(bool raw)
{
	char cur[600], ov[600], moved[600];
	struct stg_snapshot snap = { 0 };
	struct ut_err err;
	struct stg_dev *d;

	snprintf(cur, sizeof(cur), "%s/repl%d.img", dir, raw);
	snprintf(ov, sizeof(ov), "%s/repl%d.ov", dir, raw);
	snprintf(moved, sizeof(moved), "%s/repl%d.moved", dir, raw);
	d = ts_make_open(cur, raw, 0);
	if (!d)
		return;
	CHECKE(stg_snapshot_prepare(d, ov, 0, &snap, &err) == 0, &err);
	CHECK(rename(cur, moved) == 0);
	CHECKE(ts_make_image(cur, true, DISK, &err) == 0, &err);
	CHECK(stg_snapshot_commit(d, &snap, &err) == -EINVAL);
	if (!strstr(err.msg, "replaced") || !strstr(err.msg, cur) || strstr(err.msg, "is not")) {
		fprintf(stderr, "replaced (raw %d): message: %s\n", raw, err.msg);
		failures++;
	}
	stg_snapshot_abort(d, &snap);
	CHECK(access(ov, F_OK) < 0);
	CHECK(blk_write(d, 1) == 0 && blk_check(d, 1));
	stg_close(d);
	unlink(cur);
	unlink(moved);
}

static int done_count;
static void req_done(struct stg_req *req, int result)
{
	(void)req;
	if (result == 0)
		done_count++;
}

/* A write in flight: prepare refuses it (-EBUSY, nothing created); one
 * submitted between prepare and commit: commit refuses it (-EBUSY), the
 * device unchanged, abort removes the overlay; the write lands in the
 * image. Both for qcow2 and raw. */
static void in_flight(bool raw)
{
	char cur[600], ov[600];
	struct stg_snapshot snap = { 0 };
	struct stg_info info;
	struct ut_err err;
	struct stg_dev *d;
	struct stg_req req;
	struct iovec iov;
	uint8_t *w = aligned_alloc(4096, 8192);

	snprintf(cur, sizeof(cur), "%s/busy%d.img", dir, raw);
	snprintf(ov, sizeof(ov), "%s/busy%d.ov", dir, raw);
	d = ts_make_open(cur, raw, 0);
	if (!d) {
		free(w);
		return;
	}
	memset(w, 0, 8192);
	fill(w + 512, 4096, 6);
	iov.iov_base = w;
	iov.iov_len = 8192;
	memset(&req, 0, sizeof(req));
	req.op = STG_OP_WRITE;
	req.offset = 5 * 65536;
	req.len = 8192;
	req.iov = &iov;
	req.iovcnt = 1;
	req.done = req_done;
	done_count = 0;
	CHECK(stg_submit(d, &req) == 0);
	CHECK(stg_snapshot_prepare(d, ov, 0, &snap, &err) == -EBUSY);
	CHECK(access(ov, F_OK) < 0);
	CHECK(stg_drain(d) == 0 && done_count == 1);
	CHECKE(stg_snapshot_prepare(d, ov, 0, &snap, &err) == 0, &err);
	CHECK(stg_submit(d, &req) == 0);
	CHECK(stg_snapshot_commit(d, &snap, &err) == -EBUSY);
	CHECK(stg_drain(d) == 0 && done_count == 2);
	stg_snapshot_abort(d, &snap);
	CHECK(access(ov, F_OK) < 0);
	memset(&info, 0, sizeof(info));
	CHECK(stg_get_info(d, &info) == 0 && info.chain_depth == 1);
	CHECK(!strcmp(info.format, raw ? "raw" : "qcow2"));
	CHECK(blk_check(d, 5));
	stg_close(d);
	unlink(cur);
	free(w);
}

/* STG_O_NO_LOCK: no lock byte on any layer, before or after commit. */
static void no_lock(void)
{
	char cur[600], ov[600];
	struct stg_snapshot snap = { 0 };
	struct ut_err err;
	struct stg_dev *d;

	snprintf(cur, sizeof(cur), "%s/nolock.qcow2", dir);
	snprintf(ov, sizeof(ov), "%s/nolock.ov", dir);
	d = ts_make_open(cur, false, STG_O_NO_LOCK);
	if (!d)
		return;
	CHECKE(stg_snapshot_prepare(d, ov, 0, &snap, &err) == 0, &err);
	check_lock_bytes(cur, false, true);
	check_lock_bytes(ov, false, true);
	CHECKE(stg_snapshot_commit(d, &snap, &err) == 0, &err);
	CHECK(blk_write(d, 4) == 0 && blk_check(d, 4));
	check_lock_bytes(cur, false, true);
	check_lock_bytes(ov, false, true);
	stg_close(d);
	unlink(cur);
	unlink(ov);
}

/* abort removes the overlay prepare created, not another file that took
 * its name since (the overlay renamed away meanwhile). */
static void abort_replaced(void)
{
	char cur[600], ov[600], moved[600];
	struct stg_snapshot snap = { 0 };
	struct ut_err err;
	struct stg_dev *d;
	int fd;

	snprintf(cur, sizeof(cur), "%s/abrt.qcow2", dir);
	snprintf(ov, sizeof(ov), "%s/abrt.ov", dir);
	snprintf(moved, sizeof(moved), "%s/abrt.ov.moved", dir);
	d = ts_make_open(cur, false, 0);
	if (!d)
		return;
	CHECKE(stg_snapshot_prepare(d, ov, 0, &snap, &err) == 0, &err);
	CHECK(rename(ov, moved) == 0);
	fd = open(ov, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	CHECK(fd >= 0 && write(fd, "mine", 4) == 4);
	close(fd);
	stg_snapshot_abort(d, &snap);
	if (access(ov, F_OK) != 0) {
		fprintf(stderr, "abort removed '%s', another file than the overlay it created\n", ov);
		failures++;
	}
	CHECK(blk_write(d, 2) == 0 && blk_check(d, 2));
	stg_close(d);
	unlink(cur);
	unlink(ov);
	unlink(moved);
}

int main(void)
{
	if (ts_start(dir))
		return 1;
	for (unsigned f = 0; f < TS_NFLAGSETS; f++) {
		chain(false, ts_flagset(f));
		chain(true, ts_flagset(f));
	}
	locks_and_aborts();
	replaced_message(false);
	replaced_message(true);
	abort_replaced();
	no_lock();
	in_flight(false);
	in_flight(true);
	return ts_end(dir);
}
