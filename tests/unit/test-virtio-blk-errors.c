/* tests/unit/test-virtio-blk-errors.c — virtio-blk's disk errors, driven
 * like a guest driver would, without KVM (tests/unit/test-virtio-blk.h):
 * werror=/rerror= (report, stop, enospc: the VM paused, the request kept
 * and retried on resume), kept requests saved in the device record and
 * restored (record versions 2 and 3: chains re-read from RAM, answered,
 * dropped or refused; the error text), a writethrough flush that fails
 * through fdatasync, kept and restored.
 */
#include "tests/unit/test-virtio-blk.h"

/* ---- disk errors: werror= ---- */

static int n_events;
static char last_event[1024];
static char events_log[8192];   /* every message since events_clear, one a line */

static void on_event(void *opaque, const char *msg)
{
	size_t used = strlen(events_log);

	(void)opaque;
	n_events++;
	snprintf(last_event, sizeof(last_event), "%s", msg);
	if (used + strlen(msg) + 2 > sizeof(events_log))
		used = 0;   /* full: start over (the tests clear it first) */
	snprintf(events_log + used, sizeof(events_log) - used, "%s\n", msg);
}

static void events_clear(void)
{
	n_events = 0;
	last_event[0] = events_log[0] = '\0';
}

/* The length of virtio-blk device @dev's record without its own part
 * (the same for every record of the device): saved while nothing is
 * parked, the record ends with version 1. */
static size_t blk_prefix_len(struct vmm_device *dev)
{
	struct ut_buf rec = UT_BUF_INIT;
	size_t n = 0;

	if (dev->ops->save(dev, &rec) == 0 && rec.len > 4 && tv_get32(rec.data + rec.len - 4) == 1)
		n = rec.len - 4;
	ut_buf_release(&rec);
	if (!n) {
		fprintf(stderr, "test setup failed: a version 1 virtio-blk record\n");
		exit(1);
	}
	return n;
}

/* fdatasync(2), which the worker-thread engine's flushes call (aio=threads;
 * io_uring's are not libc calls): fails with EIO while fail_fdatasync is
 * set; counts the calls. Worker threads call it: atomics. */
static int fail_fdatasync, n_fdatasync;

int fdatasync(int fd)
{
	__atomic_add_fetch(&n_fdatasync, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&fail_fdatasync, __ATOMIC_SEQ_CST)) {
		errno = EIO;
		return -1;
	}
	return (int)syscall(SYS_fdatasync, fd);
}

/* Writes at or past @limit bytes of any file fail with EFBIG (SIGXFSZ
 * ignored); RLIM_INFINITY lifts it. */
static void fsize_limit(rlim_t limit)
{
	struct rlimit rl = { limit, RLIM_INFINITY };

	signal(SIGXFSZ, SIG_IGN);
	if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
		tv_die("setrlimit");
}

/* Run the loop until the VM is paused (or ~2 s). */
static bool wait_paused(void)
{
	for (int i = 0; i < 40 && !vmm_vm_paused(vm); i++)
		vmm_loop_run_once(&vm->loop, 50);
	return vmm_vm_paused(vm);
}

/* Post a write of DATA_GPA's 512 bytes at @sector that is to fail under
 * werror=stop: true if the VM pauses (bounded, wait_paused) with the
 * request kept (no used entry). */
static bool blk_write_parks(struct tv_drv *d, uint64_t sector)
{
	uint16_t used = tv_used_idx(d);

	blk_req_setup(d, T_OUT, sector, DATA_GPA, 512, false);
	tv_post(d, 0);
	return wait_paused() && tv_used_idx(d) == used;
}

/* Restore a copy of device record @rec whose virtio-blk part (its last
 * @tail bytes) is replaced by @blk (@blen bytes). Returns the restore's
 * result; the message in @err. */
static int restore_with(struct vmm_device *dev, const struct ut_buf *rec, size_t tail,
			const uint8_t *blk, size_t blen, struct ut_err *err)
{
	size_t head = rec->len - tail;
	uint8_t *p = malloc(head + blen);
	int r;

	if (!p)
		tv_die("malloc");
	memcpy(p, rec->data, head);
	memcpy(p + head, blk, blen);
	ut_err_clear(err);
	r = dev->ops->restore(dev, p, head + blen, err);
	free(p);
	return r;
}

/* Put a version 2 (@why NULL) or 3 virtio-blk part with one parked
 * request (queue 0, @head, @flags) in @b; returns its length. */
static size_t parked_part(uint8_t *b, uint16_t head, uint32_t flags, const char *why)
{
	size_t len = why ? strlen(why) : 0;

	tv_put32(b, why ? 3 : 2);
	tv_put32(b + 4, 1);
	tv_put16(b + 8, 0);
	tv_put16(b + 10, head);
	tv_put32(b + 12, flags);
	if (!why)
		return 16;
	tv_put16(b + 16, (uint16_t)len);
	memcpy(b + 18, why, len);
	return 18 + len;
}

/* A version 2 virtio-blk part with two parked requests on queue 0, heads
 * @h0 and @h1, no flags, into @b; its length (24; the second head is at
 * b + 18). */
static size_t parked_two(uint8_t *b, uint16_t h0, uint16_t h1)
{
	tv_put32(b, 2);
	tv_put32(b + 4, 2);
	tv_put16(b + 8, 0);
	tv_put16(b + 10, h0);
	tv_put32(b + 12, 0);
	tv_put16(b + 16, 0);
	tv_put16(b + 18, h1);
	tv_put32(b + 20, 0);
	return 24;
}

/* Queue 0's indices in a virtio-blk device record: after the transport's
 * 287 bytes, the queue's version, size, flags, three ring addresses and
 * MSI-X vector come last_avail and used_idx. */
#define REC_AVAIL_GPA  303
#define REC_LAST_AVAIL 321
#define REC_USED_IDX   323

/* A copy of record @rec in @out with queue 0's last_avail and used_idx set
 * (the chains in flight at the save: their difference). */
static void rec_indices(struct ut_buf *out, const struct ut_buf *rec, uint16_t last_avail,
			uint16_t used_idx)
{
	ut_buf_reset(out);
	if (ut_buf_add(out, rec->data, rec->len))
		tv_die("ut_buf_add");
	tv_put16(out->data + REC_LAST_AVAIL, last_avail);
	tv_put16(out->data + REC_USED_IDX, used_idx);
}

/* The avail ring of queue 0 of record @rec, in guest RAM: flags, idx,
 * ring[QSIZE]. */
static uint8_t *rec_avail(const struct ut_buf *rec)
{
	return gp(tv_get64(rec->data + REC_AVAIL_GPA), 4 + 2 * QSIZE);
}

/* A saved record with a parked request (its virtio-blk part the last
 * @tail bytes): corrupt variants of that part are refused, each with its
 * reason, and leave nothing parked or in use; good ones (version 2 and 3,
 * a head twice, the flush stage) are taken. */
