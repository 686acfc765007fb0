#!/bin/bash
# `cowvm image check [--repair leaks|all]` against qemu-img check on damaged
# images, the cases an audit found wrong (each failed before its fix):
# - a refcount-table entry pointing at a data cluster: reported as a
#   corruption needing a rebuild; --repair leaks never writes refcounts into
#   that cluster (it wrote into guest data); --repair all rebuilds, data intact;
# - persistent dirty bitmaps: their directory, tables and data are references
#   (they were leaks, and a repair freed them);
# - --repair all keeps the corrupt bit while corruptions remain; --repair
#   leaks clears the dirty bit of an image with nothing else wrong;
# - a misaligned L2 data entry keeps the cluster it points into referenced:
#   --repair leaks does not free it (qemu-img check found more errors after);
# - a snapshot entry whose extra data size is invalid: the references
#   cannot all be counted, so no refcount is repaired (the snapshots were
#   freed);
# - --repair leaks fixes COPIED flags when the refcounts are right;
# - refcount-table entries with reserved bits are corruptions; an L1 entry
#   of reserved bits and COPIED only, or COPIED alone (qemu-img takes the
#   header for its L2 table), is repaired to 0; a snapshot table offset QEMU
#   refuses (misaligned, with no snapshots) is cleared;
# - --json escapes the file name; allocated-clusters counts as qemu-img
#   check does (plain zero clusters are not allocated);
# - an L1 table over the refcount table or the header, a refcount table
#   over the header, a header length that is not a multiple of 8: checked
#   and reported (exit 2) where cowvm refused to open them; repairs that
#   cannot be made safely write nothing; what qemu-img cannot open either
#   is refused with a message naming the problem.
# timeout: 180
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v jq >/dev/null || skip "jq not installed"
cow_tmpdir

# check_rc FILE [ARGS...]: cowvm image check's exit status
check_rc() {
	local f=$1
	shift
	"$COWVM" image check "$@" "$f" >ck.out 2>&1
	echo $?
}
# an image with 64 KiB clusters: header, refcount table @64K, refcount
# block @128K, L1 @192K, L2 @256K, data from 320K
fresh() {
	rm -f "$1"
	qemu-img create -q -f qcow2 "$1" 4M
	qemu-io -c "write -P 0x5a 0 128k" -c "write -P 0x6b 1M 64k" "$1" >/dev/null
}
l2e() { echo $(($(get_be "$1" $((0x40000 + 8 * $2)) 8))); }   # FILE VCL: L2 entry
incompat() { echo $(($(get_be "$1" 72 8))); }

# --- a refcount-table entry pointing at a data cluster
fresh rtdata.qcow2
data=$(($(l2e rtdata.qcow2 0) & 0x00fffffffffffe00))
put_be rtdata.qcow2 $((0x10000)) 8 "$data"
rc=$(check_rc rtdata.qcow2)
[ "$rc" = 2 ] || fail "refcount block on data: check exited $rc: $(cat ck.out)"
grep -q "refcount block 0 .*referenced 2 times" ck.out || fail "no overlap reported: $(cat ck.out)"
cp rtdata.qcow2 l.qcow2
"$COWVM" image check --repair leaks l.qcow2 >/dev/null 2>&1
qemu-io -r -c "read -P 0x5a 0 128k" l.qcow2 >/dev/null || fail "--repair leaks wrote into guest data"
cp rtdata.qcow2 a.qcow2
"$COWVM" image check --repair all a.qcow2 >ck.out 2>&1 || fail "--repair all: $(cat ck.out)"
qcheck a.qcow2
qemu-io -r -c "read -P 0x5a 0 128k" -c "read -P 0x6b 1M 64k" a.qcow2 >/dev/null ||
	fail "--repair all lost data"
echo "ok: refcount block on a data cluster"

