/* tests/unit/test-cow-resize-prealloc.c — cow_grow_prealloc (cow/resize.c
 * prealloc_area, cow/prealloc.c cow_prealloc_fill; qemu-img resize
 * --preallocation), for metadata, falloc and full:
 *  - qcow2 images of 512-byte, 4 KiB and 64 KiB clusters with standard L2
 *    entries and of 16 KiB and 64 KiB clusters with extended ones, version
 *    3 and 2, grown from an old size that ends inside a cluster to one that
 *    needs new L2 tables and (512 B, 4 KiB) a larger L1 table: the old data
 *    reads unchanged, the new area reads zeros; every guest cluster from
 *    the one holding the old end on has a host cluster of its own (COPIED,
 *    refcount 1), the new ones one contiguous run; cow_check finds no
 *    corruption, no leak, and the allocated count grown by the new area;
 *    writes over the whole new area after a reopen go in place (st_size
 *    unchanged) and read back;
 *  - more clusters than one allocation takes (600 MiB of 512-byte
 *    clusters): two runs, clean, written in place across them;
 *  - disk use: metadata leaves the new area a hole, falloc reserves it
 *    (unwritten extents, FIEMAP), full writes it (no unwritten extent);
 *  - over a backing file longer than the old size (standard and extended
 *    L2, no extended L2 needed) the new area reads zeros, not the backing
 *    file; over a shorter one, zeros too; the old area reads through;
 *  - a raw file: falloc and full reserve or write the new area from the
 *    old end of the file (unaligned) on; metadata is refused;
 *  - refused: the same or a smaller size (-EINVAL, "can only be used for
 *    growing"), an unknown mode; nothing changed;
 *  - a failed fill (fallocate answering ENOSPC, through this program's
 *    own fallocate) leaves the old size, the old data and
 *    no leak (I17);
 *  - full writes its zeros with direct I/O on the image's own descriptor
 *    (fcntl F_SETFL O_DIRECT; seen by this program's pwrite) and, where a
 *    direct write is refused, buffered: both read zeros and check clean. */
#include "cow/map.h"
#include "cow/qcow2.h"
#include "tests/helpers/cowfill.h"
#include "tests/unit/test-file.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

static char dir[] = "/var/tmp/cowrsp.XXXXXX";
static const char *const mname[] = { "off", "metadata", "falloc", "full" };

/* fallocate and pwrite of this program (cow/ is linked statically,
 * so these override libc's): a refused reservation, and counted or refused
 * direct writes */
static bool fail_falloc, refuse_direct;
static unsigned direct_writes, refused;

int fallocate(int fd, int mode, off_t off, off_t len)
{
	if (fail_falloc && mode == 0) {
		errno = ENOSPC;
		return -1;
	}
	return (int)syscall(SYS_fallocate, fd, mode, off, len);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	if (fcntl(fd, F_GETFL) & O_DIRECT) {
		if (refuse_direct) {
			refused++;
			errno = EINVAL;
			return -1;
		}
		direct_writes++;
	}
	return syscall(SYS_pwrite64, fd, buf, n, off);
}

/* Bytes of unwritten (reserved, never written) extents in [off, off+len)
 * of @path; -1 when FIEMAP is not available. */
static int64_t unwritten_bytes(const char *path, uint64_t off, uint64_t len)
{
	enum { N = 512 };
	struct fiemap *fm = calloc(1, sizeof(*fm) + N * sizeof(struct fiemap_extent));
	int fd = open(path, O_RDONLY);
	int64_t sum = -1;

	if (fm && fd >= 0) {
		fm->fm_start = off;
		fm->fm_length = len;
		fm->fm_flags = FIEMAP_FLAG_SYNC;
		fm->fm_extent_count = N;
		if (ioctl(fd, FS_IOC_FIEMAP, fm) == 0) {
			sum = 0;
			for (uint32_t i = 0; i < fm->fm_mapped_extents; i++)
				if (fm->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN)
					sum += (int64_t)fm->fm_extents[i].fe_length;
		}
	}
	if (fd >= 0)
		close(fd);
	free(fm);
	return sum;
}

