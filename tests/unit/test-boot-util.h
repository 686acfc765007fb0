/* tests/unit/test-boot-util.h — helpers shared by the test-boot-*.c programs:
 * guest RAM with guard pages, temporary files, and builders for synthetic
 * bzImage and ELF kernels written byte by byte (little-endian, explicit
 * offsets from the specs, independent of core/boot's structs).
 */
#ifndef TEST_BOOT_UTIL_H
#define TEST_BOOT_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/boot/boot.h"
#include "core/layout.h"
#include "core/mem.h"

static int tb_failures;

#define CHECK(cond, ...) do {                                                   \
	if (!(cond)) {                                                          \
		tb_failures++;                                                  \
		fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
		fprintf(stderr, __VA_ARGS__);                                   \
		fputc('\n', stderr);                                            \
	}                                                                       \
} while (0)

#define CHECK_EQ(a, b) do {                                                     \
	unsigned long long _a = (unsigned long long)(a), _b = (unsigned long long)(b); \
	CHECK(_a == _b, "0x%llx != 0x%llx", _a, _b);                            \
} while (0)

static inline int tb_finish(const char *name)
{
	if (tb_failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", name, tb_failures);
		return 1;
	}
	printf("%s: ok\n", name);
	return 0;
}

/* ---- little-endian accessors on byte buffers ---- */
static inline void put8(uint8_t *b, size_t off, uint8_t v) { b[off] = v; }
static inline void put16(uint8_t *b, size_t off, uint16_t v) { b[off] = v & 0xff; b[off + 1] = v >> 8; }
static inline void put32(uint8_t *b, size_t off, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		b[off + i] = (uint8_t)(v >> (8 * i));
}
static inline void put64(uint8_t *b, size_t off, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		b[off + i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t get16(const uint8_t *b, size_t off) { return (uint16_t)(b[off] | b[off + 1] << 8); }
static inline uint32_t get32(const uint8_t *b, size_t off)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | b[off + i];
	return v;
}
static inline uint64_t get64(const uint8_t *b, size_t off)
{
	return get32(b, off) | (uint64_t)get32(b, off + 4) << 32;
}

/* ---- guest RAM: an anonymous mapping with PROT_NONE guard pages on both
 * sides, so any access outside RAM faults even without ASan ---- */
struct tb_ram {
	struct vmm_mem mem;
	uint8_t *map;
	size_t map_len;
};

static inline int tb_ram_init(struct tb_ram *r, uint64_t size)
{
	const size_t guard = 1 << 16;

	r->map_len = size + 2 * guard;
	r->map = mmap(NULL, r->map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r->map == MAP_FAILED)
		return -errno;
	if (mprotect(r->map + guard, size, PROT_READ | PROT_WRITE) < 0)
		return -errno;
	vmm_mem_layout(&r->mem, r->map + guard, size, -1);
	return 0;
}

static inline void tb_ram_exit(struct tb_ram *r)
{
	if (r->map && r->map != MAP_FAILED)
		munmap(r->map, r->map_len);
	r->map = NULL;
}

static inline uint8_t *gpa(struct tb_ram *r, uint64_t a, uint64_t len)
{
	uint8_t *p = vmm_mem_ptr(&r->mem, a, len);

	if (!p) {
		fprintf(stderr, "test bug: guest range 0x%llx+%llu not in RAM\n",
			(unsigned long long)a, (unsigned long long)len);
		exit(1);
	}
	return p;
}

/* ---- temporary files ---- */
static char tb_dir[] = "/tmp/cowvm-test-boot-XXXXXX";
static int tb_dir_made;

static inline const char *tb_path(const char *name)
{
	static char buf[8][256];
	static int i;
	char *p = buf[i++ % 8];

	if (!tb_dir_made) {
		if (!mkdtemp(tb_dir)) {
			perror("mkdtemp");
			exit(1);
		}
		tb_dir_made = 1;
	}
	snprintf(p, 256, "%s/%s", tb_dir, name);
	return p;
}

static inline const char *tb_write(const char *name, const void *data, size_t len)
{
	const char *p = tb_path(name);
	FILE *f = fopen(p, "wb");

	if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f)) {
		perror(p);
		exit(1);
	}
	return p;
}

static inline void tb_cleanup(void)
{
	char cmd[300];

	if (tb_dir_made) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tb_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "warning: could not remove %s\n", tb_dir);
	}
}

