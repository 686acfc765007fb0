#!/bin/bash
# Writing images that have internal snapshots (cow.h I16), against
# qemu-img 7.2's own snapshots:
# - cow/ (the synchronous path: image commands, cowio): random writes,
#   write-zeroes, discards and compressed writes into images whose L2
#   tables and clusters snapshots share (standard and extended L2 entries,
#   512-byte to 2 MiB clusters, refcount widths 2, 4 and 16, compressed
#   clusters under the snapshot), several snapshots taken between rounds;
# - storage/ (what virtio-blk uses: io_uring, worker threads, O_DIRECT,
#   16 requests in flight): `cowvm image bench -w` against `qemu-img bench
#   -w` of the same requests on a copy of the same image;
# after each: `qemu-img check` finds no error and no leak, the active view
# is the data written, and every snapshot reads back exactly as it did when
# it was taken; then qemu-img deletes and applies snapshots of the image
# cowvm wrote, and check is still clean.
# - growing an image with snapshots (commit into a smaller base): a
#   version 3 one grows as with qemu-img commit, the snapshot intact and
#   its size given back by qemu-img snapshot -a; a version 2 one is
#   refused, naming the reason, before anything is written;
# - an L1 entry without COPIED over a table only the active L1 uses (a
#   stale flag): the table is copied, the old one freed and its cluster
#   reused without a false overlap error;
# - an image whose snapshot table does not parse is not opened for
#   writing (also when dirty with lazy refcounts), nothing written.
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
cow_tmpdir

# snap_take IMG NAME: an internal snapshot, and what it reads now
snap_take() {
	qemu-img snapshot -c "$2" "$1" || fail "qemu-img snapshot -c $2"
	qemu-img convert -l "snapshot.name=$2" -O raw "$1" "$1.$2.raw" || fail "read snapshot $2"
}
# snap_verify IMG WHAT NAME...: each snapshot reads as when it was taken
snap_verify() {
	local img=$1 what=$2 s
	shift 2
	for s in "$@"; do
		qemu-img convert -l "snapshot.name=$s" -O raw "$img" now.raw || fail "$what: read snapshot $s"
		cmp -s now.raw "$img.$s.raw" || fail "$what: snapshot $s changed"
	done
}

# --- cow/: random writes between snapshots
cfg=0
for opts in "cluster_size=64k" "cluster_size=64k,extended_l2=on" "cluster_size=512" \
	"cluster_size=2M" "cluster_size=16k,extended_l2=on,refcount_bits=2" \
	"cluster_size=4k,refcount_bits=4"; do
	# narrow refcounts: no compressed clusters (several in one host
	# cluster, each a reference, then one more per snapshot, overflow a
	# 2-bit refcount and qemu-img refuses the snapshot)
	c=-c
	[[ $opts == *refcount_bits* ]] && c=""
	cfg=$((cfg + 1))
	rm -f a.qcow2 a.qcow2.*.raw
	qemu-img create -q -f qcow2 -o "$opts" a.qcow2 8M || fail "create $opts"
	qemu-io -c "write -P 0x11 0 3M" -c "write $c -P 0x33 4M 2M" -c "write -z 3M 512k" \
		-c "write -P 0x22 6M 1M" a.qcow2 >/dev/null || fail "qemu-io $opts"
	qemu-img convert -O raw a.qcow2 ref.raw
	snaps=()
	for round in 1 2 3; do
		snap_take a.qcow2 "s$round"
		snaps+=("s$round")
		comp=""
		((round == 2)) && [ -n "$c" ] && comp=compress
		"$COWIO" random a.qcow2 ref.raw "$((cfg * 10 + round))" 400 $comp ||
			fail "$opts: cowio random, round $round"
		qcheck a.qcow2
		qcompare ref.raw a.qcow2
		snap_verify a.qcow2 "$opts round $round" "${snaps[@]}"
	done
	# qemu-img works on what cowvm wrote: delete one, apply another
	qemu-img snapshot -d s2 a.qcow2 || fail "$opts: qemu-img snapshot -d"
	qcheck a.qcow2
	snap_verify a.qcow2 "$opts after delete" s1 s3
	qemu-img snapshot -a s1 a.qcow2 || fail "$opts: qemu-img snapshot -a"
	qcheck a.qcow2
	qcompare a.qcow2.s1.raw a.qcow2
	"$COWVM" image check a.qcow2 >chk.out || { cat chk.out; fail "$opts: cowvm image check"; }
	echo "ok: cow/ writes under snapshots ($opts)"
