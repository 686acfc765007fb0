/* cow/lock.c — QEMU-compatible image locks on single bytes of the image file
 * (the scheme and the contract are in cow/lock.h). */
#include "cow/lock.h"
#include "util/io.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* 1 once F_OFD_* turned out to be unavailable (kernel < 3.15), or set by
 * the test hook COWVM_LOCK_POSIX=1 (read at the first lock operation) */
static int no_ofd;
static pthread_once_t hook_once = PTHREAD_ONCE_INIT;

static void read_hook(void)
{
	const char *e = getenv("COWVM_LOCK_POSIX");

	if (e && !strcmp(e, "1"))
		__atomic_store_n(&no_ofd, 1, __ATOMIC_RELAXED);
}

/* cow_lock_set_wait: how long a conflict is retried, in ms */
static unsigned lock_wait_ms;

bool cow_lock_posix(void)
{
	pthread_once(&hook_once, read_hook);
	return __atomic_load_n(&no_ofd, __ATOMIC_RELAXED);
}

/* One fcntl lock operation on [off, off+len): F_OFD_* or the POSIX fallback.
 * @test: F_GETLK-style query, *conflict set when another owner's lock would
 * conflict with @type. Returns 0 or -errno. */
static int lock_op(int fd, bool test, short type, off_t off, off_t len, bool *conflict)
{
	struct flock fl;
	int r;

	pthread_once(&hook_once, read_hook);
	for (;;) {
		memset(&fl, 0, sizeof(fl));
		fl.l_type = type;
		fl.l_whence = SEEK_SET;
		fl.l_start = off;
		fl.l_len = len;
		if (!__atomic_load_n(&no_ofd, __ATOMIC_RELAXED))
			r = fcntl(fd, test ? F_OFD_GETLK : F_OFD_SETLK, &fl);
		else
			r = fcntl(fd, test ? F_GETLK : F_SETLK, &fl);
		if (r < 0 && errno == EINVAL && !__atomic_load_n(&no_ofd, __ATOMIC_RELAXED)) {
			__atomic_store_n(&no_ofd, 1, __ATOMIC_RELAXED);
			continue;
		}
		break;
	}
	if (r < 0)
		return -errno;
	if (test && conflict)
		*conflict = fl.l_type != F_UNLCK;
	return 0;
}

/* Bits (1 << COW_PERM_x) held and not shared for @mode. */
static void mode_bits(enum cow_lock_mode mode, unsigned *hold, unsigned *unshare)
{
	*hold = 0;
	*unshare = 0;
	if (mode == COW_LOCK_NONE)
		return;
	*hold = 1u << COW_PERM_CONSISTENT_READ;
	*unshare = (1u << COW_PERM_WRITE) | (1u << COW_PERM_RESIZE);
	if (mode == COW_LOCK_WRITE)
		*hold |= (1u << COW_PERM_WRITE) | (1u << COW_PERM_RESIZE);
}

void cow_unlock_fd(int fd)
{
	if (fd < 0)
		return;
	/* bytes 100..104 and 200..204 (104/204: QEMU <= 6.1's graph-mod) */
	(void)lock_op(fd, false, F_UNLCK, COW_LOCK_PERM_BASE, COW_PERM_COUNT + 1, NULL);
	(void)lock_op(fd, false, F_UNLCK, COW_LOCK_SHARED_BASE, COW_PERM_COUNT + 1, NULL);
}

int cow_lock_downgrade(int fd)
{
	if (fd < 0)
		return -EBADF;
	/* bytes 101..103: write, write-unchanged (never held), resize */
	return lock_op(fd, false, F_UNLCK, COW_LOCK_PERM_BASE + COW_PERM_WRITE, 3, NULL);
}

int cow_lock_probe(int fd, unsigned *perm, unsigned *unshared)
{
	bool c;
	int r = 0;

	*perm = 0;
	*unshared = 0;
	for (int i = 0; i < COW_PERM_COUNT + 1 && r == 0; i++) {
		r = lock_op(fd, true, F_WRLCK, COW_LOCK_PERM_BASE + i, 1, &c);
		if (r == 0 && c)
			*perm |= 1u << i;
		if (r == 0)
			r = lock_op(fd, true, F_WRLCK, COW_LOCK_SHARED_BASE + i, 1, &c);
		if (r == 0 && c)
			*unshared |= 1u << i;
	}
	return r;
}

