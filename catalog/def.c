/* catalog/def.c — VM definitions in memory: checks, ids, defaults, freeing.
 * No SQL here. */
#include "catalog/catalog.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static const char *const state_names[CAT_VM_STATE_COUNT] = {
	"stopped", "starting", "running", "paused", "stopping", "crashed",
};

const char *cat_vm_state_name(enum cat_vm_state s)
{
	if ((unsigned)s >= CAT_VM_STATE_COUNT)
		return "?";
	return state_names[s];
}

int cat_vm_state_parse(const char *s, enum cat_vm_state *out)
{
	for (int i = 0; i < CAT_VM_STATE_COUNT; i++) {
		if (!strcmp(s, state_names[i])) {
			*out = (enum cat_vm_state)i;
			return 0;
		}
	}
	return -EINVAL;
}

int cat_name_check(const char *name, struct ut_err *err)
{
	size_t n;

	if (!name || !*name)
		return ut_errf(err, -EINVAL, "a VM name cannot be empty");
	n = strlen(name);
	if (n > CAT_NAME_MAX)
		return ut_errf(err, -EINVAL, "VM name '%.20s...' is too long (%zu bytes, at most %d)",
			       name, n, CAT_NAME_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c < 0x20 || c == 0x7f)
			return ut_errf(err, -EINVAL, "VM name contains a control character "
				       "(0x%02x at byte %zu)", c, i);
		if (c == '/')
			return ut_errf(err, -EINVAL, "VM name '%s' contains '/'", name);
		if (!isalnum(c) && !(i > 0 && (c == '.' || c == '_' || c == '+' || c == '-')))
			return ut_errf(err, -EINVAL, "VM name '%s' has '%c' at position %zu: use "
				       "letters, digits and . _ + - (starting with a letter or digit)",
				       name, c >= 0x80 ? '?' : c, i + 1);
	}
	return 0;
}

int cat_uuid_parse(const char *s, char out[CAT_UUID_LEN + 1])
{
	char hex[33];
	size_t n = 0;

	for (; *s; s++) {
		if (*s == '-')
			continue;
		if (!isxdigit((unsigned char)*s) || n == 32)
			return -EINVAL;
		hex[n++] = (char)tolower((unsigned char)*s);
	}
	if (n != 32)
		return -EINVAL;
	hex[32] = '\0';
	snprintf(out, CAT_UUID_LEN + 1, "%.8s-%.4s-%.4s-%.4s-%.12s",
		 hex, hex + 8, hex + 12, hex + 16, hex + 20);
	return 0;
}

static int random_bytes(void *p, size_t n)
{
	ssize_t r = getrandom(p, n, 0);

	if (r < 0)
		return -errno;
	return (size_t)r == n ? 0 : -EIO;
}

int cat_uuid_generate(char out[CAT_UUID_LEN + 1])
{
	unsigned char b[16];
	int ret = random_bytes(b, sizeof(b));

	if (ret < 0)
		return ret;
	b[6] = (b[6] & 0x0f) | 0x40;   /* version 4 */
	b[8] = (b[8] & 0x3f) | 0x80;   /* RFC 4122 variant */
	snprintf(out, CAT_UUID_LEN + 1,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
		 b[11], b[12], b[13], b[14], b[15]);
	return 0;
}

int cat_mac_parse(const char *s, char out[18])
{
	unsigned v[6];
	char tail;

	if (strlen(s) != 17 ||
	    sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		   &tail) != 6)
		return -EINVAL;
	for (int i = 0; i < 17; i++)
		if ((i % 3 == 2) ? s[i] != ':' : !isxdigit((unsigned char)s[i]))
			return -EINVAL;
	if (v[0] & 1)
		return -EINVAL;     /* multicast */
	snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x",
		 v[0] & 0xffu, v[1] & 0xffu, v[2] & 0xffu, v[3] & 0xffu, v[4] & 0xffu, v[5] & 0xffu);
	return 0;
}

int cat_mac_generate(char out[18])
{
	unsigned char b[3];
	int ret = random_bytes(b, sizeof(b));

	if (ret < 0)
		return ret;
	snprintf(out, 18, "52:54:00:%02x:%02x:%02x", b[0], b[1], b[2]);
	return 0;
}

void cat_image_clear(struct cat_image *im)
{
	free(im->path);
	free(im->format);
	memset(im, 0, sizeof(*im));
}

void cat_disk_clear(struct cat_disk *d)
{
	free(d->target);
	for (size_t i = 0; i < d->n_chain; i++)
		cat_image_clear(&d->chain[i]);
	free(d->chain);
	memset(d, 0, sizeof(*d));
}

