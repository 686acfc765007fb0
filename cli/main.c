/* cli/main.c — `cowvm` entry point and the command table. */
#include "cli/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct cli_command cli_commands[] = {
	{ "run", cli_cmd_run, "run one VM in the foreground",
	  "usage: cowvm run --kernel FILE [--initrd FILE] [--append STR] [--mem SIZE]\n"
	  "                 [--cpus N] [--disk FILE[,ro][,format=raw|qcow2][,cache=none|writeback]\n"
	  "                 [,aio=io_uring|threads][,werror=enospc|stop|report]\n"
	  "                 [,rerror=report|stop][,target=vdX]]...\n"
	  "                 [--rng] [--no-pit] [--console stdio|file:PATH|none] [--verbose]\n"
	  "                 [--control SOCKET] [--console-socket SOCKET]\n"
	  "                 [--save-on-signal FILE [--save-resume] [--save-compress]]\n"
	  "       cowvm run --restore FILE [--verify-ram] [--disk FILE...] [--console ...]\n"
	  "  internal: --catalog-vm NAME (for the VMM cowvm start launches) records\n"
	  "  the VM's running and stopped states in the catalog.\n" },
	{ "extract-vmlinux", cli_cmd_extract_vmlinux,
	  "write the vmlinux ELF inside a bzImage (for PVH boot)",
	  "usage: cowvm extract-vmlinux BZIMAGE OUTPUT\n"
	  "Decompress the kernel payload of BZIMAGE (gzip, xz, zstd, lz4 or lzma) and\n"
	  "write it as the ELF file OUTPUT, which `cowvm run --kernel` boots via PVH.\n" },
	{ "image", cli_cmd_image, "create, inspect, check, compare, convert and resize disk images (qcow2, raw)",
	  "usage: cowvm image create FILE SIZE [-b BACKING [-F FMT]] [--cluster-size N]\n"
	  "                          [--compression zlib|zstd] [--refcount-bits N] [--compat 0.10|1.1]\n"
	  "                          [--lazy-refcounts] [--extended-l2[=on|off]]\n"
	  "                          [--preallocation off|metadata|falloc|full]\n"
	  "       cowvm image resize FILE [+|-]SIZE [--shrink] [-f FMT] [-q]\n"
	  "                          [--preallocation off|metadata|falloc|full]\n"
	  "       cowvm image info FILE [--json] [--chain] [-U]\n"
	  "       cowvm image check FILE [--repair leaks|all] [--json] [-U]\n"
	  "       cowvm image convert SRC DST [-f FMT] [-O raw|qcow2] [-c] [--compression zlib|zstd]\n"
	  "                          [-m THREADS] [--cluster-size N] [--refcount-bits N]\n"
	  "                          [-B BACKING [-F FMT]] [-n] [-S SIZE] [--extended-l2[=on|off]]\n"
	  "                          [--preallocation off|metadata|falloc|full] [-U]\n"
	  "                          [-l SNAPSHOT_PARAM]\n"
	  "       cowvm image rebase FILE -b NEW [-F FMT] [-u]\n"
	  "       cowvm image commit FILE [-b BASE] [-d] [-p|-q]\n"
	  "       cowvm image map FILE [--json] [-U]\n"
	  "       cowvm image compare IMG1 IMG2 [-f FMT] [-F FMT] [-s] [-q] [-U]\n"
	  "       cowvm image bitmap (--add | --remove | --clear | --enable | --disable |\n"
	  "                          --merge SOURCE [-b SOURCE_FILE [-F SOURCE_FMT]])...\n"
	  "                          [-g GRANULARITY] [-f FMT] FILE BITMAP\n"
	  "       cowvm image snapshot (-l | -c SNAPSHOT | -a SNAPSHOT | -d SNAPSHOT) [-q] [-U]\n"
	  "                          [-f FMT] FILE\n"
	  "       cowvm image measure (--size SIZE | [-f FMT] FILE) [-O qcow2|raw] [--cluster-size N]\n"
	  "                          [--refcount-bits N] [--extended-l2[=on|off]]\n"
	  "                          [--preallocation off|metadata|falloc|full] [--json] [-U]\n"
	  "       cowvm image bench [-c COUNT] [-d DEPTH] [-s SIZE] [-S STEP] [-o OFFSET] [-w]\n"
	  "                         [--random] [--pattern BYTE] [--flush-interval N] [-i io_uring|threads]\n"
	  "                         [-U] [-n | -t none|writeback] [--buffers huge|pages] FILE\n"
	  "  bench -t none: O_DIRECT on the image (cache=none), as qemu-img bench; -n is\n"
	  "  short for it (qemu-img bench's -n picks Linux AIO and needs -t none too).\n"
	  "  resize: SIZE as for create, absolute or +/- relative (the last argument,\n"
	  "  as with qemu-img resize); shrinking needs --shrink; a version 3 image\n"
	  "  with internal snapshots may change its size, each snapshot keeps its own.\n"
	  "  --preallocation (resize: growing only; raw: falloc or full) allocates the\n"
	  "  new area (convert: the whole output) as qemu-img's preallocation= does.\n"
	  "  convert -B: DST is a new overlay over BACKING (which must read as SRC's\n"
	  "  backing chain does) holding only what SRC's top layer holds, as qemu-img\n"
	  "  convert -B; -n writes into an existing DST at least as large as SRC.\n"
	  "  convert -l: the content of SRC's internal snapshot (snapshot.id=ID,\n"
	  "  snapshot.name=NAME, both, or an ID else a name), as qemu-img convert -l:\n"
	  "  at SRC's current size; SRC is never written.\n"
	  "  commit -b BASE commits into a deeper layer of FILE's chain (implies -d).\n"
	  "  measure: the bytes a new image (--size) or a convert of FILE needs, as\n"
	  "  qemu-img measure (-O defaults to qcow2, convert's default).\n"
	  "  compare: do the two disks (through their backing chains) read the same,\n"
	  "  as qemu-img compare: \"Images are identical.\" (exit 0) or \"Content\n"
	  "  mismatch at offset N!\" (its 512-byte sector; exit 1) on stdout; a larger\n"
	  "  image must read zeros past the other's end. -s (strict) also fails on a\n"
	  "  size difference or a block status (allocation) that differs; -q prints\n"
	  "  nothing; -f/-F: the formats. Exit 2: an image could not be opened, 3: a\n"
	  "  block status query failed (-s), 4: reading failed.\n"
	  "  bitmap: persistent dirty bitmap BITMAP of FILE (qcow2 version 3) changed\n"
	  "  as qemu-img bitmap does, the operations in the order given: --add (empty;\n"
	  "  -g: 512 B .. 2G, default the cluster size within 4K..64K; disabled when\n"
	  "  the last of --enable/--disable is --disable), --remove (also one in use,\n"
	  "  which QEMU calls inconsistent), --clear, --enable, --disable (record\n"
	  "  writes or not), --merge SOURCE (its bits ORed in; from SOURCE_FILE with\n"
	  "  -b). When one fails nothing is changed (qemu-img keeps the earlier ones).\n"
	  "  snapshot: internal snapshots of FILE (qcow2 version 3), as qemu-img\n"
	  "  snapshot: -l lists them, -c makes one of the disk as it is now, -a\n"
	  "  reverts the disk to one (its size too), -d deletes one. -a finds\n"
	  "  SNAPSHOT as an ID first, then as a name, -d by name (as qemu-img).\n"
	  "  A crash half way leaves the image marked dirty; its next writable\n"
	  "  open repairs it.\n"
	  "Images are locked like QEMU locks them: a command that writes an image, like\n"
	  "a running VM, keeps every other locking opener out; readers keep writers\n"
	  "out. A read-only command refused with \"image is in use\" may read anyway\n"
	  "with -U (--force-share, as qemu-img -U), which takes and tests no lock.\n"
	  "See cowvm-image(1) and cowvm-qcow2(5).\n" },
	{ "create", cli_cmd_create, "define a VM from options", cli_help_create },
	{ "define", cli_cmd_define, "define a VM from libvirt domain XML", cli_help_define },
	{ "dumpxml", cli_cmd_dumpxml, "print a VM as libvirt domain XML", cli_help_dumpxml },
	{ "list", cli_cmd_list, "list VMs and their states", cli_help_list },
	{ "show", cli_cmd_show, "show one VM in detail", cli_help_show },
	{ "rm", cli_cmd_rm, "remove a VM from the catalog", cli_help_rm },
	{ "start", cli_cmd_start, "start a VM (its VMM runs in the background)", cli_help_start },
	{ "stop", cli_cmd_stop, "stop a running VM", cli_help_stop },
	{ "pause", cli_cmd_pause, "pause a running VM", cli_help_pause },
	{ "resume", cli_cmd_resume, "resume a paused VM", cli_help_resume },
	{ "console", cli_cmd_console, "attach to a running VM's serial console", cli_help_console },
	{ "events", cli_cmd_events, "print a running VM's events (pause, resume, shutdown, disk errors)",
	  cli_help_events },
	{ "control", cli_cmd_control, "send one command to a running VM's control socket",
	  "usage: cowvm control [--timeout S] SOCKET COMMAND [ARGUMENTS-JSON]\n"
	  "  waits S seconds for the reply (default 10; 300 for save and\n"
	  "  blockdev-snapshot-sync); without one in time the VMM may still finish it\n"
	  "  commands: query-status, pause, resume, stop {\"timeout\": S}, quit,\n"
	  "            save {\"path\": FILE, \"resume\": BOOL, \"compress\": BOOL},\n"
	  "            blockdev-snapshot-sync {\"device\": \"virtio-blk0\" | \"vda\",\n"
	  "              \"snapshot-file\": FILE, \"format\": \"qcow2\",\n"
	  "              \"mode\": \"absolute-paths\" | \"existing\"}: the disk goes on in a new\n"
	  "              qcow2 overlay FILE on top of its image, which becomes read-only\n"
	  "              (\"existing\": FILE is such an overlay already); a VM started\n"
	  "              with cowvm start records the overlay in the catalog (a relative\n"
	  "              FILE is taken from the VMM's working directory: that of the\n"
	  "              cowvm run or cowvm start that began it),\n"
	  "            qmp_capabilities (the connection then gets events: see cowvm events)\n" },
	{ "help", cli_cmd_help, "show help for a command",
	  "usage: cowvm help [COMMAND | --man]\n"
	  "\n"
	  "Without COMMAND, list the commands. With COMMAND, print its help (the same\n"
	  "text as its section in cowvm(1)). With --man, print the whole manual page\n"
	  "in troff.\n" },
	{ NULL, NULL, NULL, NULL },
};

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("cowvm: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void cli_error_err(const struct ut_err *e)
{
	cli_error("%s", e->msg[0] ? e->msg : strerror(e->code ? -e->code : EIO));
}

static const struct cli_command *find_command(const char *name)
{
	for (const struct cli_command *c = cli_commands; c->name; c++)
		if (!strcmp(c->name, name))
			return c;
	return NULL;
}

/* Print on @f the lines of @usage that describe "cowvm @cmd" (@cmd: "NAME
 * SUB"): the line naming it (as "usage: cowvm ...") and its continuation
 * lines (indented, naming no other command). false (nothing printed) when
 * @usage has no such line. */
static bool print_sub_usage(FILE *f, const char *usage, const char *cmd)
{
	size_t n = strlen(cmd);
	bool found = false;

	for (const char *l = usage, *eol; *l; l = *eol ? eol + 1 : eol) {
		const char *p = strstr(l, "cowvm ");

		eol = strchrnul(l, '\n');
		if (p && p >= eol)
			p = NULL;   /* not on this line */
		if (!found) {
			if (p && !strncmp(p + 6, cmd, n) && (p[6 + n] == ' ' || p + 6 + n == eol)) {
				found = true;
				fprintf(f, "usage: %.*s\n", (int)(eol - p), p);
			}
		} else if (*l != ' ' || p) {
			break;
		} else {
			fprintf(f, "%.*s\n", (int)(eol - l), l);
		}
	}
	return found;
}

/* The usage of "cowvm @cmd" on @f: that of its subcommand if @cmd names
 * one ("image check") and the usage has lines for it, else the whole. */
static void print_usage(FILE *f, const char *cmd)
{
	char name[32];
	size_t n = strcspn(cmd, " ");
	const struct cli_command *c;

	snprintf(name, sizeof(name), "%.*s", (int)n, cmd);
	c = find_command(name);
	if (c && cmd[n] && print_sub_usage(f, c->usage, cmd))
		fprintf(f, "See 'cowvm help %s'.\n", name);
	else if (c)
		fputs(c->usage, f);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "cowvm %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	print_usage(stderr, cmd);
	return CLI_EXIT_USAGE;
}

int cli_usage_help(const char *cmd)
{
	print_usage(stdout, cmd);
	return CLI_EXIT_OK;
}

int cli_parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
	unsigned long long v;
	char *end;

	if (!s)
		return -EINVAL;
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s == '-' || *s == '+' || *s == '\0')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int cli_parse_size(const char *s, int default_mib, unsigned long long *out)
{
	unsigned long long v = 0, mul = default_mib ? 1ULL << 20 : 1, fnum = 0, fden = 1;
	bool frac = false;
	char *end;

	if (!s)
		return -EINVAL;
	while (*s == ' ' || *s == '\t')
		s++;
	if (!(*s >= '0' && *s <= '9'))
		return -EINVAL;   /* no sign, no bare fraction */
	errno = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		v = strtoull(s, &end, 16);   /* hex: whole numbers only */
		if (end == s + 2)
			return -EINVAL;
	} else {
		v = strtoull(s, &end, 10);   /* decimal, as qemu-img: 010 is ten */
		if (*end == '.') {
			/* a decimal fraction ("1.5G", "1.G"), digits only (no
			 * exponent) */
			frac = true;
			for (end++; *end >= '0' && *end <= '9'; end++) {
				if (fden > 100000000000000000ULL)
					return -EINVAL;   /* more digits than can matter */
				fnum = fnum * 10 + (unsigned long long)(*end - '0');
				fden *= 10;
			}
		}
	}
	if (errno)
		return -EINVAL;
	if (*end) {
		switch (*end) {
		case 'b': case 'B': mul = 1; break;
		case 'k': case 'K': mul = 1ULL << 10; break;
		case 'm': case 'M': mul = 1ULL << 20; break;
		case 'g': case 'G': mul = 1ULL << 30; break;
		case 't': case 'T': mul = 1ULL << 40; break;
		case 'p': case 'P': mul = 1ULL << 50; break;
		case 'e': case 'E': mul = 1ULL << 60; break;
		default: return -EINVAL;
		}
		end++;
		if (*end == 'i' && end[-1] != 'b' && end[-1] != 'B')
			end++;
		if (*end == 'B' || (*end == 'b' && end[-1] != 'b'))
			end++;
		if (*end)
			return -EINVAL;
	} else if (frac && !default_mib) {
		return -EINVAL;   /* "1.5" bytes */
	}
	if (v && mul > ~0ULL / v)
		return -EINVAL;
	v *= mul;
	if (fnum) {
		/* fnum/fden of the unit in whole bytes, the fraction of a byte
		 * dropped (as qemu-img drops it); fnum < 10^18 and mul <= 2^60,
		 * so the product fits in 128 bits, and the part is below mul */
		unsigned long long part = (unsigned long long)((unsigned __int128)fnum * mul / fden);
		if (part > ~0ULL - v)
			return -EINVAL;
		v += part;
	}
	*out = v;
	return 0;
}

