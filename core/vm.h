/* core/vm.h — one KVM virtual machine: RAM, vCPU threads, buses, IRQs, devices.
 *
 * Threads: one per vCPU (KVM_RUN loop, dispatching port I/O and MMIO to the
 * buses) and the main thread running the event loop (console input, signals,
 * ioeventfds, storage completions). Devices lock their own state.
 *
 * Run states:   created ──vmm_vm_start──> running <──vmm_vm_resume── paused
 *                                          │ ├────vmm_vm_pause──────────┤
 *                                          │ └─vmm_vm_pause_on_error────┘ (a device: a
 *                                          │      disk error under werror=stop/enospc;
 *                                          │      vmm_vm_resume runs the resume hooks,
 *                                          │      which retry the failed requests)
 *                                          └─vmm_vm_request_exit──> stopping ──vmm_vm_join──> stopped
 */
#ifndef VMM_VM_H
#define VMM_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/bus.h"
#include "core/device.h"
#include "core/loop.h"
#include "core/mem.h"
#include "util/err.h"

struct kvm_run;
struct kvm_cpuid2;
struct kvm_irq_routing;
struct vmm_pci;

#define VMM_MAX_CPUS 64
#define VMM_MAX_DEVICES 64
#define VMM_MAX_RESUME_HOOKS VMM_MAX_DEVICES
#define VMM_PAUSE_WHY_MAX 1024

struct vmm_vcpu {
	struct vmm_vm *vm;
	int id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool thread_started;
	atomic_ullong exits;        /* exits to userspace, for benchmarks */
};

/* How the run ended. */
enum vmm_exit_kind {
	VMM_EXIT_NONE = 0,
	VMM_EXIT_GUEST,     /* debug-exit port: status from the guest */
	VMM_EXIT_RESET,     /* guest reset / reboot request (i8042, port 0xcf9, KVM
			       reset event): status 0; the run ends, as QEMU's
			       -no-reboot */
	VMM_EXIT_POWEROFF,  /* guest poweroff (ACPI sleep, KVM shutdown event): status 0 */
	VMM_EXIT_SIGNAL,    /* SIGINT/SIGTERM: status 128+signal */
	VMM_EXIT_FATAL,     /* triple fault, internal error, unhandled exit: message in fatal */
	VMM_EXIT_QUIT,      /* asked to quit by the VMM's user (control socket) */
};

/* Run-state and device events, for the control socket's QMP-style events
 * (core/control.h says how each goes on the wire). */
enum vmm_qevent_kind {
	VMM_QEV_STOP,            /* the VM paused (vmm_vm_pause, vmm_vm_pause_on_error) */
	VMM_QEV_RESUME,          /* vmm_vm_resume ended a pause that was told */
	VMM_QEV_SHUTDOWN,        /* the run ends: exit_kind says why */
	VMM_QEV_BLOCK_IO_ERROR,  /* a disk request failed (vmm_vm_block_io_error) */
};

struct vmm_qevent {
	enum vmm_qevent_kind kind;
	enum vmm_exit_kind exit_kind;   /* SHUTDOWN */
	/* BLOCK_IO_ERROR: */
	const char *device;             /* the device's id ("virtio-blk0") */
	bool write;                     /* a write, flush, discard or write-zeroes; else a read */
	bool stop;                      /* the VM pauses for it; else the guest gets the error */
	bool pauses;                    /* stop, and no STOP told yet: the STOP that follows
					   is for it (a queue that drops events keeps it) */
	int error;                      /* negative errno */
};

struct vmm_vm {
	int kvm_fd, vm_fd;
	int run_size;
	struct vmm_mem mem;
	struct vmm_bus pio, mmio;
	struct vmm_loop loop;
	struct kvm_cpuid2 *cpuid;
	int ncpus;
	bool has_pit;
	struct vmm_vcpu vcpus[VMM_MAX_CPUS];

	struct vmm_device *devs[VMM_MAX_DEVICES];
	int ndevs;
	struct vmm_pci *pci;

	/* IRQ routing (GSI table; entries 0..23 are the in-kernel irqchip's) */
	pthread_mutex_t irq_lock;
	struct kvm_irq_routing *routes;
	uint32_t next_gsi;

