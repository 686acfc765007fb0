# tests/lib.sh — shared helpers for the shell tests (sourced).
# Env from tests/run.sh: COWVM, TESTGUEST, COWVM_BUILD, COWVM_SRC.
set -u
: "${COWVM_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${COWVM_BUILD:=build}"
: "${COWVM:=$COWVM_SRC/$COWVM_BUILD/cowvm}"
: "${TESTGUEST:=$COWVM_SRC/$COWVM_BUILD/testguest.elf}"
HELPERS="$COWVM_SRC/$COWVM_BUILD/tests/helpers"

T=$(mktemp -d /tmp/cowvm-test.XXXXXX)
cleanup_pids=()
cleanup() {
	for p in "${cleanup_pids[@]}"; do kill -9 "$p" 2>/dev/null; done
	# and anything else still running from this test's files (detached VMMs
	# started by `cowvm start`, whose command lines name $T)
	pkill -9 -f -- "$T/" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }
note() { echo "# $*"; }

# Skip (77) with the reason when /dev/kvm cannot be opened.
need_kvm() {
	local why
	if ! why=$( { exec 3<>/dev/kvm; } 2>&1 ); then
		skip "cannot open /dev/kvm: ${why##*: }"
	fi
}

need_cmd() { command -v "$1" >/dev/null 2>&1 || skip "$1 is not installed"; }

# run_guest SECONDS LOG CMDLINE [cowvm run options...]: run the test guest to
# completion; sets RC. Console output goes to LOG.
run_guest() {
	local secs=$1 log=$2 cmdline=$3; shift 3
	timeout -k 2 "$secs" "$COWVM" run --kernel "$TESTGUEST" --append "$cmdline" \
		--console "file:$log" "$@" 2>"$log.err"
	RC=$?
	if [ $RC -eq 124 ] || [ $RC -eq 137 ]; then
		echo "--- console:"; tail -5 "$log"; echo "--- stderr:"; tail -5 "$log.err"
		fail "'$cmdline' did not finish within ${secs}s"
	fi
	return 0
}

# start_vmm LOG [cowvm run options...]: run cowvm in the background with a
# 120 s watchdog; sets PID (cowvm's own, so signals reach it).
start_vmm() {
	local log=$1; shift
	"$COWVM" run --console "file:$log" "$@" 2>"$log.err" &
	PID=$!
	cleanup_pids+=("$PID")
	( sleep 120; kill -9 "$PID" 2>/dev/null ) >/dev/null 2>&1 &
	cleanup_pids+=("$!")
	disown "$!"
}

# start_guest LOG CMDLINE [options...]: the test guest in the background.
start_guest() {
	local log=$1 cmdline=$2; shift 2
	start_vmm "$log" --kernel "$TESTGUEST" --append "$cmdline" "$@"
}

# wait_exit PID SECONDS: wait for a background VMM; sets RC (fails on timeout).
wait_exit() {
	local pid=$1 secs=$2 i
	for ((i = 0; i < secs * 20; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	kill -0 "$pid" 2>/dev/null && fail "process $pid still running after ${secs}s"
	wait "$pid"; RC=$?
}

# wait_for LOG REGEX SECONDS: wait until LOG has a line matching REGEX.
wait_for() {
	local log=$1 re=$2 secs=$3 i
	for ((i = 0; i < secs * 20; i++)); do
		grep -Eq -- "$re" "$log" 2>/dev/null && return 0
		sleep 0.05
	done
	echo "--- console:"; tail -5 "$log"; echo "--- stderr:"; tail -5 "$log.err" 2>/dev/null
	fail "no line matching '$re' in $(basename "$log") within ${secs}s"
}

# wait_unlocked FILE [SECS]: after a VMM was killed, wait (bounded) until
# no process holds a lock on FILE: the kernel drops the image locks only
# when the dead process's io_uring has finished its writes in flight.
wait_unlocked() {
	local ino n=0
	ino=$(stat -c %i "$1") || return 1
	while grep -Eq ":$ino " /proc/locks; do
		n=$((n + 1))
		[ "$n" -gt $((${2:-10} * 20)) ] && { note "$1 still locked after ${2:-10} s"; return 1; }
		sleep 0.05
	done
	return 0
}
expect_rc() { [ "$RC" -eq "$1" ] || { tail -5 "$2" "$2.err" 2>/dev/null; fail "$3: exit status $RC, expected $1"; }; }
expect_line() { grep -Eq -- "$2" "$1" || { tail -5 "$1"; fail "no line matching '$2' in $(basename "$1")"; }; }
