/* tests/unit/test-stg-snapshot-posix.c — external snapshots with the POSIX
 * lock fallback (cow/lock.h; forced by the test hook COWVM_LOCK_POSIX=1),
 * where closing any descriptor of a file drops all of the process's locks
 * on it: a snapshot must not open (and close) the device's image besides
 * the device's own descriptor. A child process (POSIX locks belong to the
 * process) tries a write lock on the image and on the overlay after
 * prepare (both refused: we write them), and after commit (the image:
 * refused, shared taken; the overlay: refused), for a qcow2 and a raw
 * device; and the same with stg_snapshot_create first (it pushes the
 * image's data without a second descriptor here: the image stays locked
 * after it). Runs in /var/tmp. Exit 0 pass, 1 fail. */
#include "storage/blockdev.h"
#include "cow/cow.h"
#include "cow/lock.h"
#include "tests/unit/test-stg-snap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[] = "/var/tmp/stgsnapp.XXXXXX";

/* In a child: the result of cow_lock_fd(@mode) on a new descriptor of
 * @path (1 taken, -EBUSY refused), or -1000 when the child failed. */
static int child_lock(const char *path, enum cow_lock_mode mode)
{
	int st;
	pid_t pid = fork();

	if (pid == 0) {
		struct ut_err err;
		int fd = open(path, O_RDONLY | O_CLOEXEC), r;

		if (fd < 0)
			_exit(100);
		r = cow_lock_fd(fd, path, mode, &err);
		_exit(r == 1 ? 1 : r == -EBUSY ? 2 : 101);
	}
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1000;
	return WEXITSTATUS(st) == 1 ? 1 : WEXITSTATUS(st) == 2 ? -EBUSY : -1000;
}

static void one(bool raw, bool early)
{
	char cur[600], ov[600];
	struct stg_snapshot snap = { 0 };
	struct ut_err err;
	struct stg_dev *d;

	snprintf(cur, sizeof(cur), "%s/img%d%d", dir, raw, early);
	snprintf(ov, sizeof(ov), "%s/ov%d%d", dir, raw, early);
	d = ts_make_open(cur, raw, 0);
	if (!d)
		return;
	CHECK(child_lock(cur, COW_LOCK_SHARED) == -EBUSY);
	if (early) {
		CHECKE(stg_snapshot_create(d, ov, 0, &snap, &err) == 0, &err);
		if (child_lock(cur, COW_LOCK_SHARED) != -EBUSY) {
			fprintf(stderr, "raw %d: after create another process locks the image the device writes\n",
				raw);
			failures++;
		}
		CHECK(child_lock(ov, COW_LOCK_SHARED) == -EBUSY);
	}
	CHECKE(stg_snapshot_prepare(d, ov, 0, &snap, &err) == 0, &err);
	if (child_lock(cur, COW_LOCK_SHARED) != -EBUSY) {
		fprintf(stderr, "raw %d: after prepare another process locks the image the device writes\n",
			raw);
		failures++;
	}
	CHECK(child_lock(ov, COW_LOCK_SHARED) == -EBUSY);
	CHECKE(stg_snapshot_commit(d, &snap, &err) == 0, &err);
	if (child_lock(cur, COW_LOCK_WRITE) != -EBUSY) {
		fprintf(stderr, "raw %d: after commit another process write-locks the frozen image\n", raw);
		failures++;
	}
	CHECK(child_lock(cur, COW_LOCK_SHARED) == 1);
	CHECK(child_lock(ov, COW_LOCK_SHARED) == -EBUSY);
	stg_close(d);
	CHECK(child_lock(cur, COW_LOCK_WRITE) == 1);
	CHECK(child_lock(ov, COW_LOCK_WRITE) == 1);
	unlink(cur);
	unlink(ov);
}

int main(void)
{
	setenv("COWVM_LOCK_POSIX", "1", 1);
	if (ts_start(dir))
		return 1;
	one(false, false);
	one(true, false);
	one(false, true);
	one(true, true);
	return ts_end(dir);
}
