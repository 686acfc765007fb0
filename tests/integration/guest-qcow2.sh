# The test guest's disk-write / disk-verify through virtio-blk on qcow2 disks:
# disk-write into an overlay (backing: a qemu-made base) under cowvm run, then
# qemu-img check is clean, the base is untouched, and qemu-img and cowvm read
# the overlay identically; disk-verify under cowvm passes on images QEMU wrote
# (plain, zlib- and zstd-compressed); ",format=raw" forces raw.
# timeout: 240
[ -f "$(dirname "$0")/../lib.sh" ] || { echo "tests/lib.sh (the VMM test helpers) not in this tree"; exit 77; }
. "$(dirname "$0")/../lib.sh"
need_kvm
need_cmd qemu-img

qemu-img create -q -f qcow2 "$T/base.qcow2" 48M
qemu-io -c "write -P 0x5a 0 48M" "$T/base.qcow2" >/dev/null
"$COWVM" image create "$T/ov.qcow2" -b base.qcow2 -F qcow2 || fail "image create"
sum=$(md5sum < "$T/base.qcow2")

for cpus in 1 2; do
	run_guest 90 "$T/w$cpus" "cowvm.test=disk-write seed=$((cpus + 6))" --cpus $cpus --disk "$T/ov.qcow2"
	expect_rc 0 "$T/w$cpus" "disk-write on a qcow2 overlay"
	expect_line "$T/w$cpus" '^cowvm-guest: disk-write ok sectors=98304$'
	run_guest 90 "$T/v$cpus" "cowvm.test=disk-verify seed=$((cpus + 6))" --cpus $cpus --disk "$T/ov.qcow2"
	expect_rc 0 "$T/v$cpus" "disk-verify on a qcow2 overlay"
done
[ "$(md5sum < "$T/base.qcow2")" = "$sum" ] || fail "the backing file was modified"
qemu-img check -q "$T/ov.qcow2" || fail "qemu-img check of the overlay the guest wrote"
"$COWVM" image convert -O raw "$T/ov.qcow2" "$T/cowvm.raw" || fail "cowvm image convert"
qemu-img compare -q "$T/ov.qcow2" "$T/cowvm.raw" || fail "qemu-img and cowvm read the overlay differently"
# what QEMU reads from the overlay is what the guest wrote
qemu-img convert -O raw "$T/ov.qcow2" "$T/qemu.raw"
run_guest 90 "$T/vq" "cowvm.test=disk-verify seed=8" --disk "$T/qemu.raw,format=raw"
expect_rc 0 "$T/vq" "disk-verify of QEMU's reading of the overlay"

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

# ,format=raw forces raw: the guest then sees the qcow2 bytes, not the data
run_guest 60 "$T/raw" "cowvm.test=disk-verify seed=8" --disk "$T/q.qcow2,format=raw,ro"
[ "$RC" -ne 0 ] || fail "format=raw did not force raw"
echo "ok"
