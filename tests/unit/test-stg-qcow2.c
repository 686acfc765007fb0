/* tests/unit/test-stg-qcow2.c — the qcow2 block backend through the
 * block-device interface: probe picks qcow2, ",format=raw" forces raw; 64
 * async requests in flight (allocating and in-place writes, reads through a
 * backing chain, write-zeroes, discard, flush); content checked against a
 * model; the image stays clean by cow_check. Run with 4 KiB clusters, and
 * with extended L2 entries where several requests in flight write disjoint
 * parts of one cluster (the allocating-step conflict path). Every case runs
 * on the io_uring engine and again on the worker threads.
 * overlap_case: requests in flight together on the same clusters (two
 * writes to one cluster being allocated, a write and a discard of it, a
 * write and a read of it) end as one of their serial orders would, and
 * the image stays clean (cow_check, and `qemu-img check` where installed). */
#include "storage/blockdev.h"
#include "cow/cow.h"
#include "tests/helpers/xorshift.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define DISK (16u << 20)
#define NREQ 64

struct slot { struct stg_req req; struct iovec iov[2]; uint8_t *buf; int busy; int result; };

static void done(struct stg_req *req, int result)
{
	struct slot *s = req->opaque;
	s->busy = 0;
	s->result = result;
}

static uint64_t rs = 88172645463325252ull;
static uint64_t cs_for_reads;   /* reads land past the two clusters a write may fill */
static uint64_t rnd(void) { return test_xorshift64(&rs); }

static void run_case(const char *dir, uint32_t cluster_size, bool extl2, uint64_t region,
		     bool direct)
{
	char base[600], top[600];
	struct cow_create_opts o = { .size = DISK };
	struct ut_err err;
	struct stg_dev *d;
	struct stg_info info;
	struct cow_check_res r;
	struct slot slots[NREQ];
	uint8_t *model = calloc(1, DISK), *rd = malloc(DISK);
	uint64_t maxlen = region / 2;

	snprintf(base, sizeof(base), "%s/base.qcow2", dir);
	snprintf(top, sizeof(top), "%s/top.qcow2", dir);
	CHECK(cow_create(base, &o, &err) == 0);
	/* base content through the backend */
	CHECK(stg_open(base, NULL, 0, &d, &err) == 0);
	stg_get_info(d, &info);
	CHECK(!strcmp(info.format, "qcow2") && info.virtual_size == DISK);
	for (uint32_t i = 0; i < DISK; i++)
		model[i] = (uint8_t)(i * 13 + (i >> 12));
	memset(model + DISK / 2, 0, DISK / 2);
	CHECK(stg_pwrite(d, model, DISK / 2, 0) == 0);
	CHECK(stg_flush(d) == 0);
	stg_close(d);
	o.backing = "base.qcow2";
	o.size = 0;
	o.cluster_size = cluster_size;
	o.extended_l2 = extl2;
	CHECK(cow_create(top, &o, &err) == 0);
	CHECK(stg_open(top, "auto", direct ? STG_O_DIRECT : 0, &d, &err) == 0);
	stg_get_info(d, &info);
	CHECK(info.chain_depth == 2 && !strcmp(info.backing, "base.qcow2"));
	memset(slots, 0, sizeof(slots));
	for (int i = 0; i < NREQ; i++)
		slots[i].buf = malloc(128 * 1024);
	for (int round = 0; round < 3000; round++) {
		int i = round % NREQ;
		struct slot *s = &slots[i];
		uint64_t off, len, k;
		while (s->busy) {
			stg_unplug(d);
			stg_drain(d);
		}
		CHECK(s->result == 0);
		/* one request per region at a time, so the model is exact */
		off = (uint64_t)i * region + (rnd() % (region - maxlen) & ~511ull);
		if (round % 3 == 0)   /* move the regions around the disk */
			off += (rnd() % (DISK / (NREQ * region))) * NREQ * region;
		len = ((rnd() % (maxlen / 512)) + 1) * 512;
		k = rnd() % 10;
		memset(&s->req, 0, sizeof(s->req));
		s->req.offset = off;
		s->req.len = len;
		s->req.done = done;
		s->req.opaque = s;
		s->req.iov = s->iov;
		if (k < 5) {
			for (uint64_t j = 0; j < len; j++)
				s->buf[j] = (uint8_t)rnd();
			memcpy(model + off, s->buf, len);
			s->iov[0].iov_base = s->buf;
			s->iov[0].iov_len = len / 2;
			s->iov[1].iov_base = s->buf + len / 2;
			s->iov[1].iov_len = len - len / 2;
			s->req.iovcnt = 2;
			s->req.op = STG_OP_WRITE;
		} else if (k < 6) {
			memset(model + off, 0, len);
			s->req.op = STG_OP_WRITE_ZEROES;
		} else if (k < 7) {
			s->req.op = STG_OP_FLUSH;
		} else {
			s->iov[0].iov_base = s->buf;
			s->iov[0].iov_len = len;
			s->req.iovcnt = 1;
			s->req.op = STG_OP_READ;
		}
		s->busy = 1;
		CHECK(stg_submit(d, &s->req) == 0);
		if (k >= 7) {
			/* reads: check once done */
			while (s->busy) {
				stg_unplug(d);
				stg_drain(d);
			}
			CHECK(s->result == 0 && !memcmp(s->buf, model + off, len));
		}
	}
	CHECK(stg_drain(d) == 0);
	CHECK(stg_flush(d) == 0);
	CHECK(stg_pread(d, rd, DISK, 0) == 0);
	CHECK(!memcmp(rd, model, DISK));
	stg_close(d);
	memset(&r, 0, sizeof(r));
	CHECK(cow_check(top, COW_REPAIR_NONE, &r, &err) == 0 && r.corruptions == 0 && r.leaks == 0);
	ut_buf_release(&r.msgs);
	/* forced raw sees the qcow2 bytes, and read-only refuses writes */
	CHECK(stg_open(top, "raw", STG_O_RDONLY, &d, &err) == 0);
	stg_get_info(d, &info);
	CHECK(!strcmp(info.format, "raw"));
	CHECK(stg_pwrite(d, rd, 512, 0) < 0);
	stg_close(d);
	for (int i = 0; i < NREQ; i++)
		free(slots[i].buf);
	unlink(top);
	unlink(base);
	free(model);
	free(rd);
	printf("case cluster %u%s%s, regions of %llu: %s\n", cluster_size, extl2 ? " extl2" : "",
	       direct ? " O_DIRECT" : "", (unsigned long long)region, failures ? "FAILED" : "ok");
}

