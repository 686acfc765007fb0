#!/bin/bash
# Power cuts of `cowvm image snapshot -c / -d / -a` (cow/snapshot.c: the
# switch to the new state is one header write, the image carries the dirty
# bit from before the first refcount change until all is durable): each
# call is recorded under the LD_PRELOAD recorder
# (tests/helpers/shim/iolog.c) and cut at CUTS points (tests/helpers/
# powercut: synced writes kept, later ones kept, lost or torn, odd cuts
# whole, even ones at 512-byte sectors). After every cut:
# - `qemu-img check` finds no corruption (leaks allowed), or the header's
#   dirty bit is set (then COPIED/refcount mismatches are allowed: counted,
#   the image repaired, in turn, by `cowvm image check --repair all`,
#   `qemu-img check -r all`, cowvm's writable open (cow_check) or QEMU's,
#   and then `qemu-img check` must be clean and the bit clear);
# - the snapshot list (IDs and names) is the old or the new one;
# - the active disk reads as before the call, or (-a, by the header's L1
#   offset: the switch happened) as the snapshot, with its size;
# - every snapshot in the list reads as it did before the call (the one
#   -c makes, as the active disk did);
# - a write over the whole active disk (qemu-io, or cowvm image convert -n)
#   then reads back, checks clean and changes no snapshot (a stale COPIED
#   flag would let it write into a cluster a snapshot shares).
# Cases: create beside an earlier snapshot (tables already shared), the
# first snapshot, delete one partly shared with the active disk and another
# snapshot and partly its own, delete the last one (table offset 0), apply
# (same size), apply one taken before a grow (size and L1 size change,
# 8 KiB clusters), create/delete over compressed clusters (qemu-img
# convert -c), apply/delete on 4 KiB clusters (8 L2 tables walked), and
# create/apply on 512-byte clusters with the file just below what the
# refcount table covers, so that the call grows and moves the table.
# The full replay must equal the file cowvm wrote, which checks clean
# (no leak) and is in the new state. Each case prints how many cuts left
# the old and the new state, the dirty bit set (and qemu-img check
# errors under it), leaks only. About 3 minutes with 40 cuts on 2 CPUs
# (POWERCUT_CUTS, POWERCUT_SEED to repeat a run).
# timeout: 480
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v qemu-io >/dev/null 2>&1 || skip "qemu-io not installed"
command -v jq >/dev/null 2>&1 || skip "jq not installed"
need_powercut 40
cow_tmpdir
M=$((1 << 20))

snaplist() { qemu-img info --output=json "$1" | jq -c '[.snapshots[]? | [.id, .name]]'; }
vsize() { qemu-img info --output=json "$1" | jq '."virtual-size"'; }
is_dirty() { (($(get_be "$1" 72 8) & 1)); }
l1_off() { echo $(($(get_be "$1" 40 8))); }

# same_raw A B: two raw files read alike (a shorter one as if zero-padded,
# as a snapshot of a smaller disk reads)
same_raw() {
	if [ "$(stat -c %s "$1")" = "$(stat -c %s "$2")" ]; then
		cmp -s "$1" "$2"
	else
		qemu-img compare -q -f raw -F raw "$1" "$2"
	fi
}

keep_fail() {   # MESSAGE: keep the image (KEEP, default crash.qcow2), fail
	cp "${KEEP:-crash.qcow2}" "$COWVM_SRC/$COWVM_BUILD/test-logs/pc-fail.qcow2" 2>/dev/null
	fail "$*"
}

