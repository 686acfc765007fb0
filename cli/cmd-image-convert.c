/* cli/cmd-image-convert.c — `cowvm image convert`, `rebase` and `commit`:
 * the commands that copy guest data between images. Images they write are
 * locked for writing (cow/lock.h), images they only read are locked shared. */
#include "cli/cli.h"
#include "cli/image.h"
#include "cow/lock.h"
#include "util/io.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct progress {
	bool on;
	int last;
};

static void progress_update(struct progress *p, uint64_t done, uint64_t total)
{
	int pct;

	if (!p->on || !total)
		return;
	pct = (int)(done * 1000 / total);
	if (pct == p->last)
		return;
	p->last = pct;
	fprintf(stderr, "\r    (%5.1f/100%%) [", pct / 10.0);
	for (int i = 0; i < 40; i++)
		fputc(i * 1000 / 40 < pct ? '#' : ' ', stderr);
	fputc(']', stderr);
	if (done >= total)
		fputc('\n', stderr);
	fflush(stderr);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	size_t i = 0;

	for (; i < n && (i & 7); i++)
		if (p[i])
			return false;
	for (; i + 8 <= n; i += 8)
		if (*(const uint64_t *)(p + i))
			return false;
	for (; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* The depth in @img's chain (0: @img itself) of the layer whose file is
 * @st's (by inode), or -1 when none is. */
static int chain_depth(struct cow_img *img, const struct stat *st)
{
	struct stat b;

	for (int d = 0; img; img = cow_backing(img), d++)
		if (fstat(cow_layer_fd(img), &b) == 0 && b.st_dev == st->st_dev && b.st_ino == st->st_ino)
			return d;
	return -1;
}

/* Is @path (if it exists) the file of @img or of a layer below it? */
static bool is_in_chain(const char *path, struct cow_img *img)
{
	struct stat a;

	return stat(path, &a) == 0 && chain_depth(img, &a) >= 0;
}

/* Read [off, off+len) of @img, zeros beyond its virtual size. */
static int read_clip(struct cow_img *img, uint8_t *buf, uint64_t len, uint64_t off,
		     struct ut_err *err)
{
	uint64_t size = img ? cow_size(img) : 0, n = len;

	if (!img || off >= size) {
		memset(buf, 0, len);
		return 0;
	}
	if (off + n > size) {
		n = size - off;
		memset(buf + n, 0, len - n);
	}
	return cow_read(img, buf, n, off, err);
}

/* Make [off, off + len) of @dst read as zeros, where it does not already
 * (below @from: a new overlay reads zeros past the end of its backing
 * file, where qemu-img convert -B leaves it unallocated too). */
static int put_zeros(struct cow_img *dst, uint64_t len, uint64_t off, uint64_t from, struct ut_err *err)
{
	if (off >= from)
		return 0;
	if (len > from - off)
		len = from - off;
	return cow_write_zeroes(dst, len, off, COW_ZERO_MAY_UNMAP, err);
}

/* Write the run [off, off + len) of @buf into @dst: compressed whole
 * clusters where @compress (a partial cluster at either end, which a
 * copy of a top layer over a backing file can leave, written as is). */
static int write_run(struct cow_img *dst, const uint8_t *buf, uint64_t len, uint64_t off, bool compress,
		     uint64_t cs, struct ut_err *err)
{
	uint64_t head = 0, mid = len, end = off + len;

	if (!compress)
		return cow_write(dst, buf, len, off, err);
	if (off & (cs - 1)) {
		head = cs - (off & (cs - 1));
		if (head > len)
			head = len;
	}
	/* (a run reaching the end of the disk is whole: cow_write_compressed) */
	mid = end == cow_size(dst) ? len - head : ((end & ~(cs - 1)) > off + head ? (end & ~(cs - 1)) - off - head : 0);
	if (head && cow_write(dst, buf, head, off, err) < 0)
		return -EIO;
	if (mid && cow_write_compressed(dst, buf + head, mid, off + head, err) < 0)
		return -EIO;
	if (head + mid < len && cow_write(dst, buf + head + mid, len - head - mid, off + head + mid, err) < 0)
		return -EIO;
	return 0;
}

/* qemu-img convert -l's SNAPSHOT_PARAM: "snapshot.id=ID",
 * "snapshot.name=NAME" or both, comma separated (QemuOpts syntax: ",," is
 * a comma in a value, a key without "=" is "on", "no" before it "off"; the
 * last of a key wins), or, not starting with "snapshot.", an ID or a name
 * (*either). *id and *name are malloc'ed (NULL when not given). 0, or -1
 * with the problem in @why. */
static int snap_param(const char *arg, char **id, char **name, bool *either, char *why,
		      size_t whylen)
{
	const char *p = arg;

	*id = *name = NULL;
	*either = strncmp(arg, "snapshot.", 9) != 0;
	if (*either) {
		*id = strdup(arg);
		return *id ? 0 : -1;
	}
	while (*p) {
		const char *k = p, *eq;
		size_t klen;
		char *v, **slot;
		bool off = false;

		while (*p && *p != '=' && *p != ',')
			p++;
		klen = (size_t)(p - k);
		eq = *p == '=' ? p : NULL;
		if (!eq && klen > 2 && !strncmp(k, "no", 2)) {
			k += 2;
			klen -= 2;
			off = true;
		}
		if (klen == 11 && !strncmp(k, "snapshot.id", 11))
			slot = id;
		else if (klen == 13 && !strncmp(k, "snapshot.name", 13))
			slot = name;
		else {
			snprintf(why, whylen, "invalid parameter '%.*s' in -l '%s' (snapshot.id, snapshot.name)",
				 (int)klen, k, arg);
			goto bad;
		}
		v = malloc(strlen(p) + 4);
		if (!v) {
			snprintf(why, whylen, "out of memory");
			goto bad;
		}
		if (!eq) {
			strcpy(v, off ? "off" : "on");
		} else {
			size_t n = 0;
			for (p++; *p; p++) {
				if (*p == ',' && p[1] != ',')
					break;
				if (*p == ',')
					p++;
				v[n++] = *p;
			}
			v[n] = 0;
		}
		free(*slot);
		*slot = v;
		if (*p == ',')
			p++;
	}
	if (!*id && !*name) {
		snprintf(why, whylen, "-l '%s' names no snapshot", arg);
		goto bad;
	}
	return 0;
bad:
	free(*id);
	free(*name);
	*id = *name = NULL;
	return -1;
}

int cli_image_convert(int argc, char **argv)
{
	static const struct option lo[] = {
		CLI_IMAGE_SHAPE_OPTIONS,
		{ "progress", no_argument, NULL, 'p' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sfmt = NULL, *ofmt = NULL, *dpath, *snap = NULL;
	char *snap_id = NULL, *snap_name = NULL, why[512];
	bool snap_either = false;
	unsigned sflags = COW_O_RDONLY;
	struct cow_create_opts co = { 0 };
	struct cow_img *src = NULL, *dst = NULL;
	struct progress pr = { isatty(2), -1 };
	bool compress = false, nocreate = false, zero_init, create_opts = false, created = false;
	unsigned long long v;
	unsigned threads = 0;
	uint64_t size, dsize, chunk, cs, step, l, zfrom;
	struct cli_reader *rd = NULL;
	uint8_t *buf;
	struct ut_err err;
	int c, r, ret = CLI_EXIT_FAIL, lfd = -1, extl2 = -1;
	long long sparse = -1;

	ut_err_clear(&err);
	while ((c = getopt_long(argc, argv, "f:O:B:F:cl:m:nS:pqU", lo, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (cli_parse_uint(optarg, COW_COMPRESS_THREADS_MAX, &v) || v < 1)
				return cli_usage_error("image convert", "-m takes 1 to %d threads, not '%s'",
						       COW_COMPRESS_THREADS_MAX, optarg);
			threads = (unsigned)v;
			break;
		case 'U': sflags |= COW_O_NO_LOCK; break;
		case 'l': snap = optarg; break;
		case 'f': sfmt = optarg; break;
		case 'O': ofmt = optarg; break;
		case 'B': co.backing = optarg; break;
		case 'F': co.backing_fmt = optarg; break;
		case 'n': nocreate = true; break;
		case 'S':
			/* (as qemu-img: whole sectors, at most 16 MiB) */
			if (cli_parse_size(optarg, 0, &v) || (v & 511) || v > (16u << 20))
				return cli_usage_error("image convert",
						       "-S %s: expected a multiple of 512 up to 16M (0: no sparse detection, fully allocated)",
						       optarg);
			sparse = (long long)v;
			break;
		case 'c': compress = true; break;
		case 'p': pr.on = true; break;
		case 'q': pr.on = false; break;
		default:
			r = cli_image_shape_opt("image convert", c, optarg, &co, &extl2);
			if (r)
				return r < 0 ? cli_usage_error("image convert", "bad option") : r;
			create_opts = true;
		}
	}
	if (optind + 2 != argc)
		return cli_usage_error("image convert", "need SRC and DST");
	dpath = argv[optind + 1];
	if (ofmt && strcmp(ofmt, "qcow2") && strcmp(ofmt, "raw"))
		return cli_usage_error("image convert", "-O takes raw or qcow2");
	if (co.backing_fmt && strcmp(co.backing_fmt, "qcow2") && strcmp(co.backing_fmt, "raw"))
		return cli_usage_error("image convert", "-F takes raw or qcow2");
	if (co.backing_fmt && !co.backing)
		return cli_usage_error("image convert", "-F names the format of the backing file -B: give -B");
	/* (as qemu-img: "-o has no effect when skipping image creation") */
	if (nocreate && create_opts)
		return cli_usage_error("image convert",
				       "--cluster-size, --compression, --refcount-bits, --extended-l2 and --preallocation have no effect with -n (the destination exists)");
	if (!nocreate && !ofmt)
		ofmt = "qcow2";
	if (ofmt && !strcmp(ofmt, "raw") && (compress || (co.backing && !nocreate)))
		return cli_usage_error("image convert", compress ? "-c needs -O qcow2" :
				       "-B needs -O qcow2 (a raw file has no backing file)");
	/* (as qemu-img: "Compression and preallocation not supported at the
	 * same time") */
	if (compress && co.preallocation != COW_PREALLOC_OFF)
		return cli_usage_error("image convert", "compression (-c) and --preallocation cannot be used together");
	/* (as QEMU's file-posix: "Unsupported preallocation mode: metadata") */
	if (ofmt && !strcmp(ofmt, "raw") && co.preallocation == COW_PREALLOC_METADATA)
		return cli_usage_error("image convert", "--preallocation metadata needs -O qcow2 (raw takes falloc or full)");
	/* a new overlay gets extended L2 entries as `image create -b` gives
	 * them (cluster size >= 16 KiB) */
	if (extl2 < 0)
		extl2 = co.backing && (co.cluster_size ? co.cluster_size : 65536) >= 16384;
	co.extended_l2 = extl2;
	if (co.preallocation && co.backing && !co.extended_l2)
		return cli_usage_error("image convert",
				       "--preallocation with a backing file needs extended L2 entries (--extended-l2=on, cluster size >= 16K)");
	if (co.backing && !nocreate && cli_image_is_own_backing(dpath, co.backing))
		return cli_usage_error("image convert", "'%s' cannot be its own backing file", dpath);
	if (snap && snap_param(snap, &snap_id, &snap_name, &snap_either, why, sizeof(why)) < 0)
		return cli_usage_error("image convert", "%s", why);
	/* -l: the snapshot's content, at the image's size, as qemu-img
	 * convert -l (QEMU 7.2's bdrv_snapshot_load_tmp keeps the size) */
	if (snap ? cow_open_snapshot(argv[optind], sfmt,
				     sflags | COW_O_SNAP_IMAGE_SIZE | (snap_either ? COW_O_SNAP_ID_OR_NAME : 0),
				     snap_id, snap_name, &src, &err) < 0
		 : cow_open(argv[optind], sfmt, sflags, &src, &err) < 0) {
		cli_image_error(&err, true);   /* -U would do for the source */
		goto out;
	}
	size = cow_size(src);
	/* (with -U no lock would stop it) */
	if (is_in_chain(dpath, src)) {
		ut_errf(&err, -EINVAL, "'%s' is the source image or one of its backing files", dpath);
		goto fail;
	}
	/* the destination is locked for writing from before it is truncated
	 * (or, with -n, written) until it is closed; lfd holds the locks, so
	 * dst opens without */
	created = !nocreate && access(dpath, F_OK) < 0 && errno == ENOENT;
	if (cow_lock_path(dpath, COW_LOCK_WRITE, !nocreate, &lfd, &err) < 0)
		goto fail;
	if (nocreate) {
		if (lfd < 0) {
			ut_errf(&err, -ENOENT, "unable to open '%s': no such file (-n writes into an existing image)",
				dpath);
			goto fail;
		}
	} else if (!strcmp(ofmt, "qcow2")) {
		co.size = size;
		if (cow_create(dpath, &co, &err) < 0)
			goto fail;
	} else {
		int fd = ut_open_image(dpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644, &err);
		if (fd < 0)
			goto fail;
		/* preallocated: grown from empty once opened, below */
		if (!co.preallocation && ftruncate(fd, (off_t)size) < 0) {
			ut_errf_sys(&err, -errno, "unable to create '%s'", dpath);
			if (fd >= 0)
				close(fd);
			goto fail;
		}
		close(fd);
	}
	/* (-n without -O: the destination's format is probed) */
	if (cow_open(dpath, ofmt, COW_O_NO_LOCK, &dst, &err) < 0)
		goto fail;
	if (nocreate && cow_size(dst) < size) {
		ut_errf(&err, -EINVAL, "'%s' (%llu bytes) is smaller than '%s' (%llu bytes)", dpath,
			(unsigned long long)cow_size(dst), argv[optind], (unsigned long long)size);
		goto fail;
	}
	if (nocreate && compress && cow_format(dst) != COW_FMT_QCOW2) {
		ut_errf(&err, -EINVAL, "'%s' is a raw image: -c needs a qcow2 destination", dpath);
		goto fail;
	}
	/* a raw destination preallocated as qemu-img's (falloc: its blocks
	 * reserved; full: zeros written), before the data */
	if (!nocreate && !strcmp(ofmt, "raw") && co.preallocation && size &&
	    cow_grow_prealloc(dst, size, co.preallocation, &err) < 0)
		goto fail;
	dsize = cow_size(dst);
	/* a new image without a backing file reads zeros where nothing is
	 * written; an existing one (-n) or a new overlay (-B) gets its zeros
	 * written (zero clusters), as qemu-img writes them */
	zero_init = !nocreate && !co.backing;
	zfrom = !nocreate && cow_backing(dst) ? cow_size(cow_backing(dst)) : UINT64_MAX;
	if (compress) {
		/* the compressing threads: by default one per online CPU */
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		if (!threads)
			threads = ncpu < 1 ? 1 : ncpu > COW_COMPRESS_THREADS_MAX ?
				  COW_COMPRESS_THREADS_MAX : (unsigned)ncpu;
		cow_set_compress_threads(dst, threads);
	}
	cs = cow_cluster_size(dst) ? cow_cluster_size(dst) : 65536;
	/* zeros are skipped by the cluster, or, where the destination reads
	 * zeros already and is written in place (raw, preallocated), by the
	 * 4 KiB as qemu-img convert's default -S 4k: with metadata those stay
	 * holes */
	step = (cow_format(dst) != COW_FMT_QCOW2 || co.preallocation) && !compress && cs > 4096 ? 4096 : cs;
	/* -S: zero runs of that size are skipped (compressed: whole
	 * clusters still), 0: none (step 0) */
	if (sparse >= 0 && (!compress || !sparse))
		step = (uint64_t)sparse;
	/* the unit read ahead and written: 2 MiB (a buffer that stays in the
	 * CPU's cache between its read and its write: 10% faster than 8 MiB
	 * here), or, compressed, a batch for the threads (cow_write_compressed):
	 * 8 MiB, at least two clusters per thread */
	chunk = cs > (2u << 20) ? cs : (2u << 20);
	if (compress && chunk < (8u << 20))
		chunk = 8u << 20;
	if (compress && chunk < 2 * (uint64_t)threads * cs)
		chunk = 2 * (uint64_t)threads * cs;
	/* the source is read ahead on a thread while this one writes; with
	 * -B only its top layer is copied: the new backing file stands for
	 * its backing chain (as qemu-img convert -B) */
	if (cli_reader_start(src, chunk, cs, co.backing ? 1 : 0, &rd, &err) < 0)
		goto fail;
	for (;;) {
		struct cli_rchunk *ck;
		uint64_t off, n;
		int r = cli_reader_next(rd, &ck, &err);

		if (r < 0)
			goto fail;
		if (r > 0)
			break;
		off = ck->off;
		n = ck->n;
		buf = ck->buf;
		if (ck->kind == CLI_RK_ZERO && !step) {
			/* -S 0: zeros written as data (fully allocated) */
			memset(buf, 0, n < chunk ? n : chunk);
			for (uint64_t o = 0; o < n; o += l) {
				l = n - o < chunk ? n - o : chunk;
				if (write_run(dst, buf, l, off + o, compress, cs, &err) < 0)
					goto fail;
			}
		} else if (ck->kind == CLI_RK_ZERO && !zero_init && put_zeros(dst, n, off, zfrom, &err) < 0) {
			goto fail;
		}
		/* each run of pieces (step bytes) holding data is one write;
		 * all zero ones are skipped where the target reads zero
		 * already, else written as zeros (with -S 0 a chunk is one
		 * run) */
		for (uint64_t o = 0; ck->kind == CLI_RK_DATA && o < n; o += l) {
			for (l = step ? 0 : n - o; o + l < n; l += n - o - l < step ? n - o - l : step)
				if (all_zero(buf + o + l, n - o - l < step ? n - o - l : step))
					break;
			if (!l) {
				for (; o + l < n; l += n - o - l < step ? n - o - l : step)
					if (!all_zero(buf + o + l, n - o - l < step ? n - o - l : step))
						break;
				if (!zero_init && put_zeros(dst, l, off + o, zfrom, &err) < 0)
					goto fail;
				continue;
			}
			if (compress && off + o + l == size && dsize > size) {
				/* the destination is whole sectors (a raw source
				 * of 1000001 bytes is a disk of 1000448): a
				 * compressed write must reach its end (the
				 * chunk's buffer has a cluster to spare) */
				uint64_t last = (off + o + l - 1) & ~(cs - 1);
				uint64_t full = dsize - last < cs ? dsize - last : cs;
				memset(buf + o + l, 0, last + full - (off + o + l));
				l = last + full - (off + o);
			}
			if (write_run(dst, buf + o, l, off + o, compress, cs, &err) < 0)
				goto fail;
		}
		cli_reader_done(rd);
		progress_update(&pr, off + n, size);
	}
	progress_update(&pr, size, size);
	if (cow_flush(dst, &err) < 0)
		goto fail;
	ret = CLI_EXIT_OK;
	goto out;
fail:
	ret = CLI_EXIT_FAIL;
	cli_error_err(&err);
out:
	cli_reader_stop(rd);
	ret = cli_image_close(dst, ret);
	/* a destination this call created is not left behind half written
	 * (removed while still locked) */
	if (ret != CLI_EXIT_OK && created && lfd >= 0)
		unlink(dpath);
	if (lfd >= 0)
		close(lfd);
	cow_close(src);
	free(snap_id);
	free(snap_name);
	return ret;
}

int cli_image_rebase(int argc, char **argv)
{
	const char *nb = NULL, *nfmt = NULL;
	struct cow_img *img = NULL, *newb = NULL;
	bool unsafe = false;
	uint8_t *a = NULL, *b = NULL;
	struct ut_err err;
	int c, ret = CLI_EXIT_FAIL;
	char fmtbuf[16] = "";

	ut_err_clear(&err);
	while ((c = getopt(argc, argv, "b:F:uf:")) != -1) {
		switch (c) {
		case 'b': nb = optarg; break;
		case 'F': nfmt = optarg; break;
		case 'u': unsafe = true; break;
		case 'f': break;
		default: return cli_usage_error("image rebase", "bad option");
		}
	}
	if (optind + 1 != argc || !nb)
		return cli_usage_error("image rebase", "need FILE and -b NEW (\"\" for none)");
	if (nfmt && strcmp(nfmt, "qcow2") && strcmp(nfmt, "raw"))
		return cli_usage_error("image rebase", "-F takes raw or qcow2");
	/* -u rewrites the name only: a header-only open, which keeps the
	 * autoclear bits (the persistent bitmaps stay valid) */
	if (cow_open(argv[optind], "qcow2", unsafe ? COW_O_NO_BACKING | COW_O_HEADER_ONLY : 0, &img,
		     &err) < 0)
		goto fail;
	/* -u with -F only rewrites the name: the new backing file need not
	 * exist yet (as with qemu-img rebase -u); without -F it is probed */
	if (nb[0] && (!unsafe || !nfmt)) {
		char *path = cow_resolve_backing(argv[optind], nb);
		if (!path) {
			ut_errf(&err, -ENOMEM, "out of memory");
			goto fail;
		}
		ret = cow_open(path, nfmt, COW_O_RDONLY, &newb, &err);
		free(path);
		if (ret < 0)
			goto fail;
		if (!nfmt) {
			snprintf(fmtbuf, sizeof(fmtbuf), "%s", cow_format(newb) == COW_FMT_QCOW2 ? "qcow2" : "raw");
			nfmt = fmtbuf;
		}
	}
	if (!unsafe) {
		uint64_t size = cow_size(img), cs = cow_cluster_size(img);
		unsigned above = 0;
		struct cow_info in;
		struct stat nst;
		int d;
		bool zc;

		cow_get_info(img, &in);
		zc = in.version >= 3;
		/* a new backing file that is a layer of the old chain (a rebase
		 * onto a deeper layer: the layers between dropped) reads as the
		 * old chain wherever none of the layers above it holds the
		 * range: only what those hold is compared (read) */
		if (newb && fstat(cow_layer_fd(newb), &nst) == 0 && (d = chain_depth(img, &nst)) > 0)
			above = (unsigned)d;
		uint64_t chunk = cs < (1u << 20) ? (1u << 20) / cs * cs : cs;
		a = malloc(chunk);
		b = malloc(chunk);
		if (!a || !b) {
			ut_errf(&err, -ENOMEM, "out of memory");
			goto fail;
		}
		for (uint64_t off = 0; off < size;) {
			struct cow_extent e;
			uint64_t n = size - off < chunk ? size - off : chunk;
			if (cow_block_status(img, off, n, false, &e, &err) < 0)
				goto fail;
			if (e.st != COW_ST_UNALLOC) {
				off += e.len;
				continue;
			}
			n = e.len;
			if (above) {
				/* the run the layers above the new backing file
				 * leave to it is the same in both chains */
				if (cow_block_status_above(img, off, n, above, &e, &err) < 0)
					goto fail;
				if (e.st == COW_ST_UNALLOC) {
					off += e.len;
					continue;
				}
				n = e.len;
			}
			if (read_clip(cow_backing(img), a, n, off, &err) < 0 ||
			    read_clip(newb, b, n, off, &err) < 0)
				goto fail;
			for (uint64_t o = 0; o < n; o += cs) {
				uint64_t l = n - o < cs ? n - o : cs;
				if (!memcmp(a + o, b + o, l))
					continue;
				/* zeros the old chain showed become zero clusters
				 * (as qemu-img rebase writes them), not data; a
				 * version 2 image has none, and cow/ would leave
				 * them unallocated (over the new backing file) */
				if (zc && all_zero(a + o, l) ? cow_write_zeroes(img, l, off + o, 0, &err) < 0 :
				    cow_write(img, a + o, l, off + o, &err) < 0)
					goto fail;
			}
			off += n;
		}
	}
	if (cow_set_backing(img, nb[0] ? nb : NULL, nfmt, &err) < 0)
		goto fail;
	ret = CLI_EXIT_OK;
	goto out;
fail:
	ret = CLI_EXIT_FAIL;
	cli_error_err(&err);
out:
	free(a);
	free(b);
	cow_close(newb);
	return cli_image_close(img, ret);
}

/* `cowvm image commit FILE [-b BASE] [-d] [-p|-q]`, as qemu-img commit:
 * the data of FILE and of the layers between it and BASE (default: its
 * backing file) is written into BASE; FILE is then emptied unless -d
 * (which -b implies: the layers between read garbage afterwards, FILE
 * still reads as before). The layers read are locked shared and read
 * through a chain opened without locks, whose search stops above BASE
 * (cow_block_status_above), on the read-ahead thread; BASE is opened for
 * writing on its own. */
int cli_image_commit(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "progress", no_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	struct cow_img *top = NULL, *base = NULL, *l;
	struct progress pr = { false, -1 };
	struct cli_reader *rd = NULL;
	const char *bname = NULL;
	char *bpath = NULL, **above = NULL;
	int *lfds = NULL;
	unsigned depth = 0;
	struct ut_err err;
	struct stat st;
	uint64_t size, bsize, cs;
	int c, d, ret = CLI_EXIT_FAIL;
	bool keep = false, braw = false;

	ut_err_clear(&err);
	while ((c = getopt_long(argc, argv, "b:df:pq", lo, NULL)) != -1) {
		switch (c) {
		case 'b': bname = optarg; keep = true; break;
		case 'd': keep = true; break;
		case 'f': break;
		case 'p': pr.on = true; break;
		case 'q': pr.on = false; break;
		default: return cli_usage_error("image commit", "bad option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("image commit", "need FILE");
	/* learn (and validate) the chain, then let it go: its shared lock on
	 * the base would refuse our own write lock below */
	if (cow_open(argv[optind], "qcow2", COW_O_RDONLY, &top, &err) < 0)
		goto fail;
	if (!cow_backing(top)) {
		ut_errf(&err, -EINVAL, "'%s' has no backing file to commit into", argv[optind]);
		goto fail;
	}
	if (bname && stat(bname, &st) < 0) {
		ut_errf_sys(&err, -errno, "unable to find the base '%s'", bname);
		goto fail;
	}
	d = bname ? chain_depth(top, &st) : 1;
	if (d < 1) {
		ut_errf(&err, -EINVAL, "'%s' is not in the backing chain of '%s'", bname, argv[optind]);
		goto fail;
	}
	depth = (unsigned)d;
	for (l = top, d = 0; d < (int)depth; d++)
		l = cow_backing(l);
	bpath = strdup(cow_path(l));
	braw = cow_format(l) == COW_FMT_RAW;
	above = calloc(depth, sizeof(*above));
	lfds = malloc(depth * sizeof(*lfds));
	if (!bpath || !above || !lfds) {
		ut_errf(&err, -ENOMEM, "out of memory");
		goto fail;
	}
	for (unsigned i = 0; i < depth; i++)
		lfds[i] = -1;
	l = top;
	for (unsigned i = 0; i < depth; i++, l = cow_backing(l)) {
		above[i] = strdup(cow_path(l));
		if (!above[i]) {
			ut_errf(&err, -ENOMEM, "out of memory");
			goto fail;
		}
	}
	cow_close(top);
	top = NULL;
	/* the layers read keep writers out; the base is the one written */
	for (unsigned i = 0; i < depth; i++)
		if (cow_lock_path(above[i], COW_LOCK_SHARED, false, &lfds[i], &err) < 0)
			goto fail;
	if (cow_open(argv[optind], "qcow2", COW_O_RDONLY | COW_O_NO_LOCK, &top, &err) < 0 ||
	    cow_open(bpath, braw ? "raw" : "qcow2", 0, &base, &err) < 0)
		goto fail;
	size = cow_size(top);
	bsize = cow_size(base);
	/* a base smaller than the top grows to its size, as qemu-img commit
	 * grows it (the new area reads zeros) */
	if (bsize < size && cow_grow(base, size, &err) < 0) {
		ut_err_prefix(&err, "unable to grow '%s' to the size of '%s'", bpath, argv[optind]);
		goto fail;
	}
	cs = cow_cluster_size(base) ? cow_cluster_size(base) : 65536;
	if (cli_reader_start(top, 2u << 20, cs, depth, &rd, &err) < 0)
		goto fail;
	for (;;) {
		struct cli_rchunk *ck;
		int r = cli_reader_next(rd, &ck, &err);

		if (r < 0)
			goto fail;
		if (r > 0)
			break;
		/* zeros as a discard: the base's space there goes back */
		if (ck->kind == CLI_RK_ZERO ? put_zeros(base, ck->n, ck->off, bsize, &err) < 0 :
		    ck->kind == CLI_RK_DATA && cow_write(base, ck->buf, ck->n, ck->off, &err) < 0)
			goto fail;
		progress_update(&pr, ck->off + ck->n, size);
		cli_reader_done(rd);
	}
	progress_update(&pr, size, size);
	cli_reader_stop(rd);
	rd = NULL;
	if (cow_flush(base, &err) < 0)
		goto fail;
	if (!keep) {
		/* empty the top layer: everything now reads from the backing */
		cow_close(top);
		top = NULL;
		close(lfds[0]);
		lfds[0] = -1;
		if (cow_open(argv[optind], "qcow2", COW_O_NO_BACKING, &top, &err) < 0 ||
		    cow_discard(top, size, 0, true, &err) < 0 || cow_flush(top, &err) < 0)
			goto fail;
	}
	ret = CLI_EXIT_OK;
	goto out;
fail:
	ret = CLI_EXIT_FAIL;
	cli_error_err(&err);
out:
	cli_reader_stop(rd);
	ret = cli_image_close(top, ret);
	ret = cli_image_close(base, ret);
	for (unsigned i = 0; above && lfds && i < depth; i++) {
		if (lfds[i] >= 0)
			close(lfds[i]);
		free(above[i]);
	}
	free(above);
	free(lfds);
	free(bpath);
	/* (only once both closed: the base's bitmaps stored) */
	if (ret == CLI_EXIT_OK)
		printf("Image committed.\n");
	return ret;
}