#define ODISK (2u << 20)   /* overlap_case: clusters up to 24 * 64 KiB */

/* Apply @o to @m (the disk from @base), a read into @rd. Discard: whole
 * clusters read as zeros afterwards, partial ones are left (cow_discard). */
static void model_apply(const struct stg_req *o, const uint8_t *data, uint8_t *m, uint8_t *rd,
			uint64_t cs)
{
	uint64_t a = (o->offset + cs - 1) / cs * cs, b = (o->offset + o->len) / cs * cs;

	switch (o->op) {
	case STG_OP_WRITE: memcpy(m + o->offset, data, o->len); break;
	case STG_OP_READ: memcpy(rd, m + o->offset, o->len); break;
	case STG_OP_DISCARD: if (b > a) memset(m + a, 0, b - a); break;
	case STG_OP_WRITE_ZEROES: memset(m + o->offset, 0, o->len); break;
	default: break;
	}
}

/* Submit @a then @b without waiting, then drain; the disk must read as
 * after "a, b" or after "b, a", and a read as it would in that order. */
static void overlap_pair(struct stg_dev *d, uint8_t *model, uint64_t cs, struct slot *a,
			 struct slot *b, const char *what)
{
	struct slot *s[2] = { a, b };
	uint64_t lo = a->req.offset < b->req.offset ? a->req.offset : b->req.offset;
	uint64_t hi = a->req.offset + a->req.len > b->req.offset + b->req.len ?
		      a->req.offset + a->req.len : b->req.offset + b->req.len;
	uint8_t *disk = malloc(ODISK), *m = malloc(ODISK), *rd = malloc(2 * cs);
	bool ok = false;

