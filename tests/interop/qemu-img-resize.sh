#!/bin/bash
# `cowvm image resize` against `qemu-img resize` (QEMU 7.2), on copies of
# the same images (cow.h I14, I16). After every resize: `qemu-img check`
# finds no error and no leak, `qemu-img compare` finds the cowvm copy equal
# to the qemu-img copy, and `qemu-img info` gives both the same virtual size:
# - raw files: grow (absolute, +relative, to a length that is not a
#   multiple of 512, as qemu-img sets it), shrink with --shrink (absolute
#   and -relative);
# - qcow2, cluster sizes 512 B .. 2 MiB, standard and extended L2 entries:
#   grow inside the L1 table and beyond it (a new L1 table); shrink with
#   --shrink (the new end inside a cluster, too) and grow back: the
#   released clusters read zeros, the rest of the kept last cluster what
#   QEMU keeps there; after every qcow2 shrink the file is no longer than
#   qemu-img's (both cut it after the last used cluster; a 64M image
#   shrunk to 1M: the same length);
# - persistent dirty bitmaps (several granularities, one disabled, one
#   added later, an "all ones" table entry, tables of several clusters):
#   grown and shrunk, `qemu-img info` lists the same bitmaps and flags as
#   for the qemu-img copy, none in use, and each reads the same dirty
#   areas (qemu-nbd -B, qemu-img map x-dirty-bitmap); one in use
#   (inconsistent) is refused, as by qemu-img, and one too large at the
#   new size;
# - over a backing file longer than the old size (also an old size that
#   is not a multiple of the cluster size): the new area reads zeros, not
#   the backing file's data;
# - version 3 images with internal snapshots (QEMU 7.2 resizes them):
#   every snapshot reads as before, and `qemu-img snapshot -a` of one taken
#   before the grow gives its old size and content back, as on the
#   qemu-img copy; the same after a shrink below their sizes; a version 2
#   image with snapshots is refused (grow and shrink), as qemu-img
#   refuses it;
# - a snapshot with VM state (qemu-system-x86_64 -machine none, savevm)
#   applied with `qemu-img snapshot -a`, which leaves the VM state in the
#   active L1 past the end of the disk: QEMU 7.2's grow exposes it as disk
#   content ("QEVM..."), cowvm's new area reads zeros (the reference is
#   the qemu-img copy with the new area zeroed); loadvm of the snapshot
#   still works; also after the snapshot is deleted (its VM state then
#   owned by the active L1 alone: freed, no leak);
# - refused, nothing changed: a missing file, a bad size, a shrink without
#   --shrink, a size that is not a multiple of 512 (qcow2)
#   or not positive or too large (also for the L1 table's 32 MiB, as
#   qemu-img refuses it), an image in use (qemu-io holds it), one
#   marked corrupt, one with a bitmap in use;
# - power cuts: resizes recorded under the LD_PRELOAD recorder
#   (tests/helpers/shim/iolog.c) and cut at 150 points each
#   (tests/helpers/powercut: synced writes kept, later ones kept, lost or
#   torn): `qemu-img check` finds no corruption, the size is the old or the
#   new one, the content is the old one (a grow: zeros past the old end; a
#   shrink: up to the new end), qemu-img info opens it (bitmaps loadable)
#   and the snapshot is intact; also a shrink that cuts the file and the
#   resizes of an image with bitmaps.
# timeout: 420
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v qemu-io >/dev/null 2>&1 || skip "qemu-io not installed"
command -v jq >/dev/null 2>&1 || skip "jq not installed"
cow_tmpdir

vsize() { qemu-img info --output=json "$@" | jq '."virtual-size"'; }

