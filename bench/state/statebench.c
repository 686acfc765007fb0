/* bench/state/statebench.c — timing helper for bench/state/run.sh.
 *
 * Every wait is bounded (-t SECONDS, default 60) and every time is taken with
 * CLOCK_MONOTONIC in this process.  The guest's serial log LOG is followed
 * with inotify on its directory (keep LOG in a directory of its own: every
 * write to any file there wakes the follower); a "tick N" line counts when
 * its '\n' has been read.
 *
 *   statebench wait-tick -l LOG -p PID [-t S]
 *       Wait until LOG has a tick line (boot and fill done) while PID lives.
 *       Prints: ms=T tick=N
 *
 *   statebench save-signal -l LOG -p PID -f FILE [-a LEAD_MS] [-t S]
 *       Watch 3 new tick lines to learn when the guest's ticks are due (see
 *       next_due), sleep until LEAD_MS (default 2) before the next one is due,
 *       send SIGUSR2 to PID (pidfd_send_signal) and wait for PID to exit.
 *       Prints: exit_ms=T file_ms=F last_tick=N rem_ms=R cpu_ms=C clk_rem_ms=K
 *       exit_ms: signal -> process gone; file_ms: signal -> FILE renamed into
 *       place (-1 if not seen); last_tick: last tick line before the pause;
 *       rem_ms: the guest time that was left at the signal until tick
 *       last_tick+1 was due (an overestimate by the time the VMM took to
 *       stop the vCPUs after the signal); cpu_ms: CPU time PID used from
 *       the signal to FILE's rename (10 ms resolution); clk_rem_ms: the guest
 *       time that was left until tick last_tick+1 was due when cowvm read the
 *       guest clock it saved, i.e. exactly what the restored guest waits
 *       (from the CLOCK record's host realtime; -1e9 if the file has none).
 *
 *   statebench save-qmp -l LOG -q SOCK -f FILE [-p PID] [-b BYTES_PER_S] [-a LEAD_MS] [-t S]
 *       The same for QEMU over QMP: qmp_capabilities, migrate-set-capabilities
 *       events=on, migrate-set-parameters max-bandwidth=B (default 1 TiB/s,
 *       as libvirt does for a save to file), then at the same phase `stop`,
 *       `migrate` uri "exec:cat > FILE", wait for the MIGRATION event
 *       "completed" and for the cat to exit, query-migrate (until its
 *       total-time is set), then `quit`.
 *       Prints: save_ms=T file_ms=F stop_ms=S migrate_ms=M last_tick=N rem_ms=R
 *               total_time_ms=Q downtime_ms=D cpu_ms=C
 *       save_ms: `stop` sent -> completed; file_ms: `stop` sent -> the
 *       `cat > FILE` child exited (-1 without -p); stop_ms: `stop` sent ->
 *       its return; migrate_ms: `migrate` sent -> completed; Q, D: QEMU's
 *       own query-migrate total-time and downtime; C: CPU time of QEMU (PID)
 *       and its children (cat, once QEMU has reaped it) from `stop` to
 *       completed, -1 without -p.
 *
 *   statebench restore -l LOG [-o OUT] [-e ERR] [-t S] -- COMMAND [ARG]...
 *       t0, fork, exec COMMAND (stdin /dev/null, stdout/stderr to OUT/ERR),
 *       wait for the first tick line in LOG (t1), then SIGTERM the child
 *       (SIGKILL after 5 s) and reap it.  SIGTERM/SIGINT/SIGHUP to this
 *       helper SIGKILL the child first.
 *       Prints: tick_ms=T first_tick=N
 *
 * Exit status 0 on success; 1 if the wait failed (timeout, the VMM died, a
 * QMP error; a message on stderr); 2 on a usage or setup error.
 */
#define _GNU_SOURCE
#include "../common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 100.0

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* CLOCK_REALTIME - CLOCK_MONOTONIC, in ms. */
static double realtime_offset_ms(void)
{
	struct timespec r;
	double m = now_ms();

	clock_gettime(CLOCK_REALTIME, &r);
	return r.tv_sec * 1e3 + r.tv_nsec / 1e6 - m;
}

