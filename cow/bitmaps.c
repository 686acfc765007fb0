/* cow/bitmaps.c — persistent dirty bitmaps (header extension 0x23852875)
 * in an image cowvm writes: the directory and its checks, marking in use,
 * resizing with COW_O_KEEP_BITMAPS, the switch to a new directory. The
 * tracking of a writable open (cow_bitmaps_open_rw, cow_bitmaps_dirty,
 * cow_bitmaps_store, bm_build_store, the cow_bm_track_* steps of a resize)
 * is in cow/bitmap-track.c; this comment describes both.
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
 * refuse the image; or two of its structures share a cluster, or one
 * lies over a core table, which QEMU does not check: bm_check_refs), and
 * all of them when memory runs out. Each such case is recorded
 * (cow_bm_problem, read by cow_bitmaps_problem): one that leaves bitmaps
 * consistent at open in use without a damaged image to blame (no memory)
 * is also cow_close's result, since nothing else would say so.
 *
 * States of the bitmaps of a writable open (not COW_O_KEEP_BITMAPS,
 * not header-only), and the function for each transition:
 *
 *   CONSISTENT (on disk, flag clear)
 *     --cow_bitmaps_open_rw (cow_qcow2_open, before anything is written):
 *       the directory and tables checked (cow_bm_load_dir, bm_mem_load), the
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
 *       cow_bm_switch: the header extension's directory offset (8 bytes in
 *       place), fdatasync, then the old directory, tables and data
 *       clusters freed (I4), cow_flush
 *     --> CONSISTENT, TRACKED (img->bm->stored)
 *   CONSISTENT, TRACKED --cow_bitmaps_dirty (a change after a snapshot's
 *       check that was not followed by its attach): cow_bitmaps_mark_in_use
 *       again first (a failure fails the change) --> IN USE, TRACKED
 *   IN USE, TRACKED --cow_grow / cow_shrink without COW_O_KEEP_BITMAPS
 *       (`cowvm image commit` growing its base), as QEMU resizes them:
 *       cow_bitmaps_resize_begin -> cow_bm_track_begin (marked in use again if
 *       stored; the disabled ones' data loaded too; one too large at the
 *       new size, or data that cannot be read, refuses the resize before
 *       anything is written, as QEMU refuses it); the resize's own
 *       changes (the area past the old end released, the new one zeroed,
 *       a shrink's tail) not recorded (img->resizing); after the size
 *       write
 *       cow_bitmaps_resize_commit -> cow_bm_track_resize (bits past the
 *       smaller size dropped, new ones clear); a failure before the size
 *       write: cow_bitmaps_resize_abort sets the bits of a shrink's
 *       released tail; after it (the size in the file unknown): tracking
 *       ends --> IN USE, TRACKED at the new (or old) size
 *   IN USE, TRACKED --a refcount repair at open (cow_bm_track_all_dirty:
 *       every bit of the enabled ones set, since the repair may change
 *       what the guest reads without saying where) --> IN USE, TRACKED
 *   IN USE, TRACKED --cow_bm_lost (a chunk that cannot be allocated; a resize
 *       as said): recorded, cow_close returns it --> IN USE (stored
 *       never again in this open; QEMU reports them inconsistent,
 *       `qemu-img bitmap --remove` frees them)
 *   edits (cow/bitmap-ops.c; `cowvm image bitmap`): add (a "fresh"
 *       bitmap, no entry yet), remove (t->gone; also an entry in use, not
 *       tracked), clear, enable/disable, merge change img->bm only; the
 *       store (bm_build_store) writes a new directory without the removed
 *       entries and with the fresh ones, and cow_bm_switch names it: the
 *       offset alone (8 bytes) when count and size are unchanged, else
 *       count, size and offset (24 bytes in one 512-byte sector), else
 *       the whole header (bm_hdr_switch: the first bitmap, the last one
 *       removed, a field crossing a sector; written while autoclear bit 0
 *       is clear, the bit set again after); the removed bitmaps' clusters
 *       are freed after the switch with the other old ones (bm_free_old)
 *     --> CONSISTENT, TRACKED (the new set)
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
 * Damage (cow.h I8, I18): bitmaps whose directory, tables and data
 * clusters share a cluster or lie over the header, the L1 table, the
 * refcount table or the snapshot table are never tracked, resized or
 * stored (cow_bm_load_dir, bm_check_refs: the error names both); every
 * table and data cluster is in img->meta, so an allocation never takes
 * one whose refcount is damaged to 0 (it fails and marks the image
 * corrupt, as for the snapshot tables). The old clusters of a store or
 * resize are freed after the switch by bm_free_old, each cluster once per
 * old reference and only when its refcount is exactly that number and it
 * is none of the metadata cow_check_new guards, which by then includes
 * everything the new bitmaps name: a damaged table naming someone else's
 * cluster, or a cluster two old tables name with refcount 1, leaks
 * instead of being freed (recorded, -EUCLEAN); so does every old cluster
 * once the image was marked corrupt in the open (a guest write into a
 * bitmap cluster is refused and marks it, cow_check_write_off). Not
 * detectable here: a bitmap data cluster that is also guest data (an L2
 * entry) the guest did not write in the open (QEMU cannot tell either
 * without a full check; reads are not checked): its store frees it.
 */
