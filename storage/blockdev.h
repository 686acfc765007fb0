/* storage/blockdev.h — the block-device interface: one API, pluggable backends.
 *
 * A struct stg_dev is an open disk image. Requests are asynchronous: stg_submit()
 * queues one; its completion callback runs later from stg_poll(), on the thread
 * that calls stg_poll() (never from inside stg_submit()). Each device exposes an
 * eventfd that becomes readable when completions are ready, so an event loop
 * can wait on it with other fds.
 *
 * Backends (raw, qcow2, ...) are an ops table plus one row in stg_backends[]
 * (storage/backends.c). The format is probed from the file's first bytes unless
 * forced. A device opened read-only never writes its file; qcow2 never writes a
 * backing layer.
 *
 * Threading: one thread at a time per device (the device's I/O thread),
 * except stg_snapshot_create (and stg_snapshot_abort of what it made) and
 * stg_note_flush_failed, which may run on another thread meanwhile.
 */
#ifndef STG_BLOCKDEV_H
#define STG_BLOCKDEV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "util/err.h"

#define STG_SECTOR_SIZE 512

enum stg_op {
	STG_OP_READ = 0,
	STG_OP_WRITE,
	STG_OP_FLUSH,
	STG_OP_DISCARD,
	STG_OP_WRITE_ZEROES,
};

/* stg_req flags: a write-zeroes that may give the range's space back (the
 * virtio-blk request's "unmap" bit); without it the space stays allocated
 * where the backend can keep it */
#define STG_REQ_MAY_UNMAP (1u << 0)

struct stg_req;
typedef void (*stg_done_fn)(struct stg_req *req, int result);

/* A request. Owned by the caller until its done() runs. */
struct stg_req {
	enum stg_op op;
	uint64_t offset;            /* bytes from the start of the virtual disk */
	uint64_t len;               /* bytes; for read/write = sum of iov lengths */
	const struct iovec *iov;    /* read/write buffers (caller-owned) */
	int iovcnt;
	unsigned flags;             /* STG_REQ_* */
	stg_done_fn done;           /* result: 0 on success or -errno */
	void *opaque;               /* for the caller */
	/* backend use */
	struct stg_req *next;
	uint64_t priv[4];
};

/* Open flags */
#define STG_O_RDONLY   (1u << 0)
#define STG_O_DIRECT   (1u << 1)   /* O_DIRECT where the backend supports it */
#define STG_O_NOCACHE_META (1u << 2)
#define STG_O_NO_LOCK  (1u << 3)   /* take and test no image locks (--force-share) */
#define STG_O_THREADS  (1u << 4)   /* I/O through worker threads, not io_uring (aio=threads) */

struct stg_info {
	const char *format;          /* "raw", "qcow2" */
	uint64_t virtual_size;       /* bytes */
	uint64_t actual_size;        /* bytes allocated on the host (st_blocks * 512) */
	bool read_only;
	bool discard;                /* discard is meaningful */
	char backing[4096];          /* backing file name, "" if none */
	char backing_format[32];
	int chain_depth;             /* 1 for an image without backing */
};

struct stg_dev;
struct cow_img;

struct stg_backend_ops {
	const char *name;
	/* Score how well the header bytes match this format: 0 no, 100 certain. */
	int (*probe)(const uint8_t *buf, size_t len);
	/* Open @path into @dev (dev->path, dev->flags, dev->engine set). 0 or -errno. */
	int (*open)(struct stg_dev *dev, struct ut_err *err);
	/* Start @req; arrange its completion through stg_complete(). 0 or -errno
	 * (then done() is not called). */
	int (*submit)(struct stg_dev *dev, struct stg_req *req);
	/* Reap whatever the backend has in flight without blocking (may be NULL
	 * when all completion goes through the engine). */
	void (*poll)(struct stg_dev *dev);
	int (*get_info)(struct stg_dev *dev, struct stg_info *info);
	int (*close)(struct stg_dev *dev);   /* 0, or -errno when the image's
	                                        own close failed (cow_close: its
	                                        flush, or storing the persistent
	                                        bitmaps it tracked) */
	/* External snapshot (stg_snapshot_commit; NULL: the backend has none,
	 * -ENOTSUP): make @overlay, a qcow2 image stg_snapshot_prepare opened
	 * writable with COW_O_NO_BACKING, the device's top layer over its
	 * current image, which becomes the overlay's read-only backing layer
	 * (cow_overlay_check, then cow_overlay_attach: never unlocked); the
	 * device then runs on the qcow2 backend (dev->ops and dev->priv may
	 * change) with the overlay's fd registered with the engine. Called
	 * with nothing in flight. 0 (the device owns @overlay) or -errno with
	 * @err, the device unchanged and writing its current image. */
	int (*snapshot)(struct stg_dev *dev, struct cow_img *overlay, struct ut_err *err);
	/* The descriptor of the file the device writes (raw: the file; qcow2:
	 * the top layer's), for stg_snapshot_create, which syncs that file
	 * from its own thread (NULL: not synced there, prepare's flush does
	 * it all). Called from any thread while the loop thread runs the
	 * device: it may read only what open set and only a snapshot's
	 * commit or close changes (never the engine or a cache); the
	 * caller must not use the fd for anything that moves a file offset,
	 * locks or closes. */
	int (*image_fd)(struct stg_dev *dev);
};

