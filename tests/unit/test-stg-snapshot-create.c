/* tests/unit/test-stg-snapshot-create.c — stg_snapshot_create, the slow
 * part of an external snapshot taken off the drained section
 * (storage/blockdev.h, storage/snapshot.c).
 *
 * Live: for a qcow2 and a raw device, in the four ways a device runs
 * (io_uring or worker threads, buffered or O_DIRECT), a second thread
 * calls stg_snapshot_create while the main thread keeps 8 writes in
 * flight (stg_submit, stg_wait: each slot rewrites its own eighth of the
 * disk, so the model is exact); then, drained, prepare (only flushes and
 * checks: snap.early) and commit; more writes; the whole disk read back
 * through the new chain against the model; closed; both files checked by
 * cow_check and `qemu-img check`, the frozen image and the overlay
 * compared with models by `qemu-img compare`. At least one write must have
 * completed while create ran. STG_SNAP_EXISTING through create too.
 * Two passes: the unnamed file (O_TMPFILE, then linkat; skipped with a
 * note where /var/tmp has no O_TMPFILE) and the fallback, a temporary
 * name renamed (COWVM_TEST_TMPFILE_ERRNO=EOPNOTSUPP, storage/snapshot.c's
 * test hook). Each create is watched (inotify, IN_CREATE and IN_MOVED_TO
 * in the directory): on the unnamed path no entry but the overlay's own
 * name ever appears, not even for a moment; on the fallback a temporary
 * one does (the watch sees what it must catch). The live test runs in
 * both passes (the fallback with fewer devices), the rest in full.
 * Errors: create then abort leaves neither the overlay nor a temporary
 * file; the overlay's mode is 0644 less the umask (027 there); create
 * onto an existing file is -EEXIST (file untouched, no temporary file);
 * prepare with another path or other flags than create's is -EINVAL
 * (nothing removed: the overlay stays open in the snapshot until abort
 * removes it, or keep leaves it: then it is a clean overlay backed by the
 * image, cow_check and qemu-img check); an abort after the overlay was
 * renamed away and another file put at its name removes neither; a
 * read-only device -EROFS.
 * Never replacing: ut_rename_noreplace and its link+unlink fallback
 * (ut_link_rename) called directly onto an existing file (-EEXIST, both
 * names unchanged); and a real race: a thread watching the directory
 * (inotify) creates the overlay's name (O_EXCL) the moment create's
 * temporary file appears, or on the unnamed path the moment the unnamed
 * file is first written (the kernel reports its events under the name
 * "#INODE"); whichever wins, the file at the name is the winner's, whole,
 * and no temporary file is left (both outcomes counted, -EEXIST at least
 * once in each pass).
 * The fallback's triggers: O_TMPFILE failing with EISDIR or EINVAL (the
 * hook) falls back too; with ENOSPC it is an error naming the overlay, no
 * fallback, nothing left; and without /proc (a child in a mount namespace
 * of its own, in a user namespace when not root, with a tmpfs over
 * /proc; skipped with a note where that cannot be made) create works
 * through the temporary name.
 *
 * Names: an overlay name of 255 and of 248 bytes works in both passes
 * (the temporary name is cut to fit); an image whose path is too long to
 * be a backing file name fails with -ENAMETOOLONG naming the overlay
 * (on the unnamed path, not /proc/self/fd/N, the name cow_create had).
 * No descriptor is left open, after the failures and at the end (the
 * second one create's push opens, the unnamed or temporary file's, the
 * overlay's after an abort).
 *
 * Runs in /var/tmp (O_DIRECT needs a real file system). Exit 0 pass, 1
 * fail. */
#include "storage/blockdev.h"
#include "cow/cow.h"
#include "util/io.h"
#include "tests/unit/test-fds.h"
#include "tests/unit/test-stg-snap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

static char dir[] = "/var/tmp/stgsnapc.XXXXXX";
static bool fallback;   /* this pass: the temporary-name path (the hook set) */

/* How many entries of dir are temporary files of the overlay @name
 * (".NAME.XXXXXX"). */
static int temps(const char *name)
{
	char pre[300];
	struct dirent *e;
	DIR *d = opendir(dir);
	int n = 0;

	snprintf(pre, sizeof(pre), ".%s.", name);
	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, pre, strlen(pre)) && strlen(e->d_name) == strlen(pre) + 6)
			n++;
	closedir(d);
	return n;
}

/* Watch dir for entries that appear in it (created, or moved or linked
 * in: linkat reports IN_CREATE). The inotify fd, -1 (counted a failure)
 * when it cannot. */
