/* tests/helpers/cowio.c — drive cow/ from test scripts.
 *
 *   cowio random IMG REF SEED NOPS [compress]
 *       apply NOPS random writes / write-zeroes / discards (and compressed
 *       cluster writes with "compress") to IMG through cow/ and the same data
 *       to the raw file REF; flush. `qemu-img compare REF IMG` must agree.
 *   cowio cmp IMG REF
 *       read IMG through cow/ (whole chain) and compare with raw file REF.
 *   cowio crashwrite IMG ITER LOG [NOPS]
 *       endless tagged writes (op ids ITER*1000000+i), a flush every 1..8
 *       ops, then "I\n" appended (and fsync'ed) to LOG: I ops are durable.
 *       With NOPS: stop after NOPS ops, without a flush or a close (as if
 *       cut off there; the power-cut test records and replays the run).
 *   cowio stgwrite IMG ITER LOG NOPS [DEPTH]
 *       the ops of crashwrite (compressed ones as plain writes) through
 *       storage/ (what virtio-blk uses) on its worker-thread engine
 *       (aio=threads; COWIO_DIRECT=1: cache=none), up to DEPTH (default 16)
 *       in flight, finishing in any order; ops in flight at once never
 *       overlap (the order of two overlapping ones would be undefined, as
 *       in a guest). A flush, every 1..24 ops, waits for every op before
 *       it, as a guest's does, then goes through storage/; "I\n" is logged
 *       when it completes. Ends as crashwrite, once the ops in flight
 *       have finished.
 *   cowio crashverify IMG ITER LOG BASELINE
 *       check every 512-byte sector of IMG: intact, and holding what the
 *       baseline + the durable ops say, or a value from an op issued after
 *       the last logged flush. Rewrites BASELINE with what was read.
 *   cowio fill IMG OUT SEED NOPS BACK [--fsize N] [--filler FILE]
 *          [--at-full CMD] [--init RAW] [--compress] [--flush-full]
 *       a disk that fills up: NOPS random writes (some compressed with
 *       --compress), write-zeroes, discards and flushes through cow/ on
 *       the open image IMG (COWIO_DIRECT=1: cache=none), where requests may
 *       fail (their range becomes unknown) until op BACK; --fsize lowers the
 *       file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) so growth fails
 *       with EFBIG. At op BACK: run CMD (sh -c; e.g. qemu-img check -U of
 *       the image as it is on disk), with --flush-full flush the image
 *       (still full: it must succeed, since every table a flush writes
 *       already has its blocks), delete FILE and raise the limit; then
 *       a flush of the same open image must succeed and no later request
 *       may fail. Every read must succeed and match the model but for the
 *       unknown bytes; after the close (which must succeed) the image is
 *       read again and OUT written: the model, with what the image holds
 *       at the unknown bytes (for qemu-img compare). The first failure
 *       messages go to stderr; the last line counts the failures. Exit 2
 *       on a mismatch, 3 when a request fails that may not (also any that
 *       marks the image corrupt).
 *   cowio stale IMG END [stg]
 *       a failed write's leftovers past the end of the file (cow.h I10,
 *       I17): IMG has 64 KiB clusters, its file ends at END (the next new
 *       cluster goes there). With the file size limit at END + 1 KiB, a
 *       4 KiB write at guest offset 64 KiB (into a new cluster past the end
 *       of the file: only its 4 KiB are written) must fail after writing 1
 *       KiB; then, without the limit, 512 bytes (0xcc) at guest offset 136
 *       KiB must succeed (they reuse the freed cluster at END, which must
 *       read as zeros around them). With "stg" both go through storage/
 *       (io_uring). Exit 0 when both did as expected, 3 when not, 4 when
 *       the failed write left no bytes at END (nothing to test).
 *   cowio syncfail IMG FLAG
 *       run under tests/helpers/failsync.so (FAILSYNC_FLAG=FLAG): 1 MiB
 *       written at 0 and flushed; 1 MiB more at 4 MiB, then FLAG created so
 *       that the flush's first fdatasync fails (EIO) without syncing; that
 *       flush, a second one and the close must all fail (what reached the
 *       disk is unknown after a failed fdatasync, and Linux reports the
 *       error once: a later fdatasync succeeds with the data lost), the
 *       second with EIO whatever the first error was. Exit 0 when they do,
 *       3 when one succeeds.
 *   cowio ops IMG OP...
 *       the requests OP, in order, on IMG opened for writing through cow/:
 *       w:OFF:LEN write (bytes 0x5a), z:OFF:LEN write-zeroes, u:OFF:LEN
 *       write-zeroes that may unmap, d:OFF:LEN discard, c:OFF:LEN
 *       compressed write (whole clusters), f flush, k SIGKILL (no
 *       close: a crash of the writer), x:CMD run CMD (sh -c; must exit
 *       0), O:OVL cow_overlay_check with the qcow2 OVL (opened
 *       COW_O_NO_BACKING) and no attach (as a snapshot that failed
 *       after it), o:OVL the check and cow_overlay_attach: OVL is the
 *       image from then on, g:SIZE cow_grow, s:SIZE cow_shrink, l the
 *       file size limit
 *       (RLIMIT_FSIZE, SIGXFSZ ignored) set to IMG's size now: nothing
 *       more may be written past it. Then cow_close, which must succeed
 *       (exit 0), or fail (exit 4) after l.
 *   cowio snapread IMG SNAP OUT [image]
 *       open IMG at its internal snapshot SNAP (an ID, else a name:
 *       cow_open_snapshot with COW_O_SNAP_ID_OR_NAME; "image": at the
 *       image's size, COW_O_SNAP_IMAGE_SIZE) and write what it reads, all
 *       of its virtual size, to the raw file OUT. First every change must
 *       be refused: the open without COW_O_RDONLY, and on the open
 *       snapshot cow_write, cow_write_zeroes, cow_discard,
 *       cow_write_compressed, cow_grow, cow_shrink, cow_set_backing,
 *       cow_bitmap_edit_begin (exit 3 when one is not). Prints the size.
 * Exit 0 on success, 1 on a mismatch (details on stderr), 2 usage.
 */
