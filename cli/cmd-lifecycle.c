/* cli/cmd-lifecycle.c — `cowvm stop`, `cowvm pause`, `cowvm resume`: a
 * running VM's VMM asked over its control socket (cli_control_call), the
 * catalog kept in step (the lifecycle protocol of catalog/catalog.h).
 *
 * Who records what: pause and resume are recorded here, after the VMM
 * acknowledged (RUNNING -> PAUSED, PAUSED -> RUNNING); stop records
 * RUNNING|PAUSED|STOPPING -> STOPPING (any active state with --force) before
 * asking, and the VMM records ACTIVE -> STOPPED as it exits
 * (cli/vmm-catalog.c). When the VMM could not (killed by --force after it
 * did not end), stop records it, with the stale sockets removed first.
 * Commands sent with `cowvm control` directly bypass the catalog.
 *
 * Exit status: 0 done; 1 failed (not in the right state, the VMM did not
 * answer or did not end in time); 2 usage error.
 */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "catalog/catalog.h"

#define LC_CALL_MS        10000   /* a control request and its reply */
#define LC_QUIT_MS        3000    /* --force: quit before signals */
#define LC_STOP_DEFAULT_S 10
#define LC_STOP_GRACE_S   5       /* beyond the VMM's own stop timeout */
#define LC_KILL_WAIT_S    5       /* after SIGTERM, after SIGKILL */
#define LC_POLL_US        20000

const char cli_help_stop[] =
	"usage: cowvm stop NAME [--timeout S] [--force]\n"
	"\n"
	"Stop VM NAME: the VMM presses the guest's ACPI power button and, when the\n"
	"guest has not powered off after S seconds, ends the run itself. stop\n"
	"returns when the VMM process has ended, and the VM is then stopped (a\n"
	"paused VM is resumed first so that it can shut down). A stopped or\n"
	"crashed VM is refused, and so is a starting one unless --force is given.\n"
	"\n"
	"options:\n"
	"  --timeout S      seconds the guest has to power off before the VMM ends\n"
	"                   the run (default 10; 0 = at once)\n"
	"  --force          end the run now without asking the guest; a VMM that\n"
	"                   does not answer gets SIGTERM, then SIGKILL\n";

const char cli_help_pause[] =
	"usage: cowvm pause NAME\n"
	"\n"
	"Pause VM NAME: its virtual CPUs stop (the VMM process, its memory and\n"
	"its sockets stay) until cowvm resume. Only a running VM can be paused.\n";

const char cli_help_resume[] =
	"usage: cowvm resume NAME\n"
	"\n"
	"Let a paused VM NAME run again. Only a paused VM can be resumed: one paused\n"
	"with `cowvm pause`, or one its VMM paused on a disk error (a full disk:\n"
	"werror=enospc, the default), whose failed requests are then retried.\n";

/* Open the catalog and load VM @name with its state refreshed (a VM whose
 * VMM died shows as crashed). Prints the error. Returns 0 or -1. */
static int lc_load(const char *name, struct cat_db **db, struct cat_vm *vm)
{
	struct ut_err err = { 0, "" };

	if (cli_catalog_open(db) < 0)
		return -1;
	if (cat_vm_get(*db, name, vm, &err) < 0 || cat_vm_refresh(*db, vm, &err) < 0) {
		cli_error_err(&err);
		return -1;
	}
	return 0;
}

/* Parse "NAME" with only --help; 1 = help printed, 0 = ok, <0 = -exit status. */
static int lc_args(const char *cmd, const char *help, int argc, char **argv, const char **name)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c != 'h')
			return -cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
		fputs(help, stdout);
		return 1;
	}
	if (optind + 1 != argc)
		return -cli_usage_error(cmd, "one NAME expected");
	*name = argv[optind];
	return 0;
}

/* Does the VMM at control socket @ctl say it paused VM @name on a disk
 * error (query-status "reason": "io-error")? Then says so, with the error. */
static bool paused_on_error(const char *ctl, const char *name)
{
	struct cli_vm_status st = { 0 };
	struct json_object *reply = NULL;
	bool yes;

	if (cli_control_call(ctl, "query-status", NULL, LC_CALL_MS, &reply, NULL) == 0)
		cli_status_parse(reply, &st);
	yes = st.known && st.paused && !strcmp(st.reason, "io-error");
	if (yes)
		printf("VM '%s' was paused on a disk error (%s): retrying\n", name,
		       st.io_error ? st.io_error : "no detail");
	free(st.io_error);
	json_object_put(reply);
	return yes;
}

