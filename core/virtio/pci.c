/* core/virtio/pci.c — the virtio-pci modern transport (virtio 1.x, 4.1).
 *
 * BAR0 (32-bit memory, 32 KiB) holds every structure:
 *   0x0000 common configuration     0x1000 ISR status
 *   0x2000 device configuration     0x3000 notifications (queue q at q*4)
 *   0x4000 MSI-X table              0x5000 MSI-X pending bits
 * Config space capabilities from 0x40: MSI-X, then the virtio structures
 * (common, notify, ISR, device, PCI config access).
 */
#include "core/virtio/virtio.h"
#include "core/layout.h"
#include "core/vm.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define BAR_SIZE        0x8000
#define OFF_COMMON      0x0000
#define OFF_ISR         0x1000
#define OFF_DEVICE      0x2000
#define OFF_NOTIFY      0x3000
#define OFF_MSIX_TABLE  0x4000
#define OFF_MSIX_PBA    0x5000
#define NOTIFY_MULT     4
#define COMMON_LEN      0x38
#define NO_VECTOR       0xFFFF

#define CAP_MSIX        0x40
#define CAP_COMMON      0x4C
#define CAP_NOTIFY      0x5C
#define CAP_ISR         0x70
#define CAP_DEVICE      0x80
#define CAP_PCICFG      0x90

#define PCI_CAP_ID_VNDR 0x09
#define PCI_CAP_ID_MSIX 0x11
#define MSIX_ENABLE     0x8000
#define MSIX_FMASK      0x4000
#define MSIX_CTRL_MASKED 1

enum { CFG_COMMON = 1, CFG_NOTIFY = 2, CFG_ISR = 3, CFG_DEVICE = 4, CFG_PCI = 5 };

#define VIRTIO_STATE_VERSION 1

static void intx_set(struct vmm_virtio_dev *vd, int level)
{
	if (vmm_pci_get16(&vd->pci, PCI_COMMAND) & PCI_CMD_INTX_OFF)
		level = 0;
	if (level == vd->intx_level)
		return;
	vd->intx_level = level;
	if (level)
		vd->pci.cfg[PCI_STATUS] |= PCI_STATUS_INTX;
	else
		vd->pci.cfg[PCI_STATUS] &= (uint8_t)~PCI_STATUS_INTX;
	vmm_irq_line(vd->vm, vmm_pci_slot_irq(vd->pci.slot), level);
}

static uint64_t msix_addr(const struct vmm_msix_vec *v)
{
	return (uint64_t)v->addr_hi << 32 | v->addr_lo;
}

/* Deliver vector @n now or remember it as pending (masked, or MSI-X off:
 * then an entry's unmask must not send; enabling MSI-X sends it). */
static void msix_fire(struct vmm_virtio_dev *vd, uint16_t n)
{
	struct vmm_msix_vec *v;
	uint64_t one = 1;

	if (n >= vd->nvec)
		return;
	v = &vd->msix[n];
	if (!vd->msix_enabled || vd->msix_masked || (v->ctrl & MSIX_CTRL_MASKED)) {
		v->pending = true;
		return;
	}
	v->pending = false;
	if (v->gsi < 0) {
		int gsi = vmm_irq_msi_alloc(vd->vm, msix_addr(v), v->data);
		int fd;

		if (gsi < 0)
			return;
		fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (fd < 0)
			return;
		if (vmm_irq_irqfd(vd->vm, fd, (uint32_t)gsi, true)) {
			close(fd);
			return;
		}
		v->gsi = gsi;
		v->fd = fd;
	}
	if (write(v->fd, &one, sizeof(one)) < 0)
		return;
}

void vmm_virtio_interrupt(struct vmm_virtio_dev *vd, int q)
{
	if (q < 0 || q >= vd->nvqs || !vmm_vq_need_interrupt(&vd->vqs[q]))
		return;
	if (vd->msix_enabled) {
		msix_fire(vd, vd->vqs[q].msix_vector);
		return;
	}
	vd->isr |= 1;
	intx_set(vd, 1);
}

static void config_interrupt(struct vmm_virtio_dev *vd)
{
	if (vd->msix_enabled) {
		msix_fire(vd, vd->config_vector);
		return;
	}
	vd->isr |= 2;
	intx_set(vd, 1);
}

void vmm_virtio_fail(struct vmm_virtio_dev *vd, int q)
{
	(void)q;
	if (vd->status & VIRTIO_STATUS_NEEDS_RESET)
		return;
	vd->status |= VIRTIO_STATUS_NEEDS_RESET;
	config_interrupt(vd);
}

