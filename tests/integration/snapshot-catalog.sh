#!/bin/bash
# tests/integration/snapshot-catalog.sh — an external disk snapshot
# (blockdev-snapshot-sync) of a VM started with `cowvm start`: the VMM
# records it in the catalog (cli/vmm-catalog.c, cat_disk_snapshot) before
# the disk switches. The test guest writes A, pauses, writes B over the
# first half:
#  - a snapshot the catalog refuses (the path is another VM's disk image
#    in the catalog) is cancelled: the error says why, the file is
#    removed, the catalog and the VM are unchanged, the VM runs on;
#  - the catalog's lock held by another process (sqlite3): the VMM gives up
#    within a few seconds, before the client's 10 s: the reply says the
#    catalog is busy, and so it was (no file, catalog and disk unchanged);
#  - a snapshot in the pause: `cowvm show` names the overlay as the disk,
#    the old image as its backing; the event log has it;
#  - targets out of the disks' order (vdb, vda): "vda" is the catalog's
#    vda (cowvm start passes target=), an unknown one is refused naming
#    the targets;
#  - after the run, the next start (the guest redefined to verify) opens
#    the overlay and finds A and B; the old image still holds A only.
# Every wait is bounded.
# timeout: 300
. "$(dirname "$0")/../lib.sh"
need_kvm
need_cmd qemu-img
[ -f "$TESTGUEST" ] || fail "no test guest at $TESTGUEST"

. "$(dirname "$0")/../lib/catalog-vm.sh"

A=31 B=42
has() { grep -qF -- "$2" "$T/$1" || fail "$1 lacks '$2': $(head -c 600 "$T/$1")"; }
snap() { timeout 20 "$COWVM" control "$RUN/c1.ctl" blockdev-snapshot-sync "$1" >"$T/snap.out" 2>&1; RC=$?; }
LOG="$COWVM_HOME/logs/c1.log"

qemu-img create -q -f qcow2 "$T/base.qcow2" 64M
expect 0 create c1 --kernel "$TESTGUEST" --mem 64M --disk "$T/base.qcow2" \
	--append "cowvm.test=disk-write seed=$A seed2=$B gap_ms=25000"
expect 0 start c1
P=$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' "$T/out")
cleanup_pids+=("$P")
wait_for "$LOG" 'phase 1 done' 60

# --- the catalog refuses: the overlay's path is another VM's disk (a raw
# image whose file was removed since)
truncate -s 1M "$T/gone.raw"
expect 0 create c2 --kernel "$TESTGUEST" --mem 64M --disk "$T/gone.raw"
rm "$T/gone.raw"
snap '{"device": "vda", "snapshot-file": "'"$T/gone.raw"'"}'
[ "$RC" -eq 1 ] || { cat "$T/snap.out"; fail "a snapshot the catalog refuses: status $RC"; }
grep -q "GenericError.*cancelled: the catalog cannot record the overlay: image '$T/gone.raw' is in the catalog already, as a raw image" "$T/snap.out" ||
	{ cat "$T/snap.out"; fail "the refusal does not say why"; }
echo "ok: refused by the catalog: $(cut -c1-240 "$T/snap.out")"
[ -e "$T/gone.raw" ] && fail "the overlay of a snapshot the catalog refused was left"
expect 0 show c1
grep -q "^disk vda *$T/base.qcow2 (qcow2" "$T/out" || { cat "$T/out"; fail "c1's disk changed after a refused snapshot"; }
grep -q "backing:" "$T/out" && { cat "$T/out"; fail "c1's disk has a backing image after a refused snapshot"; }
[ "$(state c1)" = running ] || fail "c1 is '$(state c1)' after a refused snapshot"

# --- the catalog's lock held by another process (sqlite3 BEGIN EXCLUSIVE,
# 9 s): the VMM waits for it only a few seconds, well below the control
# client's 10 s, then fails the snapshot cleanly: the reply says so, and it
# is what happened (no file, the catalog unchanged, the VM runs on its old
# image)
need_cmd sqlite3
lock_catalog
t0=$(date +%s%N)
snap '{"device": "vda", "snapshot-file": "'"$T/busy.qcow2"'"}'
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$RC" -eq 1 ] || { cat "$T/snap.out"; fail "a snapshot while the catalog is locked: status $RC (${ms} ms)"; }
grep -q "GenericError.*cancelled: the catalog cannot record the overlay: the catalog is busy" "$T/snap.out" ||
	{ cat "$T/snap.out"; fail "the busy catalog's refusal does not say why (${ms} ms)"; }
echo "ok: the catalog locked: refused in $ms ms: $(cut -c1-240 "$T/snap.out")"
[ -e "$T/busy.qcow2" ] && fail "the overlay of a snapshot the busy catalog refused was left"
wait "$HOLDER"
expect 0 show c1
grep -q "^disk vda *$T/base.qcow2 (qcow2" "$T/out" || { cat "$T/out"; fail "c1's disk changed after a snapshot refused on the busy catalog"; }
[ "$(state c1)" = running ] || fail "c1 is '$(state c1)' after a snapshot refused on the busy catalog"
qemu-img info "$T/base.qcow2" >"$T/info.out" 2>&1 && { cat "$T/info.out"; fail "the old image is not write-locked: the VM no longer writes it"; }

