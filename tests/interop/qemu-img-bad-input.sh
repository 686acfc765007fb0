#!/bin/bash
# Bad input gives a clear error naming the file and the problem, never a
# crash, and never a write to an image opened read-only or to a backing
# layer: truncated files, tables beyond EOF, misaligned and overlapping
# tables, unknown incompatible features, unsupported features, loops in the
# backing chain, a missing backing file, L2/data offsets beyond EOF, refcount
# overflow, reserved bits in L1/L2 entries, FIFOs, bad create options; and the
# corrupt bit set on a writable image when metadata is bad, including an
# allocation that would land on an L2 table, the snapshot table, a
# snapshot's L1 table or the bitmap directory (a damaged refcount of 0).
# timeout: 120
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
cow_tmpdir

# expect_err PATTERN CMD... : CMD must exit 1 (not a signal) with PATTERN on stderr
expect_err() {
	local pat=$1 rc
	shift
	"$@" >out.txt 2>err.txt
	rc=$?
	[ "$rc" -ge 128 ] && fail "'$*' crashed (exit $rc): $(cat err.txt)"
	[ "$rc" -ne 0 ] || fail "'$*' succeeded on bad input"
	grep -Eq "$pat" err.txt || fail "'$*': message '$(cat err.txt)' does not match '$pat'"
	echo "ok: $(head -n 1 err.txt)"
}
# ro_cmds IMG PATTERN: every read-only command fails clearly and leaves IMG untouched
ro_cmds() {
	local img=$1 pat=$2 sum
	sum=$(md5sum "$img")
	expect_err "$pat" "$COWVM" image info "$img"
	expect_err "$pat" "$COWVM" image map "$img"
	expect_err "$pat" "$COWVM" image convert "$img" out.qcow2
	[ "$(md5sum "$img")" = "$sum" ] || fail "read-only commands modified $img"
}

fresh() {   # a 1 MiB image with data: header, rt @64K, refblock @128K, L1 @192K, L2 @256K, data
	rm -f "$1"
	qemu-img create -q -f qcow2 "$1" 1M
	qemu-io -c "write -P 0x5a 0 128k" "$1" >/dev/null
}

fresh ok.qcow2
head -c 50 ok.qcow2 > short.qcow2
ro_cmds short.qcow2 "'short.qcow2'.*header too short"
head -c 190000 ok.qcow2 > trunc.qcow2
ro_cmds trunc.qcow2 "'trunc.qcow2'.*L1 table.*beyond the end of the file"

fresh l1eof.qcow2; put_be l1eof.qcow2 40 8 $((0x10000000))
ro_cmds l1eof.qcow2 "'l1eof.qcow2'.*L1 table.*beyond the end"
fresh l1mis.qcow2; put_be l1mis.qcow2 40 8 $((0x30200))
ro_cmds l1mis.qcow2 "'l1mis.qcow2'.*L1 table.*not cluster-aligned"
fresh rtmis.qcow2; put_be rtmis.qcow2 48 8 $((0x10008))
ro_cmds rtmis.qcow2 "'rtmis.qcow2'.*refcount table.*not cluster-aligned"
fresh overlap.qcow2; put_be overlap.qcow2 40 8 $((0x10000))
ro_cmds overlap.qcow2 "'overlap.qcow2'.*overlap"
fresh rteof.qcow2; put_be rteof.qcow2 56 4 100
ro_cmds rteof.qcow2 "'rteof.qcow2'.*refcount table.*beyond the end"
fresh cbits.qcow2; put_be cbits.qcow2 20 4 30
ro_cmds cbits.qcow2 "'cbits.qcow2'.*unsupported cluster size"
fresh ver.qcow2; put_be ver.qcow2 4 4 4
ro_cmds ver.qcow2 "'ver.qcow2'.*unsupported qcow2 version 4"
fresh feat.qcow2; put_be feat.qcow2 72 8 $((0x100))
ro_cmds feat.qcow2 "'feat.qcow2'.*unsupported incompatible feature.*bit 8"
# extended L2 entries: too small a cluster size; a subcluster bitmap that
# says both "allocated" and "zero"; allocated subclusters without a cluster
rm -f extl2.qcow2; qemu-img create -q -f qcow2 -o cluster_size=4k extl2.qcow2 1M
put_be extl2.qcow2 72 8 $((0x10))
ro_cmds extl2.qcow2 "'extl2.qcow2'.*extended L2 entries need a cluster size of at least 16384"
for bad in "$((0x0000000300000003)):allocated and zero" "$((0x3)):without a host cluster"; do
	rm -f xbmp.qcow2
	qemu-img create -q -f qcow2 -o extended_l2=on xbmp.qcow2 1M
	qemu-io -c "write -P 0x5a 0 4k" xbmp.qcow2 >/dev/null
	l1=$(od -An -tx1 -j 40 -N 8 xbmp.qcow2 | tr -d ' \n')
	l2=$(od -An -tx1 -j $((0x$l1)) -N 8 xbmp.qcow2 | tr -d ' \n')
	l2=$((0x$l2 & 0x00fffffffffffe00))
	put_be xbmp.qcow2 $((l2 + 8)) 8 "${bad%%:*}"
	[ "${bad#*:}" = "without a host cluster" ] && put_be xbmp.qcow2 "$l2" 8 0
	sum=$(md5sum xbmp.qcow2)
	expect_err "'xbmp.qcow2'.*guest cluster 0: .*${bad#*:}" "$COWVM" image map xbmp.qcow2
	expect_err "'xbmp.qcow2'.*guest cluster 0: .*${bad#*:}" "$COWVM" image convert xbmp.qcow2 out.qcow2
	[ "$(md5sum xbmp.qcow2)" = "$sum" ] || fail "read-only commands modified xbmp.qcow2"
	"$COWVM" image check xbmp.qcow2 >out.txt 2>&1 && fail "check passed a bad subcluster bitmap"
	grep -q "${bad#*:}" out.txt || fail "check: $(cat out.txt)"