# both FILE FMT ARGS...: resize copies c.FILE (cowvm) and q.FILE (qemu-img)
# of FILE with ARGS (options then size); both must succeed and agree
both() {
	local f=$1 fmt=$2
	shift 2
	cp "$f" "c.$f"
	cp "$f" "q.$f"
	"$COWVM" image resize "c.$f" "$@" >out.txt 2>err.txt || { cat err.txt; fail "cowvm image resize $f $*"; }
	grep -qx "Image resized." out.txt || fail "cowvm image resize $f $*: printed $(cat out.txt)"
	qemu-img resize -q -f "$fmt" "q.$f" "$@" || fail "qemu-img resize $f $*"
	agree "$f" "$fmt" "$*"
	# a qcow2 shrink cuts the file after its last used cluster, as
	# qemu-img's does: never longer than qemu-img's result
	if [ "$fmt" = qcow2 ] && [[ " $* " == *" --shrink "* ]]; then
		local cl ql
		cl=$(stat -c %s "c.$f")
		ql=$(stat -c %s "q.$f")
		((cl <= ql)) || fail "$f $*: file length $cl after the shrink, qemu-img's $ql"
		echo "# $f $*: file length cowvm $cl, qemu-img $ql" >>lengths.txt
	fi
	return 0
}
# agree FILE FMT WHAT: c.FILE and q.FILE check clean, read and size the same
agree() {
	[ "$2" = qcow2 ] && qcheck "c.$1"
	qemu-img compare -q -f "$2" -F "$2" "q.$1" "c.$1" || fail "$1 $3: content differs from qemu-img's"
	[ "$(vsize -f "$2" "c.$1")" = "$(vsize -f "$2" "q.$1")" ] ||
		fail "$1 $3: virtual size $(vsize -f "$2" "c.$1"), qemu-img: $(vsize -f "$2" "q.$1")"
	[ "$2" = raw ] && { [ "$(stat -c %s "c.$1")" = "$(stat -c %s "q.$1")" ] ||
		fail "$1 $3: file length $(stat -c %s "c.$1"), qemu-img: $(stat -c %s "q.$1")"; }
	return 0
}
# refused FILE REGEX ARGS...: cowvm image resize FILE ARGS fails with a
# message matching REGEX and leaves FILE as it was
refused() {
	local f=$1 re=$2 sum
	shift 2
	sum=$(md5sum <"$f")
	"$COWVM" image resize "$f" "$@" >out.txt 2>err.txt && fail "resize $f $* succeeded"
	grep -Eq -- "$re" err.txt || { cat err.txt; fail "resize $f $*: no message matching '$re'"; }
	[ "$(md5sum <"$f")" = "$sum" ] || fail "a refused resize $f $* changed it"
	grep -q "Image resized" out.txt && fail "refused resize printed 'Image resized'"
	return 0
}
snap_raw() { qemu-img convert -l "snapshot.name=$2" -O raw "$1" "$3" || fail "read snapshot $2 of $1"; }
# bm_dir IMG: the bitmap directory's offset (the extension found by
# walking the header extensions)
bm_dir() {
	local o t l
	o=$(($(get_be "$1" 100 4)))
	while :; do
		t=$(($(get_be "$1" $o 4)))
		l=$(($(get_be "$1" $((o + 4)) 4)))
		((t == 0)) && { echo 0; return; }
		((t == 0x23852875)) && { echo $(($(get_be "$1" $((o + 24)) 8))); return; }
		o=$((o + 8 + (l + 7) / 8 * 8))
	done
}
# bm_set_in_use IMG N: set the in-use flag of bitmap N (0-based) in place
bm_set_in_use() {
	local d p=0 i f
	d=$(bm_dir "$1")
	for ((i = 0; i < $2; i++)); do
		p=$((p + (24 + $(get_be "$1" $((d + p + 18)) 2) + $(get_be "$1" $((d + p + 20)) 4) + 7) / 8 * 8))
	done
	f=$(($(get_be "$1" $((d + p + 12)) 4)))
	put_be "$1" $((d + p + 12)) 4 $((f | 1))
}
bitmaps_json() { qemu-img info --output=json "$1" | jq -c '."format-specific".data.bitmaps'; }

# --- raw files
truncate -s 1M r.raw
qemu-io -f raw -c "write -P 0x31 0 1M" r.raw >/dev/null
both r.raw raw 3M
both r.raw raw +1000
both r.raw raw 1.5M
both r.raw raw --shrink 1000
both r.raw raw --shrink -- -512K
both r.raw raw -f raw 0x300000
[ "$(stat -c %s c.r.raw)" = 3145728 ] || fail "raw grow to 0x300000: $(stat -c %s c.r.raw) bytes"
refused r.raw "--shrink" 512K
refused r.raw "--shrink" -- -1K
echo "ok: raw files grow and, with --shrink, shrink as with qemu-img resize"

