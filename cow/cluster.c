/* cow/cluster.c — the guest-to-host cluster map (L1/L2), reads through the
 * backing chain, allocating writes with copy-on-write of partial clusters,
 * zero clusters, discard, compressed writes, and the ordered metadata
 * write-back that keeps the image consistent at every instant (cow.h I1-I4). */
#include "cow/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What a guest cluster (or, with extended L2 entries, a subcluster) reads
 * from. CT_MIXED: an extended-L2 cluster whose subclusters differ. */
enum ctype { CT_UNALLOC, CT_ZERO, CT_NORMAL, CT_COMPRESSED, CT_MIXED };

/* Type of the whole cluster with L2 entry @e and subcluster bitmap @bmp (0
 * without extended L2). With extended L2 an entry may keep a host offset
 * while none of its subclusters is allocated (CT_UNALLOC, CT_ZERO). */
static enum ctype classify(const struct cow_img *img, uint64_t e, uint64_t bmp)
{
	if (e & QCOW_OFLAG_COMPRESSED)
		return CT_COMPRESSED;
	if (img->extl2) {
		uint32_t alloc = (uint32_t)bmp, zero = (uint32_t)(bmp >> 32);
		if (alloc == 0xffffffffu && (e & QCOW_OFFSET_MASK))
			return CT_NORMAL;
		if (!alloc)
			return zero == 0xffffffffu ? CT_ZERO : zero ? CT_MIXED : CT_UNALLOC;
		return CT_MIXED;
	}
	if (img->h.version >= 3 && (e & QCOW_OFLAG_ZERO))
		return CT_ZERO;
	if (e & QCOW_OFFSET_MASK)
		return CT_NORMAL;
	return CT_UNALLOC;
}

/* Type of subcluster @sc of an extended-L2 entry (not compressed). */
static enum ctype sc_type(uint64_t bmp, uint32_t sc)
{
	if ((bmp >> sc) & 1)
		return CT_NORMAL;
	if ((bmp >> (32 + sc)) & 1)
		return CT_ZERO;
	return CT_UNALLOC;
}

/* Bitmap of subclusters [a, b) in the allocation half (a < b <= 32). */
static uint64_t sc_mask(uint32_t a, uint32_t b)
{
	return ((b == 32 ? 0x100000000ull : 1ull << b) - (1ull << a));
}

/* The run of subclusters with one type starting at byte @in of an
 * extended-L2 cluster: sets *ct and returns the run's end (bytes from the
 * start of the cluster, at most the cluster size). */
static uint64_t sc_run(const struct cow_img *img, uint64_t bmp, uint64_t in, enum ctype *ct)
{
	uint32_t sc = (uint32_t)(in >> img->sc_bits), s = sc + 1;

	*ct = sc_type(bmp, sc);
	while (s < QCOW_SC_PER_CLUSTER && sc_type(bmp, s) == *ct)
		s++;
	return (uint64_t)s << img->sc_bits;
}

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

/* Check @n new clusters at @host against the metadata (I8): the header,
 * L1 and refcount tables, and, as QEMU's default overlap check, the tables
 * in the caches (a damaged refcount of 0 on an L2 table or refcount block
 * must not turn it into something else; the table of the write in hand is
 * cached). Every allocation passes here (cow_alloc_clusters). 0, or
 * -EUCLEAN with the image marked corrupt. */
int cow_check_new(struct cow_img *img, uint64_t host, uint64_t n, struct ut_err *err)
{
	const char *what = meta_overlap(img, host, n << img->cluster_bits);

	for (uint64_t i = 0; !what && i < n; i++) {
		uint64_t o = host + (i << img->cluster_bits);
		if (cow_cache_has(&img->l2c, o))
			what = "an L2 table";
		else if (cow_cache_has(&img->rbc, o))
			what = "a refcount block";
	}
	if (what)
		return cow_mark_corrupt(img, err, "allocated cluster 0x%llx overlaps %s",
					(unsigned long long)host, what);
	return 0;
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
		if (ret < 0)
			return ret;
	}
	cow_cache_remove(&img->l2c, v);
	return 0;
}

int cow_l2_get(struct cow_img *img, uint64_t l1_idx, bool alloc, struct cow_cent **out,
	       struct ut_err *err)
{
	uint64_t l1e, off, got;
	struct cow_cent *e;
	const char *what;
	int ret;

	*out = NULL;
	if (l1_idx >= img->h.l1_size)
		return cow_mark_corrupt(img, err, "guest offset outside the L1 table (index %llu)",
					(unsigned long long)l1_idx);
	l1e = img->l1[l1_idx];
	off = l1e & QCOW_OFFSET_MASK;
	if (!off) {
		if (!alloc)
			return 0;
		ret = cow_alloc_clusters(img, 1, &off, &got, err);
		if (ret < 0)
			return ret;
		ret = cache_room(img, err);
		if (ret < 0)
			return ret;
		e = cow_cache_insert(&img->l2c, off);
		if (!e)
			return ut_errf(err, -ENOMEM, "out of memory");
		memset(e->buf, 0, img->cluster_size);
		cow_cache_mark_dirty(&img->l2c, e);
		img->l1[l1_idx] = off | QCOW_OFLAG_COPIED;
		img->l1_dirty[l1_idx / 64] = 1;
		img->any_l1_dirty = true;
		if (off + img->cluster_size > img->file_size) {
			/* make the table's cluster part of the file now so a later
			 * data cluster is never placed before it ends */
			ret = cow_pwrite_full(img, e->buf, img->cluster_size, off, err);
			if (ret < 0)
				return ret;
		}
		*out = e;
		return 0;
	}
	if (off & (img->cluster_size - 1))
		return cow_mark_corrupt(img, err, "L2 table offset 0x%llx is not cluster-aligned",
					(unsigned long long)off);
	if (off + img->cluster_size > img->file_size)
		return cow_mark_corrupt(img, err, "L2 table offset 0x%llx is beyond the end of the file",
					(unsigned long long)off);
	what = meta_overlap(img, off, img->cluster_size);
	if (what)
		return cow_mark_corrupt(img, err, "L2 table at 0x%llx overlaps %s",
					(unsigned long long)off, what);
	if (alloc && !(l1e & QCOW_OFLAG_COPIED))
		return cow_mark_corrupt(img, err, "L2 table at 0x%llx is shared (refcount > 1)",
					(unsigned long long)off);
	e = cow_cache_find(&img->l2c, off);
	if (e) {
		*out = e;
		return 0;
	}
	ret = cache_room(img, err);
	if (ret < 0)
		return ret;
	e = cow_cache_insert(&img->l2c, off);
	if (!e)
		return ut_errf(err, -ENOMEM, "out of memory");
	ret = cow_pread_full(img, e->buf, img->cluster_size, off, false, err);
	if (ret < 0) {
		cow_cache_remove(&img->l2c, e);
		return ret;
	}
	*out = e;
	return 0;
}

