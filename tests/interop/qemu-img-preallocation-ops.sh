#!/bin/bash
# `cowvm image convert --preallocation` and `cowvm image resize
# --preallocation` against qemu-img convert -o preallocation= and qemu-img
# resize --preallocation= (QEMU 7.2), for metadata, falloc and full (and off):
# - convert -O qcow2 (64 KiB and 4 KiB clusters) of a qcow2 source with data,
#   holes, written zeros and 4 KiB pieces: qemu-img check clean, the same
#   allocated count, the same `qemu-img map` (offsets too: both lay the file
#   out the same way) and about the same disk use as qemu-img's own output;
#   qemu-img compare equal to the source;
# - convert -O raw falloc/full: the same bytes as qemu-img's and the source,
#   the whole file allocated (full: no unwritten extent);
# - resize of a qcow2 image (no backing file; an old size inside a cluster;
#   over a longer and a shorter backing file, standard and extended L2):
#   check clean, the same allocated count and `qemu-img map` (offsets
#   apart: QEMU puts a new refcount table before the run for falloc/full)
#   as qemu-img's resize of a copy, qemu-img compare equal to it; then
#   qemu-io writes over the new area grow neither file and both still
#   compare equal; cowvm's random writes (cowio) after it keep it clean;
# - resize of a raw file: the same bytes and disk use as qemu-img's;
# - refused with a message, as by qemu-img: metadata for raw output and raw
#   resize, --preallocation with -c, shrinking or keeping the size with
#   --preallocation, an unknown mode; nothing written;
# - a preallocated resize (metadata, falloc) of 1 MiB of 512-byte clusters
#   to 601 MiB (two allocation runs) under `ulimit -f` 560 MiB: fails naming
#   the file and "File too large"; size, data and allocated count as
#   before, qemu-img check clean (the first run released); then it grows.
# timeout: 300
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v jq >/dev/null || skip "jq not installed"
cow_tmpdir

size_of() { stat -c %s "$1"; }
used_kib() { du -k "$1" | cut -f1; }
allocated() { qemu-img check "$1" | sed -n 's/^\([0-9]*\/[0-9]*\) = .*allocated.*/\1/p'; }
qmap() { qemu-img map --output=json "$@"; }
# without host offsets, runs of the same kind merged (where the layouts
# differ, the offsets break qemu-img map's runs at other places)
qmap_nooff() {
	qemu-img map --output=json "$@" | jq -c 'map(del(.offset)) | reduce .[] as $e ([];
		if length > 0 and (.[-1] | del(.start, .length)) == ($e | del(.start, .length)) and
		   .[-1].start + .[-1].length == $e.start
		then .[-1].length += $e.length else . + [$e] end)'
}
unwritten() { filefrag -v "$1" 2>/dev/null | grep -c unwritten; }
near() {   # A B KiB: |A - B| <= KiB
	local d=$(($1 - $2))
	[ "${d#-}" -le "$3" ]
}

# ---- convert ----
S=24M
qemu-img create -q -f qcow2 src.qcow2 $S
qemu-io -c "write -P 0x11 1M 3M" -c "write -P 0x22 12292k 4k" -c "write -z 16M 2M" \
	-c "write -P 0x33 20M 1M" -c "write -P 0x44 24572k 4k" src.qcow2 >/dev/null
# a cluster that holds data and written zeros (4 KiB pieces)
qemu-io -c "write -P 0 6M 64k" -c "write -P 0x55 6M 4k" -c "write -P 0x56 6200k 4k" src.qcow2 >/dev/null
qemu-img convert -O raw src.qcow2 src.raw

