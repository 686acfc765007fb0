/* cow/bitmap-track.c — persistent dirty bitmaps kept up to date by a
 * writable open: loaded at open, every change of guest data recorded in
 * memory, stored consistent at close and when the image becomes a
 * snapshot's backing file, resized with the image. The states, the
 * function for each transition and what a crash leaves are described at
 * the top of cow/bitmaps.c (the format, the directory checks, marking in
 * use, COW_O_KEEP_BITMAPS resizes and the directory switch this file
 * reuses); cow/cow.h I18. The store also writes the edits of
 * cow/bitmap-ops.c (bitmaps added, removed, cleared, enabled, disabled,
 * merged in memory): bm_build_store builds a new directory, not a copy of
 * the old one's layout. */
#include "cow/qcow2.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the bitmaps in memory ----
 *
 * See the top of cow/bitmaps.c for the states. In memory, a tracked bitmap
 * mirrors its table: one chunk per table entry (a cluster of bits, bit i
 * of the chunk in byte i / 8, bit i % 8, as on disk), NULL while all its
 * bits are clear, BM_ONES while all are set ("all ones" entry), else a
 * malloc'ed cluster. */
uint8_t cow_bm_ones_tag;

void cow_bm_mem_free_data(struct bm_mem *b)
{
	for (uint64_t c = 0; b->chunk && c < b->nchunks; c++)
		if (b->chunk[c] != BM_ONES)
			free(b->chunk[c]);
	free(b->chunk);
	b->chunk = NULL;
}

void cow_bm_mem_free(struct bm_mem *b)
{
	cow_bm_mem_free_data(b);
	free(b->name);
}

void cow_bm_track_free(struct cow_bm_track *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		cow_bm_mem_free(&t->bm[i]);
	free(t->bm);
	free(t->gone);
	cow_bm_track_free(t->saved);
	free(t);
}

void cow_bitmaps_track_free(struct cow_img *img)
{
	cow_bm_track_free(img->bm);
	img->bm = NULL;
}

void cow_bm_lost(struct cow_img *img, int code, const char *why, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, why);
	vsnprintf(buf, sizeof(buf), why, ap);
	va_end(ap);
	cow_bm_problem(img, code, true,
		       "'%s': its persistent bitmaps are no longer kept up to date (%s): they stay marked in use, which QEMU reports as inconsistent ('qemu-img bitmap --remove' removes them)",
		       img->path, buf);
	cow_bitmaps_track_free(img);
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
 * by cow_bm_load_table) into b->chunk; the bits past its end cleared (as
 * stored again). 0, 1 when a cluster cannot be read, or -ENOMEM. */
