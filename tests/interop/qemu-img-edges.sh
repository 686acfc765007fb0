#!/bin/bash
# Edge cases where cowvm and qemu-img must agree (each one a defect found by
# a review against qemu-img 7.2):
# - version 2 images with a backing file: made by `cowvm image create
#   --compat 0.10 -b`, rebased by cowvm, and a v2 header with no extensions
#   and the backing name right after it: cowvm reopens them, qemu-img checks
#   them clean;
# - a raw file whose size is not a multiple of 512 is a disk of whole sectors
#   (info --json agrees on virtual-size), converts with -c, and a commit
#   into it grows it;
# - commit grows a qcow2 backing file smaller than the overlay (L1 table
#   relocated with 512-byte clusters), and the new area reads zeros even
#   where the backing's own backing file is longer; the emptied top gives
#   its space back (discarded clusters are punched);
# - rebase writes zeros the old chain showed as zero clusters (v3), as
#   qemu-img rebase does, and as data in v2 (which has none);
# - map --json agrees with qemu-img map on every field qemu-img prints,
#   depth of unallocated ranges and offsets of zero clusters included, and
#   data in holes of the host file (preallocation, sparse raw files) as zero;
# - bench --pattern takes 0x hex as qemu-img bench does and refuses > 255;
# - info --json of a v2 image prints the keys qemu-img prints; create takes
#   "1.5G" and refuses extra arguments; info refuses --output=xml; a usage
#   error names the subcommand and prints only its usage;
# - convert draws its progress bar on a terminal or with -p, not on a pipe.
# timeout: 120
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v jq >/dev/null || skip "jq not installed"
command -v python3 >/dev/null || skip "python3 not installed"
cow_tmpdir

# --- v2 with a backing file
"$COWVM" image create b.qcow2 5M || fail create
qemu-io -c "write -P 0x44 0 1M" b.qcow2 >/dev/null
"$COWVM" image create v2.qcow2 -b b.qcow2 --compat 0.10 || fail "create --compat 0.10 -b"
"$COWVM" image info v2.qcow2 >/dev/null || fail "cowvm cannot reopen the v2 overlay it made"
qcheck v2.qcow2
qemu-io -c "read -P 0x44 0 1M" v2.qcow2 >/dev/null || fail "v2 overlay does not read its backing"
qemu-img create -q -f qcow2 -o compat=0.10 q2.qcow2 1M
qemu-img create -q -f qcow2 n.qcow2 1M
"$COWVM" image rebase q2.qcow2 -b n.qcow2 || fail "rebase of a v2 image"
jq_true '."backing-filename" == "n.qcow2"' "$COWVM" image info --json q2.qcow2 ||
	fail "cowvm cannot reopen the v2 image it rebased"
qcheck q2.qcow2
# a v2 header without extensions, the backing name at offset 72 (QEMU reads
# extensions only up to the name)
qemu-img create -q -f qcow2 -o compat=0.10 raw72.qcow2 1M
python3 - <<'EOF' || fail "python"
import struct
f = open("raw72.qcow2", "r+b")
name = b"b.qcow2"
f.seek(72); f.write(name)
f.seek(8); f.write(struct.pack(">QI", 72, len(name)))
EOF
qemu-img info raw72.qcow2 >/dev/null || fail "qemu-img rejects the hand-made v2 header"
jq_true '."backing-filename" == "b.qcow2"' "$COWVM" image info --json raw72.qcow2 ||
	fail "cowvm rejects a v2 header with the backing name right after it"
echo "ok: v2 images with a backing file"

# --- a raw file of 1000001 bytes
head -c 1000001 /dev/urandom > odd.raw
q=$(qemu-img info --output=json odd.raw | jq '."virtual-size"')
c=$("$COWVM" image info --json odd.raw | jq '."virtual-size"')
[ "$q" = "$c" ] || fail "raw virtual size: qemu-img $q, cowvm $c"
for z in zlib zstd; do
	rm -f c.qcow2
	"$COWVM" image convert -c --compression $z odd.raw c.qcow2 || fail "convert -c ($z) of an odd-sized raw file"
	qcheck c.qcow2
	qcompare odd.raw c.qcow2
done
cp odd.raw r.raw
"$COWVM" image create o.qcow2 -b r.raw -F raw || fail create
qemu-io -c "write -P 0x33 999424 1024" o.qcow2 >/dev/null
qemu-img convert -O raw o.qcow2 o-view.raw
"$COWVM" image commit o.qcow2 >/dev/null || fail "commit into an odd-sized raw file"
qemu-img compare -q -f raw -F raw o-view.raw r.raw || fail "raw base after commit"
echo "ok: odd-sized raw file"

