/* tests/unit/test-cow-bitmap-store-fail.c — persistent dirty bitmaps that
 * a writable open tracks (cow/bitmaps.c; cow.h I18), stored by a close
 * that fails at every step it takes: after writes of every kind (write,
 * write-zeroes with unmap, discard, compressed), the N-th write (pwrite,
 * pwritev: EIO), the N-th fdatasync (EIO), the N-th read (pread: EIO)
 * from the start of cow_close fails, for N = 1, 2, ... until the close
 * gets through untouched; and a file size limit (RLIMIT_FSIZE, EFBIG) at
 * the file's size plus k clusters, k = 0, 1, ... (these functions are
 * overridden in this program; cow/ is linked statically). After each,
 * the image is reopened read-only and:
 *  - every bitmap is there, with its name and granularity;
 *  - one in use is allowed only after a close that returned an error;
 *    a close that returned 0 left none in use (but the one in use before,
 *    which stays so);
 *  - one not in use has a table of exactly the entries the size needs
 *    and: enabled, exactly the bits it had plus those of every granule
 *    the writes touched; disabled, exactly the bits it had; and every
 *    granule whose data differs from before has its bit (consistent
 *    means that);
 *  - cow_check finds no corruption, `qemu-img check` exits 0 or 3 (leaks
 *    only);
 *  - a write failure or an fdatasync failure that fired is reported by
 *    the close.
 * The same with a shrink (cow_shrink, not COW_O_KEEP_BITMAPS: the tracked
 * bitmaps follow the size in memory) failing at every step after the
 * writes, then the close: the size is the old or the new one (the new one
 * when the shrink succeeded); a bitmap not in use has a table for that
 * size and its bits as above below the new size; at the old size (a
 * failed shrink) each bit of the tail as above or set (the tail, perhaps
 * released, recorded); in use only after a shrink or close that failed.
 * A bitmap QEMU left in use ("stale") is in the template too: it must stay
 * in use, untouched. The counts of each outcome are printed. Without
 * qemu-img and qemu-io (they make the bitmaps) the test is skipped. */
#include "cow/qcow2.h"
#include "tests/helpers/fullfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define CS 1024u
#define SIZE ((6ull << 20) + 1536)   /* not a multiple of 64 KiB */
#define SHRINK ((3ull << 20) + 65536 + 512)   /* shrunk to */
#define MAXBM 5

static char dir[] = "/var/tmp/cowbmstore.XXXXXX";
static char tmpl[160], work[160];

#include "tests/unit/test-cow-bm.h"

/* the writes cowvm makes: kind, offset, length */
static const struct { char kind; uint64_t off, len; } ops[] = {
	{ 'w', 100, 5000 },
	{ 'w', (3u << 20) + 7, 1 },
	{ 'u', 5u << 20, 64u << 10 },
	{ 'd', 1u << 20, 64u << 10 },
	{ 'c', 2u << 20, 8 * CS },
	{ 'w', SIZE - 600, 600 },
	{ 'z', (4u << 20) + 100, 3000 },
};

static struct bm orig[MAXBM];
static int norig;
static uint8_t *orig_data;
static unsigned n_runs, n_in_use, n_consistent, n_ok, n_shrunk, n_kept;


/* Does a write touch granule @k of granularity 2^@gb? */
static bool touched(uint64_t k, unsigned gb)
{
	uint64_t a = k << gb, b = (k + 1) << gb;

	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (ops[i].off < b && a < ops[i].off + ops[i].len)
			return true;
	return false;
}

/* Check the reopened image after the writes, a shrink to @target (0:
 * none) that returned @sret and a close that returned @ret. */