static int in_use(struct ut_err *err, const char *path, const char *why)
{
	return ut_errf(err, -EBUSY, "unable to open '%s': image is in use (%s)", path, why);
}

static bool unsupported(int r)
{
	return r == -ENOLCK || r == -EOPNOTSUPP || r == -ENOSYS;
}

void cow_lock_set_wait(unsigned ms)
{
	__atomic_store_n(&lock_wait_ms, ms, __ATOMIC_RELAXED);
}

static int lock_once(int fd, const char *path, enum cow_lock_mode mode, struct ut_err *err)
{
	unsigned hold, unshare, held = 0, other_unshared = 0;
	bool c;
	int r = 0;

	mode_bits(mode, &hold, &unshare);
	if (!hold && !unshare)
		return 0;
	/* 1. our bytes (shared locks; EAGAIN: someone holds one exclusively) */
	for (int i = 0; i < COW_PERM_COUNT && r == 0; i++) {
		if (hold & (1u << i))
			r = lock_op(fd, false, F_RDLCK, COW_LOCK_PERM_BASE + i, 1, NULL);
		if (r == 0 && (unshare & (1u << i)))
			r = lock_op(fd, false, F_RDLCK, COW_LOCK_SHARED_BASE + i, 1, NULL);
	}
	if (unsupported(r)) {
		cow_unlock_fd(fd);
		return 0;   /* no locking on this filesystem: open unprotected */
	}
	if (r == -EAGAIN || r == -EACCES) {
		r = in_use(err, path, "another process holds an exclusive lock on it");
		goto out;
	}
	if (r < 0) {
		r = ut_errf_sys(err, r, "unable to open '%s': unable to lock the image", path);
		goto out;
	}
	/* 2. the other side: writers first, they make the most useful message */
	for (int i = 0; i < COW_PERM_COUNT && r == 0; i++) {
		if (!(unshare & (1u << i)))
			continue;
		r = lock_op(fd, true, F_WRLCK, COW_LOCK_PERM_BASE + i, 1, &c);
		if (r == 0 && c)
			held |= 1u << i;
	}
	for (int i = 0; i < COW_PERM_COUNT && r == 0; i++) {
		if (!(hold & (1u << i)))
			continue;
		r = lock_op(fd, true, F_WRLCK, COW_LOCK_SHARED_BASE + i, 1, &c);
		if (r == 0 && c)
			other_unshared |= 1u << i;
	}
	if (r < 0) {
		r = ut_errf_sys(err, r, "unable to open '%s': unable to test the image's locks", path);
		goto out;
	}
	if (held & (1u << COW_PERM_WRITE))
		r = in_use(err, path, "write lock held by another process, e.g. a running VM or QEMU");
	else if (held)
		r = in_use(err, path, "resize lock held by another process, e.g. a running VM or QEMU");
	else if (other_unshared & (1u << COW_PERM_CONSISTENT_READ))
		r = in_use(err, path, "another process does not allow it to be read, e.g. QEMU writing it as a block job target");
	else if (other_unshared)
		r = in_use(err, path, "another process reads it and does not allow writes, e.g. a running VM using it as a backing file, or an image command");
	else
		r = 1;
out:
	if (r < 0)
		cow_unlock_fd(fd);
	return r;
}

int cow_lock_fd(int fd, const char *path, enum cow_lock_mode mode, struct ut_err *err)
{
	unsigned waited = 0, wait = __atomic_load_n(&lock_wait_ms, __ATOMIC_RELAXED);
	const struct timespec step = { 0, 10 * 1000 * 1000 };
	int r;

	for (;;) {
		r = lock_once(fd, path, mode, err);
		if (r != -EBUSY || waited >= wait)
			return r;
		nanosleep(&step, NULL);
		waited += 10;
	}
}

int cow_lock_path(const char *path, enum cow_lock_mode mode, bool create, int *fd,
		  struct ut_err *err)
{
	int r;

	*fd = ut_open_image(path, O_RDONLY | O_CLOEXEC | (create ? O_CREAT : 0), 0644, err);
	if (*fd < 0) {
		r = *fd;
		*fd = -1;
		if (r == -ENOENT && !create) {
			ut_err_clear(err);
			return 0;
		}
		return r;
	}
	r = cow_lock_fd(*fd, path, mode, err);
	if (r < 0)
		goto out;
	r = 0;
out:
	if (r < 0) {
		close(*fd);
		*fd = -1;
	}
	return r;
}
