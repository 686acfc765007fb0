#!/bin/bash
# `cowvm image convert -l SNAPSHOT_PARAM` and `qemu-img convert -l` agree:
# images with internal snapshots made by `qemu-img snapshot -c`, data
# written by qemu-io between them (plain, zero and compressed writes,
# discards), with 512-byte, 64 KiB and 2 MiB clusters, extended L2
# entries with subcluster writes, compressed clusters, a backing file, and
# snapshots taken before a grow and before a shrink. For each snapshot and
# each way of naming it (snapshot.id=, snapshot.name=, both, a bare ID, a
# bare name) the raw outputs are byte for byte the same (and the same
# size: qemu-img 7.2 keeps the image's current size), a qcow2 output (and a
# compressed one) reads the same (qemu-img compare) and passes qemu-img
# check; -B over the base reads the same; -n works. A bare name that is
# another snapshot's ID picks the ID, as QEMU. Errors (no such snapshot by
# each form, an ID and name of two different snapshots, a raw source, a
# bad parameter): both fail, no output left, and cowvm's message names the
# file and the snapshot. cow_open_snapshot itself (tests/helpers/cowio
# snapread): a writable open and every change on a snapshot open refused;
# at the snapshot's own disk size it reads as `qemu-img snapshot -a` on a
# copy makes the image (the disk size of the snapshot's v3 extra data). A
# VM state (made by lowering a snapshot's disk_size, not by QEMU's savevm)
# never reads as disk data. A damaged snapshot L1 table is refused. No
# file with snapshots changes (sha256 before and after).
# timeout: 600
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
cow_tmpdir

fails=0
n=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
qio() {   # IMG CMD...: qemu-io commands on IMG
	local img=$1 a=()
	shift
	for c in "$@"; do a+=(-c "$c"); done
	qemu-io "${a[@]}" "$img" >/dev/null || bad "qemu-io $img $*"
}
snap() { qemu-img snapshot -c "$2" "$1" || bad "qemu-img snapshot -c $2 $1"; }
vsize() { qemu-img info --output=json "$1" | jq '."virtual-size"'; }
# same_disk RAW IMG: IMG reads as RAW, and has its size
same_disk() {
	qemu-img compare -q "$1" "$2" || { echo differs; return 1; }
	[ "$(stat -c %s "$1")" = "$(vsize "$2")" ] || { echo "of $(vsize "$2") bytes, not $(stat -c %s "$1")"; return 1; }
}

# one IMG PARAM [CONVERT_OPTS...]: qemu-img and cowvm convert -l PARAM of
# IMG to raw are the same bytes and size; a qcow2 output reads the same
# and is clean
one() {
	local img=$1 p=$2 qs cs why
	shift 2
	n=$((n + 1))
	rm -f q.raw c.raw c.qcow2
	qemu-img convert -l "$p" "$@" -O raw "$img" q.raw 2>q.err || { bad "qemu-img convert -l $p $img: $(cat q.err)"; return; }
	"$COWVM" image convert -l "$p" "$@" -O raw "$img" c.raw 2>c.err || { bad "cowvm convert -l $p $img: $(cat c.err)"; return; }
	qs=$(stat -c %s q.raw)
	cs=$(stat -c %s c.raw)
	if [ "$qs" != "$cs" ]; then
		bad "convert -l $p $img: qemu-img's output is $qs bytes, cowvm's $cs"
	elif ! cmp -s q.raw c.raw; then
		bad "convert -l $p $img: outputs differ: $(cmp q.raw c.raw 2>&1 | head -1)"
	else
		echo "ok: convert -l $p $img ($cs bytes, $(md5sum <c.raw | cut -c1-8))"
	fi
	"$COWVM" image convert -q -l "$p" "$@" "$img" c.qcow2 || { bad "cowvm convert -l $p $img to qcow2"; return; }
	why=$(same_disk q.raw c.qcow2) || bad "convert -l $p $img to qcow2: $why (qemu-img's raw)"
	qcheck c.qcow2
}
# all IMG ID NAME [OPTS...]: one for each way of naming the snapshot, then
# a compressed qcow2 output
all() {
	local img=$1 id=$2 name=$3 why
	shift 3
	one "$img" "snapshot.id=$id" "$@"
	one "$img" "snapshot.name=$name" "$@"
	one "$img" "snapshot.id=$id,snapshot.name=$name" "$@"
	one "$img" "$id" "$@"
	one "$img" "$name" "$@"
	rm -f cc.qcow2
	"$COWVM" image convert -q -c -l "$name" "$@" "$img" cc.qcow2 || { bad "cowvm convert -c -l $name $img"; return; }
	why=$(same_disk q.raw cc.qcow2) || bad "convert -c -l $name $img: $why (qemu-img's raw)"
	qcheck cc.qcow2
}
# applied IMG NAME: cow_open_snapshot at the snapshot's own disk size reads
# as qemu-img snapshot -a makes a copy of IMG (its size the snapshot's)
applied() {
	local img=$1 name=$2
	rm -f ap.qcow2 ap.raw s.raw
	cp "$img" ap.qcow2
	qemu-img snapshot -a "$name" ap.qcow2 || { bad "qemu-img snapshot -a $name $img"; return; }
	qemu-img convert -O raw ap.qcow2 ap.raw || { bad "qemu-img convert ap.qcow2"; return; }
	"$COWIO" snapread "$img" "$name" s.raw >snapread.out || { bad "cowio snapread $img $name: exit $?"; return; }
	if [ "$(stat -c %s ap.raw)" != "$(stat -c %s s.raw)" ] || ! cmp -s ap.raw s.raw; then
		bad "snapshot $name of $img at its disk size: $(cat snapread.out), differs from snapshot -a ($(stat -c %s ap.raw) bytes)"
	else
		echo "ok: snapshot $name of $img at its disk size ($(stat -c %s s.raw) bytes) reads as snapshot -a"
	fi
	"$COWIO" snapread "$img" "$name" si.raw image >/dev/null || bad "cowio snapread $img $name image"
}