void vmm_virtio_config_changed(struct vmm_virtio_dev *vd)
{
	vd->config_gen++;
	if ((vd->status & VIRTIO_STATUS_DRIVER_OK) && !(vd->status & VIRTIO_STATUS_NEEDS_RESET))
		config_interrupt(vd);
}

/* ---- kicks ---- */

static void kick_cb(void *opaque, uint32_t events)
{
	struct vmm_virtio_dev *vd = opaque;
	uint64_t v;

	(void)events;
	pthread_mutex_lock(&vd->lock);
	for (int q = 0; q < vd->nvqs; q++) {
		if (read(vd->kick_fd[q], &v, sizeof(v)) != sizeof(v))
			continue;
		if ((vd->status & VIRTIO_STATUS_DRIVER_OK) && vd->vqs[q].enabled)
			vd->vops->notify(vd, q);
	}
	pthread_mutex_unlock(&vd->lock);
}

static int ioeventfd(struct vmm_virtio_dev *vd, int q, uint64_t addr, bool assign)
{
	struct kvm_ioeventfd e = {
		.addr = addr, .len = 2, .fd = vd->kick_fd[q],
		.flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN,
	};

	return ioctl(vd->vm->vm_fd, KVM_IOEVENTFD, &e) < 0 ? -errno : 0;
}

static void kicks_update(struct vmm_virtio_dev *vd)
{
	struct vmm_pci_bar *b = &vd->pci.bars[0];

	for (int q = 0; q < vd->nvqs; q++) {
		uint64_t want = b->mapped ? b->addr + OFF_NOTIFY + (uint64_t)q * NOTIFY_MULT : 0;

		if (vd->kick_addr[q] == want)
			continue;
		if (vd->kick_addr[q])
			ioeventfd(vd, q, vd->kick_addr[q], false);
		vd->kick_addr[q] = 0;
		if (want && ioeventfd(vd, q, want, true) == 0)
			vd->kick_addr[q] = want;
	}
}

static void bar_moved(struct vmm_pci_dev *d, int bar, uint64_t old)
{
	struct vmm_virtio_dev *vd = d->opaque;

	(void)old;
	if (bar == 0)
		kicks_update(vd);
}

/* ---- reset ---- */

static void transport_reset(struct vmm_virtio_dev *vd)
{
	if (vd->vops->reset)
		vd->vops->reset(vd);
	for (int q = 0; q < vd->nvqs; q++)
		vmm_vq_reset(&vd->vqs[q], vd->vops->queue_size);
	vd->guest_features = 0;
	vd->dfsel = vd->gfsel = 0;
	vd->status = 0;
	vd->isr = 0;
	vd->queue_sel = 0;
	vd->config_vector = NO_VECTOR;
	intx_set(vd, 0);
}

/* ---- common configuration ---- */

static uint64_t common_read(struct vmm_virtio_dev *vd, uint32_t off)
{
	struct vmm_vq *vq = vd->queue_sel < vd->nvqs ? &vd->vqs[vd->queue_sel] : NULL;

	switch (off) {
	case 0x00: return vd->dfsel;
	case 0x04: return vd->dfsel < 2 ? (uint32_t)(vd->host_features >> (32 * vd->dfsel)) : 0;
	case 0x08: return vd->gfsel;
	case 0x0C: return vd->gfsel < 2 ? (uint32_t)(vd->guest_features >> (32 * vd->gfsel)) : 0;
	case 0x10: return vd->config_vector;
	case 0x12: return (uint64_t)vd->nvqs;
	case 0x14: return vd->status;
	case 0x15: return vd->config_gen;
	case 0x16: return vd->queue_sel;
	case 0x18: return vq ? vq->size : 0;
	case 0x1A: return vq ? vq->msix_vector : NO_VECTOR;
	case 0x1C: return vq ? vq->enabled : 0;
	case 0x1E: return vd->queue_sel;   /* queue_notify_off = index */
	case 0x20: return vq ? (uint32_t)vq->desc_gpa : 0;
	case 0x24: return vq ? (uint32_t)(vq->desc_gpa >> 32) : 0;
	case 0x28: return vq ? (uint32_t)vq->avail_gpa : 0;
	case 0x2C: return vq ? (uint32_t)(vq->avail_gpa >> 32) : 0;
	case 0x30: return vq ? (uint32_t)vq->used_gpa : 0;
	case 0x34: return vq ? (uint32_t)(vq->used_gpa >> 32) : 0;
	default: return 0;
	}
}

static void set_lo(uint64_t *x, uint64_t v) { *x = (*x & ~0xFFFFFFFFull) | (uint32_t)v; }
static void set_hi(uint64_t *x, uint64_t v) { *x = (*x & 0xFFFFFFFFull) | (uint64_t)(uint32_t)v << 32; }

