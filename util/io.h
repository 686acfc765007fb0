/* util/io.h — small I/O helpers shared by every layer.
 */
#ifndef UT_IO_H
#define UT_IO_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Write all @len bytes (retrying short writes and EINTR). 0 or -errno. */
int ut_write_all(int fd, const void *buf, size_t len);
/* The same at file offset @off. 0 or -errno. */
int ut_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);

/* open(2) for a disk image: @flags and @mode as open's. A FIFO or socket
 * would block the open (no writer) or every read; they are refused with
 * -ENODEV ("not a regular file or block device"), as a directory is with
 * -EISDIR. The fd is returned without O_NONBLOCK. Returns the fd, or
 * -errno with @err naming @path (the message begins "unable to open" or
 * "unable to create" when @flags has O_CREAT). */
int ut_open_image(const char *path, int flags, int mode, struct ut_err *err);

/* A listening UNIX stream socket at @path (non-blocking, close-on-exec),
 * created with mode 0600. A stale socket file is replaced; any other file
 * at @path is refused (-EEXIST) and left alone. Returns the fd or -errno
 * with @err naming @what ("control socket") and the path. */
int ut_unix_listen(const char *path, const char *what, struct ut_err *err);

/* Give the file at @from the name @to, never replacing a file there:
 * renameat2(RENAME_NOREPLACE), or, where the file system refuses that flag
 * (EINVAL; ENOSYS: a kernel without renameat2), ut_link_rename. Either
 * way atomic: a file at @to, even one that appears while this runs, makes
 * it fail with -EEXIST and leaves both names as they were. Returns 0 or
 * -errno (then @from is still there, unless the error came after the
 * link: see ut_link_rename). No directory is synced. */
int ut_rename_noreplace(const char *from, const char *to);

/* ut_rename_noreplace's fallback, on its own for tests: link(@from, @to)
 * (-EEXIST when @to exists: nothing changed), then unlink(@from). Returns
 * 0 (a failed unlink leaves @from as a second name of the file, and still
 * returns 0: the file is at @to) or link's -errno. */
int ut_link_rename(const char *from, const char *to);

#endif
