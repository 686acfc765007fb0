/* storage/backends.c — the table of block backends: one row each. */
#include "storage/blockdev.h"

extern const struct stg_backend_ops stg_raw_ops;
extern const struct stg_backend_ops stg_qcow2_ops;

const struct stg_backend_ops *const stg_backends[] = {
	&stg_qcow2_ops,
	&stg_raw_ops,
	NULL,
};
