#!/bin/bash
# Power-cut test of live external snapshots (storage/snapshot.c): what a
# crash of the whole machine (not just of the process, as the kill -9 of
# storage-snapshot-crash.sh, which keeps the page cache) may leave of the
# directory that holds the image and its overlays.
#
# tests/helpers/stgsnap writes tagged 4 KiB blocks through storage/,
# flushes every 1..8 writes and snapshots every 5..40 writes (half of them
# stg_snapshot_create on a second thread while the writes go on, then
# prepare + commit; the others prepare + commit alone), STGSNAP_OPS writes
# in all, on the worker-thread engine (STGSNAP_THREADS=1: io_uring would
# bypass the recorder), under the LD_PRELOAD recorder in directory mode
# (tests/helpers/shim/iolog.c, IOLOG_DIR): every write, truncate,
# fallocate and sync of every file in the directory, named or unnamed
# (O_TMPFILE), and every creation, rename, link (also of an unnamed file
# through /proc/self/fd) and unlink there and every fsync of the
# directory itself.
# Its log of what it was told (W/F/P/c/C lines) is the marker file.
# For each cut, `powercut --dir` rebuilds the directory a power cut after
# that record could leave (its header states the model: per file, data
# covered by a completed sync of that file kept, later changes kept, lost
# or torn; the namespace a journaled prefix, at least what a completed
# fsync of the directory covers; a file whose name is lost is gone, an
# unnamed file not yet linked leaves nothing), at
# the same path (the overlays name their backing files by absolute path).
# Then:
#  - stgsnap verify: the top is the last overlay whose commit returned
#    before the cut ("C k" logged; a restarted VMM opens the newest
#    overlay it recorded, and nothing is written between commit's return
#    and that line), else the base; it must open with a chain of commits +
#    1 layers, and every block (every 512-byte sector when the cut tears
#    at sectors) holds the value of its last write before the
#    last acknowledged flush ("F") or of a write made after it; an overlay
#    prepared after the top that exists at its name opens and reads the
#    same (it holds nothing of its own);
#  - `qemu-img check` passes on every layer of that chain (leaks allowed);
#  - every file at an overlay's final name (ovN.qcow2) passes `qemu-img
#    check` and its backing chain resolves with N + 1 images (never a
#    partial file at a final name);
#  - where the overlays are made unnamed (O_TMPFILE, then linkat: the
#    runs below but two) the directory holds nothing but the base image
#    and ovN.qcow2 files, each with one name: no temporary file, no second
#    name, after any cut; on the fallback (COWVM_TEST_TMPFILE_ERRNO, as
#    where O_TMPFILE is refused) temporary ".ovN.qcow2.XXXXXX" files may
#    stay: counted, and so are overlays with two names;
#  - every 7th cut, cowvm and QEMU read the top the same;
#  - the full replay (no cut) gives back exactly the directory written.
# Four runs with unnamed overlays: raw and qcow2 base images, buffered
# and STGSNAP_DIRECT=1 (cache=none: torn at 512-byte sectors; buffered:
# every other cut at 4 KiB pages, the others at sectors), 50 cuts each;
# and two on the fallback (COWVM_TEST_TMPFILE_ERRNO=95: O_TMPFILE refused
# with EOPNOTSUPP), qcow2 base, buffered, 25 cuts each: the temporary name
# renamed, and, where renameat2 refuses RENAME_NOREPLACE too
# (IOLOG_NOREPLACE_EINVAL), linked to the name and unlinked. Cuts are
# drawn by powercut: a third near a namespace operation or the making of
# an unnamed file, the others half uniform over the records, half just
# before a sync. Before them, the recorder and the
# replayer are checked on the namespace calls the snapshot flow does not
# make (below). The summary
# counts the cuts that landed inside a snapshot (its "P" logged, not its
# "C"): while its overlay was made (create on the second thread, or a
# prepare without create), in the prepare after a create, or in the commit
# (prepare's "F" logged); how many of them found the overlay at its name;
# the cuts with namespace operations not yet covered by a directory fsync
# and those that lost some; and the leftovers (for each way of making
# the overlays).
# The recorder sees only libc calls: the run must be on the worker-thread
# engine (io_uring's writes and syncs bypass it); that every flush the
# writer logged shows up as a recorded sync is checked.
# POWERCUT_SEED (default: random, printed) reproduces the writer's
# operations and the cuts drawn, not the interleaving of its threads (the
# create on the second thread, the engine's workers): on a failure the
# record (io.log, init/, log) is kept in $COWVM_BUILD/test-logs/
# snapshot-powercut-fail/ for `powercut --dir` by hand (replayed at the
# same path, $T/d: the overlays name their backing files absolutely).
# timeout: 150
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
H="$(dirname "$COWVM")/tests/helpers"
SHIM="$H/iolog.so"
PC="$H/powercut"
STGSNAP="$H/stgsnap"
[ -f "$SHIM" ] && [ -x "$PC" ] && [ -x "$STGSNAP" ] || skip "power-cut helpers not built"
cow_tmpdir
KEEP="$COWVM_SRC/$COWVM_BUILD/test-logs/snapshot-powercut-fail"
trap 'rc=$?; if [ $rc -ne 0 ] && [ -f "$T/io.log" ]; then rm -rf "$KEEP"; mkdir -p "$KEEP" &&
	cp -a "$T/io.log" "$T/init" "$T/log" "$KEEP/" 2>/dev/null && echo "record kept in $KEEP (replay dir $T/d)"; fi
	rm -rf "$T"' EXIT
