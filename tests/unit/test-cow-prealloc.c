/* tests/unit/test-cow-prealloc.c — preallocation ahead of the end of the
 * file (cow/prealloc.c, cow.h I12): writes across several preallocation
 * chunks keep st_size a chunk ahead of the data (a hole) while st_blocks
 * covers the reserved tail; cow_close frees the tail (size and blocks then match an
 * image written with COWVM_COW_PREALLOC=0); reopening and writing on works
 * and the content is right; partial clusters written into the reserved area
 * (the I10 shortcut) read zeros around the new bytes and, after close, take
 * no more disk than without preallocation; after a writer is
 * killed (fork, write, _exit without close) the file checks clean with
 * cow_check and `qemu-img check` / `cowvm image check` when available, is
 * reopened, written and closed, which frees the tail the dead writer left.
 * With O_DIRECT (cache=none), as without it, the file's size is kept ahead
 * of the clusters allocated (sparse, so new clusters are not direct writes past
 * the end), partial or whole; close sets it back to the end of the last
 * cluster (the size without preallocation), and a killed writer leaves a
 * sparse tail that checks clean and is reused.
 * Skips (77) when the file system of the temp dir has no fallocate. */
#include "cow/qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define DISK (256ull << 20)
#define WR   (256u << 10)

static char dir[] = "/var/tmp/cowpre.XXXXXX";

static uint8_t pat(uint64_t off, unsigned gen)
{
	return (uint8_t)((off >> 9) * 31 + (off >> 17) + gen * 101 + 1);
}

static void fill(uint8_t *b, uint64_t len, uint64_t off, unsigned gen)
{
	for (uint64_t i = 0; i < len; i += 512)
		memset(b + i, pat(off + i, gen), len - i < 512 ? len - i : 512);
}

static int stat_path(const char *p, struct stat *st)
{
	return stat(p, st);
}

/* Write [from, to) in WR pieces, generation @gen; count preallocation
 * chunks and check st_size/st_blocks on the way. */
static void write_range(struct cow_img *img, uint64_t from, uint64_t to, unsigned gen,
			int *chunks)
{
	uint8_t *b = malloc(WR);
	uint64_t last_end = img->prealloc_end;
	struct ut_err err;
	struct stat st;

	for (uint64_t off = from; off < to; off += WR) {
		fill(b, WR, off, gen);
		CHECK(cow_write(img, b, WR, off, &err) == 0);
		if (img->prealloc_end != last_end) {
			last_end = img->prealloc_end;
			(*chunks)++;
			CHECK(fstat(img->fd, &st) == 0);
			/* KEEP_SIZE: the blocks reach the reserved end; the
			 * size is set ahead (a hole) past the data */
			CHECK(img->size_end >= img->file_size);
			CHECK((uint64_t)st.st_size == img->size_end);
			CHECK(img->prealloc_end > img->file_size);
			CHECK((uint64_t)st.st_blocks * 512 >= img->prealloc_end - (1u << 20));
		}
	}
	free(b);
}

/* What a range should read as: @want gets the @len bytes expected at @off. */
typedef void (*expect_fn)(uint8_t *want, uint64_t len, uint64_t off, const void *ctx);

/* Read @n ranges of @len bytes, the i-th at @off0 + i * @stride, from @path
 * (opened read-only) and compare each with @expect. Returns 0, or 1 after
 * printing where the content differs. */
static int verify_ranges(const char *path, uint64_t off0, uint64_t n, uint64_t stride, uint64_t len,
			 expect_fn expect, const void *ctx)
{
	struct cow_img *img;
	struct ut_err err;
	uint8_t *b = malloc(len), *want = malloc(len);
	int bad = 0;

	if (cow_open(path, NULL, COW_O_RDONLY, &img, &err) < 0) {
		fprintf(stderr, "%s\n", err.msg);
		bad = 1;
		goto out;
	}
	for (uint64_t i = 0; i < n && !bad; i++) {
		uint64_t off = off0 + i * stride;
		expect(want, len, off, ctx);
		if (cow_read(img, b, len, off, &err) < 0 || memcmp(b, want, len)) {
			fprintf(stderr, "content differs in the %llu bytes at %llu\n",
				(unsigned long long)len, (unsigned long long)off);
			bad = 1;
		}
	}
	cow_close(img);
out:
	free(b);
	free(want);
	return bad;
}