done

# --- storage/: cowvm image bench -w against qemu-img bench -w, same requests
cache_none=1
dd if=/dev/zero of=probe bs=4096 count=1 oflag=direct 2>/dev/null || cache_none=0
rm -f probe
for eng in io_uring threads; do
	for xl in off on; do
		rm -f c.qcow2 q.qcow2 c.qcow2.*.raw
		qemu-img create -q -f qcow2 -o "cluster_size=64k,extended_l2=$xl" c.qcow2 16M
		qemu-io -c "write -P 0x44 0 12M" -c "write -c -P 0x55 12M 2M" c.qcow2 >/dev/null
		snap_take c.qcow2 s1
		t=writeback
		((cache_none)) && [ "$eng" = io_uring ] && t=none
		# 4 KiB writes every 12 KiB (the cluster's rest copied from the
		# snapshot's cluster), then 64 KiB writes at odd offsets
		snaps=(s1)
		for pass in "-s 4096 -S 12288 -c 1365 --pattern 0x66" \
			"-s 65536 -S 196608 -o 1536 -c 85 --pattern 0x77"; do
			cp c.qcow2 q.qcow2
			# shellcheck disable=SC2086
			qemu-img bench -q -w -d 16 $pass -t writeback -f qcow2 q.qcow2 >/dev/null ||
				fail "qemu-img bench $pass"
			# shellcheck disable=SC2086
			"$COWVM" image bench -w -d 16 $pass -t "$t" -i "$eng" c.qcow2 >bench.out ||
				{ cat bench.out; fail "cowvm image bench -i $eng $pass"; }
			qcheck c.qcow2
			qcompare q.qcow2 c.qcow2
			snap_verify c.qcow2 "bench -i $eng -t $t, extended_l2=$xl" "${snaps[@]}"
			((${#snaps[@]} == 1)) && snap_take c.qcow2 s2 && snaps+=(s2)
		done
		qemu-img snapshot -d s2 c.qcow2 || fail "qemu-img snapshot -d s2"
		qcheck c.qcow2
		qemu-img snapshot -a s1 c.qcow2 && qcompare c.qcow2.s1.raw c.qcow2 || fail "apply s1"
		qcheck c.qcow2
		echo "ok: storage/ -i $eng -t $t writes under a snapshot (extended_l2=$xl)"
	done
done

# --- growing an image with snapshots (commit into a smaller base needs the
# base to grow): a version 3 base grows as with qemu-img commit, its
# snapshot intact; a version 2 one is refused (as QEMU refuses it), naming
# the reason, before anything changes
for compat in 1.1 0.10; do
	rm -f r.qcow2 rt.qcow2 qr.qcow2 qrt.qcow2
	qemu-img create -q -f qcow2 -o compat=$compat r.qcow2 1M
	qemu-io -c "write -P 0x12 0 1M" r.qcow2 >/dev/null
	snap_take r.qcow2 s1
	qemu-img create -q -f qcow2 -b r.qcow2 -F qcow2 rt.qcow2 2M
	qemu-io -c "write -P 0x13 1M 64k" rt.qcow2 >/dev/null
	cp r.qcow2 qr.qcow2
	cp rt.qcow2 qrt.qcow2
	qemu-img rebase -q -u -b qr.qcow2 -F qcow2 qrt.qcow2
	sum=$(md5sum <r.qcow2)
	if [ $compat = 0.10 ]; then
		"$COWVM" image commit rt.qcow2 >/dev/null 2>err.txt && fail "commit growing a v2 base with snapshots succeeded"
		grep -q "internal snapshots" err.txt || fail "commit error: $(cat err.txt)"
		[ "$(md5sum <r.qcow2)" = "$sum" ] || fail "a refused commit changed the base"
		echo "ok: growing a version 2 image with snapshots refused: $(cat err.txt)"
		continue
	fi
	"$COWVM" image commit rt.qcow2 >/dev/null || fail "commit growing a v3 base with snapshots"
	qemu-img commit -q qrt.qcow2 || fail "qemu-img commit"
	qcheck r.qcow2
	qcompare qr.qcow2 r.qcow2
	qemu-img convert -l snapshot.name=s1 -O raw r.qcow2 now.raw || fail "read snapshot s1"
	qemu-img compare -q -f raw -F raw r.qcow2.s1.raw now.raw || fail "commit changed snapshot s1"
	qemu-img snapshot -a s1 r.qcow2 || fail "apply s1 after the grow"
	jq_true '."virtual-size" == 1048576' qemu-img info --output=json r.qcow2 || fail "s1 did not bring its size back"
	qcompare r.qcow2.s1.raw r.qcow2
	echo "ok: commit grew a version 3 base with a snapshot, as qemu-img commit"
done

# --- an L1 entry without COPIED whose L2 table only the active L1 uses
# (refcount 1: a stale flag, which qemu-img check reports and QEMU writes
# through): the table is copied as a shared one and the old one freed; the
# next allocation that reuses its cluster must not take it for a live L2
# table (the image was marked corrupt: "allocated cluster overlaps an L2
# table"), and the writes land as QEMU's do
qemu-img create -q -f qcow2 sc.qcow2 4M
qemu-io -c "write -P 0x21 0 2M" sc.qcow2 >/dev/null
l1=$(($(get_be sc.qcow2 40 8)))
put_be sc.qcow2 "$l1" 8 $(($(get_be sc.qcow2 "$l1" 8) & ~(1 << 63)))
cp sc.qcow2 scq.qcow2
"$COWVM" image bench -w -c 4 -d 1 -s 65536 -S 1048576 -o 2097152 --flush-interval 1 \
	--pattern 0x22 sc.qcow2 >bench.out 2>&1 || { cat bench.out; fail "writes under a stale L1 flag"; }
qemu-img bench -q -w -c 4 -d 1 -s 65536 -S 1048576 -o 2097152 --pattern 0x22 -f qcow2 scq.qcow2 >/dev/null
qcheck sc.qcow2
qcompare scq.qcow2 sc.qcow2
echo "ok: an L2 table copied under a stale L1 flag is freed and its cluster reused"

# --- a damaged snapshot table (an entry's extra data size past QEMU's
# limit: QEMU refuses to open the image): opening it for writing is refused,
# naming the table, before anything is written; with lazy refcounts left
# dirty too (the repair cannot count what the snapshots reference: writing
# then reused clusters in use)
for lazy in off on; do
	rm -f dmg.qcow2
	qemu-img create -q -f qcow2 -o "cluster_size=4k,lazy_refcounts=$lazy" dmg.qcow2 4M
	qemu-io -c "write -P 0x31 0 2M" dmg.qcow2 >/dev/null
	qemu-img snapshot -c s1 dmg.qcow2
	qemu-io -c "write -P 0x32 0 64k" dmg.qcow2 >/dev/null
	qemu-img snapshot -c s2 dmg.qcow2
	st=$(($(get_be dmg.qcow2 64 8)))
	put_be dmg.qcow2 $((st + 36)) 4 70000
	if [ "$lazy" = on ]; then
		# dirty (incompatible bit 0), the data clusters' refcounts lost
		put_be dmg.qcow2 72 8 $(($(get_be dmg.qcow2 72 8) | 1))
		rt=$(($(get_be dmg.qcow2 48 8)))
		rb=$(($(get_be dmg.qcow2 "$rt" 8)))
		dd if=/dev/zero of=dmg.qcow2 bs=2 seek=$((rb / 2 + 16)) count=400 conv=notrunc status=none
	fi
	sum=$(md5sum <dmg.qcow2)
	"$COWVM" image bench -w -c 64 -s 4096 -S 65536 --pattern 0x33 dmg.qcow2 >err.txt 2>&1 &&
		fail "writing an image with a damaged snapshot table (lazy_refcounts=$lazy) succeeded"
	grep -q "snapshot table" err.txt || fail "damaged snapshot table: $(cat err.txt)"
	[ "$(md5sum <dmg.qcow2)" = "$sum" ] || fail "a refused open changed the image (lazy_refcounts=$lazy)"
done
echo "ok: writing an image whose snapshot table is damaged refused: $(tail -1 err.txt)"
