/* catalog/xml-lib.c — dlopen() of libxml2; see xml-lib.h. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>

#include "catalog/xml-lib.h"

#define XML_SONAME "libxml2.so.2"

struct cat_xml_lib cat_xml;

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;
static char xml_why[256];
static int xml_status = -ENOENT;

static const struct { const char *sym; size_t off; } xml_syms[] = {
#define SYM(name, field) { name, offsetof(struct cat_xml_lib, field) }
	SYM("xmlReadMemory", ReadMemory),
	SYM("xmlFreeDoc", FreeDoc),
	SYM("xmlFree", FreeVar),
	SYM("xmlGetLineNo", GetLineNo),
	SYM("xmlSetGenericErrorFunc", SetGenericErrorFunc),
	SYM("xmlNodeGetContent", NodeGetContent),
	SYM("xmlNodeDump", NodeDump),
	SYM("xmlNewTextChild", NewTextChild),
	SYM("xmlNewProp", NewProp),
	SYM("xmlNewNode", NewNode),
	SYM("xmlNewDoc", NewDoc),
	SYM("xmlGetProp", GetProp),
	SYM("xmlGetLastError", GetLastError),
	SYM("xmlDocSetRootElement", DocSetRootElement),
	SYM("xmlDocGetRootElement", DocGetRootElement),
	SYM("xmlBufferLength", BufferLength),
	SYM("xmlBufferFree", BufferFree),
	SYM("xmlBufferCreate", BufferCreate),
	SYM("xmlBufferContent", BufferContent),
#undef SYM
};

static void xml_open(void)
{
	void *h = dlopen(XML_SONAME, RTLD_NOW | RTLD_LOCAL);

	if (!h) {
		snprintf(xml_why, sizeof(xml_why), "%s", dlerror());
		return;
	}
	for (size_t i = 0; i < sizeof(xml_syms) / sizeof(xml_syms[0]); i++) {
		void *f = dlsym(h, xml_syms[i].sym);

		if (!f) {
			snprintf(xml_why, sizeof(xml_why), "%s has no %s", XML_SONAME, xml_syms[i].sym);
			return;   /* h stays open: harmless, and the table stays unusable */
		}
		*(void **)((char *)&cat_xml + xml_syms[i].off) = f;
	}
	xml_status = 0;
}

int cat_xml_lib_load(struct ut_err *err)
{
	pthread_once(&xml_once, xml_open);
	if (xml_status)
		return ut_errf(err, xml_status, "unable to load libxml2 (Debian package libxml2): %s",
			       xml_why);
	return 0;
}
