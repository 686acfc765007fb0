/* core/boot/bootparam.h — the Linux x86 boot protocol's on-disk and in-memory
 * structures (Documentation/arch/x86/boot.rst and zero-page.rst).
 *
 * All fields are little-endian. The structs are packed and their offsets are
 * checked against the documented ones at compile time; code that reads or
 * writes a field converts with le16toh()/htole32() and friends.
 */
#ifndef VMM_BOOT_BOOTPARAM_H
#define VMM_BOOT_BOOTPARAM_H

#include <stddef.h>
#include <stdint.h>

/* Offsets in a bzImage file (also in boot_params: the header sits at the
 * same offset in both). */
#define BP_SETUP_HDR_OFF       0x1F1
#define BP_HDR_MAGIC_OFF       0x202
#define BP_HDR_MAGIC           0x53726448u  /* "HdrS" read as little-endian u32 */
#define BP_BOOT_FLAG           0xAA55u
#define BP_SECTOR              512u
#define BP_DEFAULT_SETUP_SECTS 4u           /* setup_sects 0 means 4 */

/* setup_header.loadflags */
#define BP_LOADED_HIGH         0x01
#define BP_KEEP_SEGMENTS       0x40
#define BP_CAN_USE_HEAP        0x80

/* setup_header.xloadflags */
#define BP_XLF_KERNEL_64                0x0001
#define BP_XLF_CAN_BE_LOADED_ABOVE_4G   0x0002

/* Offset of startup_64 from the start of the protected-mode code. */
#define BP_STARTUP_64_OFF      0x200

/* E820 types (shared with hvm_start_info's memmap). */
#define BP_E820_RAM            1
#define BP_E820_RESERVED       2

#define BP_E820_MAX_ZEROPAGE   128

struct bp_setup_header {
	uint8_t  setup_sects;            /* 0x1F1 */
	uint16_t root_flags;             /* 0x1F2 */
	uint32_t syssize;                /* 0x1F4 */
	uint16_t ram_size;               /* 0x1F8 */
	uint16_t vid_mode;               /* 0x1FA */
	uint16_t root_dev;               /* 0x1FC */
	uint16_t boot_flag;              /* 0x1FE */
	uint16_t jump;                   /* 0x200 */
	uint32_t header;                 /* 0x202 */
	uint16_t version;                /* 0x206 */
	uint32_t realmode_swtch;         /* 0x208 */
	uint16_t start_sys_seg;          /* 0x20C */
	uint16_t kernel_version;         /* 0x20E */
	uint8_t  type_of_loader;         /* 0x210 */
	uint8_t  loadflags;              /* 0x211 */
	uint16_t setup_move_size;        /* 0x212 */
	uint32_t code32_start;           /* 0x214 */
	uint32_t ramdisk_image;          /* 0x218 */
	uint32_t ramdisk_size;           /* 0x21C */
	uint32_t bootsect_kludge;        /* 0x220 */
	uint16_t heap_end_ptr;           /* 0x224 */
	uint8_t  ext_loader_ver;         /* 0x226 */
	uint8_t  ext_loader_type;        /* 0x227 */
	uint32_t cmd_line_ptr;           /* 0x228 */
	uint32_t initrd_addr_max;        /* 0x22C */
	uint32_t kernel_alignment;       /* 0x230 */
	uint8_t  relocatable_kernel;     /* 0x234 */
	uint8_t  min_alignment;          /* 0x235 */
	uint16_t xloadflags;             /* 0x236 */
	uint32_t cmdline_size;           /* 0x238 */
	uint32_t hardware_subarch;       /* 0x23C */
	uint64_t hardware_subarch_data;  /* 0x240 */
	uint32_t payload_offset;         /* 0x248 */
	uint32_t payload_length;         /* 0x24C */
	uint64_t setup_data;             /* 0x250 */
	uint64_t pref_address;           /* 0x258 */
	uint32_t init_size;              /* 0x260 */
	uint32_t handover_offset;        /* 0x264 */
	uint32_t kernel_info_offset;     /* 0x268 */
} __attribute__((packed));

struct bp_e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

/* The zero page: 4096 bytes. Only the fields a 64-bit boot loader fills are
 * named; the rest are byte arrays of the documented sizes. */
