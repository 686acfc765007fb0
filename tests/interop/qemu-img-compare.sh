#!/bin/bash
# `cowvm image compare` and `qemu-img compare` agree: for each pair of
# images (made by qemu-img, qemu-io, cowvm and cowio), with and without -s
# and -q, the exit status and the output lines are the same. Pairs:
# identical; a one-byte difference in the middle of a cluster, in the last
# sector, in a backing layer only, in a compressed cluster; different sizes
# with a zero tail and a non-zero one; raw against qcow2; a depth-3 chain
# against its flattened convert; strict-mode status mismatches. Errors: a
# missing file, a bad format, an image that is not qcow2: exit 2 and a
# message naming the file. Last, the times of both on a 1 GiB pair (logged,
# not asserted).
# timeout: 300
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
cow_tmpdir

fails=0
n=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

# same [OPTS...] IMG1 IMG2: both tools give the same exit status and stdout
# (left in $q, $c and q.out, c.out)
same() {
	local qo co
	qemu-img compare "$@" >q.out 2>q.err
	q=$?
	"$COWVM" image compare "$@" >c.out 2>c.err
	c=$?
	qo=$(tr '\n' '|' <q.out)
	co=$(tr '\n' '|' <c.out)
	n=$((n + 1))
	if [ "$q" != "$c" ] || [ "$qo" != "$co" ]; then
		bad "compare $*: qemu-img $q '$qo' $(head -c 200 q.err), cowvm $c '$co' $(head -c 200 c.err)"
	elif [ -s c.err ]; then
		bad "compare $*: cowvm wrote to stderr: $(head -c 200 c.err)"
	else
		echo "ok: compare $*: $q '$qo'"
	fi
}
# want RC TEXT [OPTS...] IMG1 IMG2: same, and the status is RC with TEXT in
# the output (the pair is the case it is meant to be)
want() {
	local rc=$1 text=$2
	shift 2
	same "$@"
	[ "$c" = "$rc" ] || bad "compare $*: want exit $rc"
	[ -z "$text" ] || grep -qF -- "$text" c.out || bad "compare $*: want '$text', got '$(cat c.out)'"
}
poke() {   # IMG OFF BYTE: write one byte through qemu-io
	qemu-io -f "${4:-qcow2}" -c "write -P $3 $2 1" "$1" >/dev/null || bad "qemu-io write $1 $2"
}

# --- qcow2 made by qemu-img/qemu-io, and copies made by cowvm convert
qemu-img create -q -f qcow2 a.qcow2 64M
qemu-io -c 'write -P 0x11 0 3M' -c 'write -P 0x22 10M 1M' -c 'write -z 20M 1M' \
	-c 'write -P 0x33 64M-64k 64k' a.qcow2 >/dev/null
"$COWVM" image convert -O qcow2 a.qcow2 c.qcow2 || bad "cowvm convert a"
"$COWVM" image convert -O raw a.qcow2 c.raw || bad "cowvm convert a to raw"
cp a.qcow2 b.qcow2
want 0 "Images are identical." a.qcow2 b.qcow2
want 0 "Images are identical." a.qcow2 c.qcow2
want 0 "Images are identical." -s a.qcow2 b.qcow2
same -s a.qcow2 c.qcow2
want 0 "Images are identical." a.qcow2 c.raw
want 0 "Images are identical." c.raw a.qcow2
want 1 "Strict mode: Offset" -s a.qcow2 c.raw
want 0 "" -q a.qcow2 c.qcow2
[ -s c.out ] && bad "-q printed '$(cat c.out)'"
# one byte in the middle of a cluster (reported by its 512-byte sector)
cp a.qcow2 d.qcow2; poke d.qcow2 70001 0x5a
want 1 "Content mismatch at offset 69632!" a.qcow2 d.qcow2
want 1 "Content mismatch at offset 69632!" d.qcow2 c.raw
want 1 "Content mismatch at offset 69632!" -s a.qcow2 d.qcow2
want 1 "" -q a.qcow2 d.qcow2
[ -s c.out ] && bad "-q printed '$(cat c.out)'"
# in an unallocated area of one image only, and in the last sector
cp a.qcow2 e.qcow2; poke e.qcow2 $((40 * 1048576 + 777)) 0x01
want 1 "Content mismatch at offset $((40 * 1048576 + 512))!" a.qcow2 e.qcow2
want 1 "Content mismatch at offset $((40 * 1048576 + 512))!" e.qcow2 c.raw
same -s a.qcow2 e.qcow2
cp a.qcow2 f.qcow2; poke f.qcow2 $((64 * 1048576 - 1)) 0x44
want 1 "Content mismatch at offset $((64 * 1048576 - 512))!" a.qcow2 f.qcow2
same -s a.qcow2 f.qcow2
same -s c.qcow2 f.qcow2
# a zero cluster against data that is zero: equal unless strict
cp a.qcow2 g.qcow2; qemu-io -c 'write -P 0 20M 64k' g.qcow2 >/dev/null
want 0 "Images are identical." a.qcow2 g.qcow2
want 1 "Strict mode: Offset" -s a.qcow2 g.qcow2

