/* cow/refcount.c — the refcount table and refcount blocks: reading all widths
 * (1..64 bits), increments through the block cache, cluster allocation, the
 * deferred free queue (invariant I4) and refcount-table growth (I5). */
#include "cow/qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint64_t cow_rc_read_entry(const uint8_t *blk, uint32_t order, uint64_t idx)
{
	switch (order) {
	case 0: return (blk[idx / 8] >> (idx % 8)) & 1;
	case 1: return (blk[idx / 4] >> (2 * (idx % 4))) & 3;
	case 2: return (blk[idx / 2] >> (4 * (idx % 2))) & 15;
	case 3: return blk[idx];
	case 4: return cow_be16(blk + idx * 2);
	case 5: return cow_be32(blk + idx * 4);
	default: return cow_be64(blk + idx * 8);
	}
}

void cow_rc_write_entry(uint8_t *blk, uint32_t order, uint64_t idx, uint64_t v)
{
	unsigned sh;

	switch (order) {
	case 0: sh = idx % 8; blk[idx / 8] = (uint8_t)((blk[idx / 8] & ~(1u << sh)) | ((v & 1) << sh)); break;
	case 1: sh = 2 * (idx % 4); blk[idx / 4] = (uint8_t)((blk[idx / 4] & ~(3u << sh)) | ((v & 3) << sh)); break;
	case 2: sh = 4 * (idx % 2); blk[idx / 2] = (uint8_t)((blk[idx / 2] & ~(15u << sh)) | ((v & 15) << sh)); break;
	case 3: blk[idx] = (uint8_t)v; break;
	case 4: cow_put16(blk + idx * 2, (uint16_t)v); break;
	case 5: cow_put32(blk + idx * 4, (uint32_t)v); break;
	default: cow_put64(blk + idx * 8, v); break;
	}
}

int cow_rc_open(struct cow_img *img, struct ut_err *err)
{
	uint64_t bytes = (uint64_t)img->h.rt_clusters * img->cluster_size;
	uint8_t *raw = malloc(bytes);
	int ret;

	img->rt = calloc(bytes / 8, sizeof(uint64_t));
	if (!raw || !img->rt) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = cow_pread_full(img, raw, bytes, img->h.rt_off, false, err);
	if (ret < 0)
		goto out;
	img->rt_entries = bytes / 8;
	for (uint64_t i = 0; i < img->rt_entries; i++)
		img->rt[i] = cow_be64(raw + i * 8);
	img->rb_bits = 1u << img->h.refcount_order;
	img->rb_entries = (uint32_t)(((uint64_t)img->cluster_size * 8) >> img->h.refcount_order);
	img->rb_max = img->rb_bits == 64 ? ~0ull : (1ull << img->rb_bits) - 1;
	img->end_cluster = (img->file_size + img->cluster_size - 1) >> img->cluster_bits;
	img->free_hint = 0;
	img->free_from = img->free_to = 0;
out:
	free(raw);
	return ret;
}

int cow_rc_write_dirty(struct cow_img *img, struct ut_err *err)
{
	for (struct cow_cent *e = img->rbc.head; e && img->rbc.ndirty; e = e->next) {
		if (!e->dirty)
			continue;
		int ret = cow_pwrite_full(img, e->buf, img->cluster_size, e->off, err);
		if (ret < 0)
			return ret;
		cow_cache_mark_clean(&img->rbc, e);
	}
	return 0;
}

int cow_rb_load(struct cow_img *img, uint64_t idx, struct cow_cent **out, struct ut_err *err)
{
	struct cow_cent *e;
	uint64_t off;
	int ret;

	*out = NULL;
	if (idx >= img->rt_entries)
		return 0;
	if (!img->rt[idx])
		return 0;
	off = img->rt[idx] & QCOW_RT_OFFSET_MASK;
	if ((img->rt[idx] & QCOW_RT_RESERVED) || (off & (img->cluster_size - 1)) ||
	    off < img->cluster_size || img->file_size < img->cluster_size ||
	    off > img->file_size - img->cluster_size)
		return cow_mark_corrupt(img, err, "refcount block %llu at invalid offset 0x%llx",
					(unsigned long long)idx, (unsigned long long)img->rt[idx]);
	e = cow_cache_find(&img->rbc, off);
	if (e) {
		*out = e;
		return 0;
	}
	if (img->rbc.n >= img->rbc.cap) {
		struct cow_cent *v = cow_cache_lru(&img->rbc);
		/* a block that cannot be written (ENOSPC) stays dirty, as
		 * in l2.c cache_room */
		if (v->dirty && cow_pwrite_full(img, v->buf, img->cluster_size, v->off, err) < 0)
			v = cow_cache_lru_clean(&img->rbc);
		if (v)
			cow_cache_remove(&img->rbc, v);
	}
	e = cow_cache_insert(&img->rbc, off);
	if (!e)
		return ut_errf(err, -ENOMEM, "out of memory");
	ret = cow_pread_full(img, e->buf, img->cluster_size, off, false, err);
	if (ret < 0) {
		cow_cache_remove(&img->rbc, e);
		return ret;
	}
	*out = e;
	return 0;
}

