/* cli/cmd-create.c — `cowvm create`: define a VM from command-line options. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/catalog.h"

const char cli_help_create[] =
	"usage: cowvm create NAME --kernel FILE [--initrd FILE] [--append STR]\n"
	"                    [--disk FILE[,ro][,format=raw|qcow2][,cache=none][,aio=threads]\n"
	"                            [,werror=enospc|stop|report][,rerror=report|stop]]...\n"
	"                    [--mem SIZE] [--cpus N]\n"
	"                    [--nic [tap=DEV][,bridge=BR][,mac=MAC]]... [--uuid UUID]\n"
	"                    [--no-serial]\n"
	"\n"
	"Define a new VM NAME in the catalog, in state stopped. Nothing is started.\n"
	"Files are recorded by absolute path and must exist; disk images are recorded\n"
	"in the image lineage with their format, virtual size and backing image.\n"
	"NAME is 1-64 characters of letters, digits and . _ + -, starting with a\n"
	"letter or digit.\n"
	"\n"
	"options:\n"
	"  --kernel FILE    Linux kernel (bzImage or ELF) booted directly; required\n"
	"  --initrd FILE    initial ramdisk\n"
	"  --append STR     kernel command line\n"
	"  --disk SPEC      a virtio disk, FILE[,ro][,format=raw|qcow2][,cache=C][,aio=A];\n"
	"                   the format is probed when not given; disks become vda,\n"
	"                   vdb, ... in order; cache=none opens the image with O_DIRECT\n"
	"                   (libvirt <driver cache='none'/>), cache=writeback (the\n"
	"                   default) uses the host page cache; aio=threads does the\n"
	"                   disk's I/O on worker threads (libvirt <driver\n"
	"                   io='threads'/>), aio=io_uring (the default) through io_uring;\n"
	"                   werror/rerror say what a failed write/read does (libvirt\n"
	"                   error_policy/rerror_policy): enospc (the default for\n"
	"                   writes) pauses the VM when the host disk is full and\n"
	"                   reports other errors to the guest, stop pauses it on any\n"
	"                   error, report (the default for reads) reports; `cowvm\n"
	"                   resume NAME` retries what failed\n"
	"  --mem SIZE       guest memory, with K/M/G suffix, plain number in MiB\n"
	"                   (default 256M)\n"
	"  --cpus N         virtual CPUs, 1-255 (default 1)\n"
	"  --nic SPEC       a virtio network interface on host tap device DEV (type\n"
	"                   ethernet) or attached to bridge BR (type bridge); a MAC\n"
	"                   52:54:00:xx:xx:xx is generated when not given\n"
	"  --uuid UUID      use this UUID instead of a random one\n"
	"  --no-serial      no serial console (ttyS0)\n";

/* FILE[,ro][,format=raw|qcow2][,cache=none|writeback][,aio=io_uring|threads]
 *     [,werror=enospc|stop|report][,rerror=report|stop] */
static int add_disk(struct cat_vm *vm, const char *spec, struct ut_err *err)
{
	char *copy = strdup(spec), *save = NULL, *tok, *path, *abs = NULL;
	const char *format = NULL;
	char target[16];
	int ro = 0, nocache = 0, threads = 0, rerror_stop = 0, werror = -1, ret = 0;

	if (!copy)
		return ut_errf(err, -ENOMEM, "out of memory");
	path = strtok_r(copy, ",", &save);
	if (!path) {
		ret = ut_errf(err, -EINVAL, "--disk needs a file");
		goto out;
	}
	while ((tok = strtok_r(NULL, ",", &save))) {
		if (!strcmp(tok, "ro") || !strcmp(tok, "readonly"))
			ro = 1;
		else if (!strncmp(tok, "format=", 7) &&
			 (!strcmp(tok + 7, "raw") || !strcmp(tok + 7, "qcow2")))
			format = tok + 7;
		else if (!strcmp(tok, "cache=none") || !strcmp(tok, "cache=writeback"))
			nocache = !strcmp(tok, "cache=none");
		else if (!strcmp(tok, "aio=io_uring") || !strcmp(tok, "aio=threads"))
			threads = !strcmp(tok, "aio=threads");
		else if (!strcmp(tok, "rerror=report") || !strcmp(tok, "rerror=stop"))
			rerror_stop = !strcmp(tok, "rerror=stop");
		else if (!strcmp(tok, "werror=enospc"))
			werror = CAT_WERROR_ENOSPC;
		else if (!strcmp(tok, "werror=stop"))
			werror = CAT_WERROR_STOP;
		else if (!strcmp(tok, "werror=report"))
			werror = CAT_WERROR_REPORT;
		else {
			ret = ut_errf(err, -EINVAL, "--disk %s: unknown option '%s' (want ro, "
				      "format=raw|qcow2, cache=none|writeback, aio=io_uring|threads, "
				      "werror=enospc|stop|report or rerror=report|stop)", spec, tok);
			goto out;
		}
	}
	abs = realpath(path, NULL);
	if (!abs) {
		ret = ut_errf_sys(err, -errno, "--disk: unable to use '%s'", path);
		goto out;
	}
	if (vm->n_disks >= 26) {
		ret = ut_errf(err, -EINVAL, "at most 26 disks (vda..vdz)");
		goto out;
	}
	snprintf(target, sizeof(target), "vd%c", (char)('a' + vm->n_disks));
	ret = cat_vm_add_disk(vm, abs, format, target, ro, nocache, threads, err);
	if (ret == 0) {
		vm->disks[vm->n_disks - 1].werror = werror < 0 ? CAT_WERROR_ENOSPC :
						    (enum cat_werror)werror;
		vm->disks[vm->n_disks - 1].rerror_stop = rerror_stop;
	}
out:
	free(copy);
	free(abs);
	return ret;
}