# --- persistent dirty bitmaps
qemu-img create -q -f qcow2 -o cluster_size=512 bm.qcow2 64M
qemu-img bitmap --add -g 512 bm.qcow2 b0 || skip "qemu-img bitmap not available"
qemu-io -c "write -P 7 0 8M" bm.qcow2 >/dev/null
qemu-img check -q bm.qcow2 || fail "qemu-img check of the bitmap image"
rc=$(check_rc bm.qcow2)
[ "$rc" = 0 ] || fail "bitmaps taken for damage (exit $rc): $(cat ck.out)"
"$COWVM" image check --repair all bm.qcow2 >/dev/null 2>&1 || fail "--repair all of the bitmap image"
qcheck bm.qcow2
qemu-img info --output=json bm.qcow2 | jq -e '."format-specific".data.bitmaps[0].name == "b0"' >/dev/null ||
	fail "the bitmap is gone"
echo "ok: persistent bitmaps"

# --- the corrupt bit stays while corruptions remain; the dirty bit goes
fresh cb.qcow2
put_be cb.qcow2 $((0x30000)) 8 $(((1 << 63) | 0x40200))   # L1[0]: misaligned L2
put_be cb.qcow2 72 8 2
rc=$(check_rc cb.qcow2 --repair all)
[ "$rc" = 2 ] || fail "misaligned L1 entry: --repair all exited $rc: $(cat ck.out)"
[ $(($(incompat cb.qcow2) & 2)) = 2 ] || fail "--repair all cleared the corrupt bit over remaining corruption"
fresh db.qcow2
put_be db.qcow2 72 8 1
rc=$(check_rc db.qcow2 --repair leaks)
[ "$rc" = 0 ] || fail "dirty bit: --repair leaks exited $rc: $(cat ck.out)"
[ "$(incompat db.qcow2)" = 0 ] || fail "--repair leaks left the dirty bit"
echo "ok: corrupt and dirty bits"

# --- a misaligned L2 data entry: its cluster stays referenced
fresh mis.qcow2
put_be mis.qcow2 $((0x40000 + 8 * 16)) 8 $(($(l2e mis.qcow2 16) + 512))
qemu-img check mis.qcow2 >q1.out 2>&1
before=$(grep -c ERROR q1.out)
"$COWVM" image check --repair leaks mis.qcow2 >/dev/null 2>&1
qemu-img check mis.qcow2 >q2.out 2>&1
after=$(grep -c ERROR q2.out)
[ "$after" -le "$before" ] || fail "--repair leaks of a misaligned entry: qemu-img check errors $before -> $after"
echo "ok: misaligned L2 entry"

# --- a damaged snapshot table: nothing is freed
fresh snap.qcow2
qemu-img snapshot -c s1 snap.qcow2
qemu-io -c "write -P 0x77 0 64k" snap.qcow2 >/dev/null
qemu-img snapshot -c s2 snap.qcow2
st=$(($(get_be snap.qcow2 64 8)))
put_be snap.qcow2 $((st + 36)) 4 70000
sum=$(md5sum <snap.qcow2)
rc=$(check_rc snap.qcow2 --repair leaks)
[ "$rc" = 2 ] || fail "damaged snapshot table: check exited $rc: $(cat ck.out)"
grep -q "refcounts left unrepaired" ck.out || fail "no word on the refcounts: $(cat ck.out)"
[ "$(md5sum <snap.qcow2)" = "$sum" ] || fail "--repair leaks changed an image it could not fully check"
echo "ok: damaged snapshot table"

# --- --repair leaks fixes COPIED flags when the refcounts are right
fresh cp.qcow2
put_be cp.qcow2 $((0x40000)) 8 $(($(l2e cp.qcow2 0) & ~(1 << 63)))
rc=$(check_rc cp.qcow2 --repair leaks)
[ "$rc" = 0 ] || fail "COPIED cleared: --repair leaks exited $rc: $(cat ck.out)"
qcheck cp.qcow2
echo "ok: COPIED flags"

# --- reserved bits in a refcount-table entry
fresh rtr.qcow2
put_be rtr.qcow2 $((0x10000 + 8)) 8 1
qemu-img check rtr.qcow2 >q.out 2>&1 && fail "qemu-img check accepted reserved bits"
rc=$(check_rc rtr.qcow2)
[ "$rc" = 2 ] || fail "reserved bits in the refcount table: check exited $rc: $(cat ck.out)"
grep -q "refcount table entry 1 .*reserved bits" ck.out || fail "not reported: $(cat ck.out)"
"$COWVM" image check --repair all rtr.qcow2 >/dev/null 2>&1 || fail "--repair all: $(cat ck.out)"
qcheck rtr.qcow2
echo "ok: reserved bits in the refcount table"

