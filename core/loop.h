/* core/loop.h — the VMM's event loop (epoll), run by the main thread.
 *
 * Serves stdin (console input), signals (signalfd), ioeventfds of virtio
 * queues, storage completion eventfds and, later, the control socket.
 * Callbacks run on the loop thread, one at a time.
 */
#ifndef VMM_LOOP_H
#define VMM_LOOP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef void (*vmm_loop_fn)(void *opaque, uint32_t events);

struct vmm_loop_src;

struct vmm_loop {
	int epfd;
	int wake_fd;               /* eventfd: vmm_loop_wake() */
	atomic_bool quit;           /* vmm_loop_quit, from any thread */
	struct vmm_loop_src *srcs;
};

/* Create the loop. Returns 0 or -errno. */
int vmm_loop_init(struct vmm_loop *l);
void vmm_loop_exit(struct vmm_loop *l);

/* Watch @fd for @events (EPOLLIN...); @fn(opaque, revents) runs on readiness.
 * The loop does not own @fd. Returns 0 or -errno. */
int vmm_loop_add(struct vmm_loop *l, int fd, uint32_t events, vmm_loop_fn fn, void *opaque);
/* Stop watching @fd. Safe to call from a callback (even for its own fd). */
void vmm_loop_del(struct vmm_loop *l, int fd);

/* Run until vmm_loop_quit(). Returns 0 or -errno on an epoll failure. */
int vmm_loop_run(struct vmm_loop *l);
/* Wait up to @timeout_ms (-1: forever) and run the callbacks of what is ready,
 * once. Returns the number of events handled or -errno. For tests and tools
 * that drive devices without vCPUs. */
int vmm_loop_run_once(struct vmm_loop *l, int timeout_ms);
/* Make vmm_loop_run return; callable from any thread. */
void vmm_loop_quit(struct vmm_loop *l);
/* Wake the loop without quitting (e.g. after queueing work for it). */
void vmm_loop_wake(struct vmm_loop *l);

#endif