/* Entry @i of the cached L2 table @t (for guest cluster @vcl), validated. */
static int table_entry(struct cow_img *img, const struct cow_cent *t, uint64_t vcl,
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

static int get_entry(struct cow_img *img, uint64_t vcl, uint64_t *ent, uint64_t *bmp,
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
	return table_entry(img, e, vcl, ent, bmp, err);
}

static int check_data_off(struct cow_img *img, uint64_t host, uint64_t vcl, struct ut_err *err)
{
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
	return 0;
}

/* Decompress the cluster described by compressed L2 entry @e into img->dec_buf. */
static int load_compressed(struct cow_img *img, uint64_t e, struct ut_err *err)
{
	uint64_t coff = cow_l2_compressed_off(img, e);
	uint64_t nsec = cow_l2_compressed_sectors(img, e);
	uint64_t clen = nsec * 512 - (coff & 511);
	int ret;

	if (img->dec_key == e)
		return 0;
	if (clen > 2ull * img->cluster_size)
		clen = 2ull * img->cluster_size;
	if (coff < img->cluster_size || coff >= img->file_size)
		return cow_mark_corrupt(img, err, "compressed cluster offset 0x%llx is invalid or beyond the end of the file",
					(unsigned long long)coff);
	ret = cow_pread_full(img, img->cbuf, clen, coff, true, err);
	if (ret < 0)
		return ret;
	img->dec_key = 0;
	ret = cow_decompress(img, img->cbuf, clen, img->dec_buf, img->cluster_size, err);
	if (ret < 0)
		return ret;
	img->dec_key = e;
	return 0;
}

static int read_at(struct cow_img *img, uint8_t *buf, uint64_t len, uint64_t off,
		   struct ut_err *err);

/* Read from the layer below @img (zeros where there is none / beyond its end). */
static int read_below(struct cow_img *img, uint8_t *buf, uint64_t len, uint64_t off,
		      struct ut_err *err)
{
	struct cow_img *b = img->backing;
	uint64_t n;

	if (!b || off >= b->size) {
		memset(buf, 0, len);
		return 0;
	}
	n = len;
	if (off + n > b->size) {
		n = b->size - off;
		memset(buf + n, 0, len - n);
	}
	return read_at(b, buf, n, off, err);
}

/* Read @n bytes at offset @in of this layer's data cluster for guest
 * cluster @vcl (entry @e), after validating its host offset (I8). */
static int read_data(struct cow_img *img, uint64_t e, uint64_t vcl, uint8_t *buf, uint64_t n,
		     uint64_t in, struct ut_err *err)
{
	uint64_t host = e & QCOW_OFFSET_MASK;
	int ret = check_data_off(img, host, vcl, err);

	return ret < 0 ? ret : cow_pread_full(img, buf, n, host + in, true, err);
}

/* Extended L2: bytes [in, end) of cluster @vcl (entry @e, bitmap @bmp)
 * where the layers below show through in two or more runs with this
 * layer's subclusters (or zeros) between them, as scattered small writes
 * into a clone leave it. Reads the span from below once and then this
 * layer's runs over it: one read from below instead of one per run, for at
 * most as many bytes again as the runs of this layer inside the span.
 * Returns 1 when done, 0 when the cluster is not like that (the caller reads
 * run by run), or -errno. */
static int read_mixed_span(struct cow_img *img, uint8_t *buf, uint64_t vcl, uint64_t e,
			   uint64_t bmp, uint64_t in, uint64_t end, struct ut_err *err)
{
	uint64_t s0 = 0, s1 = 0, over = 0, p, q, base = vcl << img->cluster_bits;
	unsigned below = 0;
	enum ctype ct;
	int ret;

	if (!img->backing)
		return 0;
	for (p = in; p < end; p = q) {
		q = sc_run(img, bmp, p, &ct);
		if (q > end)
			q = end;
		if (ct == CT_UNALLOC) {
			if (!below++)
				s0 = p;
			s1 = q;
		}
	}
	if (below < 2)
		return 0;
	for (p = s0; p < s1; p = q) {
		q = sc_run(img, bmp, p, &ct);
		if (ct != CT_UNALLOC)
			over += q - p;
	}
	if (2 * over > s1 - s0)
		return 0;
	ret = read_below(img, buf + (s0 - in), s1 - s0, base + s0, err);
	for (p = in; p < end && ret == 0; p = q) {
		q = sc_run(img, bmp, p, &ct);
		if (q > end)
			q = end;
		if (ct == CT_ZERO)
			memset(buf + (p - in), 0, q - p);
		else if (ct == CT_NORMAL)
			ret = read_data(img, e, vcl, buf + (p - in), q - p, p, err);
	}
	return ret < 0 ? ret : 1;
}

static int read_at(struct cow_img *img, uint8_t *buf, uint64_t len, uint64_t off,
		   struct ut_err *err)
{
	uint64_t cs = img->cluster_size;
	int ret = 0;

	if (img->fmt == COW_FMT_RAW)
		return cow_pread_full(img, buf, len, off, true, err);
	while (len) {
		uint64_t vcl = off >> img->cluster_bits, in = off & (cs - 1), n = cs - in, e, e2, bmp;
		struct cow_cent *t;
		enum ctype ct;

		if (n > len)
			n = len;
		ret = get_entry(img, vcl, &e, &bmp, &t, err);
		if (ret < 0)
			return ret;
		ct = classify(img, e, bmp);
		if (ct == CT_MIXED) {
			uint64_t end;

			ret = read_mixed_span(img, buf, vcl, e, bmp, in, in + n, err);
			if (ret < 0)
				return ret;
			if (ret)
				goto next;
			/* extended L2: one run of equal subclusters in this cluster */
			end = sc_run(img, bmp, in, &ct);
			if (end - in < n)
				n = end - in;
		}
		/* extend the run within this L2 table */
		for (uint64_t i = 1; n < len && n == cs - in + (i - 1) * cs && t &&
				     ((vcl + i) & (img->l2_entries - 1)); i++) {
			uint64_t j = (vcl + i) & (img->l2_entries - 1);
			e2 = cow_l2_ent(img, t->buf, j);
			if (classify(img, e2, cow_l2_bmp(img, t->buf, j)) != ct || ct == CT_COMPRESSED)
				break;
			if (ct == CT_NORMAL && (e2 & QCOW_OFFSET_MASK) != (e & QCOW_OFFSET_MASK) + i * cs)
				break;
			n = (n + cs > len) ? len : n + cs;
		}
		if (!t && n < len) {
			/* no L2 table: the whole table's range is unallocated */
			uint64_t tbl_end = ((vcl >> img->l2_bits) + 1) << (img->l2_bits + img->cluster_bits);
			n = (tbl_end - off < len) ? tbl_end - off : len;
		}
		switch (ct) {
		case CT_MIXED:   /* not reached: sc_run resolved it */
		case CT_UNALLOC:
			ret = read_below(img, buf, n, off, err);
			break;
		case CT_ZERO:
			memset(buf, 0, n);
			break;
		case CT_NORMAL:
			ret = read_data(img, e, vcl, buf, n, in, err);
			break;
		case CT_COMPRESSED:
			ret = load_compressed(img, e, err);
			if (ret == 0)
				memcpy(buf, img->dec_buf + in, n);
			break;
		}
		if (ret < 0)
			return ret;
next:
		buf += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* Current guest content of cluster @vcl whose L2 entry is @e, in one read.
 * The caller overwrites [skip, skip + skip_len) of @buf afterwards, so a
 * zero cluster is zero-filled only outside that range. Standard L2 entries
 * only: with extended L2 entries partial writes go through step_sub. */
static int old_content(struct cow_img *img, uint64_t e, uint64_t vcl, uint8_t *buf,
		       uint64_t skip, uint64_t skip_len, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, off = vcl << img->cluster_bits;
	int ret;

	switch (classify(img, e, 0)) {
	case CT_UNALLOC:
		return read_below(img, buf, cs, off, err);
	case CT_ZERO:
		memset(buf, 0, skip);
		memset(buf + skip + skip_len, 0, cs - skip - skip_len);
		return 0;
	case CT_COMPRESSED:
		ret = load_compressed(img, e, err);
		if (ret == 0)
			memcpy(buf, img->dec_buf, cs);
		return ret;
	default:
		return read_data(img, e, vcl, buf, cs, 0, err);
	}
}

/* Are the @len bytes at @p all zero? */
static bool is_zero(const uint8_t *p, uint64_t len)
{
	if (len < 16)
		return !len || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
	for (int i = 0; i < 16; i++)
		if (p[i])
			return false;
	return memcmp(p, p + 16, len - 16) == 0;
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

/* Set the L2 entry of guest cluster @vcl to @ne and, with extended L2
 * entries, its subcluster bitmap to @nbmp (ignored otherwise). With @release
 * the host clusters the old entry held are queued for freeing when the new
 * entry no longer uses them (I4). */
static int set_entry(struct cow_img *img, uint64_t vcl, uint64_t ne, uint64_t nbmp, bool release,
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
	if (release && (old & ~QCOW_OFLAG_COPIED) != (ne & ~QCOW_OFLAG_COPIED)) {
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
static int maybe_writeback(struct cow_img *img, struct ut_err *err)
{
	if (img->npending > 4096)
		return cow_meta_writeback(img, err);
	return 0;
}

/* Bytes writable in place from offset @in of cluster @vcl, whose L2 entry in
 * @t is COPIED at host offset @host with subcluster bitmap @bmp: with extended
 * L2 the allocated subclusters from @in; then, if they reach the end of the
 * cluster, the clusters after it in the same table that are wholly
 * allocated, COPIED and contiguous on the host; at most @len. 0 when the
 * subcluster at @in is not allocated. */
static uint64_t inplace_run(const struct cow_img *img, const struct cow_cent *t, uint64_t vcl,
			    uint64_t host, uint64_t bmp, uint64_t in, uint64_t len)
{
	uint64_t cs = img->cluster_size, run = cs - in, e;

	if (img->extl2) {
		enum ctype ct;
		uint64_t end = sc_run(img, bmp, in, &ct);
		if (ct != CT_NORMAL)
			return 0;
		run = end - in;
		if (end < cs)
			return run < len ? run : len;
	}
	for (uint64_t i = 1; run < len && ((vcl + i) & (img->l2_entries - 1)); i++) {
		uint64_t j = (vcl + i) & (img->l2_entries - 1);
		e = cow_l2_ent(img, t->buf, j);
		if (classify(img, e, cow_l2_bmp(img, t->buf, j)) != CT_NORMAL ||
		    !(e & QCOW_OFLAG_COPIED) || (e & QCOW_OFFSET_MASK) != host + i * cs)
			break;
		run += cs;
	}
	return run < len ? run : len;
}

/* Fill buffer of a step: @st->bounce when the caller asked for its own
 * (asynchronous writes: several steps are in flight), else img->scratch.
 * Both hold 2 clusters. */
static uint8_t *step_fill(struct cow_img *img, struct cow_wstep *st, struct ut_err *err)
{
	if (!st->want_bounce)
		return img->scratch;
	if (!st->bounce) {
		st->bounce = aligned_alloc(4096, 2ull * img->cluster_size);
		if (!st->bounce)
			ut_errf(err, -ENOMEM, "out of memory");
	}
	return st->bounce;
}

/* Allocate up to @k contiguous data clusters (*got of them, at *host;
 * cow_alloc_clusters checks them against the metadata, I8). @partial: the caller writes
 * them only in part, so preallocation leaves them alone (I12). */
static int alloc_data(struct cow_img *img, uint64_t k, bool partial, uint64_t *host,
		      uint64_t *got, struct ut_err *err)
{
	int ret;

	img->alloc_partial = partial;
	ret = cow_alloc_clusters(img, k, host, got, err);
	img->alloc_partial = false;
	return ret;
}

/* Extended L2: the step for [in, in + n) of guest cluster @vcl (n <=
 * cluster size - in), whose entry is @e / @bmp, subcluster by subcluster. A
 * cluster without a host cluster of its own gets a new one; only the
 * subclusters written are allocated (at commit), and a partially written
 * subcluster that was not allocated is completed from its old content
 * (zeros or the backing chain) in the same write. A compressed or shared
 * (!COPIED) cluster is copied whole to a new cluster. */
static int step_sub(struct cow_img *img, struct cow_wstep *st, uint64_t vcl, uint64_t e,
		    uint64_t bmp, const uint8_t *buf, uint64_t in, uint64_t n, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, sc = 1ull << img->sc_bits, host = e & QCOW_OFFSET_MASK;
	uint64_t goff = vcl << img->cluster_bits, start = in, end = in + n, got;
	uint32_t a = (uint32_t)(in >> img->sc_bits), b = (uint32_t)((in + n + sc - 1) >> img->sc_bits);
	bool own = host && (e & QCOW_OFLAG_COPIED) && !(e & QCOW_OFLAG_COMPRESSED);
	/* partially written subclusters at the ends that hold no data yet */
	bool head = (in & (sc - 1)) && sc_type(bmp, a) != CT_NORMAL;
	bool tail = (end & (sc - 1)) && sc_type(bmp, b - 1) != CT_NORMAL;
	uint8_t *fill = NULL;
	int ret;

	st->vcl = vcl;
	st->k = 1;
	if (!own && host) {
		/* compressed or shared: copy the guest view of the whole cluster */
		fill = step_fill(img, st, err);
		if (!fill)
			return -ENOMEM;
		ret = read_at(img, fill, cs, goff, err);
		if (ret < 0)
			return ret;
		memcpy(fill + in, buf, n);
		ret = alloc_data(img, 1, false, &host, &got, err);
		if (ret < 0)
			return ret;
		st->host = st->cl_host = host;
		st->iov[0].iov_base = fill;
		st->iov[0].iov_len = cs;
		st->iovcnt = 1;
		st->kind = COW_STEP_CLUSTERS;
		return 0;
	}
	/* a new cluster, or the one it owns (check_data_off includes I8's
	 * overlap check) */
	ret = own ? check_data_off(img, host, vcl, err)
		  : alloc_data(img, 1, in || n < cs, &host, &got, err);
	if (ret < 0)
		return ret;
	if ((head || tail) && !(fill = step_fill(img, st, err)))
		return -ENOMEM;
	if (head) {
		start = (uint64_t)a << img->sc_bits;
		if (sc_type(bmp, a) == CT_ZERO)
			memset(fill, 0, in - start);
		else if ((ret = read_below(img, fill, in - start, goff + start, err)) < 0)
			return ret;
		st->iov[st->iovcnt].iov_base = fill;
		st->iov[st->iovcnt++].iov_len = in - start;
	}
	st->iov[st->iovcnt].iov_base = (void *)buf;
	st->iov[st->iovcnt++].iov_len = n;
	if (tail) {
		uint64_t tend = (uint64_t)b << img->sc_bits;
		if (sc_type(bmp, b - 1) == CT_ZERO)
			memset(fill + cs, 0, tend - end);
		else if ((ret = read_below(img, fill + cs, tend - end, goff + end, err)) < 0)
			return ret;
		st->iov[st->iovcnt].iov_base = fill + cs;
		st->iov[st->iovcnt++].iov_len = tend - end;
	}
	st->host = host + start;
	st->cl_host = host;
	st->mask = sc_mask(a, b);
	st->kind = COW_STEP_SUBCLUSTERS;
	return 0;
}

/* Standard L2 entries (and whole clusters without a host cluster with
 * extended L2): allocate k clusters of this L2 table for the write at @off
 * (offset @in in its first cluster) and build the write: the head and tail
 * clusters completed from their old content, the middle from @buf (I10: a
 * single partial cluster beyond the end of the file over zeros writes only
 * the new bytes). */
static int step_alloc(struct cow_img *img, struct cow_wstep *st, struct cow_cent *t, uint64_t vcl,
		      const uint8_t *buf, uint64_t len, uint64_t in, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, n, e, e2, ub, ob, k, host, got, reach, host_skip = 0;
	bool have_old = false, sparse = false;
	uint8_t *fill = NULL;
	int ret;

	/* k clusters of this L2 table that all need a new cluster (with
	 * extended L2 only wholly written ones without a host cluster) */
	reach = img->extl2 ? (in + len) / cs : (in + len + cs - 1) / cs;
	k = 1;
	while (k < reach && ((vcl + k) & (img->l2_entries - 1))) {
		uint64_t j = (vcl + k) & (img->l2_entries - 1);
		e2 = cow_l2_ent(img, t->buf, j);
		ub = cow_l2_bmp(img, t->buf, j);
		if (classify(img, e2, ub) == CT_NORMAL && (e2 & QCOW_OFLAG_COPIED))
			break;
		if (img->extl2 && (e2 & QCOW_OFFSET_MASK) && (e2 & QCOW_OFLAG_COPIED) &&
		    !(e2 & QCOW_OFLAG_COMPRESSED))
			break;
		k++;
	}
	/* a partial single cluster over zeros may be written only in part
	 * (I10): no preallocation for it (I12) */
	ret = alloc_data(img, k, in || len < cs, &host, &got, err);
	if (ret < 0)
		return ret;
	k = got;
	n = k * cs - in;
	if (n > len)
		n = len;
	st->len = n;
	if ((in || n % cs) && !(fill = step_fill(img, st, err)))
		return -ENOMEM;
	/* a single partial cluster wholly beyond the end of the file
	 * (which reads as zeros) whose old content is zero: the
	 * untouched parts need no write (the file may then end inside
	 * this cluster; readers and checkers accept less than one
	 * cluster past the end) */
	if (k == 1 && (in || n < cs) && host >= img->file_size) {
		ret = get_entry(img, vcl, &e, &ob, NULL, err);
		if (ret == 0)
			ret = old_content(img, e, vcl, fill, in, n, err);
		if (ret < 0)
			return ret;
		have_old = true;
		sparse = is_zero(fill, in) && is_zero(fill + in + n, cs - in - n);
	}
	if (sparse) {
		st->iov[st->iovcnt].iov_base = (void *)buf;
		st->iov[st->iovcnt++].iov_len = n;
		host_skip = in;
	} else if (in || (k == 1 && n < cs)) {
		/* head */
		uint64_t hn = (cs - in < n) ? cs - in : n;
		if (!have_old) {
			ret = get_entry(img, vcl, &e, &ob, NULL, err);
			if (ret == 0)
				ret = old_content(img, e, vcl, fill, in, hn, err);
			if (ret < 0)
				return ret;
		}
		memcpy(fill + in, buf, hn);
		st->iov[st->iovcnt].iov_base = fill;
		st->iov[st->iovcnt++].iov_len = cs;
		if (k > 1 || hn < n) {
			uint64_t mid = n - hn, tail = 0;
			if (mid % cs) {
				tail = mid % cs;
				mid -= tail;
			}
			if (mid) {
				st->iov[st->iovcnt].iov_base = (void *)(buf + hn);
				st->iov[st->iovcnt++].iov_len = mid;
			}
			if (tail) {
				ret = get_entry(img, vcl + k - 1, &e, &ob, NULL, err);
				if (ret == 0)
					ret = old_content(img, e, vcl + k - 1, fill + cs, 0, tail, err);
				if (ret < 0)
					return ret;
				memcpy(fill + cs, buf + hn + mid, tail);
				st->iov[st->iovcnt].iov_base = fill + cs;
				st->iov[st->iovcnt++].iov_len = cs;
			}
		}
	} else {
		uint64_t mid = n - n % cs, tail = n % cs;
		if (mid) {
			st->iov[st->iovcnt].iov_base = (void *)buf;
			st->iov[st->iovcnt++].iov_len = mid;
		}
		if (tail) {
			ret = get_entry(img, vcl + k - 1, &e, &ob, NULL, err);
			if (ret == 0)
				ret = old_content(img, e, vcl + k - 1, fill + cs, 0, tail, err);
			if (ret < 0)
				return ret;
			memcpy(fill + cs, buf + mid, tail);
			st->iov[st->iovcnt].iov_base = fill + cs;
			st->iov[st->iovcnt++].iov_len = cs;
		}
	}
	st->host = host + host_skip;
	st->cl_host = host;
	st->vcl = vcl;
	st->k = k;
	st->kind = COW_STEP_CLUSTERS;
	return 0;
}

int cow_write_step(struct cow_img *img, const void *data, uint64_t len, uint64_t off,
		   struct cow_wstep *st, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, vcl = off >> img->cluster_bits, in = off & (cs - 1);
	uint64_t e, bmp, host;
	const uint8_t *buf = data;
	bool want_bounce = st->want_bounce;
	struct cow_cent *t;
	int ret;

	memset(st, 0, sizeof(*st));
	st->want_bounce = want_bounce;
	if (img->ro)
		return ut_errf(err, -EROFS, "'%s': image is opened read-only", img->path);
	if (img->fmt == COW_FMT_RAW) {
		st->len = len;
		st->host = off;
		st->iov[0].iov_base = (void *)buf;
		st->iov[0].iov_len = len;
		st->iovcnt = 1;
		return 0;
	}
	ret = cow_l2_get(img, vcl >> img->l2_bits, true, &t, err);
	if (ret == 0)
		ret = table_entry(img, t, vcl, &e, &bmp, err);
	if (ret < 0)
		return ret;
	if (classify(img, e, bmp) == CT_NORMAL && (e & QCOW_OFLAG_COPIED)) {
		/* in place, extended over contiguous COPIED clusters */
		host = e & QCOW_OFFSET_MASK;
		ret = check_data_off(img, host, vcl, err);
		if (ret < 0)
			return ret;
		st->len = inplace_run(img, t, vcl, host, bmp, in, len);
		st->host = host + in;
		st->iov[0].iov_base = (void *)buf;
		st->iov[0].iov_len = st->len;
		st->iovcnt = 1;
		return 0;
	}
	if (img->extl2 && (in || len < cs || ((e & QCOW_OFFSET_MASK) && !(e & QCOW_OFLAG_COMPRESSED) &&
						(e & QCOW_OFLAG_COPIED)))) {
		/* extended L2: a partial cluster, or one with a host cluster
		 * of its own: subcluster by subcluster */
		st->len = cs - in < len ? cs - in : len;
		ret = step_sub(img, st, vcl, e, bmp, buf, in, st->len, err);
	} else {
		ret = step_alloc(img, st, t, vcl, buf, len, in, err);
	}
	if (ret < 0)
		cow_wstep_release(st);
	return ret;
}

int cow_write_commit(struct cow_img *img, struct cow_wstep *st, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, e, bmp, wlen = cow_wstep_bytes(st);
	int ret = 0;

	/* the caller may have written without cow/: account for the write as
	 * cow_pwrite_full does (the fdatasync before the next L2 write, I1/I2;
	 * the file size that offsets are validated against, I8) */
	if (wlen) {
		img->unsynced = true;
		if (st->host + wlen > img->file_size)
			img->file_size = st->host + wlen;
	}
	switch (st->kind) {
	case COW_STEP_INPLACE:
		break;
	case COW_STEP_SUBCLUSTERS:
		/* the bitmap as it is now: other subclusters may have changed
		 * since the step was prepared */
		ret = get_entry(img, st->vcl, &e, &bmp, NULL, err);
		if (ret == 0)
			ret = set_entry(img, st->vcl, st->cl_host | QCOW_OFLAG_COPIED,
					(bmp | st->mask) & ~(st->mask << 32), false, err);
		break;
	case COW_STEP_CLUSTERS:
		for (uint64_t i = 0; i < st->k && ret == 0; i++)
			ret = set_entry(img, st->vcl + i, (st->cl_host + i * cs) | QCOW_OFLAG_COPIED,
					QCOW_SC_ALL_ALLOC, true, err);
		break;
	}
	cow_wstep_release(st);
	if (ret < 0)
		return ret;
	return maybe_writeback(img, err);
}

int cow_write_issue(struct cow_img *img, struct cow_wstep *st, struct ut_err *err)
{
	return cow_pwritev_full(img, st->iov, st->iovcnt, st->host, err);
}

void cow_wstep_release(struct cow_wstep *st)
{
	free(st->bounce);
	st->bounce = NULL;
}

static int write_at(struct cow_img *img, const uint8_t *buf, uint64_t len, uint64_t off,
		    struct ut_err *err)
{
	struct cow_wstep st;
	int ret;

	if (img->fmt == COW_FMT_RAW)
		return cow_pwrite_full(img, buf, len, off, err);
	while (len) {
		st.want_bounce = false;
		ret = cow_write_step(img, buf, len, off, &st, err);
		if (ret < 0)
			return ret;
		/* data before the entries that point to it (I2) */
		ret = cow_write_issue(img, &st, err);
		if (ret < 0) {
			cow_wstep_release(&st);
			return ret;
		}
		ret = cow_write_commit(img, &st, err);
		if (ret < 0)
			return ret;
		buf += st.len;
		off += st.len;
		len -= st.len;
	}
	return 0;
}

static int check_range(struct cow_img *img, uint64_t len, uint64_t off, bool write,
		       struct ut_err *err)
{
	if (write && img->ro)
		return ut_errf(err, -EROFS, "'%s': image is opened read-only", img->path);
	if (off > img->size || len > img->size - off)
		return ut_errf(err, -EINVAL, "'%s': request [%llu, +%llu) beyond the virtual size %llu",
			       img->path, (unsigned long long)off, (unsigned long long)len,
			       (unsigned long long)img->size);
	return 0;
}

int cow_read(struct cow_img *img, void *buf, uint64_t len, uint64_t off, struct ut_err *err)
{
	int ret = check_range(img, len, off, false, err);

	return ret < 0 ? ret : read_at(img, buf, len, off, err);
}

int cow_write(struct cow_img *img, const void *buf, uint64_t len, uint64_t off,
	      struct ut_err *err)
{
	int ret = check_range(img, len, off, true, err);

	return ret < 0 ? ret : write_at(img, buf, len, off, err);
}

static uint64_t iov_total(const struct iovec *iov, int n)
{
	uint64_t t = 0;

	for (int i = 0; i < n; i++)
		t += iov[i].iov_len;
	return t;
}

int cow_readv(struct cow_img *img, const struct iovec *iov, int iovcnt, uint64_t off,
	      struct ut_err *err)
{
	uint64_t len = iov_total(iov, iovcnt);
	int ret = check_range(img, len, off, false, err);

	if (ret < 0)
		return ret;
	for (int i = 0; i < iovcnt; i++) {
		ret = read_at(img, iov[i].iov_base, iov[i].iov_len, off, err);
		if (ret < 0)
			return ret;
		off += iov[i].iov_len;
	}
	return 0;
}

int cow_writev(struct cow_img *img, const struct iovec *iov, int iovcnt, uint64_t off,
	       struct ut_err *err)
{
	uint64_t len = iov_total(iov, iovcnt), o = 0;
	uint8_t *b;
	int ret = check_range(img, len, off, true, err);

	if (ret < 0)
		return ret;
	if (iovcnt == 1)
		return write_at(img, iov[0].iov_base, len, off, err);
	b = malloc(len ? len : 1);
	if (!b)
		return ut_errf(err, -ENOMEM, "out of memory");
	for (int i = 0; i < iovcnt; i++) {
		memcpy(b + o, iov[i].iov_base, iov[i].iov_len);
		o += iov[i].iov_len;
	}
	ret = write_at(img, b, len, off, err);
	free(b);
	return ret;
}

/* Set the entries of the whole clusters of [off, off+len) to "reads as
 * zero" (@zero: the v3 zero flag, or with extended L2 all subclusters zero)
 * or to unallocated, releasing what they held; partial clusters at the ends
 * are not touched. */
static int set_range(struct cow_img *img, uint64_t len, uint64_t off, bool zero,
		     bool skip_unalloc, struct ut_err *err)
{
	uint64_t ne = zero && !img->extl2 ? QCOW_OFLAG_ZERO : 0;
	uint64_t nbmp = zero && img->extl2 ? QCOW_SC_ALL_ZERO : 0;
	uint64_t cs = img->cluster_size;
	uint64_t first = (off + cs - 1) >> img->cluster_bits;
	uint64_t end = (off + len) >> img->cluster_bits;
	int ret = 0;

	if (off + len == img->size)
		end = (off + len + cs - 1) >> img->cluster_bits;
	for (uint64_t c = first; c < end; c++) {
		uint64_t e, bmp;
		ret = get_entry(img, c, &e, &bmp, NULL, err);
		if (ret < 0)
			return ret;
		if (skip_unalloc && e == 0 && bmp == 0)
			continue;
		ret = set_entry(img, c, ne, nbmp, true, err);
		if (ret < 0)
			return ret;
		ret = maybe_writeback(img, err);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Zero [off, off+len) of one cluster: with extended L2 the whole
 * subclusters become zero subclusters (no data written) and only the
 * partial subclusters at the ends get explicit zeros from @z; otherwise
 * explicit zeros. */
static int zero_in_cluster(struct cow_img *img, const uint8_t *z, uint64_t len, uint64_t off,
			   struct ut_err *err)
{
	uint64_t sc = 1ull << img->sc_bits, vcl = off >> img->cluster_bits, e, bmp, in, sa, sb, m;
	int ret;

	if (!img->extl2)
		return write_at(img, z, len, off, err);
	in = off & (img->cluster_size - 1);
	sa = (in + sc - 1) & ~(sc - 1);
	sb = (in + len) & ~(sc - 1);
	if (off + len == img->size)   /* the disk ends inside this subcluster */
		sb = (in + len + sc - 1) & ~(sc - 1);
	if (sa >= sb)
		return write_at(img, z, len, off, err);
	ret = get_entry(img, vcl, &e, &bmp, NULL, err);
	if (ret < 0)
		return ret;
	if (e & QCOW_OFLAG_COMPRESSED)   /* no subclusters: copy the cluster */
		return write_at(img, z, len, off, err);
	if (sa > in && (ret = write_at(img, z, sa - in, off, err)) < 0)
		return ret;
	if (in + len > sb && (ret = write_at(img, z, in + len - sb, off - in + sb, err)) < 0)
		return ret;
	/* the writes above may have allocated the cluster: read it again */
	ret = get_entry(img, vcl, &e, &bmp, NULL, err);
	if (ret < 0)
		return ret;
	m = sc_mask((uint32_t)(sa >> img->sc_bits), (uint32_t)(sb >> img->sc_bits));
	return set_entry(img, vcl, e, (bmp & ~m) | (m << 32), false, err);
}

/* Zero [off, off+len), which covers no whole cluster (it may straddle a
 * cluster boundary), cluster by cluster. */
static int zero_partial(struct cow_img *img, const uint8_t *z, uint64_t len, uint64_t off,
			struct ut_err *err)
{
	uint64_t cs = img->cluster_size;
	int ret = 0;

	while (len && ret == 0) {
		uint64_t n = cs - (off & (cs - 1));
		if (n > len)
			n = len;
		ret = zero_in_cluster(img, z, n, off, err);
		off += n;
		len -= n;
	}
	return ret;
}

int cow_write_zeroes(struct cow_img *img, uint64_t len, uint64_t off, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, a, b;
	uint8_t *z = NULL;
	int ret = check_range(img, len, off, true, err);

	if (ret < 0 || !len)
		return ret;
	if (img->fmt == COW_FMT_RAW || (img->h.version < 3 && img->backing)) {
		uint64_t chunk = 1 << 20;
		z = calloc(1, chunk);
		if (!z)
			return ut_errf(err, -ENOMEM, "out of memory");
		while (len && ret == 0) {
			uint64_t n = len < chunk ? len : chunk;
			ret = write_at(img, z, n, off, err);
			off += n;
			len -= n;
		}
		goto out;
	}
	a = (off + cs - 1) & ~(cs - 1);
	b = (off + len) & ~(cs - 1);
	if (off + len == img->size)
		b = off + len;
	if (a >= b) {
		a = b = off + len;
	}
	z = calloc(2, cs);   /* a range with no whole cluster spans < 2 clusters */
	if (!z) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (a > off) {
		uint64_t n = (a < off + len ? a : off + len) - off;
		ret = zero_partial(img, z, n, off, err);
		if (ret < 0)
			goto out;
	}
	if (b > a) {
		ret = set_range(img, b - a, a, img->h.version >= 3, false, err);
		if (ret < 0)
			goto out;
	}
	if (off + len > b && b >= a && b > off) {
		ret = zero_partial(img, z, off + len - b, b, err);
		if (ret < 0)
			goto out;
	}
	ret = maybe_writeback(img, err);
out:
	free(z);
	return ret;
}

int cow_discard(struct cow_img *img, uint64_t len, uint64_t off, bool unmap_to_backing,
		struct ut_err *err)
{
	bool zero = false;
	int ret = check_range(img, len, off, true, err);

	if (ret < 0 || img->fmt == COW_FMT_RAW || !len)
		return ret;
	if (img->backing && !unmap_to_backing) {
		if (img->h.version < 3)
			return 0;   /* cannot express "reads as zero" in v2 */
		zero = true;
	}
	ret = set_range(img, len, off, zero, !zero, err);
	if (ret < 0)
		return ret;
	return maybe_writeback(img, err);
}

int cow_write_compressed(struct cow_img *img, const void *buf, uint64_t len, uint64_t off,
			 struct ut_err *err)
{
	uint64_t cs = img->cluster_size;
	const uint8_t *p = buf;
	int ret = check_range(img, len, off, true, err);

	if (ret < 0)
		return ret;
	if (img->fmt == COW_FMT_RAW)
		return write_at(img, buf, len, off, err);
	if ((off & (cs - 1)) || ((len & (cs - 1)) && off + len != img->size))
		return ut_errf(err, -EINVAL, "'%s': compressed writes must be whole clusters", img->path);
	while (len) {
		uint64_t n = len < cs ? len : cs, place, got, vcl = off >> img->cluster_bits;
		const uint8_t *src = p;
		long clen;

		if (n < cs) {
			memset(img->scratch, 0, cs);
			memcpy(img->scratch, p, n);
			src = img->scratch;
		}
		clen = cow_compress(img, src, cs, img->cbuf, cs - 1);
		if (clen < 0)
			return ut_errf(err, (int)clen, "'%s': compression failed", img->path);
		if (clen == 0) {
			ret = write_at(img, p, n, off, err);
			if (ret < 0)
				return ret;
		} else {
			if (img->comp_off && !(img->comp_off & (cs - 1)))
				img->comp_off = 0;
			if (!img->comp_off || (img->comp_off & (cs - 1)) + (uint64_t)clen > cs) {
				ret = cow_alloc_clusters(img, 1, &place, &got, err);
				if (ret < 0)
					return ret;
			} else {
				place = img->comp_off;
				ret = cow_rc_add(img, place >> img->cluster_bits, 1, NULL);
				if (ret == -ERANGE)   /* narrow refcounts: start a new cluster */
					ret = cow_alloc_clusters(img, 1, &place, &got, err);
				else if (ret < 0)
					ret = cow_rc_add(img, place >> img->cluster_bits, 1, err);
				if (ret < 0)
					return ret;
			}
			ret = cow_pwrite_full(img, img->cbuf, (size_t)clen, place, err);
			if (ret < 0)
				return ret;
			img->comp_off = place + (uint64_t)clen;
			uint64_t x = 62 - (img->cluster_bits - 8);
			uint64_t nadd = ((place + (uint64_t)clen - 1) >> 9) - (place >> 9);
			ret = set_entry(img, vcl, QCOW_OFLAG_COMPRESSED | (nadd << x) | place, 0, true, err);
			if (ret < 0)
				return ret;
			ret = maybe_writeback(img, err);
			if (ret < 0)
				return ret;
		}
		p += n;
		off += n;
		len -= n;
	}
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

int cow_block_status(struct cow_img *img, uint64_t off, uint64_t len, bool follow,
		     struct cow_extent *ext, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, e, e2, n, vcl, in, bmp;
	struct cow_cent *t;
	enum ctype ct;
	int ret;

	memset(ext, 0, sizeof(*ext));
	ext->off = off;
	ext->layer = img;
	if (off >= img->size) {
		ext->len = len;
		ext->st = COW_ST_ZERO;
		ext->depth = -1;
		return 0;
	}
	if (len > img->size - off)
		len = img->size - off;
	if (img->fmt == COW_FMT_RAW) {
		ext->len = len;
		ext->st = COW_ST_DATA;
		ext->host_off = off;
		return 0;
	}
	vcl = off >> img->cluster_bits;
	in = off & (cs - 1);
	ret = get_entry(img, vcl, &e, &bmp, &t, err);
	if (ret < 0)
		return ret;
	ct = classify(img, e, bmp);
	n = cs - in;
	if (ct == CT_MIXED)
		n = sc_run(img, bmp, in, &ct) - in;
	if (!t) {
		uint64_t tbl_end = ((vcl >> img->l2_bits) + 1) << (img->l2_bits + img->cluster_bits);
		n = tbl_end - off;
	} else if (n == cs - in) {
		for (uint64_t i = 1; n < len && ((vcl + i) & (img->l2_entries - 1)); i++) {
			uint64_t j = (vcl + i) & (img->l2_entries - 1);
			e2 = cow_l2_ent(img, t->buf, j);
			if (classify(img, e2, cow_l2_bmp(img, t->buf, j)) != ct)
				break;
			if (ct == CT_NORMAL && (e2 & QCOW_OFFSET_MASK) != (e & QCOW_OFFSET_MASK) + i * cs)
				break;
			n += cs;
		}
	}
	if (n > len)
		n = len;
	ext->len = n;
	switch (ct) {
	case CT_MIXED:   /* not reached: sc_run resolves it */
	case CT_UNALLOC: ext->st = COW_ST_UNALLOC; break;
	case CT_ZERO: ext->st = COW_ST_ZERO; break;
	case CT_COMPRESSED: ext->st = COW_ST_COMPRESSED; break;
	case CT_NORMAL:
		ext->st = COW_ST_DATA;
		ext->host_off = (e & QCOW_OFFSET_MASK) + in;
		break;
	}
	if (ct == CT_UNALLOC && follow) {
		if (!img->backing) {
			ext->depth = -1;
			ext->st = COW_ST_ZERO;
			return 0;
		}
		ret = cow_block_status(img->backing, off, n, true, ext, err);
		if (ret < 0)
			return ret;
		if (ext->depth >= 0)
			ext->depth++;
		return 0;
	}
	return 0;
}

int cow_layer_fd(const struct cow_img *layer)
{
	return layer->fd;
}

int cow_map_inplace(struct cow_img *img, uint64_t off, uint64_t len, uint64_t *host,
		    uint64_t *n, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, vcl, in, e, h, bmp;
	struct cow_cent *t;
	int ret;

	*n = 0;
	if (img->ro || img->fmt != COW_FMT_QCOW2) {
		if (!img->ro && img->fmt == COW_FMT_RAW) {
			*host = off;
			*n = len;
		}
		return 0;
	}
	vcl = off >> img->cluster_bits;
	in = off & (cs - 1);
	ret = get_entry(img, vcl, &e, &bmp, &t, err);
	if (ret < 0 || !t)
		return ret;
	if (!(e & QCOW_OFLAG_COPIED) || (e & QCOW_OFLAG_COMPRESSED))
		return 0;
	if (!img->extl2 ? classify(img, e, 0) != CT_NORMAL : !(e & QCOW_OFFSET_MASK))
		return 0;
	h = e & QCOW_OFFSET_MASK;
	ret = check_data_off(img, h, vcl, err);
	if (ret < 0)
		return ret;
	*host = h + in;
	*n = inplace_run(img, t, vcl, h, bmp, in, len);
	return 0;
}
