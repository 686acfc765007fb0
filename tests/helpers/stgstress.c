/* tests/helpers/stgstress.c — randomized differential stress of storage/
 * (the blockdev API virtio-blk uses: qcow2 and raw backends, io_uring and
 * worker-thread engines) against a byte-array model of the disk.
 *
 *   stgstress run IMAGE [options]
 *       issue random reads / writes / write-zeroes / discards / flushes,
 *       up to --depth in flight (never two overlapping unless both are
 *       reads), with split, oddly aligned iovecs surrounded by guard bytes;
 *       every completed read is compared with the model. Discard is modelled
 *       as cow_discard documents it (whole clusters, and the last partial
 *       one when the range reaches the end of the disk, read as zeros;
 *       nothing on a v2 image with a backing file; raw: the range is
 *       punched). At the end: drain, read the whole disk back through
 *       storage/, close, reopen with cow_open and compare again.
 *   stgstress genbase FILE SIZE SEED
 *       write a raw FILE of SIZE bytes (zero / compressible / random
 *       blocks) to use as a backing file's content.
 *
 * run options:
 *   --seed N        PRNG seed (default 1); the requests issued are the same
 *                   for a seed, their completion order is not
 *   --ops N         requests to issue (default 5000)
 *   --depth N       max requests in flight (default 32, max 256)
 *   --init FILE     raw file with the image's initial guest content (missing
 *                   bytes / no file: zeros)
 *   --out FILE      write the final model as a raw file (for qemu-img compare)
 *   --threads       STG_O_THREADS (worker-thread engine)
 *   --direct        STG_O_DIRECT (cache=none)
 *   --maxlen N      max request length (default 4 MiB)
 *   --hot N         bytes of a "hot" region at offset 0 where many small
 *                   requests collide on the same clusters (default 4 clusters)
 *   --reopen N      drain, close and reopen every N ops (0: never)
 *   --mixreopen     with --reopen: each reopen picks direct/threads at random
 *   --cbsubmit      also submit new requests from inside completion callbacks
 *   --no-discard / --no-zeroes / --no-flush
 *   --byteiov       allow iovec pieces of arbitrary byte length / alignment
 *   --bytealign     also requests whose offset/length are not multiples of 512
 *   --maxvec N      max iovec pieces per read/write (default 40)
 *   --evloop        wait only by poll() on the eventfd (5 s) + stg_poll, as a
 *                   VM I/O thread; a 5 s silence with requests in flight is a
 *                   STALL
 *   --errors-ok     writes/zeroes/discards/flushes may fail (e.g. ENOSPC;
 *                   not EUCLEAN, the image marked corrupt): their range
 *                   becomes unknown to the model; reads must
 *                   still succeed and every other byte must match (--out
 *                   then holds what the image read at the unknown bytes)
 *   --fsize N       lower this process's file size limit (RLIMIT_FSIZE,
 *                   soft) to N bytes, SIGXFSZ ignored: writes that would
 *                   grow a file past N fail with EFBIG (a full disk without
 *                   a mount)
 *   --filler FILE   a file on the image's (full) file system, deleted at
 *                   --space-back
 *   --space-back N  after N ops: drain, give the space back (delete the
 *                   --filler file, raise the --fsize limit to the hard
 *                   limit), then a flush of the same open device must
 *                   succeed, and from then on no request may fail
 *   --flush-full    at --space-back, first a flush while the disk is still
 *                   full must succeed (every table it writes has its
 *                   blocks already)
 *   --log FILE      write every request (submit and completion) to FILE
 *   --timeout S     abort with a dump of the requests in flight if the run
 *                   takes longer (default 300)
 *   -v              progress
 * Exit 0 ok, 1 usage or setup error, 2 data mismatch (first bad offset and
 * the requests in flight on stderr), 3 request error, 4 hang or stall.
 */
#include "storage/blockdev.h"
#include "cow/cow.h"
#include "tests/helpers/fullfs.h"
#include "tests/helpers/xorshift.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAXDEPTH 256
#define MAXVEC_DEF 40
static int maxvec = MAXVEC_DEF;

enum { K_READ, K_WRITE, K_ZERO, K_DISCARD, K_FLUSH };
static const char *kname[] = { "read", "write", "zeroes", "discard", "flush" };

struct slot {
	struct stg_req req;
	struct iovec *iov;
	int niov;
	uint8_t *mem;     /* allocation (with guard bytes) */
	size_t memlen;
	int kind;
	uint64_t off, len, id;
	bool busy;
	int result;
};

