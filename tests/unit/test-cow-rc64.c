/* tests/unit/test-cow-rc64.c — allocations of at least one refcount block's
 * worth of clusters (cow_alloc_contig, cow.h I9/I13), which wide refcounts
 * make common: with refcount_bits=64 a refcount block of 512-byte clusters
 * describes 64 clusters, as many as one L2 table maps, so a 32 KiB write is
 * one. Such a write used to create refcount blocks one by one at the start
 * of their own range, restart the search past each, and loop until the
 * refcount table "would exceed 8388608 bytes", leaving a 32 GiB file.
 * Checked, for refcount_bits 64, 32 and 16 (512-byte clusters) and 64
 * (4 KiB clusters, a 2 MiB write): writes of whole L2 tables' worth succeed,
 * read back, leave a small file, and check clean after reopening; growing the
 * disk (a new L1 table of several clusters, as commit does) works too. */
#include "cow/qcow2.h"
#include "tests/helpers/cowfill.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)
#define CHECK_WRITE(img, off, len, v) CHECK(test_write_pat(img, off, len, v) == 0)

#define KIB 1024ull
#define MIB (1024ull * 1024)

static char dir[] = "/var/tmp/cowrc64.XXXXXX";

static uint64_t fsize(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* @bits-wide refcounts, @cs-byte clusters: two writes of @w bytes (one L2
 * table's worth or more), then a grow to 64 MiB and a write at its end. */
static void one(uint32_t bits, uint32_t cs, uint64_t w)
{
	struct cow_create_opts o = { .size = 8 * w, .cluster_size = cs, .refcount_bits = bits };
	struct cow_img *img = NULL;
	struct ut_err err;
	char path[128];

	snprintf(path, sizeof(path), "%s/rc%u-%u.qcow2", dir, bits, cs);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK_WRITE(img, 0, w, 0x41);
	CHECK_WRITE(img, 2 * w, w, 0x42);
	CHECK(cow_flush(img, &err) == 0);
	CHECK(test_reads_as(img, 0, w, 0x41));
	CHECK(test_reads_as(img, w, w, 0));
	CHECK(test_reads_as(img, 2 * w, w, 0x42));
	CHECK(cow_grow(img, 64 * MIB, &err) == 0);
	CHECK_WRITE(img, 64 * MIB - w, w, 0x43);
	CHECK(cow_close(img) == 0);
	if (fsize(path) > 4 * w + MIB) {
		fprintf(stderr, "%s: %llu bytes for %llu of data\n", path,
			(unsigned long long)fsize(path), (unsigned long long)(3 * w));
		CHECK(0);
	}
	CHECK(test_checks_clean(path));
	img = NULL;
	CHECK(cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_reads_as(img, 0, w, 0x41));
	CHECK(test_reads_as(img, 2 * w, w, 0x42));
	CHECK(test_reads_as(img, 64 * MIB - w, w, 0x43));
	CHECK(test_reads_as(img, 8 * w, w, 0));
	CHECK(cow_close(img) == 0);
}

int main(void)
{
	char cmd[64];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	one(64, 512, 32 * KIB);
	one(32, 512, 32 * KIB);
	one(16, 512, 32 * KIB);
	one(64, 4096, 2 * MIB);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%s\n", failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}
