#!/bin/bash
# `cowvm image bitmap` (cli/cmd-image-bitmap.c, cow/bitmap-ops.c) against
# `qemu-img bitmap`: every operation, and several in one call, made by
# cowvm on c.qcow2 and by qemu-img on q.qcow2, two copies that also get the
# same writes between the calls, from QEMU (qemu-io) and from cowvm
# (cowio ops: write, write-zeroes, discard). After each step both images
# list the same bitmaps (qemu-img info: names, granularities, flags), QEMU
# reads the same dirty areas in each (qemu-nbd -B), `qemu-img check` finds
# nothing (no leak either) and the data is the same. Covered: --add with
# -g 4K, 64K (the default for 64 KiB clusters), 1M, 512, the default for
# 512 B, 4 KiB and 2 MiB clusters, --add --disable; --clear; --enable and
# --disable (the next writes recorded or not); --merge within the file
# (also between granularities) and from another file (-b); combinations
# in one call; --remove of bitmaps that are in use (inconsistent) after a
# kill -9 of qemu-io, with the clusters freed; the last bitmap removed and
# the first added again (the header's extension dropped and made again);
# errors (each refused by both, the cowvm image unchanged: bitmaps, bits,
# data): add an existing name, remove or clear a missing one, granularity
# not a power of 2 or below 512, clear/enable/disable/merge of a bitmap in
# use, merge from a bitmap of another disk size, a version 2 image, a name
# of 1024 bytes (1023 accepted); a failing operation after a good one
# changes nothing in cowvm (qemu-img keeps the good one). A damaged
# directory (two bitmaps naming one data cluster): cowvm refuses every
# edit but --remove, and removing one of the two leaves the cluster to the
# other (check: no corruption left; not compared with qemu-img).
# timeout: 600
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v qemu-io >/dev/null 2>&1 || skip "qemu-io not installed"
command -v qemu-nbd >/dev/null 2>&1 || skip "qemu-nbd not installed"
command -v jq >/dev/null 2>&1 || skip "jq not installed"
cow_tmpdir
M=$((1 << 20)) K=1024
NCMP=0 NDIRTY=0 NERR=0

bl() { qemu-img info --output=json "$1" | jq -c '[."format-specific".data.bitmaps[]?]'; }

# state IMG: its bitmap list, the dirty areas of each bitmap not in use
state() {
	local l b
	l=$(bl "$1") || fail "qemu-img info $1"
	echo "$l"
	for b in $(printf '%s' "$l" | jq -r '.[] | select(.flags | index("in-use") | not) | .name'); do
		echo "$b $(bm_dirty "$1" "$b")"
	done
}

# same WHAT: c.qcow2 and q.qcow2 list the same bitmaps with the same bits,
# pass qemu-img check without leaks, hold the same data
same() {
	local sc sq
	sc=$(state c.qcow2)
	sq=$(state q.qcow2)
	[ "$sc" = "$sq" ] || fail "$1: cowvm's image differs from qemu-img's:
cowvm:    $sc
qemu-img: $sq"
	qcheck c.qcow2
	qcheck q.qcow2
	qcompare c.qcow2 q.qcow2
	NCMP=$((NCMP + 1))
	NDIRTY=$((NDIRTY + $(printf '%s\n' "$sc" | grep -c '\[\[')))
}

# both ARGS...: `bitmap ARGS` with IMG standing for the image, by cowvm on
# c.qcow2 and by qemu-img on q.qcow2; both must succeed
both() {
	"$COWVM" image bitmap "${@/#IMG/c.qcow2}" >out.c 2>&1 || { cat out.c; fail "cowvm image bitmap $*"; }
	qemu-img bitmap "${@/#IMG/q.qcow2}" >out.q 2>&1 || { cat out.q; fail "qemu-img bitmap $*"; }
	[ ! -s out.c ] || { cat out.c; fail "cowvm image bitmap $*: printed something"; }
	same "bitmap $*"
}

# refused PATTERN ARGS...: both fail; cowvm's message matches PATTERN
# (grep -E) and its image is unchanged (bitmaps, bits, data)
refused() {
	local pat=$1 before
	shift
	before=$(state c.qcow2)
	cp c.qcow2 before.qcow2
	"$COWVM" image bitmap "${@/#IMG/c.qcow2}" >out.c 2>&1 && fail "cowvm image bitmap $*: accepted"
	qemu-img bitmap "${@/#IMG/q.qcow2}" >out.q 2>&1 && fail "qemu-img bitmap $*: accepted (the test expects a refusal)"
	grep -Eq -- "$pat" out.c || { cat out.c; fail "cowvm image bitmap $*: message does not match '$pat'"; }
	[ "$(state c.qcow2)" = "$before" ] || fail "cowvm image bitmap $*: refused, but the bitmaps changed"
	qcompare before.qcow2 c.qcow2
	qcheck c.qcow2
	NERR=$((NERR + 1))
}

