/* cow/bitmaps.c — persistent dirty bitmaps (header extension 0x23852875)
 * in an image cowvm writes.
 *
 * cowvm maintains them as QEMU (7.2) does: a writable open loads every
 * bitmap that is consistent and marks all of them "in use" (flag bit 0:
 * "the bitmap was not saved correctly and may be inconsistent") before
 * the first write; every change of guest data sets the bits covering it
 * in each enabled bitmap (flag bit 1, "auto"), in memory; the close stores
 * them again, consistent. Disabled bitmaps are marked in use too (QEMU
 * 7.2 does the same: verified with qemu-io, a disabled bitmap reads
 * "in-use" while qemu-io has the image open for writing) and stored with
 * the same table, their data unchanged. A bitmap that was already in use
 * at open (QEMU: "inconsistent") stays in use, its entry unchanged; so
 * does every bitmap when the directory is valid but one cannot be loaded
 * (a table of another size than the disk needs, a bad entry: QEMU would
 * refuse the image), and all of them when memory runs out.
 *
 * States of the bitmaps of a writable open (not COW_O_KEEP_BITMAPS,
 * not header-only), and the function for each transition:
 *
 *   CONSISTENT (on disk, flag clear)
 *     --cow_bitmaps_open_rw (cow_qcow2_open, before anything is written):
 *       the directory and tables checked (bm_load_dir, bm_mem_load), the
 *       data of each enabled bitmap read into memory (img->bm); then
 *       cow_bitmaps_mark_in_use: the 4-byte flags of every entry without
 *       bit 0 rewritten in place, fdatasync
 *     --> IN USE, TRACKED
 *   IN USE, TRACKED --cow_bitmaps_dirty (cow_check_range with write:
 *       cow_write, cow_writev, cow_write_zeroes, cow_discard,
 *       cow_write_compressed; cow_write_step: storage/'s allocating and
 *       in-place steps; cow_map_inplace: storage/'s own in-place writes):
 *       bits [off >> g, (off + len - 1) >> g] set in memory, before the
 *       change reaches the file --> IN USE, TRACKED
 *   IN USE, TRACKED --cow_bitmaps_store (cow_close; cow_overlay_check,
 *       when the image is about to become a read-only backing file):
 *       bm_build_store: per enabled bitmap, each cluster of bits to a new
 *       cluster (all clear: table entry 0, all set: entry 1 "all ones",
 *       as the specification allows), a new table; a new directory, the
 *       in-use flag cleared in the entries loaded at open; cow_flush (the
 *       new clusters, their refcounts and all guest data durable);
 *       bm_switch: the header extension's directory offset (8 bytes in
 *       place), fdatasync, then the old directory, tables and data
 *       clusters freed (I4), cow_flush
 *     --> CONSISTENT, TRACKED (img->bm->stored)
 *   CONSISTENT, TRACKED --cow_bitmaps_dirty (a change after a snapshot's
 *       check that was not followed by its attach): cow_bitmaps_mark_in_use
 *       again first (a failure fails the change) --> IN USE, TRACKED
 *   IN USE, TRACKED --cow_grow / cow_shrink without COW_O_KEEP_BITMAPS
 *       (`cowvm image commit` growing its base), as QEMU resizes them:
 *       cow_bitmaps_resize_begin -> bm_track_begin (marked in use again if
 *       stored; the disabled ones' data loaded too; one too large at the
 *       new size, or data that cannot be read, refuses the resize before
 *       anything is written, as QEMU refuses it); the resize's own
 *       changes (the area past the old end released, the new one zeroed,
 *       a shrink's tail) not recorded (img->resizing); after the size
 *       write
 *       cow_bitmaps_resize_commit -> bm_track_resize (bits past the
 *       smaller size dropped, new ones clear); a failure before the size
 *       write: cow_bitmaps_resize_abort sets the bits of a shrink's
 *       released tail; after it (the size in the file unknown): tracking
 *       ends --> IN USE, TRACKED at the new (or old) size
 *   IN USE, TRACKED --cow_bitmaps_track_free (a refcount repair at open;
 *       a chunk that cannot be allocated; a resize as said) --> IN USE
 *       (stored never again in this open; QEMU reports them inconsistent,
 *       `qemu-img bitmap --remove` frees them)
 *   directory invalid (cow_bitmaps_mark_in_use's checks): nothing is
 *       written; the caller clears autoclear bit 0 (the bitmaps are
 *       dropped, their clusters leak), as QEMU would not use them either.
 *
 * What a crash leaves: before the switch, bitmaps marked in use over
 * whatever data reached the file (inconsistent by declaration, never
 * wrong silently) and perhaps leaked new clusters; after it, consistent
 * bitmaps that include every change made durable by the flush before it.
 * A failed store returns its error (cow_close's result) and leaves them
 * in use, the new clusters freed (I17); a failure after the switch leaves
 * them consistent, with leaks at worst.
 *
 * The old clusters of a stored bitmap are freed only when their refcount
 * is 1 and they are not the header, the L1 or refcount table or a range of
 * img->meta (bm_may_free): a damaged table naming someone else's cluster
 * leaks instead of freeing it.
 */
#include "cow/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BM_RESERVED_FLAGS 0xfffffffcu
#define BM_ENTRY_HDR 24u

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

int cow_bitmaps_ext(const struct cow_img *img, uint32_t *nb, uint64_t *dsize, uint64_t *doff)
{
	const uint8_t *x = img->h.other_ext;
	size_t n = img->h.other_ext_len, o = 0;

	if (img->h.version < 3 || !(img->h.autoclear & 1))
		return 0;
	for (; o + 8 <= n; o += 8 + (((size_t)cow_be32(x + o + 4) + 7) & ~(size_t)7)) {
		uint32_t type = cow_be32(x + o), len = cow_be32(x + o + 4);

		if (type != QCOW_EXT_BITMAPS || len < 24 || o + 8 + len > n)
			continue;
		*nb = cow_be32(x + o + 8);
		*dsize = cow_be64(x + o + 16);
		*doff = cow_be64(x + o + 24);
		return 1;
	}
	return 0;
}

bool cow_bitmaps_dir_in_file(const struct cow_img *img, uint64_t dsize, uint64_t doff)
{
	return dsize && dsize <= COW_MAX_BITMAP_DIR && !(doff & (img->cluster_size - 1)) &&
	       doff <= img->file_size && dsize <= img->file_size - doff;
}

int cow_bitmaps_mark_in_use(struct cow_img *img, struct ut_err *err)
{
	uint64_t dsize, doff, p = 0;
	uint32_t nb, seen = 0;
	uint8_t *dir = NULL;
	bool wrote = false;
	int ret;

	if (!cow_bitmaps_ext(img, &nb, &dsize, &doff))
		return 1;
	if (!nb || !doff || !cow_bitmaps_dir_in_file(img, dsize, doff))
		return 1;
	/* a directory that overlaps a core table is damage, not a directory:
	 * writing into it could break the table */
	if (overlaps(doff, dsize, img->h.l1_off, (uint64_t)img->h.l1_size * 8) ||
	    overlaps(doff, dsize, img->h.rt_off, (uint64_t)img->h.rt_clusters << img->cluster_bits) ||
	    (img->h.nb_snapshots && doff <= img->h.snap_off && img->h.snap_off < doff + dsize))
		return 1;
	dir = malloc(dsize);
	if (!dir)
		return ut_errf(err, -ENOMEM, "out of memory");
	ret = cow_pread_full(img, dir, dsize, doff, false, err);
	if (ret < 0)
		goto out;
	/* the whole directory first: nothing is written unless all of it is
	 * well-formed (entries inside it, as many as the extension says, no
	 * reserved flag bits) */
	for (p = 0; p < dsize; seen++) {
		if (dsize - p < BM_ENTRY_HDR || seen >= nb ||
		    (cow_be32(dir + p + 12) & BM_RESERVED_FLAGS) ||
		    cow_bitmap_entry_size(dir + p) > dsize - p) {
			ret = 1;
			goto out;
		}
		p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull;
	}
	if (seen != nb) {
		ret = 1;
		goto out;
	}
	for (p = 0; p < dsize;) {
		uint32_t flags = cow_be32(dir + p + 12);

		if (!(flags & COW_BITMAP_IN_USE)) {
			uint8_t b[4];
			cow_put32(b, flags | COW_BITMAP_IN_USE);
			ret = cow_pwrite_full(img, b, 4, doff + p + 12, err);
			if (ret < 0)
				goto out;
			wrote = true;
		}
		p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull;
	}
	ret = wrote ? cow_sync(img, err) : 0;
out:
	free(dir);
	if (ret < 0)
		ut_err_prefix(err, "'%s': unable to mark its persistent bitmaps in use", img->path);
	return ret;
}