static struct stg_dev *dev;
static uint8_t *model;
static uint8_t *unk;        /* --errors-ok: bytes whose content a failed request left unknown */
static bool o_errok;
static uint64_t nerrors;
static const char *filler;  /* --filler */
static uint64_t space_back; /* --space-back: op count, 0 none */
static bool o_flush_full;   /* --flush-full */
static uint64_t dsize, cs;
static bool has_backing, is_raw;
static int version;
static unsigned depth = 32;
static struct slot slots[MAXDEPTH];
static uint64_t rs;
static uint64_t nops = 5000, issued, completed;
static uint64_t maxlen = 4u << 20, hot;
static bool o_threads, o_direct, o_cbsubmit, o_byteiov, o_verbose;
static bool no_discard, no_zeroes, no_flush, o_evloop, o_mixreopen, o_bytealign;
static uint64_t stalls;
static FILE *oplog;         /* --log */
static const char *image;
static uint64_t stats[5], statbytes[5];
static int in_cb;

static uint64_t rr(uint64_t n) { return n ? test_xorshift64(&rs) % n : 0; }

static void dump_inflight(FILE *f)
{
	for (unsigned i = 0; i < depth; i++)
		if (slots[i].busy)
			fprintf(f, "  in flight: #%llu %s off=%llu len=%llu niov=%d\n",
				(unsigned long long)slots[i].id, kname[slots[i].kind],
				(unsigned long long)slots[i].off, (unsigned long long)slots[i].len,
				slots[i].niov);
}

static void on_alarm(int sig)
{
	(void)sig;
	fprintf(stderr, "stgstress: HANG/timeout after %llu issued, %llu completed, inflight=%u\n",
		(unsigned long long)issued, (unsigned long long)completed, dev ? stg_inflight(dev) : 0);
	dump_inflight(stderr);
	if (oplog)
		fflush(oplog);
	_exit(4);
}

/* ---- data patterns ---- */
static void fill_data_full(uint8_t *p, uint64_t len, uint64_t id, uint64_t off);
static void fill_data(uint8_t *p, uint64_t len, uint64_t id, uint64_t off)
{
	uint8_t tmp[512];
	uint64_t whole = len & ~511ull;

	fill_data_full(p, whole, id, off);
	if (len > whole) {
		fill_data_full(tmp, 512, id, off + whole);
		memcpy(p + whole, tmp, len - whole);
	}
}

static void fill_data_full(uint8_t *p, uint64_t len, uint64_t id, uint64_t off)
{
	int mode = (int)(id % 11);

	if (mode == 0) {   /* all zero data through the write path */
		memset(p, 0, len);
		return;
	}
	for (uint64_t s = 0; s < len; s += 512) {
		uint64_t x = (id * 0x9E3779B97F4A7C15ull) ^ ((off + s) * 0xC2B2AE3D27D4EB4Full) ^ 1;
		if (mode == 1) {   /* compressible */
			int n = snprintf((char *)p + s, 512, "id=%llu off=%llu ", (unsigned long long)id,
					 (unsigned long long)(off + s));
			memset(p + s + n, 'a' + (int)(id % 26), 512 - (size_t)n);
			continue;
		}
		for (int i = 0; i < 512; i += 8) {
			test_xorshift64(&x);
			memcpy(p + s + i, &x, 8);
		}
		memcpy(p + s, &id, 8);
		uint64_t o = off + s;
		memcpy(p + s + 8, &o, 8);
	}
}

/* ---- model ---- */
/* A write of @data (@len bytes at @off) was submitted. */
static void model_write(uint64_t off, uint64_t len, const uint8_t *data)
{
	if (unk)
		memset(unk + off, 0, len);
	memcpy(model + off, data, len);
}

/* A write-zeroes or discard of [@off, @off + @len) was submitted. */
static void model_apply(int kind, uint64_t off, uint64_t len)
{
	if (unk && kind != K_DISCARD)
		memset(unk + off, 0, len);
	if (kind == K_ZERO) {
		memset(model + off, 0, len);
	} else if (kind == K_DISCARD) {
		/* cow_discard: whole clusters (and the last, partial cluster when
		 * the range reaches the end of the disk) read as zeros; partial
		 * clusters are left alone; a v2 image with a backing file keeps
		 * everything */
		uint64_t a = (off + cs - 1) / cs * cs, b = (off + len) / cs * cs;
		if (is_raw) {   /* raw: the range is punched */
			memset(model + off, 0, len);
			return;
		}
		if (has_backing && version < 3)
			return;
		if (off + len == dsize)
			b = dsize;
		if (b > a)
			memset(model + a, 0, b - a);
	}
}

