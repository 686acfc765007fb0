/* tests/fuzz/devstate-body.h — the body of the device-state fuzz target
 * (tests/fuzz/fuzz-devstate.c) and of the test that replays its saved
 * inputs without libFuzzer (tests/unit/test-devstate-fuzz-regress.c).
 *
 * Every input gets a VM of its own, built without KVM the way the device
 * unit tests build one (tests/unit/test-vm-util.h: guarded guest RAM, real
 * event loop, PCI host): serial, i8042, debug-exit, virtio-blk on a small
 * raw disk file (made once per process) and virtio-rng. Guest RAM starts
 * with a fixed layout (rings at RING_GPA/RING2_GPA; blk chains: a flush, a
 * read and a write at heads 0..2, GET_ID at 8, DISCARD at 11, WRITE_ZEROES
 * at 14; an rng buffer at head 0) so restored queues find chains.
 *
 * The input is a sequence of steps, each: u8 op, le16 length, that many
 * bytes (cut at the end of the input):
 *   op % 8 = 0..4  restore device op%8 (serial, i8042, debug-exit,
 *                  virtio-blk, virtio-rng) from the bytes: the record as a
 *                  state file (or a migration stream) would hand it over;
 *                  after a successful restore the device is saved again,
 *                  that record restored and saved once more (both records
 *                  must be equal: a restored state saves as it was read),
 *                  and the event loop runs a few rounds (the kick the
 *                  restore posts, a parked request's retry);
 *   op % 8 = 5     guest RAM write: le32 offset (modulo RAM), then bytes;
 *   op % 8 = 6     guest accesses, 8 bytes each: u8 target (bit 0-1: blk
 *                  BAR0, rng BAR0, COM1 ports, PCI config of blk; bit 7:
 *                  write), u8 size (1, 2, 4 by value % 3), le16 offset,
 *                  le32 value; reads and writes go through the buses as a
 *                  vCPU's would (at most 64 per step);
 *   op % 8 = 7     device (op >> 3) % 5: reset when the first byte is odd
 *                  (a legacy device must then save as it did when created),
 *                  else (virtio) post the following bytes as chain heads
 *                  (at most 8) in the avail ring the restored queue state
 *                  points to and kick; then run the loop.
 * At the end the VM is torn down (every device's exit: fds closed, memory
 * freed); the process must have as many fds open as before the input. Anything but a clean error is a bug; the round-trip check aborts.
 */
#ifndef DEVSTATE_BODY_H
#define DEVSTATE_BODY_H

#include "core/device.h"
#include "core/virtio/virtio.h"
#include "tests/unit/test-fds.h"
#include "tests/unit/test-vm-util.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DS_RAM_SIZE  (4u << 20)
#define DS_RING_GPA  0x10000ull
#define DS_RING2_GPA 0x18000ull
#define DS_HDR_GPA   0x20000ull
#define DS_STAT_GPA  0x21000ull
#define DS_DATA_GPA  0x40000ull
#define DS_QSIZE     16
#define DS_NDEV      5
#define DS_LOOP_ROUNDS 20

static const char *const ds_types[DS_NDEV] = {
	"serial", "i8042", "debug-exit", "virtio-blk", "virtio-rng",
};

static char ds_disk[256];
static int ds_verbose;   /* each restore's result on stderr */

/* The disk file: 1 MiB raw, made once per process, removed at exit. */
static void ds_disk_remove(void)
{
	if (ds_disk[0])
		unlink(ds_disk);
	ds_disk[0] = '\0';
}

static const char *ds_disk_path(void)
{
	if (!ds_disk[0]) {
		int fd;

		snprintf(ds_disk, sizeof(ds_disk), "/tmp/cowvm-fuzz-devstate-%d.img", (int)getpid());
		fd = open(ds_disk, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, 1u << 20) < 0) {
			perror(ds_disk);
			exit(1);
		}
		close(fd);
		atexit(ds_disk_remove);
	}
	return ds_disk;
}

/* Fixed guest RAM contents: the rings of blk (16 entries at RING_GPA, the
 * layout tv_drv_queue uses) and rng (at RING2_GPA); blk heads 0..2: a flush,
 * a 512-byte read of sector 1, a 512-byte write of sector 2; rng head 0: a
 * 64-byte buffer. The avail rings are left empty. */
