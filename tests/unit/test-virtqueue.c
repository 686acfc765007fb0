/* tests/unit/test-virtqueue.c — the split-virtqueue parser (core/virtio/queue.c)
 * against hostile drivers.
 *
 * Guest RAM sits between PROT_NONE guard pages, so any host access outside it
 * crashes the test. Each case writes rings and descriptors by hand (offsets
 * from the virtio 1.x spec, 2.7) and asserts the exact outcome: the popped
 * element, or -EBADMSG with the reason in vq->why, no used entry and no byte
 * of guest RAM changed.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/layout.h"
#include "core/mem.h"
#include "core/virtio/queue.h"
#include "tests/unit/test-vm-util.h"

#define RAM_SIZE  (1u << 20)
#define DESC_GPA  0x1000ull
#define AVAIL_GPA 0x5000ull
#define USED_GPA  0x6000ull
#define BUF_GPA   0x10000ull
#define MAX_SIZE  256

#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4

static struct tv_ram ram;
static struct vmm_mem mem;
static struct vmm_vq vq;
static struct vmm_vq_elem elem;
static uint16_t avail_idx;

static uint8_t *gp(uint64_t a, uint64_t len)
{
	return tv_gpa(&mem, a, len);
}

/* Descriptor @i of a table at @table. */
static void desc_at(uint64_t table, uint32_t i, uint64_t addr, uint32_t len, uint16_t flags,
		    uint16_t next)
{
	uint8_t *p = gp(table + 16ull * i, 16);

	tv_put64(p, addr);
	tv_put32(p + 8, len);
	tv_put16(p + 12, flags);
	tv_put16(p + 14, next);
}

static void desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	desc_at(DESC_GPA, i, addr, len, flags, next);
}

static void set_avail_idx(uint16_t v)
{
	tv_put16(gp(AVAIL_GPA + 2, 2), v);
}

/* Put @head in the avail ring and publish it. */
static void post(uint16_t head)
{
	tv_put16(gp(AVAIL_GPA + 4 + 2ull * (avail_idx % vq.size), 2), head);
	set_avail_idx(++avail_idx);
}

/* A fresh queue of @size with the rings above, zeroed RAM; must enable. */
static void fresh(uint16_t size, bool indirect, bool event_idx)
{
	memset(ram.base, 0, RAM_SIZE);
	vmm_vq_reset(&vq, MAX_SIZE);
	vq.size = size;
	vq.desc_gpa = DESC_GPA;
	vq.avail_gpa = AVAIL_GPA;
	vq.used_gpa = USED_GPA;
	vq.indirect = indirect;
	vq.event_idx = event_idx;
	avail_idx = 0;
	if (vmm_vq_enable(&vq, &mem)) {
		tv_failures++;
		fprintf(stderr, "FAIL: enable of a good queue of %u failed: %s\n", size, vq.why);
	}
}

/* FNV-1a over all of guest RAM: a hostile pop must not write anything. */
static uint64_t ram_hash(void)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < RAM_SIZE; i++)
		h = (h ^ ram.base[i]) * 0x100000001b3ull;
	return h;
}

static bool in_ram(const void *p, size_t len)
{
	const uint8_t *b = p;

	return b >= ram.base && b <= ram.base + RAM_SIZE && len <= (size_t)(ram.base + RAM_SIZE - b);
}

/* Pop and expect the queue to break with a reason containing @why; the queue
 * stays broken, nothing in RAM changed, nothing was consumed. */
#define EXPECT_BROKEN(why) expect_broken(__FILE__, __LINE__, why)
static void expect_broken(const char *file, int line, const char *why)
{
	uint64_t before = ram_hash();
	uint16_t last = vq.last_avail;
	int r = vmm_vq_pop(&vq, &mem, &elem);

	if (r != -EBADMSG || !vq.broken || !strstr(vq.why, why) || ram_hash() != before ||
	    vq.last_avail != last || vq.used_idx != 0) {
		tv_failures++;
		fprintf(stderr, "FAIL %s:%d: expected -EBADMSG '%s', got %d broken=%d why='%s' "
			"ram %s last_avail %u->%u used %u\n", file, line, why, r, vq.broken, vq.why,
			ram_hash() == before ? "unchanged" : "CHANGED", last, vq.last_avail, vq.used_idx);
	}
	/* and it stays broken */
	r = vmm_vq_pop(&vq, &mem, &elem);
	if (r != -EBADMSG || vmm_vq_has_work(&vq)) {
		tv_failures++;
		fprintf(stderr, "FAIL %s:%d: second pop on a broken queue: expected -EBADMSG, got %d\n",
			file, line, r);
	}
}

/* Pop and expect one element with @nr_out/@nr_in buffers of @out/@in bytes,
 * every iovec inside guest RAM. */
#define EXPECT_ELEM(head, nout, nin, out, in) expect_elem(__FILE__, __LINE__, head, nout, nin, out, in)
static void expect_elem(const char *file, int line, uint16_t head, unsigned nr_out, unsigned nr_in,
			uint64_t out_len, uint64_t in_len)
{
	int r = vmm_vq_pop(&vq, &mem, &elem);

	if (r != 1 || elem.head != head || elem.nr_out != nr_out || elem.nr_in != nr_in ||
	    elem.out_len != out_len || elem.in_len != in_len) {
		tv_failures++;
		fprintf(stderr, "FAIL %s:%d: expected pop 1 head %u out %u/%llu in %u/%llu, got %d head %u "
			"out %u/%llu in %u/%llu why '%s'\n", file, line, head, nr_out,
			(unsigned long long)out_len, nr_in, (unsigned long long)in_len, r, elem.head,
			elem.nr_out, (unsigned long long)elem.out_len, elem.nr_in,
			(unsigned long long)elem.in_len, vq.why);
		return;
	}
	for (unsigned i = 0; i < elem.nr_out + elem.nr_in; i++)
		if (!in_ram(elem.iov[i].iov_base, elem.iov[i].iov_len)) {
			tv_failures++;
			fprintf(stderr, "FAIL %s:%d: iov[%u] %p+%zu outside guest RAM\n", file, line, i,
				elem.iov[i].iov_base, elem.iov[i].iov_len);
		}
}

