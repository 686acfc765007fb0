#!/bin/bash
# `cowvm image convert -B BACKING [-F FMT]` and `-n` against qemu-img convert
# -B / -n (QEMU 7.2), on the same sources:
# - -B over a depth-3 chain whose top is longer than its backing file and
#   holds data, written zeros, zero clusters and a discarded cluster; over a
#   raw source; over a cowvm overlay written in 4 KiB pieces (subclusters);
#   with -c: qemu-img check clean, qemu-img compare equal to the source,
#   the backing file named, and (standard L2 entries) the same `qemu-img map`
#   as qemu-img's output, offsets apart; only the top layer's clusters
#   allocated (the chain's data stays in the backing file);
# - -n into an existing qcow2 and raw image, larger than the source and
#   full of other data: the same bytes as qemu-img convert -n gives a copy
#   of it (the area past the source's end left as it was); -n -B into an
#   existing overlay: the same bytes as qemu-img's, and the source's bytes
#   also where the overlay held data past the end of its backing file
#   (qemu-img 7.2 leaves that data there);
# - -S 0 (fully allocated, zeros written as data), -S 64k, -S 512 and -S 0 -c
#   against qemu-img convert -S: the same map;
# - refused with a message, nothing written: -n into a smaller image or a
#   missing one, -B with -O raw, -F without -B, -B naming DST, -B naming a
#   missing file (no DST left behind), -n with --cluster-size, -n -c into
#   raw, -S not whole sectors; a failing convert (file-size limit) removes the DST it created and
#   leaves an existing -n DST.
# timeout: 300
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v jq >/dev/null || skip "jq not installed"
cow_tmpdir

# `qemu-img map` without host offsets, runs of the same kind merged
qmap_nooff() {
	qemu-img map --output=json "$@" | jq -c 'map(del(.offset)) | reduce .[] as $e ([];
		if length > 0 and (.[-1] | del(.start, .length)) == ($e | del(.start, .length)) and
		   .[-1].start + .[-1].length == $e.start
		then .[-1].length += $e.length else . + [$e] end)'
}
# the guest bytes of the data clusters the top layer of IMG holds (depth 0)
top_data() { qemu-img map --output=json "$1" | jq '[.[] | select(.depth == 0 and .data) | .length] | add // 0'; }
backing_of() { qemu-img info --output=json "$1" | jq -r '."backing-filename" // ""'; }
sum() { md5sum "$1" | cut -d' ' -f1; }

# ---- a chain: base (8M) <- mid (8M) <- top (12M, longer than mid) ----
qemu-img create -q -f qcow2 base.qcow2 8M
qemu-io -c "write -P 0x11 0 8M" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
qemu-io -c "write -P 0x22 1M 1M" -c "write -z 3M 64k" mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 12M
qemu-io -c "write -P 0x33 64k 64k" -c "write -P 0x34 1088k 4k" -c "write -z 2M 128k" \
	-c "write -P 0 4M 64k" -c "discard 1536k 64k" -c "write -P 0x35 9M 4k" top.qcow2 >/dev/null
# the new backing file: the old chain under another name (a flat copy)
qemu-img convert -O qcow2 mid.qcow2 newbase.qcow2

for x in off on; do
	rm -f c.qcow2 q.qcow2
	"$COWVM" image convert --extended-l2=$x -B newbase.qcow2 -F qcow2 top.qcow2 c.qcow2 ||
		fail "convert -B (extended L2 $x)"
	qcheck c.qcow2
	qcompare top.qcow2 c.qcow2
	[ "$(backing_of c.qcow2)" = newbase.qcow2 ] || fail "convert -B: backing file '$(backing_of c.qcow2)'"
	jq_true ".\"format-specific\".data.\"extended-l2\" == $([ $x = on ] && echo true || echo false)" \
		qemu-img info --output=json c.qcow2 || fail "convert -B --extended-l2=$x: not so in the image"
	# only the top layer's own data: 64k + 4k (in a cluster) + 4k, far less
	# than the chain's 8M
	[ "$(top_data c.qcow2)" -le $((3 * 65536)) ] || fail "convert -B allocated $(top_data c.qcow2) bytes of data"
	if [ $x = off ]; then
		qemu-img convert -O qcow2 -B newbase.qcow2 -F qcow2 top.qcow2 q.qcow2
		[ "$(qmap_nooff c.qcow2)" = "$(qmap_nooff q.qcow2)" ] ||
			{ qmap_nooff c.qcow2; qmap_nooff q.qcow2; fail "convert -B: map differs from qemu-img's"; }
	fi
done
echo "convert -B over a depth-3 chain: qemu-img map equal, $(top_data c.qcow2) bytes of data copied"

# compressed
rm -f c.qcow2
"$COWVM" image convert -c -B newbase.qcow2 top.qcow2 c.qcow2 || fail "convert -c -B"
qcheck c.qcow2
qcompare top.qcow2 c.qcow2
qemu-img check c.qcow2 | grep -q "[1-9][0-9.]*% compressed clusters" || fail "convert -c -B: nothing compressed"

