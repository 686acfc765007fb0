/* tests/helpers/powercut.c — build the file a power cut could leave, from a
 * record of every change a writer made to it (tests/helpers/shim/iolog.c).
 *
 *   powercut IOLOG INITIAL OUT MARKOUT SEED [POINT]
 *
 * The cut comes after record POINT (default: drawn from SEED, half the
 * time uniform over 0..records, half the time just before one of the
 * syncs, where the most changes are pending; a POINT past the last record
 * means no cut: every change is applied, which must give the file the
 * writer left). OUT starts as a copy of INITIAL (the file before the writer
 * ran); every change recorded before the start of the last fdatasync/fsync
 * that completed before the cut is applied (with several threads, a change
 * recorded while that sync ran is not covered by it); each change after
 * that is kept whole, lost, or
 * (writes only) torn at 4 KiB pages — the page cache writes back pages, not
 * calls; with POWERCUT_TEAR=512 in the environment at 512-byte sectors, what
 * a disk may leave of a direct write — independently and in any combination, in the order made (a later
 * write to the same page wins if both are kept), as a disk that reorders
 * unsynced writes may leave it. MARKOUT gets what the writer had written to
 * its marker file before the cut (the flushes it had been told were
 * durable). Prints one line describing the cut. Exit 0, 1 on an error. */
#include "tests/helpers/iolog.h"
#include "tests/helpers/xorshift.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct rec {
	struct iolog_rec h;
	long data;   /* offset of the data in the log */
	size_t covers;   /* SYNC: records before its SYNC_START */
};

static uint64_t rng;
static uint64_t rnd(void) { return test_xorshift64(&rng); }

static int die(const char *what)
{
	fprintf(stderr, "powercut: %s: %s\n", what, strerror(errno));
	return 1;
}

