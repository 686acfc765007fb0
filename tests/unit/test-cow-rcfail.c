/* tests/unit/test-cow-rcfail.c — failures while refcount structures are
 * made or undone, and the overlap check of new clusters and new refcount
 * structures (cow/refcount.c, cow/l2.c; cow.h I5, I8, I9, I13, I17). Small
 * clusters (512 bytes) with 64-bit refcounts make a refcount block describe
 * 64 clusters and the first refcount table (one cluster) 4096, so the
 * cases need little data:
 *  - growth: the refcount-table switch fails while the new table is written
 *    (a file size limit, EFBIG, after 100 of its bytes): the refcounts it
 *    set in an existing block are undone (no leak), and its first cluster,
 *    free again with table bytes in it past the end of the file, is reused
 *    by a partial write that must read zeros around its bytes (file_size
 *    covers the failed write, I17: without that the I10 shortcut writes
 *    only the new bytes and the table shows through);
 *  - growth_sync: the fdatasync after the header write fails (fdatasync is
 *    overridden in this program): nothing undone, the switch completed in
 *    memory, after a reopen the old table is the only leak;
 *  - blocks: an allocation of a block's worth of clusters (place_blocks)
 *    whose second new refcount block cannot be written: the first one's
 *    table entry must not survive (it pointed to a block whose own
 *    refcount was 0: corruption);
 *  - block_stale: the first new block of place_blocks (holding refcounts
 *    of 1) fails after 16 bytes; its cluster, reused by a partial write,
 *    must read zeros (write_block's file_size cover);
 *  - blocks_after_growth: place_blocks grows the table first (which empties
 *    the queue of table entries) and must not read past the queue;
 *  - unreadable: the refcount block of a failed allocating write cannot be
 *    read back when the write is undone (evicted, then EBADF: reads fail on
 *    a write-only descriptor): the decrement is queued and applied by the
 *    next write-back instead of leaking the cluster;
 *  - overlap: a damaged image whose L1 table names an L2 table past the end
 *    of the file, where the next refcount block (or the moved refcount
 *    table) would go: refused, image marked corrupt, nothing written there
 *    (QEMU: "Preventing invalid write on metadata (overlaps with active L2
 *    table)"; tests/interop/qemu-img-rc-overlap.sh runs qemu-io on these
 *    images, kept with RCFAIL_KEEP=PREFIX);
 *  - uncached_l2: a data cluster over an L2 table with a damaged refcount
 *    of 0 that is not in the cache: refused, the table intact.
 * After each failure case cow_check finds the image clean. */
#include "cow/qcow2.h"
#include "tests/helpers/cowfill.h"
#include "tests/helpers/fullfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define CS 512u
#define FAR (64u * 500u)   /* a guest cluster far from the sequential ones */
#define EMPTY (64u * 600u) /* 64 zero clusters without data, from here */

static char dir[] = "/var/tmp/cowrcfail.XXXXXX";

/* fdatasync for the whole program (cow/ is linked in statically): when
 * sync_fail_in is n > 0, the n-th call from now fails with EIO without
 * syncing, as Linux reports a writeback error. */
static int sync_fail_in;

int fdatasync(int fd)
{
	if (sync_fail_in > 0 && --sync_fail_in == 0) {
		errno = EIO;
		return -1;
	}
	return (int)syscall(SYS_fdatasync, fd);
}

