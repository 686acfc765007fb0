/* tests/helpers/shim/failsync.c — LD_PRELOAD library that makes one
 * fdatasync/fsync fail the way Linux reports a writeback error: when the
 * file named by FAILSYNC_FLAG exists, the next fdatasync or fsync (of any
 * fd) deletes it and returns -1 with errno EIO without syncing; later calls
 * succeed again, as Linux's do once the error was reported (the pages that
 * failed are then clean, their data lost). Used by storage-enospc.sh. */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int fail_now(void)
{
	const char *flag = getenv("FAILSYNC_FLAG");

	if (flag && unlink(flag) == 0) {
		errno = EIO;
		return 1;
	}
	return 0;
}

int fdatasync(int fd)
{
	static int (*real)(int);

	if (fail_now())
		return -1;
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	return real(fd);
}

int fsync(int fd)
{
	static int (*real)(int);

	if (fail_now())
		return -1;
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	return real(fd);
}
