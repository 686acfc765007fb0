/* cow/resize.c — changing an image's virtual size (cow.h I14).
 *
 * A raw file is extended with ftruncate (a hole), or cut short with it
 * (cow_shrink). A qcow2 image whose L1 table is too small for the new size
 * gets a new one, as QEMU's qcow2_grow_l1_table does it:
 *
 *   cow_flush (every dirty table written, synced)
 *     --> new clusters (cow_alloc_contig), the whole new table written
 *     --> cow_flush (their refcounts and the table durable)
 *     --> the header's l1_size and l1_table_offset (12 bytes at offset 36,
 *         one write), fdatasync
 *     --> the old table's clusters queued for freeing (I4)
 *     --> every cluster of the active L1 from the end of the old last
 *         cluster to the new size released (cow_discard: entries set to 0,
 *         an L2 table shared with a snapshot copied first, a shared
 *         cluster losing only the active reference, I16). Normally there
 *         is nothing there; after QEMU's loadvm or `qemu-img snapshot -a`
 *         the active L1 holds the snapshot's VM state (QEMU keeps it in
 *         the L1 entries past the end of the disk, qcow2_vm_state_offset),
 *         which QEMU 7.2's qcow2_co_truncate would expose as disk content;
 *         here the new area reads zeros
 *     --> with a backing file longer than the old size: zero clusters over
 *         the new area up to the backing file's end (a version 2 image,
 *         which has no zero clusters, is refused before anything is
 *         written, as QEMU refuses it)
 *     --> with persistent bitmaps (COW_O_KEEP_BITMAPS): their tables
 *         for the new size and a new directory, durable (bitmaps.c
 *         cow_bitmaps_resize_prepare; marked in use before all of this,
 *         _begin)
 *     --> cow_flush
 *     --> the header's size (8 bytes at offset 24), fdatasync
 *     --> the bitmaps' directory switched (_commit).
 * A failure before the size write leaves the bitmaps consistent again
 * (_abort: flags cleared, nothing inside the old size changed); one after
 * it, or a crash, leaves them in use (bitmaps.c says what each step
 * leaves).
 *
 * A grow with preallocation (prealloc_area) that fails before the size
 * write releases what it placed past the old end again (undo_area).
 *
 * A failure before the header write frees the new clusters again (nothing
 * names them; I17). A crash before the header write leaves the old table
 * in use and the new clusters leaked, and at worst part of the area past
 * the old end released (nothing reads it); after it, an image whose L1
 * covers more than its size (allowed); the size is written last, when
 * everything it needs is durable.
 *
 * Internal snapshots (version 3, as QEMU 7.2 allows): each snapshot keeps
 * its own L1 table and records its own disk size in its extra data, so
 * neither changes; applying one later (qemu-img snapshot -a) gives its size
 * back. A version 2 image with snapshots, or a snapshot whose entry does not
 * record its disk size, is refused.
 *
 * Shrinking a qcow2 image (cow_shrink), as QEMU 7.2's qcow2_co_truncate
 * does it:
 *   the clusters past the new end (from the end of the cluster that holds
 *   the new last byte to the end of what the L1 table covers: a VM state
 *   past the old end too) released from the active L1 (cow_discard, I16)
 *     --> cow_flush
 *     --> the L1 entries past the new last one set to 0 (their L2 tables
 *         are empty now: the old size reads the same either way),
 *         cow_flush writes and syncs them, then frees the tables (I4);
 *         the L1 table keeps its size, as QEMU's
 *     --> persistent bitmaps: tables for the new size and a new
 *         directory, durable (bitmaps.c _prepare; after the frees, so
 *         their data can move down into freed clusters)
 *     --> the size (8 bytes at offset 24, after a cow_flush), fdatasync
 *     --> the bitmaps' directory switched (_commit)
 *     --> cow_flush; refcount blocks that count only themselves leave the
 *         refcount table (entries set to 0, fdatasync), as QEMU's
 *         qcow2_shrink_reftable
 *     --> the file cut after the last cluster whose refcount is not 0
 *         (qcow2_get_last_cluster), fdatasync.
 * A crash leaves the old size with its tail perhaps partly released
 * (reading zeros or the backing file; the data the shrink drops anyway),
 * or the new size, at worst with leaked clusters. A failure returned
 * before the size write leaves the bitmaps consistent with the old size:
 * the tail, perhaps released without their knowing, gets every bit set
 * (_abort); after it they stay in use until the switch. The cut comes last: by
 * then every refcount is on disk and synced, and nothing on disk or in
 * memory references a cluster past the last one with a refcount, so the
 * cut removes only free clusters (and the size set ahead of the data and
 * the blocks reserved past the end, prealloc.c I12, whose bookkeeping is
 * reset: the trim at close finds nothing more to cut).
 */
