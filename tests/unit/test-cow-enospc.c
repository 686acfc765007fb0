/* tests/unit/test-cow-enospc.c — an allocating write whose data write
 * fails leaks nothing (cow.h I17). The failure is a file size limit
 * (RLIMIT_FSIZE, tests/helpers/fullfs.h) just past the end of the image, so
 * the write stops with EFBIG, often after writing part of its bytes:
 *  - stale: a single partial cluster past the end of the file (the I10
 *    shortcut) written in part, then freed; the next small write reuses
 *    that cluster and must read zeros around its bytes, not the stale
 *    ones the failed write left (cow/ and storage/, io_uring and worker
 *    threads);
 *  - storage/ with 8 allocating writes in flight, the later ones (or all)
 *    failing: each undone in its completion, the same writes reuse the
 *    clusters once the space is back;
 *  - a run of 3 whole clusters (after preallocation started, I12): all
 *    freed, the close's trim keeps the image valid, the next write reuses
 *    them;
 *  - extended L2: a failed write into subclusters of a host cluster the
 *    guest cluster already owns keeps that cluster (and its data); one that
 *    needed a new host cluster frees it;
 *  - compressed: a failed write into a new cluster frees it; one packed
 *    into the cluster of an earlier compressed write drops only its own
 *    reference; one continuing from there into the next host cluster
 *    drops its reference on the first and frees the second.
 * After each case cow_check finds no corruption and no leak, and the data
 * reads back. */
#include "cow/qcow2.h"
#include "storage/blockdev.h"
#include "tests/helpers/cowfill.h"
#include "tests/helpers/fullfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define MIB (1ull << 20)

static char dir[] = "/var/tmp/cowenospc.XXXXXX";

static uint64_t fsize(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* A new image at @path: @cs clusters, extended L2 or not, guest cluster 0
 * written (0x11) and the image closed (the file ends at its last cluster).
 * Returns the file's size: where the next cluster goes. */
static uint64_t setup(const char *path, uint32_t cs, bool extl2)
{
	struct cow_create_opts o = { .size = 16 * MIB, .cluster_size = cs, .extended_l2 = extl2 };
	struct cow_img *img = NULL;
	struct ut_err err;

	unlink(path);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (img) {
		CHECK(test_write_pat(img, 0, cs, 0x11) == 0);
		CHECK(cow_close(img) == 0);
	}
	CHECK(fsize(path) % cs == 0);
	return fsize(path);
}

/* Host offset of guest byte @off (0 when not data). */
static uint64_t host_of(struct cow_img *img, uint64_t off)
{
	struct cow_extent ext;
	struct ut_err err;

	if (cow_block_status(img, off, 512, false, &ext, &err) < 0 || ext.st != COW_ST_DATA)
		return 0;
	return ext.host_off;
}

/* Do the @n bytes at host offset @off of @path hold something else than
 * zeros? (the failed write's leftovers) */
static bool stale_at(const char *path, uint64_t off, size_t n)
{
	uint8_t b[4096];
	int fd = open(path, O_RDONLY);
	bool any = false;

	if (fd < 0 || n > sizeof(b) || pread(fd, b, n, (off_t)off) != (ssize_t)n) {
		if (fd >= 0)
			close(fd);
		return false;
	}
	close(fd);
	for (size_t i = 0; i < n; i++)
		any |= b[i] != 0;
	return any;
}

static bool all(const uint8_t *p, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v)
			return false;
	return true;
}

/* The I10 case through cow/: a 4 KiB write at the start of guest cluster 1
 * into a new cluster at @e (past the end of the file: only those 4 KiB are
 * written) stops after 1 KiB; the cluster is freed; a 512-byte write into
 * guest cluster 2 reuses it and the rest of cluster 2 reads as zeros. */
static void stale_cow(const char *path)
{
	const uint64_t cs = 65536;
	uint64_t e = setup(path, cs, false);
	struct cow_img *img = NULL;
	struct ut_err err;
	uint8_t *b = malloc(cs);

	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img || !b)
		goto out;
	CHECK(img->file_size <= e && img->end_cluster << img->cluster_bits == e);
	CHECK(test_fsize_limit(e + 1024) == 0);
	CHECK(test_write_pat(img, cs, 4096, 0xbb) < 0);
	CHECK(test_space_back(NULL) == 0);
	CHECK(stale_at(path, e, 1024));   /* the failed write left bytes there */
	CHECK(test_write_pat(img, 2 * cs + 8192, 512, 0xcc) == 0);
	CHECK(host_of(img, 2 * cs) == e);  /* the freed cluster, reused */
	CHECK(cow_read(img, b, cs, 2 * cs, &err) == 0);
	CHECK(all(b, 8192, 0) && all(b + 8192, 512, 0xcc) && all(b + 8704, cs - 8704, 0));
	CHECK(test_reads_as(img, cs, cs, 0));
	CHECK(test_reads_as(img, 0, cs, 0x11));
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
out:
	free(b);
	printf("stale bytes past the end, cow/: %s\n", failures ? "FAILED" : "ok");
}