static void status_write(struct vmm_virtio_dev *vd, uint8_t v)
{
	if (!v) {
		transport_reset(vd);
		return;
	}
	if ((v & VIRTIO_STATUS_FEATURES_OK) && !(vd->status & VIRTIO_STATUS_FEATURES_OK)) {
		/* refuse a feature set without VERSION_1 or with bits we never offered */
		if (!vmm_virtio_has(vd, VIRTIO_F_VERSION_1) ||
		    (vd->guest_features & ~vd->host_features))
			v &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
		for (int q = 0; q < vd->nvqs; q++) {
			vd->vqs[q].event_idx = vmm_virtio_has(vd, VIRTIO_F_EVENT_IDX);
			vd->vqs[q].indirect = vmm_virtio_has(vd, VIRTIO_F_INDIRECT_DESC);
		}
	}
	/* DRIVER_OK with no features in force (FEATURES_OK never set, or
	 * refused just above): the driver skipped a step of the start-up
	 * (virtio 1.x 3.1.1), and this modern-only device has nothing
	 * negotiated to run its queues by. Like a refused FEATURES_OK, the bit
	 * does not stick; the device needs a reset before it runs (no
	 * interrupt: DRIVER_OK is not set, 2.1.2) */
	if ((v & VIRTIO_STATUS_DRIVER_OK) && !(v & VIRTIO_STATUS_FEATURES_OK))
		v = (uint8_t)((v & ~VIRTIO_STATUS_DRIVER_OK) | VIRTIO_STATUS_NEEDS_RESET);
	vd->status = (uint8_t)((vd->status & VIRTIO_STATUS_NEEDS_RESET) | v);
	if (v & VIRTIO_STATUS_DRIVER_OK) {
		/* catch up with kicks that came before DRIVER_OK */
		for (int q = 0; q < vd->nvqs; q++)
			if (vd->vqs[q].enabled && vmm_vq_has_work(&vd->vqs[q]))
				vd->vops->notify(vd, q);
	}
}

static void common_write(struct vmm_virtio_dev *vd, uint32_t off, uint64_t v)
{
	struct vmm_vq *vq = vd->queue_sel < vd->nvqs ? &vd->vqs[vd->queue_sel] : NULL;
	bool queue_locked = vq && vq->enabled;

	switch (off) {
	case 0x00: vd->dfsel = (uint32_t)v; return;
	case 0x08: vd->gfsel = (uint32_t)v; return;
	case 0x0C:
		if (vd->gfsel < 2 && !(vd->status & VIRTIO_STATUS_FEATURES_OK)) {
			if (vd->gfsel)
				set_hi(&vd->guest_features, v);
			else
				set_lo(&vd->guest_features, v);
		}
		return;
	case 0x10: vd->config_vector = (uint16_t)v; return;
	case 0x14: status_write(vd, (uint8_t)v); return;
	case 0x16: vd->queue_sel = (uint16_t)v; return;
	case 0x1A: if (vq) vq->msix_vector = (uint16_t)v; return;
	default: break;
	}
	if (!vq || queue_locked)
		return;   /* queue fields are fixed once the queue is enabled */
	switch (off) {
	case 0x18: vq->size = (uint16_t)v; break;
	case 0x1C:
		if (v == 1 && vmm_vq_enable(vq, &vd->vm->mem))
			vmm_virtio_fail(vd, vd->queue_sel);
		break;
	case 0x20: set_lo(&vq->desc_gpa, v); break;
	case 0x24: set_hi(&vq->desc_gpa, v); break;
	case 0x28: set_lo(&vq->avail_gpa, v); break;
	case 0x2C: set_hi(&vq->avail_gpa, v); break;
	case 0x30: set_lo(&vq->used_gpa, v); break;
	case 0x34: set_hi(&vq->used_gpa, v); break;
	default: break;
	}
}

/* Accesses are split into the registers they cover (a 64-bit access to a
 * 64-bit field arrives as two 32-bit halves here). */
static void common_io(struct vmm_virtio_dev *vd, uint32_t off, uint8_t *data, uint32_t len, bool wr)
{
	static const uint8_t width[COMMON_LEN] = {
		[0x00] = 4, [0x04] = 4, [0x08] = 4, [0x0C] = 4, [0x10] = 2, [0x12] = 2,
		[0x14] = 1, [0x15] = 1, [0x16] = 2, [0x18] = 2, [0x1A] = 2, [0x1C] = 2,
		[0x1E] = 2, [0x20] = 4, [0x24] = 4, [0x28] = 4, [0x2C] = 4, [0x30] = 4,
		[0x34] = 4,
	};
	uint32_t done = 0;

	while (done < len) {
		uint32_t o = off + done, w;

		if (o >= COMMON_LEN || !width[o]) {
			if (!wr)
				data[done] = 0;
			done++;
			continue;
		}
		w = width[o] < len - done ? width[o] : len - done;
		if (wr)
			common_write(vd, o, vmm_le_get(data + done, w));
		else
			vmm_le_put(data + done, w, common_read(vd, o));
		done += w;
	}
}

