/* tests/unit/test-boot-bzimage.c — loading a synthetic bzImage: boot_params
 * fields at their documented zero-page offsets (zero-page.rst, boot.rst), the
 * protected-mode code at 1 MiB, initrd placement, the command line, the e820
 * table, and the GDT/page tables for the 64-bit entry. No KVM needed.
 */
#include "test-boot-util.h"

#define RAM (64ULL << 20)
#define BP  VMM_BOOT_PARAMS_GPA

static void check_gdt_pagetables(struct tb_ram *r)
{
	const uint8_t *g = gpa(r, VMM_BOOT_GDT_GPA, 32);
	uint64_t code = get64(g, 0x10), data = get64(g, 0x18), tss = get64(g, 0x08);
	const uint8_t *pml4 = gpa(r, VMM_BOOT_PML4_GPA, 4096);
	const uint8_t *pdpt = gpa(r, VMM_BOOT_PML4_GPA + 0x1000, 4096);

	CHECK_EQ(get64(g, 0), 0);
	CHECK_EQ((code >> 40) & 0xFF, 0x9B);          /* present, code, exec/read */
	CHECK_EQ((code >> 52) & 0xF, 0xA);            /* G=1, L=1, D=0 */
	CHECK_EQ((data >> 40) & 0xFF, 0x93);
	CHECK_EQ((data >> 52) & 0xF, 0xC);
	CHECK_EQ((data & 0xFFFF) | ((data >> 32) & 0xF0000), 0xFFFFF);
	CHECK_EQ((tss >> 40) & 0xFF, 0x8B);
	CHECK_EQ(tss & 0xFFFF, 0x67);
	CHECK_EQ(get64(pml4, 0), VMM_BOOT_PML4_GPA + 0x1000 + 3);
	for (int gb = 0; gb < 4; gb++) {
		const uint8_t *pd = gpa(r, VMM_BOOT_PML4_GPA + 0x2000 + gb * 0x1000, 4096);

		CHECK_EQ(get64(pdpt, gb * 8), VMM_BOOT_PML4_GPA + 0x2000 + gb * 0x1000 + 3);
		for (int i = 0; i < 512; i += 73)
			CHECK_EQ(get64(pd, i * 8), ((uint64_t)gb << 30) + ((uint64_t)i << 21) + 0x83);
	}
	CHECK_EQ(get64(pdpt, 4 * 8), 0);
}

