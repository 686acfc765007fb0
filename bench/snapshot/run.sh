#!/bin/bash
# bench/snapshot/run.sh [BUILD_DIR] — live external disk snapshots
# (blockdev-snapshot-sync) under cowvm and under QEMU, side by side, on the
# same test guest and the same 1 GiB qcow2 disk. See bench/snapshot/README.md.
#
# For each VMM and each mode, BENCH_RUNS runs (alternating cowvm/QEMU, who
# goes first swapped every round); each run takes BENCH_SNAPS snapshots in a
# row, each into a new overlay (the chain grows one layer per snapshot):
#   idle  the guest wrote the whole disk (seed A), flushed, and spins without
#         I/O (disk-write seed2= gap_ms=): the snapshots are taken in its
#         pause; afterwards the guest writes seed B over the first half (into
#         the top overlay) and reads the whole disk back through the chain
#   busy  the guest writes the whole disk (disk-write seed=B, 16 requests of
#         1 MiB in flight): the snapshots start once the image has grown
#         32 MiB and are taken while it writes
# Prints, per mode and VMM, the median and max wall time from sending the
# command to reading its reply (one timing client, bench/snapshot/snapq.py,
# for both), and the ratio QEMU/cowvm (> 1: cowvm faster). busy also prints
# what the snapshots cost the guest, with the snapshots and without (one
# plain run per VMM and round): its longest wait for a completion during its
# write pass (stall_max_us= of its stats line, guest clock), how many waits
# took 10 ms or more, and the time of the whole 1 GiB write pass.
# After every run: qemu-img check of every layer, the chain's depth
# (qemu-img info --backing-chain) = snapshots + 1, and the guest's data read
# back through the chain by the test guest under both VMMs (disk-verify,
# read-only). A run that fails any of these is FAILED and not counted.
#
# Environment:
#   BENCH_SNAPS=10        snapshots per run
#   BENCH_RUNS=3          runs per VMM and mode
#   BENCH_MODES="idle busy"
#   BENCH_CACHE=writeback disk cache mode for both VMMs (or none: O_DIRECT)
#   BENCH_AIO=            aio= for both (threads, io_uring); empty: each
#                         VMM's default (cowvm io_uring, QEMU threads)
#   BENCH_DISK=1G         disk size (qemu-img create)
#   BENCH_GAP_MS=4000     idle: the guest's pause (must outlast the snapshots)
#   BENCH_PLAIN=1         busy: also one run without snapshots per round (0: no)
#   BENCH_HOLD_MS=2000    busy: the guest stays up this long after its write
#                         (hold_ms=), so snapshots sent late still complete
#   BENCH_VERIFY=1        read the data back through each chain (0: only
#                         qemu-img check and the chain depth)
#   BENCH_TIMEOUT=180     seconds allowed for any VMM process or client
#   BENCH_DIR=/var/tmp    where the work directory goes (O_DIRECT for none)
#   BENCH_KEEP=1          keep the work directory
#   QEMU=qemu-system-x86_64, QEMU_CPU=host,-arch-capabilities
#
# Exit status: 0 when every run completed and checked out, 1 when a run
# failed (a VMM error, a timeout, a snapshot refused, an idle snapshot taken
# after the pause ended, a layer qemu-img check rejects, a wrong chain depth,
# data that does not verify), 2 when the benchmark could not be set up.
set -u

BUILD=${1:-build}
N=${BENCH_SNAPS:-10}
RUNS=${BENCH_RUNS:-3}
MODES=${BENCH_MODES:-idle busy}
CACHE=${BENCH_CACHE:-writeback}
AIO=${BENCH_AIO:-}
SIZE=${BENCH_DISK:-1G}
GAP=${BENCH_GAP_MS:-4000}
PLAIN=${BENCH_PLAIN:-1}
HOLD=${BENCH_HOLD_MS:-2000}
VERIFY=${BENCH_VERIFY:-1}
TMO=${BENCH_TIMEOUT:-180}
QEMU=${QEMU:-qemu-system-x86_64}
QEMU_CPU=${QEMU_CPU:-host,-arch-capabilities}
MEM=256M
A=11 B=22
HERE=$(cd "$(dirname "$0")" && pwd)

die() { echo "bench/snapshot: $*" >&2; exit 2; }

