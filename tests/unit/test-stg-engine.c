/* tests/unit/test-stg-engine.c — the I/O engine (storage/engine.c): writes
 * queued one after another that continue each other in one file go to the
 * kernel merged (up to 1 MiB and 256 iovec entries each), every write's
 * callback gets its own length, the file holds every byte written; a write
 * that does not continue the one before, one to another fd, and reads are
 * not merged; a merged write that fails fails each write in it. The same
 * data checks run on the threads engine (the fallback; also what
 * COWVM_NO_IO_URING selects) and the synchronous one, where merge counts are
 * not asked for; on the threads engine completions also arrive through the
 * event fd, and every callback runs on the thread that reaps. Registered
 * (fixed) files: ops on them reach their files, and an fd number reused for
 * another file after unregistering reaches the new file. */
#include "storage/engine.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define K64 65536u
#define NOPS 64

struct op { int result, calls; };

static enum stg_ekind kind;
static pthread_t reaper;
static int foreign_cb;   /* callbacks run on another thread than the reaper */

static void cb(void *opaque, int result)
{
	struct op *o = opaque;

	o->result = result;
	o->calls++;
	foreign_cb += !pthread_equal(pthread_self(), reaper);
}

static uint8_t pat(uint64_t off) { return (uint8_t)(off * 7 + (off >> 16) * 13 + 1); }

static void fill(uint8_t *b, uint64_t off, size_t len)
{
	for (size_t i = 0; i < len; i++)
		b[i] = pat(off + i);
}

static bool file_has(int fd, uint64_t off, size_t len)
{
	uint8_t *b = malloc(len);
	bool ok = b && pread(fd, b, len, (off_t)off) == (ssize_t)len;

	for (size_t i = 0; ok && i < len; i++)
		ok = b[i] == pat(off + i);
	free(b);
	return ok;
}

static struct stg_engine *mk(bool *uring)
{
	struct stg_engine *e = NULL;
	struct ut_err err;

	CHECK(stg_engine_create(NOPS, -1, kind, &e, &err) == 0);
	*uring = e && !strcmp(stg_engine_name(e), "io_uring");
	if (e && kind == STG_ENG_THREADS)
		CHECK(!strcmp(stg_engine_name(e), "threads"));
	if (e && kind == STG_ENG_SYNC)
		CHECK(!strcmp(stg_engine_name(e), "sync"));
	return e;
}

static void queue_w(struct stg_engine *e, int fd, uint8_t *buf, uint64_t off, size_t len,
		    struct op *o)
{
	struct iovec iov = { buf, len };

	fill(buf, off, len);
	CHECK(stg_engine_queue(e, STG_EOP_WRITEV, fd, &iov, 1, off, 0, 0, cb, o) == 0);
}

/* 48 writes of 64 KiB: 0..19 continue each other from 0, #20 elsewhere
 * (8 MiB), 21..47 continue from 20 x 64 KiB. Expected kernel writes: 16+4,
 * 1, 16+11 = 5. */
static void adjacent(const char *path)
{
	bool uring;
	struct stg_engine *e = mk(&uring);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	uint8_t *buf = malloc(48 * (size_t)K64);
	struct op ops[48] = { 0 };
	unsigned long long s0;

	CHECK(fd >= 0 && buf && e);
	if (fd < 0 || !buf || !e)
		goto out;
	s0 = stg_engine_sqes(e);
	for (int i = 0; i < 48; i++) {
		uint64_t off = i < 20 ? (uint64_t)i * K64 : i == 20 ? 8u << 20 : (uint64_t)(i - 1) * K64;

		queue_w(e, fd, buf + (size_t)i * K64, off, K64, &ops[i]);
	}
	CHECK(stg_engine_drain(e) == 0);
	for (int i = 0; i < 48; i++)
		CHECK(ops[i].calls == 1 && ops[i].result == (int)K64);
	if (uring)
		CHECK(stg_engine_sqes(e) - s0 == 5);
	CHECK(file_has(fd, 0, 47 * (size_t)K64) && file_has(fd, 8u << 20, K64));

	/* reads continuing each other: one kernel read each */
	s0 = stg_engine_sqes(e);
	memset(buf, 0, 16 * (size_t)K64);
	for (int i = 0; i < 16; i++) {
		struct iovec iov = { buf + (size_t)i * K64, K64 };

		ops[i] = (struct op){ 0 };
		CHECK(stg_engine_queue(e, STG_EOP_READV, fd, &iov, 1, (uint64_t)i * K64, 0, 0, cb,
				       &ops[i]) == 0);
	}
	CHECK(stg_engine_drain(e) == 0);
	for (int i = 0; i < 16; i++)
		CHECK(ops[i].calls == 1 && ops[i].result == (int)K64);
	if (uring)
		CHECK(stg_engine_sqes(e) - s0 == 16);
	for (size_t i = 0; i < 16 * (size_t)K64; i++)
		if (buf[i] != pat(i)) {
			CHECK(!"read back what was written");
			break;
		}
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	stg_engine_destroy(e);
}