# --- commit grows a smaller qcow2 backing file; the new area reads zeros
qemu-img create -q -f qcow2 bb.qcow2 16M
qemu-io -c "write -P 0x77 0 16M" bb.qcow2 >/dev/null
for cs in 512 64K; do
	rm -f mid.qcow2 top.qcow2
	qemu-img create -q -f qcow2 -o cluster_size=$cs -b bb.qcow2 -F qcow2 mid.qcow2 64K
	qemu-io -c "write -P 0x11 0 32K" mid.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 8M
	qemu-io -c "write -P 0x22 6M 1M" top.qcow2 >/dev/null
	qemu-img convert -O raw top.qcow2 view.raw
	sum=$(md5sum bb.qcow2)
	"$COWVM" image commit top.qcow2 >/dev/null || fail "commit into a smaller backing file ($cs)"
	[ "$(md5sum bb.qcow2)" = "$sum" ] || fail "commit wrote below its target"
	qcheck mid.qcow2
	[ "$(qemu-img info --output=json mid.qcow2 | jq '."virtual-size"')" = 8388608 ] ||
		fail "backing file not grown to the overlay's size"
	qemu-img compare -q -f raw -F qcow2 view.raw mid.qcow2 || fail "content after commit ($cs)"
	# the emptied top gives the 1 MiB it held back to the file system
	[ "$(du -k top.qcow2 | cut -f1)" -lt 768 ] || fail "emptied top still uses $(du -k top.qcow2)"
done
echo "ok: commit grows the backing file"

# --- rebase: zeros become zero clusters
qemu-img create -q -f qcow2 new.qcow2 8M
qemu-io -c "write -P 0x11 0 8M" new.qcow2 >/dev/null
for compat in 1.1 0.10; do
	rm -f f.qcow2 f.raw
	qemu-img create -q -f qcow2 -o compat=$compat f.qcow2 10M
	qemu-io -c "write -P 1 1M 1M" f.qcow2 >/dev/null
	qemu-img convert -O raw f.qcow2 f.raw
	"$COWVM" image rebase f.qcow2 -b new.qcow2 || fail "rebase ($compat)"
	qcheck f.qcow2
	qcompare f.raw f.qcow2
	if [ $compat = 1.1 ]; then
		n=$(qemu-img map --output=json f.qcow2 | jq '[.[] | select(.depth == 0 and .data)] | map(.length) | add')
		[ "$n" = 1048576 ] || fail "rebase wrote zeros as data ($n bytes of data)"
	fi
done
echo "ok: rebase writes zero clusters"

# --- map --json agrees with qemu-img map (depth, offsets of zero clusters)
strip() { jq -c 'map(del(.compressed))'; }
qemu-img create -q -f qcow2 m0.qcow2 1M
[ "$("$COWVM" image map --json m0.qcow2 | strip)" = "$(qemu-img map --output=json m0.qcow2 | strip)" ] ||
	fail "map of an empty image differs from qemu-img map"
qemu-img create -q -f qcow2 m1.qcow2 4M
qemu-io -c "write -P 1 0 64k" m1.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b m1.qcow2 -F qcow2 m2.qcow2 2M
qemu-img create -q -f qcow2 -b m2.qcow2 -F qcow2 m3.qcow2 8M
qemu-io -c "write -P 2 1M 64k" -c "write -z 3M 64k" -c "write -P 3 5M 64k" -c "write -z 5M 64k" \
	m3.qcow2 >/dev/null
qm=$(qemu-img map --output=json m3.qcow2 | strip)
cm=$("$COWVM" image map --json m3.qcow2 | strip)
[ "$qm" = "$cm" ] || { echo "qemu-img: $qm"; echo "cowvm:    $cm"; fail "map differs from qemu-img map"; }
# unallocated subclusters of clusters that have a host cluster carry its offset
qemu-img create -q -f qcow2 -o extended_l2=on,preallocation=metadata m4.qcow2 1M
qemu-io -c "write -P 1 0 4k" m4.qcow2 >/dev/null
qm=$(qemu-img map --output=json m4.qcow2 | strip)
cm=$("$COWVM" image map --json m4.qcow2 | strip)
[ "$qm" = "$cm" ] || { echo "qemu-img: $qm"; echo "cowvm:    $cm"; fail "map of preallocated subclusters"; }
# data whose host range is a hole reads as zeros: preallocated metadata,
# fallocated clusters, a sparse raw file and an overlay over it
qemu-img create -q -f qcow2 -o preallocation=metadata m5.qcow2 1M
qemu-img create -q -f qcow2 -o preallocation=falloc m6.qcow2 1M
truncate -s 4M m7.raw
dd if=/dev/urandom of=m7.raw bs=64k count=2 seek=10 conv=notrunc status=none
qemu-img create -q -f qcow2 -b m7.raw -F raw m8.qcow2
qemu-io -c "write -P 1 1M 64k" m8.qcow2 >/dev/null
for f in m5.qcow2 m6.qcow2 m7.raw m8.qcow2; do
	qm=$(qemu-img map --output=json "$f" | strip)
	cm=$("$COWVM" image map --json "$f" | strip)
	[ -n "$qm" ] && [ "$qm" = "$cm" ] || { echo "qemu-img: $qm"; echo "cowvm:    $cm"; fail "map of $f"; }