posint() { case $2 in ''|*[!0-9]*|0) die "$1 must be a positive integer";; esac; }
posint BENCH_SNAPS "$N"; posint BENCH_RUNS "$RUNS"; posint BENCH_GAP_MS "$GAP"; posint BENCH_TIMEOUT "$TMO"
case $HOLD in ''|*[!0-9]*) die "BENCH_HOLD_MS must be a number of milliseconds";; esac
case $CACHE in writeback|none) ;; *) die "BENCH_CACHE must be writeback or none";; esac
case $AIO in ''|threads|io_uring) ;; *) die "BENCH_AIO must be empty, threads or io_uring";; esac
for m in $MODES; do case $m in idle|busy) ;; *) die "BENCH_MODES: unknown mode '$m' (idle, busy)";; esac; done

. "$HERE/../lib.sh"
bench_need_vmms
command -v qemu-img >/dev/null || die "qemu-img not found (Debian: qemu-utils)"
command -v python3 >/dev/null || die "python3 not found (the timing client is Python)"
QBOOT=/usr/share/qemu/qboot.rom
[ -r "$QBOOT" ] || die "$QBOOT not found (QEMU's minimal firmware; SeaBIOS takes seconds under nested KVM)"
COWVM=$(realpath "$COWVM"); ELF=$(realpath "$ELF")

