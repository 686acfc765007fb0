/* catalog/xml-read.c — import a libvirt domain document (libxml2).
 *
 * Supported (everything else is "unsupported", named with its path and line):
 *   domain[@type=kvm]: name, uuid, genid, memory, currentMemory (with units),
 *   vcpu, os (type hvm [arch x86_64], kernel, initrd, cmdline),
 *   on_poweroff, on_reboot (destroy|restart),
 *   devices: disk (type file, device disk; driver type raw|qcow2 [cache
 *   none|writeback: kept; other cache modes are taken as writeback] [io
 *   threads: kept; io_uring and native are taken as io_uring] [error_policy
 *   stop|report|enospace, rerror_policy stop|report: kept; "ignore", which
 *   hides errors from the guest, is unsupported], source
 *   file, target dev vdX [bus virtio], readonly, backingStore chain),
 *   interface (type ethernet|bridge; mac, target dev, source bridge,
 *   model virtio), one serial (type pty, target port 0) and its console.
 * Attributes not listed are accepted and not kept (e.g. os/type@machine,
 * driver@discard), except those that change what the guest gets (vcpu@current,
 * vcpu@cpuset), which are unsupported.
 *
 * The parser does not load external entities or DTDs and does not substitute
 * entities (no network, no XXE).
 */
#include "catalog/catalog.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/xml-lib.h"

struct rd {
	unsigned flags;
	const char *src;
	struct cat_vm *vm;
	char **unsup;          /* collected "PATH (line N)" strings */
	size_t n_unsup;
	struct ut_err *err;
	int oom;
	int seen_serial, seen_console;
};

static int is_el(const xmlNode *n, const char *name)
{
	return n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name);
}

static void unsupported(struct rd *r, const xmlNode *n, const char *path, const char *attr,
			const char *val)
{
	char *s = NULL, **arr;
	int rc;

	if (attr && val)
		rc = asprintf(&s, "%s[@%s='%s'] (line %ld)", path, attr, val, xmlGetLineNo(n));
	else if (attr)
		rc = asprintf(&s, "%s[@%s] (line %ld)", path, attr, xmlGetLineNo(n));
	else
		rc = asprintf(&s, "%s (line %ld)", path, xmlGetLineNo(n));
	if (rc < 0) {
		r->oom = 1;
		return;
	}
	arr = realloc(r->unsup, (r->n_unsup + 1) * sizeof(*arr));
	if (!arr) {
		free(s);
		r->oom = 1;
		return;
	}
	arr[r->n_unsup++] = s;
	r->unsup = arr;
}

/* An unknown child element: report it with its path. */
static void unsupported_child(struct rd *r, const xmlNode *n, const char *parent)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", parent, (const char *)n->name);
	unsupported(r, n, path, NULL, NULL);
}

/* Attribute @name of @n as a malloc'd string, NULL when absent. */
static char *prop(struct rd *r, const xmlNode *n, const char *name)
{
	xmlChar *v = xmlGetProp(n, (const xmlChar *)name);
	char *s;

	if (!v)
		return NULL;
	s = strdup((const char *)v);
	xmlFree(v);
	if (!s)
		r->oom = 1;
	return s;
}

/* Text content, whitespace-trimmed, malloc'd. */
static char *text(struct rd *r, const xmlNode *n)
{
	xmlChar *v = xmlNodeGetContent(n);
	const char *b, *e;
	char *s;

	if (!v) {
		s = strdup("");
		goto out;
	}
	b = (const char *)v;
	while (*b == ' ' || *b == '\t' || *b == '\n' || *b == '\r')
		b++;
	e = b + strlen(b);
	while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		e--;
	s = strndup(b, (size_t)(e - b));
	xmlFree(v);
out:
	if (!s)
		r->oom = 1;
	return s;
}

static int bad(struct rd *r, const xmlNode *n, const char *fmt, const char *arg)
{
	char msg[512];

	snprintf(msg, sizeof(msg), fmt, arg ? arg : "");
	return ut_errf(r->err, -EINVAL, "%s:%ld: %s", r->src, n ? xmlGetLineNo(n) : 0L, msg);
}

