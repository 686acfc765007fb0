/* tests/fuzz/fuzz-statefile.c — libFuzzer target: the records of a whole
 * state file (header, machine, vCPU/irqchip/PIT/clock and device sections)
 * opened, checked and applied to a machine without KVM
 * (tests/fuzz/statefile-body.h; the body makes the checksums match).
 *
 * Seeds: run with COWVM_FUZZ_SEEDS=DIR: the program builds the machine,
 * saves every device, and writes the records of a few state files into DIR
 * (a machine with a disk and virtio-rng, one without, one with zstd RAM:
 * each with a whole vCPU record after the devices' (all zero: the body has
 * no KVM to set it, so the apply ends there, the devices restored); one
 * with a partial vCPU record before them), then exits.
 */
#include "tests/fuzz/statefile-body.h"

#include <errno.h>
#include <linux/kvm.h>

static void seed_sec(struct ut_buf *b, uint32_t type, const struct ut_buf *body)
{
	ut_buf_add_le32(b, type);
	ut_buf_add_le32(b, 0);
	ut_buf_add_le64(b, body->len);
	ut_buf_add(b, body->data, body->len);
}

/* The records of a machine of @ndisks disks (and virtio-rng when @rng),
 * flags @flags, with a partial vCPU section first when @vcpu, else a whole
 * one last. */
static void seed_machine(const char *dir, const char *name, int ndisks, bool rng,
			 uint32_t flags, bool vcpu)
{
	static struct vmm_machine m;
	const uint64_t ram_size = 4u << 20;
	struct vmm_machine_cfg cfg = { .mem = ram_size, .cpus = 1, .rng = rng, .ndisks = ndisks };
	struct ut_buf out = UT_BUF_INIT, sec = UT_BUF_INIT;
	uint8_t hdr[64] = "COWVMSTA";
	uint8_t *ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (ram == MAP_FAILED || sf_machine_build(&m, &cfg, ram, -1))
		exit(1);
	/* serial: loopback with two bytes waiting, scratch, IER */
	tv_io_wr(&m.vm.pio, VMM_PORT_COM1 + 4, 1, 0x13);
	tv_io_wr(&m.vm.pio, VMM_PORT_COM1 + 1, 1, 0x05);
	tv_io_wr(&m.vm.pio, VMM_PORT_COM1 + 7, 1, 0x5A);
	tv_io_wr(&m.vm.pio, VMM_PORT_COM1, 1, 'a');
	tv_io_wr(&m.vm.pio, VMM_PORT_COM1, 1, 'b');
	sf_put_le(hdr + 8, 1, 4);
	sf_put_le(hdr + 12, flags, 4);
	sf_put_le(hdr + 16, ram_size, 8);
	sf_put_le(hdr + 24, SF_PAGE, 8);       /* set again by the body */
	sf_put_le(hdr + 32, flags & 1 ? 16 : ram_size, 8);
	ut_buf_add(&out, hdr, sizeof(hdr));
	ut_buf_add_le64(&sec, ram_size);
	ut_buf_add_le32(&sec, 1);
	ut_buf_add_le32(&sec, rng ? 1 : 0);
	ut_buf_add_le32(&sec, (uint32_t)ndisks);
	for (int i = 0; i < ndisks; i++) {
		char d[64];
		int n = snprintf(d, sizeof(d), "path=/var/lib/cowvm/disk%d.qcow2", i);

		ut_buf_add_le32(&sec, (uint32_t)n);
		ut_buf_add(&sec, d, (size_t)n);
	}
	seed_sec(&out, 1, &sec);
	if (vcpu) {
		ut_buf_reset(&sec);
		/* vCPU 0, version 1: an MSR blob (tag 6: two entries), then
		 * the registers (tag 1, zeros) */
		struct kvm_regs regs;
		uint8_t msrs[8 + 2 * 16] = { 2 };

		memset(&regs, 0, sizeof(regs));
		ut_buf_add_le32(&sec, 0);
		ut_buf_add_le32(&sec, 1);
		ut_buf_add_le32(&sec, 6);
		ut_buf_add_le32(&sec, sizeof(msrs));
		ut_buf_add(&sec, msrs, sizeof(msrs));
		ut_buf_add_le32(&sec, 1);
		ut_buf_add_le32(&sec, sizeof(regs));
		ut_buf_add(&sec, &regs, sizeof(regs));
		seed_sec(&out, 2, &sec);
	}
	for (int i = 0; i < m.vm.ndevs; i++) {
		struct vmm_device *d = m.vm.devs[i];

		ut_buf_reset(&sec);
		ut_buf_add_le32(&sec, (uint32_t)strlen(d->id));
		ut_buf_add(&sec, d->id, strlen(d->id));
		ut_buf_add_le32(&sec, (uint32_t)strlen(d->ops->type));
		ut_buf_add(&sec, d->ops->type, strlen(d->ops->type));
		if (d->ops->save(d, &sec)) {
			fprintf(stderr, "fuzz-statefile: %s: save failed\n", d->id);
			exit(1);
		}
		seed_sec(&out, 6, &sec);
	}
	if (!vcpu)
		sf_put_vcpu(&out, 0);
	seed_write(dir, name, &out);
	ut_buf_release(&out);
	ut_buf_release(&sec);
	sf_machine_destroy(&m, ram, ram_size, -1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("COWVM_FUZZ_SEEDS");

	(void)argc;
	(void)argv;
	ds_verbose = getenv("COWVM_FUZZ_VERBOSE") != NULL;
	if (dir) {
		seed_machine(dir, "disk-rng", 1, true, 0, false);
		seed_machine(dir, "plain", 0, false, 0, false);
		seed_machine(dir, "two-disks-vcpu", 2, true, 0, true);
		seed_machine(dir, "zstd", 1, false, 1, false);
		exit(0);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return sf_fuzz_one(data, size);
}