#include "cow/map.h"
#include "cow/qcow2.h"

#include <errno.h>
#include <stdio.h>
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
	/* (over metadata with a damaged refcount: -EUCLEAN, marked corrupt,
	 * the clusters keep the count they got) */
	ret = cow_alloc_contig(img, n, &off, err);
	if (ret < 0)
		goto out;
	ret = cow_pwrite_full(img, raw, n * cs, off, err);
	if (ret == 0)
		ret = cow_flush(img, err);   /* refcounts and table durable */
	if (ret < 0) {
		/* nothing names the new table (the header still has the
		 * old one): its clusters are free again, covered by
		 * file_size for what the failed write left (I17); not
		 * once the image is marked corrupt (-EUCLEAN) */
		if (ret != -EUCLEAN)
			cow_free_unlinked(img, off, n, NULL);
		goto out;
	}
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

/* Does every internal snapshot of @img record its disk size (the 8 bytes
 * at offset 8 of its extra data, which version 3 requires)? 0, or an
 * error: one that does not would take the new size as its own. */
static int snapshots_sized(struct cow_img *img, struct ut_err *err)
{
	uint64_t off = img->h.snap_off, len;
	uint8_t h[40];
	int ret;

	for (uint32_t i = 0; i < img->h.nb_snapshots; i++) {
		ret = cow_snapshot_entry(img, i, off, h, &len, err);
		if (ret < 0)
			return ret;
		if (cow_be32(h + 36) < 16)
			return ut_errf(err, -ENOTSUP, "'%s': snapshot %u does not record its disk size; resizing the image would change it",
				       img->path, i);
		off = (off + len + 7) & ~7ull;
	}
	return 0;
}

/* Release, in the active L1 table, every cluster from the end of the
 * cluster holding byte @from - 1 to @to, a disk of @to bytes for the
 * while (a partial last cluster counts whole): only L1 entries that point
 * to an L2 table are visited. Growing releases the new area (see the top
 * of the file), shrinking the cut-off part. */
static int release_range(struct cow_img *img, uint64_t from, uint64_t to, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, cov = cs * img->l2_entries, keep = img->size;
	int ret = 0;

	from = (from + cs - 1) & ~(cs - 1);
	img->size = to;   /* cow_discard's range check */
	for (uint64_t i = from / cov; ret == 0 && i < img->h.l1_size && i * cov < to; i++) {
		uint64_t a = i * cov > from ? i * cov : from;
		uint64_t b = (i + 1) * cov < to ? (i + 1) * cov : to;

		if ((img->l1[i] & QCOW_OFFSET_MASK) && a < b)
			/* to the backing file: no zero flags, which v2 lacks;
			 * where the backing file is longer they come after */
			ret = cow_discard(img, b - a, a, true, err);
	}
	img->size = keep;
	return ret;
}

/* May @img (qcow2) change its size with its internal snapshots? 0, or
 * an error as QEMU 7.2 gives it. */
static int snapshots_allow_resize(struct cow_img *img, struct ut_err *err)
{
	if (!img->h.nb_snapshots)
		return 0;
	/* QEMU 7.2 refuses it too: v2 does not require the sizes */
	if (img->h.version < 3)
		return ut_errf(err, -ENOTSUP, "'%s': a version 2 image with internal snapshots cannot be resized (their disk sizes are not recorded)",
			       img->path);
	return snapshots_sized(img, err);
}

/* Write @size into the header (8 bytes at offset 24), after everything
 * it depends on is durable (cow_flush), and sync. *@wrote: the write was
 * made (the file may hold the new size even when the sync failed). */
static int set_size(struct cow_img *img, uint64_t size, bool *wrote, struct ut_err *err)
{
	uint8_t sb[8];
	int ret = cow_flush(img, err);

	*wrote = false;
	if (ret < 0)
		return ret;
	cow_put64(sb, size);
	ret = cow_pwrite_full(img, sb, sizeof(sb), 24, err);
	*wrote = ret == 0;
	if (ret == 0)
		ret = cow_sync(img, err);
	if (ret < 0)
		return ret;
	img->h.size = size;
	img->size = size;
	return 0;
}

