#!/bin/bash
# bench/convert/run.sh [BUILD] — the image commands that copy a disk, against
# qemu-img on the same files: `cowvm image convert` / `commit` / `check`
# beside `qemu-img convert` / `commit` / `check`, alternating runs, median
# of $RUNS (default 3) wall-clock seconds each. A full clone is a convert;
# a flattened clone is a convert of a chain; folding a clone's layer back
# is a commit.
#
# The source: a raw disk of $SIZE_MB MiB (default 1024) laid out as a used
# guest disk is, per 8 MiB: 4 MiB of the system's own files (shared
# libraries and programs from /usr: code and text, which compress 2-4x),
# 1 MiB of random bytes (media, compressed or encrypted data: does not
# compress), 3 MiB of zeros (free space). From it:
#   chain16   a depth-16 chain: the source converted to qcow2 as its base,
#             and 15 overlays, each writing 4 MiB of new data in every
#             64 MiB (qemu-io)
# Tests ($TESTS, default all):
#   qcow2     convert the raw source to qcow2
#   zlib      the same, compressed (-c), deflate
#   zstd      the same, compressed (-c), zstd
#   flatten   convert chain16's top to one qcow2 image
#   raw       convert the qcow2 base to raw
#   topcopy   convert -B: chain16's top layer alone into a new overlay over
#             the layer below it (a clone's own data, sent or rebased)
#   commit    commit a 1-layer overlay of the base holding 256 MiB of
#             scattered 64 KiB writes (both made fresh before each run,
#             outside the timing)
#   commitb   commit -b: two such overlays (256 MiB each, the second
#             shifted by 64 KiB) over a copy of the base, both committed into
#             it (made fresh before each run)
#   check     check the zlib-compressed image (every table and refcount)
#   prealloc  create a qcow2 image of the source's size with preallocation
#             full (every cluster allocated and written with zeros)
# qemu-img runs with `-t writeback` for the output (convert, commit): it
# then flushes the image at the end, as cowvm does; its default for convert
# (cache=unsafe) never flushes, so the copy could be lost to a power cut
# after the command returned. Each timed run starts after `sync`, an idle
# disk and, for writes, memory freed just before (settle, hot_pages in
# bench/lib.sh). Prints seconds, MB/s of source data, the ratio
# qemu-img/cowvm (> 1: cowvm faster), how many pairs cowvm won, and the
# output sizes. Both tools' outputs are compared (qemu-img compare) once.
# Not part of `make check`.
set -u
B=${1:-build}
COWVM=$(realpath "$B/cowvm")
HERE=$(dirname "$(realpath "$0")")
RUNS=${RUNS:-3}
SIZE_MB=${SIZE_MB:-1024}
TESTS=${TESTS:-qcow2 zlib zstd flatten topcopy raw commit commitb check prealloc}
. "$HERE/../lib.sh"   # settle, hot_pages
die() { echo "bench/convert: $*" >&2; exit 1; }
[ -x "$COWVM" ] || die "$COWVM not found (run make first)"
command -v qemu-img >/dev/null || { echo "qemu-img not installed"; exit 77; }
command -v python3 >/dev/null || { echo "python3 not installed (used to free memory before runs)"; exit 77; }
W=$(mktemp -d "${TMPDIR:-/var/tmp}/cowconv.XXXXXX")
trap 'rm -rf "$W"' EXIT
cd "$W" || exit 1
((SIZE_MB % 8 == 0)) || die "SIZE_MB must be a multiple of 8"

echo "setting up a ${SIZE_MB} MiB source in $W ..."
# the system's files, in a fixed order, as the compressible part
find /usr/lib /usr/bin -xdev -type f -size +64k 2>/dev/null | LC_ALL=C sort |
	head -c 10000000 | tr '\n' '\0' | xargs -0 cat 2>/dev/null |
	head -c $((SIZE_MB / 2 * 1048576)) > sys.bin