	for (int i = 0; i < 2; i++) {
		s[i]->busy = 1;
		CHECK(stg_submit(d, &s[i]->req) == 0);
	}
	stg_unplug(d);
	CHECK(stg_drain(d) == 0);
	CHECK(!a->busy && !b->busy && a->result == 0 && b->result == 0);
	CHECK(stg_pread(d, disk, ODISK, 0) == 0);
	for (int order = 0; order < 2 && !ok; order++) {
		struct slot *x = s[order], *y = s[!order];
		bool reads_ok = true;

		memcpy(m, model, ODISK);
		for (struct slot *o = x; o; o = o == x ? y : NULL) {
			model_apply(&o->req, o->buf, m, rd, cs);
			if (o->req.op == STG_OP_READ)
				reads_ok &= !memcmp(rd, o->iov[0].iov_base, o->req.len);
		}
		ok = reads_ok && !memcmp(m, disk, ODISK);
	}
	if (!ok)
		fprintf(stderr, "%s: [0x%llx, 0x%llx) is in no serial order of the two\n", what,
			(unsigned long long)lo, (unsigned long long)hi);
	CHECK(ok);
	memcpy(model, disk, ODISK);
	free(disk);
	free(m);
	free(rd);
}

static void prep(struct slot *s, enum stg_op op, uint64_t off, uint64_t len, uint8_t fill)
{
	memset(&s->req, 0, sizeof(s->req));
	s->req.op = op;
	s->req.offset = off;
	s->req.len = len;
	s->req.done = done;
	s->req.opaque = s;
	s->req.iov = s->iov;
	if (op == STG_OP_WRITE)
		for (uint64_t j = 0; j < len; j++)
			s->buf[j] = (uint8_t)(fill + j * 29 + (j >> 9));
	/* writes from two vectors (the flattened path), reads into one */
	s->iov[0].iov_base = s->buf;
	s->iov[0].iov_len = op == STG_OP_WRITE ? len / 2 : len;
	s->iov[1].iov_base = s->buf + len / 2;
	s->iov[1].iov_len = len - len / 2;
	s->req.iovcnt = op == STG_OP_WRITE ? 2 : op == STG_OP_READ ? 1 : 0;
	if (op == STG_OP_READ) {
		s->iov[0].iov_base = s->buf + 2 * cs_for_reads;
		memset(s->iov[0].iov_base, 0xEE, len);
	}
}

