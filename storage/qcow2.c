/* storage/qcow2.c — the qcow2 block backend, on top of cow/.
 *
 * Reads of allocated data in any layer of the chain and all writes go
 * through the I/O engine (io_uring). A write is split into cow/ write steps
 * (cow_write_step): in place into clusters the top layer owns, or
 * allocating (new clusters or subclusters, with copy-on-write fills read
 * synchronously); the step's data write is queued and, when it completes,
 * cow_write_commit points the L2 entries at it (cow/cow.h I2), or, when it
 * failed, cow_write_abort frees the clusters it allocated (I17). Allocating
 * steps in flight are kept in a list by guest cluster range: a request that
 * touches one of those clusters first waits for the engine to drain, so two
 * allocations of one cluster never overlap and a read never misses a write
 * that was acknowledged. Compressed clusters, write-zeroes, discard and
 * flush wait for the engine, then run synchronously in cow/.
 *
 * STG_O_DIRECT opens the top layer with COW_O_DIRECT (cache=none); engine
 * ops then use its O_DIRECT fd only for requests aligned as the file system
 * requires (cow_layer_dio_ok) and leave the others to cow/'s bounce buffers.
 *
 * External snapshots (q2_snapshot; storage/snapshot.c): the top layer
 * becomes the backing layer of a new overlay (cow_overlay_check/_attach)
 * and the overlay the top layer; a raw device becomes a qcow2 device the
 * same way (stg_qcow2_adopt, from storage/raw.c). Every layer's fd is
 * registered with the engine (register_layers) and unregistered at close.
 */
#include "storage/blockdev.h"
#include "storage/engine.h"
#include "cow/cow.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

extern const struct stg_backend_ops stg_qcow2_ops;

/* A flattened copy of a multi-vector write, shared by its steps. */
struct q2_flat {
	unsigned refs;
	uint8_t *data;               /* 4096-aligned (O_DIRECT) */
};

/* An allocating write step in flight. */
struct q2_astep {
	struct stg_dev *d;
	struct stg_req *req;
	struct q2_flat *flat;
	struct cow_wstep st;
	uint64_t g0, g1;             /* guest byte range of its clusters */
	struct q2_astep *prev, *next;
};

struct q2 {
	struct cow_img *img;
	struct q2_astep *inflight;   /* allocating steps in flight */
	struct ut_err err;           /* of the last cow/ call (q2_err, q2_note) */
};

/* one engine op belonging to a request */
struct q2_sub {
	struct stg_dev *d;
	struct stg_req *req;
	int iovcnt;
	struct iovec iov[];
};

/* The error struct for one cow/ call, cleared. */
static struct ut_err *q2_err(struct stg_dev *d)
{
	struct q2 *q = d->priv;

	ut_err_clear(&q->err);
	return &q->err;
}

/* After a cow/ call that got q2_err(d): a failure's message becomes the
 * device's last error (stg_note_error), for the VMM's host message. Returns
 * @r. */
static int q2_note(struct stg_dev *d, int r)
{
	struct q2 *q = d->priv;

	if (r < 0)
		stg_note_error(d, q->err.msg);
	return r;
}

static int q2_probe(const uint8_t *buf, size_t len)
{
	return cow_probe(buf, len) ? 100 : 0;
}

/* Every layer's fd carries data I/O of the engine (q2_close unregisters
 * them before cow_close closes them); registering one twice does nothing.
 * The top layer first: it takes the writes (slots are few, engine.h). A
 * chain grown by snapshots may have its slots taken by older layers: then
 * the deepest layer holding one gives it to the top layer. Called with
 * nothing in flight (open, snapshot). */
static void register_layers(struct stg_dev *d)
{
	struct q2 *q = d->priv;
	struct cow_img *deepest = NULL;
	int top = cow_layer_fd(q->img);

	for (struct cow_img *l = q->img; l; l = cow_backing(l))
		stg_engine_register_fd(d->engine, cow_layer_fd(l));
	if (top < 0 || stg_engine_fd_registered(d->engine, top))
		return;
	for (struct cow_img *l = cow_backing(q->img); l; l = cow_backing(l))
		if (stg_engine_fd_registered(d->engine, cow_layer_fd(l)))
			deepest = l;
	if (deepest) {
		stg_engine_unregister_fd(d->engine, cow_layer_fd(deepest));
		stg_engine_register_fd(d->engine, top);
	}
}

