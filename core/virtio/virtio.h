/* core/virtio/virtio.h — virtio devices over the virtio-pci modern transport.
 *
 * A device (blk, rng, ...) fills a struct vmm_virtio_ops and calls
 * vmm_virtio_init(); the transport (core/virtio/pci.c) does the PCI function,
 * capabilities, feature negotiation, queues, MSI-X through irqfd (INTx when
 * the guest has not enabled MSI-X) and queue kicks through ioeventfd.
 *
 * Locking: vd->lock guards transport and queue state. Every device callback
 * runs with it held. Kicks are handled on the VM's event loop thread.
 *
 * Device status:  0 ──ACK|DRIVER──> negotiating ──FEATURES_OK──> configured
 *                 ──DRIVER_OK──> live ──(write 0)──> 0      (vops->reset on 0)
 *                 any ──queue rule broken──> NEEDS_RESET (queue stops)
 *                 DRIVER_OK written without FEATURES_OK in force (never set,
 *                 refused in the same write, or cleared) ──> DRIVER_OK
 *                 clear, NEEDS_RESET: no queue runs until FEATURES_OK
 *                 and DRIVER_OK are set again (a reset, as the driver must)
 */
#ifndef VMM_VIRTIO_H
#define VMM_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/device.h"
#include "core/pci.h"
#include "core/virtio/queue.h"

#define VMM_VIRTIO_MAX_VQS     8
#define VMM_VIRTIO_CONFIG_MAX  256

#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX     29
#define VIRTIO_F_VERSION_1     32

#define VIRTIO_STATUS_ACK         0x01
#define VIRTIO_STATUS_DRIVER      0x02
#define VIRTIO_STATUS_DRIVER_OK   0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED      0x80

#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_RNG   4

struct vmm_virtio_dev;

struct vmm_virtio_ops {
	uint16_t device_id;       /* VIRTIO_ID_* */
	uint32_t class_code;      /* PCI class (base << 16 | sub << 8 | prog) */
	int nvqs;
	uint16_t queue_size;
	uint32_t config_len;      /* bytes of device config space */
	uint64_t features;        /* device-specific features offered */
	/* A queue was kicked (loop thread, lock held). */
	void (*notify)(struct vmm_virtio_dev *vd, int q);
	/* Device reset: complete or drop in-flight requests (lock held). */
	void (*reset)(struct vmm_virtio_dev *vd);
	/* Device config written by the driver (lock held); may be NULL. */
	void (*config_write)(struct vmm_virtio_dev *vd, uint32_t off, uint32_t len);
	/* Before a save: finish every request in flight, so the queues' used
	 * indices are final before they are recorded (lock held); may be NULL. */
	int (*quiesce)(struct vmm_virtio_dev *vd);
	/* Device-specific state after the transport's (lock held). */
	int (*save)(struct vmm_virtio_dev *vd, struct ut_buf *out);
	int (*restore)(struct vmm_virtio_dev *vd, struct ut_rd *rd, struct ut_err *err);
	/* Free device-specific state (lock not held). */
	void (*exit)(struct vmm_virtio_dev *vd);
};

struct vmm_msix_vec {
	uint32_t addr_lo, addr_hi, data, ctrl;
	int gsi;                  /* -1 until first use */
	int fd;                   /* irqfd eventfd, -1 until first use */
	bool pending;
};

struct vmm_virtio_dev {
	struct vmm_device dev;    /* first: generic device (ops = the virtio device's) */
	const struct vmm_virtio_ops *vops;
	struct vmm_vm *vm;
	struct vmm_pci_dev pci;
	pthread_mutex_t lock;

	uint8_t config[VMM_VIRTIO_CONFIG_MAX];
	uint64_t host_features, guest_features;
	uint32_t dfsel, gfsel;
	uint8_t status, isr, config_gen;
	uint16_t queue_sel, config_vector;
	int nvqs;
	struct vmm_vq vqs[VMM_VIRTIO_MAX_VQS];
	int kick_fd[VMM_VIRTIO_MAX_VQS];
	uint64_t kick_addr[VMM_VIRTIO_MAX_VQS];   /* registered ioeventfd address, 0 none */

	int nvec;
	struct vmm_msix_vec msix[VMM_VIRTIO_MAX_VQS + 1];
	bool msix_enabled, msix_masked;
	int intx_level;
	void *priv;               /* the device's own state */
};

/* Set up the transport for @vd (allocated by the device, zeroed, with dev.ops,
 * dev.id and priv set), add the PCI function and register the device with the
 * VM. Returns 0 or -errno. On failure nothing stays registered. */
int vmm_virtio_init(struct vmm_vm *vm, struct vmm_virtio_dev *vd,
		    const struct vmm_virtio_ops *vops, struct ut_err *err);

/* After pushing used entries on queue @q: interrupt the driver if it wants
 * one (lock held). */
void vmm_virtio_interrupt(struct vmm_virtio_dev *vd, int q);

/* A queue broke its rules: set NEEDS_RESET and tell the driver (lock held). */
void vmm_virtio_fail(struct vmm_virtio_dev *vd, int q);

/* The device changed its configuration space (vd->config): move
 * config_generation and, when the driver is running (DRIVER_OK), raise the
 * configuration change interrupt, as QEMU's virtio_notify_config (lock
 * held, or the device not yet running: at restore). */
void vmm_virtio_config_changed(struct vmm_virtio_dev *vd);

/* Transport parts of the generic device ops; the device's own ops tables
 * point at these (reset/save/restore/exit call back into vops). */
void vmm_virtio_dev_reset(struct vmm_device *dev);
int vmm_virtio_dev_save(struct vmm_device *dev, struct ut_buf *out);
int vmm_virtio_dev_restore(struct vmm_device *dev, const uint8_t *rec, size_t len, struct ut_err *err);
void vmm_virtio_dev_exit(struct vmm_device *dev);

/* Has the driver accepted feature @bit? */
static inline bool vmm_virtio_has(const struct vmm_virtio_dev *vd, int bit)
{
	return vd->guest_features & (1ULL << bit);
}

#endif
