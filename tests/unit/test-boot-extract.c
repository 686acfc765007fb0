/* tests/unit/test-boot-extract.c — vmm_bzimage_extract() on synthetic
 * bzImages whose payload is a fake vmlinux compressed here with each method
 * (gzip, xz, zstd, lz4 legacy frame in two blocks, lzma) plus Linux's 4-byte
 * size trailer; bzip2, lzo and unknown payloads, a payload outside the image,
 * corrupt data and a non-ELF result are refused with messages naming them.
 * Then, if a Debian cloud kernel is installed, it is probed as a bzImage, its
 * vmlinux extracted and probed as a PVH ELF, and both are loaded into 512 MiB.
 */
#include "test-boot-util.h"

#include <glob.h>
#include <lz4.h>
#include <lzma.h>
#include <time.h>
#include <zlib.h>
#include <zstd.h>

#define VMLINUX_LEN (9u << 20)          /* > 8 MiB: two lz4 legacy blocks */

static uint8_t *fake_vmlinux(void)
{
	uint8_t *v = malloc(VMLINUX_LEN);
	uint32_t x = 1;

	memcpy(v, "\x7f" "ELF", 4);
	for (size_t i = 4; i < VMLINUX_LEN; i++) {
		x = x * 1103515245 + 12345;
		v[i] = (i % 7) ? (uint8_t)(x >> 24) & 0x0F : (uint8_t)i;   /* compressible */
	}
	return v;
}

static size_t c_gzip(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	z_stream zs = { 0 };

	deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)n;
	zs.next_out = out;
	zs.avail_out = (uInt)cap;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
		exit(1);
	deflateEnd(&zs);
	return zs.total_out;              /* gzip's own ISIZE trailer is the size */
}

static size_t c_xz(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	size_t pos = 0;

	if (lzma_easy_buffer_encode(1, LZMA_CHECK_CRC32, NULL, in, n, out, &pos, cap) != LZMA_OK)
		exit(1);
	return pos;
}

static size_t c_lzma(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	lzma_stream s = LZMA_STREAM_INIT;
	lzma_options_lzma opt;

	lzma_lzma_preset(&opt, 1);
	if (lzma_alone_encoder(&s, &opt) != LZMA_OK)
		exit(1);
	s.next_in = in;
	s.avail_in = n;
	s.next_out = out;
	s.avail_out = cap;
	if (lzma_code(&s, LZMA_FINISH) != LZMA_STREAM_END)
		exit(1);
	lzma_end(&s);
	return cap - s.avail_out;
}

static size_t c_zstd(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	size_t r = ZSTD_compress(out, cap, in, n, 3);

	if (ZSTD_isError(r))
		exit(1);
	return r;
}

static size_t c_lz4(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	size_t pos = 4, done = 0;

	put32(out, 0, 0x184C2102);
	while (done < n) {
		int chunk = n - done > (8u << 20) ? (8 << 20) : (int)(n - done);
		int c = LZ4_compress_default((const char *)in + done, (char *)out + pos + 4, chunk,
					     (int)(cap - pos - 4));
		if (c <= 0)
			exit(1);
		put32(out, pos, (uint32_t)c);
		pos += 4 + (size_t)c;
		done += (size_t)chunk;
	}
	return pos;
}

/* A bzImage with @payload (and Linux's size trailer unless @no_trailer) at
 * payload_offset 0x100 of the protected-mode part. */
static const char *make_bz(const char *name, const uint8_t *payload, size_t plen, uint32_t size_trailer,
			   int trailer)
{
	size_t code_len = 0x100 + plen + 4 + 0x40, len;
	uint8_t *code = calloc(1, code_len), *img;
	struct tb_bz z;
	const char *p;

	memcpy(code + 0x100, payload, plen);
	if (trailer)
		put32(code, 0x100 + plen, size_trailer);
	z = tb_bz_default(code, code_len);
	z.payload_offset = 0x100;
	z.payload_length = (uint32_t)(plen + (trailer ? 4 : 0));
	img = tb_bz_build(&z, &len);
	p = tb_write(name, img, len);
	free(img);
	free(code);
	return p;
}

