/* catalog/xml-lib.h — libxml2, loaded on first use.
 *
 * libxml2 drags ICU and libstdc++ into every process that links it; a VMM
 * (`cowvm run`) never needs XML, so cowvm opens libxml2 with dlopen() only
 * when a command imports or exports XML. Include this header instead of the
 * libxml2 ones: it keeps libxml2's types and redirects the functions cowvm
 * uses to pointers filled by cat_xml_lib_load(). Add a function here (one
 * line in the struct, one #define, one line in xml-lib.c) before using it.
 */
#ifndef CAT_XML_LIB_H
#define CAT_XML_LIB_H

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include "util/err.h"

struct cat_xml_lib {
	__typeof__(xmlReadMemory) *ReadMemory;
	__typeof__(xmlFreeDoc) *FreeDoc;
	xmlFreeFunc *FreeVar;          /* address of libxml2's xmlFree variable */
	__typeof__(xmlGetLineNo) *GetLineNo;
	__typeof__(xmlSetGenericErrorFunc) *SetGenericErrorFunc;
	__typeof__(xmlNodeGetContent) *NodeGetContent;
	__typeof__(xmlNodeDump) *NodeDump;
	__typeof__(xmlNewTextChild) *NewTextChild;
	__typeof__(xmlNewProp) *NewProp;
	__typeof__(xmlNewNode) *NewNode;
	__typeof__(xmlNewDoc) *NewDoc;
	__typeof__(xmlGetProp) *GetProp;
	__typeof__(xmlGetLastError) *GetLastError;
	__typeof__(xmlDocSetRootElement) *DocSetRootElement;
	__typeof__(xmlDocGetRootElement) *DocGetRootElement;
	__typeof__(xmlBufferLength) *BufferLength;
	__typeof__(xmlBufferFree) *BufferFree;
	__typeof__(xmlBufferCreate) *BufferCreate;
	__typeof__(xmlBufferContent) *BufferContent;
};

extern struct cat_xml_lib cat_xml;

/* Open libxml2 (once per process; thread-safe). Returns 0, or -ENOENT with
 * @err saying libxml2 could not be loaded and why. */
int cat_xml_lib_load(struct ut_err *err);

#define xmlReadMemory          (cat_xml.ReadMemory)
#define xmlFreeDoc             (cat_xml.FreeDoc)
#undef xmlFree
#define xmlFree                (*cat_xml.FreeVar)
#define xmlGetLineNo           (cat_xml.GetLineNo)
#define xmlSetGenericErrorFunc (cat_xml.SetGenericErrorFunc)
#define xmlNodeGetContent      (cat_xml.NodeGetContent)
#define xmlNodeDump            (cat_xml.NodeDump)
#define xmlNewTextChild        (cat_xml.NewTextChild)
#define xmlNewProp             (cat_xml.NewProp)
#define xmlNewNode             (cat_xml.NewNode)
#define xmlNewDoc              (cat_xml.NewDoc)
#define xmlGetProp             (cat_xml.GetProp)
#define xmlGetLastError        (cat_xml.GetLastError)
#define xmlDocSetRootElement   (cat_xml.DocSetRootElement)
#define xmlDocGetRootElement   (cat_xml.DocGetRootElement)
#define xmlBufferLength        (cat_xml.BufferLength)
#define xmlBufferFree          (cat_xml.BufferFree)
#define xmlBufferCreate        (cat_xml.BufferCreate)
#define xmlBufferContent       (cat_xml.BufferContent)

#endif