/* As QEMU's qcow2_shrink_l1_table: the L1 entries from @need on (past
 * the last one the new size uses) point to L2 tables that release_range
 * emptied; they are set to 0 (written and synced by cow_flush, I3) and
 * only then are the tables' clusters freed (I4). A table that is not
 * empty (it cannot be after the release; a safety net) stays. */
static int shrink_l1(struct cow_img *img, uint64_t need, struct ut_err *err)
{
	uint64_t cs = img->cluster_size;
	bool any = false;
	int ret = 0;

	for (uint64_t i = need; ret == 0 && i < img->h.l1_size; i++) {
		uint64_t off = img->l1[i] & QCOW_OFFSET_MASK;
		struct cow_cent *e;
		bool empty = true;

		if (!off)
			continue;
		ret = cow_l2_get(img, i, false, &e, err);
		if (ret < 0 || !e)
			break;
		for (uint64_t k = 0; k < cs / 8 && empty; k++)
			empty = !cow_be64(e->buf + k * 8);
		if (!empty || e->dirty)
			continue;
		cow_cache_remove(&img->l2c, e);
		img->l1[i] = 0;
		img->l1_dirty[i / 64] = 1;
		img->any_l1_dirty = true;
		ret = cow_free_later(img, off, cs, err);
		any = true;
	}
	return ret == 0 && any ? cow_flush(img, err) : ret;
}

/* Refcount table entry @j out of the table when its block is clean and
 * counts nothing but itself (lying in the range it describes), or, with
 * @foreign, nothing at all (lying where another block counts it, as
 * place_blocks puts them before a run, I9): its entry set to 0 on disk
 * (the caller syncs) and in memory, the block out of the cache, free_hint
 * lowered, and a foreign block's cluster queued for freeing (I4: applied
 * by a cow_flush after the caller's sync). *dropped: it was. 0 or -errno
 * with @err. */
static int drop_block(struct cow_img *img, uint64_t j, bool foreign, bool *dropped, struct ut_err *err)
{
	uint64_t epb = img->rb_entries, zero = 0, off = img->rt[j] & QCOW_RT_OFFSET_MASK;
	uint64_t c = off >> img->cluster_bits;
	uint32_t order = img->h.refcount_order;
	bool self = c / epb == j, empty = true;
	struct cow_cent *e;
	int ret;

	*dropped = false;
	if (!off || (!self && !foreign))
		return 0;
	ret = cow_rb_load(img, j, &e, err);
	if (ret < 0 || !e || e->dirty)
		return ret;
	for (uint64_t k = 0; k < epb && empty; k++)
		empty = cow_rc_read_entry(e->buf, order, k) == (self && k == c % epb ? 1 : 0);
	if (!empty)
		return 0;
	ret = cow_pwrite_full(img, &zero, 8, img->h.rt_off + j * 8, err);
	if (ret < 0)
		return ret;
	cow_cache_remove(&img->rbc, e);
	img->rt[j] = 0;
	if (c < img->free_hint)
		img->free_hint = c;
	*dropped = true;
	return self ? 0 : cow_free_later(img, off, img->cluster_size, err);
}

/* As QEMU's qcow2_shrink_reftable: a refcount block that lies in the
 * range it describes and counts nothing but itself (refcount 1) leaves the
 * refcount table (its entry set to 0 on disk and synced; its cluster then
 * has no refcount, i.e. 0, and the file can end before it). Called after a
 * cow_flush (every block clean, no table entry queued). */
static int drop_empty_blocks(struct cow_img *img, struct ut_err *err)
{
	bool any = false, dropped;
	int ret;

	for (uint64_t j = 0; j < img->rt_entries; j++) {
		ret = drop_block(img, j, false, &dropped, err);
		if (ret < 0)
			return ret;
		any |= dropped;
	}
	img->free_from = img->free_to = 0;
	return any ? cow_sync(img, err) : 0;
}

/* For undo_area, after a cow_flush: every refcount block from table entry
 * @j0 on that counts nothing, or only itself (as drop_empty_blocks), leaves
 * the refcount table, also one that another block counts (drop_block with
 * @foreign): its table entry is set to 0 on disk and synced before its own
 * refcount is decremented (queued, I4, and applied by the cow_flush after
 * the sync), which may leave the block that counted it empty in turn:
 * repeated until a pass drops nothing. A crash leaves a block out of the
 * table whose refcount is still 1: a leak. */
