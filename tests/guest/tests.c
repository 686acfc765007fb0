/* tests/guest/tests.c — the commands that need no virtio device. */
#include "guest.h"

#define TICK_NS (100ULL * 1000000ULL)

/* cowvm.test=fault: executes ud2 in ring 3, to exercise the exception path
 * (ring-0 handler prints "exception 6 ..." and exits with status 70). */
void test_fault(void)
{
	__asm__ __volatile__("ud2");
	die(ST_FAIL, "fault: ud2 did not fault");
}

/* cowvm.test=hello */
void test_hello(void)
{
	say("hello");
	guest_exit(ST_OK);
}

static const char *mem_type_name(uint32_t t)
{
	switch (t) {
	case 1: return "ram";
	case 2: return "reserved";
	case 3: return "acpi";
	case 4: return "nvs";
	case 5: return "unusable";
	case 7: return "pmem";
	default: return "other";
	}
}

/* cowvm.test=info: boot data, memory map, RAM, CPUs, clock, PCI bus 0. */
void test_info(void)
{
	say("cmdline %s", cmdline_raw());
	for (uint32_t i = 0; i < g_memmap_n; i++)
		say("memmap 0x%016lx-0x%016lx %s", g_memmap[i].start, g_memmap[i].end - 1,
		    mem_type_name(g_memmap[i].type));
	uint64_t ram = mem_ram_total();
	say("ram bytes=%lu mib=%lu", ram, ram / MIB);
	say("cpus count=%u", mptable_cpu_count());
	say("clock source=%s", time_source());
	uint32_t r[4];
	cpuid(0x80000000, 0, r);
	if (r[0] >= 0x80000008) {
		cpuid(0x80000008, 0, r);
		say("cpu phys-bits=%u virt-bits=%u", r[0] & 0xff, (r[0] >> 8) & 0xff);
	}
	struct pci_dev devs[64];
	uint32_t n = pci_scan(devs, ARRAY_SIZE(devs));
	for (uint32_t i = 0; i < n; i++)
		say("pci %02x:%02x.%u %04x:%04x", devs[i].bus, devs[i].dev, devs[i].fn,
		    devs[i].vendor, devs[i].device);
	say("info ok pci=%u", n);
	guest_exit(ST_OK);
}

/* cowvm.test=dirty mb=M [pass_ms=T]: rewrites M MiB (default 16) every
 * pass; each word becomes a function of its old value, its index and the
 * pass, and the running 64-bit sum of all values written is printed after
 * each pass.  With pass_ms, passes start at most every T ms. */
void test_dirty(void)
{
	uint64_t mb = 16;
	cmdline_u64("mb", &mb);
	if (mb == 0 || mb > 1024 * 1024)
		die(ST_BAD_ARG, "dirty: mb=%lu is out of range", mb);
	uint64_t base = mem_alloc(mb * MIB, 2 * MIB);
	if (!base)
		die(ST_NO_MEMORY, "dirty: cannot allocate %lu MiB (%lu MiB free)", mb,
		    mem_alloc_avail() / MIB);
	uint64_t pass_ms = 0;
	cmdline_u64("pass_ms", &pass_ms);
	if (pass_ms > 3600 * 1000)
		die(ST_BAD_ARG, "dirty: pass_ms=%lu is out of range", pass_ms);
	volatile uint64_t *w = (volatile uint64_t *)(uintptr_t)base;
	uint64_t words = mb * MIB / 8, sum = 0;
	say("dirty start mb=%lu at 0x%lx", mb, base);
	uint64_t t = pass_ms ? time_ns() : 0;
	for (uint64_t pass = 1;; pass++) {
		for (uint64_t i = 0; i < words; i++) {
			uint64_t v = w[i] * 0x5851f42d4c957f2dULL + ((pass << 40) ^ i) + 1;
			w[i] = v;
			sum += v;
		}
		say("dirty pass %lu sum=0x%016lx", pass, sum);
		if (pass_ms) {
			t += pass_ms * 1000000;
			while (time_ns() < t)
				cpu_relax();
		}
	}
}

/* Range [s, e) minus [xs, xe): up to two pieces in out[], returns count. */
static uint32_t subtract(uint64_t s, uint64_t e, uint64_t xs, uint64_t xe, uint64_t out[2][2])
{
	uint32_t n = 0;
	if (xe <= s || xs >= e) {
		out[n][0] = s, out[n][1] = e, n++;
		return n;
	}
	if (xs > s)
		out[n][0] = s, out[n][1] = xs, n++;
	if (xe < e)
		out[n][0] = xe, out[n][1] = e, n++;
	return n;
}

#define FILL_MAX 2 * MEMMAP_MAX
static uint64_t fill_r[FILL_MAX][2];
static uint32_t fill_n;

/* Free RAM: memmap RAM from 4 KiB up, minus the image and allocations,
 * 8-byte aligned; also maps RAM above 4 GiB.  WHO names the command in errors. */
