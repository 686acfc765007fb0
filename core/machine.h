/* core/machine.h — a whole machine from a configuration: the VM, its standard
 * devices, the kernel loaded, and the run until the guest or a signal ends it.
 *
 * Standard devices: serial (COM1), i8042, debug-exit, the PCI bus; then one
 * virtio-blk per disk and, on request, virtio-rng.
 */
#ifndef VMM_MACHINE_H
#define VMM_MACHINE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/boot/boot.h"
#include "core/vm.h"

#define VMM_MAX_DISKS 16

struct vmm_machine_cfg {
	const char *kernel;            /* required */
	const char *initrd;            /* NULL: none */
	const char *cmdline;           /* NULL: "" */
	uint64_t mem;                  /* bytes */
	int cpus;
	const char *disks[VMM_MAX_DISKS];   /* virtio-blk option strings */
	int ndisks;
	bool rng;
	const char *console;           /* "stdio", "file:PATH", "none" */
};

struct vmm_machine {
	struct vmm_vm vm;
	struct vmm_boot_entry entry;
	int sig_fd;
};

/* Build the machine and load the kernel. Returns 0 or -errno with @err set
 * (everything created so far is torn down). */
int vmm_machine_create(struct vmm_machine *m, const struct vmm_machine_cfg *cfg, struct ut_err *err);

/* Run until the guest ends the run, a fatal error, or SIGINT/SIGTERM/SIGHUP.
 * Returns the process exit status (see vmm_vm_exit_status); when the run ended
 * on a fatal error, @err holds its message. */
int vmm_machine_run(struct vmm_machine *m, struct ut_err *err);

void vmm_machine_destroy(struct vmm_machine *m);

#endif
