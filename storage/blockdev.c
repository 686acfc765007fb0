/* storage/blockdev.c — the block-device front: open/probe, request checks,
 * completion delivery, synchronous helpers. See blockdev.h.
 */
#include "storage/blockdev.h"
#include "storage/engine.h"
#include "util/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define STG_ENGINE_DEPTH 256

struct stg_dev_int {
	struct stg_dev pub;
	unsigned inflight;
	int polling;
	/* a flush failed: what reached the disk since the last good one is
	 * unknown (Linux reports a writeback error once), so every later flush
	 * fails too (-EIO), as QEMU's file-posix after a failed fdatasync.
	 * Atomic (__atomic_*): stg_snapshot_create sets it from its own
	 * thread (stg_note_flush_failed) while the loop thread submits */
	bool flush_failed;
};

static struct stg_dev_int *dev_int(struct stg_dev *d)
{
	return (struct stg_dev_int *)d;
}

static const struct stg_backend_ops *find_backend(const char *name)
{
	for (int i = 0; stg_backends[i]; i++)
		if (!strcmp(stg_backends[i]->name, name))
			return stg_backends[i];
	return NULL;
}

static int probe_format(const char *path, const struct stg_backend_ops **out, struct ut_err *err)
{
	uint8_t buf[512];
	int fd, best = 0;
	ssize_t n;

	fd = ut_open_image(path, O_RDONLY | O_CLOEXEC, 0, err);
	if (fd < 0)
		return fd;
	n = pread(fd, buf, sizeof(buf), 0);
	close(fd);
	if (n < 0)
		return ut_errf_sys(err, -errno, "unable to read '%s'", path);
	*out = NULL;
	for (int i = 0; stg_backends[i]; i++) {
		int s = stg_backends[i]->probe ? stg_backends[i]->probe(buf, (size_t)n) : 0;

		if (s > best) {
			best = s;
			*out = stg_backends[i];
		}
	}
	if (!*out)
		*out = find_backend("raw");
	return *out ? 0 : ut_errf(err, -ENOTSUP, "'%s': no backend for this image", path);
}

int stg_open(const char *path, const char *format, unsigned flags,
	     struct stg_dev **out, struct ut_err *err)
{
	struct stg_dev_int *di;
	struct stg_dev *d;
	const struct stg_backend_ops *ops;
	int r;

	*out = NULL;
	if (format && strcmp(format, "auto")) {
		ops = find_backend(format);
		if (!ops)
			return ut_errf(err, -EINVAL, "'%s': unknown format '%s'", path, format);
	} else {
		r = probe_format(path, &ops, err);
		if (r)
			return r;
	}
	di = calloc(1, sizeof(*di));
	if (!di)
		return ut_errf(err, -ENOMEM, "out of memory opening '%s'", path);
	d = &di->pub;
	d->ops = ops;
	d->flags = flags;
	d->event_fd = -1;
	d->path = strdup(path);
	if (!d->path) {
		r = ut_errf(err, -ENOMEM, "out of memory opening '%s'", path);
		goto out;
	}
	d->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->event_fd < 0) {
		r = ut_errf_sys(err, -errno, "unable to open '%s': eventfd", path);
		goto out;
	}
	r = stg_engine_create(STG_ENGINE_DEPTH, d->event_fd,
			      (flags & STG_O_THREADS) ? STG_ENG_THREADS : STG_ENG_AUTO, &d->engine, err);
	if (r)
		goto out;
	r = ops->open(d, err);
	if (r)
		goto out;
	*out = d;
	return 0;
out:
	d->ops = NULL;   /* backend not open: close only the front */
	stg_close(d);
	return r;
}

int stg_submit(struct stg_dev *d, struct stg_req *req)
{
	struct stg_dev_int *di = dev_int(d);
	int r;

	switch (req->op) {
	case STG_OP_WRITE:
	case STG_OP_DISCARD:
	case STG_OP_WRITE_ZEROES:
		if (d->flags & STG_O_RDONLY)
			return -EROFS;
		/* fall through */
	case STG_OP_READ:
		if (req->offset > d->size || req->len > d->size - req->offset)
			return -EINVAL;
		break;
	case STG_OP_FLUSH:
		break;
	default:
		return -EINVAL;
	}
	req->next = NULL;
	di->inflight++;
	if (!req->len && req->op != STG_OP_FLUSH) {
		stg_complete(d, req, 0);   /* nothing to do, on every backend */
		return 0;
	}
	if (req->op == STG_OP_FLUSH && __atomic_load_n(&di->flush_failed, __ATOMIC_ACQUIRE)) {
		stg_complete(d, req, -EIO);
		return 0;
	}
	r = d->ops->submit(d, req);
	if (r)
		di->inflight--;
	if (r < 0 && req->op == STG_OP_FLUSH && r != -ENOTSUP && r != -EINVAL)
		stg_note_flush_failed(d);   /* a backend that flushes at submit */
	return r;
}

void stg_note_flush_failed(struct stg_dev *d)
{
	__atomic_store_n(&dev_int(d)->flush_failed, true, __ATOMIC_RELEASE);
}

void stg_note_error(struct stg_dev *d, const char *msg)
{
	if (msg && msg[0])
		snprintf(d->last_error, sizeof(d->last_error), "%s", msg);
}

const char *stg_take_error(struct stg_dev *d, char *buf, size_t size)
{
	snprintf(buf, size, "%s", d->last_error);
	d->last_error[0] = '\0';
	return buf;
}