# keep IMG: record IMG's hash; kept IMG: it is the same (cowvm never
# writes an image it reads a snapshot of)
declare -A sums
keep() { sums[$1]=$(sha256sum <"$1"); }
kept() { [ "$(sha256sum <"$1")" = "${sums[$1]}" ] || bad "$1 changed"; }
# --- three cluster sizes: three snapshots, the active layer different again
for cs in 512 65536 2097152; do
	img=cs$cs.qcow2
	qemu-img create -q -f qcow2 -o cluster_size=$cs $img 8M
	qio $img 'write -P 0x11 0 1M' 'write -P 0x12 5M 300k' 'write -P 0x13 4198400 4k'
	snap $img first
	qio $img 'write -P 0x21 512k 1M' 'write -z 5M 64k' 'discard 0 64k' 'write -P 0x22 3M 1000'
	snap $img second
	qio $img 'write -c -P 0x31 6M 2M' 'write -P 0x32 100 200' 'write -P 0x33 8384512 4k'
	snap $img third
	qio $img 'write -P 0x41 0 8M'
	keep $img
	for s in "1 first" "2 second" "3 third"; do
		set -- $s
		all $img "$1" "$2"
	done
	applied $img second
	kept $img
done

# --- compressed clusters (a compressed image, then compressed overwrites)
qemu-img create -q -f raw src.raw 4M
qemu-io -f raw -c 'write -P 0x51 0 3M' src.raw >/dev/null
qemu-img convert -c -O qcow2 src.raw comp.qcow2
snap comp.qcow2 packed
qio comp.qcow2 'write -c -P 0x52 3M 1M' 'write -P 0x53 2097157 77'
snap comp.qcow2 mixed
qio comp.qcow2 'write -z 0 4M'
keep comp.qcow2
all comp.qcow2 1 packed
all comp.qcow2 2 mixed
applied comp.qcow2 mixed
kept comp.qcow2

# --- extended L2 entries: subcluster writes between snapshots
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=65536 x.qcow2 4M
qio x.qcow2 'write -P 0x61 4k 4k' 'write -P 0x62 70k 2k' 'write -z 1M 8k'
snap x.qcow2 sub1
qio x.qcow2 'write -P 0x63 0 4k' 'write -P 0x64 8k 56k' 'write -P 0x65 1050624 2k'
snap x.qcow2 sub2
qio x.qcow2 'discard 0 64k'
keep x.qcow2
all x.qcow2 1 sub1
all x.qcow2 2 sub2
applied x.qcow2 sub1
kept x.qcow2

