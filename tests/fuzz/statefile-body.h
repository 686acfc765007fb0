/* tests/fuzz/statefile-body.h — the body of the state-file fuzz target
 * (tests/fuzz/fuzz-statefile.c), also replayed without libFuzzer by
 * tests/unit/test-devstate-fuzz-regress.c (inputs statefile-*).
 *
 * The input is the records part of a state file (man/cowvm-state.5: the
 * 64-byte header, then sections up to ram_off). The body makes a whole file
 * of it in a memfd, so that the fuzzer gets past what it cannot forge:
 *   - the records are padded with zeros to a multiple of 4 KiB (at least
 *     4 KiB), and the header's ram_off set to that length;
 *   - uncompressed RAM (flags bit 0 clear): ram_len = ram_size, the RAM a
 *     hole of zeros (no cost); zstd RAM: ram_len as the input says (at most
 *     64 KiB of zeros: chunk headers that do not decompress);
 *   - the trailer: "COWVMEND", the XXH3 of the records, the RAM checksum of
 *     all-zero RAM, the file size.
 * Every other header field (magic, version, flags, ram_size) and every
 * section is the input's. Then, as vmm_machine_restore does, minus KVM:
 * vmm_state_open (with VMM_STATE_F_VERIFY), vmm_state_machine_cfg,
 * vmm_state_map_ram, vmm_state_verify_ram, the machine built on that RAM
 * (serial, i8042, debug-exit, acpi-sleep, PCI, the disks, virtio-rng; no
 * vCPUs, vm_fd -1) and vmm_state_apply: vCPU records are parsed (the
 * machine's vCPUs exist with fd -1: the first blob's ioctl fails), irqchip,
 * PIT and clock records refused before any ioctl could succeed (no PIT,
 * vm_fd -1), device records restored. A file that check_sections passes
 * has one record for each vCPU, so an apply here never succeeds: it fails
 * at the first vCPU, irqchip or clock record (EBADF: no KVM), the records
 * before it applied. After such an apply (or a successful one) each device
 * must have had exactly one record, the loop runs a few rounds and every
 * device is saved and restored again (ds_roundtrip): the seeds have their
 * vCPU record last. Every fd
 * opened is closed again by the end of the input.
 * Harness limits: RAM above 64 MiB is not mapped (the open alone runs:
 * hashing gigabytes of zeros would only make the fuzzer slow); at most 4
 * disks, each a 1 MiB raw file of ours (the option strings in the file
 * are parsed but never opened: they could name any host file).
 */
#ifndef STATEFILE_BODY_H
#define STATEFILE_BODY_H

#include "core/machine.h"
#include "core/state.h"
#include "tests/fuzz/devstate-body.h"

#include <linux/kvm.h>
#include <xxhash.h>

#define SF_MAX_RAM   (64ull << 20)
#define SF_MAX_DISKS 4
#define SF_PAGE      4096u

static char sf_disks[SF_MAX_DISKS][256];

static void sf_disks_remove(void)
{
	for (int i = 0; i < SF_MAX_DISKS; i++)
		if (sf_disks[i][0])
			unlink(sf_disks[i]);
}

static const char *sf_disk_path(int i)
{
	if (!sf_disks[i][0]) {
		int fd;

		snprintf(sf_disks[i], sizeof(sf_disks[i]), "/tmp/cowvm-fuzz-statefile-%d-%d.img",
			 (int)getpid(), i);
		fd = open(sf_disks[i], O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, 1u << 20) < 0) {
			perror(sf_disks[i]);
			exit(1);
		}
		close(fd);
		if (i == 0)
			atexit(sf_disks_remove);
	}
	return sf_disks[i];
}

static void sf_put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t sf_get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* A VCPU section for vCPU @idx appended to @b: a whole record (version 1,
 * every blob a save writes, FPU rather than XSAVE), all zero: it passes
 * every check; only KVM could refuse it, and without KVM (this body) its
 * first blob fails at its ioctl (EBADF). */
static inline void sf_put_vcpu(struct ut_buf *b, uint32_t idx)
{
	static const uint8_t zero[sizeof(struct kvm_lapic_state)];
	static const uint32_t blob[][2] = {
		{ 1, sizeof(struct kvm_regs) }, { 3, sizeof(struct kvm_fpu) },
		{ 5, sizeof(struct kvm_sregs) }, { 6, sizeof(struct kvm_msrs) },
		{ 7, sizeof(struct kvm_mp_state) }, { 8, sizeof(struct kvm_lapic_state) },
		{ 9, sizeof(struct kvm_vcpu_events) }, { 10, sizeof(struct kvm_debugregs) },
	};
	uint32_t len = 8;
	int r;

	for (size_t i = 0; i < sizeof(blob) / sizeof(blob[0]); i++)
		len += 8 + blob[i][1];
	r = ut_buf_add_le32(b, 2);
	r = r ? r : ut_buf_add_le32(b, 0);
	r = r ? r : ut_buf_add_le64(b, len);
	r = r ? r : ut_buf_add_le32(b, idx);
	r = r ? r : ut_buf_add_le32(b, 1);
	for (size_t i = 0; !r && i < sizeof(blob) / sizeof(blob[0]); i++) {
		r = ut_buf_add_le32(b, blob[i][0]);
		r = r ? r : ut_buf_add_le32(b, blob[i][1]);
		r = r ? r : ut_buf_add(b, zero, blob[i][1]);
	}
	if (r) {
		fprintf(stderr, "sf_put_vcpu: out of memory\n");
		exit(1);
	}
}

