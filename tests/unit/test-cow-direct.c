/* tests/unit/test-cow-direct.c — COW_O_DIRECT (cache=none): writes and reads
 * at aligned and unaligned offsets, lengths and buffers over a fresh overlay
 * (copy-on-write from a backing file), a fully allocated image (in-place
 * writes), a raw image and through storage/ with STG_O_DIRECT (the io_uring
 * fast path and its fallback for misaligned guest buffers); every read is
 * compared with a model, and the images are read back buffered, checked by
 * cow_check and, when it is installed, by `qemu-img check`. A tmpfs path
 * (/dev/shm) must be refused with a clear message.
 *
 * Runs in /var/tmp (O_DIRECT needs a real file system; /tmp may be tmpfs).
 * Exit 0 pass, 1 fail, 77 skip (no O_DIRECT where the test can write). */
#include "cow/cow.h"
#include "storage/blockdev.h"
#include "tests/helpers/xorshift.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)
#define CHECKE(c, e) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed: %s\n", __FILE__, __LINE__, #c, (e)->msg); failures++; } } while (0)

#define DISK (8u << 20)

static uint64_t rs = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void) { return test_xorshift64(&rs); }

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
}

/* Compare the whole disk of @img with @model, reading in odd-sized pieces
 * into a misaligned buffer. */
static void compare_all(struct cow_img *img, const uint8_t *model, const char *what)
{
	uint8_t *raw = malloc(DISK + 64), *buf = raw + 3;
	struct ut_err err;
	uint64_t off = 0;
	int bad = 0;

	while (off < DISK) {
		uint64_t n = 1 + rnd() % 300000;

		if (n > DISK - off)
			n = DISK - off;
		if (cow_read(img, buf, n, off, &err) < 0) {
			fprintf(stderr, "%s: read at %llu: %s\n", what, (unsigned long long)off, err.msg);
			failures++;
			break;
		}
		if (memcmp(buf, model + off, n)) {
			for (uint64_t i = 0; i < n; i++)
				if (buf[i] != model[off + i]) {
					fprintf(stderr, "%s: content differs at %llu\n", what,
						(unsigned long long)(off + i));
					break;
				}
			bad++;
			break;
		}
		off += n;
	}
	CHECK(bad == 0);
	free(raw);
}

/* A mix of writes (aligned and not, in offset, length and buffer), each
 * followed by a read-back of the range (also misaligned). */
static void mixed_io(struct cow_img *img, uint8_t *model, unsigned rounds, const char *what)
{
	uint8_t *raw = aligned_alloc(4096, (2u << 20) + 8192), *rd = aligned_alloc(4096, (2u << 20) + 8192);
	struct ut_err err;

	for (unsigned i = 0; i < rounds; i++) {
		unsigned kind = (unsigned)(rnd() % 6);
		uint64_t off, len, bo = 0, ro = 0;

		switch (kind) {
		case 0:   /* aligned everything, 4 KiB */
			off = (rnd() % (DISK / 4096)) * 4096;
			len = 4096;
			break;
		case 1:   /* 512-aligned offset and length, aligned buffer */
			len = 512 * (1 + rnd() % 16);
			off = (rnd() % ((DISK - len) / 512)) * 512;
			break;
		case 2:   /* aligned offset and length, misaligned buffer */
			len = 4096 * (1 + rnd() % 40);
			off = (rnd() % ((DISK - len) / 4096)) * 4096;
			bo = 1 + rnd() % 511;
			ro = 1 + rnd() % 511;
			break;
		case 3:   /* small, unaligned everything */
			len = 1 + rnd() % 700;
			off = rnd() % (DISK - len);
			bo = rnd() % 64;
			ro = rnd() % 64;
			break;
		case 4:   /* large, crossing clusters and the 1 MiB bounce chunk */
			len = 1 + rnd() % (2u << 20);
			off = rnd() % (DISK - len);
			bo = rnd() % 4096;
			ro = rnd() % 4096;
			break;
		default:  /* vectored, three pieces, unaligned */
			len = 3000 + rnd() % 200000;
			off = rnd() % (DISK - len);
			bo = 5;
			break;
		}
		fill(raw + bo, len, i + 1);
		if (kind == 5) {
			uint64_t a = len / 3, b = len / 3 + 17;
			struct iovec v[3] = {
				{ raw + bo, a }, { raw + bo + a, b }, { raw + bo + a + b, len - a - b },
			};
			CHECKE(cow_writev(img, v, 3, off, &err) == 0, &err);
		} else {
			CHECKE(cow_write(img, raw + bo, len, off, &err) == 0, &err);
		}
		memcpy(model + off, raw + bo, len);
		memset(rd, 0xee, len + ro);
		CHECKE(cow_read(img, rd + ro, len, off, &err) == 0, &err);
		if (memcmp(rd + ro, model + off, len)) {
			fprintf(stderr, "%s: round %u kind %u off %llu len %llu: read-back differs\n", what,
				i, kind, (unsigned long long)off, (unsigned long long)len);
			failures++;
			break;
		}
		if (i % 17 == 16)
			CHECKE(cow_flush(img, &err) == 0, &err);
	}
	/* write-zeroes and discard on unaligned ranges */
	CHECKE(cow_write_zeroes(img, 70001, 1234567, 0, &err) == 0, &err);
	memset(model + 1234567, 0, 70001);
	free(raw);
	free(rd);
}

