/* core/mem.c — guest RAM in a memfd; see mem.h for the contract. */
#include "core/mem.h"
#include "core/layout.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEM_ALIGN (2ULL << 20)

void vmm_mem_layout(struct vmm_mem *m, uint8_t *base, uint64_t ram_size, int fd)
{
	uint64_t low = ram_size < VMM_MMIO_HOLE_START ? ram_size : VMM_MMIO_HOLE_START;

	memset(m, 0, sizeof(*m));
	m->fd = fd;
	m->base = base;
	m->ram_size = ram_size;
	m->regions[0] = (struct vmm_mem_region){ .gpa = 0, .size = low, .fd_off = 0, .hva = base };
	m->nr_regions = 1;
	if (ram_size > low) {
		m->regions[1] = (struct vmm_mem_region){
			.gpa = VMM_HIGH_RAM_START, .size = ram_size - low,
			.fd_off = low, .hva = base + low,
		};
		m->nr_regions = 2;
	}
}

int vmm_mem_init(struct vmm_mem *m, uint64_t ram_size, struct ut_err *err)
{
	uint8_t *base;
	int fd, r;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (ram_size < MEM_ALIGN || ram_size % MEM_ALIGN)
		return ut_errf(err, -EINVAL, "memory size %llu is not a multiple of 2 MiB (minimum 2 MiB)",
			       (unsigned long long)ram_size);
	fd = memfd_create("cowvm-ram", MFD_CLOEXEC);
	if (fd < 0)
		return ut_errf_sys(err, -errno, "unable to create guest RAM memfd");
	if (ftruncate(fd, (off_t)ram_size) < 0) {
		r = ut_errf_sys(err, -errno, "unable to size guest RAM to %llu bytes",
				(unsigned long long)ram_size);
		goto out_close;
	}
	base = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	if (base == MAP_FAILED) {
		r = ut_errf_sys(err, -errno, "unable to map %llu bytes of guest RAM",
				(unsigned long long)ram_size);
		goto out_close;
	}
	madvise(base, ram_size, MADV_DONTDUMP);
	vmm_mem_layout(m, base, ram_size, fd);
	return 0;
out_close:
	close(fd);
	return r;
}

void vmm_mem_exit(struct vmm_mem *m)
{
	if (m->base && m->ram_size)
		munmap(m->base, m->ram_size);
	if (m->fd >= 0)
		close(m->fd);
	m->base = NULL;
	m->fd = -1;
	m->nr_regions = 0;
}

void *vmm_mem_ptr(const struct vmm_mem *m, uint64_t gpa, uint64_t len)
{
	for (int i = 0; i < m->nr_regions; i++) {
		const struct vmm_mem_region *r = &m->regions[i];

		if (gpa < r->gpa || gpa - r->gpa >= r->size)
			continue;
		if (len > r->size - (gpa - r->gpa))
			return NULL;
		return r->hva + (gpa - r->gpa);
	}
	return NULL;
}

int vmm_mem_write(const struct vmm_mem *m, uint64_t gpa, const void *src, size_t len)
{
	void *p = vmm_mem_ptr(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(p, src, len);
	return 0;
}

int vmm_mem_read(const struct vmm_mem *m, uint64_t gpa, void *dst, size_t len)
{
	const void *p = vmm_mem_ptr(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(dst, p, len);
	return 0;
}

uint64_t vmm_mem_low_end(const struct vmm_mem *m)
{
	return m->nr_regions ? m->regions[0].size : 0;
}

uint64_t vmm_mem_high_size(const struct vmm_mem *m)
{
	return m->nr_regions > 1 ? m->regions[1].size : 0;
}
