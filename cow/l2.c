/* cow/l2.c — the guest-to-host cluster map: the L1 table and the cache of
 * L2 tables (lookup, allocation of new tables, eviction), entry validation
 * and update (cow.h I8, I4), the overlap check of new clusters (I8), block
 * status, and the ordered metadata write-back that keeps the image
 * consistent at every instant (I1-I4). Reads are in read.c, writes in
 * write.c. */
#include "cow/map.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Does the host range [off, off+len) overlap the header, the L1 table or the
 * refcount table? (cheap overlap check, I8) */
static const char *meta_overlap(const struct cow_img *img, uint64_t off, uint64_t len)
{
	uint64_t l1e = img->h.l1_off + (uint64_t)img->h.l1_size * 8;
	uint64_t rte = img->h.rt_off + (uint64_t)img->h.rt_clusters * img->cluster_size;

	if (off < img->cluster_size)
		return "the header";
	if (img->h.l1_size && off < l1e && img->h.l1_off < off + len)
		return "the L1 table";
	if (off < rte && img->h.rt_off < off + len)
		return "the refcount table";
	return NULL;
}

/* Does the host range of @n clusters at @host overlap the metadata QEMU's
 * overlap-check=cached adds to meta_overlap's tables: the L2 tables and
 * refcount blocks in the caches, the snapshot table, the snapshots' L1
 * tables and the bitmap directory (img->meta)? NULL, or what it overlaps,
 * in @buf (@size bytes) when it needs one. */
static const char *table_overlap(struct cow_img *img, uint64_t host, uint64_t n, char *buf,
				 size_t size)
{
	const char *what = NULL;
	const struct cow_meta_range *r = NULL;

	for (uint64_t i = 0; !what && i < n; i++) {
		uint64_t o = host + (i << img->cluster_bits);
		if (cow_cache_has(&img->l2c, o))
			what = "an L2 table";
		else if (cow_cache_has(&img->rbc, o))
			what = "a refcount block";
	}
	if (!what && img->nmeta)
		r = cow_meta_range_find(img, host, n << img->cluster_bits);
	if (r && r->kind == COW_MR_SNAP_L1) {
		snprintf(buf, size, "a snapshot L1 table (snapshot %u of %u, at 0x%llx)", r->snap + 1,
			 img->h.nb_snapshots, (unsigned long long)r->off);
		what = buf;
	} else if (r) {
		what = r->kind == COW_MR_SNAP_TABLE ? "the snapshot table"
		       : r->kind == COW_MR_BITMAP_DIR ? "the bitmap directory"
						      : "a bitmap table or data cluster";
	}
	return what;
}

/* Table @t of @n entries naming clusters (offsets under @mask), the L1 or
 * the refcount table: *last = one past its last nonzero entry; returns the
 * end of the furthest cluster it names (0: none). */
static uint64_t named_scan(const uint64_t *t, uint64_t n, uint64_t mask, uint64_t cs,
			   uint64_t *last)
{
	uint64_t m = 0;

	*last = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t o = t[i] & mask;
		if (!o)
			continue;
		*last = i + 1;
		if (o + cs > m)
			m = o + cs;
	}
	return m;
}

/* The first of the @n entries of @t (as named_scan's) whose cluster
 * overlaps [@host, @end): its index, or -1. */
static int64_t named_hit(const uint64_t *t, uint64_t n, uint64_t mask, uint64_t cs,
			 uint64_t host, uint64_t end)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t o = t[i] & mask;
		if (o && o < end && host < o + cs)
			return (int64_t)i;
	}
	return -1;
}

/* Does the host range [@host, @host + @len) overlap an L2 table the active
 * L1 names or a refcount block the refcount table names, cached or not
 * (QEMU's QCOW2_OL_ACTIVE_L2 and QCOW2_OL_REFCOUNT_BLOCK, which walk the
 * L1 and refcount tables in memory)? NULL, or what, in @buf. */
