/* core/vcpu.c — vCPU creation, CPUID, and the KVM_RUN loop with exit dispatch.
 *
 * Exits handled: port I/O and MMIO (to the buses), system events (reset and
 * shutdown end the run with status 0), KVM_EXIT_SHUTDOWN (triple fault),
 * internal errors and anything else: those end the run with a message naming
 * the exit reason, RIP and the code bytes at RIP — never a hang.
 */
#include "core/vm.h"

#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define CPUID_MAX_ENTRIES 256
#define APIC_LVT_LINT0    0x350
#define APIC_LVT_LINT1    0x360
#define APIC_MODE_EXTINT  0x7
#define APIC_MODE_NMI     0x4

static int vcpu_get_cpuid(struct vmm_vm *vm, struct ut_err *err)
{
	struct kvm_cpuid2 *c;

	if (vm->cpuid)
		return 0;
	c = calloc(1, sizeof(*c) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2));
	if (!c)
		return ut_errf(err, -ENOMEM, "out of memory for CPUID");
	c->nent = CPUID_MAX_ENTRIES;
	if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0) {
		int r = -errno;

		free(c);
		return ut_errf_sys(err, r, "KVM_GET_SUPPORTED_CPUID failed");
	}
	vm->cpuid = c;
	return 0;
}

/* Per-vCPU CPUID: APIC IDs and topology (one core per vCPU, one socket). */
static int vcpu_set_cpuid(struct vmm_vcpu *v, struct ut_err *err)
{
	struct kvm_cpuid2 *base = v->vm->cpuid;
	size_t sz = sizeof(*base) + base->nent * sizeof(struct kvm_cpuid_entry2);
	struct kvm_cpuid2 *c = malloc(sz);
	int r = 0;

	if (!c)
		return ut_errf(err, -ENOMEM, "out of memory for CPUID");
	memcpy(c, base, sz);
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		switch (e->function) {
		case 1:
			e->ebx = (e->ebx & 0x0000ffffu) | ((uint32_t)v->vm->ncpus << 16) |
				 ((uint32_t)v->id << 24);
			e->ecx |= 1u << 31;          /* running under a hypervisor */
			if (v->vm->ncpus > 1)
				e->edx |= 1u << 28;  /* HTT: the count in EBX is valid */
			break;
		case 0xb:
		case 0x1f:
			e->edx = (uint32_t)v->id;    /* x2APIC ID */
			if (e->index == 0) {
				e->eax = 0;
				e->ebx = 1;
				e->ecx = 0x100;      /* level 0: SMT, one thread */
			} else if (e->index == 1) {
				int shift = 0;

				while ((1 << shift) < v->vm->ncpus)
					shift++;
				e->eax = (uint32_t)shift;
				e->ebx = (uint32_t)v->vm->ncpus;
				e->ecx = 0x201;      /* level 1: core */
			} else {
				e->eax = e->ebx = 0;
				e->ecx = e->index;
			}
			break;
		case 4:
			/* cores per package - 1 in EAX[31:26]; threads sharing the cache - 1 */
			e->eax &= 0x3ff;
			e->eax |= (uint32_t)(v->vm->ncpus - 1) << 26;
			break;
		default:
			break;
		}
	}
	if (ioctl(v->fd, KVM_SET_CPUID2, c) < 0)
		r = ut_errf_sys(err, -errno, "unable to set CPUID of vCPU %d", v->id);
	free(c);
	return r;
}

static int vcpu_set_lapic(struct vmm_vcpu *v, struct ut_err *err)
{
	struct kvm_lapic_state s;
	uint32_t lint0, lint1;

	if (ioctl(v->fd, KVM_GET_LAPIC, &s) < 0)
		return ut_errf_sys(err, -errno, "KVM_GET_LAPIC failed on vCPU %d", v->id);
	memcpy(&lint0, &s.regs[APIC_LVT_LINT0], 4);
	memcpy(&lint1, &s.regs[APIC_LVT_LINT1], 4);
	lint0 = (lint0 & ~0x700u) | (APIC_MODE_EXTINT << 8);
	lint1 = (lint1 & ~0x700u) | (APIC_MODE_NMI << 8);
	memcpy(&s.regs[APIC_LVT_LINT0], &lint0, 4);
	memcpy(&s.regs[APIC_LVT_LINT1], &lint1, 4);
	if (ioctl(v->fd, KVM_SET_LAPIC, &s) < 0)
		return ut_errf_sys(err, -errno, "KVM_SET_LAPIC failed on vCPU %d", v->id);
	return 0;
}

