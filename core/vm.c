/* core/vm.c — VM creation and run control; see vm.h. */
#include "core/vm.h"
#include "core/layout.h"
#include "core/pci.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define VM_TSS_ADDR      0xFFFBD000ULL
#define VM_IDMAP_ADDR    0xFFFBC000ULL

static int vm_set_slots(struct vmm_vm *vm, struct ut_err *err)
{
	for (int i = 0; i < vm->mem.nr_regions; i++) {
		struct vmm_mem_region *r = &vm->mem.regions[i];
		struct kvm_userspace_memory_region s = {
			.slot = (uint32_t)i,
			.guest_phys_addr = r->gpa,
			.memory_size = r->size,
			.userspace_addr = (uint64_t)(uintptr_t)r->hva,
		};

		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &s) < 0)
			return ut_errf_sys(err, -errno, "unable to add guest RAM slot %d (0x%llx+0x%llx)",
					   i, (unsigned long long)r->gpa, (unsigned long long)r->size);
	}
	return 0;
}

void vmm_vm_preinit(struct vmm_vm *vm)
{
	memset(vm, 0, sizeof(*vm));
	vm->kvm_fd = vm->vm_fd = -1;
	vm->mem.fd = -1;
	vm->loop.epfd = vm->loop.wake_fd = -1;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	pthread_mutex_init(&vm->irq_lock, NULL);
	vmm_bus_init(&vm->pio, "port I/O");
	vmm_bus_init(&vm->mmio, "MMIO");
	for (int i = 0; i < VMM_MAX_CPUS; i++)
		vm->vcpus[i].fd = -1;
}

int vmm_vm_create(struct vmm_vm *vm, const struct vmm_vm_opts *o, struct ut_err *err)
{
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	uint64_t idmap = VM_IDMAP_ADDR, ram_size = o->ram_size;
	uint8_t *ram = o->ram;
	int ram_fd = o->ram_fd, ncpus = o->ncpus, r, max;

	vmm_vm_preinit(vm);
	if (ncpus < 1 || ncpus > VMM_MAX_CPUS) {
		r = ut_errf(err, -EINVAL, "%d vCPUs requested; cowvm supports 1 to %d", ncpus,
			    VMM_MAX_CPUS);
		goto out;
	}
	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		r = ut_errf_sys(err, -errno, "unable to open /dev/kvm");
		goto out;
	}
	if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
		r = ut_errf(err, -ENOTSUP, "/dev/kvm speaks an unknown KVM API version");
		goto out;
	}
	max = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (max <= 0)
		max = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	if (max > 0 && ncpus > max) {
		r = ut_errf(err, -EINVAL, "%d vCPUs requested; this host's KVM allows %d", ncpus, max);
		goto out;
	}
	vm->run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->run_size <= 0) {
		r = ut_errf_sys(err, -errno, "KVM_GET_VCPU_MMAP_SIZE failed");
		goto out;
	}
	do
		vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	while (vm->vm_fd < 0 && errno == EINTR);
	if (vm->vm_fd < 0) {
		r = ut_errf_sys(err, -errno, "unable to create a KVM virtual machine");
		goto out;
	}
	/* Needed on Intel VMX; harmless elsewhere. */
	ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)VM_TSS_ADDR);
	ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap);
	/* RAM slots before the irqchip: with an irqchip in place, KVM makes a
	 * memory-slot change wait out a grace period (~8 ms seen here), which
	 * every start and restore would pay. */
	if (ram) {
		vmm_mem_layout(&vm->mem, ram, ram_size, ram_fd);
		ram = NULL;   /* owned by vm->mem now */
	} else {
		r = vmm_mem_init(&vm->mem, ram_size, err);
		if (r)
			goto out;
	}
	r = vm_set_slots(vm, err);
	if (r)
		goto out;
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
		r = ut_errf_sys(err, -errno, "unable to create the in-kernel irqchip");
		goto out;
	}
	if (!o->no_pit) {
		if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
			r = ut_errf_sys(err, -errno, "unable to create the in-kernel PIT");
			goto out;
		}
		vm->has_pit = true;
	}
	r = vmm_irq_init(vm, err);
	if (r)
		goto out;
	r = vmm_loop_init(&vm->loop);
	if (r) {
		ut_errf_sys(err, r, "unable to create the event loop");
		goto out;
	}
	vm->ncpus = ncpus;
	for (int i = 0; i < ncpus; i++) {
		r = vmm_vcpu_init(vm, i, err);
		if (r)
			goto out;
	}
	return 0;
out:
	if (ram) {   /* failed before vm->mem took it */
		munmap(ram, ram_size);
		if (ram_fd >= 0)
			close(ram_fd);
	}
	vmm_vm_destroy(vm);
	return r;
}

static void vm_kick_signal(int sig)
{
	(void)sig;   /* only interrupts KVM_RUN */
}

