/* tests/unit/test-disk-snapshot.c — vmm_machine_disk_snapshot (core/snapshot.c)
 * on a machine built without KVM (no vCPUs) with real virtio-blk devices
 * on files:
 * - names: "virtio-blk1" and "vdb" find the second disk; an unknown one is
 *   refused naming the disks; a read-only disk is refused; a ',' in the
 *   overlay path is refused; nothing is created by a refusal;
 * - a snapshot switches the disk: the device writes the overlay (its image
 *   is the overlay's backing file), cfg.disks names it with format=qcow2
 *   and keeps the other options (a raw disk given format=raw too), the
 *   hook saw the absolute paths and the size, once;
 * - a hook that fails cancels it: the error says so, the file is removed,
 *   the device and cfg.disks unchanged, and the hook is not called to undo;
 * - a prepare that fails after the hook (the image's name gone) and a
 *   commit that fails (the image's name taken by another file, as
 *   test-stg-snapshot injects it): the hook called to undo while the
 *   overlay is still at its name; the undo works: the record gone, the
 *   file removed, nothing changed; the undo fails: the file KEPT (what
 *   the record names), a clean overlay reading the image (cow_check,
 *   qemu-img check), and the error says both problems and that it was
 *   kept; the file at the image's name is not touched, nothing is made
 *   again; the device and cfg.disks unchanged either way;
 * - an existing file is refused (the file kept), mode existing takes a
 *   prepared overlay;
 * - target= (cowvm start's): "vda" is the disk given target=vda, an
 *   unknown name is refused naming the targets; cfg.disks keeps the
 *   target and pins the serial the guest saw (the old file's base name);
 * - the overlay reads the old image's data (its backing file); the old
 *   image is unchanged. (Guest writes after a switch: the integration
 *   test snapshot.sh.)
 * - the hook runs unpaused, outside the drained section (the device's
 *   lock free), with the overlay complete at its name already;
 * - vmm_machine_disk_snapshot_start (the control socket's): done is called
 *   once from the loop with the result; a second start meanwhile is
 *   refused (-EBUSY, naming the one in progress); a failure in the worker
 *   (an existing file) reaches done and changes nothing; a job cancelled
 *   (the run ended) gets -ECANCELED and leaves no file; a prepare that
 *   fails after the hook with an undo that fails too: done tells both
 *   and the file kept, which is a clean overlay of the image.
 */
#include "core/machine.h"
#include "core/virtio/blk.h"
#include "core/virtio/virtio.h"
#include "storage/blockdev.h"
#include "tests/unit/test-vm-util.h"

#include "cow/cow.h"

#include <dirent.h>
#include <limits.h>
#include <sys/stat.h>

static struct vmm_machine m;
static struct tv_ram ram;
static char dir[64];
static int hook_calls, hook_undos, hook_fail, hook_swap, hook_undo_fail, hook_hide;
static char swap_path[PATH_MAX], swap_moved[PATH_MAX];
static char hook_record[PATH_MAX];       /* what the hook "recorded": the overlay, "" if none */
static char hook_image[PATH_MAX], hook_overlay[PATH_MAX];
static uint64_t hook_size;
static int hook_disk;
static int hook_paused, hook_locked;   /* seen by the hook: vCPUs paused, device lock held */
static int hook_no_overlay;              /* ... the overlay not at its name yet */

