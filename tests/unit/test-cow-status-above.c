/* tests/unit/test-cow-status-above.c — cow_block_status_above against a
 * model: a depth-4 chain (standard and extended L2 entries, 64 KiB
 * clusters) whose layers have different sizes (a shorter middle layer, a
 * longer top), each with random whole-cluster data writes, write-zeroes
 * and discards to the layer below; then, for every number of layers
 * searched (1 to 5, and UINT_MAX) and random offsets, the run returned
 * must start at the offset, have one status over all of it in the model
 * (data, zero, unallocated in the searched layers, or past the end of a
 * file), and say the layer (depth) and where a search that ended past a
 * file's end ended (end_depth), as cow.h states. UINT_MAX must give what
 * cow_block_status with follow gives. */
#include "cow/cow.h"
#include "tests/helpers/xorshift.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define CS      65536u
#define NLAYER  4
#define MAXCL   96    /* clusters of the longest layer */

enum { M_UNALLOC, M_ZERO, M_DATA };

static uint64_t rs = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void) { return test_xorshift64(&rs); }

/* layer 0 = top */
static uint64_t nclusters[NLAYER] = { 96, 64, 40, 64 };
static int model[NLAYER][MAXCL];

/* What cow.h says cow_block_status_above returns for cluster @c searching
 * @layers layers: *st, *depth, *end (end_depth when depth is -1). */
static void expect(uint64_t c, unsigned layers, enum cow_status *st, int *depth, int *end)
{
	for (unsigned i = 0; i < NLAYER && i < layers; i++) {
		if (c >= nclusters[i]) {
			/* past this layer's end: the layer above's backing file
			 * ends here */
			*st = COW_ST_ZERO;
			*depth = -1;
			*end = (int)i - 1;
			return;
		}
		if (model[i][c] != M_UNALLOC) {
			*st = model[i][c] == M_ZERO ? COW_ST_ZERO : COW_ST_DATA;
			*depth = (int)i;
			return;
		}
	}
	if (layers >= NLAYER) {
		/* unallocated down to the bottom: zeros */
		*st = COW_ST_ZERO;
		*depth = -1;
		*end = NLAYER - 1;
		return;
	}
	if (c >= nclusters[layers]) {
		/* the first layer not searched ends before it */
		*st = COW_ST_ZERO;
		*depth = -1;
		*end = (int)layers - 1;
		return;
	}
	*st = COW_ST_UNALLOC;
	*depth = (int)layers;
}

static void fill_layer(struct cow_img *img, int li)
{
	static uint8_t buf[4 * CS];
	struct ut_err err;

	for (int op = 0; op < 40; op++) {
		uint64_t n = 1 + rnd() % 4, c = rnd() % nclusters[li];
		int kind = (int)(rnd() % 3);

		if (c + n > nclusters[li])
			n = nclusters[li] - c;
		if (kind == 0) {
			memset(buf, 0x10 + li, n * CS);
			CHECK(cow_write(img, buf, n * CS, c * CS, &err) == 0);
		} else if (kind == 1) {
			CHECK(cow_write_zeroes(img, n * CS, c * CS, 0, &err) == 0);
		} else if (li < NLAYER - 1) {
			CHECK(cow_discard(img, n * CS, c * CS, true, &err) == 0);
		} else {
			continue;   /* (the bottom has nothing below to discard to) */
		}
		for (uint64_t k = c; k < c + n; k++)
			model[li][k] = kind == 0 ? M_DATA : kind == 1 ? M_ZERO : M_UNALLOC;
	}
}

static void run_case(const char *dir, bool extl2)
{
	char path[NLAYER][600];
	struct cow_img *img = NULL;
	struct ut_err err;

	memset(model, 0, sizeof(model));
	/* bottom first */
	for (int li = NLAYER - 1; li >= 0; li--) {
		struct cow_create_opts o = { .size = nclusters[li] * CS, .cluster_size = CS };
		struct cow_img *l;

		snprintf(path[li], sizeof(path[li]), "%s/l%d.qcow2", dir, li);
		if (li < NLAYER - 1) {
			o.backing = path[li + 1];
			o.backing_fmt = "qcow2";
			o.extended_l2 = extl2;
		}
		CHECK(cow_create(path[li], &o, &err) == 0);
		CHECK(cow_open(path[li], "qcow2", 0, &l, &err) == 0);
		fill_layer(l, li);
		CHECK(cow_close(l) == 0);
	}
	CHECK(cow_open(path[0], "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (!img)
		return;
	{
		unsigned counts[] = { 1, 2, 3, 4, 5, UINT_MAX };
		uint64_t size = cow_size(img);

		for (size_t ci = 0; ci < sizeof(counts) / sizeof(counts[0]); ci++) {
			unsigned layers = counts[ci];

			for (int t = 0; t < 400; t++) {
				/* a random offset, sometimes inside a cluster */
				uint64_t off = rnd() % (size / CS) * CS + (t & 1 ? (rnd() % 128) * 512 : 0);
				struct cow_extent e, f;
				enum cow_status st;
				int depth, end = -9;

				if (cow_block_status_above(img, off, size - off, layers, &e, &err) < 0) {
					CHECK(!"status failed");
					continue;
				}
				CHECK(e.off == off && e.len > 0 && off + e.len <= size);
				expect(off / CS, layers, &st, &depth, &end);
				if (e.st != st || e.depth != depth || (depth < 0 && e.end_depth != end)) {
					fprintf(stderr, "extl2 %d layers %u off %llu: got st %d depth %d end %d, want %d %d %d\n",
						extl2, layers, (unsigned long long)off, e.st, e.depth, e.end_depth, st,
						depth, end);
					failures++;
					continue;
				}
				/* the whole run has that status */
				for (uint64_t c = off / CS + 1; c * CS < off + e.len; c++) {
					enum cow_status st2;
					int d2, end2 = -9;

					expect(c, layers, &st2, &d2, &end2);
					if (st2 != st || d2 != depth || (depth < 0 && end2 != end)) {
						fprintf(stderr, "extl2 %d layers %u: run at %llu of %llu bytes crosses cluster %llu\n",
							extl2, layers, (unsigned long long)off, (unsigned long long)e.len,
							(unsigned long long)c);
						failures++;
						break;
					}
				}
				if (layers == UINT_MAX) {
					CHECK(cow_block_status(img, off, size - off, true, &f, &err) == 0);
					CHECK(f.st == e.st && f.depth == e.depth && f.len == e.len &&
					      f.end_depth == e.end_depth);
				}
			}
		}
	}
	cow_close(img);
	for (int li = 0; li < NLAYER; li++)
		unlink(path[li]);
}

int main(void)
{
	char dir[] = "/tmp/cow-status-above.XXXXXX";

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	run_case(dir, false);
	run_case(dir, true);
	rmdir(dir);
	if (failures) {
		fprintf(stderr, "%d failure(s)\n", failures);
		return 1;
	}
	printf("cow_block_status_above: 2 chains x 6 layer counts x 400 offsets as the model says\n");
	return 0;
}
