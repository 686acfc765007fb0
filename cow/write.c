/* cow/write.c — guest writes: allocating writes with copy-on-write of
 * partial clusters (standard and extended L2 entries), the step API the
 * asynchronous storage/ backend drives (cow_write_step / issue / commit),
 * in-place mapping, write-zeroes, discard and compressed writes. Data is
 * written before the L2 entries that point to it (cow.h I2). */
#include "cow/map.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Current guest content of cluster @vcl whose L2 entry is @e, in one read.
 * The caller overwrites [skip, skip + skip_len) of @buf afterwards, so a
 * zero cluster is zero-filled only outside that range. Standard L2 entries
 * only: with extended L2 entries partial writes go through step_sub. */
static int old_content(struct cow_img *img, uint64_t e, uint64_t vcl, uint8_t *buf,
		       uint64_t skip, uint64_t skip_len, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, off = vcl << img->cluster_bits;
	int ret;

	switch (cow_classify(img, e, 0)) {
	case COW_CT_UNALLOC:
		return cow_read_below(img, buf, cs, off, err);
	case COW_CT_ZERO:
		memset(buf, 0, skip);
		memset(buf + skip + skip_len, 0, cs - skip - skip_len);
		return 0;
	case COW_CT_COMPRESSED:
		ret = cow_load_compressed(img, e, err);
		if (ret == 0)
			memcpy(buf, img->dec_buf, cs);
		return ret;
	default:
		return cow_read_data(img, e, vcl, buf, cs, 0, err);
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
		enum cow_ctype ct;
		uint64_t end = cow_sc_run(img, bmp, in, &ct);
		if (ct != COW_CT_NORMAL)
			return 0;
		run = end - in;
		if (end < cs)
			return run < len ? run : len;
	}
	for (uint64_t i = 1; run < len && ((vcl + i) & (img->l2_entries - 1)); i++) {
		uint64_t j = (vcl + i) & (img->l2_entries - 1);
		e = cow_l2_ent(img, t->buf, j);
		if (cow_classify(img, e, cow_l2_bmp(img, t->buf, j)) != COW_CT_NORMAL ||
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
	bool head = (in & (sc - 1)) && cow_sc_type(bmp, a) != COW_CT_NORMAL;
	bool tail = (end & (sc - 1)) && cow_sc_type(bmp, b - 1) != COW_CT_NORMAL;
	uint8_t *fill = NULL;
	int ret;

	st->vcl = vcl;
	st->k = 1;
	if (!own && host) {
		/* compressed or shared: copy the guest view of the whole cluster */
		fill = step_fill(img, st, err);
		if (!fill)
			return -ENOMEM;
		ret = cow_read_at(img, fill, cs, goff, err);
		if (ret < 0)
			return ret;
		memcpy(fill + in, buf, n);
		ret = alloc_data(img, 1, false, &host, &got, err);
		if (ret < 0)
			return ret;
		st->nalloc = 1;
		st->host = st->cl_host = host;
		st->iov[0].iov_base = fill;
		st->iov[0].iov_len = cs;
		st->iovcnt = 1;
		st->kind = COW_STEP_CLUSTERS;
		return 0;
	}
	/* a new cluster, or the one it owns (cow_check_write_off: I8's
	 * overlap check of a write in place) */
	ret = own ? cow_check_write_off(img, host, vcl, err)
		  : alloc_data(img, 1, in || n < cs, &host, &got, err);
	if (ret < 0)
		return ret;
	/* only a new cluster is freed when the write fails (I17): the one
	 * it owns keeps its other subclusters */
	st->cl_host = host;
	st->nalloc = own ? 0 : 1;
	if ((head || tail) && !(fill = step_fill(img, st, err)))
		return -ENOMEM;
	if (head) {
		start = (uint64_t)a << img->sc_bits;
		if (cow_sc_type(bmp, a) == COW_CT_ZERO)
			memset(fill, 0, in - start);
		else if ((ret = cow_read_below(img, fill, in - start, goff + start, err)) < 0)
			return ret;
		st->iov[st->iovcnt].iov_base = fill;
		st->iov[st->iovcnt++].iov_len = in - start;
	}
	st->iov[st->iovcnt].iov_base = (void *)buf;
	st->iov[st->iovcnt++].iov_len = n;
	if (tail) {
		uint64_t tend = (uint64_t)b << img->sc_bits;
		if (cow_sc_type(bmp, b - 1) == COW_CT_ZERO)
			memset(fill + cs, 0, tend - end);
		else if ((ret = cow_read_below(img, fill + cs, tend - end, goff + end, err)) < 0)
			return ret;
		st->iov[st->iovcnt].iov_base = fill + cs;
		st->iov[st->iovcnt++].iov_len = tend - end;
	}
	st->host = host + start;
	st->cl_host = host;
	st->mask = cow_sc_mask(a, b);
	st->kind = COW_STEP_SUBCLUSTERS;
	return 0;
}

/* The part of an allocating step after its head: @len bytes of @buf that
 * start on a cluster boundary, whole clusters straight from @buf and a
 * partial last one (guest cluster @last_vcl) completed from its old content
 * in the second cluster of the step's fill buffer @fill (set whenever @len
 * ends inside a cluster). Appends to st->iov. 0 or -errno. */
static int step_body(struct cow_img *img, struct cow_wstep *st, uint64_t last_vcl,
		     const uint8_t *buf, uint64_t len, uint8_t *fill, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, tail = len % cs, mid = len - tail, e, ob;
	int ret;

	if (mid) {
		st->iov[st->iovcnt].iov_base = (void *)buf;
		st->iov[st->iovcnt++].iov_len = mid;
	}
	if (!tail)
		return 0;
	fill += cs;
	ret = cow_get_entry(img, last_vcl, &e, &ob, NULL, err);
	if (ret == 0)
		ret = old_content(img, e, last_vcl, fill, 0, tail, err);
	if (ret < 0)
		return ret;
	memcpy(fill, buf + mid, tail);
	st->iov[st->iovcnt].iov_base = fill;
	st->iov[st->iovcnt++].iov_len = cs;
	return 0;
}

/* Standard L2 entries (and whole clusters without a host cluster with
 * extended L2): allocate k clusters of this L2 table for the write at @off
 * (offset @in in its first cluster) and build the write: the head and tail
 * clusters completed from their old content, the middle from @buf (I10: a
 * single partial cluster beyond the end of the file over zeros writes only
 * the new bytes). With @reuse (standard L2: a zero cluster that kept its
 * host cluster, COPIED) that one cluster is written instead, whole, as
 * QEMU reuses a zero-allocated cluster. */
static int step_alloc(struct cow_img *img, struct cow_wstep *st, struct cow_cent *t, uint64_t vcl,
		      const uint8_t *buf, uint64_t len, uint64_t in, uint64_t reuse,
		      struct ut_err *err)
{
	uint64_t cs = img->cluster_size, n, e, e2, ub, ob, k, host, got, reach, host_skip = 0;
	bool have_old = false, sparse = false;
	uint8_t *fill = NULL;
	int ret;

	/* k clusters of this L2 table that all need a new cluster (with
	 * extended L2 only wholly written ones without a host cluster) */
	reach = img->extl2 ? (in + len) / cs : (in + len + cs - 1) / cs;
	k = 1;
	while (!reuse && k < reach && ((vcl + k) & (img->l2_entries - 1))) {
		uint64_t j = (vcl + k) & (img->l2_entries - 1);
		e2 = cow_l2_ent(img, t->buf, j);
		ub = cow_l2_bmp(img, t->buf, j);
		if (cow_classify(img, e2, ub) == COW_CT_NORMAL && (e2 & QCOW_OFLAG_COPIED))
			break;
		if ((e2 & QCOW_OFFSET_MASK) && (e2 & QCOW_OFLAG_COPIED) &&
		    !(e2 & QCOW_OFLAG_COMPRESSED))
			break;   /* one with a host cluster of its own to reuse */
		k++;
	}
	if (reuse) {
		host = reuse;
		got = 1;
	} else {
		/* a partial single cluster over zeros may be written only in
		 * part (I10): no preallocation for it (I12) */
		ret = alloc_data(img, k, in || len < cs, &host, &got, err);
		if (ret < 0)
			return ret;
		/* freed by cow_write_abort if the write fails (I17); a
		 * reused host cluster stays the zero cluster's */
		st->cl_host = host;
		st->nalloc = got;
	}
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
		ret = cow_get_entry(img, vcl, &e, &ob, NULL, err);
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
			ret = cow_get_entry(img, vcl, &e, &ob, NULL, err);
			if (ret == 0)
				ret = old_content(img, e, vcl, fill, in, hn, err);
			if (ret < 0)
				return ret;
		}
		memcpy(fill + in, buf, hn);
		st->iov[st->iovcnt].iov_base = fill;
		st->iov[st->iovcnt++].iov_len = cs;
		if (k > 1 || hn < n) {
			ret = step_body(img, st, vcl + k - 1, buf + hn, n - hn, fill, err);
			if (ret < 0)
				return ret;
		}
	} else {
		ret = step_body(img, st, vcl + k - 1, buf, n, fill, err);
		if (ret < 0)
			return ret;
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
	ret = cow_data_writable(img, err);
	if (ret < 0)
		return ret;
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
		ret = cow_table_entry(img, t, vcl, &e, &bmp, err);
	if (ret < 0)
		return ret;
	if (cow_classify(img, e, bmp) == COW_CT_NORMAL && (e & QCOW_OFLAG_COPIED)) {
		/* in place, extended over contiguous COPIED clusters */
		host = e & QCOW_OFFSET_MASK;
		ret = cow_check_write_off(img, host, vcl, err);
		if (ret < 0)
			return ret;
		st->len = inplace_run(img, t, vcl, host, bmp, in, len);
		st->host = host + in;
		st->iov[0].iov_base = (void *)buf;
		st->iov[0].iov_len = st->len;
		st->iovcnt = 1;
		return cow_bitmaps_dirty(img, off, st->len, err);
	}
	if (img->extl2 && (in || len < cs || ((e & QCOW_OFFSET_MASK) && !(e & QCOW_OFLAG_COMPRESSED) &&
						(e & QCOW_OFLAG_COPIED)))) {
		/* extended L2: a partial cluster, or one with a host cluster
		 * of its own: subcluster by subcluster */
		st->len = cs - in < len ? cs - in : len;
		ret = step_sub(img, st, vcl, e, bmp, buf, in, st->len, err);
	} else if (!img->extl2 && cow_classify(img, e, bmp) == COW_CT_ZERO &&
		   (e & QCOW_OFFSET_MASK) && (e & QCOW_OFLAG_COPIED)) {
		/* a zero cluster that kept its host cluster (write-zeroes
		 * without unmap): written there, the rest of it zeros */
		host = e & QCOW_OFFSET_MASK;
		ret = cow_check_write_off(img, host, vcl, err);
		if (ret == 0)
			ret = step_alloc(img, st, t, vcl, buf, len, in, host, err);
	} else {
		ret = step_alloc(img, st, t, vcl, buf, len, in, 0, err);
	}
	/* the range the step changes, in the tracked bitmaps before the
	 * caller writes it */
	if (ret == 0)
		ret = cow_bitmaps_dirty(img, off, st->len, err);
	if (ret < 0)
		cow_write_abort(img, st, NULL);   /* (a fill read failed: I17) */
	return ret;
}

int cow_write_commit(struct cow_img *img, struct cow_wstep *st, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, e, bmp, wlen = cow_wstep_bytes(st), i = 0;
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
		ret = cow_get_entry(img, st->vcl, &e, &bmp, NULL, err);
		if (ret == 0)
			ret = cow_set_entry(img, st->vcl, st->cl_host | QCOW_OFLAG_COPIED,
					(bmp | st->mask) & ~(st->mask << 32), false, err);
		break;
	case COW_STEP_CLUSTERS:
		for (i = 0; i < st->k && ret == 0; i++)
			ret = cow_set_entry(img, st->vcl + i, (st->cl_host + i * cs) | QCOW_OFLAG_COPIED,
					QCOW_SC_ALL_ALLOC, true, err);
		if (ret < 0)
			i--;   /* entries [0, i) point to their clusters */
		break;
	}
	if (ret < 0 && st->nalloc > i) {
		/* the clusters no entry points to are freed as after a failed
		 * data write (I17) */
		st->cl_host += i * cs;
		st->nalloc -= i;
		cow_write_abort(img, st, NULL);
		return ret;
	}
	cow_wstep_release(st);
	if (ret < 0)
		return ret;
	return cow_maybe_writeback(img, err);
}