/* [ethernet][,tap=DEV][,bridge=BR][,mac=MAC] */
static int add_nic(struct cat_vm *vm, const char *spec, struct ut_err *err)
{
	char *copy = strdup(spec), *save = NULL, *tok;
	const char *tap = NULL, *bridge = NULL, *mac = NULL;
	int ret = 0;

	if (!copy)
		return ut_errf(err, -ENOMEM, "out of memory");
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (!strcmp(tok, "ethernet"))
			continue;
		else if (!strncmp(tok, "tap=", 4))
			tap = tok + 4;
		else if (!strncmp(tok, "bridge=", 7))
			bridge = tok + 7;
		else if (!strncmp(tok, "mac=", 4))
			mac = tok + 4;
		else {
			ret = ut_errf(err, -EINVAL, "--nic %s: unknown option '%s' (want tap=DEV, "
				      "bridge=BR or mac=MAC)", spec, tok);
			goto out;
		}
	}
	ret = cat_vm_add_nic(vm, mac, bridge ? "bridge" : "ethernet", tap, bridge, err);
out:
	free(copy);
	return ret;
}

static int abs_file(const char *opt, const char *path, char **dst, struct ut_err *err)
{
	char *abs = realpath(path, NULL);

	if (!abs)
		return ut_errf_sys(err, -errno, "%s: unable to use '%s'", opt, path);
	free(*dst);
	*dst = abs;
	return 0;
}

int cli_cmd_create(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "kernel", required_argument, NULL, 'k' },
		{ "initrd", required_argument, NULL, 'i' },
		{ "append", required_argument, NULL, 'a' },
		{ "disk", required_argument, NULL, 'd' },
		{ "mem", required_argument, NULL, 'm' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "nic", required_argument, NULL, 'n' },
		{ "uuid", required_argument, NULL, 'u' },
		{ "no-serial", no_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cat_vm vm;
	struct cat_db *db = NULL;
	struct ut_err err;
	unsigned long long v;
	char *end;
	int c, ret = CLI_EXIT_FAIL;

	ut_err_clear(&err);
	if (cat_vm_init_defaults(&vm, &err) < 0) {
		cli_error_err(&err);
		return CLI_EXIT_FAIL;
	}
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int r = 0;

		switch (c) {
		case 'k': r = abs_file("--kernel", optarg, &vm.kernel, &err); break;
		case 'i': r = abs_file("--initrd", optarg, &vm.initrd, &err); break;
		case 'a':
			free(vm.cmdline);
			vm.cmdline = strdup(optarg);
			break;
		case 'd': r = add_disk(&vm, optarg, &err); break;
		case 'n': r = add_nic(&vm, optarg, &err); break;
		case 'm':
			if (cli_parse_size(optarg, 1, &v) < 0 || v < (1ULL << 20)) {
				ret = cli_usage_error("create", "invalid --mem '%s' (at least 1M)",
						      optarg);
				goto out;
			}
			vm.memory = v;
			break;
		case 'c':
			errno = 0;
			v = strtoull(optarg, &end, 10);
			if (errno || *end || !*optarg || v < 1 || v > CAT_VCPUS_MAX) {
				ret = cli_usage_error("create", "invalid --cpus '%s' (1-%d)", optarg,
						      CAT_VCPUS_MAX);
				goto out;
			}
			vm.vcpus = (unsigned)v;
			break;
		case 'u':
			if (cat_uuid_parse(optarg, vm.uuid) < 0) {
				ret = cli_usage_error("create", "invalid --uuid '%s'", optarg);
				goto out;
			}
			break;
		case 'S': vm.serial = 0; break;
		case 'h':
			fputs(cli_help_create, stdout);
			ret = CLI_EXIT_OK;
			goto out;
		default:
			ret = cli_usage_error("create", "unknown option");
			goto out;
		}
		if (r < 0) {
			cli_error_err(&err);
			goto out;
		}
	}
	if (optind + 1 != argc) {
		ret = cli_usage_error("create", optind >= argc ? "missing NAME" :
				      "one NAME expected, got '%s' too", argv[argc - 1]);
		goto out;
	}
	if (cat_name_check(argv[optind], &err) < 0) {
		cli_error_err(&err);
		ret = CLI_EXIT_USAGE;
		goto out;
	}
	if (!vm.kernel) {
		ret = cli_usage_error("create", "--kernel is required");
		goto out;
	}
	vm.name = strdup(argv[optind]);
	if (!vm.name) {
		cli_error("out of memory");
		goto out;
	}
	if (cli_catalog_open(&db) < 0)
		goto out;
	if (cat_vm_define(db, &vm, 0, "create", &err) < 0) {
		cli_error_err(&err);
		goto out;
	}
	printf("created VM '%s' (uuid %s)\n", vm.name, vm.uuid);
	ret = CLI_EXIT_OK;
out:
	cat_close(db);
	cat_vm_clear(&vm);
	return ret;
}
