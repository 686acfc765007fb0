/* cli/cmd-console.c — `cowvm console --socket PATH`: attach the terminal to a
 * running VM's serial console. Output from the guest goes to stdout, input to
 * the guest; on a terminal, stdin is put in raw mode and Ctrl-] detaches
 * (the VM keeps running). Ends with status 0 on detach or when the VM goes
 * away, 1 when the socket cannot be reached. */
#include "cli/cli.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#define CONSOLE_DETACH 0x1d   /* Ctrl-] */

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Attach to the console socket at @path until detach or hang-up. */
int cli_console_attach(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct termios saved, raw;
	bool tty = isatty(STDIN_FILENO), restore = false, in_open = true;
	char buf[4096];
	int fd, status = CLI_EXIT_OK;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		cli_error("console socket path '%s' is too long", path);
		return CLI_EXIT_FAIL;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		cli_error("unable to attach to the console at '%s': %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return CLI_EXIT_FAIL;
	}
	if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
		raw = saved;
		cfmakeraw(&raw);
		restore = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
		fprintf(stderr, "Connected to the console (Ctrl-] detaches)\r\n");
	}
	for (;;) {
		struct pollfd p[2] = { { .fd = fd, .events = POLLIN },
				       { .fd = in_open ? STDIN_FILENO : -1, .events = POLLIN } };
		ssize_t n;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents) {
			n = read(fd, buf, sizeof(buf));
			if (n <= 0)
				break;   /* the VM went away */
			if (write_all(STDOUT_FILENO, buf, (size_t)n))
				break;
		}
		if (p[1].revents) {
			n = read(STDIN_FILENO, buf, sizeof(buf));
			if (n <= 0) {
				in_open = false;   /* keep showing output */
				continue;
			}
			if (tty) {
				char *d = memchr(buf, CONSOLE_DETACH, (size_t)n);

				if (d) {
					if (d > buf)
						write_all(fd, buf, (size_t)(d - buf));
					break;
				}
			}
			if (write_all(fd, buf, (size_t)n))
				break;
		}
	}
	if (restore) {
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
		fprintf(stderr, "\nDisconnected from the console\n");
	}
	close(fd);
	return status;
}

int cli_cmd_console(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--socket"))
		return cli_console_attach(argv[2]);
	return cli_usage_error("console", "expected --socket PATH");
}
