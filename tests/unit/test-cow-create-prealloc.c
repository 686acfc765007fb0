/* tests/unit/test-cow-create-prealloc.c — cow_create with preallocation
 * (cow_create_opts.preallocation, `cowvm image create --preallocation`):
 * for metadata, falloc and full, with standard and extended L2 entries,
 * versions 2 and 3, cluster sizes 512 B to 2 MiB, refcount widths 1 and
 * 64, without a backing file and over a raw or qcow2 one:
 *  - every cluster of the disk is allocated (cow_check: all clusters
 *    referenced, no leak, no corruption) and the data clusters are one
 *    contiguous run in guest order (a whole-cluster write goes in place:
 *    cow_map_inplace after it names host offset data_start + off);
 *  - the disk reads as before: zeros, or the backing file;
 *  - disk usage: metadata keeps the data area a hole, falloc and full
 *    hold blocks for all of it;
 *  - writes (whole clusters, 4 KiB, unaligned pieces, the partial last
 *    cluster) allocate nothing: the file's size stays, reopened they read
 *    back as written over the backing file, and the image checks clean;
 *  - an image made with falloc keeps its reserved blocks after it grew and
 *    was written at its new end (close used to punch every unwritten
 *    extent in the file, the image's own preallocation included);
 *  - full writes its zeros with O_DIRECT where it can, through the page
 *    cache from where a direct write is refused (EINVAL);
 *  - refused: preallocation over a backing file without extended L2
 *    entries, an unknown mode; a create cut short (RLIMIT_FSIZE) fails
 *    with a message and leaves no image. */
#include "cow/qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

static char dir[] = "/var/tmp/cowcpre.XXXXXX";

#define DISK ((8ull << 20) + 3072)   /* a partial last cluster for most sizes */

static const char *const mode_name[] = { "off", "metadata", "falloc", "full" };

struct cfg {
	uint32_t cs;
	bool ext;
	int version;
	uint32_t rc_bits;
	int backing;          /* 0 none, 1 raw, 2 qcow2 */
};

static uint8_t base_byte(uint64_t off)
{
	return (uint8_t)(off / 512 * 7 + 3);
}

static uint8_t new_byte(uint64_t off)
{
	return (uint8_t)(off / 512 * 13 + 0x41);
}

static int make_backing(const char *path, int kind)
{
	struct cow_create_opts o = { .size = DISK, .cluster_size = 65536 };
	struct cow_img *img = NULL;
	struct ut_err err;
	uint8_t *buf = malloc(DISK);
	int ret = -1;

	ut_err_clear(&err);
	for (uint64_t i = 0; i < DISK; i++)
		buf[i] = base_byte(i);
	if (kind == 1) {
		int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0 && pwrite(fd, buf, DISK, 0) == (ssize_t)DISK)
			ret = 0;
		if (fd >= 0)
			close(fd);
	} else if (cow_create(path, &o, &err) == 0 && cow_open(path, "qcow2", 0, &img, &err) == 0) {
		/* the backing file leaves its first 64 KiB unallocated: zeros */
		memset(buf, 0, 65536);
		ret = cow_write(img, buf + 65536, DISK - 65536, 65536, &err);
		if (cow_close(img) < 0)
			ret = -1;
	}
	if (ret < 0)
		fprintf(stderr, "backing %s: %s\n", path, err.msg);
	if (kind == 2)
		memset(buf, 0, 65536);
	free(buf);
	return ret;
}

/* What the disk reads as before any write. */
static uint8_t before(int backing, uint64_t off)
{
	if (!backing || (backing == 2 && off < 65536))
		return 0;
	return base_byte(off);
}

static void check_clean(const char *path, const char *what, bool all_allocated)
{
	struct cow_check_res r;
	struct ut_err err;

	memset(&r, 0, sizeof(r));
	ut_err_clear(&err);
	CHECK(cow_check(path, COW_REPAIR_NONE, &r, &err) == 0);
	if (r.corruptions || r.leaks)
		fprintf(stderr, "%s: %llu corruptions, %llu leaks: %.*s\n", what,
			(unsigned long long)r.corruptions, (unsigned long long)r.leaks,
			(int)r.msgs.len, r.msgs.data ? (const char *)r.msgs.data : "");
	CHECK(r.corruptions == 0 && r.leaks == 0);
	if (all_allocated) {
		if (r.allocated_clusters != r.total_clusters)
			fprintf(stderr, "%s: %llu of %llu clusters allocated\n", what,
				(unsigned long long)r.allocated_clusters, (unsigned long long)r.total_clusters);
		CHECK(r.allocated_clusters == r.total_clusters);
	}
	ut_buf_release(&r.msgs);
}

