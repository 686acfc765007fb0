/* cow/listing.c — what `qemu-img info` lists of a qcow2 layer besides its
 * header: the internal snapshots (snapshot table) and the persistent dirty
 * bitmaps (bitmap directory). Read only; every size and offset is checked
 * against the file before it is used (I8). */
#include "cow/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* QEMU's limit: it refuses images past it */
#define MAX_SNAPSHOTS 65536u

static char *dup_name(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s) {
		memcpy(s, p, n);
		s[n] = 0;
	}
	return s;
}

int cow_snapshot_entry(struct cow_img *img, uint32_t idx, uint64_t off, uint8_t h[40],
		       uint64_t *len, struct ut_err *err)
{
	uint32_t extra;
	int ret;

	if (off > img->file_size || img->file_size - off < 40)
		return ut_errf(err, -EINVAL, "'%s': snapshot %u extends beyond the end of the file",
			       img->path, idx);
	ret = cow_pread_full(img, h, 40, off, false, err);
	if (ret < 0)
		return ret;
	extra = cow_be32(h + 36);
	*len = 40 + (uint64_t)extra + cow_be16(h + 12) + cow_be16(h + 14);
	if (extra > COW_MAX_SNAPSHOT_EXTRA || *len > img->file_size - off)
		return ut_errf(err, -EINVAL, "'%s': snapshot %u has an invalid extra data size (%u bytes) or extends beyond the end of the file",
			       img->path, idx, extra);
	return 0;
}

void cow_free_snapshots(struct cow_snapshot_info *s, uint32_t n)
{
	for (uint32_t i = 0; s && i < n; i++) {
		free(s[i].id);
		free(s[i].name);
	}
	free(s);
}

int cow_get_snapshots(struct cow_img *img, struct cow_snapshot_info **out, uint32_t *n,
		      struct ut_err *err)
{
	struct cow_snapshot_info *s = NULL;
	uint64_t off = img->h.snap_off;
	uint32_t nb = img->fmt == COW_FMT_QCOW2 ? img->h.nb_snapshots : 0, i = 0;
	uint8_t *e = NULL;
	int ret = 0;

	*out = NULL;
	*n = 0;
	if (!nb)
		return 0;
	if (nb > MAX_SNAPSHOTS)
		return ut_errf(err, -EINVAL, "'%s': too many snapshots (%u)", img->path, nb);
	s = calloc(nb, sizeof(*s));
	/* fixed part, extra data, id and name of one entry at most */
	e = malloc(40 + COW_MAX_SNAPSHOT_EXTRA + 2 * 65535);
	if (!s || !e) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (; i < nb; i++) {
		uint32_t extra;
		uint16_t idl, nml;
		uint64_t len;

		ret = cow_snapshot_entry(img, i, off, e, &len, err);
		if (ret < 0)
			goto out;
		idl = cow_be16(e + 12);
		nml = cow_be16(e + 14);
		extra = cow_be32(e + 36);
		ret = cow_pread_full(img, e + 40, len - 40, off + 40, false, err);
		if (ret < 0)
			goto out;
		s[i].date_sec = cow_be32(e + 16);
		s[i].date_nsec = cow_be32(e + 20);
		s[i].vm_clock_nsec = cow_be64(e + 24);
		/* the 64-bit size in the extra data replaces the 32-bit one */
		s[i].vm_state_size = extra >= 8 ? cow_be64(e + 40) : cow_be32(e + 32);
		s[i].icount = extra >= 24 ? cow_be64(e + 40 + 16) : UINT64_MAX;
		s[i].id = dup_name(e + 40 + extra, idl);
		s[i].name = dup_name(e + 40 + extra + idl, nml);
		if (!s[i].id || !s[i].name) {
			i++;
			ret = ut_errf(err, -ENOMEM, "out of memory");
			goto out;
		}
		off = (off + len + 7) & ~7ull;
	}
	*out = s;
	*n = nb;
	s = NULL;
out:
	cow_free_snapshots(s, i);
	free(e);
	return ret;
}

void cow_free_bitmaps(struct cow_bitmap_info *b, uint32_t n)
{
	for (uint32_t i = 0; b && i < n; i++)
		free(b[i].name);
	free(b);
}

int cow_get_bitmaps(struct cow_img *img, struct cow_bitmap_info **out, uint32_t *n,
		    struct ut_err *err)
{
	struct cow_bitmap_info *b = NULL;
	uint64_t dsize = 0, doff = 0, p = 0;
	uint32_t nb = 0, i = 0;
	uint8_t *dir = NULL;
	int ret = 0;

	*out = NULL;
	*n = 0;
	/* the bitmaps are valid only while autoclear bit 0 is set (spec) */
	if (img->fmt != COW_FMT_QCOW2 || !cow_bitmaps_ext(img, &nb, &dsize, &doff))
		return 0;
	if (!nb)
		return 0;
	if (!cow_bitmaps_dir_in_file(img, dsize, doff) || nb > dsize / 24)
		return ut_errf(err, -EINVAL, "'%s': bitmap directory (offset 0x%llx, %llu bytes) is invalid",
			       img->path, (unsigned long long)doff, (unsigned long long)dsize);
	b = calloc(nb, sizeof(*b));
	dir = malloc(dsize);
	if (!b || !dir) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = cow_pread_full(img, dir, dsize, doff, false, err);
	if (ret < 0)
		goto out;
	for (; i < nb; i++) {
		uint64_t nml, extra;

		if (p + 24 > dsize)
			goto bad;
		nml = cow_be16(dir + p + 18);
		extra = cow_be32(dir + p + 20);
		if (dir[p + 17] > 63 || cow_bitmap_entry_size(dir + p) > dsize - p)
			goto bad;
		b[i].flags = cow_be32(dir + p + 12);
		b[i].granularity = 1ull << dir[p + 17];
		b[i].name = dup_name(dir + p + 24 + extra, nml);
		if (!b[i].name) {
			i++;
			ret = ut_errf(err, -ENOMEM, "out of memory");
			goto out;
		}
		p = (p + cow_bitmap_entry_size(dir + p) + 7) & ~7ull;
	}
	*out = b;
	*n = nb;
	b = NULL;
	goto out;
bad:
	ret = ut_errf(err, -EINVAL, "'%s': bitmap %u of the bitmap directory is invalid", img->path, i);
out:
	cow_free_bitmaps(b, i);
	free(dir);
	return ret;
}

