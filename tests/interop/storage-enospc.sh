#!/bin/bash
# A host file system that fills up under cow/ and storage/ (what virtio-blk
# uses): random writes, write-zeroes, discards and flushes on one open qcow2
# image until writes fail, then the space comes back and the same open image
# must go on (tests/helpers/cowio fill, tests/helpers/stgstress --errors-ok
# --space-back). Each run checks:
#  - a failing request reports an error, never success, and never marks the
#    image corrupt; every read succeeds and returns what was acknowledged;
#  - `qemu-img check -U` of the image as it is on disk while the disk is
#    full reports no corruption (leaks allowed), and a flush while full
#    succeeds (every table it writes already has its blocks);
#  - once the space is back a flush of the still open image succeeds and
#    no request fails any more; after the close `qemu-img check` reports
#    no corruption and no leaked cluster (cow.h I17: the clusters of an
#    allocating write whose data write failed, and a new L2 table whose
#    first write failed, are freed at once; the metadata write-backs that
#    fail while full are retried and succeed once the space is back), and
#    neither does `cowvm image check`; `qemu-img compare` agrees with the
#    model and the image is not marked corrupt.
# Leaks stay allowed only where a failure leaves them legitimately: a
# failed fdatasync (nothing is written after it, so the L2 entries of data
# already written and the queued frees never reach the disk), an ext4 shut
# down (every write and fdatasync fails: what is on disk is a crash's
# state) and `qemu-img check -U` while the disk is still full (refcounts
# on disk ahead of L2 tables still in the cache, as at any instant).
# Also the leftovers of a partial failed write past the end of the file
# (cowio stale): a cluster the write could not fill is freed and reused by
# a small write, which must read as zeros around its bytes (cow.h I10,
# I17).
# Full without a mount: a file size limit (RLIMIT_FSIZE, EFBIG on growth,
# as `ulimit -f`). With mounts (root): a small tmpfs filled by a filler file
# (ENOSPC, also inside holes the image punched), with a 4-table L2 cache
# (evictions while full), and a loop-mounted ext4 for O_DIRECT (cache=none).
# Also: an fdatasync that fails once (tests/helpers/failsync.so, LD_PRELOAD)
# makes every later flush fail. Without mount permission only the no-mount
# cases run and the test skips.
# timeout: 120
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
STG="$(dirname "$COWIO")/stgstress"
[ -x "$STG" ] || skip "test helper $STG not built"
cow_tmpdir
MNT=""
LOOP_IMG=""
cleanup() {
	cd / || true
	if [ -n "$MNT" ]; then
		umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null
	fi
	rm -rf "$T"
}
trap cleanup EXIT
runs=0

# no_leaks IMG WHAT: qemu-img check and cowvm image check find neither
# corruption nor a leaked cluster (I17)
no_leaks() {
	local rc
	qemu-img check "$1" >check.out 2>&1
	rc=$?
	[ "$rc" -eq 0 ] || { cat check.out; fail "$2: qemu-img check exited $rc (3: leaked clusters)"; }
	"$COWVM" image check "$1" >check.out 2>&1 || { cat check.out; fail "$2: cowvm image check"; }
}

# after_checks IMG MODEL WHAT: the checks once the image is closed
after_checks() {
	local img=$1 model=$2 what=$3
	no_leaks "$img" "$what"
	jq_true '.["format-specific"].data.corrupt != true' qemu-img info --output=json "$img" ||
		fail "$what: the image is marked corrupt"
	qemu-img compare -q -f raw -F qcow2 "$model" "$img" ||
		fail "$what: the image differs from the model"
}

# AT_FULL: run by cowio fill while the disk is full, before the space comes back
# (leaks allowed: the refcounts on disk may be ahead of L2 tables still in
# the cache, as at any instant of a running image)
AT_FULL='qemu-img check -U "$IMG" >full-check.out 2>&1; r=$?; [ $r = 0 ] || [ $r = 3 ] || { cat full-check.out; exit 1; }'

