/* core/bus.h — port-I/O and MMIO dispatch from vCPU exits to device handlers.
 *
 * Each bus is a sorted table of non-overlapping [base, base+len) ranges. Lookups
 * (vCPU threads) take a read lock; register/unregister (BAR moves) a write lock.
 */
#ifndef VMM_BUS_H
#define VMM_BUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

/* Handle an access of @len (1, 2, 4 or 8) bytes at @off from the range base.
 * For reads fill @data; for writes consume it. Data is little-endian. */
typedef void (*vmm_io_fn)(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write);

struct vmm_bus_range {
	uint64_t base, len;
	vmm_io_fn fn;
	void *opaque;
};

struct vmm_bus {
	const char *name;           /* "pio" or "mmio", for messages */
	pthread_rwlock_t lock;
	struct vmm_bus_range *ranges;
	int nr, cap;
};

void vmm_bus_init(struct vmm_bus *b, const char *name);
void vmm_bus_exit(struct vmm_bus *b);

/* Add a range; -EEXIST (with @err naming both) if it overlaps another. */
int vmm_bus_register(struct vmm_bus *b, uint64_t base, uint64_t len, vmm_io_fn fn,
		     void *opaque, struct ut_err *err);
/* Remove the range that starts at @base with @opaque. Returns 0 or -ENOENT. */
int vmm_bus_unregister(struct vmm_bus *b, uint64_t base, void *opaque);

/* Dispatch one access. Returns true when a device handled it; unhandled reads
 * return all-ones (as on real buses), unhandled writes are dropped. */
bool vmm_bus_access(struct vmm_bus *b, uint64_t addr, uint8_t *data, uint32_t len, bool is_write);

/* Little-endian helpers for handlers. */
static inline uint64_t vmm_le_get(const uint8_t *d, uint32_t len)
{
	uint64_t v = 0;

	for (uint32_t i = 0; i < len && i < 8; i++)
		v |= (uint64_t)d[i] << (8 * i);
	return v;
}

static inline void vmm_le_put(uint8_t *d, uint32_t len, uint64_t v)
{
	for (uint32_t i = 0; i < len && i < 8; i++)
		d[i] = (uint8_t)(v >> (8 * i));
}

#endif