/* ---- resizing (cow_grow, cow_shrink with COW_O_KEEP_BITMAPS) ----
 *
 * What QEMU 7.2 does: its open loads every bitmap (one that is in use is
 * "inconsistent") and marks them in use on disk; qcow2_co_truncate first
 * refuses the resize when any bitmap is inconsistent
 * (qcow2_truncate_bitmaps_check: "Bitmap 'x' is inconsistent and cannot be
 * used"); the block layer resizes the bitmaps in memory (new bits clear,
 * bits past a smaller end dropped; the resize itself dirties nothing) and
 * the close stores each one again (a table of exactly
 * ceil(ceil(size / granularity) / (8 * cluster size)) entries, its data
 * clusters, a new directory) with the in-use flag cleared. An image whose
 * directory or a table does not satisfy QEMU's constraints is not opened
 * at all, so not resized either.
 *
 * cowvm, crash-safely; per step, what the file holds if the process dies
 * there (a crash, unlike a returned failure, may leave the bitmaps in
 * use: QEMU's own crash while the image is open does the same, and
 * `qemu-img bitmap --remove` frees them):
 *   1. cow_bitmaps_resize_begin (before the resize writes anything): the
 *      directory and every table checked as QEMU checks them at open; one
 *      in use (inconsistent), or anything invalid, refuses the resize;
 *      then every bitmap marked in use in place
 *      (cow_bitmaps_mark_in_use), fdatasync. Dies here: some or all
 *      marked in use. Fails here: the flags cleared again
 *      (bm_clear_in_use), nothing else changed.
 *   2. the resize's own steps (resize.c: a larger L1 table, the area past
 *      the old end released; in a shrink, the tail released and the L2
 *      tables past the new end dropped). Dies: in use, old size.
 *      Fails (cow_bitmaps_resize_abort): a grow changed no data inside
 *      the old size, so the flags are cleared again; a shrink may have
 *      released its tail without the bitmaps recording it, so they get
 *      new tables with every bit from the new end on set (a dirty bit
 *      over unchanged data is allowed, a clear one over changed data is
 *      not), switched to as in 4.
 *   3. cow_bitmaps_resize_prepare: per bitmap, a table for the new size:
 *      entries wholly below min(old, new) number of bits kept (the same
 *      data clusters, an "all ones" entry as it is), the one across that
 *      boundary rewritten to a new cluster with the bits past it cleared
 *      (or 0 when nothing is left set), the rest 0; a bitmap whose table
 *      does not change keeps it. In a shrink, a kept data cluster or a
 *      table that lies above a free cluster (free_hint) moves down to a
 *      new one, as QEMU's store at close rewrites every bitmap first-fit:
 *      otherwise the cut after the last used cluster (resize.c) stops at
 *      bitmap data QEMU had placed at the end of the file. New tables and
 *      a new directory (the same entries, table offsets and sizes
 *      updated, the in-use flag cleared) go to new clusters
 *        --> cow_flush (all of it and its refcounts durable).
 *      Dies: in use, old size, the new clusters leaked. Fails: they are
 *      freed (I17) and 2's undo applies.
 *   -- resize.c writes the new size (8 bytes at 24), fdatasync. Dies after
 *      the write: in use, new size. Fails after the write (its fdatasync):
 *      in use (the old tables do not fit the new size, and QEMU refuses a
 *      bitmap not in use whose table does not; the switch cannot be
 *      ordered after a failed fdatasync), the new clusters freed.
 *   4. cow_bitmaps_resize_commit: the directory offset in the header
 *      extension (8 bytes in place), fdatasync
 *        --> the old directory, the replaced tables and the data clusters
 *            no new table uses freed (I4), cow_flush.
 *      Dies before the write: in use, new size; after it: consistent
 *      bitmaps of the new size (leaks at worst). Fails at the write: as
 *      dying before it; after it: consistent (the error says so).
 */
#define BM_MAX_TABLE_SIZE 0x8000000u
#define BM_MAX_PHYS_SIZE  0x20000000ull
#define BM_TE_RESERVED    0xff000000000001feull
#define BM_TE_OFFSET      0x00fffffffffffe00ull
#define BM_TE_ALL_ONES    1ull

/* Table entries (clusters of bits) a bitmap of granularity 2^@gbits needs
 * for @size bytes. */
static uint64_t bm_table_size(const struct cow_img *img, uint64_t size, unsigned gbits)
{
	uint64_t bits = (size + (1ull << gbits) - 1) >> gbits, per = (uint64_t)img->cluster_size * 8;

	return (bits + per - 1) / per;
}

/* Name of the entry at @e (as a bounded string for messages). */
static int bm_name_len(const uint8_t *e)
{
	uint16_t n = cow_be16(e + 18);
	return n > 200 ? 200 : n;
}
#define BM_NAME(e) bm_name_len(e), (const char *)(e) + BM_ENTRY_HDR + cow_be32((e) + 20)

/* Read and check the bitmap directory of @img as QEMU's open does
 * (bitmap_list_load, check_dir_entry) at the image's current size: 1 when
 * there is none (no extension, no bitmap), 0 with *dirp (malloc'ed), *dsize
 * and *doff, or -EINVAL naming what is wrong. */
static int bm_load_dir(struct cow_img *img, uint8_t **dirp, uint64_t *dsizep, uint64_t *doffp,
		       struct ut_err *err)
{
	uint64_t dsize, doff, p;
	uint32_t nb, seen = 0;
	uint8_t *dir;
	int ret;

	*dirp = NULL;
	if (!cow_bitmaps_ext(img, &nb, &dsize, &doff) || !nb)
		return 1;
	if (!doff || !cow_bitmaps_dir_in_file(img, dsize, doff) ||
	    overlaps(doff, dsize, img->h.l1_off, (uint64_t)img->h.l1_size * 8) ||
	    overlaps(doff, dsize, img->h.rt_off, (uint64_t)img->h.rt_clusters << img->cluster_bits))
		return ut_errf(err, -EINVAL, "'%s': the bitmap directory (offset 0x%llx, %llu bytes) is invalid",
			       img->path, (unsigned long long)doff, (unsigned long long)dsize);
	dir = malloc(dsize);
	if (!dir)
		return ut_errf(err, -ENOMEM, "out of memory");
	ret = cow_pread_full(img, dir, dsize, doff, false, err);
	if (ret < 0)
		goto out;
	for (p = 0; p < dsize; seen++) {
		const uint8_t *e = dir + p;
		uint64_t toff, tsize, phys;
		uint32_t flags;
		unsigned gb;

		if (dsize - p < BM_ENTRY_HDR || seen >= nb ||
		    ((cow_bitmap_entry_size(e) + 7) & ~7ull) > dsize - p) {
			ret = ut_errf(err, -EINVAL, "'%s': the bitmap directory is broken (entry %u)", img->path, seen);
			goto out;
		}
		toff = cow_be64(e);
		tsize = cow_be32(e + 8);
		flags = cow_be32(e + 12);
		gb = e[17];
		phys = tsize * img->cluster_size;
		if (cow_be32(e + 20)) {
			ret = ut_errf(err, -ENOTSUP, "'%s': bitmap %u has extra data, which QEMU does not support either",
				      img->path, seen);
			goto out;
		}
		if (!tsize || !toff || (toff & (img->cluster_size - 1)) || tsize > BM_MAX_TABLE_SIZE ||
		    gb > 31 || gb < 9 || (flags & BM_RESERVED_FLAGS) || cow_be16(e + 18) > 1023 ||
		    e[16] != 1 || phys > BM_MAX_PHYS_SIZE ||
		    (!(flags & COW_BITMAP_IN_USE) && img->size > ((phys * 8) << gb)) ||
		    toff > img->file_size || tsize * 8 > img->file_size - toff) {
			ret = ut_errf(err, -EINVAL, "'%s': bitmap '%.*s' does not satisfy the constraints of the specification",
				      img->path, BM_NAME(e));
			goto out;
		}
		p += (cow_bitmap_entry_size(e) + 7) & ~7ull;
	}
	if (seen != nb) {
		ret = ut_errf(err, -EINVAL, "'%s': the bitmap directory holds %u bitmaps, the header says %u",
			      img->path, seen, nb);
		goto out;
	}
	*dirp = dir;
	dir = NULL;
	*dsizep = dsize;
	*doffp = doff;
out:
	free(dir);
	return ret;
}

