/* core/control.c — control socket server; see control.h.
 *
 * Connection states:  accepted ──greeting──> reading ──line──> dispatch
 *                     ──reply──> reading ... ──EOF/error/oversized line──> closed
 *                     (qmp_capabilities sets "events": the connection also
 *                     gets the event lines from then on)
 *
 * Events: vm->on_qevent (ctl_qevent, any thread, vm->lock held) copies the
 * event with its time into a bounded ring under evq_lock and writes ev_fd;
 * the loop thread sends the queued lines (ev_flush) when ev_fd is ready,
 * before each reply (so an event a command causes comes before its reply,
 * as in QMP) and in vmm_control_close (so SHUTDOWN reaches the clients
 * before the socket closes).
 */
#include "core/control.h"
#include "core/machine.h"
#include "util/io.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define CTL_LINE_MAX   (64 * 1024)
#define CTL_MAX_CONNS  16
#define CTL_MAX_CONNS_STR "16"   /* for the refusal line */
#define CTL_STOP_DEFAULT_S 10
#define CTL_EVQ_MAX    64   /* events waiting for the loop thread */
#define CTL_EVQ_IO_MAX 32   /* of which BLOCK_IO_ERROR: the rest stays for run states */
#define CTL_EVQ_IO_PAUSES 8 /* more for a BLOCK_IO_ERROR that pauses the VM (ev->pauses):
			       the STOP after it is unexplained without it */
#define CTL_DEV_MAX    32

struct ctl_conn {
	struct vmm_control *ctl;
	int fd;
	bool events;               /* sent qmp_capabilities: gets the events */
	bool pending;              /* its command answers later (ctl_pending):
				      not read meanwhile */
	char buf[CTL_LINE_MAX];
	size_t len;
};

/* A queued event: struct vmm_qevent with its strings copied, and its time. */
struct ctl_event {
	struct vmm_qevent ev;
	char device[CTL_DEV_MAX];
	struct timeval tv;
};

struct vmm_control {
	struct vmm_machine *m;
	int fd;
	char *path;
	struct ctl_conn *conns[CTL_MAX_CONNS];
	struct ctl_conn *cur;      /* the connection whose command runs */
	struct ctl_conn *waiting;  /* the one waiting for the disk snapshot's
				      answer (snapshot_done), NULL if none */
	int stop_timer;            /* timerfd armed by "stop", -1 if none */
	/* events (see the top of the file) */
	int ev_fd;                 /* eventfd: events queued */
	pthread_mutex_t evq_lock;
	struct ctl_event evq[CTL_EVQ_MAX];   /* ring: evq_n from evq_head */
	unsigned evq_head, evq_n, evq_io;    /* evq_io: BLOCK_IO_ERRORs among them */
	unsigned long long ev_dropped;       /* not queued: the ring was full */
};

/* A handler fills *ret (a JSON object it owns until returned) or returns an
 * error class and sets @desc, or returns ctl_pending: the answer comes
 * later (the handler arranged for it; the connection is not read until
 * then, so its next request waits, as in QMP). */
static const char ctl_pending[] = "pending";

typedef const char *(*ctl_fn)(struct vmm_control *c, struct json_object *args,
			      struct json_object **ret, char *desc, size_t dsize);

/* ---- commands ---- */

static const char *cmd_query_status(struct vmm_control *c, struct json_object *args,
				    struct json_object **ret, char *desc, size_t dsize)
{
	struct vmm_vm *vm = &c->m->vm;
	unsigned long long exits = 0, dropped;
	const char *jdev, *jfile;
	char why[VMM_PAUSE_WHY_MAX];
	const char *st;