/* The state file for @data in a new memfd; its path in @path, its records
 * (@data padded, header fixed) in *@meta_out (@meta_len bytes; to free).
 * Returns the fd, or -1 (nothing to run). */
static int sf_make_file(const uint8_t *data, size_t size, char *path, size_t pathlen,
			uint8_t **meta_out, size_t *meta_len_out)
{
	size_t meta_len = size < SF_PAGE ? SF_PAGE : (size + SF_PAGE - 1) / SF_PAGE * SF_PAGE;
	uint8_t *meta = calloc(1, meta_len), tr[64] = "COWVMEND";
	uint64_t ram_size, ram_len, fsize;
	XXH3_state_t *h = XXH3_createState();
	int fd = -1;

	*meta_out = NULL;
	if (!meta || !h || size < 64)
		goto out;
	memcpy(meta, data, size);
	ram_size = sf_get_le(meta + 16, 8);
	ram_len = sf_get_le(meta + 32, 8);
	if (!(sf_get_le(meta + 12, 4) & 1))
		ram_len = ram_size;
	else if (ram_len > 65536)
		ram_len = 65536;
	if (ram_len > (1ull << 40))
		goto out;   /* beyond any file the memfd takes */
	sf_put_le(meta + 24, meta_len, 8);
	sf_put_le(meta + 32, ram_len, 8);
	fsize = meta_len + ram_len + sizeof(tr);
	/* the RAM checksum of all-zero RAM: no page hashed */
	XXH3_64bits_reset(h);
	sf_put_le(tr + 8, XXH3_64bits(meta, meta_len), 8);
	sf_put_le(tr + 16, XXH3_64bits_digest(h), 8);
	sf_put_le(tr + 24, fsize, 8);
	fd = memfd_create("fuzz-state", MFD_CLOEXEC);
	if (fd < 0)
		goto out;
	if (pwrite(fd, meta, meta_len, 0) != (ssize_t)meta_len ||
	    pwrite(fd, tr, sizeof(tr), (off_t)(meta_len + ram_len)) != (ssize_t)sizeof(tr)) {
		close(fd);
		fd = -1;
		goto out;
	}
	snprintf(path, pathlen, "/proc/self/fd/%d", fd);
	*meta_out = meta;
	*meta_len_out = meta_len;
	meta = NULL;
out:
	XXH3_freeState(h);
	free(meta);
	return fd;
}

/* The machine as machine_build (core/machine.c) makes it, on @ram, without
 * KVM. Returns 0 or -1. */
static int sf_machine_build(struct vmm_machine *m, const struct vmm_machine_cfg *cfg,
			    uint8_t *ram, int ram_fd)
{
	struct vmm_vm *vm = &m->vm;
	struct ut_err err = { 0 };
	char opts[1100];
	int r;

	memset(m, 0, sizeof(*m));
	m->sig_fd = -1;
	vmm_vm_preinit(vm);
	vmm_irq_init(vm, NULL);
	if (!vm->routes || vmm_loop_init(&vm->loop))
		return -1;
	vmm_mem_layout(&vm->mem, ram, cfg->mem, ram_fd);
	vm->on_event = ds_event;
	r = vmm_device_create(vm, "serial", "console=none", &err);
	r = r ? r : vmm_device_create(vm, "i8042", "", &err);
	r = r ? r : vmm_device_create(vm, "debug-exit", "", &err);
	r = r ? r : vmm_device_create(vm, "acpi-sleep", "", &err);
	r = r ? r : vmm_pci_init(vm, &err);
	for (int i = 0; !r && i < cfg->ndisks; i++) {
		snprintf(opts, sizeof(opts), "path=%s", sf_disk_path(i));
		r = vmm_device_create(vm, "virtio-blk", opts, &err);
	}
	if (!r && cfg->rng)
		r = vmm_device_create(vm, "virtio-rng", "", &err);
	if (r)
		fprintf(stderr, "fuzz-statefile: machine: %s\n", err.msg);
	return r ? -1 : 0;
}

