/* core/boot/pvh.c — ELF kernels with a Xen PVH entry note: loading PT_LOAD
 * segments at their physical addresses and writing hvm_start_info (version 1)
 * with the memory map, command line and initrd as module 0.
 */
#include "core/boot/internal.h"
#include "core/boot/pvhinfo.h"
#include "core/layout.h"

#include <elf.h>
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Where the pieces of the start info go, relative to VMM_BOOT_PARAMS_GPA. */
#define PVH_MODLIST_OFF  0x40
#define PVH_MEMMAP_OFF   0x80
_Static_assert(sizeof(struct pvh_start_info) <= PVH_MODLIST_OFF, "start info fits");
_Static_assert(PVH_MODLIST_OFF + sizeof(struct pvh_modlist_entry) <= PVH_MEMMAP_OFF, "modlist fits");
_Static_assert(PVH_MEMMAP_OFF + VMM_E820_MAX * sizeof(struct pvh_memmap_entry) <= 0x1000,
	       "memmap fits in the page");

int vmm_pvh_find_entry(const struct vmm_boot_file *f, const struct vmm_elf *e,
		       uint64_t *entry, struct ut_err *err)
{
	uint8_t desc[8] = { 0 };
	size_t len = 0;
	uint64_t v;
	int r;

	r = vmm_elf_find_note(f, e, PVH_NOTE_NAME, PVH_NOTE_PHYS32_ENTRY, desc, sizeof(desc),
			      &len, err);
	if (r <= 0)
		return r;
	if (len != 4 && len != 8)
		return ut_errf(err, -ENOEXEC,
			       "Xen PVH entry note has a %zu-byte descriptor (4 or 8 expected)", len);
	if (len == 4) {
		uint32_t v32;

		memcpy(&v32, desc, 4);
		v = le32toh(v32);
	} else {
		memcpy(&v, desc, 8);
		v = le64toh(v);
	}
	if (v >= VMM_MMIO_HOLE_END)
		return ut_errf(err, -ENOEXEC, "Xen PVH entry point 0x%llx is not a 32-bit address",
			       (unsigned long long)v);
	*entry = v;
	return 1;
}

static int load_segment(const struct vmm_boot_file *f, const struct vmm_mem *mem,
			const struct vmm_elf_phdr *p, uint32_t i, struct ut_err *err)
{
	char what[40];
	uint8_t *dst;

	if (p->paddr < VMM_BIOS_END)
		return ut_errf(err, -EINVAL,
			       "ELF segment %u at 0x%llx overlaps the boot area below 1 MiB", i,
			       (unsigned long long)p->paddr);
	dst = vmm_mem_ptr(mem, p->paddr, p->memsz);
	if (!dst)
		return ut_errf(err, -ENOMEM,
			       "ELF segment %u [0x%llx-0x%llx] (%llu bytes) is not inside guest RAM "
			       "(RAM below 4 GiB ends at 0x%llx)", i, (unsigned long long)p->paddr,
			       (unsigned long long)(p->paddr + p->memsz - 1),
			       (unsigned long long)p->memsz,
			       (unsigned long long)vmm_mem_low_end(mem));
	snprintf(what, sizeof(what), "ELF segment %u", i);
	/* Ranges were checked by vmm_elf_read() and vmm_mem_ptr() above. */
	int r = vmm_boot_file_to_guest(f, p->offset, p->filesz, mem, p->paddr, what, err);
	if (r < 0)
		return r;
	memset(dst + p->filesz, 0, p->memsz - p->filesz);
	return 0;
}

int vmm_pvh_load(const struct vmm_boot_file *f, const struct vmm_mem *mem,
		 struct vmm_boot_kernel *k, struct ut_err *err)
{
	struct vmm_elf e;
	uint64_t entry = 0, lo = UINT64_MAX, hi = 0, low_end = vmm_mem_low_end(mem);
	int r, entry_ok = 0;
	char desc[64];

	r = vmm_elf_read(f, &e, err);
	if (r < 0)
		return r;
	r = vmm_pvh_find_entry(f, &e, &entry, err);
	if (r == 0) {
		vmm_elf_describe(&e, desc, sizeof(desc));
		r = ut_errf(err, -ENOEXEC, "%s without a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)",
			    desc);
	}
	if (r < 0)
		goto out;
	for (uint32_t i = 0; i < e.phnum; i++) {
		const struct vmm_elf_phdr *p = &e.ph[i];

		if (p->type != PT_LOAD || !p->memsz)
			continue;
		r = load_segment(f, mem, p, i, err);
		if (r < 0)
			goto out;
		if (p->paddr < lo)
			lo = p->paddr;
		if (p->paddr + p->memsz > hi)
			hi = p->paddr + p->memsz;
		if (entry >= p->paddr && entry - p->paddr < p->memsz)
			entry_ok = 1;
	}
	if (hi == 0) {
		r = ut_errf(err, -ENOEXEC, "ELF has no loadable segment");
		goto out;
	}
	if (!entry_ok) {
		r = ut_errf(err, -ENOEXEC, "Xen PVH entry point 0x%llx is not inside a loaded segment",
			    (unsigned long long)entry);
		goto out;
	}
	k->format = VMM_KERNEL_PVH_ELF;
	k->entry = entry;
	k->start = lo;
	k->end = hi;
	k->initrd_limit = low_end;
	k->cmdline_max = VMM_BOOT_CMDLINE_MAX - 1;
	r = 0;
out:
	vmm_elf_free(&e);
	return r;
}

int vmm_pvh_write_start_info(const struct vmm_mem *mem, const struct vmm_boot_entry *be,
			     struct ut_err *err)
{
	struct pvh_start_info si;
	struct pvh_modlist_entry mod;
	struct pvh_memmap_entry mm[VMM_E820_MAX];
	const uint64_t base = VMM_BOOT_PARAMS_GPA;
	int r, n = be->e820_count;

	if (n < 0 || n > VMM_E820_MAX) {
		r = ut_errf(err, -EINVAL, "E820 map has %d entries", n);
		goto out;
	}
	memset(&si, 0, sizeof(si));
	memset(&mod, 0, sizeof(mod));
	memset(mm, 0, sizeof(mm));
	si.magic = htole32(PVH_START_MAGIC);
	si.version = htole32(PVH_START_VERSION);
	si.cmdline_paddr = htole64(be->cmdline_gpa);
	si.rsdp_paddr = htole64(be->rsdp_gpa);
	si.memmap_paddr = htole64(base + PVH_MEMMAP_OFF);
	si.memmap_entries = htole32((uint32_t)n);
	if (be->initrd_gpa) {
		si.nr_modules = htole32(1);
		si.modlist_paddr = htole64(base + PVH_MODLIST_OFF);
		mod.paddr = htole64(be->initrd_gpa);
		mod.size = htole64(be->initrd_size);
	}
	for (int i = 0; i < n; i++) {
		mm[i].addr = htole64(be->e820[i].addr);
		mm[i].size = htole64(be->e820[i].size);
		mm[i].type = htole32(be->e820[i].type);   /* E820 and PVH types agree */
	}
	r = vmm_mem_write(mem, base, &si, sizeof(si));
	if (!r)
		r = vmm_mem_write(mem, base + PVH_MODLIST_OFF, &mod, sizeof(mod));
	if (!r)
		r = vmm_mem_write(mem, base + PVH_MEMMAP_OFF, mm, (size_t)n * sizeof(mm[0]));
	if (r < 0)
		r = ut_errf(err, r, "hvm_start_info does not fit in guest RAM at 0x%llx",
			    (unsigned long long)base);
out:
	return r;
}
