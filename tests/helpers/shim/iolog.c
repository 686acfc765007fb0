/* tests/helpers/shim/iolog.c — LD_PRELOAD library for the power-cut tests
 * (tests/interop/qemu-img-powercut.sh, storage-snapshot-powercut.sh;
 * replayed by tests/helpers/powercut): records, in order, every change a
 * process makes to one file, or to every file of one directory, and every
 * completed fdatasync/fsync of them, plus what it writes to a marker file
 * (the writer's log of what it was told is durable).
 *
 *   IOLOG_IMAGE  one-file mode: the file whose changes are recorded
 *                (compared by device and inode, so every fd and path that
 *                reaches it counts)
 *   IOLOG_DIR    directory mode (instead): every regular file in that
 *                directory (by inode, an id each; tests/helpers/iolog.h),
 *                those there at the start (NAME records) and those created
 *                there later, named or not, and the directory's namespace
 *                changes: creation (open/openat with O_CREAT that made the
 *                file), an unnamed file made there (open/openat of the
 *                directory itself with O_TMPFILE: TMPFILE, an id and no
 *                name), rename/renameat/renameat2, link/linkat (also of a
 *                file with an id reached from outside the directory's
 *                names, /proc/self/fd/N or AT_EMPTY_PATH: LINK_FILE, how
 *                an unnamed file gets its name), unlink/unlinkat, and
 *                fsync/fdatasync of the directory itself. A file with an
 *                id opened with O_TRUNC through a path outside the
 *                directory (/proc/self/fd/N) is recorded cut to 0, and its
 *                writes and syncs through any descriptor are recorded
 *                (files are known by inode). Subdirectories
 *                are not followed; one process per log (IOLOG_OUT must be
 *                empty: a child that inherits the preload aborts, ids are
 *                per process); a rename or link between the directory
 *                and another one (a link into it of a file without an id),
 *                a file of the directory written that was
 *                created by a call not intercepted here (mkstemp's internal
 *                open, a syscall()), abort the process: the record would
 *                be wrong.
 *   IOLOG_MARK   the marker file (outside IOLOG_DIR): its writes are
 *                recorded as markers
 *   IOLOG_OUT    where the records go (appended)
 *   IOLOG_NOREPLACE_EINVAL=1  renameat2 with RENAME_NOREPLACE fails with
 *                EINVAL, as on a file system without it (util/io.c then
 *                links and unlinks instead)
 *
 * Record: struct iolog_rec (tests/helpers/iolog.h), then len bytes of data
 * for writes, markers and names. Intercepts write, pwrite, pwritev(2),
 * ftruncate, fallocate, fdatasync and fsync (the calls cow/ and storage/'s
 * threads engine make; not io_uring, which bypasses libc), and in
 * directory mode open/openat (O_CREAT, O_TRUNC, O_TMPFILE), rename, renameat,
 * renameat2, link, linkat, unlink and unlinkat (what storage/snapshot.c and
 * util/io.c call). Everything is passed on to libc unchanged. Threads:
 * each record is written whole under a lock, after the call returned
 * (before the caller can act on it), so a change recorded before a sync's
 * SYNC_START finished before that sync began, and the sync covers it; a
 * change that finishes while a sync runs is recorded after its SYNC_START
 * and counts as not covered (what a disk may lose). Namespace calls are
 * made one at a time (a second lock), so that whether a name existed
 * before an open with O_CREAT is known. */
#include "tests/helpers/iolog.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static int out_fd = -2;
static dev_t img_dev, mark_dev, dir_dev;
static ino_t img_ino, mark_ino, dir_ino;
static int have_img, have_mark, have_dir;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t ns_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t sync_ids;

/* directory mode: the files known, by inode (a later entry for the same
 * inode, made when a freed inode number is used again, wins) */
struct known {
	dev_t dev;
	ino_t ino;
	uint64_t id;
};
static struct known files[4096];
static unsigned nfiles;   /* under lock */
static char dir_path[4096];   /* its real path */

static void rec(uint32_t type, uint64_t file, uint64_t off, uint64_t len, uint64_t arg,
		const struct iovec *iov, int iovcnt);

static void die(const char *what)
{
	char m[512];
	int n = snprintf(m, sizeof(m), "iolog: %s: the record would be wrong\n", what);

	if (n > 0)
		(void)!syscall(SYS_write, 2, m, (size_t)n < sizeof(m) ? (size_t)n : sizeof(m) - 1);
	abort();
}

/* The id of the file @dev/@ino (0: not known). Under lock. */
static uint64_t lookup(dev_t dev, ino_t ino)
{
	for (unsigned i = nfiles; i-- > 0;)
		if (files[i].dev == dev && files[i].ino == ino)
			return files[i].id;
	return 0;
}

