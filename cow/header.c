/* cow/header.c — the qcow2 header: parse and validate, build, write; file
 * I/O helpers (buffered, or O_DIRECT with bounce buffering); image creation. */
#include "cow/qcow2.h"
#include "util/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/vfs.h>
#include <unistd.h>

/* ---- direct I/O (O_DIRECT) ---- */

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

static bool pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

int cow_dio_unsupported(struct ut_err *err, const char *path)
{
	return ut_errf(err, -EINVAL, "unable to open '%s': the file system does not support O_DIRECT (cache=none)",
		       path);
}

int cow_dio_setup(struct cow_img *img, struct ut_err *err)
{
	struct statx sx;
	struct statfs sf;
	struct stat fst;
	uint32_t mem = 0, off = 0;
	int ret = 0;

	if (fstat(img->fd, &fst) == 0 && S_ISREG(fst.st_mode) && fstatfs(img->fd, &sf) == 0 &&
	    (unsigned long)sf.f_type == TMPFS_MAGIC) {
		/* tmpfs accepts O_DIRECT (since Linux 6.6) but keeps the data in
		 * the page cache: that is not cache=none. (Only for regular
		 * files: a block device node lives in devtmpfs, which reports
		 * the same magic.) */
		ret = cow_dio_unsupported(err, img->path);
		goto out;
	}
	memset(&sx, 0, sizeof(sx));
	if (statx(img->fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_DIOALIGN, &sx) == 0 &&
	    (sx.stx_mask & STATX_DIOALIGN)) {
		if (!sx.stx_dio_mem_align || !sx.stx_dio_offset_align) {
			ret = cow_dio_unsupported(err, img->path);
			goto out;
		}
		mem = sx.stx_dio_mem_align;
		off = sx.stx_dio_offset_align;
	} else {
		struct stat st;
		int bs = 0;

		if (fstat(img->fd, &st) == 0 && S_ISBLK(st.st_mode) &&
		    ioctl(img->fd, BLKSSZGET, &bs) == 0 && bs > 0)
			mem = off = (uint32_t)bs;
		else
			mem = off = 4096;   /* not reported: the common worst case */
	}
	/* a buffer aligned for the offset rule is aligned for the memory rule
	 * too; use the larger for buffers (QEMU does likewise) */
	if (mem < off)
		mem = off;
	if (!pow2(mem) || !pow2(off) || mem > 65536 || off > 65536) {
		ret = ut_errf(err, -EINVAL, "unable to open '%s': unsupported O_DIRECT alignment (memory %u, offset %u)",
			      img->path, mem, off);
		goto out;
	}
	img->direct = true;
	img->dio_mem = mem;
	img->dio_off = off;
out:
	return ret;
}

static int bounce_get(struct cow_img *img, struct ut_err *err)
{
	if (img->bounce)
		return 0;
	img->bounce = aligned_alloc(img->dio_mem > 4096 ? img->dio_mem : 4096, COW_DIO_CHUNK);
	if (!img->bounce)
		return ut_errf(err, -ENOMEM, "out of memory");
	return 0;
}

static bool dio_aligned(const struct cow_img *img, const void *buf, uint64_t len, uint64_t off)
{
	return !((uintptr_t)buf & (img->dio_mem - 1)) && !((len | off) & (img->dio_off - 1));
}

/* Aligned direct read of [off, off+len) into @buf; *got is what the file had
 * (less than @len only at its end). */
static int dio_read_aligned(struct cow_img *img, uint8_t *buf, size_t len, uint64_t off,
			    size_t *got, struct ut_err *err)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(img->fd, buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ut_errf_sys(err, -errno, "'%s': direct read of %zu bytes at offset %llu failed",
					   img->path, len, (unsigned long long)(off + done));
		}
		if (n == 0)
			break;
		done += (size_t)n;
		if (done & (img->dio_off - 1))
			break;      /* the file ends inside this block */
	}
	*got = done;
	return 0;
}

static int pread_direct(struct cow_img *img, uint8_t *p, size_t len, uint64_t off, bool zero_fill,
			struct ut_err *err)
{
	uint64_t a = img->dio_off, pos = off, end = off + len;
	size_t got;
	int ret;

	if (dio_aligned(img, p, len, off)) {
		ret = dio_read_aligned(img, p, len, off, &got, err);
		if (ret < 0)
			return ret;
		pos += got;
		goto eof;
	}
	ret = bounce_get(img, err);
	if (ret < 0)
		return ret;
	while (pos < end) {
		uint64_t c0 = pos & ~(a - 1), c1 = (end + a - 1) & ~(a - 1), n, have;

		if (c1 - c0 > COW_DIO_CHUNK)
			c1 = c0 + COW_DIO_CHUNK;
		ret = dio_read_aligned(img, img->bounce, c1 - c0, c0, &got, err);
		if (ret < 0)
			return ret;
		n = (end < c1 ? end : c1) - pos;
		have = c0 + got > pos ? c0 + got - pos : 0;
		memcpy(p + (pos - off), img->bounce + (pos - c0), have < n ? have : n);
		if (have < n) {
			pos += have;
			goto eof;
		}
		pos += n;
	}
eof:
	if (pos < end) {
		if (!zero_fill)
			return ut_errf(err, -EIO, "'%s': unexpected end of file at offset %llu",
				       img->path, (unsigned long long)pos);
		memset(p + (pos - off), 0, end - pos);
	}
	return 0;
}