/* ---- cases ---- */

static void test_valid_chain(void)
{
	uint8_t src[16], dst[40];

	fresh(16, false, false);
	desc(3, BUF_GPA, 16, F_NEXT, 7);
	desc(7, BUF_GPA + 0x1000, 100, F_NEXT, 2);
	desc(2, BUF_GPA + 0x2000, 512, F_WRITE | F_NEXT, 9);
	desc(9, BUF_GPA + 0x3000, 1, F_WRITE, 0);
	memset(gp(BUF_GPA, 16), 0xAB, 16);
	post(3);
	CHECK(vmm_vq_has_work(&vq), "has_work false with one chain posted");
	EXPECT_ELEM(3, 2, 2, 116, 513);
	CHECK(elem.iov[0].iov_base == gp(BUF_GPA, 16), "iov[0] not at the buffer");
	CHECK_EQ(elem.iov[1].iov_len, 100);
	CHECK(elem.iov[2].iov_base == gp(BUF_GPA + 0x2000, 512), "iov[2] not at the buffer");
	CHECK_EQ(elem.iov[3].iov_len, 1);
	CHECK_EQ(vmm_vq_elem_read(&elem, src, sizeof(src)), 16);
	CHECK_EQ(src[15], 0xAB);
	memset(dst, 0x5C, sizeof(dst));
	CHECK_EQ(vmm_vq_elem_write(&elem, dst, sizeof(dst)), 40);
	CHECK_EQ(gp(BUF_GPA + 0x2000, 40)[39], 0x5C);
	CHECK_EQ(gp(BUF_GPA + 0x2000 + 40, 1)[0], 0);
	CHECK_EQ(vq.last_avail, 1);
	CHECK_EQ(vmm_vq_pop(&vq, &mem, &elem), 0);
	CHECK(!vmm_vq_has_work(&vq), "has_work true on an empty ring");
	vmm_vq_push(&vq, 3, 513);
	CHECK_EQ(tv_get16(gp(USED_GPA + 2, 2)), 1);
	CHECK_EQ(tv_get32(gp(USED_GPA + 4, 4)), 3);
	CHECK_EQ(tv_get32(gp(USED_GPA + 8, 4)), 513);

	/* writes stop at the end of the writable part; reads at the readable part */
	CHECK_EQ(vmm_vq_elem_write(&elem, (uint8_t[600]){ 0 }, 600), 513);
	CHECK_EQ(vmm_vq_elem_read(&elem, (uint8_t[200]){ 0 }, 200), 116);

	/* a buffer ending exactly at the end of RAM is fine; len 0 too */
	fresh(16, false, false);
	desc(0, RAM_SIZE - 8, 8, F_NEXT, 1);
	desc(1, 0, 0, F_WRITE, 0);
	post(0);
	EXPECT_ELEM(0, 1, 1, 8, 0);
}

static void expect_enable_fails(const char *file, int line, const char *why)
{
	int r = vmm_vq_enable(&vq, &mem);

	if (r != -EINVAL || vq.enabled || !strstr(vq.why, why) ||
	    vmm_vq_pop(&vq, &mem, &elem) != -EBADMSG) {
		tv_failures++;
		fprintf(stderr, "FAIL %s:%d: expected enable -EINVAL '%s', got %d enabled=%d why='%s'\n",
			file, line, why, r, vq.enabled, vq.why);
	}
}
#define EXPECT_ENABLE_FAILS(why) expect_enable_fails(__FILE__, __LINE__, why)

static void setup_rings(uint16_t size, uint64_t d, uint64_t a, uint64_t u)
{
	vmm_vq_reset(&vq, MAX_SIZE);
	vq.size = size;
	vq.desc_gpa = d;
	vq.avail_gpa = a;
	vq.used_gpa = u;
}