extern const struct stg_backend_ops *const stg_backends[];

struct stg_engine;

struct stg_dev {
	const struct stg_backend_ops *ops;
	char *path;
	unsigned flags;
	uint64_t size;               /* virtual size in bytes */
	struct stg_engine *engine;   /* io_uring (or thread-pool) engine */
	int event_fd;                /* readable when completions are pending */
	struct stg_req *done_head, *done_tail;  /* completions queued by stg_complete */
	void *priv;                  /* backend state */
	/* the backend's words for the last failure that had more to say than
	 * an errno ("'x.qcow2': allocated cluster ... overlaps the snapshot
	 * table"), "" if none; set by stg_note_error, taken by
	 * stg_take_error */
	char last_error[UT_ERR_MSG_MAX];
};

/* Open @path. @format NULL or "auto" probes; "raw"/"qcow2" forces. The image
 * is locked like QEMU locks it (cow/lock.h) for the device's lifetime:
 * for writing unless STG_O_RDONLY, backing layers shared; -EBUSY ("image is
 * in use") when another process's locks conflict; STG_O_NO_LOCK skips that.
 * Returns 0 with *out set (caller owns; stg_close()) or -errno with @err
 * naming the file and the problem. */
int stg_open(const char *path, const char *format, unsigned flags,
	     struct stg_dev **out, struct ut_err *err);

/* Queue @req (fields op/offset/len/iov/iovcnt/done set). Validates the range
 * against the disk size (-EINVAL beyond the end, -EROFS for a write to a
 * read-only device). Returns 0 (done() will run from stg_poll) or -errno.
 * After a flush has failed (any backend; not EINVAL/ENOTSUP, which say the
 * file cannot be synced at all) every later flush of the device completes
 * with -EIO: Linux reports a writeback error only once. */
int stg_submit(struct stg_dev *dev, struct stg_req *req);

/* Send queued requests to the kernel (stg_submit batches until this, until
 * stg_poll, or until the engine's queue is full). */
void stg_unplug(struct stg_dev *dev);

/* Run completion callbacks for the requests finished when it is called (and
 * for what those callbacks finish at once); never blocks, and does not keep
 * taking completions that arrive meanwhile (they make the eventfd readable
 * again). Callbacks may submit new requests. Returns the number completed.
 * Clears the eventfd. */
int stg_poll(struct stg_dev *dev);

/* Wait until at least one request of @d has completed and run the
 * completions (none in flight: returns at once). Returns the number run or
 * -errno. */
int stg_wait(struct stg_dev *d);

/* Block until every submitted request has completed (their callbacks run). */
int stg_drain(struct stg_dev *dev);

/* Synchronous helpers (submit + wait), for tools and tests. */
int stg_pread(struct stg_dev *dev, void *buf, uint64_t len, uint64_t off);
int stg_pwrite(struct stg_dev *dev, const void *buf, uint64_t len, uint64_t off);
int stg_flush(struct stg_dev *dev);

int stg_get_info(struct stg_dev *dev, struct stg_info *info);
/* Drain and close @dev (NULL: nothing) and free it. Returns 0, or the
 * backend's close error (-errno; the image's final flush or the store of
 * its tracked persistent bitmaps failed: they stay marked in use). @dev is
 * freed either way. */