struct gens { unsigned lo; uint64_t split; unsigned hi; };

static void expect_gens(uint8_t *want, uint64_t len, uint64_t off, const void *ctx)
{
	const struct gens *g = ctx;

	fill(want, len, off, off < g->split ? g->lo : g->hi);
}

/* [0, @len) holds generation @gen_lo below @split and @gen_hi above. */
static int verify(const char *path, uint64_t len, unsigned gen_lo, uint64_t split, unsigned gen_hi)
{
	struct gens g = { gen_lo, split, gen_hi };

	return verify_ranges(path, 0, len / WR, WR, WR, expect_gens, &g);
}

static void check_clean(const char *path, bool leaks_ok)
{
	struct cow_check_res r;
	struct ut_err err;
	char cmd[1200];
	const char *cowvm = getenv("COWVM");
	int rc;

	memset(&r, 0, sizeof(r));
	CHECK(cow_check(path, COW_REPAIR_NONE, &r, &err) == 0);
	CHECK(r.corruptions == 0);
	CHECK(leaks_ok || r.leaks == 0);
	if (r.corruptions || (!leaks_ok && r.leaks))
		fprintf(stderr, "%s", r.msgs.data ? (char *)r.msgs.data : "");
	ut_buf_release(&r.msgs);
	if (system("qemu-img --version >/dev/null 2>&1") == 0) {
		snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s'", path);
		rc = system(cmd);
		rc = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
		/* 0 clean, 3 leaks only */
		CHECK(rc == 0 || (leaks_ok && rc == 3));
	}
	if (cowvm && access(cowvm, X_OK) == 0) {
		snprintf(cmd, sizeof(cmd), "'%s' image check '%s' >/dev/null", cowvm, path);
		rc = system(cmd);
		CHECK(leaks_ok || (WIFEXITED(rc) && WEXITSTATUS(rc) == 0));
	}
}

/* After close an image written with preallocation has the size of the
 * same writes without it (@ref), or that size rounded up to the end of its
 * last 64 KiB cluster (close truncates a size set ahead to a cluster
 * boundary; without it a partial last cluster, the I10 shortcut, may end
 * the file inside the cluster), and at most @slack more 512-byte blocks
 * (extent tree blocks). */
static void same_as_reference(const char *what, const struct stat *st, const struct stat *ref,
			      long long slack)
{
	bool size_ok = st->st_size == ref->st_size ||
		       (st->st_size % 65536 == 0 && st->st_size > ref->st_size &&
			st->st_size - ref->st_size < 65536);

	CHECK(size_ok);
	CHECK(st->st_blocks <= ref->st_blocks + slack);
	if (!size_ok || st->st_blocks > ref->st_blocks + slack)
		fprintf(stderr, "%s: size %lld blocks %lld, without preallocation %lld / %lld\n", what,
			(long long)st->st_size, (long long)st->st_blocks, (long long)ref->st_size,
			(long long)ref->st_blocks);
}

/* Write the same thing with preallocation off: the reference for the size
 * and blocks after close. */
static void reference(const char *path, uint64_t len, struct stat *st)
{
	struct cow_create_opts o = { .size = DISK };
	struct cow_img *img;
	struct ut_err err;
	int chunks = 0;

	setenv("COWVM_COW_PREALLOC", "0", 1);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, NULL, 0, &img, &err) == 0);
	write_range(img, 0, len, 1, &chunks);
	CHECK(chunks == 0 && img->prealloc_end == 0);
	CHECK(cow_close(img) == 0);
	unsetenv("COWVM_COW_PREALLOC");
	CHECK(stat_path(path, st) == 0);
}

/* Partial clusters written into the reserved area (the I10 shortcut) read
 * zeros around the new bytes and, after close, use no more disk than
 * without preallocation (the never-written rest is punched). */