static void roundtrip(const char *method, size_t (*comp)(const uint8_t *, size_t, uint8_t *, size_t),
		      const uint8_t *v, int trailer)
{
	size_t cap = VMLINUX_LEN + VMLINUX_LEN / 8 + 65536, clen;
	uint8_t *c = malloc(cap), *back = NULL;
	char name[64];
	const char *bz, *out;
	struct ut_err err;
	FILE *f;
	long got = -1;

	clen = comp(v, VMLINUX_LEN, c, cap);
	snprintf(name, sizeof(name), "bz-%s", method);
	bz = make_bz(name, c, clen, VMLINUX_LEN, trailer);
	snprintf(name, sizeof(name), "vmlinux-%s", method);
	out = tb_path(name);
	ut_err_clear(&err);
	CHECK(vmm_bzimage_extract(bz, out, &err) == 0, "%s: %s", method, err.msg);
	f = fopen(out, "rb");
	if (f) {
		back = malloc(VMLINUX_LEN + 1);
		got = (long)fread(back, 1, VMLINUX_LEN + 1, f);
		fclose(f);
	}
	CHECK(got == VMLINUX_LEN && !memcmp(back, v, VMLINUX_LEN), "%s: output differs (%ld bytes)",
	      method, got);
	printf("  %-5s payload %7zu bytes -> %u bytes ok\n", method, clen, VMLINUX_LEN);

	/* Corrupt the middle of the payload: refused, no output left behind. */
	c[clen / 2] ^= 0x55;
	c[clen / 2 + 1] ^= 0xAA;
	c[clen / 2 + 7] ^= 0x33;
	snprintf(name, sizeof(name), "bz-%s-bad", method);
	bz = make_bz(name, c, clen, VMLINUX_LEN, trailer);
	snprintf(name, sizeof(name), "vmlinux-%s-bad", method);
	out = tb_path(name);
	if (vmm_bzimage_extract(bz, out, &err) == 0) {
		/* zstd (no checksum by default), lz4 and lzma may decode a flipped
		 * byte into different data; gzip and xz carry a CRC. */
		CHECK(strcmp(method, "gzip") && strcmp(method, "xz"),
		      "%s: corrupt payload accepted", method);
	} else {
		CHECK(access(out, F_OK) != 0, "%s: output left after failure", method);
		printf("  %-5s corrupt -> %s\n", method, err.msg);
	}
	free(back);
	free(c);
}

static void expect_extract_error(const char *name, const char *bz, const char *want)
{
	struct ut_err err;
	const char *out = tb_path("never");

	ut_err_clear(&err);
	CHECK(vmm_bzimage_extract(bz, out, &err) < 0, "%s: extracted", name);
	CHECK(strstr(err.msg, want) != NULL, "%s: message '%s' lacks '%s'", name, err.msg, want);
	CHECK(!strncmp(err.msg, "unable to extract '", 19), "%s: prefix in '%s'", name, err.msg);
	CHECK(access(out, F_OK) != 0, "%s: output created", name);
	printf("  %-22s -> %s\n", name, err.msg);
}

