/* cli/cli.h — the command table (after git's) and helpers shared by commands.
 *
 * Adding a command = one cli/cmd-NAME.c defining `int cli_cmd_NAME(int argc,
 * char **argv)` plus one row in cli_commands[] (cli/main.c). Commands return
 * the process exit status. Only cli/ prints to the user and exits.
 *
 * Exit status convention (man/cowvm.1): 0 success; 1 the operation failed
 * (message on stderr "cowvm: ..."); 2 usage error; `cowvm run` returns the
 * guest's status (0..255) when the guest ended the run itself.
 */
#ifndef CLI_H
#define CLI_H

#include <stdio.h>

#include "util/err.h"

#define CLI_EXIT_OK     0
#define CLI_EXIT_FAIL   1
#define CLI_EXIT_USAGE  2

struct cli_command {
	const char *name;
	int (*fn)(int argc, char **argv);   /* argv[0] is the command name */
	const char *summary;                /* one line for `cowvm help` */
	const char *usage;                  /* full text for `cowvm help NAME` */
};

extern const struct cli_command cli_commands[];

/* Print "cowvm: MSG" (from @e, or the formatted text) on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_error_err(const struct ut_err *e);
/* Print "cowvm CMD: MSG" plus CMD's usage on stderr; returns CLI_EXIT_USAGE.
 * @cmd may name a subcommand ("image check"): then only its usage lines are
 * printed (the whole usage if the command's text has none for it). */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* --help of @cmd ("image check"): the usage cli_usage_error prints, on
 * stdout; returns CLI_EXIT_OK. */
int cli_usage_help(const char *cmd);

/* Parse a size with an optional K/M/G/T/P/E suffix (binary units; a plain
 * number is MiB when @default_mib, else bytes), as qemu-img parses sizes:
 * decimal (010 is ten) or 0x hex; a decimal fraction ("1.5G", "1.G") needs
 * a unit, and a fraction of a byte is dropped. Returns 0 or -EINVAL. */
int cli_parse_size(const char *s, int default_mib, unsigned long long *out);
/* Parse a whole number (decimal, 0x hex or 0 octal) of at most @max, nothing
 * else in @s. Returns 0 or -EINVAL. */
int cli_parse_uint(const char *s, unsigned long long max, unsigned long long *out);

/* ---- catalog commands (cli/cli-catalog.c) ---- */
#include <stddef.h>
#include <stdint.h>
struct cat_db;
struct json_object;

/* Open the catalog ($COWVM_HOME), printing the error. Returns 0 or -1. */
int cli_catalog_open(struct cat_db **db);
/* "512 MiB", "1.5 GiB" into @buf; returns @buf. */
const char *cli_format_size(uint64_t bytes, char *buf, size_t len);
/* Print @obj as pretty JSON on stdout. Returns an exit status. */
int cli_json_print(struct json_object *obj);
/* Does argv (after the command name) ask for --help / -h? */
int cli_wants_help(int argc, char **argv);
/* Print the manual page (troff) built from the command table (cli/man.c). */
void cli_man_print(FILE *f);

int cli_cmd_run(int argc, char **argv);
int cli_cmd_help(int argc, char **argv);
int cli_cmd_control(int argc, char **argv);
int cli_cmd_console(int argc, char **argv);
/* Attach stdin/stdout to the console socket at @path (cli/cmd-console.c). */
int cli_console_attach(const char *path);
int cli_cmd_extract_vmlinux(int argc, char **argv);
int cli_cmd_create(int argc, char **argv);
int cli_cmd_define(int argc, char **argv);
int cli_cmd_dumpxml(int argc, char **argv);
int cli_cmd_list(int argc, char **argv);
int cli_cmd_show(int argc, char **argv);
int cli_cmd_rm(int argc, char **argv);
int cli_cmd_image(int argc, char **argv);
int cli_cmd_start(int argc, char **argv);
int cli_cmd_stop(int argc, char **argv);
int cli_cmd_pause(int argc, char **argv);
int cli_cmd_resume(int argc, char **argv);
int cli_cmd_events(int argc, char **argv);

/* ---- lifecycle (start, stop, pause, resume, console; the VMM's side) ---- */
#include <stdbool.h>
struct vmm_machine;

