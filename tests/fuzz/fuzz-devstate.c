/* tests/fuzz/fuzz-devstate.c — libFuzzer target: device state records
 * (serial, i8042, debug-exit, virtio-blk with parked requests, virtio-rng,
 * the virtio-pci transport, its virtqueues and PCI config space) restored
 * into a VM without KVM, then used (tests/fuzz/devstate-body.h).
 *
 * Seeds: run with COWVM_FUZZ_SEEDS=DIR and the program drives every device
 * into a non-default state, saves it and writes inputs that restore those
 * records (with the guest RAM steps the rings need) into DIR, then exits
 * (tests/fuzz/run.sh does this before fuzzing).
 */
#include "tests/fuzz/devstate-body.h"

#include <errno.h>

static void seed_step(struct ut_buf *b, uint8_t op, const void *p, size_t len)
{
	if (ut_buf_add(b, &op, 1) || ut_buf_add_le16(b, (uint16_t)len) ||
	    (len && ut_buf_add(b, p, len))) {
		fprintf(stderr, "fuzz-devstate: out of memory\n");
		exit(1);
	}
}

/* A RAM step copying guest RAM [gpa, gpa + len) of @vm. */
static void seed_ram(struct ut_buf *b, struct vmm_vm *vm, uint64_t gpa, size_t len)
{
	uint8_t *p = malloc(len + 4);

	if (!p)
		exit(1);
	tv_put32(p, (uint32_t)gpa);
	memcpy(p + 4, tv_gpa(&vm->mem, gpa, len), len);
	seed_step(b, 5, p, len + 4);
	free(p);
}

static void seed_save(struct vmm_device *d, struct ut_buf *out)
{
	ut_buf_reset(out);
	if (d->ops->save(d, out)) {
		fprintf(stderr, "fuzz-devstate: %s: save failed\n", d->id);
		exit(1);
	}
}

/* Post @head on @d's queue 0 and wait (bounded) for its used entry. */
static void seed_post(struct tv_drv *d, uint16_t head)
{
	tv_post(d, head);
	if (!tv_wait_used(d, 20, NULL, NULL)) {
		fprintf(stderr, "fuzz-devstate: seed request %u not completed\n", head);
		exit(1);
	}
}