#include "cow/qcow2.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BM_RESERVED_FLAGS 0xfffffffcu

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

/* Which core structure [@off, +@len) lies over: the header (the first
 * cluster), the L1 table, the refcount table or the start of the snapshot
 * table; NULL when none. (Writing bitmap metadata there would break it.) */
static const char *core_overlap(const struct cow_img *img, uint64_t off, uint64_t len)
{
	if (off < img->cluster_size)
		return "the header";
	if (overlaps(off, len, img->h.l1_off, (uint64_t)img->h.l1_size * 8))
		return "the L1 table";
	if (overlaps(off, len, img->h.rt_off, (uint64_t)img->h.rt_clusters << img->cluster_bits))
		return "the refcount table";
	if (img->h.nb_snapshots && off <= img->h.snap_off && img->h.snap_off < off + len)
		return "the snapshot table";
	return NULL;
}

int cow_bitmaps_ext(const struct cow_img *img, uint32_t *nb, uint64_t *dsize, uint64_t *doff)
{
	const uint8_t *x = img->h.other_ext;
	ssize_t o;

	if (img->h.version < 3 || !(img->h.autoclear & 1))
		return 0;
	o = cow_ext_find(x, img->h.other_ext_len, QCOW_EXT_BITMAPS, 24);
	if (o < 0)
		return 0;
	*nb = cow_be32(x + o + 8);
	*dsize = cow_be64(x + o + 16);
	*doff = cow_be64(x + o + 24);
	return 1;
}

bool cow_bitmaps_dir_in_file(const struct cow_img *img, uint64_t dsize, uint64_t doff)
{
	return dsize && dsize <= COW_MAX_BITMAP_DIR && !(doff & (img->cluster_size - 1)) &&
	       doff <= img->file_size && dsize <= img->file_size - doff;
}

/* ---- reading the directory ---- */

int cow_bm_read_dir(struct cow_img *img, uint8_t **dirp, uint64_t *dsizep, uint64_t *doffp,
		    struct ut_err *err)
{
	uint64_t dsize, doff, p;
	uint32_t nb, seen = 0;
	uint8_t *dir;
	int ret;

	*dirp = NULL;
	if (!cow_bitmaps_ext(img, &nb, &dsize, &doff) || !nb)
		return 1;
	/* inside the file, cluster-aligned, at most COW_MAX_BITMAP_DIR, and
	 * over none of the header, the L1 table, the refcount table and the
	 * start of the snapshot table (writing into a directory over one of
	 * them would break it) */
	if (!doff || !cow_bitmaps_dir_in_file(img, dsize, doff) || core_overlap(img, doff, dsize))
		return ut_errf(err, -EINVAL, "'%s': the bitmap directory (offset 0x%llx, %llu bytes) is invalid",
			       img->path, (unsigned long long)doff, (unsigned long long)dsize);
	dir = malloc(dsize);
	if (!dir)
		return ut_errf(err, -ENOMEM, "out of memory");
	ret = cow_pread_full(img, dir, dsize, doff, false, err);
	/* the entries fill it: each inside it with its padding, as many as
	 * the extension counts */
	for (p = 0; ret == 0 && p < dsize; seen++) {
		if (dsize - p < COW_BM_ENTRY_HDR || seen >= nb ||
		    ((cow_bitmap_entry_size(dir + p) + 7) & ~7ull) > dsize - p)
			ret = ut_errf(err, -EINVAL, "'%s': the bitmap directory is broken (entry %u)", img->path, seen);
		else
			p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull;
	}
	if (ret == 0 && seen != nb)
		ret = ut_errf(err, -EINVAL, "'%s': the bitmap directory holds %u bitmaps, the header says %u",
			      img->path, seen, nb);
	if (ret < 0) {
		free(dir);
		return ret;
	}
	*dirp = dir;
	*dsizep = dsize;
	*doffp = doff;
	return 0;
}

int cow_bm_reread_dir(struct cow_img *img, uint8_t **dirp, uint64_t *dsizep, uint64_t *doffp,
		      struct ut_err *err)
{
	int ret = cow_bm_read_dir(img, dirp, dsizep, doffp, err);

	if (ret > 0)
		ret = ut_errf(err, -EINVAL, "'%s': its bitmap directory is gone", img->path);
	return ret;
}