#include "cow/cow.h"
#include "storage/blockdev.h"
#include "tests/helpers/fullfs.h"
#include "tests/helpers/xorshift.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/resource.h>

static uint64_t rng_state;
static uint64_t rnd(void) { return test_xorshift64(&rng_state); }

static void die_err(const char *what, struct ut_err *e)
{
	fprintf(stderr, "cowio: %s: %s\n", what, e->msg);
	exit(1);
}

static int cmd_random(char **argv, bool compress)
{
	struct cow_img *img;
	struct ut_err e;
	uint64_t nops = strtoull(argv[4], NULL, 0), size, cs;
	uint8_t *buf;
	int fd;

	rng_state = strtoull(argv[3], NULL, 0) * 2654435761u + 1;
	if (cow_open(argv[1], NULL, 0, &img, &e) < 0)
		die_err("open", &e);
	fd = open(argv[2], O_RDWR);
	if (fd < 0) {
		perror(argv[2]);
		return 1;
	}
	size = cow_size(img);
	cs = cow_cluster_size(img) ? cow_cluster_size(img) : 65536;
	buf = malloc(4 << 20);
	for (uint64_t i = 0; i < nops; i++) {
		uint64_t kind = rnd() % 100, len = (rnd() % (256 * 1024)) + 1, off = rnd() % size;
		if (rnd() % 2) {
			off &= ~511ull;
			len = (len + 511) & ~511ull;
		}
		if (off + len > size)
			len = size - off;
		if (!len)
			continue;
		if (getenv("COWIO_TRACE"))
			fprintf(stderr, "op %llu kind %llu off %llu len %llu\n", (unsigned long long)i,
				(unsigned long long)kind, (unsigned long long)off, (unsigned long long)len);
		if (kind < 8) {
			/* both kinds: with unmap (freed and punched) and without
			 * (a cluster that owns its host cluster keeps it) */
			if (cow_write_zeroes(img, len, off, (i & 1) ? COW_ZERO_MAY_UNMAP : 0, &e) < 0)
				die_err("write_zeroes", &e);
			memset(buf, 0, len);
			if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len)
				return 1;
		} else if (kind < 14) {
			/* discard of whole clusters only changes content to zeros there */
			uint64_t a = (off + cs - 1) & ~(cs - 1), b = (off + len) & ~(cs - 1);
			if (b > a) {
				if (cow_discard(img, b - a, a, false, &e) < 0)
					die_err("discard", &e);
				memset(buf, 0, b - a);
				if (pwrite(fd, buf, b - a, (off_t)a) != (ssize_t)(b - a))
					return 1;
			}
		} else if (compress && kind < 40) {
			uint64_t a = off & ~(cs - 1), n = ((len + cs - 1) / cs) * cs;
			if (a + n > size)
				n = size - a;
			for (uint64_t j = 0; j < n; j++)
				buf[j] = (uint8_t)((j / 97) ^ (i * 7));
			if (cow_write_compressed(img, buf, n, a, &e) < 0)
				die_err("write_compressed", &e);
			if (pwrite(fd, buf, n, (off_t)a) != (ssize_t)n)
				return 1;
		} else {
			for (uint64_t j = 0; j < len; j++)
				buf[j] = (uint8_t)(rnd() >> 13);
			if (cow_write(img, buf, len, off, &e) < 0)
				die_err("write", &e);
			if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len)
				return 1;
		}
		if (rnd() % 16 == 0 && cow_flush(img, &e) < 0)
			die_err("flush", &e);
	}
	if (cow_close(img) < 0)
		return 1;
	close(fd);
	free(buf);
	return 0;
}

static int cmd_cmp(char **argv)
{
	struct cow_img *img;
	struct ut_err e;
	uint64_t size, chunk = 1 << 20;
	uint8_t *a = malloc(chunk), *b = malloc(chunk);
	int fd = open(argv[2], O_RDONLY);

	if (fd < 0) {
		perror(argv[2]);
		return 1;
	}
	if (cow_open(argv[1], NULL, COW_O_RDONLY, &img, &e) < 0)
		die_err("open", &e);
	size = cow_size(img);
	for (uint64_t off = 0; off < size; off += chunk) {
		uint64_t n = size - off < chunk ? size - off : chunk;
		ssize_t r;
		if (cow_read(img, a, n, off, &e) < 0)
			die_err("read", &e);
		r = pread(fd, b, n, (off_t)off);
		if (r < 0)
			return 1;
		if ((uint64_t)r < n)
			memset(b + r, 0, n - (uint64_t)r);
		if (memcmp(a, b, n)) {
			for (uint64_t i = 0; i < n; i++)
				if (a[i] != b[i]) {
					fprintf(stderr, "cowio: content differs at offset %llu\n",
						(unsigned long long)(off + i));
					break;
				}
			return 1;
		}
	}
	cow_close(img);
	close(fd);
	free(a);
	free(b);
	return 0;
}

/* ---- crash test ---- */
#define WINDOW 64

struct op { uint64_t id, off, len; int kind; };   /* kind 0 write, 1 zero, 2 compressed */