W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/cowvm-bench-snap.XXXXXX") || die "mktemp failed"
VMPIDS=()   # the VMM running now (killed on exit: the trap)
cleanup() {
	local p
	for p in "${VMPIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	if [ -n "${BENCH_KEEP:-}" ]; then echo "bench/snapshot: kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

DOPT=",cache=$CACHE"
[ -n "$AIO" ] && DOPT="$DOPT,aio=$AIO"

# start_vmm VMM DIR CMDLINE DISK [ro] — the VMM in the background, console in
# DIR/con, stderr in DIR/err, control socket DIR/sock; sets VPID.
start_vmm() {
	local vmm=$1 d=$2 cl=$3 disk=$4 ro=${5:-}
	rm -f "$d/con" "$d/sock"
	if [ "$vmm" = cowvm ]; then
		local r=
		[ -n "$ro" ] && r=,ro
		"$COWVM" run --kernel "$ELF" --append "$cl" --mem $MEM \
			--disk "$disk$DOPT$r" --console "file:$d/con" --control "$d/sock" \
			</dev/null >/dev/null 2>"$d/err" &
	else
		local r=
		[ -n "$ro" ] && r=,readonly=on
		# shellcheck disable=SC2054 # commas inside QEMU option values
		"$QEMU" -M pc -accel kvm -cpu "$QEMU_CPU" -m $MEM -bios "$QBOOT" \
			-nodefaults -no-user-config -display none \
			-kernel "$ELF" -append "$cl" \
			-device isa-debug-exit,iobase=0x501,iosize=4 -serial "file:$d/con" \
			-drive "if=none,id=d0,file=$disk,format=qcow2$DOPT$r" \
			-device virtio-blk-pci,drive=d0,disable-legacy=on \
			-qmp "unix:$d/sock,server=on,wait=off" \
			</dev/null >/dev/null 2>"$d/err" &
	fi
	VPID=$!
	VMPIDS=("$VPID")   # one VMM at a time; emptied when it is reaped
}

# wait_vmm VMM SECONDS — wait (bounded) for VPID; kills it at the limit.
# Sets VRC to the guest's status (QEMU's (s << 1) | 1 undone), or "timeout".
wait_vmm() {
	local vmm=$1 secs=$2 i rc
	for ((i = 0; i < secs * 20; i++)); do
		kill -0 "$VPID" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$VPID" 2>/dev/null; then
		kill -9 "$VPID" 2>/dev/null; wait "$VPID" 2>/dev/null
		VMPIDS=()
		VRC=timeout; return
	fi
	wait "$VPID"; rc=$?
	VMPIDS=()
	if [ "$vmm" = qemu ]; then
		if ((rc & 1)); then VRC=$((rc >> 1)); else VRC="qemu-exit-$rc"; fi
	else
		VRC=$rc
	fi
}

# bad TAG MESSAGE — report a failed run (stderr) and return 1
bad() {
	echo "bench/snapshot: FAILED $1: $2" >&2
	return 1
}

# verify VMM TOP D CMDLINE — the guest's disk-verify of TOP, read-only
verify() {
	local vmm=$1 top=$2 d=$3 cl=$4 vd
	vd="$d/verify-$vmm"; mkdir -p "$vd"
	start_vmm "$vmm" "$vd" "$cl" "$top" ro
	wait_vmm "$vmm" "$TMO"
	[ "$VRC" = 0 ] && grep -q 'disk-verify ok' "$vd/con" && return 0
	echo "    $vmm disk-verify: status $VRC; $(tail -1 "$vd/con" 2>/dev/null) $(head -c 300 "$vd/err" 2>/dev/null | tr '\n' ' ')" >&2
	return 1
}

# check_chain TAG D TOP DEPTH VCMDLINE — qemu-img check of every layer,
# the chain's depth, the data read back under both VMMs
check_chain() {
	local tag=$1 d=$2 top=$3 depth=$4 vcl=$5 f got
	for f in "$d/base.qcow2" "$d"/ov-*.qcow2; do
		[ -e "$f" ] || continue
		timeout 120 qemu-img check -q "$f" >"$d/check.out" 2>&1 ||
			{ bad "$tag" "qemu-img check $(basename "$f"): $(head -c 300 "$d/check.out" | tr '\n' ' ')"; return 1; }
	done
	got=$(timeout 60 qemu-img info --backing-chain --output=json "$top" 2>"$d/info.err" |
		python3 -c 'import json, sys; print(len(json.load(sys.stdin)))' 2>/dev/null)
	[ "$got" = "$depth" ] || { bad "$tag" "chain under $(basename "$top") is ${got:-unreadable} images deep, expected $depth"; return 1; }
	if [ "$VERIFY" != 0 ]; then
		verify cowvm "$top" "$d" "$vcl" || { bad "$tag" "the data does not verify under cowvm"; return 1; }
		verify qemu "$top" "$d" "$vcl" || { bad "$tag" "the data does not verify under QEMU"; return 1; }
	fi
	return 0
}

# guest_stall CON — sets GS_MAX (the guest's longest wait for a completion,
# us) and GS_N10 (its waits of 10 ms or more) from the disk-write stats line
# in CON (tests/guest/README.md defines them); returns 1 if the line lacks them
guest_stall() {
	GS_MAX=$(sed -n 's/.*disk-write stats .* stall_max_us=\([0-9]*\) .*/\1/p' "$1" | head -1)
	GS_N10=$(sed -n 's/.*disk-write stats .* stalls_10ms=\([0-9]*\).*/\1/p' "$1" | head -1)
	[ -n "$GS_MAX" ] && [ -n "$GS_N10" ]
}

# run_case VMM MODE TAG — one run; appends its latencies to $W/VMM.MODE.lat,
# the guest's write time (busy) to $W/VMM.MODE.wms, its longest wait and waits >= 10 ms
# (busy) to $W/VMM.busy.stall and .n10; returns 1 if it failed.
run_case() {
	local vmm=$1 mode=$2 tag=$3 d cl dev endre vcl top sq=0 n
	d="$W/$tag"; mkdir -p "$d"
	timeout 60 qemu-img create -q -f qcow2 "$d/base.qcow2" "$SIZE" || { bad "$tag" "qemu-img create"; return 1; }
	if [ "$mode" = idle ]; then
		cl="cowvm.test=disk-write seed=$A seed2=$B gap_ms=$GAP"
		endre='phase 2'
		vcl="cowvm.test=disk-verify seed=$A seed2=$B"
	else
		cl="cowvm.test=disk-write seed=$B hold_ms=$HOLD"
		endre='disk-write stats'
		vcl="cowvm.test=disk-verify seed=$B"
	fi
	dev=virtio-blk0; [ "$vmm" = qemu ] && dev=d0
	start_vmm "$vmm" "$d" "$cl" "$d/base.qcow2"
	timeout $((TMO + 5)) python3 "$HERE/snapq.py" --socket "$d/sock" --kind "$vmm" --device "$dev" \
		--prefix "$d/ov" --count "$N" --timeout "$TMO" --console "$d/con" --wait "$mode" --gap-ms "$GAP" \
		--end-regex "$endre" --base "$d/base.qcow2" >"$d/snaps" 2>"$d/snapq.err" || sq=1
	[ $sq = 0 ] || kill -9 "$VPID" 2>/dev/null
	wait_vmm "$vmm" "$TMO"
	if [ $sq != 0 ]; then
		bad "$tag" "$(head -c 300 "$d/snapq.err" | tr '\n' ' ') (VMM status $VRC; stderr: $(head -c 300 "$d/err" | tr '\n' ' '))"
		return 1
	fi
	[ "$VRC" = 0 ] || { bad "$tag" "guest status $VRC (want 0): $(tail -2 "$d/con" 2>/dev/null | tr '\n' ' ') stderr: $(head -c 300 "$d/err" | tr '\n' ' ')"; return 1; }
	if [ "$mode" = idle ]; then
		grep -q "disk-write phase 2 ok seed2=$B " "$d/con" || { bad "$tag" "no 'phase 2 ok' from the guest"; return 1; }
		n=$(grep -c 'state=late' "$d/snaps")
		[ "$n" = 0 ] || { bad "$tag" "$n snapshot(s) answered after the guest's ${GAP} ms pause ended (raise BENCH_GAP_MS)"; return 1; }
	else
		grep -q 'disk-write ok' "$d/con" || { bad "$tag" "no 'disk-write ok' from the guest"; return 1; }
		guest_stall "$d/con" || { bad "$tag" "no stall_max_us=/stalls_10ms= in the guest's stats line (old testguest.elf?)"; return 1; }
	fi
	[ "$(grep -c '^snap ' "$d/snaps")" = "$N" ] || { bad "$tag" "$(grep -c '^snap ' "$d/snaps") replies, expected $N"; return 1; }
	top="$d/ov-$N.qcow2"
	check_chain "$tag" "$d" "$top" $((N + 1)) "$vcl" || return 1
	# latencies: idle all; busy only those answered while the guest still wrote
	sed -n "s/^snap [0-9]* us=\([0-9]*\) state=$mode .*/\1/p" "$d/snaps" >>"$W/$vmm.$mode.lat"
	grep -c "state=$mode " "$d/snaps" >>"$W/$vmm.$mode.nin"
	sed -n "s/^snap \([0-9]*\) us=\([0-9]*\) state=$mode .*/\1 \2/p" "$d/snaps" >>"$W/$vmm.$mode.idx"
	sed -n "s/^snap 1 .* dirty_kb=\([0-9]*\)\$/\1/p" "$d/snaps" >>"$W/$vmm.$mode.dirty1"
	sed -n 's/.*disk-write stats .* ms=\([0-9]*\) .*/\1/p' "$d/con" | head -1 >>"$W/$vmm.$mode.wms"
	if [ "$mode" = busy ]; then echo "$GS_MAX" >>"$W/$vmm.busy.stall"; echo "$GS_N10" >>"$W/$vmm.busy.n10"; fi
	echo "  ok $tag: $N snapshots ($(grep -c "state=$mode " "$d/snaps") while $mode), $((N + 1)) layers clean, chain depth $((N + 1))$([ "$VERIFY" != 0 ] && echo ", data verified under cowvm and QEMU")"
	[ -n "${BENCH_KEEP:-}" ] || rm -rf "$d"
	return 0
}

# run_plain VMM TAG — busy's guest without snapshots: its write time and
# longest wait
run_plain() {
	local vmm=$1 tag=$2 d
	d="$W/$tag"; mkdir -p "$d"
	timeout 60 qemu-img create -q -f qcow2 "$d/base.qcow2" "$SIZE" || { bad "$tag" "qemu-img create"; return 1; }
	start_vmm "$vmm" "$d" "cowvm.test=disk-write seed=$B" "$d/base.qcow2"
	wait_vmm "$vmm" "$TMO"
	[ "$VRC" = 0 ] && grep -q 'disk-write ok' "$d/con" ||
		{ bad "$tag" "guest status $VRC: $(tail -1 "$d/con" 2>/dev/null)"; return 1; }
	guest_stall "$d/con" || { bad "$tag" "no stall_max_us=/stalls_10ms= in the guest's stats line (old testguest.elf?)"; return 1; }
	sed -n 's/.*disk-write stats .* ms=\([0-9]*\) .*/\1/p' "$d/con" | head -1 >>"$W/$vmm.plain.wms"
	echo "$GS_MAX" >>"$W/$vmm.plain.stall"; echo "$GS_N10" >>"$W/$vmm.plain.n10"
	[ -n "${BENCH_KEEP:-}" ] || rm -rf "$d"
}

# stats FILE — "median min max n" of the numbers in FILE (one per line)
stats() {
	sort -n "$1" 2>/dev/null | awk '{a[NR]=$1} END {
		if (NR == 0) { print "- - - 0"; exit }
		m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
		print m, a[1], a[NR], NR }'
}
ms() { [ "$1" = - ] && echo - || awk -v u="$1" 'BEGIN { printf "%.1f", u / 1000 }'; }
# ratio C Q — Q / C with two decimals, "-" when either is "-" or C is 0
ratio() {
	if [ "$1" = - ] || [ "$2" = - ]; then echo -; return; fi
	awk -v c="$1" -v q="$2" 'BEGIN { if (c > 0) printf "%.2f\n", q / c; else print "-" }'
}

