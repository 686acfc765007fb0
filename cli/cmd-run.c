/* cli/cmd-run.c — `cowvm run`: one VM in the foreground.
 *
 * State: --save-on-signal FILE saves the VM to FILE on SIGUSR2 (then ends the
 * run with status 0, or continues with --save-resume; --save-compress uses
 * zstd); --restore FILE runs a saved VM (RAM mapped lazily from the file).
 *
 * Internal: --catalog-vm NAME is for the VMM that `cowvm start` launches: it
 * records the VM's own lifecycle transitions in the catalog (see
 * cli/vmm-catalog.c).
 *
 * Exit status: the guest's (debug-exit port value; 0 for a guest reboot or
 * poweroff request, or Ctrl-A x on the console); 1 when the VM could not be
 * started or crashed (message on stderr naming the exit reason, RIP and code
 * bytes); 2 for a usage error; 128+N when stopped by signal N.
 */
#include "cli/cli.h"
#include "core/machine.h"
#include "cow/lock.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUN_DEFAULT_MEM (256ULL << 20)
#define RUN_LOCK_WAIT_MS 1000   /* see cow_lock_set_wait */

/* "FILE[,ro][,rw][,format=F][,serial=S][,cache=C][,aio=A][,werror=W][,rerror=R][,target=T]"
 *   -> "path=FILE,ro=on,format=F,serial=S,cache=C,aio=A,werror=W,rerror=R,target=T"
 *   (W, R and T checked by virtio-blk) */
static int parse_disk(const char *spec, char *out, size_t size)
{
	char *copy = strdup(spec), *save = NULL, *tok;
	size_t n;
	int r = 0;

	if (!copy)
		return -1;
	tok = strtok_r(copy, ",", &save);
	if (!tok || !*tok) {
		r = -1;
		goto out;
	}
	n = (size_t)snprintf(out, size, "path=%s", tok);
	while (!r && (tok = strtok_r(NULL, ",", &save)) && n < size) {
		if (!strcmp(tok, "ro"))
			n += (size_t)snprintf(out + n, size - n, ",ro=on");
		else if (!strcmp(tok, "rw"))
			n += (size_t)snprintf(out + n, size - n, ",ro=off");
		else if (!strncmp(tok, "format=", 7) || !strncmp(tok, "serial=", 7) ||
			 !strcmp(tok, "cache=none") || !strcmp(tok, "cache=writeback") ||
			 !strcmp(tok, "aio=io_uring") || !strcmp(tok, "aio=threads") ||
			 !strncmp(tok, "werror=", 7) || !strncmp(tok, "rerror=", 7) ||
			 !strncmp(tok, "target=", 7))
			n += (size_t)snprintf(out + n, size - n, ",%s", tok);
		else
			r = -2;
	}
	if (n >= size)
		r = -1;
out:
	free(copy);
	return r;
}

/* Host-side messages from the VMM (vm->on_event): disk errors and the
 * like, on stderr (the log file of a VM `cowvm start` launched). */
static void print_event(void *opaque, const char *msg)
{
	(void)opaque;
	fprintf(stderr, "cowvm: %s\n", msg);
}

static void print_boot(const struct vmm_machine_cfg *cfg, const struct vmm_boot_entry *e)
{
	fprintf(stderr, "cowvm: kernel %s format %s entry 0x%llx\n", cfg->kernel,
		vmm_kernel_format_name(e->format), (unsigned long long)e->entry);
	if (e->initrd_size)
		fprintf(stderr, "cowvm: initrd 0x%llx-0x%llx\n", (unsigned long long)e->initrd_gpa,
			(unsigned long long)(e->initrd_gpa + e->initrd_size - 1));
	for (int i = 0; i < e->e820_count; i++)
		fprintf(stderr, "cowvm: e820 0x%llx-0x%llx %s\n",
			(unsigned long long)e->e820[i].addr,
			(unsigned long long)(e->e820[i].addr + e->e820[i].size - 1),
			e->e820[i].type == VMM_E820_RAM ? "usable" : "reserved");
}