/* ---- MSI-X table ---- */

static void msix_table_io(struct vmm_virtio_dev *vd, uint32_t off, uint8_t *data, uint32_t len, bool wr)
{
	uint32_t n = off / 16, field = (off % 16) / 4;
	struct vmm_msix_vec *v;
	uint32_t *f, val;
	bool was_masked;

	if (!wr)
		memset(data, 0, len);   /* every byte defined, e.g. a qword read at ctrl */
	if (n >= (uint32_t)vd->nvec || (off & 3) || (len != 4 && len != 8))
		return;
	v = &vd->msix[n];
	for (uint32_t i = 0; i < len / 4 && field + i < 4; i++) {
		f = (uint32_t *[]){ &v->addr_lo, &v->addr_hi, &v->data, &v->ctrl }[field + i];
		if (!wr) {
			vmm_le_put(data + 4 * i, 4, *f);
			continue;
		}
		val = (uint32_t)vmm_le_get(data + 4 * i, 4);
		was_masked = v->ctrl & MSIX_CTRL_MASKED;
		*f = field + i == 3 ? (val & MSIX_CTRL_MASKED) : val;
		if (field + i < 3 && v->gsi >= 0)
			vmm_irq_msi_update(vd->vm, (uint32_t)v->gsi, msix_addr(v), v->data);
		if (field + i == 3 && was_masked && !(v->ctrl & MSIX_CTRL_MASKED) && v->pending)
			msix_fire(vd, (uint16_t)n);
	}
}

static void bar_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool wr)
{
	struct vmm_virtio_dev *vd = opaque;
	uint64_t one = 1;

	pthread_mutex_lock(&vd->lock);
	if (off < OFF_COMMON + COMMON_LEN) {
		common_io(vd, (uint32_t)off, data, len, wr);
	} else if (off >= OFF_ISR && off < OFF_ISR + 4) {
		if (!wr) {
			memset(data, 0, len);
			if (off == OFF_ISR) {
				data[0] = vd->isr;   /* read clears and lowers INTx */
				vd->isr = 0;
				intx_set(vd, 0);
			}
		}
	} else if (off >= OFF_DEVICE && off < OFF_DEVICE + vd->vops->config_len) {
		uint32_t o = (uint32_t)(off - OFF_DEVICE);
		uint32_t n = len <= vd->vops->config_len - o ? len : vd->vops->config_len - o;

		if (!wr) {
			memset(data, 0, len);
			memcpy(data, vd->config + o, n);
		} else if (vd->vops->config_write) {
			memcpy(vd->config + o, data, n);
			vd->vops->config_write(vd, o, n);
		}
	} else if (off >= OFF_NOTIFY && off < OFF_NOTIFY + (uint64_t)vd->nvqs * NOTIFY_MULT) {
		/* a kick KVM did not catch with the ioeventfd (other width) */
		int q = (int)((off - OFF_NOTIFY) / NOTIFY_MULT);

		if (wr) {
			if (write(vd->kick_fd[q], &one, sizeof(one)) < 0)
				(void)0;
		} else {
			memset(data, 0, len);
		}
	} else if (off >= OFF_MSIX_TABLE && off < OFF_MSIX_TABLE + 16u * (unsigned)vd->nvec) {
		msix_table_io(vd, (uint32_t)(off - OFF_MSIX_TABLE), data, len, wr);
	} else if (off >= OFF_MSIX_PBA && off < OFF_MSIX_PBA + 8) {
		if (!wr) {
			uint64_t bits = 0;

			for (int i = 0; i < vd->nvec; i++)
				bits |= (uint64_t)vd->msix[i].pending << i;
			vmm_le_put(data, len, bits >> (8 * (off - OFF_MSIX_PBA)));
		}
	} else if (!wr) {
		memset(data, 0, len);
	}
	pthread_mutex_unlock(&vd->lock);
}

/* ---- PCI config space ---- */

