/* cli/cmd-image.c — `cowvm image SUBCOMMAND`: the dispatcher and the
 * create, resize, info and map subcommands. check, convert/rebase/commit,
 * compare, measure and bench live in cmd-image-*.c. */
#include "cli/cli.h"
#include "cli/image.h"
#include "cow/cow.h"
#include "cow/lock.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const struct {
	const char *name;
	int (*fn)(int, char **);
} subs[] = {
	{ "create", cli_image_create },
	{ "resize", cli_image_resize },
	{ "info", cli_image_info },
	{ "check", cli_image_check },
	{ "convert", cli_image_convert },
	{ "rebase", cli_image_rebase },
	{ "commit", cli_image_commit },
	{ "map", cli_image_map },
	{ "measure", cli_image_measure },
	{ "bench", cli_image_bench },
	{ "compare", cli_image_compare },
	{ "bitmap", cli_image_bitmap },
	{ "snapshot", cli_image_snapshot },
};

/* `cowvm image SUB ARGS`; `cowvm image --help` (-h) prints the usage of
 * all, `cowvm image SUB ... --help` (-h, before any "--") that of SUB, on
 * stdout (exit 0), as the top-level commands do. */
int cli_cmd_image(int argc, char **argv)
{
	char cmd[32];

	if (argc < 2)
		return cli_usage_error("image", "missing subcommand");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return cli_usage_help("image");
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
		if (!strcmp(argv[1], subs[i].name)) {
			snprintf(cmd, sizeof(cmd), "image %s", subs[i].name);
			if (cli_wants_help(argc - 1, argv + 1))
				return cli_usage_help(cmd);
			optind = 1;
			return subs[i].fn(argc - 1, argv + 1);
		}
	return cli_usage_error("image", "unknown subcommand '%s'", argv[1]);
}

static int parse_comp(const char *s, enum cow_comp *out)
{
	if (!strcmp(s, "zlib"))
		*out = COW_COMP_ZLIB;
	else if (!strcmp(s, "zstd"))
		*out = COW_COMP_ZSTD;
	else
		return -EINVAL;
	return 0;
}

static int parse_prealloc(const char *s, enum cow_prealloc_mode *out)
{
	static const char *const modes[] = {
		[COW_PREALLOC_OFF] = "off", [COW_PREALLOC_METADATA] = "metadata",
		[COW_PREALLOC_FALLOC] = "falloc", [COW_PREALLOC_FULL] = "full",
	};

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		if (!strcmp(s, modes[i])) {
			*out = (enum cow_prealloc_mode)i;
			return 0;
		}
	}
	return -EINVAL;
}

int cli_image_shape_opt(const char *cmd, int c, const char *arg, struct cow_create_opts *o, int *extl2)
{
	unsigned long long v;

	switch (c) {
	case 'C':
		if (cli_parse_size(arg, 0, &v) || v < 512 || v > (2u << 20) || (v & (v - 1)))
			return cli_usage_error(cmd, "--cluster-size %s: expected a power of two from 512 to 2M", arg);
		o->cluster_size = (uint32_t)v;
		return 0;
	case 'z':
		if (parse_comp(arg, &o->compression))
			return cli_usage_error(cmd, "unknown compression '%s' (zlib or zstd)", arg);
		return 0;
	case 'r':
		if (cli_parse_uint(arg, 64, &v) || !v || (v & (v - 1)))
			return cli_usage_error(cmd, "--refcount-bits %s: expected a power of two from 1 to 64", arg);
		o->refcount_bits = (uint32_t)v;
		return 0;
	case 'x':
		if (!arg || !strcmp(arg, "on"))
			*extl2 = 1;
		else if (!strcmp(arg, "off"))
			*extl2 = 0;
		else
			return cli_usage_error(cmd, "--extended-l2 takes on or off, not '%s'", arg);
		return 0;
	case 'P':
		if (parse_prealloc(arg, &o->preallocation))
			return cli_usage_error(cmd, "unknown preallocation mode '%s' (off, metadata, falloc or full)", arg);
		return 0;
	}
	return -1;
}

void cli_image_error(const struct ut_err *err, bool read_only)
{
	if (read_only && err->code == -EBUSY && strstr(err->msg, "image is in use ("))
		cli_error("%s; use --force-share for read-only access", err->msg);
	else
		cli_error_err(err);
}