static int q2_open(struct stg_dev *d, struct ut_err *err)
{
	struct q2 *q = calloc(1, sizeof(*q));
	unsigned f = 0;
	int r;

	if (!q)
		return ut_errf(err, -ENOMEM, "out of memory opening '%s'", d->path);
	if (d->flags & STG_O_RDONLY)
		f |= COW_O_RDONLY;
	if (d->flags & STG_O_NO_LOCK)
		f |= COW_O_NO_LOCK;
	if (d->flags & STG_O_DIRECT)
		f |= COW_O_DIRECT;
	r = cow_open(d->path, "qcow2", f, &q->img, err);
	if (r < 0) {
		free(q);
		return r;
	}
	d->size = cow_size(q->img);
	d->priv = q;
	register_layers(d);
	return 0;
}

/* Request bookkeeping: priv[1] = sub-ops outstanding (+1 while submitting),
 * priv[2] = first error. */
static void req_put(struct stg_dev *d, struct stg_req *req)
{
	if (--req->priv[1] == 0)
		stg_complete(d, req, (int)(int64_t)req->priv[2]);
}

static void sub_done(void *opaque, int result)
{
	struct q2_sub *s = opaque;

	if (result < 0 && !s->req->priv[2])
		s->req->priv[2] = (uint64_t)(int64_t)result;
	req_put(s->d, s->req);
	free(s);
}

/* Wait until no engine op of this device is in flight (their callbacks only
 * queue completions, so this is safe inside submit). */
static void quiesce(struct stg_dev *d)
{
	stg_engine_drain(d->engine);
}

/* Copy the iovec slice [pos, pos+len) of @iov into @out (at most @cap
 * vectors: the slice is cut short there); returns the count. */
static int iov_slice(const struct iovec *iov, int n, uint64_t pos, uint64_t len, struct iovec *out,
		     int cap)
{
	int k = 0;

	for (int i = 0; i < n && len && k < cap; i++) {
		uint64_t l = iov[i].iov_len;
		if (pos >= l) {
			pos -= l;
			continue;
		}
		out[k].iov_base = (uint8_t *)iov[i].iov_base + pos;
		out[k].iov_len = l - pos < len ? l - pos : len;
		len -= out[k].iov_len;
		pos = 0;
		k++;
	}
	return k;
}

static void iov_zero(const struct iovec *iov, int n, uint64_t pos, uint64_t len)
{
	struct iovec tmp[64];
	int k;

	while (len) {
		uint64_t chunk = 0;
		k = iov_slice(iov, n, pos, len, tmp, 64);
		for (int i = 0; i < k; i++) {
			memset(tmp[i].iov_base, 0, tmp[i].iov_len);
			chunk += tmp[i].iov_len;
		}
		pos += chunk;
		len -= chunk;
		if (!chunk)
			break;
	}
}

static int queue_sub(struct stg_dev *d, struct stg_req *req, enum stg_eop op, int fd,
		     uint64_t pos, uint64_t len, uint64_t host)
{
	struct q2_sub *s = malloc(sizeof(*s) + sizeof(struct iovec) * (size_t)(req->iovcnt + 1));
	int r;

	if (!s)
		return -ENOMEM;
	s->d = d;
	s->req = req;
	s->iovcnt = iov_slice(req->iov, req->iovcnt, pos, len, s->iov, req->iovcnt + 1);
	req->priv[1]++;
	r = stg_engine_queue_wait(d->engine, op, fd, s->iov, s->iovcnt, host, len, 0, sub_done, s);
	if (r < 0) {
		req->priv[1]--;
		free(s);
	}
	return r;
}

/* Does [off, off+len) touch a cluster an allocating step in flight is
 * allocating? */
