/* cow/cow.h — qcow2 version 3 (and 2) images: the public API of cow/.
 *
 * cow/ reads and writes the qcow2 format specified in QEMU's
 * docs/interop/qcow2.rst. It knows nothing of VMs or of storage/: it works on
 * file descriptors with pread/pwrite/fdatasync, synchronously. storage/qcow2.c
 * wraps it as a block-device backend, issuing the data writes of allocating
 * writes itself, asynchronously, through the step API (cow_write_step /
 * cow_write_commit below).
 *
 * A struct cow_img is one open layer (qcow2 or raw) plus, owned by it, the
 * layers below it (its backing chain). Only the top layer can ever be
 * writable; backing layers are opened O_RDONLY, except a former top layer
 * that an external snapshot put under a new overlay (cow_overlay_attach),
 * which keeps its fd and is read-only in cow/ (I7).
 *
 * Supported: versions 2 and 3; cluster sizes 512 B .. 2 MiB; refcount widths
 * 1..64 bits (read and written); zero clusters; compressed clusters (deflate
 * and zstd, read and written); backing chains of any depth (COW_MAX_CHAIN);
 * lazy_refcounts images (read; written with eager refcounts, the dirty bit is
 * repaired on open for writing); images with internal snapshots (the active
 * L1 is read and written; tables and clusters a snapshot shares are copied
 * before they change, I16; snapshots are made, applied and deleted on
 * version 3 images, snapshot.c; a version 3 image with snapshots may be
 * resized, I14); extended L2
 * entries (32 subclusters per cluster, cluster size >= 16 KiB; read and
 * written: a partial write into a cluster allocates only the subclusters it
 * touches, so a fresh overlay needs no copy-on-write of the rest);
 * persistent dirty bitmaps (maintained as QEMU does: every change of guest
 * data recorded in each enabled bitmap, stored consistent at close, I18).
 * Refused with a clear message: external data files, encryption, unknown
 * incompatible feature bits.
 *
 * ---------------------------------------------------------------------------
 * Invariants (hold on disk after every completed cow_* call and after a crash
 * at any instant, i.e. `qemu-img check` finds no corruption; leaks allowed):
 *
 * Metadata is cached writeback: allocation, free, zero and discard change
 * refcount blocks and L2 tables in the caches (and L1 / refcount-table
 * entries in memory) only; nothing is synced per request. A dirty table is
 * written when it is evicted or at cow_flush (guest flush, stg_flush,
 * cow_close), and every write of a table waits for what it depends on:
 *
 *     data + refcount blocks --> refcount-table entries --> L2 tables --> L1
 *
 * where "A --> B" means B is written only after A has been written and an
 * fdatasync has completed since (img->unsynced records whether any write
 * happened since the last fdatasync, so a dependency costs at most one
 * fdatasync and none when nothing is outstanding). cow_flush writes
 * everything in that order and ends with an fdatasync. After an fdatasync
 * fails, every later one fails too, with EIO (img->sync_err, cow_sync): Linux
 * reports a writeback error once, so nothing that depends on the data may
 * be written after it; a failed pwrite (ENOSPC) leaves what it was for
 * dirty in the caches, for a later flush.
 *
 *  I1. Every cluster referenced by the header, L1, L2, refcount table or a
 *      refcount block has a durable refcount >= its number of references.
 *      (Allocation increments a refcount in the refcount-block cache. Before
 *      any L2 table is written, l2_deps runs cow_rc_flush (every dirty
 *      refcount block written, then, if refcount-table entries are pending
 *      (I9), an fdatasync and those entries) and then an fdatasync. L1
 *      entries are written only after the same steps (cow_meta_writeback
 *      starts with l2_deps). An evicted refcount block is written without a
 *      sync: it only ever holds increments or decrements already allowed by
 *      I4 or I17.)
 *  I2. An L2 entry reaches the disk only after the data of the cluster it
 *      points to is durable: the data is written before the allocating call
 *      returns, the entry changes only in the cache, and the fdatasync of I1
 *      precedes every L2 write.
 *  I3. An L1 entry is written only after the L2 table it points to is
 *      durable: cow_meta_writeback writes the dirty L2 tables, then
 *      fdatasyncs if anything (including a table written by an eviction) was
 *      written since the last fdatasync, then writes the dirty L1 chunks.
 *  I4. A refcount is decremented only after every reference to the cluster
 *      has been durably removed (frees are queued in img->pending and applied
 *      at the end of cow_meta_writeback, after the L2/L1 writes are synced;
 *      more than 4096 queued frees force a cow_meta_writeback).
 *      A freed cluster is never reused before its decrement is applied.
 *      (A cluster that never had a reference is freed at once: I17.)
 *  I5. A refcount-table switch (growth) writes the new table and new refcount
 *      blocks, syncs, then rewrites the 12 header bytes at offset 48 in one
 *      write, syncs, and only then queues the old table for freeing. The new
 *      table includes the entries of I9 that were still pending.
 *  I6. Clusters with refcount 1 carry QCOW_OFLAG_COPIED in their L1/L2 entry;
 *      compressed entries never do. A cluster whose entry lacks COPIED is never
 *      written in place (it is copied first).
 *  I7. No write ever reaches a backing layer or an image opened read-only
 *      (their fds are O_RDONLY; a former top layer that an external
 *      snapshot made a backing layer, cow_overlay_attach, keeps its O_RDWR
 *      fd, since reopening it would conflict with its own lock, but is
 *      img->ro from then on: cow_data_writable refuses every data change,
 *      cow_flush and cow_sync skip it, and it was flushed and its
 *      preallocation trimmed before, so cow_close writes nothing either).
 *  I8. Every offset read from disk is validated (alignment, inside the file,
 *      not overlapping the header / L1 / refcount table) before it is used,
 *      and every cluster allocated (cow_check_new, as QEMU's default
 *      overlap-check=cached) also against every L2 table the active L1
 *      names and every refcount block the refcount table names (cached or
 *      not; both walks skipped for clusters past the last of them,
 *      img->named_end, where allocations at the end of the file go), the
 *      snapshot table, every snapshot's L1 table, the bitmap directory
 *      and every bitmap table and data cluster (a damaged refcount of 0
 *      on any of them; their ranges are loaded
 *      once at a writable open, img->meta, sorted, and searched by binary
 *      search), and so is every data cluster a write goes to in place
 *      (cow_check_write_off: a damaged L2 entry with COPIED pointing into
 *      the snapshot tables, the bitmap directory or a cached table; QEMU
 *      checks every data write); a new refcount block and a moved refcount
 *      table with its new blocks get the same check before they are written
 *      (cow_check_new_rc: they go at the end of the file, where only a
 *      damaged entry naming a table past the end can be, which would read
 *      the new structure as its own);
 *      a violation is an error naming the file and the problem ("overlaps
 *      the snapshot table", "overlaps a snapshot L1 table"), and, on a
 *      writable image, sets the corrupt bit (cow_mark_corrupt).
 *  I9. A new refcount block is written, unsynced, when it is created (so
 *      the file covers it); its refcount-table entry is set in memory and
 *      queued (img->rt_dirty). cow_rc_flush writes dirty blocks, then
 *      fdatasyncs, then writes the queued entries, so a table entry never
 *      points to a block that is not durable. A single new block
 *      (create_block) describes itself (its own refcount is 1); the blocks
 *      an allocation of a block's worth of clusters or more needs
 *      (cow_alloc_contig, place_blocks) are placed together just before it
 *      and get their refcounts (1) once all of them exist, each in the
 *      block of the range it lies in: cow_rc_flush writes the table entry
 *      of a block described by another new one only after that one's entry
 *      is durable (an fdatasync between), so a cut never leaves a table
 *      entry to a block whose refcount no durable block holds.
 *  I10. (Standard L2 entries.) Copy-on-write of a partial write reads the old content of the
 *      cluster in one read and writes the new cluster (head, middle, tail)
 *      in one write. When a single partial cluster is allocated wholly
 *      beyond the end of the file and its old content is zero, only the
 *      new bytes are written: the rest of the cluster is a hole or lies
 *      past the end of the file (less than one cluster, which both cow/
 *      and `qemu-img check` accept) and reads as zeros.
 *  I11. (Extended L2 entries.) A subcluster bitmap never marks a subcluster
 *      both allocated and zero, never marks one allocated without a host
 *      cluster, and is 0 for a compressed cluster (checked on every use,
 *      I8). A subcluster's allocation bit is set only in the cache, after
 *      its data is written (I2); a partially written subcluster that held
 *      no data is completed from its old content (zeros or the chain) in
 *      the same write. A compressed or shared cluster is copied whole.
 *  I12. Preallocation (prealloc.c) never changes what the file reads as.
 *      When cow_alloc_contig places clusters at the end of the
 *      file past img->prealloc_end, and the last 8 such allocations are
 *      written whole (write.c clears img->alloc_partial: no partial I10
 *      write, no subclusters, which would leave holes),
 *      cow_prealloc reserves the blocks up to a chunk beyond them (1/8 of
 *      the file, 1..128 MiB, 1 MiB aligned) with
 *      fallocate(FALLOC_FL_KEEP_SIZE). It also keeps st_size a chunk past
 *      every allocation at the end, dense or not (ftruncate: a hole,
 *      img->size_end), so no data write of a new cluster extends the file
 *      (file systems serialise direct writes that do, and a buffered one
 *      changes the inode each time). img->file_size keeps meaning the end of what was written
 *      (I8 checks and the I10 shortcut are unchanged: reserved blocks and
 *      the sized-ahead hole read as zeros like the area past the end), and
 *      nothing refers to the area past the last cluster. cow_close of
 *      a writable image that reserved anything calls cow_prealloc_trim
 *      after the flush: ftruncate to the file's own size (frees the blocks
 *      past the end), or with a size set ahead to the end of the last
 *      cluster allocated (max(end_cluster, file_size): every byte written,
 *      also by storage/'s in-place writes, is below it), then
 *      FALLOC_FL_PUNCH_HOLE on the reserved extents
 *      below the end that were never written (FIEMAP "unwritten", e.g. the
 *      rest of a partially written cluster), which read as zeros before
 *      and after: only from the lowest offset fallocate reserved since
 *      open (img->prealloc_start, when img->prealloc_reserved; the size
 *      set ahead reserves nothing), since unwritten extents below it are
 *      the image's own (made with preallocation=falloc) and stay
 *      (cow_grow_prealloc trims every reservation before it allocates
 *      its area, reserves nothing for it and extends file_size over it,
 *      so a later reservation starts past it). A crash at any instant therefore leaves the file as it
 *      would be without preallocation plus unused blocks (past its end,
 *      and unwritten parts of clusters), which only cost disk space, and
 *      a sparse tail of free clusters inside the file
 *      (refcount 0: cow_alloc_clusters reuses them; the I10 shortcut does
 *      not apply below file_size, which then includes the tail). Clusters
 *      at the end freed after a failed data write (I17) are such a free
 *      tail too: below end_cluster, so the trim keeps them in the file. No
 *      fallocate (EOPNOTSUPP, a block device, COWVM_COW_PREALLOC=0): no
 *      reservation; a transient failure (ENOSPC): this write goes
 *      unreserved.
 *  I13. A cluster is allocated only while its refcount is 0. Below
 *      img->end_cluster cow_alloc_clusters reads the refcounts; from
 *      end_cluster on, cow_alloc_contig and a refcount-table move take the
 *      first run of clusters whose refcounts are 0 (free_run, refcount.c):
 *      a file that ends before clusters its refcounts hold (truncated,
 *      damaged) never gives them a second owner. A single new refcount
 *      block is placed inside the range it describes, where all refcounts
 *      are 0; for a run of n >= a block's worth of clusters
 *      cow_alloc_contig places the m blocks the ranges of the run lack at
 *      the start of a free run of m + n clusters (placing each at the
 *      start of its own range left no run of n clusters after it: with
 *      refcount_bits=64 a 32 KiB write of 512-byte clusters looped until
 *      the refcount table was too large).
 *  I14. Growing (cow_grow, resize.c): a larger L1 table is written whole to
 *      new clusters and made durable with their refcounts (cow_flush)
 *      before the header's l1_size and l1_table_offset (12 bytes at offset
 *      36, one write) point to it; the old table is freed after that write
 *      is synced (I4); every cluster the active L1 maps past the old last
 *      cluster up to the new size is released (cow_discard, under I16: a
 *      snapshot's VM state that loadvm or `qemu-img snapshot -a` left in
 *      the active L1 past the end of the disk loses only the active
 *      reference and never becomes disk content); over a backing file
 *      longer than the old size the new area is made zero clusters
 *      (cow_write_zeroes); all of it is flushed, and the header's size is
 *      written last, after an fdatasync, so the L1 table always covers the
 *      size on disk and the new area never shows the backing file's data
 *      or a VM state. With preallocation (cow_grow_prealloc, resize.c
 *      prealloc_area) the new area's clusters are allocated (refcounts in
 *      the cache), filled (a hole, reserved or zeros, cow_prealloc_fill)
 *      and only then named by L2 entries in the cache, so the same flush
 *      writes refcounts, then L2 tables, then L1 (I1-I3) before the size;
 *      a failure before an entry names a cluster frees it (I17), a crash
 *      leaves at worst leaks past the old size. A failure returned before
 *      the size write after clusters were named (a later run of a large
 *      area, an L2 table, the bitmaps or the flush failing) releases the
 *      area again (resize.c undo_area: cow_discard of it, I4 and I15,
 *      cow_flush, the emptied L2 tables dropped as a shrink drops them,
 *      refcount blocks past the old end counting nothing but themselves
 *      dropped, and those placed for the runs (their table entries zeroed
 *      and synced before their own refcounts are decremented), the file
 *      cut after its last cluster with a refcount), so the image is as
 *      before but for the grown L1 table; a failure of that undo
 *      leaves the area mapped past the old size (the next grow releases
 *      it) or leaked. Internal snapshots keep their L1 tables and their
 *      own disk sizes (v3 extra data; a snapshot entry without one, or a
 *      v2 image with snapshots, is refused). Shrinking (cow_shrink)
 *      releases the clusters past the new end the same way (the partial
 *      last cluster is kept, as by QEMU), cow_flush, then writes the size:
 *      a crash leaves the old size (its tail perhaps partly released:
 *      reading zeros or the backing file) or the new one; snapshots keep
 *      theirs. Then, as QEMU: L1 entries past the new end zeroed (synced)
 *      before their emptied L2 tables are freed; refcount blocks counting
 *      only themselves dropped from the refcount table (synced); last, all
 *      durable, the file cut after the last cluster with a refcount
 *      (in a shrink the emptied L2 tables are dropped before the size
 *      write, which reads the same). With
 *      COW_O_KEEP_BITMAPS persistent bitmaps are marked in use (synced)
 *      before anything else; their tables for the new size and a new
 *      directory are written and flushed before the size, and the
 *      header's directory offset switched after it (old ones freed
 *      after, I4). A failure returned before the size write makes them
 *      consistent again at the old size (flags cleared; in a shrink,
 *      whose released tail they did not record, every bit of the tail
 *      set); after it, or after a crash, they may stay in use, which QEMU
 *      reports as inconsistent (bitmaps.c, per step; a returned error
 *      after which they are says "stay marked in use"). Such an open
 *      changes no guest data outside cow_grow/cow_shrink
 *      (cow_data_writable: -EPERM). A raw file is cut with ftruncate.
 *  I15. Host clusters freed by a discard (cow_discard) are punched out of
 *      the file
 *      (FALLOC_FL_PUNCH_HOLE | KEEP_SIZE) when cow_apply_pending brings
 *      their refcount to 0, i.e. after every reference is durably gone
 *      (I4); a crash before the refcount block is written leaves a leaked
 *      cluster that reads zeros, referenced by nothing. As QEMU's discard
 *      passthrough: the space goes back to the host file system. The same
 *      for a write-zeroes that may unmap (COW_ZERO_MAY_UNMAP). Other frees
 *      (a cluster copied on write, a compressed or shared cluster a
 *      write-zeroes without unmap releases) are not punched: the next
 *      allocation reuses the cluster, blocks and all. A write-zeroes
 *      without unmap keeps the host cluster of a cluster that owns one
 *      (zero flag or all-zero subclusters, offset kept), as QEMU does.
 *  I16. Internal snapshots (QEMU's scheme): a snapshot holds one reference
 *      to each L2 table and each data cluster its L1 table reaches, so a
 *      table or cluster the active L1 shares with a snapshot has refcount
 *      > 1 and its active L1/L2 entry lacks COPIED. Nothing reached through
 *      an entry without COPIED is ever changed in place: the first change
 *      under a shared L2 table copies it (l2_unshare, from cow_l2_get with
 *      alloc) into a new cluster, with COPIED set in the copy exactly where
 *      the cluster's refcount is 1; the L1 entry then points to the copy
 *      (I1-I3 order) and only after that is durable is the old table's
 *      refcount decremented (I4). A shared data cluster is written by
 *      copy-on-write into a new cluster and then released (a decrement,
 *      I4); discarding or zeroing it only drops the active reference. So
 *      no byte a snapshot reads ever changes, and a crash at any instant
 *      leaves at worst a leak. In-place mapping for the asynchronous path
 *      (cow_map_inplace) requires COPIED in both the L1 and the L2 entry.
 *      The copied table leaves the L2 cache (its cluster is free when a
 *      stale flag left its refcount at 1). Growing (I14) changes neither
 *      a snapshot's L1 table nor its recorded disk size, and releases the
 *      active references past the old end the same way (a shared L2
 *      table copied, shared clusters only losing the active reference).
 *      An image whose snapshot table
 *      does not parse (cow_get_snapshots) is not opened for writing: what
 *      its snapshots hold could not be counted by a refcount repair. The
 *      snapshot table and the snapshots' L1 tables are written only by
 *      snapshot.c (a new table or L1 copy in new clusters, switched to by
 *      one header write; never in place), and an allocation that would land on one of them (its refcount
 *      damaged to 0) is refused and marks the image corrupt (I8), so a
 *      damaged refcount cannot turn a snapshot's table into data.
 *  I17. An allocation that nothing references is undone at once (as QEMU's
 *      qcow2_alloc_cluster_abort). The clusters an allocating write takes
 *      (cow_alloc_clusters: refcount 1, in the refcount-block cache) get a
 *      reference only when cow_write_commit sets their L2 entries, after
 *      the data write succeeded (I2). When that write fails (ENOSPC, EFBIG,
 *      EIO, maybe after writing part of its bytes), or a fill read or the
 *      commit fails before the entries are set, cow_write_abort
 *      (cow_free_unlinked) decrements their refcounts at once, and they are
 *      reusable at once (free_hint): no L2 or L1 entry, in a cache or on
 *      disk, ever pointed to them, so I4's wait for a durable removal has
 *      nothing to wait for and nobody can read them through an old entry.
 *      The same for the references a compressed write took (only those:
 *      a cluster packed with earlier compressed data keeps theirs; both
 *      clusters of one whose bytes continued into the next host cluster,
 *      write.c comp_place, which packs them only into a cluster allocated
 *      right after the open one, each touched cluster holding one
 *      reference per compressed cluster in it) and for
 *      a new L2 table whose first write failed (l2_install). Never freed:
 *      a host cluster the guest cluster already owned (in place, a
 *      subcluster write into it, a zero cluster's kept cluster:
 *      st->nalloc is 0 for those). The increment may already be on disk
 *      (an evicted refcount block): the decrement reaches the disk with the
 *      next write of that block, a crash before leaves a leak as before,
 *      and a reuse increments again before any L2 write (I1), so a durable
 *      reference never lacks its refcount. img->end_cluster stays where it
 *      is: the clusters become a free part of the file below it (as after
 *      any free), so cow_alloc_contig, free_run's known-free run (only
 *      above end_cluster) and I12's bookkeeping (prealloc_end, size_end,
 *      the trim to max(end_cluster, file_size) at close) need no change.
 *      I10: a failed write may have left bytes in such a cluster past
 *      img->file_size (a short write before EFBIG; a write storage/ issues
 *      advances file_size only at its commit); if the shortcut later
 *      reused the cluster it would write only the new bytes and the stale
 *      ones would show through. cow_free_unlinked therefore advances
 *      file_size over the clusters it frees, so the shortcut never applies
 *      below their end and a reuse writes the cluster whole (one
 *      assignment; a hole punch may be unsupported or fail). file_size may
 *      then exceed st_size: that part reads as zeros, like the area past
 *      the end, and nothing references it; after a reopen file_size is
 *      st_size, which covers every byte that reached the file. A failed
 *      write of a new refcount block or of a refcount-table switch leaves
 *      its clusters free the same way and advances file_size over them too
 *      (refcount.c cover_failed). storage/'s engine merges adjacent writes
 *      and fails every write of a merged one that fails: each is undone,
 *      though some of its bytes may be on disk. A refcount block that
 *      cannot be read back during the undo (evicted since, EIO) gets the
 *      decrement through the free queue instead (applied after the next
 *      write-back's fdatasync, I4). A refcount-table growth or a set of
 *      new refcount blocks (place_blocks) that fails before the header or
 *      table entry names them sets the refcounts it took back to 0 and
 *      forgets the blocks' table entries (in memory only until then).
 *      Leaks that remain possible (`check --repair leaks` removes them):
 *      a crash, a failed fdatasync (nothing more is written, so queued
 *      frees (I4) and the L2 entries of written data never reach the
 *      disk; a growth whose header write was not synced keeps both
 *      tables), a refcount block that cannot be read back to undo a
 *      growth's counts, a failed queue (no memory).
 *  I18. (Persistent dirty bitmaps, bitmaps.c.) A bitmap is never
 *      consistent (flag bit 0 "in use" clear) on disk while the guest data
 *      differs from what it describes: a writable open marks every
 *      bitmap in use, in place and synced (cow_bitmaps_mark_in_use),
 *      before anything else is written; every entry point that changes
 *      guest data (cow_check_range with write, cow_write_step,
 *      cow_map_inplace) first sets the covering bits of every enabled
 *      bitmap loaded at open (img->bm, in memory; cow_bitmaps_dirty) and,
 *      when they were stored consistent since (cow_overlay_check), marks
 *      them in use again, synced, before the change. A store
 *      (cow_bitmaps_store: cow_close, cow_overlay_check) writes the data
 *      clusters, tables and a new directory with the flags cleared to new
 *      clusters and flushes everything (data, metadata, their refcounts)
 *      before the header extension's directory offset names them (one
 *      8-byte write, synced); the old directory, tables and data are
 *      freed after that (I4), only clusters with refcount 1 outside the
 *      core tables. So a crash leaves either bitmaps in use (perhaps leaked
 *      new clusters) or consistent ones covering every durable change. A
 *      bitmap in use at open, or one that cannot be loaded, stays in use;
 *      a refcount repair at open sets every bit of the enabled ones (it
 *      may change what the guest reads without saying where). Tracking
 *      that ends or cannot begin (no memory) leaves them in use and is
 *      recorded (cow_bitmaps_problem; cow_close returns it). Clusters of
 *      the old bitmaps are freed after the switch only once each, when
 *      their refcount equals the old references to them and they are no
 *      other metadata nor named by the new bitmaps (bitmaps.c
 *      bm_free_old: a damaged image leaks them instead, recorded, and
 *      so does one marked corrupt in the open, whose damage may be a
 *      guest data cluster a bitmap names; one the guest never wrote is
 *      not detected and is freed, as by QEMU); a
 *      directory whose structures share a cluster or lie over a core
 *      table is not used at all (cow_bm_load_dir). A resize without COW_O_KEEP_BITMAPS (their tables stay
 *      in use on disk throughout) resizes the tracked bitmaps in memory
 *      after its size write, as QEMU does, its own data changes not
 *      recorded; a failed shrink that kept the old size records its
 *      released tail; one whose size write may have reached the file ends
 *      the tracking. Edits
 *      (bitmap-ops.c: cow_bitmap_add, _remove, _clear, _set_enabled,
 *      _merge; `cowvm image bitmap`) change the set in memory only and
 *      are written by the same store: a new directory without the removed
 *      entries (also one in use: it is only left out) and with the added
 *      ones, new tables for what changed, durable before the switch; with
 *      the count or size of the directory changed the switch writes the
 *      extension's count, size and offset (24 bytes in place, inside one
 *      512-byte sector) or, for the first bitmap and the last, the whole
 *      header (bitmaps.c bm_hdr_switch: autoclear bit 0 cleared in place,
 *      synced; the header with the extension added or dropped, synced;
 *      the bit set again in place when bitmaps remain, synced: a write
 *      torn at a sector never mixes two extension lists under a set bit);
 *      the removed bitmaps' clusters are freed after it like any old ones
 *      (bm_free_old). A crash leaves the old set (in use as marked at
 *      open; new clusters leaked), the new one (old clusters leaked) or,
 *      between the steps of a header rewrite, no valid bitmap (QEMU warns
 *      that a program without bitmap support changed the file; leaks). A
 *      header rewrite that a power cut tears can still break a backing
 *      file name, which follows the extensions and moves with them, as
 *      for QEMU's own header updates and cow_set_backing. Unchanged
 *      elsewhere: COW_O_KEEP_BITMAPS (I14), header-only opens (nothing
 *      marked), read-only opens (nothing written).
 *
 * Cluster states and the function for each transition (guest view of one
 * cluster of the top layer):
 *
 *        UNALLOCATED --cow_write (write_at)     --> NORMAL(COPIED)
 *        UNALLOCATED --cow_write_zeroes (set_l2)------> ZERO
 *        ZERO       --cow_write (write_at)     ---> NORMAL(COPIED)
 *        COMPRESSED --cow_write (copy, free old)------> NORMAL(COPIED)
 *        NORMAL(!COPIED) --cow_write (copy, free old)-> NORMAL(COPIED)
 *                (the old cluster keeps the snapshots' references, I16)
 *        NORMAL(COPIED)  --cow_write------------------> NORMAL(COPIED) in place
 *        any --cow_discard-----------> UNALLOCATED (no backing) / ZERO (backing)
 *        any --cow_write_zeroes------> ZERO (v3) / explicit zeros (v2)
 *        NORMAL(COPIED) --cow_write_zeroes, no unmap--> ZERO with its host
 *                cluster kept --cow_write (step_alloc, reuse)--> NORMAL(COPIED)
 *                in that host cluster, written whole (the rest zeros)
 *        UNALLOCATED --cow_write_compressed-----------> COMPRESSED
 *        any --cow_write / cow_write_compressed whose data write fails
 *                (cow_write_abort)--> unchanged; the host clusters it
 *                took FREE at once (I17)
 * With extended L2 entries each subcluster of a cluster is UNALLOCATED, ZERO
 * or NORMAL on its own:
 *        UNALLOCATED/ZERO subcluster --cow_write (write_sub; the cluster gets a
 *                host cluster on its first write)--> NORMAL
 *        NORMAL subcluster --cow_write (write_sub, in place)--> NORMAL
 *        any subcluster --cow_write_zeroes (zero_in_cluster)--> ZERO
 *        whole cluster --cow_discard / cow_write_zeroes (set_range)--> all
 *                UNALLOCATED / all ZERO, host cluster released (kept by a
 *                write-zeroes without unmap, and written in place later)
 *
 * Metadata states of a cached L2 table / refcount block, and who moves them:
 *        CLEAN --modify (set_entry / rc_set)--> DIRTY
 *        DIRTY --eviction or cow_meta_writeback, after its dependencies
 *                (l2_deps for an L2 table)--> WRITTEN (on disk, maybe not
 *                durable; the cache entry is clean again)
 *        WRITTEN --next fdatasync (a later dependency or cow_flush)--> DURABLE
 *        NONE --cow_l2_get with alloc: a new table, written (zeros) at
 *                once, before any L1 entry on disk points to it (it refers
 *                to nothing), so that its write-backs rewrite blocks that
 *                exist (a full file system refuses only new blocks)--> DIRTY;
 *                when that first write fails the table is dropped, the
 *                L1 entry keeps its old value and the cluster is FREE at
 *                once (I17)
 *        DIRTY --a write that fails (ENOSPC, EIO)--> DIRTY: nothing is
 *                dropped; an eviction that cannot write its victim evicts
 *                the least recently used clean table instead, or with none
 *                lets the cache grow past its capacity, so reads never
 *                depend on a write; the next flush writes it
 * of an L1 entry / a refcount-table entry (kept in memory):
 *        SET --cow_meta_writeback after the L2 table is DURABLE--> WRITTEN
 *        SET (img->rt_dirty) --cow_rc_flush after the block is DURABLE,
 *                or grow_rt--> WRITTEN
 * and of an L2 table shared with an internal snapshot (I16):
 *        SHARED (L1 entry without COPIED) --first change under it (cow_l2_get
 *                with alloc: l2_unshare)--> a COPY, DIRTY, L1 entry SET with
 *                COPIED, the old table out of the cache and its reference
 *                PENDING --cow_meta_writeback--> the snapshot's alone (FREE
 *                when no snapshot held it: a stale flag)
 * and of a freed cluster:
 *        REFERENCED --release_entry (cow_free_later)--> PENDING --cow_meta_writeback--> FREE
 *                (discarded: FREE and punched, cow_apply_pending, I15)
 *        FREE --cow_alloc_clusters--> ALLOCATED (refcount 1 in the cache, no
 *                entry) --data write succeeds (cow_write_commit)--> REFERENCED
 *        ALLOCATED --data write fails (cow_write_abort, cow_free_unlinked;
 *                cow_write_compressed; l2_install)--> FREE at once, file_size
 *                past it (I17)
 * and of the host blocks past the end of the file (I12):
 *        NONE --cow_alloc_contig (cow_prealloc, fallocate KEEP_SIZE)--> RESERVED
 *        RESERVED --pwrite of an allocated cluster--> part of the file (data)
 *        RESERVED --cow_close (cow_prealloc_trim, ftruncate)--> NONE
 *        RESERVED inside the file, never written --cow_close (punch)--> hole
 *        RESERVED --crash--> RESERVED (outside the file; freed by the next
 *                close of a writable open that reserved)
 *        NONE --cow_alloc_contig (cow_prealloc: size_ahead,
 *                ftruncate)--> SIZED (a hole inside st_size)
 *        SIZED --cow_close (cow_prealloc_trim, ftruncate)--> NONE
 *        SIZED --crash--> free clusters inside the file
 * and of the L1 table when the image grows (resize.c):
 *        OLD --grow_l1 (new clusters written, cow_flush; header bytes 36..47,
 *                sync)--> NEW, old clusters PENDING --release_new_area
 *                (entries past the old end released, I16)--> --cow_grow
 *                (size at 24, after cow_flush)--> the new size
 *        (preallocated) the new area's runs ALLOCATED, named in the cache
 *                --a failure before the size write (undo_area: released,
 *                cow_flush, emptied L2 tables, the refcount blocks of the
 *                new area and the file's free tail dropped)--> the old
 *                size, nothing mapped past it
 * and of the persistent bitmaps of a resize (COW_O_KEEP_BITMAPS, bitmaps.c):
 *        CONSISTENT --_begin (flags set in place, sync)--> IN USE
 *        IN USE --_prepare (new tables and directory written, cow_flush;
 *                then the size write and its sync)--> IN USE, NEW PREPARED
 *                --_commit (header's directory offset, sync; old ones
 *                freed)--> CONSISTENT at the new size
 *        IN USE (a failure before the size write) --_abort (flags cleared;
 *                a shrink: new tables with the tail's bits set, switched
 *                to)--> CONSISTENT at the old size
 *        IN USE (a failure after the size write, or a crash) --> stays IN
 *                USE (QEMU: inconsistent; `qemu-img bitmap --remove`)
 and of the persistent bitmaps of any other writable open (bitmaps.c, I18):
 *        CONSISTENT --cow_bitmaps_open_rw (loaded into img->bm; flags set
 *                in place, sync)--> IN USE, TRACKED
 *        IN USE, TRACKED --cow_bitmaps_dirty (every change of guest data,
 *                in memory)--> IN USE, TRACKED
 *        IN USE, TRACKED --cow_bitmaps_store (cow_close, cow_overlay_check:
 *                new clusters, cow_flush; directory offset, sync; old ones
 *                freed)--> CONSISTENT, TRACKED --cow_bitmaps_dirty (flags
 *                set again, sync, before the change)--> IN USE, TRACKED
 *        IN USE, TRACKED --cow_grow/cow_shrink (cow_bitmaps_resize_begin,
 *                _commit: resized in memory)--> IN USE, TRACKED
 *        IN USE, TRACKED --a refcount repair at open (every bit of the
 *                enabled ones set)--> IN USE, TRACKED
 *        IN USE, TRACKED --a failed store, a crash, a resize failing after
 *                its size write, no memory for a chunk (the last two
 *                recorded: cow_bitmaps_problem, cow_close's result)--> IN USE
 *        IN USE at open (QEMU: inconsistent), or damaged (structures
 *                sharing a cluster, a table that does not fit: recorded)
 *                --> IN USE
 *        TRACKED or IN USE at open --cow_bitmap_remove (in memory: the
 *                entry in t->gone)--> GONE --cow_bitmaps_store (left out of
 *                the new directory; after the switch its clusters
 *                PENDING, I4)--> none
 *        none --cow_bitmap_add (in memory, all clear, "fresh")--> NEW
 *                --cow_bitmaps_store (appended to the new directory; the
 *                first bitmap: the header rewritten with the extension)
 *                --> CONSISTENT, TRACKED
 *        IN USE, TRACKED --cow_bitmap_clear / _set_enabled / _merge (in
 *                memory; a disabled one's data loaded first)--> IN USE,
 *                TRACKED (stored with a new table and flags at close)
 *        any edit --cow_bitmap_edit_end(keep false)--> the set as at
 *                cow_bitmap_edit_begin
 and of an image that gets an external snapshot's overlay (overlay.c):
 *        TOP (writable, write lock) --cow_overlay_check (checks; cow_flush
 *                or fdatasync; cow_prealloc_trim)--> TOP, durable (a failure:
 *                TOP, writable, nothing changed)
 *        TOP, durable --cow_overlay_attach (lock bytes 101 and 103 released,
 *                cow_lock_downgrade; img->ro; the overlay's backing)-->
 *                BACKING (shared lock, read-only for good, I7)
 * ---------------------------------------------------------------------------
 */
