/* cow/lock.h — image locking compatible with QEMU's (block/file-posix.c).
 *
 * Contract: an image file opened through cow/ or storage/ carries byte-range
 * locks that tell other processes (cowvm, qemu-system, qemu-img, qemu-io,
 * qemu-storage-daemon) what it does with the file and what it tolerates, so
 * two writers never share an image and a disk in use by a VM is not modified
 * underneath it.
 *
 * The scheme is QEMU's. Permissions (QEMU >= 6.2 numbering):
 *     0 consistent-read   1 write   2 write-unchanged   3 resize
 * (QEMU <= 6.1 also had 4 graph-mod; cowvm neither holds it nor refuses to
 * share it, like current QEMU.) An opener locks byte 100+i for each
 * permission i it HOLDS and byte 200+i for each permission it does NOT SHARE,
 * always with a shared (F_RDLCK) lock, on its own open file description
 * (F_OFD_SETLK; POSIX F_SETLK on kernels without OFD locks). It then tests
 * (F_OFD_GETLK with F_WRLCK) the bytes of the other side: to hold permission
 * i nobody else may lock 200+i, to refuse sharing i nobody else may lock
 * 100+i. Locking before testing makes two racing openers both fail rather
 * than both succeed.
 *
 * Modes (what QEMU does for the same kind of open):
 *   COW_LOCK_WRITE   a writable image (a VM's disk, the target of commit,
 *                    rebase, convert, check --repair, bench -w): holds
 *                    consistent-read, write, resize; shares consistent-read
 *                    and write-unchanged (locks 100 101 103 201 203).
 *   COW_LOCK_SHARED  a read-only image and every backing layer: holds
 *                    consistent-read; shares consistent-read and
 *                    write-unchanged, i.e. refuses writers (locks 100 201 203).
 * So any number of readers (and VMs sharing a backing file) coexist; a
 * writer excludes every other opener that locks; --force-share opens take
 * and test no lock at all (qemu-img -U).
 *
 * Locks belong to the open file description: opening the same file again in
 * the same process gives a second description that conflicts like another
 * process would (cow/ and storage/ never lock one file twice; see cow_lock_path
 * for callers that must). Closing another fd of the file does not drop OFD
 * locks; with the POSIX fallback it does (all of the process's locks on that
 * file), which is why the fallback is best-effort only (the test hook
 * COWVM_LOCK_POSIX=1 in the environment forces it). Filesystems that do
 * not support locking (ENOLCK, EOPNOTSUPP) are opened without locks.
 */
#ifndef COW_LOCK_H
#define COW_LOCK_H

#include <stdbool.h>

#include "util/err.h"

enum cow_lock_mode {
	COW_LOCK_NONE = 0,       /* take and test nothing (force-share) */
	COW_LOCK_SHARED,         /* read-only opener / backing layer */
	COW_LOCK_WRITE,          /* the one writer */
};

/* QEMU's lock byte offsets and permission bits. */
#define COW_LOCK_PERM_BASE    100
#define COW_LOCK_SHARED_BASE  200
#define COW_PERM_CONSISTENT_READ 0
#define COW_PERM_WRITE           1
#define COW_PERM_WRITE_UNCHANGED 2
#define COW_PERM_RESIZE          3
#define COW_PERM_COUNT           4

/* Lock the open file @fd (of @path, for messages) for @mode: lock our bytes,
 * then test the other side's. Returns 1 when locks are now held, 0 when
 * nothing was locked (COW_LOCK_NONE, or the filesystem does not support
 * locks), or a negative errno: -EBUSY on a conflict, with @err saying
 * "unable to open 'PATH': image is in use (WHO)" (callers that offer a
 * force-share option add the hint). On failure no byte stays
 * locked by this call. Calling it again on the same fd with the same mode is
 * harmless (re-asserts the locks, e.g. after another fd of the file was
 * closed under the POSIX fallback). A conflict is retried for up to the
 * time cow_lock_set_wait gave (default: not at all). */
int cow_lock_fd(int fd, const char *path, enum cow_lock_mode mode, struct ut_err *err);

/* Process-wide: retry a conflicting lock for up to @ms milliseconds (every
 * 10 ms) before cow_lock_fd fails with -EBUSY. For starting a VM: a VMM
 * that has just died (kill -9) keeps its image's locks until the kernel
 * finishes the I/O it had in flight (its io_uring holds the file open), a
 * few milliseconds, and a supervisor restarting it at once would otherwise
 * be told the image is in use. 0 (the default) fails at once, as QEMU does. */
void cow_lock_set_wait(unsigned ms);

/* Is the POSIX fallback in use (the test hook, or a kernel without OFD
 * locks seen by a lock operation)? Then closing any descriptor of a locked
 * file drops every lock of this process on it: code that would open and
 * close a second descriptor of a file locked elsewhere in the process
 * must not (storage/snapshot.c). Any thread. */
bool cow_lock_posix(void);

/* Drop every lock byte (100..104, 200..204) held by @fd's description.
 * Call before close() when cow_lock_fd returned 1 (an io_uring or a forked
 * child may still reference the description after this process's close). */
void cow_unlock_fd(int fd);

/* Turn the COW_LOCK_WRITE locks of @fd's description into COW_LOCK_SHARED
 * ones without a moment unlocked (an image that becomes a backing layer,
 * cow_overlay_attach): bytes 100 (consistent-read), 201 and 203 (write and
 * resize not shared) stay locked, and only the bytes the shared mode does
 * not hold (101 write, 102, 103 resize) are released. Re-locking with
 * cow_lock_fd(COW_LOCK_SHARED) would not do it: it locks and tests its
 * own bytes and drops none. Other openers may then take shared locks
 * (readers, QEMU with the file as a backing layer); writers stay refused.
 * No-op on an fd holding no locks. Returns 0 or -errno (the locks held
 * are then unchanged or, at worst, fewer write bytes: never none). */
int cow_lock_downgrade(int fd);

/* For callers that change a file without keeping it open through cow/ for
 * the whole time (image create, convert's destination, check --repair):
 * open @path (O_RDONLY; with @create, O_CREAT an empty file if none exists),
 * lock it for @mode and return the fd in *fd (close it to release; -1 when
 * @path does not exist and !@create). The caller must then open the file
 * through cow/ with COW_O_NO_LOCK, since its own lock fd would conflict.
 * Returns 0 or a negative errno with @err filled. */
int cow_lock_path(const char *path, enum cow_lock_mode mode, bool create, int *fd,
		  struct ut_err *err);

/* Which lock bytes another open file description holds on @fd's file:
 * bit i of *perm = byte 100+i is locked, of *unshared = byte 200+i.
 * For tests and diagnostics. 0 or -errno. */
int cow_lock_probe(int fd, unsigned *perm, unsigned *unshared);

#endif
