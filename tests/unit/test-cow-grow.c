/* tests/unit/test-cow-grow.c — cow_grow (cow/resize.c, cow.h I14): a qcow2
 * image with 512-byte clusters grown from 64 KiB to 4 MiB and then to 64 MiB
 * gets a new L1 table each time (its offset changes, the old clusters are
 * freed: no leak), keeps its data, reads zeros in the new area, takes writes
 * there, and checks clean (cow_check, no corruption, no leak) after
 * reopening; the same with extended L2 entries (16 KiB clusters) and with an
 * L1 table that already covers the new size (only the size changes). Over a
 * backing file longer than the old size, the new area reads zeros, not the
 * backing file's data, while the old area still reads through; a version 2
 * image (no zero clusters) is refused there and left as it was. A raw file
 * grows as a hole, to any length (not only whole sectors, as qemu-img
 * resize sets it), and cow_shrink cuts it. cow_shrink of a qcow2 image
 * releases the clusters past the new end (no leak, the data before it
 * kept, zeros after a grow back, the partial last cluster as QEMU keeps
 * it). Shrinking with cow_grow, a qcow2 size that is not a multiple of 512
 * and a read-only image are refused with an error naming the file. */
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

static char dir[] = "/var/tmp/cowgrow.XXXXXX";

/* Grow a qcow2 image of @cs-byte clusters in two steps. */
static void grow_qcow2(uint32_t cs, bool extl2)
{
	char path[128];
	struct cow_create_opts o = { .size = 64 << 10, .cluster_size = cs, .extended_l2 = extl2 };
	struct cow_img *img = NULL;
	struct ut_err err;
	uint64_t l1_off, l1_size;
	bool covers;

	snprintf(path, sizeof(path), "%s/g%u%s.qcow2", dir, cs, extl2 ? "x" : "");
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK_WRITE(img, 0, 64 << 10, 0x11);
	l1_off = img->h.l1_off;
	l1_size = img->h.l1_size;
	covers = l1_size * (cs / (extl2 ? 16 : 8)) * cs >= (4 << 20);
	CHECK(cow_grow(img, 4 << 20, &err) == 0);
	CHECK(cow_size(img) == 4 << 20);
	CHECK(covers == (img->h.l1_size == l1_size));
	CHECK(covers == (img->h.l1_off == l1_off));   /* else a new table */
	CHECK(test_reads_as(img, 0, 64 << 10, 0x11));
	CHECK(test_reads_as(img, 64 << 10, (4 << 20) - (64 << 10), 0));
	CHECK_WRITE(img, 3 << 20, 256 << 10, 0x22);
	CHECK(cow_grow(img, 64 << 20, &err) == 0);
	CHECK_WRITE(img, (64 << 20) - 4096, 4096, 0x33);
	/* an L1 table that covers the size already: only the size changes */
	l1_off = img->h.l1_off;
	covers = (uint64_t)img->h.l1_size * (cs / (extl2 ? 16 : 8)) * cs >= (64 << 20) + 512;
	CHECK(cow_grow(img, (64 << 20) + 512, &err) == 0);
	CHECK(cow_size(img) == (64 << 20) + 512);
	CHECK(covers == (img->h.l1_off == l1_off));
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(test_checks_clean(path));
	CHECK(cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (!img)
		return;
	CHECK(cow_size(img) == (64 << 20) + 512);
	CHECK(test_reads_as(img, 0, 64 << 10, 0x11));
	CHECK(test_reads_as(img, 3 << 20, 256 << 10, 0x22));
	CHECK(test_reads_as(img, (64 << 20) - 4096, 4096, 0x33));
	CHECK(test_reads_as(img, (4 << 20), 1 << 20, 0));
	/* refused on a read-only image */
	CHECK(cow_grow(img, 128 << 20, &err) == -EROFS);
	CHECK(strstr(err.msg, path) != NULL);
	cow_close(img);
}

/* Over a backing file longer than the old size the new area reads zeros. */
static void grow_over_backing(void)
{
	char base[128], top[128];
	struct cow_create_opts ob = { .size = 8 << 20 }, ot = { .size = 2 << 20 };
	struct cow_img *img = NULL;
	struct ut_err err;

	snprintf(base, sizeof(base), "%s/base.qcow2", dir);
	snprintf(top, sizeof(top), "%s/top.qcow2", dir);
	CHECK(cow_create(base, &ob, &err) == 0);
	CHECK(cow_open(base, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK_WRITE(img, 0, 8 << 20, 0x77);
	CHECK(cow_close(img) == 0);
	ot.backing = base;
	ot.backing_fmt = "qcow2";
	/* v3: zero clusters up to the backing file's end (8 MiB), past it
	 * the area reads zeros anyway */
	CHECK(cow_create(top, &ot, &err) == 0);
	CHECK(cow_open(top, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_reads_as(img, 0, 2 << 20, 0x77));
	CHECK(cow_grow(img, 12 << 20, &err) == 0);
	CHECK(test_reads_as(img, 0, 2 << 20, 0x77));
	CHECK(test_reads_as(img, 2 << 20, 10 << 20, 0));
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(test_checks_clean(top));
	CHECK(cow_open(top, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (!img)
		return;
	CHECK(cow_size(img) == 12 << 20);
	CHECK(test_reads_as(img, 0, 2 << 20, 0x77));
	CHECK(test_reads_as(img, 2 << 20, 10 << 20, 0));
	cow_close(img);
	img = NULL;
	/* v2 has no zero clusters: refused (as QEMU refuses it), unchanged */
	ot.version = 2;
	CHECK(cow_create(top, &ot, &err) == 0);
	CHECK(cow_open(top, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(cow_grow(img, 6 << 20, &err) == -ENOTSUP);
	CHECK(strstr(err.msg, "top.qcow2") && strstr(err.msg, "version 2"));
	CHECK(cow_size(img) == 2 << 20);
	CHECK(test_reads_as(img, 0, 2 << 20, 0x77));
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(test_checks_clean(top));
}

/* Clusters the active L1 maps past the end of the disk (where QEMU keeps a
 * snapshot's VM state after loadvm): growing over them releases them, the
 * new area reads zeros, nothing leaks. (With snapshots sharing them:
 * tests/interop/qemu-img-resize.sh.) */
static void grow_over_mapped_tail(uint32_t cs, bool extl2)
{
	char path[128];
	struct cow_create_opts o = { .size = 1 << 20, .cluster_size = cs, .extended_l2 = extl2 };
	uint64_t cov = (uint64_t)cs * (cs / (extl2 ? 16 : 8)), vm = ((1 << 20) + cov - 1) / cov * cov;
	struct cow_img *img = NULL;
	struct ut_err err;

	snprintf(path, sizeof(path), "%s/t%u%s.qcow2", dir, cs, extl2 ? "x" : "");
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK_WRITE(img, 0, 1 << 20, 0x55);
	/* a "VM state" in the L1 entry past the disk, written as QEMU's
	 * savevm writes it: through the active L1, beyond the size */
	CHECK(cow_grow(img, vm + cov, &err) == 0);
	CHECK_WRITE(img, vm, 3 * cs, 0x66);
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	img->h.size = img->size = 1 << 20;   /* the header as loadvm leaves it */
	{
		uint8_t b[8];
		cow_put64(b, 1 << 20);
		CHECK(cow_pwrite_full(img, b, 8, 24, &err) == 0);
	}
	CHECK(cow_grow(img, vm + cs, &err) == 0);
	CHECK(test_reads_as(img, 0, 1 << 20, 0x55));
	CHECK(test_reads_as(img, 1 << 20, vm + cs - (1 << 20), 0));
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(test_checks_clean(path));   /* the released clusters: no leak */
}

static void grow_raw_and_refusals(void)
{
	char path[128];
	struct cow_create_opts o = { .size = 1 << 20 };
	struct cow_img *img = NULL;
	struct ut_err err;
	struct stat st;
	FILE *f;

	snprintf(path, sizeof(path), "%s/r.raw", dir);
	f = fopen(path, "w");
	CHECK(f && fputs("raw", f) >= 0);
	if (f)
		fclose(f);
	CHECK(cow_open(path, "raw", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(cow_size(img) == 512);   /* whole sectors, as QEMU sizes it */
	CHECK(cow_grow(img, 1 << 20, &err) == 0);
	CHECK(cow_size(img) == 1 << 20);
	CHECK(test_reads_as(img, 512, (1 << 20) - 512, 0));
	CHECK(stat(path, &st) == 0 && st.st_size == 1 << 20);
	/* any length: the file gets exactly that many bytes, the disk whole
	 * sectors (as QEMU sizes it) */
	CHECK(cow_grow(img, (1 << 20) + 1000, &err) == 0);
	CHECK(stat(path, &st) == 0 && st.st_size == (1 << 20) + 1000);
	CHECK(cow_size(img) == (1 << 20) + 1024);
	CHECK(test_reads_as(img, 1 << 20, 1024, 0));
	CHECK_WRITE(img, 0, 4096, 0x44);
	CHECK(cow_shrink(img, 4000, &err) == 0);
	CHECK(stat(path, &st) == 0 && st.st_size == 4000);
	CHECK(cow_size(img) == 4096);
	CHECK(test_reads_as(img, 0, 4000, 0x44));
	CHECK(cow_shrink(img, 0, &err) == -EINVAL);
	CHECK(cow_shrink(img, 8192, &err) == -EINVAL);
	CHECK(stat(path, &st) == 0 && st.st_size == 4000);
	cow_close(img);
	img = NULL;

	snprintf(path, sizeof(path), "%s/s.qcow2", dir);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(cow_grow(img, 512 << 10, &err) == -ENOTSUP);
	CHECK(strstr(err.msg, "s.qcow2") && strstr(err.msg, "shrink"));
	CHECK(cow_shrink(img, (512 << 10) + 100, &err) == -EINVAL);
	CHECK(strstr(err.msg, "multiple of 512") != NULL);
	CHECK(cow_grow(img, (2 << 20) + 100, &err) == -EINVAL);
	CHECK(strstr(err.msg, "multiple of 512") != NULL);
	CHECK(cow_size(img) == 1 << 20);
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));

	/* cow_shrink of a qcow2 image: 64 KiB clusters, the new end inside one */
	img = NULL;
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK_WRITE(img, 0, 1 << 20, 0x77);
	CHECK(cow_shrink(img, (256 << 10) + 512, &err) == 0);
	CHECK(cow_size(img) == (256 << 10) + 512);
	CHECK(test_reads_as(img, 0, (256 << 10) + 512, 0x77));
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(test_checks_clean(path));   /* the clusters released: no leak */
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(cow_size(img) == (256 << 10) + 512);
	CHECK(cow_grow(img, 1 << 20, &err) == 0);
	/* the rest of the kept cluster still holds its data (as in QEMU); the
	 * released ones read zeros */
	CHECK(test_reads_as(img, 0, 320 << 10, 0x77));
	CHECK(test_reads_as(img, 320 << 10, (1 << 20) - (320 << 10), 0));
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
	grow_qcow2(512, false);
	grow_qcow2(64 << 10, false);
	grow_qcow2(16 << 10, true);
	grow_over_backing();
	grow_over_mapped_tail(64 << 10, false);
	grow_over_mapped_tail(512, false);
	grow_over_mapped_tail(16 << 10, true);
	grow_raw_and_refusals();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%s\n", failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}
