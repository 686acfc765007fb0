/* tests/unit/test-stg-raw.c — edges of the block-device interface found by
 * a stress test, on the raw backend (and qcow2 where it applies), on the
 * io_uring engine and on the worker threads:
 * - zero-length reads, writes, discards and write-zeroes complete with 0
 *   (a zero-length write came back -EIO from io_uring, discard and
 *   write-zeroes -EINVAL from fallocate);
 * - 600 requests submitted without reaping all complete (the raw backend
 *   returned -EAGAIN once the engine's 256 slots were taken) and hold the
 *   data written;
 * - write-zeroes keeps the blocks of the range unless the request may unmap
 *   (STG_REQ_MAY_UNMAP: the blocks go back, as for a discard), on a raw
 *   file and a qcow2 image; the range reads as zeros either way;
 * - a raw file whose size is not a multiple of the O_DIRECT alignment is
 *   refused for writing with cache=none, naming the file (a direct write of
 *   its last block would make the disk larger), and opened read-only. */
#include "storage/blockdev.h"
#include "cow/cow.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define NREQ 600
#define DISK (8u << 20)

struct slot { struct stg_req req; struct iovec iov; uint8_t buf[4096]; int done, result; };

static void done(struct stg_req *req, int result)
{
	struct slot *s = req->opaque;

	s->done++;
	s->result = result;
}

static void prep(struct slot *s, enum stg_op op, uint64_t off, uint64_t len)
{
	memset(&s->req, 0, sizeof(s->req));
	s->req.op = op;
	s->req.offset = off;
	s->req.len = len;
	s->req.done = done;
	s->req.opaque = s;
	s->iov.iov_base = s->buf;
	s->iov.iov_len = len;
	s->req.iov = &s->iov;
	s->req.iovcnt = len ? 1 : 0;
	s->done = 0;
	s->result = 1;
}

static void zero_length(const char *path, unsigned flags)
{
	static const enum stg_op ops[] = { STG_OP_READ, STG_OP_WRITE, STG_OP_DISCARD, STG_OP_WRITE_ZEROES };
	struct slot s[4];
	struct stg_dev *d = NULL;
	struct ut_err err;

	CHECK(stg_open(path, NULL, flags, &d, &err) == 0);
	if (!d)
		return;
	for (int i = 0; i < 4; i++) {
		prep(&s[i], ops[i], 4096, 0);
		CHECK(stg_submit(d, &s[i].req) == 0);
	}
	stg_unplug(d);
	CHECK(stg_drain(d) == 0);
	for (int i = 0; i < 4; i++) {
		if (s[i].done != 1 || s[i].result != 0)
			fprintf(stderr, "%s, op %d: done %d, result %d\n", path, (int)ops[i], s[i].done,
				s[i].result);
		CHECK(s[i].done == 1 && s[i].result == 0);
	}
	stg_close(d);
}

static void many_unreaped(const char *path, unsigned flags)
{
	static struct slot s[NREQ];
	struct stg_dev *d = NULL;
	struct ut_err err;
	int ok = 0;

	CHECK(stg_open(path, NULL, flags, &d, &err) == 0);
	if (!d)
		return;
	for (int i = 0; i < NREQ; i++) {
		prep(&s[i], STG_OP_WRITE, (uint64_t)i * 8192, 4096);
		memset(s[i].buf, i & 0xff, 4096);
		CHECK(stg_submit(d, &s[i].req) == 0);
	}
	stg_unplug(d);
	CHECK(stg_drain(d) == 0);
	for (int i = 0; i < NREQ; i++)
		ok += s[i].done == 1 && s[i].result == 0;
	CHECK(ok == NREQ);
	for (int i = 0; i < NREQ; i += 37) {
		uint8_t b[4096];
		bool same = stg_pread(d, b, 4096, (uint64_t)i * 8192) == 0;
		for (int j = 0; same && j < 4096; j++)
			same = b[j] == (i & 0xff);
		CHECK(same);
	}
	stg_close(d);
}