	(void)args; (void)desc; (void)dsize;
	pthread_mutex_lock(&vm->lock);
	st = atomic_load(&vm->stopping) ? "shutting-down" : vm->pause_req ? "paused" : "running";
	snprintf(why, sizeof(why), "%s", vm->pause_req ? vm->pause_why : "");
	pthread_mutex_unlock(&vm->lock);
	for (int i = 0; i < vm->ncpus; i++)
		exits += vm->vcpus[i].exits;
	*ret = json_object_new_object();
	json_object_object_add(*ret, "status", json_object_new_string(st));
	json_object_object_add(*ret, "running", json_object_new_boolean(!strcmp(st, "running")));
	if (why[0]) {
		/* paused by a device: QMP's "io-error" run state */
		json_object_object_add(*ret, "reason", json_object_new_string("io-error"));
		json_object_object_add(*ret, "io-error", json_object_new_string(why));
	}
	json_object_object_add(*ret, "vcpus", json_object_new_int(vm->ncpus));
	json_object_object_add(*ret, "memory", json_object_new_int64((int64_t)vm->mem.ram_size));
	json_object_object_add(*ret, "pid", json_object_new_int(getpid()));
	json_object_object_add(*ret, "exits", json_object_new_int64((int64_t)exits));
	pthread_mutex_lock(&c->evq_lock);
	dropped = c->ev_dropped;
	pthread_mutex_unlock(&c->evq_lock);
	json_object_object_add(*ret, "events-dropped", json_object_new_int64((int64_t)dropped));
	if (vmm_machine_disk_job_info(c->m, &jdev, &jfile)) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "device", json_object_new_string(jdev));
		json_object_object_add(j, "snapshot-file", json_object_new_string(jfile));
		json_object_object_add(*ret, "disk-snapshot", j);
	}
	return NULL;
}

static const char *cmd_pause(struct vmm_control *c, struct json_object *args,
			     struct json_object **ret, char *desc, size_t dsize)
{
	(void)args;
	if (vmm_vm_pause(&c->m->vm)) {
		snprintf(desc, dsize, "the vCPUs did not stop within 5 s");
		return "GenericError";
	}
	*ret = json_object_new_object();
	return NULL;
}

static const char *cmd_resume(struct vmm_control *c, struct json_object *args,
			      struct json_object **ret, char *desc, size_t dsize)
{
	(void)args; (void)desc; (void)dsize;
	vmm_vm_resume(&c->m->vm);
	*ret = json_object_new_object();
	return NULL;
}

static const char *cmd_quit(struct vmm_control *c, struct json_object *args,
			    struct json_object **ret, char *desc, size_t dsize)
{
	(void)args; (void)desc; (void)dsize;
	vmm_vm_request_exit(&c->m->vm, VMM_EXIT_QUIT, 0);
	*ret = json_object_new_object();
	return NULL;
}

static void stop_expired(void *opaque, uint32_t events)
{
	struct vmm_control *c = opaque;
	uint64_t n;

	(void)events;
	if (read(c->stop_timer, &n, sizeof(n)) < 0 && errno == EAGAIN)
		return;
	vmm_vm_request_exit(&c->m->vm, VMM_EXIT_QUIT, 0);   /* forced */
}

/* Ask the guest to power off (ACPI power button), and end the run when it has
 * not done so after "timeout" seconds (default 10; 0 = at once). */
static const char *cmd_stop(struct vmm_control *c, struct json_object *args,
			    struct json_object **ret, char *desc, size_t dsize)
{
	struct json_object *t;
	int64_t secs = CTL_STOP_DEFAULT_S;
	struct itimerspec its = { 0 };

	if (args && json_object_object_get_ex(args, "timeout", &t)) {
		if (!json_object_is_type(t, json_type_int) || json_object_get_int64(t) < 0) {
			snprintf(desc, dsize, "'timeout' must be a whole number of seconds >= 0");
			return "InvalidParameter";
		}
		secs = json_object_get_int64(t);
	}
	vmm_vm_resume(&c->m->vm);   /* a paused guest cannot shut down */
	vmm_machine_power_button(c->m);
	if (secs == 0) {
		vmm_vm_request_exit(&c->m->vm, VMM_EXIT_QUIT, 0);
	} else if (c->stop_timer < 0) {
		c->stop_timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		if (c->stop_timer < 0 ||
		    vmm_loop_add(&c->m->vm.loop, c->stop_timer, EPOLLIN, stop_expired, c)) {
			snprintf(desc, dsize, "unable to arm the stop timer: %s", strerror(errno));
			return "GenericError";
		}
	}
	if (c->stop_timer >= 0 && secs > 0) {
		its.it_value.tv_sec = secs;
		timerfd_settime(c->stop_timer, 0, &its, NULL);
	}
	*ret = json_object_new_object();
	json_object_object_add(*ret, "timeout", json_object_new_int64(secs));
	return NULL;
}

