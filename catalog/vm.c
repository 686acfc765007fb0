/* catalog/vm.c — VM rows with their disks and NICs: define, get, list,
 * remove. Runtime state changes are in catalog/runtime.c. */
#include "catalog/db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int step_done(sqlite3 *h, sqlite3_stmt *st, struct ut_err *err, const char *what)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return cat_sql_err(h, rc, err, what);
	return 0;
}

/* One text value from a query with one text parameter and an optional
 * integer one: 1 and *out (malloc'd) when a row came back, 0 when none. */
static int query_text(sqlite3 *h, const char *sql, const char *p1, int64_t p2,
		      char **out, struct ut_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc, ret, oom = 0;

	*out = NULL;
	ret = cat_prepare(h, sql, &st, err);
	if (ret < 0)
		return ret;
	cat_bind_text(st, 1, p1);
	if (sqlite3_bind_parameter_count(st) >= 2)
		sqlite3_bind_int64(st, 2, p2);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = cat_col_strdup(st, 0, &oom);
		ret = oom ? ut_errf(err, -ENOMEM, "out of memory") : 1;
	} else if (rc == SQLITE_DONE) {
		ret = 0;
	} else {
		ret = cat_sql_err(h, rc, err, "unable to query the catalog");
	}
	sqlite3_finalize(st);
	return ret;
}

/* The row id and state of VM @name: 1 when found, 0 when not. */
static int find_vm(sqlite3 *h, const char *name, int64_t *id, char uuid[CAT_UUID_LEN + 1],
		   enum cat_vm_state *state, struct ut_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc, ret;

	ret = cat_prepare(h, "SELECT id, uuid, state FROM vms WHERE name = ?1", &st, err);
	if (ret < 0)
		return ret;
	cat_bind_text(st, 1, name);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(st, 0);
		if (uuid)
			snprintf(uuid, CAT_UUID_LEN + 1, "%s", (const char *)sqlite3_column_text(st, 1));
		if (cat_vm_state_parse((const char *)sqlite3_column_text(st, 2), state) < 0)
			*state = CAT_VM_CRASHED;
		ret = 1;
	} else if (rc == SQLITE_DONE) {
		ret = 0;
	} else {
		ret = cat_sql_err(h, rc, err, "unable to query the catalog");
	}
	sqlite3_finalize(st);
	return ret;
}

/* Refuse ids already taken by other VMs, with messages naming them. */
static int check_conflicts(struct cat_db *db, const struct cat_vm *vm, int64_t self,
			   struct ut_err *err)
{
	char *other = NULL;
	int ret;

	ret = query_text(db->h, "SELECT name FROM vms WHERE uuid = ?1 AND id <> ?2",
			 vm->uuid, self, &other, err);
	if (ret > 0)
		ret = ut_errf(err, -EEXIST, "uuid %s is already used by VM '%s'", vm->uuid, other);
	for (size_t i = 0; ret == 0 && i < vm->n_nics; i++) {
		for (int tries = 0; tries < 16; tries++) {
			free(other);
			ret = query_text(db->h, "SELECT v.name FROM nics n JOIN vms v ON "
					 "v.id = n.vm_id WHERE n.mac = ?1 AND n.vm_id <> ?2",
					 vm->nics[i].mac, self, &other, err);
			/* a made-up MAC that is taken: make up another */
			if (ret <= 0 || !vm->nics[i].mac_generated ||
			    cat_mac_generate(vm->nics[i].mac) < 0)
				break;
		}
		if (ret > 0)
			ret = ut_errf(err, -EEXIST, "MAC address %s is already used by VM '%s'",
				      vm->nics[i].mac, other);
		if (ret == 0 && vm->nics[i].tap) {
			ret = query_text(db->h, "SELECT v.name FROM nics n JOIN vms v ON v.id = "
					 "n.vm_id WHERE n.tap = ?1 AND n.vm_id <> ?2",
					 vm->nics[i].tap, self, &other, err);
			if (ret > 0)
				ret = ut_errf(err, -EEXIST, "tap device '%s' is already used by VM "
					      "'%s'", vm->nics[i].tap, other);
		}
	}
	free(other);
	return ret;
}

/* A disk's image may be shared only read-only by every user, and an image
 * that backs others must not be written. */
