/* tests/unit/test-virtio-blk.h — shared by test-virtio-blk.c and
 * test-virtio-blk-errors.c: a struct vmm_vm built by hand
 * (tests/unit/test-vm-util.h) with the same devices in the same order, and
 * a guest-driver-like way to post virtio-blk requests on queue 0.
 *
 * The virtio-blk devices tvb_setup makes, by index (tv_find_dev, open_blk):
 * 0 disk.img (1 MiB), 1 ro.img (64 KiB, ro=on), 2 big.img (4 GiB sparse,
 * a serial), 3 werr.img (4 MiB, werror=stop), 4 and 5 wt.img and wt2.img
 * (64 KiB, werror=stop, aio=threads), 6 a 64 KiB disk whose name has a C1
 * control and 110 'é' (werror=stop); and a virtio-rng after disk 2.
 */
#ifndef TEST_VIRTIO_BLK_H
#define TEST_VIRTIO_BLK_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <linux/magic.h>

#include "core/device.h"
#include "core/virtio/virtio.h"
#include "tests/unit/test-vm-util.h"

#define RAM_SIZE   (4u << 20)
#define RING_GPA   0x10000ull
#define HDR_GPA    0x20000ull
#define STATUS_GPA 0x21000ull
#define DATA_GPA   0x40000ull
#define DATA2_GPA  0x80000ull
#define DISK_SIZE  (1u << 20)
#define QSIZE      16

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_DISCARD 11
#define T_WRITE_ZEROES 13
#define S_OK 0
#define S_IOERR 1
#define S_UNSUPP 2
#define S_NONE 0xEE        /* what we put in the status byte before a request */

#define F_NEXT 1
#define F_WRITE 2

#define BLK_F_RO 5
#define BLK_F_FLUSH 9

static struct tv_vm tvm;
static struct vmm_vm *vm = &tvm.vm;

static uint8_t *gp(uint64_t a, uint64_t len)
{
	return tv_gpa(&vm->mem, a, len);
}

/* Post the chain at descriptor 0 and wait for its used entry. Returns 1 if
 * it completed (used length in *len), 0 if the used ring did not move. */
static inline int run_chain(struct tv_drv *d, uint32_t *len)
{
	uint32_t head = 0xFFFF;
	int got;

	tv_post(d, 0);
	got = tv_wait_used(d, 20, &head, len);
	if (got && head != 0) {
		tv_failures++;
		fprintf(stderr, "FAIL: used head %u, expected 0\n", head);
	}
	return got;
}

/* Post the chain at descriptor 0; expect the device to leave it alone. */
static inline int run_chain_ignored(struct tv_drv *d)
{
	tv_post(d, 0);
	return tv_wait_used(d, 3, NULL, NULL) == 0;
}

/* Lay out one request at descriptor 0: header, optional data buffer
 * (@dev_writes: device-writable), one status byte (S_NONE). */
static inline void blk_req_setup(struct tv_drv *d, uint32_t type, uint64_t sector, uint64_t data,
			  uint32_t len, bool dev_writes)
{
	uint8_t *hdr = gp(HDR_GPA, 16), *st = gp(STATUS_GPA, 1);

	tv_put32(hdr, type);
	tv_put32(hdr + 4, 0);
	tv_put64(hdr + 8, sector);
	*st = S_NONE;
	if (len) {
		tv_desc(d, 0, HDR_GPA, 16, F_NEXT, 1);
		tv_desc(d, 1, data, len, F_NEXT | (dev_writes ? F_WRITE : 0), 2);
	} else {
		tv_desc(d, 0, HDR_GPA, 16, F_NEXT, 2);
	}
	tv_desc(d, 2, STATUS_GPA, 1, F_WRITE, 0);
}

/* One request (blk_req_setup). Returns the status byte, or -1 if no
 * completion. */
static inline int blk_req(struct tv_drv *d, uint32_t type, uint64_t sector, uint64_t data, uint32_t len,
		   bool dev_writes, uint32_t *used_len)
{
	uint8_t *st = gp(STATUS_GPA, 1);
	uint32_t ul = 0;

	blk_req_setup(d, type, sector, data, len, dev_writes);
	if (!run_chain(d, &ul))
		return -1;
	if (used_len)
		*used_len = ul;
	return *st;
}

