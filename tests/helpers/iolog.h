/* tests/helpers/iolog.h — the record format shared by the LD_PRELOAD
 * recorder (tests/helpers/shim/iolog.c) and the replayer
 * (tests/helpers/powercut.c). A test-only temporary file, written and read
 * on the same machine: native byte order. */
#ifndef TESTS_IOLOG_H
#define TESTS_IOLOG_H

#include <stdint.h>

#define IOLOG_REC_MAGIC 0x474f4c49u   /* "ILOG" */

enum {
	IOLOG_REC_WRITE = 1,      /* off, len, then len bytes of data */
	IOLOG_REC_SYNC,           /* a completed fdatasync/fsync of the image
	                             (arg: the id of its SYNC_START) */
	IOLOG_REC_TRUNCATE,       /* ftruncate to off */
	IOLOG_REC_FALLOCATE,      /* fallocate(arg = mode, off, len) */
	IOLOG_REC_MARK,           /* len bytes written to the marker file */
	IOLOG_REC_SYNC_START,     /* an fdatasync/fsync of the image begins (arg: id):
	                             what is recorded before it, it makes durable */
};

struct iolog_rec {
	uint32_t magic;
	uint32_t type;
	uint64_t off;
	uint64_t len;
	uint64_t arg;
};

#endif
