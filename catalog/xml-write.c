/* catalog/xml-write.c — export a VM as a libvirt domain document (libxml2).
 * The output validates against libvirt's domain.rng (virt-xml-validate);
 * what it writes is exactly what catalog/xml-read.c reads back. */
#include "catalog/catalog.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "catalog/xml-lib.h"

struct wr {
	int oom;
};

static xmlNode *child(struct wr *w, xmlNode *parent, const char *name, const char *content)
{
	xmlNode *n = xmlNewTextChild(parent, NULL, (const xmlChar *)name,
				     (const xmlChar *)content);

	if (!n)
		w->oom = 1;
	return n;
}

static void attr(struct wr *w, xmlNode *n, const char *name, const char *val)
{
	if (n && !xmlNewProp(n, (const xmlChar *)name, (const xmlChar *)val))
		w->oom = 1;
}

static void memory_el(struct wr *w, xmlNode *dom, const char *name, uint64_t bytes)
{
	char v[32];

	snprintf(v, sizeof(v), "%" PRIu64, (bytes + 1023) / 1024);
	attr(w, child(w, dom, name, v), "unit", "KiB");
}

static void backing_el(struct wr *w, xmlNode *parent, const struct cat_disk *d, size_t k)
{
	xmlNode *bs = child(w, parent, "backingStore", NULL);

	if (!bs || k >= d->n_chain)
		return;   /* empty <backingStore/>: the chain ends here */
	attr(w, bs, "type", "file");
	attr(w, child(w, bs, "format", NULL), "type", d->chain[k].format);
	attr(w, child(w, bs, "source", NULL), "file", d->chain[k].path);
	backing_el(w, bs, d, k + 1);
}

static void disk_el(struct wr *w, xmlNode *devs, const struct cat_disk *d)
{
	xmlNode *dn = child(w, devs, "disk", NULL), *n;

	attr(w, dn, "type", "file");
	attr(w, dn, "device", "disk");
	n = child(w, dn, "driver", NULL);
	attr(w, n, "name", "qemu");
	attr(w, n, "type", d->chain[0].format ? d->chain[0].format : "raw");
	if (d->nocache)
		attr(w, n, "cache", "none");
	if (d->threads)
		attr(w, n, "io", "threads");
	if (d->werror != CAT_WERROR_ENOSPC)
		attr(w, n, "error_policy", d->werror == CAT_WERROR_STOP ? "stop" : "report");
	if (d->rerror_stop)
		attr(w, n, "rerror_policy", "stop");
	attr(w, child(w, dn, "source", NULL), "file", d->chain[0].path);
	backing_el(w, dn, d, 1);
	n = child(w, dn, "target", NULL);
	attr(w, n, "dev", d->target);
	attr(w, n, "bus", "virtio");
	if (d->readonly)
		child(w, dn, "readonly", NULL);
}

static void nic_el(struct wr *w, xmlNode *devs, const struct cat_nic *nic)
{
	xmlNode *in = child(w, devs, "interface", NULL);

	attr(w, in, "type", nic->type);
	attr(w, child(w, in, "mac", NULL), "address", nic->mac);
	if (nic->bridge)
		attr(w, child(w, in, "source", NULL), "bridge", nic->bridge);
	if (nic->tap)
		attr(w, child(w, in, "target", NULL), "dev", nic->tap);
	attr(w, child(w, in, "model", NULL), "type", "virtio");
}

int cat_xml_write(const struct cat_vm *vm, struct ut_buf *out, struct ut_err *err)
{
	struct wr w = { 0 };
	xmlDoc *doc;
	xmlNode *dom, *os, *devs, *n;
	char v[32];
	int ret = cat_xml_lib_load(err);

	if (ret)
		return ret;
	doc = xmlNewDoc((const xmlChar *)"1.0");
	if (!doc)
		return ut_errf(err, -ENOMEM, "out of memory");
	dom = xmlNewNode(NULL, (const xmlChar *)"domain");
	if (!dom) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	xmlDocSetRootElement(doc, dom);
	attr(&w, dom, "type", "kvm");
	child(&w, dom, "name", vm->name);
	child(&w, dom, "uuid", vm->uuid);
	if (vm->genid[0])
		child(&w, dom, "genid", vm->genid);
	memory_el(&w, dom, "memory", vm->memory);
	if (vm->cur_memory)
		memory_el(&w, dom, "currentMemory", vm->cur_memory);
	snprintf(v, sizeof(v), "%u", vm->vcpus);
	attr(&w, child(&w, dom, "vcpu", v), "placement", "static");
	os = child(&w, dom, "os", NULL);
	attr(&w, child(&w, os, "type", "hvm"), "arch", "x86_64");
	child(&w, os, "kernel", vm->kernel);
	if (vm->initrd)
		child(&w, os, "initrd", vm->initrd);
	if (vm->cmdline)
		child(&w, os, "cmdline", vm->cmdline);
	child(&w, dom, "on_poweroff", vm->on_poweroff ? vm->on_poweroff : "destroy");
	child(&w, dom, "on_reboot", vm->on_reboot ? vm->on_reboot : "restart");
	devs = child(&w, dom, "devices", NULL);
	for (size_t i = 0; i < vm->n_disks; i++)
		disk_el(&w, devs, &vm->disks[i]);
	for (size_t i = 0; i < vm->n_nics; i++)
		nic_el(&w, devs, &vm->nics[i]);
	if (vm->serial) {
		n = child(&w, devs, "serial", NULL);
		attr(&w, n, "type", "pty");
		attr(&w, child(&w, n, "target", NULL), "port", "0");
		n = child(&w, devs, "console", NULL);
		attr(&w, n, "type", "pty");
		n = child(&w, n, "target", NULL);
		attr(&w, n, "type", "serial");
		attr(&w, n, "port", "0");
	}
	if (w.oom) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	/* No XML declaration: libvirt's own dumpxml does not print one. */
	{
		xmlBuffer *buf = xmlBufferCreate();

		if (!buf || xmlNodeDump(buf, doc, dom, 0, 1) < 0 ||
		    ut_buf_add(out, xmlBufferContent(buf), (size_t)xmlBufferLength(buf)) < 0 ||
		    ut_buf_add(out, "\n", 1) < 0)
			ret = ut_errf(err, -ENOMEM, "out of memory");
		if (buf)
			xmlBufferFree(buf);
	}
out:
	xmlFreeDoc(doc);
	return ret;
}