static bool overlaps(uint64_t a0, uint64_t al, uint64_t b0, uint64_t bl)
{
	return a0 < b0 + bl && b0 < a0 + al;
}

static bool conflicts(int kind, uint64_t off, uint64_t len)
{
	if (kind == K_FLUSH)
		return false;
	for (unsigned i = 0; i < depth; i++) {
		struct slot *s = &slots[i];
		if (!s->busy || s->kind == K_FLUSH)
			continue;
		if (kind == K_READ && s->kind == K_READ)
			continue;
		if (overlaps(off, len, s->off, s->len))
			return true;
	}
	return false;
}

static struct slot *free_slot(void)
{
	for (unsigned i = 0; i < depth; i++)
		if (!slots[i].busy)
			return &slots[i];
	return NULL;
}

struct opd { int kind; uint64_t off, len; };

static uint64_t pick_len(void)
{
	uint64_t l, r = rr(100);

	if (r < 40)
		l = 512 * (1 + rr(8));
	else if (r < 70)
		l = 512 * (1 + rr(cs / 512 + 1));
	else if (r < 90)
		l = 512 * (1 + rr(4 * cs / 512));
	else
		l = 512 * (1 + rr((2u << 20) / 512));
	if (l > maxlen)
		l = 512 * (1 + rr(maxlen / 512));
	return l;
}

static void gen_op(struct opd *o)
{
	uint64_t r = rr(100), sectors = dsize / 512;

	if (r < 42)
		o->kind = K_READ;
	else if (r < 80)
		o->kind = K_WRITE;
	else if (r < 88)
		o->kind = no_zeroes ? K_WRITE : K_ZERO;
	else if (r < 96)
		o->kind = no_discard ? K_READ : K_DISCARD;
	else
		o->kind = no_flush ? K_READ : K_FLUSH;
	if (o->kind == K_FLUSH) {
		o->off = o->len = 0;
		return;
	}
	o->len = pick_len();
	r = rr(100);
	if (r < 35) {                       /* anywhere */
		o->off = rr(sectors) * 512;
	} else if (r < 55) {                /* cluster aligned */
		o->off = rr((dsize + cs - 1) / cs) * cs;
		if (rr(2))
			o->len = (1 + rr(4)) * cs;
	} else if (r < 80 && hot) {         /* hot region: small requests sharing clusters */
		o->off = rr(hot / 512) * 512;
		o->len = 512 * (1 + rr(16));
	} else if (r < 90) {                /* near / at the end of the disk */
		uint64_t span = 3 * cs < dsize ? 3 * cs : dsize;
		o->off = dsize - 512 * (1 + rr(span / 512));
		if (rr(2))
			o->len = dsize - o->off;    /* reaches the end exactly */
	} else {                            /* subcluster-ish offsets inside a cluster */
		uint64_t c = rr(dsize / cs + 1) * cs;
		o->off = c + 512 * rr(cs / 512);
		o->len = 512 * (1 + rr(cs / 512));
	}
	if (o_bytealign && rr(3) == 0) {   /* byte-granular offset / length */
		o->off += rr(512);
		o->len = o->len - 511 + rr(1024);
		if (o->len == 0 || o->len > (1ull << 40))
			o->len = 1 + rr(512);
	}
	if (o->off >= dsize)
		o->off = dsize - 512;
	if (o->len > dsize - o->off)
		o->len = dsize - o->off;
	if (o->len == 0)
		o->len = 512;
}

