/* core/boot/cpu.c — the boot CPU's starting mode: the GDT and identity page
 * tables in guest RAM, and the registers set through KVM.
 *
 *   bzImage (64-bit boot protocol): long mode, paging on with an identity map
 *     of 0-4 GiB in 2 MiB pages, CS = __BOOT_CS 0x10 (64-bit code),
 *     DS/ES/SS/FS/GS = __BOOT_DS 0x18, rsi = boot_params, interrupts off.
 *   PVH: 32-bit protected mode, paging off, flat 4 GiB CS 0x10 / data 0x18,
 *     TR a 32-bit TSS (0x08), ebx = hvm_start_info, interrupts off.
 */
#include "core/boot/internal.h"
#include "core/layout.h"

#include <endian.h>
#include <errno.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>

#define SEL_TSS   0x08
#define SEL_CODE  0x10
#define SEL_DATA  0x18
#define GDT_ENTRIES 4
_Static_assert(VMM_BOOT_GDT_GPA + GDT_ENTRIES * 8 <= VMM_BOOT_IDT_GPA, "GDT fits before IDT");

#define CR0_PE    (1ULL << 0)
#define CR0_ET    (1ULL << 4)
#define CR0_PG    (1ULL << 31)
#define CR4_PAE   (1ULL << 5)
#define EFER_LME  (1ULL << 8)
#define EFER_LMA  (1ULL << 10)

#define PTE_P     (1ULL << 0)
#define PTE_RW    (1ULL << 1)
#define PTE_PS    (1ULL << 7)

#define PT_PDPT_GPA   (VMM_BOOT_PML4_GPA + 0x1000)
#define PT_PD_GPA     (VMM_BOOT_PML4_GPA + 0x2000)
#define PT_GIB        4                   /* identity-mapped GiB */

#define BOOT_STACK    0x8FF0ULL           /* free page between boot_params and PML4 */

/* Access byte and flags nibble of the descriptors. */
#define ACC_CODE  0x9B   /* present, S, execute/read, accessed */
#define ACC_DATA  0x93   /* present, S, read/write, accessed */
#define ACC_TSS   0x8B   /* present, busy 32/64-bit TSS */
#define FLG_G     0x8
#define FLG_DB    0x4
#define FLG_L     0x2

static uint64_t gdt_entry(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
	return (uint64_t)(limit & 0xFFFF) | ((uint64_t)(base & 0xFFFFFF) << 16) |
	       ((uint64_t)access << 40) | ((uint64_t)((limit >> 16) & 0xF) << 48) |
	       ((uint64_t)(flags & 0xF) << 52) | ((uint64_t)(base >> 24) << 56);
}

int vmm_boot_write_cpu_tables(const struct vmm_mem *mem, enum vmm_kernel_format fmt,
			      struct ut_err *err)
{
	int is64 = fmt == VMM_KERNEL_BZIMAGE;
	uint64_t gdt[GDT_ENTRIES] = {
		0,
		htole64(gdt_entry(0, 0x67, ACC_TSS, 0)),
		htole64(gdt_entry(0, 0xFFFFF, ACC_CODE, is64 ? FLG_G | FLG_L : FLG_G | FLG_DB)),
		htole64(gdt_entry(0, 0xFFFFF, ACC_DATA, FLG_G | FLG_DB)),
	};
	uint64_t *pml4, *pdpt, *pd;
	int r;

	r = vmm_mem_write(mem, VMM_BOOT_GDT_GPA, gdt, sizeof(gdt));
	if (r < 0) {
		r = ut_errf(err, r, "boot GDT does not fit in guest RAM");
		goto out;
	}
	if (!is64) {
		r = 0;
		goto out;
	}
	pml4 = vmm_mem_ptr(mem, VMM_BOOT_PML4_GPA, 0x1000);
	pdpt = vmm_mem_ptr(mem, PT_PDPT_GPA, 0x1000);
	pd = vmm_mem_ptr(mem, PT_PD_GPA, PT_GIB * 0x1000);
	if (!pml4 || !pdpt || !pd) {
		r = ut_errf(err, -EFAULT, "boot page tables do not fit in guest RAM");
		goto out;
	}
	memset(pml4, 0, 0x1000);
	memset(pdpt, 0, 0x1000);
	pml4[0] = htole64(PT_PDPT_GPA | PTE_P | PTE_RW);
	for (uint64_t g = 0; g < PT_GIB; g++) {
		pdpt[g] = htole64((PT_PD_GPA + g * 0x1000) | PTE_P | PTE_RW);
		for (uint64_t i = 0; i < 512; i++)
			pd[g * 512 + i] = htole64(((g << 30) + (i << 21)) | PTE_P | PTE_RW | PTE_PS);
	}
	r = 0;
out:
	return r;
}

static void flat_seg(struct kvm_segment *s, uint16_t sel, uint8_t type, int l, int db)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xFFFFFFFF;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->dpl = 0;
	s->db = (uint8_t)db;
	s->s = 1;
	s->l = (uint8_t)l;
	s->g = 1;
}

int vmm_boot_setup_cpu(int vcpu_fd, const struct vmm_boot_entry *entry, struct ut_err *err)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	int is64, r;

	if (entry->format != VMM_KERNEL_BZIMAGE && entry->format != VMM_KERNEL_PVH_ELF) {
		r = ut_errf(err, -EINVAL, "unable to set up the boot CPU: no kernel loaded");
		goto out;
	}
	is64 = entry->format == VMM_KERNEL_BZIMAGE;
	if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0) {
		r = ut_errf_sys(err, -errno, "unable to set up the boot CPU: KVM_GET_SREGS");
		goto out;
	}
	flat_seg(&sregs.cs, SEL_CODE, 0xB, is64, !is64);
	flat_seg(&sregs.ds, SEL_DATA, 0x3, 0, 1);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;

	memset(&sregs.tr, 0, sizeof(sregs.tr));
	sregs.tr.selector = SEL_TSS;
	sregs.tr.limit = 0x67;
	sregs.tr.type = 0xB;                 /* busy TSS */
	sregs.tr.present = 1;

	sregs.gdt.base = VMM_BOOT_GDT_GPA;
	sregs.gdt.limit = GDT_ENTRIES * 8 - 1;
	sregs.idt.base = VMM_BOOT_IDT_GPA;
	sregs.idt.limit = 0;

	sregs.cr0 = CR0_PE | CR0_ET;
	sregs.cr4 = 0;
	sregs.efer = 0;
	sregs.cr3 = 0;
	if (is64) {
		sregs.cr0 |= CR0_PG;
		sregs.cr3 = VMM_BOOT_PML4_GPA;
		sregs.cr4 = CR4_PAE;
		sregs.efer = EFER_LME | EFER_LMA;
	}
	if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) < 0) {
		r = ut_errf_sys(err, -errno, "unable to set up the boot CPU: KVM_SET_SREGS");
		goto out;
	}

	memset(&regs, 0, sizeof(regs));
	regs.rflags = 2;
	regs.rip = entry->entry;
	regs.rsp = BOOT_STACK;
	if (is64)
		regs.rsi = entry->params_gpa;
	else
		regs.rbx = entry->params_gpa;
	if (ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0) {
		r = ut_errf_sys(err, -errno, "unable to set up the boot CPU: KVM_SET_REGS");
		goto out;
	}
	r = 0;
out:
	return r;
}