/* Write all of @iov (@iovcnt vectors, at most 8) at @off on the fd as it is
 * (buffered, or direct when everything is aligned). */
static int write_iov(struct cow_img *img, const struct iovec *iov, int iovcnt, uint64_t off,
		     struct ut_err *err)
{
	struct iovec v[8];
	uint64_t len = 0, done = 0;
	int ret = 0;

	for (int i = 0; i < iovcnt; i++) {
		v[i] = iov[i];
		len += iov[i].iov_len;
	}
	while (done < len) {
		int first = 0;
		uint64_t skip = done;
		ssize_t n;

		/* skip the vectors already written, trim the first partial one */
		while (first < iovcnt && skip >= iov[first].iov_len)
			skip -= iov[first++].iov_len;
		v[first].iov_base = (uint8_t *)iov[first].iov_base + skip;
		v[first].iov_len = iov[first].iov_len - skip;
		n = pwritev(img->fd, v + first, iovcnt - first, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = ut_errf_sys(err, -errno, "'%s': %swrite of %llu bytes at offset %llu failed",
					  img->path, img->direct ? "direct " : "",
					  (unsigned long long)len, (unsigned long long)(off + done));
			goto out;
		}
		if (n == 0) {
			ret = ut_errf(err, -EIO, "'%s': write at offset %llu made no progress", img->path,
				      (unsigned long long)(off + done));
			goto out;
		}
		done += (uint64_t)n;
	}
out:
	return ret;
}

/* Read block [b, b + dio_off) into @dst for a read-modify-write (zeros past
 * the end of the file). */
static int rmw_block(struct cow_img *img, uint8_t *dst, uint64_t b, struct ut_err *err)
{
	size_t got;
	int ret = dio_read_aligned(img, dst, img->dio_off, b, &got, err);

	if (ret == 0 && got < img->dio_off)
		memset(dst + got, 0, img->dio_off - got);
	return ret;
}

/* Direct write of @iov through the bounce buffer: the covering blocks, with
 * the partial head and tail blocks read first. Returns the end of the last
 * block written in *wend. */
static int pwritev_bounce(struct cow_img *img, const struct iovec *iov, int iovcnt, uint64_t len,
			  uint64_t off, uint64_t *wend, struct ut_err *err)
{
	uint64_t a = img->dio_off, pos = off, end = off + len, skip = 0;
	int vi = 0, ret = bounce_get(img, err);

	while (ret == 0 && pos < end) {
		uint64_t c0 = pos & ~(a - 1), c1 = (end + a - 1) & ~(a - 1), stop, o;
		struct iovec one;

		if (c1 - c0 > COW_DIO_CHUNK)
			c1 = c0 + COW_DIO_CHUNK;
		if (pos > c0)
			ret = rmw_block(img, img->bounce, c0, err);
		if (ret == 0 && end < c1 && !(pos > c0 && c1 - a == c0))
			ret = rmw_block(img, img->bounce + (c1 - a - c0), c1 - a, err);
		if (ret < 0)
			break;
		stop = end < c1 ? end : c1;
		for (o = pos; o < stop && vi < iovcnt;) {
			uint64_t m = iov[vi].iov_len - skip;

			if (m > stop - o)
				m = stop - o;
			memcpy(img->bounce + (o - c0), (const uint8_t *)iov[vi].iov_base + skip, m);
			o += m;
			skip += m;
			if (skip == iov[vi].iov_len) {
				vi++;
				skip = 0;
			}
		}
		one.iov_base = img->bounce;
		one.iov_len = c1 - c0;
		ret = write_iov(img, &one, 1, c0, err);
		*wend = c1;
		pos = stop;
	}
	return ret;
}

static int pwritev_any(struct cow_img *img, const struct iovec *iov, int iovcnt, uint64_t off,
		       struct ut_err *err)
{
	uint64_t len = 0, wend;
	bool aligned = true;
	int ret;

	/* the last guard of I7: a backing layer, or a former top layer that
	 * an external snapshot froze (cow_overlay_attach: its fd is still
	 * O_RDWR), is never written */
	if (img->ro)
		return ut_errf(err, -EROFS, "'%s': image is opened read-only", img->path);
	if (iovcnt > 8)
		return ut_errf(err, -EINVAL, "'%s': internal error: too many write vectors", img->path);
	for (int i = 0; i < iovcnt; i++) {
		len += iov[i].iov_len;
		if (img->direct && !dio_aligned(img, iov[i].iov_base, iov[i].iov_len, off))
			aligned = false;
	}
	wend = off + len;
	if (aligned)
		ret = write_iov(img, iov, iovcnt, off, err);
	else
		ret = pwritev_bounce(img, iov, iovcnt, len, off, &wend, err);
	if (ret < 0)
		return ret;
	if (wend > img->file_size)
		img->file_size = wend;
	img->unsynced = true;
	return 0;
}

/* ---- io helpers ---- */

uint64_t cow_fd_size(int fd, const struct stat *st)
{
	off_t e;

	if (S_ISBLK(st->st_mode) && (e = lseek(fd, 0, SEEK_END)) > 0)
		return (uint64_t)e;
	return (uint64_t)st->st_size;
}

int cow_pread_full(struct cow_img *img, void *buf, size_t len, uint64_t off, bool zero_fill,
		   struct ut_err *err)
{
	uint8_t *p = buf;
	size_t done = 0;

