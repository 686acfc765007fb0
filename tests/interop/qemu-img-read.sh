#!/bin/bash
# cowvm reads images made by qemu-img/qemu-io with identical content:
# cluster sizes 512 B..2 MiB, refcount_bits 1..64, lazy_refcounts, zlib and
# zstd compression, preallocation metadata/falloc/full, v2 (compat=0.10),
# zero clusters, and a backing chain of depth 10. Content is compared with
# `qemu-img convert -O raw`. cowvm then writes into some of them and
# qemu-img check must stay clean.
# timeout: 300
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
cow_tmpdir

fill() {   # IMG: a few patterns, a zeroed range, a discard
	qemu-io -f qcow2 -c "write -P 0x11 0 300k" -c "write -P 0x22 1M 64k" \
		-c "write -P 0x33 3000k 777k" -c "write -z 1100k 200k" \
		-c "write -P 0x44 20M 1M" -c "discard 20M 64k" -c "write -P 0x55 31M 1M" \
		"$1" >/dev/null || fail "qemu-io on $1"
}
check_same() {   # IMG
	rm -f want.raw
	qemu-img convert -O raw "$1" want.raw || fail "qemu-img convert $1"
	"$COWIO" cmp "$1" want.raw || fail "cowvm reads $1 differently from qemu-img"
}

for o in cluster_size=512 cluster_size=4k cluster_size=64k cluster_size=2M \
	 refcount_bits=1 refcount_bits=2 refcount_bits=4 refcount_bits=8 refcount_bits=32 \
	 refcount_bits=64 lazy_refcounts=on compat=0.10 preallocation=metadata \
	 preallocation=falloc preallocation=full "cluster_size=4k,refcount_bits=1" \
	 extended_l2=on "extended_l2=on,cluster_size=16k" "extended_l2=on,cluster_size=2M" \
	 "extended_l2=on,cluster_size=128k,preallocation=metadata"; do
	rm -f q.qcow2
	qemu-img create -q -f qcow2 -o "$o" q.qcow2 32M || fail "qemu-img create $o"
	fill q.qcow2
	check_same q.qcow2
	# and cowvm writes into it, qemu-img check stays clean
	qemu-img convert -O raw q.qcow2 ref.raw
	random_writes q.qcow2 ref.raw 3 100 "cowvm writes into $o image"
	echo "ok: $o"
done

# compressed images, zlib and zstd, several cluster sizes
head -c 8M /dev/urandom > rnd.raw
{ head -c 8M /dev/zero | tr '\0' 'a'; cat rnd.raw; head -c 4M /dev/zero; } > src.raw
for ct in zlib zstd; do
	for cs in 512 4k 64k 2M; do
		rm -f c.qcow2
		qemu-img convert -q -c -f raw -O qcow2 -o "compression_type=$ct,cluster_size=$cs" src.raw c.qcow2 ||
			fail "qemu-img convert -c $ct $cs"
		"$COWIO" cmp c.qcow2 src.raw || fail "compressed $ct/$cs content"
		jq_true ".\"format-specific\".data.\"compression-type\" == \"$ct\"" "$COWVM" image info --json c.qcow2 ||
			fail "compression type not reported"
		echo "ok: compressed $ct cluster $cs"
	done
done

# internal snapshots: the active state is read, check counts snapshot
# references; writing keeps the snapshots (more in qemu-img-snapshots)
rm -f sn.qcow2
qemu-img create -q -f qcow2 sn.qcow2 16M
qemu-io -c "write -P 1 0 4M" sn.qcow2 >/dev/null
qemu-img snapshot -c s1 sn.qcow2
qemu-io -c "write -P 2 1M 1M" -c "write -c -P 3 8M 64k" sn.qcow2 >/dev/null
qemu-img snapshot -c s2 sn.qcow2
qemu-io -c "write -P 4 2M 64k" sn.qcow2 >/dev/null
check_same sn.qcow2
"$COWVM" image check sn.qcow2 >/dev/null || fail "cowvm check of an image with snapshots"
for s in s1 s2; do qemu-img convert -l "snapshot.name=$s" -O raw sn.qcow2 "$s.raw"; done
qemu-img convert -O raw sn.qcow2 x.raw
"$COWIO" random sn.qcow2 x.raw 1 50 || fail "writing an image with snapshots"
qcheck sn.qcow2
qcompare x.raw sn.qcow2
for s in s1 s2; do
	qemu-img convert -l "snapshot.name=$s" -O raw sn.qcow2 now.raw && cmp -s now.raw "$s.raw" ||
		fail "snapshot $s changed by cowvm's writes"
done
echo "ok: internal snapshots (read; written, the snapshots intact)"

# a chain of depth 10 with different cluster sizes
qemu-img create -q -f qcow2 c0.qcow2 32M
qemu-io -c "write -P 0xa0 0 32M" c0.qcow2 >/dev/null
sizes=(512 4k 64k 1M 2M 8k 64k 512 128k 64k)
for i in $(seq 1 10); do
	qemu-img create -q -f qcow2 -o "cluster_size=${sizes[$((i - 1))]}" -b "c$((i - 1)).qcow2" -F qcow2 "c$i.qcow2"
	qemu-io -c "write -P $i $((i * 2))M 1536k" -c "write -z $((i * 3))M 100k" "c$i.qcow2" >/dev/null
done
check_same c10.qcow2
depth=$("$COWVM" image info --json c10.qcow2 | jq '."chain-depth"')
[ "$depth" = 11 ] || fail "chain depth $depth, want 11"
jq_true 'length == 11' "$COWVM" image info --chain --json c10.qcow2 || fail "info --chain"
echo "ok: chain of depth 10"

# extended L2 overlays made by qemu-io: subcluster writes, zeroes and
# discards over a backing file, read through the chain; cowvm writes more
for cs in 16k 64k 128k; do
	rm -f sb.qcow2 so.qcow2
	qemu-img create -q -f qcow2 sb.qcow2 16M
	qemu-io -c "write -P 0x5a 0 16M" sb.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -o "extended_l2=on,cluster_size=$cs" -b sb.qcow2 -F qcow2 so.qcow2
	qemu-io -c "write -P 1 4k 4k" -c "write -P 2 70k 3k" -c "write -z 200k 8k" \
		-c "write -P 3 1M 300k" -c "discard 1M 64k" -c "write -z -u 2M 128k" \
		-c "write -P 4 5M 512" -c "write -c -P 6 8M 256k" so.qcow2 >/dev/null || fail "qemu-io extl2 $cs"
	check_same so.qcow2
	qemu-img convert -O raw so.qcow2 ref.raw
	random_writes so.qcow2 ref.raw 9 150 "cowvm writes into extl2 $cs overlay" compress
	echo "ok: extended L2 overlay, cluster $cs"
done