# --- qcow2: cluster sizes 512 B .. 2 MiB, standard and extended L2 entries
for opts in cluster_size=512 cluster_size=4k cluster_size=64k cluster_size=2M \
	cluster_size=16k,extended_l2=on cluster_size=64k,extended_l2=on \
	cluster_size=64k,compat=0.10 cluster_size=64k,refcount_bits=1; do
	rm -f g.qcow2
	qemu-img create -q -f qcow2 -o "$opts" g.qcow2 1000k
	qemu-io -c "write -P 0x41 0 300k" -c "write -z 400k 64k" -c "write -P 0x42 900k 100k" \
		g.qcow2 >/dev/null || fail "qemu-io $opts"
	# far beyond the L1 table (a 1 MiB one with 512-byte clusters)
	big=3T
	[ "$opts" = cluster_size=512 ] && big=4G
	l1=$(get_be g.qcow2 36 4)
	both g.qcow2 qcow2 1M               # inside the L1 table
	[ "$(get_be c.g.qcow2 40 8)" = "$(get_be g.qcow2 40 8)" ] || fail "$opts: a grow inside the L1 table moved it"
	both g.qcow2 qcow2 1.5M
	both g.qcow2 qcow2 64M              # beyond it with 512 B .. 4 KiB clusters
	cp c.g.qcow2 m.qcow2
	both g.qcow2 qcow2 $big             # beyond it with every cluster size
	[ "$(get_be c.g.qcow2 36 4)" != "$l1" ] || fail "$opts: no new L1 table at $big"
	# grow what cowvm grew: cowvm again, then qemu-img, on its copy
	cp c.g.qcow2 h.qcow2
	both h.qcow2 qcow2 +1G
	# the new area takes writes; the image is still QEMU's
	qemu-io -c "write -P 0x43 $big 64k" c.h.qcow2 >/dev/null || fail "$opts: write into the new area"
	qcheck c.h.qcow2
	# shrink (the new end inside a cluster of every size), grow back;
	# and from past the L1 table's old end (not from $big: qemu-img takes
	# minutes to shrink 3T of 4 KiB clusters)
	both g.qcow2 qcow2 --shrink 700k
	cp c.g.qcow2 k.qcow2
	both k.qcow2 qcow2 1000k
	both m.qcow2 qcow2 --shrink -- -40M
	both m.qcow2 qcow2 --shrink 333k
	echo "ok: qcow2 $opts grows as with qemu-img resize (inside the L1 table and beyond it)"
done

# --- over a backing file longer than the old size
qemu-img create -q -f qcow2 b.qcow2 8M
qemu-io -c "write -P 0x55 0 8M" b.qcow2 >/dev/null
for opts in cluster_size=64k cluster_size=512 cluster_size=64k,extended_l2=on cluster_size=2M; do
	for old in 1M 1000448; do
		rm -f o.qcow2
		qemu-img create -q -f qcow2 -o "$opts" -b b.qcow2 -F qcow2 o.qcow2 "$old"
		qemu-io -c "write -P 0x66 64k 64k" o.qcow2 >/dev/null
		both o.qcow2 qcow2 4M
		qemu-io -c "read -P 0 $old $((4 * 1048576 - $(numfmt --from=iec $old)))" c.o.qcow2 |
			grep -q "^read" || fail "$opts $old: the new area shows the backing file"
		qemu-io -c "read -P 0x55 0 64k" c.o.qcow2 | grep -q "^read" || fail "$opts: old area lost the backing file"
		both o.qcow2 qcow2 16M      # past the backing file's end
		echo "ok: $opts overlay of $old over a longer backing file: new area zeros, as with qemu-img"
	done
done
# a version 2 overlay cannot hide the backing file: both refuse
qemu-img create -q -f qcow2 -o compat=0.10 -b b.qcow2 -F qcow2 o2.qcow2 1M
refused o2.qcow2 "version 2.*longer backing file" 4M
qemu-img resize -q o2.qcow2 4M 2>/dev/null && note_q2=" (qemu-img grew it)" || note_q2=""
echo "ok: a version 2 overlay over a longer backing file refused$note_q2"

