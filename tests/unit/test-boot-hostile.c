/* tests/unit/test-boot-hostile.c — malformed and hostile kernels and initrds
 * are refused with a message naming the problem, never loaded partly out of
 * bounds. Guest RAM is surrounded by PROT_NONE guard pages (and the asan build
 * runs this too), so an out-of-bounds access crashes the test.
 */
#include "test-boot-util.h"

#define RAM (32ULL << 20)
#define PH64(i) (64 + 56 * (i))      /* program header i in an ELF64 */

static struct tb_ram ram;

static void expect(const char *what, const uint8_t *img, size_t len, const char *want)
{
	tb_expect_load_error(&ram, tb_write("k", img, len), NULL, "x", want, what);
}

static void expect_elf(const char *what, const struct tb_elf *e,
		       void (*mutate)(uint8_t *b, size_t len), const char *want)
{
	size_t len;
	uint8_t *b = tb_elf_build(e, &len);

	if (mutate)
		mutate(b, len);
	expect(what, b, len, want);
	free(b);
}

static void expect_bz(const char *what, const struct tb_bz *z, size_t truncate, const char *want)
{
	size_t len;
	uint8_t *b = tb_bz_build(z, &len);

	expect(what, b, truncate ? truncate : len, want);
	free(b);
}

/* ---- ELF mutations ---- */
static void m_phoff_beyond(uint8_t *b, size_t len) { put64(b, 32, len - 8); }
static void m_phnum_huge(uint8_t *b, size_t len) { (void)len; put16(b, 56, 0xFFFF); }
static void m_phnum_zero(uint8_t *b, size_t len) { (void)len; put16(b, 56, 0); }
static void m_phentsize(uint8_t *b, size_t len) { (void)len; put16(b, 54, 32); }
static void m_off_beyond(uint8_t *b, size_t len) { put64(b, PH64(0) + 8, len - 0x100); }
static void m_off_overflow(uint8_t *b, size_t len)
{
	(void)len;
	put64(b, PH64(0) + 8, 0xFFFFFFFFFFFFFF00ULL);
}
static void m_beyond_ram(uint8_t *b, size_t len)
{
	(void)len;
	put64(b, PH64(1) + 24, RAM - 0x1000);    /* p_paddr: memsz 0x3000 crosses the end */
}
static void m_memsz_wrap(uint8_t *b, size_t len)
{
	(void)len;
	put64(b, PH64(1) + 40, 0xFFFFFFFFFFFFF000ULL);
}
static void m_memsz_huge(uint8_t *b, size_t len)
{
	(void)len;
	put64(b, PH64(1) + 40, 0x7FFFFFFFFFFFFFFFULL);
}
static void m_filesz_gt_memsz(uint8_t *b, size_t len)
{
	(void)len;
	put64(b, PH64(0) + 40, 0x100);
}
static void m_below_1mib(uint8_t *b, size_t len)
{
	(void)len;
	put64(b, PH64(0) + 24, 0x8000);
}
static void m_namesz_huge(uint8_t *b, size_t len) { (void)len; put32(b, TB_PVH_NOTE, 0xFFFFFFF0u); }
static void m_descsz_huge(uint8_t *b, size_t len) { (void)len; put32(b, TB_PVH_NOTE + 4, 0xFFFFFFFFu); }
static void m_other_descsz_huge(uint8_t *b, size_t len) { (void)len; put32(b, 0x804, 0x7FFFFFFFu); }
static void m_note_beyond(uint8_t *b, size_t len) { put64(b, PH64(2) + 8, len - 4); }
static void m_big_endian(uint8_t *b, size_t len) { (void)len; b[5] = 2; }
static void m_machine_arm(uint8_t *b, size_t len) { (void)len; put16(b, 18, 183); }
static void m_bad_class(uint8_t *b, size_t len) { (void)len; b[4] = 7; }
static void m_shoff_beyond(uint8_t *b, size_t len) { put64(b, 40, len - 16); }
static void m_shentsize(uint8_t *b, size_t len) { (void)len; put16(b, 58, 12); }
static void m_entry_outside(uint8_t *b, size_t len) { (void)len; put32(b, TB_PVH_NOTE + 16, 0x180000); }
static void m_entry_high(uint8_t *b, size_t len) { (void)len; put64(b, TB_PVH_NOTE + 16, 0x100000000ULL); }

