/* tests/unit/test-control-events.c — run-state events (core/vm.c) and their
 * queue on the control socket (core/control.c), without KVM.
 *
 * 1. core/vm.c through a recording vm->on_qevent: STOP once per pause (a
 *    pause on an error, vmm_vm_pause of a VM without vCPUs), RESUME only
 *    after a told STOP, SHUTDOWN once (first vmm_vm_request_exit), and the
 *    action of BLOCK_IO_ERROR with the pause it makes (vmm_vm_block_io_error).
 * 2. core/control.c on a hand-built machine (preinit VM, real event loop):
 *    a client without qmp_capabilities never gets an event line; one with it
 *    gets events raised on another thread, sent by the loop; 100
 *    BLOCK_IO_ERRORs of a full disk raised at once: the first with its
 *    STOP, then 31 more (the share of 32), the rest dropped, counted by
 *    query-status ("events-dropped") and told at close, and the SHUTDOWN raised after them still reaches the client,
 *    flushed by vmm_control_close before EOF.
 * 3. SHUTDOWN's guest and reason for each exit kind.
 * 4. A new subscriber does not get the events queued before its
 *    qmp_capabilities ran.
 */
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/control.h"
#include "core/machine.h"
#include "tests/unit/test-ctl-util.h"
#include "tests/unit/test-vm-util.h"

/* ---- 1. core/vm.c ---- */

static struct vmm_qevent rec[16];
static char rec_dev[16][32];
static int nrec;

static void record(void *opaque, const struct vmm_qevent *ev)
{
	(void)opaque;
	if (nrec < 16) {
		rec[nrec] = *ev;
		snprintf(rec_dev[nrec], sizeof(rec_dev[nrec]), "%s", ev->device ? ev->device : "");
		rec[nrec].device = NULL;
	}
	nrec++;
}

static void test_vm_hooks(void)
{
	static struct vmm_vm vm;

	vmm_vm_preinit(&vm);
	vm.on_qevent = record;
	/* not resumable: a disk error is reported, nothing pauses */
	CHECK(!vmm_vm_block_io_error(&vm, "virtio-blk0", true, -ENOSPC, "full"),
	      "paused without being resumable");
	CHECK_EQ(nrec, 1);
	CHECK_EQ(rec[0].kind, VMM_QEV_BLOCK_IO_ERROR);
	CHECK_EQ(rec[0].stop, false);
	CHECK_EQ(rec[0].write, true);
	CHECK_EQ(rec[0].error, -ENOSPC);
	CHECK(!strcmp(rec_dev[0], "virtio-blk0"), "device '%s'", rec_dev[0]);
	vmm_vm_resume(&vm);   /* nothing was told paused: no RESUME */
	CHECK_EQ(nrec, 1);

	vm.resumable = true;
	CHECK(vmm_vm_block_io_error(&vm, "virtio-blk1", false, -EIO, "EIO"), "no pause");
	CHECK(vmm_vm_pause_on_error(&vm, "EIO again"), "no pause");
	CHECK_EQ(nrec, 3);   /* BLOCK_IO_ERROR, one STOP */
	CHECK_EQ(rec[1].kind, VMM_QEV_BLOCK_IO_ERROR);
	CHECK_EQ(rec[1].stop, true);
	CHECK_EQ(rec[1].write, false);
	CHECK_EQ(rec[2].kind, VMM_QEV_STOP);
	CHECK_EQ(vmm_vm_pause(&vm), 0);   /* already paused: told nothing */
	CHECK_EQ(nrec, 3);
	vmm_vm_resume(&vm);
	vmm_vm_resume(&vm);
	CHECK_EQ(nrec, 4);
	CHECK_EQ(rec[3].kind, VMM_QEV_RESUME);
	/* a policy of report stays report */
	CHECK(!vmm_vm_block_io_error(&vm, "virtio-blk0", true, -EIO, NULL), "paused on report");
	CHECK_EQ(nrec, 5);
	CHECK_EQ(rec[4].stop, false);
	/* vmm_vm_pause (no vCPUs: parked at once) */
	CHECK_EQ(vmm_vm_pause(&vm), 0);
	CHECK_EQ(nrec, 6);
	CHECK_EQ(rec[5].kind, VMM_QEV_STOP);
	/* the run ends once; a stopping VM does not pause on errors */
	vmm_vm_request_exit(&vm, VMM_EXIT_GUEST, 3);
	vmm_vm_request_exit(&vm, VMM_EXIT_QUIT, 0);
	CHECK_EQ(nrec, 7);
	CHECK_EQ(rec[6].kind, VMM_QEV_SHUTDOWN);
	CHECK_EQ(rec[6].exit_kind, VMM_EXIT_GUEST);
	CHECK(!vmm_vm_block_io_error(&vm, "virtio-blk0", true, -ENOSPC, "full"), "paused while stopping");
	CHECK_EQ(nrec, 8);
	CHECK_EQ(rec[7].stop, false);
	vmm_vm_destroy(&vm);
}