static bool check_res(const char *path, struct cow_check_res *r)
{
	struct ut_err err;
	bool ok;

	memset(r, 0, sizeof(*r));
	ok = cow_check(path, COW_REPAIR_NONE, r, &err) == 0 && !r->corruptions && !r->leaks;
	if (!ok)
		fprintf(stderr, "%s: %llu corruptions, %llu leaks\n%.*s\n", path,
			(unsigned long long)r->corruptions, (unsigned long long)r->leaks,
			(int)r->msgs.len, r->msgs.data ? (char *)r->msgs.data : "");
	ut_buf_release(&r->msgs);
	return ok;
}

/* Guest clusters [c0, c1) of @img each have a host cluster with COPIED and
 * refcount 1; those from @run on form one run in guest order (at most
 * *@runs runs, when @runs is not NULL; their number then in *@runs). */
static bool own_clusters_runs(struct cow_img *img, uint64_t c0, uint64_t c1, uint64_t run,
			      unsigned *runs)
{
	uint64_t first = 0;
	unsigned nruns = 0, max = runs ? *runs : 1;

	for (uint64_t c = c0; c < c1; c++) {
		uint64_t e, bmp, rc = 0, h;
		struct ut_err err;

		if (cow_get_entry(img, c, &e, &bmp, NULL, &err) < 0)
			return false;
		h = e & QCOW_OFFSET_MASK;
		if (!h || !(e & QCOW_OFLAG_COPIED) || (e & QCOW_OFLAG_COMPRESSED) ||
		    cow_rc_get(img, h >> img->cluster_bits, &rc, &err) < 0 || rc != 1) {
			fprintf(stderr, "guest cluster %llu: entry 0x%llx, refcount %llu\n",
				(unsigned long long)c, (unsigned long long)e, (unsigned long long)rc);
			return false;
		}
		if (c >= run && (c == run || h != first + (c - run) * img->cluster_size)) {
			if (++nruns > max) {
				fprintf(stderr, "guest cluster %llu at 0x%llx: run %u\n",
					(unsigned long long)c, (unsigned long long)h, nruns);
				return false;
			}
			first = h;
			run = c;
		}
	}
	if (runs)
		*runs = nruns;
	return true;
}

static bool own_clusters(struct cow_img *img, uint64_t c0, uint64_t c1, uint64_t run)
{
	return own_clusters_runs(img, c0, c1, run, NULL);
}

struct cfg { uint32_t cs; bool extl2; int version; };

/* Grow an image of @c from @old to @size with @mode; the old data is 0x5a
 * in [0, old / 2) and 0xa5 in the last 512 bytes before @old. */
