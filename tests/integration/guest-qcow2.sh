# The test guest's disk-write / disk-verify through virtio-blk on qcow2 disks:
# disk-write into an overlay (backing: a qemu-made base) under cowvm run, then
# qemu-img check is clean, the base is untouched, and qemu-img and cowvm read
# the overlay identically (the second disk-write, with 2 vCPUs, goes into an
# overlay with an internal snapshot of the first, which must stay intact); disk-verify under cowvm passes on images QEMU wrote
# (plain, zlib- and zstd-compressed); ",format=raw" forces raw; 30 kill -9
# points during guest writes and 100 power cuts of one leave no corruption;
# ,cache=none (O_DIRECT) on a fresh overlay (and on a preallocated one, which
# does not grow) writes what the buffered path and QEMU read back. A
# persistent dirty bitmap added to the overlay by qemu-img before the VM
# runs is stored consistent by cowvm, with the guest's writes dirty.
# timeout: 240
. "$(dirname "$0")/../lib.sh"
need_kvm
need_cmd qemu-img

qemu-img create -q -f qcow2 "$T/base.qcow2" 48M
qemu-io -c "write -P 0x5a 0 48M" "$T/base.qcow2" >/dev/null
"$COWVM" image create "$T/ov.qcow2" -b base.qcow2 -F qcow2 || fail "image create"
# cowvm's overlays have subclusters (extended L2) by default
# (the output captured first: jq -e passes on empty input)
info=$(qemu-img info --output=json "$T/ov.qcow2") && [ -n "$info" ] &&
	printf '%s' "$info" | jq -e '."format-specific".data."extended-l2" == true' >/dev/null ||
	fail "a default overlay should have extended L2 entries"
sum=$(md5sum < "$T/base.qcow2")
. "$COWVM_SRC/tests/lib/bitmap.sh"
have_bm=
if command -v qemu-nbd >/dev/null && command -v jq >/dev/null; then
	qemu-img bitmap --add -g 1M "$T/ov.qcow2" vm || fail "qemu-img bitmap --add"
	have_bm=1
fi

for cpus in 1 2; do
	if [ $cpus = 2 ]; then
		qemu-img snapshot -c s1 "$T/ov.qcow2" || fail "qemu-img snapshot -c"
		qemu-img convert -l snapshot.name=s1 -O raw "$T/ov.qcow2" "$T/s1.raw" || fail "read snapshot s1"
	fi
	run_guest 90 "$T/w$cpus" "cowvm.test=disk-write seed=$((cpus + 6))" --cpus $cpus --disk "$T/ov.qcow2"
	expect_rc 0 "$T/w$cpus" "disk-write on a qcow2 overlay"
	expect_line "$T/w$cpus" '^cowvm-guest: disk-write ok sectors=98304$'
	run_guest 90 "$T/v$cpus" "cowvm.test=disk-verify seed=$((cpus + 6))" --cpus $cpus --disk "$T/ov.qcow2"
	expect_rc 0 "$T/v$cpus" "disk-verify on a qcow2 overlay"
	# the VM's writes (virtio-blk, storage/) in the bitmap, stored
	# consistent at its close: the guest wrote every sector
	if [ $cpus = 1 ] && [ -n "$have_bm" ]; then
		f=$(qemu-img info --output=json "$T/ov.qcow2" |
			jq -c '[."format-specific".data.bitmaps[] | [.name, .flags]]')
		[ "$f" = '[["vm",["auto"]]]' ] || fail "the VM left the bitmap as $f"
		d=$(cd "$T" && bm_dirty ov.qcow2 vm)
		[ "$d" = "[[0,50331648]]" ] || fail "the bitmap after the VM's writes reads dirty as $d"
		echo "ok: the VM's writes in the persistent bitmap"
	fi