static int check_image_use(struct cat_db *db, const struct cat_disk *d, int64_t self,
			   struct ut_err *err)
{
	const struct cat_image *im = &d->chain[0];
	char *other = NULL;
	int ret;

	ret = query_text(db->h, d->readonly ?
			 "SELECT v.name FROM disks d JOIN vms v ON v.id = d.vm_id "
			 "JOIN images i ON i.id = d.image_id "
			 "WHERE i.path = ?1 AND d.vm_id <> ?2 AND d.readonly = 0" :
			 "SELECT v.name FROM disks d JOIN vms v ON v.id = d.vm_id "
			 "JOIN images i ON i.id = d.image_id WHERE i.path = ?1 AND d.vm_id <> ?2",
			 im->path, self, &other, err);
	if (ret > 0) {
		ret = ut_errf(err, -EBUSY, "disk %s: image '%s' is already used by VM '%s' "
			      "(an image may be shared only read-only)", d->target, im->path, other);
		goto out;
	}
	/* the images below it must not be written by anyone */
	for (size_t k = 1; ret == 0 && k < d->n_chain; k++) {
		ret = query_text(db->h, "SELECT v.name FROM disks d JOIN vms v ON v.id = d.vm_id "
				 "JOIN images i ON i.id = d.image_id "
				 "WHERE i.path = ?1 AND d.readonly = 0 AND ?2 = ?2",
				 d->chain[k].path, self, &other, err);
		if (ret > 0) {
			ret = ut_errf(err, -EBUSY, "disk %s: its backing image '%s' is attached "
				      "writable to VM '%s'", d->target, d->chain[k].path, other);
			goto out;
		}
	}
	if (ret == 0 && !d->readonly) {
		ret = query_text(db->h, "SELECT c.path FROM images c JOIN images p "
				 "ON p.id = c.parent_id WHERE p.path = ?1", im->path, 0, &other, err);
		if (ret > 0)
			ret = ut_errf(err, -EBUSY, "disk %s: image '%s' is the backing image of "
				      "'%s'; attach it read-only or use an overlay", d->target,
				      im->path, other);
	}
out:
	free(other);
	return ret;
}

static void bind_opt_uuid(sqlite3_stmt *st, int i, const char *s)
{
	if (s && *s)
		sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, i);
}

static int store_vm_row(struct cat_db *db, struct cat_vm *vm, int64_t existing,
			struct ut_err *err)
{
	static const char ins[] =
		"INSERT INTO vms (name, uuid, genid, vcpus, memory, cur_memory, kernel, "
		"initrd, cmdline, on_poweroff, on_reboot, serial, state, created, updated) "
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'stopped', ?13, ?13)";
	static const char upd[] =
		"UPDATE vms SET name = ?1, uuid = ?2, genid = ?3, vcpus = ?4, memory = ?5, "
		"cur_memory = ?6, kernel = ?7, initrd = ?8, cmdline = ?9, on_poweroff = ?10, "
		"on_reboot = ?11, serial = ?12, updated = ?13 WHERE id = ?14";
	sqlite3_stmt *st = NULL;
	int64_t now = cat_now_ms();
	int ret;

	ret = cat_prepare(db->h, existing ? upd : ins, &st, err);
	if (ret < 0)
		return ret;
	cat_bind_text(st, 1, vm->name);
	cat_bind_text(st, 2, vm->uuid);
	bind_opt_uuid(st, 3, vm->genid);
	sqlite3_bind_int64(st, 4, vm->vcpus);
	sqlite3_bind_int64(st, 5, (int64_t)vm->memory);
	if (vm->cur_memory)
		sqlite3_bind_int64(st, 6, (int64_t)vm->cur_memory);
	else
		sqlite3_bind_null(st, 6);
	cat_bind_text(st, 7, vm->kernel);
	cat_bind_text(st, 8, vm->initrd);
	cat_bind_text(st, 9, vm->cmdline);
	cat_bind_text(st, 10, vm->on_poweroff);
	cat_bind_text(st, 11, vm->on_reboot);
	sqlite3_bind_int(st, 12, vm->serial ? 1 : 0);
	sqlite3_bind_int64(st, 13, now);
	if (existing)
		sqlite3_bind_int64(st, 14, existing);
	ret = step_done(db->h, st, err, "unable to store the VM");
	sqlite3_finalize(st);
	if (ret < 0)
		return ret;
	vm->id = existing ? existing : sqlite3_last_insert_rowid(db->h);
	if (!existing)
		vm->created_ms = now;
	vm->updated_ms = now;
	return 0;
}

