#!/bin/bash
# tests/fuzz/run.sh BUILD SECONDS [TARGET...] — run each fuzz target
# (default fuzz-qcow2) for a bounded time from a seed corpus; each target
# keeps its own corpus, BUILD/fuzz/corpus-TARGET. qcow2 targets: small
# images made by qemu-img, plus the saved regression inputs. fuzz-devstate:
# the records of devices driven into non-default states, written by the
# target itself (COWVM_FUZZ_SEEDS, tests/fuzz/fuzz-devstate.c), plus
# tests/fuzz/regress/devstate-*; fuzz-statefile likewise (statefile-*).
# Crashes land in BUILD/fuzz/crashes/; copy each into tests/fuzz/regress/ (devstate-* for fuzz-devstate,
# statefile-* for fuzz-statefile: the unit test test-devstate-fuzz-regress
# replays those, test-cow-fuzz-regress all, through every qcow2 body).
set -u
B=$1 SECS=${2:-60}
shift 2 2>/dev/null || shift $#
TARGETS=${*:-fuzz-qcow2}
F="$B/fuzz"
mkdir -p "$F/corpus" "$F/crashes"
if command -v qemu-img >/dev/null; then
	i=0
	for o in cluster_size=512 cluster_size=4k,refcount_bits=1 compat=0.10 \
		 cluster_size=1k,compression_type=zstd lazy_refcounts=on \
		 cluster_size=16k,extended_l2=on cluster_size=2k,refcount_bits=64; do
		i=$((i + 1))
		qemu-img create -q -f qcow2 -o "$o" "$F/s$i.qcow2" 256k
		qemu-io -c "write -P 0x33 0 8k" -c "write -z 16k 4k" "$F/s$i.qcow2" >/dev/null 2>&1
		cp "$F/s$i.qcow2" "$F/corpus/seed$i"
	done
	# an internal snapshot (read, checked, and written: shared L2 tables and
	# clusters copied first, cow.h I16)
	cp "$F/s1.qcow2" "$F/snap.qcow2"
	qemu-img snapshot -c s "$F/snap.qcow2" 2>/dev/null &&
		qemu-io -c "write -P 0x44 0 2k" "$F/snap.qcow2" >/dev/null 2>&1 &&
		cp "$F/snap.qcow2" "$F/corpus/seeds"
	# persistent dirty bitmaps (a writer marks them in use, cow/bitmaps.c)
	cp "$F/s1.qcow2" "$F/bm.qcow2"
	qemu-img bitmap --add -g 4096 "$F/bm.qcow2" b0 2>/dev/null &&
		qemu-img bitmap --add --disable "$F/bm.qcow2" b1 2>/dev/null &&
		qemu-io -c "write -P 0x55 4k 2k" "$F/bm.qcow2" >/dev/null 2>&1 &&
		cp "$F/bm.qcow2" "$F/corpus/seedb"
	head -c 64k /dev/urandom > "$F/r.raw"
	qemu-img convert -q -c -O qcow2 -o cluster_size=512 "$F/r.raw" "$F/corpus/seedc" 2>/dev/null
fi
for r in tests/fuzz/regress/*; do
	case "$r" in
	*/devstate-* | */statefile-*) ;;
	*) cp "$r" "$F/corpus/" ;;
	esac
done
for t in $TARGETS; do
	echo "== $t (${SECS}s)"
	mkdir -p "$F/corpus-$t"
	case "$t" in
	fuzz-devstate|fuzz-statefile)
		COWVM_FUZZ_SEEDS="$F/corpus-$t" "$F/$t" || exit 1
		cp tests/fuzz/regress/"${t#fuzz-}"-* "$F/corpus-$t/" 2>/dev/null ;;
	*)
		cp -n "$F/corpus/"* "$F/corpus-$t/" 2>/dev/null ;;
	esac
	"$F/$t" -max_total_time="$SECS" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix="$F/crashes/$t-" "$F/corpus-$t" 2>&1 |
		grep -Ev '^"|^###### ' | tail -n 15   # not the dictionary: the last stats
done
n=$(find "$F/crashes" -type f | wc -l)
if [ "$n" -gt 0 ]; then
	echo "fuzz: $n crashing inputs in $F/crashes (copy them into tests/fuzz/regress/)"
	exit 1
fi
echo "fuzz: no crashes in ${SECS}s"