int cow_bitmaps_valid(struct cow_img *img, struct ut_err *err)
{
	uint64_t dsize, doff;
	uint8_t *dir;
	int ret = bm_load_dir(img, &dir, &dsize, &doff, err);

	free(dir);
	if (ret < 0)
		ut_err_prefix(err, "writing refused (QEMU cannot load its bitmaps either)");
	return ret;
}

/* The table of the bitmap at directory entry @e, its entries checked
 * (reserved bits, alignment, inside the file): *tp (malloc'ed, host
 * order). */
static int bm_load_table(struct cow_img *img, const uint8_t *e, uint64_t **tp, struct ut_err *err)
{
	uint64_t toff = cow_be64(e), n = cow_be32(e + 8), cs = img->cluster_size;
	uint64_t *t = malloc(n * 8);
	int ret;

	*tp = NULL;
	if (!t)
		return ut_errf(err, -ENOMEM, "out of memory");
	ret = cow_pread_full(img, t, n * 8, toff, false, err);
	for (uint64_t i = 0; ret == 0 && i < n; i++) {
		uint64_t v = cow_be64((uint8_t *)&t[i]), off = v & BM_TE_OFFSET;
		t[i] = v;
		if ((v & BM_TE_RESERVED) || (off && ((v & BM_TE_ALL_ONES) || (off & (cs - 1)) ||
						      off >= img->file_size)))
			ret = ut_errf(err, -EINVAL, "'%s': bitmap '%.*s': table entry %llu (0x%016llx) is invalid",
				      img->path, BM_NAME(e), (unsigned long long)i, (unsigned long long)v);
	}
	if (ret < 0) {
		free(t);
		return ret;
	}
	*tp = t;
	return 0;
}

/* Undo cow_bitmaps_mark_in_use of a resize that did not happen (steps 1
 * and 2 below): the in-use flag of every entry of the directory the
 * header names cleared in place (4 bytes each), fdatasync. Only valid
 * while the size on disk is the one the bitmaps describe and no data
 * inside it changed: _begin refused any bitmap already in use, so every
 * flag was clear before. After a failed fdatasync the writes are still
 * made (what the file reads is right whichever of them reach the disk:
 * the bitmaps describe the unchanged data either way) and the sync
 * reports the error. *@made: every flag write was made (the file reads
 * them consistent, whatever the sync said). */
static int bm_clear_in_use(struct cow_img *img, bool *made, struct ut_err *err)
{
	uint64_t dsize, doff, p;
	uint8_t *dir = NULL;
	bool wrote = false;
	int ret;

	*made = false;
	if (!cow_bitmaps_ext(img, (uint32_t[]){ 0 }, &dsize, &doff) ||
	    !cow_bitmaps_dir_in_file(img, dsize, doff))
		return ut_errf(err, -EINVAL, "'%s': the bitmaps extension is gone", img->path);
	dir = malloc(dsize);
	if (!dir)
		return ut_errf(err, -ENOMEM, "out of memory");
	ret = cow_pread_full(img, dir, dsize, doff, false, err);
	/* (checked by _begin: every entry inside the directory) */
	for (p = 0; ret == 0 && p + BM_ENTRY_HDR <= dsize;
	     p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull) {
		uint32_t flags = cow_be32(dir + p + 12);
		uint8_t b[4];

		if (!(flags & COW_BITMAP_IN_USE))
			continue;
		cow_put32(b, flags & ~COW_BITMAP_IN_USE);
		ret = cow_pwrite_full(img, b, 4, doff + p + 12, err);
		wrote = true;
	}
	*made = ret == 0;
	if (ret == 0 && wrote)
		ret = cow_sync(img, err);
	free(dir);
	return ret;
}

static int bm_track_begin(struct cow_img *img, uint64_t new_size, struct ut_err *err);
static void bm_track_resize(struct cow_img *img);
static void bm_set(struct cow_img *img, uint64_t off, uint64_t len);

int cow_bitmaps_resize_begin(struct cow_img *img, uint64_t new_size, struct ut_err *err)
{
	uint64_t dsize, doff, p, *t = NULL;
	uint8_t *dir;
	bool made;
	int ret;

	/* a writable open that tracks its bitmaps: they follow the resize
	 * in memory (bm_track_begin) */
	ret = bm_track_begin(img, new_size, err);
	if (ret < 0 || !img->keep_bitmaps || img->fmt != COW_FMT_QCOW2)
		return ret;
	ret = bm_load_dir(img, &dir, &dsize, &doff, err);
	if (ret)
		return ret < 0 ? ret : 0;
	for (p = 0; p < dsize; p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull) {
		const uint8_t *e = dir + p;
		uint64_t ntab = bm_table_size(img, new_size, e[17]);

		if (cow_be32(e + 12) & COW_BITMAP_IN_USE) {
			ret = ut_errf(err, -ENOTSUP, "'%s': bitmap '%.*s' is inconsistent and cannot be used (as QEMU refuses it); remove it first (qemu-img bitmap --remove)",
				      img->path, BM_NAME(e));
			goto out;
		}
		/* what load_bitmap_data requires: exactly the entries the size needs */
		if (cow_be32(e + 8) != bm_table_size(img, img->size, e[17])) {
			ret = ut_errf(err, -EINVAL, "'%s': bitmap '%.*s': its table has %u entries, the image size needs %llu",
				      img->path, BM_NAME(e), cow_be32(e + 8),
				      (unsigned long long)bm_table_size(img, img->size, e[17]));
			goto out;
		}
		if (ntab > BM_MAX_TABLE_SIZE || ntab * img->cluster_size > BM_MAX_PHYS_SIZE) {
			ret = ut_errf(err, -EFBIG, "'%s': bitmap '%.*s' (granularity %llu) would be too large at the new size (QEMU could not store it); remove it or use a larger granularity",
				      img->path, BM_NAME(e), 1ull << e[17]);
			goto out;
		}
		ret = bm_load_table(img, e, &t, err);
		free(t);
		t = NULL;
		if (ret < 0)
			goto out;
	}
	ret = cow_bitmaps_mark_in_use(img, err);
	if (ret == 0)
		img->bm_resizing = true;
	else if (ret > 0)
		ret = ut_errf(err, -EINVAL, "'%s': the bitmap directory is invalid", img->path);
	else if (bm_clear_in_use(img, &made, NULL) == 0 || made)
		/* some flags may have been written: all back (step 1 below) */
		ut_err_prefix(err, "resize refused, the persistent bitmaps are unchanged");
	else
		ut_err_prefix(err, "resize refused, the persistent bitmaps may stay marked in use ('qemu-img bitmap --remove' removes them)");
out:
	free(dir);
	return ret;
}


/* @n clusters for @len bytes of new bitmap metadata, written from @buf:
 * the offset in *off. */
static int bm_write_new(struct cow_img *img, const void *buf, uint64_t len, uint64_t *off,
			struct ut_err *err)
{
	uint64_t cs = img->cluster_size, n = (len + cs - 1) / cs, got;
	uint8_t *pad = calloc(n, cs);
	int ret;