#ifndef COW_COW_H
#define COW_COW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "util/buf.h"
#include "util/err.h"

#define COW_MAX_CHAIN 4096

/* open flags */
#define COW_O_RDONLY      (1u << 0)
#define COW_O_NO_BACKING  (1u << 1)  /* open only this layer (check, fuzzing) */
#define COW_O_DIRECT      (1u << 2)  /* O_DIRECT on the top layer (cache=none) */
#define COW_O_NO_REPAIR   (1u << 3)  /* do not rebuild refcounts of a dirty image */
#define COW_O_NO_LOCK     (1u << 4)  /* take and test no image locks, whole chain
					(--force-share; or the caller holds them, cow/lock.h) */
#define COW_O_HEADER_ONLY (1u << 5)  /* writable for cow_set_backing only: data
					writes and growing are refused (-EROFS),
					and the autoclear bits are kept (nothing
					changes that persistent bitmaps describe) */
#define COW_O_KEEP_BITMAPS (1u << 6) /* writable for cow_grow/cow_shrink only
					(`cowvm image resize`): persistent bitmaps
					are not marked in use at open; the resize
					resizes them as QEMU does (bitmaps.c);
					every other change of guest data (write,
					write-zeroes, discard, compressed write,
					write step, in-place mapping, backing
					file) is refused with -EPERM */