static void fail(int st, const char *fmt, ...)
{
	va_list ap;

	fputs("statebench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(st);
}

static int pidfd_open_(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int pidfd_signal(int pfd, int sig)
{
	return (int)syscall(SYS_pidfd_send_signal, pfd, sig, NULL, 0);
}

/* CPU time of PID and of its reaped children (utime + stime + cutime +
 * cstime from /proc/PID/stat, clock-tick resolution), in ms; -1 if gone. */
static double cpu_ms(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long v[4];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	p = strrchr(buf, ')');   /* fields after "pid (comm)" */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %llu %llu",
			 &v[0], &v[1], &v[2], &v[3]) != 4)
		return -1;
	return (double)(v[0] + v[1] + v[2] + v[3]) * 1e3 / (double)sysconf(_SC_CLK_TCK);
}

/* ---- following the serial log ---- */

struct follow {
	const char *path;
	char *file_name;        /* basename of the watched state file, or NULL */
	int ino, fd;
	char line[256];
	size_t len;
	long last_tick;         /* -1: none yet */
	double last_tick_ms;    /* when its line was read */
	int nticks;             /* tick lines read so far */
	double phase_ms;        /* min over tick lines N of (read time - N * 100 ms) */
	double file_ms;         /* when file_name was renamed into place, or -1 */
	pid_t cpu_pid;          /* whose CPU time to take then (0: none) */
	double file_cpu_ms;
};

static void follow_init(struct follow *f, const char *log, const char *file)
{
	char *d1 = strdup(log), *d2 = file ? strdup(file) : NULL;

	memset(f, 0, sizeof(*f));
	f->path = log;
	f->fd = -1;
	f->last_tick = -1;
	f->file_ms = -1;
	f->phase_ms = 1e300;
	f->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (f->ino < 0 || !d1)
		fail(2, "inotify_init1: %s", strerror(errno));
	if (inotify_add_watch(f->ino, dirname(d1), IN_MODIFY | IN_CREATE | IN_CLOSE_WRITE) < 0)
		fail(2, "inotify on the directory of %s: %s", log, strerror(errno));
	if (file) {
		char *d3 = strdup(file);

		f->file_name = strdup(basename(d3));
		/* the same directory as LOG would be noisy: run.sh keeps them apart */
		if (inotify_add_watch(f->ino, dirname(d2), IN_MOVED_TO | IN_CLOSE_WRITE) < 0)
			fail(2, "inotify on the directory of %s: %s", file, strerror(errno));
		free(d3);
	}
	free(d1);
	free(d2);
}

/* Read what is new in the log; returns the number of new tick lines. */
static int follow_scan(struct follow *f)
{
	char buf[65536];
	int n_new = 0;

	if (f->fd < 0) {
		f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
		if (f->fd < 0)
			return 0;
	}
	for (;;) {
		ssize_t n = read(f->fd, buf, sizeof(buf));
		double t = now_ms();

		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			char c = buf[i];
			char *end;
			long v;

			if (c != '\n') {
				if (f->len < sizeof(f->line) - 1)
					f->line[f->len++] = c;
				continue;
			}
			f->line[f->len] = 0;
			if (!strncmp(f->line, "tick ", 5) && f->line[5] >= '0' && f->line[5] <= '9') {
				v = strtol(f->line + 5, &end, 10);
				if (!*end) {
					f->last_tick = v;
					f->last_tick_ms = t;
					if (t - v * TICK_MS < f->phase_ms)
						f->phase_ms = t - v * TICK_MS;
					f->nticks++;
					n_new++;
				}
			}
			f->len = 0;
		}
	}
	return n_new;
}

/* Drain inotify events; note the state file's appearance. */
static void follow_events(struct follow *f)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	while ((n = read(f->ino, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *e = (struct inotify_event *)p;

			if (f->file_name && f->file_ms < 0 && e->len &&
			    (e->mask & (IN_MOVED_TO | IN_CLOSE_WRITE)) && !strcmp(e->name, f->file_name)) {
				f->file_ms = now_ms();
				f->file_cpu_ms = f->cpu_pid ? cpu_ms(f->cpu_pid) : -1;
			}
			p += sizeof(*e) + e->len;
		}
	}
}

/* Wait until DEADLINE for log activity, or for EXTRA (an fd, -1 for none)
 * to become readable.  Returns the number of new tick lines; *extra_ready
 * is set when EXTRA is readable. */
static int follow_wait(struct follow *f, double deadline, int extra, int *extra_ready)
{
	struct pollfd p[2] = { { .fd = f->ino, .events = POLLIN }, { .fd = extra, .events = POLLIN } };
	double left = deadline - now_ms();
	int ms = left <= 0 ? 0 : (int)left + 1;

	if (extra_ready)
		*extra_ready = 0;
	if (poll(p, extra >= 0 ? 2 : 1, ms) < 0 && errno != EINTR)
		fail(2, "poll: %s", strerror(errno));
	follow_events(f);
	if (extra >= 0 && (p[1].revents & (POLLIN | POLLHUP)) && extra_ready)
		*extra_ready = 1;
	return follow_scan(f);
}

