/* cow/bitmap-ops.c — editing the persistent dirty bitmaps of a writable
 * open, as QEMU 7.2's block-dirty-bitmap-add/-remove/-clear/-enable/
 * -disable/-merge (`qemu-img bitmap`; `cowvm image bitmap`).
 *
 * Every edit changes the set of bitmaps in memory only (img->bm, the
 * tracked bitmaps cow_bitmaps_open_rw loaded, bitmap-track.c); nothing is
 * written until the store of cow_close (cow_bitmaps_store), which writes
 * the new set as it writes any tracked set: new data clusters, tables and
 * a new directory, durable, before the header names them, the old ones
 * freed after (cow.h I18, and the state diagram there). A bitmap added
 * here is "fresh" (no directory entry yet); one removed is left out of
 * the next directory (t->gone for one that has an entry: its clusters are
 * freed after the switch, only those that may be, bitmaps.c bm_free_old).
 * A bitmap in use at open (QEMU: "inconsistent") is not tracked: it can
 * only be removed, as by QEMU. The number of bitmaps changing, the
 * switch rewrites the extension's count and size too (bitmaps.c
 * cow_bm_switch), or the whole header for the first bitmap and the last.
 *
 * cow_bitmap_edit_begin keeps a copy of the set; cow_bitmap_edit_end
 * either drops it or puts it back, so a caller can make a series of edits
 * all or none (`qemu-img bitmap` keeps those before a failed one). */
#include "cow/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BM_MAX_COUNT 65535u   /* QEMU's QCOW2_MAX_BITMAPS */
#define BM_MAX_NAME  1023u

uint64_t cow_bitmap_default_granularity(const struct cow_img *img)
{
	uint64_t cs = img->cluster_size;

	return cs < 4096 ? 4096 : cs > 65536 ? 65536 : cs;
}

/* A deep copy of @t (names, chunks, removed entries), without its own
 * copy: NULL when out of memory. */
static struct cow_bm_track *bm_track_dup(struct cow_img *img, const struct cow_bm_track *t)
{
	struct cow_bm_track *d = calloc(1, sizeof(*d));
	uint64_t cs = img->cluster_size;

	if (!d)
		return NULL;
	d->stored = t->stored;
	d->bm = calloc(t->n ? t->n : 1, sizeof(*d->bm));
	d->gone = malloc((t->ngone ? t->ngone : 1) * sizeof(*d->gone));
	if (!d->bm || !d->gone)
		goto fail;
	if (t->ngone)
		memcpy(d->gone, t->gone, t->ngone * sizeof(*d->gone));
	d->ngone = t->ngone;
	for (size_t i = 0; i < t->n; i++) {
		const struct bm_mem *s = &t->bm[i];
		struct bm_mem *b = &d->bm[i];

		*b = *s;
		b->name = NULL;
		b->chunk = NULL;
		d->n++;
		b->name = malloc(s->nlen + 1u);
		if (!b->name)
			goto fail;
		memcpy(b->name, s->name, s->nlen + 1u);
		if (!s->chunk)
			continue;
		b->chunk = calloc(s->nchunks, sizeof(*b->chunk));
		if (!b->chunk)
			goto fail;
		for (uint64_t c = 0; c < s->nchunks; c++) {
			if (!s->chunk[c] || s->chunk[c] == BM_ONES) {
				b->chunk[c] = s->chunk[c];
				continue;
			}
			b->chunk[c] = malloc(cs);
			if (!b->chunk[c])
				goto fail;
			memcpy(b->chunk[c], s->chunk[c], cs);
		}
	}
	return d;
fail:
	cow_bm_track_free(d);
	return NULL;
}