static void grow_one(const struct cfg *c, enum cow_prealloc_mode mode, uint64_t old, uint64_t size)
{
	char path[200];
	struct cow_create_opts o = { .size = old, .cluster_size = c->cs, .extended_l2 = c->extl2,
				     .version = c->version };
	struct cow_img *img = NULL;
	struct cow_check_res r0, r1;
	struct ut_err err;
	uint64_t cs = c->cs, first = (old + cs - 1) / cs, ncl = (size + cs - 1) / cs;
	uint64_t sz, used0, used;
	int64_t unw;

	snprintf(path, sizeof(path), "%s/g%u%s-v%d-%s.qcow2", dir, c->cs, c->extl2 ? "x" : "",
		 c->version, mname[mode]);
	ut_err_clear(&err);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_write_pat(img, 0, old / 2, 0x5a) == 0);
	CHECK(test_write_pat(img, old - 512, 512, 0xa5) == 0);
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(check_res(path, &r0));
	used0 = used_bytes(path);

	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	if (cow_grow_prealloc(img, size, mode, &err) < 0) {
		fprintf(stderr, "%s: %s\n", path, err.msg);
		CHECK(!"grow");
	}
	CHECK(cow_size(img) == size);
	CHECK(test_reads_as(img, 0, old / 2, 0x5a));
	CHECK(test_reads_as(img, old - 512, 512, 0xa5));
	CHECK(test_reads_as(img, old, size - old, 0));
	CHECK(own_clusters(img, (old - 1) / cs, ncl, first));
	CHECK(cow_close(img) == 0);
	img = NULL;

	CHECK(check_res(path, &r1));
	/* every cluster of the new area allocated (the partial one at the
	 * old end was: it holds the 0xa5 bytes) */
	CHECK(r1.allocated_clusters == r0.allocated_clusters + (ncl - first));
	CHECK(r1.total_clusters == ncl);
	used = used_bytes(path);
	unw = unwritten_bytes(path, 0, file_size(path));
	if (mode == COW_PREALLOC_METADATA) {
		CHECK(used < used0 + (size - old) / 4 + (2u << 20));
	} else {
		CHECK(used >= used0 + (ncl - first) * cs);
		if (unw >= 0)
			CHECK(mode == COW_PREALLOC_FALLOC ? (uint64_t)unw >= (ncl - first) * cs / 2 : unw == 0);
	}

	/* writes over the whole new area: in place, the file does not grow */
	sz = file_size(path);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_reads_as(img, 0, old / 2, 0x5a));
	CHECK(test_reads_as(img, old, size - old, 0));
	CHECK(test_write_pat(img, old, size - old, 0x3c) == 0);
	CHECK(cow_close(img) == 0);
	img = NULL;
	if (file_size(path) != sz)
		fprintf(stderr, "%s: grew from %llu to %llu bytes\n", path, (unsigned long long)sz,
			(unsigned long long)file_size(path));
	CHECK(file_size(path) == sz);
	CHECK(check_res(path, &r1));
	CHECK(cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_reads_as(img, old - 512, 512, 0xa5));
	CHECK(test_reads_as(img, old, size - old, 0x3c));
	cow_close(img);
}

/* Over a backing file of 8 MiB (0x77), an overlay of @old bytes grows to
 * 12 MiB: the new area reads zeros, the old one through. */
