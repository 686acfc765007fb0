/* tests/unit/test-boot-acpi.c — the ACPI tables: checksums, pointers, the
 * MADT's CPUs and IOAPIC, the FADT's flags and registers, the DSDT's objects,
 * for 1, 2, 4 and 64 CPUs; and refusal when RAM is too small. */
#include "core/boot/boot.h"
#include "core/layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond, ...) do { if (!(cond)) { failures++; \
	printf("%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
	printf(__VA_ARGS__); printf("\n"); } } while (0)

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;

	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

static const uint8_t *table(const uint8_t *ram, uint64_t gpa, const char *sig)
{
	const uint8_t *t = ram + gpa;

	CHECK(!memcmp(t, sig, 4), "table at 0x%llx is not %s", (unsigned long long)gpa, sig);
	CHECK(sum(t, le32(t + 4)) == 0, "%s checksum", sig);
	return t;
}

static int memmem_count(const uint8_t *hay, size_t n, const char *needle)
{
	size_t k = strlen(needle);
	int c = 0;

	for (size_t i = 0; i + k <= n; i++)
		if (!memcmp(hay + i, needle, k))
			c++;
	return c;
}

static void check_cpus(int ncpus)
{
	uint64_t size = 64ULL << 20, rsdp = 0;
	uint8_t *ram = calloc(1, size);
	struct vmm_mem mem;
	struct ut_err err = { 0, "" };
	const uint8_t *r, *x, *f, *m, *d;
	int nlapic = 0, nioapic = 0, nnmi = 0, niso = 0;

	vmm_mem_layout(&mem, ram, size, -1);
	CHECK(vmm_acpi_write(&mem, ncpus, &rsdp, &err) == 0, "%s", err.msg);
	CHECK(rsdp >= 0xE0000 && rsdp < 0x100000 && rsdp % 16 == 0, "RSDP at 0x%llx",
	      (unsigned long long)rsdp);
	r = ram + rsdp;
	CHECK(!memcmp(r, "RSD PTR ", 8), "RSDP signature");
	CHECK(sum(r, 20) == 0 && sum(r, 36) == 0, "RSDP checksums");
	CHECK(r[15] == 2 && le32(r + 20) == 36, "RSDP revision 2, length 36");
	x = table(ram, le64(r + 24), "XSDT");
	CHECK(le32(x + 4) == 36 + 16, "XSDT has two entries");
	f = table(ram, le64(x + 36), "FACP");
	m = table(ram, le64(x + 44), "APIC");
	CHECK(le32(f + 4) == 276 && f[8] == 6, "FADT revision 6, 276 bytes");
	CHECK(le32(f + 112) & (1u << 20), "FADT hardware-reduced flag");
	CHECK(le32(f + 112) & (1u << 10), "FADT reset register supported");
	CHECK(f[116] == 1 && le64(f + 120) == 0xCF9 && f[128] == 6, "FADT reset register 0xCF9=6");
	CHECK(f[244] == 1 && le64(f + 248) == VMM_PORT_ACPI_SLEEP, "FADT sleep control register");
	CHECK(le32(f + 40) == le64(f + 140), "FADT DSDT and X_DSDT agree");
	d = table(ram, le64(f + 140), "DSDT");
	CHECK(le32(m + 36) == VMM_LAPIC_GPA, "MADT LAPIC address");
	for (const uint8_t *e = m + 44; e < m + le32(m + 4); e += e[1]) {
		CHECK(e[1] >= 2, "MADT entry length %u", e[1]);
		if (e[1] < 2)
			break;
		switch (e[0]) {
		case 0:
			CHECK(e[3] == nlapic && (le32(e + 4) & 1), "LAPIC %d: id %u flags %u",
			      nlapic, e[3], le32(e + 4));
			nlapic++;
			break;
		case 1:
			CHECK(le32(e + 4) == VMM_IOAPIC_GPA && le32(e + 8) == 0 && e[2] == ncpus,
			      "IOAPIC entry");
			nioapic++;
			break;
		case 2:
			CHECK(e[3] == le32(e + 4) && e[3] >= VMM_PCI_IRQ_BASE, "source override %u", e[3]);
			niso++;
			break;
		case 4:
			CHECK(e[2] == 0xFF && e[5] == 1, "LAPIC NMI on LINT1 for all CPUs");
			nnmi++;
			break;
		default:
			CHECK(0, "unexpected MADT entry type %u", e[0]);
		}
	}
	CHECK(nlapic == ncpus, "%d LAPIC entries for %d CPUs", nlapic, ncpus);
	CHECK(nioapic == 1 && nnmi == 1 && niso == VMM_PCI_IRQ_COUNT, "IOAPIC/NMI/override counts");
	/* DSDT objects (names appear as 4-byte segments in the AML) */
	CHECK(memmem_count(d, le32(d + 4), "PCI0") == 1, "DSDT has PCI0");
	CHECK(memmem_count(d, le32(d + 4), "_PRT") == 1, "DSDT has _PRT");
	CHECK(memmem_count(d, le32(d + 4), "_CRS") == 2, "DSDT has _CRS for PCI0 and GED0");
	CHECK(memmem_count(d, le32(d + 4), "PWRB") == 2, "DSDT has PWRB and GED0 notifies it");
	CHECK(memmem_count(d, le32(d + 4), "ACPI0013") == 1, "DSDT has the generic event device");
	CHECK(memmem_count(d, le32(d + 4), "_EVT") == 1, "GED0 has _EVT");
	CHECK(memmem_count(d, le32(d + 4), "_S5_") == 1, "DSDT has _S5_");
	CHECK(memmem_count(d, le32(d + 4), "\x0c\x41\xd0\x0a\x03") == 1, "PCI0 _HID is PNP0A03");
	/* nothing outside the ACPI area was written */
	for (uint64_t i = 0; i < size; i++) {
		if (i >= VMM_ACPI_GPA && i < VMM_ACPI_GPA + VMM_ACPI_MAX)
			continue;
		if (ram[i]) {
			CHECK(0, "byte at 0x%llx written outside the ACPI area", (unsigned long long)i);
			break;
		}
	}
	free(ram);
}

int main(void)
{
	struct vmm_mem mem;
	struct ut_err err = { 0, "" };
	uint8_t small[4096];

	check_cpus(1);
	check_cpus(2);
	check_cpus(4);
	check_cpus(64);
	/* RAM that does not reach the ACPI area is refused with a message */
	vmm_mem_layout(&mem, small, sizeof(small), -1);
	CHECK(vmm_acpi_write(&mem, 1, NULL, &err) < 0 && strstr(err.msg, "ACPI"), "small RAM: '%s'", err.msg);
	if (failures) {
		printf("%d checks failed\n", failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
