/* core/boot/aml.h — a tiny ACPI Machine Language (AML) writer for the DSDT.
 *
 * Only what cowvm's DSDT needs: names, integers, strings, packages, buffers,
 * scopes and devices, with package lengths patched when a block closes.
 * Encodings follow ACPI 6.x section 20 (AML specification).
 */
#ifndef VMM_AML_H
#define VMM_AML_H

#include <stdint.h>

#include "util/buf.h"

#define VMM_AML_MAX_DEPTH 8

struct vmm_aml {
	struct ut_buf buf;
	size_t open[VMM_AML_MAX_DEPTH];   /* offsets of open PkgLength fields */
	int depth;
	int err;                          /* first error (-ENOMEM, -E2BIG), sticky */
};

void vmm_aml_init(struct vmm_aml *a);
void vmm_aml_release(struct vmm_aml *a);

/* NameOp + a 4-character name segment (or a rooted "\\XXXX"); the value
 * follows with one of the emitters below. */
void vmm_aml_name(struct vmm_aml *a, const char *name);
/* Integer with the shortest encoding (Zero, One, Byte/Word/DWord/QWord). */
void vmm_aml_int(struct vmm_aml *a, uint64_t v);
/* An EISA ID such as "PNP0A03", as its compressed DWord. */
void vmm_aml_eisaid(struct vmm_aml *a, const char *id);
/* Open a Scope / Device / Package (with @count elements); close with vmm_aml_end. */
void vmm_aml_scope(struct vmm_aml *a, const char *name);
void vmm_aml_device(struct vmm_aml *a, const char *name);
void vmm_aml_package(struct vmm_aml *a, uint8_t count);
/* Buffer holding @len bytes of @data (e.g. a resource template). */
void vmm_aml_buffer(struct vmm_aml *a, const uint8_t *data, size_t len);
/* A string constant. */
void vmm_aml_string(struct vmm_aml *a, const char *str);
/* Open a Method with @nargs arguments (not serialized); close with vmm_aml_end. */
void vmm_aml_method(struct vmm_aml *a, const char *name, int nargs);
/* Notify(\SCOP.NAME, value): @scope and @name are 4-character segments. */
void vmm_aml_notify(struct vmm_aml *a, const char *scope, const char *name, uint8_t value);
/* Close the innermost open block and patch its PkgLength. */
void vmm_aml_end(struct vmm_aml *a);

#endif