static void ds_ram_layout(struct vmm_vm *vm)
{
	uint8_t *d = tv_gpa(&vm->mem, DS_RING_GPA, 16 * 3);
	uint8_t *h = tv_gpa(&vm->mem, DS_HDR_GPA, 48);

	tv_put32(h, 4);                /* VIRTIO_BLK_T_FLUSH */
	tv_put32(h + 16, 0);           /* IN, sector 1 */
	tv_put64(h + 24, 1);
	tv_put32(h + 32, 1);           /* OUT, sector 2 */
	tv_put64(h + 40, 2);
	/* 0: flush = hdr, status; 1: read = hdr, data, status; 2: write */
	tv_put64(d, DS_HDR_GPA);      tv_put32(d + 8, 16);  tv_put16(d + 12, 1); tv_put16(d + 14, 3);
	tv_put64(d + 16, DS_HDR_GPA + 16); tv_put32(d + 24, 16); tv_put16(d + 28, 1); tv_put16(d + 30, 4);
	tv_put64(d + 32, DS_HDR_GPA + 32); tv_put32(d + 40, 16); tv_put16(d + 44, 1); tv_put16(d + 46, 6);
	d = tv_gpa(&vm->mem, DS_RING_GPA + 48, 16 * 5);
	tv_put64(d, DS_STAT_GPA);     tv_put32(d + 8, 1);   tv_put16(d + 12, 2); tv_put16(d + 14, 0);
	tv_put64(d + 16, DS_DATA_GPA); tv_put32(d + 24, 512); tv_put16(d + 28, 3); tv_put16(d + 30, 5);
	tv_put64(d + 32, DS_STAT_GPA + 1); tv_put32(d + 40, 1); tv_put16(d + 44, 2); tv_put16(d + 46, 0);
	tv_put64(d + 48, DS_DATA_GPA + 512); tv_put32(d + 56, 512); tv_put16(d + 60, 1); tv_put16(d + 62, 7);
	tv_put64(d + 64, DS_STAT_GPA + 2); tv_put32(d + 72, 1); tv_put16(d + 76, 2); tv_put16(d + 78, 0);
	/* 8: GET_ID = hdr, 20 bytes, status; 11: DISCARD = hdr, one segment
	 * (sectors 0..7), status; 14: WRITE_ZEROES = hdr, one segment
	 * (sectors 16..23), then the write's status descriptor 7 */
	tv_put32(h + 48, 8);
	tv_put32(h + 64, 11);
	tv_put32(h + 80, 13);
	d = tv_gpa(&vm->mem, DS_RING_GPA + 8 * 16, 16 * 8);
	tv_put64(d, DS_HDR_GPA + 48); tv_put32(d + 8, 16); tv_put16(d + 12, 1); tv_put16(d + 14, 9);
	tv_put64(d + 16, DS_DATA_GPA + 1024); tv_put32(d + 24, 20); tv_put16(d + 28, 3); tv_put16(d + 30, 10);
	tv_put64(d + 32, DS_STAT_GPA + 3); tv_put32(d + 40, 1); tv_put16(d + 44, 2);
	tv_put64(d + 48, DS_HDR_GPA + 64); tv_put32(d + 56, 16); tv_put16(d + 60, 1); tv_put16(d + 62, 12);
	tv_put64(d + 64, DS_DATA_GPA + 2048); tv_put32(d + 72, 16); tv_put16(d + 76, 1); tv_put16(d + 78, 13);
	tv_put64(d + 80, DS_STAT_GPA + 4); tv_put32(d + 88, 1); tv_put16(d + 92, 2);
	tv_put64(d + 96, DS_HDR_GPA + 80); tv_put32(d + 104, 16); tv_put16(d + 108, 1); tv_put16(d + 110, 15);
	tv_put64(d + 112, DS_DATA_GPA + 2064); tv_put32(d + 120, 16); tv_put16(d + 124, 1); tv_put16(d + 126, 7);
	tv_put64(tv_gpa(&vm->mem, DS_DATA_GPA + 2048, 8), 0);
	tv_put32(tv_gpa(&vm->mem, DS_DATA_GPA + 2056, 4), 8);
	tv_put64(tv_gpa(&vm->mem, DS_DATA_GPA + 2064, 8), 16);
	tv_put32(tv_gpa(&vm->mem, DS_DATA_GPA + 2072, 4), 8);
	d = tv_gpa(&vm->mem, DS_RING2_GPA, 16);
	tv_put64(d, DS_DATA_GPA + 4096); tv_put32(d + 8, 64); tv_put16(d + 12, 2);
}