static void check_read(struct slot *s)
{
	uint64_t pos = 0;

	for (int i = 0; i < s->niov; i++) {
		const uint8_t *p = s->iov[i].iov_base;
		size_t l = s->iov[i].iov_len;
		if (memcmp(p, model + s->off + pos, l)) {
			uint64_t j = 0;
			while (j < l && (p[j] == model[s->off + pos + j] || (unk && unk[s->off + pos + j])))
				j++;
			if (j == l) {
				pos += l;
				continue;
			}
			uint64_t bad = s->off + pos + j, k = j;
			while (k < l && p[k] != model[s->off + pos + k])
				k++;
			fprintf(stderr,
				"stgstress: MISMATCH read #%llu off=%llu len=%llu niov=%d: first bad byte at disk "
				"offset %llu (cluster %llu +%llu), bad run >= %llu bytes in vector %d; got %02x expected %02x\n",
				(unsigned long long)s->id, (unsigned long long)s->off,
				(unsigned long long)s->len, s->niov, (unsigned long long)bad,
				(unsigned long long)(bad / cs), (unsigned long long)(bad % cs),
				(unsigned long long)(k - j), i, p[j], model[bad]);
			if (l - (j & ~511ull) >= 16) {
				/* the tag fill_data puts at the start of a random-data
				 * sector (vector-relative: a guess when the vector does
				 * not start on a sector) */
				uint64_t gid, goff;
				memcpy(&gid, p + (j & ~511ull), 8);
				memcpy(&goff, p + (j & ~511ull) + 8, 8);
				fprintf(stderr, "  got sector tag: id=%llu off=%llu (if from a random-data write)\n",
					(unsigned long long)gid, (unsigned long long)goff);
			}
			dump_inflight(stderr);
			if (oplog)
				fflush(oplog);
			_exit(2);
		}
		pos += l;
	}
	/* guard bytes around the vectors */
	for (size_t b = 0; b < s->memlen; b++) {
		bool inside = false;
		for (int i = 0; i < s->niov && !inside; i++)
			inside = s->mem + b >= (uint8_t *)s->iov[i].iov_base &&
				 s->mem + b < (uint8_t *)s->iov[i].iov_base + s->iov[i].iov_len;
		if (!inside && s->mem[b] != 0xA5) {
			fprintf(stderr, "stgstress: read #%llu off=%llu len=%llu wrote outside its vectors (mem+%zu)\n",
				(unsigned long long)s->id, (unsigned long long)s->off,
				(unsigned long long)s->len, b);
			_exit(2);
		}
	}
}

static void try_submit_from_cb(void);

static void req_done(struct stg_req *req, int result)
{
	struct slot *s = req->opaque;

	if (!s->busy) {
		fprintf(stderr, "stgstress: completion of a request not in flight (#%llu)\n",
			(unsigned long long)s->id);
		_exit(3);
	}
	if (oplog)
		fprintf(oplog, "done %llu %d\n", (unsigned long long)s->id, result);
	if (result < 0 && o_errok && s->kind != K_READ && result != -EUCLEAN) {
		nerrors++;
		if (s->kind != K_FLUSH)
			memset(unk + s->off, 1, s->len);
		result = 0;
	}
	if (result < 0) {
		fprintf(stderr, "stgstress: request #%llu %s off=%llu len=%llu failed: %s\n",
			(unsigned long long)s->id, kname[s->kind], (unsigned long long)s->off,
			(unsigned long long)s->len, strerror(-result));
		_exit(3);
	}
	if (s->kind == K_READ)
		check_read(s);
	s->busy = false;
	completed++;
	if (o_cbsubmit && issued < nops && rr(3) == 0) {
		in_cb++;
		try_submit_from_cb();
		in_cb--;
	}
}