static const char *named_overlap(struct cow_img *img, uint64_t host, uint64_t len,
				 char *buf, size_t size)
{
	uint64_t cs = img->cluster_size, end = host + len, n;
	int64_t i;

	if (!img->named_ok) {
		uint64_t a = named_scan(img->l1, img->h.l1_size, QCOW_OFFSET_MASK, cs, &img->named_l1_n);
		uint64_t b = named_scan(img->rt, img->rt_entries, QCOW_RT_OFFSET_MASK, cs,
					&img->named_rt_n);

		img->named_end = a > b ? a : b;
		img->named_ok = true;
	}
	if (host >= img->named_end)
		return NULL;   /* (new clusters at the end of the file) */
	n = img->named_l1_n < img->h.l1_size ? img->named_l1_n : img->h.l1_size;
	i = named_hit(img->l1, n, QCOW_OFFSET_MASK, cs, host, end);
	if (i >= 0) {
		snprintf(buf, size, "an L2 table (L1 entry %llu)", (unsigned long long)i);
		return buf;
	}
	n = img->named_rt_n < img->rt_entries ? img->named_rt_n : img->rt_entries;
	i = named_hit(img->rt, n, QCOW_RT_OFFSET_MASK, cs, host, end);
	if (i >= 0) {
		snprintf(buf, size, "a refcount block (refcount table entry %llu)",
			 (unsigned long long)i);
		return buf;
	}
	return NULL;
}

const char *cow_meta_overlap(struct cow_img *img, uint64_t host, uint64_t n, char *buf,
			     size_t size)
{
	const char *what = meta_overlap(img, host, n << img->cluster_bits);

	if (!what)
		what = table_overlap(img, host, n, buf, size);
	if (!what)
		what = named_overlap(img, host, n << img->cluster_bits, buf, size);
	return what;
}

/* cow_check_new, and with @kind cow_check_new_rc. */
static int check_new(struct cow_img *img, uint64_t host, uint64_t n, const char *kind,
		     struct ut_err *err)
{
	uint64_t len = n << img->cluster_bits;
	char buf[128];
	const char *what = meta_overlap(img, host, len);

	if (!what)
		what = table_overlap(img, host, n, buf, sizeof(buf));
	if (!what)
		what = named_overlap(img, host, len, buf, sizeof(buf));
	if (what && kind)
		return cow_mark_corrupt(img, err, "new %s at 0x%llx overlaps %s; not written", kind,
					(unsigned long long)host, what);
	if (what)
		return cow_mark_corrupt(img, err, "allocated cluster 0x%llx overlaps %s",
					(unsigned long long)host, what);
	return 0;
}

/* Check @n new clusters at @host against the metadata (I8): the header,
 * L1 and refcount tables, and, as QEMU's default overlap check
 * (overlap-check=cached), every L2 table the active L1 names and every
 * refcount block the refcount table names (cached or not), the snapshot
 * table, the snapshots' L1 tables and the bitmap directory (img->meta,
 * loaded at open): a damaged refcount of 0 on any of them must not turn it
 * into something else. Every allocation passes here (cow_alloc_clusters).
 * 0, or -EUCLEAN with the image marked corrupt. */
int cow_check_new(struct cow_img *img, uint64_t host, uint64_t n, struct ut_err *err)
{
	return check_new(img, host, n, NULL, err);
}

void cow_named_add(struct cow_img *img, uint64_t off)
{
	if (img->named_ok && off + img->cluster_size > img->named_end)
		img->named_end = off + img->cluster_size;
}

int cow_check_new_rc(struct cow_img *img, uint64_t host, uint64_t n, const char *kind,
		     struct ut_err *err)
{
	return check_new(img, host, n, kind, err);
}

/* Make durable everything a write of an L2 table may depend on (I1, I2):
 * the refcount blocks and refcount-table entries in memory, and the data and
 * metadata already written. One fdatasync at most, none if nothing is
 * outstanding. */
static int l2_deps(struct cow_img *img, struct ut_err *err)
{
	int ret = cow_rc_flush(img, err);

	if (ret == 0 && img->unsynced)
		ret = cow_sync(img, err);
	return ret;
}

/* Write one dirty L2 table after its dependencies (writeback eviction). The
 * table is not synced: the L1 entry pointing to it is written only after the
 * next fdatasync (I3), in cow_meta_writeback. */
static int l2_write_one(struct cow_img *img, struct cow_cent *e, struct ut_err *err)
{
	int ret = l2_deps(img, err);

	if (ret == 0)
		ret = cow_pwrite_full(img, e->buf, img->cluster_size, e->off, err);
	if (ret == 0)
		cow_cache_mark_clean(&img->l2c, e);
	return ret;
}

