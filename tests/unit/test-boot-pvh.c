/* tests/unit/test-boot-pvh.c — loading synthetic PVH ELF kernels (ELF64 and
 * ELF32; entry note in a PT_NOTE segment or only in a SHT_NOTE section; 4- and
 * 8-byte descriptors): PT_LOAD segments at p_paddr with bss zeroed, and
 * hvm_start_info version 1 read back at the offsets of Xen's start_info.h
 * (magic, version, cmdline, module 0 = initrd, memmap = our e820), plus the
 * 32-bit GDT. No KVM needed.
 */
#include "test-boot-util.h"

#define RAM (32ULL << 20)

static void load_and_check(const char *name, const struct tb_elf *e, int with_initrd)
{
	struct tb_ram r;
	size_t len;
	uint8_t *img = tb_elf_build(e, &len);
	uint8_t initrd[3000];
	const char *cmdline = "console=ttyS0 cowvm.test=pvh";
	struct vmm_boot_cfg cfg;
	struct vmm_boot_entry be;
	struct ut_err err;
	enum vmm_kernel_format fmt;
	int rc;

	for (size_t i = 0; i < sizeof(initrd); i++)
		initrd[i] = (uint8_t)(i ^ 0x5A);
	cfg = (struct vmm_boot_cfg){ .kernel_path = tb_write(name, img, len), .cmdline = cmdline,
				     .initrd_path = with_initrd ? tb_write("pvh-initrd", initrd, sizeof(initrd)) : NULL,
				     .ncpus = 1 };
	CHECK(vmm_boot_probe(cfg.kernel_path, &fmt, &err) == 0, "%s: probe: %s", name, err.msg);
	CHECK_EQ(fmt, VMM_KERNEL_PVH_ELF);
	if (tb_ram_init(&r, RAM) < 0)
		exit(1);
	/* Dirty RAM where the segments go so bss zeroing is visible. */
	for (int i = 0; i < e->nsegs; i++)
		memset(gpa(&r, e->segs[i].paddr, e->segs[i].memsz), 0xAA, e->segs[i].memsz);
	ut_err_clear(&err);
	rc = vmm_boot_load(&r.mem, &cfg, &be, &err);
	CHECK(rc == 0, "%s: vmm_boot_load: %s", name, err.msg);
	if (rc) {
		free(img);
		tb_ram_exit(&r);
		return;
	}
	CHECK_EQ(be.format, VMM_KERNEL_PVH_ELF);
	CHECK(!strcmp(vmm_kernel_format_name(be.format), "pvh"), "format name");
	CHECK_EQ(be.entry, e->entry);
	CHECK_EQ(be.params_gpa, VMM_BOOT_PARAMS_GPA);
	CHECK_EQ(be.kernel_start, e->segs[0].paddr);
	CHECK_EQ(be.kernel_end, e->segs[e->nsegs - 1].paddr + e->segs[e->nsegs - 1].memsz);
	for (int i = 0; i < e->nsegs; i++) {
		const uint8_t *s = gpa(&r, e->segs[i].paddr, e->segs[i].memsz);
		uint64_t j, bad = 0;

		for (j = 0; j < e->segs[i].filesz; j++)
			bad += s[j] != (uint8_t)(e->segs[i].fill + j);
		for (; j < e->segs[i].memsz; j++)
			bad += s[j] != 0;
		CHECK(bad == 0, "%s: segment %d has %llu wrong bytes", name, i, (unsigned long long)bad);
	}

	const uint8_t *si = gpa(&r, VMM_BOOT_PARAMS_GPA, 0x38);
	CHECK_EQ(get32(si, 0x00), 0x336ec578);            /* magic */
	CHECK_EQ(get32(si, 0x04), 1);                     /* version */
	CHECK_EQ(get32(si, 0x08), 0);                     /* flags */
	CHECK_EQ(get64(si, 0x20), be.rsdp_gpa);           /* rsdp_paddr */
	CHECK(be.rsdp_gpa && !memcmp(gpa(&r, be.rsdp_gpa, 8), "RSD PTR ", 8), "RSDP");
	uint64_t cl = get64(si, 0x18);
	CHECK_EQ(cl, be.cmdline_gpa);
	CHECK(!strcmp((const char *)gpa(&r, cl, strlen(cmdline) + 1), cmdline), "cmdline");
	if (with_initrd) {
		CHECK_EQ(get32(si, 0x0C), 1);                 /* nr_modules */
		const uint8_t *mod = gpa(&r, get64(si, 0x10), 32);
		CHECK_EQ(get64(mod, 0), be.initrd_gpa);
		CHECK_EQ(get64(mod, 8), sizeof(initrd));
		CHECK_EQ(get64(mod, 16), 0);
		CHECK_EQ(be.initrd_gpa, (RAM - sizeof(initrd)) & ~0xFFFULL);
		CHECK(!memcmp(gpa(&r, be.initrd_gpa, sizeof(initrd)), initrd, sizeof(initrd)),
		      "initrd bytes");
	} else {
		CHECK_EQ(get32(si, 0x0C), 0);
		CHECK_EQ(be.initrd_gpa, 0);
	}
	uint32_t n = get32(si, 0x30);
	CHECK_EQ(n, 3);
	const uint8_t *mm = gpa(&r, get64(si, 0x28), 24 * n);
	for (uint32_t i = 0; i < n && i < (uint32_t)be.e820_count; i++) {
		CHECK_EQ(get64(mm, 24 * i), be.e820[i].addr);
		CHECK_EQ(get64(mm, 24 * i + 8), be.e820[i].size);
		CHECK_EQ(get32(mm, 24 * i + 16), be.e820[i].type);
	}
	CHECK_EQ(get64(mm, 24 * 2 + 8), RAM - 0x100000);
	/* 32-bit flat code at 0x10 (D=1, L=0), data at 0x18, TSS at 0x08. */
	const uint8_t *g = gpa(&r, VMM_BOOT_GDT_GPA, 32);
	CHECK_EQ((get64(g, 0x10) >> 52) & 0xF, 0xC);
	CHECK_EQ((get64(g, 0x10) >> 40) & 0xFF, 0x9B);
	CHECK_EQ((get64(g, 0x18) >> 40) & 0xFF, 0x93);
	CHECK_EQ((get64(g, 0x08) >> 40) & 0xFF, 0x8B);
	printf("  %-22s entry 0x%llx, kernel [0x%llx, 0x%llx), initrd 0x%llx\n", name,
	       (unsigned long long)be.entry, (unsigned long long)be.kernel_start,
	       (unsigned long long)be.kernel_end, (unsigned long long)be.initrd_gpa);
	free(img);
	tb_ram_exit(&r);
}

int main(void)
{
	struct tb_elf e = tb_elf_default();

	load_and_check("pvh64", &e, 1);
	load_and_check("pvh64-noinitrd", &e, 0);
	e.note_descsz = 8;
	load_and_check("pvh64-desc8", &e, 1);
	e.note_descsz = 4;
	e.note = 2;
	load_and_check("pvh64-section-note", &e, 1);
	e = tb_elf_default();
	e.is64 = 0;
	e.machine = 3;
	load_and_check("pvh32", &e, 1);
	e.note = 2;
	load_and_check("pvh32-section-note", &e, 1);
	tb_cleanup();
	return tb_finish("test-boot-pvh");
}