static int store_devices(struct cat_db *db, struct cat_vm *vm, struct ut_err *err)
{
	sqlite3_stmt *sd = NULL, *sn = NULL;
	int ret;

	ret = cat_prepare(db->h, "INSERT INTO disks (vm_id, image_id, idx, target, readonly, cache, aio, "
			  "werror, rerror) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)", &sd, err);
	if (ret == 0)
		ret = cat_prepare(db->h, "INSERT INTO nics (vm_id, idx, mac, type, tap, bridge) "
				  "VALUES (?1, ?2, ?3, ?4, ?5, ?6)", &sn, err);
	for (size_t i = 0; ret == 0 && i < vm->n_disks; i++) {
		struct cat_disk *d = &vm->disks[i];

		ret = cat_image_store_chain_tx(db, d->chain, d->n_chain, err);
		if (ret == 0)
			ret = check_image_use(db, d, vm->id, err);
		if (ret < 0)
			break;
		sqlite3_reset(sd);
		sqlite3_bind_int64(sd, 1, vm->id);
		sqlite3_bind_int64(sd, 2, d->chain[0].id);
		sqlite3_bind_int64(sd, 3, (int64_t)i);
		cat_bind_text(sd, 4, d->target);
		sqlite3_bind_int(sd, 5, d->readonly ? 1 : 0);
		cat_bind_text(sd, 6, d->nocache ? "none" : "writeback");
		cat_bind_text(sd, 7, d->threads ? "threads" : "io_uring");
		cat_bind_text(sd, 8, cat_werror_names[d->werror <= CAT_WERROR_REPORT ? d->werror : 0]);
		cat_bind_text(sd, 9, d->rerror_stop ? "stop" : "report");
		ret = step_done(db->h, sd, err, "unable to store a disk");
	}
	for (size_t i = 0; ret == 0 && i < vm->n_nics; i++) {
		struct cat_nic *n = &vm->nics[i];

		sqlite3_reset(sn);
		sqlite3_bind_int64(sn, 1, vm->id);
		sqlite3_bind_int64(sn, 2, (int64_t)i);
		cat_bind_text(sn, 3, n->mac);
		cat_bind_text(sn, 4, n->type);
		cat_bind_text(sn, 5, n->tap);
		cat_bind_text(sn, 6, n->bridge);
		ret = step_done(db->h, sn, err, "unable to store an interface");
	}
	sqlite3_finalize(sd);
	sqlite3_finalize(sn);
	return ret;
}

static int delete_devices(struct cat_db *db, int64_t id, struct ut_err *err)
{
	sqlite3_stmt *st = NULL;
	int ret = 0;

	for (int i = 0; ret == 0 && i < 2; i++) {
		ret = cat_prepare(db->h, i ? "DELETE FROM nics WHERE vm_id = ?1" :
				  "DELETE FROM disks WHERE vm_id = ?1", &st, err);
		if (ret < 0)
			break;
		sqlite3_bind_int64(st, 1, id);
		ret = step_done(db->h, st, err, "unable to replace the VM's devices");
		sqlite3_finalize(st);
		st = NULL;
	}
	return ret;
}

