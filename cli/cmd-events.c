/* cli/cmd-events.c — `cowvm events NAME | --socket PATH [--timeout S]
 * [--count N] [--json]`: print the events of a running VM's VMM (the
 * QMP-style events of its control socket, core/control.h) as they come, as
 * `virsh qemu-monitor-event --loop` does for QEMU: connect, read the
 * greeting, send qmp_capabilities, then print each event line until N
 * events, S seconds, the VMM closes the socket (the VM ended) or the
 * reader of stdout goes away.
 *
 * Exit status: 0 when it ended that way (the VMM closing the socket after
 * the VM's SHUTDOWN) and, with --count, N events came; 1 when the VM is not
 * running, the socket cannot be reached or does not speak the protocol, the
 * connection ends without a SHUTDOWN or in the middle of a line (the VMM
 * died, or cut this client off for not reading), or fewer than N events
 * came; 2 usage error.
 */
#include "cli/cli.h"
#include "catalog/catalog.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EV_LINE_MAX   65536
#define EV_HELLO_MS   10000   /* greeting and the qmp_capabilities reply */
#define EV_TIMEOUT_MAX 31536000ULL

const char cli_help_events[] =
	"usage: cowvm events NAME [--timeout S] [--count N] [--json]\n"
	"       cowvm events --socket PATH [--timeout S] [--count N] [--json]\n"
	"\n"
	"Print the events of running VM NAME as they happen (its VMM's control\n"
	"socket; or the control socket at PATH of a cowvm run --control), as\n"
	"virsh qemu-monitor-event --loop does: STOP (the VM paused: cowvm pause,\n"
	"a save, or a disk error under werror=stop/enospc), RESUME, SHUTDOWN\n"
	"(the run ends; guest, reason: guest-shutdown, guest-reset, host-qmp-quit,\n"
	"host-signal, host-error) and BLOCK_IO_ERROR (device, operation read|write, action\n"
	"stop|report, nospace, reason). Each is one line,\n"
	"  2026-11-22 15:51:21.761387+0000 SHUTDOWN guest=false reason=host-qmp-quit\n"
	"(the time the VMM raised it, local time), or with --json the line the VMM\n"
	"sent: {\"event\": NAME, \"data\": {...}, \"timestamp\": {\"seconds\": S,\n"
	"\"microseconds\": U}}. events ends after N events, after S seconds, when\n"
	"the VM ends (its SHUTDOWN is printed first), or as soon as the reader of\n"
	"its output goes away (a closed pipe). It exits with status 0,\n"
	"or 1 when the VM is not running, its socket cannot be reached, the\n"
	"connection ends without the VM's SHUTDOWN (the VMM died, or cut this\n"
	"client off for not reading its events), or, with --count, fewer than N\n"
	"events came.\n"
	"\n"
	"options:\n"
	"  --timeout S      stop after S seconds (default: no limit); the connect\n"
	"                   and the handshake wait at most 10 s, and never longer\n"
	"                   than S\n"
	"  --count N        stop after N events\n"
	"  --json           print each event as the JSON line the VMM sent\n";

struct ev_opts {
	long long timeout_ms;      /* -1: none */
	unsigned long long count;  /* 0: no limit */
	bool json;
};

struct ev_conn {
	int fd;
	int out_fd;                /* watched while waiting: its reader went away; -1: none */
	char buf[EV_LINE_MAX];
	size_t have;               /* bytes in buf */
	size_t used;               /* of which the line last returned, with its newline */
};

/* The next line (NUL-terminated, without its newline) in c->buf, waiting
 * until @deadline (cli_now_ms time; -1: none). 0, -ETIMEDOUT, -ECONNRESET
 * (the VMM closed, or reset, the connection after a whole line), -EBADMSG
 * (it closed it in the middle of a line), -EPIPE (c->out_fd's reader went
 * away: a pipe closed, a terminal hung up), -E2BIG or -errno. */
static int ev_line(struct ev_conn *c, long long deadline, char **line)
{
	c->have -= c->used;
	memmove(c->buf, c->buf + c->used, c->have);
	c->used = 0;
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->have);
		struct pollfd p[2] = { { .fd = c->fd, .events = POLLIN }, { .fd = c->out_fd } };
		long long left = deadline < 0 ? -1 : deadline - cli_now_ms();
		ssize_t n;
		int r;

		if (nl) {
			*nl = '\0';
			c->used = (size_t)(nl + 1 - c->buf);
			*line = c->buf;
			return 0;
		}
		if (c->have >= sizeof(c->buf) - 1)
			return -E2BIG;
		if (deadline >= 0 && left <= 0)
			return -ETIMEDOUT;
		r = poll(p, 2, left > INT32_MAX ? INT32_MAX : (int)left);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r <= 0)
			continue;
		if (p[1].revents & POLLNVAL)
			c->out_fd = -1;   /* not open: the next print fails */
		else if (p[1].revents & (POLLERR | POLLHUP))
			return -EPIPE;
		if (!p[0].revents)
			continue;
		n = read(c->fd, c->buf + c->have, sizeof(c->buf) - 1 - c->have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != ECONNRESET)
			return -errno;
		if (n <= 0)   /* closed or reset; a line cut short is no line */
			return c->have ? -EBADMSG : -ECONNRESET;
		c->have += (size_t)n;
	}
}

