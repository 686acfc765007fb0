/* core/boot/acpi.c — the ACPI tables a guest kernel needs to find its CPUs,
 * interrupt controllers, PCI bus and how to power off or reset:
 *
 *   RSDP (rev 2) ─> XSDT ─> FADT (rev 6, hardware-reduced) ─> DSDT
 *                        └─> MADT
 *   FADT: sleep control register = port VMM_PORT_ACPI_SLEEP (S5 = poweroff),
 *         reset register = port 0xCF9 value 6 (handled by core/pci.c).
 *   MADT: one enabled local APIC per vCPU (APIC ID = index), the IOAPIC
 *         (ID = ncpus, GSI base 0), LINT1 = NMI on all CPUs, and the PCI INTx
 *         GSIs declared level / active high (source overrides), as the
 *         in-kernel IOAPIC sees them.
 *   DSDT: \_SB.PCI0 (PNP0A03: bus 0, config ports 0xCF8-0xCFF, I/O and 32-bit
 *         MMIO windows, _PRT with each slot's INTA# on its GSI per
 *         core/layout.h), \_SB.PWRB (PNP0C0C power button) with \_SB.GED0
 *         (ACPI0013 generic event device on edge GSI VMM_IRQ_GED, whose _EVT
 *         notifies PWRB: "stop" on the control socket pulses that GSI), and
 *         \_S5 for poweroff.
 * Debian's cloud kernels are built without MP-table support
 * (CONFIG_X86_MPPARSE unset), so this is how they see more than one CPU.
 * Everything lies at VMM_ACPI_GPA, inside the e820 reserved range below 1 MiB,
 * where Linux's RSDP scan (0xE0000-0xFFFFF) finds it.
 */
#include "core/boot/aml.h"
#include "core/boot/boot.h"
#include "core/layout.h"

#include <errno.h>
#include <string.h>

#define ACPI_HDR_LEN        36
#define FADT_LEN            276
#define FADT_HW_REDUCED     (1u << 20)
#define FADT_RESET_REG_SUP  (1u << 10)
#define FADT_WBINVD         (1u << 0)
#define BOOT_ARCH_LEGACY    (1u << 0)
#define BOOT_ARCH_8042      (1u << 1)
#define BOOT_ARCH_NO_VGA    (1u << 2)
#define GAS_SYSTEM_IO       1
#define MADT_PCAT_COMPAT    1
#define MADT_LAPIC          0
#define MADT_IOAPIC         1
#define MADT_ISO            2
#define MADT_LAPIC_NMI      4
#define ISO_LEVEL_HIGH      0x000D   /* polarity active high (01), trigger level (11) */
#define ACPI_RESET_PORT     0xCF9
#define ACPI_RESET_VALUE    0x06
#define ACPI_SLP_TYP_S5     5

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }

static uint8_t checksum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;

	while (n--)
		s = (uint8_t)(s + *p++);
	return (uint8_t)-s;
}

/* Fill a standard table header (the checksum last, over @len bytes). */
static void header(uint8_t *t, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(t, sig, 4);
	put32(t + 4, len);
	t[8] = rev;
	memcpy(t + 10, "COWVM ", 6);
	memcpy(t + 16, "COWVMTBL", 8);
	put32(t + 24, 1);
	memcpy(t + 28, "CWVM", 4);
	put32(t + 32, 1);
}

static void seal(uint8_t *t, uint32_t len)
{
	t[9] = 0;
	t[9] = checksum(t, len);
}

/* Generic Address Structure: an I/O port of @bits. */
static void gas_io(uint8_t *g, uint16_t port, uint8_t bits)
{
	g[0] = GAS_SYSTEM_IO;
	g[1] = bits;
	g[2] = 0;
	g[3] = 1;   /* byte access */
	put64(g + 4, port);
}

