#!/bin/bash
# `cowvm image commit [-b BASE] [-d] [-p]` against qemu-img commit (QEMU
# 7.2), each on its own copy of the same chains:
# - a depth-3 chain (base 8M <- mid 6M, shorter <- top 12M, longer) with
#   data, written zeros, zero clusters and discards in the upper layers:
#   commit -b into the bottom, commit -b naming the immediate backing file,
#   and plain commit: the base reads as qemu-img's base (qemu-img compare),
#   qemu-img check clean, the base grown to the top's size as qemu-img
#   grows it; with -b (which implies -d) the top still reads as before and
#   keeps its clusters; without, the top is emptied;
# - a depth-4 chain committed into a middle layer (the layers below it
#   untouched); a raw bottom layer;
# - rebase onto the bottom of that chain (a deeper layer: only what the
#   layers between hold is compared): the top holds the ranges qemu-img
#   rebase's holds, and no more data;
# - refused with qemu-img's reasons, nothing written: a base not in the
#   chain (a copy of it, the top itself, a missing file), no backing file;
#   a top in use by a writer (a lock held).
# timeout: 120
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
cow_tmpdir

# the chain in the current directory: base.$1 (8M) <- mid (6M) <- top (12M)
mk() {
	if [ "$1" = raw ]; then
		qemu-img create -q -f raw base.raw 8M
		qemu-io -f raw -c "write -P 0x11 0 8M" base.raw >/dev/null
	else
		qemu-img create -q -f qcow2 base.qcow2 8M
		qemu-io -c "write -P 0x11 0 8M" base.qcow2 >/dev/null
	fi
	qemu-img create -q -f qcow2 -b base.$1 -F $1 mid.qcow2 6M
	qemu-io -c "write -P 0x22 1M 1M" -c "write -z 3M 64k" -c "write -P 0x23 5M 64k" mid.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 12M
	qemu-io -c "write -P 0x33 64k 64k" -c "write -P 0x34 1088k 4k" -c "write -z 2M 128k" \
		-c "discard 1536k 64k" -c "write -P 0x35 9M 4k" -c "write -z 5M 4k" top.qcow2 >/dev/null
}
# the number of data bytes a layer holds itself
own_data() { qemu-img map --output=json "$1" | jq '[.[] | select(.depth == 0 and .data) | .length] | add // 0'; }