int cli_image_close(struct cow_img *img, int ret)
{
	char msg[640];

	if (!img)
		return ret;
	if (cow_close_msg(img, msg, sizeof(msg)) < 0) {
		cli_error("%s", msg[0] ? msg : "closing the image failed");
		return CLI_EXIT_FAIL;
	}
	if (msg[0])
		fprintf(stderr, "cowvm: warning: %s\n", msg);
	return ret;
}

int cli_image_output_opt(const char *arg, bool *json)
{
	if (strcmp(arg, "json") && strcmp(arg, "human"))
		return -1;
	*json = !strcmp(arg, "json");
	return 0;
}

uint64_t cli_image_host_run(int fd, uint64_t host, uint64_t len, bool *hole)
{
	off_t d = lseek(fd, (off_t)host, SEEK_DATA), h;

	*hole = false;
	if (d < 0) {
		*hole = errno == ENXIO;   /* no data from here to the end */
		return len;
	}
	if ((uint64_t)d > host) {
		*hole = true;
		return (uint64_t)d - host < len ? (uint64_t)d - host : len;
	}
	h = lseek(fd, (off_t)host, SEEK_HOLE);
	if (h < 0 || (uint64_t)h <= host)
		return len;
	return (uint64_t)h - host < len ? (uint64_t)h - host : len;
}

bool cli_image_is_own_backing(const char *file, const char *backing)
{
	char *path = cow_resolve_backing(file, backing);
	struct stat a, b;
	bool same;

	if (!path)
		return false;
	if (stat(file, &a) == 0)
		same = stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
	else
		same = !strcmp(path, file);
	free(path);
	return same;
}

