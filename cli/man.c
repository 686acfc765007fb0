/* cli/man.c — man/cowvm.1, generated from the command table.
 *
 * `cowvm help CMD` prints a command's help text; `cowvm help --man` prints
 * the manual page made of the same texts plus the sections below, so the
 * two cannot drift apart. man/cowvm.1 is that output, committed and
 * installed by `make install`; tests/integration/cli-man.sh checks they
 * are equal (regenerate with `build/cowvm help --man > man/cowvm.1`).
 *
 * A help text is: a "usage:" block, then paragraphs, then optionally an
 * "options:" block whose entries are "  --opt ARG   description" with
 * continuation lines indented further.
 */
#include "cli/cli.h"

#include <string.h>

static const char man_head[] =
	".TH COWVM 1 \"\" \"cowvm\" \"User Commands\"\n"
	".SH NAME\n"
	"cowvm \\- clone\\-focused KVM virtual machine manager\n"
	".SH SYNOPSIS\n"
	".B cowvm\n"
	".I COMMAND\n"
	".RI [ ARGS ]\n"
	".br\n"
	".B cowvm help\n"
	".RI [ COMMAND ]\n"
	".br\n"
	".B cowvm \\-\\-version\n"
	".SH DESCRIPTION\n"
	"cowvm manages KVM virtual machines on one host. Their definitions, disks,\n"
	"disk image lineage, network interfaces, snapshots and an event log live in\n"
	"a SQLite catalog; each running VM is a cowvm VMM process that answers a\n"
	"control socket. Any number of cowvm commands may run at once: every change\n"
	"is one transaction and none is lost.\n"
	".PP\n"
	"Each command prints its help with\n"
	".BR \"cowvm help\" \" COMMAND\"\n"
	"or\n"
	".IR COMMAND \" \\-\\-help\" ;\n"
	"that text is the same as the section of this page.\n"
	".SH COMMANDS\n";

static const char man_tail[] =
	".SH EXIT STATUS\n"
	".TP\n"
	".B 0\n"
	"success\n"
	".TP\n"
	".B 1\n"
	"the operation failed; standard error has a line\n"
	".RI \"cowvm: \" message\n"
	"that says what could not be done and why, usually\n"
	".RI \"cowvm: unable to \" \"what\" \": \" why\n"
	"(more lines may follow, e.g. the list of unsupported XML elements)\n"
	".TP\n"
	".B 2\n"
	"usage error (unknown command or option, missing or invalid argument);\n"
	"standard error has the message and the command's usage\n"
	".PP\n"
	".B cowvm run\n"
	"returns the guest's own exit status (0\\-255) when the guest ended the run.\n"
	"Warnings and notes go to standard error prefixed with\n"
	".RB \"\" \"cowvm: warning:\" \" or \" \"cowvm: note:\" ;\n"
	"results go to standard output.\n"
	".SH EXAMPLES\n"
	".nf\n"
	"cowvm create web1 \\-\\-kernel /boot/vmlinuz \\-\\-append console=ttyS0 \\e\n"
	"        \\-\\-disk /srv/web1.qcow2 \\-\\-mem 1G \\-\\-cpus 2 \\-\\-nic tap=tap\\-web1\n"
	"cowvm list\n"
	"cowvm dumpxml web1 > web1.xml && virt\\-xml\\-validate web1.xml domain\n"
	"cowvm define other.xml \\-\\-ignore\\-unsupported\n"
	"cowvm show web1 \\-\\-json\n"
	"cowvm rm web1 \\-\\-with\\-disks\n"
	".fi\n"
	".SH ENVIRONMENT\n"
	".TP\n"
	".B COWVM_HOME\n"
	"directory of the catalog (catalog.db) and console logs (logs/);\n"
	"default ~/.local/share/cowvm\n"
	".TP\n"
	".B XDG_RUNTIME_DIR\n"
	"runtime files (control and console sockets) go to $XDG_RUNTIME_DIR/cowvm,\n"
	"or to $COWVM_HOME/run when it is not set\n"
	".TP\n"
	".B COWVM_CATALOG_WAIT_MS\n"
	"how long a command waits for another one's catalog transaction before it\n"
	"gives up with \"the catalog is busy\" (default 60000)\n"
	".SH FILES\n"
	".TP\n"
	".I $COWVM_HOME/catalog.db\n"
	"the catalog (SQLite, WAL mode; catalog.db\\-wal and catalog.db\\-shm beside it)\n"
	".TP\n"
	".I $COWVM_HOME/logs/NAME.log\n"
	"serial console log of VM NAME\n"
	".TP\n"
	".I $XDG_RUNTIME_DIR/cowvm/NAME.ctl\n"
	"control socket of the running VM NAME (mode 0600)\n"
	".TP\n"
	".I $XDG_RUNTIME_DIR/cowvm/NAME.console\n"
	"serial console socket of the running VM NAME\n"
	".SH SEE ALSO\n"
	".BR virsh (1),\n"
	".BR virt\\-xml\\-validate (1),\n"
	".BR qemu\\-img (1)\n";

