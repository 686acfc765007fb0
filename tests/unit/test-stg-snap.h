/* tests/unit/test-stg-snap.h — shared by the external-snapshot tests
 * (test-stg-snapshot.c, test-stg-snapshot-chain.c,
 * test-stg-snapshot-posix.c, test-stg-snapshot-create.c): the failure
 * count and its CHECK macros, a shell command run, a byte pattern, the
 * model of a disk written to a file or compared with a device, an image
 * checked clean (cow_check and qemu-img check), the test disk's size, the four ways a device runs, a raw or qcow2 image made
 * and opened, a snapshot taken (prepare + commit), and the start and end
 * of main (a scratch directory in /var/tmp, PASS/FAIL).
 */
#ifndef TEST_STG_SNAP_H
#define TEST_STG_SNAP_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cow/cow.h"
#include "storage/blockdev.h"

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)
#define CHECKE(c, e) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed: %s\n", __FILE__, __LINE__, #c, (e)->msg); failures++; } } while (0)

#define DISK (4u << 20)

/* Set by main when qemu-img is there (ts_check_clean then runs it too). */
static bool ts_have_qemu __attribute__((unused));

/* Run a shell command (output discarded); its exit status, -1 if none. */
static inline int ts_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int ts_sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int n, r;

	va_start(ap, fmt);
	n = vsnprintf(cmd, sizeof(cmd) - 20, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(cmd) - 20)
		return -1;
	strcat(cmd, " >/dev/null 2>&1");
	r = system(cmd);
	return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

static inline void ts_fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 37 + i * 13 + (i >> 11));
}

static inline void ts_write_model(const char *path, const uint8_t *model)
{
	FILE *f = fopen(path, "wb");

	CHECK(f && fwrite(model, 1, DISK, f) == DISK);
	if (f)
		fclose(f);
}

static inline void ts_check_clean(const char *path)
{
	struct cow_check_res r;
	struct ut_err err;

	memset(&r, 0, sizeof(r));
	CHECKE(cow_check(path, COW_REPAIR_NONE, &r, &err) == 0 && r.corruptions == 0 && r.leaks == 0,
	       &err);
	ut_buf_release(&r.msgs);
	if (ts_have_qemu)
		CHECK(ts_sh("qemu-img check -q '%s'", path) == 0);
}

/* Read the whole disk through the device and compare with @model. */
static inline void ts_dev_compare(struct stg_dev *d, const uint8_t *model, const char *what)
{
	uint8_t *buf = aligned_alloc(4096, DISK);
	int r = stg_pread(d, buf, DISK, 0);

	CHECK(r == 0);
	if (r == 0 && memcmp(buf, model, DISK)) {
		for (uint64_t i = 0; i < DISK; i++)
			if (buf[i] != model[i]) {
				fprintf(stderr, "%s: content differs at %llu\n", what, (unsigned long long)i);
				break;
			}
		failures++;
	}
	free(buf);
}

/* The device's flags of run @i (0 .. TS_NFLAGSETS - 1): io_uring or the
 * worker threads, buffered or O_DIRECT. */
#define TS_NFLAGSETS 4
static inline unsigned ts_flagset(unsigned i)
{
	static const unsigned sets[TS_NFLAGSETS] = {
		0, STG_O_THREADS, STG_O_DIRECT, STG_O_DIRECT | STG_O_THREADS
	};

	return sets[i];
}

/* Make @path an image of @size bytes: when @raw a sparse raw file
 * (replacing whatever file is there), else a new qcow2 (cow_create's
 * defaults). Returns 0 or a negative errno with @err. */
static inline int ts_make_image(const char *path, bool raw, uint64_t size, struct ut_err *err)
{
	struct cow_create_opts o = { .size = size };
	int fd, ret = 0;

	if (!raw)
		return cow_create(path, &o, err);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return ut_errf_sys(err, -errno, "unable to create '%s'", path);
	if (ftruncate(fd, (off_t)size) < 0)
		ret = ut_errf_sys(err, -errno, "unable to size '%s'", path);
	close(fd);
	return ret;
}

/* @path made a DISK-byte image (ts_make_image) and opened with @flags:
 * the device, or NULL with a failure counted and told. */
static inline struct stg_dev *ts_make_open(const char *path, bool raw, unsigned flags)
{
	struct stg_dev *d = NULL;
	struct ut_err err;

	if (ts_make_image(path, raw, DISK, &err) < 0 || stg_open(path, NULL, flags, &d, &err) < 0) {
		fprintf(stderr, "%s\n", err.msg);   /* (it names @path) */
		failures++;
		return NULL;
	}
	return d;
}

/* An external snapshot of @d onto a new @overlay (prepare, then commit).
 * Returns 0, or -1 with a failure counted and told (a failed prepare or
 * commit aborted: @d keeps its image, the overlay removed). */
static inline int ts_snapshot(struct stg_dev *d, const char *overlay)
{
	struct stg_snapshot snap = { 0 };
	struct ut_err err;

	if (stg_snapshot_prepare(d, overlay, 0, &snap, &err) < 0) {
		fprintf(stderr, "snapshot onto '%s': prepare: %s\n", overlay, err.msg);
		failures++;
		stg_snapshot_abort(d, &snap);   /* what a failed prepare made */
		return -1;
	}
	if (stg_snapshot_commit(d, &snap, &err) < 0) {
		fprintf(stderr, "snapshot onto '%s': commit: %s\n", overlay, err.msg);
		failures++;
		stg_snapshot_abort(d, &snap);
		return -1;
	}
	return 0;
}

/* The start of main: the scratch directory @dir (a mkdtemp template,
 * changed in place) made. Returns 0, or -1 having said why. */
static inline int ts_start(char *dir)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return -1;
	}
	return 0;
}

static inline int ts_rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	return remove(path);
}

/* The end of main: without failures @dir and what is left in it removed,
 * else kept (and named); PASS or FAIL printed. Returns main's exit status
 * (0 pass, 1 fail). */
static inline int ts_end(const char *dir)
{
	if (!failures)
		nftw(dir, ts_rm_one, 16, FTW_DEPTH | FTW_PHYS);
	else
		fprintf(stderr, "files kept in %s\n", dir);
	printf("%s\n", failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}

#endif