/* Print one data value: strings bare, or quoted when they hold a blank or
 * are empty; everything else as JSON. */
static void ev_print_value(struct json_object *v)
{
	const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;

	if (s && *s && !strpbrk(s, " \t\"="))
		fputs(s, stdout);
	else
		fputs(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
						     JSON_C_TO_STRING_NOSLASHESCAPE), stdout);
}

/* "TIMESTAMP EVENT key=value..." for event object @o. */
static void ev_print_human(struct json_object *o)
{
	struct json_object *name, *ts, *x, *data;
	int64_t sec = 0, usec = 0;
	char when[64] = "?";
	struct tm tm;
	time_t t;

	json_object_object_get_ex(o, "event", &name);
	if (json_object_object_get_ex(o, "timestamp", &ts)) {
		if (json_object_object_get_ex(ts, "seconds", &x))
			sec = json_object_get_int64(x);
		if (json_object_object_get_ex(ts, "microseconds", &x))
			usec = json_object_get_int64(x);
		t = (time_t)sec;
		if (localtime_r(&t, &tm)) {
			char zone[8];

			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
			strftime(zone, sizeof(zone), "%z", &tm);
			snprintf(when + strlen(when), sizeof(when) - strlen(when), ".%06lld%s",
				 (long long)usec, zone);
		}
	}
	printf("%s %s", when, json_object_get_string(name));
	if (json_object_object_get_ex(o, "data", &data) &&
	    json_object_is_type(data, json_type_object)) {
		json_object_object_foreach(data, key, val) {
			printf(" %s=", key);
			ev_print_value(val);
		}
	}
	putchar('\n');
}

/* Connect to @path, ask for events, print them as @o says. @what prefixes
 * messages ("VM 'x': " or ""). Returns an exit status. */
static int ev_watch(const char *path, const char *what, const struct ev_opts *o)
{
	static const char req[] = "{\"execute\": \"qmp_capabilities\"}\n";
	struct ut_err err = { 0, "" };
	long long start = cli_now_ms(), deadline, hello;
	unsigned long long n = 0;
	struct json_object *j = NULL, *x;
	struct ev_conn *c;
	const char *end = NULL;
	char *line;
	bool shutdown_seen = false;
	int r, ret = CLI_EXIT_FAIL;

	c = calloc(1, sizeof(*c));
	if (!c) {
		cli_error("out of memory");
		return CLI_EXIT_FAIL;
	}
	c->out_fd = -1;
	deadline = o->timeout_ms < 0 ? -1 : start + o->timeout_ms;
	/* the connect and the handshake have their own bound, within --timeout */
	hello = start + EV_HELLO_MS;
	if (deadline >= 0 && deadline < hello)
		hello = deadline;
	/* (the connect waits for a VMM whose backlog is full: bounded too) */
	c->fd = cli_control_connect(path, (int)(hello - start), &err);
	if (c->fd < 0) {
		cli_error("%s%s", what, err.msg);
		goto out;
	}
	r = ev_line(c, hello, &line);
	if (r) {
		cli_error("%sno greeting from the VMM on '%s': %s", what, path, strerror(-r));
		goto out;
	}
	if (cli_control_greeting(path, line, &err)) {
		cli_error("%s%s", what, err.msg);
		goto out;
	}
	if (send(c->fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(req) - 1)) {
		cli_error("%sunable to send qmp_capabilities: %s", what, strerror(errno));
		goto out;
	}
	r = ev_line(c, hello, &line);
	if (r) {
		cli_error("%sno reply to qmp_capabilities: %s", what, strerror(-r));
		goto out;
	}
	j = json_tokener_parse(line);
	if (!j || !json_object_object_get_ex(j, "return", &x)) {
		cli_error("%sthe VMM does not offer events (qmp_capabilities: %s)", what, line);
		goto out;
	}
	/* a reader of stdout that went away ends it, as SIGPIPE would at the
	 * next event, but at once: "cowvm events vm | head -1" returns */
	c->out_fd = STDOUT_FILENO;
	for (;;) {
		if (o->count && n >= o->count)
			break;
		r = ev_line(c, deadline, &line);
		if (r == -ETIMEDOUT) {
			end = "before the timeout";
			break;
		}
		if (r == -EPIPE) {
			end = "before the output's reader went away";
			break;
		}
		if (r == -ECONNRESET && !shutdown_seen) {
			/* killed, or cut off: what came is not all there was */
			cli_error("%sthe VMM closed the connection without a SHUTDOWN event (it "
				  "died, or cut this client off for not reading its events)", what);
			goto out;
		}
		if (r == -ECONNRESET) {
			end = "before the VM ended";
			break;
		}
		if (r == -EBADMSG) {
			cli_error("%sthe VMM closed the connection in the middle of a line (it died, "
				  "or cut this client off for not reading its events)", what);
			goto out;
		}
		if (r) {
			cli_error("%sreading events: %s", what, strerror(-r));
			goto out;
		}
		json_object_put(j);
		j = json_tokener_parse(line);
		if (!j || !json_object_is_type(j, json_type_object)) {
			cli_error("%sthe VMM sent a line that is not a JSON object: %.80s", what, line);
			goto out;
		}
		if (!json_object_object_get_ex(j, "event", &x) || !json_object_is_type(x, json_type_string))
			continue;   /* not an event */
		if (!strcmp(json_object_get_string(x), "SHUTDOWN"))
			shutdown_seen = true;
		if (o->json)
			puts(line);
		else
			ev_print_human(j);
		if (fflush(stdout)) {
			cli_error("unable to write the events: %s", strerror(errno));
			goto out;
		}
		n++;
	}
	if (o->count && n < o->count) {
		cli_error("%s%llu of %llu event(s) came %s", what, n, o->count, end);
		goto out;
	}
	ret = CLI_EXIT_OK;
out:
	json_object_put(j);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
	return ret;
}

