/* cow/compress.c — compressed clusters: raw deflate (zlib, window 2^12, no
 * header, as QEMU writes them) and zstd frames, chosen by the header's
 * compression_type. Decompression stops once a full cluster is produced, so
 * the sector padding after the compressed bytes is ignored. */
#include "cow/qcow2.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

int cow_decompress(struct cow_img *img, const uint8_t *src, size_t slen, uint8_t *dst,
		   size_t dlen, struct ut_err *err)
{
	if (img->h.comp_type == 1) {
		ZSTD_inBuffer in = { src, slen, 0 };
		ZSTD_outBuffer out = { dst, dlen, 0 };

		if (!img->zstd_d) {
			img->zstd_d = ZSTD_createDCtx();
			if (!img->zstd_d)
				return ut_errf(err, -ENOMEM, "out of memory");
		} else {
			ZSTD_DCtx_reset(img->zstd_d, ZSTD_reset_session_only);
		}
		while (out.pos < out.size) {
			size_t r = ZSTD_decompressStream(img->zstd_d, &out, &in);
			if (ZSTD_isError(r))
				return ut_errf(err, -EIO, "'%s': corrupt zstd-compressed cluster: %s",
					       img->path, ZSTD_getErrorName(r));
			if (r == 0 || in.pos == in.size)
				break;
		}
		if (out.pos != out.size)
			return ut_errf(err, -EIO, "'%s': zstd-compressed cluster decompresses to %zu of %zu bytes",
				       img->path, out.pos, out.size);
		return 0;
	} else {
		z_stream *z = img->zlib_d;
		int r;

		if (!z) {
			z = calloc(1, sizeof(*z));
			if (!z || inflateInit2(z, -12) != Z_OK) {
				free(z);
				return ut_errf(err, -ENOMEM, "'%s': zlib initialisation failed", img->path);
			}
			img->zlib_d = z;
		} else {
			inflateReset(z);
		}
		z->next_in = (Bytef *)src;
		z->avail_in = (uInt)slen;
		z->next_out = dst;
		z->avail_out = (uInt)dlen;
		r = inflate(z, Z_FINISH);
		if ((r != Z_STREAM_END && r != Z_BUF_ERROR && r != Z_OK) || z->avail_out != 0)
			return ut_errf(err, -EIO, "'%s': corrupt deflate-compressed cluster", img->path);
		return 0;
	}
}

/* One compressor: the calling thread's (img->zc[0]) or a worker's. */
struct cow_zctx {
	void *zstd;
	z_stream *zlib;
	uint8_t *pad;   /* a cluster: the zero-padded last cluster of a batch */
};

/* Compress @slen bytes at @src into @dst with @z (made on first use) in
 * the image's compression_type. Returns the length (> 0), 0 when it does
 * not fit in @dcap (or the library failed: stored plainly), -ENOMEM. */
static long zctx_compress(struct cow_zctx *z, unsigned type, const uint8_t *src, size_t slen,
			  uint8_t *dst, size_t dcap)
{
	if (type == 1) {
		size_t r;

		if (!z->zstd) {
			z->zstd = ZSTD_createCCtx();
			if (!z->zstd)
				return -ENOMEM;
		}
		r = ZSTD_compressCCtx(z->zstd, dst, dcap, src, slen, 3);
		if (ZSTD_isError(r))
			return 0;   /* did not fit (or failed): store uncompressed */
		return (long)r;
	} else {
		int r;

		if (!z->zlib) {
			z->zlib = calloc(1, sizeof(*z->zlib));
			if (!z->zlib || deflateInit2(z->zlib, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
						     Z_DEFAULT_STRATEGY) != Z_OK) {
				free(z->zlib);
				z->zlib = NULL;
				return -ENOMEM;
			}
		} else {
			deflateReset(z->zlib);
		}
		z->zlib->next_in = (Bytef *)src;
		z->zlib->avail_in = (uInt)slen;
		z->zlib->next_out = dst;
		z->zlib->avail_out = (uInt)dcap;
		r = deflate(z->zlib, Z_FINISH);
		if (r != Z_STREAM_END)
			return 0;   /* did not fit */
		return (long)(dcap - z->zlib->avail_out);
	}
}

static void zctx_free(struct cow_zctx *z)
{
	if (z->zstd)
		ZSTD_freeCCtx(z->zstd);
	if (z->zlib) {
		deflateEnd(z->zlib);
		free(z->zlib);
	}
	free(z->pad);
	memset(z, 0, sizeof(*z));
}

