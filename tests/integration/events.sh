# The control socket's QMP-style events (core/control.h) and `cowvm events`:
#  - a client that never sends qmp_capabilities gets exactly the greeting
#    and one reply per request, even while another client gets events;
#    cowvm control (cli_control_call) works as before;
#  - after qmp_capabilities: STOP before pause's reply, RESUME before
#    resume's, with timestamps (now, in order); a second qmp_capabilities is
#    refused; a pause of a paused VM tells nothing;
#  - SHUTDOWN {guest false, reason host-qmp-quit} on quit, host-signal on
#    SIGTERM, and it reaches the clients before the socket closes;
#  - cowvm events: human and --json output, --count, --timeout, the exit
#    statuses, a catalog VM (not running: refused; running: pause, resume,
#    stop through the catalog);
#  - a full disk under werror=enospc (the VM paused on it, then resumed
#    while still full, so that the client is surely subscribed): RESUME,
#    BLOCK_IO_ERROR {device, operation write, action stop, nospace true,
#    reason} for each retried request, then STOP; resumed after space came
#    back: RESUME, and the guest's own poweroff (disk-write ends) is
#    SHUTDOWN {guest true, reason guest-shutdown}.
# timeout: 240
. "$(dirname "$0")/../lib.sh"
need_kvm
need_cmd python3
need_cmd jq
[ -f "$TESTGUEST" ] || fail "no test guest at $TESTGUEST"

# qmp.py SOCKET plain|events CMD...: a bounded client (each wait 10 s at
# most). Prints every line it receives. plain: sends each CMD and fails on
# any line that is not a reply, and on any line after the last reply (0.5 s).
# events: sends qmp_capabilities first; a reply ends each CMD; with
# WAIT_EVENT=NAME, then reads on until an event NAME came.
cat >"$T/qmp.py" <<'EOF'
import os
import json, socket, sys
path, mode, cmds = sys.argv[1], sys.argv[2], sys.argv[3:]
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(path)
buf = b""
def line():
    global buf
    while b"\n" not in buf:
        d = s.recv(65536)
        if not d:
            sys.exit("EOF from the VMM")
        buf += d
    l, buf = buf.split(b"\n", 1)
    print(l.decode(), flush=True)
    return json.loads(l)
if "cowvm" not in line():
    sys.exit("no greeting")
if mode == "events":
    cmds = ["qmp_capabilities"] + cmds
for c in cmds:
    s.sendall((json.dumps({"execute": c}) + "\n").encode())
    while True:
        o = line()
        if "return" in o or "error" in o:
            break
        if mode == "plain":
            sys.exit("a plain client got a line that is not a reply")
if os.environ.get("WAIT_EVENT"):
    while line().get("event") != os.environ["WAIT_EVENT"]:
        pass
if mode == "plain":
    s.settimeout(0.5)
    try:
        d = s.recv(65536)
    except socket.timeout:
        d = b""
    if buf or d:
        sys.exit("a plain client got more lines: %r" % (buf + d))
EOF
qmp() { timeout 20 python3 "$T/qmp.py" "$@"; }
ev() { timeout 60 "$COWVM" events "$@"; }
# ts_ok FILE: every event line's timestamp is now (within 10 s) and they do
# not go back
ts_ok() {
	jq -s -e --argjson now "$(date +%s)" '
		[.[] | select(.event) | .timestamp] as $t
		| ($t | length) > 0
		and all($t[]; (.seconds - $now | fabs) <= 10 and .microseconds >= 0 and .microseconds < 1000000)
		and ([$t[] | .seconds * 1000000 + .microseconds] as $u | $u == ($u | sort))' "$1" >/dev/null
}
# wait_gone PID SECS: until the background client PID has ended; sets RC
wait_gone() { wait_exit "$@"; }
# sync_clients SOCKET FILE...: pause and resume (cowvm control) until every
# FILE (the output of a background cowvm events) has 2 lines: the clients
# have subscribed (they send qmp_capabilities on their own time; one that
# did between a pause and its resume starts with RESUME)
sync_clients() {
	local sock=$1 i f ok; shift
	for ((i = 0; i < 50; i++)); do
		timeout 15 "$COWVM" control "$sock" pause >/dev/null || fail "pause (sync)"
		timeout 15 "$COWVM" control "$sock" resume >/dev/null || fail "resume (sync)"
		sleep 0.1
		ok=1
		for f in "$@"; do [ "$(wc -l <"$f")" -ge 2 ] || ok=0; done
		[ $ok = 1 ] && return 0
	done
	fail "the event clients did not subscribe within 10 s"
}
# seq FILE: the event names of FILE (--json lines) on one line
seq_json() { jq -r .event "$1" | tr '\n' ' '; }
seq_txt() { awk '{ print $3 }' "$1" | tr '\n' ' '; }

