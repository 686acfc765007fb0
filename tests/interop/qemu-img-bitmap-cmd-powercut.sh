#!/bin/bash
# Power cuts of `cowvm image bitmap` (cow/bitmap-ops.c, stored at close by
# cow_bitmaps_store, cow.h I18): each call is recorded under the
# LD_PRELOAD recorder (tests/helpers/shim/iolog.c) and cut at CUTS points
# (tests/helpers/powercut: synced writes kept, later ones kept, lost or
# torn at 512-byte sectors). After every cut `qemu-img check` finds no
# corruption (leaks allowed) and the image holds the bitmap set from
# before the call or the one after it (by their names): every bitmap not
# in use has the dirty areas (qemu-nbd -B) it has in that set. Cases: add
# to an image with bitmaps (count and size written in place), add the
# first bitmap and remove the last (the header rewritten), remove one in
# use (inconsistent, after a kill -9 of qemu-io), add with a merge. The
# header rewrite clears autoclear bit 0 first and sets it last, so a cut
# between may also leave no bitmap at all (QEMU warns that a program
# without bitmap support changed the file; leaks): counted, accepted as
# the old set when it had none and as the new one when it has none.
# timeout: 600
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v qemu-io >/dev/null 2>&1 || skip "qemu-io not installed"
command -v qemu-nbd >/dev/null 2>&1 || skip "qemu-nbd not installed"
command -v jq >/dev/null 2>&1 || skip "jq not installed"
need_powercut 30
cow_tmpdir
M=$((1 << 20))

# (a cut between the steps of a header rewrite, bitmaps.c bm_hdr_switch,
# leaves an extension with autoclear bit 0 clear: no bitmap, QEMU warns;
# counted in warn.log)
names() { qemu-img info --output=json "$1" 2>>warn.log | jq -c '[."format-specific".data.bitmaps[]?.name] | sort'; }
consistent() {
	qemu-img info --output=json "$1" 2>/dev/null |
		jq -r '."format-specific".data.bitmaps[]? | select(.flags | index("in-use") | not) | .name'
}

# run NAME BASE ARGS...: `cowvm image bitmap ARGS` (IMG: the image) on
# BASE, recorded, then the cuts
run() {
	local name=$1 base=$2 cut b d k n_old=0 n_new=0 n_in_use=0 n_cons=0
	shift 2
	declare -A dirty=()
	local sname=() st w0
	w0=$(cat warn.log 2>/dev/null | grep -c "lacking bitmap support")
	# the two sets: before (old) and after (new) the call
	cp "$base" old.qcow2
	cp "$base" new.qcow2
	"$COWVM" image bitmap "${@/#IMG/new.qcow2}" || fail "$name: the call failed"
	qcheck new.qcow2
	for st in old new; do
		sname+=("$(names $st.qcow2)")
		for b in $(consistent $st.qcow2); do
			dirty[$st.$b]=$(bm_dirty $st.qcow2 "$b")
		done
	done
	[ "${sname[0]}" != "${sname[1]}" ] || fail "$name: the call changed no name (the test tells the sets apart by them)"
	cp "$base" pc.qcow2
	rm -f io.log
	: >pc.mark
	LD_PRELOAD="$SHIM" IOLOG_IMAGE="$PWD/pc.qcow2" IOLOG_MARK="$PWD/pc.mark" IOLOG_OUT="$PWD/io.log" \
		"$COWVM" image bitmap "${@/#IMG/pc.qcow2}" || fail "$name: recorded call failed"
	qcheck pc.qcow2
	"$PC" io.log "$base" crash.qcow2 clog 0 999999999 >/dev/null || fail "$name: replay"
	cmp -s crash.qcow2 pc.qcow2 || fail "$name: a full replay differs from the file written"
	for ((cut = 1; cut <= CUTS; cut++)); do
		pc_cut "$base" $cut "$name"
		d=$(names crash.qcow2) || fail "$name, cut $cut: qemu-img info fails"
		if [ "$d" = "${sname[0]}" ]; then
			st=old n_old=$((n_old + 1))
		elif [ "$d" = "${sname[1]}" ]; then
			st=new n_new=$((n_new + 1))
		else
			fail "$name, cut $cut ($(cat pc.out)): bitmaps $d are neither the old set ${sname[0]} nor the new ${sname[1]}"
		fi
		k=$(consistent crash.qcow2)
		n_in_use=$((n_in_use + $(echo "$d" | jq length) - $(printf '%s' "$k" | grep -c .)))
		for b in $k; do
			[ -n "${dirty[$st.$b]+x}" ] ||
				fail "$name, cut $cut ($(cat pc.out)): bitmap $b consistent, but it is in use in the $st set"
			[ "$(bm_dirty crash.qcow2 "$b")" = "${dirty[$st.$b]}" ] ||
				fail "$name, cut $cut ($(cat pc.out)): bitmap $b: dirty $(bm_dirty crash.qcow2 "$b"), the $st set has ${dirty[$st.$b]}"
			n_cons=$((n_cons + 1))
		done
	done
	echo "ok: $name: $CUTS power cuts ($(wc -c <io.log) bytes recorded): old set $n_old, new set $n_new; bitmaps in use $n_in_use times, consistent with the set's bits $n_cons times; between the steps of a header rewrite (no bitmap, QEMU warns) $(($(grep -c "lacking bitmap support" warn.log) - w0)) times"
}

# 16 MiB, 4 KiB clusters (a bitmap of 512 B granularity spans several
# clusters of bits), two bitmaps with bits from QEMU's writes
qemu-img create -q -f qcow2 -o cluster_size=4096 two.qcow2 16M
qemu-img bitmap --add -g 512 two.qcow2 b0
qemu-img bitmap --add -g 64k two.qcow2 b1
qemu-io -c "write -P 0x11 0 64k" -c "write -P 0x22 6M 100k" -c "write 15M 1M" two.qcow2 >/dev/null ||
	fail "qemu-io"
qemu-img create -q -f qcow2 -o cluster_size=4096 none.qcow2 16M
qemu-io -c "write -P 0x33 1M 64k" none.qcow2 >/dev/null || fail "qemu-io"
qemu-img create -q -f qcow2 one.qcow2 16M
qemu-img bitmap --add one.qcow2 last
qemu-io -c "write -P 0x44 3M 4k" one.qcow2 >/dev/null || fail "qemu-io"
# in use: qemu-io killed while it has the image open
cp two.qcow2 inuse.qcow2
qemu-io -c "write -P 0x55 $((2 * M)) 64k" -c "sleep 100000" inuse.qcow2 >/dev/null 2>&1 &
p=$!
wait_locked inuse.qcow2 || fail "qemu-io did not open inuse.qcow2"
sleep 0.5
{ kill -9 $p; wait $p; } 2>/dev/null
[ -z "$(consistent inuse.qcow2)" ] || fail "kill -9: bitmaps not in use: $(consistent inuse.qcow2)"

run "add to an image with bitmaps" two.qcow2 --add -g 4k IMG new
run "add with a merge" two.qcow2 --add -g 1M --merge b0 IMG new
run "remove one of two" two.qcow2 --remove IMG b0
run "add the first bitmap" none.qcow2 --add IMG first
run "remove the last bitmap" one.qcow2 --remove IMG last
run "remove one in use" inuse.qcow2 --remove IMG b1
echo "PASS"
