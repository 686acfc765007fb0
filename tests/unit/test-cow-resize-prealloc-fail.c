/* tests/unit/test-cow-resize-prealloc-fail.c — cow_grow_prealloc failing
 * after the new area's first run was mapped (cow/resize.c prealloc_area
 * and undo_area; cow.h I14, I17).
 *
 * A grow of a 1 MiB image of 512-byte clusters to 601 MiB needs two runs
 * (PREALLOC_RUN, 2^20 clusters: 512 MiB, then 89 MiB). The second fails:
 *  - metadata: a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) of 560
 *    MiB lets the first run, its refcount blocks and its L2 tables in and
 *    stops the file's extension over the second (EFBIG);
 *  - falloc: this program's fallocate answers the second reservation with
 *    ENOSPC (the first, 512 MiB, is made for real).
 * Asserted: the call fails with a message naming the file and the cause;
 * the first run was placed (the file was extended / reserved past 512 MiB
 * first: the failure is in the second run); the size is unchanged; the old
 * guest bytes read as before and no guest cluster past the old end is
 * mapped any more (before the fix the first run stayed mapped past the
 * old size: 2^20 clusters and their L2 tables allocated for nothing, the
 * file 520 MiB long); the image takes writes; after cow_close cow_check
 * finds no corruption and the same allocated clusters as before, leaks
 * (none expected) are removed by COW_REPAIR_LEAKS, the file is cut back
 * and its blocks given back (falloc's 512 MiB reserved and the L2 tables
 * punched, the refcount blocks placed for the runs dropped): less than 1
 * MiB longer and 1 MiB more in use than before (before the fix 549 MiB
 * long, 12 MiB more in use with metadata, 525 MiB with falloc);
 * `qemu-img check` agrees when qemu-img is installed; the same
 * grow then succeeds and checks clean. */
#include "cow/map.h"
#include "cow/qcow2.h"
#include "tests/helpers/cowfill.h"
#include "tests/helpers/fullfs.h"
#include "tests/unit/test-file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define MIB (1ull << 20)

static char dir[] = "/var/tmp/cowrspfail.XXXXXX";

/* fallocate and ftruncate of this program (cow/ is linked statically, so
 * these override libc's): the @fail_nth reservation (mode 0) fails with
 * ENOSPC (0: none); the largest reservation end and ftruncate length seen */
static unsigned fail_nth, nfalloc;
static uint64_t max_falloc_end, max_trunc;

int fallocate(int fd, int mode, off_t off, off_t len)
{
	if (mode == 0) {
		if (fail_nth && ++nfalloc == fail_nth) {
			errno = ENOSPC;
			return -1;
		}
		if ((uint64_t)(off + len) > max_falloc_end)
			max_falloc_end = (uint64_t)(off + len);
	}
	return (int)syscall(SYS_fallocate, fd, mode, off, len);
}

int ftruncate(int fd, off_t len)
{
	if ((uint64_t)len > max_trunc)
		max_trunc = (uint64_t)len;
	return (int)syscall(SYS_ftruncate, fd, len);
}

/* cow_check of @path with @repair: 0 corruptions; *leaks what it found. */
static bool check_ok(const char *path, enum cow_repair repair, uint64_t *leaks, uint64_t *alloc)
{
	struct cow_check_res r;
	struct ut_err err;
	bool ok;

	memset(&r, 0, sizeof(r));
	ok = cow_check(path, repair, &r, &err) == 0 && !r.corruptions;
	*leaks = r.leaks;
	if (alloc)
		*alloc = r.allocated_clusters;
	if (!ok || r.leaks)
		fprintf(stderr, "%s: %llu corruptions, %llu leaks (%llu fixed)\n%.*s\n", path,
			(unsigned long long)r.corruptions, (unsigned long long)r.leaks,
			(unsigned long long)r.leaks_fixed, (int)r.msgs.len,
			r.msgs.data ? (char *)r.msgs.data : "");
	ut_buf_release(&r.msgs);
	return ok;
}

