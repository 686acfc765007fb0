#!/bin/bash
# `cowvm image snapshot` (cli/cmd-image-snapshot.c, cow/snapshot.c) against
# `qemu-img snapshot`: two copies, c.qcow2 changed by cowvm and q.qcow2 by
# qemu-img, get the same seeded random steps: writes from QEMU (qemu-io,
# random patterns) and from cowvm (cowio: write, write-zeroes, discard,
# compressed write), snapshot create (names repeat), apply and delete (by
# ID or by name, also missing ones: both must fail then), resize (grow,
# and shrink with --shrink). After every step: the same snapshot list
# (IDs, names, VM state size, icount), the same virtual size, the same
# active disk (qemu-img compare), every snapshot reading the same in both
# (qemu-img convert -l snapshot.id=N), and `qemu-img check` clean (no leak)
# on both. Images: 64 KiB clusters; 4 KiB clusters (many L2 tables); 512 B
# clusters; 2 MiB clusters; extended L2 over a backing file; zstd with
# compressed clusters; lazy_refcounts; refcount_bits 64. Then: the list
# printed by `cowvm image snapshot -l` and `image info` equals qemu-img's;
# refusals (each leaving the file byte for byte as it was): refcount
# overflow with refcount_bits=1 and with 2 (qemu-img fails there too, half
# way), a version 2 image, a raw image, a missing snapshot, a name over 255
# bytes, an image in use; -U only with -l; apply of a snapshot of another
# disk size on an image with persistent bitmaps; cowvm's own writes after
# a snapshot change nothing the snapshot reads.
# timeout: 900
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v qemu-io >/dev/null 2>&1 || skip "qemu-io not installed"
command -v jq >/dev/null 2>&1 || skip "jq not installed"
cow_tmpdir
M=$((1 << 20)) K=1024
NSTEP=0 NSNAP=0 NFAIL=0 NREAD=0

sl() { qemu-img info --output=json "$1" | jq -c '[.snapshots[]? | [.id, .name, ."vm-state-size", .icount]]'; }
vsize() { qemu-img info --output=json "$1" | jq '."virtual-size"'; }

# same WHAT: c.qcow2 and q.qcow2 agree (list, size, active disk, every
# snapshot), both pass qemu-img check without leaks
same() {
	local a b id
	a=$(sl c.qcow2) b=$(sl q.qcow2)
	[ "$a" = "$b" ] || fail "$1: snapshot lists differ:
cowvm:    $a
qemu-img: $b"
	[ "$(vsize c.qcow2)" = "$(vsize q.qcow2)" ] ||
		fail "$1: virtual size $(vsize c.qcow2), qemu-img's $(vsize q.qcow2)"
	qcheck c.qcow2
	qcheck q.qcow2
	qemu-img compare -q c.qcow2 q.qcow2 || fail "$1: the active disks differ"
	for id in $(printf '%s' "$a" | jq -r '.[][0]'); do
		qemu-img convert -l snapshot.id=$id -O raw c.qcow2 sc.raw || fail "$1: convert -l $id of c.qcow2"
		qemu-img convert -l snapshot.id=$id -O raw q.qcow2 sq.raw || fail "$1: convert -l $id of q.qcow2"
		cmp -s sc.raw sq.raw || fail "$1: snapshot $id reads differently"
		NREAD=$((NREAD + 1))
	done
	NSTEP=$((NSTEP + 1))
}

# snap OP ARG: cowvm on c.qcow2, qemu-img on q.qcow2; both succeed or both fail
snap() {
	local rc rq
	"$COWVM" image snapshot "$1" "$2" c.qcow2 2>c.err
	rc=$?
	qemu-img snapshot "$1" "$2" q.qcow2 2>q.err
	rq=$?
	if [ $rc -ne 0 ] || [ $rq -ne 0 ]; then
		[ $rc -ne 0 ] && [ $rq -ne 0 ] ||
			fail "snapshot $1 '$2': cowvm exited $rc ($(cat c.err)), qemu-img $rq ($(cat q.err))"
		grep -q "^cowvm: " c.err || fail "snapshot $1 '$2': no cowvm message: $(cat c.err)"
		NFAIL=$((NFAIL + 1))
	else
		[ "$1" = -c ] && NSNAP=$((NSNAP + 1))
	fi
	return 0
}

