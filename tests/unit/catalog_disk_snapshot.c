/* tests/unit/catalog_disk_snapshot.c — the catalog's record of an external
 * disk snapshot (catalog/disk-snapshot.c):
 * - cat_disk_snapshot points the disk (by its position) at a new qcow2
 *   image row whose parent is the image it had; cat_vm_get then lists the
 *   chain overlay -> old image; an event is logged;
 * - a second snapshot on top makes a chain of three; the second disk is
 *   untouched;
 * - refusals change nothing: a disk that does not use the image the VMM
 *   names (-ESTALE), an overlay recorded otherwise (another VM's disk, a
 *   raw image: -EEXIST), a relative path or a ',' (-EINVAL), no such VM or
 *   disk (-ENOENT);
 * - an overlay registered beforehand with the right parent is taken;
 * - the same snapshot recorded again (the disk uses the overlay, its
 *   parent the image named: a retry after a kept overlay) is taken,
 *   nothing changed but the log; with another image named, -ESTALE;
 * - cat_disk_snapshot_undo puts the disk back and drops the overlay's row;
 *   refused when the disk does not use that overlay.
 */
#include <errno.h>

#include "catalog/db.h"
#include "tests/unit/cat_test.h"

static char *home, *kernel;

/* Disk @i of VM @name: chain length and the paths of chain[0], chain[1]. */
static void chain_of(struct cat_db *db, const char *name, size_t i, size_t *n, char *p0,
		     char *p1)
{
	struct cat_vm vm = { 0 };
	struct ut_err err;

	ut_err_clear(&err);
	*n = 0;
	p0[0] = p1[0] = '\0';
	CHECK_OK(cat_vm_get(db, name, &vm, &err), &err);
	if (i < vm.n_disks) {
		*n = vm.disks[i].n_chain;
		snprintf(p0, 4096, "%s", vm.disks[i].chain[0].path);
		if (*n > 1)
			snprintf(p1, 4096, "%s", vm.disks[i].chain[1].path);
		CHECK(!strcmp(vm.disks[i].chain[0].format, *n > 1 ? "qcow2" : vm.disks[i].chain[0].format));
	}
	cat_vm_clear(&vm);
}

static int count_events(struct cat_db *db, const char *vm, const char *action)
{
	struct cat_event *ev = NULL;
	struct ut_err err;
	size_t n = 0;
	int c = 0;

	ut_err_clear(&err);
	CHECK_OK(cat_event_list(db, vm, 1000, &ev, &n, &err), &err);
	for (size_t i = 0; i < n; i++)
		c += !strcmp(ev[i].action, action);
	cat_events_free(ev, n);
	return c;
}