# --- backing chains: a difference in the backing layer only
qemu-img create -q -f qcow2 base1.qcow2 32M
qemu-io -c 'write -P 0x61 0 32M' base1.qcow2 >/dev/null
cp base1.qcow2 base2.qcow2
poke base2.qcow2 $((5 * 1048576 + 100)) 0x62
qemu-img create -q -f qcow2 -b base1.qcow2 -F qcow2 top1.qcow2
"$COWVM" image create top2.qcow2 -b base2.qcow2 -F qcow2 || bad "cowvm create top2"
qemu-io -c 'write -P 0x71 1M 2M' top1.qcow2 >/dev/null
qemu-io -c 'write -P 0x71 1M 2M' top2.qcow2 >/dev/null
want 1 "Content mismatch at offset $((5 * 1048576))!" top1.qcow2 top2.qcow2
# the same byte covered by the overlay: identical
qemu-io -c 'write -P 0x72 5M 64k' top1.qcow2 >/dev/null
qemu-io -c 'write -P 0x72 5M 64k' top2.qcow2 >/dev/null
want 0 "Images are identical." top1.qcow2 top2.qcow2
same -s top1.qcow2 top2.qcow2

# --- a depth-3 chain (raw bottom) against its flattened convert
qemu-img create -q -f raw l0.raw 48M
qemu-io -f raw -c 'write -P 0x01 0 8M' -c 'write -P 0x02 30M 1M' l0.raw >/dev/null
qemu-img create -q -f qcow2 -b l0.raw -F raw l1.qcow2 56M
qemu-io -c 'write -P 0x03 4M 8M' -c 'write -z 31M 64k' -c 'write -P 0x09 50M 4k' l1.qcow2 >/dev/null
"$COWVM" image create l2.qcow2 -b l1.qcow2 -F qcow2 || bad "cowvm create l2"
qemu-io -c 'write -P 0x04 6M 100k' -c 'write -P 0x05 55M 4k' l2.qcow2 >/dev/null
"$COWVM" image create l3.qcow2 -b l2.qcow2 -F qcow2 || bad "cowvm create l3"
qemu-io -c 'write -P 0x06 7M 1k' -c 'write -z 0 64k' l3.qcow2 >/dev/null
"$COWVM" image convert -O qcow2 l3.qcow2 flat-c.qcow2 || bad "cowvm convert l3"
qemu-img convert -O qcow2 l3.qcow2 flat-q.qcow2
qemu-img convert -O raw l3.qcow2 flat.raw
for f in flat-c.qcow2 flat-q.qcow2 flat.raw; do
	want 0 "Images are identical." l3.qcow2 "$f"
	same -s l3.qcow2 "$f"
	same -s "$f" l3.qcow2
done
cp flat-c.qcow2 flat-x.qcow2; poke flat-x.qcow2 $((30 * 1048576 + 4097)) 0x00
want 1 "Content mismatch at offset $((30 * 1048576 + 4096))!" l3.qcow2 flat-x.qcow2
want 1 "Content mismatch at offset $((30 * 1048576 + 4096))!" -s flat-c.qcow2 flat-x.qcow2
same -s l3.qcow2 flat-x.qcow2
# past the end of the raw bottom (48M) of the 56M chain
cp flat-q.qcow2 flat-y.qcow2; poke flat-y.qcow2 $((49 * 1048576)) 0x10
want 1 "Content mismatch at offset $((49 * 1048576))!" l3.qcow2 flat-y.qcow2
same -s flat-y.qcow2 l3.qcow2