# writes OPS...: the same cowio ops (w:OFF:LEN, z:, u:, d:) into both
writes() {
	"$COWIO" ops c.qcow2 "$@" >/dev/null || fail "cowio ops c.qcow2 $*"
	"$COWIO" ops q.qcow2 "$@" >/dev/null || fail "cowio ops q.qcow2 $*"
}
# qwrites CMD...: the same qemu-io commands on both
qwrites() {
	local f a
	for f in c.qcow2 q.qcow2; do
		a=()
		for c in "$@"; do a+=(-c "$c"); done
		qemu-io "${a[@]}" "$f" >/dev/null || fail "qemu-io $* $f"
	done
}

# ---- 64 MiB, 64 KiB clusters
qemu-img create -q -f qcow2 c.qcow2 64M
cp c.qcow2 q.qcow2
qwrites "write -P 0x5a 0 256k"
both --add -g 4K IMG g4
both --add IMG g64
both --add -g 1M IMG g1m
both --add --disable IMG off
both --add -g 512 IMG g512
qwrites "write -P 0x11 $((M + 4 * K)) 4k" "write -P 0x12 $((9 * M)) 100k"
writes w:$((3 * M + 5)):1000 z:$((20 * M)):$((64 * K)) d:0:$((64 * K)) w:$((64 * M - 700)):700
same "writes by QEMU and cowvm"
both --clear IMG g4
qwrites "write -P 0x13 $((30 * M)) 8k"
same "after clear, a write"
both --disable IMG g64
both --enable IMG off
qwrites "write -P 0x14 $((40 * M)) 64k"
writes w:$((41 * M)):5000
same "after enable/disable, writes"
both --merge g4 IMG g1m
both --merge g1m IMG g512
both --merge g512 IMG off
# from another file of the same size
qemu-img create -q -f qcow2 src.qcow2 64M
qemu-img bitmap --add -g 64k src.qcow2 s
qemu-io -c "write 50M 300k" -c "write 63M 1k" src.qcow2 >/dev/null || fail "qemu-io src"
both --merge s -b src.qcow2 IMG g4
both --merge s -b src.qcow2 -F qcow2 IMG g64
# from a file of 4 KiB clusters (its bitmap's clusters of bits smaller)
qemu-img create -q -f qcow2 -o cluster_size=4096 src4k.qcow2 64M
qemu-img bitmap --add -g 512 src4k.qcow2 s4
qemu-io -c "write 3M 1k" -c "write 33M 200k" -c "write $((64 * M - 512)) 512" src4k.qcow2 >/dev/null ||
	fail "qemu-io src4k"
both --merge s4 -b src4k.qcow2 IMG g4
both --merge s4 -b src4k.qcow2 IMG g512
# several in one call
both --add -g 64K --disable --merge g4 --clear --merge off IMG combo
both --enable --disable --enable IMG combo
both --remove --add -g 8K IMG g1m
both --clear --merge off --disable IMG g4
both --add -g 1M --merge s -b src.qcow2 IMG fromsrc
qwrites "write -P 0x15 $((60 * M)) 4k"
writes w:$((62 * M)):10 u:$((44 * M)):$((128 * K))
same "combinations, then writes"

# ---- errors (both refuse; cowvm changes nothing)
refused "bitmap 'g4' already exists" --add IMG g4
refused "bitmap 'nope' not found" --remove IMG nope
refused "bitmap 'nope' not found" --clear IMG nope
refused "bitmap 'nope' not found" --merge nope IMG g4
refused "granularity" --add -g 1000 IMG x
refused "granularity" --add -g 256 IMG x
refused "-g is only for --add" --remove -g 4k IMG g4
refused "-b is only for --merge" --add -b src.qcow2 IMG x
refused "need at least one" IMG g4
qemu-img create -q -f qcow2 small.qcow2 32M
qemu-img bitmap --add small.qcow2 s
refused "different sizes" --merge s -b small.qcow2 IMG g4
long=$(head -c 1024 /dev/zero | tr '\0' n)
refused "name length exceeds" --add IMG "$long"
both --add IMG "${long:0:1023}"
both --remove IMG "${long:0:1023}"
# a failing operation after a good one: cowvm changes nothing (qemu-img
# keeps the first: not compared)
cp c.qcow2 before.qcow2
"$COWVM" image bitmap --add --clear --merge nope c.qcow2 dup >out.c 2>&1 && fail "--add --clear --merge nope: accepted"
grep -q "bitmap 'nope' not found" out.c || { cat out.c; fail "--add --merge nope: message"; }
[ "$(bl c.qcow2)" = "$(bl before.qcow2)" ] || fail "a failed call kept its first operation: $(bl c.qcow2)"
qcheck c.qcow2
NERR=$((NERR + 1))

# ---- in use (inconsistent): qemu-io killed while it has both open
for f in c.qcow2 q.qcow2; do
	qemu-io -c "write -P 0x16 $((10 * M)) 64k" -c "sleep 100000" "$f" >/dev/null 2>&1 &
	p=$!
	wait_locked "$f" || fail "qemu-io did not open $f"
	sleep 0.5
	{ kill -9 $p; wait $p; } 2>/dev/null
done
[ "$(bl c.qcow2 | jq '[.[] | select(.flags | index("in-use"))] | length')" -ge 5 ] ||
	fail "qemu-io killed: the bitmaps are not in use: $(bl c.qcow2)"
