/* core/boot/mptable.c — the Intel MultiProcessor Specification 1.4 tables:
 * floating pointer structure + configuration table (base entries only), which
 * is how a guest without ACPI learns about its CPUs, the IOAPIC and the
 * interrupt routing. Placed at VMM_MPTABLE_GPA (start of the EBDA area), one of
 * the places Linux's smp_scan_config() looks.
 *
 * Interrupt routing described (matching KVM's default in-kernel GSI routing,
 * where GSI n goes to PIC pin n and IOAPIC pin n):
 *   ISA IRQ 0..15      -> IOAPIC pins 0..15, conforming (edge, active high)
 *   PCI slot N INTA#   -> IOAPIC pin VMM_PCI_IRQ_BASE + N % VMM_PCI_IRQ_COUNT,
 *                         level, active high
 *   LINT0 <- ExtINT (8259 virtual wire) on the BSP, LINT1 <- NMI on every CPU.
 * A pin listed for both an ISA IRQ and PCI INTx is reprogrammed to level by the
 * first PCI driver that claims it (Linux allows that for legacy IRQs).
 */
#include "core/boot/boot.h"
#include "core/layout.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MP_FLOAT_SIG        "_MP_"
#define MP_CONFIG_SIG       "PCMP"
#define MP_SPEC_REV         4          /* 1.4 */

#define MP_ENTRY_CPU        0
#define MP_ENTRY_BUS        1
#define MP_ENTRY_IOAPIC     2
#define MP_ENTRY_IOINT      3
#define MP_ENTRY_LINT       4

#define MP_CPU_ENABLED      0x01
#define MP_CPU_BSP          0x02
#define MP_INT_INT          0
#define MP_INT_NMI          1
#define MP_INT_EXTINT       3
#define MP_IRQ_CONFORMING   0x0000
#define MP_IRQ_LEVEL_HIGH   0x000D     /* polarity 01 active high, trigger 11 level */

#define MP_LAPIC_VERSION    0x14       /* what KVM's LAPIC reports */
#define MP_IOAPIC_VERSION   0x11       /* what KVM's IOAPIC reports */
#define MP_CPU_SIGNATURE    0x600      /* family 6 */
#define MP_CPU_FEATURES     0x201      /* FPU | APIC */

#define MP_BUS_PCI          0
#define MP_BUS_ISA          1
#define MP_ISA_IRQS         16
#define MP_PCI_SLOTS        32

struct mp_float {
	char     signature[4];
	uint32_t config_paddr;
	uint8_t  length;                   /* in 16-byte units */
	uint8_t  spec_rev;
	uint8_t  checksum;
	uint8_t  feature[5];
} __attribute__((packed));

struct mp_config {
	char     signature[4];
	uint16_t base_length;
	uint8_t  spec_rev;
	uint8_t  checksum;
	char     oem_id[8];
	char     product_id[12];
	uint32_t oem_table;
	uint16_t oem_table_size;
	uint16_t entry_count;
	uint32_t lapic_addr;
	uint16_t ext_length;
	uint8_t  ext_checksum;
	uint8_t  reserved;
} __attribute__((packed));

struct mp_cpu {
	uint8_t  type, apic_id, apic_version, flags;
	uint32_t signature, features;
	uint32_t reserved[2];
} __attribute__((packed));

struct mp_bus {
	uint8_t  type, bus_id;
	char     bus_type[6];
} __attribute__((packed));

struct mp_ioapic {
	uint8_t  type, id, version, flags;
	uint32_t addr;
} __attribute__((packed));

struct mp_int {                            /* I/O and local interrupt entries */
	uint8_t  type, int_type;
	uint16_t flags;
	uint8_t  src_bus, src_irq, dst_apic, dst_pin;
} __attribute__((packed));

_Static_assert(sizeof(struct mp_float) == 16, "MP floating pointer is 16 bytes");
_Static_assert(sizeof(struct mp_config) == 44, "MP config header is 44 bytes");
_Static_assert(sizeof(struct mp_cpu) == 20, "processor entry is 20 bytes");
_Static_assert(sizeof(struct mp_bus) == 8, "bus entry is 8 bytes");
_Static_assert(sizeof(struct mp_ioapic) == 8, "IOAPIC entry is 8 bytes");
_Static_assert(sizeof(struct mp_int) == 8, "interrupt entry is 8 bytes");

static uint8_t checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;

	while (len--)
		sum += *p++;
	return (uint8_t)-sum;
}

static void add_int(uint8_t **pos, uint8_t type, uint8_t int_type, uint16_t flags,
		    uint8_t bus, uint8_t irq, uint8_t dst, uint8_t pin)
{
	struct mp_int e = {
		.type = type, .int_type = int_type, .flags = htole16(flags),
		.src_bus = bus, .src_irq = irq, .dst_apic = dst, .dst_pin = pin,
	};

	memcpy(*pos, &e, sizeof(e));
	*pos += sizeof(e);
}