qio() { qemu-io -c "$1" c.qcow2 >/dev/null && qemu-io -c "$1" q.qcow2 >/dev/null || fail "qemu-io $1"; }
cio() { "$COWIO" ops c.qcow2 "$@" >/dev/null && "$COWIO" ops q.qcow2 "$@" >/dev/null || fail "cowio ops $*"; }

# run NAME SIZE CLUSTER STEPS SEED [compressed]: the random steps on a new
# pair (base.qcow2 made by the caller)
run() {
	local name=$1 size=$2 cs=$3 steps=$4 compressed=${6:-} i r off len ids n sz
	RANDOM=$5
	cp base.qcow2 c.qcow2
	cp base.qcow2 q.qcow2
	for ((i = 0; i < steps; i++)); do
		sz=$(vsize c.qcow2)
		r=$((RANDOM % 20))
		off=$(((RANDOM * 32768 + RANDOM) % (sz / 512) * 512))
		len=$(((RANDOM % (4 * cs / 512) + 1) * 512))
		[ $((off + len)) -le "$sz" ] || len=$((sz - off))
		ids=$(sl c.qcow2 | jq -r '.[][0]')
		n=$(printf '%s' "$ids" | grep -c .)
		case $r in
		0 | 1 | 2 | 3) qio "write -P $((RANDOM % 255 + 1)) $off $len" ;;
		4) cio w:$off:$len ;;
		5) cio z:$off:$len ;;
		6) cio d:$((off / cs * cs)):$cs ;;
		7)
			if [ -n "$compressed" ] && [ $((off / cs * cs + cs)) -le "$sz" ]; then
				cio c:$((off / cs * cs)):$cs
			else
				qio "write -z $off $len"
			fi
			;;
		8 | 9 | 10) snap -c "s$((RANDOM % 4))" ;;
		11 | 12 | 13)
			if [ "$n" -gt 0 ] && ((RANDOM % 5)); then
				if ((RANDOM % 2)); then
					snap -a "$(printf '%s\n' $ids | shuf -n1 --random-source=<(yes $RANDOM))"
				else
					snap -a "s$((RANDOM % 4))"
				fi
			else
				snap -a missing
			fi
			;;
		14 | 15)
			if [ "$n" -gt 0 ] && ((RANDOM % 5)); then
				if ((RANDOM % 2)); then
					snap -d "$(printf '%s\n' $ids | shuf -n1 --random-source=<(yes $RANDOM))"
				else
					snap -d "s$((RANDOM % 4))"
				fi
			else
				snap -d 99
			fi
			;;
		16)
			"$COWVM" image resize -q c.qcow2 +$((cs * 3)) && qemu-img resize -q q.qcow2 +$((cs * 3)) ||
				fail "$name: resize +$((cs * 3))"
			;;
		17)
			if [ "$sz" -gt $((size / 2)) ]; then
				"$COWVM" image resize -q --shrink c.qcow2 -$((cs * 2)) &&
					qemu-img resize -q --shrink q.qcow2 -$((cs * 2)) || fail "$name: resize -$((cs * 2))"
			fi
			;;
		*) qio "discard $((off / cs * cs)) $cs" ;;
		esac
		same "$name, step $i (op $r)"
	done
	echo "ok: $name: $steps steps, $(sl c.qcow2 | jq length) snapshots at the end"
}

# 64 KiB clusters, 32 MiB, data from the start
qemu-img create -q -f qcow2 base.qcow2 32M
qemu-io -c "write -P 7 0 3M" -c "write -P 8 20M 1M" base.qcow2 >/dev/null || fail qemu-io
run "64 KiB clusters" $((32 * M)) $((64 * K)) 60 101

# 4 KiB clusters: 512 entries per L2 table, 16 MiB = 8 tables
qemu-img create -q -f qcow2 -o cluster_size=4096 base.qcow2 16M
qemu-io -c "write -P 7 0 5M" -c "write -P 9 9M 3M" base.qcow2 >/dev/null || fail qemu-io
run "4 KiB clusters" $((16 * M)) 4096 60 202

qemu-img create -q -f qcow2 -o cluster_size=512 base.qcow2 2M
qemu-io -c "write -P 7 0 300k" base.qcow2 >/dev/null || fail qemu-io
run "512 B clusters" $((2 * M)) 512 40 303

qemu-img create -q -f qcow2 -o cluster_size=2M base.qcow2 64M
qemu-io -c "write -P 7 0 5M" base.qcow2 >/dev/null || fail qemu-io
run "2 MiB clusters" $((64 * M)) $((2 * M)) 30 404

