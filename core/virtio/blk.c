/* core/virtio/blk.c — virtio-blk (virtio 1.x, 5.2) on a storage/ block device.
 *
 * Options: path=FILE (required), ro=on|off, format=auto|raw|qcow2,
 * serial=STR (GET_ID; default: the file's base name, 20 bytes max),
 * target=vdX (the disk's name in the VM's definition, as `cowvm start`
 * passes the catalog's: blockdev-snapshot-sync's "vdX" names the disk
 * whose target it is; nothing else),
 * cache=writeback (default; the host page cache) | none (O_DIRECT,
 * STG_O_DIRECT; flushes still reach the disk through fdatasync),
 * aio=io_uring (default; worker threads where io_uring cannot be set up) |
 * threads (STG_O_THREADS: worker threads, as QEMU's aio=threads).
 * Requests: IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES. Each request's
 * sector range is checked against the capacity; a malformed request (a
 * header shorter than 16 bytes too) gets VIRTIO_BLK_S_IOERR (or UNSUPP);
 * a malformed chain, or a request without a device-writable byte for its
 * status, breaks the queue.
 * A driver that does not accept VIRTIO_BLK_F_FLUSH gets a writethrough
 * cache (virtio 1.x 5.2.6.2: its completed writes are stable): each OUT and
 * WRITE_ZEROES is followed by a flush before it completes, as QEMU does.
 * Requests run asynchronously through the block device; completions arrive on
 * the event loop through the device's eventfd.
 *
 * Errors (as QEMU's werror=/rerror=): werror=enospc (default) | stop |
 * report for writes, flushes, discards and write-zeroes; rerror=report
 * (default) | stop for reads. "report" completes the request with
 * VIRTIO_BLK_S_IOERR. "stop" (and "enospc" for ENOSPC or EDQUOT, a full
 * disk or quota) keeps the request, pauses the VM (vmm_vm_block_io_error)
 * and retries the kept requests when the VM is resumed; a request that
 * fails again pauses it again. A VM without a control socket cannot be
 * resumed, so it gets "report" whatever the policy (the host message says
 * so). A request's life:
 *
 *   popped --blk_handle--> submitted --blk_io_done(ok)--> completed (used ring)
 *   submitted --blk_io_done(error), policy report--> completed (IOERR)
 *   submitted --blk_io_done(error), policy stop--> parked (blk_error; VM paused)
 *   parked --VM resumed: blk_retry (resume hook, then the retry eventfd)--> submitted
 *   parked --device reset (blk_reset, also at VM exit)--> dropped, told
 *   parked --save (blk_save: queue, head, stage, error text in the
 *       record)--> in the state file
 *   state file --restore (blk_restore: the chain re-read from the restored
 *       RAM with vmm_vq_reclaim and parsed again)--> parked --the restored
 *       VM runs: blk_retry (retry eventfd written at restore; the saved
 *       error text told)--> submitted
 *   state file, the chain now parses to an answer (the guest changed it, or
 *       another disk: IOERR, UNSUPP, OK) --restore--> parked with that
 *       answer, told --the restored VM runs: blk_retry--> completed
 *   state file, a chain breaks the rules --restore--> the queue breaks
 *       (DEVICE_NEEDS_RESET, as a bad chain popped at run time); all dropped, told
 *   state file, queue saved broken --restore--> dropped, told (the driver
 *       must reset the device, which would drop them)
 * A record field out of range (count, queue, head, flags, error text), or
 * bytes after the last one, is a corrupt file: the restore is refused; so
 * is a list that is not the queue's chains in flight (blk_check_held: their
 * count, a head twice, a head the avail ring still offers).
 * As QEMU carries failed requests in its migration stream (virtio-blk's "rq"
 * list) and restarts them when the VM runs, a VM paused on a full disk can
 * be saved, the disk freed, restored and go on. The restored VM retries them
 * as soon as it runs (QEMU's -loadvm does the same); while the error lasts
 * the retry pauses it again, as a resume would. The first error of each
 * kind goes to the VMM's user as a host message (vmm_vm_event), with a
 * count of the failed requests at exit; a failed final flush at exit too.
 */
#include "core/virtio/blk.h"
#include "core/virtio/virtio.h"
#include "core/vm.h"
#include "storage/blockdev.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define BLK_QUEUE_SIZE 256
#define BLK_SEG_MAX    (VMM_VQ_MAX_SEGS - 2)
#define BLK_ID_BYTES   20
#define BLK_MAX_DZ_SECTORS 0x3FFFFF   /* max_discard_sectors, max_write_zeroes_sectors */

#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

#define BLK_CONFIG_LEN 60
/* Device record: le32 version. Version 1: nothing else (no request was
 * parked: written so whenever possible, older readers take it). Version 2
 * (read, no longer written): le32 count, then per parked request, oldest
 * first: le16 queue, le16 head of its descriptor chain, le32 flags
 * (BLK_PARK_F_*). Version 3 (written when requests are parked): as 2, each
 * request followed by le16 length and that many bytes of the host message
 * of its failure (at most BLK_WHY_MAX - 1 bytes of printable UTF-8: no
 * control character, C1 included, no NUL; blk_utf8_len).
 * man/cowvm-state.5. */
#define BLK_STATE_VERSION 1
#define BLK_STATE_VERSION_PARKED 2
#define BLK_STATE_VERSION_WHY 3
#define BLK_PARK_F_FLUSH 1u       /* the write is done; its writethrough flush failed */
#define BLK_WHY_MAX 256           /* a parked request's error text, NUL included */

/* What to do when a request fails (QEMU's BlockdevOnError, without
 * "ignore", which would tell the guest a failed write succeeded). */
enum blk_on_error { BLK_ERR_REPORT, BLK_ERR_STOP, BLK_ERR_ENOSPC };
static const char *const blk_on_error_names[] = { "report", "stop", "enospc" };

/* What blk_parse found. */
enum blk_verdict {
	BLK_V_SUBMIT,      /* r->op, offset, len, data, flags, then_flush set */
	BLK_V_OK,          /* complete with OK (nothing to do) */
	BLK_V_GET_ID,      /* copy the ID into r->data[0..iovcnt), then OK */
	BLK_V_IOERR,
	BLK_V_UNSUPP,
	BLK_V_NO_STATUS,   /* no byte for a status: the queue breaks */
};

struct blk_req {
	struct stg_req sreq;
	struct vmm_virtio_dev *vd;
	struct vmm_vq_elem elem;
	struct iovec data[VMM_VQ_MAX_SEGS];
	uint8_t *status;
	uint32_t in_len;          /* bytes the device writes, for the used entry */
	bool then_flush;          /* writethrough: flush before completing */
	bool wt_flush;            /* running (or parked in) that flush: the write is done
				   * (restored with an answer: as the record said) */
	/* the operation to submit (again, after a pause on an error): sreq is
	 * built from these by blk_submit */
	enum stg_op op;
	uint64_t offset, len;
	int iovcnt;
	unsigned flags;
	struct blk_req *next_free;   /* in the free list, or in the parked list */
	/* parked: BLK_V_SUBMIT (retried), or, for a request restored from a
	 * state file that no longer parses as one the disk runs, the answer
	 * blk_retry gives it (BLK_V_OK, GET_ID, IOERR, UNSUPP) */
	enum blk_verdict parked_as;
	char why[BLK_WHY_MAX];       /* parked: the host message of its failure */
};