	if (img->direct)
		return pread_direct(img, p, len, off, zero_fill, err);
	while (done < len) {
		ssize_t n = pread(img->fd, p + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ut_errf_sys(err, -errno, "'%s': read of %zu bytes at offset %llu failed",
					   img->path, len, (unsigned long long)(off + done));
		}
		if (n == 0) {
			if (!zero_fill)
				return ut_errf(err, -EIO, "'%s': unexpected end of file at offset %llu",
					       img->path, (unsigned long long)(off + done));
			memset(p + done, 0, len - done);
			break;
		}
		done += (size_t)n;
	}
	return 0;
}

int cow_pwrite_full(struct cow_img *img, const void *buf, size_t len, uint64_t off,
		    struct ut_err *err)
{
	struct iovec v = { (void *)buf, len };

	return pwritev_any(img, &v, 1, off, err);
}

int cow_pwritev_full(struct cow_img *img, const struct iovec *iov, int iovcnt, uint64_t off,
		     struct ut_err *err)
{
	return pwritev_any(img, iov, iovcnt, off, err);
}

int cow_sync(struct cow_img *img, struct ut_err *err)
{
	if (img->ro)
		return 0;
	if (img->sync_err)
		/* EIO, whatever the first failure was (as QEMU's file-posix):
		 * an ENOSPC here would make a VM with werror=enospc pause and
		 * retry forever, when no free space can help any more */
		return ut_errf(err, -EIO, "'%s': an earlier fdatasync failed (%s): what reached the disk since the last one is unknown, so nothing more is made durable; close and reopen the image (qemu-img check)",
			       img->path, strerror(-img->sync_err));
	if (fdatasync(img->fd) < 0) {
		img->sync_err = -errno;
		return ut_errf_sys(err, -errno, "'%s': fdatasync failed", img->path);
	}
	img->unsynced = false;
	return 0;
}

bool cow_sync_failed(const struct cow_img *img)
{
	return img->sync_err != 0;
}

int cow_probe(const uint8_t *buf, size_t len)
{
	return len >= 4 && cow_be32(buf) == QCOW_MAGIC;
}

static const char *feature_name(const uint8_t *tbl, uint32_t tlen, int type, int bit)
{
	static char name[47];

	for (uint32_t o = 0; o + 48 <= tlen; o += 48) {
		if (tbl[o] == type && tbl[o + 1] == bit) {
			memcpy(name, tbl + o + 2, 46);
			name[46] = '\0';
			return name;
		}
	}
	return NULL;
}

/* Parse and validate the header in @buf (the first min(cluster, file) bytes).
 * In check mode (img->check_mode, cow_check) a header length that is not a
 * multiple of 8 and an L1 table or refcount table that overlaps the header
 * or each other are taken as QEMU takes them (qemu-img check opens such
 * images and reports the damage) and recorded in img->check_flags; every
 * other problem is refused as in a normal open. */
int cow_hdr_parse(struct cow_img *img, const uint8_t *buf, size_t len, uint64_t file_size,
		  struct ut_err *err)
{
	struct cow_hdr *h = &img->h;
	const uint8_t *ftbl = NULL;
	uint32_t ftlen = 0;
	uint64_t cs, end, l1_bytes, need_l1, ext, ext_end, l2e;
	const char *p = img->path;
	int ret = -EINVAL;

	img->check_flags = 0;
	if (len < QCOW_HDR_V2_LEN)
		return ut_errf(err, -EINVAL, "'%s': header too short (%zu bytes)", p, len);
	if (cow_be32(buf) != QCOW_MAGIC)
		return ut_errf(err, -EINVAL, "'%s': not a qcow2 image (bad magic)", p);
	h->version = cow_be32(buf + 4);
	if (h->version != 2 && h->version != 3)
		return ut_errf(err, -ENOTSUP, "'%s': unsupported qcow2 version %u", p, h->version);
	h->backing_off = cow_be64(buf + 8);
	h->backing_len = cow_be32(buf + 16);
	h->cluster_bits = cow_be32(buf + 20);
	h->size = cow_be64(buf + 24);
	h->crypt = cow_be32(buf + 32);
	h->l1_size = cow_be32(buf + 36);
	h->l1_off = cow_be64(buf + 40);
	h->rt_off = cow_be64(buf + 48);
	h->rt_clusters = cow_be32(buf + 56);
	h->nb_snapshots = cow_be32(buf + 60);
	h->snap_off = cow_be64(buf + 64);
	if (h->version == 2) {
		h->incompat = h->compat = h->autoclear = 0;
		h->refcount_order = 4;
		h->hdr_len = QCOW_HDR_V2_LEN;
		h->comp_type = 0;
	} else {
		if (len < QCOW_HDR_V3_LEN)
			return ut_errf(err, -EINVAL, "'%s': header too short (%zu bytes)", p, len);
		h->incompat = cow_be64(buf + 72);
		h->compat = cow_be64(buf + 80);
		h->autoclear = cow_be64(buf + 88);
		h->refcount_order = cow_be32(buf + 96);
		h->hdr_len = cow_be32(buf + 100);
		h->comp_type = 0;
		/* (QEMU takes a length that is not a multiple of 8 and reads
		 * the extensions from there: a check does too, and reports
		 * it) */
		if (h->hdr_len < QCOW_HDR_V3_LEN || h->hdr_len > len ||
		    ((h->hdr_len & 7) && !img->check_mode))
			return ut_errf(err, -EINVAL, "'%s': invalid header length %u", p, h->hdr_len);
		if (h->hdr_len & 7)
			img->check_flags |= COW_CK_HDR_LEN;
		if (h->hdr_len > 104)
			h->comp_type = buf[104];
	}
	if (h->cluster_bits < COW_MIN_CLUSTER_BITS || h->cluster_bits > COW_MAX_CLUSTER_BITS)
		return ut_errf(err, -EINVAL, "'%s': unsupported cluster size (2^%u bytes)", p,
			       h->cluster_bits);
	cs = 1ull << h->cluster_bits;
	if (h->hdr_len > cs)
		return ut_errf(err, -EINVAL, "'%s': header length %u exceeds the cluster size", p,
			       h->hdr_len);
	if (len > cs)
		len = (size_t)cs;
	if (h->refcount_order > 6)
		return ut_errf(err, -EINVAL, "'%s': invalid refcount order %u", p, h->refcount_order);