static void make_seeds(const char *dir)
{
	static struct tv_vm t;
	struct vmm_vm *vm = &t.vm;
	struct ut_buf rec = UT_BUF_INIT, in = UT_BUF_INIT, all = UT_BUF_INIT;
	uint64_t blk_ring_len = 0x1000 + 6 + 8 * DS_QSIZE, rng_ring_len = 0x1000 + 6 + 8 * 8;
	struct tv_drv d;
	const uint32_t com = VMM_PORT_COM1;

	if (ds_vm_build(&t))
		exit(1);
	/* serial: divisor, 8E1, interrupts, FIFO, loopback with bytes waiting */
	tv_io_wr(&vm->pio, com + 3, 1, 0x80);
	tv_io_wr(&vm->pio, com + 0, 1, 0x03);
	tv_io_wr(&vm->pio, com + 1, 1, 0x01);
	tv_io_wr(&vm->pio, com + 3, 1, 0x1B);
	tv_io_wr(&vm->pio, com + 1, 1, 0x05);
	tv_io_wr(&vm->pio, com + 7, 1, 0x5A);
	tv_io_wr(&vm->pio, com + 2, 1, 0x01);
	tv_io_wr(&vm->pio, com + 4, 1, 0x13);
	for (const char *c = "xyz"; *c; c++)
		tv_io_wr(&vm->pio, com, 1, (uint8_t)*c);
	seed_save(tv_find_dev(vm, "serial", 0), &rec);
	ut_buf_reset(&in);
	seed_step(&in, 0, rec.data, rec.len);
	seed_write(dir, "serial", &in);
	seed_step(&all, 0, rec.data, rec.len);

	tv_io_wr(&vm->pio, VMM_PORT_I8042_CMD, 1, 0xAA);
	seed_save(tv_find_dev(vm, "i8042", 0), &rec);
	ut_buf_reset(&in);
	seed_step(&in, 1, rec.data, rec.len);
	seed_write(dir, "i8042", &in);
	seed_step(&all, 1, rec.data, rec.len);

	{
		const uint8_t dbg[5] = { 1, 0, 0, 0, 0x42 };

		ut_buf_reset(&in);
		seed_step(&in, 2, dbg, sizeof(dbg));
		seed_write(dir, "debug-exit", &in);
		seed_step(&all, 2, dbg, sizeof(dbg));
	}

	/* virtio-blk: features, a queue of 16, a flush, a read and a write
	 * done, MSI-X vectors programmed but MSI-X off (INTx pending) */
	if (tv_drv_open(&d, vm, 0x1042, 0) ||
	    tv_drv_init(&d, 1ull << 9 | 1ull << 29, DS_QSIZE, DS_RING_GPA)) {
		fprintf(stderr, "fuzz-devstate: virtio-blk setup failed\n");
		exit(1);
	}
	ds_ram_layout(vm);
	seed_post(&d, 0);
	seed_post(&d, 1);
	seed_post(&d, 2);
	seed_post(&d, 0);
	tv_wr(&d, C_MSIX, 2, 1);
	tv_wr(&d, C_QSEL, 2, 0);
	tv_wr(&d, C_QMSIX, 2, 0);
	tv_wr(&d, 0x4000 + 16, 4, 0xFEE01000);
	tv_wr(&d, 0x4000 + 24, 4, 0x4021);
	seed_save(tv_find_dev(vm, "virtio-blk", 0), &rec);
	ut_buf_reset(&in);
	seed_ram(&in, vm, DS_RING_GPA, blk_ring_len);
	seed_step(&in, 3, rec.data, rec.len);
	seed_write(dir, "blk", &in);
	seed_ram(&all, vm, DS_RING_GPA, blk_ring_len);
	seed_step(&all, 3, rec.data, rec.len);
	{
		/* the same record used: a kick, then guest accesses */
		uint8_t acc[8 * 4] = { 0 };

		acc[0] = 0x80; acc[1] = 1; tv_put16(acc + 2, 0x3000);          /* notify */
		acc[8] = 0; acc[9] = 0; tv_put16(acc + 10, 0x1000);           /* ISR */
		acc[16] = 0x80; acc[17] = 0; tv_put16(acc + 18, 0x14);        /* status 0 */
		acc[24] = 0x03; acc[25] = 2; tv_put16(acc + 26, 0x04);        /* PCI cmd */
		seed_step(&in, 7 | 3 << 3, "\0\0\1\2\10\13\16", 7);
		seed_step(&in, 6, acc, sizeof(acc));
		seed_write(dir, "blk-used", &in);
	}
	/* parked requests (version 2 and 3): the record's last le32 is the
	 * virtio-blk version; the three chains are the ones in flight (the
	 * queue's used index, at 323 after the transport's 287 bytes and the
	 * queue's version, size, flags, addresses, vector and last_avail,
	 * three behind last_avail: none of them used, nothing offered after
	 * them), or the restore refuses the record (vmm_vq_check_held) */
	{
		static const char why[] = "disk 'x': write failed: Input/output error";
		struct ut_buf p = UT_BUF_INIT;

		for (int ver = 2; ver <= 3; ver++) {
			ut_buf_reset(&p);
			ut_buf_add(&p, rec.data, rec.len - 4);
			tv_put16(p.data + 323, (uint16_t)(tv_get16(p.data + 321) - 3));
			ut_buf_add_le32(&p, (uint32_t)ver);
			ut_buf_add_le32(&p, 3);
			for (uint16_t h = 0; h < 3; h++) {
				ut_buf_add_le16(&p, 0);
				ut_buf_add_le16(&p, h);
				ut_buf_add_le32(&p, h == 2 ? 1 : 0);
				if (ver == 3) {
					ut_buf_add_le16(&p, sizeof(why) - 1);
					ut_buf_add(&p, why, sizeof(why) - 1);
				}
			}
			ut_buf_reset(&in);
			seed_ram(&in, vm, DS_RING_GPA, blk_ring_len);
			seed_step(&in, 3, p.data, p.len);
			seed_write(dir, ver == 2 ? "blk-parked-v2" : "blk-parked-v3", &in);
			if (ver == 3) {
				seed_step(&all, 3, p.data, p.len);
				seed_step(&all, 7 | 3 << 3, "\0\1\16", 3);
			}
		}
		ut_buf_release(&p);
	}

	/* virtio-rng: a queue of 8, one buffer filled */
	if (tv_drv_open(&d, vm, 0x1044, 0) || tv_drv_init(&d, 1ull << 28, 8, DS_RING2_GPA)) {
		fprintf(stderr, "fuzz-devstate: virtio-rng setup failed\n");
		exit(1);
	}
	ds_ram_layout(vm);
	seed_post(&d, 0);
	seed_save(tv_find_dev(vm, "virtio-rng", 0), &rec);
	ut_buf_reset(&in);
	seed_ram(&in, vm, DS_RING2_GPA, rng_ring_len);
	seed_step(&in, 4, rec.data, rec.len);
	seed_write(dir, "rng", &in);
	seed_ram(&all, vm, DS_RING2_GPA, rng_ring_len);
	seed_step(&all, 4, rec.data, rec.len);
	seed_step(&all, 7 | 4 << 3, "\0\0", 2);
	seed_step(&all, 7 | 4 << 3, "\1", 1);
	seed_step(&all, 7 | 0 << 3, "\1", 1);   /* serial reset */
	seed_step(&all, 7 | 1 << 3, "\1", 1);   /* i8042 reset */
	seed_write(dir, "all", &all);

	ut_buf_release(&rec);
	ut_buf_release(&in);
	ut_buf_release(&all);
	tv_vm_exit(&t);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("COWVM_FUZZ_SEEDS");

	(void)argc;
	(void)argv;
	ds_verbose = getenv("COWVM_FUZZ_VERBOSE") != NULL;
	if (dir) {
		make_seeds(dir);
		exit(0);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return ds_fuzz_one(data, size);
}
