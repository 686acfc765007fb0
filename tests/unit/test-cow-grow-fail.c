/* tests/unit/test-cow-grow-fail.c — a qcow2 growth whose new L1 table
 * cannot be written (cow/resize.c grow_l1; cow.h I14, I17): a file size
 * limit (RLIMIT_FSIZE, EFBIG) stops the table's write part way. The growth
 * fails with an error naming the file, the size stays, and nothing refers
 * to the new table's clusters, so they are free again: after the limit is
 * lifted the same open image takes writes (reusing them; file_size covers
 * the bytes the failed write left past the old end, I17, so a partial
 * write there reads zeros around its bytes), grows for real, and after
 * cow_close checks clean — no leak (before: 3822 clusters of the failed
 * table leaked in a 2 MiB file, and its refcount blocks with them). */
#include "cow/qcow2.h"
#include "tests/helpers/cowfill.h"
#include "tests/helpers/fullfs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)
#define CHECK_WRITE(img, off, len, v) CHECK(test_write_pat(img, off, len, v) == 0)

static char dir[] = "/var/tmp/cowgrowfail.XXXXXX";

static void grow_fail(uint32_t cs, uint64_t limit, uint64_t huge)
{
	char path[128];
	struct cow_create_opts o = { .size = 1 << 20, .cluster_size = cs };
	struct cow_img *img = NULL;
	struct ut_err err;
	uint64_t l1_off;
	int ret;

	snprintf(path, sizeof(path), "%s/g%u.qcow2", dir, cs);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK_WRITE(img, 0, 64 << 10, 0x11);
	CHECK(cow_flush(img, &err) == 0);
	l1_off = img->h.l1_off;
	CHECK(test_fsize_limit(limit) == 0);
	ret = cow_grow(img, huge, &err);
	test_space_back(NULL);
	CHECK(ret == -EFBIG);
	CHECK(ret < 0 && strstr(err.msg, path) != NULL);
	CHECK(cow_size(img) == 1 << 20);
	CHECK(img->h.l1_off == l1_off);
	/* the same open image goes on: partial writes (a 512-byte one in a
	 * cluster of its own) over whatever the allocator hands out now */
	for (uint64_t off = 64 << 10; off < 1 << 20; off += 8 << 10)
		CHECK(test_write_pat(img, off + 512, 512, 0x22) == 0);
	for (uint64_t off = 64 << 10; off < 1 << 20; off += 8 << 10) {
		CHECK(test_reads_as(img, off, 512, 0));
		CHECK(test_reads_as(img, off + 512, 512, 0x22));
		CHECK(test_reads_as(img, off + 1024, (8 << 10) - 1024, 0));
	}
	CHECK(cow_grow(img, 4 << 20, &err) == 0);
	CHECK_WRITE(img, (4 << 20) - 4096, 4096, 0x33);
	CHECK(test_reads_as(img, 0, 64 << 10, 0x11));
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
}

int main(void)
{
	char cmd[64];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	/* 512 B clusters: 64 GiB need a 16 MiB L1 table (refcount blocks
	 * placed with it); 64 KiB clusters: 64 TiB need 1 MiB */
	grow_fail(512, 2 << 20, 64ull << 30);
	grow_fail(65536, 1 << 20, 64ull << 40);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%s\n", failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}