static void ds_check_fds(const char *who, int before)
{
	int after = tf_nfds();

	if (before >= 0 && after != before) {
		fprintf(stderr, "%s: %d file descriptors open before the input, %d after\n",
			who, before, after);
		abort();
	}
}

/* Host messages are formatted (a restored error text goes into them) and
 * dropped (shown with COWVM_FUZZ_VERBOSE). */
static void ds_event(void *opaque, const char *msg)
{
	(void)opaque;
	if (ds_verbose)
		fprintf(stderr, "fuzz-devstate: event: %s\n", msg);
}

/* Build the VM and its devices. Returns 0, or -1 (setup failed: the input
 * is not run). */
static int ds_vm_build(struct tv_vm *t)
{
	struct ut_err err = { 0 };
	char opts[320];

	tv_vm_init(t, DS_RAM_SIZE);
	snprintf(opts, sizeof(opts), "path=%s", ds_disk_path());
	if (vmm_device_create(&t->vm, "serial", "console=none", &err) ||
	    vmm_device_create(&t->vm, "i8042", "", &err) ||
	    vmm_device_create(&t->vm, "debug-exit", "", &err) ||
	    vmm_device_create(&t->vm, "virtio-blk", opts, &err) ||
	    vmm_device_create(&t->vm, "virtio-rng", "", &err)) {
		fprintf(stderr, "fuzz-devstate: device: %s\n", err.msg);
		tv_vm_exit(t);
		return -1;
	}
	t->vm.on_event = ds_event;
	ds_ram_layout(&t->vm);
	return 0;
}

/* Whether a virtio queue of @vm holds chains not yet used (requests on
 * the disk, parked ones). */
static bool ds_busy(struct vmm_vm *vm)
{
	for (int i = 0; i < vm->ndevs; i++) {
		struct vmm_device *d = vm->devs[i];

		if (strncmp(d->ops->type, "virtio-", 7))
			continue;
		for (int q = 0; q < ((struct vmm_virtio_dev *)d)->nvqs; q++)
			if (((struct vmm_virtio_dev *)d)->vqs[q].inuse)
				return true;
	}
	return false;
}

/* Run the loop: what is ready now, then rounds of up to 5 ms while
 * something happens or a request is outstanding (disk I/O takes a few ms
 * on a loaded host), at most DS_LOOP_ROUNDS. */
static void ds_run_loop(struct vmm_vm *vm)
{
	for (int i = 0; i < DS_LOOP_ROUNDS; i++)
		if (vmm_loop_run_once(&vm->loop, i ? 5 : 0) <= 0 && i && !ds_busy(vm))
			break;
}

/* The restored state must save as it was restored: save (A), restore A,
 * save (B), A == B. A save may refuse (-EBUSY: requests the drain could not
 * finish); a restore of A may refuse only with -EBUSY (virtio-blk holds
 * parked requests: restoring into them is refused by design). */
static void ds_roundtrip(struct vmm_device *d)
{
	struct ut_buf a = UT_BUF_INIT, b = UT_BUF_INIT;
	struct ut_err err = { 0 };
	int r;

	if (d->ops->save(d, &a))
		goto out;
	r = d->ops->restore(d, a.data, a.len, &err);
	if (r == -EBUSY)
		goto out;
	if (r) {
		fprintf(stderr, "fuzz-devstate: %s: its own record refused: %d %s\n", d->id, r, err.msg);
		abort();
	}
	if (d->ops->save(d, &b))
		goto out;
	if (a.len != b.len || memcmp(a.data, b.data, a.len)) {
		fprintf(stderr, "fuzz-devstate: %s: record changed by restore+save (%zu vs %zu bytes)\n",
			d->id, a.len, b.len);
		abort();
	}
out:
	ut_buf_release(&a);
	ut_buf_release(&b);
}

