/* tests/unit/test-cow-bitmap-damage.c — damaged images in which two
 * structures name one cluster (cow/bitmaps.c bm_check_refs, bm_free_old;
 * cow/refcount.c pending_dups; cow.h I8, I18). Made with qemu-img and
 * qemu-io (cluster size 4 KiB, two bitmaps of granularity 512 with two
 * data clusters each), then patched in place:
 *  1. bitmap b2's table entry 0 names b1's data cluster (refcount 1, two
 *     references; b2's own cluster leaks);
 *  2. b1's table entry 1 names the same cluster as its entry 0;
 *  3. b1's entry 0 names the refcount table;
 *  4. b1's data cluster has refcount 0 (an allocation of a writable
 *     open, first fit, would take it);
 *  5. no bitmaps: L2 entries 0 and 1 name one data cluster (refcount 1),
 *     and a discard releases both;
 *  6. b1's entry 0 names the L2 table of guest cluster 0;
 *  7. b1's data cluster has refcount 2;
 *  8. the header extension counts 3 bitmaps, the directory holds 2;
 *  9. b1's entry 0 names the data cluster of guest cluster 0 (refcount
 *     1, two references: guest data and bitmap data).
 * For 1-3: `qemu-img check` reports the damage (exit 2); a writable open
 * succeeds, tracks nothing, and cow_bitmaps_problem names the file and
 * the problem; a write and the close succeed; the bitmaps stay in use and
 * nothing of theirs is freed (the shared cluster keeps refcount 1); our
 * check and `qemu-img check` find exactly what they found before; a
 * COW_O_KEEP_BITMAPS open (resize) is refused with the same message;
 * `qemu-img check -r all` then repairs the image (exit 0 after).
 * For 4: the write (of those a loop makes) that would allocate over the
 * bitmap cluster fails with
 * -EUCLEAN naming it (the image marked corrupt), and the cluster's bytes
 * are unchanged (before, the write took it, and the store at close freed
 * it as the old bitmap's: guest data in a free cluster).
 * For 6 and 7 (not seen at open: the L1 table and the refcounts are not
 * loaded then): the bitmaps are tracked and the close stores them
 * consistent but leaves the old cluster allocated, and cow_close_msg says
 * why ("it is also an L2 table (L1 entry 0)", "refcount 2, named 1
 * time(s)"; before, 6 freed the L2 table as old bitmap data); the guest
 * data under that L2 table reads back, `qemu-img check` finds leaks only.
 * For 8: the open drops the bitmaps (autoclear bit 0 cleared, as before)
 * and cow_bitmaps_problem says so, naming the file and the count; the
 * close returns 0; `qemu-img info` lists none, `qemu-img check` finds
 * their clusters leaked (exit 3).
 * For 5: no refcount below 0 and no free: the flush after the discard
 * fails with -EUCLEAN naming the file and the cluster, the image is marked
 * corrupt, the cluster keeps refcount 1 and its data; `qemu-img check`
 * finds leaks only (exit 3).
 * For 9: not seen at open (the bitmaps are tracked); a guest write into
 * guest cluster 0 is refused with -EUCLEAN ("overlaps a bitmap table or
 * data cluster", I8), the image marked corrupt; the close stores the
 * bitmaps but, the image being marked corrupt, frees none of the old
 * clusters (cow_close_msg: "left allocated", "marked corrupt"): the
 * cluster keeps refcount 1 and guest cluster 0 its data, `qemu-img check`
 * finds leaks only (exit 3). Before, the store freed it as old bitmap
 * data (refcount 0 under a live L2 entry; the next allocation, an L2
 * table, overwrote the guest's data with zeros). Still a weakness: when
 * the guest never writes that cluster in the open (reads are not checked
 * against bitmap clusters, as in QEMU), nothing tells it from a bitmap
 * data cluster (refcount 1, named once) short of a walk of every L2
 * table, and the store frees it (QEMU's does too).
 * Skipped without qemu-img and qemu-io. */
#include "cow/qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define CS 4096u
static char dir[] = "/var/tmp/cowbmdamage.XXXXXX";
static char tmpl[160], work[160], cmd[1024];

