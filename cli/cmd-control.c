/* cli/cmd-control.c — `cowvm control SOCKET COMMAND [ARGUMENTS-JSON]`: send one
 * command to a running VMM's control socket and print the reply's JSON.
 * Exit 0 on {"return": ...}, 1 on {"error": ...} or a connection problem,
 * 2 on usage errors. Every wait is bounded (10 s). */
#include "cli/cli.h"

#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_TIMEOUT_MS 10000

/* Read one line (without the newline) into @buf. 0, or -errno / -ETIMEDOUT. */
static int read_line(int fd, char *buf, size_t size, size_t *have)
{
	for (;;) {
		char *nl = memchr(buf, '\n', *have);
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (nl) {
			*nl = '\0';
			return 0;
		}
		if (*have >= size - 1)
			return -E2BIG;
		if (poll(&p, 1, CTL_TIMEOUT_MS) <= 0)
			return -ETIMEDOUT;
		n = read(fd, buf + *have, size - 1 - *have);
		if (n <= 0)
			return n ? -errno : -ECONNRESET;
		*have += (size_t)n;
		buf[*have] = '\0';
	}
}

int cli_cmd_control(int argc, char **argv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct json_object *req = NULL, *args = NULL, *reply = NULL, *x;
	char buf[65536];
	size_t have = 0, glen;
	const char *s;
	int fd = -1, r, status = CLI_EXIT_FAIL;

	if (argc < 3 || argc > 4)
		return cli_usage_error("control", "expected SOCKET COMMAND [ARGUMENTS-JSON]");
	if (strlen(argv[1]) >= sizeof(sa.sun_path))
		return cli_usage_error("control", "socket path '%s' is too long", argv[1]);
	if (argc == 4) {
		args = json_tokener_parse(argv[3]);
		if (!args || !json_object_is_type(args, json_type_object)) {
			json_object_put(args);
			return cli_usage_error("control", "arguments '%s' are not a JSON object", argv[3]);
		}
	}
	strcpy(sa.sun_path, argv[1]);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		cli_error("unable to connect to '%s': %s", argv[1], strerror(errno));
		goto out;
	}
	r = read_line(fd, buf, sizeof(buf), &have);   /* greeting */
	if (r) {
		cli_error("'%s': no greeting from the VMM: %s", argv[1], strerror(-r));
		goto out;
	}
	glen = strlen(buf) + 1;
	have -= glen;
	memmove(buf, buf + glen, have);
	req = json_object_new_object();
	json_object_object_add(req, "execute", json_object_new_string(argv[2]));
	if (args)
		json_object_object_add(req, "arguments", json_object_get(args));
	s = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	if (write(fd, s, strlen(s)) != (ssize_t)strlen(s) || write(fd, "\n", 1) != 1) {
		cli_error("'%s': unable to send the command: %s", argv[1], strerror(errno));
		goto out;
	}
	r = read_line(fd, buf, sizeof(buf), &have);
	if (r) {
		cli_error("'%s': no reply to '%s': %s", argv[1], argv[2], strerror(-r));
		goto out;
	}
	reply = json_tokener_parse(buf);
	if (!reply) {
		cli_error("'%s': the reply is not JSON", argv[1]);
		goto out;
	}
	if (json_object_object_get_ex(reply, "return", &x)) {
		printf("%s\n", json_object_to_json_string_ext(x, JSON_C_TO_STRING_PLAIN));
		status = CLI_EXIT_OK;
	} else if (json_object_object_get_ex(reply, "error", &x)) {
		struct json_object *d;

		json_object_object_get_ex(x, "desc", &d);
		cli_error("%s: %s", argv[2], d ? json_object_get_string(d) : "error");
		printf("%s\n", json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN));
	} else {
		cli_error("'%s': unexpected reply", argv[1]);
	}
out:
	if (fd >= 0)
		close(fd);
	json_object_put(args);
	json_object_put(req);
	json_object_put(reply);
	return status;
}
