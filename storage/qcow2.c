/* storage/qcow2.c — the qcow2 block backend, on top of cow/.
 *
 * Fast paths go through the I/O engine (io_uring): reads of allocated data in
 * any layer of the chain, and writes into clusters that are allocated with
 * refcount 1 in the top layer (no metadata changes). Everything that changes
 * metadata — allocating writes (with copy-on-write of partial clusters),
 * compressed clusters, write-zeroes, discard and flush — first waits for the
 * engine ops of this device to finish, then runs synchronously in cow/ (which
 * orders its metadata writes, see cow/cow.h) and completes the request.
 *
 * STG_O_DIRECT opens the top layer with COW_O_DIRECT (cache=none); the fast
 * paths then use its O_DIRECT fd only for requests aligned as the file
 * system requires (engine_ok) and leave the others to cow/'s bounce buffers.
 */
#include "storage/blockdev.h"
#include "storage/engine.h"
#include "cow/cow.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct q2 {
	struct cow_img *img;
};

/* one engine op belonging to a request */
struct q2_sub {
	struct stg_dev *d;
	struct stg_req *req;
	int iovcnt;
	struct iovec iov[];
};

static int q2_probe(const uint8_t *buf, size_t len)
{
	return cow_probe(buf, len) ? 100 : 0;
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
	if (d->flags & STG_O_DIRECT)
		f |= COW_O_DIRECT;
	r = cow_open(d->path, "qcow2", f, &q->img, err);
	if (r < 0) {
		free(q);
		return r;
	}
	d->size = cow_size(q->img);
	d->priv = q;
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
	while (stg_engine_inflight(d->engine)) {
		stg_engine_flush(d->engine);
		if (stg_engine_reap(d->engine, 1) < 0)
			break;
	}
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

/* May the engine do [pos, pos+len) of @iov at @host on @layer's fd? Always
 * on a buffered fd; on an O_DIRECT one (cache=none) only when the host
 * offset, and every vector's address and length, meet its alignment (the
 * file system's, from statx: on ext4 over a 512-byte-sector disk 512 bytes,
 * which the guest's virtio buffers usually are; misaligned requests go
 * through cow/, which bounces them). */
static bool engine_ok(const struct cow_img *layer, const struct iovec *iov, int n, uint64_t pos,
		      uint64_t len, uint64_t host)
{
	uint32_t mem, off;

	if (!cow_layer_dio_align(layer, &mem, &off))
		return true;
	if ((host | len) & (off - 1))
		return false;
	for (int i = 0; i < n && len; i++) {
		uint64_t l = iov[i].iov_len;
		uintptr_t b = (uintptr_t)iov[i].iov_base;

		if (pos >= l) {
			pos -= l;
			continue;
		}
		b += pos;
		l -= pos;
		if (l > len)
			l = len;
		if ((b & (mem - 1)) || (l & (off - 1)))
			return false;
		len -= l;
		pos = 0;
	}
	return true;
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
	for (;;) {
		r = stg_engine_queue(d->engine, op, fd, s->iov, s->iovcnt, host, len, 0, sub_done, s);
		if (r != -EAGAIN)
			break;
		stg_engine_flush(d->engine);
		stg_engine_reap(d->engine, 1);
	}
	if (r < 0) {
		req->priv[1]--;
		free(s);
	}
	return r;
}

static int q2_read(struct stg_dev *d, struct stg_req *req)
{
	struct q2 *q = d->priv;
	uint64_t pos = 0;
	int r = 0;

	while (pos < req->len) {
		struct cow_extent e;
		r = cow_block_status(q->img, req->offset + pos, req->len - pos, true, &e, NULL);
		if (r < 0)
			break;
		if (e.st == COW_ST_DATA && e.depth >= 0 &&
		    engine_ok(e.layer, req->iov, req->iovcnt, pos, e.len, e.host_off)) {
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
			r = cow_readv(q->img, tmp, k, req->offset + pos, NULL);
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

static int q2_write(struct stg_dev *d, struct stg_req *req)
{
	struct q2 *q = d->priv;
	uint64_t pos = 0, host, n;
	int r;

	/* all of it in place? */
	while (pos < req->len) {
		r = cow_map_inplace(q->img, req->offset + pos, req->len - pos, &host, &n, NULL);
		if (r < 0)
			return r;
		if (!n || !engine_ok(q->img, req->iov, req->iovcnt, pos, n, host))
			break;
		pos += n;
	}
	if (pos == req->len) {
		pos = 0;
		while (pos < req->len) {
			cow_map_inplace(q->img, req->offset + pos, req->len - pos, &host, &n, NULL);
			r = queue_sub(d, req, STG_EOP_WRITEV, cow_layer_fd(q->img), pos, n, host);
			if (r < 0)
				return r;
			pos += n;
		}
		return 0;
	}
	quiesce(d);
	return cow_writev(q->img, req->iov, req->iovcnt, req->offset, NULL);
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
		r = cow_flush(q->img, NULL);
		break;
	case STG_OP_DISCARD:
		quiesce(d);
		r = cow_discard(q->img, req->len, req->offset, false, NULL);
		break;
	case STG_OP_WRITE_ZEROES:
		quiesce(d);
		r = cow_write_zeroes(q->img, req->len, req->offset, NULL);
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

static void q2_close(struct stg_dev *d)
{
	struct q2 *q = d->priv;

	if (!q)
		return;
	quiesce(d);
	cow_close(q->img);
	free(q);
	d->priv = NULL;
}

const struct stg_backend_ops stg_qcow2_ops = {
	.name = "qcow2",
	.probe = q2_probe,
	.open = q2_open,
	.submit = q2_submit,
	.get_info = q2_get_info,
	.close = q2_close,
};
