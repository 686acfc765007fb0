/* tests/unit/test-cow-bm.h — shared by the persistent-bitmap failure tests
 * (test-cow-bitmap-resize-fail, test-cow-bitmap-store-fail): failure
 * injection into the program's own fdatasync/pwrite/pwritev/pread (cow/
 * is linked statically, so these override libc's: the n-th call on the
 * armed fd fails with EIO), the bitmaps as the file holds them
 * (read_bitmaps, straight from the directory, tables and data clusters),
 * and two small file helpers. The includer defines CS (the images'
 * cluster size) and MAXBM (most bitmaps read) first. */
#ifndef COWVM_TEST_COW_BM_H
#define COWVM_TEST_COW_BM_H

#include "cow/qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- failure injection: the n-th call from arming on the armed fd ---- */
enum inj { INJ_WRITE, INJ_SYNC, INJ_READ, INJ_FSIZE };
static const char *inj_name[] = { "write", "fdatasync", "read", "file size limit" };
static int armed_fd = -1, fail_in;
static enum inj armed_kind;
static bool fired;

static bool hit(int fd, enum inj kind)
{
	if (fd != armed_fd || kind != armed_kind || fail_in <= 0 || --fail_in)
		return false;
	fired = true;
	errno = EIO;
	return true;
}

int fdatasync(int fd)
{
	return hit(fd, INJ_SYNC) ? -1 : (int)syscall(SYS_fdatasync, fd);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	return hit(fd, INJ_WRITE) ? -1 : syscall(SYS_pwritev, fd, iov, n, (long)off, 0L);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	return hit(fd, INJ_WRITE) ? -1 : syscall(SYS_pwrite64, fd, buf, len, off);
}

ssize_t pread(int fd, void *buf, size_t len, off_t off)
{
	return hit(fd, INJ_READ) ? -1 : syscall(SYS_pread64, fd, buf, len, off);
}

/* ---- the bitmaps as the file holds them ---- */
struct bm {
	char name[32];
	uint32_t flags, tsize;
	unsigned gb;
	uint64_t nbits;
	uint8_t *bits;     /* one byte per bit */
};

static uint64_t tab_entries(uint64_t size, unsigned gb)
{
	uint64_t bits = (size + (1ull << gb) - 1) >> gb, per = (uint64_t)CS * 8;

	return (bits + per - 1) / per;
}

/* Read every bitmap of @img into @b (all ones / all zeros entries and
 * data clusters); the number, or -1. */
static int read_bitmaps(struct cow_img *img, struct bm *b)
{
	uint64_t dsize, doff, p = 0;
	uint32_t nb;
	uint8_t *d, *cl = malloc(CS);
	struct ut_err err;
	int n = 0;

	if (!cl || !cow_bitmaps_ext(img, &nb, &dsize, &doff) || dsize > 65536) {
		free(cl);
		return -1;
	}
	d = malloc(dsize);
	if (!d || cow_pread_full(img, d, dsize, doff, false, &err) < 0)
		n = -1;
	while (n >= 0 && p + 24 <= dsize && n < MAXBM) {
		const uint8_t *e = d + p;
		uint64_t toff = cow_be64(e), *t;
		uint16_t nl = cow_be16(e + 18);
		struct bm *x = &b[n];

		x->tsize = cow_be32(e + 8);
		x->flags = cow_be32(e + 12);
		x->gb = e[17];
		snprintf(x->name, sizeof(x->name), "%.*s", nl < 31 ? nl : 31, (const char *)e + 24 + cow_be32(e + 20));
		x->nbits = (cow_size(img) + (1ull << x->gb) - 1) >> x->gb;
		x->bits = calloc(x->nbits + 1, 1);
		t = calloc(x->tsize + 1, 8);
		if (!x->bits || !t || cow_pread_full(img, t, (size_t)x->tsize * 8, toff, false, &err) < 0) {
			free(t);
			n = -1;
			break;
		}
		for (uint64_t i = 0; i < x->nbits; i++) {
			uint64_t k = i / (CS * 8), v = k < x->tsize ? cow_be64((uint8_t *)&t[k]) : 0;
			uint64_t in = i % (CS * 8);

			if (v & 1)
				x->bits[i] = 1;
			else if (v & 0x00fffffffffffe00ull) {
				if (in == 0 || i == 0)
					cow_pread_full(img, cl, CS, v & 0x00fffffffffffe00ull, false, &err);
				x->bits[i] = (cl[in / 8] >> (in % 8)) & 1;
			}
		}
		free(t);
		n++;
		p += (24 + cow_be32(e + 20) + nl + 7) & ~7ull;
	}
	free(d);
	free(cl);
	return n;
}

static void free_bitmaps(struct bm *b, int n)
{
	for (int i = 0; i < n; i++)
		free(b[i].bits);
}

static int copy_file(const char *from, const char *to)
{
	char buf[65536];
	int in = open(from, O_RDONLY), out = open(to, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	ssize_t n;
	int ret = in >= 0 && out >= 0 ? 0 : -1;

	while (ret == 0 && (n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			ret = -1;
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	return ret;
}

static int run(const char *cmd)
{
	int st = system(cmd);

	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#endif
