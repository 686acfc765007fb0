/* core/pci.c — PCI configuration mechanism #1 and BAR mapping; see pci.h. */
#include "core/pci.h"
#include "core/layout.h"
#include "core/vm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PCI_ADDR_ENABLE   0x80000000u
#define PCI_RESET_PORT_OFF 1          /* 0xCF9: reset control */
#define PCI_RESET_CPU     0x04

uint32_t vmm_pci_slot_irq(int slot)
{
	return VMM_PCI_IRQ_BASE + (uint32_t)slot % VMM_PCI_IRQ_COUNT;
}

/* Map or unmap BAR @i to match its register and the command register. */
static void pci_update_bar(struct vmm_pci *pci, struct vmm_pci_dev *d, int i)
{
	struct vmm_pci_bar *b = &d->bars[i];
	uint64_t addr = vmm_pci_get32(d, PCI_BAR0 + 4 * (unsigned)i) & ~0xFu;
	bool want = (vmm_pci_get16(d, PCI_COMMAND) & PCI_CMD_MEM) && addr &&
		    addr + b->size <= VMM_PCI_MMIO_END && addr >= VMM_PCI_MMIO_START;
	uint64_t old = b->mapped ? b->addr : 0;

	if (!b->size || (b->mapped == want && (!want || b->addr == addr)))
		return;
	if (b->mapped) {
		vmm_bus_unregister(&pci->vm->mmio, b->addr, b->opaque);
		b->mapped = false;
	}
	if (want && vmm_bus_register(&pci->vm->mmio, addr, b->size, b->fn, b->opaque, NULL) == 0) {
		b->addr = addr;
		b->mapped = true;
	}
	if (d->bar_moved)
		d->bar_moved(d, i, old);
}

static void pci_cfg_write(struct vmm_pci *pci, struct vmm_pci_dev *d, uint32_t off,
			  const uint8_t *data, uint32_t len)
{
	for (uint32_t i = 0; i < len && off + i < 256; i++) {
		uint8_t m = d->wmask[off + i];

		d->cfg[off + i] = (uint8_t)((d->cfg[off + i] & ~m) | (data[i] & m));
	}
	if (off < PCI_BAR0 + 24 && off + len > PCI_COMMAND) {
		for (int i = 0; i < 6; i++)
			pci_update_bar(pci, d, i);
	}
	if (d->cfg_written)
		d->cfg_written(d, off, len);
}

static void pci_addr_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool wr)
{
	struct vmm_pci *pci = opaque;

	pthread_mutex_lock(&pci->lock);
	if (off == 0 && len == 4) {
		if (wr)
			pci->addr = (uint32_t)vmm_le_get(data, 4);
		else
			vmm_le_put(data, 4, pci->addr);
	} else if (off == PCI_RESET_PORT_OFF && len == 1) {
		if (!wr)
			data[0] = 0;
		else if (data[0] & PCI_RESET_CPU)
			vmm_vm_request_exit(pci->vm, VMM_EXIT_RESET, 0);
	} else if (!wr) {
		memset(data, 0xff, len);
	}
	pthread_mutex_unlock(&pci->lock);
}

static void pci_data_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool wr)
{
	struct vmm_pci *pci = opaque;
	struct vmm_pci_dev *d = NULL;
	uint32_t a, reg;

	pthread_mutex_lock(&pci->lock);
	a = pci->addr;
	reg = (a & 0xFC) + (uint32_t)off;
	/* bus 0, function 0 only */
	if ((a & PCI_ADDR_ENABLE) && ((a >> 16) & 0xFF) == 0 && ((a >> 8) & 7) == 0)
		d = pci->slots[(a >> 11) & 0x1F];
	if (!d || reg + len > 256) {
		if (!wr)
			memset(data, 0xff, len);
	} else if (wr) {
		pci_cfg_write(pci, d, reg, data, len);
	} else {
		memcpy(data, &d->cfg[reg], len);
	}
	pthread_mutex_unlock(&pci->lock);
}

int vmm_pci_init(struct vmm_vm *vm, struct ut_err *err)
{
	struct vmm_pci *pci = calloc(1, sizeof(*pci));
	int r;

	if (!pci)
		return ut_errf(err, -ENOMEM, "out of memory for PCI");
	pci->vm = vm;
	pci->next_mmio = VMM_PCI_MMIO_START;
	pthread_mutex_init(&pci->lock, NULL);
	/* host bridge: Red Hat vendor, "PCIe host bridge", class 06:00 */
	vmm_pci_set16(&pci->host, PCI_VENDOR_ID, 0x1B36);
	vmm_pci_set16(&pci->host, PCI_DEVICE_ID, 0x0008);
	pci->host.cfg[PCI_CLASS_PROG + 2] = 0x06;
	pci->host.wmask[PCI_COMMAND] = PCI_CMD_IO | PCI_CMD_MEM | PCI_CMD_MASTER;
	pci->slots[0] = &pci->host;
	vm->pci = pci;
	r = vmm_bus_register(&vm->pio, VMM_PORT_PCI_ADDR, 4, pci_addr_io, pci, err);
	if (!r)
		r = vmm_bus_register(&vm->pio, VMM_PORT_PCI_DATA, 4, pci_data_io, pci, err);
	if (r)
		vmm_pci_exit(vm);
	return r;
}

