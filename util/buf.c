/* util/buf.c — see buf.h for the contract. */
#include "util/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ut_buf_grow(struct ut_buf *b, size_t extra)
{
	size_t want, cap;
	uint8_t *p;

	if (extra > SIZE_MAX - b->len - 1)
		return -ENOMEM;
	want = b->len + extra + 1;
	if (want <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 64;
	while (cap < want)
		cap = cap > SIZE_MAX / 2 ? want : cap * 2;
	p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

int ut_buf_add(struct ut_buf *b, const void *p, size_t len)
{
	int r = ut_buf_grow(b, len);

	if (r)
		return r;
	if (len)
		memcpy(b->data + b->len, p, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int ut_buf_addf(struct ut_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n, r;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	r = ut_buf_grow(b, (size_t)n);
	if (r)
		return r;
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

int ut_buf_add_le16(struct ut_buf *b, uint16_t v)
{
	uint8_t x[2] = { (uint8_t)v, (uint8_t)(v >> 8) };

	return ut_buf_add(b, x, sizeof(x));
}

int ut_buf_add_le32(struct ut_buf *b, uint32_t v)
{
	uint8_t x[4];

	for (int i = 0; i < 4; i++)
		x[i] = (uint8_t)(v >> (8 * i));
	return ut_buf_add(b, x, sizeof(x));
}

int ut_buf_add_le64(struct ut_buf *b, uint64_t v)
{
	uint8_t x[8];

	for (int i = 0; i < 8; i++)
		x[i] = (uint8_t)(v >> (8 * i));
	return ut_buf_add(b, x, sizeof(x));
}

void ut_buf_reset(struct ut_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void ut_buf_release(struct ut_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void ut_rd_init(struct ut_rd *r, const void *p, size_t len)
{
	r->p = p;
	r->len = len;
	r->off = 0;
}

int ut_rd_get(struct ut_rd *r, void *out, size_t len)
{
	if (len > r->len - r->off)
		return -EBADMSG;
	memcpy(out, r->p + r->off, len);
	r->off += len;
	return 0;
}

int ut_rd_le16(struct ut_rd *r, uint16_t *v)
{
	uint8_t x[2];
	int e = ut_rd_get(r, x, sizeof(x));

	if (!e)
		*v = (uint16_t)(x[0] | x[1] << 8);
	return e;
}

int ut_rd_le32(struct ut_rd *r, uint32_t *v)
{
	uint8_t x[4];
	int e = ut_rd_get(r, x, sizeof(x));

	if (!e)
		*v = (uint32_t)x[0] | (uint32_t)x[1] << 8 | (uint32_t)x[2] << 16 | (uint32_t)x[3] << 24;
	return e;
}

int ut_rd_le64(struct ut_rd *r, uint64_t *v)
{
	uint32_t lo, hi;
	int e = ut_rd_le32(r, &lo);

	if (!e)
		e = ut_rd_le32(r, &hi);
	if (!e)
		*v = (uint64_t)hi << 32 | lo;
	return e;
}
