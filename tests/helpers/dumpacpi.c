/* tests/helpers/dumpacpi.c — write the ACPI tables cowvm builds for N CPUs
 * as files DIR/{dsdt,facp,apic,xsdt}.dat, for iasl -d (tests/interop).
 * Usage: dumpacpi NCPUS DIR. Exit 0 ok, 1 error, 2 usage. */
#include "core/boot/boot.h"
#include "core/layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static int dump(const char *dir, const char *name, const uint8_t *t)
{
	char path[4096];
	uint32_t len = (uint32_t)t[4] | (uint32_t)t[5] << 8 | (uint32_t)t[6] << 16 | (uint32_t)t[7] << 24;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s.dat", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(t, len, 1, f) != 1 || fclose(f)) {
		perror(path);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t size = 16ULL << 20, rsdp;
	uint8_t *ram;
	struct vmm_mem mem;
	struct ut_err err = { 0, "" };
	const uint8_t *x, *f;
	int r;

	if (argc != 3) {
		fprintf(stderr, "usage: dumpacpi NCPUS DIR\n");
		return 2;
	}
	ram = calloc(1, size);
	if (!ram)
		return 1;
	vmm_mem_layout(&mem, ram, size, -1);
	if (vmm_acpi_write(&mem, atoi(argv[1]), &rsdp, &err)) {
		fprintf(stderr, "dumpacpi: %s\n", err.msg);
		free(ram);
		return 1;
	}
	x = ram + le64(ram + rsdp + 24);
	f = ram + le64(x + 36);
	r = dump(argv[2], "xsdt", x) | dump(argv[2], "facp", f) |
	    dump(argv[2], "apic", ram + le64(x + 44)) | dump(argv[2], "dsdt", ram + le64(f + 140));
	free(ram);
	return r;
}