/* libvirt's scaled integers: value with unit (default KiB), to bytes,
 * rounded up to whole KiB as libvirt does. */
static int parse_memory(struct rd *r, const xmlNode *n, uint64_t *out)
{
	static const struct { const char *u; uint64_t mul; } units[] = {
		{ "b", 1 }, { "bytes", 1 },
		{ "KB", 1000ULL }, { "k", 1ULL << 10 }, { "KiB", 1ULL << 10 },
		{ "MB", 1000000ULL }, { "M", 1ULL << 20 }, { "MiB", 1ULL << 20 },
		{ "GB", 1000000000ULL }, { "G", 1ULL << 30 }, { "GiB", 1ULL << 30 },
		{ "TB", 1000000000000ULL }, { "T", 1ULL << 40 }, { "TiB", 1ULL << 40 },
		{ "PB", 1000000000000000ULL }, { "P", 1ULL << 50 }, { "PiB", 1ULL << 50 },
	};
	char *unit = prop(r, n, "unit"), *val = text(r, n), *end;
	uint64_t mul = 0, v;
	int ret = 0;

	if (r->oom)
		goto out;
	if (!unit)
		mul = 1024;
	for (size_t i = 0; unit && i < sizeof(units) / sizeof(units[0]); i++)
		if (!strcmp(unit, units[i].u))
			mul = units[i].mul;
	if (!mul) {
		ret = bad(r, n, "unknown memory unit '%s'", unit);
		goto out;
	}
	errno = 0;
	v = strtoull(val, &end, 10);
	if (!*val || *end || errno || val[0] == '-') {
		ret = bad(r, n, "invalid memory size '%s'", val);
		goto out;
	}
	if (v && mul > UINT64_MAX / v - 1024) {
		ret = bad(r, n, "memory size '%s' is too large", val);
		goto out;
	}
	v *= mul;
	*out = (v + 1023) & ~1023ULL;
out:
	free(unit);
	free(val);
	return ret;
}

static int set_str(struct rd *r, char **dst, char *val)
{
	free(*dst);
	*dst = val;
	return r->oom ? -ENOMEM : 0;
}

static int read_os(struct rd *r, const xmlNode *os)
{
	int ret = 0, has_type = 0;

	for (const xmlNode *c = os->children; c && ret == 0; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (is_el(c, "type")) {
			char *t = text(r, c), *arch = prop(r, c, "arch");

			has_type = 1;
			if (t && strcmp(t, "hvm"))
				unsupported(r, c, "/domain/os/type", "value", t);
			if (arch && strcmp(arch, "x86_64"))
				unsupported(r, c, "/domain/os/type", "arch", arch);
			free(t);
			free(arch);
		} else if (is_el(c, "kernel")) {
			ret = set_str(r, &r->vm->kernel, text(r, c));
		} else if (is_el(c, "initrd")) {
			ret = set_str(r, &r->vm->initrd, text(r, c));
		} else if (is_el(c, "cmdline")) {
			ret = set_str(r, &r->vm->cmdline, text(r, c));
		} else {
			unsupported_child(r, c, "/domain/os");
		}
	}
	if (ret == 0 && !has_type)
		ret = bad(r, os, "<os> has no <type>", NULL);
	return ret;
}

static int read_lifecycle(struct rd *r, const xmlNode *n, char **dst)
{
	char *v = text(r, n), path[64];

	if (!v)
		return -ENOMEM;
	if (strcmp(v, "destroy") && strcmp(v, "restart")) {
		snprintf(path, sizeof(path), "/domain/%s", (const char *)n->name);
		unsupported(r, n, path, "value", v);
		free(v);
		return 0;
	}
	return set_str(r, dst, v);
}