int cli_image_create(int argc, char **argv)
{
	static const struct option lo[] = {
		CLI_IMAGE_SHAPE_OPTIONS,
		{ "compat", required_argument, NULL, 'v' },
		{ "lazy-refcounts", no_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};
	struct cow_create_opts o = { 0 };
	unsigned long long v;
	struct ut_err err;
	int c, r, lfd = -1, extl2 = -1;

	ut_err_clear(&err);
	while ((c = getopt_long(argc, argv, "b:F:", lo, NULL)) != -1) {
		switch (c) {
		case 'b': o.backing = optarg; break;
		case 'F': o.backing_fmt = optarg; break;
		case 'v':
			if (!strcmp(optarg, "0.10") || !strcmp(optarg, "2"))
				o.version = 2;
			else if (!strcmp(optarg, "1.1") || !strcmp(optarg, "3"))
				o.version = 3;
			else
				return cli_usage_error("image create", "unknown compat level '%s'", optarg);
			break;
		case 'l': o.lazy_refcounts = true; break;
		default:
			r = cli_image_shape_opt("image create", c, optarg, &o, &extl2);
			if (r)
				return r < 0 ? cli_usage_error("image create", "bad option") : r;
		}
	}
	if (optind >= argc)
		return cli_usage_error("image create", "missing FILE");
	if (optind + 2 < argc)
		return cli_usage_error("image create", "unexpected argument '%s'", argv[optind + 2]);
	if (optind + 1 < argc) {
		if (cli_parse_size(argv[optind + 1], 0, &v))
			return cli_usage_error("image create", "invalid size '%s'", argv[optind + 1]);
		o.size = v;
	} else if (!o.backing) {
		return cli_usage_error("image create", "missing SIZE");
	}
	/* overlays (clone disks) get extended L2 entries unless told otherwise:
	 * a small write into a fresh overlay then allocates only subclusters
	 * instead of copying a whole cluster from the backing file */
	if (extl2 < 0)
		extl2 = o.backing && o.version != 2 &&
			(o.cluster_size ? o.cluster_size : 65536) >= 16384;
	o.extended_l2 = extl2;
	if (o.preallocation && o.backing && !o.extended_l2)
		return cli_usage_error("image create",
				       "--preallocation with a backing file needs extended L2 entries (--extended-l2=on, cluster size >= 16K)");
	if (o.backing && cli_image_is_own_backing(argv[optind], o.backing))
		return cli_usage_error("image create", "'%s' cannot be its own backing file", argv[optind]);
	/* never truncate an image another process has open (qemu-img create
	 * refuses too): hold a write lock on an existing file meanwhile */
	if (cow_lock_path(argv[optind], COW_LOCK_WRITE, false, &lfd, &err) < 0 ||
	    cow_create(argv[optind], &o, &err) < 0) {
		if (lfd >= 0)
			close(lfd);
		cli_error_err(&err);
		return CLI_EXIT_FAIL;
	}
	if (lfd >= 0)
		close(lfd);
	return CLI_EXIT_OK;
}

/* `cowvm image resize FILE [+|-]SIZE [--shrink] [--preallocation MODE]
 * [-f FMT] [-q]`, as qemu-img resize: SIZE is absolute or, with a sign,
 * relative to the current size; it is the last argument, taken before the
 * options are parsed (so "-1G" is not an option). Growing: raw and qcow2
 * (cow_grow_prealloc; a MODE other than off only for growing, as qemu-img
 * refuses it otherwise); shrinking needs --shrink (cow_shrink). Persistent dirty bitmaps are
 * resized as QEMU resizes them (COW_O_KEEP_BITMAPS: the image takes no
 * other data change); one QEMU calls inconsistent (in use) is refused. A
 * resize that fails before the new size is written leaves them
 * consistent (cow.h I14); an error after which they stay in use says so. */
int cli_image_resize(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "shrink", no_argument, NULL, 's' },
		{ "format", required_argument, NULL, 'f' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "preallocation", required_argument, NULL, 'P' },
		{ NULL, 0, NULL, 0 },
	};
	struct cow_create_opts o = { 0 };
	enum cow_prealloc_mode pm;
	const char *fmt = NULL, *arg, *num;
	struct cow_img *img = NULL;
	bool shrink = false, quiet = false;
	unsigned long long v;
	uint64_t cur, size;
	struct ut_err err;
	int c, r, sign = 0, ret = CLI_EXIT_FAIL, extl2;

	ut_err_clear(&err);
	if (argc < 3)
		return cli_usage_error("image resize", "need FILE and SIZE");
	arg = argv[--argc];
	while ((c = getopt_long(argc, argv, "f:q", lo, NULL)) != -1) {
		switch (c) {
		case 's': shrink = true; break;
		case 'f': fmt = optarg; break;
		case 'q': quiet = true; break;
		case 'P':
			r = cli_image_shape_opt("image resize", c, optarg, &o, &extl2);
			if (r)
				return r;
			break;
		default: return cli_usage_error("image resize", "bad option");
		}
	}
	pm = o.preallocation;
	if (optind + 1 != argc)
		return cli_usage_error("image resize", "%s", optind >= argc ? "need FILE and SIZE" : "one FILE only");
	if (fmt && strcmp(fmt, "qcow2") && strcmp(fmt, "raw"))
		return cli_usage_error("image resize", "-f takes raw or qcow2");
	num = arg;
	if (*num == '+' || *num == '-')
		sign = *num++ == '+' ? 1 : -1;
	if (cli_parse_size(num, 0, &v) || v > INT64_MAX)
		return cli_usage_error("image resize", "invalid size '%s'", arg);
	/* persistent bitmaps are resized with the image (bitmaps.c) */
	if (cow_open(argv[optind], fmt, COW_O_KEEP_BITMAPS, &img, &err) < 0) {
		cli_image_error(&err, false);
		return CLI_EXIT_FAIL;
	}
	ret = CLI_EXIT_FAIL;
	cur = cow_size(img);
	if (sign > 0 && v > INT64_MAX - cur) {
		ut_errf(&err, -EFBIG, "'%s': the new size is too large", argv[optind]);
		goto fail;
	}
	size = sign > 0 ? cur + v : sign < 0 ? (v < cur ? cur - v : 0) : v;
	if (!size) {
		ut_errf(&err, -EINVAL, "'%s': the new size must be positive", argv[optind]);
		goto fail;
	}
	if (size <= cur && pm != COW_PREALLOC_OFF) {
		ut_errf(&err, -EINVAL, "'%s': --preallocation can only be used for growing images",
			argv[optind]);
		goto fail;
	}
	if (size < cur && !shrink) {
		ut_errf(&err, -EINVAL, "'%s': the new size is smaller than the image; use --shrink to shrink it (the data past the new end is lost)",
			argv[optind]);
		goto fail;
	}
	if ((size < cur ? cow_shrink(img, size, &err) : cow_grow_prealloc(img, size, pm, &err)) < 0)
		goto fail;
	ret = cli_image_close(img, CLI_EXIT_OK);
	img = NULL;
	if (ret != CLI_EXIT_OK)
		return ret;
	if (!quiet)
		printf("Image resized.\n");
	return CLI_EXIT_OK;
