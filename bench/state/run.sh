#!/bin/bash
# bench/state/run.sh [BUILD_DIR] — save and restore of a guest whose RAM is in
# use (test guest `counter fill=all`), cowvm vs QEMU microvm, 256 MiB and
# 1 GiB, alternating; prints medians, min/max, the cowvm/QEMU ratios and
# PASS/MISS against the targets.  See bench/state/README.md.
#
# Environment:
#   BENCH_RUNS=5         runs per VMM and size (alternating cowvm/QEMU)
#   BENCH_SIZES="256M 1G"
#   BENCH_TIMEOUT=120    seconds allowed for any single wait (boot+fill, save, restore)
#   BENCH_LEAD_MS=2      save this long before the guest's next tick is due
#   QEMU=qemu-system-x86_64   QEMU_CPU=host,-arch-capabilities
#   BENCH_KEEP=1         keep the work directory (serial logs, stderr, raw numbers)
#
# Exit status: 0 when every run completed (whether or not the targets were
# met), 1 when a run failed, 2 when the benchmark could not be set up.
set -u

BUILD=${1:-build}
RUNS=${BENCH_RUNS:-5}
SIZES=${BENCH_SIZES:-256M 1G}
TMO=${BENCH_TIMEOUT:-120}
LEAD=${BENCH_LEAD_MS:-2}
QEMU=${QEMU:-qemu-system-x86_64}
QEMU_CPU=${QEMU_CPU:-host,-arch-capabilities}
HERE=$(cd "$(dirname "$0")" && pwd)

# Targets from the issue.
RESTORE_TARGET_MS=10   # cowvm, 1 GiB, exec -> running

die() { echo "bench/state: $*" >&2; exit 2; }

case $RUNS in ''|*[!0-9]*|0) die "BENCH_RUNS must be a positive integer";; esac
case $TMO in ''|*[!0-9]*|0) die "BENCH_TIMEOUT must be a positive number of seconds";; esac
case $LEAD in ''|*[!0-9.]*) die "BENCH_LEAD_MS must be a number of ms (0 to 99)";; esac
for s in $SIZES; do
	case $s in *[0-9][MG]) ;; *) die "BENCH_SIZES: '$s' is not a size like 256M or 1G";; esac
done

. "$HERE/../lib.sh"
bench_need_vmms
"$COWVM" run --help 2>&1 | grep -q -- --save-on-signal ||
	die "$COWVM has no --save-on-signal (too old a build?)"

