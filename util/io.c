/* util/io.c — see io.h. */
#include "util/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int ut_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int ut_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int ut_unix_listen(const char *path, const char *what, struct ut_err *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return ut_errf(err, -ENAMETOOLONG, "%s path '%s' is too long (max %zu)", what, path,
			       sizeof(sa.sun_path) - 1);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return ut_errf(err, -EEXIST, "'%s' exists and is not a socket", path);
		unlink(path);   /* stale socket of a process that is gone */
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return ut_errf_sys(err, -errno, "unable to create the %s", what);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	old = umask(0177);   /* the socket file is created 0600 */
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0) {
		r = ut_errf_sys(err, -errno, "unable to bind the %s '%s'", what, path);
		close(fd);
		return r;
	}
	if (listen(fd, 8) < 0) {
		r = ut_errf_sys(err, -errno, "unable to listen on the %s '%s'", what, path);
		close(fd);
		unlink(path);
		return r;
	}
	return fd;
}

int ut_open_image(const char *path, int flags, int mode, struct ut_err *err)
{
	const char *what = (flags & O_CREAT) ? "create" : "open";
	struct stat st;
	int fd, fl, ret;

	/* O_NONBLOCK: opening a FIFO without a writer (or for writing without
	 * a reader) returns at once instead of waiting */
	fd = open(path, flags | O_NONBLOCK, mode);
	if (fd < 0)
		return ut_errf_sys(err, -errno, "unable to %s '%s'", what, path);
	if (fstat(fd, &st) < 0) {
		ret = ut_errf_sys(err, -errno, "unable to %s '%s'", what, path);
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		ret = ut_errf(err, -EISDIR, "unable to %s '%s': is a directory", what, path);
		goto fail;
	}
	if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) {
		ret = ut_errf(err, -ENODEV, "unable to %s '%s': not a regular file or block device",
			      what, path);
		goto fail;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		ret = ut_errf_sys(err, -errno, "unable to %s '%s'", what, path);
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return ret;
}

int ut_link_rename(const char *from, const char *to)
{
	if (link(from, to) < 0)
		return -errno;
	(void)unlink(from);   /* at worst a second name (io.h) */
	return 0;
}

int ut_rename_noreplace(const char *from, const char *to)
{
	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	return ut_link_rename(from, to);
}