void cat_nic_clear(struct cat_nic *n)
{
	free(n->type);
	free(n->tap);
	free(n->bridge);
	memset(n, 0, sizeof(*n));
}

void cat_vm_clear(struct cat_vm *vm)
{
	if (!vm)
		return;
	free(vm->name);
	free(vm->kernel);
	free(vm->initrd);
	free(vm->cmdline);
	free(vm->on_poweroff);
	free(vm->on_reboot);
	free(vm->ctl_socket);
	for (size_t i = 0; i < vm->n_disks; i++)
		cat_disk_clear(&vm->disks[i]);
	free(vm->disks);
	for (size_t i = 0; i < vm->n_nics; i++)
		cat_nic_clear(&vm->nics[i]);
	free(vm->nics);
	memset(vm, 0, sizeof(*vm));
}

int cat_vm_init_defaults(struct cat_vm *vm, struct ut_err *err)
{
	int ret;

	memset(vm, 0, sizeof(*vm));
	ret = cat_uuid_generate(vm->uuid);
	if (ret == 0)
		ret = cat_uuid_generate(vm->genid);
	if (ret < 0)
		return ut_errf_sys(err, ret, "unable to generate a UUID");
	vm->vcpus = 1;
	vm->memory = 256ULL << 20;
	vm->serial = 1;
	vm->state = CAT_VM_STOPPED;
	vm->on_poweroff = strdup("destroy");
	vm->on_reboot = strdup("restart");
	if (!vm->on_poweroff || !vm->on_reboot) {
		cat_vm_clear(vm);
		return ut_errf(err, -ENOMEM, "out of memory");
	}
	return 0;
}

static char *xstrdup(const char *s, int *oom)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*oom = 1;
	return d;
}

const char *const cat_werror_names[3] = { "enospc", "stop", "report" };

int cat_vm_add_disk(struct cat_vm *vm, const char *path, const char *format,
		    const char *target, int readonly, int nocache, int threads, struct ut_err *err)
{
	struct cat_disk *d, *arr;
	int oom = 0;

	arr = realloc(vm->disks, (vm->n_disks + 1) * sizeof(*arr));
	if (!arr)
		return ut_errf(err, -ENOMEM, "out of memory");
	vm->disks = arr;
	d = &arr[vm->n_disks];
	memset(d, 0, sizeof(*d));
	d->chain = calloc(1, sizeof(*d->chain));
	if (!d->chain)
		return ut_errf(err, -ENOMEM, "out of memory");
	d->n_chain = 1;
	vm->n_disks++;
	d->target = xstrdup(target, &oom);
	d->readonly = !!readonly;
	d->nocache = !!nocache;
	d->threads = !!threads;
	d->chain[0].path = xstrdup(path, &oom);
	d->chain[0].format = xstrdup(format, &oom);
	d->chain[0].virtual_size = -1;
	return oom ? ut_errf(err, -ENOMEM, "out of memory") : 0;
}

int cat_vm_add_nic(struct cat_vm *vm, const char *mac, const char *type,
		   const char *tap, const char *bridge, struct ut_err *err)
{
	struct cat_nic *n, *arr;
	int oom = 0;

	arr = realloc(vm->nics, (vm->n_nics + 1) * sizeof(*arr));
	if (!arr)
		return ut_errf(err, -ENOMEM, "out of memory");
	vm->nics = arr;
	n = &arr[vm->n_nics++];
	memset(n, 0, sizeof(*n));
	if (mac && cat_mac_parse(mac, n->mac) < 0)
		return ut_errf(err, -EINVAL, "invalid MAC address '%s' (want xx:xx:xx:xx:xx:xx, "
			       "not multicast)", mac);
	if (!mac && cat_mac_generate(n->mac) < 0)
		return ut_errf(err, -EIO, "unable to generate a MAC address");
	n->mac_generated = !mac;
	n->type = xstrdup(type ? type : "ethernet", &oom);
	n->tap = xstrdup(tap, &oom);
	n->bridge = xstrdup(bridge, &oom);
	return oom ? ut_errf(err, -ENOMEM, "out of memory") : 0;
}

static int target_ok(const char *t)
{
	if (!t || strncmp(t, "vd", 2) || !t[2] || strlen(t) > 8)
		return 0;
	for (t += 2; *t; t++)
		if (*t < 'a' || *t > 'z')
			return 0;
	return 1;
}

static int ifname_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 15)
		return 0;
	for (; *s; s++)
		if (*s <= ' ' || *s == '/' || *s == ':' || *s == 0x7f)
			return 0;
	return 1;
}

static int action_ok(const char *s)
{
	return s && (!strcmp(s, "destroy") || !strcmp(s, "restart"));
}

