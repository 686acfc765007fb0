/* tests/helpers/cat_fill.c — fill a catalog with N VMs (for bench/catalog).
 *
 * usage: cat_fill N KERNEL DISKDIR
 * Defines VMs "bench-00000" .. in $COWVM_HOME, each with one disk
 * DISKDIR/bench-NNNNN.raw (recorded, not created) and one NIC, one
 * transaction per VM as `cowvm create` would. Prints the rate.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "catalog/catalog.h"

int main(int argc, char **argv)
{
	struct cat_db *db = NULL;
	struct timespec t0, t1;
	struct ut_err err;
	long n;
	double s;

	ut_err_clear(&err);
	if (argc != 4 || (n = atol(argv[1])) <= 0) {
		fprintf(stderr, "usage: cat_fill N KERNEL DISKDIR\n");
		return 2;
	}
	if (cat_open(&db, NULL, &err) < 0)
		goto fail;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		struct cat_vm vm;
		char name[32], disk[4096], mac[18];

		if (cat_vm_init_defaults(&vm, &err) < 0)
			goto fail;
		snprintf(name, sizeof(name), "bench-%05ld", i);
		snprintf(disk, sizeof(disk), "%s/%s.raw", argv[3], name);
		snprintf(mac, sizeof(mac), "52:54:01:%02lx:%02lx:%02lx", (i >> 16) & 0xff,
			 (i >> 8) & 0xff, i & 0xff);
		vm.name = strdup(name);
		vm.kernel = strdup(argv[2]);
		if (cat_vm_add_disk(&vm, disk, "raw", "vda", 0, 0, 0, &err) < 0 ||
		    cat_vm_add_nic(&vm, mac, "ethernet", NULL, NULL, &err) < 0 ||
		    cat_vm_define(db, &vm, 0, "create", &err) < 0) {
			cat_vm_clear(&vm);
			goto fail;
		}
		cat_vm_clear(&vm);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("filled %ld VMs in %.2f s (%.0f defines/s in one process)\n", n, s, (double)n / s);
	cat_close(db);
	return 0;
fail:
	fprintf(stderr, "cat_fill: %s\n", err.msg);
	cat_close(db);
	return 1;
}