static uint64_t fsize(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static uint64_t host_of(struct cow_img *img, uint64_t off)
{
	struct cow_extent ext;
	struct ut_err err;

	if (cow_block_status(img, off, 1, false, &ext, &err) < 0 || ext.st != COW_ST_DATA)
		return 0;
	return ext.host_off;
}

/* A new image (512-byte clusters, 64-bit refcounts, 64 MiB), open in *out:
 * guest cluster FAR written (its L2 table exists), then guest clusters
 * 0, 1, ... one at a time until the file's clusters reach @end (or one
 * more: a new L2 table takes two). */
static void setup(const char *path, uint64_t end, struct cow_img **out)
{
	struct cow_create_opts o = { .size = 64u << 20, .cluster_size = CS, .refcount_bits = 64 };
	struct cow_img *img = NULL;
	struct ut_err err;

	*out = NULL;
	unlink(path);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(img->rb_entries == 64 && img->rt_entries == 64);
	CHECK(test_write_pat(img, (uint64_t)FAR * CS, CS, 0x77) == 0);
	/* guest clusters EMPTY..+63: their L2 table now, without data (zero
	 * clusters: blocks() allocates exactly 64 data clusters there) */
	CHECK(cow_write_zeroes(img, 64ull * CS, (uint64_t)EMPTY * CS, 0, &err) == 0);
	for (uint64_t g = 0; img->end_cluster < end; g++)
		if (test_write_pat(img, g * CS, CS, (uint8_t)(g | 1)) < 0) {
			CHECK(0);
			break;
		}
	*out = img;
}

static bool all(const uint8_t *p, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v)
			return false;
	return true;
}

/* Does guest cluster @g hold what setup wrote? */
static bool seq_ok(struct cow_img *img, uint64_t g)
{
	return test_reads_as(img, g * CS, CS, (uint8_t)(g | 1));
}

static void growth(const char *path)
{
	struct cow_img *img;
	struct ut_err err;
	uint8_t b[CS];
	uint64_t e, g;
	int before = failures;

	/* 8 clusters from e cross into range 64, past the table's 64
	 * entries; the new table (2 clusters) goes at e, in range 63 */
	setup(path, 4089, &img);
	if (!img)
		return;
	e = img->end_cluster;
	g = e;   /* the sequential clusters written: 0 .. some below e */
	CHECK(e == 4089 || e == 4090);
	CHECK(img->file_size == e * CS);
	CHECK(test_fsize_limit(e * CS + 100) == 0);
	CHECK(test_write_pat(img, (FAR + 8ull) * CS, 8 * CS, 0x88) < 0);
	CHECK(test_space_back(NULL) == 0);
	CHECK(img->rt_entries == 64);   /* not switched */
	CHECK(img->end_cluster == e);
	/* the failed table write left its first 100 bytes (entries naming
	 * the refcount blocks) in cluster e */
	{
		int fd = open(path, O_RDONLY);
		CHECK(fd >= 0 && pread(fd, b, 100, (off_t)(e * CS)) == 100 && !all(b, 100, 0));
		if (fd >= 0)
			close(fd);
	}
	/* a partial write into a new cluster reuses cluster e and must read
	 * zeros around its 100 bytes */
	CHECK(test_write_pat(img, (FAR + 20ull) * CS + 300, 100, 0x99) == 0);
	CHECK(host_of(img, (FAR + 20ull) * CS) == e * CS);
	CHECK(test_reads_as(img, (FAR + 20ull) * CS, 300, 0));
	CHECK(test_reads_as(img, (FAR + 20ull) * CS + 300, 100, 0x99));
	CHECK(test_reads_as(img, (FAR + 20ull) * CS + 400, CS - 400, 0));
	CHECK(test_reads_as(img, (FAR + 8ull) * CS, 8 * CS, 0));
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));   /* no leak: the counts were undone */
	/* and the growth succeeds once there is room */
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_write_pat(img, (FAR + 8ull) * CS, 8 * CS, 0x88) == 0);
	CHECK(img->rt_entries > 64);
	CHECK(test_reads_as(img, (FAR + 8ull) * CS, 8 * CS, 0x88));
	CHECK(test_reads_as(img, (FAR + 20ull) * CS + 300, 100, 0x99));
	CHECK(test_reads_as(img, (uint64_t)FAR * CS, CS, 0x77));
	CHECK(seq_ok(img, 0) && seq_ok(img, 1000) && seq_ok(img, 3000));
	(void)g;
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
	printf("refcount-table growth fails writing the table: %s\n", failures > before ? "FAILED" : "ok");
}

