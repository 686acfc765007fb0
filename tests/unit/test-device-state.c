/* tests/unit/test-device-state.c — save/restore of every device type on a VM
 * built without KVM (tests/unit/test-vm-util.h).
 *
 * For serial, i8042, debug-exit, virtio-blk and virtio-rng: put the device in
 * a non-default state through its I/O ports / BAR, save, reset, restore, save
 * again: the two records must be byte-identical, and the device must behave
 * as before (registers read back, the virtqueue continues where it was).
 * Records with a wrong version, cut short, or full of garbage are refused
 * with a message naming the device, without crashing; a good record restores
 * afterwards. A second machine built in the same process numbers its
 * devices from 0 again.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "core/virtio/virtio.h"
#include "tests/unit/test-vm-util.h"

#define RAM_SIZE  (4u << 20)
#define RING_GPA  0x10000ull
#define RING2_GPA 0x18000ull
#define HDR_GPA   0x20000ull
#define STAT_GPA  0x21000ull
#define DATA_GPA  0x40000ull
#define COM1      VMM_PORT_COM1

static struct tv_vm tvm;
static struct vmm_vm *vm = &tvm.vm;

static uint8_t *gp(uint64_t a, uint64_t len)
{
	return tv_gpa(&vm->mem, a, len);
}

static struct vmm_device *dev(const char *type)
{
	struct vmm_device *d = tv_find_dev(vm, type, 0);

	if (!d) {
		fprintf(stderr, "device %s missing\n", type);
		exit(1);
	}
	return d;
}

static void save(struct vmm_device *d, struct ut_buf *b)
{
	int r;

	ut_buf_reset(b);
	r = d->ops->save(d, b);
	CHECK(r == 0, "%s: save failed: %d", d->id, r);
}

static int restore(struct vmm_device *d, const uint8_t *rec, size_t len, struct ut_err *err)
{
	ut_err_clear(err);
	return d->ops->restore(d, rec, len, err);
}

static bool same(const struct ut_buf *a, const struct ut_buf *b)
{
	return a->len == b->len && !memcmp(a->data, b->data, a->len);
}

static void dump_diff(const char *id, const struct ut_buf *a, const struct ut_buf *b)
{
	size_t n = a->len < b->len ? a->len : b->len;

	fprintf(stderr, "  %s: record lengths %zu vs %zu", id, a->len, b->len);
	for (size_t i = 0; i < n; i++)
		if (a->data[i] != b->data[i]) {
			fprintf(stderr, ", first difference at byte %zu: 0x%02x vs 0x%02x", i,
				a->data[i], b->data[i]);
			break;
		}
	fputc('\n', stderr);
}

/* save (A) -> reset -> save (R, must differ when @nondefault) -> restore A ->
 * save (B): A == B. Leaves the device restored; *out gets A. */
#define ROUNDTRIP(d, nondefault, out) roundtrip(__FILE__, __LINE__, d, nondefault, out)
static void roundtrip(const char *file, int line, struct vmm_device *d, bool nondefault,
		      struct ut_buf *a)
{
	struct ut_buf r = UT_BUF_INIT, b = UT_BUF_INIT;
	struct ut_err err;
	int rc;

	save(d, a);
	d->ops->reset(d);
	save(d, &r);
	if (nondefault && same(a, &r)) {
		tv_failures++;
		fprintf(stderr, "FAIL %s:%d: %s: the state before reset was the default one\n",
			file, line, d->id);
	}
	rc = restore(d, a->data, a->len, &err);
	if (rc) {
		tv_failures++;
		fprintf(stderr, "FAIL %s:%d: %s: restore failed: %d %s\n", file, line, d->id, rc, err.msg);
	}
	save(d, &b);
	if (!same(a, &b)) {
		tv_failures++;
		fprintf(stderr, "FAIL %s:%d: %s: record changed across reset+restore\n", file, line, d->id);
		dump_diff(d->id, a, &b);
	}
	ut_buf_release(&r);
	ut_buf_release(&b);
}

/* Refused with a message naming the device. */
#define EXPECT_REFUSED(d, rec, len, what) expect_refused(__FILE__, __LINE__, d, rec, len, what)
static void expect_refused(const char *file, int line, struct vmm_device *d, const uint8_t *rec,
			   size_t len, const char *what)
{
	struct ut_err err;
	int rc = restore(d, rec, len, &err);

	if (rc >= 0 || err.code != rc || !strstr(err.msg, d->id)) {
		tv_failures++;
		fprintf(stderr, "FAIL %s:%d: %s: %s record: expected an error naming the device, "
			"got %d '%s'\n", file, line, d->id, what, rc, err.msg);
	}
}

