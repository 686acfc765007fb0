/* tests/unit/test-stg-qcow2.c — the qcow2 block backend through the
 * block-device interface: probe picks qcow2, ",format=raw" forces raw; 64
 * async requests in flight (allocating and in-place writes, reads through a
 * backing chain, write-zeroes, discard, flush); content checked against a
 * model; the image stays clean by cow_check. Run with 4 KiB clusters, and
 * with extended L2 entries where several requests in flight write disjoint
 * parts of one cluster (the allocating-step conflict path). Every case runs
 * on the io_uring engine and again on the worker threads. */
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
	}
	rmdir(dir);
	if (failures)
		return 1;
	printf("all checks passed\n");
	return 0;
}
