/* tests/helpers/fullfs.h — a file system that fills up, for the test
 * helpers that drive cow/ and storage/ onto one (cowio fill, stgstress):
 * a lowered file size limit stands for a full disk without a mount, and
 * giving the space back deletes the filler file and lifts the limit. */
#ifndef TESTS_FULLFS_H
#define TESTS_FULLFS_H

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <unistd.h>

/* Lower this process's file size limit (RLIMIT_FSIZE, soft) to @n bytes,
 * SIGXFSZ ignored: a write that would grow a file past @n fails with EFBIG.
 * 0 or -errno. */
static inline int test_fsize_limit(uint64_t n)
{
	struct rlimit rl;

	signal(SIGXFSZ, SIG_IGN);
	if (getrlimit(RLIMIT_FSIZE, &rl) < 0)
		return -errno;
	rl.rlim_cur = n;
	return setrlimit(RLIMIT_FSIZE, &rl) < 0 ? -errno : 0;
}

/* The space comes back: @filler (NULL: none; already gone is fine) is
 * deleted and the file size limit raised to the hard limit. 0, or -errno
 * of the unlink. */
static inline int test_space_back(const char *filler)
{
	struct rlimit rl;

	if (filler && unlink(filler) < 0 && errno != ENOENT)
		return -errno;
	if (getrlimit(RLIMIT_FSIZE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_FSIZE, &rl);
	}
	return 0;
}

#endif
