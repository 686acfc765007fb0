/* cli/cmd-list.c — `cowvm list` and `cowvm show`.
 *
 * The state shown for a running or paused VM is what its VMM says when it
 * answers (query-status on its control socket, see vm_probe): a VMM pauses
 * its VM by itself on a disk error (werror=enospc/stop, rerror=stop), and
 * the catalog, which records what cowvm commands did, still says running
 * then. Shown as "paused (I/O error)", and a VM paused by `cowvm pause` (or
 * the control socket's "pause") as "paused (user)", as virsh domstate
 * --reason does.
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "catalog/catalog.h"

const char cli_help_list[] =
	"usage: cowvm list [--json]\n"
	"\n"
	"List the VMs in the catalog, sorted by name: name, state, virtual CPUs,\n"
	"memory, number of disks and the VMM's pid. States are stopped, starting,\n"
	"running, paused, stopping and crashed; a VM whose VMM process died is\n"
	"shown as crashed (and its stale runtime files are removed). The VMM of a\n"
	"running or paused VM is asked for its state (half a second at most for\n"
	"all of them; one that does not answer is shown as the catalog says): a\n"
	"paused VM shows why, \"paused (user)\" (cowvm pause) or \"paused (I/O\n"
	"error)\" (its VMM paused it on a disk error; cowvm resume retries).\n"
	"\n"
	"options:\n"
	"  --json           print a JSON array of objects with the keys name, uuid,\n"
	"                   state, reason (\"user\", \"io-error\" or null), vcpus,\n"
	"                   memory (bytes), disks and pid (or null)\n";

const char cli_help_show[] =
	"usage: cowvm show NAME [--json]\n"
	"\n"
	"Show everything the catalog holds about VM NAME: its definition, each\n"
	"disk with its backing chain (format and virtual size of every image), its\n"
	"network interfaces, its runtime state and its last events (create,\n"
	"start, crash-detected, ...) from the catalog's event log. The state of a\n"
	"running or paused VM is its VMM's (see cowvm list), with the disk error\n"
	"that paused it, if one did.\n"
	"\n"
	"options:\n"
	"  --json           print one JSON object (memory sizes in bytes, times in\n"
	"                   milliseconds since the Unix epoch)\n";

static int parse_json_flag(const char *cmd, int argc, char **argv, int *json, const char **name)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*json = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'j')
			*json = 1;
		else if (c == 'h')
			return 1;
		else
			return -cli_usage_error(cmd, "unknown option");
	}
	if (name) {
		if (optind + 1 != argc)
			return -cli_usage_error(cmd, "one NAME expected");
		*name = argv[optind];
	} else if (optind != argc) {
		return -cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
	}
	return 0;
}

/* ---- asking the VMMs ----
 *
 * Why list asks rather than the VMM recording it: the VMM pauses on a disk
 * error on its event loop, which must never wait for the catalog's lock
 * (SQLite's busy timeout: seconds, with every guest device stalled);
 * recording it later, from another thread, could fail or race with `cowvm
 * resume`, and leave the catalog wrong. The VMM's own answer is right by
 * construction. Every VMM is asked at once (PROBE_BATCH at a time, a slot
 * going to the next VMM as soon as one is done), over non-blocking
 * sockets, under one deadline for all (PROBE_MS): a stuck VMM (it accepted, never
 * answers), one whose socket backlog is full (connect: EAGAIN), a socket
 * that is gone (the VMM just died: cat_vm_list marks it crashed next
 * time) or a garbled reply costs at most that deadline, and that VM is
 * shown as the catalog says. */

#define PROBE_MS     500
#define PROBE_BATCH  128       /* sockets open at once */
#define PROBE_BUF    8192      /* greeting + reply; the reply's io-error <= 1 KiB */

struct probe {
	int fd;
	size_t have;
	char buf[PROBE_BUF];
	struct cli_vm_status *out;
};

