/* catalog/catalog.h — the cowvm catalog: VM definitions, disks and image
 * lineage, NICs, snapshots, runtime state and an event log, kept in SQLite.
 *
 * Where: $COWVM_HOME (default ~/.local/share/cowvm)/catalog.db; runtime files
 * (control and console sockets) in $XDG_RUNTIME_DIR/cowvm, else
 * $COWVM_HOME/run.
 *
 * Concurrency: any number of cowvm processes may open the catalog at once.
 * Every state change is one write transaction started with BEGIN IMMEDIATE
 * (so it holds the write lock from its first statement and cannot fail half
 * way with SQLITE_BUSY); waits for the lock are bounded by a busy timeout plus
 * a retry loop, and a caller that still cannot get the lock sees "the catalog
 * is busy", never SQLite's "database is locked". Readers use WAL snapshots
 * and never wait for writers.
 *
 * Memory: structs returned to the caller own their strings (malloc'd);
 * release them with the matching *_clear function. Errors follow util/err.h:
 * negative errno plus a message in the struct ut_err.
 *
 * catalog/ knows nothing of KVM: the VMM and the CLI record runtime state
 * through cat_vm_transition().
 */
#ifndef CAT_CATALOG_H
#define CAT_CATALOG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/buf.h"
#include "util/err.h"

#define CAT_NAME_MAX 64          /* VM name length limit (bytes) */
#define CAT_UUID_LEN 36          /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */
#define CAT_VCPUS_MAX 255
#define CAT_CHAIN_MAX 64         /* longest backing chain followed */

struct cat_db;

/* ---- VM runtime state ------------------------------------------------- */

enum cat_vm_state {
	CAT_VM_STOPPED = 0,   /* defined, no VMM process */
	CAT_VM_STARTING,      /* VMM launched, guest not yet running */
	CAT_VM_RUNNING,
	CAT_VM_PAUSED,
	CAT_VM_STOPPING,      /* stop requested, VMM still alive */
	CAT_VM_CRASHED,       /* VMM died without recording a stop */
	CAT_VM_STATE_COUNT
};

/* Bit for a state, for the @from masks of cat_vm_transition(). */
#define CAT_ST(s) (1u << (s))
/* States in which a VMM process exists (or should). */
#define CAT_ST_ACTIVE (CAT_ST(CAT_VM_STARTING) | CAT_ST(CAT_VM_RUNNING) | \
		       CAT_ST(CAT_VM_PAUSED) | CAT_ST(CAT_VM_STOPPING))
#define CAT_ST_ANY ((1u << CAT_VM_STATE_COUNT) - 1)

/* "stopped", "running", ... (static string; "?" for an invalid value). */
const char *cat_vm_state_name(enum cat_vm_state s);
/* Parse a state name. Returns 0, or -EINVAL for an unknown name. */
int cat_vm_state_parse(const char *s, enum cat_vm_state *out);

/* ---- definitions ------------------------------------------------------ */

/* One image: a file in the lineage graph. */
struct cat_image {
	int64_t id;              /* catalog row id; 0 when not (yet) stored */
	char *path;              /* absolute path, owned */
	char *format;            /* "raw" or "qcow2", owned */
	int64_t virtual_size;    /* bytes; -1 when unknown */
};

/* What a failed write does (QEMU's werror=, libvirt's error_policy; the
 * names are cat_werror_names[]): enospc pauses the VM on a full disk and
 * reports other errors (the default), stop pauses on any, report gives the
 * guest the error. */
enum cat_werror { CAT_WERROR_ENOSPC, CAT_WERROR_STOP, CAT_WERROR_REPORT };
extern const char *const cat_werror_names[3];   /* "enospc", "stop", "report" */

/* One disk of a VM. chain[0] is the disk's own image, chain[i+1] the
 * backing image of chain[i] (the lineage), n_chain >= 1. */
struct cat_disk {
	char *target;            /* "vda", "vdb", ... owned */
	int readonly;
	int nocache;             /* cache='none': O_DIRECT (run --disk ...,cache=none);
				    0: writeback, the default */
	int threads;             /* io='threads': I/O on worker threads (run --disk
				    ...,aio=threads); 0: io_uring, the default */
	enum cat_werror werror;  /* error_policy (run --disk ...,werror=) */
	int rerror_stop;         /* rerror_policy='stop' (run --disk ...,rerror=stop);
				    0: report, the default */
	size_t n_chain;
	struct cat_image *chain; /* owned array */
};

