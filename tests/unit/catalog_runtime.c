/* tests/unit/catalog_runtime.c — runtime state, crash detection, paths,
 * image probing and lineage, rm --with-disks.
 *
 * - transitions stopped -> starting -> running -> paused -> running ->
 *   stopping -> stopped record pid/socket and one event each; stopped
 *   clears pid and socket.
 * - a VM whose VMM died (child killed with SIGKILL) is marked crashed by
 *   cat_vm_refresh/cat_vm_list, its stale sockets are removed, and it can
 *   be started again; a live pid with another start time (pid reuse) is
 *   also crashed; a live VMM stays running.
 * - runtime paths follow $XDG_RUNTIME_DIR, else $COWVM_HOME/run; too long
 *   a socket path is refused.
 * - probe: raw size by stat; a qcow2 header's virtual size and backing
 *   file (relative name resolved) become an image chain with parents.
 * - rm --with-disks returns the images to delete, and keeps (and names)
 *   those another VM uses or that back other images.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "catalog/db.h"
#include "tests/unit/cat_test.h"

static char *home, *kernel;

static void write_qcow2(const char *path, uint64_t size, const char *backing)
{
	uint8_t hdr[512] = { 'Q', 'F', 'I', 0xfb };
	uint32_t v32;
	uint64_t v64;
	FILE *f = fopen(path, "w");

	v32 = htobe32(3);
	memcpy(hdr + 4, &v32, 4);
	if (backing) {
		v64 = htobe64(256);
		memcpy(hdr + 8, &v64, 8);
		v32 = htobe32((uint32_t)strlen(backing));
		memcpy(hdr + 16, &v32, 4);
		memcpy(hdr + 256, backing, strlen(backing));
	}
	v32 = htobe32(16);
	memcpy(hdr + 20, &v32, 4);
	v64 = htobe64(size);
	memcpy(hdr + 24, &v64, 8);
	if (!f || fwrite(hdr, 1, sizeof(hdr), f) != sizeof(hdr) || fclose(f)) {
		perror(path);
		exit(2);
	}
}

static int count_events(struct cat_db *db, const char *vm)
{
	struct cat_event *ev = NULL;
	struct ut_err err;
	size_t n = 0;

	if (cat_event_list(db, vm, 0, &ev, &n, &err) < 0)
		return -1;
	cat_events_free(ev, n);
	return (int)n;
}

static void lifecycle(struct cat_db *db)
{
	struct cat_vm vm = { 0 };
	struct cat_vm_paths p = { 0 };
	struct ut_err err;
	struct cat_runtime rt;
	pid_t child;
	int status, fd;

	ut_err_clear(&err);
	printf("lifecycle\n");
	t_vm(&vm, "life", kernel);
	CHECK_OK(cat_vm_define(db, &vm, 0, "create", &err), &err);
	cat_vm_clear(&vm);
	CHECK_OK(cat_vm_paths(db, "life", &p, &err), &err);

	/* a stand-in VMM: a child that sleeps */
	child = fork();
	if (child == 0) {
		pause();
		_exit(0);
	}
	rt = (struct cat_runtime){ .pid = child, .ctl_socket = p.ctl_socket };
	CHECK_OK(cat_vm_transition(db, "life", CAT_ST(CAT_VM_STOPPED) | CAT_ST(CAT_VM_CRASHED),
				   CAT_VM_STARTING, &rt, "start", NULL, NULL, &err), &err);
	CHECK_OK(cat_vm_transition(db, "life", CAT_ST(CAT_VM_STARTING), CAT_VM_RUNNING, NULL,
				   "running", NULL, NULL, &err), &err);
	CHECK_OK(cat_vm_transition(db, "life", CAT_ST(CAT_VM_RUNNING), CAT_VM_PAUSED, NULL,
				   "pause", NULL, NULL, &err), &err);
	CHECK_OK(cat_vm_transition(db, "life", CAT_ST(CAT_VM_PAUSED), CAT_VM_RUNNING, NULL,
				   "resume", NULL, NULL, &err), &err);
	CHECK_OK(cat_vm_get(db, "life", &vm, &err), &err);
	CHECK(vm.state == CAT_VM_RUNNING && vm.pid == child && vm.pid_start != 0);
	CHECK(vm.ctl_socket && !strcmp(vm.ctl_socket, p.ctl_socket));
	CHECK_OK(cat_vm_refresh(db, &vm, &err), &err);
	CHECK(vm.state == CAT_VM_RUNNING);   /* alive: unchanged */
	cat_vm_clear(&vm);

	/* the VMM dies: kill -9; its sockets stay behind */
	fd = creat(p.ctl_socket, 0600);
	close(fd);
	fd = creat(p.console_socket, 0600);
	close(fd);
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	{
		struct cat_vm_summary *rows = NULL;
		size_t n = 0;

		CHECK_OK(cat_vm_list(db, &rows, &n, &err), &err);
		CHECK(n == 1 && rows[0].state == CAT_VM_CRASHED && rows[0].pid == 0);
		cat_vm_summaries_free(rows, n);
	}
	CHECK(access(p.ctl_socket, F_OK) < 0 && access(p.console_socket, F_OK) < 0);
	CHECK_OK(cat_vm_get(db, "life", &vm, &err), &err);
	CHECK(vm.state == CAT_VM_CRASHED && vm.pid == 0 && vm.ctl_socket == NULL);
	cat_vm_clear(&vm);
	/* start again from crashed */
	rt = (struct cat_runtime){ .pid = getpid(), .ctl_socket = p.ctl_socket };
	CHECK_OK(cat_vm_transition(db, "life", CAT_ST(CAT_VM_STOPPED) | CAT_ST(CAT_VM_CRASHED),
				   CAT_VM_RUNNING, &rt, "start", NULL, NULL, &err), &err);
	/* pid reuse: our pid is alive but the recorded start time differs */
	CHECK_OK(cat_exec(db->h, "UPDATE vms SET pid_start = pid_start + 1 WHERE name = 'life'",
			  &err), &err);
	CHECK_OK(cat_vm_get(db, "life", &vm, &err), &err);
	CHECK_OK(cat_vm_refresh(db, &vm, &err), &err);
	CHECK(vm.state == CAT_VM_CRASHED);
	cat_vm_clear(&vm);
	CHECK_OK(cat_vm_transition(db, "life", CAT_ST(CAT_VM_CRASHED), CAT_VM_STOPPED, NULL,
				   "cleanup", NULL, NULL, &err), &err);
	/* create, start, running, pause, resume, crash-detected, start, crash, stop */
	CHECK(count_events(db, "life") == 9);
	CHECK_OK(cat_vm_remove(db, "life", 0, NULL, &err), &err);
	CHECK(count_events(db, "life") == 10);   /* events outlive the VM */
	cat_vm_paths_clear(&p);
}

