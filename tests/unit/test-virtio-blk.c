/* tests/unit/test-virtio-blk.c — virtio-blk and virtio-rng over the virtio-pci
 * modern transport, driven like a guest driver would, without KVM.
 *
 * A struct vmm_vm is built by hand (tests/unit/test-virtio-blk.h). The test
 * finds the functions through config mechanism #1, reads BAR0, negotiates
 * features, lays out queue 0 in guest RAM, posts requests and kicks through
 * the MMIO notify area, then runs the event loop until the used ring moves
 * (bounded). Disk errors (werror/rerror, requests kept and saved) are in
 * test-virtio-blk-errors.c.
 */
#include "tests/unit/test-fds.h"
#include "tests/unit/test-virtio-blk.h"

/* ---- transport ---- */

static void test_pci_layout(struct tv_drv *d)
{
	unsigned cap = tv_cfg_rd(vm, d->slot, PCI_CAP_PTR, 1);
	int found = 0, guard = 0;

	CHECK_EQ(tv_cfg_rd(vm, d->slot, PCI_CLASS_PROG + 1, 2), 0x0180);
	CHECK(d->bar >= VMM_PCI_MMIO_START && d->bar < VMM_PCI_MMIO_END, "BAR0 0x%llx outside the window",
	      (unsigned long long)d->bar);
	CHECK(tv_cfg_rd(vm, d->slot, PCI_COMMAND, 2) & PCI_CMD_MEM, "memory decoding off");
	/* walk the capabilities: the virtio structures are where pci.c says */
	while (cap && guard++ < 16) {
		uint8_t id = (uint8_t)tv_cfg_rd(vm, d->slot, cap, 1);

		if (id == 0x09) {
			uint8_t type = (uint8_t)tv_cfg_rd(vm, d->slot, cap + 3, 1);
			uint32_t off = tv_cfg_rd(vm, d->slot, cap + 8, 4);

			CHECK_EQ(tv_cfg_rd(vm, d->slot, cap + 4, 1), 0);   /* BAR0 */
			if (type == 1)
				CHECK_EQ(off, TV_COMMON);
			if (type == 2) {
				CHECK_EQ(off, TV_NOTIFY);
				CHECK_EQ(tv_cfg_rd(vm, d->slot, cap + 16, 4), 4);   /* multiplier */
			}
			if (type == 3)
				CHECK_EQ(off, TV_ISR);
			if (type == 4) {
				CHECK_EQ(off, TV_DEVCFG);
				CHECK_EQ(tv_cfg_rd(vm, d->slot, cap + 12, 4), 60);
			}
			found |= 1 << type;
		}
		cap = tv_cfg_rd(vm, d->slot, cap + 1, 1);
	}
	CHECK_EQ(found, 0x3E);
	/* the device offers VERSION_1 and the block features it implements */
	CHECK_EQ(tv_dev_features(d) & (1ull << 32 | 1ull << 9 | 1ull << 13 | 1ull << 14 | 1ull << BLK_F_RO),
		 1ull << 32 | 1ull << 9 | 1ull << 13 | 1ull << 14);
	CHECK_EQ(tv_rd(d, C_NUMQ, 2), 1);
	/* an unhandled BAR hole reads zeroes, not host memory */
	CHECK_EQ(tv_rd(d, 0x7FF8, 8), 0);
}

static void test_features(struct tv_drv *d)
{
	uint8_t st;

	st = tv_drv_negotiate(d, 0);
	CHECK(!(st & 8), "FEATURES_OK accepted without VERSION_1 (status 0x%x)", st);
	st = tv_drv_negotiate(d, 1ull << 9);
	CHECK(!(st & 8), "FEATURES_OK accepted without VERSION_1 (status 0x%x)", st);
	st = tv_drv_negotiate(d, 1ull << 32 | 1ull << 50);
	CHECK(!(st & 8), "FEATURES_OK accepted with a feature never offered (status 0x%x)", st);
	st = tv_drv_negotiate(d, 1ull << 32 | 1ull << BLK_F_RO);
	CHECK(!(st & 8), "FEATURES_OK accepted with RO on a writable disk (status 0x%x)", st);
	st = tv_drv_negotiate(d, 1ull << 32);
	CHECK(st & 8, "FEATURES_OK refused for VERSION_1 alone (status 0x%x)", st);
	/* features are frozen after FEATURES_OK */
	tv_wr(d, C_GFSEL, 4, 0);
	tv_wr(d, C_GF, 4, 1u << 9);
	CHECK_EQ(tv_rd(d, C_GF, 4), 0);
	tv_wr(d, C_STATUS, 1, 0);
	CHECK_EQ(tv_status(d), 0);
}

/* ---- requests ---- */

static void test_rw(struct tv_drv *d, const char *path)
{
	uint8_t *data = gp(DATA_GPA, 8192), *back = gp(DATA2_GPA, 8192), file[4096];
	uint32_t ul = 0;

	CHECK_EQ(tv_drv_init(d, 0, QSIZE, RING_GPA), 0);
	CHECK_EQ(tv_rd(d, TV_DEVCFG, 8), DISK_SIZE / 512);
	for (int i = 0; i < 4096; i++)
		data[i] = (uint8_t)(i * 7 + 3);
	EXPECT_STATUS(blk_req(d, T_OUT, 8, DATA_GPA, 4096, false, &ul), S_OK);
	CHECK_EQ(ul, 1);
	file_read(path, file, sizeof(file), 8 * 512);
	CHECK(!memcmp(file, data, 4096), "written data not in the file");
	memset(back, 0, 4096);
	EXPECT_STATUS(blk_req(d, T_IN, 8, DATA2_GPA, 4096, true, &ul), S_OK);
	CHECK_EQ(ul, 4097);
	CHECK(!memcmp(back, data, 4096), "read back differs from what was written");

	/* split across several buffers, read as one */
	tv_put32(gp(HDR_GPA, 4), T_IN);
	tv_put64(gp(HDR_GPA + 8, 8), 8);
	memset(back, 0, 4096);
	tv_desc(d, 0, HDR_GPA, 16, F_NEXT, 5);
	tv_desc(d, 5, DATA2_GPA, 1000, F_NEXT | F_WRITE, 6);
	tv_desc(d, 6, DATA2_GPA + 1000, 3096, F_NEXT | F_WRITE, 2);
	tv_desc(d, 2, STATUS_GPA, 1, F_WRITE, 0);
	*gp(STATUS_GPA, 1) = S_NONE;
	CHECK_EQ(run_chain(d, &ul), 1);
	CHECK_EQ(*gp(STATUS_GPA, 1), S_OK);
	CHECK(!memcmp(back, data, 4096), "scattered read differs");

	/* status byte at the end of the data buffer (one writable descriptor) */
	tv_desc(d, 0, HDR_GPA, 16, F_NEXT, 1);
	tv_desc(d, 1, DATA2_GPA, 512 + 1, F_WRITE, 0);
	back[512] = S_NONE;
	CHECK_EQ(run_chain(d, &ul), 1);
	CHECK_EQ(back[512], S_OK);
	CHECK_EQ(ul, 513);
}