# --- compressed clusters, one byte apart
head -c 16M /dev/urandom >r1.raw
base64 -w0 r1.raw | head -c 8M >r1b.txt; dd if=r1b.txt of=r1.raw conv=notrunc status=none
cp r1.raw r2.raw; printf '#' | dd of=r2.raw bs=1 seek=$((2 * 1048576 + 333)) conv=notrunc status=none
qemu-img convert -c -O qcow2 r1.raw z1.qcow2
"$COWVM" image convert -c -O qcow2 r2.raw z2.qcow2 || bad "cowvm convert -c r2"
want 1 "Content mismatch at offset $((2 * 1048576 + 0))!" z1.qcow2 z2.qcow2
want 0 "Images are identical." z1.qcow2 r1.raw
want 0 "Images are identical." z2.qcow2 r2.raw
same -s z1.qcow2 r1.raw
same -s z1.qcow2 z2.qcow2
"$COWVM" image convert -c -O qcow2 r1.raw z3.qcow2 || bad "cowvm convert -c r1"
want 0 "Images are identical." -s z1.qcow2 z3.qcow2
# made by cow/ (random writes, write-zeroes, discards, compressed writes)
# and mirrored into a raw file
qemu-img create -q -f qcow2 w.qcow2 32M
truncate -s 32M w.raw
"$COWIO" random w.qcow2 w.raw 7 300 compress || bad "cowio random"
want 0 "Images are identical." w.qcow2 w.raw
same -s w.qcow2 w.raw
printf '\xff' | dd of=w.raw bs=1 seek=$((17 * 1048576 + 1000)) conv=notrunc status=none
same w.qcow2 w.raw

# --- different sizes
qemu-img create -q -f qcow2 s1.qcow2 16M
qemu-io -c 'write -P 0x11 0 1M' s1.qcow2 >/dev/null
cp s1.qcow2 s2.qcow2
qemu-img resize -q s2.qcow2 24M
want 0 "Warning: Image size mismatch!" s1.qcow2 s2.qcow2
want 0 "Images are identical." s2.qcow2 s1.qcow2
want 1 "Strict mode: Image size mismatch!" -s s1.qcow2 s2.qcow2
qemu-io -c 'write -z 17M 1M' -c 'write -P 0 20M 64k' s2.qcow2 >/dev/null
want 0 "Images are identical." s1.qcow2 s2.qcow2
poke s2.qcow2 $((22 * 1048576 + 513)) 0x01
want 1 "Content mismatch at offset $((22 * 1048576 + 512))!" s1.qcow2 s2.qcow2
want 1 "Content mismatch at offset $((22 * 1048576 + 512))!" s2.qcow2 s1.qcow2
# a difference before the end of the smaller one wins (no size warning)
cp s1.qcow2 s3.qcow2; poke s3.qcow2 4096 0x01
same s3.qcow2 s2.qcow2
# raw files of different sizes (one not a whole number of sectors)
"$COWVM" image convert -O raw s1.qcow2 s1.raw || bad "cowvm convert s1"
cp s1.raw s4.raw; truncate -s $((16 * 1048576 + 1000)) s4.raw
same s1.raw s4.raw
truncate -s 20M s4.raw; printf 'Q' | dd of=s4.raw bs=1 seek=$((19 * 1048576)) conv=notrunc status=none
want 1 "Content mismatch at offset $((19 * 1048576))!" s1.qcow2 s4.raw