static void paths(void)
{
	struct cat_vm_paths p = { 0 };
	struct cat_db *db = NULL;
	struct ut_err err;
	char *xdg = t_tmpdir(), want[600], longdir[300];

	ut_err_clear(&err);
	printf("paths\n");
	setenv("XDG_RUNTIME_DIR", xdg, 1);
	CHECK_OK(cat_open(&db, home, &err), &err);
	CHECK_OK(cat_vm_paths(db, "p1", &p, &err), &err);
	snprintf(want, sizeof(want), "%s/cowvm/p1.ctl", xdg);
	CHECK(p.ctl_socket && !strcmp(p.ctl_socket, want));
	snprintf(want, sizeof(want), "%s/logs/p1.log", home);
	CHECK(p.console_log && !strcmp(p.console_log, want));
	cat_vm_paths_clear(&p);
	cat_close(db);
	db = NULL;
	unsetenv("XDG_RUNTIME_DIR");
	CHECK_OK(cat_open(&db, home, &err), &err);
	CHECK_OK(cat_vm_paths(db, "p1", &p, &err), &err);
	snprintf(want, sizeof(want), "%s/run/p1.console", home);
	CHECK(p.console_socket && !strcmp(p.console_socket, want));
	cat_vm_paths_clear(&p);
	cat_close(db);
	db = NULL;
	memset(longdir, 'x', sizeof(longdir));
	snprintf(longdir, sizeof(longdir), "%s/%0100d", xdg, 0);
	setenv("XDG_RUNTIME_DIR", longdir, 1);
	CHECK_OK(cat_open(&db, home, &err), &err);
	mkdir(longdir, 0700);
	CHECK_ERR(cat_vm_paths(db, "p1", &p, &err), -ENAMETOOLONG, "longer than a UNIX socket",
		  &err);
	cat_close(db);
	unsetenv("XDG_RUNTIME_DIR");
	t_rmtree(xdg);
	free(xdg);
}