/* ---- synthetic bzImage ---- */
struct tb_bz {
	uint16_t version;          /* 0x20F */
	uint16_t xloadflags;       /* XLF_KERNEL_64 = 1 */
	uint8_t setup_sects;
	uint8_t loadflags;         /* LOADED_HIGH = 1 */
	uint8_t relocatable;
	uint32_t kernel_alignment;
	uint32_t initrd_addr_max;
	uint32_t cmdline_size;
	uint32_t init_size;
	uint64_t pref_address;
	uint32_t payload_offset, payload_length;
	const uint8_t *code;       /* protected-mode part */
	size_t code_len;
};

static inline struct tb_bz tb_bz_default(const uint8_t *code, size_t len)
{
	return (struct tb_bz){
		.version = 0x020F, .xloadflags = 1 | 2, .setup_sects = 3, .loadflags = 1,
		.relocatable = 1, .kernel_alignment = 0x200000, .initrd_addr_max = 0x7fffffff,
		.cmdline_size = 2047, .init_size = 0x400000, .pref_address = 0x1000000,
		.code = code, .code_len = len,
	};
}

/* Returns a malloc'd image; *len its size. */
static inline uint8_t *tb_bz_build(const struct tb_bz *z, size_t *len)
{
	size_t setup = ((size_t)(z->setup_sects ? z->setup_sects : 4) + 1) * 512;
	uint8_t *b = calloc(1, setup + z->code_len);

	put8(b, 0x1F1, z->setup_sects);
	put16(b, 0x1FE, 0xAA55);
	put8(b, 0x200, 0xEB);              /* jmp short: header ends at 0x202 + 0x6A */
	put8(b, 0x201, 0x6A);
	memcpy(b + 0x202, "HdrS", 4);
	put16(b, 0x206, z->version);
	put8(b, 0x211, z->loadflags);
	put32(b, 0x214, 0x100000);
	put32(b, 0x22C, z->initrd_addr_max);
	put32(b, 0x230, z->kernel_alignment);
	put8(b, 0x234, z->relocatable);
	put16(b, 0x236, z->xloadflags);
	put32(b, 0x238, z->cmdline_size);
	put32(b, 0x248, z->payload_offset);
	put32(b, 0x24C, z->payload_length);
	put64(b, 0x258, z->pref_address);
	put32(b, 0x260, z->init_size);
	memcpy(b + setup, z->code, z->code_len);
	*len = setup + z->code_len;
	return b;
}

/* ---- synthetic ELF with a PVH note ---- */
struct tb_seg {
	uint64_t paddr, filesz, memsz;
	uint8_t fill;                  /* file bytes are fill, fill+1, ... */
};

struct tb_elf {
	int is64;
	uint16_t machine;              /* 62 x86-64, 3 i386 */
	int nsegs;
	struct tb_seg segs[4];
	int note;                      /* 0 none, 1 PT_NOTE, 2 SHT_NOTE section only */
	uint32_t note_descsz;          /* 4 or 8 normally */
	uint64_t entry;
};

#define TB_ELF_DATA 0x1000           /* segment data starts here in the file */
#define TB_ELF_SHDR_SIZE(is64) ((is64) ? 64 : 40)
#define TB_PVH_NOTE 0x814             /* file offset of the PVH note header */
#define TB_NOTE_SIZE(e) (20 + 16 + (((e)->note_descsz + 3) & ~3u) + 12)

/* Layout: ehdr | phdrs | note at 0x800 | (section headers at 0xC00) |
 * segments at TB_ELF_DATA, each 0x1000-aligned. Returns a malloc'd image. */
