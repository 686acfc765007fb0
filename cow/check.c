/* cow/check.c — consistency check and repair of one qcow2 layer: every
 * reference (header, L1, L2, data, compressed data, refcount structures,
 * snapshot tables) is counted and compared with the stored refcounts.
 * Repair: leaks (lower refcounts to the reference count, in place) or all
 * (fix COPIED flags, rebuild the refcount structure at the end of the file,
 * clear the dirty and corrupt bits).
 * The header is parsed in check mode (img->check_mode): what qemu-img check
 * opens and a normal open refuses (an L1 table or refcount table over the
 * header or each other, a header length that is not a multiple of 8) is
 * checked and reported as corruption (core_damage), and a repair that
 * cannot be made safely is refused with nothing written. */
#include "cow/qcow2.h"
#include "util/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_MSGS 50

struct ck {
	struct cow_img *img;
	struct cow_check_res *res;
	uint64_t n;            /* clusters in the file */
	uint32_t *refs;
	uint64_t *disk;
	unsigned nmsg;
	bool fix_copied;
	bool copied_fixed;
	bool fix_entries;      /* repair all: entries pointing nowhere read as zero */
	bool entries_fixed;
	bool incomplete;       /* some references could not be counted */
};

/* The offset of refcount block @i when its table entry can be used: set, no
 * reserved bits, cluster-aligned, inside the file (of @n clusters); else 0. */
static uint64_t rt_block(const struct cow_img *img, uint64_t i, uint64_t n)
{
	uint64_t e = img->rt[i], rb = e & QCOW_RT_OFFSET_MASK;

	if (!e || (e & QCOW_RT_RESERVED) || (rb & (img->cluster_size - 1)) ||
	    (rb >> img->cluster_bits) >= n)
		return 0;
	return rb;
}

static void vmsg(struct ck *k, const char *fmt, va_list ap)
{
	char line[512];

	if (k->nmsg++ >= MAX_MSGS) {
		if (k->nmsg == MAX_MSGS + 1)
			ut_buf_addf(&k->res->msgs, "(further messages suppressed)\n");
		return;
	}
	vsnprintf(line, sizeof(line), fmt, ap);
	ut_buf_addf(&k->res->msgs, "%s\n", line);
}

