/* cow/backing.c — opening layers and backing chains (probing, name
 * resolution, loop detection, image locks), closing, image info, rewriting
 * the backing file name. */
#include "cow/qcow2.h"
#include "cow/lock.h"
#include "util/io.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *cow_resolve_backing(const char *overlay, const char *name)
{
	char *dup, *dir, *out;

	if (name[0] == '/' || !strchr(overlay, '/'))
		return strdup(name);
	dup = strdup(overlay);
	if (!dup)
		return NULL;
	dir = dirname(dup);
	if (asprintf(&out, "%s/%s", strcmp(dir, "/") ? dir : "", name) < 0)
		out = NULL;
	free(dup);
	return out;
}

void cow_img_free(struct cow_img *img)
{
	if (!img)
		return;
	if (img->fd >= 0) {
		if (img->locked)
			cow_unlock_fd(img->fd);
		close(img->fd);
	}
	cow_cache_free(&img->l2c);
	cow_cache_free(&img->rbc);
	cow_compress_free(img);
	cow_bitmaps_track_free(img);
	free(img->h.other_ext);
	free(img->meta);
	free(img->l1);
	free(img->l1_dirty);
	free(img->rt);
	free(img->pending);
	free(img->rt_dirty);
	free(img->scratch);
	free(img->cbuf);
	free(img->dec_buf);
	free(img->bounce);
	free(img->backing_path);
	free(img->path);
	free(img);
}