# --- the snapshot
snap '{"device": "vda", "snapshot-file": "'"$T/ov.qcow2"'"}'
[ "$RC" -eq 0 ] && grep -qx '{}' "$T/snap.out" || { cat "$T/snap.out"; fail "snapshot of c1: status $RC"; }
grep -q 'phase 2' "$LOG" && fail "the guest's pause ended before the snapshot (gap too short)"
expect 0 show c1
grep -q "^disk vda *$T/ov.qcow2 (qcow2, 64 MiB" "$T/out" || { cat "$T/out"; fail "the catalog does not name the overlay"; }
grep -q "^  backing: *$T/base.qcow2 (qcow2" "$T/out" || { cat "$T/out"; fail "the catalog does not name the old image as the overlay's backing"; }
echo "ok: the catalog names the overlay: $(grep -A1 '^disk vda' "$T/out" | tr -s ' ' | tr '\n' ' ')"
expect 0 dumpxml c1
grep -q "<source file=\"$T/ov.qcow2\"/>" "$T/out" && grep -q "<backingStore type=\"file\">" "$T/out" ||
	{ cat "$T/out"; fail "dumpxml does not show the chain"; }
wait_state c1 stopped 90
grep -q "^cowvm-guest: disk-write phase 2 ok seed2=$B " "$LOG" || { tail -5 "$LOG"; fail "the guest's second phase"; }
grep -q "^cowvm-guest: disk-write ok " "$LOG" || { tail -5 "$LOG"; fail "the guest did not end well"; }

# --- start again, the guest now verifying: it reads the overlay
expect 0 dumpxml c1
sed "s/seed=$A seed2=$B gap_ms=25000/cowvm.test=disk-verify seed=$A seed2=$B/; s/cowvm.test=disk-write //" \
	"$T/out" >"$T/c1.xml"
grep -q "disk-verify seed=$A seed2=$B" "$T/c1.xml" || { cat "$T/c1.xml"; fail "editing the cmdline"; }
expect 0 define "$T/c1.xml"
expect 0 show c1
grep -q "^disk vda *$T/ov.qcow2" "$T/out" || { cat "$T/out"; fail "redefining lost the overlay"; }
n=$(grep -c 'disk-verify ok' "$LOG" || true)
expect 0 start c1
track_started
wait_state c1 stopped 60
[ "$(grep -c 'disk-verify ok' "$LOG")" -gt "$n" ] || { tail -5 "$LOG"; fail "the restarted guest did not verify A and B"; }
# the old image still holds A alone: its second half verifies, its first
# half is not B (B went to the overlay)
qemu-img check -q "$T/base.qcow2" || fail "qemu-img check of the old image"
qemu-img check -q "$T/ov.qcow2" || fail "qemu-img check of the overlay"
qemu-img compare -q "$T/base.qcow2" "$T/ov.qcow2" && fail "the old image and the overlay show the same data"
echo "ok: started again: the guest read A and B through the overlay"

# --- targets not in the disks' order (the XML says vdb first, then vda):
# "vda" is the disk the catalog calls vda (cowvm start passes target=),
# not the VMM's first disk
qemu-img create -q -f qcow2 "$T/d1.qcow2" 64M
qemu-img create -q -f qcow2 "$T/d2.qcow2" 64M
expect 0 create c3 --kernel "$TESTGUEST" --mem 64M --disk "$T/d1.qcow2" --disk "$T/d2.qcow2" \
	--append "cowvm.test=disk-write seed=$A seed2=$B gap_ms=15000"
expect 0 dumpxml c3
sed 's/dev="vda"/dev="vdX"/; s/dev="vdb"/dev="vda"/; s/dev="vdX"/dev="vdb"/' "$T/out" >"$T/c3.xml"
expect 0 define "$T/c3.xml"
expect 0 show c3
grep -q "^disk vdb *$T/d1.qcow2" "$T/out" && grep -q "^disk vda *$T/d2.qcow2" "$T/out" ||
	{ cat "$T/out"; fail "c3's targets were not swapped"; }
expect 0 start c3
track_started
wait_for "$COWVM_HOME/logs/c3.log" 'phase 1 done' 60
timeout 20 "$COWVM" control "$RUN/c3.ctl" blockdev-snapshot-sync '{"device": "vda", "snapshot-file": "'"$T/d2ov.qcow2"'"}' >"$T/snap.out" 2>&1 ||
	{ cat "$T/snap.out"; fail "snapshot of c3's vda"; }
expect 0 show c3
grep -q "^disk vda *$T/d2ov.qcow2 (qcow2" "$T/out" && grep -q "^disk vdb *$T/d1.qcow2 (qcow2" "$T/out" ||
	{ cat "$T/out"; fail "vda of c3 did not name the catalog's vda"; }
[ -e "$T/d2ov.qcow2" ] || fail "no overlay for c3's vda"
timeout 20 "$COWVM" control "$RUN/c3.ctl" blockdev-snapshot-sync '{"device": "vdc", "snapshot-file": "'"$T/none.qcow2"'"}' >"$T/snap.out" 2>&1 &&
	fail "a snapshot of c3's vdc (no such target) succeeded"
grep -q "GenericError.*'vdc' not found: the VM's disks are virtio-blk0 vdb, virtio-blk1 vda" "$T/snap.out" ||
	{ cat "$T/snap.out"; fail "c3's vdc: the refusal does not name the targets"; }
wait_state c3 stopped 90
echo "ok: targets out of order: vda is the catalog's vda"
echo "ok"