/* Wrong version, every truncation, garbage; then the good record again.
 * Random bodies behind a valid version must be refused when @body_checked
 * (virtio: the queue and vector counts cannot match by chance); for the
 * simple devices any byte values are a valid state, so only "no crash". */
static void hostile_records(struct vmm_device *d, const struct ut_buf *good, bool body_checked)
{
	uint8_t *rec = malloc(good->len + 64);
	uint32_t seed = 0xC0FFEE;
	struct ut_err err;

	memcpy(rec, good->data, good->len);
	rec[0] ^= 0x02;                                  /* version 1 -> 3 */
	EXPECT_REFUSED(d, rec, good->len, "wrong-version");
	restore(d, rec, good->len, &err);
	CHECK(strstr(err.msg, "version"), "%s: version error does not say so: '%s'", d->id, err.msg);
	memset(rec, 0xFF, 4);
	EXPECT_REFUSED(d, rec, good->len, "version 0xffffffff");
	for (size_t n = 0; n < good->len; n++)
		EXPECT_REFUSED(d, good->data, n, "truncated");
	EXPECT_REFUSED(d, NULL, 0, "empty");
	for (int k = 0; k < 400; k++) {
		size_t len;

		seed = seed * 1103515245u + 12345u;
		len = (size_t)(k % 7 == 0 ? good->len : (seed >> 8) % (good->len + 64));
		for (size_t i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			rec[i] = (uint8_t)(seed >> 16);
		}
		if (k & 1) {
			/* random body behind the right version */
			if (len < 4)
				continue;
			memcpy(rec, good->data, 4);
			if (body_checked)
				EXPECT_REFUSED(d, rec, len, "garbage body");
			else
				restore(d, rec, len, &err);
			continue;
		}
		if (len >= 4 && !memcmp(rec, good->data, 4))
			rec[0] ^= 0x80;
		EXPECT_REFUSED(d, rec, len, "garbage");
	}
	free(rec);
	/* the device takes the good record afterwards */
	CHECK(restore(d, good->data, good->len, &err) == 0, "%s: good record refused after garbage: %s",
	      d->id, err.msg);
}

/* ---- serial ---- */

static uint8_t com_rd(unsigned reg) { return (uint8_t)tv_io_rd(&vm->pio, COM1 + reg, 1); }
static void com_wr(unsigned reg, uint8_t v) { tv_io_wr(&vm->pio, COM1 + reg, 1, v); }

static void test_serial(void)
{
	struct vmm_device *d = dev("serial");
	struct ut_buf a = UT_BUF_INIT;

	com_wr(3, 0x80);           /* DLAB */
	com_wr(0, 0x03);           /* divisor 0x0103 */
	com_wr(1, 0x01);
	com_wr(3, 0x1B);           /* 8E1... */
	com_wr(1, 0x05);           /* IER: RDI | RLSI */
	com_wr(7, 0x5A);           /* scratch */
	com_wr(2, 0x01);           /* FIFO on */
	com_wr(4, 0x10 | 0x03);    /* loopback, DTR, RTS */
	com_wr(0, 'x');            /* received through the loop */
	com_wr(0, 'y');
	com_wr(0, 'z');
	CHECK_EQ(com_rd(0), 'x');  /* head moves: the record normalises it */
	CHECK_EQ(com_rd(5) & 1, 1);

	ROUNDTRIP(d, true, &a);
	/* and the device behaves as before */
	CHECK_EQ(com_rd(3), 0x1B);
	CHECK_EQ(com_rd(1), 0x05);
	CHECK_EQ(com_rd(7), 0x5A);
	CHECK_EQ(com_rd(4), 0x13);
	CHECK_EQ(com_rd(2) & 0xC0, 0xC0);
	CHECK_EQ(com_rd(5) & 1, 1);
	CHECK_EQ(com_rd(0), 'y');
	CHECK_EQ(com_rd(0), 'z');
	CHECK_EQ(com_rd(5) & 1, 0);
	com_wr(3, 0x9B);
	CHECK_EQ(com_rd(0), 0x03);
	CHECK_EQ(com_rd(1), 0x01);
	com_wr(3, 0x1B);

	hostile_records(d, &a, false);
	/* rx length beyond the FIFO */
	{
		uint8_t rec[4 + 12 + 17] = { 1, 0, 0, 0 };

		rec[4 + 11] = 17;
		EXPECT_REFUSED(d, rec, sizeof(rec), "rx length 17");
	}
	ut_buf_release(&a);
}

