#!/bin/bash
# Image locks interoperate with QEMU's (cow/lock.h, QEMU block/file-posix.c):
# (a) while qemu-io holds an image open for writing, cowvm's writing image
#     commands (commit, rebase, bench -w, check --repair, create over it,
#     convert into it) fail with "image is in use (write lock held by another
#     process ...)", reading commands fail too unless -U/--force-share is
#     given, and the backing file qemu-io holds shared refuses writers only;
# (b) while a cowvm VM runs with a qcow2 and a raw disk, `qemu-img info` of
#     the qcow2 fails with QEMU's 'Failed to get shared "write" lock' (and
#     works with -U), `qemu-io -c 'write ...'` fails on both, a second cowvm
#     VM cannot take either disk; after the VM ends everything works again;
# (c) two cowvm VMs run on separate overlays of one backing file (backing
#     layers are shared for reading), which meanwhile refuses writers.
# (b) and (c) need /dev/kvm; without it the script ends with SKIP after (a).
# timeout: 150
. "$(dirname "$0")/../lib.sh"
need_cmd qemu-img
need_cmd qemu-io
cd "$T" || exit 1

IN_USE='image is in use \(write lock held by another process, e.g. a running VM or QEMU\)'
NO_WRITES='image is in use \(another process reads it and does not allow writes'

# must_fail REGEX CMD...: CMD fails and its stderr matches REGEX
must_fail() {
	local re=$1; shift
	if "$@" >out.txt 2>err.txt; then
		cat out.txt err.txt; fail "'$*' succeeded on a locked image"
	fi
	grep -Eq -- "$re" err.txt || { cat err.txt; fail "'$*': no message matching '$re'"; }
}
must_work() {
	"$@" >out.txt 2>err.txt || { cat out.txt err.txt; fail "'$*' failed"; }
}

# wait_locked FILE LOG: until some process holds byte 101 (write) of FILE,
# by /proc/locks (max 10 s). (Probing with qemu-img info would lock too, and
# could make the starting holder fail.)
wait_locked() {
	local i ino
	ino=$(stat -c %i "$1")
	for ((i = 0; i < 100; i++)); do
		awk -v ino="$ino" '{ n = split($(NF - 2), a, ":") }
			a[n] == ino && $(NF - 1) <= 101 && ($NF == "EOF" || $NF >= 101) { f = 1 }
			END { exit !f }' /proc/locks && return 0
		kill -0 "$QPID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$2"
	fail "nobody locked $1 within 10 s"
}
# wait_unlocked FILE: until qemu-img info works again (max 10 s)
wait_unlocked() {
	local i
	for ((i = 0; i < 100; i++)); do
		qemu-img info "$1" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	fail "$1 still locked 10 s after its user ended"
}

# --- (a) qemu-io holds top.qcow2 (backing base.qcow2) open for writing
qemu-img create -q -f qcow2 base.qcow2 16M
qemu-io -c "write -P 0x11 0 1M" base.qcow2 >/dev/null || fail "qemu-io write"
"$COWVM" image create top.qcow2 -b base.qcow2 -F qcow2 || fail "image create"
"$COWVM" image create other.qcow2 -b base.qcow2 -F qcow2 || fail "image create"
qemu-io -c "write -P 0x22 0 64k" top.qcow2 >/dev/null || fail "qemu-io write"
timeout -k 2 60 qemu-io -c "sleep 50000" top.qcow2 >qemu-io.log 2>&1 &
QPID=$!
cleanup_pids+=("$QPID")
wait_locked top.qcow2 qemu-io.log
sum=$(md5sum < top.qcow2)

must_fail "$IN_USE\$" "$COWVM" image commit top.qcow2
must_fail "$IN_USE\$" "$COWVM" image rebase -u -b other.qcow2 -F qcow2 top.qcow2
must_fail "$IN_USE\$" "$COWVM" image rebase -b "" top.qcow2
must_fail "$IN_USE\$" "$COWVM" image bench -w -c 16 top.qcow2
must_fail "$IN_USE\$" "$COWVM" image bench -w -c 16 -i io_uring top.qcow2
must_fail "$IN_USE\$" "$COWVM" image check --repair leaks top.qcow2
must_fail "$IN_USE\$" "$COWVM" image create top.qcow2 16M
must_fail "$IN_USE\$" "$COWVM" image convert -O qcow2 other.qcow2 top.qcow2
must_fail "$IN_USE\$" "$COWVM" image convert -O raw other.qcow2 top.qcow2
echo "ok: writing commands refused while qemu-io writes the image"

must_fail "$IN_USE; use --force-share for read-only access\$" "$COWVM" image info top.qcow2
grep -q "^cowvm: unable to open 'top.qcow2': image is in use" err.txt || { cat err.txt; fail "message form"; }
must_fail "$IN_USE; use --force-share" "$COWVM" image map top.qcow2
must_fail "$IN_USE; use --force-share" "$COWVM" image check top.qcow2
must_fail "$IN_USE; use --force-share" "$COWVM" image bench -c 16 top.qcow2
must_fail "$IN_USE; use --force-share" "$COWVM" image convert top.qcow2 copy.qcow2
must_work "$COWVM" image info -U top.qcow2
grep -q '^backing file: base.qcow2' out.txt || { cat out.txt; fail "info -U output"; }
must_work "$COWVM" image info --force-share --json --chain top.qcow2
must_work "$COWVM" image map -U top.qcow2
must_work "$COWVM" image check -U top.qcow2
must_work "$COWVM" image bench -U -c 16 top.qcow2
must_work "$COWVM" image bench -U -c 16 -i io_uring top.qcow2
must_work "$COWVM" image convert -U -O raw top.qcow2 copy.raw
[ "$(head -c 65536 copy.raw | tr -d '\042' | wc -c)" -eq 0 ] || fail "convert -U read wrong data"
"$COWVM" image check -U --repair leaks top.qcow2 >/dev/null 2>&1 && fail "check -U --repair accepted"
"$COWVM" image bench -U -w -c 1 top.qcow2 >/dev/null 2>&1 && fail "bench -U -w accepted"
echo "ok: reading commands refused without -U, work with -U"