static void test_parked_record_checks(struct vmm_device *dev, const struct ut_buf *rec, size_t tail)
{
	static const struct { uint32_t ver, n; uint16_t q, head; uint32_t flags; size_t len;
			      const char *why; } bad[] = {
		{ 2, 1, 0, QSIZE, 0, 16, "head 16, flags 0x0 invalid (queue size 16)" },
		{ 2, 1, 0, 0xFFFF, 0, 16, "head 65535, flags 0x0 invalid" },
		{ 2, 1, 1, 0, 0, 16, "queue 1, head 0" },
		{ 2, 1, 0, 0, 2, 16, "flags 0x2 invalid" },
		{ 2, 0, 0, 0, 0, 8, "0 parked requests for a queue of 16" },
		{ 2, 17, 0, 0, 0, 16, "17 parked requests for a queue of 16" },
		{ 2, 1, 0, 0, 0, 12, "virtio-blk state truncated" },
		{ 2, 2, 0, 0, 0, 16, "virtio-blk state truncated" },
		{ 3, 1, 0, 0, 0, 16, "virtio-blk state truncated" },   /* no text length */
		{ 3, 1, 0, QSIZE, 0, 18, "head 16, flags 0x0 invalid" },
		{ 4, 1, 0, 0, 0, 16, "virtio-blk state version 4 not supported" },
	};
	struct vmm_virtio_dev *vd = (struct vmm_virtio_dev *)dev;
	struct ut_err err;
	uint8_t b[300];
	size_t n;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(b, 0, sizeof(b));
		tv_put32(b, bad[i].ver);
		tv_put32(b + 4, bad[i].n);
		tv_put16(b + 8, bad[i].q);
		tv_put16(b + 10, bad[i].head);
		tv_put32(b + 12, bad[i].flags);
		CHECK(restore_with(dev, rec, tail, b, bad[i].len, &err) < 0,
		      "hostile parked record %zu accepted", i);
		CHECK_STR(err.msg, bad[i].why);
		CHECK_EQ(vd->vqs[0].inuse, 0);
	}
	/* version 3's error text: too long, a control character, a NUL,
	 * cut short */
	n = parked_part(b, 0, 0, "");
	tv_put16(b + 16, 256);
	memset(b + 18, 'a', 256);
	CHECK(restore_with(dev, rec, tail, b, n + 256, &err) < 0, "a 256-byte error text accepted");
	CHECK_STR(err.msg, "parked request 0: error text of 256 bytes (at most 255)");
	n = parked_part(b, 0, 0, "disk 'x\nfailed");
	CHECK(restore_with(dev, rec, tail, b, n, &err) < 0, "a newline in the error text accepted");
	CHECK_STR(err.msg, "control character 0x0a in its error text");
	b[20] = '\0';
	CHECK(restore_with(dev, rec, tail, b, n, &err) < 0, "a NUL in the error text accepted");
	CHECK_STR(err.msg, "control character 0x00 in its error text");
	n = parked_part(b, 0, 0, "disk 'x': failed");
	CHECK(restore_with(dev, rec, tail, b, n - 1, &err) < 0, "an error text cut short accepted");
	CHECK_STR(err.msg, "virtio-blk state truncated");
	CHECK_EQ(vd->vqs[0].inuse, 0);
	/* bytes after the record's last field: refused (a count below the
	 * entries written would silently lose the requests after it: the
	 * guest would wait for them forever), nothing parked or in use */
	memset(b, 0, sizeof(b));
	n = parked_part(b, 0, 0, "disk 'x': failed");
	CHECK(restore_with(dev, rec, tail, b, n + 1, &err) < 0, "a v3 record with a byte after it accepted");
	CHECK_STR(err.msg, "1 byte(s) after the virtio-blk state");
	CHECK_EQ(vd->vqs[0].inuse, 0);
	n = parked_part(b, 0, 0, NULL);
	CHECK(restore_with(dev, rec, tail, b, n + 8, &err) < 0, "a v2 record with 8 bytes after it accepted");
	CHECK_STR(err.msg, "8 byte(s) after the virtio-blk state");
	CHECK_EQ(vd->vqs[0].inuse, 0);
	tv_put32(b, 1);
	CHECK(restore_with(dev, rec, tail, b, 16, &err) < 0, "a v1 record with 12 bytes after it accepted");
	CHECK_STR(err.msg, "12 byte(s) after the virtio-blk state");
	/* count 1, two entries written: the second would be lost */
	n = parked_part(b, 0, 0, "a");
	memcpy(b + n, b + 8, n - 8);
	CHECK(restore_with(dev, rec, tail, b, n + n - 8, &err) < 0, "a count below the entries accepted");
	CHECK_STR(err.msg, "11 byte(s) after the virtio-blk state");
	CHECK_EQ(vd->vqs[0].inuse, 0);
	/* not printable UTF-8: a raw C1 byte (0x9b: CSI, obeyed by some
	 * terminals), an encoded C1, a character cut short, a continuation
	 * byte alone, overlong, a surrogate, above U+10FFFF: refused;
	 * UTF-8 characters of 2, 3 and 4 bytes: taken */
	{
		static const struct { const char *text, *why; } utf[] = {
			{ "disk '\x9b" "31m'", "byte 0x9b at 6 of its error text is not printable UTF-8" },
			{ "disk '\xc2\x9b" "31m'", "byte 0xc2 at 6 of its error text is not printable UTF-8" },
			{ "disk '\xc3", "byte 0xc3 at 6 of its error text is not printable UTF-8" },
			{ "\xa9", "byte 0xa9 at 0 of its error text is not printable UTF-8" },
			{ "a\xc0\xaf", "byte 0xc0 at 1 of" },
			{ "a\xe0\x80\xaf", "byte 0xe0 at 1 of" },
			{ "a\xed\xa0\x80", "byte 0xed at 1 of" },
			{ "a\xf4\x90\x80\x80", "byte 0xf4 at 1 of" },
			{ "a\xf5\x80\x80\x80", "byte 0xf5 at 1 of" },
			{ "a\xe2\x82", "byte 0xe2 at 1 of" },
		};

		for (size_t i = 0; i < sizeof(utf) / sizeof(utf[0]); i++) {
			n = parked_part(b, 0, 0, utf[i].text);
			CHECK(restore_with(dev, rec, tail, b, n, &err) < 0, "error text %zu (not UTF-8) accepted", i);
			CHECK_STR(err.msg, utf[i].why);
			CHECK_EQ(vd->vqs[0].inuse, 0);
			if (err.msg[0] == '\0')
				dev->ops->reset(dev);
		}
		n = parked_part(b, 0, 0, "disk '/tmp/caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x92\xbe \xc2\xa0.img': failed");
		CHECK(restore_with(dev, rec, tail, b, n, &err) == 0, "UTF-8 error text refused: %s", err.msg);
		dev->ops->reset(dev);
	}
	/* the record's queue disabled (bit 0 of the queue's flags, after
	 * the transport's 287 bytes and the queue's version and size): a
	 * saved device never holds requests there (a reset drops them), and
	 * its size was never checked: refused */
	CHECK_EQ(tv_get16(rec->data + 291), QSIZE);
	{
		struct ut_buf off = UT_BUF_INIT;

		CHECK(ut_buf_add(&off, rec->data, rec->len) == 0, "ut_buf_add");
		CHECK_EQ(tv_get16(off.data + 293) & 1, 1);
		tv_put16(off.data + 293, (uint16_t)(tv_get16(off.data + 293) & ~1u));
		n = parked_part(b, 0, 0, "disk 'x': failed");
		CHECK(restore_with(dev, &off, tail, b, n, &err) < 0, "parked requests on a disabled queue accepted");
		CHECK_STR(err.msg, "queue 0 state invalid: disabled queue with avail index 1 and used index 0 (not 0)");
		/* a disabled queue never took a chain: its indices are 0 */
		tv_put16(off.data + REC_LAST_AVAIL, 0);
		CHECK(restore_with(dev, &off, tail, b, n, &err) < 0, "parked requests on a disabled queue accepted");
		CHECK_STR(err.msg, "parked requests for a queue that is not live");
		tv_put16(off.data + 291, 0xFFFF);
		CHECK(restore_with(dev, &off, tail, b, n, &err) < 0, "a disabled queue of 65535 accepted");
		CHECK_STR(err.msg, "parked requests for a queue that is not live");
		CHECK_EQ(vd->vqs[0].inuse, 0);
		ut_buf_release(&off);
	}
	/* a 255-byte text (the most) is taken */
	n = parked_part(b, 0, 0, "");
	tv_put16(b + 16, 255);
	memset(b + 18, 'a', 255);
	CHECK(restore_with(dev, rec, tail, b, n + 255, &err) == 0, "a 255-byte error text: %s", err.msg);
	dev->ops->reset(dev);
	/* the parked requests must be the chains in flight at the save
	 * (last_avail - used_idx: the device took 1 here, used none), each
	 * once, none still offered in the avail ring: else refused, nothing
	 * parked or in use */
	{
		struct ut_buf two = UT_BUF_INIT;
		uint8_t *avail = rec_avail(rec);

		CHECK_EQ(tv_get16(rec->data + REC_LAST_AVAIL), 1);
		CHECK_EQ(tv_get16(rec->data + REC_USED_IDX), 0);
		CHECK_EQ(tv_get16(avail + 2), 1);
		/* the same head twice, with 2 in flight: a conforming driver
		 * never offers a chain again before it was used; the restore
		 * would complete it twice */
		rec_indices(&two, rec, 2, 0);
		parked_two(b, 0, 0);
		CHECK(restore_with(dev, &two, tail, b, 24, &err) < 0, "a head listed twice accepted");
		CHECK_STR(err.msg, "device 'virtio-blk3': parked requests: head 0 held twice");
		CHECK_EQ(vd->vqs[0].inuse, 0);
		/* two parked, one in flight; one parked, none or two in flight */
		parked_two(b, 0, 1);
		CHECK(restore_with(dev, rec, tail, b, 24, &err) < 0, "2 parked for 1 in flight accepted");
		CHECK_STR(err.msg, "parked requests: 2 chain(s) held, but 1 in flight (avail index 1 taken, used index 0)");
		CHECK_EQ(vd->vqs[0].inuse, 0);
		n = parked_part(b, 0, 0, "disk 'x': failed");
		rec_indices(&two, rec, 0, 0);
		CHECK(restore_with(dev, &two, tail, b, n, &err) < 0, "1 parked for none in flight accepted");
		CHECK_STR(err.msg, "parked requests: 1 chain(s) held, but 0 in flight");
		rec_indices(&two, rec, 7, 5);
		CHECK(restore_with(dev, &two, tail, b, n, &err) < 0, "1 parked for 2 in flight accepted");
		CHECK_STR(err.msg, "parked requests: 1 chain(s) held, but 2 in flight (avail index 7 taken, used index 5)");
		CHECK_EQ(vd->vqs[0].inuse, 0);
		/* more in flight than the queue holds: the queue's own record */
		rec_indices(&two, rec, 1, (uint16_t)(1 - QSIZE - 1));
		CHECK(restore_with(dev, &two, tail, b, n, &err) < 0, "17 in flight on a queue of 16 accepted");
		CHECK_STR(err.msg, "queue 0 state invalid: 17 chains in use (avail index 1 taken, used index 65520) for a queue of 16");
		/* the parked head offered again in the avail ring, at index 1
		 * (not yet taken): the device would take it a second time */
		tv_put16(avail + 4 + 2 * 1, 0);
		tv_put16(avail + 2, 2);
		CHECK(restore_with(dev, rec, tail, b, n, &err) < 0, "a parked head still in the avail ring accepted");
		CHECK_STR(err.msg, "parked requests: head 0 held, and offered again in the avail ring at index 1 (not yet taken)");
		CHECK_EQ(vd->vqs[0].inuse, 0);
		/* another head there is the driver's next request: taken */
		tv_put16(avail + 4 + 2 * 1, 5);
		CHECK(restore_with(dev, rec, tail, b, n, &err) == 0, "another head offered after the parked one: %s",
		      err.msg);
		CHECK_EQ(vd->vqs[0].inuse, 1);
		dev->ops->reset(dev);
		tv_put16(avail + 2, 1);
		tv_put16(avail + 4 + 2 * 1, 0);
		/* version 1 (nothing parked) is still read, with nothing in
		 * flight; with one in flight it would lose that chain (its
		 * guest waiting forever): refused */
		tv_put32(b, 1);
		CHECK(restore_with(dev, rec, tail, b, 4, &err) < 0, "version 1 record with a chain in flight accepted");
		CHECK_STR(err.msg, "parked requests: 0 chain(s) held, but 1 in flight");
		rec_indices(&two, rec, 1, 1);
		CHECK(restore_with(dev, &two, tail, b, 4, &err) == 0, "version 1 record: %s", err.msg);
		ut_buf_release(&two);
	}
	/* only the writethrough flush of the write at head 0 left (the driver
	 * did not take VIRTIO_BLK_F_FLUSH): taken, in version 2 and 3;
	 * dropped again by a reset before the loop runs its retry */
	n = parked_part(b, 0, 1, NULL);
	CHECK(restore_with(dev, rec, tail, b, n, &err) == 0, "flush-stage record (v2): %s", err.msg);
	dev->ops->reset(dev);
	CHECK_STR(last_event, "1 failed request(s) waiting for a retry were dropped");
	n = parked_part(b, 0, 1, "disk 'x': flush failed: Input/output error");
	CHECK(restore_with(dev, rec, tail, b, n, &err) == 0, "flush-stage record (v3): %s", err.msg);
	dev->ops->reset(dev);
	CHECK_STR(last_event, "1 failed request(s) waiting for a retry were dropped");
	/* chain 2 is the status byte alone: no header, as a new request it
	 * gets IOERR, so restored it does (told; dropped here by the reset
	 * before the VM runs) */
	n = parked_part(b, 2, 0, "disk 'x': write failed");
	events_clear();
	CHECK(restore_with(dev, rec, tail, b, n, &err) == 0, "a parked chain without a header: %s",
	      err.msg);
	CHECK_EQ(n_events, 1);
	CHECK_STR(last_event, "1 restored failed request(s) no longer read as requests this disk runs");
	CHECK_STR(last_event, "the first (head 2): status IOERR (it had failed: disk 'x': write failed)");
	CHECK_EQ(vd->vqs[0].inuse, 1);
	dev->ops->reset(dev);
	CHECK_STR(last_event, "1 failed request(s) waiting for a retry were dropped");
}