# a raw source: all of it copied, its zeros as zero clusters
qemu-img convert -O raw top.qcow2 top.raw
rm -f c.qcow2 q.qcow2
"$COWVM" image convert -f raw --extended-l2=off -B base.qcow2 top.raw c.qcow2 || fail "convert -B of a raw source"
qemu-img convert -f raw -O qcow2 -B base.qcow2 -F qcow2 top.raw q.qcow2
qcheck c.qcow2
qcompare top.qcow2 c.qcow2
[ "$(qmap_nooff c.qcow2)" = "$(qmap_nooff q.qcow2)" ] ||
	{ qmap_nooff c.qcow2; qmap_nooff q.qcow2; fail "convert -B of a raw source: map differs from qemu-img's"; }

# a qcow2 source without a backing file: what it leaves unallocated reads
# zeros, so it gets zero clusters over the new backing file
qemu-img create -q -f qcow2 nob.qcow2 8M
qemu-io -c "write -P 0x51 1M 64k" -c "write -z 3M 64k" nob.qcow2 >/dev/null
rm -f c.qcow2 q.qcow2
"$COWVM" image convert --extended-l2=off -B base.qcow2 nob.qcow2 c.qcow2 || fail "convert -B of an image without a backing file"
qemu-img convert -O qcow2 -B base.qcow2 -F qcow2 nob.qcow2 q.qcow2
qcheck c.qcow2
qcompare nob.qcow2 c.qcow2
[ "$(qmap_nooff c.qcow2)" = "$(qmap_nooff q.qcow2)" ] ||
	{ qmap_nooff c.qcow2; qmap_nooff q.qcow2; fail "convert -B without a backing file: map differs from qemu-img's"; }

# a cowvm overlay written in 4 KiB pieces (extended L2: 2 KiB subclusters),
# with and without -c: the pieces stay pieces
"$COWVM" image create -b base.qcow2 sub.qcow2 >/dev/null || fail "create sub.qcow2"
qemu-io -c "write -P 0x41 4k 4k" -c "write -P 0x42 70k 10k" -c "write -z 200k 4k" \
	-c "write -P 0x43 1M 192k" -c "write -P 0x44 8188k 4k" sub.qcow2 >/dev/null
for c in "" -c; do
	rm -f c.qcow2
	"$COWVM" image convert $c -B base.qcow2 sub.qcow2 c.qcow2 || fail "convert $c -B of a cowvm overlay"
	qcheck c.qcow2
	qcompare sub.qcow2 c.qcow2
	[ "$(top_data c.qcow2)" = "$(top_data sub.qcow2)" ] ||
		fail "convert $c -B of a cowvm overlay: $(top_data c.qcow2) bytes of data, the source $(top_data sub.qcow2)"
done
echo "convert -B of a subclustered overlay: $(top_data c.qcow2) bytes of data, as the source"