int cow_rc_get(struct cow_img *img, uint64_t cluster, uint64_t *val, struct ut_err *err)
{
	struct cow_cent *e;
	int ret = cow_rb_load(img, cluster / img->rb_entries, &e, err);

	if (ret < 0)
		return ret;
	*val = e ? cow_rc_read_entry(e->buf, img->h.refcount_order, cluster % img->rb_entries) : 0;
	return 0;
}

static int grow_rt(struct cow_img *img, uint64_t need, struct ut_err *err);

/* I13: the first run of @n clusters at or after @from whose refcounts are
 * all 0 (a cluster without a refcount block counts 0), in *out. A file cut
 * short (a truncated copy, a damaged image) can end before clusters its
 * refcounts still hold: they are skipped, never given a second owner (first
 * fit, as QEMU allocates). In a consistent image the clusters past the end
 * of the file are free and this reads one refcount entry per cluster; more
 * than COW_FREE_SCAN clusters without room means damaged refcounts: an
 * error, and the image is marked corrupt. */
#define COW_FREE_SCAN (1ull << 22)
static int free_run(struct cow_img *img, uint64_t from, uint64_t n, uint64_t *out,
		    struct ut_err *err)
{
	uint64_t epb = img->rb_entries, c = from, run = 0;
	int ret;

	/* known free: [free_from, free_to), all above end_cluster */
	if (from >= img->end_cluster && from >= img->free_from && from + n <= img->free_to) {
		*out = from;
		return 0;
	}
	while (run < n) {
		uint64_t p = c + run, j = p / epb, lim = (j + 1) * epb;
		struct cow_cent *e;

		if (p - from > COW_FREE_SCAN)
			return cow_mark_corrupt(img, err, "refcounts claim the %llu clusters after cluster %llu (no free cluster near the end of the file)",
						(unsigned long long)COW_FREE_SCAN, (unsigned long long)from);
		if (j >= img->rt_entries || !img->rt[j]) {
			run += lim - p < n - run ? lim - p : n - run;
			continue;
		}
		ret = cow_rb_load(img, j, &e, err);
		if (ret < 0)
			return ret;
		for (; run < n && c + run < lim; run++) {
			if (cow_rc_read_entry(e->buf, img->h.refcount_order, (c + run) % epb)) {
				c += run + 1;
				run = 0;
				break;
			}
		}
	}
	*out = c;
	/* remember how far the free run goes in this block, so the next
	 * allocations at the end read no refcount (rc_set forgets it when
	 * anything past end_cluster changes) */
	{
		uint64_t p = c + n, j = (p - 1) / epb, lim = (j + 1) * epb;
		struct cow_cent *e = NULL;
		if (j < img->rt_entries && img->rt[j] &&
		    cow_rb_load(img, j, &e, NULL) < 0)
			return 0;
		while (e && p < lim && !cow_rc_read_entry(e->buf, img->h.refcount_order, p % epb))
			p++;
		img->free_from = c;
		img->free_to = e ? p : lim;
	}
	return 0;
}

/* A write into clusters that stay free failed, maybe after writing a part:
 * img->file_size goes past them (to @end), so that the I10 shortcut never
 * reuses one with its leftovers (I17). */
static void cover_failed(struct cow_img *img, uint64_t end)
{
	if (end > img->file_size)
		img->file_size = end;
}

/* Write a new refcount block for range @idx at cluster @at (free), now and
 * unsynced, so that the file covers it, holding refcount 1 for each of the
 * clusters [@first, @first + @cnt) that lie in range @idx (the new blocks
 * themselves: its own cluster when @at is in range @idx) and 0 for the rest;
 * set its refcount-table entry in memory and queue it in img->rt_dirty.
 * cow_rc_flush writes the entry only after the block is durable, and every
 * L2 write waits for cow_rc_flush + fdatasync (I1, I9). No fdatasync here.
 * @at is checked against the metadata first (cow_check_new_rc, I8): a
 * damaged refcount of 0 never puts a block over a table. */