/* A new id for @dev/@ino (a created file); under lock. */
static uint64_t add_file(dev_t dev, ino_t ino)
{
	if (nfiles == sizeof(files) / sizeof(files[0]))
		die("too many files");
	files[nfiles] = (struct known){ dev, ino, nfiles + 1 };
	return files[nfiles++].id;
}

static void name_rec(uint32_t type, uint64_t file, uint64_t arg, const char *a, const char *b)
{
	struct iovec v[2] = { { (void *)a, strlen(a) + 1 }, { (void *)b, b ? strlen(b) + 1 : 0 } };

	rec(type, file, 0, v[0].iov_len + v[1].iov_len, arg, v, b ? 2 : 1);
}

/* directory mode: an id for every regular file there, NAME records */
static void scan_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	struct stat st;

	if (!d || !realpath(dir, dir_path))
		die("IOLOG_DIR unreadable");
	while ((de = readdir(d))) {
		uint64_t id;

		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			die("IOLOG_DIR unreadable");
		if (!S_ISREG(st.st_mode))
			continue;
		pthread_mutex_lock(&lock);
		id = lookup(st.st_dev, st.st_ino);
		if (!id)
			id = add_file(st.st_dev, st.st_ino);
		pthread_mutex_unlock(&lock);
		name_rec(IOLOG_REC_NAME, id, 0, de->d_name, NULL);
	}
	closedir(d);
}

static void init_once(void)
{
	const char *img = getenv("IOLOG_IMAGE"), *mark = getenv("IOLOG_MARK");
	const char *out = getenv("IOLOG_OUT"), *dir = getenv("IOLOG_DIR");
	struct stat st;

	if (out_fd != -2)
		return;
	out_fd = -1;
	if ((!img && !dir) || !out)
		return;
	if (img && stat(img, &st) == 0) {
		img_dev = st.st_dev;
		img_ino = st.st_ino;
		have_img = 1;
	}
	if (!img && dir && stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
		dir_dev = st.st_dev;
		dir_ino = st.st_ino;
		have_dir = 1;
	}
	if (mark && stat(mark, &st) == 0) {
		mark_dev = st.st_dev;
		mark_ino = st.st_ino;
		have_mark = 1;
	}
	out_fd = (int)syscall(SYS_openat, AT_FDCWD, out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (out_fd >= 0 && have_dir) {
		/* the ids are this process's: one process per log */
		if (fstat(out_fd, &st) < 0 || st.st_size)
			die("IOLOG_OUT is not empty (directory mode records one process)");
		scan_dir(dir);
	}
}

static void init(void)
{
	pthread_once(&once, init_once);
}

/* Is the open file @fd in the directory (by /proc/self/fd)? For a file not
 * known: one made by a call not intercepted. */
static int unknown_in_dir(int fd)
{
	char proc[64], path[4200];
	ssize_t n;
	char *slash;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, path, sizeof(path) - 1);
	if (n <= 0)
		return 0;
	path[n] = '\0';
	slash = strrchr(path, '/');
	if (!slash)
		return 0;
	*slash = '\0';
	return !strcmp(path, dir_path) && !strstr(slash + 1, " (deleted)");
}

/* 1: a file recorded (*id: its id, 0 in one-file mode), 2: the marker
 * file, 3: the directory itself (directory mode), 0: none of them.
 * @changing: the caller changes the file (a file of the directory not
 * known is an error then). */
static int which_id(int fd, uint64_t *id, int changing)
{
	struct stat st;

	init();
	*id = 0;
	if (out_fd < 0 || fstat(fd, &st) < 0)
		return 0;
	if (have_mark && st.st_dev == mark_dev && st.st_ino == mark_ino)
		return 2;
	if (have_img)
		return st.st_dev == img_dev && st.st_ino == img_ino;
	if (!have_dir)
		return 0;
	if (S_ISDIR(st.st_mode)) {
		*id = IOLOG_FILE_DIR;
		return st.st_dev == dir_dev && st.st_ino == dir_ino ? 3 : 0;
	}
	pthread_mutex_lock(&lock);
	*id = lookup(st.st_dev, st.st_ino);
	pthread_mutex_unlock(&lock);
	if (*id)
		return 1;
	if (changing && S_ISREG(st.st_mode) && st.st_dev == dir_dev && unknown_in_dir(fd))
		die("a file of IOLOG_DIR changed that was not created through open/openat");
	return 0;
}