static int vcpu_set_fpu(struct vmm_vcpu *v, struct ut_err *err)
{
	struct kvm_fpu fpu = { .fcw = 0x37f, .mxcsr = 0x1f80 };

	if (ioctl(v->fd, KVM_SET_FPU, &fpu) < 0)
		return ut_errf_sys(err, -errno, "KVM_SET_FPU failed on vCPU %d", v->id);
	return 0;
}

int vmm_vcpu_init(struct vmm_vm *vm, int id, struct ut_err *err)
{
	struct vmm_vcpu *v = &vm->vcpus[id];
	void *run;
	int r;

	v->vm = vm;
	v->id = id;
	v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (v->fd < 0)
		return ut_errf_sys(err, -errno, "unable to create vCPU %d", id);
	run = mmap(NULL, (size_t)vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (run == MAP_FAILED)
		return ut_errf_sys(err, -errno, "unable to map vCPU %d run area", id);
	v->run = run;
	r = vcpu_get_cpuid(vm, err);
	if (!r)
		r = vcpu_set_cpuid(v, err);
	if (!r)
		r = vcpu_set_lapic(v, err);
	if (!r)
		r = vcpu_set_fpu(v, err);
	return r;
}

void vmm_vcpu_exit(struct vmm_vcpu *v)
{
	if (v->run)
		munmap(v->run, (size_t)v->vm->run_size);
	if (v->fd >= 0)
		close(v->fd);
	v->run = NULL;
	v->fd = -1;
}

void vmm_vcpu_kick(struct vmm_vcpu *v)
{
	if (!v->run)
		return;
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (v->thread_started)
		pthread_kill(v->thread, SIGUSR1);
}

static const char *exit_reason_name(uint32_t r)
{
	static const char *const names[] = {
		[KVM_EXIT_UNKNOWN] = "UNKNOWN", [KVM_EXIT_EXCEPTION] = "EXCEPTION",
		[KVM_EXIT_IO] = "IO", [KVM_EXIT_HYPERCALL] = "HYPERCALL",
		[KVM_EXIT_DEBUG] = "DEBUG", [KVM_EXIT_HLT] = "HLT", [KVM_EXIT_MMIO] = "MMIO",
		[KVM_EXIT_IRQ_WINDOW_OPEN] = "IRQ_WINDOW_OPEN", [KVM_EXIT_SHUTDOWN] = "SHUTDOWN",
		[KVM_EXIT_FAIL_ENTRY] = "FAIL_ENTRY", [KVM_EXIT_INTR] = "INTR",
		[KVM_EXIT_SET_TPR] = "SET_TPR", [KVM_EXIT_TPR_ACCESS] = "TPR_ACCESS",
		[KVM_EXIT_NMI] = "NMI", [KVM_EXIT_INTERNAL_ERROR] = "INTERNAL_ERROR",
		[KVM_EXIT_SYSTEM_EVENT] = "SYSTEM_EVENT",
	};

	if (r < sizeof(names) / sizeof(names[0]) && names[r])
		return names[r];
	return "?";
}

/* "RIP 0x... (code: 0f 01 ...)" for a fatal message. */
static void vcpu_describe(struct vmm_vcpu *v, char *out, size_t size)
{
	struct kvm_regs regs;
	struct kvm_translation tr;
	uint8_t code[16];
	size_t n = 0;

	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0) {
		snprintf(out, size, "RIP unknown");
		return;
	}
	n += (size_t)snprintf(out + n, size - n, "RIP 0x%llx", (unsigned long long)regs.rip);
	memset(&tr, 0, sizeof(tr));
	tr.linear_address = regs.rip;
	if (ioctl(v->fd, KVM_TRANSLATE, &tr) < 0 || !tr.valid)
		tr.physical_address = regs.rip;
	if (vmm_mem_read(&v->vm->mem, tr.physical_address, code, sizeof(code)) == 0) {
		n += (size_t)snprintf(out + n, size - n, " (code at 0x%llx:",
				      (unsigned long long)tr.physical_address);
		for (size_t i = 0; i < sizeof(code) && n < size; i++)
			n += (size_t)snprintf(out + n, size - n, " %02x", code[i]);
		if (n < size)
			snprintf(out + n, size - n, ")");
	} else {
		snprintf(out + n, size - n, " (code not in RAM)");
	}
}

