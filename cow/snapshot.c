/* cow/snapshot.c — internal snapshots: create, apply (revert to) and
 * delete, as `qemu-img snapshot -c / -a / -d` (QEMU's qcow2-snapshot.c
 * scheme, I16).
 *
 * A snapshot is an entry of the snapshot table (header fields
 * nb_snapshots, snapshots_offset) naming a copy of an L1 table. It holds
 * one reference to each L2 table and each data cluster that L1 table
 * reaches, so a cluster the active L1 shares with it has refcount > 1 and
 * its active entry lacks COPIED (I16); the active side then copies before
 * changing anything (l2_unshare, write.c's copy-on-write).
 *
 * Crash safety. Each operation changes refcounts of many clusters and the
 * COPIED flags of the active tables, which live in other clusters: between
 * the two writes a cut leaves a flag that disagrees with its refcount,
 * which `qemu-img check` reports as an error (QEMU's own snapshot code has
 * the same windows). Here the image carries the dirty bit (incompatible
 * bit 0: "refcounts may be inconsistent") from before the first such
 * change until everything is durable, so QEMU and cowvm rebuild refcounts
 * and flags from the references at the next writable open (cow_check,
 * COW_REPAIR_ALL) and nobody writes through a stale COPIED flag. What a
 * snapshot and the active image read switches with one sector write of the
 * header each:
 *
 *   create: the L1 copy written and every reference it adds counted
 *           (increments, then COPIED cleared: rc blocks before L2 before L1),
 *           a new table with the entry added written to new clusters,
 *           then the header's nb_snapshots and snapshots_offset (12 bytes,
 *           one sector) switch to it; the old table's clusters released.
 *   apply:  the snapshot's L1 copied into a new L1 table whose references
 *           are counted first; then the header's size, l1_size and
 *           l1_table_offset (bytes 24..47, one sector) switch the active
 *           image to it; then the old active L1's references released and
 *           the COPIED flags set where a refcount came back to 1.
 *   delete: the table without the entry written to new clusters and the
 *           header switched to it; then the snapshot's references and its
 *           L1 table released (freed clusters punched, as QEMU passes a
 *           snapshot's discards through), COPIED set where a refcount came
 *           back to 1.
 *
 * A cut before the header switch leaves the old state plus leaks, after it
 * the new state plus leaks; the dirty bit makes the next writable open
 * repair both. Before anything is written every table the operation walks
 * is read and checked (aligned offsets inside the file, no refcount of 0
 * under a reference, no refcount overflow), so bad input is refused with
 * nothing changed.
 *
 * The states of the image (dirty bit), with the function of each step:
 *
 *   CLEAN --set_dirty(on)--> DIRTY --walk_l1 / fix_copied / tab_write /
 *   header switch--> DIRTY --set_dirty(off) after cow_flush--> CLEAN
 *   DIRTY --failure or crash--> DIRTY on disk --next writable open
 *   (cow_qcow2_open: cow_check COW_REPAIR_ALL)--> CLEAN
 */
#include "cow/qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SN_MAX        65536u           /* QEMU's QCOW_MAX_SNAPSHOTS */
#define SN_TABLE_MAX  (64ull << 20)    /* QEMU's QCOW_MAX_SNAPSHOTS_SIZE */
#define SN_NAME_MAX   255u             /* QEMU's QEMUSnapshotInfo.name (256 with NUL) */
#define SN_EXTRA      24u              /* vm_state_size_large, disk_size, icount */

/* The snapshot table as on disk, each entry at an 8-byte aligned start. */
struct sn_tab {
	uint8_t *buf;
	uint64_t len;                  /* bytes, the last entry padded to 8 */
	uint32_t nb;
	uint64_t *pos;                 /* entry i at buf + pos[i]; pos[nb] = len */
};

static void tab_free(struct sn_tab *t)
{
	free(t->buf);
	free(t->pos);
	memset(t, 0, sizeof(*t));
}