# --- internal snapshots (no VM state)
for opts in cluster_size=64k cluster_size=512 cluster_size=16k,extended_l2=on; do
	rm -f s.qcow2 s.*.raw
	qemu-img create -q -f qcow2 -o "$opts" s.qcow2 1M
	qemu-io -c "write -P 0x71 0 1M" s.qcow2 >/dev/null
	qemu-img snapshot -c s1 s.qcow2
	qemu-io -c "write -P 0x72 128k 128k" s.qcow2 >/dev/null
	qemu-img resize -q s.qcow2 2M
	qemu-io -c "write -P 0x73 1536k 64k" s.qcow2 >/dev/null
	qemu-img snapshot -c s2 s.qcow2
	snap_raw s.qcow2 s1 s.s1.raw
	snap_raw s.qcow2 s2 s.s2.raw
	big=64M
	[ "$opts" = cluster_size=64k ] && big=1G
	both s.qcow2 qcow2 +3M
	both s.qcow2 qcow2 $big             # a new L1 table
	for sn in s1 s2; do
		snap_raw c.s.qcow2 $sn now.raw
		snap_raw q.s.qcow2 $sn qnow.raw
		qemu-img compare -q -f raw -F raw s.$sn.raw now.raw || fail "$opts: snapshot $sn changed"
		qemu-img compare -q -f raw -F raw qnow.raw now.raw ||
			fail "$opts: snapshot $sn reads differently from qemu-img's copy"
	done
	for sn in s1 s2; do
		qemu-img snapshot -a $sn c.s.qcow2 || fail "$opts: apply $sn after cowvm's grow"
		qemu-img snapshot -a $sn q.s.qcow2 || fail "$opts: apply $sn after qemu-img's grow"
		agree s.qcow2 qcow2 "snapshot -a $sn"
		qemu-img compare -q -f raw s.$sn.raw c.s.qcow2 || fail "$opts: $sn applied differs"
	done
	[ "$(vsize c.s.qcow2)" = 2097152 ] || fail "$opts: s2 applied: size $(vsize c.s.qcow2)"
	# and grow again after an apply (the active L1 is the snapshot's)
	cp c.s.qcow2 sa.qcow2
	both sa.qcow2 qcow2 5M
	# shrink below both snapshots' sizes: they keep theirs
	both s.qcow2 qcow2 --shrink 512k
	for sn in s1 s2; do
		snap_raw c.s.qcow2 $sn now.raw
		cmp -s -n 524288 s.$sn.raw now.raw || fail "$opts: the shrink changed snapshot $sn"
		qemu-img snapshot -a $sn c.s.qcow2 || fail "$opts: apply $sn after cowvm's shrink"
		qemu-img snapshot -a $sn q.s.qcow2 || fail "$opts: apply $sn after qemu-img's shrink"
		agree s.qcow2 qcow2 "shrink, snapshot -a $sn"
		qemu-img compare -q -f raw s.$sn.raw c.s.qcow2 || fail "$opts: $sn applied after the shrink differs"
	done
	echo "ok: qcow2 $opts with two snapshots grows as with qemu-img; snapshots intact, -a gives their sizes back"
done
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M
qemu-img snapshot -c s1 v2.qcow2
refused v2.qcow2 "version 2.*internal snapshots" 2M
refused v2.qcow2 "version 2.*internal snapshots" --shrink 512k
qemu-img resize -q v2.qcow2 2M 2>/dev/null && fail "qemu-img grew a v2 image with snapshots"
qemu-img resize -q --shrink v2.qcow2 512k 2>/dev/null && fail "qemu-img shrank a v2 image with snapshots"
echo "ok: a version 2 image with snapshots refused, as by qemu-img"

# --- a snapshot with VM state, applied: the VM state sits in the active L1
# past the end of the disk
savevm() {   # IMG NAME
	printf 'savevm %s\nquit\n' "$2" | timeout 60 qemu-system-x86_64 -machine none -nodefaults \
		-display none -drive "file=$1,if=none,id=d0,format=qcow2" -monitor stdio >savevm.out 2>&1
	qemu-img snapshot -l "$1" | grep -q " $2 " || return 1
	jq_true "any(.snapshots[]; .name == \"$2\" and .\"vm-state-size\" > 0)" qemu-img info --output=json "$1"
}
loadvm_ok() {   # IMG NAME
	printf 'loadvm %s\nquit\n' "$2" | timeout 60 qemu-system-x86_64 -machine none -nodefaults \
		-display none -drive "file=$1,if=none,id=d0,format=qcow2" -monitor stdio >loadvm.out 2>&1 || return 1
	! grep -aqi "error" loadvm.out
}
vm_ok=1
command -v qemu-system-x86_64 >/dev/null 2>&1 || vm_ok=0
if ((vm_ok)); then
	qemu-img create -q -f qcow2 vm0.qcow2 1M
	savevm vm0.qcow2 s1 || { cat savevm.out; vm_ok=0; }
