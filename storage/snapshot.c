/* storage/snapshot.c — external snapshots of an open device
 * (stg_snapshot_create / _prepare / _commit / _abort; the contract is in
 * blockdev.h).
 *
 * The overlay's file is made by one function (make_overlay) for create
 * and for a prepare without create, so that the name never shows a partial
 * file, not even after a kill -9 or a power cut:
 *  - as an unnamed file in the overlay's directory (open_unnamed: open of
 *    the directory with O_TMPFILE, mode 0644 less the umask), built through
 *    /proc/self/fd/N (cow_create takes a path; that one reaches the
 *    unnamed inode), synced, then given its name by linkat of
 *    /proc/self/fd/N with AT_SYMLINK_FOLLOW (AT_EMPTY_PATH would need
 *    CAP_DAC_READ_SEARCH), which fails with EEXIST rather than replace a
 *    file, and the directory synced. Until the linkat the file has no name
 *    at all: a kill, a power cut or a failure leaves nothing behind (the
 *    kernel frees the inode at the last close, ext4/xfs/btrfs at the next
 *    mount from their orphan list);
 *  - where the file system (EOPNOTSUPP), the kernel (before 3.11: EISDIR;
 *    EINVAL) or a missing /proc cannot do that, under a temporary name
 *    beside it (open_temp: ".NAME.XXXXXX"), written and synced there, then
 *    renamed to its name without replacing anything (ut_rename_noreplace)
 *    and the directory synced. A kill or power cut meanwhile may leave
 *    the temporary file (and, with ut_rename_noreplace's link + unlink
 *    fallback, a second name of the overlay), never a partial file at the
 *    name.
 * Test hook: COWVM_TEST_TMPFILE_ERRNO=N (N > 0, read at each creation)
 * makes the O_TMPFILE open fail with errno N without trying it, as a file
 * system or kernel without O_TMPFILE would (tests/unit/
 * test-stg-snapshot-create.c, tests/interop/storage-snapshot-powercut.sh).
 *
 * create does the slow part on the caller's thread while the device runs:
 * the file, its syncs, the open (its lock) and the checks, and it pushes
 * the image's data to the disk (push_image: a descriptor of its own,
 * never the device's state). prepare, with the device drained, then only
 * flushes what was written since and checks again; without a create it
 * does all of that itself. prepare does everything that may fail for
 * ordinary reasons; commit hands the open overlay to the backend's
 * snapshot op, which checks the pair again against the open image
 * (cow_overlay_check: the same file by st_dev/st_ino of its fd, the
 * size), makes the image durable, and only then changes anything
 * (cow_overlay_attach, which cannot fail).
 *
 * A failed prepare or commit removes nothing: the overlay's file (create's
 * or prepare's) stays at its name, open in the snapshot, and the caller
 * decides (abort removes it, keep leaves it): a caller that recorded the
 * file elsewhere (the catalog) removes it only once that record is undone,
 * so that no record ever names a removed file. Removal is by identity
 * (st_dev/st_ino noted when the file was made): a file that has taken the
 * name since is never removed.
 */
#include "storage/blockdev.h"
#include "cow/cow.h"
#include "cow/lock.h"
#include "util/io.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* fsync @path itself (@dir false) or the directory that holds it. 0 or
 * -errno. */
static int sync_path(const char *path, bool dir)
{
	char *dup = strdup(path);
	int fd, r = 0;

	if (!dup)
		return -ENOMEM;
	fd = open(dir ? dirname(dup) : path, O_RDONLY | O_CLOEXEC | (dir ? O_DIRECTORY : 0));
	if (fd < 0) {
		r = -errno;
	} else {
		if (fsync(fd) < 0)
			r = -errno;
		close(fd);
	}
	free(dup);
	return r;
}

/* Remove @path if it is still the file @st describes (not one that took
 * its name since), and sync its directory. */