static void elf_cases(void)
{
	struct tb_elf e = tb_elf_default();
	uint8_t tiny[30] = { 0x7f, 'E', 'L', 'F', 2, 1, 1 };

	expect("ELF header truncated", tiny, sizeof(tiny), "ELF64 header (file offset 0x0, 64 bytes) lies beyond the end of the file (30 bytes)");
	expect_elf("phoff beyond the file", &e, m_phoff_beyond, "ELF program header table (file offset");
	expect_elf("phnum 65535", &e, m_phnum_huge, "65535 program headers (more than 128 is absurd)");
	expect_elf("phnum 0", &e, m_phnum_zero, "no program headers");
	expect_elf("phentsize wrong", &e, m_phentsize, "program header size is 32, expected 56");
	expect_elf("segment beyond the file", &e, m_off_beyond, "ELF segment 0 (file offset");
	expect_elf("p_offset overflowing", &e, m_off_overflow, "lies beyond the end of the file");
	expect_elf("segment beyond RAM", &e, m_beyond_ram, "ELF segment 1 [0x1fff000-0x2001fff] (12288 bytes) is not inside guest RAM");
	expect_elf("p_memsz wrapping", &e, m_memsz_wrap, "wraps around the address space");
	expect_elf("p_memsz huge", &e, m_memsz_huge, "is not inside guest RAM");
	expect_elf("p_filesz > p_memsz", &e, m_filesz_gt_memsz, "p_filesz 6144 larger than p_memsz 256");
	expect_elf("segment below 1 MiB", &e, m_below_1mib, "overlaps the boot area below 1 MiB");
	expect_elf("PVH note namesz huge", &e, m_namesz_huge, "name size (4294967280) beyond its end");
	expect_elf("PVH note descsz huge", &e, m_descsz_huge, "descriptor size (4294967295) beyond its end");
	expect_elf("other note descsz huge", &e, m_other_descsz_huge, "descriptor size (2147483647) beyond its end");
	expect_elf("PT_NOTE beyond the file", &e, m_note_beyond, "ELF segment 2 (file offset");
	expect_elf("big-endian ELF", &e, m_big_endian, "big-endian");
	expect_elf("ARM ELF", &e, m_machine_arm, "ELF for machine 183, not x86");
	expect_elf("bad ELF class", &e, m_bad_class, "invalid class 7");
	expect_elf("PVH entry outside segments", &e, m_entry_outside, "entry point 0x180000 is not inside a loaded segment");
	e.note_descsz = 2;
	expect_elf("PVH descriptor of 2 bytes", &e, NULL, "2-byte descriptor (4 or 8 expected)");
	e.note_descsz = 8;
	expect_elf("PVH entry above 4 GiB", &e, m_entry_high, "entry point 0x100000000 is not a 32-bit address");
	e = tb_elf_default();
	e.note = 0;
	expect_elf("ELF without PVH note", &e, NULL, "not a Linux bzImage or PVH ELF kernel (ELF64 x86-64 executable without a Xen PVH entry note)");
	e.note = 2;
	expect_elf("section headers beyond the file", &e, m_shoff_beyond, "ELF section header table (file offset");
	expect_elf("section entry size wrong", &e, m_shentsize, "section header table is malformed");
	e = tb_elf_default();
	e.nsegs = 0;
	e.note = 1;
	expect_elf("no loadable segment", &e, NULL, "no loadable segment");

	/* A note segment larger than 1 MiB, inside a (sparse) file. */
	{
		struct tb_elf d = tb_elf_default();
		size_t len;
		uint8_t *b = tb_elf_build(&d, &len);
		const char *p = tb_path("big-note");
		FILE *f = fopen(p, "wb");

		put64(b, PH64(2) + 32, 3 << 20);
		put64(b, PH64(2) + 8, 0);
		if (!f || fwrite(b, 1, len, f) != len || ftruncate(fileno(f), 4 << 20) || fclose(f))
			exit(1);
		tb_expect_load_error(&ram, p, NULL, NULL, "(more than 1048576 is absurd for notes)",
				     "3 MiB note segment");
		free(b);
	}
}