/* Five write requests made available together and kicked once, four of them
 * continuing each other on disk (sectors 64, 72, then 80, 88) with one
 * elsewhere (sector 200) between them in ring order: the I/O engine sends
 * adjacent ones as one write (storage/engine.c); each request still gets
 * its own status and used entry, and every byte lands where it belongs. */
static void test_batch(struct tv_drv *d, const char *path)
{
	static const uint64_t sector[5] = { 64, 72, 200, 80, 88 };
	uint8_t *ring = gp(d->avail, 4 + 2ull * d->qsize), file[4096];
	bool seen[5] = { false };
	int got = 0;

	for (int k = 0; k < 5; k++) {
		uint8_t *hdr = gp(HDR_GPA + 32 * k, 16), *data = gp(DATA_GPA + 4096ull * k, 4096);

		tv_put32(hdr, T_OUT);
		tv_put32(hdr + 4, 0);
		tv_put64(hdr + 8, sector[k]);
		for (int i = 0; i < 4096; i++)
			data[i] = (uint8_t)(k * 41 + i * 3 + (i >> 9));
		*gp(STATUS_GPA + k, 1) = S_NONE;
		tv_desc(d, (uint16_t)(3 * k), HDR_GPA + 32 * k, 16, F_NEXT, (uint16_t)(3 * k + 1));
		tv_desc(d, (uint16_t)(3 * k + 1), DATA_GPA + 4096ull * k, 4096, F_NEXT,
			(uint16_t)(3 * k + 2));
		tv_desc(d, (uint16_t)(3 * k + 2), STATUS_GPA + k, 1, F_WRITE, 0);
		tv_put16(ring + 4 + 2 * (d->avail_idx % d->qsize), (uint16_t)(3 * k));
		d->avail_idx++;
	}
	__atomic_store_n((uint16_t *)(void *)(ring + 2), d->avail_idx, __ATOMIC_RELEASE);
	tv_wr(d, TV_NOTIFY, 4, 0);
	while (got < 5) {
		uint32_t head = 0xFFFF, len = 0;

		if (!tv_wait_used(d, 20, &head, &len))
			break;
		got++;
		CHECK(head % 3 == 0 && head < 15 && !seen[head / 3], "used head %u", head);
		if (head % 3 == 0 && head < 15)
			seen[head / 3] = true;
		CHECK_EQ(len, 1);
	}
	CHECK_EQ(got, 5);
	for (int k = 0; k < 5; k++) {
		CHECK_EQ(*gp(STATUS_GPA + k, 1), S_OK);
		file_read(path, file, sizeof(file), (off_t)sector[k] * 512);
		CHECK(!memcmp(file, gp(DATA_GPA + 4096ull * k, 4096), 4096),
		      "batched write %d (sector %llu) not in the file", k,
		      (unsigned long long)sector[k]);
	}
}