static void refusals(void)
{
	uint8_t junk[64] = { 0 };
	uint8_t code[0x1000] = { 0 };
	struct tb_bz z;
	size_t len;
	uint8_t *img;

	memcpy(junk, "BZh91AY&SY", 10);
	expect_extract_error("bzip2 payload", make_bz("bz-bzip2", junk, sizeof(junk), 1000, 1),
			     "payload is bzip2-compressed, which is not supported");
	memcpy(junk, "\x89LZO\0\r\n\x1a\n", 9);
	expect_extract_error("lzo payload", make_bz("bz-lzo", junk, sizeof(junk), 1000, 1),
			     "payload is lzo-compressed");
	memcpy(junk, "\x12\x34\x56\x78", 4);
	expect_extract_error("unknown payload", make_bz("bz-unk", junk, sizeof(junk), 1000, 1),
			     "payload compression is unknown (first bytes 12 34 56 78)");

	/* gzip of something that is not an ELF. */
	{
		uint8_t text[4096], c[8192];
		size_t clen;

		memset(text, 'A', sizeof(text));
		clen = c_gzip(text, sizeof(text), c, sizeof(c));
		expect_extract_error("not an ELF", make_bz("bz-text", c, clen, 0, 0),
				     "decompressed gzip payload is not an ELF file");
	}
	/* Size trailer disagreeing with the data. */
	{
		uint8_t *v = calloc(1, 100000), c[200000];
		size_t clen;

		memcpy(v, "\x7f" "ELF", 4);
		clen = c_zstd(v, 100000, c, sizeof(c));
		expect_extract_error("size trailer too big", make_bz("bz-size", c, clen, 200000, 1),
				     "zstd payload decompressed to 100000 bytes, 200000 announced");
		expect_extract_error("size trailer too small", make_bz("bz-size2", c, clen, 50000, 1),
				     "zstd payload is larger than announced");
		free(v);
	}
	z = tb_bz_default(code, sizeof(code));
	z.payload_offset = 0xF00;
	z.payload_length = 0x200;
	img = tb_bz_build(&z, &len);
	expect_extract_error("payload outside", tb_write("bz-outside", img, len),
			     "payload (offset 0xf00, 512 bytes) is not inside the kernel's protected-mode code (4096 bytes)");
	free(img);
	expect_extract_error("not a bzImage", tb_write("text", "hello there, not a kernel", 25),
			     "not a Linux bzImage (no 'HdrS' at 0x202)");
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void debian_kernel(void)
{
	glob_t g;
	const char *kernel, *vmlinux;
	enum vmm_kernel_format fmt;
	struct ut_err err;
	struct tb_ram r;
	struct vmm_boot_cfg cfg;
	struct vmm_boot_entry be;
	double t0;

	if (glob("/boot/vmlinuz-*cloud-amd64", 0, NULL, &g) != 0 || g.gl_pathc == 0) {
		printf("  skipped the Debian kernel part: no /boot/vmlinuz-*cloud-amd64\n");
		return;
	}
	kernel = g.gl_pathv[g.gl_pathc - 1];
	if (access(kernel, R_OK) != 0) {
		printf("  skipped the Debian kernel part: %s is not readable\n", kernel);
		globfree(&g);
		return;
	}
	CHECK(vmm_boot_probe(kernel, &fmt, &err) == 0, "probe %s: %s", kernel, err.msg);
	CHECK_EQ(fmt, VMM_KERNEL_BZIMAGE);
	vmlinux = tb_path("vmlinux-debian");
	t0 = now();
	CHECK(vmm_bzimage_extract(kernel, vmlinux, &err) == 0, "extract %s: %s", kernel, err.msg);
	printf("  %s: extracted in %.2f s\n", kernel, now() - t0);
	CHECK(vmm_boot_probe(vmlinux, &fmt, &err) == 0, "probe vmlinux: %s", err.msg);
	CHECK_EQ(fmt, VMM_KERNEL_PVH_ELF);

	if (tb_ram_init(&r, 512ULL << 20) < 0)
		exit(1);
	cfg = (struct vmm_boot_cfg){ .kernel_path = kernel, .cmdline = "console=ttyS0", .ncpus = 1,
				     .initrd_path = tb_write("deb-initrd", "0707010000", 10) };
	CHECK(vmm_boot_load(&r.mem, &cfg, &be, &err) == 0, "load bzImage: %s", err.msg);
	CHECK_EQ(be.entry, 0x100200);
	CHECK(be.initrd_gpa >= be.kernel_end && be.initrd_gpa + be.initrd_size <= 512ULL << 20,
	      "initrd 0x%llx", (unsigned long long)be.initrd_gpa);
	printf("  bzImage: entry 0x%llx kernel [0x%llx, 0x%llx) initrd 0x%llx\n",
	       (unsigned long long)be.entry, (unsigned long long)be.kernel_start,
	       (unsigned long long)be.kernel_end, (unsigned long long)be.initrd_gpa);
	tb_ram_exit(&r);
	if (tb_ram_init(&r, 512ULL << 20) < 0)
		exit(1);
	cfg.kernel_path = vmlinux;
	CHECK(vmm_boot_load(&r.mem, &cfg, &be, &err) == 0, "load vmlinux: %s", err.msg);
	CHECK_EQ(be.format, VMM_KERNEL_PVH_ELF);
	CHECK(be.entry >= 0x1000000 && be.entry < be.kernel_end, "PVH entry 0x%llx",
	      (unsigned long long)be.entry);
	printf("  vmlinux: entry 0x%llx kernel [0x%llx, 0x%llx) initrd 0x%llx\n",
	       (unsigned long long)be.entry, (unsigned long long)be.kernel_start,
	       (unsigned long long)be.kernel_end, (unsigned long long)be.initrd_gpa);
	tb_ram_exit(&r);
	globfree(&g);
}

int main(void)
{
	uint8_t *v = fake_vmlinux();

	roundtrip("gzip", c_gzip, v, 0);
	roundtrip("xz", c_xz, v, 1);
	roundtrip("zstd", c_zstd, v, 1);
	roundtrip("lz4", c_lz4, v, 1);
	roundtrip("lzma", c_lzma, v, 1);
	free(v);
	refusals();
	debian_kernel();
	tb_cleanup();
	return tb_finish("test-boot-extract");
}
