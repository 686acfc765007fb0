# A disk snapshot's slow part runs while the VM's disk and the control
# socket go on (core/snapshot.c, vmm_machine_disk_snapshot_start). The test
# hook COWVM_TEST_SNAPSHOT_DELAY_MS makes the worker's part (the overlay
# made, opened, the data so far pushed to disk) take 2 s longer, as a large
# flush would. While a snapshot is pending:
#  - the overlay is complete at its name and write-locked by the VMM
#    (qemu-img info refuses it), the guest's writes still reach the old
#    image (its allocation grows by >= 8 MiB);
#  - another connection's query-status answers at once ("running", and
#    "disk-snapshot" names the pending one);
#  - a second blockdev-snapshot-sync and a save are refused, naming the
#    snapshot in progress; nothing is left of them;
#  - the guest's longest wait for a completion in that phase is shorter
#    than the delay (stall_max_us, tests/guest/README.md);
#  - the snapshot then answers {} after >= 2 s, the guest finishes, both
#    layers pass qemu-img check, the chain is 2 deep and the guest's data
#    verifies through it.
# One connection that sends a snapshot and a query-status in one write gets
# the two answers in order. A client that goes away while its snapshot is
# pending: the snapshot completes, and its connection is closed once
# answered (16 others are greeted). A quit while a snapshot is pending ends the run;
# the pending client is told "cancelled", and no overlay file is left.
# timeout: 240
. "$(dirname "$0")/../lib.sh"
need_kvm
need_cmd qemu-img
need_cmd jq
need_cmd python3
[ -f "$TESTGUEST" ] || fail "no test guest at $TESTGUEST"

SEED=41 SEED2=42
DELAY=2000
blocks() { echo $(( $(stat -c %b "$1") * 512 )); }
now_ms() { date +%s%3N; }
# wait_alloc IMAGE BYTES CONSOLE: until IMAGE has BYTES allocated; fails after
# 60 s or when the guest's disk-write ended first
wait_alloc() {
	for ((i = 0; i < 6000; i++)); do
		[ "$(blocks "$1")" -ge "$2" ] && return 0
		grep -q "disk-write ok" "$3" && fail "the guest finished writing before $(basename "$1") held $2 bytes"
		sleep 0.01
	done
	fail "$(basename "$1") did not reach $2 bytes within 60 s"
}
ctl() { timeout 10 "$COWVM" control "$@"; }
# wait_sock SOCKET: until the VMM listens there (10 s at most)
wait_sock() {
	for ((i = 0; i < 1000; i++)); do [ -S "$1" ] && return 0; sleep 0.01; done
	fail "no control socket at $1 within 10 s"
}

# --- a pending snapshot while the guest writes its 2 GiB disk
qemu-img create -q -f qcow2 "$T/base.qcow2" 2G
# the guest writes SEED over the disk (the snapshot is taken meanwhile), waits
# 4 s (the snapshot has answered by then), writes SEED2 over the first half
# (into the overlay) and reads everything back
COWVM_TEST_SNAPSHOT_DELAY_MS=$DELAY start_guest "$T/g" \
	"cowvm.test=disk-write seed=$SEED seed2=$SEED2 gap_ms=4000" \
	--disk "$T/base.qcow2" --control "$T/g.sock"
wait_sock "$T/g.sock"
wait_alloc "$T/base.qcow2" $((64 << 20)) "$T/g"
cp "$T/g" "$T/g.at-start"
t0=$(now_ms)
( timeout 30 "$COWVM" control "$T/g.sock" blockdev-snapshot-sync \
	"{\"device\": \"vda\", \"snapshot-file\": \"$T/ov.qcow2\"}" >"$T/snap.out" 2>&1
  echo $? >"$T/snap.rc" ) &
SNAP=$!
cleanup_pids+=("$SNAP")
# the worker made the overlay (renamed into place whole)
for ((i = 0; i < 1000; i++)); do [ -e "$T/ov.qcow2" ] || [ -s "$T/snap.rc" ] && break; sleep 0.01; done
[ -e "$T/ov.qcow2" ] || { cat "$T/snap.out"; fail "no overlay at its name 10 s after the snapshot started"; }
b0=$(blocks "$T/base.qcow2")
t1=$(now_ms)
ctl "$T/g.sock" query-status >"$T/qs.json"
t2=$(now_ms)
st=$(jq -r .status "$T/qs.json")
[ "$st" = running ] || fail "query-status during a pending snapshot: '$st'"
[ "$(jq -r '."disk-snapshot"."snapshot-file"' "$T/qs.json")" = "$T/ov.qcow2" ] &&
	[ "$(jq -r '."disk-snapshot".device' "$T/qs.json")" = virtio-blk0 ] ||
	{ cat "$T/qs.json"; fail "query-status does not show the pending snapshot"; }
