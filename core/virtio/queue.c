/* core/virtio/queue.c — split virtqueue parsing; see queue.h. */
#include "core/virtio/queue.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define VIRTQ_USED_F_NO_NOTIFY   1
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VQ_MAX_CHAIN_BYTES 0xFFFFFFFFull

/* ring layouts */
#define DESC_SIZE 16
#define AVAIL_FLAGS(vq)   ((vq)->avail)
#define AVAIL_IDX(vq)     ((vq)->avail + 2)
#define AVAIL_RING(vq, i) ((vq)->avail + 4 + 2 * (i))
#define USED_EVENT(vq)    ((vq)->avail + 4 + 2 * (vq)->size)
#define USED_FLAGS(vq)    ((vq)->used)
#define USED_IDX(vq)      ((vq)->used + 2)
#define USED_RING(vq, i)  ((vq)->used + 4 + 8 * (i))
#define AVAIL_EVENT(vq)   ((vq)->used + 4 + 8 * (vq)->size)

static inline uint16_t ld16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return v;   /* x86 hosts: little-endian like the ring */
}

static inline uint16_t ld16_acquire(const uint8_t *p)
{
	return __atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_ACQUIRE);
}

static inline void st16_release(uint8_t *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)(void *)p, v, __ATOMIC_RELEASE);
}

static inline void st16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}

static inline void st32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

/* is @head's chain in use (taken, not yet pushed back)? @head < vq->size */
#define HELD(vq, head) ((vq)->held[(head) / 8] & (1u << ((head) % 8)))