/* img->zc[0..n): made (zeroed) on first use. 0 or -ENOMEM. */
static int zctx_reserve(struct cow_img *img, unsigned n)
{
	struct cow_zctx *zc;

	if (img->nzc >= n)
		return 0;
	zc = realloc(img->zc, n * sizeof(*zc));
	if (!zc)
		return -ENOMEM;
	memset(zc + img->nzc, 0, (n - img->nzc) * sizeof(*zc));
	img->zc = zc;
	img->nzc = n;
	return 0;
}

/* The work of one cow_compress_clusters call, shared by its threads. */
struct zbatch {
	struct cow_img *img;
	const uint8_t *src;
	uint64_t n, last_len;
	long *lens;
	uint64_t next;   /* the next cluster to take (atomic) */
	int error;       /* -ENOMEM of a thread (atomic) */
};

/* Take clusters of @b until none is left, compressing with @z. */
static void zbatch_work(struct zbatch *b, struct cow_zctx *z)
{
	size_t cs = b->img->cluster_size;

	for (;;) {
		uint64_t i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
		const uint8_t *src;
		long r;

		if (i >= b->n)
			return;
		src = b->src + i * cs;
		if (i == b->n - 1 && b->last_len < cs) {
			if (!z->pad && !(z->pad = malloc(cs))) {
				__atomic_store_n(&b->error, -ENOMEM, __ATOMIC_RELAXED);
				return;
			}
			memcpy(z->pad, src, b->last_len);
			memset(z->pad + b->last_len, 0, cs - b->last_len);
			src = z->pad;
		}
		/* (cs - 1: a cluster that does not shrink is stored plainly) */
		r = zctx_compress(z, b->img->h.comp_type, src, cs, b->img->zout + i * cs, cs - 1);
		if (r < 0) {
			__atomic_store_n(&b->error, (int)r, __ATOMIC_RELAXED);
			return;
		}
		b->lens[i] = r;
	}
}

struct zworker {
	struct zbatch *b;
	struct cow_zctx *z;
};

static void *zworker_main(void *arg)
{
	struct zworker *w = arg;

	zbatch_work(w->b, w->z);
	return NULL;
}

int cow_compress_clusters(struct cow_img *img, const uint8_t *src, uint64_t n, uint64_t last_len,
			  long *lens)
{
	struct zbatch b = { .img = img, .src = src, .n = n, .last_len = last_len, .lens = lens };
	unsigned nt = img->comp_threads > 1 ? img->comp_threads : 1, started = 0;
	pthread_t tid[COW_COMPRESS_THREADS_MAX];
	struct zworker w[COW_COMPRESS_THREADS_MAX];
	size_t need = (size_t)n * img->cluster_size;

	if (nt > n)
		nt = (unsigned)n;
	if (zctx_reserve(img, nt) < 0)
		return -ENOMEM;
	if (img->zout_size < need) {
		uint8_t *o = realloc(img->zout, need);
		if (!o)
			return -ENOMEM;
		img->zout = o;
		img->zout_size = need;
	}
	/* the calling thread is worker 0; a thread that cannot be started
	 * leaves its share to the others */
	for (unsigned t = 1; t < nt; t++) {
		w[t] = (struct zworker){ &b, &img->zc[t] };
		if (pthread_create(&tid[started + 1], NULL, zworker_main, &w[t]) != 0)
			break;
		started++;
	}
	zbatch_work(&b, &img->zc[0]);
	for (unsigned t = 1; t <= started; t++)
		pthread_join(tid[t], NULL);
	return b.error;
}

void cow_compress_free(struct cow_img *img)
{
	if (img->zstd_d)
		ZSTD_freeDCtx(img->zstd_d);
	if (img->zlib_d) {
		inflateEnd(img->zlib_d);
		free(img->zlib_d);
	}
	for (unsigned i = 0; i < img->nzc; i++)
		zctx_free(&img->zc[i]);
	free(img->zc);
	free(img->zout);
	img->zc = NULL;
	img->nzc = 0;
	img->zout = NULL;
	img->zout_size = 0;
	img->zstd_d = img->zlib_d = NULL;
}

int cow_set_compress_threads(struct cow_img *img, unsigned n)
{
	if (n > COW_COMPRESS_THREADS_MAX)
		return -EINVAL;
	img->comp_threads = n ? n : 1;
	return 0;
}