/* cow_open_snapshot only: */
#define COW_O_SNAP_IMAGE_SIZE (1u << 7) /* the image's size, not the snapshot's */
#define COW_O_SNAP_ID_OR_NAME (1u << 8) /* @snap_id is an ID, else a name */

enum cow_fmt { COW_FMT_RAW = 0, COW_FMT_QCOW2 = 1 };

enum cow_comp { COW_COMP_ZLIB = 0, COW_COMP_ZSTD = 1 };

struct cow_img;

/* What cow_create allocates for the data (qemu-img's preallocation=). */
enum cow_prealloc_mode {
	COW_PREALLOC_OFF = 0,        /* nothing: clusters are allocated as written */
	COW_PREALLOC_METADATA,       /* every L2 table and every data cluster
	                                allocated (refcount 1, COPIED), the data
	                                area a hole in the file */
	COW_PREALLOC_FALLOC,         /* and the data area's blocks reserved
	                                (posix_fallocate) */
	COW_PREALLOC_FULL,           /* and the data area written with zeros */
};

struct cow_create_opts {
	uint64_t size;               /* virtual size in bytes (0: the backing's size) */
	uint32_t cluster_size;       /* 0: 65536 */
	const char *backing;         /* NULL: none; stored as given */
	const char *backing_fmt;     /* NULL: probed from the backing file */
	enum cow_comp compression;
	int version;                 /* 0: 3 */
	uint32_t refcount_bits;      /* 0: 16 */
	bool lazy_refcounts;
	bool extended_l2;            /* 128-bit L2 entries, 32 subclusters per cluster
	                                (version 3, cluster size >= 16 KiB) */
	enum cow_prealloc_mode preallocation;
	                             /* with a backing file only with extended L2
	                                entries: a preallocated cluster's
	                                subclusters are all unallocated, so it
	                                reads through to the backing file until
	                                written (QEMU's rule); without extended
	                                L2 a preallocated cluster reads as its
	                                host cluster, which is zeros */
	bool backing_open;           /* the caller has the backing file open and
	                                gives size and backing_fmt: it is not
	                                opened (a second descriptor closed would
	                                drop the caller's locks under the POSIX
	                                fallback, cow/lock.h) */
};