static void verify(int sret, int ret, uint64_t target, const char *what)
{
	struct cow_img *img = NULL;
	struct cow_check_res r;
	struct bm b[MAXBM];
	struct ut_err err;
	uint8_t *buf;
	int n, f0 = failures, in_use = 0;
	uint64_t size, same;
	char cmd[256];

	CHECK(cow_open(work, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (!img) {
		fprintf(stderr, "%s: %s\n", what, err.msg);
		return;
	}
	size = cow_size(img);
	CHECK(size == SIZE || (target && size == target));
	CHECK(!target || sret < 0 || size == target);
	same = size < SIZE ? size : SIZE;
	buf = malloc(SIZE);
	CHECK(buf && cow_read(img, buf, same, 0, &err) == 0);
	n = read_bitmaps(img, b);
	CHECK(n == norig);
	for (int i = 0; i < n && i < norig; i++) {
		bool enabled = b[i].flags & COW_BITMAP_AUTO;

		CHECK(!strcmp(b[i].name, orig[i].name) && b[i].gb == orig[i].gb);
		if (orig[i].flags & COW_BITMAP_IN_USE) {
			/* in use before: untouched */
			CHECK(b[i].flags == orig[i].flags && b[i].tsize == orig[i].tsize);
			continue;
		}
		if (b[i].flags & COW_BITMAP_IN_USE) {
			if (ret == 0 && sret == 0) {
				fprintf(stderr, "%s: bitmap %s in use after a close that succeeded\n", what,
					b[i].name);
				failures++;
			}
			in_use++;
			continue;
		}
		CHECK(b[i].tsize == tab_entries(size, b[i].gb));
		for (uint64_t k = 0; k < b[i].nbits; k++) {
			uint8_t want = orig[i].bits[k] | (enabled && touched(k, b[i].gb));
			uint64_t g = 1ull << b[i].gb, l = same - k * g < g ? same - k * g : g;
			/* a failed shrink's tail: recorded, as it may be released */
			bool tail = target && size == SIZE && enabled && k >= target >> b[i].gb;

			if (b[i].bits[k] != want && !(tail && b[i].bits[k])) {
				fprintf(stderr, "%s: bitmap %s bit %llu is %u, not %u\n", what, b[i].name,
					(unsigned long long)k, b[i].bits[k], want);
				failures++;
				break;
			}
			if (enabled && buf && !b[i].bits[k] && memcmp(buf + k * g, orig_data + k * g, l)) {
				fprintf(stderr, "%s: bitmap %s: granule %llu changed, its bit is clear\n", what,
					b[i].name, (unsigned long long)k);
				failures++;
				break;
			}
		}
	}
	if (n == norig)
		in_use ? n_in_use++ : ret < 0 || sret < 0 ? n_consistent++ : n_ok++;
	if (target && n == norig && !in_use)
		size == target ? n_shrunk++ : n_kept++;
	free(buf);
	free_bitmaps(b, n > 0 ? n : 0);
	cow_close(img);
	memset(&r, 0, sizeof(r));
	CHECK(cow_check(work, COW_REPAIR_NONE, &r, &err) == 0 && r.corruptions == 0);
	ut_buf_release(&r.msgs);
	snprintf(cmd, sizeof(cmd), "qemu-img check -q -f qcow2 %s >/dev/null 2>&1", work);
	n = run(cmd);
	if (n != 0 && n != 3) {
		fprintf(stderr, "%s: qemu-img check exits %d\n", what, n);
		failures++;
	}
	if (failures != f0 && getenv("BMFAIL_STOP")) {
		fprintf(stderr, "stopped, image kept: %s (template %s)\n", work, tmpl);
		exit(1);
	}
	if (failures != f0)
		fprintf(stderr, "  ^ after %s (shrink returned %d, close %d)\n", what, sret, ret);
	n_runs++;
}

/* The writes on a fresh copy, then (@target) a shrink to @target and a
 * close, with failure @kind at call @n of the shrink, else of the close
 * (INJ_FSIZE: the limit at the file's size plus @n - 1 clusters).
 * Returns whether the failure fired. */
static bool one(enum inj kind, int n, uint64_t target)
{
	struct cow_img *img = NULL;
	struct ut_err err = { 0 };
	uint8_t *data = malloc(64u << 10);
	struct stat st;
	char what[128];
	bool f;
	int ret = 0, sret = 0;

	CHECK(copy_file(tmpl, work) == 0);
	CHECK(cow_open(work, "qcow2", 0, &img, &err) == 0);
	if (!img || !data) {
		free(data);
		return false;
	}
	memset(data, 0xa5, 64u << 10);
	for (size_t i = 0; ret == 0 && i < sizeof(ops) / sizeof(ops[0]); i++) {
		switch (ops[i].kind) {
		case 'w': ret = cow_write(img, data, ops[i].len, ops[i].off, &err); break;
		case 'c': ret = cow_write_compressed(img, data, ops[i].len, ops[i].off, &err); break;
		case 'u': ret = cow_write_zeroes(img, ops[i].len, ops[i].off, COW_ZERO_MAY_UNMAP, &err); break;
		case 'z': ret = cow_write_zeroes(img, ops[i].len, ops[i].off, 0, &err); break;
		default: ret = cow_discard(img, ops[i].len, ops[i].off, false, &err); break;
		}
	}
	CHECK(ret == 0);
	free(data);
	fired = false;
	if (kind == INJ_FSIZE) {
		CHECK(fstat(img->fd, &st) == 0);
		CHECK(test_fsize_limit(img->file_size + (uint64_t)(n - 1) * CS) == 0);
	} else {
		armed_kind = kind;
		armed_fd = img->fd;
		fail_in = n;
	}
	if (target) {
		sret = cow_shrink(img, target, &err);
		armed_fd = -1;
		fail_in = 0;
		if (kind == INJ_FSIZE) {
			test_space_back(NULL);
			fired = sret == -EFBIG;
		}
	}
	ret = cow_close(img);
	armed_fd = -1;
	fail_in = 0;
	if (kind == INJ_FSIZE && !target) {
		test_space_back(NULL);
		fired = ret == -EFBIG;
	}
	f = fired;
	/* a failed write or fdatasync is reported (a failed read may only
	 * cost a leak: an old cluster whose refcount cannot be read stays) */
	CHECK(!f || kind == INJ_READ || ret < 0 || sret < 0);
	CHECK(f || (ret == 0 && sret == 0));
	snprintf(what, sizeof(what), "%s, %s failing at %d", target ? "shrink" : "close", inj_name[kind], n);
	verify(sret, ret, target, what);
	return f;
}

static void sweep(enum inj kind, uint64_t target)
{
	int n, fails = 0;

	for (n = 1; n < 400 && one(kind, n, target); n++)
		fails++;
	CHECK(n < 400);
	printf("%s: %d runs failed (%s failing at call 1, 2, ...), then one through\n",
	       target ? "shrink, then close" : "close", fails, inj_name[kind]);
}

int main(void)
{
	struct cow_img *img = NULL;
	struct ut_err err;
	char cmd[4096];

	if (run("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0) {
		printf("SKIP: qemu-img and qemu-io are needed to make images with bitmaps\n");
		return 77;
	}
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(tmpl, sizeof(tmpl), "%s/t.qcow2", dir);
	snprintf(work, sizeof(work), "%s/w.qcow2", dir);
	/* 1 KiB clusters: a 512-byte-granularity bitmap has 2 clusters of
	 * bits; "fine" and "coarse" enabled, "off" disabled with bits of its
	 * own, "stale" marked in use below (as a QEMU that was killed leaves
	 * it), and "empty" enabled with no bit set before */
	snprintf(cmd, sizeof(cmd),
		 "set -e; qemu-img create -q -f qcow2 -o cluster_size=%u %s %llu; "
		 "qemu-img bitmap --add -g 512 %s fine; qemu-img bitmap --add -g 64k %s coarse; "
		 "qemu-img bitmap --add -g 512 %s off; qemu-img bitmap --add -g 4k %s stale; "
		 "qemu-io -f qcow2 -c 'write -P 0x11 0 64k' -c 'write -P 0x22 1M 300k' "
		 "-c 'write -P 0x44 4M 1M' %s >/dev/null; "
		 "qemu-img bitmap --disable %s off; qemu-img bitmap --add -g 512 %s empty",
		 CS, tmpl, (unsigned long long)SIZE, tmpl, tmpl, tmpl, tmpl, tmpl, tmpl, tmpl);
	if (run(cmd) != 0) {
		fprintf(stderr, "could not make %s\n", tmpl);
		return 1;
	}
	/* "stale" (the fourth entry) in use */
	CHECK(cow_open(tmpl, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (!img)
		return 1;
	{
		uint64_t dsize, doff, p = 0;
		uint32_t nb;
		uint8_t d[1024], fl[4];
		int fd = open(tmpl, O_WRONLY);

		CHECK(fd >= 0 && cow_bitmaps_ext(img, &nb, &dsize, &doff) && nb == 5 && dsize <= sizeof(d) &&
		      cow_pread_full(img, d, dsize, doff, false, &err) == 0);
		for (int i = 0; i < 3 && p + 24 <= dsize; i++)
			p += (24 + cow_be32(d + p + 20) + cow_be16(d + p + 18) + 7) & ~7ull;
		CHECK(p + 24 <= dsize && !memcmp(d + p + 24 + cow_be32(d + p + 20), "stale", 5));
		cow_put32(fl, cow_be32(d + p + 12) | COW_BITMAP_IN_USE);
		CHECK(fd >= 0 && pwrite(fd, fl, 4, (off_t)(doff + p + 12)) == 4);
		if (fd >= 0)
			close(fd);
	}
	cow_close(img);
	img = NULL;
	CHECK(cow_open(tmpl, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (!img)
		return 1;
	orig_data = malloc(SIZE);
	CHECK(orig_data && cow_read(img, orig_data, SIZE, 0, &err) == 0);
	norig = read_bitmaps(img, orig);
	cow_close(img);
	CHECK(norig == 5);
	if (failures)
		return 1;
	for (int i = 0; i < norig; i++)
		printf("template: bitmap %s flags 0x%x granularity %llu\n", orig[i].name, orig[i].flags,
		       1ull << orig[i].gb);
	for (enum inj k = INJ_WRITE; k <= INJ_FSIZE; k++) {
		sweep(k, 0);
		sweep(k, SHRINK);
	}
	printf("%u runs checked: bitmaps left in use %u, consistent after a failure %u, "
	       "stored without failure %u; after a shrink consistent at the new size %u, at the old %u\n",
	       n_runs, n_in_use, n_consistent, n_ok, n_shrunk, n_kept);
	free_bitmaps(orig, norig);
	free(orig_data);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%s\n", failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}
