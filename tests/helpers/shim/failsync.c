/* tests/helpers/shim/failsync.c — LD_PRELOAD library that makes one
 * fdatasync/fsync fail the way Linux reports a writeback error: when the
 * file named by FAILSYNC_FLAG exists, the next fdatasync or fsync (of any
 * fd) deletes it and returns -1 with errno EIO without syncing; later calls
 * succeed again, as Linux's do once the error was reported (the pages that
 * failed are then clean, their data lost). FAILSYNC_ERRNO (a number)
 * replaces EIO (28: ENOSPC, as NFS or a thin volume may report).
 * FAILSYNC_INO (a number; read at each call, so a program may set it
 * itself) limits it to the syncs of fds whose file has that inode number:
 * others pass and leave the flag. Used by storage-enospc.sh,
 * guest-disk-errors.sh and storage-snapshot-crash.sh. */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail_now(int fd)
{
	const char *flag = getenv("FAILSYNC_FLAG"), *e = getenv("FAILSYNC_ERRNO");
	const char *ino = getenv("FAILSYNC_INO");
	struct stat st;

	if (ino && (fstat(fd, &st) < 0 || (unsigned long long)st.st_ino != strtoull(ino, NULL, 0)))
		return 0;
	if (flag && unlink(flag) == 0) {
		errno = e && atoi(e) > 0 ? atoi(e) : EIO;
		return 1;
	}
	return 0;
}

int fdatasync(int fd)
{
	static int (*real)(int);

	if (fail_now(fd))
		return -1;
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	return real(fd);
}

int fsync(int fd)
{
	static int (*real)(int);

	if (fail_now(fd))
		return -1;
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	return real(fd);
}
