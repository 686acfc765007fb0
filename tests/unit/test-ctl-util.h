/* tests/unit/test-ctl-util.h — a client of the VMM control socket
 * (core/control.c) for unit tests that run the VM's event loop themselves:
 * a machine without KVM serving the socket, connect, read one line while
 * pumping the loop, send a line, subscribe to events. */
#ifndef TEST_CTL_UTIL_H
#define TEST_CTL_UTIL_H

#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/control.h"
#include "core/loop.h"
#include "core/machine.h"
#include "tests/unit/test-vm-util.h"

/* @m (zeroed here) as a machine without vCPUs or devices, resumable, whose
 * loop serves a control socket at @path (@size bytes: /tmp/cowvm-@tag-PID.sock).
 * Dies on failure. vmm_control_close and vmm_vm_destroy undo it. */
static inline void tc_machine_start(struct vmm_machine *m, char *path, size_t size,
				    const char *tag)
{
	struct ut_err err = { 0, "" };

	memset(m, 0, sizeof(*m));
	vmm_vm_preinit(&m->vm);
	m->sig_fd = -1;
	if (vmm_loop_init(&m->vm.loop))
		tv_die("vmm_loop_init");
	snprintf(path, size, "/tmp/cowvm-%s-%d.sock", tag, (int)getpid());
	if (vmm_control_open(m, path, &m->ctl, &err)) {
		fprintf(stderr, "vmm_control_open: %s\n", err.msg);
		exit(1);
	}
	m->vm.resumable = true;
}

/* Connect to the control socket at @path (dies on failure). */
static inline int tc_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		tv_die("connect");
	return fd;
}

/* One line from @fd, read byte by byte (the rest stays in the socket),
 * running @loop (NULL: sleeping 10 ms) while nothing waits, 200 times at
 * most. Returns the line (a static buffer, without its newline), or NULL
 * on EOF or when none came. */
static inline char *tc_line(int fd, struct vmm_loop *loop)
{
	static char buf[4096];
	size_t n = 0;

	for (int tries = 0; tries < 200 && n < sizeof(buf) - 1;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (poll(&p, 1, 0) <= 0) {
			if (loop)
				vmm_loop_run_once(loop, 10);
			else
				usleep(10000);
			tries++;
			continue;
		}
		r = read(fd, buf + n, 1);
		if (r <= 0)
			return NULL;
		if (buf[n] == '\n') {
			buf[n] = '\0';
			return buf;
		}
		n++;
	}
	return NULL;
}

/* Write the whole of @s to @fd (dies on failure). */
static inline void tc_send(int fd, const char *s)
{
	if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
		tv_die("write");
}

/* Read the greeting on @fd and subscribe to events (qmp_capabilities),
 * running @loop; checks both lines. */
static inline void tc_subscribe(int fd, struct vmm_loop *loop)
{
	CHECK_STR(tc_line(fd, loop) ?: "EOF", "\"cowvm\"");
	tc_send(fd, "{\"execute\": \"qmp_capabilities\"}\n");
	CHECK_STR(tc_line(fd, loop) ?: "EOF", "{\"return\":{}}");
}

#endif