	/* run control */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	atomic_bool stopping;
	bool pause_req;
	int nr_paused, nr_live;
	enum vmm_exit_kind exit_kind;
	int exit_status;
	struct ut_err fatal;
	/* why the VM is paused when a device paused it (vmm_vm_pause_on_error),
	 * "" otherwise; under lock */
	char pause_why[VMM_PAUSE_WHY_MAX];
	/* run by vmm_vm_resume (any thread; a hook only signals its device) */
	struct { void (*fn)(void *opaque); void *opaque; } resume_hooks[VMM_MAX_RESUME_HOOKS];
	int nresume_hooks;
	/* something can resume the VM (a control socket answers): devices
	 * pause on errors only then (see vmm_vm_pause_on_error) */
	bool resumable;
	/* Host-side messages (disk errors and the like) for the VMM's user,
	 * one line without the "cowvm: " prefix; NULL drops them. Set by the
	 * CLI (only cli/ prints). Called on the thread that raised it. */
	void (*on_event)(void *opaque, const char *msg);
	void *on_event_opaque;
	/* Run-state and device events (struct vmm_qevent) for the control
	 * socket, which sets it, under lock, while it is open; NULL drops
	 * them. Called with vm->lock held, on the thread that caused the
	 * event (a vCPU, the loop, a storage completion): it must only queue
	 * the event (no vmm_vm_* call, nothing that blocks), and must copy
	 * what it keeps (the strings live for the call only). */
	void (*on_qevent)(void *opaque, const struct vmm_qevent *ev);
	void *on_qevent_opaque;
	/* a STOP was told and no RESUME since; under lock */
	bool stop_told;
};

/* Zero @vm and set up what needs no KVM: locks, buses, every fd -1. Done by
 * vmm_vm_create; tests that drive devices without KVM start from here. */
void vmm_vm_preinit(struct vmm_vm *vm);

/* How to create a VM. */
struct vmm_vm_opts {
	uint64_t ram_size;       /* bytes, a multiple of 2 MiB */
	uint8_t *ram;            /* NULL: new memfd RAM; else an existing mapping of
				  * ram_size bytes (a private file mapping for a
				  * restore, or a memfd mapping whose fd is ram_fd) */
	int ram_fd;              /* -1 unless @ram is a memfd mapping */
	int ncpus;
	bool no_pit;             /* no in-kernel i8254 PIT */
};

/* Open /dev/kvm, create the VM with an in-kernel irqchip (and PIT unless
 * no_pit), guest RAM as @o says, and @o->ncpus vCPUs (threads not started).
 * The VM owns o->ram / o->ram_fd from the call on, even on failure. Returns
 * 0 or -errno with @err set; on failure @vm is cleaned up. */
int vmm_vm_create(struct vmm_vm *vm, const struct vmm_vm_opts *o, struct ut_err *err);

/* Start one thread per vCPU. Returns 0 or -errno. */
int vmm_vm_start(struct vmm_vm *vm, struct ut_err *err);

/* Ask the run to end (first caller wins: kind and status are kept, and told
 * as VMM_QEV_SHUTDOWN) and kick every vCPU out of KVM_RUN and the loop out
 * of epoll. Any thread. */
void vmm_vm_request_exit(struct vmm_vm *vm, enum vmm_exit_kind kind, int status);

