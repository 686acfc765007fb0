/* cow/qcow2.h — internal to cow/: on-disk constants, the image structure,
 * and the functions the cow/ files share. Not for use outside cow/. */
#ifndef COW_QCOW2_H
#define COW_QCOW2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <endian.h>
#include <sys/stat.h>

#include "cow/cow.h"

#define QCOW_MAGIC 0x514649fbu          /* "QFI\xfb" */
#define QCOW_HDR_V2_LEN 72
#define QCOW_HDR_V3_LEN 104
#define QCOW_HDR_OUR_LEN 112            /* v3 + compression_type + padding */

#define QCOW_INCOMPAT_DIRTY     (1ull << 0)
#define QCOW_INCOMPAT_CORRUPT   (1ull << 1)
#define QCOW_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW_INCOMPAT_EXTL2     (1ull << 4)
#define QCOW_INCOMPAT_KNOWN     0x1full
#define QCOW_COMPAT_LAZY        (1ull << 0)

#define QCOW_EXT_END            0x00000000u
#define QCOW_EXT_BACKING_FMT    0xe2792acau
#define QCOW_EXT_FEATURES       0x6803f857u
#define QCOW_EXT_DATA_FILE      0x44415441u
#define QCOW_EXT_BITMAPS        0x23852875u  /* persistent dirty bitmaps */

#define QCOW_OFLAG_COPIED     (1ull << 63)
#define QCOW_OFLAG_COMPRESSED (1ull << 62)
#define QCOW_OFLAG_ZERO       (1ull << 0)
#define QCOW_OFFSET_MASK      0x00fffffffffffe00ull   /* bits 9..55 */
/* refcount table entries: the offset is bits 9..63 (as QEMU reads them: a
 * high bit makes the block lie beyond the file), bits 0..8 are reserved */
#define QCOW_RT_OFFSET_MASK   0xfffffffffffffe00ull
#define QCOW_RT_RESERVED      0x1ffull
#define QCOW_L1_RESERVED      0x7f000000000001ffull
#define QCOW_L2_RESERVED      0x3f000000000001feull
/* extended L2 entries: the second 64 bits of an entry (subcluster bitmap) */
#define QCOW_SC_PER_CLUSTER   32
#define QCOW_SC_ALL_ALLOC     0x00000000ffffffffull   /* bits 0-31: allocated */
#define QCOW_SC_ALL_ZERO      0xffffffff00000000ull   /* bits 32-63: reads as zero */
#define COW_MIN_EXTL2_CLUSTER_BITS 14                 /* subclusters >= 512 bytes */

#define COW_MIN_CLUSTER_BITS 9
#define COW_MAX_CLUSTER_BITS 21
#define COW_MAX_L1_BYTES (32u << 20)
#define COW_MAX_RT_BYTES (8u << 20)

static inline uint64_t cow_be64(const void *p) { uint64_t v; __builtin_memcpy(&v, p, 8); return be64toh(v); }
static inline uint32_t cow_be32(const void *p) { uint32_t v; __builtin_memcpy(&v, p, 4); return be32toh(v); }
static inline uint16_t cow_be16(const void *p) { uint16_t v; __builtin_memcpy(&v, p, 2); return be16toh(v); }
static inline void cow_put64(void *p, uint64_t v) { v = htobe64(v); __builtin_memcpy(p, &v, 8); }
static inline void cow_put32(void *p, uint32_t v) { v = htobe32(v); __builtin_memcpy(p, &v, 4); }
static inline void cow_put16(void *p, uint16_t v) { v = htobe16(v); __builtin_memcpy(p, &v, 2); }

/* Parsed header (host byte order). */
struct cow_hdr {
	uint32_t version;
	uint64_t backing_off;
	uint32_t backing_len;
	uint32_t cluster_bits;
	uint64_t size;
	uint32_t crypt;
	uint32_t l1_size;
	uint64_t l1_off;
	uint64_t rt_off;
	uint32_t rt_clusters;
	uint32_t nb_snapshots;
	uint64_t snap_off;
	uint64_t incompat, compat, autoclear;
	uint32_t refcount_order;
	uint32_t hdr_len;
	uint8_t comp_type;
	char backing[1024];
	char backing_fmt[64];
	bool has_backing_fmt;
	/* unknown extensions, kept verbatim (type,len,data padded) for rewrites */
	uint8_t *other_ext;
	size_t other_ext_len;
};

/* ---- cache.c: bounded LRU cache of cluster-sized metadata tables ---- */
struct cow_cent {
	uint64_t off;               /* host offset of the table (key) */
	uint8_t *buf;
	bool dirty;
	struct cow_cent *hnext;     /* hash chain */
	struct cow_cent *prev, *next;  /* LRU list, head = most recent */
};

struct cow_cache {
	size_t tsize;               /* bytes per table */
	unsigned cap, n, ndirty;
	unsigned nbuckets;
	struct cow_cent **hash;
	struct cow_cent *head, *tail;
};

int cow_cache_init(struct cow_cache *c, size_t tsize, unsigned cap);
void cow_cache_free(struct cow_cache *c);
struct cow_cent *cow_cache_find(struct cow_cache *c, uint64_t off);
/* Is a table at host offset @off cached? (no LRU change) */
bool cow_cache_has(const struct cow_cache *c, uint64_t off);
/* Insert a new (not cached) entry; returns it, or NULL when out of memory.
 * The caller makes room first (n may pass cap while dirty entries cannot be
 * written). */
struct cow_cent *cow_cache_insert(struct cow_cache *c, uint64_t off);
/* Least-recently-used entry (eviction candidate), NULL if empty. */
struct cow_cent *cow_cache_lru(struct cow_cache *c);
/* The least recently used clean entry, NULL if every entry is dirty (the
 * victim when the LRU entry cannot be written, e.g. ENOSPC). */
struct cow_cent *cow_cache_lru_clean(struct cow_cache *c);
void cow_cache_remove(struct cow_cache *c, struct cow_cent *e);
void cow_cache_mark_dirty(struct cow_cache *c, struct cow_cent *e);
void cow_cache_mark_clean(struct cow_cache *c, struct cow_cent *e);

