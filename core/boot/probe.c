/* core/boot/probe.c — telling a kernel's format from its contents. */
#include "core/boot/internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define NOT_KERNEL "not a Linux bzImage or PVH ELF kernel"

static const char *hint(const uint8_t *b, size_t n)
{
	static const struct { const char *magic; size_t len; const char *what; } known[] = {
		{ "\x1f\x8b", 2, "gzip data" },
		{ "\xfd" "7zXZ\0", 6, "xz data" },
		{ "\x28\xb5\x2f\xfd", 4, "zstd data" },
		{ "\x02\x21\x4c\x18", 4, "lz4 data" },
		{ "070701", 6, "a cpio archive (an initrd?)" },
		{ "070702", 6, "a cpio archive (an initrd?)" },
		{ "QFI\xfb", 4, "a qcow2 image" },
		{ "MZ", 2, "a PE/EFI executable without a Linux setup header" },
		{ "\x7f" "ELF", 4, "an ELF file" },
	};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (n >= known[i].len && !memcmp(b, known[i].magic, known[i].len))
			return known[i].what;
	return NULL;
}

int vmm_boot_probe_file(const struct vmm_boot_file *f, enum vmm_kernel_format *fmt,
			struct ut_err *err)
{
	struct vmm_boot_kernel k;
	struct vmm_elf e;
	uint8_t head[8];
	char bytes[3 * sizeof(head) + 1] = "", desc[64];
	uint64_t entry;
	size_t n;
	const char *h;
	int r;

	*fmt = VMM_KERNEL_UNKNOWN;
	if (f->size == 0) {
		r = ut_errf(err, -ENOEXEC, NOT_KERNEL " (empty file)");
		goto out;
	}
	r = vmm_bzimage_parse(f, &k, NULL, err);
	if (r == 0) {
		*fmt = VMM_KERNEL_BZIMAGE;
		goto out;
	}
	if (r != -ENODATA)
		goto out;
	if (vmm_elf_is_elf(f)) {
		r = vmm_elf_read(f, &e, err);
		if (r < 0) {
			ut_err_prefix(err, "malformed ELF");
			goto out;
		}
		r = vmm_pvh_find_entry(f, &e, &entry, err);
		if (r == 0) {
			vmm_elf_describe(&e, desc, sizeof(desc));
			r = ut_errf(err, -ENOEXEC,
				    NOT_KERNEL " (%s without a Xen PVH entry note)", desc);
		} else if (r > 0) {
			*fmt = VMM_KERNEL_PVH_ELF;
			r = 0;
		}
		vmm_elf_free(&e);
		goto out;
	}
	n = f->size < sizeof(head) ? (size_t)f->size : sizeof(head);
	r = vmm_boot_file_read(f, 0, head, n, "first bytes", err);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < n; i++)
		snprintf(bytes + strlen(bytes), sizeof(bytes) - strlen(bytes), "%s%02x",
			 i ? " " : "", head[i]);
	h = hint(head, n);
	r = ut_errf(err, -ENOEXEC, NOT_KERNEL " (%llu bytes, first bytes: %s%s%s%s)",
		    (unsigned long long)f->size, bytes, f->size > n ? " ..." : "",
		    h ? "; looks like " : "", h ? h : "");
out:
	return r;
}

int vmm_boot_probe(const char *path, enum vmm_kernel_format *fmt, struct ut_err *err)
{
	struct vmm_boot_file f;
	int r;

	*fmt = VMM_KERNEL_UNKNOWN;
	r = vmm_boot_file_open(&f, path, err);
	if (r < 0)
		goto out;
	r = vmm_boot_probe_file(&f, fmt, err);
	if (r < 0)
		ut_err_prefix(err, "'%s'", path);
out:
	vmm_boot_file_close(&f);
	return r;
}
