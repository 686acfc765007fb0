/* tests/unit/cat_test.h — tiny check macros and temp homes for the catalog tests. */
#ifndef CAT_TEST_H
#define CAT_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog/catalog.h"

static int t_failures;

#define CHECK(cond) do { \
	if (!(cond)) { \
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
		t_failures++; \
	} \
} while (0)

/* Expect @call to fail with @code and a message containing @needle. */
#define CHECK_ERR(call, code, needle, errp) do { \
	int r_ = (call); \
	if (r_ != (code) || !strstr((errp)->msg, (needle))) { \
		fprintf(stderr, "%s:%d: %s: want %d with \"%s\", got %d \"%s\"\n", __FILE__, \
			__LINE__, #call, (code), (needle), r_, (errp)->msg); \
		t_failures++; \
	} else { \
		printf("  ok: %s\n", (errp)->msg); \
	} \
	ut_err_clear(errp); \
} while (0)

#define CHECK_OK(call, errp) do { \
	int r_ = (call); \
	if (r_ < 0) { \
		fprintf(stderr, "%s:%d: %s failed: %d %s\n", __FILE__, __LINE__, #call, r_, \
			(errp)->msg); \
		t_failures++; \
	} \
} while (0)

/* A fresh temporary directory (removed by t_rmtree). */
static inline char *t_tmpdir(void)
{
	char tmpl[] = "/tmp/cowvm-test-XXXXXX";
	char *d = mkdtemp(tmpl);

	if (!d) {
		perror("mkdtemp");
		exit(2);
	}
	return strdup(d);
}

static inline void t_rmtree(const char *dir)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", dir);
}

/* Write a file of @size bytes (sparse) at DIR/NAME; returns the malloc'd path. */
static inline char *t_file(const char *dir, const char *name, long size)
{
	char *p;
	FILE *f;

	if (asprintf(&p, "%s/%s", dir, name) < 0)
		exit(2);
	f = fopen(p, "w");
	if (!f || (size && (fseek(f, size - 1, SEEK_SET) || fputc(0, f) == EOF)) || fclose(f)) {
		perror(p);
		exit(2);
	}
	return p;
}

/* A minimal valid definition named @name using kernel @kernel. */
static inline void t_vm(struct cat_vm *vm, const char *name, const char *kernel)
{
	struct ut_err err;

	if (cat_vm_init_defaults(vm, &err) < 0)
		exit(2);
	vm->name = strdup(name);
	vm->kernel = strdup(kernel);
}

static inline int t_done(const char *what)
{
	if (t_failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", what, t_failures);
		return 1;
	}
	printf("%s: all checks passed\n", what);
	return 0;
}

#endif