W=$(mktemp -d /tmp/cowvm-bench-state.XXXXXX) || die "mktemp failed"
mkdir "$W/log" "$W/st" "$W/out" || die "mkdir in $W failed"
VMM_PID=      # the VMM being booted and saved
HELPER_PID=   # the running statebench (it kills the VMM it restored when told to stop)
cleanup() {
	local p
	for p in $HELPER_PID $VMM_PID; do
		kill -TERM "$p" 2>/dev/null && { sleep 0.2; kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; }
	done
	if [ -n "${BENCH_KEEP:-}" ]; then
		rm -f "$W"/st/*   # state files are large; keep the logs
		echo "bench/state: kept $W"
	else
		rm -rf "$W"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

SB=$W/statebench
timeout 120 cc -O2 -Wall -o "$SB" "$HERE/statebench.c" || die "cannot build statebench"

# sb ARGS... — run the helper; its output line in OUT.  Every helper call is
# bounded by its own -t; timeout(1) is the backstop.  Run in the background
# and waited for, so that the EXIT trap can stop it (and its VMM).
sb() {
	local rc
	timeout -k 5 $((TMO + 30)) "$SB" "$@" >"$W/sb.out" &
	HELPER_PID=$!
	wait "$HELPER_PID"; rc=$?
	HELPER_PID=
	OUT=$(cat "$W/sb.out")
	return $rc
}

QEMU_MACHINE=microvm,x-option-roms=off,pit=off,pic=off,rtc=off,acpi=off,pcie=off,ioapic2=off,usb=off,auto-kernel-cmdline=off
APPEND="cowvm.test=counter fill=all"
# qemu_cmd SIZE SERIAL — QEMU's command line, in the array CMD.
# migration.store-global-state=off: the saved stream carries no run state, so
# the restored QEMU starts the guest as soon as the state is loaded (without it
# a state saved after `stop` comes back paused and needs a QMP `cont`).
qemu_cmd() {
	CMD=("$QEMU" -M "$QEMU_MACHINE" -accel kvm -cpu "$QEMU_CPU" -m "$1"
	     -nodefaults -no-user-config -display none
	     -kernel "$ELF" -append "$APPEND"
	     -global migration.store-global-state=off -serial "file:$2")
}

size_bytes() { case $1 in *G) echo $(( ${1%G} << 30 ));; *M) echo $(( ${1%M} << 20 ));; esac; }

FAILED=0
failrun() { echo "bench/state: FAILED $*" >&2; FAILED=1; }
field() { local v=" $2"; v=${v#* $1=}; echo "${v%% *}"; }
# wait_for FIRST LAST REM LAG — guest ms the restored guest waited before tick
# FIRST was due: REM is the guest time left at the signal until tick LAST+1,
# LAG how long after the signal the vCPUs stopped; never below 0.
wait_for() {
	awk -v f="$1" -v l="$2" -v r="$3" -v g="$4" \
		'BEGIN { w = r + (f - l - 1) * 100 - g; printf "%.3f", w < 0 ? 0 : w }'
}
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
rec() { echo "$3" >>"$W/out/$1.$2"; }   # rec SIZE METRIC VALUE

# run_cowvm SIZE I — boot, fill, save on SIGUSR2, restore; records the numbers.
run_cowvm() {
	local sz=$1 i=$2 log=$W/log/c-$1-$2 rlog=$W/log/cr-$1-$2 st=$W/st/c-$1-$2.st err=$W/c-$1-$2.err
	local line save rc paused bytes restore first last lag rem
	# --no-pit: like QEMU's pit=off (the guest keeps time with kvmclock)
	"$COWVM" run --kernel "$ELF" --mem "$sz" --append "$APPEND" --console "file:$log" \
		--no-pit --save-on-signal "$st" --verbose </dev/null >/dev/null 2>"$err" &
	VMM_PID=$!
	if sb wait-tick -l "$log" -p "$VMM_PID" -t "$TMO"; then line=$OUT; else
		failrun "cowvm $sz run $i: boot/fill: $(tail -c 300 "$err" | tr '\n' ' ')"
		kill -KILL "$VMM_PID" 2>/dev/null; wait "$VMM_PID" 2>/dev/null; VMM_PID=; return 1
	fi
	rec "$sz" c.boot "$(field ms "$line")"
	sb save-signal -l "$log" -p "$VMM_PID" -f "$st" -a "$LEAD" -t "$TMO"
	rc=$?; save=$OUT
	if [ $rc -ne 0 ]; then kill -KILL "$VMM_PID" 2>/dev/null; fi
	wait "$VMM_PID"; rc=$?; VMM_PID=
	paused=$(sed -n 's/^cowvm: saved .* paused \([0-9.]*\) ms$/\1/p' "$err")
	bytes=$(sed -n 's/^cowvm: saved .*: \([0-9]*\) bytes of RAM.*/\1/p' "$err")
	if [ -z "$save" ] || [ $rc -ne 0 ] || [ -z "$paused" ] || [ ! -s "$st" ]; then
		failrun "cowvm $sz run $i: save: exit status $rc; $(tail -c 300 "$err" | tr '\n' ' ')"
		return 1
	fi
	# fill=all must have put (nearly) all RAM in use; an older test guest
	# ignores fill= and would make this a benchmark of an empty guest
	if [ "$bytes" -lt $(( $(size_bytes "$sz") * 3 / 4 )) ]; then
		failrun "cowvm $sz run $i: only $((bytes >> 20)) MiB of RAM in use; does $ELF know" \
			"'counter fill=all'? (rebuild it: make)"
		rm -f "$st"; return 1
	fi
	rec "$sz" c.save_exit "$(field exit_ms "$save")"
	rec "$sz" c.save_file "$(field file_ms "$save")"
	rec "$sz" c.paused "$paused"
	rec "$sz" c.save_cpu "$(field cpu_ms "$save")"
	rec "$sz" c.ram_mib "$((bytes >> 20))"
	rec "$sz" c.file_mib "$(($(stat -c %s "$st") >> 20))"
	if sb restore -l "$rlog" -o /dev/null -e "$W/cr-$sz-$i.err" -t "$TMO" -- \
		"$COWVM" run --restore "$st" --console "file:$rlog"; then restore=$OUT; else
		failrun "cowvm $sz run $i: restore: $(tail -c 300 "$W/cr-$sz-$i.err" | tr '\n' ' ')"
		rm -f "$st"; return 1
	fi
	rm -f "$st"
	first=$(field first_tick "$restore"); last=$(field last_tick "$save")
	if [ "$(field clk_rem_ms "$save")" != -1000000000.000 ]; then
		# exact: the file says when (host time) the saved guest clock was read
		rem=$(wait_for "$first" "$last" "$(field clk_rem_ms "$save")" 0)
	else
		# cowvm starts pausing (its "paused" clock starts) file_ms - paused after the signal
		lag=$(sub "$(field file_ms "$save")" "$paused")
		rem=$(wait_for "$first" "$last" "$(field rem_ms "$save")" "$lag")
	fi
	echo "  cowvm $sz #$i: save $(field exit_ms "$save") ms (file $(field file_ms "$save"), paused $paused," \
		"cpu $(field cpu_ms "$save")); restore: first tick $first (last saved $last)" \
		"after $(field tick_ms "$restore") ms, $rem ms of it the guest's wait for the tick"
	rec "$sz" c.restore "$(field tick_ms "$restore")"
	rec "$sz" c.running "$(sub "$(field tick_ms "$restore")" "$rem")"
}

