/* cow/prealloc.c — preallocation ahead of the end of the host file (cow.h
 * I12), the idea of QEMU's "preallocate" block filter: growing a file one
 * cluster per write costs a block allocation (ext4 delayed allocation) per
 * write; reserving the blocks a chunk at a time with
 * fallocate(FALLOC_FL_KEEP_SIZE) makes the later writes cheaper. KEEP_SIZE
 * changes neither st_size nor any byte that reads back, so the image as seen
 * by cow/, by `qemu-img check` and after a crash is exactly what it would be
 * without preallocation; only st_blocks shows the reserved tail, which
 * cow_close frees (cow_prealloc_trim), together with the reserved blocks
 * inside the file that were never written (the sparse rest of a partially
 * written cluster, cow.h I10).
 * The file's size is also kept ahead of the clusters allocated (size_ahead:
 * a hole, so still nothing that reads back changes); close truncates it
 * back to the end of the last cluster.
 *
 * Also here: the data area of qemu-img's preallocation= modes
 * (cow_prealloc_fill), for cow_create and for cow_grow_prealloc (qcow2 and
 * raw), which is the image's own and never trimmed; and the test QEMU
 * makes for an image made with preallocation=metadata (cow_prealloc_detect). */
#include "cow/qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef O_DIRECT
#define O_DIRECT 040000
#endif

#define PREALLOC_ALIGN (1ull << 20)        /* chunk ends are 1 MiB aligned */
#define PREALLOC_MIN   (1ull << 20)
#define PREALLOC_MAX   (128ull << 20)
#define PREALLOC_DENSE 8                   /* see cow_prealloc */

/* Is preallocation possible for @img at all? Decided once, at the first
 * call: regular files of writable qcow2 images, unless the test/debug hook
 * COWVM_COW_PREALLOC=0 turns it off. */
static bool prealloc_usable(struct cow_img *img)
{
	const char *env;
	struct stat st;

	if (img->prealloc_state)
		return img->prealloc_state == 1;
	img->prealloc_state = 2;
	env = getenv("COWVM_COW_PREALLOC");
	if (img->ro || img->fmt != COW_FMT_QCOW2 || (env && !strcmp(env, "0")))
		return false;
	if (fstat(img->fd, &st) < 0 || !S_ISREG(st.st_mode))
		return false;
	img->prealloc_state = 1;
	return true;
}

/* Chunk end for a reservation that must cover @end: a chunk (1/8 of the
 * file, 1..128 MiB) past @base, 1 MiB aligned. */
static uint64_t chunk_end(const struct cow_img *img, uint64_t base, uint64_t end)
{
	uint64_t chunk = img->file_size / 8, new_end;

	if (chunk < PREALLOC_MIN)
		chunk = PREALLOC_MIN;
	if (chunk > PREALLOC_MAX)
		chunk = PREALLOC_MAX;
	new_end = base + chunk > end ? base + chunk : end;
	return (new_end + PREALLOC_ALIGN - 1) & ~(PREALLOC_ALIGN - 1);
}

/* Keep st_size a chunk past @end (sparse: ftruncate allocates nothing), so
 * the data writes of new clusters are not writes past the end of the file.
 * Linux file systems serialise direct writes that extend a file (ext4 and
 * xfs take the inode lock exclusively and wait for every direct write in
 * flight), which made a fresh overlay under cache=none a queue of depth
 * one; a buffered write that extends the file updates its size, one inode
 * change per new cluster (4 KiB writes into a fresh overlay: ~10% faster
 * with the size set ahead). */
static void size_ahead(struct cow_img *img, uint64_t end)
{
	uint64_t new_end;

	if (end <= img->size_end)
		return;
	new_end = chunk_end(img, end, end);
	if (ftruncate(img->fd, (off_t)new_end) < 0)
		return;   /* writes past the end are slower, not wrong */
	img->size_end = new_end;
	img->prealloc_trim = true;
}