static void check_clean(const char *path)
{
	struct cow_check_res r;
	struct ut_err err;
	char cmd[1200];

	memset(&r, 0, sizeof(r));
	CHECKE(cow_check(path, COW_REPAIR_NONE, &r, &err) == 0, &err);
	CHECK(r.corruptions == 0 && r.leaks == 0);
	if (r.corruptions || r.leaks)
		fprintf(stderr, "%s: %.*s\n", path, (int)r.msgs.len, (const char *)r.msgs.data);
	ut_buf_release(&r.msgs);
	if (system("qemu-img --version >/dev/null 2>&1") == 0) {
		snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s'", path);
		CHECK(system(cmd) == 0);
	} else {
		printf("qemu-img not found: qemu-img check skipped\n");
	}
}

/* Reopen buffered (no O_DIRECT) and compare everything. */
static void verify_buffered(const char *path, const uint8_t *model)
{
	struct cow_img *img = NULL;
	struct ut_err err;

	CHECKE(cow_open(path, NULL, COW_O_RDONLY, &img, &err) == 0, &err);
	if (img)
		compare_all(img, model, path);
	cow_close(img);
}

static void test_tmpfs(void)
{
	char dir[] = "/dev/shm/cowdio.XXXXXX", path[600];
	struct cow_create_opts o = { .size = 1u << 20 };
	struct cow_img *img = NULL;
	struct stg_dev *d = NULL;
	struct statfs sf;
	struct ut_err err;

	if (statfs("/dev/shm", &sf) < 0 || sf.f_type != 0x01021994 || !mkdtemp(dir)) {
		printf("no tmpfs at /dev/shm: the tmpfs refusal is not tested\n");
		return;
	}
	snprintf(path, sizeof(path), "%s/x.qcow2", dir);
	CHECKE(cow_create(path, &o, &err) == 0, &err);
	ut_err_clear(&err);
	CHECK(cow_open(path, NULL, COW_O_DIRECT, &img, &err) == -EINVAL);
	CHECK(!img);
	CHECK(strstr(err.msg, "unable to open '") && strstr(err.msg, "x.qcow2'") &&
	      strstr(err.msg, "the file system does not support O_DIRECT (cache=none)"));
	printf("tmpfs refused: %s\n", err.msg);
	/* buffered is fine there */
	CHECKE(cow_open(path, NULL, 0, &img, &err) == 0, &err);
	cow_close(img);
	/* and through storage/, both backends */
	ut_err_clear(&err);
	CHECK(stg_open(path, NULL, STG_O_DIRECT, &d, &err) < 0 &&
	      strstr(err.msg, "does not support O_DIRECT (cache=none)"));
	ut_err_clear(&err);
	CHECK(stg_open(path, "raw", STG_O_DIRECT, &d, &err) < 0 &&
	      strstr(err.msg, "does not support O_DIRECT (cache=none)"));
	unlink(path);
	rmdir(dir);
}

static int sync_result;
static void sync_done(struct stg_req *req, int result)
{
	(void)req;
	sync_result = result;
}

/* One vectored request through storage/, waited for. */
static int stg_submit_sync(struct stg_dev *d, enum stg_op op, const struct iovec *v, int n,
			   uint64_t off)
{
	struct stg_req req;
	int r;

	memset(&req, 0, sizeof(req));
	req.op = op;
	req.offset = off;
	req.iov = v;
	req.iovcnt = n;
	for (int i = 0; i < n; i++)
		req.len += v[i].iov_len;
	req.done = sync_done;
	sync_result = 1;
	r = stg_submit(d, &req);
	if (r < 0)
		return r;
	stg_drain(d);
	return sync_result;
}

