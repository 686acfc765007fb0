/* cli/cmd-xml.c — `cowvm define` and `cowvm dumpxml`: libvirt domain XML. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/catalog.h"

const char cli_help_define[] =
	"usage: cowvm define FILE.xml [--ignore-unsupported]\n"
	"\n"
	"Define a VM from a libvirt domain document (FILE - reads standard input).\n"
	"If a stopped VM with the same name and uuid exists, its definition is\n"
	"replaced, as libvirt's define does. cowvm supports: name, uuid, genid,\n"
	"memory and currentMemory (with units), vcpu, os (type hvm, kernel, initrd,\n"
	"cmdline), on_poweroff and on_reboot (destroy or restart), and devices: disk\n"
	"(type file, driver type raw or qcow2, cache none or writeback, io threads\n"
	"or io_uring (native taken as io_uring), source file, target dev vdX,\n"
	"readonly, backingStore), interface (type ethernet or bridge, mac, target dev,\n"
	"source bridge, model virtio), one serial and console of type pty. A\n"
	"document with anything else is refused with a message naming each\n"
	"unsupported element or attribute value and its line.\n"
	"\n"
	"options:\n"
	"  --ignore-unsupported\n"
	"                   define the VM without the unsupported parts, listing\n"
	"                   them as ignored on standard error\n";

const char cli_help_dumpxml[] =
	"usage: cowvm dumpxml NAME\n"
	"\n"
	"Print the definition of VM NAME as a libvirt domain document, with each\n"
	"disk's backing chain as backingStore elements. The output validates with\n"
	"virt-xml-validate and `cowvm define` reads it back unchanged.\n";

static int read_all(const char *path, struct ut_buf *b, struct ut_err *err)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "re") : stdin;
	char chunk[65536];
	size_t n;
	int ret = 0;

	if (!f)
		return ut_errf_sys(err, -errno, "unable to open '%s'", path);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (ut_buf_add(b, chunk, n) < 0) {
			ret = ut_errf(err, -ENOMEM, "out of memory");
			break;
		}
		if (b->len > (64u << 20)) {
			ret = ut_errf(err, -EFBIG, "'%s' is larger than 64 MiB", path);
			break;
		}
	}
	if (ret == 0 && ferror(f))
		ret = ut_errf_sys(err, -EIO, "unable to read '%s'", path);
	if (f != stdin)
		fclose(f);
	return ret;
}

int cli_cmd_define(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ignore-unsupported", no_argument, NULL, 'I' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ut_buf doc = UT_BUF_INIT;
	struct cat_db *db = NULL;
	struct cat_vm vm = { 0 };
	struct ut_err err;
	char **ign = NULL;
	size_t n_ign = 0;
	unsigned flags = 0;
	int c, r, ret = CLI_EXIT_FAIL;

	ut_err_clear(&err);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'I': flags |= CAT_XML_IGNORE_UNSUPPORTED; break;
		case 'h':
			fputs(cli_help_define, stdout);
			return CLI_EXIT_OK;
		default:
			return cli_usage_error("define", "unknown option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("define", "one FILE.xml expected");
	if (read_all(argv[optind], &doc, &err) < 0) {
		cli_error_err(&err);
		goto out;
	}
	r = cat_xml_read(doc.data ? (const char *)doc.data : "", doc.len, argv[optind], flags,
			 &vm, &ign, &n_ign, &err);
	if (r == -ENOTSUP) {
		cli_error("unable to define a VM from '%s': unsupported by cowvm:", argv[optind]);
		for (size_t i = 0; i < n_ign; i++)
			fprintf(stderr, "  %s\n", ign[i]);
		fputs("(use --ignore-unsupported to define it without them)\n", stderr);
		goto out;
	}
	if (r < 0) {
		cli_error_err(&err);
		goto out;
	}
	for (size_t i = 0; i < n_ign; i++)
		fprintf(stderr, "cowvm: warning: ignored unsupported %s\n", ign[i]);
	if (cli_catalog_open(&db) < 0)
		goto out;
	if (cat_vm_define(db, &vm, CAT_DEFINE_REPLACE, "define", &err) < 0) {
		cli_error_err(&err);
		goto out;
	}
	printf("defined VM '%s' (uuid %s)\n", vm.name, vm.uuid);
	ret = CLI_EXIT_OK;
out:
	cat_strv_free(ign, n_ign);
	cat_vm_clear(&vm);
	cat_close(db);
	ut_buf_release(&doc);
	return ret;
}

int cli_cmd_dumpxml(int argc, char **argv)
{
	struct ut_buf out = UT_BUF_INIT;
	struct cat_db *db = NULL;
	struct cat_vm vm = { 0 };
	struct ut_err err;
	int ret = CLI_EXIT_FAIL;

	ut_err_clear(&err);
	if (cli_wants_help(argc, argv)) {
		fputs(cli_help_dumpxml, stdout);
		return CLI_EXIT_OK;
	}
	if (argc != 2 || argv[1][0] == '-')
		return cli_usage_error("dumpxml", "one NAME expected");
	if (cli_catalog_open(&db) < 0)
		goto out;
	if (cat_vm_get(db, argv[1], &vm, &err) < 0 || cat_xml_write(&vm, &out, &err) < 0) {
		cli_error_err(&err);
		goto out;
	}
	if (fwrite(out.data, 1, out.len, stdout) != out.len || fflush(stdout)) {
		cli_error("unable to write the document");
		goto out;
	}
	ret = CLI_EXIT_OK;
out:
	ut_buf_release(&out);
	cat_vm_clear(&vm);
	cat_close(db);
	return ret;
}