static void sf_machine_destroy(struct vmm_machine *m, uint8_t *ram, uint64_t ram_size, int ram_fd)
{
	m->vm.mem.base = NULL;   /* ours: unmapped below */
	m->vm.mem.ram_size = 0;
	vmm_vm_destroy(&m->vm);
	pthread_mutex_destroy(&m->vm.lock);
	pthread_cond_destroy(&m->vm.cond);
	pthread_mutex_destroy(&m->vm.irq_lock);
	if (ram)
		munmap(ram, ram_size);
	if (ram_fd >= 0)
		close(ram_fd);
}

/* After a successful apply: every device of @vm had exactly one DEVICE
 * record among the sections of the records @data (the padded ones the file
 * holds; walked here as the format says, up to the first type 0). Aborts
 * otherwise. */
static void sf_check_one_record_each(const uint8_t *data, size_t size, struct vmm_vm *vm)
{
	int count[VMM_MAX_DEVICES] = { 0 };

	for (size_t off = 64; off + 16 <= size;) {
		uint32_t type = (uint32_t)sf_get_le(data + off, 4);
		uint64_t len = sf_get_le(data + off + 8, 8);
		uint32_t idn;

		if (type == 0 || len > size - off - 16)
			break;
		if (type == 6 && len >= 4 && (idn = (uint32_t)sf_get_le(data + off + 16, 4)) <= len - 4)
			for (int i = 0; i < vm->ndevs; i++)
				if (strlen(vm->devs[i]->id) == idn &&
				    !memcmp(vm->devs[i]->id, data + off + 20, idn))
					count[i]++;
		off += 16 + len;
	}
	for (int i = 0; i < vm->ndevs; i++)
		if (count[i] != 1) {
			fprintf(stderr, "fuzz-statefile: applied, but device '%s' had %d records\n",
				vm->devs[i]->id, count[i]);
			abort();
		}
}

static int sf_fuzz_one(const uint8_t *data, size_t size)
{
	static struct vmm_machine m;
	struct vmm_state_file *sf = NULL;
	struct vmm_machine_cfg cfg;
	struct ut_err err = { 0 };
	uint8_t *ram = NULL;
	int ram_fd = -1, r;
	char path[64];
	uint8_t *meta = NULL;
	size_t meta_len = 0;
	int nfds = tf_nfds();
	int fd = sf_make_file(data, size, path, sizeof(path), &meta, &meta_len);

	if (fd < 0)
		return 0;
	r = vmm_state_open(path, VMM_STATE_F_VERIFY, &sf, &err);
	close(fd);   /* sf has its own */
	if (ds_verbose)
		fprintf(stderr, "fuzz-statefile: open: %d %s\n", r, r ? err.msg : "");
	if (r) {
		if (r > 0 || err.code != r || !err.msg[0]) {
			fprintf(stderr, "fuzz-statefile: open returned %d with message '%s'\n", r, err.msg);
			abort();
		}
		free(meta);
		ds_check_fds("fuzz-statefile", nfds);
		return 0;
	}
	memset(&cfg, 0, sizeof(cfg));
	vmm_state_machine_cfg(sf, &cfg);
	if (cfg.mem > SF_MAX_RAM || cfg.ndisks > SF_MAX_DISKS)
		goto out;
	r = vmm_state_map_ram(sf, &ram, &ram_fd, &err);
	if (r) {
		ram = NULL;
		goto out;
	}
	if (ram_fd < 0 && vmm_state_verify_ram(sf, ram, &err)) {
		fprintf(stderr, "fuzz-statefile: all-zero RAM fails its checksum: %s\n", err.msg);
		abort();
	}
	if (sf_machine_build(&m, &cfg, ram, ram_fd)) {
		sf_machine_destroy(&m, ram, cfg.mem, ram_fd);
		goto out;
	}
	/* vCPUs without KVM (fd -1): a vCPU record is parsed and checked,
	 * then its first known blob fails at its ioctl (EBADF) */
	m.vm.ncpus = cfg.cpus;
	for (int i = 0; i < cfg.cpus; i++)
		m.vm.vcpus[i] = (struct vmm_vcpu){ .vm = &m.vm, .id = i, .fd = -1 };
	r = vmm_state_apply(sf, &m, &err);
	m.vm.ncpus = 0;   /* nothing for vmm_vm_destroy to tear down */
	if (ds_verbose)
		fprintf(stderr, "fuzz-statefile: apply: %d %s\n", r, r ? err.msg : "");
	if (r > 0 || (r < 0 && (err.code != r || !err.msg[0]))) {
		fprintf(stderr, "fuzz-statefile: apply returned %d with message '%s'\n", r, err.msg);
		abort();
	}
	if (!r || r == -EBADF) {
		sf_check_one_record_each(meta, meta_len, &m.vm);
		ds_run_loop(&m.vm);
		for (int i = 0; i < m.vm.ndevs; i++)
			ds_roundtrip(m.vm.devs[i]);
	}
	sf_machine_destroy(&m, ram, cfg.mem, ram_fd);
out:
	vmm_state_close(sf);
	free(meta);
	ds_check_fds("fuzz-statefile", nfds);
	return 0;
}

#endif
