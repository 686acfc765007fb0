/* tests/guest/mem.c — the memory map, mapping RAM above 4 GiB, allocation.
 *
 * The start_info memmap is copied (validated) into g_memmap, sorted by start.
 * RAM below 4 GiB is mapped by pagetables.S.  RAM above 4 GiB is mapped
 * here, from ring 3, by filling empty PDPT entries (the page tables are
 * user-writable) with new page directories of 2 MiB pages.  Only
 * not-present entries are filled, so no TLB flush is needed.  1 GiB pages
 * are not used: under nested PVM they fault with the reserved-bit error
 * even though CPUID reports pdpe1gb.
 */
#include "guest.h"

#define HVM_MEMMAP_ENTRY_SIZE 24     /* addr u64, size u64, type u32, reserved u32 */
#define PTE_P_RW_US 0x7ULL
#define PTE_PS      0x80ULL
#define PDPT_LIMIT  512              /* PML4[0] covers 512 GiB */

struct mem_range g_memmap[MEMMAP_MAX];
uint32_t g_memmap_n;

static uint64_t alloc_next, alloc_end;

/* Copies up to MEMMAP_MAX valid entries from the hvm_memmap_table at
 * MEMMAP_PADDR (which must lie below 4 GiB), drops empty or overflowing
 * ones, sorts them and prepares the allocator in the RAM range that holds
 * the guest image. */
void mem_init(uint64_t memmap_paddr, uint32_t entries)
{
	g_memmap_n = 0;
	if (memmap_paddr == 0 || memmap_paddr >= 4 * GIB ||
	    memmap_paddr + (uint64_t)entries * HVM_MEMMAP_ENTRY_SIZE > 4 * GIB)
		entries = 0;
	if (entries > MEMMAP_MAX) {
		say("memmap has %u entries, using the first %u", entries, MEMMAP_MAX);
		entries = MEMMAP_MAX;
	}
	for (uint32_t i = 0; i < entries; i++) {
		const uint8_t *e = (const uint8_t *)(uintptr_t)(memmap_paddr + i * HVM_MEMMAP_ENTRY_SIZE);
		uint64_t addr, size;
		uint32_t type;
		memcpy(&addr, e, 8);
		memcpy(&size, e + 8, 8);
		memcpy(&type, e + 16, 4);
		if (size == 0 || addr + size < addr)
			continue;
		struct mem_range r = { addr, addr + size, type };
		/* insertion sort by start */
		uint32_t j = g_memmap_n++;
		while (j > 0 && g_memmap[j - 1].start > r.start) {
			g_memmap[j] = g_memmap[j - 1];
			j--;
		}
		g_memmap[j] = r;
	}

	uint64_t img_s = (uint64_t)(uintptr_t)__image_start;
	uint64_t img_e = (uint64_t)(uintptr_t)__image_end;
	alloc_next = alloc_end = img_e;
	for (uint32_t i = 0; i < g_memmap_n; i++) {
		const struct mem_range *r = &g_memmap[i];
		if (r->type == MEM_TYPE_RAM && r->start <= img_s && r->end >= img_e) {
			alloc_end = r->end < 3 * GIB ? r->end : 3 * GIB;
			break;
		}
	}
}

/* Sum of the sizes of all RAM ranges. */
uint64_t mem_ram_total(void)
{
	uint64_t t = 0;
	for (uint32_t i = 0; i < g_memmap_n; i++)
		if (g_memmap[i].type == MEM_TYPE_RAM)
			t += g_memmap[i].end - g_memmap[i].start;
	return t;
}

/* Identity-maps [start, end) (write-back) where it lies above 4 GiB, with
 * 2 MiB pages in page directories taken from mem_alloc().  Returns false if
 * part of it cannot be mapped (beyond 512 GiB or out of memory). */
bool mem_map_high(uint64_t start, uint64_t end)
{
	if (end <= 4 * GIB)
		return true;
	if (start < 4 * GIB)
		start = 4 * GIB;
	bool ok = true;
	uint64_t first = start >> 30, last = (end - 1) >> 30;
	if (last >= PDPT_LIMIT) {
		last = PDPT_LIMIT - 1;
		ok = false;
	}
	for (uint64_t g = first; g <= last; g++) {
		volatile uint64_t *e = (volatile uint64_t *)&pt_pdpt[g];
		if (*e & 1)
			continue;
		uint64_t pda = mem_alloc(PAGE_SIZE, PAGE_SIZE);
		if (!pda)
			return false;
		uint64_t *pd = phys(pda);
		for (uint64_t i = 0; i < 512; i++)
			pd[i] = (g << 30) + (i << 21) + (PTE_P_RW_US | PTE_PS);
		barrier();
		*e = pda | PTE_P_RW_US;
	}
	return ok;
}

/* Bump allocator over the RAM after the guest image (below 3 GiB). */
uint64_t mem_alloc(uint64_t size, uint64_t align)
{
	uint64_t a = ALIGN_UP(alloc_next, align);
	if (a < alloc_next || a + size < a || a + size > alloc_end)
		return 0;
	alloc_next = a + size;
	return a;
}

uint64_t mem_alloc_avail(void)
{
	uint64_t a = ALIGN_UP(alloc_next, 2 * MIB);
	return a < alloc_end ? alloc_end - a : 0;
}

void mem_used_region(uint64_t *start, uint64_t *end)
{
	*start = (uint64_t)(uintptr_t)__image_start;
	*end = alloc_next;
}