static void test_enable(void)
{
	static const uint16_t bad_sizes[] = { 0, 3, 12, 255, 512, 0xFFFF };

	for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		setup_rings(bad_sizes[i], DESC_GPA, AVAIL_GPA, USED_GPA);
		EXPECT_ENABLE_FAILS("power of two");
	}
	/* the largest size that fits, and size 1 */
	setup_rings(MAX_SIZE, 0x10000, 0x20000, 0x30000);
	CHECK_EQ(vmm_vq_enable(&vq, &mem), 0);
	setup_rings(1, DESC_GPA, AVAIL_GPA, USED_GPA);
	CHECK_EQ(vmm_vq_enable(&vq, &mem), 0);

	setup_rings(16, RAM_SIZE, AVAIL_GPA, USED_GPA);
	EXPECT_ENABLE_FAILS("outside guest RAM");
	setup_rings(16, RAM_SIZE - 16 * 8, AVAIL_GPA, USED_GPA);          /* half the table */
	EXPECT_ENABLE_FAILS("outside guest RAM");
	setup_rings(16, DESC_GPA, RAM_SIZE - 36, USED_GPA);     /* used_event past the end */
	EXPECT_ENABLE_FAILS("outside guest RAM");
	setup_rings(16, DESC_GPA, AVAIL_GPA, RAM_SIZE - 132);   /* avail_event past the end */
	EXPECT_ENABLE_FAILS("outside guest RAM");
	setup_rings(16, DESC_GPA, AVAIL_GPA, VMM_MMIO_HOLE_START);
	EXPECT_ENABLE_FAILS("outside guest RAM");
	setup_rings(16, 0xFFFFFFFFFFFFFF00ull, AVAIL_GPA, USED_GPA);        /* wraps around 2^64 */
	EXPECT_ENABLE_FAILS("outside guest RAM");
	setup_rings(16, DESC_GPA, 0xFFFFFFFFFFFFFFF0ull, USED_GPA);
	EXPECT_ENABLE_FAILS("outside guest RAM");
	/* rings ending exactly at the end of RAM (used_event, desc) or 2 bytes
	 * before it (avail_event; 4-byte alignment): fine */
	setup_rings(16, DESC_GPA, RAM_SIZE - 38, USED_GPA);
	CHECK_EQ(vmm_vq_enable(&vq, &mem), 0);
	setup_rings(16, RAM_SIZE - 256, AVAIL_GPA, RAM_SIZE - 136);
	CHECK_EQ(vmm_vq_enable(&vq, &mem), 0);

	setup_rings(16, DESC_GPA + 8, AVAIL_GPA, USED_GPA);
	EXPECT_ENABLE_FAILS("misaligned");
	setup_rings(16, DESC_GPA, AVAIL_GPA + 1, USED_GPA);
	EXPECT_ENABLE_FAILS("misaligned");
	setup_rings(16, DESC_GPA, AVAIL_GPA, USED_GPA + 2);
	EXPECT_ENABLE_FAILS("misaligned");

	/* a queue never enabled: nothing to pop, pushes and notifications ignored */
	memset(ram.base, 0, RAM_SIZE);
	setup_rings(16, DESC_GPA, AVAIL_GPA, USED_GPA);
	set_avail_idx(3);
	CHECK_EQ(vmm_vq_pop(&vq, &mem, &elem), 0);
	CHECK(!vmm_vq_has_work(&vq), "has_work on a disabled queue");
	vmm_vq_push(&vq, 0, 1);
	CHECK(!vmm_vq_need_interrupt(&vq), "interrupt from a disabled queue");
	CHECK(!vmm_vq_notify_enable(&vq, true), "work on a disabled queue");
	CHECK_EQ(tv_get16(gp(USED_GPA + 2, 2)), 0);
	CHECK_EQ(vq.size, 16);
	vmm_vq_reset(&vq, MAX_SIZE);
	CHECK(vq.size == MAX_SIZE && vq.msix_vector == 0xFFFF && !vq.enabled, "reset state wrong");

	/* a failed enable is cured by a good one (what a re-initialising driver does) */
	setup_rings(16, DESC_GPA, AVAIL_GPA, USED_GPA + 2);
	vmm_vq_enable(&vq, &mem);
	vq.used_gpa = USED_GPA;
	CHECK_EQ(vmm_vq_enable(&vq, &mem), 0);
	CHECK(!vq.broken && vq.enabled, "re-enable did not clear broken");
}

static void test_bad_buffers(void)
{
	fresh(16, false, false);
	desc(0, RAM_SIZE, 1, 0, 0);
	post(0);
	EXPECT_BROKEN("outside guest RAM");

	fresh(16, false, false);
	desc(0, RAM_SIZE, 0, 0, 0);          /* even empty, the address must be RAM */
	post(0);
	EXPECT_BROKEN("outside guest RAM");

	fresh(16, false, false);
	desc(0, BUF_GPA, 16, F_NEXT, 1);
	desc(1, RAM_SIZE - 4, 8, F_WRITE, 0);    /* crosses the end of RAM */
	post(0);
	EXPECT_BROKEN("outside guest RAM");

	fresh(16, false, false);
	desc(0, 0xFFFFFFFFFFFFFF00ull, 0x200, 0, 0);   /* addr + len overflows 64 bits */
	post(0);
	EXPECT_BROKEN("outside guest RAM");

	fresh(16, false, false);
	desc(0, 0x10, 0xFFFFFFFF, 0, 0);      /* 4 GiB from inside RAM */
	post(0);
	EXPECT_BROKEN("outside guest RAM");

	fresh(16, false, false);
	desc(0, VMM_MMIO_HOLE_START + 0x1000, 16, 0, 0);   /* MMIO, not RAM */
	post(0);
	EXPECT_BROKEN("outside guest RAM");
}

static void test_bad_chains(void)
{
	/* loop back to the head */
	fresh(16, false, false);
	desc(0, BUF_GPA, 16, F_NEXT, 1);
	desc(1, BUF_GPA, 16, F_NEXT, 0);
	post(0);
	EXPECT_BROKEN("loop");

	/* self loop, all writable */
	fresh(16, false, false);
	desc(5, BUF_GPA, 16, F_NEXT | F_WRITE, 5);
	post(5);
	EXPECT_BROKEN("loop");

	/* a chain of exactly size descriptors is fine */
	fresh(8, false, false);
	for (uint16_t i = 0; i < 8; i++)
		desc(i, BUF_GPA + 16ull * i, 16, i < 7 ? F_NEXT : 0, (uint16_t)(i + 1));
	post(0);
	EXPECT_ELEM(0, 8, 0, 128, 0);

	/* next beyond the table */
	fresh(16, false, false);
	desc(0, BUF_GPA, 16, F_NEXT, 16);
	post(0);
	EXPECT_BROKEN("beyond queue size");

	fresh(16, false, false);
	desc(0, BUF_GPA, 16, F_NEXT, 0xFFFF);
	post(0);
	EXPECT_BROKEN("beyond queue size");

	/* writable before readable */
	fresh(16, false, false);
	desc(0, BUF_GPA, 16, F_NEXT | F_WRITE, 1);
	desc(1, BUF_GPA + 16, 16, 0, 0);
	post(0);
	EXPECT_BROKEN("device-readable buffer after a device-writable one");

	/* head beyond the queue */
	fresh(16, false, false);
	post(16);
	EXPECT_BROKEN("head 16 beyond queue size");

	/* avail idx jumps by more than the queue size */
	fresh(16, false, false);
	desc(0, BUF_GPA, 16, 0, 0);
	set_avail_idx(17);
	EXPECT_BROKEN("avail index moved by 17");

	fresh(16, false, false);
	set_avail_idx(0xFFFF);           /* "backwards" = a huge jump */
	EXPECT_BROKEN("avail index moved");

	/* exactly size entries at once is fine */
	fresh(16, false, false);
	for (uint16_t i = 0; i < 16; i++) {
		desc(i, BUF_GPA, 16, 0, 0);
		post(i);
	}
	for (uint16_t i = 0; i < 16; i++)
		EXPECT_ELEM(i, 1, 0, 16, 0);
	CHECK_EQ(vmm_vq_pop(&vq, &mem, &elem), 0);
}