static void gen_op(uint64_t iter, uint64_t i, uint64_t size, uint64_t cs, struct op *o)
{
	uint64_t k;

	rng_state = (iter * 1000003u + i) * 2654435761u + 12345;
	for (int j = 0; j < 4; j++)
		rnd();
	o->id = iter * 1000000 + i + 1;
	k = rnd() % 100;
	o->off = (rnd() % (size / 4096)) * 4096;
	o->len = ((rnd() % 32) + 1) * 4096;
	o->kind = k < 10 ? 1 : k < 20 ? 2 : 0;
	if (o->kind == 2) {
		o->off &= ~(cs - 1);
		o->len = cs;
	}
	if (o->off + o->len > size)
		o->len = size - o->off;
}

static void fill_sector(uint8_t *s, uint64_t id, uint64_t sector)
{
	uint64_t v[2] = { id, sector };

	memcpy(s, v, 16);
	memset(s + 16, (int)((id * 31 + sector) & 0xff), 496);
}

/* 0 zero sector, id for a valid tagged sector, UINT64_MAX garbage */
static uint64_t sector_tag(const uint8_t *s, uint64_t sector)
{
	uint64_t v[2];
	uint8_t want[512];

	memcpy(v, s, 16);
	if (!v[0] && !v[1]) {
		for (int i = 16; i < 512; i++)
			if (s[i])
				return UINT64_MAX;
		return 0;
	}
	if (v[1] != sector)
		return UINT64_MAX;
	fill_sector(want, v[0], sector);
	return memcmp(s, want, 512) ? UINT64_MAX : v[0];
}

/* Op @o's data: each sector tagged with the op's id and its own number. */
static void fill_op(uint8_t *buf, const struct op *o)
{
	for (uint64_t s = 0; s < o->len / 512; s++)
		fill_sector(buf + s * 512, o->id, o->off / 512 + s);
}

/* A flush after op @i returned: append "i+1" to @log durably and draw the
 * op after which the next flush comes (1..@group ops later) into
 * *@next_flush. 0, or 1 when the log cannot be written. */
static int log_flush(int log, uint64_t i, unsigned group, uint64_t *next_flush)
{
	char line[32];
	int n = snprintf(line, sizeof(line), "%llu\n", (unsigned long long)(i + 1));

	if (write(log, line, (size_t)n) != n || fsync(log) < 0)
		return 1;
	rng_state = i * 77 + 5;
	*next_flush = i + 1 + 1 + rnd() % group;
	return 0;
}

/* COWIO_OPSIZE=N: the ops cover the first N bytes of the disk (its size at
 * the start when the disk grows), not the whole disk */
static uint64_t op_size(uint64_t size)
{
	const char *s = getenv("COWIO_OPSIZE");

	return s ? strtoull(s, NULL, 0) : size;
}

/* COWIO_DIRECT=1: cache=none */
static bool want_direct(void)
{
	const char *direct = getenv("COWIO_DIRECT");

	return direct && !strcmp(direct, "1");
}

static int cmd_crashwrite(char **argv)
{
	struct cow_img *img;
	struct ut_err e;
	uint64_t iter = strtoull(argv[2], NULL, 0), size, cs, next_flush;
	uint64_t nops = argv[4] ? strtoull(argv[4], NULL, 0) : 0;
	uint8_t *buf = malloc(32 * 4096 + 65536);
	int log = open(argv[3], O_WRONLY | O_CREAT | O_APPEND, 0644);
	unsigned flags = want_direct() ? COW_O_DIRECT : 0;
	uint64_t grow = getenv("COWIO_GROW") ? strtoull(getenv("COWIO_GROW"), NULL, 0) : 0;

	if (log < 0 || cow_open(argv[1], NULL, flags, &img, &e) < 0) {
		fprintf(stderr, "cowio: crashwrite open failed: %s\n", log < 0 ? strerror(errno) : e.msg);
		return 1;
	}
	size = op_size(cow_size(img));
	cs = cow_cluster_size(img);
	next_flush = 1;
	for (uint64_t i = 0; !nops || i < nops; i++) {
		struct op o;
		int r;
		gen_op(iter, i, size, cs, &o);
		/* COWIO_GROW=N: the disk grows by N bytes every 40 ops (cow_grow;
		 * with small clusters each growth moves the L1 table) */
		if (grow && i % 40 == 39 && cow_grow(img, cow_size(img) + grow, &e) < 0) {
			fprintf(stderr, "cowio: grow failed: %s\n", e.msg);
			return 1;
		}
		if (o.kind == 1) {
			r = cow_write_zeroes(img, o.len, o.off, (o.off >> 9) & 1 ? COW_ZERO_MAY_UNMAP : 0,
					     &e);
		} else {
			fill_op(buf, &o);
			r = o.kind == 2 ? cow_write_compressed(img, buf, o.len, o.off, &e)
					: cow_write(img, buf, o.len, o.off, &e);
		}
		if (r < 0) {
			fprintf(stderr, "cowio: op %llu failed: %s\n", (unsigned long long)i, e.msg);
			return 1;
		}
		if (i + 1 == next_flush) {
			if (cow_flush(img, &e) < 0) {
				fprintf(stderr, "cowio: flush failed: %s\n", e.msg);
				return 1;
			}
			if (log_flush(log, i, 8, &next_flush))
				return 1;
		}
	}
	_exit(0);   /* NOPS done: cut off, no flush, no close, no exit handlers */
}

/* ---- the same ops through storage/ ---- */
struct sop {
	struct stg_req req;
	struct iovec iov;
	struct op o;
	bool busy;
	int result;
};

static void sop_done(struct stg_req *req, int result)
{
	struct sop *s = req->opaque;

	s->result = result;
	s->busy = false;
}