static const char *cmd_save(struct vmm_control *c, struct json_object *args,
			    struct json_object **ret, char *desc, size_t dsize)
{
	struct json_object *p, *o;
	struct vmm_state_stats st;
	struct ut_err err = { 0, "" };
	unsigned flags = 0;
	bool resume = false, was_paused;

	if (!args || !json_object_object_get_ex(args, "path", &p) ||
	    !json_object_is_type(p, json_type_string) || !json_object_get_string_len(p)) {
		snprintf(desc, dsize, "'path' (the state file to write) is required");
		return "InvalidParameter";
	}
	if (json_object_object_get_ex(args, "resume", &o))
		resume = json_object_get_boolean(o);
	if (json_object_object_get_ex(args, "compress", &o) && json_object_get_boolean(o))
		flags |= VMM_STATE_F_ZSTD;
	if (c->m->disk_job) {
		/* its switch would come after the state file names the image */
		snprintf(desc, dsize, "unable to save the VM to '%s': a disk snapshot is in "
			 "progress; try again when it has answered", json_object_get_string(p));
		return "GenericError";
	}
	was_paused = vmm_vm_paused(&c->m->vm);
	if (vmm_state_save(c->m, json_object_get_string(p), flags, &st, &err)) {
		/* nothing lost: the VM goes on as it was (a paused one stays
		 * paused: resuming one paused on a disk error would retry) */
		if (!was_paused)
			vmm_vm_resume(&c->m->vm);
		snprintf(desc, dsize, "%s", err.msg);
		return "GenericError";
	}
	/* "resume": the VMM goes on as it was (a VM paused, by the user or on
	 * a disk error, stays paused: its failed requests wait for a resume,
	 * and the file holds them too); else the run ends */
	if (resume) {
		if (!was_paused)
			vmm_vm_resume(&c->m->vm);
	} else {
		vmm_vm_request_exit(&c->m->vm, VMM_EXIT_QUIT, 0);
	}
	*ret = json_object_new_object();
	json_object_object_add(*ret, "ram-bytes", json_object_new_int64((int64_t)st.ram_bytes_written));
	json_object_object_add(*ret, "file-bytes", json_object_new_int64((int64_t)st.file_bytes));
	json_object_object_add(*ret, "pause-ms", json_object_new_double(st.pause_ms));
	return NULL;
}

static void conn_answer(struct ctl_conn *cc, const char *cls, const char *desc,
			struct json_object *ret);
static void conn_process(struct ctl_conn *cc);
static void conn_read(void *opaque, uint32_t events);
static void conn_close(struct ctl_conn *cc);
static void ev_flush(struct vmm_control *c);

/* A started disk snapshot ended (loop thread): the waiting connection
 * gets its answer and is read again. */
static void snapshot_done(void *opaque, int r, const struct ut_err *err)
{
	struct vmm_control *c = opaque;
	struct ctl_conn *cc = c->waiting;

	c->waiting = NULL;
	if (!cc)
		return;   /* the client went away meanwhile */
	ev_flush(c);   /* what the command caused, before its reply */
	if (r)
		conn_answer(cc, "GenericError", err->msg, NULL);
	else
		conn_answer(cc, NULL, NULL, json_object_new_object());
	cc->pending = false;
	if (vmm_loop_add(&c->m->vm.loop, cc->fd, EPOLLIN, conn_read, cc)) {
		conn_close(cc);
		return;
	}
	/* requests that came meanwhile, unless the run has ended (the
	 * snapshot was cancelled): nothing more is started then */
	if (!atomic_load(&c->m->vm.loop.quit))
		conn_process(cc);
}

