/* tests/unit/test-control-clients.c — the control socket's event clients
 * that misbehave (core/control.c), without KVM: a hand-built machine with a
 * real event loop, driven by this thread.
 *
 * 1. A subscriber that never reads, next to one that does, while 3000
 *    pauses on an error and resumes are raised: the loop never blocks (all
 *    of it takes well under 10 s), the reader gets all 6000 events in
 *    order, the sleeper is cut off: what it got is whole event lines (at
 *    most one line cut short, at the end: nothing glued to a half line),
 *    then EOF; it was cut off when its socket was full, not sooner (one
 *    send per line: ~278 lines of backlog with the default wmem, not 139);
 *    its slot is freed.
 * 2. CTL_MAX_CONNS (16) subscribers: a 17th connection is closed at once;
 *    after 15 of them were cut off for not reading, new clients get in and
 *    are served.
 * 3. A subscriber sending garbage and then a line over 64 KiB: errors, then
 *    it is closed; the other subscriber's events go on.
 * 4. 4 threads raising BLOCK_IO_ERROR with its pause (one call, as
 *    virtio-blk makes it), 2000 times each, while the loop resumes
 *    whenever paused, with no lock of its own: the subscriber sees STOP
 *    and RESUME alternate, each STOP after a BLOCK_IO_ERROR since the last
 *    RESUME (BLOCK_IO_ERROR before STOP, RESUME only after a told STOP).
 * 5. The same, deterministic: 40 reported errors fill the BLOCK_IO_ERROR
 *    share of the queue (32), then an error that pauses the VM: its
 *    BLOCK_IO_ERROR is kept, before the STOP.
 */
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/control.h"
#include "core/machine.h"
#include "tests/unit/test-ctl-util.h"
#include "tests/unit/test-vm-util.h"

static struct vmm_machine m;
static char path[64];

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static int client(void)
{
	return tc_connect(path);
}

static char *line(int fd)
{
	return tc_line(fd, &m.vm.loop);
}

#define send_line tc_send

/* Connect, read the greeting, subscribe. */
static int subscriber(void)
{
	int fd = client();

	tc_subscribe(fd, &m.vm.loop);
	return fd;
}

/* Everything waiting on @fd (non-blocking) appended to @b (grown). */
static void drain(int fd, char **b, size_t *len, size_t *cap)
{
	for (;;) {
		ssize_t r;

		if (*cap - *len < 65536) {
			*cap = *cap * 2 + 65536;
			*b = realloc(*b, *cap);
			if (!*b)
				tv_die("realloc");
		}
		r = recv(fd, *b + *len, *cap - *len - 1, MSG_DONTWAIT);
		if (r <= 0)
			return;
		*len += (size_t)r;
		(*b)[*len] = '\0';
	}
}

/* The event names of the whole lines in @b, checked to be event objects;
 * @seq gets them as letters (S, R, other: ?); returns the number of lines,
 * and *rest the bytes after the last newline. */
static size_t events_in(char *b, size_t len, char *seq, size_t seqmax, size_t *rest)
{
	size_t n = 0;
	char *p = b, *nl;

	while ((nl = memchr(p, '\n', len - (size_t)(p - b)))) {
		struct json_object *o, *e;

		*nl = '\0';
		o = json_tokener_parse(p);
		CHECK(o && json_object_object_get_ex(o, "event", &e), "not an event line: %.200s", p);
		if (o && json_object_object_get_ex(o, "event", &e) && n < seqmax)
			seq[n] = !strcmp(json_object_get_string(e), "STOP") ? 'S' :
				 !strcmp(json_object_get_string(e), "RESUME") ? 'R' : '?';
		json_object_put(o);
		n++;
		p = nl + 1;
	}
	*rest = len - (size_t)(p - b);
	return n;
}