struct blk {
	struct vmm_virtio_dev vd;
	struct stg_dev *disk;
	bool ro;
	char id[BLK_ID_BYTES];
	struct blk_req *pool;     /* BLK_QUEUE_SIZE requests (untouched until used) */
	unsigned pool_used;       /* pool[0..pool_used) have been handed out */
	struct blk_req *free_reqs;
	unsigned inflight;
	bool resetting;
	/* errors (see the header) */
	enum blk_on_error werror, rerror;
	struct blk_req *parked, *parked_tail;   /* failed, kept for a retry */
	unsigned nparked;
	int retry_fd;              /* eventfd: the VM was resumed */
	bool pause_told;           /* the host message for this pause was sent */
	bool report_told;          /* the first reported error's message was sent */
	uint64_t nerrors;          /* requests that failed (each try counts) */
	int last_error;            /* -errno of the last failure */
	unsigned restored;         /* parked requests that came from a state file,
				    * not yet retried (told when retried) */
	bool parked_saved;         /* the parked list is in a state file (the last save) */
};

static struct blk *to_blk(struct vmm_virtio_dev *vd)
{
	return (struct blk *)vd;
}

/* A request from the pool. Never NULL: the pool holds BLK_QUEUE_SIZE, and
 * the queue keeps at most its size (<= BLK_QUEUE_SIZE) chains in use
 * (vmm_vq_pop), each held by one request until req_finish. */
static struct blk_req *req_get(struct blk *b)
{
	struct blk_req *r = b->free_reqs;

	if (r)
		b->free_reqs = r->next_free;
	else if (b->pool_used < BLK_QUEUE_SIZE)
		r = &b->pool[b->pool_used++];
	return r;
}

static void req_put(struct blk *b, struct blk_req *r)
{
	r->next_free = b->free_reqs;
	b->free_reqs = r;
}

static void req_finish(struct blk *b, struct blk_req *r, uint8_t status)
{
	*r->status = status;
	if (!b->resetting) {
		vmm_vq_push(&b->vd.vqs[0], r->elem.head, r->in_len);
		vmm_virtio_interrupt(&b->vd, 0);
	}
	req_put(b, r);
}

static void blk_io_done(struct stg_req *sreq, int result);
static void blk_answer(struct blk *b, struct blk_req *r, enum blk_verdict v);

/* Submit r->op (offset, len, data[0..iovcnt), flags) to the disk. Returns 0
 * (blk_io_done will run) or -errno (nothing submitted). */
static int blk_submit(struct blk *b, struct blk_req *r)
{
	int rc;

	memset(&r->sreq, 0, sizeof(r->sreq));
	r->sreq.op = r->op;
	r->sreq.offset = r->offset;
	r->sreq.len = r->len;
	r->sreq.iov = r->data;
	r->sreq.iovcnt = r->iovcnt;
	r->sreq.flags = r->flags;
	r->sreq.done = blk_io_done;
	rc = stg_submit(b->disk, &r->sreq);
	if (rc == 0)
		b->inflight++;
	return rc;
}

static const char *blk_op_name(enum stg_op op)
{
	switch (op) {
	case STG_OP_READ: return "read";
	case STG_OP_WRITE: return "write";
	case STG_OP_FLUSH: return "flush";
	case STG_OP_DISCARD: return "discard";
	case STG_OP_WRITE_ZEROES: return "write-zeroes";
	}
	return "request";
}

/* Turn write request @r into its writethrough flush (the write is done). */
static void blk_flush_stage(struct blk_req *r)
{
	r->then_flush = false;
	r->wt_flush = true;
	r->op = STG_OP_FLUSH;
	r->offset = r->len = 0;
	r->iovcnt = 0;
	r->flags = 0;
}

/* Put @r at the end of the parked list (b->vd.lock held). */
static void blk_park_append(struct blk *b, struct blk_req *r)
{
	r->next_free = NULL;
	if (b->parked_tail)
		b->parked_tail->next_free = r;
	else
		b->parked = r;
	b->parked_tail = r;
	b->nparked++;
}

/* The length of the printable UTF-8 character at @s (@n bytes left): 1 to
 * 4, or 0 for a control character (C0, DEL, C1: U+0080..U+009F, which some
 * terminals obey as raw bytes 0x80..0x9f or encoded), a byte that starts
 * no character, a sequence cut short, overlong, a surrogate or above
 * U+10FFFF. A parked request's error text is made of such characters: it
 * is printed on the host's terminal, also when read from a state file. */
