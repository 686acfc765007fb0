/* cli/vmm-catalog.c — the VMM's side of the lifecycle protocol ("Lifecycle
 * protocol" in catalog/catalog.h), for `cowvm run --catalog-vm NAME`, the
 * process `cowvm start` launches. The VMM records two transitions itself:
 *
 *   guest runs    STARTING -> RUNNING ("running"), from the vmm_machine
 *                 on_running hook: after the vCPUs started, before the
 *                 control socket serves anything, so a client that got an
 *                 answer from the socket finds the catalog saying running;
 *   run ends      ACTIVE -> STOPPED ("stopped"; "start" when the guest never
 *                 ran), result "ok", "exit status N" or the fatal message;
 *                 also when the machine could not even be built.
 *
 * Both only touch a row that names this process as its VMM (pid), so a
 * `cowvm run --catalog-vm` started by hand cannot take over a VM: its
 * running step fails and ends the run. Pause and resume are recorded by the
 * CLI after the VMM acknowledged them (cli/cmd-lifecycle.c): the VMM's event
 * loop never waits for the catalog lock while it serves the guest.
 *
 * It also records what changes the VM's definition while it runs:
 *
 *   disk snapshot the on_disk_snapshot hook (control command
 *                 blockdev-snapshot-sync): between the overlay's creation
 *                 and the disk's switch to it, the overlay becomes the
 *                 disk's image in the catalog, its parent the old one
 *                 (cat_disk_snapshot), so the next `cowvm start` opens the
 *                 overlay, not the image that is now its backing file; put
 *                 back (cat_disk_snapshot_undo) if the switch then fails,
 *                 before the overlay's file is removed: when that undo
 *                 fails the file is kept (core/snapshot.c), so the
 *                 catalog never names a removed file.
 *                 The hook runs on the loop thread just before the disk's
 *                 drained section (no kick is served meanwhile; the
 *                 vCPUs run): the catalog lock is waited for at most
 *                 CLI_SNAP_CATALOG_WAIT_MS, well below the control
 *                 client's timeout, then the snapshot fails cleanly.
 *
 * Each step opens the catalog, runs one short transaction and closes it.
 * catalog/ stays out of core/: this file is the only link.
 */
#include "cli/cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "catalog/catalog.h"
#include "core/machine.h"

/* Open the catalog and check VM @name names this process as its VMM.
 * Returns 0 (with *db open), or -errno with @err. */
static int open_own(const char *name, struct cat_db **db, struct ut_err *err)
{
	struct cat_vm vm = { 0 };
	int r;

	*db = NULL;
	r = cat_open(db, NULL, err);
	if (r < 0)
		goto out;
	r = cat_vm_get(*db, name, &vm, err);
	if (r < 0)
		goto out;
	if (vm.pid != getpid())
		r = ut_errf(err, -ESRCH, "the catalog does not record this process (pid %d) as "
			    "the VMM of VM '%s' (it is %s%s): catalog VMs are started with "
			    "'cowvm start'", (int)getpid(), name, cat_vm_state_name(vm.state),
			    vm.pid > 0 ? ", with another VMM" : "");
out:
	if (r < 0) {
		cat_close(*db);
		*db = NULL;
	}
	cat_vm_clear(&vm);
	return r;
}

int cli_vmm_catalog_running(struct vmm_machine *m, void *opaque, struct ut_err *err)
{
	struct cli_vmm_catalog *cv = opaque;
	struct cat_db *db = NULL;
	int r;

	(void)m;
	r = open_own(cv->name, &db, err);
	if (r == 0)
		r = cat_vm_transition(db, cv->name, CAT_ST(CAT_VM_STARTING), CAT_VM_RUNNING, NULL,
				      "running", NULL, NULL, err);
	if (r == 0)
		cv->ran = true;
	else
		ut_err_prefix(err, "unable to record VM '%s' as running", cv->name);
	cat_close(db);
	return r;
}

int cli_vmm_catalog_disk_snapshot(struct vmm_machine *m, void *opaque,
				  const struct vmm_disk_snapshot *s, bool undo, struct ut_err *err)
{
	struct cli_vmm_catalog *cv = opaque;
	struct cat_db *db = NULL;
	int r;

	(void)m;
	cat_wait_limit(CLI_SNAP_CATALOG_WAIT_MS);
	r = open_own(cv->name, &db, err);
	if (r == 0 && !undo)
		r = cat_disk_snapshot(db, cv->name, (size_t)s->disk, s->image, s->overlay,
				      s->virtual_size > INT64_MAX ? -1 : (int64_t)s->virtual_size, err);
	else if (r == 0)
		r = cat_disk_snapshot_undo(db, cv->name, (size_t)s->disk, s->overlay, err);
	if (r)
		ut_err_prefix(err, "the catalog %s", undo ? "keeps the overlay as the disk's image" :
			      "cannot record the overlay");
	cat_close(db);
	cat_wait_limit(0);
	return r;
}

void cli_vmm_catalog_exit(const struct cli_vmm_catalog *cv, int status, const struct ut_err *why)
{
	struct cat_db *db = NULL;
	struct ut_err err = { 0, "" };
	char result[UT_ERR_MSG_MAX];
	int r;

	if (why && why->code)
		snprintf(result, sizeof(result), "%s", why->msg[0] ? why->msg : strerror(-why->code));
	else if (status)
		snprintf(result, sizeof(result), "exit status %d", status);
	else
		snprintf(result, sizeof(result), "ok");
	r = open_own(cv->name, &db, &err);
	if (r == -ESRCH)
		goto out;   /* not ours (any more): nothing to record */
	if (r == 0)
		r = cat_vm_transition(db, cv->name, CAT_ST_ACTIVE, CAT_VM_STOPPED, NULL,
				      cv->ran ? "stopped" : "start", result, NULL, &err);
	if (r < 0) {
		ut_err_prefix(&err, "unable to record VM '%s' as stopped", cv->name);
		cli_error_err(&err);
	}
out:
	cat_close(db);
}
