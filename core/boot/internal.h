/* core/boot/internal.h — shared between the files of core/boot/ only.
 *
 * Messages set by these functions name the problem but not the kernel file;
 * the public entry points (boot.c, probe.c, extract.c) add "unable to load
 * 'FILE': " or "'FILE': " in front.
 */
#ifndef VMM_BOOT_INTERNAL_H
#define VMM_BOOT_INTERNAL_H

#include <stdint.h>
#include <stddef.h>

#include "core/boot/boot.h"
#include "core/boot/bootparam.h"
#include "core/mem.h"
#include "util/err.h"

#define MIB(x) ((uint64_t)(x) << 20)

/* ---- file.c: bounded reads from a kernel or initrd file ---- */

struct vmm_boot_file {
	int fd;
	uint64_t size;
	const char *path;
};

/* Open @path read-only and record its size (regular files only). 0 or -errno
 * with "unable to open 'PATH': ..." in @err; f->fd is -1 on failure. */
int vmm_boot_file_open(struct vmm_boot_file *f, const char *path, struct ut_err *err);
/* Close; safe on a failed or closed file. */
void vmm_boot_file_close(struct vmm_boot_file *f);
/* Read [off, off+len) exactly; -EINVAL "... beyond the end of the file" when the
 * range is not entirely inside the file, -EIO on a short read. @what names the
 * data in the message ("program headers"). */
int vmm_boot_file_read(const struct vmm_boot_file *f, uint64_t off, void *buf, uint64_t len,
		       const char *what, struct ut_err *err);
/* Read [off, off+len) of the file into guest RAM at @gpa; -EFAULT when the guest
 * range is not entirely RAM, -EINVAL when the file range is outside the file. */
int vmm_boot_file_to_guest(const struct vmm_boot_file *f, uint64_t off, uint64_t len,
			   const struct vmm_mem *mem, uint64_t gpa, const char *what,
			   struct ut_err *err);

/* ---- what a format loader tells boot.c ---- */

struct vmm_boot_kernel {
	enum vmm_kernel_format format;
	uint64_t entry;
	uint64_t start, end;          /* guest range the kernel needs, end exclusive */
	uint64_t initrd_limit;        /* the initrd must end at or below this (exclusive) */
	uint64_t cmdline_max;         /* longest command line (without NUL) */
	struct bp_setup_header hdr;   /* bzImage: the header as in the file (LE) */
	uint32_t hdr_len;             /* bzImage: header bytes present (from 0x1F1) */
};

/* ---- bzimage.c ---- */

/* Validate the bzImage setup header of @f: 'HdrS', protocol >= 2.06, loaded
 * high, XLF_KERNEL_64, setup size inside the file. Fills @k->hdr/@k->hdr_len
 * and, if @setup_size, the size of the real-mode part (the protected-mode code
 * starts there). -ENOEXEC with a message for a bzImage we cannot boot,
 * -ENODATA (no message) when @f has no 'HdrS' magic at all. */
int vmm_bzimage_parse(const struct vmm_boot_file *f, struct vmm_boot_kernel *k,
		      uint64_t *setup_size, struct ut_err *err);
/* Load the protected-mode code at VMM_KERNEL_GPA; fill @k (entry = load + 0x200,
 * the range it needs including init_size, initrd and command-line limits). */
int vmm_bzimage_load(const struct vmm_boot_file *f, const struct vmm_mem *mem,
		     struct vmm_boot_kernel *k, struct ut_err *err);
/* Write boot_params at VMM_BOOT_PARAMS_GPA from @k->hdr and @be (command
 * line, initrd, e820). */
int vmm_bzimage_write_params(const struct vmm_mem *mem, const struct vmm_boot_kernel *k,
			     const struct vmm_boot_entry *be, struct ut_err *err);

/* ---- elf.c: validated ELF32/ELF64 little-endian program headers ---- */

#define VMM_ELF_MAX_PHNUM 128

struct vmm_elf_phdr {
	uint32_t type;
	uint64_t offset, paddr, filesz, memsz, align;
};

struct vmm_elf {
	int is64;
	uint16_t machine;
	uint16_t type;
	uint32_t phnum;
	struct vmm_elf_phdr *ph;      /* phnum entries, each inside the file */
	uint64_t shoff;               /* section headers, checked only when used */
	uint16_t shentsize, shnum;
};

/* 1 when @f starts with the ELF magic, 0 otherwise (or when unreadable). */
int vmm_elf_is_elf(const struct vmm_boot_file *f);
/* Read and validate the ELF header and program headers (each PT_LOAD/PT_NOTE
 * range inside the file, filesz <= memsz, no overflow). -ENOEXEC with a
 * message for a malformed or unsupported ELF. Free with vmm_elf_free(). */
int vmm_elf_read(const struct vmm_boot_file *f, struct vmm_elf *e, struct ut_err *err);
void vmm_elf_free(struct vmm_elf *e);
/* Find the note (@name, @type) in PT_NOTE segments, or failing that in
 * SHT_NOTE sections. Copies up to @desc_max descriptor bytes to @desc and sets
 * *@desc_len to the descriptor's full size. 1 found, 0 not found, -ENOEXEC
 * with a message for malformed notes. */
int vmm_elf_find_note(const struct vmm_boot_file *f, const struct vmm_elf *e,
		      const char *name, uint32_t type, void *desc, size_t desc_max,
		      size_t *desc_len, struct ut_err *err);
/* Short description for messages: "ELF64 x86-64 executable". */
void vmm_elf_describe(const struct vmm_elf *e, char *buf, size_t len);

/* ---- pvh.c ---- */

/* Find the PVH entry point of ELF @f: 1 and *@entry, 0 when the ELF has no
 * PVH note, -ENOEXEC with a message when malformed. */
int vmm_pvh_find_entry(const struct vmm_boot_file *f, const struct vmm_elf *e,
		       uint64_t *entry, struct ut_err *err);
/* Load every PT_LOAD segment at p_paddr (validated: in RAM, above 1 MiB, inside
 * the file), zero its bss, and fill @k. */
int vmm_pvh_load(const struct vmm_boot_file *f, const struct vmm_mem *mem,
		 struct vmm_boot_kernel *k, struct ut_err *err);
/* Write hvm_start_info (+ memmap, module list) at VMM_BOOT_PARAMS_GPA. */
int vmm_pvh_write_start_info(const struct vmm_mem *mem, const struct vmm_boot_entry *be,
			     struct ut_err *err);

/* ---- cpu.c ---- */

/* Write the boot GDT (and, for a bzImage, the identity page tables) the entry
 * state of vmm_boot_setup_cpu() relies on. */
int vmm_boot_write_cpu_tables(const struct vmm_mem *mem, enum vmm_kernel_format fmt,
			      struct ut_err *err);

/* ---- probe.c ---- */

/* Detect the format of the open file @f; the message in @err does not name
 * the file. */
int vmm_boot_probe_file(const struct vmm_boot_file *f, enum vmm_kernel_format *fmt,
			struct ut_err *err);

#endif