/* The writes: [off, len) pieces that cover every kind of partial write. */
static const struct { uint64_t off, len; } pieces[] = {
	{ 0, 65536 },                       /* a whole 64 KiB */
	{ 131072 + 4096, 4096 },            /* 4 KiB inside a cluster */
	{ 262144 + 1000, 3000 },            /* unaligned */
	{ (2ull << 20) - 512, 1024 },       /* across a 2 MiB boundary */
	{ (4ull << 20), 2ull << 20 },       /* 2 MiB */
	{ DISK - 5000, 5000 },              /* the end, partial last cluster */
};

static void run_cfg(const struct cfg *c, enum cow_prealloc_mode mode)
{
	char path[300], bpath[300], what[200];
	struct cow_create_opts o = { 0 };
	struct cow_img *img = NULL;
	struct ut_err err;
	struct stat st0, st1;
	uint8_t *buf = malloc(DISK), *want = malloc(DISK);
	uint64_t host = 0, n = 0, data_start = 0;
	int failed_before = failures;

	snprintf(what, sizeof(what), "cs %u %s v%d rc%u backing %d %s", c->cs, c->ext ? "ext" : "std",
		 c->version, c->rc_bits, c->backing, mode_name[mode]);
	snprintf(path, sizeof(path), "%s/img.qcow2", dir);
	snprintf(bpath, sizeof(bpath), "%s/base-%d", dir, c->backing);
	ut_err_clear(&err);
	o.size = DISK;
	o.cluster_size = c->cs;
	o.version = c->version;
	o.refcount_bits = c->rc_bits;
	o.extended_l2 = c->ext;
	o.preallocation = mode;
	if (c->backing) {
		o.backing = bpath;
		o.backing_fmt = c->backing == 1 ? "raw" : "qcow2";
	}
	if (cow_create(path, &o, &err) < 0) {
		fprintf(stderr, "%s: create: %s\n", what, err.msg);
		failures++;
		goto out;
	}
	check_clean(path, what, true);
	CHECK(stat(path, &st0) == 0);
	/* disk usage: the data area a hole, or blocks for all of it */
	if (mode == COW_PREALLOC_METADATA)
		CHECK((uint64_t)st0.st_blocks * 512 < (uint64_t)st0.st_size - DISK / 2);
	else
		CHECK((uint64_t)st0.st_blocks * 512 >= DISK);
	CHECK((uint64_t)st0.st_size >= DISK);

	CHECK(cow_open(path, NULL, 0, &img, &err) == 0);
	if (!img) {
		fprintf(stderr, "%s: open: %s\n", what, err.msg);
		goto out;
	}
	CHECK(cow_read(img, buf, DISK, 0, &err) == 0);
	for (uint64_t i = 0; i < DISK; i++) {
		want[i] = before(c->backing, i);
		if (buf[i] != want[i]) {
			fprintf(stderr, "%s: byte %llu reads %u, expected %u\n", what,
				(unsigned long long)i, buf[i], want[i]);
			failures++;
			break;
		}
	}
	for (size_t p = 0; p < sizeof(pieces) / sizeof(pieces[0]); p++) {
		for (uint64_t i = 0; i < pieces[p].len; i++)
			want[pieces[p].off + i] = new_byte(pieces[p].off + i);
		if (cow_write(img, want + pieces[p].off, pieces[p].len, pieces[p].off, &err) < 0) {
			fprintf(stderr, "%s: write %zu: %s\n", what, p, err.msg);
			failures++;
		}
	}
	/* the first 64 KiB and the 2 MiB piece went in place, contiguous
	 * from the data area's start (cluster i at data_start + i * cs) */
	CHECK(cow_map_inplace(img, 0, 65536, &host, &n, &err) == 0);
	CHECK(n > 0);   /* (up to an L2 table's span: 32 KiB with 512 B clusters) */
	data_start = host;
	CHECK(data_start % c->cs == 0 && data_start + DISK <= (uint64_t)st0.st_size);
	for (uint64_t off = 4ull << 20; off < 6ull << 20; off += n) {
		n = 0;
		CHECK(cow_map_inplace(img, off, (6ull << 20) - off, &host, &n, &err) == 0);
		if (!n || host != data_start + off) {
			fprintf(stderr, "%s: %llu not in place at %llu (host %llu)\n", what,
				(unsigned long long)off, (unsigned long long)(data_start + off),
				(unsigned long long)host);
			failures++;
			break;
		}
	}
	CHECK(cow_close(img) == 0);
	img = NULL;
	CHECK(stat(path, &st1) == 0);
	if (st1.st_size != st0.st_size)
		fprintf(stderr, "%s: the file grew from %lld to %lld bytes\n", what,
			(long long)st0.st_size, (long long)st1.st_size);
	CHECK(st1.st_size == st0.st_size);
	if (mode != COW_PREALLOC_METADATA)
		CHECK((uint64_t)st1.st_blocks * 512 >= DISK);
	check_clean(path, what, true);
	CHECK(cow_open(path, NULL, COW_O_RDONLY, &img, &err) == 0);
	if (img && cow_read(img, buf, DISK, 0, &err) == 0 && memcmp(buf, want, DISK)) {
		for (uint64_t i = 0; i < DISK; i++)
			if (buf[i] != want[i]) {
				fprintf(stderr, "%s: after the writes byte %llu reads %u, expected %u\n", what,
					(unsigned long long)i, buf[i], want[i]);
				break;
			}
		failures++;
	}
out:
	if (failures != failed_before)
		fprintf(stderr, "  (in: %s)\n", what);
	cow_close(img);
	unlink(path);
	free(buf);
	free(want);
}

