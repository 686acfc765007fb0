/* util/err.h — error reports that carry human context up the call chain.
 *
 * Convention (every module): a function that can fail returns a negative errno
 * and, when given a non-NULL struct ut_err, fills it with a message that names
 * the thing and the problem, e.g. "unable to open 'x.qcow2': header too short".
 * Callers add context with ut_err_prefix(). Only cli/ prints the message.
 */
#ifndef UT_ERR_H
#define UT_ERR_H

#include <stddef.h>

#define UT_ERR_MSG_MAX 1024

struct ut_err {
	int code;                  /* negative errno of the first failure, 0 if none */
	char msg[UT_ERR_MSG_MAX];  /* human message, "" if none */
};

/* Reset @e to "no error". @e may be NULL. */
void ut_err_clear(struct ut_err *e);

/* Record an error: code (negative errno) and printf-style message.
 * @e may be NULL (the message is dropped). Returns @code so callers can write
 * `return ut_errf(err, -EINVAL, "bad thing %d", x);`. A later call overwrites. */
int ut_errf(struct ut_err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Like ut_errf, appending ": strerror(-code)" to the message. */
int ut_errf_sys(struct ut_err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prepend context to an existing message: "ctx: old message". Returns e->code
 * (or -EIO if @e holds no code). @e may be NULL (returns -EIO). */
int ut_err_prefix(struct ut_err *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