/* blockdev-snapshot-sync (QMP's): {"device": ID, "snapshot-file": PATH,
 * "format": "qcow2" (optional, the only one), "mode": "absolute-paths"
 * (default: create the file) | "existing"} -> {}. The work is
 * vmm_machine_disk_snapshot_start's (core/snapshot.c): the answer comes
 * when it ends (snapshot_done), while the loop goes on serving the guest
 * and the other connections. */
static const char *cmd_blockdev_snapshot_sync(struct vmm_control *c, struct json_object *args,
					      struct json_object **ret, char *desc, size_t dsize)
{
	static const char *const known[] = { "device", "snapshot-file", "format", "mode", NULL };
	struct json_object *dev, *file, *o;
	struct ut_err err = { 0, "" };
	unsigned flags = 0;

	if (args) {
		json_object_object_foreach(args, key, val) {
			int k = 0;

			(void)val;
			while (known[k] && strcmp(known[k], key))
				k++;
			if (!known[k]) {
				snprintf(desc, dsize, "parameter '%s' is unexpected (expected device, "
					 "snapshot-file, format, mode)", key);
				return "GenericError";
			}
		}
	}
	if (!args || !json_object_object_get_ex(args, "device", &dev) ||
	    !json_object_is_type(dev, json_type_string) || !json_object_get_string_len(dev)) {
		snprintf(desc, dsize, "'device' (the disk: \"virtio-blk0\" or \"vda\") is required");
		return "GenericError";
	}
	if (!json_object_object_get_ex(args, "snapshot-file", &file) ||
	    !json_object_is_type(file, json_type_string) || !json_object_get_string_len(file)) {
		snprintf(desc, dsize, "'snapshot-file' (the overlay to create) is required");
		return "GenericError";
	}
	if (json_object_object_get_ex(args, "format", &o) &&
	    (!json_object_is_type(o, json_type_string) || strcmp(json_object_get_string(o), "qcow2"))) {
		snprintf(desc, dsize, "'format' %.64s: an overlay is qcow2 (the only format taken)",
			 json_object_to_json_string(o));
		return "GenericError";
	}
	if (json_object_object_get_ex(args, "mode", &o)) {
		const char *mode = json_object_is_type(o, json_type_string) ?
				   json_object_get_string(o) : "";

		if (!strcmp(mode, "existing")) {
			flags |= VMM_SNAP_EXISTING;
		} else if (strcmp(mode, "absolute-paths")) {
			snprintf(desc, dsize, "'mode' %.64s: expected \"absolute-paths\" (create the "
				 "file) or \"existing\"", json_object_to_json_string(o));
			return "GenericError";
		}
	}
	if (vmm_machine_disk_snapshot_start(c->m, json_object_get_string(dev),
					    json_object_get_string(file), flags, snapshot_done, c,
					    &err)) {
		snprintf(desc, dsize, "%s", err.msg);
		return "GenericError";
	}
	c->waiting = c->cur;
	(void)ret;
	return ctl_pending;
}

/* One row per command. qmp_capabilities is served by dispatch itself (it
 * changes the connection, not the VM). */
static const struct { const char *name; ctl_fn fn; } ctl_commands[] = {
	{ "query-status", cmd_query_status },
	{ "pause", cmd_pause },
	{ "resume", cmd_resume },
	{ "stop", cmd_stop },
	{ "quit", cmd_quit },
	{ "save", cmd_save },
	{ "blockdev-snapshot-sync", cmd_blockdev_snapshot_sync },
};

/* ---- connections ---- */

static void conn_close(struct ctl_conn *cc)
{
	struct vmm_control *c = cc->ctl;

	for (int i = 0; i < CTL_MAX_CONNS; i++)
		if (c->conns[i] == cc)
			c->conns[i] = NULL;
	if (c->waiting == cc)
		c->waiting = NULL;
	vmm_loop_del(&c->m->vm.loop, cc->fd);
	close(cc->fd);
	free(cc);
}