int cow_bitmap_edit_begin(struct cow_img *img, struct ut_err *err)
{
	if (img->ro)
		return ut_errf(err, -EROFS, "'%s': opened read-only", img->path);
	if (img->fmt != COW_FMT_QCOW2)
		return ut_errf(err, -ENOTSUP, "'%s': a raw image cannot hold persistent bitmaps", img->path);
	if (img->keep_bitmaps || img->hdr_only || !img->l1)
		return ut_errf(err, -EINVAL, "'%s': internal error: not a full writable open", img->path);
	/* (bitmaps that could not be tracked for lack of memory: nothing;
	 * other problems, damage found at open, refuse every edit but
	 * cow_bitmap_remove, bm_damaged) */
	if (img->bm_problem_in_use) {
		ut_errf(err, img->bm_problem, "%s", img->bm_problem_msg);
		return ut_err_prefix(err, "the persistent bitmaps cannot be edited");
	}
	if (!img->bm && !(img->bm = calloc(1, sizeof(*img->bm))))
		return ut_errf(err, -ENOMEM, "out of memory");
	cow_bm_track_free(img->bm->saved);
	img->bm->saved = bm_track_dup(img, img->bm);
	if (!img->bm->saved)
		return ut_errf(err, -ENOMEM, "out of memory");
	return 0;
}

void cow_bitmap_edit_end(struct cow_img *img, bool keep)
{
	struct cow_bm_track *t = img->bm, *s;

	if (!t || !t->saved)
		return;
	s = t->saved;
	t->saved = NULL;
	if (keep) {
		cow_bm_track_free(s);
		return;
	}
	cow_bm_track_free(t);
	img->bm = s;
}

/* A problem found at open (cow_bitmaps_problem: a damaged directory, a
 * bitmap that could not be loaded) refuses every edit but a removal,
 * which leaves the rest as it is and frees only what may be freed: -errno
 * with @err naming it, or 0. */
static int bm_damaged(struct cow_img *img, const char *name, struct ut_err *err)
{
	if (!img->bm_problem)
		return 0;
	ut_errf(err, img->bm_problem, "%s", img->bm_problem_msg);
	return ut_err_prefix(err, "'%s': bitmap '%s' cannot be changed (only --remove is possible)", img->path, name);
}

static bool name_is(const char *name, size_t nlen, const uint8_t *p, uint16_t plen)
{
	return nlen == plen && !memcmp(name, p, nlen);
}

/* Where bitmap @name is: 1 tracked (*bp), 2 only in the directory (in use
 * at open, not tracked: its entry at *dpos), 0 nowhere (or removed), or
 * -errno with @err. *count and *dbytes (when not NULL): the bitmaps there
 * will be and the bytes of their directory entries. */
static int bm_lookup(struct cow_img *img, const char *name, struct bm_mem **bp, uint64_t *dpos,
		     uint64_t *count, uint64_t *dbytes, struct ut_err *err)
{
	struct cow_bm_track *t = img->bm;
	size_t nlen = strlen(name);
	uint64_t dsize = 0, doff, p, cnt = 0, bytes = 0;
	uint8_t *dir = NULL;
	int ret, found = 0;

	*bp = NULL;
	for (size_t i = 0; i < t->n; i++) {
		if (t->bm[i].fresh) {
			cnt++;
			bytes += (COW_BM_ENTRY_HDR + t->bm[i].nlen + 7) & ~7ull;
		}
		if (name_is(name, nlen, (const uint8_t *)t->bm[i].name, t->bm[i].nlen)) {
			*bp = &t->bm[i];
			found = 1;
		}
	}
	ret = cow_bm_read_dir(img, &dir, &dsize, &doff, err);
	if (ret < 0)
		return ret;
	for (p = 0; ret == 0 && p < dsize; p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull) {
		const uint8_t *e = dir + p;
		bool gone = false;

		for (size_t i = 0; i < t->ngone; i++)
			gone = gone || t->gone[i] == p;
		if (gone)
			continue;
		cnt++;
		bytes += (cow_bitmap_entry_size(e) + 7) & ~7ull;
		if (found || !name_is(name, nlen, e + COW_BM_ENTRY_HDR + cow_be32(e + 20), cow_be16(e + 18)))
			continue;
		found = 2;
		*dpos = p;
		for (size_t i = 0; i < t->n; i++)
			if (!t->bm[i].fresh && t->bm[i].dpos == p)
				found = 1, *bp = &t->bm[i];
	}
	free(dir);
	if (count)
		*count = cnt;
	if (dbytes)
		*dbytes = bytes;
	return found;
}

