/* storage/threads.h — a pool of worker threads that run blocking jobs (the
 * I/O engine's fallback where io_uring cannot be set up, as QEMU's
 * aio=threads).
 *
 * One owner thread submits jobs and takes the finished ones back; workers
 * only run jobs. Threads start on demand, one whenever a job arrives and no
 * worker is idle, up to the pool's maximum, and live until the pool is
 * destroyed. Workers block every signal (the VMM's signals stay with its own
 * threads). A child of fork() must not use a pool its parent made (the
 * workers are not in the child; a lock may be held).
 */
#ifndef STG_THREADS_H
#define STG_THREADS_H

#include <stdbool.h>

#include "util/err.h"

/* A job: embedded in the caller's own struct; owned by the caller, lent to
 * the pool from stg_pool_submit until stg_pool_take returns it. */
struct stg_job {
	struct stg_job *next;
	void (*run)(struct stg_job *job);   /* runs on a worker thread */
};

struct stg_pool;

/* A pool of up to @max_threads workers (none started yet). When @event_fd is
 * not -1 (an eventfd the caller owns), a finished job that finds no other
 * finished job waiting to be taken adds 1 to it, after the job is ready for
 * stg_pool_take (so after the event fd is read, one stg_pool_take gets every
 * job it signalled). Returns 0 or -errno with @err filled. */
int stg_pool_create(unsigned max_threads, int event_fd, struct stg_pool **out,
		    struct ut_err *err);

/* Hand @job to the pool. Returns 0, or -errno when no worker runs and none
 * could be started (the job is then not taken: the caller still owns it). */
int stg_pool_submit(struct stg_pool *p, struct stg_job *job);

/* The jobs finished so far, oldest first (a list linked by ->next), or NULL;
 * with @wait and none finished yet, blocks until one finishes (the caller
 * must have one submitted). */
struct stg_job *stg_pool_take(struct stg_pool *p, bool wait);

/* Workers started so far. */
unsigned stg_pool_threads(const struct stg_pool *p);

/* Stop and join the workers. Only with no job submitted and not taken. */
void stg_pool_destroy(struct stg_pool *p);

#endif