/* One network interface. */
struct cat_nic {
	char mac[18];            /* "52:54:00:xx:xx:xx", lowercase */
	char *type;              /* "ethernet" or "bridge", owned */
	char *tap;               /* host tap device (<target dev>), owned, may be NULL */
	char *bridge;            /* host bridge for type "bridge", owned, else NULL */
	int mac_generated;       /* mac was made up: cat_vm_define picks another
				    one if it is taken (not stored) */
};

/* A VM: definition plus runtime state. */
struct cat_vm {
	int64_t id;
	char *name;                      /* owned */
	char uuid[CAT_UUID_LEN + 1];
	char genid[CAT_UUID_LEN + 1];    /* VM generation ID; "" when none */
	unsigned vcpus;
	uint64_t memory;                 /* bytes (maximum) */
	uint64_t cur_memory;             /* bytes; 0 = same as memory (not given) */
	char *kernel;                    /* absolute path, owned */
	char *initrd;                    /* owned, may be NULL */
	char *cmdline;                   /* owned, may be NULL */
	char *on_poweroff;               /* "destroy" or "restart", owned */
	char *on_reboot;                 /* "destroy" or "restart", owned */
	int serial;                      /* 1: serial console on ttyS0; 0: none */
	/* runtime */
	enum cat_vm_state state;
	pid_t pid;                       /* VMM process, 0 when none */
	uint64_t pid_start;              /* its start time (/proc/PID/stat field 22) */
	char *ctl_socket;                /* owned, may be NULL */
	int64_t created_ms, updated_ms;  /* Unix time in milliseconds */
	size_t n_disks;
	struct cat_disk *disks;          /* owned array */
	size_t n_nics;
	struct cat_nic *nics;            /* owned array */
};

/* Free everything @vm owns and zero it. @vm may be NULL. */
void cat_vm_clear(struct cat_vm *vm);
void cat_disk_clear(struct cat_disk *d);
void cat_nic_clear(struct cat_nic *n);
void cat_image_clear(struct cat_image *im);

/* Fill the defaults of a fresh definition: random uuid and genid, 1 vcpu,
 * 256 MiB, on_poweroff "destroy", on_reboot "restart", serial console.
 * Returns 0 or negative errno. */
int cat_vm_init_defaults(struct cat_vm *vm, struct ut_err *err);

/* Append a disk / NIC to @vm (copies the strings); a disk with @nocache is
 * opened with O_DIRECT (cache='none'), one with @threads does its I/O on
 * worker threads (io='threads'). Return 0 or -ENOMEM. */
int cat_vm_add_disk(struct cat_vm *vm, const char *path, const char *format,
		    const char *target, int readonly, int nocache, int threads, struct ut_err *err);
int cat_vm_add_nic(struct cat_vm *vm, const char *mac, const char *type,
		   const char *tap, const char *bridge, struct ut_err *err);

/* ---- checks and small helpers (catalog/check.c) ---------------------- */

/* A VM name: 1..64 bytes of [A-Za-z0-9._+-], starting with a letter or digit
 * (so no '/', no spaces, no control characters). Returns 0 or -EINVAL with a
 * message naming the problem. */
int cat_name_check(const char *name, struct ut_err *err);
/* Normalise a UUID (with or without dashes, any case) into @out (37 bytes,
 * lowercase, dashed). Returns 0 or -EINVAL. */
int cat_uuid_parse(const char *s, char out[CAT_UUID_LEN + 1]);
/* A random (version 4) UUID. Returns 0 or negative errno. */
int cat_uuid_generate(char out[CAT_UUID_LEN + 1]);
/* Normalise a MAC address "aa:bb:cc:dd:ee:ff" (any case) into @out.
 * Rejects multicast addresses. Returns 0 or -EINVAL. */
int cat_mac_parse(const char *s, char out[18]);
/* A random locally administered MAC with the 52:54:00 prefix. */
int cat_mac_generate(char out[18]);
/* Check the whole definition (names, ranges, paths absolute, disk targets
 * unique vd[a-z]+, NIC fields). Returns 0 or -EINVAL with a message. */
int cat_vm_check(const struct cat_vm *vm, struct ut_err *err);

/* ---- paths (catalog/paths.c) ------------------------------------------ */

/* $COWVM_HOME, else ~/.local/share/cowvm (from $HOME or the passwd entry).
 * Returns a malloc'd string in *out, or negative errno. */
int cat_home_dir(char **out, struct ut_err *err);
/* Runtime directory for catalog home @home: $XDG_RUNTIME_DIR/cowvm, else
 * HOME/run. malloc'd string in *out. */