/* <backingStore> chain below a disk: appends to d->chain. */
static int read_backing(struct rd *r, const xmlNode *bs, struct cat_disk *d, int depth)
{
	char *type = prop(r, bs, "type"), *fmt = NULL, *file = NULL;
	const xmlNode *next = NULL;
	int ret = 0, has_children = 0;

	for (const xmlNode *c = bs->children; c; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		has_children = 1;
		if (is_el(c, "format")) {
			free(fmt);
			fmt = prop(r, c, "type");
		} else if (is_el(c, "source")) {
			free(file);
			file = prop(r, c, "file");
		} else if (is_el(c, "backingStore")) {
			next = c;
		} else {
			unsupported_child(r, c, "/domain/devices/disk/backingStore");
		}
	}
	if (!has_children && !type)
		goto out;             /* <backingStore/>: end of the chain */
	if (!type || strcmp(type, "file")) {
		unsupported(r, bs, "/domain/devices/disk/backingStore", "type",
			    type ? type : "(none)");
		goto out;
	}
	if (!file) {
		ret = bad(r, bs, "<backingStore> has no <source file=...>", NULL);
		goto out;
	}
	if (fmt && strcmp(fmt, "raw") && strcmp(fmt, "qcow2")) {
		unsupported(r, bs, "/domain/devices/disk/backingStore/format", "type", fmt);
		goto out;
	}
	if (depth >= CAT_CHAIN_MAX) {
		ret = bad(r, bs, "backing chain longer than %s images", "64");
		goto out;
	}
	{
		struct cat_image *arr = realloc(d->chain, (d->n_chain + 1) * sizeof(*arr));

		if (!arr) {
			r->oom = 1;
			goto out;
		}
		d->chain = arr;
		memset(&arr[d->n_chain], 0, sizeof(arr[0]));
		arr[d->n_chain].path = file;
		arr[d->n_chain].format = fmt;
		arr[d->n_chain].virtual_size = -1;
		d->n_chain++;
		file = fmt = NULL;
	}
	if (next)
		ret = read_backing(r, next, d, depth + 1);
out:
	free(type);
	free(fmt);
	free(file);
	return r->oom ? -ENOMEM : ret;
}

static int read_disk(struct rd *r, const xmlNode *dn)
{
	char *type = prop(r, dn, "type"), *dev = prop(r, dn, "device");
	char *fmt = NULL, *file = NULL, *target = NULL, *bus = NULL;
	const xmlNode *backing = NULL;
	int ret = 0, ro = 0, skip = 0, nocache = 0, threads = 0, rerror_stop = 0;
	enum cat_werror werror = CAT_WERROR_ENOSPC;

	if (type && strcmp(type, "file")) {
		unsupported(r, dn, "/domain/devices/disk", "type", type);
		skip = 1;
	}
	if (dev && strcmp(dev, "disk")) {
		unsupported(r, dn, "/domain/devices/disk", "device", dev);
		skip = 1;
	}
	for (const xmlNode *c = dn->children; c && !skip; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (is_el(c, "driver")) {
			char *name = prop(r, c, "name"), *cache = prop(r, c, "cache");
			char *io = prop(r, c, "io"), *ep = prop(r, c, "error_policy");
			char *rp = prop(r, c, "rerror_policy");

			nocache = cache && !strcmp(cache, "none");
			threads = io && !strcmp(io, "threads");
			/* libvirt spells QEMU's werror=enospc "enospace" */
			if (!ep || !strcmp(ep, "enospace"))
				werror = CAT_WERROR_ENOSPC;
			else if (!strcmp(ep, "stop"))
				werror = CAT_WERROR_STOP;
			else if (!strcmp(ep, "report"))
				werror = CAT_WERROR_REPORT;
			else
				unsupported(r, c, "/domain/devices/disk/driver", "error_policy", ep);
			if (rp && strcmp(rp, "report") && strcmp(rp, "stop"))
				unsupported(r, c, "/domain/devices/disk/driver", "rerror_policy", rp);
			rerror_stop = rp && !strcmp(rp, "stop");
			free(cache);
			free(io);
			free(ep);
			free(rp);
			free(fmt);
			fmt = prop(r, c, "type");
			if (name && strcmp(name, "qemu"))
				unsupported(r, c, "/domain/devices/disk/driver", "name", name);
			if (fmt && strcmp(fmt, "raw") && strcmp(fmt, "qcow2")) {
				unsupported(r, c, "/domain/devices/disk/driver", "type", fmt);
				skip = 1;
			}
			free(name);
		} else if (is_el(c, "source")) {
			free(file);
			file = prop(r, c, "file");
		} else if (is_el(c, "target")) {
			free(target);
			free(bus);
			target = prop(r, c, "dev");
			bus = prop(r, c, "bus");
			if (bus && strcmp(bus, "virtio")) {
				unsupported(r, c, "/domain/devices/disk/target", "bus", bus);
				skip = 1;
			}
		} else if (is_el(c, "readonly")) {
			ro = 1;
		} else if (is_el(c, "backingStore")) {
			backing = c;
		} else {
			unsupported_child(r, c, "/domain/devices/disk");
		}
	}
	if (skip || r->oom)
		goto out;
	if (!file) {
		ret = bad(r, dn, "<disk> has no <source file=...>", NULL);
		goto out;
	}
	if (!target) {
		ret = bad(r, dn, "<disk> has no <target dev=...>", NULL);
		goto out;
	}
	ret = cat_vm_add_disk(r->vm, file, fmt, target, ro, nocache, threads, r->err);
	if (ret == 0) {
		r->vm->disks[r->vm->n_disks - 1].werror = werror;
		r->vm->disks[r->vm->n_disks - 1].rerror_stop = rerror_stop;
	}
	if (ret == 0 && backing)
		ret = read_backing(r, backing, &r->vm->disks[r->vm->n_disks - 1], 1);
out:
	free(type);
	free(dev);
	free(fmt);
	free(file);
	free(target);
	free(bus);
	return r->oom ? -ENOMEM : ret;
}

