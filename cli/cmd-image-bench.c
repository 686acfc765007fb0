/* cli/cmd-image-bench.c — `cowvm image bench`: the same knobs and the same
 * request sequence as `qemu-img bench` (COUNT requests of SIZE bytes, offsets
 * advancing by STEP from OFFSET and wrapping at the end of the disk), so the
 * two can be compared on the same file. Prints the run time, IOPS and MB/s.
 * By default requests go straight to cow/ (synchronous); with -i io_uring
 * (or -i threads: storage/'s worker-thread engine, qemu-img's -i threads)
 * they go through storage/ (the stack virtio-blk uses), DEPTH in flight.
 * -n or -t none bypass the host page cache (COW_O_DIRECT / STG_O_DIRECT, as
 * qemu-img bench's cache=none); -t writeback (the default) does not.
 * Request buffers are one block from ut_iobuf_alloc, in transparent huge
 * pages by default (--buffers=pages: ordinary 4 KiB pages, as qemu-img
 * bench's single qemu_memalign block), so a direct request is one
 * scatter-gather segment where the kernel grants huge pages (util/iobuf.h). */
#include "cli/cli.h"
#include "cli/image.h"
#include "storage/blockdev.h"
#include "storage/engine.h"
#include "util/iobuf.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct bslot {
	struct stg_req req;
	struct iovec iov;
};

/* One run through storage/: the request sequence and its counters. */
struct bench {
	struct stg_dev *d;
	bool write;
	unsigned long long count, issued, done, errors, bufsize, step, off;
	int submit_error;
	/* --flush-interval N: after every N writes, stop issuing, let the
	 * requests in flight finish, flush, go on (as qemu-img bench does,
	 * draining first); slots that finish meanwhile wait in @parked */
	unsigned long long flush_every, nparked;
	bool want_flush;
	struct bslot **parked;
};

static void bench_cb(struct stg_req *req, int result);

/* Queue the next request of the sequence in @s (sent by the next
 * stg_unplug or at the end of the stg_poll running the completions). 0, or
 * the submit error (also kept in b). */
static int bench_issue(struct bench *b, struct bslot *s)
{
	struct stg_req *r = &s->req;
	int ret;

	memset(r, 0, sizeof(*r));
	r->op = b->write ? STG_OP_WRITE : STG_OP_READ;
	r->offset = b->off;
	r->len = b->bufsize;
	r->iov = &s->iov;
	r->iovcnt = 1;
	r->done = bench_cb;
	r->opaque = b;
	ret = stg_submit(b->d, r);
	if (ret < 0) {
		b->submit_error = ret;
		return ret;
	}
	b->issued++;
	b->off = (b->off + b->step) % b->d->size;
	if (b->off + b->bufsize > b->d->size)
		b->off = 0;
	return 0;
}

/* A completion: count it and queue the slot's next request right away, as
 * qemu-img bench does. The requests queued while one stg_poll runs the
 * completions the kernel has posted go out together at its end (batched
 * submission, as virtio-blk sends the requests of one guest notification). */
static void bench_cb(struct stg_req *req, int result)
{
	struct bench *b = req->opaque;

	b->done++;
	if (result < 0)
		b->errors++;
	if (b->flush_every && b->write && b->done % b->flush_every == 0)
		b->want_flush = true;
	if (b->want_flush)
		b->parked[b->nparked++] = (struct bslot *)req;
	else if (b->issued < b->count && !b->submit_error)
		bench_issue(b, (struct bslot *)req);
}

/* The flush of --flush-interval, once nothing is in flight (outside the
 * completion callbacks: stg_flush waits for its own completion). Then the
 * parked slots go on. 0 or -errno. */
static int bench_flush(struct bench *b)
{
	int ret = stg_flush(b->d);

	b->want_flush = false;
	for (unsigned long long i = 0; i < b->nparked; i++)
		if (b->issued < b->count && !b->submit_error)
			bench_issue(b, b->parked[i]);
	b->nparked = 0;
	stg_unplug(b->d);
	return ret;
}

