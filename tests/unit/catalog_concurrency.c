/* tests/unit/catalog_concurrency.c — 8 processes x 100 create/rm.
 *
 * Eight processes start together on a catalog that does not exist yet (so
 * they also race to create and migrate it). Each runs 100 iterations, every
 * one a fresh connection like a separate `cowvm` command: create VM
 * "wC-I" with a disk and a NIC, and remove it again when I is odd; every
 * tenth iteration also lists. Checks: no operation failed (so no "database
 * is locked" or busy error ever reached a caller), exactly the 8 x 50 even
 * VMs remain with their disks and NICs, and the event log has exactly one
 * row per operation (1,200): no update was lost.
 *
 * Then a process holds the write lock for 7 s, longer than SQLite's busy
 * timeout (5 s): a define started meanwhile waits (the retry loop above the
 * busy timeout) and succeeds once the lock is released. With the wait
 * limited to 0.5 s ($COWVM_CATALOG_WAIT_MS), the define fails with "the
 * catalog is busy", never SQLite's "database is locked".
 */
#include <errno.h>
#include <sys/wait.h>
#include <time.h>

#include "catalog/db.h"
#include "tests/unit/cat_test.h"

#define PROCS 8
#define ITERS 100

static int child(int c, const char *home, const char *kernel, const char *disk, int gate)
{
	struct ut_err err;
	char name[32], mac[18], go;
	int fails = 0;

	if (read(gate, &go, 1) != 1)
		return 2;
	for (int i = 0; i < ITERS; i++) {
		struct cat_db *db = NULL;
		struct cat_vm vm = { 0 };

		ut_err_clear(&err);
		snprintf(name, sizeof(name), "w%d-%d", c, i);
		snprintf(mac, sizeof(mac), "52:54:00:%02x:%02x:%02x", c, i / 256, i % 256);
		if (cat_open(&db, home, &err) < 0)
			goto fail;
		t_vm(&vm, name, kernel);
		if (cat_vm_add_disk(&vm, disk, "raw", "vda", 1, 0, 0, &err) < 0 ||
		    cat_vm_add_nic(&vm, mac, "ethernet", NULL, NULL, &err) < 0 ||
		    cat_vm_define(db, &vm, 0, "create", &err) < 0)
			goto fail;
		if (i % 2 && cat_vm_remove(db, name, 0, NULL, &err) < 0)
			goto fail;
		if (i % 10 == 0) {
			struct cat_vm_summary *rows = NULL;
			size_t n = 0;

			if (cat_vm_list(db, &rows, &n, &err) < 0)
				goto fail;
			cat_vm_summaries_free(rows, n);
		}
		cat_vm_clear(&vm);
		cat_close(db);
		continue;
fail:
		fprintf(stderr, "process %d, %s: %s\n", c, name, err.msg);
		fails++;
		cat_vm_clear(&vm);
		cat_close(db);
	}
	return fails ? 1 : 0;
}

/* Hold BEGIN IMMEDIATE for @secs in a child; returns its pid once it holds it. */
static pid_t hold_lock(const char *home, int secs)
{
	int p[2];
	pid_t pid;
	char c;

	if (pipe(p) < 0)
		exit(2);
	pid = fork();
	if (pid == 0) {
		struct cat_db *db = NULL;
		struct ut_err err;

		close(p[0]);
		if (cat_open(&db, home, &err) < 0 || cat_tx_begin(db, &err) < 0)
			_exit(1);
		if (write(p[1], "x", 1) != 1)
			_exit(1);
		sleep((unsigned)secs);
		cat_tx_commit(db, &err);
		cat_close(db);
		_exit(0);
	}
	close(p[1]);
	if (read(p[0], &c, 1) != 1)
		exit(2);
	close(p[0]);
	return pid;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void long_holder(const char *home, const char *kernel)
{
	struct cat_db *db = NULL;
	struct cat_vm vm = { 0 };
	struct ut_err err;
	double t0, t;
	pid_t holder;
	int status;

	ut_err_clear(&err);
	printf("a writer holding the lock for 7 s\n");
	CHECK_OK(cat_open(&db, home, &err), &err);
	holder = hold_lock(home, 7);
	t0 = now_s();
	t_vm(&vm, "patient", kernel);
	CHECK_OK(cat_vm_define(db, &vm, 0, "create", &err), &err);
	t = now_s() - t0;
	printf("  define waited %.1f s and succeeded\n", t);
	CHECK(t > 5.5);
	waitpid(holder, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	cat_vm_clear(&vm);
	cat_close(db);
	db = NULL;

	/* a short wait: a clear "busy", not "database is locked" */
	setenv("COWVM_CATALOG_WAIT_MS", "500", 1);
	holder = hold_lock(home, 2);
	CHECK_OK(cat_open(&db, home, &err), &err);   /* opening needs no lock */
	t_vm(&vm, "impatient", kernel);
	if (db)
		CHECK_ERR(cat_vm_define(db, &vm, 0, "create", &err), -EBUSY,
			  "the catalog is busy (another cowvm process held it for more "
			  "than 0.5 s); try again", &err);
	cat_vm_clear(&vm);
	cat_close(db);
	waitpid(holder, &status, 0);
	unsetenv("COWVM_CATALOG_WAIT_MS");
}

int main(void)
{
	char *home = t_tmpdir(), *kernel = t_file(home, "vmlinuz", 4096);
	char *disk = t_file(home, "shared.raw", 1 << 20);
	struct cat_vm_summary *rows = NULL;
	struct cat_event *ev = NULL;
	struct cat_db *db = NULL;
	struct ut_err err;
	size_t n = 0, n_ev = 0;
	pid_t pids[PROCS];
	int gate[2], status;

	ut_err_clear(&err);
	if (pipe(gate) < 0)
		return 2;
	for (int c = 0; c < PROCS; c++) {
		pids[c] = fork();
		if (pids[c] == 0) {
			close(gate[1]);
			_exit(child(c, home, kernel, disk, gate[0]));
		}
	}
	close(gate[0]);
	/* let them all go at once */
	for (int c = 0; c < PROCS; c++)
		if (write(gate[1], "g", 1) != 1)
			return 2;
	close(gate[1]);
	for (int c = 0; c < PROCS; c++) {
		CHECK(waitpid(pids[c], &status, 0) == pids[c]);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	CHECK_OK(cat_open(&db, home, &err), &err);
	if (!db)
		goto out;
	CHECK_OK(cat_vm_list(db, &rows, &n, &err), &err);
	printf("%zu VMs remain (want %d)\n", n, PROCS * ITERS / 2);
	CHECK(n == PROCS * ITERS / 2);
	for (int c = 0; c < PROCS; c++) {
		for (int i = 0; i < ITERS; i += 2) {
			char name[32];
			struct cat_vm vm = { 0 };

			snprintf(name, sizeof(name), "w%d-%d", c, i);
			CHECK_OK(cat_vm_get(db, name, &vm, &err), &err);
			CHECK(vm.n_disks == 1 && vm.n_nics == 1);
			cat_vm_clear(&vm);
		}
	}
	CHECK_OK(cat_event_list(db, NULL, 0, &ev, &n_ev, &err), &err);
	printf("%zu events (want %d)\n", n_ev, PROCS * ITERS * 3 / 2);
	CHECK(n_ev == PROCS * ITERS * 3 / 2);
	long_holder(home, kernel);
out:
	cat_events_free(ev, n_ev);
	cat_vm_summaries_free(rows, n);
	cat_close(db);
	t_rmtree(home);
	free(home);
	free(kernel);
	free(disk);
	return t_done("catalog_concurrency");
}
