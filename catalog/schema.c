/* catalog/schema.c — the catalog's schema as a list of migrations.
 *
 * PRAGMA user_version holds the number of steps applied. Step N brings a
 * database from version N-1 to N; each runs in its own write transaction
 * that re-reads user_version after taking the lock, so concurrent cowvm
 * processes opening an old catalog migrate it exactly once. Never edit a
 * released step: add a new one and bump CAT_SCHEMA_VERSION.
 *
 * CHECK constraints carry names that read as messages: SQLite reports
 * "CHECK constraint failed: NAME", which cat_sql_err() turns into NAME.
 */
#include "catalog/db.h"

#include <errno.h>
#include <stdio.h>

/* 1: VMs, images (the lineage) and disks. */
static const char step1[] =
	"CREATE TABLE vms ("
	" id INTEGER PRIMARY KEY,"
	" name TEXT NOT NULL UNIQUE"
	"  CONSTRAINT \"a VM name is 1-64 characters of A-Z a-z 0-9 . _ + - starting with a letter or digit\""
	"  CHECK (length(name) BETWEEN 1 AND 64 AND name GLOB '[A-Za-z0-9]*'"
	"         AND name NOT GLOB '*[^A-Za-z0-9._+-]*'),"
	" uuid TEXT NOT NULL UNIQUE CONSTRAINT \"a uuid has 36 characters\" CHECK (length(uuid) = 36),"
	" vcpus INTEGER NOT NULL CONSTRAINT \"vcpus must be between 1 and 255\""
	"  CHECK (vcpus BETWEEN 1 AND 255),"
	" memory INTEGER NOT NULL CONSTRAINT \"memory must be at least 1 MiB\" CHECK (memory >= 1048576),"
	" kernel TEXT NOT NULL CONSTRAINT \"the kernel path must be absolute\" CHECK (substr(kernel, 1, 1) = '/'),"
	" initrd TEXT CONSTRAINT \"the initrd path must be absolute\""
	"  CHECK (initrd IS NULL OR substr(initrd, 1, 1) = '/'),"
	" cmdline TEXT,"
	" state TEXT NOT NULL DEFAULT 'stopped'"
	"  CONSTRAINT \"state must be stopped, starting, running, paused, stopping or crashed\""
	"  CHECK (state IN ('stopped', 'starting', 'running', 'paused', 'stopping', 'crashed')),"
	" pid INTEGER CONSTRAINT \"a pid is positive\" CHECK (pid IS NULL OR pid > 0),"
	" ctl_socket TEXT,"
	" created INTEGER NOT NULL,"
	" updated INTEGER NOT NULL"
	");"
	"CREATE TABLE images ("
	" id INTEGER PRIMARY KEY,"
	" path TEXT NOT NULL UNIQUE CONSTRAINT \"an image path must be absolute\""
	"  CHECK (substr(path, 1, 1) = '/'),"
	" format TEXT NOT NULL CONSTRAINT \"an image format is raw or qcow2\""
	"  CHECK (format IN ('raw', 'qcow2')),"
	" virtual_size INTEGER CONSTRAINT \"a virtual size is not negative\""
	"  CHECK (virtual_size IS NULL OR virtual_size >= 0),"
	" parent_id INTEGER REFERENCES images(id) ON DELETE RESTRICT"
	"  CONSTRAINT \"an image cannot be its own parent\" CHECK (parent_id IS NULL OR parent_id <> id),"
	" created INTEGER NOT NULL"
	");"
	"CREATE INDEX images_parent ON images(parent_id);"
	"CREATE TABLE disks ("
	" id INTEGER PRIMARY KEY,"
	" vm_id INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,"
	" image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE RESTRICT,"
	" idx INTEGER NOT NULL,"
	" target TEXT NOT NULL CONSTRAINT \"a disk target is vd followed by letters\""
	"  CHECK (target GLOB 'vd[a-z]*' AND substr(target, 3) NOT GLOB '*[^a-z]*'),"
	" readonly INTEGER NOT NULL DEFAULT 0 CHECK (readonly IN (0, 1)),"
	" UNIQUE (vm_id, target),"
	" UNIQUE (vm_id, idx)"
	");"
	"CREATE INDEX disks_image ON disks(image_id);";

/* 2: network interfaces and snapshots. */
static const char step2[] =
	"CREATE TABLE nics ("
	" id INTEGER PRIMARY KEY,"
	" vm_id INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,"
	" idx INTEGER NOT NULL,"
	" mac TEXT NOT NULL UNIQUE CONSTRAINT \"a MAC address is written xx:xx:xx:xx:xx:xx\""
	"  CHECK (length(mac) = 17),"
	" type TEXT NOT NULL CONSTRAINT \"an interface type is ethernet or bridge\""
	"  CHECK (type IN ('ethernet', 'bridge')),"
	" tap TEXT,"
	" bridge TEXT,"
	" CONSTRAINT \"a bridge interface needs a bridge name\""
	"  CHECK (type <> 'bridge' OR bridge IS NOT NULL),"
	" UNIQUE (vm_id, idx)"
	");"
	"CREATE UNIQUE INDEX nics_tap ON nics(tap) WHERE tap IS NOT NULL;"
	"CREATE TABLE snapshots ("
	" id INTEGER PRIMARY KEY,"
	" vm_id INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,"
	" name TEXT NOT NULL CONSTRAINT \"a snapshot name is 1-64 characters\""
	"  CHECK (length(name) BETWEEN 1 AND 64),"
	" parent_id INTEGER REFERENCES snapshots(id) ON DELETE SET NULL,"
	" state_file TEXT,"
	" description TEXT,"
	" created INTEGER NOT NULL,"
	" UNIQUE (vm_id, name)"
	");";