# stall_table — busy: the guest's longest wait for a completion per run,
# with the snapshots and without (the plain runs)
stall_table() {
	local vmm w wx wn w10 p px pn p10 n
	local -A med=()
	echo
	printf "  guest's longest wait for a completion (ms)   with %2d snapshots: median      max  waits>=10ms   ok/runs" "$N"
	[ "$PLAIN" != 0 ] && printf '   without: median      max  waits>=10ms   ok/runs'
	echo
	for vmm in cowvm qemu; do
		read -r w _ wx wn <<<"$(stats "$W/$vmm.busy.stall")"
		read -r w10 _ _ _ <<<"$(stats "$W/$vmm.busy.n10")"
		printf '  busy  %-5s %57s %8s %12s   %7s' "$vmm" "$(ms "$w")" "$(ms "$wx")" "$w10" "$wn/$RUNS"
		if [ "$PLAIN" != 0 ]; then
			read -r p _ px pn <<<"$(stats "$W/$vmm.plain.stall")"
			read -r p10 _ _ _ <<<"$(stats "$W/$vmm.plain.n10")"
			printf ' %17s %8s %12s   %7s' "$(ms "$p")" "$(ms "$px")" "$p10" "$pn/$RUNS"
		fi
		echo
		med[$vmm.with]=$w
		[ "$PLAIN" != 0 ] && med[$vmm.without]=$p
	done
	echo "  busy  ratio qemu/cowvm of the medians: with snapshots $(ratio "${med[cowvm.with]}" "${med[qemu.with]}")$([ "$PLAIN" != 0 ] &&
		echo ", without $(ratio "${med[cowvm.without]}" "${med[qemu.without]}")")   (> 1: cowvm's guest waits less)"
	echo "        (median and max over the runs of each run's longest wait; waits>=10ms: median over the runs)"
	for vmm in cowvm qemu; do
		n=$(awk '{s+=$1} END {print s+0}' "$W/$vmm.busy.nin")
		[ "$n" -lt $((N * ${OK[$vmm.busy]:-0})) ] &&
			echo "  busy  $vmm: only $n of $((N * ${OK[$vmm.busy]:-0})) snapshots were answered while its guest wrote: its with-snapshots wait covers those only"
	done
	return 0
}

