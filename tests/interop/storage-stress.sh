#!/bin/bash
# Randomized differential stress of storage/ (the block layer virtio-blk
# uses) against a byte model of the disk (tests/helpers/stgstress): random
# reads, writes, write-zeroes, discards and flushes, many in flight, split and
# oddly aligned iovecs; every read is compared with the model, then the whole
# disk through storage/ and, after closing, through cow/. Afterwards
# `qemu-img check` finds no errors, `qemu-img compare` agrees with the model
# and backing files are unchanged. Image variants (kind-cluster-extl2[-comp]):
#   fresh / cfresh   empty image made by qemu-img / cowvm image create
#   overlay          over a qcow2 base holding data (-comp: compressed base)
#   rawbase          over a raw base;  v2overlay: compat=0.10 overlay
#   comp / ccomp     the image itself compressed by qemu-img / by
#                    cowvm image convert -c --compression zstd
#   shrunk           over a base shrunk with data left past its end
#   chain            3 layers, the middle one written by stgstress first
#   qio / qiov       qemu-io left zero-alloc, zero, discarded, partial and
#                    compressed clusters (qiov: over a backing file)
#   raw              a raw file
# Each variant runs with one of 12 option sets (engine: io_uring / threads,
# cache=none, submission from callbacks, byte-granular iovecs and requests,
# reopen, event-loop waiting, deep queues), rotating with the seed.
# Default: seed 1, STRESS_OPS=3000 ops a run (about 2.2 minutes on 2 vCPUs). Longer runs by
# hand (run.sh would time them out), e.g.:
#   STRESS_SEEDS="1 2 3" STRESS_OPS=5000 COWVM_SRC=$PWD \
#       bash tests/interop/storage-stress.sh
# STRESS_VARIANTS="qio-65536-on raw-65536-off" runs only those (same options).
# A failure prints seed, variant, options and the stress log's tail.
# timeout: 420
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
command -v qemu-io >/dev/null 2>&1 || skip "qemu-io not installed (Debian qemu-utils)"
command -v python3 >/dev/null 2>&1 || skip "python3 not installed"
STG="$(dirname "$COWIO")/stgstress"
[ -x "$STG" ] || skip "test helper $STG not built"
QIOPREP="$COWVM_SRC/tests/lib/qio-prep.py"
cow_tmpdir

SEEDS=${STRESS_SEEDS:-1}
OPS=${STRESS_OPS:-3000}
VARIANTS="fresh-4096-off fresh-65536-off fresh-65536-on fresh-2097152-off fresh-2097152-on
cfresh-65536-on cfresh-16384-on overlay-4096-off overlay-65536-off-comp overlay-65536-on-comp
overlay-2097152-on-comp overlay-16384-on rawbase-65536-on rawbase-4096-off comp-65536-off
comp-65536-on comp-4096-off ccomp-65536-off v2overlay-65536-off shrunk-65536-off
shrunk-16384-on-comp chain-65536-on chain-4096-off qio-65536-off qio-65536-on qiov-65536-on
qiov-4096-off raw-65536-off"
OPTSETS=("" "--threads" "--direct" "--direct --threads" "--cbsubmit --byteiov"
	"--direct --byteiov --reopen 700" "--threads --direct --cbsubmit --depth 64"
	"--evloop --direct" "--bytealign --threads" "--reopen 400 --mixreopen --maxvec 300"
	"--depth 128 --evloop --cbsubmit" "--direct --bytealign --byteiov")
# seconds for one stgstress run before it dumps its requests in flight
TMO=$((60 + OPS / 25))

have_direct=1
dd if=/dev/zero of=probe bs=4096 count=1 oflag=direct 2>/dev/null || have_direct=0
rm -f probe
[ "$have_direct" = 1 ] || echo "note: no O_DIRECT in $T: --direct and --mixreopen are left out"