static int vq_break(struct vmm_vq *vq, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int vq_break(struct vmm_vq *vq, const char *fmt, ...)
{
	va_list ap;

	if (!vq->broken) {
		va_start(ap, fmt);
		vsnprintf(vq->why, sizeof(vq->why), fmt, ap);
		va_end(ap);
	}
	vq->broken = true;
	return -EBADMSG;
}

void vmm_vq_reset(struct vmm_vq *vq, uint16_t max_size)
{
	memset(vq, 0, sizeof(*vq));
	/* held[] has a bit per head of the largest queue */
	vq->max_size = max_size < VMM_VQ_MAX_SIZE ? max_size : VMM_VQ_MAX_SIZE;
	vq->size = vq->max_size;
	vq->msix_vector = 0xFFFF;
}

int vmm_vq_enable(struct vmm_vq *vq, const struct vmm_mem *mem)
{
	uint64_t n = vq->size;

	vq->broken = false;
	vq->why[0] = '\0';
	if (!n || n > vq->max_size || (n & (n - 1))) {
		vq_break(vq, "queue size %llu is not a power of two <= %u",
			 (unsigned long long)n, vq->max_size);
		goto bad;
	}
	if ((vq->desc_gpa & 15) || (vq->avail_gpa & 1) || (vq->used_gpa & 3)) {
		vq_break(vq, "ring addresses misaligned");
		goto bad;
	}
	vq->desc = vmm_mem_ptr(mem, vq->desc_gpa, DESC_SIZE * n);
	vq->avail = vmm_mem_ptr(mem, vq->avail_gpa, 6 + 2 * n);
	vq->used = vmm_mem_ptr(mem, vq->used_gpa, 6 + 8 * n);
	if (!vq->desc || !vq->avail || !vq->used) {
		vq_break(vq, "ring outside guest RAM (desc 0x%llx avail 0x%llx used 0x%llx)",
			 (unsigned long long)vq->desc_gpa, (unsigned long long)vq->avail_gpa,
			 (unsigned long long)vq->used_gpa);
		goto bad;
	}
	vq->enabled = true;
	return 0;
bad:
	vq->enabled = false;
	return -EINVAL;
}

bool vmm_vq_has_work(const struct vmm_vq *vq)
{
	return vq->enabled && !vq->broken && ld16_acquire(AVAIL_IDX(vq)) != vq->last_avail;
}

/* Read descriptor @i of a table of @n at @table. */
static void vq_desc(const uint8_t *table, uint32_t i, uint64_t *addr, uint32_t *len,
		    uint16_t *flags, uint16_t *next)
{
	const uint8_t *d = table + (size_t)DESC_SIZE * i;

	memcpy(addr, d, 8);
	memcpy(len, d + 8, 4);
	memcpy(flags, d + 12, 2);
	memcpy(next, d + 14, 2);
}

static int vq_add_seg(struct vmm_vq *vq, const struct vmm_mem *mem, struct vmm_vq_elem *e,
		      uint64_t addr, uint32_t len, bool write)
{
	void *p;

	if (e->nr_out + e->nr_in >= VMM_VQ_MAX_SEGS)
		return vq_break(vq, "descriptor chain longer than %d buffers", VMM_VQ_MAX_SEGS);
	if (!write && e->nr_in)
		return vq_break(vq, "device-readable buffer after a device-writable one");
	p = vmm_mem_ptr(mem, addr, len);
	if (!p)
		return vq_break(vq, "buffer 0x%llx+%u outside guest RAM", (unsigned long long)addr, len);
	if (e->in_len + e->out_len + len > VQ_MAX_CHAIN_BYTES)   /* the total, as queue.h says */
		return vq_break(vq, "descriptor chain longer than 4 GiB");
	e->iov[e->nr_out + e->nr_in] = (struct iovec){ p, len };
	if (write) {
		e->nr_in++;
		e->in_len += len;
	} else {
		e->nr_out++;
		e->out_len += len;
	}
	return 0;
}

/* Walk an indirect table. */
static int vq_walk_indirect(struct vmm_vq *vq, const struct vmm_mem *mem, struct vmm_vq_elem *e,
			    uint64_t addr, uint32_t len)
{
	const uint8_t *table;
	uint32_t n = len / DESC_SIZE, i = 0, count = 0;

	if (!vq->indirect)
		return vq_break(vq, "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC");
	if (!len || len % DESC_SIZE)
		return vq_break(vq, "indirect table length %u is not a multiple of 16", len);
	table = vmm_mem_ptr(mem, addr, len);
	if (!table)
		return vq_break(vq, "indirect table 0x%llx+%u outside guest RAM",
				(unsigned long long)addr, len);
	for (;;) {
		uint64_t a;
		uint32_t l;
		uint16_t f, next;
		int r;

		if (++count > n)
			return vq_break(vq, "loop in indirect descriptor table");
		vq_desc(table, i, &a, &l, &f, &next);
		if (f & VIRTQ_DESC_F_INDIRECT)
			return vq_break(vq, "nested indirect descriptor");
		r = vq_add_seg(vq, mem, e, a, l, f & VIRTQ_DESC_F_WRITE);
		if (r)
			return r;
		if (!(f & VIRTQ_DESC_F_NEXT))
			return 0;
		if (next >= n)
			return vq_break(vq, "indirect descriptor next %u beyond table of %u", next, n);
		i = next;
	}
}

/* Walk the chain at @head (< vq->size) into @e. Returns 0 or -EBADMSG
 * (queue broken, reason in vq->why). */
static int vq_walk(struct vmm_vq *vq, const struct vmm_mem *mem, uint16_t head,
		   struct vmm_vq_elem *e)
{
	uint16_t i = head;
	unsigned count = 0;

	e->head = head;
	e->nr_out = e->nr_in = 0;
	e->out_len = e->in_len = 0;
	for (;;) {
		uint64_t a;
		uint32_t l;
		uint16_t f, next;
		int r;

		if (++count > vq->size)
			return vq_break(vq, "loop in descriptor chain from head %u", head);
		vq_desc(vq->desc, i, &a, &l, &f, &next);
		if (f & VIRTQ_DESC_F_INDIRECT) {
			if (f & VIRTQ_DESC_F_NEXT || count > 1)
				return vq_break(vq, "indirect descriptor inside a chain");
			r = vq_walk_indirect(vq, mem, e, a, l);
		} else {
			r = vq_add_seg(vq, mem, e, a, l, f & VIRTQ_DESC_F_WRITE);
		}
		if (r)
			return r;
		if (!(f & VIRTQ_DESC_F_NEXT) || (f & VIRTQ_DESC_F_INDIRECT))
			return 0;
		if (next >= vq->size)
			return vq_break(vq, "descriptor next %u beyond queue size %u", next, vq->size);
		i = next;
	}
}

int vmm_vq_pop(struct vmm_vq *vq, const struct vmm_mem *mem, struct vmm_vq_elem *e)
{
	uint16_t avail_idx, head;
	int r;

	if (vq->broken)
		return -EBADMSG;
	if (!vq->enabled)
		return 0;
	avail_idx = ld16_acquire(AVAIL_IDX(vq));
	if (avail_idx == vq->last_avail)
		return 0;
	if ((uint16_t)(avail_idx - vq->last_avail) > vq->size)
		return vq_break(vq, "avail index moved by %u, more than the queue size %u",
				(uint16_t)(avail_idx - vq->last_avail), vq->size);
	/* never more chains held than the ring has slots (and, with them, the
	 * device's memory for each); held[] below makes this unreachable, it
	 * stays as the bound */
	if (vq->inuse >= vq->size)
		return vq_break(vq, "more than the queue size %u chains in use", vq->size);
	head = ld16(AVAIL_RING(vq, vq->last_avail % vq->size));
	if (head >= vq->size)
		return vq_break(vq, "avail ring head %u beyond queue size %u", head, vq->size);
	/* a conforming driver never offers a chain again before it was used:
	 * the device would run one request twice, and answer it twice */
	if (HELD(vq, head))
		return vq_break(vq, "avail ring head %u offered again while still in use", head);
	r = vq_walk(vq, mem, head, e);
	if (r)
		return r;
	vq->last_avail++;
	vq->inuse++;
	vq->held[head / 8] |= (uint8_t)(1u << (head % 8));
	if (vq->event_idx)
		st16(AVAIL_EVENT(vq), vq->last_avail);
	return 1;
}

int vmm_vq_reclaim(struct vmm_vq *vq, const struct vmm_mem *mem, uint16_t head,
		   struct vmm_vq_elem *e)
{
	int r;

	if (vq->broken)
		return -EBADMSG;
	if (!vq->enabled)
		return vq_break(vq, "chain %u of a saved request on a disabled queue", head);
	if (head >= vq->size)
		return vq_break(vq, "saved request head %u beyond queue size %u", head, vq->size);
	if (vq->inuse >= vq->size)
		return vq_break(vq, "more than the queue size %u chains in use", vq->size);
	if (HELD(vq, head))
		return vq_break(vq, "saved request head %u taken back twice", head);
	r = vq_walk(vq, mem, head, e);
	if (r)
		return r;
	vq->inuse++;
	vq->held[head / 8] |= (uint8_t)(1u << (head % 8));
	return 0;
}

int vmm_vq_check_held(const struct vmm_vq *vq, const uint16_t *heads, unsigned n, bool exact,
		      char *why, size_t len)
{
	uint16_t held = (uint16_t)(vq->last_avail - vq->used_idx);
	uint16_t pending;
	uint8_t seen[VMM_VQ_MAX_SIZE / 8];

	if (!vq->enabled || vq->size > VMM_VQ_MAX_SIZE) {
		snprintf(why, len, "chains held on a queue that is not live");
		return -EBADMSG;
	}
	if (n > held || (exact && n != held)) {
		snprintf(why, len, "%u chain(s) held, but %u in flight (avail index %u taken, used index %u)",
			 n, held, vq->last_avail, vq->used_idx);
		return -EBADMSG;
	}
	memset(seen, 0, sizeof(seen));
	for (unsigned i = 0; i < n; i++) {
		if (heads[i] >= vq->size) {
			snprintf(why, len, "head %u beyond queue size %u", heads[i], vq->size);
			return -EBADMSG;
		}
		if (seen[heads[i] / 8] & (1u << (heads[i] % 8))) {
			snprintf(why, len, "head %u held twice", heads[i]);
			return -EBADMSG;
		}
		seen[heads[i] / 8] |= (uint8_t)(1u << (heads[i] % 8));
	}
	/* the avail entries the device has not taken yet: a held head among
	 * them would be taken again when the device pops it. More than the
	 * queue size pending is a ring vmm_vq_pop breaks on before it takes
	 * anything: nothing of it is read here. */
	pending = (uint16_t)(ld16(AVAIL_IDX(vq)) - vq->last_avail);
	if (pending > vq->size)
		return 0;
	for (uint16_t k = 0; k < pending; k++) {
		uint16_t pos = (uint16_t)(vq->last_avail + k);
		uint16_t h = ld16(AVAIL_RING(vq, pos % vq->size));

		if (h < vq->size && (seen[h / 8] & (1u << (h % 8)))) {
			snprintf(why, len, "head %u held, and offered again in the avail ring at index %u (not yet taken)",
				 h, pos);
			return -EBADMSG;
		}
	}
	return 0;
}

void vmm_vq_fail(struct vmm_vq *vq, const char *why)
{
	vq_break(vq, "%s", why);
}

void vmm_vq_push(struct vmm_vq *vq, uint16_t head, uint32_t len)
{
	uint8_t *u;

	if (!vq->enabled)
		return;
	if (vq->inuse)
		vq->inuse--;
	if (head < VMM_VQ_MAX_SIZE)
		vq->held[head / 8] &= (uint8_t)~(1u << (head % 8));
	u = USED_RING(vq, vq->used_idx % vq->size);
	st32(u, head);
	st32(u + 4, len);
	vq->used_idx++;
	st16_release(USED_IDX(vq), vq->used_idx);
}

bool vmm_vq_need_interrupt(struct vmm_vq *vq)
{
	uint16_t old, new = vq->used_idx, event;
	bool valid;

	if (!vq->enabled)
		return false;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);   /* used idx visible before reading flags */
	if (!vq->event_idx)
		return !(ld16(AVAIL_FLAGS(vq)) & VIRTQ_AVAIL_F_NO_INTERRUPT);
	old = vq->signalled_used;
	valid = vq->signalled_valid;
	vq->signalled_used = new;
	vq->signalled_valid = true;
	if (!valid)
		return true;
	event = ld16(USED_EVENT(vq));
	/* vring_need_event: did used idx cross used_event since the last signal? */
	return (uint16_t)(new - event - 1) < (uint16_t)(new - old);
}