static int drop_free_blocks(struct cow_img *img, uint64_t j0, struct ut_err *err)
{
	bool any = true, dropped;
	int ret = 0;

	while (ret == 0 && any) {
		any = false;
		for (uint64_t j = j0; ret == 0 && j < img->rt_entries; j++) {
			ret = drop_block(img, j, true, &dropped, err);
			any |= dropped;
		}
		img->free_from = img->free_to = 0;
		if (ret == 0 && any)
			ret = cow_sync(img, err);
		if (ret == 0 && any)
			ret = cow_flush(img, err);
	}
	return ret;
}

/* As QEMU after a shrink (qcow2_get_last_cluster): cut the file just
 * after the last cluster whose refcount is not 0, once everything is
 * durable (the caller's cow_flush: no reference, on disk or in memory, to
 * a cluster past that one), then sync. The size kept ahead of the data
 * and the blocks reserved past the end (prealloc.c, I12) go with the cut:
 * the trim at close has nothing more to cut. */
static int cut_file(struct cow_img *img, struct ut_err *err)
{
	uint64_t epb = img->rb_entries, last = 0, end;
	uint32_t order = img->h.refcount_order;
	bool found = false;
	struct stat st;
	int ret;

	if (fstat(img->fd, &st) < 0)
		return ut_errf_sys(err, -errno, "unable to stat '%s'", img->path);
	if (!S_ISREG(st.st_mode))
		return 0;
	end = ((uint64_t)st.st_size + img->cluster_size - 1) >> img->cluster_bits;
	if (img->end_cluster > end)
		end = img->end_cluster;
	for (uint64_t j = end ? (end - 1) / epb + 1 : 0; j-- > 0 && !found;) {
		struct cow_cent *e;

		ret = cow_rb_load(img, j, &e, err);
		if (ret < 0)
			return ret;
		if (!e)
			continue;
		for (uint64_t k = epb; k-- > 0;) {
			if (j * epb + k < end && cow_rc_read_entry(e->buf, order, k)) {
				last = j * epb + k;
				found = true;
				break;
			}
		}
	}
	if (!found)
		return cow_mark_corrupt(img, err, "no cluster has a refcount");
	end = (last + 1) << img->cluster_bits;
	if (end >= (uint64_t)st.st_size)
		return 0;
	if (ftruncate(img->fd, (off_t)end) < 0)
		return ut_errf_sys(err, -errno, "unable to cut '%s' to %llu bytes", img->path,
				   (unsigned long long)end);
	ret = cow_sync(img, err);
	if (ret < 0)
		return ret;
	img->file_size = end;
	img->end_cluster = last + 1;
	if (img->free_hint > img->end_cluster)
		img->free_hint = img->end_cluster;
	img->free_from = img->free_to = 0;
	img->size_end = 0;
	img->prealloc_end = 0;
	return 0;
}

/* A resize failed after cow_bitmaps_resize_begin (@wrote: its size write
 * was made; @changed_from: see cow_bitmaps_resize_abort): the bitmaps made
 * consistent again where they can be; where they cannot, @err says so
 * (the next resize refuses a bitmap in use). */
static void bitmaps_abort(struct cow_img *img, bool wrote, uint64_t changed_from, struct ut_err *err)
{
	if (cow_bitmaps_resize_abort(img, !wrote, changed_from, NULL) > 0)
		ut_err_prefix(err, "'%s': its persistent bitmaps stay marked in use ('qemu-img bitmap --remove' removes them)",
			      img->path);
}

/* Can the rest of the cluster holding byte @old - 1 (past @old) be
 * written in place: a host cluster of its own (COPIED, not compressed),
 * neither a zero cluster nor (extended L2) an unallocated or zero
 * subcluster from @old on? Then it reads its host cluster, never the
 * backing file, and is left as it is (as QEMU leaves it); on error, no. */
static bool tail_in_place(struct cow_img *img, uint64_t old)
{
	uint64_t e, bmp, sc = (old & (img->cluster_size - 1)) / (img->cluster_size / 32);
	uint64_t need = (0xffffffffull << sc) & 0xffffffffull;

	if (cow_get_entry(img, (old - 1) >> img->cluster_bits, &e, &bmp, NULL, NULL) < 0)
		return false;
	if (!(e & QCOW_OFLAG_COPIED) || !(e & QCOW_OFFSET_MASK) || (e & QCOW_OFLAG_COMPRESSED))
		return false;
	if (!img->extl2)
		return !(e & QCOW_OFLAG_ZERO);
	return (bmp & need) == need && !(bmp & (need << 32));
}