/* A legacy device (serial, i8042, debug-exit) reset after whatever was
 * restored into it saves as it did when created: nothing restored outlives
 * a reset. (Virtio devices keep their PCI config space and MSI-X table
 * across a virtio reset, by the specs: not compared.) */
static void ds_check_reset(struct vmm_device *d, const struct ut_buf *fresh)
{
	struct ut_buf b = UT_BUF_INIT;

	if (!strncmp(d->ops->type, "virtio-", 7))
		return;
	if (d->ops->save(d, &b) == 0 &&
	    (b.len != fresh->len || memcmp(b.data, fresh->data, b.len))) {
		fprintf(stderr, "fuzz-devstate: %s: reset does not give the state it was created in\n",
			d->id);
		abort();
	}
	ut_buf_release(&b);
}

static void ds_access(struct vmm_vm *vm, const uint8_t *p, size_t len)
{
	int slot = tv_pci_find(vm, 0x1AF4, 0x1042, 0);
	int rslot = tv_pci_find(vm, 0x1AF4, 0x1044, 0);
	uint64_t bar = slot >= 0 ? tv_cfg_rd(vm, slot, PCI_BAR0, 4) & ~0xFull : 0;
	uint64_t rbar = rslot >= 0 ? tv_cfg_rd(vm, rslot, PCI_BAR0, 4) & ~0xFull : 0;

	for (size_t i = 0; i + 8 <= len && i < 64 * 8; i += 8) {
		static const uint32_t sizes[3] = { 1, 2, 4 };
		uint8_t tgt = p[i];
		bool wr = tgt & 0x80;
		uint32_t sz = sizes[p[i + 1] % 3];
		uint16_t off = tv_get16(p + i + 2);
		uint32_t v = tv_get32(p + i + 4);

		switch (tgt & 3) {
		case 0:
			if (wr)
				tv_io_wr(&vm->mmio, bar + (off & 0x7FFF), sz, v);
			else
				tv_io_rd(&vm->mmio, bar + (off & 0x7FFF), sz);
			break;
		case 1:
			if (wr)
				tv_io_wr(&vm->mmio, rbar + (off & 0x7FFF), sz, v);
			else
				tv_io_rd(&vm->mmio, rbar + (off & 0x7FFF), sz);
			break;
		case 2:
			if (wr)
				tv_io_wr(&vm->pio, VMM_PORT_COM1 + (off & 7), 1, v);
			else
				tv_io_rd(&vm->pio, VMM_PORT_COM1 + (off & 7), 1);
			break;
		default:
			if (slot < 0)
				break;
			if (wr)
				tv_cfg_wr(vm, slot, off & 0xFF, sz, v);
			else
				tv_cfg_rd(vm, slot, off & 0xFF, sz);
			break;
		}
	}
}

/* Post the heads @heads (each modulo the queue size; at most 8) on every
 * queue of virtio device @d, as a driver would: into the avail ring the
 * restored queue state points to (when it lies in RAM), avail index
 * moved; then kick every queue through the BAR's notify area. */
static void ds_kick(struct vmm_vm *vm, struct vmm_device *d, const uint8_t *heads, size_t n)
{
	struct vmm_virtio_dev *vd = (struct vmm_virtio_dev *)d;
	uint64_t bar = vd->pci.cfg[PCI_BAR0] | (uint32_t)vd->pci.cfg[PCI_BAR0 + 1] << 8 |
		       (uint32_t)vd->pci.cfg[PCI_BAR0 + 2] << 16 |
		       (uint32_t)vd->pci.cfg[PCI_BAR0 + 3] << 24;

	for (int q = 0; q < vd->nvqs; q++) {
		struct vmm_vq *vq = &vd->vqs[q];
		uint16_t size = vq->size;
		uint8_t *ring = size && size <= VMM_VQ_MAX_SIZE ?
				vmm_mem_ptr(&vm->mem, vq->avail_gpa, 4 + 2ull * size) : NULL;

		if (ring) {
			uint16_t idx = tv_get16(ring + 2);

			for (size_t i = 0; i < n && i < 8; i++, idx++)
				tv_put16(ring + 4 + 2 * (idx % size), (uint16_t)(heads[i] % size));
			__atomic_store_n((uint16_t *)(void *)(ring + 2), idx, __ATOMIC_RELEASE);
		}
		tv_io_wr(&vm->mmio, (bar & ~0xFull) + TV_NOTIFY + 4u * (unsigned)q, 2, (uint64_t)q);
	}
}