/* Send @o as one line, in one send: the kernel charges each send's buffer
 * (~768 bytes for a short line) to this socket, so a line sent in two
 * halved the backlog a client may have (139 event lines, not 278, with the
 * default wmem). A client that does not read gets cut off: a send that
 * would block (or sends part of the line) shuts the socket down, so
 * nothing is ever glued to a line cut short. */
static void conn_send(struct ctl_conn *cc, struct json_object *o)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	size_t n = strlen(s);
	char stack[1024], *buf = n < sizeof(stack) ? stack : malloc(n + 1);

	if (!buf) {
		shutdown(cc->fd, SHUT_RDWR);
		return;
	}
	memcpy(buf, s, n);
	buf[n++] = '\n';
	if (send(cc->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)n)
		shutdown(cc->fd, SHUT_RDWR);
	if (buf != stack)
		free(buf);
}

/* ---- events ---- */

/* vm->on_qevent: queue @ev (any thread, vm->lock held: only queues). */
static void ctl_qevent(void *opaque, const struct vmm_qevent *ev)
{
	struct vmm_control *c = opaque;
	bool io = ev->kind == VMM_QEV_BLOCK_IO_ERROR;
	struct ctl_event *e;
	uint64_t one = 1;

	pthread_mutex_lock(&c->evq_lock);
	if (c->evq_n == CTL_EVQ_MAX ||
	    (io && c->evq_io >= CTL_EVQ_IO_MAX + (ev->pauses ? CTL_EVQ_IO_PAUSES : 0))) {
		c->ev_dropped++;
		pthread_mutex_unlock(&c->evq_lock);
		return;
	}
	e = &c->evq[(c->evq_head + c->evq_n++) % CTL_EVQ_MAX];
	e->ev = *ev;
	e->ev.device = NULL;
	snprintf(e->device, sizeof(e->device), "%s", ev->device ? ev->device : "");
	gettimeofday(&e->tv, NULL);
	c->evq_io += io;
	pthread_mutex_unlock(&c->evq_lock);
	if (write(c->ev_fd, &one, sizeof(one)) < 0) {
		/* the counter is full: a wake-up is pending anyway */
	}
}

/* QMP's ShutdownCause for how the run ends, and whether the guest asked. */
static const char *shutdown_reason(enum vmm_exit_kind k, bool *guest)
{
	*guest = k == VMM_EXIT_GUEST || k == VMM_EXIT_RESET || k == VMM_EXIT_POWEROFF;
	switch (k) {
	case VMM_EXIT_GUEST:      /* the debug-exit port */
	case VMM_EXIT_POWEROFF:
		return "guest-shutdown";
	case VMM_EXIT_RESET:      /* ends the run, as QEMU's -no-reboot */
		return "guest-reset";
	case VMM_EXIT_SIGNAL:
		return "host-signal";
	case VMM_EXIT_QUIT:
		return "host-qmp-quit";
	case VMM_EXIT_FATAL:
		return "host-error";
	case VMM_EXIT_NONE:
	default:
		return "none";
	}
}

/* The event line's object: {"event": NAME, "data": {...}, "timestamp":
 * {"seconds": S, "microseconds": U}} ("data" only for events that have it,
 * as QEMU sends them). */
static struct json_object *ev_json(const struct ctl_event *e)
{
	static const char *const names[] = {
		[VMM_QEV_STOP] = "STOP", [VMM_QEV_RESUME] = "RESUME",
		[VMM_QEV_SHUTDOWN] = "SHUTDOWN", [VMM_QEV_BLOCK_IO_ERROR] = "BLOCK_IO_ERROR",
	};
	struct json_object *o = json_object_new_object(), *d = NULL, *ts;
	const char *reason;
	bool guest;

