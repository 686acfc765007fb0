/* core/irq.c — legacy IRQ lines, the GSI routing table, MSI routes and irqfds.
 *
 * KVM_SET_GSI_ROUTING replaces the whole table, so we keep it here: GSIs 0..15
 * go to the PIC (except 2, the cascade) and GSIs 0..23 to the IOAPIC, like
 * KVM's default; MSI routes are allocated from GSI 24 up.
 */
#include "core/vm.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define IRQ_MAX_ROUTES 1024
#define IRQ_FIRST_MSI  24

static int irq_commit(struct vmm_vm *vm)
{
	return ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, vm->routes) < 0 ? -errno : 0;
}

static struct kvm_irq_routing_entry *irq_add(struct vmm_vm *vm)
{
	if (vm->routes->nr >= IRQ_MAX_ROUTES)
		return NULL;
	return &vm->routes->entries[vm->routes->nr++];
}

int vmm_irq_init(struct vmm_vm *vm, struct ut_err *err)
{
	struct kvm_irq_routing_entry *e;
	int r;

	vm->routes = calloc(1, sizeof(*vm->routes) +
			       IRQ_MAX_ROUTES * sizeof(struct kvm_irq_routing_entry));
	if (!vm->routes)
		return ut_errf(err, -ENOMEM, "out of memory for IRQ routes");
	for (uint32_t gsi = 0; gsi < 16; gsi++) {
		if (gsi == 2)
			continue;
		e = irq_add(vm);
		e->gsi = gsi;
		e->type = KVM_IRQ_ROUTING_IRQCHIP;
		e->u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
		e->u.irqchip.pin = gsi % 8;
	}
	for (uint32_t gsi = 0; gsi < 24; gsi++) {
		e = irq_add(vm);
		e->gsi = gsi;
		e->type = KVM_IRQ_ROUTING_IRQCHIP;
		e->u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
		e->u.irqchip.pin = gsi;
	}
	vm->next_gsi = IRQ_FIRST_MSI;
	r = irq_commit(vm);
	if (r)
		return ut_errf_sys(err, r, "unable to set the IRQ routing table");
	return 0;
}

void vmm_irq_exit(struct vmm_vm *vm)
{
	free(vm->routes);
	vm->routes = NULL;
}

int vmm_irq_line(struct vmm_vm *vm, uint32_t gsi, int level)
{
	struct kvm_irq_level l = { .irq = gsi, .level = (uint32_t)level };

	return ioctl(vm->vm_fd, KVM_IRQ_LINE, &l) < 0 ? -errno : 0;
}

void vmm_irq_pulse(struct vmm_vm *vm, uint32_t gsi)
{
	vmm_irq_line(vm, gsi, 1);
	vmm_irq_line(vm, gsi, 0);
}

int vmm_irq_msi_alloc(struct vmm_vm *vm, uint64_t addr, uint32_t data)
{
	struct kvm_irq_routing_entry *e;
	int r;

	pthread_mutex_lock(&vm->irq_lock);
	e = irq_add(vm);
	if (!e) {
		r = -ENOSPC;
		goto out;
	}
	e->gsi = vm->next_gsi;
	e->type = KVM_IRQ_ROUTING_MSI;
	e->u.msi.address_lo = (uint32_t)addr;
	e->u.msi.address_hi = (uint32_t)(addr >> 32);
	e->u.msi.data = data;
	r = irq_commit(vm);
	if (r) {
		vm->routes->nr--;
		goto out;
	}
	r = (int)vm->next_gsi++;
out:
	pthread_mutex_unlock(&vm->irq_lock);
	return r;
}

int vmm_irq_msi_update(struct vmm_vm *vm, uint32_t gsi, uint64_t addr, uint32_t data)
{
	int r = -ENOENT;

	pthread_mutex_lock(&vm->irq_lock);
	for (uint32_t i = 0; i < vm->routes->nr; i++) {
		struct kvm_irq_routing_entry *e = &vm->routes->entries[i];

		if (e->gsi != gsi || e->type != KVM_IRQ_ROUTING_MSI)
			continue;
		if (e->u.msi.address_lo == (uint32_t)addr &&
		    e->u.msi.address_hi == (uint32_t)(addr >> 32) && e->u.msi.data == data) {
			r = 0;
			break;
		}
		e->u.msi.address_lo = (uint32_t)addr;
		e->u.msi.address_hi = (uint32_t)(addr >> 32);
		e->u.msi.data = data;
		r = irq_commit(vm);
		break;
	}
	pthread_mutex_unlock(&vm->irq_lock);
	return r;
}

int vmm_irq_irqfd(struct vmm_vm *vm, int fd, uint32_t gsi, bool assign)
{
	struct kvm_irqfd f = {
		.fd = (uint32_t)fd,
		.gsi = gsi,
		.flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN,
	};

	return ioctl(vm->vm_fd, KVM_IRQFD, &f) < 0 ? -errno : 0;
}