int cat_run_dir(const char *home, char **out, struct ut_err *err);

/* Runtime files of one VM (all malloc'd; release with cat_vm_paths_clear). */
struct cat_vm_paths {
	char *ctl_socket;      /* RUN/NAME.ctl: the VMM's JSON control socket */
	char *console_socket;  /* RUN/NAME.console: serial console stream */
	char *console_log;     /* HOME/logs/NAME.log: serial console log */
};
/* Compute (and create the directories of, mode 0700) the runtime files of
 * VM @name. Fails with -ENAMETOOLONG when a socket path would not fit in
 * sockaddr_un. */
int cat_vm_paths(const struct cat_db *db, const char *name,
		 struct cat_vm_paths *out, struct ut_err *err);
void cat_vm_paths_clear(struct cat_vm_paths *p);

/* ---- opening (catalog/db.c) ------------------------------------------- */

/* Open (creating if needed) the catalog in @home (NULL: cat_home_dir()),
 * migrate its schema to the current version, enable WAL, foreign keys and
 * the busy timeout. A catalog written by a newer cowvm is refused.
 * *out is owned by the caller: cat_close(). */
int cat_open(struct cat_db **out, const char *home, struct ut_err *err);
/* Close and free. @db may be NULL. */
void cat_close(struct cat_db *db);
/* Bound every wait for the catalog's lock of the calling thread, from now
 * on, to @ms in all (a deadline @ms from now: cat_open's busy timeout and
 * each retry loop stop there; a statement already waiting inside SQLite
 * may overrun it by its busy timeout, itself at most what was left at
 * cat_open). For a caller that must answer in time (the VMM's disk
 * snapshot hook, under the control client's timeout). @ms 0: back to the
 * default (CAT_BUSY_TOTAL_MS or $COWVM_CATALOG_WAIT_MS). */
void cat_wait_limit(int64_t ms);
/* The catalog's home and runtime directories (owned by @db). */
const char *cat_db_home(const struct cat_db *db);
const char *cat_db_run_dir(const struct cat_db *db);

/* ---- VMs (catalog/vm.c) ----------------------------------------------- */

