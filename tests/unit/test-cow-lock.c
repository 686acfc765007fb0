/* tests/unit/test-cow-lock.c — QEMU-compatible image locks (cow/lock.h):
 * the conflict matrix of the modes between two open file descriptions of one
 * file in this process (OFD locks conflict between descriptions, not only
 * between processes); the exact bytes each mode locks (QEMU's layout); no
 * byte left locked after a refused attempt; release; cow_lock_downgrade (a
 * writer becomes a reader on the same description: a second description may
 * then read-lock, a writer is still refused); the messages; QEMU-style
 * lock sets placed by hand; locking through cow_open (top and backing
 * layers, COW_O_NO_LOCK) and stg_open (raw); and cow_lock_set_wait: a lock
 * released by its holder (a child process) 60 ms later is taken after that
 * wait, one that stays held fails with -EBUSY after the wait, none: at once. */
#include "cow/cow.h"
#include "cow/lock.h"
#include "storage/blockdev.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

static char dir[] = "/tmp/cowlock.XXXXXX";

static double now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* A child that write-locks @path, tells the parent through a pipe, holds the
 * lock @hold_ms and exits. */
static pid_t holder(const char *path, int hold_ms)
{
	int p[2];
	char c;
	pid_t pid;

	if (pipe(p) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		struct ut_err err;
		int fd = open(path, O_RDWR | O_CLOEXEC);
		close(p[0]);
		if (fd < 0 || cow_lock_fd(fd, path, COW_LOCK_WRITE, &err) != 1)
			_exit(2);
		if (write(p[1], "x", 1) != 1)
			_exit(3);
		usleep((useconds_t)hold_ms * 1000);
		_exit(0);
	}
	close(p[1]);
	if (pid < 0 || read(p[0], &c, 1) != 1)
		pid = -1;
	close(p[0]);
	return pid;
}

static void test_wait(const char *path)
{
	struct ut_err err;
	int fd = open(path, O_RDWR | O_CLOEXEC), st;
	double t;
	pid_t pid;

	/* no wait: refused at once */
	pid = holder(path, 300);
	CHECK(pid > 0);
	t = now_ms();
	CHECK(cow_lock_fd(fd, path, COW_LOCK_WRITE, &err) == -EBUSY);
	CHECK(now_ms() - t < 50);
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* released within the wait: taken */
	cow_lock_set_wait(1000);
	pid = holder(path, 60);
	CHECK(pid > 0);
	t = now_ms();
	CHECK(cow_lock_fd(fd, path, COW_LOCK_WRITE, &err) == 1);
	t = now_ms() - t;
	CHECK(t >= 30 && t < 900);
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	cow_unlock_fd(fd);
	/* held past the wait: -EBUSY after it */
	cow_lock_set_wait(100);
	pid = holder(path, 600);
	CHECK(pid > 0);
	t = now_ms();
	CHECK(cow_lock_fd(fd, path, COW_LOCK_WRITE, &err) == -EBUSY);
	t = now_ms() - t;
	CHECK(t >= 90 && t < 500);
	CHECK(strstr(err.msg, "image is in use") != NULL);
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	cow_lock_set_wait(0);
	close(fd);
}

static int fresh_fd(const char *path)
{
	return open(path, O_RDWR | O_CLOEXEC);
}

/* Lock the bytes of @perm (100+i) and @unshared (200+i) shared, as QEMU does. */
static void qemu_style(int fd, unsigned perm, unsigned unshared)
{
	for (int i = 0; i < 5; i++) {
		for (int side = 0; side < 2; side++) {
			unsigned bits = side ? unshared : perm;
			struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET,
					    .l_start = (side ? 200 : 100) + i, .l_len = 1 };
			if (bits & (1u << i))
				CHECK(fcntl(fd, F_OFD_SETLK, &fl) == 0);
		}
	}
}

