#!/bin/bash
# Power-cut test: what a crash of the whole machine (not just of the
# process, as kill -9 in qemu-img-crash.sh) may leave of an image, at 300
# points of a recorded run, in six configurations of cow/ (one of them a
# disk that grows, moving its L1 table; one with 64-bit refcounts, whose
# large allocations place refcount blocks together), four of the
# storage/ stack (cowio stgwrite: the same ops, asynchronous, 16 in flight
# on the worker-thread engine, finishing in any order), and on the storage/
# path driven by image bench (below). cowio crashwrite does
# 300 random tagged writes, write-zeroes and compressed writes with a flush
# every 1..8 ops, through cow/, under the LD_PRELOAD recorder
# (tests/helpers/shim/iolog.c), which logs every change to the image and
# every fdatasync (its start and its completion). For each cut,
# tests/helpers/powercut rebuilds the file a power cut there could leave:
# everything recorded before the start of the last completed fdatasync, and
# each later change kept, lost or torn at 4 KiB pages (512-byte sectors
# for direct writes), in any combination.
# Then:
#  - `qemu-img check` reports no corruption (leaks allowed);
#  - every write the writer was told was durable (its flush returned) reads
#    back intact; other sectors hold old data or data of an unflushed op
#    (cowio crashverify);
#  - every 30th cut, `cowvm image check --repair leaks` leaves no leaks.
# This is what kill -9 cannot test: the fdatasync barriers of cow.h I1-I5
# (refcounts before the L2 entries that use them, data before L2, L2 before
# L1); dropping the one before an L2 write fails it. On the storage/ stack,
# not counting its data writes (made outside cow/) before an L2 write, or
# letting two allocations of one cluster overlap, fails it too.
# POWERCUT_SEED (default: random, printed) reproduces a run.
# timeout: 540
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
need_powercut 0   # (CUTS unused: each configuration has its own count)
cow_tmpdir

total=0
run_cfg() {   # NAME CREATE-ARGS...
	local name=$1 cut rc
	shift
	rm -f img0.qcow2 img.qcow2 io.log log
	"$COWVM" image create img0.qcow2 "${SIZE:-16M}" "$@" >/dev/null || fail "create $name"
	cp img0.qcow2 img.qcow2
	: >log
	LD_PRELOAD="$SHIM" IOLOG_IMAGE="$PWD/img.qcow2" IOLOG_MARK="$PWD/log" IOLOG_OUT="$PWD/io.log" \
		"$COWIO" "${WRITER:-crashwrite}" img.qcow2 1 log 300 || fail "$name: recorded run failed"
	# the recording is complete: replaying all of it gives the file itself
	"$PC" io.log img0.qcow2 crash.qcow2 clog 0 999999999 >/dev/null || fail "$name: replay"
	cmp -s crash.qcow2 img.qcow2 || fail "$name: a full replay differs from the file written"
	cmp -s clog log || fail "$name: a full replay's marker log differs"
	for ((cut = 1; cut <= 300; cut++)); do
		"$PC" io.log img0.qcow2 crash.qcow2 clog $((SEED * 1000 + cut)) >pc.out || fail "$name: powercut"
		qemu-img check -q crash.qcow2 >check.out 2>&1
		rc=$?
		if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
			head -5 check.out
			fail "$name, cut $cut ($(cat pc.out)): qemu-img check exited $rc"
		fi
		rm -f base
		[ -z "${BASE0:-}" ] || cp "$BASE0" base   # what the backing file holds
		"$COWIO" crashverify crash.qcow2 1 clog base >verify.out 2>&1 || {
			head -5 verify.out
			fail "$name, cut $cut ($(cat pc.out)): data check"; }
		if ((cut % 30 == 0)); then
			"$COWVM" image check --repair leaks crash.qcow2 >repair.out ||
				{ cat repair.out; fail "$name, cut $cut: repair leaks"; }
			qcheck crash.qcow2
		fi
		total=$((total + 1))
	done
	echo "ok: $name: 300 cuts of a run with $(grep -c . log) flushes ($(wc -c <io.log) bytes recorded); last: $(cat pc.out)"
}
run_cfg "64 KiB clusters"
run_cfg "512-byte clusters" --cluster-size 512
# 64-bit refcounts: a refcount block describes 64 clusters, as many as an
# L2 table maps, so aligned 32 KiB writes allocate a block's worth and new
# refcount blocks are placed together before the data, each described by
# another new one (cow.h I9: its table entry only after that one's)
run_cfg "refcount_bits=64, 512-byte clusters" --cluster-size 512 --refcount-bits 64
run_cfg "extended L2" --extended-l2
# a disk that grows by 1 MiB every 40 ops (cow_grow, cow.h I14) from 4 MiB,
# the ops in its first 4 MiB: with 512-byte clusters every growth writes a
# new L1 table, switches the header to it and frees the old one; the area
# past the old size must read zeros whatever the cut leaves
SIZE=4M COWIO_OPSIZE=4194304 COWIO_GROW=1048576 run_cfg "growing, 512-byte clusters" --cluster-size 512
# the same ops through storage/ (what virtio-blk uses: asynchronous
# allocating write steps, committed as their data writes finish) on its
# worker threads, 16 ops in flight finishing in any order, with cache=none
# and without: every flushed op intact, no corruption
WRITER=stgwrite run_cfg "storage/, threads, extended L2" --extended-l2
# (direct writes reach the disk as they are, not as page-cache pages: torn
# at 512-byte sectors here)
WRITER=stgwrite COWIO_DIRECT=1 POWERCUT_TEAR=512 run_cfg "storage/, threads, cache=none" --cluster-size 4096
# and over a backing file holding tagged data (its own cowio run, checked,
# and what it holds taken as the baseline): an allocation that reached the
# disk before its data would show zeros where the backing file shows through
rm -f back.qcow2 blog base0
"$COWVM" image create back.qcow2 16M >/dev/null || fail "create backing"
"$COWIO" crashwrite back.qcow2 2 blog 200 || fail "backing: cowio crashwrite"
"$COWIO" crashverify back.qcow2 2 blog base0 >/dev/null || fail "backing: cowio crashverify"
WRITER=stgwrite BASE0=base0 run_cfg "storage/, threads, over a backing file, 1 MiB clusters" \
	--extended-l2 --cluster-size 1M -b back.qcow2 -F qcow2
