/* core/boot/boot.c — vmm_boot_load(): the order in which a kernel, its initrd
 * and the boot structures are put into guest RAM, and where the initrd goes.
 *
 * Guest physical layout after loading (see core/layout.h):
 *   GDT, boot_params or hvm_start_info, page tables, command line: below 1 MiB
 *   MP table: VMM_MPTABLE_GPA (EBDA, e820-reserved)
 *   ACPI tables: VMM_ACPI_GPA (BIOS area, e820-reserved)
 *   kernel: from 1 MiB (bzImage: protected-mode code at 1 MiB, decompressed by
 *     itself at pref_address; PVH: each PT_LOAD at p_paddr)
 *   initrd: page-aligned, as high as possible below min(initrd limit, low RAM end)
 */
#include "core/boot/internal.h"
#include "core/layout.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#define PAGE 4096ULL

const char *vmm_kernel_format_name(enum vmm_kernel_format fmt)
{
	switch (fmt) {
	case VMM_KERNEL_BZIMAGE: return "bzimage";
	case VMM_KERNEL_PVH_ELF: return "pvh";
	default:                 return "unknown";
	}
}

static unsigned long long mib_up(uint64_t bytes)
{
	return (unsigned long long)((bytes + MIB(1) - 1) >> 20);
}

static int load_initrd(const struct vmm_mem *mem, const char *path, const struct vmm_boot_kernel *k,
		       struct vmm_boot_entry *be, struct ut_err *err)
{
	struct vmm_boot_file f;
	uint64_t start;
	char limit_why[64] = "";
	int r;

	r = vmm_boot_file_open(&f, path, err);
	if (r < 0)
		goto out;
	if (f.size == 0) {
		r = ut_errf(err, -EINVAL, "initrd '%s' is empty", path);
		goto out;
	}
	if (k->format == VMM_KERNEL_BZIMAGE)
		snprintf(limit_why, sizeof(limit_why), ", initrd_addr_max 0x%x",
			 (unsigned)le32toh(k->hdr.initrd_addr_max));
	if (k->initrd_limit < k->end || f.size > k->initrd_limit - k->end ||
	    ((k->initrd_limit - f.size) & ~(PAGE - 1)) < k->end) {
		r = ut_errf(err, -ENOMEM,
			    "initrd '%s' (%llu MiB, %llu bytes) does not fit between the kernel's "
			    "end 0x%llx and 0x%llx (RAM below 4 GiB ends at 0x%llx%s)", path,
			    mib_up(f.size), (unsigned long long)f.size, (unsigned long long)k->end,
			    (unsigned long long)k->initrd_limit,
			    (unsigned long long)vmm_mem_low_end(mem), limit_why);
		goto out;
	}
	start = (k->initrd_limit - f.size) & ~(PAGE - 1);
	r = vmm_boot_file_to_guest(&f, 0, f.size, mem, start, "initrd", err);
	if (r < 0) {
		ut_err_prefix(err, "initrd '%s'", path);
		goto out;
	}
	be->initrd_gpa = start;
	be->initrd_size = f.size;
out:
	vmm_boot_file_close(&f);
	return r;
}

int vmm_boot_load(struct vmm_mem *mem, const struct vmm_boot_cfg *cfg,
		  struct vmm_boot_entry *entry, struct ut_err *err)
{
	struct vmm_boot_file kf = { .fd = -1 };
	struct vmm_boot_kernel k;
	enum vmm_kernel_format fmt;
	const char *cmdline = cfg->cmdline ? cfg->cmdline : "";
	size_t cl = strlen(cmdline);
	int r, n;

	memset(entry, 0, sizeof(*entry));
	memset(&k, 0, sizeof(k));
	if (!cfg->kernel_path) {
		r = ut_errf(err, -EINVAL, "no kernel given");
		return r;
	}
	if (cfg->ncpus < 1 || cfg->ncpus > VMM_MPTABLE_MAX_CPUS) {
		r = ut_errf(err, -EINVAL, "%d CPUs requested (1..%d supported)", cfg->ncpus,
			    VMM_MPTABLE_MAX_CPUS);
		goto out;
	}
	r = vmm_boot_file_open(&kf, cfg->kernel_path, err);
	if (r < 0)
		goto out;
	r = vmm_boot_probe_file(&kf, &fmt, err);
	if (r < 0)
		goto out;
	if (fmt == VMM_KERNEL_BZIMAGE)
		r = vmm_bzimage_load(&kf, mem, &k, err);
	else
		r = vmm_pvh_load(&kf, mem, &k, err);
	if (r < 0)
		goto out;

	if (cl > k.cmdline_max || cl > VMM_BOOT_CMDLINE_MAX - 1) {
		r = ut_errf(err, -E2BIG, "command line is %zu bytes; the kernel accepts at most %llu",
			    cl, (unsigned long long)(k.cmdline_max < VMM_BOOT_CMDLINE_MAX - 1 ?
						     k.cmdline_max : VMM_BOOT_CMDLINE_MAX - 1));
		goto out;
	}
	r = vmm_mem_write(mem, VMM_BOOT_CMDLINE_GPA, cmdline, cl + 1);
	if (r < 0) {
		r = ut_errf(err, r, "command line does not fit in guest RAM");
		goto out;
	}
	entry->cmdline_gpa = VMM_BOOT_CMDLINE_GPA;

	if (cfg->initrd_path) {
		r = load_initrd(mem, cfg->initrd_path, &k, entry, err);
		if (r < 0)
			goto out;
	}

	n = vmm_e820_build(mem, entry->e820, VMM_E820_MAX);
	if (n < 0) {
		r = ut_errf(err, n, "cannot build the E820 map for %llu bytes of RAM",
			    (unsigned long long)mem->ram_size);
		goto out;
	}
	entry->e820_count = n;
	entry->format = fmt;
	entry->entry = k.entry;
	entry->params_gpa = VMM_BOOT_PARAMS_GPA;
	entry->kernel_start = k.start;
	entry->kernel_end = k.end;

	r = vmm_mptable_write(mem, cfg->ncpus, NULL, err);
	if (r < 0)
		goto out;
	r = vmm_acpi_write(mem, cfg->ncpus, &entry->rsdp_gpa, err);
	if (r < 0)
		goto out;
	if (fmt == VMM_KERNEL_BZIMAGE)
		r = vmm_bzimage_write_params(mem, &k, entry, err);
	else
		r = vmm_pvh_write_start_info(mem, entry, err);
	if (r < 0)
		goto out;
	r = vmm_boot_write_cpu_tables(mem, fmt, err);
out:
	vmm_boot_file_close(&kf);
	if (r < 0) {
		ut_err_prefix(err, "unable to load '%s'", cfg->kernel_path);
		entry->format = VMM_KERNEL_UNKNOWN;
	}
	return r;
}