static int read_interface(struct rd *r, const xmlNode *in)
{
	char *type = prop(r, in, "type"), *mac = NULL, *tap = NULL, *br = NULL;
	int ret = 0, skip = 0;

	if (!type || (strcmp(type, "ethernet") && strcmp(type, "bridge"))) {
		unsupported(r, in, "/domain/devices/interface", "type", type ? type : "(none)");
		skip = 1;
	}
	for (const xmlNode *c = in->children; c && !skip; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (is_el(c, "mac")) {
			free(mac);
			mac = prop(r, c, "address");
		} else if (is_el(c, "target")) {
			free(tap);
			tap = prop(r, c, "dev");
		} else if (is_el(c, "source") && !strcmp(type, "bridge")) {
			free(br);
			br = prop(r, c, "bridge");
		} else if (is_el(c, "model")) {
			char *m = prop(r, c, "type");

			if (m && strcmp(m, "virtio")) {
				unsupported(r, c, "/domain/devices/interface/model", "type", m);
				skip = 1;
			}
			free(m);
		} else {
			unsupported_child(r, c, "/domain/devices/interface");
		}
	}
	if (skip || r->oom)
		goto out;
	if (!strcmp(type, "bridge") && !br) {
		ret = bad(r, in, "a bridge <interface> needs <source bridge=...>", NULL);
		goto out;
	}
	ret = cat_vm_add_nic(r->vm, mac, type, tap, br, r->err);
	if (ret < 0)
		ut_err_prefix(r->err, "%s:%ld", r->src, xmlGetLineNo(in));
out:
	free(type);
	free(mac);
	free(tap);
	free(br);
	return r->oom ? -ENOMEM : ret;
}

/* <serial> or <console>: cowvm has one serial port (ttyS0) whose output goes
 * to its log and console socket; a pty-type definition describes it. */