/* falloc, grow, write densely at the new end, close: the reserved data
 * area keeps its blocks. */
static void test_falloc_grow(void)
{
	struct cow_create_opts o = { .size = 32ull << 20, .preallocation = COW_PREALLOC_FALLOC };
	struct cow_img *img = NULL;
	struct ut_err err;
	struct stat st;
	char path[300];
	uint8_t *buf = malloc(1 << 20);
	uint64_t blocks0;

	ut_err_clear(&err);
	memset(buf, 0x5a, 1 << 20);
	snprintf(path, sizeof(path), "%s/grow.qcow2", dir);
	CHECK(cow_create(path, &o, &err) == 0);
	CHECK(stat(path, &st) == 0);
	blocks0 = (uint64_t)st.st_blocks;
	CHECK(blocks0 * 512 >= 32ull << 20);
	CHECK(cow_open(path, NULL, 0, &img, &err) == 0);
	CHECK(img && cow_grow(img, 96ull << 20, &err) == 0);
	for (uint64_t off = 32ull << 20; img && off < 64ull << 20; off += 1 << 20)
		CHECK(cow_write(img, buf, 1 << 20, off, &err) == 0);
	CHECK(cow_close(img) == 0);
	CHECK(stat(path, &st) == 0);
	if ((uint64_t)st.st_blocks < blocks0 + (32ull << 20) / 512)
		fprintf(stderr, "falloc + grow: %llu KiB used, expected >= %llu KiB\n",
			(unsigned long long)st.st_blocks / 2,
			(unsigned long long)(blocks0 / 2 + (32ull << 10)));
	CHECK((uint64_t)st.st_blocks >= blocks0 + (32ull << 20) / 512);
	check_clean(path, "falloc + grow", false);
	unlink(path);
	free(buf);
}

static void test_refused(void)
{
	struct cow_create_opts o = { .size = 1 << 20, .preallocation = COW_PREALLOC_FULL };
	struct ut_err err;
	char path[300], bpath[300];
	struct stat st;

	snprintf(path, sizeof(path), "%s/bad.qcow2", dir);
	snprintf(bpath, sizeof(bpath), "%s/base-1", dir);
	ut_err_clear(&err);
	o.backing = bpath;
	o.backing_fmt = "raw";
	CHECK(cow_create(path, &o, &err) == -EINVAL);
	CHECK(strstr(err.msg, "extended L2") != NULL);
	CHECK(stat(path, &st) < 0 && errno == ENOENT);
	ut_err_clear(&err);
	o.backing = NULL;
	o.preallocation = (enum cow_prealloc_mode)7;
	CHECK(cow_create(path, &o, &err) == -EINVAL);
	CHECK(strstr(err.msg, "preallocation") != NULL);
	CHECK(stat(path, &st) < 0 && errno == ENOENT);
}

