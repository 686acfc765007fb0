#!/bin/bash
# `cowvm image bench` writes what it says, with either kind of request
# buffer (--buffers huge|pages, util/iobuf.h), through storage/ (-i io_uring)
# and through cow/, with O_DIRECT (-t none) and with the page cache: after
# each write run qemu-io reads back the pattern over the whole range written
# and qemu-img check finds no errors; reads run over the same image; a bad
# --buffers value is refused with a message naming it.
# timeout: 120
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v qemu-io >/dev/null 2>&1 || skip "qemu-io not installed (Debian qemu-utils)"
cow_tmpdir

"$COWVM" image create img.qcow2 8M || fail "create"
n=0
for io in "-i io_uring" ""; do
	for cache in none writeback; do
		for bufs in huge pages; do
			n=$((n + 1))
			p=$((n * 17 % 255 + 1))
			# 128 x 64 KiB = the whole 8 MiB, DEPTH 16 in flight through storage/
			# shellcheck disable=SC2086
			"$COWVM" image bench -w --pattern=$p -c 128 -d 16 -s 65536 $io -t $cache \
				--buffers $bufs img.qcow2 >out.txt 2>&1 ||
				{ cat out.txt; fail "bench -w $io -t $cache --buffers $bufs"; }
			grep -q "^Run completed in" out.txt || { cat out.txt; fail "bench printed no run time"; }
			qemu-io -f qcow2 -c "read -P $p 0 8M" img.qcow2 >qio.txt 2>&1 &&
				! grep -q "Pattern verification failed" qio.txt ||
				{ cat qio.txt; fail "after bench -w --pattern=$p $io -t $cache --buffers $bufs: the image does not hold the pattern"; }
			qcheck img.qcow2
			# shellcheck disable=SC2086
			"$COWVM" image bench -c 256 -d 16 -s 65536 $io -t $cache --buffers $bufs img.qcow2 \
				>out.txt 2>&1 || { cat out.txt; fail "bench (read) $io -t $cache --buffers $bufs"; }
		done
	done
done
echo "$n write runs read back intact"

if "$COWVM" image bench --buffers=small img.qcow2 >out.txt 2>&1; then
	fail "--buffers=small was accepted"
fi
grep -q -- "--buffers=small: expected huge or pages" out.txt || { cat out.txt; fail "no message for --buffers=small"; }
echo "PASS"
