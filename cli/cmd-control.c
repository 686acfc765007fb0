/* cli/cmd-control.c — `cowvm control [--timeout S] SOCKET COMMAND
 * [ARGUMENTS-JSON]`: send one command to a running VMM's control socket and
 * print the reply's JSON. Exit 0 on {"return": ...}, 1 on {"error": ...} or
 * a connection problem, 2 on usage errors. Every wait is bounded: 10 s, or
 * 300 s for the commands whose work grows with the VM (save writes its RAM,
 * blockdev-snapshot-sync flushes the disk first), or --timeout. A reply that
 * does not come in time is not a failure of the command: the VMM may still
 * finish it, and the message says so.
 *
 * The client itself, cli_control_call(), is shared with the lifecycle
 * commands (start, stop, pause, resume). */
#include "cli/cli.h"

#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CTL_TIMEOUT_MS 10000
#define CTL_LONG_TIMEOUT_MS 300000   /* save, blockdev-snapshot-sync */
#define CTL_MAX_TIMEOUT_S 86400
#define CTL_REPLY_MAX  65536

long long cli_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Strings of @o's member @key, or NULL when missing or not a string. */
static const char *json_str_member(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

void cli_status_parse(struct json_object *reply, struct cli_vm_status *st)
{
	struct json_object *ret;
	const char *s, *why;

	if (!reply || !json_object_is_type(reply, json_type_object) ||
	    !json_object_object_get_ex(reply, "return", &ret) ||
	    !json_object_is_type(ret, json_type_object) || !(s = json_str_member(ret, "status")))
		return;
	if (!strcmp(s, "paused")) {
		st->paused = true;
		st->reason = "user";
		if ((why = json_str_member(ret, "reason")) && !strcmp(why, "io-error")) {
			st->reason = "io-error";
			why = json_str_member(ret, "io-error");
			st->io_error = why ? strdup(why) : NULL;
		}
	} else if (strcmp(s, "running")) {
		return;   /* shutting-down: the catalog's stopping says more */
	}
	st->known = true;
}

/* Read one line (without the newline) into @buf, waiting until @deadline
 * (cli_now_ms() time). 0, or -errno / -ETIMEDOUT / -ECONNRESET. */
static int read_line(int fd, char *buf, size_t size, size_t *have, long long deadline)
{
	for (;;) {
		char *nl = memchr(buf, '\n', *have);
		struct pollfd p = { .fd = fd, .events = POLLIN };
		long long left = deadline - cli_now_ms();
		ssize_t n;

		if (nl) {
			*nl = '\0';
			return 0;
		}
		if (*have >= size - 1)
			return -E2BIG;
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return -ETIMEDOUT;
		n = read(fd, buf + *have, size - 1 - *have);
		if (n <= 0)
			return n ? -errno : -ECONNRESET;
		*have += (size_t)n;
		buf[*have] = '\0';
	}
}

int cli_control_connect(const char *path, int timeout_ms, struct ut_err *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = timeout_ms % 1000 * 1000 };
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return ut_errf(err, -ENAMETOOLONG, "control socket path '%s' is too long", path);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	/* connect(2) to a UNIX socket whose listen backlog is full (a VMM
	 * whose loop thread hangs) and send(2) into a full socket wait for
	 * SO_SNDTIMEO, by default for ever */
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
		r = ut_errf_sys(err, -errno, "unable to connect to '%s'", path);
		goto out;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EAGAIN)
			r = ut_errf(err, -ETIMEDOUT, "unable to connect to '%s': the VMM did not accept the connection within %d ms",
				    path, timeout_ms);
		else
			r = ut_errf_sys(err, -errno, "unable to connect to '%s'", path);
		goto out;
	}
	return fd;
out:
	if (fd >= 0)
		close(fd);
	return r;
}

int cli_control_greeting(const char *path, const char *line, struct ut_err *err)
{
	struct json_object *g = json_tokener_parse(line), *e, *d;
	int r = 0;

	if (g && json_object_is_type(g, json_type_object) && json_object_object_get_ex(g, "error", &e) &&
	    json_object_object_get_ex(e, "desc", &d))
		r = ut_errf(err, -EBUSY, "'%s': the VMM refused the connection: %s", path,
			    json_object_get_string(d));
	json_object_put(g);
	return r;
}

