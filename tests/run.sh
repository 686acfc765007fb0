#!/bin/bash
# tests/run.sh — the one test runner.
#
# Runs every unit test program (build/tests/unit/*), then every script in
# tests/integration, tests/interop and tests/linux, each under `timeout`.
# A test exits 0 (pass), 77 (skip: its last output line says why) or anything
# else (fail). A script may set its own limit with a line "# timeout: SECONDS".
# Output of each test goes to $COWVM_BUILD/test-logs/NAME.log; failures show
# its tail. The last line is "N passed, N failed, N skipped".
#
# Usage: tests/run.sh [PATTERN...]   (run only tests whose name contains one)
set -u
cd "$(dirname "$0")/.."
export COWVM_BUILD="${COWVM_BUILD:-build}"
export COWVM="$PWD/$COWVM_BUILD/cowvm"
export TESTGUEST="$PWD/$COWVM_BUILD/testguest.elf"
export COWVM_SRC="$PWD"
logdir="$COWVM_BUILD/test-logs"
mkdir -p "$logdir"

pass=0 fail=0 skip=0
failed_names=()


selected() {
	local name=$1; shift
	[ ${#patterns[@]} -eq 0 ] && return 0
	for p in "${patterns[@]}"; do
		case "$name" in *"$p"*) return 0 ;; esac
	done
	return 1
}

run_one() {   # name limit cmd...
	local name=$1 limit=$2; shift 2
	local log="$logdir/${name//\//_}.log" t0 t1 rc secs
	t0=$(date +%s%N)
	timeout -k 5 "$limit" "$@" >"$log" 2>&1 </dev/null
	rc=$?
	t1=$(date +%s%N)
	secs=$(( (t1 - t0) / 1000000 )); secs="$((secs / 1000)).$(( (secs % 1000) / 100 ))"
	case $rc in
	0)  pass=$((pass + 1)); printf 'PASS %-44s %6ss\n' "$name" "$secs" ;;
	77) skip=$((skip + 1)); printf 'SKIP %-44s %6ss  %s\n' "$name" "$secs" \
		"$(grep -v '^[[:space:]]*$' "$log" | tail -n 1)" ;;
	124|137)
	    fail=$((fail + 1)); failed_names+=("$name")
	    printf 'FAIL %-44s %6ss  (timed out after %ss)\n' "$name" "$secs" "$limit"
	    tail -n 15 "$log" | sed 's/^/    | /' ;;
	*)  fail=$((fail + 1)); failed_names+=("$name")
	    printf 'FAIL %-44s %6ss  (exit %d)\n' "$name" "$secs" "$rc"
	    tail -n 15 "$log" | sed 's/^/    | /' ;;
	esac
}

patterns=("$@")

for t in "$COWVM_BUILD"/tests/unit/*; do
	[ -x "$t" ] && [ -f "$t" ] || continue
	case "$t" in *.d) continue ;; esac
	name="unit/$(basename "$t")"
	selected "$name" || continue
	run_one "$name" 120 "$t"
done

for dir in tests/integration tests/interop tests/linux; do
	for t in "$dir"/*.sh; do
		[ -f "$t" ] || continue
		name="${t#tests/}"; name="${name%.sh}"
		selected "$name" || continue
		limit=$(sed -n 's/^# timeout: *\([0-9][0-9]*\).*/\1/p' "$t" | head -n 1)
		run_one "$name" "${limit:-180}" bash "$t"
	done
done

if [ ${#failed_names[@]} -gt 0 ]; then
	echo "failed: ${failed_names[*]}"
fi
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