[ "$(stat -c %s sys.bin)" -eq $((SIZE_MB / 2 * 1048576)) ] || die "not enough files under /usr for the source"
python3 - "$SIZE_MB" <<'EOF' || die "cannot write the source"
import os, sys
n = int(sys.argv[1]) // 8
M = 1 << 20
with open("sys.bin", "rb") as s, open("src.raw", "wb") as f:
    for i in range(n):
        f.write(s.read(4 * M))
        f.write(os.urandom(M))
        f.write(bytes(3 * M))
EOF
rm -f sys.bin
qemu-img convert -q -O qcow2 src.raw base.qcow2 || die "base.qcow2"
if [[ " $TESTS " == *" flatten "* || " $TESTS " == *" topcopy "* ]]; then
	cp base.qcow2 c0.qcow2
	for i in $(seq 1 15); do
		qemu-img create -q -f qcow2 -b "c$((i - 1)).qcow2" -F qcow2 "c$i.qcow2" || die "chain"
		cmds=()
		for ((s = 0; s * 64 < SIZE_MB; s++)); do cmds+=(-c "write -P $((i + 1)) $((s * 64 + i * 4))M 4M"); done
		qemu-io "${cmds[@]}" "c$i.qcow2" >/dev/null || die "chain writes"
	done
fi
# the commit's top layer: 4096 writes of 64 KiB (256 MiB), 1 in 4 of the
# disk's 64 KiB blocks, both tools given the same file
make_top() {
	cp base.qcow2 cbase.qcow2
	qemu-img create -q -f qcow2 -b cbase.qcow2 -F qcow2 top.qcow2
	local cmds=() n=$((SIZE_MB * 16 / 4)) k
	((n > 4096)) && n=4096
	for ((k = 0; k < n; k++)); do cmds+=(-c "write -P $((k % 250 + 1)) $((k * 4 * 65536)) 64k"); done
	qemu-io "${cmds[@]}" top.qcow2 >/dev/null || die "top writes"
}

# commitb's chain: cbase <- top (as make_top) <- top2, the same writes 64 KiB on
make_top2() {
	make_top
	qemu-img create -q -f qcow2 -b top.qcow2 -F qcow2 top2.qcow2
	local cmds=() n=$((SIZE_MB * 16 / 4)) k
	((n > 4096)) && n=4096
	for ((k = 0; k < n; k++)); do cmds+=(-c "write -P $((k % 250 + 3)) $((k * 4 * 65536 + 65536)) 64k"); done
	qemu-io "${cmds[@]}" top2.qcow2 >/dev/null || die "top2 writes"
}

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# the timed command of TOOL (qemu or cowvm) for TEST, into out-TOOL.*
run_one() {   # TOOL TEST -> prints seconds
	local t0 t1 rc
	rm -f "out-$1".*
	case $2 in
	commit) make_top ;;
	commitb) make_top2 ;;
	esac
	settle
	case $2 in check) ;; *) hot_pages ;; esac
	t0=$(now)
	case $1/$2 in
	qemu/qcow2)    qemu-img convert -t writeback -O qcow2 src.raw out-qemu.qcow2 ;;
	cowvm/qcow2)   "$COWVM" image convert -O qcow2 src.raw out-cowvm.qcow2 ;;
	qemu/zlib)     qemu-img convert -t writeback -O qcow2 -c -o compression_type=zlib src.raw out-qemu.qcow2 ;;
	cowvm/zlib)    "$COWVM" image convert -O qcow2 -c --compression zlib src.raw out-cowvm.qcow2 ;;
	qemu/zstd)     qemu-img convert -t writeback -O qcow2 -c -o compression_type=zstd src.raw out-qemu.qcow2 ;;
	cowvm/zstd)    "$COWVM" image convert -O qcow2 -c --compression zstd src.raw out-cowvm.qcow2 ;;
	qemu/flatten)  qemu-img convert -t writeback -O qcow2 c15.qcow2 out-qemu.qcow2 ;;
	cowvm/flatten) "$COWVM" image convert -O qcow2 c15.qcow2 out-cowvm.qcow2 ;;
	qemu/raw)      qemu-img convert -t writeback -O raw base.qcow2 out-qemu.raw ;;
	cowvm/raw)     "$COWVM" image convert -O raw base.qcow2 out-cowvm.raw ;;
	qemu/topcopy)  qemu-img convert -t writeback -O qcow2 -B c14.qcow2 -F qcow2 c15.qcow2 out-qemu.qcow2 ;;
	cowvm/topcopy) "$COWVM" image convert -O qcow2 -B c14.qcow2 -F qcow2 c15.qcow2 out-cowvm.qcow2 ;;
	qemu/commit)   qemu-img commit -q -t writeback top.qcow2 ;;
	cowvm/commit)  "$COWVM" image commit top.qcow2 >/dev/null ;;
	qemu/commitb)  qemu-img commit -q -t writeback -b cbase.qcow2 top2.qcow2 ;;
	cowvm/commitb) "$COWVM" image commit -b cbase.qcow2 top2.qcow2 >/dev/null ;;
	qemu/check)    qemu-img check -q zcheck.qcow2 ;;
	cowvm/check)   "$COWVM" image check zcheck.qcow2 >/dev/null ;;
	qemu/prealloc) qemu-img create -q -f qcow2 -o preallocation=full out-qemu.qcow2 "${SIZE_MB}M" ;;
	cowvm/prealloc) "$COWVM" image create out-cowvm.qcow2 "${SIZE_MB}M" --preallocation full >/dev/null ;;
	esac
	rc=$?
	t1=$(now)
	[ $rc -eq 0 ] || die "$1 $2 failed (exit $rc)"
	echo "$t0 $t1" | awk '{printf "%.3f\n", $2 - $1}'
}

