/* tests/fuzz/fuzz-body.h — the bodies shared by the libFuzzer targets
 * (tests/fuzz/fuzz-qcow2.c, tests/fuzz/fuzz-qcow2-write.c) and the
 * regression test that replays saved inputs through both
 * (tests/unit/test-cow-fuzz-regress.c).
 * cow_fuzz_one: open arbitrary bytes as an image (no backing files), read
 * the start of the disk, walk the map, run the read-only check.
 * cow_fuzz_write_one: open them writable and write, write zeros, discard,
 * write compressed and flush; then repair leaks, then everything
 * (`check --repair leaks`, `check --repair all`); if the repair leaves no
 * corruption and no cluster with two owners, write again, and the image
 * must still check without corruption:
 * writes never damage a consistent image, whatever its cluster size,
 * refcount width or table layout. (A cluster that two active L2 entries
 * share stays consistent only until one of them is copied on write: the
 * other keeps its entry without QCOW_OFLAG_COPIED at refcount 1, which
 * `qemu-img check` calls corrupt, in QEMU as in cowvm; so repaired images
 * with shared clusters are written but not judged.)
 * Anything but a clean error is a bug (the second one aborts). */
#include "cow/cow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The image bytes in a new memfd; its /proc path in @path. Returns the fd
 * or -1. */
static int cow_fuzz_memfd(const uint8_t *data, size_t size, char *path, size_t pathlen)
{
	int fd = memfd_create("fuzz", MFD_CLOEXEC);

	if (fd < 0)
		return -1;
	if (size && write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return -1;
	}
	snprintf(path, pathlen, "/proc/self/fd/%d", fd);
	return fd;
}

static int cow_fuzz_one(const uint8_t *data, size_t size)
{
	char path[64];
	int fd = cow_fuzz_memfd(data, size, path, sizeof(path));
	struct cow_img *img = NULL;
	struct ut_err err;
	static uint8_t buf[1 << 20];

	if (fd < 0)
		return 0;
	if (cow_open(path, "qcow2", COW_O_RDONLY | COW_O_NO_BACKING, &img, &err) == 0) {
		uint64_t sz = cow_size(img), lim = sz < (4u << 20) ? sz : (4u << 20);
		for (uint64_t off = 0; off < lim; off += sizeof(buf)) {
			uint64_t n = lim - off < sizeof(buf) ? lim - off : sizeof(buf);
			if (cow_read(img, buf, n, off, &err) < 0)
				break;
		}
		for (uint64_t off = 0, i = 0; off < sz && i < 256; i++) {
			struct cow_extent e, a;
			if (cow_block_status(img, off, sz - off, true, &e, &err) < 0 || !e.len)
				break;
			/* (without a backing file, searching 1 + i % 3 layers
			 * is searching the chain: the same run) */
			if (cow_block_status_above(img, off, sz - off, 1 + (unsigned)(i % 3), &a, &err) < 0 ||
			    a.len != e.len || a.st != e.st || a.depth != e.depth)
				abort();
			off += e.len;
		}
		{
			/* what `image info` lists: the snapshot table and the
			 * bitmap directory, parsed from the input */
			struct cow_snapshot_info *sn;
			struct cow_bitmap_info *bm;
			uint32_t n;
			if (cow_get_snapshots(img, &sn, &n, &err) == 0)
				cow_free_snapshots(sn, n);
			if (cow_get_bitmaps(img, &bm, &n, &err) == 0)
				cow_free_bitmaps(bm, n);
		}
		cow_close(img);
		{
			struct cow_check_res r;
			cow_check(path, COW_REPAIR_NONE, &r, &err);
			ut_buf_release(&r.msgs);
		}
	}
	close(fd);
	return 0;
}

/* A fixed mix of writes on the writable image at @path, at offsets derived
 * from its virtual size and cluster size: partial and unaligned writes,
 * one crossing a cluster boundary, zeros (whole and partial clusters), a
 * discard, compressed clusters (one, then three on two threads, packed
 * across host clusters), flushes. Errors are allowed (a damaged
 * image refuses); crashes are not. */