	json_object_object_add(o, "event", json_object_new_string(names[e->ev.kind]));
	switch (e->ev.kind) {
	case VMM_QEV_SHUTDOWN:
		reason = shutdown_reason(e->ev.exit_kind, &guest);
		d = json_object_new_object();
		json_object_object_add(d, "guest", json_object_new_boolean(guest));
		json_object_object_add(d, "reason", json_object_new_string(reason));
		break;
	case VMM_QEV_BLOCK_IO_ERROR:
		d = json_object_new_object();
		json_object_object_add(d, "device", json_object_new_string(e->device));
		json_object_object_add(d, "operation",
				       json_object_new_string(e->ev.write ? "write" : "read"));
		json_object_object_add(d, "action",
				       json_object_new_string(e->ev.stop ? "stop" : "report"));
		json_object_object_add(d, "nospace", json_object_new_boolean(
					       e->ev.error == -ENOSPC || e->ev.error == -EDQUOT));
		json_object_object_add(d, "reason", json_object_new_string(strerror(-e->ev.error)));
		break;
	case VMM_QEV_STOP:
	case VMM_QEV_RESUME:
		break;
	}
	if (d)
		json_object_object_add(o, "data", d);
	ts = json_object_new_object();
	json_object_object_add(ts, "seconds", json_object_new_int64((int64_t)e->tv.tv_sec));
	json_object_object_add(ts, "microseconds", json_object_new_int64((int64_t)e->tv.tv_usec));
	json_object_object_add(o, "timestamp", ts);
	return o;
}

/* Send every queued event to the connections that asked for events (loop
 * thread), in the order they were raised. */
static void ev_flush(struct vmm_control *c)
{
	struct ctl_event q[CTL_EVQ_MAX];
	unsigned n;

	pthread_mutex_lock(&c->evq_lock);
	n = c->evq_n;
	for (unsigned i = 0; i < n; i++)
		q[i] = c->evq[(c->evq_head + i) % CTL_EVQ_MAX];
	c->evq_head = c->evq_n = c->evq_io = 0;
	pthread_mutex_unlock(&c->evq_lock);
	for (unsigned i = 0; i < n; i++) {
		struct json_object *o = ev_json(&q[i]);

		for (int k = 0; k < CTL_MAX_CONNS; k++)
			if (c->conns[k] && c->conns[k]->events)
				conn_send(c->conns[k], o);
		json_object_put(o);
	}
}

static void ev_ready(void *opaque, uint32_t events)
{
	struct vmm_control *c = opaque;
	uint64_t n;

	(void)events;
	if (read(c->ev_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		return;
	ev_flush(c);
}

static void send_error(struct ctl_conn *cc, const char *cls, const char *desc)
{
	struct json_object *o = json_object_new_object(), *e = json_object_new_object();

	json_object_object_add(e, "class", json_object_new_string(cls));
	json_object_object_add(e, "desc", json_object_new_string(desc));
	json_object_object_add(o, "error", e);
	conn_send(cc, o);
	json_object_put(o);
}

static void send_return(struct ctl_conn *cc, struct json_object *ret)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "return", ret ? ret : json_object_new_object());
	conn_send(cc, o);
	json_object_put(o);
}

/* An error (@cls set) or a return (@ret, owned). */
static void conn_answer(struct ctl_conn *cc, const char *cls, const char *desc,
			struct json_object *ret)
{
	if (cls)
		send_error(cc, cls, desc);
	else
		send_return(cc, ret);
}

/* qmp_capabilities (as QMP's, but optional): the connection gets the event
 * lines from now on. No capability ("enable") is offered; a second call is
 * refused as QEMU refuses it. */
static void qmp_capabilities(struct ctl_conn *cc, struct json_object *args)
{
	struct json_object *en, *cap;
	char desc[128];

	if (cc->events) {
		send_error(cc, "CommandNotFound",
			   "Capabilities negotiation is already complete, command ignored");
		return;
	}
	if (args && json_object_object_get_ex(args, "enable", &en)) {
		if (!json_object_is_type(en, json_type_array)) {
			send_error(cc, "InvalidParameter", "'enable' must be an array");
			return;
		}
		if (json_object_array_length(en)) {
			cap = json_object_array_get_idx(en, 0);
			snprintf(desc, sizeof(desc), "Capability '%.64s' not available",
				 json_object_get_string(cap));
			send_error(cc, "GenericError", desc);
			return;
		}
	}
	/* what was raised before goes to the connections subscribed then */
	ev_flush(cc->ctl);
	cc->events = true;
	send_return(cc, NULL);
}