static int write_block(struct cow_img *img, uint64_t idx, uint64_t at, uint64_t first,
		       uint64_t cnt, struct ut_err *err)
{
	uint64_t lo = idx * img->rb_entries, hi = lo + img->rb_entries;
	uint8_t *buf;
	int ret;

	ret = cow_check_new_rc(img, at << img->cluster_bits, 1, "refcount block", err);
	if (ret < 0)
		return ret;
	if (img->nrt_dirty == img->cap_rt_dirty) {
		size_t nc = img->cap_rt_dirty ? img->cap_rt_dirty * 2 : 16;
		uint64_t *p = realloc(img->rt_dirty, nc * sizeof(*p));
		if (!p)
			return ut_errf(err, -ENOMEM, "out of memory");
		img->rt_dirty = p;
		img->cap_rt_dirty = nc;
	}
	buf = calloc(1, img->cluster_size);
	if (!buf)
		return ut_errf(err, -ENOMEM, "out of memory");
	for (uint64_t c = first > lo ? first : lo; c < first + cnt && c < hi; c++)
		cow_rc_write_entry(buf, img->h.refcount_order, c - lo, 1);
	ret = cow_pwrite_full(img, buf, img->cluster_size, at << img->cluster_bits, err);
	free(buf);
	if (ret < 0) {
		/* @at stays free, maybe with part of the block written past
		 * file_size: no I10 shortcut over it (I17) */
		cover_failed(img, (at + 1) << img->cluster_bits);
		return ret;
	}
	img->rt[idx] = at << img->cluster_bits;
	cow_named_add(img, at << img->cluster_bits);
	if (idx >= img->named_rt_n)
		img->named_rt_n = idx + 1;
	img->rt_dirty[img->nrt_dirty++] = idx;
	if (at + 1 > img->end_cluster)
		img->end_cluster = at + 1;
	return 0;
}

/* Create the missing refcount block @idx inside the range it describes (it
 * describes itself: its own refcount is 1). */
static int create_block(struct cow_img *img, uint64_t idx, struct ut_err *err)
{
	uint64_t epb = img->rb_entries, b = idx * epb;

	/* b stays inside the range this block describes, where every
	 * refcount is 0 (no block yet): free, I13 */
	if (b < img->end_cluster)
		b = img->end_cluster;
	if (b >= (idx + 1) * epb)
		b = idx * epb;   /* a hole below the end of the file: all free */
	return write_block(img, idx, b, b, 1, err);
}

/* Is range @idx among the @n range numbers at @q (queued refcount-table
 * entries, the new blocks of a table switch)? */
/* cow_rc_flush marks the queued entries it wrote in a round with this bit
 * (cleared, with the entries, before it returns) */
#define RT_WRITTEN (1ull << 63)

static bool rt_queued(const uint64_t *q, size_t n, uint64_t idx)
{
	for (size_t i = 0; i < n; i++)
		if ((q[i] & ~RT_WRITTEN) == idx)
			return true;
	return false;
}

int cow_rc_flush(struct cow_img *img, struct ut_err *err)
{
	uint8_t be[8];
	int ret = cow_rc_write_dirty(img, err);

	/* the new blocks (and the refcounts of the blocks placed outside
	 * their own ranges, cow_alloc_contig) durable before the table
	 * entries that point to them */
	while (ret == 0 && img->nrt_dirty) {
		size_t n = img->nrt_dirty, kept = 0;
		bool wrote = false;

		ret = cow_sync(img, err);
		if (ret < 0)
			break;
		/* an entry goes now unless its block's own refcount is in a
		 * block whose entry is queued too, or was written in this
		 * round: that one first, then an fdatasync (a cut in between
		 * must not leave a table entry to a block no durable refcount
		 * describes, I9). The queue stays whole for the lookups until
		 * the round ends (compacting it in the loop lost entries
		 * written this round: with 64 new blocks describing each
		 * other a power cut left a table entry without its refcount) */
		for (size_t i = 0; i < n && ret == 0; i++) {
			uint64_t idx = img->rt_dirty[i];
			uint64_t by = (img->rt[idx] >> img->cluster_bits) / img->rb_entries;

			if (by != idx && rt_queued(img->rt_dirty, n, by))
				continue;
			cow_put64(be, img->rt[idx]);
			ret = cow_pwrite_full(img, be, 8, img->h.rt_off + idx * 8, err);
			if (ret == 0) {
				img->rt_dirty[i] |= RT_WRITTEN;
				wrote = true;
			}
		}
		for (size_t i = 0; i < n; i++)
			if (!(img->rt_dirty[i] & RT_WRITTEN))
				img->rt_dirty[kept++] = img->rt_dirty[i];
		img->nrt_dirty = kept;
		if (ret < 0)
			return ret;
		/* blocks placed in increasing order describe each other in
		 * that order only: no cycle (a safety net) */
		if (!wrote)
			return cow_mark_corrupt(img, err, "new refcount blocks describe each other");
	}
	return ret;
}