static uint64_t blocks(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

/* Submit @s's request, send it and wait for it; it must succeed. */
static void run1(struct stg_dev *d, struct slot *s)
{
	CHECK(stg_submit(d, &s->req) == 0);
	stg_unplug(d);
	CHECK(stg_drain(d) == 0 && s->done == 1 && s->result == 0);
}

/* Write 1 MiB of data at 1 MiB, zero it without unmap (the blocks stay),
 * then with unmap (they go); it reads as zeros after each. */
static void zeroes_unmap(const char *path, unsigned flags)
{
	static uint8_t b[1 << 20];
	struct iovec iov = { b, sizeof(b) };
	struct slot s;
	struct stg_dev *d = NULL;
	struct ut_err err;
	uint64_t u0, u1 = 0, u2 = 0;
	bool zero;

	CHECK(stg_open(path, NULL, flags, &d, &err) == 0);
	if (!d)
		return;
	memset(b, 0x3c, sizeof(b));
	prep(&s, STG_OP_WRITE, 1 << 20, sizeof(b));
	s.req.iov = &iov;
	run1(d, &s);
	prep(&s, STG_OP_FLUSH, 0, 0);
	run1(d, &s);
	u0 = blocks(path);
	for (int unmap = 0; unmap < 2; unmap++) {
		prep(&s, STG_OP_WRITE_ZEROES, 1 << 20, 1 << 20);
		s.req.flags = unmap ? STG_REQ_MAY_UNMAP : 0;
		run1(d, &s);
		prep(&s, STG_OP_FLUSH, 0, 0);
		run1(d, &s);
		memset(b, 1, sizeof(b));
		CHECK(stg_pread(d, b, sizeof(b), 1 << 20) == 0);
		zero = true;
		for (size_t i = 0; zero && i < sizeof(b); i++)
			zero = !b[i];
		CHECK(zero);
		if (!unmap)
			u1 = blocks(path);
		else
			u2 = blocks(path);
	}
	if (u1 + 65536 < u0 || u2 + (1 << 20) - 65536 > u1)
		fprintf(stderr, "%s (flags %#x): %llu bytes used after the write, %llu after zeroing, %llu after zeroing with unmap\n",
			path, flags, (unsigned long long)u0, (unsigned long long)u1, (unsigned long long)u2);
	CHECK(u1 + 65536 >= u0);                 /* no unmap: blocks kept */
	CHECK(u2 + (1 << 20) - 65536 <= u1);     /* unmap: ~1 MiB given back */
	stg_close(d);
}

int main(void)
{
	char dir[] = "/var/tmp/test-stg-raw.XXXXXX", raw[128], q[128], odd[128], cmd[160];
	struct cow_create_opts o = { .size = DISK };
	struct stg_dev *d = NULL;
	struct ut_err err;
	int fd;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(raw, sizeof(raw), "%s/r.raw", dir);
	snprintf(q, sizeof(q), "%s/q.qcow2", dir);
	snprintf(odd, sizeof(odd), "%s/odd.raw", dir);
	fd = open(raw, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0 && ftruncate(fd, DISK) == 0);
	close(fd);
	CHECK(cow_create(q, &o, &err) == 0);
	for (int pass = 0; pass < 2; pass++) {
		unsigned th = pass ? STG_O_THREADS : 0;
		zero_length(raw, th);
		zero_length(raw, th | STG_O_DIRECT);
		zero_length(q, th);
		many_unreaped(raw, th);
		many_unreaped(raw, th | STG_O_DIRECT);
		many_unreaped(q, th);
		zeroes_unmap(raw, th);
		zeroes_unmap(raw, th | STG_O_DIRECT);
		zeroes_unmap(q, th);
	}

	/* 1 MiB + 100 bytes: no O_DIRECT alignment divides it */
	fd = open(odd, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0 && ftruncate(fd, (1 << 20) + 100) == 0);
	close(fd);
	CHECK(stg_open(odd, "raw", STG_O_DIRECT, &d, &err) == -EINVAL);
	CHECK(strstr(err.msg, "odd.raw") && strstr(err.msg, "O_DIRECT alignment"));
	CHECK(stg_open(odd, "raw", STG_O_DIRECT | STG_O_RDONLY, &d, &err) == 0);
	stg_close(d);
	d = NULL;
	CHECK(stg_open(odd, "raw", 0, &d, &err) == 0);   /* the page cache can */
	stg_close(d);

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%s\n", failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}