fail:
	cli_error_err(&err);
	cow_close(img);
	return ret;
}

/* What qemu-img info lists of a layer besides its header. */
struct info_lists {
	struct cow_snapshot_info *sn;
	struct cow_bitmap_info *bm;
	uint32_t nsn, nbm;
};

static int info_lists_get(struct cow_img *img, struct info_lists *l, struct ut_err *err)
{
	memset(l, 0, sizeof(*l));
	if (cow_get_snapshots(img, &l->sn, &l->nsn, err) < 0 ||
	    cow_get_bitmaps(img, &l->bm, &l->nbm, err) < 0) {
		cow_free_snapshots(l->sn, l->nsn);
		return err->code;
	}
	return 0;
}

static void info_lists_free(struct info_lists *l)
{
	cow_free_snapshots(l->sn, l->nsn);
	cow_free_bitmaps(l->bm, l->nbm);
}

/* @depth: whether the chain below @img was opened (chain-depth is known).
 * NULL (with @err set) when the snapshots or bitmaps cannot be read. */
static struct json_object *info_json(struct cow_img *img, bool depth, struct ut_err *err)
{
	struct json_object *o;
	struct info_lists l;
	struct cow_info in;

	if (info_lists_get(img, &l, err) < 0)
		return NULL;
	o = json_object_new_object();
	cow_get_info(img, &in);
	json_object_object_add(o, "filename", json_object_new_string(in.path));
	json_object_object_add(o, "format", json_object_new_string(in.fmt == COW_FMT_QCOW2 ? "qcow2" : "raw"));
	json_object_object_add(o, "virtual-size", json_object_new_int64((int64_t)in.size));
	json_object_object_add(o, "actual-size", json_object_new_int64((int64_t)in.actual_size));
	/* (qemu-img prints it for raw images too: false) */
	json_object_object_add(o, "dirty-flag", json_object_new_boolean(in.dirty));
	if (in.fmt == COW_FMT_QCOW2) {
		struct json_object *fs = json_object_new_object(), *d = json_object_new_object();
		json_object_object_add(o, "cluster-size", json_object_new_int64(in.cluster_size));
		if (in.backing) {
			json_object_object_add(o, "backing-filename", json_object_new_string(in.backing));
			if (in.backing_path)
				json_object_object_add(o, "full-backing-filename", json_object_new_string(in.backing_path));
			if (in.backing_fmt)
				json_object_object_add(o, "backing-filename-format", json_object_new_string(in.backing_fmt));
		}
		json_object_object_add(d, "compat", json_object_new_string(in.version == 2 ? "0.10" : "1.1"));
		json_object_object_add(d, "compression-type",
				       json_object_new_string(in.compression == COW_COMP_ZSTD ? "zstd" : "zlib"));
		/* version 2 has no feature bits: qemu-img prints these only for v3 */
		if (in.version >= 3)
			json_object_object_add(d, "lazy-refcounts", json_object_new_boolean(in.lazy_refcounts));
		json_object_object_add(d, "refcount-bits", json_object_new_int(in.refcount_bits));
		if (in.version >= 3) {
			json_object_object_add(d, "corrupt", json_object_new_boolean(in.corrupt));
			json_object_object_add(d, "extended-l2", json_object_new_boolean(in.extended_l2));
		}
		if (l.nbm) {
			struct json_object *a = json_object_new_array();
			for (uint32_t i = 0; i < l.nbm; i++) {
				struct json_object *b = json_object_new_object(), *f = json_object_new_array();
				if (l.bm[i].flags & COW_BITMAP_IN_USE)
					json_object_array_add(f, json_object_new_string("in-use"));
				if (l.bm[i].flags & COW_BITMAP_AUTO)
					json_object_array_add(f, json_object_new_string("auto"));
				json_object_object_add(b, "flags", f);
				json_object_object_add(b, "name", json_object_new_string(l.bm[i].name));
				json_object_object_add(b, "granularity", json_object_new_int64((int64_t)l.bm[i].granularity));
				json_object_array_add(a, b);
			}
			json_object_object_add(d, "bitmaps", a);
		}
		json_object_object_add(fs, "type", json_object_new_string("qcow2"));
		json_object_object_add(fs, "data", d);
		json_object_object_add(o, "format-specific", fs);
	}
	if (l.nsn) {
		struct json_object *a = json_object_new_array();
		for (uint32_t i = 0; i < l.nsn; i++) {
			const struct cow_snapshot_info *sn = &l.sn[i];
			struct json_object *j = json_object_new_object();
			if (sn->icount != UINT64_MAX)
				json_object_object_add(j, "icount", json_object_new_int64((int64_t)sn->icount));
			json_object_object_add(j, "vm-state-size", json_object_new_int64((int64_t)sn->vm_state_size));
			json_object_object_add(j, "date-sec", json_object_new_int64(sn->date_sec));
			json_object_object_add(j, "date-nsec", json_object_new_int64(sn->date_nsec));
			json_object_object_add(j, "vm-clock-sec", json_object_new_int64((int64_t)(sn->vm_clock_nsec / 1000000000)));
			json_object_object_add(j, "vm-clock-nsec", json_object_new_int64((int64_t)(sn->vm_clock_nsec % 1000000000)));
			json_object_object_add(j, "id", json_object_new_string(sn->id));
			json_object_object_add(j, "name", json_object_new_string(sn->name));
			json_object_array_add(a, j);
		}
		json_object_object_add(o, "snapshots", a);
	}
	if (depth)
		json_object_object_add(o, "chain-depth", json_object_new_int(in.chain_depth));
	info_lists_free(&l);
	return o;
}