static int build_dsdt(struct vmm_aml *a)
{
	uint8_t crs[128];
	size_t n = 0;

	/* _CRS of PCI0: bus 0..0, config ports, I/O and MMIO windows */
	memcpy(crs + n, (const uint8_t[]){ 0x88, 13, 0, 2, 0x0C, 0 }, 6);      /* WordBusNumber */
	memset(crs + n + 6, 0, 10);
	put16(crs + n + 14, 1);                                                  /* length 1 */
	n += 16;
	memcpy(crs + n, (const uint8_t[]){ 0x47, 1, 0xF8, 0x0C, 0xF8, 0x0C, 1, 8 }, 8); /* IO 0xCF8/8 */
	n += 8;
	memcpy(crs + n, (const uint8_t[]){ 0x88, 13, 0, 1, 0x0C, 3 }, 6);       /* WordIO 0-0xCF7 */
	memset(crs + n + 6, 0, 10);
	put16(crs + n + 10, 0x0CF7);
	put16(crs + n + 14, 0x0CF8);
	n += 16;
	memcpy(crs + n, (const uint8_t[]){ 0x88, 13, 0, 1, 0x0C, 3 }, 6);       /* WordIO 0xD00-0xFFFF */
	memset(crs + n + 6, 0, 10);
	put16(crs + n + 8, 0x0D00);
	put16(crs + n + 10, 0xFFFF);
	put16(crs + n + 14, 0xF300);
	n += 16;
	memcpy(crs + n, (const uint8_t[]){ 0x87, 23, 0, 0, 0x0C, 1 }, 6);       /* DWordMemory RW */
	memset(crs + n + 6, 0, 20);
	put32(crs + n + 10, (uint32_t)VMM_PCI_MMIO_START);
	put32(crs + n + 14, (uint32_t)(VMM_PCI_MMIO_END - 1));
	put32(crs + n + 22, (uint32_t)(VMM_PCI_MMIO_END - VMM_PCI_MMIO_START));
	n += 26;
	crs[n++] = 0x79;                                                         /* EndTag */
	crs[n++] = 0;

	vmm_aml_scope(a, "\\_SB");
	vmm_aml_device(a, "PCI0");
	vmm_aml_name(a, "_HID");
	vmm_aml_eisaid(a, "PNP0A03");
	vmm_aml_name(a, "_UID");
	vmm_aml_int(a, 0);
	vmm_aml_name(a, "_BBN");
	vmm_aml_int(a, 0);
	vmm_aml_name(a, "_CRS");
	vmm_aml_buffer(a, crs, n);
	vmm_aml_name(a, "_PRT");
	vmm_aml_package(a, 32);
	for (int slot = 0; slot < 32; slot++) {
		vmm_aml_package(a, 4);
		vmm_aml_int(a, (uint64_t)slot << 16 | 0xFFFF);   /* any function */
		vmm_aml_int(a, 0);                               /* INTA# */
		vmm_aml_int(a, 0);                               /* hardwired: a GSI */
		vmm_aml_int(a, VMM_PCI_IRQ_BASE + (uint64_t)slot % VMM_PCI_IRQ_COUNT);
		vmm_aml_end(a);
	}
	vmm_aml_end(a);   /* _PRT */
	vmm_aml_end(a);   /* PCI0 */
	vmm_aml_device(a, "PWRB");
	vmm_aml_name(a, "_HID");
	vmm_aml_eisaid(a, "PNP0C0C");
	vmm_aml_end(a);
	vmm_aml_device(a, "GED0");
	vmm_aml_name(a, "_HID");
	vmm_aml_string(a, "ACPI0013");
	vmm_aml_name(a, "_UID");
	vmm_aml_int(a, 0);
	{
		/* Extended Interrupt: consumer, edge, active high, exclusive, one GSI */
		uint8_t irq[] = { 0x89, 6, 0, 0x03, 1, VMM_IRQ_GED, 0, 0, 0, 0x79, 0 };

		vmm_aml_name(a, "_CRS");
		vmm_aml_buffer(a, irq, sizeof(irq));
	}
	vmm_aml_method(a, "_EVT", 1);
	vmm_aml_notify(a, "_SB", "PWRB", 0x80);
	vmm_aml_end(a);   /* _EVT */
	vmm_aml_end(a);   /* GED0 */
	vmm_aml_end(a);   /* \_SB */
	vmm_aml_name(a, "\\_S5");
	vmm_aml_package(a, 2);
	vmm_aml_int(a, ACPI_SLP_TYP_S5);
	vmm_aml_int(a, ACPI_SLP_TYP_S5);
	vmm_aml_end(a);
	return a->err;
}

