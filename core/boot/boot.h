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

/* What the boot CPU needs to start; filled by vmm_boot_load(). */
struct vmm_boot_entry {
	enum vmm_kernel_format format;
	uint64_t entry;          /* rip (64-bit) or eip (PVH 32-bit) */
	uint64_t params_gpa;     /* boot_params (rsi) or hvm_start_info (ebx) */
	uint64_t initrd_gpa;     /* 0 if none */
	uint64_t initrd_size;
};

/* Detect the format of the kernel at @path: 0 and *fmt set, or -errno with @err
 * naming the file ("'x': not a bzImage or PVH ELF (first bytes: ...)"). */
int vmm_boot_probe(const char *path, enum vmm_kernel_format *fmt, struct ut_err *err);

/* Load kernel, initrd and command line into @mem, and write boot_params or
 * hvm_start_info, the e820 map and the MP table for @cfg->ncpus CPUs, plus the
 * GDT/page tables the entry needs. Fills @entry. Returns 0 or -errno with @err
 * set ("unable to load 'bzImage': initrd 'x' (300 MiB) does not fit below
 * initrd_addr_max 0x7fffffff"). */
int vmm_boot_load(struct vmm_mem *mem, const struct vmm_boot_cfg *cfg,
		  struct vmm_boot_entry *entry, struct ut_err *err);

/* Set the boot CPU's registers (KVM_SET_SREGS, KVM_SET_REGS) on @vcpu_fd so it
 * starts at @entry in the mode its format requires. Returns 0 or -errno. */
int vmm_boot_setup_cpu(int vcpu_fd, const struct vmm_boot_entry *entry, struct ut_err *err);

#endif