/* Send @cmd with @args (a JSON object, may be NULL; not consumed) to the VMM
 * control socket at @path (core/control.h) and wait for the reply, all of
 * it within @timeout_ms. Returns 0 on {"return": ...}; -EREMOTEIO on
 * {"error": ...} with "CMD: desc" in @err; else -errno with @err (connect
 * failed, -ETIMEDOUT, -ECONNRESET, -EPROTO for a reply that is not JSON).
 * *reply holds the whole reply object for 0 and -EREMOTEIO (caller puts),
 * NULL otherwise. (cli/cmd-control.c) */
int cli_control_call(const char *path, const char *cmd, struct json_object *args,
		     int timeout_ms, struct json_object **reply, struct ut_err *err);
/* What a VMM said to query-status (core/control.c cmd_query_status). */
struct cli_vm_status {
	bool known;           /* it answered "running" or "paused" */
	bool paused;
	const char *reason;   /* paused: "user" or "io-error" (static); else NULL */
	char *io_error;       /* "io-error": the disk error (malloc'd, the caller
				 frees it) or NULL */
};
/* Fill @st (zeroed by the caller) from @reply, the whole reply object
 * ({"return": {...}}; NULL is fine). A reply that is not well formed, or
 * "shutting-down", leaves st->known false. (cli/cmd-control.c) */
void cli_status_parse(struct json_object *reply, struct cli_vm_status *st);
/* A UNIX stream socket connected to the VMM control socket at @path, its
 * connect and sends bounded by @timeout_ms (SO_SNDTIMEO: a VMM that does
 * not accept, backlog full, is -ETIMEDOUT). Returns the fd (caller
 * closes) or -errno with @err. (cli/cmd-control.c) */
int cli_control_connect(const char *path, int timeout_ms, struct ut_err *err);
/* Greeting line @line of the VMM at @path: 0, or -EBUSY with @err when it
 * is the refusal a VMM with all its connections taken sends instead
 * ({"error": {"desc": ...}}). (cli/cmd-control.c) */
int cli_control_greeting(const char *path, const char *line, struct ut_err *err);
/* Milliseconds on the monotonic clock, for deadlines (cli/cmd-control.c). */
long long cli_now_ms(void);

/* `cowvm run --catalog-vm NAME`: the VMM records its own transitions
 * (cli/vmm-catalog.c). */
struct cli_vmm_catalog {
	const char *name;   /* the VM's name in the catalog */
	bool ran;           /* recorded as running */
};
/* The vmm_machine on_running hook (@opaque: struct cli_vmm_catalog):
 * STARTING -> RUNNING if the catalog names this process as the VM's VMM.
 * Returns 0 or -errno with @err (the run then ends). */
int cli_vmm_catalog_running(struct vmm_machine *m, void *opaque, struct ut_err *err);
/* The vmm_machine on_disk_snapshot hook (@opaque: struct cli_vmm_catalog):
 * the catalog records the overlay as the disk's image, its parent the image
 * it had (cat_disk_snapshot; a snapshot recorded already, the overlay on
 * that image, is taken as done: the retry, mode existing, of one whose
 * overlay core/snapshot.c kept when the undo failed), or with @undo puts
 * the disk back (cat_disk_snapshot_undo). Only for a VM whose catalog row names this
 * process as its VMM. Each call waits at most CLI_SNAP_CATALOG_WAIT_MS for
 * the catalog's lock (the disk's requests wait meanwhile, and `cowvm
 * control` gives up after 10 s): then -EBUSY, "the catalog is busy".
 * Returns 0 or -errno with @err. */
#define CLI_SNAP_CATALOG_WAIT_MS 3000
struct vmm_disk_snapshot;
int cli_vmm_catalog_disk_snapshot(struct vmm_machine *m, void *opaque,
				  const struct vmm_disk_snapshot *s, bool undo, struct ut_err *err);
/* At the end of the run (or when the machine could not be built): ACTIVE ->
 * STOPPED, result @why's message, else "exit status N" / "ok"; nothing when
 * the catalog does not name this process. Errors are printed. */
void cli_vmm_catalog_exit(const struct cli_vmm_catalog *cv, int status,
			  const struct ut_err *why);

/* Full help texts (usage, description, options), one per command; the same
 * text is printed by `cowvm help CMD` and makes up man/cowvm.1. */
extern const char cli_help_create[], cli_help_define[], cli_help_dumpxml[],
	cli_help_list[], cli_help_show[], cli_help_rm[], cli_help_start[],
	cli_help_stop[], cli_help_pause[], cli_help_resume[], cli_help_console[],
	cli_help_events[];

#endif