/* Clusters per allocation of prealloc_area (64 GiB of 64 KiB clusters):
 * well inside the scan of free_run (refcount.c, 4 Mi clusters), which a
 * run of its length must fit. */
#define PREALLOC_RUN (1ull << 20)

/* Preallocation of the new area of a qcow2 image growing from @old to
 * @size bytes (@bsize: the backing file's size, 0 without one), after
 * release_range, as QEMU 7.2's qcow2_co_truncate does it:
 *   the partial cluster at the old end (if any), unless it has a host
 *   cluster of its own already (tail_in_place), written with zeros from
 *   @old on (cow_write: a host cluster of its own; with extended L2 the
 *   subclusters from the one holding @old on, as QEMU's explicit zeros
 *   for metadata), for falloc and full whole: its head as it reads (with
 *   extended L2 every subcluster allocated, as QEMU relinks the cluster)
 *     --> the whole clusters from there to @size: contiguous runs (of
 *         PREALLOC_RUN clusters, one for up to 64 GiB of 64 KiB clusters)
 *         at the end of the file (cow_alloc_contig: refcount 1, in the
 *         cache; the refcount blocks a run needs placed just before it,
 *         I9), each filled as @mode asks (cow_prealloc_fill: a hole,
 *         reserved blocks, or zeros)
 *     --> their L2 entries set in the cache (cow_set_entry: new tables
 *         allocated as for any write), COPIED; with extended L2 entries the
 *         subclusters are unallocated (reading zeros, or from a shorter
 *         backing file, which ends before them), or, for falloc and full
 *         over a backing file that is longer, all allocated (reading the
 *         host cluster: zeros; metadata gets zero flags instead, from the
 *         caller's cow_write_zeroes, which keeps the host clusters).
 * The caller's set_size makes it durable in the order of I1-I3 (refcounts,
 * data, L2 tables, L1) before the size. A failure before an entry names
 * them frees the run's unnamed clusters again (I17); the clusters already
 * named (earlier runs, the head of this one) stay mapped past the old
 * size until the caller's undo_area releases them. Before the run is allocated every
 * reservation of I12 is trimmed (cow_flush, cow_prealloc_trim) and none
 * is made for it (alloc_partial): the trim at close punches unwritten
 * extents only from the first reservation since open, and a falloc area
 * there would lose its blocks. */
static int prealloc_area(struct cow_img *img, uint64_t old, uint64_t size, uint64_t bsize,
			 enum cow_prealloc_mode mode, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, first = (old + cs - 1) / cs, n, host = 0, i = 0, k;
	uint64_t keep = img->size;
	uint8_t *buf = NULL;
	int ret = 0;

	if (old & (cs - 1) && !tail_in_place(img, old)) {
		uint64_t start = mode == COW_PREALLOC_METADATA ? old : old & ~(cs - 1);
		uint64_t end = first * cs < size ? first * cs : size;

		buf = calloc(1, end - start);
		if (!buf)
			return ut_errf(err, -ENOMEM, "out of memory");
		if (start < old)
			ret = cow_read(img, buf, old - start, start, err);
		img->size = size;   /* (cow_write's range check) */
		if (ret == 0)
			ret = cow_write(img, buf, end - start, start, err);
		img->size = keep;
		free(buf);
		if (ret < 0)
			return ret;
	}
	n = (size + cs - 1) / cs > first ? (size + cs - 1) / cs - first : 0;
	if (!n)
		return 0;
	if (img->prealloc_reserved) {
		ret = cow_flush(img, err);
		if (ret == 0)
			ret = cow_prealloc_trim(img, err);
		if (ret < 0)
			return ret;
	}
	for (uint64_t done = 0; ret == 0 && done < n; done += k) {
		k = n - done < PREALLOC_RUN ? n - done : PREALLOC_RUN;
		img->alloc_partial = true;
		ret = cow_alloc_contig(img, k, &host, err);
		img->alloc_partial = false;
		if (ret < 0)
			return ret;
		ret = cow_prealloc_fill(img, host, k * cs, mode, err);
		for (i = 0; ret == 0 && i < k; i++) {
			/* over a longer backing file the subclusters must not
			 * read from it */
			uint64_t c = first + done + i;
			bool own = img->extl2 && mode != COW_PREALLOC_METADATA && c * cs < bsize;

			ret = cow_set_entry(img, c, (host + i * cs) | QCOW_OFLAG_COPIED,
					    own ? QCOW_SC_ALL_ALLOC : 0, true, err);
			if (ret < 0)
				break;
		}
		/* the clusters no entry names (from the failed one on) are
		 * free again at once; those named (this run's head, earlier
		 * runs) are released by the caller's undo_area */
		if (ret < 0 && ret != -EUCLEAN)
			cow_free_unlinked(img, host + i * cs, k - i, NULL);
	}
	return ret;
}

