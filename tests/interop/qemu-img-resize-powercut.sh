#!/bin/bash
# Power cuts of `cowvm image resize` in the cases qemu-img-resize.sh's power
# cuts leave out (cow.h I14; a review of the shrink's cut and dropped
# refcount blocks): each resize is recorded under the LD_PRELOAD recorder
# (tests/helpers/shim/iolog.c) and cut at 100 points
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
# - 2-bit refcounts with a snapshot sharing the L2 tables (the snapshot
#   intact after every cut), 1-bit refcounts with a bitmap, shrunk;
# - bitmap data that QEMU placed at the end of the file: after the shrink
#   the file is no longer than qemu-img's (the data moved down, then cut);
# - bitmaps made after data past the new end, shrunk to a size their
#   granularities do not divide, then grown back: after each cut a bitmap
#   not in use has the original bits over unchanged data, or qemu-img
#   resize's (qemu-nbd -B);
# - four persistent bitmaps (granularities 512 B, 64 KiB, 2 MiB, one of
#   them disabled) shrunk to a size that is not a multiple of any
#   granularity but 512 B, shrunk below one 2 MiB granule, grown back;
# - grown with --preallocation metadata, falloc, full (512-byte clusters,
#   64-bit refcounts; 64 KiB clusters, extended L2, over a longer backing
#   file): the content compared with qemu-img resize --preallocation's;
# - the full replay equals the file cowvm wrote, and that file checks
#   clean (no leak) and has the size qemu-img gives a copy.
# timeout: 700
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v qemu-io >/dev/null 2>&1 || skip "qemu-io not installed"
command -v jq >/dev/null 2>&1 || skip "jq not installed"
need_powercut 100
cow_tmpdir

vsize() { qemu-img info --output=json "$@" | jq '."virtual-size"'; }
rt_off() { echo $(($(get_be "$1" 48 8))); }

PC_BM=()

snap_raw() { qemu-img convert -l "snapshot.name=$2" -O raw "$1" "$3" || fail "read snapshot $2 of $1"; }