# --- run states, a plain client next to an event client ---
start_guest "$T/c" "cowvm.test=counter" --control "$T/vm.sock"
vm=$PID
wait_for "$T/c" '^tick 2$' 10
ev --socket "$T/vm.sock" --json >"$T/all.json" 2>"$T/all.err" &
allpid=$!
ev --socket "$T/vm.sock" >"$T/all.txt" 2>"$T/all.txt.err" &
txtpid=$!
sync_clients "$T/vm.sock" "$T/all.json" "$T/all.txt"
qmp "$T/vm.sock" plain pause query-status resume >"$T/plain" 2>&1 ||
	{ cat "$T/plain"; fail "a client without qmp_capabilities got an event line (or no reply)"; }
[ "$(wc -l <"$T/plain")" = 4 ] || { cat "$T/plain"; fail "plain client: expected greeting + 3 replies"; }
jq -e -s '.[0].cowvm and (.[1:] | all(has("return")))' "$T/plain" >/dev/null ||
	{ cat "$T/plain"; fail "plain client lines"; }
echo "ok: a client without qmp_capabilities: greeting and 3 replies, nothing else"

# an event client: STOP before pause's reply, RESUME before resume's; a
# second pause tells nothing; a second qmp_capabilities is refused
qmp "$T/vm.sock" events pause pause query-status resume resume qmp_capabilities >"$T/sub" ||
	{ cat "$T/sub"; fail "event client"; }
jq -s -c '.[1:] | map(if .event then .event elif .return then "R" else .error.class end)' "$T/sub" >"$T/seq"
[ "$(cat "$T/seq")" = '["R","STOP","R","R","R","RESUME","R","R","CommandNotFound"]' ] ||
	{ cat "$T/sub"; fail "event client: sequence $(cat "$T/seq")"; }
ts_ok "$T/sub" || { cat "$T/sub"; fail "event timestamps"; }
jq -e -s '[.[] | select(.event)] | all(has("data") | not)' "$T/sub" >/dev/null ||
	{ cat "$T/sub"; fail "STOP and RESUME carry no data (as QEMU sends them)"; }
echo "ok: qmp_capabilities: $(cat "$T/seq")"

# cowvm control still works; cowvm events --count
timeout 15 "$COWVM" control "$T/vm.sock" pause >"$T/o" && grep -qx '{}' "$T/o" || fail "cowvm control pause: $(cat "$T/o")"
timeout 15 "$COWVM" control "$T/vm.sock" resume >"$T/o" && grep -qx '{}' "$T/o" || fail "cowvm control resume: $(cat "$T/o")"
ev --socket "$T/vm.sock" --count 2 --json >"$T/count.json" 2>"$T/count.err" &
cpid=$!
sync_clients "$T/vm.sock" "$T/count.json"
wait_gone "$cpid" 10
[ "$RC" = 0 ] || { cat "$T/count.err"; fail "cowvm events --count 2: exit $RC"; }
case "$(seq_json "$T/count.json")" in
"STOP RESUME " | "RESUME STOP ") ;;
*) cat "$T/count.json"; fail "cowvm events --count 2" ;;
esac
# --timeout: fewer than --count events is an error
t0=$(date +%s%N)
ev --socket "$T/vm.sock" --count 3 --timeout 1 >"$T/o" 2>"$T/e"; RC=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$RC" = 1 ] && grep -q "0 of 3 event(s) came before the timeout" "$T/e" || fail "--count 3 --timeout 1: $RC $(cat "$T/e")"
[ "$ms" -ge 900 ] && [ "$ms" -le 5000 ] || fail "--timeout 1 took $ms ms"
[ -s "$T/o" ] && fail "--timeout 1 printed events: $(cat "$T/o")"
ev --socket "$T/vm.sock" --timeout 1 >"$T/o" 2>"$T/e" || fail "--timeout 1 without --count: exit $? $(cat "$T/e")"
echo "ok: cowvm events --count 2 ($(seq_json "$T/count.json")), --timeout 1 (${ms} ms)"

# quit: SHUTDOWN host-qmp-quit reaches every event client before EOF
qmp "$T/vm.sock" events quit >"$T/quit" || { cat "$T/quit"; fail "quit"; }
wait_exit "$vm" 10
[ "$RC" = 0 ] || fail "quit: exit status $RC"
jq -e -s 'map(select(.event)) | length == 1 and .[0].event == "SHUTDOWN" and .[0].data == {"guest": false, "reason": "host-qmp-quit"}' \
	"$T/quit" >/dev/null || { cat "$T/quit"; fail "SHUTDOWN on quit"; }