# --- an L1 entry of reserved bits and COPIED only: repaired to 0 (COPIED
# alone would make qemu-img take the header for an L2 table)
qemu-img create -q -f qcow2 l1r.qcow2 2G   # 4 L1 entries (L1 @192K)
qemu-io -c "write -P 0x5a 0 128k" l1r.qcow2 >/dev/null
put_be l1r.qcow2 $((0x30008)) 8 $((0xf900000000000000))
"$COWVM" image check --repair all l1r.qcow2 >ck.out 2>&1 || fail "--repair all: $(cat ck.out)"
qcheck l1r.qcow2
[ "$(get_be l1r.qcow2 $((0x30008)) 8)" = 0x0000000000000000 ] || fail "L1 entry left $(get_be l1r.qcow2 $((0x30008)) 8)"
echo "ok: L1 entry of reserved bits"
put_be l1r.qcow2 $((0x30010)) 8 $((0x8000000000000000))   # COPIED alone
rc=$(check_rc l1r.qcow2)
[ "$rc" = 2 ] || fail "L1 entry of COPIED alone: check exited $rc: $(cat ck.out)"
"$COWVM" image check --repair all l1r.qcow2 >ck.out 2>&1 || fail "--repair all: $(cat ck.out)"
qcheck l1r.qcow2
echo "ok: L1 entry of COPIED alone"

# --- no snapshots, but a snapshot table offset QEMU refuses to open
fresh so.qcow2
put_be so.qcow2 64 8 8
qemu-img check so.qcow2 >/dev/null 2>&1 && fail "qemu-img check accepted a misaligned snapshot table offset"
rc=$(check_rc so.qcow2)
[ "$rc" = 2 ] || fail "snapshot table offset: check exited $rc: $(cat ck.out)"
"$COWVM" image check --repair all so.qcow2 >ck.out 2>&1 || fail "--repair all: $(cat ck.out)"
qcheck so.qcow2
echo "ok: snapshot table offset"

# --- core tables that overlap, and a header length that is not a multiple
# of 8: qemu-img check opens these and reports corruptions (exit 2), and so
# does cowvm check (it refused to open them); a repair never makes them
# worse: an L1 table over the refcount table or the header is not repaired
# (QEMU's repair wrote into the header), nothing is written; a refcount
# table over the header is rebuilt by --repair all (as qemu-img check -r
# all does), a header length not a multiple of 8 rewritten (qemu-img
# reports nothing); the normal opens still refuse them
core() {   # NAME OFFSET BYTES VALUE: a fresh image with one header field changed
	fresh "$1"
	put_be "$1" "$2" "$3" "$4"
}
core l1rt.qcow2 40 8 $((0x10000))     # L1 table at the refcount table
core l1hdr.qcow2 40 8 0               # L1 table at the header
core rthdr.qcow2 48 8 0               # refcount table at the header
core hl106.qcow2 100 4 106            # header length 106
for t in "l1rt:L1 table \\(offset 0x10000, 1 entries\\) overlaps the refcount table:L1 table and refcount table overlap" \
	 "l1hdr:L1 table \\(offset 0x0\\) overlaps the header:L1 table overlaps the header" \
	 "rthdr:refcount table \\(offset 0x0\\) overlaps the header:refcount table overlaps the header" \
	 "hl106:header length 106 is not a multiple of 8:invalid header length 106"; do
	IFS=: read -r n report refusal <<<"$t"
	qemu-img check $n.qcow2 >q.out 2>&1
	qrc=$?
	rc=$(check_rc $n.qcow2)
	if [ $n = hl106 ]; then
		[ "$qrc" = 0 ] || fail "$n: qemu-img check exited $qrc"
	else
		[ "$qrc" = 2 ] || fail "$n: qemu-img check exited $qrc"
	fi
	[ "$rc" = 2 ] || fail "$n: check exited $rc (qemu-img check $qrc): $(cat ck.out)"
	grep -Eq "^ERROR $report" ck.out || fail "$n: not reported: $(cat ck.out)"
	"$COWVM" image info $n.qcow2 >/dev/null 2>ck.err && fail "$n: info opened it"
	grep -Eq "'$n.qcow2': $refusal" ck.err || fail "$n: info: $(cat ck.err)"
