/* tests/unit/catalog_schema.c — schema migrations.
 *
 * For every earlier schema version v (0 .. current-1): build a catalog at v
 * with rows that version can hold, open it with cat_open (which upgrades),
 * and check the version, that every row survived with the new columns at
 * their defaults, and that the upgraded catalog takes new definitions.
 * Also: a catalog from a newer cowvm and a file that is not a catalog are
 * refused with clear messages.
 */
#include <errno.h>
#include <sqlite3.h>

#include "catalog/db.h"
#include "tests/unit/cat_test.h"

static const char *const fixtures[] = {
	/* v1 */
	"INSERT INTO vms (name, uuid, vcpus, memory, kernel, cmdline, state, created, updated)"
	" VALUES ('old', '11111111-2222-4333-8444-555555555555', 2, 268435456, '/boot/k',"
	" 'console=ttyS0', 'stopped', 1, 1);"
	"INSERT INTO images (path, format, virtual_size, parent_id, created)"
	" VALUES ('/img/base.raw', 'raw', 1048576, NULL, 1);"
	"INSERT INTO images (path, format, virtual_size, parent_id, created)"
	" VALUES ('/img/top.qcow2', 'qcow2', 1048576, 1, 1);"
	"INSERT INTO disks (vm_id, image_id, idx, target, readonly) VALUES (1, 2, 0, 'vda', 0);",
	/* v2 */
	"INSERT INTO nics (vm_id, idx, mac, type, tap, bridge)"
	" VALUES (1, 0, '52:54:00:00:00:01', 'ethernet', 'tap9', NULL);"
	"INSERT INTO snapshots (vm_id, name, created) VALUES (1, 's1', 1);",
	/* v3 */
	"INSERT INTO events (time, vm, action, result) VALUES (1, 'old', 'create', 'ok');",
};

static void build_at(const char *home, int v)
{
	char path[512];
	struct ut_err err;
	sqlite3 *h;

	ut_err_clear(&err);
	snprintf(path, sizeof(path), "%s/%s", home, CAT_DB_FILE);
	if (cat_db_open_raw(path, &h, &err) < 0) {
		fprintf(stderr, "open: %s\n", err.msg);
		exit(2);
	}
	if (v > 0)
		CHECK_OK(cat_schema_migrate(h, v, &err), &err);
	CHECK(cat_schema_version(h, &err) == v);
	for (int i = 0; i < v && i < (int)(sizeof(fixtures) / sizeof(fixtures[0])); i++)
		CHECK_OK(cat_exec(h, fixtures[i], &err), &err);
	sqlite3_close(h);
}

static void upgrade_from(int v)
{
	char *home = t_tmpdir(), *kernel = t_file(home, "vmlinuz", 100);
	struct cat_event *ev = NULL;
	struct cat_db *db = NULL;
	struct cat_vm vm = { 0 }, fresh = { 0 };
	struct ut_err err;
	size_t n_ev = 0;

	printf("upgrade from version %d to %d\n", v, CAT_SCHEMA_VERSION);
	ut_err_clear(&err);
	build_at(home, v);
	CHECK_OK(cat_open(&db, home, &err), &err);
	if (!db)
		goto out;
	CHECK(cat_schema_version(db->h, &err) == CAT_SCHEMA_VERSION);
	if (v >= 1) {
		CHECK_OK(cat_vm_get(db, "old", &vm, &err), &err);
		CHECK(vm.vcpus == 2 && vm.memory == 268435456);
		CHECK(vm.cmdline && !strcmp(vm.cmdline, "console=ttyS0"));
		CHECK(!strcmp(vm.uuid, "11111111-2222-4333-8444-555555555555"));
		CHECK(vm.state == CAT_VM_STOPPED);
		/* columns added by later steps take their defaults */
		CHECK(vm.on_poweroff && !strcmp(vm.on_poweroff, "destroy"));
		CHECK(vm.on_reboot && !strcmp(vm.on_reboot, "restart"));
		CHECK(vm.serial == 1 && vm.genid[0] == '\0' && vm.cur_memory == 0);
		CHECK(vm.n_disks == 1);
		if (vm.n_disks == 1) {
			CHECK(vm.disks[0].n_chain == 2);
			CHECK(!strcmp(vm.disks[0].chain[0].path, "/img/top.qcow2"));
			CHECK(vm.disks[0].n_chain == 2 &&
			      !strcmp(vm.disks[0].chain[1].path, "/img/base.raw"));
		}
		CHECK(vm.n_nics == (v >= 2 ? 1u : 0u));
		if (vm.n_nics)
			CHECK(!strcmp(vm.nics[0].mac, "52:54:00:00:00:01") &&
			      !strcmp(vm.nics[0].tap, "tap9"));
	}
	CHECK_OK(cat_event_list(db, "old", 0, &ev, &n_ev, &err), &err);
	CHECK(n_ev == (v >= 3 ? 1u : 0u));
	/* the upgraded catalog takes new definitions */
	t_vm(&fresh, "fresh", kernel);
	CHECK_OK(cat_vm_define(db, &fresh, 0, "create", &err), &err);
	CHECK_OK(cat_vm_remove(db, "fresh", 0, NULL, &err), &err);
	if (v >= 1)
		CHECK_OK(cat_vm_remove(db, "old", 0, NULL, &err), &err);
out:
	cat_events_free(ev, n_ev);
	cat_vm_clear(&vm);
	cat_vm_clear(&fresh);
	cat_close(db);
	/* reopening an up-to-date catalog changes nothing */
	CHECK_OK(cat_open(&db, home, &err), &err);
	cat_close(db);
	t_rmtree(home);
	free(home);
	free(kernel);
}

static void refuse_newer(void)
{
	char *home = t_tmpdir(), path[512], sql[64];
	struct cat_db *db = NULL;
	struct ut_err err;
	sqlite3 *h;

	ut_err_clear(&err);
	printf("a catalog from a newer cowvm\n");
	snprintf(path, sizeof(path), "%s/%s", home, CAT_DB_FILE);
	CHECK_OK(cat_db_open_raw(path, &h, &err), &err);
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", CAT_SCHEMA_VERSION + 1);
	CHECK_OK(cat_exec(h, sql, &err), &err);
	sqlite3_close(h);
	CHECK_ERR(cat_open(&db, home, &err), -EPROTONOSUPPORT, "newer than this cowvm", &err);
	CHECK(db == NULL);
	t_rmtree(home);
	free(home);
}

static void refuse_garbage(void)
{
	char *home = t_tmpdir(), path[512];
	struct cat_db *db = NULL;
	struct ut_err err;
	FILE *f;

	ut_err_clear(&err);
	printf("a file that is not a catalog\n");
	snprintf(path, sizeof(path), "%s/%s", home, CAT_DB_FILE);
	f = fopen(path, "w");
	for (int i = 0; f && i < 512; i++)
		fputs("this is not a database ", f);
	if (f)
		fclose(f);
	CHECK_ERR(cat_open(&db, home, &err), -EIO, "not a catalog", &err);
	t_rmtree(home);
	free(home);
}

int main(void)
{
	for (int v = 0; v < CAT_SCHEMA_VERSION; v++)
		upgrade_from(v);
	refuse_newer();
	refuse_garbage();
	return t_done("catalog_schema");
}