done
echo "ok: map"

# --- bench --pattern
qemu-img create -q -f qcow2 p.qcow2 4M
"$COWVM" image bench -w -c 10 --pattern 0xab p.qcow2 >/dev/null || fail "bench --pattern 0xab"
qemu-io -c "read -P 0xab 0 4096" p.qcow2 >/dev/null || fail "bench wrote the wrong byte for 0xab"
"$COWVM" image bench -w -c 1 --pattern 256 p.qcow2 >/dev/null 2>err.txt && fail "pattern 256 accepted"
grep -q "pattern" err.txt || fail "no message naming the pattern"
"$COWVM" image bench -c x p.qcow2 >/dev/null 2>&1 && fail "-c x accepted"
echo "ok: bench --pattern"

# --- info --json of a version 2 image has the keys qemu-img prints, no more
qemu-img create -q -f qcow2 -o compat=0.10 k2.qcow2 1M
q=$(qemu-img info --output=json k2.qcow2 | jq -S -c '."format-specific"')
c=$("$COWVM" image info --json k2.qcow2 | jq -S -c '."format-specific"')
[ "$q" = "$c" ] || fail "v2 format-specific: qemu-img $q, cowvm $c"
echo "ok: info of a v2 image"

# --- sizes with a decimal fraction, as qemu-img takes them; extra arguments
"$COWVM" image create f15.qcow2 1.5G || fail "create 1.5G"
[ "$(qemu-img info --output=json f15.qcow2 | jq '."virtual-size"')" = 1610612736 ] || fail "1.5G"
for s in 1.3G 1.G 010.5K 0.5K 0x10K 1.0000001K 3M; do
	rm -f qs.qcow2 cs.qcow2
	qemu-img create -q -f qcow2 qs.qcow2 "$s" 2>/dev/null || fail "qemu-img create $s"
	"$COWVM" image create cs.qcow2 "$s" || fail "create $s"
	q=$(qemu-img info --output=json qs.qcow2 | jq '."virtual-size"')
	c=$(qemu-img info --output=json cs.qcow2 | jq '."virtual-size"')
	[ -n "$q" ] && [ "$q" = "$c" ] || fail "size '$s': qemu-img $q, cowvm $c"
done
for s in 1.5e3G " -1" 1.5 .5G 0x 1x 16E; do
	"$COWVM" image create bad.qcow2 "$s" >/dev/null 2>&1 && fail "size '$s' accepted"
done
"$COWVM" image create f15.qcow2 1.5 2>/dev/null && fail "a fraction of a byte accepted"
"$COWVM" image create x.qcow2 1M extra 2>/dev/null && fail "create took an extra argument"
[ ! -e x.qcow2 ] || fail "create with an extra argument made a file"
"$COWVM" image info --output=xml f15.qcow2 >/dev/null 2>&1 && fail "info --output=xml accepted"
# a usage error names the subcommand and shows its usage only
"$COWVM" image info >out.txt 2>err.txt
rc=$?
[ $rc = 2 ] || fail "image info without FILE: exit $rc, expected 2"
grep -q "^cowvm image info: missing FILE" err.txt || fail "usage error: $(cat err.txt)"
grep -q "^usage: cowvm image info FILE" err.txt || fail "no usage line for info: $(cat err.txt)"
grep -q "image create" err.txt && fail "usage error for info shows create's usage: $(cat err.txt)"
"$COWVM" image bench -c x f15.qcow2 2>err.txt
grep -q "^cowvm image bench: -c x: expected a request count" err.txt &&
	grep -q "^  bench -t none" err.txt && ! grep -q "image map" err.txt ||
	fail "bench usage error: $(cat err.txt)"
echo "ok: create sizes and arguments; usage errors"

# --- convert's progress bar: on a terminal (script(1) gives it one) or with
# -p; nothing on a pipe
"$COWVM" image convert -O raw m3.qcow2 p1.raw 2>err.txt || fail "convert"
[ ! -s err.txt ] || fail "convert wrote to a pipe: $(cat err.txt)"
"$COWVM" image convert -p -O raw m3.qcow2 p2.raw 2>err.txt || fail "convert -p"
grep -q "(100.0/100%) \[#*\]" err.txt || fail "convert -p drew no progress bar: $(cat err.txt)"
if command -v script >/dev/null; then
	script -qec "$COWVM image convert -O raw m3.qcow2 p3.raw" /dev/null >tty.txt 2>&1 ||
		fail "convert on a terminal"
	grep -q "100.0/100%" tty.txt || fail "no progress bar on a terminal: $(cat tty.txt)"
	cmp -s p1.raw p3.raw || fail "convert on a terminal wrote other data"
fi
echo "ok: convert progress bar"