/* Device 0 (werror=enospc, the default) reports an EFBIG; device 3
 * (werror=stop) keeps the failed write, pauses the VM, saves it in its
 * record (hostile variants refused), is reset (dropped) and restored (kept
 * again, retried at once: the error lasts, so paused again), retries on
 * every resume (pausing again while the error lasts) and completes the
 * write once it works; a reset drops a kept request without touching the
 * ring. Host messages: one per pause, one for the first reported error,
 * one for a drop, one for a retry of restored requests. */
static void test_werror(struct tv_drv *d0, const char *werr_path)
{
	struct vmm_device *dev = tv_find_dev(vm, "virtio-blk", 3);
	struct ut_buf rec = UT_BUF_INIT;
	struct tv_drv d;
	uint8_t file[512];
	uint16_t used;
	size_t prefix;

	vm->resumable = true;   /* as with a control socket */
	vm->on_event = on_event;
	/* the default policy reports errors other than ENOSPC/EDQUOT */
	CHECK_EQ(tv_drv_init(d0, 0, QSIZE, RING_GPA), 0);
	memset(gp(DATA_GPA, 512), 0x5e, 512);
	fsize_limit(512 << 10);
	EXPECT_STATUS(blk_req(d0, T_OUT, (768 << 10) / 512, DATA_GPA, 512, false, NULL), S_IOERR);
	CHECK(!vmm_vm_paused(vm), "werror=enospc paused the VM on EFBIG");
	CHECK_EQ(n_events, 1);
	CHECK_STR(last_event, "reported to the guest as an I/O error (werror=enospc)");
	EXPECT_STATUS(blk_req(d0, T_OUT, (768 << 10) / 512, DATA_GPA, 512, false, NULL), S_IOERR);
	CHECK_EQ(n_events, 1);   /* further errors are counted, not told */
	fsize_limit(RLIM_INFINITY);
	tv_wr(d0, C_STATUS, 1, 0);

	open_blk(&d, 3);
	CHECK_EQ(tv_drv_init(&d, 0, QSIZE, RING_GPA + 0x8000), 0);
	prefix = blk_prefix_len(dev);
	memset(gp(DATA_GPA, 512), 0x6f, 512);
	fsize_limit(1 << 20);
	CHECK(blk_write_parks(&d, (2 << 20) / 512), "werror=stop: a failed write did not pause the VM");
	CHECK_EQ(tv_used_idx(&d), 0);
	CHECK_EQ(*gp(STATUS_GPA, 1), S_NONE);
	CHECK_EQ(n_events, 2);
	CHECK_STR(last_event, "write of 512 bytes at offset 2097152 failed: File too large: VM paused (werror=stop)");
	CHECK_STR(vm->pause_why, "offset 2097152 failed: File too large");
	/* a save holds the kept request: version 3, one request, queue 0,
	 * head 0, the write itself (not only its flush), the host message of
	 * its failure */
	CHECK_EQ(dev->ops->save(dev, &rec), 0);
	if (rec.len <= prefix + 18) {
		CHECK(false, "record of %zu bytes", rec.len);
		ut_buf_release(&rec);
		return;
	}
	{
		const uint8_t *p = rec.data + prefix;
		uint16_t tl = tv_get16(p + 16);
		char text[300];

		CHECK_EQ(tv_get32(p), 3);
		CHECK_EQ(tv_get32(p + 4), 1);
		CHECK_EQ(tv_get16(p + 8), 0);
		CHECK_EQ(tv_get16(p + 10), 0);
		CHECK_EQ(tv_get32(p + 12), 0);
		CHECK_EQ(rec.len, prefix + 18 + tl);
		snprintf(text, sizeof(text), "%.*s", (int)(rec.len - prefix - 18), (const char *)p + 18);
		CHECK_STR(text, "werr.img': write of 512 bytes at offset 2097152 failed: File too large");
	}
	CHECK_EQ(tv_used_idx(&d), 0);
	/* as a new process would: the device reset (the request goes with
	 * the state, told), the VM not paused, then the record restored */
	dev->ops->reset(dev);
	CHECK_EQ(n_events, 3);
	CHECK_STR(last_event, "1 failed request(s) waiting for a retry go with the saved state");
	vmm_vm_resume(vm);
	for (int i = 0; i < 5; i++)
		vmm_loop_run_once(&vm->loop, 10);
	CHECK_EQ(tv_used_idx(&d), 0);
	test_parked_record_checks(dev, &rec, rec.len - prefix);
	/* the same request in a version 2 record (no error text): taken,
	 * retried when the VM runs, told so, paused again; dropped by a
	 * reset */
	{
		struct ut_err err = { 0, "" };
		uint8_t b[16];

		events_clear();
		*gp(STATUS_GPA, 1) = S_NONE;
		CHECK(restore_with(dev, &rec, rec.len - prefix, b, parked_part(b, 0, 0, NULL), &err) == 0,
		      "version 2 record: %s", err.msg);
		CHECK(wait_paused(), "the request from a version 2 record was not retried");
		CHECK_EQ(n_events, 2);
		CHECK_STR(events_log, "retrying 1 request(s) that had failed before the VM was saved (the last error: not recorded in the state file)\n");
		CHECK_STR(vm->pause_why, "offset 2097152 failed: File too large");
		dev->ops->reset(dev);
		vmm_vm_resume(vm);
		CHECK_EQ(tv_used_idx(&d), 0);
	}
	events_clear();
	*gp(STATUS_GPA, 1) = S_NONE;   /* as in the saved RAM (the drop wrote IOERR) */
	{
		struct ut_err err = { 0, "" };

		CHECK(dev->ops->restore(dev, rec.data, rec.len, &err) == 0, "restore: %s", err.msg);
	}
	CHECK_EQ(n_events, 0);   /* told when the VM runs */
	CHECK(!vmm_vm_paused(vm), "paused by the restore itself");
	/* restored and run: retried at once, the saved error told first; the
	 * error lasts: paused again (the fresh reason in query-status) */
	CHECK(wait_paused(), "the restored request was not retried (or did not pause the VM)");
	CHECK_EQ(tv_used_idx(&d), 0);
	CHECK_EQ(*gp(STATUS_GPA, 1), S_NONE);
	CHECK_EQ(n_events, 2);
	CHECK_STR(events_log, "retrying 1 request(s) that had failed before the VM was saved (the last error: disk '");
	CHECK_STR(events_log, "werr.img': write of 512 bytes at offset 2097152 failed: File too large)\n");
	CHECK_STR(last_event, "write of 512 bytes at offset 2097152 failed: File too large: VM paused (werror=stop)");
	CHECK_STR(vm->pause_why, "offset 2097152 failed: File too large");
	/* resumed while the error lasts: retried, kept, paused again */
	vmm_vm_resume(vm);
	CHECK(!vmm_vm_paused(vm), "resume left the VM paused");
	CHECK(wait_paused(), "the retried write did not pause the VM again");
	CHECK_EQ(tv_used_idx(&d), 0);
	CHECK_EQ(n_events, 3);
	/* the error is gone: the retry completes the request */
	fsize_limit(RLIM_INFINITY);
	vmm_vm_resume(vm);
	CHECK_EQ(tv_wait_used(&d, 20, NULL, NULL), 1);
	CHECK_EQ(*gp(STATUS_GPA, 1), S_OK);
	CHECK(!vmm_vm_paused(vm), "paused after a successful retry");
	file_read(werr_path, file, sizeof(file), 2 << 20);
	CHECK(all_bytes(file, 512, 0x6f), "the retried write did not reach the file");
	CHECK_EQ(dev->ops->save(dev, &rec), 0);
	/* kept, then the driver resets the device: dropped, ring untouched */
	fsize_limit(1 << 20);
	CHECK(blk_write_parks(&d, (3 << 20) / 512), "werror=stop: the second failed write did not pause the VM");
	used = tv_used_idx(&d);
	n_events = 0;
	tv_wr(&d, C_STATUS, 1, 0);
	CHECK_EQ(tv_used_idx(&d), used);
	CHECK_EQ(n_events, 1);
	CHECK_STR(last_event, "1 failed request(s) waiting for a retry were dropped");
	fsize_limit(RLIM_INFINITY);
	vmm_vm_resume(vm);
	for (int i = 0; i < 5; i++)
		vmm_loop_run_once(&vm->loop, 10);
	CHECK_EQ(tv_used_idx(&d), used);   /* nothing retried after the reset */
	file_read(werr_path, file, sizeof(file), 3 << 20);
	CHECK(all_bytes(file, 512, 0), "a request dropped by the reset was written after it");
	CHECK(!vmm_vm_paused(vm), "paused again after the reset");
	vm->on_event = NULL;
	vm->resumable = false;
	ut_buf_release(&rec);
}