fi
if ((vm_ok)); then
	for opts in cluster_size=64k cluster_size=512 cluster_size=16k,extended_l2=on cluster_size=2M; do
		rm -f v.qcow2
		qemu-img create -q -f qcow2 -o "$opts" v.qcow2 1M
		qemu-io -c "write -P 0x81 0 1M" v.qcow2 >/dev/null
		savevm v.qcow2 s1 || { cat savevm.out; fail "$opts: savevm"; }
		qemu-io -c "write -P 0x82 0 64k" v.qcow2 >/dev/null
		snap_raw v.qcow2 s1 v.s1.raw
		qemu-img snapshot -a s1 v.qcow2 || fail "$opts: snapshot -a s1"
		# where QEMU keeps the VM state: the first L1 entry past the disk
		cs=$(qemu-img info --output=json v.qcow2 | jq '."cluster-size"')
		cov=$((cs * cs / 8))
		[[ $opts == *extended_l2=on* ]] && cov=$((cs * cs / 16))
		vmoff=$(((1048576 + cov - 1) / cov * cov))
		new=$((vmoff + cov))
		for del in keep delete; do
			if [ $del = delete ]; then
				# the VM state now belongs to the active L1 alone
				qemu-img snapshot -d s1 v.qcow2 || fail "$opts: snapshot -d"
			fi
			cp v.qcow2 c.v.qcow2
			cp v.qcow2 q.v.qcow2
			"$COWVM" image resize c.v.qcow2 $new >out.txt 2>err.txt ||
				{ cat err.txt; fail "$opts: cowvm resize over the VM state"; }
			qemu-img resize -q q.v.qcow2 $new || fail "$opts: qemu-img resize"
			qcheck c.v.qcow2
			qemu-io -c "read -P 0 $vmoff 1M" c.v.qcow2 | grep -q "^read" ||
				fail "$opts ($del): the VM state shows in the new area"
			qemu-io -c "read -v $vmoff 16" q.v.qcow2 | grep -q QEVM &&
				qemu_shows=" (qemu-img's copy shows it: QEVM at $vmoff)"
			# the reference: qemu-img's result with the VM state zeroed
			# (it lies in the first L2 table past the disk; qemu-io
			# takes at most 2 GiB a request)
			z=$((cov < 1073741824 ? cov : 1073741824))
			qemu-io -c "write -z $vmoff $z" q.v.qcow2 | grep -q "^wrote" ||
				fail "$opts: zeroing qemu-img's copy"
			agree v.qcow2 qcow2 "over the VM state ($del)"
			if [ $del = keep ]; then
				# (read at the grown size, the snapshot's L1 also
				# shows its VM state: compare that with qemu-img's
				# copy, whose grow left the snapshot alone)
				snap_raw c.v.qcow2 s1 now.raw
				snap_raw q.v.qcow2 s1 qnow.raw
				cmp -s -n 1048576 v.s1.raw now.raw || fail "$opts: snapshot s1 changed"
				qemu-img compare -q -f raw -F raw qnow.raw now.raw ||
					fail "$opts: snapshot s1 (with its VM state) differs from qemu-img's copy"
				loadvm_ok c.v.qcow2 s1 || { cat loadvm.out; fail "$opts: loadvm s1 after the grow"; }
				qemu-img snapshot -a s1 c.v.qcow2 || fail "$opts: snapshot -a s1 after the grow"
				[ "$(vsize c.v.qcow2)" = 1048576 ] || fail "$opts: s1 applied: size $(vsize c.v.qcow2)"
				qemu-img compare -q -f raw v.s1.raw c.v.qcow2 || fail "$opts: s1 applied differs"
				qcheck c.v.qcow2
			fi
		done
		echo "ok: $opts: a snapshot's VM state in the active L1 stays out of the grown disk${qemu_shows:-}"
		qemu_shows=""
	done
else
	echo "# no savevm (qemu-system-x86_64 missing or savevm failed): VM-state cases not run"
fi

# --- a shrink cuts the file after its last used cluster (as qemu-img's)
for opts in cluster_size=64k cluster_size=512 cluster_size=2M cluster_size=64k,refcount_bits=64; do
	rm -f t.qcow2
	qemu-img create -q -f qcow2 -o "$opts" t.qcow2 64M
	qemu-io -c "write -P 0x61 0 64M" t.qcow2 >/dev/null
	both t.qcow2 qcow2 --shrink 1M
	cl=$(stat -c %s c.t.qcow2)
	ql=$(stat -c %s q.t.qcow2)
	tl=$(stat -c %s t.qcow2)
	# (with 512 B clusters the refcount table, moved to the end of the
	# file while it was written, keeps both files long)
	((cl < tl)) || fail "$opts: the shrink to 1M left a file of $cl bytes (was $tl)"
	[ "$cl" = "$ql" ] || fail "$opts: file length $cl after the shrink, qemu-img's $ql"
	# and it takes writes again, past the cut too
	both c.t.qcow2 qcow2 64M
	qemu-io -c "write -P 0x62 0 64M" c.c.t.qcow2 >/dev/null || fail "$opts: write after the cut"
	qcheck c.c.t.qcow2
	echo "ok: $opts: a 64M image ($tl bytes) shrunk to 1M: file $cl bytes, as qemu-img's"
