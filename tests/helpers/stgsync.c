/* tests/helpers/stgsync.c — a failed flush through storage/ stays failed.
 *
 *   stgsync IMG FLAG
 *       run under tests/helpers/failsync.so (FAILSYNC_FLAG=FLAG), which
 *       fails the next fdatasync/fsync once FLAG exists, as Linux reports a
 *       writeback error (once). IMG (raw or qcow2, probed) is opened through
 *       storage/ with the worker-thread engine (whose flushes are libc
 *       fdatasyncs the shim sees): 1 MiB written at 0 and flushed; 1 MiB
 *       more at 4 MiB, then FLAG created and a flush, which must fail; a
 *       second flush must fail too, with EIO (what reached the disk is
 *       unknown, and Linux would report success now), whatever the first
 *       error was (FAILSYNC_ERRNO, which the first flush must return). Exit
 *       0 when both
 *       fail, 3 when one succeeds, 1 on other errors, 2 usage.
 */
#include "storage/blockdev.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct stg_dev *d = NULL;
	struct ut_err e = { 0, "" };
	uint8_t *buf = malloc(1 << 20);
	int fd, r, ret = 1;

	if (argc != 3) {
		fprintf(stderr, "usage: stgsync IMG FLAG\n");
		return 2;
	}
	if (!buf)
		goto out;
	if (stg_open(argv[1], "auto", STG_O_THREADS, &d, &e)) {
		fprintf(stderr, "stgsync: %s\n", e.msg);
		goto out;
	}
	memset(buf, 0x11, 1 << 20);
	r = stg_pwrite(d, buf, 1 << 20, 0);
	r = r ? r : stg_flush(d);
	if (r) {
		fprintf(stderr, "stgsync: first write and flush: %s\n", strerror(-r));
		goto out;
	}
	memset(buf, 0x22, 1 << 20);
	r = stg_pwrite(d, buf, 1 << 20, 4 << 20);
	if (r) {
		fprintf(stderr, "stgsync: second write: %s\n", strerror(-r));
		goto out;
	}
	fd = open(argv[2], O_WRONLY | O_CREAT, 0644);
	if (fd < 0) {
		perror(argv[2]);
		goto out;
	}
	close(fd);
	r = stg_flush(d);
	if (r == 0) {
		fprintf(stderr, "stgsync: the flush whose fdatasync failed succeeded\n");
		ret = 3;
		goto out;
	}
	if (getenv("FAILSYNC_ERRNO") && r != -atoi(getenv("FAILSYNC_ERRNO"))) {
		fprintf(stderr, "stgsync: the failed flush returned %s, not errno %s\n",
			strerror(-r), getenv("FAILSYNC_ERRNO"));
		goto out;
	}
	printf("flush: %s\n", strerror(-r));
	r = stg_flush(d);
	if (r != -EIO) {
		fprintf(stderr, "stgsync: the flush after a failed one: %s (expected EIO)\n",
			r ? strerror(-r) : "succeeded");
		ret = 3;
		goto out;
	}
	printf("flush again: %s\n", strerror(-r));
	ret = 0;
out:
	stg_close(d);
	free(buf);
	return ret;
}
