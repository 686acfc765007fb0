/* tests/helpers/shim/iolog.c — LD_PRELOAD library for the power-cut test
 * (tests/interop/qemu-img-powercut.sh, replayed by tests/helpers/powercut):
 * records, in order, every change a process makes to one file and every
 * completed fdatasync/fsync of it, plus what it writes to a second file
 * (cowio's log of flushes it was told are durable).
 *
 *   IOLOG_IMAGE  the file whose changes are recorded (compared by device
 *                and inode, so every fd and path that reaches it counts)
 *   IOLOG_MARK   the second file: its writes are recorded as markers
 *   IOLOG_OUT    where the records go (appended)
 *
 * Record: struct iolog_rec (tests/helpers/iolog.h), then len bytes of data
 * for writes and markers. Intercepts write, pwrite, pwritev(2), ftruncate,
 * fallocate, fdatasync and fsync (the calls cow/ and storage/'s threads
 * engine make; not io_uring, which bypasses libc). Everything is passed on
 * to libc unchanged. Threads: each record is written whole under a lock,
 * after the call returned (before the caller can act on it), so a change
 * recorded before an fdatasync's SYNC_START finished before that fdatasync
 * began, and the fdatasync covers it; a change that finishes while an
 * fdatasync runs is recorded after its SYNC_START and counts as not
 * covered (what a disk may lose). */
#include "tests/helpers/iolog.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static int out_fd = -2;
static dev_t img_dev, mark_dev;
static ino_t img_ino, mark_ino;
static int have_img, have_mark;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t sync_ids;

static void init_once(void)
{
	const char *img = getenv("IOLOG_IMAGE"), *mark = getenv("IOLOG_MARK");
	const char *out = getenv("IOLOG_OUT");
	struct stat st;

	if (out_fd != -2)
		return;
	out_fd = -1;
	if (!img || !out)
		return;
	if (stat(img, &st) == 0) {
		img_dev = st.st_dev;
		img_ino = st.st_ino;
		have_img = 1;
	}
	if (mark && stat(mark, &st) == 0) {
		mark_dev = st.st_dev;
		mark_ino = st.st_ino;
		have_mark = 1;
	}
	out_fd = (int)syscall(SYS_openat, AT_FDCWD, out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

static void init(void)
{
	pthread_once(&once, init_once);
}

/* 1: the image, 2: the marker file, 0: neither */
static int which(int fd)
{
	struct stat st;

	init();
	if (out_fd < 0 || fstat(fd, &st) < 0)
		return 0;
	if (have_img && st.st_dev == img_dev && st.st_ino == img_ino)
		return 1;
	if (have_mark && st.st_dev == mark_dev && st.st_ino == mark_ino)
		return 2;
	return 0;
}

static void put(const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		long w = syscall(SYS_write, out_fd, c, n);
		if (w <= 0) {
			if (w < 0 && errno == EINTR)
				continue;
			abort();   /* a lost record would make the test lie */
		}
		c += w;
		n -= (size_t)w;
	}
}

static void rec(uint32_t type, uint64_t off, uint64_t len, uint64_t arg, const struct iovec *iov,
		int iovcnt)
{
	struct iolog_rec r = { .magic = IOLOG_REC_MAGIC, .type = type, .off = off, .len = len, .arg = arg };
	uint64_t left = len;

	pthread_mutex_lock(&lock);
	put(&r, sizeof(r));
	for (int i = 0; i < iovcnt && left; i++) {
		size_t n = iov[i].iov_len < left ? iov[i].iov_len : (size_t)left;
		put(iov[i].iov_base, n);
		left -= n;
	}
	pthread_mutex_unlock(&lock);
}

/* SYNC_START before an fdatasync/fsync of the image; returns its id (0: not
 * the image). */
static uint64_t sync_start(int fd)
{
	uint64_t id;

	if (which(fd) != 1)
		return 0;
	id = __atomic_add_fetch(&sync_ids, 1, __ATOMIC_SEQ_CST);
	rec(IOLOG_REC_SYNC_START, 0, 0, id, NULL, 0);
	return id;
}

#define REAL(name, ret, ...) \
	static ret (*real_##name)(__VA_ARGS__); \
	if (!real_##name) \
		real_##name = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

static void after_write(int fd, const struct iovec *iov, int iovcnt, ssize_t done, off_t off,
			int positional)
{
	int w;

	if (done <= 0 || !(w = which(fd)))
		return;
	if (w == 2) {
		rec(IOLOG_REC_MARK, 0, (uint64_t)done, 0, iov, iovcnt);
		return;
	}
	if (!positional)
		off = lseek(fd, 0, SEEK_CUR) - done;
	rec(IOLOG_REC_WRITE, (uint64_t)off, (uint64_t)done, 0, iov, iovcnt);
}

ssize_t write(int fd, const void *buf, size_t n)
{
	REAL(write, ssize_t, int, const void *, size_t);
	ssize_t r = real_write(fd, buf, n);
	struct iovec v = { (void *)buf, n };

	after_write(fd, &v, 1, r, 0, 0);
	return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite, ssize_t, int, const void *, size_t, off_t);
	ssize_t r = real_pwrite(fd, buf, n, off);
	struct iovec v = { (void *)buf, n };

	after_write(fd, &v, 1, r, off, 1);
	return r;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	return pwrite(fd, buf, n, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	REAL(pwritev, ssize_t, int, const struct iovec *, int, off_t);
	ssize_t r = real_pwritev(fd, iov, iovcnt, off);

	after_write(fd, iov, iovcnt, r, off, 1);
	return r;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	return pwritev(fd, iov, iovcnt, off);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int iovcnt, off_t off, int flags)
{
	REAL(pwritev2, ssize_t, int, const struct iovec *, int, off_t, int);
	ssize_t r = real_pwritev2(fd, iov, iovcnt, off, flags);

	after_write(fd, iov, iovcnt, r, off, off != -1);
	return r;
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int iovcnt, off_t off, int flags)
{
	return pwritev2(fd, iov, iovcnt, off, flags);
}

int ftruncate(int fd, off_t len)
{
	REAL(ftruncate, int, int, off_t);
	int r = real_ftruncate(fd, len);

	if (r == 0 && which(fd) == 1)
		rec(IOLOG_REC_TRUNCATE, (uint64_t)len, 0, 0, NULL, 0);
	return r;
}

int ftruncate64(int fd, off_t len)
{
	return ftruncate(fd, len);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	REAL(fallocate, int, int, int, off_t, off_t);
	int r = real_fallocate(fd, mode, off, len);

	if (r == 0 && which(fd) == 1)
		rec(IOLOG_REC_FALLOCATE, (uint64_t)off, (uint64_t)len, (uint64_t)mode, NULL, 0);
	return r;
}

int fallocate64(int fd, int mode, off_t off, off_t len)
{
	return fallocate(fd, mode, off, len);
}

/* fdatasync or fsync through @real, recorded as SYNC_START ... SYNC. */
static int recorded_sync(int fd, int (*real)(int))
{
	uint64_t id = sync_start(fd);
	int r = real(fd);

	if (r == 0 && id)
		rec(IOLOG_REC_SYNC, 0, 0, id, NULL, 0);
	return r;
}

int fdatasync(int fd)
{
	REAL(fdatasync, int, int);
	return recorded_sync(fd, real_fdatasync);
}

int fsync(int fd)
{
	REAL(fsync, int, int);
	return recorded_sync(fd, real_fsync);
}
