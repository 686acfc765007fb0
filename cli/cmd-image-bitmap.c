/* cli/cmd-image-bitmap.c — `cowvm image bitmap (--add | --remove | --clear
 * | --enable | --disable | --merge SOURCE [-b SOURCE_FILE [-F SOURCE_FMT]])...
 * [-g GRANULARITY] [-f FMT] FILE BITMAP`, as `qemu-img bitmap` (QEMU 7.2):
 * the operations applied to persistent bitmap BITMAP of FILE in the order
 * given (cow/bitmap-ops.c), stored at close. Unlike qemu-img, which keeps
 * the operations before one that fails, nothing changes when one fails
 * (cow_bitmap_edit_end puts the set back). The last of --enable/--disable
 * given also says whether --add makes the bitmap enabled, as with
 * qemu-img (--add --disable adds a disabled one). */
#include "cli/cli.h"
#include "cli/image.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum bm_act { ACT_ADD, ACT_REMOVE, ACT_CLEAR, ACT_ENABLE, ACT_DISABLE, ACT_MERGE };

struct bm_op {
	enum bm_act act;
	const char *src;   /* --merge SOURCE */
};

int cli_image_bitmap(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "add", no_argument, NULL, 'A' },
		{ "remove", no_argument, NULL, 'R' },
		{ "clear", no_argument, NULL, 'C' },
		{ "enable", no_argument, NULL, 'E' },
		{ "disable", no_argument, NULL, 'D' },
		{ "merge", required_argument, NULL, 'M' },
		{ "granularity", required_argument, NULL, 'g' },
		{ "format", required_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *src_file = NULL, *src_fmt = NULL, *file, *name;
	struct cow_img *img = NULL, *src_img = NULL;
	unsigned long long gran = 0;
	struct bm_op *ops = NULL;
	bool add = false, merge = false, add_disabled = false, has_gran = false;
	size_t nops = 0;
	struct ut_err err;
	int c, ret = CLI_EXIT_FAIL;

	ut_err_clear(&err);
	ops = calloc((size_t)argc, sizeof(*ops));
	if (!ops) {
		cli_error("out of memory");
		return CLI_EXIT_FAIL;
	}
	while ((c = getopt_long(argc, argv, "b:F:f:g:", lo, NULL)) != -1) {
		switch (c) {
		case 'A': ops[nops++].act = ACT_ADD; add = true; break;
		case 'R': ops[nops++].act = ACT_REMOVE; break;
		case 'C': ops[nops++].act = ACT_CLEAR; break;
		case 'E': ops[nops++].act = ACT_ENABLE; add_disabled = false; break;
		case 'D': ops[nops++].act = ACT_DISABLE; add_disabled = true; break;
		case 'M':
			ops[nops].act = ACT_MERGE;
			ops[nops++].src = optarg;
			merge = true;
			break;
		case 'b': src_file = optarg; break;
		case 'F': src_fmt = optarg; break;
		case 'f': fmt = optarg; break;
		case 'g':
			if (cli_parse_size(optarg, 0, &gran) || gran < 512 || (gran & (gran - 1)) ||
			    gran > (1ull << 31)) {
				ret = cli_usage_error("image bitmap", "-g %s: the granularity must be a power of 2 from 512 to 2G",
						      optarg);
				goto out;
			}
			has_gran = true;
			break;
		default: ret = cli_usage_error("image bitmap", "bad option"); goto out;
		}
	}
	if (optind + 2 != argc) {
		ret = cli_usage_error("image bitmap", "%s", optind + 2 > argc ? "need FILE and BITMAP" : "one FILE and one BITMAP only");
		goto out;
	}
	file = argv[optind];
	name = argv[optind + 1];
	if (!nops) {
		ret = cli_usage_error("image bitmap", "need at least one of --add, --remove, --clear, --enable, --disable or --merge");
		goto out;
	}
	if (has_gran && !add) {
		ret = cli_usage_error("image bitmap", "-g is only for --add");
		goto out;
	}
	if (src_file && !merge) {
		ret = cli_usage_error("image bitmap", "-b is only for --merge");
		goto out;
	}
	if (src_fmt && !src_file) {
		ret = cli_usage_error("image bitmap", "-F is only for -b");
		goto out;
	}
	if ((fmt && strcmp(fmt, "qcow2") && strcmp(fmt, "raw")) ||
	    (src_fmt && strcmp(src_fmt, "qcow2") && strcmp(src_fmt, "raw"))) {
		ret = cli_usage_error("image bitmap", "-f and -F take raw or qcow2");
		goto out;
	}
	/* only this layer's bitmaps change: the backing chain is not needed */
	if (cow_open(file, fmt, COW_O_NO_BACKING, &img, &err) < 0) {
		cli_image_error(&err, false);
		goto out;
	}
	if (src_file && cow_open(src_file, src_fmt, COW_O_RDONLY | COW_O_NO_BACKING, &src_img, &err) < 0) {
		cli_image_error(&err, false);
		goto close;
	}
	if (cow_bitmap_edit_begin(img, &err) < 0) {
		cli_error_err(&err);
		goto close;
	}
	for (size_t i = 0; i < nops; i++) {
		int r = 0;

		switch (ops[i].act) {
		case ACT_ADD:
			r = cow_bitmap_add(img, name, has_gran ? gran : cow_bitmap_default_granularity(img),
					   !add_disabled, &err);
			break;
		case ACT_REMOVE: r = cow_bitmap_remove(img, name, &err); break;
		case ACT_CLEAR: r = cow_bitmap_clear(img, name, &err); break;
		case ACT_ENABLE: r = cow_bitmap_set_enabled(img, name, true, &err); break;
		case ACT_DISABLE: r = cow_bitmap_set_enabled(img, name, false, &err); break;
		case ACT_MERGE: r = cow_bitmap_merge(img, name, src_img, ops[i].src, &err); break;
		}
		if (r < 0) {
			/* all or nothing: the set as it was at open */
			cow_bitmap_edit_end(img, false);
			cli_error_err(&err);
			goto close;
		}
	}
	cow_bitmap_edit_end(img, true);
	ret = CLI_EXIT_OK;
close:
	cow_close(src_img);
	ret = cli_image_close(img, ret);
out:
	free(ops);
	return ret;
}
