/* tests/guest/virtio.h — virtio 1.x over modern PCI, split virtqueues, polled. */
#ifndef COWVM_GUEST_VIRTIO_H
#define COWVM_GUEST_VIRTIO_H

#include "guest.h"

#define VIRTIO_VENDOR       0x1af4
#define VIRTIO_DEV_BLK      0x1042
#define VIRTIO_DEV_RNG      0x1044

#define VIRTIO_F_VERSION_1        (1ULL << 32)
#define VIRTIO_F_ACCESS_PLATFORM  (1ULL << 33)

#define VQ_MAX_SIZE 256

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
#define VRING_DESC_F_NEXT  1
#define VRING_DESC_F_WRITE 2

struct vring_used_elem {
	uint32_t id;
	uint32_t len;
};

struct virtq {
	uint16_t index;            /* queue number in the device */
	uint16_t size;             /* entries (power of 2, <= VQ_MAX_SIZE) */
	struct vring_desc *desc;
	volatile uint16_t *avail;  /* flags, idx, ring[size], used_event */
	volatile uint16_t *used;   /* flags, idx, then struct vring_used_elem[size] */
	uint16_t avail_idx;        /* next avail index (driver's copy) */
	uint16_t last_used;        /* next used index to consume */
	uint16_t free_head;
	uint16_t num_free;
	uint16_t pending_kick;     /* chains added since the last kick */
	uint64_t notify_addr;
	uint64_t token[VQ_MAX_SIZE];
	uint8_t inflight[VQ_MAX_SIZE]; /* head -> chain outstanding */
	uint64_t kicks;            /* notifications sent (statistics) */
};

struct virtio_dev {
	struct pci_dev pci;
	uint64_t common;           /* MMIO addresses of the capabilities */
	uint64_t notify;
	uint32_t notify_mul;
	uint32_t notify_len;
	uint64_t isr;
	uint64_t devcfg;
	uint32_t devcfg_len;
	uint64_t features;         /* negotiated */
};

/* One buffer of a chain: device-readable unless WRITE. */
struct vbuf {
	uint64_t addr;
	uint32_t len;
	bool write;
};

/* Finds the INDEX-th VENDOR:DEVICE, maps its capabilities, resets it and
 * negotiates WANTED & offered features (VERSION_1 is required).  On
 * failure prints why and returns false (device left reset or FAILED). */
bool virtio_open(struct virtio_dev *vd, uint16_t device, uint32_t index, uint64_t wanted);
/* Sets up queue QI with at most MAX entries in the static ring memory
 * SLOT (0 or 1).  Returns false (and prints why) on failure. */
bool virtio_queue(struct virtio_dev *vd, struct virtq *vq, uint16_t qi, uint16_t max, uint32_t slot);
/* Sets DRIVER_OK. */
void virtio_ready(struct virtio_dev *vd);
/* Config-space reads, retried until config_generation is stable. */
uint32_t virtio_cfg32(struct virtio_dev *vd, uint32_t off);
uint64_t virtio_cfg64(struct virtio_dev *vd, uint32_t off);

/* Adds a chain of N buffers with TOKEN; false if there are too few free
 * descriptors.  The device is not notified (see virtq_kick). */
bool virtq_add(struct virtq *vq, const struct vbuf *bufs, uint32_t n, uint64_t token);
/* Publishes added chains and notifies the device unless it said not to. */
void virtq_kick(struct virtq *vq);
/* Takes one used chain: returns true and its token and length, or false. */
bool virtq_get(struct virtq *vq, uint64_t *token, uint32_t *len);

#endif
