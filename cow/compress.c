/* cow/compress.c — compressed clusters: raw deflate (zlib, window 2^12, no
 * header, as QEMU writes them) and zstd frames, chosen by the header's
 * compression_type. Decompression stops once a full cluster is produced, so
 * the sector padding after the compressed bytes is ignored. */
#include "cow/qcow2.h"

#include <errno.h>
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

long cow_compress(struct cow_img *img, const uint8_t *src, size_t slen, uint8_t *dst, size_t dcap)
{
	if (img->h.comp_type == 1) {
		size_t r;

		if (!img->zstd_c) {
			img->zstd_c = ZSTD_createCCtx();
			if (!img->zstd_c)
				return -ENOMEM;
		}
		r = ZSTD_compressCCtx(img->zstd_c, dst, dcap, src, slen, 3);
		if (ZSTD_isError(r))
			return 0;   /* did not fit (or failed): store uncompressed */
		return (long)r;
	} else {
		z_stream *z = img->zlib_c;
		int r;

		if (!z) {
			z = calloc(1, sizeof(*z));
			if (!z || deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
					       Z_DEFAULT_STRATEGY) != Z_OK) {
				free(z);
				return -ENOMEM;
			}
			img->zlib_c = z;
		} else {
			deflateReset(z);
		}
		z->next_in = (Bytef *)src;
		z->avail_in = (uInt)slen;
		z->next_out = dst;
		z->avail_out = (uInt)dcap;
		r = deflate(z, Z_FINISH);
		if (r != Z_STREAM_END)
			return 0;   /* did not fit */
		return (long)(dcap - z->avail_out);
	}
}

void cow_compress_free(struct cow_img *img)
{
	if (img->zstd_d)
		ZSTD_freeDCtx(img->zstd_d);
	if (img->zstd_c)
		ZSTD_freeCCtx(img->zstd_c);
	if (img->zlib_d) {
		inflateEnd(img->zlib_d);
		free(img->zlib_d);
	}
	if (img->zlib_c) {
		deflateEnd(img->zlib_c);
		free(img->zlib_c);
	}
	img->zstd_d = img->zstd_c = img->zlib_d = img->zlib_c = NULL;
}
