/* core/virtio/queue.h — split virtqueues (virtio 1.x, 2.7), device side.
 *
 * Everything the guest wrote is untrusted: ring addresses are checked when the
 * queue is enabled, every descriptor's buffer is checked to lie entirely in
 * guest RAM, chains are bounded (no loops, at most VMM_VQ_MAX_SEGS buffers,
 * one level of indirection, total length < 4 GiB), and device-readable
 * buffers must precede device-writable ones, and at most the queue size
 * chains are in use (popped, not yet pushed) at once, so a device never
 * holds more requests than the ring has slots. A violation marks the queue
 * broken: vmm_vq_pop returns -EBADMSG from then on, and the transport sets
 * DEVICE_NEEDS_RESET.
 */
#ifndef VMM_VIRTIO_QUEUE_H
#define VMM_VIRTIO_QUEUE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/mem.h"
#include "util/buf.h"
#include "util/err.h"

#define VMM_VQ_MAX_SIZE 1024
#define VMM_VQ_MAX_SEGS 256

#define VIRTQ_DESC_F_NEXT     1
#define VIRTQ_DESC_F_WRITE    2
#define VIRTQ_DESC_F_INDIRECT 4

struct vmm_vq {
	uint16_t max_size;       /* what the device offers */
	uint16_t size;           /* what the driver chose (power of two) */
	bool enabled;
	bool event_idx;          /* VIRTIO_RING_F_EVENT_IDX negotiated */
	bool indirect;           /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
	bool broken;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint16_t msix_vector;
	uint16_t last_avail;     /* next avail ring index to consume */
	uint16_t used_idx;       /* next used ring index to fill */
	uint16_t signalled_used; /* used_idx at the last interrupt */
	uint16_t inuse;          /* chains popped and not yet pushed back */
	uint8_t held[VMM_VQ_MAX_SIZE / 8]; /* bit per head: popped (or reclaimed),
					      not yet pushed back */
	bool signalled_valid;
	/* resolved on enable; valid while RAM is mapped */
	uint8_t *desc, *avail, *used;
	char why[128];           /* why the queue broke */
};

/* One request: device-readable buffers iov[0..nr_out), then device-writable
 * iov[nr_out..nr_out+nr_in). Host pointers into guest RAM. */
struct vmm_vq_elem {
	uint16_t head;
	unsigned nr_out, nr_in;
	uint64_t out_len, in_len;
	struct iovec iov[VMM_VQ_MAX_SEGS];
};

/* Reset to the power-on state (disabled, size = max_size). */
void vmm_vq_reset(struct vmm_vq *vq, uint16_t max_size);

/* Enable after the driver wrote size and the three addresses: checks size is
 * a power of two <= max_size and every ring lies in RAM (and is aligned).
 * Returns 0 or -EINVAL with the reason in vq->why (queue marked broken). */
int vmm_vq_enable(struct vmm_vq *vq, const struct vmm_mem *mem);

/* Take the next available chain; it is in use until vmm_vq_push. Returns 1
 * with @elem filled, 0 when the ring is empty, -EBADMSG when the driver broke
 * the rules (reason in vq->why), including a head offered again while its
 * chain is still in use (the device would hold one chain twice, and a save
 * of it would be refused at restore: vmm_vq_check_held). */
int vmm_vq_pop(struct vmm_vq *vq, const struct vmm_mem *mem, struct vmm_vq_elem *elem);

/* After a restore: take chain @head again as in use, as it was when the
 * state was saved (a request the device kept, e.g. virtio-blk's parked
 * requests). @head comes from the state file: it is checked against the
 * queue size, and the chain is walked and checked as vmm_vq_pop does
 * (guest RAM was restored with it). last_avail is not moved (the chain was
 * popped before the save). Returns 0 with @elem filled, or -EBADMSG with
 * the reason in vq->why (queue broken). */
int vmm_vq_reclaim(struct vmm_vq *vq, const struct vmm_mem *mem, uint16_t head,
		   struct vmm_vq_elem *elem);

/* After a restore, before vmm_vq_reclaim: may the device hold the chains
 * @heads[0..n) (from the state file) as in flight, i.e. taken from the
 * avail ring and not yet used? In flight are last_avail - used_idx chains
 * (the device's own indices, from the state file: each pop moves
 * last_avail, each push used_idx; the used index in guest RAM is the
 * guest's to scribble on and is not read). Refused (-EBADMSG, the reason
 * in @why, @len bytes): a queue not enabled; more heads than in flight
 * (@exact: another count; a device whose every in-flight chain is in the
 * list); a head beyond the queue size; a head twice (a conforming driver
 * never offers a chain again before it was used); a head among the avail
 * entries the device has not taken yet, [last_avail, avail idx in RAM)
 * (it would be taken a second time). Which avail entry a held chain came
 * from is not checked: completions are out of order, and the driver may
 * reuse a taken entry's slot while that chain is still in flight. Reads
 * the avail ring; changes nothing. */
int vmm_vq_check_held(const struct vmm_vq *vq, const uint16_t *heads, unsigned n, bool exact,
		      char *why, size_t len);

/* The device found a popped chain it cannot even answer (a request with
 * no byte to put its status in): mark the queue broken with @why, as a
 * rule broken in the chain does. */
void vmm_vq_fail(struct vmm_vq *vq, const char *why);

/* Put chain @head back as used with @len bytes written. */
void vmm_vq_push(struct vmm_vq *vq, uint16_t head, uint32_t len);

/* After pushes: does the driver want an interrupt (flags / used_event)? */
bool vmm_vq_need_interrupt(struct vmm_vq *vq);

/* With EVENT_IDX: ask to be notified at the next avail entry; then returns
 * true if entries arrived meanwhile (the caller must poll again). Without it,
 * toggles VIRTQ_USED_F_NO_NOTIFY per @enable. */
bool vmm_vq_notify_enable(struct vmm_vq *vq, bool enable);

/* Is there anything to pop? */
bool vmm_vq_has_work(const struct vmm_vq *vq);

/* Copy @len bytes from @src into the device-writable part of @elem (from its
 * start). Returns bytes copied. */
size_t vmm_vq_elem_write(const struct vmm_vq_elem *elem, const void *src, size_t len);
/* Copy up to @len bytes of the device-readable part into @dst. Returns bytes copied. */
size_t vmm_vq_elem_read(const struct vmm_vq_elem *elem, void *dst, size_t len);

/* State records (the queue's configuration and indices). A restored queue
 * is checked: an enabled one as vmm_vq_enable does, with at most its size
 * chains in flight (last_avail - used_idx); a disabled one with both
 * indices 0 (only a reset disables a queue). -EPROTO (version) or
 * -EBADMSG, the reason in vq->why where there is one. */
int vmm_vq_save(const struct vmm_vq *vq, struct ut_buf *out);
int vmm_vq_restore(struct vmm_vq *vq, struct ut_rd *rd, const struct vmm_mem *mem);

#endif