	if (!pad)
		return ut_errf(err, -ENOMEM, "out of memory");
	memcpy(pad, buf, len);
	if (n == 1)
		ret = cow_alloc_clusters(img, 1, off, &got, err);
	else
		ret = cow_alloc_contig(img, n, off, err);
	if (ret == 0) {
		ret = cow_pwrite_full(img, pad, n * cs, *off, err);
		if (ret < 0)
			cow_free_unlinked(img, *off, n, NULL);
	}
	free(pad);
	return ret;
}

/* Keep bits [0, @keep) of the table entry @v that holds bits
 * [@first, @first + cluster bits) of a bitmap, clear the rest: the new
 * entry in *out (0, @v itself when nothing changes, or a new data cluster
 * written and durable with the next flush). */
static int bm_cut_entry(struct cow_img *img, uint64_t v, uint64_t first, uint64_t keep, uint8_t *buf,
			uint64_t *out, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, off = v & BM_TE_OFFSET, nbits = keep - first, noff;
	bool changed = false, any = false;
	int ret;

	*out = 0;
	if (!v)
		return 0;
	if (off) {
		ret = cow_pread_full(img, buf, cs, off, true, err);
		if (ret < 0)
			return ret;
	} else {
		memset(buf, 0xff, cs);   /* "all ones" */
		changed = true;
	}
	/* serialised as QEMU does: bit i in byte i / 8, bit i % 8 */
	for (uint64_t i = nbits; i < cs * 8; i++) {
		if ((i & 7) == 0 && i + 8 <= cs * 8) {
			if (buf[i / 8]) {
				buf[i / 8] = 0;
				changed = true;
			}
			i += 7;
			continue;
		}
		if (buf[i / 8] & (1u << (i & 7))) {
			buf[i / 8] &= (uint8_t)~(1u << (i & 7));
			changed = true;
		}
	}
	for (uint64_t i = 0; i < (nbits + 7) / 8 && !any; i++)
		any = buf[i] != 0;
	if (!changed) {
		*out = v;
		return 0;
	}
	if (!any)
		return 0;
	ret = bm_write_new(img, buf, cs, &noff, err);
	if (ret == 0)
		*out = noff;
	return ret;
}

/* In a shrink, the data cluster of the kept table entry @v moves to a new
 * cluster when a free one lies below it (free_hint), as QEMU, which stores
 * every bitmap again at close, first-fit after the shrink freed clusters,
 * leaves none past the data: else the file could not be cut before it
 * (resize.c cut_file). The new cluster is written now, durable with the
 * next flush, before the directory that names it (the old one is freed
 * after the switch, I4). *out = the entry (@v when it stays). */
static int bm_move_low(struct cow_img *img, uint64_t v, uint8_t *buf, uint64_t *out,
		       struct ut_err *err)
{
	uint64_t off = v & BM_TE_OFFSET, noff, got;
	int ret;

	*out = v;
	if (!off || (off >> img->cluster_bits) <= img->free_hint)
		return 0;
	ret = cow_alloc_clusters(img, 1, &noff, &got, err);
	if (ret < 0)
		return ret;
	if (noff > off) {   /* (none below after all: it stays) */
		cow_free_unlinked(img, noff, 1, NULL);   /* (failing: a leak) */
		return 0;
	}
	ret = cow_pread_full(img, buf, img->cluster_size, off, true, err);
	if (ret == 0)
		ret = cow_pwrite_full(img, buf, img->cluster_size, noff, err);
	if (ret < 0) {
		cow_free_unlinked(img, noff, 1, NULL);
		return ret;
	}
	*out = noff;
	return 0;
}

/* The header extension of the bitmaps: the file offset of its directory
 * offset field, from the header on disk; and the same field in
 * img->h.other_ext. */
static int bm_ext_field(struct cow_img *img, uint64_t *file_off, uint8_t **mem, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, len = img->file_size < cs ? img->file_size : cs;
	uint8_t *x = img->h.other_ext, *h = malloc(cs);
	size_t o;
	int ret;

	*file_off = 0;
	*mem = NULL;
	if (!h)
		return ut_errf(err, -ENOMEM, "out of memory");
	ret = cow_pread_full(img, h, len, 0, false, err);
	for (o = img->h.hdr_len; ret == 0 && o + 8 <= len;) {
		uint32_t type = cow_be32(h + o), l = cow_be32(h + o + 4);
		if (type == QCOW_EXT_END)
			break;
		if (type == QCOW_EXT_BITMAPS && l >= 24 && o + 8 + 24 <= len) {
			*file_off = o + 8 + 16;
			break;
		}
		o += 8 + (((size_t)l + 7) & ~(size_t)7);
	}
	for (o = 0; ret == 0 && o + 8 <= img->h.other_ext_len;
	     o += 8 + (((size_t)cow_be32(x + o + 4) + 7) & ~(size_t)7)) {
		if (cow_be32(x + o) == QCOW_EXT_BITMAPS && cow_be32(x + o + 4) >= 24) {
			*mem = x + o + 8 + 16;
			break;
		}
	}
	free(h);
	if (ret == 0 && (!*file_off || !*mem))
		ret = ut_errf(err, -EINVAL, "'%s': the bitmaps extension is not in the header", img->path);
	return ret;
}

/* Set bits [@from, @to) (bitmap bit numbers, @to at most the bitmap's
 * end) of the table entry @v that holds bits [@first, @first + cluster
 * bits): the new entry in *out (@v itself when it is "all ones", else a
 * new data cluster, written, durable with the next flush). */
static int bm_dirty_entry(struct cow_img *img, uint64_t v, uint64_t first, uint64_t from,
			  uint64_t to, uint8_t *buf, uint64_t *out, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, off = v & BM_TE_OFFSET, noff;
	int ret;

	*out = v;
	if (v & BM_TE_ALL_ONES)
		return 0;
	if (off) {
		ret = cow_pread_full(img, buf, cs, off, true, err);
		if (ret < 0)
			return ret;
	} else {
		memset(buf, 0, cs);
	}
	for (uint64_t i = from - first; i < to - first && i < cs * 8; i++)
		buf[i / 8] |= (uint8_t)(1u << (i & 7));
	ret = bm_write_new(img, buf, cs, &noff, err);
	if (ret == 0)
		*out = noff;
	return ret;
}

/* A set of new bitmap tables and a new directory, written and durable,
 * that the header does not name yet (img->bm_prep). */
struct bm_range { uint64_t off, len; };
struct cow_bm_resize {
	uint64_t doff, dsize, ndoff;   /* the directory now, the new one */
	uint64_t field;                /* file offset of the header's directory offset */
	uint8_t *mem;                  /* the same field in img->h.other_ext */
	struct bm_range *fr;           /* freed after the switch: old tables, dropped data */
	struct bm_range *nw;           /* new clusters: freed again without the switch */
	size_t nfr, nnw;
};

static int bm_note(struct bm_range **l, size_t *n, uint64_t off, uint64_t len, struct ut_err *err)
{
	struct bm_range *x = realloc(*l, (*n + 1) * sizeof(**l));

	if (!x)
		return ut_errf(err, -ENOMEM, "out of memory");
	x[*n].off = off;
	x[(*n)++].len = len;
	*l = x;
	return 0;
}

/* Release @st; with @unlinked its new clusters are freed at once (nothing
 * names them: I17; a failure there leaks them). */
static void bm_prep_free(struct cow_img *img, struct cow_bm_resize *st, bool unlinked)
{
	if (!st)
		return;
	for (size_t i = 0; unlinked && i < st->nnw; i++)
		cow_free_unlinked(img, st->nw[i].off, (st->nw[i].len + img->cluster_size - 1) / img->cluster_size,
				  NULL);
	free(st->fr);
	free(st->nw);
	free(st);
}