/* Through storage/ with STG_O_DIRECT: aligned buffers (engine fast path) and
 * misaligned ones (fallback through cow/). */
static void test_stg(const char *path, const char *fmt, uint8_t *model)
{
	uint8_t *raw = aligned_alloc(4096, (1u << 20) + 8192), *rd = aligned_alloc(4096, (1u << 20) + 8192);
	struct stg_dev *d = NULL;
	struct ut_err err;

	CHECKE(stg_open(path, fmt, STG_O_DIRECT, &d, &err) == 0, &err);
	if (!d)
		goto out;
	for (unsigned i = 0; i < 200; i++) {
		uint64_t len = 512 * (1 + rnd() % 256), off = (rnd() % ((DISK - len) / 512)) * 512;
		uint64_t bo = (i % 3 == 0) ? 0 : (i % 3 == 1) ? 512 : 1 + rnd() % 511;
		uint64_t ro = (i % 4 == 0) ? 0 : (i % 4 == 1) ? 1024 : 8 * (1 + rnd() % 60);

		fill(raw + bo, len, 1000 + i);
		CHECK(stg_pwrite(d, raw + bo, len, off) == 0);
		memcpy(model + off, raw + bo, len);
		CHECK(stg_pread(d, rd + ro, len, off) == 0);
		if (memcmp(rd + ro, model + off, len)) {
			fprintf(stderr, "%s: stg round %u: read-back differs\n", path, i);
			failures++;
			break;
		}
	}
	/* a request of 200 misaligned 512-byte vectors (more than any fixed
	 * slice buffer), written and read back, and read over the last 100 KiB
	 * (zeros in a fresh overlay) */
	{
		struct iovec v[200];
		uint8_t *big = malloc(200 * 520 + 64);
		uint64_t off = 3u << 20;

		for (int i = 0; i < 200; i++) {
			v[i].iov_base = big + 8 + (size_t)i * 520;
			v[i].iov_len = 512;
			fill(v[i].iov_base, 512, 5000 + (unsigned)i);
			memcpy(model + off + (size_t)i * 512, v[i].iov_base, 512);
		}
		CHECK(stg_submit_sync(d, STG_OP_WRITE, v, 200, off) == 0);
		memset(big, 0, 200 * 520 + 64);
		CHECK(stg_submit_sync(d, STG_OP_READ, v, 200, off) == 0);
		for (int i = 0; i < 200; i++)
			CHECK(!memcmp(v[i].iov_base, model + off + (size_t)i * 512, 512));
		off = DISK - 200 * 512;
		CHECK(stg_submit_sync(d, STG_OP_READ, v, 200, off) == 0);
		for (int i = 0; i < 200; i++)
			CHECK(!memcmp(v[i].iov_base, model + off + (size_t)i * 512, 512));
		free(big);
	}
	CHECK(stg_flush(d) == 0);
	stg_close(d);
out:
	free(raw);
	free(rd);
}