done
[ "$(md5sum < "$T/base.qcow2")" = "$sum" ] || fail "the backing file was modified"
qemu-img check -q "$T/ov.qcow2" || fail "qemu-img check of the overlay the guest wrote"
qemu-img convert -l snapshot.name=s1 -O raw "$T/ov.qcow2" "$T/s1now.raw" &&
	cmp -s "$T/s1.raw" "$T/s1now.raw" || fail "the guest's writes changed the overlay's snapshot"
"$COWVM" image convert -O raw "$T/ov.qcow2" "$T/cowvm.raw" || fail "cowvm image convert"
qemu-img compare -q "$T/ov.qcow2" "$T/cowvm.raw" || fail "qemu-img and cowvm read the overlay differently"
# what QEMU reads from the overlay is what the guest wrote
qemu-img convert -O raw "$T/ov.qcow2" "$T/qemu.raw"
run_guest 90 "$T/vq" "cowvm.test=disk-verify seed=8" --disk "$T/qemu.raw,format=raw"
expect_rc 0 "$T/vq" "disk-verify of QEMU's reading of the overlay"

# cache=none: a fresh overlay (4 KiB clusters too) written and verified with
# O_DIRECT, then verified buffered; qemu-img check is clean and QEMU reads
# the same data
if [ "$(stat -f -c %T "$T")" != tmpfs ]; then
	for cs in 64K 4K prealloc; do
		rm -f "$T/dov.qcow2"
		opts="--cluster-size $cs"
		# a preallocated overlay (64 KiB clusters, extended L2): the
		# guest's writes go in place, the file does not grow
		[ $cs = prealloc ] && opts="--preallocation falloc"
		# shellcheck disable=SC2086
		"$COWVM" image create "$T/dov.qcow2" -b base.qcow2 -F qcow2 $opts || fail "image create"
		sz=$(stat -c %s "$T/dov.qcow2")
		run_guest 90 "$T/dw$cs" "cowvm.test=disk-write seed=8" --cpus 2 --disk "$T/dov.qcow2,cache=none"
		expect_rc 0 "$T/dw$cs" "disk-write on a qcow2 overlay with cache=none ($cs clusters)"
		run_guest 90 "$T/dv$cs" "cowvm.test=disk-verify seed=8" --disk "$T/dov.qcow2,cache=none"
		expect_rc 0 "$T/dv$cs" "disk-verify on a qcow2 overlay with cache=none ($cs clusters)"
		run_guest 90 "$T/dvb$cs" "cowvm.test=disk-verify seed=8" --disk "$T/dov.qcow2"
		expect_rc 0 "$T/dvb$cs" "buffered disk-verify of the cache=none overlay ($cs clusters)"
		qemu-img check -q "$T/dov.qcow2" || fail "qemu-img check of the cache=none overlay ($cs clusters)"
		qemu-img compare -q "$T/dov.qcow2" "$T/qemu.raw" || fail "QEMU reads the cache=none overlay differently"
		[ $cs != prealloc ] || [ "$(stat -c %s "$T/dov.qcow2")" = "$sz" ] ||
			fail "the guest's writes grew the preallocated overlay from $sz to $(stat -c %s "$T/dov.qcow2") bytes"
	done
	echo "ok: cache=none"
else
	note "$T is on tmpfs: cache=none part skipped"
fi

# images QEMU wrote: plain, zlib- and zstd-compressed
for o in "" "-c" "-c -o compression_type=zstd"; do
	rm -f "$T/q.qcow2"
	# shellcheck disable=SC2086
	qemu-img convert -f raw -O qcow2 $o "$T/qemu.raw" "$T/q.qcow2" || fail "qemu-img convert $o"
	run_guest 90 "$T/vz" "cowvm.test=disk-verify seed=8" --disk "$T/q.qcow2"
	expect_rc 0 "$T/vz" "disk-verify on an image QEMU wrote ($o)"
done

