/* tests/unit/test-stg-close-error.c — stg_close reports what the image's
 * own close does (storage/blockdev.h): a qcow2 device whose image has a
 * persistent dirty bitmap (qemu-img bitmap --add) stores it at close
 * (cow/bitmap-track.c). With the file-size limit at the end of the file
 * (COWVM_COW_PREALLOC=0: the file is not sized ahead), the store cannot
 * write its new clusters: stg_close returns the error (-EFBIG) instead of
 * 0, stg_close_msg says why (naming the file, "unable to store its
 * persistent bitmaps ... stay marked in use"; "" for a clean close), and
 * the bitmap stays marked in use (qemu-img info), the image
 * checking clean but for leaks. Without the limit stg_close returns 0 and
 * the bitmap is consistent. Skips (77) without qemu-img. */
#include "storage/blockdev.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

static int sh(const char *cmd)
{
	int r = system(cmd);

	return r == -1 || !WIFEXITED(r) ? -1 : WEXITSTATUS(r);
}

/* One session: open, write 1 MiB at @off, flush, optionally limit the file
 * size to its current end, close. Returns stg_close_msg's result, its
 * message in @msg. */
static int session(const char *path, uint64_t off, bool limit, char *msg, size_t size)
{
	struct stg_dev *d = NULL;
	struct ut_err err;
	struct rlimit old, rl;
	struct stat st;
	void *buf = malloc(1 << 20);
	int r;

	ut_err_clear(&err);
	memset(buf, 0x3d, 1 << 20);
	if (stg_open(path, "qcow2", 0, &d, &err) < 0) {
		fprintf(stderr, "open: %s\n", err.msg);
		failures++;
		free(buf);
		return 0;
	}
	CHECK(stg_pwrite(d, buf, 1 << 20, off) == 0);
	CHECK(stg_flush(d) == 0);
	getrlimit(RLIMIT_FSIZE, &old);
	if (limit && stat(path, &st) == 0) {
		rl = old;
		rl.rlim_cur = (rlim_t)st.st_size;
		CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
	}
	r = stg_close_msg(d, msg, size);
	setrlimit(RLIMIT_FSIZE, &old);
	free(buf);
	return r;
}

int main(void)
{
	char dir[] = "/var/tmp/stgclose.XXXXXX", path[300], cmd[800], msg[UT_ERR_MSG_MAX];
	int r;

	if (sh("command -v qemu-img >/dev/null 2>&1") != 0) {
		printf("SKIP: qemu-img not installed\n");
		return 77;
	}
	if (!mkdtemp(dir))
		return 1;
	signal(SIGXFSZ, SIG_IGN);
	setenv("COWVM_COW_PREALLOC", "0", 1);
	snprintf(path, sizeof(path), "%s/bm.qcow2", dir);
	snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 %s 64M && qemu-img bitmap --add %s b0",
		 path, path);
	if (sh(cmd) != 0) {
		printf("SKIP: qemu-img bitmap --add failed\n");
		rmdir(dir);
		return 77;
	}
	/* a close that stores the bitmap */
	r = session(path, 0, false, msg, sizeof(msg));
	CHECK(r == 0 && !msg[0]);
	snprintf(cmd, sizeof(cmd), "qemu-img info --output=json %s | grep -q in-use", path);
	CHECK(sh(cmd) == 1);   /* consistent */
	/* a close whose store cannot write: the error comes back */
	r = session(path, 8u << 20, true, msg, sizeof(msg));
	if (r != -EFBIG)
		fprintf(stderr, "stg_close with the store failing returned %d (%s)\n", r, strerror(-r));
	CHECK(r == -EFBIG);
	/* and says why (cow_close_msg) */
	fprintf(stderr, "stg_close_msg: %s\n", msg);
	CHECK(strstr(msg, path) && strstr(msg, "unable to store its persistent bitmaps") &&
	      strstr(msg, "stay marked in use"));
	CHECK(sh(cmd) == 0);   /* in use */
	snprintf(cmd, sizeof(cmd), "qemu-img check -q %s; test $? = 0 -o $? = 3", path);
	CHECK(sh(cmd) == 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	sh(cmd);
	if (!failures)
		printf("test-stg-close-error: ok\n");
	return failures ? 1 : 0;
}