static void sparse_partial(const char *path, bool prealloc, struct stat *st)
{
	struct cow_create_opts o = { .size = DISK };
	struct cow_img *img;
	struct ut_err err;
	uint8_t *b = malloc(65536), *z = calloc(1, 65536);

	if (!prealloc)
		setenv("COWVM_COW_PREALLOC", "0", 1);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, NULL, 0, &img, &err) == 0);
	fill(b, 65536, 0, 3);
	for (uint64_t c = 0; c < 16; c++)                     /* dense: reserves ahead */
		CHECK(cow_write(img, b, 65536, c * 65536, &err) == 0);
	CHECK(prealloc == (img->prealloc_end > img->file_size));
	for (uint64_t c = 16; c < 16 + 64; c++)               /* I10: 4 KiB each */
		CHECK(cow_write(img, b, 4096, c * 65536 + 8192, &err) == 0);
	/* sparse writes reserve no further */
	CHECK(!prealloc || img->prealloc_end < img->file_size);
	CHECK(cow_read(img, b, 65536, 16 * 65536, &err) == 0);
	CHECK(!memcmp(b, z, 8192) && !memcmp(b + 12288, z, 65536 - 12288));
	CHECK(cow_close(img) == 0);
	CHECK(stat_path(path, st) == 0);
	CHECK(cow_open(path, NULL, COW_O_RDONLY, &img, &err) == 0);
	for (uint64_t c = 16; c < 16 + 64; c++) {
		CHECK(cow_read(img, b, 65536, c * 65536, &err) == 0);
		CHECK(!memcmp(b, z, 8192) && !memcmp(b + 12288, z, 65536 - 12288));
		fill(z, 4096, 0, 3);
		CHECK(!memcmp(b + 8192, z, 4096));
		memset(z, 0, 4096);
	}
	cow_close(img);
	check_clean(path, false);
	unsetenv("COWVM_COW_PREALLOC");
	free(b);
	free(z);
}

static void test_sparse_partial(const char *path, const char *ref)
{
	struct stat st, st_ref;

	sparse_partial(path, true, &st);
	sparse_partial(ref, false, &st_ref);
	same_as_reference("sparse", &st, &st_ref, 64);
}

/* A writer killed without cow_close: the reserved tail stays (past st_size,
 * invisible to checkers); reopening works, writing on reuses the space and
 * close frees the tail. */
static void test_killed(const char *path)
{
	struct cow_create_opts o = { .size = DISK };
	struct cow_img *img;
	struct ut_err err;
	struct stat st;
	uint64_t end[2] = { 0, 0 };   /* the writer's file_size and prealloc_end */
	pid_t pid;
	int status, chunks = 0, pfd[2];

	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(pipe(pfd) == 0);
	pid = fork();
	if (pid == 0) {
		int c = 0;
		close(pfd[0]);
		if (cow_open(path, NULL, 0, &img, &err) < 0)
			_exit(2);
		write_range(img, 0, 8u << 20, 4, &c);
		if (cow_flush(img, &err) < 0)
			_exit(3);
		/* after the flush: lost with the process (metadata only in
		 * memory), the data clusters are leaked or free */
		write_range(img, 8u << 20, 12u << 20, 5, &c);
		end[0] = img->file_size;
		end[1] = img->prealloc_end;
		if (write(pfd[1], end, sizeof(end)) != (ssize_t)sizeof(end))
			_exit(5);
		_exit(failures || c < 1 ? 4 : 0);
	}
	close(pfd[1]);
	CHECK(read(pfd[0], end, sizeof(end)) == (ssize_t)sizeof(end));
	close(pfd[0]);
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(stat_path(path, &st) == 0);
	/* the dead writer's reserved blocks are still there, up to its
	 * reserved end, and so is its size set ahead (a hole) past the data */
	CHECK(end[1] > end[0]);
	CHECK((uint64_t)st.st_blocks * 512 >= end[1] - (1u << 20));
	CHECK((uint64_t)st.st_size > end[0]);
	check_clean(path, true);
	CHECK(verify(path, 8u << 20, 4, 8u << 20, 4) == 0);
	/* reopen, write on (over the lost range and past it), close */
	CHECK(cow_open(path, NULL, 0, &img, &err) == 0);
	write_range(img, 8u << 20, 40u << 20, 6, &chunks);
	CHECK(chunks >= 1);
	CHECK(cow_close(img) == 0);
	CHECK(stat_path(path, &st) == 0);
	CHECK((uint64_t)st.st_blocks * 512 <= (uint64_t)st.st_size + (256u << 10));
	CHECK(verify(path, 40u << 20, 4, 8u << 20, 6) == 0);
	check_clean(path, true);
}

