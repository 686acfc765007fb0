/* tests/unit/test-fds.h — how many descriptors the process has open, for
 * the tests that check a path closes everything it opened (compared
 * before and after, so what else is open does not matter). Shared by
 * test-virtio-blk.c, test-stg-snapshot-create.c and the device-state fuzz
 * bodies (tests/fuzz/devstate-body.h, statefile-body.h). */
#ifndef TEST_FDS_H
#define TEST_FDS_H

#include <dirent.h>

/* Open descriptors (the one listing /proc/self/fd not counted), or -1 when
 * /proc/self/fd cannot be read. */
static inline int tf_nfds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1;
}

#endif
