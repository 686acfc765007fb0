/* core/bus.c — I/O range dispatch; see bus.h. */
#include "core/bus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void vmm_bus_init(struct vmm_bus *b, const char *name)
{
	memset(b, 0, sizeof(*b));
	b->name = name;
	pthread_rwlock_init(&b->lock, NULL);
}

void vmm_bus_exit(struct vmm_bus *b)
{
	free(b->ranges);
	b->ranges = NULL;
	b->nr = b->cap = 0;
	pthread_rwlock_destroy(&b->lock);
}

int vmm_bus_register(struct vmm_bus *b, uint64_t base, uint64_t len, vmm_io_fn fn,
		     void *opaque, struct ut_err *err)
{
	int i, r = 0;

	if (!len || base + len < base)
		return ut_errf(err, -EINVAL, "%s range 0x%llx+0x%llx is invalid", b->name,
			       (unsigned long long)base, (unsigned long long)len);
	pthread_rwlock_wrlock(&b->lock);
	for (i = 0; i < b->nr; i++) {
		struct vmm_bus_range *x = &b->ranges[i];

		if (base < x->base + x->len && x->base < base + len) {
			r = ut_errf(err, -EEXIST, "%s range 0x%llx+0x%llx overlaps 0x%llx+0x%llx",
				    b->name, (unsigned long long)base, (unsigned long long)len,
				    (unsigned long long)x->base, (unsigned long long)x->len);
			goto out;
		}
		if (x->base > base)
			break;
	}
	if (b->nr == b->cap) {
		int cap = b->cap ? b->cap * 2 : 16;
		struct vmm_bus_range *n = realloc(b->ranges, (size_t)cap * sizeof(*n));

		if (!n) {
			r = ut_errf(err, -ENOMEM, "out of memory for %s ranges", b->name);
			goto out;
		}
		b->ranges = n;
		b->cap = cap;
	}
	memmove(&b->ranges[i + 1], &b->ranges[i], (size_t)(b->nr - i) * sizeof(*b->ranges));
	b->ranges[i] = (struct vmm_bus_range){ base, len, fn, opaque };
	b->nr++;
out:
	pthread_rwlock_unlock(&b->lock);
	return r;
}

int vmm_bus_unregister(struct vmm_bus *b, uint64_t base, void *opaque)
{
	int r = -ENOENT;

	pthread_rwlock_wrlock(&b->lock);
	for (int i = 0; i < b->nr; i++) {
		if (b->ranges[i].base == base && b->ranges[i].opaque == opaque) {
			memmove(&b->ranges[i], &b->ranges[i + 1],
				(size_t)(b->nr - i - 1) * sizeof(*b->ranges));
			b->nr--;
			r = 0;
			break;
		}
	}
	pthread_rwlock_unlock(&b->lock);
	return r;
}

bool vmm_bus_access(struct vmm_bus *b, uint64_t addr, uint8_t *data, uint32_t len, bool is_write)
{
	int lo = 0, hi;
	bool handled = false;

	pthread_rwlock_rdlock(&b->lock);
	hi = b->nr - 1;
	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		struct vmm_bus_range *x = &b->ranges[mid];

		if (addr < x->base) {
			hi = mid - 1;
		} else if (addr - x->base >= x->len) {
			lo = mid + 1;
		} else {
			/* An access straddling the range end is clipped to the range. */
			uint64_t room = x->len - (addr - x->base);

			if (len > room) {
				if (!is_write)
					memset(data, 0xff, len);
				len = (uint32_t)room;
			}
			x->fn(x->opaque, addr - x->base, data, len, is_write);
			handled = true;
			break;
		}
	}
	pthread_rwlock_unlock(&b->lock);
	if (!handled && !is_write)
		memset(data, 0xff, len);
	return handled;
}
