/* bench/boot/timerun.c — run one command, bounded, and report its wall time,
 * exit status and peak RSS.
 *
 *   timerun [-t SECONDS] [-o FILE] [-e FILE] -- COMMAND [ARG]...
 *
 * The clock runs from just before fork() to the moment wait4() reaps the
 * child (CLOCK_MONOTONIC), so process start, dynamic linking, VM setup, the
 * guest's run and the VMM's teardown are all inside the measurement.  The
 * child's stdin is /dev/null; -o/-e send its stdout/stderr to files.
 *
 * One line on stdout:
 *   wall_us=N status=S maxrss_kb=K user_us=U sys_us=Y
 * S is the exit code, "sig:N" if a signal ended the child, or "timeout" if it
 * was still running after SECONDS (default 30) and was killed with SIGKILL.
 * maxrss_kb is ru_maxrss of the reaped child (wait4), i.e. its peak RSS;
 * user_us/sys_us its CPU time (all of its threads).
 * timerun exits 0 when it could start the command (whatever the command's
 * status; a failed exec shows as status=127), 2 on a usage or setup error.
 */
#define _GNU_SOURCE
#include "../common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}


int main(int argc, char **argv)
{
	const char *out = NULL, *errf = NULL;
	double timeout_s = 30;
	sigset_t chld, old;
	struct rusage ru;
	long long t0, t1, deadline;
	int c, st = 0, timed_out = 0;
	pid_t pid, w;

	while ((c = getopt(argc, argv, "+t:o:e:")) != -1) {
		switch (c) {
		case 't': timeout_s = atof(optarg); break;
		case 'o': out = optarg; break;
		case 'e': errf = optarg; break;
		default:
			fprintf(stderr, "usage: timerun [-t SECONDS] [-o FILE] [-e FILE] -- CMD [ARG]...\n");
			return 2;
		}
	}
	if (optind >= argc || timeout_s <= 0) {
		fprintf(stderr, "usage: timerun [-t SECONDS] [-o FILE] [-e FILE] -- CMD [ARG]...\n");
		return 2;
	}

	/* SIGCHLD stays blocked and is taken with sigtimedwait(): the wait is
	 * bounded by the deadline without a handler or a polling loop. */
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &old);

	t0 = now_ns();
	pid = fork();
	if (pid < 0) {
		perror("timerun: fork");
		return 2;
	}
	if (pid == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (bench_redirect(0, "/dev/null", O_RDONLY) ||
		    (out && bench_redirect(1, out, O_WRONLY | O_CREAT | O_TRUNC)) ||
		    (errf && bench_redirect(2, errf, O_WRONLY | O_CREAT | O_TRUNC))) {
			perror("timerun: redirect");
			_exit(126);
		}
		execvp(argv[optind], argv + optind);
		perror("timerun: exec");
		_exit(127);
	}

	deadline = t0 + (long long)(timeout_s * 1e9);
	for (;;) {
		w = wait4(pid, &st, WNOHANG, &ru);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			perror("timerun: wait4");
			return 2;
		}
		long long left = deadline - now_ns();
		if (left <= 0) {
			timed_out = 1;
			kill(pid, SIGKILL);
			/* SIGKILL cannot be ignored; this wait ends when the child's
			 * exit completes (the caller also wraps us in timeout(1)). */
			while ((w = wait4(pid, &st, 0, &ru)) < 0 && errno == EINTR)
				;
			break;
		}
		struct timespec ts = { left / 1000000000LL, left % 1000000000LL };
		sigtimedwait(&chld, NULL, &ts);
	}
	t1 = now_ns();

	printf("wall_us=%lld status=", (t1 - t0 + 500) / 1000);
	if (timed_out)
		printf("timeout");
	else if (WIFEXITED(st))
		printf("%d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		printf("sig:%d", WTERMSIG(st));
	else
		printf("unknown");
	printf(" maxrss_kb=%ld user_us=%lld sys_us=%lld\n", ru.ru_maxrss,
	       (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
	       (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec);
	return 0;
}