[ $((t2 - t1)) -lt 1500 ] || fail "query-status took $((t2 - t1)) ms during a pending snapshot"
echo "ok: query-status answered in $((t2 - t1)) ms while the snapshot was pending"
out=$(ctl "$T/g.sock" blockdev-snapshot-sync "{\"device\": \"vda\", \"snapshot-file\": \"$T/ov2.qcow2\"}" 2>&1) &&
	fail "a second snapshot was taken while one was pending: $out"
echo "$out" | grep -q "another disk snapshot (device 'virtio-blk0', file '$T/ov.qcow2') is in progress" ||
	fail "second snapshot: unexpected error: $out"
[ -e "$T/ov2.qcow2" ] && fail "the refused second snapshot left its file"
out=$(ctl "$T/g.sock" save "{\"path\": \"$T/st.cowvm\", \"resume\": true}" 2>&1) &&
	fail "a save was taken while a snapshot was pending: $out"
echo "$out" | grep -q "a disk snapshot is in progress" || fail "save: unexpected error: $out"
[ -e "$T/st.cowvm" ] && fail "the refused save left its file"
echo "ok: a second snapshot and a save refused while it was pending"
qemu-img info "$T/ov.qcow2" >"$T/info.out" 2>&1 &&
	fail "qemu-img info opened the pending overlay (it should be write-locked by the VMM)"
grep -qi "lock" "$T/info.out" || { cat "$T/info.out"; fail "qemu-img info: not a lock refusal"; }
# the guest goes on writing its old image meanwhile
grew=0
for ((i = 0; i < 150; i++)); do
	[ -s "$T/snap.rc" ] && break
	if [ $(( $(blocks "$T/base.qcow2") - b0 )) -ge $((8 << 20)) ]; then grew=1; break; fi
	sleep 0.01
done
[ -s "$T/snap.rc" ] && fail "the snapshot answered before the guest's writes were seen going on (delay ${DELAY} ms)"
[ "$grew" = 1 ] || fail "the old image grew by less than 8 MiB in 1.5 s while the snapshot was pending (guest disk stalled?)"
echo "ok: the guest's writes went on while the snapshot was pending (+$(( ($(blocks "$T/base.qcow2") - b0) >> 20 )) MiB)"
for ((i = 0; i < 300; i++)); do [ -s "$T/snap.rc" ] && break; sleep 0.05; done
[ -s "$T/snap.rc" ] || fail "no answer to the snapshot within 15 s"
t3=$(now_ms)
[ "$(cat "$T/snap.rc")" = 0 ] && grep -qx '{}' "$T/snap.out" ||
	{ cat "$T/snap.out"; fail "the pending snapshot failed"; }
[ $((t3 - t0)) -ge $DELAY ] || fail "the snapshot answered after $((t3 - t0)) ms, before the ${DELAY} ms delay"
echo "ok: the snapshot answered {} after $((t3 - t0)) ms"
wait_exit "$PID" 120
expect_rc 0 "$T/g" "disk-write across a live snapshot"
expect_line "$T/g" "disk-write phase 2 ok seed2=$SEED2 "
grep -q "disk-write phase 1 done" "$T/g.at-start" &&
	fail "the guest's first phase had ended before the snapshot started"
# the snapshot came during the first phase: the guest's longest wait for a
# completion there (tests/guest/README.md) is shorter than the worker's
# delay, which it would have waited out if the disk had stalled for it
stall=$(sed -n 's/.*disk-write stats .*stall_max_us=\([0-9]*\).*/\1/p' "$T/g")
[ -n "$stall" ] || fail "no stall_max_us in the guest's stats line"
[ "$stall" -lt $((DELAY * 1000)) ] ||
	fail "the guest waited ${stall} us for a completion: its disk stalled for the snapshot's ${DELAY} ms worker part"