static void remove_ours(const char *path, const struct stat *st)
{
	struct stat now;

	if (lstat(path, &now) == 0 && now.st_dev == st->st_dev && now.st_ino == st->st_ino &&
	    unlink(path) == 0)
		(void)sync_path(path, true);
}

/* A new empty file ".NAME.XXXXXX" beside @path (NAME: @path's last
 * component, cut to its first STG_SNAP_TMP_NAME_MAX bytes, so that a
 * legal name up to NAME_MAX still gives a legal temporary one; O_EXCL,
 * mode 0644 less the umask, as the overlay's own creation had), its name
 * in *tmp (the caller frees it). Returns the fd or -errno. */
#define STG_SNAP_TMP_NAME_MAX (NAME_MAX - 8)   /* the 8: "." "." XXXXXX */

static int open_temp(const char *path, char **tmp)
{
	static const char chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	static unsigned seq;
	const char *slash = strrchr(path, '/');
	const char *name = slash ? slash + 1 : path;
	size_t dlen = (size_t)(name - path), n;
	char *t;
	int fd = -EEXIST;

	*tmp = NULL;
	if (!*name)
		return -EISDIR;
	t = malloc(dlen + strlen(name) + 9);
	if (!t)
		return -ENOMEM;
	n = (size_t)sprintf(t, "%.*s.%.*s.", (int)dlen, path, STG_SNAP_TMP_NAME_MAX, name);
	for (int tries = 0; tries < 100 && fd == -EEXIST; tries++) {
		uint8_t rnd[6];

		if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
			struct timespec ts;
			uint64_t x;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			x = (uint64_t)ts.tv_nsec * 2654435761u ^ (uint64_t)getpid() << 20 ^
			    __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);
			for (size_t i = 0; i < sizeof(rnd); i++, x >>= 8)
				rnd[i] = (uint8_t)x;
		}
		for (size_t i = 0; i < sizeof(rnd); i++)
			t[n + i] = chars[rnd[i] % (sizeof(chars) - 1)];
		t[n + sizeof(rnd)] = '\0';
		fd = open(t, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0)
			fd = -errno;
	}
	if (fd < 0)
		free(t);
	else
		*tmp = t;
	return fd;
}

/* A new unnamed regular file in @path's directory (O_TMPFILE, mode 0644
 * less the umask, as the overlay's own creation had), reachable at the
 * path it returns in @proc (/proc/self/fd/N, checked to reach this very
 * inode). Returns the fd; -EOPNOTSUPP when the file system, the kernel or
 * /proc cannot do it (O_TMPFILE refused with EOPNOTSUPP, EISDIR or
 * EINVAL, or the file not reachable through /proc: the caller uses a
 * temporary name instead); or another -errno (-ENOENT: no such
 * directory, -EACCES, -ENOSPC, ...). */