void vmm_pci_exit(struct vmm_vm *vm)
{
	struct vmm_pci *pci = vm->pci;

	if (!pci)
		return;
	vmm_bus_unregister(&vm->pio, VMM_PORT_PCI_ADDR, pci);
	vmm_bus_unregister(&vm->pio, VMM_PORT_PCI_DATA, pci);
	pthread_mutex_destroy(&pci->lock);
	free(pci);
	vm->pci = NULL;
}

int vmm_pci_add(struct vmm_vm *vm, struct vmm_pci_dev *d, struct ut_err *err)
{
	struct vmm_pci *pci = vm->pci;
	int slot, r = 0;

	if (!pci)
		return ut_errf(err, -ENODEV, "no PCI bus");
	pthread_mutex_lock(&pci->lock);
	for (slot = 1; slot < VMM_PCI_SLOTS && pci->slots[slot]; slot++)
		;
	if (slot == VMM_PCI_SLOTS) {
		r = ut_errf(err, -ENOSPC, "no free PCI slot (at most %d devices)", VMM_PCI_SLOTS - 1);
		goto out;
	}
	for (int i = 0; i < 6; i++) {
		struct vmm_pci_bar *b = &d->bars[i];
		uint64_t base;

		if (!b->size)
			continue;
		if (b->size & (b->size - 1) || b->size < 16) {
			r = ut_errf(err, -EINVAL, "PCI BAR %d size %u is not a power of two >= 16",
				    i, b->size);
			goto out;
		}
		base = (pci->next_mmio + b->size - 1) & ~((uint64_t)b->size - 1);
		if (base + b->size > VMM_PCI_MMIO_END) {
			r = ut_errf(err, -ENOSPC, "PCI MMIO window full");
			goto out;
		}
		pci->next_mmio = base + b->size;
		vmm_pci_set32(d, PCI_BAR0 + 4 * (unsigned)i, (uint32_t)base);
		for (int k = 0; k < 4; k++)
			d->wmask[PCI_BAR0 + 4 * i + k] = (uint8_t)(~(b->size - 1) >> (8 * k));
		d->wmask[PCI_BAR0 + 4 * i] &= 0xF0;
	}
	d->slot = slot;
	d->cfg[PCI_INT_LINE] = (uint8_t)vmm_pci_slot_irq(slot);
	d->wmask[PCI_INT_LINE] = 0xFF;
	d->wmask[PCI_COMMAND] = PCI_CMD_MEM | PCI_CMD_MASTER;
	d->wmask[PCI_COMMAND + 1] = PCI_CMD_INTX_OFF >> 8;
	vmm_pci_set16(d, PCI_COMMAND, vmm_pci_get16(d, PCI_COMMAND) | PCI_CMD_MEM);
	pci->slots[slot] = d;
	for (int i = 0; i < 6; i++)
		pci_update_bar(pci, d, i);
out:
	pthread_mutex_unlock(&pci->lock);
	return r;
}

void vmm_pci_sync_bars(struct vmm_vm *vm, struct vmm_pci_dev *d)
{
	struct vmm_pci *pci = vm->pci;

	if (!pci)
		return;
	pthread_mutex_lock(&pci->lock);
	for (int i = 0; i < 6; i++)
		pci_update_bar(pci, d, i);
	pthread_mutex_unlock(&pci->lock);
}

void vmm_pci_remove(struct vmm_vm *vm, struct vmm_pci_dev *d)
{
	struct vmm_pci *pci = vm->pci;

	if (!pci)
		return;
	pthread_mutex_lock(&pci->lock);
	for (int i = 0; i < 6; i++) {
		if (d->bars[i].mapped)
			vmm_bus_unregister(&vm->mmio, d->bars[i].addr, d->bars[i].opaque);
		d->bars[i].mapped = false;
	}
	if (d->slot > 0 && d->slot < VMM_PCI_SLOTS && pci->slots[d->slot] == d)
		pci->slots[d->slot] = NULL;
	pthread_mutex_unlock(&pci->lock);
}