/* Connect to @path without blocking and send query-status. Returns the fd
 * or -errno (no such socket, refused, backlog full, path too long; EMFILE
 * or ENFILE: out of descriptors, see vm_probe). */
static int probe_open(const char *path)
{
	static const char req[] = "{\"execute\":\"query-status\"}\n";
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	ssize_t sent;
	int fd, e;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* a Unix socket connects at once or fails (EAGAIN: backlog full);
	 * the request waits in the socket until the VMM reads it */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		e = errno;
		close(fd);
		return -e;
	}
	sent = send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (sent != (ssize_t)(sizeof(req) - 1)) {
		e = sent < 0 ? errno : EIO;
		close(fd);
		return -e;
	}
	return fd;
}

/* The reply line (after the greeting) is complete in @p: fill p->out. */
static void probe_parse(struct probe *p, const char *line)
{
	struct json_object *o = json_tokener_parse(line);

	cli_status_parse(o, p->out);
	json_object_put(o);
}

/* Read what arrived; returns true when @p is done (answered or failed). */
static bool probe_read(struct probe *p)
{
	ssize_t n = recv(p->fd, p->buf + p->have, sizeof(p->buf) - 1 - p->have, MSG_DONTWAIT);
	char *nl;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return false;
	if (n <= 0)
		return true;
	p->have += (size_t)n;
	p->buf[p->have] = '\0';
	nl = strchr(p->buf, '\n');   /* the end of the greeting */
	if (nl && strchr(nl + 1, '\n')) {
		*strchr(nl + 1, '\n') = '\0';
		probe_parse(p, nl + 1);
		return true;
	}
	return p->have == sizeof(p->buf) - 1;   /* too long: give up */
}

/* Ask the VMMs at @paths[0..n) (NULL: skip) for their state, into
 * @out[0..n) (zeroed by the caller), all within PROBE_MS. At most
 * PROBE_BATCH sockets are open at once (fewer when the descriptors run
 * out), and a slot is given to the next VMM as soon as one is done: a VMM
 * that never answers holds one slot, not the VMMs behind it. */
static void vm_probe(const char *const *paths, struct cli_vm_status *out, size_t n)
{
	long long deadline = cli_now_ms() + PROBE_MS;
	struct probe *pr = calloc(PROBE_BATCH, sizeof(*pr));
	struct pollfd pfd[PROBE_BATCH];
	size_t next = 0;
	int np = 0;

	if (!pr)
		return;
	for (;;) {
		long long left;
		int r;

		while (next < n && np < PROBE_BATCH) {
			int fd = paths[next] ? probe_open(paths[next]) : -ENOENT;

			/* out of descriptors (a low RLIMIT_NOFILE): this one
			 * waits for a slot to close; with none open, it
			 * cannot be asked */
			if ((fd == -EMFILE || fd == -ENFILE) && np > 0)
				break;
			if (fd >= 0) {
				pr[np].fd = fd;
				pr[np].have = 0;
				pr[np].out = &out[next];
				np++;
			}
			next++;
		}
		left = deadline - cli_now_ms();
		if (np == 0 || left <= 0)
			break;
		for (int i = 0; i < np; i++)
			pfd[i] = (struct pollfd){ .fd = pr[i].fd, .events = POLLIN };
		r = poll(pfd, (nfds_t)np, (int)left);
		if (r < 0 && errno != EINTR)
			break;
		for (int i = np - 1; r > 0 && i >= 0; i--) {
			if (!pfd[i].revents || !probe_read(&pr[i]))
				continue;
			close(pr[i].fd);
			pr[i] = pr[--np];
		}
	}
	for (int i = 0; i < np; i++)
		close(pr[i].fd);
	free(pr);
}

/* The state to show: the VMM's when it answered, else the catalog's. */
static enum cat_vm_state shown_state(enum cat_vm_state cat, const struct cli_vm_status *l)
{
	return l && l->known ? (l->paused ? CAT_VM_PAUSED : CAT_VM_RUNNING) : cat;
}

