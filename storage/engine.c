/* storage/engine.c — the I/O engine: io_uring (liburing), or where io_uring
 * cannot be set up (or is not wanted) a pool of worker threads making the
 * same calls blocking (storage/threads.c); synchronous calls on the caller's
 * thread only as the last resort. See engine.h.
 *
 * Registered files: the backends register the fds their data I/O uses
 * (the image, every backing layer) as io_uring fixed files, which saves the
 * kernel a file lookup and a reference count per op: 200,000 4 KiB direct
 * reads of holes (no disk I/O) took 11% less time (medians of ten
 * alternating pairs, 0.247 s against 0.278 s). Registered buffers were
 * measured too (READ_FIXED from one registered 2 MiB block in image bench)
 * and gained nothing measurable here; a VM's buffers are guest RAM, which
 * registering would pin (and, for a clone mapping its parent's memory
 * privately, copy), so they are not used.
 *
 * Ops live in a fixed pool of @depth entries. Queued ops become SQEs at once,
 * except writes, which wait for stg_engine_flush(): there, writes queued one
 * after another that continue each other in the same file (the next starts
 * where the one before ends) go to the kernel as one write of up to
 * ENG_MERGE_MAX bytes, as QEMU's virtio-blk merges adjacent requests. A
 * file system that must allocate blocks for a write (a hole in a sparse
 * raw file, a new qcow2 cluster) serves it under the inode lock from an
 * io_uring worker thread, where the block layer's plug cannot merge them:
 * one write of 1 MiB costs less there than sixteen of 64 KiB. Reads are not
 * merged: on a virtio disk many requests in flight read faster than a few
 * large ones. io_uring_submit() runs at stg_engine_flush() (batched
 * submission). A merged write that fails fails every write in it. Short
 * transfers are continued by re-queueing the remainder; reads past EOF are
 * zero-filled (on an O_DIRECT fd a short read ending inside a sector is the
 * end of the file: no unaligned continuation), so callers always get the
 * whole length or an error.
 */
#include "storage/engine.h"
#include "storage/threads.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define ENG_MAX_IOV 1024
#define ENG_MERGE_MAX (1u << 20)   /* bytes in one merged write */
#define ENG_MERGE_IOV 256          /* iovec entries in one merged write */
#define STG_ENG_SECTOR 512
#define ENG_MAX_THREADS 64         /* as QEMU's thread pool */
#define ENG_FILES 8                /* registered (fixed) files per ring */

struct eng_op {
	struct stg_job job;        /* threads: first, so a job is its op */
	int res;                   /* threads and sync: the result */
	enum stg_eop op;
	int fd, mode;
	uint64_t off, len;
	struct iovec *iov;         /* into iov_alloc, advanced on short transfers */
	struct iovec *iov_alloc;   /* private copy of the caller's iovec */
	int iovcnt;
	uint64_t done;             /* bytes transferred so far */
	stg_eng_cb cb;
	void *opaque;
	struct eng_op *next_free;
	struct eng_op *next_pend;  /* writes waiting for stg_engine_flush */
	struct eng_op *merged;     /* writes sent as part of this one (a chain) */
	uint64_t own_len;          /* this op's own bytes when others are merged in */
};

struct stg_engine {
	bool uring;
	struct stg_pool *pool;              /* the threads engine */
	struct io_uring ring;
	int event_fd;
	unsigned depth, inflight;
	unsigned queued;                    /* SQEs prepared, not yet submitted */
	unsigned long long sqes;            /* SQEs prepared, for stg_engine_sqes */
	struct eng_op *ops, *free;
	struct eng_op *pend, **pend_tail;   /* writes not yet prepared (merge candidates) */
	/* sync: finished ops waiting for reap */
	struct eng_op **sync_done;
	unsigned nsync;
	/* io_uring fixed files: the fd in each slot, -1 free; files_on when
	 * the ring has the (sparse) table */
	bool files_on;
	int files[ENG_FILES];
};

static struct eng_op *op_get(struct stg_engine *e)
{
	struct eng_op *o = e->free;

	if (o)
		e->free = o->next_free;
	return o;
}

static void op_put(struct stg_engine *e, struct eng_op *o)
{
	free(o->iov_alloc);
	o->iov = o->iov_alloc = NULL;
	o->next_free = e->free;
	e->free = o;
}