/* Build buffers and submit @o in @s. */
static void submit(struct slot *s, const struct opd *o)
{
	int r;

	struct iovec *keep = s->iov;
	free(s->mem);
	memset(s, 0, sizeof(*s));
	s->iov = keep ? keep : calloc((size_t)maxvec + 1, sizeof(struct iovec));
	s->kind = o->kind;
	s->off = o->off;
	s->len = o->len;
	s->id = ++issued;
	s->req.op = o->kind == K_READ ? STG_OP_READ : o->kind == K_WRITE ? STG_OP_WRITE :
		    o->kind == K_ZERO ? STG_OP_WRITE_ZEROES : o->kind == K_DISCARD ? STG_OP_DISCARD :
		    STG_OP_FLUSH;
	s->req.offset = o->off;
	s->req.len = o->len;
	/* write-zeroes with and without unmap (a cluster zeroed without it
	 * keeps its host cluster, and later writes go there in place) */
	if (o->kind == K_ZERO && (s->id & 1))
		s->req.flags = STG_REQ_MAY_UNMAP;
	s->req.done = req_done;
	s->req.opaque = s;
	stats[o->kind]++;
	statbytes[o->kind] += o->len;
	if (o->kind == K_READ || o->kind == K_WRITE) {
		/* split into vectors; memory alignment varies; guard gaps */
		int n = 1;
		uint64_t *cuts = malloc(sizeof(uint64_t) * ((size_t)maxvec + 2));
		uint64_t sectors = o->len / 512;
		int am = (int)rr(100);
		size_t start = am < 50 ? 0 : am < 80 ? 512 : o_byteiov ? 1 + rr(511) : 8 * (1 + rr(63));
		size_t gap = rr(3) == 0 ? 0 : 512 * rr(3) + (o_byteiov ? rr(64) : 0);
		uint8_t *data = NULL;

		if (rr(4) == 0)
			n = 1 + (int)rr(rr(5) == 0 ? (uint64_t)maxvec : 8);
		if (n > 1) {
			int k = 0;
			cuts[k++] = 0;
			for (int i = 1; i < n; i++) {
				uint64_t c = o_byteiov && rr(2) ? rr(o->len) : rr(sectors) * 512;
				if (c == 0)
					continue;
				cuts[k++] = c;
			}
			/* sort & dedupe */
			for (int i = 1; i < k; i++)
				for (int j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
					uint64_t t = cuts[j];
					cuts[j] = cuts[j - 1];
					cuts[j - 1] = t;
				}
			int m = 1;
			for (int i = 1; i < k; i++)
				if (cuts[i] != cuts[m - 1])
					cuts[m++] = cuts[i];
			n = m;
		} else {
			cuts[0] = 0;
		}
		cuts[n] = o->len;
		s->memlen = start + o->len + (size_t)n * gap + 64;
		if (posix_memalign((void **)&s->mem, 4096, s->memlen)) {
			perror("posix_memalign");
			_exit(1);
		}
		memset(s->mem, 0xA5, s->memlen);
		size_t p = start;
		for (int i = 0; i < n; i++) {
			s->iov[i].iov_base = s->mem + p;
			s->iov[i].iov_len = cuts[i + 1] - cuts[i];
			p += s->iov[i].iov_len + gap;
		}
		s->niov = n;
		free(cuts);
		s->req.iov = s->iov;
		s->req.iovcnt = n;
		if (o->kind == K_WRITE) {
			data = malloc(o->len);
			fill_data(data, o->len, s->id, o->off);
			uint64_t q = 0;
			for (int i = 0; i < n; i++) {
				memcpy(s->iov[i].iov_base, data + q, s->iov[i].iov_len);
				q += s->iov[i].iov_len;
			}
			model_write(o->off, o->len, data);
			free(data);
		}
	} else if (o->kind != K_FLUSH) {
		model_apply(o->kind, o->off, o->len);
	}
	s->busy = true;
	if (oplog)
		fprintf(oplog, "submit %llu %s %llu %llu niov=%d%s\n", (unsigned long long)s->id,
			kname[s->kind], (unsigned long long)s->off, (unsigned long long)s->len, s->niov,
			in_cb ? " (cb)" : "");
	r = stg_submit(dev, &s->req);
	if (r < 0 && o_errok && s->kind != K_READ && r != -EUCLEAN) {
		/* failed at submission: done() will not run */
		nerrors++;
		if (oplog)
			fprintf(oplog, "submit-failed %llu %d\n", (unsigned long long)s->id, r);
		if (s->kind != K_FLUSH)
			memset(unk + s->off, 1, s->len);
		s->busy = false;
		completed++;
		return;
	}
	if (r < 0) {
		fprintf(stderr, "stgstress: submit #%llu %s off=%llu len=%llu failed: %s\n",
			(unsigned long long)s->id, kname[s->kind], (unsigned long long)s->off,
			(unsigned long long)s->len, strerror(-r));
		_exit(3);
	}
}

static void try_submit_from_cb(void)
{
	struct opd o;
	struct slot *s = free_slot();

	if (!s)
		return;
	gen_op(&o);
	if (conflicts(o.kind, o.off, o.len))
		return;
	submit(s, &o);
}

static void wait_some(void)
{
	int r;

	if (o_evloop) {
		/* as a VM's I/O thread: sleep on the eventfd only */
		struct pollfd pfd = { .fd = dev->event_fd, .events = POLLIN };
		stg_unplug(dev);
		r = poll(&pfd, 1, 5000);
		if (r == 0 && stg_inflight(dev)) {
			stalls++;
			fprintf(stderr, "stgstress: STALL: eventfd not readable for 5 s with %u requests in flight\n",
				stg_inflight(dev));
			dump_inflight(stderr);
		}
		r = stg_poll(dev);
	} else if (rr(4) == 0) {
		/* the event-loop way: poll the eventfd, then stg_poll */
		struct pollfd pfd = { .fd = dev->event_fd, .events = POLLIN };
		stg_unplug(dev);
		r = poll(&pfd, 1, 20);
		if (r < 0 && errno != EINTR) {
			perror("poll");
			_exit(1);
		}
		r = stg_poll(dev);
	} else {
		r = stg_wait(dev);
	}
	if (r < 0) {
		fprintf(stderr, "stgstress: stg_wait/poll: %s\n", strerror(-r));
		dump_inflight(stderr);
		_exit(3);
	}
}