/* ---- the image ---- */
struct cow_pending { uint64_t off, len; bool punch; };

/* A metadata range the overlap check of new clusters covers besides the
 * header, the active L1 and the refcount table (cow_check_new, I8): the
 * snapshot table, a snapshot's L1 table, the bitmap directory, each bitmap
 * table and data cluster (COW_MR_BITMAP, cow_bm_refs). Loaded once
 * at a writable open (cow_meta_ranges_load), and again when a resize
 * moves the bitmap directory (bitmaps.c); nothing else in cow/ moves them. */
enum { COW_MR_SNAP_TABLE = 0, COW_MR_SNAP_L1, COW_MR_BITMAP_DIR, COW_MR_BITMAP };
struct cow_meta_range {
	uint64_t off, end;          /* [off, end), end saturated at UINT64_MAX */
	uint64_t maxend;            /* the largest end of this and every earlier
				       range (sorted by off): the search stops
				       where it is <= the offset sought */
	uint32_t kind;              /* COW_MR_* */
	uint32_t snap;              /* COW_MR_SNAP_L1: index in the snapshot table */
};

struct cow_zctx;   /* compress.c */

struct cow_img {
	char *path;
	int fd;
	bool locked;                /* fd holds image locks (cow/lock.h) */
	enum cow_fmt fmt;
	bool ro;
	bool hdr_only;              /* COW_O_HEADER_ONLY: no data writes */
	bool keep_bitmaps;          /* COW_O_KEEP_BITMAPS: bitmaps not marked in use */
	bool bm_resizing;           /* cow_bitmaps_resize_begin marked them in use */
	struct cow_bm_resize *bm_prep; /* _prepare's new tables and directory, until
					  _commit or _abort (bitmaps.c) */
	struct cow_bm_track *bm;    /* the persistent bitmaps a writable open
				       tracks (bitmaps.c), NULL when none */
	int bm_problem;             /* cow_bm_problem: -errno, 0 none */
	bool bm_problem_in_use;     /* ... and it left consistent bitmaps in use */
	char bm_problem_msg[512];
	bool resizing;              /* inside cow_grow/cow_shrink: their own data
				       changes pass cow_data_writable on a
				       COW_O_KEEP_BITMAPS open */
	uint64_t size;              /* virtual size */
	uint64_t file_size;         /* host file size as known (grows with writes) */
	struct cow_img *backing;    /* owned */
	char *backing_path;         /* resolved path of the backing file */
	int depth;                  /* layers including this one */

	/* qcow2 only */
	struct cow_hdr h;
	uint32_t cluster_bits, cluster_size;
	uint32_t l2_bits, l2_entries;
	bool extl2;                 /* extended L2 entries (32 subclusters per cluster) */
	uint32_t l2_esize;          /* bytes per L2 entry: 8, or 16 with extl2 */
	uint32_t sc_bits;           /* log2 of the subcluster size (extl2) */
	uint64_t *l1;               /* host order, l1_size entries */
	uint8_t *l1_dirty;          /* one flag per 512-byte chunk of the L1 table */
	bool any_l1_dirty;
	uint64_t *rt;               /* refcount table, host order */
	uint64_t rt_entries;
	uint32_t rb_bits;           /* refcount width */
	uint32_t rb_entries;        /* refcounts per block */
	uint64_t rb_max;            /* largest refcount value */
	struct cow_cache l2c, rbc;
	uint64_t end_cluster;       /* first never-used cluster index (I13) */
	uint64_t free_from, free_to; /* clusters known to have refcount 0 (I13) */
	uint64_t free_hint;         /* lowest cluster that may be free */
	struct cow_pending *pending;
	size_t npending, cap_pending;
	uint64_t *rt_dirty;         /* refcount-table indices set in memory only */
	size_t nrt_dirty, cap_rt_dirty;
	bool unsynced;              /* a pwrite since the last fdatasync */
	int sync_err;               /* -errno of a failed fdatasync, for good: what
				       reached the disk is unknown (cow_sync) */
	bool discarding;            /* a discard (or a write-zeroes that may unmap) runs:
				       clusters it frees are punched (I15) */
	bool no_punch;              /* the file system cannot punch holes */
	uint64_t comp_off;          /* next free byte in the open compressed cluster, 0 none */
	uint8_t *scratch;           /* 2 clusters */
	uint8_t *cbuf;              /* compressed bytes buffer, 2 clusters */
	uint64_t dec_key;           /* L2 entry of the cluster held in dec_buf, 0 none */
	uint8_t *dec_buf;           /* last decompressed cluster */
	void *zstd_d, *zlib_d;       /* decompressors (made on first use) */
	/* compressors, one per thread of a compressed write (compress.c;
	 * zc[0] the calling thread's), and the batch's output, a cluster each */
	struct cow_zctx *zc;
	unsigned nzc, comp_threads;  /* comp_threads: cow_set_compress_threads */
	uint8_t *zout;
	size_t zout_size;
	bool corrupt_reported;
	struct cow_meta_range *meta;   /* sorted by off; NULL when none (I8) */
	size_t nmeta;
	/* the end of the last L2 table the active L1 names and of the last
	 * refcount block the refcount table names (I8's check skips both
	 * tables above it): computed when first needed (named_ok), raised
	 * when an entry is added, left high when one is removed */
	uint64_t named_end;
	uint64_t named_l1_n;        /* L1 entries up to the last nonzero one */
	uint64_t named_rt_n;        /* refcount-table entries, the same way */
	bool named_ok;
	/* cow_check's open (check.c): the header is taken as QEMU reads it
	 * where cowvm's open refuses it (a header length that is not a
	 * multiple of 8; overlapping L1 table, refcount table and header), so
	 * that the check reports the damage; set before cow_hdr_parse, which
	 * records what it let through in check_flags (COW_CK_*) */
	bool check_mode;
	unsigned check_flags;
	/* opened at an internal snapshot (cow_open_snapshot, snapshot-read.c;
	 * read-only): img->l1 is the snapshot's L1 table (entries from its VM
	 * state's on zeroed in memory), h.l1_off and h.l1_size are the
	 * snapshot's, so the validation of L2 and data offsets (I8) is against
	 * its table; a guest offset past its L1 table is unallocated in this
	 * layer (l2.c cow_l2_get), as QEMU reads it */
	bool snap;

