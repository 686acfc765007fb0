#!/bin/bash
# bench/boot/run.sh [BUILD_DIR] — boot the test guest's `hello` under cowvm and
# under QEMU microvm (same ELF, same memory size), alternating, and print wall
# time medians, the cowvm/QEMU ratio, both VMMs' RSS and their VM exits.
# See bench/boot/README.md for how to read the output.
#
# Environment:
#   BENCH_RUNS=15       timed runs per VMM (alternating cowvm/QEMU)
#   BENCH_MEM_RUNS=3    extra runs per VMM with the RSS probe preloaded
#   BENCH_MEM=256M      guest memory for both VMMs
#   BENCH_TIMEOUT=30    seconds allowed for any single run
#   QEMU=qemu-system-x86_64
#   BENCH_KEEP=1        keep the work directory (serial logs, raw results)
#
# Exit status: 0 when every run completed (whether or not the targets were
# met), 1 when a run failed (wrong exit status, no "cowvm-guest: hello" on the
# serial port, timeout), 2 when the benchmark could not be set up.
set -u

BUILD=${1:-build}
RUNS=${BENCH_RUNS:-15}
MEM_RUNS=${BENCH_MEM_RUNS:-3}
MEM=${BENCH_MEM:-256M}
TMO=${BENCH_TIMEOUT:-30}
QEMU=${QEMU:-qemu-system-x86_64}
HERE=$(cd "$(dirname "$0")" && pwd)

# Targets from the issue.
RATIO_TARGET=0.5
OTHER_RSS_TARGET_KB=5120

die() { echo "bench/boot: $*" >&2; exit 2; }

case $RUNS in ''|*[!0-9]*|0) die "BENCH_RUNS must be a positive integer";; esac
case $MEM_RUNS in ''|*[!0-9]*) die "BENCH_MEM_RUNS must be an integer";; esac
case $TMO in ''|*[!0-9]*|0) die "BENCH_TIMEOUT must be a positive number of seconds";; esac
case $MEM in
	*[0-9]K|*[0-9]k) MEM_BYTES=$(( ${MEM%?} * 1024 ));;
	*[0-9]M|*[0-9]m) MEM_BYTES=$(( ${MEM%?} * 1024 * 1024 ));;
	*[0-9]G|*[0-9]g) MEM_BYTES=$(( ${MEM%?} * 1024 * 1024 * 1024 ));;
	*[0-9]) MEM_BYTES=$MEM;;
	*) die "BENCH_MEM '$MEM': expected a size such as 256M";;
esac

. "$HERE/../lib.sh"
bench_need_vmms

W=$(mktemp -d /tmp/cowvm-bench-boot.XXXXXX) || die "mktemp failed"
if [ -n "${BENCH_KEEP:-}" ]; then
	echo "bench/boot: keeping $W"
else
	trap 'rm -rf "$W"' EXIT
fi

timeout 120 cc -O2 -o "$W/timerun" "$HERE/timerun.c" || die "cannot build timerun"
timeout 120 cc -O2 -shared -fPIC -o "$W/rssprobe.so" "$HERE/rssprobe.c" || die "cannot build rssprobe.so"

# The two command lines.  Both boot the same PVH ELF with the same memory and
# command line; the guest writes "cowvm-guest: hello" to the COM1 16550 and
# then writes its status to port 0x501 (cowvm's debug-exit; QEMU's
# isa-debug-exit turns status 0 into exit code (0<<1)|1 = 1).
#
# QEMU microvm options, each one removing work that `hello` does not need:
#   x-option-roms=off  no option ROMs (qboot loads the PVH kernel itself)
#   pit=off,pic=off,rtc=off   no i8254, i8259, MC146818
#   acpi=off           no ACPI tables (fewer fw_cfg files for qboot to read)
#   pcie=off,ioapic2=off,usb=off   no GPEX host bridge, no second IO-APIC
#   auto-kernel-cmdline=off   no virtio-mmio entries added to the command line
#   isa-serial stays on: it is the guest's console.
# -bios is left at its default for microvm, qboot (bios-microvm.bin), the
# minimal firmware QEMU ships for this machine.
QEMU_MACHINE=microvm,x-option-roms=off,pit=off,pic=off,rtc=off,acpi=off,pcie=off,ioapic2=off,usb=off,auto-kernel-cmdline=off
QEMU_CPU=${QEMU_CPU:-host,-arch-capabilities}

