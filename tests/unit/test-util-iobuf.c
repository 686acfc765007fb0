/* tests/unit/test-util-iobuf.c — direct I/O buffers (util/iobuf.h): 2 MiB
 * aligned, zero-filled and writable over their whole length, for sizes from
 * one byte to several huge pages, with and without huge pages; a zero or
 * absurd length is refused with EINVAL; where the kernel has transparent
 * huge pages on ("always" or "madvise"), a huge buffer of 4 MiB is backed by
 * them (smaps AnonHugePages) and, when this process may read physical frame
 * numbers (root), each 2 MiB of it is physically contiguous. */
#include "util/iobuf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define MIB ((size_t)1 << 20)

static int thp_on(void)
{
	char s[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");

	if (!f)
		return 0;
	if (!fgets(s, sizeof(s), f))
		s[0] = 0;
	fclose(f);
	return strstr(s, "[always]") || strstr(s, "[madvise]");
}

/* kB of AnonHugePages in the smaps entry of the mapping holding @p, or -1 */
static long huge_kb(const void *p)
{
	char line[512];
	long kb = -1;
	int in = 0;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

/* the physical frame number behind virtual address @v, 0 if hidden */
static uint64_t pfn(int fd, const uint8_t *v)
{
	uint64_t e = 0;

	if (pread(fd, &e, 8, (off_t)((uintptr_t)v / 4096 * 8)) != 8)
		return 0;
	return e & ((1ull << 55) - 1);
}

/* 1: each 2 MiB piece of [p, p+len) is physically contiguous; 0: not;
 * -1: frame numbers not readable (not root) */
static int contiguous(const uint8_t *p, size_t len)
{
	int fd = open("/proc/self/pagemap", O_RDONLY);
	int ok = 1;

	if (fd < 0)
		return -1;
	for (size_t piece = 0; piece < len && ok == 1; piece += 2 * MIB) {
		uint64_t first = pfn(fd, p + piece);

		if (!first)
			ok = -1;
		for (size_t off = 4096; off < 2 * MIB && ok == 1; off += 4096)
			ok = pfn(fd, p + piece + off) == first + off / 4096;
	}
	close(fd);
	return ok;
}

int main(void)
{
	static const size_t sizes[] = { 1, 4096, 65536, 2 * MIB, 2 * MIB + 1, 64 * 65536, 9 * MIB };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		for (int huge = 0; huge < 2; huge++) {
			uint8_t *b = ut_iobuf_alloc(sizes[i], huge);
			size_t nz = 0;

			CHECK(b != NULL);
			if (!b)
				continue;
			CHECK((uintptr_t)b % (2 * MIB) == 0);
			for (size_t k = 0; k < sizes[i]; k++)
				nz += b[k] != 0;
			CHECK(nz == 0);
			memset(b, 0xa5, sizes[i]);
			CHECK(b[sizes[i] - 1] == 0xa5);
			ut_iobuf_free(b, sizes[i]);
		}
	}
	errno = 0;
	CHECK(ut_iobuf_alloc(0, true) == NULL && errno == EINVAL);
	errno = 0;
	CHECK(ut_iobuf_alloc(SIZE_MAX - MIB, false) == NULL && errno == EINVAL);
	ut_iobuf_free(NULL, 4096);

	if (thp_on()) {
		long kb = 0;
		int tries, c = -1;

		/* the kernel may be short of free 2 MiB blocks for a moment */
		for (tries = 0; tries < 3 && kb <= 0; tries++) {
			uint8_t *b = ut_iobuf_alloc(4 * MIB, true);

			CHECK(b != NULL);
			if (!b)
				break;
			kb = huge_kb(b);
			if (kb > 0)
				c = contiguous(b, 4 * MIB);
			ut_iobuf_free(b, 4 * MIB);
		}
		CHECK(kb > 0);
		CHECK(c != 0);
		printf("huge pages: %ld kB of 4096 kB; physically contiguous per 2 MiB: %s\n", kb,
		       c < 0 ? "(frame numbers not readable)" : c ? "yes" : "no");
	} else {
		printf("transparent huge pages are off: only alignment and contents checked\n");
	}
	if (failures)
		printf("FAIL: %d checks failed\n", failures);
	return failures ? 1 : 0;
}
