#!/bin/bash
# More edge cases of the chain commands where cowvm must agree with
# qemu-img 7.2 (each one a defect found by a review against it):
# - info of an overlay whose backing file is missing describes the overlay
#   (qemu-img info opens the image alone); info --chain still fails;
# - rebase -u -F names a backing file that does not exist yet (moving a
#   chain), as qemu-img rebase -u does; -F takes only raw or qcow2;
# - create -b F -F FMT opens F in FMT (its size is that format's: a qcow2
#   file used as a raw backing has its file size), and refuses a raw file
#   given as qcow2, as qemu-img create does;
# - commit of an overlay with internal snapshots commits its active view
#   and empties it, leaving the snapshots, as qemu-img commit does (it was
#   refused while cowvm could not write such images); -d keeps it;
# - map --json merges data runs of a lower layer that a layer with
#   512-byte clusters (an L2 table per 32 KiB) above it cut, as qemu-img
#   map does;
# - info --json of a raw file prints "dirty-flag" (false), as qemu-img does;
# - info --json [--chain] lists internal snapshots ("snapshots") and
#   persistent dirty bitmaps (format-specific "bitmaps") as qemu-img does,
#   and the human form has qemu-img's snapshot table;
# - rebase -u rewrites the backing file name of an image with internal
#   snapshots (qemu-img rebase -u does); the snapshots stay intact, and
#   so do persistent bitmaps (no leaked clusters in qemu-img check);
# - create -b over a backing file another process writes (a running VM):
#   qemu-img create opens it without locks (force-share), so does cowvm;
# - the human info has qemu-img info's lines in its order (v2: no feature
#   lines; dirty: "cleanly shut down: no"), plus the chain depth;
# - map --json of unallocated subclusters past the end of the backing file
#   carries the offset of their host cluster, as without a backing file;
# - commit into a raw base makes holes where the top has zero or discarded
#   clusters, as qemu-img commit does (it wrote zeros there).
# timeout: 120
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v jq >/dev/null || skip "jq not installed"
cow_tmpdir

# --- info of an overlay whose backing file is missing
mkdir d
qemu-img create -q -f qcow2 d/gone.qcow2 1M
qemu-img create -q -f qcow2 -b gone.qcow2 -F qcow2 d/o.qcow2
rm d/gone.qcow2
keys='{s: ."virtual-size", b: ."backing-filename", fb: ."full-backing-filename", f: ."backing-filename-format"}'
q=$(qemu-img info --output=json d/o.qcow2 | jq -c "$keys")
c=$("$COWVM" image info --json d/o.qcow2 | jq -c "$keys")
[ -n "$q" ] && [ "$q" = "$c" ] || fail "info of an overlay without its backing file: qemu-img $q, cowvm $c"
"$COWVM" image info d/o.qcow2 >out.txt || fail "human info of an overlay without its backing file"
grep -q "^backing file: gone.qcow2" out.txt || fail "human info: $(cat out.txt)"
"$COWVM" image info --chain d/o.qcow2 >/dev/null 2>err.txt && fail "info --chain of a broken chain succeeded"
grep -q "gone.qcow2" err.txt || fail "info --chain does not name the missing file: $(cat err.txt)"
echo "ok: info of an overlay whose backing file is missing"

# --- rebase -u onto a backing file that does not exist (yet)
qemu-img create -q -f qcow2 rb.qcow2 1M
qemu-img create -q -f qcow2 -b rb.qcow2 -F qcow2 ro.qcow2
"$COWVM" image rebase -u -b moved/rb.qcow2 -F qcow2 ro.qcow2 || fail "rebase -u -F onto a missing file"
jq_true '."backing-filename" == "moved/rb.qcow2" and ."backing-filename-format" == "qcow2"' \
	qemu-img info --output=json ro.qcow2 || fail "rebase -u did not rewrite the name"
mkdir moved && mv rb.qcow2 moved/
qcheck ro.qcow2
"$COWVM" image rebase -u -b rb.qcow2 -F qcow3 ro.qcow2 2>/dev/null && fail "rebase -F qcow3 accepted"
"$COWVM" image rebase -u -b nowhere.qcow2 ro.qcow2 2>/dev/null && fail "rebase -u without -F onto a missing file (no format to probe)"
echo "ok: rebase -u onto a missing backing file"

# --- create -b with -F: the backing file is opened in that format
qemu-img create -q -f qcow2 fb.qcow2 10M
head -c 100000 /dev/urandom > fb.raw
qemu-img create -q -f qcow2 -b fb.qcow2 -F raw fq.qcow2
"$COWVM" image create fc.qcow2 -b fb.qcow2 -F raw || fail "create -b qcow2-file -F raw"
q=$(qemu-img info --output=json fq.qcow2 | jq '."virtual-size"')
c=$(qemu-img info --output=json fc.qcow2 | jq '."virtual-size"')
[ -n "$q" ] && [ "$q" = "$c" ] || fail "create -F raw over a qcow2 file: size qemu-img $q, cowvm $c"
qcheck fc.qcow2
"$COWVM" image create fc2.qcow2 -b fb.raw -F qcow2 2>/dev/null && fail "create -F qcow2 over a raw file accepted"
echo "ok: create -b -F opens the backing file in that format"

