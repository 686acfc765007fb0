/* tests/guest/virtio.c — virtio 1.x modern PCI transport and split virtqueues.
 *
 * Polling only: no MSI-X vectors, no interrupts.  The rings live in static
 * page-aligned memory; physical = virtual (identity map).  x86 keeps stores
 * in order and loads in order, so only the store->load edge before reading
 * used->flags (notification suppression) needs a real fence.
 */
#include "virtio.h"

/* common configuration structure offsets */
#define CC_DFSELECT     0x00
#define CC_DF           0x04
#define CC_GFSELECT     0x08
#define CC_GF           0x0c
#define CC_NUM_QUEUES   0x12
#define CC_STATUS       0x14
#define CC_CFGGEN       0x15
#define CC_Q_SELECT     0x16
#define CC_Q_SIZE       0x18
#define CC_Q_MSIX       0x1a
#define CC_Q_ENABLE     0x1c
#define CC_Q_NOFF       0x1e
#define CC_Q_DESC       0x20
#define CC_Q_DRIVER     0x28
#define CC_Q_DEVICE     0x30
#define CC_MIN_LEN      0x38

#define ST_ACKNOWLEDGE  1
#define ST_DRIVER       2
#define ST_DRIVER_OK    4
#define ST_FEATURES_OK  8
#define ST_FAILED       0x80

#define CAP_VENDOR      0x09
#define CAP_COMMON      1
#define CAP_NOTIFY      2
#define CAP_ISR         3
#define CAP_DEVICE      4

#define USED_F_NO_NOTIFY 1

#define RESET_POLL_MAX  1000000

/* Ring memory for two queues: desc page, avail page, used (up to 2 pages). */
static uint8_t ring_mem[2][4][4096] __attribute__((aligned(4096)));

/* Resolves BAR + OFFSET + LENGTH of a capability to an MMIO address; 0 if
 * the BAR is unusable or the range wraps / leaves the 32-bit space. */
static uint64_t cap_addr(struct virtio_dev *vd, uint8_t bar, uint32_t off, uint32_t len)
{
	if (bar > 5)
		return 0;
	uint64_t base = pci_bar_addr(&vd->pci, bar);
	if (base == 0 || base + off + (uint64_t)len > 4 * GIB)
		return 0;
	return base + off;
}

/* Walks the capability list and records the virtio structures. */
static bool map_caps(struct virtio_dev *vd)
{
	const struct pci_dev *d = &vd->pci;
	if (!(pci_read16(d, 0x06) & 0x10)) {
		say("virtio %02x:%02x.%u: no capability list", d->bus, d->dev, d->fn);
		return false;
	}
	uint8_t p = pci_read8(d, 0x34) & 0xfc;
	for (uint32_t guard = 0; p >= 0x40 && p <= 0xec && guard < 48; guard++) {
		uint32_t w0 = pci_read32(d, p);           /* id, next, len, cfg_type */
		uint8_t id = (uint8_t)w0, next = (uint8_t)(w0 >> 8) & 0xfc;
		uint8_t clen = (uint8_t)(w0 >> 16), type = (uint8_t)(w0 >> 24);
		if (id == CAP_VENDOR && clen >= 16) {
			uint8_t bar = pci_read8(d, p + 4);
			uint32_t off = pci_read32(d, p + 8);
			uint32_t len = pci_read32(d, p + 12);
			switch (type) {
			case CAP_COMMON:
				if (!vd->common && len >= CC_MIN_LEN)
					vd->common = cap_addr(vd, bar, off, len);
				break;
			case CAP_NOTIFY:
				if (!vd->notify && clen >= 20 && len >= 2) {
					vd->notify_mul = pci_read32(d, p + 16);
					vd->notify = cap_addr(vd, bar, off, len);
					vd->notify_len = len;
				}
				break;
			case CAP_ISR:
				if (!vd->isr && len >= 1)
					vd->isr = cap_addr(vd, bar, off, len);
				break;
			case CAP_DEVICE:
				if (!vd->devcfg) {
					vd->devcfg = cap_addr(vd, bar, off, len);
					vd->devcfg_len = len;
				}
				break;
			}
		}
		p = next;
	}
	if (!vd->common || !vd->notify) {
		say("virtio %02x:%02x.%u: missing common or notify capability", d->bus, d->dev, d->fn);
		return false;
	}
	return true;
}

/* The INDEX-th virtio function on bus 0 whose PCI device ID is DEVICE
 * (0x1040 + virtio id, modern-only) or its transitional ID (0x1000 + n,
 * which also has the modern capabilities). */