/* pause (RUNNING -> PAUSED) or resume (PAUSED -> RUNNING; or a running VM
 * its VMM paused on a disk error, which stays RUNNING in the catalog). */
static int pause_resume(int argc, char **argv, bool pause)
{
	const char *cmd = pause ? "pause" : "resume", *name = NULL;
	enum cat_vm_state from = pause ? CAT_VM_RUNNING : CAT_VM_PAUSED;
	enum cat_vm_state to = pause ? CAT_VM_PAUSED : CAT_VM_RUNNING;
	struct json_object *reply = NULL;
	struct ut_err err = { 0, "" };
	struct cat_db *db = NULL;
	struct cat_vm vm = { 0 };
	bool io_error;
	int r, ret = CLI_EXIT_FAIL;

	r = lc_args(cmd, pause ? cli_help_pause : cli_help_resume, argc, argv, &name);
	if (r)
		return r > 0 ? CLI_EXIT_OK : -r;
	if (lc_load(name, &db, &vm) < 0)
		goto out;
	/* the VMM itself may have paused a running VM on a disk error
	 * (werror=enospc/stop): the catalog still says running; resuming it
	 * retries the failed requests, and the catalog stays as it is */
	io_error = !pause && vm.state == CAT_VM_RUNNING && vm.ctl_socket &&
		   paused_on_error(vm.ctl_socket, name);
	if (!io_error && vm.state != from) {
		if (vm.state == to)
			cli_error("VM '%s' is already %s", name, cat_vm_state_name(to));
		else
			cli_error("VM '%s' is %s, not %s", name, cat_vm_state_name(vm.state),
				  cat_vm_state_name(from));
		goto out;
	}
	if (!vm.ctl_socket) {
		cli_error("VM '%s' is %s but has no control socket recorded", name,
			  cat_vm_state_name(vm.state));
		goto out;
	}
	if (cli_control_call(vm.ctl_socket, cmd, NULL, LC_CALL_MS, &reply, &err) < 0) {
		ut_err_prefix(&err, "unable to %s VM '%s'", cmd, name);
		cli_error_err(&err);
		goto out;
	}
	if (!io_error && cat_vm_transition(db, name, CAT_ST(from), to, NULL, cmd, NULL, NULL, &err) < 0) {
		ut_err_prefix(&err, "the VMM did %s VM '%s', but", cmd, name);
		cli_error_err(&err);
		goto out;
	}
	printf("%s VM '%s'\n", pause ? "paused" : "resumed", name);
	ret = fflush(stdout) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
out:
	json_object_put(reply);
	cat_vm_clear(&vm);
	cat_close(db);
	return ret;
}

int cli_cmd_pause(int argc, char **argv)
{
	return pause_resume(argc, argv, true);
}

int cli_cmd_resume(int argc, char **argv)
{
	return pause_resume(argc, argv, false);
}

/* Wait up to @secs seconds for process @pid (started at @start) to end.
 * Returns 1 when it has, 0 when it still runs. */
static int wait_gone(pid_t pid, uint64_t start, unsigned secs)
{
	for (unsigned long i = 0; i <= secs * (1000000UL / LC_POLL_US); i++) {
		if (!cat_pid_alive(pid, start))
			return 1;
		usleep(LC_POLL_US);
	}
	return !cat_pid_alive(pid, start);
}

/* After VMM @pid ended: if the catalog still names it (it could not record
 * its end), remove its sockets and record ACTIVE -> STOPPED with @why. */
static int stop_record(struct cat_db *db, const char *name, pid_t pid, const char *why)
{
	struct cat_vm_paths paths = { 0 };
	struct cat_vm vm = { 0 };
	struct ut_err err = { 0, "" };
	int r;

	r = cat_vm_get(db, name, &vm, &err);
	if (r < 0 || vm.pid != pid || !(CAT_ST(vm.state) & CAT_ST_ACTIVE))
		goto out;   /* recorded by the VMM (or the VM is gone) */
	if (cat_vm_paths(db, name, &paths, NULL) == 0) {
		unlink(paths.ctl_socket);
		unlink(paths.console_socket);
	}
	r = cat_vm_transition(db, name, CAT_ST_ACTIVE, CAT_VM_STOPPED, NULL, "stopped", why,
			      NULL, &err);
out:
	if (r < 0)
		cli_error_err(&err);
	cat_vm_paths_clear(&paths);
	cat_vm_clear(&vm);
	return r;
}