int vmm_vm_start(struct vmm_vm *vm, struct ut_err *err)
{
	struct sigaction sa = { .sa_handler = vm_kick_signal };
	int r;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);   /* no SA_RESTART: KVM_RUN returns EINTR */
	pthread_mutex_lock(&vm->lock);
	vm->nr_live = 0;
	pthread_mutex_unlock(&vm->lock);
	for (int i = 0; i < vm->ncpus; i++) {
		struct vmm_vcpu *v = &vm->vcpus[i];
		pthread_attr_t a;

		pthread_attr_init(&a);
		pthread_attr_setstacksize(&a, 256 << 10);
		r = pthread_create(&v->thread, &a, vmm_vcpu_thread, v);
		pthread_attr_destroy(&a);
		if (r) {
			vmm_vm_request_exit(vm, VMM_EXIT_FATAL, 1);
			return ut_errf_sys(err, -r, "unable to start vCPU %d thread", i);
		}
		v->thread_started = true;
		pthread_mutex_lock(&vm->lock);
		vm->nr_live++;
		pthread_mutex_unlock(&vm->lock);
	}
	return 0;
}

static void vm_kick_all(struct vmm_vm *vm)
{
	for (int i = 0; i < vm->ncpus; i++)
		vmm_vcpu_kick(&vm->vcpus[i]);
}

/* Tell @ev to vm->on_qevent. vm->lock held. */
static void vm_tell(struct vmm_vm *vm, const struct vmm_qevent *ev)
{
	if (vm->on_qevent)
		vm->on_qevent(vm->on_qevent_opaque, ev);
}

/* The VM is paused (pause_req): tell STOP unless told already. vm->lock held. */
static void vm_tell_stop(struct vmm_vm *vm)
{
	struct vmm_qevent ev = { .kind = VMM_QEV_STOP };

	if (vm->stop_told)
		return;
	vm->stop_told = true;
	vm_tell(vm, &ev);
}

void vmm_vm_request_exit(struct vmm_vm *vm, enum vmm_exit_kind kind, int status)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->exit_kind == VMM_EXIT_NONE) {
		struct vmm_qevent ev = { .kind = VMM_QEV_SHUTDOWN, .exit_kind = kind };

		vm->exit_kind = kind;
		vm->exit_status = status;
		vm_tell(vm, &ev);
	}
	atomic_store(&vm->stopping, true);
	vm->pause_req = false;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	vm_kick_all(vm);
	if (vm->loop.wake_fd >= 0)
		vmm_loop_quit(&vm->loop);
}

void vmm_vm_fatal(struct vmm_vm *vm, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&vm->lock);
	if (vm->exit_kind == VMM_EXIT_NONE && !vm->fatal.msg[0]) {
		va_start(ap, fmt);
		vsnprintf(vm->fatal.msg, sizeof(vm->fatal.msg), fmt, ap);
		va_end(ap);
		vm->fatal.code = -EIO;
	}
	pthread_mutex_unlock(&vm->lock);
	vmm_vm_request_exit(vm, VMM_EXIT_FATAL, 1);
}

int vmm_vm_pause(struct vmm_vm *vm)
{
	struct timespec dl;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 5;
	pthread_mutex_lock(&vm->lock);
	vm->pause_req = true;
	pthread_mutex_unlock(&vm->lock);
	vm_kick_all(vm);
	pthread_mutex_lock(&vm->lock);
	while (vm->nr_paused < vm->nr_live && !atomic_load(&vm->stopping) && !r)
		r = pthread_cond_timedwait(&vm->cond, &vm->lock, &dl);
	if (r && !vm->pause_why[0]) {   /* a pause on an error stays */
		vm->pause_req = false;
		pthread_cond_broadcast(&vm->cond);
	}
	if (vm->pause_req)   /* parked, or paused on an error meanwhile */
		vm_tell_stop(vm);
	pthread_mutex_unlock(&vm->lock);
	return r ? -ETIMEDOUT : 0;
}

void vmm_vm_resume(struct vmm_vm *vm)
{
	struct vmm_qevent ev = { .kind = VMM_QEV_RESUME };

	pthread_mutex_lock(&vm->lock);
	vm->pause_req = false;
	vm->pause_why[0] = '\0';
	pthread_cond_broadcast(&vm->cond);
	if (vm->stop_told) {
		vm->stop_told = false;
		vm_tell(vm, &ev);
	}
	pthread_mutex_unlock(&vm->lock);
	for (int i = 0; i < vm->nresume_hooks; i++)
		vm->resume_hooks[i].fn(vm->resume_hooks[i].opaque);
}

bool vmm_vm_paused(struct vmm_vm *vm)
{
	bool p;

	pthread_mutex_lock(&vm->lock);
	p = vm->pause_req;
	pthread_mutex_unlock(&vm->lock);
	return p;
}