/* Create @path as an empty qcow2 image (truncating an existing file).
 * With a backing file and size 0 the size is the backing's. With
 * o->preallocation the file is laid out header, refcount table, refcount
 * blocks, L1 table, every L2 table, then the data clusters in guest order
 * (one contiguous run: cluster i of the disk at a fixed host offset), and
 * the image reads exactly as one without preallocation. The header is
 * written last, after an fdatasync of everything else, so a file cut
 * short by a crash is no image at all. Returns 0 or -errno with @err
 * naming the file and the problem. */
int cow_create(const char *path, const struct cow_create_opts *o, struct ut_err *err);

/* Open @path and, unless COW_O_NO_BACKING, its backing chain. @fmt NULL probes
 * ("qcow2" if the magic matches, else "raw"), otherwise "qcow2" or "raw".
 * Every layer is locked like QEMU locks it (cow/lock.h): the top layer for
 * writing unless COW_O_RDONLY, backing layers shared; a conflict with another
 * opener fails with -EBUSY ("image is in use"). COW_O_NO_LOCK skips locking.
 * With COW_O_DIRECT the top layer (read-only or writable) is opened O_DIRECT
 * and all of its I/O, data and metadata, bypasses the page cache (QEMU's
 * cache=none): requests that are not aligned to the file's direct-I/O
 * alignment (statx STATX_DIOALIGN; BLKSSZGET or 4096 when not reported) go
 * through an aligned bounce buffer, unaligned writes as read-modify-write of
 * the partial blocks. Durability is unchanged: a write is durable only after
 * cow_flush (fdatasync), as without it. Backing layers stay buffered. A file
 * system without real O_DIRECT (tmpfs, or one reporting no support) is
 * refused: "unable to open 'x': the file system does not support O_DIRECT
 * (cache=none)". On success *out is owned by the caller (cow_close). */
