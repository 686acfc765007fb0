# `cowvm events` against misbehaving or dying VMMs (a fake control socket
# served by python3; no KVM):
#  - --timeout S bounds the whole run, the connect and the handshake too: a
#    VMM that accepts but never greets, and one whose listen backlog is full
#    (a hung loop thread: connect(2) on a UNIX socket would wait for ever);
#    `cowvm control` to the latter ends after its reply time too;
#  - a VMM with all its connections taken refuses with an error line:
#    cowvm events and cowvm control say so;
#  - the VMM closing the connection in the middle of an event line is an
#    error (exit 1), not "the VM ended";
#  - the connection ending without a SHUTDOWN (the VMM was killed, or cut
#    this client off for not reading) is an error (exit 1), with the events
#    that came printed; ending after a SHUTDOWN is exit 0;
#  - each event reaches a pipe at once (stdout flushed per line); a reader
#    of the pipe that goes away ends it at once (exit 0), not only when the
#    next event comes (SIGPIPE);
#  - `cowvm control` to a VMM that takes the command and never answers:
#    --timeout S ends it after S s, saying the VMM may still finish it; save
#    waits past the 10 s of the quick commands by default.
# timeout: 150
. "$(dirname "$0")/../lib.sh"
need_cmd python3

# fakevmm.py PATH MODE: serve one events client as MODE says. Writes
# PATH.ready once it listens.
cat >"$T/fakevmm.py" <<'EOF'
import os, socket, sys, time
path, mode = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(0)
hogs = []
if mode == "backlog":
    # a loop thread that never accepts: fill the backlog (a UNIX listener
    # with backlog 0 takes one pending connection)
    for _ in range(2):
        c = socket.socket(socket.AF_UNIX)
        c.setblocking(False)
        try:
            c.connect(path)
        except BlockingIOError:
            pass
        hogs.append(c)
open(path + ".ready", "w").close()
if mode == "backlog":
    time.sleep(60)
    sys.exit(0)
if mode == "busy":
    # all connections taken: each client gets the refusal line (two clients)
    for _ in range(2):
        c, _ = s.accept()
        c.sendall(b'{"error": {"class": "GenericError", "desc": "too many connections '
                  b'to the control socket (at most 16 at once)"}}\n')
        c.close()
    sys.exit(0)
c, _ = s.accept()
if mode == "silent":
    time.sleep(60)
    sys.exit(0)
if mode.startswith("mute"):
    # greets, takes the command, never answers (a save of a large VM)
    c.sendall(b'{"cowvm": {"version": "fake", "pid": 1}}\n')
    c.makefile("rb").readline()
    time.sleep(60)
    sys.exit(0)
def ev(name, data=None):
    d = ', "data": %s' % data if data else ""
    return ('{"event": "%s"%s, "timestamp": {"seconds": %d, "microseconds": 1}}\n'
            % (name, d, int(time.time()))).encode()
c.sendall(b'{"cowvm": {"version": "fake", "pid": 1}}\n')
f = c.makefile("rb")
if b"qmp_capabilities" not in f.readline():
    sys.exit("no qmp_capabilities")
c.sendall(b'{"return": {}}\n')
c.sendall(ev("STOP"))
if mode == "midline":
    c.sendall(ev("RESUME")[:20])
elif mode == "slow":
    time.sleep(3)   # the consumer must have the STOP by now
    c.sendall(ev("SHUTDOWN", '{"guest": false, "reason": "host-qmp-quit"}'))
elif mode == "idle":
    time.sleep(30)   # a VM that does nothing for a while
elif mode == "shutdown":
    c.sendall(ev("SHUTDOWN", '{"guest": false, "reason": "host-qmp-quit"}'))
c.close()
EOF

# fake MODE: start the fake VMM on $T/MODE.sock, wait until it listens
fake() {
	timeout 70 python3 "$T/fakevmm.py" "$T/$1.sock" "$1" &
	cleanup_pids+=($!)
	disown $!   # killed at the end without a "Killed" line
	for ((i = 0; i < 100; i++)); do
		[ -e "$T/$1.sock.ready" ] && return 0
		sleep 0.05
	done
	fail "the fake VMM ($1) did not start"
}
# evt ARGS...: cowvm events, bounded; sets RC and MS (its run time)
evt() {
	local t0=$(date +%s%N)
	timeout 20 "$COWVM" events "$@" >"$T/o" 2>"$T/e"; RC=$?
	MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}

# --- --timeout bounds the handshake ---
fake silent
evt --socket "$T/silent.sock" --timeout 1
[ "$RC" = 1 ] && grep -q "no greeting" "$T/e" || fail "silent VMM: exit $RC: $(cat "$T/e")"
[ "$MS" -le 3000 ] || fail "silent VMM: --timeout 1 took $MS ms"
echo "ok: a VMM that never greets: exit 1 after $MS ms ($(cat "$T/e"))"

fake backlog
evt --socket "$T/backlog.sock" --timeout 1
[ "$RC" = 1 ] || fail "full backlog: exit $RC after $MS ms: $(cat "$T/e")"
[ "$MS" -le 3000 ] || fail "full backlog: --timeout 1 took $MS ms"
echo "ok: a VMM that never accepts: exit 1 after $MS ms ($(cat "$T/e"))"
# the same for one command (cowvm control, and pause/resume/stop through
# cli_control_call): bounded by its 10 s reply time, not for ever
t0=$(date +%s%N)
timeout 30 "$COWVM" control "$T/backlog.sock" query-status >"$T/o" 2>"$T/e"; RC=$?
MS=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$RC" = 1 ] && grep -q "did not accept the connection" "$T/e" ||
	fail "cowvm control, full backlog: exit $RC after $MS ms: $(cat "$T/e")"
