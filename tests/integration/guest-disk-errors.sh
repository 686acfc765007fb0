# What a VM's disk does when the host cannot write (werror=/rerror=, as
# QEMU's):
#  - storage/: after a failed flush every later flush fails (EIO), raw and
#    qcow2 (the failsync shim fails one fdatasync as Linux reports a
#    writeback error: once);
#  - the test guest's disk-write into an overlay on a full tmpfs with a
#    control socket (werror=enospc, the default): the VM pauses,
#    query-status says "io-error" and why, stderr says so once per pause, a
#    resume while still full pauses again; a save keeps the failed requests
#    (virtio-blk record version 3, with each failure's message), the
#    restored VM retries them at once, telling on stderr the saved error
#    (still full: paused again), and once space is back a resume retries
#    them and the guest finishes with no error; disk-verify then passes,
#    qemu-img check finds nothing (no corruption, no leak);
#  - without a control socket (nothing could resume it), and with
#    werror=report: the guest gets the I/O error (exit 5), stderr says so;
#  - werror=stop pauses on any error (a failed fdatasync: EIO), enospc does
#    not; a read error (a damaged compressed cluster) goes to the guest under
#    rerror=report (default) and pauses the VM under rerror=stop;
#  - a failed flush at VM exit is told on stderr.
# timeout: 300
. "$(dirname "$0")/../lib.sh"
need_cmd qemu-img
need_cmd jq

FAILSYNC="$HELPERS/failsync.so"
[ -f "$FAILSYNC" ] && [ -x "$HELPERS/stgsync" ] || fail "test helpers not built"
shim() { ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
	LD_PRELOAD="$FAILSYNC" FAILSYNC_FLAG="$T/syncflag" "$@"; }

# --- storage/: a failed flush stays failed ---
truncate -s 16M "$T/s.raw"
qemu-img create -q -f qcow2 "$T/s.qcow2" 16M
for f in s.raw s.qcow2; do
	for e in 5 28; do   # EIO, ENOSPC: later flushes fail with EIO either way
		FAILSYNC_ERRNO=$e shim "$HELPERS/stgsync" "$T/$f" "$T/syncflag" >"$T/sync.out" 2>&1 ||
			{ cat "$T/sync.out"; fail "$f: a flush after a failed one (errno $e)"; }
		echo "ok: $f through storage/: $(tr '\n' ' ' <"$T/sync.out")"
	done
done
# cow/ itself: a failed fdatasync with ENOSPC, then flushes fail with EIO
# (a VM with werror=enospc must not wait for space that cannot help)
FAILSYNC_ERRNO=28 shim "$HELPERS/cowio" syncfail "$T/s.qcow2" "$T/syncflag" >"$T/sync.out" 2>&1 ||
	{ cat "$T/sync.out"; fail "cow/: a flush after an fdatasync that failed with ENOSPC"; }
grep -q "fdatasync failed: No space left on device" "$T/sync.out" ||
	{ cat "$T/sync.out"; fail "cow/: the first failure should say ENOSPC"; }
echo "ok: cow/ after an ENOSPC fdatasync: $(tail -1 "$T/sync.out" | cut -c1-80)..."


need_kvm
[ -f "$TESTGUEST" ] || fail "no test guest at $TESTGUEST"
mkdir -p "$T/mnt"
mount -t tmpfs -o size=80m cowwerr "$T/mnt" 2>"$T/mount.err" ||
	skip "cannot mount a tmpfs ($(cat "$T/mount.err")): only the storage/ flush checks ran"
trap 'umount -l "$T/mnt" 2>/dev/null; cleanup' EXIT
MNT="$T/mnt"

# 48 MiB base (the guest's disk-write covers it whole)
"$HELPERS/stgstress" genbase "$T/base.raw" $((48 << 20)) 9 &&
	qemu-img convert -q -f raw -O qcow2 "$T/base.raw" "$T/base.qcow2" || fail "base image"