int cow_open(const char *path, const char *fmt, unsigned flags, struct cow_img **out,
	     struct ut_err *err);

/* Open @path (qcow2; @fmt and @flags as cow_open's) at its internal
 * snapshot named as QEMU's bdrv_snapshot_load_tmp names it (qemu-img
 * convert -l): @snap_id and @snap_name (either may be NULL, not both;
 * both given: a snapshot with that ID and that name), or with
 * COW_O_SNAP_ID_OR_NAME @snap_id alone (@snap_name NULL) taken as an ID
 * and, when no snapshot has it, as a name (bdrv_snapshot_load_tmp_by_id_or
 * _name). The first matching entry of the snapshot table is used. @flags
 * must include COW_O_RDONLY (else -EROFS): such an open is read-only, so
 * every write, write-zeroes, discard, resize, backing-file change and
 * bitmap edit is refused (-EROFS) as for any read-only open, and nothing is
 * ever written to the file. The layer reads through the snapshot's L1 table
 * (its offset and size from its table entry, checked before it is read:
 * cluster-aligned, past the header, inside the file, at most 32 MiB);
 * the active L1 is never used. Its virtual size (cow_size) is the
 * snapshot's disk size (the v3 extra data's disk_size, bytes 8..15 of it,
 * when the extra data holds it, else the image's current size, as QEMU
 * takes it), in whole sectors; with COW_O_SNAP_IMAGE_SIZE it is the image's
 * current size instead, as QEMU 7.2's qemu-img convert -l and qemu-nbd -l
 * give it (bdrv_snapshot_load_tmp keeps the size): a larger one reads past
 * the snapshot's L1 table as unallocated in this layer (the backing chain
 * shows, or zeros). In both modes the snapshot's VM state, which lies from
 * the first L1 entry past its disk size on, is never read as guest data:
 * those L1 entries read as unallocated (QEMU 7.2 would show a VM state
 * there with the image's size larger). The backing chain is the image's
 * own (opened as by cow_open). cow_block_status and cow_read describe and
 * read the snapshot; cow_get_info, cow_get_snapshots and cow_get_bitmaps
 * still describe the image's header. On success *out is the caller's
 * (cow_close). Errors, with @err naming the file: -ENOENT "'x': no
 * snapshot with ID '1' and name 'a'" (or "ID or name 'a'"), -ENOTSUP a
 * raw image ("has no internal snapshots"), -EINVAL a damaged snapshot
 * table or L1 table, -EFBIG an L1 table over 32 MiB, and cow_open's. */
int cow_open_snapshot(const char *path, const char *fmt, unsigned flags, const char *snap_id,
		      const char *snap_name, struct cow_img **out, struct ut_err *err);

/* Flush (if writable) and free everything, including the backing chain.
 * A writable qcow2 image first stores the persistent bitmaps it tracks
 * (consistent again, I18). Returns 0 or the store's or the flush's error
 * (after a failed store the bitmaps stay in use), or, when tracking ended
 * or could not begin (cow_bitmaps_problem: no memory, a resize that
 * failed after its size write), that error: bitmaps consistent at open
 * stay in use. @img may be NULL. */
int cow_close(struct cow_img *img);
/* cow_close, and in @msg (@size bytes; 0: not wanted) the message of
 * what failed, else of the problem with the persistent bitmaps recorded
 * in this open, the store at close included (cow_bitmaps_problem), else
 * "". For callers that report a close (storage/qcow2.c). */
int cow_close_msg(struct cow_img *img, char *msg, size_t size);

/* Guest-view I/O on the top layer. Ranges must lie inside the virtual size.
 * Return 0 or -errno (with @err filled when non-NULL). */
int cow_read(struct cow_img *img, void *buf, uint64_t len, uint64_t off, struct ut_err *err);
int cow_write(struct cow_img *img, const void *buf, uint64_t len, uint64_t off,
	      struct ut_err *err);
int cow_readv(struct cow_img *img, const struct iovec *iov, int iovcnt, uint64_t off,
	      struct ut_err *err);
int cow_writev(struct cow_img *img, const struct iovec *iov, int iovcnt, uint64_t off,
	       struct ut_err *err);
/* cow_write_zeroes flags: the space of the range may be given back (as a
 * discard does); without it, clusters that have a host cluster of their own
 * keep it (virtio-blk's write-zeroes "unmap" bit; QEMU's MAY_UNMAP). */
#define COW_ZERO_MAY_UNMAP (1u << 0)
/* The fallocate mode of step @step of zeroing a raw file's range: with
 * @unmap a hole (PUNCH_HOLE), else ZERO_RANGE, which keeps the blocks;
 * step 1, where step 0's mode is not supported, the other one; step 2,
 * after a hole made for a request without unmap, allocation again (best
 * effort). -1: no such step. Used by cow_write_zeroes on raw layers and
 * by storage/raw.c for a VM's raw disk. */
int cow_zero_fmode(bool unmap, unsigned step);
/* Make [off, off+len) read as zeros: whole clusters become zero clusters
 * (v3; a cluster that owns a host cluster keeps it unless @flags has
 * COW_ZERO_MAY_UNMAP, in which case it is freed and punched as by
 * cow_discard, I15; compressed and shared ones are always released), the
 * partial ends get explicit zeros (with extended L2, whole subclusters
 * become zero subclusters). Raw images get a hole (with
 * COW_ZERO_MAY_UNMAP) or FALLOC_FL_ZERO_RANGE (cow_zero_fmode), explicit
 * zeros where the file system has neither; v2 images with a backing file
 * get explicit zeros. 0 or -errno with @err set. */
int cow_write_zeroes(struct cow_img *img, uint64_t len, uint64_t off, unsigned flags,
		     struct ut_err *err);
/* Release whole clusters in the range (they read as zeros afterwards; with
 * @unmap_to_backing they read from the backing file instead). Partial
 * clusters are left alone. */
int cow_discard(struct cow_img *img, uint64_t len, uint64_t off, bool unmap_to_backing,
		struct ut_err *err);
