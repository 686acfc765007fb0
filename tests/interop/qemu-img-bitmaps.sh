#!/bin/bash
# Persistent dirty bitmaps (made by qemu-img) in an image cowvm writes,
# maintained as QEMU maintains them (cow/bitmaps.c): marked in use before
# the first write, every change of guest data recorded in each enabled
# bitmap, stored consistent at close (and when the image becomes an
# external snapshot's backing file):
# - after cowvm's writes (cow/ requests of every kind: write, write-zeroes
#   with and without unmap, discard, compressed; storage/ through
#   io_uring, allocating and in place, with and without O_DIRECT)
#   qemu-img lists b0 (enabled) and b1 (disabled) not in use, `qemu-img
#   check` finds nothing (no leak), and the areas QEMU reads as dirty are
#   exactly the granularity-rounded union of what QEMU and cowvm wrote;
#   b1 keeps what it held;
# - QEMU writing after cowvm keeps accumulating (it reads cowvm's bitmap);
# - granularities 512 B (4 KiB clusters: a bitmap of several clusters of
#   bits), 64 KiB and 1 MiB on a disk that is not a multiple of them,
#   the last granule written; a full cluster of bits stored as an "all
#   ones" table entry, read back by QEMU and by cowvm;
# - a kill -9 of the writer, or a store that fails (EFBIG; the close
#   fails), leaves the bitmaps in use, check clean but for leaks;
# - a grow and a shrink between writes (not COW_O_KEEP_BITMAPS) resize
#   them to exactly the bits QEMU gets (the same writes, qemu-img resize);
# - an external snapshot (cow_overlay_check) stores them consistent, and
#   a write after a check without attach marks them in use again;
# - opening read-only marks nothing;
# - a bitmap directory that does not hold what the extension says is not
#   written into: the bitmaps are dropped (autoclear bit 0 cleared) as
#   before, and qemu-img check reports leaks only.
# timeout: 300
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v jq >/dev/null || skip "jq not installed"
command -v qemu-io >/dev/null || skip "qemu-io not installed (Debian qemu-utils)"
command -v qemu-nbd >/dev/null || skip "qemu-nbd not installed (Debian qemu-utils)"
cow_tmpdir

M=$((1 << 20)) K=1024