/* Restore @rec (a record of device @dev whose parked request is the write
 * at head 0, chain 0 -> 1 -> 2, driven by @d) after guest RAM was changed
 * as a guest could have (or into another disk): the restore succeeds and
 * tells; when the VM runs, the request completes with @status (used entry
 * for head 0, status byte) as the same chain newly posted would, without
 * pausing the VM; nothing in use after. The used entry is then taken back
 * (@d's ring is shared with the record's next restore). */
static void expect_answered(struct vmm_device *dev, struct tv_drv *d, const struct ut_buf *rec,
			    int status, const char *told)
{
	struct vmm_virtio_dev *vd = (struct vmm_virtio_dev *)dev;
	struct ut_err err = { 0, "" };
	uint32_t head = 0xFFFF, len = 0;
	uint16_t used = tv_used_idx(d);

	events_clear();
	*gp(STATUS_GPA, 1) = S_NONE;
	CHECK(dev->ops->restore(dev, rec->data, rec->len, &err) == 0,
	      "a parked chain to answer with %d refused: %s", status, err.msg);
	vd->isr = 0;   /* what the record held (@d may drive another device) */
	CHECK_EQ(n_events, 1);
	CHECK_STR(last_event, told);
	CHECK_STR(last_event, "(it had failed: disk '");
	CHECK_EQ(vd->vqs[0].inuse, 1);
	CHECK_EQ(tv_used_idx(d), used);   /* answered when the VM runs */
	CHECK_EQ(tv_wait_used(d, 20, &head, &len), 1);
	CHECK_EQ(head, 0);
	CHECK_EQ(len, 1);
	CHECK_EQ(*gp(STATUS_GPA, 1), status);
	CHECK_EQ(vd->isr, 1);   /* the answer interrupts (INTx: ISR bit 0) */
	CHECK_EQ(vd->vqs[0].inuse, 0);
	CHECK_EQ(tv_wait_used(d, 3, NULL, NULL), 0);
	CHECK(!vmm_vm_paused(vm), "an answered restored request paused the VM");
	CHECK_EQ(n_events, 1);   /* no "retrying" message: nothing retried */
	events_clear();
	dev->ops->reset(dev);
	CHECK_EQ(n_events, 0);   /* nothing parked to drop */
	tv_put16(gp(d->used + 2, 2), used);
	d->used_seen--;
}

