/* tests/unit/test-cow-format.c — cow/ internals without qemu-img:
 * refcount entry encoding for every width, the LRU cache, header build/parse
 * round trip and header validation messages, refcount overflow (-ERANGE),
 * refcount-table growth with 512-byte clusters, a write/read/discard
 * round trip followed by a clean cow_check, COW_O_HEADER_ONLY on an
 * image with internal snapshots, the search of the snapshot/bitmap
 * metadata ranges of the overlap check (ranges that overlap each other),
 * and what the check-mode header parse lets through. */
#include "cow/qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

static void test_rc_entries(void)
{
	uint8_t blk[512];

	for (uint32_t order = 0; order <= 6; order++) {
		uint64_t bits = 1ull << order, max = bits == 64 ? ~0ull : (1ull << bits) - 1;
		uint64_t n = 512 * 8 / bits;
		memset(blk, 0, sizeof(blk));
		for (uint64_t i = 0; i < n; i++)
			cow_rc_write_entry(blk, order, i, (i * 2654435761u) & max);
		for (uint64_t i = 0; i < n; i++)
			CHECK(cow_rc_read_entry(blk, order, i) == ((i * 2654435761u) & max));
	}
	/* bit order inside a byte is LSB first (QEMU's layout) */
	memset(blk, 0, sizeof(blk));
	cow_rc_write_entry(blk, 0, 1, 1);
	CHECK(blk[0] == 0x02);
	cow_rc_write_entry(blk, 2, 1, 0xf);
	CHECK(blk[0] == 0xf2);
	memset(blk, 0, sizeof(blk));
	cow_rc_write_entry(blk, 4, 1, 0x1234);
	CHECK(blk[2] == 0x12 && blk[3] == 0x34);   /* big-endian */
}

static void test_cache(void)
{
	struct cow_cache c;
	struct cow_cent *e;

	CHECK(cow_cache_init(&c, 512, 4) == 0);
	for (uint64_t i = 1; i <= 4; i++)
		CHECK(cow_cache_insert(&c, i * 512) != NULL);
	CHECK(cow_cache_lru(&c)->off == 512);
	CHECK(cow_cache_find(&c, 512) != NULL);          /* touch: 1024 is now LRU */
	CHECK(cow_cache_lru(&c)->off == 1024);
	e = cow_cache_find(&c, 2048);
	cow_cache_mark_dirty(&c, e);
	CHECK(c.ndirty == 1);
	cow_cache_remove(&c, e);
	CHECK(c.ndirty == 0 && c.n == 3 && cow_cache_find(&c, 2048) == NULL);
	cow_cache_free(&c);
}

static void test_header(void)
{
	struct cow_img img;
	uint8_t buf[65536];
	struct ut_err err;

	memset(&img, 0, sizeof(img));
	img.path = "t.qcow2";
	img.h.version = 3;
	img.h.cluster_bits = 16;
	img.h.size = 1 << 30;
	img.h.l1_size = 2;
	img.h.l1_off = 3 << 16;
	img.h.rt_off = 1 << 16;
	img.h.rt_clusters = 1;
	img.h.refcount_order = 4;
	img.h.comp_type = 1;
	img.h.incompat = QCOW_INCOMPAT_COMPRESSION;
	strcpy(img.h.backing, "base.qcow2");
	strcpy(img.h.backing_fmt, "qcow2");
	img.h.has_backing_fmt = true;
	CHECK(cow_hdr_build(&img.h, buf, sizeof(buf), &err) == 0);
	memset(&img.h, 0, sizeof(img.h));
	CHECK(cow_hdr_parse(&img, buf, sizeof(buf), 4 << 16, &err) == 0);
	CHECK(img.h.size == 1 << 30 && img.h.comp_type == 1);
	CHECK(!strcmp(img.h.backing, "base.qcow2") && !strcmp(img.h.backing_fmt, "qcow2"));

	/* validation messages name the file and the problem */
	CHECK(cow_hdr_parse(&img, buf, 40, 4 << 16, &err) == -EINVAL);
	CHECK(strstr(err.msg, "'t.qcow2': header too short") != NULL);
	cow_put32(buf + 36, 1);   /* L1 too small for 1 GiB */
	CHECK(cow_hdr_parse(&img, buf, sizeof(buf), 4 << 16, &err) < 0);
	CHECK(strstr(err.msg, "L1 table") != NULL);
	cow_put32(buf + 36, 2);
	cow_put64(buf + 72, QCOW_INCOMPAT_COMPRESSION | (1ull << 40));
	CHECK(cow_hdr_parse(&img, buf, sizeof(buf), 4 << 16, &err) == -ENOTSUP);
	CHECK(strstr(err.msg, "bit 40") != NULL);
	cow_put64(buf + 72, QCOW_INCOMPAT_COMPRESSION);
	cow_put64(buf + 40, (3 << 16) + 8);
	CHECK(cow_hdr_parse(&img, buf, sizeof(buf), 4 << 16, &err) < 0);
	CHECK(strstr(err.msg, "not cluster-aligned") != NULL);
	free(img.h.other_ext);
}

