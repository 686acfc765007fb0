#!/bin/bash
# tests/demo.sh BUILD_DIR — the `make demo` job: boot the test guest under
# cowvm on a raw disk, write a pattern over the whole disk from inside the
# guest, read it back in a second VM, and show that a wrong pattern is caught.
set -u
B=${1:-build}
COWVM="$B/cowvm"
GUEST="$B/testguest.elf"
D=$(mktemp -d /tmp/cowvm-demo.XXXXXX)
trap 'rm -rf "$D"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

if ! { exec 3<>/dev/kvm; } 2>/dev/null; then
	echo "cowvm demo: /dev/kvm cannot be opened here; the demo needs KVM." >&2
	exit 1
fi

step "cowvm $("$COWVM" --version | cut -d' ' -f2): boot the test guest"
run timeout 20 "$COWVM" run --kernel "$GUEST" --append "cowvm.test=hello" || exit 1

step "the guest's view of the machine (2 vCPUs, a disk, an RNG)"
truncate -s 256M "$D/disk.raw"
run timeout 20 "$COWVM" run --kernel "$GUEST" --cpus 2 --mem 512M --rng \
	--disk "$D/disk.raw" --append "cowvm.test=info" || exit 1

step "write a pattern (seed 42) over the whole 256 MiB disk from inside the guest"
run timeout 60 "$COWVM" run --kernel "$GUEST" --disk "$D/disk.raw" \
	--append "cowvm.test=disk-write seed=42" || exit 1

step "a second VM verifies it"
run timeout 60 "$COWVM" run --kernel "$GUEST" --disk "$D/disk.raw,ro" \
	--append "cowvm.test=disk-verify seed=42" || exit 1

step "the wrong seed is caught (this one is expected to fail)"
run timeout 60 "$COWVM" run --kernel "$GUEST" --disk "$D/disk.raw,ro" \
	--append "cowvm.test=disk-verify seed=43"
echo "(exit status $?)"

step "a guest that keeps running: counter for 1 s, then SIGTERM"
timeout 10 "$COWVM" run --kernel "$GUEST" --append "cowvm.test=counter" &
pid=$!
sleep 1
kill -TERM "$pid"
wait "$pid"
echo "(exit status $?: 128 + SIGTERM)"
echo
echo "demo done."