static void overlap_case(const char *dir, uint32_t cs, bool extl2, unsigned flags)
{
	char base[600], top[600], cmd[1300];
	struct cow_create_opts o = { .size = ODISK };
	struct ut_err err;
	struct stg_dev *d;
	struct cow_check_res r;
	struct slot a, b;
	uint8_t *model = malloc(ODISK);
	int before = failures;

	snprintf(base, sizeof(base), "%s/obase.qcow2", dir);
	snprintf(top, sizeof(top), "%s/otop.qcow2", dir);
	CHECK(cow_create(base, &o, &err) == 0);
	CHECK(stg_open(base, NULL, 0, &d, &err) == 0);
	for (uint32_t i = 0; i < ODISK; i++)
		model[i] = (uint8_t)(i * 7 + (i >> 9) + 1);
	CHECK(stg_pwrite(d, model, ODISK, 0) == 0);
	stg_close(d);
	o.backing = "obase.qcow2";
	o.size = 0;
	o.cluster_size = cs;
	o.extended_l2 = extl2;
	CHECK(cow_create(top, &o, &err) == 0);
	CHECK(stg_open(top, NULL, flags, &d, &err) == 0);
	cs_for_reads = cs;
	a.buf = aligned_alloc(4096, 4 * cs);
	b.buf = aligned_alloc(4096, 4 * cs);
	for (uint64_t k = 0; k < 8; k++) {
		uint64_t c = (k * 3 + 1) * cs;   /* a cluster not allocated in the top yet */
		uint64_t h = cs / 2, q = cs / 4;

		switch (k) {
		case 0:   /* two writes into one new cluster, overlapping */
			prep(&a, STG_OP_WRITE, c + 512, h, 0x10);
			prep(&b, STG_OP_WRITE, c + q, h, 0x20);
			overlap_pair(d, model, cs, &a, &b, "write+write");
			break;
		case 1:   /* the same, across a cluster boundary */
			prep(&a, STG_OP_WRITE, c + h, cs, 0x30);
			prep(&b, STG_OP_WRITE, c + cs - 1024, 2048, 0x40);
			overlap_pair(d, model, cs, &a, &b, "write+write across");
			break;
		case 2:   /* write, then discard of that cluster */
			prep(&a, STG_OP_WRITE, c + q, h, 0x50);
			prep(&b, STG_OP_DISCARD, c, cs, 0);
			overlap_pair(d, model, cs, &a, &b, "write+discard");
			break;
		case 3:   /* discard, then a write into it */
			prep(&a, STG_OP_DISCARD, c, 2 * cs, 0);
			prep(&b, STG_OP_WRITE, c + q, h, 0x60);
			overlap_pair(d, model, cs, &a, &b, "discard+write");
			break;
		case 4:   /* a read of a cluster being allocated */
		case 5:
			prep(&a, STG_OP_WRITE, c + q, h + q, (uint8_t)(0x70 + k));
			prep(&b, STG_OP_READ, k == 4 ? c : c + h, k == 4 ? cs : cs + h, 0);
			overlap_pair(d, model, cs, &a, &b, "write+read");
			break;
		case 6:   /* write-zeroes racing a write */
			prep(&a, STG_OP_WRITE, c, cs + h, 0x90);
			prep(&b, STG_OP_WRITE_ZEROES, c + q, cs, 0);
			overlap_pair(d, model, cs, &a, &b, "write+write-zeroes");
			break;
		case 7:   /* an in-place write racing a discard */
			prep(&a, STG_OP_WRITE, c - 2 * cs, cs, 0xA0);   /* allocated by case 6 */
			prep(&b, STG_OP_DISCARD, c - 2 * cs, cs, 0);
			overlap_pair(d, model, cs, &a, &b, "in-place write+discard");
			break;
		}
	}
	CHECK(stg_flush(d) == 0);
	stg_close(d);
	memset(&r, 0, sizeof(r));
	CHECK(cow_check(top, COW_REPAIR_NONE, &r, &err) == 0 && r.corruptions == 0 && r.leaks == 0);
	ut_buf_release(&r.msgs);
	if (system("qemu-img --version >/dev/null 2>&1") == 0) {
		snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s'", top);
		CHECK(system(cmd) == 0);
	}
	free(a.buf);
	free(b.buf);
	free(model);
	unlink(top);
	unlink(base);
	printf("overlap cluster %u%s%s: %s\n", cs, extl2 ? " extl2" : "",
	       (flags & STG_O_DIRECT) ? " O_DIRECT" : "", failures > before ? "FAILED" : "ok");
}

int main(void)
{
	char dir[] = "/tmp/stgq.XXXXXX";

	if (!mkdtemp(dir))
		return 1;
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1) {   /* again on the worker-thread engine */
			setenv("COWVM_NO_IO_URING", "1", 1);
			printf("engine: threads\n");
		}
		run_case(dir, 4096, false, DISK / NREQ, false);
		run_case(dir, 65536, true, DISK / NREQ, false);
		run_case(dir, 65536, true, 16384, false);       /* 4 requests per cluster */
		run_case(dir, 131072, true, 8192, false);       /* 16 requests per cluster */
		run_case(dir, 65536, false, 16384, false);
		run_case(dir, 65536, true, 16384, true);        /* cache=none */
		run_case(dir, 4096, false, DISK / NREQ, true);
		overlap_case(dir, 4096, false, 0);
		overlap_case(dir, 65536, false, 0);
		overlap_case(dir, 65536, true, 0);
		overlap_case(dir, 65536, true, STG_O_DIRECT);
	}
	rmdir(dir);
	if (failures)
		return 1;
	printf("all checks passed\n");
	return 0;
}
