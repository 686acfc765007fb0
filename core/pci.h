/* core/pci.h — PCI bus 0 with configuration mechanism #1 (0xCF8/0xCFC).
 *
 * A device supplies a 256-byte config space, a write mask and its BARs (32-bit
 * memory BARs in the MMIO window, assigned here at add time). Guest writes to a
 * BAR or to the command register remap the BAR on the MMIO bus; the device is
 * told through bar_moved (virtio re-registers its ioeventfds there).
 */
#ifndef VMM_PCI_H
#define VMM_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/bus.h"
#include "util/err.h"

struct vmm_vm;

#define VMM_PCI_SLOTS 32

#define PCI_VENDOR_ID      0x00
#define PCI_DEVICE_ID      0x02
#define PCI_COMMAND        0x04
#define PCI_STATUS         0x06
#define PCI_REVISION_ID    0x08
#define PCI_CLASS_PROG     0x09
#define PCI_HEADER_TYPE    0x0E
#define PCI_BAR0           0x10
#define PCI_SUBSYS_VENDOR  0x2C
#define PCI_SUBSYS_ID      0x2E
#define PCI_CAP_PTR        0x34
#define PCI_INT_LINE       0x3C
#define PCI_INT_PIN        0x3D
#define PCI_CMD_IO         0x0001
#define PCI_CMD_MEM        0x0002
#define PCI_CMD_MASTER     0x0004
#define PCI_CMD_INTX_OFF   0x0400
#define PCI_STATUS_CAPS    0x0010
#define PCI_STATUS_INTX    0x0008

struct vmm_pci_bar {
	uint32_t size;          /* power of two >= 16; 0 = unused */
	uint64_t addr;          /* current guest address */
	bool mapped;            /* registered on the MMIO bus */
	vmm_io_fn fn;
	void *opaque;
};

struct vmm_pci_dev {
	uint8_t cfg[256];
	uint8_t wmask[256];     /* bits the guest may change */
	int slot;               /* assigned by vmm_pci_add */
	struct vmm_pci_bar bars[6];
	/* Called after a guest config write (with the pci lock held). */
	void (*cfg_written)(struct vmm_pci_dev *d, uint32_t off, uint32_t len);
	/* Called when BAR @bar moved from @old to d->bars[bar].addr (0 = unmapped). */
	void (*bar_moved)(struct vmm_pci_dev *d, int bar, uint64_t old);
	void *opaque;
};

struct vmm_pci {
	struct vmm_vm *vm;
	pthread_mutex_t lock;
	uint32_t addr;                          /* 0xCF8 */
	struct vmm_pci_dev *slots[VMM_PCI_SLOTS];
	struct vmm_pci_dev host;                /* 00:00.0 host bridge */
	uint64_t next_mmio;
};

/* Create bus 0 with its host bridge and claim 0xCF8..0xCFF. Returns 0 or -errno. */
int vmm_pci_init(struct vmm_vm *vm, struct ut_err *err);
void vmm_pci_exit(struct vmm_vm *vm);

/* Put @d in the next free slot, assign its BARs and legacy IRQ line, and map
 * the BARs. @d must stay valid until vmm_pci_remove. Returns 0 or -errno. */
int vmm_pci_add(struct vmm_vm *vm, struct vmm_pci_dev *d, struct ut_err *err);
void vmm_pci_remove(struct vmm_vm *vm, struct vmm_pci_dev *d);

/* Map or unmap @d's BARs to match its config space (BAR registers and the
 * command register) after something other than a guest config write changed
 * it, e.g. a device state restore. bar_moved runs for each BAR that moved.
 * Takes the PCI lock: call without the device's own lock held. */
void vmm_pci_sync_bars(struct vmm_vm *vm, struct vmm_pci_dev *d);

/* Config-space field helpers (little-endian). */
static inline void vmm_pci_set16(struct vmm_pci_dev *d, unsigned off, uint16_t v)
{
	d->cfg[off] = (uint8_t)v;
	d->cfg[off + 1] = (uint8_t)(v >> 8);
}

static inline void vmm_pci_set32(struct vmm_pci_dev *d, unsigned off, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		d->cfg[off + i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t vmm_pci_get16(const struct vmm_pci_dev *d, unsigned off)
{
	return (uint16_t)(d->cfg[off] | d->cfg[off + 1] << 8);
}

static inline uint32_t vmm_pci_get32(const struct vmm_pci_dev *d, unsigned off)
{
	return (uint32_t)d->cfg[off] | (uint32_t)d->cfg[off + 1] << 8 |
	       (uint32_t)d->cfg[off + 2] << 16 | (uint32_t)d->cfg[off + 3] << 24;
}

/* The legacy IRQ (GSI) of @slot: VMM_PCI_IRQ_BASE + slot % VMM_PCI_IRQ_COUNT. */
uint32_t vmm_pci_slot_irq(int slot);

#endif