static bool find_dev(uint16_t device, uint32_t index, struct pci_dev *out)
{
	uint16_t transitional = 0;
	if (device == VIRTIO_DEV_BLK)
		transitional = 0x1001;
	else if (device == VIRTIO_DEV_RNG)
		transitional = 0x1005;
	struct pci_dev devs[64];
	uint32_t n = pci_scan(devs, ARRAY_SIZE(devs));
	for (uint32_t i = 0; i < n; i++) {
		bool match = devs[i].device == device ||
			     (transitional && devs[i].device == transitional);
		if (devs[i].vendor != VIRTIO_VENDOR || !match)
			continue;
		if (index-- == 0) {
			*out = devs[i];
			return true;
		}
	}
	return false;
}

static void set_status(struct virtio_dev *vd, uint8_t s)
{
	mmio_w8(vd->common + CC_STATUS, s);
}

bool virtio_open(struct virtio_dev *vd, uint16_t device, uint32_t index, uint64_t wanted)
{
	memset(vd, 0, sizeof(*vd));
	if (!find_dev(device, index, &vd->pci))
		return false;
	if (!map_caps(vd))
		return false;

	set_status(vd, 0);
	uint32_t i;
	for (i = 0; i < RESET_POLL_MAX && mmio_r8(vd->common + CC_STATUS) != 0; i++)
		cpu_relax();
	if (i == RESET_POLL_MAX) {
		say("virtio: device did not reset");
		return false;
	}
	set_status(vd, ST_ACKNOWLEDGE);
	set_status(vd, ST_ACKNOWLEDGE | ST_DRIVER);

	mmio_w32(vd->common + CC_DFSELECT, 0);
	uint64_t offered = mmio_r32(vd->common + CC_DF);
	mmio_w32(vd->common + CC_DFSELECT, 1);
	offered |= (uint64_t)mmio_r32(vd->common + CC_DF) << 32;
	if (!(offered & VIRTIO_F_VERSION_1)) {
		say("virtio: device does not offer VIRTIO_F_VERSION_1 (features 0x%lx)", offered);
		set_status(vd, ST_FAILED);
		return false;
	}
	vd->features = offered & (wanted | VIRTIO_F_VERSION_1 | VIRTIO_F_ACCESS_PLATFORM);
	mmio_w32(vd->common + CC_GFSELECT, 0);
	mmio_w32(vd->common + CC_GF, (uint32_t)vd->features);
	mmio_w32(vd->common + CC_GFSELECT, 1);
	mmio_w32(vd->common + CC_GF, (uint32_t)(vd->features >> 32));
	set_status(vd, ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK);
	if (!(mmio_r8(vd->common + CC_STATUS) & ST_FEATURES_OK)) {
		say("virtio: device refused features 0x%lx", vd->features);
		set_status(vd, ST_FAILED);
		return false;
	}
	return true;
}

bool virtio_queue(struct virtio_dev *vd, struct virtq *vq, uint16_t qi, uint16_t max, uint32_t slot)
{
	memset(vq, 0, sizeof(*vq));
	if (slot >= ARRAY_SIZE(ring_mem))
		return false;
	if (qi >= mmio_r16(vd->common + CC_NUM_QUEUES)) {
		say("virtio: no queue %u", qi);
		return false;
	}
	mmio_w16(vd->common + CC_Q_SELECT, qi);
	uint16_t dev_size = mmio_r16(vd->common + CC_Q_SIZE);
	if (dev_size == 0) {
		say("virtio: queue %u is not available", qi);
		return false;
	}
	uint16_t n = 1;
	if (max > VQ_MAX_SIZE)
		max = VQ_MAX_SIZE;
	while ((uint32_t)n * 2 <= dev_size && (uint32_t)n * 2 <= max)
		n *= 2;
	uint16_t noff = mmio_r16(vd->common + CC_Q_NOFF);
	uint64_t na = vd->notify + (uint64_t)noff * vd->notify_mul;
	if (na + 2 > vd->notify + vd->notify_len) {
		say("virtio: queue %u notify offset %u outside the notify area", qi, noff);
		return false;
	}

	memset(ring_mem[slot], 0, sizeof(ring_mem[slot]));
	vq->index = qi;
	vq->size = n;
	vq->desc = (struct vring_desc *)ring_mem[slot][0];
	vq->avail = (volatile uint16_t *)ring_mem[slot][1];
	vq->used = (volatile uint16_t *)ring_mem[slot][2];
	vq->notify_addr = na;
	for (uint16_t i = 0; i < n; i++)
		vq->desc[i].next = (uint16_t)(i + 1);
	vq->free_head = 0;
	vq->num_free = n;

	mmio_w16(vd->common + CC_Q_SIZE, n);
	mmio_w16(vd->common + CC_Q_MSIX, 0xffff);
	uint64_t a[3] = { (uintptr_t)vq->desc, (uintptr_t)vq->avail, (uintptr_t)vq->used };
	for (uint32_t k = 0; k < 3; k++) {
		mmio_w32(vd->common + CC_Q_DESC + 8 * k, (uint32_t)a[k]);
		mmio_w32(vd->common + CC_Q_DESC + 8 * k + 4, (uint32_t)(a[k] >> 32));
	}
	mmio_w16(vd->common + CC_Q_ENABLE, 1);
	return true;
}