static void msg(struct ck *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msg(struct ck *k, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(k, fmt, ap);
	va_end(ap);
}

/* Report a corruption (one message line) and count it. */
static void corrupt(struct ck *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void corrupt(struct ck *k, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(k, fmt, ap);
	va_end(ap);
	k->res->corruptions++;
}

static void add_ref(struct ck *k, uint64_t off, uint64_t len, const char *what)
{
	uint64_t cb = k->img->cluster_bits;

	if (!len)
		return;
	for (uint64_t c = off >> cb; c <= (off + len - 1) >> cb; c++) {
		if (c >= k->n) {
			corrupt(k, "ERROR %s at offset 0x%llx is beyond the end of the file", what,
				(unsigned long long)off);
			return;
		}
		k->refs[c]++;
	}
}

/* Repair all: the active L2 entry @i of the table in @buf points at no
 * readable data (@why): make it read as zeros (v3: a zero cluster, or all
 * subclusters zero with extended L2; v2, which has no zero clusters:
 * unallocated, reading from the backing file), as QEMU repairs unaligned
 * entries. Reads of it failed before; nothing held a reference to it. */
static void zero_entry(struct ck *k, uint8_t *buf, uint64_t l2off, uint64_t i, const char *why)
{
	struct cow_img *img = k->img;
	uint8_t *p = buf + i * img->l2_esize;
	bool v3 = img->h.version >= 3;

	if (img->extl2) {
		cow_put64(p, 0);
		cow_put64(p + 8, QCOW_SC_ALL_ZERO);
	} else {
		cow_put64(p, v3 ? QCOW_OFLAG_ZERO : 0);
	}
	msg(k, "Repairing L2 table 0x%llx entry %llu (%s): %s", (unsigned long long)l2off,
	    (unsigned long long)i, why, v3 || img->extl2 ? "now a zero cluster" : "now unallocated");
	k->entries_fixed = true;
}

static int walk_l2(struct ck *k, uint64_t l2off, bool active, uint8_t *buf, struct ut_err *err)
{
	struct cow_img *img = k->img;
	uint64_t cs = img->cluster_size;
	bool changed = false;
	int ret;

	ret = cow_pread_full(img, buf, cs, l2off, false, err);
	if (ret < 0)
		return ret;
	for (uint64_t i = 0; i < img->l2_entries; i++) {
		uint64_t e = cow_l2_ent(img, buf, i), bmp = cow_l2_bmp(img, buf, i), host;
		if (active) {
			const char *bad = cow_l2_bmp_problem(img, e, bmp);
			if (bad) {
				corrupt(k, "ERROR L2 table 0x%llx entry %llu: %s (bitmap 0x%016llx)",
					(unsigned long long)l2off, (unsigned long long)i, bad,
					(unsigned long long)bmp);
			}
		}
		if (e & QCOW_OFLAG_COMPRESSED) {
			uint64_t coff = cow_l2_compressed_off(img, e);
			uint64_t ns = cow_l2_compressed_sectors(img, e);
			if (e & QCOW_OFLAG_COPIED) {
				corrupt(k, "ERROR compressed cluster entry 0x%llx has the COPIED flag", (unsigned long long)e);
			}
			if (active && k->fix_entries && (coff >> img->cluster_bits) >= k->n) {
				corrupt(k, "ERROR compressed cluster at offset 0x%llx is beyond the end of the file",
					(unsigned long long)coff);
				zero_entry(k, buf, l2off, i, "compressed data beyond the end of the file");
				changed = true;
				continue;
			}
			add_ref(k, coff & ~511ull, ns * 512, "compressed cluster");
			if (active) {
				k->res->compressed_clusters++;
				k->res->allocated_clusters++;
			}
			continue;
		}
		/* (any entry but a compressed one, allocated or not, as
		 * qemu-img check) */
		if (e & QCOW_L2_RESERVED) {
			corrupt(k, "ERROR L2 table 0x%llx entry %llu has reserved bits set: 0x%016llx",
				(unsigned long long)l2off, (unsigned long long)i, (unsigned long long)e);
			if (active && k->fix_entries) {
				e &= ~QCOW_L2_RESERVED;
				if (!(e & QCOW_OFFSET_MASK))
					e &= ~QCOW_OFLAG_COPIED;   /* no cluster to own */
				cow_put64(buf + i * img->l2_esize, e);
				msg(k, "Repairing L2 table 0x%llx entry %llu: reserved bits cleared",
				    (unsigned long long)l2off, (unsigned long long)i);
				k->entries_fixed = true;
				changed = true;
			}
		}
		host = e & QCOW_OFFSET_MASK;
		if (!host)
			continue;   /* unallocated or a plain zero cluster: not counted as allocated, as qemu-img check */
		if (active)
			k->res->allocated_clusters++;
		if (host & (cs - 1)) {
			corrupt(k, "ERROR data cluster offset 0x%llx (L2 table 0x%llx entry %llu) is not cluster-aligned",
				(unsigned long long)host, (unsigned long long)l2off, (unsigned long long)i);
			if (active && k->fix_entries) {
				zero_entry(k, buf, l2off, i, "data offset not cluster-aligned");
				changed = true;
			} else {
				/* the entry still points into this cluster: not a
				 * leak to free under it (qemu-img check counts it) */
				add_ref(k, host & ~(cs - 1), cs, "data cluster");
			}
			continue;
		}
		if (active && k->fix_entries && (host >> img->cluster_bits) >= k->n) {
			corrupt(k, "ERROR data cluster at offset 0x%llx is beyond the end of the file",
				(unsigned long long)host);
			zero_entry(k, buf, l2off, i, "data beyond the end of the file");
			changed = true;
			continue;
		}
		add_ref(k, host, cs, "data cluster");
	}
	/* COPIED flags are compared after all references are counted (pass 2);
	 * only active tables are repaired here */
	if (changed)
		return cow_pwrite_full(img, buf, cs, l2off, err);
	return 0;
}

static int copied_pass(struct ck *k, uint64_t *l1, uint8_t *buf, struct ut_err *err)
{
	struct cow_img *img = k->img;
	uint64_t cs = img->cluster_size;
	bool l1_changed = false;
	int ret;

	for (uint32_t i = 0; i < img->h.l1_size; i++) {
		uint64_t l2 = l1[i] & QCOW_OFFSET_MASK, c = l2 >> img->cluster_bits;
		bool changed = false;

		if (!l2 || (l2 & (cs - 1)) || c >= k->n)
			continue;
		if (!!(l1[i] & QCOW_OFLAG_COPIED) != (k->refs[c] == 1 && k->disk[c] == 1)) {
			corrupt(k, "ERROR OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%llx refcount=%llu",
				i, (unsigned long long)l1[i], (unsigned long long)k->disk[c]);
			if (k->fix_copied) {
				l1[i] = k->refs[c] == 1 ? (l1[i] | QCOW_OFLAG_COPIED) : (l1[i] & ~QCOW_OFLAG_COPIED);
				l1_changed = true;
				k->res->corruptions_fixed++;
			}
		}
		ret = cow_pread_full(img, buf, cs, l2, false, err);
		if (ret < 0)
			return ret;
		for (uint64_t j = 0; j < img->l2_entries; j++) {
			uint64_t e = cow_l2_ent(img, buf, j), h = e & QCOW_OFFSET_MASK, hc = h >> img->cluster_bits;
			if ((e & QCOW_OFLAG_COMPRESSED) || !h || (h & (cs - 1)) || hc >= k->n)
				continue;
			if (!!(e & QCOW_OFLAG_COPIED) != (k->refs[hc] == 1 && k->disk[hc] == 1)) {
				corrupt(k, "ERROR OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu",
					(unsigned long long)e, (unsigned long long)k->disk[hc]);
				if (k->fix_copied) {
					e = k->refs[hc] == 1 ? (e | QCOW_OFLAG_COPIED) : (e & ~QCOW_OFLAG_COPIED);
					cow_put64(buf + j * img->l2_esize, e);
					changed = true;
					k->res->corruptions_fixed++;
				}
			}
		}
		if (changed) {
			ret = cow_pwrite_full(img, buf, cs, l2, err);
			if (ret < 0)
				return ret;
			k->copied_fixed = true;
		}
	}
	if (l1_changed) {
		uint8_t *raw = malloc((size_t)img->h.l1_size * 8);
		if (!raw)
			return ut_errf(err, -ENOMEM, "out of memory");
		for (uint32_t i = 0; i < img->h.l1_size; i++)
			cow_put64(raw + (size_t)i * 8, l1[i]);
		ret = cow_sync(img, err);
		if (ret == 0)
			ret = cow_pwrite_full(img, raw, (size_t)img->h.l1_size * 8, img->h.l1_off, err);
		free(raw);
		if (ret < 0)
			return ret;
		k->copied_fixed = true;
	}
	return 0;
}

static int walk_l1(struct ck *k, uint64_t l1off, uint32_t l1size, bool active, uint64_t **l1out,
		   uint8_t *buf, struct ut_err *err)
{
	struct cow_img *img = k->img;
	uint64_t cs = img->cluster_size;
	uint8_t *raw;
	uint64_t *l1;
	bool l1_changed = false;
	int ret = 0;

	if ((uint64_t)l1size * 8 > COW_MAX_L1_BYTES) {
		corrupt(k, "ERROR L1 table too large (%u entries)", l1size);
		return 0;
	}
	if (l1size && ((l1off & (cs - 1)) || l1off > img->file_size ||
		       (uint64_t)l1size * 8 > img->file_size - l1off)) {
		corrupt(k, "ERROR L1 table at 0x%llx is misaligned or beyond the end of the file",
			(unsigned long long)l1off);
		return 0;
	}
	raw = malloc((size_t)l1size * 8 + 1);
	l1 = calloc((size_t)l1size + 1, 8);
	if (!raw || !l1) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = cow_pread_full(img, raw, (size_t)l1size * 8, l1off, false, err);
	if (ret < 0)
		goto out;
	add_ref(k, l1off, (uint64_t)l1size * 8, "L1 table");
	for (uint32_t i = 0; i < l1size; i++) {
		uint64_t l2;
		l1[i] = cow_be64(raw + (size_t)i * 8);
		if (l1[i] & QCOW_L1_RESERVED) {
			corrupt(k, "ERROR L1 entry %u has reserved bits set: 0x%016llx", i,
				(unsigned long long)l1[i]);
			if (active && k->fix_entries) {
				l1[i] &= ~QCOW_L1_RESERVED;
				/* COPIED without an offset is not "unallocated" to
				 * QEMU, which would then take the header for the L2
				 * table: no offset, no entry */
				if (!(l1[i] & QCOW_OFFSET_MASK))
					l1[i] = 0;
				cow_put64(raw + (size_t)i * 8, l1[i]);
				msg(k, "Repairing L1 entry %u: reserved bits cleared", i);
				l1_changed = true;
			}
		}
		l2 = l1[i] & QCOW_OFFSET_MASK;
		if (!l2) {
			/* flags without a table: qemu-img check takes cluster
			 * 0 (the header) for its L2 table, and QEMU would write
			 * into it through a COPIED one */
			if (l1[i]) {
				corrupt(k, "ERROR L1 entry %u has no L2 table offset but is not 0: 0x%016llx",
					i, (unsigned long long)l1[i]);
				if (active && k->fix_entries) {
					l1[i] = 0;
					cow_put64(raw + (size_t)i * 8, 0);
					msg(k, "Repairing L1 entry %u: cleared", i);
					l1_changed = true;
				}
			}
			continue;
		}
		if (l2 & (cs - 1)) {
			corrupt(k, "ERROR L2 table offset 0x%llx (L1 index %u) is not cluster-aligned",
				(unsigned long long)l2, i);
			/* keep the cluster it points into referenced, as qemu-img
			 * check does, so that a leak repair does not free it */
			add_ref(k, l2 & ~(cs - 1), cs, "L2 table");
			continue;
		}
		if ((l2 >> img->cluster_bits) >= k->n) {
			corrupt(k, "ERROR L2 table offset 0x%llx (L1 index %u) is beyond the end of the file",
				(unsigned long long)l2, i);
			continue;
		}
		add_ref(k, l2, cs, "L2 table");
		ret = walk_l2(k, l2, active, buf, err);
		if (ret < 0)
			goto out;
	}
	if (l1_changed) {
		ret = cow_pwrite_full(img, raw, (size_t)l1size * 8, l1off, err);
		if (ret < 0)
			goto out;
		k->entries_fixed = true;
	}
	if (l1out) {
		*l1out = l1;
		l1 = NULL;
	}
out:
	free(raw);
	free(l1);
	return ret;
}

static int walk_snapshots(struct ck *k, uint8_t *buf, struct ut_err *err)
{
	struct cow_img *img = k->img;
	uint64_t off = img->h.snap_off, start = off;
	int ret = 0;

	for (uint32_t s = 0; s < img->h.nb_snapshots; s++) {
		uint8_t h[40] = { 0 };
		uint64_t len;

		ret = cow_snapshot_entry(img, s, off, h, &len, err);
		if (ret == -EINVAL) {
			corrupt(k, "ERROR snapshot %u has an invalid extra data size (%u bytes) or extends beyond the end of the file",
				s, cow_be32(h + 36));
			/* the rest of the table cannot be parsed: what this and
			 * the later snapshots reference is unknown, and must not
			 * be taken for leaks */
			k->incomplete = true;
			if (off < img->file_size)
				add_ref(k, start, (off + 40 < img->file_size ? off + 40 : img->file_size) - start,
					"snapshot table");
			return 0;
		}
		if (ret < 0)
			return ret;
		ret = walk_l1(k, cow_be64(h), cow_be32(h + 8), false, NULL, buf, err);
		if (ret < 0)
			return ret;
		off = (off + len + 7) & ~7ull;
	}
	add_ref(k, start, off - start, "snapshot table");
	return 0;
}

/* Persistent dirty bitmaps (header extension 0x23852875, valid while
 * autoclear bit 0 is set): the bitmap directory, each bitmap table and the
 * bitmap data clusters it lists are references like any other metadata;
 * without counting them they would read as leaks and a repair would free
 * them under the bitmaps (qemu-img check counts them too). */
static int walk_bitmaps(struct ck *k, struct ut_err *err)
{
	struct cow_img *img = k->img;
	uint64_t cs = img->cluster_size, dsize, doff, p;
	uint32_t nb;
	uint8_t *dir;
	int ret = 0;

	if (!cow_bitmaps_ext(img, &nb, &dsize, &doff))
		return 0;
	if (!cow_bitmaps_dir_in_file(img, dsize, doff)) {
		corrupt(k, "ERROR bitmap directory (offset 0x%llx, %llu bytes) is invalid",
			(unsigned long long)doff, (unsigned long long)dsize);
		return 0;
	}
	dir = malloc(dsize);
	if (!dir)
		return ut_errf(err, -ENOMEM, "out of memory");
	ret = cow_pread_full(img, dir, dsize, doff, false, err);
	if (ret < 0) {
		free(dir);
		return ret;
	}
	add_ref(k, doff, dsize, "bitmap directory");
	p = 0;
	for (uint32_t b = 0; b < nb && p + 24 <= dsize; b++) {
		uint64_t toff = cow_be64(dir + p), tsize = cow_be32(dir + p + 8);
		uint64_t *tbl;

		p = (p + cow_bitmap_entry_size(dir + p) + 7) & ~7ull;
		if (!tsize)
			continue;
		/* 0x8000000 entries: QEMU's limit (BME_MAX_TABLE_SIZE) */
		if ((toff & (cs - 1)) || tsize > 0x8000000 || toff > img->file_size ||
		    tsize * 8 > img->file_size - toff) {
			corrupt(k, "ERROR bitmap %u: table (offset 0x%llx, %llu entries) is invalid", b,
				(unsigned long long)toff, (unsigned long long)tsize);
			continue;
		}
		tbl = malloc(tsize * 8);
		if (!tbl) {
			free(dir);
			return ut_errf(err, -ENOMEM, "out of memory");
		}
		ret = cow_pread_full(img, tbl, tsize * 8, toff, false, err);
		if (ret < 0) {
			free(tbl);
			free(dir);
			return ret;
		}
		add_ref(k, toff, tsize * 8, "bitmap table");
		for (uint64_t i = 0; i < tsize; i++) {
			uint64_t e = cow_be64((uint8_t *)(tbl + i)), d = e & QCOW_OFFSET_MASK;
			if (!d)
				continue;
			if (d & (cs - 1))
				corrupt(k, "ERROR bitmap %u: data cluster offset 0x%llx is not cluster-aligned",
					b, (unsigned long long)d);
			else
				add_ref(k, d, cs, "bitmap data");
		}
		free(tbl);
	}
	free(dir);
	return ret;
}

/* Write a fresh refcount structure describing k->refs at the end of the file. */
static int rebuild(struct ck *k, struct ut_err *err)
{
	struct cow_img *img = k->img;
	uint64_t cs = img->cluster_size, epb = img->rb_entries, per = cs / 8;
	uint64_t E = k->n, nb = 1, nt = 1, total;
	uint8_t *blk = NULL, *tbl = NULL, hb[12];
	int ret;

	/* the old refcount table and blocks are dropped: not references any more */
	for (uint64_t c = img->h.rt_off >> img->cluster_bits;
	     c < (img->h.rt_off >> img->cluster_bits) + img->h.rt_clusters && c < k->n; c++)
		if (k->refs[c])
			k->refs[c]--;
	for (uint64_t i = 0; i < img->rt_entries; i++) {
		uint64_t rb = rt_block(img, i, k->n), c = rb >> img->cluster_bits;
		if (rb && k->refs[c])
			k->refs[c]--;
	}
	for (int i = 0; i < 100; i++) {
		total = E + nb + nt;
		uint64_t nb2 = (total + epb - 1) / epb, nt2 = (nb2 + per - 1) / per;
		if (nb2 == nb && nt2 == nt)
			break;
		nb = nb2;
		nt = nt2;
	}
	total = E + nb + nt;
	if (nt * cs > COW_MAX_RT_BYTES)
		return ut_errf(err, -EFBIG, "'%s': refcount table too large to rebuild", img->path);
	blk = malloc(cs);
	tbl = calloc(nt, cs);
	if (!blk || !tbl) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (uint64_t b = 0; b < nb; b++) {
		memset(blk, 0, cs);
		for (uint64_t i = 0; i < epb; i++) {
			uint64_t c = b * epb + i, v;
			if (c >= total)
				break;
			v = c < E ? k->refs[c] : 1;
			if (v > img->rb_max)
				v = img->rb_max;
			cow_rc_write_entry(blk, img->h.refcount_order, i, v);
		}
		ret = cow_pwrite_full(img, blk, cs, (E + b) * cs, err);
		if (ret < 0)
			goto out;
		cow_put64(tbl + b * 8, (E + b) * cs);
	}
	ret = cow_pwrite_full(img, tbl, nt * cs, (E + nb) * cs, err);
	if (ret == 0)
		ret = cow_sync(img, err);
	if (ret < 0)
		goto out;
	cow_put64(hb, (E + nb) * cs);
	cow_put32(hb + 8, (uint32_t)nt);
	ret = cow_pwrite_full(img, hb, 12, 48, err);
	if (ret == 0)
		ret = cow_sync(img, err);
out:
	free(blk);
	free(tbl);
	return ret;
}

/* The damage cow_hdr_parse let through in check mode (img->check_flags):
 * each is a corruption. Returns whether @repair may go on: an L1 table
 * over the header or the refcount table cannot be repaired (which of the
 * two holds the right entries is unknown, and QEMU's repair writes into
 * the header); a refcount table over the header only by a new refcount
 * structure (--repair all); a header length that is not a multiple of 8
 * by rewriting the header (--repair all, check_once). */
static bool core_damage(struct ck *k, enum cow_repair repair)
{
	struct cow_img *img = k->img;
	unsigned f = img->check_flags;

	if (f & COW_CK_HDR_LEN)
		corrupt(k, "ERROR header length %u is not a multiple of 8", img->h.hdr_len);
	if (f & COW_CK_L1_HDR)
		corrupt(k, "ERROR L1 table (offset 0x0) overlaps the header");
	if (f & COW_CK_RT_HDR)
		corrupt(k, "ERROR refcount table (offset 0x0) overlaps the header");
	if (f & COW_CK_L1_RT)
		corrupt(k, "ERROR L1 table (offset 0x%llx, %u entries) overlaps the refcount table (offset 0x%llx, %u clusters)",
			(unsigned long long)img->h.l1_off, img->h.l1_size,
			(unsigned long long)img->h.rt_off, img->h.rt_clusters);
	if (repair == COW_REPAIR_NONE)
		return true;
	if (f & (COW_CK_L1_HDR | COW_CK_L1_RT)) {
		msg(k, "cowvm cannot repair an L1 table that overlaps the %s: nothing was changed",
		    (f & COW_CK_L1_HDR) ? "header" : "refcount table");
		return false;
	}
	if ((f & COW_CK_HDR_LEN) && repair != COW_REPAIR_ALL)
		msg(k, "The header length is repaired by --repair all only (the header is rewritten)");
	if ((f & COW_CK_RT_HDR) && repair != COW_REPAIR_ALL) {
		msg(k, "The refcount table overlaps the header: only --repair all (a new refcount structure) can repair it; nothing was changed");
		return false;
	}
	return true;
}

static int check_once(const char *path, enum cow_repair repair, struct cow_check_res *res,
		      bool *need_rebuild, bool *refused, struct ut_err *err)
{
	struct ck k;
	struct cow_img *img = calloc(1, sizeof(*img));
	uint8_t *hbuf = NULL, *buf = NULL;
	uint64_t *l1 = NULL;
	struct stat st;
	size_t hlen;
	int ret;

	memset(&k, 0, sizeof(k));
	k.res = res;
	k.img = img;
	if (!img)
		return ut_errf(err, -ENOMEM, "out of memory");
	img->path = strdup(path);
	img->ro = repair == COW_REPAIR_NONE;
	img->fd = ut_open_image(path, (img->ro ? O_RDONLY : O_RDWR) | O_CLOEXEC, 0, err);
	if (img->fd < 0) {
		ret = img->fd;
		goto out;
	}
	if (fstat(img->fd, &st) < 0) {
		ret = ut_errf_sys(err, -errno, "unable to open '%s'", path);
		goto out;
	}
	img->fmt = COW_FMT_QCOW2;
	img->check_mode = true;
	img->file_size = cow_fd_size(img->fd, &st);
	hlen = img->file_size < (2u << 20) ? (size_t)img->file_size : (2u << 20);
	hbuf = malloc(hlen + 1);
	if (!hbuf) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = cow_pread_full(img, hbuf, hlen, 0, false, err);
	if (ret == 0)
		ret = cow_hdr_parse(img, hbuf, hlen, img->file_size, err);
	if (ret < 0)
		goto out;
	cow_geom_init(img);
	ret = cow_rc_open(img, err);
	if (ret < 0)
		goto out;
	if (!core_damage(&k, repair)) {
		/* a check only: nothing is written */
		*refused = true;
		repair = COW_REPAIR_NONE;
		img->ro = true;
	}
	if ((img->check_flags & COW_CK_HDR_LEN) && repair == COW_REPAIR_ALL) {
		/* the header as QEMU reads it, rewritten with a length of
		 * 112 (what cowvm and QEMU write): the same fields,
		 * extensions and backing file name */
		ret = cow_hdr_write(img, err);
		if (ret < 0)
			goto out;
		msg(&k, "Repairing the header: length now %u", img->h.hdr_len);
	}
	if (img->check_flags & COW_CK_RT_HDR)
		*need_rebuild = true;
	k.n = (img->file_size + img->cluster_size - 1) >> img->cluster_bits;
	k.refs = calloc(k.n + 1, sizeof(*k.refs));
	k.disk = calloc(k.n + 1, sizeof(*k.disk));
	buf = malloc(img->cluster_size);
	if (!k.refs || !k.disk || !buf) {
		ret = ut_errf(err, -ENOMEM, "'%s': out of memory for the check", path);
		goto out;
	}
	res->total_clusters = (img->h.size + img->cluster_size - 1) >> img->cluster_bits;
	/* on-disk refcounts */
	for (uint64_t i = 0; i < img->rt_entries; i++) {
		uint64_t e = img->rt[i], rb = rt_block(img, i, k.n);
		if (!e)
			continue;
		if (!rb) {
			corrupt(&k, "ERROR refcount table entry %llu (0x%llx) %s", (unsigned long long)i,
				(unsigned long long)e,
				(e & QCOW_RT_RESERVED) ? "has reserved bits set" :
				(e & (img->cluster_size - 1)) ? "is not cluster-aligned" :
				"points beyond the end of the file");
			*need_rebuild = true;
			continue;
		}
		add_ref(&k, rb, img->cluster_size, "refcount block");
		ret = cow_pread_full(img, buf, img->cluster_size, rb, false, err);
		if (ret < 0)
			goto out;
		for (uint64_t j = 0; j < img->rb_entries; j++) {
			uint64_t c = i * img->rb_entries + j;
			if (c >= k.n)
				break;
			k.disk[c] = cow_rc_read_entry(buf, img->h.refcount_order, j);
		}
	}
	add_ref(&k, 0, img->cluster_size, "header");
	add_ref(&k, img->h.rt_off, (uint64_t)img->h.rt_clusters * img->cluster_size, "refcount table");
	k.fix_entries = repair == COW_REPAIR_ALL;
	ret = walk_l1(&k, img->h.l1_off, img->h.l1_size, true, &l1, buf, err);
	if (ret < 0)
		goto out;
	ret = walk_bitmaps(&k, err);
	if (ret < 0)
		goto out;
	if (img->h.nb_snapshots) {
		ret = walk_snapshots(&k, buf, err);
		if (ret < 0)
			goto out;
	} else if ((img->h.snap_off & (img->cluster_size - 1)) || img->h.snap_off > INT64_MAX) {
		/* no snapshots, but an offset QEMU refuses to open the image with */
		corrupt(&k, "ERROR snapshot table offset 0x%llx is invalid",
			(unsigned long long)img->h.snap_off);
		if (repair == COW_REPAIR_ALL) {
			uint8_t z[8] = { 0 };
			ret = cow_pwrite_full(img, z, 8, 64, err);
			if (ret < 0)
				goto out;
			img->h.snap_off = 0;
			k.entries_fixed = true;
			msg(&k, "Repairing the snapshot table offset: cleared (there are no snapshots)");
		}
	}
	for (uint64_t c = 0; c < k.n; c++) {
		if (k.refs[c] > img->rb_max) {
			corrupt(&k, "ERROR cluster %llu has %u references, more than %u-bit refcounts can hold",
				(unsigned long long)c, k.refs[c], img->rb_bits);
		} else if (k.disk[c] < k.refs[c]) {
			corrupt(&k, "ERROR cluster %llu refcount=%llu reference=%u", (unsigned long long)c,
				(unsigned long long)k.disk[c], k.refs[c]);
			*need_rebuild = true;
		} else if (k.disk[c] > k.refs[c]) {
			msg(&k, "Leaked cluster %llu refcount=%llu reference=%u", (unsigned long long)c,
			    (unsigned long long)k.disk[c], k.refs[c]);
			res->leaks++;
		}
		if (k.refs[c] > 1)
			res->shared_clusters++;
		if (k.refs[c])
			res->image_end_offset = (c + 1) << img->cluster_bits;
	}
	/* a refcount block must be referenced exactly once (by the refcount
	 * table): one that is also data or other metadata cannot be updated
	 * in place without overwriting that (as qemu-img check) */
	for (uint64_t i = 0; i < img->rt_entries; i++) {
		uint64_t rb = rt_block(img, i, k.n), c = rb >> img->cluster_bits;
		if (!rb || k.refs[c] == 1)
			continue;
		corrupt(&k, "ERROR refcount block %llu at offset 0x%llx is referenced %u times (it overlaps other data or metadata)",
			(unsigned long long)i, (unsigned long long)rb, k.refs[c]);
		*need_rebuild = true;
	}
	if (l1) {
		/* repair leaks fixes COPIED flags only when nothing else is
		 * wrong (no corruption, no leak left: the refcounts are
		 * right), as qemu-img check -r leaks */
		k.fix_copied = !k.incomplete &&
			       ((repair == COW_REPAIR_ALL && !*need_rebuild) ||
				(repair == COW_REPAIR_LEAKS && !res->corruptions && !res->leaks));
		ret = copied_pass(&k, l1, buf, err);
		if (ret < 0)
			goto out;
	}
	if (repair != COW_REPAIR_NONE && k.incomplete && (*need_rebuild || res->leaks)) {
		msg(&k, "Not all references could be counted (damaged snapshot table): refcounts left unrepaired");
	} else if (repair == COW_REPAIR_ALL && (*need_rebuild || res->leaks)) {
		ret = rebuild(&k, err);
		if (ret < 0)
			goto out;
		*need_rebuild = true;
	} else if (repair == COW_REPAIR_LEAKS && res->leaks) {
		/* lower leaked refcounts in place */
		for (uint64_t i = 0; i < img->rt_entries; i++) {
			uint64_t rb = rt_block(img, i, k.n);
			bool changed = false;
			/* never write into a block that is also something else */
			if (!rb || k.refs[rb >> img->cluster_bits] != 1)
				continue;
			ret = cow_pread_full(img, buf, img->cluster_size, rb, false, err);
			if (ret < 0)
				goto out;
			for (uint64_t j = 0; j < img->rb_entries; j++) {
				uint64_t c = i * img->rb_entries + j;
				if (c >= k.n)
					break;
				if (k.disk[c] > k.refs[c]) {
					cow_rc_write_entry(buf, img->h.refcount_order, j, k.refs[c]);
					changed = true;
					res->leaks_fixed++;
				}
			}
			if (changed) {
				ret = cow_pwrite_full(img, buf, img->cluster_size, rb, err);
				if (ret < 0)
					goto out;
			}
		}
		ret = cow_sync(img, err);
		if (ret < 0)
			goto out;
	}
	if (k.copied_fixed || k.entries_fixed)
		ret = cow_sync(img, err);
out:
	free(l1);
	free(buf);
	free(hbuf);
	free(k.refs);
	free(k.disk);
	cow_img_free(img);
	return ret;
}

/* After a repair that left no corruption: clear the dirty and corrupt bits
 * (v3), as qemu-img check -r leaks|all does. Never while corruptions remain:
 * the corrupt bit is what keeps writers off a damaged image. */
static int clear_header_flags(const char *path, struct ut_err *err)
{
	uint8_t b[8];
	uint64_t incompat;
	int fd = ut_open_image(path, O_RDWR | O_CLOEXEC, 0, err), ret = 0;

	if (fd < 0)
		return fd;
	if (pread(fd, b, 4, 4) != 4 || cow_be32(b) != 3)
		goto out;
	if (pread(fd, b, 8, 72) != 8) {
		ret = ut_errf_sys(err, -EIO, "'%s': unable to read the header", path);
		goto out;
	}
	incompat = cow_be64(b);
	if (!(incompat & (QCOW_INCOMPAT_DIRTY | QCOW_INCOMPAT_CORRUPT)))
		goto out;
	cow_put64(b, incompat & ~(QCOW_INCOMPAT_DIRTY | QCOW_INCOMPAT_CORRUPT));
	if (fdatasync(fd) < 0 || ut_pwrite_all(fd, b, 8, 72) < 0 || fdatasync(fd) < 0)
		ret = ut_errf_sys(err, -errno, "'%s': unable to update the header", path);
out:
	close(fd);
	return ret;
}

int cow_check(const char *path, enum cow_repair repair, struct cow_check_res *res,
	      struct ut_err *err)
{
	struct cow_check_res first;
	bool rebuilt = false, refused = false;
	int ret;

	memset(res, 0, sizeof(*res));
	ret = check_once(path, repair, res, &rebuilt, &refused, err);
	if (ret < 0 || repair == COW_REPAIR_NONE || refused)
		return ret;
	if ((rebuilt && repair == COW_REPAIR_ALL) || (repair == COW_REPAIR_LEAKS && res->leaks)) {
		/* refcounts are right now; a second pass fixes the COPIED flags */
		struct cow_check_res again;
		bool r2 = false;
		memset(&again, 0, sizeof(again));
		ret = check_once(path, repair, &again, &r2, &refused, err);
		ut_buf_release(&again.msgs);
		if (ret < 0)
			return ret;
	}
	/* report what is left after the repair */
	first = *res;
	memset(res, 0, sizeof(*res));
	rebuilt = false;
	ret = check_once(path, COW_REPAIR_NONE, res, &rebuilt, &refused, err);
	ut_buf_release(&res->msgs);
	res->msgs = first.msgs;
	if (first.corruptions > res->corruptions)
		res->corruptions_fixed = first.corruptions - res->corruptions;
	if (first.leaks > res->leaks)
		res->leaks_fixed = first.leaks - res->leaks;
	if (ret == 0 && !res->corruptions)
		ret = clear_header_flags(path, err);
	return ret;
}
