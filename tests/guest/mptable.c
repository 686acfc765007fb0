/* tests/guest/mptable.c — count CPUs from the Intel MP table.
 *
 * The floating pointer "_MP_" (16-byte aligned, checksummed) is searched in
 * the EBDA (segment at 0x40E, and 0x9FC00..0x9FFFF) and in 0xF0000..0xFFFFF.
 * Its config table ("PCMP") may be anywhere below 3 GiB; its length,
 * checksum and every entry are checked before use.
 */
#include "guest.h"

#define MP_ENTRY_CPU 0
#define MP_CONFIG_HDR 44

/* Byte sum of N bytes at A (mod 256). */
static uint8_t sum8(uint64_t a, uint64_t n)
{
	uint8_t s = 0;
	for (uint64_t i = 0; i < n; i++)
		s = (uint8_t)(s + ((const volatile uint8_t *)phys(a))[i]);
	return s;
}

/* Address of a valid "_MP_" floating pointer in [start, end), or 0. */
static uint64_t find_fp(uint64_t start, uint64_t end)
{
	for (uint64_t a = ALIGN_UP(start, 16); a + 16 <= end; a += 16) {
		if (memcmp(phys(a), "_MP_", 4) != 0)
			continue;
		uint8_t len = ((const uint8_t *)phys(a))[8];
		if (len == 0 || a + len * 16ULL > end || sum8(a, len * 16ULL) != 0)
			continue;
		return a;
	}
	return 0;
}

/* Enabled processor entries of the MP config table, 0 if none found. */
uint32_t mptable_cpu_count(void)
{
	uint64_t fp = 0;
	uint16_t ebda_seg = *(const volatile uint16_t *)phys(0x40e);
	uint64_t ebda = (uint64_t)ebda_seg << 4;
	if (ebda >= 0x80000 && ebda < 0xa0000)
		fp = find_fp(ebda, ebda + 1024 < 0xa0000 ? ebda + 1024 : 0xa0000);
	if (!fp)
		fp = find_fp(0x9fc00, 0xa0000);
	if (!fp)
		fp = find_fp(0xf0000, 0x100000);
	if (!fp)
		return 0;

	uint32_t cfg;
	memcpy(&cfg, (const uint8_t *)phys(fp) + 4, 4);
	if (cfg == 0 || cfg >= 3 * GIB - 0x10000)   /* RAM only, not the MMIO hole */
		return 0;
	const uint8_t *c = phys(cfg);
	if (memcmp(c, "PCMP", 4) != 0)
		return 0;
	uint16_t len, count;
	memcpy(&len, c + 4, 2);
	memcpy(&count, c + 34, 2);
	if (len < MP_CONFIG_HDR || sum8(cfg, len) != 0)
		return 0;

	uint32_t cpus = 0;
	uint64_t off = MP_CONFIG_HDR;
	for (uint32_t i = 0; i < count && off < len; i++) {
		uint8_t type = c[off];
		uint64_t size = type == MP_ENTRY_CPU ? 20 : 8;
		if (type > 4 || off + size > len)
			break;
		if (type == MP_ENTRY_CPU && (c[off + 3] & 1))
			cpus++;
		off += size;
	}
	return cpus;
}