/* Write whole clusters compressed (off and len cluster-aligned, or len reaching
 * the end of the disk). Clusters that do not compress are stored normally.
 * Compressed clusters are packed one after the other at byte granularity
 * (sectors on disk), crossing into the next host cluster when it is
 * allocated right after (as QEMU packs them). The clusters of one call are
 * compressed on up to cow_set_compress_threads threads; they are placed in
 * order, so the image is the same whatever the thread count. */
int cow_write_compressed(struct cow_img *img, const void *buf, uint64_t len, uint64_t off,
			 struct ut_err *err);
#define COW_COMPRESS_THREADS_MAX 16
/* Compress the clusters of each cow_write_compressed call on up to @n
 * threads (1..COW_COMPRESS_THREADS_MAX; 0 means 1, the default: only the
 * calling thread). Only the compressing is threaded: the image itself is
 * touched by the calling thread alone. 0, or -EINVAL for a bad @n. */
int cow_set_compress_threads(struct cow_img *img, unsigned n);
/* Writes in steps, for callers that issue the data I/O themselves
 * (storage/qcow2.c, asynchronously): cow_write_step prepares the first part
 * of a write of @len bytes at guest offset @off — allocating clusters in the
 * refcount cache and reading copy-on-write fills — and describes the host
 * write to issue: @st->iov (iovcnt entries, referencing @data, which must
 * stay valid) at @st->host on cow_layer_fd(img), covering @st->len guest
 * bytes. After that write has completed, cow_write_commit points the L2
 * entries at it (in the cache; I2) and releases the step. On a failed host
 * write (or one never issued) call cow_write_abort instead: it frees the
 * clusters the step allocated (I17) and releases the step. Set
 * @st->want_bounce before cow_write_step when several steps may be in
 * flight at once (each then owns its fill buffer). Steps whose guest
 * clusters overlap must not be in flight together: the caller serialises
 * them (and reads of those clusters) until the commit. */
enum { COW_STEP_INPLACE = 0, COW_STEP_SUBCLUSTERS, COW_STEP_CLUSTERS };
struct cow_wstep {
	bool want_bounce;            /* in: own fill buffer (async callers) */
	uint64_t len;                /* guest bytes covered */
	uint64_t host;               /* host offset of the write */
	struct iovec iov[4];
	int iovcnt;
	int kind;                    /* COW_STEP_*: what the commit does */
	uint64_t vcl, k;             /* guest clusters that change at commit */
	uint64_t cl_host, mask;      /* host cluster; subcluster mask */
	uint64_t nalloc;             /* clusters from cl_host this step allocated
					(0: in place, or a host cluster the entry
					already owns): freed by cow_write_abort */
	uint8_t *bounce;             /* owned fill buffer or NULL */
};
int cow_write_step(struct cow_img *img, const void *data, uint64_t len, uint64_t off,
		   struct cow_wstep *st, struct ut_err *err);
/* Host bytes the step writes (the sum of its vectors). */
static inline uint64_t cow_wstep_bytes(const struct cow_wstep *st)
{
	uint64_t n = 0;

	for (int i = 0; i < st->iovcnt; i++)
		n += st->iov[i].iov_len;
	return n;
}
int cow_write_commit(struct cow_img *img, struct cow_wstep *st, struct ut_err *err);
/* Issue the host write of a prepared step through cow/'s own I/O (which
 * bounces requests O_DIRECT cannot take), synchronously. Returns 0 or
 * -errno; the step stays prepared (commit or abort it). */
int cow_write_issue(struct cow_img *img, struct cow_wstep *st, struct ut_err *err);
/* The host write of a prepared step failed, possibly after writing part of
 * its bytes (ENOSPC, EFBIG, EIO), or was never issued: undo the step
 * instead of committing it. The clusters it allocated (st->nalloc at
 * st->cl_host; never a host cluster the guest cluster already owned) are
 * freed at once, reusable by the next allocation (I17); the L2 entries are
 * unchanged, so the guest range reads as before the write. Releases the
 * step. Returns 0, or -errno (@err set when not NULL) when a refcount
 * could not be updated: those clusters leak, which check repairs. */
int cow_write_abort(struct cow_img *img, struct cow_wstep *st, struct ut_err *err);
/* Release a step's buffers without committing or undoing anything (a
 * step that allocated nothing, or once commit/abort no longer can). */
void cow_wstep_release(struct cow_wstep *st);

/* Make every completed write and all metadata durable. */
int cow_flush(struct cow_img *img, struct ut_err *err);

/* Allocation status of the run starting at @off in the top layer. */
enum cow_status { COW_ST_UNALLOC = 0, COW_ST_ZERO, COW_ST_DATA, COW_ST_COMPRESSED };
struct cow_extent {
	uint64_t off, len;       /* guest range */
	enum cow_status st;      /* in the layer named by depth */
	int depth;               /* 0 = top layer; -1 = beyond the chain (reads zero) */
	int end_depth;           /* depth -1: the layer where the search ended, as
				    qemu-img map counts it (the bottom layer, or
				    the one whose backing file ends before off) */
	uint64_t host_off;       /* COW_ST_DATA: host offset in that layer;
				    COW_ST_ZERO: that of a zero cluster that keeps
				    its host cluster, or (depth -1) of the host
				    cluster of unallocated subclusters in the
				    layer where the search ended, else 0 */
	const struct cow_img *layer;   /* (depth -1: where the search ended) */
};
/* Describe the longest run at @off (at most @len bytes) with one status.
 * With @follow the chain is searched for unallocated clusters. */
int cow_block_status(struct cow_img *img, uint64_t off, uint64_t len, bool follow,
		     struct cow_extent *ext, struct ut_err *err);
/* As cow_block_status, searching only the top @layers layers (>= 1;
 * UINT_MAX: the whole chain): a run none of them holds is COW_ST_UNALLOC
 * with depth @layers (the first layer not searched); a run past the end of
 * the file below a searched layer (that layer's backing file, the first
 * one not searched included) reads zeros: COW_ST_ZERO, depth -1, end_depth
 * that layer. Of the layers not searched only the first one's size is
 * looked at, nothing is read (their metadata may be changing: image
 * commit writes one of them through another handle). */
int cow_block_status_above(struct cow_img *img, uint64_t off, uint64_t len, unsigned layers,
			   struct cow_extent *ext, struct ut_err *err);

/* Does @img (a layer; qcow2) look made with preallocation=metadata, as
 * QEMU's qcow2_detect_metadata_preallocation decides it (its block status
 * then asks the file system whether a data cluster's host range is a hole,
 * which reads as zeros)? Yes when the clusters with a nonzero refcount are
 * at least max(n * 10 / 9, n + 2), n the clusters' worth of bytes the file
 * has on disk (st_blocks). *out (false for raw); 0 or -errno with @err
 * (prealloc.c). */
int cow_prealloc_detect(struct cow_img *img, bool *out, struct ut_err *err);

/* For callers doing their own data I/O (storage/qcow2.c): the host fd of a
 * layer (data extents from cow_block_status refer to it; never write to a
 * layer other than the top one). */
int cow_layer_fd(const struct cow_img *layer);
/* Direct-I/O alignment of a layer's fd: returns 1 when it is O_DIRECT (then
 * I/O on cow_layer_fd must use buffers aligned to *mem_align and offsets and
 * lengths, of each vector, aligned to *off_align), 0 when it is buffered
 * (both set to 1). */
int cow_layer_dio_align(const struct cow_img *layer, uint32_t *mem_align, uint32_t *off_align);
/* May [pos, pos+len) of @iov (@n vectors) be read or written at host
 * offset @host with I/O of one's own on cow_layer_fd(@layer)? Always on a
 * buffered fd; on an O_DIRECT one (cache=none) only when @host, @len and
 * every vector's address and length in the range meet its alignment (the
 * file system's, from statx); others must go through cow/, which bounces
 * them. */
bool cow_layer_dio_ok(const struct cow_img *layer, const struct iovec *iov, int n, uint64_t pos,
		      uint64_t len, uint64_t host);

/* Length *n (0 if none) of the run at @off (at most @len bytes) that can be
 * written in place: allocated, refcount 1, contiguous on the host from
 * *host. Writes into such a run change no metadata. */
int cow_map_inplace(struct cow_img *img, uint64_t off, uint64_t len, uint64_t *host,
		    uint64_t *n, struct ut_err *err);

struct cow_info {
	const char *path;
	enum cow_fmt fmt;
	uint64_t size;
	uint64_t actual_size;
	uint32_t cluster_size;       /* 0 for raw */
	int version;
	uint32_t refcount_bits;
	enum cow_comp compression;
	bool lazy_refcounts, dirty, corrupt, read_only;
	bool extended_l2;            /* subclusters (extended L2 entries) */
	uint32_t nb_snapshots;
	const char *backing;         /* as stored in the header, NULL if none */
	const char *backing_fmt;     /* NULL if not stored */
	const char *backing_path;    /* resolved path, NULL if none (also set when
					opened with COW_O_NO_BACKING) */
	int chain_depth;             /* layers opened: 1 for an image with no
					backing or opened with COW_O_NO_BACKING */
};
void cow_get_info(const struct cow_img *img, struct cow_info *info);