# --- a backing file (reads through to it; -B over it copies the top only)
qemu-img create -q -f qcow2 base.qcow2 6M
qemu-io -c 'write -P 0x71 0 6M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 ovl.qcow2
qio ovl.qcow2 'write -P 0x72 1M 1M' 'write -z 3M 1M'
snap ovl.qcow2 b1
qio ovl.qcow2 'write -P 0x73 0 512k' 'discard 3M 1M'
snap ovl.qcow2 b2
qio ovl.qcow2 'write -P 0x74 0 6M'
keep ovl.qcow2
keep base.qcow2
all ovl.qcow2 1 b1
all ovl.qcow2 2 b2
applied ovl.qcow2 b1
for s in b1 b2; do
	n=$((n + 1))
	rm -f qb.qcow2 cb.qcow2
	qemu-img convert -q -l $s -B base.qcow2 -F qcow2 -O qcow2 ovl.qcow2 qb.qcow2 || bad "qemu-img convert -l $s -B"
	"$COWVM" image convert -q -l $s -B base.qcow2 -F qcow2 ovl.qcow2 cb.qcow2 || bad "cowvm convert -l $s -B"
	qemu-img compare -q qb.qcow2 cb.qcow2 || bad "convert -l $s -B: the overlays differ"
	# the top layers alone read the same too (what each left to the base)
	qemu-img compare -q "json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":{\"driver\":\"file\",\"filename\":\"qb.qcow2\"}}" \
		"json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":{\"driver\":\"file\",\"filename\":\"cb.qcow2\"}}" ||
		bad "convert -l $s -B: the top layers differ"
	qcheck cb.qcow2
	echo "ok: convert -l $s -B base.qcow2"
done
kept ovl.qcow2
kept base.qcow2

# --- snapshots taken before a grow and before a shrink (the output has the
# image's current size, as qemu-img 7.2's; the snapshot's own size through
# cow_open_snapshot's default)
# (rsb: 512-byte clusters over a 12M backing file: the snapshot taken at 4M
# has an L1 table of 128 entries, 4M of the disk; past it the backing
# file shows)
qemu-img create -q -f qcow2 rsbase.qcow2 12M
qio rsbase.qcow2 'write -P 0x80 0 12M'
qemu-img create -q -f qcow2 rs.qcow2 4M
qemu-img create -q -f qcow2 -o cluster_size=512 -b rsbase.qcow2 -F qcow2 rsb.qcow2 4M
for img in rs.qcow2 rsb.qcow2; do
	qio $img 'write -P 0x81 0 2M'
	snap $img at4m
	qemu-img resize -q $img 12M
	qio $img 'write -P 0x82 6M 2M' 'write -P 0x83 12578816 4k' 'write -P 0x85 1M 64k'
	snap $img at12m
	qemu-img resize -q --shrink $img 3M
	qio $img 'write -P 0x86 2M 4k'
	snap $img at3m
	keep $img
	for s in "1 at4m" "2 at12m" "3 at3m"; do
		set -- $s
		all $img "$1" "$2"
		applied $img "$2"
	done
	kept $img
	qemu-img resize -q $img 7M
	qio $img 'write -P 0x84 5M 1M'
	keep $img
	for s in "1 at4m" "2 at12m" "3 at3m"; do
		set -- $s
		all $img "$1" "$2"
	done
	kept $img
done

# --- a bare name that is another snapshot's ID: the ID wins (QEMU)
qemu-img create -q -f qcow2 nm.qcow2 1M
qio nm.qcow2 'write -P 0x91 0 64k'
snap nm.qcow2 alpha
qio nm.qcow2 'write -P 0x92 0 64k'
snap nm.qcow2 1
qio nm.qcow2 'write -P 0x93 0 64k'
keep nm.qcow2
one nm.qcow2 1
qemu-img convert -l snapshot.id=1 -O raw nm.qcow2 id1.raw && cmp -s c.raw id1.raw ||
	bad "bare '1' did not pick the snapshot with ID 1"
one nm.qcow2 snapshot.name=1
cmp -s c.raw id1.raw && bad "snapshot.name=1 read as snapshot.id=1 (the case tests nothing)"
one nm.qcow2 2
"$COWVM" image convert -l 1 -n -O raw nm.qcow2 c.raw || bad "convert -l 1 -n"
qemu-img convert -l 1 -O raw nm.qcow2 q.raw && cmp -s q.raw c.raw || bad "convert -l 1 -n: differs"

# --- errors: both fail, neither leaves an output
err() {   # IMG PARAM [WANT]: both fail; cowvm's message has WANT
	local img=$1 p=$2 want=${3:-}
	n=$((n + 1))
	rm -f eq.raw ec.raw
	qemu-img convert -l "$p" -O raw "$img" eq.raw 2>eq.err && bad "qemu-img convert -l '$p' $img succeeded"
	"$COWVM" image convert -l "$p" -O raw "$img" ec.raw 2>ec.err && bad "cowvm convert -l '$p' $img succeeded"
	[ -e ec.raw ] && bad "cowvm convert -l '$p' $img left its output"
	[ -z "$want" ] || grep -qF -- "$want" ec.err || bad "convert -l '$p' $img: want '$want', got '$(cat ec.err)'"
	echo "ok: convert -l '$p' $img fails: $(head -1 ec.err)"
}
err nm.qcow2 9 "'nm.qcow2': no snapshot with ID or name '9'"
err nm.qcow2 nosuch "no snapshot with ID or name 'nosuch'"
err nm.qcow2 snapshot.id=9 "'nm.qcow2': no snapshot with ID '9'"
err nm.qcow2 snapshot.name=alpha2 "no snapshot with name 'alpha2'"
err nm.qcow2 snapshot.id=2,snapshot.name=alpha "no snapshot with ID '2' and name 'alpha'"
err nm.qcow2 "" "no snapshot with ID or name ''"
err nm.qcow2 snapshot.foo=1 "invalid parameter 'snapshot.foo'"
err nm.qcow2 snapshot.id=1,bar=2 "invalid parameter 'bar'"
qemu-img create -q -f raw plain.raw 1M
err plain.raw 1 "'plain.raw': a raw image has no internal snapshots"
err cs512.qcow2 first,x   # (a bare name with a comma: no such snapshot)
"$COWVM" image convert -f raw -l 1 plain.raw ec.raw 2>/dev/null && bad "convert -f raw -l succeeded"

# --- a VM state: a snapshot whose L1 table maps clusters past its disk
# size (its disk_size in the extra data lowered to 64K: with 512-byte
# clusters the L1 entries from index 2 on, 64K of disk each 32K, are its
# VM state, as QEMU's qcow2_vm_state_offset places it). qemu-img 7.2's
# convert -l, at the image's size, shows them as disk data; cowvm reads
# zeros there and the same bytes elsewhere; at its disk size it reads as
# qemu-img snapshot -a makes the image
qemu-img create -q -f qcow2 -o cluster_size=512 vm.qcow2 1M
qio vm.qcow2 'write -P 0x11 0 64k' 'write -P 0x22 100k 8k'
snap vm.qcow2 vs
so=$(get_be vm.qcow2 64 8)
[ "$(get_be vm.qcow2 $((so + 36)) 4)" = 0x00000018 ] || bad "vm.qcow2: extra data is not 24 bytes"
put_be vm.qcow2 $((so + 48)) 8 65536
qemu-img check -q vm.qcow2 || bad "vm.qcow2 is not clean after the disk_size edit"
keep vm.qcow2
n=$((n + 1))
rm -f q.raw c.raw
qemu-img convert -l vs -O raw vm.qcow2 q.raw || bad "qemu-img convert -l vs vm.qcow2"
"$COWVM" image convert -l vs -O raw vm.qcow2 c.raw || bad "cowvm convert -l vs vm.qcow2"
cmp -s -n 65536 q.raw c.raw || bad "vm.qcow2: the disk part differs"
[ "$(stat -c %s c.raw)" = 1048576 ] || bad "vm.qcow2: output not of the image's size"
cmp -s -i 65536 c.raw /dev/zero -n $((1048576 - 65536)) || bad "vm.qcow2: the VM state read as disk data"
[ "$(od -An -tx1 -j $((100 * 1024)) -N 1 q.raw | tr -d ' ')" = 22 ] &&
	echo "ok: vm.qcow2: qemu-img shows the VM state at 100K, cowvm zeros" ||
	echo "note: qemu-img no longer shows the VM state as disk data"
applied vm.qcow2 vs
kept vm.qcow2

# --- a damaged snapshot L1 table: both refuse a misaligned one, one over
# the header and one too large; one past the end of the file cowvm refuses
# (qemu-img reads it as zeros, all unallocated)
dmg() {   # FIELD_OFF BYTES VALUE WANT
	n=$((n + 1))
	cp vm.qcow2 d.qcow2
	put_be d.qcow2 $((so + $1)) "$2" "$3"
	rm -f ec.raw
	"$COWVM" image convert -l vs -O raw d.qcow2 ec.raw 2>ec.err && bad "convert -l of a snapshot L1 table damaged ($1: $3) succeeded"
	[ -e ec.raw ] && bad "convert -l of a damaged snapshot left its output"
	grep -qF -- "$4" ec.err || bad "damaged snapshot L1 ($1: $3): want '$4', got '$(cat ec.err)'"
	echo "ok: damaged snapshot L1 ($1: $3): $(cat ec.err)"
}
dmg 0 8 $((so + 1)) "not cluster-aligned"
qemu-img convert -l vs -O raw d.qcow2 eq.raw 2>/dev/null && bad "qemu-img took a misaligned snapshot L1 table"
dmg 0 8 0 "overlaps the header"
qemu-img convert -l vs -O raw d.qcow2 eq.raw 2>/dev/null && bad "qemu-img took a snapshot L1 table at 0"
dmg 8 4 5000000 "too large (5000000 entries)"
qemu-img convert -l vs -O raw d.qcow2 eq.raw 2>/dev/null && bad "qemu-img took a snapshot L1 table of 5000000 entries"
dmg 0 8 $((0x7ffffe00)) "extends beyond the end of the file"

# --- cow_open_snapshot refuses writing (cowio snapread checks every
# change); no image with snapshots changed through all of the above
"$COWIO" snapread nm.qcow2 alpha s.raw >/dev/null || bad "cowio snapread: a change was not refused (exit $?)"
kept nm.qcow2

echo "$n cases, $fails failures"
[ "$fails" -eq 0 ] || exit 1