int stg_engine_create(unsigned depth, int event_fd, enum stg_ekind kind, struct stg_engine **out,
		      struct ut_err *err)
{
	struct stg_engine *e = calloc(1, sizeof(*e));
	int r;

	if (!e)
		return ut_errf(err, -ENOMEM, "out of memory for the I/O engine");
	e->depth = depth ? depth : 128;
	e->event_fd = event_fd;
	e->pend_tail = &e->pend;
	e->ops = calloc(e->depth, sizeof(*e->ops));
	e->sync_done = calloc(e->depth, sizeof(*e->sync_done));
	if (!e->ops || !e->sync_done) {
		r = ut_errf(err, -ENOMEM, "out of memory for the I/O engine");
		goto out;
	}
	for (unsigned i = 0; i < e->depth; i++)
		op_put(e, &e->ops[i]);
	/* COOP_TASKRUN: completions are posted when this task next enters the
	 * kernel instead of interrupting it (Linux >= 5.19; else plain) */
	if (kind == STG_ENG_AUTO && getenv("COWVM_NO_IO_URING"))
		kind = STG_ENG_THREADS;
	if (kind == STG_ENG_AUTO &&
	    (io_uring_queue_init(e->depth, &e->ring, IORING_SETUP_COOP_TASKRUN) == 0 ||
	     io_uring_queue_init(e->depth, &e->ring, 0) == 0)) {
		e->uring = true;
		if (event_fd >= 0 && io_uring_register_eventfd(&e->ring, event_fd) < 0) {
			io_uring_queue_exit(&e->ring);
			e->uring = false;
		}
	}
	for (unsigned i = 0; i < ENG_FILES; i++)
		e->files[i] = -1;
	/* a sparse table of fixed files (slots set by stg_engine_register_fd);
	 * without it (old kernels) ops name their fds as usual */
	if (e->uring && !getenv("COWVM_NO_FIXED_FILES"))
		e->files_on = io_uring_register_files(&e->ring, e->files, ENG_FILES) == 0;
	if (!e->uring && kind != STG_ENG_SYNC) {
		r = stg_pool_create(e->depth < ENG_MAX_THREADS ? e->depth : ENG_MAX_THREADS,
				    event_fd, &e->pool, err);
		if (r)
			goto out;
	}
	*out = e;
	return 0;
out:
	free(e->ops);
	free(e->sync_done);
	free(e);
	return r;
}

void stg_engine_destroy(struct stg_engine *e)
{
	if (!e)
		return;
	while (e->inflight)
		if (stg_engine_reap(e, 1) < 0)
			break;
	if (e->uring)
		io_uring_queue_exit(&e->ring);
	stg_pool_destroy(e->pool);
	for (unsigned i = 0; i < e->depth; i++)
		free(e->ops[i].iov_alloc);
	free(e->ops);
	free(e->sync_done);
	free(e);
}

const char *stg_engine_name(const struct stg_engine *e)
{
	return e->uring ? "io_uring" : e->pool ? "threads" : "sync";
}

unsigned stg_engine_inflight(const struct stg_engine *e)
{
	return e->inflight;
}

unsigned long long stg_engine_sqes(const struct stg_engine *e)
{
	return e->sqes;
}

/* Skip @n transferred bytes in the op's iovec. */
static void op_advance(struct eng_op *o, uint64_t n)
{
	while (n && o->iovcnt) {
		if (n < o->iov->iov_len) {
			o->iov->iov_base = (uint8_t *)o->iov->iov_base + n;
			o->iov->iov_len -= n;
			return;
		}
		n -= o->iov->iov_len;
		o->iov++;
		o->iovcnt--;
	}
}

static void op_zero_rest(struct eng_op *o)
{
	for (int i = 0; i < o->iovcnt; i++)
		memset(o->iov[i].iov_base, 0, o->iov[i].iov_len);
}

/* After a short read: did it stop at the end of the file inside a sector of
 * an O_DIRECT fd? Direct reads transfer whole blocks except at the end of
 * the file, and continuing at an unaligned offset would fail with EINVAL.
 * (Buffered fds just continue; the next read returns 0 at the end.) */
