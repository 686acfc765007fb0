/* core/virtio/blk.h — what the rest of core/ asks of a virtio-blk device
 * (core/virtio/blk.c) beyond its device ops: the image it writes, and the
 * switch to an external snapshot's overlay (storage/blockdev.h's
 * stg_snapshot_*), for core/snapshot.c.
 *
 * Snapshot threading: prepare, commit and abort run on the VM's event loop
 * thread (the one that runs the device's kicks, completions and retries)
 * with every vCPU paused, each under the device's lock. Between prepare
 * and commit/abort the caller does not return to the loop (nothing new
 * can be submitted: kicks and retries are the loop's) and does not resume
 * the VM. Requests parked by a pause on a disk error stay parked across
 * the switch: they keep their buffers and are submitted again, to the
 * overlay, when the VM is resumed (blk_retry), as after any pause.
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

/* Is @dev a virtio-blk device? */
bool vmm_blk_is(const struct vmm_device *dev);

/* What @dev writes: its image's path (copied into @path, @size bytes), its
 * virtual size, whether it was opened read-only. Any thread (takes the
 * device's lock). Returns 0, or -ENAMETOOLONG when @size is too small. */
int vmm_blk_disk_info(struct vmm_device *dev, char *path, size_t size, uint64_t *virtual_size,
		      bool *ro);

/* Finish every request in flight on @dev (their completions run: a failure
 * may park one, as at any time), then stg_snapshot_prepare(@path, @flags,
 * @snap). Refused with -EROFS for a read-only disk. Returns 0 or -errno
 * with @err naming the device and the problem (the device unchanged). */
int vmm_blk_snapshot_prepare(struct vmm_device *dev, const char *path, unsigned flags,
			     struct stg_snapshot *snap, struct ut_err *err);

/* stg_snapshot_commit: from now on @dev writes the overlay. Returns 0, or
 * -errno with @err (the device still writes its image; the caller calls
 * vmm_blk_snapshot_abort). */
int vmm_blk_snapshot_commit(struct vmm_device *dev, struct stg_snapshot *snap,
			    struct ut_err *err);

/* stg_snapshot_abort, instead of a commit or after a failed one. */
void vmm_blk_snapshot_abort(struct vmm_device *dev, struct stg_snapshot *snap);

#endif