int stg_close(struct stg_dev *dev);
/* stg_close, and the backend's words for a problem its close found
 * (a failed store of the persistent bitmaps; bitmaps it could not keep up
 * to date, cow_bitmaps_problem, which also makes the result -errno when
 * they stay marked in use) in @msg ("" if none; @size 0: not wanted). */
int stg_close_msg(struct stg_dev *dev, char *msg, size_t size);

/* For backends: a flush of the device's file failed outside a flush
 * request (an external snapshot's commit, storage/raw.c, or its create,
 * storage/snapshot.c): every later flush of the device fails (-EIO), as
 * after a failed flush request. Any thread (an atomic flag). */
void stg_note_flush_failed(struct stg_dev *dev);

/* For backends: keep @msg (copied; NULL or "" does nothing) as the
 * device's last error message. */
void stg_note_error(struct stg_dev *dev, const char *msg);

/* The last error message a backend noted, moved into @buf (size @size;
 * "" if none); the device forgets it. Returns @buf. */
const char *stg_take_error(struct stg_dev *dev, char *buf, size_t size);

/* For backends' snapshot op (storage/qcow2.c): make @d, whose backend
 * state the caller gives up on success, a qcow2 device with @overlay on
 * top of @img (cow_overlay_check already passed: this attaches them,
 * cow_overlay_attach). Fails only for memory (-ENOMEM: nothing changed,
 * @overlay and @img still the caller's); 0: @d owns both, dev->ops is the
 * qcow2 backend, every layer's fd not yet registered is. */
int stg_qcow2_adopt(struct stg_dev *d, struct cow_img *overlay, struct cow_img *img);

/* For backends: hand a finished request back (its done() runs from stg_poll). */
void stg_complete(struct stg_dev *dev, struct stg_req *req, int result);

/* Number of requests submitted and not yet completed (callbacks not run). */
unsigned stg_inflight(const struct stg_dev *dev);

