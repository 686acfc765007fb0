/* cow/snapshot-read.c — opening a qcow2 image at one of its internal
 * snapshots, read-only (cow_open_snapshot; `cowvm image convert -l`, as
 * QEMU's bdrv_snapshot_load_tmp): the snapshot's L1 table replaces the
 * active one in memory. Nothing is written; the snapshot table is only
 * read, each entry checked against the file (cow_snapshot_entry) and the
 * chosen snapshot's L1 table validated before it is read (I8). */
#include "cow/qcow2.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* QEMU's limit (listing.c has the same) */
#define MAX_SNAPSHOTS 65536u

struct snap_found {
	uint64_t l1_off;
	uint32_t l1_size;
	uint64_t disk_size;
	bool has_disk_size;
	uint32_t idx;
};

/* Does entry @e (fixed part, extra data, id, name) match? As QEMU's
 * find_snapshot_by_id_and_name: both given, both must match; else the one
 * given. */
static bool snap_match(const uint8_t *e, const char *id, const char *name)
{
	uint32_t extra = cow_be32(e + 36);
	uint16_t idl = cow_be16(e + 12), nml = cow_be16(e + 14);
	const uint8_t *pid = e + 40 + extra, *pnm = pid + idl;
	bool idok = !id || (strlen(id) == idl && !memcmp(pid, id, idl));
	bool nmok = !name || (strlen(name) == nml && !memcmp(pnm, name, nml));

	return idok && nmok;
}

/* The first snapshot of @img matching @id / @name (one may be NULL): 1 and
 * *f, 0 when none does, or -errno with @err (a damaged table). */
static int snap_find(struct cow_img *img, const char *id, const char *name, struct snap_found *f,
		     struct ut_err *err)
{
	uint64_t off = img->h.snap_off;
	uint32_t nb = img->h.nb_snapshots;
	uint8_t *e;
	int ret = 0;

	if (!nb)
		return 0;
	if (nb > MAX_SNAPSHOTS)
		return ut_errf(err, -EINVAL, "'%s': too many snapshots (%u)", img->path, nb);
	e = malloc(40 + COW_MAX_SNAPSHOT_EXTRA + 2 * 65535);
	if (!e)
		return ut_errf(err, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < nb; i++) {
		uint64_t len;
		uint32_t extra;

		ret = cow_snapshot_entry(img, i, off, e, &len, err);
		if (ret == 0)
			ret = cow_pread_full(img, e + 40, len - 40, off + 40, false, err);
		if (ret < 0)
			break;
		if (snap_match(e, id, name)) {
			extra = cow_be32(e + 36);
			f->l1_off = cow_be64(e);
			f->l1_size = cow_be32(e + 8);
			/* the extra data's disk_size (bytes 8..15), when there */
			f->has_disk_size = extra >= 16;
			f->disk_size = extra >= 16 ? cow_be64(e + 40 + 8) : 0;
			f->idx = i;
			ret = 1;
			break;
		}
		off = (off + len + 7) & ~7ull;
	}
	free(e);
	return ret;
}

/* "ID '1' and name 'x'", "ID '1'", "name 'x'", "ID or name 'x'" */
static void snap_desc(char *buf, size_t size, const char *id, const char *name, bool either)
{
	if (either)
		snprintf(buf, size, "ID or name '%s'", id);
	else if (id && name)
		snprintf(buf, size, "ID '%s' and name '%s'", id, name);
	else if (id)
		snprintf(buf, size, "ID '%s'", id);
	else
		snprintf(buf, size, "name '%s'", name);
}

int cow_snap_l1_load(struct cow_img *img, uint32_t idx, uint64_t off, uint32_t n, uint64_t **l1,
		     struct ut_err *err)
{
	uint64_t bytes = (uint64_t)n * 8;
	uint8_t *raw = NULL;
	int ret;