static int cache_room(struct cow_img *img, struct ut_err *err)
{
	struct cow_cent *v;
	int ret;

	if (img->l2c.n < img->l2c.cap)
		return 0;
	v = cow_cache_lru(&img->l2c);
	if (v->dirty) {
		ret = l2_write_one(img, v, err);
		if (ret < 0) {
			/* it stays dirty (written by the next flush): a clean
			 * table makes room, or, with none, the cache grows past
			 * its capacity until writes succeed again, so that
			 * reads go on while writes fail (ENOSPC) */
			v = cow_cache_lru_clean(&img->l2c);
			if (!v)
				return 0;
		}
	}
	cow_cache_remove(&img->l2c, v);
	return 0;
}

/* A cache entry for the L2 table at @off (its buffer not filled), after
 * making room. 0 or -errno. */
static int cache_slot(struct cow_img *img, uint64_t off, struct cow_cent **out,
		      struct ut_err *err)
{
	int ret = cache_room(img, err);

	if (ret < 0)
		return ret;
	*out = cow_cache_insert(&img->l2c, off);
	return *out ? 0 : ut_errf(err, -ENOMEM, "out of memory");
}

/* Give L1 entry @l1_idx a new L2 table in a new cluster, holding @content
 * (a cluster of entries; NULL: all zero), cached and dirty, *out. It is
 * written at once, as QEMU writes a new table: past the end of the file
 * this makes its cluster part of the file, so a later data cluster is never
 * placed before it ends; in a cluster a discard punched it gets its blocks.
 * The later write-back is then a rewrite in place, which a full file system
 * (ENOSPC) does not refuse. When that write fails the table never existed:
 * the L1 entry is unchanged, the cluster is freed at once (nothing refers
 * to it, I17), and the request fails cleanly. The L1 entry is written
 * later (cow_meta_writeback, I1-I3). 0 or -errno. */
static int l2_install(struct cow_img *img, uint64_t l1_idx, const uint8_t *content,
		      struct cow_cent **out, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, off, got;
	struct cow_cent *e;
	int ret = cow_alloc_clusters(img, 1, &off, &got, err);

	*out = NULL;
	if (ret < 0)
		return ret;
	ret = cache_slot(img, off, &e, err);
	if (ret < 0) {
		cow_free_unlinked(img, off, 1, NULL);
		return ret;
	}
	if (content)
		memcpy(e->buf, content, cs);
	else
		memset(e->buf, 0, cs);
	ret = cow_pwrite_full(img, e->buf, cs, off, err);
	if (ret < 0) {
		cow_cache_remove(&img->l2c, e);
		cow_free_unlinked(img, off, 1, NULL);
		return ret;
	}
	cow_cache_mark_dirty(&img->l2c, e);
	img->l1[l1_idx] = off | QCOW_OFLAG_COPIED;
	cow_named_add(img, off);
	if (l1_idx >= img->named_l1_n)
		img->named_l1_n = l1_idx + 1;
	img->l1_dirty[l1_idx / 64] = 1;
	img->any_l1_dirty = true;
	*out = e;
	return 0;
}

/* I16: the L2 table cached in @src, which L1 entry @l1_idx points to
 * without COPIED (an internal snapshot shares it), becomes the active L1's
 * own: a copy in a new cluster, as QEMU copies a shared table before its
 * first change. In the copy an entry with a host cluster carries COPIED
 * exactly when that cluster's refcount is 1; the others (shared with the
 * snapshot) are written by copy-on-write (write.c) and released by a
 * decrement. The L1 entry points to the copy (COPIED; written after the
 * copy and its refcount are durable, I1-I3) and the active L1's reference
 * to the old table is dropped after that (cow_free_later, I4). The old
 * table leaves the cache: the active view never reads it again, and when
 * that reference was its last (an L1 entry without COPIED over a table of
 * refcount 1: a stale flag) its cluster becomes free, and a cached table
 * there would make the allocation that reuses it fail the overlap check
 * (I8) as QEMU drops a freed table from its cache.
 * *out = the copy's cache entry. 0 or -errno. */