static void test_load(void)
{
	struct tb_ram r;
	uint8_t code[0x3000];
	uint8_t initrd[10000];
	size_t len;
	const char *cmdline = "console=ttyS0 root=/dev/vda cowvm.marker=42";
	struct tb_bz z;
	uint8_t *img;
	const char *kpath, *ipath;
	struct vmm_boot_cfg cfg;
	struct vmm_boot_entry be;
	struct ut_err err;
	int rc;

	for (size_t i = 0; i < sizeof(code); i++)
		code[i] = (uint8_t)(i * 7 + 1);
	for (size_t i = 0; i < sizeof(initrd); i++)
		initrd[i] = (uint8_t)(i * 13 + 5);
	z = tb_bz_default(code, sizeof(code));
	img = tb_bz_build(&z, &len);
	kpath = tb_write("bzImage", img, len);
	ipath = tb_write("initrd", initrd, sizeof(initrd));

	if (tb_ram_init(&r, RAM) < 0) {
		perror("guest RAM");
		exit(1);
	}
	cfg = (struct vmm_boot_cfg){ .kernel_path = kpath, .initrd_path = ipath,
				     .cmdline = cmdline, .ncpus = 2 };
	ut_err_clear(&err);
	rc = vmm_boot_load(&r.mem, &cfg, &be, &err);
	CHECK(rc == 0, "vmm_boot_load: %s", err.msg);
	if (rc) {
		free(img);
		tb_ram_exit(&r);
		return;
	}
	CHECK_EQ(be.format, VMM_KERNEL_BZIMAGE);
	CHECK(!strcmp(vmm_kernel_format_name(be.format), "bzimage"), "format name");
	CHECK_EQ(be.entry, 0x100200);
	CHECK_EQ(be.params_gpa, BP);
	CHECK_EQ(be.cmdline_gpa, VMM_BOOT_CMDLINE_GPA);
	/* The kernel needs [1 MiB, pref_address + init_size). */
	CHECK_EQ(be.kernel_start, 0x100000);
	CHECK_EQ(be.kernel_end, 0x1000000 + 0x400000);
	/* initrd: page aligned, as high as possible in low RAM. */
	CHECK_EQ(be.initrd_size, sizeof(initrd));
	CHECK_EQ(be.initrd_gpa, (RAM - sizeof(initrd)) & ~0xFFFULL);
	CHECK(!memcmp(gpa(&r, be.initrd_gpa, sizeof(initrd)), initrd, sizeof(initrd)), "initrd bytes");

	/* Protected-mode code at 1 MiB, byte for byte. */
	CHECK(!memcmp(gpa(&r, 0x100000, sizeof(code)), code, sizeof(code)), "kernel code at 1 MiB");

	/* boot_params, by documented offsets. */
	const uint8_t *bp = gpa(&r, BP, 4096);
	CHECK_EQ(get32(bp, 0x202), 0x53726448);           /* "HdrS" copied */
	CHECK_EQ(get16(bp, 0x206), 0x020F);
	CHECK_EQ(bp[0x1F1], 3);                           /* setup_sects */
	CHECK_EQ(get16(bp, 0x1FE), 0xAA55);
	CHECK_EQ(bp[0x210], 0xFF);                        /* type_of_loader */
	CHECK_EQ(bp[0x211] & 0x81, 0x81);                 /* LOADED_HIGH | CAN_USE_HEAP */
	CHECK_EQ(get16(bp, 0x224), 0xFE00);               /* heap_end_ptr */
	CHECK_EQ(get32(bp, 0x214), 0x100000);             /* code32_start */
	CHECK_EQ(get32(bp, 0x228), VMM_BOOT_CMDLINE_GPA); /* cmd_line_ptr */
	CHECK_EQ(get32(bp, 0x0C8), 0);                    /* ext_cmd_line_ptr */
	CHECK_EQ(get32(bp, 0x218), be.initrd_gpa);        /* ramdisk_image */
	CHECK_EQ(get32(bp, 0x21C), sizeof(initrd));       /* ramdisk_size */
	CHECK_EQ(get32(bp, 0x0C0), 0);                    /* ext_ramdisk_image */
	CHECK_EQ(get32(bp, 0x0C4), 0);                    /* ext_ramdisk_size */
	CHECK_EQ(get32(bp, 0x230), 0x200000);             /* kernel_alignment kept */
	CHECK_EQ(get32(bp, 0x260), 0x400000);             /* init_size kept */
	CHECK_EQ(get32(bp, 0x238), 2047);                 /* cmdline_size kept */
	CHECK_EQ(get64(bp, 0x250), 0);                    /* setup_data */
	CHECK(be.rsdp_gpa >= 0xE0000 && be.rsdp_gpa < 0x100000, "RSDP at 0x%llx",
	      (unsigned long long)be.rsdp_gpa);
	CHECK(!memcmp(gpa(&r, be.rsdp_gpa, 8), "RSD PTR ", 8), "RSDP signature");
	CHECK_EQ(get64(bp, 0x070), be.rsdp_gpa);          /* acpi_rsdp_addr */
	CHECK_EQ(bp[0x1E8], 3);                           /* e820_entries */
	CHECK_EQ(bp[0x1EF], 0);                           /* sentinel */
	static const uint64_t want[3][3] = {
		{ 0, 0x9FC00, 1 }, { 0x9FC00, 0x100000 - 0x9FC00, 2 }, { 0x100000, RAM - 0x100000, 1 },
	};
	for (int i = 0; i < 3; i++) {
		CHECK_EQ(get64(bp, 0x2D0 + 20 * i), want[i][0]);
		CHECK_EQ(get64(bp, 0x2D0 + 20 * i + 8), want[i][1]);
		CHECK_EQ(get32(bp, 0x2D0 + 20 * i + 16), want[i][2]);
		CHECK_EQ(be.e820[i].addr, want[i][0]);
		CHECK_EQ(be.e820[i].size, want[i][1]);
		CHECK_EQ(be.e820[i].type, want[i][2]);
	}
	CHECK_EQ(be.e820_count, 3);
	CHECK(!strcmp((const char *)gpa(&r, VMM_BOOT_CMDLINE_GPA, strlen(cmdline) + 1), cmdline),
	      "command line in guest RAM");
	/* MP table present for the 2 CPUs. */
	CHECK(!memcmp(gpa(&r, VMM_MPTABLE_GPA, 4), "_MP_", 4), "MP floating pointer");
	check_gdt_pagetables(&r);
	free(img);
	tb_ram_exit(&r);
}

