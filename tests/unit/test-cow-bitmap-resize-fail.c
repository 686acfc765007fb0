/* tests/unit/test-cow-bitmap-resize-fail.c — a resize with persistent
 * dirty bitmaps (COW_O_KEEP_BITMAPS; cow/resize.c, cow/bitmaps.c; cow.h
 * I14) that fails at every step it takes: for a grow and for a shrink, the
 * N-th write (pwritev, EIO), the N-th fdatasync (EIO), the N-th read
 * (pread, EIO) from the start of the resize fails, for N = 1, 2, ... until
 * the resize gets through untouched; and a file size limit (RLIMIT_FSIZE,
 * EFBIG) at the file's size plus k clusters, k = 0, 1, ... (these
 * functions are overridden in this program; cow/ is linked statically).
 * After each, the image is closed and reopened read-only and:
 *  - its size is the old or the new one;
 *  - the data is unchanged: [0, min(old, new)) as before; after a grow
 *    the new area reads zeros; after a shrink that kept the old size the
 *    tail reads as before or zeros, cluster by cluster (it is released
 *    before the size changes, as by QEMU);
 *  - cow_check finds no corruption and, when qemu-img is installed (it is
 *    needed to make the bitmaps anyway), `qemu-img check` exits 0 or 3
 *    (leaks only) — it opens the image, so QEMU can load its bitmaps;
 *  - every bitmap is there; one not in use has a table of exactly the
 *    entries the size needs and the bits of the original up to
 *    min(old, new) (none past; after a failed shrink that kept the old
 *    size, every bit of the tail set, or none changed), and an enabled
 *    one the bit of every granule whose data changed (a shrink's tail
 *    released before its size write fails);
 *  - the error says "stay marked in use" exactly when one is left in use;
 *  - after a failure that left them consistent at the old size, the
 *    resize is made again (no failure) and checked the same way. One still in use is allowed only where
 *    resize.c/bitmaps.c document it: the new size already in the file
 *    (between the size write and the directory switch: the old tables do
 *    not fit it), or a shrink that kept the old size (its tail may be
 *    released already, which the bitmaps did not record). A grow that
 *    failed before its size write must leave them consistent (before,
 *    every failure left them in use).
 * The counts of each outcome are printed. Without qemu-img (or qemu-io,
 * which writes the data that sets the bits) the test is skipped. */
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
#include <sys/wait.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define CS 1024u
#define OLD (6ull << 20)
#define BIG ((9ull << 20) + 1536)    /* grown to */
#define SMALL ((5ull << 19) + 512)   /* shrunk to: 2.5 MiB + 512 */
#define MAXBM 4

static char dir[] = "/var/tmp/cowbmfail.XXXXXX";
static char tmpl[160], work[160];

#include "tests/unit/test-cow-bm.h"

static struct bm orig[MAXBM];
static int norig;
static uint8_t *orig_data;
static bool have_qemu;
static unsigned n_again, n_dirty_tail, n_old_ok, n_new_ok, n_in_use_new, n_in_use_shrink, n_runs;

