/* tests/unit/test-file.h — a file's length and the bytes it uses, for the
 * unit tests that check how an image file grows or is cut back. */
#ifndef TEST_FILE_H
#define TEST_FILE_H

#include <stdint.h>
#include <sys/stat.h>

/* st_size of @path, 0 when it cannot be stat'ed. */
static inline uint64_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* The bytes of @path's blocks (st_blocks * 512), 0 when it cannot be
 * stat'ed. */
static inline uint64_t used_bytes(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

#endif