for m in off metadata falloc full; do
	for cs in 65536 4096; do
		rm -f c.qcow2 q.qcow2
		"$COWVM" image convert -O qcow2 --cluster-size $cs --preallocation $m src.qcow2 c.qcow2 ||
			fail "convert --preallocation $m --cluster-size $cs"
		qemu-img convert -O qcow2 -o preallocation=$m,cluster_size=$cs src.qcow2 q.qcow2
		qcheck c.qcow2
		qcompare src.qcow2 c.qcow2
		a=$(allocated c.qcow2)
		[ -n "$a" ] && [ "$a" = "$(allocated q.qcow2)" ] ||
			fail "convert $m/$cs: allocated $a, qemu-img's $(allocated q.qcow2)"
		# 64 KiB: the same layout (one L2 table; cowvm puts every L2
		# table before the data, QEMU each before the data it maps)
		if [ $cs = 65536 ]; then
			[ "$(qmap c.qcow2)" = "$(qmap q.qcow2)" ] || {
				diff <(qmap c.qcow2) <(qmap q.qcow2)
				fail "convert $m/$cs: qemu-img map differs from that of qemu-img's output"
			}
		fi
		[ "$(qmap_nooff c.qcow2)" = "$(qmap_nooff q.qcow2)" ] || {
			diff <(qmap_nooff c.qcow2) <(qmap_nooff q.qcow2)
			fail "convert $m/$cs: qemu-img map differs from that of qemu-img's output"
		}
		[ "$(size_of c.qcow2)" = "$(size_of q.qcow2)" ] ||
			fail "convert $m/$cs: $(size_of c.qcow2) bytes, qemu-img's $(size_of q.qcow2)"
		u=$(used_kib c.qcow2) uq=$(used_kib q.qcow2)
		near "$u" "$uq" 256 || fail "convert $m/$cs: uses $u KiB, qemu-img's output $uq KiB"
		case $m in
		off|metadata) [ "$u" -lt 8192 ] || fail "convert $m/$cs uses $u KiB" ;;
		falloc|full) [ "$u" -ge 24576 ] || fail "convert $m/$cs uses only $u KiB" ;;
		esac
		[ "$m" != full ] || [ "$(unwritten c.qcow2)" = 0 ] || fail "convert full left unwritten extents"
		[ "$m" != falloc ] || [ "$(unwritten c.qcow2)" -gt 0 ] || fail "convert falloc reserved nothing"
	done
	echo "ok: convert -O qcow2 --preallocation $m (like qemu-img's: check, map, allocation, disk use)"
done

for m in falloc full; do
	rm -f c.raw q.raw
	"$COWVM" image convert -O raw --preallocation $m src.qcow2 c.raw || fail "convert -O raw $m"
	qemu-img convert -O raw -o preallocation=$m src.qcow2 q.raw
	cmp -s c.raw q.raw || fail "convert -O raw $m: differs from qemu-img's"
	cmp -s c.raw src.raw || fail "convert -O raw $m: differs from the source"
	u=$(used_kib c.raw)
	[ "$u" -ge 24576 ] || fail "convert -O raw $m uses only $u KiB"
	near "$u" "$(used_kib q.raw)" 64 || fail "convert -O raw $m: $u KiB, qemu-img's $(used_kib q.raw) KiB"
	[ "$m" != full ] || [ "$(unwritten c.raw)" = 0 ] || fail "convert -O raw full left unwritten extents"
done
echo "ok: convert -O raw --preallocation falloc, full"

rm -f bad.raw bad.qcow2
"$COWVM" image convert -O raw --preallocation metadata src.qcow2 bad.raw 2>err.txt &&
	fail "convert -O raw --preallocation metadata accepted"
grep -q "metadata" err.txt || { cat err.txt; fail "no clear message for raw metadata"; }
qemu-img convert -O raw -o preallocation=metadata src.qcow2 q-bad.raw 2>/dev/null &&
	fail "qemu-img accepted raw metadata (expectation wrong)"
"$COWVM" image convert -c --preallocation metadata src.qcow2 bad.qcow2 2>err.txt &&
	fail "convert -c --preallocation accepted"
grep -q "compression (-c) and --preallocation" err.txt || { cat err.txt; fail "no clear message for -c"; }
qemu-img convert -c -O qcow2 -o preallocation=metadata src.qcow2 q-bad.qcow2 2>&1 |
	grep -q "Compression and preallocation not supported" || fail "qemu-img's -c refusal changed"
"$COWVM" image convert --preallocation sparse src.qcow2 bad.qcow2 2>err.txt && fail "mode sparse accepted"
grep -q "unknown preallocation mode 'sparse'" err.txt || { cat err.txt; fail "no clear message for sparse"; }
[ ! -e bad.raw ] && [ ! -e bad.qcow2 ] || fail "a refused convert left a file"
"$COWVM" image convert -c --preallocation off src.qcow2 ok.qcow2 || fail "-c --preallocation off refused"
qcompare src.qcow2 ok.qcow2
echo "ok: convert refusals"

# ---- resize, qcow2 ----
qemu-img create -q -f qcow2 base.qcow2 8M
qemu-io -c "write -P 0x77 0 8M" base.qcow2 >/dev/null