int cat_vm_define(struct cat_db *db, struct cat_vm *vm, unsigned flags,
		  const char *action, struct ut_err *err)
{
	char uuid[CAT_UUID_LEN + 1];
	enum cat_vm_state state;
	int64_t existing = 0;
	int ret;

	ret = cat_vm_check(vm, err);
	if (ret < 0)
		goto out;
	for (size_t i = 0; i < vm->n_disks; i++) {
		ret = cat_image_complete_chain(&vm->disks[i].chain, &vm->disks[i].n_chain, err);
		if (ret < 0)
			goto out;
	}
	ret = cat_tx_begin(db, err);
	if (ret < 0)
		goto out;
	ret = find_vm(db->h, vm->name, &existing, uuid, &state, err);
	if (ret < 0)
		goto out;
	if (ret == 1 && (!(flags & CAT_DEFINE_REPLACE) || strcmp(uuid, vm->uuid))) {
		ret = ut_errf(err, -EEXIST, "a VM named '%s' already exists%s", vm->name,
			      (flags & CAT_DEFINE_REPLACE) ? " with another uuid" : "");
		goto out;
	}
	if (ret == 1 && (CAT_ST(state) & CAT_ST_ACTIVE)) {
		ret = ut_errf(err, -EBUSY, "VM '%s' is %s: stop it before redefining it",
			      vm->name, cat_vm_state_name(state));
		goto out;
	}
	ret = check_conflicts(db, vm, existing, err);
	if (ret < 0)
		goto out;
	if (existing) {
		ret = delete_devices(db, existing, err);
		if (ret < 0)
			goto out;
	}
	ret = store_vm_row(db, vm, existing, err);
	if (ret == 0)
		ret = store_devices(db, vm, err);
	if (ret == 0)
		ret = cat_event_add_tx(db, vm->name, action ? action : "define", "ok", err);
	if (ret == 0)
		ret = cat_tx_commit(db, err);
out:
	if (db->in_tx)
		cat_tx_rollback(db);
	if (ret < 0)
		ut_err_prefix(err, "unable to %s VM '%s'", action ? action : "define",
			      vm->name ? vm->name : "");
	return ret;
}

static int load_devices(struct cat_db *db, struct cat_vm *vm, struct ut_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc, ret, oom = 0;

	ret = cat_prepare(db->h, "SELECT target, readonly, image_id, cache, aio, werror, rerror "
			  "FROM disks WHERE vm_id = ?1 ORDER BY idx", &st, err);
	if (ret < 0)
		goto out;
	sqlite3_bind_int64(st, 1, vm->id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct cat_disk *arr = realloc(vm->disks, (vm->n_disks + 1) * sizeof(*arr));
		struct cat_disk *d;

		if (!arr) {
			ret = ut_errf(err, -ENOMEM, "out of memory");
			goto out;
		}
		vm->disks = arr;
		d = &arr[vm->n_disks++];
		memset(d, 0, sizeof(*d));
		d->target = cat_col_strdup(st, 0, &oom);
		d->readonly = sqlite3_column_int(st, 1);
		d->nocache = sqlite3_column_text(st, 3) &&
			     !strcmp((const char *)sqlite3_column_text(st, 3), "none");
		d->threads = sqlite3_column_text(st, 4) &&
			     !strcmp((const char *)sqlite3_column_text(st, 4), "threads");
		for (int k = 0; k < 3; k++)
			if (sqlite3_column_text(st, 5) &&
			    !strcmp((const char *)sqlite3_column_text(st, 5), cat_werror_names[k]))
				d->werror = (enum cat_werror)k;
		d->rerror_stop = sqlite3_column_text(st, 6) &&
				 !strcmp((const char *)sqlite3_column_text(st, 6), "stop");
		ret = cat_image_load_chain(db, sqlite3_column_int64(st, 2), &d->chain,
					   &d->n_chain, err);
		if (ret < 0)
			goto out;
	}
	if (rc != SQLITE_DONE) {
		ret = cat_sql_err(db->h, rc, err, "unable to read disks");
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	ret = cat_prepare(db->h, "SELECT mac, type, tap, bridge FROM nics WHERE vm_id = ?1 "
			  "ORDER BY idx", &st, err);
	if (ret < 0)
		goto out;
	sqlite3_bind_int64(st, 1, vm->id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct cat_nic *arr = realloc(vm->nics, (vm->n_nics + 1) * sizeof(*arr));
		struct cat_nic *n;

		if (!arr) {
			ret = ut_errf(err, -ENOMEM, "out of memory");
			goto out;
		}
		vm->nics = arr;
		n = &arr[vm->n_nics++];
		memset(n, 0, sizeof(*n));
		snprintf(n->mac, sizeof(n->mac), "%s", (const char *)sqlite3_column_text(st, 0));
		n->type = cat_col_strdup(st, 1, &oom);
		n->tap = cat_col_strdup(st, 2, &oom);
		n->bridge = cat_col_strdup(st, 3, &oom);
	}
	if (rc != SQLITE_DONE)
		ret = cat_sql_err(db->h, rc, err, "unable to read interfaces");
	else if (oom)
		ret = ut_errf(err, -ENOMEM, "out of memory");
out:
	sqlite3_finalize(st);
	return ret;
}

int cat_vm_get(struct cat_db *db, const char *name, struct cat_vm *vm, struct ut_err *err)
{
	sqlite3_stmt *st = NULL;
	const char *s;
	int rc, ret, oom = 0;

	memset(vm, 0, sizeof(*vm));
	ret = cat_read_begin(db, err);
	if (ret < 0)
		goto out;
	ret = cat_prepare(db->h, "SELECT id, name, uuid, genid, vcpus, memory, cur_memory, "
			  "kernel, initrd, cmdline, on_poweroff, on_reboot, serial, state, pid, "
			  "pid_start, ctl_socket, created, updated FROM vms WHERE name = ?1",
			  &st, err);
	if (ret < 0)
		goto out;
	cat_bind_text(st, 1, name);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		ret = ut_errf(err, -ENOENT, "no VM named '%s'", name);
		goto out;
	}
	if (rc != SQLITE_ROW) {
		ret = cat_sql_err(db->h, rc, err, "unable to read the VM");
		goto out;
	}
	vm->id = sqlite3_column_int64(st, 0);
	vm->name = cat_col_strdup(st, 1, &oom);
	snprintf(vm->uuid, sizeof(vm->uuid), "%s", (const char *)sqlite3_column_text(st, 2));
	s = (const char *)sqlite3_column_text(st, 3);
	snprintf(vm->genid, sizeof(vm->genid), "%s", s ? s : "");
	vm->vcpus = (unsigned)sqlite3_column_int(st, 4);
	vm->memory = (uint64_t)sqlite3_column_int64(st, 5);
	vm->cur_memory = (uint64_t)sqlite3_column_int64(st, 6);
	vm->kernel = cat_col_strdup(st, 7, &oom);
	vm->initrd = cat_col_strdup(st, 8, &oom);
	vm->cmdline = cat_col_strdup(st, 9, &oom);
	vm->on_poweroff = cat_col_strdup(st, 10, &oom);
	vm->on_reboot = cat_col_strdup(st, 11, &oom);
	vm->serial = sqlite3_column_int(st, 12);
	if (cat_vm_state_parse((const char *)sqlite3_column_text(st, 13), &vm->state) < 0)
		vm->state = CAT_VM_CRASHED;
	vm->pid = (pid_t)sqlite3_column_int64(st, 14);
	vm->pid_start = (uint64_t)sqlite3_column_int64(st, 15);
	vm->ctl_socket = cat_col_strdup(st, 16, &oom);
	vm->created_ms = sqlite3_column_int64(st, 17);
	vm->updated_ms = sqlite3_column_int64(st, 18);
	if (oom) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = load_devices(db, vm, err);
out:
	sqlite3_finalize(st);
	if (db->in_tx)
		cat_tx_rollback(db);
	if (ret < 0)
		cat_vm_clear(vm);
	return ret;
}

