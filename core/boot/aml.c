/* core/boot/aml.c — AML writer; see aml.h. */
#include "core/boot/aml.h"

#include <errno.h>
#include <string.h>

#define AML_ZERO      0x00
#define AML_ONE       0x01
#define AML_NAME      0x08
#define AML_BYTE      0x0A
#define AML_WORD      0x0B
#define AML_DWORD     0x0C
#define AML_QWORD     0x0E
#define AML_SCOPE     0x10
#define AML_BUFFER    0x11
#define AML_PACKAGE   0x12
#define AML_STRING    0x0D
#define AML_METHOD    0x14
#define AML_DUAL_NAME 0x2E
#define AML_NOTIFY    0x86
#define AML_EXT       0x5B
#define AML_DEVICE    0x82
#define AML_ROOT      0x5C
#define AML_PKGLEN_RESERVE 4      /* bytes reserved for each PkgLength */

static void put(struct vmm_aml *a, const void *p, size_t n)
{
	if (!a->err && ut_buf_add(&a->buf, p, n))
		a->err = -ENOMEM;
}

static void put8(struct vmm_aml *a, uint8_t v)
{
	put(a, &v, 1);
}

static void put_le(struct vmm_aml *a, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		put8(a, (uint8_t)(v >> (8 * i)));
}

void vmm_aml_init(struct vmm_aml *a)
{
	memset(a, 0, sizeof(*a));
}

void vmm_aml_release(struct vmm_aml *a)
{
	ut_buf_release(&a->buf);
}

/* A NameString: optional root prefix, then one 4-character segment padded
 * with '_'. */
static void put_namestring(struct vmm_aml *a, const char *name)
{
	char seg[4] = { '_', '_', '_', '_' };
	size_t n;

	if (name[0] == '\\') {
		put8(a, AML_ROOT);
		name++;
	}
	n = strlen(name);
	if (n == 0 || n > 4) {
		a->err = a->err ? a->err : -EINVAL;
		return;
	}
	memcpy(seg, name, n);
	put(a, seg, 4);
}

void vmm_aml_name(struct vmm_aml *a, const char *name)
{
	put8(a, AML_NAME);
	put_namestring(a, name);
}

void vmm_aml_int(struct vmm_aml *a, uint64_t v)
{
	if (v == 0) {
		put8(a, AML_ZERO);
	} else if (v == 1) {
		put8(a, AML_ONE);
	} else if (v <= 0xFF) {
		put8(a, AML_BYTE);
		put_le(a, v, 1);
	} else if (v <= 0xFFFF) {
		put8(a, AML_WORD);
		put_le(a, v, 2);
	} else if (v <= 0xFFFFFFFFu) {
		put8(a, AML_DWORD);
		put_le(a, v, 4);
	} else {
		put8(a, AML_QWORD);
		put_le(a, v, 8);
	}
}

void vmm_aml_eisaid(struct vmm_aml *a, const char *id)
{
	uint32_t v;

	if (strlen(id) != 7) {
		a->err = a->err ? a->err : -EINVAL;
		return;
	}
	/* three 5-bit letters, then four hex digits; stored big-endian */
	v = (uint32_t)((id[0] - 0x40) & 0x1F) << 26 | (uint32_t)((id[1] - 0x40) & 0x1F) << 21 |
	    (uint32_t)((id[2] - 0x40) & 0x1F) << 16;
	for (int i = 3; i < 7; i++) {
		char c = id[i];
		uint32_t d = (uint32_t)(c >= 'A' ? c - 'A' + 10 : c - '0') & 0xF;

		v |= d << (4 * (6 - i));
	}
	put8(a, AML_DWORD);
	put8(a, (uint8_t)(v >> 24));
	put8(a, (uint8_t)(v >> 16));
	put8(a, (uint8_t)(v >> 8));
	put8(a, (uint8_t)v);
}

static void open_block(struct vmm_aml *a)
{
	static const uint8_t zero[AML_PKGLEN_RESERVE];

	if (a->depth == VMM_AML_MAX_DEPTH) {
		a->err = a->err ? a->err : -E2BIG;
		return;
	}
	a->open[a->depth++] = a->buf.len;
	put(a, zero, sizeof(zero));
}

void vmm_aml_scope(struct vmm_aml *a, const char *name)
{
	put8(a, AML_SCOPE);
	open_block(a);
	put_namestring(a, name);
}

void vmm_aml_device(struct vmm_aml *a, const char *name)
{
	put8(a, AML_EXT);
	put8(a, AML_DEVICE);
	open_block(a);
	put_namestring(a, name);
}

void vmm_aml_package(struct vmm_aml *a, uint8_t count)
{
	put8(a, AML_PACKAGE);
	open_block(a);
	put8(a, count);
}

void vmm_aml_buffer(struct vmm_aml *a, const uint8_t *data, size_t len)
{
	put8(a, AML_BUFFER);
	open_block(a);
	vmm_aml_int(a, len);
	put(a, data, len);
	vmm_aml_end(a);
}

void vmm_aml_string(struct vmm_aml *a, const char *str)
{
	put8(a, AML_STRING);
	put(a, str, strlen(str) + 1);
}

void vmm_aml_method(struct vmm_aml *a, const char *name, int nargs)
{
	put8(a, AML_METHOD);
	open_block(a);
	put_namestring(a, name);
	put8(a, (uint8_t)(nargs & 7));
}

static void put_seg(struct vmm_aml *a, const char *seg)
{
	char s[4] = { '_', '_', '_', '_' };
	size_t n = strlen(seg);

	if (n == 0 || n > 4) {
		a->err = a->err ? a->err : -EINVAL;
		return;
	}
	memcpy(s, seg, n);
	put(a, s, 4);
}

void vmm_aml_notify(struct vmm_aml *a, const char *scope, const char *name, uint8_t value)
{
	put8(a, AML_NOTIFY);
	put8(a, AML_ROOT);
	put8(a, AML_DUAL_NAME);
	put_seg(a, scope);
	put_seg(a, name);
	vmm_aml_int(a, value);
}

/* PkgLength (20.2.4): 1 byte for < 64, else a lead byte with the count of
 * following bytes in bits 7-6 and the low nibble, then 8 bits each. The
 * length counts the PkgLength bytes themselves. We reserved 4 bytes and
 * always use the 4-byte form so nothing has to move. */
void vmm_aml_end(struct vmm_aml *a)
{
	size_t at, len;
	uint8_t *p;

	if (a->err || a->depth == 0) {
		a->err = a->err ? a->err : -EINVAL;
		return;
	}
	at = a->open[--a->depth];
	len = a->buf.len - at;
	if (len >= (1u << 28)) {
		a->err = -E2BIG;
		return;
	}
	p = a->buf.data + at;
	p[0] = (uint8_t)(3u << 6 | (len & 0xF));
	p[1] = (uint8_t)(len >> 4);
	p[2] = (uint8_t)(len >> 12);
	p[3] = (uint8_t)(len >> 20);
}
