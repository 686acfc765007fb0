/* cli/cmd-image-compare.c — `cowvm image compare IMG1 IMG2 [-f FMT] [-F FMT]
 * [-s] [-q] [-U]`, as qemu-img compare: do the two disks (read through their
 * backing chains) hold the same guest data?
 *
 * Prints, on stdout as qemu-img does (nothing with -q), "Images are
 * identical." or "Content mismatch at offset N!" (N: the start of the first
 * 512-byte sector that differs). Images of different sizes are identical
 * when the larger one reads zeros past the end of the other ("Warning:
 * Image size mismatch!" first). Strict mode (-s) also fails on a size
 * difference ("Strict mode: Image size mismatch!") and on the first run
 * whose block status, as QEMU reports it, differs ("Strict mode: Offset N
 * block status mismatch!"). Exit status as qemu-img compare: 0 identical,
 * 1 different, 2 an image could not be opened (or a usage error), 3 a block
 * status query failed (-s), 4 reading failed.
 *
 * Speed: both images are read ahead on threads of their own (cli/image-reader.c)
 * in 2 MiB chunks; runs that are zero or unallocated in an image are not
 * read, and a run zero in both is skipped; data is compared with memcmp. */
#include "cli/cli.h"
#include "cli/image.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CMP_CHUNK   (2u << 20)   /* qemu-img compare's IO_BUF_SIZE */
#define CMP_SECTOR  512u         /* mismatches are reported by the sector */

enum { CMP_EXIT_OPEN = 2, CMP_EXIT_STATUS = 3, CMP_EXIT_READ = 4 };

/* The block status flags of QEMU (BDRV_BLOCK_*) that qemu-img compare -s
 * compares. */
enum {
	CMP_ST_DATA = 1 << 0,
	CMP_ST_ZERO = 1 << 1,
	CMP_ST_OFFSET = 1 << 2,   /* OFFSET_VALID: a host offset is known */
	CMP_ST_ALLOC = 1 << 3,    /* some layer of the chain holds the run */
	CMP_ST_EOF = 1 << 4,      /* the run reaches the end of the disk */
	CMP_ST_COMPRESSED = 1 << 5,
	CMP_ST_RECURSE = 1 << 6,  /* data of an image preallocated with metadata:
				     the file system says where it is zero */
};

/* One image: its chain, and (strict mode) what is known of its layers. */
struct cmp_side {
	const char *name;
	struct cow_img *img;
	int depth;              /* layers in the chain */
	signed char *prealloc;  /* [depth]: made with preallocation=metadata?
				   1 yes, 0 no, -1 not asked yet */
	struct cli_reader *rd;
	struct cli_rchunk *c;   /* chunk in hand: NULL before the first, after
				   the last */
};

/* Is layer @depth of @s's chain preallocated with metadata (asked once)? */
static int cmp_prealloc(struct cmp_side *s, int depth, bool *out, struct ut_err *err)
{
	struct cow_img *l = s->img;
	int ret;

	if (s->prealloc[depth] < 0) {
		for (int i = 0; i < depth; i++)
			l = cow_backing(l);
		ret = cow_prealloc_detect(l, out, err);
		if (ret < 0)
			return ret;
		s->prealloc[depth] = *out;
	}
	*out = s->prealloc[depth] > 0;
	return 0;
}

/* The run at @off of @s's disk (below its size) as QEMU's
 * bdrv_block_status_above describes it: its flags in *st and its length in
 * *len. 0 or -errno with @err. */
static int cmp_status(struct cmp_side *s, uint64_t off, uint64_t *len, unsigned *st,
		      struct ut_err *err)
{
	uint64_t size = cow_size(s->img);
	struct cow_extent e;
	bool pre, hole;
	int ret = cow_block_status(s->img, off, size - off, true, &e, err);