/* Why a VM shown as paused is: "io-error" (its VMM paused it on a disk
 * error), "user" (cowvm pause or the control socket's pause; also a paused
 * VM whose VMM did not answer: the catalog records only cowvm pause); NULL
 * when not paused. */
static const char *pause_reason(enum cat_vm_state st, const struct cli_vm_status *l)
{
	if (st != CAT_VM_PAUSED)
		return NULL;
	return l && l->known && l->reason ? l->reason : "user";
}

/* "paused (I/O error)", "paused (user)", or the state's name. */
static const char *state_text(enum cat_vm_state st, const struct cli_vm_status *l, char *buf, size_t len)
{
	const char *why = pause_reason(st, l);

	if (!why)
		return cat_vm_state_name(st);
	snprintf(buf, len, "%s (%s)", cat_vm_state_name(st),
		 !strcmp(why, "io-error") ? "I/O error" : why);
	return buf;
}

/* Ask the VMMs of the running and paused VMs among @rows (their control
 * sockets from the catalog). Returns a zeroed array of @n (NULL when out
 * of memory: then the catalog's states are shown). */
static struct cli_vm_status *list_probe(struct cat_db *db, const struct cat_vm_summary *rows, size_t n)
{
	struct cli_vm_status *live = calloc(n ? n : 1, sizeof(*live));
	char **paths = calloc(n ? n : 1, sizeof(*paths));

	if (!live || !paths) {
		free(live);
		free(paths);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		struct cat_vm vm = { 0 };
		struct ut_err err;

		if (rows[i].state != CAT_VM_RUNNING && rows[i].state != CAT_VM_PAUSED)
			continue;
		ut_err_clear(&err);
		if (cat_vm_get(db, rows[i].name, &vm, &err) == 0 && vm.ctl_socket &&
		    (vm.state == CAT_VM_RUNNING || vm.state == CAT_VM_PAUSED))
			paths[i] = strdup(vm.ctl_socket);
		cat_vm_clear(&vm);
	}
	vm_probe((const char *const *)paths, live, n);
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	return live;
}

static void live_free(struct cli_vm_status *live, size_t n)
{
	for (size_t i = 0; live && i < n; i++)
		free(live[i].io_error);
	free(live);
}

/* A JSON string literal (names and uuids are plain ASCII already; this
 * also covers anything else). */
