/* cli/cmd-start.c — `cowvm start NAME`: launch a VM's VMM, detached, and
 * return once the guest runs.
 *
 * Steps (the lifecycle protocol of catalog/catalog.h):
 *   1. cat_vm_get + cat_vm_refresh: an active VM is refused; a VM whose VMM
 *      died shows as crashed and may start again.
 *   2. cat_vm_paths: control socket, console socket, console log; the VMM's
 *      own messages go to HOME/logs/NAME.vmm.log (emptied per start, by
 *      the child once it is let go).
 *   3. fork; the child (new session, default signals, stdin /dev/null,
 *      stdout and stderr to the VMM log, no other fds) waits on a pipe.
 *   4. STOPPED|CRASHED -> STARTING with the child's pid and the control
 *      socket; only then is the child let go to exec `cowvm run ...
 *      --catalog-vm NAME` (this binary, by its path so that ps shows
 *      "cowvm"). So the catalog names the VMM's pid before the VMM can
 *      record anything, and a second `start` racing us loses at this
 *      transition (its child is never let go).
 *   5. Wait (bounded) until the control socket answers query-status with
 *      "running" and this pid; the VMM records STARTING -> RUNNING before it
 *      answers anything (cli/vmm-catalog.c). If the VMM ends first, or the
 *      wait runs out (the VMM is killed then), report why from its log and,
 *      if the catalog still names this pid (the child is not reaped yet, so
 *      the pid cannot have been reused), remove the sockets and record
 *      ACTIVE -> STOPPED ("start", the reason), unless the VMM did.
 *
 * Exit status: 0 the guest runs; 1 it does not (message says why); 2 usage.
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "catalog/catalog.h"
#include "core/machine.h"

#define START_TIMEOUT_S 15
#define START_POLL_US   20000
#define START_ARGV_MAX  (24 + 2 * VMM_MAX_DISKS)

const char cli_help_start[] =
	"usage: cowvm start NAME [--timeout S]\n"
	"\n"
	"Start VM NAME: launch its VMM, a cowvm process of its own that runs in\n"
	"the background in a new session, and return once the guest runs. The\n"
	"VMM serves the control socket RUN/NAME.ctl (mode 0600) that stop, pause\n"
	"and resume use, writes the serial console to HOME/logs/NAME.log and\n"
	"serves it on RUN/NAME.console for cowvm console NAME; the VMM's own\n"
	"messages go to HOME/logs/NAME.vmm.log. HOME is the catalog's directory\n"
	"($COWVM_HOME, else ~/.local/share/cowvm), RUN is $XDG_RUNTIME_DIR/cowvm\n"
	"(else HOME/run).\n"
	"\n"
	"A stopped or crashed VM starts; an active one (starting, running, paused,\n"
	"stopping) is refused. When the VMM ends before the guest runs, or the\n"
	"guest does not run within the timeout (the VMM is killed then), start\n"
	"fails with the reason from the VMM's log and the VM stays stopped; the\n"
	"reason is also in the VM's events (cowvm show). Network interfaces are\n"
	"not attached yet (a note says so), and the guest's reboot or poweroff\n"
	"ends the VMM whatever on_reboot says.\n"
	"\n"
	"options:\n"
	"  --timeout S      wait at most S seconds for the guest to run (default 15)\n";

/* argv under construction; every string owned. */
struct start_argv {
	char *v[START_ARGV_MAX + 1];
	int n;
};