/* Can a device pause the VM on an error now? vm->lock held. */
static bool vm_error_pauses(struct vmm_vm *vm)
{
	return vm->resumable && !atomic_load(&vm->stopping);
}

/* vmm_vm_pause_on_error with vm->lock held (the caller kicks the vCPUs
 * when it returns true, after unlocking). */
static bool vm_pause_on_error_locked(struct vmm_vm *vm, const char *why)
{
	if (!vm_error_pauses(vm))
		return false;
	vm->pause_req = true;
	if (!vm->pause_why[0])
		snprintf(vm->pause_why, sizeof(vm->pause_why), "%s", why);
	vm_tell_stop(vm);
	return true;
}

bool vmm_vm_pause_on_error(struct vmm_vm *vm, const char *why)
{
	bool paused;

	pthread_mutex_lock(&vm->lock);
	paused = vm_pause_on_error_locked(vm, why);
	pthread_mutex_unlock(&vm->lock);
	if (paused)
		vm_kick_all(vm);
	return paused;
}

bool vmm_vm_block_io_error(struct vmm_vm *vm, const char *device, bool write, int error,
			   const char *stop_why)
{
	struct vmm_qevent ev = { .kind = VMM_QEV_BLOCK_IO_ERROR, .device = device,
				 .write = write, .error = error };
	bool paused = false;

	/* the event and the pause under one hold of the lock: no resume
	 * (RESUME) can come between the BLOCK_IO_ERROR and its STOP */
	pthread_mutex_lock(&vm->lock);
	ev.stop = stop_why && vm_error_pauses(vm);
	ev.pauses = ev.stop && !vm->stop_told;
	vm_tell(vm, &ev);
	if (ev.stop)
		paused = vm_pause_on_error_locked(vm, stop_why);
	pthread_mutex_unlock(&vm->lock);
	if (paused)
		vm_kick_all(vm);
	return paused;
}

int vmm_vm_on_resume(struct vmm_vm *vm, void (*fn)(void *opaque), void *opaque)
{
	if (vm->nresume_hooks >= VMM_MAX_RESUME_HOOKS)
		return -ENOSPC;
	vm->resume_hooks[vm->nresume_hooks].fn = fn;
	vm->resume_hooks[vm->nresume_hooks].opaque = opaque;
	vm->nresume_hooks++;
	return 0;
}

void vmm_vm_event(struct vmm_vm *vm, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	if (!vm->on_event)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	vm->on_event(vm->on_event_opaque, msg);
}

void vmm_vm_join(struct vmm_vm *vm)
{
	for (int i = 0; i < vm->ncpus; i++) {
		struct vmm_vcpu *v = &vm->vcpus[i];

		if (v->thread_started) {
			pthread_join(v->thread, NULL);
			v->thread_started = false;
		}
	}
}

int vmm_vm_exit_status(const struct vmm_vm *vm)
{
	switch (vm->exit_kind) {
	case VMM_EXIT_GUEST:
		return vm->exit_status & 0xff;
	case VMM_EXIT_RESET:
	case VMM_EXIT_POWEROFF:
	case VMM_EXIT_QUIT:
		return 0;
	case VMM_EXIT_SIGNAL:
		return 128 + vm->exit_status;
	case VMM_EXIT_FATAL:
	case VMM_EXIT_NONE:
	default:
		return 1;
	}
}

int vmm_vm_add_device(struct vmm_vm *vm, struct vmm_device *dev)
{
	if (vm->ndevs >= VMM_MAX_DEVICES)
		return -ENOSPC;
	dev->vm = vm;
	vm->devs[vm->ndevs++] = dev;
	return 0;
}

void vmm_vm_destroy(struct vmm_vm *vm)
{
	if (vm->ncpus && !atomic_load(&vm->stopping))
		vmm_vm_request_exit(vm, VMM_EXIT_QUIT, 0);
	vmm_vm_join(vm);
	for (int i = vm->ndevs - 1; i >= 0; i--) {
		struct vmm_device *d = vm->devs[i];

		if (d->ops->exit)
			d->ops->exit(d);
		vm->devs[i] = NULL;
	}
	vm->ndevs = 0;
	vmm_pci_exit(vm);
	for (int i = 0; i < VMM_MAX_CPUS; i++)
		vmm_vcpu_exit(&vm->vcpus[i]);
	vm->ncpus = 0;
	if (vm->loop.epfd >= 0)
		vmm_loop_exit(&vm->loop);
	vmm_irq_exit(vm);
	free(vm->cpuid);
	vm->cpuid = NULL;
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	vmm_mem_exit(&vm->mem);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	vm->vm_fd = vm->kvm_fd = -1;
	vmm_bus_exit(&vm->pio);
	vmm_bus_exit(&vm->mmio);
}