static int rc_set(struct cow_img *img, uint64_t cluster, uint64_t v, struct ut_err *err)
{
	uint64_t idx = cluster / img->rb_entries;
	struct cow_cent *e;
	int ret;

	if (cluster >= img->end_cluster && cluster >= img->free_from && cluster < img->free_to)
		img->free_to = 0;   /* the known-free run is no longer known */

	if (idx >= img->rt_entries) {
		ret = grow_rt(img, idx + 1, err);
		if (ret < 0)
			return ret;
	}
	ret = cow_rb_load(img, idx, &e, err);
	if (ret < 0)
		return ret;
	if (!e) {
		ret = create_block(img, idx, err);
		if (ret < 0)
			return ret;
		ret = cow_rb_load(img, idx, &e, err);
		if (ret < 0)
			return ret;
	}
	cow_rc_write_entry(e->buf, img->h.refcount_order, cluster % img->rb_entries, v);
	cow_cache_mark_dirty(&img->rbc, e);
	return 0;
}

int cow_rc_add(struct cow_img *img, uint64_t cluster, int64_t delta, struct ut_err *err)
{
	uint64_t v;
	int ret = cow_rc_get(img, cluster, &v, err);

	if (ret < 0)
		return ret;
	if (delta < 0 && v < (uint64_t)-delta)
		return cow_mark_corrupt(img, err, "refcount underflow for cluster %llu",
					(unsigned long long)cluster);
	if (delta > 0 && img->rb_max - v < (uint64_t)delta)
		return ut_errf(err, -ERANGE, "'%s': refcount overflow for cluster %llu (%u-bit refcounts)",
			       img->path, (unsigned long long)cluster, img->rb_bits);
	return rc_set(img, cluster, v + (uint64_t)delta, err);
}

/* Grow the refcount table to at least @need entries (I5). The new table
 * and the blocks its clusters need go at the first free run from the end
 * of the file, checked against the metadata first (cow_check_new_rc, I8).
 * A failure before the header names the new table undoes the refcounts it
 * set in the blocks that existed: nothing references the new table and
 * blocks, so their clusters are free again (covered by file_size, I17); a
 * block that cannot be read back for that keeps its increment (a leak,
 * check --repair leaks). When the header was written but the fdatasync
 * after it failed, the file holds the new table (in the page cache at
 * least): the switch is completed in memory and the old table is not
 * freed, so whichever header is durable the other table is a leak, never a
 * reference without a refcount (every later fdatasync fails, I1). */
static int grow_rt(struct cow_img *img, uint64_t need, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, epb = img->rb_entries, per = cs / 8;
	uint64_t new_entries = img->rt_entries * 2, T, t = 0, e, j, nnew = 0, wend = 0, counted = 0;
	uint64_t *new_rt = NULL, *nb_idx = NULL;
	uint8_t *nb_buf = NULL, *raw = NULL, hb[12];
	bool undo = false;
	int ret;

	if (new_entries < need)
		new_entries = need;
restart:
	new_entries = (new_entries + per - 1) / per * per;
	T = new_entries / per;
	if (T * cs > COW_MAX_RT_BYTES) {
		ret = ut_errf(err, -EFBIG, "'%s': refcount table would exceed %u bytes", img->path,
			      COW_MAX_RT_BYTES);
		goto out;
	}
	free(new_rt);
	free(nb_idx);
	new_rt = calloc(new_entries, 8);
	nb_idx = calloc(new_entries, 8);
	if (!new_rt || !nb_idx) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	t = img->end_cluster;
place:
	memcpy(new_rt, img->rt, img->rt_entries * 8);
	memset(new_rt + img->rt_entries, 0, (new_entries - img->rt_entries) * 8);
	e = t + T;
	nnew = 0;
	for (j = t / epb; j <= (e - 1) / epb; j++) {
		if (j >= new_entries) {
			new_entries *= 2;
			goto restart;
		}
		if (!new_rt[j]) {
			new_rt[j] = e << img->cluster_bits;
			nb_idx[nnew++] = j;
			e++;
		}
	}
	/* the table and the new blocks take [t, e): all of it free (I13) */
	{
		uint64_t t2;
		ret = free_run(img, t, e - t, &t2, err);
		if (ret < 0)
			goto out;
		if (t2 != t) {
			t = t2;
			goto place;
		}
	}
	ret = cow_check_new_rc(img, t << img->cluster_bits, e - t, "refcount table", err);
	if (ret < 0)
		goto out;
	nb_buf = calloc(nnew ? nnew : 1, cs);
	raw = calloc(T, cs);
	if (!nb_buf || !raw) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	/* count [t, e): in the new blocks' buffers, or in the cached blocks
	 * that exist (undone below on a failure) */
	undo = true;
	for (counted = t; counted < e; counted++) {
		uint64_t c = counted, bj = c / epb, k;
		for (k = 0; k < nnew && nb_idx[k] != bj; k++)
			;
		if (k < nnew) {
			cow_rc_write_entry(nb_buf + k * cs, img->h.refcount_order, c % epb, 1);
		} else {
			struct cow_cent *ce;
			ret = cow_rb_load(img, bj, &ce, err);
			if (ret < 0)
				goto out;
			if (!ce) {
				ret = ut_errf(err, -EIO, "'%s': internal error growing the refcount table", img->path);
				goto out;
			}
			cow_rc_write_entry(ce->buf, img->h.refcount_order, c % epb, 1);
			cow_cache_mark_dirty(&img->rbc, ce);
		}
	}
	wend = e << img->cluster_bits;   /* written from here on */
	for (uint64_t k = 0; k < nnew; k++) {
		ret = cow_pwrite_full(img, nb_buf + k * cs, cs, new_rt[nb_idx[k]], err);
		if (ret < 0)
			goto out;
	}
	ret = cow_rc_write_dirty(img, err);
	if (ret < 0)
		goto out;
	for (uint64_t i = 0; i < new_entries; i++)
		cow_put64(raw + i * 8, new_rt[i]);
	ret = cow_pwrite_full(img, raw, T * cs, t << img->cluster_bits, err);
	if (ret < 0)
		goto out;
	ret = cow_sync(img, err);
	if (ret < 0)
		goto out;
	cow_put64(hb, t << img->cluster_bits);
	cow_put32(hb + 8, (uint32_t)T);
	/* (a failed pwrite of 12 bytes inside the first page changed
	 * nothing: undone) */
	ret = cow_pwrite_full(img, hb, 12, 48, err);
	if (ret < 0)
		goto out;
	undo = false;   /* the file names the new table from here on */
	ret = cow_sync(img, err);
	/* the old table is freed only once the new header is durable */
	if (ret == 0)
		ret = cow_free_later(img, img->h.rt_off, (uint64_t)img->h.rt_clusters * cs, err);
	/* the new table holds every entry create_block set in memory */
	img->nrt_dirty = 0;
	img->h.rt_off = t << img->cluster_bits;
	img->h.rt_clusters = (uint32_t)T;
	free(img->rt);
	img->rt = new_rt;
	new_rt = NULL;
	img->rt_entries = new_entries;
	img->end_cluster = e;
	img->named_ok = false;   /* (new blocks: looked up again when needed) */
out:
	/* a failed switch: the refcounts of [t, counted) that went into the
	 * blocks that exist go back to 0 (they were 0: free_run) */
	for (uint64_t c = t; undo && c < counted; c++) {
		struct cow_cent *ce;
		if (rt_queued(nb_idx, nnew, c / epb))
			continue;
		if (cow_rb_load(img, c / epb, &ce, NULL) < 0 || !ce) {
			img->free_to = 0;   /* (not free after all: a leak) */
			continue;
		}
		cow_rc_write_entry(ce->buf, img->h.refcount_order, c % epb, 0);
		cow_cache_mark_dirty(&img->rbc, ce);
	}
	/* its clusters stay free, maybe with parts written past file_size */
	if (ret < 0 && wend)
		cover_failed(img, wend);
	free(new_rt);
	free(nb_idx);
	free(nb_buf);
	free(raw);
	return ret;
}