/* 3: the event log. VM names, not ids: events outlive their VM. */
static const char step3[] =
	"CREATE TABLE events ("
	" id INTEGER PRIMARY KEY,"
	" time INTEGER NOT NULL,"
	" vm TEXT,"
	" action TEXT NOT NULL,"
	" result TEXT NOT NULL"
	");"
	"CREATE INDEX events_vm ON events(vm, id);";

/* 4: the rest of a libvirt-style definition, and the VMM's start time (to
 * tell our VMM from a process that reused its pid). */
static const char step4[] =
	"ALTER TABLE vms ADD COLUMN genid TEXT CONSTRAINT \"a genid has 36 characters\""
	" CHECK (genid IS NULL OR length(genid) = 36);"
	"ALTER TABLE vms ADD COLUMN cur_memory INTEGER CONSTRAINT \"current memory must be positive\""
	" CHECK (cur_memory IS NULL OR cur_memory > 0);"
	"ALTER TABLE vms ADD COLUMN on_poweroff TEXT NOT NULL DEFAULT 'destroy'"
	" CONSTRAINT \"on_poweroff is destroy or restart\" CHECK (on_poweroff IN ('destroy', 'restart'));"
	"ALTER TABLE vms ADD COLUMN on_reboot TEXT NOT NULL DEFAULT 'restart'"
	" CONSTRAINT \"on_reboot is destroy or restart\" CHECK (on_reboot IN ('destroy', 'restart'));"
	"ALTER TABLE vms ADD COLUMN serial INTEGER NOT NULL DEFAULT 1 CHECK (serial IN (0, 1));"
	"ALTER TABLE vms ADD COLUMN pid_start INTEGER;";

/* 5: `cowvm list` reads only this index (no table lookups), a third less
 * time with 10,000 VMs. */
static const char step5[] =
	"CREATE INDEX vms_list ON vms(name, uuid, state, vcpus, memory, pid, pid_start);";

/* 6: a disk's host cache mode (libvirt <driver cache=...>; only none and
 * writeback are kept). */
static const char step6[] =
	"ALTER TABLE disks ADD COLUMN cache TEXT NOT NULL DEFAULT 'writeback'"
	" CONSTRAINT \"cache is none or writeback\" CHECK (cache IN ('none', 'writeback'));";

/* 7: a disk's I/O engine (libvirt <driver io=...>: threads, or io_uring
 * for io_uring and native). */
static const char step7[] =
	"ALTER TABLE disks ADD COLUMN aio TEXT NOT NULL DEFAULT 'io_uring'"
	" CONSTRAINT \"aio is io_uring or threads\" CHECK (aio IN ('io_uring', 'threads'));";

/* 8: what a disk error does (libvirt <driver error_policy=... rerror_policy=
 * ...>, QEMU's werror= rerror=; "ignore" is not kept). */
static const char step8[] =
	"ALTER TABLE disks ADD COLUMN werror TEXT NOT NULL DEFAULT 'enospc'"
	" CONSTRAINT \"werror is enospc, stop or report\" CHECK (werror IN ('enospc', 'stop', 'report'));"
	"ALTER TABLE disks ADD COLUMN rerror TEXT NOT NULL DEFAULT 'report'"
	" CONSTRAINT \"rerror is report or stop\" CHECK (rerror IN ('report', 'stop'));";

static const char *const steps[CAT_SCHEMA_VERSION] = { step1, step2, step3, step4, step5, step6,
						       step7, step8 };

int cat_schema_version(sqlite3 *h, struct ut_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc, ret;

	ret = cat_prepare(h, "PRAGMA user_version", &st, err);
	if (ret < 0)
		goto out;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		ret = cat_sql_err(h, rc, err, "unable to read the schema version");
		goto out;
	}
	ret = sqlite3_column_int(st, 0);
out:
	sqlite3_finalize(st);
	return ret;
}

/* Apply step @n (1-based) if the database is still at n-1. */
static int apply_step(struct cat_db *db, int n, struct ut_err *err)
{
	char sql[64];
	int ret, v;

	ret = cat_tx_begin(db, err);
	if (ret < 0)
		return ret;
	v = cat_schema_version(db->h, err);
	if (v < 0) {
		ret = v;
		goto out;
	}
	if (v >= n) {      /* another process got here first */
		ret = 0;
		goto out;
	}
	ret = cat_exec(db->h, steps[n - 1], err);
	if (ret < 0) {
		ut_err_prefix(err, "unable to upgrade the catalog schema to version %d", n);
		goto out;
	}
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", n);
	ret = cat_exec(db->h, sql, err);
	if (ret < 0)
		goto out;
	ret = cat_tx_commit(db, err);
out:
	if (db->in_tx)
		cat_tx_rollback(db);
	return ret;
}

int cat_schema_migrate(sqlite3 *h, int target, struct ut_err *err)
{
	struct cat_db tmp = { .h = h };
	int v, ret = 0;

	if (target < 1 || target > CAT_SCHEMA_VERSION)
		return ut_errf(err, -EINVAL, "unable to migrate: no schema version %d", target);
	v = cat_schema_version(h, err);
	if (v < 0)
		return v;
	if (v > CAT_SCHEMA_VERSION)
		return ut_errf(err, -EPROTONOSUPPORT,
			       "the catalog has schema version %d, newer than this cowvm "
			       "understands (%d): use a newer cowvm", v, CAT_SCHEMA_VERSION);
	for (int n = v + 1; n <= target && ret == 0; n++)
		ret = apply_step(&tmp, n, err);
	return ret;
}
