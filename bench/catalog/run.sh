#!/bin/bash
# bench/catalog/run.sh — catalog speed (not part of `make check`).
#
#   bench/catalog/run.sh [BUILD_DIR] [N_LIST] [N_CREATE]
#
# 1. `cowvm list` (and `list --json`) with N_LIST (default 10,000) VMs in
#    the catalog: median of 11 runs, in ms (target < 50 ms).
# 2. create+rm rate: N_CREATE (default 1,000) `cowvm create` then as many
#    `cowvm rm`, one process each as a user or script would run them, on a
#    catalog already holding N_LIST VMs; printed as operations per second.
set -eu
B=${1:-build}
NL=${2:-10000}
NC=${3:-1000}
COWVM=$PWD/$B/cowvm
FILL=$PWD/$B/tests/helpers/cat_fill
[ -x "$COWVM" ] && [ -x "$FILL" ] || { echo "build first: make"; exit 1; }
T=$(mktemp -d /tmp/cowvm-bench-XXXXXX)
trap 'rm -rf "$T"' EXIT
export COWVM_HOME=$T/home
unset XDG_RUNTIME_DIR
echo k >"$T/vmlinuz"

ms_now() { date +%s%N; }
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (timings grow with load)"
echo "== catalog with $NL VMs"
"$FILL" "$NL" "$T/vmlinuz" "$T/disks"
for mode in "" "--json"; do
	"$COWVM" list $mode >/dev/null   # warm the page cache
	for i in $(seq 11); do
		t0=$(ms_now); "$COWVM" list $mode >/dev/null; t1=$(ms_now)
		echo $(( (t1 - t0) / 1000 ))
	done | median >"$T/med"
	us=$(cat "$T/med")
	lines=$("$COWVM" list $mode | wc -l)
	printf 'cowvm list %-7s %6d.%03d ms median of 11 (%d lines of output; target < 50 ms)\n' \
		"$mode" $((us / 1000)) $((us % 1000)) "$lines"
done

echo "== create+rm of $NC VMs, one cowvm process each"
t0=$(ms_now)
for i in $(seq "$NC"); do "$COWVM" create "cr-$i" --kernel "$T/vmlinuz" >/dev/null; done
t1=$(ms_now)
for i in $(seq "$NC"); do "$COWVM" rm "cr-$i" >/dev/null; done
t2=$(ms_now)
c_ms=$(( (t1 - t0) / 1000000 )); r_ms=$(( (t2 - t1) / 1000000 ))
printf 'create: %d in %d ms = %d/s; rm: %d in %d ms = %d/s; create+rm pairs: %d/s\n' \
	"$NC" "$c_ms" $(( NC * 1000 / (c_ms ? c_ms : 1) )) "$NC" "$r_ms" \
	$(( NC * 1000 / (r_ms ? r_ms : 1) )) $(( NC * 1000 / ((c_ms + r_ms) ? (c_ms + r_ms) : 1) ))
left=$("$COWVM" list | grep -c '^cr-' || true)
[ "$left" -eq 0 ] || { echo "error: $left cr- VMs left"; exit 1; }