static void test_broken_sticks(void)
{
	fresh(16, false, false);
	desc(0, RAM_SIZE, 16, 0, 0);
	desc(1, BUF_GPA, 16, 0, 0);
	post(0);
	post(1);
	EXPECT_BROKEN("outside guest RAM");
	/* the driver "fixes" the descriptor: still broken, the first reason kept */
	desc(0, BUF_GPA, 16, 0, 0);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(vmm_vq_pop(&vq, &mem, &elem), (uint64_t)(int64_t)-EBADMSG);
	CHECK_STR(vq.why, "0x100000+16 outside guest RAM");
	CHECK(!vmm_vq_has_work(&vq), "a broken queue reports work");
}

static void test_indirect(void)
{
	const uint64_t table = 0x8000;

	/* valid: indirect table of 3 (readable, readable, writable) */
	fresh(16, true, false);
	desc_at(table, 0, BUF_GPA, 16, F_NEXT, 2);
	desc_at(table, 2, BUF_GPA + 0x100, 32, F_NEXT, 1);
	desc_at(table, 1, BUF_GPA + 0x200, 64, F_WRITE, 0);
	desc(4, table, 48, F_INDIRECT, 0);
	post(4);
	EXPECT_ELEM(4, 2, 1, 48, 64);

	/* without VIRTIO_RING_F_INDIRECT_DESC */
	fresh(16, false, false);
	desc_at(table, 0, BUF_GPA, 16, 0, 0);
	desc(0, table, 16, F_INDIRECT, 0);
	post(0);
	EXPECT_BROKEN("without VIRTIO_RING_F_INDIRECT_DESC");

	/* table outside RAM, crossing its end, overflowing */
	fresh(16, true, false);
	desc(0, RAM_SIZE, 16, F_INDIRECT, 0);
	post(0);
	EXPECT_BROKEN("indirect table 0x100000+16 outside guest RAM");
	fresh(16, true, false);
	desc(0, RAM_SIZE - 32, 64, F_INDIRECT, 0);
	post(0);
	EXPECT_BROKEN("outside guest RAM");
	fresh(16, true, false);
	desc(0, 0xFFFFFFFFFFFFFFF0ull, 32, F_INDIRECT, 0);
	post(0);
	EXPECT_BROKEN("outside guest RAM");

	/* length not a multiple of 16, or 0 */
	fresh(16, true, false);
	desc_at(table, 0, BUF_GPA, 16, 0, 0);
	desc(0, table, 24, F_INDIRECT, 0);
	post(0);
	EXPECT_BROKEN("not a multiple of 16");
	fresh(16, true, false);
	desc(0, table, 0, F_INDIRECT, 0);
	post(0);
	EXPECT_BROKEN("not a multiple of 16");

	/* nested */
	fresh(16, true, false);
	desc_at(table, 0, BUF_GPA, 16, F_NEXT, 1);
	desc_at(table, 1, table + 0x100, 16, F_INDIRECT, 0);
	desc(0, table, 32, F_INDIRECT, 0);
	post(0);
	EXPECT_BROKEN("nested indirect");

	/* indirect with NEXT, or after a direct descriptor */
	fresh(16, true, false);
	desc_at(table, 0, BUF_GPA, 16, 0, 0);
	desc(0, table, 16, F_INDIRECT | F_NEXT, 1);
	desc(1, BUF_GPA, 16, 0, 0);
	post(0);
	EXPECT_BROKEN("indirect descriptor inside a chain");
	fresh(16, true, false);
	desc(0, BUF_GPA, 16, F_NEXT, 1);
	desc(1, table, 16, F_INDIRECT, 0);
	post(0);
	EXPECT_BROKEN("indirect descriptor inside a chain");

	/* loop and next beyond the table inside the indirect table */
	fresh(16, true, false);
	desc_at(table, 0, BUF_GPA, 16, F_NEXT, 1);
	desc_at(table, 1, BUF_GPA, 16, F_NEXT, 0);
	desc(0, table, 32, F_INDIRECT, 0);
	post(0);
	EXPECT_BROKEN("loop in indirect");
	fresh(16, true, false);
	desc_at(table, 0, BUF_GPA, 16, F_NEXT, 2);
	desc(0, table, 32, F_INDIRECT, 0);
	post(0);
	EXPECT_BROKEN("next 2 beyond table of 2");

	/* readable after writable inside the table */
	fresh(16, true, false);
	desc_at(table, 0, BUF_GPA, 16, F_WRITE | F_NEXT, 1);
	desc_at(table, 1, BUF_GPA, 16, 0, 0);
	desc(0, table, 32, F_INDIRECT, 0);
	post(0);
	EXPECT_BROKEN("device-readable buffer after a device-writable one");

	/* buffer outside RAM inside the table */
	fresh(16, true, false);
	desc_at(table, 0, BUF_GPA, 16, F_NEXT, 1);
	desc_at(table, 1, RAM_SIZE - 1, 2, F_WRITE, 0);
	desc(0, table, 32, F_INDIRECT, 0);
	post(0);
	EXPECT_BROKEN("outside guest RAM");

	/* VMM_VQ_MAX_SEGS buffers through one table: fine; one more: broken */
	fresh(16, true, false);
	for (uint32_t i = 0; i < VMM_VQ_MAX_SEGS; i++)
		desc_at(table, i, BUF_GPA + i, 1, i + 1 < VMM_VQ_MAX_SEGS ? F_NEXT : 0, (uint16_t)(i + 1));
	desc(0, table, 16 * VMM_VQ_MAX_SEGS, F_INDIRECT, 0);
	post(0);
	EXPECT_ELEM(0, VMM_VQ_MAX_SEGS, 0, VMM_VQ_MAX_SEGS, 0);
	fresh(16, true, false);
	for (uint32_t i = 0; i <= VMM_VQ_MAX_SEGS; i++)
		desc_at(table, i, BUF_GPA + i, 1, i < VMM_VQ_MAX_SEGS ? F_NEXT : 0, (uint16_t)(i + 1));
	desc(0, table, 16 * (VMM_VQ_MAX_SEGS + 1), F_INDIRECT, 0);
	post(0);
	EXPECT_BROKEN("longer than 256 buffers");

	/* a huge table of unchained entries is read only as far as the chain goes */
	fresh(16, true, false);
	desc_at(table, 0, BUF_GPA, 16, 0, 0);
	desc(0, table, RAM_SIZE - (uint32_t)table, F_INDIRECT, 0);
	post(0);
	EXPECT_ELEM(0, 1, 0, 16, 0);
}