/* Restore @rec (as above) after guest RAM was changed so that a parked
 * chain breaks the queue's rules: the restore succeeds; the queue breaks
 * with @why and the device needs a reset (DEVICE_NEEDS_RESET), as for such
 * a chain popped at run time; every parked request (1, or the count in
 * @part, the virtio-blk part put in @rec instead of its last @tail bytes)
 * is dropped (told),
 * nothing in use, nothing completed, the VM not paused. */
static void expect_chain_broken(struct vmm_device *dev, struct tv_drv *d, const struct ut_buf *rec,
				size_t tail, const uint8_t *part, size_t plen, const char *why)
{
	struct vmm_virtio_dev *vd = (struct vmm_virtio_dev *)dev;
	struct ut_err err = { 0, "" };
	uint16_t used = tv_used_idx(d);
	char dropped[80];

	snprintf(dropped, sizeof(dropped), "; the %u failed request(s) saved were dropped",
		 part ? tv_get32(part + 4) : 1);
	events_clear();
	CHECK((part ? restore_with(dev, rec, tail, part, plen, &err) :
	       dev->ops->restore(dev, rec->data, rec->len, &err)) == 0,
	      "a parked chain '%s' refused the restore: %s", why, err.msg);
	CHECK_EQ(n_events, 1);
	CHECK_STR(last_event, why);
	CHECK_STR(last_event, "the queue is broken (the driver must reset the device)");
	CHECK_STR(last_event, dropped);
	CHECK(vd->vqs[0].broken, "queue not broken by '%s'", why);
	CHECK(vd->status & VIRTIO_STATUS_NEEDS_RESET, "no DEVICE_NEEDS_RESET after '%s'", why);
	CHECK(vd->isr & 2, "no configuration change interrupt after '%s'", why);
	CHECK_EQ(vd->vqs[0].inuse, 0);
	for (int i = 0; i < 5; i++)
		vmm_loop_run_once(&vm->loop, 10);
	CHECK_EQ(tv_used_idx(d), used);
	CHECK(!vmm_vm_paused(vm), "dropped requests paused the VM");
	events_clear();
	dev->ops->reset(dev);
	CHECK_EQ(n_events, 0);   /* nothing parked to drop */
}

/* The chains of parked requests come from the restored RAM: the guest
 * may have changed them after the failure, or the disk differs. Each is
 * treated as the same chain newly posted would be: run, answered with a
 * status (IOERR, UNSUPP), or, breaking the rules (a loop, a buffer outside
 * RAM, no status byte), the queue breaks. A chain of another parked
 * request, a head the avail ring offers again: taken. Nothing crashes or
 * leaves RAM; inuse ends at 0; what a save holds, a restore takes. */