for fmt in qcow2 raw; do
	for how in "-b base.$fmt" "-b mid.qcow2" ""; do
		rm -rf q c
		mkdir q c
		(cd q && mk $fmt && qemu-img convert -O raw top.qcow2 view.raw && qemu-img convert -O raw mid.qcow2 mid.raw)
		(cd c && mk $fmt)
		bsum=$(md5sum <c/base.$fmt)
		(cd q && qemu-img commit -q $how top.qcow2) || fail "qemu-img commit $how ($fmt)"
		(cd c && "$COWVM" image commit $how top.qcow2 >out.txt) || fail "commit $how ($fmt)"
		grep -qx "Image committed." c/out.txt || fail "commit $how ($fmt): no 'Image committed.'"
		b=${how#-b }
		[ -n "$b" ] || b=mid.qcow2
		[ "${b##*.}" = qcow2 ] && qcheck c/$b
		qemu-img compare -q c/$b q/$b || fail "commit $how ($fmt): $b differs from qemu-img's"
		[ "$(stat -c %s c/$b)" -gt 0 ] && [ "$(qemu-img info --output=json c/$b | jq '."virtual-size"')" = \
			"$(qemu-img info --output=json q/$b | jq '."virtual-size"')" ] || fail "commit $how ($fmt): size of $b"
		if [ -n "$how" ]; then
			# -b implies -d: the top still holds its data and reads as before
			qemu-img compare -q q/view.raw c/top.qcow2 || fail "commit $how ($fmt): the top reads differently"
			[ "$(own_data c/top.qcow2)" = "$(own_data q/top.qcow2)" ] || fail "commit $how ($fmt): the top changed"
		else
			[ "$(own_data c/top.qcow2)" = 0 ] || fail "commit ($fmt): the top was not emptied"
			qemu-img compare -q q/top.qcow2 c/top.qcow2 || fail "commit ($fmt): the top reads differently from qemu-img's"
		fi
		if [ "$b" = mid.qcow2 ]; then
			[ "$(md5sum <c/base.$fmt)" = "$bsum" ] || fail "commit $how ($fmt): the layer below was written"
		fi
		echo "ok: commit $how ($fmt base)"
	done
done

# a depth-4 chain committed into the second layer: the bottom untouched
rm -rf c q
mkdir c q
mk4() {
	mk qcow2
	qemu-img create -q -f qcow2 -b top.qcow2 -F qcow2 t4.qcow2
	qemu-io -c "write -P 0x44 7M 1M" -c "write -z 1M 64k" t4.qcow2 >/dev/null
}
(cd q && mk4 && qemu-img commit -q -b mid.qcow2 t4.qcow2) || fail "qemu-img commit -b mid.qcow2 (depth 4)"
(cd c && mk4 && sum=$(md5sum <base.qcow2) && "$COWVM" image commit -q -b mid.qcow2 t4.qcow2 >/dev/null &&
	[ "$(md5sum <base.qcow2)" = "$sum" ]) || fail "commit -b mid.qcow2 (depth 4), or the bottom changed"
qcheck c/mid.qcow2
qemu-img compare -q c/mid.qcow2 q/mid.qcow2 || fail "commit -b mid.qcow2 (depth 4): mid differs from qemu-img's"
qemu-img compare -q c/t4.qcow2 q/t4.qcow2 || fail "commit -b mid.qcow2 (depth 4): the top reads differently"
echo "ok: commit -b into a middle layer of a depth-4 chain"

# rebase onto a deeper layer (the shorter mid dropped): only what mid holds
# is compared and copied; the top reads as before and as qemu-img's rebase
for fmt in qcow2 raw; do
	rm -rf c q
	mkdir c q
	(cd q && mk $fmt && qemu-img convert -O raw top.qcow2 view.raw && qemu-img rebase -q -b base.$fmt -F $fmt top.qcow2) ||
		fail "qemu-img rebase onto base.$fmt"
	(cd c && mk $fmt && "$COWVM" image rebase -b base.$fmt -F $fmt top.qcow2) || fail "rebase onto base.$fmt"
	qcheck c/top.qcow2
	qemu-img compare -q q/view.raw c/top.qcow2 || fail "rebase onto base.$fmt: the top reads differently"
	# the same clusters allocated in the top (qemu-img writes a cluster
	# the old chain reads as zeros as data when its 2 MiB chunk holds
	# other data; cowvm as a zero cluster): no more data than qemu-img's
	[ "$(qemu-img map --output=json c/top.qcow2 | jq -c 'map(select(.depth == 0) | {start, length})')" = \
	  "$(qemu-img map --output=json q/top.qcow2 | jq -c 'map(select(.depth == 0) | {start, length})')" ] ||
		fail "rebase onto base.$fmt: the top holds other ranges than qemu-img's"
	[ "$(own_data c/top.qcow2)" -le "$(own_data q/top.qcow2)" ] || fail "rebase onto base.$fmt: more data than qemu-img's"
done
echo "ok: rebase onto a deeper layer, as qemu-img's"

# refusals
refused() {   # WHAT PATTERN CMD...
	local what=$1 pat=$2
	shift 2
	"$@" >out.txt 2>&1 && fail "$what: accepted"
	grep -q -- "$pat" out.txt || { cat out.txt; fail "$what: message"; }
}
rm -rf c
mkdir c
cd c
mk qcow2
cp base.qcow2 copy.qcow2
sums=$(md5sum *.qcow2)
refused "-b a copy of the base" "is not in the backing chain of 'top.qcow2'" "$COWVM" image commit -b copy.qcow2 top.qcow2
refused "-b the top itself" "is not in the backing chain" "$COWVM" image commit -b top.qcow2 top.qcow2
refused "-b a missing file" "none.qcow2" "$COWVM" image commit -b none.qcow2 top.qcow2
refused "no backing file" "no backing file" "$COWVM" image commit base.qcow2
# a writer on the top (its lock held by qemu-io): "image is in use"
qemu-io -c "sleep 5000" top.qcow2 >/dev/null 2>&1 &
qpid=$!
# (wait_locked reads /proc/locks: a probe with qemu-img info would lock
# too, and could make qemu-io's open fail)
wait_locked top.qcow2 || fail "qemu-io did not lock top.qcow2"
refused "a top in use" "in use" "$COWVM" image commit top.qcow2
kill $qpid 2>/dev/null
wait $qpid 2>/dev/null
[ "$(md5sum *.qcow2)" = "$sums" ] || fail "a refused commit wrote something"
echo "ok: refusals (5), nothing written"
echo PASS