static int open_unnamed(const char *path, char *proc, size_t proclen)
{
	const char *hook = getenv("COWVM_TEST_TMPFILE_ERRNO");
	char *dup = strdup(path);
	struct stat a, b;
	int fd;

	if (!dup)
		return -ENOMEM;
	if (hook && atoi(hook) > 0) {
		errno = atoi(hook);
		fd = -1;
	} else {
		fd = open(dirname(dup), O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
	}
	free(dup);
	if (fd < 0)
		return errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL ? -EOPNOTSUPP : -errno;
	snprintf(proc, proclen, "/proc/self/fd/%d", fd);
	if (fstat(fd, &a) < 0 || stat(proc, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
		close(fd);
		return -EOPNOTSUPP;
	}
	return fd;
}

/* cow_create's messages name the file it was given; for the unnamed
 * file that is @proc, which means nothing to a reader: "'@proc': " is
 * taken out (the caller's prefix names the overlay). */
static void drop_name(struct ut_err *err, const char *proc)
{
	char pat[80];
	char *p;

	if (!err)
		return;
	snprintf(pat, sizeof(pat), "'%s': ", proc);
	p = strstr(err->msg, pat);
	if (p)
		memmove(p, p + strlen(pat), strlen(p + strlen(pat)) + 1);
}

/* Create @path as the overlay of @dev's current image, never as a
 * partial file: made unnamed in its directory (open_unnamed), or where
 * that cannot be under a temporary name beside it (open_temp), synced,
 * given its name without replacing anything (linkat of the unnamed file,
 * or ut_rename_noreplace: -EEXIST, also when a file appeared at @path
 * meanwhile) and the directory synced. Only reads dev->path, dev->size
 * and dev->ops (any thread). Returns 0 (snap->created) or -errno with
 * @err naming @path, then nothing of ours is left at either name (a kill
 * may leave the temporary one, never the unnamed file). */
static int make_overlay(struct stg_dev *dev, const char *path, struct stg_snapshot *snap,
			struct ut_err *err)
{
	struct cow_create_opts o = { 0 };
	char *base = NULL, *tmp = NULL, proc[64] = "";
	struct stat st;
	bool named = false;
	int fd = -1, r;

	/* early, for a clear message before any work: the linkat or rename
	 * is what makes sure nothing is replaced */
	if (lstat(path, &st) == 0)
		return ut_errf_sys(err, -EEXIST, "unable to create '%s'", path);
	if (errno != ENOENT)
		return ut_errf_sys(err, -errno, "unable to create '%s'", path);
	base = realpath(dev->path, NULL);
	if (!base)
		return ut_errf_sys(err, -errno, "unable to resolve the path of '%s'", dev->path);
	fd = open_unnamed(path, proc, sizeof(proc));
	if (fd == -EOPNOTSUPP) {
		proc[0] = '\0';
		fd = open_temp(path, &tmp);
	}
	if (fd < 0) {
		r = ut_errf_sys(err, fd, "unable to create '%s'", path);
		goto out;
	}
	/* as `cowvm image create -b` makes an overlay; the absolute backing
	 * name resolves the same from any name */
	o.size = dev->size;
	o.cluster_size = 65536;
	o.version = 3;
	o.extended_l2 = true;
	o.backing = base;
	o.backing_fmt = dev->ops->name;
	o.backing_open = true;   /* not opened again: the device's locks stay */
	r = cow_create(tmp ? tmp : proc, &o, err);
	if (r < 0) {
		if (!tmp)
			drop_name(err, proc);
		ut_err_prefix(err, "unable to create '%s'", path);
		goto out;
	}
	/* durable before it has the name: the name never shows a file whose
	 * header or tables a power cut could lose */
	if (fsync(fd) < 0 || fstat(fd, &st) < 0) {
		r = ut_errf_sys(err, -errno, "unable to make '%s' durable", path);
		goto out;
	}
	if (tmp)
		r = ut_rename_noreplace(tmp, path);
	else if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) < 0)
		r = -errno;
	if (r < 0) {
		r = ut_errf_sys(err, r, "unable to create '%s'", path);
		goto out;
	}
	named = true;
	r = sync_path(path, true);
	if (r < 0) {
		r = ut_errf_sys(err, r, "unable to make '%s' durable", path);
		goto out;
	}
	snap->created = true;
	/* which file is ours (the fstat before it had a name), so that
	 * stg_snapshot_abort removes that one only, whatever takes its name
	 * since */
	snap->made = true;
	snap->made_dev = (uint64_t)st.st_dev;
	snap->made_ino = (uint64_t)st.st_ino;
out:
	if (fd >= 0)
		close(fd);   /* an unnamed file not linked goes with it */
	if (r < 0 && named)
		remove_ours(path, &st);
	else if (r < 0 && tmp)
		unlink(tmp);
	free(tmp);
	free(base);
	return r;
}