/* The table of @img, every entry checked by cow_snapshot_entry. */
static int tab_load(struct cow_img *img, struct sn_tab *t, struct ut_err *err)
{
	uint64_t off = img->h.snap_off, start = off, len;
	uint8_t h[40];
	int ret = 0;

	memset(t, 0, sizeof(*t));
	t->nb = img->h.nb_snapshots;
	if (t->nb > SN_MAX)
		return ut_errf(err, -EINVAL, "'%s': too many snapshots (%u)", img->path, t->nb);
	t->pos = calloc((size_t)t->nb + 1, sizeof(*t->pos));
	if (!t->pos)
		return ut_errf(err, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < t->nb; i++) {
		ret = cow_snapshot_entry(img, i, off, h, &len, err);
		if (ret < 0)
			goto out;
		t->pos[i] = off - start;
		off = (off + len + 7) & ~7ull;
	}
	t->len = off - start;
	t->pos[t->nb] = t->len;
	if (t->len > SN_TABLE_MAX) {
		ret = ut_errf(err, -EINVAL, "'%s': the snapshot table is too large (%llu bytes)", img->path,
			      (unsigned long long)t->len);
		goto out;
	}
	t->buf = malloc(t->len + 1);
	if (!t->buf) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	/* (the last entry's padding may lie past the end of the file) */
	ret = cow_pread_full(img, t->buf, t->len, start, true, err);
out:
	if (ret < 0)
		tab_free(t);
	return ret;
}

static const uint8_t *ent(const struct sn_tab *t, uint32_t i) { return t->buf + t->pos[i]; }
static uint32_t ent_extra(const struct sn_tab *t, uint32_t i) { return cow_be32(ent(t, i) + 36); }

static bool str_is(const uint8_t *p, size_t n, const char *s)
{
	return strlen(s) == n && !memcmp(p, s, n);
}

static bool id_is(const struct sn_tab *t, uint32_t i, const char *s)
{
	return str_is(ent(t, i) + 40 + ent_extra(t, i), cow_be16(ent(t, i) + 12), s);
}

static bool name_is(const struct sn_tab *t, uint32_t i, const char *s)
{
	const uint8_t *e = ent(t, i);
	return str_is(e + 40 + ent_extra(t, i) + cow_be16(e + 12), cow_be16(e + 14), s);
}

/* As QEMU's find_snapshot_by_id_or_name (qemu-img snapshot -a): an ID
 * first, then a name; with @name_only as bdrv_snapshot_find (qemu-img
 * snapshot -d): the first snapshot of that name. */
static int tab_find(const struct sn_tab *t, const char *s, bool name_only)
{
	for (uint32_t i = 0; !name_only && i < t->nb; i++)
		if (id_is(t, i, s))
			return (int)i;
	for (uint32_t i = 0; i < t->nb; i++)
		if (name_is(t, i, s))
			return (int)i;
	return -1;
}

static int writable(struct cow_img *img, struct ut_err *err)
{
	if (img->fmt != COW_FMT_QCOW2)
		return ut_errf(err, -ENOTSUP, "'%s': a raw image has no snapshots", img->path);
	if (img->ro || img->hdr_only || img->keep_bitmaps)
		return ut_errf(err, -EBADF, "'%s': image not opened for writing", img->path);
	if (img->h.version < 3)
		/* version 2 has no dirty bit to cover the steps (see above) */
		return ut_errf(err, -ENOTSUP, "'%s': internal snapshots of version 2 (compat=0.10) images are not supported; 'qemu-img amend -o compat=1.1' upgrades it",
			       img->path);
	return cow_flush(img, err);
}

/* The dirty bit on (synced) or, after everything is durable, off. */
static int set_dirty(struct cow_img *img, bool on, struct ut_err *err)
{
	uint64_t inc = on ? img->h.incompat | QCOW_INCOMPAT_DIRTY : img->h.incompat & ~QCOW_INCOMPAT_DIRTY;
	uint8_t b[8];
	int ret = on ? 0 : cow_flush(img, err);

	if (ret < 0)
		return ret;
	cow_put64(b, inc);
	ret = cow_pwrite_full(img, b, 8, 72, err);
	if (ret == 0)
		ret = cow_sync(img, err);
	if (ret == 0)
		img->h.incompat = inc;
	return ret;
}

/* ---- counting the references of an L1 table ---- */
enum ref_op { REF_CHECK_INC, REF_CHECK_DEC, REF_INC, REF_DEC };

struct walk {
	struct cow_img *img;
	enum ref_op op;
	uint8_t *buf;                  /* a cluster */
	uint64_t pa, pb;               /* the run of freed clusters to punch */
};