static int ds_fuzz_one(const uint8_t *data, size_t size)
{
	static struct tv_vm t;
	struct vmm_vm *vm = &t.vm;
	struct vmm_device *devs[DS_NDEV];
	struct ut_buf fresh[DS_NDEV];   /* each device's record as created */
	size_t pos = 0;
	int steps = 0, nfds = tf_nfds();

	if (ds_vm_build(&t))
		return 0;
	for (int i = 0; i < DS_NDEV; i++) {
		devs[i] = tv_find_dev(vm, ds_types[i], 0);
		if (!devs[i]) {
			fprintf(stderr, "fuzz-devstate: no %s\n", ds_types[i]);
			abort();
		}
		fresh[i] = (struct ut_buf)UT_BUF_INIT;
		if (devs[i]->ops->save(devs[i], &fresh[i]))
			abort();
	}
	while (pos + 3 <= size && steps++ < 64) {
		uint8_t op = data[pos];
		size_t len = (size_t)data[pos + 1] | (size_t)data[pos + 2] << 8;
		const uint8_t *p = data + pos + 3;

		pos += 3;
		if (len > size - pos)
			len = size - pos;
		pos += len;
		switch (op % 8) {
		case 0: case 1: case 2: case 3: case 4: {
			struct vmm_device *d = devs[op % 8];
			struct ut_err err = { 0 };
			int r = d->ops->restore(d, p, len, &err);

			if (r > 0 || (r < 0 && (err.code != r || !strstr(err.msg, d->id)))) {
				fprintf(stderr, "fuzz-devstate: %s: restore returned %d with message '%s'\n",
					d->id, r, err.msg);
				abort();
			}
			if (ds_verbose)
				fprintf(stderr, "fuzz-devstate: restore %s (%zu bytes): %d %s\n",
					d->id, len, r, r ? err.msg : "");
			if (r == 0) {
				ds_roundtrip(d);
				ds_run_loop(vm);
			}
			break;
		}
		case 5:
			if (len >= 4) {
				uint64_t off = tv_get32(p) % DS_RAM_SIZE, n = len - 4;

				if (n > DS_RAM_SIZE - off)
					n = DS_RAM_SIZE - off;
				memcpy(tv_gpa(&vm->mem, off, n ? n : 1), p + 4, n);
			}
			break;
		case 6:
			ds_access(vm, p, len);
			ds_run_loop(vm);
			break;
		default: {
			struct vmm_device *d = devs[(op >> 3) % DS_NDEV];

			if (len && (p[0] & 1)) {
				d->ops->reset(d);
				ds_check_reset(d, &fresh[(op >> 3) % DS_NDEV]);
			}
			else if (!strncmp(d->ops->type, "virtio-", 7))
				ds_kick(vm, d, p + (len ? 1 : 0), len ? len - 1 : 0);
			ds_run_loop(vm);
			if (ds_verbose && !strncmp(d->ops->type, "virtio-", 7)) {
				struct vmm_virtio_dev *vd = (struct vmm_virtio_dev *)d;

				fprintf(stderr, "fuzz-devstate: %s: status 0x%x, queue 0: last_avail %u used %u%s\n",
					d->id, vd->status, vd->vqs[0].last_avail, vd->vqs[0].used_idx,
					vd->vqs[0].broken ? " (broken)" : "");
			}
			break;
		}
		}
	}
	/* a debug-exit write may have asked the run to end: fine, no vCPUs */
	tv_vm_exit(&t);
	for (int i = 0; i < DS_NDEV; i++)
		ut_buf_release(&fresh[i]);
	ds_check_fds("fuzz-devstate", nfds);
	return 0;
}

/* Seed @name of the corpus in @dir: the bytes of @b (COWVM_FUZZ_SEEDS
 * runs of the fuzz targets; exits on failure). */
static inline void seed_write(const char *dir, const char *name, const struct ut_buf *b)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/seed-%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(b->data, 1, b->len, f) != b->len || fclose(f)) {
		perror(path);
		exit(1);
	}
}

#endif