int cow_qcow2_open(struct cow_img *img, unsigned flags, struct ut_err *err)
{
	size_t hlen = img->file_size < (2u << 20) ? (size_t)img->file_size : (2u << 20);
	uint8_t *hbuf = malloc(hlen ? hlen : 1);
	uint8_t *raw = NULL;
	uint64_t cache_bytes = 32ull << 20;
	int ret;

	if (!hbuf)
		return ut_errf(err, -ENOMEM, "out of memory");
	ret = cow_pread_full(img, hbuf, hlen, 0, false, err);
	if (ret < 0)
		goto out;
	ret = cow_hdr_parse(img, hbuf, hlen, img->file_size, err);
	if (ret < 0)
		goto out;
	cow_geom_init(img);
	/* whole 512-byte sectors, as QEMU reads the header (a size that is
	 * not a multiple of 512 loses its last partial sector there too) */
	img->size = img->h.size & ~511ull;
	if (!img->ro) {
		if (img->h.incompat & QCOW_INCOMPAT_CORRUPT) {
			ret = ut_errf(err, -EUCLEAN, "'%s': image is marked corrupt; it can be opened read-only, or repaired with 'cowvm image check --repair all'",
				      img->path);
			goto out;
		}
		if (img->h.nb_snapshots) {
			/* a snapshot table that does not parse (QEMU refuses to
			 * open such an image): what its snapshots reference is
			 * unknown, and a refcount repair (a dirty image) could
			 * not count it and would leave clusters in use free;
			 * refused before anything is written */
			struct cow_snapshot_info *sn;
			uint32_t nsn;
			ret = cow_get_snapshots(img, &sn, &nsn, err);
			if (ret < 0) {
				if (ret != -ENOMEM)
					ut_err_prefix(err, "writing refused (the image can be opened read-only): its snapshot table is damaged");
				goto out;
			}
			cow_free_snapshots(sn, nsn);
		}
		if (img->h.autoclear && !img->hdr_only) {
			/* features we do not maintain: clear their bits (spec);
			 * persistent bitmaps are kept, marked in use, and the
			 * consistent ones tracked and stored at close
			 * (bitmaps.c); a header-only open changes nothing they
			 * describe */
			uint64_t keep = 0;
			uint8_t b[8];
			/* (a resize keeps them consistent itself: the directory
			 * is checked by cow_bitmaps_resize_begin) */
			ret = img->keep_bitmaps ? cow_bitmaps_valid(img, err) : cow_bitmaps_open_rw(img, err);
			if (ret < 0)
				goto out;
			if (ret == 0)
				keep = img->h.autoclear & 1;
			ret = 0;
			if (keep != img->h.autoclear) {
				cow_put64(b, keep);
				ret = cow_pwrite_full(img, b, 8, 88, err);
				if (ret == 0)
					ret = cow_sync(img, err);
			}
			if (ret < 0) {
				ut_err_prefix(err, "'%s': unable to update the header", img->path);
				goto out;
			}
			img->h.autoclear = keep;
		}
		/* the snapshot table, the snapshots' L1 tables and the bitmap
		 * directory, for the overlap check of new clusters (I8) */
		ret = cow_meta_ranges_load(img, err);
		if (ret < 0)
			goto out;
	}
	if ((img->h.incompat & QCOW_INCOMPAT_DIRTY) && !img->ro) {
		struct cow_check_res r;
		if (flags & COW_O_NO_REPAIR) {
			ret = ut_errf(err, -EUCLEAN, "'%s': image is dirty (lazy refcounts); run 'cowvm image check --repair all'",
				      img->path);
			goto out;
		}
		memset(&r, 0, sizeof(r));
		/* cow_check opens a second, unlocked fd of the file: our locks on
		 * img->fd keep others out meanwhile (and are re-asserted after, in
		 * case that close dropped them under the POSIX-lock fallback) */
		/* a repair may change what the guest reads (entries that
		 * point at no data): not behind the back of the bitmaps,
		 * which record it as a change of everything (every bit set;
		 * dirty bits over unchanged data are allowed) */
		cow_bm_track_all_dirty(img);
		ret = cow_check(img->path, COW_REPAIR_ALL, &r, err);
		ut_buf_release(&r.msgs);
		if (ret < 0)
			goto out;
		if (img->locked) {
			ret = cow_lock_fd(img->fd, img->path, COW_LOCK_WRITE, err);
			if (ret < 0)
				goto out;
		}
		ret = cow_pread_full(img, hbuf, hlen, 0, false, err);
		if (ret == 0) {
			struct stat st;
			if (fstat(img->fd, &st) == 0)
				img->file_size = (uint64_t)st.st_size;
			ret = cow_hdr_parse(img, hbuf, hlen, img->file_size, err);
		}
		if (ret < 0)
			goto out;
	}
	img->l1 = calloc(img->h.l1_size ? img->h.l1_size : 1, sizeof(uint64_t));
	img->l1_dirty = calloc((img->h.l1_size + 63) / 64 + 1, 1);
	raw = malloc((size_t)img->h.l1_size * 8 + 1);
	if (!img->l1 || !img->l1_dirty || !raw) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = cow_pread_full(img, raw, (size_t)img->h.l1_size * 8, img->h.l1_off, false, err);
	if (ret < 0)
		goto out;
	for (uint32_t i = 0; i < img->h.l1_size; i++)
		img->l1[i] = cow_be64(raw + (size_t)i * 8);
	ret = cow_rc_open(img, err);
	if (ret < 0)
		goto out;
	/* test hook: a tiny L2 cache forces writeback evictions */
	if (getenv("COWVM_COW_L2_CACHE"))
		cache_bytes = strtoull(getenv("COWVM_COW_L2_CACHE"), NULL, 0);
	if (cache_bytes / img->cluster_size > 65536)
		cache_bytes = 65536ull * img->cluster_size;
	ret = cow_cache_init(&img->l2c, img->cluster_size, (unsigned)(cache_bytes / img->cluster_size));
	if (ret == 0)
		ret = cow_cache_init(&img->rbc, img->cluster_size,
				     (unsigned)((4ull << 20) / img->cluster_size < 4 ? 4 : (4ull << 20) / img->cluster_size));
	img->scratch = aligned_alloc(4096, 2 * (size_t)img->cluster_size > 4096 ? 2 * (size_t)img->cluster_size : 4096);
	img->cbuf = malloc(2 * (size_t)img->cluster_size + 512);
	img->dec_buf = malloc(img->cluster_size);
	if (ret < 0 || !img->scratch || !img->cbuf || !img->dec_buf) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
out:
	free(raw);
	free(hbuf);
	return ret;
}

int cow_open_layer(const char *path, const char *fmt, unsigned flags, int depth,
		   struct cow_img **out, struct ut_err *err)
{
	struct cow_img *img = calloc(1, sizeof(*img));
	uint8_t magic[4] = { 0 };
	struct stat st;
	int ret, oflags = O_CLOEXEC | ((flags & COW_O_RDONLY) ? O_RDONLY : O_RDWR);