	/* header extensions */
	h->has_backing_fmt = false;
	h->backing_fmt[0] = '\0';
	free(h->other_ext);
	h->other_ext = NULL;
	h->other_ext_len = 0;
	/* they end at the end marker, or where the backing file name starts,
	 * or at the end of the header cluster (as QEMU reads them: a v2
	 * image may have no end marker and its name right after the last
	 * extension, or right after the header) */
	ext = h->hdr_len;
	ext_end = len;
	if (h->backing_off && h->backing_off < ext_end)
		ext_end = h->backing_off;   /* at or before hdr_len: none */
	for (;;) {
		uint32_t type, elen;

		if (ext >= ext_end)
			break;
		if (ext + 8 > ext_end) {
			if (h->version == 2)
				break;
			return ut_errf(err, -EINVAL, "'%s': header extensions run past %s", p,
				       ext_end < len ? "the backing file name" : "the header cluster");
		}
		type = cow_be32(buf + ext);
		elen = cow_be32(buf + ext + 4);
		/* (the end marker's length too, as QEMU checks it) */
		if (ext + 8 + (uint64_t)elen > ext_end)
			return ut_errf(err, -EINVAL, "'%s': header extension 0x%08x (length %u) runs past %s",
				       p, type, elen, ext_end < len ? "the backing file name" : "the header cluster");
		if (type == QCOW_EXT_END)
			break;
		if (type == QCOW_EXT_BACKING_FMT) {
			if (elen >= sizeof(h->backing_fmt))
				return ut_errf(err, -EINVAL, "'%s': backing format name too long", p);
			memcpy(h->backing_fmt, buf + ext + 8, elen);
			h->backing_fmt[elen] = '\0';
			h->has_backing_fmt = true;
		} else if (type == QCOW_EXT_FEATURES) {
			ftbl = buf + ext + 8;
			ftlen = elen;
		} else if (type == QCOW_EXT_DATA_FILE) {
			/* refused below through the incompatible bit */
		} else {
			size_t padded = 8 + (((size_t)elen + 7) & ~(size_t)7);
			uint8_t *n;

			if (ext + padded > ext_end)
				padded = 8 + elen;
			n = realloc(h->other_ext, h->other_ext_len + 8 + (((size_t)elen + 7) & ~(size_t)7));
			if (!n)
				return ut_errf(err, -ENOMEM, "'%s': out of memory", p);
			h->other_ext = n;
			memset(n + h->other_ext_len, 0, 8 + (((size_t)elen + 7) & ~(size_t)7));
			memcpy(n + h->other_ext_len, buf + ext, padded);
			h->other_ext_len += 8 + (((size_t)elen + 7) & ~(size_t)7);
		}
		ext += 8 + (((uint64_t)elen + 7) & ~7ull);
	}

	if (h->incompat & ~QCOW_INCOMPAT_KNOWN) {
		char names[512] = "";
		size_t n = 0;

		for (int b = 0; b < 64; b++) {
			if (!(h->incompat & ~QCOW_INCOMPAT_KNOWN & (1ull << b)))
				continue;
			const char *nm = ftbl ? feature_name(ftbl, ftlen, 0, b) : NULL;
			n += (size_t)snprintf(names + n, n < sizeof(names) ? sizeof(names) - n : 0,
					      "%sbit %d%s%s%s", n ? ", " : "", b, nm ? " (" : "",
					      nm ? nm : "", nm ? ")" : "");
			if (n >= sizeof(names))
				break;
		}
		return ut_errf(err, -ENOTSUP, "'%s': unsupported incompatible feature(s): %s", p, names);
	}
	if (h->incompat & QCOW_INCOMPAT_DATA_FILE)
		return ut_errf(err, -ENOTSUP, "'%s': external data files are not supported by cowvm", p);
	if ((h->incompat & QCOW_INCOMPAT_EXTL2) && h->cluster_bits < COW_MIN_EXTL2_CLUSTER_BITS)
		return ut_errf(err, -EINVAL, "'%s': extended L2 entries need a cluster size of at least %u bytes (the image has %u)",
			       p, 1u << COW_MIN_EXTL2_CLUSTER_BITS, 1u << h->cluster_bits);
	if (h->crypt)
		return ut_errf(err, -ENOTSUP, "'%s': encrypted images are not supported by cowvm", p);
	if (h->comp_type > 1)
		return ut_errf(err, -ENOTSUP, "'%s': unknown compression type %u", p, h->comp_type);
	if (h->comp_type != 0 && !(h->incompat & QCOW_INCOMPAT_COMPRESSION))
		return ut_errf(err, -EINVAL, "'%s': compression type set without the compression-type feature bit", p);