/* --space-back: the file system has room again. Every request in flight
 * completes (failing or not), then a flush of the same open device must
 * succeed: what the failures left dirty is written now. From here on no
 * request may fail. */
static int give_space_back(void)
{
	int r;

	if (stg_drain(dev) < 0) {
		fprintf(stderr, "stgstress: drain before giving space back failed\n");
		return 3;
	}
	fprintf(stderr, "stgstress: %llu requests failed before the space came back\n",
		(unsigned long long)nerrors);
	if (o_flush_full && (r = stg_flush(dev)) < 0) {
		fprintf(stderr, "stgstress: flush while the disk is full failed: %s\n", strerror(-r));
		return 3;
	}
	if ((r = test_space_back(filler)) < 0) {
		fprintf(stderr, "stgstress: unlink %s: %s\n", filler, strerror(-r));
		return 1;
	}
	o_errok = false;
	r = stg_flush(dev);
	if (r < 0) {
		fprintf(stderr, "stgstress: flush after the space came back failed: %s\n", strerror(-r));
		return 3;
	}
	if (oplog)
		fprintf(oplog, "space back after %llu ops; flush ok\n", (unsigned long long)issued);
	return 0;
}

static void open_dev(void)
{
	struct ut_err e;
	unsigned f = (o_threads ? STG_O_THREADS : 0) | (o_direct ? STG_O_DIRECT : 0);
	int r = stg_open(image, NULL, f, &dev, &e);

	if (r < 0) {
		fprintf(stderr, "stgstress: open %s: %s\n", image, e.msg);
		exit(1);
	}
	if (dev->size != dsize) {
		fprintf(stderr, "stgstress: size %llu != %llu\n", (unsigned long long)dev->size,
			(unsigned long long)dsize);
		exit(1);
	}
}

/* Read the whole device back through storage/ with several requests in
 * flight and compare. */
static void verify_all(const char *what)
{
	uint64_t chunk = 1 << 20, off = 0;

	while (off < dsize || stg_inflight(dev)) {
		struct slot *s;
		while (off < dsize && (s = free_slot())) {
			struct opd o = { K_READ, off, dsize - off < chunk ? dsize - off : chunk };
			/* vary the chunk a bit so boundaries move */
			uint64_t l = 512 * (1 + rr(chunk / 512));
			if (l < o.len)
				o.len = l;
			submit(s, &o);
			issued--;   /* not counted as a stress op */
			stats[K_READ]--;
			statbytes[K_READ] -= o.len;
			off += o.len;
		}
		stg_unplug(dev);
		if (stg_inflight(dev))
			wait_some();
	}
	if (o_verbose)
		fprintf(stderr, "stgstress: %s: whole disk matches the model\n", what);
}

static int verify_cow(void)
{
	struct cow_img *img;
	struct ut_err e;
	uint8_t *buf = malloc(1 << 20);
	int r = cow_open(image, NULL, COW_O_RDONLY | COW_O_NO_LOCK, &img, &e);

	if (r < 0) {
		fprintf(stderr, "stgstress: cow_open %s: %s\n", image, e.msg);
		return 1;
	}
	for (uint64_t off = 0; off < dsize; off += 1 << 20) {
		uint64_t l = dsize - off < (1 << 20) ? dsize - off : 1 << 20;
		if (cow_read(img, buf, l, off, &e) < 0) {
			fprintf(stderr, "stgstress: cow_read: %s\n", e.msg);
			return 1;
		}
		if (memcmp(buf, model + off, l)) {
			uint64_t j = 0;
			while (j < l && (buf[j] == model[off + j] || (unk && unk[off + j])))
				j++;
			if (j == l) {
				/* unknown bytes: the model takes what the image holds (--out) */
				for (j = 0; j < l; j++)
					if (unk[off + j])
						model[off + j] = buf[j];
				continue;
			}
			fprintf(stderr, "stgstress: MISMATCH after close (cow_read): disk offset %llu (cluster %llu)\n",
				(unsigned long long)(off + j), (unsigned long long)((off + j) / cs));
			return 2;
		}
	}
	cow_close(img);
	free(buf);
	return 0;
}