	/* O_DIRECT (COW_O_DIRECT, top layer only): img->fd has O_DIRECT and every
	 * read and write of the file goes through the io helpers below, which
	 * send aligned requests straight to the fd and the others through
	 * img->bounce (read-modify-write of the partial blocks of a write). */
	bool direct;
	uint32_t dio_mem;           /* buffer alignment (power of two) */
	uint32_t dio_off;           /* file offset and length alignment (power of two) */
	uint8_t *bounce;            /* COW_DIO_CHUNK bytes aligned to dio_mem, lazily */
	/* prealloc.c (I12) */
	uint64_t prealloc_start;    /* lowest offset reserved since open (when
	                               prealloc_reserved) */
	bool prealloc_reserved;     /* fallocate was called since open: blocks
	                               from prealloc_start on may be reserved */
	uint64_t prealloc_end;      /* blocks reserved (KEEP_SIZE) up to here, 0 none */
	uint8_t prealloc_state;     /* 0 not yet decided, 1 usable, 2 off */
	uint8_t prealloc_dense;     /* end allocations in a row after a fully written one */
	bool falloc_off;            /* fallocate failed for good: reserve nothing */
	uint64_t size_end;          /* direct I/O: st_size set ahead to here, 0 none */
	bool alloc_partial;         /* set by write.c around an allocation whose
	                               clusters it writes only in part */
	bool prealloc_trim;         /* something was reserved: cow_prealloc_trim at close */
};

#define COW_DIO_CHUNK (1u << 20)    /* largest bounce-buffered request piece */

/* header.c */
/* What cow_hdr_parse accepted in check mode (img->check_flags) that a
 * normal open refuses. */
#define COW_CK_HDR_LEN    (1u << 0)   /* header length not a multiple of 8 */
#define COW_CK_L1_HDR     (1u << 1)   /* L1 table overlaps the header */
#define COW_CK_RT_HDR     (1u << 2)   /* refcount table overlaps the header */
#define COW_CK_L1_RT      (1u << 3)   /* L1 table and refcount table overlap */
int cow_hdr_parse(struct cow_img *img, const uint8_t *buf, size_t len, uint64_t file_size,
		  struct ut_err *err);
/* Serialise header + extensions + backing name into a cluster-0 buffer. */
int cow_hdr_build(const struct cow_hdr *h, uint8_t *buf, size_t cluster_size, struct ut_err *err);
int cow_hdr_write(struct cow_img *img, struct ut_err *err);
/* The first header extension of @type in the list @x of @n bytes (each
 * entry: type, length, data padded to 8; the walk stops at an end marker
 * or where fewer than 8 bytes are left) whose length is at least @min and
 * whose first @min data bytes lie inside the list: its offset in @x, or
 * -1. For img->h.other_ext and for a header cluster from h.hdr_len on. */
