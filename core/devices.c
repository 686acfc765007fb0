/* core/devices.c — the device type table and option-string helpers. */
#include "core/device.h"
#include "core/vm.h"

#include <errno.h>
#include <string.h>

extern const struct vmm_device_ops vmm_serial_ops;
extern const struct vmm_device_ops vmm_i8042_ops;
extern const struct vmm_device_ops vmm_debug_exit_ops;
extern const struct vmm_device_ops vmm_acpi_sleep_ops;
extern const struct vmm_device_ops vmm_virtio_blk_ops;
extern const struct vmm_device_ops vmm_virtio_rng_ops;

/* One row per device type. */
const struct vmm_device_ops *const vmm_device_types[] = {
	&vmm_serial_ops,
	&vmm_i8042_ops,
	&vmm_debug_exit_ops,
	&vmm_acpi_sleep_ops,
	&vmm_virtio_blk_ops,
	&vmm_virtio_rng_ops,
	NULL,
};

int vmm_device_create(struct vmm_vm *vm, const char *type, const char *opts, struct ut_err *err)
{
	for (int i = 0; vmm_device_types[i]; i++) {
		const struct vmm_device_ops *ops = vmm_device_types[i];

		if (strcmp(ops->type, type))
			continue;
		return ops->init(vm, opts ? opts : "", err);
	}
	return ut_errf(err, -ENOENT, "unknown device type '%s'", type);
}

/* Find @key in "k=v,k=v"; set val and vlen to its value. */
static int opt_find(const char *opts, const char *key, const char **val, size_t *vlen)
{
	size_t klen = strlen(key);
	const char *p = opts;

	while (p && *p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (len >= klen && !strncmp(p, key, klen) && (len == klen || p[klen] == '=')) {
			*val = len == klen ? p + len : p + klen + 1;
			*vlen = len == klen ? 0 : len - klen - 1;
			return 1;
		}
		p = end ? end + 1 : NULL;
	}
	return 0;
}

int vmm_opt_get(const char *opts, const char *key, char *val, size_t size)
{
	const char *v;
	size_t n;

	if (!opts || !opt_find(opts, key, &v, &n))
		return 0;
	if (n >= size)
		return -EINVAL;
	memcpy(val, v, n);
	val[n] = '\0';
	return 1;
}

int vmm_opt_check(const char *type, const char *opts, const char *const *known, struct ut_err *err)
{
	const char *p = opts;

	while (p && *p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		size_t klen = eq ? (size_t)(eq - p) : len;
		int ok = 0;

		for (int i = 0; known[i]; i++)
			if (strlen(known[i]) == klen && !strncmp(known[i], p, klen))
				ok = 1;
		if (!ok && klen)
			return ut_errf(err, -EINVAL, "device '%s': unknown option '%.*s'", type,
				       (int)klen, p);
		p = end ? end + 1 : NULL;
	}
	return 0;
}