static int l2_unshare(struct cow_img *img, uint64_t l1_idx, struct cow_cent *src,
		      struct cow_cent **out, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, old = src->off;
	uint8_t *copy = malloc(cs);
	struct cow_cent *e, *o;
	int ret = 0;

	*out = NULL;
	if (!copy)
		return ut_errf(err, -ENOMEM, "out of memory");
	memcpy(copy, src->buf, cs);   /* @src may be evicted below */
	for (uint64_t i = 0; i < img->l2_entries; i++) {
		uint8_t *p = copy + i * img->l2_esize;
		uint64_t ent = cow_be64(p), h = ent & QCOW_OFFSET_MASK, rc;
		if (!h || (ent & QCOW_OFLAG_COMPRESSED))
			continue;   /* compressed entries never carry COPIED (I6) */
		ret = cow_rc_get(img, h >> img->cluster_bits, &rc, err);
		if (ret < 0)
			goto out;
		cow_put64(p, rc == 1 ? ent | QCOW_OFLAG_COPIED : ent & ~QCOW_OFLAG_COPIED);
	}
	/* (when this fails the L1 entry still points to the shared table) */
	ret = l2_install(img, l1_idx, copy, &e, err);
	if (ret < 0)
		goto out;
	ret = cow_free_later(img, old, cs, err);
	if (ret < 0)
		goto out;
	/* (clean: nothing changes under an L1 entry without COPIED; a dirty
	 * one is another L1 entry's table in a damaged image: left alone) */
	o = cow_cache_find(&img->l2c, old);
	if (o && !o->dirty)
		cow_cache_remove(&img->l2c, o);
	*out = e;
out:
	free(copy);
	return ret;
}

int cow_l2_get(struct cow_img *img, uint64_t l1_idx, bool alloc, struct cow_cent **out,
	       struct ut_err *err)
{
	uint64_t l1e, off;
	struct cow_cent *e;
	const char *what;
	int ret;

	*out = NULL;
	if (l1_idx >= img->h.l1_size && img->snap && !alloc)
		return 0;   /* (a snapshot's L1 shorter than the disk: unallocated) */
	if (l1_idx >= img->h.l1_size)
		return cow_mark_corrupt(img, err, "guest offset outside the L1 table (index %llu)",
					(unsigned long long)l1_idx);
	l1e = img->l1[l1_idx];
	off = l1e & QCOW_OFFSET_MASK;
	if (!off) {
		if (!alloc)
			return 0;
		return l2_install(img, l1_idx, NULL, out, err);
	}
	if (off & (img->cluster_size - 1))
		return cow_mark_corrupt(img, err, "L2 table offset 0x%llx is not cluster-aligned",
					(unsigned long long)off);
	what = meta_overlap(img, off, img->cluster_size);
	if (what)
		return cow_mark_corrupt(img, err, "L2 table at 0x%llx overlaps %s",
					(unsigned long long)off, what);
	e = cow_cache_find(&img->l2c, off);
	if (!e) {
		/* (a cached table was written when it was made: inside) */
		if (off + img->cluster_size > img->file_size)
			return cow_mark_corrupt(img, err, "L2 table offset 0x%llx is beyond the end of the file",
						(unsigned long long)off);
		ret = cache_slot(img, off, &e, err);
		if (ret < 0)
			return ret;
		ret = cow_pread_full(img, e->buf, img->cluster_size, off, false, err);
		if (ret < 0) {
			cow_cache_remove(&img->l2c, e);
			return ret;
		}
	}
	if (alloc && !(l1e & QCOW_OFLAG_COPIED))
		return l2_unshare(img, l1_idx, e, out, err);
	*out = e;
	return 0;
}

/* Entry @i of the cached L2 table @t (for guest cluster @vcl), validated. */
int cow_table_entry(struct cow_img *img, const struct cow_cent *t, uint64_t vcl,
		    uint64_t *ent, uint64_t *bmp, struct ut_err *err)
{
	uint64_t i = vcl & (img->l2_entries - 1);
	const char *bad;

	*ent = cow_l2_ent(img, t->buf, i);
	*bmp = cow_l2_bmp(img, t->buf, i);
	bad = cow_l2_bmp_problem(img, *ent, *bmp);
	if (bad)
		return cow_mark_corrupt(img, err, "L2 entry of guest cluster %llu: %s",
					(unsigned long long)vcl, bad);
	return 0;
}