ssize_t cow_ext_find(const uint8_t *x, size_t n, uint32_t type, uint32_t min);
int cow_mark_corrupt(struct cow_img *img, struct ut_err *err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* io helpers (header.c) */
/* The size of the file open as @fd, whose fstat is @st: st_size, or for a
 * block device (st_size 0) its length by lseek. */
uint64_t cow_fd_size(int fd, const struct stat *st);
int cow_pread_full(struct cow_img *img, void *buf, size_t len, uint64_t off, bool zero_fill,
		   struct ut_err *err);
int cow_pwrite_full(struct cow_img *img, const void *buf, size_t len, uint64_t off,
		    struct ut_err *err);
/* One vectored write of all of @iov (at most 8 vectors) at @off. */
int cow_pwritev_full(struct cow_img *img, const struct iovec *iov, int iovcnt, uint64_t off,
		     struct ut_err *err);
/* fdatasync; clears img->unsynced. After one fails every later call fails
 * too, with -EIO (img->sync_err, as QEMU's file-posix makes flushes fail for good):
 * Linux reports a writeback error once and marks the pages clean, so a
 * second fdatasync would succeed with their data lost, and metadata written
 * after it (I1-I4) could point to data that never reached the disk. */
int cow_sync(struct cow_img *img, struct ut_err *err);
/* With direct I/O (img->direct) these helpers accept any buffer, offset and
 * length: requests that are not aligned to dio_mem/dio_off go through the
 * bounce buffer (reads of the covering blocks; writes as read-modify-write of
 * the partial head and tail blocks, blocks past the end of the file reading
 * as zeros), never through the page cache. A padded write may extend the
 * file to the next dio_off boundary; img->file_size follows it. */
/* Set img->direct and the alignment for @img->fd, opened with O_DIRECT; fails
 * with "the file system does not support O_DIRECT (cache=none)" on tmpfs and
 * file systems that report no direct I/O support. */
int cow_dio_setup(struct cow_img *img, struct ut_err *err);
/* That refusal, for @path: sets @err, returns -EINVAL. */
int cow_dio_unsupported(struct ut_err *err, const char *path);

/* refcount.c */
int cow_rc_open(struct cow_img *img, struct ut_err *err);
int cow_rc_get(struct cow_img *img, uint64_t cluster, uint64_t *val, struct ut_err *err);
/* Load refcount block @idx into the cache (its table entry checked, I8):
 * *out its cache entry, NULL when the table has no block there. 0 or
 * -errno. */
int cow_rb_load(struct cow_img *img, uint64_t idx, struct cow_cent **out, struct ut_err *err);
int cow_rc_add(struct cow_img *img, uint64_t cluster, int64_t delta, struct ut_err *err);
/* Allocate up to @n contiguous clusters (refcount 1); *got >= 1 on success.
 * The clusters are checked against the metadata (cow_check_new, I8): one
 * that overlaps a table is an error and marks the image corrupt. */
int cow_alloc_clusters(struct cow_img *img, uint64_t n, uint64_t *off, uint64_t *got,
		       struct ut_err *err);
/* Allocate exactly @n contiguous clusters at the end of the file, checked
 * against the metadata as cow_alloc_clusters' (an overlap: -EUCLEAN, the
 * clusters keep the count they got, the image marked corrupt). */
int cow_alloc_contig(struct cow_img *img, uint64_t n, uint64_t *off, struct ut_err *err);
/* I17: undo the allocation of the @n clusters at host offset @off (one
 * reference each) that nothing references, durably or in the caches: an
 * allocating write whose data write failed. The refcounts are decremented
 * at once (no queue: there is no reference to remove first, I4) and
 * img->file_size is advanced over the clusters (the failed write may have
 * left bytes there, I10); clusters at 0 are reusable at once (free_hint).
 * 0, or -errno when a refcount block cannot be read (evicted since the
 * allocation, then EIO): the clusters from there on are queued as frees
 * instead (cow_free_later: decremented by the next cow_meta_writeback,
 * after its fdatasync; allocated, so never reused, until then), or, for a
 * refcount already 0 (a damaged image, marked corrupt), left alone. */
int cow_free_unlinked(struct cow_img *img, uint64_t off, uint64_t n, struct ut_err *err);
/* Queue a release of the clusters touched by [off, off+len) (I4). */
int cow_free_later(struct cow_img *img, uint64_t off, uint64_t len, struct ut_err *err);
/* qsort/bsearch order of uint64_t values (cluster numbers), ascending. */
int cow_u64_cmp(const void *a, const void *b);
/* Range @i of a caller's list of byte ranges: *off and *len (len 0: no
 * range, no cluster). */
typedef void (*cow_range_get_fn)(const void *ctx, size_t i, uint64_t *off, uint64_t *len);
/* The clusters of @n byte ranges (@get(@ctx, i, ...) gives range i) as one
 * sorted list: *out (malloc'ed, the caller frees it; NULL when no range
 * touches a cluster) gets, for each range, the index (offset >>
 * @cluster_bits) of every cluster it touches, a cluster touched by k
 * ranges k times, all in ascending order; *nout their number. For
 * finding clusters released more than once (refcount.c pending_dups,
 * bitmaps.c bm_free_old). 0 or -ENOMEM with @err "out of memory". */
int cow_range_clusters(uint32_t cluster_bits, size_t n, cow_range_get_fn get, const void *ctx,
		       uint64_t **out, uint64_t *nout, struct ut_err *err);
int cow_rc_write_dirty(struct cow_img *img, struct ut_err *err);
/* Write every dirty refcount block; then, if refcount-table entries are set
 * in memory only, fdatasync and write them. After this and one more
 * fdatasync every refcount in memory is durable (the dependency of any L2
 * write, I1). */
int cow_rc_flush(struct cow_img *img, struct ut_err *err);
int cow_apply_pending(struct cow_img *img, struct ut_err *err);
uint64_t cow_rc_read_entry(const uint8_t *blk, uint32_t order, uint64_t idx);
void cow_rc_write_entry(uint8_t *blk, uint32_t order, uint64_t idx, uint64_t v);

/* l2.c (the cluster map; reads in read.c, writes in write.c) */
/* May @n new clusters at @host be used? 0, or an error naming the table
 * they overlap (the image marked corrupt). */
int cow_check_new(struct cow_img *img, uint64_t host, uint64_t n, struct ut_err *err);
/* May the refcount structure @kind ("refcount block", "refcount table")
 * take the @n clusters at @host (free by their refcounts)? cow_check_new's
 * check (which, as QEMU's, covers every L2 table the active L1 names and
 * every refcount block the refcount table names, cached or not): 0, or
 * -EUCLEAN with an error "new @kind at 0x... overlaps ...; not written"
 * and the image marked corrupt. */
int cow_check_new_rc(struct cow_img *img, uint64_t host, uint64_t n, const char *kind,
		     struct ut_err *err);
/* What the @n clusters at @host overlap of the metadata cow_check_new
 * checks (the header, L1 and refcount tables, every L2 table the active
 * L1 names, every refcount block, img->meta, the cached tables): NULL, or
 * its name (in @buf when it needs one). Marks nothing. */
const char *cow_meta_overlap(struct cow_img *img, uint64_t host, uint64_t n, char *buf,
			     size_t size);
/* An L1 entry now names an L2 table at @off, or a refcount-table entry a
 * block at @off: the checks above must look up to its end (named_end). */
void cow_named_add(struct cow_img *img, uint64_t off);
int cow_meta_writeback(struct cow_img *img, struct ut_err *err);
int cow_l2_get(struct cow_img *img, uint64_t l1_idx, bool alloc, struct cow_cent **out,
	       struct ut_err *err);

/* bitmaps.c, bitmap-track.c: persistent dirty bitmaps (extension 0x23852875) */
#define COW_MAX_BITMAP_DIR (64u << 20)
/* The bitmaps extension of @img, when autoclear bit 0 says it is valid:
 * returns 1 with its bitmap count, directory size and offset (unchecked),
 * else 0. */
int cow_bitmaps_ext(const struct cow_img *img, uint32_t *nb, uint64_t *dsize, uint64_t *doff);
/* Is a bitmap directory of @dsize bytes at @doff readable from @img: not
 * empty, at most COW_MAX_BITMAP_DIR, cluster-aligned, inside the file? */
bool cow_bitmaps_dir_in_file(const struct cow_img *img, uint64_t dsize, uint64_t doff);
/* Bytes of the directory entry at @e before its padding to 8: the 24-byte
 * fixed part, extra data and name (the caller checks they are in the
 * directory). */
static inline uint64_t cow_bitmap_entry_size(const uint8_t *e)
{
	return 24 + (uint64_t)cow_be32(e + 20) + cow_be16(e + 18);
}
/* Before the first write to @img: mark every bitmap in use (the flag QEMU
 * sets while an image is open for writing), in place, durable. Returns 0
 * when done (autoclear bit 0 may stay set), 1 when there is no valid
 * directory to mark (nothing written; the caller clears the bit), -errno
 * with @err set on an I/O error. */
int cow_bitmaps_mark_in_use(struct cow_img *img, struct ut_err *err);
/* A writable open (neither COW_O_KEEP_BITMAPS nor header-only), before
 * anything else is written: every bitmap that is consistent (not in use)
 * and passes QEMU's checks of its entry and table (exactly the entries the
 * disk size needs, every entry valid) is loaded into img->bm, an enabled
 * one with its data; then every bitmap is marked in use
 * (cow_bitmaps_mark_in_use, whose return this is). A bitmap that cannot be
 * loaded, or all of them when memory runs out, is only marked in use, and
 * why is recorded (cow_bm_problem; out of memory as leaving them in use). */
int cow_bitmaps_open_rw(struct cow_img *img, struct ut_err *err);
/* Guest bytes [@off, +@len) of @img change (or may): the bits covering
 * them set in every enabled tracked bitmap, in memory. Called by every
 * entry point that changes guest data (cow_check_range with write,
 * cow_write_step, cow_map_inplace), before the change reaches the file.
 * When the bitmaps were stored consistent since (cow_bitmaps_store from
 * cow_overlay_check), they are marked in use on disk again first: that
 * may fail (-errno with @err; the change must not be made). Out of memory
 * for a chunk, tracking ends (the bitmaps stay in use): 0. */
int cow_bitmaps_dirty_slow(struct cow_img *img, uint64_t off, uint64_t len, struct ut_err *err);
static inline int cow_bitmaps_dirty(struct cow_img *img, uint64_t off, uint64_t len,
				    struct ut_err *err)
{
	return img->bm ? cow_bitmaps_dirty_slow(img, off, len, err) : 0;
}
/* Store the tracked bitmaps of @img (cow_close, cow_overlay_check): new
 * data clusters and tables, a new directory with their in-use flags
 * cleared, cow_flush, the header's directory offset switched (8 bytes,
 * fdatasync), the old ones freed (I4). Nothing to do without tracked
 * bitmaps or when nothing changed since the last store. A failure before
 * the switch leaves them in use (the new clusters freed); after it they
 * are consistent (leaks at worst). 0 or -errno with @err. */
int cow_bitmaps_store(struct cow_img *img, struct ut_err *err);
/* Free img->bm, writing nothing: tracking ends (cow_img_free; a refcount
 * repair at open, while they are in use; cow_overlay_attach, after the
 * check stored them). */
void cow_bitmaps_track_free(struct cow_img *img);
/* COW_O_KEEP_BITMAPS open: the directory checked as QEMU's open checks it
 * (0: keep autoclear bit 0; 1: no bitmaps; -EINVAL/-ENOTSUP with @err:
 * QEMU would not open the image, writing refused). */
int cow_bitmaps_valid(struct cow_img *img, struct ut_err *err);
/* Resizing with COW_O_KEEP_BITMAPS, as QEMU 7.2 (see bitmaps.c for the
 * steps and what a crash at each leaves); without it, on an open that
 * tracks its bitmaps (img->bm), _begin, _commit and _abort resize them in
 * memory instead (bitmaps.c, "tracking writes"), and otherwise do nothing:
 * _begin, before anything else is written, refuses a bitmap in use
 * ("inconsistent"), a damaged table, or one that @new_size would make too
 * large, and marks the rest in use (a failure of that clears them again);
 * _prepare, before the size is written, writes each bitmap's table for
 * @new_size (@old_size: the size they describe) and a new directory with
 * the in-use flags cleared, durable, not yet named by the header
 * (img->bm_prep); _commit, after the size is written and synced, switches
 * the header to that directory and frees the old tables. A resize that
 * fails after _begin calls _abort instead: the prepared clusters are freed
 * and, with @size_kept (the size write was never made), the bitmaps made
 * consistent again: with @changed_from UINT64_MAX (no data inside the old
 * size changed) their in-use flags cleared in place, else new tables with
 * every bit from byte @changed_from on set (a shrink's released tail,
 * changed without being recorded), switched to as by _commit. Without
 * @size_kept they stay in use (the old tables do not fit the new size, and
 * QEMU refuses a bitmap not in use whose table does not). _abort
 * returns 0 when the bitmaps are consistent again as the file reads (or
 * there were none), 1 when they stay in use (without @size_kept, or its
 * undo failed: @err says why); the caller says so in its error, since the
 * next resize refuses them. The others: 0 or -errno with @err set. */
int cow_bitmaps_resize_begin(struct cow_img *img, uint64_t new_size, struct ut_err *err);
int cow_bitmaps_resize_prepare(struct cow_img *img, uint64_t old_size, uint64_t new_size,
			       struct ut_err *err);
int cow_bitmaps_resize_commit(struct cow_img *img, struct ut_err *err);
int cow_bitmaps_resize_abort(struct cow_img *img, bool size_kept, uint64_t changed_from,
			     struct ut_err *err);

/* bitmaps.c internals shared with bitmap-track.c (the format's limits and
 * layout, QEMU's checks, the switch to a new directory). */
#define COW_BM_ENTRY_HDR     24u                      /* fixed part of an entry */
#define COW_BM_MAX_TABLE     0x8000000u               /* QEMU's limits */
#define COW_BM_MAX_PHYS      0x20000000ull
#define COW_BM_TE_RESERVED   0xff000000000001feull    /* table entry bits */
#define COW_BM_TE_OFFSET     0x00fffffffffffe00ull
#define COW_BM_TE_ALL_ONES   1ull
/* A set of new bitmap tables and a new directory, written and durable,
 * that the header does not name yet (img->bm_prep, or a store's). */
struct cow_bm_range { uint64_t off, len; };
struct cow_bm_resize {
	uint64_t doff, dsize, ndoff;   /* the directory now (dsize 0: none), the new one */
	uint64_t ndsize;               /* the new one's size (0: none, nnb 0) */
	uint32_t nb, nnb;              /* bitmaps in the directory now, in the new one */
	uint64_t field;                /* file offset of the header's directory offset */
	uint8_t *mem;                  /* the same field in img->h.other_ext */
	struct cow_bm_range *fr;       /* freed after the switch: old tables, dropped data */
	struct cow_bm_range *nw;       /* new clusters: freed again without the switch */
	size_t nfr, nnw;
};
/* The directory the header's bitmaps extension names, read raw (the one
 * read of it in cow/ outside check.c and the listing): 1 when there is
 * none (no valid extension, no bitmap); 0 with *dirp (malloc'ed), *dsizep,
 * *doffp when it lies inside the file (cluster-aligned, not empty, at most
 * COW_MAX_BITMAP_DIR), over none of the header, the L1 table, the refcount
 * table and the start of the snapshot table, and its entries fill it
 * exactly (each inside it with its padding, as many as the extension
 * counts); else -EINVAL with @err "'x': the bitmap directory (offset 0x..,
 * n bytes) is invalid" / "... is broken (entry n)" / "... holds n bitmaps,
 * the header says m"; -ENOMEM or a read's error. */
int cow_bm_read_dir(struct cow_img *img, uint8_t **dirp, uint64_t *dsizep, uint64_t *doffp,
		    struct ut_err *err);
/* The same where a directory was there before (a store or resize after
 * the checks of the open or of _begin): none is -EINVAL "'x': its bitmap
 * directory is gone". */
int cow_bm_reread_dir(struct cow_img *img, uint8_t **dirp, uint64_t *dsizep, uint64_t *doffp,
		      struct ut_err *err);
/* A cluster range the bitmaps name: a table (@entry -1), a data cluster
 * (@entry its index in the table), the directory (-2); @dpos the offset of
 * the bitmap's entry in the directory. */
struct cow_bm_ref { uint64_t off, len, dpos; int64_t entry; };
/* Every table of the directory @dir (@dsize bytes, from cow_bm_read_dir)
 * that lies inside the file and within QEMU's size limits, and every data
 * cluster such a table names with a valid entry (aligned, inside the
 * file, no reserved bits), in bitmap and entry order: *out (malloc'ed, *n
 * of them). Bitmaps in use included (`qemu-img check` counts them too).
 * 0 or -errno with @err. */
int cow_bm_refs(struct cow_img *img, const uint8_t *dir, uint64_t dsize, struct cow_bm_ref **out,
		size_t *n, struct ut_err *err);
/* Name of the directory entry at @e, as a bounded string for messages:
 * printf("%.*s", BM_NAME(e)). */
static inline int cow_bm_name_len(const uint8_t *e)
{
	uint16_t n = cow_be16(e + 18);
	return n > 200 ? 200 : n;
}
#define BM_NAME(e) cow_bm_name_len(e), (const char *)(e) + COW_BM_ENTRY_HDR + cow_be32((e) + 20)
/* Table entries (clusters of bits) a bitmap of granularity 2^@gbits needs
 * for @size bytes. */
uint64_t cow_bm_table_size(const struct cow_img *img, uint64_t size, unsigned gbits);
/* The directory, checked as QEMU's open checks it at the current size: 1
 * none, 0 with *dirp (malloc'ed), *dsizep, *doffp, or -errno with @err. */
int cow_bm_load_dir(struct cow_img *img, uint8_t **dirp, uint64_t *dsizep, uint64_t *doffp,
		    struct ut_err *err);
/* The table of the entry at @e, every entry checked: *tp (malloc'ed, host
 * order), 0 or -errno with @err. */
int cow_bm_load_table(struct cow_img *img, const uint8_t *e, uint64_t **tp, struct ut_err *err);
/* @len bytes of new bitmap metadata from @buf written to newly allocated
 * clusters (unnamed, I17): their offset in *off. 0 or -errno. */
int cow_bm_write_new(struct cow_img *img, const void *buf, uint64_t len, uint64_t *off,
		     struct ut_err *err);
/* Append [@off, +@len) to the list *@l of *@n ranges: 0 or -ENOMEM. */
int cow_bm_note(struct cow_bm_range **l, size_t *n, uint64_t off, uint64_t len, struct ut_err *err);
/* The end of a prepare (resize or store): the new directory @dir
 * (st->dsize bytes) written to new clusters (st->ndoff, noted in st->nw),
 * then cow_flush: the new clusters, their refcounts and every data change
 * the bitmaps describe durable before the header can name them; then
 * st->field and st->mem (cow_bm_ext_field). 0 or -errno with @err. */
int cow_bm_prep_finish(struct cow_img *img, struct cow_bm_resize *st, const uint8_t *dir,
		       struct ut_err *err);
/* Release @st; with @unlinked its new clusters are freed at once. */
void cow_bm_prep_free(struct cow_img *img, struct cow_bm_resize *st, bool unlinked);
/* The file offset of the header extension's directory offset field, and
 * the same field in img->h.other_ext. 0 or -errno. */
int cow_bm_ext_field(struct cow_img *img, uint64_t *file_off, uint8_t **mem, struct ut_err *err);
/* The header switched to @st's directory (8 bytes, fdatasync), then the
 * old directory and st->fr freed (I4), cow_flush. *switched: the write was
 * made. Releases @st. 0 or -errno. */
int cow_bm_switch(struct cow_img *img, struct cow_bm_resize *st, bool *switched,
		  struct ut_err *err);
/* Record a problem with the persistent bitmaps of @img that no call
 * returns (cow_bitmaps_problem): -errno @code and a message naming the
 * file; @in_use: bitmaps that were consistent at open stay marked in use
 * because of it (tracking ended or never began: cow_close returns @code).
 * The first one is kept, unless a later one has @in_use and it has not. */
void cow_bm_problem(struct cow_img *img, int code, bool in_use, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* bitmap-track.c, bitmap-ops.c: the bitmaps a writable open holds in
 * memory (img->bm). A tracked bitmap mirrors its table: one chunk per
 * table entry (a cluster of bits, bit i of the chunk in byte i / 8, bit
 * i % 8, as on disk), NULL while all its bits are clear, BM_ONES while all
 * are set ("all ones" entry), else a malloc'ed cluster. */
extern uint8_t cow_bm_ones_tag;
#define BM_ONES (&cow_bm_ones_tag)
struct bm_mem {
	uint64_t dpos;               /* offset of its entry in the directory
					(none while @fresh) */
	char *name;                  /* (to find the entry again) */
	uint16_t nlen;
	unsigned gbits;
	bool enabled;                /* flag "auto": writes set its bits */
	bool fresh;                  /* added by cow_bitmap_add, not yet in
					the directory the header names */
	uint64_t nbits, nchunks;     /* bits (the disk size rounded up to the
					granularity), table entries */
	uint64_t disk_nchunks;       /* entries of its table in the file (other
					than nchunks after a resize) */
	uint64_t ndpos;              /* (a store: its entry in the new directory) */
	uint8_t **chunk;             /* nchunks chunks: enabled ones, and
					disabled ones once a resize or an edit
					loaded them (NULL: their table in the
					file stays) */
};
struct cow_bm_track {
	struct bm_mem *bm;
	size_t n;
	bool stored;                 /* the header names a directory with their
					in-use flags cleared: the next change
					marks them in use first */
	uint64_t *gone;              /* directory entries (dpos) removed by
					cow_bitmap_remove: left out of the next
					store, their clusters freed after it */
	size_t ngone;
	struct cow_bm_track *saved;  /* cow_bitmap_edit_begin's copy */
};
/* Free @b's chunks (b->chunk NULL after), or its chunks and name. */
void cow_bm_mem_free_data(struct bm_mem *b);
void cow_bm_mem_free(struct bm_mem *b);
/* The data of @b from its table @t (b->nchunks entries, checked by
 * cow_bm_load_table) into b->chunk, bits past its end cleared: 0, 1 when a
 * cluster cannot be read, or -ENOMEM (b->chunk partly filled: free it). */
int cow_bm_mem_data(struct cow_img *img, struct bm_mem *b, const uint64_t *t);
/* The data of tracked bitmap @b (not loaded yet: a disabled one's is not
 * loaded at open) from its entry at b->dpos of the directory @dir (@dsize
 * bytes, just read again with cow_bm_reread_dir), which must still be the
 * entry @b was loaded from (name, table size): 0, or -errno with @err and
 * nothing loaded (bitmap-track.c). */
int cow_bm_load_data(struct cow_img *img, struct bm_mem *b, const uint8_t *dir, uint64_t dsize,
		     struct ut_err *err);
/* The bitmap at directory entry @e (at @dpos), not in use, into @b: its
 * table exactly the entries the disk size needs, every entry valid, and
 * its data when it is enabled or @all. 1 when it cannot be loaded, 0, or
 * -ENOMEM (@b to be freed with cow_bm_mem_free in every case). */
int cow_bm_mem_load(struct cow_img *img, const uint8_t *e, uint64_t dpos, bool all,
		    struct bm_mem *b);
/* Bits of [@off, +@len) set in @b (chunks allocated as needed): 0 or
 * -ENOMEM. */
int cow_bm_set_one(struct cow_img *img, struct bm_mem *b, uint64_t off, uint64_t len);
void cow_bm_track_free(struct cow_bm_track *t);
/* bitmap-track.c, for the resize steps of bitmaps.c (a tracking open):
 * _track_begin before a resize writes anything (0, or -errno: refused);
 * _track_resize after its size write (img->size is the new size);
 * cow_bm_set: bits of [@off, +@len) set in the enabled tracked bitmaps
 * (a failed shrink's tail). */
int cow_bm_track_begin(struct cow_img *img, uint64_t new_size, struct ut_err *err);
void cow_bm_track_resize(struct cow_img *img);
/* Every bit of every enabled tracked bitmap set (in memory; "all ones"
 * chunks, no allocation): after a refcount repair at open, which may have
 * changed what the guest reads (entries that pointed at no data now read
 * as zeros) without recording where. */
void cow_bm_track_all_dirty(struct cow_img *img);
/* Tracking ends before the bitmaps could be stored (@why, -errno @code):
 * they stay marked in use; recorded (cow_bm_problem, leaving them in use)
 * for cow_bitmaps_problem and cow_close's result, since nothing else would
 * say so; the tracked bitmaps freed (cow_bitmaps_track_free). */
void cow_bm_lost(struct cow_img *img, int code, const char *why, ...)
	__attribute__((format(printf, 3, 4)));
void cow_bm_set(struct cow_img *img, uint64_t off, uint64_t len);

/* backing.c: 0 when @img's data (what the guest reads) may be changed;
 * -EROFS with @err naming the file when it was opened read-only or
 * header-only (COW_O_HEADER_ONLY: only cow_set_backing writes); -EPERM
 * when it was opened with COW_O_KEEP_BITMAPS and no resize is running
 * (img->resizing): its persistent bitmaps are not marked in use, so a
 * change they do not record would leave them silently stale. The one
 * check of every entry point that changes guest data: cow_write_step
 * (cow_write, cow_writev, storage/qcow2.c's writes), cow_check_range with
 * write (cow_write_zeroes, cow_discard, cow_write_compressed),
 * cow_map_inplace (no in-place run: storage/ then goes through
 * cow_write_step) and cow_set_backing (a KEEP_BITMAPS open only). */
int cow_data_writable(const struct cow_img *img, struct ut_err *err);

/* listing.c: the snapshot table */
#define COW_MAX_SNAPSHOT_EXTRA 1024u   /* QEMU refuses more extra data */
/* Read the 40-byte fixed part of the snapshot table entry at @off of @img
 * into @h, and in *len the entry's length before its padding to 8 (fixed
 * part, extra data, id, name). 0; -EINVAL (@err: which snapshot, @idx, and
 * why) when the entry does not lie inside the file or its extra data is
 * over COW_MAX_SNAPSHOT_EXTRA; or a read's -errno. */
int cow_snapshot_entry(struct cow_img *img, uint32_t idx, uint64_t off, uint8_t h[40],
		       uint64_t *len, struct ut_err *err);

/* snapshot-read.c: the L1 table of snapshot @idx (0-based; named idx + 1
 * in messages) of @img, at @off with @n entries, validated as QEMU's
 * qcow2_validate_table (at most COW_MAX_L1_BYTES; with entries: aligned to
 * a cluster, past the header, inside the file) and read: 0 and *@l1 (host
 * order, @n entries, at least one allocated; the caller frees it), or
 * -EFBIG/-EINVAL (@err names the snapshot and the problem) or a read's
 * -errno with *@l1 NULL. Shared by cow_open_snapshot and snapshot.c. */
int cow_snap_l1_load(struct cow_img *img, uint32_t idx, uint64_t off, uint32_t n, uint64_t **l1,
		     struct ut_err *err);

/* Load img->meta (snapshot table, every snapshot's L1 table, the bitmap
 * directory of a valid bitmaps extension) for cow_check_new. The snapshot
 * table must parse (cow_get_snapshots succeeded). 0 or -errno. */
int cow_meta_ranges_load(struct cow_img *img, struct ut_err *err);
/* The first range of img->meta found to overlap [off, off+len), NULL when
 * none. O(log n) plus the ranges that overlap each other. */
const struct cow_meta_range *cow_meta_range_find(const struct cow_img *img, uint64_t off,
						 uint64_t len);

/* compress.c */
int cow_decompress(struct cow_img *img, const uint8_t *src, size_t slen, uint8_t *dst,
		   size_t dlen, struct ut_err *err);
/* Compress the @n clusters at @src (the last one @last_len bytes,
 * zero-padded to a cluster) into img->zout, cluster i's bytes at
 * i * cluster size and their length in @lens[i] (0: it does not shrink
 * below a cluster, to be stored plainly), on up to img->comp_threads
 * threads (the caller's one of them; only it touches @img, the others
 * their own compressor and output). 0 or -ENOMEM. */
int cow_compress_clusters(struct cow_img *img, const uint8_t *src, uint64_t n, uint64_t last_len,
			  long *lens);
void cow_compress_free(struct cow_img *img);

/* prealloc.c (I12) */
/* Clusters ending at host byte @end are about to be written at the end of
 * the file: unless already done, reserve the blocks up to a chunk past @end
 * with fallocate(FALLOC_FL_KEEP_SIZE) (st_size and content unchanged); only
 * once 8 end allocations in a row are written whole (img->alloc_partial
 * clear: none sparse, I10, or subclusters). Never fails: without fallocate
 * the write proceeds unreserved. */
void cow_prealloc(struct cow_img *img, uint64_t end);
/* If anything was reserved, free the blocks past the end of the file
 * (ftruncate to its own size) and punch the reserved blocks below it that
 * were never written (best effort). Only after everything written is
 * durable (cow_flush) and with no write in flight. Returns 0 or -errno with
 * @err filled. */
int cow_prealloc_trim(struct cow_img *img, struct ut_err *err);
/* The data area [@off, @off + @len) of @img's file as preallocation @mode
 * leaves it (cow_create, cow_grow_prealloc): metadata a hole, falloc its
 * blocks reserved (fallocate), full zeros written (direct writes
 * where the file system takes them); the file then extends at least to
 * its end (ftruncate: st_size, img->file_size). The caller syncs. 0 or
 * -errno with @err naming the file (ENOSPC: part of the area may be
 * reserved or written, which reads as zeros either way). */
int cow_prealloc_fill(struct cow_img *img, uint64_t off, uint64_t len,
		      enum cow_prealloc_mode mode, struct ut_err *err);

/* backing.c */
int cow_open_layer(const char *path, const char *fmt, unsigned flags, int depth,
		   struct cow_img **out, struct ut_err *err);
int cow_qcow2_open(struct cow_img *img, unsigned flags, struct ut_err *err);
void cow_img_free(struct cow_img *img);

/* Derive the cluster and L2 geometry from the parsed header (img->h). */
static inline void cow_geom_init(struct cow_img *img)
{
	img->cluster_bits = img->h.cluster_bits;
	img->cluster_size = 1u << img->cluster_bits;
	img->extl2 = (img->h.incompat & QCOW_INCOMPAT_EXTL2) != 0;
	img->l2_esize = img->extl2 ? 16 : 8;
	img->l2_bits = img->cluster_bits - (img->extl2 ? 4 : 3);
	img->l2_entries = 1u << img->l2_bits;
	img->sc_bits = img->cluster_bits - 5;
}

/* Standard part and subcluster bitmap (0 without extl2) of entry @i of the
 * L2 table in @tbl. */
static inline uint64_t cow_l2_ent(const struct cow_img *img, const uint8_t *tbl, uint64_t i)
{
	return cow_be64(tbl + i * img->l2_esize);
}
static inline uint64_t cow_l2_bmp(const struct cow_img *img, const uint8_t *tbl, uint64_t i)
{
	return img->extl2 ? cow_be64(tbl + i * 16 + 8) : 0;
}

/* Is the subcluster bitmap @bmp of extended-L2 entry @e consistent (I8,
 * I11)? NULL, or what is wrong (always NULL without extended L2). */
static inline const char *cow_l2_bmp_problem(const struct cow_img *img, uint64_t e, uint64_t bmp)
{
	if (!img->extl2)
		return NULL;
	if (e & QCOW_OFLAG_COMPRESSED)
		return bmp ? "a compressed cluster has a non-zero subcluster bitmap" : NULL;
	if ((uint32_t)bmp & (uint32_t)(bmp >> 32))
		return "a subcluster is marked both allocated and zero";
	if ((uint32_t)bmp && !(e & QCOW_OFFSET_MASK))
		return "allocated subclusters without a host cluster";
	return NULL;
}

static inline uint64_t cow_l2_compressed_off(const struct cow_img *img, uint64_t e)
{
	uint32_t x = 62 - (img->cluster_bits - 8);
	return e & ((1ull << x) - 1);
}
static inline uint64_t cow_l2_compressed_sectors(const struct cow_img *img, uint64_t e)
{
	uint32_t x = 62 - (img->cluster_bits - 8);
	return ((e & ~QCOW_OFLAG_COPIED & ~QCOW_OFLAG_COMPRESSED) >> x) + 1;
}

#endif
