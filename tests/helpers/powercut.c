/* tests/helpers/powercut.c — build the file (or directory) a power cut
 * could leave, from a record of every change a writer made to it
 * (tests/helpers/shim/iolog.c).
 *
 *   powercut IOLOG INITIAL OUT MARKOUT SEED [POINT]
 *   powercut --dir IOLOG INITDIR OUTDIR MARKOUT SEED [POINT]
 *
 * The cut comes after record POINT (default: drawn from SEED, half the
 * time uniform over 0..records, half the time just before one of the
 * syncs, where the most changes are pending; with --dir a third of the
 * time near a namespace operation or the making of an unnamed file
 * instead, from 2 records before it to 21 after, then as said; a POINT
 * past the last record
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
 * durable). Prints one line describing the cut. Exit 0, 1 on an error.
 *
 * --dir: a log of a whole directory (IOLOG_DIR). INITDIR holds the files
 * the directory held before the writer ran (by name: the log's NAME
 * records); OUTDIR (made, must not exist) gets the directory the cut
 * leaves. The model, an ext4-like journaling file system (data=ordered),
 * taken conservatively:
 *  - file data, per file: what is said above for the one file, with the
 *    syncs of that file only (a file's fdatasync/fsync makes its own data
 *    and size durable, nothing of another file's);
 *  - the namespace (creation of a file by open O_CREAT, rename, link,
 *    linkat of a file by descriptor, unlink) is journaled in order: some prefix of the operations made
 *    before the cut survives, never a later one without an earlier one
 *    (jbd2 commits transactions in order, each holding every earlier
 *    change), and that prefix holds at least every operation recorded
 *    before the start of the last fsync of the directory itself that
 *    completed before the cut. Nothing else makes a name durable here:
 *    not the fsync of a file, even of a new one (ext4 does commit the
 *    whole running transaction then, and so the names made before it, but
 *    that is its implementation, not a promise: POSIX and the fsync(2)
 *    page ask for an fsync of the directory). The prefix is drawn from
 *    SEED: a quarter of the cuts the shortest allowed, a quarter all, the
 *    others uniform in between;
 *  - a file whose every name is gone after that (its creation lost, or an
 *    unlink kept) is gone with its data; a file keeps its data under
 *    whatever names survive (hard links kept as such);
 *  - an unnamed file (open of the directory with O_TMPFILE: TMPFILE) has
 *    no name until a linkat gives it one (LINK_FILE, a namespace
 *    operation like the others, in the journaled prefix or not): a cut
 *    before that linkat, or one that loses it, leaves nothing of it at any
 *    name (ext4 keeps such an inode on its orphan list and frees it at the
 *    next mount; so do xfs and btrfs). Its writes and syncs are a file's
 *    like any other's, with no name needed: once it has one, it holds
 *    what its own syncs covered and, of the rest, each change kept, lost
 *    or torn, whenever the writes were made (before or after the linkat;
 *    no sync of the directory, and not the linkat, makes its data
 *    durable). That is conservative for ext4 with data=ordered, which
 *    writes a file's data before committing the transaction that links
 *    it; the making of the unnamed file itself changes no name, and is
 *    not counted as a namespace operation.
 * The line printed adds the namespace operations kept. */
#include "tests/helpers/iolog.h"
#include "tests/helpers/xorshift.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct rec {
	struct iolog_rec h;
	long data;   /* offset of the data in the log */
	size_t covers;   /* SYNC: records before its SYNC_START */
};

/* --dir: a name in the directory */
struct ent {
	char name[256];
	uint64_t id;
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

/* Copy @from into the new file @fd, leaving holes where it has zeros. */
static int copy_sparse(const char *from, int fd)
{
	static char buf[1 << 16];
	ssize_t got;
	off_t o = 0;
	int in = open(from, O_RDONLY);

	if (in < 0)
		return -1;
	while ((got = read(in, buf, sizeof(buf))) > 0) {
		bool zero = true;
		for (ssize_t i = 0; i < got && zero; i++)
			zero = !buf[i];
		if (!zero && pwrite(fd, buf, (size_t)got, o) != got)
			got = -1;
		if (got < 0)
			break;
		o += got;
	}
	close(in);
	return got < 0 || ftruncate(fd, o) < 0 ? -1 : 0;
}

/* The names a record of the namespace carries: *a, and *b for a rename or
 * link. 0, -1 when malformed. */
static int rec_names(FILE *log, const struct rec *r, char *a, char *b)
{
	char buf[514];

	if (r->h.len > sizeof(buf) || fseek(log, r->data, SEEK_SET) < 0 ||
	    fread(buf, 1, r->h.len, log) != r->h.len || !r->h.len || buf[r->h.len - 1])
		return -1;
	if (strlen(buf) > 255)
		return -1;
	strcpy(a, buf);
	if (!b)
		return 0;
	if (strlen(buf) + 1 >= r->h.len || strlen(buf + strlen(buf) + 1) > 255)
		return -1;
	strcpy(b, buf + strlen(buf) + 1);
	return 0;
}

static struct ent *find(struct ent *e, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(e[i].name, name))
			return &e[i];
	return NULL;
}

