#!/bin/bash
# tests/interop/guest-qemu.sh — the test guest under QEMU (no cowvm involved).
#
# 1. hello on -M microvm with KVM (TCG if /dev/kvm cannot be opened): the
#    same PVH ELF the boot benchmark uses.
# 2. disk-write then disk-verify (same seed passes, other seed fails at
#    sector 0) on a small raw disk, -M pc with TCG and modern virtio-blk-pci.
#    Also: a corrupted sector is reported exactly, no disk fails cleanly,
#    virtio-rng returns 64 bytes.
# 3. an unknown command exits with the bad-command status.
#
# QEMU's isa-debug-exit turns guest status V into process status (V<<1)|1.
# Exit 0 pass, 1 fail, 77 skip.
# timeout: 120
set -u

QEMU=${QEMU:-qemu-system-x86_64}
TESTGUEST=${TESTGUEST:-build/testguest.elf}

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

command -v "$QEMU" >/dev/null 2>&1 || skip "$QEMU not installed"
[ -f "$TESTGUEST" ] || skip "test guest $TESTGUEST not built (run make)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/guest-qemu.XXXXXX") || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT

accel=kvm
if ! { exec 3<>/dev/kvm; } 2>/dev/null; then
	accel=tcg
	echo "note: /dev/kvm cannot be opened, microvm runs use TCG"
else
	exec 3>&-
fi
cpu=()
[ "$accel" = kvm ] && cpu=(-cpu host,-arch-capabilities)

# run NAME SECONDS qemu-args... — output in $tmp/NAME.out, status in $rc
run() {
	local name=$1 secs=$2; shift 2
	timeout -k 5 "$secs" "$QEMU" -nodefaults -no-user-config -nographic -serial stdio \
		-device isa-debug-exit,iobase=0x501,iosize=4 -kernel "$TESTGUEST" "$@" \
		</dev/null >"$tmp/$name.out" 2>"$tmp/$name.err"
	rc=$?
	echo "--- $name: exit $rc"
	sed 's/^/    /' "$tmp/$name.out"
	[ -s "$tmp/$name.err" ] && sed 's/^/    stderr: /' "$tmp/$name.err"
	return 0
}

# expect NAME STATUS REGEX — guest status (before QEMU's <<1|1) and a line
expect() {
	local name=$1 status=$2 re=$3
	local want=$(( (status << 1) | 1 ))
	[ "$rc" -eq "$want" ] || fail "$name: QEMU exit $rc, want $want (guest status $status)"
	grep -aEq "$re" "$tmp/$name.out" || fail "$name: no line matching '$re'"
}

# 1. hello, microvm
t0=$(date +%s%N)
run hello 30 -M microvm,x-option-roms=off,rtc=off -accel "$accel" "${cpu[@]}" -m 256M \
	-append 'cowvm.test=hello'
t1=$(date +%s%N)
expect hello 0 'cowvm-guest: hello$'
echo "hello on microvm/$accel: $(( (t1 - t0) / 1000000 )) ms wall"

# 2. disk-write / disk-verify, pc + TCG
truncate -s 16M "$tmp/disk.raw" || fail "cannot create disk image"
pcargs=(-M pc -accel tcg -m 256M
	-device virtio-blk-pci,drive=d0,disable-legacy=on
	-drive if=none,id=d0,file="$tmp/disk.raw",format=raw
	-device virtio-rng-pci,disable-legacy=on)
run write 60 "${pcargs[@]}" -append 'cowvm.test=disk-write seed=42'
expect write 0 'cowvm-guest: disk-write ok sectors=32768$'
run verify 60 "${pcargs[@]}" -append 'cowvm.test=disk-verify seed=42'
expect verify 0 'cowvm-guest: disk-verify ok sectors=32768$'
run verify-other 60 "${pcargs[@]}" -append 'cowvm.test=disk-verify seed=43'
expect verify-other 6 'cowvm-guest: disk-verify mismatch at sector 0$'

# one corrupted sector in the middle is found exactly
printf 'X' | dd of="$tmp/disk.raw" bs=1 seek=$(( 12345 * 512 + 100 )) conv=notrunc status=none ||
	fail "cannot corrupt the disk image"
run verify-bad 60 "${pcargs[@]}" -append 'cowvm.test=disk-verify seed=42'
expect verify-bad 6 'cowvm-guest: disk-verify mismatch at sector 12345$'

# no disk: clear message and the no-device status
run nodisk 30 -M pc -accel tcg -m 256M -append 'cowvm.test=disk-verify seed=1'
expect nodisk 4 'cowvm-guest: disk-verify: no virtio-blk disk 0'

# virtio-rng on the same machine
run rng 60 "${pcargs[@]}" -append 'cowvm.test=rng'
expect rng 0 'cowvm-guest: rng ok bytes=64 [0-9a-f]{128}$'

# 3. unknown command
run unknown 30 -M microvm,x-option-roms=off,rtc=off -accel "$accel" "${cpu[@]}" -m 256M \
	-append 'cowvm.test=no-such-test'
expect unknown 2 'cowvm-guest: unknown command cowvm.test=no-such-test'

echo "PASS"
exit 0
