# The VMM control socket: greeting, query-status, pause/resume (ticks stop and
# go on), save over the socket, errors, stop with a timeout, quit.
# timeout: 120
. "$(dirname "$0")/../lib.sh"
need_kvm

ctl() { timeout 15 "$COWVM" control "$T/vm.sock" "$@"; }
ticks() { grep -c '^tick' "$T/c" 2>/dev/null || true; }

start_guest "$T/c" "cowvm.test=counter" --control "$T/vm.sock"
vm=$PID
wait_for "$T/c" '^tick 2$' 10
[ -S "$T/vm.sock" ] || fail "no control socket"
[ "$(stat -c %a "$T/vm.sock")" = 600 ] || fail "control socket mode is $(stat -c %a "$T/vm.sock"), not 600"

out=$(ctl query-status) || fail "query-status failed"
echo "$out" | grep -q '"status":"running"' || fail "query-status: $out"
echo "$out" | grep -q "\"pid\":$vm" || fail "query-status pid: $out"

ctl pause >/dev/null || fail "pause failed"
ctl query-status | grep -q '"status":"paused"' || fail "not paused after pause"
n1=$(ticks); sleep 0.6; n2=$(ticks)
[ "$n1" -eq "$n2" ] || fail "ticks went on while paused ($n1 -> $n2)"
ctl resume >/dev/null || fail "resume failed"
wait_for "$T/c" "^tick $n2\$" 5
note "paused at $n1 ticks, resumed"

# errors: unknown command, bad arguments, not JSON
ctl frobnicate >"$T/o" 2>&1 && fail "an unknown command succeeded"
grep -q 'CommandNotFound' "$T/o" || fail "unknown command: $(cat "$T/o")"
ctl save '{"resume":true}' >"$T/o" 2>&1 && fail "save without a path succeeded"
grep -q 'InvalidParameter' "$T/o" || fail "save without path: $(cat "$T/o")"
ctl stop '{"timeout":"soon"}' >"$T/o" 2>&1 && fail "stop with a bad timeout succeeded"
timeout 5 "$COWVM" control "$T/vm.sock" pause 'nope' >"$T/o" 2>&1; [ $? -eq 2 ] || fail "bad JSON arguments were not a usage error"

# save through the socket, keep running; the file restores
ctl save "{\"path\":\"$T/s.st\",\"resume\":true}" >"$T/o" || fail "save failed: $(cat "$T/o")"
grep -q '"file-bytes"' "$T/o" || fail "save reply: $(cat "$T/o")"
n=$(ticks); wait_for "$T/c" "^tick $((n + 2))\$" 5
start_vmm "$T/r" --restore "$T/s.st"; rpid=$PID
wait_for "$T/r" '^tick [0-9]+$' 5
kill -TERM "$rpid"; wait_exit "$rpid" 10

# stop: the test guest ignores the power button, so the timeout ends the run
t0=$(date +%s%N)
ctl stop '{"timeout":1}' >/dev/null || fail "stop failed"
for ((i = 0; i < 100; i++)); do kill -0 "$vm" 2>/dev/null || break; sleep 0.05; done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
wait_exit "$vm" 5
[ "$RC" -eq 0 ] || fail "stop: exit status $RC"
[ "$ms" -ge 900 ] && [ "$ms" -le 3000 ] || fail "stop with timeout 1 took $ms ms"
[ -e "$T/vm.sock" ] && fail "control socket left behind"

# quit ends at once
start_guest "$T/q" "cowvm.test=counter" --control "$T/vm.sock"
wait_for "$T/q" '^tick 1$' 10
ctl quit >/dev/null || fail "quit failed"
wait_exit "$PID" 5
[ "$RC" -eq 0 ] || fail "quit: exit status $RC"

# a control path that is a regular file is refused, and left alone
echo keep > "$T/file"
timeout 10 "$COWVM" run --kernel "$TESTGUEST" --append cowvm.test=hello --console none \
	--control "$T/file" 2>"$T/o"; RC=$?
[ "$RC" -eq 1 ] && grep -q "exists and is not a socket" "$T/o" || fail "control on a file: $RC $(cat "$T/o")"
[ "$(cat "$T/file")" = keep ] || fail "the file was changed"
echo "ok"