/* More than VMM_VQ_MAX_SEGS direct descriptors (queue of 512). */
static void test_long_direct_chain(void)
{
	memset(ram.base, 0, RAM_SIZE);
	vmm_vq_reset(&vq, 1024);
	vq.size = 512;
	vq.desc_gpa = 0x20000;
	vq.avail_gpa = AVAIL_GPA;
	vq.used_gpa = USED_GPA;
	avail_idx = 0;
	CHECK_EQ(vmm_vq_enable(&vq, &mem), 0);
	for (uint32_t i = 0; i < 300; i++)
		desc_at(0x20000, i, BUF_GPA + i, 1, i < 299 ? F_NEXT : 0, (uint16_t)(i + 1));
	post(0);
	EXPECT_BROKEN("longer than 256 buffers");
}

static void test_event_idx(void)
{
	uint8_t *used_event, *avail_event;

	fresh(16, false, true);
	used_event = gp(AVAIL_GPA + 4 + 2 * 16, 2);
	avail_event = gp(USED_GPA + 4 + 8 * 16, 2);
	for (uint16_t i = 0; i < 8; i++) {
		desc(i, BUF_GPA, 16, F_WRITE, 0);
		post(i);
	}
	/* pop publishes avail_event = the next index it will read */
	EXPECT_ELEM(0, 0, 1, 0, 16);
	CHECK_EQ(tv_get16(avail_event), 1);

	/* first call after enable always interrupts */
	vmm_vq_push(&vq, 0, 16);
	CHECK(vmm_vq_need_interrupt(&vq), "first interrupt suppressed");
	/* the driver wants one when used idx passes 4 (i.e. reaches 5) */
	tv_put16(used_event, 4);
	for (int i = 2; i <= 4; i++) {
		vmm_vq_push(&vq, 0, 16);
		CHECK(!vmm_vq_need_interrupt(&vq), "interrupt at used idx %d before used_event 4", i);
	}
	vmm_vq_push(&vq, 0, 16);
	CHECK(vmm_vq_need_interrupt(&vq), "no interrupt when used idx crossed used_event");
	vmm_vq_push(&vq, 0, 16);
	CHECK(!vmm_vq_need_interrupt(&vq), "interrupt after used_event already signalled");
	/* several pushes at once crossing used_event: one interrupt */
	tv_put16(used_event, 7);
	vmm_vq_push(&vq, 0, 16);
	vmm_vq_push(&vq, 0, 16);
	vmm_vq_push(&vq, 0, 16);
	CHECK_EQ(vq.used_idx, 9);
	CHECK(vmm_vq_need_interrupt(&vq), "no interrupt for a batch that crossed used_event");

	/* notify_enable with EVENT_IDX writes avail_event and reports pending work */
	for (uint16_t i = 1; i < 8; i++)
		EXPECT_ELEM(i, 0, 1, 0, 16);
	CHECK(!vmm_vq_notify_enable(&vq, true), "work reported on an empty ring");
	CHECK_EQ(tv_get16(avail_event), 8);
	post(0);
	CHECK(vmm_vq_notify_enable(&vq, true), "work not reported after a post");

	/* without EVENT_IDX: VIRTQ_AVAIL_F_NO_INTERRUPT and VIRTQ_USED_F_NO_NOTIFY */
	fresh(16, false, false);
	vmm_vq_push(&vq, 0, 0);
	CHECK(vmm_vq_need_interrupt(&vq), "interrupt suppressed without NO_INTERRUPT");
	tv_put16(gp(AVAIL_GPA, 2), 1);
	vmm_vq_push(&vq, 0, 0);
	CHECK(!vmm_vq_need_interrupt(&vq), "interrupt despite VIRTQ_AVAIL_F_NO_INTERRUPT");
	vmm_vq_notify_enable(&vq, false);
	CHECK_EQ(tv_get16(gp(USED_GPA, 2)), 1);
	vmm_vq_notify_enable(&vq, true);
	CHECK_EQ(tv_get16(gp(USED_GPA, 2)), 0);
}

/* A driver that posts a head again before it was used: the queue breaks at
 * the second offer (the device would run the request twice and answer it
 * twice); once pushed back, the head may be offered again. */
static void test_inuse_limit(void)
{
	fresh(4, false, false);
	desc(0, BUF_GPA, 16, F_WRITE, 0);
	post(0);
	EXPECT_ELEM(0, 0, 1, 0, 16);
	post(0);
	EXPECT_BROKEN("offered again while still in use");

	fresh(4, false, false);
	desc(0, BUF_GPA, 16, F_WRITE, 0);
	desc(1, BUF_GPA + 16, 16, F_WRITE, 0);
	post(0);
	EXPECT_ELEM(0, 0, 1, 0, 16);
	post(1);
	EXPECT_ELEM(1, 0, 1, 0, 16);
	vmm_vq_push(&vq, 0, 16);
	for (int i = 0; i < 3; i++) {   /* 0 pushed back: offered again, thrice */
		post(0);
		EXPECT_ELEM(0, 0, 1, 0, 16);
		vmm_vq_push(&vq, 0, 16);
	}
	post(1);                        /* 1 is still in use */
	CHECK_EQ(vmm_vq_pop(&vq, &mem, &elem), (uint64_t)(int64_t)-EBADMSG);
	CHECK(strstr(vq.why, "head 1 offered again") != NULL, "reason: '%s'", vq.why);
}

