# External disk snapshots of a running VM: the control command
# blockdev-snapshot-sync (QMP's), core/snapshot.c:
#  - the test guest writes pattern A over its qcow2 disk, pauses (gap_ms),
#    then writes B over the first half and reads everything back; the
#    snapshot is taken in the pause: the guest's check passes, and after
#    the run the old image holds A only, the overlay shows A+B (qemu-img
#    compare against the same runs on plain raw files), qemu-img check
#    finds both clean and qemu-img info shows the chain;
#  - two snapshots while the guest writes a 4 GiB disk (requests in flight
#    drained at each switch; the vCPUs run on: no STOP or RESUME event, as
#    QEMU's), buffered and cache=none,aio=threads: the
#    writes spread over the chain of three, all clean, and the data
#    verifies through it;
#  - errors (unknown device, existing file, bad mode or format, a missing
#    or unexpected argument, a read-only disk) are GenericErrors naming the
#    thing; the VM goes on running, no file is left, and its disk works
#    (the guest's second phase, after a snapshot by the name "vda");
#  - while the VM runs after a snapshot, qemu-img info opens the old image
#    (a backing layer's shared lock) and not the overlay (written);
#  - a paused VM stays paused across a snapshot;
#  - a raw disk: snapshot, then save; the restored VM writes the overlay
#    the state file names (the old raw file holds A only);
#  - a VM paused on a full disk (werror=enospc): a snapshot to another file
#    system, then resume: the parked requests go to the new overlay and
#    the guest finishes (needs a tmpfs mount, else that part is skipped
#    with a note).
# timeout: 300
. "$(dirname "$0")/../lib.sh"
need_kvm
need_cmd qemu-img
need_cmd jq
[ -f "$TESTGUEST" ] || fail "no test guest at $TESTGUEST"

A=11 B=22
SIZE=64M
# snap SOCKET JSON: blockdev-snapshot-sync; output in $T/snap.out, sets RC
snap() {
	timeout 20 "$COWVM" control "$1" blockdev-snapshot-sync "$2" >"$T/snap.out" 2>&1
	RC=$?
}
# snap_ok SOCKET JSON
snap_ok() {
	snap "$1" "$2"
	[ "$RC" -eq 0 ] && grep -qx '{}' "$T/snap.out" ||
		{ cat "$T/snap.out"; fail "blockdev-snapshot-sync $2: status $RC"; }
}
# wait_alloc IMAGE CONSOLE: until IMAGE has 32 MiB allocated (st_blocks,
# which counts ext4's delayed allocations too); fails after 60 s or when the
# guest's disk-write ended first
wait_alloc() {
	for ((i = 0; i < 6000; i++)); do
		[ "$(( $(stat -c %b "$1") * 512 ))" -ge $((32 << 20)) ] && return 0
		grep -q "disk-write ok" "$2" && fail "the guest finished writing before $(basename "$1") held 32 MiB"
		sleep 0.01
	done
	fail "$(basename "$1") did not reach 32 MiB within 60 s"
}
# snap_err SOCKET JSON REGEX: refused with a GenericError matching REGEX
snap_err() {
	snap "$1" "$2"
	[ "$RC" -eq 1 ] || { cat "$T/snap.out"; fail "blockdev-snapshot-sync $2: status $RC, expected 1"; }
	grep -Eq -- "$3" "$T/snap.out" || { cat "$T/snap.out"; fail "blockdev-snapshot-sync $2: error does not match '$3'"; }
	echo "ok: refused $2: $(tail -1 "$T/snap.out" | cut -c1-160)"
}
# status SOCKET: query-status's "status"
status() { timeout 10 "$COWVM" control "$1" query-status | jq -r .status; }