/* A grow with preallocation from @old to @size failed with @ret (@err
 * holds its message) before its size write, after prealloc_area began:
 * put the image back as it was, as a shrink to @old would leave it (the
 * same steps, in the order of I14):
 *   every cluster the active L1 maps from the end of the old last cluster
 *   to @size released (release_range: the runs prealloc_area placed and
 *   named, zero clusters over a backing file; entries set to 0 in the
 *   cache, the clusters queued, I4, and punched when freed, I15)
 *     --> cow_flush (the L2 tables durable, then the frees applied)
 *     --> the L2 tables past the old last L1 entry, empty now, dropped
 *         (shrink_l1: L1 entries zeroed and synced before the tables are
 *         freed), cow_flush
 *     --> refcount blocks describing clusters from the file's old end
 *         (@end0, its end_cluster before the grow) on that count nothing
 *         (or only themselves) out of the refcount table, also those placed
 *         together before a run (I9), which another block counts
 *         (drop_free_blocks: table entry 0, sync, then their own
 *         decrement; repeated)
 *     --> the file cut after its last cluster with a refcount (cut_file).
 * The L1 table keeps the size grow_l1 gave it (as after QEMU's failed
 * truncate). A crash at any step leaves the old size with at worst the
 * area past it still mapped (nothing reads it; the next grow releases it,
 * release_range) or leaks. A failure of the undo itself (the space or an
 * fdatasync still failing) leaves the rest in the cache or on disk the
 * same way, and is added to @err after the grow's own cause. A damaged
 * image (-EUCLEAN, marked corrupt) is left as it is. */
static void undo_area(struct cow_img *img, uint64_t old, uint64_t size, uint64_t end0, int ret,
		      struct ut_err *err)
{
	uint64_t cov = (uint64_t)img->cluster_size * img->l2_entries;
	struct ut_err e2;
	char cause[UT_ERR_MSG_MAX];
	int r;

	if (ret == -EUCLEAN)
		return;
	ut_err_clear(&e2);
	r = release_range(img, old, size, &e2);
	if (r == 0)
		r = cow_flush(img, &e2);
	if (r == 0) {
		img->discarding = true;   /* (the tables punched when freed) */
		r = shrink_l1(img, (old + cov - 1) / cov, &e2);
		img->discarding = false;
	}
	if (r == 0)
		r = cow_flush(img, &e2);
	if (r == 0)
		r = drop_free_blocks(img, end0 / img->rb_entries, &e2);
	if (r == 0)
		r = cut_file(img, &e2);
	if (r == 0 || !err)
		return;
	snprintf(cause, sizeof(cause), "%s", err->msg);
	ut_errf(err, ret, "%s; releasing the preallocated clusters failed too (they stay mapped past the old size until the next resize, or leak: 'check --repair leaks'): %s",
		cause, e2.msg);
}

static int grow(struct cow_img *img, uint64_t size, enum cow_prealloc_mode mode,
		struct ut_err *err)
{
	uint64_t cs = img->cluster_size, old = img->size, end0 = img->end_cluster, l2e, need, bsize;
	bool wrote = false, placed = false;
	struct stat st;
	int ret;

