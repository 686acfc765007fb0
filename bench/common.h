/* bench/common.h — small helpers shared by the benchmarks' C programs. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <fcntl.h>
#include <unistd.h>

/* Open @path with @flags (mode 0644) as file descriptor @fd. 0 or -1. */
static inline int bench_redirect(int fd, const char *path, int flags)
{
	int f = open(path, flags, 0644);

	if (f < 0)
		return -1;
	if (f != fd) {
		if (dup2(f, fd) < 0)
			return -1;
		close(f);
	}
	return 0;
}

#endif