/* Watch PHASE_TICKS new tick lines (bounded), then return the host time
 * LEAD_MS before the next tick is due.  The guest prints tick N at t0 + N *
 * 100 ms of its clock; a line is read at least as late as that, so the
 * smallest (read time - N * 100 ms) is the best estimate of t0 in host time. */
#define PHASE_TICKS 3
static double next_due(struct follow *f, double lead_ms, double deadline, int pidfd, const char *who)
{
	int dead, n = 0;
	double t;

	follow_scan(f);
	while (n < PHASE_TICKS) {
		if (now_ms() > deadline)
			fail(1, "%s: no new tick line in %s before the timeout", who, f->path);
		n += follow_wait(f, deadline, pidfd, &dead);
		if (dead)
			fail(1, "%s: the VMM exited while waiting for a tick in %s", who, f->path);
	}
	t = f->phase_ms + (f->last_tick + 1) * TICK_MS - lead_ms;
	while (t < now_ms() + 1)
		t += TICK_MS;
	return t;
}

/* Host time at which tick LAST+1 was due: guest time left at T. */
static double rem_ms(const struct follow *f, double t)
{
	return f->phase_ms + (f->last_tick + 1) * TICK_MS - t;
}

/* Sleep until T while following the log; the last 3 ms are spent spinning,
 * so a wake-up late by the scheduler does not move the moment. */
static void follow_until(struct follow *f, double t)
{
	while (now_ms() < t - 3)
		follow_wait(f, t - 3, -1, NULL);
	while (now_ms() < t)
		;
}

/* ---- QMP (line-delimited JSON over a UNIX socket) ---- */

struct qmp {
	int fd;
	char buf[1 << 16];
	size_t len;
	char line[1 << 16];
};

/* Next line (without CR/LF) into q->line, waiting until DEADLINE. */
static void qmp_line(struct qmp *q, double deadline)
{
	for (;;) {
		char *nl = memchr(q->buf, '\n', q->len);

		if (nl) {
			size_t n = (size_t)(nl - q->buf);

			memcpy(q->line, q->buf, n);
			q->line[n && q->line[n - 1] == '\r' ? n - 1 : n] = 0;
			memmove(q->buf, nl + 1, q->len - n - 1);
			q->len -= n + 1;
			return;
		}
		if (q->len == sizeof(q->buf))
			fail(1, "QMP: line too long");
		struct pollfd p = { .fd = q->fd, .events = POLLIN };
		double left = deadline - now_ms();

		if (left <= 0)
			fail(1, "QMP: no answer before the timeout");
		if (poll(&p, 1, (int)left + 1) < 0 && errno != EINTR)
			fail(2, "poll: %s", strerror(errno));
		if (!(p.revents & (POLLIN | POLLHUP)))
			continue;
		ssize_t n = read(q->fd, q->buf + q->len, sizeof(q->buf) - q->len);

		if (n <= 0)
			fail(1, "QMP: connection closed");
		q->len += (size_t)n;
	}
}

/* Send CMD; return at its "return" (events before it are skipped, but an
 * event line containing WATCH sets *seen).  Dies on "error". */
static void qmp_cmd(struct qmp *q, const char *cmd, double deadline, const char *watch, int *seen)
{
	size_t n = strlen(cmd);

	if (write(q->fd, cmd, n) != (ssize_t)n)
		fail(1, "QMP: write failed: %s", strerror(errno));
	for (;;) {
		qmp_line(q, deadline);
		if (strstr(q->line, "\"event\"")) {
			if (watch && strstr(q->line, watch))
				*seen = 1;
			continue;
		}
		if (strstr(q->line, "\"error\""))
			fail(1, "QMP: %s -> %s", cmd, q->line);
		if (strstr(q->line, "\"return\""))
			return;
	}
}

