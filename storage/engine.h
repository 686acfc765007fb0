/* storage/engine.h — the I/O engine: io_uring (liburing); where io_uring
 * cannot be set up, or when asked for, a pool of worker threads making the
 * same calls blocking (QEMU's aio=threads; storage/threads.c); and, only
 * when asked for or when not even one worker thread can be started,
 * synchronous calls on the caller's thread.
 *
 * Backends turn block requests into file I/O on host fds through an engine.
 * An engine op completes by calling its callback from stg_engine_reap().
 */
#ifndef STG_ENGINE_H
#define STG_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "util/err.h"

struct stg_engine;

enum stg_eop { STG_EOP_READV, STG_EOP_WRITEV, STG_EOP_FSYNC, STG_EOP_FALLOCATE };

/* Which engine: AUTO is io_uring, or the threads where io_uring cannot be
 * set up or the environment has COWVM_NO_IO_URING (tests of the fallback). */
enum stg_ekind { STG_ENG_AUTO = 0, STG_ENG_THREADS, STG_ENG_SYNC };

typedef void (*stg_eng_cb)(void *opaque, int result);

/* Create an engine of @kind with room for @depth ops in flight (threads: up
 * to min(@depth, 64) workers, started as needed); completions signal
 * @event_fd (an eventfd owned by the caller, or -1). Returns 0 or -errno. */
int stg_engine_create(unsigned depth, int event_fd, enum stg_ekind kind, struct stg_engine **out,
		      struct ut_err *err);
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

/* io_uring: make @fd a registered (fixed) file of the ring, so ops on it
 * skip the kernel's per-op file lookup and reference count (one of up to 8
 * per engine; when none is free, or on the other engines, nothing changes).
 * @fd must stay open until stg_engine_unregister_fd(@fd), which every
 * caller of this must call before closing it: a slot names the file, not
 * the number, and a number reused for another file must not reach it. */
void stg_engine_register_fd(struct stg_engine *e, int fd);
void stg_engine_unregister_fd(struct stg_engine *e, int fd);
/* Whether @fd holds a registered slot of @e (false on the other engines). */
bool stg_engine_fd_registered(const struct stg_engine *e, int fd);

/* Submit everything queued. Returns 0 or -errno. */
int stg_engine_flush(struct stg_engine *e);

/* Submit and reap until no op is queued or in flight (every callback has
 * run). Returns 0, or the -errno of a failed submission (ops may then still
 * be in flight). */
int stg_engine_drain(struct stg_engine *e);

/* Run callbacks of finished ops; with @wait, block until at least one finishes
 * (when any is in flight). Returns the number reaped or -errno. */
int stg_engine_reap(struct stg_engine *e, int wait);

/* Run the callbacks of ops the synchronous engine finished at submission
 * (none with io_uring or the threads, whose completions arrive through the
 * ring or the pool and the event fd). For loops that must not keep taking new ring completions.
 * Returns the number reaped. */
int stg_engine_reap_sync(struct stg_engine *e);

/* Ops queued or in flight. */
unsigned stg_engine_inflight(const struct stg_engine *e);

/* Operations sent to the kernel so far (io_uring submission entries: merged
 * writes count once, continuations of short transfers again); 0 for the
 * synchronous fallback. For tests and statistics. */
unsigned long long stg_engine_sqes(const struct stg_engine *e);

/* "io_uring", "threads" or "sync". */
const char *stg_engine_name(const struct stg_engine *e);

#endif
