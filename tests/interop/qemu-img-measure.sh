#!/bin/bash
# `cowvm image measure` against qemu-img measure (QEMU 7.2): the same
# "required", "fully allocated" and "bitmaps" numbers
# - for --size over a grid of sizes (1 byte to 64 TiB), cluster sizes (512 B
#   to 2 MiB), refcount widths (1, 16, 64), standard and extended L2
#   entries, preallocation off/metadata/falloc/full, -O qcow2 and raw;
# - for sources: a qcow2 image with data, zeros, written zeros and
#   compressed clusters; one preallocated with metadata (its data clusters
#   are holes of the file: not counted); a sparse raw file; a depth-3 chain
#   (measured flattened); one with two persistent bitmaps; at 512 B, 64 KiB
#   and 2 MiB output clusters;
# and cowvm image convert's output of each source is no larger than the
# "required" size (the number is an upper bound for cowvm's own copies).
# Refused with a message: --size with FILE, neither, a bad cluster size,
# --extended-l2 with 4 KiB clusters.
# timeout: 300
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v jq >/dev/null || skip "jq not installed"
cow_tmpdir

n=0 refusals=0
same() {   # WHAT; then the cowvm arguments and the qemu-img arguments, split by --
	local what=$1 c=() q=()
	shift
	while [ "$1" != -- ]; do c+=("$1"); shift; done
	shift
	q=("$@")
	local co qo
	if ! qemu-img measure --output=json "${q[@]}" >q.json 2>q.err; then
		# refused by qemu-img (a size too large for the cluster size): by
		# cowvm too, with a message
		"$COWVM" image measure "${c[@]}" >c.out 2>&1 && fail "$what: qemu-img refuses ($(cat q.err)), cowvm not"
		grep -q "too large" c.out || { cat c.out; fail "$what: cowvm's refusal"; }
		refusals=$((refusals + 1))
		return
	fi
	qo=$(jq -c '{required, "fully-allocated", bitmaps}' q.json)
	co=$("$COWVM" image measure --json "${c[@]}" | jq -c '{required, "fully-allocated", bitmaps}') ||
		fail "$what: cowvm image measure ${c[*]}"
	[ "$co" = "$qo" ] || fail "$what: cowvm $co, qemu-img $qo"
	n=$((n + 1))
}

# ---- --size ----
for size in 1 512 1000000 1G 1099511627777 64T; do
	for cs in 512 4096 65536 2097152; do
		for rb in 1 16 64; do
			same "--size $size cs $cs rb $rb" --size $size --cluster-size $cs --refcount-bits $rb -- \
				-O qcow2 -o cluster_size=$cs,refcount_bits=$rb --size $size
		done
		[ $cs -ge 16384 ] && same "--size $size cs $cs extended L2" --size $size --cluster-size $cs --extended-l2 -- \
			-O qcow2 -o cluster_size=$cs,extended_l2=on --size $size
	done
	for p in metadata falloc full; do
		same "--size $size preallocation $p" --size $size --preallocation $p -- -O qcow2 -o preallocation=$p --size $size
	done
	same "--size $size raw" --size $size -O raw -- -O raw --size $size
done
echo "--size: $n cases equal, $refusals refused by both"

# ---- sources ----
qemu-img create -q -f qcow2 a.qcow2 64M
qemu-io -c "write -P 0x11 1M 3M" -c "write -P 0x12 10M 4k" -c "write -z 20M 2M" -c "write -P 0 30M 1M" \
	-c "write -P 0x13 63M 1M" a.qcow2 >/dev/null
qemu-io -c "write -c -P 0x14 40M 1M" a.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o preallocation=metadata pm.qcow2 32M
qemu-io -c "write -P 0x21 4M 64k" -c "write -P 0x22 8196k 4k" pm.qcow2 >/dev/null
qemu-img convert -O raw a.qcow2 sparse.raw
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 m.qcow2 80M
qemu-io -c "write -P 0x31 2M 8M" -c "write -z 63M 64k" -c "write -P 0x32 70M 1M" m.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b m.qcow2 -F qcow2 t.qcow2
qemu-io -c "write -P 0x41 12M 512" -c "discard 2M 1M" t.qcow2 >/dev/null
cp a.qcow2 bm.qcow2
qemu-img bitmap --add bm.qcow2 b0
qemu-img bitmap --add -g 4096 bm.qcow2 b-with-a-longer-name
for src in a.qcow2 pm.qcow2 sparse.raw t.qcow2 bm.qcow2; do
	fmt=qcow2
	[ "${src##*.}" = raw ] && fmt=raw
	for cs in 512 65536 2097152; do
		same "$src cs $cs" -f $fmt --cluster-size $cs $src -- -f $fmt -O qcow2 -o cluster_size=$cs $src
		rm -f out.qcow2
		"$COWVM" image convert -f $fmt --cluster-size $cs $src out.qcow2 || fail "convert $src (cs $cs)"
		req=$("$COWVM" image measure --json -f $fmt --cluster-size $cs $src | jq .required)
		[ "$(stat -c %s out.qcow2)" -le "$req" ] ||
			fail "convert $src (cs $cs): $(stat -c %s out.qcow2) bytes, more than the $req measured"
	done
	same "$src raw" -f $fmt -O raw $src -- -f $fmt -O raw $src
	same "$src falloc" -f $fmt --preallocation falloc $src -- -f $fmt -O qcow2 -o preallocation=falloc $src
done
echo "sources: $n cases equal in all; cowvm's converts within the required size"
[ "$("$COWVM" image measure --json bm.qcow2 | jq .bitmaps)" -gt 0 ] || fail "bitmaps not counted"

# ---- refused ----
for args in "--size 1G a.qcow2" "" "--size 1G --cluster-size 3000" "--size 1G --cluster-size 4k --extended-l2" \
	"-O vmdk a.qcow2" "none.qcow2"; do
	"$COWVM" image measure $args >out.txt 2>&1 && fail "measure $args: accepted"
	grep -q "cowvm" out.txt || { cat out.txt; fail "measure $args: no message"; }
done
echo PASS