/* cow_meta_range_find over ranges sorted by offset that overlap each
 * other: a long range starting first must be found past the short ones
 * after it (the running maximum of the ends). */
static void test_meta_ranges(void)
{
	struct cow_meta_range r[] = {
		{ .off = 0x10000, .end = 0x90000, .kind = COW_MR_SNAP_L1, .snap = 0 },
		{ .off = 0x20000, .end = 0x20100, .kind = COW_MR_SNAP_TABLE },
		{ .off = 0x50000, .end = 0x50008, .kind = COW_MR_SNAP_L1, .snap = 1 },
		{ .off = 0xa0000, .end = 0xa0020, .kind = COW_MR_BITMAP_DIR },
		{ .off = 0xf0000, .end = UINT64_MAX, .kind = COW_MR_SNAP_L1, .snap = 2 },
	};
	struct cow_img img;
	uint64_t m = 0;

	for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
		m = r[i].end > m ? r[i].end : m;
		r[i].maxend = m;
	}
	memset(&img, 0, sizeof(img));
	img.meta = r;
	img.nmeta = sizeof(r) / sizeof(r[0]);
	CHECK(cow_meta_range_find(&img, 0, 0x10000) == NULL);
	CHECK(cow_meta_range_find(&img, 0x0, 0x10001) == &r[0]);
	CHECK(cow_meta_range_find(&img, 0x20000, 0x10000) != NULL);
	CHECK(cow_meta_range_find(&img, 0x70000, 0x10000) == &r[0]);   /* past r[1], r[2] */
	CHECK(cow_meta_range_find(&img, 0x90000, 0x10000) == NULL);
	CHECK(cow_meta_range_find(&img, 0xa0000, 0x10000) == &r[3]);
	CHECK(cow_meta_range_find(&img, 0xb0000, 0x40000) == NULL);
	CHECK(cow_meta_range_find(&img, 0x100000000ull, 0x10000) == &r[4]);
	CHECK(cow_meta_range_find(&img, UINT64_MAX - 5, 10) == &r[4]);   /* saturated */
	img.nmeta = 0;
	CHECK(cow_meta_range_find(&img, 0x20000, 0x10000) == NULL);
}

/* A header length that is not a multiple of 8 and an L1 table or refcount
 * table over the header or each other: refused by a normal parse, taken
 * (and recorded) in check mode; a misaligned L1 table is refused in both. */
static void test_check_mode(void)
{
	static const struct { uint32_t off, len; uint64_t v; unsigned flag; } cases[] = {
		{ 100, 4, 106, COW_CK_HDR_LEN },
		{ 40, 8, 0, COW_CK_L1_HDR },
		{ 48, 8, 0, COW_CK_RT_HDR },
		{ 40, 8, 1 << 16, COW_CK_L1_RT },
		{ 40, 8, (3 << 16) + 512, 0 },
	};
	struct cow_img img;
	uint8_t buf[65536], b2[65536];
	struct ut_err err;

	memset(&img, 0, sizeof(img));
	img.path = "t.qcow2";
	img.h.version = 3;
	img.h.cluster_bits = 16;
	img.h.size = 1 << 20;
	img.h.l1_size = 1;
	img.h.l1_off = 3 << 16;
	img.h.rt_off = 1 << 16;
	img.h.rt_clusters = 1;
	img.h.refcount_order = 4;
	CHECK(cow_hdr_build(&img.h, buf, sizeof(buf), &err) == 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memcpy(b2, buf, sizeof(b2));
		if (cases[i].len == 4)
			cow_put32(b2 + cases[i].off, (uint32_t)cases[i].v);
		else
			cow_put64(b2 + cases[i].off, cases[i].v);
		img.check_mode = false;
		CHECK(cow_hdr_parse(&img, b2, sizeof(b2), 4 << 16, &err) == -EINVAL);
		img.check_mode = true;
		if (cases[i].flag) {
			CHECK(cow_hdr_parse(&img, b2, sizeof(b2), 4 << 16, &err) == 0);
			CHECK(img.check_flags == cases[i].flag);
		} else {
			CHECK(cow_hdr_parse(&img, b2, sizeof(b2), 4 << 16, &err) == -EINVAL);
			CHECK(strstr(err.msg, "not cluster-aligned") != NULL);
		}
	}
	free(img.h.other_ext);
}