# verify IMG WHAT: the state of IMG (ST: old or new; its list, active
# content and size, every snapshot's content, against the references;
# the list and size in V_LIST, V_SIZE)
verify() {
	local img=$1 what=$2 l id sz ids
	{ read -r sz && read -r l && read -r ids; } < <(qemu-img info --output=json "$img" |
		jq -r '."virtual-size", ([.snapshots[]? | [.id, .name]] | tojson), ([.snapshots[]?.id] | join(" "))') ||
		keep_fail "$what: qemu-img info fails"
	if [ "$OP" = -a ]; then
		[ "$l" = "$L_OLD" ] || keep_fail "$what: snapshot list $l, not $L_OLD"
		if [ "$(l1_off "$img")" = "$L1_OLD" ]; then ST=old; else ST=new; fi
	elif [ "$l" = "$L_OLD" ]; then
		ST=old
	elif [ "$l" = "$L_NEW" ]; then
		ST=new
	else
		keep_fail "$what: snapshot list $l is neither the old $L_OLD nor the new $L_NEW"
	fi
	if [ "$OP" = -a ] && [ $ST = new ]; then
		[ "$sz" = "$SZ_NEW" ] || keep_fail "$what: applied, but the size is $sz, not $SZ_NEW"
		qemu-img compare -q ref.$SN_ID.raw "$img" || keep_fail "$what: applied, but the active disk does not read as snapshot $SN_ID"
	else
		[ "$sz" = "$SZ_OLD" ] || keep_fail "$what ($ST state): the size is $sz, not $SZ_OLD"
		qemu-img compare -q ref.active.raw "$img" || keep_fail "$what ($ST state): the active disk changed"
	fi
	V_LIST=$l V_SIZE=$sz V_IDS=$ids
	for id in $ids; do
		qemu-img convert -l "snapshot.id=$id" -O raw "$img" snap.raw || keep_fail "$what: cannot read snapshot $id"
		same_raw ref.$id.raw snap.raw || keep_fail "$what ($ST state): snapshot $id changed"
	done
}