/* How many @len-byte sends a fresh, unread UNIX stream socket takes. */
static size_t lines_fit(size_t len)
{
	char buf[512];
	size_t n = 0;
	int sv[2];

	memset(buf, 'x', sizeof(buf));
	if (len > sizeof(buf) || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		tv_die("socketpair");
	while (send(sv[0], buf, len, MSG_DONTWAIT) == (ssize_t)len)
		n++;
	close(sv[0]);
	close(sv[1]);
	return n;
}

static void setup(void)
{
	tc_machine_start(&m, path, sizeof(path), "ctlcl");
}

static void teardown(void)
{
	vmm_control_close(m.ctl);
	m.ctl = NULL;
	vmm_vm_destroy(&m.vm);
}

/* ---- 1. ---- */

#define PAIRS 3000

static void test_sleeper(void)
{
	char *rb = NULL, *sb = NULL, *seq = malloc(2 * PAIRS + 1);
	size_t rlen = 0, rcap = 0, slen = 0, scap = 0, rest, n, sn, cap;
	long long t0;
	int reader, sleeper;
	bool ok = true;

	setup();
	sleeper = subscriber();
	reader = subscriber();
	t0 = now_ms();
	for (int i = 0; i < PAIRS; i++) {
		vmm_vm_pause_on_error(&m.vm, "full");
		vmm_vm_resume(&m.vm);
		vmm_loop_run_once(&m.vm.loop, 0);
		vmm_loop_run_once(&m.vm.loop, 0);
		drain(reader, &rb, &rlen, &rcap);
	}
	for (int i = 0; i < 20; i++) {
		vmm_loop_run_once(&m.vm.loop, 5);
		drain(reader, &rb, &rlen, &rcap);
	}
	CHECK(now_ms() - t0 < 10000, "%d pauses and resumes took %lld ms", PAIRS, now_ms() - t0);
	n = events_in(rb, rlen, seq, 2 * PAIRS, &rest);
	CHECK_EQ(n, (size_t)2 * PAIRS);
	CHECK_EQ(rest, (size_t)0);
	for (size_t i = 0; i < n && i < 2 * PAIRS; i++)
		ok &= seq[i] == (i % 2 ? 'R' : 'S');
	CHECK(ok, "the reader's events are not STOP, RESUME, ... in order");

	/* the sleeper: whole lines, at most a cut one at the end, then EOF */
	drain(sleeper, &sb, &slen, &scap);
	sn = events_in(sb, slen, seq, 2 * PAIRS, &rest);
	CHECK(sn < (size_t)2 * PAIRS, "the sleeper got all %zu events", sn);
	CHECK(rest < 200, "%zu bytes after the sleeper's last whole line", rest);
	if (rest)
		CHECK(!memchr(sb + slen - rest, '{', rest) ||
		      memchr(sb + slen - rest, '{', rest) == sb + slen - rest,
		      "two lines glued after the last newline: %.*s", (int)rest, sb + slen - rest);
	CHECK(recv(sleeper, sb, 1, MSG_DONTWAIT) == 0, "the sleeper was not cut off (no EOF)");
	/* it was cut off when the socket could take no more, not sooner: as
	 * many lines as one send each fits in a socket (the kernel charges
	 * each send's buffer, ~768 bytes for a short line, to the sender) */
	cap = lines_fit(strlen("{\"event\":\"STOP\",\"timestamp\":{\"seconds\":1700000000,"
			       "\"microseconds\":123456}}\n"));
	CHECK(sn >= cap * 9 / 10, "the sleeper was cut off after %zu lines; a socket takes %zu", sn, cap);
	printf("sleeper: cut off after %zu whole event lines (+%zu bytes; a socket takes %zu); "
	       "reader: %zu events\n", sn, rest, cap, n);
	/* its slot is free again: the loop closed it */
	{
		int c = client();

		CHECK_STR(line(c) ?: "EOF", "\"cowvm\"");
		close(c);
	}
	close(sleeper);
	close(reader);
	free(rb);
	free(sb);
	free(seq);
	teardown();
}

/* ---- 2. ---- */

static void test_max_conns(void)
{
	int fds[16], extra, served = 0;
	char buf[64];

	setup();
	for (int i = 0; i < 16; i++)
		fds[i] = subscriber();
	extra = client();
	CHECK_STR(line(extra) ?: "EOF", "too many connections to the control socket (at most 16 at once)");
	CHECK(line(extra) == NULL, "a 17th connection got a second line");
	close(extra);
	/* 15 sleepers are cut off by a flood; the 16th reads */
	for (int i = 0; i < PAIRS; i++) {
		vmm_vm_pause_on_error(&m.vm, "full");
		vmm_vm_resume(&m.vm);
		vmm_loop_run_once(&m.vm.loop, 0);
		while (recv(fds[15], buf, sizeof(buf), MSG_DONTWAIT) > 0)
			;
	}
	for (int i = 0; i < 20; i++)
		vmm_loop_run_once(&m.vm.loop, 5);
	for (int k = 0; k < 15; k++) {
		int c = client();

		CHECK_STR(line(c) ?: "EOF", "\"cowvm\"");
		send_line(c, "{\"execute\": \"query-status\"}\n");
		if (strstr(line(c) ?: "", "\"return\""))
			served++;
		close(c);
	}
	CHECK_EQ(served, 15);
	for (int i = 0; i < 16; i++)
		close(fds[i]);
	teardown();
}

/* ---- 3. ---- */

static void test_garbage(void)
{
	static char huge[70 * 1024];
	int bad, good;
	char *l;

	setup();
	bad = subscriber();
	good = subscriber();
	send_line(bad, "garbage\n");
	CHECK_STR(line(bad) ?: "EOF", "not a JSON object");
	send_line(bad, "{\"execute\": 5}\n");
	CHECK_STR(line(bad) ?: "EOF", "no \\\"execute\\\" string");
	vmm_vm_pause_on_error(&m.vm, "x");
	CHECK_STR(line(bad) ?: "EOF", "\"STOP\"");
	CHECK_STR(line(good) ?: "EOF", "\"STOP\"");
	memset(huge, 'x', sizeof(huge));
	if (send(bad, huge, sizeof(huge), MSG_DONTWAIT) <= 0)
		tv_die("send");
	l = line(bad);
	CHECK_STR(l ?: "EOF", "longer than 64 KiB");
	CHECK(line(bad) == NULL, "the client with the huge line was not closed");
	vmm_vm_resume(&m.vm);
	CHECK_STR(line(good) ?: "EOF", "\"RESUME\"");
	close(bad);
	close(good);
	teardown();
}

/* ---- 4. ---- */

#define RAISERS 4
#define RAISES 2000

static atomic_int raisers_done;
static void *raiser(void *arg)
{
	(void)arg;
	for (int i = 0; i < RAISES; i++) {
		/* the event and its pause in one call (as core/virtio/blk.c
		 * makes it): a resume cannot come between them */
		vmm_vm_block_io_error(&m.vm, "virtio-blk0", true, -ENOSPC, "full");
	}
	atomic_fetch_add(&raisers_done, 1);
	return NULL;
}

static void test_concurrent(void)
{
	char *rb = NULL, *p, *nl;
	size_t rlen = 0, rcap = 0;
	unsigned stops = 0, resumes = 0, bies = 0, bie_since_resume = 0, bad = 0;
	bool paused = false;
	pthread_t t[RAISERS];
	int reader;

	setup();
	reader = subscriber();
	for (int i = 0; i < RAISERS; i++)
		pthread_create(&t[i], NULL, raiser, NULL);
	/* the loop thread: send the events, resume whenever paused, until the
	 * raisers are done (bounded: 20 s) */
	for (long long t0 = now_ms(); now_ms() - t0 < 20000;) {
		vmm_loop_run_once(&m.vm.loop, 1);
		if (vmm_vm_paused(&m.vm))
			vmm_vm_resume(&m.vm);
		drain(reader, &rb, &rlen, &rcap);
		if (atomic_load(&raisers_done) == RAISERS)
			break;
	}
	CHECK_EQ(atomic_load(&raisers_done), RAISERS);
	if (atomic_load(&raisers_done) != RAISERS)
		tv_die("the raisers did not end within 20 s");
	for (int i = 0; i < RAISERS; i++)
		pthread_join(t[i], NULL);
	if (vmm_vm_paused(&m.vm))
		vmm_vm_resume(&m.vm);
	teardown();   /* flushes what is queued */
	drain(reader, &rb, &rlen, &rcap);
	/* STOP and RESUME alternate from STOP; each STOP comes after a
	 * BLOCK_IO_ERROR "stop" since the last RESUME; the stream ends with
	 * RESUME then SHUTDOWN (vmm_vm_destroy: quit) or just RESUME */
	for (p = rb; rb && (nl = memchr(p, '\n', rlen - (size_t)(p - rb))); p = nl + 1) {
		*nl = '\0';
		if (strstr(p, "\"BLOCK_IO_ERROR\"")) {
			bies++;
			bie_since_resume++;
			if (!strstr(p, "\"action\":\"stop\"")) {
				CHECK(false, "BLOCK_IO_ERROR %u: %s", bies, p);
				bad++;
			}
		} else if (strstr(p, "\"STOP\"")) {
			if (paused || !bie_since_resume) {
				CHECK(false, "STOP %u: %s, %u BLOCK_IO_ERROR since the last RESUME",
				      stops, paused ? "paused already" : "running", bie_since_resume);
				bad++;
			}
			paused = true;
			stops++;
		} else if (strstr(p, "\"RESUME\"")) {
			if (!paused) {
				CHECK(false, "RESUME %u without a STOP", resumes);
				bad++;
			}
			paused = false;
			bie_since_resume = 0;
			resumes++;
		}
	}
	CHECK_EQ(bad, 0u);
	CHECK(stops > 0 && (stops == resumes || stops == resumes + 1),
	      "%u STOP, %u RESUME", stops, resumes);
	printf("concurrent: %u BLOCK_IO_ERROR, %u STOP, %u RESUME, in order\n", bies, stops, resumes);
	close(reader);
	free(rb);
}

/* ---- 5. ---- */

static void test_stop_cause_kept(void)
{
	int ev;
	char *l;

	setup();
	ev = subscriber();
	/* a flood of reported errors (another disk, werror=report) fills the
	 * BLOCK_IO_ERROR share of the queue before the loop runs... */
	for (int i = 0; i < 40; i++)
		vmm_vm_block_io_error(&m.vm, "virtio-blk1", true, -EIO, NULL);
	/* ...then a disk under werror=enospc fills up: its BLOCK_IO_ERROR is
	 * what says why the VM stops, and must come before the STOP */
	CHECK(vmm_vm_block_io_error(&m.vm, "virtio-blk0", true, -ENOSPC, "full"), "no pause");
	for (int i = 0; i < 32; i++) {
		l = line(ev);
		CHECK_STR(l ?: "EOF", "\"virtio-blk1\"");
	}
	l = line(ev);
	CHECK_STR(l ?: "EOF", "\"virtio-blk0\"");
	CHECK_STR(l ?: "EOF", "\"action\":\"stop\"");
	l = line(ev);
	CHECK_STR(l ?: "EOF", "\"STOP\"");
	close(ev);
	teardown();
}

int main(void)
{
	test_sleeper();
	test_max_conns();
	test_garbage();
	test_concurrent();
	test_stop_cause_kept();
	return tv_finish("test-control-clients");
}