static void test_bad_requests(struct tv_drv *d)
{
	const uint64_t cap = DISK_SIZE / 512;

	EXPECT_STATUS(blk_req(d, T_IN, cap, DATA_GPA, 512, true, NULL), S_IOERR);
	EXPECT_STATUS(blk_req(d, T_IN, cap - 1, DATA_GPA, 1024, true, NULL), S_IOERR);
	EXPECT_STATUS(blk_req(d, T_OUT, cap - 1, DATA_GPA, 1024, false, NULL), S_IOERR);
	EXPECT_STATUS(blk_req(d, T_IN, 1ull << 63, DATA_GPA, 512, true, NULL), S_IOERR);
	EXPECT_STATUS(blk_req(d, T_IN, ~0ull, DATA_GPA, 512, true, NULL), S_IOERR);
	EXPECT_STATUS(blk_req(d, T_IN, (~0ull / 512) + 1, DATA_GPA, 512, true, NULL), S_IOERR);
	EXPECT_STATUS(blk_req(d, T_IN, 0, DATA_GPA, 100, true, NULL), S_IOERR);   /* not sectors */
	EXPECT_STATUS(blk_req(d, T_IN, cap - 1, DATA_GPA, 512, true, NULL), S_OK);  /* last sector */
	EXPECT_STATUS(blk_req(d, 0x99, 0, 0, 0, false, NULL), S_UNSUPP);
	EXPECT_STATUS(blk_req(d, 0xFFFFFFFF, 0, DATA_GPA, 512, true, NULL), S_UNSUPP);
	EXPECT_STATUS(blk_req(d, T_FLUSH, 0, 0, 0, false, NULL), S_OK);
	/* discard with flags, write-zeroes with unknown flags, wrong segment size */
	EXPECT_STATUS(blk_range_req(d, T_DISCARD, 0, 8, 1), S_UNSUPP);
	EXPECT_STATUS(blk_range_req(d, T_WRITE_ZEROES, 0, 8, 2), S_UNSUPP);
	EXPECT_STATUS(blk_range_req(d, T_WRITE_ZEROES, cap - 4, 8, 0), S_IOERR);
	EXPECT_STATUS(blk_range_req(d, T_DISCARD, ~0ull, 1, 0), S_IOERR);
	EXPECT_STATUS(blk_range_req(d, T_WRITE_ZEROES, 0, 0xFFFFFFFF, 0), S_IOERR);
	EXPECT_STATUS(blk_req(d, T_DISCARD, 0, DATA2_GPA, 32, false, NULL), S_UNSUPP);
	EXPECT_STATUS(blk_req(d, T_DISCARD, 0, DATA2_GPA, 8, false, NULL), S_UNSUPP);
	EXPECT_STATUS(blk_req(d, T_WRITE_ZEROES, 0, DATA2_GPA, 24, false, NULL), S_UNSUPP);
	/* no data: fine up to the capacity, as QEMU (a range check of 0 bytes) */
	EXPECT_STATUS(blk_req(d, T_IN, cap, 0, 0, false, NULL), S_OK);
	EXPECT_STATUS(blk_req(d, T_OUT, cap, 0, 0, false, NULL), S_OK);
	EXPECT_STATUS(blk_req(d, T_IN, cap + 1, 0, 0, false, NULL), S_IOERR);
	EXPECT_STATUS(blk_req(d, T_OUT, ~0ull, 0, 0, false, NULL), S_IOERR);
	/* data in the wrong direction: no data moves, the buffer is left alone
	 * (a read has only the status byte to write; a write has no data) */
	{
		uint8_t *buf = gp(DATA_GPA, 512);
		uint32_t ul = 0;

		memset(buf, 0x3C, 512);
		EXPECT_STATUS(blk_req(d, T_IN, 0, DATA_GPA, 512, false, &ul), S_OK);
		CHECK_EQ(ul, 1);
		CHECK(all_bytes(buf, 512, 0x3C), "IN wrote into a device-readable buffer");
		EXPECT_STATUS(blk_req(d, T_OUT, 0, DATA_GPA, 512, true, &ul), S_OK);
		CHECK_EQ(ul, 1);
		CHECK(all_bytes(buf, 512, 0x3C), "OUT wrote into its data buffer");
		EXPECT_STATUS(blk_req(d, T_GET_ID, 0, DATA_GPA, 20, false, &ul), S_OK);
		CHECK(all_bytes(buf, 512, 0x3C), "GET_ID wrote into a device-readable buffer");
	}

	/* a header shorter than 16 bytes: IOERR (a driver error); one split
	 * over two buffers is fine */
	{
		uint32_t ul = 99;

		tv_put32(gp(HDR_GPA, 4), T_FLUSH);
		tv_desc(d, 0, HDR_GPA, 8, F_NEXT, 2);
		tv_desc(d, 2, STATUS_GPA, 1, F_WRITE, 0);
		*gp(STATUS_GPA, 1) = S_NONE;
		CHECK_EQ(run_chain(d, &ul), 1);
		CHECK_EQ(ul, 1);
		CHECK_EQ(*gp(STATUS_GPA, 1), S_IOERR);
		tv_desc(d, 0, HDR_GPA, 15, F_NEXT, 2);
		*gp(STATUS_GPA, 1) = S_NONE;
		CHECK_EQ(run_chain(d, &ul), 1);
		CHECK_EQ(*gp(STATUS_GPA, 1), S_IOERR);
		tv_desc(d, 0, HDR_GPA, 8, F_NEXT, 1);
		tv_desc(d, 1, HDR_GPA + 8, 8, F_NEXT, 2);
		*gp(STATUS_GPA, 1) = S_NONE;
		CHECK_EQ(run_chain(d, &ul), 1);
		CHECK_EQ(*gp(STATUS_GPA, 1), S_OK);
	}
	/* the status descriptor is followed by an empty writable one at GPA 0:
	 * the status goes into the last byte the driver gave, never before it */
	{
		uint32_t ul = 0;

		tv_put32(gp(HDR_GPA, 4), T_FLUSH);
		tv_desc(d, 0, HDR_GPA, 16, F_NEXT, 2);
		tv_desc(d, 2, STATUS_GPA, 1, F_WRITE | F_NEXT, 3);
		tv_desc(d, 3, 0, 0, F_WRITE, 0);
		*gp(STATUS_GPA, 1) = S_NONE;
		CHECK_EQ(run_chain(d, &ul), 1);
		CHECK_EQ(*gp(STATUS_GPA, 1), S_OK);
	}
	CHECK_EQ(tv_status(d) & VIRTIO_STATUS_NEEDS_RESET, 0);
	/* no device-writable byte at all: nothing can be reported, so no
	 * used entry (it would read as a completion) and the device needs a
	 * reset, as QEMU's "missing headers"; the queue stops */
	tv_desc(d, 0, HDR_GPA, 16, 0, 0);
	CHECK(run_chain_ignored(d), "request without a status byte completed");
	CHECK(tv_status(d) & VIRTIO_STATUS_NEEDS_RESET, "NEEDS_RESET not set (status 0x%x)", tv_status(d));
	tv_desc(d, 0, HDR_GPA, 16, F_NEXT, 2);
	CHECK(run_chain_ignored(d), "request on a broken queue completed");
	CHECK_EQ(tv_drv_init(d, 0, QSIZE, RING_GPA), 0);
	EXPECT_STATUS(blk_req(d, T_FLUSH, 0, 0, 0, false, NULL), S_OK);
}

static void test_get_id(struct tv_drv *d)
{
	uint8_t *id = gp(DATA_GPA, 32);
	uint32_t ul = 0;

	memset(id, 0xAA, 32);
	EXPECT_STATUS(blk_req(d, T_GET_ID, 0, DATA_GPA, 20, true, &ul), S_OK);
	CHECK(!memcmp(id, "disk.img\0\0\0\0\0\0\0\0\0\0\0\0", 20), "GET_ID: '%.20s'", (char *)id);
	CHECK_EQ(ul, 21);
	CHECK_EQ(id[20], 0xAA);
	/* a short buffer gets the start of the id */
	memset(id, 0xAA, 32);
	EXPECT_STATUS(blk_req(d, T_GET_ID, 0, DATA_GPA, 4, true, &ul), S_OK);
	CHECK(!memcmp(id, "disk", 4) && id[4] == 0xAA, "GET_ID into 4 bytes: '%.8s'", (char *)id);
	CHECK_EQ(ul, 5);
}

static void test_zeroing(struct tv_drv *d, const char *path)
{
	uint8_t *data = gp(DATA_GPA, 8192), *back = gp(DATA2_GPA + 0x1000, 8192), file[8192];

	memset(data, 0x77, 8192);
	EXPECT_STATUS(blk_req(d, T_OUT, 16, DATA_GPA, 8192, false, NULL), S_OK);
	EXPECT_STATUS(blk_range_req(d, T_WRITE_ZEROES, 16, 8, 0), S_OK);
	EXPECT_STATUS(blk_range_req(d, T_WRITE_ZEROES, 24, 4, 1), S_OK);   /* may unmap */
	memset(back, 0xEE, 8192);
	EXPECT_STATUS(blk_req(d, T_IN, 16, DATA2_GPA + 0x1000, 8192, true, NULL), S_OK);
	CHECK(all_bytes(back, 6144, 0), "write-zeroes left data");
	CHECK(all_bytes(back + 6144, 2048, 0x77), "write-zeroes zeroed beyond its range");
	EXPECT_STATUS(blk_range_req(d, T_DISCARD, 28, 4, 0), S_OK);
	EXPECT_STATUS(blk_req(d, T_IN, 16, DATA2_GPA + 0x1000, 8192, true, NULL), S_OK);
	/* raw discard punches a hole: reads back as zeroes */
	CHECK(all_bytes(back, 8192, 0), "discard did not zero the range");
	file_read(path, file, sizeof(file), 16 * 512);
	CHECK(all_bytes(file, sizeof(file), 0), "file not zeroed");
	file_read(path, file, 512, 32 * 512);
	CHECK(all_bytes(file, 512, 0x11), "sector after the range changed");
	EXPECT_STATUS(blk_range_req(d, T_DISCARD, 0, 0, 0), S_OK);   /* empty range */
}