/* iovec limit: writes of 100, 80 and 100 entries (512 B each) continuing
 * each other: the first two merge (180 entries), the third would pass 256;
 * each gets its own length. Then two
 * fds: adjacent offsets in different files are not merged. */
static void limits(const char *path, const char *path2)
{
	bool uring;
	struct stg_engine *e = mk(&uring);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	int fd2 = open(path2, O_RDWR | O_CREAT | O_TRUNC, 0600);
	uint8_t *buf = malloc(300 * 512);
	struct iovec iov[100];
	struct op ops[3] = { 0 };
	const int cnt[3] = { 100, 80, 100 };
	unsigned long long s0;

	CHECK(fd >= 0 && fd2 >= 0 && buf && e);
	if (fd < 0 || fd2 < 0 || !buf || !e)
		goto out;
	fill(buf, 0, 300 * 512);
	s0 = stg_engine_sqes(e);
	for (int w = 0, first = 0; w < 3; first += cnt[w], w++) {
		for (int i = 0; i < cnt[w]; i++)
			iov[i] = (struct iovec){ buf + (size_t)(first + i) * 512, 512 };
		CHECK(stg_engine_queue(e, STG_EOP_WRITEV, fd, iov, cnt[w], (uint64_t)first * 512, 0, 0,
				       cb, &ops[w]) == 0);
	}
	CHECK(stg_engine_drain(e) == 0);
	for (int w = 0; w < 3; w++)
		CHECK(ops[w].calls == 1 && ops[w].result == cnt[w] * 512);
	if (uring)
		CHECK(stg_engine_sqes(e) - s0 == 2);
	CHECK(file_has(fd, 0, 280 * 512));

	s0 = stg_engine_sqes(e);
	memset(ops, 0, sizeof(ops));
	queue_w(e, fd, buf, 0, K64 / 4, &ops[0]);
	queue_w(e, fd2, buf + K64 / 4, K64 / 4, K64 / 4, &ops[1]);
	CHECK(stg_engine_drain(e) == 0);
	CHECK(ops[0].result == (int)K64 / 4 && ops[1].result == (int)K64 / 4);
	if (uring)
		CHECK(stg_engine_sqes(e) - s0 == 2);
	CHECK(file_has(fd2, K64 / 4, K64 / 4));
out:
	if (fd >= 0)
		close(fd);
	if (fd2 >= 0)
		close(fd2);
	free(buf);
	stg_engine_destroy(e);
}

/* A merged write that fails (the fd is read-only): each write in it gets
 * the error, once. */
static void failing(const char *path)
{
	bool uring;
	struct stg_engine *e = mk(&uring);
	int fd = open(path, O_RDONLY);
	uint8_t *buf = malloc(4 * (size_t)K64);
	struct op ops[4] = { 0 };

	CHECK(fd >= 0 && buf && e);
	if (fd < 0 || !buf || !e)
		goto out;
	for (int i = 0; i < 4; i++)
		queue_w(e, fd, buf + (size_t)i * K64, (uint64_t)i * K64, K64, &ops[i]);
	CHECK(stg_engine_drain(e) == 0);
	for (int i = 0; i < 4; i++)
		CHECK(ops[i].calls == 1 && ops[i].result == -EBADF);
	CHECK(stg_engine_inflight(e) == 0);
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	stg_engine_destroy(e);
}

/* Threads: 64 reads of 4 KiB queued at once complete through the event
 * fd (poll, bounded), each once, with the data; the fallback selected by
 * COWVM_NO_IO_URING is the threads engine. */
static void events(const char *path)
{
	struct stg_engine *e = NULL;
	struct ut_err err;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	uint8_t *buf = malloc(NOPS * 4096);
	struct op ops[NOPS] = { 0 };
	int done = 0, rounds = 0;

	CHECK(efd >= 0 && fd >= 0 && buf);
	if (efd < 0 || fd < 0 || !buf)
		goto out;
	fill(buf, 0, NOPS * 4096);
	CHECK(pwrite(fd, buf, NOPS * 4096, 0) == NOPS * 4096);
	memset(buf, 0, NOPS * 4096);
	setenv("COWVM_NO_IO_URING", "1", 1);
	CHECK(stg_engine_create(NOPS, efd, STG_ENG_AUTO, &e, &err) == 0);
	unsetenv("COWVM_NO_IO_URING");
	CHECK(e && !strcmp(stg_engine_name(e), "threads"));
	if (!e)
		goto out;
	for (int i = 0; i < NOPS; i++) {
		struct iovec iov = { buf + i * 4096, 4096 };

		CHECK(stg_engine_queue(e, STG_EOP_READV, fd, &iov, 1, (uint64_t)i * 4096, 0, 0, cb,
				       &ops[i]) == 0);
	}
	CHECK(stg_engine_queue(e, STG_EOP_READV, fd, &(struct iovec){ buf, 1 }, 1, 0, 0, 0, cb,
			       &ops[0]) == -EAGAIN);   /* NOPS in flight: full */
	while (done < NOPS && rounds++ < 1000) {
		struct pollfd p = { .fd = efd, .events = POLLIN };
		uint64_t v;

		if (poll(&p, 1, 5000) != 1)
			break;   /* 5 s without a completion: fail below */
		CHECK(read(efd, &v, sizeof(v)) == sizeof(v));
		done += stg_engine_reap(e, 0);
	}
	CHECK(done == NOPS && stg_engine_inflight(e) == 0);
	for (int i = 0; i < NOPS; i++)
		CHECK(ops[i].calls == 1 && ops[i].result == 4096);
	CHECK(file_has(fd, 0, NOPS * 4096));
	for (size_t i = 0; i < NOPS * 4096; i++)
		if (buf[i] != pat(i)) {
			CHECK(!"read what the file holds");
			break;
		}
out:
	stg_engine_destroy(e);
	if (fd >= 0)
		close(fd);
	if (efd >= 0)
		close(efd);
	free(buf);
}

