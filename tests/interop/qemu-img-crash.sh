#!/bin/bash
# Crash test: kill -9 at >= 200 random points while cow/ does random tagged
# writes, write-zeroes and compressed writes with a flush every 1..8 ops
# (host-side writer: tests/helpers/cowio crashwrite). After each kill:
#  - `qemu-img check` reports no corruption (leaks allowed);
#  - every sector holds what the flushed ops say, or a value from an op
#    issued after the last completed flush (cowio crashverify);
#  - every 10th kill `cowvm image check --repair leaks` runs and afterwards
#    `qemu-img check` reports no leaks either.
# Three configurations: 64 KiB clusters, 512-byte clusters (which forces new
# refcount blocks and refcount-table growth while being killed), and 64 KiB
# clusters with O_DIRECT (cache=none: the file's size is kept ahead of the
# data, so a kill leaves a sparse tail, cow.h I12). A fourth: 64 KiB
# clusters under internal snapshots (cow.h I16): `qemu-img snapshot -c`
# before the first kill and after every 10th, and after every kill each
# snapshot must read back exactly as it did when it was taken.
# timeout: 480
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
cow_tmpdir

kills=0
run_cfg() {   # CLUSTER ITERATIONS [direct]
	local cs=$1 iters=$2 i pid rc
	local nsnap=0 s
	export COWIO_DIRECT=0
	[ "${3:-}" = direct ] && COWIO_DIRECT=1
	rm -f img.qcow2 log base snap*.raw
	"$COWVM" image create img.qcow2 16M --cluster-size "$cs" || fail create
	for ((i = 1; i <= iters; i++)); do
		if [ "${3:-}" = snap ] && ((i % 10 == 1)); then
			nsnap=$((nsnap + 1))
			qemu-img snapshot -c "s$nsnap" img.qcow2 || fail "snapshot s$nsnap"
			qemu-img convert -l "snapshot.name=s$nsnap" -O raw img.qcow2 "snap$nsnap.raw" ||
				fail "read snapshot s$nsnap"
		fi
		rm -f log
		"$COWIO" crashwrite img.qcow2 "$i" log 2>writer.err &
		pid=$!
		sleep "0.0$((RANDOM % 7 + 1))$((RANDOM % 10))"
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		rc=$?
		if [ "$rc" -ne 137 ]; then
			cat writer.err
			fail "writer ended by itself (exit $rc) in iteration $i"
		fi
		kills=$((kills + 1))
		qcheck img.qcow2 leaks
		"$COWIO" crashverify img.qcow2 "$i" log base >verify.out 2>&1 || {
			cat verify.out; fail "data check after kill $i (cluster $cs)"; }
		for ((s = 1; s <= nsnap; s++)); do
			qemu-img convert -l "snapshot.name=s$s" -O raw img.qcow2 snap.raw &&
				cmp -s snap.raw "snap$s.raw" || fail "snapshot s$s changed by kill $i"
		done
		if ((i % 10 == 0)); then
			"$COWVM" image check --repair leaks img.qcow2 >repair.out
			rc=$?
			[ "$rc" -eq 0 ] || { cat repair.out; fail "repair leaks left exit $rc"; }
			qcheck img.qcow2
		fi
	done
	s=""
	((nsnap)) && s=", $nsnap snapshots intact"
	echo "ok: cluster $cs${3:+ ($3)}: $iters kills$s, last: $(cat verify.out)"
}
run_cfg 64K 120
run_cfg 512 90
if dd if=/dev/zero of=probe bs=4096 count=1 oflag=direct 2>/dev/null; then
	run_cfg 64K 40 direct
else
	echo "note: no O_DIRECT in $T: the cache=none configuration is not run"
fi
rm -f probe
run_cfg 64K 40 snap
[ "$kills" -ge 200 ] || fail "only $kills kill points"
echo "ok: $kills kill points"
