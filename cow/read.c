/* cow/read.c — guest reads: through the L2 map, zero and compressed
 * clusters, extended-L2 subcluster runs, and the backing chain below
 * (reads of unallocated clusters fall through, zeros past a backing
 * layer's end). */
#include "cow/map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Decompress the cluster described by compressed L2 entry @e into img->dec_buf. */
int cow_load_compressed(struct cow_img *img, uint64_t e, struct ut_err *err)
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

/* Read from the layer below @img (zeros where there is none / beyond its end). */
int cow_read_below(struct cow_img *img, uint8_t *buf, uint64_t len, uint64_t off,
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
	return cow_read_at(b, buf, n, off, err);
}

/* Read @n bytes at offset @in of this layer's data cluster for guest
 * cluster @vcl (entry @e), after validating its host offset (I8). */
int cow_read_data(struct cow_img *img, uint64_t e, uint64_t vcl, uint8_t *buf, uint64_t n,
		  uint64_t in, struct ut_err *err)
{
	uint64_t host = e & QCOW_OFFSET_MASK;
	int ret = cow_check_data_off(img, host, vcl, err);

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
	enum cow_ctype ct;
	int ret;

	if (!img->backing)
		return 0;
	for (p = in; p < end; p = q) {
		q = cow_sc_run(img, bmp, p, &ct);
		if (q > end)
			q = end;
		if (ct == COW_CT_UNALLOC) {
			if (!below++)
				s0 = p;
			s1 = q;
		}
	}
	if (below < 2)
		return 0;
	for (p = s0; p < s1; p = q) {
		q = cow_sc_run(img, bmp, p, &ct);
		if (ct != COW_CT_UNALLOC)
			over += q - p;
	}
	if (2 * over > s1 - s0)
		return 0;
	ret = cow_read_below(img, buf + (s0 - in), s1 - s0, base + s0, err);
	for (p = in; p < end && ret == 0; p = q) {
		q = cow_sc_run(img, bmp, p, &ct);
		if (q > end)
			q = end;
		if (ct == COW_CT_ZERO)
			memset(buf + (p - in), 0, q - p);
		else if (ct == COW_CT_NORMAL)
			ret = cow_read_data(img, e, vcl, buf + (p - in), q - p, p, err);
	}
	return ret < 0 ? ret : 1;
}

int cow_read_at(struct cow_img *img, uint8_t *buf, uint64_t len, uint64_t off,
		struct ut_err *err)
{
	uint64_t cs = img->cluster_size;
	int ret = 0;

	if (img->fmt == COW_FMT_RAW)
		return cow_pread_full(img, buf, len, off, true, err);
	while (len) {
		uint64_t vcl = off >> img->cluster_bits, in = off & (cs - 1), n = cs - in, e, e2, bmp;
		struct cow_cent *t;
		enum cow_ctype ct;

		if (n > len)
			n = len;
		ret = cow_get_entry(img, vcl, &e, &bmp, &t, err);
		if (ret < 0)
			return ret;
		ct = cow_classify(img, e, bmp);
		if (ct == COW_CT_MIXED) {
			uint64_t end;

			ret = read_mixed_span(img, buf, vcl, e, bmp, in, in + n, err);
			if (ret < 0)
				return ret;
			if (ret)
				goto next;
			/* extended L2: one run of equal subclusters in this cluster */
			end = cow_sc_run(img, bmp, in, &ct);
			if (end - in < n)
				n = end - in;
		}
		/* extend the run within this L2 table */
		for (uint64_t i = 1; n < len && n == cs - in + (i - 1) * cs && t &&
				     ((vcl + i) & (img->l2_entries - 1)); i++) {
			uint64_t j = (vcl + i) & (img->l2_entries - 1);
			e2 = cow_l2_ent(img, t->buf, j);
			if (cow_classify(img, e2, cow_l2_bmp(img, t->buf, j)) != ct || ct == COW_CT_COMPRESSED)
				break;
			if (ct == COW_CT_NORMAL && (e2 & QCOW_OFFSET_MASK) != (e & QCOW_OFFSET_MASK) + i * cs)
				break;
			n = (n + cs > len) ? len : n + cs;
		}
		if (!t && n < len) {
			/* no L2 table: the whole table's range is unallocated */
			uint64_t tbl_end = ((vcl >> img->l2_bits) + 1) << (img->l2_bits + img->cluster_bits);
			n = (tbl_end - off < len) ? tbl_end - off : len;
		}
		switch (ct) {
		case COW_CT_MIXED:   /* not reached: sc_run resolved it */
		case COW_CT_UNALLOC:
			ret = cow_read_below(img, buf, n, off, err);
			break;
		case COW_CT_ZERO:
			memset(buf, 0, n);
			break;
		case COW_CT_NORMAL:
			ret = cow_read_data(img, e, vcl, buf, n, in, err);
			break;
		case COW_CT_COMPRESSED:
			ret = cow_load_compressed(img, e, err);
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

int cow_check_range(struct cow_img *img, uint64_t len, uint64_t off, bool write,
		    struct ut_err *err)
{
	int ret = write ? cow_data_writable(img, err) : 0;

	if (ret < 0)
		return ret;
	if (off > img->size || len > img->size - off)
		return ut_errf(err, -EINVAL, "'%s': request [%llu, +%llu) beyond the virtual size %llu",
			       img->path, (unsigned long long)off, (unsigned long long)len,
			       (unsigned long long)img->size);
	/* a change of guest data: recorded in the tracked bitmaps first */
	return write ? cow_bitmaps_dirty(img, off, len, err) : 0;
}

int cow_read(struct cow_img *img, void *buf, uint64_t len, uint64_t off, struct ut_err *err)
{
	int ret = cow_check_range(img, len, off, false, err);

	return ret < 0 ? ret : cow_read_at(img, buf, len, off, err);
}


int cow_readv(struct cow_img *img, const struct iovec *iov, int iovcnt, uint64_t off,
	      struct ut_err *err)
{
	uint64_t len = cow_iov_total(iov, iovcnt);
	int ret = cow_check_range(img, len, off, false, err);

	if (ret < 0)
		return ret;
	for (int i = 0; i < iovcnt; i++) {
		ret = cow_read_at(img, iov[i].iov_base, iov[i].iov_len, off, err);
		if (ret < 0)
			return ret;
		off += iov[i].iov_len;
	}
	return 0;
}