static int watch_begin(void)
{
	int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);

	if (fd >= 0 && inotify_add_watch(fd, dir, IN_CREATE | IN_MOVED_TO) < 0) {
		close(fd);
		fd = -1;
	}
	CHECK(fd >= 0);
	return fd;
}

/* How many entries appeared in dir since watch_begin (@fd, closed here)
 * with a name other than @name (NULL: any counts); -1 on an error or an
 * overflowed queue. */
static int watch_end(int fd, const char *name)
{
	char ev[8192] __attribute__((aligned(8)));
	ssize_t n;
	int others = 0;

	if (fd < 0)
		return -1;
	while ((n = read(fd, ev, sizeof(ev))) > 0) {
		for (char *q = ev; q < ev + n;) {
			struct inotify_event *e = (struct inotify_event *)q;

			if (e->mask & IN_Q_OVERFLOW)
				others = -1;
			else if (others >= 0 && e->len && (!name || strcmp(e->name, name)))
				others++;
			q += sizeof(*e) + e->len;
		}
	}
	if (n < 0 && errno != EAGAIN)
		others = -1;
	close(fd);
	return others;
}

/* What a watched create of a new overlay must have shown: on the unnamed
 * path no other entry (@others 0), on the fallback its temporary one. */
static bool shown_ok(int others)
{
	return fallback ? others >= 1 : others == 0;
}

/* ---- create on a second thread while the device runs ---- */

#define NSLOT 8
#define REGION (DISK / NSLOT)

struct slot {
	struct stg_req req;
	struct iovec iov;
	uint8_t *buf;
	bool busy;
};

struct creator {
	struct stg_dev *d;
	const char *path;
	unsigned flags;
	struct stg_snapshot snap;
	struct ut_err err;
	int result;
	int done;             /* __atomic: create returned */
	int go;               /* __atomic: the main thread has writes in flight */
};

static unsigned completed, bad_results;

static void slot_done(struct stg_req *req, int result)
{
	struct slot *s = req->opaque;

	s->busy = false;
	completed++;
	if (result != 0)
		bad_results++;
}