static bool overlaps_busy(const struct sop *ss, unsigned depth, const struct op *o)
{
	for (unsigned k = 0; k < depth; k++)
		if (ss[k].busy && ss[k].o.off < o->off + o->len && o->off < ss[k].o.off + ss[k].o.len)
			return true;
	return false;
}

/* Run completions until none of @ss is busy (@all) or one is free and none
 * overlaps @o. 0, or 1 after reporting a failed op. */
static int sop_wait(struct stg_dev *d, struct sop *ss, unsigned depth, const struct op *o, bool all)
{
	for (;;) {
		unsigned busy = 0, k;

		for (k = 0; k < depth; k++) {
			if (!ss[k].busy && ss[k].result < 0) {
				fprintf(stderr, "cowio: stgwrite: op %llu failed: %s\n",
					(unsigned long long)ss[k].o.id, strerror(-ss[k].result));
				return 1;
			}
			busy += ss[k].busy;
		}
		if (all ? !busy : busy < depth && !overlaps_busy(ss, depth, o))
			return 0;
		if (stg_wait(d) < 0)
			return 1;
	}
}

static int cmd_stgwrite(char **argv)
{
	struct stg_dev *d;
	struct ut_err e;
	uint64_t iter = strtoull(argv[2], NULL, 0), nops = strtoull(argv[4], NULL, 0);
	uint64_t size, cs = 65536, next_flush = 1;
	unsigned depth = argv[5] ? (unsigned)strtoul(argv[5], NULL, 0) : 16;
	int log = open(argv[3], O_WRONLY | O_CREAT | O_APPEND, 0644);
	struct sop *ss = calloc(depth ? depth : 1, sizeof(*ss));
	struct stg_info info;

	if (!depth || !ss || log < 0 ||
	    stg_open(argv[1], NULL, STG_O_THREADS | (want_direct() ? STG_O_DIRECT : 0), &d, &e) < 0) {
		fprintf(stderr, "cowio: stgwrite open failed: %s\n", log < 0 || !ss ? strerror(errno) : e.msg);
		return 1;
	}
	stg_get_info(d, &info);
	size = info.virtual_size;
	{	/* the cluster size, for gen_op (as crashverify sees it) */
		struct cow_img *img;

		if (cow_open(argv[1], NULL, COW_O_RDONLY | COW_O_NO_LOCK, &img, &e) == 0) {
			cs = cow_cluster_size(img);
			cow_close(img);
		}
	}
	for (uint64_t i = 0; i < nops; i++) {
		struct op o;
		struct sop *s = NULL;

		gen_op(iter, i, size, cs, &o);
		if (sop_wait(d, ss, depth, &o, false))
			return 1;
		for (unsigned k = 0; !s; k++)
			if (!ss[k].busy)
				s = &ss[k];
		free(s->iov.iov_base);
		*s = (struct sop){ .o = o, .busy = true };
		s->req = (struct stg_req){ .op = o.kind == 1 ? STG_OP_WRITE_ZEROES : STG_OP_WRITE,
					   .offset = o.off, .len = o.len, .done = sop_done, .opaque = s,
					   .flags = (o.off >> 9) & 1 ? STG_REQ_MAY_UNMAP : 0 };
		if (o.kind != 1) {
			uint8_t *buf = malloc(o.len);

			if (!buf)
				return 1;
			fill_op(buf, &o);
			s->iov = (struct iovec){ buf, o.len };
			s->req.iov = &s->iov;
			s->req.iovcnt = 1;
		}
		if (stg_submit(d, &s->req) < 0) {
			fprintf(stderr, "cowio: stgwrite: submit of op %llu failed\n", (unsigned long long)i);
			return 1;
		}
		stg_unplug(d);
		if (i + 1 == next_flush) {
			if (sop_wait(d, ss, depth, NULL, true) || stg_flush(d) < 0) {
				fprintf(stderr, "cowio: stgwrite: flush after op %llu failed\n",
					(unsigned long long)i);
				return 1;
			}
			/* longer runs than crashwrite's: more in flight at once */
			if (log_flush(log, i, 24, &next_flush))
				return 1;
		}
	}
	/* cut off: no flush, no close; but every op finished, so that each
	 * write the file got is recorded whole (the recorder writes a record
	 * after its call returns, on the worker thread) */
	if (sop_wait(d, ss, depth, NULL, true))
		return 1;
	_exit(0);
}