/* For a run of @n >= epb clusters (wide refcounts, small clusters, a long
 * table): a block at the start of its own range, as create_block places
 * one, would leave no run of n free clusters after it, and the search would
 * restart past it for ever. Instead find a free run [t, t + m + n) and
 * write the m refcount blocks its ranges lack packed at [t, t + m), each
 * described by the block of the range it lies in: a new block holds the
 * refcounts of the new blocks in its range when it is written, a block
 * that existed before gets them in the cache (cow_rc_flush writes the
 * table entries of blocks described by another new one after that one's,
 * I9). m grows with the span it must cover: counted until stable. *data:
 * t + m. A failure undoes it all: the blocks written so far lose their
 * table entries (set in memory only, never written) and their refcounts,
 * end_cluster goes back, and their clusters stay free, covered by
 * file_size (I17) — so that a failed write never leaves a table entry to
 * a block whose own refcount is 0 (a block a later allocation would
 * overwrite). */
static int place_blocks(struct cow_img *img, uint64_t n, uint64_t *data, struct ut_err *err)
{
	uint64_t epb = img->rb_entries, end0, t, m, m2, j, p, c, set = 0;
	size_t q0;
	int ret;

again:
	m = 0;
	for (;;) {
		ret = free_run(img, img->end_cluster, m + n, &t, err);
		if (ret < 0)
			return ret;
		m2 = 0;
		for (j = t / epb; j <= (t + m + n - 1) / epb; j++) {
			if (j >= img->rt_entries) {
				ret = grow_rt(img, j + 1, err);
				if (ret < 0)
					return ret;
				goto again;
			}
			if (!img->rt[j])
				m2++;
		}
		if (m2 <= m)
			break;
		m = m2;
	}
	/* (after any growth above, which writes the queue and moves the
	 * frontier) */
	end0 = img->end_cluster;
	q0 = img->nrt_dirty;
	p = t;
	for (j = t / epb; j <= (t + m + n - 1) / epb; j++) {
		if (img->rt[j])
			continue;
		ret = write_block(img, j, p++, t, m, err);
		if (ret < 0)
			goto undo;
	}
	/* the new blocks that lie in ranges which had a block before */
	for (c = t; c < p; c++) {
		if (rt_queued(img->rt_dirty + q0, img->nrt_dirty - q0, c / epb))
			continue;   /* (in its block already) */
		ret = rc_set(img, c, 1, err);
		if (ret < 0)
			goto undo;
		set = c + 1;
	}
	*data = p;
	return 0;
undo:
	for (c = t; c < set; c++)
		if (!rt_queued(img->rt_dirty + q0, img->nrt_dirty - q0, c / epb))
			rc_set(img, c, 0, NULL);   /* (a failure: a leak, check --repair) */
	for (size_t i = q0; i < img->nrt_dirty; i++)
		img->rt[img->rt_dirty[i]] = 0;
	img->nrt_dirty = q0;
	img->end_cluster = end0;
	img->free_to = 0;
	/* (file_size covers the blocks written, and write_block covered
	 * the one that failed) */
	return ret;
}