echo "ok: the guest's longest wait for a completion in that phase: $((stall / 1000)) ms (the worker part took ${DELAY} ms more)"
qemu-img check -q "$T/base.qcow2" || fail "qemu-img check: base"
qemu-img check -q "$T/ov.qcow2" || fail "qemu-img check: overlay"
depth=$(qemu-img info --backing-chain --output=json "$T/ov.qcow2" | jq length)
[ "$depth" = 2 ] || fail "chain depth $depth, expected 2"
[ "$(blocks "$T/ov.qcow2")" -ge $((1 << 30)) ] || fail "the overlay holds less than the guest's second phase"
run_guest 120 "$T/v" "cowvm.test=disk-verify seed=$SEED seed2=$SEED2" --disk "$T/ov.qcow2"
expect_rc 0 "$T/v" "disk-verify through the chain"
echo "ok: the guest finished; both layers clean; the data verifies through the chain"

# --- pipelined on one connection: the snapshot's answer comes first; then
# a quit while another snapshot is pending. The quit must reach the VMM
# within the worker's delay after the overlay appears (a poll, then a
# `cowvm control` process started): 2 s, not a few hundred ms, for a loaded
# 2-CPU CI machine
PDELAY=2000
qemu-img create -q -f qcow2 "$T/p.qcow2" 64M
COWVM_TEST_SNAPSHOT_DELAY_MS=$PDELAY start_guest "$T/p" "cowvm.test=counter" \
	--disk "$T/p.qcow2" --control "$T/p.sock"
wait_sock "$T/p.sock"
cat >"$T/pipe.py" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(15)
s.connect(sys.argv[1])
f = s.makefile("rb")
f.readline()   # the greeting
reqs = [{"execute": "blockdev-snapshot-sync",
         "arguments": {"device": "virtio-blk0", "snapshot-file": sys.argv[2]}}]
reqs += [{"execute": "query-status"}] * int(sys.argv[3])
s.sendall("".join(json.dumps(r) + "\n" for r in reqs).encode())
for _ in reqs:
    print(f.readline().decode().strip(), flush=True)
EOF
timeout 20 python3 "$T/pipe.py" "$T/p.sock" "$T/p1.qcow2" 2 >"$T/pipe.out" 2>&1 ||
	{ cat "$T/pipe.out"; fail "pipelined requests"; }
[ "$(sed -n 1p "$T/pipe.out" | jq -c .)" = '{"return":{}}' ] ||
	{ cat "$T/pipe.out"; fail "the snapshot's answer is not the first line"; }
[ "$(sed -n 2,3p "$T/pipe.out" | jq -r .return.status | sort -u)" = running ] ||
	{ cat "$T/pipe.out"; fail "the query-status answers after the snapshot's"; }
sed -n 2,3p "$T/pipe.out" | grep -q disk-snapshot &&
	{ cat "$T/pipe.out"; fail "query-status after the snapshot's answer still shows it pending"; }
echo "ok: pipelined snapshot + 2 query-status answered in order"

# a client that goes away while its snapshot is pending: the snapshot still
# completes (the VM goes on in p3.qcow2), other clients are served, and its
# connection is closed once answered (16 clients connect after it)
cat >"$T/gone.py" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(15)
s.connect(sys.argv[1])
s.makefile("rb").readline()   # the greeting
s.sendall((json.dumps({"execute": "blockdev-snapshot-sync", "arguments":
    {"device": "virtio-blk0", "snapshot-file": sys.argv[2]}}) + "\n").encode())
s.close()
EOF
timeout 20 python3 "$T/gone.py" "$T/p.sock" "$T/p3.qcow2" || fail "the client that goes away"
for ((i = 0; i < 200; i++)); do [ -e "$T/p3.qcow2" ] && break; sleep 0.01; done
[ -e "$T/p3.qcow2" ] || fail "the gone client's snapshot never made its overlay"
[ "$(ctl "$T/p.sock" query-status | jq -r .status)" = running ] ||
	fail "query-status while a gone client's snapshot is pending"
# a save is refused until the snapshot has ended (15 s at most)
for ((i = 0; i < 150; i++)); do
	out=$(ctl "$T/p.sock" save "{\"path\": \"$T/pst.cowvm\", \"resume\": true}" 2>&1) && break
	echo "$out" | grep -q "a disk snapshot is in progress" || fail "save: unexpected error: $out"
	sleep 0.1
