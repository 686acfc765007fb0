/* tests/guest/pagetables.S — identity page tables built at link time.
 *
 * PML4[0] -> PDPT; PDPT[0..3] -> four page directories of 2 MiB pages
 * mapping 0..4 GiB, every entry present, writable and user-accessible
 * (ring 3 does all the work, including DMA buffers and MMIO).
 * 0..3 GiB is write-back RAM; 3..4 GiB (the MMIO hole, VMM_MMIO_HOLE_START)
 * is mapped PCD|PWT (uncached).  PDPT[4..511] start empty: mem.c fills them
 * from ring 3 for RAM above 4 GiB.  Nothing here runs; it is data.
 */
#define PTE_P    0x001
#define PTE_RW   0x002
#define PTE_US   0x004
#define PTE_PWT  0x008
#define PTE_PCD  0x010
#define PTE_PS   0x080

	.section .data.pagetables, "aw"
	.balign 4096
	.globl pt_pml4, pt_pdpt, pt_pd
pt_pml4:
	.quad pt_pdpt + (PTE_P | PTE_RW | PTE_US)
	.fill 511, 8, 0

pt_pdpt:
	.quad pt_pd + 0x0000 + (PTE_P | PTE_RW | PTE_US)
	.quad pt_pd + 0x1000 + (PTE_P | PTE_RW | PTE_US)
	.quad pt_pd + 0x2000 + (PTE_P | PTE_RW | PTE_US)
	.quad pt_pd + 0x3000 + (PTE_P | PTE_RW | PTE_US)
	.fill 508, 8, 0

pt_pd:
	.set pa, 0
	.rept 3 * 512                   /* 0 .. 3 GiB: RAM, write-back */
	.quad pa + (PTE_P | PTE_RW | PTE_US | PTE_PS)
	.set pa, pa + 0x200000
	.endr
	.rept 512                       /* 3 .. 4 GiB: MMIO hole, uncached */
	.quad pa + (PTE_P | PTE_RW | PTE_US | PTE_PS | PTE_PWT | PTE_PCD)
	.set pa, pa + 0x200000
	.endr

	.section .note.GNU-stack, "", @progbits
