/* cli/cmd-image-snapshot.c — `cowvm image snapshot (-l | -c SNAPSHOT |
 * -a SNAPSHOT | -d SNAPSHOT) [-q] [-U] [-f FMT] FILE`, as `qemu-img
 * snapshot` (QEMU 7.2): list, create, apply (revert the disk to) or delete
 * an internal snapshot of a qcow2 image (cow/snapshot.c). As qemu-img,
 * -a finds SNAPSHOT as an ID first, then as a name; -d by name only. Unlike
 * qemu-img, no action at all is a usage error (qemu-img does nothing). */
#include "cli/cli.h"
#include "cli/image.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

int cli_image_snapshot(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "force-share", no_argument, NULL, 'U' },
		{ "format", required_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *sn = NULL, *verb = NULL;
	struct cow_img *img = NULL;
	bool share = false;
	int c, act = 0, ret = CLI_EXIT_FAIL;
	struct ut_err err;

	ut_err_clear(&err);
	while ((c = getopt_long(argc, argv, "la:c:d:qUf:", lo, NULL)) != -1) {
		switch (c) {
		case 'l':
		case 'a':
		case 'c':
		case 'd':
			if (act)
				return cli_usage_error("image snapshot", "cannot mix -l, -a, -c and -d");
			act = c;
			sn = optarg;
			break;
		case 'q': break;   /* (nothing is printed on success anyway, as qemu-img) */
		case 'U': share = true; break;
		case 'f': fmt = optarg; break;
		default: return cli_usage_error("image snapshot", "bad option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("image snapshot", "%s", optind >= argc ? "need FILE" : "one FILE only");
	if (!act)
		return cli_usage_error("image snapshot", "need one of -l, -a, -c or -d");
	if (fmt && strcmp(fmt, "qcow2") && strcmp(fmt, "raw"))
		return cli_usage_error("image snapshot", "-f takes raw or qcow2");
	if (share && act != 'l')
		return cli_usage_error("image snapshot", "-U is only for -l (a snapshot change needs the image to itself)");
	/* only this layer: its snapshots never involve the backing chain */
	if (cow_open(argv[optind], fmt,
		     COW_O_NO_BACKING | (act == 'l' ? COW_O_RDONLY : 0) | (share ? COW_O_NO_LOCK : 0), &img,
		     &err) < 0) {
		cli_image_error(&err, act == 'l');
		return CLI_EXIT_FAIL;
	}
	if (act == 'l') {
		struct cow_snapshot_info *s;
		uint32_t n;

		if (cow_get_snapshots(img, &s, &n, &err) < 0) {
			cli_error_err(&err);
			goto out;
		}
		if (n) {
			printf("Snapshot list:\n");
			cli_image_print_snapshots(s, n);
		}
		cow_free_snapshots(s, n);
		ret = CLI_EXIT_OK;
		goto out;
	}
	if (cow_format(img) != COW_FMT_QCOW2) {
		cli_error("unable to %s a snapshot: '%s': a raw image has no snapshots",
			  act == 'c' ? "create" : act == 'a' ? "apply" : "delete", argv[optind]);
		goto out;
	}
	switch (act) {
	case 'c': verb = "create"; c = cow_snapshot_create(img, sn, &err); break;
	case 'a': verb = "apply"; c = cow_snapshot_apply(img, sn, &err); break;
	default: verb = "delete"; c = cow_snapshot_delete(img, sn, &err); break;
	}
	if (c < 0) {
		ut_err_prefix(&err, "unable to %s a snapshot", verb);
		cli_error_err(&err);
		goto out;
	}
	ret = CLI_EXIT_OK;
out:
	return cli_image_close(img, ret);
}
