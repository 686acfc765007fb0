/* core/console.c — console sinks and sources; see console.h. */
#include "core/console.h"
#include "core/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONSOLE_ESCAPE 0x01   /* Ctrl-A */

static void console_input(void *opaque, uint32_t events)
{
	struct vmm_console *c = opaque;
	uint8_t buf[256], out[256];
	size_t n = 0;
	ssize_t got;

	(void)events;
	got = read(c->in_fd, buf, sizeof(buf));
	if (got <= 0) {
		if (got < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		vmm_loop_del(&c->vm->loop, c->in_fd);   /* EOF: no more input */
		c->in_fd = -1;
		return;
	}
	for (ssize_t i = 0; i < got; i++) {
		if (c->tty_raw && c->escape) {
			c->escape = false;
			if (buf[i] == 'x') {
				vmm_vm_request_exit(c->vm, VMM_EXIT_QUIT, 0);
				return;
			}
			if (buf[i] != CONSOLE_ESCAPE)
				continue;
		} else if (c->tty_raw && buf[i] == CONSOLE_ESCAPE) {
			c->escape = true;
			continue;
		}
		out[n++] = buf[i];
	}
	if (n && c->rx)
		c->rx(c->rx_opaque, out, n);
}

int vmm_console_open(struct vmm_console *c, struct vmm_vm *vm, const char *spec,
		     vmm_console_rx_fn rx, void *opaque, struct ut_err *err)
{
	int r;

	memset(c, 0, sizeof(*c));
	c->out_fd = c->in_fd = c->listen_fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	for (int i = 0; i < VMM_CONSOLE_MAX_CLIENTS; i++)
		c->clients[i] = -1;
	c->vm = vm;
	c->rx = rx;
	c->rx_opaque = opaque;
	if (!strcmp(spec, "none"))
		return 0;
	if (!strncmp(spec, "file:", 5)) {
		if (!spec[5])
			return ut_errf(err, -EINVAL, "console 'file:' needs a path");
		c->out_fd = open(spec + 5, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
		if (c->out_fd < 0)
			return ut_errf_sys(err, -errno, "unable to open console file '%s'", spec + 5);
		c->own_out = true;
		return 0;
	}
	if (strcmp(spec, "stdio"))
		return ut_errf(err, -EINVAL, "console '%s': expected stdio, file:PATH or none", spec);
	c->out_fd = STDOUT_FILENO;
	c->in_fd = STDIN_FILENO;
	if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &c->saved) == 0) {
		struct termios raw = c->saved;

		cfmakeraw(&raw);
		raw.c_oflag |= OPOST | ONLCR;
		if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0)
			c->tty_raw = true;
	}
	r = vmm_loop_add(&vm->loop, c->in_fd, EPOLLIN, console_input, c);
	if (r == -EPERM) {
		c->in_fd = -1;   /* a regular file or /dev/null: no input */
		r = 0;
	}
	if (r)
		return ut_errf_sys(err, r, "unable to watch console input");
	return 0;
}

static void client_drop(struct vmm_console *c, int i)
{
	vmm_loop_del(&c->vm->loop, c->clients[i]);
	close(c->clients[i]);
	c->clients[i] = -1;
}

static void client_input(void *opaque, uint32_t events)
{
	struct vmm_console *c = opaque;
	uint8_t buf[256];

	(void)events;
	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < VMM_CONSOLE_MAX_CLIENTS; i++) {
		ssize_t n;

		if (c->clients[i] < 0)
			continue;
		n = recv(c->clients[i], buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			client_drop(c, i);
		} else if (n > 0 && c->rx) {
			pthread_mutex_unlock(&c->lock);
			c->rx(c->rx_opaque, buf, (size_t)n);
			pthread_mutex_lock(&c->lock);
		}
	}
	pthread_mutex_unlock(&c->lock);
}

static void client_accept(void *opaque, uint32_t events)
{
	struct vmm_console *c = opaque;
	int fd, slot = -1;

	(void)events;
	fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < VMM_CONSOLE_MAX_CLIENTS && slot < 0; i++)
		if (c->clients[i] < 0)
			slot = i;
	if (slot < 0 || vmm_loop_add(&c->vm->loop, fd, EPOLLIN, client_input, c)) {
		close(fd);
	} else {
		c->clients[slot] = fd;
	}
	pthread_mutex_unlock(&c->lock);
}

int vmm_console_listen(struct vmm_console *c, const char *path, struct ut_err *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return ut_errf(err, -ENAMETOOLONG, "console socket path '%s' is too long", path);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return ut_errf(err, -EEXIST, "'%s' exists and is not a socket", path);
		unlink(path);
	}
	c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->listen_fd < 0)
		return ut_errf_sys(err, -errno, "unable to create the console socket");
	strcpy(sa.sun_path, path);
	old = umask(0177);
	r = bind(c->listen_fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || listen(c->listen_fd, 4) < 0) {
		r = ut_errf_sys(err, -errno, "unable to listen on console socket '%s'", path);
		goto out;
	}
	r = vmm_loop_add(&c->vm->loop, c->listen_fd, EPOLLIN, client_accept, c);
	if (r) {
		ut_errf_sys(err, r, "unable to watch the console socket");
		unlink(path);
		goto out;
	}
	c->sock_path = strdup(path);
	return 0;
out:
	close(c->listen_fd);
	c->listen_fd = -1;
	return r;
}

void vmm_console_write(struct vmm_console *c, const uint8_t *buf, size_t len)
{
	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < VMM_CONSOLE_MAX_CLIENTS; i++) {
		if (c->clients[i] >= 0 &&
		    send(c->clients[i], buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)len)
			shutdown(c->clients[i], SHUT_RDWR);   /* too slow or gone: the loop drops it */
	}
	pthread_mutex_unlock(&c->lock);
	while (c->out_fd >= 0 && len) {
		ssize_t n = write(c->out_fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				usleep(1000);
				continue;
			}
			return;
		}
		buf += n;
		len -= (size_t)n;
	}
}

void vmm_console_close(struct vmm_console *c)
{
	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < VMM_CONSOLE_MAX_CLIENTS; i++)
		if (c->clients[i] >= 0)
			client_drop(c, i);
	pthread_mutex_unlock(&c->lock);
	if (c->listen_fd >= 0) {
		vmm_loop_del(&c->vm->loop, c->listen_fd);
		close(c->listen_fd);
		c->listen_fd = -1;
	}
	if (c->sock_path) {
		unlink(c->sock_path);
		free(c->sock_path);
		c->sock_path = NULL;
	}
	if (c->tty_raw)
		tcsetattr(STDIN_FILENO, TCSANOW, &c->saved);
	c->tty_raw = false;
	if (c->own_out && c->out_fd >= 0)
		close(c->out_fd);
	c->out_fd = -1;
}