int cat_vm_check(const struct cat_vm *vm, struct ut_err *err)
{
	char tmp[CAT_UUID_LEN + 1];
	int ret = cat_name_check(vm->name, err);

	if (ret < 0)
		return ret;
	if (cat_uuid_parse(vm->uuid, tmp) < 0 || strcmp(tmp, vm->uuid))
		return ut_errf(err, -EINVAL, "invalid uuid '%s'", vm->uuid);
	if (vm->genid[0] && (cat_uuid_parse(vm->genid, tmp) < 0 || strcmp(tmp, vm->genid)))
		return ut_errf(err, -EINVAL, "invalid genid '%s'", vm->genid);
	if (vm->vcpus < 1 || vm->vcpus > CAT_VCPUS_MAX)
		return ut_errf(err, -EINVAL, "vcpus must be between 1 and %d, not %u",
			       CAT_VCPUS_MAX, vm->vcpus);
	if (vm->memory < (1ULL << 20) || vm->memory > (1ULL << 50))
		return ut_errf(err, -EINVAL, "memory must be between 1 MiB and 1 PiB, not %llu bytes",
			       (unsigned long long)vm->memory);
	if (vm->cur_memory > vm->memory)
		return ut_errf(err, -EINVAL, "current memory (%llu bytes) is larger than memory "
			       "(%llu bytes)", (unsigned long long)vm->cur_memory,
			       (unsigned long long)vm->memory);
	if (!vm->kernel || vm->kernel[0] != '/')
		return ut_errf(err, -EINVAL, "the kernel must be given as an absolute path");
	if (vm->initrd && vm->initrd[0] != '/')
		return ut_errf(err, -EINVAL, "the initrd must be given as an absolute path");
	if (!action_ok(vm->on_poweroff))
		return ut_errf(err, -EINVAL, "on_poweroff must be destroy or restart");
	if (!action_ok(vm->on_reboot))
		return ut_errf(err, -EINVAL, "on_reboot must be destroy or restart");
	for (size_t i = 0; i < vm->n_disks; i++) {
		const struct cat_disk *d = &vm->disks[i];

		if (!target_ok(d->target))
			return ut_errf(err, -EINVAL, "disk %zu: target '%s' is not vd followed by "
				       "letters (vda, vdb, ...)", i + 1, d->target ? d->target : "");
		for (size_t j = 0; j < i; j++)
			if (!strcmp(vm->disks[j].target, d->target))
				return ut_errf(err, -EINVAL, "disks %zu and %zu both use target '%s'",
					       j + 1, i + 1, d->target);
		for (size_t k = 0; k < d->n_chain; k++) {
			const struct cat_image *im = &d->chain[k];

			if (!im->path || im->path[0] != '/')
				return ut_errf(err, -EINVAL, "disk %s: image path '%s' is not "
					       "absolute", d->target, im->path ? im->path : "");
			if (im->format && strcmp(im->format, "raw") && strcmp(im->format, "qcow2"))
				return ut_errf(err, -EINVAL, "disk %s: format '%s' is not raw or "
					       "qcow2", d->target, im->format);
			if (k + 1 < d->n_chain && im->format && !strcmp(im->format, "raw"))
				return ut_errf(err, -EINVAL, "disk %s: raw image '%s' cannot have a "
					       "backing image", d->target, im->path);
			for (size_t j = 0; j < k; j++)
				if (!strcmp(d->chain[j].path, im->path))
					return ut_errf(err, -EINVAL, "disk %s: backing chain loops "
						       "at '%s'", d->target, im->path);
		}
	}
	for (size_t i = 0; i < vm->n_nics; i++) {
		const struct cat_nic *n = &vm->nics[i];

		if (cat_mac_parse(n->mac, tmp) < 0)
			return ut_errf(err, -EINVAL, "interface %zu: invalid MAC '%s'", i + 1, n->mac);
		for (size_t j = 0; j < i; j++)
			if (!strcmp(vm->nics[j].mac, n->mac))
				return ut_errf(err, -EINVAL, "interfaces %zu and %zu both use MAC %s",
					       j + 1, i + 1, n->mac);
		if (!n->type || (strcmp(n->type, "ethernet") && strcmp(n->type, "bridge")))
			return ut_errf(err, -EINVAL, "interface %zu: type must be ethernet or bridge",
				       i + 1);
		if (!strcmp(n->type, "bridge") && (!n->bridge || !ifname_ok(n->bridge)))
			return ut_errf(err, -EINVAL, "interface %zu: a bridge interface needs a "
				       "valid bridge name", i + 1);
		if (n->tap && !ifname_ok(n->tap))
			return ut_errf(err, -EINVAL, "interface %zu: invalid tap device name '%s'",
				       i + 1, n->tap);
	}
	return 0;
}

void cat_strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}
