/* core/virtio/blk.h — what the rest of core/ asks of a virtio-blk device
 * (core/virtio/blk.c) beyond its device ops: the image it writes, and the
 * switch to an external snapshot's overlay (storage/blockdev.h's
 * stg_snapshot_*), for core/snapshot.c.
 *
 * Snapshot threading: create (vmm_blk_snapshot_create, the slow part) may
 * run first on any thread while the device serves requests; prepare,
 * commit and abort run on the VM's event loop thread (the one that runs
 * the device's kicks, completions and retries); the vCPUs run on. A successful prepare opens the drained section: it
 * returns with the device's lock held, and commit or abort (one of them,
 * on the same thread, always) closes it. Every path that submits a
 * request to the disk holds that lock (kicks and retries on the loop, the
 * DRIVER_OK catch-up and resets on vCPU threads, writethrough flushes from
 * completions), so nothing reaches the image between the drain and the
 * switch: a vCPU that touches the device's registers meanwhile waits, and
 * a kick waits on the loop; both go to the overlay after the commit.
 * Between prepare and commit/abort the caller takes no lock a vCPU may hold
 * while it waits for the device's (it stays out of core/), calls no other
 * vmm_blk_* function on the device (the lock is not recursive: it would
 * deadlock), and does not return to the loop. Requests parked by a pause on a disk error stay
 * parked across the switch: they keep their buffers and are submitted
 * again, to the overlay, when the VM is resumed (blk_retry), as after any
 * pause.
 */
#ifndef VMM_VIRTIO_BLK_H
#define VMM_VIRTIO_BLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/blockdev.h"
#include "util/err.h"

struct vmm_device;

extern const struct vmm_device_ops vmm_virtio_blk_ops;

/* "vda" -> 0, "vdz" -> 25, "vdaa" -> 26 (Linux's sd/vd naming, up to 6
 * letters, as catalog targets); -1 for anything else. */
int vmm_blk_target_index(const char *name);

/* The serial @dev answers GET_ID with (serial=, else the file's base name
 * as it was opened; 20 bytes at most), NUL-terminated in @out. */
void vmm_blk_serial(struct vmm_device *dev, char out[21]);

/* Is @dev a virtio-blk device? */
bool vmm_blk_is(const struct vmm_device *dev);

/* What @dev writes: its image's path (copied into @path, @size bytes), its
 * virtual size, whether it was opened read-only. Any thread (takes the
 * device's lock). Returns 0, or -ENAMETOOLONG when @size is too small. */
int vmm_blk_disk_info(struct vmm_device *dev, char *path, size_t size, uint64_t *virtual_size,
		      bool *ro);

/* stg_snapshot_create on @dev's disk: the slow part of a snapshot (the
 * overlay made and opened, the data written so far pushed to the disk),
 * outside the drained section. Any thread, without the device's lock,
 * while the loop thread serves the device: the disk's stg_dev stays the
 * same object for the device's life, and stg_snapshot_create reads only
 * what no request changes. The caller makes sure no other snapshot of
 * @dev, save or teardown runs until vmm_blk_snapshot_prepare or
 * stg_snapshot_abort (vmm_blk_snapshot_abort_created). Returns 0 or -errno
 * with @err naming the device. */
int vmm_blk_snapshot_create(struct vmm_device *dev, const char *path, unsigned flags,
			    struct stg_snapshot *snap, struct ut_err *err);

/* Undo a vmm_blk_snapshot_create that no prepare followed, or a failed
 * vmm_blk_snapshot_prepare or _commit (no section is open):
 * stg_snapshot_abort (the overlay's file removed, if it is still the one
 * made). Any thread. */
void vmm_blk_snapshot_abort_created(struct vmm_device *dev, struct stg_snapshot *snap);

/* The same, but the overlay's file stays at its name
 * (stg_snapshot_keep): after a failed prepare or commit, when a record
 * names the file that could not be undone. Any thread. */
void vmm_blk_snapshot_keep_created(struct vmm_device *dev, struct stg_snapshot *snap);

/* Open the drained section (the device's lock), finish every request in
 * flight on @dev (their completions run: a failure may park one, as at any
 * time), then stg_snapshot_prepare(@path, @flags, @snap) (after
 * vmm_blk_snapshot_create: only the flush of what was written since, and
 * the checks again). Refused with
 * -EROFS for a read-only disk. Returns 0 with the section open (the caller
 * must call commit or abort), or -errno with @err naming the device and
 * the problem (the device unchanged, the section closed; nothing removed:
 * @snap still holds the overlay file create or prepare made, the caller
 * calls vmm_blk_snapshot_abort_created or _keep_created). */
int vmm_blk_snapshot_prepare(struct vmm_device *dev, const char *path, unsigned flags,
			     struct stg_snapshot *snap, struct ut_err *err);

/* stg_snapshot_commit: from now on @dev writes the overlay. Closes the
 * section either way. Returns 0, or -errno with @err (the device still
 * writes its image; @snap still holds the overlay, as after a failed
 * prepare: the caller calls vmm_blk_snapshot_abort_created or
 * _keep_created). */
int vmm_blk_snapshot_commit(struct vmm_device *dev, struct stg_snapshot *snap,
			    struct ut_err *err);

/* stg_snapshot_abort instead of a commit; closes the section. */
void vmm_blk_snapshot_abort(struct vmm_device *dev, struct stg_snapshot *snap);

#endif