	*out = NULL;
	if (!img)
		return ut_errf(err, -ENOMEM, "out of memory");
	img->fd = -1;
	img->path = strdup(path);
	img->ro = flags & COW_O_RDONLY;
	img->hdr_only = !img->ro && (flags & COW_O_HEADER_ONLY);
	img->keep_bitmaps = !img->ro && (flags & COW_O_KEEP_BITMAPS);
	img->depth = depth;
	if (!img->path) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (flags & COW_O_DIRECT)
		oflags |= O_DIRECT;
	img->fd = ut_open_image(path, oflags, 0, err);
	if (img->fd == -EINVAL && (flags & COW_O_DIRECT)) {
		ret = cow_dio_unsupported(err, path);
		goto out;
	}
	if (img->fd < 0) {
		ret = img->fd;
		goto out;
	}
	if (flags & COW_O_DIRECT) {
		ret = cow_dio_setup(img, err);
		if (ret < 0)
			goto out;
	}
	if (fstat(img->fd, &st) < 0) {
		ret = ut_errf_sys(err, -errno, "unable to stat '%s'", path);
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		ret = ut_errf(err, -EISDIR, "unable to open '%s': is a directory", path);
		goto out;
	}
	/* before anything is read: nothing below may see a half-written
	 * header, and a writable open may repair or update the header */
	if (!(flags & COW_O_NO_LOCK)) {
		ret = cow_lock_fd(img->fd, path, img->ro ? COW_LOCK_SHARED : COW_LOCK_WRITE, err);
		if (ret < 0)
			goto out;
		img->locked = ret > 0;
	}
	img->file_size = cow_fd_size(img->fd, &st);
	ret = cow_pread_full(img, magic, 4, 0, true, err);
	if (ret < 0) {
		ut_err_prefix(err, "unable to read '%s'", path);
		goto out;
	}
	if (!fmt || !strcmp(fmt, "auto"))
		img->fmt = cow_probe(magic, 4) ? COW_FMT_QCOW2 : COW_FMT_RAW;
	else if (!strcmp(fmt, "qcow2"))
		img->fmt = COW_FMT_QCOW2;
	else if (!strcmp(fmt, "raw"))
		img->fmt = COW_FMT_RAW;
	else {
		ret = ut_errf(err, -EINVAL, "'%s': unknown format '%s'", path, fmt);
		goto out;
	}
	if (img->fmt == COW_FMT_RAW) {
		/* whole 512-byte sectors, as QEMU sizes a raw file: the tail
		 * of the last one, past the end of the file, reads as zeros */
		img->size = (img->file_size + 511) & ~511ull;
		ret = 0;
		/* a direct write of the last block would be a whole aligned
		 * block, past the end of the file: the disk would grow (QEMU
		 * refuses such a file for writing with cache=none too) */
		if (img->direct && !img->ro && (img->file_size % img->dio_off))
			ret = ut_errf(err, -EINVAL, "unable to open '%s' with cache=none for writing: its size (%llu bytes) is not a multiple of the O_DIRECT alignment (%u bytes)",
				      path, (unsigned long long)img->file_size, img->dio_off);
		goto out;
	}
	ret = cow_qcow2_open(img, flags, err);
out:
	if (ret < 0)
		cow_img_free(img);
	else
		*out = img;
	return ret;
}

int cow_open(const char *path, const char *fmt, unsigned flags, struct cow_img **out,
	     struct ut_err *err)
{
	struct cow_img *top = NULL, *cur;
	struct { dev_t dev; ino_t ino; } *seen = NULL;
	int nseen = 0, ret;
	struct stat st;