int main(void)
{
	static const enum cow_lock_mode modes[] = { COW_LOCK_NONE, COW_LOCK_SHARED, COW_LOCK_WRITE };
	static const char *names[] = { "none", "shared", "write" };
	char img[600], base[600], ov1[600], ov2[600];
	struct cow_create_opts o = { .size = 1 << 20 };
	struct ut_err err;
	unsigned perm, unsh;
	int a, b, p, r;

	if (!mkdtemp(dir))
		return 1;
	snprintf(img, sizeof(img), "%s/img.raw", dir);
	a = open(img, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (a < 0 || ftruncate(a, 1 << 20) < 0)
		return 1;
	close(a);

	/* probe from a third description: which bytes does a mode lock? */
	a = fresh_fd(img);
	p = fresh_fd(img);
	{
		struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 1 };
		if (fcntl(a, F_OFD_SETLK, &fl) < 0 && errno == EINVAL) {
			printf("SKIP: no OFD locks on this kernel\n");
			return 77;
		}
		fl.l_type = F_UNLCK;
		fcntl(a, F_OFD_SETLK, &fl);
	}
	CHECK(cow_lock_fd(a, img, COW_LOCK_WRITE, &err) == 1);
	CHECK(cow_lock_probe(p, &perm, &unsh) == 0);
	CHECK(perm == 0xb && unsh == 0xa);   /* holds CR, W, R; unshares W, R */
	CHECK(cow_lock_fd(a, img, COW_LOCK_WRITE, &err) == 1);   /* again: harmless */
	cow_unlock_fd(a);
	CHECK(cow_lock_probe(p, &perm, &unsh) == 0 && perm == 0 && unsh == 0);
	CHECK(cow_lock_fd(a, img, COW_LOCK_SHARED, &err) == 1);
	CHECK(cow_lock_probe(p, &perm, &unsh) == 0 && perm == 0x1 && unsh == 0xa);
	cow_unlock_fd(a);

	/* cow_lock_downgrade: a writer's locks become a reader's on the same
	 * description, never unlocked in between; re-locking shared does not
	 * do it (the write bytes stay) */
	b = fresh_fd(img);
	CHECK(cow_lock_fd(a, img, COW_LOCK_WRITE, &err) == 1);
	CHECK(cow_lock_fd(b, img, COW_LOCK_SHARED, &err) == -EBUSY);
	CHECK(cow_lock_fd(a, img, COW_LOCK_SHARED, &err) == 1);
	CHECK(cow_lock_probe(p, &perm, &unsh) == 0 && perm == 0xb && unsh == 0xa);
	CHECK(cow_lock_downgrade(a) == 0);
	CHECK(cow_lock_probe(p, &perm, &unsh) == 0 && perm == 0x1 && unsh == 0xa);
	CHECK(cow_lock_fd(b, img, COW_LOCK_SHARED, &err) == 1);   /* a reader: yes */
	cow_unlock_fd(b);
	CHECK(cow_lock_fd(b, img, COW_LOCK_WRITE, &err) == -EBUSY);   /* a writer: no */
	CHECK(strstr(err.msg, "does not allow writes") != NULL);
	CHECK(cow_lock_downgrade(a) == 0);   /* again: harmless */
	CHECK(cow_lock_probe(p, &perm, &unsh) == 0 && perm == 0x1 && unsh == 0xa);
	cow_unlock_fd(a);
	CHECK(cow_lock_downgrade(a) == 0);   /* nothing held: nothing locked */
	CHECK(cow_lock_probe(p, &perm, &unsh) == 0 && perm == 0 && unsh == 0);
	close(b);

	CHECK(cow_lock_fd(a, img, COW_LOCK_NONE, &err) == 0);
	CHECK(cow_lock_probe(p, &perm, &unsh) == 0 && perm == 0 && unsh == 0);
	close(a);

	/* the matrix: first holder x second opener */
	for (int i = 0; i < 3; i++) {
		for (int j = 0; j < 3; j++) {
			bool ok = modes[i] == COW_LOCK_NONE || modes[j] == COW_LOCK_NONE ||
				  (modes[i] == COW_LOCK_SHARED && modes[j] == COW_LOCK_SHARED);
			a = fresh_fd(img);
			b = fresh_fd(img);
			CHECK(cow_lock_fd(a, img, modes[i], &err) >= 0);
			ut_err_clear(&err);
			r = cow_lock_fd(b, img, modes[j], &err);
			if (ok != (r >= 0))
				fprintf(stderr, "holder %s, opener %s: got %d (%s)\n", names[i], names[j], r, err.msg);
			CHECK(ok == (r >= 0));
			if (!ok) {
				CHECK(r == -EBUSY);
				CHECK(strstr(err.msg, "unable to open '") && strstr(err.msg, "image is in use ("));
				if (modes[i] == COW_LOCK_WRITE)
					CHECK(strstr(err.msg, "write lock held by another process, e.g. a running VM or QEMU") != NULL);
				else
					CHECK(strstr(err.msg, "does not allow writes") != NULL);
				/* the refused opener left nothing locked */
				cow_unlock_fd(a);
				CHECK(cow_lock_probe(p, &perm, &unsh) == 0 && perm == 0 && unsh == 0);
			}
			close(b);
			close(a);
			/* closing released everything: the opener now gets its lock */
			b = fresh_fd(img);
			CHECK(cow_lock_fd(b, img, modes[j], &err) >= 0);
			close(b);
		}
	}

	/* the lock sets QEMU uses (block/file-posix.c, QEMU >= 6.2) */
	a = fresh_fd(img);
	b = fresh_fd(img);
	qemu_style(a, 0x0, 0xa);      /* qemu-img info: holds nothing, unshares W, R */
	CHECK(cow_lock_fd(b, img, COW_LOCK_SHARED, &err) == 1);
	cow_unlock_fd(b);
	CHECK(cow_lock_fd(b, img, COW_LOCK_WRITE, &err) == -EBUSY);
	close(a);
	a = fresh_fd(img);
	qemu_style(a, 0xb, 0xa);      /* a VM's writable qcow2 disk (qemu-io) */
	CHECK(cow_lock_fd(b, img, COW_LOCK_SHARED, &err) == -EBUSY);
	CHECK(strstr(err.msg, "write lock held by another process") != NULL);
	close(a);
	a = fresh_fd(img);
	qemu_style(a, 0x11, 0x10);    /* QEMU <= 6.1's graph-mod bytes: ignored */
	CHECK(cow_lock_fd(b, img, COW_LOCK_WRITE, &err) == 1);
	cow_unlock_fd(b);
	close(a);
	a = fresh_fd(img);
	qemu_style(a, 0x0, 0x1);      /* someone refusing consistent reads */
	CHECK(cow_lock_fd(b, img, COW_LOCK_SHARED, &err) == -EBUSY);
	CHECK(strstr(err.msg, "does not allow it to be read") != NULL);
	close(a);
	close(b);
	close(p);

	/* cow_lock_path: a missing file without create is not an error */
	{
		char missing[700];
		int fd;
		snprintf(missing, sizeof(missing), "%s/none", dir);
		CHECK(cow_lock_path(missing, COW_LOCK_WRITE, false, &fd, &err) == 0 && fd == -1);
		CHECK(cow_lock_path(missing, COW_LOCK_WRITE, true, &fd, &err) == 0 && fd >= 0);
		CHECK(access(missing, F_OK) == 0);
		b = fresh_fd(missing);
		CHECK(cow_lock_fd(b, missing, COW_LOCK_SHARED, &err) == -EBUSY);
		close(b);
		close(fd);
		unlink(missing);
	}

	/* through cow_open: a writable top excludes everything; two overlays
	 * share one backing file; the backing cannot be written meanwhile */
	snprintf(base, sizeof(base), "%s/base.qcow2", dir);
	snprintf(ov1, sizeof(ov1), "%s/ov1.qcow2", dir);
	snprintf(ov2, sizeof(ov2), "%s/ov2.qcow2", dir);
	CHECK(cow_create(base, &o, &err) == 0);
	o.backing = "base.qcow2";
	o.backing_fmt = "qcow2";
	CHECK(cow_create(ov1, &o, &err) == 0);
	CHECK(cow_create(ov2, &o, &err) == 0);
	{
		struct cow_img *x = NULL, *y = NULL, *z = NULL;
		CHECK(cow_open(ov1, NULL, 0, &x, &err) == 0);
		CHECK(cow_open(ov1, NULL, COW_O_RDONLY, &y, &err) == -EBUSY && !y);
		CHECK(strstr(err.msg, "write lock held by another process") != NULL);
		CHECK(cow_open(ov1, NULL, COW_O_RDONLY | COW_O_NO_LOCK, &y, &err) == 0);
		cow_close(y);
		y = NULL;
		CHECK(cow_open(ov2, NULL, 0, &y, &err) == 0);       /* shares base */
		CHECK(cow_open(base, NULL, COW_O_RDONLY, &z, &err) == 0);
		cow_close(z);
		z = NULL;
		CHECK(cow_open(base, NULL, 0, &z, &err) == -EBUSY);
		CHECK(strstr(err.msg, "does not allow writes") != NULL);
		cow_close(y);
		cow_close(x);
		CHECK(cow_open(base, NULL, 0, &z, &err) == 0);       /* all closed: free */
		CHECK(cow_open(ov1, NULL, COW_O_RDONLY, &x, &err) == -EBUSY);
		CHECK(strstr(err.msg, "backing file") != NULL);
		cow_close(z);
	}

	/* through stg_open: raw files */
	{
		struct stg_dev *d1 = NULL, *d2 = NULL;
		CHECK(stg_open(img, "raw", 0, &d1, &err) == 0);
		CHECK(stg_open(img, "raw", STG_O_RDONLY, &d2, &err) == -EBUSY);
		CHECK(stg_open(img, "raw", STG_O_RDONLY | STG_O_NO_LOCK, &d2, &err) == 0);
		stg_close(d2);
		stg_close(d1);
		CHECK(stg_open(img, "raw", STG_O_RDONLY, &d1, &err) == 0);
		CHECK(stg_open(img, "raw", STG_O_RDONLY, &d2, &err) == 0);
		stg_close(d2);
		stg_close(d1);
	}

	test_wait(img);

	unlink(img);
	unlink(base);
	unlink(ov1);
	unlink(ov2);
	rmdir(dir);
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
