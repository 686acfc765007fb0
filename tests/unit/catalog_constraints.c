/* tests/unit/catalog_constraints.c — every refused change says why.
 *
 * Names (empty, '/', control characters, too long, bad first character),
 * definition ranges, duplicate name / uuid / MAC / tap, image sharing and
 * lineage rules, format disagreement, removing or redefining an active VM,
 * transitions from the wrong state, and raw SQL that breaks a CHECK or a
 * foreign key: each fails with the right errno and a message naming the
 * problem, and leaves the catalog unchanged.
 */
#include <errno.h>

#include "catalog/db.h"
#include "tests/unit/cat_test.h"

static char *home, *kernel, *disk1, *disk2;

static void names(void)
{
	struct ut_err err;
	char long_name[80];

	ut_err_clear(&err);
	printf("names\n");
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	CHECK_ERR(cat_name_check("", &err), -EINVAL, "cannot be empty", &err);
	CHECK_ERR(cat_name_check("a/b", &err), -EINVAL, "contains '/'", &err);
	CHECK_ERR(cat_name_check("a\x01" "b", &err), -EINVAL, "control character", &err);
	CHECK_ERR(cat_name_check("a\nb", &err), -EINVAL, "control character", &err);
	CHECK_ERR(cat_name_check(long_name, &err), -EINVAL, "too long", &err);
	CHECK_ERR(cat_name_check("-a", &err), -EINVAL, "starting with a letter or digit", &err);
	CHECK_ERR(cat_name_check("a b", &err), -EINVAL, "has ' ' at position 2", &err);
	CHECK(cat_name_check("web-01.prod_x+y", &err) == 0);
	long_name[CAT_NAME_MAX] = '\0';
	CHECK(cat_name_check(long_name, &err) == 0);
}

static void definitions(struct cat_db *db)
{
	struct cat_vm a = { 0 }, b = { 0 };
	struct ut_err err;

	ut_err_clear(&err);
	printf("definitions\n");
	t_vm(&a, "a", kernel);
	a.vcpus = 0;
	CHECK_ERR(cat_vm_define(db, &a, 0, "create", &err), -EINVAL,
		  "vcpus must be between 1 and 255", &err);
	a.vcpus = 1;
	a.memory = 1000;
	CHECK_ERR(cat_vm_define(db, &a, 0, "create", &err), -EINVAL,
		  "memory must be between 1 MiB", &err);
	a.memory = 64 << 20;
	a.cur_memory = 128 << 20;
	CHECK_ERR(cat_vm_define(db, &a, 0, "create", &err), -EINVAL,
		  "current memory", &err);
	a.cur_memory = 0;
	free(a.kernel);
	a.kernel = strdup("relative/vmlinuz");
	CHECK_ERR(cat_vm_define(db, &a, 0, "create", &err), -EINVAL, "absolute path", &err);
	free(a.kernel);
	a.kernel = strdup(kernel);
	CHECK_OK(cat_vm_add_disk(&a, disk1, "raw", "vda", 0, 0, 0, &err), &err);
	CHECK_OK(cat_vm_add_disk(&a, disk2, "raw", "vda", 0, 0, 0, &err), &err);
	CHECK_ERR(cat_vm_define(db, &a, 0, "create", &err), -EINVAL, "both use target 'vda'",
		  &err);
	free(a.disks[1].target);
	a.disks[1].target = strdup("sdb");
	CHECK_ERR(cat_vm_define(db, &a, 0, "create", &err), -EINVAL, "not vd followed by letters",
		  &err);
	free(a.disks[1].target);
	a.disks[1].target = strdup("vdb");
	CHECK_ERR(cat_vm_add_nic(&a, "01:00:00:00:00:01", NULL, NULL, NULL, &err), -EINVAL,
		  "not multicast", &err);
	a.n_nics = 0;
	CHECK_OK(cat_vm_add_nic(&a, "52:54:00:aa:bb:cc", "ethernet", "tap0", NULL, &err), &err);
	CHECK_OK(cat_vm_add_nic(&a, "52:54:00:AA:BB:CC", "ethernet", NULL, NULL, &err), &err);
	CHECK_ERR(cat_vm_define(db, &a, 0, "create", &err), -EINVAL, "both use MAC", &err);
	cat_nic_clear(&a.nics[1]);
	a.n_nics = 1;
	CHECK_OK(cat_vm_define(db, &a, 0, "create", &err), &err);

	/* clashes with "a" */
	t_vm(&b, "a", kernel);
	CHECK_ERR(cat_vm_define(db, &b, 0, "create", &err), -EEXIST,
		  "a VM named 'a' already exists", &err);
	CHECK_ERR(cat_vm_define(db, &b, CAT_DEFINE_REPLACE, "define", &err), -EEXIST,
		  "already exists with another uuid", &err);
	free(b.name);
	b.name = strdup("b");
	memcpy(b.uuid, a.uuid, sizeof(b.uuid));
	CHECK_ERR(cat_vm_define(db, &b, 0, "create", &err), -EEXIST,
		  "is already used by VM 'a'", &err);
	cat_uuid_generate(b.uuid);
	CHECK_OK(cat_vm_add_nic(&b, "52:54:00:aa:bb:cc", "ethernet", NULL, NULL, &err), &err);
	CHECK_ERR(cat_vm_define(db, &b, 0, "create", &err), -EEXIST,
		  "MAC address 52:54:00:aa:bb:cc is already used by VM 'a'", &err);
	cat_mac_generate(b.nics[0].mac);
	b.nics[0].tap = strdup("tap0");
	CHECK_ERR(cat_vm_define(db, &b, 0, "create", &err), -EEXIST,
		  "tap device 'tap0' is already used by VM 'a'", &err);
	free(b.nics[0].tap);
	b.nics[0].tap = NULL;
	/* a writable image cannot be shared */
	CHECK_OK(cat_vm_add_disk(&b, disk1, NULL, "vda", 1, 0, 0, &err), &err);
	CHECK_ERR(cat_vm_define(db, &b, 0, "create", &err), -EBUSY,
		  "is already used by VM 'a' (an image may be shared only read-only)", &err);
	/* format disagreement with the recorded image */
	b.disks[0].readonly = 0;
	free(b.disks[0].chain[0].path);
	b.disks[0].chain[0].path = strdup(disk2);
	free(b.disks[0].chain[0].format);
	b.disks[0].chain[0].format = strdup("qcow2");
	CHECK_ERR(cat_vm_define(db, &b, 0, "create", &err), -EINVAL,
		  "is recorded as raw, not qcow2", &err);
	/* a made-up MAC that is taken is replaced, a given one is not */
	{
		struct cat_vm g = { 0 };

		t_vm(&g, "gen", kernel);
		CHECK_OK(cat_vm_add_nic(&g, NULL, "ethernet", NULL, NULL, &err), &err);
		strcpy(g.nics[0].mac, "52:54:00:aa:bb:cc");   /* as if drawn at random */
		CHECK_OK(cat_vm_define(db, &g, 0, "create", &err), &err);
		CHECK(strcmp(g.nics[0].mac, "52:54:00:aa:bb:cc") != 0);
		CHECK_OK(cat_vm_remove(db, "gen", 0, NULL, &err), &err);
		cat_vm_clear(&g);
	}
	/* nothing of b was stored by any of the failures */
	{
		struct cat_vm got = { 0 };

		CHECK_ERR(cat_vm_get(db, "b", &got, &err), -ENOENT, "no VM named 'b'", &err);
	}
	cat_vm_clear(&a);
	cat_vm_clear(&b);
}