done
[ -e "$T/pst.cowvm" ] || fail "the gone client's snapshot never ended (a save still refused after 15 s)"
cat >"$T/many.py" <<'EOF'
import socket, sys
socks = []
for i in range(16):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sys.argv[1])
    line = s.makefile("rb").readline()
    if b'"cowvm"' not in line:
        print("connection %d: %s" % (i + 1, line.decode().strip()))
        sys.exit(1)
    socks.append(s)
print("16 connections greeted")
EOF
timeout 20 python3 "$T/many.py" "$T/p.sock" >"$T/many.out" 2>&1 ||
	{ cat "$T/many.out"; fail "the gone client's connection was kept after its answer"; }
echo "ok: a client gone while its snapshot was pending: the snapshot completed, its connection closed"

timeout 20 python3 "$T/pipe.py" "$T/p.sock" "$T/p2.qcow2" 0 >"$T/pend.out" 2>&1 &
PEND=$!
cleanup_pids+=("$PEND")
for ((i = 0; i < 200; i++)); do [ -e "$T/p2.qcow2" ] && break; sleep 0.01; done
[ -e "$T/p2.qcow2" ] || fail "the second snapshot's overlay never appeared"
tq=$(now_ms)
ctl "$T/p.sock" quit >/dev/null || fail "quit during a pending snapshot"
tq=$(( $(now_ms) - tq ))
wait_exit "$PID" 30
expect_rc 0 "$T/p" "a run quit during a pending snapshot"
wait "$PEND" || true
grep -q "cancelled: the VM's run ended first" "$T/pend.out" ||
	{ cat "$T/pend.out"; fail "the pending client was not told its snapshot was cancelled (the quit took $tq ms of the worker's $PDELAY ms)"; }
[ -e "$T/p2.qcow2" ] && fail "the cancelled snapshot left its overlay"
qemu-img check -q "$T/p1.qcow2" || fail "qemu-img check: p1.qcow2 after the quit"
qemu-img check -q "$T/p3.qcow2" || fail "qemu-img check: p3.qcow2 after the quit"
depth=$(qemu-img info --backing-chain --output=json "$T/p3.qcow2" | jq length)
[ "$depth" = 3 ] || fail "chain depth $depth after the cancelled snapshot, expected 3 (p3, p1, p)"
echo "ok: quit during a pending snapshot (answered in $tq ms): the client told it was cancelled, no file left"

# --- SIGUSR2 (--save-on-signal) during a pending snapshot: the save waits
# for the snapshot's end, then is made (naming the overlay) and ends the run
qemu-img create -q -f qcow2 "$T/u.qcow2" 64M
COWVM_TEST_SNAPSHOT_DELAY_MS=$PDELAY start_guest "$T/u" "cowvm.test=counter" \
	--disk "$T/u.qcow2" --control "$T/u.sock" --save-on-signal "$T/u.state"
wait_sock "$T/u.sock"
( timeout 30 "$COWVM" control "$T/u.sock" blockdev-snapshot-sync \
	"{\"device\": \"vda\", \"snapshot-file\": \"$T/u1.qcow2\"}" >"$T/usnap.out" 2>&1
  echo $? >"$T/usnap.rc" ) &
cleanup_pids+=("$!")
for ((i = 0; i < 1000; i++)); do [ -e "$T/u1.qcow2" ] || [ -s "$T/usnap.rc" ] && break; sleep 0.01; done
[ -e "$T/u1.qcow2" ] || { cat "$T/usnap.out"; fail "no overlay u1.qcow2 within 10 s"; }
kill -USR2 "$PID"
sleep 0.3
[ -s "$T/usnap.rc" ] && fail "the snapshot answered within 0.3 s of the signal (the check needs it pending)"
[ -e "$T/u.state" ] && fail "the state file was written while the snapshot was pending"
wait_exit "$PID" 30
expect_rc 0 "$T/u" "a save asked for during a pending snapshot"
[ "$(cat "$T/usnap.rc" 2>/dev/null)" = 0 ] || { cat "$T/usnap.out"; fail "the snapshot before the save failed"; }
[ -s "$T/u.state" ] || { cat "$T/u.err"; fail "no state file after SIGUSR2 during a pending snapshot"; }
grep -aq "path=$T/u1.qcow2" "$T/u.state" || fail "the state file does not name the overlay"
echo "ok: SIGUSR2 during a pending snapshot: saved after it, naming the overlay; the run ended"