static int cmd_crashverify(char **argv)
{
	struct cow_img *img;
	struct ut_err e;
	uint64_t iter = strtoull(argv[2], NULL, 0), size, cs, nsec, durable = 0, bad = 0;
	uint64_t *base, *expect;
	struct op win[WINDOW];
	uint8_t *buf = malloc(1 << 20);
	char line[64];
	FILE *lf = fopen(argv[3], "r");
	int bfd;

	if (lf) {
		while (fgets(line, sizeof(line), lf))
			durable = strtoull(line, NULL, 10);
		fclose(lf);
	}
	if (cow_open(argv[1], NULL, COW_O_RDONLY, &img, &e) < 0) {
		fprintf(stderr, "cowio: verify: %s\n", e.msg);
		return 1;
	}
	size = cow_size(img);
	cs = cow_cluster_size(img);
	nsec = size / 512;
	base = calloc(nsec, 8);
	expect = calloc(nsec, 8);
	bfd = open(argv[4], O_RDWR | O_CREAT, 0644);
	if (bfd < 0 || pread(bfd, base, nsec * 8, 0) < 0)
		return 1;
	memcpy(expect, base, nsec * 8);
	for (uint64_t i = 0; i < durable; i++) {
		struct op o;
		gen_op(iter, i, op_size(size), cs, &o);
		for (uint64_t s = o.off / 512; s < (o.off + o.len) / 512; s++)
			expect[s] = o.kind == 1 ? 0 : o.id;
	}
	for (int w = 0; w < WINDOW; w++)
		gen_op(iter, durable + (uint64_t)w, op_size(size), cs, &win[w]);
	for (uint64_t off = 0; off < size; off += 1 << 20) {
		if (cow_read(img, buf, 1 << 20, off, &e) < 0) {
			fprintf(stderr, "cowio: verify read: %s\n", e.msg);
			return 1;
		}
		for (uint64_t s = off / 512; s < (off + (1 << 20)) / 512; s++) {
			uint64_t t = sector_tag(buf + (s - off / 512) * 512, s);
			bool ok = t == expect[s];
			for (int w = 0; !ok && w < WINDOW; w++) {
				if (s < win[w].off / 512 || s >= (win[w].off + win[w].len) / 512)
					continue;
				if ((win[w].kind == 1 && t == 0) || (win[w].kind != 1 && t == win[w].id))
					ok = true;
			}
			if (!ok) {
				if (bad++ < 10)
					fprintf(stderr, "cowio: sector %llu holds %llx, expected %llx (durable ops %llu)\n",
						(unsigned long long)s, (unsigned long long)t,
						(unsigned long long)expect[s], (unsigned long long)durable);
			}
			base[s] = t;
		}
	}
	cow_close(img);
	free(expect);
	free(buf);
	if (bad) {
		fprintf(stderr, "cowio: %llu sectors wrong\n", (unsigned long long)bad);
		free(base);
		return 1;
	}
	if (pwrite(bfd, base, nsec * 8, 0) != (ssize_t)(nsec * 8))
		return 1;
	free(base);
	close(bfd);
	printf("verified iteration %llu: %llu durable ops\n", (unsigned long long)iter,
	       (unsigned long long)durable);
	return 0;
}

/* ---- a disk that fills up ---- */
struct fill {
	struct cow_img *img;
	uint8_t *model, *unk;       /* guest content; 1 where unknown */
	uint64_t size, cs, nerr;
	bool errok;
	bool v2_backing;            /* discard changes nothing */
};

/* Request @what on [off, off+len) returned @r: a failure is tolerated
 * (the range becomes unknown) only while f->errok. 0 or exit status 3. */
static int fill_result(struct fill *f, int r, const char *what, uint64_t off, uint64_t len,
		       struct ut_err *e)
{
	if (r >= 0)
		return 0;
	if (!f->errok) {
		fprintf(stderr, "cowio: %s off=%llu len=%llu failed after the space came back: %s\n",
			what, (unsigned long long)off, (unsigned long long)len, e->msg);
		return 3;
	}
	if (f->nerr++ < 3)
		fprintf(stderr, "cowio: %s off=%llu len=%llu failed (tolerated): %s\n", what,
			(unsigned long long)off, (unsigned long long)len, e->msg);
	if (r == -EUCLEAN) {
		fprintf(stderr, "cowio: %s off=%llu len=%llu: the image was marked corrupt: %s\n",
			what, (unsigned long long)off, (unsigned long long)len, e->msg);
		return 3;
	}
	memset(f->unk + off, 1, len);
	return 0;
}

/* Read [off, off+len) through cow/ and compare with the model; with @adopt
 * the unknown bytes take what was read. 0, or 2 on a mismatch, 3 on an
 * error. */
static int fill_verify(struct fill *f, struct cow_img *img, uint64_t off, uint64_t len, bool adopt,
		       uint8_t *buf)
{
	struct ut_err e;

	if (cow_read(img, buf, len, off, &e) < 0) {
		fprintf(stderr, "cowio: read off=%llu len=%llu failed: %s\n", (unsigned long long)off,
			(unsigned long long)len, e.msg);
		return 3;
	}
	for (uint64_t j = 0; j < len; j++) {
		if (f->unk[off + j]) {
			if (adopt)
				f->model[off + j] = buf[j];
		} else if (buf[j] != f->model[off + j]) {
			fprintf(stderr, "cowio: content differs at offset %llu (cluster %llu)\n",
				(unsigned long long)(off + j), (unsigned long long)((off + j) / f->cs));
			return 2;
		}
	}
	return 0;
}

/* fill_verify over the whole image, in pieces of @maxlen. */
static int fill_verify_all(struct fill *f, struct cow_img *img, bool adopt, uint8_t *buf,
			   uint64_t maxlen)
{
	int r = 0;

	for (uint64_t off = 0; r == 0 && off < f->size; off += maxlen)
		r = fill_verify(f, img, off, f->size - off < maxlen ? f->size - off : maxlen, adopt, buf);
	return r;
}

static int fill_space_back(struct fill *f, const char *at_full, const char *filler,
			   bool flush_full)
{
	struct ut_err e;
	int r;

	if (at_full) {
		fflush(stdout);
		r = system(at_full);
		if (r != 0) {
			fprintf(stderr, "cowio: '%s' at the full disk exited %d\n", at_full, r);
			return 1;
		}
	}
	if (flush_full && cow_flush(f->img, &e) < 0) {
		fprintf(stderr, "cowio: flush while the disk is full failed: %s\n", e.msg);
		return 3;
	}
	if ((r = test_space_back(filler)) < 0) {
		fprintf(stderr, "%s: %s\n", filler, strerror(-r));
		return 1;
	}
	printf("%llu requests failed before the space came back\n", (unsigned long long)f->nerr);
	f->errok = false;
	if (cow_flush(f->img, &e) < 0) {
		fprintf(stderr, "cowio: flush after the space came back failed: %s\n", e.msg);
		return 3;
	}
	return 0;
}