static bool short_read_at_eof(const struct eng_op *o)
{
	int fl;

	if (o->op != STG_EOP_READV || o->done >= o->len ||
	    !((o->off + o->done) & (STG_ENG_SECTOR - 1)))
		return false;
	fl = fcntl(o->fd, F_GETFL);
	return fl >= 0 && (fl & O_DIRECT);
}

/* Run an op synchronously. Returns the final result. */
static int op_run_sync(struct eng_op *o)
{
	ssize_t n;

	switch (o->op) {
	case STG_EOP_READV:
	case STG_EOP_WRITEV:
		while (o->done < o->len) {
			n = o->op == STG_EOP_READV ?
			    preadv(o->fd, o->iov, o->iovcnt > ENG_MAX_IOV ? ENG_MAX_IOV : o->iovcnt,
				   (off_t)(o->off + o->done)) :
			    pwritev(o->fd, o->iov, o->iovcnt > ENG_MAX_IOV ? ENG_MAX_IOV : o->iovcnt,
				    (off_t)(o->off + o->done));
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			if (n == 0) {
				if (o->op == STG_EOP_WRITEV)
					return -EIO;
				op_zero_rest(o);
				break;
			}
			o->done += (uint64_t)n;
			op_advance(o, (uint64_t)n);
			if (short_read_at_eof(o)) {
				op_zero_rest(o);
				break;
			}
		}
		return (int)(o->len > 0x7fffffff ? 0x7fffffff : o->len);
	case STG_EOP_FSYNC:
		return fdatasync(o->fd) < 0 ? -errno : 0;
	case STG_EOP_FALLOCATE:
		return fallocate(o->fd, o->mode, (off_t)o->off, (off_t)o->len) < 0 ? -errno : 0;
	}
	return -EINVAL;
}

/* A worker thread's job: run the op blocking. */
static void op_job(struct stg_job *j)
{
	struct eng_op *o = (struct eng_op *)j;

	o->res = op_run_sync(o);
}

/* The fixed-file slot of @fd, or -1. */
static int file_slot(const struct stg_engine *e, int fd)
{
	if (e->files_on)
		for (int i = 0; i < ENG_FILES; i++)
			if (e->files[i] == fd)
				return i;
	return -1;
}

void stg_engine_register_fd(struct stg_engine *e, int fd)
{
	int slot = file_slot(e, -1);

	if (fd < 0 || slot < 0 || file_slot(e, fd) >= 0)
		return;
	if (io_uring_register_files_update(&e->ring, (unsigned)slot, &fd, 1) == 1)
		e->files[slot] = fd;
}

bool stg_engine_fd_registered(const struct stg_engine *e, int fd)
{
	return fd >= 0 && file_slot(e, fd) >= 0;
}

void stg_engine_unregister_fd(struct stg_engine *e, int fd)
{
	int slot = fd >= 0 ? file_slot(e, fd) : -1, none = -1;

	if (slot < 0)
		return;
	/* ops already submitted hold their own reference to the file. If
	 * the slot cannot be cleared, no slot is used again (the fd number
	 * may be reused for another file once closed) */
	if (io_uring_register_files_update(&e->ring, (unsigned)slot, &none, 1) == 1)
		e->files[slot] = -1;
	else
		e->files_on = false;
}

static void op_prep(struct stg_engine *e, struct eng_op *o)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e->ring);
	int slot = file_slot(e, o->fd);

	if (!sqe) {
		io_uring_submit(&e->ring);
		sqe = io_uring_get_sqe(&e->ring);
	}
	switch (o->op) {
	case STG_EOP_READV:
		if (o->iovcnt == 1)   /* plain read: no iovec to import */
			io_uring_prep_read(sqe, o->fd, o->iov[0].iov_base, (unsigned)o->iov[0].iov_len,
					   o->off + o->done);
		else
			io_uring_prep_readv(sqe, o->fd, o->iov, (unsigned)(o->iovcnt > ENG_MAX_IOV ?
						ENG_MAX_IOV : o->iovcnt), o->off + o->done);
		break;
	case STG_EOP_WRITEV:
		if (o->iovcnt == 1)
			io_uring_prep_write(sqe, o->fd, o->iov[0].iov_base, (unsigned)o->iov[0].iov_len,
					    o->off + o->done);
		else
			io_uring_prep_writev(sqe, o->fd, o->iov, (unsigned)(o->iovcnt > ENG_MAX_IOV ?
						 ENG_MAX_IOV : o->iovcnt), o->off + o->done);
		break;
	case STG_EOP_FSYNC:
		io_uring_prep_fsync(sqe, o->fd, IORING_FSYNC_DATASYNC);
		break;
	case STG_EOP_FALLOCATE:
		io_uring_prep_fallocate(sqe, o->fd, o->mode, o->off, o->len);
		break;
	}
	if (slot >= 0) {   /* the registered file: no lookup per op */
		sqe->fd = slot;
		sqe->flags |= IOSQE_FIXED_FILE;
	}
	io_uring_sqe_set_data(sqe, o);
	e->queued++;
	e->sqes++;
}