/* The internal snapshots of a qcow2 layer, as qemu-img info lists them. */
struct cow_snapshot_info {
	char *id, *name;
	uint64_t vm_state_size;
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t icount;             /* UINT64_MAX: not recorded */
};
/* *out (an array of *n, NULL when none; free with cow_free_snapshots) read
 * from the snapshot table. 0 or -errno with @err naming the file and the
 * problem (an entry past the end of the file, too much extra data). */
int cow_get_snapshots(struct cow_img *img, struct cow_snapshot_info **out, uint32_t *n,
		      struct ut_err *err);
void cow_free_snapshots(struct cow_snapshot_info *s, uint32_t n);

/* ---- snapshot.c: internal snapshots (qemu-img snapshot -c / -a / -d) ----
 * @img: the top layer of a qcow2 version 3 image opened for writing
 * (neither COW_O_HEADER_ONLY nor COW_O_KEEP_BITMAPS; its backing chain is
 * not needed). Each call flushes @img first and is durable when it
 * returns. The tables it will walk are read and checked before anything
 * is written: bad input is refused with nothing changed. From the first
 * refcount change until everything is durable the image carries the dirty
 * bit, so a crash or a failure half way leaves it for the next writable
 * open (QEMU's or cowvm's) to repair; the switch itself is one header
 * write (snapshot.c, I16). 0, or -errno with @err naming the file and the
 * problem.
 *
 * cow_snapshot_create: a snapshot of the active image named @name (at
 * most 255 bytes; names may repeat, as in QEMU), with the next free
 * numeric ID, the current time, no VM state, and the current disk size.
 * -ERANGE when a refcount would overflow (refcount_bits 1 holds no
 * snapshot).
 * cow_snapshot_apply: the active image becomes snapshot @sn (an ID, else
 * a name, as qemu-img snapshot -a finds it; -ENOENT when none), its disk
 * size included; every enabled persistent bitmap records the whole disk
 * as changed. A size change with persistent bitmaps is refused
 * (-ENOTSUP).
 * cow_snapshot_delete: the first snapshot named @sn (a name only, as
 * qemu-img snapshot -d finds it; -ENOENT when none) removed and the
 * clusters only it held freed (punched). */
int cow_snapshot_create(struct cow_img *img, const char *name, struct ut_err *err);
int cow_snapshot_apply(struct cow_img *img, const char *sn, struct ut_err *err);
int cow_snapshot_delete(struct cow_img *img, const char *sn, struct ut_err *err);

/* The persistent dirty bitmaps of a qcow2 layer (none while autoclear bit 0
 * is clear: a program that does not maintain them wrote the image). */
#define COW_BITMAP_IN_USE (1u << 0)
#define COW_BITMAP_AUTO   (1u << 1)
struct cow_bitmap_info {
	char *name;
	uint32_t flags;              /* COW_BITMAP_* and others, as stored */
	uint64_t granularity;        /* bytes */
};
/* As cow_get_snapshots, from the bitmap directory. */
int cow_get_bitmaps(struct cow_img *img, struct cow_bitmap_info **out, uint32_t *n,
		    struct ut_err *err);
void cow_free_bitmaps(struct cow_bitmap_info *b, uint32_t n);

/* ---- measure.c: the size a qcow2 image needs (qemu-img measure) ---- */
/* *@out: the bytes of metadata of a fully allocated version 3 image of
 * @size bytes (0 for @cluster_size / @refcount_bits: 65536 / 16): the
 * header cluster, an L2 table for every cluster, the L1 table and the
 * refcount table and blocks that count all of them and the data, in whole
 * clusters. A fully allocated image is this plus @size rounded up to
 * clusters; one holding D bytes of data clusters needs this plus D (an
 * upper bound: cow_create and the writes lay out no more). 0, or -EFBIG
 * with @err for a size cow_create refuses (its L1 table over 32 MiB). */
int cow_measure_meta(uint64_t size, uint32_t cluster_size, uint32_t refcount_bits, bool extended_l2,
		     uint64_t *out, struct ut_err *err);
/* The bytes @n persistent bitmaps @b of an image of @size bytes take in an
 * image of @cluster_size clusters, all of their data allocated: data and
 * table clusters, and the directory. */
uint64_t cow_measure_bitmaps(uint64_t size, uint32_t cluster_size, const struct cow_bitmap_info *b,
			     uint32_t n);
/* A problem with @img's persistent bitmaps that no call returned as its
 * error (only cow_close, see below, reports one): 0 when none, else its
 * -errno with @err naming the file and the problem. In a writable open:
 * tracking ended or could not begin for lack of memory (-ENOMEM), or a
 * resize failed after its size write (-EIO): bitmaps consistent at open
 * stay marked in use (QEMU: inconsistent), and cow_close returns this
 * error when nothing else failed; a bitmap that could not be loaded at
 * open (damaged: -EINVAL, -ENOTSUP; it stays in use, as it was for QEMU,
 * which would not open the image); clusters of the old bitmaps a store
 * left allocated because the image is damaged (-EUCLEAN: named twice, a
 * refcount other than the references, or also other metadata; a leak,
 * the bitmaps stored consistent). The first problem is kept, unless a
 * later one leaves bitmaps in use. */
int cow_bitmaps_problem(const struct cow_img *img, struct ut_err *err);
/* Editing the persistent bitmaps of @img, a writable qcow2 top layer
 * opened without COW_O_KEEP_BITMAPS or COW_O_HEADER_ONLY (bitmap-ops.c;
 * `cowvm image bitmap`, as QEMU 7.2's block-dirty-bitmap-* commands):
 * every edit changes the bitmaps in memory only; cow_close stores the new
 * set (cow_bitmaps_store, I18). cow_bitmap_edit_begin: 0, or -errno with
 * @err: read-only, raw, or bitmaps that could not be tracked for lack of
 * memory; after another problem found at open (cow_bitmaps_problem: a
 * damaged directory, a bitmap that cannot be loaded) every edit but
 * cow_bitmap_remove is refused with it (a removal leaves the rest as it
 * is and frees only what may be freed: a cluster another bitmap also
 * names stays). It keeps a copy
 * of the set, which cow_bitmap_edit_end(@keep false) puts back (the edits
 * since undone) or (@keep true) drops. Each edit: 0, or -errno with @err
 * naming the file and the bitmap, nothing changed:
 *   cow_bitmap_add: a new bitmap @name, all clear, granularity
 *     @granularity (a power of 2, 512 B .. 2 GiB), recording writes when
 *     @enabled; refused (as by QEMU) when the name is empty, exists
 *     (-EEXIST, in use or not), is longer than 1023 bytes, the image is
 *     version 2, the bitmap would exceed QEMU's size limits (-EFBIG), or
 *     65535 bitmaps or the 64 MiB directory are reached (-ENOSPC);
 *   cow_bitmap_remove: bitmap @name gone, also one in use ("inconsistent"
 *     for QEMU); its clusters are freed after the store's switch (those a
 *     damaged image names twice or that are other metadata leak);
 *   cow_bitmap_clear: every bit of @name clear;
 *   cow_bitmap_set_enabled: its "auto" flag (records writes or not);
 *   cow_bitmap_merge: the bits of bitmap @src (in @img when @src_img is
 *     NULL or @img, else in @src_img, opened read-only or not, of the same
 *     virtual size) ORed into @dst, any granularities (the bytes a set
 *     bit covers set at @dst's granularity).
 * Not found: -ENOENT; clear, enable, disable and merge refuse a bitmap in
 * use (-EINVAL "inconsistent", as QEMU refuses it). */
int cow_bitmap_edit_begin(struct cow_img *img, struct ut_err *err);
void cow_bitmap_edit_end(struct cow_img *img, bool keep);
int cow_bitmap_add(struct cow_img *img, const char *name, uint64_t granularity, bool enabled,
		   struct ut_err *err);
int cow_bitmap_remove(struct cow_img *img, const char *name, struct ut_err *err);
int cow_bitmap_clear(struct cow_img *img, const char *name, struct ut_err *err);
int cow_bitmap_set_enabled(struct cow_img *img, const char *name, bool enabled, struct ut_err *err);
int cow_bitmap_merge(struct cow_img *img, const char *dst, struct cow_img *src_img, const char *src,
		     struct ut_err *err);
/* The granularity QEMU gives a new bitmap by default: the cluster size,
 * at least 4 KiB and at most 64 KiB. */
uint64_t cow_bitmap_default_granularity(const struct cow_img *img);
/* The layer below @img (NULL at the bottom). */
struct cow_img *cow_backing(const struct cow_img *img);
uint64_t cow_size(const struct cow_img *img);
uint32_t cow_cluster_size(const struct cow_img *img);   /* 0 for raw */
enum cow_fmt cow_format(const struct cow_img *img);
const char *cow_path(const struct cow_img *img);

/* The path of backing file @name stored in the image at path @overlay,
 * resolved as QEMU resolves it: a relative name is relative to the
 * overlay's directory. Returns a malloc'ed string (the caller frees it), or
 * NULL when out of memory. */
char *cow_resolve_backing(const char *overlay, const char *name);