/* O_DIRECT: @n writes of @len bytes at cluster @first + i*@step, offset
 * @in inside each; after each one the size set ahead covers every cluster
 * allocated (so the write did not extend the file). */
static void direct_writes(struct cow_img *img, uint64_t first, uint64_t n, uint64_t step,
			  uint64_t in, uint32_t len, unsigned gen)
{
	uint8_t *b = aligned_alloc(4096, len);
	struct ut_err err;
	struct stat st;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t off = (first + i * step) * 65536 + in;
		fill(b, len, off, gen);
		CHECK(cow_write(img, b, len, off, &err) == 0);
		CHECK(fstat(img->fd, &st) == 0);
		/* every cluster allocated lies inside the file (reused free
		 * space after a crash, or a size set ahead) */
		CHECK((uint64_t)st.st_size >= img->end_cluster << img->cluster_bits);
		CHECK(!img->size_end || (uint64_t)st.st_size == img->size_end);
	}
	free(b);
}

struct piece { uint64_t in; uint32_t len; unsigned gen; };

static void expect_piece(uint8_t *want, uint64_t len, uint64_t off, const void *ctx)
{
	const struct piece *p = ctx;

	memset(want, 0, len);
	fill(want + p->in, p->len, off + p->in, p->gen);
}

/* Clusters @first + i * @step (i < @n) hold @len bytes of generation @gen
 * at @in and zeros around them. */
static int direct_verify(const char *path, uint64_t first, uint64_t n, uint64_t step, uint64_t in,
			 uint32_t len, unsigned gen)
{
	struct piece p = { in, len, gen };

	return verify_ranges(path, first * 65536, n, step * 65536, 65536, expect_piece, &p);
}

/* The same writes with and without preallocation: partial (4 KiB in every
 * 4th cluster), then whole clusters past them. */
static void direct_image(const char *path, bool prealloc, struct stat *st)
{
	struct cow_create_opts o = { .size = DISK };
	struct cow_img *img;
	struct ut_err err;

	if (!prealloc)
		setenv("COWVM_COW_PREALLOC", "0", 1);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, NULL, COW_O_DIRECT, &img, &err) == 0);
	if (prealloc) {
		direct_writes(img, 0, 256, 4, 8192, 4096, 7);
		direct_writes(img, 1024, 384, 1, 0, 65536, 8);
		CHECK(img->size_end > img->file_size);
	} else {
		uint8_t *b = aligned_alloc(4096, 65536);
		for (uint64_t i = 0; i < 256; i++) {
			fill(b, 4096, i * 4 * 65536 + 8192, 7);
			CHECK(cow_write(img, b, 4096, i * 4 * 65536 + 8192, &err) == 0);
		}
		for (uint64_t i = 0; i < 384; i++) {
			fill(b, 65536, (1024 + i) * 65536, 8);
			CHECK(cow_write(img, b, 65536, (1024 + i) * 65536, &err) == 0);
		}
		CHECK(img->size_end == 0);
		free(b);
	}
	CHECK(cow_close(img) == 0);
	unsetenv("COWVM_COW_PREALLOC");
	CHECK(stat_path(path, st) == 0);
}