static void *creator_main(void *arg)
{
	struct creator *c = arg;

	while (!__atomic_load_n(&c->go, __ATOMIC_ACQUIRE))
		sched_yield();
	c->result = stg_snapshot_create(c->d, c->path, c->flags, &c->snap, &c->err);
	__atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Slot @i's next write: 4..64 KiB of a new pattern in its own eighth of
 * the disk, into @model. 0 or the submit's -errno. */
static int slot_submit(struct stg_dev *d, struct slot *s, unsigned i, uint8_t *model, unsigned *seq)
{
	uint64_t len = 4096 * (1 + rand() % 16);
	uint64_t off = (uint64_t)i * REGION + 4096 * (uint64_t)(rand() % (int)((REGION - len) / 4096 + 1));
	int r;

	ts_fill(s->buf, len, ++*seq);
	memcpy(model + off, s->buf, len);
	s->iov = (struct iovec){ s->buf, len };
	s->req = (struct stg_req){ .op = STG_OP_WRITE, .offset = off, .len = len, .iov = &s->iov,
				   .iovcnt = 1, .done = slot_done, .opaque = s };
	s->busy = true;
	r = stg_submit(d, &s->req);
	if (r < 0)
		s->busy = false;
	return r;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Writes kept in flight on @d (model updated) until @c's create has
 * returned and at least @min writes completed. Returns the writes that
 * completed while create ran. */
static unsigned write_while(struct stg_dev *d, struct slot *slots, uint8_t *model, unsigned *seq,
			    struct creator *c, unsigned min)
{
	unsigned start = completed, during = 0;
	double t0 = now();

	for (;;) {
		bool cdone = c && __atomic_load_n(&c->done, __ATOMIC_ACQUIRE);

		if ((!c || cdone) && completed - start >= min)
			break;
		if (now() - t0 > 30) {
			fprintf(stderr, "writes: create still running after 30 s\n");
			failures++;
			break;
		}
		for (unsigned i = 0; i < NSLOT; i++)
			if (!slots[i].busy && slot_submit(d, &slots[i], i, model, seq) < 0) {
				fprintf(stderr, "submit failed\n");
				failures++;
				return during;
			}
		stg_unplug(d);
		if (c && !__atomic_load_n(&c->go, __ATOMIC_RELAXED))
			__atomic_store_n(&c->go, 1, __ATOMIC_RELEASE);
		{
			unsigned before = completed;

			if (stg_wait(d) < 0) {
				fprintf(stderr, "stg_wait failed\n");
				failures++;
				return during;
			}
			if (c && !__atomic_load_n(&c->done, __ATOMIC_ACQUIRE))
				during += completed - before;
		}
	}
	CHECK(stg_drain(d) == 0);
	return during;
}

static void live(bool raw, unsigned flags, bool existing)
{
	char cur[600], ov[600], ma[600], real[PATH_MAX];
	const char *fmt = raw ? "raw" : "qcow2";
	uint8_t *model = calloc(1, DISK), *model_a = malloc(DISK);
	struct slot slots[NSLOT];
	struct creator c;
	struct stg_info info;
	struct ut_err err;
	struct stg_dev *d;
	pthread_t th;
	unsigned seq = 0, during;
	int wfd, others;

	memset(slots, 0, sizeof(slots));
	memset(&c, 0, sizeof(c));
	snprintf(cur, sizeof(cur), "%s/live-%s-%x-%d.img", dir, fmt, flags, existing);
	snprintf(ov, sizeof(ov), "%s/live-%s-%x-%d.ov", dir, fmt, flags, existing);
	snprintf(ma, sizeof(ma), "%s/model.raw", dir);
	d = ts_make_open(cur, raw, flags);
	if (!d)
		goto out;
	printf("live: %s, flags 0x%x%s%s\n", fmt, flags, existing ? ", existing overlay" : "",
	       fallback ? ", temporary name" : "");
	for (unsigned i = 0; i < NSLOT; i++)
		slots[i].buf = aligned_alloc(4096, 64 << 10);
	completed = bad_results = 0;
	write_while(d, slots, model, &seq, NULL, 64);   /* before */
	if (existing) {
		struct cow_create_opts o = { .size = DISK, .backing = cur, .backing_fmt = fmt };

		CHECKE(cow_create(ov, &o, &err) == 0, &err);
	}
	c.d = d;
	c.path = ov;
	c.flags = existing ? STG_SNAP_EXISTING : 0;
	wfd = watch_begin();
	if (pthread_create(&th, NULL, creator_main, &c)) {
		failures++;
		close(wfd);
		goto out_close;
	}
	during = write_while(d, slots, model, &seq, &c, 64);
	pthread_join(th, NULL);
	others = watch_end(wfd, strrchr(ov, '/') + 1);
	CHECK(existing ? others == 0 : shown_ok(others));
	printf("  %u writes completed while create ran\n", during);
	CHECK(during > 0);
	CHECK(bad_results == 0);
	CHECKE(c.result == 0, &c.err);
	if (c.result < 0)
		goto out_close;
	CHECK(c.snap.early && c.snap.priv && c.snap.created == !existing);
	CHECK(temps(strrchr(ov, '/') + 1) == 0);
	/* the drained section: what was written during create is flushed */
	CHECKE(stg_snapshot_prepare(d, ov, c.flags, &c.snap, &err) == 0, &err);
	memcpy(model_a, model, DISK);
	CHECKE(stg_snapshot_commit(d, &c.snap, &err) == 0, &err);
	CHECK(!c.snap.path && !c.snap.priv && !c.snap.early);
	stg_get_info(d, &info);
	CHECK(!strcmp(info.format, "qcow2") && info.chain_depth == 2 && !strcmp(d->path, ov));
	CHECK(realpath(cur, real) && !strcmp(info.backing, real));
	write_while(d, slots, model, &seq, NULL, 64);   /* after: into the overlay */
	CHECK(bad_results == 0);
	ts_dev_compare(d, model, "live, through the new chain");
	stg_close(d);
	d = NULL;
	if (!raw)
		ts_check_clean(cur);
	ts_check_clean(ov);
	if (ts_have_qemu) {
		ts_write_model(ma, model_a);
		CHECK(ts_sh("qemu-img compare -q -f %s '%s' '%s'", fmt, cur, ma) == 0);
		ts_write_model(ma, model);
		CHECK(ts_sh("qemu-img compare -q '%s' '%s'", ov, ma) == 0);
	}
out_close:
	stg_close(d);
	for (unsigned i = 0; i < NSLOT; i++)
		free(slots[i].buf);
	unlink(cur);
	unlink(ov);
	unlink(ma);
out:
	free(model);
	free(model_a);
}

/* ---- errors ---- */

static void errors(bool raw)
{
	char cur[600], ov[600], other[600];
	struct stg_snapshot snap = { 0 };
	struct ut_err err;
	struct stg_dev *d, *ro;
	struct stat st;
	uint8_t w[4096], r[4096];
	int fd;

	snprintf(cur, sizeof(cur), "%s/err%d.img", dir, raw);
	snprintf(ov, sizeof(ov), "%s/err%d.ov", dir, raw);
	snprintf(other, sizeof(other), "%s/err%d.other", dir, raw);
	d = ts_make_open(cur, raw, 0);
	if (!d)
		return;

	/* create, abort: nothing left; the overlay's mode 0644 less the
	 * umask, as an open with O_CREAT gives */
	{
		mode_t um = umask(027);
		int wfd = watch_begin();

		CHECKE(stg_snapshot_create(d, ov, 0, &snap, &err) == 0, &err);
		CHECK(shown_ok(watch_end(wfd, strrchr(ov, '/') + 1)));
		umask(um);
	}
	CHECK(stat(ov, &st) == 0 && (st.st_mode & 07777) == 0640);
	CHECK(access(ov, F_OK) == 0 && snap.created && snap.early);
	stg_snapshot_abort(d, &snap);
	CHECK(access(ov, F_OK) < 0 && errno == ENOENT);
	CHECK(temps(strrchr(ov, '/') + 1) == 0);
	CHECK(!snap.path && !snap.priv && !snap.early);

	/* onto an existing file: -EEXIST, the file untouched, no temporary */
	fd = open(ov, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	CHECK(fd >= 0 && write(fd, "keep", 4) == 4);
	close(fd);
	CHECK(stg_snapshot_create(d, ov, 0, &snap, &err) == -EEXIST);
	CHECK(strstr(err.msg, ov) && strstr(err.msg, "exists"));
	CHECK(stat(ov, &st) == 0 && st.st_size == 4);
	CHECK(temps(strrchr(ov, '/') + 1) == 0);
	stg_snapshot_abort(d, &snap);   /* harmless */
	CHECK(stat(ov, &st) == 0 && st.st_size == 4);
	unlink(ov);

	/* prepare with another path, or other flags, than create's:
	 * -EINVAL; nothing removed: @snap still holds the overlay, open, at
	 * its name, until abort removes it */
	CHECKE(stg_snapshot_create(d, ov, 0, &snap, &err) == 0, &err);
	CHECK(stg_snapshot_prepare(d, other, 0, &snap, &err) == -EINVAL);
	CHECK(strstr(err.msg, other) != NULL);
	CHECK(snap.priv && snap.path && snap.created && access(ov, F_OK) == 0);
	CHECK(access(other, F_OK) < 0);
	stg_snapshot_abort(d, &snap);
	CHECK(!snap.priv && !snap.path && access(ov, F_OK) < 0 && access(other, F_OK) < 0);
	CHECKE(stg_snapshot_create(d, ov, 0, &snap, &err) == 0, &err);
	CHECK(stg_snapshot_prepare(d, ov, STG_SNAP_EXISTING, &snap, &err) == -EINVAL);
	CHECK(snap.priv && access(ov, F_OK) == 0);
	stg_snapshot_abort(d, &snap);
	CHECK(!snap.priv && access(ov, F_OK) < 0);
	CHECK(temps(strrchr(ov, '/') + 1) == 0);

	/* a failed prepare, then keep: the overlay stays at its name, closed
	 * (no lock: another open gets one), a clean overlay of the image
	 * (cow_check, qemu-img check) backed by the device's image */
	CHECKE(stg_snapshot_create(d, ov, 0, &snap, &err) == 0, &err);
	CHECK(stg_snapshot_prepare(d, other, 0, &snap, &err) == -EINVAL);
	stg_snapshot_keep(d, &snap);
	CHECK(!snap.priv && !snap.path && !snap.created && !snap.early);
	CHECK(access(ov, F_OK) == 0 && access(other, F_OK) < 0);
	{
		struct cow_check_res cr;
		struct cow_img *img = NULL;

		/* qemu-img with -U: the device still write-locks the image,
		 * the overlay's backing file */
		memset(&cr, 0, sizeof(cr));
		CHECKE(cow_check(ov, COW_REPAIR_NONE, &cr, &err) == 0 && cr.corruptions == 0 &&
		       cr.leaks == 0, &err);
		ut_buf_release(&cr.msgs);
		if (ts_have_qemu)
			CHECK(ts_sh("qemu-img check -U -q '%s'", ov) == 0);

		CHECKE(cow_open(ov, NULL, COW_O_NO_BACKING, &img, &err) == 0, &err);
		if (img) {
			struct cow_info ci;

			cow_get_info(img, &ci);
			CHECK(ci.backing && strstr(ci.backing, strrchr(cur, '/')) != NULL);
			cow_close(img);
		}
	}
	stg_snapshot_keep(d, &snap);   /* harmless */
	stg_snapshot_abort(d, &snap);  /* harmless: released, the file stays */
	CHECK(access(ov, F_OK) == 0);
	unlink(ov);

	/* the overlay renamed away between create and prepare: -EINVAL; the
	 * abort after it removes nothing by name: not the overlay (not at
	 * its name) nor the file put at its name since */
	CHECKE(stg_snapshot_create(d, ov, 0, &snap, &err) == 0, &err);
	CHECK(rename(ov, other) == 0);
	CHECK(stg_snapshot_prepare(d, ov, 0, &snap, &err) == -EINVAL);
	CHECK(strstr(err.msg, "replaced or removed") != NULL);
	fd = open(ov, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	CHECK(fd >= 0 && write(fd, "theirs", 6) == 6);
	if (fd >= 0)
		close(fd);
	stg_snapshot_abort(d, &snap);
	CHECK(access(other, F_OK) == 0);   /* not removed by name: not at it */
	CHECK(stat(ov, &st) == 0 && st.st_size == 6);   /* another file: left */
	unlink(other);
	unlink(ov);

	/* a directory that does not exist: -ENOENT naming the overlay */
	{
		char bad[700];

		snprintf(bad, sizeof(bad), "%s/no/such/dir.qcow2", dir);
		CHECK(stg_snapshot_create(d, bad, 0, &snap, &err) == -ENOENT);
		CHECK(strstr(err.msg, bad) != NULL);
	}

	/* the device wrote on throughout */
	ts_fill(w, sizeof(w), 9);
	CHECK(stg_pwrite(d, w, sizeof(w), 8192) == 0 && stg_flush(d) == 0);
	CHECK(stg_pread(d, r, sizeof(r), 8192) == 0 && !memcmp(w, r, sizeof(w)));
	/* and a create that works, prepared and committed */
	CHECKE(stg_snapshot_create(d, ov, 0, &snap, &err) == 0, &err);
	CHECKE(stg_snapshot_prepare(d, ov, 0, &snap, &err) == 0, &err);
	CHECKE(stg_snapshot_commit(d, &snap, &err) == 0, &err);
	CHECK(stg_pread(d, r, sizeof(r), 8192) == 0 && !memcmp(w, r, sizeof(w)));
	stg_close(d);
	ts_check_clean(ov);

	/* a read-only device */
	CHECKE(stg_open(cur, NULL, STG_O_RDONLY, &ro, &err) == 0, &err);
	if (ro) {
		CHECK(stg_snapshot_create(ro, other, 0, &snap, &err) == -EROFS);
		CHECK(access(other, F_OK) < 0);
		stg_close(ro);
	}
	unlink(cur);
	unlink(ov);
}

/* How many entries of dir begin with '.' (besides "." and ".."): a
 * temporary file whatever its name was shortened to. */
static int dot_files(void)
{
	struct dirent *e;
	DIR *d = opendir(dir);
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] == '.' && strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* An overlay name of NAME_MAX (255) bytes, and of 248 (the first too
 * long for ".NAME.XXXXXX"): a legal name, so create and a prepare without
 * create both work, and leave no temporary file. */
static void long_name(void)
{
	static const size_t lens[] = { NAME_MAX, NAME_MAX - 7 };
	char cur[600], ov[600], name[NAME_MAX + 1];
	struct stg_snapshot snap = { 0 };
	struct ut_err err;
	struct stg_dev *d;

	snprintf(cur, sizeof(cur), "%s/long.img", dir);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		for (int early = 0; early < 2; early++) {
			d = ts_make_open(cur, true, 0);
			if (!d)
				return;
			memset(name, 'n', lens[i]);
			name[lens[i]] = '\0';
			snprintf(ov, sizeof(ov), "%s/%s", dir, name);
			{
				int wfd = watch_begin();

				if (early)
					CHECKE(stg_snapshot_create(d, ov, 0, &snap, &err) == 0, &err);
				CHECKE(stg_snapshot_prepare(d, ov, 0, &snap, &err) == 0, &err);
				CHECK(shown_ok(watch_end(wfd, name)));
			}
			CHECKE(stg_snapshot_commit(d, &snap, &err) == 0, &err);
			stg_snapshot_abort(d, &snap);
			stg_close(d);
			CHECK(access(ov, F_OK) == 0);
			CHECK(dot_files() == 0);
			unlink(ov);
			unlink(cur);
		}
	}
}

/* The device's image at a path of more than 1024 bytes, too long for an
 * overlay's backing file name: cow_create fails once the file is open
 * (-ENAMETOOLONG), and the message names the overlay, not
 * /proc/self/fd/N; nothing is left, no descriptor. */
static void long_backing(void)
{
	char deep[1400], cur[1500], ov[600], comp[201];
	struct stg_snapshot snap = { 0 };
	struct ut_err err;
	struct stg_dev *d;
	int fds = tf_nfds();
	size_t n;

	memset(comp, 'd', 200);
	comp[200] = '\0';
	n = (size_t)snprintf(deep, sizeof(deep), "%s", dir);
	for (int i = 0; i < 5; i++) {
		n += (size_t)snprintf(deep + n, sizeof(deep) - n, "/%s", comp);
		CHECK(mkdir(deep, 0755) == 0);
	}
	snprintf(cur, sizeof(cur), "%s/img", deep);
	snprintf(ov, sizeof(ov), "%s/deep.ov", dir);
	d = ts_make_open(cur, true, 0);
	if (d) {
		CHECK(stg_snapshot_create(d, ov, 0, &snap, &err) == -ENAMETOOLONG);
		CHECK(strstr(err.msg, ov) && strstr(err.msg, "too long") && !strstr(err.msg, "/proc/"));
		CHECK(access(ov, F_OK) < 0 && dot_files() == 0);
		stg_close(d);
	}
	CHECK(tf_nfds() == fds);
	unlink(cur);
	while (strlen(deep) > strlen(dir)) {
		rmdir(deep);
		*strrchr(deep, '/') = '\0';
	}
}

/* ---- never replacing ---- */

/* ut_rename_noreplace and its fallback, directly: onto an existing file
 * -EEXIST, both files as they were; onto a free name the file moves. */
static void rename_steps(void)
{
	char a[600], b[600], buf[8];
	int (*const fns[2])(const char *, const char *) = { ut_rename_noreplace, ut_link_rename };

	snprintf(a, sizeof(a), "%s/ren.a", dir);
	snprintf(b, sizeof(b), "%s/ren.b", dir);
	for (int i = 0; i < 2; i++) {
		FILE *f;

		f = fopen(a, "w");
		CHECK(f && fputs("aaaa", f) >= 0);
		if (f)
			fclose(f);
		f = fopen(b, "w");
		CHECK(f && fputs("bbbb", f) >= 0);
		if (f)
			fclose(f);
		CHECK(fns[i](a, b) == -EEXIST);
		f = fopen(b, "r");
		CHECK(f && fread(buf, 1, 4, f) == 4 && !memcmp(buf, "bbbb", 4));
		if (f)
			fclose(f);
		CHECK(access(a, F_OK) == 0);
		unlink(b);
		CHECK(fns[i](a, b) == 0);
		CHECK(access(a, F_OK) < 0 && errno == ENOENT);
		f = fopen(b, "r");
		CHECK(f && fread(buf, 1, 4, f) == 4 && !memcmp(buf, "aaaa", 4));
		if (f)
			fclose(f);
		unlink(b);
	}
}

/* Does @path begin with the qcow2 magic? */
static bool is_qcow2(const char *path)
{
	uint8_t b[4];
	FILE *f = fopen(path, "rb");
	bool yes = f && fread(b, 1, 4, f) == 4 && cow_probe(b, 4);

	if (f)
		fclose(f);
	return yes;
}

struct racer {
	const char *path, *name;
	int ifd;
	int won;      /* 1: created the name first, 0: create did, -1: never saw the file */
};

/* Wait (up to 5 s) for create's temporary file to appear (IN_CREATE of
 * ".NAME.") or its unnamed file to be written (IN_MODIFY of "#INODE"),
 * then take the overlay's name with O_EXCL and write "racer" into it. */
static void *racer_main(void *arg)
{
	struct racer *r = arg;
	char ev[4096] __attribute__((aligned(8))), pre[300];
	struct pollfd p = { r->ifd, POLLIN, 0 };

	snprintf(pre, sizeof(pre), ".%s.", r->name);
	r->won = -1;
	while (poll(&p, 1, 5000) > 0) {
		ssize_t n = read(r->ifd, ev, sizeof(ev));

		for (char *q = ev; n > 0 && q < ev + n;) {
			struct inotify_event *e = (struct inotify_event *)q;

			if (e->len && ((e->mask & IN_CREATE) ? !strncmp(e->name, pre, strlen(pre))
							     : e->name[0] == '#')) {
				int fd = open(r->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

				r->won = fd >= 0;
				if (fd >= 0) {
					if (write(fd, "racer", 5) != 5)
						r->won = -2;
					close(fd);
				}
				return NULL;
			}
			q += sizeof(*e) + e->len;
		}
	}
	return NULL;
}

/* A file appears at the overlay's name while create makes it: create
 * either fails with -EEXIST leaving the racer's file whole, or got there
 * first (the racer's O_EXCL failed) and the name holds the overlay; never
 * a replaced file, never a temporary one left. */
static void race(unsigned rounds)
{
	char cur[600], ov[600];
	unsigned lost = 0, beat = 0;
	struct stg_dev *d;

	snprintf(cur, sizeof(cur), "%s/race.img", dir);
	snprintf(ov, sizeof(ov), "%s/race.ov", dir);
	d = ts_make_open(cur, false, 0);
	if (!d)
		return;
	for (unsigned i = 0; i < rounds; i++) {
		struct racer rc = { .path = ov, .name = "race.ov" };
		struct stg_snapshot snap = { 0 };
		struct ut_err err;
		pthread_t th;
		char buf[8];
		int r, wfd;

		unlink(ov);
		rc.ifd = inotify_init1(IN_CLOEXEC);
		CHECK(rc.ifd >= 0 && inotify_add_watch(rc.ifd, dir, IN_CREATE | IN_MODIFY) >= 0);
		if (rc.ifd < 0 || pthread_create(&th, NULL, racer_main, &rc)) {
			failures++;
			break;
		}
		wfd = watch_begin();
		r = stg_snapshot_create(d, ov, 0, &snap, &err);
		pthread_join(th, NULL);
		close(rc.ifd);
		/* besides the name: the fallback's temporary file, else none */
		CHECK(shown_ok(watch_end(wfd, "race.ov")));
		CHECK(rc.won >= 0);
		if (rc.won == 1) {
			FILE *f = fopen(ov, "r");

			lost++;
			CHECK(r == -EEXIST);
			CHECK(f && fread(buf, 1, 5, f) == 5 && !memcmp(buf, "racer", 5));
			if (f)
				fclose(f);
		} else if (rc.won == 0) {
			beat++;
			CHECKE(r == 0, &err);
			CHECK(is_qcow2(ov));
		}
		CHECK(temps("race.ov") == 0);
		stg_snapshot_abort(d, &snap);
	}
	printf("race: %u times the file appeared first (create: -EEXIST), %u times create named it first\n",
	       lost, beat);
	CHECK(lost > 0);
	stg_close(d);
	unlink(cur);
	unlink(ov);
}

/* ---- when O_TMPFILE cannot be used ---- */

/* O_TMPFILE refused (the hook) with EISDIR or EINVAL, as old kernels do:
 * the temporary name instead, and it works; with ENOSPC: an error naming
 * the overlay, not the fallback, nothing left, no descriptor. */
static void tmpfile_errnos(void)
{
	static const struct { int e; bool falls; } cases[] = {
		{ EISDIR, true }, { EINVAL, true }, { EOPNOTSUPP, true }, { ENOSPC, false },
	};
	char cur[600], ov[600], num[16];
	struct stg_snapshot snap = { 0 };
	struct ut_err err;
	struct stg_dev *d;

	snprintf(cur, sizeof(cur), "%s/errno.img", dir);
	snprintf(ov, sizeof(ov), "%s/errno.ov", dir);
	d = ts_make_open(cur, false, 0);
	if (!d)
		return;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int fds = tf_nfds(), wfd, r, others;

		snprintf(num, sizeof(num), "%d", cases[i].e);
		setenv("COWVM_TEST_TMPFILE_ERRNO", num, 1);
		wfd = watch_begin();
		r = stg_snapshot_create(d, ov, 0, &snap, &err);
		others = watch_end(wfd, "errno.ov");
		unsetenv("COWVM_TEST_TMPFILE_ERRNO");
		if (cases[i].falls) {
			CHECKE(r == 0, &err);
			CHECK(others >= 1 && is_qcow2(ov));
			stg_snapshot_abort(d, &snap);
		} else {
			CHECK(r == -cases[i].e && strstr(err.msg, ov) && others == 0);
		}
		CHECK(access(ov, F_OK) < 0 && dot_files() == 0);
		CHECK(tf_nfds() == fds);
	}
	stg_close(d);
	unlink(cur);
}

/* Write @text to the file @path; 0 or -1. */
static int put_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? write(fd, text, strlen(text)) : -1;

	if (fd >= 0)
		close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* A mount namespace of this (single-threaded) process's own, private: as
 * root, or in a user namespace of its own mapping only the ids it has.
 * 0 or -1. */
static int own_mount_ns(void)
{
	char map[64];
	uid_t uid = getuid();
	gid_t gid = getgid();

	if (unshare(CLONE_NEWNS) < 0) {
		if (errno != EPERM || unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
			return -1;
		snprintf(map, sizeof(map), "%u %u 1", (unsigned)uid, (unsigned)uid);
		if (put_file("/proc/self/uid_map", map) < 0 || put_file("/proc/self/setgroups", "deny") < 0)
			return -1;
		snprintf(map, sizeof(map), "%u %u 1", (unsigned)gid, (unsigned)gid);
		if (put_file("/proc/self/gid_map", map) < 0)
			return -1;
	}
	return mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
}

/* Without /proc (a mount namespace of its own, a tmpfs over /proc, in a
 * child: unshare needs a single thread): create and a prepare without
 * create work through the temporary name, and leave no temporary file.
 * Skipped, with a note, where no such namespace can be made. */
static void no_proc(void)
{
	char cur[600], ov[600];
	pid_t pid;
	int st;

	snprintf(cur, sizeof(cur), "%s/noproc.img", dir);
	snprintf(ov, sizeof(ov), "%s/noproc.ov", dir);
	int f0 = failures;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		struct stg_snapshot snap = { 0 };
		struct ut_err err;
		struct stg_dev *d;
		struct stat pst;
		int wfd, others;

		if (own_mount_ns() < 0 || mount("none", "/proc", "tmpfs", 0, "") < 0)
			_exit(77);
		if (stat("/proc/self/fd", &pst) == 0)
			_exit(1);
		d = ts_make_open(cur, false, 0);
		if (!d)
			_exit(1);
		wfd = watch_begin();
		CHECKE(stg_snapshot_create(d, ov, 0, &snap, &err) == 0, &err);
		CHECKE(stg_snapshot_prepare(d, ov, 0, &snap, &err) == 0, &err);
		CHECKE(stg_snapshot_commit(d, &snap, &err) == 0, &err);
		others = watch_end(wfd, "noproc.ov");
		CHECK(others >= 1);   /* the temporary name was used */
		stg_close(d);
		CHECK(dot_files() == 0);
		ts_check_clean(ov);
		_exit(failures > f0 ? 1 : 0);
	}
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st));
	if (pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 77)
		printf("note: no mount namespace can be made here: create without /proc is not tested\n");
	else
		CHECK(pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if (pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
		printf("no /proc: created through the temporary name\n");
	unlink(cur);
	unlink(ov);
}

int main(void)
{
	int fds0, probe;
	bool have_tmpfile;

	if (ts_start(dir))
		return 1;
	fds0 = tf_nfds();
	ts_have_qemu = ts_sh("qemu-img --version") == 0;
	if (!ts_have_qemu)
		printf("SKIP: qemu-img is not installed: no qemu-img checks\n");
	probe = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	have_tmpfile = probe >= 0;
	if (probe >= 0)
		close(probe);
	else
		printf("SKIP: no O_TMPFILE in /var/tmp (%s): only the temporary-name pass runs\n",
		       strerror(errno));
	srand(12345);
	for (int pass = have_tmpfile ? 0 : 1; pass < 2; pass++) {
		fallback = pass;
		if (fallback)
			setenv("COWVM_TEST_TMPFILE_ERRNO", "95", 1);   /* EOPNOTSUPP */
		printf("== %s\n", fallback ? "temporary name (fallback)" : "unnamed file (O_TMPFILE)");
		for (unsigned f = 0; f < TS_NFLAGSETS; f++) {
			if (fallback && f % 2)
				continue;
			live(false, ts_flagset(f), false);
			live(true, ts_flagset(f), false);
		}
		live(false, 0, true);
		live(true, STG_O_DIRECT, true);
		errors(false);
		errors(true);
		long_name();
		long_backing();
		race(20);
		unsetenv("COWVM_TEST_TMPFILE_ERRNO");
	}
	fallback = true;
	tmpfile_errnos();
	no_proc();
	rename_steps();
	/* every device closed, every create and abort done: no descriptor left */
	if (tf_nfds() != fds0)
		fprintf(stderr, "%d descriptors open at the end, %d at the start\n", tf_nfds(), fds0);
	CHECK(tf_nfds() == fds0);
	return ts_end(dir);
}