# NAME: how the image to grow is made, then its new size
mk_plain() { qemu-img create -q -f qcow2 "$1" 3M && qemu-io -c "write -P 0x11 0 1M" "$1" >/dev/null; }
mk_unal() { qemu-img create -q -f qcow2 "$1" 1049088 && qemu-io -c "write -P 0x12 1M 512" "$1" >/dev/null; }
mk_ov() {   # EXTL2 SIZE
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 -o extended_l2="$2" "$1" "$3" &&
		qemu-io -c "write -P 0x22 64k 4k" "$1" >/dev/null
}
cases=(
	"plain|mk_plain|10M"
	"unaligned|mk_unal|3M"
	"longer backing, extended L2|mk_ov on 2M|6M"
	"longer backing, standard L2|mk_ov off 2M|6M"
	"unaligned over a longer backing|mk_ov on 2100736|6M"
	"shorter backing, extended L2|mk_ov on 8M|12M"
	"shorter backing, standard L2|mk_ov off 8M|12M"
)
for m in metadata falloc full; do
	for c in "${cases[@]}"; do
		IFS='|' read -r name mk new <<<"$c"
		rm -f c.qcow2 q.qcow2
		# shellcheck disable=SC2086   # (the set-up's words)
		set -- $mk
		# (each made on its own: cp may turn written zeros into holes)
		"$1" c.qcow2 "${@:2}" && "$1" q.qcow2 "${@:2}" || fail "set-up $name"
		"$COWVM" image resize --preallocation $m c.qcow2 "$new" >/dev/null ||
			fail "resize --preallocation $m ($name)"
		qemu-img resize -q --preallocation=$m q.qcow2 "$new"
		qcheck c.qcow2
		qcompare q.qcow2 c.qcow2
		a=$(allocated c.qcow2)
		[ -n "$a" ] && [ "$a" = "$(allocated q.qcow2)" ] ||
			fail "resize $m ($name): allocated $a, qemu-img's $(allocated q.qcow2)"
		[ "$(qmap_nooff c.qcow2)" = "$(qmap_nooff q.qcow2)" ] || {
			diff <(qmap c.qcow2) <(qmap q.qcow2)
			fail "resize $m ($name): qemu-img map differs from that of qemu-img's resize"
		}
		u=$(used_kib c.qcow2) uq=$(used_kib q.qcow2)
		near "$u" "$uq" 256 || fail "resize $m ($name): uses $u KiB, qemu-img's $uq KiB"
		[ "$m" != full ] || [ "$(unwritten c.qcow2)" = 0 ] || fail "resize full ($name) left unwritten extents"
		[ "$m" != falloc ] || [ "$(unwritten c.qcow2)" -gt 0 ] || fail "resize falloc ($name) reserved nothing"
		# writes over the new area go in place in both
		sz=$(size_of c.qcow2) szq=$(size_of q.qcow2)
		end=$(qemu-img info --output=json q.qcow2 | jq '."virtual-size"')
		case $name in
		plain) from=3145728 ;; unaligned) from=1049088 ;; "unaligned over"*) from=2100736 ;;
		longer*) from=2097152 ;; *) from=8388608 ;;
		esac
		for f in c.qcow2 q.qcow2; do
			qemu-io -c "write -P 0x5e $from $((end - from))" $f >/dev/null || fail "qemu-io $f"
		done
		[ "$(size_of c.qcow2)" = "$sz" ] || fail "resize $m ($name): writes grew the file $sz -> $(size_of c.qcow2)"
		[ "$(size_of q.qcow2)" = "$szq" ] || fail "resize $m ($name): qemu's own grew $szq -> $(size_of q.qcow2)"
		qcheck c.qcow2
		qcompare q.qcow2 c.qcow2
	done
	# cowvm's own writes into a grown image
	rm -f c.qcow2 ref.raw
	mk_ov c.qcow2 on 2M && "$COWVM" image resize --preallocation $m c.qcow2 6M >/dev/null || fail "resize"
	qemu-img convert -O raw c.qcow2 ref.raw
	random_writes c.qcow2 ref.raw 5 150 "resize $m"
	echo "ok: resize --preallocation $m, qcow2 (like qemu-img's: check, map, allocation, disk use, in-place writes)"
done