int cow_bitmaps_mark_in_use(struct cow_img *img, struct ut_err *err)
{
	uint64_t dsize, doff, p;
	uint8_t *dir = NULL;
	bool wrote = false;
	int ret;

	ret = cow_bm_read_dir(img, &dir, &dsize, &doff, err);
	if (ret == -EINVAL) {
		/* damage, not a directory: nothing is written */
		ut_err_clear(err);
		return 1;
	}
	if (ret)
		goto out;
	/* nothing is written unless every entry is well-formed (no
	 * reserved flag bits) */
	for (p = 0; p < dsize; p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull) {
		if (cow_be32(dir + p + 12) & BM_RESERVED_FLAGS) {
			ret = 1;
			goto out;
		}
	}
	for (p = 0; p < dsize; p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull) {
		uint32_t flags = cow_be32(dir + p + 12);

		if (!(flags & COW_BITMAP_IN_USE)) {
			uint8_t b[4];
			cow_put32(b, flags | COW_BITMAP_IN_USE);
			ret = cow_pwrite_full(img, b, 4, doff + p + 12, err);
			if (ret < 0)
				goto out;
			wrote = true;
		}
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

/* Table entries (clusters of bits) a bitmap of granularity 2^@gbits needs
 * for @size bytes. */
uint64_t cow_bm_table_size(const struct cow_img *img, uint64_t size, unsigned gbits)
{
	uint64_t bits = (size + (1ull << gbits) - 1) >> gbits, per = (uint64_t)img->cluster_size * 8;

	return (bits + per - 1) / per;
}


/* ---- the clusters the bitmaps name ---- */

static int bm_ref_add(struct cow_bm_ref **l, size_t *n, size_t *cap, uint64_t off, uint64_t len,
		      uint64_t dpos, int64_t entry, struct ut_err *err)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		struct cow_bm_ref *x = realloc(*l, nc * sizeof(*x));

		if (!x)
			return ut_errf(err, -ENOMEM, "out of memory");
		*l = x;
		*cap = nc;
	}
	(*l)[*n] = (struct cow_bm_ref){ .off = off, .len = len, .dpos = dpos, .entry = entry };
	(*n)++;
	return 0;
}

int cow_bm_refs(struct cow_img *img, const uint8_t *dir, uint64_t dsize, struct cow_bm_ref **out,
		size_t *n, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, p, *t = NULL;
	struct cow_bm_ref *l = NULL;
	size_t cap = 0;
	int ret = 0;

	*out = NULL;
	*n = 0;
	for (p = 0; ret == 0 && p < dsize; p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull) {
		uint64_t toff = cow_be64(dir + p), tsize = cow_be32(dir + p + 8);

		if (!toff || !tsize || (toff & (cs - 1)) || tsize > COW_BM_MAX_TABLE ||
		    tsize * cs > COW_BM_MAX_PHYS || toff > img->file_size || tsize * 8 > img->file_size - toff)
			continue;   /* (no table: QEMU's checks refuse it) */
		ret = bm_ref_add(&l, n, &cap, toff, tsize * 8, p, -1, err);
		t = ret == 0 ? malloc(tsize * 8) : NULL;
		if (ret == 0 && !t)
			ret = ut_errf(err, -ENOMEM, "out of memory");
		if (ret == 0)
			ret = cow_pread_full(img, t, tsize * 8, toff, false, err);
		for (uint64_t i = 0; ret == 0 && i < tsize; i++) {
			uint64_t v = cow_be64((uint8_t *)&t[i]), off = v & COW_BM_TE_OFFSET;

			if (off && !(v & COW_BM_TE_RESERVED) && !(off & (cs - 1)) && off < img->file_size)
				ret = bm_ref_add(&l, n, &cap, off, cs, p, (int64_t)i, err);
		}
		free(t);
		t = NULL;
	}
	if (ret < 0) {
		free(l);
		*n = 0;
		return ret;
	}
	*out = l;
	return 0;
}