static void lineage(struct cat_db *db)
{
	char *base = t_file(home, "base.raw", 1 << 20);
	struct cat_image *chain = NULL;
	struct cat_vm c = { 0 };
	struct ut_err err;
	size_t n = 0;
	int64_t id = 0;

	ut_err_clear(&err);
	printf("lineage\n");
	/* an overlay recorded by hand (the qcow2 layer will do this) */
	CHECK_OK(cat_image_register(db, base, "raw", &id, &err), &err);
	CHECK_OK(cat_exec(db->h, "INSERT INTO images (path, format, parent_id, created) "
			  "SELECT '/nonexistent/overlay.qcow2', 'qcow2', id, 0 FROM images "
			  "WHERE path LIKE '%/base.raw'", &err), &err);
	CHECK_OK(cat_image_chain(db, "/nonexistent/overlay.qcow2", &chain, &n, &err), &err);
	CHECK(n == 2 && chain[1].id == id && chain[1].virtual_size == 1 << 20);
	cat_image_chain_free(chain, n);
	t_vm(&c, "c", kernel);
	CHECK_OK(cat_vm_add_disk(&c, base, NULL, "vda", 0, 0, 0, &err), &err);
	CHECK_ERR(cat_vm_define(db, &c, 0, "create", &err), -EBUSY,
		  "is the backing image of '/nonexistent/overlay.qcow2'", &err);
	c.disks[0].readonly = 1;
	CHECK_OK(cat_vm_define(db, &c, 0, "create", &err), &err);
	/* an image written by one VM cannot be the backing image of another's disk */
	{
		char *w = t_file(home, "written.raw", 1 << 20), *ov;
		struct cat_vm vw = { 0 }, vo = { 0 };

		if (asprintf(&ov, "%s/ov.qcow2", home) < 0)
			exit(2);
		t_vm(&vw, "writer", kernel);
		CHECK_OK(cat_vm_add_disk(&vw, w, "raw", "vda", 0, 0, 0, &err), &err);
		CHECK_OK(cat_vm_define(db, &vw, 0, "create", &err), &err);
		t_vm(&vo, "over", kernel);
		CHECK_OK(cat_vm_add_disk(&vo, ov, "qcow2", "vda", 0, 0, 0, &err), &err);
		vo.disks[0].chain = realloc(vo.disks[0].chain, 2 * sizeof(*vo.disks[0].chain));
		memset(&vo.disks[0].chain[1], 0, sizeof(vo.disks[0].chain[1]));
		vo.disks[0].chain[1].path = strdup(w);
		vo.disks[0].chain[1].format = strdup("raw");
		vo.disks[0].n_chain = 2;
		CHECK_ERR(cat_vm_define(db, &vo, 0, "create", &err), -EBUSY,
			  "is attached writable to VM 'writer'", &err);
		CHECK_OK(cat_vm_remove(db, "writer", 0, NULL, &err), &err);
		cat_vm_clear(&vw);
		cat_vm_clear(&vo);
		free(w);
		free(ov);
	}
	/* raw SQL: deleting an image that backs another breaks a foreign key */
	CHECK_ERR(cat_exec(db->h, "DELETE FROM images WHERE path LIKE '%/base.raw'", &err),
		  -EBUSY, "still referenced", &err);
	/* raw SQL: the named CHECK constraints read as messages */
	CHECK_ERR(cat_exec(db->h, "UPDATE vms SET vcpus = 300 WHERE name = 'c'", &err), -EINVAL,
		  "vcpus must be between 1 and 255", &err);
	CHECK_ERR(cat_exec(db->h, "UPDATE vms SET state = 'zombie' WHERE name = 'c'", &err),
		  -EINVAL, "state must be stopped, starting, running", &err);
	CHECK_ERR(cat_exec(db->h, "UPDATE vms SET name = 'x/y' WHERE name = 'c'", &err), -EINVAL,
		  "a VM name is 1-64 characters", &err);
	CHECK_ERR(cat_exec(db->h, "UPDATE images SET format = 'vmdk'", &err), -EINVAL,
		  "an image format is raw or qcow2", &err);
	CHECK_ERR(cat_exec(db->h, "UPDATE vms SET kernel = NULL", &err), -EINVAL,
		  "vms.kernel is required", &err);
	CHECK_ERR(cat_exec(db->h, "INSERT INTO disks (vm_id, image_id, idx, target) "
			   "VALUES (9999, 1, 0, 'vda')", &err), -EBUSY, "still referenced", &err);
	CHECK_OK(cat_vm_remove(db, "c", 0, NULL, &err), &err);
	cat_vm_clear(&c);
	free(base);
}