/* @name as a tracked bitmap: 0 with *bp, or -errno: -ENOENT "not found",
 * -EINVAL for one in use ("inconsistent", as QEMU refuses it). */
static int bm_usable(struct cow_img *img, const char *name, struct bm_mem **bp, struct ut_err *err)
{
	uint64_t dpos;
	int ret = bm_lookup(img, name, bp, &dpos, NULL, NULL, err);

	if (ret == 0)
		return ut_errf(err, -ENOENT, "'%s': bitmap '%s' not found", img->path, name);
	if (ret == 2)
		return ut_errf(err, -EINVAL, "'%s': bitmap '%s' is inconsistent (marked in use: the program that had the image open did not store it) and cannot be used; remove it (--remove)",
			       img->path, name);
	return ret < 0 ? ret : 0;
}

/* The data of tracked bitmap @b in memory (a disabled one's is not
 * loaded at open): 0 or -errno with @err (nothing changed). */
static int bm_need_data(struct cow_img *img, struct bm_mem *b, struct ut_err *err)
{
	uint64_t dsize = 0, doff;
	uint8_t *dir = NULL;
	int ret;

	if (b->chunk)
		return 0;
	ret = cow_bm_reread_dir(img, &dir, &dsize, &doff, err);
	if (ret == 0)
		ret = cow_bm_load_data(img, b, dir, dsize, err);
	free(dir);
	return ret;
}

/* Between cow_bitmap_edit_begin and _end? Else false with @err (a
 * caller's mistake). */
static bool bm_editing(struct cow_img *img, struct ut_err *err)
{
	if (img->bm && img->bm->saved)
		return true;
	ut_errf(err, -EINVAL, "'%s': internal error: no cow_bitmap_edit_begin", img->path);
	return false;
}

/* The bitmap @name an edit changes (clear, enable/disable, the target of
 * a merge): editing, the directory undamaged, the bitmap there and
 * consistent (*b). 0 or -errno with @err. */
static int bm_target(struct cow_img *img, const char *name, struct bm_mem **b, struct ut_err *err)
{
	int ret;

	if (!bm_editing(img, err))
		return -EINVAL;
	ret = bm_damaged(img, name, err);
	if (ret == 0)
		ret = bm_usable(img, name, b, err);
	return ret;
}

int cow_bitmap_add(struct cow_img *img, const char *name, uint64_t granularity, bool enabled,
		   struct ut_err *err)
{
	struct cow_bm_track *t = img->bm;
	uint64_t cs = img->cluster_size, count = 0, dbytes = 0, dpos, bits, bytes;
	size_t nlen = strlen(name);
	struct bm_mem *b, *n;
	int ret;

	if (!bm_editing(img, err))
		return -EINVAL;
	if (!nlen)
		return ut_errf(err, -EINVAL, "'%s': a bitmap name cannot be empty", img->path);
	ret = bm_damaged(img, name, err);
	if (ret < 0)
		return ret;
	if (granularity < 512 || (granularity & (granularity - 1)) || granularity > (1ull << 31))
		return ut_errf(err, -EINVAL, "'%s': bitmap '%s': the granularity must be a power of 2 from 512 to 2 GiB",
			       img->path, name);
	ret = bm_lookup(img, name, &b, &dpos, &count, &dbytes, err);
	if (ret < 0)
		return ret;
	if (ret)
		return ut_errf(err, -EEXIST, "'%s': bitmap '%s' already exists", img->path, name);
	if (img->h.version < 3)
		return ut_errf(err, -ENOTSUP, "'%s': a version 2 image (compat 0.10) cannot hold persistent bitmaps",
			       img->path);
	bits = (img->size + granularity - 1) / granularity;
	bytes = (bits + 7) / 8;
	if (bytes > COW_BM_MAX_PHYS || bytes > COW_BM_MAX_TABLE * cs)
		return ut_errf(err, -EFBIG, "'%s': bitmap '%s' would take too much space (granularity %llu): use a larger granularity",
			       img->path, name, (unsigned long long)granularity);
	if (!bits)
		return ut_errf(err, -EINVAL, "'%s': an empty image cannot hold a bitmap", img->path);
	if (nlen > BM_MAX_NAME)
		return ut_errf(err, -ENAMETOOLONG, "'%s': bitmap name length exceeds the maximum (%u bytes)", img->path,
			       BM_MAX_NAME);
	if (count + 1 > BM_MAX_COUNT)
		return ut_errf(err, -ENOSPC, "'%s': the maximum number of persistent bitmaps (%u) is reached", img->path,
			       BM_MAX_COUNT);
	if (dbytes + ((COW_BM_ENTRY_HDR + nlen + 7) & ~7ull) > COW_MAX_BITMAP_DIR)
		return ut_errf(err, -ENOSPC, "'%s': not enough space in the bitmap directory", img->path);
	n = realloc(t->bm, (t->n + 1) * sizeof(*t->bm));
	if (!n)
		return ut_errf(err, -ENOMEM, "out of memory");
	t->bm = n;
	b = &t->bm[t->n];
	memset(b, 0, sizeof(*b));
	b->name = malloc(nlen + 1);
	b->nbits = bits;
	b->gbits = (unsigned)__builtin_ctzll(granularity);
	b->nchunks = cow_bm_table_size(img, img->size, b->gbits);
	b->chunk = calloc(b->nchunks, sizeof(*b->chunk));
	if (!b->name || !b->chunk) {
		cow_bm_mem_free(b);
		return ut_errf(err, -ENOMEM, "out of memory");
	}
	memcpy(b->name, name, nlen + 1);
	b->nlen = (uint16_t)nlen;
	b->enabled = enabled;
	b->fresh = true;
	t->n++;
	t->stored = false;
	return 0;
}

