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
#include "core/state.h"
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
	const char *console_socket;    /* also serve the console here; NULL: no */
};

struct vmm_machine {
	struct vmm_vm vm;
	struct vmm_machine_cfg cfg;    /* as built (disk strings owned by the caller or sf) */
	struct vmm_boot_entry entry;   /* fresh boot only */
	struct vmm_state_file *sf;     /* restore only */
	int sig_fd;
	/* save on SIGUSR2 (vmm_machine_run) */
	const char *save_path;
	unsigned save_flags;           /* VMM_STATE_F_* */
	bool save_resume;              /* keep running after the save */
	int saves;                     /* saves done */
	struct vmm_state_stats last_save;
	struct ut_err save_err;        /* the last failed save */
	struct vmm_control *ctl;       /* control socket, NULL if none */
};

/* Build the machine and load the kernel. Returns 0 or -errno with @err set
 * (everything created so far is torn down). */
int vmm_machine_create(struct vmm_machine *m, const struct vmm_machine_cfg *cfg, struct ut_err *err);

/* Build a machine from the state file @path (see core/state.h): RAM mapped
 * lazily (or decompressed), the same devices, then every record applied.
 * @disks/@ndisks (may be 0) replace the saved disks one for one; @console
 * replaces the console, @console_socket (may be NULL) adds a console socket. @flags: VMM_STATE_F_VERIFY. Returns 0 or -errno. */
int vmm_machine_restore(struct vmm_machine *m, const char *path, const char *const *disks,
			int ndisks, const char *console, const char *console_socket, unsigned flags,
			struct ut_err *err);

/* Run until the guest ends the run, a fatal error, or SIGINT/SIGTERM/SIGHUP.
 * With m->save_path set, SIGUSR2 saves the state there, then ends the run
 * (status 0) or, with m->save_resume, continues. Returns the process exit
 * status (see vmm_vm_exit_status); when the run ended on a fatal error or a
 * failed save, @err holds its message. */
int vmm_machine_run(struct vmm_machine *m, struct ut_err *err);

/* Serve the control socket (core/control.h) at @path while the machine runs.
 * Returns 0 or -errno with @err set. */
int vmm_machine_control(struct vmm_machine *m, const char *path, struct ut_err *err);

/* Press the guest's ACPI power button (a GED event). */
void vmm_machine_power_button(struct vmm_machine *m);

void vmm_machine_destroy(struct vmm_machine *m);

#endif