/* Registered (fixed) files: writes and reads on a registered fd reach its
 * file; more fds than slots still work; after unregistering and closing an
 * fd, a new file that gets the same number gets the ops sent to it (the
 * slot named the old file). On every engine (a no-op but io_uring). */
static void fixed(const char *path, const char *path2)
{
	static uint8_t buf[12][K64];
	struct stg_engine *e;
	struct op o[12] = { 0 };
	int fds[12], fd, fd2;
	bool uring;

	e = mk(&uring);
	if (!e)
		return;
	for (int i = 0; i < 12; i++) {   /* 12 fds of one file: 8 slots */
		fds[i] = open(path, O_RDWR | O_CREAT | O_TRUNC * (i == 0), 0644);
		CHECK(fds[i] >= 0);
		stg_engine_register_fd(e, fds[i]);
	}
	for (int i = 0; i < 12; i++)
		queue_w(e, fds[i], buf[i], (uint64_t)i * 2 * K64, K64, &o[i]);
	CHECK(stg_engine_drain(e) == 0);
	for (int i = 0; i < 12; i++)
		CHECK(o[i].calls == 1 && o[i].result == (int)K64);
	CHECK(file_has(fds[0], 0, K64) && file_has(fds[0], 11 * 2 * K64, K64));
	for (int i = 0; i < 12; i++) {
		struct iovec iov = { buf[i], K64 };
		memset(buf[i], 0, K64);
		o[i].calls = 0;
		CHECK(stg_engine_queue(e, STG_EOP_READV, fds[i], &iov, 1, (uint64_t)i * 2 * K64, 0, 0, cb,
				       &o[i]) == 0);
	}
	CHECK(stg_engine_drain(e) == 0);
	for (int i = 0; i < 12; i++) {
		bool same = o[i].calls == 1 && o[i].result == (int)K64;
		for (uint32_t b = 0; same && b < K64; b++)
			same = buf[i][b] == pat((uint64_t)i * 2 * K64 + b);
		CHECK(same);
	}
	/* the number comes back for another file */
	fd = fds[3];
	stg_engine_unregister_fd(e, fd);
	CHECK(close(fd) == 0);
	fd2 = open(path2, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd2 == fd);
	o[3].calls = 0;
	queue_w(e, fd2, buf[3], 0, K64, &o[3]);
	CHECK(stg_engine_drain(e) == 0);
	CHECK(o[3].calls == 1 && o[3].result == (int)K64);
	CHECK(file_has(fd2, 0, K64));
	CHECK(lseek(fd2, 0, SEEK_END) == K64);
	for (int i = 0; i < 12; i++)
		if (i != 3)
			stg_engine_unregister_fd(e, fds[i]);
	stg_engine_destroy(e);
	for (int i = 0; i < 12; i++)
		if (i != 3)
			close(fds[i]);
	close(fd2);
}

int main(void)
{
	char dir[] = "/tmp/test-stg-engine.XXXXXX", p1[64], p2[64];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(p1, sizeof(p1), "%s/a", dir);
	snprintf(p2, sizeof(p2), "%s/b", dir);
	reaper = pthread_self();
	for (int pass = 0; pass < 3; pass++) {
		kind = pass == 0 ? STG_ENG_AUTO : pass == 1 ? STG_ENG_THREADS : STG_ENG_SYNC;
		adjacent(p1);
		limits(p1, p2);
		failing(p1);
		fixed(p1, p2);
	}
	events(p1);
	CHECK(foreign_cb == 0);
	unlink(p1);
	unlink(p2);
	rmdir(dir);
	if (failures) {
		fprintf(stderr, "test-stg-engine: %d check(s) failed\n", failures);
		return 1;
	}
	printf("test-stg-engine: ok\n");
	return 0;
}