	/* backing file name */
	h->backing[0] = '\0';
	if (h->backing_off) {
		if (h->backing_len == 0 || h->backing_len >= sizeof(h->backing) ||
		    h->backing_off > cs || h->backing_off + h->backing_len > len)
			return ut_errf(err, -EINVAL, "'%s': invalid backing file name (offset %llu, length %u)",
				       p, (unsigned long long)h->backing_off, h->backing_len);
		memcpy(h->backing, buf + h->backing_off, h->backing_len);
		h->backing[h->backing_len] = '\0';
		if (strlen(h->backing) != h->backing_len)
			return ut_errf(err, -EINVAL, "'%s': backing file name contains a NUL byte", p);
	}

	/* tables */
	if (h->size > (1ull << 62))
		return ut_errf(err, -EINVAL, "'%s': virtual size %llu too large", p,
			       (unsigned long long)h->size);
	l2e = (h->incompat & QCOW_INCOMPAT_EXTL2) ? cs / 16 : cs / 8;
	need_l1 = (h->size + (cs * l2e) - 1) / (cs * l2e);
	if (h->l1_size < need_l1)
		return ut_errf(err, -EINVAL, "'%s': L1 table (%u entries) too small for the virtual size", p,
			       h->l1_size);
	l1_bytes = (uint64_t)h->l1_size * 8;
	if (l1_bytes > COW_MAX_L1_BYTES)
		return ut_errf(err, -EFBIG, "'%s': L1 table too large (%u entries)", p, h->l1_size);
	if (h->l1_size) {
		if (h->l1_off & (cs - 1))
			return ut_errf(err, -EINVAL, "'%s': L1 table offset 0x%llx is not cluster-aligned", p,
				       (unsigned long long)h->l1_off);
		if (h->l1_off == 0 && !img->check_mode)
			return ut_errf(err, -EINVAL, "'%s': L1 table overlaps the header", p);
		if (h->l1_off == 0)
			img->check_flags |= COW_CK_L1_HDR;
		if (h->l1_off > file_size || l1_bytes > file_size - h->l1_off)
			return ut_errf(err, -EINVAL, "'%s': L1 table (offset 0x%llx) extends beyond the end of the file",
				       p, (unsigned long long)h->l1_off);
	}
	if (h->rt_clusters == 0)
		return ut_errf(err, -EINVAL, "'%s': refcount table is empty", p);
	if ((uint64_t)h->rt_clusters * cs > COW_MAX_RT_BYTES)
		return ut_errf(err, -EFBIG, "'%s': refcount table too large (%u clusters)", p, h->rt_clusters);
	if (h->rt_off & (cs - 1))
		return ut_errf(err, -EINVAL, "'%s': refcount table offset 0x%llx is not cluster-aligned", p,
			       (unsigned long long)h->rt_off);
	if (h->rt_off == 0 && !img->check_mode)
		return ut_errf(err, -EINVAL, "'%s': refcount table overlaps the header", p);
	if (h->rt_off == 0)
		img->check_flags |= COW_CK_RT_HDR;
	end = h->rt_off + (uint64_t)h->rt_clusters * cs;
	if (h->rt_off > file_size || end > file_size)
		return ut_errf(err, -EINVAL, "'%s': refcount table (offset 0x%llx) extends beyond the end of the file",
			       p, (unsigned long long)h->rt_off);
	if (h->l1_size && h->l1_off < end && h->rt_off < h->l1_off + l1_bytes) {
		if (!img->check_mode)
			return ut_errf(err, -EINVAL, "'%s': L1 table and refcount table overlap", p);
		img->check_flags |= COW_CK_L1_RT;
	}
	if (h->nb_snapshots && ((h->snap_off & (cs - 1)) || h->snap_off == 0 || h->snap_off >= file_size))
		return ut_errf(err, -EINVAL, "'%s': invalid snapshot table offset 0x%llx", p,
			       (unsigned long long)h->snap_off);
	ret = 0;
	return ret;
}

