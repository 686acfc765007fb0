/* core/control.h — the VMM's control socket.
 *
 * A UNIX stream socket (mode 0600). On connect the VMM sends a greeting line,
 * {"cowvm": {"version": V, "pid": P}}; then each request is one JSON object
 * per line, {"execute": NAME, "arguments": {...}}, answered by one line,
 * {"return": {...}} or {"error": {"class": C, "desc": TEXT}} — the shape QMP
 * users know. Commands are rows in a table (core/control.c): query-status,
 * pause, resume, stop, quit, save; later issues add clone and migrate.
 * Requests are served on the VM's event loop thread, one at a time.
 */
#ifndef VMM_CONTROL_H
#define VMM_CONTROL_H

#include "util/err.h"

struct vmm_machine;
struct vmm_control;

/* Listen on @path (an existing socket file is replaced; any other file is an
 * error). Returns 0 with *out set or -errno with @err. */
int vmm_control_open(struct vmm_machine *m, const char *path, struct vmm_control **out,
		     struct ut_err *err);

/* Close every connection, remove the socket file. NULL is fine. */
void vmm_control_close(struct vmm_control *c);

#endif