static bool touches_inflight(struct q2 *q, uint64_t off, uint64_t len)
{
	for (struct q2_astep *a = q->inflight; a; a = a->next)
		if (off < a->g1 && a->g0 < off + len)
			return true;
	return false;
}

static void flat_put(struct q2_flat *f)
{
	if (f && --f->refs == 0) {
		free(f->data);
		free(f);
	}
}

/* Only steps that change metadata at commit are in the conflict list. */
static bool astep_tracked(const struct q2_astep *a)
{
	return a->st.kind != COW_STEP_INPLACE;
}

static void astep_unlink(struct q2 *q, struct q2_astep *a)
{
	if (!astep_tracked(a))
		return;
	if (a->prev)
		a->prev->next = a->next;
	else
		q->inflight = a->next;
	if (a->next)
		a->next->prev = a->prev;
}

static void astep_done(void *opaque, int result)
{
	struct q2_astep *a = opaque;
	struct q2 *q = a->d->priv;
	int r = result;

	astep_unlink(q, a);
	/* a failed data write (maybe in part: ENOSPC, EFBIG, EIO) is undone,
	 * its new clusters freed, never committed (cow/cow.h I17) */
	if (r >= 0)
		r = q2_note(a->d, cow_write_commit(q->img, &a->st, q2_err(a->d)));
	else
		cow_write_abort(q->img, &a->st, NULL);
	if (r < 0 && !a->req->priv[2])
		a->req->priv[2] = (uint64_t)(int64_t)r;
	req_put(a->d, a->req);
	flat_put(a->flat);
	free(a);
}

static int queue_astep(struct stg_dev *d, struct stg_req *req, struct q2_astep *a)
{
	struct q2 *q = d->priv;
	uint64_t cs = cow_cluster_size(q->img), len = cow_wstep_bytes(&a->st);
	int r;

	a->d = d;
	a->req = req;
	a->g0 = a->st.vcl * cs;
	a->g1 = (a->st.vcl + a->st.k) * cs;
	if (astep_tracked(a)) {
		a->prev = NULL;
		a->next = q->inflight;
		if (q->inflight)
			q->inflight->prev = a;
		q->inflight = a;
	}
	req->priv[1]++;
	r = stg_engine_queue_wait(d->engine, STG_EOP_WRITEV, cow_layer_fd(q->img), a->st.iov,
				  a->st.iovcnt, a->st.host, len, 0, astep_done, a);
	if (r < 0) {
		req->priv[1]--;
		astep_unlink(q, a);
	}
	return r;
}

static int q2_read(struct stg_dev *d, struct stg_req *req)
{
	struct q2 *q = d->priv;
	uint64_t pos = 0;
	int r = 0;

	if (q->inflight && touches_inflight(q, req->offset, req->len))
		quiesce(d);

	while (pos < req->len) {
		struct cow_extent e;
		r = q2_note(d, cow_block_status(q->img, req->offset + pos, req->len - pos, true, &e,
						 q2_err(d)));
		if (r < 0)
			break;
		if (e.st == COW_ST_DATA && e.depth >= 0 &&
		    cow_layer_dio_ok(e.layer, req->iov, req->iovcnt, pos, e.len, e.host_off)) {
			r = queue_sub(d, req, STG_EOP_READV, cow_layer_fd(e.layer), pos, e.len, e.host_off);
		} else if (e.st == COW_ST_COMPRESSED || e.st == COW_ST_DATA) {
			/* compressed, or misaligned for O_DIRECT: through cow/ */
			struct iovec *tmp = malloc(sizeof(*tmp) * (size_t)(req->iovcnt + 1));
			int k;

			if (!tmp) {
				r = -ENOMEM;
				break;
			}
			k = iov_slice(req->iov, req->iovcnt, pos, e.len, tmp, req->iovcnt + 1);
			r = q2_note(d, cow_readv(q->img, tmp, k, req->offset + pos, q2_err(d)));
			free(tmp);
		} else {
			iov_zero(req->iov, req->iovcnt, pos, e.len);
		}
		if (r < 0)
			break;
		pos += e.len;
	}
	return r;
}