static int add_arg(struct start_argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int add_arg(struct start_argv *a, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (a->n >= START_ARGV_MAX)
		return -E2BIG;
	va_start(ap, fmt);
	r = vasprintf(&a->v[a->n], fmt, ap);
	va_end(ap);
	if (r < 0) {
		a->v[a->n] = NULL;
		return -ENOMEM;
	}
	a->n++;
	return 0;
}

static void free_argv(struct start_argv *a)
{
	for (int i = 0; i < a->n; i++)
		free(a->v[i]);
	a->n = 0;
}

/* The `cowvm run` command line for @vm. Returns 0 or -errno with @err. */
static int build_argv(const struct cat_vm *vm, const struct cat_vm_paths *p,
		      struct start_argv *a, struct ut_err *err)
{
	uint64_t mib = 1ULL << 20;
	int r = 0;

	if (vm->n_disks > VMM_MAX_DISKS)
		return ut_errf(err, -E2BIG, "VM '%s' has %zu disks; the VMM takes at most %d",
			       vm->name, vm->n_disks, VMM_MAX_DISKS);

	r |= add_arg(a, "cowvm");
	r |= add_arg(a, "run");
	r |= add_arg(a, "--kernel");
	r |= add_arg(a, "%s", vm->kernel);
	if (vm->initrd) {
		r |= add_arg(a, "--initrd");
		r |= add_arg(a, "%s", vm->initrd);
	}
	if (vm->cmdline) {
		r |= add_arg(a, "--append");
		r |= add_arg(a, "%s", vm->cmdline);
	}
	r |= add_arg(a, "--mem");
	if (vm->memory % mib == 0)
		r |= add_arg(a, "%lluM", (unsigned long long)(vm->memory / mib));
	else
		r |= add_arg(a, "%lluB", (unsigned long long)vm->memory);
	r |= add_arg(a, "--cpus");
	r |= add_arg(a, "%u", vm->vcpus);
	for (size_t i = 0; i < vm->n_disks; i++) {
		const struct cat_disk *d = &vm->disks[i];

		if (strchr(d->chain[0].path, ','))
			return ut_errf(err, -EINVAL, "disk %s: the path '%s' contains a ',', which "
				       "the VMM's --disk option cannot take", d->target,
				       d->chain[0].path);
		r |= add_arg(a, "--disk");
		r |= add_arg(a, "%s%s,format=%s%s%s,werror=%s,rerror=%s,target=%s", d->chain[0].path,
			     d->readonly ? ",ro" : "", d->chain[0].format,
			     d->nocache ? ",cache=none" : "", d->threads ? ",aio=threads" : "",
			     cat_werror_names[d->werror <= CAT_WERROR_REPORT ? d->werror : 0],
			     d->rerror_stop ? "stop" : "report", d->target);
	}
	r |= add_arg(a, "--control");
	r |= add_arg(a, "%s", p->ctl_socket);
	r |= add_arg(a, "--console");
	if (vm->serial) {
		r |= add_arg(a, "file:%s", p->console_log);
		r |= add_arg(a, "--console-socket");
		r |= add_arg(a, "%s", p->console_socket);
	} else {
		r |= add_arg(a, "none");
	}
	r |= add_arg(a, "--catalog-vm");
	r |= add_arg(a, "%s", vm->name);
	if (r)
		return ut_errf(err, -ENOMEM, "unable to build the VMM's command line: out of "
			       "memory");
	return 0;
}

/* An fd >= 3 (so the child's dup2 onto 0..2 cannot clobber it), close-on-exec. */
static int fd_above_stdio(int fd)
{
	int n;

	if (fd < 0 || fd > 2)
		return fd;
	n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	close(fd);
	return n;
}

/* This binary's path, so that the VMM shows as "cowvm" in ps (exec of
 * /proc/self/exe names it "exe"); /proc/self/exe itself when the file was
 * replaced or removed since (that still runs the same binary). */
static void self_exe(char *buf, size_t size)
{
	static const char deleted[] = " (deleted)";
	size_t dl = sizeof(deleted) - 1;
	ssize_t n = readlink("/proc/self/exe", buf, size - 1);

	if (n > 0 && (size_t)n < size - 1) {
		buf[n] = '\0';
		if (((size_t)n <= dl || strcmp(buf + n - dl, deleted)) && access(buf, X_OK) == 0)
			return;
	}
	snprintf(buf, size, "/proc/self/exe");
}

/* In the child: wait for the go from the parent, then become the VMM. */
static void __attribute__((noreturn)) vmm_child(const char *exe, char **argv, int gate,
						int gate_wr, int logfd, int nullfd)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1,
				    SIGUSR2, SIGCHLD };
	sigset_t none;
	char go;

	close(gate_wr);   /* else the parent closing its end would not reach us */
	setsid();
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], SIG_DFL);
	if (read(gate, &go, 1) != 1)
		_exit(127);   /* the parent gave up (or died) */
	/* the log is ours only now (O_APPEND: written from the start) */
	if (ftruncate(logfd, 0) < 0 || dup2(nullfd, STDIN_FILENO) < 0 || dup2(logfd, STDOUT_FILENO) < 0 ||
	    dup2(logfd, STDERR_FILENO) < 0)
		_exit(127);
	close_range(3, ~0U, 0);
	execv(exe, argv);
	dprintf(STDERR_FILENO, "cowvm: unable to run the VMM (%s): %s\n", exe, strerror(errno));
	_exit(127);
}

/* Fork the VMM-to-be (this binary, @argv; its output to @vmm_log, emptied
 * once it is let go). Returns its pid (>0) with *gate_wr the pipe end whose
 * first byte lets it exec (closing it without a byte makes it exit), or
 * -errno with @err. */