BSIZE=$((48 * 1024 * 1024 + 3 * 512))   # base: not a multiple of any cluster size
# stress_one VARIANT SEED [stgstress options]: build the images in $T/w, run
# stgstress on the top one, check the result; fail with what to rerun.
stress_one() {
	local v=$1 seed=$2 kind cs ext comp tsize extopt copt init="" b bf o big why l rc
	shift 2
	local w="$T/w" opts="$*" qargs=() args=() xopt=()
	IFS=- read -r kind cs ext comp <<<"$v"
	rm -rf "$w"
	mkdir "$w" || fail "mkdir $w"
	tsize=$((64 * 1024 * 1024 + 5 * 512))   # top: larger than the base, not cluster aligned
	[ "$cs" = 2097152 ] && tsize=$((96 * 1024 * 1024 + 5 * 512))
	extopt=""
	[ "$ext" = on ] && extopt=",extended_l2=on"
	copt=""
	[ "${comp:-}" = comp ] && copt="-c"
	sfail() { fail "seed $seed variant $v options '$opts': $*"; }
	case $kind in
	raw)	truncate -s "$tsize" "$w/top.raw" || sfail create
		ln -s top.raw "$w/top.qcow2" || sfail create ;;
	fresh)	qemu-img create -q -f qcow2 -o "cluster_size=$cs$extopt" "$w/top.qcow2" "$tsize" ||
			sfail create ;;
	cfresh)	[ "$ext" = on ] && xopt=(--extended-l2)
		"$COWVM" image create "$w/top.qcow2" "$tsize" --cluster-size "$cs" "${xopt[@]}" >/dev/null ||
			sfail "cowvm image create" ;;
	overlay|rawbase|v2overlay)
		"$STG" genbase "$w/base.raw" "$BSIZE" "$seed" || sfail genbase
		init="$w/base.raw"
		if [ "$kind" = rawbase ]; then
			b="$w/base.raw" bf=raw
		else
			# shellcheck disable=SC2086
			qemu-img convert -q -f raw -O qcow2 $copt -o "cluster_size=$cs" "$w/base.raw" \
				"$w/base.qcow2" || sfail convert
			b="$w/base.qcow2" bf=qcow2
		fi
		o="cluster_size=$cs$extopt"
		[ "$kind" = v2overlay ] && o="compat=0.10,cluster_size=$cs"
		qemu-img create -q -f qcow2 -b "$b" -F "$bf" -o "$o" "$w/top.qcow2" "$tsize" ||
			sfail create
		sha1sum "$b" >"$w/base.sha1" ;;
	shrunk)	# base whose last cluster holds data past its (shrunk) virtual size
		big=$((BSIZE + 3 * cs))
		"$STG" genbase "$w/big.raw" "$big" "$seed" || sfail genbase
		dd if=/dev/urandom of="$w/big.raw" bs=512 seek=$((BSIZE / 512 - 8)) \
			count=$(((big - BSIZE) / 512 + 8)) conv=notrunc status=none || sfail dd
		# shellcheck disable=SC2086
		qemu-img convert -q -f raw -O qcow2 $copt -o "cluster_size=$cs" "$w/big.raw" \
			"$w/base.qcow2" || sfail convert
		qemu-img resize -q --shrink "$w/base.qcow2" "$BSIZE" || sfail shrink
		mv "$w/big.raw" "$w/base.raw" || sfail mv
		truncate -s "$BSIZE" "$w/base.raw" || sfail truncate
		init="$w/base.raw"
		qemu-img create -q -f qcow2 -b "$w/base.qcow2" -F qcow2 -o "cluster_size=$cs$extopt" \
			"$w/top.qcow2" "$tsize" || sfail create
		sha1sum "$w/base.qcow2" >"$w/base.sha1" ;;
	chain)	# base (compressed) <- mid (written by stgstress) <- top
		"$STG" genbase "$w/base.raw" "$BSIZE" "$seed" || sfail genbase
		qemu-img convert -q -f raw -O qcow2 -c -o cluster_size=65536 "$w/base.raw" \
			"$w/base.qcow2" || sfail convert
		qemu-img create -q -f qcow2 -b "$w/base.qcow2" -F qcow2 -o "cluster_size=$cs" \
			"$w/mid.qcow2" $((56 * 1024 * 1024)) || sfail create
		timeout -k 5 $((TMO + 15)) "$STG" run "$w/mid.qcow2" --seed $((seed + 1000)) \
			--ops "$OPS" --timeout "$TMO" --init "$w/base.raw" --out "$w/mid.raw" 2>"$w/mid.err"
		rc=$?
		if [ "$rc" != 0 ]; then
			tail -n 20 "$w/mid.err"
			sfail "stgstress on the middle layer (seed $((seed + 1000)), no options) exited $rc"
		fi
		rm -f "$w/base.raw"
		init="$w/mid.raw"
		qemu-img create -q -f qcow2 -b "$w/mid.qcow2" -F qcow2 -o "cluster_size=$cs$extopt" \
			"$w/top.qcow2" "$tsize" || sfail create
		sha1sum "$w/mid.qcow2" "$w/base.qcow2" >"$w/base.sha1" ;;
	qio|qiov)
		if [ "$kind" = qiov ]; then
			"$STG" genbase "$w/base.raw" "$BSIZE" "$seed" || sfail genbase
			qemu-img convert -q -f raw -O qcow2 -c -o cluster_size=65536 "$w/base.raw" \
				"$w/base.qcow2" || sfail convert
			rm -f "$w/base.raw"
			qemu-img create -q -f qcow2 -b "$w/base.qcow2" -F qcow2 \
				-o "cluster_size=$cs$extopt" "$w/top.qcow2" "$tsize" || sfail create
			sha1sum "$w/base.qcow2" >"$w/base.sha1"
		else
			qemu-img create -q -f qcow2 -o "cluster_size=$cs$extopt" "$w/top.qcow2" \
				"$tsize" || sfail create
		fi
		while read -r l; do qargs+=(-c "$l"); done < <("$QIOPREP" "$tsize" "$cs" "$seed")
		[ ${#qargs[@]} -gt 0 ] || sfail "qio-prep.py printed nothing"
		# qemu-io's status is not checked: QEMU refuses a compressed write
		# over an allocated cluster (EIO), which some commands are
		qemu-io -f qcow2 "${qargs[@]}" "$w/top.qcow2" >"$w/qio.out" 2>&1
		qemu-img check -q "$w/top.qcow2" || sfail "qemu-io left a bad image"
		qemu-img convert -q -O raw "$w/top.qcow2" "$w/init.raw" || sfail "convert to raw"
		init="$w/init.raw" ;;
	ccomp)	"$STG" genbase "$w/base.raw" "$BSIZE" "$seed" || sfail genbase
		init="$w/base.raw"
		"$COWVM" image convert "$w/base.raw" "$w/top.qcow2" -f raw -O qcow2 -c \
			--compression zstd --cluster-size "$cs" >/dev/null || sfail "cowvm image convert" ;;
	comp)	"$STG" genbase "$w/base.raw" "$BSIZE" "$seed" || sfail genbase
		init="$w/base.raw"
		qemu-img convert -q -f raw -O qcow2 -c -o "cluster_size=$cs$extopt" "$w/base.raw" \
			"$w/top.qcow2" || sfail convert ;;
	*)	sfail "unknown variant" ;;
	esac

	args=(--seed "$seed" --ops "$OPS" --timeout "$TMO" --out "$w/model.raw" --log "$w/ops.log")
	[ -n "$init" ] && args+=(--init "$init")
	timeout -k 5 $((TMO + 15)) "$STG" run "$w/top.qcow2" "${args[@]}" "$@" 2>"$w/stress.err"
	rc=$?
	if [ "$rc" != 0 ]; then
		echo "--- ops.log (tail):"
		tail -n 8 "$w/ops.log" 2>/dev/null
		echo "--- stgstress stderr (tail):"
		tail -n 40 "$w/stress.err"
		echo "--- first error:"   # again, last: run.sh shows only the tail
		grep -m 2 -E '^stgstress: ' "$w/stress.err"
		case $rc in
		2) why="data mismatch" ;; 3) why="request error" ;; 4) why="hang or stall" ;;
		124|137) why="killed by timeout" ;; *) why="setup error" ;;
		esac
		sfail "stgstress exited $rc ($why); rerun: STRESS_SEEDS=$seed STRESS_OPS=$OPS" \
			"STRESS_VARIANTS=$v COWVM_SRC=\$PWD bash tests/interop/storage-stress.sh"
	fi
	if [ "$kind" = raw ]; then
		cmp "$w/model.raw" "$w/top.raw" || sfail "raw file differs from the model"
	else
		qemu-img check "$w/top.qcow2" >"$w/check.out" 2>&1
		rc=$?
		grep -q "No errors were found" "$w/check.out" ||
			{ cat "$w/check.out"; sfail "qemu-img check exited $rc"; }
		qemu-img compare -q -f raw -F qcow2 "$w/model.raw" "$w/top.qcow2" ||
			sfail "qemu-img compare: the image differs from the model"
	fi
	if [ -f "$w/base.sha1" ]; then
		sha1sum -c --quiet "$w/base.sha1" || sfail "a backing file changed"
	fi
	echo "ok: seed $seed $v ${opts:-(default options)}: $(tail -n 1 "$w/stress.err" | sed 's/^stgstress: //')"
	rm -rf "$w"
}

t0=$SECONDS
echo "seeds: $SEEDS, $OPS ops a run"
runs=0
for seed in $SEEDS; do
	i=0
	for v in $VARIANTS; do
		o=${OPTSETS[$(((seed * 7 + i) % ${#OPTSETS[@]}))]}
		i=$((i + 1))
		case " ${STRESS_VARIANTS:-$v} " in *" $v "*) ;; *) continue ;; esac
		if [ "$have_direct" = 0 ]; then
			o=$(echo " $o " | sed 's/ --direct / /g; s/ --mixreopen / /g; s/^ *//; s/ *$//')
		fi
		# shellcheck disable=SC2086
		stress_one "$v" "$seed" $o
		runs=$((runs + 1))
	done
done
[ "$runs" -gt 0 ] || fail "no variant matches STRESS_VARIANTS=${STRESS_VARIANTS:-}"
echo "ok: $runs runs in $((SECONDS - t0)) s"
