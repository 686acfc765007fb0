/* tests/guest/blk.c — virtio-blk (device 0x1042): open and queue requests. */
#include "blk.h"

#define BLK_F_SIZE_MAX  (1ULL << 1)
#define BLK_F_SEG_MAX   (1ULL << 2)
#define BLK_F_RO        (1ULL << 5)
#define BLK_F_FLUSH     (1ULL << 9)

#define CFG_CAPACITY    0
#define CFG_SIZE_MAX    8
#define CFG_SEG_MAX     12

#define DEFAULT_SEG_SIZE (4 * MIB)
#define MAX_SEGS_CAP     64

bool blk_open(struct blk *b, uint32_t index)
{
	memset(b, 0, sizeof(*b));
	if (!virtio_open(&b->vd, VIRTIO_DEV_BLK, index,
			 BLK_F_SIZE_MAX | BLK_F_SEG_MAX | BLK_F_RO | BLK_F_FLUSH))
		return false;
	if (!b->vd.devcfg || b->vd.devcfg_len < 16) {
		say("virtio-blk: device config missing or too short");
		return false;
	}
	b->capacity = virtio_cfg64(&b->vd, CFG_CAPACITY);
	if (b->capacity == 0 || b->capacity > BLK_MAX_CAPACITY) {
		say("virtio-blk: implausible capacity %lu sectors", b->capacity);
		return false;
	}
	uint64_t f = b->vd.features;
	b->seg_size = DEFAULT_SEG_SIZE;
	if (f & BLK_F_SIZE_MAX) {
		uint32_t sm = virtio_cfg32(&b->vd, CFG_SIZE_MAX);
		if (sm < DEFAULT_SEG_SIZE)
			b->seg_size = sm < 4096 ? (sm < 512 ? 512 : (uint32_t)ALIGN_DOWN(sm, 512))
					       : (uint32_t)ALIGN_DOWN(sm, 4096);
	}
	b->max_segs = MAX_SEGS_CAP;
	if (f & BLK_F_SEG_MAX) {
		uint32_t sg = virtio_cfg32(&b->vd, CFG_SEG_MAX);
		if (sg == 0)
			sg = 1;
		if (sg < b->max_segs)
			b->max_segs = sg;
	}
	b->has_flush = (f & BLK_F_FLUSH) != 0;
	b->ro = (f & BLK_F_RO) != 0;
	if (!virtio_queue(&b->vd, &b->vq, 0, VQ_MAX_SIZE, 0))
		return false;
	if (b->vq.size < 3) {
		say("virtio-blk: queue of %u entries is too small", b->vq.size);
		return false;
	}
	if (b->max_segs > (uint32_t)b->vq.size - 2)
		b->max_segs = (uint32_t)b->vq.size - 2;
	virtio_ready(&b->vd);
	return true;
}

bool blk_queue(struct blk *b, struct blk_req *r, uint32_t type, uint64_t sector,
	       uint64_t buf, uint32_t len, uint64_t token)
{
	struct vbuf v[MAX_SEGS_CAP + 2];
	uint32_t n = 0;
	r->type = type;
	r->reserved = 0;
	r->sector = sector;
	r->status = 0xff;
	v[n++] = (struct vbuf){ (uintptr_t)r, 16, false };
	while (len) {
		if (n - 1 >= b->max_segs)
			return false;
		uint32_t l = len < b->seg_size ? len : b->seg_size;
		v[n++] = (struct vbuf){ buf, l, type == BLK_T_IN };
		buf += l;
		len -= l;
	}
	v[n++] = (struct vbuf){ (uintptr_t)&r->status, 1, true };
	return virtq_add(&b->vq, v, n, token);
}