int stg_engine_queue(struct stg_engine *e, enum stg_eop op, int fd, const struct iovec *iov,
		     int iovcnt, uint64_t off, uint64_t len, int mode, stg_eng_cb cb, void *opaque)
{
	struct eng_op *o;
	uint64_t one = 1;

	if (iovcnt < 0 || (iovcnt && !iov))
		return -EINVAL;
	o = op_get(e);
	if (!o)
		return -EAGAIN;
	*o = (struct eng_op){ .op = op, .fd = fd, .mode = mode, .off = off, .len = len,
			      .cb = cb, .opaque = opaque };
	if (iovcnt) {
		o->iov = o->iov_alloc = malloc((size_t)iovcnt * sizeof(*iov));
		if (!o->iov) {
			op_put(e, o);
			return -ENOMEM;
		}
		memcpy(o->iov, iov, (size_t)iovcnt * sizeof(*iov));
		o->iovcnt = iovcnt;
		if (op == STG_EOP_READV || op == STG_EOP_WRITEV) {
			o->len = 0;
			for (int i = 0; i < iovcnt; i++)
				o->len += iov[i].iov_len;
		}
	}
	e->inflight++;
	if (e->uring) {
		if (op == STG_EOP_WRITEV && iovcnt) {
			*e->pend_tail = o;
			e->pend_tail = &o->next_pend;
		} else {
			op_prep(e, o);
		}
		return 0;
	}
	if (e->pool) {
		o->job.run = op_job;
		if (stg_pool_submit(e->pool, &o->job) == 0)
			return 0;
		/* no worker could be started: run it here */
	}
	o->res = op_run_sync(o);
	e->sync_done[e->nsync++] = o;
	if (e->event_fd >= 0 && write(e->event_fd, &one, sizeof(one)) < 0)
		return 0;
	return 0;
}

int stg_engine_queue_wait(struct stg_engine *e, enum stg_eop op, int fd, const struct iovec *iov,
			  int iovcnt, uint64_t off, uint64_t len, int mode, stg_eng_cb cb,
			  void *opaque)
{
	int r;

	while ((r = stg_engine_queue(e, op, fd, iov, iovcnt, off, len, mode, cb, opaque)) == -EAGAIN) {
		stg_engine_flush(e);
		stg_engine_reap(e, 1);
	}
	return r;
}

/* Can @b be sent as the continuation of the merged write led by @lead, which
 * has @len bytes in @cnt iovec entries so far? */
static bool merge_ok(const struct eng_op *lead, uint64_t len, int cnt, const struct eng_op *b)
{
	return b->fd == lead->fd && b->off == lead->off + len && len + b->len <= ENG_MERGE_MAX &&
	       cnt + b->iovcnt <= ENG_MERGE_IOV;
}

/* Merge the run of writes from @lead on that continue each other into @lead
 * (members chained on lead->merged, their iovecs appended to lead's). On
 * no memory, nothing is merged. Returns the first write not merged. */
static struct eng_op *merge_run(struct eng_op *lead)
{
	struct eng_op *b = lead->next_pend, **tail = &lead->merged;
	struct iovec *iov;
	uint64_t len = lead->len;
	int cnt = lead->iovcnt, n;