static int hook(struct vmm_machine *mm, void *opaque, const struct vmm_disk_snapshot *s, bool undo,
		struct ut_err *err)
{
	(void)opaque;
	if (undo) {
		hook_undos++;
		/* the overlay's file is still there: the record goes first */
		if (access(s->overlay, F_OK))
			hook_no_overlay++;
		if (hook_undo_fail)
			return ut_errf(err, -EIO, "the test hook cannot undo");
		hook_record[0] = '\0';
		return 0;
	}
	if (hook_hide) {
		/* the prepare then fails: no file at the image's name */
		if (rename(swap_path, swap_moved))
			tv_die("rename");
	}
	if (hook_swap) {
		/* the commit then fails: another file at the image's name */
		int fd;

		if (rename(swap_path, swap_moved))
			tv_die("rename");
		fd = open(swap_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, 1 << 20) || close(fd))
			tv_die("swap file");
	}
	hook_calls++;
	/* before the drained section: the VM is not paused (its vCPUs run
	 * on), the device's lock is free (a vCPU's MMIO to it does not wait
	 * for the catalog), the overlay is complete at its name */
	if (access(s->overlay, R_OK))
		hook_no_overlay++;
	if (vmm_vm_paused(&mm->vm))
		hook_paused++;
	for (int i = 0; i < mm->vm.ndevs; i++) {
		struct vmm_virtio_dev *vd = (struct vmm_virtio_dev *)mm->vm.devs[i];

		if (strcmp(vd->dev.id, s->device))
			continue;
		if (pthread_mutex_trylock(&vd->lock) == 0)
			pthread_mutex_unlock(&vd->lock);
		else
			hook_locked++;
	}
	hook_disk = s->disk;
	hook_size = s->virtual_size;
	snprintf(hook_image, sizeof(hook_image), "%s", s->image);
	snprintf(hook_overlay, sizeof(hook_overlay), "%s", s->overlay);
	if (hook_fail)
		return ut_errf(err, -EEXIST, "the test hook refuses");
	snprintf(hook_record, sizeof(hook_record), "%s", s->overlay);
	return 0;
}

static void machine_init(const char *const *disks, int n)
{
	struct vmm_vm *vm = &m.vm;
	struct ut_err err = { 0, "" };

	memset(&m, 0, sizeof(m));
	m.sig_fd = -1;
	vmm_vm_preinit(vm);
	vmm_irq_init(vm, NULL);
	if (vmm_loop_init(&vm->loop))
		tv_die("vmm_loop_init");
	if (tv_ram_init(&ram, 16 << 20))
		tv_die("guest RAM");
	vmm_mem_layout(&vm->mem, ram.base, 16 << 20, -1);
	if (vmm_pci_init(vm, &err)) {
		fprintf(stderr, "test setup failed: %s\n", err.msg);
		exit(1);
	}
	for (int i = 0; i < n; i++) {
		if (vmm_device_create(vm, "virtio-blk", disks[i], &err)) {
			fprintf(stderr, "test setup failed: %s\n", err.msg);
			exit(1);
		}
		m.cfg.disks[i] = disks[i];
	}
	m.cfg.ndisks = n;
	m.on_disk_snapshot = hook;
}

static void machine_exit(void)
{
	m.vm.mem.base = NULL;
	m.vm.mem.ram_size = 0;
	vmm_vm_destroy(&m.vm);
	pthread_mutex_destroy(&m.vm.lock);
	pthread_cond_destroy(&m.vm.cond);
	pthread_mutex_destroy(&m.vm.irq_lock);
	tv_ram_exit(&ram);
	for (int i = 0; i < VMM_MAX_DISKS; i++)
		free(m.disk_opts[i]);
}

static struct vmm_device *disk(int n)
{
	return tv_find_dev(&m.vm, "virtio-blk", n);
}

static const char *disk_path(int n)
{
	static char p[PATH_MAX];
	uint64_t size;
	bool ro;

	if (vmm_blk_disk_info(disk(n), p, sizeof(p), &size, &ro))
		return "?";
	return p;
}