# --- strict-mode block status: unallocated to the end vs unallocated then
# data (qemu reports the end of the disk as a status bit too)
qemu-img create -q -f qcow2 t1.qcow2 4M
qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0 3584k 512k' t1.qcow2 >/dev/null
qemu-img create -q -f qcow2 t2.qcow2 4M
qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0 3M 1M' t2.qcow2 >/dev/null
want 0 "Images are identical." t1.qcow2 t2.qcow2
want 1 "Strict mode: Offset 3145728 block status mismatch!" -s t1.qcow2 t2.qcow2
qemu-img create -q -f qcow2 t3.qcow2 4M
qemu-io -c 'write -P 0x11 0 1M' t3.qcow2 >/dev/null
want 1 "Strict mode: Offset 1048576 block status mismatch!" -s t3.qcow2 t2.qcow2
qemu-img create -q -f raw t4.raw 4M
qemu-io -f raw -c 'write -P 0x11 0 1M' t4.raw >/dev/null
same -s t4.raw t3.qcow2
same -s t4.raw t4.raw
"$COWVM" image convert -O raw t3.qcow2 t5.raw || bad "cowvm convert t3"
same -s t4.raw t5.raw

# preallocation=metadata: QEMU asks the file system where its data
# clusters are zero (holes), in strict mode
for m in metadata full; do
	qemu-img create -q -f qcow2 -o preallocation=$m p-$m.qcow2 16M
	qemu-io -c 'write -P 1 1M 64k' p-$m.qcow2 >/dev/null
done
"$COWVM" image create p-cow.qcow2 16M --preallocation metadata || bad "cowvm create --preallocation"
qemu-io -c 'write -P 1 1M 64k' p-cow.qcow2 >/dev/null
want 0 "Images are identical." p-metadata.qcow2 p-full.qcow2
want 1 "Strict mode: Offset 0 block status mismatch!" -s p-metadata.qcow2 p-full.qcow2
want 0 "Images are identical." -s p-metadata.qcow2 p-cow.qcow2
qemu-img convert -O raw p-cow.qcow2 p-cow.raw
want 0 "Images are identical." p-cow.qcow2 p-cow.raw
same -s p-cow.qcow2 p-cow.raw
cp p-cow.qcow2 p-cow2.qcow2; qemu-io -c 'write -P 0 5M 64k' p-cow2.qcow2 >/dev/null
want 0 "Images are identical." p-cow.qcow2 p-cow2.qcow2
want 1 "Strict mode: Offset" -s p-cow.qcow2 p-cow2.qcow2

# --- errors: exit 2, the file named on stderr, nothing on stdout
err2() {   # WHAT NAME ARGS...: exit 2 (as qemu-img), NAME in the message
	local what=$1 name=$2
	shift 2
	qemu-img compare "$@" >/dev/null 2>q.err
	q=$?
	"$COWVM" image compare "$@" >c.out 2>c.err
	c=$?
	n=$((n + 1))
	if [ "$c" != 2 ] || [ "$q" != 2 ]; then
		bad "$what: exit $c (qemu-img $q), want 2: $(cat c.err)"
	elif ! grep -qF -- "'$name'" c.err; then
		bad "$what: message does not name '$name': $(cat c.err)"
	elif [ -s c.out ]; then
		bad "$what: printed on stdout: $(cat c.out)"
	else
		echo "ok: $what: $(cat c.err)"
	fi
}
err2 "missing first file" nonexist.qcow2 nonexist.qcow2 a.qcow2
err2 "missing second file" nonexist.qcow2 a.qcow2 nonexist.qcow2
err2 "unknown format" a.qcow2 -f foo a.qcow2 b.qcow2
err2 "raw file as qcow2" c.raw -F qcow2 a.qcow2 c.raw
qemu-img create -q -f qcow2 gone.qcow2 16M
qemu-img create -q -f qcow2 -b gone.qcow2 -F qcow2 orphan.qcow2 16M
rm -f gone.qcow2
err2 "missing backing file" gone.qcow2 a.qcow2 orphan.qcow2
"$COWVM" image compare a.qcow2 >c.out 2>c.err
[ $? = 2 ] && grep -q "usage: cowvm image compare" c.err || bad "one image: $(cat c.err)"
# a data cluster past the end of the file: qemu-img reads zeros there;
# cowvm refuses the offset (exit 4 as for a read error, the file named)
qemu-img create -q -f qcow2 x.qcow2 4M
qemu-io -c 'write -P 1 0 4M' x.qcow2 >/dev/null
cp x.qcow2 y.qcow2
l1=$(($(get_be y.qcow2 40 8)))
l2=$(($(get_be y.qcow2 "$l1" 8) & 0x00fffffffffffe00))
put_be y.qcow2 $((l2 + 3 * 8)) 8 $(((1 << 63) | (1 << 40)))
"$COWVM" image compare x.qcow2 y.qcow2 >c.out 2>c.err
rc=$?
n=$((n + 1))
[ "$rc" = 4 ] && grep -q "'y.qcow2': data cluster offset .* beyond the end of the file" c.err ||
	bad "cluster past the end: exit $rc: $(cat c.out c.err)"