/* ---- i8042 and debug-exit ---- */

static void test_legacy(void)
{
	struct vmm_device *kbd = dev("i8042"), *dbg = dev("debug-exit");
	struct ut_buf a = UT_BUF_INIT, b = UT_BUF_INIT;
	const uint8_t rec[5] = { 1, 0, 0, 0, 0x42 };
	struct ut_err err;

	tv_io_wr(&vm->pio, VMM_PORT_I8042_CMD, 1, 0xAA);   /* self-test command */
	CHECK_EQ(tv_io_rd(&vm->pio, VMM_PORT_I8042_CMD, 1), 0x04);
	ROUNDTRIP(kbd, true, &a);
	hostile_records(kbd, &a, false);

	/* debug-exit has no guest-visible state (a write ends the run); a
	 * record with a command byte must still round-trip */
	CHECK_EQ(restore(dbg, rec, sizeof(rec), &err), 0);
	ROUNDTRIP(dbg, true, &a);
	save(dbg, &b);
	CHECK(b.len == sizeof(rec) && !memcmp(b.data, rec, sizeof(rec)), "debug-exit record differs");
	hostile_records(dbg, &a, false);
	CHECK(!atomic_load(&vm->loop.quit) && vm->exit_kind == VMM_EXIT_NONE, "a restore ended the run");
	ut_buf_release(&a);
	ut_buf_release(&b);
}

/* ---- virtio ---- */

static uint8_t blk_flush(struct tv_drv *d)
{
	uint8_t *st = gp(STAT_GPA, 1);

	tv_put32(gp(HDR_GPA, 4), 4);   /* VIRTIO_BLK_T_FLUSH */
	tv_desc(d, 0, HDR_GPA, 16, 1, 1);
	tv_desc(d, 1, STAT_GPA, 1, 2, 0);
	*st = 0xEE;
	tv_post(d, 0);
	CHECK(tv_wait_used(d, 20, NULL, NULL), "flush did not complete");
	return *st;
}

/* The negotiated features of virtio-blk record @a (status 0x0F: the
 * driver took VERSION_1, FLUSH, EVENT_IDX): bits this device does not
 * offer (RO on a read-write disk, bit 40), no VERSION_1 with FEATURES_OK,
 * a queue's EVENT_IDX flag unlike the features, DRIVER_OK without
 * FEATURES_OK: refused, naming the device and the bits; unoffered bits
 * before FEATURES_OK and DRIVER_OK
 * (the driver's proposal, checked when it sets FEATURES_OK): taken. */