	if ((unsigned)mode > COW_PREALLOC_FULL)
		return ut_errf(err, -EINVAL, "'%s': unknown preallocation mode %d", img->path, (int)mode);
	if (size <= img->size && mode != COW_PREALLOC_OFF)
		return ut_errf(err, -EINVAL, "'%s': preallocation can only be used for growing images",
			       img->path);
	if (size == img->size)
		return 0;
	ret = cow_data_writable(img, err);
	if (ret < 0)
		return ret;
	if (size < img->size)
		return ut_errf(err, -ENOTSUP, "'%s': shrinking an image is not supported", img->path);
	if (img->fmt == COW_FMT_RAW) {
		/* any length, as qemu-img resize sets a raw file's */
		if (fstat(img->fd, &st) < 0)
			return ut_errf_sys(err, -errno, "unable to stat '%s'", img->path);
		if (!S_ISREG(st.st_mode))
			return ut_errf(err, -ENOSPC, "'%s' is not a regular file and cannot grow to %llu bytes",
				       img->path, (unsigned long long)size);
		if (size > INT64_MAX)
			return ut_errf(err, -EFBIG, "'%s': size too large", img->path);
		if (mode == COW_PREALLOC_METADATA)
			return ut_errf(err, -ENOTSUP, "'%s': preallocation mode metadata is not supported for a raw image (falloc or full)",
				       img->path);
		/* the new area reserved or written from the old end of the
		 * file on (as QEMU's file-posix), then synced */
		if ((uint64_t)st.st_size < size && mode != COW_PREALLOC_OFF) {
			ret = cow_prealloc_fill(img, (uint64_t)st.st_size, size - (uint64_t)st.st_size,
						mode, err);
			if (ret == 0)
				ret = cow_sync(img, err);
			if (ret < 0)
				return ret;
		}
		if ((uint64_t)st.st_size < size && ftruncate(img->fd, (off_t)size) < 0)
			return ut_errf_sys(err, -errno, "unable to grow '%s' to %llu bytes", img->path,
					   (unsigned long long)size);
		img->file_size = size > img->file_size ? size : img->file_size;
		img->size = (size + 511) & ~511ull;
		return 0;
	}
	if (size & 511)
		return ut_errf(err, -EINVAL, "'%s': size %llu is not a multiple of 512 bytes",
			       img->path, (unsigned long long)size);
	if (size > (1ull << 56))
		return ut_errf(err, -EFBIG, "'%s': size too large", img->path);
	ret = snapshots_allow_resize(img, err);
	if (ret < 0)
		return ret;
	/* the new area must not show the backing file's data, and a version 2
	 * image can hide it only by writing zeros (QEMU refuses this too) */
	bsize = img->backing ? cow_size(img->backing) : 0;
	if (bsize > old && img->h.version < 3)
		return ut_errf(err, -ENOTSUP, "'%s': a version 2 image cannot grow over the longer backing file '%s' (no zero clusters to hide its data); convert it to version 3 first",
			       img->path, cow_path(img->backing));
	/* refusals first: nothing is written before this */
	ret = cow_bitmaps_resize_begin(img, size, err);
	if (ret < 0)
		return ret;
	l2e = (img->h.incompat & QCOW_INCOMPAT_EXTL2) ? cs / 16 : cs / 8;
	need = (size + cs * l2e - 1) / (cs * l2e);
	if (need > img->h.l1_size)
		ret = grow_l1(img, need, err);
	/* what the active L1 maps past the old end (a snapshot's VM state
	 * after loadvm) is not disk content */
	if (ret == 0)
		ret = release_range(img, old, size, err);
	if (ret == 0 && mode != COW_PREALLOC_OFF) {
		placed = true;
		ret = prealloc_area(img, old, size, bsize, mode, err);
	}
	/* the new area reads as zeros, not as whatever a larger backing file
	 * holds there (as QEMU zeroes it): zero clusters made durable by the
	 * flush before the size that shows them (preallocated: zero flags
	 * over the host clusters for metadata, as QEMU's; falloc and full
	 * read their host clusters, zeros, and the partial cluster at the
	 * old end was written) */
	if (ret == 0 && bsize > old && mode <= COW_PREALLOC_METADATA) {
		uint64_t zend = bsize < size ? bsize : size;
		img->size = size;
		ret = cow_write_zeroes(img, zend - old, old, 0, err);
		img->size = old;
	}
	/* the bitmaps' new tables and directory, durable before the size */
	if (ret == 0)
		ret = cow_bitmaps_resize_prepare(img, old, size, err);
	if (ret == 0)
		ret = set_size(img, size, &wrote, err);
	/* Failed before the size was written: the file still has the old
	 * size and, inside it, the same data (only metadata and the area
	 * past the old end changed), so the bitmaps, whose tables are
	 * untouched, are consistent again: their flags cleared (a failure
	 * of that leaves them in use). Once the size may be in the file (its
	 * fdatasync failed) they stay in use: the old tables do not fit the
	 * new size, and the switch to the new ones cannot be ordered after
	 * it any more. With preallocation, what it placed past the old end
	 * is released first (undo_area; not once the size may be in the
	 * file: the area is the image's then). */
	if (ret < 0) {
		if (placed && !wrote)
			undo_area(img, old, size, end0, ret, err);
		bitmaps_abort(img, wrote, UINT64_MAX, err);
		return ret;
	}
	return cow_bitmaps_resize_commit(img, err);
}

