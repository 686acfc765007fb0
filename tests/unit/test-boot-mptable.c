/* tests/unit/test-boot-mptable.c — the Intel MP 1.4 tables for 1, 2 and 4 CPUs,
 * parsed here from raw bytes at the spec's offsets: floating pointer at
 * VMM_MPTABLE_GPA, both checksums, entry count and table length, processor
 * entries (APIC ID = index, BSP flag on CPU 0 only), PCI and ISA buses, the
 * IOAPIC (ID = ncpus, 0xFEC00000), ISA IRQ 0-15 identity routing, PCI INTA#
 * of slots 0-31 per core/layout.h, LINT0 ExtINT and LINT1 NMI.
 */
#include "test-boot-util.h"

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;

	while (n--)
		s += *p++;
	return s;
}

static void check(int ncpus)
{
	struct tb_ram r;
	struct ut_err err;
	uint64_t end = 0;
	const uint8_t *fp, *c, *e;
	uint16_t len, count;
	int cpus = 0, buses = 0, ioapics = 0, isa[16] = { 0 }, pci[32] = { 0 }, lint0 = 0, lint1 = 0;
	int pci_bus = -1, isa_bus = -1;

	if (tb_ram_init(&r, 2ULL << 20) < 0)
		exit(1);
	CHECK(vmm_mptable_write(&r.mem, ncpus, &end, &err) == 0, "%d CPUs: %s", ncpus, err.msg);
	CHECK(end <= 0x100000, "table ends at 0x%llx, above 1 MiB", (unsigned long long)end);

	fp = gpa(&r, VMM_MPTABLE_GPA, 16);
	CHECK(!memcmp(fp, "_MP_", 4), "floating pointer signature");
	CHECK_EQ(fp[8], 1);                      /* length in paragraphs */
	CHECK_EQ(fp[9], 4);                      /* spec 1.4 */
	CHECK_EQ(sum(fp, 16), 0);
	CHECK_EQ(fp[11], 0);                     /* feature 1: config table present */
	uint32_t cfg = get32(fp, 4);
	CHECK(cfg >= VMM_MPTABLE_GPA + 16 && cfg < 0x100000, "config table at 0x%x", cfg);

	c = gpa(&r, cfg, 44);
	CHECK(!memcmp(c, "PCMP", 4), "config table signature");
	len = get16(c, 4);
	count = get16(c, 34);
	CHECK_EQ(c[6], 4);
	CHECK_EQ(get32(c, 36), 0xFEE00000);      /* local APIC address */
	CHECK_EQ(cfg + len, end);
	c = gpa(&r, cfg, len);
	CHECK_EQ(sum(c, len), 0);
	CHECK_EQ(count, ncpus + 3 + 16 + 32 + 2);

	e = c + 44;
	for (int i = 0; i < count; i++) {
		CHECK(e < c + len, "entry %d beyond the table", i);
		if (e >= c + len)
			break;
		switch (e[0]) {
		case 0:                              /* processor */
			CHECK_EQ(e[1], cpus);            /* APIC ID = index */
			CHECK_EQ(e[3] & 1, 1);           /* enabled */
			CHECK_EQ(!!(e[3] & 2), cpus == 0);
			cpus++;
			e += 20;
			break;
		case 1:                              /* bus */
			if (!memcmp(e + 2, "PCI   ", 6))
				pci_bus = e[1];
			else if (!memcmp(e + 2, "ISA   ", 6))
				isa_bus = e[1];
			buses++;
			e += 8;
			break;
		case 2:                              /* IOAPIC */
			CHECK_EQ(e[1], ncpus);
			CHECK_EQ(e[3] & 1, 1);
			CHECK_EQ(get32(e, 4), 0xFEC00000);
			ioapics++;
			e += 8;
			break;
		case 3:                              /* I/O interrupt */
			CHECK_EQ(e[1], 0);               /* INT */
			CHECK_EQ(e[6], ncpus);           /* to our IOAPIC */
			if (e[4] == isa_bus) {
				CHECK(e[5] < 16, "ISA IRQ %u", e[5]);
				CHECK_EQ(e[7], e[5]);        /* identity */
				CHECK_EQ(get16(e, 2), 0);    /* conforming */
				if (e[5] < 16)
					isa[e[5]]++;
			} else {
				CHECK_EQ(e[4], pci_bus);
				int slot = e[5] >> 2;
				CHECK_EQ(e[5] & 3, 0);       /* INTA# */
				CHECK_EQ(e[7], VMM_PCI_IRQ_BASE + slot % VMM_PCI_IRQ_COUNT);
				CHECK_EQ(get16(e, 2), 0x0D); /* level, active high */
				pci[slot]++;
			}
			e += 8;
			break;
		case 4:                              /* local interrupt */
			if (e[1] == 3 && e[7] == 0)
				lint0++;                 /* ExtINT -> LINT0 */
			else if (e[1] == 1 && e[7] == 1 && e[6] == 0xFF)
				lint1++;                 /* NMI -> LINT1 of all */
			else
				CHECK(0, "unexpected local interrupt entry %u -> %u", e[1], e[7]);
			e += 8;
			break;
		default:
			CHECK(0, "unknown entry type %u", e[0]);
			i = count;
		}
	}
	CHECK_EQ(e, c + len);
	CHECK_EQ(cpus, ncpus);
	CHECK_EQ(buses, 2);
	CHECK(pci_bus >= 0 && isa_bus >= 0 && pci_bus != isa_bus, "PCI bus %d, ISA bus %d", pci_bus, isa_bus);
	CHECK_EQ(ioapics, 1);
	for (int i = 0; i < 16; i++)
		CHECK(isa[i] == 1, "ISA IRQ %d listed %d times", i, isa[i]);
	for (int i = 0; i < 32; i++)
		CHECK(pci[i] == 1, "PCI slot %d listed %d times", i, pci[i]);
	CHECK_EQ(lint0, 1);
	CHECK_EQ(lint1, 1);
	printf("  %d CPU(s): %u entries, %u bytes\n", ncpus, count, len);
	tb_ram_exit(&r);
}

int main(void)
{
	struct tb_ram r;
	struct ut_err err;

	check(1);
	check(2);
	check(4);
	check(VMM_MPTABLE_MAX_CPUS);
	if (tb_ram_init(&r, 2ULL << 20) < 0)
		exit(1);
	CHECK(vmm_mptable_write(&r.mem, 0, NULL, &err) == -EINVAL, "0 CPUs refused");
	CHECK(vmm_mptable_write(&r.mem, VMM_MPTABLE_MAX_CPUS + 1, NULL, &err) == -EINVAL,
	      "%d CPUs refused", VMM_MPTABLE_MAX_CPUS + 1);
	tb_ram_exit(&r);
	return tb_finish("test-boot-mptable");
}
