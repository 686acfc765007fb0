#!/bin/bash
# A new refcount block or a moved refcount table over live metadata, against
# QEMU: on images whose L1 table names an L2 table just past the end of the
# file, where the next refcount block (512-byte clusters, 64-bit refcounts)
# or the moved refcount table goes, and on one whose L2 table (not cached)
# has a damaged refcount of 0, where the next data cluster goes, cow/
# refuses before writing anything and marks the image corrupt (checked by tests/unit/test-cow-rcfail, which keeps
# its crafted images with RCFAIL_KEEP); qemu-io on the same images refuses
# too ("Preventing invalid write on metadata (overlaps with active L2
# table)") and marks them corrupt, though it extends the file first (cow/
# leaves it as it was); `cowvm image check` and `qemu-img check` both
# report the damage.
# timeout: 60
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v qemu-io >/dev/null 2>&1 || skip "qemu-io not installed"
RCFAIL="$COWVM_SRC/$COWVM_BUILD/tests/unit/test-cow-rcfail"
[ -x "$RCFAIL" ] || skip "$RCFAIL not built"
cow_tmpdir

RCFAIL_KEEP="$T/ov" "$RCFAIL" >rcfail.out 2>&1 || { cat rcfail.out; fail "test-cow-rcfail failed"; }
grep -q "new refcount block at 0x8000 overlaps an L2 table (L1 entry 1000); not written" rcfail.out &&
	grep -q "allocated cluster 0x60000 overlaps an L2 table (L1 entry 2)" rcfail.out ||
	fail "cow/'s refusal messages: $(grep message rcfail.out)"
for k in block table l2data; do
	img=ov-$k.qcow2
	[ -f "$img" ] || fail "test-cow-rcfail kept no $img"
	case $k in
	block) w="$(((32000 + 8) * 512)) 512" ;;
	table) w="$(((32000 + 8) * 512)) 4096" ;;   # 8 clusters cross the table's last range
	l2data) w="64k 4k" ;;   # a data cluster, onto an L2 table not cached
	esac
	"$COWVM" image check "$img" >ck.out 2>&1
	[ $? -eq 2 ] || { cat ck.out; fail "cowvm image check $img"; }
	qemu-img check "$img" >qck.out 2>&1
	[ $? -eq 2 ] || { cat qck.out; fail "qemu-img check $img"; }
	size=$(stat -c %s "$img")
	qemu-io -c "write -P 0x88 $w" "$img" >qio.out 2>&1 &&
		fail "qemu-io wrote into $img"
	grep -q "Preventing invalid write on metadata (overlaps with active L2 table)" qio.out ||
		{ cat qio.out; fail "qemu-io's message on $img"; }
	qemu-img info "$img" | grep -q "corrupt: true" || fail "qemu-io left $img not corrupt"
	echo "ok: $k: cow/ refuses (file unchanged, $size bytes); qemu-io refuses (file now $(stat -c %s "$img") bytes)"
done
echo PASS