int cow_get_entry(struct cow_img *img, uint64_t vcl, uint64_t *ent, uint64_t *bmp,
		  struct cow_cent **tbl, struct ut_err *err)
{
	struct cow_cent *e;
	int ret = cow_l2_get(img, vcl >> img->l2_bits, false, &e, err);

	*ent = 0;
	*bmp = 0;
	if (tbl)
		*tbl = e;
	if (ret < 0 || !e)
		return ret;
	return cow_table_entry(img, e, vcl, ent, bmp, err);
}

/* cow_check_data_off, and with @write cow_check_write_off: the core
 * tables once, then (writes) the rest of the cached overlap check. */
static int check_data(struct cow_img *img, uint64_t host, uint64_t vcl, bool write,
		      struct ut_err *err)
{
	char buf[128];
	const char *what;

	if (host & (img->cluster_size - 1))
		return cow_mark_corrupt(img, err, "data cluster offset 0x%llx (guest cluster %llu) is not cluster-aligned",
					(unsigned long long)host, (unsigned long long)vcl);
	if (host >= img->file_size)
		return cow_mark_corrupt(img, err, "data cluster offset 0x%llx (guest cluster %llu) is beyond the end of the file",
					(unsigned long long)host, (unsigned long long)vcl);
	what = meta_overlap(img, host, img->cluster_size);
	if (what)
		return cow_mark_corrupt(img, err, "data cluster at 0x%llx overlaps %s",
					(unsigned long long)host, what);
	what = write ? table_overlap(img, host, 1, buf, sizeof(buf)) : NULL;
	if (what)
		return cow_mark_corrupt(img, err, "data cluster at 0x%llx (guest cluster %llu) overlaps %s; not written",
					(unsigned long long)host, (unsigned long long)vcl, what);
	return 0;
}

int cow_check_data_off(struct cow_img *img, uint64_t host, uint64_t vcl, struct ut_err *err)
{
	return check_data(img, host, vcl, false, err);
}

int cow_check_write_off(struct cow_img *img, uint64_t host, uint64_t vcl, struct ut_err *err)
{
	return check_data(img, host, vcl, true, err);
}

/* Queue the host clusters an L2 entry held for freeing (I4). */
static int release_entry(struct cow_img *img, uint64_t e, struct ut_err *err)
{
	if (e & QCOW_OFLAG_COMPRESSED) {
		uint64_t coff = cow_l2_compressed_off(img, e);
		uint64_t clen = cow_l2_compressed_sectors(img, e) * 512 - (coff & 511);
		uint64_t endc = ((coff + clen - 1) >> img->cluster_bits) + 1;
		uint64_t lastc = (img->file_size + img->cluster_size - 1) >> img->cluster_bits;
		if (endc > lastc && lastc > (coff >> img->cluster_bits))
			clen = (lastc << img->cluster_bits) - coff;
		if (img->dec_key == e)
			img->dec_key = 0;
		return cow_free_later(img, coff, clen, err);
	}
	if (e & QCOW_OFFSET_MASK)
		return cow_free_later(img, e & QCOW_OFFSET_MASK, img->cluster_size, err);
	return 0;
}

/* Does L2 entry @ne hold the host clusters @old holds (nothing to free)?
 * A compressed entry's only when unchanged but for COPIED; another's when
 * @ne is not compressed and has the same host offset, whatever its flags
 * (a zero cluster that keeps its host cluster, I15). */
static bool same_hold(uint64_t old, uint64_t ne)
{
	if (old & QCOW_OFLAG_COMPRESSED)
		return (old & ~QCOW_OFLAG_COPIED) == (ne & ~QCOW_OFLAG_COPIED);
	return !(old & QCOW_OFFSET_MASK) ||
	       (!(ne & QCOW_OFLAG_COMPRESSED) && (ne & QCOW_OFFSET_MASK) == (old & QCOW_OFFSET_MASK));
}

/* Set the L2 entry of guest cluster @vcl to @ne and, with extended L2
 * entries, its subcluster bitmap to @nbmp (ignored otherwise). With @release
 * the host clusters the old entry held are queued for freeing when the new
 * entry no longer uses them (I4). */
int cow_set_entry(struct cow_img *img, uint64_t vcl, uint64_t ne, uint64_t nbmp, bool release,
		  struct ut_err *err)
{
	struct cow_cent *t;
	uint64_t old, oldbmp;
	uint8_t *p;
	int ret = cow_l2_get(img, vcl >> img->l2_bits, true, &t, err);

