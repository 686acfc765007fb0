/* storage/engine.h — the I/O engine: io_uring (liburing), with a synchronous
 * fallback used only where io_uring cannot be set up.
 *
 * Backends turn block requests into file I/O on host fds through an engine.
 * An engine op completes by calling its callback from stg_engine_reap().
 */
#ifndef STG_ENGINE_H
#define STG_ENGINE_H

#include <stdint.h>
#include <sys/uio.h>

#include "util/err.h"

struct stg_engine;

enum stg_eop { STG_EOP_READV, STG_EOP_WRITEV, STG_EOP_FSYNC, STG_EOP_FALLOCATE };

typedef void (*stg_eng_cb)(void *opaque, int result);

/* Create an engine with room for @depth ops in flight; completions signal
 * @event_fd (an eventfd owned by the caller). Returns 0 or -errno. */
int stg_engine_create(unsigned depth, int event_fd, struct stg_engine **out, struct ut_err *err);
void stg_engine_destroy(struct stg_engine *e);

/* Queue one op. readv/writev: @iov/@iovcnt at @off; fsync: fdatasync of @fd;
 * fallocate: @mode (FALLOC_FL_*) on [@off, @off+@len). Ops queued are sent to
 * the kernel at the next stg_engine_flush() (batched submission), in no
 * particular order; writes queued one after another where each starts at the
 * end of the one before (same fd) may be sent as one write of up to 1 MiB,
 * and then all of them fail if it fails. @cb runs from stg_engine_reap()
 * with the byte count or -errno. Returns 0 or -errno
 * (-EAGAIN: queue full; reap and retry). Short reads/writes are completed
 * internally (retried) before @cb runs; a read past EOF is zero-filled. */
int stg_engine_queue(struct stg_engine *e, enum stg_eop op, int fd, const struct iovec *iov,
		     int iovcnt, uint64_t off, uint64_t len, int mode, stg_eng_cb cb, void *opaque);

/* stg_engine_queue that makes room instead of failing with -EAGAIN: while
 * the queue is full it submits and reaps (running callbacks of finished
 * ops). Returns 0 or -errno. */
int stg_engine_queue_wait(struct stg_engine *e, enum stg_eop op, int fd, const struct iovec *iov,
			  int iovcnt, uint64_t off, uint64_t len, int mode, stg_eng_cb cb,
			  void *opaque);

/* Submit everything queued. Returns 0 or -errno. */
int stg_engine_flush(struct stg_engine *e);

/* Submit and reap until no op is queued or in flight (every callback has
 * run). Returns 0, or the -errno of a failed submission (ops may then still
 * be in flight). */
int stg_engine_drain(struct stg_engine *e);

/* Run callbacks of finished ops; with @wait, block until at least one finishes
 * (when any is in flight). Returns the number reaped or -errno. */
int stg_engine_reap(struct stg_engine *e, int wait);

/* Run the callbacks of ops the synchronous fallback finished at submission
 * (none with io_uring, whose completions arrive through the ring and its
 * event fd). For loops that must not keep taking new ring completions.
 * Returns the number reaped. */
int stg_engine_reap_sync(struct stg_engine *e);

/* Ops queued or in flight. */
unsigned stg_engine_inflight(const struct stg_engine *e);

/* Operations sent to the kernel so far (io_uring submission entries: merged
 * writes count once, continuations of short transfers again); 0 for the
 * synchronous fallback. For tests and statistics. */
unsigned long long stg_engine_sqes(const struct stg_engine *e);

/* "io_uring" or "sync". */
const char *stg_engine_name(const struct stg_engine *e);

#endif