/* Is the open overlay @ov one for @dev (cow_overlay_match against the file
 * at the device's name: commit checks again against the open image)? 0 or
 * -errno with @err saying what differs. */
static int check_overlay(struct stg_dev *dev, struct cow_img *ov, struct ut_err *err)
{
	struct stat st;

	if (stat(dev->path, &st) < 0)
		return ut_errf_sys(err, -errno, "unable to stat '%s'", dev->path);
	return cow_overlay_match(ov, dev->path, &st, dev->ops->name, dev->size, err);
}

/* Can @dev take an external snapshot at all? 0, -EROFS or -ENOTSUP. */
static int check_dev(struct stg_dev *dev, struct ut_err *err)
{
	if (dev->flags & STG_O_RDONLY)
		return ut_errf(err, -EROFS, "unable to snapshot '%s': the device is read-only", dev->path);
	if (!dev->ops->snapshot)
		return ut_errf(err, -ENOTSUP, "unable to snapshot '%s': the %s backend has no external snapshots",
			       dev->path, dev->ops->name);
	return 0;
}

/* prepare's flush (nothing in flight): 0, -EBUSY or the flush's error. */
static int flush_dev(struct stg_dev *dev, struct ut_err *err)
{
	char msg[UT_ERR_MSG_MAX];
	int r;

	if (stg_inflight(dev))
		return ut_errf(err, -EBUSY, "unable to snapshot '%s': requests in flight", dev->path);
	r = stg_flush(dev);
	if (r < 0) {
		stg_take_error(dev, msg, sizeof(msg));
		return ut_errf(err, r, "unable to snapshot '%s': flush failed: %s", dev->path,
			       msg[0] ? msg : strerror(-r));
	}
	return 0;
}

/* Is open @fd the file @snap made (make_overlay)? */
static bool same_file(int fd, const struct stg_snapshot *snap)
{
	struct stat st;

	return snap->made && fstat(fd, &st) == 0 && (uint64_t)st.st_dev == snap->made_dev &&
	       (uint64_t)st.st_ino == snap->made_ino;
}

/* The overlay at @path made (make_overlay) or, STG_SNAP_EXISTING, made
 * durable; opened with the device's flags and checked: snap->path and
 * snap->priv set. Any thread (reads dev->path, size, flags, ops). 0 or
 * -errno with @err (@snap holds what stg_snapshot_abort releases). */
static int setup_overlay(struct stg_dev *dev, const char *path, unsigned flags,
			 struct stg_snapshot *snap, struct ut_err *err)
{
	struct cow_img *ov = NULL;
	unsigned cf = COW_O_NO_BACKING;
	int r;

	snap->path = strdup(path);
	if (!snap->path)
		return ut_errf(err, -ENOMEM, "out of memory");
	if (!(flags & STG_SNAP_EXISTING)) {
		r = make_overlay(dev, path, snap, err);   /* synced, file and directory */
		if (r < 0)
			return r;
	} else {
		/* durable, file and directory entry, before the image is
		 * frozen (qemu-img create syncs nothing), or a power cut
		 * after the switch could lose it and every write
		 * acknowledged since */
		r = sync_path(path, false);
		if (r == 0)
			r = sync_path(path, true);
		if (r < 0)
			return ut_errf_sys(err, r, "unable to make '%s' durable", path);
	}
	if (dev->flags & STG_O_DIRECT)
		cf |= COW_O_DIRECT;
	if (dev->flags & STG_O_NO_LOCK)
		cf |= COW_O_NO_LOCK;
	/* probed: an existing file may be anything */
	r = cow_open(path, NULL, cf, &ov, err);
	if (r < 0)
		return r;
	snap->priv = ov;   /* abort or keep closes it */
	/* the file opened is the one made (not one that took its name
	 * since) */
	if (snap->created && !same_file(cow_layer_fd(ov), snap))
		return ut_errf(err, -EINVAL, "unable to snapshot '%s': '%s' was replaced or removed since it was created",
			       dev->path, path);
	return check_overlay(dev, ov, err);
}