/* cow_alloc_contig without the overlap check (alloc_clusters checks what it
 * hands out once, whichever way it found it). */
static int alloc_contig(struct cow_img *img, uint64_t n, uint64_t *off, struct ut_err *err)
{
	uint64_t epb = img->rb_entries, t, e;
	int ret;

	if (n >= epb) {
		ret = place_blocks(img, n, &t, err);
		if (ret < 0)
			return ret;
		goto alloc;
	}
again:
	ret = free_run(img, img->end_cluster, n, &t, err);
	if (ret < 0)
		return ret;
	/* a missing block goes at the start of its own range, describing
	 * itself (create_block); a run of n < epb still fits after it. A
	 * run that reaches into a range without a block from the one
	 * before keeps its place and gets the block right after it, inside
	 * that range: at the range's start it would push the run past it
	 * and leave the clusters before the boundary unused (a 512-byte
	 * cluster image written in order lost ~24% of its file so; QEMU
	 * packs such runs too) */
	for (uint64_t j = t / epb; j <= (t + n - 1) / epb; j++) {
		if (j >= img->rt_entries) {
			ret = grow_rt(img, j + 1, err);
			if (ret < 0)
				return ret;
			goto again;
		}
		if (img->rt[j])
			continue;
		if (j > t / epb && (t + n) / epb == j && t + n >= img->end_cluster) {
			ret = write_block(img, j, t + n, t + n, 1, err);
			if (ret < 0)
				return ret;
			img->free_to = 0;   /* the known-free run had t + n */
			continue;
		}
		ret = create_block(img, j, err);
		if (ret < 0)
			return ret;
		goto again;
	}
alloc:
	e = t + n;
	/* the caller writes [t, e) next, past the data so far: reserve
	 * ahead (I12) */
	cow_prealloc(img, e << img->cluster_bits);
	/* the frontier first: [t, e) is below it when rc_set marks it used,
	 * and so leaves the known-free run past it alone (a failure leaves
	 * unused clusters behind: free again, a free part of the file below
	 * the frontier, unless a refcount cannot be set back: a leak); a
	 * block placed right after the run keeps it past e */
	if (e > img->end_cluster)
		img->end_cluster = e;
	for (uint64_t c = t; c < e; c++) {
		ret = rc_set(img, c, 1, err);
		if (ret < 0) {
			while (c-- > t)
				rc_set(img, c, 0, NULL);
			return ret;
		}
	}
	*off = t << img->cluster_bits;
	return 0;
}

static int alloc_clusters(struct cow_img *img, uint64_t n, uint64_t *off, uint64_t *got,
			  struct ut_err *err)
{
	uint64_t epb = img->rb_entries, c = img->free_hint;
	int ret;

	while (c < img->end_cluster) {
		uint64_t j = c / epb, lim = (j + 1) * epb;
		struct cow_cent *e;

		if (lim > img->end_cluster)
			lim = img->end_cluster;
		ret = cow_rb_load(img, j, &e, err);
		if (ret < 0)
			return ret;
		if (!e) {
			c = lim;
			continue;
		}
		for (; c < lim; c++) {
			if (cow_rc_read_entry(e->buf, img->h.refcount_order, c % epb))
				continue;
			uint64_t k = 0;
			while (k < n && c + k < lim &&
			       !cow_rc_read_entry(e->buf, img->h.refcount_order, (c + k) % epb)) {
				cow_rc_write_entry(e->buf, img->h.refcount_order, (c + k) % epb, 1);
				k++;
			}
			cow_cache_mark_dirty(&img->rbc, e);
			img->free_hint = c + k;
			*off = c << img->cluster_bits;
			*got = k;
			return 0;
		}
	}
	img->free_hint = img->end_cluster;
	ret = alloc_contig(img, n, off, err);
	if (ret < 0)
		return ret;
	img->free_hint = img->end_cluster;
	*got = n;
	return 0;
}

