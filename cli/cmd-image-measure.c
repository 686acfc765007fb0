/* cli/cmd-image-measure.c — `cowvm image measure`: how much space an image
 * needs, as qemu-img measure tells it: for a new image of --size bytes, or
 * for a convert of FILE (its guest view, the chain flattened), "required"
 * (metadata of a fully allocated image plus the clusters that hold data)
 * and "fully allocated"; with a qcow2 source, the bytes its persistent
 * bitmaps would take. */
#include "cli/cli.h"
#include "cli/image.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The bytes of data @img's guest view holds, in whole clusters of @cs
 * bytes (a cluster with any data byte counts, as qemu-img measure counts
 * them): zero runs and data over holes of the file (a sparse raw file,
 * preallocation=metadata) are not data. 0 or -errno with @err. */
static int data_bytes(struct cow_img *img, uint64_t cs, uint64_t *out, struct ut_err *err)
{
	uint64_t size = cow_size(img), off = 0, counted = 0, total = 0;

	while (off < size) {
		struct cow_extent e;
		bool hole = false;
		int ret = cow_block_status(img, off, size - off, true, &e, err);

		if (ret < 0)
			return ret;
		if (!e.len)
			return ut_errf(err, -EIO, "'%s': no extent at offset %llu", cow_path(img),
				       (unsigned long long)off);
		if (e.st == COW_ST_DATA)   /* cut at the file's holes */
			e.len = cli_image_host_run(cow_layer_fd(e.layer), e.host_off, e.len, &hole);
		if ((e.st == COW_ST_DATA && !hole) || e.st == COW_ST_COMPRESSED) {
			uint64_t a = e.off / cs * cs, b = (e.off + e.len + cs - 1) / cs * cs;

			if (a < counted)
				a = counted;
			if (b > a)
				total += b - a;
			if (b > counted)
				counted = b;
		}
		off = e.off + e.len;
	}
	*out = total;
	return 0;
}

int cli_image_measure(int argc, char **argv)
{
	static const struct option lo[] = {
		CLI_IMAGE_SHAPE_OPTIONS,
		{ "size", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "output", required_argument, NULL, 'o' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *ofmt = "qcow2";
	struct cow_create_opts mo = { 0 };
	unsigned long long v;
	uint64_t size = 0, cs, data = 0, required, full, bitmaps = 0;
	unsigned flags = COW_O_RDONLY;
	bool have_size = false, json = false, have_bitmaps = false;
	struct cow_img *img = NULL;
	struct ut_err err;
	int c, r, ret = CLI_EXIT_FAIL, extl2 = 0;

	ut_err_clear(&err);
	while ((c = getopt_long(argc, argv, "f:O:U", lo, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'O': ofmt = optarg; break;
		case 'U': flags |= COW_O_NO_LOCK; break;
		case 'j': json = true; break;
		case 'o':
			if (cli_image_output_opt(optarg, &json))
				return cli_usage_error("image measure", "--output=%s: expected json or human", optarg);
			break;
		case 's':
			if (cli_parse_size(optarg, 0, &v))
				return cli_usage_error("image measure", "invalid size '%s'", optarg);
			size = v;
			have_size = true;
			break;
		default:
			r = cli_image_shape_opt("image measure", c, optarg, &mo, &extl2);
			if (r)
				return r < 0 ? cli_usage_error("image measure", "bad option") : r;
		}
	}
	cs = mo.cluster_size ? mo.cluster_size : 65536;
	if (have_size == (optind < argc))
		return cli_usage_error("image measure", have_size ? "--size and FILE cannot be used together" :
				       "need --size SIZE or FILE");
	if (optind + 1 < argc)
		return cli_usage_error("image measure", "one FILE only");
	if (strcmp(ofmt, "qcow2") && strcmp(ofmt, "raw"))
		return cli_usage_error("image measure", "-O takes raw or qcow2");
	if (extl2 > 0 && cs < 16384)
		return cli_usage_error("image measure", "--extended-l2 needs a cluster size of 16K or more");
	if (!strcmp(ofmt, "raw") && mo.preallocation == COW_PREALLOC_METADATA)
		return cli_usage_error("image measure", "--preallocation metadata needs -O qcow2 (raw takes falloc or full)");
	if (!have_size) {
		if (cow_open(argv[optind], fmt, flags, &img, &err) < 0) {
			cli_image_error(&err, true);
			return CLI_EXIT_FAIL;
		}
		size = cow_size(img);
		if (!strcmp(ofmt, "qcow2") && data_bytes(img, cs, &data, &err) < 0)
			goto fail;
		/* the source's persistent bitmaps, which a qcow2 copy keeps */
		if (!strcmp(ofmt, "qcow2") && cow_format(img) == COW_FMT_QCOW2) {
			struct cow_bitmap_info *bm;
			uint32_t n;

			if (cow_get_bitmaps(img, &bm, &n, &err) < 0)
				goto fail;
			bitmaps = cow_measure_bitmaps(size, (uint32_t)cs, bm, n);
			cow_free_bitmaps(bm, n);
			have_bitmaps = true;
		}
	}
	if (!strcmp(ofmt, "raw")) {
		/* a raw file is as long as the disk, whatever it holds */
		full = required = (size + 511) / 512 * 512;
	} else {
		uint64_t aligned = (size + cs - 1) / cs * cs, meta;

		if (cow_measure_meta(size, (uint32_t)cs, mo.refcount_bits, extl2 > 0, &meta, &err) < 0)
			goto fail;
		full = meta + aligned;
		/* falloc and full allocate every data cluster */
		required = full - aligned + (mo.preallocation >= COW_PREALLOC_FALLOC ? aligned : data);
	}
	if (json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "required", json_object_new_int64((int64_t)required));
		json_object_object_add(o, "fully-allocated", json_object_new_int64((int64_t)full));
		if (have_bitmaps)
			json_object_object_add(o, "bitmaps", json_object_new_int64((int64_t)bitmaps));
		printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED));
		json_object_put(o);
	} else {
		printf("required size: %llu\nfully allocated size: %llu\n", (unsigned long long)required,
		       (unsigned long long)full);
		if (have_bitmaps)
			printf("bitmaps size: %llu\n", (unsigned long long)bitmaps);
	}
	ret = CLI_EXIT_OK;
	goto out;
fail:
	cli_error_err(&err);
out:
	cow_close(img);
	return ret;
}