/* The same through storage/ (the data write issued by the engine and
 * undone in its completion, storage/qcow2.c). */
static void stale_stg(const char *path, unsigned flags)
{
	const uint64_t cs = 65536;
	uint64_t e = setup(path, cs, false);
	struct stg_dev *d = NULL;
	struct cow_img *img = NULL;
	struct ut_err err;
	uint8_t *b = malloc(cs);
	int before = failures;

	CHECK(stg_open(path, NULL, flags, &d, &err) == 0);
	if (!d || !b)
		goto out;
	memset(b, 0xbb, 4096);
	CHECK(test_fsize_limit(e + 1024) == 0);
	CHECK(stg_pwrite(d, b, 4096, cs) < 0);
	CHECK(test_space_back(NULL) == 0);
	CHECK(stale_at(path, e, 1024));
	memset(b, 0xcc, 512);
	CHECK(stg_pwrite(d, b, 512, 2 * cs + 8192) == 0);
	CHECK(stg_pread(d, b, cs, 2 * cs) == 0);
	CHECK(all(b, 8192, 0) && all(b + 8192, 512, 0xcc) && all(b + 8704, cs - 8704, 0));
	CHECK(stg_pread(d, b, cs, cs) == 0);
	CHECK(all(b, cs, 0));
	CHECK(stg_flush(d) == 0);
	stg_close(d);
	CHECK(cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (img) {
		CHECK(host_of(img, 2 * cs) == e);
		cow_close(img);
	}
	CHECK(test_checks_clean(path));
out:
	free(b);
	printf("stale bytes past the end, storage/%s: %s\n", (flags & STG_O_THREADS) ? " threads" : "",
	       failures > before ? "FAILED" : "ok");
}

/* 3 whole clusters at the end, after 10 whole-cluster writes (the dense
 * allocations that start preallocation, I12), fail after 1 cluster + 100
 * bytes: all 3 freed; close trims; the next 3-cluster write reuses them. */
static void run_of_clusters(const char *path)
{
	const uint64_t cs = 65536;
	uint64_t e, h;
	struct cow_img *img = NULL;
	struct ut_err err;
	int before = failures;

	setup(path, cs, false);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	for (int i = 1; i <= 10; i++)
		CHECK(test_write_pat(img, i * cs, cs, (uint8_t)(0x20 + i)) == 0);
	e = img->end_cluster << img->cluster_bits;
	/* preallocation is on (unless the file system has no fallocate) */
	CHECK(img->falloc_off || img->prealloc_end > e);
	CHECK(test_fsize_limit(e + cs + 100) == 0);
	CHECK(test_write_pat(img, 20 * cs, 3 * cs, 0x44) < 0);
	CHECK(test_space_back(NULL) == 0);
	CHECK(test_reads_as(img, 20 * cs, 3 * cs, 0));
	CHECK(cow_close(img) == 0);
	/* the trim keeps the freed clusters (below end_cluster), no more */
	CHECK(fsize(path) <= e + 3 * cs);
	CHECK(test_checks_clean(path));   /* (no leak) */
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_write_pat(img, 30 * cs, 3 * cs, 0x55) == 0);
	h = host_of(img, 30 * cs);
	CHECK(h == e);
	CHECK(test_reads_as(img, 30 * cs, 3 * cs, 0x55));
	for (int i = 1; i <= 10; i++)
		CHECK(test_reads_as(img, i * cs, cs, (uint8_t)(0x20 + i)));
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
	printf("a run of clusters: %s\n", failures > before ? "FAILED" : "ok");
}

/* storage/ with 8 allocating writes in flight, each into a new cluster at
 * the end: the limit lets the first 3 clusters through and fails the others
 * (the io_uring engine merges them into one write, so all fail there;
 * completions come in any order, some after others were undone);
 * nothing leaks, the 3 read back, the others read as zeros, and the same 8
 * writes once the space is back reuse the freed clusters. */