/* Apply the namespace record @r to @e (*n names). 0, -1 when it does not
 * fit (the log is not a directory's history). */
static int apply_ns(FILE *log, const struct rec *r, struct ent *e, size_t *n, size_t max)
{
	char a[256], b[256];
	struct ent *x, *y;
	bool pair = r->h.type == IOLOG_REC_RENAME || r->h.type == IOLOG_REC_LINK;

	if (r->h.type == IOLOG_REC_TMPFILE)
		return 0;   /* no name */
	if (rec_names(log, r, a, pair ? b : NULL) < 0)
		return -1;
	x = find(e, *n, a);
	switch (r->h.type) {
	case IOLOG_REC_NAME:
	case IOLOG_REC_CREATE:
	case IOLOG_REC_LINK_FILE:   /* a name for the file @file (an unnamed one) */
		if (x || *n == max)
			return -1;
		snprintf(e[*n].name, sizeof(e[*n].name), "%s", a);
		e[(*n)++].id = r->h.file;
		return 0;
	case IOLOG_REC_UNLINK:
		if (!x)
			return -1;
		*x = e[--*n];
		return 0;
	case IOLOG_REC_LINK:
		if (!x || find(e, *n, b) || *n == max)
			return -1;
		snprintf(e[*n].name, sizeof(e[*n].name), "%s", b);
		e[*n].id = x->id;
		(*n)++;
		return 0;
	case IOLOG_REC_RENAME:
		y = find(e, *n, b);
		if (!x)
			return -1;
		if (r->h.arg & 2) {   /* RENAME_EXCHANGE */
			uint64_t t;
			if (!y)
				return -1;
			t = x->id;
			x->id = y->id;
			y->id = t;
			return 0;
		}
		if (y && (r->h.arg & 1))   /* RENAME_NOREPLACE: it did not fail */
			return -1;
		if (y == x)
			return 0;
		if (y) {
			*y = e[--*n];
			if (x == &e[*n])
				x = y;
		}
		snprintf(x->name, sizeof(x->name), "%s", b);
		return 0;
	}
	return -1;
}

static bool is_ns(uint32_t t)
{
	return t == IOLOG_REC_CREATE || t == IOLOG_REC_RENAME || t == IOLOG_REC_LINK ||
	       t == IOLOG_REC_UNLINK || t == IOLOG_REC_LINK_FILE;
}

/* a record cuts are drawn near (--dir) */
static bool is_near(uint32_t t)
{
	return is_ns(t) || t == IOLOG_REC_TMPFILE;
}