static char *path_in(const char *name)
{
	static char p[8][PATH_MAX];
	static int k;

	k = (k + 1) % 8;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

static bool exists(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0;
}

/* A file of @size bytes filled with @c. */
static void make_raw(const char *p, uint64_t size, int c)
{
	static uint8_t buf[1 << 16];
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	memset(buf, c, sizeof(buf));
	for (uint64_t o = 0; fd >= 0 && o < size; o += sizeof(buf))
		if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
			tv_die("write");
	if (fd < 0 || close(fd))
		tv_die(p);
}

/* Byte at @off of disk image @p (opened through storage/, shared). */
static int byte_at(const char *p, uint64_t off)
{
	struct stg_dev *d = NULL;
	struct ut_err err = { 0, "" };
	uint8_t b[512];
	int r;

	if (stg_open(p, NULL, STG_O_RDONLY | STG_O_NO_LOCK, &d, &err)) {
		fprintf(stderr, "open %s: %s\n", p, err.msg);
		return -1;
	}
	r = stg_pread(d, b, sizeof(b), off & ~511ULL);
	stg_close(d);
	return r < 0 ? -1 : b[off & 511];
}

/* @p is a clean qcow2 overlay (cow_check; qemu-img check -U: the device
 * still write-locks its backing file) whose data is its backing file's:
 * byte 0 is @c. */
static void check_kept(const char *p, int c)
{
	struct cow_check_res cr;
	struct ut_err err = { 0, "" };
	char cmd[PATH_MAX + 64];

	memset(&cr, 0, sizeof(cr));
	CHECK(cow_check(p, COW_REPAIR_NONE, &cr, &err) == 0 && cr.corruptions == 0 && cr.leaks == 0,
	      "cow_check of the kept '%s': %s", p, err.msg);
	ut_buf_release(&cr.msgs);
	CHECK_EQ(byte_at(p, 0), c);
	snprintf(cmd, sizeof(cmd), "qemu-img check -q -U '%s' >/dev/null 2>&1", p);
	if (system("command -v qemu-img >/dev/null 2>&1") == 0)
		CHECK(system(cmd) == 0, "qemu-img check of the kept '%s'", p);
}

/* Entries in the test directory (nothing made again after a failure). */
static int dir_entries(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (!d)
		tv_die("opendir");
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

/* vmm_machine_disk_snapshot_start's result */
static int done_calls, done_r;
static char done_msg[UT_ERR_MSG_MAX];

static void done_cb(void *opaque, int r, const struct ut_err *err)
{
	(void)opaque;
	done_calls++;
	done_r = r;
	snprintf(done_msg, sizeof(done_msg), "%s", r ? err->msg : "");
}

/* Run the loop until done_cb was called (at most 20 s). */
static void wait_done(void)
{
	for (int i = 0; i < 200 && !done_calls; i++)
		vmm_loop_run_once(&m.vm.loop, 100);
	CHECK_EQ(done_calls, 1);
}

static void async_checks(void)
{
	static char a0[PATH_MAX + 64];
	const char *ad[1] = { a0 };
	struct ut_err err = { 0, "" };
	int r;

	make_raw(path_in("a0.raw"), 1 << 20, 0x5a);
	snprintf(a0, sizeof(a0), "path=%s,format=raw", path_in("a0.raw"));
	memset(&m, 0, sizeof(m));
	machine_init(ad, 1);
	hook_calls = hook_undos = 0;

	/* started, a second one refused meanwhile, done from the loop */
	r = vmm_machine_disk_snapshot_start(&m, "vda", path_in("as1.qcow2"), 0, done_cb, NULL, &err);
	CHECK_EQ(r, 0);
	CHECK(m.disk_job != NULL, "no job recorded");
	r = vmm_machine_disk_snapshot(&m, "vda", path_in("as2.qcow2"), 0, &err);
	CHECK_EQ(r, -EBUSY);
	CHECK_STR(err.msg, "another disk snapshot (device 'virtio-blk0', file '");
	CHECK(!exists(path_in("as2.qcow2")), "a refused snapshot left its file");
	CHECK_EQ(done_calls, 0);   /* only from the loop */
	wait_done();
	CHECK_EQ(done_r, 0);
	if (done_r)
		fprintf(stderr, "async: %s\n", done_msg);
	CHECK(m.disk_job == NULL, "the job stays recorded");
	CHECK_STR(disk_path(0), "as1.qcow2");
	CHECK_EQ(hook_calls, 1);
	CHECK_EQ(hook_locked, 0);
	CHECK_EQ(hook_no_overlay, 0);
	CHECK_EQ(byte_at(path_in("as1.qcow2"), 0), 0x5a);

	/* the worker fails (the file exists): told by done, nothing changed */
	done_calls = 0;
	r = vmm_machine_disk_snapshot_start(&m, "vda", path_in("a0.raw"), 0, done_cb, NULL, &err);
	CHECK_EQ(r, 0);
	wait_done();
	CHECK_EQ(done_r, -EEXIST);
	CHECK_STR(done_msg, "device 'virtio-blk0'");
	CHECK_STR(disk_path(0), "as1.qcow2");
	CHECK_EQ(byte_at(path_in("a0.raw"), 0), 0x5a);
	CHECK_EQ(hook_calls, 1);

	/* cancelled before the loop ran its end: -ECANCELED, no file */
	done_calls = 0;
	r = vmm_machine_disk_snapshot_start(&m, "vda", path_in("as3.qcow2"), 0, done_cb, NULL, &err);
	CHECK_EQ(r, 0);
	vmm_machine_disk_job_cancel(&m);
	CHECK_EQ(done_calls, 1);
	CHECK_EQ(done_r, -ECANCELED);
	CHECK_STR(done_msg, "cancelled: the VM's run ended first");
	CHECK(!exists(path_in("as3.qcow2")), "a cancelled snapshot left its file");
	CHECK(m.disk_job == NULL, "the job stays recorded");
	CHECK_STR(disk_path(0), "as1.qcow2");
	vmm_machine_disk_job_cancel(&m);   /* none: nothing */
	CHECK_EQ(done_calls, 1);
	CHECK_EQ(hook_calls, 1);
	for (int i = 0; i < 3; i++)   /* nothing left for the loop */
		vmm_loop_run_once(&m.vm.loop, 10);
	CHECK_EQ(done_calls, 1);

	/* the started one, prepare failing after the hook, the undo too:
	 * done tells both and the file kept; the disk unchanged */
	done_calls = 0;
	hook_calls = hook_undos = 0;
	snprintf(swap_path, sizeof(swap_path), "%s", path_in("as1.qcow2"));
	snprintf(swap_moved, sizeof(swap_moved), "%s", path_in("as1.moved"));
	hook_hide = hook_undo_fail = 1;
	r = vmm_machine_disk_snapshot_start(&m, "vda", path_in("as4.qcow2"), 0, done_cb, NULL, &err);
	CHECK_EQ(r, 0);
	wait_done();
	hook_hide = hook_undo_fail = 0;
	if (rename(swap_moved, swap_path))
		tv_die("rename back");
	CHECK(done_r < 0, "a started snapshot whose prepare should fail: %d", done_r);
	CHECK_STR(done_msg, "unable to stat");
	CHECK_STR(done_msg, "as4.qcow2' was kept (the record names it; an overlay of '");
	CHECK_STR(done_msg, "the test hook cannot undo");
	CHECK_EQ(hook_calls, 1);
	CHECK_EQ(hook_undos, 1);
	CHECK(m.disk_job == NULL, "the job stays recorded");
	CHECK_STR(disk_path(0), "as1.qcow2");
	check_kept(path_in("as4.qcow2"), 0x5a);
	hook_record[0] = '\0';
	machine_exit();
}

int main(void)
{
	char base[PATH_MAX], two[PATH_MAX], rodisk[PATH_MAX], real[PATH_MAX];
	char o0[PATH_MAX + 64], o1[PATH_MAX + 64], o2[PATH_MAX + 64];
	struct ut_err err = { 0, "" };
	const char *disks[3];
	int r;

	snprintf(dir, sizeof(dir), "/tmp/cowvm-snap-%d", (int)getpid());
	if (mkdir(dir, 0700))
		tv_die("mkdir");
	snprintf(base, sizeof(base), "%s", path_in("base.raw"));
	snprintf(two, sizeof(two), "%s", path_in("two.raw"));
	snprintf(rodisk, sizeof(rodisk), "%s", path_in("ro.raw"));
	make_raw(base, 1 << 20, 0xaa);
	make_raw(two, 1 << 20, 0xbb);
	make_raw(rodisk, 1 << 20, 0xcc);
	snprintf(o0, sizeof(o0), "path=%s,format=raw,serial=one,werror=stop", base);
	snprintf(o1, sizeof(o1), "path=%s,cache=writeback", two);
	snprintf(o2, sizeof(o2), "path=%s,ro=on", rodisk);
	disks[0] = o0;
	disks[1] = o1;
	disks[2] = o2;
	machine_init(disks, 3);

	/* refusals: nothing made, nothing changed */
	r = vmm_machine_disk_snapshot(&m, "virtio-blk3", path_in("x.qcow2"), 0, &err);
	CHECK_EQ(r, -ENODEV);
	CHECK_STR(err.msg, "device 'virtio-blk3' not found: the VM's disks are virtio-blk0 to virtio-blk2 (vda to vdc)");
	r = vmm_machine_disk_snapshot(&m, "vdd", path_in("x.qcow2"), 0, &err);
	CHECK_EQ(r, -ENODEV);
	r = vmm_machine_disk_snapshot(&m, "vdc", path_in("x.qcow2"), 0, &err);
	CHECK_EQ(r, -EROFS);
	CHECK_STR(err.msg, "device 'virtio-blk2': disk '");
	CHECK_STR(err.msg, "read-only");
	r = vmm_machine_disk_snapshot(&m, "vda", path_in("x,y.qcow2"), 0, &err);
	CHECK_EQ(r, -EINVAL);
	CHECK_STR(err.msg, "','");
	/* no ',' in the name given, but in the absolute one the disk's
	 * options would carry (a symbolic link to a directory "c,d") */
	{
		char cd[PATH_MAX], via[PATH_MAX];

		snprintf(cd, sizeof(cd), "%s", path_in("c,d"));
		snprintf(via, sizeof(via), "%s/cd-link/x.qcow2", dir);
		if (mkdir(cd, 0755) || symlink(cd, path_in("cd-link")))
			tv_die("c,d");
		r = vmm_machine_disk_snapshot(&m, "vda", via, 0, &err);
		CHECK_EQ(r, -EINVAL);
		CHECK_STR(err.msg, "','");
		CHECK_STR(err.msg, "c,d/x.qcow2");
		CHECK(!exists(via), "a refused snapshot left its file");
		CHECK_STR(disk_path(0), "base.raw");
		CHECK_EQ(hook_calls, 0);
	}
	r = vmm_machine_disk_snapshot(&m, "vda", two, 0, &err);
	CHECK(r < 0, "a snapshot onto an existing file: %d", r);
	CHECK_STR(err.msg, "two.raw");
	CHECK(exists(two) && byte_at(two, 0) == 0xbb, "the existing file was changed");
	CHECK(!exists(path_in("x.qcow2")), "a refused snapshot left a file");
	CHECK_EQ(hook_calls, 0);

	/* the hook refuses: cancelled, the file removed, nothing changed */
	hook_fail = 1;
	r = vmm_machine_disk_snapshot(&m, "virtio-blk1", path_in("h.qcow2"), 0, &err);
	CHECK_EQ(r, -EEXIST);
	CHECK_STR(err.msg, "cancelled: the test hook refuses");
	CHECK_EQ(hook_calls, 1);
	CHECK_EQ(hook_undos, 0);
	CHECK(!exists(path_in("h.qcow2")), "the overlay of a cancelled snapshot is left");
	CHECK(!strcmp(disk_path(1), two), "the device moved: %s", disk_path(1));
	CHECK(m.cfg.disks[1] == o1, "cfg.disks changed");
	hook_fail = 0;
	hook_calls = 0;

	/* the prepare fails (the hook renamed the image away: no file at its
	 * name) after the hook recorded the overlay: the hook told to undo
	 * while the file is still there; the undo works: the record gone,
	 * then the file removed, nothing changed; the undo fails: the file
	 * KEPT (the record names it), a clean overlay of the image, and the
	 * error says both problems and that it was kept */
	snprintf(swap_path, sizeof(swap_path), "%s", two);
	snprintf(swap_moved, sizeof(swap_moved), "%s", path_in("two.moved"));
	for (hook_undo_fail = 0; hook_undo_fail < 2; hook_undo_fail++) {
		const char *pf = path_in("p.qcow2");
		int n0 = dir_entries();

		hook_hide = 1;
		hook_calls = hook_undos = hook_no_overlay = 0;
		r = vmm_machine_disk_snapshot(&m, "vdb", pf, 0, &err);
		hook_hide = 0;
		printf("  failed prepare: %s\n", err.msg);
		if (rename(swap_moved, two))   /* the image back at its name */
			tv_die("rename back");
		CHECK(r < 0, "a prepare that should fail: %d", r);
		CHECK_STR(err.msg, "device 'virtio-blk1'");
		CHECK_STR(err.msg, "unable to stat");
		CHECK_EQ(hook_calls, 1);
		CHECK_EQ(hook_undos, 1);
		CHECK_EQ(hook_no_overlay, 0);   /* undo before the file's removal */
		CHECK(!strcmp(disk_path(1), two), "the device moved: %s", disk_path(1));
		CHECK(m.cfg.disks[1] == o1, "cfg.disks changed");
		CHECK(!vmm_vm_paused(&m.vm), "left paused after a failed prepare");
		if (!hook_undo_fail) {
			CHECK(!strstr(err.msg, "put back"), "undo told as failed: %s", err.msg);
			CHECK(!strstr(err.msg, "kept"), "a file told as kept: %s", err.msg);
			CHECK_EQ(hook_record[0], '\0');
			CHECK(!exists(pf), "the overlay of a failed prepare is left, its record undone");
			CHECK_EQ(dir_entries(), n0);
			continue;
		}
		CHECK_STR(err.msg, "unable to stat");
		CHECK_STR(err.msg, "; and the record of the snapshot could not be put back, so '");
		CHECK_STR(err.msg, "p.qcow2' was kept (the record names it; an overlay of '");
		CHECK_STR(err.msg, "two.raw' with nothing written to it): the test hook cannot undo");
		CHECK_STR(hook_record, "p.qcow2");
		CHECK(exists(pf), "the overlay the record names was removed");
		CHECK_EQ(dir_entries(), n0 + 1);   /* that one only: no temporary */
		check_kept(pf, 0xbb);
		CHECK_EQ(byte_at(two, 0), 0xbb);
		if (unlink(pf))
			tv_die("unlink kept");
		hook_record[0] = '\0';
	}

	/* the commit fails (the hook put another file at the image's name):
	 * aborted, the hook told to undo, nothing changed; an undo that fails
	 * too is told, and the overlay kept; the file at the image's name
	 * (not the device's) is not touched and nothing is made again */
	for (hook_undo_fail = 0; hook_undo_fail < 2; hook_undo_fail++) {
		const char *cf = path_in("c.qcow2");
		struct stat sw0, sw1;
		int n0 = dir_entries();

		hook_swap = 1;
		hook_calls = hook_undos = hook_no_overlay = 0;
		r = vmm_machine_disk_snapshot(&m, "vdb", cf, 0, &err);
		hook_swap = 0;
		printf("  failed commit: %s\n", err.msg);
		CHECK(r < 0, "a commit that should fail: %d", r);
		CHECK_STR(err.msg, "device 'virtio-blk1'");
		CHECK_STR(err.msg, "was replaced");
		CHECK_EQ(hook_calls, 1);
		CHECK_EQ(hook_undos, 1);
		CHECK_EQ(hook_no_overlay, 0);
		CHECK(!strcmp(disk_path(1), two), "the device moved: %s", disk_path(1));
		CHECK(m.cfg.disks[1] == o1, "cfg.disks changed");
		CHECK(!vmm_vm_paused(&m.vm), "left paused after a failed commit");
		/* the swapped-in file: as the hook made it, 1 MiB of zeros */
		CHECK(stat(two, &sw0) == 0 && sw0.st_size == 1 << 20, "the file at the image's name");
		CHECK_EQ(byte_at(two, 0), 0);
		CHECK_EQ(byte_at(swap_moved, 0), 0xbb);
		if (hook_undo_fail) {
			CHECK_STR(err.msg, "; and the record of the snapshot could not be put back, so '");
			CHECK_STR(err.msg, "c.qcow2' was kept (the record names it; an overlay of '");
			CHECK_STR(err.msg, "): the test hook cannot undo");
			CHECK_STR(hook_record, "c.qcow2");
			CHECK(exists(cf), "the overlay the record names was removed");
			CHECK_EQ(dir_entries(), n0 + 2);   /* the kept one, the moved image */
		} else {
			CHECK(!strstr(err.msg, "put back"), "undo told as failed: %s", err.msg);
			CHECK_EQ(hook_record[0], '\0');
			CHECK(!exists(cf), "the overlay of a failed commit is left, its record undone");
			CHECK_EQ(dir_entries(), n0 + 1);   /* the moved image */
		}
		CHECK(stat(two, &sw1) == 0 && sw1.st_ino == sw0.st_ino, "the swapped-in file changed");
		if (rename(swap_moved, two))
			tv_die("rename back");
		if (hook_undo_fail) {
			/* the image back at its name: the kept overlay reads it */
			check_kept(cf, 0xbb);
			if (unlink(cf))
				tv_die("unlink kept");
			hook_record[0] = '\0';
		}
	}
	hook_undo_fail = 0;
	hook_calls = hook_undos = 0;

	/* a snapshot of the raw disk (given format=raw) */
	r = vmm_machine_disk_snapshot(&m, "vda", path_in("ov0.qcow2"), 0, &err);
	CHECK_EQ(r, 0);
	if (r)
		fprintf(stderr, "snapshot: %s\n", err.msg);
	CHECK_EQ(hook_calls, 1);
	CHECK_EQ(hook_disk, 0);
	CHECK_EQ(hook_size, 1 << 20);
	if (!realpath(base, real))
		tv_die("realpath");
	CHECK(!strcmp(hook_image, real), "hook image %s", hook_image);
	if (!realpath(path_in("ov0.qcow2"), real))
		tv_die("realpath ov0");
	CHECK(!strcmp(hook_overlay, real), "hook overlay %s", hook_overlay);
	CHECK(!strcmp(disk_path(0), path_in("ov0.qcow2")) || !strcmp(disk_path(0), real),
	      "the device writes %s", disk_path(0));
	{
		char want[2 * PATH_MAX];

		snprintf(want, sizeof(want), "path=%s,format=qcow2,serial=one,werror=stop", real);
		CHECK(!strcmp(m.cfg.disks[0], want), "cfg.disks[0] = %s", m.cfg.disks[0]);
	}
	CHECK_EQ(byte_at(path_in("ov0.qcow2"), 4096), 0xaa);   /* through the backing file */
	CHECK(!vmm_vm_paused(&m.vm), "the VM stays paused after a snapshot of a running VM");
	CHECK_EQ(hook_paused, 0);     /* QEMU's blockdev-snapshot-sync: no pause, a drain */
	CHECK_EQ(hook_locked, 0);   /* the hook runs before the drained section */
	CHECK_EQ(hook_no_overlay, 0);

	/* paused before: stays paused; mode existing (a second overlay on it) */
	{
		char cmd[3 * PATH_MAX];

		snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 -b %s -F qcow2 %s >/dev/null 2>&1",
			 real, path_in("ov1.qcow2"));
		if (system(cmd) == 0) {
			vmm_vm_pause(&m.vm);
			r = vmm_machine_disk_snapshot(&m, "virtio-blk0", path_in("ov1.qcow2"),
						      VMM_SNAP_EXISTING, &err);
			CHECK_EQ(r, 0);
			if (r)
				fprintf(stderr, "existing: %s\n", err.msg);
			CHECK(vmm_vm_paused(&m.vm), "a paused VM was resumed by a snapshot");
			CHECK_STR(m.cfg.disks[0], "ov1.qcow2,format=qcow2,serial=one");
			vmm_vm_resume(&m.vm);
		} else {
			tv_unchecked = "qemu-img is missing: mode existing not checked";
		}
	}
	/* the other disk too, by its id; then a second disk's options kept */
	r = vmm_machine_disk_snapshot(&m, "virtio-blk1", path_in("ov-two.qcow2"), 0, &err);
	CHECK_EQ(r, 0);
	CHECK_STR(m.cfg.disks[1], "ov-two.qcow2,cache=writeback,format=qcow2");
	CHECK_EQ(byte_at(path_in("ov-two.qcow2"), 0), 0xbb);
	CHECK_EQ(byte_at(base, 0), 0xaa);
	CHECK_EQ(hook_undos, 0);

	machine_exit();

	/* targets (cowvm start passes the catalog's): "vdX" is the disk given
	 * target=vdX, not the X-th; a name no disk has is refused naming the
	 * targets; the target and (for a serial from the file name) the
	 * serial survive in cfg.disks */
	{
		static char t0[PATH_MAX + 64], t1[PATH_MAX + 64];
		const char *td[2] = { t0, t1 };

		make_raw(path_in("t0.raw"), 1 << 20, 0x10);
		make_raw(path_in("t1.raw"), 1 << 20, 0x11);
		/* the longest target the catalog takes: vd and 6 letters */
		snprintf(t0, sizeof(t0), "path=%s,target=vdbcdefg", path_in("t0.raw"));
		snprintf(t1, sizeof(t1), "path=%s,format=raw,target=vda", path_in("t1.raw"));
		memset(&m, 0, sizeof(m));
		machine_init(td, 2);
		hook_calls = 0;
		r = vmm_machine_disk_snapshot(&m, "vdc", path_in("tx.qcow2"), 0, &err);
		CHECK_EQ(r, -ENODEV);
		CHECK_STR(err.msg, "device 'vdc' not found: the VM's disks are virtio-blk0 vdbcdefg, virtio-blk1 vda");
		CHECK(!exists(path_in("tx.qcow2")), "a refused snapshot left its file");
		r = vmm_machine_disk_snapshot(&m, "vda", path_in("tv.qcow2"), 0, &err);
		CHECK_EQ(r, 0);
		if (r)
			fprintf(stderr, "target vda: %s\n", err.msg);
		CHECK_EQ(hook_disk, 1);
		CHECK(!strcmp(disk_path(0), path_in("t0.raw")), "vda moved virtio-blk0: %s", disk_path(0));
		CHECK_STR(disk_path(1), "tv.qcow2");
		CHECK_STR(m.cfg.disks[1], "tv.qcow2,format=qcow2,target=vda");
		CHECK_STR(m.cfg.disks[1], "serial=t1.raw");
		CHECK_EQ(byte_at(path_in("tv.qcow2"), 0), 0x11);
		r = vmm_machine_disk_snapshot(&m, "vdbcdefg", path_in("tg.qcow2"), 0, &err);
		CHECK_EQ(r, 0);
		CHECK_EQ(hook_disk, 0);
		CHECK_STR(m.cfg.disks[0], "tg.qcow2,target=vdbcdefg,format=qcow2");
		machine_exit();
	}
	async_checks();
	{
		char cmd[PATH_MAX];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd))
			fprintf(stderr, "warning: %s left\n", dir);
	}
	return tv_finish("test-disk-snapshot");
}