pc_run() {   # NAME IMG NEWSIZE [SNAPSHOT]   (PC_PREALLOC: a --preallocation mode)
	local name=$1 img=$2 new=$3 sn=${4:-} cut rc old sz n shrink=()
	old=$(vsize "$img")
	((new < old)) && shrink=(--shrink)
	[ -z "${PC_PREALLOC:-}" ] || shrink=(--preallocation="$PC_PREALLOC")
	n=$((new < old ? new : old))
	qemu-img convert -O raw "$img" pc.old.raw
	[ -z "$sn" ] || snap_raw "$img" "$sn" pc.sn.raw
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
	declare -gA pc_bm_old=() pc_bm_new=()
	pc_bm_checked=0
	for b in "${PC_BM[@]}"; do
		pc_bm_old[$b]=$(bm_dirty "$img" "$b")
		pc_bm_new[$b]=$(bm_dirty pq.qcow2 "$b")
	done
	"$PC" io.log "$img" crash.qcow2 clog 0 999999999 >/dev/null || fail "$name: replay"
	cmp -s crash.qcow2 pc.qcow2 || fail "$name: a full replay differs from the file written"
	for ((cut = 1; cut <= CUTS; cut++)); do
		pc_cut "$img" $cut "$name"
		sz=$(vsize crash.qcow2) || fail "$name, cut $cut ($(cat pc.out)): qemu-img info cannot open it"
		[ "$sz" = "$old" ] || [ "$sz" = "$new" ] || fail "$name, cut $cut: size $sz"
		qemu-img convert -O raw crash.qcow2 crash.raw || fail "$name, cut $cut: unreadable"
		cmp -s -n "$n" pc.old.raw crash.raw || fail "$name, cut $cut ($(cat pc.out)): content differs"
		if [ -n "$sn" ]; then
			# (qemu-img reads a snapshot at the image's current size)
			snap_raw crash.qcow2 "$sn" now.raw
			sz=$(stat -c %s now.raw)
			cmp -s -n "$sz" pc.sn.raw now.raw || fail "$name, cut $cut ($(cat pc.out)): snapshot $sn changed"
		fi
		# bitmaps that claim to be consistent (not in use) must be:
		# at the old size the original bits over unchanged data (the
		# shrink's tail, written before they were made, has clear
		# bits: released, it is a change they did not record); at the
		# new size qemu-img resize's bits
		for b in "${PC_BM[@]}"; do
			qemu-img info --output=json crash.qcow2 | jq -e --arg b "$b" \
				'."format-specific".data.bitmaps | map(select(.name == $b))[0].flags | index("in-use")' >/dev/null &&
				continue
			if [ "$sz" = "$old" ]; then
				cmp -s pc.old.raw crash.raw ||
					fail "$name, cut $cut ($(cat pc.out)): bitmap $b consistent at the old size over changed data"
				[ "$(bm_dirty crash.qcow2 "$b")" = "${pc_bm_old[$b]}" ] ||
					fail "$name, cut $cut ($(cat pc.out)): bitmap $b $(bm_dirty crash.qcow2 "$b"), before ${pc_bm_old[$b]}"
			else
				[ "$(bm_dirty crash.qcow2 "$b")" = "${pc_bm_new[$b]}" ] ||
					fail "$name, cut $cut ($(cat pc.out)): bitmap $b $(bm_dirty crash.qcow2 "$b"), qemu-img's ${pc_bm_new[$b]}"
			fi
			pc_bm_checked=$((pc_bm_checked + 1))
		done
		# cowvm opens and checks it too, and writes to it
		"$COWVM" image check crash.qcow2 >ccheck.out 2>&1
		rc=$?
		[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || { cat ccheck.out; fail "$name, cut $cut: cowvm image check exited $rc"; }
	done
	((${#PC_BM[@]} == 0)) || echo "  bitmaps checked consistent $pc_bm_checked times"
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

# 2-bit refcounts (1-bit ones allow no snapshot) with a snapshot sharing
# the L2 tables (copied, then emptied), data past the new end written
# after the snapshot
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=2 sn.qcow2 4M
qemu-io -c "write -P 0xa7 0 4M" sn.qcow2 >/dev/null
qemu-img snapshot -c s1 sn.qcow2
qemu-io -c "write -P 0xa8 512k 3M" sn.qcow2 >/dev/null
pc_run "2-bit refcounts, snapshot, shrink" sn.qcow2 $(((1 << 20) + 512)) s1
# 1-bit refcounts and a bitmap
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=1 b1.qcow2 4M
qemu-img bitmap --add -g 4k b1.qcow2 b
qemu-io -c "write -P 0xa9 0 4M" b1.qcow2 >/dev/null
pc_run "1-bit refcounts, bitmap, shrink" b1.qcow2 $((64 << 10))

# bitmap data QEMU placed at the end of the file (it stores the bitmaps at
# close, after the data), shrunk twice: QEMU's store at the close of the
# first shrink rewrites every bitmap first-fit, low, and its second shrink
# cuts the file after the data; cowvm's shrink must move the bitmap data
# down as well, or the file keeps its length (without: 75776 bytes here,
# qemu-img's 9792)
qemu-img create -q -f qcow2 -o cluster_size=512 be.qcow2 10M
qemu-img bitmap --add -g 512 be.qcow2 g512
qemu-img bitmap --add -g 64k be.qcow2 g64k
qemu-io -c "write -P 0xaa 0 512" -c "write -P 0xab 3M 64k" -c "write -P 0xac 5M 512" \
	-c "write -P 0xad $(((10 << 20) - 512)) 512" be.qcow2 >/dev/null
cp be.qcow2 beq.qcow2
qemu-img resize -q --shrink beq.qcow2 2M && qemu-img resize -q --shrink beq.qcow2 1M || fail "qemu-img resize beq"
pc_run "bitmap data at the end, shrink" be.qcow2 $((2 << 20))
cp pc.qcow2 be2.qcow2
pc_run "bitmap data at the end, second shrink" be2.qcow2 $((1 << 20))
((($(stat -c %s pc.qcow2) + 511) / 512 <= ($(stat -c %s beq.qcow2) + 511) / 512)) ||
	fail "bitmap data at the end: file length $(stat -c %s pc.qcow2) after two shrinks, qemu-img's $(stat -c %s beq.qcow2)"
qemu-img compare -q beq.qcow2 pc.qcow2 || fail "bitmap data at the end: content differs from qemu-img's"
echo "ok: bitmap data at the end: after two shrinks $(stat -c %s pc.qcow2) bytes, qemu-img's $(stat -c %s beq.qcow2)"

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

# bitmaps made after data that lies past the new end (their bits there
# clear: releasing it is a change they do not record), some bits set
# below and past the new end, shrunk to a size no granularity but 512 B
# divides: after every cut a bitmap not in use has exactly the bits it had
# (the old size, the data unchanged) or qemu-img resize's (the new size)
if command -v qemu-nbd >/dev/null 2>&1; then
	qemu-img create -q -f qcow2 -o cluster_size=512 bt.qcow2 4M
	qemu-io -c "write -P 0xb1 0 4M" bt.qcow2 >/dev/null
	qemu-img bitmap --add -g 64k bt.qcow2 g64k
	qemu-img bitmap --add -g 4k bt.qcow2 g4k
	qemu-io -c "write -P 0xb2 8k 4k" -c "write -P 0xb3 1M 4k" -c "write -P 0xb4 3M 512" bt.qcow2 >/dev/null
	PC_BM=(g64k g4k)
	pc_run "bitmaps made after the data, shrink to 1 MiB + 1536" bt.qcow2 $(((1 << 20) + 1536))
	cp pc.qcow2 bt2.qcow2
	pc_run "bitmaps made after the data, grown back to 5 MiB + 512" bt2.qcow2 $(((5 << 20) + 512))
	PC_BM=()
else
	echo "# qemu-nbd not installed: bitmap bits after the cuts not compared"
fi
# grown with --preallocation (the new area's clusters allocated, filled,
# then named: refcounts, L2, L1, the size last): 512 B clusters with 64-bit
# refcounts (new refcount blocks, L2 tables and a larger L1 table), from a
# size inside a cluster; 64 KiB clusters with extended L2 entries over a
# longer backing file (the new area must never read it)
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=64 pa.qcow2 1049088
qemu-io -c "write -P 0xc1 0 1049088" pa.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=65536 pbase.qcow2 8M
qemu-io -c "write -P 0xc2 0 8M" pbase.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b pbase.qcow2 -F qcow2 -o extended_l2=on pb.qcow2 2100736
qemu-io -c "write -P 0xc3 64k 4k" pb.qcow2 >/dev/null
for PC_PREALLOC in metadata falloc full; do
	pc_run "512 B clusters, refcount_bits=64, grow, --preallocation $PC_PREALLOC" pa.qcow2 $((3 << 20))
	pc_run "over a longer backing file, extended L2, grow, --preallocation $PC_PREALLOC" pb.qcow2 $((6 << 20))
done
PC_PREALLOC=
exit 0