void stg_complete(struct stg_dev *d, struct stg_req *req, int result)
{
	uint64_t one = 1;
	bool first = !d->done_head;

	req->priv[3] = (uint64_t)(int64_t)result;
	req->next = NULL;
	if (d->done_tail)
		d->done_tail->next = req;
	else
		d->done_head = req;
	d->done_tail = req;
	/* one wake-up per batch: stg_poll runs the whole done list */
	if (first && !dev_int(d)->polling && write(d->event_fd, &one, sizeof(one)) < 0)
		return;
}

static int run_done(struct stg_dev *d)
{
	struct stg_dev_int *di = dev_int(d);
	int n = 0;

	while (d->done_head) {
		struct stg_req *req = d->done_head;

		d->done_head = req->next;
		if (!d->done_head)
			d->done_tail = NULL;
		di->inflight--;
		if (req->op == STG_OP_FLUSH && (int64_t)req->priv[3] < 0 &&
		    (int64_t)req->priv[3] != -ENOTSUP && (int64_t)req->priv[3] != -EINVAL)
			stg_note_flush_failed(d);   /* EINVAL/ENOTSUP: no sync at all here */
		req->done(req, (int)(int64_t)req->priv[3]);
		n++;
	}
	return n;
}

int stg_poll(struct stg_dev *d)
{
	struct stg_dev_int *di = dev_int(d);
	uint64_t v;
	int n = 0, k;

	if (read(d->event_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return -errno;
	di->polling++;
	/* the completions there are now, once: taking new ones as long as
	 * they keep coming would hold the caller (a device with its lock
	 * held, the next requests) while the queue drains; later ones signal
	 * the event fd again */
	stg_engine_reap(d->engine, 0);
	do {
		if (d->ops->poll)
			d->ops->poll(d);
		k = run_done(d);
		n += k;
		stg_engine_reap_sync(d->engine);   /* what callbacks ran at once */
	} while (k || d->done_head);
	di->polling--;
	stg_engine_flush(d->engine);
	return n;
}

void stg_unplug(struct stg_dev *d)
{
	stg_engine_flush(d->engine);
}

int stg_wait(struct stg_dev *d)
{
	struct stg_dev_int *di = dev_int(d);
	int n = 0;

	while (di->inflight && n == 0) {
		stg_engine_flush(d->engine);
		if (!d->done_head && stg_engine_inflight(d->engine))
			stg_engine_reap(d->engine, 1);
		n = stg_poll(d);
		if (n < 0)
			return n;
		if (!n && di->inflight && !d->done_head && !stg_engine_inflight(d->engine) &&
		    !d->ops->poll)
			return -EIO;   /* a backend lost a request: never hang */
	}
	return n;
}

int stg_drain(struct stg_dev *d)
{
	while (dev_int(d)->inflight) {
		int r = stg_wait(d);
		if (r < 0)
			return r;
	}
	return 0;
}

unsigned stg_inflight(const struct stg_dev *d)
{
	return ((const struct stg_dev_int *)d)->inflight;
}

struct sync_wait {
	int done;
	int result;
};

static void sync_done(struct stg_req *req, int result)
{
	struct sync_wait *w = req->opaque;

	w->done = 1;
	w->result = result;
}

static int sync_io(struct stg_dev *d, enum stg_op op, void *buf, uint64_t len, uint64_t off)
{
	struct sync_wait w = { 0, 0 };
	struct iovec iov = { buf, len };
	struct stg_req req = {
		.op = op, .offset = off, .len = len, .iov = &iov, .iovcnt = buf ? 1 : 0,
		.done = sync_done, .opaque = &w,
	};
	int r = stg_submit(d, &req);

	if (r)
		return r;
	while (!w.done) {
		r = stg_drain(d);
		if (r && !w.done)
			return r;
	}
	return w.result < 0 ? w.result : 0;
}

int stg_pread(struct stg_dev *d, void *buf, uint64_t len, uint64_t off)
{
	return sync_io(d, STG_OP_READ, buf, len, off);
}

int stg_pwrite(struct stg_dev *d, const void *buf, uint64_t len, uint64_t off)
{
	return sync_io(d, STG_OP_WRITE, (void *)buf, len, off);
}

int stg_flush(struct stg_dev *d)
{
	return sync_io(d, STG_OP_FLUSH, NULL, 0, 0);
}

int stg_get_info(struct stg_dev *d, struct stg_info *info)
{
	memset(info, 0, sizeof(*info));
	info->format = d->ops->name;
	info->virtual_size = d->size;
	info->read_only = d->flags & STG_O_RDONLY;
	info->chain_depth = 1;
	return d->ops->get_info ? d->ops->get_info(d, info) : 0;
}

int stg_close(struct stg_dev *d)
{
	return stg_close_msg(d, NULL, 0);
}

int stg_close_msg(struct stg_dev *d, char *msg, size_t size)
{
	int r = 0;

	if (size)
		msg[0] = '\0';
	if (!d)
		return 0;
	if (d->ops) {
		stg_drain(d);
		d->last_error[0] = '\0';   /* (what the close itself says) */
		r = d->ops->close(d);
		if (size)
			snprintf(msg, size, "%s", d->last_error);
	}
	stg_engine_destroy(d->engine);
	if (d->event_fd >= 0)
		close(d->event_fd);
	free(d->path);
	free(dev_int(d));
	return r;
}