/* The growth of growth(), with the fdatasync after the header write
 * failing: the file names the new table (the header is in the page cache),
 * so nothing of it may be undone; in memory the switch is completed and
 * the old table kept. Every later fdatasync fails (I1), so nothing more
 * is written that depends on it; after a reopen the image is consistent,
 * the old table a leak that check --repair leaks removes. */
static void growth_sync(const char *path)
{
	struct cow_check_res r;
	struct cow_img *img;
	struct ut_err err;
	uint64_t e, old_rt;
	int before = failures;

	setup(path, 4089, &img);
	if (!img)
		return;
	e = img->end_cluster;
	old_rt = img->h.rt_off;
	CHECK(cow_flush(img, &err) == 0);
	sync_fail_in = 2;   /* after the new table, after the header */
	CHECK(test_write_pat(img, (FAR + 8ull) * CS, 8 * CS, 0x88) < 0);
	CHECK(sync_fail_in == 0);
	sync_fail_in = 0;
	CHECK(img->h.rt_off == e * CS && img->rt_entries == 128);   /* switched */
	CHECK(cow_close(img) < 0);   /* (its flush fails: I1) */
	memset(&r, 0, sizeof(r));
	CHECK(cow_check(path, COW_REPAIR_NONE, &r, &err) == 0);
	CHECK(r.corruptions == 0 && r.leaks == 1);   /* the old table */
	ut_buf_release(&r.msgs);
	CHECK(cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (img) {
		CHECK(img->h.rt_off == e * CS && img->h.rt_off != old_rt);
		CHECK(seq_ok(img, 0) && seq_ok(img, 3000));
		cow_close(img);
	}
	memset(&r, 0, sizeof(r));
	CHECK(cow_check(path, COW_REPAIR_LEAKS, &r, &err) == 0 && r.leaks_fixed == 1);
	ut_buf_release(&r.msgs);
	CHECK(test_checks_clean(path));
	printf("refcount-table growth, the fdatasync after the header fails: %s\n",
	       failures > before ? "FAILED" : "ok");
}

/* 64 clusters (a block's worth) from cluster 64, where range 1 starts and
 * has no block: place_blocks puts the blocks of ranges 1 and 2 at 64 and
 * 65, the data at 66..129; the write of the block at 65 fails after 10
 * bytes. */
static void blocks(const char *path)
{
	struct cow_img *img;
	struct ut_err err;
	int before = failures;

	setup(path, 64, &img);
	if (!img)
		return;
	CHECK(img->end_cluster == 64 && img->rt[1] == 0);
	CHECK(test_fsize_limit(65 * CS + 10) == 0);
	CHECK(test_write_pat(img, (uint64_t)EMPTY * CS, 64ull * CS, 0x5a) < 0);
	CHECK(test_space_back(NULL) == 0);
	/* the block at 64 was written, but its table entry is gone again */
	CHECK(fsize(path) == 65 * CS + 10);
	CHECK(img->rt[1] == 0 && img->rt[2] == 0 && img->nrt_dirty == 0);
	CHECK(test_reads_as(img, (uint64_t)EMPTY * CS, 64ull * CS, 0));
	CHECK(cow_flush(img, &err) == 0);
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_write_pat(img, (uint64_t)EMPTY * CS, 64ull * CS, 0x5a) == 0);
	CHECK(test_reads_as(img, (uint64_t)EMPTY * CS, 64ull * CS, 0x5a));
	CHECK(seq_ok(img, 0) && seq_ok(img, 20));
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
	printf("new refcount blocks for a long run, the second fails: %s\n",
	       failures > before ? "FAILED" : "ok");
}

