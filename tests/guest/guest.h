/* tests/guest/guest.h — shared declarations of the cowvm test guest.
 *
 * The guest is a freestanding x86-64 PVH kernel.  entry.S does the minimum in
 * ring 0 (paging, GDT/IDT/TSS, kvmclock MSR) and drops to ring 3 with IOPL 3,
 * where everything else (port I/O, MMIO, drivers, tests) runs.  Physical
 * memory is identity mapped, so a physical address is also a pointer.
 */
#ifndef COWVM_GUEST_H
#define COWVM_GUEST_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdarg.h>

/* Exit statuses written to the debug-exit port (see README.md). */
enum guest_status {
	ST_OK           = 0,
	ST_FAIL         = 1,   /* generic failure (e.g. fault did not fault) */
	ST_BAD_COMMAND  = 2,   /* unknown or missing cowvm.test= */
	ST_BAD_ARG      = 3,   /* missing or malformed argument */
	ST_NO_DEVICE    = 4,   /* no such PCI/virtio device */
	ST_DEVICE_ERROR = 5,   /* device init failed, I/O error, timeout */
	ST_MISMATCH     = 6,   /* disk-verify found a bad sector */
	ST_MEMCHECK_BAD = 7,   /* memfill found a bad word */
	ST_RNG_BAD      = 8,   /* rng returned nothing or only zeros */
	ST_BAD_BOOTINFO = 9,   /* start_info missing or invalid */
	ST_NO_MEMORY    = 10,  /* not enough free RAM for the test */
	ST_EXCEPTION    = 64,  /* 64 + vector: CPU exception */
};

#define PAGE_SIZE 4096UL
#define MIB       (1024UL * 1024UL)
#define GIB       (1024UL * MIB)

#define ALIGN_UP(x, a)   (((x) + (a) - 1) & ~((uint64_t)(a) - 1))
#define ALIGN_DOWN(x, a) ((x) & ~((uint64_t)(a) - 1))
#define ARRAY_SIZE(a)    (sizeof(a) / sizeof((a)[0]))

#define barrier()        __asm__ __volatile__("" ::: "memory")
#define mb()             __asm__ __volatile__("mfence" ::: "memory")

/* Pointer to physical address A (identity map); hides the constant from
 * the compiler so low fixed addresses do not trigger bounds warnings. */
static inline void *phys(uint64_t a)
{
	__asm__("" : "+r"(a));
	return (void *)(uintptr_t)a;
}