	*out = NULL;
	ret = cow_open_layer(path, fmt, flags, 1, &top, err);
	if (ret < 0)
		return ret;
	if (flags & COW_O_NO_BACKING) {
		/* the name it resolves to, for cow_get_info, without opening it */
		if (top->fmt == COW_FMT_QCOW2 && top->h.backing[0]) {
			top->backing_path = cow_resolve_backing(top->path, top->h.backing);
			if (!top->backing_path) {
				ret = ut_errf(err, -ENOMEM, "out of memory");
				goto out;
			}
		}
		goto done;
	}
	seen = calloc(COW_MAX_CHAIN + 1, sizeof(*seen));
	if (!seen) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (fstat(top->fd, &st) == 0) {
		seen[0].dev = st.st_dev;
		seen[0].ino = st.st_ino;
		nseen = 1;
	}
	for (cur = top; cur->fmt == COW_FMT_QCOW2 && cur->h.backing[0]; cur = cur->backing) {
		struct cow_img *b = NULL;
		const char *bf = cur->h.has_backing_fmt ? cur->h.backing_fmt : NULL;

		if (cur->depth >= COW_MAX_CHAIN) {
			ret = ut_errf(err, -ELOOP, "'%s': backing chain deeper than %d", path, COW_MAX_CHAIN);
			goto out;
		}
		cur->backing_path = cow_resolve_backing(cur->path, cur->h.backing);
		if (!cur->backing_path) {
			ret = ut_errf(err, -ENOMEM, "out of memory");
			goto out;
		}
		if (stat(cur->backing_path, &st) < 0) {
			ret = ut_errf_sys(err, -errno, "'%s': unable to open backing file '%s'", cur->path,
					  cur->backing_path);
			goto out;
		}
		for (int i = 0; i < nseen; i++) {
			if (seen[i].dev == st.st_dev && seen[i].ino == st.st_ino) {
				ret = ut_errf(err, -ELOOP, "'%s': backing chain loops: '%s' is already in the chain of '%s'",
					      cur->path, cur->backing_path, path);
				goto out;
			}
		}
		seen[nseen].dev = st.st_dev;
		seen[nseen].ino = st.st_ino;
		nseen++;
		if (bf && strcmp(bf, "qcow2") && strcmp(bf, "raw")) {
			ret = ut_errf(err, -ENOTSUP, "'%s': unsupported backing format '%s'", cur->path, bf);
			goto out;
		}
		ret = cow_open_layer(cur->backing_path, bf, COW_O_RDONLY | (flags & COW_O_NO_LOCK),
				     cur->depth + 1, &b, err);
		if (ret < 0) {
			ut_err_prefix(err, "'%s': backing file", cur->path);
			goto out;
		}
		cur->backing = b;
	}
	for (cur = top; cur; cur = cur->backing) {
		int d = 0;
		for (struct cow_img *c = cur; c; c = c->backing)
			d++;
		cur->depth = d;
	}
done:
	ret = 0;
out:
	free(seen);
	if (ret < 0)
		cow_close(top);
	else
		*out = top;
	return ret;
}

int cow_close(struct cow_img *img)
{
	return cow_close_msg(img, NULL, 0);
}

int cow_close_msg(struct cow_img *img, char *msg, size_t size)
{
	struct ut_err e;
	int ret = 0, r;

	ut_err_clear(&e);
	if (size)
		msg[0] = '\0';
	if (!img)
		return 0;
	if (!img->ro && img->fmt == COW_FMT_QCOW2 && img->l1) {
		/* the tracked bitmaps stored (with a flush first), consistent */
		ret = cow_bitmaps_store(img, &e);
		r = cow_flush(img, ret < 0 ? NULL : &e);
		if (ret == 0)
			ret = r;
		/* bitmaps consistent at open that tracking could not keep
		 * (no memory): they stay in use, and only this says so */
		if (ret == 0 && img->bm_problem_in_use)
			ret = img->bm_problem;
	}
	/* after the flush: free the blocks reserved past the end (I12) */
	r = cow_prealloc_trim(img, ret < 0 ? NULL : &e);
	if (ret == 0)
		ret = r;
	if (size && e.code)
		snprintf(msg, size, "%s", e.msg);
	else if (size && img->bm_problem)
		snprintf(msg, size, "%s", img->bm_problem_msg);
	cow_close(img->backing);
	img->backing = NULL;
	cow_img_free(img);
	return ret;
}