int cow_hdr_build(const struct cow_hdr *h, uint8_t *buf, size_t cluster_size, struct ut_err *err)
{
	static const struct { uint8_t type, bit; const char *name; } feats[] = {
		{ 0, 0, "dirty bit" }, { 0, 1, "corrupt bit" }, { 0, 2, "external data file" },
		{ 0, 3, "compression type" }, { 0, 4, "extended L2 entries" },
		{ 1, 0, "lazy refcounts" }, { 2, 0, "bitmaps" }, { 2, 1, "raw external data" },
	};
	for (int with_table = 1; with_table >= 0; with_table--) {
		size_t o;
		uint32_t hl = h->version == 2 ? QCOW_HDR_V2_LEN : QCOW_HDR_OUR_LEN;
		size_t blen = strlen(h->backing);

		memset(buf, 0, cluster_size);
		cow_put32(buf, QCOW_MAGIC);
		cow_put32(buf + 4, h->version);
		cow_put32(buf + 20, h->cluster_bits);
		cow_put64(buf + 24, h->size);
		cow_put32(buf + 32, 0);
		cow_put32(buf + 36, h->l1_size);
		cow_put64(buf + 40, h->l1_off);
		cow_put64(buf + 48, h->rt_off);
		cow_put32(buf + 56, h->rt_clusters);
		cow_put32(buf + 60, h->nb_snapshots);
		cow_put64(buf + 64, h->snap_off);
		if (h->version == 3) {
			cow_put64(buf + 72, h->incompat);
			cow_put64(buf + 80, h->compat);
			cow_put64(buf + 88, h->autoclear);
			cow_put32(buf + 96, h->refcount_order);
			cow_put32(buf + 100, hl);
			buf[104] = h->comp_type;
		}
		o = hl;
		if (h->backing[0] && h->has_backing_fmt && h->backing_fmt[0]) {
			size_t fl = strlen(h->backing_fmt);
			if (o + 8 + ((fl + 7) & ~(size_t)7) > cluster_size)
				continue;
			cow_put32(buf + o, QCOW_EXT_BACKING_FMT);
			cow_put32(buf + o + 4, (uint32_t)fl);
			memcpy(buf + o + 8, h->backing_fmt, fl);
			o += 8 + ((fl + 7) & ~(size_t)7);
		}
		if (h->other_ext_len) {
			if (o + h->other_ext_len > cluster_size)
				continue;
			memcpy(buf + o, h->other_ext, h->other_ext_len);
			o += h->other_ext_len;
		}
		if (with_table && h->version == 3) {
			size_t tl = sizeof(feats) / sizeof(feats[0]) * 48;
			if (o + 8 + tl > cluster_size)
				continue;
			cow_put32(buf + o, QCOW_EXT_FEATURES);
			cow_put32(buf + o + 4, (uint32_t)tl);
			for (size_t i = 0; i < sizeof(feats) / sizeof(feats[0]); i++) {
				buf[o + 8 + i * 48] = feats[i].type;
				buf[o + 8 + i * 48 + 1] = feats[i].bit;
				memcpy(buf + o + 8 + i * 48 + 2, feats[i].name, strlen(feats[i].name));
			}
			o += 8 + tl;
		}
		/* end marker (zeros), in v2 images too, as QEMU writes it:
		 * without it a v2 reader takes the backing file name that
		 * follows for one more extension */
		if (o + 8 > cluster_size)
			continue;
		o += 8;
		if (blen) {
			if (o + blen > cluster_size)
				continue;
			memcpy(buf + o, h->backing, blen);
			cow_put64(buf + 8, o);
			cow_put32(buf + 16, (uint32_t)blen);
		}
		return 0;
	}
	return ut_errf(err, -ENOSPC, "header and backing file name do not fit in one cluster");
}

ssize_t cow_ext_find(const uint8_t *x, size_t n, uint32_t type, uint32_t min)
{
	for (size_t o = 0; o + 8 <= n;) {
		uint32_t t = cow_be32(x + o), l = cow_be32(x + o + 4);

		if (t == QCOW_EXT_END)
			break;
		if (t == type && l >= min && min <= n - o - 8)
			return (ssize_t)o;
		if (8 + (((size_t)l + 7) & ~(size_t)7) > n - o)
			break;
		o += 8 + (((size_t)l + 7) & ~(size_t)7);
	}
	return -1;
}

int cow_hdr_write(struct cow_img *img, struct ut_err *err)
{
	uint8_t *buf = calloc(1, img->cluster_size);
	int ret;

	if (!buf)
		return ut_errf(err, -ENOMEM, "out of memory");
	ret = cow_hdr_build(&img->h, buf, img->cluster_size, err);
	if (ret < 0) {
		ut_err_prefix(err, "'%s'", img->path);
		goto out;
	}
	img->h.backing_off = cow_be64(buf + 8);
	img->h.backing_len = cow_be32(buf + 16);
	img->h.hdr_len = img->h.version == 2 ? QCOW_HDR_V2_LEN : QCOW_HDR_OUR_LEN;
	ret = cow_pwrite_full(img, buf, img->cluster_size, 0, err);
	if (ret < 0)
		goto out;
	ret = cow_sync(img, err);
out:
	free(buf);
	return ret;
}

int cow_mark_corrupt(struct cow_img *img, struct ut_err *err, const char *fmt, ...)
{
	char msg[UT_ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!img->ro && img->fmt == COW_FMT_QCOW2 && img->h.version == 3 &&
	    !(img->h.incompat & QCOW_INCOMPAT_CORRUPT)) {
		uint8_t b[8];
		img->h.incompat |= QCOW_INCOMPAT_CORRUPT;
		cow_put64(b, img->h.incompat);
		if (cow_pwrite_full(img, b, 8, 72, NULL) == 0)
			(void)cow_sync(img, NULL);
		return ut_errf(err, -EUCLEAN, "'%s': %s (image marked corrupt)", img->path, msg);
	}
	return ut_errf(err, -EUCLEAN, "'%s': %s", img->path, msg);
}

/* ---- creation ---- */

static int probe_file(const char *path, char *fmt, size_t fmtlen, uint64_t *size,
		      struct ut_err *err)
{
	struct cow_img *b = NULL;
	struct cow_info bi;
	/* in the format given (its size is that format's), else probed;
	 * without locks, as qemu-img create opens it (force-share): an
	 * overlay of a disk a running VM writes can be made */
	int ret = cow_open(path, fmt[0] ? fmt : NULL, COW_O_RDONLY | COW_O_NO_LOCK, &b, err);

