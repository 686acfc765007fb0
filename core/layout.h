/* core/layout.h — the guest's physical address map, I/O ports and IRQs.
 *
 * This is the contract between the VMM, the boot loaders and the test guest.
 *
 *   0x0000_0000 .. 0x0009_FBFF  RAM (e820 RAM)
 *   0x0009_FC00 .. 0x000F_FFFF  reserved (EBDA: MP table at VMM_MPTABLE_GPA; BIOS area)
 *   0x0010_0000 .. low_end      RAM; low_end = min(ram, VMM_MMIO_HOLE_START)
 *   0xC000_0000 .. 0xFFFF_FFFF  MMIO hole (not RAM):
 *       0xC000_0000 .. 0xFEBF_FFFF  PCI memory BARs (assigned by the VMM, 32-bit)
 *       0xFEC0_0000                 IOAPIC (in-kernel irqchip)
 *       0xFEE0_0000                 LAPIC  (in-kernel irqchip)
 *   0x1_0000_0000 .. +rest      RAM above 4 GiB when ram > VMM_MMIO_HOLE_START
 *
 * Low memory used by the boot loaders (all below 1 MiB, all inside e820 RAM
 * except the MP table):
 *   VMM_BOOT_GDT_GPA      GDT for the boot CPU
 *   VMM_BOOT_IDT_GPA      empty IDT
 *   VMM_BOOT_PARAMS_GPA   Linux boot_params (zero page) / PVH hvm_start_info
 *   VMM_BOOT_PML4_GPA     identity page tables (PML4, PDPT, PDs) for 64-bit entry
 *   VMM_BOOT_CMDLINE_GPA  kernel command line (up to VMM_BOOT_CMDLINE_MAX)
 *   VMM_MPTABLE_GPA       MP floating pointer + MP config table (EBDA)
 *   VMM_ACPI_GPA          ACPI tables: RSDP (where Linux scans for it), XSDT,
 *                         FADT, MADT, DSDT — in the reserved BIOS area
 *   VMM_KERNEL_GPA        kernel image (1 MiB)
 */
#ifndef VMM_LAYOUT_H
#define VMM_LAYOUT_H

#define VMM_MMIO_HOLE_START   0xC0000000ULL
#define VMM_MMIO_HOLE_END     0x100000000ULL
#define VMM_HIGH_RAM_START    0x100000000ULL

#define VMM_PCI_MMIO_START    0xC0000000ULL
#define VMM_PCI_MMIO_END      0xFEC00000ULL
#define VMM_IOAPIC_GPA        0xFEC00000ULL
#define VMM_LAPIC_GPA         0xFEE00000ULL

#define VMM_BOOT_GDT_GPA      0x00000500ULL
#define VMM_BOOT_IDT_GPA      0x00000520ULL
#define VMM_BOOT_PARAMS_GPA   0x00007000ULL
#define VMM_BOOT_PML4_GPA     0x00009000ULL   /* PML4 9000, PDPT A000, PDs B000.. */
#define VMM_BOOT_CMDLINE_GPA  0x00020000ULL
#define VMM_BOOT_CMDLINE_MAX  0x00010000ULL
#define VMM_EBDA_START        0x0009FC00ULL
#define VMM_MPTABLE_GPA       0x0009FC00ULL
#define VMM_ACPI_GPA          0x000E0000ULL
#define VMM_ACPI_MAX          0x00010000ULL
#define VMM_BIOS_END          0x00100000ULL
#define VMM_KERNEL_GPA        0x00100000ULL

/* I/O ports */
#define VMM_PORT_COM1         0x3F8   /* 16550A, IRQ 4 */
#define VMM_IRQ_COM1          4
#define VMM_PORT_I8042_DATA   0x60
#define VMM_PORT_I8042_CMD    0x64    /* write 0xFE: reset -> the run ends (status 0) */
#define VMM_PORT_DEBUG_EXIT   0x501   /* write V (8/16/32-bit): the run ends, status V & 0xff */
#define VMM_PORT_ACPI_SLEEP   0x600   /* ACPI sleep control (FADT): SLP_EN with SLP_TYP 5 = poweroff */
#define VMM_PORT_PCI_ADDR     0xCF8   /* PCI configuration mechanism #1; 0xCF9 bit 2 = reset */
#define VMM_PORT_PCI_DATA     0xCFC

/* The ACPI generic event device (power button requests), edge-triggered. */
#define VMM_IRQ_GED           9

/* Legacy INTx lines given to PCI slots: slot N (device N on bus 0) gets
 * VMM_PCI_IRQ_BASE + (N % VMM_PCI_IRQ_COUNT), routed through the IOAPIC,
 * level-triggered, active high (described in the MP table). */
#define VMM_PCI_IRQ_BASE      5
#define VMM_PCI_IRQ_COUNT     4       /* 5, 6, 7, 9 are not used: 5..8 */

#endif