done
qemu-img create -q -f qcow2 -o data_file=ext.raw extdata.qcow2 1M
ro_cmds extdata.qcow2 "'extdata.qcow2'.*external data files are not supported"
fresh hlen.qcow2; put_be hlen.qcow2 100 4 9999999
ro_cmds hlen.qcow2 "'hlen.qcow2'.*invalid header length"
fresh bfo.qcow2; put_be bfo.qcow2 8 8 $((0x100000)); put_be bfo.qcow2 16 4 10
ro_cmds bfo.qcow2 "'bfo.qcow2'.*invalid backing file name"
printf 'QFI\xfb' > magic.qcow2
expect_err "'magic.qcow2'.*header too short" "$COWVM" image info -f qcow2 magic.qcow2
expect_err "'nonexist.qcow2'.*No such file" "$COWVM" image info nonexist.qcow2

# L2 table / data cluster beyond EOF: reading fails clearly
fresh l2eof.qcow2; put_be l2eof.qcow2 $((0x30000)) 8 $((0x8000000010000000))
sum=$(md5sum l2eof.qcow2)
expect_err "'l2eof.qcow2'.*L2 table offset 0x10000000 is beyond the end of the file" "$COWVM" image convert l2eof.qcow2 out.qcow2
expect_err "'l2eof.qcow2'.*L2 table offset" "$COWIO" cmp l2eof.qcow2 ok.qcow2
[ "$(md5sum l2eof.qcow2)" = "$sum" ] || fail "read of a corrupt image modified it"
# ... and a write to it marks the image corrupt; later writable opens are refused
truncate -s 1M ref.raw
expect_err "'l2eof.qcow2'.*beyond the end of the file.*marked corrupt" "$COWIO" random l2eof.qcow2 ref.raw 1 5
jq_true '."format-specific".data.corrupt == true' "$COWVM" image info --json l2eof.qcow2 ||
	fail "corrupt bit not set"
expect_err "'l2eof.qcow2'.*marked corrupt" "$COWIO" random l2eof.qcow2 ref.raw 1 5
fresh dataeof.qcow2; put_be dataeof.qcow2 $((0x40000)) 8 $((0x8000000020000000))
expect_err "'dataeof.qcow2'.*data cluster offset 0x20000000.*beyond the end of the file" "$COWVM" image convert dataeof.qcow2 out.qcow2
"$COWVM" image check dataeof.qcow2 >out.txt; [ $? -eq 2 ] || fail "check should report corruption"
grep -q "beyond the end of the file" out.txt || fail "check message: $(cat out.txt)"
echo "ok: check reports $(grep -m1 ERROR out.txt)"