static void test_parked_chains(const char *werr_path)
{
	struct vmm_device *dev = tv_find_dev(vm, "virtio-blk", 3);
	struct vmm_virtio_dev *vd = (struct vmm_virtio_dev *)dev;
	struct ut_buf rec = UT_BUF_INIT, rec2 = UT_BUF_INIT;
	struct ut_err err = { 0, "" };
	uint8_t desc[64], b[24], file[512];
	struct tv_drv d;
	uint32_t head;
	size_t prefix, tail;

	vm->resumable = true;
	vm->on_event = on_event;
	open_blk(&d, 3);
	CHECK_EQ(tv_drv_init(&d, 0, QSIZE, RING_GPA + 0x8000), 0);
	prefix = blk_prefix_len(dev);
	memset(gp(DATA_GPA, 512), 0x7a, 512);
	fsize_limit(1 << 20);
	CHECK(blk_write_parks(&d, (2 << 20) / 512), "werror=stop: a failed write did not pause the VM");
	CHECK_EQ(dev->ops->save(dev, &rec), 0);
	tail = rec.len - prefix;
	dev->ops->reset(dev);
	vmm_vm_resume(vm);
	memcpy(desc, gp(d.desc, 64), 64);

	/* the guest rewrote the header: an unknown type gets UNSUPP, a
	 * sector past the end IOERR, as new requests would */
	{
		uint8_t *hdr = gp(HDR_GPA, 16);

		tv_put32(hdr, 0x77);
		expect_answered(dev, &d, &rec, S_UNSUPP, "the first (head 0): status UNSUPP (it had failed: disk '");
		tv_put32(hdr, T_OUT);
		tv_put64(hdr + 8, (4 << 20) / 512);
		expect_answered(dev, &d, &rec, S_IOERR, "the first (head 0): status IOERR");
		tv_put64(hdr + 8, (2 << 20) / 512);
	}

	/* restored with another disk (device 1: 64 KiB, read-only): the write
	 * at 2 MiB, a write at 0 and a read at 2 MiB get IOERR, a read at 0
	 * is parked (dropped again by a reset before it runs) */
	{
		struct vmm_device *rodev = tv_find_dev(vm, "virtio-blk", 1);
		uint8_t *hdr = gp(HDR_GPA, 16);

		expect_answered(rodev, &d, &rec, S_IOERR, "status IOERR");
		tv_put64(hdr + 8, 0);
		expect_answered(rodev, &d, &rec, S_IOERR, "status IOERR");
		tv_put32(hdr, T_IN);
		tv_desc(&d, 1, DATA_GPA, 512, F_NEXT | F_WRITE, 2);
		tv_put64(hdr + 8, (2 << 20) / 512);
		expect_answered(rodev, &d, &rec, S_IOERR, "status IOERR");
		tv_put64(hdr + 8, 0);
		CHECK(rodev->ops->restore(rodev, rec.data, rec.len, &err) == 0,
		      "a parked read restored on a read-only disk: %s", err.msg);
		events_clear();
		rodev->ops->reset(rodev);
		CHECK_EQ(n_events, 1);
		CHECK_STR(last_event, "1 failed request(s) waiting for a retry were dropped");
		for (int i = 0; i < 5; i++)
			vmm_loop_run_once(&vm->loop, 10);
		tv_put32(hdr, T_OUT);
		tv_put64(hdr + 8, (2 << 20) / 512);
		memcpy(gp(d.desc, 64), desc, 64);
	}
	/* the guest-visible capacity is the disk's, not the record's: the
	 * 4 MiB disk's record restored into the 64 KiB device says 128
	 * sectors (config_generation moves: a field changed), also after a
	 * reset; restored into its own device, nothing changes */
	{
		struct vmm_device *rodev = tv_find_dev(vm, "virtio-blk", 1);
		struct vmm_virtio_dev *rvd = (struct vmm_virtio_dev *)rodev;
		uint8_t gen;

		rodev->ops->reset(rodev);
		CHECK_EQ(tv_get64(rvd->config), (64 << 10) / 512);
		/* in the record: the 60-byte config before the virtio-blk part;
		 * config_generation after version, PCI config, features,
		 * selectors, status and ISR */
		CHECK_EQ(tv_get64(rec.data + rec.len - tail - 60), (4 << 20) / 512);
		gen = rec.data[4 + 256 + 8 + 4 + 4 + 1 + 1];
		/* the driver was running (DRIVER_OK), no interrupt pending */
		CHECK(rec.data[4 + 256 + 8 + 4 + 4] & 4, "status 0x%x", rec.data[4 + 256 + 8 + 4 + 4]);
		CHECK_EQ(rec.data[4 + 256 + 8 + 4 + 4 + 1] & 2, 0);
		CHECK(rodev->ops->restore(rodev, rec.data, rec.len, &err) == 0, "restore: %s", err.msg);
		CHECK_EQ(tv_get64(rvd->config), (64 << 10) / 512);
		CHECK_EQ(rvd->config_gen, (uint8_t)(gen + 1));
		CHECK(rvd->isr & 2, "no configuration change interrupt for the new capacity (ISR 0x%x)",
		      rvd->isr);
		rodev->ops->reset(rodev);
		CHECK_EQ(tv_get64(rvd->config), (64 << 10) / 512);
		CHECK(dev->ops->restore(dev, rec.data, rec.len, &err) == 0, "restore: %s", err.msg);
		CHECK_EQ(tv_get64(vd->config), (4 << 20) / 512);
		CHECK_EQ(vd->config_gen, gen);
		CHECK_EQ(vd->isr & 2, 0);   /* nothing changed: no interrupt */
		dev->ops->reset(dev);
		for (int i = 0; i < 5; i++)
			vmm_loop_run_once(&vm->loop, 10);
	}


	/* a loop through the head, a buffer outside RAM, no status byte (the
	 * last buffer made device-readable) */
	tv_desc(&d, 1, DATA_GPA, 512, F_NEXT, 0);
	expect_chain_broken(dev, &d, &rec, 0, NULL, 0,
			    "restored failed request 0 (head 0): loop in descriptor chain from head 0");
	memcpy(gp(d.desc, 64), desc, 64);
	tv_desc(&d, 1, RAM_SIZE - 256, 512, F_NEXT, 2);
	expect_chain_broken(dev, &d, &rec, 0, NULL, 0,
			    "request 0 (head 0): buffer 0x3fff00+512 outside guest RAM");
	memcpy(gp(d.desc, 64), desc, 64);
	tv_desc(&d, 2, STATUS_GPA, 1, 0, 0);
	expect_chain_broken(dev, &d, &rec, 0, NULL, 0,
			    "request 0 (head 0): virtio-blk request without a status byte");
	memcpy(gp(d.desc, 64), desc, 64);
	/* two parked, the first fine, the second (head 3) a buffer outside
	 * RAM: both dropped, the first's chain no longer in use */
	tv_desc(&d, 3, RAM_SIZE - 256, 512, 0, 0);
	parked_two(b, 0, 3);
	/* (as saved with two chains in flight: the driver posted head 3
	 * after head 0, its avail index 2) */
	CHECK_EQ(d.avail_idx, 1);
	rec_indices(&rec2, &rec, 2, 0);
	tv_put16(gp(d.avail + 4 + 2, 2), 3);
	tv_put16(gp(d.avail + 2, 2), 2);
	d.avail_idx = 2;
	expect_chain_broken(dev, &d, &rec2, tail, b, 24,
			    "request 1 (head 3): buffer 0x3fff00+512 outside guest RAM");
	memcpy(gp(d.desc, 64), desc, 64);
	/* a corrupt field after a bad chain still refuses the file */
	tv_desc(&d, 1, DATA_GPA, 512, F_NEXT, 0);
	tv_put16(b + 18, QSIZE);
	CHECK(restore_with(dev, &rec2, tail, b, 24, &err) < 0, "a bad head after a bad chain accepted");
	CHECK_STR(err.msg, "parked request 1: queue 0, head 16, flags 0x0 invalid");
	CHECK_EQ(vd->vqs[0].inuse, 0);
	dev->ops->reset(dev);
	memcpy(gp(d.desc, 64), desc, 64);

	/* head 1 (the write's data, then its status) parked too, its data a
	 * flush header: two requests on one chain, as a driver could post
	 * them; both run, each completes once, inuse back to 0 */
	memset(gp(DATA_GPA, 16), 0, 16);
	tv_put32(gp(DATA_GPA, 4), T_FLUSH);
	parked_two(b, 0, 1);
	tv_put16(gp(d.avail + 4 + 2, 2), 1);
	CHECK(restore_with(dev, &rec2, tail, b, 24, &err) == 0, "two parked requests sharing a chain: %s",
	      err.msg);
	CHECK_EQ(vd->vqs[0].inuse, 2);
	/* retried: the flush completes, the write fails again (paused) */
	CHECK(wait_paused(), "the restored write did not pause the VM again");
	CHECK_EQ(tv_wait_used(&d, 5, &head, NULL), 1);
	CHECK_EQ(head, 1);
	fsize_limit(RLIM_INFINITY);
	vmm_vm_resume(vm);
	CHECK_EQ(tv_wait_used(&d, 20, &head, NULL), 1);
	CHECK_EQ(head, 0);
	CHECK_EQ(tv_wait_used(&d, 3, NULL, NULL), 0);
	CHECK_EQ(vd->vqs[0].inuse, 0);
	file_read(werr_path, file, sizeof(file), 2 << 20);
	CHECK(file[0] == T_FLUSH && file[4] == 0 && all_bytes(file + 16, 496, 0x7a),
	      "the retried write's data wrong");
	dev->ops->reset(dev);

	/* the avail ring offers the parked head again (a driver that posted
	 * it twice, against the virtio rules): the live device does not take
	 * it a second time (the request would run and be answered twice, and
	 * a save of it would be refused at restore): the queue breaks,
	 * DEVICE_NEEDS_RESET, and the parked request stays the one in use */
	vmm_vm_resume(vm);
	memset(gp(d.used, 4 + 8 * QSIZE), 0, 4 + 8 * QSIZE);
	CHECK_EQ(tv_drv_init(&d, 0, QSIZE, RING_GPA + 0x8000), 0);
	memset(gp(DATA_GPA, 512), 0x7b, 512);
	fsize_limit(1 << 20);
	CHECK(blk_write_parks(&d, (2 << 20) / 512), "werror=stop: a failed write did not pause the VM");
	tv_post(&d, 0);
	for (int i = 0; i < 5; i++)
		vmm_loop_run_once(&vm->loop, 10);
	CHECK_EQ(vd->vqs[0].inuse, 1);
	CHECK(vd->vqs[0].broken, "a head offered again while in use did not break the queue");
	CHECK_STR(vd->vqs[0].why, "avail ring head 0 offered again while still in use");
	CHECK(vd->status & VIRTIO_STATUS_NEEDS_RESET, "no DEVICE_NEEDS_RESET after a head offered twice");
	dev->ops->reset(dev);
	vmm_vm_resume(vm);
	fsize_limit(RLIM_INFINITY);
	for (int i = 0; i < 5; i++)
		vmm_loop_run_once(&vm->loop, 10);
	CHECK(!vmm_vm_paused(vm), "a refused restore paused the VM");
	tv_wr(&d, C_STATUS, 1, 0);

	/* the driver breaks the queue while a failed write waits (a chain
	 * the device cannot take, in the same kick): the save holds the
	 * request and the broken queue; the restore takes the file (the
	 * request dropped, told: the driver must reset the device) */
	vmm_vm_resume(vm);
	CHECK_EQ(tv_drv_init(&d, 0, QSIZE, RING_GPA + 0x8000), 0);
	fsize_limit(1 << 20);
	CHECK(blk_write_parks(&d, (2 << 20) / 512), "werror=stop: a failed write did not pause the VM");
	tv_post(&d, QSIZE);
	for (int i = 0; i < 5; i++)
		vmm_loop_run_once(&vm->loop, 10);
	CHECK(vd->vqs[0].broken, "a head beyond the queue did not break it");
	ut_buf_reset(&rec2);
	CHECK_EQ(dev->ops->save(dev, &rec2), 0);
	dev->ops->reset(dev);
	CHECK_STR(last_event, "1 failed request(s) waiting for a retry were dropped");
	vmm_vm_resume(vm);
	n_events = 0;
	CHECK(dev->ops->restore(dev, rec2.data, rec2.len, &err) == 0,
	      "a record the device saved (queue broken) is refused: %s", err.msg);
	CHECK_EQ(n_events, 1);
	CHECK_STR(last_event, "1 failed request(s) saved on a broken queue were dropped");
	CHECK(vd->vqs[0].broken, "the restored queue is not broken");
	CHECK_EQ(vd->vqs[0].inuse, 0);
	fsize_limit(RLIM_INFINITY);
	for (int i = 0; i < 5; i++)
		vmm_loop_run_once(&vm->loop, 10);
	CHECK(!vmm_vm_paused(vm), "paused after restoring dropped requests");
	n_events = 0;
	dev->ops->reset(dev);
	CHECK_EQ(n_events, 0);
	/* the same record with a byte after it: refused too (the requests
	 * are dropped, the file is still corrupt) */
	{
		uint8_t extra = 0;

		CHECK(ut_buf_add(&rec2, &extra, 1) == 0, "ut_buf_add");
		CHECK(dev->ops->restore(dev, rec2.data, rec2.len, &err) < 0,
		      "a record on a broken queue with a byte after it accepted");
		CHECK_STR(err.msg, "1 byte(s) after the virtio-blk state");
		CHECK_EQ(vd->vqs[0].inuse, 0);
		rec2.len--;
		dev->ops->reset(dev);
	}
	/* the same record with the request's fields out of range: refused */
	if (rec2.len >= prefix + 18) {
		CHECK_EQ(tv_get32(rec2.data + prefix), 3);
		tv_put16(rec2.data + prefix + 10, QSIZE);
		CHECK(dev->ops->restore(dev, rec2.data, rec2.len, &err) < 0,
		      "a bad head on a broken queue accepted");
		CHECK_STR(err.msg, "head 16, flags 0x0 invalid");
		dev->ops->reset(dev);
	} else {
		CHECK(false, "record of %zu bytes", rec2.len);
	}
	tv_wr(&d, C_STATUS, 1, 0);
	vm->on_event = NULL;
	vm->resumable = false;
	ut_buf_release(&rec);
	ut_buf_release(&rec2);
}