int cow_grow_prealloc(struct cow_img *img, uint64_t size, enum cow_prealloc_mode mode,
		      struct ut_err *err)
{
	int ret;

	img->resizing = true;   /* (cow_data_writable, a KEEP_BITMAPS open) */
	ret = grow(img, size, mode, err);
	img->resizing = false;
	return ret;
}

int cow_grow(struct cow_img *img, uint64_t size, struct ut_err *err)
{
	return cow_grow_prealloc(img, size, COW_PREALLOC_OFF, err);
}

static int shrink(struct cow_img *img, uint64_t size, struct ut_err *err)
{
	struct stat st;
	bool wrote = false;
	int ret;

	if (size >= img->size)
		return size == img->size ? 0 : ut_errf(err, -EINVAL, "'%s': %llu bytes is not smaller than the image",
						       img->path, (unsigned long long)size);
	ret = cow_data_writable(img, err);
	if (ret < 0)
		return ret;
	if (!size)
		return ut_errf(err, -EINVAL, "'%s': the new size must be positive", img->path);
	if (img->fmt == COW_FMT_QCOW2) {
		/* as QEMU 7.2's qcow2_co_truncate: the clusters past the new
		 * end released (the partial last one kept), then the size */
		if (size & 511)
			return ut_errf(err, -EINVAL, "'%s': size %llu is not a multiple of 512 bytes",
				       img->path, (unsigned long long)size);
		uint64_t old = img->size, cov = (uint64_t)img->cluster_size * img->l2_entries;

		ret = snapshots_allow_resize(img, err);
		if (ret == 0)
			ret = cow_bitmaps_resize_begin(img, size, err);
		if (ret < 0)
			return ret;
		/* everything the active L1 maps past the new end: the disk's
		 * tail and, past the old end, a VM state (which QEMU's shrink
		 * of the L1 table drops too) */
		ret = release_range(img, size, (uint64_t)img->h.l1_size * cov, err);
		/* the emptied L2 tables (clean: flushed) dropped, the frees
		 * applied: the bitmaps' data may move down into them */
		if (ret == 0)
			ret = cow_flush(img, err);
		if (ret == 0)
			ret = shrink_l1(img, (size + cov - 1) / cov, err);
		if (ret == 0)
			ret = cow_bitmaps_resize_prepare(img, old, size, err);
		if (ret == 0)
			ret = set_size(img, size, &wrote, err);
		/* Failed before the size was written: the old size, its tail
		 * perhaps released, which the bitmaps did not record: they
		 * get new tables with every bit of the tail set (a dirty bit
		 * over unchanged data is allowed; a clear one over changed
		 * data is not). Once the size may be in the file: in use. */
		if (ret < 0) {
			bitmaps_abort(img, wrote, size, err);
			return ret;
		}
		ret = cow_bitmaps_resize_commit(img, err);
		if (ret == 0)
			ret = cow_flush(img, err);
		if (ret == 0)
			ret = drop_empty_blocks(img, err);
		return ret < 0 ? ret : cut_file(img, err);
	}
	if (fstat(img->fd, &st) < 0)
		return ut_errf_sys(err, -errno, "unable to stat '%s'", img->path);
	if (!S_ISREG(st.st_mode))
		return ut_errf(err, -ENOTSUP, "'%s' is not a regular file and cannot shrink", img->path);
	if (ftruncate(img->fd, (off_t)size) < 0)
		return ut_errf_sys(err, -errno, "unable to shrink '%s' to %llu bytes", img->path,
				   (unsigned long long)size);
	ret = cow_sync(img, err);
	if (ret < 0)
		return ret;
	img->file_size = size;
	img->size = (size + 511) & ~511ull;
	return 0;
}

int cow_shrink(struct cow_img *img, uint64_t size, struct ut_err *err)
{
	int ret;

	img->resizing = true;   /* (cow_data_writable, a KEEP_BITMAPS open) */
	ret = shrink(img, size, err);
	img->resizing = false;
	return ret;
}