static void punch_run(struct walk *w)
{
	struct cow_img *img = w->img;

	if (w->pa < w->pb && !img->no_punch &&
	    fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(w->pa << img->cluster_bits),
		      (off_t)((w->pb - w->pa) << img->cluster_bits)) < 0 &&
	    (errno == EOPNOTSUPP || errno == ENOSYS))
		img->no_punch = true;
	w->pa = w->pb = 0;
}

/* The clusters of [@off, +@len) (@what, for messages) gain or lose one
 * reference, or are checked for that (w->op). *@freed (may be NULL): the
 * last one's refcount reached 0. */
static int ref_range(struct walk *w, uint64_t off, uint64_t len, const char *what, bool *freed,
		     struct ut_err *err)
{
	struct cow_img *img = w->img;
	uint64_t cb = img->cluster_bits, ncl = (img->file_size + img->cluster_size - 1) >> cb, v;
	int ret;

	if (freed)
		*freed = false;
	for (uint64_t c = off >> cb; len && c <= (off + len - 1) >> cb; c++) {
		if (c >= ncl)
			return ut_errf(err, -EINVAL, "'%s': %s at offset 0x%llx is beyond the end of the file",
				       img->path, what, (unsigned long long)off);
		switch (w->op) {
		case REF_CHECK_INC:
		case REF_CHECK_DEC:
			ret = cow_rc_get(img, c, &v, err);
			if (ret < 0)
				return ret;
			if (!v)
				return ut_errf(err, -EUCLEAN, "'%s': %s at offset 0x%llx has refcount 0 (the image is damaged: see 'cowvm image check')",
					       img->path, what, (unsigned long long)(c << cb));
			if (w->op == REF_CHECK_INC && v >= img->rb_max)
				return ut_errf(err, -ERANGE, "'%s': %s at offset 0x%llx cannot take another reference (%u-bit refcounts)",
					       img->path, what, (unsigned long long)(c << cb), img->rb_bits);
			break;
		case REF_INC:
			ret = cow_rc_add(img, c, 1, err);
			if (ret < 0)
				return ret;
			break;
		case REF_DEC:
			ret = cow_rc_add(img, c, -1, err);
			if (ret == 0)
				ret = cow_rc_get(img, c, &v, err);
			if (ret < 0)
				return ret;
			if (v)
				break;
			if (freed)
				*freed = true;
			if (c < img->free_hint)
				img->free_hint = c;
			if (img->comp_off && (img->comp_off >> cb) == c)
				img->comp_off = 0;
			if (c != w->pb) {
				punch_run(w);
				w->pa = c;
			}
			w->pb = c + 1;
			break;
		}
	}
	return 0;
}

/* Every L2 table and data cluster L1 table @l1 (@n entries) reaches,
 * through w->op. An L2 table is read from the cache when it is there. */