bool vmm_vq_notify_enable(struct vmm_vq *vq, bool enable)
{
	if (!vq->enabled)
		return false;
	if (vq->event_idx) {
		if (!enable)
			return false;
		st16(AVAIL_EVENT(vq), vq->last_avail);
	} else {
		st16(USED_FLAGS(vq), enable ? 0 : VIRTQ_USED_F_NO_NOTIFY);
		if (!enable)
			return false;
	}
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return ld16_acquire(AVAIL_IDX(vq)) != vq->last_avail;
}

size_t vmm_vq_elem_write(const struct vmm_vq_elem *e, const void *src, size_t len)
{
	const uint8_t *s = src;
	size_t done = 0;

	for (unsigned i = e->nr_out; i < e->nr_out + e->nr_in && done < len; i++) {
		size_t n = e->iov[i].iov_len < len - done ? e->iov[i].iov_len : len - done;

		memcpy(e->iov[i].iov_base, s + done, n);
		done += n;
	}
	return done;
}

size_t vmm_vq_elem_read(const struct vmm_vq_elem *e, void *dst, size_t len)
{
	uint8_t *d = dst;
	size_t done = 0;

	for (unsigned i = 0; i < e->nr_out && done < len; i++) {
		size_t n = e->iov[i].iov_len < len - done ? e->iov[i].iov_len : len - done;

		memcpy(d + done, e->iov[i].iov_base, n);
		done += n;
	}
	return done;
}