void virtio_ready(struct virtio_dev *vd)
{
	set_status(vd, ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
}

uint32_t virtio_cfg32(struct virtio_dev *vd, uint32_t off)
{
	uint8_t g;
	uint32_t v;
	do {
		g = mmio_r8(vd->common + CC_CFGGEN);
		v = mmio_r32(vd->devcfg + off);
	} while (g != mmio_r8(vd->common + CC_CFGGEN));
	return v;
}

uint64_t virtio_cfg64(struct virtio_dev *vd, uint32_t off)
{
	uint8_t g;
	uint64_t v;
	do {
		g = mmio_r8(vd->common + CC_CFGGEN);
		v = mmio_r32(vd->devcfg + off);
		v |= (uint64_t)mmio_r32(vd->devcfg + off + 4) << 32;
	} while (g != mmio_r8(vd->common + CC_CFGGEN));
	return v;
}

bool virtq_add(struct virtq *vq, const struct vbuf *bufs, uint32_t n, uint64_t token)
{
	if (n == 0 || n > vq->num_free)
		return false;
	uint16_t head = vq->free_head, i = head;
	for (uint32_t k = 0; k < n; k++) {
		struct vring_desc *d = &vq->desc[i];
		d->addr = bufs[k].addr;
		d->len = bufs[k].len;
		d->flags = (uint16_t)((bufs[k].write ? VRING_DESC_F_WRITE : 0) |
				      (k + 1 < n ? VRING_DESC_F_NEXT : 0));
		i = d->next;
	}
	vq->inflight[head] = 1;
	vq->free_head = i;
	vq->num_free = (uint16_t)(vq->num_free - n);
	vq->token[head] = token;
	vq->avail[2 + (vq->avail_idx & (vq->size - 1))] = head;
	vq->avail_idx++;
	vq->pending_kick++;
	return true;
}

void virtq_kick(struct virtq *vq)
{
	if (!vq->pending_kick)
		return;
	barrier();
	vq->avail[1] = vq->avail_idx;       /* publish */
	vq->pending_kick = 0;
	mb();                               /* idx store before the flags load */
	if (!(vq->used[0] & USED_F_NO_NOTIFY)) {
		mmio_w16(vq->notify_addr, vq->index);
		vq->kicks++;
	}
}

bool virtq_get(struct virtq *vq, uint64_t *token, uint32_t *len)
{
	if (vq->used[1] == vq->last_used)
		return false;
	barrier();
	const volatile struct vring_used_elem *ue =
		(const volatile struct vring_used_elem *)(vq->used + 2) + (vq->last_used & (vq->size - 1));
	uint32_t id = ue->id, l = ue->len;
	vq->last_used++;
	if (id >= vq->size || !vq->inflight[id])
		die(ST_DEVICE_ERROR, "virtio: used ring id %u is not an outstanding chain (queue size %u)",
		    id, vq->size);
	vq->inflight[id] = 0;
	/* return the chain to the free list */
	uint16_t i = (uint16_t)id, cnt = 1;
	while ((vq->desc[i].flags & VRING_DESC_F_NEXT) && cnt <= vq->size) {
		i = vq->desc[i].next;
		cnt++;
	}
	if (cnt > vq->size || i >= vq->size)
		die(ST_DEVICE_ERROR, "virtio: corrupt descriptor chain at %u", id);
	vq->desc[i].next = vq->free_head;
	vq->free_head = (uint16_t)id;
	vq->num_free = (uint16_t)(vq->num_free + cnt);
	*token = vq->token[id];
	*len = l;
	return true;
}
