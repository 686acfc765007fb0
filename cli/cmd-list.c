/* cli/cmd-list.c — `cowvm list` and `cowvm show`. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "catalog/catalog.h"

const char cli_help_list[] =
	"usage: cowvm list [--json]\n"
	"\n"
	"List the VMs in the catalog, sorted by name: name, state, virtual CPUs,\n"
	"memory, number of disks and the VMM's pid. States are stopped, starting,\n"
	"running, paused, stopping and crashed; a VM whose VMM process died is\n"
	"shown as crashed (and its stale runtime files are removed).\n"
	"\n"
	"options:\n"
	"  --json           print a JSON array of objects with the keys name, uuid,\n"
	"                   state, vcpus, memory (bytes), disks and pid (or null)\n";

const char cli_help_show[] =
	"usage: cowvm show NAME [--json]\n"
	"\n"
	"Show everything the catalog holds about VM NAME: its definition, each\n"
	"disk with its backing chain (format and virtual size of every image), its\n"
	"network interfaces, its runtime state and its last events (create,\n"
	"start, crash-detected, ...) from the catalog's event log.\n"
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
static int list_json(const struct cat_vm_summary *rows, size_t n)
{
	fputs("[\n", stdout);
	for (size_t i = 0; i < n; i++) {
		fputs("  { \"name\": ", stdout);
		json_str(stdout, rows[i].name);
		fputs(", \"uuid\": ", stdout);
		json_str(stdout, rows[i].uuid);
		printf(", \"state\": \"%s\", \"vcpus\": %u, \"memory\": %llu, \"disks\": %u, ",
		       cat_vm_state_name(rows[i].state), rows[i].vcpus,
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
	struct cat_db *db = NULL;
	struct ut_err err;
	size_t n = 0, w = 4;
	char size[32];
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
	if (json) {
		ret = list_json(rows, n);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if (strlen(rows[i].name) > w)
			w = strlen(rows[i].name);
	printf("%-*s  %-8s  %4s  %10s  %5s  %s\n", (int)w, "NAME", "STATE", "CPUS", "MEMORY",
	       "DISKS", "PID");
	for (size_t i = 0; i < n; i++) {
		char pid[16] = "-";

		if (rows[i].pid > 0)
			snprintf(pid, sizeof(pid), "%d", (int)rows[i].pid);
		printf("%-*s  %-8s  %4u  %10s  %5u  %s\n", (int)w, rows[i].name,
		       cat_vm_state_name(rows[i].state), rows[i].vcpus,
		       cli_format_size(rows[i].memory, size, sizeof(size)), rows[i].n_disks, pid);
	}
	ret = fflush(stdout) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
out:
	cat_vm_summaries_free(rows, n);
	cat_close(db);
	return ret;
}

static struct json_object *jstr(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}

#define SHOW_EVENTS 10

static int show_json(const struct cat_vm *vm, const struct cat_event *ev, size_t n_ev)
{
	struct json_object *o = json_object_new_object(), *disks, *nics, *events;
	int ret;

	json_object_object_add(o, "name", jstr(vm->name));
	json_object_object_add(o, "uuid", jstr(vm->uuid));
	json_object_object_add(o, "genid", vm->genid[0] ? jstr(vm->genid) : NULL);
	json_object_object_add(o, "state", jstr(cat_vm_state_name(vm->state)));
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

static void show_text(const struct cat_vm *vm, const struct cat_event *ev, size_t n_ev)
{
	char a[32], b[32];

	printf("name:          %s\n", vm->name);
	printf("uuid:          %s\n", vm->uuid);
	printf("genid:         %s\n", vm->genid[0] ? vm->genid : "-");
	if (vm->pid > 0)
		printf("state:         %s (pid %d)\n", cat_vm_state_name(vm->state), (int)vm->pid);
	else
		printf("state:         %s\n", cat_vm_state_name(vm->state));
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
	if (json) {
		ret = show_json(&vm, ev, n_ev);
		goto out;
	}
	show_text(&vm, ev, n_ev);
	ret = fflush(stdout) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
out:
	cat_events_free(ev, n_ev);
	cat_vm_clear(&vm);
	cat_close(db);
	return ret;
}