/* ---- external snapshots (QMP's blockdev-snapshot-sync) ----
 *
 * Switch a running device to a new qcow2 overlay on top of its current
 * image: the current image becomes a read-only backing layer (frozen: what a
 * clone can share), and every later write goes to the overlay. Two steps, so
 * that the caller can record the change (the catalog) between them while
 * the guest is stopped, and an optional one before them, while it runs:
 *
 *   stg_snapshot_create   (optional) the slow part of prepare, from any
 *                         thread while the device keeps serving requests:
 *                         the overlay made, synced, opened and checked, and
 *                         the image's data pushed to the disk (below).
 *   stg_snapshot_prepare  flush the device (data and metadata durable), then
 *                         create the overlay file (or check an existing one,
 *                         STG_SNAP_EXISTING), make it durable (file and
 *                         directory, an existing one too), and open it: from here the overlay
 *                         holds a write lock (unless STG_O_NO_LOCK). The
 *                         device is unchanged and still writes its current
 *                         image. After a create: the flush, and the checks
 *                         again, only.
 *   stg_snapshot_commit   the current image becomes the overlay's backing
 *                         layer, without a moment unlocked (the same open
 *                         file description): its write lock turns into a
 *                         backing layer's shared one (cow_lock_downgrade),
 *                         and it is made durable again and read-only for
 *                         good in cow/ (cow_overlay_attach). Its persistent
 *                         bitmaps are stored consistent, as at close, by
 *                         cow_overlay_check (cow/cow.h I18). From then on
 *                         dev->path is the overlay's path as given to
 *                         prepare, dev->size unchanged, the device is a
 *                         qcow2 device (a raw one too: the raw file, same
 *                         fd, is the overlay's raw backing layer), and
 *                         stg_get_info shows the longer chain. It fails only
 *                         when the pair no longer matches (the file at the
 *                         image's name was replaced since prepare: the
 *                         overlay's backing must be the open file, by
 *                         st_dev/st_ino of its fd), the image cannot be made
 *                         durable (fdatasync) or its preallocated blocks
 *                         released (cow_prealloc_trim), or for memory; then the device
 *                         keeps writing its current image, unchanged and
 *                         still write-locked (after a failed fdatasync
 *                         every later flush of it fails, -EIO, as after a
 *                         failed flush request), and the caller calls
 *                         stg_snapshot_abort or stg_snapshot_keep.
 *   stg_snapshot_abort    instead of prepare or commit (or after a failed
 *                         one): closes the overlay (its lock goes) and
 *                         removes the file create or prepare made (an
 *                         existing one is left, and so is another file that
 *                         has taken its name since: removal is by the
 *                         st_dev/st_ino noted when it was made).
 *   stg_snapshot_keep     the same, but the file stays at its name: after
 *                         a failed prepare or commit, for a caller that
 *                         recorded the overlay (the catalog) and could not
 *                         undo that record. A failed prepare or commit
 *                         never removes the file itself, so that the
 *                         caller can undo its record first and remove the
 *                         file only then: no record names a removed file.
 *                         The file kept is a complete overlay of the
 *                         image, with no data of its own.
 *
 * A new overlay is made as an unnamed file in its directory (O_TMPFILE,
 * mode 0644 less the umask), built and synced there, then given its name
 * by linkat (through /proc/self/fd, AT_SYMLINK_FOLLOW), which never
 * replaces a file (-EEXIST, also for a file that appeared at the name
 * meanwhile), and the directory synced: a kill or power cut at any point
 * leaves no partial file at the name and nothing anywhere else (the
 * unnamed file goes with the process, or with the file system's orphan
 * list at the next mount). Where the file system or the kernel has no
 * O_TMPFILE (EOPNOTSUPP, EISDIR, EINVAL) or /proc is missing, it is made
 * under a temporary name instead (".NAME.XXXXXX", NAME the overlay's file
 * name cut to its first 247 bytes so that any legal name gives a legal
 * one), synced, then renamed to its name without replacing anything
 * (renameat2 RENAME_NOREPLACE, or link + unlink where the file system
 * refuses that flag: -EEXIST as above) and the directory synced; a kill or
 * power cut then may leave that temporary file behind (with link +
 * unlink, possibly as a second name of the overlay), never a partial file
 * at the name. Every failure removes what it made.
 *
 * A new overlay is qcow2 v3 with the device's virtual size, 64 KiB clusters
 * and extended L2 entries (as `cowvm image create -b` makes overlays), its
 * backing file the current image's absolute path (realpath of dev->path)
 * and format. It is opened with the device's flags (STG_O_DIRECT,
 * STG_O_NO_LOCK, engine). An existing one (STG_SNAP_EXISTING) must be
 * qcow2, of the device's virtual size, with a backing file name that
 * resolves (relative to the overlay's directory) to the file at dev->path
 * (st_dev/st_ino) and, when it stores one, the device's format as backing
 * format; anything else is -EINVAL naming the file and what differs.
 *
 * Preconditions of prepare and commit (not of create): nothing in flight
 * on @dev (stg_inflight() == 0, e.g. after stg_drain; else -EBUSY), and
 * nothing submitted between prepare and commit/abort; the device is
 * writable (else -EROFS, create too). Errors name the file and the
 * problem. Nothing opens the device's image besides its own descriptors
 * (with the POSIX-lock fallback, kernels without OFD locks, closing
 * another descriptor would drop the device's locks, cow/lock.h), except
 * create's push of its data: a second description, opened and closed,
 * only where that is harmless (OFD locks, or STG_O_NO_LOCK).
 */
#define STG_SNAP_EXISTING (1u << 0)  /* use the qcow2 file at the path: its
					 backing file must be the device's
					 current image (the same file), its
					 virtual size the device's */

struct stg_snapshot {
	char *path;                  /* the overlay (owned) */
	bool created;                /* create or prepare made it: abort removes it */
	bool made;                   /* made_dev/made_ino known (created only) */
	uint64_t made_dev, made_ino; /* the file made: abort removes that one only */
	bool early;                  /* stg_snapshot_create filled it: prepare
					only flushes and checks again */
	unsigned flags;              /* create's @flags (prepare must get the same) */
	void *priv;                  /* the open overlay, between the steps */
};

