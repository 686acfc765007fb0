/* core/boot/extract.c — recovering the vmlinux ELF from a bzImage.
 *
 * The protected-mode part of a bzImage carries the compressed kernel at
 * payload_offset (from the start of the protected-mode code, protocol 2.08+)
 * for payload_length bytes. Linux appends the uncompressed size as a 4-byte
 * little-endian number to every payload (gzip has it as its ISIZE trailer),
 * which gives the output buffer size and a check on the result. The method is
 * told by the payload's magic bytes, as the kernel's own decompressor does.
 */
#include "core/boot/internal.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#define OUT_MAX        (1ULL << 30)      /* a vmlinux larger than 1 GiB is absurd */
#define LZ4_LEGACY_MAGIC 0x184C2102u
#define LZ4_LEGACY_BLOCK (8u << 20)

typedef int (*decoder_fn)(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len,
			  size_t *produced, struct ut_err *err);

static int dec_gzip(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len,
		    size_t *produced, struct ut_err *err)
{
	z_stream zs;
	int zr, r;

	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
		return ut_errf(err, -ENOMEM, "unable to start the gzip decoder");
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)in_len;
	zs.next_out = out;
	zs.avail_out = (uInt)out_len;
	zr = inflate(&zs, Z_FINISH);
	if (zr != Z_STREAM_END) {
		r = ut_errf(err, -EINVAL, "gzip payload is corrupt or larger than announced (%s)",
			    zs.msg ? zs.msg : zr == Z_BUF_ERROR ? "output full or input truncated" : "error");
		goto out;
	}
	*produced = zs.total_out;
	r = 0;
out:
	inflateEnd(&zs);
	return r;
}

static int dec_lzma_common(lzma_stream *s, const char *name, const uint8_t *in, size_t in_len,
			   uint8_t *out, size_t out_len, size_t *produced, struct ut_err *err)
{
	lzma_ret lr;

	s->next_in = in;
	s->avail_in = in_len;
	s->next_out = out;
	s->avail_out = out_len;
	do
		lr = lzma_code(s, LZMA_FINISH);
	while (lr == LZMA_OK && s->avail_out && s->avail_in);
	if (lr != LZMA_STREAM_END)
		return ut_errf(err, -EINVAL, "%s payload is corrupt or larger than announced (liblzma error %d)",
			       name, (int)lr);
	*produced = out_len - s->avail_out;
	return 0;
}

static int dec_xz(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len,
		  size_t *produced, struct ut_err *err)
{
	lzma_stream s = LZMA_STREAM_INIT;
	int r;

	if (lzma_stream_decoder(&s, UINT64_MAX, 0) != LZMA_OK)
		return ut_errf(err, -ENOMEM, "unable to start the xz decoder");
	r = dec_lzma_common(&s, "xz", in, in_len, out, out_len, produced, err);
	lzma_end(&s);
	return r;
}

static int dec_lzma(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len,
		    size_t *produced, struct ut_err *err)
{
	lzma_stream s = LZMA_STREAM_INIT;
	int r;

	if (lzma_alone_decoder(&s, UINT64_MAX) != LZMA_OK)
		return ut_errf(err, -ENOMEM, "unable to start the lzma decoder");
	r = dec_lzma_common(&s, "lzma", in, in_len, out, out_len, produced, err);
	lzma_end(&s);
	return r;
}

static int dec_zstd(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len,
		    size_t *produced, struct ut_err *err)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	ZSTD_inBuffer ib = { in, in_len, 0 };
	ZSTD_outBuffer ob = { out, out_len, 0 };
	size_t zr;
	int r;

	if (!d)
		return ut_errf(err, -ENOMEM, "unable to start the zstd decoder");
	/* Linux uses zstd -22 --ultra: a 128 MiB window, zstd's default limit. */
	for (;;) {
		zr = ZSTD_decompressStream(d, &ob, &ib);
		if (ZSTD_isError(zr)) {
			r = ut_errf(err, -EINVAL, "zstd payload is corrupt: %s", ZSTD_getErrorName(zr));
			goto out;
		}
		if (zr == 0)
			break;                  /* end of the frame; the size trailer follows */
		if (ob.pos == ob.size || ib.pos == ib.size) {
			r = ut_errf(err, -EINVAL, "zstd payload is %s",
				    ob.pos == ob.size ? "larger than announced" : "truncated");
			goto out;
		}
	}
	*produced = ob.pos;
	r = 0;
out:
	ZSTD_freeDCtx(d);
	return r;
}

/* lz4 "legacy" frames, as `lz4 -l` writes: magic, then blocks of
 * [le32 compressed size][data], each up to 8 MiB uncompressed. */
static int dec_lz4(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len,
		   size_t *produced, struct ut_err *err)
{
	size_t pos = 4, done = 0;
	uint32_t chunk;

	while (in_len - pos > 4) {          /* the last 4 bytes are the size trailer */
		memcpy(&chunk, in + pos, 4);
		chunk = le32toh(chunk);
		pos += 4;
		if (chunk == LZ4_LEGACY_MAGIC)
			continue;               /* concatenated frame */
		if (chunk > (uint32_t)LZ4_compressBound(LZ4_LEGACY_BLOCK) || chunk > in_len - pos)
			return ut_errf(err, -EINVAL,
				       "lz4 payload is corrupt: block of %u bytes at payload offset %zu",
				       chunk, pos - 4);
		size_t room = out_len - done < LZ4_LEGACY_BLOCK ? out_len - done : LZ4_LEGACY_BLOCK;
		int n = LZ4_decompress_safe((const char *)in + pos, (char *)out + done, (int)chunk,
					    (int)room);
		if (n < 0)
			return ut_errf(err, -EINVAL,
				       "lz4 payload is corrupt or larger than announced (block at payload offset %zu)",
				       pos - 4);
		done += (size_t)n;
		pos += chunk;
	}
	*produced = done;
	return 0;
}