static void qmp_connect(struct qmp *q, const char *path, double deadline)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	if (strlen(path) >= sizeof(a.sun_path))
		fail(2, "QMP socket path too long: %s", path);
	strcpy(a.sun_path, path);
	q->len = 0;
	for (;;) {
		q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (q->fd < 0)
			fail(2, "socket: %s", strerror(errno));
		if (!connect(q->fd, (struct sockaddr *)&a, sizeof(a)))
			break;
		close(q->fd);
		if (now_ms() > deadline)
			fail(1, "QMP: cannot connect to %s: %s", path, strerror(errno));
		usleep(1000);
	}
	qmp_line(q, deadline);   /* greeting */
	if (!strstr(q->line, "\"QMP\""))
		fail(1, "QMP: unexpected greeting: %s", q->line);
	qmp_cmd(q, "{\"execute\":\"qmp_capabilities\"}\n", deadline, NULL, NULL);
}

/* A child process of PID (forked by any of its threads), or 0. */
static pid_t child_of(pid_t pid)
{
	char path[300];
	struct dirent *e;
	pid_t c = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	while (d && !c && (e = readdir(d))) {
		FILE *f;
		int v;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/children", (int)pid, e->d_name);
		f = fopen(path, "r");
		if (f && fscanf(f, "%d", &v) == 1)
			c = (pid_t)v;
		if (f)
			fclose(f);
	}
	if (d)
		closedir(d);
	return c;
}

/* From a cowvm state file (core/state.h): the host CLOCK_REALTIME, in ms, at
 * which the saved guest clock was read (kvm_clock_data.realtime, present when
 * flags has KVM_CLOCK_REALTIME); the restored guest's clock starts from that
 * moment's value.  -1 if not available. */
static double state_clock_realtime_ms(const char *path)
{
	unsigned char h[64], sec[16], clk[24];
	unsigned long long ram_off, off, len;
	double r = -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	if (pread(fd, h, sizeof(h), 0) != sizeof(h) || memcmp(h, "COWVMSTA", 8))
		goto out;
	memcpy(&ram_off, h + 24, 8);   /* little-endian host, as the file */
	for (off = 64; off + 16 <= ram_off; off += 16 + len) {
		unsigned int type;

		if (pread(fd, sec, sizeof(sec), (off_t)off) != sizeof(sec))
			break;
		memcpy(&type, sec, 4);
		memcpy(&len, sec + 8, 8);
		if (type == 0)
			break;
		if (type == 5 && len >= sizeof(clk) &&
		    pread(fd, clk, sizeof(clk), (off_t)off + 16) == sizeof(clk)) {
			unsigned int flags;
			unsigned long long rt;

			memcpy(&flags, clk + 8, 4);
			memcpy(&rt, clk + 16, 8);
			if (flags & (1u << 2))   /* KVM_CLOCK_REALTIME */
				r = (double)rt / 1e6;
			break;
		}
	}
out:
	close(fd);
	return r;
}

static long json_num(const char *s, const char *key)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "\"%s\":", key);
	p = strstr(s, k);
	if (!p)
		return -1;
	p += strlen(k);
	while (*p == ' ')
		p++;
	return strtol(p, NULL, 10);
}

/* ---- commands ---- */

struct opts {
	const char *log, *file, *sock, *out, *err;
	pid_t pid;
	double lead_ms, tmo_s;
	long long bw;
};

static void cmd_wait_tick(const struct opts *o)
{
	struct follow f;
	double t0 = now_ms(), deadline = t0 + o->tmo_s * 1e3;
	int pfd = pidfd_open_(o->pid), dead;

	if (pfd < 0)
		fail(2, "pidfd_open %d: %s", (int)o->pid, strerror(errno));
	follow_init(&f, o->log, NULL);
	follow_scan(&f);
	while (f.nticks == 0) {
		if (now_ms() > deadline)
			fail(1, "wait-tick: no tick line in %s after %.0f s", o->log, o->tmo_s);
		follow_wait(&f, deadline, pfd, &dead);
		if (dead && follow_scan(&f) == 0 && f.nticks == 0)
			fail(1, "wait-tick: the VMM exited before a tick line appeared in %s", o->log);
	}
	printf("ms=%.3f tick=%ld\n", f.last_tick_ms - t0, f.last_tick);
}

