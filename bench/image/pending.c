/* bench/image/pending.c — what the duplicate check of the free queue
 * (cow/refcount.c pending_dups: every queued cluster listed and sorted on
 * every write-back, cow_range_clusters) costs against the write-backs it
 * belongs to.
 *
 *   pending DIR [big]
 *
 * On a 64 GiB qcow2 image of 64 KiB clusters (1 Mi clusters) made in DIR,
 * every cluster mapped with preallocation=metadata (no data written):
 *   big:   one cow_discard of the whole disk, then cow_flush: 1 Mi clusters
 *          released, a write-back (cow_meta_writeback) every 4097 queued
 *          frees (cow_maybe_writeback), 256 in all;
 *   small: a fresh image, 100,000 cow_discard calls of one cluster each in
 *          a random order (every 10th cluster), then cow_flush;
 *   sort:  the list-and-sort of pending_dups alone, as in those write-backs
 *          (cow_range_clusters over 4097 one-cluster ranges, ascending and
 *          shuffled, plus the scan for repeats), 256 times.
 * Prints wall-clock seconds of each (and the CPU time of big; with the
 * argument big only that). Build (from the top of a built tree):
 *   cc -O2 -std=gnu11 -D_GNU_SOURCE -I. -o build/pending bench/image/pending.c \
 *      build/libcowvm.a -luring -lz -lzstd -llz4 -llzma -lxxhash -lpthread -lm
 * The numbers measured on 2026-11-23 are in bench/image/README.md. */
#include "cow/qcow2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define GIB (1ull << 30)
#define CS  (64ull << 10)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu(const struct rusage *r)
{
	return (double)r->ru_utime.tv_sec + r->ru_utime.tv_usec / 1e6 + (double)r->ru_stime.tv_sec +
	       r->ru_stime.tv_usec / 1e6;
}

static struct cow_img *mapped_image(const char *path, uint64_t size)
{
	struct cow_create_opts o = { .size = CS, .cluster_size = CS };
	struct cow_img *img = NULL;
	struct ut_err err;

	unlink(path);
	if (cow_create(path, &o, &err) < 0 || cow_open(path, "qcow2", 0, &img, &err) < 0 ||
	    cow_grow_prealloc(img, size, COW_PREALLOC_METADATA, &err) < 0 || cow_flush(img, &err) < 0) {
		fprintf(stderr, "%s: %s\n", path, err.msg);
		exit(1);
	}
	return img;
}

static void range_of(const void *ctx, size_t i, uint64_t *off, uint64_t *len)
{
	const uint64_t *c = ctx;

	*off = c[i] * CS;
	*len = CS;
}

/* pending_dups' work over @n one-cluster ranges @c: list, sort, scan */
static uint64_t list_sort_scan(const uint64_t *c, size_t n)
{
	uint64_t *l, nl, reps = 0;
	struct ut_err err;

	if (cow_range_clusters(16, n, range_of, c, &l, &nl, &err) < 0)
		exit(1);
	for (uint64_t i = 1; i < nl; i++)
		reps += l[i] == l[i - 1];
	free(l);
	return reps;
}

int main(int argc, char **argv)
{
	uint64_t size = 64 * GIB, ncl = size / CS, reps = 0;
	struct rusage ru0, ru1;
	struct ut_err err;
	struct cow_img *img;
	char path[512];
	uint64_t *c;
	double t0, t;

	if (argc < 2) {
		fprintf(stderr, "usage: pending DIR\n");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/pending.qcow2", argv[1]);
	srand(1);

	img = mapped_image(path, size);
	getrusage(RUSAGE_SELF, &ru0);
	t0 = now();
	if (cow_discard(img, size, 0, true, &err) < 0 || cow_flush(img, &err) < 0) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	t = now() - t0;
	getrusage(RUSAGE_SELF, &ru1);
	printf("big:   discard of %llu clusters + flush: %.3f s (cpu %.3f s)\n", (unsigned long long)ncl, t,
	       cpu(&ru1) - cpu(&ru0));
	cow_close(img);
	if (argc > 2 && !strcmp(argv[2], "big"))
		return 0;

	img = mapped_image(path, size);
	c = malloc(100000 * sizeof(*c));
	for (uint64_t i = 0; i < 100000; i++)
		c[i] = i * 10;
	for (uint64_t i = 100000; i-- > 1;) {
		uint64_t j = (uint64_t)rand() % (i + 1), x = c[i];

		c[i] = c[j];
		c[j] = x;
	}
	t0 = now();
	for (uint64_t i = 0; i < 100000; i++)
		if (cow_discard(img, CS, c[i] * CS, true, &err) < 0) {
			fprintf(stderr, "%s\n", err.msg);
			return 1;
		}
	if (cow_flush(img, &err) < 0) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	t = now() - t0;
	printf("small: 100000 one-cluster discards (random order) + flush: %.3f s\n", t);
	cow_close(img);
	unlink(path);

	for (uint64_t i = 0; i < 4097; i++)
		c[i] = i;
	t0 = now();
	for (int r = 0; r < 256; r++)
		reps += list_sort_scan(c, 4097);
	printf("sort:  256 x list+sort+scan of 4097 ascending clusters: %.3f s\n", now() - t0);
	for (uint64_t i = 4097; i-- > 1;) {
		uint64_t j = (uint64_t)rand() % (i + 1), x = c[i];

		c[i] = c[j];
		c[j] = x;
	}
	t0 = now();
	for (int r = 0; r < 256; r++)
		reps += list_sort_scan(c, 4097);
	printf("sort:  256 x list+sort+scan of 4097 shuffled clusters: %.3f s (%llu repeats)\n",
	       now() - t0, (unsigned long long)reps);
	free(c);
	return 0;
}