#define VQ_STATE_VERSION 1

int vmm_vq_save(const struct vmm_vq *vq, struct ut_buf *out)
{
	int r = ut_buf_add_le32(out, VQ_STATE_VERSION);

	r = r ? r : ut_buf_add_le16(out, vq->size);
	r = r ? r : ut_buf_add_le16(out, (uint16_t)(vq->enabled | vq->event_idx << 1 |
						     vq->indirect << 2 | vq->broken << 3 |
						     vq->signalled_valid << 4));
	r = r ? r : ut_buf_add_le64(out, vq->desc_gpa);
	r = r ? r : ut_buf_add_le64(out, vq->avail_gpa);
	r = r ? r : ut_buf_add_le64(out, vq->used_gpa);
	r = r ? r : ut_buf_add_le16(out, vq->msix_vector);
	r = r ? r : ut_buf_add_le16(out, vq->last_avail);
	r = r ? r : ut_buf_add_le16(out, vq->used_idx);
	r = r ? r : ut_buf_add_le16(out, vq->signalled_used);
	return r;
}

int vmm_vq_restore(struct vmm_vq *vq, struct ut_rd *rd, const struct vmm_mem *mem)
{
	uint32_t ver;
	uint16_t size, flags;
	uint16_t max = vq->max_size;

	if (ut_rd_le32(rd, &ver) || ver != VQ_STATE_VERSION)
		return -EPROTO;
	vmm_vq_reset(vq, max);
	if (ut_rd_le16(rd, &size) || ut_rd_le16(rd, &flags) || ut_rd_le64(rd, &vq->desc_gpa) ||
	    ut_rd_le64(rd, &vq->avail_gpa) || ut_rd_le64(rd, &vq->used_gpa) ||
	    ut_rd_le16(rd, &vq->msix_vector) || ut_rd_le16(rd, &vq->last_avail) ||
	    ut_rd_le16(rd, &vq->used_idx) || ut_rd_le16(rd, &vq->signalled_used))
		return -EBADMSG;
	vq->size = size;
	vq->event_idx = flags & 2;
	vq->indirect = flags & 4;
	vq->signalled_valid = flags & 16;
	if ((flags & 1) && vmm_vq_enable(vq, mem))
		return -EBADMSG;
	/* a queue is only disabled after a reset (or an enable that failed
	 * after one): nothing was ever taken from it */
	if (!(flags & 1) && (vq->last_avail || vq->used_idx)) {
		vq_break(vq, "disabled queue with avail index %u and used index %u (not 0)",
			 vq->last_avail, vq->used_idx);
		return -EBADMSG;
	}
	/* chains taken and not yet used: at most the queue size (vmm_vq_pop) */
	if ((flags & 1) && (uint16_t)(vq->last_avail - vq->used_idx) > vq->size) {
		vq_break(vq, "%u chains in use (avail index %u taken, used index %u) for a queue of %u",
			 (uint16_t)(vq->last_avail - vq->used_idx), vq->last_avail, vq->used_idx,
			 vq->size);
		return -EBADMSG;
	}
	if (flags & 8)   /* a queue broken before the save stays broken */
		vq_break(vq, "queue was broken when its state was saved");
	return 0;
}