static int apply_write(int out, FILE *log, const struct rec *r, uint64_t from, uint64_t to)
{
	static char buf[1 << 16];

	for (uint64_t p = from; p < to;) {
		size_t n = to - p < sizeof(buf) ? (size_t)(to - p) : sizeof(buf);
		if (fseek(log, r->data + (long)(p - r->h.off), SEEK_SET) < 0 ||
		    fread(buf, 1, n, log) != n || pwrite(out, buf, n, (off_t)p) != (ssize_t)n)
			return -1;
		p += n;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct rec *recs = NULL;
	size_t n = 0, cap = 0, nsync = 0, cut, last_sync = 0, kept = 0, torn = 0, lost = 0;
	FILE *log, *mark;
	long end;
	const char *tenv = getenv("POWERCUT_TEAR");
	uint64_t tear = tenv ? strtoull(tenv, NULL, 0) : 4096;
	int in, out;
	char buf[1 << 16];
	ssize_t got;

	if (tear < 512 || (tear & (tear - 1))) {
		fprintf(stderr, "powercut: POWERCUT_TEAR=%s: a power of two, at least 512\n", tenv);
		return 2;
	}
	if (argc != 6 && argc != 7) {
		fprintf(stderr, "usage: powercut IOLOG INITIAL OUT MARKOUT SEED [POINT]\n");
		return 2;
	}
	log = fopen(argv[1], "rb");
	if (!log || fseek(log, 0, SEEK_END) < 0 || (end = ftell(log)) < 0 || fseek(log, 0, SEEK_SET) < 0)
		return die(argv[1]);
	for (;;) {
		struct rec r;
		if (fread(&r.h, sizeof(r.h), 1, log) != 1)
			break;
		if (r.h.magic != IOLOG_REC_MAGIC) {
			fprintf(stderr, "powercut: %s: bad record %zu\n", argv[1], n);
			return 1;
		}
		r.data = ftell(log);
		r.covers = 0;
		if (r.h.type == IOLOG_REC_SYNC) {
			/* its start: the latest SYNC_START with its id */
			size_t s = n;
			while (s > 0 && !(recs[s - 1].h.type == IOLOG_REC_SYNC_START &&
					  recs[s - 1].h.arg == r.h.arg))
				s--;
			if (s == 0) {
				fprintf(stderr, "powercut: %s: record %zu: a sync without its start\n",
					argv[1], n);
				return 1;
			}
			r.covers = s - 1;
		}
		if ((r.h.type == IOLOG_REC_WRITE || r.h.type == IOLOG_REC_MARK) &&
		    (fseek(log, (long)r.h.len, SEEK_CUR) < 0 || ftell(log) > end)) {
			fprintf(stderr, "powercut: %s: record %zu is cut short (the writer ended while writing it?)\n",
				argv[1], n);
			return 1;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 1024;
			recs = realloc(recs, cap * sizeof(*recs));
			if (!recs)
				return die("out of memory");
		}
		recs[n++] = r;
		nsync += r.h.type == IOLOG_REC_SYNC;
	}
	rng = strtoull(argv[5], NULL, 0) * 2654435761u + 88172645463325252ull;
	for (int i = 0; i < 8; i++)
		rnd();
	if (argc == 7) {
		cut = strtoull(argv[6], NULL, 0);
	} else if (rnd() & 1) {
		cut = rnd() % (n + 1);
	} else {
		/* just before a sync: everything since the one before is
		 * pending, the widest choice of what a cut can leave */
		size_t k = nsync ? rnd() % nsync : 0;

		cut = n;
		for (size_t i = 0; nsync && i < n; i++)
			if (recs[i].h.type == IOLOG_REC_SYNC && !k--) {
				cut = i;
				break;
			}
	}
	if (cut > n) {
		cut = n;
		last_sync = n;   /* no cut: everything reached the disk */
	}
	for (size_t i = 0; i < cut; i++)
		if (recs[i].h.type == IOLOG_REC_SYNC && recs[i].covers > last_sync)
			last_sync = recs[i].covers;

	in = open(argv[2], O_RDONLY);
	out = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	mark = fopen(argv[4], "wb");
	if (in < 0 || out < 0 || !mark)
		return die("open");
	for (off_t o = 0; (got = read(in, buf, sizeof(buf))) > 0; o += got)
		if (pwrite(out, buf, (size_t)got, o) != got)
			return die(argv[3]);
	if (got < 0)
		return die(argv[2]);
	close(in);

	for (size_t i = 0; i < cut; i++) {
		const struct rec *r = &recs[i];
		bool durable = i < last_sync;
		uint64_t how = durable ? 1 : rnd() % 3;   /* 0 lost, 1 kept, 2 torn */
		int ret = 0;

		switch (r->h.type) {
		case IOLOG_REC_MARK:
			if (fseek(log, r->data, SEEK_SET) < 0)
				return die(argv[1]);
			for (uint64_t k = 0; k < r->h.len; k++)
				fputc(fgetc(log), mark);
			continue;
		case IOLOG_REC_SYNC:
		case IOLOG_REC_SYNC_START:
			continue;
		case IOLOG_REC_WRITE:
			if (how == 1) {
				ret = apply_write(out, log, r, r->h.off, r->h.off + r->h.len);
			} else if (how == 2) {
				uint64_t end = r->h.off + r->h.len;
				for (uint64_t p = r->h.off; p < end && ret == 0;) {
					uint64_t q = (p | (tear - 1)) + 1;
					if (q > end)
						q = end;
					if (rnd() & 1)
						ret = apply_write(out, log, r, p, q);
					p = q;
				}
				torn++;
			}
			break;
		case IOLOG_REC_TRUNCATE:
			if (how)
				ret = ftruncate(out, (off_t)r->h.off);
			break;
		case IOLOG_REC_FALLOCATE:
			if (how)
				ret = fallocate(out, (int)r->h.arg, (off_t)r->h.off, (off_t)r->h.len);
			break;
		}
		if (ret < 0)
			return die(argv[3]);
		if (!durable) {
			if (how == 0)
				lost++;
			else if (how == 1)
				kept++;
		}
	}
	if (fclose(mark) || close(out))
		return die("close");
	printf("cut after record %zu of %zu (%zu syncs): %zu synced, after the last sync %zu kept, %zu torn, %zu lost\n",
	       cut, n, nsync, last_sync, kept, torn, lost);
	free(recs);
	fclose(log);
	return 0;
}