# what a test's outputs are, for the size column and the comparison
outputs() {   # TEST
	case $1 in
	raw) echo "out-qemu.raw out-cowvm.raw" ;;
	commit|commitb) echo "" ;;
	check) echo "" ;;
	*) echo "out-qemu.qcow2 out-cowvm.qcow2" ;;
	esac
}

source_of() {   # TEST
	case $1 in
	flatten|topcopy) echo c15.qcow2 ;;
	raw) echo base.qcow2 ;;
	prealloc) echo zero.raw ;;
	*) echo src.raw ;;
	esac
}

SRC_MB=$SIZE_MB
printf "%-8s %10s %10s %9s %9s %8s %6s %12s %12s\n" test qemu-s cowvm-s qemu-MB/s cowvm-MB/s ratio won qemu-size cowvm-size
for t in $TESTS; do
	rm -f q.t c.t
	won=0
	if [ "$t" = prealloc ]; then
		truncate -s "${SIZE_MB}M" zero.raw
	fi
	if [ "$t" = check ]; then
		qemu-img convert -q -O qcow2 -c src.raw zcheck.qcow2 || die "zcheck"
	fi
	for ((r = 1; r <= RUNS; r++)); do
		qs=$(run_one qemu "$t") || exit 1
		cs=$(run_one cowvm "$t") || exit 1
		echo "$qs" >> q.t
		echo "$cs" >> c.t
		awk -v q="$qs" -v c="$cs" 'BEGIN { exit !(c < q) }' && won=$((won + 1))
	done
	read -r oq oc <<<"$(outputs "$t")"
	szq=- szc=-
	if [ -n "${oq:-}" ]; then
		szq=$(du -k "$oq" | cut -f1)K szc=$(du -k "$oc" | cut -f1)K
		qemu-img compare -q "$oq" "$oc" || die "$t: the two outputs differ"
		qemu-img compare -q "$(source_of "$t")" "$oc" || die "$t: cowvm's output differs from its source"
	fi
	qm=$(median < q.t) cm=$(median < c.t)
	awk -v t="$t" -v q="$qm" -v c="$cm" -v mb="$SRC_MB" -v w="$won/$RUNS" -v sq="$szq" -v sc="$szc" \
		'BEGIN { printf "%-8s %10.3f %10.3f %9.0f %9.0f %7.2fx %6s %12s %12s\n", t, q, c, mb / q, mb / c, q / c, w, sq, sc }'
	rm -f out-* top.qcow2 top2.qcow2 cbase.qcow2
done
