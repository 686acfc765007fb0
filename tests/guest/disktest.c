/* tests/guest/disktest.c — disk-write / disk-verify over a whole virtio-blk disk.
 *
 * The disk is covered by requests of REQ bytes (up to 1 MiB), in request
 * order.  In-flight slots are split in two groups: while the device works on
 * one group, the CPU fills (write) or checks (verify) the other, and each
 * group is submitted with a single notification.  Word W of sector S holds
 * disk_word(disk_sector_key(seed, S), W) (pattern.h).
 *
 * Stalls: the guest waits only in wait_slots, always with requests
 * outstanding.  A wait is the time from entering wait_slots, or from the
 * previous completion seen there, to the next completion seen there (kvmclock,
 * time_ns).  Time spent filling or checking buffers between waits is not
 * counted, so a device stall that begins during a fill shows shortened by
 * at most one fill.  The longest wait and the number over 10 ms are kept for
 * the read/write requests of the passes since stall_reset(); the final FLUSH's
 * wait is not counted (it writes back the whole pass).
 */
#include "blk.h"

#define REQ_MAX      (1 * MIB)
#define SLOTS_MAX    16
#define WAIT_NS      (60ULL * 1000000000ULL)   /* no progress for this long: give up */
#define STALL_LONG_NS (10ULL * 1000000ULL)     /* a wait this long or longer is counted */

static struct blk disk;
static struct blk_req reqs[SLOTS_MAX] __attribute__((aligned(64)));

struct slot {
	uint64_t sector;      /* first sector */
	uint32_t nsec;
	bool busy;            /* submitted, not completed */
};
static struct slot slots[SLOTS_MAX];

/* The waits for completions since stall_reset() (see the top comment). */
static struct {
	uint64_t max_ns;      /* longest wait */
	uint64_t nlong;       /* waits of STALL_LONG_NS or more */
} stall;

static void stall_reset(void)
{
	stall.max_ns = 0;
	stall.nlong = 0;
}

/* Fills NSEC sectors at BUF with the pattern for SEED starting at SECTOR. */
static void fill(uint64_t *buf, uint64_t seed, uint64_t sector, uint32_t nsec)
{
	for (uint32_t s = 0; s < nsec; s++, buf += 64) {
		uint64_t key = disk_sector_key(seed, sector + s);
		for (uint32_t w = 0; w < 64; w++)
			buf[w] = disk_word(key, w);
	}
}

/* Returns the index (0-based, < NSEC) of the first sector that differs
 * from the pattern, or NSEC if all match. */
static uint32_t check(const uint64_t *buf, uint64_t seed, uint64_t sector, uint32_t nsec)
{
	for (uint32_t s = 0; s < nsec; s++, buf += 64) {
		uint64_t key = disk_sector_key(seed, sector + s);
		uint64_t diff = 0;
		for (uint32_t w = 0; w < 64; w++)
			diff |= buf[w] ^ disk_word(key, w);
		if (diff)
			return s;
	}
	return nsec;
}

/* Polls the used ring until slots [lo, hi) have all completed; dies on an
 * I/O error status or when nothing completes for WAIT_NS.  With COUNT, each
 * wait for a completion goes into stall. */
static void wait_slots(uint32_t lo, uint32_t hi, bool count)
{
	uint64_t last = time_ns();
	uint32_t spins = 0;
	for (;;) {
		bool pending = false;
		for (uint32_t i = lo; i < hi; i++)
			pending |= slots[i].busy;
		if (!pending)
			return;
		uint64_t tok;
		uint32_t len;
		if (virtq_get(&disk.vq, &tok, &len)) {
			if (tok >= SLOTS_MAX || !slots[tok].busy)
				die(ST_DEVICE_ERROR, "virtio-blk: completion for idle slot %lu", tok);
			slots[tok].busy = false;
			if (reqs[tok].status != BLK_S_OK)
				die(ST_DEVICE_ERROR, "virtio-blk: request at sector %lu failed, status %u",
				    slots[tok].sector, reqs[tok].status);
			uint64_t now = time_ns();
			if (count) {
				uint64_t wait = now - last;
				if (wait > stall.max_ns)
					stall.max_ns = wait;
				if (wait >= STALL_LONG_NS)
					stall.nlong++;
			}
			last = now;
			continue;
		}
		cpu_relax();
		if (++spins % 4096 == 0 && time_ns() - last > WAIT_NS)
			die(ST_DEVICE_ERROR, "virtio-blk: no completion for 60 s");
	}
}

/* The buffers and slots of a run (set up once by test_disk). */
static struct {
	uint64_t req, bufs;
	uint32_t ngroups, per_group, spr;
} run;

/* Write (or read and check) sectors [first, end) with @seed's pattern,
 * then (write) flush. Dies on an error or a mismatch. */
