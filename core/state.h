/* core/state.h — the VM state file: save a paused machine, load it back.
 *
 * Format (man/cowvm-state.5), all integers little-endian:
 *   header   64 bytes: "COWVMSTA", le32 version (1), le32 flags (bit 0: RAM
 *            zstd-compressed), le64 ram_size, le64 ram_off (4 KiB aligned),
 *            le64 ram_len, le32 nsections, zero padding
 *   sections from offset 64: le32 type, le32 0, le64 length, payload
 *            MACHINE (config), VCPU (index + record), IRQCHIP (chip id +
 *            kvm_irqchip), PIT (kvm_pit_state2), CLOCK (kvm_clock_data),
 *            DEVICE (id, type, record)
 *   RAM      at ram_off: the raw image of guest RAM (zero pages left as file
 *            holes), or zstd chunks (le64 offset, le32 length, le32 clen, data)
 *   trailer  64 bytes: "COWVMEND", le64 XXH3 of bytes [0, ram_off), le64 XXH3
 *            of RAM (over each non-zero 4 KiB page: le64 offset, page), le64
 *            total file length, zero padding
 * A raw RAM image is mapped MAP_PRIVATE at restore: nothing is read up front,
 * guest writes stay in the restoring process, the file is never written.
 */
#ifndef VMM_STATE_H
#define VMM_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

struct vmm_machine;

#define VMM_STATE_F_ZSTD   (1u << 0)   /* save: compress RAM with zstd */
#define VMM_STATE_F_VERIFY (1u << 1)   /* load: check the RAM checksum too */

/* What a save reports. */
struct vmm_state_stats {
	uint64_t ram_bytes_written;    /* RAM bytes in the file (non-zero pages or zstd) */
	uint64_t file_bytes;
	double pause_ms;               /* vCPUs paused -> file complete */
};

/* Pause @m's vCPUs, drain device I/O, write the state to @path (atomically:
 * a temporary file renamed into place). The vCPUs stay paused; the caller
 * resumes or ends the run. Returns 0 or -errno with @err set. Loop thread. */
int vmm_state_save(struct vmm_machine *m, const char *path, unsigned flags,
		   struct vmm_state_stats *stats, struct ut_err *err);

/* A loaded state file: the machine config and the records, plus the RAM. */
struct vmm_state_file;

/* Open and check @path (magic, version, lengths, metadata checksum; with
 * VMM_STATE_F_VERIFY also the RAM checksum). Returns 0 with *out set (free
 * with vmm_state_close) or -errno with @err naming the file and the problem. */
int vmm_state_open(const char *path, unsigned flags, struct vmm_state_file **out,
		   struct ut_err *err);
void vmm_state_close(struct vmm_state_file *sf);

/* The machine section: RAM size, vCPUs, disks (virtio-blk option strings),
 * rng. Pointers stay valid until vmm_state_close. */
struct vmm_machine_cfg;
int vmm_state_machine_cfg(const struct vmm_state_file *sf, struct vmm_machine_cfg *cfg);

/* Map (or decompress) the RAM into @m's VM memory layout. Called by
 * vmm_machine_restore before the VM is created: returns the base address
 * of ram_size bytes and, for a memfd, its fd (else -1). */
int vmm_state_map_ram(const struct vmm_state_file *sf, uint8_t **base, int *memfd,
		      struct ut_err *err);

/* Check a raw RAM image against the file's RAM checksum (reads all of it). */
int vmm_state_verify_ram(const struct vmm_state_file *sf, const uint8_t *ram, struct ut_err *err);

/* Load vCPUs, irqchip, PIT, clock and devices into @m (devices created with
 * the same config and order). The sections are checked before any is
 * applied (types, record sizes, exactly one VCPU record per vCPU and one
 * DEVICE record per device of @m); each device's own record is checked by its restore
 * op as it is applied, so a refusal there leaves @m part-restored: on any
 * error the caller must destroy @m, never run it. Returns 0 or -errno. */
int vmm_state_apply(const struct vmm_state_file *sf, struct vmm_machine *m, struct ut_err *err);

#endif