void cow_get_info(const struct cow_img *img, struct cow_info *info)
{
	struct stat st;

	memset(info, 0, sizeof(*info));
	info->path = img->path;
	info->fmt = img->fmt;
	info->size = img->size;
	if (fstat(img->fd, &st) == 0)
		info->actual_size = (uint64_t)st.st_blocks * 512;
	info->read_only = img->ro;
	info->chain_depth = img->depth;
	if (img->fmt != COW_FMT_QCOW2)
		return;
	info->cluster_size = img->cluster_size;
	info->version = (int)img->h.version;
	info->refcount_bits = 1u << img->h.refcount_order;
	info->compression = img->h.comp_type ? COW_COMP_ZSTD : COW_COMP_ZLIB;
	info->lazy_refcounts = img->h.compat & QCOW_COMPAT_LAZY;
	info->extended_l2 = img->extl2;
	info->dirty = img->h.incompat & QCOW_INCOMPAT_DIRTY;
	info->corrupt = img->h.incompat & QCOW_INCOMPAT_CORRUPT;
	info->nb_snapshots = img->h.nb_snapshots;
	info->backing = img->h.backing[0] ? img->h.backing : NULL;
	info->backing_fmt = img->h.has_backing_fmt ? img->h.backing_fmt : NULL;
	info->backing_path = img->backing_path;
}

int cow_layer_dio_align(const struct cow_img *layer, uint32_t *mem_align, uint32_t *off_align)
{
	*mem_align = layer->direct ? layer->dio_mem : 1;
	*off_align = layer->direct ? layer->dio_off : 1;
	return layer->direct;
}

bool cow_layer_dio_ok(const struct cow_img *layer, const struct iovec *iov, int n, uint64_t pos,
		      uint64_t len, uint64_t host)
{
	uint32_t mem, off;

	if (!cow_layer_dio_align(layer, &mem, &off))
		return true;
	if ((host | len) & (off - 1))
		return false;
	for (int i = 0; i < n && len; i++) {
		uint64_t l = iov[i].iov_len;
		uintptr_t b = (uintptr_t)iov[i].iov_base;

		if (pos >= l) {
			pos -= l;
			continue;
		}
		b += pos;
		l -= pos;
		if (l > len)
			l = len;
		if ((b & (mem - 1)) || (l & (off - 1)))
			return false;
		len -= l;
		pos = 0;
	}
	return true;
}

struct cow_img *cow_backing(const struct cow_img *img) { return img->backing; }
uint64_t cow_size(const struct cow_img *img) { return img->size; }
uint32_t cow_cluster_size(const struct cow_img *img) { return img->fmt == COW_FMT_QCOW2 ? img->cluster_size : 0; }
enum cow_fmt cow_format(const struct cow_img *img) { return img->fmt; }
const char *cow_path(const struct cow_img *img) { return img->path; }

int cow_set_backing(struct cow_img *img, const char *backing, const char *backing_fmt,
		    struct ut_err *err)
{
	struct cow_hdr save;
	int ret;

	if (img->fmt != COW_FMT_QCOW2)
		return ut_errf(err, -EINVAL, "'%s': only qcow2 images have a backing file", img->path);
	if (img->ro)
		return ut_errf(err, -EROFS, "'%s': image is opened read-only", img->path);
	/* a new backing file changes what the guest reads: not behind the
	 * back of bitmaps kept consistent (a header-only open may) */
	if (img->keep_bitmaps && (ret = cow_data_writable(img, err)) < 0)
		return ret;
	if (backing && strlen(backing) >= sizeof(img->h.backing))
		return ut_errf(err, -ENAMETOOLONG, "'%s': backing file name too long", img->path);
	ret = cow_flush(img, err);
	if (ret < 0)
		return ret;
	save = img->h;
	snprintf(img->h.backing, sizeof(img->h.backing), "%s", backing ? backing : "");
	snprintf(img->h.backing_fmt, sizeof(img->h.backing_fmt), "%s",
		 backing && backing_fmt ? backing_fmt : "");
	img->h.has_backing_fmt = backing && backing_fmt;
	ret = cow_hdr_write(img, err);
	if (ret < 0) {
		img->h = save;
		return ret;
	}
	return 0;
}

int cow_data_writable(const struct cow_img *img, struct ut_err *err)
{
	if (img->ro || img->hdr_only)
		return ut_errf(err, -EROFS, "'%s': image is opened read-only", img->path);
	if (img->keep_bitmaps && !img->resizing)
		return ut_errf(err, -EPERM, "'%s': opened for resizing only (COW_O_KEEP_BITMAPS): a data change would not be recorded in its persistent bitmaps, which stay marked consistent",
			       img->path);
	return 0;
}