int cow_bitmap_remove(struct cow_img *img, const char *name, struct ut_err *err)
{
	struct cow_bm_track *t = img->bm;
	struct bm_mem *b;
	uint64_t dpos = 0, *g;
	int ret;

	if (!bm_editing(img, err))
		return -EINVAL;
	ret = bm_lookup(img, name, &b, &dpos, NULL, NULL, err);
	if (ret < 0)
		return ret;
	if (ret == 0)
		return ut_errf(err, -ENOENT, "'%s': bitmap '%s' not found", img->path, name);
	if (b)
		dpos = b->dpos;
	if (!b || !b->fresh) {
		g = realloc(t->gone, (t->ngone + 1) * sizeof(*g));
		if (!g)
			return ut_errf(err, -ENOMEM, "out of memory");
		t->gone = g;
		t->gone[t->ngone++] = dpos;
	}
	if (b) {
		size_t i = (size_t)(b - t->bm);

		cow_bm_mem_free(b);
		memmove(&t->bm[i], &t->bm[i + 1], (t->n - i - 1) * sizeof(*b));
		t->n--;
	}
	t->stored = false;
	return 0;
}

int cow_bitmap_clear(struct cow_img *img, const char *name, struct ut_err *err)
{
	struct bm_mem *b;
	uint8_t **c;
	int ret;

	ret = bm_target(img, name, &b, err);
	if (ret < 0)
		return ret;
	c = calloc(b->nchunks, sizeof(*c));
	if (!c)
		return ut_errf(err, -ENOMEM, "out of memory");
	cow_bm_mem_free_data(b);
	b->chunk = c;
	img->bm->stored = false;
	return 0;
}

int cow_bitmap_set_enabled(struct cow_img *img, const char *name, bool enabled, struct ut_err *err)
{
	struct bm_mem *b;
	int ret;

	ret = bm_target(img, name, &b, err);
	/* (an enabled one records writes: its data must be in memory) */
	if (ret == 0 && enabled)
		ret = bm_need_data(img, b, err);
	if (ret < 0)
		return ret;
	b->enabled = enabled;
	img->bm->stored = false;
	return 0;
}

/* Bitmap @name of @src (an image other than the edited one, opened
 * read-only or not) into @b with its data: 0, or -errno with @err. */
