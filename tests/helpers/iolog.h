/* tests/helpers/iolog.h — the record format shared by the LD_PRELOAD
 * recorder (tests/helpers/shim/iolog.c) and the replayer
 * (tests/helpers/powercut.c). A test-only temporary file, written and read
 * on the same machine: native byte order.
 *
 * Two modes. One file (IOLOG_IMAGE): every record's file is 0. A directory
 * (IOLOG_DIR): every regular file in it has an id (1, 2, ...; by inode:
 * the names of one inode share it, a file created later gets the next),
 * data records and syncs name it in @file, and the directory's own
 * namespace changes are recorded too (NAME .. UNLINK below); a sync of the
 * directory itself has @file IOLOG_FILE_DIR. Names are the last path
 * component, '\0'-terminated, in the record's data. An unnamed file
 * (O_TMPFILE in the directory) has an id from its TMPFILE record on, and
 * its data records and syncs name it like any other; LINK_FILE gives it
 * (or any file with an id) a name. */
#ifndef TESTS_IOLOG_H
#define TESTS_IOLOG_H

#include <stdint.h>

#define IOLOG_REC_MAGIC 0x474f4c49u   /* "ILOG" */
#define IOLOG_FILE_DIR UINT64_MAX     /* @file of a sync of the directory */

enum {
	IOLOG_REC_WRITE = 1,      /* off, len, then len bytes of data */
	IOLOG_REC_SYNC,           /* a completed fdatasync/fsync of the image
	                             (arg: the id of its SYNC_START) */
	IOLOG_REC_TRUNCATE,       /* ftruncate to off (also an open with
	                             O_TRUNC of an existing file: to 0) */
	IOLOG_REC_FALLOCATE,      /* fallocate(arg = mode, off, len) */
	IOLOG_REC_MARK,           /* len bytes written to the marker file */
	IOLOG_REC_SYNC_START,     /* an fdatasync/fsync of the image begins (arg: id):
	                             what is recorded before it, it makes durable */
	/* directory mode only; data: len bytes of names */
	IOLOG_REC_NAME,           /* a file there when recording began: file, name */
	IOLOG_REC_CREATE,         /* an open with O_CREAT made a new file: file, name */
	IOLOG_REC_RENAME,         /* rename/renameat/renameat2 within the directory:
	                             arg = renameat2 flags, "from\0to\0" */
	IOLOG_REC_LINK,           /* link/linkat within the directory: "from\0to\0" */
	IOLOG_REC_UNLINK,         /* unlink/unlinkat: name */
	IOLOG_REC_TMPFILE,        /* an open of the directory with O_TMPFILE made
	                             the unnamed file @file (no name: len 0) */
	IOLOG_REC_LINK_FILE,      /* link/linkat gave the file @file, reached
	                             from outside the directory's names
	                             (/proc/self/fd/N with AT_SYMLINK_FOLLOW,
	                             AT_EMPTY_PATH), the name in the data */
	IOLOG_REC_LAST = IOLOG_REC_LINK_FILE
};

/* Does a record of @type carry len bytes of data after it? */
static inline int iolog_has_data(uint32_t type)
{
	return type == IOLOG_REC_WRITE || type == IOLOG_REC_MARK || type >= IOLOG_REC_NAME;
}

struct iolog_rec {
	uint32_t magic;
	uint32_t type;
	uint64_t off;
	uint64_t len;
	uint64_t arg;
	uint64_t file;            /* directory mode: the file's id (0: one-file mode, markers) */
};

#endif