[ "$MS" -le 15000 ] || fail "cowvm control, full backlog: took $MS ms"
echo "ok: cowvm control to a VMM that never accepts: exit 1 after $MS ms ($(cat "$T/e"))"

# --- a VMM with all its connections taken refuses with a line: said so ---
fake busy
evt --socket "$T/busy.sock" --timeout 5
[ "$RC" = 1 ] && grep -q "refused the connection: too many connections" "$T/e" ||
	fail "busy VMM: cowvm events exit $RC: $(cat "$T/e")"
timeout 20 "$COWVM" control "$T/busy.sock" query-status >"$T/o" 2>"$T/e"; RC=$?
[ "$RC" = 1 ] && grep -q "refused the connection: too many connections" "$T/e" ||
	fail "busy VMM: cowvm control exit $RC: $(cat "$T/e")"
echo "ok: a VMM with every connection taken: $(cat "$T/e")"

# --- how the connection ends ---
fake midline
evt --socket "$T/midline.sock" --json
[ "$RC" = 1 ] && grep -q "middle of a line" "$T/e" || fail "midline: exit $RC: $(cat "$T/e")"
[ "$(jq -r .event "$T/o" | tr '\n' ' ')" = "STOP " ] || fail "midline: printed $(cat "$T/o")"
echo "ok: EOF in the middle of a line: exit 1 ($(cat "$T/e"))"

fake noshutdown
evt --socket "$T/noshutdown.sock"
[ "$RC" = 1 ] && grep -q "without a SHUTDOWN" "$T/e" || fail "no SHUTDOWN: exit $RC: $(cat "$T/e")"
grep -q ' STOP$' "$T/o" || fail "no SHUTDOWN: the STOP was not printed: $(cat "$T/o")"
echo "ok: EOF without SHUTDOWN: exit 1 ($(cat "$T/e"))"

fake shutdown
evt --socket "$T/shutdown.sock"
[ "$RC" = 0 ] || fail "SHUTDOWN then EOF: exit $RC: $(cat "$T/e")"
[ "$(awk '{ print $3 }' "$T/o" | tr '\n' ' ')" = "STOP SHUTDOWN " ] || fail "SHUTDOWN then EOF: $(cat "$T/o")"
echo "ok: SHUTDOWN then EOF: exit 0"

# --- each line reaches a pipe at once ---
fake slow
timeout 20 "$COWVM" events --socket "$T/slow.sock" --json 2>"$T/e" |
	{ IFS= read -r l; date +%s%N >"$T/first"; echo "$l" >"$T/firstline"; cat >/dev/null; } &
p=$!
t0=$(date +%s%N)
wait "$p"
[ -s "$T/first" ] || fail "slow: nothing read from the pipe"
ms=$(( ($(cat "$T/first") - t0) / 1000000 ))
grep -q '"STOP"' "$T/firstline" || fail "slow: first line $(cat "$T/firstline")"
[ "$ms" -lt 2500 ] || fail "slow: the STOP reached the pipe after $ms ms (stdout not flushed per event)"
echo "ok: piped: the first event read after $ms ms"

# --- cowvm control: a reply that does not come in time ---
# --timeout bounds it, and the message says the VMM may still finish
fake mute
t0=$(date +%s%N)
timeout 20 "$COWVM" control --timeout 2 "$T/mute.sock" save '{"path": "x"}' >"$T/o" 2>"$T/e"; RC=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$RC" = 1 ] || fail "control --timeout 2 to a mute VMM: exit $RC: $(cat "$T/e")"
[ "$ms" -ge 1900 ] && [ "$ms" -lt 6000 ] || fail "control --timeout 2: gave up after $ms ms"
grep -q "no reply to 'save' within 2000 ms: the VMM may still be running it" "$T/e" ||
	fail "control --timeout 2: message $(cat "$T/e")"
echo "ok: control --timeout 2: exit 1 after $ms ms ($(cat "$T/e"))"
# save waits longer than the 10 s of the quick commands by default
fake mute2
timeout 13 "$COWVM" control "$T/mute2.sock" save '{"path": "x"}' >"$T/o" 2>"$T/e"; RC=$?
[ "$RC" = 124 ] || fail "control save to a mute VMM: exit $RC before 13 s (gave up at the quick commands' 10 s?): $(cat "$T/e")"
echo "ok: control save still waiting after 13 s"
for bad in 0 -1 x 86401; do
	"$COWVM" control --timeout "$bad" "$T/mute.sock" query-status >"$T/o" 2>"$T/e"; RC=$?
	[ "$RC" = 2 ] && grep -q "is not a number of seconds" "$T/e" ||
		fail "control --timeout $bad: exit $RC: $(cat "$T/e")"
done
echo "ok: control --timeout refuses 0, -1, x, 86401"

# --- a reader that goes away ends it at once, not at the next event ---
fake idle
t0=$(date +%s%N)
timeout 20 "$COWVM" events --socket "$T/idle.sock" 2>"$T/e" | head -1 >"$T/o"
st=("${PIPESTATUS[@]}")
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
grep -q ' STOP$' "$T/o" || fail "| head -1: $(cat "$T/o")"
[ "${st[0]}" = 0 ] || fail "| head -1: cowvm events exit ${st[0]} after $ms ms: $(cat "$T/e")"
[ "$ms" -lt 5000 ] || fail "| head -1: took $ms ms (waited for the next event)"
echo "ok: | head -1 returned after $ms ms"
echo "ok"