#define CAT_DEFINE_REPLACE 0x1  /* an existing stopped VM with the same name
				   and uuid is redefined (libvirt's define) */

/* Store @vm (checked with cat_vm_check) with its disks, images (each disk's
 * chain, parents first; an image already in the catalog is reused and must
 * agree on format) and NICs, and log an event @action ("create", "define"),
 * all in one transaction. On success vm->id, created/updated and the image
 * ids are set. Errors: -EEXIST (name, uuid or MAC in use, message names the
 * other VM), -EBUSY (redefining an active VM), -EINVAL. */
int cat_vm_define(struct cat_db *db, struct cat_vm *vm, unsigned flags,
		  const char *action, struct ut_err *err);

/* Load VM @name with disks (and their full chains) and NICs into @out
 * (caller clears). Returns 0, -ENOENT ("no VM named 'x'"), or an error. */
int cat_vm_get(struct cat_db *db, const char *name, struct cat_vm *out,
	       struct ut_err *err);

/* One row of `cowvm list`. */
struct cat_vm_summary {
	char *name;
	char uuid[CAT_UUID_LEN + 1];
	enum cat_vm_state state;
	unsigned vcpus;
	uint64_t memory;
	pid_t pid;
	uint64_t pid_start;
	unsigned n_disks;
};
/* All VMs, ordered by name, in *rows (caller frees with
 * cat_vm_summaries_free). Active VMs whose VMM died are marked crashed on
 * the way (see cat_vm_refresh). */
int cat_vm_list(struct cat_db *db, struct cat_vm_summary **rows, size_t *n,
		struct ut_err *err);
void cat_vm_summaries_free(struct cat_vm_summary *rows, size_t n);

#define CAT_RM_DISKS 0x1   /* also drop the disks' images that nothing else uses */

/* What cat_vm_remove decided about the disk images (for --with-disks). */
struct cat_rm_report {
	size_t n_removed;
	char **removed;    /* image files whose rows were deleted: unlink them */
	size_t n_kept;
	char **kept;       /* "PATH (reason)" for images still in use */
};
void cat_rm_report_clear(struct cat_rm_report *r);

/* Remove VM @name (disks, NICs, snapshots rows go with it; images stay in
 * the lineage unless CAT_RM_DISKS) in one transaction, logging "rm".
 * Refused with -EBUSY while the VM is active. The files themselves are not
 * touched: with CAT_RM_DISKS, @report lists the files to unlink. */
int cat_vm_remove(struct cat_db *db, const char *name, unsigned flags,
		  struct cat_rm_report *report, struct ut_err *err);

/* Lifecycle protocol (start/stop/pause/resume and the VMM), one short
 * transaction per step, each checked against the state it expects:
 *   start:  cat_vm_get + cat_vm_refresh (a dead VMM becomes crashed);
 *           cat_vm_paths for the socket and log paths; launch the VMM;
 *           cat_vm_transition(STOPPED|CRASHED -> STARTING, rt = {VMM pid,
 *           ctl_socket}, "start"); when the guest runs (VMM or CLI):
 *           STARTING -> RUNNING ("running"); if it did not:
 *           STARTING -> STOPPED ("start", result = why).
 *   pause / resume: after the VMM acknowledged, RUNNING -> PAUSED
 *           ("pause") / PAUSED -> RUNNING ("resume").
 *   stop:   RUNNING|PAUSED -> STOPPING ("stop"), ask the VMM; the VMM (or
 *           the CLI after it exited) records ACTIVE -> STOPPED ("stopped");
 *           STOPPED and CRASHED clear pid and socket.
 *   crash:  list/show/rm call cat_vm_refresh, which records ACTIVE ->
 *           CRASHED ("crash-detected") for a VMM that is gone.
 * A concurrent command that changed the state first makes the transition
 * fail with -EBUSY and a message naming the state found. */

/* Runtime record for a transition. */
struct cat_runtime {
	pid_t pid;              /* 0: clear pid */
	uint64_t pid_start;     /* /proc/PID/stat start time; 0 = look it up */
	const char *ctl_socket; /* NULL: clear */
};

/* Atomically: check VM @name is in one of the states of mask @from
 * (CAT_ST(...) bits), set state @to, set or clear pid/socket from @rt (NULL
 * leaves them unchanged; for @to stopped or crashed they are always cleared),
 * bump updated, and log event (@action, @result). Used by start/stop/pause/
 * resume and by the VMM. Returns 0, -ENOENT, or -EBUSY with
 * "VM 'x' is running, not stopped" when the state did not match (nothing is
 * changed then). If @old is non-NULL it receives the state found. */
int cat_vm_transition(struct cat_db *db, const char *name, unsigned from,
		      enum cat_vm_state to, const struct cat_runtime *rt,
		      const char *action, const char *result,
		      enum cat_vm_state *old, struct ut_err *err);

/* Is the VMM recorded for an active VM still there? Checks the pid exists
 * with the recorded start time (a reused pid is not ours). If not, marks
 * the VM crashed (event "crash-detected") unless its row changed meanwhile,
 * removes its stale runtime files (control and console sockets) and updates
 * @vm. @vm needs name, state, pid, pid_start (as cat_vm_get fills them).
 * Returns 0 (state in vm->state) or an error. */
int cat_vm_refresh(struct cat_db *db, struct cat_vm *vm, struct ut_err *err);

/* Start time of process @pid (/proc/PID/stat field 22), 0 if no such process. */
uint64_t cat_pid_start_time(pid_t pid);
/* Is process @pid, started at @pid_start (0: any start time), still running?
 * A zombie (ended, not reaped) is not. What cat_vm_refresh checks. */
int cat_pid_alive(pid_t pid, uint64_t pid_start);

/* ---- images (catalog/image.c) ----------------------------------------- */

/* What a look at an image file tells (the probe hook). */
struct cat_image_info {
	char format[8];          /* "raw" or "qcow2" */
	int64_t virtual_size;    /* bytes, -1 unknown */
	char *backing;           /* absolute path of the backing file, or NULL (owned) */
	char backing_format[8];  /* "" unknown */
};

/* HOOK for the qcow2 layer (cow/): inspect an image file. Today: raw size by
 * stat(), qcow2 recognised by magic, its virtual size and backing file name
 * read from the fixed header fields; the backing format is probed by magic.
 * When cow/ lands this should call its get_info (format, size, chain).
 * Returns 0, -ENOENT when the file does not exist, or an error. */
int cat_image_probe(const char *path, struct cat_image_info *info,
		    struct ut_err *err);
void cat_image_info_clear(struct cat_image_info *info);

/* Record image @path (absolute) in the lineage, probing the file if it
 * exists: format (@format overrides, NULL = probe), virtual size, and its
 * backing chain (each parent recorded first). Idempotent: an existing row
 * is returned (and must agree on format). One transaction. On success
 * *id is the row id. For `cowvm image create` and friends. */
int cat_image_register(struct cat_db *db, const char *path, const char *format,
		       int64_t *id, struct ut_err *err);

/* Load image @path and its backing chain (chain[0] = @path) into a new
 * cat_disk-style array. Returns 0, -ENOENT, or an error. */
int cat_image_chain(struct cat_db *db, const char *path,
		    struct cat_image **chain, size_t *n, struct ut_err *err);
void cat_image_chain_free(struct cat_image *chain, size_t n);

/* ---- external disk snapshots (catalog/disk-snapshot.c) -------------- */

/* A VM's disk went on in a new overlay (the VMM's blockdev-snapshot-sync).
 * In one transaction: check disk @disk of VM @vm (its position in idx
 * order, as cat_vm_get lists the disks) uses image @image (absolute,
 * resolved: a row recorded under another spelling of the same file is
 * taken); record @overlay (absolute, no ',': `cowvm start` could not pass
 * it to the VMM) as a qcow2 image of @virtual_size bytes (-1 unknown) whose
 * parent is that image's row, or take its existing row when it is exactly
 * that (qcow2, that parent, no disk on it: `cowvm image create -b`); point
 * the disk at it; log "disk-snapshot". When the disk uses @overlay already
 * and its parent is @image (a snapshot whose switch failed and whose undo
 * failed too: the VMM kept the overlay, and a retry with mode existing
 * finishes it), nothing changes but the log ("recorded already"), and it
 * returns 0. The VM's state is not checked (the
 * VMM calls it while it runs). Returns 0; -ENOENT (no such VM or disk);
 * -ESTALE (the disk uses another image); -EEXIST (@overlay recorded
 * otherwise); -EINVAL (a relative path or a ','); or a catalog error.
 * Nothing is changed on error. */
int cat_disk_snapshot(struct cat_db *db, const char *vm, size_t disk, const char *image,
		      const char *overlay, int64_t virtual_size, struct ut_err *err);

/* Undo cat_disk_snapshot when the VMM could not switch after all: disk
 * @disk of VM @vm, which must use @overlay, points at @overlay's parent
 * again, and @overlay's row is dropped unless a disk or an image still
 * refers to it; logs "disk-snapshot" ("undone"). One transaction. Returns
 * 0; -ESTALE (the disk does not use @overlay); -ENOENT; or an error. */
int cat_disk_snapshot_undo(struct cat_db *db, const char *vm, size_t disk, const char *overlay,
			   struct ut_err *err);

/* ---- events (catalog/event.c) ----------------------------------------- */

struct cat_event {
	int64_t time_ms;
	char *vm;          /* VM name at the time */
	char *action;
	char *result;      /* "ok" or a message */
};

/* Log one event (its own transaction). */
int cat_event_log(struct cat_db *db, const char *vm, const char *action,
		  const char *result, struct ut_err *err);
/* The last @limit events (all VMs when @vm is NULL), oldest first. */
int cat_event_list(struct cat_db *db, const char *vm, size_t limit,
		   struct cat_event **out, size_t *n, struct ut_err *err);
void cat_events_free(struct cat_event *ev, size_t n);

/* ---- XML (catalog/xml-read.c, catalog/xml-write.c) -------------------- */

#define CAT_XML_IGNORE_UNSUPPORTED 0x1

/* Parse a libvirt domain document (@len bytes at @doc, @src names it in
 * messages) into @vm (fresh, caller clears). Elements and attribute values
 * cowvm does not support are collected: without CAT_XML_IGNORE_UNSUPPORTED
 * the call fails with -ENOTSUP and a message naming each of them; with it
 * the parse succeeds. Either way, when @ignored is non-NULL, the list
 * ("PATH (line N)" or "PATH[@attr='value'] (line N)") is returned in
 * *ignored / *n_ignored (free with cat_strv_free) for the caller to show.
 * A missing uuid, and the genid of an empty <genid/>, are generated. Returns 0, -ENOTSUP, -EINVAL (invalid document). */
int cat_xml_read(const char *doc, size_t len, const char *src, unsigned flags,
		 struct cat_vm *vm, char ***ignored, size_t *n_ignored,
		 struct ut_err *err);
void cat_strv_free(char **v, size_t n);

/* Write @vm as a libvirt domain document (type kvm) into @out, disks with
 * their backingStore chains. Returns 0 or -ENOMEM. */
int cat_xml_write(const struct cat_vm *vm, struct ut_buf *out, struct ut_err *err);

#endif