void cat_vm_summaries_free(struct cat_vm_summary *rows, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(rows[i].name);
	free(rows);
}

/* Disk counts per VM id, sorted by id: one scan of the disks index instead
 * of a subquery per VM (a third of `cowvm list` with 10,000 VMs). */
struct disk_count {
	int64_t vm_id;
	unsigned n;
};

static int cmp_count(const void *a, const void *b)
{
	int64_t x = ((const struct disk_count *)a)->vm_id, y = ((const struct disk_count *)b)->vm_id;

	return x < y ? -1 : x > y;
}

static int load_disk_counts(struct cat_db *db, struct disk_count **out, size_t *nout,
			    struct ut_err *err)
{
	struct disk_count *c = NULL;
	sqlite3_stmt *st = NULL;
	size_t n = 0, cap = 0;
	int rc, ret;

	ret = cat_prepare(db->h, "SELECT vm_id, count(*) FROM disks GROUP BY vm_id ORDER BY vm_id",
			  &st, err);
	while (ret == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == cap) {
			struct disk_count *arr;

			cap = cap ? cap * 2 : 256;
			arr = realloc(c, cap * sizeof(*arr));
			if (!arr) {
				ret = ut_errf(err, -ENOMEM, "out of memory");
				break;
			}
			c = arr;
		}
		c[n].vm_id = sqlite3_column_int64(st, 0);
		c[n++].n = (unsigned)sqlite3_column_int(st, 1);
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = cat_sql_err(db->h, rc, err, "unable to count disks");
	sqlite3_finalize(st);
	if (ret < 0) {
		free(c);
		return ret;
	}
	*out = c;
	*nout = n;
	return 0;
}