	if (ret < 0)
		return ret;
	*len = e.len;
	if (e.depth < 0) {
		/* no layer holds it: past the end of a backing file (QEMU:
		 * zeros as if allocated there), or unallocated down to the
		 * bottom (zero; with a host offset when the cluster has one) */
		const struct cow_img *l = s->img;
		for (int i = 0; i < e.end_depth && l; i++)
			l = cow_backing(l);
		if (l && cow_backing(l))
			*st = CMP_ST_ALLOC | CMP_ST_ZERO;
		else
			*st = CMP_ST_ZERO | (e.host_off ? CMP_ST_OFFSET : 0);
	} else if (cow_format(e.layer) == COW_FMT_RAW) {
		/* QEMU's file-posix: holes are zero, the rest data */
		*len = cli_image_host_run(cow_layer_fd(e.layer), e.host_off, e.len, &hole);
		*st = CMP_ST_ALLOC | CMP_ST_OFFSET | (hole ? CMP_ST_ZERO : CMP_ST_DATA);
	} else {
		switch (e.st) {
		case COW_ST_DATA:
			*st = CMP_ST_ALLOC | CMP_ST_DATA | CMP_ST_OFFSET;
			ret = cmp_prealloc(s, e.depth, &pre, err);
			if (ret < 0)
				return ret;
			if (pre) {
				*st |= CMP_ST_RECURSE;
				*len = cli_image_host_run(cow_layer_fd(e.layer), e.host_off, e.len, &hole);
				*st |= hole ? CMP_ST_ZERO : 0;
			}
			break;
		case COW_ST_COMPRESSED: *st = CMP_ST_ALLOC | CMP_ST_DATA | CMP_ST_COMPRESSED; break;
		default:   /* zero (an unallocated run has depth -1) */
			*st = CMP_ST_ALLOC | CMP_ST_ZERO | (e.host_off ? CMP_ST_OFFSET : 0);
			break;
		}
	}
	if (off + *len == size)
		*st |= CMP_ST_EOF;
	return 0;
}

/* Strict mode: the first offset below @size where the block status of @a
 * and @b differ, in *at (@size: none), as qemu-img compare -s walks them.
 * 0, or -errno with @err. */
static int cmp_status_walk(struct cmp_side *a, struct cmp_side *b, uint64_t size, uint64_t *at,
			   struct ut_err *err)
{
	uint64_t off = 0, la, lb;
	unsigned sa, sb;
	int ret;

	while (off < size) {
		if ((ret = cmp_status(a, off, &la, &sa, err)) < 0 ||
		    (ret = cmp_status(b, off, &lb, &sb, err)) < 0)
			return ret;
		if (sa != sb)
			break;
		off += la < lb ? la : lb;
	}
	*at = off < size ? off : size;
	return 0;
}

/* Offset in @a (@n bytes) of the first byte that differs from @b, or from
 * zeros when @b is NULL; @n when none does. */
static uint64_t cmp_first_diff(const uint8_t *a, const uint8_t *b, uint64_t n)
{
	static const uint8_t zeros[65536];
	uint64_t i = 0, k;

	while (i < n) {
		k = n - i < sizeof(zeros) ? n - i : sizeof(zeros);
		if (memcmp(a + i, b ? b + i : zeros, k))
			break;
		i += k;
	}
	if (i < n)
		while (a[i] == (b ? b[i] : 0))
			i++;
	return i;
}

/* Make s->c the chunk holding @off (chunks come in order). 0, or
 * -errno with @err. */
static int cmp_seek(struct cmp_side *s, uint64_t off, struct ut_err *err)
{
	while (!s->c || off >= s->c->off + s->c->n) {
		int r;
		if (s->c)
			cli_reader_done(s->rd);
		s->c = NULL;
		r = cli_reader_next(s->rd, &s->c, err);
		if (r < 0)
			return r;   /* (cow/'s messages name the file) */
		if (r > 0)
			return ut_errf(err, -EIO, "unable to read '%s': its data ended early", s->name);
	}
	return 0;
}

/* Compare [from, to) of @a with @b, or with zeros when @b is NULL: 0 and
 * *@diff the first differing byte (@to when none), or -errno with @err. */
static int cmp_range(struct cmp_side *a, struct cmp_side *b, uint64_t from, uint64_t to,
		     uint64_t *diff, struct ut_err *err)
{
	uint64_t off = from, end, i;
	const uint8_t *pa, *pb;
	int ret;

	while (off < to) {
		if ((ret = cmp_seek(a, off, err)) < 0 || (b && (ret = cmp_seek(b, off, err)) < 0))
			return ret;
		end = a->c->off + a->c->n;
		if (b && b->c->off + b->c->n < end)
			end = b->c->off + b->c->n;
		if (end > to)
			end = to;
		pa = a->c->kind == CLI_RK_ZERO ? NULL : a->c->buf + (off - a->c->off);
		pb = !b || b->c->kind == CLI_RK_ZERO ? NULL : b->c->buf + (off - b->c->off);
		if (pa || pb) {
			i = cmp_first_diff(pa ? pa : pb, pa ? pb : NULL, end - off);
			if (i < end - off) {
				*diff = off + i;
				return 0;
			}
		}
		off = end;
	}
	*diff = to;
	return 0;
}