struct slot { struct stg_req req; struct iovec iov; uint8_t *buf; bool busy; int result; };

static void slot_done(struct stg_req *req, int result)
{
	struct slot *s = req->opaque;

	s->busy = false;
	s->result = result;
}

static void inflight_case(const char *path, unsigned flags)
{
	const uint64_t cs = 65536;
	uint64_t e = setup(path, cs, false);
	struct stg_dev *d = NULL;
	struct slot sl[8];
	struct ut_err err;
	uint8_t *r = malloc(cs);
	int before = failures, nfail = 0;

	memset(sl, 0, sizeof(sl));
	CHECK(stg_open(path, NULL, flags, &d, &err) == 0);
	if (!d || !r)
		goto out;
	for (int round = 0; round < 2; round++) {
		if (round == 0)
			CHECK(test_fsize_limit(e + 3 * cs) == 0);
		for (int i = 0; i < 8; i++) {
			struct slot *s = &sl[i];
			if (!s->buf)
				s->buf = malloc(cs);
			memset(s->buf, 0x40 + i + round * 8, cs);
			s->iov = (struct iovec){ s->buf, cs };
			s->req = (struct stg_req){ .op = STG_OP_WRITE, .offset = (uint64_t)(2 + 2 * i) * cs,
						   .len = cs, .iov = &s->iov, .iovcnt = 1,
						   .done = slot_done, .opaque = s };
			s->busy = true;
			CHECK(stg_submit(d, &s->req) == 0);
		}
		stg_unplug(d);
		CHECK(stg_drain(d) == 0);
		CHECK(test_space_back(NULL) == 0);
		for (int i = 0; i < 8; i++) {
			struct slot *s = &sl[i];
			bool ok = s->result == 0;
			CHECK(!s->busy);
			if (round == 0)
				nfail += !ok;
			else
				CHECK(ok);
			CHECK(stg_pread(d, r, cs, s->req.offset) == 0);
			CHECK(ok ? all(r, cs, (uint8_t)(0x40 + i + round * 8)) : all(r, cs, 0));
		}
		/* (the io_uring engine merges the 8 adjacent writes into one,
		 * which fails as a whole: all 8 fail; the worker threads fail
		 * exactly the last 5) */
		if (round == 0)
			CHECK((flags & STG_O_THREADS) ? nfail == 5 : nfail >= 5);
		CHECK(stg_flush(d) == 0);
	}
	stg_close(d);
	d = NULL;
	CHECK(test_checks_clean(path));
	CHECK(fsize(path) <= e + 8 * cs);   /* the second round reused the freed clusters */
out:
	if (d)
		stg_close(d);
	for (int i = 0; i < 8; i++)
		free(sl[i].buf);
	free(r);
	printf("storage/, 8 writes in flight%s: %s\n", (flags & STG_O_THREADS) ? ", threads" : "",
	       failures > before ? "FAILED" : "ok");
}

/* Extended L2 (32 KiB clusters, 1 KiB subclusters). */
static void subclusters(const char *path)
{
	const uint64_t cs = 32768;
	uint64_t e, h;
	struct cow_img *img = NULL;
	struct cow_create_opts o = { .size = 16 * MIB, .cluster_size = cs, .extended_l2 = true };
	struct ut_err err;
	int before = failures;

	unlink(path);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_write_pat(img, 0, 1024, 0x11) == 0);   /* subcluster 0 of a new cluster */
	h = host_of(img, 0);
	CHECK(h != 0);
	/* into subclusters 8..15 of the cluster guest cluster 0 owns: the
	 * write fails, the cluster (and subcluster 0) stays */
	CHECK(test_fsize_limit(h + 4096) == 0);
	CHECK(test_write_pat(img, 8192, 8192, 0x22) < 0);
	/* a partial write into guest cluster 1: a new host cluster, freed */
	e = img->end_cluster << img->cluster_bits;
	CHECK(e > h);
	CHECK(test_write_pat(img, cs + 2048, 1024, 0x33) < 0);
	CHECK(test_space_back(NULL) == 0);
	CHECK(host_of(img, 0) == h);
	CHECK(test_reads_as(img, 0, 1024, 0x11));
	CHECK(test_reads_as(img, 1024, 2 * cs - 1024, 0));
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_write_pat(img, 8192, 8192, 0x22) == 0);
	CHECK(host_of(img, 8192) == h + 8192);
	CHECK(test_write_pat(img, 3 * cs + 4096, 1024, 0x44) == 0);
	CHECK(test_reads_as(img, 0, 1024, 0x11));
	CHECK(test_reads_as(img, 1024, 7168, 0));
	CHECK(test_reads_as(img, 8192, 8192, 0x22));
	CHECK(test_reads_as(img, 16384, 3 * cs + 4096 - 16384, 0));
	CHECK(test_reads_as(img, 3 * cs + 4096, 1024, 0x44));
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
	printf("extended L2: %s\n", failures > before ? "FAILED" : "ok");
}