int cow_alloc_contig(struct cow_img *img, uint64_t n, uint64_t *off, struct ut_err *err)
{
	int ret = alloc_contig(img, n, off, err);

	return ret < 0 ? ret : cow_check_new(img, *off, n, err);
}

int cow_alloc_clusters(struct cow_img *img, uint64_t n, uint64_t *off, uint64_t *got,
		       struct ut_err *err)
{
	int ret = alloc_clusters(img, n, off, got, err);

	return ret < 0 ? ret : cow_check_new(img, *off, *got, err);
}

int cow_free_unlinked(struct cow_img *img, uint64_t off, uint64_t n, struct ut_err *err)
{
	uint64_t c0 = off >> img->cluster_bits, end = (c0 + n) << img->cluster_bits;
	int ret = 0;

	/* I17: a failed write may have left bytes in these clusters, also
	 * past img->file_size (a short write that ran into EFBIG, or an
	 * asynchronous one whose completion never advanced it). Past
	 * file_size a later reuse of the cluster could take the I10 shortcut
	 * and write only its new bytes over them: file_size now covers the
	 * clusters, so a reuse writes them whole. (That may claim bytes the
	 * file does not have; they read as zeros, as past the end, and
	 * nothing references them.) */
	if (n)
		cover_failed(img, end);
	for (uint64_t c = c0; c < c0 + n; c++) {
		uint64_t v;
		ret = cow_rc_add(img, c, -1, err);
		if (ret == 0 && (ret = cow_rc_get(img, c, &v, err)) < 0)
			c++;   /* (decremented; the block was just there) */
		if (ret < 0) {
			/* a refcount block that cannot be read (EIO; evicted
			 * since the allocation) or no memory: the rest is
			 * decremented with the queued frees instead, after the
			 * next write-back's fdatasync (I4: later than needed,
			 * harmless, and it stays allocated until then); a
			 * refcount already 0 (a damaged image, marked corrupt)
			 * or a failed queue leaves a leak */
			if (ret != -EUCLEAN && c < c0 + n)
				cow_free_later(img, c << img->cluster_bits,
					       (c0 + n - c) << img->cluster_bits, NULL);
			break;
		}
		if (v)
			continue;   /* (a compressed cluster others share) */
		/* reusable at once: alloc_clusters scans from free_hint below
		 * end_cluster, which stays where it is (the clusters are a
		 * free part of the file, as after any free) */
		if (c < img->free_hint)
			img->free_hint = c;
		if (img->comp_off && (img->comp_off >> img->cluster_bits) == c)
			img->comp_off = 0;
	}
	return ret;
}

int cow_free_later(struct cow_img *img, uint64_t off, uint64_t len, struct ut_err *err)
{
	if (img->npending == img->cap_pending) {
		size_t nc = img->cap_pending ? img->cap_pending * 2 : 64;
		struct cow_pending *p = realloc(img->pending, nc * sizeof(*p));
		if (!p)
			return ut_errf(err, -ENOMEM, "out of memory");
		img->pending = p;
		img->cap_pending = nc;
	}
	img->pending[img->npending].off = off;
	img->pending[img->npending].len = len;
	img->pending[img->npending].punch = img->discarding;
	img->npending++;
	return 0;
}

/* I15: hand the host blocks of free clusters [a, b) back to the file
 * system. Best effort: without hole punching they only stay allocated. */
static void punch_clusters(struct cow_img *img, uint64_t a, uint64_t b)
{
	if (a < b && !img->no_punch &&
	    fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(a << img->cluster_bits),
		      (off_t)((b - a) << img->cluster_bits)) < 0 &&
	    (errno == EOPNOTSUPP || errno == ENOSYS))
		img->no_punch = true;
}

int cow_u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* (contract: qcow2.h) */
int cow_range_clusters(uint32_t cluster_bits, size_t n, cow_range_get_fn get, const void *ctx,
		       uint64_t **out, uint64_t *nout, struct ut_err *err)
{
	uint64_t total = 0, k = 0, off, len, *c;

	*out = NULL;
	*nout = 0;
	for (size_t i = 0; i < n; i++) {
		get(ctx, i, &off, &len);
		if (len)
			total += ((off + len - 1) >> cluster_bits) - (off >> cluster_bits) + 1;
	}
	if (!total)
		return 0;
	c = malloc(total * sizeof(*c));
	if (!c)
		return ut_errf(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		get(ctx, i, &off, &len);
		for (uint64_t x = off >> cluster_bits; len && x <= (off + len - 1) >> cluster_bits; x++)
			c[k++] = x;
	}
	qsort(c, k, sizeof(*c), cow_u64_cmp);
	*out = c;
	*nout = k;
	return 0;
}

static void pending_range(const void *ctx, size_t i, uint64_t *off, uint64_t *len)
{
	const struct cow_pending *p = ctx;

	*off = p[i].off;
	*len = p[i].len;
}

