/* util/iobuf.h — memory for direct I/O buffers.
 *
 * A direct (O_DIRECT) request hands the device its buffer's physical pages.
 * Each physically separate run of pages is one scatter-gather segment, and
 * segments are what a device's queue runs out of: a virtio disk without
 * indirect descriptors spends one ring slot per segment, so 64 KiB requests
 * in scattered 4 KiB pages (16 segments each) fill a 256-slot ring at 14
 * requests, and the block layer then merges the rest into large requests
 * that the host serves one at a time. NVMe PRP lists and SCSI SGLs grow the
 * same way. These buffers are 2 MiB aligned and advised for transparent huge
 * pages, so where the kernel grants them a request is one segment.
 */
#ifndef UT_IOBUF_H
#define UT_IOBUF_H

#include <stdbool.h>
#include <stddef.h>

/* A zero-filled buffer of @len bytes (> 0) for direct I/O: 2 MiB aligned
 * and, if @huge, advised and prefaulted as transparent huge pages (ignored
 * where the kernel has them off: the buffer is then ordinary pages, as it is
 * with @huge false). Returns the buffer, owned by the caller and released
 * with ut_iobuf_free(buf, len), or NULL (errno set) when out of memory. */
void *ut_iobuf_alloc(size_t len, bool huge);

/* @n rounded up to whole 4 KiB pages: the size of one request's slot in a
 * direct I/O buffer (every slot starts page aligned, as O_DIRECT needs). */
static inline unsigned long long ut_iobuf_round(unsigned long long n)
{
	return (n + 4095) & ~4095ull;
}

/* Release a buffer from ut_iobuf_alloc(@len); NULL is ignored. */
void ut_iobuf_free(void *buf, size_t len);

#endif