# run NAME BASE OP SNAPSHOT: `cowvm image snapshot OP SNAPSHOT` on BASE,
# recorded, then the cuts
run() {
	local name=$1 base=$2 snarg=$4 cut rc mode id w m n_old=0 n_new=0 n_dirty=0 n_derr=0 n_leak=0 n_rep=(0 0 0 0)
	OP=$3
	L_OLD=$(snaplist "$base")
	SZ_OLD=$(vsize "$base")
	L1_OLD=$(l1_off "$base")
	rm -f ref.*.raw
	qemu-img convert -O raw "$base" ref.active.raw || fail "$name: read the active disk"
	for id in $(echo "$L_OLD" | jq -r '.[][0]'); do
		qemu-img convert -l "snapshot.id=$id" -O raw "$base" ref.$id.raw || fail "$name: read snapshot $id"
	done
	SN_ID=$(echo "$L_OLD" | jq -r --arg s "$snarg" '[.[] | select(.[0] == $s or .[1] == $s)][0][0] // empty')
	cp "$base" new.qcow2
	"$COWVM" image snapshot "$OP" "$snarg" new.qcow2 || fail "$name: the call failed"
	qcheck new.qcow2
	! is_dirty new.qcow2 || fail "$name: the dirty bit stays set"
	L_NEW=$(snaplist new.qcow2)
	SZ_NEW=$(vsize new.qcow2)
	case $OP in
	-c)
		id=$(jq -nr --argjson o "$L_OLD" --argjson n "$L_NEW" '$n - $o | .[0][0]')
		[ "$(jq -nc --argjson o "$L_OLD" --argjson n "$L_NEW" '$n - $o | length')" = 1 ] &&
			[ "$(jq -nc --argjson o "$L_OLD" --argjson n "$L_NEW" '$o - $n | length')" = 0 ] ||
			fail "$name: list $L_OLD became $L_NEW"
		cp ref.active.raw ref.$id.raw ;;
	-d)
		[ "$(jq -nc --argjson o "$L_OLD" --argjson n "$L_NEW" '[($o - $n | length), ($n - $o | length)]')" = "[1,0]" ] ||
			fail "$name: list $L_OLD became $L_NEW" ;;
	-a)
		[ -n "$SN_ID" ] && [ "$L_NEW" = "$L_OLD" ] || fail "$name: list $L_OLD became $L_NEW"
		qemu-img compare -q ref.active.raw ref.$SN_ID.raw >/dev/null 2>&1 &&
			[ "$SZ_NEW" = "$SZ_OLD" ] && fail "$name: the snapshot reads as the active disk (the test tells the states apart by it)" ;;
	esac
	[ "$L_NEW" != "$L_OLD" ] || [ "$OP" = -a ] || fail "$name: the list did not change"
	[ -z "${RT_MOVES:-}" ] || [ "$(get_be "$base" 48 8)" != "$(get_be new.qcow2 48 8)" ] ||
		fail "$name: the refcount table did not move"
	KEEP=new.qcow2 verify new.qcow2 "$name: the call's result"
	[ $ST = new ] || fail "$name: the call left the old state"
	# the recorded call
	cp "$base" pc.qcow2
	rm -f io.log
	: >pc.mark
	LD_PRELOAD="$SHIM" IOLOG_IMAGE="$PWD/pc.qcow2" IOLOG_MARK="$PWD/pc.mark" IOLOG_OUT="$PWD/io.log" \
		"$COWVM" image snapshot "$OP" "$snarg" pc.qcow2 || fail "$name: recorded call failed"
	qcheck pc.qcow2
	"$PC" io.log "$base" crash.qcow2 clog 0 999999999 >/dev/null || fail "$name: replay"
	cmp -s crash.qcow2 pc.qcow2 || fail "$name: a full replay differs from the file written"
	for ((cut = 1; cut <= CUTS; cut++)); do
		w="$name, cut $cut"
		if ((cut % 2)); then
			"$PC" io.log "$base" crash.qcow2 clog $((SEED * 1000 + cut)) >pc.out
		else
			POWERCUT_TEAR=512 "$PC" io.log "$base" crash.qcow2 clog $((SEED * 1000 + cut)) >pc.out
		fi || fail "$w: powercut"
		w="$w ($(cat pc.out))"
		qemu-img check -q crash.qcow2 >check.out 2>&1
		rc=$?
		dirty=0
		if is_dirty crash.qcow2; then
			dirty=1 n_dirty=$((n_dirty + 1))
			[ $rc -eq 0 ] || [ $rc -eq 3 ] || n_derr=$((n_derr + 1))
			# any error but corruption and leaks (2, 3) is one
			[ $rc -ne 1 ] || { head -5 check.out; keep_fail "$w: qemu-img check exited 1 (dirty)"; }
		elif [ $rc -eq 3 ]; then
			n_leak=$((n_leak + 1))
		elif [ $rc -ne 0 ]; then
			head -5 check.out
			keep_fail "$w: qemu-img check exited $rc, and the dirty bit is clear"
		fi
		verify crash.qcow2 "$w"
		if [ $ST = old ]; then n_old=$((n_old + 1)); else n_new=$((n_new + 1)); fi
		# repair (if dirty) and a write over the whole active disk; the
		# ways in turn, each with whole and torn cuts
		mode=$((((cut - 1) / 2) % 4))
		if ((dirty)); then
			n_rep[$mode]=$((n_rep[$mode] + 1))
			case $mode in
			0) "$COWVM" image check --repair all crash.qcow2 >rep.out 2>&1 ||
				{ cat rep.out; keep_fail "$w: cowvm image check --repair all failed"; } ;;
			1) qemu-img check -q -r all crash.qcow2 >rep.out 2>&1 ||
				{ cat rep.out; keep_fail "$w: qemu-img check -r all failed"; } ;;
			esac
			if ((mode < 2)); then
				! is_dirty crash.qcow2 || keep_fail "$w: the repair left the dirty bit"
				qemu-img check -q crash.qcow2 >check.out 2>&1 ||
					{ cat check.out; keep_fail "$w: not clean after the repair (mode $mode)"; }
				verify crash.qcow2 "$w, repaired (mode $mode)"
			fi
		fi
		sz=$V_SIZE
		if ((mode % 2)); then
			# cowvm (cow_qcow2_open repairs a dirty image): every cluster
			[ -f pat.$sz.raw ] || { qemu-img create -q -f raw pat.$sz.raw "$sz" &&
				qemu-io -f raw -c "write -P 0xa5 0 $sz" pat.$sz.raw >/dev/null; } || fail "pattern"
			cp pat.$sz.raw exp.raw
			"$COWVM" image convert -n -f raw pat.$sz.raw crash.qcow2 >rep.out 2>&1 ||
				{ cat rep.out; keep_fail "$w: cowvm image convert -n into it failed (mode $mode)"; }
		else
			# QEMU (its open repairs a dirty image): all but 512 bytes at each end
			if [ $ST = new ] && [ "$OP" = -a ]; then cp ref.$SN_ID.raw exp.raw; else cp ref.active.raw exp.raw; fi
			truncate -s "$sz" exp.raw
			m="write -P 0x5a 512 $((sz - 1024))"
			qemu-io -f raw -c "$m" exp.raw >/dev/null || fail "qemu-io raw"
			qemu-io -c "$m" crash.qcow2 >rep.out 2>&1 && ! grep -qi error rep.out ||
				{ cat rep.out; keep_fail "$w: qemu-io write failed (mode $mode)"; }
		fi
		! is_dirty crash.qcow2 || keep_fail "$w: dirty after a writable open and a write (mode $mode)"
		qemu-img check -q crash.qcow2 >check.out 2>&1
		rc=$?
		[ $rc -eq 0 ] || [ $rc -eq 3 ] || { cat check.out; keep_fail "$w: qemu-img check exited $rc after the write (mode $mode)"; }
		qemu-img compare -q exp.raw crash.qcow2 || keep_fail "$w: the write does not read back (mode $mode)"
		[ "$(snaplist crash.qcow2)" = "$V_LIST" ] || keep_fail "$w: the snapshot list changed in the repair or the write (mode $mode)"
		for id in $V_IDS; do
			qemu-img convert -l "snapshot.id=$id" -O raw crash.qcow2 snap.raw || keep_fail "$w: cannot read snapshot $id after the write"
			same_raw ref.$id.raw snap.raw || keep_fail "$w: the write changed snapshot $id (mode $mode: a stale COPIED flag?)"
		done
	done
	echo "ok: $name: $CUTS power cuts ($(wc -c <io.log) bytes recorded): old state $n_old, new state $n_new; dirty bit set $n_dirty times (qemu-img check reported errors in $n_derr of them; repaired by cowvm check ${n_rep[0]}, qemu-img check ${n_rep[1]}, cowvm's open ${n_rep[2]}, QEMU's open ${n_rep[3]}); leaks only (bit clear) $n_leak times"
}