static void test_wrap(void)
{
	fresh(4, false, false);
	for (uint16_t i = 0; i < 4; i++)
		desc(i, BUF_GPA + 16ull * i, 16, F_WRITE, 0);
	for (uint32_t n = 0; n < 10; n++) {
		post((uint16_t)(n % 4));
		EXPECT_ELEM((uint16_t)(n % 4), 0, 1, 0, 16);
		vmm_vq_push(&vq, elem.head, 100 + n);
		CHECK_EQ(tv_get16(gp(USED_GPA + 2, 2)), n + 1);
		CHECK_EQ(tv_get32(gp(USED_GPA + 4 + 8 * (n % 4), 4)), n % 4);
		CHECK_EQ(tv_get32(gp(USED_GPA + 8 + 8 * (n % 4), 4)), 100 + n);
	}
	/* nothing written past the ring (avail_event slot stays 0 without EVENT_IDX) */
	CHECK_EQ(tv_get16(gp(USED_GPA + 4 + 8 * 4, 2)), 0);

	/* the 16-bit indices wrap */
	fresh(4, false, false);
	desc(2, BUF_GPA, 16, 0, 0);
	vq.last_avail = vq.used_idx = 0xFFFE;
	avail_idx = 0xFFFE;
	set_avail_idx(avail_idx);
	for (int n = 0; n < 4; n++) {
		post(2);
		EXPECT_ELEM(2, 1, 0, 16, 0);
		vmm_vq_push(&vq, 2, 0);
	}
	CHECK_EQ(vq.last_avail, 2);
	CHECK_EQ(tv_get16(gp(USED_GPA + 2, 2)), 2);
	CHECK_EQ(tv_get32(gp(USED_GPA + 4 + 8 * 1, 4)), 2);   /* the 4th push went to slot 1 */
}

/* RAM above the MMIO hole: a buffer crossing the end of low RAM is refused
 * even though host memory is contiguous there. */
static void test_two_regions(void)
{
	struct tv_ram big;
	struct vmm_mem m2;
	uint64_t size = VMM_MMIO_HOLE_START + (2u << 20), low = VMM_MMIO_HOLE_START;

	if (tv_ram_init(&big, size)) {
		printf("note: no %llu-byte reservation, two-region case skipped\n",
		       (unsigned long long)size);
		return;
	}
	vmm_mem_layout(&m2, big.base, size, -1);
	vmm_vq_reset(&vq, MAX_SIZE);
	vq.size = 16;
	vq.desc_gpa = VMM_HIGH_RAM_START;
	vq.avail_gpa = VMM_HIGH_RAM_START + 0x1000;
	vq.used_gpa = VMM_HIGH_RAM_START + 0x2000;
	CHECK_EQ(vmm_vq_enable(&vq, &m2), 0);
	{
		uint8_t *d = tv_gpa(&m2, vq.desc_gpa, 64), *a = tv_gpa(&m2, vq.avail_gpa, 8);

		tv_put64(d, VMM_HIGH_RAM_START + 0x10000);
		tv_put32(d + 8, 64);
		tv_put16(d + 12, F_NEXT);
		tv_put16(d + 14, 1);
		tv_put64(d + 16, low - 8);     /* crosses from low RAM into the hole */
		tv_put32(d + 24, 16);
		tv_put16(d + 28, F_WRITE);
		tv_put16(a + 4, 0);
		tv_put16(a + 2, 1);
		CHECK_EQ(vmm_vq_pop(&vq, &m2, &elem), (uint64_t)(int64_t)-EBADMSG);
		CHECK_STR(vq.why, "outside guest RAM");

		vq.broken = false;
		vq.why[0] = 0;
		tv_put32(d + 24, 8);           /* ends exactly at low_end: fine */
		CHECK_EQ(vmm_vq_pop(&vq, &m2, &elem), 1);
		CHECK(elem.iov[1].iov_base == big.base + low - 8, "low-RAM buffer at the wrong host address");
		CHECK(elem.iov[0].iov_base == big.base + low + 0x10000, "high-RAM buffer at the wrong host address");
		vmm_vq_push(&vq, elem.head, 0);   /* head 0 is offered again below */
	}
	/* chains longer than 4 GiB in total (RAM is reserved, never touched) */
	{
		uint8_t *d = tv_gpa(&m2, vq.desc_gpa, 64), *a = tv_gpa(&m2, vq.avail_gpa, 8);

		vq.broken = false;
		tv_put64(d, 0);
		tv_put32(d + 8, 0xC0000000u);
		tv_put16(d + 12, F_NEXT);
		tv_put16(d + 14, 1);
		tv_put64(d + 16, 0);
		tv_put32(d + 24, 0x40000000u);   /* 3 GiB + 1 GiB readable: one byte too many */
		tv_put16(d + 28, 0);
		tv_put16(a + 6, 0);
		tv_put16(a + 2, 2);
		CHECK_EQ(vmm_vq_pop(&vq, &m2, &elem), (uint64_t)(int64_t)-EBADMSG);
		CHECK_STR(vq.why, "longer than 4 GiB");
		vq.broken = false;
		vq.why[0] = 0;
		tv_put32(d + 24, 0x3FFFFFFFu);   /* 4 GiB - 1: fine */
		CHECK_EQ(vmm_vq_pop(&vq, &m2, &elem), 1);
		CHECK_EQ(elem.out_len, 0xFFFFFFFFull);
		vmm_vq_push(&vq, elem.head, 0);
		tv_put16(a + 8, 0);
		tv_put16(a + 2, 3);
		tv_put32(d + 24, 0x40000000u);
		tv_put16(d + 28, F_WRITE);       /* 3 GiB readable + 1 GiB writable */
		CHECK_EQ(vmm_vq_pop(&vq, &m2, &elem), (uint64_t)(int64_t)-EBADMSG);
		CHECK_STR(vq.why, "longer than 4 GiB");
	}
	/* a ring in the hole */
	vmm_vq_reset(&vq, MAX_SIZE);
	vq.size = 16;
	vq.desc_gpa = low - 128;           /* 256-byte table crossing into the hole */
	vq.avail_gpa = VMM_HIGH_RAM_START + 0x1000;
	vq.used_gpa = VMM_HIGH_RAM_START + 0x2000;
	CHECK_EQ(vmm_vq_enable(&vq, &m2), (uint64_t)(int64_t)-EINVAL);
	tv_ram_exit(&big);
}