static void cow_fuzz_writes(const char *path)
{
	static uint8_t buf[512 << 10];
	struct cow_img *img = NULL;
	struct ut_err err;
	uint64_t sz, cs, mid, q;

	if (cow_open(path, "qcow2", COW_O_NO_BACKING, &img, &err) < 0)
		return;
	sz = cow_size(img);
	cs = cow_cluster_size(img);
	if (!sz || !cs || cs > sizeof(buf) / 2) {
		cow_close(img);
		return;
	}
	memset(buf, 0x5a, sizeof(buf));
	mid = sz / 2 / 512 * 512;
	q = sz / 4 / cs * cs;
#define FZ_CLIP(off, len) ((off) < sz ? ((len) < sz - (off) ? (len) : sz - (off)) : 0)
	cow_write(img, buf, FZ_CLIP(0, 4096), 0, &err);
	if (mid >= 1024)   /* unaligned, across the cluster boundary below mid */
		cow_write(img, buf, FZ_CLIP(mid - 1024 + 3, cs + 1000), mid - 1024 + 3, &err);
	cow_write_zeroes(img, FZ_CLIP(q, 2 * cs + 512), q, 0, &err);
	cow_write_zeroes(img, FZ_CLIP(q + 3 * cs, cs), q + 3 * cs, COW_ZERO_MAY_UNMAP, &err);
	cow_flush(img, &err);
	cow_discard(img, FZ_CLIP(cs, 2 * cs), cs, false, &err);
	if (3 * cs < sz)
		cow_write_compressed(img, buf, FZ_CLIP(3 * cs, cs), 3 * cs, &err);
	/* three more, half noise (compressing to about half a cluster), on
	 * two threads: packed after the one above, crossing host clusters */
	for (uint64_t i = 0, x = 1; i < 3 * cs && 3 * cs <= sizeof(buf) / 2; i += 2) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		buf[sizeof(buf) / 2 + i] = (uint8_t)(x >> 56);
		buf[sizeof(buf) / 2 + i + 1] = 0x5a;
	}
	cow_set_compress_threads(img, 2);
	if (5 * cs < sz && 3 * cs <= sizeof(buf) / 2)
		cow_write_compressed(img, buf + sizeof(buf) / 2, FZ_CLIP(5 * cs, 3 * cs), 5 * cs, &err);
	cow_write(img, buf + 7, FZ_CLIP(sz - sz % 512 > 8192 ? sz - sz % 512 - 8192 : 0, 8192),
		  sz - sz % 512 > 8192 ? sz - sz % 512 - 8192 : 0, &err);
	cow_write(img, buf, FZ_CLIP(2 * cs + 512, 512), 2 * cs + 512, &err);
#undef FZ_CLIP
	cow_close(img);
}

static int cow_fuzz_write_one(const uint8_t *data, size_t size)
{
	char path[64];
	int fd = cow_fuzz_memfd(data, size, path, sizeof(path));
	struct cow_check_res r;
	struct ut_err err;

	if (fd < 0)
		return 0;
	cow_fuzz_writes(path);
	memset(&r, 0, sizeof(r));
	cow_check(path, COW_REPAIR_LEAKS, &r, &err);
	ut_buf_release(&r.msgs);
	memset(&r, 0, sizeof(r));
	if (cow_check(path, COW_REPAIR_ALL, &r, &err) == 0 && r.corruptions == 0 &&
	    r.shared_clusters == 0) {
		ut_buf_release(&r.msgs);
		cow_fuzz_writes(path);
		memset(&r, 0, sizeof(r));
		if (cow_check(path, COW_REPAIR_NONE, &r, &err) < 0 || r.corruptions) {
			fprintf(stderr, "fuzz: writes damaged a repaired image (%llu corruptions):\n%.*s\n",
				(unsigned long long)r.corruptions, (int)r.msgs.len,
				r.msgs.data ? (const char *)r.msgs.data : "");
			abort();
		}
	}
	ut_buf_release(&r.msgs);
	close(fd);
	return 0;
}
