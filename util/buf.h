/* util/buf.h — a growable byte buffer (after git's strbuf).
 *
 * Used for device state records, control-socket replies and anything that is
 * built piecewise. data is always NUL-terminated (one spare byte) so a buffer
 * holding text can be used as a C string.
 */
#ifndef UT_BUF_H
#define UT_BUF_H

#include <stddef.h>
#include <stdint.h>

struct ut_buf {
	uint8_t *data;   /* owned; NULL until the first append */
	size_t len;
	size_t cap;
};

#define UT_BUF_INIT { NULL, 0, 0 }

/* Make room for @extra more bytes. Returns 0 or -ENOMEM. */
int ut_buf_grow(struct ut_buf *b, size_t extra);
/* Append @len bytes. Returns 0 or -ENOMEM. */
int ut_buf_add(struct ut_buf *b, const void *p, size_t len);
/* Append formatted text. Returns 0 or -ENOMEM. */
int ut_buf_addf(struct ut_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Little-endian fixed-width appends, for state records and wire formats. */
int ut_buf_add_le16(struct ut_buf *b, uint16_t v);
int ut_buf_add_le32(struct ut_buf *b, uint32_t v);
int ut_buf_add_le64(struct ut_buf *b, uint64_t v);
/* Forget the contents, keep the memory. */
void ut_buf_reset(struct ut_buf *b);
/* Free the memory; @b is UT_BUF_INIT afterwards. */
void ut_buf_release(struct ut_buf *b);

/* A bounded reader over a byte range, the counterpart of the le appends.
 * Every get fails (returns -EBADMSG) rather than read past the end. */
struct ut_rd {
	const uint8_t *p;
	size_t len;
	size_t off;
};

void ut_rd_init(struct ut_rd *r, const void *p, size_t len);
int ut_rd_get(struct ut_rd *r, void *out, size_t len);
int ut_rd_le16(struct ut_rd *r, uint16_t *v);
int ut_rd_le32(struct ut_rd *r, uint32_t *v);
int ut_rd_le64(struct ut_rd *r, uint64_t *v);

#endif