#define EXPECT_STATUS(expr, want) do {                                           \
	int _s = (expr);                                                         \
	CHECK(_s == (want), "request status: expected %d, got %d%s", (want), _s, \
	      _s < 0 ? " (no completion)" : "");                                \
} while (0)

/* discard / write-zeroes segment in the readable data buffer */
static inline int blk_range_req(struct tv_drv *d, uint32_t type, uint64_t sector, uint32_t num,
			 uint32_t flags)
{
	uint8_t *seg = gp(DATA2_GPA, 16);

	tv_put64(seg, sector);
	tv_put32(seg + 8, num);
	tv_put32(seg + 12, flags);
	return blk_req(d, type, 0, DATA2_GPA, 16, false, NULL);
}

static inline void file_read(const char *path, void *buf, size_t len, off_t off)
{
	int fd = open(path, O_RDONLY);

	if (fd < 0 || pread(fd, buf, len, off) != (ssize_t)len)
		tv_die(path);
	close(fd);
}

static inline bool all_bytes(const uint8_t *p, size_t len, uint8_t v)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != v)
			return false;
	return true;
}

static inline void open_blk(struct tv_drv *d, int nth)
{
	if (tv_drv_open(d, vm, 0x1040 + VIRTIO_ID_BLOCK, nth)) {
		fprintf(stderr, "virtio-blk #%d not found on the PCI bus\n", nth);
		exit(1);
	}
}


struct tvb_files {
	const char *disk, *rodisk, *spare, *big, *werr, *wt, *wt2, *utfdisk;
};

static inline void tvb_create(const char *opts)
{
	struct ut_err err = { 0 };

	if (vmm_device_create(vm, "virtio-blk", opts, &err)) {
		fprintf(stderr, "virtio-blk %s: %s\n", opts, err.msg);
		exit(1);
	}
}

/* Build the VM and its devices (dies on failure); their files in @f. */
static inline void tvb_setup(struct tvb_files *f)
{
	struct ut_err err = { 0 };
	char utf[256], opts[600];
	size_t o;

	f->disk = tv_file("disk.img", DISK_SIZE, 0x11);
	f->rodisk = tv_file("ro.img", 64 << 10, 0x33);
	f->spare = tv_file("spare.img", 64 << 10, 0x44);
	f->big = tv_file("big.img", 4096, 0x55);
	f->werr = tv_file("werr.img", 4 << 20, 0x00);
	f->wt = tv_file("wt.img", 64 << 10, 0x00);
	f->wt2 = tv_file("wt2.img", 64 << 10, 0xc3);
	/* an encoded C1 control and 110 'é' in its name (test_why_text) */
	o = (size_t)snprintf(utf, sizeof(utf), "\xc2\x9bx");
	for (int i = 0; i < 110; i++) {
		utf[o++] = (char)0xc3;
		utf[o++] = (char)0xa9;
	}
	snprintf(utf + o, sizeof(utf) - o, ".img");
	f->utfdisk = tv_file(utf, 64 << 10, 0x00);
	if (truncate(f->big, 4ll << 30) < 0)
		tv_die(f->big);

	tv_vm_init(&tvm, RAM_SIZE);
	snprintf(opts, sizeof(opts), "path=%s", f->disk);
	tvb_create(opts);
	snprintf(opts, sizeof(opts), "path=%s,ro=on", f->rodisk);
	tvb_create(opts);
	snprintf(opts, sizeof(opts), "path=%s,serial=0123456789abcdefghijKL", f->big);
	tvb_create(opts);
	if (vmm_device_create(vm, "virtio-rng", "", &err)) {
		fprintf(stderr, "virtio-rng: %s\n", err.msg);
		exit(1);
	}
	snprintf(opts, sizeof(opts), "path=%s,werror=stop", f->werr);
	tvb_create(opts);
	/* flushing through fdatasync (test_wt_flush_parked) */
	for (int i = 0; i < 2; i++) {
		snprintf(opts, sizeof(opts), "path=%s,werror=stop,aio=threads", i ? f->wt2 : f->wt);
		tvb_create(opts);
	}
	snprintf(opts, sizeof(opts), "path=%s,werror=stop", f->utfdisk);
	tvb_create(opts);
}

#endif
