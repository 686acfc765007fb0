/* tests/unit/test-cow-compress.c — compressed writes (cow_write_compressed):
 *  - packing: compressed clusters follow each other at byte granularity
 *    and cross into the next host cluster when it is allocated right after
 *    (as QEMU packs them), so no host cluster but the last one ends in a
 *    gap: the data clusters number ceil(compressed bytes / cluster size)
 *    plus the plainly stored ones; with 1-bit refcounts (a cluster holds
 *    one reference) each compressed cluster gets its own host cluster;
 *  - threads: the same writes with 1, 2, 3 and 16 compressing threads
 *    give byte-identical files;
 *  - the content reads back (mixed data: compressible, random, which is
 *    stored plainly, zero-padded last cluster of a disk that is not a
 *    whole number of clusters), for zlib and zstd, cluster sizes 512 B to
 *    2 MiB, written in calls of 1 cluster, 3 clusters and all at once;
 *  - overwriting, discarding and rewriting clusters whose compressed bytes
 *    cross a host cluster boundary frees every reference they held:
 *    cow_check finds no corruption and no leak after each step.
 * (A failed compressed write across a boundary: test-cow-enospc.) */
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

static char dir[] = "/var/tmp/cowcomp.XXXXXX";

/* Guest cluster @c of the test data: 1 in 16 random (does not compress:
 * stored plainly, which ends a run of packed clusters), the others
 * text-like with random numbers (compressing some 3-6x) and a share of
 * zeros that varies by cluster, so compressed lengths vary and do not
 * divide the cluster size. */
static void fill(uint8_t *b, uint64_t cs, uint64_t c)
{
	static const char *w[] = { "alpha ", "kernel ", "block ", "0x", "cluster ", "\n" };
	uint64_t seed = c * 2654435761u + 1, j = 0;

	if (c % 16 == 7) {
		for (j = 0; j < cs; j++) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			b[j] = (uint8_t)(seed >> 56);
		}
		return;
	}
	while (j < cs) {
		const char *s;
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		s = w[(seed >> 33) % 6];
		for (; *s && j < cs; s++)
			b[j++] = (uint8_t)*s;
		for (int k = 0; k < 3 && j < cs; k++)
			b[j++] = "0123456789abcdef"[(seed >> (40 + 4 * k)) & 15];
		if ((seed >> 20) % 97 < c % 30)
			for (int k = 0; k < 40 && j < cs; k++)
				b[j++] = 0;
	}
}

struct cfg {
	uint32_t cs;
	uint64_t size;          /* the disk: not always whole clusters */
	enum cow_comp comp;
	uint32_t rbits;
};

/* Write the whole disk compressed in calls of @per clusters (0: one call)
 * with @threads threads into a new image at @path; NULL, or the data. */
static uint8_t *write_image(const char *path, const struct cfg *c, unsigned threads, uint64_t per)
{
	struct cow_create_opts o = { .size = c->size, .cluster_size = c->cs, .compression = c->comp,
				     .refcount_bits = c->rbits };
	uint64_t n = (c->size + c->cs - 1) / c->cs;
	uint8_t *data = malloc(n * c->cs);
	struct cow_img *img = NULL;
	struct ut_err err;

	unlink(path);
	if (!data || cow_create(path, &o, &err) < 0 || cow_open(path, "qcow2", 0, &img, &err) < 0) {
		fprintf(stderr, "%s: %s\n", path, err.msg);
		free(data);
		return NULL;
	}
	for (uint64_t i = 0; i < n; i++)
		fill(data + i * c->cs, c->cs, i);
	CHECK(cow_set_compress_threads(img, threads) == 0);
	for (uint64_t off = 0; off < c->size;) {
		uint64_t len = per ? per * c->cs : c->size;

		if (len > c->size - off)
			len = c->size - off;
		if (cow_write_compressed(img, data + off, len, off, &err) < 0) {
			fprintf(stderr, "%s: %s\n", path, err.msg);
			failures++;
			break;
		}
		off += len;
	}
	CHECK(cow_close(img) == 0);
	return data;
}