/* Record a fatal error (first one wins) and request the exit. Any thread. */
void vmm_vm_fatal(struct vmm_vm *vm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Pause every vCPU (returns once all are out of KVM_RUN and parked; told as
 * VMM_QEV_STOP then, unless a STOP was told already) / let them run again
 * (and run the resume hooks; a pause on an error is over; VMM_QEV_RESUME
 * when a STOP was told). Called from the loop thread. Returns 0 or
 * -ETIMEDOUT. */
int vmm_vm_pause(struct vmm_vm *vm);
void vmm_vm_resume(struct vmm_vm *vm);

/* Is a pause requested (by vmm_vm_pause or a device)? Any thread. */
bool vmm_vm_paused(struct vmm_vm *vm);

/* A device asks for the VM to pause because a request failed and its error
 * policy says stop (virtio-blk werror=stop/enospc, rerror=stop): pause_req
 * is set and the vCPUs are kicked, without waiting (the caller may hold a
 * device lock a vCPU needs to reach its pause point). @why (copied) is kept
 * until vmm_vm_resume and reported by query-status. Any thread. Returns
 * false, doing nothing, when the VM is not resumable (no control socket:
 * nothing could ever resume it) or is stopping; the caller then reports the
 * error to the guest instead. A pause that was not one already is told
 * (VMM_QEV_STOP), as vmm_vm_pause tells its own once the vCPUs are parked;
 * vmm_vm_resume tells VMM_QEV_RESUME when a STOP was told. */
bool vmm_vm_pause_on_error(struct vmm_vm *vm, const char *why);

/* A disk request on device @device failed with @error (negative errno):
 * tell VMM_QEV_BLOCK_IO_ERROR and, when @stop_why is not NULL (the device's
 * error policy says stop), pause the VM as vmm_vm_pause_on_error(@stop_why)
 * does, under the same hold of vm->lock: the event comes before its STOP,
 * as QEMU's BLOCK_IO_ERROR does, and no resume comes between them. @write:
 * a write, flush, discard or write-zeroes. The event says "stop" when the
 * VM pauses for it or is paused already (resumable, not stopping), else
 * "report". Returns true when the VM is paused (the caller keeps the
 * request), false when the error is to be reported to the guest. Any
 * thread. */
bool vmm_vm_block_io_error(struct vmm_vm *vm, const char *device, bool write, int error,
			   const char *stop_why);

/* Register @fn(@opaque) to run on every vmm_vm_resume (after the vCPUs were
 * released). At init, before the VM runs. -ENOSPC when all
 * VMM_MAX_RESUME_HOOKS are taken. */
int vmm_vm_on_resume(struct vmm_vm *vm, void (*fn)(void *opaque), void *opaque);

/* Send a host-side message to vm->on_event (printf format). Any thread. */
void vmm_vm_event(struct vmm_vm *vm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Wait for every vCPU thread to end (after vmm_vm_request_exit). */
void vmm_vm_join(struct vmm_vm *vm);

/* The process exit status for how the run ended (see cli/cmd-run.c). */
int vmm_vm_exit_status(const struct vmm_vm *vm);

/* Tear everything down: devices (exit ops), vCPUs, RAM, fds. */
void vmm_vm_destroy(struct vmm_vm *vm);

/* Add a created device to the VM's list (it owns @dev then). -ENOSPC if full. */
int vmm_vm_add_device(struct vmm_vm *vm, struct vmm_device *dev);

/* IRQs (core/irq.c). */
/* Set a legacy (GSI 0..23) line level. */
int vmm_irq_line(struct vmm_vm *vm, uint32_t gsi, int level);
/* Pulse an edge-triggered legacy line. */
void vmm_irq_pulse(struct vmm_vm *vm, uint32_t gsi);
/* Allocate a GSI routed to MSI (@addr, @data); returns the GSI or -errno. */
int vmm_irq_msi_alloc(struct vmm_vm *vm, uint64_t addr, uint32_t data);
/* Change the MSI message of @gsi. Returns 0 or -errno. */
int vmm_irq_msi_update(struct vmm_vm *vm, uint32_t gsi, uint64_t addr, uint32_t data);
/* Bind eventfd @fd to @gsi (KVM_IRQFD) or unbind it. */
int vmm_irq_irqfd(struct vmm_vm *vm, int fd, uint32_t gsi, bool assign);
/* Install the default routes (called by vmm_vm_create). */
int vmm_irq_init(struct vmm_vm *vm, struct ut_err *err);
void vmm_irq_exit(struct vmm_vm *vm);

/* vCPU state records (core/vcpu-state.c). The vCPU must be paused. */
int vmm_vcpu_save(struct vmm_vcpu *vcpu, struct ut_buf *out, struct ut_err *err);
int vmm_vcpu_restore(struct vmm_vcpu *vcpu, const uint8_t *rec, size_t len, struct ut_err *err);

/* vCPU internals (core/vcpu.c). */
int vmm_vcpu_init(struct vmm_vm *vm, int id, struct ut_err *err);
void *vmm_vcpu_thread(void *arg);
void vmm_vcpu_kick(struct vmm_vcpu *vcpu);
void vmm_vcpu_exit(struct vmm_vcpu *vcpu);

#endif
