/* tests/unit/test-cow-bitmap-untracked.c — persistent bitmaps that a
 * writable open cannot keep up to date must not end silently (cow.h I18,
 * cow_bitmaps_problem):
 *  1. out of memory for a bitmap chunk (this program's calloc fails the
 *     next calloc(1, cluster size) while armed; cow/ is linked
 *     statically): the write still succeeds, cow_bitmaps_problem returns
 *     -ENOMEM naming the file and saying they stay in use, cow_close
 *     returns -ENOMEM; reopened, both bitmaps are in use, the data is
 *     there, `qemu-img check` is clean, `qemu-img info` and `cowvm image
 *     info` show them in use ("in-use");
 *  2. a refcount repair at open (the dirty bit of a lazy_refcounts image
 *     set by hand): tracking continues with every bit set, the close
 *     succeeds and stores both enabled bitmaps consistent, all bits set,
 *     nothing reported; `qemu-img check` clean.
 * Skipped without qemu-img and qemu-io. */
#include "cow/qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define CS 65536u
#define MAXBM 2
#define SIZE (1ull << 30)   /* 4 chunks of bits at granularity 512 */

/* ---- calloc failure injection ---- */
#ifdef __SANITIZE_ADDRESS__
extern void *__interceptor_calloc(size_t n, size_t size);
#define REAL_CALLOC __interceptor_calloc
#else
extern void *__libc_calloc(size_t n, size_t size);
#define REAL_CALLOC __libc_calloc
#endif
static int fail_calloc;   /* the next calloc(1, CS) fails when set */
static bool calloc_fired;

void *calloc(size_t n, size_t size)
{
	if (fail_calloc && n == 1 && size == CS) {
		fail_calloc = 0;
		calloc_fired = true;
		errno = ENOMEM;
		return NULL;
	}
	return REAL_CALLOC(n, size);
}

#include "tests/unit/test-cow-bm.h"

static char dir[] = "/var/tmp/cowbmuntr.XXXXXX";
static char img1[160], cmd[1024];

static int in_use_count(const char *path, struct bm *b, int *n)
{
	struct cow_img *img = NULL;
	struct ut_err err;
	int c = 0;

	*n = -1;
	if (cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) < 0) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	*n = read_bitmaps(img, b);
	for (int i = 0; i < *n; i++)
		c += !!(b[i].flags & COW_BITMAP_IN_USE);
	cow_close(img);
	return c;
}

int main(void)
{
	struct cow_img *img = NULL;
	struct ut_err err;
	struct bm b[MAXBM];
	uint8_t buf[4096], rd[4096];
	int n, r;

	(void)copy_file;   /* (test-cow-bm.h's, unused here) */
	(void)tab_entries;
	(void)inj_name;
	if (run("qemu-img --version >/dev/null 2>&1") != 0 || run("qemu-io --version >/dev/null 2>&1") != 0) {
		printf("skip: qemu-img or qemu-io not found\n");
		return 77;
	}
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(img1, sizeof(img1), "%s/a.qcow2", dir);
	memset(buf, 0x3c, sizeof(buf));

	/* 1: out of memory for a chunk */
	snprintf(cmd, sizeof(cmd),
		 "qemu-img create -q -f qcow2 '%s' 1G && qemu-img bitmap --add -g 512 '%s' b1 && "
		 "qemu-img bitmap --add -g 512 '%s' b2 && qemu-io -c 'write -P 0x11 0 4k' '%s' >/dev/null",
		 img1, img1, img1, img1);
	CHECK(run(cmd) == 0);
	CHECK(in_use_count(img1, b, &n) == 0 && n == 2);
	free_bitmaps(b, n);
	CHECK(cow_open(img1, "qcow2", 0, &img, &err) == 0);
	if (!img)
		goto out;
	CHECK(cow_bitmaps_problem(img, &err) == 0);
	CHECK(cow_write(img, buf, sizeof(buf), 8192, &err) == 0);   /* (chunk 0: loaded) */
	fail_calloc = 1;
	r = cow_write(img, buf, sizeof(buf), 300u << 20, &err);   /* chunk 1: none yet */
	fail_calloc = 0;
	CHECK(r == 0 && calloc_fired);
	r = cow_bitmaps_problem(img, &err);
	fprintf(stderr, "1: %d %s\n", r, err.msg);
	CHECK(r == -ENOMEM && strstr(err.msg, img1) && strstr(err.msg, "out of memory") &&
	      strstr(err.msg, "no longer kept up to date") && strstr(err.msg, "stay marked in use"));
	CHECK(cow_write(img, buf, sizeof(buf), 600u << 20, &err) == 0);
	CHECK(cow_close(img) == -ENOMEM);
	img = NULL;
	CHECK(in_use_count(img1, b, &n) == 2 && n == 2);
	free_bitmaps(b, n);
	CHECK(cow_open(img1, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	CHECK(img && cow_read(img, rd, sizeof(rd), 300u << 20, &err) == 0 && !memcmp(rd, buf, sizeof(rd)));
	cow_close(img);
	img = NULL;
	snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s'", img1);
	CHECK(run(cmd) == 0);
	snprintf(cmd, sizeof(cmd), "qemu-img info '%s' | grep -c in-use | grep -qx 2", img1);
	CHECK(run(cmd) == 0);
	if (getenv("COWVM")) {
		snprintf(cmd, sizeof(cmd), "'%s' image info '%s' | grep -c in-use | grep -qx 2", getenv("COWVM"), img1);
		CHECK(run(cmd) == 0);
	}

	/* 2: a refcount repair at open */
	snprintf(cmd, sizeof(cmd),
		 "rm -f '%s' && qemu-img create -q -f qcow2 -o lazy_refcounts=on '%s' 1G && "
		 "qemu-img bitmap --add -g 512 '%s' b1 && qemu-img bitmap --add -g 512 '%s' b2 && "
		 "qemu-io -c 'write -P 0x11 0 4k' '%s' >/dev/null",
		 img1, img1, img1, img1, img1);
	CHECK(run(cmd) == 0);
	{
		uint8_t x[8];
		int fd = open(img1, O_RDWR);

		CHECK(fd >= 0 && pread(fd, x, 8, 72) == 8);
		cow_put64(x, cow_be64(x) | QCOW_INCOMPAT_DIRTY);
		CHECK(fd >= 0 && pwrite(fd, x, 8, 72) == 8);
		if (fd >= 0)
			close(fd);
	}
	CHECK(cow_open(img1, "qcow2", 0, &img, &err) == 0);
	if (!img)
		goto out;
	CHECK(cow_bitmaps_problem(img, &err) == 0);
	CHECK(cow_write(img, buf, sizeof(buf), 300u << 20, &err) == 0);
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(in_use_count(img1, b, &n) == 0 && n == 2);
	for (int i = 0; i < n; i++) {
		uint64_t set = 0;

		for (uint64_t k = 0; k < b[i].nbits; k++)
			set += b[i].bits[k];
		CHECK(set == b[i].nbits);
	}
	free_bitmaps(b, n);
	snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s'", img1);
	CHECK(run(cmd) == 0);
out:
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	run(cmd);
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