/* The first new block of place_blocks fails after 16 bytes that hold
 * refcounts of 1: growing the disk to 256 MiB needs an L1 table of 128
 * clusters (more than a block's worth); from cluster 127 (range 1, which
 * has a block) that needs blocks for ranges 2, 3 and 4 at 127, 128 and
 * 129, and the one at 127 holds the refcounts of those at 128 and 129
 * (entries 0 and 1). Cluster 127 stays free with those bytes in it past
 * the end of the file; a partial write then reuses it and must read zeros
 * around its bytes (write_block covers the failed block with file_size,
 * I17). */
static void block_stale(const char *path)
{
	struct cow_img *img;
	struct ut_err err;
	uint8_t b[16];
	int fd, before = failures;

	setup(path, 127, &img);
	if (!img)
		return;
	CHECK(img->end_cluster == 127 && img->rt[1] && !img->rt[2] && !img->rt[3]);
	CHECK(img->file_size == 127 * CS);
	CHECK(test_fsize_limit(127 * CS + 16) == 0);
	CHECK(cow_grow(img, 256u << 20, &err) < 0);
	CHECK(test_space_back(NULL) == 0);
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0 && pread(fd, b, 16, 127 * CS) == 16 && b[7] == 1 && b[15] == 1);
	if (fd >= 0)
		close(fd);
	CHECK(img->rt[2] == 0 && img->end_cluster == 127 && img->nrt_dirty == 0);
	CHECK(test_write_pat(img, (FAR + 20ull) * CS + 300, 100, 0x99) == 0);
	CHECK(host_of(img, (FAR + 20ull) * CS) == 127 * CS);
	CHECK(test_reads_as(img, (FAR + 20ull) * CS, 300, 0));
	CHECK(test_reads_as(img, (FAR + 20ull) * CS + 400, CS - 400, 0));
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
	printf("a failed refcount block's bytes in a reused cluster: %s\n", failures > before ? "FAILED" : "ok");
}

/* A block's worth of clusters from near the end of the refcount table's
 * reach: place_blocks grows the table first (which writes the queued
 * table entries: img->nrt_dirty drops to 0), then places the blocks. The
 * queue's length must be taken after that (it once was taken before: an
 * out-of-bounds read, a crash in the power-cut test's 512-byte,
 * 64-bit-refcount run). */
static void blocks_after_growth(const char *path)
{
	struct cow_img *img;
	struct ut_err err;
	int before = failures;

	setup(path, 4033, &img);
	if (!img)
		return;
	/* the block of range 63 (at 4032) is new: its table entry queued */
	CHECK(img->nrt_dirty > 0);
	CHECK(test_write_pat(img, (uint64_t)EMPTY * CS, 64ull * CS, 0x5a) == 0);
	CHECK(img->rt_entries > 64);
	CHECK(test_reads_as(img, (uint64_t)EMPTY * CS, 64ull * CS, 0x5a));
	CHECK(seq_ok(img, 0) && seq_ok(img, 3000));
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
	CHECK(cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (img) {
		CHECK(test_reads_as(img, (uint64_t)EMPTY * CS, 64ull * CS, 0x5a));
		cow_close(img);
	}
	printf("new blocks for a long run after a table growth: %s\n", failures > before ? "FAILED" : "ok");
}

static void unreadable(const char *path)
{
	struct cow_create_opts o = { .size = 16u << 20 };
	struct cow_img *img = NULL;
	struct cow_wstep st;
	struct ut_err err;
	struct cow_cent *e;
	uint8_t *b = malloc(65536);
	uint64_t h;
	int orig = -1, wo = -1, before = failures;

	unlink(path);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img || !b)
		goto out;
	CHECK(test_write_pat(img, 0, 65536, 0x11) == 0);
	memset(b, 0x22, 65536);
	memset(&st, 0, sizeof(st));
	CHECK(cow_write_step(img, b, 65536, 65536, &st, &err) == 0);
	CHECK(st.nalloc == 1);
	h = st.cl_host;
	/* the refcount block leaves the cache (written), and reads fail */
	CHECK(cow_rc_write_dirty(img, &err) == 0);
	e = cow_cache_find(&img->rbc, img->rt[0] & QCOW_RT_OFFSET_MASK);
	CHECK(e != NULL);
	if (e)
		cow_cache_remove(&img->rbc, e);
	orig = dup(img->fd);
	wo = open(path, O_WRONLY);
	CHECK(orig >= 0 && wo >= 0 && dup2(wo, img->fd) == img->fd);
	CHECK(cow_write_abort(img, &st, &err) < 0);   /* (the block: EBADF) */
	CHECK(dup2(orig, img->fd) == img->fd);
	CHECK(test_reads_as(img, 65536, 65536, 0));
	/* the decrement was queued: applied by this write-back, after which
	 * the cluster is free and the next allocation takes it */
	CHECK(cow_flush(img, &err) == 0);
	CHECK(test_write_pat(img, 2 * 65536, 65536, 0x33) == 0);
	CHECK(host_of(img, 2 * 65536) == h);
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(test_checks_clean(path));
out:
	if (img)
		cow_close(img);
	if (orig >= 0)
		close(orig);
	if (wo >= 0)
		close(wo);
	free(b);
	printf("refcount block unreadable while a failed write is undone: %s\n",
	       failures > before ? "FAILED" : "ok");
}