# 64 KiB clusters, 16 MiB: data, s1, more data (L2 table copied, data
# clusters partly shared)
qemu-img create -q -f qcow2 one.qcow2 16M
qemu-io -c "write -P 0x11 0 3M" -c "write -P 0x33 8M 1M" one.qcow2 >/dev/null || fail "qemu-io"
qemu-img snapshot -c s1 one.qcow2 || fail "snapshot"
qemu-io -c "write -P 0x22 1M 3M" -c "write -z 8M 64k" one.qcow2 >/dev/null || fail "qemu-io"
# two: one + s2, more data (s1's clusters: some shared with s2 and the
# active disk, some its own)
cp one.qcow2 two.qcow2
qemu-img snapshot -c s2 two.qcow2 || fail "snapshot"
qemu-io -c "write -P 0x44 0 512k" -c "write -P 0x55 12M 1M" two.qcow2 >/dev/null || fail "qemu-io"
# no snapshot yet
qemu-img create -q -f qcow2 none.qcow2 16M
qemu-io -c "write -P 0x66 64k 2M" -c "write -P 0x77 10M 100k" none.qcow2 >/dev/null || fail "qemu-io"
# 8 KiB clusters (an L2 table covers 8 MiB): s1 at 16 MiB, grown to 24 MiB
# (L1 2 -> 3 entries), data over both
qemu-img create -q -f qcow2 -o cluster_size=8k grow.qcow2 16M
qemu-io -c "write -P 0x12 0 1M" -c "write -P 0x13 9M 1M" grow.qcow2 >/dev/null || fail "qemu-io"
qemu-img snapshot -c s1 grow.qcow2 || fail "snapshot"
qemu-img resize -q grow.qcow2 24M || fail "resize"
qemu-io -c "write -P 0x14 512k 1M" -c "write -P 0x15 20M 2M" grow.qcow2 >/dev/null || fail "qemu-io"
# compressed clusters (several per host cluster), s1, plain data over part
qemu-img convert -q -c -O qcow2 two.qcow2 comp.qcow2 || fail "convert -c"
qemu-img snapshot -c s1 comp.qcow2 || fail "snapshot"
qemu-io -c "write -P 0x88 2M 1M" comp.qcow2 >/dev/null || fail "qemu-io"
# 4 KiB clusters (an L2 table covers 2 MiB: 8 of them), data in each, s1,
# data in every other one, s2, more
qemu-img create -q -f qcow2 -o cluster_size=4k small.qcow2 16M
for i in 0 1 2 3 4 5 6 7; do
	qemu-io -c "write -P $((0x20 + i)) $((i * 2 * M + 4096 * i)) 300k" small.qcow2 >/dev/null || fail "qemu-io"