static int bm_load_other(struct cow_img *src, const char *name, struct bm_mem *b, struct ut_err *err)
{
	uint64_t dsize, doff, p;
	size_t nlen = strlen(name);
	uint8_t *dir = NULL;
	int ret;

	memset(b, 0, sizeof(*b));
	ret = src->fmt == COW_FMT_QCOW2 ? cow_bm_load_dir(src, &dir, &dsize, &doff, err) : 1;
	if (ret < 0)
		return ret;
	for (p = 0; ret == 0 && p < dsize; p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull) {
		const uint8_t *e = dir + p;

		if (!name_is(name, nlen, e + COW_BM_ENTRY_HDR + cow_be32(e + 20), cow_be16(e + 18)))
			continue;
		if (cow_be32(e + 12) & COW_BITMAP_IN_USE) {
			ret = ut_errf(err, -EINVAL, "'%s': bitmap '%s' is inconsistent (marked in use) and cannot be used",
				      src->path, name);
			goto out;
		}
		ret = cow_bm_mem_load(src, e, p, true, b);
		if (ret > 0)
			ret = ut_errf(err, -EINVAL, "'%s': bitmap '%s' cannot be loaded (its table does not fit the disk size, or an entry or its data is invalid)",
				      src->path, name);
		else if (ret < 0)
			ret = ut_errf(err, ret, "out of memory");
		goto out;
	}
	ret = ut_errf(err, -ENOENT, "'%s': bitmap '%s' not found", src->path, name);
out:
	free(dir);
	return ret;
}

/* Every bit of @s (of an image of @size bytes and @s_cs-byte clusters,
 * its chunks' size) ORed into @d: the bytes a set bit of @s covers set in
 * @d at its own granularity (a coarser @d gets the bit covering them, a
 * finer one all of its bits there, as QEMU's merge of bitmaps of
 * different granularities). 0 or -ENOMEM. */
static int bm_or(struct cow_img *img, struct bm_mem *d, const struct bm_mem *s, uint64_t s_cs,
		 uint64_t size)
{
	uint64_t per = s_cs * 8, gs = s->gbits;
	int ret = 0;

	for (uint64_t c = 0; ret == 0 && c < s->nchunks; c++) {
		uint64_t first = c * per, valid = s->nbits - first < per ? s->nbits - first : per;
		const uint8_t *p = s->chunk[c];

		if (!p)
			continue;
		for (uint64_t i = 0; ret == 0 && i < valid;) {
			uint64_t j = i;
			uint64_t from, to;

			if (p != BM_ONES && !(p[i >> 3] & (1u << (i & 7)))) {
				i++;
				continue;
			}
			while (j < valid && (p == BM_ONES || (p[j >> 3] & (1u << (j & 7)))))
				j++;
			from = (first + i) << gs;
			to = (first + j) << gs;
			if (to > size)
				to = size;
			if (from < to)
				ret = cow_bm_set_one(img, d, from, to - from);
			i = j;
		}
	}
	return ret;
}

int cow_bitmap_merge(struct cow_img *img, const char *dst, struct cow_img *src_img, const char *src,
		     struct ut_err *err)
{
	struct bm_mem *d, *s = NULL, tmp;
	int ret;

	memset(&tmp, 0, sizeof(tmp));
	ret = bm_target(img, dst, &d, err);
	if (ret < 0)
		return ret;
	if (!src_img || src_img == img) {
		ret = bm_usable(img, src, &s, err);
		if (ret == 0)
			ret = bm_need_data(img, s, err);
	} else {
		ret = bm_load_other(src_img, src, &tmp, err);
		s = &tmp;
		if (ret == 0 && src_img->size != img->size)
			ret = ut_errf(err, -EINVAL, "'%s': bitmap '%s': bitmaps of different sizes cannot be merged (this image %llu bytes, '%s' %llu bytes)",
				      img->path, dst, (unsigned long long)img->size, src_img->path,
				      (unsigned long long)src_img->size);
	}
	if (ret == 0)
		ret = bm_need_data(img, d, err);
	/* (on failure part of the bits may be set: the caller's
	 * cow_bitmap_edit_end puts the set back) */
	if (ret == 0 && bm_or(img, d, s, s == &tmp ? src_img->cluster_size : img->cluster_size, img->size) < 0)
		ret = ut_errf(err, -ENOMEM, "out of memory");
	if (ret == 0)
		img->bm->stored = false;
	cow_bm_mem_free(&tmp);
	return ret;
}