/* Point L1 entry @i of the closed image @path at host cluster @c (COPIED):
 * a damaged entry naming an L2 table past the end of the file. */
static void point_l1(const char *path, uint64_t l1_off, uint64_t i, uint64_t c)
{
	uint8_t be[8];
	uint64_t v = (c * CS) | QCOW_OFLAG_COPIED;
	int fd = open(path, O_WRONLY);

	cow_put64(be, v);
	CHECK(fd >= 0 && pwrite(fd, be, 8, (off_t)(l1_off + i * 8)) == 8);
	if (fd >= 0)
		close(fd);
}

static bool marked_corrupt(const char *path)
{
	uint8_t h[80];
	int fd = open(path, O_RDONLY);
	bool r = fd >= 0 && pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
		 (cow_be64(h + 72) & QCOW_INCOMPAT_CORRUPT);

	if (fd >= 0)
		close(fd);
	return r;
}

/* @grow: the structure that would take the L2 table's cluster is the moved
 * refcount table (else a new refcount block). */
static void overlap(const char *path, bool grow)
{
	struct cow_img *img;
	struct ut_err err;
	uint64_t e, l1_off, sz;
	int before = failures, ret;

	setup(path, grow ? 4089 : 64, &img);
	if (!img)
		return;
	e = img->end_cluster;
	l1_off = img->h.l1_off;
	CHECK(cow_close(img) == 0);
	sz = fsize(path);
	CHECK(sz == e * CS);
	point_l1(path, l1_off, 1000, e);   /* guest clusters 64000..: unused */
	if (getenv("RCFAIL_KEEP")) {
		char cmd[512];
		/* (a copy for qemu-io: RCFAIL_KEEP=/tmp/x keeps
		 * /tmp/x-block.qcow2 and /tmp/x-table.qcow2) */
		snprintf(cmd, sizeof(cmd), "cp %s %s-%s.qcow2", path, getenv("RCFAIL_KEEP"),
			 grow ? "table" : "block");
		CHECK(system(cmd) == 0);
	}
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	memset(&err, 0, sizeof(err));
	if (grow)
		ret = test_write_pat(img, (FAR + 8ull) * CS, 8 * CS, 0x88);
	else
		ret = test_write_pat(img, (FAR + 8ull) * CS, CS, 0x88);
	CHECK(ret < 0);
	CHECK(fsize(path) == sz);   /* nothing written at the L2 table */
	cow_close(img);
	CHECK(marked_corrupt(path));
	/* what cow_check says: only the damage that was there */
	printf("new refcount %s over an L2 table past the end of the file: %s\n",
	       grow ? "table" : "block", failures > before ? "FAILED" : "ok");
}