done

# --- persistent dirty bitmaps: resized as qemu-img resizes them
if command -v qemu-nbd >/dev/null 2>&1; then
	for opts in cluster_size=64k cluster_size=512 cluster_size=16k,extended_l2=on; do
		rm -f bm.qcow2
		qemu-img create -q -f qcow2 -o "$opts" bm.qcow2 4M
		qemu-img bitmap --add -g 512 bm.qcow2 fine
		qemu-img bitmap --add -g 64k bm.qcow2 coarse
		qemu-img bitmap --add --disable bm.qcow2 off
		qemu-io -c "write -P 0x51 0 4k" -c "write 1M 4k" -c "write 1572864 100k" -c "write 3M 512" \
			-c "write 4193792 512" bm.qcow2 >/dev/null
		qemu-img bitmap --add -g 4k bm.qcow2 late
		qemu-io -c "write -P 0x52 2M 1M" bm.qcow2 >/dev/null
		# an "all ones" table entry: qemu-img bitmap --merge does not
		# write one, the specification allows it (bit 0, no offset)
		for args in 64M --shrink\ 1573376 --shrink\ 1M 1G --shrink\ 512; do
			# shellcheck disable=SC2086
			both bm.qcow2 qcow2 $args
			[ "$(bitmaps_json c.bm.qcow2)" = "$(bitmaps_json q.bm.qcow2)" ] ||
				fail "$opts $args: bitmaps $(bitmaps_json c.bm.qcow2), qemu-img: $(bitmaps_json q.bm.qcow2)"
			jq_true 'length == 4 and all(.[]; (.flags | index("in-use")) == null)' bitmaps_json c.bm.qcow2 ||
				fail "$opts $args: bitmaps $(bitmaps_json c.bm.qcow2)"
			for b in fine coarse off late; do
				cd_=$(bm_dirty c.bm.qcow2 $b)
				qd_=$(bm_dirty q.bm.qcow2 $b)
				[ -n "$cd_" ] && [ "$cd_" = "$qd_" ] ||
					fail "$opts $args: bitmap $b reads $cd_, qemu-img's $qd_"
			done
		done
		# resize what cowvm resized, with qemu-img and with cowvm
		cp c.bm.qcow2 bm2.qcow2
		both bm2.qcow2 qcow2 --shrink 2M
		[ "$(bm_dirty c.bm2.qcow2 late)" = "$(bm_dirty q.bm2.qcow2 late)" ] || fail "$opts: bitmap late after two resizes"
		qemu-img resize -q c.bm2.qcow2 8M && qcheck c.bm2.qcow2 || fail "$opts: qemu-img resize after cowvm's"
		echo "ok: $opts: 4 persistent bitmaps (granularity 512 B .. 64 KiB, one disabled) grow and shrink as with qemu-img; $(bm_dirty c.bm.qcow2 fine)"
	done
	# a table of several clusters (512 B clusters, granularity 512 B:
	# 4096 bits a cluster) and an "all ones" entry written by hand
	rm -f bo.qcow2
	qemu-img create -q -f qcow2 -o cluster_size=512 bo.qcow2 8M
	qemu-img bitmap --add -g 512 bo.qcow2 ones
	qemu-io -c "write 0 8M" bo.qcow2 >/dev/null
	d=$(bm_dir bo.qcow2)
	tab=$(($(get_be bo.qcow2 $d 8)))
	put_be bo.qcow2 $((tab + 8)) 8 1   # entry 1 (bits 4096..8191): all ones, no cluster
	qemu-img check -q -r leaks bo.qcow2 >/dev/null 2>&1   # (its old data cluster leaked)
	qcheck bo.qcow2
	for args in --shrink\ 3M --shrink\ 2560k 64M; do
		# shellcheck disable=SC2086
		both bo.qcow2 qcow2 $args
		[ "$(bm_dirty c.bo.qcow2 ones)" = "$(bm_dirty q.bo.qcow2 ones)" ] ||
			fail "bitmap with an all-ones entry, $args: $(bm_dirty c.bo.qcow2 ones), qemu-img: $(bm_dirty q.bo.qcow2 ones)"
	done
	echo "ok: a bitmap table with an all-ones entry shrinks and grows as with qemu-img"
else
	echo "# qemu-nbd not installed: bitmap contents not compared"
fi
# too large at the new size (granularity 512 B: more than 512 MiB of bits,
# which QEMU cannot store): refused before anything is written
rm -f bl.qcow2
qemu-img create -q -f qcow2 bl.qcow2 1M
qemu-img bitmap --add -g 512 bl.qcow2 tiny
refused bl.qcow2 "bitmap 'tiny' .*too large at the new size" 4T