static int run(const char *c)
{
	int st = system(c);

	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int qcheck(const char *path)
{
	snprintf(cmd, sizeof(cmd), "qemu-img check '%s' >/dev/null 2>&1", path);
	return run(cmd);
}

static int copy(const char *from, const char *to)
{
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
	return run(cmd);
}

static void put64_at(const char *path, uint64_t off, uint64_t v)
{
	uint8_t b[8];
	int fd = open(path, O_WRONLY);

	cow_put64(b, v);
	CHECK(fd >= 0 && pwrite(fd, b, 8, (off_t)off) == 8);
	if (fd >= 0)
		close(fd);
}

/* The layout of the template: each bitmap's table offset and entries. */
struct lay {
	uint64_t toff[2], ent[2][2];
	uint64_t rt_off, rb_off;
};

static int layout(const char *path, struct lay *l)
{
	struct cow_img *img = NULL;
	struct ut_err err;
	uint64_t dsize, doff, p = 0;
	uint8_t *d = NULL;
	uint32_t nb;
	int ret = -1;

	if (cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) < 0) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	if (!cow_bitmaps_ext(img, &nb, &dsize, &doff) || nb != 2 || dsize > 4096)
		goto out;
	d = malloc(dsize);
	if (!d || cow_pread_full(img, d, dsize, doff, false, &err) < 0)
		goto out;
	for (int i = 0; i < 2; i++) {
		uint8_t t[16];

		l->toff[i] = cow_be64(d + p);
		if (cow_be32(d + p + 8) != 2 || cow_pread_full(img, t, 16, l->toff[i], false, &err) < 0)
			goto out;
		l->ent[i][0] = cow_be64(t);
		l->ent[i][1] = cow_be64(t + 8);
		p += (cow_bitmap_entry_size(d + p) + 7) & ~7ull;
	}
	l->rt_off = img->h.rt_off;
	l->rb_off = img->rt[0] & QCOW_RT_OFFSET_MASK;
	ret = 0;
out:
	free(d);
	cow_close(img);
	return ret;
}

static uint64_t refcount(const char *path, uint64_t off)
{
	struct cow_img *img = NULL;
	struct ut_err err;
	uint64_t v = ~0ull;

	if (cow_open(path, "qcow2", COW_O_RDONLY | COW_O_NO_BACKING, &img, &err) == 0)
		cow_rc_get(img, off / CS, &v, &err);
	cow_close(img);
	return v;
}

/* Both bitmaps of @path in use? */
static bool all_in_use(const char *path)
{
	struct cow_img *img = NULL;
	struct cow_bitmap_info *b = NULL;
	struct ut_err err;
	uint32_t n = 0;
	bool ok = false;

	if (cow_open(path, "qcow2", COW_O_RDONLY, &img, &err) == 0 && cow_get_bitmaps(img, &b, &n, &err) == 0)
		ok = n == 2 && (b[0].flags & COW_BITMAP_IN_USE) && (b[1].flags & COW_BITMAP_IN_USE);
	cow_free_bitmaps(b, n);
	cow_close(img);
	return ok;
}

static void check_counts(const char *path, uint64_t *corr, uint64_t *leaks)
{
	struct cow_check_res r;
	struct ut_err err;

	memset(&r, 0, sizeof(r));
	CHECK(cow_check(path, COW_REPAIR_NONE, &r, &err) == 0);
	*corr = r.corruptions;
	*leaks = r.leaks;
	ut_buf_release(&r.msgs);
}

/* Cases 1-3: a damaged bitmap structure, patched by @patch (offset,
 * value); @want in the message. */
