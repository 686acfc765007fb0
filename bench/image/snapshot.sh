#!/bin/bash
# bench/image/snapshot.sh [BUILD] — internal snapshots: `cowvm image
# snapshot -c / -a / -d` against `qemu-img snapshot` on copies of the same
# image, alternating who goes first, median of $RUNS (default 5) wall-clock
# seconds per step. The image: $SIZE (default 2G) with $CLUSTER-byte
# clusters (default 4096: many L2 tables for the refcount walks),
# preallocation=metadata (every cluster allocated, so each step walks and
# counts every entry). Steps in order on each copy: -c s1, -c s2 (tables
# already shared), -a s1, -d s1, -d s2. Ratio = qemu-img / cowvm (> 1:
# cowvm faster). Both copies must end identical and pass qemu-img check.
set -u
BUILD=${1:-build}
COWVM=$(cd "$(dirname "$0")/../.." && pwd)/$BUILD/cowvm
RUNS=${RUNS:-5} SIZE=${SIZE:-2G} CLUSTER=${CLUSTER:-4096}
[ -x "$COWVM" ] || { echo "build $COWVM first"; exit 1; }
command -v qemu-img >/dev/null || { echo "qemu-img not installed"; exit 1; }
T=$(mktemp -d "${TMPDIR:-/var/tmp}/snapbench.XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
qemu-img create -q -f qcow2 -o cluster_size=$CLUSTER,preallocation=metadata base.qcow2 "$SIZE"
STEPS=("-c s1" "-c s2" "-a s1" "-d s1" "-d s2")
declare -A tc tq win
now() { date +%s.%N; }
for ((r = 0; r < RUNS; r++)); do
	cp base.qcow2 c.qcow2
	cp base.qcow2 q.qcow2
	for ((s = 0; s < ${#STEPS[@]}; s++)); do
		# shellcheck disable=SC2086
		for who in $( ((r % 2)) && echo "q c" || echo "c q"); do
			a=$(now)
			if [ "$who" = c ]; then
				"$COWVM" image snapshot ${STEPS[s]} c.qcow2 || exit 1
			else
				qemu-img snapshot ${STEPS[s]} q.qcow2 || exit 1
			fi
			t=$(echo "$(now) - $a" | bc)
			[ "$who" = c ] && tc[$s]+="$t " || tq[$s]+="$t "
			[ "$who" = c ] && c_t=$t || q_t=$t
		done
		(($(echo "$c_t < $q_t" | bc))) && win[$s]=$((${win[$s]:-0} + 1))
	done
	qemu-img compare -q c.qcow2 q.qcow2 || { echo "the copies differ"; exit 1; }
	qemu-img check -q c.qcow2 || { echo "qemu-img check failed"; exit 1; }
done
med() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "internal snapshots, $SIZE, $CLUSTER-byte clusters, preallocation=metadata, $RUNS runs (median s)"
printf "%-8s %10s %10s %8s %10s\n" step qemu-img cowvm ratio "cowvm won"
for ((s = 0; s < ${#STEPS[@]}; s++)); do
	q=$(echo "${tq[$s]}" | med) c=$(echo "${tc[$s]}" | med)
	printf "%-8s %10.3f %10.3f %7.2fx %7s/%s\n" "${STEPS[s]}" "$q" "$c" "$(echo "$q / $c" | bc -l)" "${win[$s]:-0}" "$RUNS"
done
