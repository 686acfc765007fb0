/* core/boot/boot.h — loading a kernel into guest RAM and setting up the boot CPU.
 *
 * Formats (detected from the file's contents, never its name):
 *   - Linux bzImage, boot protocol >= 2.06, entered at its 64-bit entry point
 *     (startup_64 = code32_start + 0x200) in long mode with identity paging, rsi =
 *     boot_params. boot_params holds e820, command line and initrd.
 *   - ELF64/ELF32 vmlinux or other ELF with a Xen PVH note
 *     (XEN_ELFNOTE_PHYS32_ENTRY): entered in 32-bit protected mode, paging off,
 *     ebx = hvm_start_info (version 1, with memmap, cmdline, initrd module).
 *     The test guest (build/testguest.elf) is such an ELF.
 * Anything else is refused with a message naming the file and what was found.
 *
 * Also built here: the e820 map (core/boot/e820.c), the MP table for SMP
 * (core/boot/mptable.c), and the boot CPU's registers (core/boot/cpu.c).
 * Both an MP table and ACPI tables (core/boot/acpi.c) describe the CPUs and
 * interrupt routing: kernels without CONFIG_X86_MPPARSE (Debian's cloud kernel)
 * rely on ACPI. The RSDP's address is also passed directly (boot_params
 * acpi_rsdp_addr, hvm_start_info rsdp_paddr).
 *
 * Files: bootparam.h / pvhinfo.h (on-disk and in-memory layouts), file.c
 * (bounded reads), probe.c, bzimage.c, elf.c, pvh.c, e820.c, mptable.c, cpu.c,
 * acpi.c + aml.c, extract.c (vmlinux out of a bzImage), boot.c (vmm_boot_load
 * order, initrd placement).
 */
#ifndef VMM_BOOT_H
#define VMM_BOOT_H

#include <stdint.h>
#include <stddef.h>

#include "core/mem.h"
#include "util/err.h"

enum vmm_kernel_format {
	VMM_KERNEL_UNKNOWN = 0,
	VMM_KERNEL_BZIMAGE,
	VMM_KERNEL_PVH_ELF,
};

struct vmm_boot_cfg {
	const char *kernel_path;   /* required */
	const char *initrd_path;   /* NULL for none */
	const char *cmdline;       /* NULL is "" */
	int ncpus;                 /* >= 1, listed in the MP table */
};

/* One range of the guest's E820 memory map. */
#define VMM_E820_RAM       1
#define VMM_E820_RESERVED  2
#define VMM_E820_MAX       8

struct vmm_e820_range {
	uint64_t addr;
	uint64_t size;
	uint32_t type;           /* VMM_E820_RAM or VMM_E820_RESERVED */
};

/* What the boot CPU needs to start; filled by vmm_boot_load(). */
struct vmm_boot_entry {
	enum vmm_kernel_format format;
	uint64_t entry;          /* rip (64-bit) or eip (PVH 32-bit) */
	uint64_t params_gpa;     /* boot_params (rsi) or hvm_start_info (ebx) */
	uint64_t initrd_gpa;     /* 0 if none */
	uint64_t initrd_size;
	uint64_t kernel_start;   /* guest range the kernel occupies or needs: */
	uint64_t kernel_end;     /*   [kernel_start, kernel_end) */
	uint64_t cmdline_gpa;    /* NUL-terminated command line */
	uint64_t rsdp_gpa;       /* ACPI RSDP */
	int e820_count;          /* the map given to the guest */
	struct vmm_e820_range e820[VMM_E820_MAX];
};

/* "bzimage", "pvh" or "unknown" (stable: printed by `cowvm run --verbose`). */
const char *vmm_kernel_format_name(enum vmm_kernel_format fmt);

/* Detect the format of the kernel at @path: 0 and *fmt set, or -errno with @err
 * naming the file ("'x': not a Linux bzImage or PVH ELF kernel (first bytes:
 * 50 4b 03 04 ...)"); a bzImage older than protocol 2.06 or without a 64-bit
 * entry point, and a malformed ELF, get their own messages. */
int vmm_boot_probe(const char *path, enum vmm_kernel_format *fmt, struct ut_err *err);