int cli_cmd_stop(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct json_object *reply = NULL, *args = NULL;
	struct ut_err err = { 0, "" };
	struct cat_db *db = NULL;
	struct cat_vm vm = { 0 };
	unsigned long timeout = LC_STOP_DEFAULT_S;
	const char *name, *why = NULL;
	bool force = false;
	unsigned mask;
	char *end;
	int c, ret = CLI_EXIT_FAIL;

	while ((c = getopt_long(argc, argv, "fh", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			errno = 0;
			timeout = strtoul(optarg, &end, 10);
			if (errno || *end || !*optarg || *optarg == '-' || timeout > 3600)
				return cli_usage_error("stop", "--timeout '%s': expected 0 to 3600 "
						       "seconds", optarg);
			break;
		case 'f': force = true; break;
		case 'h':
			fputs(cli_help_stop, stdout);
			return CLI_EXIT_OK;
		default:
			return cli_usage_error("stop", "unknown or incomplete option '%s'",
					       argv[optind - 1]);
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("stop", "one NAME expected");
	name = argv[optind];
	if (lc_load(name, &db, &vm) < 0)
		goto out;
	if (!(CAT_ST(vm.state) & CAT_ST_ACTIVE)) {
		cli_error("VM '%s' is not running (it is %s)", name, cat_vm_state_name(vm.state));
		goto out;
	}
	if (vm.state == CAT_VM_STARTING && !force) {
		cli_error("VM '%s' is starting: try again when it runs, or use --force", name);
		goto out;
	}
	mask = force ? CAT_ST_ACTIVE : CAT_ST(CAT_VM_RUNNING) | CAT_ST(CAT_VM_PAUSED) |
				       CAT_ST(CAT_VM_STOPPING);
	if (cat_vm_transition(db, name, mask, CAT_VM_STOPPING, NULL, "stop",
			      force ? "forced" : NULL, NULL, &err) < 0) {
		cli_error_err(&err);
		goto out;
	}
	if (force) {
		/* quit now; a VMM that does not answer gets SIGTERM (it still
		 * records its end), then SIGKILL (we record it) */
		if (!vm.ctl_socket ||
		    cli_control_call(vm.ctl_socket, "quit", NULL, LC_QUIT_MS, &reply, &err) < 0)
			kill(vm.pid, SIGTERM);
		if (!wait_gone(vm.pid, vm.pid_start, LC_KILL_WAIT_S)) {
			if (cat_pid_alive(vm.pid, vm.pid_start))
				kill(vm.pid, SIGKILL);
			why = "killed by cowvm stop --force";
			if (!wait_gone(vm.pid, vm.pid_start, LC_KILL_WAIT_S)) {
				cli_error("VM '%s': the VMM (pid %d) did not end even after SIGKILL",
					  name, (int)vm.pid);
				goto out;
			}
		}
	} else {
		args = json_object_new_object();
		json_object_object_add(args, "timeout", json_object_new_int64((int64_t)timeout));
		if (!vm.ctl_socket ||
		    cli_control_call(vm.ctl_socket, "stop", args, LC_CALL_MS, &reply, &err) < 0) {
			if (!err.code)
				ut_errf(&err, -ENOENT, "no control socket recorded");
			ut_err_prefix(&err, "unable to ask VM '%s' to stop", name);
			cli_error_err(&err);
			cli_error("'cowvm stop --force %s' ends it", name);
			goto out;
		}
		if (!wait_gone(vm.pid, vm.pid_start, (unsigned)timeout + LC_STOP_GRACE_S)) {
			cli_error("VM '%s' did not stop within %lu s (the VMM, pid %d, still runs): "
				  "'cowvm stop --force %s' ends it", name,
				  timeout + LC_STOP_GRACE_S, (int)vm.pid, name);
			goto out;
		}
	}
	if (stop_record(db, name, vm.pid, why ? why : "the VMM ended without recording it") < 0)
		goto out;
	printf("stopped VM '%s'\n", name);
	ret = fflush(stdout) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
out:
	json_object_put(reply);
	json_object_put(args);
	cat_vm_clear(&vm);
	cat_close(db);
	return ret;
}
