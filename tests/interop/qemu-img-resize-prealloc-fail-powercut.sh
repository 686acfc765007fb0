#!/bin/bash
# Power cuts of a `cowvm image resize --preallocation` that fails part way
# and releases what it placed (cow/resize.c undo_area; cow.h I14): a qcow2
# image of 512-byte clusters, 1 MiB + 16 KiB of data (its last L2 table
# has room for 32 clusters of the new area), grown to 8 MiB with
# metadata and with falloc under a file size limit (prlimit --fsize,
# SIGXFSZ ignored) at the end of the new area's run, found by a dry run
# on a copy: the run is placed and filled, its first clusters are named
# in the L2 table that exists, the first new L2 table (past the run) fails
# with EFBIG, and the undo releases the entries (discard, flush), drops
# the emptied L2 tables and the refcount blocks placed for the run (their
# table entries zeroed and synced before their own refcounts drop) and
# cuts the file (3 KiB longer than before: the grown L1 table). The
# resize is recorded under the LD_PRELOAD recorder
# (tests/helpers/shim/iolog.c) and cut at 100 points
# (tests/helpers/powercut: synced writes kept, later ones kept, lost or
# torn, also at 512-byte sectors). Asserted:
# - the resize fails naming the file and "File too large";
# - the full replay equals the file written, which `qemu-img check` finds
#   clean (no leak), with the old size, content and allocated count (the
#   named clusters released again);
# - after every cut: `qemu-img check` finds no corruption (leaks allowed),
#   the size is the old one, the content is the old one, and `cowvm image
#   check` agrees (0 or leaks only).
# timeout: 400
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v qemu-io >/dev/null 2>&1 || skip "qemu-io not installed"
command -v jq >/dev/null 2>&1 || skip "jq not installed"
command -v prlimit >/dev/null 2>&1 || skip "prlimit not installed"
need_powercut 100
cow_tmpdir

vsize() { qemu-img info --output=json "$@" | jq '."virtual-size"'; }
allocated() { qemu-img check "$1" | sed -n 's/^\([0-9]*\)\/[0-9]* = .*allocated.*/\1/p'; }

old=$(((1 << 20) + 16384)) new=$((8 << 20))
qemu-img create -q -f qcow2 -o cluster_size=512 a.qcow2 $old
qemu-io -c "write -P 0x5a 0 $old" a.qcow2 >/dev/null
qemu-img convert -O raw a.qcow2 old.raw

for m in metadata falloc; do
	# where the run ends: the host end of the last new cluster
	cp a.qcow2 dry.qcow2
	"$COWVM" image resize --preallocation $m dry.qcow2 $new >/dev/null || fail "dry run $m"
	end=$(qemu-img map --output=json dry.qcow2 |
		jq '[.[] | select(.offset != null)] | max_by(.start) | .offset + .length')
	[ -n "$end" ] && ((end > old)) || fail "dry run $m: no run end ($end)"

	cp a.qcow2 pc.qcow2
	rm -f io.log
	: >pc.mark
	(trap '' XFSZ
	 LD_PRELOAD="$SHIM" IOLOG_IMAGE="$PWD/pc.qcow2" IOLOG_MARK="$PWD/pc.mark" IOLOG_OUT="$PWD/io.log" \
		exec prlimit --fsize="$end" "$COWVM" image resize --preallocation $m pc.qcow2 $new) >err.txt 2>&1 &&
		fail "$m: the resize past the file size limit succeeded"
	grep -q "pc.qcow2" err.txt && grep -q "File too large" err.txt ||
		{ cat err.txt; fail "$m: no message naming the file and the cause"; }
	qcheck pc.qcow2
	[ "$(vsize pc.qcow2)" = "$old" ] || fail "$m: size $(vsize pc.qcow2) after the failure"
	# nothing of the run stays mapped past the old size, the file is cut
	[ "$(allocated pc.qcow2)" = "$(allocated a.qcow2)" ] ||
		fail "$m: $(allocated pc.qcow2) clusters allocated after the failure, $(allocated a.qcow2) before"
	(($(stat -c %s pc.qcow2) < $(stat -c %s a.qcow2) + 65536)) ||
		fail "$m: the file is $(stat -c %s pc.qcow2) bytes long after the failure, $(stat -c %s a.qcow2) before"
	echo "  $m: $(cat err.txt)"
	qemu-img convert -O raw pc.qcow2 pc.raw && cmp -s old.raw pc.raw || fail "$m: content changed"
	"$PC" io.log a.qcow2 crash.qcow2 clog 0 999999999 >/dev/null || fail "$m: replay"
	cmp -s crash.qcow2 pc.qcow2 || fail "$m: a full replay differs from the file written"
	for ((cut = 1; cut <= CUTS; cut++)); do
		pc_cut a.qcow2 $cut "$m"
		[ "$(vsize crash.qcow2)" = "$old" ] || fail "$m, cut $cut: size $(vsize crash.qcow2)"
		qemu-img convert -O raw crash.qcow2 crash.raw || fail "$m, cut $cut: unreadable"
		cmp -s old.raw crash.raw || fail "$m, cut $cut ($(cat pc.out)): content differs"
		"$COWVM" image check crash.qcow2 >ccheck.out 2>&1
		rc=$?
		[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || { cat ccheck.out; fail "$m, cut $cut: cowvm image check exited $rc"; }
	done
	echo "ok: $m, failing at $end bytes: $CUTS power cuts ($(wc -c <io.log) bytes recorded, file $(stat -c %s a.qcow2) -> $(stat -c %s pc.qcow2), the dry run's $(stat -c %s dry.qcow2))"
done