# ---- -n ----
qemu-img create -q -f qcow2 filled.qcow2 16M
qemu-io -c "write -P 0x77 0 16M" filled.qcow2 >/dev/null
qemu-img create -q -f raw filled.raw 16M
qemu-io -f raw -c "write -P 0x77 0 16M" filled.raw >/dev/null
for f in filled.qcow2 filled.raw; do
	fmt=${f##*.}
	cp $f c.$fmt
	cp $f q.$fmt
	"$COWVM" image convert -n top.qcow2 c.$fmt || fail "convert -n into $f"
	qemu-img convert -n -O $fmt top.qcow2 q.$fmt
	[ $fmt = qcow2 ] && qcheck c.$fmt
	qemu-img compare -q -f $fmt -F $fmt c.$fmt q.$fmt || fail "convert -n into $f: differs from qemu-img's"
	# the source's bytes, and past its end the old ones
	qemu-img convert -O raw -f $fmt c.$fmt c.out.raw
	cmp -n $((12 << 20)) c.out.raw top.raw || fail "convert -n into $f: not the source's bytes"
	[ "$(tail -c 4M c.out.raw | tr -d '\167' | wc -c)" = 0 ] || fail "convert -n into $f: the tail changed"
	# -O names the format; a wrong one is refused
	cp $f c.$fmt
	"$COWVM" image convert -n -O $fmt top.qcow2 c.$fmt || fail "convert -n -O $fmt into $f"
	qemu-img compare -q -f $fmt -F $fmt c.$fmt q.$fmt || fail "convert -n -O $fmt into $f: differs"
done
# -n -B: only the top layer into an existing overlay
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 ov.qcow2 12M
qemu-io -c "write -P 0x66 5M 1M" ov.qcow2 >/dev/null
cp ov.qcow2 c.qcow2
cp ov.qcow2 q.qcow2
"$COWVM" image convert -n -B newbase.qcow2 top.qcow2 c.qcow2 || fail "convert -n -B"
qemu-img convert -n -O qcow2 -B newbase.qcow2 -F qcow2 top.qcow2 q.qcow2
qcheck c.qcow2
qcompare q.qcow2 c.qcow2
[ "$(backing_of c.qcow2)" = base.qcow2 ] || fail "convert -n -B changed the backing file"
# an existing overlay with data past the end of its backing file, where the
# source reads zeros: written as zeros (qemu-img 7.2 leaves the old data
# there, taking the area for one that reads zeros through its backing file)
qemu-img create -q -f qcow2 -b newbase.qcow2 -F qcow2 ov2.qcow2 12M
qemu-io -c "write -P 0x67 8448k 64k" ov2.qcow2 >/dev/null
cp ov2.qcow2 c.qcow2
cp ov2.qcow2 q.qcow2
"$COWVM" image convert -n -B newbase.qcow2 top.qcow2 c.qcow2 || fail "convert -n -B (data past the backing file)"
qcheck c.qcow2
qcompare top.qcow2 c.qcow2
qemu-img convert -n -O qcow2 -B newbase.qcow2 -F qcow2 top.qcow2 q.qcow2
echo "qemu-img convert -n -B there: $(qemu-img compare top.qcow2 q.qcow2 2>&1)"
echo "convert -n: as qemu-img's into qcow2, raw and an overlay"

# ---- -S: zero detection (0: none, fully allocated) ----
for args in "-S 0" "-S 64k -o cluster_size=4k" "-S 512 -o cluster_size=512" "-S 0 -c"; do
	cargs=${args/-o cluster_size=/--cluster-size }
	rm -f c.qcow2 q.qcow2
	"$COWVM" image convert $cargs top.qcow2 c.qcow2 || fail "convert $cargs"
	qemu-img convert -O qcow2 $args top.qcow2 q.qcow2
	qcheck c.qcow2
	qcompare top.qcow2 c.qcow2
	[ "$(qmap_nooff c.qcow2)" = "$(qmap_nooff q.qcow2)" ] ||
		{ qmap_nooff c.qcow2; qmap_nooff q.qcow2; fail "convert $cargs: map differs from qemu-img's"; }
done
rm -f c.raw
"$COWVM" image convert -S 0 -O raw top.qcow2 c.raw || fail "convert -S 0 -O raw"
[ "$(du -k c.raw | cut -f1)" -ge $((12 * 1024)) ] || fail "convert -S 0 -O raw: not fully allocated ($(du -k c.raw))"
qemu-img compare -q top.qcow2 c.raw || fail "convert -S 0 -O raw: content"
echo "convert -S: maps equal to qemu-img's; -S 0 -O raw fully allocated"

# ---- refused ----
refused() {   # WHAT PATTERN CMD...: exit non-zero, the message matches
	local what=$1 pat=$2 rc
	shift 2
	"$@" >out.txt 2>&1 && fail "$what: accepted"
	grep -q -- "$pat" out.txt || { cat out.txt; fail "$what: message"; }
}
qemu-img create -q -f qcow2 small.qcow2 1M
s0=$(sum small.qcow2)
refused "-n into a smaller image" "is smaller than" "$COWVM" image convert -n top.qcow2 small.qcow2
[ "$(sum small.qcow2)" = "$s0" ] || fail "-n into a smaller image changed it"
refused "-n into a missing file" "no such file" "$COWVM" image convert -n top.qcow2 none.qcow2
[ -e none.qcow2 ] && fail "-n into a missing file created it"
refused "-B with -O raw" "no backing file" "$COWVM" image convert -O raw -B base.qcow2 top.qcow2 x.raw
refused "-F without -B" "give -B" "$COWVM" image convert -F qcow2 top.qcow2 x.qcow2
refused "-B naming DST" "its own backing file" "$COWVM" image convert -B x.qcow2 top.qcow2 x.qcow2
refused "-B naming a missing file" "none.qcow2" "$COWVM" image convert -B none.qcow2 top.qcow2 x.qcow2
refused "-S not whole sectors" "multiple of 512" "$COWVM" image convert -S 1000 top.qcow2 x.qcow2
refused "-n with --cluster-size" "no effect with -n" "$COWVM" image convert -n --cluster-size 4k top.qcow2 filled.qcow2
cp filled.raw c.raw
refused "-n -c into raw" "raw image" "$COWVM" image convert -n -c top.qcow2 c.raw
cmp -s c.raw filled.raw || fail "-n -c into raw changed it"
ls x.qcow2 x.raw >/dev/null 2>&1 && fail "a refused convert left a destination behind"
# a convert failing midway (file-size limit) removes the DST it created,
# and leaves an existing one (-n) in place
qemu-img create -q -f qcow2 rnd.qcow2 32M
qemu-io -c "write -P 0x5a 0 32M" rnd.qcow2 >/dev/null
refused "convert past the file-size limit" "File too large" bash -c "ulimit -f 8192; exec \"$COWVM\" image convert rnd.qcow2 lim.qcow2"
[ -e lim.qcow2 ] && fail "a failed convert left its half-written destination"
rm -f c.qcow2
qemu-img create -q -f qcow2 c.qcow2 40M
refused "convert -n past the file-size limit" "File too large" bash -c "ulimit -f 1024; exec \"$COWVM\" image convert -n -O qcow2 rnd.qcow2 c.qcow2"
[ -e c.qcow2 ] || fail "a failed convert -n removed the existing destination"
qcheck c.qcow2 leaks
echo "refusals: 11 cases, nothing written or left behind"
echo PASS