# --- bad input, nothing changed
qemu-img create -q -f qcow2 x.qcow2 1M
qemu-io -c "write -P 0x91 0 1M" x.qcow2 >/dev/null
"$COWVM" image resize nonexist.qcow2 2M 2>err.txt && fail "resize of a missing file succeeded"
grep -q "unable to open 'nonexist.qcow2'" err.txt || fail "missing file: $(cat err.txt)"
refused x.qcow2 "invalid size 'abc'" abc
refused x.qcow2 "invalid size '\+-1M'" -- +-1M
refused x.qcow2 "use --shrink" 512K
refused x.qcow2 "use --shrink" -- -64k
refused x.qcow2 "multiple of 512" 1049000
refused x.qcow2 "multiple of 512" +1000
refused x.qcow2 "multiple of 512" --shrink 1000
refused x.qcow2 "must be positive" 0
refused x.qcow2 "must be positive" --shrink -- -1M
refused x.qcow2 "too large" 100P
# an L1 table over 32 MiB (QEMU's limit too)
qemu-img create -q -f qcow2 -o cluster_size=512 x512.qcow2 1M
refused x512.qcow2 "too large for cluster size 512" 1T
qemu-img resize -q x512.qcow2 1T 2>/dev/null && fail "qemu-img grew x512.qcow2 to 1T"
refused x.qcow2 "need FILE and SIZE"
refused x.qcow2 "-f takes raw or qcow2" -f vmdk 2M
"$COWVM" image resize -f qcow2 r.raw 2M 2>err.txt && fail "resize -f qcow2 of a raw file succeeded"
# in use: qemu-io holds it open for writing
timeout -k 2 60 qemu-io -c "sleep 50000" x.qcow2 >qemu-io.log 2>&1 &
QPID=$!
wait_locked x.qcow2 || fail "qemu-io did not lock x.qcow2 within 10 s: $(cat qemu-io.log)"
refused x.qcow2 "image is in use" 2M
kill "$QPID" 2>/dev/null
wait "$QPID" 2>/dev/null
# marked corrupt (incompatible feature bit 1)
cp x.qcow2 xc.qcow2
put_be xc.qcow2 79 1 2
refused xc.qcow2 "marked corrupt" 2M
# a persistent bitmap in use (QEMU: inconsistent), as qemu-img refuses it
cp x.qcow2 xb.qcow2
qemu-img bitmap --add xb.qcow2 b0 || fail "qemu-img bitmap --add"
qemu-img bitmap --add xb.qcow2 b1 || fail "qemu-img bitmap --add"
bm_set_in_use xb.qcow2 1
refused xb.qcow2 "bitmap 'b1' is inconsistent" 2M
refused xb.qcow2 "bitmap 'b1' is inconsistent" --shrink 512k
qemu-img resize -q xb.qcow2 2M 2>/dev/null && fail "qemu-img grew an image with an inconsistent bitmap"
[ "$(vsize x.qcow2)" = 1048576 ] && qcheck x.qcow2
echo "ok: bad input refused, nothing changed"