# set_cmd VMM SERIAL MEMSIZE — the command line, in the array CMD.
# COWVM_EXTRA (an array) is added to cowvm's options.
COWVM_EXTRA=()
set_cmd() {
	if [ "$1" = cowvm ]; then
		# --no-pit: like QEMU's pit=off above (the guest uses kvmclock)
		CMD=("$COWVM" run --kernel "$ELF" --append cowvm.test=hello --mem "$3" --no-pit
		     --console "file:$2" ${COWVM_EXTRA[@]+"${COWVM_EXTRA[@]}"})
	else
		# shellcheck disable=SC2054 # the commas are inside QEMU option values
		CMD=("$QEMU" -M "$QEMU_MACHINE" -accel kvm -cpu "$QEMU_CPU" -m "$3"
		     -nodefaults -no-user-config -display none
		     -kernel "$ELF" -append cowvm.test=hello
		     -device isa-debug-exit,iobase=0x501,iosize=4 -serial "file:$2")
	fi
}

FAILED=0

# run_one VMM TAG SERIAL MEMSIZE [PREFIX...] — one bounded run; prints the
# timerun line on stdout, or nothing (and a report on stderr) if it failed.
run_one() {
	local vmm=$1 tag=$2 ser=$3 msz=$4 want=1 line st
	shift 4
	[ "$vmm" = cowvm ] && want=0
	rm -f "$ser"
	set_cmd "$vmm" "$ser" "$msz"
	# timerun enforces TMO itself; timeout(1) around it is the backstop.
	line=$(timeout $((TMO + 10)) "$W/timerun" -t "$TMO" -o "$W/$tag.out" -e "$W/$tag.err" \
		-- "$@" "${CMD[@]}")
	st=${line#*status=}; st=${st%% *}
	if [ -z "$line" ] || [ "$st" != "$want" ] || ! grep -q 'cowvm-guest: hello' "$ser" 2>/dev/null; then
		echo "bench/boot: FAILED $vmm run $tag: exit status ${st:-none} (want $want)," \
			"$(grep -c 'cowvm-guest: hello' "$ser" 2>/dev/null || echo 0) 'cowvm-guest: hello' line(s) on the serial port;" \
			"stderr: $(head -c 300 "$W/$tag.err" 2>/dev/null | tr '\n' ' ')" >&2
		return 1
	fi
	echo "$line"
}

field() { # field NAME LINE
	local v=${2#*$1=}
	echo "${v%% *}"
}

# stats FILE — "median min max n" of the numbers in FILE (one per line).
stats() {
	sort -n "$1" | awk '{a[NR]=$1} END {
		if (NR == 0) { print "- - - 0"; exit }
		m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
		print m, a[1], a[NR], NR }'
}

echo "bench/boot: test guest 'hello' under cowvm and QEMU microvm, --mem $MEM, $RUNS timed runs each"
echo "  machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs," \
	"kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
if awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v n="$(nproc)" 'BEGIN { exit !(l > n) }'; then
	echo "  note: the load average is above the number of CPUs; other jobs are running, so wall"
	echo "  times will be longer and noisier than on an idle machine (alternation keeps the ratio fair)"
fi
set_cmd cowvm SERIAL "$MEM"; echo "  cowvm: ${CMD[*]}"
set_cmd qemu SERIAL "$MEM"; echo "  qemu:  ${CMD[*]}"
echo "  ($(timeout 10 "$QEMU" --version | head -1))"
echo

# One untimed warm-up run of each (page cache, dynamic loader cache).
run_one cowvm warm-c "$W/warm-c.ser" "$MEM" >/dev/null || FAILED=1
run_one qemu warm-q "$W/warm-q.ser" "$MEM" >/dev/null || FAILED=1

: >"$W/cowvm.wall"; : >"$W/qemu.wall"; : >"$W/cowvm.rss"; : >"$W/qemu.rss"
: >"$W/cowvm.cpu"; : >"$W/qemu.cpu"
nfail_c=0; nfail_q=0
for ((i = 1; i <= RUNS; i++)); do
	# Alternate, and alternate who goes first, so drift in the machine's
	# load falls on both VMMs alike.
	if ((i % 2)); then order="cowvm qemu"; else order="qemu cowvm"; fi
	for vmm in $order; do
		if line=$(run_one "$vmm" "$vmm-$i" "$W/$vmm-$i.ser" "$MEM"); then
			echo "$(field wall_us "$line")" >>"$W/$vmm.wall"
			echo "$(field maxrss_kb "$line")" >>"$W/$vmm.rss"
			echo "$(( $(field user_us "$line") + $(field sys_us "$line") ))" >>"$W/$vmm.cpu"
		else
			FAILED=1
			if [ "$vmm" = cowvm ]; then nfail_c=$((nfail_c + 1)); else nfail_q=$((nfail_q + 1)); fi
		fi
	done
done

read -r c_med c_min c_max c_n <<<"$(stats "$W/cowvm.wall")"
read -r q_med q_min q_max q_n <<<"$(stats "$W/qemu.wall")"
read -r c_cpu _ _ _ <<<"$(stats "$W/cowvm.cpu")"
read -r q_cpu _ _ _ <<<"$(stats "$W/qemu.cpu")"
read -r c_rss _ _ _ <<<"$(stats "$W/cowvm.rss")"
read -r q_rss _ _ _ <<<"$(stats "$W/qemu.rss")"

ms() { [ "$1" = - ] && echo - || awk -v u="$1" 'BEGIN { printf "%.1f", u / 1000 }'; }
printf 'wall time, fork to exit (ms)   median      min      max   CPU median   ok/runs\n'
printf '  cowvm                      %8s %8s %8s %12s   %d/%d\n' "$(ms "$c_med")" "$(ms "$c_min")" \
	"$(ms "$c_max")" "$(ms "$c_cpu")" "$c_n" "$RUNS"
printf '  qemu microvm               %8s %8s %8s %12s   %d/%d\n' "$(ms "$q_med")" "$(ms "$q_min")" \
	"$(ms "$q_max")" "$(ms "$q_cpu")" "$q_n" "$RUNS"
if [ "$c_n" -gt 0 ] && [ "$q_n" -gt 0 ]; then
	ratio=$(awk -v c="$c_med" -v q="$q_med" 'BEGIN { printf "%.3f", c / q }')
	verdict=$(awk -v r="$ratio" -v t="$RATIO_TARGET" 'BEGIN { print (r <= t) ? "PASS" : "MISS" }')
	echo "  ratio cowvm/qemu (medians)  $ratio   target <= $RATIO_TARGET: $verdict"
	echo "  ratio cowvm/qemu (minimums) $(awk -v c="$c_min" -v q="$q_min" 'BEGIN { printf "%.3f", c / q }')   (fastest run of each; less affected by load)"
else
	echo "  ratio cowvm/qemu: not available (no successful runs of one VMM)"
fi
echo

# Memory: the probe runs split RSS into guest RAM and the rest.
: >"$W/cowvm.guest"; : >"$W/qemu.guest"; : >"$W/cowvm.other"; : >"$W/qemu.other"
for ((i = 1; i <= MEM_RUNS; i++)); do
	for vmm in cowvm qemu; do
		if run_one "$vmm" "$vmm-mem-$i" "$W/$vmm-mem-$i.ser" "$MEM" \
			env LD_PRELOAD="$W/rssprobe.so" RSSPROBE_MEM="$MEM_BYTES" \
			RSSPROBE_OUT="$W/$vmm-mem-$i.probe" >/dev/null && [ -s "$W/$vmm-mem-$i.probe" ]; then
			p=$(cat "$W/$vmm-mem-$i.probe")
			echo "$(field guest_kb "$p")" >>"$W/$vmm.guest"
			echo "$(field other_anon_kb "$p")" >>"$W/$vmm.other"
		else
			FAILED=1
		fi
	done
done
read -r c_guest _ _ _ <<<"$(stats "$W/cowvm.guest")"
read -r q_guest _ _ _ <<<"$(stats "$W/qemu.guest")"
read -r c_anon _ _ _ <<<"$(stats "$W/cowvm.other")"
read -r q_anon _ _ _ <<<"$(stats "$W/qemu.other")"

# Cross-check: the same boot with 8x the memory (2x above 2 GiB).  RSS that
# does not grow shows that guest RAM is touched on demand, not preallocated.
if [ "$MEM_BYTES" -le $((2 << 30)) ]; then BIG=$(( MEM_BYTES * 8 >> 20 ))M; else BIG=$(( MEM_BYTES * 2 >> 20 ))M; fi
c_big=-; q_big=-
line=$(run_one cowvm cowvm-big "$W/cowvm-big.ser" "$BIG") && c_big=$(field maxrss_kb "$line") || FAILED=1
line=$(run_one qemu qemu-big "$W/qemu-big.ser" "$BIG") && q_big=$(field maxrss_kb "$line") || FAILED=1

sub() { { [ "$1" = - ] || [ "$2" = - ]; } && echo - || awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a - b }'; }
c_other=$(sub "$c_rss" "$c_guest")
q_other=$(sub "$q_rss" "$q_guest")
printf 'peak RSS (KiB)               total   guest RAM   beyond guest RAM   (anon part)   with --mem %s\n' "$BIG"
printf '  cowvm                   %8s    %8s           %8s      %8s      %8s\n' "$c_rss" "$c_guest" "$c_other" "$c_anon" "$c_big"
printf '  qemu microvm            %8s    %8s           %8s      %8s      %8s\n' "$q_rss" "$q_guest" "$q_other" "$q_anon" "$q_big"
if [ "$c_other" != - ]; then
	verdict=$(awk -v o="$c_other" -v t="$OTHER_RSS_TARGET_KB" 'BEGIN { print (o <= t) ? "PASS" : "MISS" }')
	echo "  cowvm RSS beyond guest RAM: $c_other KiB, target <= $OTHER_RSS_TARGET_KB KiB (5 MiB): $verdict"
fi
echo "  (total: median ru_maxrss of the timed runs; guest RAM: Rss of the guest RAM mapping,"
echo "   median of $MEM_RUNS probe runs; beyond = total - guest RAM; anon part: anonymous Rss"
echo "   outside guest RAM, i.e. without shared library pages)"
echo

# VM exits: cowvm counts its own; kvm:kvm_userspace_exit counts both alike.
COWVM_EXTRA=(--verbose)
run_one cowvm cowvm-exits "$W/cowvm-exits.ser" "$MEM" >/dev/null || FAILED=1
COWVM_EXTRA=()
c_exits=$(sed -n 's/.* \([0-9][0-9]*\) exits to the VMM.*/\1/p' "$W/cowvm-exits.err" 2>/dev/null)
pc=-; pq=-
if command -v perf >/dev/null && timeout 20 perf stat -x, -e kvm:kvm_userspace_exit true >/dev/null 2>&1; then
	for vmm in cowvm qemu; do
		n=
		if run_one "$vmm" "$vmm-perf" "$W/$vmm-perf.ser" "$MEM" \
			perf stat -x, -o "$W/$vmm.perf" -e kvm:kvm_userspace_exit -- >/dev/null; then
			n=$(awk -F, '/kvm_userspace_exit/ { print $1 }' "$W/$vmm.perf" 2>/dev/null)
		else
			FAILED=1
		fi
		if [ "$vmm" = cowvm ]; then pc=${n:--}; else pq=${n:--}; fi
	done
fi
echo "VM exits to the VMM (hello): cowvm --verbose: ${c_exits:--};" \
	"perf kvm:kvm_userspace_exit: cowvm $pc, qemu $pq"

echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$nfail_c" -gt 0 ] || [ "$nfail_q" -gt 0 ]; then
	echo "FAILED runs (not timed): cowvm $nfail_c, qemu $nfail_q"
fi
[ "$FAILED" = 0 ] || { echo "bench/boot: some runs failed (see above)"; exit 1; }
exit 0
