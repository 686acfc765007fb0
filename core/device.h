/* core/device.h — the device model: every device is an ops table and one row in
 * vmm_device_types[] (core/devices.c). Adding a device = one file + one row.
 *
 * Life cycle:  init ──> (reset)* ──> save/restore* ──> exit
 *   init(vm, opts)   create the device from an option string "k=v,k=v" (like
 *                    QEMU's -device), register its I/O ranges / PCI function,
 *                    and add it to the VM with vmm_vm_add_device().
 *   reset            back to power-on state (guest reboot, virtio reset).
 *   save             append the device's state record to a buffer. All vCPUs
 *                    are paused and in-flight I/O drained by the caller.
 *   restore          load a record written by save of the same type; refuse
 *                    a record of another version with a clear message.
 *   exit             free everything.
 *
 * State records are versioned: each device writes its own version number
 * first (ut_buf_add_le32), then its fields little-endian, so snapshot, clone
 * and migration share one path (core/state.c of the state issue).
 */
#ifndef VMM_DEVICE_H
#define VMM_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"
#include "util/err.h"

struct vmm_vm;
struct vmm_device;

struct vmm_device_ops {
	const char *type;    /* "serial", "virtio-blk", ... */
	int (*init)(struct vmm_vm *vm, const char *opts, struct ut_err *err);
	void (*reset)(struct vmm_device *dev);
	int (*save)(struct vmm_device *dev, struct ut_buf *out);
	int (*restore)(struct vmm_device *dev, const uint8_t *rec, size_t len, struct ut_err *err);
	void (*exit)(struct vmm_device *dev);
};

struct vmm_device {
	const struct vmm_device_ops *ops;
	char id[32];          /* instance name: "serial0", "virtio-blk1", ... */
	struct vmm_vm *vm;
	void *priv;           /* the device's own state */
};

extern const struct vmm_device_ops *const vmm_device_types[];

/* Create a device of @type with @opts on @vm. Returns 0 or -errno with @err
 * ("device 'virtio-blk': unknown option 'foo'"). */
int vmm_device_create(struct vmm_vm *vm, const char *type, const char *opts, struct ut_err *err);

/* Option-string helpers for init functions. vmm_opt_get copies the value of
 * @key from "k=v,k=v" into @val (NUL-terminated) and returns 1, 0 if absent,
 * -EINVAL if too long. vmm_opt_check returns 0 when every key in @opts is one
 * of the NULL-terminated @known, else -EINVAL with @err naming the key. */
int vmm_opt_get(const char *opts, const char *key, char *val, size_t size);
int vmm_opt_check(const char *type, const char *opts, const char *const *known, struct ut_err *err);

#endif