int main(void)
{
	char dir[] = "/var/tmp/cowdio.XXXXXX", base[600], top[600], full[600], rawp[600];
	struct cow_create_opts o = { .size = DISK };
	uint8_t *mbase = calloc(1, DISK), *mtop, *mfull, *mraw = calloc(1, DISK);
	struct cow_img *img = NULL;
	struct ut_err err;
	uint32_t ma, oa;
	FILE *f;

	if (!mkdtemp(dir)) {
		printf("SKIP: cannot create a directory in /var/tmp\n");
		return 77;
	}
	snprintf(base, sizeof(base), "%s/base.qcow2", dir);
	snprintf(top, sizeof(top), "%s/top.qcow2", dir);
	snprintf(full, sizeof(full), "%s/full.qcow2", dir);
	snprintf(rawp, sizeof(rawp), "%s/disk.raw", dir);

	/* base: half the disk written (buffered) */
	CHECKE(cow_create(base, &o, &err) == 0, &err);
	CHECKE(cow_open(base, NULL, 0, &img, &err) == 0, &err);
	fill(mbase, DISK / 2, 99);
	CHECKE(cow_write(img, mbase, DISK / 2, 0, &err) == 0, &err);
	CHECK(cow_close(img) == 0);
	img = NULL;

	/* probe: can we do O_DIRECT here at all? */
	if (cow_open(base, NULL, COW_O_DIRECT | COW_O_RDONLY, &img, &err) < 0) {
		printf("SKIP: %s\n", err.msg);
		return 77;
	}
	CHECK(cow_layer_dio_align(img, &ma, &oa) == 1);
	printf("O_DIRECT alignment in %s: memory %u, offset %u\n", dir, ma, oa);
	compare_all(img, mbase, "base read direct");
	cow_close(img);
	img = NULL;

	/* 1. fresh overlay (64 KiB and 4 KiB clusters): copy-on-write */
	for (int cs = 0; cs < 2; cs++) {
		struct cow_create_opts ov = { .backing = "base.qcow2", .cluster_size = cs ? 4096 : 0 };

		mtop = malloc(DISK);
		memcpy(mtop, mbase, DISK);
		unlink(top);
		CHECKE(cow_create(top, &ov, &err) == 0, &err);
		CHECKE(cow_open(top, NULL, COW_O_DIRECT, &img, &err) == 0, &err);
		if (!img)
			break;
		CHECK(cow_layer_dio_align(img, &ma, &oa) == 1);
		CHECK(cow_layer_dio_align(cow_backing(img), &ma, &oa) == 0);
		mixed_io(img, mtop, 300, "overlay");
		CHECKE(cow_discard(img, 3u << 20, 1u << 20, true, &err) == 0, &err);
		for (uint64_t c = 1u << 20; c < 4u << 20; c += (cs ? 4096 : 65536))
			memcpy(mtop + c, mbase + c, cs ? 4096 : 65536);   /* whole clusters: back to the base */
		compare_all(img, mtop, "overlay direct");
		CHECK(cow_close(img) == 0);
		img = NULL;
		verify_buffered(top, mtop);
		check_clean(top);
		/* read-only direct */
		CHECKE(cow_open(top, NULL, COW_O_DIRECT | COW_O_RDONLY, &img, &err) == 0, &err);
		if (img)
			compare_all(img, mtop, "overlay direct ro");
		cow_close(img);
		img = NULL;
		free(mtop);
	}

	/* 2. a fully allocated image (in-place writes), 512-byte clusters too */
	for (int cs = 0; cs < 2; cs++) {
		struct cow_create_opts fo = { .size = DISK, .cluster_size = cs ? 512 : 0 };

		mfull = malloc(DISK);
		fill(mfull, DISK, 7);
		unlink(full);
		CHECKE(cow_create(full, &fo, &err) == 0, &err);
		CHECKE(cow_open(full, NULL, COW_O_DIRECT, &img, &err) == 0, &err);
		if (!img)
			break;
		CHECKE(cow_write(img, mfull, DISK, 0, &err) == 0, &err);
		CHECKE(cow_flush(img, &err) == 0, &err);
		mixed_io(img, mfull, 200, "full");
		/* compressed clusters: unaligned writes of compressed data */
		if (!cs) {
			uint8_t *z = calloc(1, 4 * 65536);
			memset(z + 65536, 'c', 65536);
			CHECKE(cow_write_compressed(img, z, 4 * 65536, 2u << 20, &err) == 0, &err);
			memcpy(mfull + (2u << 20), z, 4 * 65536);
			free(z);
		}
		compare_all(img, mfull, "full direct");
		CHECK(cow_close(img) == 0);
		img = NULL;
		verify_buffered(full, mfull);
		check_clean(full);
		if (!cs)
			test_stg(full, NULL, mfull);
		verify_buffered(full, mfull);
		check_clean(full);
		free(mfull);
	}

	/* 3. raw, through cow/ and through storage/ */
	f = fopen(rawp, "w");
	CHECK(f && ftruncate(fileno(f), DISK) == 0);
	if (f)
		fclose(f);
	CHECKE(cow_open(rawp, "raw", COW_O_DIRECT, &img, &err) == 0, &err);
	if (img) {
		mixed_io(img, mraw, 150, "raw");
		compare_all(img, mraw, "raw direct");
		CHECK(cow_close(img) == 0);
		img = NULL;
	}
	test_stg(rawp, "raw", mraw);
	verify_buffered(rawp, mraw);

	/* 4. an overlay through storage/ (allocating writes, io_uring reads of
	 * both layers) */
	{
		struct cow_create_opts ov = { .backing = "base.qcow2" };

		mtop = malloc(DISK);
		memcpy(mtop, mbase, DISK);
		unlink(top);
		CHECKE(cow_create(top, &ov, &err) == 0, &err);
		test_stg(top, NULL, mtop);
		verify_buffered(top, mtop);
		check_clean(top);
		free(mtop);
	}

	test_tmpfs();

	unlink(base);
	unlink(top);
	unlink(full);
	unlink(rawp);
	rmdir(dir);
	free(mbase);
	free(mraw);
	if (failures)
		fprintf(stderr, "test-cow-direct: %d failure(s)\n", failures);
	return failures ? 1 : 0;
}
