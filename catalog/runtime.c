/* catalog/runtime.c — runtime state of VMs: transitions (start, pause, stop,
 * ...) recorded by the CLI and the VMM, and detection of VMMs that died. */
#include "catalog/db.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* /proc/PID/stat of @pid into @buf, returning a pointer to the text after
 * the command name's closing ')' (the command may contain spaces and ')'),
 * i.e. " STATE PPID ..."; NULL when there is no such process. */
static const char *proc_stat_fields(pid_t pid, char *buf, size_t size)
{
	char path[64];
	FILE *f;
	size_t n;

	if (pid <= 0)
		return NULL;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return NULL;
	n = fread(buf, 1, size - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strrchr(buf, ')') ? strrchr(buf, ')') + 1 : NULL;
}

uint64_t cat_pid_start_time(pid_t pid)
{
	char buf[1024];
	const char *p = proc_stat_fields(pid, buf, sizeof(buf));
	unsigned long long start = 0;

	/* field 3 (state) follows ')'; field 22 (starttime): skip 19 fields */
	for (int field = 3; field < 22 && p; field++)
		p = strchr(p + 1, ' ');
	if (p)
		sscanf(p, " %llu", &start);
	return start;
}

/* Read state, pid and pid_start of VM @name inside the caller's transaction.
 * Returns 1 when found, 0 when not. */
static int read_runtime(sqlite3 *h, const char *name, enum cat_vm_state *state,
			pid_t *pid, uint64_t *pid_start, struct ut_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc, ret;

	ret = cat_prepare(h, "SELECT state, pid, pid_start FROM vms WHERE name = ?1", &st, err);
	if (ret < 0)
		return ret;
	cat_bind_text(st, 1, name);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		if (cat_vm_state_parse((const char *)sqlite3_column_text(st, 0), state) < 0)
			*state = CAT_VM_CRASHED;
		*pid = (pid_t)sqlite3_column_int64(st, 1);
		*pid_start = (uint64_t)sqlite3_column_int64(st, 2);
		ret = 1;
	} else if (rc == SQLITE_DONE) {
		ret = 0;
	} else {
		ret = cat_sql_err(h, rc, err, "unable to read the VM's state");
	}
	sqlite3_finalize(st);
	return ret;
}

/* Set the runtime columns. @clear drops pid and socket; else @rt (may be
 * NULL = keep) sets them. */
static int write_runtime(struct cat_db *db, const char *name, enum cat_vm_state to,
			 const struct cat_runtime *rt, int clear, struct ut_err *err)
{
	static const char keep[] =
		"UPDATE vms SET state = ?2, updated = ?3 WHERE name = ?1";
	static const char set[] =
		"UPDATE vms SET state = ?2, updated = ?3, pid = ?4, pid_start = ?5, "
		"ctl_socket = ?6 WHERE name = ?1";
	sqlite3_stmt *st = NULL;
	int rc, ret;

	ret = cat_prepare(db->h, (clear || rt) ? set : keep, &st, err);
	if (ret < 0)
		return ret;
	cat_bind_text(st, 1, name);
	cat_bind_text(st, 2, cat_vm_state_name(to));
	sqlite3_bind_int64(st, 3, cat_now_ms());
	if (!clear && rt && rt->pid > 0) {
		uint64_t start = rt->pid_start ? rt->pid_start : cat_pid_start_time(rt->pid);

		sqlite3_bind_int64(st, 4, rt->pid);
		sqlite3_bind_int64(st, 5, (int64_t)start);
	} else if (clear || rt) {
		sqlite3_bind_null(st, 4);
		sqlite3_bind_null(st, 5);
	}
	if (clear || rt)
		cat_bind_text(st, 6, clear ? NULL : rt->ctl_socket);
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		ret = cat_sql_err(db->h, rc, err, "unable to record the VM's state");
	sqlite3_finalize(st);
	return ret;
}

static void describe_mask(unsigned mask, char *buf, size_t len)
{
	size_t off = 0;
	int first = 1;

	buf[0] = '\0';
	for (int s = 0; s < CAT_VM_STATE_COUNT && off < len; s++) {
		if (!(mask & CAT_ST(s)))
			continue;
		off += (size_t)snprintf(buf + off, len - off, "%s%s", first ? "" : " or ",
					cat_vm_state_name((enum cat_vm_state)s));
		first = 0;
	}
}

