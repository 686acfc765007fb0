#!/bin/bash
# Images written by cowvm pass `qemu-img check` and `qemu-img compare`:
# create (cluster sizes 512 B..2 MiB, zlib/zstd, v2/v3, refcount widths,
# extended L2 entries) ->
# random writes, write-zeroes, discards and compressed writes through cow/
# mirrored into a raw reference -> qemu-img check (no errors, no leaks) and
# qemu-img compare against the reference. Also overlays over qemu-made bases.
# Written in order, 64 KiB at a time, an image of 512 B..4 KiB clusters is
# as long as qemu-img bench leaves the same writes (new refcount blocks go
# right after a run crossing into their range, not before it, leaving the
# clusters below the boundary unused: 5,571,584 bytes against 4,278,784 for
# 4 MiB of 512 B clusters before). convert -c: as small as qemu-img's
# convert -c, and the same file whatever the number of threads.
# timeout: 300
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
cow_tmpdir

n=0
for opts in "--cluster-size 512" "--cluster-size 4K" "--cluster-size 64K" \
	    "--cluster-size 2M" "--compression zstd" "--compression zstd --cluster-size 16K" \
	    "--compat 0.10" "--refcount-bits 1" "--refcount-bits 64 --cluster-size 4K" \
	    "--lazy-refcounts" "--extended-l2" "--extended-l2 --cluster-size 16K" \
	    "--extended-l2 --cluster-size 2M --compression zstd" \
	    "--extended-l2 --cluster-size 128K --refcount-bits 64"; do
	n=$((n + 1))
	rm -f img.qcow2 ref.raw
	# shellcheck disable=SC2086
	"$COWVM" image create img.qcow2 48M $opts || fail "create $opts"
	truncate -s 48M ref.raw
	comp=compress
	case "$opts" in *refcount-bits\ 1*) comp="" ;; esac
	"$COWIO" random img.qcow2 ref.raw "$n" 250 $comp || fail "random writes ($opts)"
	qcheck img.qcow2
	qcompare ref.raw img.qcow2
	"$COWIO" cmp img.qcow2 ref.raw || fail "cowvm reads back differently ($opts)"
	echo "ok: $opts"
done

# sequential 64 KiB writes: as compact as qemu-img's
for cs in 512 1024 4096; do
	rm -f seq.qcow2 seqq.qcow2
	"$COWVM" image create seq.qcow2 8M --cluster-size "$cs" >/dev/null || fail "create seq $cs"
	"$COWVM" image bench -w -c 128 -d 1 -s 65536 -S 65536 seq.qcow2 >/dev/null || fail "bench -w $cs"
	qemu-img create -q -f qcow2 -o cluster_size="$cs" seqq.qcow2 8M
	qemu-img bench -w -c 128 -d 1 -s 65536 -S 65536 -f qcow2 seqq.qcow2 >/dev/null || fail "qemu-img bench $cs"
	qcheck seq.qcow2
	a=$(stat -c %s seq.qcow2) b=$(stat -c %s seqq.qcow2)
	[ "$a" -le "$b" ] || fail "in-order writes, cluster $cs: file $a bytes, qemu-img's $b"
	echo "ok: in-order writes, cluster $cs: $a bytes (qemu-img $b)"
done

# overlay over a qemu-img base (qcow2 and raw backing)
head -c 32M /dev/urandom > base.raw
qemu-img convert -q -f raw -O qcow2 base.raw base.qcow2
for bfmt in qcow2 raw; do
	for cs in 512 64K "16K --extended-l2" "64K --extended-l2" "128K --extended-l2"; do
		rm -f top.qcow2
		# shellcheck disable=SC2086
		"$COWVM" image create top.qcow2 -b "base.$bfmt" -F "$bfmt" --cluster-size $cs || fail create
		cp base.raw ref.raw
		sum=$(md5sum "base.$bfmt")
		"$COWIO" random top.qcow2 ref.raw 42 250 compress || fail "overlay writes"
		[ "$(md5sum "base.$bfmt")" = "$sum" ] || fail "backing file was modified"
		qcheck top.qcow2
		qcompare ref.raw top.qcow2
		echo "ok: overlay on $bfmt, cluster $cs"
	done
done

# convert flattens the chain; -c compresses (zlib and zstd)
for c in "" "-c" "-c --compression zstd"; do
	rm -f flat.qcow2
	# shellcheck disable=SC2086
	"$COWVM" image convert $c top.qcow2 flat.qcow2 || fail "convert $c"
	qcheck flat.qcow2
	qcompare ref.raw flat.qcow2
	jq_true '."backing-filename" == null' qemu-img info --output=json flat.qcow2 ||
		fail "convert left a backing file"
done
"$COWVM" image convert -O raw top.qcow2 flat.raw || fail "convert -O raw"
cmp ref.raw flat.raw || fail "convert -O raw content"
echo "ok: convert"

# convert -c packs compressed clusters across host cluster boundaries as
# qemu-img does: a source of text, random and zero runs (lengths not
# multiples of a cluster) gives a file as small as qemu-img's (within one
# cluster), whatever the number of compressing threads (-m: the same bytes)
rm -f mix.raw
for i in $(seq 1 24); do
	cat /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0
	head -c $((i * 5000)) /dev/urandom
	head -c $((i * 20000)) /dev/zero
done > mix.raw
for c in zlib zstd; do
	for cs in 512 4096 65536 2M; do
		rm -f m1.qcow2 m3.qcow2 mq.qcow2
		"$COWVM" image convert -c --compression $c --cluster-size $cs -m 1 -f raw mix.raw m1.qcow2 ||
			fail "convert -c $c $cs -m 1"
		"$COWVM" image convert -c --compression $c --cluster-size $cs -m 3 -f raw mix.raw m3.qcow2 ||
			fail "convert -c $c $cs -m 3"
		cmp -s m1.qcow2 m3.qcow2 || fail "convert -c $c $cs: -m 1 and -m 3 wrote different files"
		qcheck m1.qcow2
		qcompare mix.raw m1.qcow2
		qemu-img convert -q -c -f raw -O qcow2 -o compression_type=$c,cluster_size=$cs mix.raw mq.qcow2
		a=$(stat -c %s m1.qcow2) b=$(stat -c %s mq.qcow2)
		bs=$(numfmt --from=iec "$cs")
		[ "$a" -le $((b + bs)) ] || fail "convert -c $c, cluster $cs: $a bytes, qemu-img's $b"
		echo "ok: convert -c $c, cluster $cs: $a bytes (qemu-img $b), -m 1 and -m 3 the same"
	done
done