# --- power cuts during a resize
SHIM="$(dirname "$COWIO")/iolog.so"
PC="$(dirname "$COWIO")/powercut"
if [ -f "$SHIM" ] && [ -x "$PC" ]; then
	export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
	SEED=${POWERCUT_SEED:-$RANDOM}
	echo "POWERCUT_SEED=$SEED"
	pc_run() {   # NAME IMG NEWSIZE [SNAPSHOT]
		local name=$1 img=$2 new=$3 sn=${4:-} cut rc old sz n shrink=()
		old=$(vsize "$img")
		((new < old)) && shrink=(--shrink)
		qemu-img convert -O raw "$img" pc.old.raw
		[ -z "$sn" ] || snap_raw "$img" "$sn" pc.sn.raw
		cp "$img" pc.qcow2
		rm -f io.log
		: >pc.mark
		LD_PRELOAD="$SHIM" IOLOG_IMAGE="$PWD/pc.qcow2" IOLOG_MARK="$PWD/pc.mark" IOLOG_OUT="$PWD/io.log" \
			"$COWVM" image resize "${shrink[@]}" pc.qcow2 "$new" >/dev/null || fail "$name: recorded resize failed"
		"$PC" io.log "$img" crash.qcow2 clog 0 999999999 >/dev/null || fail "$name: replay"
		cmp -s crash.qcow2 pc.qcow2 || fail "$name: a full replay differs from the file written"
		for ((cut = 1; cut <= 150; cut++)); do
			"$PC" io.log "$img" crash.qcow2 clog $((SEED * 1000 + cut)) >pc.out || fail "$name: powercut"
			qemu-img check -q crash.qcow2 >check.out 2>&1
			rc=$?
			if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
				head -5 check.out
				fail "$name, cut $cut ($(cat pc.out)): qemu-img check exited $rc"
			fi
			# QEMU opens it (loads its bitmaps: each consistent one of
			# the size's table size, or in use)
			sz=$(vsize crash.qcow2) || fail "$name, cut $cut ($(cat pc.out)): qemu-img info cannot open it"
			[ "$sz" = "$old" ] || [ "$sz" = "$new" ] || fail "$name, cut $cut: size $sz"
			if ((new > old)); then
				# old content, zeros past the old end (compare allows
				# the longer image when its extra part reads zeros)
				qemu-img compare -q "$img" crash.qcow2 ||
					fail "$name, cut $cut ($(cat pc.out)): content differs"
			else
				# old content up to the new end
				qemu-img convert -O raw crash.qcow2 crash.raw
				cmp -s -n "$new" pc.old.raw crash.raw ||
					fail "$name, cut $cut ($(cat pc.out)): content differs"
			fi
			if [ -n "$sn" ]; then
				# (read at the current size: after a grow a
				# snapshot's VM state shows too, after a shrink
				# only its start)
				snap_raw crash.qcow2 "$sn" now.raw
				n=$(stat -c %s pc.sn.raw)
				(($(stat -c %s now.raw) < n)) && n=$(stat -c %s now.raw)
				cmp -s -n "$n" pc.sn.raw now.raw ||
					fail "$name, cut $cut: snapshot $sn changed"
			fi
		done
		echo "ok: $name: 150 power cuts of a resize ($(wc -c <io.log) bytes recorded); last: $(cat pc.out)"
	}
	# 512-byte clusters over a longer backing file, a snapshot: a new L1
	# table, zero clusters, L2 tables shared with the snapshot
	qemu-img create -q -f qcow2 -o cluster_size=512 -b b.qcow2 -F qcow2 p.qcow2 1M
	qemu-io -c "write -P 0xa1 0 256k" p.qcow2 >/dev/null
	qemu-img snapshot -c s1 p.qcow2
	pc_run "512 B clusters, backing, snapshot" p.qcow2 $((16 << 20)) s1
	# a shrink under a snapshot (shared L2 tables copied, then emptied)
	qemu-img create -q -f qcow2 -o cluster_size=512 ps.qcow2 4M
	qemu-io -c "write -P 0xa3 0 4M" ps.qcow2 >/dev/null
	qemu-img snapshot -c s1 ps.qcow2
	qemu-io -c "write -P 0xa4 1M 1M" ps.qcow2 >/dev/null
	pc_run "512 B clusters, shrink under a snapshot" ps.qcow2 $((1536 << 10)) s1
	# a shrink that frees L2 tables and refcount blocks and cuts the file
	qemu-img create -q -f qcow2 -o cluster_size=512 pt.qcow2 4M
	qemu-io -c "write -P 0xa5 0 4M" pt.qcow2 >/dev/null
	pc_run "512 B clusters, shrink cutting the file" pt.qcow2 $((1 << 20))
	# persistent bitmaps: marked in use, the size, new tables and directory
	qemu-img create -q -f qcow2 -o cluster_size=512 pb.qcow2 4M
	qemu-img bitmap --add -g 512 pb.qcow2 b0
	qemu-img bitmap --add -g 64k pb.qcow2 b1
	qemu-io -c "write -P 0xa6 0 4M" pb.qcow2 >/dev/null
	pc_run "512 B clusters, bitmaps, grow" pb.qcow2 $((16 << 20))
	pc_run "512 B clusters, bitmaps, shrink" pb.qcow2 $((1536 << 10))
	if ((vm_ok)); then
		# the VM state in the active L1, released while growing over it
		qemu-img create -q -f qcow2 -o cluster_size=512 pv.qcow2 1M
		qemu-io -c "write -P 0xa2 0 1M" pv.qcow2 >/dev/null
		savevm pv.qcow2 s1 || fail "savevm for the power cuts"
		qemu-img snapshot -a s1 pv.qcow2
		pc_run "512 B clusters, VM state applied" pv.qcow2 $((4 << 20)) s1
	fi
else
	echo "# power-cut helpers not built: power cuts not run"
fi
exit 0
