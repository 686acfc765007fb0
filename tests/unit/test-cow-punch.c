/* tests/unit/test-cow-punch.c — a discard gives the host blocks of the
 * clusters it frees back to the file system (cow.h I15): an image with 8 MiB
 * written loses ~4 MiB of st_blocks when 4 MiB are discarded and flushed;
 * zeroing 2 MiB without unmap (v3 zero clusters) keeps the clusters, offsets
 * and blocks; zeroing 1 MiB with unmap (COW_ZERO_MAY_UNMAP) frees and punches
 * them as a discard does; the ranges read as zeros, the rest of the data is
 * intact, new writes reuse the freed clusters (the file does not grow) and
 * read back, and cow_check finds no corruption and no leak. A discard of a
 * part of a cluster frees nothing. With extended L2 entries a cluster zeroed
 * without unmap is written in place later (same host cluster, the rest of it
 * still zeros); with standard L2 entries too (the cluster written whole).
 * Skips (77) where the temp dir's file system cannot punch holes. */
#include "cow/qcow2.h"
#include "tests/helpers/cowfill.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)
#define CHECK_WRITE(img, off, len, v) CHECK(test_write_pat(img, off, len, v) == 0)

#define MIB (1ull << 20)

static char dir[] = "/var/tmp/cowpunch.XXXXXX";

static uint64_t used(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

static uint64_t fsize(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Can files in @d have holes punched? */
static bool can_punch(const char *d)
{
	char p[128];
	int fd;
	bool ok;

	snprintf(p, sizeof(p), "%s/probe", d);
	fd = open(p, O_RDWR | O_CREAT, 0600);
	if (fd < 0)
		return false;
	ok = ftruncate(fd, 1 << 20) == 0 &&
	     fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 65536) == 0;
	close(fd);
	unlink(p);
	return ok;
}

int main(void)
{
	struct cow_create_opts o = { .size = 16 * MIB };
	struct cow_img *img = NULL;
	struct ut_err err;
	char path[128], cmd[64];
	struct cow_extent ext;
	uint64_t u0, u1, u2, u3, sz, h;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	if (!can_punch(dir)) {
		printf("SKIP: the file system of %s cannot punch holes\n", dir);
		rmdir(dir);
		return 77;
	}
	snprintf(path, sizeof(path), "%s/p.qcow2", dir);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		goto out;
	CHECK_WRITE(img, 0, 8 * MIB, 0x5a);
	CHECK(cow_flush(img, &err) == 0);
	u0 = used(path);
	CHECK(u0 >= 8 * MIB);

	CHECK(cow_discard(img, 4 * MIB, 2 * MIB, false, &err) == 0);
	CHECK(cow_discard(img, 1000, 7 * MIB + 100, false, &err) == 0);   /* no whole cluster */
	CHECK(cow_flush(img, &err) == 0);
	u1 = used(path);
	CHECK(u1 + 4 * MIB - 256 * 1024 <= u0 && u0 - u1 <= 4 * MIB + 256 * 1024);
	CHECK(test_reads_as(img, 2 * MIB, 4 * MIB, 0));
	CHECK(test_reads_as(img, 0, 2 * MIB, 0x5a));
	CHECK(test_reads_as(img, 6 * MIB, 2 * MIB, 0x5a));   /* the partial discard freed nothing */

	CHECK(cow_write_zeroes(img, 2 * MIB, 6 * MIB, 0, &err) == 0);
	CHECK(cow_flush(img, &err) == 0);
	u2 = used(path);
	CHECK(u2 + 256 * 1024 >= u1);   /* no unmap: clusters and blocks kept */
	CHECK(test_reads_as(img, 6 * MIB, 2 * MIB, 0));
	CHECK(cow_block_status(img, 6 * MIB, 2 * MIB, true, &ext, &err) == 0);
	CHECK(ext.st == COW_ST_ZERO && ext.host_off != 0);
	/* a write into such a cluster goes to the cluster it kept, whole */
	h = ext.host_off;
	sz = fsize(path);
	CHECK_WRITE(img, 6 * MIB + 4096, 4096, 0x7c);
	CHECK(cow_block_status(img, 6 * MIB, 4096, true, &ext, &err) == 0);
	CHECK(ext.st == COW_ST_DATA && ext.host_off == h);
	CHECK(fsize(path) == sz);
	CHECK(test_reads_as(img, 6 * MIB, 4096, 0));
	CHECK(test_reads_as(img, 6 * MIB + 4096, 4096, 0x7c));
	CHECK(test_reads_as(img, 6 * MIB + 8192, 2 * MIB - 8192, 0));
	CHECK(cow_write_zeroes(img, 64 * 1024, 6 * MIB, 0, &err) == 0);

	CHECK(cow_write_zeroes(img, MIB, 0, COW_ZERO_MAY_UNMAP, &err) == 0);
	CHECK(cow_flush(img, &err) == 0);
	u3 = used(path);
	CHECK(u3 + MIB - 256 * 1024 <= u2 && u2 - u3 <= MIB + 256 * 1024);   /* punched */
	CHECK(test_reads_as(img, 0, MIB, 0));
	CHECK(test_reads_as(img, MIB, MIB, 0x5a));
	CHECK(cow_block_status(img, 0, MIB, true, &ext, &err) == 0);
	CHECK(ext.st == COW_ST_ZERO && ext.host_off == 0);

	/* new data reuses the freed clusters: the file does not grow */
	sz = fsize(path);
	CHECK_WRITE(img, 10 * MIB, 4 * MIB, 0x6b);
	CHECK(cow_flush(img, &err) == 0);
	CHECK(fsize(path) <= sz);
	CHECK(test_reads_as(img, 10 * MIB, 4 * MIB, 0x6b));
	CHECK(test_reads_as(img, MIB, MIB, 0x5a));
	CHECK(test_reads_as(img, 6 * MIB, 2 * MIB, 0));
	CHECK(cow_close(img) == 0);

	CHECK(test_checks_clean(path));

	/* extended L2: zeroed without unmap, then written in place */
	o.extended_l2 = true;
	snprintf(path, sizeof(path), "%s/x.qcow2", dir);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		goto out;
	CHECK_WRITE(img, 0, MIB, 0x5a);
	CHECK(cow_block_status(img, 128 * 1024, 64 * 1024, true, &ext, &err) == 0);
	h = ext.host_off;
	CHECK(ext.st == COW_ST_DATA && h != 0);
	CHECK(cow_write_zeroes(img, MIB, 0, 0, &err) == 0);
	CHECK(cow_block_status(img, 128 * 1024, 64 * 1024, true, &ext, &err) == 0);
	CHECK(ext.st == COW_ST_ZERO && ext.host_off == h);
	sz = fsize(path);
	CHECK_WRITE(img, 128 * 1024 + 8192, 4096, 0x6b);
	CHECK(cow_block_status(img, 128 * 1024 + 8192, 4096, true, &ext, &err) == 0);
	CHECK(ext.st == COW_ST_DATA && ext.host_off == h + 8192);
	CHECK(cow_flush(img, &err) == 0);
	CHECK(fsize(path) == sz);
	CHECK(test_reads_as(img, 0, 128 * 1024 + 8192, 0));
	CHECK(test_reads_as(img, 128 * 1024 + 8192, 4096, 0x6b));
	CHECK(test_reads_as(img, 128 * 1024 + 12288, MIB - 128 * 1024 - 12288, 0));
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
out:
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%s\n", failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}