/* Check the reopened image after a resize to @target that failed (@ret). */
static void verify(uint64_t target, int ret, const char *emsg, const char *what, enum inj kind, bool again)
{
	struct cow_img *img = NULL;
	struct cow_check_res r;
	struct bm b[MAXBM];
	struct ut_err err;
	uint8_t *buf;
	uint64_t size, same;
	bool shrink = target < OLD;
	int n, f0 = failures, in_use = 0;
	char cmd[256];

	CHECK(cow_open(work, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (!img) {
		fprintf(stderr, "%s: %s\n", what, err.msg);
		return;
	}
	size = cow_size(img);
	CHECK(size == OLD || size == target);
	CHECK(ret < 0 || size == target);
	CHECK(!again || size == target);
	same = size < OLD ? size : OLD;
	if (target < same)
		same = target;
	buf = malloc(OLD > size ? OLD : size);
	CHECK(buf && cow_read(img, buf, size, 0, &err) == 0);
	if (buf) {
		CHECK(memcmp(buf, orig_data, same) == 0);
		/* sector by sector (each lies in one cluster): grown, zeros;
		 * the old size kept by a shrink, as before or released */
		for (uint64_t o = same; o < size; o += 512) {
			bool zero = true;

			for (uint64_t i = 0; i < 512; i++)
				zero = zero && !buf[o + i];
			if (!zero && !(o < OLD && !memcmp(buf + o, orig_data + o, 512))) {
				fprintf(stderr, "%s: size %llu, the sector at %llu reads %02x.. (was %02x..)\n",
					what, (unsigned long long)size, (unsigned long long)o, buf[o],
					o < OLD ? orig_data[o] : 0);
				failures++;
				break;
			}
		}
	}
	n = read_bitmaps(img, b);
	CHECK(n == norig);
	for (int i = 0; i < n && i < norig; i++) {
		uint64_t keep;

		CHECK(!strcmp(b[i].name, orig[i].name) && b[i].gb == orig[i].gb);
		if (b[i].flags & COW_BITMAP_IN_USE) {
			/* documented: the new size in the file before the
			 * directory switch, or a shrink's released tail */
			/* allowed only where documented: the switch write
			 * failed (the new size is in the file), or an fdatasync
			 * failed after the size write or after a shrink
			 * released its tail (no order can be kept any more) */
			if (!((size == target && (kind == INJ_SYNC || kind == INJ_WRITE)) ||
			      (shrink && size == OLD && kind == INJ_SYNC))) {
				fprintf(stderr, "%s: bitmap %s in use, size %llu\n", what, b[i].name,
					(unsigned long long)size);
				failures++;
			}
			in_use++;
			if (size == target)
				n_in_use_new += i == 0 && !again;
			else
				n_in_use_shrink += i == 0;
			continue;
		}
		if (i == 0 && !again)
			size == OLD ? n_old_ok++ : n_new_ok++;
		CHECK(b[i].tsize == tab_entries(size, b[i].gb));
		keep = orig[i].nbits < b[i].nbits ? orig[i].nbits : b[i].nbits;
		if (shrink && size == OLD) {
			/* a failed shrink: its tail (perhaps released) all set,
			 * or as before when nothing was released yet */
			uint64_t from = target >> b[i].gb;
			bool ones = true;

			for (uint64_t k = from; k < b[i].nbits; k++)
				ones = ones && b[i].bits[k];
			if (ones)
				keep = from;
			n_dirty_tail += ones && i == 0 && !again;
		}
		for (uint64_t k = 0; k < b[i].nbits; k++)
			/* past keep: clear, or set in a failed shrink's tail */
			if (b[i].bits[k] != (k < keep ? orig[i].bits[k] : shrink && size == OLD) &&
			    /* shrunk again after a failure set the tail: the
			     * granule across the new end keeps its bit */
			    !(again && shrink && k >= target >> b[i].gb && b[i].bits[k])) {
				fprintf(stderr, "%s: bitmap %s bit %llu is %u\n", what, b[i].name,
					(unsigned long long)k, b[i].bits[k]);
				failures++;
				break;
			}
	}
	/* the error says when the failure left the bitmaps in use (the next
	 * resize refuses them: the user must know why), and does not say so
	 * when they are consistent */
	if (ret < 0 && n == norig) {
		bool says = strstr(emsg, "stay marked in use") != NULL;

		if (says != (in_use > 0)) {
			fprintf(stderr, "%s: %d bitmaps in use, the error %s: %s\n", what, in_use,
				says ? "says they are" : "does not say so", emsg);
			failures++;
		}
	}
	/* what consistency means: an enabled bitmap (auto) not in use has
	 * the bit of every granule whose data changed (inside the old size;
	 * a disabled one records nothing by definition) */
	for (int i = 0; buf && i < n; i++) {
		uint64_t g = 1ull << b[i].gb;

		if ((b[i].flags & COW_BITMAP_IN_USE) || !(b[i].flags & COW_BITMAP_AUTO))
			continue;
		for (uint64_t k = 0; k < b[i].nbits && k * g < (size < OLD ? size : OLD); k++) {
			uint64_t l = (size < OLD ? size : OLD) - k * g;

			l = l < g ? l : g;
			if (!b[i].bits[k] && memcmp(buf + k * g, orig_data + k * g, l)) {
				fprintf(stderr, "%s: bitmap %s: granule %llu changed, its bit is clear\n", what,
					b[i].name, (unsigned long long)k);
				failures++;
				break;
			}
		}
	}
	free(buf);
	free_bitmaps(b, n > 0 ? n : 0);
	cow_close(img);
	memset(&r, 0, sizeof(r));
	CHECK(cow_check(work, COW_REPAIR_NONE, &r, &err) == 0 && r.corruptions == 0);
	ut_buf_release(&r.msgs);
	if (have_qemu) {
		int q;

		snprintf(cmd, sizeof(cmd), "qemu-img check -q -f qcow2 %s >/dev/null 2>&1", work);
		q = run(cmd);
		if (q != 0 && q != 3) {
			fprintf(stderr, "%s: qemu-img check exits %d\n", what, q);
			failures++;
		}
	}
	/* bitmaps made consistent at the old size: cowvm resizes them again */
	if (!again && size == OLD && n == norig && !in_use && failures == f0) {
		img = NULL;
		CHECK(cow_open(work, "qcow2", COW_O_KEEP_BITMAPS, &img, &err) == 0);
		if (img) {
			int r = target > OLD ? cow_grow(img, target, &err) : cow_shrink(img, target, &err);

			if (r < 0)
				fprintf(stderr, "%s: the resize again fails: %s\n", what, err.msg);
			CHECK(r == 0);
			CHECK(cow_close(img) == 0);
			if (r == 0)
				verify(target, 0, "", what, kind, true);
		}
	}
	if (failures != f0 && getenv("BMFAIL_STOP")) {
		fprintf(stderr, "stopped, image kept: %s (template %s)\n", work, tmpl);
		exit(1);
	}
	if (failures != f0)
		fprintf(stderr, "  ^ after %s%s (resize returned %d: %s)\n", what, again ? ", then a resize again" : "", ret, emsg);
	again ? n_again++ : n_runs++;
}

/* One resize of a fresh copy to @target with failure @kind at call @n
 * (for INJ_FSIZE: the limit is the file's size plus @n - 1 clusters for a
 * grow, 256 KiB plus @n - 1 times 16 clusters for a shrink).
 * Returns whether the failure fired. */
static bool one(uint64_t target, enum inj kind, int n)
{
	struct cow_img *img = NULL;
	struct ut_err err = { 0 };
	struct stat st;
	char what[128];
	bool f;
	int ret;

	CHECK(copy_file(tmpl, work) == 0);
	CHECK(cow_open(work, "qcow2", COW_O_KEEP_BITMAPS, &img, &err) == 0);
	if (!img)
		return false;
	fired = false;
	if (kind == INJ_FSIZE) {
		CHECK(fstat(img->fd, &st) == 0);
		/* a grow writes past the end; a shrink reuses clusters the
		 * release freed: there the limit starts inside the file
		 * (writes at or past it fail, EFBIG, in place or not) */
		CHECK(test_fsize_limit(target > OLD ? (uint64_t)st.st_size + (uint64_t)(n - 1) * CS
						    : (256u << 10) + (uint64_t)(n - 1) * 16 * CS) == 0);
	} else {
		armed_kind = kind;
		armed_fd = img->fd;
		fail_in = n;
	}
	ret = target > OLD ? cow_grow(img, target, &err) : cow_shrink(img, target, &err);
	armed_fd = -1;
	fail_in = 0;
	if (kind == INJ_FSIZE) {
		test_space_back(NULL);
		fired = ret == -EFBIG;
	}
	f = fired;
	/* a failure is reported as one (the injected error, or the EIO of a
	 * later fdatasync), with the file named */
	CHECK(!f || (ret < 0 && strstr(err.msg, work)));
	CHECK(f || ret == 0);
	if (!f && ret < 0)
		fprintf(stderr, "unexpected failure: %s\n", err.msg);
	cow_close(img);
	snprintf(what, sizeof(what), "%s to %llu, %s failing at %d", target > OLD ? "grow" : "shrink",
		 (unsigned long long)target, inj_name[kind], n);
	verify(target, ret, ret < 0 ? err.msg : "", what, kind, false);
	return f;
}

static void sweep(uint64_t target, enum inj kind)
{
	int n, fails = 0;

	for (n = 1; n < 400 && one(target, kind, n); n++)
		fails++;
	CHECK(n < 400);
	printf("%s to %llu: %d runs failed (%s failing at call 1, 2, ...), then one through\n", target > OLD ? "grow" : "shrink",
	       (unsigned long long)target, fails, inj_name[kind]);
}

int main(void)
{
	struct cow_img *img = NULL;
	struct ut_err err;
	char cmd[2048];

	if (run("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0) {
		printf("SKIP: qemu-img and qemu-io are needed to make images with bitmaps\n");
		return 77;
	}
	have_qemu = true;
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(tmpl, sizeof(tmpl), "%s/t.qcow2", dir);
	snprintf(work, sizeof(work), "%s/w.qcow2", dir);
	/* 1 KiB clusters: a table entry of a 512-byte-granularity bitmap
	 * covers 4 MiB (2 entries at 6 MiB, 3 at 9 MiB, 1 at 2.5 MiB, cut in
	 * its middle); bits set by qemu-io's writes (enabled bitmaps), and
	 * data in the shrink's tail written before the bitmaps exist (its
	 * release is a change they must record) */
	snprintf(cmd, sizeof(cmd),
		 "set -e; qemu-img create -q -f qcow2 -o cluster_size=%u %s %llu; "
		 "qemu-io -f qcow2 -c 'write -P 0x66 3M 512k' -c 'write -P 0x77 5500k 8k' %s >/dev/null; "
		 "qemu-img bitmap --add -g 512 %s fine; qemu-img bitmap --add -g 64k %s coarse; "
		 "qemu-img bitmap --add --disable %s off; "
		 "qemu-io -f qcow2 -c 'write -P 0x11 0 64k' -c 'write -P 0x22 1M 300k' "
		 "-c 'write -P 0x33 2600k 4k' -c 'write -P 0x44 4M 1M' -c 'write -P 0x55 6143k 1k' %s >/dev/null",
		 CS, tmpl, (unsigned long long)OLD, tmpl, tmpl, tmpl, tmpl, tmpl);
	if (run(cmd) != 0) {
		fprintf(stderr, "could not make %s\n", tmpl);
		return 1;
	}
	CHECK(cow_open(tmpl, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (!img)
		return 1;
	orig_data = malloc(OLD);
	CHECK(orig_data && cow_read(img, orig_data, OLD, 0, &err) == 0);
	norig = read_bitmaps(img, orig);
	CHECK(norig == 3);
	cow_close(img);
	if (norig == 3) {
		/* the template is what the test is about: bits set, none in use */
		uint64_t set = 0;
		for (uint64_t k = 0; k < orig[0].nbits; k++)
			set += orig[0].bits[k];
		CHECK(set > 1000 && orig[0].bits[(4u << 20) / 512] && orig[0].bits[(6143u << 10) / 512]);
		for (int i = 0; i < 3; i++)
			CHECK(!(orig[i].flags & COW_BITMAP_IN_USE));
	}
	if (failures)
		return 1;
	for (enum inj k = INJ_WRITE; k <= INJ_FSIZE; k++) {
		sweep(BIG, k);
		sweep(SMALL, k);
	}
	printf("%u resizes checked: bitmaps consistent at the old size %u (%u of them failed shrinks "
	       "with the tail's bits set; each resized again without failure, %u), at the new size %u; "
	       "left in use with the new size in the file %u, by a shrink at the old size %u\n",
	       n_runs, n_old_ok, n_dirty_tail, n_again, n_new_ok, n_in_use_new, n_in_use_shrink);
	free_bitmaps(orig, norig);
	free(orig_data);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%s\n", failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}