int cow_bm_mem_data(struct cow_img *img, struct bm_mem *b, const uint64_t *t)
{
	uint64_t cs = img->cluster_size, per = cs * 8;

	b->chunk = calloc(b->nchunks, sizeof(*b->chunk));
	if (!b->chunk)
		return -ENOMEM;
	for (uint64_t c = 0; c < b->nchunks; c++) {
		uint64_t off = t[c] & COW_BM_TE_OFFSET, valid = b->nbits - c * per;

		if (!off) {
			b->chunk[c] = (t[c] & COW_BM_TE_ALL_ONES) ? BM_ONES : NULL;
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
 * check), every entry valid (cow_bm_load_table), and, when it is enabled, its
 * data (bits past its end cleared). 1 when it cannot be tracked (it stays
 * in use), 0, or -ENOMEM. */
int cow_bm_mem_load(struct cow_img *img, const uint8_t *e, uint64_t dpos, bool all,
		    struct bm_mem *b)
{
	uint64_t *t = NULL;
	int ret;

	memset(b, 0, sizeof(*b));
	b->dpos = dpos;
	b->gbits = e[17];
	b->enabled = cow_be32(e + 12) & COW_BITMAP_AUTO;
	b->nbits = (img->size + (1ull << b->gbits) - 1) >> b->gbits;
	b->nchunks = cow_bm_table_size(img, img->size, b->gbits);
	b->nlen = cow_be16(e + 18);
	if (cow_be32(e + 8) != b->nchunks || !b->nchunks)
		return 1;
	b->name = malloc(b->nlen + 1u);
	if (!b->name)
		return -ENOMEM;
	memcpy(b->name, e + COW_BM_ENTRY_HDR + cow_be32(e + 20), b->nlen);
	b->disk_nchunks = b->nchunks;
	ret = cow_bm_load_table(img, e, &t, NULL);
	if (ret < 0)
		return ret == -ENOMEM ? ret : 1;
	if (b->enabled || all)
		ret = cow_bm_mem_data(img, b, t);
	free(t);
	return ret;
}

int cow_bitmaps_open_rw(struct cow_img *img, struct ut_err *err)
{
	struct cow_bm_track *t = NULL;
	uint64_t dsize, doff, p;
	uint8_t *dir = NULL;
	struct ut_err lerr;
	int ret;

	ut_err_clear(&lerr);
	/* what can be tracked (a failure here only means "not tracked":
	 * those bitmaps stay in use, as QEMU leaves one it cannot load;
	 * recorded for cow_bitmaps_problem) */
	ret = img->fmt == COW_FMT_QCOW2 ? cow_bm_load_dir(img, &dir, &dsize, &doff, &lerr) : 1;
	if (ret < 0 && ret != -ENOMEM)
		cow_bm_problem(img, ret, false, "%s: its persistent bitmaps are not kept up to date and stay marked in use",
			       lerr.msg);
	if (ret == 0) {
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
			r = cow_bm_mem_load(img, dir + p, p, false, &t->bm[t->n]);
			t->n++;
			if (r < 0)
				break;
			if (r > 0) {
				/* kept out: released, its slot reused */
				cow_bm_problem(img, -EINVAL, false,
					       "'%s': bitmap '%.*s' cannot be loaded (its table does not fit the disk size, or an entry or its data is invalid): it is not kept up to date and stays marked in use",
					       img->path, BM_NAME(dir + p));
				cow_bm_mem_free(&t->bm[--t->n]);
			}
		}
		if (t && p < dsize) {   /* out of memory: nothing tracked */
			cow_bm_track_free(t);
			t = NULL;
		}
		if (!t)
			ret = -ENOMEM;
		free(dir);
	}
	if (ret == -ENOMEM)
		cow_bm_problem(img, -ENOMEM, true,
			       "'%s': its persistent bitmaps are not kept up to date (out of memory loading them): they stay marked in use, which QEMU reports as inconsistent",
			       img->path);
	ret = cow_bitmaps_mark_in_use(img, err);
	if (ret > 0 && img->bm_problem) {
		/* no directory to mark: the caller drops the bitmaps (clears
		 * autoclear bit 0), they are not left in use */
		img->bm_problem = 0;
		img->bm_problem_in_use = false;
		if (lerr.code)
			cow_bm_problem(img, lerr.code, false,
				       "%s: its persistent bitmaps are dropped (autoclear bit 0 cleared; their clusters leak), as QEMU would not load them either",
				       lerr.msg);
	}
	if (ret == 0 && t && t->n) {
		img->bm = t;
		t = NULL;
	}
	cow_bm_track_free(t);
	return ret;
}

int cow_bm_set_one(struct cow_img *img, struct bm_mem *b, uint64_t off, uint64_t len)
{
	uint64_t cs = img->cluster_size, per = cs * 8;
	uint64_t first = off >> b->gbits, last = (off + len - 1) >> b->gbits;

	if (!len || first >= b->nbits)
		return 0;
	if (last >= b->nbits)
		last = b->nbits - 1;
	for (uint64_t c = first / per; c <= last / per; c++) {
		uint64_t lo = first > c * per ? first - c * per : 0;
		uint64_t hi = last < c * per + per - 1 ? last - c * per : per - 1;

		if (b->chunk[c] == BM_ONES)
			continue;
		if (!b->chunk[c] && !(b->chunk[c] = calloc(1, cs)))
			return -ENOMEM;
		bm_bits_set(b->chunk[c], lo, hi + 1);
	}
	return 0;
}

/* Bits [@off >> g, (@off + @len - 1) >> g] set in every enabled
 * tracked bitmap, in memory (out of memory: tracking ends, in use). */
void cow_bm_set(struct cow_img *img, uint64_t off, uint64_t len)
{
	struct cow_bm_track *t = img->bm;

	for (size_t i = 0; len && t && i < t->n; i++) {
		struct bm_mem *b = &t->bm[i];

		if (b->enabled && cow_bm_set_one(img, b, off, len) < 0) {
			/* a change that cannot be recorded: nothing is
			 * stored, they stay in use (marked at open or
			 * by cow_bitmaps_dirty_slow); said at close */
			cow_bm_lost(img, -ENOMEM, "out of memory for bitmap '%.*s'",
				    b->nlen > 200 ? 200 : (int)b->nlen, b->name);
			return;
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
			ret = ut_errf(err, -EINVAL, "'%s': its bitmap directory is gone", img->path);
		if (ret < 0)
			return ret;
		t->stored = false;
	}
	/* a resize's own changes (the area past the old end released, the
	 * new one zeroed, a shrink's tail) are not recorded, as by QEMU:
	 * the bitmaps follow the size (cow_bm_track_resize; a failed shrink
	 * records its tail, cow_bitmaps_resize_abort) */
	if (!img->resizing)
		cow_bm_set(img, off, len);
	return 0;
}


int cow_bm_load_data(struct cow_img *img, struct bm_mem *b, const uint8_t *dir, uint64_t dsize,
		     struct ut_err *err)
{
	const uint8_t *e = dir + b->dpos;
	uint64_t *tab = NULL;
	int ret;

	if (b->dpos + COW_BM_ENTRY_HDR > dsize || cow_bitmap_entry_size(e) > dsize - b->dpos ||
	    cow_be16(e + 18) != b->nlen || memcmp(e + COW_BM_ENTRY_HDR + cow_be32(e + 20), b->name, b->nlen) ||
	    cow_be32(e + 8) != b->disk_nchunks || b->disk_nchunks != b->nchunks)
		return ut_errf(err, -EIO, "'%s': its bitmap directory changed while it was open", img->path);
	ret = cow_bm_load_table(img, e, &tab, err);
	if (ret == 0) {
		ret = cow_bm_mem_data(img, b, tab);
		if (ret > 0)
			ret = ut_errf(err, -EIO, "'%s': bitmap '%.*s': its data cannot be read", img->path,
				      (int)b->nlen, b->name);
		else if (ret < 0)
			ret = ut_errf(err, ret, "out of memory");
	}
	free(tab);
	if (ret < 0)
		cow_bm_mem_free_data(b);   /* (a partial load: the table in the file stays) */
	return ret;
}

/* A resize of @img to @new_size begins (cow_bitmaps_resize_begin) while
 * it tracks bitmaps: in use on disk (marked again if they were stored),
 * and the data of the disabled ones loaded too (their tables change
 * size). Refused, before anything is written, as QEMU refuses it: a
 * bitmap too large at @new_size (-EFBIG); and when a disabled one cannot
 * be read (-EIO, -ENOMEM). 0 or -errno with @err. */
int cow_bm_track_begin(struct cow_img *img, uint64_t new_size, struct ut_err *err)
{
	struct cow_bm_track *t = img->bm;
	uint64_t dsize = 0, doff;
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
		uint64_t ntab = cow_bm_table_size(img, new_size, t->bm[i].gbits);

		if (ntab > COW_BM_MAX_TABLE || ntab * img->cluster_size > COW_BM_MAX_PHYS || !ntab)
			return ut_errf(err, -EFBIG, "'%s': bitmap '%.*s' (granularity %llu) would be too large at the new size (QEMU could not store it); remove it or use a larger granularity",
				       img->path, t->bm[i].nlen > 200 ? 200 : (int)t->bm[i].nlen, t->bm[i].name,
				       1ull << t->bm[i].gbits);
	}
	for (size_t i = 0; ret == 0 && i < t->n; i++) {
		struct bm_mem *b = &t->bm[i];

		if (b->chunk)
			continue;
		if (!dir) {
			ret = cow_bm_reread_dir(img, &dir, &dsize, &doff, err);
			if (ret < 0)
				break;
		}
		ret = cow_bm_load_data(img, b, dir, dsize, err);
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
void cow_bm_track_resize(struct cow_img *img)
{
	struct cow_bm_track *t = img->bm;
	uint64_t cs = img->cluster_size, per = cs * 8;

	for (size_t i = 0; t && i < t->n; i++) {
		struct bm_mem *b = &t->bm[i];
		uint64_t nbits = (img->size + (1ull << b->gbits) - 1) >> b->gbits;
		uint64_t nch = cow_bm_table_size(img, img->size, b->gbits);
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
	cow_bm_lost(img, -ENOMEM, "out of memory resizing them");
}

void cow_bm_track_all_dirty(struct cow_img *img)
{
	struct cow_bm_track *t = img->bm;

	for (size_t i = 0; t && i < t->n; i++) {
		struct bm_mem *b = &t->bm[i];

		for (uint64_t c = 0; b->enabled && b->chunk && c < b->nchunks; c++) {
			if (b->chunk[c] != BM_ONES)
				free(b->chunk[c]);
			b->chunk[c] = BM_ONES;
		}
	}
}

/* Is directory entry @dpos removed (cow_bitmap_remove)? */
static bool bm_gone(const struct cow_bm_track *t, uint64_t dpos)
{
	for (size_t i = 0; i < t->ngone; i++)
		if (t->gone[i] == dpos)
			return true;
	return false;
}

/* The tracked bitmap at directory entry @dpos (NULL: not tracked). */
static struct bm_mem *bm_at(struct cow_bm_track *t, uint64_t dpos)
{
	for (size_t i = 0; i < t->n; i++)
		if (!t->bm[i].fresh && t->bm[i].dpos == dpos)
			return &t->bm[i];
	return NULL;
}

/* A new table for the chunks of @b (all clear: entry 0; all set: 1; else
 * a new data cluster) written to new clusters, at *toff; every new cluster
 * noted in st->nw (freed again when the store fails). */
static int bm_write_table(struct cow_img *img, struct bm_mem *b, struct cow_bm_resize *st,
			  uint64_t *toff, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, per = cs * 8, *nt = calloc(b->nchunks, 8);
	int ret = 0;

	if (!nt)
		return ut_errf(err, -ENOMEM, "out of memory");
	for (uint64_t c = 0; ret == 0 && c < b->nchunks; c++) {
		uint64_t valid = b->nbits - c * per < per ? b->nbits - c * per : per, v = 0;
		int k = b->chunk[c] == BM_ONES ? 1 : !b->chunk[c] ? 0 : bm_chunk_kind(b->chunk[c], valid);

		if (k == 1)
			v = COW_BM_TE_ALL_ONES;
		else if (k == 2 && (ret = cow_bm_write_new(img, b->chunk[c], cs, &v, err)) == 0)
			ret = cow_bm_note(&st->nw, &st->nnw, v, cs, err);
		cow_put64((uint8_t *)&nt[c], v);
	}
	if (ret == 0)
		ret = cow_bm_write_new(img, nt, b->nchunks * 8, toff, err);
	if (ret == 0)
		ret = cow_bm_note(&st->nw, &st->nnw, *toff, b->nchunks * 8, err);
	free(nt);
	return ret;
}

/* The bitmaps stored as new clusters: a new directory holding, in order,
 * every entry of the one the header names except those removed
 * (t->gone: their table and data clusters freed after the switch), a
 * tracked one with its in-use flag cleared, its "auto" flag as
 * b->enabled and, when its data is in memory, a new table
 * (bm_write_table; the old table and data clusters freed after the
 * switch), one not tracked (in use) as it is; then the fresh ones
 * (cow_bitmap_add). All durable (cow_flush) and not yet named by the
 * header: *out for cow_bm_switch. b->ndpos: each tracked one's entry in
 * the new directory. On failure the new clusters are freed again. */
static int bm_build_store(struct cow_img *img, struct cow_bm_track *t, struct cow_bm_resize **out,
			  struct ut_err *err)
{
	uint64_t cs = img->cluster_size, *ot = NULL, p, np = 0, cap, x, y;
	struct cow_bm_resize *st = calloc(1, sizeof(*st));
	struct cow_bm_ref *refs = NULL;
	size_t nrefs = 0;
	uint8_t *dir = NULL, *nd = NULL;
	int ret = 0;

	*out = NULL;
	if (!st) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = cow_bm_read_dir(img, &dir, &st->dsize, &st->doff, err);
	if (ret > 0) {   /* none (yet): only fresh ones */
		ret = 0;
		st->dsize = st->doff = 0;
		for (size_t i = 0; i < t->n; i++)
			if (!t->bm[i].fresh)
				ret = ut_errf(err, -EINVAL, "'%s': its bitmap directory is gone", img->path);
	} else if (ret == 0 && !cow_bitmaps_ext(img, &st->nb, &x, &y)) {
		ret = ut_errf(err, -EINVAL, "'%s': its bitmap directory is gone", img->path);
	}
	if (ret < 0)
		goto out;
	cap = st->dsize;
	for (size_t i = 0; i < t->n; i++)
		if (t->bm[i].fresh)
			cap += (COW_BM_ENTRY_HDR + t->bm[i].nlen + 7) & ~7ull;
	nd = calloc(1, cap ? cap : 1);
	if (!nd) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (t->ngone)
		ret = cow_bm_refs(img, dir, st->dsize, &refs, &nrefs, err);
	for (p = 0; ret == 0 && p < st->dsize; p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull) {
		uint64_t esz = (cow_bitmap_entry_size(dir + p) + 7) & ~7ull, toff;
		uint8_t *e = nd + np;
		struct bm_mem *b;

		if (bm_gone(t, p)) {
			/* removed: its table and the data clusters its valid
			 * entries name, freed after the switch (bm_free_old:
			 * only what may be freed) */
			for (size_t r = 0; ret == 0 && r < nrefs; r++)
				if (refs[r].dpos == p)
					ret = cow_bm_note(&st->fr, &st->nfr, refs[r].off, refs[r].len, err);
			continue;
		}
		memcpy(e, dir + p, esz);
		np += esz;
		st->nnb++;
		b = bm_at(t, p);
		if (!b)
			continue;   /* in use: as it is */
		/* the directory keeps its layout while the image is open
		 * (only a COW_O_KEEP_BITMAPS resize or a store moves it) */
		if (cow_be16(e + 18) != b->nlen || e[17] != b->gbits ||
		    memcmp(e + COW_BM_ENTRY_HDR + cow_be32(e + 20), b->name, b->nlen) ||
		    cow_be32(e + 8) != b->disk_nchunks) {
			ret = ut_errf(err, -EINVAL, "'%s': its bitmap directory changed while it was open",
				      img->path);
			break;
		}
		b->ndpos = np - esz;
		cow_put32(e + 12, (cow_be32(e + 12) & ~(COW_BITMAP_IN_USE | COW_BITMAP_AUTO)) |
				  (b->enabled ? COW_BITMAP_AUTO : 0));
		if (!b->chunk)
			continue;   /* disabled, not resized nor edited: the same table */
		ret = cow_bm_load_table(img, dir + p, &ot, err);
		if (ret == 0)
			ret = bm_write_table(img, b, st, &toff, err);
		/* the old table and data clusters, freed after the switch */
		for (uint64_t c = 0; ret == 0 && c <= b->disk_nchunks; c++) {
			uint64_t o = c < b->disk_nchunks ? ot[c] & COW_BM_TE_OFFSET : cow_be64(e);
			uint64_t l = c < b->disk_nchunks ? cs : b->disk_nchunks * 8;

			if (o)   /* (cow_bm_switch frees only what may be freed) */
				ret = cow_bm_note(&st->fr, &st->nfr, o, l, err);
		}
		if (ret == 0) {
			cow_put64(e, toff);
			cow_put32(e + 8, (uint32_t)b->nchunks);
		}
		free(ot);
		ot = NULL;
	}
	for (size_t i = 0; ret == 0 && i < t->n; i++) {
		struct bm_mem *b = &t->bm[i];
		uint8_t *e = nd + np;
		uint64_t toff;

		if (!b->fresh)
			continue;
		ret = bm_write_table(img, b, st, &toff, err);
		if (ret < 0)
			break;
		cow_put64(e, toff);
		cow_put32(e + 8, (uint32_t)b->nchunks);
		cow_put32(e + 12, b->enabled ? COW_BITMAP_AUTO : 0);
		e[16] = 1;   /* type: dirty tracking bitmap */
		e[17] = (uint8_t)b->gbits;
		cow_put16(e + 18, b->nlen);
		cow_put32(e + 20, 0);
		memcpy(e + COW_BM_ENTRY_HDR, b->name, b->nlen);
		b->ndpos = np;
		np += (COW_BM_ENTRY_HDR + b->nlen + 7) & ~7ull;
		st->nnb++;
	}
	st->ndsize = np;
	if (ret == 0)
		ret = cow_bm_prep_finish(img, st, nd, err);
out:
	if (ret < 0)
		cow_bm_prep_free(img, st, true);
	else
		*out = st;
	free(ot);
	free(refs);
	free(nd);
	free(dir);
	return ret;
}

int cow_bitmaps_store(struct cow_img *img, struct ut_err *err)
{
	struct cow_bm_track *t = img->bm;
	struct cow_bm_resize *st;
	bool switched = false;
	int ret;

	/* (nothing tracked and nothing removed: nothing changes) */
	if (!t || img->ro || t->stored || (!t->n && !t->ngone))
		return 0;
	ret = bm_build_store(img, t, &st, err);
	if (ret == 0)
		ret = cow_bm_switch(img, st, &switched, err);
	if (switched) {
		t->stored = true;
		t->ngone = 0;
		for (size_t i = 0; i < t->n; i++) {
			t->bm[i].disk_nchunks = t->bm[i].nchunks;
			t->bm[i].dpos = t->bm[i].ndpos;
			t->bm[i].fresh = false;
		}
	}
	if (ret < 0 && switched)
		ut_err_prefix(err, "'%s': its persistent bitmaps are stored, consistent; finishing failed (clusters may leak)",
			      img->path);
	else if (ret < 0)
		ut_err_prefix(err, "'%s': unable to store its persistent bitmaps (they stay marked in use: inconsistent)",
			      img->path);
	return ret;
}