int cli_cmd_run(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "kernel", required_argument, NULL, 'k' },
		{ "initrd", required_argument, NULL, 'i' },
		{ "append", required_argument, NULL, 'a' },
		{ "mem", required_argument, NULL, 'm' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "disk", required_argument, NULL, 'd' },
		{ "rng", no_argument, NULL, 'r' },
		{ "no-pit", no_argument, NULL, 'P' },
		{ "console", required_argument, NULL, 'C' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "save-on-signal", required_argument, NULL, 'S' },
		{ "save-resume", no_argument, NULL, 'R' },
		{ "save-compress", no_argument, NULL, 'Z' },
		{ "restore", required_argument, NULL, 'L' },
		{ "verify-ram", no_argument, NULL, 'V' },
		{ "control", required_argument, NULL, 'Q' },
		{ "console-socket", required_argument, NULL, 'O' },
		{ "catalog-vm", required_argument, NULL, 'N' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static char disk_opts[VMM_MAX_DISKS][4200];
	struct vmm_machine_cfg cfg = { .mem = RUN_DEFAULT_MEM, .cpus = 1, .console = "stdio" };
	struct vmm_machine m;
	struct cli_vmm_catalog cv = { NULL, false };
	struct ut_err err = { 0, "" };
	unsigned long long v;
	bool verbose = false, save_resume = false, save_zstd = false, verify = false;
	bool set_mem = false, set_cpus = false;
	const char *save_path = NULL, *restore = NULL, *control = NULL;
	char *end;
	int c, r, status;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "k:i:a:m:c:d:C:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'k': cfg.kernel = optarg; break;
		case 'i': cfg.initrd = optarg; break;
		case 'a': cfg.cmdline = optarg; break;
		case 'm':
			if (cli_parse_size(optarg, 1, &v) || !v)
				return cli_usage_error("run", "--mem '%s': not a size (e.g. 512M, 2G)", optarg);
			if (v % (2ULL << 20))
				return cli_usage_error("run", "--mem %s: must be a multiple of 2 MiB", optarg);
			cfg.mem = v;
			set_mem = true;
			break;
		case 'c':
			v = strtoull(optarg, &end, 10);
			if (*end || !*optarg || v < 1 || v > VMM_MAX_CPUS)
				return cli_usage_error("run", "--cpus '%s': expected 1 to %d", optarg,
						       VMM_MAX_CPUS);
			cfg.cpus = (int)v;
			set_cpus = true;
			break;
		case 'd':
			if (cfg.ndisks == VMM_MAX_DISKS)
				return cli_usage_error("run", "at most %d --disk options", VMM_MAX_DISKS);
			r = parse_disk(optarg, disk_opts[cfg.ndisks], sizeof(disk_opts[0]));
			if (r)
				return cli_usage_error("run", "--disk '%s': expected FILE[,ro][,format=raw|qcow2][,cache=none|writeback][,aio=io_uring|threads][,werror=enospc|stop|report][,rerror=report|stop][,target=vdX]",
						       optarg);
			cfg.disks[cfg.ndisks] = disk_opts[cfg.ndisks];
			cfg.ndisks++;
			break;
		case 'r': cfg.rng = true; break;
		case 'P': cfg.no_pit = true; break;
		case 'C': cfg.console = optarg; break;
		case 'v': verbose = true; break;
		case 'S': save_path = optarg; break;
		case 'R': save_resume = true; break;
		case 'Z': save_zstd = true; break;
		case 'L': restore = optarg; break;
		case 'V': verify = true; break;
		case 'Q': control = optarg; break;
		case 'O': cfg.console_socket = optarg; break;
		case 'N': cv.name = optarg; break;
		case 'h':
			return cli_cmd_help(2, (char *[]){ "help", "run", NULL });
		default:
			return cli_usage_error("run", "unknown or incomplete option '%s'",
					       argv[optind - 1]);
		}
	}
	if (optind < argc)
		return cli_usage_error("run", "unexpected argument '%s'", argv[optind]);
	if (restore) {
		if (cfg.kernel || cfg.initrd || cfg.cmdline || set_mem || set_cpus || cfg.rng ||
		    cfg.no_pit)
			return cli_usage_error("run", "--restore takes the kernel, memory, vCPUs and "
					       "devices from the state file (only --disk, --console "
					       "and the --save options may be given)");
	} else if (!cfg.kernel) {
		return cli_usage_error("run", "--kernel FILE (or --restore FILE) is required");
	}
	if ((save_resume || save_zstd) && !save_path)
		return cli_usage_error("run", "--save-resume and --save-compress need --save-on-signal FILE");
	if (verify && !restore)
		return cli_usage_error("run", "--verify-ram goes with --restore");

	status = CLI_EXIT_FAIL;
	/* a VMM that has just died keeps its disks' locks until its last
	 * I/O finishes: a VM started right after it waits that long */
	cow_lock_set_wait(RUN_LOCK_WAIT_MS);
	if (restore)
		r = vmm_machine_restore(&m, restore, cfg.disks, cfg.ndisks, cfg.console,
					cfg.console_socket, verify ? VMM_STATE_F_VERIFY : 0, &err);
	else
		r = vmm_machine_create(&m, &cfg, &err);
	if (r)
		goto out;
	if (control && vmm_machine_control(&m, control, &err)) {
		vmm_machine_destroy(&m);
		goto out;
	}
	m.vm.on_event = print_event;
	m.save_path = save_path;
	m.save_resume = save_resume;
	m.save_flags = save_zstd ? VMM_STATE_F_ZSTD : 0;
	if (cv.name) {
		m.on_running = cli_vmm_catalog_running;
		m.on_running_opaque = &cv;
		m.on_disk_snapshot = cli_vmm_catalog_disk_snapshot;
		m.on_disk_snapshot_opaque = &cv;
	}
	if (verbose && !restore)
		print_boot(&cfg, &m.entry);
	status = vmm_machine_run(&m, &err);
	vmm_machine_destroy(&m);
	if (verbose) {
		unsigned long long exits = 0;

		for (int i = 0; i < cfg.cpus; i++)
			exits += m.vm.vcpus[i].exits;
		if (m.saves)
			fprintf(stderr, "cowvm: saved %s: %llu bytes of RAM, %llu byte file, paused %.1f ms\n",
				save_path, (unsigned long long)m.last_save.ram_bytes_written,
				(unsigned long long)m.last_save.file_bytes, m.last_save.pause_ms);
		fprintf(stderr, "cowvm: exit status %d, %llu exits to the VMM\n", status, exits);
	}
out:
	if (err.code)
		cli_error_err(&err);
	if (cv.name)
		cli_vmm_catalog_exit(&cv, status, &err);
	return status;
}
