/* cli/cmd-console.c — `cowvm console NAME` / `cowvm console --socket PATH`:
 * attach the terminal to a running VM's serial console (for NAME, the
 * console socket of a VM the catalog records as active). Output from the
 * guest goes to stdout, input to the guest; on a terminal, stdin is put in
 * raw mode and Ctrl-] detaches (the VM keeps running). Ends with status 0 on
 * detach or when the VM goes away, 1 when the VM is not running or the
 * socket cannot be reached. */
#include "cli/cli.h"
#include "util/io.h"
#include "catalog/catalog.h"

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
			if (ut_write_all(STDOUT_FILENO, buf, (size_t)n))
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
						ut_write_all(fd, buf, (size_t)(d - buf));
					break;
				}
			}
			if (ut_write_all(fd, buf, (size_t)n))
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

const char cli_help_console[] =
	"usage: cowvm console NAME\n"
	"       cowvm console --socket PATH\n"
	"\n"
	"Attach the terminal to the serial console of running VM NAME (the\n"
	"console socket its VMM serves; see cowvm start), or to the console socket\n"
	"at PATH of a cowvm run --console-socket. Guest output goes to standard\n"
	"output, standard input to the guest. On a terminal, input is passed raw\n"
	"and Ctrl-] detaches: the VM keeps running. console ends with status 0 on\n"
	"detach or when the VM goes away, 1 when the VM is not running or the\n"
	"socket cannot be reached. What the guest wrote before is in its console\n"
	"log, HOME/logs/NAME.log.\n";

int cli_cmd_console(int argc, char **argv)
{
	struct cat_vm_paths paths = { 0 };
	struct ut_err err = { 0, "" };
	struct cat_db *db = NULL;
	struct cat_vm vm = { 0 };
	int ret = CLI_EXIT_FAIL;

	if (cli_wants_help(argc, argv)) {
		fputs(cli_help_console, stdout);
		return CLI_EXIT_OK;
	}
	if (argc == 3 && !strcmp(argv[1], "--socket"))
		return cli_console_attach(argv[2]);
	if (argc != 2 || argv[1][0] == '-')
		return cli_usage_error("console", "expected NAME or --socket PATH");
	if (cli_catalog_open(&db) < 0)
		goto out;
	if (cat_vm_get(db, argv[1], &vm, &err) < 0 || cat_vm_refresh(db, &vm, &err) < 0 ||
	    cat_vm_paths(db, argv[1], &paths, &err) < 0) {
		cli_error_err(&err);
		goto out;
	}
	if (!(CAT_ST(vm.state) & CAT_ST_ACTIVE)) {
		cli_error("VM '%s' is not running (it is %s): start it with 'cowvm start %s'",
			  argv[1], cat_vm_state_name(vm.state), argv[1]);
		goto out;
	}
	if (!vm.serial) {
		cli_error("VM '%s' has no serial console", argv[1]);
		goto out;
	}
	cat_close(db);   /* not held while attached */
	db = NULL;
	ret = cli_console_attach(paths.console_socket);
out:
	cat_vm_paths_clear(&paths);
	cat_vm_clear(&vm);
	cat_close(db);
	return ret;
}