int cow_write_issue(struct cow_img *img, struct cow_wstep *st, struct ut_err *err)
{
	return cow_pwritev_full(img, st->iov, st->iovcnt, st->host, err);
}

int cow_write_abort(struct cow_img *img, struct cow_wstep *st, struct ut_err *err)
{
	uint64_t n = st->nalloc;
	int ret = 0;

	st->nalloc = 0;   /* never twice: a second decrement would underflow */
	if (n)
		ret = cow_free_unlinked(img, st->cl_host, n, err);
	cow_wstep_release(st);
	return ret;
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
			/* nothing points to what it allocated: freed (I17) */
			cow_write_abort(img, &st, NULL);
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

int cow_write(struct cow_img *img, const void *buf, uint64_t len, uint64_t off,
	      struct ut_err *err)
{
	int ret = cow_check_range(img, len, off, true, err);

	return ret < 0 ? ret : write_at(img, buf, len, off, err);
}

int cow_writev(struct cow_img *img, const struct iovec *iov, int iovcnt, uint64_t off,
	       struct ut_err *err)
{
	uint64_t len = cow_iov_total(iov, iovcnt), o = 0;
	uint8_t *b;
	int ret = cow_check_range(img, len, off, true, err);

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
 * or to unallocated, releasing what they held, except that with @keep
 * (@zero only) a cluster that owns its host cluster (COPIED, not
 * compressed) keeps it; partial clusters at the ends are not touched. */
static int set_range(struct cow_img *img, uint64_t len, uint64_t off, bool zero,
		     bool skip_unalloc, bool keep, struct ut_err *err)
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
		ret = cow_get_entry(img, c, &e, &bmp, NULL, err);
		if (ret < 0)
			return ret;
		if (skip_unalloc && e == 0 && bmp == 0)
			continue;
		if (keep && zero && (e & QCOW_OFFSET_MASK) && (e & QCOW_OFLAG_COPIED) &&
		    !(e & QCOW_OFLAG_COMPRESSED))
			/* the same host cluster: cow_set_entry frees nothing */
			ret = cow_set_entry(img, c, (e & (QCOW_OFFSET_MASK | QCOW_OFLAG_COPIED)) | ne,
					    nbmp, true, err);
		else
			ret = cow_set_entry(img, c, ne, nbmp, true, err);
		if (ret < 0)
			return ret;
		ret = cow_maybe_writeback(img, err);
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
	ret = cow_get_entry(img, vcl, &e, &bmp, NULL, err);
	if (ret < 0)
		return ret;
	if (e & QCOW_OFLAG_COMPRESSED)   /* no subclusters: copy the cluster */
		return write_at(img, z, len, off, err);
	if (sa > in && (ret = write_at(img, z, sa - in, off, err)) < 0)
		return ret;
	if (in + len > sb && (ret = write_at(img, z, in + len - sb, off - in + sb, err)) < 0)
		return ret;
	/* the writes above may have allocated the cluster: read it again */
	ret = cow_get_entry(img, vcl, &e, &bmp, NULL, err);
	if (ret < 0)
		return ret;
	m = cow_sc_mask((uint32_t)(sa >> img->sc_bits), (uint32_t)(sb >> img->sc_bits));
	return cow_set_entry(img, vcl, e, (bmp & ~m) | (m << 32), false, err);
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

int cow_zero_fmode(bool unmap, unsigned step)
{
	const int punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
	const int zero = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

	switch (step) {
	case 0:
		return unmap ? punch : zero;
	case 1:
		return unmap ? zero : punch;
	case 2:
		return unmap ? -1 : FALLOC_FL_KEEP_SIZE;
	}
	return -1;
}

/* A raw layer's range zeroed by the file system, in cow_zero_fmode's
 * steps. -EOPNOTSUPP (@err not set) when neither mode is supported: the
 * caller writes zeros. */
static int raw_fzero(struct cow_img *img, uint64_t len, uint64_t off, unsigned flags,
		     struct ut_err *err)
{
	bool unmap = flags & COW_ZERO_MAY_UNMAP;
	int mode;

	if (fallocate(img->fd, cow_zero_fmode(unmap, 0), (off_t)off, (off_t)len) < 0) {
		if (errno != EOPNOTSUPP)
			goto fail;
		if (fallocate(img->fd, cow_zero_fmode(unmap, 1), (off_t)off, (off_t)len) < 0) {
			if (errno == EOPNOTSUPP)
				return -EOPNOTSUPP;
			goto fail;
		}
		mode = cow_zero_fmode(unmap, 2);
		if (mode >= 0 && fallocate(img->fd, mode, (off_t)off, (off_t)len) < 0 &&
		    errno != EOPNOTSUPP)
			goto fail;
	}
	img->unsynced = true;
	return 0;
fail:
	return ut_errf_sys(err, -errno, "'%s': zeroing %llu bytes at offset %llu failed", img->path,
			   (unsigned long long)len, (unsigned long long)off);
}

int cow_write_zeroes(struct cow_img *img, uint64_t len, uint64_t off, unsigned flags,
		     struct ut_err *err)
{
	uint64_t cs = img->cluster_size, a, b;
	uint8_t *z = NULL;
	int ret = cow_check_range(img, len, off, true, err);

	if (ret < 0 || !len)
		return ret;
	if (img->fmt == COW_FMT_RAW) {
		ret = raw_fzero(img, len, off, flags, err);
		if (ret != -EOPNOTSUPP)
			return ret;
		ret = 0;
	}
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
		/* with unmap the clusters freed are punched, as a discard's (I15) */
		img->discarding = flags & COW_ZERO_MAY_UNMAP;
		ret = set_range(img, b - a, a, img->h.version >= 3, false,
				!(flags & COW_ZERO_MAY_UNMAP), err);
		img->discarding = false;
		if (ret < 0)
			goto out;
	}
	if (off + len > b && b >= a && b > off) {
		ret = zero_partial(img, z, off + len - b, b, err);
		if (ret < 0)
			goto out;
	}
	ret = cow_maybe_writeback(img, err);
out:
	free(z);
	return ret;
}

int cow_discard(struct cow_img *img, uint64_t len, uint64_t off, bool unmap_to_backing,
		struct ut_err *err)
{
	bool zero = false;
	int ret = cow_check_range(img, len, off, true, err);

	if (ret < 0 || img->fmt == COW_FMT_RAW || !len)
		return ret;
	if (img->backing && !unmap_to_backing) {
		if (img->h.version < 3)
			return 0;   /* cannot express "reads as zero" in v2 */
		zero = true;
	}
	/* the host clusters a discard frees are punched when their free is
	 * applied (I15) */
	img->discarding = true;
	ret = set_range(img, len, off, zero, !zero, false, err);
	img->discarding = false;
	if (ret < 0)
		return ret;
	return cow_maybe_writeback(img, err);
}

/* Where @clen compressed bytes (0 < @clen < a cluster) go: right after the
 * last compressed cluster written since open (img->comp_off) while its host
 * cluster has room, continuing into the next host cluster when the one
 * allocated now is that one (the qcow2 spec lets compressed data cross host
 * cluster boundaries; QEMU packs them so), else at the start of a newly
 * allocated cluster. A reference is taken on every host cluster the bytes
 * touch (I1: in the cache, before the L2 entry): *@ncl (1 or 2) clusters
 * from the one holding *@place. 0 or -errno. */
static int comp_place(struct cow_img *img, uint64_t clen, uint64_t *place, uint64_t *ncl,
		      struct ut_err *err)
{
	uint64_t cs = img->cluster_size, co = img->comp_off, cur, nc, got;
	int ret;

	*ncl = 1;
	if (co & (cs - 1)) {
		cur = co >> img->cluster_bits;
		ret = cow_rc_add(img, cur, 1, NULL);
		if (ret == 0 && (co & (cs - 1)) + clen <= cs) {
			*place = co;
			return 0;
		}
		if (ret == 0) {
			ret = cow_alloc_clusters(img, 1, &nc, &got, err);
			if (ret == 0 && nc == (cur + 1) << img->cluster_bits) {
				*place = co;
				*ncl = 2;
				return 0;
			}
			/* not the next one (or none): the reference on the
			 * open cluster is given back; a failed give-back (its
			 * refcount block evicted and unreadable) leaks it */
			cow_rc_add(img, cur, -1, NULL);
			if (ret == 0)
				*place = nc;
			return ret;
		}
		/* a full narrow refcount (-ERANGE): a new cluster; any other
		 * failure is told */
		if (ret != -ERANGE)
			return cow_rc_add(img, cur, 1, err);
	}
	ret = cow_alloc_clusters(img, 1, &nc, &got, err);
	if (ret == 0)
		*place = nc;
	return ret;
}

/* Store the @clen compressed bytes at @cdata as guest cluster @vcl. */
static int put_compressed(struct cow_img *img, const uint8_t *cdata, uint64_t clen, uint64_t vcl,
			  struct ut_err *err)
{
	uint64_t place = 0, ncl = 0, x = 62 - (img->cluster_bits - 8), nadd;
	int ret = comp_place(img, clen, &place, &ncl, err);

	if (ret < 0)
		return ret;
	ret = cow_pwrite_full(img, cdata, (size_t)clen, place, err);
	if (ret == 0) {
		/* sectors beyond the one holding the first byte */
		nadd = ((place + clen - 1) >> 9) - (place >> 9);
		img->comp_off = place + clen;
		ret = cow_set_entry(img, vcl, QCOW_OFLAG_COMPRESSED | (nadd << x) | place, 0, true, err);
	}
	if (ret < 0) {
		/* no entry holds the references just taken: dropped at once
		 * (I17; a cluster shared with earlier compressed clusters
		 * keeps theirs) */
		cow_free_unlinked(img, place & ~(img->cluster_size - 1), ncl, NULL);
		return ret;
	}
	return cow_maybe_writeback(img, err);
}

/* Clusters compressed per batch: one with a single thread; with more, 8 MiB
 * (at least two per thread, at most COMP_BATCH_MAX), the output buffer
 * (img->zout) a cluster each. */
#define COMP_BATCH_MAX 256

int cow_write_compressed(struct cow_img *img, const void *buf, uint64_t len, uint64_t off,
			 struct ut_err *err)
{
	uint64_t cs = img->cluster_size, batch = 1;
	const uint8_t *p = buf;
	long lens[COMP_BATCH_MAX];
	int ret = cow_check_range(img, len, off, true, err);

	if (ret < 0)
		return ret;
	if (img->fmt == COW_FMT_RAW)
		return write_at(img, buf, len, off, err);
	if ((off & (cs - 1)) || ((len & (cs - 1)) && off + len != img->size))
		return ut_errf(err, -EINVAL, "'%s': compressed writes must be whole clusters", img->path);
	if (img->comp_threads > 1) {
		batch = (8u << 20) / cs;
		if (batch < 2 * (uint64_t)img->comp_threads)
			batch = 2 * (uint64_t)img->comp_threads;
		if (batch > COMP_BATCH_MAX)
			batch = COMP_BATCH_MAX;
	}
	while (len) {
		uint64_t ncl = (len + cs - 1) / cs, blen, last;

		if (ncl > batch)
			ncl = batch;
		blen = ncl * cs < len ? ncl * cs : len;
		last = blen - (ncl - 1) * cs;
		ret = cow_compress_clusters(img, p, ncl, last, lens);
		if (ret < 0)
			return ut_errf(err, ret, "'%s': compression failed", img->path);
		for (uint64_t i = 0; i < ncl; i++) {
			uint64_t n = i + 1 < ncl ? cs : last;

			if (lens[i] == 0)   /* does not shrink: stored plainly */
				ret = write_at(img, p + i * cs, n, off + i * cs, err);
			else
				ret = put_compressed(img, img->zout + i * cs, (uint64_t)lens[i],
						     (off >> img->cluster_bits) + i, err);
			if (ret < 0)
				return ret;
		}
		p += blen;
		off += blen;
		len -= blen;
	}
	return 0;
}

int cow_map_inplace(struct cow_img *img, uint64_t off, uint64_t len, uint64_t *host,
		    uint64_t *n, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, vcl, in, e, h, bmp;
	struct cow_cent *t;
	int ret;

	*n = 0;
	/* header-only, or bitmaps kept (cow_data_writable): no run, so
	 * storage/ goes through cow_write_step, which refuses the write */
	if (!img->ro && cow_data_writable(img, NULL) < 0)
		return 0;
	if (img->ro || img->fmt != COW_FMT_QCOW2) {
		if (!img->ro && img->fmt == COW_FMT_RAW) {
			*host = off;
			*n = len;
		}
		return 0;
	}
	vcl = off >> img->cluster_bits;
	in = off & (cs - 1);
	ret = cow_get_entry(img, vcl, &e, &bmp, &t, err);
	if (ret < 0 || !t)
		return ret;
	/* the table and the cluster both the active L1's own (I6, I16) */
	if (!(e & QCOW_OFLAG_COPIED) || (e & QCOW_OFLAG_COMPRESSED) ||
	    !(img->l1[vcl >> img->l2_bits] & QCOW_OFLAG_COPIED))
		return 0;
	if (!img->extl2 ? cow_classify(img, e, 0) != COW_CT_NORMAL : !(e & QCOW_OFFSET_MASK))
		return 0;
	h = e & QCOW_OFFSET_MASK;
	ret = cow_check_write_off(img, h, vcl, err);
	if (ret < 0)
		return ret;
	*host = h + in;
	*n = inplace_run(img, t, vcl, h, bmp, in, len);
	/* storage/ writes the run itself: in the tracked bitmaps now */
	ret = cow_bitmaps_dirty(img, off, *n, err);
	if (ret < 0)
		*n = 0;
	return ret;
}
