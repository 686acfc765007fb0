/* cli/cmd-rm.c — `cowvm rm`: remove a VM from the catalog. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "catalog/catalog.h"

const char cli_help_rm[] =
	"usage: cowvm rm NAME [--with-disks]\n"
	"\n"
	"Remove VM NAME from the catalog with its disks, interfaces and snapshots\n"
	"records. The VM must not be running (stop it first); a crashed VM can be\n"
	"removed. Disk image files are kept, and stay in the image lineage, unless\n"
	"--with-disks is given.\n"
	"\n"
	"options:\n"
	"  --with-disks     also delete the VM's disk image files, except those that\n"
	"                   another VM uses or that back other images (they are kept\n"
	"                   and listed)\n";

int cli_cmd_rm(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "with-disks", no_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cat_rm_report rep = { 0 };
	struct cat_db *db = NULL;
	struct cat_vm vm = { 0 };
	struct ut_err err;
	unsigned flags = 0;
	int c, ret = CLI_EXIT_FAIL;

	ut_err_clear(&err);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'D': flags |= CAT_RM_DISKS; break;
		case 'h':
			fputs(cli_help_rm, stdout);
			return CLI_EXIT_OK;
		default:
			return cli_usage_error("rm", "unknown option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("rm", "one NAME expected");
	if (cli_catalog_open(&db) < 0)
		goto out;
	/* A VM recorded as running whose VMM died is crashed, and removable. */
	if (cat_vm_get(db, argv[optind], &vm, &err) < 0 || cat_vm_refresh(db, &vm, &err) < 0 ||
	    cat_vm_remove(db, argv[optind], flags, &rep, &err) < 0) {
		cli_error_err(&err);
		goto out;
	}
	ret = CLI_EXIT_OK;
	for (size_t i = 0; i < rep.n_removed; i++) {
		if (unlink(rep.removed[i]) < 0 && errno != ENOENT) {
			cli_error("VM removed, but unable to delete '%s': %s", rep.removed[i],
				  strerror(errno));
			ret = CLI_EXIT_FAIL;
		} else {
			printf("deleted disk '%s'\n", rep.removed[i]);
		}
	}
	for (size_t i = 0; i < rep.n_kept; i++)
		fprintf(stderr, "cowvm: note: kept disk %s\n", rep.kept[i]);
	printf("removed VM '%s'\n", argv[optind]);
out:
	cat_rm_report_clear(&rep);
	cat_vm_clear(&vm);
	cat_close(db);
	return ret;
}