static int cmd_fill(int argc, char **argv)
{
	struct fill f = { .errok = true };
	const char *filler = NULL, *at_full = NULL, *init = NULL;
	uint64_t seed = strtoull(argv[3], NULL, 0), nops = strtoull(argv[4], NULL, 0);
	uint64_t back = strtoull(argv[5], NULL, 0), fsize = 0, maxlen;
	bool compress = false, flush_full = false;
	uint8_t *buf;
	struct ut_err e;
	int fd, r = 0;

	for (int i = 6; i < argc; i++) {
		if (!strcmp(argv[i], "--fsize") && i + 1 < argc)
			fsize = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--filler") && i + 1 < argc)
			filler = argv[++i];
		else if (!strcmp(argv[i], "--at-full") && i + 1 < argc)
			at_full = argv[++i];
		else if (!strcmp(argv[i], "--init") && i + 1 < argc)
			init = argv[++i];
		else if (!strcmp(argv[i], "--compress"))
			compress = true;
		else if (!strcmp(argv[i], "--flush-full"))
			flush_full = true;
		else
			return 2;
	}
	rng_state = seed * 2654435761u + 1;
	if (cow_open(argv[1], NULL, want_direct() ? COW_O_DIRECT : 0, &f.img, &e) < 0)
		die_err("open", &e);
	f.size = cow_size(f.img);
	f.cs = cow_cluster_size(f.img) ? cow_cluster_size(f.img) : 65536;
	{
		struct cow_info ci;
		cow_get_info(f.img, &ci);
		f.v2_backing = ci.version < 3 && ci.backing;
	}
	f.model = calloc(1, f.size);
	f.unk = calloc(1, f.size);
	maxlen = 32 * f.cs < (1 << 20) ? 32 * f.cs : (1 << 20);
	buf = malloc(maxlen + f.cs);
	if (!f.model || !f.unk || !buf)
		return 1;
	if (init) {
		int ifd = open(init, O_RDONLY);
		if (ifd < 0 || pread(ifd, f.model, f.size, 0) < 0) {
			perror(init);
			return 1;
		}
		close(ifd);
	}
	if (fsize && (r = test_fsize_limit(fsize)) < 0) {
		fprintf(stderr, "cowio: RLIMIT_FSIZE: %s\n", strerror(-r));
		return 1;
	}
	for (uint64_t i = 0; i < nops && r == 0; i++) {
		uint64_t kind = rnd() % 100, len = rnd() % maxlen + 1, off = rnd() % f.size;

		if (i == back && (r = fill_space_back(&f, at_full, filler, flush_full)) != 0)
			break;
		if (rnd() % 2) {
			off &= ~511ull;
			len = (len + 511) & ~511ull;
		}
		if (off + len > f.size)
			len = f.size - off;
		if (!len)
			continue;
		if (kind < 6) {
			unsigned fl = (i & 1) ? COW_ZERO_MAY_UNMAP : 0;
			memset(f.model + off, 0, len);
			memset(f.unk + off, 0, len);
			r = fill_result(&f, cow_write_zeroes(f.img, len, off, fl, &e), "write-zeroes",
					off, len, &e);
		} else if (kind < 10) {
			uint64_t a = (off + f.cs - 1) & ~(f.cs - 1), b = (off + len) & ~(f.cs - 1);
			if (b > a) {
				/* whole clusters read as zeros afterwards (v3: zero
				 * clusters over a backing file); v2 over a backing
				 * file keeps them */
				if (!f.v2_backing) {
					memset(f.model + a, 0, b - a);
					memset(f.unk + a, 0, b - a);
				}
				r = fill_result(&f, cow_discard(f.img, b - a, a, false, &e), "discard",
						a, b - a, &e);
			}
		} else if (kind < 18) {
			r = fill_result(&f, cow_flush(f.img, &e), "flush", 0, 0, &e);
		} else if (kind < 28) {
			r = fill_verify(&f, f.img, off, len, false, buf);
		} else if (compress && kind < 40) {
			uint64_t a = off & ~(f.cs - 1), n = len < f.cs ? f.cs : (len + f.cs - 1) & ~(f.cs - 1);
			if (a + n > f.size)
				n = f.size - a;
			for (uint64_t j = 0; j < n; j++)
				buf[j] = (uint8_t)((j / 97) ^ (i * 7));
			memcpy(f.model + a, buf, n);
			memset(f.unk + a, 0, n);
			r = fill_result(&f, cow_write_compressed(f.img, buf, n, a, &e), "compressed write",
					a, n, &e);
		} else {
			for (uint64_t j = 0; j < len; j++)
				buf[j] = (uint8_t)(rnd() >> 13);
			memcpy(f.model + off, buf, len);
			memset(f.unk + off, 0, len);
			r = fill_result(&f, cow_write(f.img, buf, len, off, &e), "write", off, len, &e);
		}
	}
	if (r == 0 && back >= nops)
		r = fill_space_back(&f, at_full, filler, flush_full);
	if (r == 0)
		r = fill_verify_all(&f, f.img, false, buf, maxlen);
	if (r)
		return r;
	if (cow_close(f.img) < 0) {
		fprintf(stderr, "cowio: close failed\n");
		return 3;
	}
	if (cow_open(argv[1], NULL, COW_O_RDONLY, &f.img, &e) < 0)
		die_err("reopen", &e);
	r = fill_verify_all(&f, f.img, true, buf, maxlen);
	cow_close(f.img);
	if (r)
		return r;
	fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || pwrite(fd, f.model, f.size, 0) != (ssize_t)f.size || close(fd) < 0) {
		perror(argv[2]);
		return 1;
	}
	printf("%llu requests failed in all\n", (unsigned long long)f.nerr);
	free(f.model);
	free(f.unk);
	free(buf);
	return 0;
}