/* Pages of @path's page cache that are dirty or under writeback (cachestat,
 * Linux >= 6.5), or -1 where that cannot be told: no cachestat, or a file
 * system whose fdatasync leaves pages dirty (tmpfs). */
static long file_dirty_pages(const char *path)
{
	struct { uint64_t off, len; } range = { 0, 0 };
	struct { uint64_t cache, dirty, writeback, evicted, recently_evicted; } cs;
	struct statfs sfs;
	int fd = open(path, O_RDONLY);
	long r = -1;

	if (fd < 0)
		tv_die(path);
	if (fstatfs(fd, &sfs) == 0 && sfs.f_type != TMPFS_MAGIC &&
	    syscall(451 /* cachestat */, fd, &range, &cs, 0) == 0)
		r = (long)(cs.dirty + cs.writeback);
	close(fd);
	return r;
}

/* Without VIRTIO_BLK_F_FLUSH the driver may take the cache for writethrough
 * (virtio 1.x 5.2.6.2: its completed writes are stable): a completed OUT
 * leaves nothing dirty in the host page cache. With it, a FLUSH does. */
static void test_writethrough(struct tv_drv *d, const char *path)
{
	uint8_t *data = gp(DATA_GPA, 8192);

	if (file_dirty_pages(path) < 0) {
		tv_unchecked = "writethrough not checked: no cachestat(2) (Linux < 6.5) or the test files are on tmpfs";
		return;
	}
	CHECK_EQ(tv_drv_init(d, 0, QSIZE, RING_GPA), 0);
	memset(data, 0x5A, 8192);
	EXPECT_STATUS(blk_req(d, T_OUT, 40, DATA_GPA, 8192, false, NULL), S_OK);
	CHECK(file_dirty_pages(path) == 0, "OUT without F_FLUSH completed with %ld pages not on disk",
	      file_dirty_pages(path));
	CHECK_EQ(tv_drv_init(d, 1ull << BLK_F_FLUSH, QSIZE, RING_GPA), 0);
	memset(data, 0xA5, 8192);
	EXPECT_STATUS(blk_req(d, T_OUT, 40, DATA_GPA, 8192, false, NULL), S_OK);
	EXPECT_STATUS(blk_req(d, T_FLUSH, 0, 0, 0, false, NULL), S_OK);
	CHECK(file_dirty_pages(path) == 0, "FLUSH completed with %ld pages not on disk",
	      file_dirty_pages(path));
	CHECK_EQ(tv_drv_init(d, 0, QSIZE, RING_GPA), 0);
}

/* The discard and write-zeroes limits in the config are what the device
 * enforces (QEMU: IOERR beyond max_*_sectors), on a disk larger than them
 * (4 GiB, sparse). */
static void test_dz_limits(void)
{
	struct tv_drv d;

	open_blk(&d, 2);
	CHECK_EQ(tv_drv_init(&d, 0, QSIZE, RING_GPA + 0x8000), 0);
	CHECK_EQ(tv_rd(&d, TV_DEVCFG, 8), (4ull << 30) / 512);
	CHECK_EQ(tv_rd(&d, TV_DEVCFG + 36, 4), 0x3FFFFF);   /* max_discard_sectors */
	CHECK_EQ(tv_rd(&d, TV_DEVCFG + 40, 4), 1);          /* max_discard_seg */
	CHECK_EQ(tv_rd(&d, TV_DEVCFG + 48, 4), 0x3FFFFF);   /* max_write_zeroes_sectors */
	CHECK_EQ(tv_rd(&d, TV_DEVCFG + 52, 4), 1);          /* max_write_zeroes_seg */
	EXPECT_STATUS(blk_range_req(&d, T_DISCARD, 0, 0x400000, 0), S_IOERR);
	EXPECT_STATUS(blk_range_req(&d, T_WRITE_ZEROES, 8, 0x400000, 1), S_IOERR);
	EXPECT_STATUS(blk_range_req(&d, T_WRITE_ZEROES, 8, 0xFFFFFFFF, 1), S_IOERR);
	EXPECT_STATUS(blk_range_req(&d, T_DISCARD, 0, 0x3FFFFF, 0), S_OK);
	EXPECT_STATUS(blk_range_req(&d, T_WRITE_ZEROES, 8, 0x3FFFFF, 1), S_OK);
	/* serial= longer than 20 bytes: its first 20, without a NUL */
	{
		uint8_t *id = gp(DATA_GPA, 32);
		uint32_t ul = 0;

		memset(id, 0xAA, 32);
		EXPECT_STATUS(blk_req(&d, T_GET_ID, 0, DATA_GPA, 24, true, &ul), S_OK);
		CHECK(!memcmp(id, "0123456789abcdefghij", 20) && id[20] == 0xAA, "GET_ID: '%.24s'",
		      (char *)id);
		CHECK_EQ(ul, 21);
	}
	tv_wr(&d, C_STATUS, 1, 0);
}

/* A hostile chain breaks the queue: NEEDS_RESET, config interrupt, nothing
 * processed afterwards; a reset brings the device back. */
static void test_hostile_and_reset(struct tv_drv *d)
{
	uint32_t ul;

	tv_put32(gp(HDR_GPA, 4), T_IN);
	tv_put64(gp(HDR_GPA + 8, 8), 0);
	tv_desc(d, 0, HDR_GPA, 16, F_NEXT, 1);
	tv_desc(d, 1, RAM_SIZE - 256, 512, F_WRITE | F_NEXT, 2);   /* crosses the end of RAM */
	tv_desc(d, 2, STATUS_GPA, 1, F_WRITE, 0);
	*gp(STATUS_GPA, 1) = S_NONE;
	tv_rd(d, TV_ISR, 1);
	CHECK(run_chain_ignored(d), "hostile chain completed");
	CHECK(tv_status(d) & VIRTIO_STATUS_NEEDS_RESET, "NEEDS_RESET not set (status 0x%x)", tv_status(d));
	CHECK_EQ(*gp(STATUS_GPA, 1), S_NONE);
	CHECK_EQ(tv_rd(d, TV_ISR, 1), 2);          /* config change, INTx */
	CHECK_EQ(tv_rd(d, TV_ISR, 1), 0);          /* read clears */

	/* a good request afterwards is not processed */
	tv_desc(d, 1, DATA_GPA, 512, F_WRITE | F_NEXT, 2);
	CHECK(run_chain_ignored(d), "request on a broken queue completed");
	CHECK_EQ(*gp(STATUS_GPA, 1), S_NONE);
	/* neither is anything after DRIVER_OK is written again */
	tv_drv_ok(d);
	CHECK_EQ(tv_wait_used(d, 3, NULL, NULL), 0);
	CHECK(tv_status(d) & VIRTIO_STATUS_NEEDS_RESET, "NEEDS_RESET cleared without a reset");

	/* reset */
	tv_wr(d, C_STATUS, 1, 0);
	CHECK_EQ(tv_status(d), 0);
	tv_wr(d, C_QSEL, 2, 0);
	CHECK_EQ(tv_rd(d, C_QENABLE, 2), 0);
	CHECK_EQ(tv_rd(d, C_QSIZE, 2), 256);
	CHECK_EQ(tv_rd(d, C_QDESC, 4), 0);
	CHECK_EQ(tv_drv_init(d, 0, QSIZE, RING_GPA + 0x4000), 0);
	EXPECT_STATUS(blk_req(d, T_IN, 0, DATA_GPA, 512, true, &ul), S_OK);
	CHECK_EQ(ul, 513);
	CHECK_EQ(tv_status(d), 0x0F);
}