/* Build, for every bitmap of the directory the header names, a table for
 * a disk of @new_size bytes (the bitmaps describing @old_size now) and a
 * new directory (in-use flags cleared), written to new clusters and made
 * durable (cow_flush); *out describes them for bm_switch. Per bitmap:
 *   resizing (@dirty_from UINT64_MAX): entries wholly below min(old, new)
 *   bits kept (in a shrink moved down by bm_move_low), the one across it
 *   rewritten with the bits past it cleared (bm_cut_entry), the rest 0;
 *   same size (@dirty_from: data from that byte on may have changed
 *   unrecorded): every bit from there to the end set (entries wholly past
 *   it "all ones", the one across it rewritten, bm_dirty_entry).
 * A bitmap whose table does not change keeps it. On failure the new
 * clusters are freed again. */
static int bm_build(struct cow_img *img, uint64_t old_size, uint64_t new_size, uint64_t dirty_from,
		    struct cow_bm_resize **out, struct ut_err *err)
{
	uint64_t p, cs = img->cluster_size, bpc = cs * 8;
	uint64_t *t = NULL, *nt = NULL;
	uint8_t *dir = NULL, *buf = NULL;
	struct cow_bm_resize *st = calloc(1, sizeof(*st));
	bool shrink = new_size < old_size;
	int ret;

	*out = NULL;
	buf = malloc(cs);
	if (!st || !buf) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (!cow_bitmaps_ext(img, (uint32_t[]){ 0 }, &st->dsize, &st->doff)) {
		ret = ut_errf(err, -EINVAL, "'%s': the bitmaps extension is gone", img->path);
		goto out;
	}
	dir = malloc(st->dsize);
	if (!dir) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = cow_pread_full(img, dir, st->dsize, st->doff, false, err);
	if (ret < 0)
		goto out;
	for (p = 0; p < st->dsize; p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull) {
		uint8_t *e = dir + p;
		unsigned gb = e[17];
		uint64_t otab = cow_be32(e + 8), ntab = bm_table_size(img, new_size, gb);
		uint64_t obits = (old_size + (1ull << gb) - 1) >> gb, nbits = (new_size + (1ull << gb) - 1) >> gb;
		uint64_t keep = obits < nbits ? obits : nbits, dbit = dirty_from >> gb, toff;
		/* a shrink also moves what lies above a free cluster: the
		 * data clusters (bm_move_low) and a one-cluster table (first
		 * fit; a longer one would go to the end, cow_alloc_contig) */
		bool changed = ntab != otab ||
			       (shrink && ntab * 8 <= cs &&
				(cow_be64(e) >> img->cluster_bits) > img->free_hint);
		void *n2 = realloc(st->fr, (st->nfr + otab + 1) * sizeof(*st->fr));

		if (!n2) {
			ret = ut_errf(err, -ENOMEM, "out of memory");
			goto out;
		}
		st->fr = n2;
		ret = bm_load_table(img, e, &t, err);
		if (ret < 0)
			goto out;
		nt = calloc(ntab, 8);
		if (!nt) {
			ret = ut_errf(err, -ENOMEM, "out of memory");
			goto out;
		}
		for (uint64_t i = 0; i < ntab && ret == 0; i++) {
			uint64_t old = i < otab ? t[i] : 0;

			if (dirty_from != UINT64_MAX && (i + 1) * bpc <= dbit)
				nt[i] = old;
			else if (dirty_from != UINT64_MAX && i * bpc >= dbit)
				nt[i] = BM_TE_ALL_ONES;
			else if (dirty_from != UINT64_MAX)
				ret = bm_dirty_entry(img, old, i * bpc, dbit, nbits, buf, &nt[i], err);
			else if (i * bpc >= keep)
				nt[i] = 0;
			else if ((i + 1) * bpc <= keep && shrink)
				ret = bm_move_low(img, old, buf, &nt[i], err);
			else if ((i + 1) * bpc <= keep)
				nt[i] = old;
			else
				ret = bm_cut_entry(img, old, i * bpc, keep, buf, &nt[i], err);
			if (nt[i] != old)
				changed = true;
		}
		/* the data clusters written for the new table (also those of
		 * a table that failed part way: unwritten entries are 0) */
		for (uint64_t i = 0; i < ntab; i++) {
			uint64_t old = i < otab ? t[i] : 0, off = nt[i] & BM_TE_OFFSET;
			int r = off && off != (old & BM_TE_OFFSET) ? bm_note(&st->nw, &st->nnw, off, cs, err) : 0;

			if (r < 0 && ret == 0)
				ret = r;
		}
		if (ret < 0)
			goto out;
		/* the data clusters no new entry keeps */
		for (uint64_t i = 0; i < otab; i++) {
			if ((t[i] & BM_TE_OFFSET) && (i >= ntab || nt[i] != t[i])) {
				st->fr[st->nfr].off = t[i] & BM_TE_OFFSET;
				st->fr[st->nfr++].len = cs;
			}
		}
		if (changed) {
			for (uint64_t i = 0; i < ntab; i++)
				cow_put64((uint8_t *)&nt[i], nt[i]);
			ret = bm_write_new(img, nt, ntab * 8, &toff, err);
			if (ret == 0)
				ret = bm_note(&st->nw, &st->nnw, toff, ntab * 8, err);
			if (ret < 0)
				goto out;
			st->fr[st->nfr].off = cow_be64(e);
			st->fr[st->nfr++].len = otab * 8;
			cow_put64(e, toff);
			cow_put32(e + 8, (uint32_t)ntab);
		}
		cow_put32(e + 12, cow_be32(e + 12) & ~COW_BITMAP_IN_USE);
		free(t);
		free(nt);
		t = nt = NULL;
	}
	ret = bm_write_new(img, dir, st->dsize, &st->ndoff, err);
	if (ret == 0)
		ret = bm_note(&st->nw, &st->nnw, st->ndoff, st->dsize, err);
	if (ret == 0)
		ret = cow_flush(img, err);
	if (ret == 0)
		ret = bm_ext_field(img, &st->field, &st->mem, err);
out:
	if (ret < 0)
		bm_prep_free(img, st, true);
	else
		*out = st;
	free(t);
	free(nt);
	free(dir);
	free(buf);
	return ret;
}

/* Switch the header to the directory @st built (8 bytes in place, then
 * fdatasync), then free the old directory, the old tables and the data
 * clusters no new table uses (I4) and flush. *switched: the header write
 * was made (the file names the new directory from then on, whatever the
 * sync says). Releases @st (its new clusters freed when not switched). */
static int bm_switch(struct cow_img *img, struct cow_bm_resize *st, bool *switched,
		     struct ut_err *err)
{
	uint8_t be[8];
	int ret;

	cow_put64(be, st->ndoff);
	ret = cow_pwrite_full(img, be, 8, st->field, err);
	*switched = ret == 0;
	if (ret < 0)
		goto out;
	memcpy(st->mem, be, 8);
	ret = cow_sync(img, err);
	if (ret == 0)
		ret = cow_meta_ranges_load(img, err);
	if (ret == 0)
		ret = cow_free_later(img, st->doff, st->dsize, err);
	for (size_t i = 0; ret == 0 && i < st->nfr; i++)
		ret = cow_free_later(img, st->fr[i].off, st->fr[i].len, err);
	if (ret == 0)
		ret = cow_flush(img, err);
out:
	bm_prep_free(img, st, !*switched);
	return ret;
}

int cow_bitmaps_resize_prepare(struct cow_img *img, uint64_t old_size, uint64_t new_size,
			       struct ut_err *err)
{
	int ret;

	if (!img->bm_resizing)
		return 0;
	bm_prep_free(img, img->bm_prep, true);
	img->bm_prep = NULL;
	ret = bm_build(img, old_size, new_size, UINT64_MAX, &img->bm_prep, err);
	if (ret < 0)
		ut_err_prefix(err, "'%s': unable to store its persistent bitmaps at the new size", img->path);
	return ret;
}