static void cfg_written(struct vmm_pci_dev *d, uint32_t off, uint32_t len)
{
	struct vmm_virtio_dev *vd = d->opaque;
	uint16_t ctl;
	bool was;

	pthread_mutex_lock(&vd->lock);
	if (off <= CAP_MSIX + 3 && off + len > CAP_MSIX + 2) {
		ctl = vmm_pci_get16(d, CAP_MSIX + 2);
		was = vd->msix_enabled;
		vd->msix_enabled = ctl & MSIX_ENABLE;
		vd->msix_masked = ctl & MSIX_FMASK;
		if (vd->msix_enabled && !was)
			intx_set(vd, 0);
		if (vd->msix_enabled && !vd->msix_masked)
			for (int i = 0; i < vd->nvec; i++)
				if (vd->msix[i].pending)
					msix_fire(vd, (uint16_t)i);
	}
	if (off < PCI_COMMAND + 2 && off + len > PCI_COMMAND &&
	    (vmm_pci_get16(d, PCI_COMMAND) & PCI_CMD_INTX_OFF))
		intx_set(vd, 0);
	/* PCI config access capability: a write to its data window accesses BAR0 */
	if (off >= CAP_PCICFG + 16 && off < CAP_PCICFG + 20) {
		uint32_t boff = vmm_pci_get32(d, CAP_PCICFG + 8);
		uint32_t blen = vmm_pci_get32(d, CAP_PCICFG + 12);

		if (d->cfg[CAP_PCICFG + 4] == 0 && (blen == 1 || blen == 2 || blen == 4) &&
		    boff + blen <= BAR_SIZE) {
			pthread_mutex_unlock(&vd->lock);
			bar_io(vd, boff, &d->cfg[CAP_PCICFG + 16], blen, true);
			return;
		}
	}
	pthread_mutex_unlock(&vd->lock);
}

static void add_vcap(struct vmm_pci_dev *d, uint8_t at, uint8_t next, uint8_t len, uint8_t type,
		     uint32_t off, uint32_t size)
{
	d->cfg[at] = PCI_CAP_ID_VNDR;
	d->cfg[at + 1] = next;
	d->cfg[at + 2] = len;
	d->cfg[at + 3] = type;
	d->cfg[at + 4] = 0;     /* BAR0 */
	vmm_pci_set32(d, at + 8, off);
	vmm_pci_set32(d, at + 12, size);
}

static void pci_setup(struct vmm_virtio_dev *vd)
{
	struct vmm_pci_dev *d = &vd->pci;
	const struct vmm_virtio_ops *o = vd->vops;

	vmm_pci_set16(d, PCI_VENDOR_ID, 0x1AF4);
	vmm_pci_set16(d, PCI_DEVICE_ID, (uint16_t)(0x1040 + o->device_id));
	d->cfg[PCI_REVISION_ID] = 1;
	d->cfg[PCI_CLASS_PROG] = (uint8_t)o->class_code;
	d->cfg[PCI_CLASS_PROG + 1] = (uint8_t)(o->class_code >> 8);
	d->cfg[PCI_CLASS_PROG + 2] = (uint8_t)(o->class_code >> 16);
	vmm_pci_set16(d, PCI_SUBSYS_VENDOR, 0x1AF4);
	vmm_pci_set16(d, PCI_SUBSYS_ID, 0x1100);
	vmm_pci_set16(d, PCI_STATUS, PCI_STATUS_CAPS);
	d->cfg[PCI_CAP_PTR] = CAP_MSIX;
	d->cfg[PCI_INT_PIN] = 1;

	d->cfg[CAP_MSIX] = PCI_CAP_ID_MSIX;
	d->cfg[CAP_MSIX + 1] = CAP_COMMON;
	vmm_pci_set16(d, CAP_MSIX + 2, (uint16_t)(vd->nvec - 1));
	vmm_pci_set32(d, CAP_MSIX + 4, OFF_MSIX_TABLE);   /* BIR 0 */
	vmm_pci_set32(d, CAP_MSIX + 8, OFF_MSIX_PBA);
	d->wmask[CAP_MSIX + 3] = (MSIX_ENABLE | MSIX_FMASK) >> 8;

	add_vcap(d, CAP_COMMON, CAP_NOTIFY, 16, CFG_COMMON, OFF_COMMON, COMMON_LEN);
	add_vcap(d, CAP_NOTIFY, CAP_ISR, 20, CFG_NOTIFY, OFF_NOTIFY,
		 (uint32_t)vd->nvqs * NOTIFY_MULT);
	vmm_pci_set32(d, CAP_NOTIFY + 16, NOTIFY_MULT);
	add_vcap(d, CAP_ISR, CAP_DEVICE, 16, CFG_ISR, OFF_ISR, 4);
	add_vcap(d, CAP_DEVICE, CAP_PCICFG, 16, CFG_DEVICE, OFF_DEVICE, o->config_len);
	add_vcap(d, CAP_PCICFG, 0, 20, CFG_PCI, 0, 0);
	for (int i = 4; i < 20; i++)
		d->wmask[CAP_PCICFG + i] = 0xFF;       /* bar, offset, length, data */
	for (int i = 5; i < 8; i++)
		d->wmask[CAP_PCICFG + i] = 0;           /* padding */

	d->bars[0] = (struct vmm_pci_bar){ .size = BAR_SIZE, .fn = bar_io, .opaque = vd };
	d->cfg_written = cfg_written;
	d->bar_moved = bar_moved;
	d->opaque = vd;
}