flags() {   # IMG: "name:flag,flag name:..." as qemu-img info lists them
	qemu-img info -U --output=json "$1" |
		jq -r '[."format-specific".data.bitmaps // [] | .[] | .name + ":" + (.flags | join(","))] | join(" ")'
}
want_flags() {   # IMG EXPECTED WHEN
	local f
	f=$(flags "$1")
	[ "$f" = "$2" ] || fail "$3: the bitmaps of $1 are '$f', expected '$2'"
}
# union G SIZE OFF:LEN...: the ranges rounded out to granularity G (cut at
# SIZE) and merged, as bm_dirty prints them
union() {
	local g=$1 sz=$2 r o l a b
	shift 2
	echo "[$(for r; do
		o=${r%%:*} l=${r#*:}
		a=$((o / g * g)) b=$(((o + l + g - 1) / g * g))
		[ "$b" -gt "$sz" ] && b=$sz
		echo "$a $b"
	done | sort -n -k1,1 -k2,2 | awk '
		{ if (n == 0 || $1 > e) { if (n++) out = out sprintf("[%d,%d],", s, e - s); s = $1; e = $2 }
		  else if ($2 > e) e = $2 }
		END { if (n) out = out sprintf("[%d,%d]", s, e - s); printf "%s", out }')]"
}
want_dirty() {   # IMG NAME EXPECTED WHEN
	local d
	d=$(bm_dirty "$1" "$2")
	[ "$d" = "$3" ] || fail "$4: bitmap $2 of $1 reads dirty as $d, expected $3 ($(cat nbd.log))"
}

# ---- b0 enabled (64 KiB), b1 disabled with content of its own ----
qemu-img create -q -f qcow2 bm.qcow2 64M
# allocated before any bitmap: cowvm's writes there go in place
qemu-io -c "write -P 0x33 $((56 * M)) 1M" bm.qcow2 >/dev/null || fail "qemu-io write"
qemu-img bitmap --add -g 65536 bm.qcow2 b0 || skip "qemu-img bitmap not available"
qemu-img bitmap --add -g 65536 bm.qcow2 b1
qemu-io -c "write -P 0x11 0 1M" -c "write -P 0x22 $((32 * M)) 256k" bm.qcow2 >/dev/null ||
	fail "qemu-io write"
qemu-img bitmap --disable bm.qcow2 b1
want_flags bm.qcow2 "b0:auto b1:" "from qemu-img"
B1=$(union 65536 $((64 * M)) 0:$M $((32 * M)):$((256 * K)))
want_dirty bm.qcow2 b1 "$B1" "as QEMU left it"
Q=(0:$M $((32 * M)):$((256 * K)))

# reading marks nothing
qemu-img convert -O raw bm.qcow2 ref.raw
"$COWIO" cmp bm.qcow2 ref.raw || fail "cowvm reads the bitmap image differently"
"$COWVM" image info bm.qcow2 >/dev/null || fail "image info"
want_flags bm.qcow2 "b0:auto b1:" "after a read-only open"

# cow/ requests of every kind
W=(5000:3000 $((8 * M)):$((64 * K)) $((9 * M + 100)):$((200 * K)) $((12 * M)):$M
   $((20 * M)):$((128 * K)) $((63 * M + 512)):$((M - 512)))
"$COWIO" ops bm.qcow2 w:5000:3000 z:$((8 * M)):$((64 * K)) u:$((9 * M + 100)):$((200 * K)) \
	x:"qemu-img info -U bm.qcow2 | grep -q in-use" \
	d:$((12 * M)):$M c:$((20 * M)):$((128 * K)) w:$((63 * M + 512)):$((M - 512)) ||
	fail "cowio ops (the bitmaps not in use while it wrote?)"
want_flags bm.qcow2 "b0:auto b1:" "after cowvm's cow/ writes"
qcheck bm.qcow2
want_dirty bm.qcow2 b0 "$(union 65536 $((64 * M)) "${Q[@]}" "${W[@]}")" "after cowvm's cow/ writes"
want_dirty bm.qcow2 b1 "$B1" "b1 (disabled) after cowvm's writes"
# storage/: io_uring, buffered and O_DIRECT, allocating and in place
"$COWVM" image bench -w -i io_uring -o $((40 * M)) -c 8 -s 4096 bm.qcow2 >bench.out 2>&1 ||
	fail "bench: $(cat bench.out)"
"$COWVM" image bench -t none -i io_uring -w -o $((48 * M + 4096)) -c 4 -s 65536 bm.qcow2 >bench.out 2>&1 ||
	fail "bench -t none: $(cat bench.out)"
"$COWVM" image bench -t none -i io_uring -w -o $((56 * M + 128 * K)) -c 2 -s 4096 bm.qcow2 >bench.out 2>&1 ||
	fail "bench -t none in place: $(cat bench.out)"
"$COWVM" image bench -i io_uring -w -o $((56 * M + 512 * K)) -c 1 -s 512 bm.qcow2 >bench.out 2>&1 ||
	fail "bench in place: $(cat bench.out)"
W+=($((40 * M)):$((32 * K)) $((48 * M + 4096)):$((256 * K)) $((56 * M + 128 * K)):$((8 * K))
    $((56 * M + 512 * K)):512)
want_flags bm.qcow2 "b0:auto b1:" "after cowvm's storage/ writes"
qcheck bm.qcow2
want_dirty bm.qcow2 b0 "$(union 65536 $((64 * M)) "${Q[@]}" "${W[@]}")" "after cowvm's storage/ writes"
want_dirty bm.qcow2 b1 "$B1" "b1 (disabled) after cowvm's storage/ writes"
# QEMU reads cowvm's bitmap and keeps adding to it, and cowvm QEMU's
qemu-io -c "write -P 0x44 $((60 * M)) 4k" bm.qcow2 >/dev/null || fail "qemu-io write after cowvm"
"$COWIO" ops bm.qcow2 w:$((62 * M)):1 || fail "cowio ops after QEMU"
Q+=($((60 * M)):4096) W+=($((62 * M)):1)
want_flags bm.qcow2 "b0:auto b1:" "after QEMU's and cowvm's writes"
qcheck bm.qcow2
want_dirty bm.qcow2 b0 "$(union 65536 $((64 * M)) "${Q[@]}" "${W[@]}")" "after QEMU's and cowvm's writes"
want_dirty bm.qcow2 b1 "$B1" "b1 at the end"
"$COWVM" image check bm.qcow2 >ck.out 2>&1 || fail "cowvm image check: $(cat ck.out)"
echo "ok: cowvm's writes recorded in b0 as QEMU reads it, b1 unchanged"

# a crash while writing: in use, no corruption
cp bm.qcow2 crash.qcow2
"$COWIO" ops crash.qcow2 w:$((30 * M)):$M f w:$((50 * M)):4096 k
[ $? -eq 137 ] || fail "cowio ops with k was not killed"
want_flags crash.qcow2 "b0:in-use,auto b1:in-use" "after a kill -9"
qcheck crash.qcow2 leaks
# a grow and a shrink (not COW_O_KEEP_BITMAPS: `cowvm image commit` grows
# its base so) between writes: the bitmaps follow the size as QEMU's do
# (the same writes and qemu-img resize on a copy: the same bits)
# (the shrink's write lies below the granule across the new end, whose
# bit stays clear: the release of the tail is not a recorded change)
for r in "g:$((80 * M)):$((70 * M))" "s:$((40 * M + 1536)):$((39 * M))"; do
	IFS=: read -r op sz at <<<"$r"
	cp bm.qcow2 rs.qcow2
	cp bm.qcow2 qrs.qcow2
	"$COWIO" ops rs.qcow2 w:$((3 * M)):4096 "$op:$sz" w:"$at":100 || fail "cowio ops with $op:$sz"
	shrink=()
	[ "$op" = s ] && shrink=(--shrink)
	qemu-io -c "write $((3 * M)) 4k" qrs.qcow2 >/dev/null && qemu-img resize -q "${shrink[@]}" qrs.qcow2 "$sz" &&
		qemu-io -c "write $at 100" qrs.qcow2 >/dev/null || fail "qemu: the same with $op:$sz"
	want_flags rs.qcow2 "b0:auto b1:" "after $op:$sz"
	qcheck rs.qcow2
	for b in b0 b1; do
		want_dirty rs.qcow2 $b "$(bm_dirty qrs.qcow2 $b)" "after $op:$sz (QEMU's bits)"
	done
	[ "$(bm_dirty rs.qcow2 b1)" != "[]" ] || fail "b1 lost its bits in $op:$sz"
done
# a store that fails (no write past the end of the file: EFBIG): the
# close says so, the bitmaps stay in use, nothing is corrupt
qemu-img create -q -f qcow2 efbig.qcow2 64M
qemu-img bitmap --add efbig.qcow2 b0
qemu-img bitmap --add --disable efbig.qcow2 b1
COWVM_COW_PREALLOC=0 "$COWIO" ops efbig.qcow2 w:0:4096 w:$((8 * M)):4096 l
[ $? -eq 4 ] || fail "the close succeeded although the bitmaps could not be stored"
want_flags efbig.qcow2 "b0:in-use,auto b1:in-use" "after a failed store"
qcheck efbig.qcow2 leaks
# the same under `cowvm image commit`: the base's bitmaps cannot be stored
# at its close (the file may not grow), so the command fails and says why
qemu-img create -q -f qcow2 cb.qcow2 64M
qemu-io -c "write -P 1 0 8M" cb.qcow2 >/dev/null
qemu-img bitmap --add cb.qcow2 b0
qemu-img create -q -f qcow2 -b cb.qcow2 -F qcow2 ct.qcow2
qemu-io -c "write -P 2 1M 1M" ct.qcow2 >/dev/null
sz=$(stat -c %s cb.qcow2)
(trap '' XFSZ; ulimit -f $(((sz + 1023) / 1024)); exec "$COWVM" image commit ct.qcow2) >commit.out 2>&1 &&
	{ cat commit.out; fail "commit succeeded although the base's bitmaps could not be stored"; }
grep -q "cowvm: .*cb.qcow2.*bitmap" commit.out || { cat commit.out; fail "commit's failed close was not told"; }
grep -q "Image committed" commit.out && { cat commit.out; fail "commit said it was done although its close failed"; }
want_flags cb.qcow2 "b0:in-use,auto" "after a commit whose store failed"
qcheck cb.qcow2 leaks
echo "ok: a crash and a failed store leave them in use (commit says so); a grow and a shrink resize them as QEMU does"

# an external snapshot: stored consistent by cow_overlay_check; a write
# after a check that was not followed by the attach marks them in use again
cp bm.qcow2 base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 ovl.qcow2
"$COWIO" ops base.qcow2 w:$((16 * M)):4096 O:ovl.qcow2 \
	x:"[ \"\$(qemu-img info -U base.qcow2 | grep -c in-use)\" = 0 ]" \
	w:$((17 * M)):4096 x:"[ \"\$(qemu-img info -U base.qcow2 | grep -c in-use)\" = 2 ]" \
	o:ovl.qcow2 x:"[ \"\$(qemu-img info -U base.qcow2 | grep -c in-use)\" = 0 ]" \
	w:$((18 * M)):4096 || fail "cowio ops with an overlay"
want_flags base.qcow2 "b0:auto b1:" "the snapshot's backing file"
qcheck base.qcow2
qcheck ovl.qcow2
want_dirty base.qcow2 b0 "$(union 65536 $((64 * M)) "${Q[@]}" "${W[@]}" $((16 * M)):4096 $((17 * M)):4096)" \
	"the snapshot's backing file"
echo "ok: an external snapshot stores them"

# ---- granularities, a size that is not a multiple of them ----
SZ=$((64 * M + 1536))
for g in 512 65536 1048576; do
	cs=65536
	[ $g = 512 ] && cs=4096
	rm -f g.qcow2
	qemu-img create -q -f qcow2 -o cluster_size=$cs g.qcow2 $SZ
	qemu-img bitmap --add -g $g g.qcow2 b0
	qemu-io -c "write 3M 5k" g.qcow2 >/dev/null || fail "qemu-io write (g $g)"
	"$COWIO" ops g.qcow2 w:$((SZ - 100)):100 w:777:1 z:$((7 * M + 3)):1000 \
		c:$((10 * M)):$((2 * cs)) d:$((11 * M)):$M || fail "cowio ops (g $g)"
	want_flags g.qcow2 "b0:auto" "granularity $g"
	qcheck g.qcow2
	E=(3145728:5120 $((SZ - 100)):100 777:1 $((7 * M + 3)):1000 $((10 * M)):$((2 * cs)) $((11 * M)):$M)
	want_dirty g.qcow2 b0 "$(union $g $SZ "${E[@]}")" "granularity $g"
	qemu-io -c "write $((SZ - 512)) 512" g.qcow2 >/dev/null || fail "qemu-io last sector (g $g)"
	"$COWIO" ops g.qcow2 w:$((40 * M)):512 || fail "cowio ops again (g $g)"
	want_dirty g.qcow2 b0 "$(union $g $SZ "${E[@]}" $((SZ - 512)):512 $((40 * M)):512)" \
		"granularity $g, after QEMU and cowvm again"
	qcheck g.qcow2
	# grown from a size that is not a multiple of the granularity: the
	# bits QEMU gets growing it so
	cp g.qcow2 gg.qcow2
	cp g.qcow2 qgg.qcow2
	"$COWIO" ops gg.qcow2 g:$((SZ + 3 * M + 512)) w:$((SZ + M)):1 || fail "cowio grow (g $g)"
	qemu-img resize -q qgg.qcow2 $((SZ + 3 * M + 512)) && qemu-io -c "write $((SZ + M)) 1" qgg.qcow2 >/dev/null ||
		fail "qemu-img resize (g $g)"
	want_flags gg.qcow2 "b0:auto" "granularity $g, grown"
	qcheck gg.qcow2
	want_dirty gg.qcow2 b0 "$(bm_dirty qgg.qcow2 b0)" "granularity $g, grown (QEMU's bits)"
	# shrunk into a granule (1 MiB: larger than a cluster, part of it
	# released by the shrink, which is no recorded change)
	cp g.qcow2 gs.qcow2
	cp g.qcow2 qgs.qcow2
	ns=$((SZ - 3 * M + 65536 + 512))
	"$COWIO" ops gs.qcow2 s:$ns w:$((20 * M)):1 || fail "cowio shrink (g $g)"
	qemu-img resize -q --shrink qgs.qcow2 $ns && qemu-io -c "write $((20 * M)) 1" qgs.qcow2 >/dev/null ||
		fail "qemu-img resize --shrink (g $g)"
	want_flags gs.qcow2 "b0:auto" "granularity $g, shrunk"
	qcheck gs.qcow2
	want_dirty gs.qcow2 b0 "$(bm_dirty qgs.qcow2 b0)" "granularity $g, shrunk (QEMU's bits)"
done
echo "ok: granularities 512, 64k, 1M over $SZ bytes"

# ---- a whole cluster of bits set: an "all ones" table entry ----
# (4 KiB clusters, 512-byte granularity: one cluster of bits is 16 MiB)
qemu-img create -q -f qcow2 -o cluster_size=4096 ones.qcow2 64M
qemu-img bitmap --add -g 512 ones.qcow2 b0
"$COWIO" ops ones.qcow2 z:0:$((16 * M)) w:$((20 * M)):512 || fail "cowio ops (all ones)"
want_flags ones.qcow2 "b0:auto" "all ones"
qcheck ones.qcow2
# the table entry of the first cluster of bits: 1 ("all ones")
hl=$(($(get_be ones.qcow2 100 4)))
o=$hl found=
while [ $((o + 8)) -le 4096 ]; do
	t=$(get_be ones.qcow2 "$o" 4)
	l=$(($(get_be ones.qcow2 $((o + 4)) 4)))
	[ "$t" = 0x00000000 ] && break
	if [ "$t" = 0x23852875 ]; then found=$o; break; fi
	o=$((o + 8 + (l + 7) / 8 * 8))
done
[ -n "$found" ] || fail "no bitmaps extension in ones.qcow2"
dir=$(get_be ones.qcow2 $((found + 24)) 8)
tab=$(get_be ones.qcow2 $((dir)) 8)
[ "$(get_be ones.qcow2 $((tab)) 8)" = 0x0000000000000001 ] ||
	fail "the first table entry is $(get_be ones.qcow2 $((tab)) 8), not 'all ones'"
[ "$(get_be ones.qcow2 $((tab + 16)) 8)" = 0x0000000000000000 ] ||
	fail "the third table entry (nothing written) is not 0"
want_dirty ones.qcow2 b0 "$(union 512 $((64 * M)) 0:$((16 * M)) $((20 * M)):512)" "all ones"
# cowvm loads the entry and stores it again; QEMU too
"$COWIO" ops ones.qcow2 w:$((30 * M)):512 || fail "cowio ops over all ones"
qemu-io -c "write $((40 * M)) 512" ones.qcow2 >/dev/null || fail "qemu-io over all ones"
qcheck ones.qcow2
want_dirty ones.qcow2 b0 "$(union 512 $((64 * M)) 0:$((16 * M)) $((20 * M)):512 $((30 * M)):512 $((40 * M)):512)" \
	"all ones, stored again"
echo "ok: all ones"

# ---- a bitmap QEMU left in use stays so ----
cp bm.qcow2 inuse.qcow2
qemu-io -c "write 0 4k" -c "sigraise 9" inuse.qcow2 >/dev/null 2>&1
want_flags inuse.qcow2 "b0:in-use,auto b1:in-use" "after QEMU was killed"
"$COWIO" ops inuse.qcow2 w:0:4096 || fail "cowio ops over bitmaps in use"
want_flags inuse.qcow2 "b0:in-use,auto b1:in-use" "cowvm over bitmaps in use"
qcheck inuse.qcow2
qemu-img bitmap --remove inuse.qcow2 b0 && qemu-img bitmap --remove inuse.qcow2 b1 ||
	fail "qemu-img bitmap --remove of the in-use bitmaps"
qcheck inuse.qcow2
echo "ok: in use stays in use"

# ---- a damaged directory: the extension claims 3 bitmaps, the directory holds 2 ----
qemu-img create -q -f qcow2 bad.qcow2 64M
qemu-img bitmap --add bad.qcow2 b0
qemu-img bitmap --add bad.qcow2 b1
hl=$(($(get_be bad.qcow2 100 4)))
o=$hl found=
while [ $((o + 8)) -le 65536 ]; do
	t=$(get_be bad.qcow2 "$o" 4)
	l=$(($(get_be bad.qcow2 $((o + 4)) 4)))
	[ "$t" = 0x00000000 ] && break
	if [ "$t" = 0x23852875 ]; then found=$o; break; fi
	o=$((o + 8 + (l + 7) / 8 * 8))
done
[ -n "$found" ] || fail "no bitmaps extension found in bad.qcow2"
[ $(($(get_be bad.qcow2 $((found + 8)) 4))) = 2 ] || fail "the extension does not count 2 bitmaps"
put_be bad.qcow2 $((found + 8)) 4 3
dir=$(get_be bad.qcow2 $((found + 24)) 8) dsize=$(($(get_be bad.qcow2 $((found + 16)) 8)))
before=$(od -An -tx1 -j $((dir)) -N "$dsize" bad.qcow2 | md5sum)
truncate -s 64M bad.raw   # empty (QEMU refuses to open bad.qcow2 now)
"$COWIO" random bad.qcow2 bad.raw 9 50 || fail "cowio random writes into bad.qcow2"
after=$(od -An -tx1 -j $((dir)) -N "$dsize" bad.qcow2 | md5sum)
[ "$before" = "$after" ] || fail "cowvm wrote into a bitmap directory it could not read"
[ "$(get_be bad.qcow2 88 8)" = 0x0000000000000000 ] || fail "autoclear bit 0 left set over a bad directory"
qcheck bad.qcow2 leaks
qcompare bad.raw bad.qcow2
echo "ok: a bad directory is not written into"
echo "PASS"