int vmm_mptable_write(const struct vmm_mem *mem, int ncpus, uint64_t *end, struct ut_err *err)
{
	const uint8_t ioapic_id = (uint8_t)ncpus;
	size_t cfg_len, total;
	uint8_t *buf = NULL, *pos;
	struct mp_float fp;
	struct mp_config hdr;
	uint16_t count = 0;
	int r;

	if (ncpus < 1 || ncpus > VMM_MPTABLE_MAX_CPUS) {
		r = ut_errf(err, -EINVAL, "MP table: %d CPUs (1..%d supported)", ncpus,
			    VMM_MPTABLE_MAX_CPUS);
		goto out;
	}
	cfg_len = sizeof(hdr) + (size_t)ncpus * sizeof(struct mp_cpu) + 2 * sizeof(struct mp_bus) +
		  sizeof(struct mp_ioapic) + (MP_ISA_IRQS + MP_PCI_SLOTS + 2) * sizeof(struct mp_int);
	total = sizeof(fp) + cfg_len;
	if (VMM_MPTABLE_GPA + total > VMM_BIOS_END) {
		r = ut_errf(err, -E2BIG, "MP table for %d CPUs does not fit below 1 MiB", ncpus);
		goto out;
	}
	buf = calloc(1, total);
	if (!buf) {
		r = ut_errf(err, -ENOMEM, "out of memory for the MP table");
		goto out;
	}
	pos = buf + sizeof(fp) + sizeof(hdr);

	for (int i = 0; i < ncpus; i++) {
		struct mp_cpu c = {
			.type = MP_ENTRY_CPU, .apic_id = (uint8_t)i, .apic_version = MP_LAPIC_VERSION,
			.flags = MP_CPU_ENABLED | (i == 0 ? MP_CPU_BSP : 0),
			.signature = htole32(MP_CPU_SIGNATURE), .features = htole32(MP_CPU_FEATURES),
		};
		memcpy(pos, &c, sizeof(c));
		pos += sizeof(c);
		count++;
	}
	{
		struct mp_bus pci = { .type = MP_ENTRY_BUS, .bus_id = MP_BUS_PCI };
		struct mp_bus isa = { .type = MP_ENTRY_BUS, .bus_id = MP_BUS_ISA };
		struct mp_ioapic io = {
			.type = MP_ENTRY_IOAPIC, .id = ioapic_id, .version = MP_IOAPIC_VERSION,
			.flags = 1, .addr = htole32((uint32_t)VMM_IOAPIC_GPA),
		};

		memcpy(pci.bus_type, "PCI   ", 6);
		memcpy(isa.bus_type, "ISA   ", 6);
		memcpy(pos, &pci, sizeof(pci));
		pos += sizeof(pci);
		memcpy(pos, &isa, sizeof(isa));
		pos += sizeof(isa);
		memcpy(pos, &io, sizeof(io));
		pos += sizeof(io);
		count += 3;
	}
	for (int irq = 0; irq < MP_ISA_IRQS; irq++, count++)
		add_int(&pos, MP_ENTRY_IOINT, MP_INT_INT, MP_IRQ_CONFORMING, MP_BUS_ISA,
			(uint8_t)irq, ioapic_id, (uint8_t)irq);
	for (int slot = 0; slot < MP_PCI_SLOTS; slot++, count++)
		add_int(&pos, MP_ENTRY_IOINT, MP_INT_INT, MP_IRQ_LEVEL_HIGH, MP_BUS_PCI,
			(uint8_t)(slot << 2) /* INTA# */, ioapic_id,
			(uint8_t)(VMM_PCI_IRQ_BASE + slot % VMM_PCI_IRQ_COUNT));
	add_int(&pos, MP_ENTRY_LINT, MP_INT_EXTINT, MP_IRQ_CONFORMING, MP_BUS_ISA, 0, 0, 0);
	add_int(&pos, MP_ENTRY_LINT, MP_INT_NMI, MP_IRQ_CONFORMING, MP_BUS_ISA, 0, 0xFF, 1);
	count += 2;

	memset(&hdr, 0, sizeof(hdr));
	memcpy(hdr.signature, MP_CONFIG_SIG, 4);
	hdr.base_length = htole16((uint16_t)cfg_len);
	hdr.spec_rev = MP_SPEC_REV;
	memcpy(hdr.oem_id, "COWVM   ", 8);
	memcpy(hdr.product_id, "KVM VM      ", 12);
	hdr.entry_count = htole16(count);
	hdr.lapic_addr = htole32((uint32_t)VMM_LAPIC_GPA);
	memcpy(buf + sizeof(fp), &hdr, sizeof(hdr));
	buf[sizeof(fp) + offsetof(struct mp_config, checksum)] = checksum(buf + sizeof(fp), cfg_len);

	memset(&fp, 0, sizeof(fp));
	memcpy(fp.signature, MP_FLOAT_SIG, 4);
	fp.config_paddr = htole32((uint32_t)(VMM_MPTABLE_GPA + sizeof(fp)));
	fp.length = 1;
	fp.spec_rev = MP_SPEC_REV;
	memcpy(buf, &fp, sizeof(fp));
	buf[offsetof(struct mp_float, checksum)] = checksum(buf, sizeof(fp));

	r = vmm_mem_write(mem, VMM_MPTABLE_GPA, buf, total);
	if (r < 0) {
		r = ut_errf(err, r, "MP table (%zu bytes) does not fit in guest RAM at 0x%llx", total,
			    (unsigned long long)VMM_MPTABLE_GPA);
		goto out;
	}
	if (end)
		*end = VMM_MPTABLE_GPA + total;
out:
	free(buf);
	return r;
}
