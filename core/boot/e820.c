/* core/boot/e820.c — the guest's E820 memory map, derived from struct vmm_mem
 * and core/layout.h. Both boot formats hand the same map to the kernel.
 */
#include "core/boot/boot.h"
#include "core/layout.h"

#include <errno.h>

static int add(struct vmm_e820_range *map, int n, int max, uint64_t addr, uint64_t size,
	       uint32_t type)
{
	if (n >= max)
		return -ENOSPC;
	map[n] = (struct vmm_e820_range){ .addr = addr, .size = size, .type = type };
	return n + 1;
}

int vmm_e820_build(const struct vmm_mem *mem, struct vmm_e820_range *map, int max)
{
	uint64_t low_end = vmm_mem_low_end(mem), high = vmm_mem_high_size(mem);
	int n = 0;

	if (low_end < VMM_BIOS_END + (1ULL << 20))
		return -EINVAL;
	n = add(map, n, max, 0, VMM_EBDA_START, VMM_E820_RAM);
	if (n >= 0)
		n = add(map, n, max, VMM_EBDA_START, VMM_BIOS_END - VMM_EBDA_START, VMM_E820_RESERVED);
	if (n >= 0)
		n = add(map, n, max, VMM_BIOS_END, low_end - VMM_BIOS_END, VMM_E820_RAM);
	if (n >= 0 && high)
		n = add(map, n, max, VMM_HIGH_RAM_START, high, VMM_E820_RAM);
	return n;
}