static void print_overview(FILE *f)
{
	fputs("usage: cowvm COMMAND [ARGS]\n\ncommands:\n", f);
	for (const struct cli_command *c = cli_commands; c->name; c++)
		fprintf(f, "  %-10s %s\n", c->name, c->summary);
	fputs("\nSee 'cowvm help COMMAND' or man cowvm(1).\n", f);
}

int cli_cmd_help(int argc, char **argv)
{
	const struct cli_command *c;

	if (argc < 2) {
		print_overview(stdout);
		return CLI_EXIT_OK;
	}
	if (!strcmp(argv[1], "--man")) {
		cli_man_print(stdout);
		return CLI_EXIT_OK;
	}
	c = find_command(argv[1]);
	if (!c) {
		cli_error("unknown command '%s' (see 'cowvm help')", argv[1]);
		return CLI_EXIT_USAGE;
	}
	fputs(c->usage, stdout);
	return CLI_EXIT_OK;
}

int main(int argc, char **argv)
{
	const struct cli_command *c;

	/* a file-size limit (ulimit -f) fails a write with EFBIG, which the
	 * command reports (a VM's disk: an I/O error), instead of killing it
	 * half way through writing an image */
	signal(SIGXFSZ, SIG_IGN);
	if (argc < 2) {
		print_overview(stderr);
		return CLI_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
		printf("cowvm %s\n", COWVM_VERSION);
		return CLI_EXIT_OK;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return cli_cmd_help(1, argv);
	c = find_command(argv[1]);
	if (!c) {
		cli_error("unknown command '%s' (see 'cowvm help')", argv[1]);
		return CLI_EXIT_USAGE;
	}
	return c->fn(argc - 1, argv + 1);
}