/* ---- 2. core/control.c ---- */

static struct vmm_machine m;
static char host_msg[512];

static void on_host_msg(void *opaque, const char *msg)
{
	(void)opaque;
	snprintf(host_msg, sizeof(host_msg), "%s", msg);
}

#define client tc_connect
#define send_line tc_send

static char *line(int fd, bool pump)
{
	return tc_line(fd, pump ? &m.vm.loop : NULL);
}

/* Is nothing waiting on @fd after the loop ran a while? */
static bool quiet(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	for (int i = 0; i < 5; i++)
		vmm_loop_run_once(&m.vm.loop, 10);
	return poll(&p, 1, 0) == 0;
}

/* The "event" name of line @s ("" for a line without one, "?" for one that
 * is not JSON); @data, when not NULL, gets the "data" as a string. */
static const char *event_of(const char *s, char *data, size_t dsize)
{
	static char name[64];
	struct json_object *o = s ? json_tokener_parse(s) : NULL, *e, *d, *ts;

	snprintf(name, sizeof(name), "?");
	if (!o)
		return name;
	name[0] = '\0';
	if (json_object_object_get_ex(o, "event", &e)) {
		snprintf(name, sizeof(name), "%s", json_object_get_string(e));
		CHECK(json_object_object_get_ex(o, "timestamp", &ts) &&
		      json_object_object_get_ex(ts, "seconds", &d) &&
		      json_object_object_get_ex(ts, "microseconds", &d), "no timestamp: %s", s);
	}
	if (data) {
		data[0] = '\0';
		if (json_object_object_get_ex(o, "data", &d))
			snprintf(data, dsize, "%s", json_object_to_json_string_ext(d, JSON_C_TO_STRING_PLAIN));
	}
	json_object_put(o);
	return name;
}

static void *raise_stop(void *arg)
{
	(void)arg;
	vmm_vm_pause_on_error(&m.vm, "from another thread");
	return NULL;
}

static void *raise_flood(void *arg)
{
	(void)arg;
	/* a full disk under werror=enospc: the first error pauses the VM,
	 * the other requests in flight fail while it is paused */
	for (int i = 0; i < 100; i++)
		vmm_vm_block_io_error(&m.vm, "virtio-blk0", true, -ENOSPC, "full");
	return NULL;
}

static void test_control(void)
{
	char path[64], data[512], *l;
	int plain, ev, nio = 0, other = 0;
	pthread_t t;

	tc_machine_start(&m, path, sizeof(path), "ctlev");
	m.vm.on_event = on_host_msg;
	plain = client(path);
	ev = client(path);
	CHECK_STR(line(plain, true) ?: "EOF", "\"cowvm\"");
	tc_subscribe(ev, &m.vm.loop);
	send_line(ev, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}\n");
	CHECK_STR(line(ev, true) ?: "EOF", "Capabilities negotiation is already complete");

	/* a STOP raised on another thread: the loop sends it to ev only */
	pthread_create(&t, NULL, raise_stop, NULL);
	pthread_join(t, NULL);
	l = line(ev, true);
	CHECK(!strcmp(event_of(l, data, sizeof(data)), "STOP") && !data[0], "got %s", l ?: "EOF");
	CHECK(quiet(plain), "the plain client got a line");
	/* a command's event comes before its reply */
	send_line(plain, "{\"execute\": \"resume\"}\n");
	l = line(ev, true);
	CHECK(!strcmp(event_of(l, NULL, 0), "RESUME"), "got %s", l ?: "EOF");
	CHECK_STR(line(plain, true) ?: "EOF", "{\"return\":{}}");
	CHECK(quiet(plain), "the plain client got a line after its reply");

	/* a flood from another thread, then STOP and SHUTDOWN; the loop is
	 * told to quit (as at the end of a run): vmm_control_close sends them */
	pthread_create(&t, NULL, raise_flood, NULL);
	pthread_join(t, NULL);
	/* query-status counts what the full queue dropped */
	send_line(plain, "{\"execute\": \"query-status\"}\n");
	l = line(plain, true);
	CHECK_STR(l ?: "EOF", "\"events-dropped\":68");
	CHECK(l && !strstr(l, "disk-snapshot"), "a pending snapshot told: %s", l);
	vmm_vm_request_exit(&m.vm, VMM_EXIT_SIGNAL, 15);   /* SHUTDOWN, the loop quits */
	vmm_control_close(m.ctl);
	m.ctl = NULL;
	while ((l = line(ev, false))) {
		const char *n = event_of(l, data, sizeof(data));

		if (!strcmp(n, "BLOCK_IO_ERROR")) {
			/* the first, then its STOP, then the others */
			CHECK(nio ? other == 1 : other == 0, "BLOCK_IO_ERROR %d after %d other events",
			      nio, other);
			CHECK(!strcmp(data, "{\"device\":\"virtio-blk0\",\"operation\":\"write\","
				     "\"action\":\"stop\",\"nospace\":true,"
				     "\"reason\":\"No space left on device\"}"), "data %s", data);
			nio++;
		} else if (other++ == 0) {
			CHECK(!strcmp(n, "STOP") && nio == 1, "got %s after %d BLOCK_IO_ERROR", l, nio);
		} else {
			CHECK(!strcmp(n, "SHUTDOWN") &&
			      !strcmp(data, "{\"guest\":false,\"reason\":\"host-signal\"}"), "got %s", l);
		}
	}
	/* the share of 32: the one that paused the VM and 31 more */
	CHECK_EQ(nio, 32);
	CHECK_EQ(other, 2);
	CHECK(line(plain, false) == NULL, "the plain client got a line before EOF");
	CHECK_STR(host_msg, "68 event(s) were dropped");
	CHECK(access(path, F_OK) != 0, "the socket file is still there");
	close(plain);
	close(ev);
	vmm_vm_destroy(&m.vm);
}

