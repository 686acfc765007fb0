/* core/boot/bzimage.c — Linux bzImage: header checks, loading the
 * protected-mode code at 1 MiB, and the boot_params (zero page) for the 64-bit
 * boot protocol (Documentation/arch/x86/boot.rst, "64-bit BOOT PROTOCOL").
 */
#include "core/boot/internal.h"
#include "core/layout.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

#define HDR_MAX_LEN ((uint32_t)sizeof(struct bp_setup_header))

int vmm_bzimage_parse(const struct vmm_boot_file *f, struct vmm_boot_kernel *k,
		      uint64_t *setup_size, struct ut_err *err)
{
	struct bp_setup_header *h = &k->hdr;
	uint32_t len, end;
	uint16_t version, xlf = 0;
	uint64_t sects;
	int r;

	memset(h, 0, sizeof(*h));
	k->hdr_len = 0;
	if (f->size < BP_HDR_MAGIC_OFF + 4)
		return -ENODATA;
	len = f->size - BP_SETUP_HDR_OFF < HDR_MAX_LEN ? (uint32_t)(f->size - BP_SETUP_HDR_OFF)
						       : HDR_MAX_LEN;
	r = vmm_boot_file_read(f, BP_SETUP_HDR_OFF, h, len, "setup header", err);
	if (r < 0)
		return r;
	if (le32toh(h->header) != BP_HDR_MAGIC)
		return -ENODATA;

	version = le16toh(h->version);
	if (version < 0x0206)
		return ut_errf(err, -ENOEXEC,
			       "Linux bzImage with boot protocol %u.%02u; 2.06 or later is needed",
			       version >> 8, version & 0xff);
	/* The header ends at 0x202 + the byte at 0x201 (the jump's displacement). */
	end = BP_HDR_MAGIC_OFF + (le16toh(h->jump) >> 8);
	if (end > BP_SETUP_HDR_OFF + len)
		end = BP_SETUP_HDR_OFF + len;
	if (end < 0x23C) /* through cmdline_size (protocol 2.06) */
		return ut_errf(err, -ENOEXEC,
			       "Linux bzImage setup header is truncated (ends at 0x%x)", end);
	if (end - BP_SETUP_HDR_OFF < len)
		memset((uint8_t *)h + (end - BP_SETUP_HDR_OFF), 0, len - (end - BP_SETUP_HDR_OFF));
	k->hdr_len = end - BP_SETUP_HDR_OFF;

	if (!(h->loadflags & BP_LOADED_HIGH))
		return ut_errf(err, -ENOEXEC,
			       "Linux zImage (protocol %u.%02u, not loaded high) is not supported",
			       version >> 8, version & 0xff);
	if (version >= 0x020C)
		xlf = le16toh(h->xloadflags);
	if (!(xlf & BP_XLF_KERNEL_64))
		return ut_errf(err, -ENOEXEC,
			       "Linux bzImage (protocol %u.%02u) without a 64-bit entry point "
			       "(xloadflags 0x%x lacks XLF_KERNEL_64); a 32-bit kernel cannot be booted",
			       version >> 8, version & 0xff, xlf);
	if (end < 0x264) /* through init_size (protocol 2.10, implied by XLF_KERNEL_64) */
		return ut_errf(err, -ENOEXEC,
			       "Linux bzImage setup header is truncated (ends at 0x%x)", end);
	sects = h->setup_sects ? h->setup_sects : BP_DEFAULT_SETUP_SECTS;
	sects = (sects + 1) * BP_SECTOR;
	if (sects >= f->size)
		return ut_errf(err, -ENOEXEC,
			       "Linux bzImage is truncated: setup code is %llu bytes, the file %llu",
			       (unsigned long long)sects, (unsigned long long)f->size);
	if (setup_size)
		*setup_size = sects;
	k->format = VMM_KERNEL_BZIMAGE;
	return 0;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

int vmm_bzimage_load(const struct vmm_boot_file *f, const struct vmm_mem *mem,
		     struct vmm_boot_kernel *k, struct ut_err *err)
{
	const struct bp_setup_header *h = &k->hdr;
	uint64_t setup_size, pm_len, init_size, align, pref, run, low_end, max;
	int r;

	r = vmm_bzimage_parse(f, k, &setup_size, err);
	if (r == -ENODATA)
		r = ut_errf(err, -ENOEXEC, "not a Linux bzImage (no 'HdrS' at 0x202)");
	if (r < 0)
		goto out;
	pm_len = f->size - setup_size;
	init_size = le32toh(h->init_size);
	align = le32toh(h->kernel_alignment);
	pref = le64toh(h->pref_address);
	low_end = vmm_mem_low_end(mem);

	if (h->relocatable_kernel && (align < 4096 || (align & (align - 1)) || align > MIB(1024))) {
		r = ut_errf(err, -ENOEXEC, "Linux bzImage has an invalid kernel_alignment 0x%llx",
			    (unsigned long long)align);
		goto out;
	}
	if (!h->relocatable_kernel)
		align = 1;
	if (pref >= VMM_MMIO_HOLE_END) {
		r = ut_errf(err, -ENOEXEC, "Linux bzImage has pref_address 0x%llx above 4 GiB",
			    (unsigned long long)pref);
		goto out;
	}
	if (init_size < pm_len)
		init_size = pm_len;
	if (pref < VMM_KERNEL_GPA)
		pref = VMM_KERNEL_GPA;
	/* startup_64 decompresses at max(load address rounded up to
	 * kernel_alignment, pref_address) and uses init_size bytes from there. */
	run = align_up(VMM_KERNEL_GPA, align);
	if (run < pref)
		run = pref;
	if (run >= low_end || init_size > low_end - run || pm_len > low_end - VMM_KERNEL_GPA) {
		r = ut_errf(err, -ENOMEM,
			    "the kernel needs guest RAM up to 0x%llx (%llu MiB: decompressed at "
			    "0x%llx, init_size %llu MiB) but RAM below 4 GiB ends at 0x%llx",
			    (unsigned long long)(run + init_size),
			    (unsigned long long)((run + init_size + MIB(1) - 1) >> 20),
			    (unsigned long long)run, (unsigned long long)(init_size >> 20),
			    (unsigned long long)low_end);
		goto out;
	}
	r = vmm_boot_file_to_guest(f, setup_size, pm_len, mem, VMM_KERNEL_GPA,
				   "protected-mode kernel code", err);
	if (r < 0)
		goto out;

	k->entry = VMM_KERNEL_GPA + BP_STARTUP_64_OFF;
	k->start = VMM_KERNEL_GPA;
	k->end = run + init_size;
	if (k->end < VMM_KERNEL_GPA + pm_len)
		k->end = VMM_KERNEL_GPA + pm_len;
	max = (uint64_t)le32toh(h->initrd_addr_max) + 1;
	k->initrd_limit = max < low_end ? max : low_end;
	k->cmdline_max = le32toh(h->cmdline_size);
	r = 0;
out:
	return r;
}

int vmm_bzimage_write_params(const struct vmm_mem *mem, const struct vmm_boot_kernel *k,
			     const struct vmm_boot_entry *be, struct ut_err *err)
{
	struct bp_boot_params bp;
	struct bp_setup_header *h = &bp.hdr;
	int r;

	memset(&bp, 0, sizeof(bp));
	memcpy(h, &k->hdr, k->hdr_len);
	h->type_of_loader = 0xFF;            /* undefined loader */
	h->ext_loader_ver = 0;
	h->ext_loader_type = 0;
	h->loadflags = (uint8_t)((h->loadflags | BP_CAN_USE_HEAP) & ~BP_KEEP_SEGMENTS);
	h->heap_end_ptr = htole16(0xFE00);
	h->code32_start = htole32((uint32_t)VMM_KERNEL_GPA);
	h->cmd_line_ptr = htole32((uint32_t)be->cmdline_gpa);
	bp.ext_cmd_line_ptr = htole32((uint32_t)(be->cmdline_gpa >> 32));
	h->ramdisk_image = htole32((uint32_t)be->initrd_gpa);
	h->ramdisk_size = htole32((uint32_t)be->initrd_size);
	bp.ext_ramdisk_image = htole32((uint32_t)(be->initrd_gpa >> 32));
	bp.ext_ramdisk_size = htole32((uint32_t)(be->initrd_size >> 32));
	bp.acpi_rsdp_addr = htole64(be->rsdp_gpa);   /* protocol 2.14+; else found by scanning */
	h->setup_data = 0;                   /* no setup_data list */
	h->hardware_subarch = 0;             /* default x86 PC */
	h->hardware_subarch_data = 0;

	if (be->e820_count < 0 || be->e820_count > BP_E820_MAX_ZEROPAGE) {
		r = ut_errf(err, -EINVAL, "E820 map has %d entries", be->e820_count);
		goto out;
	}
	bp.e820_entries = (uint8_t)be->e820_count;
	for (int i = 0; i < be->e820_count; i++) {
		bp.e820_table[i].addr = htole64(be->e820[i].addr);
		bp.e820_table[i].size = htole64(be->e820[i].size);
		bp.e820_table[i].type = htole32(be->e820[i].type);
	}
	r = vmm_mem_write(mem, VMM_BOOT_PARAMS_GPA, &bp, sizeof(bp));
	if (r < 0)
		r = ut_errf(err, r, "boot_params do not fit in guest RAM at 0x%llx",
			    (unsigned long long)VMM_BOOT_PARAMS_GPA);
out:
	return r;
}