#define Q2_MAPS 8

static int q2_write(struct stg_dev *d, struct stg_req *req)
{
	struct q2 *q = d->priv;
	struct { uint64_t host, len; } maps[Q2_MAPS];
	unsigned nmaps = 0;
	uint64_t pos = 0, host, n;
	struct q2_flat *flat = NULL;
	const uint8_t *data;
	int r = 0;

	if (q->inflight && touches_inflight(q, req->offset, req->len))
		quiesce(d);
	/* all of it in place? then straight from the guest's vectors (the
	 * first Q2_MAPS pieces are remembered, the rest mapped again) */
	while (pos < req->len) {
		r = q2_note(d, cow_map_inplace(q->img, req->offset + pos, req->len - pos, &host, &n,
						q2_err(d)));
		if (r < 0)
			return r;
		if (!n || !cow_layer_dio_ok(q->img, req->iov, req->iovcnt, pos, n, host))
			break;
		if (nmaps < Q2_MAPS) {
			maps[nmaps].host = host;
			maps[nmaps].len = n;
		}
		nmaps++;
		pos += n;
	}
	if (pos == req->len) {
		pos = 0;
		for (unsigned i = 0; pos < req->len; i++) {
			if (i < Q2_MAPS) {
				host = maps[i].host;
				n = maps[i].len;
			} else {
				cow_map_inplace(q->img, req->offset + pos, req->len - pos, &host, &n, NULL);
			}
			r = queue_sub(d, req, STG_EOP_WRITEV, cow_layer_fd(q->img), pos, n, host);
			if (r < 0)
				return r;
			pos += n;
		}
		return 0;
	}
	/* allocating: cow/ write steps over one contiguous buffer */
	if (req->iovcnt == 1) {
		data = req->iov[0].iov_base;
	} else {
		flat = calloc(1, sizeof(*flat));
		if (flat)
			flat->data = aligned_alloc(4096, (req->len + 4095) & ~4095ull);
		if (!flat || !flat->data) {
			free(flat);
			return -ENOMEM;
		}
		flat->refs = 1;
		pos = 0;
		for (int i = 0; i < req->iovcnt; i++) {
			memcpy(flat->data + pos, req->iov[i].iov_base, req->iov[i].iov_len);
			pos += req->iov[i].iov_len;
		}
		data = flat->data;
	}
	for (pos = 0; pos < req->len; pos += n) {
		struct q2_astep *a = calloc(1, sizeof(*a));
		if (!a) {
			r = -ENOMEM;
			break;
		}
		a->st.want_bounce = true;
		r = q2_note(d, cow_write_step(q->img, data + pos, req->len - pos, req->offset + pos,
					       &a->st, q2_err(d)));
		if (r < 0) {
			free(a);
			break;
		}
		n = a->st.len;
		if (!cow_layer_dio_ok(q->img, a->st.iov, a->st.iovcnt, 0, cow_wstep_bytes(&a->st), a->st.host)) {
			/* O_DIRECT and misaligned: cow/ bounces it, synchronously
			 * (after the ops in flight: a padded write rewrites
			 * neighbouring bytes) */
			quiesce(d);
			r = q2_note(d, cow_write_issue(q->img, &a->st, q2_err(d)));
			if (r == 0)
				r = q2_note(d, cow_write_commit(q->img, &a->st, q2_err(d)));
			else
				cow_write_abort(q->img, &a->st, NULL);
			free(a);
			if (r < 0)
				break;
			continue;
		}
		if (flat) {
			flat->refs++;
			a->flat = flat;
		}
		r = queue_astep(d, req, a);
		if (r < 0) {
			cow_write_abort(q->img, &a->st, NULL);   /* never issued */
			flat_put(a->flat);
			free(a);
			break;
		}
	}
	flat_put(flat);
	return r;
}

