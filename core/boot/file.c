/* core/boot/file.c — bounded reads from kernel and initrd files.
 *
 * Every offset and length that comes from a file's own headers passes through
 * here, so the range checks live in one place.
 */
#include "core/boot/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

int vmm_boot_file_open(struct vmm_boot_file *f, const char *path, struct ut_err *err)
{
	struct stat st;
	int r;

	f->fd = -1;
	f->size = 0;
	f->path = path;
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0)
		return ut_errf_sys(err, -errno, "unable to open '%s'", path);
	if (fstat(f->fd, &st) < 0) {
		r = ut_errf_sys(err, -errno, "unable to open '%s'", path);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = ut_errf(err, -EINVAL, "unable to open '%s': not a regular file", path);
		goto out;
	}
	f->size = (uint64_t)st.st_size;
	return 0;
out:
	vmm_boot_file_close(f);
	return r;
}

void vmm_boot_file_close(struct vmm_boot_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
}

static int check_range(const struct vmm_boot_file *f, uint64_t off, uint64_t len,
		       const char *what, struct ut_err *err)
{
	if (off > f->size || len > f->size - off)
		return ut_errf(err, -EINVAL,
			       "%s (file offset 0x%llx, %llu bytes) lies beyond the end of the file (%llu bytes)",
			       what, (unsigned long long)off, (unsigned long long)len,
			       (unsigned long long)f->size);
	return 0;
}

static int read_exact(const struct vmm_boot_file *f, uint64_t off, void *buf, uint64_t len,
		      const char *what, struct ut_err *err)
{
	uint8_t *p = buf;

	while (len) {
		size_t chunk = len > (1u << 30) ? (1u << 30) : (size_t)len;
		ssize_t n = pread(f->fd, p, chunk, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ut_errf_sys(err, -errno, "unable to read %s", what);
		}
		if (n == 0)
			return ut_errf(err, -EIO, "unable to read %s: file shrank while reading", what);
		p += n;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

int vmm_boot_file_read(const struct vmm_boot_file *f, uint64_t off, void *buf, uint64_t len,
		       const char *what, struct ut_err *err)
{
	int r = check_range(f, off, len, what, err);

	if (r < 0)
		return r;
	return read_exact(f, off, buf, len, what, err);
}

int vmm_boot_file_to_guest(const struct vmm_boot_file *f, uint64_t off, uint64_t len,
			   const struct vmm_mem *mem, uint64_t gpa, const char *what,
			   struct ut_err *err)
{
	void *dst;
	int r = check_range(f, off, len, what, err);

	if (r < 0)
		return r;
	dst = vmm_mem_ptr(mem, gpa, len);
	if (!dst)
		return ut_errf(err, -EFAULT,
			       "%s (%llu bytes at guest address 0x%llx) does not fit in guest RAM",
			       what, (unsigned long long)len, (unsigned long long)gpa);
	return read_exact(f, off, dst, len, what, err);
}