done
qemu-img snapshot -c s1 small.qcow2 || fail "snapshot"
for i in 0 2 4 6; do
	qemu-io -c "write -P $((0x30 + i)) $((i * 2 * M + 100 * 1024)) 400k" small.qcow2 >/dev/null || fail "qemu-io"
done
qemu-img snapshot -c s2 small.qcow2 || fail "snapshot"
qemu-io -c "write -P 0x40 1M 8M" small.qcow2 >/dev/null || fail "qemu-io"
# 512-byte clusters: s1, then data up to just below what the one-cluster
# refcount table covers (8 MiB of file), so that the call's allocations
# grow and move the table (found by trying on a copy)
for w in $(seq 7816 2 7840); do
	qemu-img create -q -f qcow2 -o cluster_size=512 tiny.qcow2 16M
	qemu-io -c "write -P 0x51 0 200k" tiny.qcow2 >/dev/null || fail "qemu-io"
	qemu-img snapshot -c s1 tiny.qcow2 || fail "snapshot"
	qemu-io -c "write -P 0x52 100k ${w}k" tiny.qcow2 >/dev/null || fail "qemu-io"
	cp tiny.qcow2 try.qcow2
	"$COWVM" image snapshot -c new try.qcow2 || fail "cowvm image snapshot -c (512-byte clusters)"
	[ "$(get_be tiny.qcow2 48 8)" = "$(get_be try.qcow2 48 8)" ] || break
done
[ "$(get_be tiny.qcow2 48 8)" != "$(get_be try.qcow2 48 8)" ] || fail "no image found where -c moves the refcount table"
for f in one two none grow comp small tiny; do qcheck $f.qcow2; done

run "create beside an earlier snapshot" one.qcow2 -c new
run "create the first snapshot" none.qcow2 -c first
run "delete one partly shared" two.qcow2 -d s1
run "delete the last snapshot" one.qcow2 -d s1
run "apply (same size)" two.qcow2 -a s1
run "apply a snapshot from before a grow" grow.qcow2 -a s1
run "create over compressed clusters" comp.qcow2 -c new
run "delete over compressed clusters" comp.qcow2 -d s1
run "apply, 4 KiB clusters" small.qcow2 -a s1
run "delete, 4 KiB clusters" small.qcow2 -d s2
RT_MOVES=1 run "create, 512-byte clusters, the refcount table moves" tiny.qcow2 -c new
RT_MOVES=1 run "apply, 512-byte clusters, the refcount table moves" tiny.qcow2 -a s1
echo "PASS"