/* A data cluster over an L2 table that is not cached: 64 KiB clusters,
 * L2 tables for guest offsets 0 and 1 GiB, the second's refcount damaged
 * to 0. After a reopen (nothing cached) a write to guest cluster 1 (its
 * table is cached by then) allocates the first free cluster: the other
 * table's. It is refused, as QEMU's overlap check (which walks the whole
 * L1) refuses it; the table's entries stay intact. */
static void uncached_l2(const char *path)
{
	struct cow_create_opts o = { .size = 2ull << 30 };
	struct cow_img *img = NULL;
	struct ut_err err;
	uint64_t l2b = 0, rb = 0, l1_off = 0;
	uint8_t zero[2] = { 0, 0 };
	int fd, before = failures;

	unlink(path);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_write_pat(img, 0, 65536, 0x11) == 0);
	CHECK(test_write_pat(img, 1ull << 30, 65536, 0x22) == 0);
	l1_off = img->h.l1_off;
	l2b = img->l1[2] & QCOW_OFFSET_MASK;
	rb = img->rt[0] & QCOW_RT_OFFSET_MASK;
	CHECK(l2b && rb && img->h.refcount_order == 4);
	CHECK(cow_close(img) == 0);
	fd = open(path, O_WRONLY);
	CHECK(fd >= 0 && pwrite(fd, zero, 2, (off_t)(rb + 2 * (l2b >> 16))) == 2);
	if (fd >= 0)
		close(fd);
	(void)l1_off;
	if (getenv("RCFAIL_KEEP")) {
		char cmd[512];
		snprintf(cmd, sizeof(cmd), "cp %s %s-l2data.qcow2", path, getenv("RCFAIL_KEEP"));
		CHECK(system(cmd) == 0);
	}
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	memset(&err, 0, sizeof(err));
	{
		uint8_t b[4096];
		memset(b, 0x33, sizeof(b));
		CHECK(cow_write(img, b, sizeof(b), 65536, &err) == -EUCLEAN);
	}
	printf("message: %s\n", err.msg);
	{
		char want[96];
		snprintf(want, sizeof(want), "allocated cluster 0x%llx overlaps an L2 table (L1 entry 2)",
			 (unsigned long long)l2b);
		CHECK(strstr(err.msg, want) != NULL);
	}
	cow_close(img);
	CHECK(marked_corrupt(path));
	CHECK(cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (img) {
		CHECK(test_reads_as(img, 1ull << 30, 65536, 0x22));
		CHECK(test_reads_as(img, 0, 65536, 0x11));
		cow_close(img);
	}
	printf("a data cluster over an L2 table that is not cached: %s\n", failures > before ? "FAILED" : "ok");
}

/* The message of the refusal, for the log. */
static void overlap_msg(const char *path)
{
	struct cow_img *img;
	struct ut_err err;
	uint8_t b[CS];

	setup(path, 64, &img);
	if (!img)
		return;
	uint64_t e = img->end_cluster, l1_off = img->h.l1_off;
	CHECK(cow_close(img) == 0);
	point_l1(path, l1_off, 1000, e);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	memset(b, 0x88, CS);
	CHECK(cow_write(img, b, CS, (FAR + 8ull) * CS, &err) == -EUCLEAN);
	printf("message: %s\n", err.msg);
	CHECK(strstr(err.msg, "new refcount block at 0x8000 overlaps an L2 table (L1 entry 1000)") != NULL);
	cow_close(img);
}

int main(void)
{
	char path[128], cmd[64];

	setenv("COWVM_COW_PREALLOC", "0", 1);   /* (file ends where written) */
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/r.qcow2", dir);
	growth(path);
	growth_sync(path);
	blocks(path);
	block_stale(path);
	blocks_after_growth(path);
	unreadable(path);
	overlap(path, false);
	overlap(path, true);
	overlap_msg(path);
	uncached_l2(path);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%s\n", failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}
