/* core/loop.c — epoll event loop; see loop.h. */
#include "core/loop.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct vmm_loop_src {
	int fd;
	bool dead;
	vmm_loop_fn fn;
	void *opaque;
	struct vmm_loop_src *next;
};

static void loop_wake_cb(void *opaque, uint32_t events)
{
	struct vmm_loop *l = opaque;
	uint64_t v;

	(void)events;
	if (read(l->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
}

int vmm_loop_init(struct vmm_loop *l)
{
	int r;

	memset(l, 0, sizeof(*l));
	l->wake_fd = -1;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		return -errno;
	l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->wake_fd < 0) {
		r = -errno;
		goto out;
	}
	r = vmm_loop_add(l, l->wake_fd, EPOLLIN, loop_wake_cb, l);
	if (!r)
		return 0;
out:
	vmm_loop_exit(l);
	return r;
}

void vmm_loop_exit(struct vmm_loop *l)
{
	struct vmm_loop_src *s = l->srcs, *n;

	for (; s; s = n) {
		n = s->next;
		free(s);
	}
	l->srcs = NULL;
	if (l->wake_fd >= 0)
		close(l->wake_fd);
	if (l->epfd >= 0)
		close(l->epfd);
	l->wake_fd = l->epfd = -1;
}

int vmm_loop_add(struct vmm_loop *l, int fd, uint32_t events, vmm_loop_fn fn, void *opaque)
{
	struct vmm_loop_src *s = calloc(1, sizeof(*s));
	struct epoll_event ev = { .events = events };

	if (!s)
		return -ENOMEM;
	s->fd = fd;
	s->fn = fn;
	s->opaque = opaque;
	ev.data.ptr = s;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int r = -errno;

		free(s);
		return r;
	}
	s->next = l->srcs;
	l->srcs = s;
	return 0;
}

void vmm_loop_del(struct vmm_loop *l, int fd)
{
	for (struct vmm_loop_src *s = l->srcs; s; s = s->next) {
		if (s->fd == fd && !s->dead) {
			epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
			s->dead = true;   /* freed after the current batch of events */
			return;
		}
	}
}

static void loop_reap_dead(struct vmm_loop *l)
{
	struct vmm_loop_src **pp = &l->srcs;

	while (*pp) {
		struct vmm_loop_src *s = *pp;

		if (s->dead) {
			*pp = s->next;
			free(s);
		} else {
			pp = &s->next;
		}
	}
}

int vmm_loop_run_once(struct vmm_loop *l, int timeout_ms)
{
	struct epoll_event evs[32];
	int n = epoll_wait(l->epfd, evs, 32, timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n && !atomic_load(&l->quit); i++) {
		struct vmm_loop_src *s = evs[i].data.ptr;

		if (!s->dead)
			s->fn(s->opaque, evs[i].events);
	}
	loop_reap_dead(l);
	return n;
}

int vmm_loop_run(struct vmm_loop *l)
{
	while (!atomic_load(&l->quit)) {
		int r = vmm_loop_run_once(l, -1);

		if (r < 0)
			return r;
	}
	return 0;
}

void vmm_loop_quit(struct vmm_loop *l)
{
	atomic_store(&l->quit, true);
	vmm_loop_wake(l);
}

void vmm_loop_wake(struct vmm_loop *l)
{
	uint64_t one = 1;

	if (write(l->wake_fd, &one, sizeof(one)) < 0)
		return;
}