/* A create that the file-size limit cuts short fails with a message, and
 * what it leaves is not an image (the header is written last). */
static void test_cut_short(void)
{
	char path[300];
	pid_t pid;
	int status = 0;

	snprintf(path, sizeof(path), "%s/cut.qcow2", dir);
	for (int mode = COW_PREALLOC_METADATA; mode <= COW_PREALLOC_FULL; mode++) {
		pid = fork();
		if (pid == 0) {
			struct rlimit rl = { 4u << 20, 4u << 20 };
			struct cow_create_opts o = { .size = 64ull << 20,
						     .preallocation = (enum cow_prealloc_mode)mode };
			struct ut_err err;
			int r;

			signal(SIGXFSZ, SIG_IGN);
			setrlimit(RLIMIT_FSIZE, &rl);
			ut_err_clear(&err);
			r = cow_create(path, &o, &err);
			_exit(r < 0 && err.msg[0] && strstr(err.msg, "cut.qcow2") ? 0 : 1);
		}
		CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		{
			struct cow_img *img = NULL;
			struct ut_err err;

			ut_err_clear(&err);
			CHECK(cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) < 0);
			cow_close(img);
		}
		unlink(path);
	}
}

/* full where direct writes are refused (EINVAL, as a file system without
 * O_DIRECT or with a larger alignment answers): this program's pwrite
 * (cow/ is linked statically, so it overrides libc's) refuses every write
 * on an O_DIRECT descriptor while refuse_direct is set; the zeros then go
 * through the page cache from where the refusal came. */
static bool refuse_direct;
static unsigned refused;

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	if (refuse_direct && (fcntl(fd, F_GETFL) & O_DIRECT)) {
		refused++;
		errno = EINVAL;
		return -1;
	}
	return syscall(SYS_pwrite64, fd, buf, n, off);
}

static void test_full_buffered(void)
{
	struct cow_create_opts o = { .size = 8ull << 20, .preallocation = COW_PREALLOC_FULL };
	struct cow_img *img = NULL;
	struct ut_err err;
	struct stat st;
	char path[300];
	uint8_t *buf = malloc(8u << 20);

	snprintf(path, sizeof(path), "%s/buffered.qcow2", dir);
	ut_err_clear(&err);
	refuse_direct = true;
	CHECK(cow_create(path, &o, &err) == 0);
	refuse_direct = false;
	CHECK(refused == 1);
	CHECK(stat(path, &st) == 0 && (uint64_t)st.st_blocks * 512 >= 8ull << 20);
	check_clean(path, "full without direct writes", true);
	CHECK(cow_open(path, NULL, COW_O_RDONLY, &img, &err) == 0);
	CHECK(img && cow_read(img, buf, 8u << 20, 0, &err) == 0);
	for (uint64_t i = 0; img && i < 8u << 20; i++)
		if (buf[i]) {
			fprintf(stderr, "full without direct writes: byte %llu is %u\n",
				(unsigned long long)i, buf[i]);
			failures++;
			break;
		}
	cow_close(img);
	unlink(path);
	free(buf);
}

int main(void)
{
	static const struct cfg cfgs[] = {
		{ 65536, false, 3, 16, 0 },
		{ 512, false, 3, 16, 0 },
		{ 65536, false, 2, 16, 0 },
		{ 65536, true, 3, 16, 0 },
		{ 65536, true, 3, 16, 1 },
		{ 65536, true, 3, 16, 2 },
		{ 16384, true, 3, 1, 2 },
		{ 2u << 20, true, 3, 64, 1 },
		{ 4096, false, 3, 64, 0 },
	};
	char p[300];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(p, sizeof(p), "%s/base-1", dir);
	if (make_backing(p, 1) < 0)
		return 1;
	snprintf(p, sizeof(p), "%s/base-2", dir);
	if (make_backing(p, 2) < 0)
		return 1;
	for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
		for (int m = COW_PREALLOC_METADATA; m <= COW_PREALLOC_FULL; m++)
			run_cfg(&cfgs[i], (enum cow_prealloc_mode)m);
	test_falloc_grow();
	test_full_buffered();
	test_refused();
	test_cut_short();
	snprintf(p, sizeof(p), "%s/base-1", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/base-2", dir);
	unlink(p);
	rmdir(dir);
	if (failures)
		fprintf(stderr, "%d failures\n", failures);
	return failures ? 1 : 0;
}