/* Grow @img (the top layer, writable) to @size bytes, not below its size
 * (equal: nothing to do). A raw regular file is extended to exactly @size
 * bytes (a hole; any length, as qemu-img resize sets it; cow_size rounds up
 * to whole sectors). A qcow2 image (@size a multiple of 512, at most
 * 2^56, and an L1 table of at most 32 MiB) gets a larger L1 table if it
 * needs one and then its new size, in the order of I14; the new area reads
 * as zeros, never as the backing file's data nor as anything the active L1
 * mapped past the old end (a snapshot's VM state). Internal snapshots
 * (version 3) keep their own tables and sizes; a version 2 image with
 * snapshots is refused. Persistent bitmaps as for cow_shrink. Shrinking
 * is refused (cow_shrink does it). Returns 0 or
 * -errno with @err naming the file and the problem (-EROFS read-only,
 * -ENOTSUP refused, -EINVAL a bad size, -EFBIG too large). */
int cow_grow(struct cow_img *img, uint64_t size, struct ut_err *err);

/* cow_grow with the new area preallocated as @mode asks (qemu-img resize
 * --preallocation; COW_PREALLOC_OFF is cow_grow). @size must be larger than
 * the image (-EINVAL "preallocation can only be used for growing images",
 * as qemu-img refuses it). A raw regular file gets [old end of file, @size)
 * reserved (falloc: fallocate) or written with zeros (full), synced,
 * before its new size; metadata is refused for raw (-ENOTSUP, as by
 * QEMU's file-posix). A qcow2 image, as QEMU 7.2's qcow2_co_truncate: the
 * partial cluster at the old end, unless it has a host cluster of its own
 * that it reads from the old end on, written with zeros from the old size
 * on (falloc, full: whole, its head as it read), then every cluster from
 * there to @size allocated in contiguous runs at the end of the file (2^20
 * clusters each, the refcount blocks a run needs just before it; refcount
 * 1, COPIED, new L2 tables as needed), the runs a hole (metadata), reserved
 * (falloc) or zeros (full); later writes there go in place and do not grow
 * the file. The new area still reads as zeros: over a backing file longer
 * than the old size, metadata makes the clusters zero clusters that keep
 * their host clusters, falloc and full leave them reading their host
 * clusters (extended L2: every subcluster allocated); elsewhere an extended
 * L2 entry's subclusters stay unallocated. No extended L2 entries are
 * needed with a backing file (unlike cow_create: the new area hides the
 * backing file anyway). Order of I14 (cow.h): refcounts, data, L2, L1 and
 * the size last. A failure before the size write (ENOSPC, EFBIG, a fill
 * refused, maybe in a later run after earlier ones were mapped) leaves
 * the old size and every guest byte as it read, and releases what was
 * allocated for the new area (I14: nothing past the old end stays mapped;
 * a leak only when the release itself fails too, which @err then adds).
 * Returns 0 or -errno with @err as cow_grow's: the file and the cause. */
int cow_grow_prealloc(struct cow_img *img, uint64_t size, enum cow_prealloc_mode mode,
		      struct ut_err *err);

/* Shrink @img (the top layer, writable) to @size bytes, 0 < @size < its
 * size (equal: nothing to do); the data past @size is lost. A raw regular
 * file is cut with ftruncate and synced (a raw block device is refused). A
 * qcow2 image (@size a multiple of 512) has every cluster past the end of
 * the cluster holding byte @size - 1 released from its active L1 (freed
 * clusters are punched, I15; clusters and L2 tables a snapshot shares
 * only lose the active reference, I16), then gets its new size, in the
 * order of I14, as QEMU 7.2's qcow2_co_truncate shrinks it: the L2 tables
 * past the new end freed (the L1 table keeps its size), refcount blocks
 * that count only themselves dropped, the file cut after its last used
 * cluster. Internal snapshots (version 3) keep their tables and sizes; a
 * version 2 image with snapshots is refused. Opened with
 * COW_O_KEEP_BITMAPS, persistent bitmaps are resized (one in use is
 * refused, as by QEMU); otherwise they are left in use. A failure
 * returned before the new size is written leaves them consistent with
 * the old size (I14); after it they stay in use. Returns 0 or -errno with
 * @err naming the file. */
int cow_shrink(struct cow_img *img, uint64_t size, struct ut_err *err);

/* Replace the backing file name stored in the header (no data is moved). */
int cow_set_backing(struct cow_img *img, const char *backing, const char *backing_fmt,
		    struct ut_err *err);

/* External snapshots (cow/overlay.c; storage/'s stg_snapshot_commit): the
 * writable top layer @img becomes the backing layer of @overlay, a qcow2
 * image opened for writing with COW_O_NO_BACKING, without being closed or
 * unlocked. Two calls, so that the caller can do its own fallible work in
 * between:
 * cow_overlay_check checks that @overlay is qcow2, writable, has no chain
 * open, has a backing file name that resolves to @img's file (st_dev and
 * st_ino of its fd), a stored backing format (if any) that is @img's, and
 * @img's virtual size; then makes @img durable (cow_flush; a raw layer
 * fdatasync), stores its tracked persistent bitmaps (cow_bitmaps_store,
 * I18) and releases its preallocated blocks (cow_prealloc_trim, as
 * cow_close does). 0, or -errno with @err naming the file and the problem;
 * both images then read as before and @img stays writable (its bitmaps
 * in use, or consistent and marked in use again by the next change).
 * cow_overlay_attach, after a successful check with nothing written to
 * @img since: cannot fail. @img's write lock becomes a backing layer's
 * shared lock (cow_lock_downgrade), @img is read-only for good (I7; every
 * write is refused as for any backing layer), and @overlay owns it as its
 * backing (cow_backing, chain depth + 1; cow_close closes it with the
 * overlay). The persistent bitmaps @img tracks are stored consistent by
 * cow_overlay_check, after its flush, as by cow_close (I18; a failure
 * fails the check); a change of @img after a check without attach marks
 * them in use again first. */
int cow_overlay_check(struct cow_img *overlay, struct cow_img *img, struct ut_err *err);

/* The checks of cow_overlay_check that concern the pair only, for a caller
 * that does not hold the image as a cow_img (storage/'s prepare, by name):
 * @overlay is qcow2, has a backing file name resolving to the file @img_st
 * describes (st_dev, st_ino), a stored backing format (if any) @img_fmt,
 * and the virtual size @img_size. @img_path names the image in messages.
 * Changes nothing but @overlay->backing_path (resolved if unset). 0, or
 * -errno with @err naming the overlay and what differs. */
struct stat;
int cow_overlay_match(struct cow_img *overlay, const char *img_path, const struct stat *img_st,
		      const char *img_fmt, uint64_t img_size, struct ut_err *err);
void cow_overlay_attach(struct cow_img *overlay, struct cow_img *img);

/* A raw layer over @fd, a raw file or block device (@path, for messages)
 * opened for writing outside cow/ (storage/raw.c without O_DIRECT), to
 * become a backing layer through cow_overlay_check/_attach. @locked: @fd
 * holds image locks (cow/lock.h). On success the layer owns @fd (cow_close
 * unlocks and closes it) unless cow_unwrap_fd gives it back; 0 or -errno
 * (the fd untouched). */
int cow_wrap_raw_fd(int fd, const char *path, bool locked, struct cow_img **out,
		    struct ut_err *err);
/* Free a layer made by cow_wrap_raw_fd and not attached, leaving its fd
 * open and locked (the caller's again). */
void cow_unwrap_fd(struct cow_img *img);

/* Has an fdatasync of @img failed (cow_sync: every later one fails with
 * EIO)? For callers that also sync @img's file outside cow/ (storage/raw.c
 * after a failed cow_overlay_check): the error is reported once. */
bool cow_sync_failed(const struct cow_img *img);

/* Probe: 1 when @buf (first bytes of a file) starts with the qcow2 magic. */
int cow_probe(const uint8_t *buf, size_t len);

/* Consistency check of one qcow2 layer (the backing chain is not opened). */
enum cow_repair { COW_REPAIR_NONE = 0, COW_REPAIR_LEAKS, COW_REPAIR_ALL };
struct cow_check_res {
	uint64_t corruptions, leaks;
	uint64_t corruptions_fixed, leaks_fixed;
	uint64_t allocated_clusters, total_clusters, compressed_clusters, fragmented_clusters;
	uint64_t shared_clusters;        /* clusters with more than one reference */
	uint64_t image_end_offset;
	struct ut_buf msgs;              /* one line per problem found (owned; release) */
};
/* Check @path; with @repair fix leaks (decrement refcounts) or everything
 * (rebuild the refcount structure, fix COPIED flags, make active L2 entries
 * that point at no data read as zeros, clear dirty/corrupt). Images that
 * qemu-img check opens and cow_open refuses (an L1 or refcount table over
 * the header or each other, a header length not a multiple of 8) are
 * checked and the damage counted as corruptions; a repair that cannot be
 * made safely (an L1 table over another table; a refcount table over the
 * header without COW_REPAIR_ALL) writes nothing and says so in res->msgs.
 * Returns 0 when the check ran (see res counts), -errno when it could not.
 * res->msgs belongs to the caller in both cases (ut_buf_release it). */
int cow_check(const char *path, enum cow_repair repair, struct cow_check_res *res,
	      struct ut_err *err);

#endif
