/* core/dev/legacy.c — the two one-port devices that end a run:
 *   debug-exit (port 0x501): a write of V ends the run with status V & 0xff;
 *   i8042 (ports 0x60/0x64): the keyboard controller's reset command (0xFE to
 *   port 0x64), which Linux uses for reboot, ends the run with status 0.
 *   acpi-sleep (port 0x600, the FADT's sleep control register): a write with
 *   SLP_EN set (an S5 request: poweroff) ends the run with status 0.
 * None has state beyond the last command byte, so save/restore are trivial
 * records (version only).
 */
#include "core/device.h"
#include "core/layout.h"
#include "core/vm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEGACY_STATE_VERSION 1
#define I8042_CMD_RESET      0xFE
#define I8042_STATUS_SYS     0x04   /* system flag: POST passed */
#define ACPI_SLP_EN          0x20

struct legacy {
	struct vmm_device dev;
	uint8_t last_cmd;
};

static void debug_exit_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool wr)
{
	struct legacy *l = opaque;

	(void)off;
	if (!wr) {
		memset(data, 0, len);
		return;
	}
	vmm_vm_request_exit(l->dev.vm, VMM_EXIT_GUEST, (int)(vmm_le_get(data, len) & 0xff));
}

static void i8042_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool wr)
{
	struct legacy *l = opaque;

	if (!wr) {
		/* status: no data in either buffer; data port: nothing to read */
		memset(data, 0, len);
		if (off == VMM_PORT_I8042_CMD - VMM_PORT_I8042_DATA)
			data[0] = I8042_STATUS_SYS;
		return;
	}
	if (off == VMM_PORT_I8042_CMD - VMM_PORT_I8042_DATA) {
		l->last_cmd = data[0];
		if (data[0] == I8042_CMD_RESET)
			vmm_vm_request_exit(l->dev.vm, VMM_EXIT_RESET, 0);
	}
}

static void acpi_sleep_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool wr)
{
	struct legacy *l = opaque;

	if (!wr) {
		memset(data, 0, len);
		return;
	}
	if (off == 0) {
		l->last_cmd = data[0];
		if (data[0] & ACPI_SLP_EN)
			vmm_vm_request_exit(l->dev.vm, VMM_EXIT_POWEROFF, 0);
	}
}

static int legacy_init(struct vmm_vm *vm, const char *opts, const struct vmm_device_ops *ops,
		       uint64_t port, uint64_t len, vmm_io_fn fn, struct ut_err *err)
{
	static const char *const known[] = { NULL };
	struct legacy *l;
	int r;

	r = vmm_opt_check(ops->type, opts, known, err);
	if (r)
		return r;
	l = calloc(1, sizeof(*l));
	if (!l)
		return ut_errf(err, -ENOMEM, "out of memory for device '%s'", ops->type);
	l->dev.ops = ops;
	l->dev.priv = l;
	snprintf(l->dev.id, sizeof(l->dev.id), "%s", ops->type);
	r = vmm_bus_register(&vm->pio, port, len, fn, l, err);
	if (r)
		goto out;
	r = vmm_vm_add_device(vm, &l->dev);
	if (r) {
		vmm_bus_unregister(&vm->pio, port, l);
		ut_errf(err, r, "too many devices");
		goto out;
	}
	return 0;
out:
	free(l);
	return r;
}

static void legacy_reset(struct vmm_device *dev)
{
	((struct legacy *)dev->priv)->last_cmd = 0;
}

static int legacy_save(struct vmm_device *dev, struct ut_buf *out)
{
	struct legacy *l = dev->priv;
	int r = ut_buf_add_le32(out, LEGACY_STATE_VERSION);

	return r ? r : ut_buf_add(out, &l->last_cmd, 1);
}

static int legacy_restore(struct vmm_device *dev, const uint8_t *rec, size_t len, struct ut_err *err)
{
	struct legacy *l = dev->priv;
	struct ut_rd rd;
	uint32_t ver;

	ut_rd_init(&rd, rec, len);
	if (ut_rd_le32(&rd, &ver) || ver != LEGACY_STATE_VERSION)
		return ut_errf(err, -EPROTO, "device '%s': state record version %u not supported",
			       dev->id, ver);
	if (ut_rd_get(&rd, &l->last_cmd, 1))
		return ut_errf(err, -EBADMSG, "device '%s': state record truncated", dev->id);
	return 0;
}

static void legacy_exit(struct vmm_device *dev)
{
	free(dev->priv);
}

static int debug_exit_init(struct vmm_vm *vm, const char *opts, struct ut_err *err);
static int i8042_init(struct vmm_vm *vm, const char *opts, struct ut_err *err);
static int acpi_sleep_init(struct vmm_vm *vm, const char *opts, struct ut_err *err);

const struct vmm_device_ops vmm_debug_exit_ops = {
	.type = "debug-exit", .init = debug_exit_init, .reset = legacy_reset,
	.save = legacy_save, .restore = legacy_restore, .exit = legacy_exit,
};

const struct vmm_device_ops vmm_i8042_ops = {
	.type = "i8042", .init = i8042_init, .reset = legacy_reset,
	.save = legacy_save, .restore = legacy_restore, .exit = legacy_exit,
};

const struct vmm_device_ops vmm_acpi_sleep_ops = {
	.type = "acpi-sleep", .init = acpi_sleep_init, .reset = legacy_reset,
	.save = legacy_save, .restore = legacy_restore, .exit = legacy_exit,
};

static int acpi_sleep_init(struct vmm_vm *vm, const char *opts, struct ut_err *err)
{
	return legacy_init(vm, opts, &vmm_acpi_sleep_ops, VMM_PORT_ACPI_SLEEP, 2, acpi_sleep_io, err);
}

static int debug_exit_init(struct vmm_vm *vm, const char *opts, struct ut_err *err)
{
	return legacy_init(vm, opts, &vmm_debug_exit_ops, VMM_PORT_DEBUG_EXIT, 4, debug_exit_io, err);
}

static int i8042_init(struct vmm_vm *vm, const char *opts, struct ut_err *err)
{
	return legacy_init(vm, opts, &vmm_i8042_ops, VMM_PORT_I8042_DATA,
			   VMM_PORT_I8042_CMD - VMM_PORT_I8042_DATA + 1, i8042_io, err);
}