int cow_bitmaps_resize_commit(struct cow_img *img, struct ut_err *err)
{
	struct cow_bm_resize *st = img->bm_prep;
	bool switched = false;
	int ret;

	bm_track_resize(img);
	if (!img->bm_resizing)
		return 0;
	img->bm_resizing = false;
	img->bm_prep = NULL;
	if (!st)
		return ut_errf(err, -EINVAL, "'%s': internal error: bitmaps not prepared", img->path);
	ret = bm_switch(img, st, &switched, err);
	if (ret < 0 && switched)
		ut_err_prefix(err, "'%s': its persistent bitmaps are stored at the new size, consistent; finishing failed (clusters may leak)",
			      img->path);
	else if (ret < 0)
		ut_err_prefix(err, "'%s': unable to switch to its resized persistent bitmaps (they stay marked in use: 'qemu-img bitmap --remove' removes them)",
			      img->path);
	return ret;
}

int cow_bitmaps_resize_abort(struct cow_img *img, bool size_kept, uint64_t changed_from,
			     struct ut_err *err)
{
	struct cow_bm_resize *st = NULL;
	bool switched = false, made = false;
	int ret = 0;

	/* tracked: the size in the file unknown, no longer (in use); the
	 * old size, the released tail recorded */
	if (img->bm && !size_kept) {
		cow_bitmaps_track_free(img);
		return 1;
	}
	if (img->bm && changed_from < img->size)
		bm_set(img, changed_from, img->size - changed_from);
	if (!img->bm_resizing)
		return 0;
	img->bm_resizing = false;
	bm_prep_free(img, img->bm_prep, true);
	img->bm_prep = NULL;
	if (!size_kept)
		return 1;
	if (changed_from == UINT64_MAX)
		ret = bm_clear_in_use(img, &made, err);
	else
		ret = bm_build(img, img->size, img->size, changed_from, &st, err);
	if (ret == 0 && st)
		ret = bm_switch(img, st, &switched, err);
	/* the flags cleared or the new directory named in the file (a failed
	 * sync after that: consistent whichever reaches the disk) */
	if (ret == 0 || made || switched)
		return 0;
	ut_err_prefix(err, "'%s': its persistent bitmaps stay marked in use", img->path);
	return 1;
}

/* ---- tracking writes (a writable open without COW_O_KEEP_BITMAPS) ----
 *
 * See the top of this file for the states. In memory, a tracked bitmap
 * mirrors its table: one chunk per table entry (a cluster of bits, bit i
 * of the chunk in byte i / 8, bit i % 8, as on disk), NULL while all its
 * bits are clear, BM_ONES while all are set ("all ones" entry), else a
 * malloc'ed cluster. */
static uint8_t bm_ones_tag;
#define BM_ONES (&bm_ones_tag)

struct bm_mem {
	uint64_t dpos;               /* offset of its entry in the directory */
	char *name;                  /* (to find the entry again) */
	uint16_t nlen;
	unsigned gbits;
	bool enabled;                /* flag "auto": writes set its bits */
	uint64_t nbits, nchunks;     /* bits (the disk size rounded up to the
					granularity), table entries */
	uint64_t disk_nchunks;       /* entries of its table in the file (other
					than nchunks after a resize) */
	uint8_t **chunk;             /* nchunks chunks: enabled ones, and
					disabled ones once a resize loaded them
					(NULL: their table in the file stays) */
};

struct cow_bm_track {
	struct bm_mem *bm;
	size_t n;
	bool stored;                 /* the header names a directory with their
					in-use flags cleared: the next change
					marks them in use first */
};

static void bm_mem_free_data(struct bm_mem *b)
{
	for (uint64_t c = 0; b->chunk && c < b->nchunks; c++)
		if (b->chunk[c] != BM_ONES)
			free(b->chunk[c]);
	free(b->chunk);
	b->chunk = NULL;
}

static void bm_mem_free(struct bm_mem *b)
{
	bm_mem_free_data(b);
	free(b->name);
}

static void bm_track_free(struct cow_bm_track *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		bm_mem_free(&t->bm[i]);
	free(t->bm);
	free(t);
}

void cow_bitmaps_track_free(struct cow_img *img)
{
	bm_track_free(img->bm);
	img->bm = NULL;
}

/* Bits [@a, @b) of chunk @p set. */
static void bm_bits_set(uint8_t *p, uint64_t a, uint64_t b)
{
	for (; a < b && (a & 7); a++)
		p[a >> 3] |= (uint8_t)(1u << (a & 7));
	if (b - a >= 8) {
		memset(p + (a >> 3), 0xff, (b - a) >> 3);
		a += (b - a) & ~7ull;
	}
	for (; a < b; a++)
		p[a >> 3] |= (uint8_t)(1u << (a & 7));
}

/* 0: the first @nbits bits of chunk @p all clear; 1: all set; 2: mixed. */
static int bm_chunk_kind(const uint8_t *p, uint64_t nbits)
{
	uint64_t nb = nbits >> 3, i;
	uint8_t first = p[0], tail = 0, mask = (uint8_t)((1u << (nbits & 7)) - 1);

	if (first != 0 && first != 0xff && nb)
		return 2;
	for (i = 1; i < nb; i++)
		if (p[i] != first)
			return 2;
	if (nbits & 7) {
		tail = p[nb] & mask;
		if (!nb)
			return tail == 0 ? 0 : tail == mask ? 1 : 2;
		if (tail != (first ? mask : 0))
			return 2;
	}
	return first ? 1 : 0;
}

/* The data of bitmap @b from its table @t (b->nchunks entries, checked
 * by bm_load_table) into b->chunk; the bits past its end cleared (as
 * stored again). 0, 1 when a cluster cannot be read, or -ENOMEM. */
static int bm_mem_data(struct cow_img *img, struct bm_mem *b, const uint64_t *t)
{
	uint64_t cs = img->cluster_size, per = cs * 8;

	b->chunk = calloc(b->nchunks, sizeof(*b->chunk));
	if (!b->chunk)
		return -ENOMEM;
	for (uint64_t c = 0; c < b->nchunks; c++) {
		uint64_t off = t[c] & BM_TE_OFFSET, valid = b->nbits - c * per;

		if (!off) {
			b->chunk[c] = (t[c] & BM_TE_ALL_ONES) ? BM_ONES : NULL;
			continue;
		}
		b->chunk[c] = malloc(cs);
		if (!b->chunk[c])
			return -ENOMEM;
		if (cow_pread_full(img, b->chunk[c], cs, off, true, NULL) < 0)
			return 1;
		if (valid < per) {
			if (valid & 7)
				b->chunk[c][valid >> 3] &= (uint8_t)((1u << (valid & 7)) - 1);
			memset(b->chunk[c] + ((valid + 7) >> 3), 0, cs - ((valid + 7) >> 3));
		}
	}
	return 0;
}

/* The bitmap at directory entry @e (at @dpos), consistent (not in use),
 * in memory: its table of exactly the entries the disk size needs (QEMU's
 * check), every entry valid (bm_load_table), and, when it is enabled, its
 * data (bits past its end cleared). 1 when it cannot be tracked (it stays
 * in use), 0, or -ENOMEM. */
static int bm_mem_load(struct cow_img *img, const uint8_t *e, uint64_t dpos, struct bm_mem *b)
{
	uint64_t *t = NULL;
	int ret;

	memset(b, 0, sizeof(*b));
	b->dpos = dpos;
	b->gbits = e[17];
	b->enabled = cow_be32(e + 12) & COW_BITMAP_AUTO;
	b->nbits = (img->size + (1ull << b->gbits) - 1) >> b->gbits;
	b->nchunks = bm_table_size(img, img->size, b->gbits);
	b->nlen = cow_be16(e + 18);
	if (cow_be32(e + 8) != b->nchunks || !b->nchunks)
		return 1;
	b->name = malloc(b->nlen + 1u);
	if (!b->name)
		return -ENOMEM;
	memcpy(b->name, e + BM_ENTRY_HDR + cow_be32(e + 20), b->nlen);
	b->disk_nchunks = b->nchunks;
	ret = bm_load_table(img, e, &t, NULL);
	if (ret < 0)
		return ret == -ENOMEM ? ret : 1;
	if (b->enabled)
		ret = bm_mem_data(img, b, t);
	free(t);
	return ret;
}

