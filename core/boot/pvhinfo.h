/* core/boot/pvhinfo.h — the Xen PVH boot ABI as used by Linux, QEMU and
 * Firecracker for direct boot: the ELF note that names the 32-bit entry point
 * and the hvm_start_info block passed in %ebx (Xen's
 * xen/include/public/arch-x86/hvm/start_info.h, version 1).
 *
 * All fields are little-endian; offsets are checked at compile time.
 */
#ifndef VMM_BOOT_PVHINFO_H
#define VMM_BOOT_PVHINFO_H

#include <stddef.h>
#include <stdint.h>

/* ELF note: name "Xen", type XEN_ELFNOTE_PHYS32_ENTRY, descriptor = 32-bit
 * physical entry address (4 bytes, or 8 when emitted as a pointer). */
#define PVH_NOTE_NAME              "Xen"
#define PVH_NOTE_PHYS32_ENTRY      18

#define PVH_START_MAGIC            0x336ec578u
#define PVH_START_VERSION          1

#define PVH_MEMMAP_RAM             1
#define PVH_MEMMAP_RESERVED        2

struct pvh_start_info {
	uint32_t magic;             /* 0x00 PVH_START_MAGIC */
	uint32_t version;           /* 0x04 */
	uint32_t flags;             /* 0x08 */
	uint32_t nr_modules;        /* 0x0C */
	uint64_t modlist_paddr;     /* 0x10 array of pvh_modlist_entry */
	uint64_t cmdline_paddr;     /* 0x18 NUL-terminated */
	uint64_t rsdp_paddr;        /* 0x20 */
	uint64_t memmap_paddr;      /* 0x28 (version 1) array of pvh_memmap_entry */
	uint32_t memmap_entries;    /* 0x30 */
	uint32_t reserved;          /* 0x34 */
} __attribute__((packed));

struct pvh_modlist_entry {
	uint64_t paddr;
	uint64_t size;
	uint64_t cmdline_paddr;
	uint64_t reserved;
} __attribute__((packed));

struct pvh_memmap_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
} __attribute__((packed));

_Static_assert(offsetof(struct pvh_start_info, modlist_paddr) == 0x10, "modlist_paddr");
_Static_assert(offsetof(struct pvh_start_info, cmdline_paddr) == 0x18, "cmdline_paddr");
_Static_assert(offsetof(struct pvh_start_info, rsdp_paddr) == 0x20, "rsdp_paddr");
_Static_assert(offsetof(struct pvh_start_info, memmap_paddr) == 0x28, "memmap_paddr");
_Static_assert(offsetof(struct pvh_start_info, memmap_entries) == 0x30, "memmap_entries");
_Static_assert(sizeof(struct pvh_start_info) == 0x38, "hvm_start_info size");
_Static_assert(sizeof(struct pvh_modlist_entry) == 32, "modlist entry size");
_Static_assert(sizeof(struct pvh_memmap_entry) == 24, "memmap entry size");

#endif