	if (ret < 0)
		return ret;
	cow_get_info(b, &bi);
	snprintf(fmt, fmtlen, "%s", bi.fmt == COW_FMT_QCOW2 ? "qcow2" : "raw");
	*size = bi.size;
	cow_close(b);
	return 0;
}

/* Preallocation (cow_create_opts.preallocation): the L2 tables from host
 * cluster @l2_first on, then @n_data data clusters from @data_first on, in
 * guest order. Every L2 entry names its cluster with COPIED (refcount 1);
 * extended entries have an all-zero bitmap (every subcluster unallocated:
 * read from the backing file, or as zeros without one). Then the data
 * area as @mode asks: a hole (metadata), reserved blocks (falloc) or
 * zeros written (full). 0 or -errno with @err. */
static int create_prealloc(struct cow_img *img, uint8_t *buf, uint64_t l2_first,
			   uint64_t n_l2, uint64_t data_first, uint64_t n_data,
			   enum cow_prealloc_mode mode, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, esz = img->h.incompat & QCOW_INCOMPAT_EXTL2 ? 16 : 8;
	uint64_t l2e = cs / esz, data_off = data_first * cs, data_len = n_data * cs;
	int ret = 0;

	for (uint64_t t = 0; t < n_l2; t++) {
		memset(buf, 0, cs);
		for (uint64_t e = 0; e < l2e && t * l2e + e < n_data; e++)
			cow_put64(buf + e * esz, (data_first + t * l2e + e) * cs | QCOW_OFLAG_COPIED);
		ret = cow_pwrite_full(img, buf, cs, (l2_first + t) * cs, err);
		if (ret < 0)
			goto out;
	}
	ret = cow_prealloc_fill(img, data_off, data_len, mode, err);
out:
	return ret;
}

