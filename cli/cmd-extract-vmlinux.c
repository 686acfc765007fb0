/* cli/cmd-extract-vmlinux.c — `cowvm extract-vmlinux BZIMAGE OUTPUT`: write the
 * vmlinux ELF held (compressed) inside a Linux bzImage, so the same kernel can
 * be booted through the PVH entry. */
#include "cli/cli.h"
#include "core/boot/boot.h"

#include <stdio.h>
#include <string.h>

int cli_cmd_extract_vmlinux(int argc, char **argv)
{
	struct ut_err err;
	enum vmm_kernel_format fmt;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs("usage: cowvm extract-vmlinux BZIMAGE OUTPUT\n", stdout);
		return CLI_EXIT_OK;
	}
	if (argc != 3)
		return cli_usage_error(argv[0], "expected 2 arguments, got %d", argc - 1);
	ut_err_clear(&err);
	if (vmm_bzimage_extract(argv[1], argv[2], &err) < 0) {
		cli_error_err(&err);
		return CLI_EXIT_FAIL;
	}
	/* The result should boot: say so now rather than at `cowvm run`. */
	if (vmm_boot_probe(argv[2], &fmt, &err) < 0 || fmt != VMM_KERNEL_PVH_ELF)
		fprintf(stderr, "cowvm: warning: '%s' has no Xen PVH entry note; "
			"cowvm cannot boot it directly\n", argv[2]);
	return CLI_EXIT_OK;
}