int cat_vm_list(struct cat_db *db, struct cat_vm_summary **out, size_t *nout,
		struct ut_err *err)
{
	struct cat_vm_summary *rows = NULL;
	struct disk_count *counts = NULL, key, *hit;
	sqlite3_stmt *st = NULL;
	size_t n = 0, cap = 0, n_counts = 0;
	int rc, ret, oom = 0;

	ret = cat_read_begin(db, err);
	if (ret < 0)
		goto out;
	ret = load_disk_counts(db, &counts, &n_counts, err);
	if (ret < 0)
		goto out;
	ret = cat_prepare(db->h, "SELECT name, uuid, state, vcpus, memory, pid, pid_start, id "
			  "FROM vms ORDER BY name", &st, err);
	if (ret < 0)
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct cat_vm_summary *r;

		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			r = realloc(rows, cap * sizeof(*r));
			if (!r) {
				ret = ut_errf(err, -ENOMEM, "out of memory");
				goto out;
			}
			rows = r;
		}
		r = &rows[n++];
		memset(r, 0, sizeof(*r));
		r->name = cat_col_strdup(st, 0, &oom);
		snprintf(r->uuid, sizeof(r->uuid), "%s", (const char *)sqlite3_column_text(st, 1));
		if (cat_vm_state_parse((const char *)sqlite3_column_text(st, 2), &r->state) < 0)
			r->state = CAT_VM_CRASHED;
		r->vcpus = (unsigned)sqlite3_column_int(st, 3);
		r->memory = (uint64_t)sqlite3_column_int64(st, 4);
		r->pid = (pid_t)sqlite3_column_int64(st, 5);
		key.vm_id = sqlite3_column_int64(st, 7);
		hit = n_counts ? bsearch(&key, counts, n_counts, sizeof(*counts), cmp_count) : NULL;
		r->n_disks = hit ? hit->n : 0;
		if (oom) {
			ret = ut_errf(err, -ENOMEM, "out of memory");
			goto out;
		}
		r->pid_start = (uint64_t)sqlite3_column_int64(st, 6);
	}
	if (rc != SQLITE_DONE) {
		ret = cat_sql_err(db->h, rc, err, "unable to list VMs");
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	cat_tx_rollback(db);   /* end the read snapshot */
	/* Second pass, the SELECT finished: active VMs whose VMM is gone. */
	for (size_t i = 0; i < n; i++) {
		struct cat_vm probe = {
			.name = rows[i].name, .state = rows[i].state,
			.pid = rows[i].pid, .pid_start = rows[i].pid_start,
		};

		if (!(CAT_ST(rows[i].state) & CAT_ST_ACTIVE))
			continue;
		ret = cat_vm_refresh(db, &probe, err);
		if (ret < 0)
			goto out;
		rows[i].state = probe.state;
		rows[i].pid = probe.pid;
	}
	*out = rows;
	*nout = n;
	rows = NULL;
	ret = 0;
out:
	sqlite3_finalize(st);
	if (db->in_tx)
		cat_tx_rollback(db);
	free(counts);
	if (rows)
		cat_vm_summaries_free(rows, n);
	return ret;
}

void cat_rm_report_clear(struct cat_rm_report *r)
{
	cat_strv_free(r->removed, r->n_removed);
	cat_strv_free(r->kept, r->n_kept);
	memset(r, 0, sizeof(*r));
}

static int strv_add(char ***v, size_t *n, char *s)
{
	char **arr;

	if (!s)
		return -ENOMEM;
	arr = realloc(*v, (*n + 1) * sizeof(*arr));
	if (!arr) {
		free(s);
		return -ENOMEM;
	}
	arr[(*n)++] = s;
	*v = arr;
	return 0;
}

/* With the VM's rows gone, drop image @id unless something still uses it. */
static int drop_image(struct cat_db *db, int64_t id, struct cat_rm_report *rep,
		      struct ut_err *err)
{
	char *path = NULL, *user = NULL, *s = NULL;
	sqlite3_stmt *st = NULL;
	int ret;