int cli_image_compare(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "force-share", no_argument, NULL, 'U' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "strict", no_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	struct cmp_side s[2] = { { 0 }, { 0 } }, *big;
	const char *fmt[2] = { NULL, NULL };
	unsigned flags = COW_O_RDONLY;
	bool strict = false, quiet = false;
	uint64_t size[2], common, diff, smis;
	struct cow_info in;
	struct ut_err err;
	int c, ret = CMP_EXIT_OPEN;

	ut_err_clear(&err);
	while ((c = getopt_long(argc, argv, "f:F:sqU", lo, NULL)) != -1) {
		switch (c) {
		case 'f': fmt[0] = optarg; break;
		case 'F': fmt[1] = optarg; break;
		case 's': strict = true; break;
		case 'q': quiet = true; break;
		case 'U': flags |= COW_O_NO_LOCK; break;
		default: return cli_usage_error("image compare", "bad option");
		}
	}
	if (optind + 2 != argc)
		return cli_usage_error("image compare", "need two images, IMG1 and IMG2");
	for (int i = 0; i < 2; i++) {
		s[i].name = argv[optind + i];
		if (cow_open(s[i].name, fmt[i], flags, &s[i].img, &err) < 0) {
			cli_image_error(&err, true);
			ret = CMP_EXIT_OPEN;
			goto out;
		}
		size[i] = cow_size(s[i].img);
		cow_get_info(s[i].img, &in);
		s[i].depth = in.chain_depth;
	}
	common = size[0] < size[1] ? size[0] : size[1];
	if (strict && size[0] != size[1]) {
		if (!quiet)
			printf("Strict mode: Image size mismatch!\n");
		ret = CLI_EXIT_FAIL;
		goto out;
	}
	/* strict: the data is compared up to the first run whose status
	 * differs, smis (qemu-img compare checks the status of a run first) */
	smis = common;
	for (int i = 0; strict && i < 2; i++) {
		if (!(s[i].prealloc = malloc((size_t)s[i].depth))) {
			cli_error("out of memory");
			ret = CMP_EXIT_STATUS;
			goto out;
		}
		memset(s[i].prealloc, -1, (size_t)s[i].depth);
	}
	if (strict && cmp_status_walk(&s[0], &s[1], common, &smis, &err) < 0) {
		cli_error_err(&err);   /* (naming the file) */
		ret = CMP_EXIT_STATUS;
		goto out;
	}
	ret = CMP_EXIT_READ;   /* (from here, for an error) */
	if (cli_reader_start(s[0].img, CMP_CHUNK, CMP_SECTOR, 0, &s[0].rd, &err) < 0 ||
	    cli_reader_start(s[1].img, CMP_CHUNK, CMP_SECTOR, 0, &s[1].rd, &err) < 0 ||
	    cmp_range(&s[0], &s[1], 0, smis, &diff, &err) < 0) {
		cli_error_err(&err);
		goto out;
	}
	if (diff < smis || smis < common) {
		if (!quiet && diff < smis)
			printf("Content mismatch at offset %llu!\n",
			       (unsigned long long)(diff & ~(uint64_t)(CMP_SECTOR - 1)));
		else if (!quiet)
			printf("Strict mode: Offset %llu block status mismatch!\n", (unsigned long long)smis);
		ret = CLI_EXIT_FAIL;
		goto out;
	}
	if (size[0] != size[1]) {
		/* the larger image must read zeros past the other's end */
		if (!quiet)
			printf("Warning: Image size mismatch!\n");
		big = &s[size[0] < size[1]];
		cli_reader_stop(s[size[0] >= size[1]].rd);
		s[size[0] >= size[1]].rd = NULL;
		if (cmp_range(big, NULL, common, size[big - s], &diff, &err) < 0) {
			cli_error_err(&err);
			goto out;
		}
		if (diff < size[big - s]) {
			if (!quiet)
				printf("Content mismatch at offset %llu!\n",
				       (unsigned long long)(diff & ~(uint64_t)(CMP_SECTOR - 1)));
			ret = CLI_EXIT_FAIL;
			goto out;
		}
	}
	if (!quiet)
		printf("Images are identical.\n");
	ret = CLI_EXIT_OK;
out:
	for (int i = 0; i < 2; i++) {
		cli_reader_stop(s[i].rd);
		cow_close(s[i].img);
		free(s[i].prealloc);
	}
	return ret;
}
