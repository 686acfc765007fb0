/* tests/helpers/stgsnap.c — external snapshots (storage/snapshot.c) under
 * kill -9, for tests/interop/storage-snapshot-crash.sh.
 *
 *   stgsnap write BASE OVPREFIX SEED LOG
 *       opens BASE (raw or qcow2, probed) through storage/ and, until
 *       killed, writes random tagged 4 KiB blocks (1..4 per request) of
 *       the first 8 MiB, flushes every 1..8 writes and takes an external
 *       snapshot every 5..40 writes onto OVPREFIX<k>.qcow2 (k = 1, 2,
 *       ...): half of them (chosen by the seed) stg_snapshot_create on a
 *       second thread while this one keeps writing and flushing, then,
 *       once it has returned, stg_snapshot_prepare and _commit; the others
 *       prepare and commit alone. Each
 *       block's 8-byte words all hold (block << 32 | generation). LOG gets,
 *       as they happen (write(2): a kill -9 keeps them): "W blk n gen"
 *       before a write is submitted, "F" once a flush (or a prepare, which
 *       flushes) has returned, "P k path" before a create or a prepare
 *       without create, "c k" once a create has returned, "C k" once a
 *       commit has returned. Environment: STGSNAP_DIRECT=1 (STG_O_DIRECT),
 *       STGSNAP_THREADS=1 (worker-thread engine). Never exits by itself
 *       unless something fails (exit 1, message on stderr), or, with
 *       STGSNAP_OPS=N, after N writes: a create still running is joined
 *       and its snapshot prepared and committed, the device closed, exit 0
 *       (a run recorded whole: storage-snapshot-powercut.sh).
 *   stgsnap verify BASE LOG
 *       the top is the last overlay LOG says was committed (else BASE).
 *       Opened read-only through storage/, every block must hold its value
 *       as of the last completed flush or the value of a write logged after
 *       it (with STGSNAP_SECTOR=512: each 512-byte sector of it, what a
 *       power cut may leave of a direct write), and the chain depth must be
 *       the number of commits + 1. Every
 *       overlay prepared after the top (a kill during create, prepare or
 *       before "C" was logged) that exists must open as qcow2 (an overlay
 *       is renamed to its name once complete: never a partial file
 *       there) and read back the same (it holds nothing of its own): a
 *       leftover is harmless. Exit 0, 1 on a mismatch (each printed), 2
 *       usage.
 *   stgsnap existing BASE OV
 *       one snapshot of BASE onto the existing overlay OV
 *       (STG_SNAP_EXISTING) on the io_uring engine. Exit 0, 3 when prepare
 *       fails, 4 when commit fails (the message on stdout).
 *   stgsnap commitfail BASE OV FLAG
 *       under failsync.so: a commit whose fdatasync of the raw image
 *       fails; every later flush must fail too (do_commitfail).
 *   stgsnap createfail BASE OV FLAG
 *       under failsync.so: a create whose fdatasync of the raw image
 *       fails: create fails, nothing at OV, and every later flush of the
 *       device fails (do_createfail).
 */
#include "storage/blockdev.h"
#include "cow/lock.h"
#include "tests/helpers/xorshift.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLK 4096u
#define NBLK 2048u   /* 8 MiB */

static int logfd = -1;

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	char line[4200];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) || write(logfd, line, (size_t)n) != n) {
		fprintf(stderr, "stgsnap: unable to write the log\n");
		exit(1);
	}
}

static unsigned dev_flags(void)
{
	unsigned f = 0;
	const char *e;

	if ((e = getenv("STGSNAP_DIRECT")) && !strcmp(e, "1"))
		f |= STG_O_DIRECT;
	if ((e = getenv("STGSNAP_THREADS")) && !strcmp(e, "1"))
		f |= STG_O_THREADS;
	return f;
}

/* A create running on its own thread. */
struct bg {
	struct stg_dev *d;
	char path[4096];
	struct stg_snapshot s;
	struct ut_err e;
	int r;
	int done;   /* __atomic */
};