int cow_bitmaps_open_rw(struct cow_img *img, struct ut_err *err)
{
	struct cow_bm_track *t = NULL;
	uint64_t dsize, doff, p;
	uint8_t *dir = NULL;
	int ret;

	/* what can be tracked (a failure here only means "not tracked":
	 * those bitmaps stay in use, as QEMU leaves one it cannot load) */
	if (img->fmt == COW_FMT_QCOW2 && bm_load_dir(img, &dir, &dsize, &doff, NULL) == 0) {
		t = calloc(1, sizeof(*t));
		for (p = 0; t && p < dsize; p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull) {
			struct bm_mem *n;
			int r;

			if (cow_be32(dir + p + 12) & COW_BITMAP_IN_USE)
				continue;   /* inconsistent: stays so */
			n = realloc(t->bm, (t->n + 1) * sizeof(*t->bm));
			if (!n)
				break;
			t->bm = n;
			r = bm_mem_load(img, dir + p, p, &t->bm[t->n]);
			t->n++;
			if (r < 0)
				break;
			if (r > 0) {
				/* kept out: released, its slot reused */
				bm_mem_free(&t->bm[--t->n]);
			}
		}
		if (t && p < dsize) {   /* out of memory: nothing tracked */
			bm_track_free(t);
			t = NULL;
		}
		free(dir);
	}
	ret = cow_bitmaps_mark_in_use(img, err);
	if (ret == 0 && t && t->n) {
		img->bm = t;
		t = NULL;
	}
	bm_track_free(t);
	return ret;
}

/* Bits [@off >> g, (@off + @len - 1) >> g] set in every enabled
 * tracked bitmap, in memory (out of memory: tracking ends, in use). */
static void bm_set(struct cow_img *img, uint64_t off, uint64_t len)
{
	struct cow_bm_track *t = img->bm;
	uint64_t cs = img->cluster_size, per = cs * 8;

	for (size_t i = 0; len && t && i < t->n; i++) {
		struct bm_mem *b = &t->bm[i];
		uint64_t first = off >> b->gbits, last = (off + len - 1) >> b->gbits;

		if (!b->enabled || first >= b->nbits)
			continue;
		if (last >= b->nbits)
			last = b->nbits - 1;
		for (uint64_t c = first / per; c <= last / per; c++) {
			uint64_t lo = first > c * per ? first - c * per : 0;
			uint64_t hi = last < c * per + per - 1 ? last - c * per : per - 1;

			if (b->chunk[c] == BM_ONES)
				continue;
			if (!b->chunk[c] && !(b->chunk[c] = calloc(1, cs))) {
				/* a change that cannot be recorded: nothing is
				 * stored, they stay in use (marked at open or
				 * by cow_bitmaps_dirty_slow) */
				cow_bitmaps_track_free(img);
				return;
			}
			bm_bits_set(b->chunk[c], lo, hi + 1);
		}
	}
}

int cow_bitmaps_dirty_slow(struct cow_img *img, uint64_t off, uint64_t len, struct ut_err *err)
{
	struct cow_bm_track *t = img->bm;
	int ret;

	if (t->stored) {
		/* stored consistent (cow_overlay_check), and a change follows:
		 * in use again before it can reach the file */
		ret = cow_bitmaps_mark_in_use(img, err);
		if (ret > 0)
			ret = ut_errf(err, -EIO, "'%s': its bitmap directory is gone", img->path);
		if (ret < 0)
			return ret;
		t->stored = false;
	}
	/* a resize's own changes (the area past the old end released, the
	 * new one zeroed, a shrink's tail) are not recorded, as by QEMU:
	 * the bitmaps follow the size (bm_track_resize; a failed shrink
	 * records its tail, cow_bitmaps_resize_abort) */
	if (!img->resizing)
		bm_set(img, off, len);
	return 0;
}

/* A resize of @img to @new_size begins (cow_bitmaps_resize_begin) while
 * it tracks bitmaps: in use on disk (marked again if they were stored),
 * and the data of the disabled ones loaded too (their tables change
 * size). Refused, before anything is written, as QEMU refuses it: a
 * bitmap too large at @new_size (-EFBIG); and when a disabled one cannot
 * be read (-EIO, -ENOMEM). 0 or -errno with @err. */
static int bm_track_begin(struct cow_img *img, uint64_t new_size, struct ut_err *err)
{
	struct cow_bm_track *t = img->bm;
	uint64_t dsize = 0, doff, *tab = NULL;
	uint8_t *dir = NULL;
	int ret = 0;

	if (!t)
		return 0;
	if (t->stored) {
		ret = cow_bitmaps_dirty_slow(img, 0, 0, err);
		if (ret < 0)
			return ret;
	}
	for (size_t i = 0; i < t->n; i++) {
		uint64_t ntab = bm_table_size(img, new_size, t->bm[i].gbits);

		if (ntab > BM_MAX_TABLE_SIZE || ntab * img->cluster_size > BM_MAX_PHYS_SIZE || !ntab)
			return ut_errf(err, -EFBIG, "'%s': bitmap '%.*s' (granularity %llu) would be too large at the new size (QEMU could not store it); remove it or use a larger granularity",
				       img->path, t->bm[i].nlen > 200 ? 200 : (int)t->bm[i].nlen, t->bm[i].name,
				       1ull << t->bm[i].gbits);
	}
	for (size_t i = 0; ret == 0 && i < t->n; i++) {
		struct bm_mem *b = &t->bm[i];
		const uint8_t *e;

		if (b->chunk)
			continue;
		if (!dir) {
			if (!cow_bitmaps_ext(img, (uint32_t[]){ 0 }, &dsize, &doff) ||
			    !cow_bitmaps_dir_in_file(img, dsize, doff)) {
				ret = ut_errf(err, -EIO, "'%s': its bitmap directory is gone", img->path);
				break;
			}
			dir = malloc(dsize);
			ret = dir ? cow_pread_full(img, dir, dsize, doff, false, err)
				  : ut_errf(err, -ENOMEM, "out of memory");
			if (ret < 0)
				break;
		}
		e = dir + b->dpos;
		if (b->dpos + BM_ENTRY_HDR > dsize || cow_bitmap_entry_size(e) > dsize - b->dpos ||
		    cow_be16(e + 18) != b->nlen || memcmp(e + BM_ENTRY_HDR + cow_be32(e + 20), b->name, b->nlen) ||
		    cow_be32(e + 8) != b->nchunks) {
			ret = ut_errf(err, -EIO, "'%s': its bitmap directory changed while it was open", img->path);
			break;
		}
		ret = bm_load_table(img, e, &tab, err);
		if (ret == 0) {
			ret = bm_mem_data(img, b, tab);
			if (ret > 0)
				ret = ut_errf(err, -EIO, "'%s': bitmap '%.*s': its data cannot be read", img->path,
					      (int)b->nlen, b->name);
			else if (ret < 0)
				ret = ut_errf(err, ret, "out of memory");
		}
		free(tab);
		tab = NULL;
		if (ret < 0) {
			/* (a partial load: the table in the file stays) */
			bm_mem_free_data(b);
		}
	}
	free(dir);
	if (ret < 0)
		ut_err_prefix(err, "resize refused (its persistent bitmaps are resized with it)");
	return ret;
}

/* After a resize wrote its size (cow_bitmaps_resize_commit): each tracked
 * bitmap resized in memory to img->size as QEMU resizes it: bits past the
 * smaller size dropped, new ones clear, the granule across the old or new
 * end keeping its bit. Out of memory: tracking ends. */
