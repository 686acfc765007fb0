/* tests/fuzz/fuzz-body.h — the body shared by the libFuzzer target
 * (tests/fuzz/fuzz-qcow2.c) and the regression test that replays saved
 * inputs (tests/unit/test-cow-fuzz-regress.c): open arbitrary bytes as an
 * image (no backing files), read the start of the disk, walk the map, run
 * the read-only check. Anything but a clean error is a bug. */
#include "cow/cow.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static int cow_fuzz_one(const uint8_t *data, size_t size)
{
	int fd = memfd_create("fuzz", MFD_CLOEXEC);
	char path[64];
	struct cow_img *img = NULL;
	struct ut_err err;
	static uint8_t buf[1 << 20];

	if (fd < 0)
		return 0;
	if (size && write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (cow_open(path, "qcow2", COW_O_RDONLY | COW_O_NO_BACKING, &img, &err) == 0) {
		uint64_t sz = cow_size(img), lim = sz < (4u << 20) ? sz : (4u << 20);
		for (uint64_t off = 0; off < lim; off += sizeof(buf)) {
			uint64_t n = lim - off < sizeof(buf) ? lim - off : sizeof(buf);
			if (cow_read(img, buf, n, off, &err) < 0)
				break;
		}
		for (uint64_t off = 0, i = 0; off < sz && i < 256; i++) {
			struct cow_extent e;
			if (cow_block_status(img, off, sz - off, true, &e, &err) < 0 || !e.len)
				break;
			off += e.len;
		}
		cow_close(img);
		{
			struct cow_check_res r;
			cow_check(path, COW_REPAIR_NONE, &r, &err);
			ut_buf_release(&r.msgs);
		}
	}
	close(fd);
	return 0;
}