static void human_size(uint64_t v, char *buf, size_t n)
{
	static const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double d = (double)v;
	int i = 0;

	while (d >= 1024 && i < 5) {
		d /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, n, "%llu B", (unsigned long long)v);
	else
		snprintf(buf, n, "%.3g %s", d, u[i]);
}

static int info_text(struct cow_img *img, bool depth, struct ut_err *err)
{
	struct info_lists l;
	struct cow_info in;
	char a[32], b[32];

	if (info_lists_get(img, &l, err) < 0)
		return err->code;
	cow_get_info(img, &in);
	human_size(in.size, a, sizeof(a));
	human_size(in.actual_size, b, sizeof(b));
	printf("image: %s\n", in.path);
	printf("file format: %s\n", in.fmt == COW_FMT_QCOW2 ? "qcow2" : "raw");
	printf("virtual size: %s (%llu bytes)\n", a, (unsigned long long)in.size);
	printf("disk size: %s\n", b);
	if (in.fmt != COW_FMT_QCOW2)
		goto out;
	/* the lines and order of qemu-img info, then the chain depth */
	printf("cluster_size: %u\n", in.cluster_size);
	if (in.dirty)
		printf("cleanly shut down: no\n");
	if (in.backing) {
		printf("backing file: %s", in.backing);
		if (in.backing_path && strcmp(in.backing_path, in.backing))
			printf(" (actual path: %s)", in.backing_path);
		printf("\n");
		if (in.backing_fmt)
			printf("backing file format: %s\n", in.backing_fmt);
	}
	if (l.nsn) {
		printf("Snapshot list:\n");
		cli_image_print_snapshots(l.sn, l.nsn);
	}
	printf("Format specific information:\n");
	printf("    compat: %s\n", in.version == 2 ? "0.10" : "1.1");
	printf("    compression type: %s\n", in.compression == COW_COMP_ZSTD ? "zstd" : "zlib");
	/* version 2 has no feature bits: no lazy refcounts, corrupt, extended l2 */
	if (in.version >= 3)
		printf("    lazy refcounts: %s\n", in.lazy_refcounts ? "true" : "false");
	if (l.nbm)
		printf("    bitmaps:\n");
	for (uint32_t i = 0; i < l.nbm; i++) {
		int f = 0;
		printf("        [%u]:\n            flags:\n", i);
		if (l.bm[i].flags & COW_BITMAP_IN_USE)
			printf("                [%d]: in-use\n", f++);
		if (l.bm[i].flags & COW_BITMAP_AUTO)
			printf("                [%d]: auto\n", f++);
		printf("            name: %s\n            granularity: %llu\n", l.bm[i].name,
		       (unsigned long long)l.bm[i].granularity);
	}
	printf("    refcount bits: %u\n", in.refcount_bits);
	if (in.version >= 3) {
		printf("    corrupt: %s\n", in.corrupt ? "true" : "false");
		printf("    extended l2: %s\n", in.extended_l2 ? "true" : "false");
	}
	if (depth)
		printf("    chain depth: %d\n", in.chain_depth);
out:
	info_lists_free(&l);
	return 0;
}

