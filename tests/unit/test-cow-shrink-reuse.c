/* tests/unit/test-cow-shrink-reuse.c — an image that stays open after
 * cow_shrink (cow/resize.c: L2 tables freed, refcount blocks that count only
 * themselves dropped from the refcount table, the file cut after the last
 * cluster with a refcount) and is written again: 512-byte clusters with
 * refcount_bits 1, 16 and 64 (a refcount block covering 2 MiB, 128 KiB, 32
 * KiB), also after cow/ moved the refcount table itself, and with 64 KiB
 * clusters. After the shrink the in-memory bookkeeping matches the file
 * (file_size and end_cluster at its end, no known-free run or size set
 * ahead past it); the same open image then takes writes in place, grows
 * back and takes allocating writes over the whole new area (new refcount
 * blocks where blocks were dropped, clusters reused below the cut), reads
 * everything back (img->named_end, I8, never below a table named in
 * between), and after cow_close checks clean (cow_check: no
 * corruption, no leak; and `qemu-img check` when installed). */
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

static char dir[] = "/var/tmp/cowshrink.XXXXXX";
static bool have_qemu_img;

static bool qemu_checks_clean(const char *path)
{
	char cmd[512];

	if (!have_qemu_img)
		return true;
	snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s' >&2", path);
	return system(cmd) == 0;
}

/* The bookkeeping cut_file and drop_empty_blocks leave must describe the
 * file as it is now. */
static void check_state(struct cow_img *img, const char *path)
{
	struct stat st;

	CHECK(stat(path, &st) == 0);
	CHECK(img->file_size == (uint64_t)st.st_size);
	CHECK(img->end_cluster << img->cluster_bits >= (uint64_t)st.st_size);
	CHECK(img->free_hint <= img->end_cluster);
	CHECK(img->size_end == 0 || img->size_end <= (uint64_t)st.st_size);
	CHECK(img->free_to <= img->end_cluster);
	for (uint64_t j = 0; j < img->rt_entries; j++)
		CHECK((img->rt[j] & QCOW_RT_OFFSET_MASK) < (uint64_t)st.st_size);
}

/* I8's walk is skipped above img->named_end: it must never be below the end
 * of a table the active L1 or the refcount table names (stale-low would
 * silently disable the overlap check). A new check computes it when it is
 * not known yet. */
static void check_named(struct cow_img *img)
{
	struct ut_err err;

	if (!img->named_ok)
		(void)cow_check_new(img, img->end_cluster << img->cluster_bits, 1, &err);
	CHECK(img->named_ok);
	for (uint64_t i = 0; i < img->h.l1_size; i++) {
		uint64_t o = img->l1[i] & QCOW_OFFSET_MASK;
		CHECK(!o || (o + img->cluster_size <= img->named_end && i < img->named_l1_n));
	}
	for (uint64_t j = 0; j < img->rt_entries; j++) {
		uint64_t o = img->rt[j] & QCOW_RT_OFFSET_MASK;
		CHECK(!o || (o + img->cluster_size <= img->named_end && j < img->named_rt_n));
	}
}

static void shrink_reuse(uint32_t cs, uint32_t rbits, bool move_rt, bool forward, uint64_t big,
			 uint64_t small)
{
	char path[128];
	struct cow_create_opts o = { .size = big, .cluster_size = cs, .refcount_bits = rbits };
	struct cow_img *img = NULL;
	struct ut_err err;
	struct stat st;
	uint64_t rt0, kept = (small + cs - 1) / cs * cs, first = (small + (32 << 10) - 1) & ~((32ull << 10) - 1);

	snprintf(path, sizeof(path), "%s/s%u-%u%s%s.qcow2", dir, cs, rbits, move_rt ? "m" : "",
		 forward ? "f" : "r");
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	rt0 = img->h.rt_off;
	/* in guest order (the file's tail holds the guest's: cut by the
	 * shrink) or from the end (the file's tail holds the kept part); the
	 * table (if it has to move) moves while the file is written */
	for (uint64_t i = 0; i < big / (64 << 10); i++)
		CHECK_WRITE(img, (forward ? i : big / (64 << 10) - 1 - i) * (64 << 10), 64 << 10, 0x11);
	CHECK(move_rt == (img->h.rt_off != rt0));
	check_named(img);
	CHECK(cow_flush(img, &err) == 0);
	CHECK(cow_shrink(img, small, &err) == 0);
	CHECK(cow_size(img) == small);
	CHECK(stat(path, &st) == 0);
	fprintf(stderr, "# %u B clusters, refcount_bits %u%s, %s: %llu -> %llu bytes, file %lld bytes\n",
		cs, rbits, move_rt ? ", table moved" : "", forward ? "forward" : "reverse",
		(unsigned long long)big,
		(unsigned long long)small, (long long)st.st_size);
	check_state(img, path);
	check_named(img);
	/* in guest order the file is cut (blocks dropped) to about the kept
	 * part, unless the moved table sits at the end */
	CHECK(!forward || move_rt || (uint64_t)st.st_size < small + small / 8 + (256 << 10));
	CHECK(test_reads_as(img, 0, small, 0x11));
	/* in place, then allocating everywhere past the new end */
	CHECK_WRITE(img, 0, small, 0x22);
	CHECK(cow_grow(img, big, &err) == 0);
	/* (the rest of the kept last cluster keeps its data, as in QEMU) */
	CHECK(test_reads_as(img, kept, big - kept, 0));
	for (uint64_t off = first; off < big; off += 32 << 10)
		CHECK_WRITE(img, off, 32 << 10, (uint8_t)(0x30 + (off >> 20)));
	check_named(img);
	CHECK(test_reads_as(img, 0, small, 0x22));
	for (uint64_t off = first; off < big; off += 32 << 10)
		CHECK(test_reads_as(img, off, 32 << 10, (uint8_t)(0x30 + (off >> 20))));
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(test_checks_clean(path));
	CHECK(qemu_checks_clean(path));
	/* reopened: the same content */
	CHECK(cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_reads_as(img, 0, small, 0x22));
	for (uint64_t off = first; off < big; off += 32 << 10)
		CHECK(test_reads_as(img, off, 32 << 10, (uint8_t)(0x30 + (off >> 20))));
	cow_close(img);
}

int main(void)
{
	char cmd[64];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	have_qemu_img = system("qemu-img --version >/dev/null 2>&1") == 0;
	for (int f = 0; f < 2; f++) {
		shrink_reuse(512, 16, false, f, 4 << 20, 1 << 20);
		shrink_reuse(512, 1, false, f, 8 << 20, 1 << 20);
		shrink_reuse(512, 64, true, f, 4 << 20, 512 << 10);
		shrink_reuse(512, 64, true, f, 4 << 20, 512);
		shrink_reuse(512, 16, false, f, 4 << 20, 512);
		shrink_reuse(65536, 16, false, f, 64 << 20, (1 << 20) + 512);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%s\n", failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}