# --- expectations: A alone, and A then B over the first half, on raw files
truncate -s $SIZE "$T/expA.raw" "$T/expAB.raw"
run_guest 60 "$T/ea" "cowvm.test=disk-write seed=$A" --disk "$T/expA.raw"
expect_rc 0 "$T/ea" "disk-write A (expectation)"
run_guest 90 "$T/eab" "cowvm.test=disk-write seed=$A seed2=$B gap_ms=0" --disk "$T/expAB.raw"
expect_rc 0 "$T/eab" "disk-write A then B (expectation)"
expect_line "$T/eab" "^cowvm-guest: disk-write phase 2 ok seed2=$B "
cmp -s "$T/expA.raw" "$T/expAB.raw" && fail "the two expectations are the same file"

# --- a qcow2 disk: snapshot between A and B
qemu-img create -q -f qcow2 "$T/base.qcow2" $SIZE
start_guest "$T/q" "cowvm.test=disk-write seed=$A seed2=$B gap_ms=5000" \
	--disk "$T/base.qcow2" --control "$T/q.sock"
wait_for "$T/q" 'phase 1 done' 60
t0=$(date +%s%N)
snap_ok "$T/q.sock" '{"device": "virtio-blk0", "snapshot-file": "'"$T/ov.qcow2"'", "format": "qcow2"}'
note "snapshot answered in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
[ "$(status "$T/q.sock")" = running ] || fail "the VM is not running after the snapshot"
# the old image is a backing layer now (shared lock), the overlay is written
qemu-img info "$T/base.qcow2" >"$T/info.out" 2>&1 || { cat "$T/info.out"; fail "qemu-img info of the old image while the VM runs"; }
qemu-img info "$T/ov.qcow2" >"$T/info.out" 2>&1 && { cat "$T/info.out"; fail "qemu-img info opened the overlay the VM writes"; }
grep -qi "lock" "$T/info.out" || { cat "$T/info.out"; fail "qemu-img info of the overlay failed, but not on its lock"; }
echo "ok: while running: the old image opens (shared), the overlay is locked"
grep -q 'phase 2 ok' "$T/q" && fail "the guest's second phase ended before the snapshot's checks"
wait_exit "$PID" 90
expect_rc 0 "$T/q" "the guest after the snapshot"
expect_line "$T/q" "^cowvm-guest: disk-write phase 2 ok seed2=$B "
for f in base.qcow2 ov.qcow2; do
	qemu-img check -q "$T/$f" || fail "qemu-img check $f"
