#!/bin/bash
# Power cuts of `cowvm image resize` in the cases qemu-img-resize.sh's power
# cuts leave out (cow.h I14; a review of the shrink's cut and dropped
# refcount blocks): each resize is recorded under the LD_PRELOAD recorder
# (tests/helpers/shim/iolog.c) and cut at 120 points
# (tests/helpers/powercut: synced writes kept, later ones kept, lost or
# torn, also at 512-byte sectors); after every cut `qemu-img check` finds no
# corruption (leaks allowed), qemu-img info opens the image (its bitmaps
# loadable), the size is the old or the new one and the content up to the
# smaller of the two is the old one:
# - 512-byte clusters, refcount_bits=1 (a block covers 2 MiB) and
#   refcount_bits=64 (a block covers 32 KiB: dozens dropped), shrunk so that
#   refcount blocks are dropped and the file is cut;
# - a shrink after cowvm itself moved the refcount table (64-bit refcounts,
#   512-byte clusters: the table grew while cow/ wrote the data), the old
#   table free below the new one;
# - four persistent bitmaps (granularities 512 B, 64 KiB, 2 MiB, one of
#   them disabled) shrunk to a size that is not a multiple of any
#   granularity but 512 B, shrunk below one 2 MiB granule, grown back;
# - the full replay equals the file cowvm wrote, and that file checks
#   clean (no leak) and has the size qemu-img gives a copy.
# timeout: 400
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v qemu-io >/dev/null 2>&1 || skip "qemu-io not installed"
command -v jq >/dev/null 2>&1 || skip "jq not installed"
SHIM="$(dirname "$COWIO")/iolog.so"
PC="$(dirname "$COWIO")/powercut"
[ -f "$SHIM" ] && [ -x "$PC" ] || skip "power-cut helpers not built"
cow_tmpdir
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
SEED=${POWERCUT_SEED:-$RANDOM}
echo "POWERCUT_SEED=$SEED"
CUTS=${POWERCUT_CUTS:-120}

vsize() { qemu-img info --output=json "$@" | jq '."virtual-size"'; }
rt_off() { echo $(($(get_be "$1" 48 8))); }

pc_run() {   # NAME IMG NEWSIZE
	local name=$1 img=$2 new=$3 cut rc old sz n shrink=()
	old=$(vsize "$img")
	((new < old)) && shrink=(--shrink)
	n=$((new < old ? new : old))
	qemu-img convert -O raw "$img" pc.old.raw
	cp "$img" pc.qcow2
	cp "$img" pq.qcow2
	rm -f io.log
	: >pc.mark
	LD_PRELOAD="$SHIM" IOLOG_IMAGE="$PWD/pc.qcow2" IOLOG_MARK="$PWD/pc.mark" IOLOG_OUT="$PWD/io.log" \
		"$COWVM" image resize "${shrink[@]}" pc.qcow2 "$new" >/dev/null || fail "$name: recorded resize failed"
	qemu-img resize -q "${shrink[@]}" pq.qcow2 "$new" || fail "$name: qemu-img resize"
	qcheck pc.qcow2
	[ "$(vsize pc.qcow2)" = "$new" ] || fail "$name: size $(vsize pc.qcow2)"
	qemu-img compare -q pq.qcow2 pc.qcow2 || fail "$name: content differs from qemu-img's"
	"$PC" io.log "$img" crash.qcow2 clog 0 999999999 >/dev/null || fail "$name: replay"
	cmp -s crash.qcow2 pc.qcow2 || fail "$name: a full replay differs from the file written"
	for ((cut = 1; cut <= CUTS; cut++)); do
		if ((cut % 2)); then
			"$PC" io.log "$img" crash.qcow2 clog $((SEED * 1000 + cut)) >pc.out
		else
			POWERCUT_TEAR=512 "$PC" io.log "$img" crash.qcow2 clog $((SEED * 1000 + cut)) >pc.out
		fi || fail "$name: powercut"
		qemu-img check -q crash.qcow2 >check.out 2>&1
		rc=$?
		if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
			head -5 check.out
			cp crash.qcow2 "$COWVM_SRC/$COWVM_BUILD/test-logs/pc-fail.qcow2" 2>/dev/null
			fail "$name, cut $cut ($(cat pc.out)): qemu-img check exited $rc"
		fi
		sz=$(vsize crash.qcow2) || fail "$name, cut $cut ($(cat pc.out)): qemu-img info cannot open it"
		[ "$sz" = "$old" ] || [ "$sz" = "$new" ] || fail "$name, cut $cut: size $sz"
		qemu-img convert -O raw crash.qcow2 crash.raw || fail "$name, cut $cut: unreadable"
		cmp -s -n "$n" pc.old.raw crash.raw || fail "$name, cut $cut ($(cat pc.out)): content differs"
		# cowvm opens and checks it too, and writes to it
		"$COWVM" image check crash.qcow2 >ccheck.out 2>&1
		rc=$?
		[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || { cat ccheck.out; fail "$name, cut $cut: cowvm image check exited $rc"; }
	done
	echo "ok: $name: $CUTS power cuts ($(wc -c <io.log) bytes recorded, file $(stat -c %s "$img") -> $(stat -c %s pc.qcow2), qemu-img's $(stat -c %s pq.qcow2))"
}

for rb in 1 64; do
	qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=$rb r$rb.qcow2 4M
	qemu-io -c "write -P 0xa5 0 4M" r$rb.qcow2 >/dev/null
	pc_run "512 B clusters, refcount_bits=$rb, shrink" r$rb.qcow2 $((1 << 20))
	pc_run "512 B clusters, refcount_bits=$rb, shrink to 512 bytes" r$rb.qcow2 512
done

# the refcount table moved by cow/ while it wrote the data
"$COWVM" image create m.qcow2 4M --cluster-size 512 --refcount-bits 64 >/dev/null || fail "create"
rt0=$(rt_off m.qcow2)
truncate -s 4M m.ref
"$COWIO" random m.qcow2 m.ref $SEED 3000 >/dev/null || fail "cowio random"
[ "$(rt_off m.qcow2)" != "$rt0" ] || fail "the refcount table did not move ($(rt_off m.qcow2))"
qcheck m.qcow2
pc_run "512 B clusters, refcount_bits=64, table moved by cowvm, shrink" m.qcow2 $((512 << 10))

# bitmaps of several granularities
qemu-img create -q -f qcow2 -o cluster_size=512 bm.qcow2 6M
qemu-img bitmap --add -g 512 bm.qcow2 g512
qemu-img bitmap --add -g 64k bm.qcow2 g64k
qemu-img bitmap --add -g 2M bm.qcow2 g2m
qemu-img bitmap --add -g 4k --disable bm.qcow2 off4k
qemu-io -c "write -P 0xa6 0 6M" bm.qcow2 >/dev/null
pc_run "bitmaps, shrink to 3 MiB + 512" bm.qcow2 $(((3 << 20) + 512))
cp pc.qcow2 bm2.qcow2
pc_run "bitmaps, shrink below one 2 MiB granule" bm2.qcow2 $((64 << 10))
cp pc.qcow2 bm3.qcow2
pc_run "bitmaps, grow to 40 MiB + 512" bm3.qcow2 $(((40 << 20) + 512))
exit 0
