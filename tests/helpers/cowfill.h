/* tests/helpers/cowfill.h — filling and checking ranges of a cow/ image
 * with one byte value, and checking an image clean, for the unit tests. */
#ifndef TESTS_COWFILL_H
#define TESTS_COWFILL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include "cow/cow.h"

/* Does [@off, @off+@len) of @img read as @v everywhere? */
static inline bool test_reads_as(struct cow_img *img, uint64_t off, uint64_t len, uint8_t v)
{
	uint8_t *b = malloc(len);
	struct ut_err err;
	bool ok = b && cow_read(img, b, len, off, &err) == 0;

	for (uint64_t i = 0; ok && i < len; i++)
		ok = b[i] == v;
	free(b);
	return ok;
}

/* Write @v over [@off, @off+@len) of @img. 0 or -errno. */
static inline int test_write_pat(struct cow_img *img, uint64_t off, uint64_t len, uint8_t v)
{
	uint8_t *b = malloc(len);
	struct ut_err err;
	int r = -ENOMEM;

	if (b) {
		memset(b, v, len);
		r = cow_write(img, b, len, off, &err);
	}
	free(b);
	return r;
}

/* Does cow_check find @path clean (it runs, no corruption, no leak)? Prints
 * what it found otherwise. */
static inline bool test_checks_clean(const char *path)
{
	struct cow_check_res r;
	struct ut_err err;
	bool ok;

	memset(&r, 0, sizeof(r));
	ok = cow_check(path, COW_REPAIR_NONE, &r, &err) == 0 && r.corruptions == 0 && r.leaks == 0;
	if (!ok)
		fprintf(stderr, "%s:\n%.*s\n", path, (int)r.msgs.len, r.msgs.data ? (char *)r.msgs.data : "");
	ut_buf_release(&r.msgs);
	return ok;
}

#endif
