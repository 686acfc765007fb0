/* core/mem.h — guest RAM: one memfd, mapped once in the VMM, split in up to two
 * KVM memory slots around the MMIO hole (see core/layout.h).
 *
 * Clones map the same memfd MAP_PRIVATE; migration streams it; dirty logging
 * is per slot. Every guest-supplied address goes through vmm_mem_ptr(), which
 * bounds-checks the whole range.
 */
#ifndef VMM_MEM_H
#define VMM_MEM_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "util/err.h"

#define VMM_MEM_MAX_REGIONS 2

struct vmm_mem_region {
	uint64_t gpa;        /* guest physical start */
	uint64_t size;       /* bytes */
	uint64_t fd_off;     /* offset of this region in the memfd */
	uint8_t *hva;        /* host address of gpa (inside vmm_mem.base) */
};

struct vmm_mem {
	int fd;                  /* memfd holding all guest RAM, -1 if none */
	uint64_t ram_size;       /* total RAM bytes */
	uint8_t *base;           /* mapping of the whole memfd, ram_size bytes */
	int nr_regions;
	struct vmm_mem_region regions[VMM_MEM_MAX_REGIONS];
};

/* Create @ram_size bytes (multiple of 2 MiB, >= 2 MiB) of guest RAM in a new
 * memfd named "cowvm-ram", map it shared, and lay out the regions: low RAM
 * from 0 up to the MMIO hole, the rest from 4 GiB. Returns 0 or -errno with @err
 * set. On failure @m is left with fd -1 and base NULL. */
int vmm_mem_init(struct vmm_mem *m, uint64_t ram_size, struct ut_err *err);

/* Build the region table for an existing mapping (used by tests with a plain
 * malloc'd buffer, and by restore with a private mapping). @base must hold
 * @ram_size bytes. fd is set to @fd (may be -1). */
void vmm_mem_layout(struct vmm_mem *m, uint8_t *base, uint64_t ram_size, int fd);

/* Unmap and close. Safe on a zeroed or failed vmm_mem. */
void vmm_mem_exit(struct vmm_mem *m);

/* Host pointer for guest range [gpa, gpa+len), or NULL when any byte of the
 * range is outside RAM or the range crosses a region boundary or overflows.
 * len 0 is allowed (checks gpa only). The pointer is valid until vmm_mem_exit. */
void *vmm_mem_ptr(const struct vmm_mem *m, uint64_t gpa, uint64_t len);

/* Copy to/from guest RAM; -EFAULT when the range is not entirely RAM. */
int vmm_mem_write(const struct vmm_mem *m, uint64_t gpa, const void *src, size_t len);
int vmm_mem_read(const struct vmm_mem *m, uint64_t gpa, void *dst, size_t len);

/* End of RAM below the hole (exclusive) and size of RAM above 4 GiB. */
uint64_t vmm_mem_low_end(const struct vmm_mem *m);
uint64_t vmm_mem_high_size(const struct vmm_mem *m);

#endif