static void damaged_bitmaps(const char *what, uint64_t poff, uint64_t pval, uint64_t shared,
			    const char *want)
{
	struct cow_img *img = NULL;
	struct ut_err err;
	uint64_t c0, l0, c1, l1, rc0 = shared ? refcount(tmpl, shared) : 0;
	uint8_t buf[4096];
	int r;

	memset(buf, 0x5a, sizeof(buf));
	CHECK(copy(tmpl, work) == 0);
	put64_at(work, poff, pval);
	CHECK(qcheck(work) == 2);
	check_counts(work, &c0, &l0);
	CHECK(c0 >= 1);

	ut_err_clear(&err);
	r = cow_open(work, "qcow2", 0, &img, &err);
	CHECK(r == 0);
	if (r < 0) {
		fprintf(stderr, "%s: %s\n", what, err.msg);
		return;
	}
	r = cow_bitmaps_problem(img, &err);
	fprintf(stderr, "%s: %s\n", what, err.msg);
	CHECK(r == -EINVAL && strstr(err.msg, work) && strstr(err.msg, want) &&
	      strstr(err.msg, "stay marked in use"));
	CHECK(cow_write(img, buf, sizeof(buf), 8u << 20, &err) == 0);
	CHECK(cow_close(img) == 0);   /* (the damage is the image's, not the close's) */
	CHECK(all_in_use(work));
	if (shared)
		CHECK(refcount(work, shared) == rc0);
	check_counts(work, &c1, &l1);
	CHECK(c1 == c0 && l1 == l0);
	CHECK(qcheck(work) == 2);

	/* a resize keeping the bitmaps: refused, naming the damage (on a
	 * fresh copy: the bitmaps above are in use, which it refuses too) */
	CHECK(copy(tmpl, work) == 0);
	put64_at(work, poff, pval);
	img = NULL;
	ut_err_clear(&err);
	r = cow_open(work, "qcow2", COW_O_KEEP_BITMAPS, &img, &err);
	CHECK(r == -EINVAL && strstr(err.msg, want) && strstr(err.msg, work));
	fprintf(stderr, "%s, resize: %s\n", what, err.msg);
	cow_close(img);

	snprintf(cmd, sizeof(cmd), "qemu-img check -r all '%s' >/dev/null 2>&1", work);
	run(cmd);
	CHECK(qcheck(work) == 0);
}

