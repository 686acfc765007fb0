/* cow/map.h — what the three halves of the cluster map share (internal to
 * cow/): the type of a guest cluster or subcluster, read from its L2 entry,
 * and the entry lookups, checks and updates of l2.c that the read path
 * (read.c) and the write path (write.c) both use. */
#ifndef COW_MAP_H
#define COW_MAP_H

#include "cow/qcow2.h"

#include <sys/uio.h>

/* What a guest cluster (or, with extended L2 entries, a subcluster) reads
 * from. COW_CT_MIXED: an extended-L2 cluster whose subclusters differ. */
enum cow_ctype { COW_CT_UNALLOC, COW_CT_ZERO, COW_CT_NORMAL, COW_CT_COMPRESSED, COW_CT_MIXED };

/* Type of the whole cluster with L2 entry @e and subcluster bitmap @bmp (0
 * without extended L2). With extended L2 an entry may keep a host offset
 * while none of its subclusters is allocated (COW_CT_UNALLOC, COW_CT_ZERO). */
static inline enum cow_ctype cow_classify(const struct cow_img *img, uint64_t e, uint64_t bmp)
{
	if (e & QCOW_OFLAG_COMPRESSED)
		return COW_CT_COMPRESSED;
	if (img->extl2) {
		uint32_t alloc = (uint32_t)bmp, zero = (uint32_t)(bmp >> 32);
		if (alloc == 0xffffffffu && (e & QCOW_OFFSET_MASK))
			return COW_CT_NORMAL;
		if (!alloc)
			return zero == 0xffffffffu ? COW_CT_ZERO : zero ? COW_CT_MIXED : COW_CT_UNALLOC;
		return COW_CT_MIXED;
	}
	if (img->h.version >= 3 && (e & QCOW_OFLAG_ZERO))
		return COW_CT_ZERO;
	if (e & QCOW_OFFSET_MASK)
		return COW_CT_NORMAL;
	return COW_CT_UNALLOC;
}

/* Type of subcluster @sc of an extended-L2 entry (not compressed). */
static inline enum cow_ctype cow_sc_type(uint64_t bmp, uint32_t sc)
{
	if ((bmp >> sc) & 1)
		return COW_CT_NORMAL;
	if ((bmp >> (32 + sc)) & 1)
		return COW_CT_ZERO;
	return COW_CT_UNALLOC;
}

/* Bitmap of subclusters [a, b) in the allocation half (a < b <= 32). */
static inline uint64_t cow_sc_mask(uint32_t a, uint32_t b)
{
	return ((b == 32 ? 0x100000000ull : 1ull << b) - (1ull << a));
}

/* The run of subclusters with one type starting at byte @in of an
 * extended-L2 cluster: sets *ct and returns the run's end (bytes from the
 * start of the cluster, at most the cluster size). */
static inline uint64_t cow_sc_run(const struct cow_img *img, uint64_t bmp, uint64_t in, enum cow_ctype *ct)
{
	uint32_t sc = (uint32_t)(in >> img->sc_bits), s = sc + 1;

	*ct = cow_sc_type(bmp, sc);
	while (s < QCOW_SC_PER_CLUSTER && cow_sc_type(bmp, s) == *ct)
		s++;
	return (uint64_t)s << img->sc_bits;
}

static inline uint64_t cow_iov_total(const struct iovec *iov, int n)
{
	uint64_t t = 0;

	for (int i = 0; i < n; i++)
		t += iov[i].iov_len;
	return t;
}

/* l2.c */
/* L2 entry of guest cluster @vcl into *ent / *bmp (0 / 0 where no L2 table
 * exists), validated (I8); *tbl (when not NULL) gets the cached table or
 * NULL. 0 or -errno (the image marked corrupt for a bad entry). */
int cow_get_entry(struct cow_img *img, uint64_t vcl, uint64_t *ent, uint64_t *bmp,
		  struct cow_cent **tbl, struct ut_err *err);
/* Entry of guest cluster @vcl in the cached L2 table @t, validated (I8). */
int cow_table_entry(struct cow_img *img, const struct cow_cent *t, uint64_t vcl,
		    uint64_t *ent, uint64_t *bmp, struct ut_err *err);
/* May data cluster @host (of guest cluster @vcl) be read or written? Aligned,
 * inside the file, clear of the header, L1 and refcount tables (I8). */
int cow_check_data_off(struct cow_img *img, uint64_t host, uint64_t vcl, struct ut_err *err);
/* May data cluster @host (of guest cluster @vcl) be written in place? As
 * cow_check_data_off, and clear of the tables QEMU's overlap-check=cached
 * guards for every write (I8): the L2 tables and refcount blocks in the
 * caches, the snapshot table, the snapshots' L1 tables, the bitmap
 * directory. A damaged L2 entry pointing into one of them would otherwise
 * have the write destroy it. 0, or -EUCLEAN with the image marked corrupt. */
int cow_check_write_off(struct cow_img *img, uint64_t host, uint64_t vcl, struct ut_err *err);
/* Set the L2 entry (and extended-L2 bitmap) of guest cluster @vcl, allocating
 * its L2 table if needed; @release queues the clusters the old entry held
 * for freeing (I4). */
int cow_set_entry(struct cow_img *img, uint64_t vcl, uint64_t ne, uint64_t nbmp, bool release,
		  struct ut_err *err);
/* Write the metadata back when the queue of frees is long (I4). */
int cow_maybe_writeback(struct cow_img *img, struct ut_err *err);

/* read.c */
/* Read @len guest bytes at @off of layer @img (no range check). */
int cow_read_at(struct cow_img *img, uint8_t *buf, uint64_t len, uint64_t off,
		struct ut_err *err);
/* Read from the layer below @img (zeros where there is none or past its end). */
int cow_read_below(struct cow_img *img, uint8_t *buf, uint64_t len, uint64_t off,
		   struct ut_err *err);
/* Read @n bytes at offset @in of the data cluster of guest cluster @vcl
 * (entry @e), after checking its host offset. */
int cow_read_data(struct cow_img *img, uint64_t e, uint64_t vcl, uint8_t *buf, uint64_t n,
		  uint64_t in, struct ut_err *err);
/* Decompress the cluster of compressed entry @e into img->dec_buf (kept
 * while img->dec_key == @e). */
int cow_load_compressed(struct cow_img *img, uint64_t e, struct ut_err *err);
/* -EROFS for a write to a read-only image, -EINVAL for a request past the
 * virtual size (both with a message naming the image). */
int cow_check_range(struct cow_img *img, uint64_t len, uint64_t off, bool write,
		    struct ut_err *err);

#endif