SEED=${POWERCUT_SEED:-$RANDOM}
echo "POWERCUT_SEED=$SEED"
# an ASan-built stgsnap must tolerate a library loaded before its runtime
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
CUTS=${POWERCUT_CUTS:-50}
OPS=${POWERCUT_OPS:-250}

# First the recorder and replayer themselves, on the namespace calls the
# snapshot flow does not make (a rename over an existing file, link, unlink
# of a file that was there at the start, an open with O_TRUNC through a
# second name): a python3 writer in the directory, which logs to the
# marker file once each fsync of the directory has returned (S1, S2). The
# full replay is the directory it left; every cut holds one of the name
# sets the sequence passes through, and what a logged directory fsync
# covered: after S1 'a' holds its 5000 synced bytes, after S2 'a' and 'c'
# are one file and 'init1' is gone. Then two unnamed files (O_TMPFILE):
# one written, synced and closed without a name (it must never show up),
# one written, synced and linked to 't' through /proc/self/fd
# (AT_SYMLINK_FOLLOW), the directory synced (S3): 't', when there, holds
# all of it; after S3 it is there.
# (the interpreter itself, not a wrapper script: the recorder takes one
# process)
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
if [ -x "$PY" ]; then
	rm -rf d init io.log log clog
	mkdir d
	echo initial >d/init1
	cp -a d init
	: >log
	head -c 5000 /dev/zero | tr '\0' A >A5000
	LD_PRELOAD="$SHIM" IOLOG_DIR="$T/d" IOLOG_MARK="$T/log" IOLOG_OUT="$T/io.log" "$PY" -I -c '
import os, sys
os.chdir(sys.argv[1])
mark = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND)
def put(name, data, flags=os.O_CREAT | os.O_EXCL, sync=True):
    fd = os.open(name, os.O_WRONLY | flags, 0o644)
    os.write(fd, data)
    if sync:
        os.fsync(fd)
    os.close(fd)
d = os.open(".", os.O_RDONLY)
put("a", b"A" * 5000)
os.fsync(d)
os.write(mark, b"S1\n")
put("b", b"B" * 3000)
os.rename("b", "a")
os.link("a", "c")
os.unlink("init1")
put("c", b"C", os.O_TRUNC, False)
os.fsync(d)
os.write(mark, b"S2\n")
put("e", b"E" * 100, sync=False)
for name in (None, "t"):
    fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o644)
    os.write(fd, b"T" * 100)
    os.fsync(fd)
    if name:
        os.link("/proc/self/fd/%d" % fd, name, src_dir_fd=d, follow_symlinks=True)
    os.close(fd)