# new_overlay FREE: a fresh overlay on the tmpfs with about FREE bytes left
new_overlay() {
	local avail
	rm -f "$MNT"/*
	"$COWVM" image create "$MNT/vm.qcow2" -b "$T/base.qcow2" -F qcow2 >/dev/null || fail "image create"
	avail=$(df --output=avail -B1 "$MNT" | tail -n 1)
	fallocate -l $((avail - $1)) "$MNT/filler" || fail "filling the tmpfs"
}
ctl() { "$COWVM" control "$T/ctl.sock" "$@"; }
# wait_status STATUS SECS: until query-status says STATUS (output in $T/st)
wait_status() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		ctl query-status >"$T/st" 2>/dev/null && jq -e ".status == \"$1\"" "$T/st" >/dev/null && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$T/st" 2>/dev/null; tail -3 "$T/g.log" "$T/g.log.err"
	fail "the VM did not become $1 within $2 s"
}
# repause PATTERN N WHAT: resume the VM while its error lasts; the retry
# fails again, so it pauses again and stderr has N lines matching PATTERN
repause() {
	local i
	ctl resume >/dev/null || fail "resume"
	for ((i = 0; i < 100; i++)); do
		[ "$(grep -c "$1" "$T/g.log.err")" -ge "$2" ] && break
		sleep 0.1
	done
	wait_status paused 30
	[ "$(grep -c "$1" "$T/g.log.err")" = "$2" ] || { cat "$T/g.log.err"; fail "$3"; }
}
# clean_check IMG: qemu-img check finds nothing, not even a leak (failed
# allocating writes free their clusters, cow.h I17), and no corrupt bit
clean_check() {
	qemu-img check "$1" >"$T/check.out" 2>&1
	local rc=$?
	# 0 clean; 3 leaks; 2 corruption, 1 check failed
	[ $rc -eq 0 ] || { tail -5 "$T/check.out"; fail "qemu-img check $1: exit $rc"; }
	jq -e '.["format-specific"].data.corrupt != true' <(qemu-img info --output=json "$1") >/dev/null ||
		fail "$1 is marked corrupt"
}

# --- werror=enospc (default), with a control socket: pause, resume ---
new_overlay 5242880
start_guest "$T/g.log" "cowvm.test=disk-write seed=3" --disk "$MNT/vm.qcow2" --control "$T/ctl.sock"
wait_status paused 60
jq -e '.reason == "io-error" and (.["io-error"] | test("vm.qcow2.*No space left on device"))' "$T/st" \
	>/dev/null || { cat "$T/st"; fail "query-status of a VM paused on a full disk"; }
n=$(grep -c "No space left on device: VM paused (werror=enospc)" "$T/g.log.err")
[ "$n" = 1 ] || { cat "$T/g.log.err"; fail "expected one host message for the pause, got $n"; }
echo "ok: paused on a full disk: $(jq -c '{status, reason}' "$T/st")"
# resumed while still full: paused again, told again
repause 'VM paused (werror=enospc)' 2 "a resume while full should pause the VM again, with one more message"
echo "ok: a resume while still full paused it again"
# a save keeps the waiting requests (as QEMU's migration stream does): the
# VMM saves and ends; the restored VM retries them as soon as it runs, the
# disk still full: paused again, told; space back, resumed: the guest ends
# without an error and its data verifies
# with "resume": the VMM goes on, the VM still paused on the error
ctl save '{"path": "'"$T/state0"'", "resume": true}' >"$T/save.out" 2>&1 ||
	{ cat "$T/save.out"; fail "save (resume) of a VM paused on a disk error"; }
[ -s "$T/state0" ] || fail "no state file from the save with resume"
ctl query-status >"$T/st" && jq -e '.status == "paused" and .reason == "io-error"' "$T/st" >/dev/null ||
	{ cat "$T/save.out" "$T/st"; fail "a save with resume changed the run state of a VM paused on an error"; }
ctl save '{"path": "'"$T/state"'"}' >"$T/save.out" 2>&1 ||
	{ cat "$T/save.out"; fail "save of a VM paused on a disk error"; }
wait_exit "$PID" 30
expect_rc 0 "$T/g.log" "the VMM after a save"
[ -s "$T/state" ] || fail "no state file"
grep -q "disk-write ok" "$T/g.log" && fail "disk-write finished before the save"
grep -Eq "vm.qcow2': [0-9]+ failed request\(s\) waiting for a retry go with the saved state" "$T/g.log.err" ||
	{ cat "$T/g.log.err"; fail "the saving VMM did not say the failed requests went with the state"; }
mv "$T/g.log.err" "$T/g0.log.err"
start_vmm "$T/g.log" --restore "$T/state" --control "$T/ctl.sock"
wait_status paused 60
jq -e '.reason == "io-error" and (.["io-error"] | test("vm.qcow2.*No space left on device"))' "$T/st" \
	>/dev/null || { cat "$T/st"; fail "query-status of the restored VM, its disk still full"; }
grep -Eq "vm.qcow2': retrying [0-9]+ request\(s\) that had failed before the VM was saved \(the last error: disk '[^']*vm.qcow2': .* failed: No space left on device" "$T/g.log.err" ||
	{ cat "$T/g.log.err"; fail "the restored VM did not say it retried the saved requests, with the error saved with them"; }
n=$(grep -c "No space left on device: VM paused (werror=enospc)" "$T/g.log.err")
[ "$n" = 1 ] || { cat "$T/g.log.err"; fail "restored, still full: expected one pause message, got $n"; }
echo "ok: saved while paused on a full disk, restored: retried at once, paused again ($(grep -o 'retrying [0-9]* request(s)' "$T/g.log.err"))"
rm -f "$MNT/filler"
ctl resume >/dev/null || fail "resume"
wait_exit "$PID" 90
expect_rc 0 "$T/g.log" "disk-write restored from a save and resumed after space came back"
expect_line "$T/g.log" '^cowvm-guest: disk-write ok sectors=98304$'
clean_check "$MNT/vm.qcow2"
run_guest 90 "$T/v.log" "cowvm.test=disk-verify seed=3" --disk "$MNT/vm.qcow2"
expect_rc 0 "$T/v.log" "disk-verify of what the restored, resumed guest wrote"
echo "ok: restored, space back, resumed: the guest finished without an error and its data verifies ($(grep -c . "$T/g.log.err") host messages)"

# --- a catalog VM (cowvm start): its VMM pauses it, `cowvm resume` retries ---
export COWVM_HOME="$T/home" XDG_RUNTIME_DIR="$T/run"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
new_overlay 5242880
timeout 30 "$COWVM" create full1 --kernel "$TESTGUEST" --append "cowvm.test=disk-write seed=5" \
	--mem 64M --disk "$MNT/vm.qcow2" >/dev/null || fail "cowvm create"
timeout 30 "$COWVM" start full1 >"$T/start.out" 2>&1 || { cat "$T/start.out"; fail "cowvm start"; }
PID=$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' "$T/start.out"); cleanup_pids+=("$PID")
ln -sf "$XDG_RUNTIME_DIR/cowvm/full1.ctl" "$T/ctl.sock"
: >"$T/g.log"; cp /dev/null "$T/g.log.err"
wait_status paused 60
# the catalog still says running (the VMM never waits for its lock): list
# and show ask the VMM, and say paused, with the reason
timeout 10 "$COWVM" list >"$T/list.out" || fail "cowvm list"
grep -q "^full1 *paused (I/O error) .* $PID\$" "$T/list.out" ||
	{ cat "$T/list.out"; fail "cowvm list: a VM paused on a disk error"; }
[ "$(awk '$1 == "full1" { print $2 }' "$T/list.out")" = paused ] || fail "list: column 2"
timeout 10 "$COWVM" list --json >"$T/list.json" || fail "cowvm list --json"
jq -e '.[] | select(.name == "full1") | .state == "paused" and .reason == "io-error"' "$T/list.json" \
	>/dev/null || { cat "$T/list.json"; fail "cowvm list --json: a VM paused on a disk error"; }
timeout 10 "$COWVM" show full1 >"$T/show.out" || fail "cowvm show"
grep -q "^state: *paused (I/O error) (pid $PID)" "$T/show.out" &&
	grep -q "^io-error: .*vm.qcow2.*No space left on device" "$T/show.out" ||
	{ cat "$T/show.out"; fail "cowvm show: a VM paused on a disk error"; }
timeout 10 "$COWVM" show full1 --json >"$T/show.json" || fail "cowvm show --json"
jq -e '.state == "paused" and .reason == "io-error" and (.io_error | test("No space left on device"))' \
	"$T/show.json" >/dev/null || { cat "$T/show.json"; fail "cowvm show --json: paused on a disk error"; }
echo "ok: cowvm list: $(grep '^full1' "$T/list.out" | tr -s ' ')"
timeout 30 "$COWVM" resume full1 >"$T/res.out" 2>&1 ||
	{ cat "$T/res.out"; fail "cowvm resume of a VM paused on a disk error"; }
grep -q "was paused on a disk error (.*No space left on device): retrying" "$T/res.out" ||
	{ cat "$T/res.out"; fail "cowvm resume did not say why the VM was paused"; }
wait_status paused 30   # still full: paused again
rm -f "$MNT/filler"
timeout 30 "$COWVM" resume full1 >"$T/res.out" 2>&1 || { cat "$T/res.out"; fail "cowvm resume"; }
for ((i = 0; i < 600; i++)); do
	[ "$("$COWVM" list | awk '$1 == "full1" { print $2 }')" = stopped ] && break
	sleep 0.1
done
"$COWVM" list --json >"$T/list.json"
jq -e '.[] | select(.name == "full1") | .state == "stopped"' "$T/list.json" >/dev/null ||
	{ cat "$T/list.json"; fail "the resumed catalog VM did not finish"; }
grep -q "disk-write ok sectors=98304" "$COWVM_HOME/logs/full1.log" ||
	{ tail -3 "$COWVM_HOME/logs/full1.log"; fail "the catalog VM's disk-write did not finish"; }
grep -q "VM paused (werror=enospc)" "$COWVM_HOME/logs/full1.vmm.log" ||
	{ cat "$COWVM_HOME/logs/full1.vmm.log"; fail "no host message in the VMM log"; }
clean_check "$MNT/vm.qcow2"
run_guest 90 "$T/v5.log" "cowvm.test=disk-verify seed=5" --disk "$MNT/vm.qcow2"
expect_rc 0 "$T/v5.log" "disk-verify of what the resumed catalog VM wrote"
echo "ok: cowvm start / resume: paused on a full disk, resumed twice, finished and verified"
rm -f "$T/ctl.sock"

# --- no control socket: nothing could resume it, the guest gets the error ---
new_overlay 5242880
run_guest 90 "$T/n.log" "cowvm.test=disk-write seed=3" --disk "$MNT/vm.qcow2"
expect_rc 5 "$T/n.log" "disk-write on a full disk without a control socket"
expect_line "$T/n.log" "request at sector [0-9]* failed, status 1"
grep -q "No space left on device: reported to the guest as an I/O error (werror=enospc, but nothing could resume a paused VM: no control socket)" \
	"$T/n.log.err" || { cat "$T/n.log.err"; fail "no host message for the reported error"; }
clean_check "$MNT/vm.qcow2"
echo "ok: without a control socket the guest gets the error"

# --- werror=report with a control socket: never paused ---
new_overlay 5242880
start_guest "$T/r.log" "cowvm.test=disk-write seed=3" --disk "$MNT/vm.qcow2,werror=report" \
	--control "$T/ctl.sock"
wait_exit "$PID" 90
expect_rc 5 "$T/r.log" "disk-write on a full disk with werror=report"
grep -q "reported to the guest as an I/O error (werror=report)" "$T/r.log.err" ||
	{ cat "$T/r.log.err"; fail "no host message for werror=report"; }
echo "ok: werror=report: the guest gets the error"
rm -f "$MNT"/*

# --- an EIO (failed fdatasync): enospc reports it, stop pauses ---
# disk-write flushes at its end; aio=threads makes the flush a libc
# fdatasync the shim fails. The flag is set before the run: the first
# fdatasync fails (the guest's flush; nothing else syncs before it).
"$COWVM" image create "$T/e.qcow2" -b "$T/base.qcow2" -F qcow2 >/dev/null || fail "image create"
touch "$T/syncflag"
PID=
shim "$COWVM" run --kernel "$TESTGUEST" --append "cowvm.test=disk-write seed=4" \
	--console "file:$T/e1.log" --disk "$T/e.qcow2,aio=threads" --control "$T/ctl.sock" 2>"$T/e1.log.err" &
PID=$!; cleanup_pids+=("$PID")
wait_exit "$PID" 90
expect_rc 5 "$T/e1.log" "disk-write whose flush fails (EIO) with werror=enospc"
grep -Eq "flush failed: Input/output error( \(.*\))?: reported to the guest as an I/O error \(werror=enospc\)" \
	"$T/e1.log.err" || { cat "$T/e1.log.err"; fail "no host message for the failed flush"; }
echo "ok: werror=enospc reports an EIO"
touch "$T/syncflag"
shim "$COWVM" run --kernel "$TESTGUEST" --append "cowvm.test=disk-write seed=4" \
	--console "file:$T/g.log" --disk "$T/e.qcow2,aio=threads,werror=stop" --control "$T/ctl.sock" \
	2>"$T/g.log.err" &
PID=$!; cleanup_pids+=("$PID")
wait_status paused 60
jq -e '.["io-error"] | test("flush failed: Input/output error")' "$T/st" >/dev/null ||
	{ cat "$T/st"; fail "query-status after a failed flush with werror=stop"; }
# the retried flush fails again (a failed fdatasync stays failed): paused again
repause 'VM paused (werror=stop)' 2 "werror=stop: the retried flush should fail and pause again"
ctl quit >/dev/null || fail quit
wait_exit "$PID" 30
grep -q "1 failed request(s) waiting for a retry were dropped" "$T/g.log.err" ||
	{ cat "$T/g.log.err"; fail "no message for requests left waiting at exit"; }
echo "ok: werror=stop pauses on EIO, and the retried flush pauses it again"

# --- a read error (a compressed cluster that does not inflate, as qemu-io
# reads it: EIO): rerror=report (default) gives it to the guest (the host
# message carries cow/'s own words for it), stop pauses
# and a resume retries it (failing again: paused again) ---
qemu-img create -q -f qcow2 "$T/rd.qcow2" 48M &&
	qemu-io -c "write -c -P 0x5a 0 64k" "$T/rd.qcow2" >/dev/null || fail "compressed image"
sz=$(stat -c %s "$T/rd.qcow2")   # the compressed cluster is the file's last bytes
head -c 40 /dev/zero | tr '\0' '\377' | dd of="$T/rd.qcow2" bs=1 seek=$((sz - 60)) conv=notrunc status=none
qemu-io -r -c "read 0 64k" "$T/rd.qcow2" 2>&1 | grep -q "Input/output error" ||
	fail "qemu-io reads the damaged compressed cluster"
run_guest 60 "$T/rr.log" "cowvm.test=disk-verify seed=3" --disk "$T/rd.qcow2,ro"
expect_rc 5 "$T/rr.log" "disk-verify over a cluster that does not read"
grep -Eq "read of [0-9]* bytes at offset 0 failed: Input/output error \(.*corrupt deflate-compressed cluster\): reported to the guest as an I/O error \(rerror=report\)" \
	"$T/rr.log.err" || { cat "$T/rr.log.err"; fail "no host message for the read error"; }
start_guest "$T/g.log" "cowvm.test=disk-verify seed=3" --disk "$T/rd.qcow2,ro,rerror=stop" --control "$T/ctl.sock"
wait_status paused 30
jq -e '.["io-error"] | test("read of .* at offset 0 failed")' "$T/st" >/dev/null ||
	{ cat "$T/st"; fail "query-status after a read error with rerror=stop"; }
repause 'VM paused (rerror=stop)' 2 "rerror=stop: the retried read should pause the VM again"
ctl quit >/dev/null || fail quit
wait_exit "$PID" 30
echo "ok: rerror=report gives a read error to the guest, rerror=stop pauses and retries"

# --- a failed flush at exit is told ---
truncate -s 16M "$T/x.raw"
rm -f "$T/syncflag"
shim "$COWVM" run --kernel "$TESTGUEST" --append "cowvm.test=counter" \
	--console "file:$T/x.log" --disk "$T/x.raw,format=raw,aio=threads" --control "$T/ctl.sock" \
	2>"$T/x.log.err" &
PID=$!; cleanup_pids+=("$PID")
wait_status running 30
touch "$T/syncflag"
ctl quit >/dev/null || fail quit
wait_exit "$PID" 30
grep -q "disk '.*x.raw': the flush at exit failed: Input/output error" "$T/x.log.err" ||
	{ cat "$T/x.log.err"; fail "a failed flush at exit was not told"; }
echo "ok: a failed flush at exit is told: $(grep -o 'the flush at exit failed.*' "$T/x.log.err" | cut -c1-60)..."
echo "all disk-error cases passed"