qemu-img compare x.qcow2 y.qcow2 >q.out 2>&1
q=$?
echo "ok: cluster past the end: cowvm exit $rc, $(cat c.err); qemu-img exit $q, $(cat q.out)"
same -s x.qcow2 y.qcow2

# a shared lock: a writer keeps compare out, -U reads anyway
# (qemu-io's sleep is in milliseconds; killed once done, or at exit)
timeout -k 2 60 qemu-io -c 'sleep 50000' b.qcow2 >qemu-io.log 2>&1 &
QPID=$!
trap 'kill $QPID 2>/dev/null; rm -rf "$T"' EXIT
wait_locked b.qcow2 || bad "qemu-io did not lock b.qcow2 within 10 s: $(cat qemu-io.log)"
"$COWVM" image compare a.qcow2 b.qcow2 >c.out 2>c.err
rc=$?
n=$((n + 1))
[ "$rc" = 2 ] && grep -q "'b.qcow2': image is in use.*force-share" c.err ||
	bad "locked image: exit $rc: $(cat c.err)"
echo "ok: locked by qemu-io: exit $rc, $(cat c.err)"
want 0 "Images are identical." -U a.qcow2 b.qcow2
kill "$QPID" 2>/dev/null
wait "$QPID" 2>/dev/null

# --- timing: a 1 GiB pair, 256 MiB of data scattered over it (logged only)
qemu-img create -q -f qcow2 big1.qcow2 1G
qemu-io -c 'write -P 0x5a 0 64M' -c 'write -P 0x6b 300M 64M' -c 'write -P 0x7c 600M 64M' \
	-c 'write -P 0x0d 960M 64M' -c 'write -z 500M 32M' big1.qcow2 >/dev/null
"$COWVM" image convert -O qcow2 big1.qcow2 big2.qcow2 || bad "convert big1"
same big1.qcow2 big2.qcow2
tq=$( { /usr/bin/time -f %e qemu-img compare big1.qcow2 big2.qcow2 >/dev/null; } 2>&1 )
tc=$( { /usr/bin/time -f %e "$COWVM" image compare big1.qcow2 big2.qcow2 >/dev/null; } 2>&1 )
echo "timing: 1 GiB qcow2 pair, 256 MiB data: qemu-img compare ${tq}s, cowvm image compare ${tc}s"
qemu-img convert -O raw big1.qcow2 big.raw
tq=$( { /usr/bin/time -f %e qemu-img compare big1.qcow2 big.raw >/dev/null; } 2>&1 )
tc=$( { /usr/bin/time -f %e "$COWVM" image compare big1.qcow2 big.raw >/dev/null; } 2>&1 )
echo "timing: 1 GiB qcow2 vs sparse raw: qemu-img compare ${tq}s, cowvm image compare ${tc}s"
# compressed (each image's clusters decompressed on its own thread)
head -c 48M /dev/urandom | base64 -w 76 >txt.raw
qemu-img convert -q -n -f raw -O qcow2 txt.raw big1.qcow2
qemu-img convert -q -c -O qcow2 big1.qcow2 bigz1.qcow2
"$COWVM" image convert -c -O qcow2 big1.qcow2 bigz2.qcow2 || bad "convert -c big1"
same bigz1.qcow2 bigz2.qcow2
tq=$( { /usr/bin/time -f %e qemu-img compare bigz1.qcow2 bigz2.qcow2 >/dev/null; } 2>&1 )
tc=$( { /usr/bin/time -f %e "$COWVM" image compare bigz1.qcow2 bigz2.qcow2 >/dev/null; } 2>&1 )
echo "timing: 1 GiB compressed pair, 256 MiB data (64 MiB text): qemu-img compare ${tq}s, cowvm image compare ${tc}s"

echo "$n comparisons, $fails failures"
[ "$fails" = 0 ] || exit 1