# a file cut short (a truncated copy): its refcounts and an L2 entry still
# hold the cluster past the new end; a write elsewhere (here a commit into
# it) must not take that cluster too (cow.h I13), so the two guest ranges
# never share one cluster
qemu-img create -q -f qcow2 cut.qcow2 1M
qemu-io -c "write -P 7 0 192k" cut.qcow2 >/dev/null
end=$(qemu-img check --output=json cut.qcow2 | jq '."image-end-offset"')
truncate -s $((end - 65536)) cut.qcow2
qemu-img create -q -f qcow2 -b cut.qcow2 -F qcow2 cuttop.qcow2
qemu-io -c "write -P 9 512k 64k" cuttop.qcow2 >/dev/null
"$COWVM" image commit cuttop.qcow2 >/dev/null || fail "commit into the cut file"
qemu-img check cut.qcow2 >out.txt 2>&1 || fail "writes into a cut file gave a cluster two owners: $(cat out.txt)"
qemu-io -c "read -P 9 512k 64k" -c "read -P 7 0 128k" -c "read -P 0 128k 64k" cut.qcow2 >out.txt ||
	fail "cut file content: $(cat out.txt)"
echo "ok: a write into a cut file does not reuse the clusters its refcounts hold"

# a damaged refcount of 0 on the L2 table: a write must not allocate the
# table's cluster for data (it overlaps a cached table, as QEMU's overlap
# check refuses); the image is marked corrupt and nothing else changes;
# check --repair all then makes it whole, data intact
qemu-img create -q -f qcow2 l2rc.qcow2 1M
qemu-io -c "write -P 7 0 64k" l2rc.qcow2 >/dev/null
l1off=$(get_be l2rc.qcow2 40 8)
rtoff=$(get_be l2rc.qcow2 48 8)
l2off=$(($(get_be l2rc.qcow2 $((l1off)) 8) & 0x00fffffffffffe00))
rboff=$(get_be l2rc.qcow2 $((rtoff)) 8)
put_be l2rc.qcow2 $((rboff + 2 * (l2off >> 16))) 2 0
truncate -s 1M ref.raw
expect_err "'l2rc.qcow2'.*allocated cluster $(printf '0x%x' $l2off) overlaps an L2 table.*marked corrupt" \
	"$COWIO" random l2rc.qcow2 ref.raw 3 4
qemu-img check l2rc.qcow2 >out.txt 2>&1
grep -q "reference=2" out.txt && fail "the L2 table's cluster got a second owner: $(cat out.txt)"
"$COWVM" image check --repair all l2rc.qcow2 >/dev/null
qemu-img check -q l2rc.qcow2 || fail "check --repair all left errors"
qemu-io -c "read -P 7 0 64k" l2rc.qcow2 >out.txt || fail "data after the repair: $(cat out.txt)"

# a damaged refcount of 0 on the snapshot table or on a snapshot's L1
# table: an allocation must not land there (QEMU's default overlap check
# covers both: "Preventing invalid write on metadata (overlaps with
# snapshot table / inactive L1 table)"); the write fails naming the file
# and the table, the image is marked corrupt, and the snapshots read back
# intact; the same through storage/ (cowio stgwrite)
qemu-img create -q -f qcow2 sn.qcow2 1M
qemu-io -c "write -P 0x5a 0 128k" sn.qcow2 >/dev/null
qemu-img snapshot -c s1 sn.qcow2
qemu-io -c "write -P 0x6b 0 64k" sn.qcow2 >/dev/null
qemu-img snapshot -c s2 sn.qcow2
qemu-img convert -O raw -l snapshot.name=s1 sn.qcow2 s1.raw
qemu-img convert -O raw -l snapshot.name=s2 sn.qcow2 s2.raw
st=$(get_be sn.qcow2 64 8)
rb=$(get_be sn.qcow2 $(($(get_be sn.qcow2 48 8))) 8)
# (16-bit refcounts; the snapshot table and the first snapshot's L1 are
# past the first free cluster, which is made a leak so that the damaged
# cluster is the first one allocated)
free1=$(for c in $(seq 1 15); do
	[ "$(get_be sn.qcow2 $((rb + 2 * c)) 2)" = 0x0000 ] && { echo $c; break; }; done)