static int walk_l1(struct walk *w, const uint64_t *l1, uint64_t n, struct ut_err *err)
{
	struct cow_img *img = w->img;
	uint64_t cs = img->cluster_size;
	int ret;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t l2 = l1[i] & QCOW_OFFSET_MASK;
		struct cow_cent *c;
		bool freed;

		if (!l2)
			continue;
		if ((l2 & (cs - 1)) || l2 >= img->file_size || img->file_size - l2 < cs)
			return ut_errf(err, -EINVAL, "'%s': L2 table offset 0x%llx (L1 entry %llu) is invalid",
				       img->path, (unsigned long long)l2, (unsigned long long)i);
		c = cow_cache_find(&img->l2c, l2);
		if (c)
			memcpy(w->buf, c->buf, cs);
		else if ((ret = cow_pread_full(img, w->buf, cs, l2, false, err)) < 0)
			return ret;
		ret = ref_range(w, l2, cs, "an L2 table", &freed, err);
		if (ret < 0)
			return ret;
		/* a table freed here is no one's: not kept in the cache, where
		 * a later allocation of its cluster would find it (I8) */
		if (freed && (c = cow_cache_find(&img->l2c, l2)) && !c->dirty)
			cow_cache_remove(&img->l2c, c);
		for (uint64_t j = 0; j < img->l2_entries; j++) {
			uint64_t e = cow_l2_ent(img, w->buf, j), h = e & QCOW_OFFSET_MASK;

			if (e & QCOW_OFLAG_COMPRESSED) {
				ret = ref_range(w, cow_l2_compressed_off(img, e) & ~511ull,
						cow_l2_compressed_sectors(img, e) * 512, "a compressed cluster", NULL, err);
			} else if (h) {
				if (h & (cs - 1))
					return ut_errf(err, -EINVAL, "'%s': data cluster offset 0x%llx (L2 table 0x%llx entry %llu) is not cluster-aligned",
						       img->path, (unsigned long long)h, (unsigned long long)l2,
						       (unsigned long long)j);
				ret = ref_range(w, h, cs, "a data cluster", NULL, err);
			}
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* The COPIED flags of the active L1 and L2 tables as the refcounts now
 * say (I16): set exactly where a cluster's refcount is 1. */
static int fix_copied(struct cow_img *img, struct ut_err *err)
{
	int ret;

	for (uint64_t i = 0; i < img->h.l1_size; i++) {
		uint64_t l2 = img->l1[i] & QCOW_OFFSET_MASK, v, ne;
		struct cow_cent *t;

		if (!l2)
			continue;
		ret = cow_rc_get(img, l2 >> img->cluster_bits, &v, err);
		if (ret < 0)
			return ret;
		ne = v == 1 ? img->l1[i] | QCOW_OFLAG_COPIED : img->l1[i] & ~QCOW_OFLAG_COPIED;
		if (ne != img->l1[i]) {
			img->l1[i] = ne;
			img->l1_dirty[i / 64] = 1;
			img->any_l1_dirty = true;
		}
		ret = cow_l2_get(img, i, false, &t, err);
		if (ret < 0)
			return ret;
		for (uint64_t j = 0; t && j < img->l2_entries; j++) {
			uint8_t *p = t->buf + j * img->l2_esize;
			uint64_t e = cow_be64(p), h = e & QCOW_OFFSET_MASK;

			if ((e & QCOW_OFLAG_COMPRESSED) || !h)
				continue;   /* (compressed entries never carry COPIED) */
			ret = cow_rc_get(img, h >> img->cluster_bits, &v, err);
			if (ret < 0)
				return ret;
			ne = v == 1 ? e | QCOW_OFLAG_COPIED : e & ~QCOW_OFLAG_COPIED;
			if (ne != e) {
				cow_put64(p, ne);
				cow_cache_mark_dirty(&img->l2c, t);
			}
		}
	}
	return 0;
}

/* The table @t without entry @skip (UINT32_MAX: none) and with the @alen
 * bytes of @add at its end (NULL: none) written to new clusters, then the
 * header switched to it (one 12-byte write after an fdatasync that makes
 * the table and the refcounts of everything it names durable), then the
 * old table's clusters released. */
static int tab_write(struct cow_img *img, const struct sn_tab *t, uint32_t skip, const uint8_t *add,
		     uint64_t alen, struct walk *w, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, len = 0, off = 0, n = 0, p = 0;
	uint32_t nb = t->nb - (skip < t->nb) + !!add;
	uint8_t *buf = NULL, hb[12];
	int ret = 0;

	for (uint32_t i = 0; i < t->nb; i++)
		if (i != skip)
			len += t->pos[i + 1] - t->pos[i];
	len += alen;
	if (nb) {
		n = (len + cs - 1) / cs;
		buf = calloc(n, cs);
		if (!buf)
			return ut_errf(err, -ENOMEM, "out of memory");
		for (uint32_t i = 0; i < t->nb; i++)
			if (i != skip) {
				memcpy(buf + p, ent(t, i), t->pos[i + 1] - t->pos[i]);
				p += t->pos[i + 1] - t->pos[i];
			}
		if (add)
			memcpy(buf + p, add, alen);
		ret = cow_alloc_contig(img, n, &off, err);
		if (ret < 0)
			goto out;
		ret = cow_pwrite_full(img, buf, n * cs, off, err);
		if (ret < 0)
			goto out;
	}
	ret = cow_flush(img, err);
	if (ret < 0)
		goto out;
	cow_put32(hb, nb);
	cow_put64(hb + 4, off);
	ret = cow_pwrite_full(img, hb, sizeof(hb), 60, err);
	if (ret == 0)
		ret = cow_sync(img, err);
	if (ret < 0)
		goto out;
	w->op = REF_DEC;
	ret = ref_range(w, img->h.snap_off, img->h.nb_snapshots ? t->len : 0, "the old snapshot table", NULL, err);
	img->h.nb_snapshots = nb;
	img->h.snap_off = off;
	if (ret == 0)
		ret = cow_meta_ranges_load(img, err);
out:
	free(buf);
	return ret;
}

/* The L1 table of entry @i of @t, checked: *@l1 (host order, *@n entries;
 * free it), the table's offset *@off. */
static int sn_l1_read(struct cow_img *img, const struct sn_tab *t, uint32_t i, uint64_t **l1,
		      uint64_t *n, uint64_t *off, struct ut_err *err)
{
	*n = cow_be32(ent(t, i) + 8);
	*off = cow_be64(ent(t, i));
	return cow_snap_l1_load(img, i, *off, (uint32_t)*n, l1, err);
}

/* A new L1 table holding the @n entries of @l1, zero-padded to whole
 * clusters (at least @min), written to newly allocated clusters at *@off
 * (0 when it takes none). */
static int l1_write_new(struct cow_img *img, const uint64_t *l1, uint64_t n, uint64_t min,
			uint64_t *off, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, nc = (n * 8 + cs - 1) / cs;
	uint8_t *b;
	int ret;

	*off = 0;
	if (nc < min)
		nc = min;
	if (!nc)
		return 0;
	b = calloc(nc, cs);
	if (!b)
		return ut_errf(err, -ENOMEM, "out of memory");
	for (uint64_t i = 0; i < n; i++)
		cow_put64(b + i * 8, l1[i]);
	ret = cow_alloc_contig(img, nc, off, err);
	if (ret == 0)
		ret = cow_pwrite_full(img, b, nc * cs, *off, err);
	free(b);
	return ret;
}

static int walk_init(struct walk *w, struct cow_img *img, struct ut_err *err)
{
	memset(w, 0, sizeof(*w));
	w->img = img;
	w->buf = malloc(img->cluster_size);
	return w->buf ? 0 : ut_errf(err, -ENOMEM, "out of memory");
}

int cow_snapshot_create(struct cow_img *img, const char *name, struct ut_err *err)
{
	uint64_t l1off = 0, max_id = 0, elen;
	size_t nml = strlen(name), idl;
	struct sn_tab t = { 0 };
	struct walk w = { 0 };
	uint8_t *e = NULL;
	struct timespec ts;
	char id[24];
	int ret;

	ret = writable(img, err);
	if (ret < 0)
		return ret;
	if (nml > SN_NAME_MAX)
		return ut_errf(err, -ENAMETOOLONG, "'%s': snapshot name too long (%zu bytes; at most %u)", img->path,
			       nml, SN_NAME_MAX);
	ret = walk_init(&w, img, err);
	if (ret == 0)
		ret = tab_load(img, &t, err);
	if (ret < 0)
		goto out;
	if (t.nb >= SN_MAX) {
		ret = ut_errf(err, -EFBIG, "'%s': too many snapshots (%u)", img->path, t.nb);
		goto out;
	}
	/* as QEMU's find_new_snapshot_id: one more than the largest numeric ID */
	for (uint32_t i = 0; i < t.nb; i++) {
		char s[24] = "";
		uint16_t l = cow_be16(ent(&t, i) + 12);
		uint64_t v;
		if (l < sizeof(s)) {
			memcpy(s, ent(&t, i) + 40 + ent_extra(&t, i), l);
			s[l] = 0;
		}
		v = strtoull(s, NULL, 10);
		if (v > max_id)
			max_id = v;
	}
	idl = (size_t)snprintf(id, sizeof(id), "%llu", (unsigned long long)max_id + 1);
	elen = (40 + SN_EXTRA + idl + nml + 7) & ~7ull;
	if (t.len + elen > SN_TABLE_MAX) {
		ret = ut_errf(err, -EFBIG, "'%s': the snapshot table would be too large", img->path);
		goto out;
	}
	/* nothing written before every reference is known to count */
	w.op = REF_CHECK_INC;
	ret = walk_l1(&w, img->l1, img->h.l1_size, err);
	if (ret < 0)
		goto out;
	ret = set_dirty(img, true, err);
	if (ret < 0)
		goto out;
	/* the L1 copy (flags as they are: a snapshot's COPIED flags mean
	 * nothing, its apply sets the active ones) */
	ret = l1_write_new(img, img->l1, img->h.l1_size, 0, &l1off, err);
	if (ret < 0)
		goto out;
	w.op = REF_INC;
	ret = walk_l1(&w, img->l1, img->h.l1_size, err);
	if (ret == 0)
		ret = fix_copied(img, err);
	if (ret < 0)
		goto out;
	e = calloc(1, elen);
	if (!e) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	cow_put64(e, l1off);
	cow_put32(e + 8, img->h.l1_size);
	cow_put16(e + 12, (uint16_t)idl);
	cow_put16(e + 14, (uint16_t)nml);
	cow_put32(e + 16, (uint32_t)ts.tv_sec);
	/* (microseconds, as qemu-img records the time) */
	cow_put32(e + 20, (uint32_t)(ts.tv_nsec / 1000 * 1000));
	/* vm_clock_nsec, vm_state_size: 0 (no VM state); extra data:
	 * vm_state_size_large 0, disk_size, icount 0 as qemu-img writes it */
	cow_put32(e + 36, SN_EXTRA);
	cow_put64(e + 48, img->size);
	memcpy(e + 40 + SN_EXTRA, id, idl);
	memcpy(e + 40 + SN_EXTRA + idl, name, nml);
	ret = tab_write(img, &t, UINT32_MAX, e, elen, &w, err);
	if (ret == 0)
		ret = set_dirty(img, false, err);
out:
	punch_run(&w);
	free(w.buf);
	free(e);
	tab_free(&t);
	return ret;
}

/* The common start of apply and delete: @img writable and flushed, w
 * ready, the table in @t, the snapshot @sn (tab_find with @name_only) at
 * *@i with its L1 table read and checked (sn_l1_read). */
static int sn_begin(struct cow_img *img, const char *sn, bool name_only, struct walk *w,
		    struct sn_tab *t, int *i, uint64_t **l1, uint64_t *n, uint64_t *l1off,
		    struct ut_err *err)
{
	int ret = writable(img, err);

	if (ret == 0)
		ret = walk_init(w, img, err);
	if (ret == 0)
		ret = tab_load(img, t, err);
	if (ret < 0)
		return ret;
	*i = tab_find(t, sn, name_only);
	if (*i < 0)
		return ut_errf(err, -ENOENT, "'%s': snapshot '%s' not found", img->path, sn);
	return sn_l1_read(img, t, (uint32_t)*i, l1, n, l1off, err);
}

int cow_snapshot_delete(struct cow_img *img, const char *sn, struct ut_err *err)
{
	uint64_t *l1 = NULL, n, l1off;
	struct sn_tab t = { 0 };
	struct walk w = { 0 };
	int ret, i;

	ret = sn_begin(img, sn, true, &w, &t, &i, &l1, &n, &l1off, err);
	if (ret < 0)
		goto out;
	w.op = REF_CHECK_DEC;
	ret = walk_l1(&w, l1, n, err);
	if (ret == 0)
		ret = ref_range(&w, l1off, n * 8, "a snapshot L1 table", NULL, err);
	if (ret == 0)
		ret = set_dirty(img, true, err);
	if (ret == 0)
		ret = tab_write(img, &t, (uint32_t)i, NULL, 0, &w, err);
	if (ret < 0)
		goto out;
	/* the entry is durably gone: its references go */
	w.op = REF_DEC;
	ret = walk_l1(&w, l1, n, err);
	if (ret == 0)
		ret = ref_range(&w, l1off, n * 8, "a snapshot L1 table", NULL, err);
	if (ret == 0)
		ret = fix_copied(img, err);
	if (ret == 0)
		ret = set_dirty(img, false, err);
out:
	punch_run(&w);
	free(w.buf);
	free(l1);
	tab_free(&t);
	return ret;
}

int cow_snapshot_apply(struct cow_img *img, const char *sn, struct ut_err *err)
{
	uint64_t cs = img->cluster_size, *l1 = NULL, *nl1 = NULL, *old = NULL, n, l1off, disk, need, nn,
		 newoff = 0, old_n, old_off;
	uint8_t hb[24], *ndirty = NULL;
	struct sn_tab t = { 0 };
	struct walk w = { 0 };
	uint32_t nbm;
	uint64_t dsz, doff;
	int ret, i;

	ret = sn_begin(img, sn, false, &w, &t, &i, &l1, &n, &l1off, err);
	if (ret < 0)
		goto out;
	/* the disk size recorded with it (v3 extra data), else the image's */
	disk = ent_extra(&t, (uint32_t)i) >= 16 ? cow_be64(ent(&t, (uint32_t)i) + 48) : img->h.size;
	need = ((disk + cs - 1) / cs + img->l2_entries - 1) / img->l2_entries;
	if (disk & 511 || need * 8 > COW_MAX_L1_BYTES) {
		ret = ut_errf(err, -EINVAL, "'%s': snapshot '%s' has an invalid disk size (%llu bytes)", img->path, sn,
			      (unsigned long long)disk);
		goto out;
	}
	if (disk != img->h.size && cow_bitmaps_ext(img, &nbm, &dsz, &doff) && nbm) {
		ret = ut_errf(err, -ENOTSUP, "'%s': snapshot '%s' has a disk size of %llu bytes, not the image's %llu, and the image has persistent bitmaps, which cannot change size here: remove them first ('cowvm image bitmap --remove')",
			      img->path, sn, (unsigned long long)disk, (unsigned long long)img->h.size);
		goto out;
	}
	nn = n > need ? n : need;
	w.op = REF_CHECK_INC;
	ret = walk_l1(&w, l1, n, err);
	if (ret < 0)
		goto out;
	nl1 = calloc(nn ? nn : 1, sizeof(*nl1));
	ndirty = calloc((nn + 63) / 64 + 1, 1);
	if (!nl1 || !ndirty) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	/* COPIED off until fix_copied has the refcounts */
	for (uint64_t k = 0; k < n; k++)
		nl1[k] = l1[k] & ~QCOW_OFLAG_COPIED;
	ret = set_dirty(img, true, err);
	if (ret == 0)
		ret = l1_write_new(img, nl1, nn, 1, &newoff, err);
	if (ret < 0)
		goto out;
	w.op = REF_INC;
	ret = walk_l1(&w, l1, n, err);
	if (ret == 0)
		ret = cow_flush(img, err);
	if (ret == 0)
		ret = cow_pread_full(img, hb, sizeof(hb), 24, false, err);
	if (ret < 0)
		goto out;
	/* the switch: size, l1_size, l1_table_offset in one sector */
	cow_put64(hb, disk);
	cow_put32(hb + 12, (uint32_t)nn);
	cow_put64(hb + 16, newoff);
	ret = cow_pwrite_full(img, hb, sizeof(hb), 24, err);
	if (ret == 0)
		ret = cow_sync(img, err);
	if (ret < 0)
		goto out;
	old = img->l1;
	old_n = img->h.l1_size;
	old_off = img->h.l1_off;
	img->l1 = nl1;
	nl1 = NULL;
	free(img->l1_dirty);
	img->l1_dirty = ndirty;
	ndirty = NULL;
	img->any_l1_dirty = false;
	img->h.l1_size = (uint32_t)nn;
	img->h.l1_off = newoff;
	img->h.size = disk;
	img->size = disk & ~511ull;
	img->named_ok = false;
	/* the guest's disk changed as a whole: the bitmaps record all of it */
	cow_bm_track_all_dirty(img);
	/* the old active L1's references, then its clusters */
	w.op = REF_DEC;
	ret = walk_l1(&w, old, old_n, err);
	if (ret == 0)
		ret = ref_range(&w, old_off, old_n * 8, "the old L1 table", NULL, err);
	if (ret < 0)
		goto out;
	/* (clean since the flush above: the tables the old L1 named are
	 * not the new one's, or are read again) */
	for (struct cow_cent *c; (c = cow_cache_lru_clean(&img->l2c));)
		cow_cache_remove(&img->l2c, c);
	ret = fix_copied(img, err);
	if (ret == 0)
		ret = set_dirty(img, false, err);
out:
	punch_run(&w);
	free(w.buf);
	free(l1);
	free(nl1);
	free(ndirty);
	free(old);
	tab_free(&t);
	return ret;
}