/* ---- the snapshot and bitmap metadata for the overlap check (I8) ---- */

static int range_add(struct cow_img *img, size_t *cap, uint64_t off, uint64_t len, uint32_t kind,
		     uint32_t snap, struct ut_err *err)
{
	struct cow_meta_range *r;

	if (!len)
		return 0;
	if (img->nmeta == *cap) {
		size_t nc = *cap ? *cap * 2 : 8;
		r = realloc(img->meta, nc * sizeof(*r));
		if (!r)
			return ut_errf(err, -ENOMEM, "out of memory");
		img->meta = r;
		*cap = nc;
	}
	r = &img->meta[img->nmeta++];
	r->off = off;
	r->end = off > UINT64_MAX - len ? UINT64_MAX : off + len;
	r->kind = kind;
	r->snap = snap;
	return 0;
}

static int range_cmp(const void *a, const void *b)
{
	const struct cow_meta_range *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

int cow_meta_ranges_load(struct cow_img *img, struct ut_err *err)
{
	uint64_t off = img->h.snap_off, start = off, dsize, doff, maxend = 0;
	uint32_t nb = img->fmt == COW_FMT_QCOW2 ? img->h.nb_snapshots : 0;
	struct cow_bm_ref *refs = NULL;
	uint8_t *dir = NULL;
	size_t cap = 0, nrefs = 0;
	int ret = 0;

	free(img->meta);
	img->meta = NULL;
	img->nmeta = 0;
	if (nb > MAX_SNAPSHOTS)
		return ut_errf(err, -EINVAL, "'%s': too many snapshots (%u)", img->path, nb);
	/* as QEMU's overlap check (QCOW2_OL_SNAPSHOT_TABLE, _INACTIVE_L1):
	 * the table, and each L1 table as its entry gives it, whatever it
	 * looks like (check reports a bad one) */
	for (uint32_t i = 0; i < nb; i++) {
		uint8_t h[40];
		uint64_t len;

		ret = cow_snapshot_entry(img, i, off, h, &len, err);
		if (ret == 0)
			ret = range_add(img, &cap, cow_be64(h), (uint64_t)cow_be32(h + 8) * 8,
					COW_MR_SNAP_L1, i, err);
		if (ret < 0)
			goto out;
		off = (off + len + 7) & ~7ull;
	}
	ret = range_add(img, &cap, start, off - start, COW_MR_SNAP_TABLE, 0, err);
	/* QCOW2_OL_BITMAP_DIRECTORY, while the bitmaps are kept (bitmaps.c),
	 * and beyond QEMU every bitmap table and data cluster: a damaged
	 * refcount of 0 on one must not make it guest data, which the next
	 * store would then free as the old bitmap's (I8, I18) */
	if (ret == 0 && img->fmt == COW_FMT_QCOW2) {
		ret = cow_bm_read_dir(img, &dir, &dsize, &doff, err);
		if (ret == -EINVAL) {
			/* (damage: its bitmaps are not used; check reports it) */
			ut_err_clear(err);
			ret = 0;
		} else if (ret == 0) {
			ret = range_add(img, &cap, doff, dsize, COW_MR_BITMAP_DIR, 0, err);
			if (ret == 0)
				ret = cow_bm_refs(img, dir, dsize, &refs, &nrefs, err);
			for (size_t i = 0; ret == 0 && i < nrefs; i++)
				ret = range_add(img, &cap, refs[i].off,
						((refs[i].len + img->cluster_size - 1) / img->cluster_size) *
							img->cluster_size,
						COW_MR_BITMAP, 0, err);
		} else if (ret > 0) {
			ret = 0;
		}
	}
	if (ret < 0)
		goto out;
	if (img->nmeta > 1)
		qsort(img->meta, img->nmeta, sizeof(*img->meta), range_cmp);
	for (size_t i = 0; i < img->nmeta; i++) {
		if (img->meta[i].end > maxend)
			maxend = img->meta[i].end;
		img->meta[i].maxend = maxend;
	}
out:
	if (ret < 0) {
		free(img->meta);
		img->meta = NULL;
		img->nmeta = 0;
	}
	free(refs);
	free(dir);
	return ret;
}

const struct cow_meta_range *cow_meta_range_find(const struct cow_img *img, uint64_t off,
						 uint64_t len)
{
	uint64_t end = off > UINT64_MAX - len ? UINT64_MAX : off + len;
	size_t lo = 0, hi = img->nmeta;

	if (!len)
		return NULL;
	/* hi = the number of ranges starting before @end */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (img->meta[mid].off < end)
			lo = mid + 1;
		else
			hi = mid;
	}
	/* back through them while one of them may still reach past @off */
	while (hi-- > 0 && img->meta[hi].maxend > off)
		if (img->meta[hi].end > off)
			return &img->meta[hi];
	return NULL;
}