same "in use after kill -9"
refused "inconsistent" --clear IMG g4
refused "inconsistent" --enable IMG off
refused "inconsistent" --disable IMG g64
refused "inconsistent" --merge g4 IMG g64
refused "already exists" --add IMG g4
both --remove IMG g4
both --remove IMG combo
both --add -g 16K IMG fresh
qwrites "write -P 0x17 $((12 * M)) 4k"
writes w:$((13 * M)):4096
same "a fresh bitmap among bitmaps in use, writes"
for b in g64 g1m off g512 fromsrc; do
	both --remove IMG $b
done
[ "$(bl c.qcow2 | jq -c '[.[].name]')" = '["fresh"]' ] || fail "left: $(bl c.qcow2)"
# the last one: the extension goes (QEMU must not warn about it)
both --remove IMG fresh
[ "$(bl c.qcow2)" = "[]" ] || fail "no bitmap left: $(bl c.qcow2)"
qemu-img info c.qcow2 2>&1 | grep -qi "warn" && fail "qemu-img info warns after the last bitmap went"
qwrites "write -P 0x18 $((14 * M)) 4k"
same "no bitmap, a write"
# the first one again
both --add -g 4K IMG again
qwrites "write -P 0x19 $((15 * M)) 4k"
writes w:$((16 * M)):100
same "the first bitmap again, writes"
qemu-img info c.qcow2 2>&1 | grep -qi "warn" && fail "qemu-img info warns"

# ---- damage (cowvm only: QEMU's remove would free the shared cluster
# under the bitmap that keeps it): b1's first table entry names b0's data
# cluster. Every edit but --remove is refused; removing b1 frees its
# table and leaves the shared cluster to b0: no corruption left
qemu-img create -q -f qcow2 -o cluster_size=4096 c.qcow2 16M
qemu-img bitmap --add -g 512 c.qcow2 b0
qemu-img bitmap --add -g 512 c.qcow2 b1
qemu-img bitmap --add c.qcow2 b2
qemu-io -c "write 0 64k" c.qcow2 >/dev/null || fail "qemu-io"
python3 - c.qcow2 <<'PY' || fail "damaging c.qcow2"
import struct, sys
f = open(sys.argv[1], 'r+b')
h = f.read(4096)
o = struct.unpack('>I', h[100:104])[0]
while True:
    t, l = struct.unpack('>II', h[o:o + 8])
    assert t != 0, 'no bitmaps extension'
    if t == 0x23852875:
        nb, _, dsize, doff = struct.unpack('>IIQQ', h[o + 8:o + 32])
        break
    o += 8 + ((l + 7) & ~7)
f.seek(doff)
d = f.read(dsize)
tabs, p = [], 0
while p < dsize:
    tabs.append(struct.unpack('>Q', d[p:p + 8])[0])
    p += (24 + struct.unpack('>I', d[p + 20:p + 24])[0] + struct.unpack('>H', d[p + 18:p + 20])[0] + 7) & ~7
f.seek(tabs[0])
e = f.read(8)
assert struct.unpack('>Q', e)[0] > 1, 'b0 has no data cluster'
f.seek(tabs[1])
f.write(e)
PY
qemu-img check -q c.qcow2 >/dev/null 2>&1 && fail "damage: qemu-img check finds nothing"
for a in "--add c.qcow2 x" "--clear c.qcow2 b2" "--disable c.qcow2 b0" "--merge b0 c.qcow2 b2"; do
	"$COWVM" image bitmap $a >out.c 2>&1 && fail "damage: bitmap $a accepted"
	grep -q "only --remove is possible.*share a cluster" out.c || { cat out.c; fail "damage: bitmap $a: message"; }
	NERR=$((NERR + 1))
done
"$COWVM" image bitmap --remove c.qcow2 b1 >out.c 2>&1 || { cat out.c; fail "damage: --remove b1"; }
[ "$(bl c.qcow2 | jq -c '[.[].name]')" = '["b0","b2"]' ] || fail "damage: left $(bl c.qcow2)"
qcheck c.qcow2 leaks

# ---- default granularities, a version 2 image
for cs in 512 4k 2M; do
	qemu-img create -q -f qcow2 -o cluster_size=$cs c.qcow2 16M
	cp c.qcow2 q.qcow2
	both --add IMG d
	qwrites "write 1M 8k"
	writes w:$((3 * M)):1
	same "cluster size $cs: default granularity, writes"
done
qemu-img create -q -f qcow2 -o compat=0.10 c.qcow2 16M
cp c.qcow2 q.qcow2
refused "version 2" --add IMG b
qemu-img create -q -f raw c.raw 16M
"$COWVM" image bitmap --add -f raw c.raw b >out.c 2>&1 && fail "a raw image: accepted"
grep -q "raw image cannot hold" out.c || { cat out.c; fail "raw: message"; }

echo "ok: $NCMP comparisons with qemu-img bitmap (bitmap lists, checks, data; $NDIRTY non-empty dirty maps equal), $NERR refusals"
echo "PASS"