/* ---- a failed write's leftovers ---- */
static int cmd_stale(int argc, char **argv)
{
	uint64_t end = strtoull(argv[2], NULL, 0), cs = 65536;
	bool stg = argc > 3 && !strcmp(argv[3], "stg");
	uint8_t a[4096], b[512], z[1024];
	struct cow_img *img = NULL;
	struct stg_dev *d = NULL;
	struct ut_err e;
	int r1, r2, fd;

	memset(a, 0xbb, sizeof(a));
	memset(b, 0xcc, sizeof(b));
	if (stg ? stg_open(argv[1], NULL, 0, &d, &e) < 0 : cow_open(argv[1], NULL, 0, &img, &e) < 0)
		die_err("open", &e);
	if (test_fsize_limit(end + 1024) < 0)
		return 1;
	r1 = stg ? stg_pwrite(d, a, sizeof(a), cs) : cow_write(img, a, sizeof(a), cs, &e);
	test_space_back(NULL);
	fd = open(argv[1], O_RDONLY);
	if (fd < 0 || pread(fd, z, sizeof(z), (off_t)end) != (ssize_t)sizeof(z) || z[0] != 0xbb) {
		fprintf(stderr, "cowio: stale: the failed write left nothing at %llu\n",
			(unsigned long long)end);
		return 4;
	}
	close(fd);
	r2 = stg ? stg_pwrite(d, b, sizeof(b), 2 * cs + 8192)
		 : cow_write(img, b, sizeof(b), 2 * cs + 8192, &e);
	if (stg) {
		if (stg_flush(d) < 0)
			r2 = -EIO;
		stg_close(d);
	} else if (cow_close(img) < 0) {
		r2 = -EIO;
	}
	printf("write past the limit: %s; the 512-byte write: %s\n", r1 < 0 ? strerror(-r1) : "succeeded",
	       r2 < 0 ? strerror(-r2) : "ok");
	return r1 < 0 && r2 == 0 ? 0 : 3;
}

/* ---- a failing fdatasync ---- */
static int cmd_syncfail(char **argv)
{
	struct cow_img *img;
	struct ut_err e;
	uint8_t *buf = malloc(1 << 20);
	int fd;

	if (!buf || cow_open(argv[1], NULL, 0, &img, &e) < 0)
		die_err("open", &e);
	memset(buf, 0x11, 1 << 20);
	if (cow_write(img, buf, 1 << 20, 0, &e) < 0 || cow_flush(img, &e) < 0)
		die_err("first write and flush", &e);
	memset(buf, 0x22, 1 << 20);
	if (cow_write(img, buf, 1 << 20, 4 << 20, &e) < 0)
		die_err("second write", &e);
	fd = open(argv[2], O_WRONLY | O_CREAT, 0644);
	if (fd < 0) {
		perror(argv[2]);
		return 1;
	}
	close(fd);
	if (cow_flush(img, &e) == 0) {
		fprintf(stderr, "cowio: the flush whose fdatasync failed succeeded\n");
		return 3;
	}
	printf("flush: %s\n", e.msg);
	if (cow_flush(img, &e) == 0) {
		fprintf(stderr, "cowio: a flush after a failed fdatasync succeeded\n");
		return 3;
	}
	printf("flush again: %s\n", e.msg);
	if (e.code != -EIO) {
		fprintf(stderr, "cowio: a flush after a failed fdatasync failed with %s, not EIO\n",
			strerror(-e.code));
		return 3;
	}
	if (cow_close(img) == 0) {
		fprintf(stderr, "cowio: the close after a failed fdatasync succeeded\n");
		return 3;
	}
	free(buf);
	return 0;
}

static int cmd_ops(int argc, char **argv)
{
	struct cow_img *img, *ovl;
	struct ut_err e;
	uint8_t *buf = NULL;
	bool limited = false;
	int ret;

	if (cow_open(argv[1], NULL, 0, &img, &e) < 0)
		die_err("open", &e);
	for (int i = 2; i < argc; i++) {
		const char *op = argv[i];
		unsigned long long off = 0, len = 0;

		if (op[0] == 'k') {
			fflush(NULL);
			raise(SIGKILL);
		}
		if (op[0] == 'f') {
			if (cow_flush(img, &e) < 0)
				die_err("flush", &e);
			continue;
		}
		if (op[0] == 'x' && op[1] == ':') {
			if (system(op + 2) != 0) {
				fprintf(stderr, "cowio: '%s' failed\n", op + 2);
				return 1;
			}
			continue;
		}
		if (op[0] == 'l') {
			struct stat sb;
			struct rlimit rl;

			if (stat(argv[1], &sb) < 0)
				return 1;
			signal(SIGXFSZ, SIG_IGN);
			rl.rlim_cur = rl.rlim_max = (rlim_t)sb.st_size;
			if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
				return 1;
			limited = true;
			continue;
		}
		if ((op[0] == 'g' || op[0] == 's') && op[1] == ':') {
			uint64_t sz = strtoull(op + 2, NULL, 0);

			if ((op[0] == 'g' ? cow_grow(img, sz, &e) : cow_shrink(img, sz, &e)) < 0)
				die_err(op, &e);
			continue;
		}
		if ((op[0] == 'o' || op[0] == 'O') && op[1] == ':') {
			if (cow_open(op + 2, "qcow2", COW_O_NO_BACKING, &ovl, &e) < 0)
				die_err("open overlay", &e);
			if (cow_overlay_check(ovl, img, &e) < 0)
				die_err("overlay check", &e);
			if (op[0] == 'O') {
				cow_close(ovl);
				continue;
			}
			cow_overlay_attach(ovl, img);
			img = ovl;
			continue;
		}
		if (sscanf(op + 1, ":%llu:%llu", &off, &len) != 2 || !strchr("wzudc", op[0])) {
			fprintf(stderr, "cowio: bad op '%s'\n", op);
			return 2;
		}
		free(buf);
		buf = malloc(len ? len : 1);
		if (!buf)
			return 1;
		memset(buf, 0x5a, len);
		switch (op[0]) {
		case 'w': ret = cow_write(img, buf, len, off, &e); break;
		case 'z': ret = cow_write_zeroes(img, len, off, 0, &e); break;
		case 'u': ret = cow_write_zeroes(img, len, off, COW_ZERO_MAY_UNMAP, &e); break;
		case 'd': ret = cow_discard(img, len, off, false, &e); break;
		default: ret = cow_write_compressed(img, buf, len, off, &e); break;
		}
		if (ret < 0)
			die_err(op, &e);
	}
	free(buf);
	if (cow_close(img) < 0) {
		fprintf(stderr, "cowio: close failed\n");
		return limited ? 4 : 1;
	}
	return 0;
}