static void dispatch(struct ctl_conn *cc, const char *line)
{
	struct json_object *req = json_tokener_parse(line), *name, *args = NULL, *ret = NULL;
	char desc[UT_ERR_MSG_MAX] = "";
	const char *cls;

	if (!req || !json_object_is_type(req, json_type_object)) {
		send_error(cc, "GenericError", "request is not a JSON object");
		goto out;
	}
	if (!json_object_object_get_ex(req, "execute", &name) ||
	    !json_object_is_type(name, json_type_string)) {
		send_error(cc, "GenericError", "request has no \"execute\" string");
		goto out;
	}
	if (json_object_object_get_ex(req, "arguments", &args) &&
	    !json_object_is_type(args, json_type_object)) {
		send_error(cc, "InvalidParameter", "\"arguments\" must be an object");
		goto out;
	}
	if (!strcmp(json_object_get_string(name), "qmp_capabilities")) {
		qmp_capabilities(cc, args);
		goto out;
	}
	for (size_t i = 0; i < sizeof(ctl_commands) / sizeof(ctl_commands[0]); i++) {
		if (strcmp(ctl_commands[i].name, json_object_get_string(name)))
			continue;
		cc->ctl->cur = cc;
		cls = ctl_commands[i].fn(cc->ctl, args, &ret, desc, sizeof(desc));
		cc->ctl->cur = NULL;
		if (cls == ctl_pending) {
			cc->pending = true;
			vmm_loop_del(&cc->ctl->m->vm.loop, cc->fd);
			goto out;
		}
		ev_flush(cc->ctl);   /* what the command caused, before its reply */
		conn_answer(cc, cls, desc, ret);
		goto out;
	}
	snprintf(desc, sizeof(desc), "unknown command '%s'", json_object_get_string(name));
	send_error(cc, "CommandNotFound", desc);
out:
	json_object_put(req);
}

/* Serve the complete lines in @cc's buffer, up to one whose answer comes
 * later. */
static void conn_process(struct ctl_conn *cc)
{
	char *nl;

	while (!cc->pending && (nl = memchr(cc->buf, '\n', cc->len))) {
		*nl = '\0';
		if (nl > cc->buf && nl[-1] == '\r')
			nl[-1] = '\0';
		if (cc->buf[0])
			dispatch(cc, cc->buf);
		cc->len -= (size_t)(nl + 1 - cc->buf);
		memmove(cc->buf, nl + 1, cc->len);
		cc->buf[cc->len] = '\0';
	}
	if (!cc->pending && cc->len == sizeof(cc->buf) - 1) {
		send_error(cc, "GenericError", "request line longer than 64 KiB");
		conn_close(cc);
	}
}

static void conn_read(void *opaque, uint32_t events)
{
	struct ctl_conn *cc = opaque;
	ssize_t n;

	(void)events;
	n = recv(cc->fd, cc->buf + cc->len, sizeof(cc->buf) - 1 - cc->len, MSG_DONTWAIT);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		conn_close(cc);
		return;
	}
	cc->len += (size_t)n;
	cc->buf[cc->len] = '\0';
	conn_process(cc);
}