static void fail_midway(enum cow_prealloc_mode mode)
{
	const uint64_t old = MIB, size = 601 * MIB, first = old / 512;
	char path[200], cmd[300];
	struct cow_create_opts o = { .size = old, .cluster_size = 512 };
	struct cow_img *img = NULL;
	struct ut_err err;
	uint64_t leaks, alloc0 = 0, alloc = 0, sz0, used0;
	int ret;

	snprintf(path, sizeof(path), "%s/%s.qcow2", dir, mode == COW_PREALLOC_METADATA ? "metadata" : "falloc");
	ut_err_clear(&err);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(test_write_pat(img, 0, old - 4096, 0x61) == 0);
	CHECK(test_write_pat(img, old - 512, 512, 0xa5) == 0);
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(check_ok(path, COW_REPAIR_NONE, &leaks, &alloc0) && leaks == 0);
	sz0 = file_size(path);
	used0 = used_bytes(path);

	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	max_trunc = max_falloc_end = 0;
	nfalloc = 0;
	if (mode == COW_PREALLOC_METADATA)
		CHECK(test_fsize_limit(560 * MIB) == 0);
	else
		fail_nth = 2;
	ret = cow_grow_prealloc(img, size, mode, &err);
	test_space_back(NULL);
	fail_nth = 0;
	fprintf(stderr, "%s: %d: %s\n", path, ret, err.msg);
	CHECK(ret == (mode == COW_PREALLOC_METADATA ? -EFBIG : -ENOSPC));
	CHECK(strstr(err.msg, path) != NULL);
	CHECK(strstr(err.msg, strerror(mode == COW_PREALLOC_METADATA ? EFBIG : ENOSPC)) != NULL);
	/* the first run (512 MiB) was placed before the failure */
	if (mode == COW_PREALLOC_METADATA)
		CHECK(max_trunc >= old + 512 * MIB);
	else
		CHECK(nfalloc == 2 && max_falloc_end >= old + 512 * MIB);
	CHECK(cow_size(img) == old);
	CHECK(test_reads_as(img, 0, old - 4096, 0x61));
	CHECK(test_reads_as(img, old - 4096, 4096 - 512, 0));
	CHECK(test_reads_as(img, old - 512, 512, 0xa5));
	/* nothing past the old end stays mapped: the first and last cluster
	 * of the first run, the first of the second */
	for (uint64_t c = first; c <= first + (1ull << 20); c += (1ull << 20) - 1) {
		uint64_t e = 1, bmp;

		CHECK(cow_get_entry(img, c, &e, &bmp, NULL, &err) == 0);
		if (e)
			fprintf(stderr, "guest cluster %llu still mapped: 0x%llx\n",
				(unsigned long long)c, (unsigned long long)e);
		CHECK(e == 0);
	}
	/* the image goes on */
	CHECK(test_write_pat(img, old - 4096, 1024, 0x3c) == 0);
	CHECK(cow_close(img) == 0);
	img = NULL;

	CHECK(check_ok(path, COW_REPAIR_NONE, &leaks, &alloc));
	/* as before: the written 1 KiB is two new clusters */
	CHECK(alloc == alloc0 + 2);
	if (leaks) {
		CHECK(check_ok(path, COW_REPAIR_LEAKS, &leaks, NULL));
		CHECK(check_ok(path, COW_REPAIR_NONE, &leaks, NULL) && leaks == 0);
	}
	/* the file cut back and the blocks given back (the run's, falloc's
	 * 512 MiB reserved, and its L2 tables' punched, the refcount blocks
	 * placed for the runs dropped): what stays is the grown L1 table
	 * (601 MiB of 512-byte clusters: 150 KiB) and its refcounts */
	fprintf(stderr, "%s: file %llu -> %llu bytes, %llu -> %llu used\n", path,
		(unsigned long long)sz0, (unsigned long long)file_size(path),
		(unsigned long long)used0, (unsigned long long)used_bytes(path));
	CHECK(file_size(path) < sz0 + MIB);
	CHECK(used_bytes(path) < used0 + MIB);
	if (system("qemu-img --version >/dev/null 2>&1") == 0) {
		snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s'", path);
		CHECK(system(cmd) == 0);
	}
	CHECK(cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) == 0);
	if (!img)
		return;
	CHECK(cow_size(img) == old);
	CHECK(test_reads_as(img, 0, old - 4096, 0x61));
	CHECK(test_reads_as(img, old - 4096, 1024, 0x3c));
	CHECK(test_reads_as(img, old - 512, 512, 0xa5));
	cow_close(img);
	img = NULL;

	/* the same grow with the space there */
	CHECK(cow_open(path, "qcow2", 0, &img, &err) == 0);
	if (!img)
		return;
	CHECK(cow_grow_prealloc(img, size, mode, &err) == 0);
	CHECK(cow_size(img) == size);
	CHECK(test_reads_as(img, old - 512, 512, 0xa5));
	CHECK(test_reads_as(img, size - MIB, MIB, 0));
	CHECK(cow_close(img) == 0);
	CHECK(test_checks_clean(path));
	unlink(path);
}

int main(void)
{
	char cmd[64];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	fail_midway(COW_PREALLOC_METADATA);
	fail_midway(COW_PREALLOC_FALLOC);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	if (failures) {
		fprintf(stderr, "%d failures\n", failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
