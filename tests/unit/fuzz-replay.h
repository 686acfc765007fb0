/* tests/unit/fuzz-replay.h — replay the saved fuzz inputs of
 * tests/fuzz/regress/ (under $COWVM_SRC, else the current directory) through
 * a fuzz body without libFuzzer: the loop shared by
 * tests/unit/test-cow-fuzz-regress.c and test-devstate-fuzz-regress.c.
 *
 * They differ in which inputs they take and in how strict they are:
 *   @prefixes  NULL-terminated list: an input is taken when its name starts
 *              with one of them; NULL takes every file (names starting
 *              with '.' are never taken);
 *   @strict    an input that cannot be opened or read fails the replay
 *              (a lost regression input must not pass unseen); else it is
 *              left out.
 * Each input's name is printed before it runs (flushed: a crash shows the
 * input that caused it), then @body gets its bytes (a heap copy of exactly
 * that length: ASan sees a read past the end).
 *
 * Returns the number of inputs replayed, FZ_NO_CORPUS when there is no
 * corpus directory (the test skips: 77), or -1 (strict: an input
 * unreadable; message on stderr).
 */
#ifndef TESTS_UNIT_FUZZ_REPLAY_H
#define TESTS_UNIT_FUZZ_REPLAY_H

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FZ_NO_CORPUS (-77)

/* @path's bytes in *@data (malloc'd, at least 1 byte) and *@len. 0 or
 * -errno (-EINVAL: not a regular file). */
static inline int fz_read_file(const char *path, uint8_t **data, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	size_t n;
	int r = 0;

	*data = NULL;
	*len = 0;
	if (!f)
		return -errno;
	if (fstat(fileno(f), &st) < 0) {
		r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;   /* not a regular file */
		goto out;
	}
	n = (size_t)st.st_size;
	*data = malloc(n ? n : 1);
	if (!*data) {
		r = -ENOMEM;
		goto out;
	}
	if (fread(*data, 1, n, f) != n) {
		free(*data);
		*data = NULL;
		r = -EIO;
		goto out;
	}
	*len = n;
out:
	fclose(f);
	return r;
}

static inline bool fz_taken(const char *name, const char *const *prefixes)
{
	if (name[0] == '.')
		return false;
	if (!prefixes)
		return true;
	for (; *prefixes; prefixes++)
		if (!strncmp(name, *prefixes, strlen(*prefixes)))
			return true;
	return false;
}

static inline int fz_replay(const char *const *prefixes, bool strict,
			    void (*body)(const char *name, const uint8_t *data, size_t len))
{
	const char *src = getenv("COWVM_SRC");
	char dir[4096], path[8192];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(dir, sizeof(dir), "%s/tests/fuzz/regress", src ? src : ".");
	d = opendir(dir);
	if (!d) {
		printf("no regression corpus at %s\n", dir);
		return FZ_NO_CORPUS;
	}
	while ((de = readdir(d))) {
		uint8_t *data = NULL;
		size_t len = 0;
		int r;

		if (!fz_taken(de->d_name, prefixes))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		r = fz_read_file(path, &data, &len);
		if (r) {
			if (!strict)
				continue;
			fprintf(stderr, "%s: unreadable: %s\n", path, strerror(-r));
			closedir(d);
			return -1;
		}
		printf("%s\n", de->d_name);
		fflush(stdout);
		body(de->d_name, data, len);
		free(data);
		n++;
	}
	closedir(d);
	return n;
}

#endif
