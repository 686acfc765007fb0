#!/bin/bash
# tests/integration/snapshot-catalog-undo.sh — a disk snapshot of a VM
# started with `cowvm start` whose switch fails after the catalog recorded
# the overlay (core/snapshot.c job_finish: the record first, then the
# file). The test hook COWVM_TEST_SNAPSHOT_RECORDED_DELAY_MS holds the
# VMM's loop 4 s between the record and the drained section; meanwhile the
# test moves the disk's image away (the prepare then fails: no file at the
# image's name) and puts it back after the answer:
#  - the undo works: the reply says why, the catalog names the image again,
#    the overlay is removed;
#  - the undo fails too (the catalog's lock held by sqlite3, the VMM gives
#    up after 3 s): the reply names both problems and says the overlay was
#    kept; the catalog names it, `qemu-img check` finds it clean, backed
#    by the image; the VM runs on; after the run `cowvm start` opens the
#    kept overlay and the guest reads what it wrote before and after (A
#    and B), which went to the image: nothing lost;
#  - the same on a second VM, then blockdev-snapshot-sync onto the kept
#    overlay with mode existing: the catalog takes it as recorded already
#    (cat_disk_snapshot), the disk switches (the image no longer
#    write-locked, the overlay is), the catalog unchanged, and the guest's
#    second phase goes to the overlay.
# Every wait is bounded.
# timeout: 300
. "$(dirname "$0")/../lib.sh"
need_kvm
need_cmd qemu-img
need_cmd sqlite3
[ -f "$TESTGUEST" ] || fail "no test guest at $TESTGUEST"

. "$(dirname "$0")/../lib/catalog-vm.sh"

A=51 B=62
# the catalog has a row for image $1 (read without waiting for a lock)
recorded() {
	[ "$(sqlite3 -cmd ".timeout 200" "$DB" "SELECT count(*) FROM images WHERE path = '$1'" 2>/dev/null)" = 1 ]
}
# start a snapshot of VM $VM onto $1 in the background; once the catalog
# records it (the VMM then waits 4 s), move the image $IMG away
snap_failing() {
	local i
	( timeout 20 "$COWVM" control "$RUN/$VM.ctl" blockdev-snapshot-sync \
		'{"device": "vda", "snapshot-file": "'"$1"'"}' >"$T/snap.out" 2>&1
	  echo $? >"$T/snap.rc" ) &
	SNAP=$!
	for ((i = 0; i < 100; i++)); do recorded "$1" && break; sleep 0.05; done
	[ "$i" -lt 100 ] || { wait "$SNAP"; cat "$T/snap.out"; fail "the catalog never recorded $1"; }
	mv "$IMG" "$IMG.moved"
}
# wait for the answer (bounded by the client's timeout), put the image back
snap_answer() {
	wait "$SNAP"
	mv "$IMG.moved" "$IMG"
	RC=$(cat "$T/snap.rc")
}
# start_writer VM IMG GAP_MS: starts VM (sets VM, IMG, LOG) on a new 64 MiB
# image IMG, its guest writing A, pausing GAP_MS, then writing B; the
# VMM waits 4 s between a snapshot's record and its switch (test hook);
# returns when A is written
start_writer() {
	VM=$1 IMG=$2 LOG="$COWVM_HOME/logs/$1.log"
	qemu-img create -q -f qcow2 "$IMG" 64M
	expect 0 create "$VM" --kernel "$TESTGUEST" --mem 64M --disk "$IMG" \
		--append "cowvm.test=disk-write seed=$A seed2=$B gap_ms=$3"
	COWVM_TEST_SNAPSHOT_RECORDED_DELAY_MS=4000 expect 0 start "$VM"
	track_started
	wait_for "$LOG" 'phase 1 done' 60
}
start_writer c1 "$T/base.qcow2" 30000

# --- the prepare fails, the undo works: the overlay removed, the catalog
# as before
snap_failing "$T/gone.qcow2"
snap_answer
[ "$RC" -eq 1 ] || { cat "$T/snap.out"; fail "a snapshot whose prepare fails: status $RC"; }
grep -q "GenericError.*unable to stat '$T/base.qcow2'" "$T/snap.out" ||
	{ cat "$T/snap.out"; fail "the failed prepare's reply does not say why"; }
grep -q "put back\|kept" "$T/snap.out" && { cat "$T/snap.out"; fail "an undo that worked told as failed"; }
echo "ok: prepare failed, undone: $(cut -c1-240 "$T/snap.out")"
[ -e "$T/gone.qcow2" ] && fail "the overlay of an undone snapshot was left"
recorded "$T/gone.qcow2" && fail "the catalog still has the overlay of an undone snapshot"
expect 0 show c1
grep -q "^disk vda *$T/base.qcow2 (qcow2" "$T/out" || { cat "$T/out"; fail "c1's disk changed after an undone snapshot"; }
[ "$(state c1)" = running ] || fail "c1 is '$(state c1)' after an undone snapshot"