# ---- resize, raw ----
for m in falloc full; do
	rm -f c.raw q.raw
	head -c 1000001 /dev/urandom >c.raw
	cp c.raw q.raw
	"$COWVM" image resize -f raw --preallocation $m c.raw 5M >/dev/null || fail "resize raw $m"
	qemu-img resize -q -f raw --preallocation=$m q.raw 5M
	cmp -s c.raw q.raw || fail "resize raw $m: differs from qemu-img's"
	u=$(used_kib c.raw)
	[ "$u" -ge 5000 ] || fail "resize raw $m: uses only $u KiB"
	near "$u" "$(used_kib q.raw)" 16 || fail "resize raw $m: $u KiB, qemu-img's $(used_kib q.raw) KiB"
done
echo "ok: resize --preallocation falloc, full, raw"

# ---- refusals ----
truncate -s 1M r.raw
"$COWVM" image resize -f raw --preallocation metadata r.raw 2M 2>err.txt && fail "raw metadata accepted"
grep -q "metadata is not supported for a raw image" err.txt || { cat err.txt; fail "no clear message for raw metadata"; }
[ "$(size_of r.raw)" = 1048576 ] || fail "a refused resize changed r.raw"
qemu-img create -q -f qcow2 s.qcow2 4M
cp s.qcow2 s0.qcow2
for args in "--shrink s.qcow2 2M" "s.qcow2 4M" "s.qcow2 +0"; do
	# shellcheck disable=SC2086
	"$COWVM" image resize --preallocation full $args 2>err.txt && fail "resize --preallocation full $args accepted"
	grep -q "can only be used for growing images" err.txt || { cat err.txt; fail "no clear message for $args"; }
	# shellcheck disable=SC2086
	qemu-img resize --preallocation=full $args 2>&1 | grep -q "can only be used for growing images" ||
		fail "qemu-img's refusal of $args changed"
	cmp -s s.qcow2 s0.qcow2 || fail "a refused resize ($args) changed the image"
done
"$COWVM" image resize --preallocation sparse s.qcow2 8M 2>err.txt && fail "mode sparse accepted"
grep -q "unknown preallocation mode 'sparse'" err.txt || { cat err.txt; fail "no clear message for sparse"; }
echo "ok: resize refusals"

# ---- a preallocated grow that fails in its second run ----
# 1 MiB of 512-byte clusters grown to 601 MiB: two runs (2^20 clusters
# each, cow/resize.c prealloc_area); a file size limit of 560 MiB (SIGXFSZ
# ignored) stops the second one's extension of the file (EFBIG). The size,
# the data and the allocation stay as before: the first run is released
# again (undo_area), qemu-img check finds no error and no leak.
qemu-img create -q -f qcow2 -o cluster_size=512 fr.qcow2 1M
qemu-io -c "write -P 0x31 0 1M" fr.qcow2 >/dev/null
cp fr.qcow2 fr0.qcow2
for m in metadata falloc; do
	(trap '' XFSZ; ulimit -f $((560 * 1024)); exec "$COWVM" image resize --preallocation $m fr.qcow2 601M) \
		>err.txt 2>&1 && fail "resize --preallocation $m past the file size limit succeeded"
	grep -q "fr.qcow2" err.txt && grep -q "File too large" err.txt ||
		{ cat err.txt; fail "resize $m past the limit: no message naming the file and the cause"; }
	qcheck fr.qcow2
	[ "$(qemu-img info --output=json fr.qcow2 | jq '."virtual-size"')" = 1048576 ] ||
		fail "a failed resize $m changed the size"
	qcompare fr0.qcow2 fr.qcow2
	[ "$(allocated fr.qcow2)" = "$(allocated fr0.qcow2)" ] ||
		fail "a failed resize $m left clusters allocated: $(allocated fr.qcow2), before $(allocated fr0.qcow2)"
	u=$(used_kib fr.qcow2)
	[ "$u" -lt $(($(used_kib fr0.qcow2) + 1024)) ] || fail "a failed resize $m left $u KiB in use"
	[ "$(size_of fr.qcow2)" -lt $(($(size_of fr0.qcow2) + (1 << 20))) ] ||
		fail "a failed resize $m left the file $(size_of fr.qcow2) bytes long"
done
"$COWVM" image resize --preallocation metadata fr.qcow2 601M >/dev/null || fail "resize after the failures"
qcheck fr.qcow2
qemu-io -c "read -P 0x31 0 1M" -c "read -P 0 1M 600M" fr.qcow2 >/dev/null || fail "grown image reads wrong"
echo "ok: a preallocated resize failing in its second run leaves the image as it was"
