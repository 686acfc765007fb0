/* cli/cmd-image-bench.c — `cowvm image bench`: the same knobs and the same
 * request sequence as `qemu-img bench` (COUNT requests of SIZE bytes, offsets
 * advancing by STEP from OFFSET and wrapping at the end of the disk), so the
 * two can be compared on the same file. Prints the run time, IOPS and MB/s. */
#include "cli/cli.h"
#include "cli/image.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cli_image_bench(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "pattern", required_argument, NULL, 'P' },
		{ "flush-interval", required_argument, NULL, 'F' },
		{ "no-drain", no_argument, NULL, 'N' },
		{ "random", no_argument, NULL, 'R' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long long count = 75000, depth = 64, bufsize = 4096, step = 0, offset = 0, v;
	unsigned long long flush_every = 0;
	const char *fmt = NULL;
	bool write = false, random_off = false;
	int pattern = 0xa5, c, ret = CLI_EXIT_FAIL;
	struct cow_img *img = NULL;
	struct timespec t0, t1;
	uint8_t *buf = NULL;
	struct ut_err err;
	uint64_t size, off, rng = 0x9e3779b97f4a7c15ull;
	double secs;

	ut_err_clear(&err);
	while ((c = getopt_long(argc, argv, "c:d:f:no:qs:S:t:wi:", lo, NULL)) != -1) {
		switch (c) {
		case 'c': count = strtoull(optarg, NULL, 0); break;
		case 'd': depth = strtoull(optarg, NULL, 0); break;
		case 'f': fmt = optarg; break;
		case 'o':
			if (cli_parse_size(optarg, 0, &offset))
				return cli_usage_error("image", "bad offset");
			break;
		case 's':
			if (cli_parse_size(optarg, 0, &bufsize) || !bufsize)
				return cli_usage_error("image", "bad buffer size");
			break;
		case 'S':
			if (cli_parse_size(optarg, 0, &step))
				return cli_usage_error("image", "bad step");
			break;
		case 'w': write = true; break;
		case 'P': pattern = atoi(optarg); break;
		case 'F':
			if (cli_parse_size(optarg, 0, &v))
				return cli_usage_error("image", "bad flush interval");
			flush_every = v;
			break;
		case 'R': random_off = true; break;
		case 'n': case 'q': case 't': case 'i': case 'N': break;
		default: return cli_usage_error("image", "bad option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("image", "bench: need FILE");
	if (!step)
		step = bufsize;
	if (cow_open(argv[optind], fmt, write ? 0 : COW_O_RDONLY, &img, &err) < 0)
		goto fail;
	size = cow_size(img);
	if (bufsize > size) {
		ut_errf(&err, -EINVAL, "buffer size larger than the disk");
		goto fail;
	}
	buf = aligned_alloc(4096, (bufsize + 4095) & ~4095ull);
	if (!buf) {
		ut_errf(&err, -ENOMEM, "out of memory");
		goto fail;
	}
	memset(buf, pattern, bufsize);
	printf("Sending %llu %s requests, %llu bytes each, %llu in parallel (starting at offset %llu, step size %llu)\n",
	       count, write ? "write" : "read", bufsize, depth, offset, step);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	off = offset;
	for (unsigned long long i = 0; i < count; i++) {
		int r;
		if (random_off) {
			rng ^= rng << 13;
			rng ^= rng >> 7;
			rng ^= rng << 17;
			off = (rng % ((size - bufsize) / bufsize + 1)) * bufsize;
		}
		r = write ? cow_write(img, buf, bufsize, off, &err) : cow_read(img, buf, bufsize, off, &err);
		if (r < 0)
			goto fail;
		if (flush_every && write && (i + 1) % flush_every == 0 && cow_flush(img, &err) < 0)
			goto fail;
		if (!random_off) {
			off = (off + step) % size;   /* as qemu-img bench */
			if (off + bufsize > size)
				off = 0;
		}
	}
	/* like qemu-img bench, the final flush (at close) is not timed */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (write && cow_flush(img, &err) < 0)
		goto fail;
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("Run completed in %.3f seconds.\n", secs);
	printf("%.0f IOPS, %.1f MB/s\n", (double)count / secs, (double)count * (double)bufsize / secs / 1e6);
	ret = CLI_EXIT_OK;
	goto out;
fail:
	ret = CLI_EXIT_FAIL;
	cli_error_err(&err);
out:
	free(buf);
	if (cow_close(img) < 0 && ret == CLI_EXIT_OK)
		ret = CLI_EXIT_FAIL;
	return ret;
}