static void read_serial(struct rd *r, const xmlNode *sn, int console)
{
	const char *path = console ? "/domain/devices/console" : "/domain/devices/serial";
	char *type = prop(r, sn, "type");
	char tpath[64];
	int ok = 1;

	snprintf(tpath, sizeof(tpath), "%s/target", path);
	if ((console ? r->seen_console : r->seen_serial)) {
		unsupported(r, sn, path, NULL, NULL);   /* a second one */
		free(type);
		return;
	}
	if (type && strcmp(type, "pty")) {
		unsupported(r, sn, path, "type", type);
		ok = 0;
	}
	for (const xmlNode *c = sn->children; c; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (is_el(c, "target")) {
			char *port = prop(r, c, "port"), *tt = prop(r, c, "type");

			if (port && strcmp(port, "0")) {
				unsupported(r, c, tpath, "port", port);
				ok = 0;
			}
			if (tt && strcmp(tt, console ? "serial" : "isa-serial")) {
				unsupported(r, c, tpath, "type", tt);
				ok = 0;
			}
			free(port);
			free(tt);
		} else {
			unsupported_child(r, c, path);
		}
	}
	if (ok) {
		if (console)
			r->seen_console = 1;
		else
			r->seen_serial = 1;
	}
	free(type);
}

static int read_devices(struct rd *r, const xmlNode *devs)
{
	int ret = 0;

	for (const xmlNode *c = devs->children; c && ret == 0; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (is_el(c, "disk"))
			ret = read_disk(r, c);
		else if (is_el(c, "interface"))
			ret = read_interface(r, c);
		else if (is_el(c, "serial"))
			read_serial(r, c, 0);
		else if (is_el(c, "console"))
			read_serial(r, c, 1);
		else
			unsupported_child(r, c, "/domain/devices");
	}
	return ret;
}

static int read_uuid(struct rd *r, const xmlNode *n, char out[CAT_UUID_LEN + 1], int empty_ok)
{
	char *v = text(r, n);
	int ret = 0;

	if (!v)
		return -ENOMEM;
	if (!*v && empty_ok)
		ret = cat_uuid_generate(out);
	else if (cat_uuid_parse(v, out) < 0)
		ret = bad(r, n, "invalid UUID '%s'", v);
	free(v);
	return ret;
}

static int read_domain(struct rd *r, const xmlNode *root)
{
	struct cat_vm *vm = r->vm;
	char *type, *v;
	int ret = 0, has_mem = 0;

	type = prop(r, root, "type");
	if (!type) {
		ret = bad(r, root, "<domain> has no type attribute", NULL);
		goto out;
	}
	if (strcmp(type, "kvm"))
		unsupported(r, root, "/domain", "type", type);
	/* Defaults that the document may override; no genid unless asked. */
	ret = cat_vm_init_defaults(vm, r->err);
	if (ret < 0)
		goto out;
	vm->genid[0] = '\0';
	vm->uuid[0] = '\0';
	for (const xmlNode *c = root->children; c && ret == 0; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (is_el(c, "name")) {
			ret = set_str(r, &vm->name, text(r, c));
		} else if (is_el(c, "uuid")) {
			ret = read_uuid(r, c, vm->uuid, 0);
		} else if (is_el(c, "genid")) {
			ret = read_uuid(r, c, vm->genid, 1);
		} else if (is_el(c, "memory")) {
			ret = parse_memory(r, c, &vm->memory);
			has_mem = 1;
		} else if (is_el(c, "currentMemory")) {
			ret = parse_memory(r, c, &vm->cur_memory);
		} else if (is_el(c, "vcpu")) {
			char *cur = prop(r, c, "current"), *cpuset = prop(r, c, "cpuset"), *end;
			unsigned long n;

			v = text(r, c);
			if (cur)
				unsupported(r, c, "/domain/vcpu", "current", cur);
			if (cpuset)
				unsupported(r, c, "/domain/vcpu", "cpuset", cpuset);
			n = v ? strtoul(v, &end, 10) : 0;
			if (!v || !*v || *end || n < 1 || n > CAT_VCPUS_MAX)
				ret = bad(r, c, "vcpu must be a number from 1 to 255, not '%s'",
					  v ? v : "");
			vm->vcpus = (unsigned)n;
			free(v);
			free(cur);
			free(cpuset);
		} else if (is_el(c, "os")) {
			ret = read_os(r, c);
		} else if (is_el(c, "on_poweroff")) {
			ret = read_lifecycle(r, c, &vm->on_poweroff);
		} else if (is_el(c, "on_reboot")) {
			ret = read_lifecycle(r, c, &vm->on_reboot);
		} else if (is_el(c, "devices")) {
			ret = read_devices(r, c);
		} else {
			unsupported_child(r, c, "/domain");
		}
	}
	if (ret < 0 || r->oom)
		goto out;
	if (!vm->name) {
		ret = bad(r, root, "<domain> has no <name>", NULL);
		goto out;
	}
	if (!has_mem) {
		ret = bad(r, root, "<domain> has no <memory>", NULL);
		goto out;
	}
	if (!vm->kernel) {
		ret = bad(r, root, "cowvm boots a kernel directly: <os><kernel> is required", NULL);
		goto out;
	}
	if (!vm->uuid[0] && cat_uuid_generate(vm->uuid) < 0) {
		ret = ut_errf(r->err, -EIO, "unable to generate a UUID");
		goto out;
	}
	vm->serial = r->seen_serial || r->seen_console;
	if (vm->cur_memory == vm->memory)
		vm->cur_memory = 0;
out:
	free(type);
	return r->oom ? ut_errf(r->err, -ENOMEM, "out of memory") : ret;
}