static void bm_track_resize(struct cow_img *img)
{
	struct cow_bm_track *t = img->bm;
	uint64_t cs = img->cluster_size, per = cs * 8;

	for (size_t i = 0; t && i < t->n; i++) {
		struct bm_mem *b = &t->bm[i];
		uint64_t nbits = (img->size + (1ull << b->gbits) - 1) >> b->gbits;
		uint64_t nch = bm_table_size(img, img->size, b->gbits);
		uint64_t keep = nbits < b->nbits ? nbits : b->nbits, c = keep / per;

		if (!b->chunk || !nch)
			goto untrack;
		if (nch != b->nchunks) {
			uint8_t **n;

			for (uint64_t k = nch; k < b->nchunks; k++)
				if (b->chunk[k] != BM_ONES)
					free(b->chunk[k]);
			n = realloc(b->chunk, nch * sizeof(*n));
			if (!n && nch > b->nchunks)
				goto untrack;
			if (n)
				b->chunk = n;
			for (uint64_t k = b->nchunks; k < nch; k++)
				b->chunk[k] = NULL;
			b->nchunks = nch;
		}
		/* the chunk across bit @keep: clear from there on */
		if (c < nch && keep % per) {
			uint64_t from = keep - c * per;

			if (b->chunk[c] == BM_ONES) {
				b->chunk[c] = calloc(1, cs);
				if (!b->chunk[c])
					goto untrack;
				bm_bits_set(b->chunk[c], 0, from);
			} else if (b->chunk[c]) {
				if (from & 7)
					b->chunk[c][from >> 3] &= (uint8_t)((1u << (from & 7)) - 1);
				memset(b->chunk[c] + ((from + 7) >> 3), 0, cs - ((from + 7) >> 3));
			}
		}
		b->nbits = nbits;
	}
	return;
untrack:
	cow_bitmaps_track_free(img);
}

/* May the old bitmap cluster(s) [@off, +@len) be freed once the new
 * directory is named: not the header, the active L1, the refcount table
 * or a range of img->meta, every cluster's refcount 1 (a damaged table
 * naming someone else's cluster is left alone: a leak at worst). */
static bool bm_may_free(struct cow_img *img, uint64_t off, uint64_t len)
{
	uint64_t cs = img->cluster_size, rc;

	if (off < cs || overlaps(off, len, img->h.l1_off, (uint64_t)img->h.l1_size * 8) ||
	    overlaps(off, len, img->h.rt_off, (uint64_t)img->h.rt_clusters << img->cluster_bits) ||
	    cow_meta_range_find(img, off, len))
		return false;
	for (uint64_t c = off >> img->cluster_bits; c <= (off + len - 1) >> img->cluster_bits; c++)
		if (cow_rc_get(img, c, &rc, NULL) < 0 || rc != 1)
			return false;
	return true;
}

/* The tracked bitmaps @t stored as new clusters: per enabled bitmap its
 * chunks (all clear: entry 0; all set: 1; else a new data cluster) and a
 * new table; a new directory (every entry as it is, those of @t with the
 * in-use flag cleared and an enabled one's new table); all durable
 * (cow_flush) and not yet named by the header: *out for bm_switch, which
 * frees the old directory and the old tables and data clusters of the
 * enabled ones after the switch. On failure the new clusters are freed
 * again. */
static int bm_build_store(struct cow_img *img, struct cow_bm_track *t, struct cow_bm_resize **out,
			  struct ut_err *err)
{
	uint64_t cs = img->cluster_size, per = cs * 8, *ot = NULL, *nt = NULL;
	struct cow_bm_resize *st = calloc(1, sizeof(*st));
	uint8_t *dir = NULL;
	int ret = 0;

	*out = NULL;
	if (!st) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (!cow_bitmaps_ext(img, (uint32_t[]){ 0 }, &st->dsize, &st->doff) ||
	    !cow_bitmaps_dir_in_file(img, st->dsize, st->doff)) {
		ret = ut_errf(err, -EINVAL, "'%s': the bitmaps extension is gone", img->path);
		goto out;
	}
	dir = malloc(st->dsize);
	if (!dir) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = cow_pread_full(img, dir, st->dsize, st->doff, false, err);
	for (size_t i = 0; ret == 0 && i < t->n; i++) {
		struct bm_mem *b = &t->bm[i];
		uint8_t *e = dir + b->dpos;
		uint64_t toff;

		/* the directory keeps its layout while the image is open
		 * (only a COW_O_KEEP_BITMAPS resize moves it) */
		if (b->dpos + BM_ENTRY_HDR > st->dsize || cow_bitmap_entry_size(e) > st->dsize - b->dpos ||
		    cow_be16(e + 18) != b->nlen || e[17] != b->gbits ||
		    memcmp(e + BM_ENTRY_HDR + cow_be32(e + 20), b->name, b->nlen) ||
		    cow_be32(e + 8) != b->disk_nchunks) {
			ret = ut_errf(err, -EINVAL, "'%s': its bitmap directory changed while it was open",
				      img->path);
			break;
		}
		cow_put32(e + 12, cow_be32(e + 12) & ~COW_BITMAP_IN_USE);
		if (!b->chunk)
			continue;   /* disabled, not resized: the same table */
		ret = bm_load_table(img, e, &ot, err);
		nt = ret == 0 ? calloc(b->nchunks, 8) : NULL;
		if (ret == 0 && !nt)
			ret = ut_errf(err, -ENOMEM, "out of memory");
		for (uint64_t c = 0; ret == 0 && c < b->nchunks; c++) {
			uint64_t valid = b->nbits - c * per < per ? b->nbits - c * per : per, v = 0;
			int k = b->chunk[c] == BM_ONES ? 1 : !b->chunk[c] ? 0 : bm_chunk_kind(b->chunk[c], valid);

			if (k == 1)
				v = BM_TE_ALL_ONES;
			else if (k == 2 && (ret = bm_write_new(img, b->chunk[c], cs, &v, err)) == 0)
				ret = bm_note(&st->nw, &st->nnw, v, cs, err);
			cow_put64((uint8_t *)&nt[c], v);
		}
		if (ret == 0)
			ret = bm_write_new(img, nt, b->nchunks * 8, &toff, err);
		if (ret == 0)
			ret = bm_note(&st->nw, &st->nnw, toff, b->nchunks * 8, err);
		/* the old table and data clusters, freed after the switch */
		for (uint64_t c = 0; ret == 0 && c <= b->disk_nchunks; c++) {
			uint64_t o = c < b->disk_nchunks ? ot[c] & BM_TE_OFFSET : cow_be64(e);
			uint64_t l = c < b->disk_nchunks ? cs : b->disk_nchunks * 8;

			if (o && bm_may_free(img, o, l))
				ret = bm_note(&st->fr, &st->nfr, o, l, err);
		}
		if (ret == 0) {
			cow_put64(e, toff);
			cow_put32(e + 8, (uint32_t)b->nchunks);
		}
		free(ot);
		free(nt);
		ot = nt = NULL;
	}
	if (ret == 0)
		ret = bm_write_new(img, dir, st->dsize, &st->ndoff, err);
	if (ret == 0)
		ret = bm_note(&st->nw, &st->nnw, st->ndoff, st->dsize, err);
	/* the new clusters, their refcounts and every change of data the
	 * bitmaps describe durable before the header names them */
	if (ret == 0)
		ret = cow_flush(img, err);
	if (ret == 0)
		ret = bm_ext_field(img, &st->field, &st->mem, err);
out:
	if (ret < 0)
		bm_prep_free(img, st, true);
	else
		*out = st;
	free(ot);
	free(nt);
	free(dir);
	return ret;
}

int cow_bitmaps_store(struct cow_img *img, struct ut_err *err)
{
	struct cow_bm_resize *st;
	bool switched = false;
	int ret;

	if (!img->bm || img->ro || img->bm->stored)
		return 0;
	ret = bm_build_store(img, img->bm, &st, err);
	if (ret == 0)
		ret = bm_switch(img, st, &switched, err);
	if (switched) {
		img->bm->stored = true;
		for (size_t i = 0; i < img->bm->n; i++)
			img->bm->bm[i].disk_nchunks = img->bm->bm[i].nchunks;
	}
	if (ret < 0 && switched)
		ut_err_prefix(err, "'%s': its persistent bitmaps are stored, consistent; finishing failed (clusters may leak)",
			      img->path);
	else if (ret < 0)
		ut_err_prefix(err, "'%s': unable to store its persistent bitmaps (they stay marked in use: inconsistent)",
			      img->path);
	return ret;
}