# preallocated overlays over the same backing file: every cluster allocated
# at creation with an empty subcluster bitmap, so writes go in place and
# only set bitmap bits in L2 entries (a partial subcluster first gets the
# rest of its subcluster from the backing file, which must be durable
# before the bit that exposes it), and compressed writes replace
# preallocated clusters; through cow/, and through storage/ under cache=none
BASE0=base0 run_cfg "preallocated (metadata) overlay" --preallocation metadata -b back.qcow2 -F qcow2
WRITER=stgwrite COWIO_DIRECT=1 POWERCUT_TEAR=512 BASE0=base0 \
	run_cfg "storage/, threads, cache=none, preallocated (falloc) overlay" \
	--preallocation falloc -b back.qcow2 -F qcow2

# The storage/ path (what virtio-blk uses: asynchronous allocating writes
# through cow_write_step, flushes through the engine), driven by image bench
# with a flush every 5 requests, 16 in flight: 800 scattered 4 KiB writes
# then 300 of 64 KiB. The engine's worker threads (-i threads; io_uring
# bypasses libc) make its writes and syncs visible to the recorder: up to 16
# of them at once, finishing in any order, as io_uring's do, and recorded as
# they finish. The bench writes one byte everywhere, so only consistency is
# judged here, not durability.
rm -f img0.qcow2 img.qcow2 io.log
"$COWVM" image create img0.qcow2 64M >/dev/null || fail "create (storage)"
cp img0.qcow2 img.qcow2
for a in "-s 4096 -c 800 -S $((7 * 1048576 + 4096))" "-s 65536 -c 300 -S $((3 * 1048576 + 65536)) -o 12288"; do
	# shellcheck disable=SC2086
	LD_PRELOAD="$SHIM" IOLOG_IMAGE="$PWD/img.qcow2" IOLOG_OUT="$PWD/io.log" \
		"$COWVM" image bench -t none -i threads -w --flush-interval 5 -d 16 $a img.qcow2 >bench.out 2>&1 ||
		{ cat bench.out; fail "storage path: recorded bench failed"; }
	grep -q "I/O engine: threads" bench.out || { cat bench.out; fail "storage path: not the threads engine"; }
done
"$PC" io.log img0.qcow2 crash.qcow2 clog 0 999999999 >pc.out || fail "storage path: replay"
cmp -s crash.qcow2 img.qcow2 || fail "storage path: a full replay differs from the file written"
# the bench's flushes reach the file (--flush-interval through storage/)
syncs=$(sed -n 's/.*(\([0-9]*\) syncs).*/\1/p' pc.out)
[ "${syncs:-0}" -ge 40 ] || fail "storage path: only ${syncs:-0} fdatasyncs recorded for ~80 bench flushes"
for ((cut = 1; cut <= 300; cut++)); do
	POWERCUT_TEAR=512 "$PC" io.log img0.qcow2 crash.qcow2 clog $((SEED * 1000 + 500 + cut)) >pc.out ||
		fail "storage path: powercut"
	qemu-img check -q crash.qcow2 >check.out 2>&1
	rc=$?
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
		head -5 check.out
		fail "storage path, cut $cut ($(cat pc.out)): qemu-img check exited $rc"
	fi
	total=$((total + 1))
done
echo "ok: storage path: 300 cuts ($(wc -c <io.log) bytes recorded); last: $(cat pc.out)"
echo "ok: $total power cuts"