static void disk_pass(bool write, uint64_t seed, uint64_t first, uint64_t end)
{
	uint64_t next = first;             /* next sector to submit */
	bool any_busy = false;
	for (uint32_t g = 0;; g = (g + 1) % run.ngroups) {
		uint32_t lo = g * run.per_group, hi = lo + run.per_group;
		wait_slots(lo, hi, true);
		/* verify what this group read (in sector order) */
		if (!write) {
			for (uint32_t i = lo; i < hi && slots[i].nsec; i++) {
				const uint64_t *b = (const uint64_t *)(uintptr_t)(run.bufs + i * run.req);
				uint32_t bad = check(b, seed, slots[i].sector, slots[i].nsec);
				if (bad < slots[i].nsec)
					die(ST_MISMATCH, "disk-verify mismatch at sector %lu",
					    slots[i].sector + bad);
			}
		}
		for (uint32_t i = lo; i < hi; i++)
			slots[i].nsec = 0;
		if (next >= end) {
			any_busy = false;
			for (uint32_t i = 0; i < run.ngroups * run.per_group; i++)
				any_busy |= slots[i].busy || slots[i].nsec;
			if (!any_busy)
				break;
			continue;
		}
		/* refill this group */
		for (uint32_t i = lo; i < hi && next < end; i++) {
			uint64_t left = end - next;
			uint32_t n = left < run.spr ? (uint32_t)left : run.spr;
			uint64_t b = run.bufs + i * run.req;
			if (write)
				fill((uint64_t *)(uintptr_t)b, seed, next, n);
			slots[i].sector = next;
			slots[i].nsec = n;
			slots[i].busy = true;
			if (!blk_queue(&disk, &reqs[i], write ? BLK_T_OUT : BLK_T_IN, next, b,
				       (uint32_t)(n * SECTOR_SIZE), i))
				die(ST_DEVICE_ERROR, "virtio-blk: queue full (slot %u)", i);
			next += n;
		}
		virtq_kick(&disk.vq);
	}
	if (write && disk.has_flush) {
		slots[0].busy = true;
		slots[0].sector = 0;
		if (!blk_queue(&disk, &reqs[0], BLK_T_FLUSH, 0, 0, 0, 0))
			die(ST_DEVICE_ERROR, "virtio-blk: cannot queue flush");
		virtq_kick(&disk.vq);
		wait_slots(0, 1, false);
	}
}

void test_disk(bool write)
{
	const char *name = write ? "disk-write" : "disk-verify";
	uint64_t seed, seed2 = 0, gap_ms = 0, hold_ms = 0, index = 0;
	if (!cmdline_u64("seed", &seed))
		die(ST_BAD_ARG, "%s needs seed=N", name);
	cmdline_u64("disk", &index);
	if (index > 255)
		die(ST_BAD_ARG, "disk=%lu is out of range", index);
	bool two = cmdline_u64("seed2", &seed2);
	cmdline_u64("gap_ms", &gap_ms);
	cmdline_u64("hold_ms", &hold_ms);
	if (!blk_open(&disk, (uint32_t)index)) {
		if (disk.vd.pci.vendor == 0)
			die(ST_NO_DEVICE, "%s: no virtio-blk disk %lu (PCI 1af4:1042) found", name, index);
		die(ST_DEVICE_ERROR, "%s: virtio-blk disk %lu could not be set up", name, index);
	}
	if (write && disk.ro)
		die(ST_DEVICE_ERROR, "%s: disk %lu is read-only", name, index);

	/* request size and number of slots */
	uint64_t req = (uint64_t)disk.seg_size * disk.max_segs;
	if (req > REQ_MAX)
		req = REQ_MAX;
	req = req >= 4096 ? ALIGN_DOWN(req, 4096) : ALIGN_DOWN(req, SECTOR_SIZE);
	uint32_t descs = 2 + (uint32_t)((req + disk.seg_size - 1) / disk.seg_size);
	uint64_t nslots = disk.vq.size / descs;
	if (nslots > SLOTS_MAX)
		nslots = SLOTS_MAX;
	uint64_t avail = mem_alloc_avail();
	if (nslots * req > avail / 2)
		nslots = avail / 2 / req;
	if (nslots == 0)
		die(ST_NO_MEMORY, "%s: not enough free RAM for one %lu-byte request", name, req);
	uint64_t bufs = mem_alloc(nslots * req, 4096);
	if (!bufs)
		die(ST_NO_MEMORY, "%s: cannot allocate %lu bytes of buffers", name, nslots * req);
	run.req = req;
	run.bufs = bufs;
	run.ngroups = nslots >= 2 ? 2 : 1;
	run.per_group = (uint32_t)(nslots / run.ngroups);
	run.spr = (uint32_t)(req / SECTOR_SIZE);

	stall_reset();
	uint64_t t0 = time_ns();
	if (two && !write) {
		/* what a two-phase disk-write left: seed2, then seed */
		disk_pass(false, seed2, 0, disk.capacity / 2);
		disk_pass(false, seed, disk.capacity / 2, disk.capacity);
		two = false;
	} else {
		disk_pass(write, seed, 0, disk.capacity);
	}
	uint64_t ns = time_ns() - t0;
	uint64_t bytes = disk.capacity * SECTOR_SIZE;
	uint64_t us = ns / 1000 ? ns / 1000 : 1;
	say("%s stats bytes=%lu ms=%lu mbps=%lu req=%lu slots=%lu kicks=%lu flush=%s"
	    " stall_max_us=%lu stalls_10ms=%lu",
	    name, bytes, ns / 1000000, bytes / us, req, nslots, disk.vq.kicks,
	    write ? (disk.has_flush ? "yes" : "not-offered") : "n/a",
	    stall.max_ns / 1000, stall.nlong);
	if (two) {
		/* seed over the disk, a pause, seed2 over its first half: both
		 * checked (the host snapshots the disk during the pause) */
		uint64_t half = disk.capacity / 2;
		say("%s phase 1 done seed=%lu, waiting %lu ms", name, seed, gap_ms);
		uint64_t until = time_ns() + gap_ms * 1000000ULL;
		while (time_ns() < until)
			cpu_relax();
		stall_reset();
		disk_pass(true, seed2, 0, half);
		disk_pass(false, seed2, 0, half);
		disk_pass(false, seed, half, disk.capacity);
		say("%s phase 2 ok seed2=%lu sectors=%lu stall_max_us=%lu stalls_10ms=%lu",
		    name, seed2, half, stall.max_ns / 1000, stall.nlong);
	}
	say("%s ok sectors=%lu", name, disk.capacity);
	/* stay up (no I/O) so the host can finish what it sent while we wrote */
	delay_ns(hold_ms * 1000000ULL);
	guest_exit(ST_OK);
}
