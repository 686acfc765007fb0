/* tests/unit/test-cow-keep-bitmaps.c — an image opened with
 * COW_O_KEEP_BITMAPS (`cowvm image resize`) is writable for cow_grow and
 * cow_shrink only (cow.h, cow_data_writable in cow/qcow2.h): its persistent
 * bitmaps are not marked in use, so any other change of guest data would
 * leave them silently stale. Every entry point that changes guest data is
 * refused with -EPERM and a message naming the file (cow_write,
 * cow_writev, cow_write_zeroes with and without unmap, cow_discard to zeros
 * and to the backing file, cow_write_compressed, cow_write_step, and
 * cow_set_backing, which changes what the guest reads), cow_map_inplace
 * offers no in-place run (storage/qcow2.c's own writes), and nothing in the
 * image changes; cow_grow and cow_shrink still work (their own discards and
 * zero writes pass), and the refusal holds again after them. The same
 * calls succeed on an ordinary writable open (the check is not a blanket
 * refusal). Raw and qcow2 images; a qcow2 one with a backing file. */
#include "cow/qcow2.h"
#include "tests/helpers/cowfill.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

static char dir[] = "/var/tmp/cowkeepbm.XXXXXX";

/* @r is the refusal of a data change on @path: -EPERM, the message names
 * the file and the reason. */
static void refused(int r, const struct ut_err *err, const char *path, const char *what)
{
	if (r != -EPERM || !strstr(err->msg, path) || !strstr(err->msg, "resizing only")) {
		fprintf(stderr, "%s: not refused as expected: %d '%s'\n", what, r, err->msg);
		failures++;
	}
}

/* Every data-changing call on @img (opened with COW_O_KEEP_BITMAPS)
 * refused; the data (@v over the first 64 KiB) unchanged. */
static void all_refused(struct cow_img *img, const char *path, uint8_t v)
{
	static uint8_t buf[65536];
	struct iovec iov[2] = { { buf, 4096 }, { buf + 4096, 4096 } };
	struct cow_wstep st = { 0 };
	struct ut_err err;
	uint64_t host = 0, n = 1;
	bool qcow2 = cow_format(img) == COW_FMT_QCOW2;

	memset(buf, 0x5a, sizeof(buf));
	refused(cow_write(img, buf, 4096, 0, &err), &err, path, "cow_write");
	refused(cow_writev(img, iov, 2, 8192, &err), &err, path, "cow_writev");
	refused(cow_write_zeroes(img, 65536, 0, 0, &err), &err, path, "cow_write_zeroes");
	refused(cow_write_zeroes(img, 65536, 0, COW_ZERO_MAY_UNMAP, &err), &err, path,
		"cow_write_zeroes unmap");
	refused(cow_discard(img, 65536, 0, false, &err), &err, path, "cow_discard");
	refused(cow_discard(img, 65536, 0, true, &err), &err, path, "cow_discard to backing");
	refused(cow_write_compressed(img, buf, 65536, 0, &err), &err, path, "cow_write_compressed");
	refused(cow_write_step(img, buf, 4096, 0, &st, &err), &err, path, "cow_write_step");
	cow_wstep_release(&st);
	CHECK(cow_map_inplace(img, 0, 4096, &host, &n, &err) == 0 && n == 0);
	if (qcow2)
		refused(cow_set_backing(img, "other.img", "raw", &err), &err, path, "cow_set_backing");
	CHECK(test_reads_as(img, 0, 65536, v));
}

static void one(const char *fmt, bool with_backing)
{
	char path[160], base[160];
	struct cow_create_opts o = { .size = 4 << 20, .cluster_size = 4096 };
	struct cow_img *img = NULL;
	struct ut_err err;
	uint64_t host = 0, n = 0;
	bool qcow2 = !strcmp(fmt, "qcow2");
	int fd;

	snprintf(path, sizeof(path), "%s/k-%s%s", dir, fmt, with_backing ? "-b" : "");
	snprintf(base, sizeof(base), "%s/base.raw", dir);
	if (with_backing) {
		fd = open(base, O_CREAT | O_TRUNC | O_WRONLY, 0644);
		CHECK(fd >= 0 && ftruncate(fd, 8 << 20) == 0);
		close(fd);
		o.backing = base;
		o.backing_fmt = "raw";
	}
	if (qcow2) {
		CHECK(cow_create(path, &o, &err) == 0);
	} else {
		fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
		CHECK(fd >= 0 && ftruncate(fd, 4 << 20) == 0);
		close(fd);
	}
	/* data written by an ordinary open */
	CHECK(cow_open(path, fmt, 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_write_pat(img, 0, 65536, 0x11) == 0);
	CHECK(cow_map_inplace(img, 0, 4096, &host, &n, &err) == 0 && n == 4096);
	CHECK(cow_close(img) == 0);

	img = NULL;
	CHECK(cow_open(path, fmt, COW_O_KEEP_BITMAPS, &img, &err) == 0);
	if (!img)
		return;
	all_refused(img, path, 0x11);
	/* the resize itself works, its own releases and zeroes included */
	CHECK(cow_grow(img, 12 << 20, &err) == 0);
	CHECK(cow_size(img) == 12 << 20);
	CHECK(test_reads_as(img, 4 << 20, 8 << 20, 0));
	all_refused(img, path, 0x11);
	CHECK(cow_shrink(img, 1 << 20, &err) == 0);
	CHECK(cow_size(img) == 1 << 20);
	all_refused(img, path, 0x11);
	CHECK(cow_close(img) == 0);
	if (qcow2)
		CHECK(test_checks_clean(path));

	/* an ordinary open still changes data (not a blanket refusal) */
	img = NULL;
	CHECK(cow_open(path, fmt, 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_write_pat(img, 4096, 4096, 0x22) == 0);
	CHECK(cow_write_zeroes(img, 4096, 8192, 0, &err) == 0);
	CHECK(test_reads_as(img, 4096, 4096, 0x22));
	CHECK(test_reads_as(img, 8192, 4096, 0));
	CHECK(cow_close(img) == 0);
	printf("%s%s: every data change refused on a KEEP_BITMAPS open (-EPERM), grow and shrink work\n",
	       fmt, with_backing ? " over a backing file" : "");
}

int main(void)
{
	char cmd[64];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	one("qcow2", false);
	one("qcow2", true);
	one("raw", false);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%s\n", failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}
