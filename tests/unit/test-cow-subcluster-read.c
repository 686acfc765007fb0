/* tests/unit/test-cow-subcluster-read.c — reads of extended-L2 clusters whose
 * subclusters alternate between the top layer (data or zeros) and the layer
 * below (cow/read.c read_mixed_span: one read from below for the span,
 * then the top layer's runs over it; and the run-by-run path when the top
 * layer's runs fill more than half the span). A base with a pattern, an
 * extended-L2 overlay (16 KiB and 64 KiB clusters) with small writes and
 * write-zeroes at random subcluster-aligned and unaligned places, including
 * clusters built to take each path; then reads of random ranges (inside one
 * cluster, across clusters, whole clusters, the whole disk) compared with a
 * model, also after the image is closed and opened read-only. */
#include "cow/cow.h"
#include "tests/helpers/xorshift.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define DISK (4u << 20)

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) { return test_xorshift64(&rs); }

static void write_model(struct cow_img *img, uint8_t *model, uint64_t off, uint64_t len, int zero,
			uint8_t tag)
{
	struct ut_err err;
	uint8_t *b = malloc(len);

	if (zero) {
		CHECK(cow_write_zeroes(img, len, off, 0, &err) == 0);
		memset(model + off, 0, len);
	} else {
		for (uint64_t i = 0; i < len; i++)
			b[i] = (uint8_t)(tag + i * 7);
		CHECK(cow_write(img, b, len, off, &err) == 0);
		memcpy(model + off, b, len);
	}
	free(b);
}

static int compare_reads(struct cow_img *img, const uint8_t *model, uint32_t cs)
{
	uint8_t *b = malloc(DISK);
	struct ut_err err;
	int bad = 0;

	/* the whole disk in one read, then cluster by cluster */
	if (cow_read(img, b, DISK, 0, &err) < 0 || memcmp(b, model, DISK)) {
		fprintf(stderr, "whole-disk read differs\n");
		bad++;
	}
	for (uint64_t off = 0; off < DISK && !bad; off += cs)
		if (cow_read(img, b, cs, off, &err) < 0 || memcmp(b, model + off, cs)) {
			fprintf(stderr, "cluster at %llu differs\n", (unsigned long long)off);
			bad++;
		}
	for (int i = 0; i < 3000 && !bad; i++) {
		uint64_t len = 1 + rnd() % (3 * cs), off = rnd() % (DISK - len);
		if (cow_read(img, b, len, off, &err) < 0 || memcmp(b, model + off, len)) {
			fprintf(stderr, "read of %llu bytes at %llu differs\n", (unsigned long long)len,
				(unsigned long long)off);
			bad++;
		}
	}
	free(b);
	return bad;
}

static void run_case(const char *dir, uint32_t cs)
{
	char base[600], top[600];
	struct cow_create_opts o = { .size = DISK };
	struct cow_img *img;
	struct ut_err err;
	uint8_t *model = malloc(DISK);
	uint64_t sc = cs / 32;

	snprintf(base, sizeof(base), "%s/base.qcow2", dir);
	snprintf(top, sizeof(top), "%s/top.qcow2", dir);
	CHECK(cow_create(base, &o, &err) == 0);
	CHECK(cow_open(base, NULL, 0, &img, &err) == 0);
	for (uint32_t i = 0; i < DISK; i++)
		model[i] = (uint8_t)(i * 13 + (i >> 12) + 1);
	CHECK(cow_write(img, model, DISK, 0, &err) == 0);
	CHECK(cow_close(img) == 0);

	o.size = 0;
	o.backing = "base.qcow2";
	o.cluster_size = cs;
	o.extended_l2 = true;
	CHECK(cow_create(top, &o, &err) == 0);
	CHECK(cow_open(top, NULL, 0, &img, &err) == 0);
	/* cluster 1: below | data | below | zeros | below (the span path) */
	write_model(img, model, 1 * cs + 3 * sc, 2 * sc, 0, 1);
	write_model(img, model, 1 * cs + 9 * sc, sc, 1, 0);
	/* cluster 2: below | data over 3/4 | below (run by run) */
	write_model(img, model, 2 * cs + sc, 24 * sc, 0, 2);
	/* cluster 3: data | below | data (one run from below) */
	write_model(img, model, 3 * cs, sc, 0, 3);
	write_model(img, model, 3 * cs + 31 * sc, sc, 0, 4);
	/* cluster 4: below | data | below | data | below, unaligned bytes */
	write_model(img, model, 4 * cs + 100, 700, 0, 5);
	write_model(img, model, 4 * cs + cs / 2 + 5, 1000, 0, 6);
	/* the rest: scattered small writes and zeroes */
	for (int i = 0; i < 600; i++) {
		uint64_t len = 1 + rnd() % (2 * sc), off = 8 * cs + rnd() % (DISK - 8 * cs - len);
		write_model(img, model, off, len, rnd() % 5 == 0, (uint8_t)(i + 10));
	}
	CHECK(compare_reads(img, model, cs) == 0);
	CHECK(cow_close(img) == 0);
	CHECK(cow_open(top, NULL, COW_O_RDONLY, &img, &err) == 0);
	CHECK(compare_reads(img, model, cs) == 0);
	cow_close(img);
	unlink(top);
	unlink(base);
	free(model);
	printf("ok: cluster %u\n", cs);
}

int main(void)
{
	char dir[] = "/var/tmp/cowscr.XXXXXX";

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	run_case(dir, 16384);
	run_case(dir, 65536);
	rmdir(dir);
	if (failures)
		fprintf(stderr, "%d failures\n", failures);
	return failures ? 1 : 0;
}