# run_qemu SIZE I — the same under QEMU: QMP stop + migrate exec:cat, -incoming exec:cat.
run_qemu() {
	local sz=$1 i=$2 log=$W/log/q-$1-$2 rlog=$W/log/qr-$1-$2 st=$W/st/q-$1-$2.st err=$W/q-$1-$2.err
	local sock=$W/qmp-$1-$2.sock line save rc restore first last rem
	qemu_cmd "$sz" "$log"
	"${CMD[@]}" -qmp "unix:$sock,server=on,wait=off" </dev/null >/dev/null 2>"$err" &
	VMM_PID=$!
	if sb wait-tick -l "$log" -p "$VMM_PID" -t "$TMO"; then line=$OUT; else
		failrun "qemu $sz run $i: boot/fill: $(tail -c 300 "$err" | tr '\n' ' ')"
		kill -KILL "$VMM_PID" 2>/dev/null; wait "$VMM_PID" 2>/dev/null; VMM_PID=; return 1
	fi
	rec "$sz" q.boot "$(field ms "$line")"
	sb save-qmp -l "$log" -q "$sock" -f "$st" -p "$VMM_PID" -a "$LEAD" -t "$TMO"
	rc=$?; save=$OUT
	if [ $rc -ne 0 ]; then kill -KILL "$VMM_PID" 2>/dev/null; fi
	wait "$VMM_PID"; VMM_PID=
	if [ -z "$save" ] || [ $rc -ne 0 ] || [ ! -s "$st" ]; then
		failrun "qemu $sz run $i: save: $(tail -c 300 "$err" | tr '\n' ' ')"
		return 1
	fi
	if [ "$(stat -c %s "$st")" -lt $(( $(size_bytes "$sz") * 3 / 4 )) ]; then
		# QEMU sends zero pages as a flag: a small file means an unfilled guest
		failrun "qemu $sz run $i: state file only $(( $(stat -c %s "$st") >> 20 )) MiB; does $ELF" \
			"know 'counter fill=all'? (rebuild it: make)"
		rm -f "$st"; return 1
	fi
	rec "$sz" q.save "$(field save_ms "$save")"
	rec "$sz" q.save_file "$(field file_ms "$save")"
	rec "$sz" q.migrate "$(field migrate_ms "$save")"
	rec "$sz" q.total_time "$(field total_time_ms "$save")"
	rec "$sz" q.save_cpu "$(field cpu_ms "$save")"
	rec "$sz" q.file_mib "$(($(stat -c %s "$st") >> 20))"
	qemu_cmd "$sz" "$rlog"
	if sb restore -l "$rlog" -o /dev/null -e "$W/qr-$sz-$i.err" -t "$TMO" -- \
		"${CMD[@]}" -incoming "exec:cat $st"; then restore=$OUT; else
		failrun "qemu $sz run $i: restore: $(tail -c 300 "$W/qr-$sz-$i.err" | tr '\n' ' ')"
		rm -f "$st"; return 1
	fi
	rm -f "$st"
	first=$(field first_tick "$restore"); last=$(field last_tick "$save")
	# the vCPUs had stopped when `stop` returned
	rem=$(wait_for "$first" "$last" "$(field rem_ms "$save")" "$(field stop_ms "$save")")
	echo "  qemu  $sz #$i: save $(field save_ms "$save") ms (file $(field file_ms "$save"), stop" \
		"$(field stop_ms "$save"), migrate $(field migrate_ms "$save"), total-time" \
		"$(field total_time_ms "$save"), cpu $(field cpu_ms "$save")); restore: first tick $first" \
		"(last saved $last) after $(field tick_ms "$restore") ms, $rem ms of it the guest's wait for the tick"
	rec "$sz" q.restore "$(field tick_ms "$restore")"
	rec "$sz" q.running "$(sub "$(field tick_ms "$restore")" "$rem")"
}