# the backing file qemu-io holds (shared): readers fine, writers refused
must_work "$COWVM" image info base.qcow2
must_work "$COWVM" image check base.qcow2
must_fail "$NO_WRITES" "$COWVM" image bench -w -c 16 base.qcow2
must_fail "$NO_WRITES" "$COWVM" image commit other.qcow2
must_fail "$NO_WRITES" "$COWVM" image convert copy.raw base.qcow2
[ "$(md5sum < top.qcow2)" = "$sum" ] || fail "a refused command modified the image"
echo "ok: the backing file of qemu-io's image is shared for reading only"

kill "$QPID" 2>/dev/null; wait "$QPID" 2>/dev/null
wait_unlocked top.qcow2
must_work "$COWVM" image info top.qcow2
must_work "$COWVM" image commit -d top.qcow2
qemu-img check -q base.qcow2 || fail "qemu-img check after commit"
echo "ok: all free again once qemu-io ended"

# --- (b) and (c) need a VM
if ! why=$( { exec 3<>/dev/kvm; } 2>&1 ); then
	echo "SKIP: cannot open /dev/kvm: ${why##*: } (the qemu-io part passed; the VM parts did not run)"
	exit 77
fi
[ -f "$TESTGUEST" ] || fail "test guest $TESTGUEST not built"

# --- (b) a cowvm VM holds a qcow2 overlay and a raw disk
"$COWVM" image create vm.qcow2 -b base.qcow2 -F qcow2 || fail "image create"
truncate -s 8M vm.raw
start_guest "$T/b" "cowvm.test=counter" --disk "$T/vm.qcow2" --disk "$T/vm.raw"
wait_for "$T/b" '^tick 2$' 20
kill -0 "$PID" || fail "the VM ended early"
must_fail 'Failed to get shared "write" lock' qemu-img info vm.qcow2
must_fail 'Failed to get "write" lock|Failed to get shared "write" lock' qemu-io -c "write 0 4k" vm.qcow2
must_fail 'Failed to get "write" lock' qemu-io -f raw -c "write 0 4k" vm.raw
# (QEMU's raw driver takes no permission for info and shares all for -r:
# those work on a raw disk in use, as they do with a QEMU VM's)
must_work qemu-io -f raw -r -c "read 0 4k" vm.raw
must_work qemu-img info -U vm.qcow2
grep -q 'backing file: base.qcow2' out.txt || { cat out.txt; fail "qemu-img info -U output"; }
# the backing file: QEMU may read it, not write it
must_work qemu-img info base.qcow2
must_fail 'Failed to get "write" lock' qemu-io -c "write 0 4k" base.qcow2
must_fail "$IN_USE; use --force-share" "$COWVM" image info vm.qcow2
must_work "$COWVM" image info -U vm.qcow2
must_fail "$IN_USE\$" timeout -k 2 20 "$COWVM" run --kernel "$TESTGUEST" \
	--append "cowvm.test=counter" --console "file:$T/b2" --disk "$T/vm.qcow2"
must_fail "$IN_USE\$" timeout -k 2 20 "$COWVM" run --kernel "$TESTGUEST" \
	--append "cowvm.test=counter" --console "file:$T/b3" --disk "$T/vm.raw"
must_fail "$IN_USE\$" timeout -k 2 20 "$COWVM" run --kernel "$TESTGUEST" \
	--append "cowvm.test=counter" --console "file:$T/b4" --disk "$T/vm.raw,ro"
kill -0 "$PID" || fail "the VM ended while others were refused"
kill -TERM "$PID"; wait_exit "$PID" 10
wait_unlocked vm.qcow2
must_work qemu-img info -f raw vm.raw
must_work qemu-io -c "write 0 4k" vm.qcow2
echo "ok: QEMU tools respect a running cowvm VM's locks"

# --- (c) two VMs on overlays of one backing file
"$COWVM" image create o1.qcow2 -b base.qcow2 -F qcow2 || fail "image create"
"$COWVM" image create o2.qcow2 -b base.qcow2 -F qcow2 || fail "image create"
start_guest "$T/c1" "cowvm.test=counter" --disk "$T/o1.qcow2"; P1=$PID
start_guest "$T/c2" "cowvm.test=counter" --disk "$T/o2.qcow2"; P2=$PID
wait_for "$T/c1" '^tick 2$' 20
wait_for "$T/c2" '^tick 2$' 20
kill -0 "$P1" && kill -0 "$P2" || fail "a VM sharing the backing file ended"
must_work qemu-img info base.qcow2
must_work "$COWVM" image info base.qcow2
must_fail 'Failed to get "write" lock' qemu-io -c "write 0 4k" base.qcow2
must_fail "$NO_WRITES" "$COWVM" image bench -w -c 16 base.qcow2
must_fail "$IN_USE" "$COWVM" image commit o1.qcow2
kill -TERM "$P1" "$P2"; wait_exit "$P1" 10; wait_exit "$P2" 10
must_work "$COWVM" image bench -w -c 16 base.qcow2
echo "ok: two VMs share one backing file"
echo "ok"