os.fsync(d)
os.write(mark, b"S3\n")
' "$T/d" "$T/log" || fail "namespace writer"
	mv d rec
	"$PC" --dir io.log init d clog 0 999999999 >pc.out || fail "namespace: replay"
	[ "$(cd d && ls -A | tr '\n' ' ')" = "a c e t " ] && [ "$(stat -c %h d/a)" = 2 ] && [ "$(cat d/a)" = C ] &&
		cmp -s d/e rec/e && cmp -s d/t rec/t && cmp -s clog log ||
		fail "namespace: a full replay differs: $(cat pc.out)"
	head -c 100 /dev/zero | tr '\0' T >T100
	tn=0
	for ((cut = 1; cut <= 60; cut++)); do
		rm -rf d
		"$PC" --dir io.log init d clog $((SEED * 1000 + cut)) >pc.out || fail "namespace: powercut"
		names=$(cd d && ls -A | tr '\n' ' ')
		case "$names" in
		"init1 " | "a init1 " | "a b init1 " | "a c init1 " | "a c " | "a c e " | "a c e t ") ;;
		*) fail "namespace, cut $cut ($(cat pc.out)): names $names" ;;
		esac
		# after S1 'a' is there; while 'b' is, 'a' is still the synced A file
		if grep -q S1 clog; then
			[ -e d/a ] || fail "namespace, cut $cut ($(cat pc.out)): 'a' lost after S1"
			[ ! -e d/b ] || cmp -s d/a A5000 || fail "namespace, cut $cut ($(cat pc.out)): 'a' is not what was synced"
		fi
		if grep -q S2 clog; then
			[ -e d/a ] && [ ! -e d/init1 ] && [ "$(stat -c %h d/a)" = 2 ] &&
				[ "$(stat -c %i d/a)" = "$(stat -c %i d/c)" ] ||
				fail "namespace, cut $cut ($(cat pc.out)): $names after S2"
		fi
		[ -e d/t ] && tn=$((tn + 1))
		[ ! -e d/t ] || cmp -s d/t T100 || fail "namespace, cut $cut ($(cat pc.out)): 't' is not what was synced"
		if grep -q S3 clog; then
			[ -e d/t ] || fail "namespace, cut $cut ($(cat pc.out)): 't' lost after S3"
		fi
	done
	((tn > 0 && tn < 60)) || fail "namespace: 't' there after $tn of 60 cuts"
	echo "ok: namespace calls (O_TMPFILE and its linkat too): the full replay and 60 cuts ('t' there after $tn)"
else
	echo "note: no python3: the recorder's rename-over, link and unlink are not checked here"
fi

total=0 insnap=0 insnap_named=0 leftov=0 nslost=0 nsopen=0
declare -A phase=([making]=0 [prepare]=0 [commit]=0)
declare -A tmpleft=([unnamed]=0 [rename]=0 [link]=0) twonames=([unnamed]=0 [rename]=0 [link]=0)
declare -A cutsby=([unnamed]=0 [rename]=0 [link]=0)

