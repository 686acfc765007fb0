/* cow/bitmaps.c — persistent dirty bitmaps (header extension 0x23852875)
 * in an image cowvm writes.
 *
 * cowvm does not track writes in bitmaps. The specification allows two
 * ways for such a writer: clear autoclear bit 0, which makes every reader
 * ignore the extension (the bitmaps are lost, and their clusters leak), or
 * keep the extension and mark every bitmap "in use" (flag bit 0: "the
 * bitmap was not saved correctly and may be inconsistent") before the
 * first write, which is what QEMU itself does when it opens an image for
 * writing and has not yet stored its bitmaps. cowvm does the second: the
 * bitmaps stay listed, QEMU reports them as inconsistent (it neither uses
 * them for incremental backups nor loses track of their clusters), and
 * `qemu-img bitmap --remove` frees them.
 *
 * Transition (cow_qcow2_open, before anything else is written):
 *   autoclear bit 0 set, directory valid
 *     --> cow_bitmaps_mark_in_use: the 4-byte flags of each entry without
 *         bit 0 rewritten in place (one sector each), fdatasync
 *     --> the caller keeps bit 0 and clears the other autoclear bits.
 *   directory invalid (any check below fails): nothing written; the
 *   caller clears bit 0 as before (QEMU would refuse to use it too).
 * A crash after the directory write leaves bitmaps marked in use over
 * unchanged data: inconsistent by declaration, never wrong silently.
 */
#include "cow/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BM_RESERVED_FLAGS 0xfffffffcu
#define BM_ENTRY_HDR 24u

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

int cow_bitmaps_ext(const struct cow_img *img, uint32_t *nb, uint64_t *dsize, uint64_t *doff)
{
	const uint8_t *x = img->h.other_ext;
	size_t n = img->h.other_ext_len, o = 0;

	if (img->h.version < 3 || !(img->h.autoclear & 1))
		return 0;
	for (; o + 8 <= n; o += 8 + (((size_t)cow_be32(x + o + 4) + 7) & ~(size_t)7)) {
		uint32_t type = cow_be32(x + o), len = cow_be32(x + o + 4);

		if (type != QCOW_EXT_BITMAPS || len < 24 || o + 8 + len > n)
			continue;
		*nb = cow_be32(x + o + 8);
		*dsize = cow_be64(x + o + 16);
		*doff = cow_be64(x + o + 24);
		return 1;
	}
	return 0;
}

bool cow_bitmaps_dir_in_file(const struct cow_img *img, uint64_t dsize, uint64_t doff)
{
	return dsize && dsize <= COW_MAX_BITMAP_DIR && !(doff & (img->cluster_size - 1)) &&
	       doff <= img->file_size && dsize <= img->file_size - doff;
}

int cow_bitmaps_mark_in_use(struct cow_img *img, struct ut_err *err)
{
	uint64_t dsize, doff, p = 0;
	uint32_t nb, seen = 0;
	uint8_t *dir = NULL;
	bool wrote = false;
	int ret;

	if (!cow_bitmaps_ext(img, &nb, &dsize, &doff))
		return 1;
	if (!nb || !doff || !cow_bitmaps_dir_in_file(img, dsize, doff))
		return 1;
	/* a directory that overlaps a core table is damage, not a directory:
	 * writing into it could break the table */
	if (overlaps(doff, dsize, img->h.l1_off, (uint64_t)img->h.l1_size * 8) ||
	    overlaps(doff, dsize, img->h.rt_off, (uint64_t)img->h.rt_clusters << img->cluster_bits) ||
	    (img->h.nb_snapshots && doff <= img->h.snap_off && img->h.snap_off < doff + dsize))
		return 1;
	dir = malloc(dsize);
	if (!dir)
		return ut_errf(err, -ENOMEM, "out of memory");
	ret = cow_pread_full(img, dir, dsize, doff, false, err);
	if (ret < 0)
		goto out;
	/* the whole directory first: nothing is written unless all of it is
	 * well-formed (entries inside it, as many as the extension says, no
	 * reserved flag bits) */
	for (p = 0; p < dsize; seen++) {
		if (dsize - p < BM_ENTRY_HDR || seen >= nb ||
		    (cow_be32(dir + p + 12) & BM_RESERVED_FLAGS) ||
		    cow_bitmap_entry_size(dir + p) > dsize - p) {
			ret = 1;
			goto out;
		}
		p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull;
	}
	if (seen != nb) {
		ret = 1;
		goto out;
	}
	for (p = 0; p < dsize;) {
		uint32_t flags = cow_be32(dir + p + 12);

		if (!(flags & COW_BITMAP_IN_USE)) {
			uint8_t b[4];
			cow_put32(b, flags | COW_BITMAP_IN_USE);
			ret = cow_pwrite_full(img, b, 4, doff + p + 12, err);
			if (ret < 0)
				goto out;
			wrote = true;
		}
		p += (cow_bitmap_entry_size(dir + p) + 7) & ~7ull;
	}
	ret = wrote ? cow_sync(img, err) : 0;
out:
	free(dir);
	if (ret < 0)
		ut_err_prefix(err, "'%s': unable to mark its persistent bitmaps in use", img->path);
	return ret;
}
