/* util/iobuf.c — direct I/O buffers in transparent huge pages (util/iobuf.h). */
#include "util/iobuf.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23   /* Linux 5.14 */
#endif

#define IOBUF_ALIGN ((size_t)2 << 20)

static size_t iobuf_span(size_t len)
{
	return (len + IOBUF_ALIGN - 1) & ~(IOBUF_ALIGN - 1);
}

void *ut_iobuf_alloc(size_t len, bool huge)
{
	size_t span, map;
	uint8_t *p, *a;

	if (len == 0 || len > SIZE_MAX - 2 * IOBUF_ALIGN) {
		errno = EINVAL;
		return NULL;
	}
	span = iobuf_span(len);
	map = span + IOBUF_ALIGN;   /* room to slide to a 2 MiB boundary */
	p = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	a = (uint8_t *)(((uintptr_t)p + IOBUF_ALIGN - 1) & ~(uintptr_t)(IOBUF_ALIGN - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + span < p + map)
		munmap(a + span, (size_t)(p + map - (a + span)));
	if (huge) {
		/* best effort: no THP (or an old kernel) leaves ordinary pages,
		 * faulted in by first use instead of here */
		madvise(a, span, MADV_HUGEPAGE);
		madvise(a, span, MADV_POPULATE_WRITE);
	}
	return a;
}

void ut_iobuf_free(void *buf, size_t len)
{
	if (buf && len)
		munmap(buf, iobuf_span(len));
}