void cli_image_print_snapshots(const struct cow_snapshot_info *s, uint32_t n)
{
	/* the columns of qemu-img info and qemu-img snapshot -l */
	printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
	for (uint32_t i = 0; i < n; i++) {
		const struct cow_snapshot_info *sn = &s[i];
		char vs[32], date[32] = "", clk[32], ic[24] = "";
		time_t t = sn->date_sec;
		uint64_t secs = sn->vm_clock_nsec / 1000000000;
		struct tm tm;

		human_size(sn->vm_state_size, vs, sizeof(vs));
		if (localtime_r(&t, &tm))
			strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
		snprintf(clk, sizeof(clk), "%02llu:%02llu:%02llu.%03llu", (unsigned long long)(secs / 3600),
			 (unsigned long long)(secs / 60 % 60), (unsigned long long)(secs % 60),
			 (unsigned long long)(sn->vm_clock_nsec / 1000000 % 1000));
		if (sn->icount != UINT64_MAX)
			snprintf(ic, sizeof(ic), "%llu", (unsigned long long)sn->icount);
		printf("%-9s %-16s %8s%20s%13s%11s\n", sn->id, sn->name, vs, date, clk, ic);
	}
}

int cli_image_info(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "chain", no_argument, NULL, 'c' },
		{ "backing-chain", no_argument, NULL, 'c' },
		{ "output", required_argument, NULL, 'o' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	bool json = false, chain = false, depth = true;
	unsigned flags = COW_O_RDONLY;
	const char *fmt = NULL;
	struct cow_img *img = NULL;
	struct ut_err err;
	int c, ret = CLI_EXIT_OK;

	ut_err_clear(&err);
	while ((c = getopt_long(argc, argv, "f:U", lo, NULL)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'c': chain = true; break;
		case 'o':
			if (cli_image_output_opt(optarg, &json))
				return cli_usage_error("image info", "--output=%s: expected json or human", optarg);
			break;
		case 'f': fmt = optarg; break;
		case 'U': flags |= COW_O_NO_LOCK; break;
		default: return cli_usage_error("image info", "bad option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("image info", "%s", optind >= argc ? "missing FILE" : "one FILE only");
	if (cow_open(argv[optind], fmt, flags, &img, &err) < 0) {
		/* without --chain the image alone is described, as qemu-img
		 * info does, even when its backing chain cannot be opened
		 * (missing, looping, in use): only the chain depth is unknown */
		struct ut_err err1;
		ut_err_clear(&err1);
		if (chain || cow_open(argv[optind], fmt, flags | COW_O_NO_BACKING, &img, &err1) < 0) {
			cli_image_error(&err, true);
			return CLI_EXIT_FAIL;
		}
		depth = false;
	}
	if (json) {
		struct json_object *o, *j = NULL;
		if (chain) {
			o = json_object_new_array();
			for (struct cow_img *l = img; l; l = cow_backing(l)) {
				if (!(j = info_json(l, true, &err)))
					break;
				json_object_array_add(o, j);
			}
		} else {
			o = j = info_json(img, depth, &err);
		}
		if (j)
			printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
								      JSON_C_TO_STRING_NOSLASHESCAPE));
		else
			ret = CLI_EXIT_FAIL;
		json_object_put(o);
	} else {
		for (struct cow_img *l = img; l; l = chain ? cow_backing(l) : NULL) {
			if (info_text(l, depth, &err) < 0) {
				ret = CLI_EXIT_FAIL;
				break;
			}
			if (chain && cow_backing(l))
				printf("\n");
		}
	}
	if (ret != CLI_EXIT_OK)
		cli_error_err(&err);
	cow_close(img);
	return ret;
}

int cli_image_map(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "output", required_argument, NULL, 'o' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	static const char *st_name[] = { "unallocated", "zero", "data", "compressed" };
	struct cow_img *img = NULL;
	struct ut_err err;
	bool json = false;
	uint64_t off = 0, size;
	unsigned flags = COW_O_RDONLY;
	int c, ret = CLI_EXIT_OK, n = 0;

	ut_err_clear(&err);
	while ((c = getopt_long(argc, argv, "U", lo, NULL)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'o':
			if (cli_image_output_opt(optarg, &json))
				return cli_usage_error("image map", "--output=%s: expected json or human", optarg);
			break;
		case 'U': flags |= COW_O_NO_LOCK; break;
		default: return cli_usage_error("image map", "bad option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("image map", "%s", optind >= argc ? "missing FILE" : "one FILE only");
	if (cow_open(argv[optind], NULL, flags, &img, &err) < 0) {
		cli_image_error(&err, true);
		return CLI_EXIT_FAIL;
	}
	size = cow_size(img);
	if (json)
		printf("[");
	else
		printf("%-20s %-20s %-12s %-20s %s\n", "Offset", "Length", "Type", "Mapped to", "File");
	while (off < size) {
		struct cow_extent e, nx;
		if (cow_block_status(img, off, size - off, true, &e, &err) < 0) {
			cli_error_err(&err);
			ret = CLI_EXIT_FAIL;
			break;
		}
		/* merge runs with the same status in the same layer (data
		 * where it is contiguous on the host), as qemu-img map does:
		 * a run of a lower layer is cut where an L2 table of a layer
		 * above ends (32 KiB with 512-byte clusters) */
		while (e.off + e.len < size) {
			if (cow_block_status(img, e.off + e.len, size - e.off - e.len, true, &nx, &err) < 0)
				break;
			if (nx.st != e.st || nx.depth != e.depth || nx.end_depth != e.end_depth ||
			    nx.host_off != (e.host_off ? e.host_off + e.len : 0))
				break;
			e.len += nx.len;
		}
		if (json) {
			bool hole = false, raw = cow_format(e.layer) == COW_FMT_RAW;
			if (e.st == COW_ST_DATA)   /* cut at the file's holes */
				e.len = cli_image_host_run(cow_layer_fd(e.layer), e.host_off, e.len, &hole);
			printf("%s\n{ \"start\": %llu, \"length\": %llu, \"depth\": %d, \"present\": %s, \"zero\": %s, \"data\": %s, \"compressed\": %s",
			       n++ ? "," : "", (unsigned long long)e.off, (unsigned long long)e.len,
			       e.depth < 0 ? e.end_depth : e.depth,
			       e.depth >= 0 ? "true" : "false",
			       e.st == COW_ST_ZERO || hole ? "true" : "false",
			       ((e.st == COW_ST_DATA && !(hole && raw)) || e.st == COW_ST_COMPRESSED) ? "true" : "false",
			       e.st == COW_ST_COMPRESSED ? "true" : "false");
			if (e.st == COW_ST_DATA || (e.st == COW_ST_ZERO && e.host_off))
				printf(", \"offset\": %llu", (unsigned long long)e.host_off);
			printf("}");
		} else if (e.st == COW_ST_DATA || e.st == COW_ST_COMPRESSED || (e.st == COW_ST_ZERO && e.depth >= 0)) {
			char mapped[32] = "-";
			if (e.st == COW_ST_DATA)
				snprintf(mapped, sizeof(mapped), "0x%llx", (unsigned long long)e.host_off);
			printf("0x%-18llx 0x%-18llx %-12s %-20s %s\n", (unsigned long long)e.off,
			       (unsigned long long)e.len, st_name[e.st], mapped, cow_path(e.layer));
		}
		off = e.off + e.len;
	}
	if (json)
		printf("]\n");
	cow_close(img);
	return ret;
}
