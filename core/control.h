/* core/control.h — the VMM's control socket.
 *
 * A UNIX stream socket (mode 0600). On connect the VMM sends a greeting line,
 * {"cowvm": {"version": V, "pid": P}}; then each request is one JSON object
 * per line, {"execute": NAME, "arguments": {...}}, answered by one line,
 * {"return": {...}} or {"error": {"class": C, "desc": TEXT}} — the shape QMP
 * users know. Commands are rows in a table (core/control.c): query-status
 * (-> {"status", "running", "reason"/"io-error" when a disk error paused
 * the VM, "vcpus", "memory", "pid", "exits", "events-dropped": event lines
 * never sent because the queue was full, "disk-snapshot": {"device",
 * "snapshot-file"} while one is pending}),
 * pause, resume, stop, quit, save, blockdev-snapshot-sync; later issues
 * add clone and migrate.
 *   blockdev-snapshot-sync {"device": ID, "snapshot-file": PATH, "format":
 *       "qcow2" (optional; nothing else is taken), "mode": "absolute-paths"
 *       (the default: create PATH, which must not exist; a relative PATH
 *       is the VMM's working directory's, as in QEMU) | "existing" (a
 *       qcow2 file whose backing file is the disk's image)} -> {}: the disk
 *       (ID "virtio-blk0" as in BLOCK_IO_ERROR, or "vda": the disk given
 *       target=vda when the disks have targets, as `cowvm start` passes
 *       the catalog's, else the disks in the order given) goes on in a new qcow2 overlay on top of its image,
 *       which becomes its read-only backing file (QMP's command;
 *       vmm_machine_disk_snapshot_start in core/machine.h). As QEMU's, the
 *       vCPUs run on (no STOP/RESUME). The overlay is made and the data
 *       written so far pushed to disk on a worker thread while the disk
 *       and the socket go on; the answer comes when the switch is done:
 *       the connection's next requests wait for it, other connections are
 *       served, a second snapshot or a save is refused meanwhile, and a
 *       run that ends first cancels it (the answer says so, the file is
 *       removed). Then the disk is drained, its new requests wait for the
 *       flush of what was written since and the switch, and go to the
 *       overlay; a paused VM
 *       stays paused (requests parked on a disk error go to the overlay
 *       when it is resumed); a later save records the overlay. A VM started with
 *       `cowvm start` records the overlay in the catalog first. Any
 *       failure (unknown device or argument, read-only disk, existing
 *       file, the catalog refusing...) is a GenericError naming the thing
 *       and the problem, and leaves the VM and its files as they were;
 *       except when the switch fails after the catalog recorded the
 *       overlay and the catalog cannot be put back (busy): then the
 *       overlay is kept (the catalog names it; an overlay of the image
 *       with nothing written to it, which the next `cowvm start` opens)
 *       and the error says both problems and that it was kept; a retry
 *       onto it with mode "existing" finishes the snapshot.
 * Requests are served on the VM's event loop thread, one at a time (a
 * blockdev-snapshot-sync's slow part runs on its own thread, above). At
 * most 16 connections are open at once: one more gets a single line
 * {"error": {"class": "GenericError", "desc": "too many connections ..."}}
 * instead of the greeting, and is closed.
 *
 * Events (as QMP's). A connection that sends {"execute": "qmp_capabilities"}
 * gets the events raised after the command ran (not those still queued)
 * (answered {"return": {}}; no capability is offered: "enable" must be
 * empty; a second call is refused with CommandNotFound, as QEMU does) gets
 * event lines from then on, between the replies:
 *   {"event": NAME, "data": {...}, "timestamp": {"seconds": S, "microseconds": U}}
 * ("data" only for events that have data; the timestamp is the wall-clock
 * time the event was raised). Unlike QMP, the other commands work without
 * qmp_capabilities, and a connection that never sends it never gets an
 * event line: one request, one reply line, as before.
 *   STOP            the VM paused: the pause command, a save, or a device (a disk error
 *                   under werror=stop/enospc, rerror=stop);
 *                   once per pause (a pause of a paused VM tells nothing)
 *   RESUME          a pause that was told is over (resume, stop, a save
 *                   with "resume")
 *   SHUTDOWN        {"guest": B, "reason": R}: the run ends. R (QMP's
 *                   ShutdownCause): "guest-shutdown" (guest true: the guest
 *                   powered off or wrote the debug-exit port),
 *                   "guest-reset" (guest true: it asked for a reset, which
 *                   ends a cowvm run, as QEMU's -no-reboot), "host-qmp-quit"
 *                   (quit; stop when its timeout ends the run; a save that
 *                   ends the run; Ctrl-A x on the console), "host-signal"
 *                   (SIGINT, SIGTERM, SIGHUP), "host-error" (a triple fault,
 *                   a KVM error, an exit cowvm does not handle)
 *   BLOCK_IO_ERROR  {"device": ID ("virtio-blk0"), "operation": "read" |
 *                   "write" (writes, flushes, discards, write-zeroes),
 *                   "action": "stop" (the VM pauses: a STOP follows,
 *                   unless it is paused already) |
 *                   "report" (the guest gets the error), "nospace": B
 *                   (ENOSPC or EDQUOT), "reason": strerror text}: one per
 *                   failed request (no "node-name": cowvm has no block
 *                   graph)
 * An event a command causes comes before the command's reply.
 *
 * Event threading contract: events are raised on any thread (vCPU threads,
 * storage completions, the loop) through vm->on_qevent with vm->lock held
 * (core/vm.h); the control socket only copies them into a bounded queue
 * (64 events, of which at most 32 BLOCK_IO_ERROR, so a guest hammering a
 * failing disk cannot crowd out a SHUTDOWN; 8 more for a BLOCK_IO_ERROR
 * that pauses the VM, so the STOP after it never comes without it, even
 * when other disks' errors filled the 32) and wakes its eventfd; the
 * loop thread sends them. An event that finds the queue full is dropped
 * (counted, told on the VMM's stderr at exit). A client that does not read
 * its events is cut off (as for replies: the VMM never waits for a
 * client). What is queued when the run ends is sent by vmm_control_close
 * before it closes the connections, so clients see SHUTDOWN, then EOF.
 */
#ifndef VMM_CONTROL_H
#define VMM_CONTROL_H

#include "util/err.h"

struct vmm_machine;
struct vmm_control;

/* Listen on @path (an existing socket file is replaced; any other file is an
 * error) and take the VM's events (vm->on_qevent). Returns 0 with *out set
 * or -errno with @err. */
int vmm_control_open(struct vmm_machine *m, const char *path, struct vmm_control **out,
		     struct ut_err *err);

/* Stop taking events, send the queued ones, close every connection, remove
 * the socket file. NULL is fine. Loop thread (or the loop no longer runs);
 * other threads may still raise events: vm->on_qevent is cleared under
 * vm->lock first, so a later event is dropped, never queued into freed
 * memory. */
void vmm_control_close(struct vmm_control *c);

#endif