/* Load kernel, initrd and command line into @mem, and write boot_params or
 * hvm_start_info, the e820 map, the MP table and ACPI tables for @cfg->ncpus
 * CPUs (1..VMM_MPTABLE_MAX_CPUS), plus the GDT/page tables the entry needs. Fills
 * @entry. The initrd goes page-aligned as high as possible below
 * min(initrd_addr_max + 1, end of low RAM), above everything the kernel needs
 * (for a bzImage: up to pref_address + init_size). Every offset and size read
 * from the files is checked; nothing is written outside @mem. Returns 0 or -errno with @err
 * set ("unable to load 'bzImage': initrd 'x' (300 MiB) does not fit below
 * initrd_addr_max 0x7fffffff"). */
int vmm_boot_load(struct vmm_mem *mem, const struct vmm_boot_cfg *cfg,
		  struct vmm_boot_entry *entry, struct ut_err *err);

/* Set the boot CPU's registers (KVM_SET_SREGS, KVM_SET_REGS) on @vcpu_fd so it
 * starts at @entry in the mode its format requires: bzImage in long mode (CS
 * 0x10 64-bit, DS/ES/SS 0x18, CR0 PE|PG, CR4 PAE, EFER LME|LMA, CR3 the
 * identity map of 0-4 GiB, rsi = boot_params); PVH in 32-bit protected mode
 * (flat CS 0x10 / data 0x18, TR 0x08, CR0 PE, ebx = hvm_start_info). rflags 2
 * (interrupts off). Call after vmm_boot_load() (which writes the GDT and page
 * tables) and after KVM_SET_CPUID2: KVM refuses EFER.LME unless the vCPU's
 * CPUID has long mode. Returns 0 or -errno with @err set. */
int vmm_boot_setup_cpu(int vcpu_fd, const struct vmm_boot_entry *entry, struct ut_err *err);

/* Build the E820 map for @mem into @map (room for @max entries):
 * [0, VMM_EBDA_START) RAM, [VMM_EBDA_START, 1 MiB) reserved, [1 MiB, low_end)
 * RAM, and [4 GiB, 4 GiB + high size) RAM when there is RAM above the hole.
 * Returns the number of entries, or -ENOSPC when @max is too small and
 * -EINVAL when @mem has less than 2 MiB of low RAM. */
int vmm_e820_build(const struct vmm_mem *mem, struct vmm_e820_range *map, int max);

/* Write the Intel MP 1.4 floating pointer and configuration table at
 * VMM_MPTABLE_GPA for @ncpus CPUs (APIC IDs 0..ncpus-1, CPU 0 the BSP), the
 * ISA and PCI buses, one IOAPIC (ID @ncpus) at VMM_IOAPIC_GPA, ISA IRQs 0-15
 * identity-routed to IOAPIC pins 0-15, PCI slot N INTA# routed per
 * core/layout.h, LINT0 ExtINT and LINT1 NMI. Returns 0, or -EINVAL for
 * @ncpus outside 1..VMM_MPTABLE_MAX_CPUS, -EFAULT when the table does not fit
 * in @mem. On success *@end (if non-NULL) is the first byte after the table. */
#define VMM_MPTABLE_MAX_CPUS 254
int vmm_mptable_write(const struct vmm_mem *mem, int ncpus, uint64_t *end, struct ut_err *err);

/* Write the ACPI tables (RSDP, XSDT, FADT, MADT, DSDT; see core/boot/acpi.c)
 * for @ncpus CPUs at VMM_ACPI_GPA. *rsdp_gpa (may be NULL) gets the RSDP's
 * address. Returns 0 or -errno with @err set. */
int vmm_acpi_write(const struct vmm_mem *mem, int ncpus, uint64_t *rsdp_gpa, struct ut_err *err);

/* Extract the vmlinux ELF from the bzImage at @bzimage into a new file
 * @out_path (created or truncated, mode 0644 before umask). The payload
 * (setup header payload_offset/payload_length) may be gzip, xz, zstd, lz4
 * (legacy frame) or lzma; other methods are refused with their name. The
 * result must be an ELF file. Returns 0 or -errno with @err set
 * ("unable to extract 'bzImage': ..."). */
int vmm_bzimage_extract(const char *bzimage, const char *out_path, struct ut_err *err);

#endif