	if (ret < 0)
		return ret;
	p = t->buf + (vcl & (img->l2_entries - 1)) * img->l2_esize;
	old = cow_be64(p);
	oldbmp = img->extl2 ? cow_be64(p + 8) : 0;
	if (!img->extl2)
		nbmp = 0;
	if (old == ne && oldbmp == nbmp)
		return 0;
	if (release && !same_hold(old, ne)) {
		ret = release_entry(img, old, err);
		if (ret < 0)
			return ret;
	}
	cow_put64(p, ne);
	if (img->extl2)
		cow_put64(p + 8, nbmp);
	cow_cache_mark_dirty(&img->l2c, t);
	return 0;
}

/* Dirty L2 tables and refcount blocks stay in the cache (writeback; they are
 * written on eviction or flush). Only a long free queue forces a write-back,
 * since freed clusters cannot be reused before it (I4). */
int cow_maybe_writeback(struct cow_img *img, struct ut_err *err)
{
	if (img->npending > 4096)
		return cow_meta_writeback(img, err);
	return 0;
}

int cow_meta_writeback(struct cow_img *img, struct ut_err *err)
{
	int ret;

	if (img->ro || img->fmt != COW_FMT_QCOW2)
		return 0;
	if (!img->rbc.ndirty && !img->l2c.ndirty && !img->any_l1_dirty && !img->npending &&
	    !img->nrt_dirty)
		return 0;
	/* I1/I2: refcounts (blocks, then table entries) and data durable before
	 * any L2 entry */
	ret = l2_deps(img, err);
	if (ret < 0)
		return ret;
	for (struct cow_cent *e = img->l2c.head; e && img->l2c.ndirty; e = e->next) {
		if (!e->dirty)
			continue;
		ret = cow_pwrite_full(img, e->buf, img->cluster_size, e->off, err);
		if (ret < 0)
			return ret;
		cow_cache_mark_clean(&img->l2c, e);
	}
	/* I3: L1 after the L2 tables it points to (including tables written by
	 * an eviction since the last fdatasync) are durable */
	if (img->any_l1_dirty) {
		uint8_t chunk[512];
		if (img->unsynced) {
			ret = cow_sync(img, err);
			if (ret < 0)
				return ret;
		}
		for (uint64_t c = 0; c * 64 < img->h.l1_size; c++) {
			uint64_t n = img->h.l1_size - c * 64;
			if (!img->l1_dirty[c])
				continue;
			if (n > 64)
				n = 64;
			for (uint64_t i = 0; i < n; i++)
				cow_put64(chunk + i * 8, img->l1[c * 64 + i]);
			ret = cow_pwrite_full(img, chunk, n * 8, img->h.l1_off + c * 512, err);
			if (ret < 0)
				return ret;
			img->l1_dirty[c] = 0;
		}
		img->any_l1_dirty = false;
	}
	/* I4: decrements only after the references are durably gone */
	if (img->npending) {
		if (img->unsynced) {
			ret = cow_sync(img, err);
			if (ret < 0)
				return ret;
		}
		ret = cow_apply_pending(img, err);
	}
	/* no final fdatasync: nothing written here depends on the last
	 * writes; cow_flush ends with one */
	return ret;
}

int cow_flush(struct cow_img *img, struct ut_err *err)
{
	int ret;

	if (img->ro)
		return 0;
	ret = cow_meta_writeback(img, err);
	if (ret < 0)
		return ret;
	return cow_sync(img, err);
}

/* cow_block_status(_above) searching @layers layers; with @edge a run the
 * last one leaves unallocated is looked up in the next one's size only
 * (layers 0: reads zeros past its end, else unallocated). */
