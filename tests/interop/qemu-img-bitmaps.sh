#!/bin/bash
# Persistent dirty bitmaps (made by qemu-img) in an image cowvm writes: kept
# and marked in use before the first write, as QEMU marks them while it has
# an image open for writing (cow/bitmaps.c):
# - after cowvm's writes qemu-img lists every bitmap with the in-use flag,
#   `qemu-img check` finds no leak and no error (the bitmaps used to be
#   dropped by clearing autoclear bit 0, and their clusters leaked), the
#   data is what was written, and `qemu-img bitmap --remove` frees them;
# - opening read-only marks nothing;
# - a bitmap directory that does not hold what the extension says is not
#   written into: the bitmaps are dropped (autoclear bit 0 cleared) as
#   before, and qemu-img check reports leaks only.
# timeout: 120
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v jq >/dev/null || skip "jq not installed"
command -v qemu-io >/dev/null || skip "qemu-io not installed (Debian qemu-utils)"
cow_tmpdir

flags() {   # IMG: "name:flag,flag name:..." as qemu-img info lists them
	qemu-img info -U --output=json "$1" |
		jq -r '[."format-specific".data.bitmaps // [] | .[] | .name + ":" + (.flags | join(","))] | join(" ")'
}

# b0 enabled (auto) with data from qemu-io's writes, b1 disabled
qemu-img create -q -f qcow2 bm.qcow2 64M
qemu-img bitmap --add -g 65536 bm.qcow2 b0 || skip "qemu-img bitmap not available"
qemu-img bitmap --add --disable bm.qcow2 b1
qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x22 32M 256k' bm.qcow2 >/dev/null ||
	fail "qemu-io write"
f=$(flags bm.qcow2)
[ "$f" = "b0:auto b1:" ] || fail "unexpected bitmaps from qemu-img: '$f'"

# reading marks nothing
qemu-img convert -O raw bm.qcow2 ref.raw
"$COWIO" cmp bm.qcow2 ref.raw || fail "cowvm reads the bitmap image differently"
"$COWVM" image info bm.qcow2 >/dev/null || fail "image info"
f=$(flags bm.qcow2)
[ "$f" = "b0:auto b1:" ] || fail "a read-only open changed the bitmaps: '$f'"

# writing marks every bitmap in use and keeps them
"$COWIO" random bm.qcow2 ref.raw 7 300 || fail "cowio random writes"
f=$(flags bm.qcow2)
[ "$f" = "b0:in-use,auto b1:in-use" ] || fail "after cowvm's writes the bitmaps are '$f'"
qcheck bm.qcow2
"$COWVM" image check bm.qcow2 >ck.out 2>&1 || fail "cowvm image check: $(cat ck.out)"
qcompare ref.raw bm.qcow2
# a second writer session: still in use, still no leak
"$COWIO" random bm.qcow2 ref.raw 8 50 || fail "second cowio session"
f=$(flags bm.qcow2)
[ "$f" = "b0:in-use,auto b1:in-use" ] || fail "after a second session the bitmaps are '$f'"
qcheck bm.qcow2
# QEMU can remove them, and that frees their clusters cleanly
qemu-img bitmap --remove bm.qcow2 b0 && qemu-img bitmap --remove bm.qcow2 b1 ||
	fail "qemu-img bitmap --remove of the in-use bitmaps"
qcheck bm.qcow2
qcompare ref.raw bm.qcow2
echo "ok: bitmaps kept, marked in use"

# a damaged directory: the extension claims 3 bitmaps, the directory holds 2
qemu-img create -q -f qcow2 bad.qcow2 64M
qemu-img bitmap --add bad.qcow2 b0
qemu-img bitmap --add bad.qcow2 b1
hl=$(($(get_be bad.qcow2 100 4)))
o=$hl found=
while [ $((o + 8)) -le 65536 ]; do
	t=$(get_be bad.qcow2 "$o" 4)
	l=$(($(get_be bad.qcow2 $((o + 4)) 4)))
	[ "$t" = 0x00000000 ] && break
	if [ "$t" = 0x23852875 ]; then found=$o; break; fi
	o=$((o + 8 + (l + 7) / 8 * 8))
done
[ -n "$found" ] || fail "no bitmaps extension found in bad.qcow2"
[ $(($(get_be bad.qcow2 $((found + 8)) 4))) = 2 ] || fail "the extension does not count 2 bitmaps"
put_be bad.qcow2 $((found + 8)) 4 3
dir=$(get_be bad.qcow2 $((found + 24)) 8) dsize=$(($(get_be bad.qcow2 $((found + 16)) 8)))
before=$(od -An -tx1 -j $((dir)) -N "$dsize" bad.qcow2 | md5sum)
truncate -s 64M bad.raw   # empty (QEMU refuses to open bad.qcow2 now)
"$COWIO" random bad.qcow2 bad.raw 9 50 || fail "cowio random writes into bad.qcow2"
after=$(od -An -tx1 -j $((dir)) -N "$dsize" bad.qcow2 | md5sum)
[ "$before" = "$after" ] || fail "cowvm wrote into a bitmap directory it could not read"
[ "$(get_be bad.qcow2 88 8)" = 0x0000000000000000 ] || fail "autoclear bit 0 left set over a bad directory"
qcheck bad.qcow2 leaks
qcompare bad.raw bad.qcow2
echo "ok: a bad directory is not written into"
echo "PASS"