	ret = query_text(db->h, "SELECT path FROM images WHERE id = ?2", NULL, id, &path, err);
	if (ret <= 0)
		goto out;
	ret = query_text(db->h, "SELECT v.name FROM disks d JOIN vms v ON v.id = d.vm_id "
			 "WHERE d.image_id = ?2 AND ?1 IS NULL", NULL, id, &user, err);
	if (ret > 0) {
		if (asprintf(&s, "%s (used by VM '%s')", path, user) < 0)
			s = NULL;
		ret = strv_add(&rep->kept, &rep->n_kept, s);
		goto out;
	}
	if (ret == 0)
		ret = query_text(db->h, "SELECT path FROM images WHERE parent_id = ?2 AND ?1 IS NULL",
				 NULL, id, &user, err);
	if (ret > 0) {
		if (asprintf(&s, "%s (backing image of '%s')", path, user) < 0)
			s = NULL;
		ret = strv_add(&rep->kept, &rep->n_kept, s);
		goto out;
	}
	if (ret < 0)
		goto out;
	ret = cat_prepare(db->h, "DELETE FROM images WHERE id = ?1", &st, err);
	if (ret < 0)
		goto out;
	sqlite3_bind_int64(st, 1, id);
	ret = step_done(db->h, st, err, "unable to remove an image row");
	if (ret == 0) {
		ret = strv_add(&rep->removed, &rep->n_removed, path);
		path = NULL;
	}
out:
	if (ret == -ENOMEM)
		ut_errf(err, ret, "out of memory");
	sqlite3_finalize(st);
	free(path);
	free(user);
	return ret < 0 ? ret : 0;
}

int cat_vm_remove(struct cat_db *db, const char *name, unsigned flags,
		  struct cat_rm_report *rep, struct ut_err *err)
{
	struct cat_rm_report local = { 0 };
	enum cat_vm_state state;
	sqlite3_stmt *st = NULL;
	int64_t id = 0, *images = NULL;
	size_t n_images = 0;
	int rc, ret;

	if (!rep)
		rep = &local;
	memset(rep, 0, sizeof(*rep));
	ret = cat_tx_begin(db, err);
	if (ret < 0)
		goto out;
	ret = find_vm(db->h, name, &id, NULL, &state, err);
	if (ret == 0)
		ret = ut_errf(err, -ENOENT, "no VM named '%s'", name);
	if (ret < 0)
		goto out;
	if (CAT_ST(state) & CAT_ST_ACTIVE) {
		ret = ut_errf(err, -EBUSY, "VM '%s' is %s: stop it first", name,
			      cat_vm_state_name(state));
		goto out;
	}
	if (flags & CAT_RM_DISKS) {
		ret = cat_prepare(db->h, "SELECT image_id FROM disks WHERE vm_id = ?1 ORDER BY idx",
				  &st, err);
		if (ret < 0)
			goto out;
		sqlite3_bind_int64(st, 1, id);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			int64_t *arr = realloc(images, (n_images + 1) * sizeof(*arr));

			if (!arr) {
				ret = ut_errf(err, -ENOMEM, "out of memory");
				goto out;
			}
			images = arr;
			images[n_images++] = sqlite3_column_int64(st, 0);
		}
		if (rc != SQLITE_DONE) {
			ret = cat_sql_err(db->h, rc, err, "unable to read disks");
			goto out;
		}
		sqlite3_finalize(st);
		st = NULL;
	}
	ret = cat_prepare(db->h, "DELETE FROM vms WHERE id = ?1", &st, err);
	if (ret < 0)
		goto out;
	sqlite3_bind_int64(st, 1, id);
	ret = step_done(db->h, st, err, "unable to remove the VM");
	for (size_t i = 0; ret == 0 && i < n_images; i++)
		ret = drop_image(db, images[i], rep, err);
	if (ret == 0)
		ret = cat_event_add_tx(db, name, (flags & CAT_RM_DISKS) ? "rm --with-disks" : "rm",
				       "ok", err);
	if (ret == 0)
		ret = cat_tx_commit(db, err);
out:
	sqlite3_finalize(st);
	if (db->in_tx)
		cat_tx_rollback(db);
	free(images);
	if (ret < 0) {
		cat_rm_report_clear(rep);
		ut_err_prefix(err, "unable to remove VM '%s'", name);
	}
	cat_rm_report_clear(&local);
	return ret;
}