static void features_checked(struct vmm_device *dv, const struct ut_buf *a)
{
	/* after the version and PCI config: le64 features, dfsel, gfsel,
	 * status; the queue's flags after the transport's 287 bytes, the
	 * queue's version and size */
	const size_t feat = 4 + 256, status = feat + 8 + 4 + 4, qflags = 287 + 4 + 2;
	uint64_t f = tv_get64(a->data + feat);
	struct ut_buf bad = UT_BUF_INIT;
	struct ut_err err;

	CHECK_EQ(f, 1ull << 32 | 1ull << 29 | 1ull << 9);
	CHECK_EQ(a->data[status], 0x0F);
	CHECK_EQ(tv_get16(a->data + qflags) & 7, 1 | 2);   /* enabled, EVENT_IDX */
	CHECK(ut_buf_add(&bad, a->data, a->len) == 0, "ut_buf_add");
	tv_put64(bad.data + feat, f | 1ull << 5);
	EXPECT_REFUSED(dv, bad.data, bad.len, "RO negotiated on a read-write disk");
	restore(dv, bad.data, bad.len, &err);
	CHECK_STR(err.msg, "device 'virtio-blk0': the driver's features 0x120000220 include 0x20, "
		  "which this device does not offer (it offers 0x");
	tv_put64(bad.data + feat, f | 1ull << 40);
	EXPECT_REFUSED(dv, bad.data, bad.len, "feature bit 40");
	restore(dv, bad.data, bad.len, &err);
	CHECK_STR(err.msg, "include 0x10000000000, which this device does not offer");
	/* DRIVER_OK without FEATURES_OK: the features are in force too */
	bad.data[status] = 0x07;
	EXPECT_REFUSED(dv, bad.data, bad.len, "bit 40 with DRIVER_OK");
	/* and with the features the saved driver took: a state the device
	 * never enters (it refuses such a DRIVER_OK, NEEDS_RESET) */
	tv_put64(bad.data + feat, f);
	EXPECT_REFUSED(dv, bad.data, bad.len, "DRIVER_OK without FEATURES_OK");
	restore(dv, bad.data, bad.len, &err);
	CHECK_STR(err.msg, "device 'virtio-blk0': status 0x7 has DRIVER_OK without FEATURES_OK");
	bad.data[status] = 0x47;
	EXPECT_REFUSED(dv, bad.data, bad.len, "DRIVER_OK and NEEDS_RESET without FEATURES_OK");
	tv_put64(bad.data + feat, f | 1ull << 40);
	/* before FEATURES_OK: a proposal, taken as the register held it */
	bad.data[status] = 0x03;
	CHECK(restore(dv, bad.data, bad.len, &err) == 0, "an unoffered proposal refused: %s", err.msg);
	bad.data[status] = 0x0F;
	tv_put64(bad.data + feat, f & ~(1ull << 32));
	EXPECT_REFUSED(dv, bad.data, bad.len, "FEATURES_OK without VERSION_1");
	restore(dv, bad.data, bad.len, &err);
	CHECK_STR(err.msg, "FEATURES_OK without VIRTIO_F_VERSION_1 (features 0x20000200");
	tv_put64(bad.data + feat, f);
	tv_put16(bad.data + qflags, (uint16_t)(tv_get16(a->data + qflags) & ~2u));
	EXPECT_REFUSED(dv, bad.data, bad.len, "queue without EVENT_IDX, EVENT_IDX negotiated");
	restore(dv, bad.data, bad.len, &err);
	CHECK_STR(err.msg, "queue 0 has EVENT_IDX off and INDIRECT_DESC off, unlike the features 0x120000200");
	tv_put16(bad.data + qflags, (uint16_t)(tv_get16(a->data + qflags) | 4u));
	EXPECT_REFUSED(dv, bad.data, bad.len, "queue with INDIRECT_DESC, not negotiated");
	ut_buf_release(&bad);
	CHECK(restore(dv, a->data, a->len, &err) == 0, "good record refused: %s", err.msg);
}