/* DRIVER_OK without FEATURES_OK: the device is modern only, so no
 * features would be in force (virtio 1.x 3.1.1: the driver sets
 * FEATURES_OK, and sees it stuck, before DRIVER_OK). Whether the driver
 * never wrote FEATURES_OK or the device refused it in the very write that
 * sets DRIVER_OK (a feature never offered), the device keeps DRIVER_OK
 * clear, sets DEVICE_NEEDS_RESET and processes nothing: neither the chain
 * made available before (the DRIVER_OK catch-up) nor a later kick, until a
 * reset. */
static void test_driver_ok_without_features(struct tv_drv *d)
{
	static const uint64_t feats[] = { 1ull << 32, 1ull << 32 | 1ull << 50 };
	static const uint8_t status[] = { 1 | 2 | 4, 1 | 2 | 8 | 4 };
	uint32_t ul;

	for (int i = 0; i < 2; i++) {
		uint8_t st;

		tv_wr(d, C_STATUS, 1, 0);
		tv_wr(d, C_STATUS, 1, 1 | 2);
		tv_wr(d, C_GFSEL, 4, 0);
		tv_wr(d, C_GF, 4, (uint32_t)feats[i]);
		tv_wr(d, C_GFSEL, 4, 1);
		tv_wr(d, C_GF, 4, (uint32_t)(feats[i] >> 32));
		CHECK_EQ(tv_drv_queue(d, QSIZE, RING_GPA), 1);
		blk_req_setup(d, T_IN, 0, DATA_GPA, 512, true);
		tv_post(d, 0);
		tv_wr(d, C_STATUS, 1, status[i]);
		st = tv_status(d);
		CHECK(st == (1 | 2 | VIRTIO_STATUS_NEEDS_RESET),
		      "status 0x%x written without FEATURES_OK in force: reads 0x%x", status[i], st);
		CHECK_EQ(tv_wait_used(d, 3, NULL, NULL), 0);
		tv_wr(d, TV_NOTIFY, 4, 0);
		CHECK_EQ(tv_wait_used(d, 3, NULL, NULL), 0);
		CHECK_EQ(*gp(STATUS_GPA, 1), S_NONE);
		/* writing DRIVER_OK again changes nothing */
		tv_wr(d, C_STATUS, 1, 1 | 2 | 4);
		CHECK_EQ(tv_status(d), 1 | 2 | VIRTIO_STATUS_NEEDS_RESET);
		CHECK_EQ(tv_wait_used(d, 3, NULL, NULL), 0);
	}
	/* a reset, then the proper sequence: the device works */
	tv_wr(d, C_STATUS, 1, 0);
	CHECK_EQ(tv_status(d), 0);
	CHECK_EQ(tv_drv_init(d, 0, QSIZE, RING_GPA), 0);
	EXPECT_STATUS(blk_req(d, T_IN, 0, DATA_GPA, 512, true, &ul), S_OK);
	CHECK_EQ(ul, 513);
	CHECK_EQ(tv_status(d), 0x0F);
	tv_wr(d, C_STATUS, 1, 0);
}

/* A reset with requests in flight completes them without touching the
 * (reset) rings; a state save meanwhile is refused. */
/* Post one 64 KiB read and run one loop round: the request is submitted and
 * (usually) not yet reaped. Returns true when it is still in flight. */
static bool post_inflight_read(struct tv_drv *d)
{
	CHECK_EQ(tv_drv_init(d, 0, QSIZE, RING_GPA), 0);
	tv_put32(gp(HDR_GPA, 4), T_IN);
	tv_put64(gp(HDR_GPA + 8, 8), 0);
	tv_desc(d, 0, HDR_GPA, 16, F_NEXT, 1);
	tv_desc(d, 1, DATA_GPA, 65536, F_WRITE | F_NEXT, 2);
	tv_desc(d, 2, STATUS_GPA, 1, F_WRITE, 0);
	*gp(STATUS_GPA, 1) = S_NONE;
	tv_post(d, 0);
	/* one loop round runs the kick: the request is submitted, its completion
	 * (signalled after epoll_wait returned) is not reaped yet */
	vmm_loop_run_once(&vm->loop, 0);
	return tv_used_idx(d) == 0;
}

static void test_reset_inflight(struct tv_drv *d)
{
	struct vmm_device *dev = tv_find_dev(vm, "virtio-blk", 0);
	struct ut_buf rec = UT_BUF_INIT;

	/* a reset with a request in flight completes it without touching the rings */
	if (post_inflight_read(d)) {
		tv_wr(d, C_STATUS, 1, 0);
		CHECK_EQ(*gp(STATUS_GPA, 1), S_OK);   /* completed by the reset's drain */
		CHECK_EQ(tv_used_idx(d), 0);           /* but not pushed to the old ring */
	} else {
		printf("note: the request completed before the reset; in-flight reset not exercised\n");
	}
	for (int i = 0; i < 5; i++)
		vmm_loop_run_once(&vm->loop, 10);
	CHECK_EQ(tv_used_idx(d), 0);
	/* a save with a request in flight finishes it first: the used entry is
	 * in the ring before the queue's indices are recorded */
	if (post_inflight_read(d)) {
		struct ut_err err = { 0 };

		CHECK_EQ(dev->ops->save(dev, &rec), 0);
		CHECK_EQ(*gp(STATUS_GPA, 1), S_OK);
		CHECK_EQ(tv_used_idx(d), 1);
		/* reset, restore that record: the request is neither run nor
		 * completed again, and the queue goes on from there */
		dev->ops->reset(dev);
		*gp(STATUS_GPA, 1) = S_NONE;
		CHECK(dev->ops->restore(dev, rec.data, rec.len, &err) == 0, "restore: %s", err.msg);
		for (int i = 0; i < 5; i++)
			vmm_loop_run_once(&vm->loop, 10);
		CHECK_EQ(tv_used_idx(d), 1);
		CHECK_EQ(*gp(STATUS_GPA, 1), S_NONE);
		d->used_seen = 1;
		EXPECT_STATUS(blk_req(d, T_IN, 0, DATA_GPA, 512, true, NULL), S_OK);
		CHECK_EQ(tv_used_idx(d), 2);
	} else {
		printf("note: the request completed before the save; in-flight save not exercised\n");
	}
	CHECK_EQ(tv_drv_init(d, 0, QSIZE, RING_GPA), 0);
	EXPECT_STATUS(blk_req(d, T_IN, 0, DATA_GPA, 512, true, NULL), S_OK);
	ut_buf_release(&rec);
}

