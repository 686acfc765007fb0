/* tests/guest/pci.c — PCI configuration mechanism #1 on bus 0.
 *
 * Each access costs two port accesses (two VM exits); the address register
 * is only rewritten when it changes.  Memory BARs that are unassigned (0) or
 * above 4 GiB (not identity mapped) are given an address from the PCI window
 * of core/layout.h (0xC0000000..0xFEBFFFFF), above every BAR already
 * assigned there.  BARs already below 4 GiB are used where they are.
 */
#include "guest.h"

#define PCI_ADDR 0xcf8
#define PCI_DATA 0xcfc
#define PCI_WIN_START 0xc0000000ULL     /* VMM_PCI_MMIO_START */
#define PCI_WIN_END   0xfec00000ULL     /* VMM_PCI_MMIO_END */
#define PCI_CMD_MEM    0x2
#define PCI_CMD_MASTER 0x4

static uint32_t cur_addr;

/* Selects the dword at OFF of device D in the address register. */
static void select(const struct pci_dev *d, uint8_t off)
{
	uint32_t a = 0x80000000u | ((uint32_t)d->bus << 16) | ((uint32_t)d->dev << 11) |
		     ((uint32_t)d->fn << 8) | (off & 0xfc);
	if (a != cur_addr) {
		outl(PCI_ADDR, a);
		cur_addr = a;
	}
}

uint32_t pci_read32(const struct pci_dev *d, uint8_t off) { select(d, off); return inl(PCI_DATA); }
uint16_t pci_read16(const struct pci_dev *d, uint8_t off) { select(d, off); return inw(PCI_DATA + (off & 2)); }
uint8_t pci_read8(const struct pci_dev *d, uint8_t off) { select(d, off); return inb(PCI_DATA + (off & 3)); }
void pci_write32(const struct pci_dev *d, uint8_t off, uint32_t v) { select(d, off); outl(PCI_DATA, v); }
void pci_write16(const struct pci_dev *d, uint8_t off, uint16_t v) { select(d, off); outw(PCI_DATA + (off & 2), v); }

/* Lists the functions present on bus 0 (up to MAX); returns the count. */
uint32_t pci_scan(struct pci_dev *out, uint32_t max)
{
	uint32_t n = 0;
	for (uint8_t dev = 0; dev < 32; dev++) {
		for (uint8_t fn = 0; fn < 8; fn++) {
			struct pci_dev d = { 0, dev, fn, 0, 0 };
			uint32_t id = pci_read32(&d, 0);
			if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0) {
				if (fn == 0)
					break;
				continue;
			}
			d.vendor = (uint16_t)id;
			d.device = (uint16_t)(id >> 16);
			if (n < max)
				out[n] = d;
			n++;
			if (fn == 0 && !(pci_read8(&d, 0x0e) & 0x80))
				break;   /* not multi-function */
		}
	}
	return n < max ? n : max;
}

bool pci_find(uint16_t vendor, uint16_t device, uint32_t index, struct pci_dev *out)
{
	struct pci_dev devs[64];
	uint32_t n = pci_scan(devs, ARRAY_SIZE(devs));
	for (uint32_t i = 0; i < n; i++) {
		if (devs[i].vendor == vendor && devs[i].device == device) {
			if (index-- == 0) {
				*out = devs[i];
				return true;
			}
		}
	}
	return false;
}

/* Size in bytes of memory BAR B of D (decode must be off), 0 if none. */
static uint64_t bar_size(const struct pci_dev *d, uint32_t b, bool is64)
{
	uint8_t off = (uint8_t)(0x10 + 4 * b);
	uint32_t lo = pci_read32(d, off), hi = 0;
	pci_write32(d, off, 0xffffffffu);
	uint64_t mask = pci_read32(d, off) & ~0xfULL;
	pci_write32(d, off, lo);
	if (is64) {
		hi = pci_read32(d, off + 4);
		pci_write32(d, off + 4, 0xffffffffu);
		mask |= (uint64_t)pci_read32(d, off + 4) << 32;
		pci_write32(d, off + 4, hi);
	} else {
		mask |= 0xffffffff00000000ULL;
	}
	if ((mask & ~0xfULL) == 0)
		return 0;
	return ~mask + 1;
}

static uint64_t win_next;

/* First free address in the PCI window: above all assigned BARs. */
static uint64_t window_start(void)
{
	struct pci_dev devs[64];
	uint32_t n = pci_scan(devs, ARRAY_SIZE(devs));
	uint64_t next = PCI_WIN_START;
	for (uint32_t i = 0; i < n; i++) {
		const struct pci_dev *d = &devs[i];
		if ((pci_read8(d, 0x0e) & 0x7f) != 0)
			continue;   /* only type-0 headers have six BARs */
		uint16_t cmd = pci_read16(d, 0x04);
		pci_write16(d, 0x04, cmd & ~PCI_CMD_MEM);
		for (uint32_t b = 0; b < 6; b++) {
			uint32_t v = pci_read32(d, (uint8_t)(0x10 + 4 * b));
			bool is64 = (v & 0x7) == 0x4;
			if (!(v & 1)) {
				uint64_t base = v & ~0xfULL;
				if (is64)
					base |= (uint64_t)pci_read32(d, (uint8_t)(0x14 + 4 * b)) << 32;
				uint64_t sz = bar_size(d, b, is64);
				if (base >= PCI_WIN_START && base < PCI_WIN_END && base + sz > next)
					next = base + sz;
			}
			if (is64)
				b++;
		}
		pci_write16(d, 0x04, cmd);
	}
	return next;
}

uint64_t pci_bar_addr(const struct pci_dev *d, uint32_t b)
{
	if (b > 5)
		return 0;
	uint8_t off = (uint8_t)(0x10 + 4 * b);
	uint32_t v = pci_read32(d, off);
	if (v & 1)
		return 0;   /* I/O BAR */
	bool is64 = (v & 0x6) == 0x4;
	if (is64 && b == 5)
		return 0;
	uint64_t base = v & ~0xfULL;
	if (is64)
		base |= (uint64_t)pci_read32(d, off + 4) << 32;
	uint16_t cmd = pci_read16(d, 0x04);

	if (base == 0 || base >= 4 * GIB) {
		if (!win_next)
			win_next = window_start();
		pci_write16(d, 0x04, cmd & ~PCI_CMD_MEM);
		uint64_t sz = bar_size(d, b, is64);
		uint64_t a = ALIGN_UP(win_next, sz ? sz : 16);
		if (sz == 0 || a + sz > PCI_WIN_END) {
			pci_write16(d, 0x04, cmd);
			return 0;
		}
		pci_write32(d, off, (uint32_t)a);
		if (is64)
			pci_write32(d, off + 4, 0);
		win_next = a + sz;
		base = a;
	}
	if ((cmd & (PCI_CMD_MEM | PCI_CMD_MASTER)) != (PCI_CMD_MEM | PCI_CMD_MASTER))
		pci_write16(d, 0x04, cmd | PCI_CMD_MEM | PCI_CMD_MASTER);
	return base;
}