static void put(const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		long w = syscall(SYS_write, out_fd, c, n);
		if (w <= 0) {
			if (w < 0 && errno == EINTR)
				continue;
			abort();   /* a lost record would make the test lie */
		}
		c += w;
		n -= (size_t)w;
	}
}

static void rec(uint32_t type, uint64_t file, uint64_t off, uint64_t len, uint64_t arg,
		const struct iovec *iov, int iovcnt)
{
	struct iolog_rec r = { .magic = IOLOG_REC_MAGIC, .type = type, .off = off, .len = len, .arg = arg,
			       .file = file };
	uint64_t left = len;

	pthread_mutex_lock(&lock);
	put(&r, sizeof(r));
	for (int i = 0; i < iovcnt && left; i++) {
		size_t n = iov[i].iov_len < left ? iov[i].iov_len : (size_t)left;
		put(iov[i].iov_base, n);
		left -= n;
	}
	pthread_mutex_unlock(&lock);
}

/* SYNC_START before an fdatasync/fsync of a recorded file or of the
 * directory; returns its id (0: neither) and the file's in *file. */
static uint64_t sync_start(int fd, uint64_t *file)
{
	uint64_t id;
	int w = which_id(fd, file, 0);

	if (w != 1 && w != 3)
		return 0;
	id = __atomic_add_fetch(&sync_ids, 1, __ATOMIC_SEQ_CST);
	rec(IOLOG_REC_SYNC_START, *file, 0, 0, id, NULL, 0);
	return id;
}

