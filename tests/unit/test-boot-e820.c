/* tests/unit/test-boot-e820.c — the E820 map built from guest RAM sizes:
 * 256 MiB, 3 GiB (exactly up to the MMIO hole), 3.5 GiB and 6 GiB (RAM split
 * around the hole, the rest from 4 GiB), plus the too-small and no-room cases.
 */
#include "test-boot-util.h"

#define GIB (1ULL << 30)
#define MIB_ (1ULL << 20)

static void check_map(uint64_t ram, uint64_t low_end, uint64_t high)
{
	struct vmm_mem m;
	struct vmm_e820_range map[VMM_E820_MAX];
	/* Address space only: e820 reads sizes, never RAM. */
	uint8_t *base = mmap(NULL, ram, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	int n, want = high ? 4 : 3;

	if (base == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	vmm_mem_layout(&m, base, ram, -1);
	n = vmm_e820_build(&m, map, VMM_E820_MAX);
	CHECK(n == want, "%llu MiB: %d entries, want %d", (unsigned long long)(ram >> 20), n, want);
	if (n == want) {
		CHECK_EQ(map[0].addr, 0);
		CHECK_EQ(map[0].size, 0x9FC00);
		CHECK_EQ(map[0].type, VMM_E820_RAM);
		CHECK_EQ(map[1].addr, 0x9FC00);
		CHECK_EQ(map[1].addr + map[1].size, 0x100000);
		CHECK_EQ(map[1].type, VMM_E820_RESERVED);
		CHECK_EQ(map[2].addr, 0x100000);
		CHECK_EQ(map[2].addr + map[2].size, low_end);
		CHECK_EQ(map[2].type, VMM_E820_RAM);
		if (high) {
			CHECK_EQ(map[3].addr, 4 * GIB);
			CHECK_EQ(map[3].size, high);
			CHECK_EQ(map[3].type, VMM_E820_RAM);
		}
		/* All RAM accounted for: usable + the 384 KiB reserved below 1 MiB. */
		uint64_t usable = 0;
		for (int i = 0; i < n; i++)
			if (map[i].type == VMM_E820_RAM)
				usable += map[i].size;
		CHECK_EQ(usable + (0x100000 - 0x9FC00), ram);
	}
	for (int i = 0; i < n; i++)
		printf("  %5llu MiB: [0x%010llx-0x%010llx] %s\n", (unsigned long long)(ram >> 20),
		       (unsigned long long)map[i].addr,
		       (unsigned long long)(map[i].addr + map[i].size - 1),
		       map[i].type == VMM_E820_RAM ? "usable" : "reserved");
	/* Not enough room: -ENOSPC. */
	CHECK_EQ(vmm_e820_build(&m, map, want - 1), (unsigned long long)-ENOSPC);
	munmap(base, ram);
}

int main(void)
{
	struct vmm_mem m;
	struct vmm_e820_range map[VMM_E820_MAX];
	uint8_t small[1];

	check_map(256 * MIB_, 256 * MIB_, 0);
	check_map(3 * GIB, 3 * GIB, 0);
	check_map(3 * GIB + 512 * MIB_, 3 * GIB, 512 * MIB_);
	check_map(6 * GIB, 3 * GIB, 3 * GIB);
	check_map(2 * MIB_, 2 * MIB_, 0);

	/* Less than 2 MiB of low RAM is refused. */
	vmm_mem_layout(&m, small, 1 * MIB_, -1);
	CHECK_EQ(vmm_e820_build(&m, map, VMM_E820_MAX), (unsigned long long)-EINVAL);
	return tb_finish("test-boot-e820");
}
