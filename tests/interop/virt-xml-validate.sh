#!/bin/bash
# tests/interop/virt-xml-validate.sh — libvirt's own schema as the judge.
# Every document of the corpus (tests/xml/ok and unsupported) is valid libvirt
# XML; every `cowvm dumpxml` output validates: of each imported ok document,
# of each unsupported one imported with --ignore-unsupported, and of VMs made
# by `cowvm create` (disks, read-only disk, qcow2 chain, NICs, no serial).
# timeout: 120
set -u
COWVM=${COWVM:-build/cowvm}
SRC=${COWVM_SRC:-.}
if ! command -v virt-xml-validate >/dev/null 2>&1; then
	echo "skip: virt-xml-validate not installed (Debian libvirt-clients)"
	exit 77
fi
T=$(mktemp -d /tmp/cowvm-vxv-XXXXXX)
trap 'rm -rf "$T"' EXIT
export COWVM_HOME=$T/home
unset XDG_RUNTIME_DIR
fails=0 checked=0

validate() {   # FILE WHAT
	checked=$((checked + 1))
	if ! out=$(virt-xml-validate "$1" domain 2>&1); then
		echo "FAIL: $2 does not validate:"; echo "$out" | head -5; cat "$1"
		fails=$((fails + 1))
	fi
}

for f in "$SRC"/tests/xml/ok/*.xml "$SRC"/tests/xml/unsupported/*.xml; do
	validate "$f" "corpus document $(basename "$f")"
	if ! out=$("$COWVM" define --ignore-unsupported "$f" 2>&1); then
		echo "FAIL: define $f: $out"; fails=$((fails + 1)); continue
	fi
	name=$(echo "$out" | sed -n "s/^defined VM '\(.*\)'.*/\1/p")
	"$COWVM" dumpxml "$name" >"$T/$name.xml" || { fails=$((fails + 1)); continue; }
	validate "$T/$name.xml" "dumpxml of $(basename "$f")"
done

echo k >"$T/vmlinuz"; echo i >"$T/initrd"
truncate -s 8M "$T/a.raw" "$T/b.raw"
"$COWVM" create made --kernel "$T/vmlinuz" --initrd "$T/initrd" --append "console=ttyS0 a=<b>&c" \
	--disk "$T/a.raw,werror=stop,rerror=stop" --disk "$T/b.raw,ro,werror=report" --mem 1G --cpus 4 \
	--nic tap=tapx --nic bridge=br0,mac=52:54:00:65:43:21 --no-serial >/dev/null || fails=$((fails + 1))
"$COWVM" dumpxml made >"$T/made.xml" && validate "$T/made.xml" "dumpxml of a created VM"
grep -Eq "error_policy=.stop. rerror_policy=.stop." "$T/made.xml" && grep -Eq "error_policy=.report." "$T/made.xml" ||
	{ echo "FAIL: werror/rerror of created disks not exported"; fails=$((fails + 1)); }
if command -v qemu-img >/dev/null 2>&1; then
	qemu-img create -q -f raw "$T/base.raw" 16M &&
	qemu-img create -q -f qcow2 -b "$T/base.raw" -F raw "$T/mid.qcow2" &&
	qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$T/top.qcow2" &&
	"$COWVM" create chain --kernel "$T/vmlinuz" --disk "$T/top.qcow2" >/dev/null &&
	"$COWVM" dumpxml chain >"$T/chain.xml" || fails=$((fails + 1))
	validate "$T/chain.xml" "dumpxml of a qcow2 chain"
	grep -q "$T/base.raw" "$T/chain.xml" || { echo "FAIL: chain not exported"; fails=$((fails + 1)); }
fi
echo "$checked documents checked"
[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all documents validate"