/* Rings the driver places outside RAM: enabling fails, NEEDS_RESET. */
static void test_bad_ring(struct tv_drv *d)
{
	tv_drv_negotiate(d, 1ull << 32);
	tv_wr(d, C_QSEL, 2, 0);
	tv_wr(d, C_QSIZE, 2, 16);
	tv_wr(d, C_QDESC, 4, RAM_SIZE - 128);
	tv_wr(d, C_QAVAIL, 4, 0x1000);
	tv_wr(d, C_QUSED, 4, 0x2000);
	tv_wr(d, C_QENABLE, 2, 1);
	CHECK_EQ(tv_rd(d, C_QENABLE, 2), 0);
	CHECK(tv_status(d) & VIRTIO_STATUS_NEEDS_RESET, "bad ring accepted (status 0x%x)", tv_status(d));
	/* queue size not a power of two */
	tv_drv_negotiate(d, 1ull << 32);
	CHECK_EQ(tv_status(d) & VIRTIO_STATUS_NEEDS_RESET, 0);
	tv_wr(d, C_QSIZE, 2, 24);
	tv_wr(d, C_QDESC, 4, RING_GPA);
	tv_wr(d, C_QENABLE, 2, 1);
	CHECK_EQ(tv_rd(d, C_QENABLE, 2), 0);
	CHECK(tv_status(d) & VIRTIO_STATUS_NEEDS_RESET, "queue size 24 accepted");
	/* a queue number that does not exist is ignored */
	tv_drv_negotiate(d, 1ull << 32);
	tv_wr(d, C_QSEL, 2, 7);
	tv_wr(d, C_QENABLE, 2, 1);
	CHECK_EQ(tv_rd(d, C_QENABLE, 2), 0);
	CHECK_EQ(tv_rd(d, C_QSIZE, 2), 0);
	tv_wr(d, C_STATUS, 1, 0);
}

static void test_readonly(const char *path)
{
	struct tv_drv d;
	uint8_t file[512];

	open_blk(&d, 1);
	CHECK(tv_dev_features(&d) & (1ull << BLK_F_RO), "ro=on device does not offer VIRTIO_BLK_F_RO");
	CHECK_EQ(tv_drv_init(&d, 1ull << BLK_F_RO, QSIZE, RING_GPA + 0x8000), 0);
	memset(gp(DATA_GPA, 512), 0x42, 512);
	EXPECT_STATUS(blk_req(&d, T_OUT, 0, DATA_GPA, 512, false, NULL), S_IOERR);
	EXPECT_STATUS(blk_range_req(&d, T_WRITE_ZEROES, 0, 1, 0), S_IOERR);
	EXPECT_STATUS(blk_range_req(&d, T_DISCARD, 0, 1, 0), S_IOERR);
	EXPECT_STATUS(blk_req(&d, T_IN, 0, DATA_GPA, 512, true, NULL), S_OK);
	CHECK(all_bytes(gp(DATA_GPA, 512), 512, 0x33), "ro disk content wrong");
	EXPECT_STATUS(blk_req(&d, T_FLUSH, 0, 0, 0, false, NULL), S_OK);
	file_read(path, file, sizeof(file), 0);
	CHECK(all_bytes(file, 512, 0x33), "ro disk file changed");
	tv_wr(&d, C_STATUS, 1, 0);
}

static void test_interrupts(struct tv_drv *d)
{
	unsigned msix = 0x40;   /* first capability */

	CHECK_EQ(tv_drv_init(d, 0, QSIZE, RING_GPA), 0);
	tv_rd(d, TV_ISR, 1);
	EXPECT_STATUS(blk_req(d, T_FLUSH, 0, 0, 0, false, NULL), S_OK);
	CHECK(tv_cfg_rd(vm, d->slot, PCI_STATUS, 2) & PCI_STATUS_INTX, "INTx status bit not set");
	CHECK_EQ(tv_rd(d, TV_ISR, 1), 1);
	CHECK_EQ(tv_cfg_rd(vm, d->slot, PCI_STATUS, 2) & PCI_STATUS_INTX, 0);

	/* MSI-X on, vector 0 for the queue, still masked: pending bit */
	CHECK_EQ(tv_cfg_rd(vm, d->slot, msix, 1), 0x11);
	tv_cfg_wr(vm, d->slot, msix + 2, 2, 0x8000);
	tv_wr(d, C_QSEL, 2, 0);
	tv_wr(d, C_QMSIX, 2, 0);
	CHECK_EQ(tv_rd(d, C_QMSIX, 2), 0);
	tv_wr(d, 0x4000 + 0, 4, 0xFEE00000);
	tv_wr(d, 0x4000 + 8, 4, 0x41);
	EXPECT_STATUS(blk_req(d, T_FLUSH, 0, 0, 0, false, NULL), S_OK);
	CHECK_EQ(tv_rd(d, TV_ISR, 1), 0);
	CHECK_EQ(tv_rd(d, 0x5000, 8) & 1, 1);
	CHECK_EQ(tv_rd(d, 0x4000 + 8, 4), 0x41);
	/* unmask: delivered (the irqfd cannot be set up without KVM; no crash) */
	tv_wr(d, 0x4000 + 12, 4, 0);
	CHECK_EQ(tv_rd(d, 0x5000, 8) & 1, 0);
	EXPECT_STATUS(blk_req(d, T_FLUSH, 0, 0, 0, false, NULL), S_OK);
	/* hostile vector numbers are ignored */
	tv_wr(d, C_QMSIX, 2, 0x1234);
	tv_wr(d, C_MSIX, 2, 0xFFFE);
	EXPECT_STATUS(blk_req(d, T_FLUSH, 0, 0, 0, false, NULL), S_OK);
	/* odd MSI-X table accesses */
	CHECK_EQ(tv_rd(d, 0x4000 + 16 * 2, 4), 0);     /* beyond the 2 vectors */
	CHECK_EQ(tv_rd(d, 0x4000 + 1, 4), 0);          /* misaligned */
	tv_wr(d, 0x4000 + 12, 8, ~0ull);               /* 8 bytes at the last dword */
	tv_cfg_wr(vm, d->slot, msix + 2, 2, 0);
	tv_wr(d, C_STATUS, 1, 0);
}