static void vcpu_fatal(struct vmm_vcpu *v, const char *what)
{
	char where[256];

	vcpu_describe(v, where, sizeof(where));
	vmm_vm_fatal(v->vm, "vCPU %d: %s, %s", v->id, what, where);
}

static void vcpu_handle_io(struct vmm_vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t *p = (uint8_t *)run + run->io.data_offset;
	bool wr = run->io.direction == KVM_EXIT_IO_OUT;

	if (run->io.data_offset + (uint64_t)run->io.size * run->io.count > (uint64_t)v->vm->run_size) {
		vcpu_fatal(v, "port I/O exit with a data area outside the run page");
		return;
	}
	for (uint32_t i = 0; i < run->io.count; i++, p += run->io.size)
		vmm_bus_access(&v->vm->pio, run->io.port, p, run->io.size, wr);
}

/* Park here while a pause is requested. Returns false when the run is ending. */
static bool vcpu_check_pause(struct vmm_vcpu *v)
{
	struct vmm_vm *vm = v->vm;

	if (atomic_load(&vm->stopping))
		return false;
	pthread_mutex_lock(&vm->lock);
	if (vm->pause_req) {
		/* Finish the last exit's I/O inside KVM without running the guest,
		 * so saved state is consistent (KVM API: immediate_exit). */
		pthread_mutex_unlock(&vm->lock);
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		ioctl(v->fd, KVM_RUN, 0);
		__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
		pthread_mutex_lock(&vm->lock);
	}
	if (vm->pause_req) {
		vm->nr_paused++;
		pthread_cond_broadcast(&vm->cond);
		while (vm->pause_req && !atomic_load(&vm->stopping))
			pthread_cond_wait(&vm->cond, &vm->lock);
		vm->nr_paused--;
	}
	pthread_mutex_unlock(&vm->lock);
	return !atomic_load(&vm->stopping);
}

/* Returns false when the run must end. */
static bool vcpu_handle_exit(struct vmm_vcpu *v)
{
	struct kvm_run *run = v->run;
	char what[160];

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		vcpu_handle_io(v);
		return true;
	case KVM_EXIT_MMIO:
		vmm_bus_access(&v->vm->mmio, run->mmio.phys_addr, run->mmio.data,
			       run->mmio.len > 8 ? 8 : run->mmio.len, run->mmio.is_write);
		return true;
	case KVM_EXIT_INTR:
		return true;
	case KVM_EXIT_SYSTEM_EVENT:
		switch (run->system_event.type) {
		case KVM_SYSTEM_EVENT_RESET:
			vmm_vm_request_exit(v->vm, VMM_EXIT_RESET, 0);
			return false;
		case KVM_SYSTEM_EVENT_SHUTDOWN:
			vmm_vm_request_exit(v->vm, VMM_EXIT_POWEROFF, 0);
			return false;
		default:
			snprintf(what, sizeof(what), "unhandled system event %u",
				 run->system_event.type);
			vcpu_fatal(v, what);
			return false;
		}
	case KVM_EXIT_SHUTDOWN:
		vcpu_fatal(v, "triple fault (KVM_EXIT_SHUTDOWN)");
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		snprintf(what, sizeof(what), "KVM internal error, suberror %u%s",
			 run->internal.suberror,
			 run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ?
			 " (instruction emulation failed)" : "");
		vcpu_fatal(v, what);
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		snprintf(what, sizeof(what), "VM entry failed, hardware reason 0x%llx",
			 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		vcpu_fatal(v, what);
		return false;
	default:
		snprintf(what, sizeof(what), "unhandled exit reason %u (%s)", run->exit_reason,
			 exit_reason_name(run->exit_reason));
		vcpu_fatal(v, what);
		return false;
	}
}

void *vmm_vcpu_thread(void *arg)
{
	struct vmm_vcpu *v = arg;
	struct vmm_vm *vm = v->vm;
	sigset_t set;
	char name[16];

	snprintf(name, sizeof(name), "vcpu%d", v->id);
	pthread_setname_np(pthread_self(), name);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);

	while (vcpu_check_pause(v)) {
		int r = ioctl(v->fd, KVM_RUN, 0);

		__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			vmm_vm_fatal(vm, "vCPU %d: KVM_RUN failed: %s", v->id, strerror(errno));
			break;
		}
		atomic_fetch_add(&v->exits, 1);
		if (!vcpu_handle_exit(v))
			break;
	}
	pthread_mutex_lock(&vm->lock);
	vm->nr_live--;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}