/* initrd_addr_max below the end of RAM: the initrd ends at or below it. */
static void test_initrd_addr_max(void)
{
	struct tb_ram r;
	uint8_t code[0x1000] = { 0x90 };
	uint8_t initrd[5000] = { 1 };
	struct tb_bz z = tb_bz_default(code, sizeof(code));
	size_t len;
	uint8_t *img;
	struct vmm_boot_cfg cfg;
	struct vmm_boot_entry be;
	struct ut_err err;
	int rc;

	z.initrd_addr_max = 0x2FFFFFF;                    /* 48 MiB - 1 */
	img = tb_bz_build(&z, &len);
	cfg = (struct vmm_boot_cfg){ .kernel_path = tb_write("bz-max", img, len),
				     .initrd_path = tb_write("initrd-small", initrd, sizeof(initrd)),
				     .ncpus = 1 };
	if (tb_ram_init(&r, RAM) < 0)
		exit(1);
	rc = vmm_boot_load(&r.mem, &cfg, &be, &err);
	CHECK(rc == 0, "vmm_boot_load: %s", err.msg);
	CHECK_EQ(be.initrd_gpa, (0x3000000 - sizeof(initrd)) & ~0xFFFULL);
	CHECK(be.initrd_gpa + be.initrd_size <= 0x3000000, "initrd below initrd_addr_max");
	/* No command line: an empty string. */
	CHECK_EQ(*gpa(&r, VMM_BOOT_CMDLINE_GPA, 1), 0);
	free(img);
	tb_ram_exit(&r);
}

/* Command line limits: exactly cmdline_size is accepted, one more refused. */
static void test_cmdline_size(void)
{
	struct tb_ram r;
	uint8_t code[0x1000] = { 0x90 };
	struct tb_bz z = tb_bz_default(code, sizeof(code));
	size_t len;
	uint8_t *img;
	char line[300];
	struct vmm_boot_cfg cfg;
	struct vmm_boot_entry be;
	struct ut_err err;

	z.cmdline_size = 255;
	img = tb_bz_build(&z, &len);
	memset(line, 'a', 255);
	line[255] = 0;
	cfg = (struct vmm_boot_cfg){ .kernel_path = tb_write("bz-255", img, len), .cmdline = line,
				     .ncpus = 1 };
	if (tb_ram_init(&r, RAM) < 0)
		exit(1);
	CHECK(vmm_boot_load(&r.mem, &cfg, &be, &err) == 0, "255-byte command line: %s", err.msg);
	line[255] = 'a';
	line[256] = 0;
	tb_expect_load_error(&r, cfg.kernel_path, NULL, line,
			     "command line is 256 bytes; the kernel accepts at most 255",
			     "command line over cmdline_size");
	free(img);
	tb_ram_exit(&r);
}

/* Probe on a minimal valid bzImage, and the RAM-need check with init_size. */
static void test_probe_and_ram(void)
{
	struct tb_ram r;
	uint8_t code[0x1000] = { 0x90 };
	struct tb_bz z = tb_bz_default(code, sizeof(code));
	size_t len;
	uint8_t *img;
	enum vmm_kernel_format fmt;
	struct ut_err err;
	const char *p;

	img = tb_bz_build(&z, &len);
	p = tb_write("bz-probe", img, len);
	CHECK(vmm_boot_probe(p, &fmt, &err) == 0, "probe: %s", err.msg);
	CHECK_EQ(fmt, VMM_KERNEL_BZIMAGE);
	free(img);

	/* 24 MiB of RAM cannot hold a kernel decompressed at 16 MiB with 12 MiB init_size. */
	z.init_size = 12 << 20;
	img = tb_bz_build(&z, &len);
	if (tb_ram_init(&r, 24ULL << 20) < 0)
		exit(1);
	tb_expect_load_error(&r, tb_write("bz-big", img, len), NULL, NULL,
			     "the kernel needs guest RAM up to 0x1c00000", "init_size beyond RAM");
	free(img);
	tb_ram_exit(&r);
}

int main(void)
{
	test_load();
	test_initrd_addr_max();
	test_cmdline_size();
	test_probe_and_ram();
	tb_cleanup();
	return tb_finish("test-boot-bzimage");
}