void cow_prealloc(struct cow_img *img, uint64_t end)
{
	uint64_t base, new_end;

	/* Allocations that the caller writes only in part (img->alloc_partial:
	 * the I10 shortcut, subclusters) leave holes; reserving for them would
	 * turn those holes into allocated blocks. Reserve only after
	 * PREALLOC_DENSE allocations in a row that are written whole. (Not
	 * judged by the file size: asynchronous writers, storage/qcow2.c,
	 * write the data of earlier allocations while this one is made.) */
	if (img->alloc_partial)
		img->prealloc_dense = 0;
	else if (img->prealloc_dense < PREALLOC_DENSE)
		img->prealloc_dense++;
	if (end <= img->file_size || !prealloc_usable(img))
		return;
	size_ahead(img, end);
	if (end <= img->prealloc_end || img->prealloc_dense < PREALLOC_DENSE || img->falloc_off)
		return;
	base = img->prealloc_end > img->file_size ? img->prealloc_end : img->file_size;
	new_end = chunk_end(img, base, end);
	/* what close may punch starts here: never below, where unwritten
	 * extents are the image's own (preallocation=falloc), not ours
	 * (the size set ahead reserves nothing: it does not count) */
	if (!img->prealloc_reserved || base < img->prealloc_start)
		img->prealloc_start = base;
	img->prealloc_reserved = true;
	if (fallocate(img->fd, FALLOC_FL_KEEP_SIZE, (off_t)base, (off_t)(new_end - base)) < 0) {
		/* no fallocate here (EOPNOTSUPP, ENOSYS...): never again; a
		 * transient failure (ENOSPC, EINTR...): write without
		 * preallocation this time. Whatever was reserved is freed
		 * at close like a successful chunk. */
		if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL || errno == ENODEV)
			img->falloc_off = true;
		else
			img->prealloc_trim = true;
		return;
	}
	img->prealloc_end = new_end;
	img->prealloc_trim = true;
}

/* Punch the reserved blocks below the end of the file that were never
 * written, in [@from, @eof): the rest of a cluster written partially (the
 * I10 shortcut) would otherwise keep a whole cluster of disk space where
 * there was a hole without preallocation. Unwritten extents read as zeros
 * and so do holes: nothing that reads back changes. Best effort (no FIEMAP:
 * nothing punched). */
static void punch_unwritten(struct cow_img *img, uint64_t from, uint64_t eof, uint64_t blk)
{
	enum { NEXT = 256 };
	struct fiemap *fm = calloc(1, sizeof(*fm) + NEXT * sizeof(struct fiemap_extent));
	uint64_t pos = from;
	bool last = false;

	while (fm && !last && pos < eof) {
		memset(fm, 0, sizeof(*fm));
		fm->fm_start = pos;
		fm->fm_length = eof - pos;
		fm->fm_extent_count = NEXT;
		fm->fm_flags = FIEMAP_FLAG_SYNC;   /* no dirty page left unmapped */
		if (ioctl(img->fd, FS_IOC_FIEMAP, fm) < 0 || !fm->fm_mapped_extents)
			break;
		for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
			struct fiemap_extent *x = &fm->fm_extents[i];
			uint64_t a = x->fe_logical, b = x->fe_logical + x->fe_length;
			if (x->fe_flags & FIEMAP_EXTENT_LAST)
				last = true;
			pos = b;
			if (!(x->fe_flags & FIEMAP_EXTENT_UNWRITTEN))
				continue;
			if (a < from)
				a = from;
			if (b > eof)
				b = eof;
			a = (a + blk - 1) / blk * blk;
			b = b / blk * blk;
			if (a < b)
				fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)a,
					  (off_t)(b - a));
		}
	}
	free(fm);
}

int cow_prealloc_trim(struct cow_img *img, struct ut_err *err)
{
	struct stat st;
	uint64_t size, used;
	int ret = 0;

	if (!img->prealloc_trim)
		goto out;
	img->prealloc_trim = false;
	img->prealloc_end = 0;
	if (fstat(img->fd, &st) < 0) {
		ret = ut_errf_sys(err, -errno, "'%s': unable to stat the file to release preallocated space",
				  img->path);
		goto out;
	}
	/* truncating to the current size frees the blocks past the end and
	 * changes nothing else; a size set ahead goes back to the end of the
	 * clusters allocated (every byte written is below it) */
	size = (uint64_t)st.st_size;
	if (img->size_end) {
		used = img->end_cluster << img->cluster_bits;
		if (used < img->file_size)
			used = img->file_size;
		if (used < size)
			size = used;
		img->size_end = 0;
	}
	st.st_size = (off_t)size;
	if (ftruncate(img->fd, st.st_size) < 0) {
		ret = ut_errf_sys(err, -errno, "'%s': unable to release preallocated space past the end of the file",
				  img->path);
		goto out;
	}
	if (img->prealloc_reserved)
		punch_unwritten(img, img->prealloc_start, (uint64_t)st.st_size,
				st.st_blksize > 0 ? (uint64_t)st.st_blksize : 4096);
	img->prealloc_reserved = false;
out:
	return ret;
}