# stats SIZE METRIC — "median min max n"
stats() {
	sort -n "$W/out/$1.$2" 2>/dev/null | awk '{a[NR]=$1} END {
		if (NR == 0) { print "- - - 0"; exit }
		m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
		print m, a[1], a[NR], NR }'
}
row() {   # row LABEL SIZE METRIC
	local med min max n
	read -r med min max n <<<"$(stats "$2" "$3")"
	printf '  %-44s %9s %9s %9s   %d/%d\n' "$1" "$(fmt "$med")" "$(fmt "$min")" "$(fmt "$max")" "$n" "$RUNS"
}
fmt() { [ "$1" = - ] && echo - || awk -v v="$1" 'BEGIN { printf "%.1f", v }'; }
med() { local m; read -r m _ <<<"$(stats "$1" "$2")"; echo "$m"; }
ratio() { { [ "$1" = - ] || [ "$2" = - ]; } && echo - || awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
verdict() { [ "$1" = - ] && echo "n/a" || awk -v v="$1" -v t="$2" 'BEGIN { print (v < t) ? "PASS" : "MISS" }'; }

echo "bench/state: save and restore of the test guest ('$APPEND'), cowvm vs QEMU microvm," \
	"$RUNS runs each per size, sizes: $SIZES"
echo "  machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs," \
	"kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  state files in $W/st ($(df -T "$W/st" | awk 'NR == 2 { print $2 }'))"
echo "  cowvm: $COWVM run --kernel $ELF --mem SIZE --append '$APPEND' --console file:LOG --no-pit --save-on-signal FILE"
echo "         (save: SIGUSR2; restore: $COWVM run --restore FILE --console file:LOG)"
qemu_cmd SIZE LOG
echo "  qemu:  ${CMD[*]} -qmp unix:SOCK,server=on,wait=off"
echo "         (save: QMP stop, migrate exec:cat > FILE with max-bandwidth 1 TiB/s; restore: -incoming 'exec:cat FILE')"
echo "  ($(timeout 10 "$QEMU" --version | head -1); QMP spoken by bench/state/statebench.c)"
echo "  saves are sent $LEAD ms before the guest's next tick is due (BENCH_LEAD_MS)"
echo

for sz in $SIZES; do
	for ((i = 1; i <= RUNS; i++)); do
		if ((i % 2)); then order="cowvm qemu"; else order="qemu cowvm"; fi
		for vmm in $order; do
			if [ "$vmm" = cowvm ]; then run_cowvm "$sz" "$i"; else run_qemu "$sz" "$i"; fi
		done
	done
done
echo

for sz in $SIZES; do
	echo "$sz guest ($(med "$sz" c.ram_mib) MiB of RAM in cowvm's file; files: cowvm $(med "$sz" c.file_mib) MiB," \
		"qemu $(med "$sz" q.file_mib) MiB; boot+fill to first tick: cowvm $(fmt "$(med "$sz" c.boot)") ms," \
		"qemu $(fmt "$(med "$sz" q.boot)") ms)"
	printf '  %-44s %9s %9s %9s   ok/runs\n' "(ms)" median min max
	row "save   cowvm  SIGUSR2 -> process exit" "$sz" c.save_exit
	row "       cowvm  SIGUSR2 -> file renamed" "$sz" c.save_file
	row "       cowvm  its own \"paused X ms\"" "$sz" c.paused
	row "       cowvm  CPU, SIGUSR2 -> file" "$sz" c.save_cpu
	row "       qemu   stop -> migration completed" "$sz" q.save
	row "       qemu   stop -> cat exited (file done)" "$sz" q.save_file
	row "       qemu   migrate -> completed" "$sz" q.migrate
	row "       qemu   its own total-time" "$sz" q.total_time
	row "       qemu   CPU with cat, stop -> completed" "$sz" q.save_cpu
	row "restore cowvm exec -> first tick" "$sz" c.restore
	row "       cowvm  exec -> running (tick - wait)" "$sz" c.running
	row "       qemu   exec -> first tick" "$sz" q.restore
	row "       qemu   exec -> running (tick - wait)" "$sz" q.running
	# save time = until the state file is complete, on both sides (cowvm:
	# renamed into place; QEMU: the cat writing it has exited); the process
	# exit rows above also show cowvm freeing guest RAM afterwards
	rs=$(ratio "$(med "$sz" c.save_file)" "$(med "$sz" q.save_file)")
	rx=$(ratio "$(med "$sz" c.save_exit)" "$(med "$sz" q.save)")
	rr=$(ratio "$(med "$sz" c.restore)" "$(med "$sz" q.restore)")
	rn=$(ratio "$(med "$sz" c.running)" "$(med "$sz" q.running)")
	echo "  ratio cowvm/qemu (medians): save $rs (target < 1: $(verdict "$rs" 1); to cowvm's" \
		"process exit: $rx); restore: to first tick $rr, to running $rn (target < 1: $(verdict "$rn" 1))"
	if [ "$sz" = 1G ]; then
		c=$(med "$sz" c.running)
		echo "  cowvm restore to running, 1 GiB: $(fmt "$c") ms (target < $RESTORE_TARGET_MS ms:" \
			"$(verdict "$c" "$RESTORE_TARGET_MS")); to first tick $(fmt "$(med "$sz" c.restore)") ms"
	fi
	echo
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$FAILED" = 0 ] || { echo "bench/state: some runs failed (see above)"; exit 1; }
exit 0
