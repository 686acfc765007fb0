/* tests/unit/test-vm-util.h — helpers shared by the device unit tests
 * (test-virtqueue, test-virtio-blk, test-device-state): checks that print
 * file:line with expected vs got, guest RAM between PROT_NONE guard pages, a
 * struct vmm_vm built by hand without /dev/kvm, and a minimal virtio-pci
 * driver that talks to devices only through the buses (0xCF8/0xCFC and MMIO).
 *
 * The hand-built VM has vm_fd = kvm_fd = -1: every KVM ioctl (IRQ lines,
 * ioeventfd, irqfd, GSI routing) fails with EBADF and is ignored by the
 * devices, so kicks go through the MMIO path into the queue's eventfd and the
 * event loop (vmm_loop_run_once) runs the device.
 */
#ifndef TEST_VM_UTIL_H
#define TEST_VM_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/layout.h"
#include "core/mem.h"
#include "core/pci.h"
#include "core/vm.h"

static int tv_failures;

#define CHECK(cond, ...) do {                                                   \
	if (!(cond)) {                                                          \
		tv_failures++;                                                  \
		fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
		fprintf(stderr, __VA_ARGS__);                                   \
		fputc('\n', stderr);                                            \
	}                                                                       \
} while (0)

#define CHECK_EQ(got, want) do {                                                \
	unsigned long long _g = (unsigned long long)(got), _w = (unsigned long long)(want); \
	if (_g != _w) {                                                         \
		tv_failures++;                                                  \
		fprintf(stderr, "FAIL %s:%d: %s: expected %s = 0x%llx, got 0x%llx\n", \
			__FILE__, __LINE__, #got, #want, _w, _g);               \
	}                                                                       \
} while (0)

#define CHECK_STR(got, needle) do {                                             \
	const char *_g = (got), *_n = (needle);                                 \
	CHECK(strstr(_g, _n) != NULL, "expected a message containing '%s', got '%s'", _n, _g); \
} while (0)

/* A check this host cannot make (the reason); tv_finish then exits 77
 * unless another check failed, so a part not checked never reads as a
 * pass. */
static const char *tv_unchecked;

static inline int tv_finish(const char *name)
{
	if (tv_failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", name, tv_failures);
		return 1;
	}
	if (tv_unchecked) {
		printf("%s: every other check passed; SKIP: %s\n", name, tv_unchecked);
		return 77;
	}
	printf("%s: ok\n", name);
	return 0;
}