# QEMU itself (virtio-blk-pci, if installed) reads the overlay the guest wrote
# under cowvm, and writes an overlay that the guest then verifies under cowvm
if command -v qemu-system-x86_64 >/dev/null 2>&1; then
	qrun() {   # DISK FORMAT-OPTS CMDLINE -> guest status in QRC
		timeout -k 5 120 qemu-system-x86_64 -nodefaults -no-user-config -nographic \
			-serial stdio -device isa-debug-exit,iobase=0x501,iosize=4 -kernel "$TESTGUEST" \
			-M pc -accel kvm -cpu host,-arch-capabilities -m 256M \
			-device virtio-blk-pci,drive=d0,disable-legacy=on \
			-drive "if=none,id=d0,file=$1,format=qcow2$2" -append "$3" \
			</dev/null >"$T/qemu.out" 2>"$T/qemu.err"
		QRC=$(( ($? - 1) >> 1 ))
	}
	qrun "$T/ov.qcow2" ",readonly=on" "cowvm.test=disk-verify seed=8"
	[ "$QRC" -eq 0 ] || { cat "$T/qemu.out" "$T/qemu.err"; fail "QEMU disk-verify of the cowvm-written overlay"; }
	"$COWVM" image create "$T/ov2.qcow2" -b base.qcow2 -F qcow2 || fail "image create"
	qrun "$T/ov2.qcow2" "" "cowvm.test=disk-write seed=9"
	[ "$QRC" -eq 0 ] || { cat "$T/qemu.out" "$T/qemu.err"; fail "QEMU disk-write into a cowvm overlay"; }
	run_guest 90 "$T/vq2" "cowvm.test=disk-verify seed=9" --disk "$T/ov2.qcow2"
	expect_rc 0 "$T/vq2" "disk-verify under cowvm of the overlay QEMU wrote"
	echo "ok: QEMU and cowvm agree through the guest"
else
	note "qemu-system-x86_64 not installed: QEMU guest part skipped"
fi