	*l1 = NULL;
	/* validated as QEMU's qcow2_validate_table, and inside the file */
	if (bytes > COW_MAX_L1_BYTES)
		return ut_errf(err, -EFBIG, "'%s': L1 table of snapshot %u too large (%u entries)",
			       img->path, idx + 1, n);
	if (n) {
		if (off & (img->cluster_size - 1))
			return ut_errf(err, -EINVAL, "'%s': L1 table of snapshot %u (offset 0x%llx) is not cluster-aligned",
				       img->path, idx + 1, (unsigned long long)off);
		if (off < img->cluster_size)
			return ut_errf(err, -EINVAL, "'%s': L1 table of snapshot %u overlaps the header",
				       img->path, idx + 1);
		if (off > img->file_size || bytes > img->file_size - off)
			return ut_errf(err, -EINVAL, "'%s': L1 table of snapshot %u (offset 0x%llx, %u entries) extends beyond the end of the file",
				       img->path, idx + 1, (unsigned long long)off, n);
	}
	*l1 = calloc(n ? n : 1, sizeof(**l1));
	raw = malloc(bytes ? bytes : 1);
	if (!*l1 || !raw) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = cow_pread_full(img, raw, bytes, off, false, err);
	for (uint64_t i = 0; ret == 0 && i < n; i++)
		(*l1)[i] = cow_be64(raw + i * 8);
out:
	free(raw);
	if (ret < 0) {
		free(*l1);
		*l1 = NULL;
	}
	return ret;
}

/* Replace @img's active L1 table (in memory) by the snapshot's @f. */
static int load_snap_l1(struct cow_img *img, const struct snap_found *f, unsigned flags,
			struct ut_err *err)
{
	uint64_t cover, disk, vm_idx;
	uint64_t *l1 = NULL;
	int ret;

	/* (whole sectors, as the header's size is taken) */
	disk = f->has_disk_size ? f->disk_size & ~511ull : img->size;
	if (disk > (1ull << 62))
		return ut_errf(err, -EINVAL, "'%s': snapshot %u has an invalid disk size (%llu bytes)",
			       img->path, f->idx + 1, (unsigned long long)f->disk_size);
	ret = cow_snap_l1_load(img, f->idx, f->l1_off, f->l1_size, &l1, err);
	if (ret < 0)
		return ret;
	/* the VM state (QEMU's qcow2_vm_state_offset) starts at the first L1
	 * entry past the snapshot's disk: never guest data */
	cover = (uint64_t)img->cluster_size << img->l2_bits;
	vm_idx = disk / cover + (disk % cover != 0);
	for (uint64_t i = vm_idx; i < f->l1_size; i++)
		l1[i] = 0;
	free(img->l1);
	img->l1 = l1;
	img->h.l1_off = f->l1_off;
	img->h.l1_size = f->l1_size;
	img->named_ok = false;
	img->snap = true;
	if (!(flags & COW_O_SNAP_IMAGE_SIZE))
		img->size = disk;
	return 0;
}

int cow_open_snapshot(const char *path, const char *fmt, unsigned flags, const char *snap_id,
		      const char *snap_name, struct cow_img **out, struct ut_err *err)
{
	struct cow_img *img = NULL;
	struct snap_found f;
	bool either = flags & COW_O_SNAP_ID_OR_NAME;
	char what[512];
	int ret;

	*out = NULL;
	if (either ? !snap_id || snap_name : !snap_id && !snap_name)
		return ut_errf(err, -EINVAL, "'%s': no snapshot named (an ID, a name or both)", path);
	if (!(flags & COW_O_RDONLY))
		return ut_errf(err, -EROFS, "'%s': a snapshot can only be opened read-only", path);
	flags &= ~(COW_O_HEADER_ONLY | COW_O_KEEP_BITMAPS);
	ret = cow_open(path, fmt, flags, &img, err);
	if (ret < 0)
		return ret;
	if (img->fmt != COW_FMT_QCOW2) {
		ret = ut_errf(err, -ENOTSUP, "'%s': a raw image has no internal snapshots", path);
		goto out;
	}
	snap_desc(what, sizeof(what), snap_id, snap_name, either);
	/* as QEMU's bdrv_snapshot_load_tmp_by_id_or_name: an ID first */
	ret = snap_find(img, snap_id, either ? NULL : snap_name, &f, err);
	if (ret == 0 && either)
		ret = snap_find(img, NULL, snap_id, &f, err);
	if (ret == 0)
		ret = ut_errf(err, -ENOENT, "'%s': no snapshot with %s", path, what);
	if (ret < 0)
		goto out;
	ret = load_snap_l1(img, &f, flags, err);
	if (ret < 0)
		ut_err_prefix(err, "unable to open snapshot with %s", what);
out:
	if (ret < 0)
		cow_close(img);
	else
		*out = img;
	return ret;
}
