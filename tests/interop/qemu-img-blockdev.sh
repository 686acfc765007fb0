#!/bin/bash
# Images on a block device (a loop device over a file in the test's
# directory): raw and qcow2, cache=none through storage/ (io_uring and
# threads) and the page cache through cow/; what cowvm writes, qemu-io reads
# back and qemu-img check finds clean. Block device nodes live in devtmpfs,
# which reports tmpfs's magic: cache=none must not take them for tmpfs files.
# Needs root and a free loop device (skips otherwise).
# timeout: 120
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
[ "$(id -u)" = 0 ] || skip "needs root for a loop device"
command -v losetup >/dev/null || skip "losetup not installed"
T=$(mktemp -d "${TMPDIR:-/var/tmp}/cowblk.XXXXXX")
cd "$T" || exit 1
truncate -s 64M back.img
L=$(losetup -f --show back.img 2>/dev/null) || { rm -rf "$T"; skip "no free loop device"; }
trap 'losetup -d "$L"; rm -rf "$T"' EXIT

n=0
for io in io_uring threads; do
	n=$((n + 1))
	"$COWVM" image bench -f raw -t none -i $io -w --pattern $n -c 256 -s 65536 "$L" >out.txt 2>&1 ||
		{ cat out.txt; fail "raw $L, cache=none, $io"; }
	qemu-io -f raw -c "read -P $n 0 16M" "$L" >/dev/null || fail "raw $L ($io): data not on the device"
done
"$COWVM" image bench -f raw -t none -c 256 "$L" >out.txt 2>&1 || { cat out.txt; fail "raw $L, cache=none, cow/"; }
echo "ok: raw block device, cache=none"

qemu-img create -q -f qcow2 "$L" 32M
for io in io_uring threads; do
	n=$((n + 1))
	"$COWVM" image bench -t none -i $io -w --pattern $n -c 512 -s 4096 -S $((65536 + 4096)) "$L" >out.txt 2>&1 ||
		{ cat out.txt; fail "qcow2 on $L, cache=none, $io"; }
	qemu-img check -q "$L" || fail "qcow2 on $L after $io writes"
	qemu-io -f qcow2 -c "read -P $n 0 4096" "$L" >/dev/null || fail "qcow2 on $L ($io): data"
done
"$COWVM" image bench -w --pattern 9 -c 100 "$L" >out.txt 2>&1 || { cat out.txt; fail "qcow2 on $L, cow/"; }
qemu-img check -q "$L" || fail "qcow2 on $L after cow/ writes"
"$COWVM" image check "$L" >/dev/null || fail "cowvm image check $L"
echo "ok: qcow2 on a block device"
