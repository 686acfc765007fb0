#!/bin/bash
# cowvm image commit / rebase / map / check --repair on chains, with qemu-img
# as the judge: content is unchanged by rebase and by commit (compare against
# the flattened image), every image stays clean by `qemu-img check`, map
# agrees with `qemu-img map` on which clusters hold data, --repair all fixes
# a wrong refcount, and a dirty lazy-refcounts image is repaired on open.
# timeout: 180
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v jq >/dev/null || skip "jq not installed"
cow_tmpdir

qemu-img create -q -f qcow2 base.qcow2 32M
qemu-io -c "write -P 0x10 0 32M" base.qcow2 >/dev/null
"$COWVM" image create mid.qcow2 -b base.qcow2 || fail create
"$COWVM" image create top.qcow2 -b mid.qcow2 --cluster-size 4K || fail create
qemu-img convert -O raw base.qcow2 ref.raw
"$COWIO" random mid.qcow2 ref.raw 11 80 || fail "writes to mid"
cp ref.raw mid.raw
"$COWIO" random top.qcow2 ref.raw 12 80 compress || fail "writes to top"
qcheck mid.qcow2; qcheck top.qcow2
qcompare ref.raw top.qcow2

# map agrees with qemu-img map about where data lives (per 4 KiB cluster, per layer)
cl() { jq -c '[.[] | select(.data) | {d: .depth, s: (.start / 4096 | floor), e: ((.start + .length) / 4096 | ceil)} | range(.s; .e) as $c | [$c, .d]] | sort'; }
qm=$(qemu-img map --output=json top.qcow2 | cl)
cm=$("$COWVM" image map --json top.qcow2 | cl)
[ "$qm" = "$cm" ] || fail "map differs from qemu-img map"
echo "ok: map agrees with qemu-img map"

# safe rebase onto base: content unchanged, backing is now base
cp top.qcow2 top2.qcow2
"$COWVM" image rebase top2.qcow2 -b base.qcow2 || fail rebase
jq_true '."backing-filename" == "base.qcow2"' qemu-img info --output=json top2.qcow2 || fail "backing not changed"
qcheck top2.qcow2
qcompare ref.raw top2.qcow2
# rebase to no backing at all
"$COWVM" image rebase top2.qcow2 -b "" || fail "rebase to none"
jq_true '."backing-filename" == null' qemu-img info --output=json top2.qcow2 || fail "backing not removed"
qcheck top2.qcow2
qcompare ref.raw top2.qcow2
echo "ok: rebase"

# commit top into mid: mid now holds the data; top is emptied and reads the same
sum=$(md5sum base.qcow2)
"$COWVM" image commit top.qcow2 >/dev/null || fail commit
[ "$(md5sum base.qcow2)" = "$sum" ] || fail "commit touched the layer below the target"
qcheck mid.qcow2; qcheck top.qcow2
qcompare ref.raw mid.qcow2
qcompare ref.raw top.qcow2
[ "$(qemu-img map --output=json top.qcow2 | jq '[.[] | select(.depth == 0 and .data)] | length')" = 0 ] ||
	fail "top not emptied by commit"
echo "ok: commit"

# --repair all fixes a wrong refcount (cluster 5 of a 64K image set to 0)
qemu-img create -q -f qcow2 bad.qcow2 4M
qemu-io -c "write -P 3 0 1M" bad.qcow2 >/dev/null
rb=$(get_be bad.qcow2 $((0x10000)) 8)
put_be bad.qcow2 $((rb + 10)) 2 0
qemu-img check -q bad.qcow2 >/dev/null 2>&1; [ $? -eq 2 ] || fail "qemu-img should see corruption"
"$COWVM" image check bad.qcow2 >out.txt; [ $? -eq 2 ] || fail "cowvm check should see corruption"
"$COWVM" image check --repair all bad.qcow2 >out.txt || { cat out.txt; fail "repair all"; }
qcheck bad.qcow2
# (qemu-io exits 1 when a pattern does not match; it prints "read ..." anyway)
qemu-io -c "read -P 3 0 1M" bad.qcow2 >/dev/null || fail "data lost by repair"
echo "ok: repair all"

# a dirty lazy-refcounts image (qemu-io abort) is repaired when opened for writing
qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 8M
qemu-io -c "write -P 9 0 2M" -c abort lazy.qcow2 >/dev/null 2>&1
jq_true '."dirty-flag" == true' "$COWVM" image info --json lazy.qcow2 || skip "qemu-io left no dirty image"
qemu-img convert -O raw -U lazy.qcow2 lazy.raw 2>/dev/null || qemu-img convert -O raw lazy.qcow2 lazy.raw
"$COWIO" random lazy.qcow2 lazy.raw 2 30 || fail "write to a dirty image"
jq_true '."dirty-flag" == false' "$COWVM" image info --json lazy.qcow2 || fail "dirty bit not cleared"
qcheck lazy.qcow2
qcompare lazy.raw lazy.qcow2
echo "ok: dirty image repaired"
