#!/bin/bash
# Power cuts of a cowvm session that tracks persistent dirty bitmaps
# (cow.h I18, cow/bitmaps.c): `cowio ops` writes (write, write-zeroes,
# discard, compressed) into an image with bitmaps made by qemu-img, stores
# them at close (in the second case also at an external snapshot's check
# without attach, then writes more; in the third and fourth it shrinks or
# grows the image between writes), recorded under the LD_PRELOAD recorder
# (tests/helpers/shim/iolog.c) and cut at 100 points each
# (tests/helpers/powercut: synced writes kept, later ones kept, lost or
# torn, also at 512-byte sectors). After every cut `qemu-img check` finds
# no corruption (leaks allowed), and every bitmap is in use or consistent:
# its dirty areas (qemu-nbd -B) are those of one of the moments it was
# consistent (before the session; after a store) and the data is exactly
# the data of that moment; the disabled bitmap never changes.
# timeout: 400
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v qemu-io >/dev/null 2>&1 || skip "qemu-io not installed"
command -v qemu-nbd >/dev/null 2>&1 || skip "qemu-nbd not installed"
command -v jq >/dev/null 2>&1 || skip "jq not installed"
need_powercut 100
cow_tmpdir
M=$((1 << 20)) K=1024

# 8 MiB, 4 KiB clusters; b0 512 B (2 clusters of bits), b1 64 KiB, both
# enabled with bits from QEMU's writes; off disabled with bits
qemu-img create -q -f qcow2 -o cluster_size=4096 base.qcow2 8M
qemu-img bitmap --add -g 512 base.qcow2 b0
qemu-img bitmap --add -g 64k base.qcow2 b1
qemu-img bitmap --add -g 64k base.qcow2 off
qemu-io -c "write -P 0x11 0 64k" -c "write -P 0x22 6M 100k" base.qcow2 >/dev/null || fail "qemu-io"
qemu-img bitmap --disable base.qcow2 off
BMS=(b0 b1 off)

P1=(w:100:5000 z:$((M + 3)):3000 u:$((2 * M)):$((64 * K)) d:$((3 * M)):$((128 * K))
    c:$((4 * M)):$((16 * K)) w:$((8 * M - 700)):700)
P2=(w:$((5 * M)):$((200 * K)) w:$((7 * M + 1)):1)

# run NAME OPS...: the recorded session, then the cuts; the states a
# consistent bitmap may show are the prefixes of OPS ending before an O:
# or at the end (each made on a copy: its data and its bitmaps)
run() {
	local name=$1 cut rc st b d f ok k ops=() states=(0)
	shift
	ops=("$@")
	for ((k = 0; k < ${#ops[@]}; k++)); do
		[ "${ops[k]:0:2}" = O: ] && states+=("$k")
	done
	states+=(${#ops[@]})
	declare -A sraw=() sbm=()
	for st in "${states[@]}"; do
		cp base.qcow2 s.qcow2
		rm -f ovl.qcow2
		qemu-img create -q -f qcow2 -b s.qcow2 -F qcow2 ovl.qcow2
		if [ "$st" -gt 0 ]; then
			"$COWIO" ops s.qcow2 "${ops[@]:0:st}" >/dev/null ||
				fail "$name: cowio ops for state $st"
		fi
		qemu-img convert -O raw s.qcow2 s$st.raw
		for b in "${BMS[@]}"; do
			sbm[$st.$b]=$(bm_dirty s.qcow2 "$b")
		done
	done
	cp base.qcow2 pc.qcow2
	rm -f ovl.qcow2 io.log
	qemu-img create -q -f qcow2 -b pc.qcow2 -F qcow2 ovl.qcow2
	: >pc.mark
	LD_PRELOAD="$SHIM" IOLOG_IMAGE="$PWD/pc.qcow2" IOLOG_MARK="$PWD/pc.mark" IOLOG_OUT="$PWD/io.log" \
		"$COWIO" ops pc.qcow2 "${ops[@]}" || fail "$name: recorded session failed"
	qcheck pc.qcow2
	"$PC" io.log base.qcow2 crash.qcow2 clog 0 999999999 >/dev/null || fail "$name: replay"
	cmp -s crash.qcow2 pc.qcow2 || fail "$name: a full replay differs from the file written"
	local n_in_use=0 n_cons=0
	for ((cut = 1; cut <= CUTS; cut++)); do
		pc_cut base.qcow2 $cut "$name"
		qemu-img convert -O raw crash.qcow2 crash.raw || fail "$name, cut $cut: unreadable"
		f=$(qemu-img info --output=json crash.qcow2 |
			jq -r '[."format-specific".data.bitmaps[] | .name + ":" + (.flags | join(","))] | join(" ")')
		for b in "${BMS[@]}"; do
			case " $f " in
			*" $b:in-use"*) n_in_use=$((n_in_use + 1)); continue ;;
			esac
			d=$(bm_dirty crash.qcow2 "$b")
			ok=
			for st in "${states[@]}"; do
				if [ "$d" = "${sbm[$st.$b]}" ] && cmp -s s$st.raw crash.raw; then
					ok=$st
					break
				fi
			done
			[ -n "$ok" ] || fail "$name, cut $cut ($(cat pc.out)): bitmap $b consistent, dirty $d, but no state has those bits and this data (flags: $f)"
			n_cons=$((n_cons + 1))
		done
	done
	echo "ok: $name: $CUTS power cuts ($(wc -c <io.log) bytes recorded): bitmaps in use $n_in_use times, consistent (a state matched) $n_cons times"
}

run "writes, store at close" "${P1[@]}"
run "writes, store at a snapshot's check, writes, store at close" "${P1[@]}" O:ovl.qcow2 "${P2[@]}"
# resized between writes (not COW_O_KEEP_BITMAPS): the bitmaps follow the
# size in memory, stored at close with tables for the new size
run "writes, shrink, writes, store at close" "${P1[@]}" s:$((5 * M + 512)) w:$((M + 5)):10
run "writes, grow, writes, store at close" "${P1[@]}" g:$((12 * M)) w:$((10 * M)):4096
echo "PASS"