/* A writethrough write (the driver did not take VIRTIO_BLK_F_FLUSH) whose
 * write succeeds and whose flush fails (fdatasync EIO, werror=stop) is
 * parked in its flush stage; saved (version 3, flag bit 0, the flush's
 * message) and restored into a fresh device (as in a new process: a flush
 * that failed makes every later flush of that open disk fail,
 * storage/blockdev.c), only the flush runs again, not the write, and the
 * request completes OK once the flush works: one used entry for its head,
 * status OK, length 1, nothing in use, the VM not paused. The fresh device
 * is on @path2 (the image lock allows one open of @path), a copy of the
 * disk whose bytes at the write's place differ (0xc3): a write issued
 * again would change them. */
static void test_wt_flush_parked(const char *path, const char *path2)
{
	struct vmm_device *dev = tv_find_dev(vm, "virtio-blk", 4);
	struct vmm_device *dev2 = tv_find_dev(vm, "virtio-blk", 5);
	struct vmm_virtio_dev *vd2 = (struct vmm_virtio_dev *)dev2;
	struct ut_buf rec = UT_BUF_INIT;
	struct ut_err err = { 0, "" };
	uint8_t file[512];
	uint32_t head = 0xFFFF, len = 0;
	struct tv_drv d;
	size_t prefix;
	int syncs;

	vm->resumable = true;
	vm->on_event = on_event;
	events_clear();
	open_blk(&d, 4);
	CHECK_EQ(tv_drv_init(&d, 0, QSIZE, RING_GPA + 0x8000), 0);   /* writethrough */
	prefix = blk_prefix_len(dev);
	memset(gp(DATA_GPA, 512), 0x3c, 512);
	__atomic_store_n(&fail_fdatasync, 1, __ATOMIC_SEQ_CST);
	syncs = __atomic_load_n(&n_fdatasync, __ATOMIC_SEQ_CST);
	CHECK(blk_write_parks(&d, 16), "werror=stop: a failed writethrough flush did not pause the VM");
	CHECK(__atomic_load_n(&n_fdatasync, __ATOMIC_SEQ_CST) > syncs, "no fdatasync: the flush did not run");
	CHECK_STR(last_event, "wt.img': flush failed: Input/output error: VM paused (werror=stop)");
	CHECK_STR(vm->pause_why, "flush failed: Input/output error");
	CHECK_EQ(tv_used_idx(&d), 0);
	file_read(path, file, sizeof(file), 16 * 512);
	CHECK(all_bytes(file, 512, 0x3c), "the write did not run before its flush");
	/* saved: version 3, one request, head 0, only its flush left */
	CHECK_EQ(dev->ops->save(dev, &rec), 0);
	if (rec.len <= prefix + 18) {
		CHECK(false, "record of %zu bytes", rec.len);
		goto out;
	}
	CHECK_EQ(tv_get32(rec.data + prefix), 3);
	CHECK_EQ(tv_get32(rec.data + prefix + 4), 1);
	CHECK_EQ(tv_get16(rec.data + prefix + 10), 0);
	CHECK_EQ(tv_get32(rec.data + prefix + 12), 1);
	/* the saving process ends: the request goes with the state */
	dev->ops->reset(dev);
	CHECK_STR(last_event, "1 failed request(s) waiting for a retry go with the saved state");
	vmm_vm_resume(vm);
	/* restored on a read-only disk, the write is answered IOERR when the
	 * VM runs; saved again before it runs, the record is the same: the
	 * flag says the write had completed, so restored once more with the
	 * right disk only the flush runs (not the write again) */
	{
		struct vmm_device *rodev = tv_find_dev(vm, "virtio-blk", 1);
		struct ut_buf again = UT_BUF_INIT;

		CHECK(rodev->ops->restore(rodev, rec.data, rec.len, &err) == 0,
		      "flush-stage restore on a read-only disk: %s", err.msg);
		CHECK_STR(last_event, "the first (head 0): status IOERR (it had failed: disk '");
		CHECK_EQ(rodev->ops->save(rodev, &again), 0);
		CHECK(again.len == rec.len && !memcmp(again.data + prefix, rec.data + prefix, rec.len - prefix),
		      "restored (answered IOERR) and saved again: the virtio-blk part changed (flags %u, was %u)",
		      again.len >= prefix + 16 ? tv_get32(again.data + prefix + 12) : 99,
		      tv_get32(rec.data + prefix + 12));
		rodev->ops->reset(rodev);
		ut_buf_release(&again);
		for (int i = 0; i < 5; i++)
			vmm_loop_run_once(&vm->loop, 10);
		CHECK_EQ(tv_used_idx(&d), 0);
	}
	__atomic_store_n(&fail_fdatasync, 0, __ATOMIC_SEQ_CST);
	syncs = __atomic_load_n(&n_fdatasync, __ATOMIC_SEQ_CST);
	events_clear();
	*gp(STATUS_GPA, 1) = S_NONE;   /* as in the saved RAM (the drop wrote IOERR) */
	CHECK(dev2->ops->restore(dev2, rec.data, rec.len, &err) == 0, "flush-stage restore: %s", err.msg);
	CHECK_EQ(vd2->vqs[0].inuse, 1);
	/* saved before it runs: the same record (only the flush left) */
	{
		struct ut_buf again = UT_BUF_INIT;

		CHECK_EQ(dev2->ops->save(dev2, &again), 0);
		CHECK(again.len == rec.len && !memcmp(again.data + prefix, rec.data + prefix, rec.len - prefix),
		      "restored and saved again before running: the virtio-blk part changed");
		ut_buf_release(&again);
	}
	CHECK_EQ(tv_wait_used(&d, 20, &head, &len), 1);
	CHECK_EQ(head, 0);
	CHECK_EQ(len, 1);
	CHECK_EQ(*gp(STATUS_GPA, 1), S_OK);
	CHECK_EQ(tv_wait_used(&d, 3, NULL, NULL), 0);
	CHECK_EQ(vd2->vqs[0].inuse, 0);
	CHECK(__atomic_load_n(&n_fdatasync, __ATOMIC_SEQ_CST) > syncs, "the restored flush did not run");
	file_read(path2, file, sizeof(file), 16 * 512);
	CHECK(all_bytes(file, 512, 0xc3), "the restored flush stage wrote the data again");
	CHECK(!vmm_vm_paused(vm), "paused after the flush worked");
	CHECK_EQ(n_events, 1);
	CHECK_STR(last_event, "retrying 1 request(s) that had failed before the VM was saved (the last error: disk '");
	CHECK_STR(last_event, "wt.img': flush failed: Input/output error)");
	/* the same record after the guest turned the chain into a read (its
	 * header and data buffer): no longer a writethrough write, so the
	 * flag is moot and the read runs, as the chain newly posted would:
	 * the file's bytes in the buffer, used length 513, no flush */
	dev2->ops->reset(dev2);
	vmm_vm_resume(vm);
	tv_put32(gp(HDR_GPA, 4), T_IN);
	tv_desc(&d, 1, DATA_GPA, 512, F_NEXT | F_WRITE, 2);
	memset(gp(DATA_GPA, 512), 0, 512);
	*gp(STATUS_GPA, 1) = S_NONE;
	syncs = __atomic_load_n(&n_fdatasync, __ATOMIC_SEQ_CST);
	tv_put16(gp(d.used + 2, 2), 0);   /* the used ring as in the saved RAM */
	d.used_seen = 0;
	CHECK(dev2->ops->restore(dev2, rec.data, rec.len, &err) == 0, "flush-stage record, now a read: %s",
	      err.msg);
	CHECK_EQ(tv_wait_used(&d, 20, &head, &len), 1);
	CHECK_EQ(head, 0);
	CHECK_EQ(len, 513);
	CHECK_EQ(*gp(STATUS_GPA, 1), S_OK);
	CHECK(all_bytes(gp(DATA_GPA, 512), 512, 0xc3), "the restored read did not read the disk");
	CHECK_EQ(__atomic_load_n(&n_fdatasync, __ATOMIC_SEQ_CST), syncs);
	CHECK_EQ(vd2->vqs[0].inuse, 0);
	tv_put32(gp(HDR_GPA, 4), T_OUT);
out:
	__atomic_store_n(&fail_fdatasync, 0, __ATOMIC_SEQ_CST);
	dev2->ops->reset(dev2);
	tv_wr(&d, C_STATUS, 1, 0);
	vm->on_event = NULL;
	vm->resumable = false;
	ut_buf_release(&rec);
}