static void grow_backing(bool extl2, enum cow_prealloc_mode mode, uint64_t old)
{
	char base[200], top[200];
	struct cow_create_opts ob = { .size = 8 << 20 }, ot = { .size = old, .extended_l2 = extl2 };
	struct cow_img *img = NULL;
	struct cow_check_res r;
	struct ut_err err;

	snprintf(base, sizeof(base), "%s/base.qcow2", dir);
	snprintf(top, sizeof(top), "%s/top-%s-%s-%llu.qcow2", dir, extl2 ? "x" : "s", mname[mode],
		 (unsigned long long)old);
	if (access(base, F_OK) != 0) {
		CHECK(cow_create(base, &ob, &err) == 0);
		CHECK(cow_open(base, "qcow2", 0, &img, &err) == 0);
		if (!img)
			return;
		CHECK(test_write_pat(img, 0, 8 << 20, 0x77) == 0);
		CHECK(cow_close(img) == 0);
		img = NULL;
	}
	ot.backing = base;
	ot.backing_fmt = "qcow2";
	CHECK(cow_create(top, &ot, &err) == 0);
	CHECK(cow_open(top, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_write_pat(img, 65536, 4096, 0x22) == 0);
	if (cow_grow_prealloc(img, 12 << 20, mode, &err) < 0) {
		fprintf(stderr, "%s: %s\n", top, err.msg);
		CHECK(!"grow over backing");
	}
	CHECK(test_reads_as(img, 0, 65536, 0x77));
	CHECK(test_reads_as(img, 65536, 4096, 0x22));
	CHECK(test_reads_as(img, 65536 + 4096, old - 65536 - 4096, 0x77));
	CHECK(test_reads_as(img, old, (12 << 20) - old, 0));
	CHECK(own_clusters(img, (old + 65535) / 65536, (12 << 20) / 65536, (old + 65535) / 65536));
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(check_res(top, &r));
	CHECK(cow_open(top, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_reads_as(img, 65536 + 4096, old - 65536 - 4096, 0x77));
	CHECK(test_reads_as(img, old, (12 << 20) - old, 0));
	cow_close(img);
}

static void grow_raw(enum cow_prealloc_mode mode)
{
	char path[200];
	struct cow_img *img = NULL;
	struct ut_err err;
	uint8_t b[1000];
	int fd, ret;

	snprintf(path, sizeof(path), "%s/r-%s.raw", dir, mname[mode]);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	memset(b, 0x44, sizeof(b));
	CHECK(fd >= 0 && pwrite(fd, b, sizeof(b), 0) == (ssize_t)sizeof(b));
	if (fd >= 0)
		close(fd);
	CHECK(cow_open(path, "raw", 0, &img, &err) == 0);
	if (!img)
		return;
	ret = cow_grow_prealloc(img, 6 << 20, mode, &err);
	if (mode == COW_PREALLOC_METADATA) {
		CHECK(ret == -ENOTSUP);
		CHECK(strstr(err.msg, "metadata") && strstr(err.msg, path));
		cow_close(img);
		CHECK(file_size(path) == 1000);
		return;
	}
	CHECK(ret == 0);
	CHECK(test_reads_as(img, 0, 1000, 0x44));
	CHECK(test_reads_as(img, 1000, (6 << 20) - 1000, 0));
	cow_close(img);
	CHECK(file_size(path) == 6 << 20);
	CHECK(used_bytes(path) >= (6 << 20) - 4096);
	if (unwritten_bytes(path, 0, 6 << 20) >= 0)
		CHECK(mode == COW_PREALLOC_FALLOC ? unwritten_bytes(path, 0, 6 << 20) > (4 << 20)
						  : unwritten_bytes(path, 0, 6 << 20) == 0);
}

/* 600 MiB of 512-byte clusters: more than one allocation's worth of
 * clusters (resize.c PREALLOC_RUN, 2^20): two runs, both mapped, clean,
 * written in place across their boundary. */
static void grow_big(void)
{
	char path[200];
	struct cow_create_opts o = { .size = 1 << 20, .cluster_size = 512 };
	struct cow_img *img = NULL;
	struct cow_check_res r;
	struct ut_err err;
	uint64_t size = (601ull << 20), ncl = size / 512, sz;
	unsigned runs = 2;

	snprintf(path, sizeof(path), "%s/big.qcow2", dir);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(cow_grow_prealloc(img, size, COW_PREALLOC_METADATA, &err) == 0);
	CHECK(own_clusters_runs(img, 2048, ncl, 2048, &runs));
	CHECK(runs == 2);
	CHECK(test_reads_as(img, (513ull << 20) - 4096, 8192, 0));
	CHECK(test_reads_as(img, size - (1 << 20), 1 << 20, 0));
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(check_res(path, &r));
	CHECK(r.allocated_clusters == ncl - 2048 && r.total_clusters == ncl);
	CHECK(used_bytes(path) < (64u << 20));
	sz = file_size(path);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_write_pat(img, 512ull << 20, 2 << 20, 0x71) == 0);
	CHECK(test_reads_as(img, 512ull << 20, 2 << 20, 0x71));
	CHECK(cow_close(img) == 0);
	CHECK(file_size(path) == sz);
	CHECK(test_checks_clean(path));
}

static void refusals(void)
{
	char path[200];
	struct cow_create_opts o = { .size = 1 << 20 };
	struct cow_img *img = NULL;
	struct ut_err err;
	uint64_t sz;

	snprintf(path, sizeof(path), "%s/refuse.qcow2", dir);
	CHECK(cow_create(path, &o, &err) == 0);
	sz = file_size(path);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(cow_grow_prealloc(img, 1 << 20, COW_PREALLOC_FULL, &err) == -EINVAL);
	CHECK(strstr(err.msg, "can only be used for growing") && strstr(err.msg, path));
	CHECK(cow_grow_prealloc(img, 512 << 10, COW_PREALLOC_METADATA, &err) == -EINVAL);
	CHECK(cow_grow_prealloc(img, 2 << 20, (enum cow_prealloc_mode)7, &err) == -EINVAL);
	CHECK(strstr(err.msg, "unknown preallocation mode") != NULL);
	CHECK(cow_grow_prealloc(img, 1 << 20, COW_PREALLOC_OFF, &err) == 0);   /* nothing to do */
	CHECK(cow_size(img) == 1 << 20);
	CHECK(cow_close(img) == 0);
	CHECK(file_size(path) == sz);
	CHECK(test_checks_clean(path));
}

/* A reservation that fails (ENOSPC): the old size and data, no leak. */
static void failed_fill(void)
{
	char path[200];
	struct cow_create_opts o = { .size = 1 << 20 };
	struct cow_img *img = NULL;
	struct ut_err err;

	snprintf(path, sizeof(path), "%s/enospc.qcow2", dir);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_write_pat(img, 0, 1 << 20, 0x61) == 0);
	fail_falloc = true;
	CHECK(cow_grow_prealloc(img, 64 << 20, COW_PREALLOC_FALLOC, &err) == -ENOSPC);
	fail_falloc = false;
	CHECK(strstr(err.msg, path) != NULL);
	CHECK(cow_size(img) == 1 << 20);
	CHECK(test_reads_as(img, 0, 1 << 20, 0x61));
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(test_checks_clean(path));
	CHECK(cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (!img)
		return;
	CHECK(cow_size(img) == 1 << 20);
	CHECK(test_reads_as(img, 0, 1 << 20, 0x61));
	cow_close(img);
}

/* full: zeros with direct writes on the image's own descriptor, or
 * buffered from a refused direct write on. */
static void full_direct(bool refuse)
{
	char path[200];
	struct cow_create_opts o = { .size = 1 << 20 };
	struct cow_img *img = NULL;
	struct ut_err err;

	snprintf(path, sizeof(path), "%s/direct%d.qcow2", dir, refuse);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	direct_writes = refused = 0;
	refuse_direct = refuse;
	CHECK(cow_grow_prealloc(img, 40 << 20, COW_PREALLOC_FULL, &err) == 0);
	refuse_direct = false;
	CHECK(refuse ? refused == 1 && direct_writes == 0 : direct_writes >= 1);
	CHECK(!(fcntl(cow_layer_fd(img), F_GETFL) & O_DIRECT));   /* restored */
	CHECK(test_reads_as(img, 0, 40 << 20, 0));
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
	CHECK(used_bytes(path) >= 39u << 20);
	if (unwritten_bytes(path, 0, file_size(path)) >= 0)
		CHECK(unwritten_bytes(path, 0, file_size(path)) == 0);
}

int main(void)
{
	static const struct cfg cfgs[] = {
		{ 512, false, 3 }, { 4096, false, 3 }, { 65536, false, 3 }, { 65536, false, 2 },
		{ 16384, true, 3 }, { 65536, true, 3 },
	};
	char cmd[300];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	for (int m = COW_PREALLOC_METADATA; m <= COW_PREALLOC_FULL; m++) {
		for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
			const struct cfg *c = &cfgs[i];
			/* the old end inside a cluster (512-byte clusters:
			 * aligned); the new size needs new L2 tables */
			uint64_t old = 3 * (uint64_t)c->cs + (c->cs > 512 ? 1536 : 0) + (256 << 10);
			uint64_t size = (c->cs <= 4096 ? 6 << 20 : 40 << 20) + 512;

			grow_one(c, (enum cow_prealloc_mode)m, old, size);
		}
		for (int x = 0; x < 2; x++) {
			grow_backing(x, (enum cow_prealloc_mode)m, (2 << 20) + 4608);   /* longer backing */
			grow_backing(x, (enum cow_prealloc_mode)m, 8 << 20);             /* as long */
		}
		grow_raw((enum cow_prealloc_mode)m);
		fprintf(stderr, "done: %s\n", mname[m]);
	}
	grow_big();
	refusals();
	failed_fill();
	full_direct(false);
	full_direct(true);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	if (failures) {
		fprintf(stderr, "%d failures\n", failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