struct bp_boot_params {
	uint8_t  screen_info[0x40];      /* 0x000 */
	uint8_t  apm_bios_info[0x14];    /* 0x040 */
	uint8_t  _pad2[4];               /* 0x054 */
	uint64_t tboot_addr;             /* 0x058 */
	uint8_t  ist_info[0x10];         /* 0x060 */
	uint64_t acpi_rsdp_addr;         /* 0x070 */
	uint8_t  _pad3[8];               /* 0x078 */
	uint8_t  hd0_info[16];           /* 0x080 */
	uint8_t  hd1_info[16];           /* 0x090 */
	uint8_t  sys_desc_table[0x10];   /* 0x0A0 */
	uint8_t  olpc_ofw_header[0x10];  /* 0x0B0 */
	uint32_t ext_ramdisk_image;      /* 0x0C0 */
	uint32_t ext_ramdisk_size;       /* 0x0C4 */
	uint32_t ext_cmd_line_ptr;       /* 0x0C8 */
	uint8_t  _pad4[0x70];            /* 0x0CC */
	uint32_t cc_blob_address;        /* 0x13C */
	uint8_t  edid_info[0x80];        /* 0x140 */
	uint8_t  efi_info[0x20];         /* 0x1C0 */
	uint32_t alt_mem_k;              /* 0x1E0 */
	uint32_t scratch;                /* 0x1E4 */
	uint8_t  e820_entries;           /* 0x1E8 */
	uint8_t  eddbuf_entries;         /* 0x1E9 */
	uint8_t  edd_mbr_sig_buf_entries;/* 0x1EA */
	uint8_t  kbd_status;             /* 0x1EB */
	uint8_t  secure_boot;            /* 0x1EC */
	uint8_t  _pad5[2];               /* 0x1ED */
	uint8_t  sentinel;               /* 0x1EF */
	uint8_t  _pad6[1];               /* 0x1F0 */
	struct bp_setup_header hdr;      /* 0x1F1 */
	uint8_t  _pad7[0x290 - 0x1F1 - sizeof(struct bp_setup_header)];
	uint32_t edd_mbr_sig_buffer[16]; /* 0x290 */
	struct bp_e820_entry e820_table[BP_E820_MAX_ZEROPAGE]; /* 0x2D0 */
	uint8_t  _pad8[48];              /* 0xCD0 */
	uint8_t  eddbuf[0x1EC];          /* 0xD00 */
	uint8_t  _pad9[276];             /* 0xEEC */
} __attribute__((packed));

#define BP_CHECK(type, field, off) \
	_Static_assert(offsetof(type, field) == (off), #type "." #field " at " #off)

BP_CHECK(struct bp_setup_header, setup_sects, 0x1F1 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, boot_flag, 0x1FE - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, header, 0x202 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, version, 0x206 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, type_of_loader, 0x210 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, loadflags, 0x211 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, code32_start, 0x214 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, ramdisk_image, 0x218 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, ramdisk_size, 0x21C - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, heap_end_ptr, 0x224 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, cmd_line_ptr, 0x228 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, initrd_addr_max, 0x22C - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, kernel_alignment, 0x230 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, xloadflags, 0x236 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, cmdline_size, 0x238 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, payload_offset, 0x248 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, payload_length, 0x24C - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, pref_address, 0x258 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, init_size, 0x260 - BP_SETUP_HDR_OFF);
BP_CHECK(struct bp_setup_header, kernel_info_offset, 0x268 - BP_SETUP_HDR_OFF);
_Static_assert(sizeof(struct bp_setup_header) == 0x26C - BP_SETUP_HDR_OFF, "setup_header size");
_Static_assert(sizeof(struct bp_e820_entry) == 20, "e820 entry size");

BP_CHECK(struct bp_boot_params, acpi_rsdp_addr, 0x070);
BP_CHECK(struct bp_boot_params, ext_ramdisk_image, 0x0C0);
BP_CHECK(struct bp_boot_params, ext_ramdisk_size, 0x0C4);
BP_CHECK(struct bp_boot_params, ext_cmd_line_ptr, 0x0C8);
BP_CHECK(struct bp_boot_params, cc_blob_address, 0x13C);
BP_CHECK(struct bp_boot_params, edid_info, 0x140);
BP_CHECK(struct bp_boot_params, alt_mem_k, 0x1E0);
BP_CHECK(struct bp_boot_params, e820_entries, 0x1E8);
BP_CHECK(struct bp_boot_params, sentinel, 0x1EF);
BP_CHECK(struct bp_boot_params, hdr, 0x1F1);
BP_CHECK(struct bp_boot_params, hdr.cmd_line_ptr, 0x228);
BP_CHECK(struct bp_boot_params, hdr.ramdisk_image, 0x218);
BP_CHECK(struct bp_boot_params, edd_mbr_sig_buffer, 0x290);
BP_CHECK(struct bp_boot_params, e820_table, 0x2D0);
BP_CHECK(struct bp_boot_params, eddbuf, 0xD00);
_Static_assert(sizeof(struct bp_boot_params) == 4096, "boot_params is one page");

#endif