static void test_direct(const char *path, const char *ref)
{
	struct cow_create_opts o = { .size = DISK };
	struct cow_img *img;
	struct ut_err err;
	struct stat st, st_ref;
	pid_t pid;
	int status;

	direct_image(path, true, &st);
	direct_image(ref, false, &st_ref);
	/* after close: the size without preallocation, no more blocks */
	same_as_reference("direct", &st, &st_ref, 128);
	CHECK(direct_verify(path, 0, 256, 4, 8192, 4096, 7) == 0);
	CHECK(direct_verify(path, 1024, 384, 1, 0, 65536, 8) == 0);
	check_clean(path, false);

	/* killed after a flush: a sparse tail past the last cluster */
	CHECK(cow_create(path, &o, &err) == 0);
	pid = fork();
	if (pid == 0) {
		if (cow_open(path, NULL, COW_O_DIRECT, &img, &err) < 0)
			_exit(2);
		direct_writes(img, 0, 64, 1, 0, 65536, 9);
		if (cow_flush(img, &err) < 0)
			_exit(3);
		direct_writes(img, 64, 64, 2, 4096, 4096, 10);
		_exit(failures ? 4 : 0);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(stat_path(path, &st) == 0);
	CHECK((uint64_t)st.st_size > (64 + 2) * 65536ull + (512u << 10));
	check_clean(path, true);
	CHECK(direct_verify(path, 0, 64, 1, 0, 65536, 9) == 0);
	/* reopen (the tail is free space: reused), write on, close */
	CHECK(cow_open(path, NULL, COW_O_DIRECT, &img, &err) == 0);
	direct_writes(img, 200, 256, 1, 0, 65536, 11);
	CHECK(cow_close(img) == 0);
	CHECK(direct_verify(path, 0, 64, 1, 0, 65536, 9) == 0);
	CHECK(direct_verify(path, 200, 256, 1, 0, 65536, 11) == 0);
	check_clean(path, true);
}

int main(void)
{
	char path[600], ref[600], tmp[600];
	struct cow_create_opts o = { .size = DISK };
	struct cow_img *img;
	struct ut_err err;
	struct stat st, st_ref;
	int chunks = 0, fd;

	if (!mkdtemp(dir))
		return 1;
	snprintf(path, sizeof(path), "%s/img.qcow2", dir);
	snprintf(ref, sizeof(ref), "%s/ref.qcow2", dir);
	snprintf(tmp, sizeof(tmp), "%s/probe", dir);
	fd = open(tmp, O_RDWR | O_CREAT, 0600);
	if (fd < 0 || fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4096) < 0) {
		printf("no fallocate(FALLOC_FL_KEEP_SIZE) in %s: %s\n", dir, strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(tmp);
		rmdir(dir);
		return 77;
	}
	close(fd);
	unlink(tmp);
	unsetenv("COWVM_COW_PREALLOC");

	/* several chunks: 1 MiB at first, file size / 8 later */
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(cow_open(path, NULL, 0, &img, &err) == 0);
	write_range(img, 0, 24u << 20, 1, &chunks);
	CHECK(chunks >= 3);
	CHECK(cow_close(img) == 0);
	CHECK(stat_path(path, &st) == 0);
	reference(ref, 24u << 20, &st_ref);
	/* after close: as if there had been no preallocation */
	same_as_reference("dense", &st, &st_ref, 128);
	CHECK((uint64_t)st.st_blocks * 512 <= (uint64_t)st.st_size + (256u << 10));
	check_clean(path, false);

	/* reopen and keep writing: overwrite the tail of the old data, then
	 * new data past it */
	chunks = 0;
	CHECK(cow_open(path, NULL, 0, &img, &err) == 0);
	CHECK(img->prealloc_end == 0);
	write_range(img, 16u << 20, 64u << 20, 2, &chunks);
	CHECK(chunks >= 2);
	CHECK(cow_close(img) == 0);
	CHECK(stat_path(path, &st) == 0);
	CHECK((uint64_t)st.st_blocks * 512 <= (uint64_t)st.st_size + (256u << 10));
	CHECK(verify(path, 64u << 20, 1, 16u << 20, 2) == 0);
	check_clean(path, false);

	/* a read-only open never reserves nor truncates */
	CHECK(cow_open(path, NULL, COW_O_RDONLY, &img, &err) == 0);
	CHECK(img->prealloc_end == 0 && !img->prealloc_trim);
	cow_close(img);

	test_sparse_partial(path, ref);
	test_killed(path);
	fd = open(tmp, O_RDWR | O_CREAT | O_DIRECT, 0600);
	if (fd >= 0) {
		close(fd);
		unlink(tmp);
		test_direct(path, ref);
	} else {
		printf("no O_DIRECT in %s: the cache=none part is not run\n", dir);
	}

	unlink(path);
	unlink(ref);
	rmdir(dir);
	if (failures)
		fprintf(stderr, "%d failures\n", failures);
	return failures ? 1 : 0;
}