static int q2_submit(struct stg_dev *d, struct stg_req *req)
{
	struct q2 *q = d->priv;
	int r;

	req->priv[1] = 1;   /* held while submitting */
	req->priv[2] = 0;
	switch (req->op) {
	case STG_OP_READ:
		r = q2_read(d, req);
		break;
	case STG_OP_WRITE:
		r = q2_write(d, req);
		break;
	case STG_OP_FLUSH:
		quiesce(d);
		r = q2_note(d, cow_flush(q->img, q2_err(d)));
		break;
	case STG_OP_DISCARD:
		quiesce(d);
		r = q2_note(d, cow_discard(q->img, req->len, req->offset, false, q2_err(d)));
		break;
	case STG_OP_WRITE_ZEROES:
		quiesce(d);
		r = q2_note(d, cow_write_zeroes(q->img, req->len, req->offset,
						req->flags & STG_REQ_MAY_UNMAP ? COW_ZERO_MAY_UNMAP : 0,
						q2_err(d)));
		break;
	default:
		r = -EINVAL;
	}
	if (r < 0 && req->priv[1] == 1)
		return r;   /* nothing queued: fail the submit */
	if (r < 0 && !req->priv[2])
		req->priv[2] = (uint64_t)(int64_t)r;
	req_put(d, req);
	return 0;
}

static int q2_get_info(struct stg_dev *d, struct stg_info *info)
{
	struct q2 *q = d->priv;
	struct cow_info ci;

	cow_get_info(q->img, &ci);
	info->actual_size = ci.actual_size;
	info->discard = true;
	info->chain_depth = ci.chain_depth;
	if (ci.backing) {
		strncpy(info->backing, ci.backing, sizeof(info->backing) - 1);
		if (ci.backing_fmt)
			strncpy(info->backing_format, ci.backing_fmt, sizeof(info->backing_format) - 1);
	}
	return 0;
}

static int q2_close(struct stg_dev *d)
{
	struct q2 *q = d->priv;
	int r;

	if (!q)
		return 0;
	quiesce(d);   /* commits every step in flight */
	for (struct cow_img *l = q->img; l; l = cow_backing(l))
		stg_engine_unregister_fd(d->engine, cow_layer_fd(l));
	/* what failed, or bitmaps it could not keep up to date or whose old
	 * clusters a damaged image made it leak: said nowhere else */
	r = cow_close_msg(q->img, q->err.msg, sizeof(q->err.msg));
	stg_note_error(d, q->err.msg);
	free(q);
	d->priv = NULL;
	return r;
}

/* External snapshot: the top layer becomes the overlay's backing layer
 * (blockdev.h). Nothing is in flight (stg_snapshot_commit checked), so no
 * allocating step refers to the old top layer. */
static int q2_snapshot(struct stg_dev *d, struct cow_img *overlay, struct ut_err *err)
{
	struct q2 *q = d->priv;
	int r;

	quiesce(d);
	if (q->inflight)
		return ut_errf(err, -EBUSY, "'%s': writes in flight", d->path);
	r = cow_overlay_check(overlay, q->img, err);
	if (r < 0)
		return r;
	cow_overlay_attach(overlay, q->img);
	q->img = overlay;
	register_layers(d);
	return 0;
}

int stg_qcow2_adopt(struct stg_dev *d, struct cow_img *overlay, struct cow_img *img)
{
	struct q2 *q = calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	cow_overlay_attach(overlay, img);
	q->img = overlay;
	d->ops = &stg_qcow2_ops;
	d->priv = q;
	register_layers(d);
	return 0;
}

/* The top layer's fd (q->img and its fd change only in q2_snapshot and
 * close; blockdev.h). */
static int q2_image_fd(struct stg_dev *d)
{
	const struct q2 *q = d->priv;

	return cow_layer_fd(q->img);
}

const struct stg_backend_ops stg_qcow2_ops = {
	.name = "qcow2",
	.probe = q2_probe,
	.open = q2_open,
	.submit = q2_submit,
	.get_info = q2_get_info,
	.close = q2_close,
	.snapshot = q2_snapshot,
	.image_fd = q2_image_fd,
};