static void test_image(const char *dir)
{
	char path[512];
	struct cow_create_opts o = { 0 };
	struct cow_img *img;
	struct cow_check_res r;
	struct ut_err err;
	uint8_t *w = malloc(1 << 20), *rd = malloc(1 << 20);
	uint32_t rt0;

	snprintf(path, sizeof(path), "%s/u.qcow2", dir);
	o.size = 64 << 20;
	o.cluster_size = 512;
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, NULL, 0, &img, &err) == 0);
	rt0 = img->h.rt_clusters;
	for (int i = 0; i < (1 << 20); i++)
		w[i] = (uint8_t)(i * 7 + (i >> 9));
	/* 40 MiB of 512-byte clusters: many refcount blocks, refcount table growth */
	for (uint64_t off = 0; off < (40 << 20); off += 1 << 20)
		CHECK(cow_write(img, w, 1 << 20, off, &err) == 0);
	CHECK(img->h.rt_clusters > rt0);
	CHECK(cow_discard(img, 1 << 20, 5 << 20, false, &err) == 0);
	CHECK(cow_write_zeroes(img, 3000, 7 << 20, 0, &err) == 0);
	CHECK(cow_close(img) == 0);
	CHECK(cow_open(path, NULL, COW_O_RDONLY, &img, &err) == 0);
	for (uint64_t off = 0; off < (40 << 20); off += 1 << 20) {
		CHECK(cow_read(img, rd, 1 << 20, off, &err) == 0);
		if (off == (5 << 20)) {
			for (int i = 0; i < (1 << 20); i++)
				if (rd[i]) { CHECK(!"discarded range not zero"); break; }
		} else if (off == (7 << 20)) {
			for (int i = 0; i < 3000; i++)
				if (rd[i]) { CHECK(!"zeroed range not zero"); break; }
			CHECK(!memcmp(rd + 3000, w + 3000, (1 << 20) - 3000));
		} else {
			CHECK(!memcmp(rd, w, 1 << 20));
		}
	}
	CHECK(cow_write(img, w, 512, 0, &err) == -EROFS);
	cow_close(img);
	memset(&r, 0, sizeof(r));
	CHECK(cow_check(path, COW_REPAIR_NONE, &r, &err) == 0);
	CHECK(r.corruptions == 0 && r.leaks == 0);
	ut_buf_release(&r.msgs);

	/* refcount overflow is reported, not wrapped */
	o.size = 1 << 20;
	o.cluster_size = 65536;
	o.refcount_bits = 1;
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, NULL, 0, &img, &err) == 0);
	CHECK(cow_rc_add(img, 0, 1, &err) == -ERANGE);
	CHECK(strstr(err.msg, "refcount overflow") != NULL);
	cow_close(img);
	unlink(path);
	free(w);
	free(rd);
}

/* An image with an internal snapshot whose entry records no disk size: not
 * grown (cow_grow, resize.c);
 * with COW_O_HEADER_ONLY cow_set_backing rewrites the header and every data
 * write is refused. */
static void test_header_only(const char *dir)
{
	struct cow_create_opts o = { .size = 1 << 20 };
	uint8_t b[12] = { 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0 };   /* 1 snapshot at 64K */
	struct cow_img *img;
	struct ut_err err;
	char path[512], w[512] = { 1 };
	uint64_t host, n;
	int fd;

	snprintf(path, sizeof(path), "%s/s.qcow2", dir);
	CHECK(cow_create(path, &o, &err) == 0);
	fd = open(path, O_WRONLY);
	CHECK(fd >= 0 && pwrite(fd, b, sizeof(b), 60) == (ssize_t)sizeof(b));
	close(fd);
	CHECK(cow_open(path, NULL, COW_O_NO_BACKING, &img, &err) == 0);
	if (!img)
		return;
	/* its one entry (zeros) records no disk size (extra data < 16 bytes):
	 * growing would change the snapshot's size, refused */
	CHECK(cow_grow(img, 2 << 20, &err) == -ENOTSUP &&
	      strstr(err.msg, "snapshot 0 does not record its disk size"));
	CHECK(cow_close(img) == 0);
	CHECK(cow_open(path, NULL, COW_O_NO_BACKING | COW_O_HEADER_ONLY, &img, &err) == 0);
	if (!img)
		return;
	CHECK(cow_write(img, w, 512, 0, &err) == -EROFS);
	CHECK(cow_write_zeroes(img, 512, 0, 0, &err) == -EROFS);
	CHECK(cow_discard(img, 65536, 0, false, &err) == -EROFS);
	CHECK(cow_grow(img, 2 << 20, &err) == -EROFS);
	CHECK(cow_map_inplace(img, 0, 512, &host, &n, &err) == 0 && n == 0);
	CHECK(cow_set_backing(img, "other.qcow2", "qcow2", &err) == 0);
	CHECK(cow_close(img) == 0);
	CHECK(cow_open(path, NULL, COW_O_RDONLY | COW_O_NO_BACKING, &img, &err) == 0);
	CHECK(img->h.nb_snapshots == 1 && img->h.snap_off == 65536);
	CHECK(!strcmp(img->h.backing, "other.qcow2"));
	cow_close(img);
	unlink(path);
}

int main(void)
{
	char dir[] = "/tmp/cowunit.XXXXXX";

	if (!mkdtemp(dir))
		return 1;
	test_rc_entries();
	test_cache();
	test_header();
	test_meta_ranges();
	test_check_mode();
	test_image(dir);
	test_header_only(dir);
	rmdir(dir);
	if (failures) {
		fprintf(stderr, "%d checks failed\n", failures);
		return 1;
	}
	printf("all checks passed\n");
	return 0;
}