# guest-driven crash test: kill -9 the VMM at random points of a guest
# disk-write into an overlay (4 KiB clusters: many allocations); after each
# kill qemu-img check finds no corruption (leaks allowed); then leaks are
# repaired and the image is still fully usable. Every other group of three
# kills runs with cache=none (O_DIRECT; the file is then sized ahead of its
# data, cow.h I12), unless the temp dir is on tmpfs.
"$COWVM" image create "$T/cr.qcow2" -b base.qcow2 -F qcow2 --cluster-size 4K || fail "image create"
leaky=0 partial=0 direct=0
nodirect=0
[ "$(stat -f -c %T "$T")" = tmpfs ] && nodirect=1
for i in $(seq 1 ${GUEST_KILLS:-30}); do
	# a fresh overlay every third kill, so most kills land in allocating writes
	# alternately 4K clusters and the default (64K, extended L2) overlay
	if ((i % 3 == 1)); then
		rm -f "$T/cr.qcow2"
		if ((i % 2)); then
			"$COWVM" image create "$T/cr.qcow2" -b base.qcow2 -F qcow2 --cluster-size 4K || fail "image create"
		else
			"$COWVM" image create "$T/cr.qcow2" -b base.qcow2 -F qcow2 || fail "image create"
		fi
	fi
	cache=writeback
	if ((nodirect == 0 && (i - 1) / 3 % 2 == 1)); then
		cache=none
		direct=$((direct + 1))
	fi
	"$COWVM" run --kernel "$TESTGUEST" --append "cowvm.test=disk-write seed=$i" \
		--console "file:$T/cr.log" --disk "$T/cr.qcow2,cache=$cache" 2>/dev/null &
	pid=$!
	sleep "0.$(printf %03d $((RANDOM % 200)))"   # a 48 MiB disk-write takes ~0.2 s
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	wait_unlocked "$T/cr.qcow2" || fail "image still locked after kill $i"
	qemu-img check -q "$T/cr.qcow2" >"$T/cr.check" 2>&1
	rc=$?
	[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || { cat "$T/cr.check"; fail "qemu-img check after guest kill $i: exit $rc"; }
	[ "$rc" -eq 3 ] && leaky=$((leaky + 1))
	grep -q "disk-write ok" "$T/cr.log" 2>/dev/null || partial=$((partial + 1))
done
"$COWVM" image check --repair leaks "$T/cr.qcow2" >/dev/null || fail "repair leaks after the guest kills"
qemu-img check -q "$T/cr.qcow2" || fail "leaks left after repair"
run_guest 90 "$T/crw" "cowvm.test=disk-write seed=77" --disk "$T/cr.qcow2"
expect_rc 0 "$T/crw" "disk-write after the crash series"
run_guest 90 "$T/crv" "cowvm.test=disk-verify seed=77" --disk "$T/cr.qcow2"
expect_rc 0 "$T/crv" "disk-verify after the crash series"
qemu-img check -q "$T/cr.qcow2" || fail "qemu-img check after the crash series"
echo "ok: ${GUEST_KILLS:-30} guest-driven kill -9 points ($partial mid-write, $leaky left leaks, $direct with cache=none)"

# guest-driven power cut (what only a machine crash leaves; see
# interop/qemu-img-powercut.sh): one disk-write into a fresh 4 KiB-cluster
# overlay recorded by the LD_PRELOAD shim (the disk on worker threads,
# aio=threads, so every write and sync of the VMM is seen, finishing in any
# order as io_uring's do), then the file rebuilt at 100
# cut points, each change after the last completed sync lost, kept or torn:
# qemu-img check finds no corruption in any
if [ -f "$HELPERS/iolog.so" ] && [ -x "$HELPERS/powercut" ]; then
	rm -f "$T/pc0.qcow2" "$T/pc.qcow2" "$T/pc.iolog"
	"$COWVM" image create "$T/pc0.qcow2" -b base.qcow2 -F qcow2 --cluster-size 4K >/dev/null || fail "image create"
	cp "$T/pc0.qcow2" "$T/pc.qcow2"
	LD_PRELOAD="$HELPERS/iolog.so" IOLOG_IMAGE="$T/pc.qcow2" IOLOG_OUT="$T/pc.iolog" \
		ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
		timeout 90 "$COWVM" run --kernel "$TESTGUEST" --append "cowvm.test=disk-write seed=21" \
		--console "file:$T/pc.log" --disk "$T/pc.qcow2,aio=threads" || fail "recorded guest run: $(tail -3 "$T/pc.log")"
	grep -q "disk-write ok" "$T/pc.log" || fail "recorded guest run did not finish its disk-write"
	"$HELPERS/powercut" "$T/pc.iolog" "$T/pc0.qcow2" "$T/pcx.qcow2" "$T/pcx.mark" 0 999999999 >"$T/pc.out" ||
		fail "power-cut replay"
	cmp -s "$T/pcx.qcow2" "$T/pc.qcow2" || fail "a full replay differs from the file the VM wrote"
	for c in $(seq 1 100); do
		"$HELPERS/powercut" "$T/pc.iolog" "$T/pc0.qcow2" "$T/pcx.qcow2" "$T/pcx.mark" "$((RANDOM * 100 + c))" >"$T/pc.out" ||
			fail "power-cut replay"
		qemu-img check -q "$T/pcx.qcow2" >"$T/pc.check" 2>&1
		rc=$?
		[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || { cat "$T/pc.check"; fail "power cut $c ($(cat "$T/pc.out")): qemu-img check exit $rc"; }
	done
	echo "ok: 100 power cuts of a guest disk-write ($(cat "$T/pc.out"))"
else
	note "power-cut helpers not built: guest power cut skipped"
fi

# ,format=raw forces raw: the guest then sees the qcow2 bytes, not the data
run_guest 60 "$T/raw" "cowvm.test=disk-verify seed=8" --disk "$T/q.qcow2,format=raw,ro"
[ "$RC" -ne 0 ] || fail "format=raw did not force raw"
echo "ok"
