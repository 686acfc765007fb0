/* tests/unit/test-stg-threads.c — the worker-thread pool (storage/threads.c):
 * jobs run concurrently (8 jobs that each wait for all 8 to have started
 * finish only if 8 workers run them at once), finish in any order (released
 * in reverse, taken back in reverse), each is taken back once, a job that
 * finishes while none waits to be taken signals the event fd, workers start only as needed (one job at a time
 * keeps one worker) and never more than the maximum, and workers block
 * signals. Every wait is bounded (2 s). */
#include "storage/threads.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

#define NJ 8

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int started, released = -1;   /* jobs with index >= released may finish */

struct tjob {
	struct stg_job job;   /* first */
	int idx;
	int all_started;      /* saw all NJ jobs started (within the bound) */
	int sigusr1_blocked;
	int runs;
};

static void deadline(struct timespec *t)
{
	clock_gettime(CLOCK_REALTIME, t);
	t->tv_sec += 2;
}

static void run(struct stg_job *j)
{
	struct tjob *t = (struct tjob *)j;
	struct timespec dl;
	sigset_t cur;
	int r = 0;

	pthread_sigmask(SIG_SETMASK, NULL, &cur);
	t->sigusr1_blocked = sigismember(&cur, SIGUSR1) == 1;
	t->runs++;
	deadline(&dl);
	pthread_mutex_lock(&mu);
	started++;
	pthread_cond_broadcast(&cv);
	while (started < NJ && r != ETIMEDOUT)
		r = pthread_cond_timedwait(&cv, &mu, &dl);
	t->all_started = started >= NJ;
	/* then wait to be released: highest index first */
	r = 0;
	while (t->idx < released && r != ETIMEDOUT)
		r = pthread_cond_timedwait(&cv, &mu, &dl);
	pthread_mutex_unlock(&mu);
}

static void quick(struct stg_job *j)
{
	((struct tjob *)j)->runs++;
}

int main(void)
{
	struct tjob jobs[NJ];
	struct stg_pool *p = NULL;
	struct ut_err err;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), order[NJ], got = 0;
	uint64_t v = 0;

	CHECK(efd >= 0);
	CHECK(stg_pool_create(NJ, efd, &p, &err) == 0);
	if (!p)
		return 1;
	CHECK(stg_pool_threads(p) == 0);

	/* one job at a time: one worker is enough */
	for (int i = 0; i < 4; i++) {
		struct stg_job *d;

		memset(&jobs[0], 0, sizeof(jobs[0]));
		jobs[0].job.run = quick;
		CHECK(stg_pool_submit(p, &jobs[0].job) == 0);
		d = stg_pool_take(p, true);
		CHECK(d == &jobs[0].job && d->next == NULL && jobs[0].runs == 1);
	}
	CHECK(stg_pool_threads(p) == 1);
	{	/* the 4 signals (the last may come just after its job) */
		uint64_t sum = 0;

		for (int tries = 0; sum < 4 && tries < 100; tries++) {
			struct pollfd pf = { .fd = efd, .events = POLLIN };

			if (poll(&pf, 1, 20) == 1 && read(efd, &v, sizeof(v)) == sizeof(v))
				sum += v;
		}
		CHECK(sum == 4);
	}

	/* NJ at once: concurrent; released in reverse order */
	pthread_mutex_lock(&mu);
	released = NJ;   /* none may finish yet */
	pthread_mutex_unlock(&mu);
	for (int i = 0; i < NJ; i++) {
		memset(&jobs[i], 0, sizeof(jobs[i]));
		jobs[i].job.run = run;
		jobs[i].idx = i;
		CHECK(stg_pool_submit(p, &jobs[i].job) == 0);
	}
	for (int k = NJ - 1; k >= 0; k--) {
		struct timespec t0, t1;
		int n = 0;

		pthread_mutex_lock(&mu);
		released = k;   /* job k may finish now */
		pthread_cond_broadcast(&cv);
		pthread_mutex_unlock(&mu);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		do {   /* wait (bounded) for job k */
			struct pollfd pf = { .fd = efd, .events = POLLIN };
			struct stg_job *d;

			if (poll(&pf, 1, 2000) != 1)
				break;
			if (read(efd, &v, sizeof(v)) != sizeof(v))
				break;
			for (d = stg_pool_take(p, false); d; d = d->next)
				if (got < NJ)
					order[got++] = ((struct tjob *)d)->idx, n++;
			clock_gettime(CLOCK_MONOTONIC, &t1);
		} while (!n && t1.tv_sec - t0.tv_sec < 3);
	}
	CHECK(got == NJ);
	for (int i = 0; i < got; i++)
		CHECK(order[i] == NJ - 1 - i);
	for (int i = 0; i < NJ; i++)
		CHECK(jobs[i].runs == 1 && jobs[i].all_started && jobs[i].sigusr1_blocked);
	CHECK(stg_pool_threads(p) == NJ);

	/* more jobs than workers: the maximum holds, all run */
	pthread_mutex_lock(&mu);
	started = 0;
	released = -1;
	pthread_mutex_unlock(&mu);
	{
		static struct tjob many[3 * NJ];
		int taken = 0;

		for (int i = 0; i < 3 * NJ; i++) {
			many[i].job.run = quick;
			CHECK(stg_pool_submit(p, &many[i].job) == 0);
		}
		for (int tries = 0; taken < 3 * NJ && tries < 3 * NJ; tries++)
			for (struct stg_job *d = stg_pool_take(p, true); d; d = d->next)
				taken++;
		CHECK(taken == 3 * NJ);
		for (int i = 0; i < 3 * NJ; i++)
			CHECK(many[i].runs == 1);
	}
	CHECK(stg_pool_threads(p) == NJ);
	stg_pool_destroy(p);
	close(efd);
	if (failures) {
		fprintf(stderr, "test-stg-threads: %d check(s) failed\n", failures);
		return 1;
	}
	printf("test-stg-threads: ok\n");
	return 0;
}