/* create's last step: what @dev has written to its image's file so far
 * pushed to the disk, from the caller's thread while the loop thread runs
 * the device, so that prepare's flush has only what is written after.
 *
 * fdatasync reports a writeback error once per open file description
 * (the kernel's errseq cursor is in the struct file), so a sync of the
 * device's own descriptor here could take an error the device's next
 * flush then never sees: a guest told its data is safe after it was lost.
 * So the sync goes through a description of its own
 * (/proc/self/fd/N opened again: the same file, a new cursor): the
 * device's descriptor still reports every error its flush has not seen,
 * whatever this one took, and nothing of the device is touched. That
 * open and close is not allowed under the POSIX lock fallback (closing any
 * descriptor of the file would drop the device's locks, cow/lock.h) nor
 * possible without /proc: then the writeback is only started
 * (sync_file_range SYNC_FILE_RANGE_WRITE, which waits for nothing and
 * reports no writeback error, so takes none) and prepare's flush waits for
 * it. Belt and braces, as after a failed flush request: when the push
 * fails the device's later flushes fail too (stg_note_flush_failed, an
 * atomic flag: this is not the loop thread), and create fails. The sync
 * is repeated while its rounds take long and shrink (at most
 * PUSH_ROUNDS_MAX): each round writes what the guest wrote during the one
 * before. An O_DIRECT device has nothing to push. 0 or
 * -errno with @err. */
#define PUSH_ROUNDS_MAX     4
#define PUSH_ROUND_SHORT_NS (10 * 1000000LL)   /* a round this short: done */

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int push_image(struct stg_dev *dev, struct ut_err *err)
{
	int fd = dev->ops->image_fd ? dev->ops->image_fd(dev) : -1, own = -1, r = 0;
	char proc[64];

	if (fd < 0)
		return 0;   /* prepare's flush does it all */
	/* O_DIRECT: no page cache holds the image's data, so a sync here
	 * would only flush the disk's cache, which the guest's writes refill
	 * at once, and delay the switch */
	if (dev->flags & STG_O_DIRECT)
		return 0;
	if ((dev->flags & STG_O_NO_LOCK) || !cow_lock_posix()) {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
		own = open(proc, O_RDONLY | O_CLOEXEC);
	}
	if (own >= 0) {
		/* in rounds while they shrink, as a migration's pre-copy: the
		 * guest goes on writing during a long one, and what it wrote
		 * meanwhile is what prepare's flush would write with the disk
		 * stalled */
		int64_t last = 0;   /* the round before, 0: none yet */

		for (int round = 0; round < PUSH_ROUNDS_MAX; round++) {
			int64_t t0 = now_ns(), took;

			if (fdatasync(own) < 0) {
				r = -errno;
				break;
			}
			took = now_ns() - t0;
			if (took < PUSH_ROUND_SHORT_NS || (last && took > last / 4 * 3))
				break;   /* little left, or not converging */
			last = took;
		}
		close(own);
	} else if (sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) < 0 && errno != ESPIPE &&
		   errno != EINVAL) {
		r = -errno;
	}
	if (r < 0 && r != -EINVAL && r != -ENOTSUP)   /* those: no sync at all here */
		stg_note_flush_failed(dev);
	if (r < 0)
		return ut_errf_sys(err, r, "unable to snapshot '%s': unable to write its data to the disk",
				   dev->path);
	return 0;
}

int stg_snapshot_create(struct stg_dev *dev, const char *path, unsigned flags,
			struct stg_snapshot *snap, struct ut_err *err)
{
	int r;

	memset(snap, 0, sizeof(*snap));
	r = check_dev(dev, err);
	if (r < 0)
		return r;
	r = setup_overlay(dev, path, flags, snap, err);
	if (r == 0)
		r = push_image(dev, err);
	if (r < 0) {
		stg_snapshot_abort(dev, snap);
		return r;
	}
	snap->flags = flags;
	snap->early = true;
	return 0;
}

