/* util/err.c — see err.h for the contract. */
#include "util/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void ut_err_clear(struct ut_err *e)
{
	if (!e)
		return;
	e->code = 0;
	e->msg[0] = '\0';
}

static void err_vset(struct ut_err *e, int code, const char *fmt, va_list ap)
{
	e->code = code;
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
}

int ut_errf(struct ut_err *e, int code, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return code;
	va_start(ap, fmt);
	err_vset(e, code, fmt, ap);
	va_end(ap);
	return code;
}

int ut_errf_sys(struct ut_err *e, int code, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (!e)
		return code;
	va_start(ap, fmt);
	err_vset(e, code, fmt, ap);
	va_end(ap);
	n = strlen(e->msg);
	if (n < sizeof(e->msg))
		snprintf(e->msg + n, sizeof(e->msg) - n, ": %s", strerror(-code));
	return code;
}

int ut_err_prefix(struct ut_err *e, const char *fmt, ...)
{
	char joined[2 * UT_ERR_MSG_MAX + 2];
	size_t n;
	va_list ap;

	if (!e)
		return -EIO;
	va_start(ap, fmt);
	vsnprintf(joined, UT_ERR_MSG_MAX, fmt, ap);
	va_end(ap);
	n = strlen(joined);
	if (e->msg[0]) {
		memcpy(joined + n, ": ", 2);
		memcpy(joined + n + 2, e->msg, strlen(e->msg) + 1);
	}
	memcpy(e->msg, joined, UT_ERR_MSG_MAX - 1);
	e->msg[UT_ERR_MSG_MAX - 1] = '\0';
	if (!e->code)
		e->code = -EIO;
	return e->code;
}