static void quiet_errors(void *ctx, const char *msg, ...)
{
	(void)ctx;
	(void)msg;
}

int cat_xml_read(const char *doc, size_t len, const char *src, unsigned flags,
		 struct cat_vm *vm, char ***ignored, size_t *n_ignored, struct ut_err *err)
{
	struct rd r = { .flags = flags, .src = src ? src : "(document)", .vm = vm, .err = err };
	xmlDoc *x = NULL;
	const xmlNode *root;
	const xmlError *xe;
	int ret;

	memset(vm, 0, sizeof(*vm));
	if (ignored) {
		*ignored = NULL;
		*n_ignored = 0;
	}
	if (len > INT32_MAX) {
		ret = ut_errf(err, -EFBIG, "%s: document too large", r.src);
		goto out;
	}
	ret = cat_xml_lib_load(err);
	if (ret)
		goto out;
	xmlSetGenericErrorFunc(NULL, quiet_errors);
	x = xmlReadMemory(doc, (int)len, r.src, NULL,
			  XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (!x) {
		xe = xmlGetLastError();
		ret = ut_errf(err, -EINVAL, "%s:%d: not well-formed XML: %s", r.src,
			      xe ? xe->line : 0, xe && xe->message ? xe->message : "parse error");
		/* libxml2 messages end in a newline */
		if (err && (len = strlen(err->msg)) && err->msg[len - 1] == '\n')
			err->msg[len - 1] = '\0';
		goto out;
	}
	root = xmlDocGetRootElement(x);
	if (!root || !is_el(root, "domain")) {
		ret = ut_errf(err, -EINVAL, "%s: not a libvirt domain document (root element "
			      "is <%s>, not <domain>)", r.src, root ? (const char *)root->name : "");
		goto out;
	}
	ret = read_domain(&r, root);
	if (ret < 0)
		goto out;
	if (r.n_unsup && !(flags & CAT_XML_IGNORE_UNSUPPORTED)) {
		struct ut_buf b = UT_BUF_INIT;

		ut_buf_addf(&b, "%s: unsupported by cowvm: ", r.src);
		for (size_t i = 0; i < r.n_unsup; i++)
			ut_buf_addf(&b, "%s%s", i ? ", " : "", r.unsup[i]);
		ret = ut_errf(err, -ENOTSUP, "%s", b.data ? (const char *)b.data : "");
		ut_buf_release(&b);
	} else {
		ret = cat_vm_check(vm, err);
		if (ret < 0)
			ut_err_prefix(err, "%s", r.src);
	}
	if (ignored && (ret == 0 || ret == -ENOTSUP)) {
		*ignored = r.unsup;
		*n_ignored = r.n_unsup;
		r.unsup = NULL;
		r.n_unsup = 0;
	}
out:
	cat_strv_free(r.unsup, r.n_unsup);
	if (x)
		xmlFreeDoc(x);
	if (ret < 0)
		cat_vm_clear(vm);
	return ret;
}