static inline uint8_t *tb_elf_build(const struct tb_elf *e, size_t *len)
{
	size_t ehsz = e->is64 ? 64 : 52, phsz = e->is64 ? 56 : 32;
	size_t off = TB_ELF_DATA, size = TB_ELF_DATA;
	int nph = e->nsegs + (e->note == 1);
	uint8_t *b;

	for (int i = 0; i < e->nsegs; i++)
		size += (e->segs[i].filesz + 0xFFF) & ~0xFFFULL;
	b = calloc(1, size);
	memcpy(b, "\x7f" "ELF", 4);
	b[4] = e->is64 ? 2 : 1;
	b[5] = 1;                          /* little-endian */
	b[6] = 1;
	put16(b, 16, 2);                   /* ET_EXEC */
	put16(b, 18, e->machine);
	put32(b, 20, 1);
	if (e->is64) {
		put64(b, 24, e->entry);
		put64(b, 32, ehsz);        /* e_phoff */
		put64(b, 40, e->note == 2 ? 0xC00 : 0);
		put16(b, 52, (uint16_t)ehsz);
		put16(b, 54, (uint16_t)phsz);
		put16(b, 56, (uint16_t)nph);
		put16(b, 58, 64);
		put16(b, 60, e->note == 2 ? 2 : 0);
	} else {
		put32(b, 24, (uint32_t)e->entry);
		put32(b, 28, (uint32_t)ehsz);
		put32(b, 32, e->note == 2 ? 0xC00 : 0);
		put16(b, 40, (uint16_t)ehsz);
		put16(b, 42, (uint16_t)phsz);
		put16(b, 44, (uint16_t)nph);
		put16(b, 46, 40);
		put16(b, 48, e->note == 2 ? 2 : 0);
	}
	for (int i = 0; i < nph; i++) {
		uint8_t *p = b + ehsz + i * phsz;
		int is_note = i == e->nsegs;
		uint32_t type = is_note ? 4 : 1;
		uint64_t o = is_note ? 0x800 : off, pa = is_note ? 0 : e->segs[i].paddr;
		uint64_t fs = is_note ? 0 : e->segs[i].filesz, ms = is_note ? 0 : e->segs[i].memsz;

		if (is_note)
			fs = ms = TB_NOTE_SIZE(e);
		if (e->is64) {
			put32(p, 0, type);
			put64(p, 8, o);
			put64(p, 16, pa);
			put64(p, 24, pa);
			put64(p, 32, fs);
			put64(p, 40, ms);
			put64(p, 48, is_note ? 4 : 0x1000);
		} else {
			put32(p, 0, type);
			put32(p, 4, (uint32_t)o);
			put32(p, 8, (uint32_t)pa);
			put32(p, 12, (uint32_t)pa);
			put32(p, 16, (uint32_t)fs);
			put32(p, 20, (uint32_t)ms);
			put32(p, 28, is_note ? 4 : 0x1000);
		}
		if (!is_note) {
			for (uint64_t j = 0; j < fs; j++)
				b[off + j] = (uint8_t)(e->segs[i].fill + j);
			off += (fs + 0xFFF) & ~0xFFFULL;
		}
	}
	if (e->note) {
		/* An unrelated note first, then the PVH one, then an empty note. */
		put32(b, 0x800, 4);
		put32(b, 0x804, 4);
		put32(b, 0x808, 3);          /* NT_GNU_BUILD_ID */
		memcpy(b + 0x80C, "GNU", 4);
		put32(b, 0x810, 0x12345678);
		put32(b, TB_PVH_NOTE, 4);
		put32(b, TB_PVH_NOTE + 4, e->note_descsz);
		put32(b, TB_PVH_NOTE + 8, 18);
		memcpy(b + TB_PVH_NOTE + 12, "Xen", 4);
		put64(b, TB_PVH_NOTE + 16, e->entry);   /* 4 or 8 bytes are used */
	}
	if (e->note == 2) {
		/* section 0 null, section 1 SHT_NOTE at 0x800 */
		uint8_t *s = b + 0xC00 + TB_ELF_SHDR_SIZE(e->is64);
		uint64_t sz = TB_NOTE_SIZE(e);

		put32(s, 4, 7);              /* SHT_NOTE */
		if (e->is64) {
			put64(s, 24, 0x800);
			put64(s, 32, sz);
			put64(s, 48, 4);
		} else {
			put32(s, 16, 0x800);
			put32(s, 20, (uint32_t)sz);
			put32(s, 32, 4);
		}
	}
	*len = size;
	return b;
}

static inline struct tb_elf tb_elf_default(void)
{
	return (struct tb_elf){
		.is64 = 1, .machine = 62, .nsegs = 2, .note = 1, .note_descsz = 4,
		.entry = 0x100010,
		.segs = {
			{ .paddr = 0x100000, .filesz = 0x1800, .memsz = 0x1800, .fill = 0x10 },
			{ .paddr = 0x200000, .filesz = 0x800, .memsz = 0x3000, .fill = 0x80 },
		},
	};
}

/* Expect vmm_boot_load() to fail with a message containing @want. */
static inline void tb_expect_load_error(struct tb_ram *r, const char *kernel, const char *initrd,
					const char *cmdline, const char *want, const char *what)
{
	struct vmm_boot_cfg cfg = { .kernel_path = kernel, .initrd_path = initrd,
				    .cmdline = cmdline, .ncpus = 1 };
	struct vmm_boot_entry be;
	struct ut_err err;
	int rc;

	ut_err_clear(&err);
	rc = vmm_boot_load(&r->mem, &cfg, &be, &err);
	CHECK(rc < 0, "%s: loaded, expected an error with '%s'", what, want);
	if (rc < 0) {
		CHECK(strstr(err.msg, want) != NULL, "%s: message '%s' lacks '%s'", what, err.msg, want);
		CHECK(strncmp(err.msg, "unable to load '", 16) == 0, "%s: message '%s' lacks the prefix",
		      what, err.msg);
	}
	printf("  %-34s -> %s\n", what, err.msg);
}

#endif