# make_img DIR OPTS: an image of $SIZE (32 MiB) in DIR, made by qemu-img
# create -o OPTS; OPTS "backing" puts a qcow2 base with data under it (its
# content in $T/base.raw); "snap": 1 MiB of data under an internal
# snapshot (its content in $T/snap.raw; the first writes copy the shared L2
# table, cow.h I16); "cowvm:CLUSTER_SIZE": made by cowvm image create.
# INIT: the file the model starts from ("" for zeros).
SIZE=32M
make_img() {
	local dir=$1 o=$2 b=() snap=0
	INIT=""
	if [[ $o == *snap* ]]; then
		snap=1
		o=${o/snap/}
		o=${o%,}
		o=${o#,}
	fi
	if [[ $o == *backing* ]]; then
		INIT=$T/base.raw
		"$STG" genbase "$T/base.raw" $((24 << 20)) 5 || fail genbase
		qemu-img convert -q -f raw -O qcow2 "$T/base.raw" "$T/base.qcow2" || fail convert
		b=(-b "$T/base.qcow2" -F qcow2)
		o=${o/backing/}
		o=${o%,}
		o=${o#,}
	fi
	if [[ $o == cowvm* ]]; then   # cowvm[:CLUSTER_SIZE]: made by cowvm image create
		"$COWVM" image create "$dir/img.qcow2" "$SIZE" --cluster-size "${o#cowvm:}" \
			>/dev/null || fail "cowvm image create $o"
		return
	fi
	qemu-img create -q -f qcow2 ${o:+-o "$o"} "${b[@]}" "$dir/img.qcow2" "$SIZE" || fail "create $o"
	if ((snap)); then
		qemu-io -c "write -P 0x5c 0 1M" "$dir/img.qcow2" >/dev/null || fail "qemu-io $o"
		qemu-img snapshot -c s1 "$dir/img.qcow2" || fail "snapshot $o"
		qemu-img convert -O raw "$dir/img.qcow2" "$T/snap.raw" || fail "convert $o"
		INIT=$T/snap.raw
	fi
}

# snap_same IMG WHAT: snapshot s1 (if any) still reads as when it was taken
snap_same() {
	[ "$(qemu-img snapshot -l "$1" | grep -c ' s1 ')" = 1 ] || return 0
	qemu-img convert -l snapshot.name=s1 -O raw "$1" "$T/snapnow.raw" &&
		cmp -s "$T/snapnow.raw" "$T/snap.raw" || fail "$2: snapshot s1 changed"
}

# cow_fill WHAT DIR OPTS SEED [cowio fill options]
cow_fill() {
	local what=$1 dir=$2 o=$3 seed=$4 init=() rc
	shift 4
	make_img "$dir" "$o"
	[ -n "$INIT" ] && init=(--init "$INIT")
	IMG="$dir/img.qcow2" "$COWIO" fill "$dir/img.qcow2" "$T/model.raw" "$seed" 600 300 \
		--at-full "$AT_FULL" --flush-full "${init[@]}" "$@" >fill.out 2>fill.err
	rc=$?
	if [ "$rc" -ne 0 ]; then
		tail -n 5 fill.out
		cat fill.err
		fail "$what: cowio fill exited $rc"
	fi
	grep -q '^0 requests failed before' fill.out && fail "$what: no request failed (the disk never filled)"
	after_checks "$dir/img.qcow2" "$T/model.raw" "$what"
	snap_same "$dir/img.qcow2" "$what"
	echo "ok: $what (cow/): $(head -n 1 fill.out)"
	runs=$((runs + 1))
}

# stg_fill WHAT DIR OPTS SEED [stgstress options]: $OPS requests, the space
# back after $BACK
OPS=800 BACK=400
stg_fill() {
	local what=$1 dir=$2 o=$3 seed=$4 init=() rc
	shift 4
	make_img "$dir" "$o"
	[ -n "$INIT" ] && init=(--init "$INIT")
	timeout -k 5 90 "$STG" run "$dir/img.qcow2" --errors-ok --seed "$seed" --ops "$OPS" \
		--space-back "$BACK" --flush-full --timeout 80 --out "$T/model.raw" "${init[@]}" "$@" \
		2>stress.err
	rc=$?
	if [ "$rc" -ne 0 ]; then
		tail -n 20 stress.err
		fail "$what: stgstress exited $rc"
	fi
	grep -q 'stgstress: 0 requests failed before' stress.err &&
		fail "$what: no request failed (the disk never filled)"
	after_checks "$dir/img.qcow2" "$T/model.raw" "$what"
	snap_same "$dir/img.qcow2" "$what"
	echo "ok: $what (storage/): $(grep -m 1 'failed before' stress.err | sed 's/^stgstress: //')"
	runs=$((runs + 1))
}

# --- a file size limit: EFBIG on writes past 1.5 MiB (no mount needed) ---
mkdir -p "$T/lim"
for o in "" cluster_size=4096 cluster_size=16384,extended_l2=on cluster_size=4096,backing \
	compat=0.10,cluster_size=4096 cluster_size=4096,snap; do
	cow_fill "file size limit, ${o:-defaults}" "$T/lim" "$o" 1 --fsize 1572864
done
cow_fill "file size limit, cluster_size=4096, compressed writes" "$T/lim" cluster_size=4096 2 \
	--fsize 1572864 --compress
stg_fill "file size limit, cluster_size=4096, io_uring" "$T/lim" cluster_size=4096 1 --fsize 1572864 \
	--maxlen 262144
stg_fill "file size limit, extended L2, threads" "$T/lim" cluster_size=32768,extended_l2=on,backing 2 \
	--fsize 1572864 --threads --maxlen 262144
stg_fill "file size limit, internal snapshot, io_uring" "$T/lim" cluster_size=4096,snap 3 \
	--fsize 2097152 --maxlen 262144
# the limit at the image's own size: the first copy of the shared L2 table
# already fails
make_img "$T/lim" cluster_size=4096,snap
cow_fill "file size limit at the end of an image with a snapshot" "$T/lim" cluster_size=4096,snap 4 \
	--fsize "$(stat -c %s "$T/lim/img.qcow2")"

# --- the leftovers of a partial failed write past the end of the file
# (cow.h I10, I17): the first cluster past the end gets 1 KiB of a 4 KiB
# write that then fails (EFBIG); it is freed, and file_size moved past it,
# so the small write that reuses it writes it whole: zeros around its bytes,
# not the failed write's 0xbb. Through cow/ and through storage/ (where the
# engine's failed write is undone in its completion) ---
for via in cow stg; do
	rm -f "$T/lim/img.qcow2"
	qemu-img create -q -f qcow2 "$T/lim/img.qcow2" 16M &&
		qemu-io -c "write -P 0x11 0 64k" "$T/lim/img.qcow2" >/dev/null || fail "stale: create"
	end=$(stat -c %s "$T/lim/img.qcow2")
	"$COWIO" stale "$T/lim/img.qcow2" "$end" $([ $via = stg ] && echo stg) >stale.out 2>&1 ||
		{ cat stale.out; fail "stale bytes ($via): cowio stale exited $?"; }
	no_leaks "$T/lim/img.qcow2" "stale bytes ($via)"
	jq_true "map(select(.start == 131072 and .offset == $end)) | length == 1" \
		qemu-img map --output=json "$T/lim/img.qcow2" || fail "stale bytes ($via): the freed cluster was not reused"
	qemu-io -c "read -P 0x11 0 64k" -c "read -P 0 64k 64k" -c "read -P 0 128k 8k" \
		-c "read -P 0xcc 136k 512" -c "read -P 0 139776 56832" "$T/lim/img.qcow2" >stale.out 2>&1 &&
		! grep -q "failed" stale.out || { cat stale.out; fail "stale bytes ($via): the reused cluster shows the failed write's bytes"; }
	echo "ok: stale bytes past the end of the file, $via: the reused cluster reads as zeros"
	runs=$((runs + 1))
done

# --- a failing fdatasync (EIO reported once, as Linux does: a later one
# succeeds with the data lost): every later flush and the close must fail,
# and the image keeps what the last good flush made durable ---
FAILSYNC="$(dirname "$COWIO")/failsync.so"
[ -f "$FAILSYNC" ] || fail "$FAILSYNC not built"
qemu-img create -q -f qcow2 -o cluster_size=4096 "$T/lim/img.qcow2" 16M || fail create
# (under ASan the shim comes before its runtime: allowed, as in qemu-img-powercut)
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
	LD_PRELOAD="$FAILSYNC" FAILSYNC_FLAG="$T/syncflag" "$COWIO" syncfail "$T/lim/img.qcow2" \
	"$T/syncflag" >sync.out 2>&1 || { cat sync.out; fail "a flush after a failed fdatasync"; }
grep -q "an earlier fdatasync failed" sync.out || { cat sync.out; fail "no clear message"; }
head -c 1048576 /dev/zero | tr '\0' '\021' >"$T/sync.raw" && truncate -s 16M "$T/sync.raw"
# (leaks allowed: the second MiB's clusters are counted on disk, but after
# the failed fdatasync their L2 entries are never written)
qcheck "$T/lim/img.qcow2" leaks
qemu-img compare -q -f raw -F qcow2 "$T/sync.raw" "$T/lim/img.qcow2" ||
	fail "after a failed fdatasync the image does not hold what the last good flush left"
echo "ok: a failed fdatasync: $(grep 'flush again' sync.out)"
runs=$((runs + 1))

# vm_full DIR DISK-OPTS: the test guest's disk-write (48 MiB) into an overlay
# in DIR with ~5 MiB free: the guest sees an I/O error (VIRTIO_BLK_S_IOERR,
# its exit status 5), cowvm neither crashes nor hangs, and the image passes
# qemu-img check with no leaked cluster (the failed data writes freed what
# they took, I17; the close's flush succeeds while full) and is not marked
# corrupt. Left out without
# /dev/kvm or the test guest.
vm_full() {
	local dir=$1 c=$2 rc
	[ -n "${TESTGUEST:-}" ] && [ -f "$TESTGUEST" ] && { exec 3<>/dev/kvm; } 2>/dev/null || {
		echo "note: no /dev/kvm or test guest: the VM case is left out"; return; }
	exec 3>&-
	if [ ! -f "$T/vmbase.qcow2" ]; then
		"$STG" genbase "$T/vmbase.raw" $((48 << 20)) 9 &&
			qemu-img convert -q -f raw -O qcow2 "$T/vmbase.raw" "$T/vmbase.qcow2" || fail "VM base"
	fi
	fill_fs "$dir" 5242880
	"$COWVM" image create "$dir/vm.qcow2" -b "$T/vmbase.qcow2" -F qcow2 >/dev/null || fail create
	timeout -k 2 60 "$COWVM" run --kernel "$TESTGUEST" --append "cowvm.test=disk-write seed=3" \
		--console "file:$T/vm.log" --disk "$dir/vm.qcow2$c" 2>"$T/vm.err"
	rc=$?
	[ "$rc" -eq 5 ] && grep -q "request at sector [0-9]* failed, status 1" "$T/vm.log" || {
		tail -n 3 "$T/vm.log" "$T/vm.err"; fail "disk-write$c on a full disk: exit $rc"; }
	no_leaks "$dir/vm.qcow2" "disk-write$c on a full disk"
	jq_true '.["format-specific"].data.corrupt != true' qemu-img info --output=json "$dir/vm.qcow2" ||
		fail "the VM's image is marked corrupt"
	echo "ok: VM disk-write$c onto a full disk: $(grep -o 'request at sector.*' "$T/vm.log")"
	runs=$((runs + 1))
}

# --- mounts: a small tmpfs (ENOSPC), a loop ext4 (O_DIRECT) ---
# fill_fs DIR [FREE]: leave about FREE bytes (1.5 MiB) free in DIR's file
# system (file DIR/filler)
fill_fs() {
	local avail free=${2:-1572864}
	rm -f "$1"/*.qcow2 "$1/filler"
	avail=$(df --output=avail -B1 "$1" | tail -n 1)
	[ "$avail" -gt $((free + 524288)) ] || fail "only $avail bytes free in $1"
	fallocate -l $((avail - free)) "$1/filler" 2>/dev/null ||
		dd if=/dev/zero of="$1/filler" bs=1M count=$(((avail - free) >> 20)) status=none ||
		fail "filling $1"
}

mkdir -p "$T/mnt"
if ! mount -t tmpfs -o size=80m cowtest "$T/mnt" 2>mount.err; then
	cat mount.err
	skip "SKIP: cannot mount a tmpfs (not root?): only the $runs cases without a mount ran"
fi
MNT="$T/mnt"
export COWVM_COW_L2_CACHE=1   # 4 L2 tables: evictions while full
for o in cluster_size=4096 cluster_size=4096,backing cluster_size=16384,extended_l2=on; do
	fill_fs "$MNT"
	cow_fill "tmpfs, $o, 4 L2 tables" "$MNT" "$o" 3 --filler "$MNT/filler"
done
unset COWVM_COW_L2_CACHE
# a flush while full writes only tables that have their blocks: the L1
# table of an image cowvm made, an L2 table placed in a punched cluster
fill_fs "$MNT"
cow_fill "tmpfs, cowvm image create" "$MNT" cowvm:65536 1 --filler "$MNT/filler"
fill_fs "$MNT"
SIZE=64M cow_fill "tmpfs, 64 MiB, cluster_size=4096" "$MNT" cluster_size=4096 2 --filler "$MNT/filler"
export COWVM_COW_L2_CACHE=1
# 64 MiB, 4 MiB free, 1500 requests of up to 4 MiB, the space back after 700
SIZE=64M OPS=1500 BACK=700
for t in io_uring threads; do
	fill_fs "$MNT" 4194304
	stg_fill "tmpfs, cluster_size=4096, 4 L2 tables, $t" "$MNT" cluster_size=4096 1 \
		--filler "$MNT/filler" $([ $t = threads ] && echo --threads)
done
SIZE=32M OPS=800 BACK=400
unset COWVM_COW_L2_CACHE

vm_full "$MNT" ""

# cowvm image convert / commit / rebase / create onto the full tmpfs: exit
# non-zero with "cowvm: 'FILE': ... No space left on device", and what they
# leave passes qemu-img check (no leak: I17) and is not marked corrupt
"$STG" genbase "$T/src.raw" $((24 << 20)) 7 || fail genbase
qemu-img convert -q -f raw -O qcow2 "$T/src.raw" "$T/src.qcow2" || fail convert
cli_full() {   # WHAT FILE-IT-WRITES CMD...
	local what=$1 f=$2 rc
	shift 2
	"$@" >cli.out 2>&1
	rc=$?
	[ "$rc" -ne 0 ] || fail "$what onto a full file system exited 0"
	grep -q "^cowvm: '$f'.*No space left on device" cli.out || { cat cli.out; fail "$what: no clear message"; }
	if [ -s "$f" ] && [ "$(head -c 3 "$f")" = QFI ]; then
		no_leaks "$f" "$what"
		jq_true '.["format-specific"].data.corrupt != true' qemu-img info --output=json "$f" ||
			fail "$what: $f marked corrupt"
	fi
	echo "ok: $what onto a full file system: $(head -n 1 cli.out)"
	runs=$((runs + 1))
}
for o in "-O qcow2" "-O qcow2 -c" "-O raw"; do
	fill_fs "$MNT"
	rm -f "$MNT/out"
	# shellcheck disable=SC2086
	cli_full "cowvm image convert $o" "$MNT/out" "$COWVM" image convert "$T/src.qcow2" "$MNT/out" $o
done
fill_fs "$MNT"
qemu-img create -q -f qcow2 "$MNT/base.qcow2" 24M || fail create
qemu-img create -q -f qcow2 -b "$T/src.qcow2" -F qcow2 "$MNT/top.qcow2" || fail create
cli_full "cowvm image rebase" "$MNT/top.qcow2" "$COWVM" image rebase "$MNT/top.qcow2" -b "$MNT/base.qcow2" -F qcow2
qemu-img info "$MNT/top.qcow2" | grep -q "^backing file: $T/src.qcow2" ||
	fail "a failed rebase changed the backing file"
qemu-img create -q -f qcow2 -b "$MNT/base.qcow2" -F qcow2 "$T/ov.qcow2" || fail create
qemu-img convert -q -n -f raw -O qcow2 "$T/src.raw" "$T/ov.qcow2" || fail "fill overlay"
cli_full "cowvm image commit" "$MNT/base.qcow2" "$COWVM" image commit "$T/ov.qcow2"
rm -f "$MNT/filler"
fallocate -l "$(df --output=avail -B1 "$MNT" | tail -n 1)" "$MNT/filler" 2>/dev/null
cli_full "cowvm image create" "$MNT/new.qcow2" "$COWVM" image create "$MNT/new.qcow2" 1G
umount "$MNT" || fail "umount tmpfs"
MNT=""

truncate -s 48M "$T/ext4.img" && mkfs.ext4 -q -m 0 "$T/ext4.img" || fail "mkfs.ext4"
if ! mount -o loop "$T/ext4.img" "$T/mnt" 2>mount.err; then
	cat mount.err
	skip "SKIP: cannot mount a loop ext4 file system: the $runs other cases passed"
fi
MNT="$T/mnt"
for o in "" cluster_size=4096,backing; do
	fill_fs "$MNT"
	COWIO_DIRECT=1 cow_fill "ext4, O_DIRECT, ${o:-defaults}" "$MNT" "$o" 4 --filler "$MNT/filler"
done
for t in io_uring threads; do
	fill_fs "$MNT"
	stg_fill "ext4, O_DIRECT, cluster_size=4096, $t" "$MNT" cluster_size=4096 1 \
		--filler "$MNT/filler" --direct --maxlen 262144 $([ $t = threads ] && echo --threads)
done
vm_full "$MNT" ",cache=none"

# EIO: the ext4 shut down (EXT4_IOC_SHUTDOWN, no log flush: every later
# read, write and fdatasync fails with EIO) while cowio crashwrite writes
# with a flush every 1..8 ops: the writer stops with a clear error, and
# after a remount qemu-img check finds no corruption and every flushed op
# reads back (cowio crashverify)
if command -v python3 >/dev/null 2>&1; then
	rm -f "$MNT"/*.qcow2 "$MNT/filler"
	for i in 1 2; do
		rm -f "$MNT/eio.qcow2" "$T/eio.log" "$T/eio.base"
		qemu-img create -q -f qcow2 -o cluster_size=4096 "$MNT/eio.qcow2" 16M || fail create
		"$COWIO" crashwrite "$MNT/eio.qcow2" "$i" "$T/eio.log" 2>"$T/eio.err" &
		pid=$!
		sleep "0.$((i * 2))"
		python3 -c 'import fcntl, os, struct, sys
fcntl.ioctl(os.open(sys.argv[1], os.O_RDONLY), 0x8004587D, struct.pack("I", 2))' "$MNT" ||
			{ kill "$pid"; wait "$pid"; echo "note: EXT4_IOC_SHUTDOWN failed: EIO case left out"; break; }
		timeout 30 tail --pid="$pid" -f /dev/null || { kill -9 "$pid"; fail "writer hangs after EIO"; }
		wait "$pid"
		rc=$?
		[ "$rc" -eq 1 ] && grep -q "Input/output error" "$T/eio.err" ||
			{ cat "$T/eio.err"; fail "writer on a shut-down file system: exit $rc"; }
		umount "$MNT" && mount -o loop "$T/ext4.img" "$MNT" || fail "remount ext4"
		# (leaks allowed: as after a crash, I17)
		qcheck "$MNT/eio.qcow2" leaks
		"$COWIO" crashverify "$MNT/eio.qcow2" "$i" "$T/eio.log" "$T/eio.base" >eio.out 2>&1 ||
			{ cat eio.out; fail "flushed data lost after EIO"; }
		echo "ok: EIO ($(head -c 120 "$T/eio.err")): $(cat eio.out)"
		runs=$((runs + 1))
	done
fi
umount "$MNT" || fail "umount ext4"
MNT=""

echo "ok: $runs runs"
