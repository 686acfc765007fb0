/* tests/guest/pattern.h — deterministic data patterns for disk and memory tests.
 *
 * Disk: the 8-byte word W (0..63) of 512-byte sector S written with seed N is
 *   disk_word(disk_sector_key(N, S), W).
 * Memory: the 8-byte word at physical address A filled with seed N is
 *   mem_word(N, A).
 * Both are 64-bit mixes (multiply/xor-shift); any seed/sector/word change
 * changes the value with overwhelming probability.
 */
#ifndef COWVM_GUEST_PATTERN_H
#define COWVM_GUEST_PATTERN_H

#include <stdint.h>

/* Final avalanche of a 64-bit value (bijective). */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 31;
	x *= 0x7fb5d329728ea185ULL;
	x ^= x >> 27;
	x *= 0x81dadef4bc2dd44dULL;
	x ^= x >> 33;
	return x;
}

/* Per-sector key from the seed and the sector number. */
static inline uint64_t disk_sector_key(uint64_t seed, uint64_t sector)
{
	return mix64(seed * 0x9e3779b97f4a7c15ULL + sector + 0x632be59bd9b4e019ULL);
}

/* Word W (0..63) of a sector with key K. */
static inline uint64_t disk_word(uint64_t key, uint64_t w)
{
	uint64_t x = key + w * 0xd6e8feb86659fd93ULL;
	x ^= x >> 32;
	x *= 0xd6e8feb86659fd93ULL;
	x ^= x >> 32;
	return x;
}

/* Word at physical address ADDR for memfill with SEED. */
static inline uint64_t mem_word(uint64_t seed, uint64_t addr)
{
	uint64_t x = (addr ^ (seed * 0x9e3779b97f4a7c15ULL)) * 0xd6e8feb86659fd93ULL;
	x ^= x >> 32;
	x *= 0xd6e8feb86659fd93ULL;
	x ^= x >> 29;
	return x;
}

#endif