static size_t blk_utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len;
	uint32_t cp, min;

	if (c < 0x80)
		return c >= 0x20 && c != 0x7f;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2, cp = c & 0x1f, min = 0xa0;   /* not U+0080..U+009F (C1) */
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3, cp = c & 0x0f, min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4, cp = c & 0x07, min = 0x10000;
	} else {
		return 0;   /* a continuation byte, 0xc0, 0xc1 (overlong), 0xf5.. */
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* Keep @what as parked request @r's error text (saved with it): printable
 * UTF-8 (blk_utf8_len), any other byte (a path may hold them) as '?', cut
 * to BLK_WHY_MAX - 1 bytes at a character's end. */
static void blk_set_why(struct blk_req *r, const char *what)
{
	const unsigned char *w = (const unsigned char *)what;
	size_t i = 0, o = 0, n = strlen(what);

	while (i < n) {
		size_t l = blk_utf8_len(w + i, n - i);

		if (o + (l ? l : 1) > sizeof(r->why) - 1)
			break;
		if (l) {
			memcpy(r->why + o, w + i, l);
			o += l;
			i += l;
		} else {
			r->why[o++] = '?';
			i++;
		}
	}
	r->why[o] = '\0';
}

/* Request @r failed with @result (-errno). Parks it and pauses the VM when
 * the policy says stop and the VM can be resumed (returns true: the request
 * stays with the device); otherwise returns false and the caller completes
 * it with IOERR. Sends the host messages. vd->lock held. */
static bool blk_error(struct blk *b, struct blk_req *r, int result)
{
	struct vmm_vm *vm = b->vd.vm;
	bool rd = r->op == STG_OP_READ;
	enum blk_on_error p = rd ? b->rerror : b->werror;
	bool stop = p == BLK_ERR_STOP ||
		    (p == BLK_ERR_ENOSPC && (result == -ENOSPC || result == -EDQUOT));
	char what[UT_ERR_MSG_MAX + 512], detail[UT_ERR_MSG_MAX], why[UT_ERR_MSG_MAX + 8];

	b->nerrors++;
	b->last_error = result;
	/* the backend's own words, when it had more to say than the errno */
	stg_take_error(b->disk, detail, sizeof(detail));
	snprintf(why, sizeof(why), "%s%s%s", detail[0] ? " (" : "", detail, detail[0] ? ")" : "");
	if (r->op == STG_OP_FLUSH)
		snprintf(what, sizeof(what), "disk '%s': flush failed: %s%s", b->disk->path,
			 strerror(-result), why);
	else
		snprintf(what, sizeof(what), "disk '%s': %s of %llu bytes at offset %llu failed: %s%s",
			 b->disk->path, blk_op_name(r->op), (unsigned long long)r->len,
			 (unsigned long long)r->offset, strerror(-result), why);
	if (vmm_vm_block_io_error(vm, b->vd.dev.id, !rd, result, stop && !b->resetting ? what : NULL)) {
		blk_set_why(r, what);
		blk_park_append(b, r);
		b->parked_saved = false;
		if (!b->pause_told) {
			b->pause_told = true;
			vmm_vm_event(vm, "%s: VM paused (%s=%s); the request is retried when the VM is resumed%s",
				     what, rd ? "rerror" : "werror", blk_on_error_names[p],
				     result == -ENOSPC || result == -EDQUOT ?
				     " (free space first)" : "");
		}
		return true;
	}
	if (!b->report_told) {
		b->report_told = true;
		vmm_vm_event(vm, "%s: reported to the guest as an I/O error (%s=%s%s); further errors are counted",
			     what, rd ? "rerror" : "werror", blk_on_error_names[p],
			     stop ? ", but nothing could resume a paused VM: no control socket" : "");
	}
	return false;
}

/* Storage completion: runs from stg_poll with vd->lock held. */
static void blk_io_done(struct stg_req *sreq, int result)
{
	struct blk_req *r = (struct blk_req *)sreq;
	struct blk *b = to_blk(r->vd);
	int rc;

	b->inflight--;
	if (result >= 0 && r->then_flush) {
		/* writethrough: the write completes once it is durable */
		blk_flush_stage(r);
		rc = blk_submit(b, r);
		if (rc == 0)
			return;
		result = rc;
	}
	if (result < 0 && blk_error(b, r, result))
		return;
	req_finish(b, r, result < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK);
}

/* Resume hook (any thread): wake blk_retry on the loop. */
static void blk_resumed(void *opaque)
{
	struct blk *b = opaque;
	uint64_t one = 1;

	if (write(b->retry_fd, &one, sizeof(one)) < 0) {
		/* the counter is full: a wake-up is pending anyway */
	}
}

/* The VM was resumed: submit the parked requests again; restored ones
 * that no longer parse as requests the disk runs get their answer
 * (parked_as) instead (loop thread). */
static void blk_retry(void *opaque, uint32_t events)
{
	struct blk *b = opaque;
	struct blk_req *r, *next;
	const char *last = "";
	unsigned nretry = 0;
	uint64_t n;
	int rc;

	(void)events;
	if (read(b->retry_fd, &n, sizeof(n)) < 0) {
		/* nothing pending (EAGAIN) */
	}
	pthread_mutex_lock(&b->vd.lock);
	for (r = b->restored ? b->parked : NULL; r; r = r->next_free) {
		if (r->parked_as != BLK_V_SUBMIT)
			continue;
		nretry++;
		if (r->why[0])
			last = r->why;
	}
	/* why they failed (the saved text, the VM was not paused by this
	 * process): told before a retry that fails again pauses it anew */
	if (nretry)
		vmm_vm_event(b->vd.vm, "disk '%s': retrying %u request(s) that had failed before the VM was saved (the last error: %s)",
			     b->disk->path, nretry,
			     last[0] ? last : "not recorded in the state file");
	b->restored = 0;
	b->parked_saved = false;
	r = b->parked;
	b->parked = b->parked_tail = NULL;
	b->nparked = 0;
	b->pause_told = false;
	for (; r; r = next) {
		next = r->next_free;
		if (r->parked_as != BLK_V_SUBMIT) {
			blk_answer(b, r, r->parked_as);
			continue;
		}
		rc = blk_submit(b, r);
		if (rc && !blk_error(b, r, rc))
			req_finish(b, r, VIRTIO_BLK_S_IOERR);
	}
	stg_unplug(b->disk);
	pthread_mutex_unlock(&b->vd.lock);
}

/* Build r->data from iov[first..first+count) skipping @skip bytes at the
 * front and @trim at the back. Returns the number of data segments. */
static int blk_slice(struct blk_req *r, unsigned first, unsigned count, uint64_t skip, uint64_t trim,
		     uint64_t *total)
{
	uint64_t len = 0;
	int n = 0;

	for (unsigned i = first; i < first + count; i++)
		len += r->elem.iov[i].iov_len;
	if (skip + trim > len)
		return -1;
	len -= skip + trim;
	*total = len;
	for (unsigned i = first; i < first + count && len; i++) {
		uint8_t *p = r->elem.iov[i].iov_base;
		uint64_t l = r->elem.iov[i].iov_len;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		p += skip;
		l -= skip;
		skip = 0;
		if (l > len)
			l = len;
		r->data[n++] = (struct iovec){ p, l };
		len -= l;
	}
	return n;
}

/* Last byte of the device-writable part: the status. Empty trailing buffers
 * are skipped (the last one's byte "before" it may lie outside guest RAM);
 * the caller made sure in_len >= 1. */
static uint8_t *blk_status_ptr(const struct vmm_vq_elem *e)
{
	const struct iovec *last = &e->iov[e->nr_out + e->nr_in - 1];

	while (!last->iov_len)
		last--;
	return (uint8_t *)last->iov_base + last->iov_len - 1;
}

/* Read request @r's header and set up the operation, without side effects
 * on guest memory or the disk (a restore parses saved requests again). */
static enum blk_verdict blk_parse(struct blk *b, struct blk_req *r)
{
	struct vmm_vq_elem *e = &r->elem;
	uint8_t hdr[16], seg[16];
	uint32_t type;
	uint64_t sector, bytes, cap = b->disk->size;
	int n;

	if (e->in_len < 1) {
		/* no byte for a status: nothing can be reported, and a used
		 * entry would read as a completion (QEMU: "missing headers",
		 * the device needs a reset) */
		return BLK_V_NO_STATUS;
	}
	r->status = blk_status_ptr(e);
	r->in_len = 1;
	r->then_flush = false;
	r->wt_flush = false;
	r->offset = r->len = 0;
	r->iovcnt = 0;
	r->flags = 0;
	r->vd = &b->vd;
	r->parked_as = BLK_V_SUBMIT;
	r->why[0] = '\0';
	if (vmm_vq_elem_read(e, hdr, 16) < 16)
		return BLK_V_IOERR;   /* header cut short: a driver error */
	memcpy(&type, hdr, 4);
	memcpy(&sector, hdr + 8, 8);

	switch (type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		if (type == VIRTIO_BLK_T_IN)
			n = blk_slice(r, e->nr_out, e->nr_in, 0, 1, &bytes);
		else
			n = blk_slice(r, 0, e->nr_out, 16, 0, &bytes);
		if (n < 0 || bytes % 512 || sector > cap / 512 || bytes > cap - sector * 512)
			return BLK_V_IOERR;
		if (type == VIRTIO_BLK_T_OUT && b->ro)
			return BLK_V_IOERR;
		if (type == VIRTIO_BLK_T_IN)
			r->in_len = (uint32_t)bytes + 1;
		r->op = type == VIRTIO_BLK_T_IN ? STG_OP_READ : STG_OP_WRITE;
		r->offset = sector * 512;
		r->len = bytes;
		r->iovcnt = n;
		if (bytes == 0)
			return BLK_V_OK;
		break;
	case VIRTIO_BLK_T_FLUSH:
		r->op = STG_OP_FLUSH;
		break;
	case VIRTIO_BLK_T_GET_ID:
		n = blk_slice(r, e->nr_out, e->nr_in, 0, 1, &bytes);
		if (n < 0)
			return BLK_V_IOERR;
		r->iovcnt = n;
		return BLK_V_GET_ID;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES: {
		uint32_t num, flags;

		if (b->ro)
			return BLK_V_IOERR;
		/* exactly one segment (max_*_seg = 1 in the config) */
		n = blk_slice(r, 0, e->nr_out, 16, 0, &bytes);
		if (n < 0 || bytes != 16)
			return BLK_V_UNSUPP;
		for (int i = 0, off = 0; i < n; off += (int)r->data[i].iov_len, i++)
			memcpy(seg + off, r->data[i].iov_base, r->data[i].iov_len);
		memcpy(&sector, seg, 8);
		memcpy(&num, seg + 8, 4);
		memcpy(&flags, seg + 12, 4);
		if ((flags & ~1u) || (type == VIRTIO_BLK_T_DISCARD && flags))
			return BLK_V_UNSUPP;
		/* beyond the limit in the config, as QEMU; bounds the work of one
		 * request (qcow2 runs it synchronously) */
		if (num > BLK_MAX_DZ_SECTORS)
			return BLK_V_IOERR;
		if (sector > cap / 512 || (uint64_t)num * 512 > cap - sector * 512)
			return BLK_V_IOERR;
		r->op = type == VIRTIO_BLK_T_DISCARD ? STG_OP_DISCARD : STG_OP_WRITE_ZEROES;
		r->offset = sector * 512;
		r->len = (uint64_t)num * 512;
		r->iovcnt = 0;
		/* write-zeroes "unmap": the space may be given back */
		r->flags = (flags & 1) ? STG_REQ_MAY_UNMAP : 0;
		if (!num)
			return BLK_V_OK;
		break;
	}
	default:
		return BLK_V_UNSUPP;
	}
	r->then_flush = (r->op == STG_OP_WRITE || r->op == STG_OP_WRITE_ZEROES) &&
			!vmm_virtio_has(&b->vd, VIRTIO_BLK_F_FLUSH);
	return BLK_V_SUBMIT;
}

/* Complete request @r as blk_parse's verdict @v (OK, GET_ID, IOERR or
 * UNSUPP: a request with nothing to submit) says. */
static void blk_answer(struct blk *b, struct blk_req *r, enum blk_verdict v)
{
	switch (v) {
	case BLK_V_SUBMIT:
	case BLK_V_NO_STATUS:
		break;   /* not answers (the callers handle them) */
	case BLK_V_GET_ID: {
		uint8_t id[BLK_ID_BYTES];

		memcpy(id, b->id, sizeof(id));
		for (int i = 0; i < r->iovcnt; i++) {
			size_t c = r->data[i].iov_len;
			size_t off = (size_t)(r->in_len - 1);

			if (off >= sizeof(id))
				break;
			if (c > sizeof(id) - off)
				c = sizeof(id) - off;
			memcpy(r->data[i].iov_base, id + off, c);
			r->in_len += (uint32_t)c;
		}
		req_finish(b, r, VIRTIO_BLK_S_OK);
		return;
	}
	case BLK_V_OK:
		req_finish(b, r, VIRTIO_BLK_S_OK);
		return;
	case BLK_V_IOERR:
		req_finish(b, r, VIRTIO_BLK_S_IOERR);
		return;
	case BLK_V_UNSUPP:
		req_finish(b, r, VIRTIO_BLK_S_UNSUPP);
		return;
	}
}

static void blk_handle(struct blk *b, struct blk_req *r)
{
	enum blk_verdict v = blk_parse(b, r);
	int rc;

	switch (v) {
	case BLK_V_SUBMIT:
		rc = blk_submit(b, r);
		if (rc && !blk_error(b, r, rc))
			req_finish(b, r, VIRTIO_BLK_S_IOERR);
		return;
	case BLK_V_NO_STATUS:
		vmm_vq_fail(&b->vd.vqs[0], "virtio-blk request without a status byte");
		vmm_virtio_fail(&b->vd, 0);
		req_put(b, r);
		return;
	default:
		blk_answer(b, r, v);
		return;
	}
}

static void blk_notify(struct vmm_virtio_dev *vd, int q)
{
	struct blk *b = to_blk(vd);
	struct vmm_vq *vq = &vd->vqs[q];

	do {
		vmm_vq_notify_enable(vq, false);
		for (;;) {
			struct blk_req *r = req_get(b);
			int got;

			if (!r) {
				/* cannot happen (req_get); never spin on it */
				vmm_vq_fail(vq, "virtio-blk: no request free");
				break;
			}
			got = vmm_vq_pop(vq, &vd->vm->mem, &r->elem);
			if (got <= 0) {
				req_put(b, r);
				if (got < 0)
					vmm_virtio_fail(vd, q);
				break;
			}
			blk_handle(b, r);
		}
		stg_unplug(b->disk);
	} while (!vq->broken && vmm_vq_notify_enable(vq, true));
}

static void blk_disk_cb(void *opaque, uint32_t events)
{
	struct blk *b = opaque;

	(void)events;
	pthread_mutex_lock(&b->vd.lock);
	stg_poll(b->disk);
	pthread_mutex_unlock(&b->vd.lock);
}

static void blk_reset(struct vmm_virtio_dev *vd)
{
	struct blk *b = to_blk(vd);

	/* complete everything in flight without touching the (resetting)
	 * rings, and drop what waits for a retry: the driver starts over */
	b->resetting = true;
	stg_drain(b->disk);
	if (b->nparked && b->parked_saved)
		vmm_vm_event(vd->vm, "disk '%s': %u failed request(s) waiting for a retry go with the saved state (retried when it is restored)",
			     b->disk->path, b->nparked);
	else if (b->nparked)
		vmm_vm_event(vd->vm, "disk '%s': %u failed request(s) waiting for a retry were dropped (the device was reset or the VM ended)",
			     b->disk->path, b->nparked);
	while (b->parked) {
		struct blk_req *r = b->parked;

		b->parked = r->next_free;
		req_finish(b, r, VIRTIO_BLK_S_IOERR);
	}
	b->parked_tail = NULL;
	b->nparked = 0;
	b->pause_told = false;
	b->parked_saved = false;
	b->restored = 0;
	b->resetting = false;
}

/* Before a save (vCPUs paused): finish every request in flight; their used
 * entries and interrupts go out now, before the queues and RAM are recorded.
 * A request that fails meanwhile may be parked (its policy says stop): the
 * parked ones go into the record (blk_save). */
static int blk_quiesce(struct vmm_virtio_dev *vd)
{
	struct blk *b = to_blk(vd);

	if (b->inflight && stg_drain(b->disk))
		return -EIO;
	return b->inflight ? -EBUSY : 0;
}

/* Version 1 when nothing is parked; else version 3 with the parked requests
 * in order: each one's queue and chain head (the chain itself is in the
 * saved RAM: the driver does not touch a chain until it is used), whether
 * only its writethrough flush was left, and the text of its failure. */
static int blk_save(struct vmm_virtio_dev *vd, struct ut_buf *out)
{
	struct blk *b = to_blk(vd);
	int r;

	if (b->inflight)
		return -EBUSY;   /* quiesce runs first */
	if (!b->nparked)
		return ut_buf_add_le32(out, BLK_STATE_VERSION);
	r = ut_buf_add_le32(out, BLK_STATE_VERSION_WHY);
	r = r ? r : ut_buf_add_le32(out, b->nparked);
	for (struct blk_req *q = b->parked; q && !r; q = q->next_free) {
		size_t len = strnlen(q->why, sizeof(q->why) - 1);

		r = ut_buf_add_le16(out, 0);   /* the one queue */
		r = r ? r : ut_buf_add_le16(out, q->elem.head);
		r = r ? r : ut_buf_add_le32(out, q->wt_flush ? BLK_PARK_F_FLUSH : 0);
		r = r ? r : ut_buf_add_le16(out, (uint16_t)len);
		r = r ? r : ut_buf_add(out, q->why, len);
	}
	/* on a broken queue they are dropped at restore (blk_restore_parked) */
	b->parked_saved = !r && !b->vd.vqs[0].broken;
	return r;
}

/* Give the parked requests back (a restore that failed half way, or
 * dropped them): their chains are no longer in use, nothing is pushed to
 * the ring. */
static void blk_unpark_all(struct blk *b)
{
	while (b->parked) {
		struct blk_req *r = b->parked;

		b->parked = r->next_free;
		if (b->vd.vqs[0].inuse)
			b->vd.vqs[0].inuse--;
		req_put(b, r);
	}
	b->parked_tail = NULL;
	b->nparked = 0;
	b->restored = 0;
}

/* The status a restored request is answered with, for host messages. */
static const char *blk_verdict_name(enum blk_verdict v)
{
	switch (v) {
	case BLK_V_OK:
	case BLK_V_GET_ID:
		return "OK";
	case BLK_V_IOERR:
		return "IOERR";
	case BLK_V_UNSUPP:
		return "UNSUPP";
	default:
		return "none";
	}
}

/* The virtio-blk part is the end of the device's record: bytes after its
 * last field are a corrupt file (-EBADMSG), as a count below the entries
 * written would be (the requests after it lost, their guest waiting). */
static int blk_check_end(struct vmm_virtio_dev *vd, const struct ut_rd *rd, struct ut_err *err)
{
	if (rd->off == rd->len)
		return 0;
	return ut_errf(err, -EBADMSG, "device '%s': %zu byte(s) after the virtio-blk state",
		       vd->dev.id, rd->len - rd->off);
}

/* Read entry @i of a version @ver record of parked requests: @head,
 * @flags and (version 3) the error text into @why (BLK_WHY_MAX bytes; ""
 * in version 2). Every field is checked: the queue number, the head below
 * the queue size, known flags, the text's length and bytes (printable
 * UTF-8: blk_utf8_len). A failure is a corrupt file: -EBADMSG. */
static int blk_read_parked(struct blk *b, struct ut_rd *rd, uint32_t ver, uint32_t i,
			   uint16_t *head, uint32_t *flags, char *why, struct ut_err *err)
{
	struct vmm_virtio_dev *vd = &b->vd;
	uint16_t q, len = 0;

	why[0] = '\0';
	if (ut_rd_le16(rd, &q) || ut_rd_le16(rd, head) || ut_rd_le32(rd, flags) ||
	    (ver == BLK_STATE_VERSION_WHY && ut_rd_le16(rd, &len)))
		return ut_errf(err, -EBADMSG, "device '%s': virtio-blk state truncated", vd->dev.id);
	if (q >= vd->nvqs || *head >= vd->vqs[0].size || (*flags & ~BLK_PARK_F_FLUSH))
		return ut_errf(err, -EBADMSG, "device '%s': parked request %u: queue %u, head %u, flags 0x%x invalid (queue size %u)",
			       vd->dev.id, i, q, *head, *flags, vd->vqs[0].size);
	if (len >= BLK_WHY_MAX)
		return ut_errf(err, -EBADMSG, "device '%s': parked request %u: error text of %u bytes (at most %u)",
			       vd->dev.id, i, len, BLK_WHY_MAX - 1);
	if (ut_rd_get(rd, why, len))
		return ut_errf(err, -EBADMSG, "device '%s': virtio-blk state truncated", vd->dev.id);
	why[len] = '\0';
	for (uint16_t k = 0; k < len;) {
		size_t l = blk_utf8_len((const unsigned char *)why + k, len - k);
		unsigned c = (unsigned char)why[k];

		if (!l && c < 0x80)
			return ut_errf(err, -EBADMSG, "device '%s': parked request %u: control character 0x%02x in its error text",
				       vd->dev.id, i, c);
		if (!l)
			return ut_errf(err, -EBADMSG, "device '%s': parked request %u: byte 0x%02x at %u of its error text is not printable UTF-8",
				       vd->dev.id, i, c, k);
		k = (uint16_t)(k + l);
	}
	return 0;
}

/* May queue 0 hold @heads[0..n) (a record's parked requests; n may be
 * 0: a version 1 record) as the chains in flight at the save? Every
 * chain the device took and did not use is in the parked list at a save
 * (blk_quiesce drained the rest): a live queue must have exactly @n in
 * flight (last_avail - used_idx, vmm_vq_check_held), no head twice, none
 * still offered in the avail ring ahead of last_avail. A queue saved
 * broken needs at most @n in flight (the chain without a status byte that
 * broke it was taken and not used); its requests are dropped anyway, but
 * the record must still be one the device could write. A queue not enabled
 * holds nothing (vmm_vq_restore: indices 0). Returns 0 or -EBADMSG. */
static int blk_check_held(struct blk *b, const uint16_t *heads, uint32_t n, struct ut_err *err)
{
	struct vmm_vq *vq = &b->vd.vqs[0];
	char why[160];

	if (!vq->enabled && !n)
		return 0;
	if (vmm_vq_check_held(vq, heads, n, !vq->broken, why, sizeof(why)))
		return ut_errf(err, -EBADMSG, "device '%s': parked requests: %s", b->vd.dev.id, why);
	return 0;
}

/* Read the parked requests of a version 2 or 3 record back. The record's
 * fields are checked (blk_read_parked; a count of 1 to the queue size;
 * nothing after the last entry, blk_check_end), and then whether the
 * queue can hold them (blk_check_held: as many as in flight, no head
 * twice, none the avail ring still offers): a bad one refuses the
 * restore, before any chain is taken. Each chain is then taken again from the
 * restored RAM (vmm_vq_reclaim) and parsed again, and treated as the
 * device treats the same chain newly posted (the guest may have changed
 * it after the failure, or the disk given at restore differs):
 *  - a request the disk runs is parked, in the saved order; a write whose
 *    writethrough flush alone was left (BLK_PARK_F_FLUSH) only flushes;
 *  - one that parses to an answer (IOERR: out of range, a write to a
 *    read-only disk...; UNSUPP; OK) is parked with that answer: blk_retry
 *    completes it (status, used entry, interrupt) when the VM runs; told;
 *  - a chain that breaks the rules (or leaves no byte for a status) breaks
 *    the queue, as at run time (DEVICE_NEEDS_RESET); all the requests are
 *    then dropped, as the reset the driver owes would drop them; told.
 * A queue saved broken drops them the same way. The retry eventfd is
 * written: blk_retry runs when the restored VM runs. In-use accounting:
 * each parked chain counts once in vq->inuse until it is pushed or
 * dropped; a restore that fails or drops leaves vq->inuse as it was. */
static int blk_restore_parked(struct blk *b, struct ut_rd *rd, uint32_t ver, struct ut_err *err)
{
	struct vmm_virtio_dev *vd = &b->vd;
	struct vmm_vq *vq = &vd->vqs[0];
	struct blk_req *answered = NULL;
	char why[BLK_WHY_MAX], bad[sizeof(vq->why) + 48] = "";
	uint16_t heads[BLK_QUEUE_SIZE];
	struct ut_rd start;
	unsigned nanswered = 0;
	uint32_t n = 0;
	uint64_t one = 1;
	bool drop, saved_broken;
	int ret = 0;

	if (b->nparked || b->inflight)
		return ut_errf(err, -EBUSY, "device '%s': restore into a device with requests",
			       vd->dev.id);
	if (ut_rd_le32(rd, &n))
		return ut_errf(err, -EBADMSG, "device '%s': virtio-blk state truncated", vd->dev.id);
	/* a disabled queue's size was not checked (vmm_vq_enable does it):
	 * it bounds the heads and the count below */
	if (!vq->enabled || vq->size > VMM_VQ_MAX_SIZE)
		return ut_errf(err, -EBADMSG, "device '%s': parked requests for a queue that is not live",
			       vd->dev.id);
	/* a queue the driver broke while requests waited (saved so): they
	 * are checked, then dropped (vmm_vq_reclaim takes nothing from a
	 * broken queue) */
	drop = saved_broken = vq->broken;
	if (!n || n > vq->size || n > BLK_QUEUE_SIZE)
		return ut_errf(err, -EBADMSG, "device '%s': %u parked requests for a queue of %u",
			       vd->dev.id, n, vq->size);
	/* every entry's fields first, then whether the device can hold these
	 * chains (blk_check_held), before any is taken */
	start = *rd;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t flags;

		ret = blk_read_parked(b, rd, ver, i, &heads[i], &flags, why, err);
		if (ret)
			return ret;
	}
	ret = blk_check_end(vd, rd, err);
	ret = ret ? ret : blk_check_held(b, heads, n, err);
	if (ret)
		return ret;
	*rd = start;
	for (uint32_t i = 0; i < n; i++) {
		uint16_t head;
		uint32_t flags;
		struct blk_req *r;
		enum blk_verdict v;

		ret = blk_read_parked(b, rd, ver, i, &head, &flags, why, err);
		if (ret)
			goto out;
		if (drop)
			continue;
		r = req_get(b);
		if (!r) {   /* cannot happen: n <= BLK_QUEUE_SIZE, the pool is free */
			ret = ut_errf(err, -ENOSPC, "device '%s': no request free", vd->dev.id);
			goto out;
		}
		if (vmm_vq_reclaim(vq, &vd->vm->mem, head, &r->elem)) {
			req_put(b, r);   /* not in use: the walk failed */
			snprintf(bad, sizeof(bad), "request %u (head %u): %s", i, head, vq->why);
			drop = true;
			continue;
		}
		v = blk_parse(b, r);
		if (v == BLK_V_NO_STATUS) {
			vq->inuse--;
			req_put(b, r);
			vmm_vq_fail(vq, "virtio-blk request without a status byte");
			snprintf(bad, sizeof(bad), "request %u (head %u): %s", i, head, vq->why);
			drop = true;
			continue;
		}
		memcpy(r->why, why, sizeof(r->why));
		if (v != BLK_V_SUBMIT) {
			r->parked_as = v;
			/* never submitted: its flag goes into a save before the
			 * VM runs as read (restored with the disk it failed on,
			 * the write is not issued again) */
			r->wt_flush = flags & BLK_PARK_F_FLUSH;
			if (!nanswered++)
				answered = r;
		} else if ((flags & BLK_PARK_F_FLUSH) && r->then_flush) {
			/* the write itself completed before the save (a chain
			 * that is no longer such a write runs as it now reads) */
			blk_flush_stage(r);
		}
		blk_park_append(b, r);
	}
	if (drop) {
		blk_unpark_all(b);
		if (saved_broken) {
			vmm_vm_event(vd->vm, "disk '%s': %u failed request(s) saved on a broken queue were dropped (the driver must reset the device)",
				     b->disk->path, n);
		} else {
			vmm_virtio_fail(vd, 0);
			vmm_vm_event(vd->vm, "disk '%s': restored failed %s: the queue is broken (the driver must reset the device); the %u failed request(s) saved were dropped",
				     b->disk->path, bad, n);
		}
		return 0;
	}
	if (nanswered)
		vmm_vm_event(vd->vm, "disk '%s': %u restored failed request(s) no longer read as requests this disk runs (changed by the guest, or another disk): answered as new requests would be when the VM runs; the first (head %u): status %s (it had failed: %s)",
			     b->disk->path, nanswered, answered->elem.head,
			     blk_verdict_name(answered->parked_as),
			     answered->why[0] ? answered->why : "not recorded in the state file");
	b->restored = b->nparked;
	b->pause_told = false;
	if (write(b->retry_fd, &one, sizeof(one)) < 0) {
		/* the counter is full: a wake-up is pending anyway */
	}
out:
	if (ret)
		blk_unpark_all(b);
	return ret;
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* Write the configuration space into @cfg (BLK_CONFIG_LEN bytes): the
 * disk's capacity, seg_max, blk_size, discard/write-zeroes limits. */
static void blk_fill_config(const struct blk *b, uint8_t *cfg)
{
	uint64_t cap = b->disk->size / 512;

	memset(cfg, 0, BLK_CONFIG_LEN);
	memcpy(cfg, &cap, 8);
	put32(cfg + 12, BLK_SEG_MAX);
	put32(cfg + 20, 512);
	put32(cfg + 36, BLK_MAX_DZ_SECTORS);   /* max_discard_sectors */
	put32(cfg + 40, 1);          /* max_discard_seg */
	put32(cfg + 44, 8);          /* discard_sector_alignment */
	put32(cfg + 48, BLK_MAX_DZ_SECTORS);   /* max_write_zeroes_sectors */
	put32(cfg + 52, 1);          /* max_write_zeroes_seg */
	cfg[56] = 1;                 /* write_zeroes_may_unmap */
}

/* The transport restored the configuration space from the record: it is
 * the saved disk's. The disk given at restore may differ (another size):
 * the guest reads this one's (as QEMU computes it at each read, after a
 * migration too); when a field changed, config_generation moves and a
 * running driver gets the configuration change interrupt (as after QEMU's
 * block_resize), so it reads the new capacity. */
static int blk_restore(struct vmm_virtio_dev *vd, struct ut_rd *rd, struct ut_err *err)
{
	uint8_t cfg[BLK_CONFIG_LEN];
	uint32_t ver = 0;
	int r;

	if (ut_rd_le32(rd, &ver) ||
	    (ver != BLK_STATE_VERSION && ver != BLK_STATE_VERSION_PARKED &&
	     ver != BLK_STATE_VERSION_WHY))
		return ut_errf(err, -EPROTO, "device '%s': virtio-blk state version %u not supported",
			       vd->dev.id, ver);
	if (ver != BLK_STATE_VERSION)
		r = blk_restore_parked(to_blk(vd), rd, ver, err);
	else if (!(r = blk_check_end(vd, rd, err)))
		r = blk_check_held(to_blk(vd), NULL, 0, err);   /* nothing in flight */
	if (r)
		return r;
	blk_fill_config(to_blk(vd), cfg);
	if (memcmp(vd->config, cfg, sizeof(cfg))) {
		memcpy(vd->config, cfg, sizeof(cfg));
		vmm_virtio_config_changed(vd);
	}
	return 0;
}

static void blk_exit(struct vmm_virtio_dev *vd)
{
	struct blk *b = to_blk(vd);

	if (b->disk) {
		int r = 0;

		vmm_loop_del(&vd->vm->loop, b->disk->event_fd);
		if (b->retry_fd >= 0)
			vmm_loop_del(&vd->vm->loop, b->retry_fd);
		/* what the guest wrote since its last flush is made durable here;
		 * a failure is the last chance to tell anyone */
		if (!b->ro) {
			r = stg_flush(b->disk);
			if (r < 0)
				vmm_vm_event(vd->vm, "disk '%s': the flush at exit failed: %s; what the guest wrote since its last completed flush may be lost",
					     b->disk->path, strerror(-r));
		}
		if (b->nerrors > 1)
			vmm_vm_event(vd->vm, "disk '%s': %llu failed request(s) in all; the last: %s",
				     b->disk->path, (unsigned long long)b->nerrors,
				     strerror(-b->last_error));
		/* closing writes too (the persistent bitmaps the image
		 * tracked, cow/bitmap-track.c); the path goes with the device */
		char *path = strdup(b->disk->path), msg[UT_ERR_MSG_MAX];

		r = stg_close_msg(b->disk, msg, sizeof(msg));
		if (r < 0 && !b->ro)
			vmm_vm_event(vd->vm, "disk '%s': closing the image failed: %s; its persistent dirty bitmaps (if any) stay marked in use",
				     path ? path : "?", msg[0] ? msg : strerror(-r));
		else if (msg[0] && !b->ro)
			vmm_vm_event(vd->vm, "disk '%s': %s", path ? path : "?", msg);
		free(path);
	}
	if (b->retry_fd >= 0)
		close(b->retry_fd);
	free(b->pool);
	free((void *)vd->vops);   /* our per-device copy (features differ with ro) */
}

static const struct vmm_virtio_ops blk_vops = {
	.device_id = VIRTIO_ID_BLOCK,
	.class_code = 0x018000,     /* mass storage, other */
	.nvqs = 1,
	.queue_size = BLK_QUEUE_SIZE,
	.config_len = BLK_CONFIG_LEN,
	.features = 1ULL << VIRTIO_BLK_F_SEG_MAX | 1ULL << VIRTIO_BLK_F_BLK_SIZE |
		    1ULL << VIRTIO_BLK_F_FLUSH | 1ULL << VIRTIO_BLK_F_DISCARD |
		    1ULL << VIRTIO_BLK_F_WRITE_ZEROES,
	.notify = blk_notify,
	.reset = blk_reset,
	.quiesce = blk_quiesce,
	.save = blk_save,
	.restore = blk_restore,
	.exit = blk_exit,
};

static int blk_init(struct vmm_vm *vm, const char *opts, struct ut_err *err);

const struct vmm_device_ops vmm_virtio_blk_ops = {
	.type = "virtio-blk", .init = blk_init, .reset = vmm_virtio_dev_reset,
	.save = vmm_virtio_dev_save, .restore = vmm_virtio_dev_restore,
	.exit = vmm_virtio_dev_exit,
};

static int blk_init(struct vmm_vm *vm, const char *opts, struct ut_err *err)
{
	static const char *const known[] = { "path", "ro", "format", "serial", "cache", "aio",
					     "werror", "rerror", "target", NULL };
	int count = 0;
	char path[4096], ro[8] = "off", format[16] = "auto", serial[64] = "", cache[16] = "writeback";
	char aio[16] = "io_uring", werror[16] = "enospc", rerror[16] = "report", target[16] = "";
	int we = -1, re = -1;
	struct blk *b;
	struct vmm_virtio_ops *vops;
	int r;

	r = vmm_opt_check("virtio-blk", opts, known, err);
	if (r)
		return r;
	if (vmm_opt_get(opts, "path", path, sizeof(path)) != 1)
		return ut_errf(err, -EINVAL, "device 'virtio-blk': path= is required");
	if (vmm_opt_get(opts, "ro", ro, sizeof(ro)) < 0 ||
	    vmm_opt_get(opts, "format", format, sizeof(format)) < 0 ||
	    vmm_opt_get(opts, "serial", serial, sizeof(serial)) < 0 ||
	    vmm_opt_get(opts, "cache", cache, sizeof(cache)) < 0 ||
	    vmm_opt_get(opts, "aio", aio, sizeof(aio)) < 0 ||
	    vmm_opt_get(opts, "werror", werror, sizeof(werror)) < 0 ||
	    vmm_opt_get(opts, "rerror", rerror, sizeof(rerror)) < 0 ||
	    vmm_opt_get(opts, "target", target, sizeof(target)) < 0)
		return ut_errf(err, -EINVAL, "device 'virtio-blk': option value too long");
	if (vmm_opt_get(opts, "target", target, sizeof(target)) == 1 && vmm_blk_target_index(target) < 0)
		return ut_errf(err, -EINVAL, "device 'virtio-blk': target=%s (expected vd followed by 1 "
			       "to 6 letters a-z, as the catalog's)", target);
	for (int i = 0; i < 3; i++) {
		if (!strcmp(werror, blk_on_error_names[i]))
			we = i;
		if (!strcmp(rerror, blk_on_error_names[i]) && i != BLK_ERR_ENOSPC)
			re = i;
	}
	if (we < 0)
		return ut_errf(err, -EINVAL, "device 'virtio-blk': werror=%s (expected enospc, stop or report)",
			       werror);
	if (re < 0)
		return ut_errf(err, -EINVAL, "device 'virtio-blk': rerror=%s (expected report or stop)",
			       rerror);
	if (strcmp(ro, "on") && strcmp(ro, "off"))
		return ut_errf(err, -EINVAL, "device 'virtio-blk': ro=%s (expected on or off)", ro);
	if (strcmp(cache, "none") && strcmp(cache, "writeback"))
		return ut_errf(err, -EINVAL, "device 'virtio-blk': cache=%s (expected none or writeback)",
			       cache);
	if (strcmp(aio, "io_uring") && strcmp(aio, "threads"))
		return ut_errf(err, -EINVAL, "device 'virtio-blk': aio=%s (expected io_uring or threads)",
			       aio);
	b = calloc(1, sizeof(*b));
	vops = malloc(sizeof(*vops));
	if (b)
		b->pool = malloc(BLK_QUEUE_SIZE * sizeof(*b->pool));
	if (!b || !vops || !b->pool) {
		if (b)
			free(b->pool);
		free(b);
		free(vops);
		return ut_errf(err, -ENOMEM, "out of memory for virtio-blk");
	}
	b->ro = !strcmp(ro, "on");
	b->werror = (enum blk_on_error)we;
	b->rerror = (enum blk_on_error)re;
	b->retry_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (b->retry_fd < 0) {
		r = ut_errf_sys(err, -errno, "virtio-blk '%s': eventfd", path);
		goto out;
	}
	r = stg_open(path, format, (b->ro ? STG_O_RDONLY : 0) |
		     (!strcmp(cache, "none") ? STG_O_DIRECT : 0) |
		     (!strcmp(aio, "threads") ? STG_O_THREADS : 0), &b->disk, err);
	if (r)
		goto out;
	b->vd.dev.ops = &vmm_virtio_blk_ops;
	b->vd.dev.priv = b;
	/* numbered within this VM, as virtio-rng: the same machine built again
	 * (a restore) names its disks as the saved one did, in any process */
	for (int i = 0; i < vm->ndevs; i++)
		count += vm->devs[i]->ops == &vmm_virtio_blk_ops;
	snprintf(b->vd.dev.id, sizeof(b->vd.dev.id), "virtio-blk%d", count);
	{
		const char *base = strrchr(path, '/');
		const char *id = serial[0] ? serial : base ? base + 1 : path;
		size_t n = strlen(id);

		memcpy(b->id, id, n < sizeof(b->id) ? n : sizeof(b->id));
	}
	*vops = blk_vops;
	if (b->ro)
		vops->features |= 1ULL << VIRTIO_BLK_F_RO;
	blk_fill_config(b, b->vd.config);
	r = vmm_loop_add(&vm->loop, b->disk->event_fd, EPOLLIN, blk_disk_cb, b);
	if (r) {
		ut_errf_sys(err, r, "virtio-blk '%s': event loop", path);
		goto out;
	}
	r = vmm_loop_add(&vm->loop, b->retry_fd, EPOLLIN, blk_retry, b);
	if (r) {
		vmm_loop_del(&vm->loop, b->disk->event_fd);
		ut_errf_sys(err, r, "virtio-blk '%s': event loop", path);
		goto out;
	}
	r = vm->nresume_hooks < VMM_MAX_RESUME_HOOKS ? 0 :
	    ut_errf(err, -ENOSPC, "virtio-blk '%s': too many devices", path);
	if (r == 0)
		r = vmm_virtio_init(vm, &b->vd, vops, err);
	if (r == 0)
		vmm_vm_on_resume(vm, blk_resumed, b);   /* room checked above */
	if (r) {
		vmm_loop_del(&vm->loop, b->disk->event_fd);
		vmm_loop_del(&vm->loop, b->retry_fd);
		goto out;
	}
	return 0;
out:
	if (b->disk)
		stg_close(b->disk);
	if (b->retry_fd >= 0)
		close(b->retry_fd);
	free(vops);
	free(b->pool);
	free(b);
	return r;
}

/* ---- external snapshots (core/virtio/blk.h) ---- */

bool vmm_blk_is(const struct vmm_device *dev)
{
	return dev->ops == &vmm_virtio_blk_ops;
}

int vmm_blk_disk_info(struct vmm_device *dev, char *path, size_t size, uint64_t *virtual_size,
		      bool *ro)
{
	struct blk *b = dev->priv;
	int r = 0;

	pthread_mutex_lock(&b->vd.lock);
	if (snprintf(path, size, "%s", b->disk->path) >= (int)size)
		r = -ENAMETOOLONG;
	*virtual_size = b->disk->size;
	*ro = b->ro;
	pthread_mutex_unlock(&b->vd.lock);
	return r;
}

int vmm_blk_snapshot_create(struct vmm_device *dev, const char *path, unsigned flags,
			    struct stg_snapshot *snap, struct ut_err *err)
{
	struct blk *b = dev->priv;
	int r;

	/* no lock: b->disk is the same stg_dev for the device's life, and
	 * stg_snapshot_create changes nothing of it */
	r = stg_snapshot_create(b->disk, path, flags, snap, err);
	if (r)
		ut_err_prefix(err, "device '%s'", dev->id);
	return r;
}

void vmm_blk_snapshot_abort_created(struct vmm_device *dev, struct stg_snapshot *snap)
{
	struct blk *b = dev->priv;

	stg_snapshot_abort(b->disk, snap);
}

void vmm_blk_snapshot_keep_created(struct vmm_device *dev, struct stg_snapshot *snap)
{
	struct blk *b = dev->priv;

	stg_snapshot_keep(b->disk, snap);
}

/* The drained section: from a successful prepare to commit or abort the
 * loop thread holds b->vd.lock. Every path that submits to b->disk holds
 * it: kicks (kick_cb, loop), the DRIVER_OK catch-up (vCPU thread, MMIO),
 * retries (blk_retry, loop), writethrough flushes (blk_io_done, under
 * stg_poll/stg_drain with the lock held), resets (vCPU thread). So no
 * request reaches the image between the drain and the switch, and a vCPU
 * that touches the device meanwhile waits for the section's end; the
 * others run on. */
int vmm_blk_snapshot_prepare(struct vmm_device *dev, const char *path, unsigned flags,
			     struct stg_snapshot *snap, struct ut_err *err)
{
	struct blk *b = dev->priv;
	int r;

	pthread_mutex_lock(&b->vd.lock);
	if (b->ro) {
		r = ut_errf(err, -EROFS, "device '%s': disk '%s' is read-only", dev->id,
			    b->disk->path);
		goto out;
	}
	/* as before a save (blk_quiesce): what is in flight completes into
	 * the current image; a failure parks its request (policy stop) */
	r = blk_quiesce(&b->vd);
	if (r == 0 && stg_inflight(b->disk))
		r = -EBUSY;
	if (r) {
		r = ut_errf(err, r, "device '%s': unable to finish the requests in flight on '%s' (%s)",
			    dev->id, b->disk->path, strerror(-r));
		goto out;
	}
	r = stg_snapshot_prepare(b->disk, path, flags, snap, err);
	if (r)
		ut_err_prefix(err, "device '%s'", dev->id);
out:
	/* @snap keeps an overlay file from create or prepare: the caller
	 * removes or keeps it (vmm_blk_snapshot_abort_created / _keep_created) */
	if (r)
		pthread_mutex_unlock(&b->vd.lock);
	return r;
}

int vmm_blk_snapshot_commit(struct vmm_device *dev, struct stg_snapshot *snap,
			    struct ut_err *err)
{
	struct blk *b = dev->priv;
	int r;

	r = stg_snapshot_commit(b->disk, snap, err);
	if (r)   /* @snap keeps the overlay, as after a failed prepare */
		ut_err_prefix(err, "device '%s'", dev->id);
	pthread_mutex_unlock(&b->vd.lock);
	return r;
}

void vmm_blk_snapshot_abort(struct vmm_device *dev, struct stg_snapshot *snap)
{
	struct blk *b = dev->priv;

	stg_snapshot_abort(b->disk, snap);
	pthread_mutex_unlock(&b->vd.lock);
}

int vmm_blk_target_index(const char *name)
{
	long idx = 0;

	if (strncmp(name, "vd", 2) || !name[2] || strlen(name) > 8)
		return -1;
	for (const char *p = name + 2; *p; p++) {
		if (*p < 'a' || *p > 'z')
			return -1;
		idx = idx * 26 + (*p - 'a' + 1);
	}
	return (int)(idx - 1);
}

void vmm_blk_serial(struct vmm_device *dev, char out[21])
{
	struct blk *b = dev->priv;

	pthread_mutex_lock(&b->vd.lock);
	memcpy(out, b->id, BLK_ID_BYTES);
	pthread_mutex_unlock(&b->vd.lock);
	out[BLK_ID_BYTES] = '\0';
}