/* COUNT requests through storage/ with DEPTH in flight; returns 0 or -errno. */
static int bench_stg(const char *path, const char *fmt, bool write, bool share, bool direct,
		     bool threads, bool huge, unsigned long long count,
		     unsigned long long depth, unsigned long long bufsize, unsigned long long step,
		     unsigned long long offset, unsigned long long flush_every, int pattern,
		     double *secs, struct ut_err *err)
{
	struct bench b = { .write = write, .count = count, .bufsize = bufsize, .step = step,
			   .off = offset, .flush_every = flush_every };
	struct stg_dev *d = NULL;
	struct bslot *sl = NULL;
	struct timespec t0, t1;
	unsigned long long slot = ut_iobuf_round(bufsize);
	uint8_t *bufs = NULL;
	int ret;

	ret = stg_open(path, fmt, (write ? 0 : STG_O_RDONLY) | (share ? STG_O_NO_LOCK : 0) |
		       (direct ? STG_O_DIRECT : 0) | (threads ? STG_O_THREADS : 0), &d, err);
	if (ret < 0)
		return ret;
	b.d = d;
	printf("I/O engine: %s\n", stg_engine_name(d->engine));
	if (bufsize > d->size) {
		ret = ut_errf(err, -EINVAL, "buffer size larger than the disk");
		goto out;
	}
	sl = calloc(depth, sizeof(*sl));
	b.parked = calloc(depth, sizeof(*b.parked));
	if (!sl || !b.parked) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	bufs = ut_iobuf_alloc(depth * slot, huge);
	if (!bufs) {
		ret = ut_errf(err, -ENOMEM, "out of memory for %llu buffers of %llu bytes", depth, bufsize);
		goto out;
	}
	memset(bufs, pattern, depth * slot);
	for (unsigned long long i = 0; i < depth; i++) {
		sl[i].iov.iov_base = bufs + i * slot;
		sl[i].iov.iov_len = bufsize;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned long long i = 0; i < depth && b.issued < count && !b.submit_error; i++)
		bench_issue(&b, &sl[i]);
	stg_unplug(d);
	while (b.done < b.issued || b.want_flush) {
		if (b.want_flush && b.done == b.issued) {
			ret = bench_flush(&b);
			if (ret < 0) {
				ret = ut_errf(err, ret, "'%s': flush failed", path);
				goto out;
			}
			continue;
		}
		if (!stg_poll(d) && stg_wait(d) < 0) {
			ret = ut_errf(err, -EIO, "'%s': the block layer lost a request", path);
			goto out;
		}
	}
	if (b.submit_error) {
		ret = ut_errf(err, b.submit_error, "'%s': request at %llu failed", path, b.off);
		goto out;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	*secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	ret = b.errors ? ut_errf(err, -EIO, "'%s': %llu requests failed", path, b.errors) : 0;
	if (ret == 0 && write)
		ret = stg_flush(d);
out:
	if (d)
		stg_drain(d);
	ut_iobuf_free(bufs, depth * slot);
	free(sl);
	free(b.parked);
	stg_close(d);
	return ret;
}

/* @arg names one of two choices: *out = true for @yes, false for @no;
 * -1 (and *out unchanged) for anything else. */
static int two_way(const char *arg, const char *yes, const char *no, bool *out)
{
	if (!strcmp(arg, yes))
		*out = true;
	else if (!strcmp(arg, no))
		*out = false;
	else
		return -1;
	return 0;
}

int cli_image_bench(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "pattern", required_argument, NULL, 'P' },
		{ "flush-interval", required_argument, NULL, 'F' },
		{ "no-drain", no_argument, NULL, 'N' },
		{ "random", no_argument, NULL, 'R' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "buffers", required_argument, NULL, 'B' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long long count = 75000, depth = 64, bufsize = 4096, step = 0, offset = 0, v;
	unsigned long long flush_every = 0;
	const char *fmt = NULL;
	bool write = false, random_off = false, use_stg = false, share = false, direct = false;
	bool threads = false;
	bool huge = true;
	size_t buflen = 0;
	int pattern = 0, c, ret = CLI_EXIT_FAIL;   /* qemu-img bench's default */
	struct cow_img *img = NULL;
	struct timespec t0, t1;
	uint8_t *buf = NULL;
	struct ut_err err;
	uint64_t size, off, rng = 0x9e3779b97f4a7c15ull;
	double secs = 0;

	ut_err_clear(&err);
	while ((c = getopt_long(argc, argv, "c:d:f:no:qs:S:t:wi:U", lo, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (cli_parse_uint(optarg, ~0ull, &count))
				return cli_usage_error("image bench", "-c %s: expected a request count", optarg);
			break;
		case 'd':
			if (cli_parse_uint(optarg, ~0ull, &depth))
				return cli_usage_error("image bench", "-d %s: expected a number of requests in flight",
						       optarg);
			break;
		case 'f': fmt = optarg; break;
		case 'o':
			if (cli_parse_size(optarg, 0, &offset))
				return cli_usage_error("image bench", "bad offset");
			break;
		case 's':
			if (cli_parse_size(optarg, 0, &bufsize) || !bufsize)
				return cli_usage_error("image bench", "bad buffer size");
			break;
		case 'S':
			if (cli_parse_size(optarg, 0, &step))
				return cli_usage_error("image bench", "bad step");
			break;
		case 'w': write = true; break;
		case 'P':
			if (cli_parse_uint(optarg, 0xff, &v))
				return cli_usage_error("image bench", "--pattern=%s: expected a byte value, 0 to 255",
						       optarg);
			pattern = (int)v;
			break;
		case 'F':
			if (cli_parse_size(optarg, 0, &v))
				return cli_usage_error("image bench", "bad flush interval");
			flush_every = v;
			break;
		case 'R': random_off = true; break;
		case 'U': share = true; break;
		case 'B':
			if (two_way(optarg, "huge", "pages", &huge) < 0)
				return cli_usage_error("image bench", "--buffers=%s: expected huge or pages",
						       optarg);
			break;
		case 'i':
			if (strcmp(optarg, "io_uring") && strcmp(optarg, "threads"))
				return cli_usage_error("image bench", "-i %s: expected io_uring or threads",
						       optarg);
			use_stg = true;
			threads = !strcmp(optarg, "threads");
			break;
		case 'n': direct = true; break;
		case 't':
			if (two_way(optarg, "none", "writeback", &direct) < 0)
				return cli_usage_error("image bench", "-t %s: expected none or writeback",
						       optarg);
			break;
		case 'q': case 'N': break;
		default: return cli_usage_error("image bench", "bad option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("image bench", "need FILE");
	if (share && write)
		return cli_usage_error("image bench", "--force-share is for read-only access, not with -w");
	if (!step)
		step = bufsize;
	if (!depth)
		depth = 1;
	if (depth > 4096)
		return cli_usage_error("image bench", "-d %llu: at most 4096 requests in flight", depth);
	if (bufsize > (1ull << 30))
		return cli_usage_error("image bench", "-s %llu: at most 1 GiB per request", bufsize);
	if (use_stg) {
		if (random_off)
			return cli_usage_error("image bench", "--random is not available with -i");
		printf("Sending %llu %s requests, %llu bytes each, %llu in parallel (starting at offset %llu, step size %llu), via storage/ (%s%s)\n",
		       count, write ? "write" : "read", bufsize, depth, offset, step,
		       threads ? "threads" : "io_uring",
		       direct ? ", cache=none" : "");
		if (bench_stg(argv[optind], fmt, write, share, direct, threads, huge, count, depth, bufsize, step, offset,
			      flush_every, pattern, &secs, &err) < 0) {
			cli_image_error(&err, !write);
			return CLI_EXIT_FAIL;
		}
		printf("Run completed in %.3f seconds.\n", secs);
		printf("%.0f IOPS, %.1f MB/s\n", (double)count / secs, (double)count * (double)bufsize / secs / 1e6);
		return CLI_EXIT_OK;
	}
	if (cow_open(argv[optind], fmt, (write ? 0 : COW_O_RDONLY) | (share ? COW_O_NO_LOCK : 0) |
		     (direct ? COW_O_DIRECT : 0),
		     &img, &err) < 0)
		goto fail;
	size = cow_size(img);
	if (bufsize > size) {
		ut_errf(&err, -EINVAL, "buffer size larger than the disk");
		goto fail;
	}
	buflen = ut_iobuf_round(bufsize);
	buf = ut_iobuf_alloc(buflen, huge);
	if (!buf) {
		ut_errf(&err, -ENOMEM, "out of memory");
		goto fail;
	}
	memset(buf, pattern, bufsize);
	printf("Sending %llu %s requests, %llu bytes each, %llu in parallel (starting at offset %llu, step size %llu)%s\n",
	       count, write ? "write" : "read", bufsize, depth, offset, step,
	       direct ? " (cache=none)" : "");
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
	cli_image_error(&err, !write);
out:
	ut_iobuf_free(buf, buflen);
	return cli_image_close(img, ret);
}