static void bz_cases(void)
{
	uint8_t code[0x1000] = { 0x90 };
	struct tb_bz z = tb_bz_default(code, sizeof(code));

	expect_bz("bzImage header truncated", &z, 0x230, "setup header is truncated (ends at 0x230)");
	z.version = 0x0204;
	expect_bz("protocol 2.04", &z, 0, "boot protocol 2.04; 2.06 or later is needed");
	z = tb_bz_default(code, sizeof(code));
	z.xloadflags = 0;
	expect_bz("no XLF_KERNEL_64", &z, 0, "without a 64-bit entry point (xloadflags 0x0 lacks XLF_KERNEL_64)");
	z = tb_bz_default(code, sizeof(code));
	z.version = 0x0206;
	expect_bz("protocol 2.06 (no xloadflags)", &z, 0, "protocol 2.06) without a 64-bit entry point");
	z = tb_bz_default(code, sizeof(code));
	z.loadflags = 0;
	expect_bz("zImage", &z, 0, "zImage (protocol 2.15, not loaded high)");
	z = tb_bz_default(code, sizeof(code));
	z.setup_sects = 200;
	expect_bz("setup_sects beyond the file", &z, 4 * 512 + 100, "bzImage is truncated: setup code is 102912 bytes");
	z = tb_bz_default(code, sizeof(code));
	z.kernel_alignment = 3;
	expect_bz("kernel_alignment 3", &z, 0, "invalid kernel_alignment 0x3");
	z = tb_bz_default(code, sizeof(code));
	z.init_size = 0xFFFFFFFF;
	expect_bz("init_size 4 GiB", &z, 0, "the kernel needs guest RAM up to 0x100ffffff");
	z = tb_bz_default(code, sizeof(code));
	z.pref_address = 0xFFFFFFFFFFFFF000ULL;
	expect_bz("pref_address at the top", &z, 0, "pref_address 0xfffffffffffff000 above 4 GiB");

	/* initrd: too large for RAM, and initrd_addr_max 0. */
	{
		size_t len;
		uint8_t *b;
		const char *k, *big = tb_path("initrd-big");
		FILE *f = fopen(big, "wb");

		if (!f || ftruncate(fileno(f), 20 << 20) || fclose(f))
			exit(1);
		z = tb_bz_default(code, sizeof(code));
		b = tb_bz_build(&z, &len);
		k = tb_write("bz-ok", b, len);
		tb_expect_load_error(&ram, k, big, NULL,
				     "initrd '", "initrd larger than free RAM");
		tb_expect_load_error(&ram, k, big, NULL,
				     "(20 MiB, 20971520 bytes) does not fit between the kernel's end 0x1400000 and 0x2000000",
				     "initrd size in message");
		tb_expect_load_error(&ram, k, tb_path("no-such-initrd"), NULL, "unable to open '",
				     "missing initrd");
		tb_expect_load_error(&ram, k, tb_write("initrd-empty", "", 0), NULL, "is empty",
				     "empty initrd");
		free(b);
		z.initrd_addr_max = 0;
		b = tb_bz_build(&z, &len);
		k = tb_write("bz-max0", b, len);
		tb_expect_load_error(&ram, k, tb_write("initrd-1", "x", 1), NULL,
				     "initrd_addr_max 0x0", "initrd_addr_max 0");
		free(b);
	}
}

static void other_cases(void)
{
	struct vmm_boot_cfg cfg = { .kernel_path = "/", .ncpus = 1 };
	struct vmm_boot_entry be;
	struct ut_err err;
	enum vmm_kernel_format fmt;
	const char *p;

	expect("empty file", (const uint8_t *)"", 0, "not a Linux bzImage or PVH ELF kernel (empty file)");
	expect("text file", (const uint8_t *)"hello world\n", 12,
	       "not a Linux bzImage or PVH ELF kernel (12 bytes, first bytes: 68 65 6c 6c 6f 20 77 6f ...)");
	expect("gzip data", (const uint8_t *)"\x1f\x8b\x08\x00", 4, "(4 bytes, first bytes: 1f 8b 08 00; looks like gzip data)");
	tb_expect_load_error(&ram, tb_path("missing"), NULL, NULL, "unable to open '", "missing kernel");
	tb_expect_load_error(&ram, "/", NULL, NULL, "not a regular file", "directory as kernel");

	cfg.ncpus = 0;
	CHECK(vmm_boot_load(&ram.mem, &cfg, &be, &err) == -EINVAL && strstr(err.msg, "0 CPUs requested"),
	      "ncpus 0: %s", err.msg);

	/* vmm_boot_probe() names the file without "unable to load". */
	p = tb_write("probe-text", "hello", 5);
	CHECK(vmm_boot_probe(p, &fmt, &err) < 0, "probe of text succeeded");
	CHECK(strncmp(err.msg, "'", 1) == 0 && strstr(err.msg, "': not a Linux bzImage or PVH ELF kernel ("),
	      "probe message: %s", err.msg);
	CHECK_EQ(fmt, VMM_KERNEL_UNKNOWN);
	printf("  %-34s -> %s\n", "probe of a text file", err.msg);
}

int main(void)
{
	if (tb_ram_init(&ram, RAM) < 0) {
		perror("guest RAM");
		return 1;
	}
	other_cases();
	bz_cases();
	elf_cases();
	tb_ram_exit(&ram);
	tb_cleanup();
	return tb_finish("test-boot-hostile");
}