wait_gone "$allpid" 10
[ "$RC" = 0 ] || { cat "$T/all.err"; fail "cowvm events --json: exit $RC when the VM ended"; }
wait_gone "$txtpid" 10
[ "$RC" = 0 ] || { cat "$T/all.txt.err"; fail "cowvm events: exit $RC when the VM ended"; }
# the background clients saw every pause and resume: the sync's (at least
# one), the plain client's, the event client's, cowvm control's, the
# second sync's, then SHUTDOWN; nothing twice
exp='^(RESUME )?(STOP RESUME ){5,}SHUTDOWN $'
[[ "$(seq_json "$T/all.json")" =~ $exp ]] || { cat "$T/all.json"; fail "cowvm events --json: events"; }
ts_ok "$T/all.json" || { cat "$T/all.json"; fail "cowvm events --json: timestamps"; }
[[ "$(seq_txt "$T/all.txt")" =~ $exp ]] || { cat "$T/all.txt"; fail "cowvm events: events"; }
grep -Ev '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}[+-][0-9]{4} [A-Z_]+( [a-z-]+=[^ ]+)*$' "$T/all.txt" &&
	fail "cowvm events: lines not in the documented form"
tail -1 "$T/all.txt" | grep -Eq ' SHUTDOWN guest=false reason=host-qmp-quit$' || { cat "$T/all.txt"; fail "human SHUTDOWN line"; }
echo "ok: quit: $(tail -1 "$T/all.txt")"

# SIGTERM: host-signal
start_guest "$T/c2" "cowvm.test=counter" --control "$T/vm2.sock"
vm=$PID
wait_for "$T/c2" '^tick 1$' 10
ev --socket "$T/vm2.sock" --json >"$T/sig.json" 2>"$T/sig.err" &
spid=$!
sync_clients "$T/vm2.sock" "$T/sig.json"
kill -TERM "$vm"
wait_exit "$vm" 10
wait_gone "$spid" 10
[ "$RC" = 0 ] || { cat "$T/sig.err"; fail "cowvm events after SIGTERM: exit $RC"; }
jq -e -s '.[-1].event == "SHUTDOWN" and .[-1].data == {"guest": false, "reason": "host-signal"}
	  and ([.[] | select(.event == "SHUTDOWN")] | length == 1)' "$T/sig.json" >/dev/null ||
	{ cat "$T/sig.json"; fail "SHUTDOWN on SIGTERM"; }
echo "ok: SIGTERM: $(jq -c 'select(.event == "SHUTDOWN") | .data' "$T/sig.json")"

# --- a catalog VM ---
export COWVM_HOME="$T/home" XDG_RUNTIME_DIR="$T/run"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
timeout 30 "$COWVM" create ev1 --kernel "$TESTGUEST" --append "cowvm.test=counter" --mem 64M >/dev/null ||
	fail "cowvm create"
ev ev1 >"$T/o" 2>"$T/e"; RC=$?
[ "$RC" = 1 ] && grep -q "VM 'ev1' is not running (it is stopped)" "$T/e" || fail "events of a stopped VM: $RC $(cat "$T/e")"
ev nosuch >"$T/o" 2>"$T/e"; [ $? = 1 ] || fail "events of an unknown VM: $(cat "$T/e")"
ev >"$T/o" 2>"$T/e"; [ $? = 2 ] || fail "events without NAME is not a usage error"
ev ev1 --count 0 >"$T/o" 2>"$T/e"; [ $? = 2 ] || fail "--count 0 is not a usage error"
timeout 30 "$COWVM" start ev1 >"$T/start.out" 2>&1 || { cat "$T/start.out"; fail "cowvm start"; }
PID=$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' "$T/start.out"); cleanup_pids+=("$PID")
ev ev1 --timeout 60 >"$T/cat.txt" 2>"$T/cat.err" &
epid=$!
for ((i = 0; i < 50; i++)); do
	timeout 15 "$COWVM" pause ev1 >/dev/null || fail "cowvm pause"
	timeout 15 "$COWVM" resume ev1 >/dev/null || fail "cowvm resume"
	sleep 0.1
	[ "$(wc -l <"$T/cat.txt")" -ge 2 ] && break
done
timeout 30 "$COWVM" stop ev1 --timeout 1 >/dev/null || fail "cowvm stop"
wait_gone "$epid" 10
[ "$RC" = 0 ] || { cat "$T/cat.err"; fail "cowvm events ev1: exit $RC"; }
# the test guest ignores the power button: stop's timeout ends the run
[[ "$(seq_txt "$T/cat.txt")" =~ ^(RESUME\ )?(STOP\ RESUME\ )+SHUTDOWN\ $ ]] &&
	tail -1 "$T/cat.txt" | grep -q 'guest=false reason=host-qmp-quit$' ||
	{ cat "$T/cat.txt"; fail "cowvm events NAME: pause, resume, stop"; }
echo "ok: cowvm events ev1: $(seq_txt "$T/cat.txt")"
unset COWVM_HOME XDG_RUNTIME_DIR