static int bm_ref_cmp(const void *a, const void *b)
{
	const struct cow_bm_ref *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/* "bitmap 'x' table", "bitmap 'x' data cluster (table entry 3)", "the
 * bitmap directory", for messages. */
static const char *bm_ref_what(const struct cow_bm_ref *r, const uint8_t *dir, char *buf, size_t size)
{
	if (r->entry == -2)
		snprintf(buf, size, "the bitmap directory");
	else if (r->entry == -1)
		snprintf(buf, size, "bitmap '%.*s''s table", BM_NAME(dir + r->dpos));
	else
		snprintf(buf, size, "bitmap '%.*s''s data cluster (table entry %lld)", BM_NAME(dir + r->dpos),
			 (long long)r->entry);
	return buf;
}

/* No two of the directory at @doff, the bitmap tables and the data
 * clusters they name share a cluster, and none lies over the header, the
 * L1 table, the refcount table or the start of the snapshot table: else
 * a damaged image (two owners that each count one reference, or a table
 * that is also something else), which no bitmap of it may be stored,
 * resized or freed over: -EINVAL naming both. QEMU does not check this
 * at open; `qemu-img check` reports it (refcount 1, 2 references). */
static int bm_check_refs(struct cow_img *img, const uint8_t *dir, uint64_t dsize, uint64_t doff,
			 struct ut_err *err)
{
	uint64_t cs = img->cluster_size, mask = ~(uint64_t)(cs - 1);
	struct cow_bm_ref *l = NULL;
	size_t n = 0, cap, last = 0;
	char a[300], b[300];
	int ret = cow_bm_refs(img, dir, dsize, &l, &n, err);

	cap = n;
	if (ret == 0)
		ret = bm_ref_add(&l, &n, &cap, doff, dsize, 0, -2, err);
	if (ret < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		const struct cow_bm_ref *r = &l[i];
		const char *what = core_overlap(img, r->off, r->len);

		if (what) {
			ret = ut_errf(err, -EINVAL, "'%s': %s at 0x%llx overlaps %s (the image is damaged)", img->path,
				      bm_ref_what(r, dir, a, sizeof(a)), (unsigned long long)r->off, what);
			goto out;
		}
	}
	qsort(l, n, sizeof(*l), bm_ref_cmp);
	/* cluster granularity, as refcounts count them: @last holds the
	 * range reaching furthest so far */
	for (size_t i = 1; i < n; i++) {
		uint64_t lend = ((l[last].off + l[last].len - 1) & mask) + cs;

		if ((l[i].off & mask) < lend) {
			ret = ut_errf(err, -EINVAL, "'%s': %s at 0x%llx and %s at 0x%llx share a cluster (the image is damaged: 'qemu-img check' counts two references)",
				      img->path, bm_ref_what(&l[last], dir, a, sizeof(a)), (unsigned long long)l[last].off,
				      bm_ref_what(&l[i], dir, b, sizeof(b)), (unsigned long long)l[i].off);
			goto out;
		}
		if (l[i].off + l[i].len > l[last].off + l[last].len)
			last = i;
	}
out:
	free(l);
	return ret;
}

/* Read and check the bitmap directory of @img as QEMU's open does
 * (bitmap_list_load, check_dir_entry) at the image's current size, and
 * that no two bitmap structures share a cluster (bm_check_refs): 1 when
 * there is none (no extension, no bitmap), 0 with *dirp (malloc'ed),
 * *dsize and *doff, or -EINVAL / -ENOTSUP naming what is wrong. */
int cow_bm_load_dir(struct cow_img *img, uint8_t **dirp, uint64_t *dsizep, uint64_t *doffp,
		       struct ut_err *err)
{
	uint64_t dsize, doff, p;
	uint32_t seen = 0;
	uint8_t *dir;
	int ret;

	*dirp = NULL;
	ret = cow_bm_read_dir(img, &dir, &dsize, &doff, err);
	if (ret)
		return ret;
	for (p = 0; p < dsize; seen++) {
		const uint8_t *e = dir + p;
		uint64_t toff, tsize, phys;
		uint32_t flags;
		unsigned gb;

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
		if (!tsize || !toff || (toff & (img->cluster_size - 1)) || tsize > COW_BM_MAX_TABLE ||
		    gb > 31 || gb < 9 || (flags & BM_RESERVED_FLAGS) || cow_be16(e + 18) > 1023 ||
		    e[16] != 1 || phys > COW_BM_MAX_PHYS ||
		    (!(flags & COW_BITMAP_IN_USE) && img->size > ((phys * 8) << gb)) ||
		    toff > img->file_size || tsize * 8 > img->file_size - toff) {
			ret = ut_errf(err, -EINVAL, "'%s': bitmap '%.*s' does not satisfy the constraints of the specification",
				      img->path, BM_NAME(e));
			goto out;
		}
		p += (cow_bitmap_entry_size(e) + 7) & ~7ull;
	}
	ret = bm_check_refs(img, dir, dsize, doff, err);
	if (ret < 0)
		goto out;
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
	int ret = cow_bm_load_dir(img, &dir, &dsize, &doff, err);

	free(dir);
	if (ret < 0)
		ut_err_prefix(err, "writing refused (its persistent bitmaps could not be kept consistent)");
	return ret;
}

/* The table of the bitmap at directory entry @e, its entries checked
 * (reserved bits, alignment, inside the file): *tp (malloc'ed, host
 * order). */
int cow_bm_load_table(struct cow_img *img, const uint8_t *e, uint64_t **tp, struct ut_err *err)
{
	uint64_t toff = cow_be64(e), n = cow_be32(e + 8), cs = img->cluster_size;
	uint64_t *t = malloc(n * 8);
	int ret;

	*tp = NULL;
	if (!t)
		return ut_errf(err, -ENOMEM, "out of memory");
	ret = cow_pread_full(img, t, n * 8, toff, false, err);
	for (uint64_t i = 0; ret == 0 && i < n; i++) {
		uint64_t v = cow_be64((uint8_t *)&t[i]), off = v & COW_BM_TE_OFFSET;
		t[i] = v;
		if ((v & COW_BM_TE_RESERVED) || (off && ((v & COW_BM_TE_ALL_ONES) || (off & (cs - 1)) ||
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
	ret = cow_bm_reread_dir(img, &dir, &dsize, &doff, err);
	for (p = 0; ret == 0 && p < dsize; p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull) {
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

int cow_bitmaps_resize_begin(struct cow_img *img, uint64_t new_size, struct ut_err *err)
{
	uint64_t dsize, doff, p, *t = NULL;
	uint8_t *dir;
	bool made;
	int ret;

	/* a writable open that tracks its bitmaps: they follow the resize
	 * in memory (cow_bm_track_begin) */
	ret = cow_bm_track_begin(img, new_size, err);
	if (ret < 0 || !img->keep_bitmaps || img->fmt != COW_FMT_QCOW2)
		return ret;
	ret = cow_bm_load_dir(img, &dir, &dsize, &doff, err);
	if (ret)
		return ret < 0 ? ret : 0;
	for (p = 0; p < dsize; p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull) {
		const uint8_t *e = dir + p;
		uint64_t ntab = cow_bm_table_size(img, new_size, e[17]);

		if (cow_be32(e + 12) & COW_BITMAP_IN_USE) {
			ret = ut_errf(err, -ENOTSUP, "'%s': bitmap '%.*s' is inconsistent and cannot be used (as QEMU refuses it); remove it first (qemu-img bitmap --remove)",
				      img->path, BM_NAME(e));
			goto out;
		}
		/* what load_bitmap_data requires: exactly the entries the size needs */
		if (cow_be32(e + 8) != cow_bm_table_size(img, img->size, e[17])) {
			ret = ut_errf(err, -EINVAL, "'%s': bitmap '%.*s': its table has %u entries, the image size needs %llu",
				      img->path, BM_NAME(e), cow_be32(e + 8),
				      (unsigned long long)cow_bm_table_size(img, img->size, e[17]));
			goto out;
		}
		if (ntab > COW_BM_MAX_TABLE || ntab * img->cluster_size > COW_BM_MAX_PHYS) {
			ret = ut_errf(err, -EFBIG, "'%s': bitmap '%.*s' (granularity %llu) would be too large at the new size (QEMU could not store it); remove it or use a larger granularity",
				      img->path, BM_NAME(e), 1ull << e[17]);
			goto out;
		}
		ret = cow_bm_load_table(img, e, &t, err);
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


int cow_bm_prep_finish(struct cow_img *img, struct cow_bm_resize *st, const uint8_t *dir,
		       struct ut_err *err)
{
	int ret = 0;

	if (st->ndsize)
		ret = cow_bm_write_new(img, dir, st->ndsize, &st->ndoff, err);
	if (ret == 0 && st->ndsize)
		ret = cow_bm_note(&st->nw, &st->nnw, st->ndoff, st->ndsize, err);
	if (ret == 0)
		ret = cow_flush(img, err);
	if (ret == 0 && st->dsize)
		ret = cow_bm_ext_field(img, &st->field, &st->mem, err);
	return ret;
}

/* @n clusters for @len bytes of new bitmap metadata, written from @buf:
 * the offset in *off. */
int cow_bm_write_new(struct cow_img *img, const void *buf, uint64_t len, uint64_t *off,
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
	uint64_t cs = img->cluster_size, off = v & COW_BM_TE_OFFSET, nbits = keep - first, noff;
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
	ret = cow_bm_write_new(img, buf, cs, &noff, err);
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
	uint64_t off = v & COW_BM_TE_OFFSET, noff, got;
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
int cow_bm_ext_field(struct cow_img *img, uint64_t *file_off, uint8_t **mem, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, len = img->file_size < cs ? img->file_size : cs;
	uint8_t *x = img->h.other_ext, *h = malloc(cs);
	ssize_t o;
	int ret;

	*file_off = 0;
	*mem = NULL;
	if (!h)
		return ut_errf(err, -ENOMEM, "out of memory");
	ret = cow_pread_full(img, h, len, 0, false, err);
	if (ret == 0 && img->h.hdr_len < len) {
		o = cow_ext_find(h + img->h.hdr_len, len - img->h.hdr_len, QCOW_EXT_BITMAPS, 24);
		if (o >= 0)
			*file_off = img->h.hdr_len + (uint64_t)o + 8 + 16;
	}
	o = cow_ext_find(x, img->h.other_ext_len, QCOW_EXT_BITMAPS, 24);
	if (o >= 0)
		*mem = x + o + 8 + 16;
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
	uint64_t cs = img->cluster_size, off = v & COW_BM_TE_OFFSET, noff;
	int ret;

	*out = v;
	if (v & COW_BM_TE_ALL_ONES)
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
	ret = cow_bm_write_new(img, buf, cs, &noff, err);
	if (ret == 0)
		*out = noff;
	return ret;
}

/* Append [@off, +@len) to the list *@l of *@n ranges: 0 or -ENOMEM. */
int cow_bm_note(struct cow_bm_range **l, size_t *n, uint64_t off, uint64_t len, struct ut_err *err)
{
	struct cow_bm_range *x = realloc(*l, (*n + 1) * sizeof(**l));

	if (!x)
		return ut_errf(err, -ENOMEM, "out of memory");
	x[*n].off = off;
	x[(*n)++].len = len;
	*l = x;
	return 0;
}

/* Release @st; with @unlinked its new clusters are freed at once (nothing
 * names them: I17; a failure there leaks them). */
void cow_bm_prep_free(struct cow_img *img, struct cow_bm_resize *st, bool unlinked)
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
 * durable (cow_flush); *out describes them for cow_bm_switch. Per bitmap:
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
	uint64_t p, cs = img->cluster_size, bpc = cs * 8, otab_unused;
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
	ret = cow_bm_reread_dir(img, &dir, &st->dsize, &st->doff, err);
	if (ret < 0)
		goto out;
	/* the same entries, the same layout */
	st->ndsize = st->dsize;
	if (!cow_bitmaps_ext(img, &st->nb, &otab_unused, &otab_unused))
		st->nb = 0;
	st->nnb = st->nb;
	for (p = 0; p < st->dsize; p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull) {
		uint8_t *e = dir + p;
		unsigned gb = e[17];
		uint64_t otab = cow_be32(e + 8), ntab = cow_bm_table_size(img, new_size, gb);
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
		ret = cow_bm_load_table(img, e, &t, err);
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
				nt[i] = COW_BM_TE_ALL_ONES;
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
			uint64_t old = i < otab ? t[i] : 0, off = nt[i] & COW_BM_TE_OFFSET;
			int r = off && off != (old & COW_BM_TE_OFFSET) ? cow_bm_note(&st->nw, &st->nnw, off, cs, err) : 0;

			if (r < 0 && ret == 0)
				ret = r;
		}
		if (ret < 0)
			goto out;
		/* the data clusters no new entry keeps */
		for (uint64_t i = 0; i < otab; i++) {
			if ((t[i] & COW_BM_TE_OFFSET) && (i >= ntab || nt[i] != t[i])) {
				st->fr[st->nfr].off = t[i] & COW_BM_TE_OFFSET;
				st->fr[st->nfr++].len = cs;
			}
		}
		if (changed) {
			for (uint64_t i = 0; i < ntab; i++)
				cow_put64((uint8_t *)&nt[i], nt[i]);
			ret = cow_bm_write_new(img, nt, ntab * 8, &toff, err);
			if (ret == 0)
				ret = cow_bm_note(&st->nw, &st->nnw, toff, ntab * 8, err);
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
	ret = cow_bm_prep_finish(img, st, dir, err);
out:
	if (ret < 0)
		cow_bm_prep_free(img, st, true);
	else
		*out = st;
	free(t);
	free(nt);
	free(dir);
	free(buf);
	return ret;
}

/* Range @i of what bm_free_old frees: the old directory, then st->fr. */
static void old_range(const void *ctx, size_t i, uint64_t *off, uint64_t *len)
{
	const struct cow_bm_resize *st = ctx;

	*off = i ? st->fr[i - 1].off : st->doff;
	*len = i ? st->fr[i - 1].len : st->dsize;
}

/* After the switch and the reload of img->meta (which now holds the new
 * directory, tables and data clusters): the old directory and st->fr
 * queued for freeing (I4), cluster by cluster, each cluster once per old
 * reference and only when its refcount is exactly that number and it is
 * none of the metadata cow_check_new guards (header, L1 and refcount
 * tables, an L2 table, a refcount block, the snapshot tables, anything
 * the new bitmaps name). A cluster that two damaged old tables both name
 * with refcount 1 is so never decremented twice, and one that is also
 * someone else's is never freed under its owner: it stays allocated (a
 * leak) and the problem is recorded for cow_bitmaps_problem (the store
 * itself succeeded). Nothing is freed once the image is marked corrupt
 * (in this open: a writable open refuses a marked image): the damage
 * found may be an L2 entry naming one of these clusters as guest data
 * (cow_check_write_off refuses a guest write into a bitmap cluster and
 * marks the image so), which no test here sees, so every old cluster
 * leaks instead. 0 or -errno (no memory, a refcount read, the queue). */
static int bm_free_old(struct cow_img *img, const struct cow_bm_resize *st, struct ut_err *err)
{
	uint64_t cb = img->cluster_bits, cs = img->cluster_size, n, *c, kept = 0, first = 0;
	bool corrupt = img->h.incompat & QCOW_INCOMPAT_CORRUPT;
	char what[160], buf[128];
	int ret;

	what[0] = 0;
	ret = cow_range_clusters(img->cluster_bits, st->nfr + 1, old_range, st, &c, &n, err);
	if (ret < 0)
		return ret;
	for (uint64_t i = 0, k; ret == 0 && i < n; i += k) {
		const char *o = NULL;
		uint64_t rc = 0;

		for (k = 1; i + k < n && c[i + k] == c[i]; k++)
			;
		if (!corrupt)
			o = cow_meta_overlap(img, c[i] << cb, 1, buf, sizeof(buf));
		if (!o && !corrupt) {
			ret = cow_rc_get(img, c[i], &rc, err);
			if (ret < 0)
				break;
		}
		if (corrupt || o || rc != k) {
			if (!kept++) {
				first = c[i];
				if (corrupt)
					snprintf(what, sizeof(what), "the image is marked corrupt (an L2 entry may name it as guest data)");
				else if (o)
					snprintf(what, sizeof(what), "it is also %s", o);
				else
					snprintf(what, sizeof(what), "refcount %llu, named %llu time(s) by the old bitmaps",
						 (unsigned long long)rc, (unsigned long long)k);
			}
			continue;
		}
		for (uint64_t j = 0; ret == 0 && j < k; j++)
			ret = cow_free_later(img, c[i] << cb, cs, err);
	}
	free(c);
	if (ret == 0 && kept)
		cow_bm_problem(img, -EUCLEAN, false,
			       "'%s': %llu cluster(s) of its old persistent bitmaps left allocated (a leak), the image is damaged: cluster 0x%llx: %s",
			       img->path, (unsigned long long)kept, (unsigned long long)(first << cb), what);
	return ret;
}

void cow_bm_problem(struct cow_img *img, int code, bool in_use, const char *fmt, ...)
{
	va_list ap;

	if (img->bm_problem && (img->bm_problem_in_use || !in_use))
		return;   /* (the first one, unless this one leaves them in use) */
	img->bm_problem = code;
	img->bm_problem_in_use = in_use;
	va_start(ap, fmt);
	vsnprintf(img->bm_problem_msg, sizeof(img->bm_problem_msg), fmt, ap);
	va_end(ap);
}

int cow_bitmaps_problem(const struct cow_img *img, struct ut_err *err)
{
	if (!img || !img->bm_problem)
		return 0;
	return ut_errf(err, img->bm_problem, "%s", img->bm_problem_msg);
}

/* Autoclear bit 0 of @img set to @on in place (8 bytes at 88, in the
 * first sector), fdatasync. */
static int bm_autoclear(struct cow_img *img, bool on, struct ut_err *err)
{
	uint64_t v = on ? img->h.autoclear | 1 : img->h.autoclear & ~1ull;
	uint8_t be[8];
	int ret;

	cow_put64(be, v);
	ret = cow_pwrite_full(img, be, 8, 88, err);
	if (ret == 0)
		img->h.autoclear = v;
	return ret < 0 ? ret : cow_sync(img, err);
}

/* The header rewritten to name @st's new directory: its bitmaps extension
 * (any stale one dropped) with st->nnb, st->ndsize and st->ndoff; or,
 * with no bitmap left (st->nnb 0), no extension (QEMU refuses one that
 * counts no bitmap). For a switch that the fields in place cannot make:
 * the first bitmap, the last one removed, or the 24 bytes crossing a
 * sector. The whole header is one write of its cluster, which a power
 * cut may tear at any sector; so it is written while autoclear bit 0 is
 * clear, when QEMU and cow/ ignore the extension (a torn mix of the two
 * extension lists then reads as no bitmaps, never as a wrong directory):
 *   1. the bit cleared in place (8 bytes, sync) if set: from here the
 *      file holds no valid bitmap (the old ones' clusters leak);
 *   2. the header with the new extension list (cow_hdr_write, sync);
 *   3. with bitmaps left, the bit set in place (8 bytes, sync): the new
 *      set is valid.
 * A crash between the steps leaves no bitmap (QEMU warns that a program
 * without bitmap support changed the file; `qemu-img check` counts the
 * clusters as leaks). *switched: the old directory may no longer be
 * named (its clusters must not be freed by the caller on failure, nor
 * the new ones). */
static int bm_hdr_switch(struct cow_img *img, struct cow_bm_resize *st, bool *switched,
			 struct ut_err *err)
{
	uint8_t *x = img->h.other_ext, *nx, *scratch;
	size_t n = img->h.other_ext_len, o, nn = 0;
	uint64_t autoclear = img->h.autoclear;
	int ret;

	*switched = false;
	nx = malloc(n + 32);
	scratch = malloc(img->cluster_size);
	if (!nx || !scratch) {
		free(nx);
		free(scratch);
		return ut_errf(err, -ENOMEM, "out of memory");
	}
	for (o = 0; o + 8 <= n;) {
		size_t l = 8 + (((size_t)cow_be32(x + o + 4) + 7) & ~(size_t)7);

		if (l > n - o)
			l = n - o;
		if (cow_be32(x + o) != QCOW_EXT_BITMAPS) {
			memcpy(nx + nn, x + o, l);
			nn += l;
		}
		o += l;
	}
	if (st->nnb) {
		cow_put32(nx + nn, QCOW_EXT_BITMAPS);
		cow_put32(nx + nn + 4, 24);
		cow_put32(nx + nn + 8, st->nnb);
		cow_put32(nx + nn + 12, 0);
		cow_put64(nx + nn + 16, st->ndsize);
		cow_put64(nx + nn + 24, st->ndoff);
		nn += 32;
	}
	img->h.other_ext = nx;
	img->h.other_ext_len = nn;
	img->h.autoclear = autoclear & ~1ull;
	/* does it fit (nothing written when not)? */
	ret = cow_hdr_build(&img->h, scratch, img->cluster_size, err);
	free(scratch);
	img->h.other_ext = x;
	img->h.other_ext_len = n;
	img->h.autoclear = autoclear;
	if (ret < 0) {
		free(nx);
		ut_err_prefix(err, "'%s'", img->path);
		return ret;
	}
	*switched = true;   /* (from the first write on) */
	if (autoclear & 1)
		ret = bm_autoclear(img, false, err);
	if (ret < 0) {
		free(nx);
		return ret;
	}
	free(x);
	img->h.other_ext = nx;
	img->h.other_ext_len = nn;
	ret = cow_hdr_write(img, err);
	if (ret == 0 && st->nnb)
		ret = bm_autoclear(img, true, err);
	return ret;
}

/* Switch the header to the directory @st built, then free the old
 * directory, the old tables and the data clusters no new table uses (I4)
 * and flush. The same number of bitmaps and directory size: the 8 bytes
 * of the directory offset in place; else the 24 bytes of count, reserved
 * field, size and offset in place when they lie in one 512-byte sector
 * (a sector is written whole or not at all); else the whole header
 * (bm_hdr_switch). fdatasync after. *switched: the header write was made
 * (the file names the new directory from then on, whatever the sync
 * says). Releases @st (its new clusters freed when not switched). */
int cow_bm_switch(struct cow_img *img, struct cow_bm_resize *st, bool *switched,
		     struct ut_err *err)
{
	uint8_t be[24];
	int ret;

	*switched = false;
	if (st->dsize && st->nnb && st->nnb == st->nb && st->ndsize == st->dsize) {
		cow_put64(be, st->ndoff);
		ret = cow_pwrite_full(img, be, 8, st->field, err);
		*switched = ret == 0;
		if (ret < 0)
			goto out;
		memcpy(st->mem, be, 8);
	} else if (st->dsize && st->nnb && st->field >= 16 && (st->field - 16) / 512 == (st->field + 7) / 512) {
		cow_put32(be, st->nnb);
		cow_put32(be + 4, 0);
		cow_put64(be + 8, st->ndsize);
		cow_put64(be + 16, st->ndoff);
		ret = cow_pwrite_full(img, be, 24, st->field - 16, err);
		*switched = ret == 0;
		if (ret < 0)
			goto out;
		memcpy(st->mem - 16, be, 24);
	} else {
		ret = bm_hdr_switch(img, st, switched, err);
		if (ret < 0)
			goto out;
	}
	ret = cow_sync(img, err);
	if (ret == 0)
		ret = cow_meta_ranges_load(img, err);
	if (ret == 0)
		ret = bm_free_old(img, st, err);
	if (ret == 0)
		ret = cow_flush(img, err);
out:
	cow_bm_prep_free(img, st, !*switched);
	return ret;
}

int cow_bitmaps_resize_prepare(struct cow_img *img, uint64_t old_size, uint64_t new_size,
			       struct ut_err *err)
{
	int ret;

	if (!img->bm_resizing)
		return 0;
	cow_bm_prep_free(img, img->bm_prep, true);
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

	cow_bm_track_resize(img);
	if (!img->bm_resizing)
		return 0;
	img->bm_resizing = false;
	img->bm_prep = NULL;
	if (!st)
		return ut_errf(err, -EINVAL, "'%s': internal error: bitmaps not prepared", img->path);
	ret = cow_bm_switch(img, st, &switched, err);
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
		cow_bm_lost(img, -EIO, "a resize failed after its size write, so the size they must describe is unknown");
		return 1;
	}
	if (img->bm && changed_from < img->size)
		cow_bm_set(img, changed_from, img->size - changed_from);
	if (!img->bm_resizing)
		return 0;
	img->bm_resizing = false;
	cow_bm_prep_free(img, img->bm_prep, true);
	img->bm_prep = NULL;
	if (!size_kept)
		return 1;
	if (changed_from == UINT64_MAX)
		ret = bm_clear_in_use(img, &made, err);
	else
		ret = bm_build(img, img->size, img->size, changed_from, &st, err);
	if (ret == 0 && st)
		ret = cow_bm_switch(img, st, &switched, err);
	/* the flags cleared or the new directory named in the file (a failed
	 * sync after that: consistent whichever reaches the disk) */
	if (ret == 0 || made || switched)
		return 0;
	ut_err_prefix(err, "'%s': its persistent bitmaps stay marked in use", img->path);
	return 1;
}