static void test_virtio_blk(void)
{
	struct vmm_device *dv = dev("virtio-blk");
	struct ut_buf a = UT_BUF_INIT;
	struct tv_drv d;
	uint16_t used;

	CHECK_EQ(tv_drv_open(&d, vm, 0x1042, 0), 0);
	/* features, a queue, two requests done, MSI-X table entry and vectors
	 * programmed (MSI-X left off: INTx asserted, ISR pending) */
	CHECK_EQ(tv_drv_init(&d, 1ull << 9 | 1ull << 29, 16, RING_GPA), 0);
	CHECK_EQ(blk_flush(&d), 0);
	CHECK_EQ(blk_flush(&d), 0);
	tv_wr(&d, C_MSIX, 2, 1);
	tv_wr(&d, C_QSEL, 2, 0);
	tv_wr(&d, C_QMSIX, 2, 0);
	tv_wr(&d, 0x4000 + 16, 4, 0xFEE01000);
	tv_wr(&d, 0x4000 + 24, 4, 0x4021);
	CHECK(tv_cfg_rd(vm, d.slot, PCI_STATUS, 2) & PCI_STATUS_INTX, "INTx not asserted");

	ROUNDTRIP(dv, true, &a);
	/* the restored device shows the same registers ... */
	CHECK_EQ(tv_status(&d), 0x0F);
	tv_wr(&d, C_GFSEL, 4, 0);
	CHECK_EQ(tv_rd(&d, C_GF, 4), 1u << 9 | 1u << 29);
	tv_wr(&d, C_QSEL, 2, 0);
	CHECK_EQ(tv_rd(&d, C_QENABLE, 2), 1);
	CHECK_EQ(tv_rd(&d, C_QSIZE, 2), 16);
	CHECK_EQ(tv_rd(&d, C_QDESC, 4), RING_GPA);
	CHECK_EQ(tv_rd(&d, C_MSIX, 2), 1);
	CHECK_EQ(tv_rd(&d, 0x4000 + 24, 4), 0x4021);
	CHECK_EQ(tv_rd(&d, TV_DEVCFG, 8), (1u << 20) / 512);
	CHECK(tv_cfg_rd(vm, d.slot, PCI_STATUS, 2) & PCI_STATUS_INTX, "INTx not asserted after restore");
	CHECK_EQ(tv_rd(&d, TV_ISR, 1), 1);
	/* ... and the queue continues where it was */
	used = tv_used_idx(&d);
	CHECK_EQ(used, 2);
	CHECK_EQ(blk_flush(&d), 0);
	CHECK_EQ(tv_used_idx(&d), 3);

	/* a record whose queue lies outside this VM's RAM is refused */
	save(dv, &a);
	{
		struct ut_buf bad = UT_BUF_INIT;
		/* the queue record follows: version, cfg[256], features(8), dfsel,
		 * gfsel (4+4), status/isr/gen (3), queue_sel, config_vector (2+2),
		 * nvqs (4); then the queue's version (4), size (2), flags (2),
		 * desc_gpa (8) */
		size_t q = 4 + 256 + 8 + 8 + 3 + 4 + 4, desc = q + 4 + 2 + 2;

		ut_buf_add(&bad, a.data, a.len);
		CHECK_EQ(tv_get32(bad.data + q), 1);
		CHECK_EQ(tv_get64(bad.data + desc), RING_GPA);
		tv_put64(bad.data + desc, RAM_SIZE);
		EXPECT_REFUSED(dv, bad.data, bad.len, "queue outside RAM");
		tv_put64(bad.data + desc, RING_GPA);
		tv_put32(bad.data + q, 2);
		EXPECT_REFUSED(dv, bad.data, bad.len, "queue version 2");
		tv_put32(bad.data + q, 1);
		tv_put32(bad.data + q - 4, 2);
		EXPECT_REFUSED(dv, bad.data, bad.len, "two queues");
		tv_put32(bad.data + q - 4, 1);
		tv_put32(bad.data + bad.len - 4, 9);
		EXPECT_REFUSED(dv, bad.data, bad.len, "virtio-blk version 9");
		tv_put32(bad.data + bad.len - 4, 1);
		ut_buf_release(&bad);
	}
	features_checked(dv, &a);
	hostile_records(dv, &a, true);
	CHECK_EQ(blk_flush(&d), 0);

	/* a broken queue stays broken across save/restore */
	tv_desc(&d, 0, RAM_SIZE, 16, 0, 0);
	tv_post(&d, 0);
	CHECK_EQ(tv_wait_used(&d, 3, NULL, NULL), 0);
	CHECK(tv_status(&d) & VIRTIO_STATUS_NEEDS_RESET, "NEEDS_RESET not set");
	ROUNDTRIP(dv, true, &a);
	CHECK(tv_status(&d) & VIRTIO_STATUS_NEEDS_RESET, "NEEDS_RESET lost by restore");
	CHECK_EQ(tv_wait_used(&d, 3, NULL, NULL), 0);
	tv_wr(&d, C_STATUS, 1, 0);

	/* the restored config space maps BAR0 where the record says */
	{
		uint64_t old = d.bar, moved = VMM_PCI_MMIO_START + 0x2000000;

		save(dv, &a);
		tv_cfg_wr(vm, d.slot, PCI_BAR0, 4, (uint32_t)moved);
		CHECK_EQ(tv_io_rd(&vm->mmio, moved + C_NUMQ, 2), 1);
		CHECK_EQ(restore(dv, a.data, a.len, NULL), 0);
		CHECK_EQ(tv_cfg_rd(vm, d.slot, PCI_BAR0, 4), old);
		CHECK_EQ(tv_io_rd(&vm->mmio, old + C_NUMQ, 2), 1);
		CHECK_EQ(tv_io_rd(&vm->mmio, moved + C_NUMQ, 2), 0xFFFF);
		/* and the same with memory decoding off in the record */
		tv_cfg_wr(vm, d.slot, PCI_COMMAND, 2, 0);
		save(dv, &a);
		tv_cfg_wr(vm, d.slot, PCI_COMMAND, 2, PCI_CMD_MEM);
		CHECK_EQ(tv_io_rd(&vm->mmio, old + C_NUMQ, 2), 1);
		CHECK_EQ(restore(dv, a.data, a.len, NULL), 0);
		CHECK_EQ(tv_io_rd(&vm->mmio, old + C_NUMQ, 2), 0xFFFF);
		tv_cfg_wr(vm, d.slot, PCI_COMMAND, 2, PCI_CMD_MEM);
		CHECK_EQ(tv_io_rd(&vm->mmio, old + C_NUMQ, 2), 1);
	}
	ut_buf_release(&a);
}