static pid_t launch(char **argv, const char *vmm_log, int *gate_wr, struct ut_err *err)
{
	int gate[2] = { -1, -1 }, logfd, nullfd = -1;
	char exe[4096];
	pid_t pid = -1;

	*gate_wr = -1;
	logfd = fd_above_stdio(open(vmm_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
	if (logfd < 0) {
		pid = ut_errf_sys(err, -errno, "unable to open the VMM log '%s'", vmm_log);
		goto out;
	}
	nullfd = fd_above_stdio(open("/dev/null", O_RDWR | O_CLOEXEC));
	if (nullfd < 0 || pipe2(gate, O_CLOEXEC) < 0) {
		pid = ut_errf_sys(err, -errno, "unable to prepare the VMM's process");
		goto out;
	}
	self_exe(exe, sizeof(exe));
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		vmm_child(exe, argv, gate[0], gate[1], logfd, nullfd);
	if (pid < 0)
		pid = ut_errf_sys(err, -errno, "unable to fork the VMM");
	else
		*gate_wr = gate[1];
out:
	if (gate[0] >= 0)
		close(gate[0]);
	if (gate[1] >= 0 && pid < 0)
		close(gate[1]);
	if (nullfd >= 0)
		close(nullfd);
	if (logfd >= 0)
		close(logfd);
	return pid;
}

/* The last "cowvm: " (or "cowvm run: ") line of the VMM log @path, without
 * the prefix, into @buf; "" when there is none. */
static void log_reason(const char *path, char *buf, size_t size)
{
	char tail[8192], *line, *save = NULL;
	ssize_t n = 0;
	off_t end;
	int fd;

	buf[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	end = lseek(fd, 0, SEEK_END);
	if (end >= 0)
		n = pread(fd, tail, sizeof(tail) - 1, end > (off_t)sizeof(tail) - 1 ?
			  end - (off_t)sizeof(tail) + 1 : 0);
	close(fd);
	if (n <= 0)
		return;
	tail[n] = '\0';
	for (line = strtok_r(tail, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (!strncmp(line, "cowvm: ", 7) && line[7])
			snprintf(buf, size, "%s", line + 7);
		else if (!strncmp(line, "cowvm run: ", 11) && line[11])
			snprintf(buf, size, "%s", line + 11);   /* a usage error */
}

/* How the child ended, from waitid(). */
static void exit_reason(const siginfo_t *si, char *buf, size_t size)
{
	if (si->si_code == CLD_EXITED)
		snprintf(buf, size, "the VMM exited with status %d", si->si_status);
	else
		snprintf(buf, size, "the VMM was killed by signal %d (%s)", si->si_status,
			 strsignal(si->si_status));
}

/* Has the child ended? Fills @si without reaping it. */
static int child_ended(pid_t pid, siginfo_t *si)
{
	memset(si, 0, sizeof(*si));
	return waitid(P_PID, (id_t)pid, si, WEXITED | WNOHANG | WNOWAIT) == 0 && si->si_pid == pid;
}

/* Ask the VMM at @ctl whether the guest runs. 1 running (as @pid), 0 not yet. */
static int guest_runs(const char *ctl, pid_t pid, int wait_ms)
{
	struct json_object *reply = NULL, *ret, *st, *p;
	int ok = 0;

	if (cli_control_call(ctl, "query-status", NULL, wait_ms, &reply, NULL) == 0 &&
	    json_object_object_get_ex(reply, "return", &ret) &&
	    json_object_object_get_ex(ret, "status", &st) &&
	    json_object_object_get_ex(ret, "pid", &p))
		ok = !strcmp(json_object_get_string(st), "running") &&
		     json_object_get_int(p) == (int)pid;
	json_object_put(reply);
	return ok;
}

/* The VMM @pid did not bring the guest up: record why (unless the VMM did),
 * remove what it left, reap it. @reason is what to report. */
static void start_failed(struct cat_db *db, const char *name, pid_t pid,
			 const struct cat_vm_paths *p, const char *reason)
{
	struct cat_vm vm = { 0 };
	struct ut_err err = { 0, "" };
	int st;

	/* Still ours (the unreaped child keeps its pid from being reused)? */
	if (cat_vm_get(db, name, &vm, &err) == 0 && vm.pid == pid &&
	    (CAT_ST(vm.state) & CAT_ST_ACTIVE)) {
		unlink(p->ctl_socket);
		unlink(p->console_socket);
		if (cat_vm_transition(db, name, CAT_ST_ACTIVE, CAT_VM_STOPPED, NULL, "start",
				      reason, NULL, &err) < 0 && err.code != -EBUSY)
			cli_error_err(&err);
	}
	cat_vm_clear(&vm);
	waitpid(pid, &st, WNOHANG);   /* a VMM that would not die is left to init */
}

int cli_cmd_start(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct start_argv args = { .n = 0 };
	struct cat_vm_paths paths = { 0 };
	struct cat_db *db = NULL;
	struct cat_vm vm = { 0 };
	struct cat_runtime rt;
	enum cat_vm_state found = CAT_VM_STOPPED;
	struct ut_err err = { 0, "" };
	char *vmm_log = NULL, reason[UT_ERR_MSG_MAX], *end;
	long long deadline;
	unsigned long timeout = START_TIMEOUT_S;
	const char *name;
	siginfo_t si;
	pid_t pid = -1;
	int c, gate = -1, ret = CLI_EXIT_FAIL;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			errno = 0;
			timeout = strtoul(optarg, &end, 10);
			if (errno || *end || !*optarg || *optarg == '-' || !timeout || timeout > 3600)
				return cli_usage_error("start", "--timeout '%s': expected 1 to 3600 "
						       "seconds", optarg);
			break;
		case 'h':
			fputs(cli_help_start, stdout);
			return CLI_EXIT_OK;
		default:
			return cli_usage_error("start", "unknown or incomplete option '%s'",
					       argv[optind - 1]);
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("start", "one NAME expected");
	name = argv[optind];
	if (cli_catalog_open(&db) < 0)
		goto out;
	if (cat_vm_get(db, name, &vm, &err) < 0 || cat_vm_refresh(db, &vm, &err) < 0)
		goto out;
	if (CAT_ST(vm.state) & CAT_ST_ACTIVE) {
		if (vm.state == CAT_VM_RUNNING)
			cli_error("VM '%s' is already running (pid %d)", name, (int)vm.pid);
		else
			cli_error("VM '%s' is %s (pid %d), not stopped", name,
				  cat_vm_state_name(vm.state), (int)vm.pid);
		goto out;
	}
	if (cat_vm_paths(db, name, &paths, &err) < 0)
		goto out;
	if (asprintf(&vmm_log, "%s/logs/%s.vmm.log", cat_db_home(db), name) < 0) {
		vmm_log = NULL;
		ut_errf(&err, -ENOMEM, "out of memory");
		goto out;
	}
	if (build_argv(&vm, &paths, &args, &err) < 0)
		goto out;
	if (vm.n_nics)
		fprintf(stderr, "cowvm: note: VM '%s' has %zu network interface%s; the VMM does "
			"not attach network interfaces yet\n", name, vm.n_nics,
			vm.n_nics == 1 ? "" : "s");
	signal(SIGPIPE, SIG_IGN);   /* a child killed before the go: EPIPE, not death */
	pid = launch(args.v, vmm_log, &gate, &err);
	if (pid < 0)
		goto out;
	rt = (struct cat_runtime){ .pid = pid, .pid_start = 0, .ctl_socket = paths.ctl_socket };
	if (cat_vm_transition(db, name, CAT_ST(CAT_VM_STOPPED) | CAT_ST(CAT_VM_CRASHED),
			      CAT_VM_STARTING, &rt, "start", NULL, &found, &err) < 0) {
		close(gate);   /* the child exits without running anything */
		gate = -1;
		waitpid(pid, NULL, 0);
		if (err.code == -EBUSY) {   /* another start was quicker */
			ut_err_clear(&err);
			if (found == CAT_VM_RUNNING)
				cli_error("VM '%s' is already running", name);
			else
				cli_error("VM '%s' is %s, not stopped", name, cat_vm_state_name(found));
		}
		goto out;
	}
	if (write(gate, "g", 1) != 1) {
		ut_errf_sys(&err, -errno, "unable to let the VMM go");
		kill(pid, SIGKILL);
		start_failed(db, name, pid, &paths, err.msg);
		goto out;
	}
	close(gate);
	gate = -1;

	deadline = cli_now_ms() + (long long)timeout * 1000;
	for (;;) {
		long long left = deadline - cli_now_ms();

		if (child_ended(pid, &si)) {
			log_reason(vmm_log, reason, sizeof(reason));
			if (!reason[0])
				exit_reason(&si, reason, sizeof(reason));
			break;
		}
		if (left <= 0) {
			kill(pid, SIGKILL);
			for (int i = 0; i < 250 && !child_ended(pid, &si); i++)
				usleep(START_POLL_US);
			snprintf(reason, sizeof(reason), "the guest did not run within %lu s "
				 "(the VMM was killed)", timeout);
			break;
		}
		if (guest_runs(paths.ctl_socket, pid, left < 2000 ? (int)left : 2000)) {
			printf("started VM '%s' (pid %d)\n", name, (int)pid);
			ret = fflush(stdout) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
			goto out;
		}
		usleep(START_POLL_US);
	}
	start_failed(db, name, pid, &paths, reason);
	cli_error("VM '%s' did not start: %s (VMM log: %s)", name, reason, vmm_log);
out:
	if (err.code)
		cli_error_err(&err);
	if (gate >= 0)
		close(gate);
	free_argv(&args);
	free(vmm_log);
	cat_vm_paths_clear(&paths);
	cat_vm_clear(&vm);
	cat_close(db);
	return ret;
}