int cat_vm_transition(struct cat_db *db, const char *name, unsigned from,
		      enum cat_vm_state to, const struct cat_runtime *rt,
		      const char *action, const char *result,
		      enum cat_vm_state *old, struct ut_err *err)
{
	enum cat_vm_state cur = CAT_VM_STOPPED;
	uint64_t pid_start;
	char want[128];
	pid_t pid;
	int ret;

	if ((unsigned)to >= CAT_VM_STATE_COUNT)
		return ut_errf(err, -EINVAL, "invalid VM state %d", (int)to);
	ret = cat_tx_begin(db, err);
	if (ret < 0)
		goto out;
	ret = read_runtime(db->h, name, &cur, &pid, &pid_start, err);
	if (ret == 0)
		ret = ut_errf(err, -ENOENT, "no VM named '%s'", name);
	if (ret < 0)
		goto out;
	if (old)
		*old = cur;
	if (!(from & CAT_ST(cur))) {
		describe_mask(from, want, sizeof(want));
		ret = ut_errf(err, -EBUSY, "VM '%s' is %s, not %s", name, cat_vm_state_name(cur),
			      want);
		goto out;
	}
	ret = write_runtime(db, name, to, rt,
			    to == CAT_VM_STOPPED || to == CAT_VM_CRASHED, err);
	if (ret == 0)
		ret = cat_event_add_tx(db, name, action ? action : cat_vm_state_name(to),
				       result ? result : "ok", err);
	if (ret == 0)
		ret = cat_tx_commit(db, err);
out:
	if (db->in_tx)
		cat_tx_rollback(db);
	return ret;
}

/* Is @pid a zombie (ended, not yet reaped)? An orphaned VMM stays one for
 * good under an init that does not reap (some containers). */
static int pid_zombie(pid_t pid)
{
	char buf[1024];
	const char *p = proc_stat_fields(pid, buf, sizeof(buf));

	return p && p[0] == ' ' && (p[1] == 'Z' || p[1] == 'X');
}

int cat_pid_alive(pid_t pid, uint64_t pid_start)
{
	uint64_t now;

	if (pid <= 0)
		return 0;
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return 0;
	now = cat_pid_start_time(pid);
	if (!now)               /* no /proc entry: gone (or /proc missing) */
		return kill(pid, 0) == 0 || errno == EPERM;
	if (pid_zombie(pid))
		return 0;
	return !pid_start || now == pid_start;
}

int cat_vm_refresh(struct cat_db *db, struct cat_vm *vm, struct ut_err *err)
{
	struct cat_vm_paths paths = { 0 };
	enum cat_vm_state cur;
	uint64_t cur_start;
	pid_t cur_pid;
	int ret;

	if (!(CAT_ST(vm->state) & CAT_ST_ACTIVE))
		return 0;
	if (cat_pid_alive(vm->pid, vm->pid_start))
		return 0;
	/* A VMM being launched has no pid yet: give `start` its time. */
	if (vm->state == CAT_VM_STARTING && vm->pid <= 0)
		return 0;
	ret = cat_tx_begin(db, err);
	if (ret < 0)
		goto out;
	ret = read_runtime(db->h, vm->name, &cur, &cur_pid, &cur_start, err);
	if (ret <= 0)
		goto out;
	if (cur != vm->state || cur_pid != vm->pid || cur_start != vm->pid_start) {
		/* Someone changed the row since it was read: report what it says. */
		vm->state = cur;
		vm->pid = cur_pid;
		vm->pid_start = cur_start;
		ret = 0;
		goto out;
	}
	ret = write_runtime(db, vm->name, CAT_VM_CRASHED, NULL, 1, err);
	if (ret == 0)
		ret = cat_event_add_tx(db, vm->name, "crash-detected",
				       "the VMM process is gone", err);
	/* Stale runtime files go while the lock keeps a new start out. */
	if (ret == 0 && cat_vm_paths(db, vm->name, &paths, NULL) == 0) {
		unlink(paths.ctl_socket);
		unlink(paths.console_socket);
	}
	if (ret == 0)
		ret = cat_tx_commit(db, err);
	if (ret == 0) {
		vm->state = CAT_VM_CRASHED;
		vm->pid = 0;
		vm->pid_start = 0;
	}
out:
	if (db->in_tx)
		cat_tx_rollback(db);
	cat_vm_paths_clear(&paths);
	if (ret < 0)
		ut_err_prefix(err, "unable to check VM '%s'", vm->name);
	return ret;
}
