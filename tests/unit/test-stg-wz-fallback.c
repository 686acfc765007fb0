/* tests/unit/test-stg-wz-fallback.c — write-zeroes of a raw disk on a file
 * system that supports neither FALLOC_FL_PUNCH_HOLE nor
 * FALLOC_FL_ZERO_RANGE (vfat, some FUSE and network file systems): the
 * zeros are written instead (storage/raw.c wz_write), as QEMU's block layer
 * falls back to writing a zeroed buffer. Before, the request failed with
 * EOPNOTSUPP (a guest saw VIRTIO_BLK_S_IOERR).
 *
 * This program defines fallocate(), which the library's calls bind to, and
 * fails those two modes with EOPNOTSUPP; the I/O runs on the worker-thread
 * engine (STG_O_THREADS), whose fallocate is that libc call (io_uring's is
 * not). Checked, buffered and with O_DIRECT, with and without unmap:
 * - the range reads as zeros, the bytes around it are unchanged;
 * - a range longer than one batch of zero writes (8 MiB) is written whole;
 * - after the first request found fallocate unable, later ones write at
 *   once (no more fallocate calls);
 * - a range ending at the disk's end does not make a file whose size is not
 *   a multiple of 512 bytes longer;
 * - under O_DIRECT a range not aligned for the file system goes through
 *   cow/ (which writes the zeros itself) and is right too, even as the
 *   first request (raw_open's probe found fallocate unable; without the
 *   probe that request failed). */
#include "storage/blockdev.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define MAX_SIZE ((20u << 20) + 1000)

static unsigned nfalloc;   /* PUNCH_HOLE / ZERO_RANGE calls refused */

int fallocate(int fd, int mode, off_t off, off_t len)
{
	if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
		nfalloc++;
		errno = EOPNOTSUPP;
		return -1;
	}
	return (int)syscall(SYS_fallocate, fd, mode, off, len);
}

struct slot { struct stg_req req; int done, result; };

static void done_fn(struct stg_req *req, int result)
{
	struct slot *s = req->opaque;

	s->done++;
	s->result = result;
}

/* Write-zeroes [off, off + len) through @d and wait; returns its result. */
static int wz(struct stg_dev *d, uint64_t off, uint64_t len, bool unmap)
{
	struct slot s = { .done = 0, .result = 1 };

	s.req.op = STG_OP_WRITE_ZEROES;
	s.req.offset = off;
	s.req.len = len;
	s.req.flags = unmap ? STG_REQ_MAY_UNMAP : 0;
	s.req.done = done_fn;
	s.req.opaque = &s;
	if (stg_submit(d, &s.req) < 0)
		return -EIO;
	stg_unplug(d);
	if (stg_drain(d) < 0 || s.done != 1)
		return -EIO;
	return s.result;
}

/* Does @buf (@len bytes of the file at @off) hold zeros in [z0, z1) and
 * 0xaa elsewhere? */
static bool content_ok(const uint8_t *buf, uint64_t len, uint64_t off, uint64_t z0, uint64_t z1)
{
	for (uint64_t i = 0; i < len; i++) {
		uint64_t at = off + i;
		uint8_t want = at >= z0 && at < z1 ? 0 : 0xaa;

		if (buf[i] != want) {
			fprintf(stderr, "byte %llu is %#x, not %#x\n", (unsigned long long)at, buf[i], want);
			return false;
		}
	}
	return true;
}

static void fill(const char *path, uint64_t size)
{
	uint8_t *b = malloc(size);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	CHECK(b && fd >= 0);
	if (b && fd >= 0) {
		memset(b, 0xaa, size);
		CHECK(pwrite(fd, b, size, 0) == (ssize_t)size);
	}
	if (fd >= 0)
		close(fd);
	free(b);
}

/* Zero @n ranges of @path (made @size bytes of 0xaa) opened with @flags
 * and check the file after. */
static void run(const char *path, uint64_t size, unsigned flags, const uint64_t (*r)[2], int n,
		bool unmap)
{
	uint8_t *b = malloc(MAX_SIZE);
	struct stg_dev *d = NULL;
	struct ut_err err;
	struct stat st;
	unsigned calls;
	int fd;

	fill(path, size);
	nfalloc = 0;
	CHECK(b && stg_open(path, "raw", flags | STG_O_THREADS, &d, &err) == 0);
	if (!b || !d) {
		free(b);
		return;
	}
	for (int i = 0; i < n; i++) {
		int res;

		calls = nfalloc;
		res = wz(d, r[i][0], r[i][1], unmap);
		if (res)
			fprintf(stderr, "%s (flags %#x, unmap %d): zeroing %llu bytes at %llu: %s\n",
				path, flags, unmap, (unsigned long long)r[i][1],
				(unsigned long long)r[i][0], strerror(-res));
		CHECK(res == 0);
		if (i > 0 && !(flags & STG_O_DIRECT))
			CHECK(nfalloc == calls);   /* known unable: no more tries */
	}
	CHECK(nfalloc > 0);                        /* the fallback was exercised */
	stg_close(d);
	CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == size);
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0 && pread(fd, b, size, 0) == (ssize_t)size);
	if (fd >= 0)
		close(fd);
	/* the ranges are disjoint: check each and what lies between */
	uint64_t at = 0;
	for (int i = 0; i < n; i++) {
		uint64_t end = r[i][0] + r[i][1] > size ? size : r[i][0] + r[i][1];

		CHECK(content_ok(b + at, end - at, at, r[i][0], end));
		at = end;
	}
	CHECK(content_ok(b + at, size - at, at, 0, 0));
	free(b);
}

int main(void)
{
	char dir[] = "/var/tmp/test-stg-wz.XXXXXX", path[128];
	/* disjoint, ascending: a small one, one of 9 MiB (two batches), one
	 * ending at the disk's end (the file's last 1000 bytes lie in a
	 * sector the disk rounds up to) */
	static const uint64_t buffered[][2] = {
		{ 4096, 65536 }, { 1u << 20, 9u << 20 }, { (20u << 20) - 4096, 4096 + 1024 },
	};
	/* O_DIRECT: first one not aligned for direct I/O (through cow/,
	 * which writes the zeros itself: raw_open's probe must have found
	 * fallocate unable, since no request has yet), then aligned ones
	 * (through the engine) */
	static const uint64_t direct[][2] = {
		{ 100, 3000 }, { 8192, 65536 }, { 1u << 20, 9u << 20 },
	};

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/disk.raw", dir);
	for (int unmap = 0; unmap < 2; unmap++) {
		/* not a multiple of 512 bytes */
		run(path, (20u << 20) + 1000, 0, buffered, 3, unmap);
		/* cache=none wants a file of whole blocks */
		run(path, 20u << 20, STG_O_DIRECT, direct, 3, unmap);
	}
	unlink(path);
	rmdir(dir);
	if (failures)
		fprintf(stderr, "test-stg-wz-fallback: %d failures\n", failures);
	return failures ? 1 : 0;
}
