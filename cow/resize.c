/* cow/resize.c — growing an image's virtual size (cow.h I14).
 *
 * A raw file is extended with ftruncate (a hole). A qcow2 image whose L1
 * table is too small for the new size gets a new one, as QEMU's
 * qcow2_grow_l1_table does it:
 *
 *   cow_flush (every dirty table written, synced)
 *     --> new clusters (cow_alloc_contig), the whole new table written
 *     --> cow_flush (their refcounts and the table durable)
 *     --> the header's l1_size and l1_table_offset (12 bytes at offset 36,
 *         one write), fdatasync
 *     --> the old table's clusters queued for freeing (I4)
 *     --> with a backing file longer than the old size: zero clusters over
 *         the new area up to the backing file's end, cow_flush (a version
 *         2 image, which has no zero clusters, is refused before anything
 *         is written, as QEMU refuses it)
 *     --> the header's size (8 bytes at offset 24), fdatasync.
 *
 * A crash before the header write leaves the old table in use and the new
 * clusters leaked; after it, an image whose L1 covers more than its size
 * (allowed); the size is written last, when everything it needs is durable.
 */
#include "cow/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Give @img an L1 table of @need entries (more than it has). */
static int grow_l1(struct cow_img *img, uint64_t need, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, bytes = need * 8, n = (bytes + cs - 1) / cs;
	uint64_t old_off = img->h.l1_off, old_n = ((uint64_t)img->h.l1_size * 8 + cs - 1) / cs;
	uint64_t *l1 = NULL, off;
	uint8_t *raw = NULL, *dirty = NULL, hb[12];
	int ret;

	if (bytes > COW_MAX_L1_BYTES)
		return ut_errf(err, -EFBIG, "'%s': size too large for cluster size %llu", img->path,
			       (unsigned long long)cs);
	l1 = calloc(need, sizeof(*l1));
	dirty = calloc((need + 63) / 64 + 1, 1);
	raw = calloc(n, cs);
	if (!l1 || !dirty || !raw) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = cow_flush(img, err);
	if (ret < 0)
		goto out;
	memcpy(l1, img->l1, (size_t)img->h.l1_size * 8);
	for (uint64_t i = 0; i < img->h.l1_size; i++)
		cow_put64(raw + i * 8, l1[i]);
	ret = cow_alloc_contig(img, n, &off, err);
	if (ret == 0)
		ret = cow_check_new(img, off, n, err);
	if (ret == 0)
		ret = cow_pwrite_full(img, raw, n * cs, off, err);
	if (ret == 0)
		ret = cow_flush(img, err);   /* refcounts and table durable */
	if (ret < 0)
		goto out;
	cow_put32(hb, (uint32_t)need);
	cow_put64(hb + 4, off);
	ret = cow_pwrite_full(img, hb, sizeof(hb), 36, err);
	if (ret == 0)
		ret = cow_sync(img, err);
	if (ret < 0)
		goto out;
	free(img->l1);
	free(img->l1_dirty);
	img->l1 = l1;
	img->l1_dirty = dirty;
	l1 = NULL;
	dirty = NULL;
	img->h.l1_size = (uint32_t)need;
	img->h.l1_off = off;
	if (old_n)
		ret = cow_free_later(img, old_off, old_n * cs, err);
out:
	free(l1);
	free(dirty);
	free(raw);
	return ret;
}

int cow_grow(struct cow_img *img, uint64_t size, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, old = img->size, l2e, need, bsize;
	uint8_t sb[8];
	struct stat st;
	int ret;

	if (size == img->size)
		return 0;
	if (cow_data_writable(img, err) < 0)
		return -EROFS;
	if (size < img->size)
		return ut_errf(err, -ENOTSUP, "'%s': shrinking an image is not supported", img->path);
	if (img->fmt == COW_FMT_QCOW2 && img->h.nb_snapshots)
		return ut_errf(err, -ENOTSUP, "'%s': growing an image with internal snapshots is not supported",
			       img->path);
	if (size & 511)
		return ut_errf(err, -EINVAL, "'%s': size %llu is not a multiple of 512 bytes",
			       img->path, (unsigned long long)size);
	if (img->fmt == COW_FMT_RAW) {
		if (fstat(img->fd, &st) < 0)
			return ut_errf_sys(err, -errno, "unable to stat '%s'", img->path);
		if (!S_ISREG(st.st_mode))
			return ut_errf(err, -ENOSPC, "'%s' is not a regular file and cannot grow to %llu bytes",
				       img->path, (unsigned long long)size);
		if ((uint64_t)st.st_size < size && ftruncate(img->fd, (off_t)size) < 0)
			return ut_errf_sys(err, -errno, "unable to grow '%s' to %llu bytes", img->path,
					   (unsigned long long)size);
		img->size = size;
		return 0;
	}
	if (size > (1ull << 56))
		return ut_errf(err, -EFBIG, "'%s': size too large", img->path);
	/* the new area must not show the backing file's data, and a version 2
	 * image can hide it only by writing zeros (QEMU refuses this too) */
	bsize = img->backing ? cow_size(img->backing) : 0;
	if (bsize > old && img->h.version < 3)
		return ut_errf(err, -ENOTSUP, "'%s': a version 2 image cannot grow over the longer backing file '%s' (no zero clusters to hide its data); convert it to version 3 first",
			       img->path, cow_path(img->backing));
	l2e = (img->h.incompat & QCOW_INCOMPAT_EXTL2) ? cs / 16 : cs / 8;
	need = (size + cs * l2e - 1) / (cs * l2e);
	if (need > img->h.l1_size) {
		ret = grow_l1(img, need, err);
		if (ret < 0)
			return ret;
	}
	/* the new area reads as zeros, not as whatever a larger backing file
	 * holds there (as QEMU zeroes it): zero clusters made durable by the
	 * flush before the size that shows them */
	if (bsize > old) {   /* zero clusters up to where the backing file ends */
		uint64_t zend = bsize < size ? bsize : size;
		img->size = size;
		ret = cow_write_zeroes(img, zend - old, old, 0, err);
		img->size = old;
		if (ret < 0)
			return ret;
	}
	ret = cow_flush(img, err);
	if (ret < 0)
		return ret;
	cow_put64(sb, size);
	ret = cow_pwrite_full(img, sb, sizeof(sb), 24, err);
	if (ret == 0)
		ret = cow_sync(img, err);
	if (ret < 0)
		return ret;
	img->h.size = size;
	img->size = size;
	return 0;
}