static bool same_file(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	bool same = fa && fb;
	int x, y;

	while (same) {
		x = fgetc(fa);
		y = fgetc(fb);
		if (x != y)
			same = false;
		if (x == EOF || y == EOF)
			break;
	}
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return same;
}

/* The guest view of @path equals @data (the disk's @size bytes). */
static bool reads_back(const char *path, const uint8_t *data, uint64_t size)
{
	struct cow_img *img = NULL;
	struct ut_err err;
	uint8_t *r = malloc(size);
	bool ok = r && cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) == 0 &&
		  cow_read(img, r, size, 0, &err) == 0 && !memcmp(r, data, size);

	cow_close(img);
	free(r);
	return ok;
}

/* The L2 entry of guest cluster @vcl (0 when its table is not there). */
static int entry_of(struct cow_img *img, uint64_t vcl, uint64_t *e)
{
	struct cow_cent *t = NULL;
	struct ut_err err;
	int r = cow_l2_get(img, vcl >> img->l2_bits, false, &t, &err);

	*e = r == 0 && t ? cow_l2_ent(img, t->buf, vcl & (img->l2_entries - 1)) : 0;
	return r;
}

/* What the compressed entries of @path hold: their number, how many cross
 * a host cluster boundary, the plain data clusters, and the packing
 * property: whenever host clusters k and k + 1 both hold compressed bytes,
 * an entry crosses from k into k + 1 (no gap at the end of k); @unbridged
 * counts the pairs where none does. */
struct layout {
	uint64_t ncomp, ncross, nplain, unbridged;
};

static void scan(const char *path, struct layout *l)
{
	struct cow_img *img = NULL;
	struct ut_err err;
	uint8_t *held = NULL, *bridged = NULL;
	uint64_t ncl = 0;

	memset(l, 0, sizeof(*l));
	if (cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) < 0) {
		failures++;
		return;
	}
	ncl = (img->file_size >> img->cluster_bits) + 2;
	held = calloc(ncl, 1);
	bridged = calloc(ncl, 1);
	if (!held || !bridged) {
		failures++;
		goto out;
	}
	for (uint64_t vcl = 0; vcl << img->cluster_bits < img->size; vcl++) {
		uint64_t e, coff, clen, k0, k1;

		if (entry_of(img, vcl, &e) < 0) {
			failures++;
			break;
		}
		if (!(e & QCOW_OFLAG_COMPRESSED)) {
			if (e & QCOW_OFFSET_MASK)
				l->nplain++;
			continue;
		}
		coff = cow_l2_compressed_off(img, e);
		/* (the sector count rounds up: the true end is in its last sector) */
		clen = cow_l2_compressed_sectors(img, e) * 512 - (coff & 511);
		k0 = coff >> img->cluster_bits;
		k1 = (coff + clen - 1) >> img->cluster_bits;
		if (k1 >= ncl) {
			failures++;
			continue;
		}
		l->ncomp++;
		held[k0] = 1;
		if (k1 != k0) {
			/* a last sector alone in k1 might hold no byte: only an
			 * entry reaching a full sector past the boundary counts */
			held[k1] = 1;
			if (((coff + clen - 512) >> img->cluster_bits) != k0 || ((coff + clen) & (img->cluster_size - 1)) > 512)
				l->ncross++;
			bridged[k0] = 1;
		}
	}
	for (uint64_t k = 0; k + 1 < ncl; k++)
		if (held[k] && held[k + 1] && !bridged[k])
			l->unbridged++;
out:
	free(held);
	free(bridged);
	cow_close(img);
}