echo "bench/snapshot: blockdev-snapshot-sync, cowvm vs QEMU, $N snapshots per run, $RUNS runs per VMM and mode"
echo "  machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs," \
	"kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  disk: $SIZE qcow2 (qemu-img create), cache=$CACHE, aio=${AIO:-default}; guest memory $MEM"
echo "  cowvm: $COWVM run --kernel testguest.elf --mem $MEM --disk base.qcow2$DOPT --control SOCK ..."
echo "  qemu:  $QEMU -M pc -accel kvm -cpu $QEMU_CPU -bios qboot.rom -drive if=none,id=d0,file=base.qcow2,format=qcow2$DOPT"
echo "         -device virtio-blk-pci,drive=d0,disable-legacy=on -qmp unix:SOCK ..."
echo "  ($(timeout 10 "$QEMU" --version | head -1); work directory $W)"
echo

FAILED=0
for mode in $MODES; do
	for vmm in cowvm qemu; do : >"$W/$vmm.$mode.lat"; : >"$W/$vmm.$mode.wms"; : >"$W/$vmm.$mode.nin"; : >"$W/$vmm.$mode.idx"; : >"$W/$vmm.$mode.dirty1"; done
done
for vmm in cowvm qemu; do
	for k in plain.wms plain.stall plain.n10 busy.stall busy.n10; do : >"$W/$vmm.$k"; done