/* Compressible content for guest cluster @c: half pattern, half zeros. */
static void comp_data(uint8_t *b, uint64_t cs, unsigned c)
{
	for (uint64_t j = 0; j < cs; j++)
		b[j] = j < cs / 2 ? (uint8_t)((j * 7 + c) ^ (j >> 5)) : 0;
}

static void compressed(const char *path)
{
	const uint64_t cs = 65536;
	uint64_t e = setup(path, cs, false), end;
	struct cow_img *img = NULL;
	struct ut_err err;
	uint8_t *b = malloc(cs), *r = malloc(cs);
	int before = failures;

	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img || !b || !r)
		goto out;
	/* a new cluster for it: freed */
	comp_data(b, cs, 1);
	CHECK(test_fsize_limit(e + 100) == 0);
	CHECK(cow_write_compressed(img, b, cs, cs, &err) < 0);
	CHECK(test_space_back(NULL) == 0);
	/* the next one reuses that cluster */
	comp_data(b, cs, 2);
	CHECK(cow_write_compressed(img, b, cs, 2 * cs, &err) == 0);
	CHECK(img->comp_off > e && img->comp_off < e + cs);
	/* one packed after it fails: only its reference is dropped */
	end = img->comp_off;
	comp_data(b, cs, 3);
	CHECK(test_fsize_limit(end + 10) == 0);
	CHECK(cow_write_compressed(img, b, cs, 3 * cs, &err) < 0);
	CHECK(test_space_back(NULL) == 0);
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		goto out;
	CHECK(test_reads_as(img, 0, cs, 0x11));
	CHECK(test_reads_as(img, cs, cs, 0));
	comp_data(b, cs, 2);
	CHECK(cow_read(img, r, cs, 2 * cs, &err) == 0 && !memcmp(r, b, cs));
	CHECK(test_reads_as(img, 3 * cs, cs, 0));
	comp_data(b, cs, 4);
	CHECK(cow_write_compressed(img, b, cs, 4 * cs, &err) == 0);
	CHECK(cow_read(img, r, cs, 4 * cs, &err) == 0 && !memcmp(r, b, cs));
	/* one that continues into the next host cluster fails: the
	 * reference on the open cluster and the new cluster are dropped */
	{
		uint64_t vc = 5, step = 0, prev = img->comp_off;

		comp_data(b, cs, 5);
		while (vc < 200 && (!step || (img->comp_off & (cs - 1)) + step <= cs)) {
			CHECK(cow_write_compressed(img, b, cs, vc++ * cs, &err) == 0);
			step = img->comp_off - prev;
			prev = img->comp_off;
		}
		end = img->comp_off;
		CHECK(step > 0 && (end & (cs - 1)) + step > cs);
		CHECK(test_fsize_limit((end + cs - 1) & ~(cs - 1)) == 0);
		CHECK(cow_write_compressed(img, b, cs, vc * cs, &err) < 0);
		CHECK(test_space_back(NULL) == 0);
		CHECK(cow_flush(img, &err) == 0);
		CHECK(test_checks_clean(path));
		CHECK(test_reads_as(img, vc * cs, cs, 0));
		/* and the next one packs after the earlier ones again */
		CHECK(cow_write_compressed(img, b, cs, vc * cs, &err) == 0);
		CHECK(cow_read(img, r, cs, vc * cs, &err) == 0 && !memcmp(r, b, cs));
		CHECK(cow_read(img, r, cs, (vc - 1) * cs, &err) == 0 && !memcmp(r, b, cs));
	}
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
out:
	free(b);
	free(r);
	printf("compressed: %s\n", failures > before ? "FAILED" : "ok");
}

int main(void)
{
	char path[128], cmd[64];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/e.qcow2", dir);
	stale_cow(path);
	stale_stg(path, 0);
	stale_stg(path, STG_O_THREADS);
	inflight_case(path, 0);
	inflight_case(path, STG_O_THREADS);
	run_of_clusters(path);
	subclusters(path);
	compressed(path);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%s\n", failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}