static void *bg_main(void *arg)
{
	struct bg *b = arg;

	b->r = stg_snapshot_create(b->d, b->path, 0, &b->s, &b->e);
	__atomic_store_n(&b->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* prepare (after a create when @s holds one) and commit of snapshot @k
 * onto @path, logged ("F" after prepare's flush, "C k"). 0, or 1 with a
 * message. */
static int prepare_commit(struct stg_dev *d, unsigned k, const char *path, struct stg_snapshot *s)
{
	struct ut_err e = { 0, "" };
	int r;

	r = stg_snapshot_prepare(d, path, 0, s, &e);
	if (r < 0) {
		fprintf(stderr, "stgsnap: prepare: %s\n", e.msg);
		stg_snapshot_abort(d, s);   /* a failed prepare leaves the file to us */
		return 1;
	}
	logf_("F\n");
	r = stg_snapshot_commit(d, s, &e);
	if (r < 0) {
		fprintf(stderr, "stgsnap: commit: %s\n", e.msg);
		stg_snapshot_abort(d, s);
		return 1;
	}
	logf_("C %u\n", k);
	return 0;
}

static int do_write(const char *base, const char *prefix, uint64_t seed, const char *logpath)
{
	static struct bg bg;
	bool running = false;
	pthread_t th;
	struct stg_dev *d = NULL;
	struct ut_err e = { 0, "" };
	uint64_t rng = seed * 2654435761u + 1, gen = 0;
	unsigned k = 0, until_flush, until_snap;
	const char *ops = getenv("STGSNAP_OPS");
	uint64_t max_ops = ops ? strtoull(ops, NULL, 0) : 0;
	uint8_t *buf;
	int r;

	logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	if (logfd < 0 || posix_memalign((void **)&buf, 4096, 4 * BLK)) {
		perror(logpath);
		return 1;
	}
	r = stg_open(base, "auto", dev_flags(), &d, &e);
	if (r < 0) {
		fprintf(stderr, "stgsnap: %s\n", e.msg);
		return 1;
	}
	until_flush = 1 + test_xorshift64(&rng) % 8;
	until_snap = 5 + test_xorshift64(&rng) % 36;
	for (;;) {
		uint64_t blk = test_xorshift64(&rng) % NBLK, n = 1 + test_xorshift64(&rng) % 4;

		if (max_ops && gen == max_ops) {
			/* STGSNAP_OPS: done; a create running finishes */
			if (running) {
				pthread_join(th, NULL);
				if (bg.r < 0) {
					fprintf(stderr, "stgsnap: create: %s\n", bg.e.msg);
					return 1;
				}
				logf_("c %u\n", k);
				if (prepare_commit(d, k, bg.path, &bg.s))
					return 1;
			}
			stg_close(d);
			free(buf);
			close(logfd);
			return 0;
		}

		if (blk + n > NBLK)
			n = NBLK - blk;
		gen++;
		for (uint64_t b = 0; b < n; b++)
			for (unsigned w = 0; w < BLK / 8; w++)
				((uint64_t *)buf)[b * BLK / 8 + w] = (blk + b) << 32 | gen;
		logf_("W %llu %llu %llu\n", (unsigned long long)blk, (unsigned long long)n,
		      (unsigned long long)gen);
		r = stg_pwrite(d, buf, n * BLK, blk * BLK);
		if (r < 0) {
			fprintf(stderr, "stgsnap: write: %s\n", strerror(-r));
			return 1;
		}
		if (--until_flush == 0) {
			r = stg_flush(d);
			if (r < 0) {
				fprintf(stderr, "stgsnap: flush: %s\n", strerror(-r));
				return 1;
			}
			logf_("F\n");
			until_flush = 1 + test_xorshift64(&rng) % 8;
		}
		if (running && __atomic_load_n(&bg.done, __ATOMIC_ACQUIRE)) {
			/* the create (written on meanwhile) returned: the
			 * drained part (nothing in flight: every write here is
			 * synchronous) */
			pthread_join(th, NULL);
			running = false;
			if (bg.r < 0) {
				fprintf(stderr, "stgsnap: create: %s\n", bg.e.msg);
				return 1;
			}
			logf_("c %u\n", k);
			if (prepare_commit(d, k, bg.path, &bg.s))
				return 1;
			until_snap = 5 + test_xorshift64(&rng) % 36;
		} else if (!running && --until_snap == 0) {
			struct stg_snapshot s = { 0 };
			char path[4096];

			snprintf(path, sizeof(path), "%s%u.qcow2", prefix, ++k);
			logf_("P %u %s\n", k, path);
			if (test_xorshift64(&rng) % 2) {
				memset(&bg, 0, sizeof(bg));
				bg.d = d;
				snprintf(bg.path, sizeof(bg.path), "%s", path);
				if (pthread_create(&th, NULL, bg_main, &bg)) {
					fprintf(stderr, "stgsnap: pthread_create failed\n");
					return 1;
				}
				running = true;
				continue;
			}
			if (prepare_commit(d, k, path, &s))
				return 1;
			until_snap = 5 + test_xorshift64(&rng) % 36;
		}
	}
}

struct wr {
	uint64_t gen, seq;
};

struct blk {
	struct wr *w;
	size_t n, cap;
};

/* The value a block must hold, or one of those: its last write before the
 * last flush (0: none), or any write after it. */
static bool acceptable(const struct blk *b, uint64_t last_flush, uint64_t gen)
{
	uint64_t before = 0;

	for (size_t i = 0; i < b->n; i++) {
		if (b->w[i].seq > last_flush && b->w[i].gen == gen)
			return true;
		if (b->w[i].seq < last_flush)
			before = b->w[i].gen;
	}
	return gen == before;
}

/* Check every block of @path against the log. @depth: the chain depth
 * expected (0: any). Returns the number of mismatches, -1 when it does not
 * open. */
static int check_file(const char *path, const char *fmt, unsigned depth, struct blk *blks,
		      uint64_t last_flush, bool quiet_open)
{
	struct stg_dev *d = NULL;
	struct ut_err e = { 0, "" };
	struct stg_info info;
	uint64_t *buf = malloc(BLK);
	const char *sector = getenv("STGSNAP_SECTOR");
	unsigned unit = sector && !strcmp(sector, "512") ? 512 : BLK;
	int bad = 0, r;

	r = stg_open(path, fmt, STG_O_RDONLY, &d, &e);
	if (r < 0) {
		if (!quiet_open)
			printf("stgsnap: %s\n", e.msg);
		free(buf);
		return -1;
	}
	memset(&info, 0, sizeof(info));
	if (depth && (stg_get_info(d, &info) < 0 || info.chain_depth != (int)depth)) {
		printf("'%s': chain depth %u, expected %u\n", path, info.chain_depth, depth);
		bad++;
	}
	for (uint64_t b = 0; b < NBLK && bad < 20; b++) {
		uint64_t gen;

		r = stg_pread(d, buf, BLK, b * BLK);
		if (r < 0) {
			printf("'%s': read of block %llu: %s\n", path, (unsigned long long)b, strerror(-r));
			bad++;
			continue;
		}
		for (unsigned s = 0; s < BLK / 8; s += unit / 8) {
			uint64_t *v = buf + s;

			gen = v[0] ? (v[0] & 0xffffffffu) : 0;
			if (v[0] && v[0] >> 32 != b) {
				printf("'%s': block %llu holds block %llu's data\n", path, (unsigned long long)b,
				       (unsigned long long)(v[0] >> 32));
				bad++;
				break;
			}
			for (unsigned w = 1; w < unit / 8; w++)
				if (v[w] != v[0]) {
					printf("'%s': block %llu torn at word %u\n", path, (unsigned long long)b,
					       s + w);
					bad++;
					break;
				}
			if (!acceptable(&blks[b], last_flush, gen)) {
				printf("'%s': block %llu (word %u) holds generation %llu, not what was flushed or written after\n",
				       path, (unsigned long long)b, s, (unsigned long long)gen);
				bad++;
				break;
			}
		}
	}
	stg_close(d);
	free(buf);
	return bad;
}

static int do_verify(const char *base, const char *logpath)
{
	struct blk *blks = calloc(NBLK, sizeof(*blks));
	char line[4200], top[4096], prepared[64][4096];
	unsigned committed = 0, nprep = 0, pk[64];
	uint64_t seq = 0, last_flush = 0;
	FILE *f = fopen(logpath, "r");
	int bad = 0, r;

	/* no log: killed before it made one (nothing written) */
	if (!f && errno == ENOENT)
		f = fopen("/dev/null", "r");
	if (!f || !blks) {
		perror(logpath);
		return 1;
	}
	/* the killed writer's io_uring may hold its files (and so their
	 * locks) a moment after its death, as after a VMM's (cowvm run) */
	cow_lock_set_wait(10000);
	snprintf(top, sizeof(top), "%s", base);
	while (fgets(line, sizeof(line), f)) {
		unsigned long long b, n, g;
		unsigned k;
		char p[4096];

		if (!strchr(line, '\n'))
			break;   /* a line cut by the kill */
		seq++;
		if (sscanf(line, "W %llu %llu %llu", &b, &n, &g) == 3) {
			for (uint64_t i = b; i < b + n && i < NBLK; i++) {
				struct blk *x = &blks[i];
				if (x->n == x->cap) {
					x->cap = x->cap ? 2 * x->cap : 4;
					struct wr *nw = realloc(x->w, x->cap * sizeof(*x->w));
					if (!nw)
						return 1;
					x->w = nw;
				}
				x->w[x->n++] = (struct wr){ g, seq };
			}
		} else if (!strcmp(line, "F\n")) {
			last_flush = seq;
		} else if (sscanf(line, "P %u %4095s", &k, p) == 2) {
			if (nprep < 64) {
				pk[nprep] = k;
				snprintf(prepared[nprep++], sizeof(prepared[0]), "%s", p);
			}
		} else if (sscanf(line, "C %u", &k) == 1) {
			for (unsigned i = 0; i < nprep; i++)
				if (pk[i] == k)
					snprintf(top, sizeof(top), "%s", prepared[i]);
			committed++;
		}
	}
	fclose(f);
	r = check_file(top, "auto", committed + 1, blks, last_flush, false);
	if (r != 0) {
		printf("stgsnap verify: top '%s' (%u commits): %s\n", top, committed,
		       r < 0 ? "does not open" : "mismatches above");
		bad = 1;
	}
	/* overlays prepared after the last commit: complete (renamed to
	 * the name once made) and empty, nothing refers to them */
	for (unsigned i = 0; i < nprep; i++) {
		if (pk[i] <= committed || access(prepared[i], F_OK) != 0)
			continue;
		r = check_file(prepared[i], "qcow2", committed + 2, blks, last_flush, false);
		if (r != 0) {
			printf("stgsnap verify: leftover overlay '%s' %s\n", prepared[i],
			       r < 0 ? "does not open (a partial file at the overlay's name)" :
			       "reads differently");
			bad = 1;
		} else {
			printf("leftover overlay '%s': reads as the top\n", prepared[i]);
		}
	}
	printf("verified '%s': %u commits, %llu log records\n", top, committed,
	       (unsigned long long)seq);
	for (unsigned i = 0; i < NBLK; i++)
		free(blks[i].w);
	free(blks);
	return bad;
}

/* stgsnap existing BASE OV: one snapshot onto the existing overlay OV
 * (STG_SNAP_EXISTING), io_uring engine (its flushes are not libc calls).
 * Exit 0, 3 when prepare fails, 4 when commit fails (message on stdout). */
static int do_existing(const char *base, const char *ov)
{
	struct stg_dev *d = NULL;
	struct ut_err e = { 0, "" };
	struct stg_snapshot s = { 0 };
	int r;

	if (stg_open(base, "auto", 0, &d, &e) < 0) {
		printf("open: %s\n", e.msg);
		return 1;
	}
	r = stg_snapshot_prepare(d, ov, STG_SNAP_EXISTING, &s, &e);
	if (r < 0) {
		printf("prepare: %s\n", e.msg);
		stg_snapshot_abort(d, &s);
		stg_close(d);
		return 3;
	}
	r = stg_snapshot_commit(d, &s, &e);
	if (r < 0) {
		printf("commit: %s\n", e.msg);
		stg_snapshot_abort(d, &s);
		stg_close(d);
		return 4;
	}
	stg_close(d);
	return 0;
}

/* For commitfail and createfail: @base opened raw (io_uring engine),
 * block 0 written with 0x5a from @buf and flushed. The device, or NULL
 * (the message on stdout). */
static struct stg_dev *open_written(const char *base, uint8_t buf[4096])
{
	struct stg_dev *d = NULL;
	struct ut_err e = { 0, "" };

	if (stg_open(base, "raw", 0, &d, &e) < 0) {
		printf("open: %s\n", e.msg);
		return NULL;
	}
	memset(buf, 0x5a, 4096);
	if (stg_pwrite(d, buf, 4096, 0) < 0 || stg_flush(d) < 0) {
		printf("first write and flush failed\n");
		stg_close(d);
		return NULL;
	}
	return d;
}

/* Create @path (empty): failsync.so fails the syncs from then on. */
static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

	if (fd >= 0)
		close(fd);
}

/* The device's next flush after a failed sync must fail too: 0 when it
 * does, 3 when it succeeds (told on stdout). */
static int flush_after(struct stg_dev *d)
{
	int r = stg_flush(d);

	printf("flush after it: %s\n", r ? strerror(-r) : "succeeded");
	return r < 0 ? 0 : 3;
}

/* stgsnap commitfail BASE OV FLAG, under tests/helpers/failsync.so with
 * FAILSYNC_FLAG=FLAG: a raw BASE on the io_uring engine (whose flushes
 * are not libc calls) is prepared for a snapshot onto OV, FLAG created,
 * and the commit's fdatasync of the image fails; every later flush of the
 * device must fail too (what reached the disk is unknown; Linux reports
 * the error once). Exit 0 when the commit and the flush after it fail, 3
 * when that flush succeeds, 1 otherwise. */
static int do_commitfail(const char *base, const char *ov, const char *flag)
{
	struct ut_err e = { 0, "" };
	struct stg_snapshot s = { 0 };
	uint8_t buf[4096];
	struct stg_dev *d = open_written(base, buf);
	int r, ret = 1;

	if (!d)
		return 1;
	r = stg_snapshot_prepare(d, ov, 0, &s, &e);
	if (r < 0) {
		printf("prepare: %s\n", e.msg);
		stg_snapshot_abort(d, &s);
		goto out;
	}
	touch(flag);
	r = stg_snapshot_commit(d, &s, &e);
	if (r == 0) {
		printf("the commit whose fdatasync failed succeeded\n");
		goto out;
	}
	printf("commit: %s\n", e.msg);
	stg_snapshot_abort(d, &s);
	ret = flush_after(d);
out:
	stg_close(d);
	return ret;
}

/* stgsnap createfail BASE OV FLAG, under tests/helpers/failsync.so with
 * FAILSYNC_FLAG=FLAG: a raw BASE on the io_uring engine (whose flushes
 * are not libc calls), FAILSYNC_INO set to its inode, FLAG created, then
 * stg_snapshot_create onto OV: its push of the image's data (the only sync
 * of BASE's inode in it) fails. It must fail, leave nothing at OV, and
 * every later flush of the device must fail (what reached the disk is
 * unknown). Exit 0 when so, 3 when that flush succeeds, 4 when create
 * succeeds, 1 otherwise; the messages on stdout. */
static int do_createfail(const char *base, const char *ov, const char *flag)
{
	struct ut_err e = { 0, "" };
	struct stg_snapshot s = { 0 };
	uint8_t buf[4096];
	struct stg_dev *d = open_written(base, buf);
	struct stat st;
	char ino[32];
	int r, ret = 1;

	if (!d)
		return 1;
	if (stat(base, &st) < 0) {
		printf("stat %s: %s\n", base, strerror(errno));
		goto out;
	}
	snprintf(ino, sizeof(ino), "%llu", (unsigned long long)st.st_ino);
	setenv("FAILSYNC_INO", ino, 1);
	touch(flag);
	if (stg_pwrite(d, buf, sizeof(buf), 4096) < 0) {
		printf("second write failed\n");
		goto out;
	}
	r = stg_snapshot_create(d, ov, 0, &s, &e);
	if (r == 0) {
		printf("the create whose fdatasync failed succeeded\n");
		stg_snapshot_abort(d, &s);
		ret = 4;
		goto out;
	}
	printf("create: %s\n", e.msg);
	if (access(ov, F_OK) == 0 || access(flag, F_OK) == 0) {
		printf("%s\n", access(ov, F_OK) == 0 ? "the overlay is left" : "no sync of the image failed");
		goto out;
	}
	ret = flush_after(d);
out:
	stg_close(d);
	return ret;
}

int main(int argc, char **argv)
{
	if (argc == 6 && !strcmp(argv[1], "write"))
		return do_write(argv[2], argv[3], strtoull(argv[4], NULL, 0), argv[5]);
	if (argc == 4 && !strcmp(argv[1], "verify"))
		return do_verify(argv[2], argv[3]);
	if (argc == 5 && !strcmp(argv[1], "commitfail"))
		return do_commitfail(argv[2], argv[3], argv[4]);
	if (argc == 5 && !strcmp(argv[1], "createfail"))
		return do_createfail(argv[2], argv[3], argv[4]);
	if (argc == 4 && !strcmp(argv[1], "existing"))
		return do_existing(argv[2], argv[3]);
	fprintf(stderr, "usage: stgsnap write BASE OVPREFIX SEED LOG | verify BASE LOG | existing BASE OV | commitfail BASE OV FLAG | createfail BASE OV FLAG\n");
	return 2;
}