static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/* Streamed, one object per line: 10,000 VMs without building a tree. */
static int list_json(const struct cat_vm_summary *rows, const struct cli_vm_status *live, size_t n)
{
	fputs("[\n", stdout);
	for (size_t i = 0; i < n; i++) {
		const struct cli_vm_status *l = live ? &live[i] : NULL;
		enum cat_vm_state st = shown_state(rows[i].state, l);

		fputs("  { \"name\": ", stdout);
		json_str(stdout, rows[i].name);
		fputs(", \"uuid\": ", stdout);
		json_str(stdout, rows[i].uuid);
		printf(", \"state\": \"%s\", \"reason\": ", cat_vm_state_name(st));
		if (pause_reason(st, l))
			json_str(stdout, pause_reason(st, l));
		else
			fputs("null", stdout);
		printf(", \"vcpus\": %u, \"memory\": %llu, \"disks\": %u, ",
		       rows[i].vcpus,
		       (unsigned long long)rows[i].memory, rows[i].n_disks);
		if (rows[i].pid > 0)
			printf("\"pid\": %d }%s\n", (int)rows[i].pid, i + 1 < n ? "," : "");
		else
			printf("\"pid\": null }%s\n", i + 1 < n ? "," : "");
	}
	fputs("]\n", stdout);
	return fflush(stdout) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

int cli_cmd_list(int argc, char **argv)
{
	struct cat_vm_summary *rows = NULL;
	struct cli_vm_status *live = NULL;
	struct cat_db *db = NULL;
	struct ut_err err;
	size_t n = 0, w = 4, sw = 8;
	char size[32], stb[40];
	int json, r, ret = CLI_EXIT_FAIL;

	ut_err_clear(&err);
	r = parse_json_flag("list", argc, argv, &json, NULL);
	if (r > 0) {
		fputs(cli_help_list, stdout);
		return CLI_EXIT_OK;
	}
	if (r < 0)
		return -r;
	if (cli_catalog_open(&db) < 0)
		goto out;
	if (cat_vm_list(db, &rows, &n, &err) < 0) {
		cli_error_err(&err);
		goto out;
	}
	live = list_probe(db, rows, n);
	if (json) {
		ret = list_json(rows, live, n);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct cli_vm_status *l = live ? &live[i] : NULL;

		if (strlen(rows[i].name) > w)
			w = strlen(rows[i].name);
		if (strlen(state_text(shown_state(rows[i].state, l), l, stb, sizeof(stb))) > sw)
			sw = strlen(stb);
	}
	printf("%-*s  %-*s  %4s  %10s  %5s  %s\n", (int)w, "NAME", (int)sw, "STATE", "CPUS",
	       "MEMORY", "DISKS", "PID");
	for (size_t i = 0; i < n; i++) {
		const struct cli_vm_status *l = live ? &live[i] : NULL;
		char pid[16] = "-";

		if (rows[i].pid > 0)
			snprintf(pid, sizeof(pid), "%d", (int)rows[i].pid);
		printf("%-*s  %-*s  %4u  %10s  %5u  %s\n", (int)w, rows[i].name, (int)sw,
		       state_text(shown_state(rows[i].state, l), l, stb, sizeof(stb)), rows[i].vcpus,
		       cli_format_size(rows[i].memory, size, sizeof(size)), rows[i].n_disks, pid);
	}
	ret = fflush(stdout) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
out:
	live_free(live, n);
	cat_vm_summaries_free(rows, n);
	cat_close(db);
	return ret;
}

static struct json_object *jstr(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}

#define SHOW_EVENTS 10

static int show_json(const struct cat_vm *vm, const struct cli_vm_status *l, const struct cat_event *ev,
		     size_t n_ev)
{
	struct json_object *o = json_object_new_object(), *disks, *nics, *events;
	enum cat_vm_state st = shown_state(vm->state, l);
	int ret;

	json_object_object_add(o, "name", jstr(vm->name));
	json_object_object_add(o, "uuid", jstr(vm->uuid));
	json_object_object_add(o, "genid", vm->genid[0] ? jstr(vm->genid) : NULL);
	json_object_object_add(o, "state", jstr(cat_vm_state_name(st)));
	json_object_object_add(o, "reason", jstr(pause_reason(st, l)));
	json_object_object_add(o, "io_error", jstr(st == CAT_VM_PAUSED && l && l->known ?
						     l->io_error : NULL));
	json_object_object_add(o, "pid", vm->pid > 0 ? json_object_new_int(vm->pid) : NULL);
	json_object_object_add(o, "control_socket", jstr(vm->ctl_socket));
	json_object_object_add(o, "vcpus", json_object_new_int((int)vm->vcpus));
	json_object_object_add(o, "memory", json_object_new_int64((int64_t)vm->memory));
	json_object_object_add(o, "current_memory", json_object_new_int64(
		(int64_t)(vm->cur_memory ? vm->cur_memory : vm->memory)));
	json_object_object_add(o, "kernel", jstr(vm->kernel));
	json_object_object_add(o, "initrd", jstr(vm->initrd));
	json_object_object_add(o, "cmdline", jstr(vm->cmdline));
	json_object_object_add(o, "on_poweroff", jstr(vm->on_poweroff));
	json_object_object_add(o, "on_reboot", jstr(vm->on_reboot));
	json_object_object_add(o, "serial", json_object_new_boolean(vm->serial));
	json_object_object_add(o, "created", json_object_new_int64(vm->created_ms));
	json_object_object_add(o, "updated", json_object_new_int64(vm->updated_ms));
	disks = json_object_new_array();
	for (size_t i = 0; i < vm->n_disks; i++) {
		const struct cat_disk *d = &vm->disks[i];
		struct json_object *dj = json_object_new_object(), *chain = json_object_new_array();

		json_object_object_add(dj, "target", jstr(d->target));
		json_object_object_add(dj, "readonly", json_object_new_boolean(d->readonly));
		json_object_object_add(dj, "cache", jstr(d->nocache ? "none" : "writeback"));
		json_object_object_add(dj, "aio", jstr(d->threads ? "threads" : "io_uring"));
		json_object_object_add(dj, "werror",
				       jstr(cat_werror_names[d->werror <= CAT_WERROR_REPORT ? d->werror : 0]));
		json_object_object_add(dj, "rerror", jstr(d->rerror_stop ? "stop" : "report"));
		for (size_t k = 0; k < d->n_chain; k++) {
			struct json_object *im = json_object_new_object();

			json_object_object_add(im, "path", jstr(d->chain[k].path));
			json_object_object_add(im, "format", jstr(d->chain[k].format));
			json_object_object_add(im, "virtual_size", d->chain[k].virtual_size >= 0 ?
					       json_object_new_int64(d->chain[k].virtual_size) : NULL);
			json_object_array_add(chain, im);
		}
		json_object_object_add(dj, "chain", chain);
		json_object_array_add(disks, dj);
	}
	json_object_object_add(o, "disks", disks);
	nics = json_object_new_array();
	for (size_t i = 0; i < vm->n_nics; i++) {
		const struct cat_nic *nic = &vm->nics[i];
		struct json_object *nj = json_object_new_object();

		json_object_object_add(nj, "mac", jstr(nic->mac));
		json_object_object_add(nj, "type", jstr(nic->type));
		json_object_object_add(nj, "tap", jstr(nic->tap));
		json_object_object_add(nj, "bridge", jstr(nic->bridge));
		json_object_array_add(nics, nj);
	}
	json_object_object_add(o, "nics", nics);
	events = json_object_new_array();
	for (size_t i = 0; i < n_ev; i++) {
		struct json_object *ej = json_object_new_object();

		json_object_object_add(ej, "time", json_object_new_int64(ev[i].time_ms));
		json_object_object_add(ej, "action", jstr(ev[i].action));
		json_object_object_add(ej, "result", jstr(ev[i].result));
		json_object_array_add(events, ej);
	}
	json_object_object_add(o, "events", events);
	ret = cli_json_print(o);
	json_object_put(o);
	return ret;
}

static const char *fmt_time(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(buf, len, "?");
	return buf;
}

static void show_text(const struct cat_vm *vm, const struct cli_vm_status *l, const struct cat_event *ev,
		      size_t n_ev)
{
	enum cat_vm_state st = shown_state(vm->state, l);
	char a[32], b[32], stb[40];

	printf("name:          %s\n", vm->name);
	printf("uuid:          %s\n", vm->uuid);
	printf("genid:         %s\n", vm->genid[0] ? vm->genid : "-");
	if (vm->pid > 0)
		printf("state:         %s (pid %d)\n", state_text(st, l, stb, sizeof(stb)), (int)vm->pid);
	else
		printf("state:         %s\n", state_text(st, l, stb, sizeof(stb)));
	if (st == CAT_VM_PAUSED && l && l->known && l->io_error)
		printf("io-error:      %s (cowvm resume retries)\n", l->io_error);
	if (vm->ctl_socket)
		printf("control:       %s\n", vm->ctl_socket);
	printf("vcpus:         %u\n", vm->vcpus);
	if (vm->cur_memory)
		printf("memory:        %s (current %s)\n", cli_format_size(vm->memory, a, sizeof(a)),
		       cli_format_size(vm->cur_memory, b, sizeof(b)));
	else
		printf("memory:        %s\n", cli_format_size(vm->memory, a, sizeof(a)));
	printf("kernel:        %s\n", vm->kernel);
	printf("initrd:        %s\n", vm->initrd ? vm->initrd : "-");
	printf("cmdline:       %s\n", vm->cmdline ? vm->cmdline : "-");
	printf("on_poweroff:   %s\n", vm->on_poweroff);
	printf("on_reboot:     %s\n", vm->on_reboot);
	printf("console:       %s\n", vm->serial ? "serial (ttyS0)" : "none");
	for (size_t i = 0; i < vm->n_disks; i++) {
		const struct cat_disk *d = &vm->disks[i];

		for (size_t k = 0; k < d->n_chain; k++) {
			const struct cat_image *im = &d->chain[k];

			if (k == 0)
				printf("disk %-8s %s", d->target, im->path);
			else
				printf("  backing:     %s", im->path);
			printf(" (%s, %s%s%s%s%s%s)\n", im->format, im->virtual_size >= 0 ?
			       cli_format_size((uint64_t)im->virtual_size, a, sizeof(a)) :
			       "size unknown", k == 0 && d->readonly ? ", read-only" : "",
			       k == 0 && d->nocache ? ", cache=none" : "",
			       k == 0 && d->threads ? ", aio=threads" : "",
			       k == 0 && d->werror == CAT_WERROR_STOP ? ", werror=stop" :
			       k == 0 && d->werror == CAT_WERROR_REPORT ? ", werror=report" : "",
			       k == 0 && d->rerror_stop ? ", rerror=stop" : "");
		}
	}
	for (size_t i = 0; i < vm->n_nics; i++) {
		const struct cat_nic *nic = &vm->nics[i];

		printf("nic %-9zu %s %s", i, nic->mac, nic->type);
		if (nic->bridge)
			printf(" bridge=%s", nic->bridge);
		if (nic->tap)
			printf(" tap=%s", nic->tap);
		putchar('\n');
	}
	printf("created:       %s\n", fmt_time(vm->created_ms, a, sizeof(a)));
	printf("updated:       %s\n", fmt_time(vm->updated_ms, a, sizeof(a)));
	for (size_t i = 0; i < n_ev; i++) {
		char t[40];

		printf("%-14s %s %s: %s\n", i ? "" : "events:",
		       fmt_time(ev[i].time_ms, t, sizeof(t)), ev[i].action, ev[i].result);
	}
}

int cli_cmd_show(int argc, char **argv)
{
	struct cat_event *ev = NULL;
	struct cat_db *db = NULL;
	struct cat_vm vm = { 0 };
	struct cli_vm_status live = { 0 };
	struct ut_err err;
	const char *name = NULL;
	size_t n_ev = 0;
	int json, r, ret = CLI_EXIT_FAIL;

	ut_err_clear(&err);
	r = parse_json_flag("show", argc, argv, &json, &name);
	if (r > 0) {
		fputs(cli_help_show, stdout);
		return CLI_EXIT_OK;
	}
	if (r < 0)
		return -r;
	if (cli_catalog_open(&db) < 0)
		goto out;
	if (cat_vm_get(db, name, &vm, &err) < 0 || cat_vm_refresh(db, &vm, &err) < 0 ||
	    cat_event_list(db, name, SHOW_EVENTS, &ev, &n_ev, &err) < 0) {
		cli_error_err(&err);
		goto out;
	}
	if ((vm.state == CAT_VM_RUNNING || vm.state == CAT_VM_PAUSED) && vm.ctl_socket) {
		const char *path = vm.ctl_socket;

		vm_probe(&path, &live, 1);
	}
	if (json) {
		ret = show_json(&vm, &live, ev, n_ev);
		goto out;
	}
	show_text(&vm, &live, ev, n_ev);
	ret = fflush(stdout) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
out:
	free(live.io_error);
	cat_events_free(ev, n_ev);
	cat_vm_clear(&vm);
	cat_close(db);
	return ret;
}