# --- commit of an overlay with internal snapshots: as qemu-img commit
qemu-img create -q -f qcow2 sb.qcow2 1M
qemu-io -c "write -P 9 0 1M" sb.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b sb.qcow2 -F qcow2 st.qcow2
qemu-io -c "write -P 1 0 64k" -c "write -P 4 256k 64k" st.qcow2 >/dev/null
qemu-img snapshot -c s1 st.qcow2
qemu-io -c "write -P 2 64k 64k" -c "write -P 3 0 4k" -c "discard 256k 64k" st.qcow2 >/dev/null
cp sb.qcow2 qsb.qcow2
cp st.qcow2 qst.qcow2
cp sb.qcow2 dsb.qcow2
cp st.qcow2 dst.qcow2
qemu-img rebase -u -b qsb.qcow2 -F qcow2 qst.qcow2
qemu-img rebase -u -b dsb.qcow2 -F qcow2 dst.qcow2
qemu-img commit -q qst.qcow2 || fail "qemu-img commit of an overlay with snapshots"
"$COWVM" image commit st.qcow2 >/dev/null || fail "commit of an overlay with snapshots"
qcheck sb.qcow2
qcheck st.qcow2
qemu-img compare -q sb.qcow2 qsb.qcow2 || fail "commit with snapshots: base differs from qemu-img's"
qemu-img compare -q st.qcow2 qst.qcow2 || fail "commit with snapshots: overlay reads differently from qemu-img's"
n=$(qemu-img map --output=json st.qcow2 | jq '[.[] | select(.depth == 0 and .data)] | length')
[ "$n" = 0 ] || fail "commit with snapshots: $n data runs left in the overlay"
qemu-img convert -l snapshot.name=s1 -O raw st.qcow2 s1.raw &&
	qemu-img convert -l snapshot.name=s1 -O raw qst.qcow2 qs1.raw || fail "snapshot s1 after commit"
cmp -s s1.raw qs1.raw || fail "commit with snapshots: snapshot s1 differs from qemu-img's"
"$COWVM" image commit -d dst.qcow2 >/dev/null || fail "commit -d of an overlay with snapshots"
qcheck dsb.qcow2
qemu-img compare -q dst.qcow2 dsb.qcow2 || fail "commit -d: backing file differs from the overlay"
echo "ok: commit of an overlay with internal snapshots"

# --- map: data of a lower layer under a layer of 512-byte clusters
qemu-img create -q -f qcow2 mb.qcow2 2M
qemu-io -c "write -P 1 0 2M" mb.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=512 -b mb.qcow2 -F qcow2 mt.qcow2
qemu-io -c "write -P 2 1M 4k" mt.qcow2 >/dev/null
strip() { jq -c 'map(del(.compressed))'; }
qm=$(qemu-img map --output=json mt.qcow2 | strip)
cm=$("$COWVM" image map --json mt.qcow2 | strip)
[ -n "$qm" ] && [ "$qm" = "$cm" ] || { echo "qemu-img: $qm"; echo "cowvm:    $cm"; fail "map under 512-byte clusters"; }
echo "ok: map merges data runs of lower layers"

# --- info --json of a raw file: the same keys and values as qemu-img's
head -c 5000 /dev/urandom > i.raw
q=$(qemu-img info --output=json i.raw | jq -S -c 'del(."actual-size")')
c=$("$COWVM" image info --json i.raw | jq -S -c 'del(."actual-size", ."chain-depth")')
[ -n "$q" ] && [ "$q" = "$c" ] || fail "info of a raw file: qemu-img $q, cowvm $c"
echo "ok: info --json of a raw file"

# --- info: snapshots and bitmaps, in a chain
qemu-img create -q -f qcow2 sa.qcow2 1M
qemu-img create -q -f qcow2 -b sa.qcow2 -F qcow2 sc.qcow2
qemu-img snapshot -c snap1 sc.qcow2
qemu-io -c "write 0 64k" sc.qcow2 >/dev/null
qemu-img snapshot -c "second one" sc.qcow2
qemu-img bitmap --add sc.qcow2 bm0
qemu-img bitmap --add -g 1M --disable sc.qcow2 other
q=$(qemu-img info --output=json --backing-chain sc.qcow2 | jq -S -c 'map(del(."actual-size"))')
c=$("$COWVM" image info --json --chain sc.qcow2 | jq -S -c 'map(del(."actual-size", ."chain-depth"))')
[ -n "$q" ] && [ "$q" = "$c" ] || { echo "qemu-img: $q"; echo "cowvm:    $c"; fail "info --json --chain with snapshots and bitmaps"; }
qemu-img info sc.qcow2 | sed -n '/^Snapshot list:/,/^Format/p' >q.txt
"$COWVM" image info sc.qcow2 | sed -n '/^Snapshot list:/,/^Format/p' >c.txt
[ -s q.txt ] && cmp -s q.txt c.txt || { diff q.txt c.txt; fail "human snapshot list"; }
echo "ok: info lists snapshots and bitmaps"