done
for n in l1rt l1hdr; do
	for r in leaks all; do
		cp $n.qcow2 r.qcow2
		rc=$(check_rc r.qcow2 --repair $r)
		[ "$rc" = 2 ] || fail "$n: --repair $r exited $rc: $(cat ck.out)"
		grep -q "cowvm cannot repair an L1 table that overlaps .*nothing was changed" ck.out ||
			fail "$n: --repair $r: $(cat ck.out)"
		cmp -s $n.qcow2 r.qcow2 || fail "$n: --repair $r changed the image"
	done
done
cp rthdr.qcow2 r.qcow2
rc=$(check_rc r.qcow2 --repair leaks)
[ "$rc" = 2 ] || fail "rthdr: --repair leaks exited $rc: $(cat ck.out)"
cmp -s rthdr.qcow2 r.qcow2 || fail "rthdr: --repair leaks changed the image"
for n in rthdr hl106; do
	rc=$(check_rc $n.qcow2 --repair all)
	[ "$rc" = 0 ] || fail "$n: --repair all exited $rc: $(cat ck.out)"
	qcheck $n.qcow2
	qemu-io -r -c "read -P 0x5a 0 128k" -c "read -P 0x6b 1M 64k" $n.qcow2 >q.out ||
		fail "$n: data after --repair all: $(cat q.out)"
	grep -q "verification failed" q.out && fail "$n: data after --repair all: $(cat q.out)"
	"$COWVM" image info $n.qcow2 >/dev/null || fail "$n: info after --repair all"
done
[ "$(get_be hl106.qcow2 100 4)" = 0x00000070 ] || fail "header length after repair: $(get_be hl106.qcow2 100 4)"
echo "ok: overlapping core tables and header length reported as qemu-img check does"
# ... and where qemu-img refuses to open, so does cowvm check (exit 1),
# naming the problem: an end marker whose length runs past the header
# cluster (a header length of 108 reads one in the padding), a header
# shorter than 104 bytes, a misaligned L1 table
core hl108.qcow2 100 4 108
core hl100.qcow2 100 4 100
core l1mis.qcow2 40 8 $((0x30200))
for t in "hl108:header extension 0x00000000 \\(length [0-9]+\\) runs past the header cluster" \
	 "hl100:invalid header length 100" "l1mis:L1 table offset 0x30200 is not cluster-aligned"; do
	n=${t%%:*}
	qemu-img check $n.qcow2 >q.out 2>&1
	grep -q "Could not open" q.out || fail "$n: qemu-img check: $(cat q.out)"
	rc=$(check_rc $n.qcow2)
	[ "$rc" = 1 ] || fail "$n: check exited $rc: $(cat ck.out)"
	grep -Eq "'$n.qcow2': ${t#*:}" ck.out || fail "$n: check: $(cat ck.out)"
done
echo "ok: what qemu-img check cannot open is refused"

# --- --json: the name escaped, allocated-clusters as qemu-img counts it
fresh 'we"ird\name.qcow2'
qemu-io -c "write -z 2M 128k" 'we"ird\name.qcow2' >/dev/null
"$COWVM" image check --json 'we"ird\name.qcow2' >c.json || fail "check --json"
jq -e '.filename == "we\"ird\\name.qcow2"' c.json >/dev/null || fail "--json: $(cat c.json)"
q=$(qemu-img check --output=json 'we"ird\name.qcow2' | jq '."allocated-clusters"')
c=$(jq '."allocated-clusters"' c.json)
[ -n "$q" ] && [ "$q" = "$c" ] || fail "allocated-clusters: qemu-img $q, cowvm $c"
"$COWVM" image check --output=xml 'we"ird\name.qcow2' >/dev/null 2>&1 && fail "--output=xml accepted"
echo "ok: --json"
echo PASS