/* The guest moves BAR0: the device answers at the new address only. */
static void test_bar_move(struct tv_drv *d)
{
	uint64_t old = d->bar, new = VMM_PCI_MMIO_START + 0x1000000;

	tv_cfg_wr(vm, d->slot, PCI_BAR0, 4, 0xFFFFFFFF);
	CHECK_EQ(tv_cfg_rd(vm, d->slot, PCI_BAR0, 4), 0xFFFF8000);   /* 32 KiB */
	tv_cfg_wr(vm, d->slot, PCI_BAR0, 4, (uint32_t)new);
	d->bar = new;
	CHECK_EQ(tv_io_rd(&vm->mmio, old + C_NUMQ, 2), 0xFFFF);
	CHECK_EQ(tv_rd(d, C_NUMQ, 2), 1);
	CHECK_EQ(tv_drv_init(d, 0, QSIZE, RING_GPA), 0);
	EXPECT_STATUS(blk_req(d, T_IN, 0, DATA_GPA, 512, true, NULL), S_OK);
	/* memory decoding off: gone */
	tv_cfg_wr(vm, d->slot, PCI_COMMAND, 2, 0);
	CHECK_EQ(tv_rd(d, C_NUMQ, 2), 0xFFFF);
	tv_cfg_wr(vm, d->slot, PCI_COMMAND, 2, PCI_CMD_MEM);
	tv_cfg_wr(vm, d->slot, PCI_BAR0, 4, (uint32_t)old);
	d->bar = old;
	CHECK_EQ(tv_rd(d, C_NUMQ, 2), 1);
	tv_wr(d, C_STATUS, 1, 0);
}

/* Every read of BAR0 or config space defines every byte it returns: the
 * same access into buffers pre-filled differently gives the same bytes. */
static void test_reads_defined(struct tv_drv *d)
{
	int bad = 0;

	for (uint32_t off = 0; off < 0x8000; off++)
		for (uint32_t len = 1; len <= 8; len *= 2) {
			uint8_t a[8], b[8];

			memset(a, 0xAB, sizeof(a));
			memset(b, 0xCD, sizeof(b));
			vmm_bus_access(&vm->mmio, d->bar + off, a, len, false);
			vmm_bus_access(&vm->mmio, d->bar + off, b, len, false);
			if (memcmp(a, b, len) && bad++ < 8)
				CHECK(0, "BAR0 read at 0x%x len %u leaves bytes undefined", off, len);
		}
	for (uint32_t off = 0; off < 256; off++)
		for (uint32_t len = 1; len <= 4; len *= 2) {
			uint8_t a[4], b[4];

			memset(a, 0xAB, sizeof(a));
			memset(b, 0xCD, sizeof(b));
			tv_io_wr(&vm->pio, VMM_PORT_PCI_ADDR, 4, 0x80000000u | (unsigned)d->slot << 11 | (off & 0xFC));
			vmm_bus_access(&vm->pio, VMM_PORT_PCI_DATA + (off & 3), a, len, false);
			vmm_bus_access(&vm->pio, VMM_PORT_PCI_DATA + (off & 3), b, len, false);
			if (memcmp(a, b, len) && bad++ < 8)
				CHECK(0, "config read at 0x%x len %u leaves bytes undefined", off, len);
		}
}

/* The PCI configuration access capability reaches BAR0 too. */
static void test_pcicfg_cap(struct tv_drv *d)
{
	const unsigned cap = 0x90;

	CHECK_EQ(tv_cfg_rd(vm, d->slot, cap + 3, 1), 5);
	tv_wr(d, C_STATUS, 1, 0);
	tv_cfg_wr(vm, d->slot, cap + 4, 1, 0);            /* BAR0 */
	tv_cfg_wr(vm, d->slot, cap + 8, 4, C_STATUS);     /* offset */
	tv_cfg_wr(vm, d->slot, cap + 12, 4, 1);           /* length */
	tv_cfg_wr(vm, d->slot, cap + 16, 4, 1);           /* data: ACKNOWLEDGE */
	CHECK_EQ(tv_status(d), 1);
	/* an offset near 2^32 (offset + length wraps) does nothing */
	tv_cfg_wr(vm, d->slot, cap + 8, 4, 0xFFFFFFFE);
	tv_cfg_wr(vm, d->slot, cap + 12, 4, 4);
	tv_cfg_wr(vm, d->slot, cap + 16, 4, 0);
	CHECK_EQ(tv_status(d), 1);
	tv_wr(d, C_STATUS, 1, 0);
}

static void test_rng(void)
{
	struct tv_drv d;
	uint8_t *buf = gp(DATA_GPA, 4096);
	uint32_t ul = 0;

	if (tv_drv_open(&d, vm, 0x1040 + VIRTIO_ID_RNG, 0)) {
		CHECK(0, "virtio-rng not found on the PCI bus");
		return;
	}
	CHECK_EQ(tv_drv_init(&d, 0, 8, RING_GPA + 0xC000), 0);
	memset(buf, 0, 4096);
	tv_desc(&d, 0, DATA_GPA, 64, F_WRITE | F_NEXT, 1);
	tv_desc(&d, 1, DATA_GPA + 1000, 100, F_WRITE, 0);
	CHECK_EQ(run_chain(&d, &ul), 1);
	CHECK_EQ(ul, 164);
	CHECK(!all_bytes(buf, 64, 0) && !all_bytes(buf + 1000, 100, 0), "rng buffers still zero");
	CHECK(all_bytes(buf + 64, 1000 - 64, 0), "rng wrote outside its buffers");
	/* only readable buffers: nothing to fill */
	tv_desc(&d, 0, DATA_GPA + 2000, 64, 0, 0);
	CHECK_EQ(run_chain(&d, &ul), 1);
	CHECK_EQ(ul, 0);
	CHECK(all_bytes(buf + 2000, 64, 0), "rng wrote into a readable buffer");
	/* hostile: next out of range */
	tv_desc(&d, 0, DATA_GPA, 64, F_WRITE | F_NEXT, 8);
	CHECK(run_chain_ignored(&d), "rng: hostile chain completed");
	CHECK(tv_status(&d) & VIRTIO_STATUS_NEEDS_RESET, "rng: NEEDS_RESET not set");
	tv_wr(&d, C_STATUS, 1, 0);
	CHECK_EQ(tv_drv_init(&d, 0, 8, RING_GPA + 0xC000), 0);
	tv_desc(&d, 0, DATA_GPA, 16, F_WRITE, 0);
	CHECK_EQ(run_chain(&d, &ul), 1);
	CHECK_EQ(ul, 16);
	tv_wr(&d, C_STATUS, 1, 0);
}