int main(void)
{
	struct lay l = { 0 };
	char base[160];

	if (run("qemu-img --version >/dev/null 2>&1") != 0 || run("qemu-io --version >/dev/null 2>&1") != 0) {
		printf("skip: qemu-img or qemu-io not found\n");
		return 77;
	}
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(tmpl, sizeof(tmpl), "%s/t.qcow2", dir);
	snprintf(work, sizeof(work), "%s/w.qcow2", dir);
	snprintf(base, sizeof(base), "%s/b.qcow2", dir);
	snprintf(cmd, sizeof(cmd),
		 "qemu-img create -q -f qcow2 -o cluster_size=%u '%s' 32M && "
		 "qemu-img bitmap --add -g 512 '%s' b1 && qemu-img bitmap --add -g 512 '%s' b2 && "
		 "qemu-io -c 'write -P 0x11 0 4k' -c 'write -P 0x22 20M 4k' '%s' >/dev/null",
		 CS, tmpl, tmpl, tmpl, tmpl);
	CHECK(run(cmd) == 0);
	CHECK(qcheck(tmpl) == 0);
	CHECK(layout(tmpl, &l) == 0);
	if (failures)
		goto out;
	/* every entry a data cluster (bits set, not all) */
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < 2; j++)
			CHECK(l.ent[i][j] > 1 && !(l.ent[i][j] & 511));

	damaged_bitmaps("1 (b2's entry 0 is b1's data cluster)", l.toff[1], l.ent[0][0], l.ent[0][0],
			"share a cluster");
	damaged_bitmaps("2 (b1's entries 0 and 1 name one cluster)", l.toff[0] + 8, l.ent[0][0], l.ent[0][0],
			"share a cluster");
	damaged_bitmaps("3 (b1's entry 0 is the refcount table)", l.toff[0], l.rt_off, 0,
			"overlaps the refcount table");

	/* 4: b1's data cluster at refcount 0 (16-bit refcounts) */
	{
		struct cow_img *img = NULL;
		struct ut_err err;
		uint8_t z[2] = { 0, 0 }, before[CS], after[CS], buf[CS];
		uint64_t c = l.ent[0][0];
		int fd, r;

		memset(buf, 0x77, sizeof(buf));
		CHECK(copy(tmpl, work) == 0);
		fd = open(work, O_RDWR);
		CHECK(fd >= 0 && pwrite(fd, z, 2, (off_t)(l.rb_off + (c / CS) * 2)) == 2);
		CHECK(fd >= 0 && pread(fd, before, CS, (off_t)c) == CS);
		if (fd >= 0)
			close(fd);
		CHECK(refcount(work, c) == 0);
		CHECK(qcheck(work) == 2);
		ut_err_clear(&err);
		CHECK(cow_open(work, "qcow2", 0, &img, &err) == 0);
		/* (first fit: the free clusters below it go first) */
		r = img ? 0 : -1;
		for (unsigned i = 0; r == 0 && i < 32; i++)
			r = cow_write(img, buf, sizeof(buf), (12u << 20) + i * 2 * CS, &err);
		if (r == 0 && img)
			r = cow_flush(img, &err);
		fprintf(stderr, "4 (refcount 0 on b1's data cluster): %d %s\n", r, err.msg);
		CHECK(r == -EUCLEAN && strstr(err.msg, work) && strstr(err.msg, "a bitmap table or data cluster"));
		cow_close(img);
		fd = open(work, O_RDONLY);
		CHECK(fd >= 0 && pread(fd, after, CS, (off_t)c) == CS && !memcmp(before, after, CS));
		if (fd >= 0)
			close(fd);
		/* marked corrupt: a writable open is refused */
		img = NULL;
		CHECK(cow_open(work, "qcow2", 0, &img, &err) == -EUCLEAN);
		cow_close(img);
	}

	/* 6: b1's entry 0 names the L2 table of guest cluster 0; 7: b1's data
	 * cluster has refcount 2. Neither is seen at open (the L1 table and
	 * the refcounts are not loaded yet): both are tracked and stored,
	 * and the store leaves the old cluster allocated instead of freeing
	 * it, saying why (cow_close_msg) */
	for (int k = 6; k <= 7; k++) {
		struct cow_img *img = NULL;
		struct ut_err err;
		uint8_t buf[CS], rd[CS];
		char msg[UT_ERR_MSG_MAX];
		uint64_t l2 = 0, c = l.ent[0][0];
		int r;

		memset(buf, 0x66, sizeof(buf));
		CHECK(copy(tmpl, work) == 0);
		CHECK(cow_open(work, "qcow2", COW_O_RDONLY, &img, &err) == 0);
		l2 = img ? img->l1[0] & QCOW_OFFSET_MASK : 0;
		cow_close(img);
		img = NULL;
		CHECK(l2 != 0);
		if (k == 6) {
			put64_at(work, l.toff[0], l2);
			CHECK(qcheck(work) == 2);   /* (refcount 1, 2 references) */
		} else {
			uint8_t two[2] = { 0, 2 };
			int fd = open(work, O_WRONLY);

			CHECK(fd >= 0 && pwrite(fd, two, 2, (off_t)(l.rb_off + (c / CS) * 2)) == 2);
			if (fd >= 0)
				close(fd);
			CHECK(qcheck(work) == 3);   /* (a leak) */
		}
		ut_err_clear(&err);
		CHECK(cow_open(work, "qcow2", 0, &img, &err) == 0);
		if (!img)
			continue;
		CHECK(cow_bitmaps_problem(img, &err) == 0);
		CHECK(cow_write(img, buf, sizeof(buf), 8u << 20, &err) == 0);
		r = cow_close_msg(img, msg, sizeof(msg));
		fprintf(stderr, "%d (%s): %d %s\n", k, k == 6 ? "b1's entry 0 is an L2 table" : "refcount 2 on b1's data cluster",
			r, msg);
		CHECK(r == 0 && strstr(msg, work) && strstr(msg, "left allocated") &&
		      strstr(msg, k == 6 ? "it is also an L2 table (L1 entry 0)" : "refcount 2, named 1 time(s)"));
		/* stored consistent, the L2 table intact (guest data readable),
		 * the cluster still allocated: leaks only */
		img = NULL;
		CHECK(cow_open(work, "qcow2", COW_O_RDONLY, &img, &err) == 0);
		CHECK(img && cow_read(img, rd, sizeof(rd), 0, &err) == 0 && rd[0] == 0x11 && rd[CS - 1] == 0x11);
		CHECK(img && cow_read(img, rd, sizeof(rd), 8u << 20, &err) == 0 && !memcmp(rd, buf, CS));
		cow_close(img);
		CHECK(!all_in_use(work));
		CHECK(refcount(work, k == 6 ? l2 : c) == (k == 6 ? 1 : 2));
		CHECK(qcheck(work) == 3);
	}

	/* 8: the header extension counts 3 bitmaps, the directory holds 2:
	 * no directory (cow_bm_read_dir), the bitmaps are dropped and that
	 * is said */
	{
		struct cow_img *img = NULL;
		struct ut_err err;
		uint8_t h[CS];
		size_t o;
		int fd, r;

		CHECK(copy(tmpl, work) == 0);
		fd = open(work, O_RDWR);
		CHECK(fd >= 0 && pread(fd, h, CS, 0) == CS);
		for (o = cow_be32(h + 100); o + 12 <= CS && cow_be32(h + o) != QCOW_EXT_BITMAPS; o += 8 + ((cow_be32(h + o + 4) + 7) & ~7u))
			if (!cow_be32(h + o))
				break;
		CHECK(o + 12 <= CS && cow_be32(h + o) == QCOW_EXT_BITMAPS && cow_be32(h + o + 8) == 2);
		cow_put32(h + o + 8, 3);
		CHECK(fd >= 0 && pwrite(fd, h + o + 8, 4, (off_t)(o + 8)) == 4);
		if (fd >= 0)
			close(fd);
		ut_err_clear(&err);
		CHECK(cow_open(work, "qcow2", 0, &img, &err) == 0);
		r = img ? cow_bitmaps_problem(img, &err) : 0;
		fprintf(stderr, "8 (the extension counts 3 bitmaps, the directory 2): %d %s\n", r, err.msg);
		CHECK(r == -EINVAL && strstr(err.msg, work) && strstr(err.msg, "holds 2 bitmaps, the header says 3") &&
		      strstr(err.msg, "dropped"));
		CHECK(img && cow_close(img) == 0);
		snprintf(cmd, sizeof(cmd), "qemu-img info '%s' | grep -q bitmaps", work);
		CHECK(run(cmd) == 1);
		CHECK(qcheck(work) == 3);   /* (their clusters leak) */
	}

	/* 9: b1's entry 0 names guest cluster 0's data cluster, which the
	 * guest then writes */
	{
		struct cow_img *img = NULL;
		struct ut_err err;
		uint8_t buf[CS], rd[CS];
		char msg[UT_ERR_MSG_MAX];
		uint64_t l2, d = 0;
		int r;

		CHECK(copy(tmpl, work) == 0);
		CHECK(cow_open(work, "qcow2", COW_O_RDONLY, &img, &err) == 0);
		l2 = img ? img->l1[0] & QCOW_OFFSET_MASK : 0;
		if (l2 && cow_pread_full(img, rd, 8, l2, false, &err) == 0)
			d = cow_be64(rd) & QCOW_OFFSET_MASK;
		cow_close(img);
		img = NULL;
		CHECK(d != 0 && refcount(work, d) == 1);
		put64_at(work, l.toff[0], d);
		CHECK(qcheck(work) == 2);   /* (refcount 1, 2 references) */
		ut_err_clear(&err);
		CHECK(cow_open(work, "qcow2", 0, &img, &err) == 0);
		if (img) {
			CHECK(cow_bitmaps_problem(img, &err) == 0);
			memset(buf, 0x99, sizeof(buf));
			r = cow_write(img, buf, sizeof(buf), 0, &err);
			fprintf(stderr, "9 (b1's entry 0 is guest data), write: %d %s\n", r, err.msg);
			CHECK(r == -EUCLEAN && strstr(err.msg, work) &&
			      strstr(err.msg, "overlaps a bitmap table or data cluster"));
			memset(buf, 0x66, sizeof(buf));
			CHECK(cow_write(img, buf, sizeof(buf), 8u << 20, &err) == 0);
			r = cow_close_msg(img, msg, sizeof(msg));
			fprintf(stderr, "9 (b1's entry 0 is guest data), close: %d %s\n", r, msg);
			CHECK(r == 0 && strstr(msg, work) && strstr(msg, "left allocated") &&
			      strstr(msg, "marked corrupt"));
		}
		CHECK(refcount(work, d) == 1);
		img = NULL;
		CHECK(cow_open(work, "qcow2", COW_O_RDONLY, &img, &err) == 0);
		CHECK(img && cow_read(img, rd, sizeof(rd), 0, &err) == 0 && rd[0] == 0x11 && rd[CS - 1] == 0x11);
		CHECK(img && cow_read(img, rd, sizeof(rd), 8u << 20, &err) == 0 && rd[0] == 0x66);
		cow_close(img);
		CHECK(qcheck(work) == 3);   /* (leaks only) */
	}

	/* 5: two L2 entries naming one data cluster, both discarded */
	{
		struct cow_img *img = NULL;
		struct ut_err err;
		uint64_t l2, e0, e1, x;
		uint8_t b[8], data[CS], want[CS];
		int fd, r;

		snprintf(cmd, sizeof(cmd),
			 "qemu-img create -q -f qcow2 -o cluster_size=%u '%s' 1M && "
			 "qemu-io -c 'write -P 0x33 0 4k' -c 'write -P 0x44 4k 4k' '%s' >/dev/null",
			 CS, base, base);
		CHECK(run(cmd) == 0);
		CHECK(cow_open(base, "qcow2", COW_O_RDONLY, &img, &err) == 0);
		l2 = img ? img->l1[0] & QCOW_OFFSET_MASK : 0;
		cow_close(img);
		img = NULL;
		fd = open(base, O_RDWR);
		CHECK(fd >= 0 && l2 && pread(fd, b, 8, (off_t)l2) == 8);
		e0 = cow_be64(b);
		CHECK(fd >= 0 && pread(fd, b, 8, (off_t)l2 + 8) == 8);
		e1 = cow_be64(b);
		x = e0 & QCOW_OFFSET_MASK;
		CHECK(x && (e1 & QCOW_OFFSET_MASK) && x != (e1 & QCOW_OFFSET_MASK));
		CHECK(fd >= 0 && pread(fd, want, CS, (off_t)x) == CS);
		cow_put64(b, e0);
		CHECK(fd >= 0 && pwrite(fd, b, 8, (off_t)l2 + 8) == 8);
		if (fd >= 0)
			close(fd);
		CHECK(qcheck(base) == 2);
		CHECK(refcount(base, x) == 1);
		ut_err_clear(&err);
		CHECK(cow_open(base, "qcow2", 0, &img, &err) == 0);
		r = img ? cow_discard(img, 2 * CS, 0, false, &err) : -1;
		if (r == 0 && img)
			r = cow_flush(img, &err);
		fprintf(stderr, "5 (two L2 entries, one cluster, discarded): %d %s\n", r, err.msg);
		CHECK(r == -EUCLEAN && strstr(err.msg, base) && strstr(err.msg, "released more often") &&
		      strstr(err.msg, "marked corrupt"));
		cow_close(img);
		CHECK(refcount(base, x) == 1);
		fd = open(base, O_RDONLY);
		CHECK(fd >= 0 && pread(fd, data, CS, (off_t)x) == CS && !memcmp(data, want, CS));
		if (fd >= 0)
			close(fd);
		/* the entries are gone, the cluster and the one entry 1 named
		 * before the damage are leaks */
		snprintf(cmd, sizeof(cmd), "qemu-img check '%s' 2>&1 | grep -q 'Leaked cluster %llu refcount=1 reference=0'",
			 base, (unsigned long long)(x / CS));
		CHECK(run(cmd) == 0);
		CHECK(qcheck(base) == 3);
	}
out:
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	run(cmd);
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