int cli_cmd_events(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ "count", required_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "socket", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ev_opts o = { .timeout_ms = -1 };
	struct ut_err err = { 0, "" };
	struct cat_db *db = NULL;
	struct cat_vm vm = { 0 };
	const char *sock = NULL, *name;
	unsigned long long v;
	char what[300], *path = NULL;
	int c, ret = CLI_EXIT_FAIL;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			if (cli_parse_uint(optarg, EV_TIMEOUT_MAX, &v) || v == 0)
				return cli_usage_error("events", "--timeout '%s': expected whole seconds "
						       "(1 to %llu)", optarg, EV_TIMEOUT_MAX);
			o.timeout_ms = (long long)v * 1000;
			break;
		case 'n':
			if (cli_parse_uint(optarg, 1ULL << 32, &v) || v == 0)
				return cli_usage_error("events", "--count '%s': expected a number of "
						       "events >= 1", optarg);
			o.count = v;
			break;
		case 'j': o.json = true; break;
		case 's': sock = optarg; break;
		case 'h':
			fputs(cli_help_events, stdout);
			return CLI_EXIT_OK;
		default:
			return cli_usage_error("events", "unknown or incomplete option '%s'",
					       argv[optind - 1]);
		}
	}
	if (sock) {
		if (optind != argc)
			return cli_usage_error("events", "NAME and --socket are exclusive");
		what[0] = '\0';
		return ev_watch(sock, what, &o);
	}
	if (optind + 1 != argc)
		return cli_usage_error("events", "expected NAME or --socket PATH");
	name = argv[optind];
	if (cli_catalog_open(&db) < 0)
		goto out;
	if (cat_vm_get(db, name, &vm, &err) < 0 || cat_vm_refresh(db, &vm, &err) < 0) {
		cli_error_err(&err);
		goto out;
	}
	if (!(CAT_ST(vm.state) & CAT_ST_ACTIVE)) {
		cli_error("VM '%s' is not running (it is %s)", name, cat_vm_state_name(vm.state));
		goto out;
	}
	if (!vm.ctl_socket) {
		cli_error("VM '%s' is %s but has no control socket recorded%s", name,
			  cat_vm_state_name(vm.state),
			  vm.state == CAT_VM_STARTING ? " yet: try again when it runs" : "");
		goto out;
	}
	path = strdup(vm.ctl_socket);
	if (!path) {
		cli_error("out of memory");
		goto out;
	}
	cat_close(db);   /* not held while watching */
	db = NULL;
	snprintf(what, sizeof(what), "VM '%s': ", name);
	ret = ev_watch(path, what, &o);
out:
	free(path);
	cat_vm_clear(&vm);
	cat_close(db);
	return ret;
}
