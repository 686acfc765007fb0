#!/bin/bash
# bench/image/run.sh [BUILD] — `cowvm image bench` against `qemu-img bench` on
# the same files, alternating runs (median of $RUNS each): 4 KiB "random" read
# and write (a 7 MiB + 4 KiB stride modulo the disk, which qemu-img bench
# supports, so both tools issue the same offsets), 64 KiB sequential read and
# write; on a fully allocated 1 GiB image, on a fresh overlay over a 1 GiB
# base (recreated before every write run) and on a depth-16 chain. Prints
# IOPS, MB/s and the ratio cowvm/qemu-img, and overlay vs raw for cowvm.
# COWVM_AIO=io_uring sends cowvm's requests through storage/ (the virtio-blk
# stack, io_uring) instead of straight to cow/. Not part of `make check`.
set -u
B=${1:-build}
COWVM=$(realpath "$B/cowvm")
RUNS=${RUNS:-3}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/cowbench.XXXXXX")
trap 'rm -rf "$W"' EXIT
cd "$W" || exit 1
command -v qemu-img >/dev/null || { echo "qemu-img not installed"; exit 77; }

echo "setting up images in $W ..."
qemu-img create -q -f qcow2 -o preallocation=full full.qcow2 1G
qemu-img create -q -f raw -o preallocation=full base.raw 1G
qemu-img create -q -f qcow2 -o preallocation=full base.qcow2 1G
qemu-img create -q -f qcow2 c0.qcow2 1G
qemu-io -c "write -P 1 0 1G" c0.qcow2 >/dev/null
for i in $(seq 1 15); do
	qemu-img create -q -f qcow2 -b "c$((i - 1)).qcow2" -F qcow2 "c$i.qcow2"
	# each layer owns a stripe: 4 MiB in every 64 MiB
	cmds=()
	for s in $(seq 0 15); do cmds+=(-c "write -P $((i + 1)) $((s * 64 + i * 4))M 4M"); done
	qemu-io "${cmds[@]}" "c$i.qcow2" >/dev/null
done

STRIDE=$((7 * 1048576 + 4096))
# name: args
declare -A T=(
	[rr4k]="-c 100000 -d 64 -s 4096 -S $STRIDE"
	[rw4k]="-w -c 30000 -d 64 -s 4096 -S $STRIDE"
	[sr64k]="-c 16384 -d 64 -s 65536"
	[sw64k]="-w -c 16384 -d 64 -s 65536"
)
ORDER="rr4k rw4k sr64k sw64k"

secs() { sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

prep() {   # SCENARIO TEST -> file to use (fresh overlay for writes on "overlay")
	case $1 in
	full) echo full.qcow2 ;;
	raw) echo base.raw ;;
	overlay)
		rm -f ov.qcow2
		qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 ov.qcow2
		echo ov.qcow2 ;;
	chain16) echo c15.qcow2 ;;
	esac
}

run_one() {   # TOOL SCENARIO TEST
	local f
	f=$(prep "$2" "$3")
	# shellcheck disable=SC2086
	if [ "$1" = qemu ]; then
		qemu-img bench -t writeback ${T[$3]} "$f" 2>&1 | secs
	else
		"$COWVM" image bench ${COWVM_AIO:+-i "$COWVM_AIO"} ${T[$3]} "$f" 2>&1 | secs
	fi
}

declare -A RES
printf '%-9s %-6s %12s %12s %10s %10s %7s\n' scenario test qemu-IOPS cowvm-IOPS qemu-MB/s cowvm-MB/s ratio
for sc in full overlay chain16 raw; do
	for t in $ORDER; do
		case $sc in chain16) case $t in rw4k|sw64k) continue ;; esac ;; esac
		qs=() cs=()
		for ((r = 0; r < RUNS; r++)); do
			qs+=("$(run_one qemu "$sc" "$t")")
			cs+=("$(run_one cowvm "$sc" "$t")")
		done
		q=$(printf '%s\n' "${qs[@]}" | median)
		c=$(printf '%s\n' "${cs[@]}" | median)
		n=$(echo "${T[$t]}" | sed 's/.*-c \([0-9]*\).*/\1/')
		bs=$(echo "${T[$t]}" | sed 's/.*-s \([0-9]*\).*/\1/')
		RES[$sc.$t]=$c
		awk -v sc="$sc" -v t="$t" -v q="$q" -v c="$c" -v n="$n" -v bs="$bs" 'BEGIN {
			printf "%-9s %-6s %12.0f %12.0f %10.1f %10.1f %6.2fx\n", sc, t, n / q, n / c,
				n * bs / q / 1e6, n * bs / c / 1e6, q / c }'
	done
done
echo
echo "cowvm overlay vs cowvm raw (target >= 0.9x):"
for t in $ORDER; do
	awk -v t="$t" -v o="${RES[overlay.$t]}" -v r="${RES[raw.$t]}" 'BEGIN { printf "  %-6s %6.2fx\n", t, r / o }'
done