int main(int argc, char **argv)
{
	struct rec *recs = NULL;
	size_t n = 0, cap = 0, nsync = 0, cut, kept = 0, torn = 0, lost = 0;
	size_t *last_sync = NULL, nslots;
	size_t nsops = 0, nsdur = 0, nskeep = 0, nnames = 0, ninit = 0, nns = 0;
	struct ent *names = NULL, *init = NULL;
	uint64_t maxid = 0;
	int *fds = NULL;
	FILE *log, *mark;
	long end;
	const char *tenv = getenv("POWERCUT_TEAR");
	uint64_t tear = tenv ? strtoull(tenv, NULL, 0) : 4096;
	bool dir = argc > 1 && !strcmp(argv[1], "--dir");
	char buf[1 << 16];
	ssize_t got;

	if (dir) {
		argv++;
		argc--;
	}
	if (tear < 512 || (tear & (tear - 1))) {
		fprintf(stderr, "powercut: POWERCUT_TEAR=%s: a power of two, at least 512\n", tenv);
		return 2;
	}
	if (argc != 6 && argc != 7) {
		fprintf(stderr, "usage: powercut IOLOG INITIAL OUT MARKOUT SEED [POINT]\n"
			"       powercut --dir IOLOG INITDIR OUTDIR MARKOUT SEED [POINT]\n");
		return 2;
	}
	log = fopen(argv[1], "rb");
	if (!log || fseek(log, 0, SEEK_END) < 0 || (end = ftell(log)) < 0 || fseek(log, 0, SEEK_SET) < 0)
		return die(argv[1]);
	for (;;) {
		struct rec r;
		if (fread(&r.h, sizeof(r.h), 1, log) != 1)
			break;
		if (r.h.magic != IOLOG_REC_MAGIC || r.h.type < IOLOG_REC_WRITE || r.h.type > IOLOG_REC_LAST ||
		    (!dir && r.h.type >= IOLOG_REC_NAME) || (!dir && r.h.file) ||
		    (dir && r.h.file != IOLOG_FILE_DIR && r.h.file > 1000000)) {
			fprintf(stderr, "powercut: %s: bad record %zu%s\n", argv[1], n,
				!dir && r.h.type >= IOLOG_REC_NAME ? " (a directory's log: --dir)" : "");
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
		if (iolog_has_data(r.h.type) &&
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
		if (r.h.file != IOLOG_FILE_DIR && r.h.file > maxid)
			maxid = r.h.file;
	}
	/* the last sync of each file (slot: its id; the directory's: maxid + 1) */
	nslots = maxid + 2;
	last_sync = calloc(nslots, sizeof(*last_sync));
	fds = malloc(nslots * sizeof(*fds));
	if (!last_sync || !fds)
		return die("out of memory");
#define SLOT(f) ((f) == IOLOG_FILE_DIR ? maxid + 1 : (f))
	rng = strtoull(argv[5], NULL, 0) * 2654435761u + 88172645463325252ull;
	for (int i = 0; i < 8; i++)
		rnd();
	for (size_t i = 0; i < n; i++)
		nns += is_near(recs[i].h.type);
	if (argc == 7) {
		cut = strtoull(argv[6], NULL, 0);
	} else if (dir && nns && rnd() % 3 == 0) {
		/* near a namespace operation: from 2 records before it to
		 * 21 after (the syncs around it, what follows it) */
		size_t k = rnd() % nns, i = 0, d = rnd() % 24;

		while (!is_near(recs[i].h.type) || k--)
			i++;
		cut = i + d < 2 ? 0 : i + d - 2;
		if (cut > n)
			cut = n;
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
		for (size_t s = 0; s < nslots; s++)
			last_sync[s] = n;   /* no cut: everything reached the disk */
	}
	for (size_t i = 0; i < cut; i++)
		if (recs[i].h.type == IOLOG_REC_SYNC && recs[i].covers > last_sync[SLOT(recs[i].h.file)])
			last_sync[SLOT(recs[i].h.file)] = recs[i].covers;

	for (size_t s = 0; s < nslots; s++)
		fds[s] = -1;
	if (!dir) {
		int in = open(argv[2], O_RDONLY);

		fds[0] = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (in < 0 || fds[0] < 0)
			return die("open");
		for (off_t o = 0; (got = read(in, buf, sizeof(buf))) > 0; o += got)
			if (pwrite(fds[0], buf, (size_t)got, o) != got)
				return die(argv[3]);
		if (got < 0)
			return die(argv[2]);
		close(in);
	} else {
		size_t cap_names = n + 64;
		char path[8192];

		/* the namespace: the initial names, then a prefix of the
		 * operations, at least those the directory's last sync
		 * covers */
		names = calloc(cap_names, sizeof(*names));
		init = calloc(cap_names, sizeof(*init));
		if (!names || !init)
			return die("out of memory");
		for (size_t i = 0; i < n; i++) {
			if (recs[i].h.type == IOLOG_REC_NAME &&
			    (apply_ns(log, &recs[i], init, &ninit, cap_names) < 0 ||
			     apply_ns(log, &recs[i], names, &nnames, cap_names) < 0)) {
				fprintf(stderr, "powercut: %s: record %zu: a bad name\n", argv[1], i);
				return 1;
			}
			if (i < cut && is_ns(recs[i].h.type)) {
				nsops++;
				nsdur += i < last_sync[SLOT(IOLOG_FILE_DIR)];
			}
		}
		if (nsdur == nsops) {
			nskeep = nsops;
		} else {
			uint64_t how = rnd() % 4;

			nskeep = how == 0 ? nsdur : how == 1 ? nsops : nsdur + rnd() % (nsops - nsdur + 1);
		}
		for (size_t i = 0, k = 0; i < cut && k < nskeep; i++) {
			if (!is_ns(recs[i].h.type))
				continue;
			if (apply_ns(log, &recs[i], names, &nnames, cap_names) < 0) {
				fprintf(stderr, "powercut: %s: record %zu: a namespace change that does not fit\n",
					argv[1], i);
				return 1;
			}
			k++;
		}
		if (mkdir(argv[3], 0755) < 0)
			return die(argv[3]);
		/* every file that kept a name: its first name made (its
		 * initial content copied), the others linked after the data */
		for (size_t i = 0; i < nnames; i++) {
			struct ent *e = &names[i];
			size_t s = SLOT(e->id);

			if (e->id == IOLOG_FILE_DIR || s >= nslots)
				return die("a bad file id");
			if (fds[s] >= 0)
				continue;
			snprintf(path, sizeof(path), "%s/%s", argv[3], e->name);
			fds[s] = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
			if (fds[s] < 0)
				return die(path);
			for (size_t j = 0; j < ninit; j++)
				if (init[j].id == e->id) {
					snprintf(path, sizeof(path), "%s/%s", argv[2], init[j].name);
					if (copy_sparse(path, fds[s]) < 0)
						return die(path);
					break;
				}
		}
	}
	mark = fopen(argv[4], "wb");
	if (!mark)
		return die(argv[4]);

	for (size_t i = 0; i < cut; i++) {
		const struct rec *r = &recs[i];
		bool durable = i < last_sync[SLOT(r->h.file)];
		uint64_t how = durable ? 1 : rnd() % 3;   /* 0 lost, 1 kept, 2 torn */
		int ret = 0, out = fds[SLOT(r->h.file)];

		switch (r->h.type) {
		case IOLOG_REC_MARK:
			if (fseek(log, r->data, SEEK_SET) < 0)
				return die(argv[1]);
			for (uint64_t k = 0; k < r->h.len; k++)
				fputc(fgetc(log), mark);
			continue;
		case IOLOG_REC_WRITE:
			if (out < 0)
				break;   /* a file gone with its name */
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
			if (how && out >= 0)
				ret = ftruncate(out, (off_t)r->h.off);
			break;
		case IOLOG_REC_FALLOCATE:
			if (how && out >= 0)
				ret = fallocate(out, (int)r->h.arg, (off_t)r->h.off, (off_t)r->h.len);
			break;
		default:   /* syncs, the namespace */
			continue;
		}
		if (ret < 0)
			return die(argv[3]);
		if (!durable && out >= 0) {
			if (how == 0)
				lost++;
			else if (how == 1)
				kept++;
		}
	}
	for (size_t s = 0; s < nslots; s++)
		if (fds[s] >= 0 && close(fds[s]) < 0)
			return die("close");
	/* the other names of a file */
	for (size_t i = 0; dir && i < nnames; i++) {
		char from[8192], to[8192];

		for (size_t j = 0; j < i; j++)
			if (names[j].id == names[i].id) {
				snprintf(from, sizeof(from), "%s/%s", argv[3], names[j].name);
				snprintf(to, sizeof(to), "%s/%s", argv[3], names[i].name);
				if (link(from, to) < 0)
					return die(to);
				break;
			}
	}
	if (fclose(mark))
		return die("close");
	if (!dir)
		printf("cut after record %zu of %zu (%zu syncs): %zu synced, after the last sync %zu kept, %zu torn, %zu lost\n",
		       cut, n, nsync, last_sync[0], kept, torn, lost);
	else
		printf("cut after record %zu of %zu (%zu syncs): not covered by a sync of their file %zu kept, %zu torn, %zu lost; namespace: %zu of %zu operations kept (%zu durable), %zu names\n",
		       cut, n, nsync, kept, torn, lost, nskeep, nsops, nsdur, nnames);
	free(recs);
	free(last_sync);
	free(fds);
	free(names);
	free(init);
	fclose(log);
	return 0;
}
