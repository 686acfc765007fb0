#!/bin/bash
# `cowvm image create --preallocation metadata|falloc|full` against
# qemu-img's preallocation= (QEMU 7.2):
# - overlays (extended L2 entries, cowvm's default with -b) over a qcow2 and
#   a raw base, and images without a backing file (standard and extended
#   L2, version 2): qemu-img check finds no error and every cluster
#   allocated, as in qemu-img's own image of the same mode; both read as the
#   base (or zeros); `cowvm image map --json` and `qemu-img map` agree; disk
#   usage: metadata leaves the data a hole, falloc and full hold it;
# - writes through cow/ (random writes, write-zeroes, discards mirrored into
#   a raw reference) and through storage/ under cache=none (image bench,
#   io_uring) go in place: the file does not grow; qemu-img check and
#   compare agree with the reference, or with the same writes that qemu-io
#   made into a sparse overlay;
# - qemu-io's writes into a cowvm-made preallocated overlay read the same
#   through cowvm, and cowvm's into a qemu-img-made one read the same
#   through QEMU;
# - refused with a message: preallocation over a backing file without
#   extended L2 entries (--extended-l2=off, --compat 0.10), an unknown mode.
# timeout: 240
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v jq >/dev/null || skip "jq not installed"
cow_tmpdir

S=24M
qemu-img create -q -f qcow2 base.qcow2 $S
qemu-io -c "write -P 0x11 1M 8M" -c "write -P 0x22 16M 3M" base.qcow2 >/dev/null
qemu-img convert -O raw base.qcow2 base.raw
size_of() { stat -c %s "$1"; }
used_kib() { du -k "$1" | cut -f1; }
allocated() { qemu-img check "$1" | sed -n 's/^\([0-9]*\/[0-9]*\) = .*allocated.*/\1/p'; }
strip() { jq -c 'map(del(.compressed))'; }

