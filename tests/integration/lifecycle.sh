#!/bin/bash
# tests/integration/lifecycle.sh — VM lifecycle through the catalog with the
# test guest (cowvm.test=counter: "tick N" every 100 ms): start -> list shows
# running -> console shows ticks -> pause stops them -> resume continues them
# -> stop ends the VMM (the guest ignores the power button: forced after the
# timeout) -> kill -9 of the VMM shows crashed, its sockets gone -> start
# again works. Also: start of a running VM refused, a VM that cannot start
# reports why and stays stopped, stop --force (also of a VMM that does not
# answer), console and pause of a stopped VM refused, two VMs at once,
# concurrent starts of one VM (one wins).
# Every wait is bounded.
# timeout: 120
. "$(dirname "$0")/../lib.sh"
need_kvm

# COWVM_HOME, XDG_RUNTIME_DIR, RUN, cv, expect, state
. "$(dirname "$0")/../lib/catalog-vm.sh"

has() { grep -qF -- "$2" "$T/$1" || fail "$1 lacks '$2': $(head -c 400 "$T/$1")"; }
vm_pid() { "$COWVM" list | awk -v n="$1" '$1 == n { print $NF }'; }
expect_state() { local s; s=$(state "$1"); [ "$s" = "$2" ] || fail "$1 is '$s', want '$2'"; }
# a process that ended (a zombie under an init that does not reap is ended)
alive() { local s; s=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }
wait_gone() {
	local i
	for ((i = 0; i < $2 * 20; i++)); do alive "$1" || return 0; sleep 0.05; done
	fail "process $1 still runs after $2 s"
}
last_tick() { grep -o '^tick [0-9]*$' "$1" | tail -n 1 | cut -d' ' -f2; }
start_vm() {
	expect 0 start "$1"
	has out "started VM '$1' (pid "
	P=$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' "$T/out")
	cleanup_pids+=("$P")
	expect_state "$1" running
	[ "$(vm_pid "$1")" = "$P" ] || fail "list shows pid $(vm_pid "$1") for $1, start said $P"
}
# console NAME FILE: attach in the background (stdin at EOF), output to FILE
console() {
	"$COWVM" console "$1" </dev/null >"$2" 2>"$2.err" &
	CPID=$!
	cleanup_pids+=("$CPID")
}

expect 0 create t1 --kernel "$TESTGUEST" --append cowvm.test=counter --mem 64M
expect 0 create t2 --kernel "$TESTGUEST" --append cowvm.test=counter --mem 64M

# usage and refusals on a stopped VM
expect 2 stop
expect 2 start t1 --timeout x
expect 1 console t1;      has err "VM 't1' is not running (it is stopped)"
expect 1 pause t1;        has err "VM 't1' is stopped, not running"
expect 1 stop t1;         has err "VM 't1' is not running"
expect 1 start nosuch;    has err "no VM named 'nosuch'"

# --- the checked sequence -------------------------------------------------
start_vm t1; vmm=$P
[ -S "$RUN/t1.ctl" ] && [ -S "$RUN/t1.console" ] || fail "no sockets in $RUN"
[ "$(stat -c %a "$RUN/t1.ctl")" = 600 ] || fail "control socket mode $(stat -c %a "$RUN/t1.ctl")"
expect 1 start t1;        has err "VM 't1' is already running (pid $vmm)"

console t1 "$T/con"; con=$CPID
wait_for "$T/con" '^tick [0-9]+$' 5
n=$(last_tick "$T/con"); wait_for "$T/con" "^tick $((n + 2))\$" 5
wait_for "$COWVM_HOME/logs/t1.log" '^tick [0-9]+$' 5   # the console log too

expect 0 pause t1;        has out "paused VM 't1'"
expect_state t1 paused
sleep 0.3; n1=$(last_tick "$T/con"); sleep 0.7; n2=$(last_tick "$T/con")
[ "$n1" = "$n2" ] || fail "ticks went on while paused ($n1 -> $n2)"
expect 1 pause t1;        has err "VM 't1' is already paused"
expect 0 resume t1;       has out "resumed VM 't1'"
expect_state t1 running
wait_for "$T/con" "^tick $((n2 + 2))\$" 5
note "paused at tick $n2, resumed"

