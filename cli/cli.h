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
/* Print "cowvm CMD: usage error: MSG" plus the usage line; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parse a size with an optional K/M/G/T suffix (binary units; plain number is
 * MiB when @default_mib, else bytes). Returns 0 or -EINVAL. */
int cli_parse_size(const char *s, int default_mib, unsigned long long *out);

int cli_cmd_run(int argc, char **argv);
int cli_cmd_help(int argc, char **argv);
int cli_cmd_control(int argc, char **argv);
int cli_cmd_console(int argc, char **argv);
/* Attach stdin/stdout to the console socket at @path (cli/cmd-console.c). */
int cli_console_attach(const char *path);
int cli_cmd_extract_vmlinux(int argc, char **argv);
int cli_cmd_image(int argc, char **argv);

#endif
