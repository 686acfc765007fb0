/* cow/measure.c — how many bytes a qcow2 image of a given shape needs
 * (`cowvm image measure`, the numbers qemu-img measure prints): the
 * metadata of a fully allocated image, computed from the format's rules
 * (docs/interop/qcow2.rst), plus the data clusters that hold data. */
#include "cow/cow.h"
#include "cow/qcow2.h"

#include <errno.h>

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return (a + b - 1) / b;
}

int cow_measure_meta(uint64_t size, uint32_t cluster_size, uint32_t refcount_bits, bool extended_l2,
		     uint64_t *out, struct ut_err *err)
{
	uint64_t cs = cluster_size ? cluster_size : 65536;
	uint64_t rb = refcount_bits ? refcount_bits : 16;
	uint64_t l2e = extended_l2 ? 16 : 8;
	uint64_t clusters = div_up(size, cs);
	uint64_t per_l2 = cs / l2e, per_l1 = cs / 8;
	uint64_t n_l2 = div_up(clusters, per_l2);   /* L2 tables, one per L1 entry */
	uint64_t meta = cs                           /* the header cluster */
		      + n_l2 * cs                    /* every L2 table */
		      + div_up(n_l2, per_l1) * cs;   /* the L1 table, whole clusters */
	uint64_t per_block = cs * 8 / rb, per_table = cs / 8;
	uint64_t counted = meta / cs + clusters, blocks = 0, table = 0, last;

	/* (the limits cow_create keeps) */
	if (size > (1ull << 56) || n_l2 * 8 > COW_MAX_L1_BYTES)
		return ut_errf(err, -EFBIG, "a size of %llu bytes is too large for %llu-byte clusters (try a larger cluster size)",
			       (unsigned long long)size, (unsigned long long)cs);

	/* the refcount blocks and table count themselves too: grow both until
	 * they cover every cluster of the image, their own included */
	do {
		last = blocks + table;
		blocks = div_up(counted + blocks + table, per_block);
		table = div_up(blocks, per_table);
	} while (blocks + table != last);
	*out = meta + (blocks + table) * cs;
	return 0;
}

uint64_t cow_measure_bitmaps(uint64_t size, uint32_t cluster_size, const struct cow_bitmap_info *b,
			     uint32_t n)
{
	uint64_t cs = cluster_size ? cluster_size : 65536, total = 0, dir = 0;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t g = b[i].granularity ? b[i].granularity : 65536;
		uint64_t clusters = div_up(div_up(div_up(size, g), 8), cs);
		size_t name = 0;

		while (b[i].name && b[i].name[name])
			name++;
		total += clusters * cs                  /* the bitmap's data, all allocated */
		       + div_up(clusters * 8, cs) * cs; /* its table */
		dir += (24 + name + 7) & ~(uint64_t)7;  /* its directory entry */
	}
	return total + div_up(dir, cs) * cs;
}