/* A parked request's error text (saved in the record, printed on the
 * host's terminal when restored) is printable UTF-8 cut at a character's
 * end: device 6's path holds an encoded C1 control (U+009B, CSI), then a
 * run of 'é' (2 bytes each) such that byte 255 of the message is the
 * first of an 'é'. The saved text: the C1 control as '??', the message
 * cut before that 'é' (254 bytes), and it is restored as saved. */
static void test_why_text(const char *path)
{
	struct vmm_device *dev = tv_find_dev(vm, "virtio-blk", 6);
	struct ut_buf rec = UT_BUF_INIT;
	struct ut_err err = { 0, "" };
	char want[300];
	struct tv_drv d;
	size_t prefix, o;

	vm->resumable = true;
	vm->on_event = on_event;
	events_clear();
	/* the message: "disk '" DIR "/" C2 9B "x" 'é'... */
	o = (size_t)snprintf(want, sizeof(want), "disk '%.*s??x", (int)(strrchr(path, '/') + 1 - path), path);
	CHECK_EQ(o, 36);   /* 'é' at even offsets: one starts at 254 */
	while (o + 2 <= 255) {
		want[o++] = (char)0xc3;
		want[o++] = (char)0xa9;
	}
	want[o] = '\0';
	open_blk(&d, 6);
	CHECK_EQ(tv_drv_init(&d, 0, QSIZE, RING_GPA + 0x8000), 0);
	prefix = blk_prefix_len(dev);
	fsize_limit(16 << 10);   /* the disk: 64 KiB */
	CHECK(blk_write_parks(&d, (32 << 10) / 512), "werror=stop: a failed write did not pause the VM");
	CHECK_EQ(dev->ops->save(dev, &rec), 0);
	if (rec.len < prefix + 18) {
		CHECK(false, "record of %zu bytes", rec.len);
		goto out;
	}
	CHECK_EQ(tv_get32(rec.data + prefix), 3);
	CHECK_EQ(tv_get16(rec.data + prefix + 16), 254);
	CHECK(rec.len == prefix + 18 + o && !memcmp(rec.data + prefix + 18, want, o),
	      "saved error text not '%s' (%zu bytes): '%.*s'", want, o,
	      (int)(rec.len - prefix - 18), (const char *)rec.data + prefix + 18);
	dev->ops->reset(dev);
	vmm_vm_resume(vm);
	CHECK(dev->ops->restore(dev, rec.data, rec.len, &err) == 0, "restore of the saved text: %s", err.msg);
	dev->ops->reset(dev);
out:
	fsize_limit(RLIM_INFINITY);
	vmm_vm_resume(vm);
	for (int i = 0; i < 5; i++)
		vmm_loop_run_once(&vm->loop, 10);
	tv_wr(&d, C_STATUS, 1, 0);
	vm->on_event = NULL;
	vm->resumable = false;
	ut_buf_release(&rec);
}

/* INTx and MSI-X: interrupts land where the driver asked. */

int main(void)
{
	struct tvb_files f;
	struct tv_drv d;

	tvb_setup(&f);
	open_blk(&d, 0);
	test_werror(&d, f.werr);
	test_parked_chains(f.werr);
	test_wt_flush_parked(f.wt, f.wt2);
	test_why_text(f.utfdisk);

	tv_vm_exit(&tvm);
	tv_cleanup();
	return tv_finish("test-virtio-blk-errors");
}