	while (b && merge_ok(lead, len, cnt, b)) {
		len += b->len;
		cnt += b->iovcnt;
		b = b->next_pend;
	}
	if (cnt == lead->iovcnt)
		return b;
	iov = malloc((size_t)cnt * sizeof(*iov));
	if (!iov)
		return lead->next_pend;
	memcpy(iov, lead->iov, (size_t)lead->iovcnt * sizeof(*iov));
	n = lead->iovcnt;
	lead->own_len = lead->len;
	for (struct eng_op *m = lead->next_pend; m != b; m = m->next_pend) {
		memcpy(iov + n, m->iov, (size_t)m->iovcnt * sizeof(*iov));
		n += m->iovcnt;
		*tail = m;
		tail = &m->merged;
	}
	*tail = NULL;
	free(lead->iov_alloc);
	lead->iov = lead->iov_alloc = iov;
	lead->iovcnt = cnt;
	lead->len = len;
	return b;
}

/* Prepare the pending writes, merging runs of adjacent ones. */
static void prep_pending(struct stg_engine *e)
{
	struct eng_op *o = e->pend, *next;

	e->pend = NULL;
	e->pend_tail = &e->pend;
	while (o) {
		next = merge_run(o);
		op_prep(e, o);
		o = next;
	}
}

int stg_engine_flush(struct stg_engine *e)
{
	int r;

	if (!e->uring || (!e->queued && !e->pend))
		return 0;
	prep_pending(e);
	r = io_uring_submit(&e->ring);
	if (r < 0)
		return r;
	e->queued = 0;
	return 0;
}

static void op_finish(struct stg_engine *e, struct eng_op *o, int res)
{
	struct eng_op *m = o->merged;
	stg_eng_cb cb = o->cb;
	void *opaque = o->opaque;

	if (m && res >= 0)
		res = (int)o->own_len;
	o->merged = NULL;
	op_put(e, o);
	e->inflight--;
	cb(opaque, res);
	while (m) {   /* the writes merged into @o: each completes whole or with @res */
		struct eng_op *next = m->merged;

		m->merged = NULL;
		op_finish(e, m, res < 0 ? res : (int)m->len);
		m = next;
	}
}

int stg_engine_reap(struct stg_engine *e, int wait)
{
	struct io_uring_cqe *cqe;
	int n = 0;

	if (!e->uring) {
		n = stg_engine_reap_sync(e);
		if (e->pool) {
			/* wait only for what a worker has: none is with the
			 * workers when every op in flight finished above */
			struct stg_job *j = stg_pool_take(e->pool, wait && !n && e->inflight);

			while (j) {
				struct stg_job *next = j->next;
				struct eng_op *o = (struct eng_op *)j;

				op_finish(e, o, o->res);
				n++;
				j = next;
			}
		}
		return n;
	}
	stg_engine_flush(e);
	for (;;) {
		struct eng_op *o;
		int res, r;

		if (wait && !n && e->inflight)
			r = io_uring_wait_cqe(&e->ring, &cqe);
		else
			r = io_uring_peek_cqe(&e->ring, &cqe);
		if (r == -EINTR)
			continue;
		if (r < 0)
			break;
		o = io_uring_cqe_get_data(cqe);
		res = cqe->res;
		io_uring_cqe_seen(&e->ring, cqe);
		if ((o->op == STG_EOP_READV || o->op == STG_EOP_WRITEV) && res >= 0) {
			if (res == 0) {
				if (o->op == STG_EOP_WRITEV) {
					op_finish(e, o, -EIO);
					n++;
					continue;
				}
				op_zero_rest(o);     /* read past EOF */
				o->done = o->len;
			} else {
				o->done += (uint64_t)res;
				op_advance(o, (uint64_t)res);
				if (short_read_at_eof(o)) {
					op_zero_rest(o);
					o->done = o->len;
				}
			}
			if (o->done < o->len) {      /* short transfer: continue */
				op_prep(e, o);
				stg_engine_flush(e);
				continue;
			}
			res = (int)(o->len > 0x7fffffff ? 0x7fffffff : o->len);
		}
		op_finish(e, o, res);
		n++;
	}
	return n;
}

int stg_engine_reap_sync(struct stg_engine *e)
{
	int n = 0;

	while (e->nsync) {   /* none with io_uring */
		struct eng_op *o = e->sync_done[--e->nsync];

		op_finish(e, o, o->res);
		n++;
	}
	return n;
}

int stg_engine_drain(struct stg_engine *e)
{
	while (e->inflight) {
		int r = stg_engine_flush(e);

		if (r < 0)
			return r;
		stg_engine_reap(e, 1);
	}
	return 0;
}
