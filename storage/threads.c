/* storage/threads.c — the worker-thread pool. See threads.h.
 *
 * Two FIFOs, each under its own mutex: jobs waiting for a worker (work,
 * under lock) and jobs finished (done, under dlock; a worker takes lock
 * then dlock, never the other way). A worker sleeps on work_cv while there is
 * no work; the owner sleeps on done_cv in stg_pool_take(wait), and only
 * then is done_cv signalled. A finished job is on the done list before the
 * event fd is signalled, so an owner that drains the event fd and then
 * takes the done list never misses one; the event fd is signalled (outside the
 * lock) only by the job that made the done list non-empty: the jobs that
 * join it later are taken with it. A worker counts as idle from its
 * creation and from the moment its finished job is on the done list until
 * it takes the next job, so a job submitted in between does not start
 * another worker, nor wake a sleeping one (only jobs beyond what the idle
 * workers that are not asleep will take do).
 */
#include "storage/threads.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define STG_POOL_STACK (256u << 10)   /* a worker only makes system calls */

struct stg_pool {
	pthread_mutex_t lock;          /* the work list, idle, nthreads */
	pthread_mutex_t dlock;         /* the done list, owner_waits */
	pthread_cond_t work_cv, done_cv;
	struct stg_job *work, **work_tail;
	struct stg_job *done, **done_tail;
	unsigned max, nthreads, idle;
	unsigned queued;               /* jobs on the work list */
	unsigned sleeping;             /* idle workers inside their wait */
	bool owner_waits;              /* the owner sleeps on done_cv */
	bool stop;
	int event_fd;
	pthread_t *tids;
};

static void *worker(void *arg)
{
	struct stg_pool *p = arg;
	uint64_t one = 1;
	ssize_t w;
	bool first, waits;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct stg_job *j;

		/* counted idle from spawn() or from the push below */
		while (!p->work && !p->stop) {
			p->sleeping++;
			pthread_cond_wait(&p->work_cv, &p->lock);
			p->sleeping--;
		}
		if (!p->work)
			break;   /* stop, nothing left */
		j = p->work;
		p->queued--;
		p->idle--;
		p->work = j->next;
		if (!p->work)
			p->work_tail = &p->work;
		pthread_mutex_unlock(&p->lock);

		j->run(j);

		pthread_mutex_lock(&p->lock);
		/* idle again from the moment the owner can see the job done,
		 * so a job it submits next finds this worker counted */
		p->idle++;
		pthread_mutex_lock(&p->dlock);
		first = !p->done;
		j->next = NULL;
		*p->done_tail = j;
		p->done_tail = &j->next;
		waits = p->owner_waits;
		pthread_mutex_unlock(&p->dlock);
		if (waits || (first && p->event_fd >= 0)) {
			/* outside the locks (the other workers and the owner go
			 * on); the owner, seen waiting under dlock, is inside
			 * its wait. An eventfd write of 1 fails only at its
			 * limit, when it is readable anyway */
			pthread_mutex_unlock(&p->lock);
			if (waits)
				pthread_cond_signal(&p->done_cv);
			if (first && p->event_fd >= 0) {
				w = write(p->event_fd, &one, sizeof(one));
				(void)w;
			}
			pthread_mutex_lock(&p->lock);
		}
	}
	p->idle--;
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int stg_pool_create(unsigned max_threads, int event_fd, struct stg_pool **out,
		    struct ut_err *err)
{
	struct stg_pool *p = calloc(1, sizeof(*p));

	*out = NULL;
	if (p)
		p->tids = calloc(max_threads ? max_threads : 1, sizeof(*p->tids));
	if (!p || !p->tids) {
		if (p)
			free(p->tids);
		free(p);
		return ut_errf(err, -ENOMEM, "out of memory for the I/O threads");
	}
	p->max = max_threads ? max_threads : 1;
	p->event_fd = event_fd;
	p->work_tail = &p->work;
	p->done_tail = &p->done;
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->dlock, NULL);
	pthread_cond_init(&p->work_cv, NULL);
	pthread_cond_init(&p->done_cv, NULL);
	*out = p;
	return 0;
}

/* Start one more worker, with every signal blocked. Called with the lock
 * held. 0 or -errno. */
static int spawn(struct stg_pool *p)
{
	sigset_t all, old;
	pthread_attr_t a;
	int r;

	if (pthread_attr_init(&a))
		return -ENOMEM;
	pthread_attr_setstacksize(&a, STG_POOL_STACK);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&p->tids[p->nthreads], &a, worker, p);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&a);
	if (r)
		return -r;
	p->nthreads++;
	p->idle++;   /* it takes a job as soon as it runs */
	return 0;
}

int stg_pool_submit(struct stg_pool *p, struct stg_job *job)
{
	int r = 0;

	pthread_mutex_lock(&p->lock);
	/* a worker for every queued job: the idle ones (woken or about to
	 * be) each take one */
	if (p->queued + 1 > p->idle && p->nthreads < p->max) {
		r = spawn(p);
		if (r && p->nthreads)
			r = 0;   /* the running workers will get to it */
	}
	if (r == 0) {
		job->next = NULL;
		*p->work_tail = job;
		p->work_tail = &job->next;
		p->queued++;
		/* wake a sleeper only for a job the idle workers that are
		 * not asleep (finishing a job, about to loop) leave */
		if (p->sleeping && p->queued > p->idle - p->sleeping)
			pthread_cond_signal(&p->work_cv);
	}
	pthread_mutex_unlock(&p->lock);
	return r;
}

struct stg_job *stg_pool_take(struct stg_pool *p, bool wait)
{
	struct stg_job *j;

	pthread_mutex_lock(&p->dlock);
	while (wait && !p->done) {
		p->owner_waits = true;
		pthread_cond_wait(&p->done_cv, &p->dlock);
		p->owner_waits = false;
	}
	j = p->done;
	p->done = NULL;
	p->done_tail = &p->done;
	pthread_mutex_unlock(&p->dlock);
	return j;
}

unsigned stg_pool_threads(const struct stg_pool *p)
{
	return p->nthreads;
}

void stg_pool_destroy(struct stg_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->work_cv);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->tids[i], NULL);
	pthread_cond_destroy(&p->work_cv);
	pthread_cond_destroy(&p->done_cv);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->dlock);
	free(p->tids);
	free(p);
}