/* Reclaim and expect the queue to break with a reason containing @why,
 * nothing in RAM changed, inuse and last_avail as they were. */
#define EXPECT_RECLAIM_BROKEN(head, why) expect_reclaim_broken(__FILE__, __LINE__, head, why)
static void expect_reclaim_broken(const char *file, int line, uint16_t head, const char *why)
{
	uint64_t before = ram_hash();
	uint16_t last = vq.last_avail, inuse = vq.inuse;
	int r = vmm_vq_reclaim(&vq, &mem, head, &elem);

	if (r != -EBADMSG || !vq.broken || !strstr(vq.why, why) || ram_hash() != before ||
	    vq.last_avail != last || vq.inuse != inuse) {
		tv_failures++;
		fprintf(stderr, "FAIL %s:%d: reclaim %u: expected -EBADMSG '%s', got %d broken=%d "
			"why='%s' ram %s last_avail %u->%u inuse %u->%u\n", file, line, head, why, r,
			vq.broken, vq.why, ram_hash() == before ? "unchanged" : "CHANGED", last,
			vq.last_avail, inuse, vq.inuse);
	}
	CHECK_EQ(vmm_vq_reclaim(&vq, &mem, head, &elem), (uint64_t)(int64_t)-EBADMSG);
	CHECK_EQ(vmm_vq_pop(&vq, &mem, &elem), (uint64_t)(int64_t)-EBADMSG);
}

/* vmm_vq_reclaim (a chain a restored device still holds, head from a state
 * file): every check of a pop's walk applies, plus its own (head, in use,
 * disabled); it takes the chain as in use without moving last_avail or
 * writing avail_event. */
static void test_reclaim(void)
{
	const uint64_t table = 0x8000;
	uint8_t *avail_event;
	uint64_t before;

	/* good: chain 3 -> 4, last_avail and avail_event untouched */
	fresh(16, false, true);
	avail_event = gp(USED_GPA + 4 + 8 * 16, 2);
	tv_put16(avail_event, 0x1234);
	desc(3, BUF_GPA, 16, F_NEXT, 4);
	desc(4, BUF_GPA + 16, 1, F_WRITE, 0);
	vq.last_avail = 7;
	before = ram_hash();
	CHECK_EQ(vmm_vq_reclaim(&vq, &mem, 3, &elem), 0);
	CHECK(elem.head == 3 && elem.nr_out == 1 && elem.nr_in == 1 && elem.out_len == 16 &&
	      elem.in_len == 1, "reclaimed element wrong");
	CHECK(in_ram(elem.iov[0].iov_base, 16) && in_ram(elem.iov[1].iov_base, 1),
	      "reclaimed iovec outside RAM");
	CHECK(vq.inuse == 1 && vq.last_avail == 7, "inuse %u last_avail %u", vq.inuse, vq.last_avail);
	CHECK(ram_hash() == before, "reclaim wrote guest RAM");
	vmm_vq_push(&vq, 3, 1);
	CHECK_EQ(vq.inuse, 0);

	/* a loop, a self loop, next beyond the table */
	fresh(16, false, false);
	desc(0, BUF_GPA, 16, F_NEXT, 1);
	desc(1, BUF_GPA, 16, F_NEXT, 0);
	EXPECT_RECLAIM_BROKEN(0, "loop in descriptor chain from head 0");
	fresh(16, false, false);
	desc(9, BUF_GPA, 16, F_NEXT | F_WRITE, 9);
	EXPECT_RECLAIM_BROKEN(9, "loop");
	fresh(16, false, false);
	desc(0, BUF_GPA, 16, F_NEXT, 0xFFFF);
	EXPECT_RECLAIM_BROKEN(0, "descriptor next 65535 beyond queue size 16");

	/* buffers outside RAM, wrapping, readable after writable */
	fresh(16, false, false);
	desc(0, RAM_SIZE - 8, 16, 0, 0);
	EXPECT_RECLAIM_BROKEN(0, "outside guest RAM");
	fresh(16, false, false);
	desc(0, 0xFFFFFFFFFFFFFFF0ull, 32, 0, 0);
	EXPECT_RECLAIM_BROKEN(0, "outside guest RAM");
	fresh(16, false, false);
	desc(0, BUF_GPA, 16, F_NEXT | F_WRITE, 1);
	desc(1, BUF_GPA, 16, 0, 0);
	EXPECT_RECLAIM_BROKEN(0, "device-readable buffer after a device-writable one");

	/* indirect: without the feature, nested, inside a chain, too long */
	fresh(16, false, false);
	desc_at(table, 0, BUF_GPA, 16, 0, 0);
	desc(0, table, 16, F_INDIRECT, 0);
	EXPECT_RECLAIM_BROKEN(0, "without VIRTIO_RING_F_INDIRECT_DESC");
	fresh(16, true, false);
	desc_at(table, 0, table, 16, F_INDIRECT, 0);
	desc(0, table, 16, F_INDIRECT, 0);
	EXPECT_RECLAIM_BROKEN(0, "nested indirect");
	fresh(16, true, false);
	desc_at(table, 0, BUF_GPA, 16, 0, 0);
	desc(0, BUF_GPA, 16, F_NEXT, 1);
	desc(1, table, 16, F_INDIRECT, 0);
	EXPECT_RECLAIM_BROKEN(0, "indirect descriptor inside a chain");
	fresh(16, true, false);
	for (uint32_t i = 0; i < 300; i++)
		desc_at(table, i, BUF_GPA + i, 1, i < 299 ? F_NEXT : 0, (uint16_t)(i + 1));
	desc(0, table, 300 * 16, F_INDIRECT, 0);
	EXPECT_RECLAIM_BROKEN(0, "longer than 256 buffers");
	fresh(16, true, false);
	desc_at(table, 0, BUF_GPA, 16, F_NEXT, 0);
	desc(0, table, 32, F_INDIRECT, 0);
	EXPECT_RECLAIM_BROKEN(0, "loop in indirect descriptor table");
	fresh(16, true, false);
	desc_at(table, 0, BUF_GPA, 0xFFFFFFFFu, F_NEXT, 1);
	desc_at(table, 1, BUF_GPA, 0xFFFFFFFFu, 0, 0);
	desc(0, table, 32, F_INDIRECT, 0);
	EXPECT_RECLAIM_BROKEN(0, "outside guest RAM");

	/* its own checks: head, queue full, disabled, broken */
	fresh(16, false, false);
	EXPECT_RECLAIM_BROKEN(16, "saved request head 16 beyond queue size 16");
	fresh(4, false, false);
	desc(0, BUF_GPA, 16, F_WRITE, 0);
	for (int i = 0; i < 4; i++)
		CHECK_EQ(vmm_vq_reclaim(&vq, &mem, (uint16_t)i, &elem), 0);
	EXPECT_RECLAIM_BROKEN(0, "more than the queue size 4 chains in use");
	/* reclaimed chains count for a pop too */
	fresh(4, false, false);
	desc(0, BUF_GPA, 16, F_WRITE, 0);
	for (int i = 0; i < 4; i++)
		CHECK_EQ(vmm_vq_reclaim(&vq, &mem, (uint16_t)i, &elem), 0);
	post(0);
	EXPECT_BROKEN("in use");
	fresh(16, false, false);
	vq.enabled = false;
	EXPECT_RECLAIM_BROKEN(0, "on a disabled queue");
	fresh(16, false, false);
	desc(0, BUF_GPA, 16, 0, 0);
	vmm_vq_fail(&vq, "earlier");
	CHECK_EQ(vmm_vq_reclaim(&vq, &mem, 0, &elem), (uint64_t)(int64_t)-EBADMSG);
	CHECK_STR(vq.why, "earlier");
	CHECK_EQ(vq.inuse, 0);
}

