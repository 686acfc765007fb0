#!/bin/bash
# Crash test of external snapshots (storage/snapshot.c): kill -9 at >= 100
# random points while tests/helpers/stgsnap writes tagged blocks through
# storage/, flushes every 1..8 writes and snapshots every 5..40 writes
# (half of them stg_snapshot_create on a second thread while the writes
# go on, then prepare + commit; the others prepare + commit alone: a chain
# that grows while being killed; a kill may land in a write, a flush, the
# overlay's creation, its fsyncs, the linkat that names it, or the
# switch). After each
# kill:
#  - stgsnap verify: through the top (the last overlay the writer saw
#    committed, else the base image), every block holds what the last
#    completed flush says or a value written after it, and the chain depth
#    is the commits + 1; an overlay prepared but not committed (or whose
#    commit was not yet logged) that opens as qcow2 reads the same (it holds
#    nothing of its own: a leftover is harmless);
#  - `qemu-img check` of every qcow2 layer of the chain: no corruption
#    (leaks allowed: a kill -9 may leave them);
#  - the name of an overlay being made when the kill came either does not
#    exist or holds a complete overlay (made unnamed, O_TMPFILE, and
#    linked there once made): `qemu-img check` passes and its backing file
#    is the layer below (the base, or the previous overlay), found by
#    --backing-chain; nothing else is left: no temporary file (a
#    dot-file), no second name of an overlay (where O_TMPFILE is refused,
#    storage/snapshot.c falls back to temporary names, which a kill may
#    leave: tests/unit/test-stg-snapshot-create.c and
#    storage-snapshot-powercut.sh test that path);
#  - `qemu-img info --backing-chain` of the top finds every layer by the
#    backing names written (the base is opened through a symlink and the
#    overlays named sub/../ovN.qcow2, relative: the names must be absolute
#    and resolved);
#  - every 5th kill, QEMU reads the top as cowvm does (cowvm image convert
#    to raw, qemu-img compare).
# Four configurations: qcow2 base (io_uring), raw base (becomes the raw
# backing layer of the first overlay), qcow2 with O_DIRECT (if the file
# system has it), raw on the worker-thread engine. STGSNAP_SEED reproduces
# a run (printed on failure). Last, prepare must sync an existing overlay
# (STG_SNAP_EXISTING) too, file and directory, and a commit whose
# fdatasync fails must fail every later flush of the device (see there),
# and so must a create whose push of the image's data fails.
# timeout: 110
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
STGSNAP="$(dirname "$COWVM")/tests/helpers/stgsnap"
[ -x "$STGSNAP" ] || skip "test helper $STGSNAP not built"
cow_tmpdir
SEED=${STGSNAP_SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$SEED
trap 'rc=$?; [ $rc -ne 0 ] && echo "seed: STGSNAP_SEED=$SEED"; rm -rf "$T"; exit $rc' EXIT

kills=0
insnap=0
leftov=0
tmpleft=0
run_cfg() {   # NAME FORMAT ITERATIONS [direct|threads]
	local name=$1 fmt=$2 iters=$3 i pid rc k commits top
	export STGSNAP_DIRECT=0 STGSNAP_THREADS=0
	[ "${4:-}" = direct ] && STGSNAP_DIRECT=1
	[ "${4:-}" = threads ] && STGSNAP_THREADS=1
	for ((i = 1; i <= iters; i++)); do
		rm -rf base.* link.* ov*.qcow2 sub log
		mkdir sub
		if [ "$fmt" = raw ]; then
			truncate -s 16M base.raw
		else
			"$COWVM" image create base.qcow2 16M >/dev/null || fail create
		fi
		ln -s "base.$fmt" "link.$fmt"
		"$STGSNAP" write "link.$fmt" sub/../ov "$((SEED + i))" log 2>writer.err &
		pid=$!
		sleep "0.0$((RANDOM % 9))$((RANDOM % 10))"
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		rc=$?
		if [ "$rc" -ne 137 ]; then
			cat writer.err
			fail "$name: writer ended by itself (exit $rc) in iteration $i (writer seed $((SEED + i)))"
		fi
		kills=$((kills + 1))
		"$STGSNAP" verify "link.$fmt" log >verify.out 2>&1 || {
			cat verify.out; fail "$name: data check after kill $i (writer seed $((SEED + i)))"; }
		commits=0 lastp=0
		[ -f log ] && commits=$(grep -c '^C ' log) &&
			lastp=$(sed -n 's/^P \([0-9]*\) .*/\1/p' log | tail -n 1)
		# killed after a "P" without its "C": in create (the writes
		# going on), prepare or commit
		((${lastp:-0} > commits)) && insnap=$((insnap + 1))
		# the overlay being made: absent, or complete and on the layer
		# below
		for ((k = commits + 1; k <= ${lastp:-0}; k++)); do
			[ -e "ov$k.qcow2" ] || continue
			qcheck "ov$k.qcow2" leaks
			want="$T/base.$fmt"
			((k > 1)) && want="$T/ov$((k - 1)).qcow2"
			qemu-img info -U "ov$k.qcow2" | grep -qx "backing file: $want" ||
				fail "$name: leftover ov$k.qcow2's backing file is not $want (kill $i)"
			n=$(qemu-img info -U --backing-chain "ov$k.qcow2" 2>info.err | grep -c '^image:')
			[ "$n" -eq $((k + 1)) ] || { cat info.err
				fail "$name: qemu-img info --backing-chain ov$k.qcow2: $n images, expected $((k + 1))"; }
			leftov=$((leftov + 1))
		done
		n=$(find . -maxdepth 1 -mindepth 1 -name '.*' | wc -l)
		tmpleft=$((tmpleft + n))
		((n == 0)) || fail "$name: kill $i left $(find . -maxdepth 1 -mindepth 1 -name '.*' | tr '\n' ' ')"
		n=$(find . -maxdepth 1 -type f -links +1 | wc -l)
		((n == 0)) || fail "$name: kill $i left $n files with two names"
		top="link.$fmt"
		((commits)) && top="ov$commits.qcow2"
		[ "$fmt" = qcow2 ] && qcheck base.qcow2 leaks
		for ((k = 1; k <= commits; k++)); do
			qcheck "ov$k.qcow2" leaks
		done
		n=$(qemu-img info -U --backing-chain "$top" 2>info.err | grep -c '^image:')
		[ "$n" -eq $((commits + 1)) ] || { cat info.err
			fail "$name: qemu-img info --backing-chain $top: $n images, expected $((commits + 1))"; }
		((commits)) && { qemu-img info -U "ov1.qcow2" | grep -qx "backing file: $T/base.$fmt" ||
			fail "$name: ov1.qcow2's backing file is not $T/base.$fmt"; }
		# every 5th kill: QEMU reads the chain as cow/ does
		if ((i % 5 == 0)); then
			rm -f top.raw
			"$COWVM" image convert -U "$top" top.raw -O raw >/dev/null &&
				qemu-img compare -q -U "$top" top.raw ||
				fail "$name: qemu-img and cowvm read $top differently after kill $i"
		fi
		last="$commits commits; $(grep -c '^leftover' verify.out) leftover"
	done
	echo "ok: $name: $iters kills, last: $last"
}
run_cfg qcow2 qcow2 30
run_cfg raw raw 25
if dd if=/dev/zero of=probe bs=4096 count=1 oflag=direct 2>/dev/null; then
	run_cfg qcow2-direct qcow2 25 direct
else
	echo "note: no O_DIRECT in $T: the cache=none configuration is not run"
	run_cfg qcow2-more qcow2 25
fi
rm -f probe
run_cfg raw-threads raw 20 threads
[ "$kills" -ge 100 ] || fail "only $kills kill points"

# An existing overlay (STG_SNAP_EXISTING, made by qemu-img, which syncs
# nothing) is made durable, file and directory, by prepare before the
# image is frozen: otherwise a power cut after the switch could lose the
# overlay's header or its directory entry, and with them every write
# acknowledged since. Under tests/helpers/failsync.so (the flag present:
# the next fsync/fdatasync fails; a raw device on the io_uring engine
# flushes without a libc call) prepare must fail on that sync, naming the
# overlay.
FAILSYNC="$(dirname "$COWVM")/tests/helpers/failsync.so"
[ -f "$FAILSYNC" ] || fail "$FAILSYNC not built"
# under ASan the shim comes before its runtime: allowed (as in storage-enospc)
shim() { ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
	LD_PRELOAD="$FAILSYNC" FAILSYNC_FLAG="$T/syncflag" "$@"; }
rm -rf base.* link.* ov*.qcow2 sub log
truncate -s 16M base.raw
qemu-img create -q -f qcow2 -b "$T/base.raw" -F raw ov1.qcow2 || fail "qemu-img create"
touch syncflag
out=$(shim "$STGSNAP" existing base.raw ov1.qcow2)
rc=$?
[ "$rc" -eq 3 ] && [[ "$out" == *"unable to make 'ov1.qcow2' durable"* ]] ||
	fail "existing overlay: prepare did not sync it (exit $rc: $out)"
[ -e ov1.qcow2 ] || fail "existing overlay removed by the failed prepare"
"$STGSNAP" existing base.raw ov1.qcow2 >out.txt || { cat out.txt; fail "existing overlay refused"; }
echo "ok: an existing overlay is synced by prepare ($out)"

# A commit whose fdatasync of the image fails (cow_overlay_check) leaves
# the device on its image: every later flush of it must fail, as after any
# failed flush (storage/blockdev.h), since Linux reports the error once.
rm -f ov1.qcow2 base.raw
truncate -s 16M base.raw
out=$(shim "$STGSNAP" commitfail base.raw ov1.qcow2 "$T/syncflag")
rc=$?
[ "$rc" -eq 0 ] || fail "a failed commit's fdatasync: exit $rc: $out"
[ -e ov1.qcow2 ] && fail "the overlay of the failed commit is left"
echo "ok: a failed commit's fdatasync fails every later flush ($(echo "$out" | tail -n 1))"
# A create whose push of the image's data (fdatasync through its own
# descriptor) fails: create fails, leaves nothing at the overlay's name,
# and every later flush of the device fails (Linux may have reported the
# writeback error to create's descriptor only).
rm -f ov1.qcow2 base.raw syncflag
truncate -s 16M base.raw
out=$(shim "$STGSNAP" createfail base.raw ov1.qcow2 "$T/syncflag")
rc=$?
[ "$rc" -eq 0 ] || fail "a failed create's fdatasync: exit $rc: $out"
[ -e ov1.qcow2 ] && fail "the overlay of the failed create is left"
n=$(find . -maxdepth 1 -name '.ov1.qcow2.??????' | wc -l)
[ "$n" -eq 0 ] || fail "the failed create left $n temporary files"
echo "ok: a failed create's fdatasync fails it and every later flush ($(echo "$out" | tail -n 1))"
echo "ok: $kills kill points ($insnap inside a snapshot's create, prepare or commit; $leftov complete overlays left uncommitted, $tmpleft temporary files left)"