int cow_create(const char *path, const struct cow_create_opts *o, struct ut_err *err)
{
	struct cow_img img;
	uint32_t cs = o->cluster_size ? o->cluster_size : 65536, bits = 0, order = 4;
	uint64_t size = o->size, l1_size, nl1, nrt = 1, nrb = 1, total = 0, epb, l2e;
	uint64_t n_l2 = 0, n_data = 0;
	uint8_t *buf = NULL;
	char bfmt[64] = "";
	int fd = -1, ret;

	memset(&img, 0, sizeof(img));
	while ((1u << bits) < cs)
		bits++;
	if ((1u << bits) != cs || bits < COW_MIN_CLUSTER_BITS || bits > COW_MAX_CLUSTER_BITS)
		return ut_errf(err, -EINVAL, "'%s': cluster size %u is not a power of two between 512 and 2M",
			       path, cs);
	if (o->refcount_bits) {
		order = 0;
		while (order < 7 && (1u << order) < o->refcount_bits)
			order++;
		if ((1u << order) != o->refcount_bits || order > 6)
			return ut_errf(err, -EINVAL, "'%s': refcount width %u is not a power of two up to 64",
				       path, o->refcount_bits);
	}
	if (o->version == 2 && (o->compression != COW_COMP_ZLIB || order != 4 || o->lazy_refcounts))
		return ut_errf(err, -EINVAL, "'%s': version 2 images support only zlib and 16-bit refcounts", path);
	if (o->extended_l2 && o->version == 2)
		return ut_errf(err, -EINVAL, "'%s': extended L2 entries need a version 3 image", path);
	if (o->extended_l2 && bits < COW_MIN_EXTL2_CLUSTER_BITS)
		return ut_errf(err, -EINVAL, "'%s': extended L2 entries need a cluster size of at least %u bytes",
			       path, 1u << COW_MIN_EXTL2_CLUSTER_BITS);
	if ((unsigned)o->preallocation > COW_PREALLOC_FULL)
		return ut_errf(err, -EINVAL, "'%s': unknown preallocation mode %d", path, (int)o->preallocation);
	if (o->preallocation && o->backing && !o->extended_l2)
		return ut_errf(err, -EINVAL,
			       "'%s': preallocation over a backing file needs extended L2 entries (a preallocated cluster must read from the backing file until written)",
			       path);
	if (o->backing) {
		char *resolved = cow_resolve_backing(path, o->backing);
		uint64_t bsize = 0;

		if (!resolved)
			return ut_errf(err, -ENOMEM, "out of memory");
		if (o->backing_fmt)
			snprintf(bfmt, sizeof(bfmt), "%s", o->backing_fmt);
		if (bfmt[0] && strcmp(bfmt, "qcow2") && strcmp(bfmt, "raw")) {
			free(resolved);
			return ut_errf(err, -EINVAL, "'%s': unknown backing format '%s'", path, bfmt);
		}
		if (o->backing_open && (!bfmt[0] || !size)) {
			free(resolved);
			return ut_errf(err, -EINVAL, "'%s': internal error: an open backing file needs its format and size given",
				       path);
		}
		ret = o->backing_open ? 0 : probe_file(resolved, bfmt, sizeof(bfmt), &bsize, err);
		free(resolved);
		if (ret < 0) {
			ut_err_prefix(err, "unable to use backing file '%s' for '%s'", o->backing, path);
			return ret;
		}
		if (!size)
			size = bsize;
		if (strlen(o->backing) >= sizeof(img.h.backing))
			return ut_errf(err, -ENAMETOOLONG, "'%s': backing file name too long", path);
	}
	if (size > (1ull << 56))
		return ut_errf(err, -EFBIG, "'%s': size too large", path);
	size = (size + 511) & ~511ull;
	l2e = o->extended_l2 ? cs / 16 : cs / 8;
	l1_size = (size + (uint64_t)cs * l2e - 1) / ((uint64_t)cs * l2e);
	if (l1_size * 8 > COW_MAX_L1_BYTES)
		return ut_errf(err, -EFBIG, "'%s': size too large for cluster size %u", path, cs);
	nl1 = (l1_size * 8 + cs - 1) / cs;
	if (o->preallocation) {
		n_l2 = l1_size;
		n_data = (size + cs - 1) / cs;
	}
	epb = ((uint64_t)cs * 8) >> order;
	for (int i = 0; i < 64; i++) {
		total = 1 + nrt + nrb + nl1 + n_l2 + n_data;
		uint64_t nrb2 = (total + epb - 1) / epb;
		uint64_t nrt2 = (nrb2 * 8 + cs - 1) / cs;
		if (nrb2 == nrb && nrt2 == nrt)
			break;
		nrb = nrb2;
		nrt = nrt2;
	}
	if (nrt * cs > COW_MAX_RT_BYTES || total * cs > (1ull << 56))
		return ut_errf(err, -EFBIG, "'%s': size too large for cluster size %u", path, cs);

	img.path = (char *)path;
	img.fmt = COW_FMT_QCOW2;
	img.cluster_size = cs;
	img.h.version = o->version ? (uint32_t)o->version : 3;
	img.h.cluster_bits = bits;
	img.h.size = size;
	img.h.l1_size = (uint32_t)l1_size;
	img.h.rt_off = cs;
	img.h.rt_clusters = (uint32_t)nrt;
	img.h.l1_off = l1_size ? (uint64_t)(1 + nrt + nrb) * cs : 0;
	img.h.refcount_order = order;
	if (o->lazy_refcounts)
		img.h.compat |= QCOW_COMPAT_LAZY;
	if (o->extended_l2)
		img.h.incompat |= QCOW_INCOMPAT_EXTL2;
	if (o->compression == COW_COMP_ZSTD) {
		img.h.comp_type = 1;
		img.h.incompat |= QCOW_INCOMPAT_COMPRESSION;
	}
	if (o->backing) {
		snprintf(img.h.backing, sizeof(img.h.backing), "%s", o->backing);
		snprintf(img.h.backing_fmt, sizeof(img.h.backing_fmt), "%s", bfmt);
		img.h.has_backing_fmt = true;
	}

	fd = ut_open_image(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644, err);
	if (fd < 0)
		return fd;
	img.fd = fd;
	buf = calloc(1, cs);
	if (!buf) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (ftruncate(fd, (off_t)(total * cs)) < 0) {
		ret = ut_errf_sys(err, -errno, "'%s': unable to size the file", path);
		goto out;
	}
	/* refcount table */
	for (uint64_t t = 0; t < nrt; t++) {
		memset(buf, 0, cs);
		for (uint64_t e = 0; e < cs / 8; e++) {
			uint64_t bi = t * (cs / 8) + e;
			if (bi < nrb)
				cow_put64(buf + e * 8, (1 + nrt + bi) * cs);
		}
		ret = cow_pwrite_full(&img, buf, cs, (1 + t) * cs, err);
		if (ret < 0)
			goto out;
	}
	/* refcount blocks: clusters 0..total-1 have refcount 1 */
	for (uint64_t b = 0; b < nrb; b++) {
		memset(buf, 0, cs);
		for (uint64_t e = 0; e < epb; e++)
			if (b * epb + e < total)
				cow_rc_write_entry(buf, order, e, 1);
		ret = cow_pwrite_full(&img, buf, cs, (1 + nrt + b) * cs, err);
		if (ret < 0)
			goto out;
	}
	/* the L1 table, written (as qemu-img writes it) rather than left a
	 * hole: changing an entry later then needs no new blocks, so a flush
	 * goes through on a full file system (ENOSPC); zeros, or with
	 * preallocation the L2 tables that follow it */
	for (uint64_t pos = 0; pos < l1_size * 8; pos += cs) {
		uint64_t n = l1_size * 8 - pos < cs ? l1_size * 8 - pos : cs;

		memset(buf, 0, cs);
		for (uint64_t e = 0; n_l2 && e < n / 8; e++)
			cow_put64(buf + e * 8, (img.h.l1_off / cs + nl1 + pos / 8 + e) * cs | QCOW_OFLAG_COPIED);
		ret = cow_pwrite_full(&img, buf, n, img.h.l1_off + pos, err);
		if (ret < 0)
			goto out;
	}
	if (o->preallocation) {
		uint64_t l2_first = img.h.l1_off / cs + nl1;

		ret = create_prealloc(&img, buf, l2_first, n_l2, l2_first + n_l2, n_data,
				      o->preallocation, err);
		if (ret < 0)
			goto out;
	}
	ret = cow_sync(&img, err);
	if (ret < 0)
		goto out;
	ret = cow_hdr_write(&img, err);
out:
	free(buf);
	free(img.h.other_ext);
	if (fd >= 0)
		close(fd);
	return ret;
}
