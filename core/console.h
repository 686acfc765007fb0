/* core/console.h — where the guest's serial console goes and comes from.
 *
 * Output: stdout, a file, or nowhere, and also every client attached to the
 * console socket (vmm_console_listen; `cowvm console`). Input: stdin when the
 * console is stdio (raw mode on a terminal, with QEMU's escape: Ctrl-A x ends
 * the run, Ctrl-A Ctrl-A sends Ctrl-A), and what socket clients send.
 * A socket client that cannot keep up is disconnected; the guest never waits.
 */
#ifndef VMM_CONSOLE_H
#define VMM_CONSOLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <termios.h>

#include "util/err.h"

struct vmm_vm;

#define VMM_CONSOLE_MAX_CLIENTS 8

typedef void (*vmm_console_rx_fn)(void *opaque, const uint8_t *buf, size_t len);

struct vmm_console {
	int out_fd;               /* -1: output dropped */
	bool own_out;             /* out_fd opened by us */
	int in_fd;                /* -1: no input */
	bool tty_raw;             /* terminal attributes to restore */
	bool escape;              /* saw Ctrl-A */
	struct termios saved;
	struct vmm_vm *vm;
	vmm_console_rx_fn rx;
	void *rx_opaque;
	/* console socket */
	pthread_mutex_t lock;     /* guards clients (written by vCPUs, changed by the loop) */
	int listen_fd;            /* -1: none */
	char *sock_path;
	int clients[VMM_CONSOLE_MAX_CLIENTS];
};

/* Set up from a spec: "stdio", "file:PATH" or "none". Input is read by the
 * VM's event loop and handed to @rx. Returns 0 or -errno with @err set. */
int vmm_console_open(struct vmm_console *c, struct vmm_vm *vm, const char *spec,
		     vmm_console_rx_fn rx, void *opaque, struct ut_err *err);
/* Also serve the console on the UNIX socket @path (mode 0600; an existing
 * socket file is replaced, any other file refused). Returns 0 or -errno. */
int vmm_console_listen(struct vmm_console *c, const char *path, struct ut_err *err);

/* Write guest output (all of it; retries short writes; drops on error). */
void vmm_console_write(struct vmm_console *c, const uint8_t *buf, size_t len);
/* Restore the terminal and close what we opened. */
void vmm_console_close(struct vmm_console *c);

#endif