static void images(struct cat_db *db)
{
	char *base = t_file(home, "base.raw", 3 << 20), *mid, *top, *other;
	struct cat_image_info info;
	struct cat_rm_report rep = { 0 };
	struct cat_vm vm = { 0 }, vm2 = { 0 };
	struct ut_err err;

	ut_err_clear(&err);
	printf("images\n");
	if (asprintf(&mid, "%s/mid.qcow2", home) < 0 || asprintf(&top, "%s/top.qcow2", home) < 0 ||
	    asprintf(&other, "%s/other.qcow2", home) < 0)
		exit(2);
	write_qcow2(mid, 3 << 20, base);          /* absolute backing name */
	write_qcow2(top, 3 << 20, "mid.qcow2");   /* relative to its directory */
	write_qcow2(other, 5 << 20, NULL);
	CHECK_OK(cat_image_probe(base, &info, &err), &err);
	CHECK(!strcmp(info.format, "raw") && info.virtual_size == 3 << 20 && !info.backing);
	cat_image_info_clear(&info);
	CHECK_OK(cat_image_probe(top, &info, &err), &err);
	CHECK(!strcmp(info.format, "qcow2") && info.virtual_size == 3 << 20);
	CHECK(info.backing && !strcmp(info.backing, mid) &&
	      !strcmp(info.backing_format, "qcow2"));
	cat_image_info_clear(&info);
	CHECK_ERR(cat_image_probe("/nonexistent/x.raw", &info, &err), -ENOENT, "unable to open",
		  &err);
	{
		char *a, *b;

		if (asprintf(&a, "%s/loop-a.qcow2", home) < 0 ||
		    asprintf(&b, "%s/loop-b.qcow2", home) < 0)
			exit(2);
		write_qcow2(a, 1 << 20, "loop-b.qcow2");
		write_qcow2(b, 1 << 20, "loop-a.qcow2");
		CHECK_ERR(cat_image_register(db, a, NULL, NULL, &err), -ELOOP,
			  "backing chain loops", &err);
		free(a);
		free(b);
	}

	/* a VM on top.qcow2: the whole lineage is recorded */
	t_vm(&vm, "img", kernel);
	CHECK_OK(cat_vm_add_disk(&vm, top, NULL, "vda", 0, 0, 0, &err), &err);
	CHECK_OK(cat_vm_add_disk(&vm, other, NULL, "vdb", 0, 0, 0, &err), &err);
	CHECK_OK(cat_vm_define(db, &vm, 0, "create", &err), &err);
	cat_vm_clear(&vm);
	CHECK_OK(cat_vm_get(db, "img", &vm, &err), &err);
	CHECK(vm.n_disks == 2 && vm.disks[0].n_chain == 3);
	if (vm.n_disks == 2 && vm.disks[0].n_chain == 3) {
		CHECK(!strcmp(vm.disks[0].chain[0].format, "qcow2"));
		CHECK(!strcmp(vm.disks[0].chain[1].path, mid));
		CHECK(!strcmp(vm.disks[0].chain[2].path, base) &&
		      !strcmp(vm.disks[0].chain[2].format, "raw") &&
		      vm.disks[0].chain[2].virtual_size == 3 << 20);
		CHECK(vm.disks[1].chain[0].virtual_size == 5 << 20);
	}
	cat_vm_clear(&vm);
	/* another VM shares other.qcow2 read-only... which img writes: refused */
	t_vm(&vm2, "img2", kernel);
	CHECK_OK(cat_vm_add_disk(&vm2, mid, NULL, "vda", 1, 0, 0, &err), &err);
	CHECK_OK(cat_vm_define(db, &vm2, 0, "create", &err), &err);
	/* rm --with-disks: top and other go; mid (used by img2, backs top... now
	 * only used by img2) is kept; base backs mid: not even considered */
	CHECK_OK(cat_vm_remove(db, "img", CAT_RM_DISKS, &rep, &err), &err);
	CHECK(rep.n_removed == 2 && rep.n_kept == 0);
	if (rep.n_removed == 2)
		CHECK(!strcmp(rep.removed[0], top) && !strcmp(rep.removed[1], other));
	cat_rm_report_clear(&rep);
	CHECK_OK(cat_vm_remove(db, "img2", CAT_RM_DISKS, &rep, &err), &err);
	CHECK(rep.n_removed == 1 && rep.n_kept == 0);
	cat_rm_report_clear(&rep);
	/* a disk that backs another image is kept and named */
	CHECK_OK(cat_image_register(db, top, NULL, NULL, &err), &err);
	t_vm(&vm, "img3", kernel);
	CHECK_OK(cat_vm_add_disk(&vm, mid, NULL, "vda", 1, 0, 0, &err), &err);
	CHECK_OK(cat_vm_define(db, &vm, 0, "create", &err), &err);
	CHECK_OK(cat_vm_remove(db, "img3", CAT_RM_DISKS, &rep, &err), &err);
	CHECK(rep.n_removed == 0 && rep.n_kept == 1);
	if (rep.n_kept == 1)
		CHECK(strstr(rep.kept[0], "backing image of") != NULL);
	cat_rm_report_clear(&rep);
	cat_vm_clear(&vm);
	cat_vm_clear(&vm2);
	free(base);
	free(mid);
	free(top);
	free(other);
}

int main(void)
{
	struct cat_db *db = NULL;
	struct ut_err err;

	ut_err_clear(&err);
	unsetenv("XDG_RUNTIME_DIR");
	home = t_tmpdir();
	kernel = t_file(home, "vmlinuz", 4096);
	CHECK_OK(cat_open(&db, home, &err), &err);
	if (db) {
		lifecycle(db);
		images(db);
	}
	cat_close(db);
	paths();
	t_rmtree(home);
	return t_done("catalog_runtime");
}