#define REAL(name, ret, ...) \
	static ret (*real_##name)(__VA_ARGS__); \
	if (!real_##name) \
		real_##name = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

static void after_write(int fd, const struct iovec *iov, int iovcnt, ssize_t done, off_t off,
			int positional)
{
	uint64_t id;
	int w;

	if (done <= 0 || !(w = which_id(fd, &id, 1)) || w == 3)
		return;
	if (w == 2) {
		rec(IOLOG_REC_MARK, 0, 0, (uint64_t)done, 0, iov, iovcnt);
		return;
	}
	if (!positional)
		off = lseek(fd, 0, SEEK_CUR) - done;
	rec(IOLOG_REC_WRITE, id, (uint64_t)off, (uint64_t)done, 0, iov, iovcnt);
}

ssize_t write(int fd, const void *buf, size_t n)
{
	REAL(write, ssize_t, int, const void *, size_t);
	ssize_t r = real_write(fd, buf, n);
	struct iovec v = { (void *)buf, n };

	after_write(fd, &v, 1, r, 0, 0);
	return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite, ssize_t, int, const void *, size_t, off_t);
	ssize_t r = real_pwrite(fd, buf, n, off);
	struct iovec v = { (void *)buf, n };

	after_write(fd, &v, 1, r, off, 1);
	return r;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	return pwrite(fd, buf, n, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	REAL(pwritev, ssize_t, int, const struct iovec *, int, off_t);
	ssize_t r = real_pwritev(fd, iov, iovcnt, off);

	after_write(fd, iov, iovcnt, r, off, 1);
	return r;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	return pwritev(fd, iov, iovcnt, off);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int iovcnt, off_t off, int flags)
{
	REAL(pwritev2, ssize_t, int, const struct iovec *, int, off_t, int);
	ssize_t r = real_pwritev2(fd, iov, iovcnt, off, flags);

	after_write(fd, iov, iovcnt, r, off, off != -1);
	return r;
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int iovcnt, off_t off, int flags)
{
	return pwritev2(fd, iov, iovcnt, off, flags);
}

int ftruncate(int fd, off_t len)
{
	REAL(ftruncate, int, int, off_t);
	int r = real_ftruncate(fd, len);
	uint64_t id;

	if (r == 0 && which_id(fd, &id, 1) == 1)
		rec(IOLOG_REC_TRUNCATE, id, (uint64_t)len, 0, 0, NULL, 0);
	return r;
}

int ftruncate64(int fd, off_t len)
{
	return ftruncate(fd, len);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	REAL(fallocate, int, int, int, off_t, off_t);
	int r = real_fallocate(fd, mode, off, len);
	uint64_t id;

	if (r == 0 && which_id(fd, &id, 1) == 1)
		rec(IOLOG_REC_FALLOCATE, id, (uint64_t)off, (uint64_t)len, (uint64_t)mode, NULL, 0);
	return r;
}

int fallocate64(int fd, int mode, off_t off, off_t len)
{
	return fallocate(fd, mode, off, len);
}

/* fdatasync or fsync through @real, recorded as SYNC_START ... SYNC. */
static int recorded_sync(int fd, int (*real)(int))
{
	uint64_t file, id = sync_start(fd, &file);
	int r = real(fd);

	if (r == 0 && id)
		rec(IOLOG_REC_SYNC, file, 0, 0, id, NULL, 0);
	return r;
}

int fdatasync(int fd)
{
	REAL(fdatasync, int, int);
	return recorded_sync(fd, real_fdatasync);
}

int fsync(int fd)
{
	REAL(fsync, int, int);
	return recorded_sync(fd, real_fsync);
}

/* ---- directory mode: the namespace ---- */

/* Is @path (relative to @dirfd) a name in the directory? Its last
 * component in @name (size 256). */
static int in_dir(int dirfd, const char *path, char *name)
{
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	char parent[4096];
	struct stat st;
	int r;

	init();
	if (!have_dir || out_fd < 0 || !*base || !strcmp(base, ".") || !strcmp(base, "..") ||
	    strlen(base) > 255)
		return 0;
	if (!slash) {
		r = dirfd == AT_FDCWD ? stat(".", &st) : fstat(dirfd, &st);
	} else {
		size_t n = (size_t)(slash - path);
		if (n >= sizeof(parent))
			return 0;
		memcpy(parent, path, n);
		parent[n] = '\0';
		r = fstatat(dirfd, n ? parent : "/", &st, 0);
	}
	if (r < 0 || st.st_dev != dir_dev || st.st_ino != dir_ino)
		return 0;
	strcpy(name, base);
	return 1;
}

/* Is @path (relative to @dirfd) the directory itself? */
static int is_dir(int dirfd, const char *path)
{
	struct stat st;

	init();
	return have_dir && out_fd >= 0 && fstatat(dirfd, path, &st, 0) == 0 && S_ISDIR(st.st_mode) &&
	       st.st_dev == dir_dev && st.st_ino == dir_ino;
}

/* open/openat: a file created in the directory gets an id (CREATE), an
 * unnamed one made there too (TMPFILE), an existing one recorded opened
 * with O_TRUNC is cut to 0, by any path. */
static int recorded_open(int dirfd, const char *path, int flags, mode_t mode,
			 int (*real)(int, const char *, int, ...))
{
	char name[256];
	struct stat st;
	int fd, inside, existed = 1;
	uint64_t id;

	if ((flags & O_TMPFILE) == O_TMPFILE && is_dir(dirfd, path)) {
		pthread_mutex_lock(&ns_lock);
		fd = real(dirfd, path, flags, mode);
		if (fd >= 0 && fstat(fd, &st) == 0) {
			pthread_mutex_lock(&lock);
			id = add_file(st.st_dev, st.st_ino);
			pthread_mutex_unlock(&lock);
			rec(IOLOG_REC_TMPFILE, id, 0, 0, 0, NULL, 0);
		} else if (fd >= 0) {
			die("an unnamed file made in IOLOG_DIR cannot be stat'ed");
		}
		pthread_mutex_unlock(&ns_lock);
		return fd;
	}
	if (!(flags & (O_CREAT | O_TRUNC)))
		return real(dirfd, path, flags, mode);
	inside = in_dir(dirfd, path, name);
	if (!inside) {
		/* a file with an id by another path (/proc/self/fd/N) */
		fd = real(dirfd, path, flags, mode);
		if (fd >= 0 && have_dir && (flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY &&
		    which_id(fd, &id, 1) == 1)
			rec(IOLOG_REC_TRUNCATE, id, 0, 0, 0, NULL, 0);
		return fd;
	}
	pthread_mutex_lock(&ns_lock);
	existed = fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0;
	fd = real(dirfd, path, flags, mode);
	if (fd >= 0 && !existed && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		pthread_mutex_lock(&lock);
		id = add_file(st.st_dev, st.st_ino);
		pthread_mutex_unlock(&lock);
		name_rec(IOLOG_REC_CREATE, id, 0, name, NULL);
	} else if (fd >= 0 && existed && (flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY &&
		   which_id(fd, &id, 1) == 1) {
		rec(IOLOG_REC_TRUNCATE, id, 0, 0, 0, NULL, 0);
	}
	pthread_mutex_unlock(&ns_lock);
	return fd;
}

static int open_mode(int flags, va_list ap)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (int)va_arg(ap, mode_t) : 0;
}

int open(const char *path, int flags, ...)
{
	REAL(openat, int, int, const char *, int, ...);
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = (mode_t)open_mode(flags, ap);
	va_end(ap);
	return recorded_open(AT_FDCWD, path, flags, mode, real_openat);
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...)
{
	REAL(openat, int, int, const char *, int, ...);
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = (mode_t)open_mode(flags, ap);
	va_end(ap);
	return recorded_open(dirfd, path, flags, mode, real_openat);
}

int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

/* A rename or link (@type) from @ofd/@old to @nfd/@new, made by @call
 * with @flags (recorded for a rename: renameat2's). */
static int recorded_pair(uint32_t type, int ofd, const char *old, int nfd, const char *new,
			 unsigned flags, int (*call)(int, const char *, int, const char *, unsigned))
{
	char a[256], b[256];
	int ia, ib, r;

	ia = in_dir(ofd, old, a);
	ib = in_dir(nfd, new, b);
	if (!ia && !ib)
		return call(ofd, old, nfd, new, flags);
	pthread_mutex_lock(&ns_lock);
	r = call(ofd, old, nfd, new, flags);
	if (r == 0 && ia != ib)
		die("a rename or link between IOLOG_DIR and another directory");
	if (r == 0)
		name_rec(type, 0, type == IOLOG_REC_RENAME ? flags : 0, a, b);
	pthread_mutex_unlock(&ns_lock);
	return r;
}

static int call_renameat2(int ofd, const char *old, int nfd, const char *new, unsigned flags)
{
	REAL(renameat2, int, int, const char *, int, const char *, unsigned);
	return real_renameat2(ofd, old, nfd, new, flags);
}

static int call_linkat(int ofd, const char *old, int nfd, const char *new, unsigned flags)
{
	REAL(linkat, int, int, const char *, int, const char *, int);
	return real_linkat(ofd, old, nfd, new, (int)flags);
}

int renameat2(int ofd, const char *old, int nfd, const char *new, unsigned flags)
{
	const char *e = getenv("IOLOG_NOREPLACE_EINVAL");

	/* a file system without RENAME_NOREPLACE, as the kernel tells it */
	if (e && !strcmp(e, "1") && (flags & RENAME_NOREPLACE)) {
		errno = EINVAL;
		return -1;
	}
	return recorded_pair(IOLOG_REC_RENAME, ofd, old, nfd, new, flags, call_renameat2);
}

int renameat(int ofd, const char *old, int nfd, const char *new)
{
	return renameat2(ofd, old, nfd, new, 0);
}

int rename(const char *old, const char *new)
{
	return renameat2(AT_FDCWD, old, AT_FDCWD, new, 0);
}

/* linkat of a file reached from outside the directory's names
 * (/proc/self/fd/N with AT_SYMLINK_FOLLOW, or @ofd itself with
 * AT_EMPTY_PATH) to the name @b in it: LINK_FILE for a file with an id. */
static int linked_in(int ofd, const char *old, int nfd, const char *new, int flags, const char *b)
{
	struct stat st;
	uint64_t id = 0;
	int r;

	pthread_mutex_lock(&ns_lock);
	if ((flags & AT_EMPTY_PATH) && !*old)
		r = fstat(ofd, &st);
	else
		r = fstatat(ofd, old, &st, (flags & AT_SYMLINK_FOLLOW) ? 0 : AT_SYMLINK_NOFOLLOW);
	if (r == 0) {
		pthread_mutex_lock(&lock);
		id = lookup(st.st_dev, st.st_ino);
		pthread_mutex_unlock(&lock);
	}
	r = call_linkat(ofd, old, nfd, new, (unsigned)flags);
	if (r == 0 && !id)
		die("a file without an id linked into IOLOG_DIR");
	if (r == 0)
		name_rec(IOLOG_REC_LINK_FILE, id, 0, b, NULL);
	pthread_mutex_unlock(&ns_lock);
	return r;
}

int linkat(int ofd, const char *old, int nfd, const char *new, int flags)
{
	char a[256], b[256];

	if (!in_dir(ofd, old, a) && in_dir(nfd, new, b))
		return linked_in(ofd, old, nfd, new, flags, b);
	return recorded_pair(IOLOG_REC_LINK, ofd, old, nfd, new, (unsigned)flags, call_linkat);
}

int link(const char *old, const char *new)
{
	return linkat(AT_FDCWD, old, AT_FDCWD, new, 0);
}

int unlinkat(int dirfd, const char *path, int flags)
{
	REAL(unlinkat, int, int, const char *, int);
	char name[256];
	int r;

	if (!in_dir(dirfd, path, name))
		return real_unlinkat(dirfd, path, flags);
	pthread_mutex_lock(&ns_lock);
	r = real_unlinkat(dirfd, path, flags);
	if (r == 0 && !(flags & AT_REMOVEDIR))
		name_rec(IOLOG_REC_UNLINK, 0, 0, name, NULL);
	pthread_mutex_unlock(&ns_lock);
	return r;
}

int unlink(const char *path)
{
	return unlinkat(AT_FDCWD, path, 0);
}