/* Zeros over [@off, @off + @len): the aligned part with direct writes
 * (fcntl F_SETFL O_DIRECT on the image's own descriptor for the while:
 * no second descriptor, whose close would drop the image's locks under the
 * POSIX fallback of cow/lock.h), 1 GiB in 0.9 s instead of 3.5 s buffered
 * here and no page cache evicted; the unaligned head, and everything from
 * the first refused direct write on (EINVAL: no O_DIRECT, a larger
 * alignment), through cow_pwrite_full. */
static int fill_zeros(struct cow_img *img, uint64_t off, uint64_t len, struct ut_err *err)
{
	const uint64_t chunk = 4u << 20, a = 4096;
	uint64_t pos = 0, head = (a - (off & (a - 1))) & (a - 1);
	uint8_t *zeros = aligned_alloc(a, chunk);
	int fl, ret = 0;

	if (!zeros)
		return ut_errf(err, -ENOMEM, "out of memory");
	memset(zeros, 0, chunk);
	if (head > len)
		head = len;
	if (head)
		ret = cow_pwrite_full(img, zeros, head, off, err);
	pos = head;
	fl = fcntl(img->fd, F_GETFL);
	if (ret == 0 && fl >= 0 && len - pos >= a && !img->ro &&
	    ((fl & O_DIRECT) || fcntl(img->fd, F_SETFL, fl | O_DIRECT) == 0)) {
		while (len - pos >= a) {
			uint64_t n = (len - pos) & ~(a - 1);
			ssize_t w = pwrite(img->fd, zeros, n < chunk ? n : chunk, (off_t)(off + pos));

			if (w <= 0 || (w & (a - 1)))
				break;   /* the rest buffered (an error again there) */
			pos += (uint64_t)w;
			img->unsynced = true;
			if (off + pos > img->file_size)
				img->file_size = off + pos;
		}
		if (!(fl & O_DIRECT))
			(void)fcntl(img->fd, F_SETFL, fl);
	}
	for (; pos < len && ret == 0; pos += chunk)
		ret = cow_pwrite_full(img, zeros, len - pos < chunk ? len - pos : chunk, off + pos, err);
	free(zeros);
	return ret;
}

int cow_prealloc_fill(struct cow_img *img, uint64_t off, uint64_t len,
		      enum cow_prealloc_mode mode, struct ut_err *err)
{
	struct stat st;
	int ret = 0;

	if (!len)
		return 0;
	if (mode == COW_PREALLOC_FALLOC) {
		/* fallocate(2) itself (also what the power-cut recorder sees),
		 * posix_fallocate's emulation (zeros) where it is refused */
		if (fallocate(img->fd, 0, (off_t)off, (off_t)len) < 0)
			ret = errno == EOPNOTSUPP || errno == ENOSYS ?
			      -posix_fallocate(img->fd, (off_t)off, (off_t)len) : -errno;
		if (ret < 0)
			return ut_errf_sys(err, ret, "'%s': unable to preallocate %llu bytes", img->path,
					   (unsigned long long)len);
	} else if (mode == COW_PREALLOC_FULL) {
		ret = fill_zeros(img, off, len, err);
		if (ret < 0)
			return ret;
	}
	/* metadata: a hole, inside the file (as qemu-img leaves it) */
	if (fstat(img->fd, &st) < 0)
		return ut_errf_sys(err, -errno, "unable to stat '%s'", img->path);
	if ((uint64_t)st.st_size < off + len && ftruncate(img->fd, (off_t)(off + len)) < 0)
		return ut_errf_sys(err, -errno, "'%s': unable to extend the file to %llu bytes",
				   img->path, (unsigned long long)(off + len));
	if (off + len > img->file_size)
		img->file_size = off + len;
	return 0;
}

int cow_prealloc_detect(struct cow_img *img, bool *out, struct ut_err *err)
{
	uint64_t real, threshold, end, n = 0, rc;
	struct stat st;
	int ret;

	*out = false;
	if (img->fmt != COW_FMT_QCOW2)
		return 0;
	if (fstat(img->fd, &st) < 0)
		return ut_errf_sys(err, -errno, "unable to stat '%s'", img->path);
	real = (uint64_t)st.st_blocks * 512 / img->cluster_size;
	threshold = real * 10 / 9 > real + 2 ? real * 10 / 9 : real + 2;
	end = ((uint64_t)st.st_size + img->cluster_size - 1) >> img->cluster_bits;
	for (uint64_t i = 0; i < end && n < threshold; i++) {
		ret = cow_rc_get(img, i, &rc, err);
		if (ret < 0)
			return ret;
		n += rc != 0;
	}
	*out = n >= threshold;
	return 0;
}