# --- rebase -u of an image with internal snapshots
cp sa.qcow2 sn.qcow2
"$COWVM" image rebase -u -b sn.qcow2 -F qcow2 sc.qcow2 || fail "rebase -u of an image with snapshots"
jq_true '."backing-filename" == "sn.qcow2" and (.snapshots | length) == 2' qemu-img info --output=json sc.qcow2 ||
	fail "rebase -u: backing name or snapshots"
qcheck sc.qcow2
qemu-img convert -l snap1 -O raw sc.qcow2 snap1.raw || fail "snapshot not readable after rebase -u"
jq_true '."format-specific".data.bitmaps | length == 2' qemu-img info --output=json sc.qcow2 ||
	fail "rebase -u dropped the bitmaps"
echo "ok: rebase -u of an image with snapshots (and bitmaps)"

# --- create -b over a backing file that another process has open for writing
qemu-img create -q -f qcow2 lb.qcow2 1M
qemu-io -c "sleep 20000" lb.qcow2 >/dev/null 2>&1 &
qpid=$!
# wait until it holds its locks, seen in /proc/locks (a probe that takes a
# lock itself, like qemu-img info, can make qemu-io's own locking fail)
ino=$(stat -c %i lb.qcow2)
for ((i = 0; i < 200; i++)); do
	grep -q ":$ino " /proc/locks && break
	kill -0 "$qpid" 2>/dev/null || fail "qemu-io exited before taking its locks"
	sleep 0.05
done
[ $i -lt 200 ] || { kill "$qpid"; wait "$qpid"; fail "qemu-io took no lock in 10 s"; }
"$COWVM" image create lo.qcow2 -b lb.qcow2 -F qcow2 2>err.txt; rc=$?
"$COWVM" image create lo2.qcow2 -b lb.qcow2 2>>err.txt; rc2=$?
kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null
[ $rc = 0 ] && [ $rc2 = 0 ] || fail "create -b over a backing file in use: $(cat err.txt)"
qcheck lo.qcow2; qcheck lo2.qcow2
echo "ok: create -b over a backing file in use"

# --- human info: qemu-img info's lines (less cowvm's chain depth)
qemu-img create -q -f qcow2 -o compat=0.10 h2.qcow2 1M
qemu-img create -q -f qcow2 -o lazy_refcounts=on hl.qcow2 1M
qemu-io -c "write 0 64k" -c abort hl.qcow2 >/dev/null 2>&1
for f in h2.qcow2 hl.qcow2 sc.qcow2; do
	qemu-img info --backing-chain "$f" >q.txt 2>/dev/null
	"$COWVM" image info --chain "$f" | grep -v "^    chain depth: " >c.txt
	[ -s q.txt ] && cmp -s q.txt c.txt || { diff q.txt c.txt; fail "human info of $f"; }
done
echo "ok: human info"

# --- map: unallocated subclusters (with a host cluster) past the backing's end
qemu-img create -q -f qcow2 eb.qcow2 8M
qemu-io -c "write -P 1 0 8M" eb.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b eb.qcow2 -F qcow2 -o cluster_size=4K em.qcow2 1000K
qemu-img create -q -f qcow2 -b em.qcow2 -F qcow2 -o extended_l2=on et.qcow2 4M
qemu-io -c "write -P 3 990K 20K" -c "write -P 4 3M 4K" et.qcow2 >/dev/null
qm=$(qemu-img map --output=json et.qcow2 | strip)
cm=$("$COWVM" image map --json et.qcow2 | strip)
[ -n "$qm" ] && [ "$qm" = "$cm" ] || { echo "qemu-img: $qm"; echo "cowvm:    $cm"; fail "map past the backing's end"; }
echo "ok: map of subclusters past the backing's end"

# --- commit into a raw base: the top's zero and discarded clusters become holes
for t in c q; do
	qemu-img create -q -f raw "rb$t.raw" 4M
	qemu-io -f raw -c "write -P 1 0 4M" "rb$t.raw" >/dev/null
	qemu-img create -q -f qcow2 -b "rb$t.raw" -F raw "rt$t.qcow2"
	qemu-io -c "write -z 0 1M" -c "write -P 2 1M 1M" -c "discard 2M 1M" "rt$t.qcow2" >/dev/null
done
"$COWVM" image commit rtc.qcow2 >/dev/null || fail "commit into a raw base"
qemu-img commit -q rtq.qcow2
qemu-img compare -q -f raw -F raw rbc.raw rbq.raw || fail "commit into a raw base: content differs from qemu-img's"
qm=$(qemu-img map --output=json -f raw rbq.raw | strip)
cm=$(qemu-img map --output=json -f raw rbc.raw | strip)
[ "$qm" = "$cm" ] || { echo "qemu-img's: $qm"; echo "cowvm's:    $cm"; fail "commit into a raw base: allocation differs"; }
echo "ok: commit into a raw base makes holes"