static int status(struct cow_img *img, uint64_t off, uint64_t len, unsigned layers, bool edge,
		  struct cow_extent *ext, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, e, e2, n, vcl, in, bmp;
	struct cow_cent *t;
	enum cow_ctype ct;
	int ret;

	memset(ext, 0, sizeof(*ext));
	ext->off = off;
	ext->layer = img;
	if (off >= img->size) {
		ext->len = len;
		ext->st = COW_ST_ZERO;
		ext->depth = -1;
		ext->end_depth = -1;   /* the layer above, whose backing ends here */
		return 0;
	}
	if (len > img->size - off)
		len = img->size - off;
	if (!layers) {
		ext->len = len;
		ext->st = COW_ST_UNALLOC;
		return 0;
	}
	if (img->fmt == COW_FMT_RAW) {
		ext->len = len;
		ext->st = COW_ST_DATA;
		ext->host_off = off;
		return 0;
	}
	vcl = off >> img->cluster_bits;
	in = off & (cs - 1);
	ret = cow_get_entry(img, vcl, &e, &bmp, &t, err);
	if (ret < 0)
		return ret;
	ct = cow_classify(img, e, bmp);
	n = cs - in;
	if (ct == COW_CT_MIXED)
		n = cow_sc_run(img, bmp, in, &ct) - in;
	if (!t) {
		uint64_t tbl_end = ((vcl >> img->l2_bits) + 1) << (img->l2_bits + img->cluster_bits);
		n = tbl_end - off;
	} else if (n == cs - in) {
		for (uint64_t i = 1; n < len && ((vcl + i) & (img->l2_entries - 1)); i++) {
			uint64_t j = (vcl + i) & (img->l2_entries - 1);
			e2 = cow_l2_ent(img, t->buf, j);
			if (cow_classify(img, e2, cow_l2_bmp(img, t->buf, j)) != ct)
				break;
			if (ct == COW_CT_NORMAL && (e2 & QCOW_OFFSET_MASK) != (e & QCOW_OFFSET_MASK) + i * cs)
				break;
			if ((ct == COW_CT_ZERO || ct == COW_CT_UNALLOC) && (e2 & QCOW_OFFSET_MASK) !=
			    ((e & QCOW_OFFSET_MASK) ? (e & QCOW_OFFSET_MASK) + i * cs : 0))
				break;   /* (unallocated with a host cluster: subclusters) */
			n += cs;
		}
	}
	if (n > len)
		n = len;
	ext->len = n;
	switch (ct) {
	case COW_CT_MIXED:   /* not reached: sc_run resolves it */
	case COW_CT_UNALLOC: ext->st = COW_ST_UNALLOC; break;
	case COW_CT_ZERO:
		ext->st = COW_ST_ZERO;
		if (e & QCOW_OFFSET_MASK)
			ext->host_off = (e & QCOW_OFFSET_MASK) + in;
		break;
	case COW_CT_COMPRESSED: ext->st = COW_ST_COMPRESSED; break;
	case COW_CT_NORMAL:
		ext->st = COW_ST_DATA;
		ext->host_off = (e & QCOW_OFFSET_MASK) + in;
		break;
	}
	if (ct == COW_CT_UNALLOC && (layers > 1 || edge)) {
		if (!img->backing) {
			ext->depth = -1;
			ext->end_depth = 0;
			ext->st = COW_ST_ZERO;
			/* unallocated subclusters of a cluster that has a host
			 * cluster: its offset, as qemu-img map prints it */
			if (e & QCOW_OFFSET_MASK)
				ext->host_off = (e & QCOW_OFFSET_MASK) + in;
			return 0;
		}
		ret = status(img->backing, off, n, layers - 1, edge, ext, err);
		if (ret < 0)
			return ret;
		if (ext->depth >= 0) {
			ext->depth++;
		} else if (ext->end_depth++ < 0 && (e & QCOW_OFFSET_MASK)) {
			/* the backing file ends before @off: the search ends
			 * in this layer, whose host cluster qemu-img map
			 * shows, as without a backing file */
			ext->layer = img;
			ext->host_off = (e & QCOW_OFFSET_MASK) + in;
		}
		return 0;
	}
	return 0;
}

int cow_block_status(struct cow_img *img, uint64_t off, uint64_t len, bool follow,
		     struct cow_extent *ext, struct ut_err *err)
{
	return status(img, off, len, follow ? UINT_MAX : 1, false, ext, err);
}

int cow_block_status_above(struct cow_img *img, uint64_t off, uint64_t len, unsigned layers,
			   struct cow_extent *ext, struct ut_err *err)
{
	return status(img, off, len, layers ? layers : 1, true, ext, err);
}

int cow_layer_fd(const struct cow_img *layer)
{
	return layer->fd;
}