int vmm_acpi_write(const struct vmm_mem *mem, int ncpus, uint64_t *rsdp_gpa, struct ut_err *err)
{
	uint8_t *base = vmm_mem_ptr(mem, VMM_ACPI_GPA, VMM_ACPI_MAX);
	uint32_t off_rsdp = 0, off_xsdt = 64, off_fadt = 128, off_madt, off_dsdt, madt_len, dsdt_len;
	uint64_t gpa = VMM_ACPI_GPA;
	struct vmm_aml aml;
	uint8_t *t;
	int r;

	if (!base)
		return ut_errf(err, -ENOMEM, "no guest RAM for the ACPI tables at 0x%llx",
			       (unsigned long long)VMM_ACPI_GPA);
	if (ncpus < 1 || ncpus > 254)
		return ut_errf(err, -EINVAL, "ACPI: %d CPUs not supported", ncpus);
	memset(base, 0, VMM_ACPI_MAX);
	madt_len = ACPI_HDR_LEN + 8 + 8 * (uint32_t)ncpus + 12 + 10 * VMM_PCI_IRQ_COUNT + 6;
	off_madt = off_fadt + FADT_LEN;
	off_madt = (off_madt + 15) & ~15u;
	off_dsdt = (off_madt + madt_len + 15) & ~15u;

	vmm_aml_init(&aml);
	r = build_dsdt(&aml);
	if (r) {
		r = ut_errf(err, r, "ACPI: cannot build the DSDT");
		goto out;
	}
	dsdt_len = ACPI_HDR_LEN + (uint32_t)aml.buf.len;
	if (off_dsdt + dsdt_len > VMM_ACPI_MAX) {
		r = ut_errf(err, -E2BIG, "ACPI tables do not fit in %llu bytes",
			    (unsigned long long)VMM_ACPI_MAX);
		goto out;
	}

	/* DSDT */
	t = base + off_dsdt;
	header(t, "DSDT", dsdt_len, 2);
	memcpy(t + ACPI_HDR_LEN, aml.buf.data, aml.buf.len);
	seal(t, dsdt_len);

	/* MADT */
	t = base + off_madt;
	header(t, "APIC", madt_len, 5);
	put32(t + 36, (uint32_t)VMM_LAPIC_GPA);
	put32(t + 40, MADT_PCAT_COMPAT);
	{
		uint8_t *e = t + 44;

		for (int i = 0; i < ncpus; i++, e += 8) {
			e[0] = MADT_LAPIC;
			e[1] = 8;
			e[2] = (uint8_t)i;      /* ACPI processor UID */
			e[3] = (uint8_t)i;      /* APIC ID */
			put32(e + 4, 1);        /* enabled */
		}
		e[0] = MADT_IOAPIC;
		e[1] = 12;
		e[2] = (uint8_t)ncpus;      /* IOAPIC ID, as in the MP table */
		put32(e + 4, (uint32_t)VMM_IOAPIC_GPA);
		put32(e + 8, 0);            /* GSI base */
		e += 12;
		for (int i = 0; i < VMM_PCI_IRQ_COUNT; i++, e += 10) {
			e[0] = MADT_ISO;
			e[1] = 10;
			e[2] = 0;               /* ISA */
			e[3] = (uint8_t)(VMM_PCI_IRQ_BASE + i);
			put32(e + 4, VMM_PCI_IRQ_BASE + (uint32_t)i);
			put16(e + 8, ISO_LEVEL_HIGH);
		}
		e[0] = MADT_LAPIC_NMI;
		e[1] = 6;
		e[2] = 0xFF;                /* all processors */
		put16(e + 3, 0);
		e[5] = 1;                   /* LINT1 */
	}
	seal(t, madt_len);

	/* FADT */
	t = base + off_fadt;
	header(t, "FACP", FADT_LEN, 6);
	put32(t + 40, (uint32_t)(gpa + off_dsdt));
	put16(t + 109, BOOT_ARCH_LEGACY | BOOT_ARCH_8042 | BOOT_ARCH_NO_VGA);
	put32(t + 112, FADT_HW_REDUCED | FADT_RESET_REG_SUP | FADT_WBINVD);
	gas_io(t + 116, ACPI_RESET_PORT, 8);
	t[128] = ACPI_RESET_VALUE;
	t[131] = 0;                     /* FADT minor version */
	put64(t + 140, gpa + off_dsdt);
	gas_io(t + 244, VMM_PORT_ACPI_SLEEP, 8);       /* sleep control */
	gas_io(t + 256, VMM_PORT_ACPI_SLEEP + 1, 8);   /* sleep status */
	memcpy(t + 268, "COWVM\0\0\0", 8);             /* hypervisor vendor */
	seal(t, FADT_LEN);

	/* XSDT */
	t = base + off_xsdt;
	header(t, "XSDT", ACPI_HDR_LEN + 16, 1);
	put64(t + 36, gpa + off_fadt);
	put64(t + 44, gpa + off_madt);
	seal(t, ACPI_HDR_LEN + 16);

	/* RSDP (revision 2) */
	t = base + off_rsdp;
	memcpy(t, "RSD PTR ", 8);
	memcpy(t + 9, "COWVM ", 6);
	t[15] = 2;
	put32(t + 16, 0);               /* no RSDT: XSDT only */
	put32(t + 20, 36);
	put64(t + 24, gpa + off_xsdt);
	t[8] = checksum(t, 20);
	t[32] = checksum(t, 36);
	if (rsdp_gpa)
		*rsdp_gpa = gpa + off_rsdp;
	r = 0;
out:
	vmm_aml_release(&aml);
	return r;
}