int main(void)
{
	struct cat_db *db = NULL;
	struct cat_vm vm = { 0 };
	struct ut_err err;
	char p0[4096], p1[4096], *base, *disk2, *ov1, *ov2, *other, *rawimg;
	size_t n;

	ut_err_clear(&err);
	unsetenv("XDG_RUNTIME_DIR");
	home = t_tmpdir();
	kernel = t_file(home, "vmlinuz", 4096);
	base = t_file(home, "base.raw", 1 << 20);
	disk2 = t_file(home, "two.raw", 1 << 20);
	rawimg = t_file(home, "plain.raw", 1 << 20);
	if (asprintf(&ov1, "%s/ov1.qcow2", home) < 0 || asprintf(&ov2, "%s/ov2.qcow2", home) < 0 ||
	    asprintf(&other, "%s/other.qcow2", home) < 0)
		exit(2);
	CHECK_OK(cat_open(&db, home, &err), &err);
	if (!db)
		goto out;
	t_vm(&vm, "s1", kernel);
	CHECK_OK(cat_vm_add_disk(&vm, base, NULL, "vda", 0, 0, 0, &err), &err);
	CHECK_OK(cat_vm_add_disk(&vm, disk2, NULL, "vdb", 0, 0, 0, &err), &err);
	CHECK_OK(cat_vm_define(db, &vm, 0, "create", &err), &err);
	cat_vm_clear(&vm);
	t_vm(&vm, "s2", kernel);
	CHECK_OK(cat_vm_add_disk(&vm, rawimg, NULL, "vda", 0, 0, 0, &err), &err);
	CHECK_OK(cat_vm_define(db, &vm, 0, "create", &err), &err);
	cat_vm_clear(&vm);

	printf("refusals\n");
	CHECK_ERR(cat_disk_snapshot(db, "s1", 0, disk2, ov1, 1 << 20, &err), -ESTALE,
		  "the catalog records image", &err);
	CHECK_ERR(cat_disk_snapshot(db, "s1", 0, base, rawimg, 1 << 20, &err), -EEXIST,
		  "in the catalog already", &err);
	CHECK_ERR(cat_disk_snapshot(db, "s1", 0, base, "rel.qcow2", 1 << 20, &err), -EINVAL,
		  "absolute", &err);
	CHECK_ERR(cat_disk_snapshot(db, "s1", 0, base, "/x/a,b.qcow2", 1 << 20, &err), -EINVAL,
		  "','", &err);
	CHECK_ERR(cat_disk_snapshot(db, "nosuch", 0, base, ov1, 1 << 20, &err), -ENOENT,
		  "no VM named 'nosuch'", &err);
	CHECK_ERR(cat_disk_snapshot(db, "s1", 2, base, ov1, 1 << 20, &err), -ENOENT,
		  "no disk 2", &err);
	chain_of(db, "s1", 0, &n, p0, p1);
	CHECK(n == 1 && !strcmp(p0, base));
	CHECK(count_events(db, "s1", "disk-snapshot") == 0);

	printf("snapshot\n");
	CHECK_OK(cat_disk_snapshot(db, "s1", 0, base, ov1, 1 << 20, &err), &err);
	chain_of(db, "s1", 0, &n, p0, p1);
	CHECK(n == 2 && !strcmp(p0, ov1) && !strcmp(p1, base));
	chain_of(db, "s1", 1, &n, p0, p1);
	CHECK(n == 1 && !strcmp(p0, disk2));
	CHECK(count_events(db, "s1", "disk-snapshot") == 1);
	/* the VMM names the old image again: the catalog moved on */
	CHECK_ERR(cat_disk_snapshot(db, "s1", 0, base, ov2, 1 << 20, &err), -ESTALE,
		  "the catalog records image", &err);
	/* the same snapshot again (the VMM's retry onto an overlay it kept
	 * when its switch and the undo failed): taken, nothing changed but
	 * the log; not with another image under it */
	CHECK_OK(cat_disk_snapshot(db, "s1", 0, base, ov1, 1 << 20, &err), &err);
	chain_of(db, "s1", 0, &n, p0, p1);
	CHECK(n == 2 && !strcmp(p0, ov1) && !strcmp(p1, base));
	CHECK(count_events(db, "s1", "disk-snapshot") == 2);
	CHECK_ERR(cat_disk_snapshot(db, "s1", 0, disk2, ov1, 1 << 20, &err), -ESTALE,
		  "the catalog records image", &err);
	/* a second one on top */
	CHECK_OK(cat_disk_snapshot(db, "s1", 0, ov1, ov2, 1 << 20, &err), &err);
	chain_of(db, "s1", 0, &n, p0, p1);
	CHECK(n == 3 && !strcmp(p0, ov2) && !strcmp(p1, ov1));

	printf("undo\n");
	CHECK_ERR(cat_disk_snapshot_undo(db, "s1", 0, ov1, &err), -ESTALE, "not the overlay", &err);
	CHECK_OK(cat_disk_snapshot_undo(db, "s1", 0, ov2, &err), &err);
	chain_of(db, "s1", 0, &n, p0, p1);
	CHECK(n == 2 && !strcmp(p0, ov1) && !strcmp(p1, base));
	{
		struct cat_image *ch = NULL;
		size_t k = 0;

		CHECK_ERR(cat_image_chain(db, ov2, &ch, &k, &err), -ENOENT, "not in the catalog", &err);
	}
	/* an overlay registered beforehand (with the right parent) is taken */
	{
		char *cmd;

		if (asprintf(&cmd, "qemu-img create -q -f qcow2 -u -b %s -F raw %s 1M >/dev/null 2>&1 && "
			     "qemu-img create -q -f qcow2 -u -b %s -F qcow2 %s 1M >/dev/null 2>&1",
			     base, ov1, ov1, other) < 0)
			exit(2);
		if (system(cmd) == 0) {
			CHECK_OK(cat_image_register(db, other, "qcow2", NULL, &err), &err);
			CHECK_OK(cat_disk_snapshot(db, "s1", 0, ov1, other, 1 << 20, &err), &err);
			chain_of(db, "s1", 0, &n, p0, p1);
			CHECK(n == 3 && !strcmp(p0, other) && !strcmp(p1, ov1));
			CHECK_OK(cat_disk_snapshot(db, "s1", 0, other, ov2, 1 << 20, &err), &err);
			CHECK_OK(cat_disk_snapshot_undo(db, "s1", 0, ov2, &err), &err);
			chain_of(db, "s1", 0, &n, p0, p1);
			CHECK(n == 3 && !strcmp(p0, other));
		} else {
			printf("  (qemu-img missing: the registered-overlay case not run)\n");
		}
		free(cmd);
	}
	/* s2's disk cannot become s1's overlay */
	CHECK_ERR(cat_disk_snapshot(db, "s2", 0, rawimg, ov1, 1 << 20, &err), -EEXIST,
		  "in the catalog already", &err);
out:
	cat_close(db);
	t_rmtree(home);
	free(base);
	free(disk2);
	free(rawimg);
	free(ov1);
	free(ov2);
	free(other);
	free(kernel);
	return t_done("catalog_disk_snapshot");
}
