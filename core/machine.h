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
	bool no_pit;                   /* no in-kernel i8254 PIT */
	const char *console;           /* "stdio", "file:PATH", "none" */
	const char *console_socket;    /* also serve the console here; NULL: no */
};

struct vmm_disk_snapshot;
struct vmm_disk_job;

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
	bool save_deferred;            /* SIGUSR2 came during a disk snapshot:
					  saved when it ends (vmm_machine_disk_job_ended) */
	struct vmm_control *ctl;       /* control socket, NULL if none */
	/* Hook, NULL for none (set after create/restore): called once by
	 * vmm_machine_run on the loop thread when the guest runs (vCPU threads
	 * started), before any control request or signal is served. A non-zero
	 * return ends the run as a fatal error with the message in @err. The
	 * CLI records the VM as running in the catalog here (core knows
	 * nothing of the catalog). */
	int (*on_running)(struct vmm_machine *m, void *opaque, struct ut_err *err);
	void *on_running_opaque;
	/* Hook, NULL for none: a disk switches to an external snapshot's
	 * overlay (vmm_machine_disk_snapshot, loop thread, just before the
	 * disk's drained section: the vCPUs run and the disk's requests
	 * stay in flight, but no completion or new kick of any device is
	 * served meanwhile; be brief, bounded well below the control
	 * client's timeout).
	 * Called with @undo false once the overlay file exists, complete and
	 * durable, and before the disk writes it (the guest's writes still go
	 * to the image): a non-zero return (message in @err) cancels the
	 * snapshot (the file the snapshot created is removed, the VM
	 * unchanged). Called again with @undo true when the drain, the flush
	 * or the switch then failed, while the file is still at its name:
	 * put back what the first call recorded; then the file is removed.
	 * A non-zero return (the record still names the overlay) keeps the
	 * file, a complete overlay of the image with nothing written to it,
	 * so that the record names a file that works; the error reported
	 * says both failures and that the file was kept. The CLI records the
	 * new image in the catalog here. */
	int (*on_disk_snapshot)(struct vmm_machine *m, void *opaque,
				const struct vmm_disk_snapshot *s, bool undo, struct ut_err *err);
	void *on_disk_snapshot_opaque;
	/* the disk snapshot whose worker runs (vmm_machine_disk_snapshot_start),
	 * NULL if none */
	struct vmm_disk_job *disk_job;
	/* cfg.disks[i] rewritten by a snapshot (owned; NULL: the caller's) */
	char *disk_opts[VMM_MAX_DISKS];
};

/* What a disk snapshot changes, for the on_disk_snapshot hook. */
struct vmm_disk_snapshot {
	int disk;                  /* index in cfg.disks: "virtio-blk<disk>" */
	const char *device;        /* "virtio-blk0", ... */
	const char *image;         /* absolute path of the image written until now */
	const char *overlay;       /* absolute path of the new overlay (qcow2) */
	uint64_t virtual_size;     /* bytes, both */
};

#define VMM_SNAP_EXISTING (1u << 0)   /* the overlay file exists (STG_SNAP_EXISTING) */

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
 * With m->save_path set, SIGUSR2 saves the state there (after a disk
 * snapshot in progress has ended), then ends the run
 * (status 0) or, with m->save_resume, continues. Returns the process exit
 * status (see vmm_vm_exit_status); when the run ended on a fatal error or a
 * failed save, @err holds its message. */
int vmm_machine_run(struct vmm_machine *m, struct ut_err *err);

/* Serve the control socket (core/control.h) at @path while the machine runs.
 * Returns 0 or -errno with @err set. */
int vmm_machine_control(struct vmm_machine *m, const char *path, struct ut_err *err);