for m in metadata falloc full; do
	for b in qcow2 raw; do
		rm -f ov.qcow2 q.qcow2 ref.raw
		"$COWVM" image create ov.qcow2 -b base.$b -F $b --preallocation $m ||
			fail "create -b base.$b --preallocation $m"
		qemu-img create -q -f qcow2 -b base.$b -F $b -o extended_l2=on,preallocation=$m q.qcow2
		qcheck ov.qcow2
		a=$(allocated ov.qcow2)
		[ -n "$a" ] && [ "$a" = "$(allocated q.qcow2)" ] ||
			fail "$m over $b: allocated clusters $a, qemu-img's own image $(allocated q.qcow2)"
		[ "${a%/*}" = "${a#*/}" ] || fail "$m over $b: not every cluster allocated ($a)"
		qcompare base.$b ov.qcow2
		[ "$("$COWVM" image map --json ov.qcow2 | strip)" = "$(qemu-img map --output=json ov.qcow2 | strip)" ] ||
			fail "$m over $b: cowvm image map differs from qemu-img map"
		[ "$(qemu-img map --output=json ov.qcow2 | jq -c 'map(del(.offset))')" = \
		  "$(qemu-img map --output=json q.qcow2 | jq -c 'map(del(.offset))')" ] ||
			fail "$m over $b: qemu-img map of cowvm's image differs from that of qemu-img's"
		u=$(used_kib ov.qcow2)
		case $m in
		metadata) [ "$u" -lt 4096 ] || fail "metadata over $b uses $u KiB" ;;
		*) [ "$u" -ge 24576 ] || fail "$m over $b uses only $u KiB" ;;
		esac
		sz=$(size_of ov.qcow2)

		# writes through cow/, mirrored into a raw copy of the base
		cp base.raw ref.raw
		random_writes ov.qcow2 ref.raw 7 200 "$m over $b"
		"$COWIO" cmp ov.qcow2 ref.raw || fail "$m over $b: cowvm reads back differently"
		[ "$(size_of ov.qcow2)" = "$sz" ] ||
			fail "$m over $b: the file grew from $sz to $(size_of ov.qcow2) bytes"

		# storage/ under cache=none, against qemu-io on a sparse overlay
		rm -f ov.qcow2 sp.qcow2
		"$COWVM" image create ov.qcow2 -b base.$b -F $b --preallocation $m || fail create
		qemu-img create -q -f qcow2 -b base.$b -F $b sp.qcow2
		sz=$(size_of ov.qcow2)
		"$COWVM" image bench -t none -i io_uring -w --pattern 0x5a -c 96 -d 16 -s 65536 -o 2M \
			ov.qcow2 >/dev/null || fail "$m over $b: bench 64k"
		"$COWVM" image bench -t none -i io_uring -w --pattern 0x6b -c 200 -d 16 -s 4096 -S 90112 -o 4096 \
			ov.qcow2 >/dev/null || fail "$m over $b: bench 4k"
		qemu-img bench -q -t none -w --pattern=0x5a -c 96 -d 16 -s 65536 -o 2M sp.qcow2 >/dev/null
		qemu-img bench -q -t none -w --pattern=0x6b -c 200 -d 16 -s 4096 -S 90112 -o 4096 sp.qcow2 >/dev/null
		qcheck ov.qcow2
		qcompare sp.qcow2 ov.qcow2
		[ "$(size_of ov.qcow2)" = "$sz" ] ||
			fail "$m over $b: storage/ writes grew the file from $sz to $(size_of ov.qcow2) bytes"

		# QEMU writes into cowvm's image; cowvm writes into QEMU's
		qemu-io -c "write -P 0x77 5000 7000" -c "write -P 0x78 10M 1M" ov.qcow2 >/dev/null
		qemu-io -c "write -P 0x77 5000 7000" -c "write -P 0x78 10M 1M" sp.qcow2 >/dev/null
		"$COWVM" image convert ov.qcow2 ov.raw -O raw || fail "convert"
		qemu-img convert -O raw sp.qcow2 sp.raw
		cmp -s ov.raw sp.raw || fail "$m over $b: cowvm reads qemu-io's writes into its image differently"
		cp base.raw ref.raw
		random_writes q.qcow2 ref.raw 9 150 "$m over $b, into qemu-img's image"
		rm -f ov.raw sp.raw
	done
	echo "ok: overlays, $m"

	# no backing file
	for opts in "" "--extended-l2" "--compat 0.10" "--cluster-size 512" "--cluster-size 2M --extended-l2"; do
		rm -f n.qcow2 ref.raw
		# shellcheck disable=SC2086
		"$COWVM" image create n.qcow2 5M --preallocation $m $opts || fail "create $m $opts"
		qcheck n.qcow2
		a=$(allocated n.qcow2)
		[ -n "$a" ] && [ "${a%/*}" = "${a#*/}" ] || fail "$m $opts: not every cluster allocated ($a)"
		truncate -s 5M ref.raw
		qcompare ref.raw n.qcow2
		[ "$("$COWVM" image map --json n.qcow2 | strip)" = "$(qemu-img map --output=json n.qcow2 | strip)" ] ||
			fail "$m $opts: cowvm image map differs from qemu-img map"
		sz=$(size_of n.qcow2)
		# every third 4 KiB from 512 on (unaligned for 4 KiB clusters and
		# up: partial clusters, in place)
		"$COWVM" image bench -w --pattern 0x3c -c 300 -s 4096 -S 12288 -o 512 n.qcow2 >/dev/null ||
			fail "$m $opts: bench"
		qcheck n.qcow2
		[ "$(size_of n.qcow2)" = "$sz" ] || fail "$m $opts: writes grew the file from $sz to $(size_of n.qcow2)"
		python3 -c '
import sys
w = bytearray(5 << 20)
for k in range(300):
    o = 512 + k * 12288
    w[o:o + 4096] = b"\x3c" * 4096
open("ref.raw", "wb").write(w)' || fail python
		qcompare ref.raw n.qcow2
		# then random writes, zeroes and discards through cow/
		random_writes n.qcow2 ref.raw 3 100 "$m $opts"
	done
	echo "ok: no backing file, $m"
done

# refusals
for opts in "--extended-l2=off" "--compat 0.10"; do
	# shellcheck disable=SC2086
	"$COWVM" image create bad.qcow2 -b base.qcow2 --preallocation full $opts 2>err.txt &&
		fail "preallocation over a backing file with $opts was accepted"
	grep -q "extended L2" err.txt || { cat err.txt; fail "no clear message for $opts"; }
	[ ! -e bad.qcow2 ] || fail "a refused create left bad.qcow2"
done
"$COWVM" image create bad.qcow2 1M --preallocation sparse 2>err.txt && fail "mode 'sparse' accepted"
grep -q "unknown preallocation mode 'sparse'" err.txt || { cat err.txt; fail "no clear message for 'sparse'"; }
echo "ok: refusals"