# the snapshot step a marker log ends in: "none" (no snapshot pending),
# "making" (its "P" logged: create on the second thread, or a prepare
# without create, before its flush returned), "prepare" (after the
# create's "c"), "commit" (prepare's "F" logged, not yet "C")
snap_phase() {
	awk '/^P /{st="making"; w=0} /^W /{if (st=="making") w=1}
	     /^c /{st="prepare"} /^F/{if (st=="prepare" || (st=="making" && !w)) st="commit"}
	     /^C /{st=""} END{print st ? st : "none"}' "$1"
}
cfgno=0
run_cfg() {   # NAME FORMAT direct|buffered [unnamed|rename|link] [CUTS]
	local name=$1 fmt=$2 direct=$3 how=${4:-unnamed} cuts=${5:-$CUTS} cut k commits lastp top n f want tear sector ops per=1
	cfgno=$((cfgno + 1))
	rm -rf d rec init io.log log clog
	mkdir d
	if [ "$fmt" = raw ]; then
		truncate -s 16M d/base.raw
	else
		"$COWVM" image create d/base.qcow2 16M >/dev/null || fail "$name: create"
	fi
	cp -a --sparse=always d init
	: >log
	STGSNAP_THREADS=1 STGSNAP_DIRECT=$([ "$direct" = direct ] && echo 1 || echo 0) STGSNAP_OPS=$OPS \
		IOLOG_NOREPLACE_EINVAL=$([ "$how" = link ] && echo 1 || echo 0) \
		COWVM_TEST_TMPFILE_ERRNO=$([ "$how" = unnamed ] && echo 0 || echo 95) \
		LD_PRELOAD="$SHIM" IOLOG_DIR="$T/d" IOLOG_MARK="$T/log" IOLOG_OUT="$T/io.log" \
		"$STGSNAP" write "d/base.$fmt" d/ov $((SEED * 10 + cfgno)) log 2>writer.err ||
		{ cat writer.err; fail "$name: recorded run failed (writer seed $((SEED * 10 + cfgno)))"; }
	n=$(grep -c '^C ' log)
	((n >= 3)) || fail "$name: only $n snapshots in the recorded run"
	mv d rec
	# the recording is complete: replaying all of it gives the directory
	"$PC" --dir io.log init d clog 0 999999999 >pc.out || fail "$name: replay"
	[ "$(cd rec && ls -A | sort)" = "$(cd d && ls -A | sort)" ] ||
		fail "$name: a full replay holds $(cd d && ls -A | tr '\n' ' '), the run left $(cd rec && ls -A | tr '\n' ' ')"
	for f in rec/* rec/.[!.]*; do
		[ -e "$f" ] || continue
		cmp -s "$f" "d/${f#rec/}" || fail "$name: a full replay of ${f#rec/} differs from the file written"
	done
	cmp -s clog log || fail "$name: a full replay's marker log differs"
	# every flush is a recorded sync (not io_uring's)
	n=$(sed -n 's/.*(\([0-9]*\) syncs).*/\1/p' pc.out)
	((${n:-0} >= $(grep -c '^F' log))) || fail "$name: ${n:-0} syncs recorded for $(grep -c '^F' log) flushes"
	ops=$(sed -n 's/.*namespace: [0-9]* of \([0-9]*\) operations.*/\1/p' pc.out)
	# each snapshot: the unnamed file linked to its name; on the
	# fallback the temporary file created, renamed (or linked and
	# unlinked)
	[ "$how" = rename ] && per=2
	[ "$how" = link ] && per=3
	[ "$ops" = $(($(grep -c '^C ' log) * per)) ] ||
		fail "$name: $ops namespace operations for $(grep -c '^C ' log) snapshots"
	for ((cut = 1; cut <= cuts; cut++)); do
		rm -rf d
		# unflushed writes torn at 4 KiB pages (blocks must be whole)
		# or, every other cut and always with cache=none, at 512-byte
		# sectors (judged per sector)
		tear=4096 sector=4096
		[ "$direct" = direct ] || ((cut % 2 == 0)) && tear=512 sector=512
		POWERCUT_TEAR=$tear "$PC" --dir io.log init d clog $((SEED * 1000 + cfgno * 100 + cut)) >pc.out ||
			fail "$name: powercut"
		grep -q "namespace: \([0-9]*\) of \1 " pc.out || nslost=$((nslost + 1))
		grep -q "of \([0-9]*\) operations kept (\1 durable)" pc.out || nsopen=$((nsopen + 1))
		STGSNAP_SECTOR=$sector "$STGSNAP" verify "d/base.$fmt" clog >verify.out 2>&1 || {
			cat verify.out; fail "$name, cut $cut ($(cat pc.out)): data check"; }
		commits=$(grep -c '^C ' clog)
		lastp=$(sed -n 's/^P \([0-9]*\) .*/\1/p' clog | tail -n 1)
		if ((${lastp:-0} > commits)); then
			insnap=$((insnap + 1))
			f=$(snap_phase clog)
			phase[$f]=$((${phase[$f]:-0} + 1))
			[ -e "d/ov$lastp.qcow2" ] && insnap_named=$((insnap_named + 1))
		fi
		# every layer of the chain the top opens
		[ "$fmt" = qcow2 ] && qcheck d/base.qcow2 leaks
		for ((k = 1; k <= commits; k++)); do
			qcheck "d/ov$k.qcow2" leaks
		done
		# every file at an overlay's final name: complete, its chain found
		for f in d/ov*.qcow2; do
			[ -e "$f" ] || continue
			k=${f#d/ov}
			k=${k%.qcow2}
			qcheck "$f" leaks
			n=$(qemu-img info -U --backing-chain "$f" 2>info.err | grep -c '^image:')
			[ "$n" -eq $((k + 1)) ] || { cat info.err
				fail "$name, cut $cut ($(cat pc.out)): qemu-img info --backing-chain $f: $n images, expected $((k + 1))"; }
			((k > commits)) && leftov=$((leftov + 1))
		done
		n=$(find d -maxdepth 1 -name '.ov*.qcow2.??????' | wc -l)
		tmpleft[$how]=$((${tmpleft[$how]} + n))
		k=$(find d -maxdepth 1 -type f -links +1 | wc -l)
		twonames[$how]=$((${twonames[$how]} + k))
		cutsby[$how]=$((${cutsby[$how]} + 1))
		if [ "$how" = unnamed ]; then
			# nothing but the base and whole overlays, one name each
			f=$(cd d && ls -A | grep -v -x -e "base\.$fmt" -e 'ov[0-9]*\.qcow2' | tr '\n' ' ')
			[ -z "$f" ] && [ "$k" = 0 ] ||
				fail "$name, cut $cut ($(cat pc.out)): left in the directory: ${f:-none}; $k files with two names"
		fi
		top="d/base.$fmt"
		((commits)) && top="d/ov$commits.qcow2"
		# every 7th cut: QEMU reads the chain as cowvm does
		if ((cut % 7 == 0)); then
			rm -f top.raw
			"$COWVM" image convert -U "$top" top.raw -O raw >/dev/null &&
				qemu-img compare -q -U "$top" top.raw ||
				fail "$name, cut $cut: qemu-img and cowvm read $top differently"
		fi
		total=$((total + 1))
	done
	echo "ok: $name: $cuts cuts of a run of $OPS writes, $(grep -c '^C ' log) snapshots, $(grep -c '^F' log) flushes, $ops namespace operations ($(wc -c <io.log) bytes recorded); last: $(cat pc.out)"
}
run_cfg "raw base" raw buffered
run_cfg "qcow2 base" qcow2 buffered
# without O_TMPFILE: a temporary name, renamed without replacing
run_cfg "qcow2 base, no O_TMPFILE: temporary name renamed" qcow2 buffered rename $((CUTS / 2))
# where the file system refuses RENAME_NOREPLACE too (the recorder says
# EINVAL) util/io.c links the overlay to its name and unlinks the
# temporary one
run_cfg "qcow2 base, no O_TMPFILE: link + unlink instead of the rename" qcow2 buffered link $((CUTS / 2))
if dd if=/dev/zero of=probe bs=4096 count=1 oflag=direct 2>/dev/null; then
	run_cfg "raw base, cache=none" raw direct
	run_cfg "qcow2 base, cache=none" qcow2 direct
else
	echo "note: no O_DIRECT in $T: the cache=none runs are not made"
fi
rm -f probe
((total >= 2 * CUTS)) || fail "only $total cuts"
echo "ok: $total power cuts ($insnap inside a snapshot: ${phase[making]} while its overlay was made, ${phase[prepare]} in the prepare after a create, ${phase[commit]} in the commit; its overlay at its name in $insnap_named of them; $nsopen cuts with namespace operations not covered by a directory fsync, $nslost of them lost some; $leftov overlays left uncommitted)"
for how in unnamed rename link; do
	echo "ok: overlays made $how: ${cutsby[$how]} cuts, ${tmpleft[$how]} temporary files left, ${twonames[$how]} files with two names"
done