/* External snapshot of a disk while the VM runs (QMP's
 * blockdev-snapshot-sync; core/snapshot.c): @device names the disk,
 * "virtio-blkN" (the id its BLOCK_IO_ERROR events carry) or "vdX" (the
 * disk given target=vdX when the disks have targets, as `cowvm start`
 * passes the catalog's; else the X-th disk in the order they were given,
 * as a Linux guest names them: vda, vdb, ... vdz, vdaa). The vCPUs are
 * not paused (no STOP/RESUME events). The overlay @path is created
 * (unnamed, O_TMPFILE, then linked, or under a temporary name, then
 * renamed: never a partial file at @path;
 * VMM_SNAP_EXISTING: the qcow2 file there, whose backing file must be the
 * disk's image, is used) and opened, and the data the disk has written
 * so far is pushed to the host's disk, while the disk goes on serving the
 * guest; m->on_disk_snapshot is told; then the disk is drained
 * (core/virtio/blk.h: its requests in flight finish, new ones wait until
 * the switch, then go to the overlay), flushed (what was written since),
 * and switched to the overlay (its image becomes the overlay's read-only
 * backing layer), and cfg.disks names the overlay (a later save records
 * it). A request
 * that failed while the disk drained may pause the VM on the error, as it
 * would have anyway. A paused VM stays paused. Requests
 * parked by a pause on a disk error survive
 * and go to the overlay when the VM is resumed. Loop thread (the control
 * socket's). Returns 0, or -errno with @err naming the device or file and
 * the problem; then nothing changed (the disk as it was, no file left that
 * was created), except when m->on_disk_snapshot had recorded the overlay
 * and could not undo that: then the overlay's file is kept at its name
 * (what the record names; an overlay of the image with nothing written to
 * it) and @err says so. */
int vmm_machine_disk_snapshot(struct vmm_machine *m, const char *device, const char *path,
			      unsigned flags, struct ut_err *err);

/* vmm_machine_disk_snapshot's result, for vmm_machine_disk_snapshot_start:
 * @r 0, or -errno with @err. Loop thread. */
typedef void (*vmm_disk_snapshot_done_fn)(void *opaque, int r, const struct ut_err *err);

/* The same, with its slow part (creating the overlay file, pushing the
 * data written so far to the disk) on a worker thread while the loop
 * thread goes on serving the guest's disks and the control socket; then
 * the rest runs on the loop thread and @done(@opaque, r, err) tells the
 * result there, exactly as vmm_machine_disk_snapshot would have returned
 * it. One at a time per machine: another one (either call) is refused
 * with -EBUSY while this one runs, and so is a save (the caller checks
 * m->disk_job). Returns 0 (started: @done will be called once, from the
 * loop, or from vmm_machine_disk_job_cancel) or -errno with @err (not
 * started, nothing changed, @done never called). */
int vmm_machine_disk_snapshot_start(struct vmm_machine *m, const char *device, const char *path,
				    unsigned flags, vmm_disk_snapshot_done_fn done, void *opaque,
				    struct ut_err *err);

/* End a started snapshot whose result has not been told (the run ended):
 * waits for its worker, removes the file it created (the hook has not
 * recorded it: that happens after the worker, on the loop), and calls its @done
 * with -ECANCELED. Nothing when none runs. vmm_machine_run calls it when
 * the loop ends, vmm_machine_destroy too. */
void vmm_machine_disk_job_cancel(struct vmm_machine *m);

/* The started disk snapshot that has not told its result yet: true with
 * its device's id and its file as given (valid until it ends), or false
 * when none runs. Loop thread. */
bool vmm_machine_disk_job_info(struct vmm_machine *m, const char **device, const char **file);

/* Called by core/snapshot.c when a started disk snapshot has told its
 * result (loop thread): a SIGUSR2 save that came meanwhile runs now.
 * @cancelled: the run ended first; the save is not made (save_err says
 * so). */
void vmm_machine_disk_job_ended(struct vmm_machine *m, bool cancelled);

/* Press the guest's ACPI power button (a GED event). */
void vmm_machine_power_button(struct vmm_machine *m);

void vmm_machine_destroy(struct vmm_machine *m);

#endif