# the test guest ignores the power button: the VMM ends the run after 1 s
t0=$(date +%s%N)
expect 0 stop t1 --timeout 1; has out "stopped VM 't1'"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -ge 900 ] && [ "$ms" -le 4000 ] || fail "stop --timeout 1 took $ms ms"
alive "$vmm" && fail "the VMM $vmm still runs after stop"
expect_state t1 stopped
wait_exit "$con" 5
[ "$RC" -eq 0 ] || fail "console exited $RC when the VM went away"
[ -e "$RUN/t1.ctl" ] || [ -e "$RUN/t1.console" ] && fail "sockets left after stop: $(ls "$RUN")"
"$COWVM" show t1 >"$T/show"; has show "stopped: ok"
note "stop --timeout 1 took $ms ms"

# kill -9 of the VMM: crashed, stale sockets removed; start again works
start_vm t1; vmm=$P
kill -9 "$vmm"; wait_gone "$vmm" 5
expect_state t1 crashed
[ -e "$RUN/t1.ctl" ] || [ -e "$RUN/t1.console" ] && fail "stale sockets left: $(ls "$RUN")"
"$COWVM" show t1 >"$T/show"; has show "crash-detected"
expect 1 console t1;      has err "VM 't1' is not running (it is crashed)"
start_vm t1; vmm=$P
console t1 "$T/con2"; con=$CPID
wait_for "$T/con2" '^tick [0-9]+$' 5

# --- two VMs at once --------------------------------------------------------
start_vm t2; vmm2=$P
[ "$vmm" != "$vmm2" ] || fail "one pid for two VMs"
console t2 "$T/con3"; con2=$CPID
wait_for "$T/con3" '^tick [0-9]+$' 5
expect_state t1 running
expect 0 pause t2
expect_state t2 paused; expect_state t1 running
n=$(last_tick "$T/con2"); wait_for "$T/con2" "^tick $((n + 2))\$" 5   # t1 goes on

# stop --force: at once, also for a paused VM
t0=$(date +%s%N)
expect 0 stop t2 --force; has out "stopped VM 't2'"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -le 800 ] || fail "stop --force took $ms ms"
alive "$vmm2" && fail "the VMM $vmm2 still runs after stop --force"
expect_state t2 stopped; expect_state t1 running
wait_exit "$con2" 5

# stop --force of a VMM that does not answer (stopped with SIGSTOP): quit
# times out, SIGTERM stays pending, SIGKILL ends it; stop records it
kill -STOP "$vmm"
expect 0 stop t1 --force; has out "stopped VM 't1'"
alive "$vmm" && fail "the VMM $vmm survived stop --force"
expect_state t1 stopped
[ -e "$RUN/t1.ctl" ] || [ -e "$RUN/t1.console" ] && fail "sockets left after a forced kill: $(ls "$RUN")"
"$COWVM" show t1 >"$T/show"; has show "killed by cowvm stop --force"
wait_exit "$con" 5

# --- concurrent starts of one VM: one wins, the others are refused ---------
pids=()
for i in 1 2 3; do
	timeout 20 "$COWVM" start t2 >"$T/cs$i" 2>&1 &
	pids+=("$!")
done
won=0
for i in 1 2 3; do
	wait "${pids[$((i - 1))]}"; RC=$?
	if [ "$RC" -eq 0 ]; then
		won=$((won + 1))
		cleanup_pids+=("$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' "$T/cs$i")")
	else
		[ "$RC" -eq 1 ] && grep -Eq "VM 't2' is (already running|starting)" "$T/cs$i" ||
			fail "a losing start: exit $RC: $(cat "$T/cs$i")"
	fi
done
[ "$won" -eq 1 ] || fail "$won of 3 concurrent starts won"
expect_state t2 running
expect 0 stop t2 --force
pgrep -f -- "$RUN/t2.ctl" >/dev/null && fail "a VMM of t2 is left: $(pgrep -af -- "$RUN/t2.ctl")"

# --- a VM that cannot start says why, and stays stopped --------------------
cp "$TESTGUEST" "$T/gone.elf"
expect 0 create t3 --kernel "$T/gone.elf" --append cowvm.test=counter --mem 64M
rm "$T/gone.elf"
expect 1 start t3;        has err "VM 't3' did not start: unable to load '$T/gone.elf'"
has err "t3.vmm.log"
expect_state t3 stopped
"$COWVM" show t3 >"$T/show"; has show "start: unable to load"
[ -z "$(ls "$RUN")" ] || fail "runtime files left: $(ls "$RUN")"
echo "ok"