static void cmd_save_signal(const struct opts *o)
{
	struct follow f;
	double deadline = now_ms() + o->tmo_s * 1e3, ts, te = -1, cpu0, clk_rt;
	double rt_off = realtime_offset_ms();
	int pfd = pidfd_open_(o->pid), dead;

	if (pfd < 0)
		fail(2, "pidfd_open %d: %s", (int)o->pid, strerror(errno));
	follow_init(&f, o->log, o->file);
	f.cpu_pid = o->pid;
	follow_until(&f, next_due(&f, o->lead_ms, deadline, pfd, "save-signal"));
	cpu0 = cpu_ms(o->pid);
	ts = now_ms();
	if (pidfd_signal(pfd, SIGUSR2) < 0)
		fail(1, "save-signal: SIGUSR2 to %d: %s", (int)o->pid, strerror(errno));
	while (te < 0) {
		if (now_ms() > deadline)
			fail(1, "save-signal: process %d still running at the timeout", (int)o->pid);
		follow_wait(&f, deadline, pfd, &dead);
		if (dead)
			te = now_ms();
	}
	follow_events(&f);
	follow_scan(&f);
	clk_rt = state_clock_realtime_ms(o->file);
	printf("exit_ms=%.3f file_ms=%.3f last_tick=%ld rem_ms=%.3f cpu_ms=%.0f clk_rem_ms=%.3f\n",
	       te - ts, f.file_ms < 0 ? -1 : f.file_ms - ts, f.last_tick, rem_ms(&f, ts),
	       cpu0 < 0 || f.file_cpu_ms < 0 ? -1 : f.file_cpu_ms - cpu0,
	       clk_rt < 0 ? -1e9 : rem_ms(&f, clk_rt - rt_off));
}

static void cmd_save_qmp(const struct opts *o)
{
	struct follow f;
	struct qmp *q = calloc(1, sizeof(*q));
	double deadline = now_ms() + o->tmo_s * 1e3, ts, t_stop, t_mig, t_done, cpu0, cpu1;
	double t_file = -1;
	char cmd[8192];
	int done = 0, child_fd = -1;
	pid_t child = 0;

	if (!q)
		fail(2, "out of memory");
	follow_init(&f, o->log, NULL);
	qmp_connect(q, o->sock, deadline);
	qmp_cmd(q, "{\"execute\":\"migrate-set-capabilities\",\"arguments\":{\"capabilities\":"
		"[{\"capability\":\"events\",\"state\":true}]}}\n", deadline, NULL, NULL);
	snprintf(cmd, sizeof(cmd), "{\"execute\":\"migrate-set-parameters\",\"arguments\":"
		 "{\"max-bandwidth\":%lld}}\n", o->bw);
	qmp_cmd(q, cmd, deadline, NULL, NULL);

	follow_until(&f, next_due(&f, o->lead_ms, deadline, -1, "save-qmp"));
	cpu0 = o->pid > 0 ? cpu_ms(o->pid) : -1;
	ts = now_ms();
	qmp_cmd(q, "{\"execute\":\"stop\"}\n", deadline, NULL, NULL);
	t_stop = now_ms();
	snprintf(cmd, sizeof(cmd), "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"exec:cat > %s\"}}\n",
		 o->file);
	t_mig = now_ms();
	qmp_cmd(q, cmd, deadline, "\"completed\"", &done);
	if (o->pid > 0 && (child = child_of(o->pid)) > 0)
		child_fd = pidfd_open_(child);   /* the `cat > FILE` */
	while (!done) {
		qmp_line(q, deadline);
		if (strstr(q->line, "\"MIGRATION\"") && strstr(q->line, "\"failed\""))
			fail(1, "save-qmp: migration failed: %s", q->line);
		if (strstr(q->line, "\"MIGRATION\"") && strstr(q->line, "\"completed\""))
			done = 1;
	}
	t_done = now_ms();
	if (child_fd >= 0) {
		/* the file is complete when cat has exited; its CPU time is in
		 * QEMU's once QEMU has reaped it */
		struct pollfd p = { .fd = child_fd, .events = POLLIN };
		char path[64];

		if (poll(&p, 1, 10000) == 1)
			t_file = now_ms();
		snprintf(path, sizeof(path), "/proc/%d", (int)child);
		for (int i = 0; i < 5000 && !access(path, F_OK); i++)
			usleep(1000);
	}
	cpu1 = o->pid > 0 ? cpu_ms(o->pid) : -1;
	follow_scan(&f);
	/* total-time is set after the "completed" event; ask until it is there */
	for (int i = 0; i < 1000; i++) {
		qmp_cmd(q, "{\"execute\":\"query-migrate\"}\n", deadline, NULL, NULL);
		if (json_num(q->line, "total-time") > 0)
			break;
		usleep(1000);
	}
	printf("save_ms=%.3f file_ms=%.3f stop_ms=%.3f migrate_ms=%.3f last_tick=%ld rem_ms=%.3f "
	       "total_time_ms=%ld downtime_ms=%ld cpu_ms=%.0f\n", t_done - ts,
	       t_file < 0 ? -1 : t_file - ts, t_stop - ts, t_done - t_mig, f.last_tick, rem_ms(&f, ts),
	       json_num(q->line, "total-time"), json_num(q->line, "downtime"),
	       cpu0 < 0 || cpu1 < 0 ? -1 : cpu1 - cpu0);
	fflush(stdout);
	qmp_cmd(q, "{\"execute\":\"quit\"}\n", deadline, NULL, NULL);
}