# --- a full disk (werror=enospc): BLOCK_IO_ERROR, STOP; then the guest's
# own poweroff ---
need_cmd qemu-img
mkdir -p "$T/mnt"
mount -t tmpfs -o size=80m cowevt "$T/mnt" 2>"$T/mount.err" ||
	skip "cannot mount a tmpfs ($(cat "$T/mount.err")): the full-disk events were not checked"
trap 'umount -l "$T/mnt" 2>/dev/null; cleanup' EXIT
"$HELPERS/stgstress" genbase "$T/base.raw" $((48 << 20)) 9 &&
	qemu-img convert -q -f raw -O qcow2 "$T/base.raw" "$T/base.qcow2" || fail "base image"
"$COWVM" image create "$T/mnt/vm.qcow2" -b "$T/base.qcow2" -F qcow2 >/dev/null || fail "image create"
avail=$(df --output=avail -B1 "$T/mnt" | tail -n 1)
fallocate -l $((avail - (5 << 20))) "$T/mnt/filler" || fail "filling the tmpfs"
start_guest "$T/g" "cowvm.test=disk-write seed=3" --disk "$T/mnt/vm.qcow2" --control "$T/d.sock"
dctl() { timeout 15 "$COWVM" control "$T/d.sock" "$@"; }
# wait_paused SECS: until query-status says paused on an I/O error
wait_paused() {
	local i
	for ((i = 0; i < $1 * 10; i++)); do
		dctl query-status 2>/dev/null | jq -e '.status == "paused" and .reason == "io-error"' >/dev/null &&
			return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	tail -3 "$T/g" "$T/g.err"; fail "the VM did not pause on the full disk within $1 s"
}
wait_paused 60
# subscribed, then resumed while still full: RESUME (before resume's reply),
# then the retried requests fail again: BLOCK_IO_ERROR (write, stop,
# nospace) for each, then STOP
WAIT_EVENT=STOP qmp "$T/d.sock" events resume >"$T/disk" || { cat "$T/disk"; fail "resume on a full disk"; }
jq -s -r '.[1:] | map(if .event then .event else "R" end) | join(" ")' "$T/disk" >"$T/seq"
grep -Eqx 'R RESUME R (BLOCK_IO_ERROR )+STOP' "$T/seq" || { cat "$T/disk"; fail "full disk: sequence $(cat "$T/seq")"; }
jq -e -s '[.[] | select(.event == "BLOCK_IO_ERROR") | .data] | all(. == {"device": "virtio-blk0",
	  "operation": "write", "action": "stop", "nospace": true, "reason": "No space left on device"})' \
	"$T/disk" >/dev/null || { cat "$T/disk"; fail "BLOCK_IO_ERROR data"; }
ts_ok "$T/disk" || { cat "$T/disk"; fail "full disk: timestamps"; }
wait_paused 10
echo "ok: full disk, resumed: $(sed 's/\(BLOCK_IO_ERROR \)\{2,\}/BLOCK_IO_ERROR... /' "$T/seq"); $(jq -c 'select(.event == "BLOCK_IO_ERROR") | .data' "$T/disk" | head -1)"
# cowvm events on it: subscribed once it saw a pause (resumes while full)
ev --socket "$T/d.sock" --json --timeout 100 >"$T/disk.json" 2>"$T/disk.err" &
dpid=$!
for ((k = 0; k < 20; k++)); do
	dctl resume >/dev/null || fail "resume while full"
	wait_paused 10
	grep -q '"STOP"' "$T/disk.json" && break
done
grep -q '"BLOCK_IO_ERROR"' "$T/disk.json" || { cat "$T/disk.json"; fail "cowvm events: no BLOCK_IO_ERROR"; }
rm -f "$T/mnt/filler"
dctl resume >/dev/null || fail "resume"
wait_exit "$PID" 90
expect_rc 0 "$T/g" "disk-write resumed after space came back"
wait_gone "$dpid" 10
[ "$RC" = 0 ] || { cat "$T/disk.err"; fail "cowvm events on the full-disk VM: exit $RC"; }
jq -e -s '[.[] | .event] as $e | $e[-2:] == ["RESUME", "SHUTDOWN"]
	  and .[-1].data == {"guest": true, "reason": "guest-shutdown"}' "$T/disk.json" >/dev/null ||
	{ cat "$T/disk.json"; fail "RESUME, then SHUTDOWN guest-shutdown when the guest ended"; }
ts_ok "$T/disk.json" || { cat "$T/disk.json"; fail "full disk: timestamps"; }
echo "ok: resumed, the guest powered off: $(jq -c 'select(.event == "SHUTDOWN") | .data' "$T/disk.json")" \
	"($(jq -r .event "$T/disk.json" | sort | uniq -c | tr -s ' \n' ' '))"
echo "ok"