/* 3. SHUTDOWN's data for each way a run ends (QMP's ShutdownCause). */
static void test_shutdown_reasons(void)
{
	static const struct { enum vmm_exit_kind k; const char *data; } cases[] = {
		{ VMM_EXIT_GUEST, "{\"guest\":true,\"reason\":\"guest-shutdown\"}" },
		{ VMM_EXIT_POWEROFF, "{\"guest\":true,\"reason\":\"guest-shutdown\"}" },
		{ VMM_EXIT_RESET, "{\"guest\":true,\"reason\":\"guest-reset\"}" },
		{ VMM_EXIT_SIGNAL, "{\"guest\":false,\"reason\":\"host-signal\"}" },
		{ VMM_EXIT_QUIT, "{\"guest\":false,\"reason\":\"host-qmp-quit\"}" },
		{ VMM_EXIT_FATAL, "{\"guest\":false,\"reason\":\"host-error\"}" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char path[64], data[256], *l;
		int ev;

		tc_machine_start(&m, path, sizeof(path), "ctlsd");
		m.vm.on_event = on_host_msg;
		ev = client(path);
		tc_subscribe(ev, &m.vm.loop);
		vmm_vm_request_exit(&m.vm, cases[i].k, 0);
		vmm_control_close(m.ctl);
		m.ctl = NULL;
		l = line(ev, false);
		CHECK(l && !strcmp(event_of(l, data, sizeof(data)), "SHUTDOWN") &&
		      !strcmp(data, cases[i].data), "exit kind %d: got %s, want %s", (int)cases[i].k,
		      l ?: "EOF", cases[i].data);
		close(ev);
		vmm_vm_destroy(&m.vm);
	}
}

/* 4. A subscription takes the events raised after qmp_capabilities ran,
 * not those still queued when it came. */
static void test_subscribe_boundary(void)
{
	char path[64], *l;
	int old, nw;

	tc_machine_start(&m, path, sizeof(path), "ctlsb");
	m.vm.on_event = on_host_msg;
	old = client(path);
	tc_subscribe(old, &m.vm.loop);
	nw = client(path);
	CHECK_STR(line(nw, true) ?: "EOF", "\"cowvm\"");
	/* the request is in the socket before the STOP is raised: the loop
	 * sees the connection ready first, then the event queue */
	send_line(nw, "{\"execute\": \"qmp_capabilities\"}\n");
	vmm_vm_pause_on_error(&m.vm, "full");
	l = line(old, true);
	CHECK(l && !strcmp(event_of(l, NULL, 0), "STOP"), "the old subscriber got %s", l ?: "EOF");
	CHECK_STR(line(nw, true) ?: "EOF", "{\"return\":{}}");
	CHECK(quiet(nw), "the new subscriber got an event raised before it subscribed");
	vmm_vm_resume(&m.vm);
	l = line(nw, true);
	CHECK(l && !strcmp(event_of(l, NULL, 0), "RESUME"), "the new subscriber got %s", l ?: "EOF");
	vmm_control_close(m.ctl);
	m.ctl = NULL;
	close(old);
	close(nw);
	vmm_vm_destroy(&m.vm);
}

int main(void)
{
	test_vm_hooks();
	test_control();
	test_shutdown_reasons();
	test_subscribe_boundary();
	return tv_finish("test-control-events");
}