/* The restored VMM, killed if this helper is told to stop. */
static volatile pid_t g_child;

static void on_stop(int sig)
{
	if (g_child > 0)
		kill(g_child, SIGKILL);
	_exit(128 + sig);
}

/* SIGTERM, up to 5 s, SIGKILL; reap. */
static void end_child(pid_t pid, int pfd)
{
	struct pollfd p = { .fd = pfd, .events = POLLIN };

	kill(pid, SIGTERM);
	if (poll(&p, 1, 5000) <= 0)
		kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static void cmd_restore(const struct opts *o, char **argv)
{
	struct follow f;
	double t0, t1, deadline;
	int pfd, dead;
	pid_t pid;

	follow_init(&f, o->log, NULL);
	signal(SIGTERM, on_stop);
	signal(SIGINT, on_stop);
	signal(SIGHUP, on_stop);
	t0 = now_ms();
	deadline = t0 + o->tmo_s * 1e3;
	pid = fork();
	if (pid < 0)
		fail(2, "fork: %s", strerror(errno));
	if (pid == 0) {
		if (bench_redirect(0, "/dev/null", O_RDONLY) ||
		    (o->out && bench_redirect(1, o->out, O_WRONLY | O_CREAT | O_TRUNC)) ||
		    (o->err && bench_redirect(2, o->err, O_WRONLY | O_CREAT | O_TRUNC)))
			_exit(126);
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		execvp(argv[0], argv);
		_exit(127);
	}
	g_child = pid;
	pfd = pidfd_open_(pid);
	if (pfd < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		fail(2, "pidfd_open: %s", strerror(errno));
	}
	follow_scan(&f);
	while (f.nticks == 0) {
		if (now_ms() > deadline) {
			end_child(pid, pfd);
			fail(1, "restore: no tick line in %s after %.0f s", o->log, o->tmo_s);
		}
		follow_wait(&f, deadline, pfd, &dead);
		if (dead && f.nticks == 0) {
			int st = 0;

			waitpid(pid, &st, 0);
			fail(1, "restore: %s exited (status %d) before a tick line appeared in %s", argv[0],
			     WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), o->log);
		}
	}
	t1 = f.last_tick_ms;
	printf("tick_ms=%.3f first_tick=%ld\n", t1 - t0, f.last_tick);
	fflush(stdout);
	end_child(pid, pfd);
}

static void usage(void)
{
	fail(2, "usage: statebench wait-tick|save-signal|save-qmp|restore [options] (see the source)");
}

int main(int argc, char **argv)
{
	struct opts o = { .lead_ms = 2, .tmo_s = 60, .bw = 1LL << 40 };
	const char *mode;
	int c;

	if (argc < 2)
		usage();
	mode = argv[1];
	optind = 2;
	while ((c = getopt(argc, argv, "+l:p:f:q:o:e:a:t:b:")) != -1) {
		switch (c) {
		case 'l': o.log = optarg; break;
		case 'p': o.pid = (pid_t)atoi(optarg); break;
		case 'f': o.file = optarg; break;
		case 'q': o.sock = optarg; break;
		case 'o': o.out = optarg; break;
		case 'e': o.err = optarg; break;
		case 'a': o.lead_ms = atof(optarg); break;
		case 't': o.tmo_s = atof(optarg); break;
		case 'b': o.bw = atoll(optarg); break;
		default: usage();
		}
	}
	if (!o.log || o.tmo_s <= 0 || o.lead_ms < 0 || o.lead_ms >= TICK_MS)
		usage();
	signal(SIGPIPE, SIG_IGN);
	if (!strcmp(mode, "wait-tick") && o.pid > 0)
		cmd_wait_tick(&o);
	else if (!strcmp(mode, "save-signal") && o.pid > 0 && o.file)
		cmd_save_signal(&o);
	else if (!strcmp(mode, "save-qmp") && o.sock && o.file)
		cmd_save_qmp(&o);
	else if (!strcmp(mode, "restore") && optind < argc)
		cmd_restore(&o, argv + optind);
	else
		usage();
	return 0;
}