/* prepare after a create: the same overlay, flushed and checked again.
 * On failure @snap still holds it (the caller aborts or keeps). */
static int prepare_created(struct stg_dev *dev, const char *path, unsigned flags,
			   struct stg_snapshot *snap, struct ut_err *err)
{
	struct stat a, b;
	int r;

	if (!snap->priv || !snap->path || strcmp(path, snap->path) || flags != snap->flags)
		return ut_errf(err, -EINVAL, "unable to snapshot '%s': prepare is given '%s' (flags %#x), its create '%s' (flags %#x)",
			       dev->path, path, flags, snap->path ? snap->path : "", snap->flags);
	r = check_dev(dev, err);
	if (r == 0)
		r = flush_dev(dev, err);
	if (r < 0)
		return r;
	/* the file at the name is still the one open (the name is what
	 * commit gives the device), and still fits the image */
	if (fstat(cow_layer_fd(snap->priv), &a) < 0 || stat(path, &b) < 0 ||
	    a.st_dev != b.st_dev || a.st_ino != b.st_ino)
		return ut_errf(err, -EINVAL, "unable to snapshot '%s': '%s' was replaced or removed since it was created",
			       dev->path, path);
	return check_overlay(dev, snap->priv, err);
}

int stg_snapshot_prepare(struct stg_dev *dev, const char *path, unsigned flags,
			 struct stg_snapshot *snap, struct ut_err *err)
{
	int r;

	if (snap->early)
		return prepare_created(dev, path, flags, snap, err);
	memset(snap, 0, sizeof(*snap));
	r = check_dev(dev, err);
	if (r == 0)
		r = flush_dev(dev, err);
	if (r < 0)
		return r;
	r = setup_overlay(dev, path, flags, snap, err);
	/* a file made stays for the caller to remove or keep; anything else
	 * is released now */
	if (r < 0 && !snap->created)
		stg_snapshot_abort(dev, snap);
	return r;
}

int stg_snapshot_commit(struct stg_dev *dev, struct stg_snapshot *snap, struct ut_err *err)
{
	int r;

	if (!snap->priv || !snap->path)
		return ut_errf(err, -EINVAL, "unable to snapshot '%s': no overlay prepared", dev->path);
	if (stg_inflight(dev))
		return ut_errf(err, -EBUSY, "unable to snapshot '%s': requests in flight", dev->path);
	if (!dev->ops->snapshot)
		return ut_errf(err, -ENOTSUP, "unable to snapshot '%s': the %s backend has no external snapshots",
			       dev->path, dev->ops->name);
	r = dev->ops->snapshot(dev, snap->priv, err);
	if (r < 0)
		return r;
	/* the overlay is the device's now */
	free(dev->path);
	dev->path = snap->path;
	memset(snap, 0, sizeof(*snap));
	return 0;
}

/* Close what @snap holds and release it; @remove: the file create or
 * prepare made goes too (remove_ours: only if it is still the file at its
 * name). */
static void release(struct stg_snapshot *snap, bool remove)
{
	if (snap->priv)
		cow_close(snap->priv);   /* unlocks it */
	if (remove && snap->created && snap->made && snap->path) {
		struct stat st = { 0 };

		st.st_dev = (dev_t)snap->made_dev;
		st.st_ino = (ino_t)snap->made_ino;
		remove_ours(snap->path, &st);
	}
	free(snap->path);
	memset(snap, 0, sizeof(*snap));
}

void stg_snapshot_abort(struct stg_dev *dev, struct stg_snapshot *snap)
{
	(void)dev;
	release(snap, true);
}

void stg_snapshot_keep(struct stg_dev *dev, struct stg_snapshot *snap)
{
	(void)dev;
	release(snap, false);
}