/* Write @len bytes of @s escaped for roff text. */
static void roff(FILE *f, const char *s, size_t len, int line_start)
{
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (line_start && (c == '.' || c == '\''))
			fputs("\\&", f);
		line_start = 0;
		if (c == '\\')
			fputs("\\e", f);
		else if (c == '-')
			fputs("\\-", f);
		else
			fputc(c, f);
		if (c == '\n')
			line_start = 1;
	}
}

static const char *line_end(const char *p)
{
	const char *e = strchr(p, '\n');

	return e ? e : p + strlen(p);
}

/* Number of leading spaces. */
static size_t indent(const char *p, const char *e)
{
	size_t n = 0;

	while (p + n < e && p[n] == ' ')
		n++;
	return n;
}

static void options_block(FILE *f, const char *p, const char *end)
{
	while (p < end) {
		const char *e = line_end(p);
		size_t in = indent(p, e);

		if (in == 2 && p[2] == '-') {
			/* term ends at the first run of two spaces */
			const char *t = p + 2, *gap = strstr(t, "  ");

			if (!gap || gap > e)
				gap = e;
			fputs(".TP\n.B ", f);
			roff(f, t, (size_t)(gap - t), 0);
			fputc('\n', f);
			p = gap;
			while (p < e && *p == ' ')
				p++;
			if (p < e) {
				roff(f, p, (size_t)(e - p), 1);
				fputc('\n', f);
			}
		} else if (in > 2) {
			roff(f, p + in, (size_t)(e - p - in), 1);
			fputc('\n', f);
		} else if (e > p) {
			fputs(".PP\n", f);
			roff(f, p, (size_t)(e - p), 1);
			fputc('\n', f);
		}
		p = *e ? e + 1 : e;
	}
}

static void command_section(FILE *f, const struct cli_command *c)
{
	const char *p = c->usage;

	fputs(".SS \"cowvm ", f);
	roff(f, c->name, strlen(c->name), 0);
	fputs("\"\n", f);
	while (*p) {
		const char *end = strstr(p, "\n\n");

		end = end ? end + 1 : p + strlen(p);
		if (!strncmp(p, "usage:", 6)) {
			fputs(".nf\n", f);
			roff(f, p, (size_t)(end - p), 1);
			fputs(".fi\n", f);
		} else if (!strncmp(p, "options:\n", 9)) {
			fputs(".PP\noptions:\n", f);
			options_block(f, p + 9, end);
		} else {
			fputs(".PP\n", f);
			roff(f, p, (size_t)(end - p), 1);
		}
		p = end;
		while (*p == '\n')
			p++;
	}
}

void cli_man_print(FILE *f)
{
	fputs(man_head, f);
	for (const struct cli_command *c = cli_commands; c->name; c++)
		command_section(f, c);
	fputs(man_tail, f);
}