[ -n "$free1" ] || fail "no free cluster in the snapshot image"
snap_damage() {   # IMG CLUSTER: refcount 0 on CLUSTER, the free one leaked
	cp sn.qcow2 "$1"
	put_be "$1" $((rb + 2 * $2)) 2 0
	put_be "$1" $((rb + 2 * free1)) 2 1
}
snap_intact() {   # IMG WHAT
	qemu-img snapshot -l "$1" >out.txt 2>&1 || fail "$2: qemu-img snapshot -l: $(cat out.txt)"
	grep -q " s1 " out.txt && grep -q " s2 " out.txt || fail "$2: snapshots lost: $(cat out.txt)"
	for s in s1 s2; do
		qemu-img convert -O raw -l snapshot.name=$s "$1" chk.raw || fail "$2: snapshot $s unreadable"
		cmp -s chk.raw $s.raw || fail "$2: snapshot $s changed"
	done
}
l1s1=$(($(get_be sn.qcow2 $((st)) 8)))
for t in "$((st >> 16)):the snapshot table" "$((l1s1 >> 16)):a snapshot L1 table \\(snapshot 1 of 2"; do
	c=${t%%:*} what=${t#*:}
	snap_damage snd.qcow2 "$c"
	qemu-img convert -O raw snd.qcow2 ref.raw
	expect_err "'snd.qcow2'.*allocated cluster $(printf '0x%x' $((c << 16))) overlaps $what.*marked corrupt" \
		"$COWIO" random snd.qcow2 ref.raw 3 4
	jq_true '."format-specific".data.corrupt == true' qemu-img info --output=json snd.qcow2 ||
		fail "corrupt bit not set ($what)"
	snap_intact snd.qcow2 "cow/ write over $what"
	# qemu-io refuses the same write
	snap_damage snq.qcow2 "$c"
	qemu-io -c "write -P 1 512k 64k" snq.qcow2 >out.txt 2>&1 && fail "qemu-io wrote over $what"
	grep -q "Preventing invalid write on metadata" out.txt || fail "qemu-io: $(cat out.txt)"
	# storage/ (what virtio-blk uses)
	snap_damage sns.qcow2 "$c"
	rm -f sns.log
	"$COWIO" stgwrite sns.qcow2 1 sns.log 20 >out.txt 2>&1 && fail "storage/ wrote over $what"
	jq_true '."format-specific".data.corrupt == true' qemu-img info --output=json sns.qcow2 ||
		fail "storage/: corrupt bit not set ($what)"
	snap_intact sns.qcow2 "storage/ write over $what"
	# check --repair all makes the refcounts right again
	"$COWVM" image check --repair all snd.qcow2 >out.txt 2>&1 || fail "repair ($what): $(cat out.txt)"
	qcheck snd.qcow2
	snap_intact snd.qcow2 "repair after $what"
done
echo "ok: no allocation over the snapshot table or a snapshot L1 table"
# ... nor an in-place write through a damaged L2 entry (COPIED) that points
# at the snapshot table (QEMU checks every data write, not only
# allocations): guest cluster 8 of the active L1's table, unallocated, made
# to point there; writes through cow/ (image bench without -t) and
# storage/ (-t none) are refused naming the table, the image is marked
# corrupt, the snapshots stay intact; qemu-io refuses the same write
act_l2=$(($(get_be sn.qcow2 $(($(get_be sn.qcow2 40 8))) 8) & 0x00fffffffffffe00))
for path in "" "-t none"; do
	cp sn.qcow2 snw.qcow2
	put_be snw.qcow2 $((act_l2 + 8 * 8)) 8 $((st | (1 << 63)))
	expect_err "'snw.qcow2'.*data cluster at $(printf '0x%x' "$st") \\(guest cluster 8\\) overlaps the snapshot table; not written.*marked corrupt" \
		"$COWVM" image bench -w -c 1 -d 1 -s 4096 -o 524288 $path snw.qcow2
	jq_true '."format-specific".data.corrupt == true' qemu-img info --output=json snw.qcow2 ||
		fail "in-place write over the snapshot table${path:+ ($path)}: corrupt bit not set"
	# (the damaged entry is in the table the active L1 shares with s2, so
	# s2 itself reads the snapshot table there now: the table's bytes and
	# the snapshot list are what must be intact)
	cmp -s <(dd if=sn.qcow2 bs=64k skip=$((st >> 16)) count=1 status=none) \
		<(dd if=snw.qcow2 bs=64k skip=$((st >> 16)) count=1 status=none) ||
		fail "in-place write over the snapshot table${path:+ ($path)}: the table changed"
	qemu-img snapshot -l snw.qcow2 >out.txt 2>&1 && grep -q " s1 " out.txt && grep -q " s2 " out.txt ||
		fail "in-place write over the snapshot table${path:+ ($path)}: $(cat out.txt)"
done
cp sn.qcow2 snq.qcow2
put_be snq.qcow2 $((act_l2 + 8 * 8)) 8 $((st | (1 << 63)))
qemu-io -c "write -P 1 512k 4k" snq.qcow2 >out.txt 2>&1 && fail "qemu-io wrote over the snapshot table"
grep -q "Preventing invalid write on metadata" out.txt || fail "qemu-io: $(cat out.txt)"
echo "ok: no in-place write over the snapshot table through a damaged L2 entry"
# ... nor over the bitmap directory (QEMU's "overlaps with bitmap directory")
if qemu-img create -q -f qcow2 bmd.qcow2 1M && qemu-img bitmap --add bmd.qcow2 b0 2>/dev/null; then
	qemu-io -c "write -P 0x5a 0 128k" bmd.qcow2 >/dev/null
	# the bitmaps extension: count, reserved, directory size, directory offset
	dir=$(python3 -c 'import struct,sys; d=open(sys.argv[1],"rb").read(65536); i=d.find(bytes.fromhex("23852875")); print(struct.unpack(">Q", d[i+24:i+32])[0])' bmd.qcow2)
	rb=$(get_be bmd.qcow2 $(($(get_be bmd.qcow2 48 8))) 8)
	for c in $(seq 1 $(((dir >> 16) - 1))); do   # every free cluster before it leaked
		[ "$(get_be bmd.qcow2 $((rb + 2 * c)) 2)" = 0x0000 ] && put_be bmd.qcow2 $((rb + 2 * c)) 2 1
	done
	put_be bmd.qcow2 $((rb + 2 * (dir >> 16))) 2 0
	qemu-img convert -O raw bmd.qcow2 ref.raw
	expect_err "'bmd.qcow2'.*allocated cluster $(printf '0x%x' $dir) overlaps the bitmap directory.*marked corrupt" \
		"$COWIO" random bmd.qcow2 ref.raw 3 4
	qemu-img info --output=json bmd.qcow2 | jq -e '."format-specific".data.bitmaps[0].name == "b0"' >/dev/null ||
		fail "the bitmap directory was overwritten"
	echo "ok: no allocation over the bitmap directory"
fi

# L2 entries pointing at no data (one past the end of the file, one not
# cluster-aligned, one compressed past the end): reads of them fail with a
# clear error; check --repair all makes each a zero cluster (qemu-img check
# -r all leaves the first); the other data stays intact; v2, which has no
# zero clusters, gets them unallocated, so the backing file shows through
for compat in 1.1 0.10; do
	rm -f nod.qcow2 nodb.qcow2
	qemu-img create -q -f qcow2 nodb.qcow2 1M
	qemu-io -c "write -P 5 0 1M" nodb.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -o compat=$compat -b nodb.qcow2 -F qcow2 nod.qcow2
	qemu-io -c "write -P 7 0 256k" nod.qcow2 >/dev/null
	qemu-io -c "write -c -P 8 256k 64k" nod.qcow2 >/dev/null
	l1off=$(get_be nod.qcow2 40 8)
	l2off=$(($(get_be nod.qcow2 $((l1off)) 8) & 0x00fffffffffffe00))
	e0=$(get_be nod.qcow2 $((l2off)) 8)
	e1=$(get_be nod.qcow2 $((l2off + 8)) 8)
	e4=$(get_be nod.qcow2 $((l2off + 32)) 8)
	put_be nod.qcow2 $((l2off)) 8 $(((e0 & ~0x00fffffffffffe00) | (64 << 20)))
	put_be nod.qcow2 $((l2off + 8)) 8 $((e1 | 0x200))
	# compressed: host offset bits 0..(70 - cluster_bits - 1) = 0..53
	put_be nod.qcow2 $((l2off + 32)) 8 $(((e4 & ~((1 << 54) - 1)) | (64 << 20)))
	expect_err "'nod.qcow2'.*beyond the end of the file" "$COWVM" image convert -O raw nod.qcow2 nod.raw
	"$COWVM" image check nod.qcow2 >out.txt 2>&1 && fail "compat=$compat: check passed entries pointing at no data"
	"$COWVM" image check --repair all nod.qcow2 >out.txt 2>&1 || fail "compat=$compat: repair all: $(cat out.txt)"
	[ "$(grep -c "^Repairing L2 table" out.txt)" -eq 3 ] || fail "compat=$compat: want 3 entries repaired: $(cat out.txt)"
	qemu-img check -q nod.qcow2 || fail "compat=$compat: qemu-img check after repair all"
	want=0; [ $compat = 0.10 ] && want=5
	qemu-io -c "read -P $want 0 128k" -c "read -P 7 128k 128k" -c "read -P $want 256k 64k" \
		-c "read -P 5 320k 704k" nod.qcow2 >out.txt || fail "compat=$compat: content after repair: $(cat out.txt)"
	grep -q "Pattern verification failed" out.txt && fail "compat=$compat: content after repair: $(cat out.txt)"
done
echo "ok: check --repair all makes entries that point at no data read as zeros (v2: unallocated)"

# backing chain loop and missing backing file: the commands that need the
# chain fail clearly; info without --chain describes the image alone, as
# qemu-img info does
chain_cmds() {   # IMG PATTERN
	local img=$1 pat=$2 sum
	sum=$(md5sum "$img")
	expect_err "$pat" "$COWVM" image info --chain "$img"
	expect_err "$pat" "$COWVM" image map "$img"
	expect_err "$pat" "$COWVM" image convert "$img" out.qcow2
	"$COWVM" image info "$img" >/dev/null || fail "info of $img without its chain"
	[ "$(md5sum "$img")" = "$sum" ] || fail "read-only commands modified $img"
}
qemu-img create -q -f qcow2 loopa.qcow2 1M
qemu-img create -q -f qcow2 -b loopa.qcow2 -F qcow2 loopb.qcow2
qemu-img rebase -q -u -f qcow2 -b loopb.qcow2 -F qcow2 loopa.qcow2
chain_cmds loopb.qcow2 "backing chain loops"
qemu-img create -q -f qcow2 self.qcow2 1M
qemu-img rebase -q -u -f qcow2 -b self.qcow2 -F qcow2 self.qcow2
chain_cmds self.qcow2 "'self.qcow2'.*backing chain loops"
qemu-img create -q -f qcow2 gone.qcow2 1M
qemu-img create -q -f qcow2 -b gone.qcow2 -F qcow2 orphan.qcow2
rm gone.qcow2
chain_cmds orphan.qcow2 "'orphan.qcow2'.*unable to open backing file.*gone.qcow2.*No such file"

# refcount overflow: two L2 entries share one data cluster in a 1-bit image
qemu-img create -q -f qcow2 -o refcount_bits=1 ovf.qcow2 1M
qemu-io -c "write -P 1 0 64k" -c "write -P 2 64k 64k" ovf.qcow2 >/dev/null
e0=$(get_be ovf.qcow2 $((0x40000)) 8)
put_be ovf.qcow2 $((0x40008)) 8 $((e0 & 0x7fffffffffffffff))
put_be ovf.qcow2 $((0x40000)) 8 $((e0 & 0x7fffffffffffffff))
"$COWVM" image check ovf.qcow2 >out.txt; [ $? -eq 2 ] || fail "check should report the overflow"
grep -q "more than 1-bit refcounts can hold" out.txt || fail "overflow message: $(cat out.txt)"
echo "ok: $(grep -m1 'more than' out.txt)"

# reserved bits set in an L1 entry, an L2 entry of data and one of a zero
# cluster: corruption for both checkers; --repair all clears them and keeps
# the data
qemu-img create -q -f qcow2 rsv.qcow2 16M
qemu-io -c "write -P 6 0 128k" -c "write -z 128k 64k" rsv.qcow2 >/dev/null
cp rsv.qcow2 rsv-ref.qcow2
l1=$(get_be rsv.qcow2 40 8)
e=$(get_be rsv.qcow2 $((l1)) 8)
put_be rsv.qcow2 $((l1)) 8 $((e | 1))
l2=$((e & 0x00fffffffffffe00))
e2=$(get_be rsv.qcow2 $l2 8)
put_be rsv.qcow2 $l2 8 $((e2 | 2))
e3=$(get_be rsv.qcow2 $((l2 + 16)) 8)
put_be rsv.qcow2 $((l2 + 16)) 8 $((e3 | (1 << 56)))
qemu-img check -q rsv.qcow2 >/dev/null 2>&1; [ $? -eq 2 ] || fail "qemu-img should see the reserved bits"
"$COWVM" image check rsv.qcow2 >out.txt; [ $? -eq 2 ] || fail "cowvm check should report reserved bits"
[ "$(grep -c "reserved bits set" out.txt)" = 3 ] || fail "reserved-bit messages: $(cat out.txt)"
"$COWVM" image check --repair all rsv.qcow2 >out.txt || { cat out.txt; fail "repair of reserved bits"; }
qcheck rsv.qcow2
qcompare rsv-ref.qcow2 rsv.qcow2
echo "ok: reserved bits in L1/L2 entries"

# a FIFO is refused at once, not waited on
mkfifo fifo
qemu-img create -q -f qcow2 -u -b fifo -F raw onfifo.qcow2 1M
# (info without --chain does not open the backing file, as qemu-img info)
for args in "info fifo" "check fifo" "map fifo" "commit fifo" "create fifo 1M" "info --chain onfifo.qcow2" \
	"map onfifo.qcow2"; do
	# shellcheck disable=SC2086
	timeout 10 "$COWVM" image $args >out.txt 2>err.txt
	rc=$?
	[ $rc = 124 ] && fail "'image $args' waited on a FIFO"
	[ $rc = 1 ] || fail "'image $args' on a FIFO exited $rc"
	grep -q "'fifo'.*not a regular file or block device" err.txt || fail "FIFO message: $(cat err.txt)"
done
timeout 10 "$COWVM" image info onfifo.qcow2 >out.txt 2>err.txt || fail "info of an overlay of a FIFO: $(cat err.txt)"
echo "ok: FIFOs refused"

# convert onto its own source (through a symlink, or onto a backing file),
# even with -U (which takes no lock that would stop it)
qemu-img create -q -f qcow2 src.qcow2 1M
qemu-io -c "write -P 3 0 64k" src.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b src.qcow2 -F qcow2 srctop.qcow2
ln -s src.qcow2 srclink.qcow2
sum=$(md5sum <src.qcow2)
expect_err "'srclink.qcow2' is the source image" "$COWVM" image convert -U -O raw src.qcow2 srclink.qcow2
expect_err "'src.qcow2' is the source image or one of its backing files" \
	"$COWVM" image convert -U srctop.qcow2 src.qcow2
[ "$(md5sum <src.qcow2)" = "$sum" ] || fail "convert overwrote its source"
echo "ok: convert onto its source refused"

# create options that are not numbers, or out of range, are usage errors
for bits in -1 4294967295 foo 3 128; do
	timeout 10 "$COWVM" image create --refcount-bits $bits rb.qcow2 1M >out.txt 2>err.txt
	rc=$?
	[ $rc = 2 ] || fail "--refcount-bits $bits: exit $rc, $(cat err.txt)"
	[ ! -e rb.qcow2 ] || fail "--refcount-bits $bits created a file"
done
echo "ok: bad --refcount-bits refused"
# an image as its own backing file (as qemu-img create refuses it)
"$COWVM" image create own.qcow2 -b own.qcow2 >out.txt 2>err.txt; [ $? = 2 ] || fail "own backing file accepted"
grep -q "'own.qcow2' cannot be its own backing file" err.txt || fail "own backing message: $(head -1 err.txt)"
qemu-img create -q -f qcow2 own.qcow2 1M
sum=$(md5sum <own.qcow2)
"$COWVM" image create own.qcow2 -b ./own.qcow2 >out.txt 2>err.txt; [ $? = 2 ] || fail "own backing file accepted"
[ "$(md5sum <own.qcow2)" = "$sum" ] || fail "the refused create changed the image"
echo "ok: own backing file refused"

# backing layers are never written, even by commit of a read-only open elsewhere
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c "write -P 7 0 4M" base.qcow2 >/dev/null
"$COWVM" image create top.qcow2 -b base.qcow2
chmod a-w base.qcow2
sum=$(md5sum base.qcow2)
truncate -s 4M r.raw
"$COWIO" random top.qcow2 r.raw 5 50 || fail "writes to an overlay over a read-only base"
[ "$(md5sum base.qcow2)" = "$sum" ] || fail "backing file modified"
echo "ok: backing layer untouched"