/* Does the queue release each cluster at most once because its ranges,
 * in queue order, go up (each starts in a cluster after the last cluster
 * of the one before)? A discard or a shrink of an area whose host
 * clusters lie in guest order (preallocated, converted, written in order)
 * queues them so. One pass, nothing allocated; false says nothing (the
 * clusters are then listed and sorted). */
static bool pending_ascending(const struct cow_img *img)
{
	uint64_t cb = img->cluster_bits, next = 0;

	for (size_t i = 0; i < img->npending; i++) {
		const struct cow_pending *p = &img->pending[i];

		if (!p->len)
			continue;
		if (p->off >> cb < next)
			return false;
		next = ((p->off + p->len - 1) >> cb) + 1;
	}
	return true;
}

/* The clusters the queue releases more often than their refcount counts
 * (a damaged image: two L2 entries, or two tables, naming one cluster
 * with refcount 1, both released): *bad (malloc'ed, sorted, *nbad), so
 * that none of their decrements is applied (the first would free the
 * cluster, the second underflow). Only a cluster the queue names twice
 * can be one: none when its ranges go up (pending_ascending), else every
 * queued cluster listed and sorted (cow_range_clusters) and each repeated
 * one's refcount read. -ENOMEM or a refcount read's error. */
static int pending_dups(struct cow_img *img, uint64_t **bad, size_t *nbad, struct ut_err *err)
{
	uint64_t n, *c;
	int ret;

	*bad = NULL;
	*nbad = 0;
	if (pending_ascending(img))
		return 0;
	ret = cow_range_clusters(img->cluster_bits, img->npending, pending_range, img->pending, &c, &n,
				 err);
	if (ret < 0 || n < 2) {
		free(c);
		return ret;
	}
	for (uint64_t i = 0, k; ret == 0 && i < n; i += k) {
		uint64_t v;

		for (k = 1; i + k < n && c[i + k] == c[i]; k++)
			;
		if (k < 2)
			continue;
		ret = cow_rc_get(img, c[i], &v, err);
		if (ret == 0 && v < k)
			c[(*nbad)++] = c[i];   /* (in place: *nbad <= i) */
	}
	if (ret < 0 || !*nbad) {
		free(c);
		*nbad = 0;
		return ret;
	}
	*bad = c;
	return 0;
}

int cow_apply_pending(struct cow_img *img, struct ut_err *err)
{
	uint64_t pa = 0, pb = 0;   /* the run of freed clusters to punch */
	uint64_t *bad = NULL;
	size_t nbad = 0;
	int ret = 0, damage = 0;

	ret = pending_dups(img, &bad, &nbad, err);
	if (ret < 0)
		goto out;
	if (nbad) {
		uint64_t v = 0;

		cow_rc_get(img, bad[0], &v, NULL);
		damage = cow_mark_corrupt(img, err, "cluster 0x%llx is released more often than its refcount (%llu) counts: two entries name it; left allocated (%zu such cluster(s))",
					  (unsigned long long)(bad[0] << img->cluster_bits), (unsigned long long)v, nbad);
	}
	for (size_t i = 0; i < img->npending; i++) {
		uint64_t first = img->pending[i].off >> img->cluster_bits;
		uint64_t last = (img->pending[i].off + img->pending[i].len - 1) >> img->cluster_bits;
		for (uint64_t c = first; img->pending[i].len && c <= last; c++) {
			uint64_t v;
			if (nbad && bsearch(&c, bad, nbad, sizeof(*bad), cow_u64_cmp))
				continue;
			ret = cow_rc_add(img, c, -1, err);
			if (ret == -EUCLEAN) {
				/* a refcount already 0 (damage, marked corrupt):
				 * the rest of the queue still applied */
				if (!damage)
					damage = ret;
				ret = 0;
				continue;
			}
			if (ret < 0)
				goto out;
			ret = cow_rc_get(img, c, &v, err);
			if (ret < 0)
				goto out;
			if (v == 0) {
				if (c < img->free_hint)
					img->free_hint = c;
				if (img->comp_off && (img->comp_off >> img->cluster_bits) == c)
					img->comp_off = 0;
				if (img->pending[i].punch) {
					if (c != pb) {
						punch_clusters(img, pa, pb);
						pa = c;
					}
					pb = c + 1;
				}
			}
		}
	}
	punch_clusters(img, pa, pb);
	img->npending = 0;
	ret = cow_rc_write_dirty(img, err);
	if (ret == 0 && damage)
		ret = damage;   /* (@err holds its message) */
out:
	/* after a failure part of the queue was applied: drop all of it, so
	 * a later writeback never decrements a cluster twice (what was not
	 * applied stays allocated: a leak, which check --repair frees) */
	img->npending = 0;
	free(bad);
	return ret;
}