/* Step 0, optional: the slow part of prepare, before the drained section,
 * from any thread while the device keeps serving requests (requests may be
 * in flight and submitted on the loop thread meanwhile; the caller makes
 * sure that no other snapshot, close or resize of @dev runs until prepare
 * or abort). Reads only dev->path, dev->size, dev->flags, dev->ops and the
 * backend's image_fd, and changes nothing of @dev (but its flush-failed
 * flag, below):
 *   - a new overlay is created unnamed in @path's directory (O_TMPFILE),
 *     made durable, then linked to @path without replacing anything
 *     (-EEXIST when @path exists, also when it appeared meanwhile) and the
 *     directory synced, so that a kill or power cut at any point never
 *     leaves a partial file at @path, nor anything else; without O_TMPFILE
 *     (above) under a temporary name, renamed (".NAME.XXXXXX", which may
 *     then stay behind; its name says whose it is);
 *   - STG_SNAP_EXISTING: the file at @path is checked and made durable;
 *   - the overlay is opened and checked (as prepare does);
 *   - the data the device has written so far is pushed to the disk
 *     (fdatasync of the image's file through a descriptor of its own, the
 *     backend's image_fd reopened through /proc/self/fd, so that a
 *     writeback error it takes is still reported to the device's own
 *     descriptor at its next flush; under the POSIX lock fallback or
 *     without /proc the writeback is only started, sync_file_range; no
 *     cache of the device is touched), so that prepare's flush, in the
 *     drained section, has only what was written since; in rounds while
 *     they take long and shrink (at most 4); not at all for an O_DIRECT
 *     device, whose data no page cache holds. When that fails,
 *     create fails and so does every later flush of the device (-EIO, as
 *     after a failed flush request; stg_note_flush_failed).
 * The error cases are prepare's (except -EBUSY for requests in flight).
 * Returns 0 (@snap holds the open overlay: call stg_snapshot_prepare with
 * the same @path and @flags, else -EINVAL, or stg_snapshot_abort, from any
 * thread) or -errno with @err (@snap released, nothing created left at
 * @path). */
int stg_snapshot_create(struct stg_dev *dev, const char *path, unsigned flags,
			struct stg_snapshot *snap, struct ut_err *err);

/* Step 1 (see above). @snap is zeroed (= { 0 }, or released by commit or
 * abort) or holds an overlay from stg_snapshot_create (snap->early): then
 * prepare flushes the device and checks that overlay again (the same file
 * still at @path, and still fitting the image: -EINVAL otherwise, as for
 * a @path or @flags that are not create's); nothing is created. Else @snap
 * is filled. Commit or abort releases what it holds. On failure nothing is
 * removed: when @snap holds an overlay file that create or this prepare
 * made (snap->created), it still holds it, at @path (open, unless opening
 * it failed): the caller calls stg_snapshot_abort (the file removed) or
 * stg_snapshot_keep (the file left); else @snap is released already
 * (abort and keep harmless).
 * Returns 0 or -errno: -EEXIST when the file exists
 * and STG_SNAP_EXISTING is not given (checked first, and again by the
 * no-replace rename), -EROFS for a read-only device,
 * -ENOTSUP for a backend without snapshots, -EBUSY with requests in
 * flight, -EINVAL for an existing file that does not fit, -EBUSY when it
 * is in use, the flush's, creation's (-ENOENT: no such directory) or
 * open's error. */
int stg_snapshot_prepare(struct stg_dev *dev, const char *path, unsigned flags,
			 struct stg_snapshot *snap, struct ut_err *err);

/* Step 2. Returns 0 (the device writes the overlay; @snap released) or
 * -errno (the device unchanged, the overlay's file kept at its name and
 * @snap holding it: call stg_snapshot_abort or stg_snapshot_keep). */
int stg_snapshot_commit(struct stg_dev *dev, struct stg_snapshot *snap, struct ut_err *err);

/* Undo a create or a prepare (or a failed prepare or commit) and release
 * @snap: the overlay closed, and the file create or prepare made removed
 * if the file at its name is still that one (st_dev/st_ino); an existing
 * one (STG_SNAP_EXISTING) is left. It touches nothing of @dev: after a
 * create alone, or a failed prepare or commit, it may run on any thread.
 * Harmless on a zeroed or released @snap. */
void stg_snapshot_abort(struct stg_dev *dev, struct stg_snapshot *snap);

/* As stg_snapshot_abort, but the file stays at its name, whoever made it:
 * after a failed prepare or commit, when something names the overlay that
 * could not be undone (core/snapshot.c: the catalog's record). The file is
 * a complete, durable overlay of the device's image with nothing written
 * to it (unless the file at its name was replaced since: that one is left
 * as it is either way). Harmless on a zeroed or released @snap. */
void stg_snapshot_keep(struct stg_dev *dev, struct stg_snapshot *snap);

#endif
