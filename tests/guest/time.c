/* tests/guest/time.c — a nanosecond clock for ring 3.
 *
 * kvmclock when entry.S enabled it (MSR_KVM_SYSTEM_TIME_NEW pointing at
 * boot_pvclock, which ring 3 can read); otherwise the TSC, calibrated once
 * against PIT channel 2 (gate on port 0x61, 10 ms one-shot), else PIT
 * channel 0 read back by latching, else CPUID leaf 0x40000010 / 0x15 /
 * 0x16, else a guess of 1 GHz.
 */
#include "guest.h"

struct pvclock {
	volatile uint32_t version;
	uint32_t pad0;
	uint64_t tsc_timestamp;
	uint64_t system_time;
	uint32_t tsc_to_system_mul;
	int8_t tsc_shift;
	uint8_t flags;
	uint8_t pad[2];
};

#define PIT_HZ        1193182ULL
#define PIT_CAL_TICKS 11932ULL       /* ~10 ms */
#define PIT_POLL_MAX  2000000U

enum { SRC_NONE, SRC_KVMCLOCK, SRC_TSC };
static int src = SRC_NONE;
static const char *src_name = "none";
static uint64_t tsc_khz;
static uint64_t tsc_base;

/* Nanoseconds from the pvclock structure, retrying while it is updated. */
static uint64_t kvmclock_ns(void)
{
	const struct pvclock *p = (const struct pvclock *)boot_pvclock;
	uint32_t v;
	uint64_t ns;
	do {
		v = p->version;
		barrier();
		uint64_t delta = rdtsc() - p->tsc_timestamp;
		if (p->tsc_shift < 0)
			delta >>= -p->tsc_shift;
		else
			delta <<= p->tsc_shift;
		ns = p->system_time + (uint64_t)(((unsigned __int128)delta * p->tsc_to_system_mul) >> 32);
		barrier();
	} while ((v & 1) || v != p->version);
	return ns;
}

/* TSC ticks in ~10 ms of PIT channel 2 (mode 0), converted to kHz; 0 if
 * the gate/output port 0x61 does not behave like a PIT (no speaker port:
 * reads as 0xFF, or OUT2 never rises). */
static uint64_t pit2_calibrate(void)
{
	uint8_t g = inb(0x61);
	outb(0x61, (uint8_t)((g & ~0x02) | 0x01));   /* gate on, speaker off */
	outb(0x43, 0xb0);                             /* ch 2, lo/hi, mode 0, binary */
	outb(0x42, PIT_CAL_TICKS & 0xff);
	outb(0x42, PIT_CAL_TICKS >> 8);
	uint64_t t0 = rdtsc();
	if (inb(0x61) & 0x20) {                       /* OUT2 must start low */
		outb(0x61, g);
		return 0;
	}
	uint32_t i;
	for (i = 0; i < PIT_POLL_MAX; i++)
		if (inb(0x61) & 0x20)
			break;
	uint64_t t1 = rdtsc();
	outb(0x61, g);
	if (i == PIT_POLL_MAX || t1 <= t0)
		return 0;
	return (t1 - t0) * PIT_HZ / PIT_CAL_TICKS / 1000;
}

/* Current count of PIT channel 0 (latched). */
static uint16_t pit0_read(void)
{
	outb(0x43, 0x00);                             /* latch channel 0 */
	uint8_t lo = inb(0x40);
	uint8_t hi = inb(0x40);
	return (uint16_t)(lo | (hi << 8));
}

/* Like pit2_calibrate, with channel 0 in mode 2 (period 65536) read back by
 * latching; for machines without the port-0x61 speaker gate.  0 if the
 * counter does not move. */
static uint64_t pit0_calibrate(void)
{
	outb(0x43, 0x34);                             /* ch 0, lo/hi, mode 2, binary */
	outb(0x40, 0);
	outb(0x40, 0);                                /* 0 = 65536 */
	uint16_t prev = pit0_read();
	uint64_t t0 = rdtsc(), elapsed = 0;
	uint32_t i;
	for (i = 0; i < PIT_POLL_MAX && elapsed < PIT_CAL_TICKS; i++) {
		uint16_t cur = pit0_read();
		elapsed += (uint16_t)(prev - cur);        /* counts down, wraps */
		prev = cur;
	}
	uint64_t t1 = rdtsc();
	if (elapsed < PIT_CAL_TICKS || t1 <= t0)
		return 0;
	return (t1 - t0) * PIT_HZ / elapsed / 1000;
}

/* TSC frequency from CPUID (hypervisor leaf, 0x15, 0x16), kHz or 0. */
static uint64_t cpuid_tsc_khz(void)
{
	uint32_t r[4];
	cpuid(0x40000000, 0, r);
	if (r[0] >= 0x40000010 && r[0] < 0x40000100) {
		cpuid(0x40000010, 0, r);
		if (r[0])
			return r[0];
	}
	cpuid(0, 0, r);
	uint32_t max = r[0];
	if (max >= 0x15) {
		cpuid(0x15, 0, r);
		if (r[0] && r[1] && r[2])
			return (uint64_t)r[2] * r[1] / r[0] / 1000;
	}
	if (max >= 0x16) {
		cpuid(0x16, 0, r);
		if (r[0] & 0xffff)
			return (uint64_t)(r[0] & 0xffff) * 1000;
	}
	return 0;
}

/* Picks the clock source on first use. */
static void time_init(void)
{
	const struct pvclock *p = (const struct pvclock *)boot_pvclock;
	if (boot_kvmclock && p->version != 0 && p->tsc_to_system_mul != 0) {
		src = SRC_KVMCLOCK;
		src_name = "kvmclock";
		return;
	}
	src = SRC_TSC;
	tsc_khz = pit2_calibrate();
	src_name = "tsc-pit2";
	if (tsc_khz == 0) {
		tsc_khz = pit0_calibrate();
		src_name = "tsc-pit0";
	}
	if (tsc_khz == 0) {
		tsc_khz = cpuid_tsc_khz();
		src_name = "tsc-cpuid";
	}
	if (tsc_khz == 0) {
		tsc_khz = 1000000;
		src_name = "tsc-guess-1GHz";
	}
	tsc_base = rdtsc();
}

uint64_t time_ns(void)
{
	if (src == SRC_NONE)
		time_init();
	if (src == SRC_KVMCLOCK)
		return kvmclock_ns();
	uint64_t d = rdtsc() - tsc_base;
	return d / tsc_khz * 1000000 + (d % tsc_khz) * 1000000 / tsc_khz;
}

const char *time_source(void)
{
	if (src == SRC_NONE)
		time_init();
	return src_name;
}

/* Busy-waits NS nanoseconds. */
void delay_ns(uint64_t ns)
{
	uint64_t end = time_ns() + ns;
	while (time_ns() < end)
		cpu_relax();
}