done
declare -A OK=()
for ((i = 1; i <= RUNS; i++)); do
	if ((i % 2)); then order="cowvm qemu"; else order="qemu cowvm"; fi
	for mode in $MODES; do
		for vmm in $order; do
			if run_case "$vmm" "$mode" "$vmm-$mode-$i"; then
				OK[$vmm.$mode]=$(( ${OK[$vmm.$mode]:-0} + 1 ))
			else
				FAILED=1
			fi
		done
		if [ "$mode" = busy ] && [ "$PLAIN" != 0 ]; then
			for vmm in $order; do run_plain "$vmm" "$vmm-plain-$i" || FAILED=1; done
		fi
	done
done

echo
printf 'snapshot latency, command to reply (ms)   median      max      min   snapshots   ok/runs\n'
for mode in $MODES; do
	read -r c_med c_min c_max c_n <<<"$(stats "$W/cowvm.$mode.lat")"
	read -r q_med q_min q_max q_n <<<"$(stats "$W/qemu.$mode.lat")"
	printf '  %-5s cowvm                          %8s %8s %8s   %9s   %d/%d\n' "$mode" \
		"$(ms "$c_med")" "$(ms "$c_max")" "$(ms "$c_min")" "$c_n" "${OK[cowvm.$mode]:-0}" "$RUNS"
	printf '  %-5s qemu                           %8s %8s %8s   %9s   %d/%d\n' "$mode" \
		"$(ms "$q_med")" "$(ms "$q_max")" "$(ms "$q_min")" "$q_n" "${OK[qemu.$mode]:-0}" "$RUNS"
	if [ "$c_n" -gt 0 ] && [ "$q_n" -gt 0 ]; then
		echo "  $mode  ratio qemu/cowvm: medians $(awk -v c="$c_med" -v q="$q_med" 'BEGIN { printf "%.2f", q / c }')," \
			"max $(awk -v c="$c_max" -v q="$q_max" 'BEGIN { printf "%.2f", q / c }')   (> 1: cowvm faster)"
	else
		echo "  $mode  ratio: not available (no successful run of one VMM)"
	fi
	# by position in the row (snapshot k makes the chain k+1 deep)
	for vmm in cowvm qemu; do
		printf '  %-5s %-5s by snapshot # (median ms):' "$mode" "$vmm"
		for ((k = 1; k <= N; k++)); do
			awk -v k=$k '$1 == k { print $2 }' "$W/$vmm.$mode.idx" >"$W/k"
			read -r km _ _ kn <<<"$(stats "$W/k")"
			[ "$kn" = 0 ] && printf ' -' || printf ' %s' "$(awk -v u="$km" 'BEGIN { printf "%.0f", u / 1000 }')"
		done
		echo
	done
	read -r cd _ _ _ <<<"$(stats "$W/cowvm.$mode.dirty1")"
	read -r qd _ _ _ <<<"$(stats "$W/qemu.$mode.dirty1")"
	mib() { [ "$1" = - ] && echo - || awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
	echo "  $mode  host dirty page cache when the 1st snapshot was sent (MiB, median): cowvm $(mib "$cd"), qemu $(mib "$qd")"
	if [ "$mode" = busy ]; then
		nc=$(awk '{s+=$1} END {print s+0}' "$W/cowvm.busy.nin")
		nq=$(awk '{s+=$1} END {print s+0}' "$W/qemu.busy.nin")
		echo "  busy  snapshots answered while the guest still wrote: cowvm $nc/$((N * ${OK[cowvm.busy]:-0})), qemu $nq/$((N * ${OK[qemu.busy]:-0})) (only those are timed)"
		read -r cw _ _ _ <<<"$(stats "$W/cowvm.busy.wms")"
		read -r qw _ _ _ <<<"$(stats "$W/qemu.busy.wms")"
		read -r cp _ _ _ <<<"$(stats "$W/cowvm.plain.wms")"
		read -r qp _ _ _ <<<"$(stats "$W/qemu.plain.wms")"
		echo "  busy  guest's $SIZE write pass (ms, median): cowvm $cw with $N snapshots, $cp without;" \
			"qemu $qw with, $qp without"
		stall_table
	fi
	echo
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$FAILED" = 0 ] || { echo "bench/snapshot: some runs failed (see above)"; exit 1; }
exit 0