static void states(struct cat_db *db)
{
	struct cat_runtime rt = { .pid = getpid(), .ctl_socket = "/run/x.ctl" };
	struct ut_err err;
	enum cat_vm_state old;

	ut_err_clear(&err);
	printf("states\n");
	CHECK_ERR(cat_vm_transition(db, "a", CAT_ST(CAT_VM_RUNNING) | CAT_ST(CAT_VM_PAUSED),
				    CAT_VM_STOPPING, NULL, "stop", NULL, &old, &err), -EBUSY,
		  "VM 'a' is stopped, not running or paused", &err);
	CHECK(old == CAT_VM_STOPPED);
	CHECK_ERR(cat_vm_transition(db, "zz", CAT_ST_ANY, CAT_VM_RUNNING, NULL, "x", NULL, NULL,
				    &err), -ENOENT, "no VM named 'zz'", &err);
	CHECK_OK(cat_vm_transition(db, "a", CAT_ST(CAT_VM_STOPPED), CAT_VM_RUNNING, &rt, "start",
				   NULL, NULL, &err), &err);
	CHECK_ERR(cat_vm_remove(db, "a", 0, NULL, &err), -EBUSY, "is running: stop it first",
		  &err);
	{
		struct cat_vm a = { 0 };

		CHECK_OK(cat_vm_get(db, "a", &a, &err), &err);
		CHECK_ERR(cat_vm_define(db, &a, CAT_DEFINE_REPLACE, "define", &err), -EBUSY,
			  "stop it before redefining it", &err);
		cat_vm_clear(&a);
	}
	CHECK_OK(cat_vm_transition(db, "a", CAT_ST_ACTIVE, CAT_VM_STOPPED, NULL, "stop", NULL,
				   NULL, &err), &err);
	CHECK_OK(cat_vm_remove(db, "a", 0, NULL, &err), &err);
}

int main(void)
{
	struct cat_db *db = NULL;
	struct ut_err err;

	ut_err_clear(&err);
	home = t_tmpdir();
	kernel = t_file(home, "vmlinuz", 4096);
	disk1 = t_file(home, "disk1.raw", 1 << 20);
	disk2 = t_file(home, "disk2.raw", 2 << 20);
	names();
	CHECK_OK(cat_open(&db, home, &err), &err);
	if (db) {
		definitions(db);
		lineage(db);
		states(db);
	}
	cat_close(db);
	t_rmtree(home);
	free(home);
	free(kernel);
	free(disk1);
	free(disk2);
	return t_done("catalog_constraints");
}
