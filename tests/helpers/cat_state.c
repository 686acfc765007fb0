/* tests/helpers/cat_state.c — set a VM's runtime state as a VMM would.
 *
 * usage: cat_state NAME STATE [PID]
 * Records STATE (stopped, running, ...) for VM NAME in the catalog of
 * $COWVM_HOME with cat_vm_transition, whatever the current state; with PID,
 * records that process (and its start time) as the VMM and the VM's control
 * socket path. Lets tests exercise list/show/rm against running and dead
 * VMMs before the real VMM exists.
 */
#include <stdio.h>
#include <stdlib.h>

#include "catalog/catalog.h"

int main(int argc, char **argv)
{
	struct cat_vm_paths paths = { 0 };
	struct cat_runtime rt = { 0 };
	enum cat_vm_state st;
	struct cat_db *db = NULL;
	struct ut_err err;
	int ret = 1;

	ut_err_clear(&err);
	if (argc < 3 || cat_vm_state_parse(argv[2], &st) < 0) {
		fprintf(stderr, "usage: cat_state NAME STATE [PID]\n");
		return 2;
	}
	if (cat_open(&db, NULL, &err) < 0 || cat_vm_paths(db, argv[1], &paths, &err) < 0)
		goto out;
	if (argc > 3) {
		rt.pid = (pid_t)atoi(argv[3]);
		rt.ctl_socket = paths.ctl_socket;
	}
	if (cat_vm_transition(db, argv[1], CAT_ST_ANY, st, argc > 3 ? &rt : NULL, "test",
			      NULL, NULL, &err) < 0)
		goto out;
	ret = 0;
out:
	if (ret)
		fprintf(stderr, "cat_state: %s\n", err.msg);
	cat_vm_paths_clear(&paths);
	cat_close(db);
	return ret;
}
