/* tests/guest/blk.h — polled virtio-blk driver. */
#ifndef COWVM_GUEST_BLK_H
#define COWVM_GUEST_BLK_H

#include "virtio.h"

#define BLK_T_IN    0
#define BLK_T_OUT   1
#define BLK_T_FLUSH 4
#define BLK_S_OK    0

#define SECTOR_SIZE 512UL
#define BLK_MAX_CAPACITY (1UL << 48)    /* sanity bound, in sectors */

/* Header and status of one request; one per in-flight request. */
struct blk_req {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
	volatile uint8_t status;
	uint8_t pad[15];
};

struct blk {
	struct virtio_dev vd;
	struct virtq vq;
	uint64_t capacity;    /* 512-byte sectors */
	uint32_t seg_size;    /* max bytes per data descriptor */
	uint32_t max_segs;    /* max data descriptors per request */
	bool has_flush;
	bool ro;
};

/* Opens the INDEX-th virtio-blk device: features, queue 0, capacity (all
 * validated), DRIVER_OK.  Prints why and returns false on failure; returns
 * false silently if there is no such device (b->vd.pci.vendor == 0). */
bool blk_open(struct blk *b, uint32_t index);
/* Queues (without notifying) a request of TYPE at SECTOR with LEN bytes of
 * data at BUF (LEN <= seg_size * max_segs), status in R, tagged TOKEN. */
bool blk_queue(struct blk *b, struct blk_req *r, uint32_t type, uint64_t sector,
	       uint64_t buf, uint32_t len, uint64_t token);

#endif
