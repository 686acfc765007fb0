#!/bin/bash
# `qemu-img info --output=json` and `cowvm image info --json` agree on size,
# cluster size, backing file, backing format and format; for images made by
# either tool.
# timeout: 120
. "$COWVM_SRC/tests/lib/cow.sh"
set -o pipefail
need_qemu_img
command -v jq >/dev/null || skip "jq not installed"
cow_tmpdir

keys='{v: ."virtual-size", c: ."cluster-size", b: ."backing-filename", bf: ."backing-filename-format", f: .format, compat: ."format-specific".data.compat, rb: ."format-specific".data."refcount-bits", ct: ."format-specific".data."compression-type"}'
agree() {
	local q c
	q=$(qemu-img info --output=json "$1" | jq -c "$keys") || fail "qemu-img info $1"
	c=$("$COWVM" image info --json "$1" | jq -c "$keys") || fail "cowvm image info $1"
	[ "$q" = "$c" ] || fail "info differs for $1: qemu-img $q, cowvm $c"
	echo "ok: $1 $c"
}

qemu-img create -q -f qcow2 q1.qcow2 1G; agree q1.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4k,refcount_bits=8,compression_type=zstd q2.qcow2 100M; agree q2.qcow2
qemu-img create -q -f qcow2 -o compat=0.10 q3.qcow2 3G; agree q3.qcow2
qemu-img create -q -f qcow2 -b q1.qcow2 -F qcow2 q4.qcow2; agree q4.qcow2
qemu-img create -q -f raw r.raw 10M; agree r.raw
"$COWVM" image create c1.qcow2 1G; agree c1.qcow2
"$COWVM" image create c2.qcow2 100M --cluster-size 2M --compression zstd; agree c2.qcow2
"$COWVM" image create c3.qcow2 -b q1.qcow2; agree c3.qcow2
"$COWVM" image create c4.qcow2 12345K -b r.raw -F raw; agree c4.qcow2
"$COWVM" image create c5.qcow2 1G --cluster-size 512 --refcount-bits 64; agree c5.qcow2
"$COWVM" image create c6.qcow2 1T --cluster-size 512 2>err.txt && fail "1T with 512-byte clusters should be refused"
grep -q "c6.qcow2.*too large" err.txt || fail "unclear message: $(cat err.txt)"
echo "ok: refused 1T/512 with: $(cat err.txt)"