done
qemu-img compare -q "$T/expA.raw" "$T/base.qcow2" || fail "the old image does not hold A only"
qemu-img compare -q "$T/expAB.raw" "$T/ov.qcow2" || fail "the overlay does not show A then B"
qemu-img info --output=json "$T/ov.qcow2" >"$T/info.json"
jq -e --arg b "$T/base.qcow2" '.format == "qcow2" and ."backing-filename" == $b and
	(."backing-filename-format" // "qcow2") == "qcow2" and ."virtual-size" == 67108864' "$T/info.json" >/dev/null ||
	{ cat "$T/info.json"; fail "qemu-img info of the overlay"; }
"$COWVM" image info --chain "$T/ov.qcow2" >"$T/cinfo.out" 2>&1 || { cat "$T/cinfo.out"; fail "cowvm image info --chain"; }
grep -qx "backing file: $T/base.qcow2" "$T/cinfo.out" && grep -qx "    chain depth: 2" "$T/cinfo.out" &&
	grep -qx "image: $T/base.qcow2" "$T/cinfo.out" || { cat "$T/cinfo.out"; fail "cowvm image info --chain of the overlay"; }
echo "ok: qcow2 disk: old image = A, overlay = A+B on it, both clean"

# --- while the guest writes (requests in flight at each switch): two
# snapshots in a row, a chain of three; the guest ends without an error and
# its data verifies through the chain
for opt in "" ",cache=none,aio=threads"; do
rm -f "$T"/w*.qcow2
qemu-img create -q -f qcow2 "$T/w.qcow2" 4G
start_guest "$T/w" "cowvm.test=disk-write seed=$B" --disk "$T/w.qcow2$opt" --control "$T/w.sock"
# an event subscriber for the whole run: QEMU's blockdev-snapshot-sync does
# not stop the guest, nor does this one (no STOP, no RESUME)
for ((i = 0; i < 100; i++)); do [ -S "$T/w.sock" ] && break; sleep 0.05; done
timeout 150 "$COWVM" events --socket "$T/w.sock" --json >"$T/wev" 2>&1 &
EVPID=$!
# each snapshot once the top holds 32 MiB of the guest's writes (by the
# file's allocation, not by time: on a quiet host the guest writes 1 GiB in
# about half a second), so every layer gets a share and requests are in
# flight. 4 GiB: the guest's writes go on while a snapshot's worker pushes
# what it wrote so far (core/snapshot.c), and with 1 GiB a slow first
# snapshot on a loaded machine outlasted them (seen once in CI)
wait_alloc "$T/w.qcow2" "$T/w"
snap_ok "$T/w.sock" '{"device": "virtio-blk0", "snapshot-file": "'"$T/w1.qcow2"'"}'
wait_alloc "$T/w1.qcow2" "$T/w"
snap_ok "$T/w.sock" '{"device": "virtio-blk0", "snapshot-file": "'"$T/w2.qcow2"'"}'
grep -q "disk-write ok" "$T/w" && { tail -3 "$T/w"; fail "disk-write ended before the second snapshot (not a busy disk)"; }
wait_exit "$PID" 120
expect_rc 0 "$T/w" "disk-write across two snapshots ($opt)"
wait "$EVPID" || { cat "$T/wev"; fail "cowvm events across the snapshots ($opt)"; }
[ "$(jq -r .event "$T/wev" | tr '\n' ' ')" = "SHUTDOWN " ] ||
	{ cat "$T/wev"; fail "events across two snapshots: expected SHUTDOWN only (no STOP/RESUME) ($opt)"; }
for f in w.qcow2 w1.qcow2 w2.qcow2; do
	qemu-img check -q "$T/$f" || fail "qemu-img check $f ($opt)"
	[ "$(qemu-img info --output=json "$T/$f" | jq '."actual-size"')" -gt 1000000 ] ||
		fail "$f holds almost nothing: the writes did not spread over the chain ($opt)"
done
[ "$(qemu-img info --backing-chain --output=json "$T/w2.qcow2" | jq length)" = 3 ] ||
	fail "the chain under w2.qcow2 is not three images"
run_guest 90 "$T/wv" "cowvm.test=disk-verify seed=$B" --disk "$T/w2.qcow2$opt"
expect_rc 0 "$T/wv" "disk-verify through the chain of three ($opt)"
echo "ok: two snapshots while the guest wrote (disk options '$opt'): its data verifies through the chain"
done

# --- errors: the VM goes on, its disk works (the guest's second phase);
# a second, read-only disk
qemu-img create -q -f qcow2 "$T/e.qcow2" $SIZE
truncate -s 1M "$T/ro.raw"
echo "keep me" >"$T/exists.qcow2"
start_guest "$T/e" "cowvm.test=disk-write seed=$A seed2=$B gap_ms=20000" \
	--disk "$T/e.qcow2" --disk "$T/ro.raw,ro" --control "$T/e.sock"
wait_for "$T/e" 'phase 1 done' 60
snap_err "$T/e.sock" '{"device": "virtio-blk7", "snapshot-file": "'"$T/x1.qcow2"'"}' "GenericError.*virtio-blk7.*not found"
snap_err "$T/e.sock" '{"device": "vdq", "snapshot-file": "'"$T/x1.qcow2"'"}' "GenericError.*'vdq' not found"
snap_err "$T/e.sock" '{"device": "virtio-blk0", "snapshot-file": "'"$T/exists.qcow2"'"}' "GenericError.*exists.qcow2"
[ "$(cat "$T/exists.qcow2")" = "keep me" ] || fail "an existing file was changed by a refused snapshot"
snap_err "$T/e.sock" '{"device": "virtio-blk0", "snapshot-file": "'"$T/x1.qcow2"'", "mode": "relative"}' "GenericError.*mode"
snap_err "$T/e.sock" '{"device": "virtio-blk0", "snapshot-file": "'"$T/x1.qcow2"'", "format": "raw"}' "GenericError.*format.*qcow2"
snap_err "$T/e.sock" '{"device": "virtio-blk0"}' "GenericError.*snapshot-file.*required"
snap_err "$T/e.sock" '{"snapshot-file": "'"$T/x1.qcow2"'"}' "GenericError.*device.*required"
snap_err "$T/e.sock" '{"device": "virtio-blk0", "snapshot-file": "'"$T/x1.qcow2"'", "node-name": "n"}' "GenericError.*node-name.*unexpected"
snap_err "$T/e.sock" '{"device": "vdb", "snapshot-file": "'"$T/x1.qcow2"'"}' "GenericError.*virtio-blk1.*read-only"
snap_err "$T/e.sock" '{"device": "virtio-blk0", "snapshot-file": "'"$T/no/such/dir/x.qcow2"'"}' "GenericError.*x.qcow2"
snap_err "$T/e.sock" '{"device": "virtio-blk0", "snapshot-file": "'"$T/a,b.qcow2"'"}' "GenericError.*','"
snap_err "$T/e.sock" '{"device": "virtio-blk0", "snapshot-file": "'"$T/ro.raw"'", "mode": "existing"}' "GenericError.*ro.raw"
[ -e "$T/x1.qcow2" ] && fail "a refused snapshot left its file"
[ "$(status "$T/e.sock")" = running ] || fail "the VM is not running after the refused snapshots"
grep -q 'phase 2' "$T/e" && fail "the guest's pause ended during the error checks (gap too short)"
snap_ok "$T/e.sock" '{"device": "vda", "snapshot-file": "'"$T/e-ov.qcow2"'", "mode": "absolute-paths"}'
wait_exit "$PID" 90
expect_rc 0 "$T/e" "the guest after the refused snapshots and one by the name vda"
expect_line "$T/e" "^cowvm-guest: disk-write phase 2 ok seed2=$B "
qemu-img compare -q "$T/expA.raw" "$T/e.qcow2" || fail "old image after the error checks"
qemu-img compare -q "$T/expAB.raw" "$T/e-ov.qcow2" || fail "overlay after the error checks"
echo "ok: after the refused snapshots the VM ran on and its disk worked"

# --- a paused VM stays paused; "existing": an overlay made beforehand
qemu-img create -q -f qcow2 "$T/p.qcow2" $SIZE
start_guest "$T/p" "cowvm.test=counter" --disk "$T/p.qcow2" --control "$T/p.sock"
wait_for "$T/p" '^tick 2$' 30
timeout 10 "$COWVM" control "$T/p.sock" pause >/dev/null || fail "pause"
qemu-img create -q -f qcow2 -b "$T/p.qcow2" -F qcow2 "$T/p-ov.qcow2"
snap_ok "$T/p.sock" '{"device": "virtio-blk0", "snapshot-file": "'"$T/p-ov.qcow2"'", "mode": "existing"}'
[ "$(status "$T/p.sock")" = paused ] || fail "a paused VM did not stay paused across a snapshot"
n=$(grep -c '^tick' "$T/p"); sleep 0.5
[ "$(grep -c '^tick' "$T/p")" = "$n" ] || fail "the guest ran while paused after the snapshot"
timeout 10 "$COWVM" control "$T/p.sock" resume >/dev/null || fail "resume"
wait_for "$T/p" "^tick $((n + 2))\$" 10
qemu-img info "$T/p-ov.qcow2" >/dev/null 2>&1 && fail "the existing overlay is not locked by the VM"
kill -TERM "$PID"; wait_exit "$PID" 10
echo "ok: paused VM stayed paused; mode existing took the prepared overlay"

# --- a raw disk: snapshot, save, restore: the restored VM writes the overlay
truncate -s $SIZE "$T/r.raw"
start_guest "$T/r" "cowvm.test=disk-write seed=$A seed2=$B gap_ms=8000" --disk "$T/r.raw,format=raw" \
	--control "$T/r.sock"
wait_for "$T/r" 'phase 1 done' 60
snap_ok "$T/r.sock" '{"device": "virtio-blk0", "snapshot-file": "'"$T/r-ov.qcow2"'"}'
timeout 20 "$COWVM" control "$T/r.sock" save '{"path": "'"$T/r.st"'"}' >"$T/save.out" 2>&1 ||
	{ cat "$T/save.out"; fail "save after a snapshot"; }
wait_exit "$PID" 30
expect_rc 0 "$T/r" "the VMM after the save"
grep -q 'phase 2' "$T/r" && fail "the guest's pause ended before the save (gap too short)"
start_vmm "$T/r2" --restore "$T/r.st"
wait_exit "$PID" 90
expect_rc 0 "$T/r2" "the restored guest"
expect_line "$T/r2" "^cowvm-guest: disk-write phase 2 ok seed2=$B "
qemu-img check -q "$T/r-ov.qcow2" || fail "qemu-img check of the raw disk's overlay"
qemu-img compare -q -f raw "$T/expA.raw" "$T/r.raw" || fail "the raw image changed after the snapshot"
qemu-img compare -q "$T/expAB.raw" "$T/r-ov.qcow2" || fail "the raw disk's overlay does not show A+B"
qemu-img info --output=json "$T/r-ov.qcow2" | jq -e '."backing-filename-format" == "raw"' >/dev/null ||
	fail "the overlay of a raw disk does not name its backing file raw"
echo "ok: raw disk: snapshot, save, restore: the restored VM wrote the overlay"

# --- paused on a full disk: snapshot elsewhere, resume, the parked
# requests go to the new overlay
mkdir -p "$T/mnt"
if ! mount -t tmpfs -o size=40m cowsnap "$T/mnt" 2>"$T/mount.err"; then
	note "SKIPPED part: cannot mount a tmpfs ($(cat "$T/mount.err")): no full-disk check"
	echo "ok"
	exit 0
fi
trap 'umount -l "$T/mnt" 2>/dev/null; cleanup' EXIT
qemu-img create -q -f qcow2 "$T/f-base.qcow2" 32M
qemu-img create -q -f qcow2 -b "$T/f-base.qcow2" -F qcow2 "$T/mnt/f.qcow2"
avail=$(df --output=avail -B1 "$T/mnt" | tail -n 1)
fallocate -l $((avail - 8388608)) "$T/mnt/filler" || fail "filling the tmpfs"
start_guest "$T/f" "cowvm.test=disk-write seed=$A" --disk "$T/mnt/f.qcow2" --control "$T/f.sock"
for ((i = 0; i < 600; i++)); do
	[ "$(status "$T/f.sock" 2>/dev/null)" = paused ] && break
	kill -0 "$PID" 2>/dev/null || break
	sleep 0.1
done
[ "$(status "$T/f.sock")" = paused ] || { tail -3 "$T/f" "$T/f.err"; fail "the VM did not pause on the full disk"; }
snap_ok "$T/f.sock" '{"device": "virtio-blk0", "snapshot-file": "'"$T/f-ov.qcow2"'"}'
[ "$(status "$T/f.sock")" = paused ] || fail "a VM paused on a disk error did not stay paused"
timeout 10 "$COWVM" control "$T/f.sock" resume >/dev/null || fail "resume"
wait_exit "$PID" 90
expect_rc 0 "$T/f" "the guest resumed after the snapshot of its full disk"
expect_line "$T/f" '^cowvm-guest: disk-write ok '
qemu-img check -q "$T/f-ov.qcow2" || fail "qemu-img check of the new overlay"
run_guest 60 "$T/fv" "cowvm.test=disk-verify seed=$A" --disk "$T/f-ov.qcow2"
expect_rc 0 "$T/fv" "disk-verify of the overlay the parked requests went to"
echo "ok: a VM paused on a full disk: snapshot elsewhere, resume: the guest finished, data verified"
echo "ok"