/* Random accesses all over BAR0 and config space, with rings in RAM full of
 * random bytes: the VMM must neither crash nor touch memory outside RAM. */
static void test_fuzz(struct tv_drv *d)
{
	static const uint32_t lens[] = { 1, 2, 4, 8 };
	uint32_t seed = 12345;
	uint8_t *r = gp(0x100000, 0x100000);

	for (size_t i = 0; i < 0x100000; i++) {
		seed = seed * 1103515245u + 12345u;
		r[i] = (uint8_t)(seed >> 16);
	}
	for (int i = 0; i < 30000; i++) {
		uint32_t len, off;
		uint64_t v;

		seed = seed * 1103515245u + 12345u;
		len = lens[(seed >> 8) & 3];
		seed = seed * 1103515245u + 12345u;
		off = (seed >> 4) & 0x7FFF;
		if ((seed & 7) < 5)
			off &= 0x3F;                   /* mostly common config */
		else if ((seed & 7) == 5)
			off = 0x3000 + (off & 3);
		seed = seed * 1103515245u + 12345u;
		v = seed >> 3;
		if ((v & 3) == 0)
			v = 0x100000 + (v & 0xFFFF0);   /* a plausible ring address */
		else if ((v & 3) == 1)
			v &= 0xFF;
		if (off == C_STATUS && (v & 0x40))
			v = 0;                           /* sometimes a reset */
		if (seed & 0x100)
			tv_wr(d, off, len, v);
		else
			tv_rd(d, off, len);
		if (((seed >> 9) & 63) == 0) {
			/* config space: anything but BAR0 and the command register */
			uint32_t c = (seed >> 12) & 0xFC;

			if (c != PCI_BAR0 && c != PCI_COMMAND)
				tv_cfg_wr(vm, d->slot, c, 4, (uint32_t)v);
		}
		if ((i & 255) == 0)
			vmm_loop_run_once(&vm->loop, 0);
	}
	for (int i = 0; i < 20; i++)
		vmm_loop_run_once(&vm->loop, 10);
	/* the device still works after a reset */
	tv_cfg_wr(vm, d->slot, 0x40 + 2, 2, 0);      /* MSI-X off */
	tv_cfg_wr(vm, d->slot, PCI_COMMAND, 2, PCI_CMD_MEM);
	tv_wr(d, C_STATUS, 1, 0);
	CHECK_EQ(tv_drv_init(d, 0, QSIZE, RING_GPA), 0);
	EXPECT_STATUS(blk_req(d, T_FLUSH, 0, 0, 0, false, NULL), S_OK);
}

/* Fill the PCI bus: the next virtio device is refused cleanly (no fd, no
 * memory, no bus range left behind: ASan's leak check and the MMIO bus).
 * @disk must not be open in another device (its image lock would refuse it
 * before the bus is looked at). */
static void test_bus_full(const char *disk)
{
	struct ut_err err = { 0 };
	char opts[600];
	int n = 0, ndevs, nmmio, nfds;

	while (n < 40 && vmm_device_create(vm, "virtio-rng", "", &err) == 0)
		n++;
	CHECK_EQ(n, VMM_PCI_SLOTS - 1 - 8);   /* host bridge; 7 disks and an rng */
	CHECK_STR(err.msg, "no free PCI slot");
	ndevs = vm->ndevs;
	nmmio = vm->mmio.nr;
	nfds = tf_nfds();
	snprintf(opts, sizeof(opts), "path=%s", disk);
	CHECK(vmm_device_create(vm, "virtio-blk", opts, &err) == -ENOSPC, "virtio-blk on a full bus: %s",
	      err.msg);
	CHECK_EQ(vm->ndevs, ndevs);
	CHECK_EQ(vm->mmio.nr, nmmio);
	CHECK_EQ(tf_nfds(), nfds);
	CHECK(vmm_device_create(vm, "virtio-rng", "", &err) == -ENOSPC, "virtio-rng on a full bus");
	CHECK_EQ(tf_nfds(), nfds);
	/* the last one added works */
	{
		struct tv_drv d;
		uint32_t ul = 0;

		CHECK_EQ(tv_drv_open(&d, vm, 0x1044, n), 0);
		CHECK_EQ(tv_drv_init(&d, 0, 4, RING_GPA), 0);
		tv_desc(&d, 0, DATA_GPA, 8, F_WRITE, 0);
		CHECK_EQ(run_chain(&d, &ul), 1);
		CHECK_EQ(ul, 8);
	}
}

int main(void)
{
	struct ut_err err = { 0 };
	struct tvb_files f;
	struct tv_drv d;

	tvb_setup(&f);
	CHECK(vmm_device_create(vm, "virtio-blk", "path=x,werror=ignore", &err) == -EINVAL,
	      "werror=ignore accepted");
	CHECK_STR(err.msg, "werror=ignore (expected enospc, stop or report)");
	CHECK(vmm_device_create(vm, "virtio-blk", "path=x,rerror=enospc", &err) == -EINVAL,
	      "rerror=enospc accepted");
	CHECK_STR(err.msg, "rerror=enospc (expected report or stop)");
	CHECK(vmm_device_create(vm, "virtio-blk", "path=/nonexistent/x.img", &err) < 0,
	      "virtio-blk on a missing file created");
	CHECK(vmm_device_create(vm, "virtio-blk", "path=x,bogus=1", &err) == -EINVAL,
	      "unknown option accepted");
	CHECK_STR(err.msg, "bogus");

	open_blk(&d, 0);
	test_pci_layout(&d);
	test_features(&d);
	test_rw(&d, f.disk);
	test_batch(&d, f.disk);
	test_bad_requests(&d);
	test_get_id(&d);
	test_zeroing(&d, f.disk);
	test_writethrough(&d, f.disk);
	test_hostile_and_reset(&d);
	test_driver_ok_without_features(&d);
	test_bad_ring(&d);
	test_reset_inflight(&d);
	test_readonly(f.rodisk);
	test_dz_limits();
	test_interrupts(&d);
	test_bar_move(&d);
	test_pcicfg_cap(&d);
	test_reads_defined(&d);
	test_rng();
	test_fuzz(&d);
	test_bus_full(f.spare);

	tv_vm_exit(&tvm);
	tv_cleanup();
	return tv_finish("test-virtio-blk");
}