/* ---- an internal snapshot, read-only ---- */
static int cmd_snapread(int argc, char **argv)
{
	unsigned fl = COW_O_SNAP_ID_OR_NAME | (argc == 5 && !strcmp(argv[4], "image") ? COW_O_SNAP_IMAGE_SIZE : 0);
	struct cow_img *img;
	struct ut_err e;
	uint64_t size, cs;
	uint8_t *buf;
	int fd, bad = 0;

	if (cow_open_snapshot(argv[1], NULL, fl, argv[2], NULL, &img, &e) != -EROFS) {
		fprintf(stderr, "cowio: a writable open of a snapshot was not refused with EROFS\n");
		return 3;
	}
	if (cow_open_snapshot(argv[1], NULL, fl | COW_O_RDONLY, argv[2], NULL, &img, &e) < 0)
		die_err("open snapshot", &e);
	size = cow_size(img);
	cs = cow_cluster_size(img);
	buf = calloc(1, cs > (1u << 20) ? cs : (1u << 20));
	if (!buf)
		return 1;
#define REFUSED(call) do { \
		if ((call) >= 0) { \
			fprintf(stderr, "cowio: %s on a snapshot open succeeded\n", #call); \
			bad = 1; \
		} \
	} while (0)
	if (size >= cs) {
		REFUSED(cow_write(img, buf, 512, 0, &e));
		REFUSED(cow_write_zeroes(img, cs, 0, COW_ZERO_MAY_UNMAP, &e));
		REFUSED(cow_discard(img, cs, 0, false, &e));
		REFUSED(cow_write_compressed(img, buf, cs, 0, &e));
	}
	REFUSED(cow_grow(img, size + (1u << 20), &e));
	if (size > cs)
		REFUSED(cow_shrink(img, cs, &e));
	REFUSED(cow_set_backing(img, "x.qcow2", "qcow2", &e));
	REFUSED(cow_bitmap_edit_begin(img, &e));
#undef REFUSED
	if (bad)
		return 3;
	fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		perror(argv[3]);
		return 1;
	}
	for (uint64_t off = 0; off < size;) {
		uint64_t n = size - off < (1u << 20) ? size - off : (1u << 20);
		if (cow_read(img, buf, n, off, &e) < 0)
			die_err("read", &e);
		if (pwrite(fd, buf, n, (off_t)off) != (ssize_t)n) {
			perror(argv[3]);
			return 1;
		}
		off += n;
	}
	close(fd);
	free(buf);
	printf("size %llu\n", (unsigned long long)size);
	return cow_close(img) < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "snapread"))
		return cmd_snapread(argc - 1, argv + 1);
	if (argc >= 3 && !strcmp(argv[1], "ops"))
		return cmd_ops(argc - 1, argv + 1);
	if (argc >= 5 && !strcmp(argv[1], "random"))
		return cmd_random(argv + 1, argc >= 6 && !strcmp(argv[5], "compress"));
	if (argc == 4 && !strcmp(argv[1], "cmp"))
		return cmd_cmp(argv + 1);
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "crashwrite"))
		return cmd_crashwrite(argv + 1);
	if ((argc == 6 || argc == 7) && !strcmp(argv[1], "stgwrite"))
		return cmd_stgwrite(argv + 1);
	if (argc == 6 && !strcmp(argv[1], "crashverify"))
		return cmd_crashverify(argv + 1);
	if (argc >= 7 && !strcmp(argv[1], "fill"))
		return cmd_fill(argc - 1, argv + 1);
	if (argc == 4 && !strcmp(argv[1], "syncfail"))
		return cmd_syncfail(argv + 1);
	if ((argc == 4 || argc == 5) && !strcmp(argv[1], "stale"))
		return cmd_stale(argc - 1, argv + 1);
	fprintf(stderr, "usage: cowio random IMG REF SEED NOPS [compress] | cmp IMG REF | "
		"crashwrite IMG ITER LOG [NOPS] | stgwrite IMG ITER LOG NOPS [DEPTH] | "
		"crashverify IMG ITER LOG BASELINE | fill IMG OUT SEED NOPS BACK [options] | syncfail IMG FLAG | "
		"stale IMG END [stg] | ops IMG OP... | snapread IMG SNAP OUT [image]\n");
	return 2;
}