static void ctl_accept(void *opaque, uint32_t events)
{
	struct vmm_control *c = opaque;
	struct ctl_conn *cc;
	struct json_object *g, *v;
	int fd, slot = -1;

	(void)events;
	fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	for (int i = 0; i < CTL_MAX_CONNS; i++)
		if (!c->conns[i])
			slot = i;
	cc = slot >= 0 ? calloc(1, sizeof(*cc)) : NULL;
	if (!cc) {
		/* too many clients (or no memory): say so instead of the
		 * greeting (a new socket's buffer takes it), then close */
		static const char busy[] = "{\"error\": {\"class\": \"GenericError\", \"desc\": "
			"\"too many connections to the control socket (at most "
			CTL_MAX_CONNS_STR " at once)\"}}\n";

		if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
			/* closed at once anyway */
		}
		close(fd);
		return;
	}
	cc->ctl = c;
	cc->fd = fd;
	if (vmm_loop_add(&c->m->vm.loop, fd, EPOLLIN, conn_read, cc)) {
		close(fd);
		free(cc);
		return;
	}
	c->conns[slot] = cc;
	g = json_object_new_object();
	v = json_object_new_object();
	json_object_object_add(v, "version", json_object_new_string(COWVM_VERSION));
	json_object_object_add(v, "pid", json_object_new_int(getpid()));
	json_object_object_add(g, "cowvm", v);
	conn_send(cc, g);
	json_object_put(g);
}

int vmm_control_open(struct vmm_machine *m, const char *path, struct vmm_control **out,
		     struct ut_err *err)
{
	struct vmm_control *c;
	int r;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c || !(c->path = strdup(path))) {
		free(c);
		return ut_errf(err, -ENOMEM, "out of memory");
	}
	c->m = m;
	c->stop_timer = -1;
	pthread_mutex_init(&c->evq_lock, NULL);
	c->ev_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->ev_fd < 0) {
		r = ut_errf_sys(err, -errno, "unable to create the control socket's event queue");
		goto out;
	}
	r = vmm_loop_add(&m->vm.loop, c->ev_fd, EPOLLIN, ev_ready, c);
	if (r) {
		ut_errf_sys(err, r, "unable to watch the control socket's event queue");
		goto out;
	}
	c->fd = ut_unix_listen(path, "control socket", err);
	if (c->fd < 0) {
		r = c->fd;
		goto out_ev;
	}
	r = vmm_loop_add(&m->vm.loop, c->fd, EPOLLIN, ctl_accept, c);
	if (r) {
		ut_errf_sys(err, r, "unable to watch the control socket");
		close(c->fd);
		unlink(path);
		goto out_ev;
	}
	pthread_mutex_lock(&m->vm.lock);
	m->vm.on_qevent = ctl_qevent;
	m->vm.on_qevent_opaque = c;
	pthread_mutex_unlock(&m->vm.lock);
	*out = c;
	return 0;
out_ev:
	vmm_loop_del(&m->vm.loop, c->ev_fd);
out:
	if (c->ev_fd >= 0)
		close(c->ev_fd);
	pthread_mutex_destroy(&c->evq_lock);
	free(c->path);
	free(c);
	return r;
}

void vmm_control_close(struct vmm_control *c)
{
	if (!c)
		return;
	/* no more events; what is queued (SHUTDOWN, at exit) goes out first */
	pthread_mutex_lock(&c->m->vm.lock);
	c->m->vm.on_qevent = NULL;
	c->m->vm.on_qevent_opaque = NULL;
	pthread_mutex_unlock(&c->m->vm.lock);
	ev_flush(c);
	if (c->ev_dropped)
		vmm_vm_event(&c->m->vm, "control socket: %llu event(s) were dropped (more than %d "
			     "waiting at once)", c->ev_dropped, CTL_EVQ_MAX);
	for (int i = 0; i < CTL_MAX_CONNS; i++)
		if (c->conns[i])
			conn_close(c->conns[i]);
	vmm_loop_del(&c->m->vm.loop, c->ev_fd);
	close(c->ev_fd);
	pthread_mutex_destroy(&c->evq_lock);
	vmm_loop_del(&c->m->vm.loop, c->fd);
	close(c->fd);
	if (c->stop_timer >= 0) {
		vmm_loop_del(&c->m->vm.loop, c->stop_timer);
		close(c->stop_timer);
	}
	unlink(c->path);
	free(c->path);
	free(c);
}