int cli_control_call(const char *path, const char *cmd, struct json_object *args,
		     int timeout_ms, struct json_object **reply, struct ut_err *err)
{
	struct json_object *req = NULL, *x, *d;
	long long deadline = cli_now_ms() + timeout_ms;
	char *buf = NULL;
	size_t have = 0, glen, len;
	const char *s;
	int fd = -1, r;

	*reply = NULL;
	buf = malloc(CTL_REPLY_MAX);
	if (!buf) {
		r = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	fd = cli_control_connect(path, timeout_ms, err);
	if (fd < 0) {
		r = fd;
		goto out;
	}
	r = read_line(fd, buf, CTL_REPLY_MAX, &have, deadline);   /* greeting */
	if (r) {
		ut_errf(err, r, "'%s': no greeting from the VMM: %s", path, strerror(-r));
		goto out;
	}
	r = cli_control_greeting(path, buf, err);
	if (r)
		goto out;
	glen = strlen(buf) + 1;
	have -= glen;
	memmove(buf, buf + glen, have);
	req = json_object_new_object();
	json_object_object_add(req, "execute", json_object_new_string(cmd));
	if (args)
		json_object_object_add(req, "arguments", json_object_get(args));
	s = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	len = strlen(s);
	if (send(fd, s, len, MSG_NOSIGNAL) != (ssize_t)len ||
	    send(fd, "\n", 1, MSG_NOSIGNAL) != 1) {
		r = ut_errf_sys(err, -errno, "'%s': unable to send the command", path);
		goto out;
	}
	r = read_line(fd, buf, CTL_REPLY_MAX, &have, deadline);
	if (r == -ETIMEDOUT) {
		ut_errf(err, r, "'%s': no reply to '%s' within %d ms: the VMM may still be running "
			"it (query-status tells what state the VM is in)", path, cmd, timeout_ms);
		goto out;
	}
	if (r) {
		ut_errf(err, r, "'%s': no reply to '%s': %s", path, cmd, strerror(-r));
		goto out;
	}
	*reply = json_tokener_parse(buf);
	if (!*reply || !json_object_is_type(*reply, json_type_object)) {
		r = ut_errf(err, -EPROTO, "'%s': the reply is not a JSON object", path);
		goto out;
	}
	if (json_object_object_get_ex(*reply, "return", &x)) {
		r = 0;
	} else if (json_object_object_get_ex(*reply, "error", &x)) {
		json_object_object_get_ex(x, "desc", &d);
		r = ut_errf(err, -EREMOTEIO, "%s: %s", cmd, d ? json_object_get_string(d) : "error");
	} else {
		r = ut_errf(err, -EPROTO, "'%s': unexpected reply", path);
	}
out:
	if (r && r != -EREMOTEIO) {
		json_object_put(*reply);
		*reply = NULL;
	}
	if (fd >= 0)
		close(fd);
	json_object_put(req);
	free(buf);
	return r;
}

int cli_cmd_control(int argc, char **argv)
{
	struct json_object *args = NULL, *reply = NULL, *x;
	struct ut_err err = { 0, "" };
	int r, status = CLI_EXIT_FAIL, timeout_ms = -1;
	char *end;

	/* [--timeout S] before the socket (the arguments after the command
	 * are JSON, never options) */
	if (argc > 1 && (!strcmp(argv[1], "--timeout") || !strncmp(argv[1], "--timeout=", 10))) {
		const char *v = argv[1][9] == '=' ? argv[1] + 10 : argc > 2 ? argv[2] : NULL;
		long n;

		if (!v)
			return cli_usage_error("control", "--timeout needs a number of seconds");
		errno = 0;
		n = strtol(v, &end, 10);
		if (errno || end == v || *end || n < 1 || n > CTL_MAX_TIMEOUT_S)
			return cli_usage_error("control", "--timeout '%s' is not a number of seconds "
					       "from 1 to %d", v, CTL_MAX_TIMEOUT_S);
		timeout_ms = (int)n * 1000;
		argc -= argv[1][9] == '=' ? 1 : 2;
		argv += argv[1][9] == '=' ? 1 : 2;
	}
	if (argc < 3 || argc > 4)
		return cli_usage_error("control", "expected [--timeout S] SOCKET COMMAND [ARGUMENTS-JSON]");
	if (argc == 4) {
		args = json_tokener_parse(argv[3]);
		if (!args || !json_object_is_type(args, json_type_object)) {
			json_object_put(args);
			return cli_usage_error("control", "arguments '%s' are not a JSON object", argv[3]);
		}
	}
	if (timeout_ms < 0)
		timeout_ms = !strcmp(argv[2], "save") || !strcmp(argv[2], "blockdev-snapshot-sync") ?
			     CTL_LONG_TIMEOUT_MS : CTL_TIMEOUT_MS;
	r = cli_control_call(argv[1], argv[2], args, timeout_ms, &reply, &err);
	if (r == -ENAMETOOLONG) {
		status = cli_usage_error("control", "socket path '%s' is too long", argv[1]);
		goto out;
	}
	if (r)
		cli_error_err(&err);
	if (r == 0 && json_object_object_get_ex(reply, "return", &x)) {
		printf("%s\n", json_object_to_json_string_ext(x, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
		status = CLI_EXIT_OK;
	} else if (r == -EREMOTEIO) {
		printf("%s\n", json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	}
out:
	json_object_put(args);
	json_object_put(reply);
	return status;
}