static const struct {
	const char *magic;
	size_t len;
	const char *name;
	decoder_fn fn;        /* NULL: recognised but not supported */
} methods[] = {
	{ "\x1f\x8b", 2, "gzip", dec_gzip },
	{ "\x1f\x9e", 2, "gzip", dec_gzip },
	{ "\xfd" "7zXZ\0", 6, "xz", dec_xz },
	{ "\x28\xb5\x2f\xfd", 4, "zstd", dec_zstd },
	{ "\x02\x21\x4c\x18", 4, "lz4", dec_lz4 },
	{ "\x5d\x00\x00", 3, "lzma", dec_lzma },
	{ "BZh", 3, "bzip2", NULL },
	{ "\x89" "LZO", 4, "lzo", NULL },
};

static int write_out(const char *path, const uint8_t *buf, size_t len, struct ut_err *err)
{
	int fd, r = 0;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return ut_errf_sys(err, -errno, "unable to create '%s'", path);
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = ut_errf_sys(err, n < 0 ? -errno : -EIO, "unable to write '%s'", path);
			goto out;
		}
		buf += n;
		len -= (size_t)n;
	}
out:
	if (close(fd) < 0 && !r)
		r = ut_errf_sys(err, -errno, "unable to write '%s'", path);
	if (r < 0)
		unlink(path);
	return r;
}

int vmm_bzimage_extract(const char *bzimage, const char *out_path, struct ut_err *err)
{
	struct vmm_boot_file f = { .fd = -1 };
	struct vmm_boot_kernel k;
	uint64_t setup_size, pm_len, off, len;
	uint8_t *in = NULL, *out = NULL;
	uint32_t out_len;
	size_t produced = 0, m;
	int r;

	r = vmm_boot_file_open(&f, bzimage, err);
	if (r < 0)
		goto out;
	r = vmm_bzimage_parse(&f, &k, &setup_size, err);
	if (r == -ENODATA)
		r = ut_errf(err, -ENOEXEC, "not a Linux bzImage (no 'HdrS' at 0x202)");
	if (r < 0)
		goto out;
	pm_len = f.size - setup_size;
	off = le32toh(k.hdr.payload_offset);
	len = le32toh(k.hdr.payload_length);
	if (len < 8 || off > pm_len || len > pm_len - off) {
		r = ut_errf(err, -ENOEXEC,
			    "payload (offset 0x%llx, %llu bytes) is not inside the kernel's "
			    "protected-mode code (%llu bytes)", (unsigned long long)off,
			    (unsigned long long)len, (unsigned long long)pm_len);
		goto out;
	}
	in = malloc(len);
	if (!in) {
		r = ut_errf(err, -ENOMEM, "out of memory for a %llu-byte payload", (unsigned long long)len);
		goto out;
	}
	r = vmm_boot_file_read(&f, setup_size + off, in, len, "payload", err);
	if (r < 0)
		goto out;
	memcpy(&out_len, in + len - 4, 4);
	out_len = le32toh(out_len);
	for (m = 0; m < sizeof(methods) / sizeof(methods[0]); m++)
		if (!memcmp(in, methods[m].magic, methods[m].len))
			break;
	if (m == sizeof(methods) / sizeof(methods[0])) {
		r = ut_errf(err, -ENOTSUP, "payload compression is unknown (first bytes %02x %02x %02x %02x)",
			    in[0], in[1], in[2], in[3]);
		goto out;
	}
	if (!methods[m].fn) {
		r = ut_errf(err, -ENOTSUP, "payload is %s-compressed, which is not supported "
			    "(gzip, xz, zstd, lz4 and lzma are)", methods[m].name);
		goto out;
	}
	if (out_len < 64 || out_len > OUT_MAX) {
		r = ut_errf(err, -ENOEXEC, "payload announces an uncompressed size of %u bytes", out_len);
		goto out;
	}
	out = malloc(out_len);
	if (!out) {
		r = ut_errf(err, -ENOMEM, "out of memory for a %u-byte vmlinux", out_len);
		goto out;
	}
	r = methods[m].fn(in, (size_t)len, out, out_len, &produced, err);
	if (r < 0)
		goto out;
	if (produced != out_len) {
		r = ut_errf(err, -EINVAL, "%s payload decompressed to %zu bytes, %u announced",
			    methods[m].name, produced, out_len);
		goto out;
	}
	if (memcmp(out, "\x7f" "ELF", 4)) {
		r = ut_errf(err, -ENOEXEC, "decompressed %s payload is not an ELF file", methods[m].name);
		goto out;
	}
	r = write_out(out_path, out, produced, err);
out:
	free(in);
	free(out);
	vmm_boot_file_close(&f);
	if (r < 0)
		ut_err_prefix(err, "unable to extract '%s'", bzimage);
	return r;
}