# --- the prepare fails and the undo too (the catalog's lock held from
# the record on, 9 s): the overlay kept, the catalog names it
snap_failing "$T/kept.qcow2"
lock_catalog
snap_answer
[ "$RC" -eq 1 ] || { cat "$T/snap.out"; fail "a snapshot whose prepare and undo fail: status $RC"; }
grep -q "GenericError.*unable to stat '$T/base.qcow2'.*; and the record of the snapshot could not be put back, so '$T/kept.qcow2' was kept (the record names it; an overlay of '$T/base.qcow2' with nothing written to it): the catalog keeps the overlay as the disk's image: the catalog is busy" "$T/snap.out" ||
	{ cat "$T/snap.out"; fail "the reply does not name both problems and the file kept"; }
echo "ok: prepare and undo failed: $(cut -c1-400 "$T/snap.out")"
wait "$HOLDER"
[ -e "$T/kept.qcow2" ] || fail "the overlay the catalog names was removed"
qemu-img check -q -U "$T/kept.qcow2" || fail "qemu-img check of the kept overlay"
qemu-img info -U "$T/kept.qcow2" | grep -q "^backing file: $T/base.qcow2" ||
	{ qemu-img info -U "$T/kept.qcow2"; fail "the kept overlay is not backed by the image"; }
expect 0 show c1
grep -q "^disk vda *$T/kept.qcow2 (qcow2, 64 MiB" "$T/out" || { cat "$T/out"; fail "the catalog does not name the kept overlay"; }
grep -q "^  backing: *$T/base.qcow2 (qcow2" "$T/out" || { cat "$T/out"; fail "the catalog does not name the image as the kept overlay's backing"; }
[ "$(state c1)" = running ] || fail "c1 is '$(state c1)' after the failed snapshot"
qemu-img info "$T/base.qcow2" >"$T/info.out" 2>&1 && { cat "$T/info.out"; fail "the image is not write-locked: the VM no longer writes it"; }

# --- the guest writes B (to the image: the switch did not happen) and
# ends; the next start opens the kept overlay and reads A and B through it
wait_state c1 stopped 90
grep -q "^cowvm-guest: disk-write phase 2 ok seed2=$B " "$LOG" || { tail -5 "$LOG"; fail "the guest's second phase"; }
grep -q "^cowvm-guest: disk-write ok " "$LOG" || { tail -5 "$LOG"; fail "the guest did not end well"; }
expect 0 dumpxml c1
sed "s/seed=$A seed2=$B gap_ms=30000/cowvm.test=disk-verify seed=$A seed2=$B/; s/cowvm.test=disk-write //" \
	"$T/out" >"$T/c1.xml"
grep -q "disk-verify seed=$A seed2=$B" "$T/c1.xml" || { cat "$T/c1.xml"; fail "editing the cmdline"; }
expect 0 define "$T/c1.xml"
n=$(grep -c 'disk-verify ok' "$LOG" || true)
expect 0 start c1
track_started
wait_state c1 stopped 60
[ "$(grep -c 'disk-verify ok' "$LOG")" -gt "$n" ] || { tail -5 "$LOG"; fail "the restarted guest did not verify A and B through the kept overlay"; }
qemu-img check -q "$T/kept.qcow2" || fail "qemu-img check of the kept overlay after the run"
echo "ok: started again on the kept overlay: the guest read A and B"

# --- the same failure on c2, then the snapshot retried onto the kept
# overlay with mode existing: the catalog takes it as recorded already,
# the disk switches to it, the guest's second phase goes to it
start_writer c2 "$T/b2.qcow2" 25000
snap_failing "$T/k2.qcow2"
lock_catalog
snap_answer
[ "$RC" -eq 1 ] && grep -q "so '$T/k2.qcow2' was kept" "$T/snap.out" ||
	{ cat "$T/snap.out"; fail "c2: the failed snapshot: status $RC"; }
wait "$HOLDER"
timeout 20 "$COWVM" control "$RUN/c2.ctl" blockdev-snapshot-sync \
	'{"device": "vda", "snapshot-file": "'"$T/k2.qcow2"'", "mode": "existing"}' >"$T/snap.out" 2>&1 &&
	grep -qx '{}' "$T/snap.out" || { cat "$T/snap.out"; fail "the retry onto the kept overlay"; }
grep -q 'phase 2' "$LOG" && fail "c2's pause ended before the retry (gap too short)"
expect 0 show c2
grep -q "^disk vda *$T/k2.qcow2 (qcow2, 64 MiB" "$T/out" && grep -q "^  backing: *$IMG (qcow2" "$T/out" ||
	{ cat "$T/out"; fail "the catalog after the retry"; }
qemu-img info "$IMG" >"$T/info.out" 2>&1 || { cat "$T/info.out"; fail "the image is still write-locked after the retry's switch"; }
qemu-img info "$T/k2.qcow2" >"$T/info.out" 2>&1 && { cat "$T/info.out"; fail "the kept overlay is not write-locked after the retry's switch"; }
echo "ok: the retry with mode existing switched c2 to the kept overlay"
wait_state c2 stopped 90
grep -q "^cowvm-guest: disk-write ok " "$LOG" || { tail -5 "$LOG"; fail "c2's guest did not end well"; }
qemu-img check -q "$IMG" && qemu-img check -q "$T/k2.qcow2" || fail "qemu-img check after c2's run"
qemu-img compare -q "$IMG" "$T/k2.qcow2" && fail "c2's second phase did not go to the overlay"
echo "ok"