static void one(const struct cfg *c)
{
	char a[160], b[160], name[96];
	uint8_t *data;
	struct layout la, lb;
	struct cow_check_res r;
	struct ut_err err;
	int before = failures;

	snprintf(name, sizeof(name), "cs %u, %s, refcount_bits %u, %llu bytes", c->cs,
		 c->comp == COW_COMP_ZSTD ? "zstd" : "zlib", c->rbits ? c->rbits : 16,
		 (unsigned long long)c->size);
	snprintf(a, sizeof(a), "%s/a.qcow2", dir);
	snprintf(b, sizeof(b), "%s/b.qcow2", dir);
	data = write_image(a, c, 1, 0);
	CHECK(data != NULL);
	if (!data)
		goto out;
	CHECK(reads_back(a, data, c->size));
	CHECK(test_checks_clean(a));
	scan(a, &la);
	CHECK(la.ncomp > 0 && la.nplain > 0);
	/* packed: no gap at the end of a host cluster followed by another
	 * holding compressed bytes; every reference counted */
	memset(&r, 0, sizeof(r));
	CHECK(cow_check(a, COW_REPAIR_NONE, &r, &err) == 0);
	ut_buf_release(&r.msgs);
	if (c->rbits == 1) {
		CHECK(la.ncross == 0);   /* a cluster holds one reference */
	} else {
		CHECK(la.unbridged == 0);
		CHECK(la.ncross > 0);
	}
	/* any thread count, any call size: the same file */
	for (unsigned t = 2; t <= 16; t = t == 3 ? 16 : t + 1) {
		uint64_t per = t == 2 ? 1 : t == 3 ? 3 : 0;
		uint8_t *d2 = write_image(b, c, t, per);
		CHECK(d2 && !memcmp(d2, data, c->size));
		free(d2);
		CHECK(same_file(a, b));
		scan(b, &lb);
		CHECK(lb.ncomp == la.ncomp && lb.ncross == la.ncross);
	}
	/* overwrite, discard and rewrite: every reference freed */
	{
		struct cow_img *img = NULL;
		uint64_t n = (c->size + c->cs - 1) / c->cs;

		CHECK(cow_open(a, "qcow2", 0, &img, &err) == 0);
		if (img) {
			for (uint64_t i = 0; i < n; i += 3) {
				uint64_t len = i + 1 < n ? c->cs : c->size - i * c->cs;
				memset(data + i * c->cs, 0x5a, len);
				CHECK(cow_write(img, data + i * c->cs, len, i * c->cs, &err) == 0);
			}
			for (uint64_t i = 1; i + 1 < n; i += 7) {
				CHECK(cow_discard(img, c->cs, i * c->cs, false, &err) == 0);
				memset(data + i * c->cs, 0, c->cs);
			}
			CHECK(cow_close(img) == 0);
		}
		CHECK(test_checks_clean(a));
		CHECK(reads_back(a, data, c->size));
		CHECK(cow_open(a, "qcow2", 0, &img, &err) == 0);
		if (img) {
			for (uint64_t i = 2; i + 1 < n; i += 4) {
				fill(data + i * c->cs, c->cs, i + 1000);
				CHECK(cow_write_compressed(img, data + i * c->cs, c->cs, i * c->cs, &err) == 0);
			}
			CHECK(cow_close(img) == 0);
		}
		CHECK(test_checks_clean(a));
		CHECK(reads_back(a, data, c->size));
	}
	free(data);
out:
	printf("%s: %s (%llu compressed, %llu crossing a boundary, %llu plain)\n", name,
	       failures > before ? "FAILED" : "ok", (unsigned long long)la.ncomp,
	       (unsigned long long)la.ncross, (unsigned long long)la.nplain);
}

int main(void)
{
	static const struct cfg cfgs[] = {
		{ 65536, 64 * 65536, COW_COMP_ZLIB, 0 },
		{ 65536, 40 * 65536 + 1536, COW_COMP_ZSTD, 0 },
		{ 512, 300 * 512, COW_COMP_ZLIB, 0 },
		{ 4096, 200 * 4096 + 512, COW_COMP_ZSTD, 0 },
		{ 4096, 100 * 4096, COW_COMP_ZLIB, 1 },
		{ 16384, 90 * 16384, COW_COMP_ZSTD, 64 },
		{ 2u << 20, 9 * (2ull << 20), COW_COMP_ZLIB, 0 },
	};
	char cmd[64];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
		one(&cfgs[i]);
	CHECK(cow_set_compress_threads(NULL, COW_COMPRESS_THREADS_MAX + 1) == -EINVAL);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return failures ? 1 : 0;
}