int vmm_virtio_init(struct vmm_vm *vm, struct vmm_virtio_dev *vd,
		    const struct vmm_virtio_ops *vops, struct ut_err *err)
{
	int r, q;

	if (vops->nvqs < 1 || vops->nvqs > VMM_VIRTIO_MAX_VQS ||
	    vops->config_len > VMM_VIRTIO_CONFIG_MAX)
		return ut_errf(err, -EINVAL, "virtio device '%s': bad queue count or config size",
			       vd->dev.id);
	vd->vm = vm;
	vd->dev.vm = vm;
	vd->vops = vops;
	vd->nvqs = vops->nvqs;
	vd->nvec = vops->nvqs + 1;
	vd->host_features = vops->features | 1ULL << VIRTIO_F_VERSION_1 |
			    1ULL << VIRTIO_F_INDIRECT_DESC | 1ULL << VIRTIO_F_EVENT_IDX;
	pthread_mutex_init(&vd->lock, NULL);
	for (int i = 0; i < vd->nvec; i++)
		vd->msix[i] = (struct vmm_msix_vec){ .ctrl = MSIX_CTRL_MASKED, .gsi = -1, .fd = -1 };
	for (q = 0; q < VMM_VIRTIO_MAX_VQS; q++)
		vd->kick_fd[q] = -1;
	for (q = 0; q < vd->nvqs; q++) {
		vd->kick_fd[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (vd->kick_fd[q] < 0) {
			r = ut_errf_sys(err, -errno, "virtio device '%s': eventfd", vd->dev.id);
			goto out;
		}
		r = vmm_loop_add(&vm->loop, vd->kick_fd[q], EPOLLIN, kick_cb, vd);
		if (r) {
			ut_errf_sys(err, r, "virtio device '%s': event loop", vd->dev.id);
			goto out;
		}
	}
	transport_reset(vd);
	pci_setup(vd);
	r = vmm_pci_add(vm, &vd->pci, err);
	if (r)
		goto out;
	r = vmm_vm_add_device(vm, &vd->dev);
	if (r) {
		ut_errf(err, r, "too many devices");
		vmm_pci_remove(vm, &vd->pci);
		goto out;
	}
	return 0;
out:
	for (q = 0; q < vd->nvqs; q++) {
		if (vd->kick_fd[q] >= 0) {
			vmm_loop_del(&vm->loop, vd->kick_fd[q]);
			close(vd->kick_fd[q]);
			vd->kick_fd[q] = -1;
		}
	}
	pthread_mutex_destroy(&vd->lock);
	return r;
}

void vmm_virtio_dev_reset(struct vmm_device *dev)
{
	struct vmm_virtio_dev *vd = (struct vmm_virtio_dev *)dev;

	pthread_mutex_lock(&vd->lock);
	transport_reset(vd);
	pthread_mutex_unlock(&vd->lock);
}

int vmm_virtio_dev_save(struct vmm_device *dev, struct ut_buf *out)
{
	struct vmm_virtio_dev *vd = (struct vmm_virtio_dev *)dev;
	int r;

	pthread_mutex_lock(&vd->lock);
	r = vd->vops->quiesce ? vd->vops->quiesce(vd) : 0;
	r = r ? r : ut_buf_add_le32(out, VIRTIO_STATE_VERSION);
	r = r ? r : ut_buf_add(out, vd->pci.cfg, sizeof(vd->pci.cfg));
	r = r ? r : ut_buf_add_le64(out, vd->guest_features);
	r = r ? r : ut_buf_add_le32(out, vd->dfsel);
	r = r ? r : ut_buf_add_le32(out, vd->gfsel);
	r = r ? r : ut_buf_add(out, &vd->status, 1);
	r = r ? r : ut_buf_add(out, &vd->isr, 1);
	r = r ? r : ut_buf_add(out, &vd->config_gen, 1);
	r = r ? r : ut_buf_add_le16(out, vd->queue_sel);
	r = r ? r : ut_buf_add_le16(out, vd->config_vector);
	r = r ? r : ut_buf_add_le32(out, (uint32_t)vd->nvqs);
	for (int q = 0; !r && q < vd->nvqs; q++)
		r = vmm_vq_save(&vd->vqs[q], out);
	r = r ? r : ut_buf_add_le32(out, (uint32_t)vd->nvec);
	for (int i = 0; !r && i < vd->nvec; i++) {
		struct vmm_msix_vec *v = &vd->msix[i];

		r = ut_buf_add_le32(out, v->addr_lo);
		r = r ? r : ut_buf_add_le32(out, v->addr_hi);
		r = r ? r : ut_buf_add_le32(out, v->data);
		r = r ? r : ut_buf_add_le32(out, v->ctrl | (uint32_t)v->pending << 31);
	}
	r = r ? r : ut_buf_add(out, vd->config, vd->vops->config_len);
	if (!r && vd->vops->save)
		r = vd->vops->save(vd, out);
	pthread_mutex_unlock(&vd->lock);
	return r;
}

/* The negotiated features of a restored record (vd->status,
 * guest_features, the queues' flags). The record holds what the driver
 * accepted, not what the saving device offered: the driver relies on the
 * accepted bits only, so they must be a subset of what this device (as
 * built now: e.g. virtio-blk offers RO only with ro=on) offers, as QEMU
 * refuses a migration whose guest features are not a subset of the host
 * features; bits the saved device offered and the driver did not take do
 * not matter. Checked once the features are in force (FEATURES_OK;
 * DRIVER_OK without it is refused: status_write never lets it stick);
 * before, guest_features is the driver's proposal, checked when it sets
 * FEATURES_OK. With FEATURES_OK: VERSION_1 accepted (status_write refuses
 * FEATURES_OK otherwise) and each queue's EVENT_IDX / INDIRECT_DESC flags
 * as negotiated (status_write sets them so). Returns 0 or -EBADMSG. */
static int check_features(struct vmm_virtio_dev *vd, struct ut_err *err)
{
	uint64_t extra = vd->guest_features & ~vd->host_features;

	if ((vd->status & VIRTIO_STATUS_DRIVER_OK) && !(vd->status & VIRTIO_STATUS_FEATURES_OK))
		return ut_errf(err, -EBADMSG, "device '%s': status 0x%x has DRIVER_OK without "
			       "FEATURES_OK (this device is modern only: it never runs without "
			       "negotiated features)", vd->dev.id, vd->status);

	if ((vd->status & (VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK)) && extra)
		return ut_errf(err, -EBADMSG, "device '%s': the driver's features 0x%llx include 0x%llx, "
			       "which this device does not offer (it offers 0x%llx)", vd->dev.id,
			       (unsigned long long)vd->guest_features, (unsigned long long)extra,
			       (unsigned long long)vd->host_features);
	if (!(vd->status & VIRTIO_STATUS_FEATURES_OK))
		return 0;
	if (!vmm_virtio_has(vd, VIRTIO_F_VERSION_1))
		return ut_errf(err, -EBADMSG, "device '%s': FEATURES_OK without VIRTIO_F_VERSION_1 "
			       "(features 0x%llx; this device is modern only)", vd->dev.id,
			       (unsigned long long)vd->guest_features);
	for (int q = 0; q < vd->nvqs; q++) {
		const struct vmm_vq *vq = &vd->vqs[q];

		if (vq->event_idx != vmm_virtio_has(vd, VIRTIO_F_EVENT_IDX) ||
		    vq->indirect != vmm_virtio_has(vd, VIRTIO_F_INDIRECT_DESC))
			return ut_errf(err, -EBADMSG, "device '%s': queue %d has EVENT_IDX %s and "
				       "INDIRECT_DESC %s, unlike the features 0x%llx", vd->dev.id, q,
				       vq->event_idx ? "on" : "off", vq->indirect ? "on" : "off",
				       (unsigned long long)vd->guest_features);
	}
	return 0;
}

int vmm_virtio_dev_restore(struct vmm_device *dev, const uint8_t *rec, size_t len, struct ut_err *err)
{
	struct vmm_virtio_dev *vd = (struct vmm_virtio_dev *)dev;
	struct ut_rd rd;
	uint8_t cfg[256];
	uint32_t ver = 0, nvqs, nvec;
	int r = 0;

	ut_rd_init(&rd, rec, len);
	if (ut_rd_le32(&rd, &ver) || ver != VIRTIO_STATE_VERSION)
		return ut_errf(err, -EPROTO, "device '%s': state record version %u not supported",
			       dev->id, ver);
	pthread_mutex_lock(&vd->lock);
	if (ut_rd_get(&rd, cfg, sizeof(cfg)) || ut_rd_le64(&rd, &vd->guest_features) ||
	    ut_rd_le32(&rd, &vd->dfsel) || ut_rd_le32(&rd, &vd->gfsel) ||
	    ut_rd_get(&rd, &vd->status, 1) || ut_rd_get(&rd, &vd->isr, 1) ||
	    ut_rd_get(&rd, &vd->config_gen, 1) || ut_rd_le16(&rd, &vd->queue_sel) ||
	    ut_rd_le16(&rd, &vd->config_vector) || ut_rd_le32(&rd, &nvqs) ||
	    nvqs != (uint32_t)vd->nvqs) {
		r = ut_errf(err, -EBADMSG, "device '%s': state record malformed", dev->id);
		goto out;
	}
	for (int q = 0; q < vd->nvqs; q++) {
		struct vmm_vq *vq = &vd->vqs[q];

		if (vmm_vq_restore(vq, &rd, &vd->vm->mem)) {
			r = ut_errf(err, -EBADMSG, "device '%s': queue %d state invalid%s%s", dev->id, q,
				    vq->why[0] ? ": " : "", vq->why);
			goto out;
		}
	}
	r = check_features(vd, err);
	if (r)
		goto out;
	if (ut_rd_le32(&rd, &nvec) || nvec != (uint32_t)vd->nvec) {
		r = ut_errf(err, -EBADMSG, "device '%s': MSI-X state malformed", dev->id);
		goto out;
	}
	for (int i = 0; i < vd->nvec; i++) {
		struct vmm_msix_vec *v = &vd->msix[i];
		uint32_t ctrl;

		if (ut_rd_le32(&rd, &v->addr_lo) || ut_rd_le32(&rd, &v->addr_hi) ||
		    ut_rd_le32(&rd, &v->data) || ut_rd_le32(&rd, &ctrl)) {
			r = ut_errf(err, -EBADMSG, "device '%s': MSI-X state truncated", dev->id);
			goto out;
		}
		v->ctrl = ctrl & MSIX_CTRL_MASKED;
		v->pending = ctrl >> 31;
		if (v->gsi >= 0)
			vmm_irq_msi_update(vd->vm, (uint32_t)v->gsi, msix_addr(v), v->data);
	}
	if (ut_rd_get(&rd, vd->config, vd->vops->config_len)) {
		r = ut_errf(err, -EBADMSG, "device '%s': config truncated", dev->id);
		goto out;
	}
	/* config space: keep our BAR/cap layout, take the guest-writable bits */
	for (int i = 0; i < 256; i++)
		vd->pci.cfg[i] = (uint8_t)((vd->pci.cfg[i] & ~vd->pci.wmask[i]) |
					   (cfg[i] & vd->pci.wmask[i]));
	vd->msix_enabled = vmm_pci_get16(&vd->pci, CAP_MSIX + 2) & MSIX_ENABLE;
	vd->msix_masked = vmm_pci_get16(&vd->pci, CAP_MSIX + 2) & MSIX_FMASK;
	/* drive INTx as the record says: the line (and the status bit, which is
	 * not guest-writable) follow a pending ISR unless MSI-X is on */
	vd->intx_level = -1;
	intx_set(vd, vd->isr && !vd->msix_enabled);
	if (vd->vops->restore)
		r = vd->vops->restore(vd, &rd, err);
	/* A kick that was pending in the saving process is gone: look at every
	 * live queue once, on the loop thread, as if the driver had kicked. */
	if (!r && (vd->status & VIRTIO_STATUS_DRIVER_OK)) {
		uint64_t one = 1;

		for (int q = 0; q < vd->nvqs; q++)
			if (vd->vqs[q].enabled && write(vd->kick_fd[q], &one, sizeof(one)) < 0)
				r = ut_errf_sys(err, -errno, "device '%s': queue %d kick", dev->id, q);
	}
out:
	pthread_mutex_unlock(&vd->lock);
	/* BAR0 goes where the restored config space says (PCI lock: not under ours) */
	if (!r)
		vmm_pci_sync_bars(vd->vm, &vd->pci);
	return r;
}

void vmm_virtio_dev_exit(struct vmm_device *dev)
{
	struct vmm_virtio_dev *vd = (struct vmm_virtio_dev *)dev;

	pthread_mutex_lock(&vd->lock);
	if (vd->vops->reset)
		vd->vops->reset(vd);
	pthread_mutex_unlock(&vd->lock);
	vmm_pci_remove(vd->vm, &vd->pci);
	for (int q = 0; q < vd->nvqs; q++) {
		if (vd->kick_addr[q])
			ioeventfd(vd, q, vd->kick_addr[q], false);
		if (vd->kick_fd[q] >= 0) {
			vmm_loop_del(&vd->vm->loop, vd->kick_fd[q]);
			close(vd->kick_fd[q]);
		}
	}
	for (int i = 0; i < vd->nvec; i++) {
		if (vd->msix[i].fd >= 0) {
			vmm_irq_irqfd(vd->vm, vd->msix[i].fd, (uint32_t)vd->msix[i].gsi, false);
			close(vd->msix[i].fd);
		}
	}
	if (vd->vops->exit)
		vd->vops->exit(vd);
	pthread_mutex_destroy(&vd->lock);
	free(vd);
}