static void test_virtio_rng(void)
{
	struct vmm_device *dv = dev("virtio-rng");
	struct ut_buf a = UT_BUF_INIT;
	struct tv_drv d;

	CHECK_EQ(tv_drv_open(&d, vm, 0x1044, 0), 0);
	CHECK_EQ(tv_drv_init(&d, 1ull << 28, 8, RING2_GPA), 0);
	tv_desc(&d, 0, DATA_GPA, 32, 2, 0);
	tv_post(&d, 0);
	CHECK(tv_wait_used(&d, 20, NULL, NULL), "rng did not answer");
	tv_rd(&d, TV_ISR, 1);      /* INTx acknowledged */

	ROUNDTRIP(dv, true, &a);
	CHECK_EQ(tv_status(&d), 0x0F);
	CHECK_EQ(tv_rd(&d, TV_ISR, 1), 0);
	tv_post(&d, 0);
	CHECK(tv_wait_used(&d, 20, NULL, NULL), "rng did not answer after restore");
	CHECK_EQ(tv_used_idx(&d), 2);
	/* a chain in flight (last_avail one ahead of used_idx, after the
	 * transport's 287 bytes and the queue's first 34): the device never
	 * holds one at a save, and its driver would wait for it forever */
	save(dv, &a);
	{
		struct ut_buf bad = UT_BUF_INIT;
		struct ut_err err;

		CHECK(ut_buf_add(&bad, a.data, a.len) == 0, "ut_buf_add");
		CHECK_EQ(tv_get16(bad.data + 287 + 34), 2);
		CHECK_EQ(tv_get16(bad.data + 287 + 36), 2);
		tv_put16(bad.data + 287 + 34, 3);
		tv_put16(gp(d.avail + 2, 2), 3);   /* as if the driver had offered it */
		EXPECT_REFUSED(dv, bad.data, bad.len, "a chain in flight");
		restore(dv, bad.data, bad.len, &err);
		CHECK_STR(err.msg, "device 'virtio-rng0': 0 chain(s) held, but 1 in flight (avail index 3 taken, used index 2)");
		tv_put16(gp(d.avail + 2, 2), 2);
		ut_buf_release(&bad);
	}
	hostile_records(dv, &a, true);
	/* a virtio-blk record is not a virtio-rng record */
	{
		struct ut_buf blk = UT_BUF_INIT;

		save(dev("virtio-blk"), &blk);
		EXPECT_REFUSED(dv, blk.data, blk.len, "virtio-blk");
		ut_buf_release(&blk);
	}
	CHECK_EQ(restore(dv, a.data, a.len, NULL), 0);
	ut_buf_release(&a);
}

int main(void)
{
	struct ut_err err = { 0 };
	const char *disk = tv_file("state.img", 1u << 20, 0);
	char opts[600], opts2[600];

	tv_vm_init(&tvm, RAM_SIZE);
	snprintf(opts, sizeof(opts), "path=%s", disk);
	if (vmm_device_create(vm, "serial", "console=none", &err) ||
	    vmm_device_create(vm, "i8042", "", &err) ||
	    vmm_device_create(vm, "debug-exit", "", &err) ||
	    vmm_device_create(vm, "virtio-blk", opts, &err) ||
	    vmm_device_create(vm, "virtio-rng", "", &err)) {
		fprintf(stderr, "device: %s\n", err.msg);
		return 1;
	}
	test_serial();
	test_legacy();
	test_virtio_blk();
	test_virtio_rng();
	tv_vm_exit(&tvm);
	/* the same machine built again in this process (a restore, a
	 * migration receiver) names its devices as the first did: the ids
	 * are what a state file's records are matched by */
	tv_vm_init(&tvm, RAM_SIZE);
	snprintf(opts2, sizeof(opts2), "path=%s", tv_file("state2.img", 1u << 20, 0));
	if (vmm_device_create(vm, "virtio-blk", opts, &err) ||
	    vmm_device_create(vm, "virtio-blk", opts2, &err) ||
	    vmm_device_create(vm, "virtio-rng", "", &err)) {
		fprintf(stderr, "device: %s\n", err.msg);
		return 1;
	}
	CHECK_STR(tv_find_dev(vm, "virtio-blk", 0)->id, "virtio-blk0");
	CHECK_STR(tv_find_dev(vm, "virtio-blk", 1)->id, "virtio-blk1");
	CHECK_STR(tv_find_dev(vm, "virtio-rng", 0)->id, "virtio-rng0");
	tv_vm_exit(&tvm);
	tv_cleanup();
	return tv_finish("test-device-state");
}