qemu-img create -q -f qcow2 back.qcow2 16M
qemu-io -c "write -P 3 0 16M" back.qcow2 >/dev/null || fail qemu-io
qemu-img create -q -f qcow2 -o extended_l2=on -b back.qcow2 -F qcow2 base.qcow2
qemu-io -c "write -P 7 1M 100k" base.qcow2 >/dev/null || fail qemu-io
run "extended L2 over a backing file" $((16 * M)) $((64 * K)) 50 505

qemu-img create -q -f qcow2 -o compression_type=zstd,cluster_size=16k src.qcow2 8M
qemu-io -c "write -P 7 0 4M" src.qcow2 >/dev/null || fail qemu-io
qemu-img convert -c -O qcow2 -o compression_type=zstd,cluster_size=16k src.qcow2 base.qcow2
run "zstd, compressed clusters" $((8 * M)) $((16 * K)) 50 606 compressed

qemu-img create -q -f qcow2 -o lazy_refcounts=on base.qcow2 8M
qemu-io -c "write -P 7 0 1M" base.qcow2 >/dev/null || fail qemu-io
run "lazy_refcounts" $((8 * M)) $((64 * K)) 30 707

qemu-img create -q -f qcow2 -o refcount_bits=64,cluster_size=4k base.qcow2 4M
qemu-io -c "write -P 7 0 1M" base.qcow2 >/dev/null || fail qemu-io
run "refcount_bits 64" $((4 * M)) 4096 30 808

# ---- the list as printed ----
cp base.qcow2 l.qcow2
"$COWVM" image snapshot -c "first one" l.qcow2 || fail "create"
qemu-img snapshot -c second l.qcow2 || fail "qemu-img create"
"$COWVM" image snapshot -c "" l.qcow2 || fail "create with an empty name (qemu-img allows it)"
[ "$("$COWVM" image snapshot -l l.qcow2)" = "$(qemu-img snapshot -l l.qcow2)" ] ||
	fail "snapshot -l differs: $("$COWVM" image snapshot -l l.qcow2)"
[ "$("$COWVM" image info l.qcow2 | sed -n '/^Snapshot list:/,/^Format/p')" = \
	"$(qemu-img info l.qcow2 | sed -n '/^Snapshot list:/,/^Format/p')" ] || fail "image info: snapshot list differs"
"$COWVM" image snapshot -l -U l.qcow2 >/dev/null || fail "-l -U"
qemu-img create -q -f qcow2 empty.qcow2 1M
[ -z "$("$COWVM" image snapshot -l empty.qcow2)" ] || fail "-l of an image without snapshots prints something"
qcheck l.qcow2