static void test_save_restore(void)
{
	struct ut_buf a = UT_BUF_INIT, b = UT_BUF_INIT;
	struct ut_rd rd;
	struct vmm_vq q2;

	fresh(16, true, true);
	desc(0, BUF_GPA, 16, 0, 0);
	post(0);
	post(0);
	EXPECT_ELEM(0, 1, 0, 16, 0);
	vmm_vq_push(&vq, 0, 0);
	vmm_vq_need_interrupt(&vq);
	vq.msix_vector = 1;
	CHECK_EQ(vmm_vq_save(&vq, &a), 0);
	vmm_vq_reset(&q2, MAX_SIZE);
	ut_rd_init(&rd, a.data, a.len);
	CHECK_EQ(vmm_vq_restore(&q2, &rd, &mem), 0);
	CHECK_EQ(rd.off, a.len);
	CHECK_EQ(vmm_vq_save(&q2, &b), 0);
	CHECK(a.len == b.len && !memcmp(a.data, b.data, a.len), "queue record changed across restore");
	CHECK(q2.enabled && q2.last_avail == 1 && q2.used_idx == 1 && q2.indirect && q2.event_idx,
	      "restored queue state wrong");
	/* the restored queue pops the second chain */
	vq = q2;
	EXPECT_ELEM(0, 1, 0, 16, 0);

	/* a record whose rings are outside RAM is refused */
	a.data[4 + 2 + 2] = 0xFF;          /* desc_gpa byte 0 -> misaligned */
	ut_rd_init(&rd, a.data, a.len);
	CHECK(vmm_vq_restore(&q2, &rd, &mem) < 0, "restore accepted a misaligned ring");
	/* truncated */
	for (size_t n = 0; n < b.len; n++) {
		ut_rd_init(&rd, b.data, n);
		CHECK(vmm_vq_restore(&q2, &rd, &mem) < 0, "restore accepted a record cut at %zu", n);
	}
	/* wrong version */
	b.data[0] = 2;
	ut_rd_init(&rd, b.data, b.len);
	CHECK_EQ(vmm_vq_restore(&q2, &rd, &mem), (uint64_t)(int64_t)-EPROTO);
	ut_buf_release(&a);
	ut_buf_release(&b);
}

/* A broken queue stays broken across save/restore. */
static void test_save_restore_broken(void)
{
	struct ut_buf a = UT_BUF_INIT, b = UT_BUF_INIT;
	struct ut_rd rd;
	struct vmm_vq q2;

	fresh(16, false, false);
	desc(0, RAM_SIZE, 16, 0, 0);
	post(0);
	EXPECT_BROKEN("outside guest RAM");
	CHECK_EQ(vmm_vq_save(&vq, &a), 0);
	vmm_vq_reset(&q2, MAX_SIZE);
	ut_rd_init(&rd, a.data, a.len);
	CHECK_EQ(vmm_vq_restore(&q2, &rd, &mem), 0);
	CHECK(q2.broken, "restored queue is no longer broken");
	CHECK_EQ(vmm_vq_pop(&q2, &mem, &elem), (uint64_t)(int64_t)-EBADMSG);
	CHECK_EQ(vmm_vq_save(&q2, &b), 0);
	CHECK(a.len == b.len && !memcmp(a.data, b.data, a.len), "broken queue record changed across restore");
	ut_buf_release(&a);
	ut_buf_release(&b);
}

int main(void)
{
	if (tv_ram_init(&ram, RAM_SIZE)) {
		fprintf(stderr, "cannot map guest RAM: %s\n", strerror(errno));
		return 1;
	}
	vmm_mem_layout(&mem, ram.base, RAM_SIZE, -1);
	test_valid_chain();
	test_enable();
	test_bad_buffers();
	test_bad_chains();
	test_broken_sticks();
	test_indirect();
	test_long_direct_chain();
	test_event_idx();
	test_wrap();
	test_inuse_limit();
	test_two_regions();
	test_reclaim();
	test_save_restore();
	test_save_restore_broken();
	tv_ram_exit(&ram);
	return tv_finish("test-virtqueue");
}