static void free_ranges(const char *who)
{
	uint64_t us, ue;
	for (uint32_t i = 0; i < g_memmap_n; i++)
		if (g_memmap[i].type == MEM_TYPE_RAM &&
		    !mem_map_high(g_memmap[i].start, g_memmap[i].end))
			die(ST_NO_MEMORY, "%s: cannot map RAM 0x%lx-0x%lx", who,
			    g_memmap[i].start, g_memmap[i].end);
	mem_used_region(&us, &ue);   /* after mapping: page directories are used */
	fill_n = 0;
	for (uint32_t i = 0; i < g_memmap_n; i++) {
		if (g_memmap[i].type != MEM_TYPE_RAM)
			continue;
		uint64_t s = g_memmap[i].start < PAGE_SIZE ? PAGE_SIZE : g_memmap[i].start;
		uint64_t e = g_memmap[i].end;
		s = ALIGN_UP(s, 8);
		e = ALIGN_DOWN(e, 8);
		if (s >= e)
			continue;
		uint64_t parts[2][2];
		uint32_t np = subtract(s, e, us, ue, parts);
		for (uint32_t k = 0; k < np && fill_n < FILL_MAX; k++) {
			fill_r[fill_n][0] = parts[k][0];
			fill_r[fill_n][1] = parts[k][1];
			fill_n++;
		}
	}
}

/* cowvm.test=memfill seed=N: fill all free RAM, verify forever. */
void test_memfill(void)
{
	uint64_t seed;
	if (!cmdline_u64("seed", &seed))
		die(ST_BAD_ARG, "memfill needs seed=N");
	if (g_memmap_n == 0)
		die(ST_BAD_BOOTINFO, "memfill: no memory map in start_info");
	free_ranges("memfill");
	uint64_t total = 0;
	for (uint32_t r = 0; r < fill_n; r++)
		total += fill_r[r][1] - fill_r[r][0];
	say("memfill seed=%lu bytes=%lu ranges=%u", seed, total, fill_n);
	uint64_t t0 = time_ns();
	for (uint32_t r = 0; r < fill_n; r++)
		for (uint64_t a = fill_r[r][0]; a < fill_r[r][1]; a += 8)
			*(volatile uint64_t *)(uintptr_t)a = mem_word(seed, a);
	say("memfill filled ms=%lu", (time_ns() - t0) / 1000000);
	for (uint64_t pass = 1;; pass++) {
		for (uint32_t r = 0; r < fill_n; r++) {
			for (uint64_t a = fill_r[r][0]; a < fill_r[r][1]; a += 8) {
				uint64_t got = *(volatile uint64_t *)(uintptr_t)a;
				uint64_t want = mem_word(seed, a);
				if (got != want)
					die(ST_MEMCHECK_BAD, "memcheck bad word at 0x%lx: got 0x%016lx want 0x%016lx",
					    a, got, want);
			}
		}
		gprintf("memcheck ok %lu\n", pass);
	}
}

/* Word written by counter's fill at address A: memfill's pattern, never zero. */
#define COUNTER_FILL_SEED 0xf111
static inline uint64_t fill_word(uint64_t a)
{
	return mem_word(COUNTER_FILL_SEED, a) | 1;
}

/* fill=MB or fill=all: fill_word() over the first MB MiB of free RAM (in
 * memmap order) or all of it. */
static void counter_fill(const char *arg)
{
	if (g_memmap_n == 0)
		die(ST_BAD_BOOTINFO, "counter: fill needs a memory map in start_info");
	free_ranges("counter");
	uint64_t total = 0, want, mb = 0;
	for (uint32_t r = 0; r < fill_n; r++)
		total += fill_r[r][1] - fill_r[r][0];
	if (strcmp(arg, "all") == 0) {
		want = total;
	} else {
		cmdline_u64("fill", &mb);
		if (mb > total / MIB)
			die(ST_NO_MEMORY, "counter: fill=%lu but only %lu MiB of RAM is free",
			    mb, total / MIB);
		want = mb * MIB;
	}
	for (uint32_t r = 0; r < fill_n && want; r++) {
		uint64_t s = fill_r[r][0], n = fill_r[r][1] - s;
		if (n > want)
			n = want;
		for (uint64_t a = s; a < s + n; a += 8)
			*(volatile uint64_t *)(uintptr_t)a = fill_word(a);
		want -= n;
	}
}

/* cowvm.test=counter [fill=MB|all]: "tick N" every 100 ms, forever; with
 * fill, only after filling that much free RAM (so the RAM is in use). */
void test_counter(void)
{
	const char *fill = cmdline_get("fill");
	if (fill)
		counter_fill(fill);
	uint64_t t0 = time_ns();
	for (uint64_t n = 0;; n++) {
		uint64_t due = t0 + n * TICK_NS;
		while (time_ns() < due)
			cpu_relax();
		gprintf("tick %lu\n", n);
	}
}