# ---- refusals: cowvm leaves the file as it was ----
refused() {   # WHAT EXIT FILE ARGS...: cowvm exits EXIT, FILE unchanged
	local what=$1 want=$2 f=$3 rc
	shift 3
	cp "$f" before.img
	"$COWVM" image snapshot "$@" "$f" 2>err.out
	rc=$?
	[ $rc -eq "$want" ] || fail "$what: exit $rc, not $want ($(cat err.out))"
	grep -q "^cowvm" err.out || fail "$what: no message"
	cmp -s before.img "$f" || fail "$what: the file changed"
	echo "ok: refused: $what: $(head -1 err.out)"
}
qemu-img create -q -f qcow2 -o refcount_bits=1 r1.qcow2 4M
qemu-io -c "write -P 1 0 1M" r1.qcow2 >/dev/null
refused "refcount_bits=1 (no room for a second reference)" 1 r1.qcow2 -c x
cp r1.qcow2 r1q.qcow2
qemu-img snapshot -c x r1q.qcow2 2>/dev/null && fail "qemu-img made a snapshot with refcount_bits=1"
qemu-img create -q -f qcow2 -o refcount_bits=2 r2.qcow2 4M
qemu-io -c "write -P 1 0 1M" r2.qcow2 >/dev/null
"$COWVM" image snapshot -c a r2.qcow2 && "$COWVM" image snapshot -c b r2.qcow2 || fail "refcount_bits=2: two snapshots"
refused "refcount_bits=2, a third snapshot (refcount 4)" 1 r2.qcow2 -c c
qcheck r2.qcow2
"$COWVM" image snapshot -d a r2.qcow2 && "$COWVM" image snapshot -c c r2.qcow2 || fail "refcount_bits=2: delete one, make another"
qcheck r2.qcow2
[ "$(sl r2.qcow2 | jq -c '[.[][1]]')" = '["b","c"]' ] || fail "refcount_bits=2: list $(sl r2.qcow2)"
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 4M
refused "a version 2 image" 1 v2.qcow2 -c x
qemu-img create -q -f raw raw.img 4M
refused "a raw image" 1 raw.img -c x
refused "a missing snapshot (apply)" 1 l.qcow2 -a nothing
refused "a missing snapshot (delete)" 1 l.qcow2 -d nothing
refused "a name of 256 bytes" 1 l.qcow2 -c "$(printf 'n%.0s' {1..256})"
refused "-U with -c" 2 l.qcow2 -U -c x
refused "two actions" 2 l.qcow2 -l -c x
refused "no action" 2 l.qcow2
"$COWVM" image snapshot -c "$(printf 'n%.0s' {1..255})" l.qcow2 || fail "a name of 255 bytes"
qemu-img snapshot -l l.qcow2 | grep -q "$(printf 'n%.0s' {1..255})" || fail "the 255-byte name"
qemu-io -c "sleep 100000" l.qcow2 >/dev/null 2>&1 &
p=$!
wait_locked l.qcow2 || fail "qemu-io did not open l.qcow2"
refused "an image in use" 1 l.qcow2 -c x
grep -q "in use" err.out || fail "in use: $(cat err.out)"
"$COWVM" image snapshot -l -U l.qcow2 >/dev/null || fail "-l -U of an image in use"
{ kill -9 $p; wait $p; } 2>/dev/null
# persistent bitmaps: kept; an apply that would change the size refused
qemu-img create -q -f qcow2 bm.qcow2 8M
qemu-img bitmap --add bm.qcow2 b0
"$COWVM" image snapshot -c small bm.qcow2 || fail "create with a bitmap"
qemu-img resize -q bm.qcow2 16M
qemu-io -c "write -P 5 9M 64k" bm.qcow2 >/dev/null
"$COWVM" image snapshot -c big bm.qcow2 || fail "create with a bitmap"
qemu-img info --output=json bm.qcow2 | jq -e '."format-specific".data.bitmaps[0].name == "b0"' >/dev/null ||
	fail "the bitmap is gone"
# (a writable open rewrites the bitmaps' bytes, as QEMU's does: the list,
# the data and the bitmap compared instead of the bytes)
qemu-img convert -O raw bm.qcow2 bm-before.raw
l0=$(sl bm.qcow2)
"$COWVM" image snapshot -a small bm.qcow2 2>err.out && fail "apply of another disk size with persistent bitmaps accepted"
grep -q "persistent bitmaps" err.out || fail "apply with bitmaps: $(cat err.out)"
[ "$(sl bm.qcow2)" = "$l0" ] && qemu-img compare -q bm-before.raw bm.qcow2 || fail "the refused apply changed the image"
echo "ok: refused: $(cat err.out)"
"$COWVM" image snapshot -a big bm.qcow2 || fail "apply of the same size with a bitmap"
qemu-img info --output=json bm.qcow2 | jq -e '."format-specific".data.bitmaps[0] | .name == "b0" and (.flags | index("in-use") | not)' >/dev/null ||
	fail "the bitmap after apply: $(qemu-img info --output=json bm.qcow2 | jq -c '."format-specific".data.bitmaps')"
qcheck bm.qcow2

# ---- cowvm's writes after a snapshot leave it as it was ----
qemu-img create -q -f qcow2 -o cluster_size=4096 w.qcow2 8M
qemu-io -c "write -P 1 0 8M" w.qcow2 >/dev/null
"$COWVM" image snapshot -c before w.qcow2 || fail create
qemu-img convert -l before -O raw w.qcow2 before.raw
qemu-img convert -O raw w.qcow2 ref.raw
"$COWIO" random w.qcow2 ref.raw 9 300 compress >/dev/null || fail "cowio random"
qemu-img compare -q ref.raw w.qcow2 || fail "cowvm's writes read back differently"
qemu-img convert -l before -O raw w.qcow2 after.raw
cmp -s before.raw after.raw || fail "cowvm's writes changed what the snapshot reads"
qcheck w.qcow2
"$COWVM" image snapshot -d before w.qcow2 || fail delete
qcheck w.qcow2
echo "PASS: $NSTEP steps compared ($NSNAP snapshots made, $NFAIL refused by both, $NREAD snapshot reads compared)"
