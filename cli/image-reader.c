/* cli/image-reader.c — a source image read ahead on a thread of its own,
 * for the commands that copy an image (convert): while the caller writes
 * one chunk, the next ones are read, as qemu-img convert keeps reads and
 * writes in flight together. The source image is touched by the reader
 * thread alone from cli_reader_start to cli_reader_stop. */
#include "cli/image.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define READER_SLOTS 3

struct cli_reader {
	struct cow_img *src;
	uint64_t size, chunk, align;
	unsigned layers;           /* 0, or copy only the top ones (CLI_RK_BACKING) */
	struct cli_rchunk slots[READER_SLOTS];
	pthread_t tid;
	pthread_mutex_t lock;
	pthread_cond_t filled, freed;
	uint64_t nfilled, nused;   /* chunks filled by the reader, given back by the caller */
	bool stop, end;            /* the caller stops it; the reader is done */
	int ret;                   /* the reader's error (after the chunks filled) */
	struct ut_err err;
};

/* What a run of cow_block_status_above is to a copy of the layers it
 * searched: their data, their zeros (zero clusters, or past the end of
 * the file below one, where it reads zeros whatever that file holds), or
 * what the layers below hold. */
static enum cli_rkind above_kind(const struct cow_extent *e)
{
	return e->st == COW_ST_UNALLOC ? CLI_RK_BACKING : e->st == COW_ST_ZERO ? CLI_RK_ZERO : CLI_RK_DATA;
}

/* Fill @c with the chunk at @off: a run the destination reads as zeros
 * already (zero, beyond the chain or a hole of a raw layer's file,
 * @align-aligned: not read), or up to a chunk's bytes read (those of a raw
 * layer up to the @align unit where its file's data ends). With
 * r->layers: a run of those layers' zeros or of the layers' below (any
 * alignment, not read), or a run of their data (up to a chunk) read. 0 or
 * -errno with r->err. */
static int fill(struct cli_reader *r, struct cli_rchunk *c, uint64_t off)
{
	uint64_t n = r->size - off < r->chunk ? r->size - off : r->chunk, run;
	unsigned layers = r->layers ? r->layers : UINT_MAX;
	struct cow_extent e;
	bool hole;
	int ret = cow_block_status_above(r->src, off, n, layers, &e, &r->err);

	if (ret < 0)
		return ret;
	c->off = off;
	if (r->layers) {
		c->kind = above_kind(&e);
		c->n = e.len;
		if (c->kind != CLI_RK_DATA)
			return 0;
		/* the run of data goes on over the next extents of data */
		while (c->n < n) {
			ret = cow_block_status_above(r->src, off + c->n, n - c->n, layers, &e, &r->err);
			if (ret < 0)
				return ret;
			if (above_kind(&e) != CLI_RK_DATA)
				break;
			c->n += e.len;
		}
		return cow_read(r->src, c->buf, c->n, off, &r->err);
	}
	if (e.depth >= 0 && e.st == COW_ST_DATA && cow_format(e.layer) == COW_FMT_RAW) {
		/* a sparse raw file: its holes are not read (qemu-img asks
		 * the file system too, SEEK_DATA) */
		run = cli_image_host_run(cow_layer_fd(e.layer), e.host_off, e.len, &hole);
		if (hole && (run >= r->align || e.off + run == r->size)) {
			e.st = COW_ST_ZERO;
			e.len = e.off + run == r->size ? run : run & ~(r->align - 1);
		} else if (!hole && run < n) {
			run = (run + r->align - 1) & ~(r->align - 1);
			n = run < n ? run : n;
		}
	}
	if ((e.st == COW_ST_ZERO || e.depth < 0) && !(e.off & (r->align - 1)) &&
	    ((e.len & (r->align - 1)) == 0 || e.off + e.len == r->size)) {
		c->kind = CLI_RK_ZERO;
		c->n = e.len;
		return 0;
	}
	c->kind = CLI_RK_DATA;
	c->n = n;
	return cow_read(r->src, c->buf, n, off, &r->err);
}

static void *reader_main(void *arg)
{
	struct cli_reader *r = arg;
	uint64_t off = 0;
	bool stop;
	int ret = 0;

	while (off < r->size) {
		struct cli_rchunk *c;

		pthread_mutex_lock(&r->lock);
		while (!r->stop && r->nfilled - r->nused == READER_SLOTS)
			pthread_cond_wait(&r->freed, &r->lock);
		c = &r->slots[r->nfilled % READER_SLOTS];
		stop = r->stop;
		pthread_mutex_unlock(&r->lock);
		if (stop)
			break;
		ret = fill(r, c, off);
		if (ret < 0)
			break;
		off += c->n;
		pthread_mutex_lock(&r->lock);
		r->nfilled++;
		pthread_cond_signal(&r->filled);
		pthread_mutex_unlock(&r->lock);
	}
	pthread_mutex_lock(&r->lock);
	r->ret = ret;
	r->end = true;
	pthread_cond_signal(&r->filled);
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

int cli_reader_start(struct cow_img *src, uint64_t chunk, uint64_t align, unsigned layers,
		     struct cli_reader **out, struct ut_err *err)
{
	struct cli_reader *r = calloc(1, sizeof(*r));
	int ret = -ENOMEM;

	*out = NULL;
	if (!r)
		goto fail;
	r->src = src;
	r->size = cow_size(src);
	r->chunk = chunk;
	r->align = align;
	r->layers = layers;
	ut_err_clear(&r->err);
	for (int i = 0; i < READER_SLOTS; i++) {
		/* (a chunk, plus what a compressed write's padding of the last
		 * cluster may add: at most a cluster, cli_image_convert) */
		r->slots[i].buf = malloc(chunk + align);
		if (!r->slots[i].buf)
			goto fail;
	}
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->filled, NULL);
	pthread_cond_init(&r->freed, NULL);
	ret = -pthread_create(&r->tid, NULL, reader_main, r);
	if (ret < 0) {
		pthread_mutex_destroy(&r->lock);
		pthread_cond_destroy(&r->filled);
		pthread_cond_destroy(&r->freed);
		goto fail;
	}
	*out = r;
	return 0;
fail:
	if (r)
		for (int i = 0; i < READER_SLOTS; i++)
			free(r->slots[i].buf);
	free(r);
	return ut_errf(err, ret, "unable to start reading '%s'", cow_path(src));
}

int cli_reader_next(struct cli_reader *r, struct cli_rchunk **c, struct ut_err *err)
{
	int ret = 1;

	pthread_mutex_lock(&r->lock);
	while (r->nfilled == r->nused && !r->end)
		pthread_cond_wait(&r->filled, &r->lock);
	if (r->nfilled != r->nused) {
		*c = &r->slots[r->nused % READER_SLOTS];
		ret = 0;
	} else if (r->ret < 0) {
		ret = r->ret;
		*err = r->err;
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

void cli_reader_done(struct cli_reader *r)
{
	pthread_mutex_lock(&r->lock);
	r->nused++;
	pthread_cond_signal(&r->freed);
	pthread_mutex_unlock(&r->lock);
}

void cli_reader_stop(struct cli_reader *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->stop = true;
	pthread_cond_signal(&r->freed);
	pthread_mutex_unlock(&r->lock);
	pthread_join(r->tid, NULL);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->filled);
	pthread_cond_destroy(&r->freed);
	for (int i = 0; i < READER_SLOTS; i++)
		free(r->slots[i].buf);
	free(r);
}