static inline void tv_die(const char *what)
{
	fprintf(stderr, "test setup failed: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ---- guest RAM with PROT_NONE guard pages on both sides ---- */

#define TV_GUARD (64u << 10)

struct tv_ram {
	uint8_t *map;
	size_t map_len;
	uint8_t *base;
	uint64_t size;
};

/* Returns 0, or -errno (e.g. a large reservation refused). */
static inline int tv_ram_init(struct tv_ram *r, uint64_t size)
{
	r->map_len = size + 2 * TV_GUARD;
	r->map = mmap(NULL, r->map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r->map == MAP_FAILED) {
		r->map = NULL;
		return -errno;
	}
	if (mprotect(r->map + TV_GUARD, size, PROT_READ | PROT_WRITE) < 0) {
		int e = -errno;

		munmap(r->map, r->map_len);
		r->map = NULL;
		return e;
	}
	r->base = r->map + TV_GUARD;
	r->size = size;
	return 0;
}

static inline void tv_ram_exit(struct tv_ram *r)
{
	if (r->map)
		munmap(r->map, r->map_len);
	r->map = r->base = NULL;
}

/* Host pointer of a guest range the test itself set up (aborts if not RAM). */
static inline uint8_t *tv_gpa(const struct vmm_mem *m, uint64_t a, uint64_t len)
{
	uint8_t *p = vmm_mem_ptr(m, a, len);

	if (!p) {
		fprintf(stderr, "test bug: guest range 0x%llx+%llu not in RAM\n",
			(unsigned long long)a, (unsigned long long)len);
		exit(1);
	}
	return p;
}

static inline void tv_put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void tv_put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void tv_put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint16_t tv_get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t tv_get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t tv_get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* ---- a VM without KVM ---- */

struct tv_vm {
	struct vmm_vm vm;
	struct tv_ram ram;
};

/* Build buses, event loop, IRQ routing table (allocated; committing it to
 * KVM fails and is ignored), guarded RAM of @ram_size and the PCI host, the
 * way vmm_vm_create does minus KVM. Exits on failure. */
static inline void tv_vm_init(struct tv_vm *t, uint64_t ram_size)
{
	struct vmm_vm *vm = &t->vm;
	struct ut_err err = { 0 };

	memset(t, 0, sizeof(*t));
	vmm_vm_preinit(vm);
	/* allocates the routing table, then fails to commit it (no KVM) */
	vmm_irq_init(vm, NULL);
	if (!vm->routes) {
		fprintf(stderr, "test setup failed: no IRQ routing table\n");
		exit(1);
	}
	if (vmm_loop_init(&vm->loop))
		tv_die("vmm_loop_init");
	if (tv_ram_init(&t->ram, ram_size))
		tv_die("guest RAM");
	vmm_mem_layout(&vm->mem, t->ram.base, ram_size, -1);
	if (vmm_pci_init(vm, &err)) {
		fprintf(stderr, "test setup failed: %s\n", err.msg);
		exit(1);
	}
}

/* Tear down: devices (their exit ops), PCI, loop, IRQ table, buses through
 * vmm_vm_destroy (which fits: no vCPUs, fds -1); RAM is ours, unmapped here. */
static inline void tv_vm_exit(struct tv_vm *t)
{
	t->vm.mem.base = NULL;   /* vmm_mem_exit must not unmap our guarded mapping */
	t->vm.mem.ram_size = 0;
	vmm_vm_destroy(&t->vm);
	pthread_mutex_destroy(&t->vm.lock);
	pthread_cond_destroy(&t->vm.cond);
	pthread_mutex_destroy(&t->vm.irq_lock);
	tv_ram_exit(&t->ram);
}

static inline struct vmm_device *tv_find_dev(struct vmm_vm *vm, const char *type, int nth)
{
	for (int i = 0; i < vm->ndevs; i++)
		if (!strcmp(vm->devs[i]->ops->type, type) && nth-- == 0)
			return vm->devs[i];
	return NULL;
}

/* ---- bus access ---- */

static inline uint64_t tv_io_rd(struct vmm_bus *b, uint64_t addr, uint32_t len)
{
	uint8_t d[8] = { 0 };

	vmm_bus_access(b, addr, d, len, false);
	return vmm_le_get(d, len);
}

static inline void tv_io_wr(struct vmm_bus *b, uint64_t addr, uint32_t len, uint64_t v)
{
	uint8_t d[8];

	vmm_le_put(d, len, v);
	vmm_bus_access(b, addr, d, len, true);
}

/* PCI configuration mechanism #1, bus 0 function 0. */
static inline uint32_t tv_cfg_rd(struct vmm_vm *vm, int slot, unsigned off, uint32_t len)
{
	tv_io_wr(&vm->pio, VMM_PORT_PCI_ADDR, 4, 0x80000000u | (unsigned)slot << 11 | (off & 0xFC));
	return (uint32_t)tv_io_rd(&vm->pio, VMM_PORT_PCI_DATA + (off & 3), len);
}

static inline void tv_cfg_wr(struct vmm_vm *vm, int slot, unsigned off, uint32_t len, uint32_t v)
{
	tv_io_wr(&vm->pio, VMM_PORT_PCI_ADDR, 4, 0x80000000u | (unsigned)slot << 11 | (off & 0xFC));
	tv_io_wr(&vm->pio, VMM_PORT_PCI_DATA + (off & 3), len, v);
}

/* Slot of the @nth function with @vendor:@device, or -1. */
static inline int tv_pci_find(struct vmm_vm *vm, uint16_t vendor, uint16_t device, int nth)
{
	for (int s = 0; s < VMM_PCI_SLOTS; s++) {
		uint32_t id = tv_cfg_rd(vm, s, 0, 4);

		if (id == ((uint32_t)device << 16 | vendor) && nth-- == 0)
			return s;
	}
	return -1;
}

/* ---- a minimal virtio-pci modern driver ---- */

#define TV_COMMON 0x0000
#define TV_ISR    0x1000
#define TV_DEVCFG 0x2000
#define TV_NOTIFY 0x3000

/* common configuration offsets (virtio 1.x, 4.1.4.3) */
#define C_DFSEL   0x00
#define C_DF      0x04
#define C_GFSEL   0x08
#define C_GF      0x0C
#define C_MSIX    0x10
#define C_NUMQ    0x12
#define C_STATUS  0x14
#define C_QSEL    0x16
#define C_QSIZE   0x18
#define C_QMSIX   0x1A
#define C_QENABLE 0x1C
#define C_QNOFF   0x1E
#define C_QDESC   0x20
#define C_QAVAIL  0x28
#define C_QUSED   0x30

struct tv_drv {
	struct vmm_vm *vm;
	int slot;
	uint64_t bar;
	uint16_t qsize;
	uint64_t desc, avail, used;   /* ring GPAs of queue 0 */
	uint16_t avail_idx, used_seen;
};

static inline uint64_t tv_rd(struct tv_drv *d, uint64_t off, uint32_t len)
{
	return tv_io_rd(&d->vm->mmio, d->bar + off, len);
}

static inline void tv_wr(struct tv_drv *d, uint64_t off, uint32_t len, uint64_t v)
{
	tv_io_wr(&d->vm->mmio, d->bar + off, len, v);
}

static inline uint8_t tv_status(struct tv_drv *d)
{
	return (uint8_t)tv_rd(d, TV_COMMON + C_STATUS, 1);
}

static inline uint64_t tv_dev_features(struct tv_drv *d)
{
	uint64_t f;

	tv_wr(d, C_DFSEL, 4, 0);
	f = tv_rd(d, C_DF, 4);
	tv_wr(d, C_DFSEL, 4, 1);
	return f | tv_rd(d, C_DF, 4) << 32;
}

/* Find the device, read BAR0. Returns 0 or -1. */
static inline int tv_drv_open(struct tv_drv *d, struct vmm_vm *vm, uint16_t devid, int nth)
{
	memset(d, 0, sizeof(*d));
	d->vm = vm;
	d->slot = tv_pci_find(vm, 0x1AF4, devid, nth);
	if (d->slot < 0)
		return -1;
	d->bar = tv_cfg_rd(vm, d->slot, PCI_BAR0, 4) & ~0xFull;
	return 0;
}

/* Reset, negotiate @features (written as is), then check FEATURES_OK stuck.
 * Returns the status read back. */
static inline uint8_t tv_drv_negotiate(struct tv_drv *d, uint64_t features)
{
	tv_wr(d, C_STATUS, 1, 0);
	tv_wr(d, C_STATUS, 1, 1);          /* ACKNOWLEDGE */
	tv_wr(d, C_STATUS, 1, 1 | 2);      /* DRIVER */
	tv_wr(d, C_GFSEL, 4, 0);
	tv_wr(d, C_GF, 4, (uint32_t)features);
	tv_wr(d, C_GFSEL, 4, 1);
	tv_wr(d, C_GF, 4, (uint32_t)(features >> 32));
	tv_wr(d, C_STATUS, 1, 1 | 2 | 8);  /* FEATURES_OK */
	return tv_status(d);
}

/* Lay out queue 0 of @size at @ring_gpa (desc, avail at +16*size, used at
 * the next 4 KiB), zero it, program and enable it. Returns queue_enable. */
static inline int tv_drv_queue(struct tv_drv *d, uint16_t size, uint64_t ring_gpa)
{
	uint64_t desc = ring_gpa, avail = desc + 16ull * size;
	uint64_t used = (avail + 6 + 2ull * size + 4095) & ~4095ull;

	memset(tv_gpa(&d->vm->mem, desc, used + 6 + 8ull * size - desc), 0,
	       used + 6 + 8ull * size - desc);
	d->qsize = size;
	d->desc = desc;
	d->avail = avail;
	d->used = used;
	d->avail_idx = d->used_seen = 0;
	tv_wr(d, C_QSEL, 2, 0);
	tv_wr(d, C_QSIZE, 2, size);
	tv_wr(d, C_QDESC, 4, (uint32_t)desc);
	tv_wr(d, C_QDESC + 4, 4, (uint32_t)(desc >> 32));
	tv_wr(d, C_QAVAIL, 4, (uint32_t)avail);
	tv_wr(d, C_QAVAIL + 4, 4, (uint32_t)(avail >> 32));
	tv_wr(d, C_QUSED, 4, (uint32_t)used);
	tv_wr(d, C_QUSED + 4, 4, (uint32_t)(used >> 32));
	tv_wr(d, C_QENABLE, 2, 1);
	return (int)tv_rd(d, C_QENABLE, 2);
}

static inline void tv_drv_ok(struct tv_drv *d)
{
	tv_wr(d, C_STATUS, 1, 1 | 2 | 8 | 4);
}

/* Negotiate VERSION_1 (plus @extra), set up queue 0, DRIVER_OK. 0 or -1. */
static inline int tv_drv_init(struct tv_drv *d, uint64_t extra, uint16_t qsize, uint64_t ring_gpa)
{
	if (!(tv_drv_negotiate(d, 1ull << 32 | extra) & 8))
		return -1;
	if (tv_drv_queue(d, qsize, ring_gpa) != 1)
		return -1;
	tv_drv_ok(d);
	return 0;
}

/* Write descriptor @i of queue 0. */
static inline void tv_desc(struct tv_drv *d, uint16_t i, uint64_t addr, uint32_t len,
			   uint16_t flags, uint16_t next)
{
	uint8_t *p = tv_gpa(&d->vm->mem, d->desc + 16ull * i, 16);

	tv_put64(p, addr);
	tv_put32(p + 8, len);
	tv_put16(p + 12, flags);
	tv_put16(p + 14, next);
}

/* Make chain @head available and kick queue 0 through the MMIO notify area
 * (a 4-byte write: KVM's ioeventfd would only catch 2-byte ones). */
static inline void tv_post(struct tv_drv *d, uint16_t head)
{
	uint8_t *ring = tv_gpa(&d->vm->mem, d->avail, 4 + 2ull * d->qsize);

	tv_put16(ring + 4 + 2 * (d->avail_idx % d->qsize), head);
	d->avail_idx++;
	__atomic_store_n((uint16_t *)(void *)(ring + 2), d->avail_idx, __ATOMIC_RELEASE);
	tv_wr(d, TV_NOTIFY, 4, 0);
}

static inline uint16_t tv_used_idx(struct tv_drv *d)
{
	return __atomic_load_n((uint16_t *)(void *)tv_gpa(&d->vm->mem, d->used + 2, 2),
			       __ATOMIC_ACQUIRE);
}

/* Run the event loop until the used index moves past what we saw (at most
 * @rounds rounds of up to 1 s; pass a small count to check nothing happens).
 * Returns 1 and the used element (head, len) or 0 if nothing arrived. */
static inline int tv_wait_used(struct tv_drv *d, int rounds, uint32_t *head, uint32_t *len)
{
	for (int i = 0; i <= rounds; i++) {
		if (tv_used_idx(d) != d->used_seen) {
			uint8_t *e = tv_gpa(&d->vm->mem, d->used + 4 + 8ull * (d->used_seen % d->qsize), 8);

			if (head)
				*head = tv_get32(e);
			if (len)
				*len = tv_get32(e + 4);
			d->used_seen++;
			return 1;
		}
		if (i < rounds)
			vmm_loop_run_once(&d->vm->loop, rounds > 3 ? 1000 : 50);
	}
	return 0;
}

/* ---- temporary files ---- */

static char tv_dir[] = "/tmp/cowvm-test-dev-XXXXXX";
static int tv_dir_made;	/* not "ends in X": mkdtemp may pick an X itself */

static inline const char *tv_path(const char *name)
{
	static char buf[8][256];
	static int i;
	char *p = buf[i++ % 8];

	if (!tv_dir_made) {
		if (!mkdtemp(tv_dir))
			tv_die("mkdtemp");
		tv_dir_made = 1;
	}
	snprintf(p, 256, "%s/%s", tv_dir, name);
	return p;
}

/* Create @name of @size bytes filled with @fill. */
static inline const char *tv_file(const char *name, size_t size, uint8_t fill)
{
	const char *p = tv_path(name);
	uint8_t *b = malloc(size);
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);

	if (!b || fd < 0)
		tv_die(p);
	memset(b, fill, size);
	if (pwrite(fd, b, size, 0) != (ssize_t)size)
		tv_die(p);
	close(fd);
	free(b);
	return p;
}

static inline void tv_cleanup(void)
{
	char cmd[300];

	if (tv_dir_made) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tv_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "warning: could not remove %s\n", tv_dir);
	}
}

#endif