static int genbase(const char *path, const char *size_s, const char *seed_s)
{
	uint64_t size = strtoull(size_s, NULL, 0);
	uint64_t seed = strtoull(seed_s, NULL, 0);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	uint8_t *b = malloc(4096);
	int mode = 0;

	rs = seed * 2654435761u + 77;
	if (!rs)
		rs = 1;
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
		return 1;
	for (uint64_t off = 0; off < size; off += 4096) {
		uint64_t l = size - off < 4096 ? size - off : 4096;
		if (rr(8) == 0)
			mode = (int)rr(3);
		if (mode == 0)
			continue;   /* hole: zeros */
		if (mode == 1) {
			for (uint64_t s = 0; s < l; s += 512) {
				int n = snprintf((char *)b + s, 512, "base sector %llu ", (unsigned long long)((off + s) / 512));
				memset(b + s + n, 'B', 512 - (size_t)n);
			}
		} else {
			fill_data(b, l, 1000000007ull + seed * 11 + 2, off);   /* random data */
		}
		if (pwrite(fd, b, l, (off_t)off) != (ssize_t)l)
			return 1;
	}
	close(fd);
	free(b);
	return 0;
}

int main(int argc, char **argv)
{
	const char *init = NULL, *out = NULL, *logpath = NULL;
	uint64_t seed = 1, reopen = 0, fsize = 0;
	unsigned timeout = 300;
	struct cow_img *img;
	struct cow_info ci;
	struct ut_err e;

	if (argc >= 5 && !strcmp(argv[1], "genbase"))
		return genbase(argv[2], argv[3], argv[4]);
	if (argc < 3 || strcmp(argv[1], "run")) {
		fprintf(stderr, "usage: stgstress run IMAGE [options] | stgstress genbase FILE SIZE SEED\n");
		return 1;
	}
	image = argv[2];
	for (int i = 3; i < argc; i++) {
		const char *a = argv[i];
#define ARG() (i + 1 < argc ? argv[++i] : (fprintf(stderr, "missing value for %s\n", a), exit(1), ""))
		if (!strcmp(a, "--seed")) seed = strtoull(ARG(), NULL, 0);
		else if (!strcmp(a, "--ops")) nops = strtoull(ARG(), NULL, 0);
		else if (!strcmp(a, "--depth")) depth = (unsigned)strtoul(ARG(), NULL, 0);
		else if (!strcmp(a, "--init")) init = ARG();
		else if (!strcmp(a, "--out")) out = ARG();
		else if (!strcmp(a, "--threads")) o_threads = true;
		else if (!strcmp(a, "--direct")) o_direct = true;
		else if (!strcmp(a, "--maxlen")) maxlen = strtoull(ARG(), NULL, 0);
		else if (!strcmp(a, "--hot")) hot = strtoull(ARG(), NULL, 0);
		else if (!strcmp(a, "--reopen")) reopen = strtoull(ARG(), NULL, 0);
		else if (!strcmp(a, "--cbsubmit")) o_cbsubmit = true;
		else if (!strcmp(a, "--byteiov")) o_byteiov = true;
		else if (!strcmp(a, "--no-discard")) no_discard = true;
		else if (!strcmp(a, "--no-zeroes")) no_zeroes = true;
		else if (!strcmp(a, "--no-flush")) no_flush = true;
		else if (!strcmp(a, "--log")) logpath = ARG();
		else if (!strcmp(a, "--timeout")) timeout = (unsigned)strtoul(ARG(), NULL, 0);
		else if (!strcmp(a, "-v")) o_verbose = true;
		else if (!strcmp(a, "--evloop")) o_evloop = true;
		else if (!strcmp(a, "--errors-ok")) o_errok = true;
		else if (!strcmp(a, "--fsize")) fsize = strtoull(ARG(), NULL, 0);
		else if (!strcmp(a, "--filler")) filler = ARG();
		else if (!strcmp(a, "--space-back")) space_back = strtoull(ARG(), NULL, 0);
		else if (!strcmp(a, "--flush-full")) o_flush_full = true;
		else if (!strcmp(a, "--mixreopen")) o_mixreopen = true;
		else if (!strcmp(a, "--bytealign")) o_bytealign = true;
		else if (!strcmp(a, "--maxvec")) maxvec = atoi(ARG());
		else { fprintf(stderr, "unknown option %s\n", a); return 1; }
	}
	if (!depth || depth > MAXDEPTH)
		depth = 32;
	maxlen &= ~511ull;
	if (maxlen < 512)
		maxlen = 512;
	rs = seed * 0x9E3779B97F4A7C15ull + 12345;
	if (!rs)
		rs = 1;
	signal(SIGALRM, on_alarm);
	alarm(timeout);
	if (logpath)
		oplog = fopen(logpath, "w");

	if (cow_open(image, NULL, COW_O_RDONLY | COW_O_NO_LOCK, &img, &e) < 0) {
		fprintf(stderr, "stgstress: %s: %s\n", image, e.msg);
		return 1;
	}
	cow_get_info(img, &ci);
	dsize = ci.size;
	cs = ci.cluster_size ? ci.cluster_size : 65536;
	has_backing = ci.backing != NULL;
	version = ci.version;
	is_raw = ci.fmt == COW_FMT_RAW;
	cow_close(img);
	if (!hot)
		hot = 4 * cs < dsize ? 4 * cs : dsize;
	model = calloc(1, dsize);
	if (o_errok)
		unk = calloc(1, dsize);
	if (init) {
		int fd = open(init, O_RDONLY);
		ssize_t n;
		uint64_t got = 0;
		if (fd < 0) {
			perror(init);
			return 1;
		}
		while (got < dsize && (n = pread(fd, model + got, dsize - got, (off_t)got)) > 0)
			got += (uint64_t)n;
		close(fd);
	}
	if (o_verbose)
		fprintf(stderr, "stgstress: %s size=%llu cs=%llu backing=%d v%d seed=%llu ops=%llu depth=%u%s%s\n",
			image, (unsigned long long)dsize, (unsigned long long)cs, has_backing, version,
			(unsigned long long)seed, (unsigned long long)nops, depth,
			o_threads ? " threads" : "", o_direct ? " direct" : "");
	if (fsize) {
		int r = test_fsize_limit(fsize);
		if (r < 0) {
			fprintf(stderr, "stgstress: RLIMIT_FSIZE: %s\n", strerror(-r));
			return 1;
		}
	}
	open_dev();
	if (o_verbose) {
		struct stg_info inf;
		stg_get_info(dev, &inf);
		fprintf(stderr, "stgstress: format %s\n", inf.format);
	}
	uint64_t next_reopen = reopen;
	while (issued < nops) {
		struct opd o;
		struct slot *s;
		gen_op(&o);
		while (!(s = free_slot()) || conflicts(o.kind, o.off, o.len))
			wait_some();
		if (issued >= nops)
			break;
		submit(s, &o);
		if (rr(3))
			stg_unplug(dev);
		if (space_back && issued == space_back) {
			int r = give_space_back();
			if (r)
				return r;
		}
		if (reopen && issued >= next_reopen) {
			next_reopen += reopen;
			if (stg_drain(dev) < 0) {
				fprintf(stderr, "stgstress: drain failed\n");
				return 3;
			}
			stg_close(dev);
			if (o_mixreopen) {
				o_direct = rr(2);
				o_threads = rr(2);
			}
			open_dev();
		}
		if (o_verbose && issued % 1000 == 0)
			fprintf(stderr, "stgstress: %llu ops\n", (unsigned long long)issued);
	}
	while (o_evloop && stg_inflight(dev))
		wait_some();
	if (stg_drain(dev) < 0) {
		fprintf(stderr, "stgstress: final drain failed\n");
		return 3;
	}
	verify_all("before close");
	stg_close(dev);
	dev = NULL;
	int r = verify_cow();
	if (r)
		return r;
	if (out) {
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		uint64_t done = 0;
		if (fd < 0)
			return 1;
		/* sparse: skip zero MiBs */
		if (ftruncate(fd, (off_t)dsize) < 0)
			return 1;
		for (; done < dsize; done += 4096) {
			uint64_t l = dsize - done < 4096 ? dsize - done : 4096;
			bool z = true;
			for (uint64_t k = 0; k < l && z; k++)
				z = !model[done + k];
			if (!z && pwrite(fd, model + done, l, (off_t)done) != (ssize_t)l)
				return 1;
		}
		close(fd);
	}
	if (oplog)
		fclose(oplog);
	if (stalls) {
		fprintf(stderr, "stgstress: %llu stalls (eventfd not signalled)\n", (unsigned long long)stalls);
		return 4;
	}
	if (o_errok)
		fprintf(stderr, "stgstress: %llu requests failed (tolerated)\n", (unsigned long long)nerrors);
	fprintf(stderr, "stgstress: OK seed=%llu ops=%llu (read %llu, write %llu, zeroes %llu, discard %llu, flush %llu)\n",
		(unsigned long long)seed, (unsigned long long)issued, (unsigned long long)stats[0],
		(unsigned long long)stats[1], (unsigned long long)stats[2], (unsigned long long)stats[3],
		(unsigned long long)stats[4]);
	return 0;
}