/* ---- port I/O (ring 3 with IOPL 3, or ring 0) ---- */
static inline void outb(uint16_t port, uint8_t v) { __asm__ __volatile__("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ __volatile__("outw %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ __volatile__("outl %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ __volatile__("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; __asm__ __volatile__("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ __volatile__("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

/* ---- MMIO ---- */
static inline uint8_t mmio_r8(uint64_t a) { return *(volatile uint8_t *)a; }
static inline uint16_t mmio_r16(uint64_t a) { return *(volatile uint16_t *)a; }
static inline uint32_t mmio_r32(uint64_t a) { return *(volatile uint32_t *)a; }
static inline void mmio_w8(uint64_t a, uint8_t v) { *(volatile uint8_t *)a = v; }
static inline void mmio_w16(uint64_t a, uint16_t v) { *(volatile uint16_t *)a = v; }
static inline void mmio_w32(uint64_t a, uint32_t v) { *(volatile uint32_t *)a = v; }

static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__asm__ __volatile__("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}
static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}
static inline void cpu_relax(void) { __asm__ __volatile__("pause" ::: "memory"); }

/* ---- string.c ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);

/* ---- serial.c: COM1 output and formatted printing ---- */
void serial_init(void);
void serial_write(const char *s, size_t n);
/* printf subset: %s %c %d %u %x %p, 'l'/'ll' modifiers, '0' flag, width. */
void gprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Like gprintf, prefixed with "cowvm-guest: " and followed by a newline. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vsay(const char *fmt, va_list ap);

/* ---- exit.c ---- */
/* Ends the run with STATUS via the debug-exit port; spins if that returns. */
void guest_exit(uint32_t status) __attribute__((noreturn));
/* say() the message, then guest_exit(status). */
void die(uint32_t status, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));

/* ---- mem.c: memory map, identity mapping of high RAM, bump allocator ---- */
#define MEMMAP_MAX 64
struct mem_range { uint64_t start, end; uint32_t type; };  /* [start, end) */
#define MEM_TYPE_RAM 1
extern struct mem_range g_memmap[MEMMAP_MAX];
extern uint32_t g_memmap_n;
/* Copies and validates the start_info memmap (entries, addr, size). */
void mem_init(uint64_t memmap_paddr, uint32_t entries);
uint64_t mem_ram_total(void);
/* Maps [start, end) identity (cacheable) if above 4 GiB; false if impossible. */
bool mem_map_high(uint64_t start, uint64_t end);
/* Bump-allocates SIZE bytes (aligned to ALIGN) of free RAM after the image,
 * inside the RAM range that holds the image; 0 if it does not fit. */
uint64_t mem_alloc(uint64_t size, uint64_t align);
/* Largest size mem_alloc could still return (with 2 MiB alignment). */
uint64_t mem_alloc_avail(void);
/* [image start, end of allocations): memory the guest itself uses. */
void mem_used_region(uint64_t *start, uint64_t *end);

/* ---- cmdline.c ---- */
/* Copies the command line (bounded) and splits it into key=value tokens. */
void cmdline_init(uint64_t paddr);
/* Value of KEY, or NULL. A bare KEY (no '=') yields "". */
const char *cmdline_get(const char *key);
/* Parses KEY as an unsigned number (decimal or 0x hex) into *out.
 * Returns false if absent; dies with ST_BAD_ARG if malformed. */
bool cmdline_u64(const char *key, uint64_t *out);
const char *cmdline_raw(void);

/* ---- time.c ---- */
/* Nanoseconds since an arbitrary origin (kvmclock, else TSC calibrated
 * against PIT channel 2; calibration happens on first use). */
uint64_t time_ns(void);
const char *time_source(void);
void delay_ns(uint64_t ns);

/* ---- mptable.c ---- */
/* Number of enabled processors in the MP table, 0 if no valid table. */
uint32_t mptable_cpu_count(void);

/* ---- pci.c ---- */
struct pci_dev {
	uint8_t bus, dev, fn;
	uint16_t vendor, device;
};
uint32_t pci_read32(const struct pci_dev *d, uint8_t off);
uint16_t pci_read16(const struct pci_dev *d, uint8_t off);
uint8_t pci_read8(const struct pci_dev *d, uint8_t off);
void pci_write32(const struct pci_dev *d, uint8_t off, uint32_t v);
void pci_write16(const struct pci_dev *d, uint8_t off, uint16_t v);
/* Scans bus 0; fills up to MAX entries and returns how many were found. */
uint32_t pci_scan(struct pci_dev *out, uint32_t max);
/* Finds the INDEX-th (0-based) device with VENDOR:DEVICE on bus 0. */
bool pci_find(uint16_t vendor, uint16_t device, uint32_t index, struct pci_dev *out);
/* Returns the memory address of BAR (0..5), assigning one below 4 GiB if it
 * is unassigned or not reachable; enables memory decode and bus mastering.
 * Returns 0 for I/O BARs or on failure. */
uint64_t pci_bar_addr(const struct pci_dev *d, uint32_t bar);

/* ---- pattern.h is inline ---- */
#include "pattern.h"

/* ---- tests ---- */
void test_hello(void);
void test_fault(void);
void test_info(void);
void test_counter(void);
void test_dirty(void);
void test_memfill(void);
void test_disk(bool write);
void test_rng(void);
void test_irq(void);

/* Boot data recorded by entry.S (in ring 0) for ring 3. */
extern uint32_t boot_start_info;      /* %ebx at entry */
extern uint32_t boot_kvmclock;        /* 1 if kvmclock MSR was written */
extern uint8_t boot_pvclock[];        /* struct pvclock_vcpu_time_info */
extern uint64_t pt_pml4[], pt_pdpt[];
extern uint8_t __image_start[], __image_end[];

#endif
