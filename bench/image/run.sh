#!/bin/bash
# bench/image/run.sh [BUILD] — `cowvm image bench` against `qemu-img bench` on
# the same files, alternating runs (median of $RUNS each): 4 KiB "random" read
# and write (a 7 MiB + 4 KiB stride modulo the disk, which qemu-img bench
# supports, so both tools issue the same offsets), 64 KiB sequential read and
# write; on a fully allocated 1 GiB image, on a fresh overlay over a 1 GiB
# base made by qemu-img (standard L2 entries), on a fresh overlay made by
# `cowvm image create` (extended L2 entries: cowvm's default for overlays),
# on a depth-16 chain, on a preallocated raw file, and on a new (sparse) raw
# file; SCENARIOS may add overlay-pre: a fresh overlay made by `cowvm image
# create --preallocation full` (extended L2 entries: it reads the base until
# written; its data clusters written with zeros at creation, as the
# preallocated raw file's are), the like-for-like peer of the preallocated
# raw file. Overlays and new raw files are recreated before every write run.
# Prints IOPS, MB/s, the ratio cowvm/qemu-img (of the medians), how many of
# the alternating pairs cowvm won, and each overlay against raw
# (cowvm on both).
#
# Cache modes ($MODES, default "writeback none"):
#   writeback  page cache: qemu-img bench -t writeback; cowvm's synchronous
#              cow/ path (the fastest with the page cache)
#   none       O_DIRECT: qemu-img bench -t none -i io_uring; cowvm -t none
#              -i io_uring (the storage/ stack virtio-blk uses, DEPTH in flight)
#              with its default request buffers (huge pages: one segment per
#              request) and, as a third alternating run (PAGES=0 drops it),
#              with --buffers pages (4 KiB pages, as qemu-img bench's): the
#              "pages" column is that run's ratio, like for like
#   threads    (not in the default) O_DIRECT on worker threads: qemu-img
#              bench -t none -i threads; cowvm -t none -i threads (storage/'s
#              thread-pool engine, aio=threads) with 4 KiB-page buffers
# Every timed run starts after `sync` and an idle disk, so no run pays for
# the writeback (or discards) of the one before. Not part of `make check`.
set -u
B=${1:-build}
COWVM=$(realpath "$B/cowvm")
HERE=$(dirname "$(realpath "$0")")
RUNS=${RUNS:-3}
MODES=${MODES:-writeback none}
PAGES=${PAGES:-1}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/cowbench.XXXXXX")
trap 'rm -rf "$W"' EXIT
cd "$W" || exit 1
. "$HERE/../lib.sh"   # settle, hot_pages
command -v qemu-img >/dev/null || { echo "qemu-img not installed"; exit 77; }
command -v python3 >/dev/null || { echo "python3 not installed (bench/image/run.sh uses it to free memory before write runs)"; exit 77; }

echo "setting up images in $W ..."
qemu-img create -q -f qcow2 -o preallocation=full full.qcow2 1G
qemu-img create -q -f raw -o preallocation=full base.raw 1G
qemu-img create -q -f qcow2 -o preallocation=full base.qcow2 1G
if [[ " ${SCENARIOS:-chain16} " == *" chain16 "* ]]; then
	qemu-img create -q -f qcow2 c0.qcow2 1G
	qemu-io -c "write -P 1 0 1G" c0.qcow2 >/dev/null
	for i in $(seq 1 15); do
		qemu-img create -q -f qcow2 -b "c$((i - 1)).qcow2" -F qcow2 "c$i.qcow2"
		# each layer owns a stripe: 4 MiB in every 64 MiB
		cmds=()
		for s in $(seq 0 15); do cmds+=(-c "write -P $((i + 1)) $((s * 64 + i * 4))M 4M"); done
		qemu-io "${cmds[@]}" "c$i.qcow2" >/dev/null
	done
fi

STRIDE=$((7 * 1048576 + 4096))
# name: args (both tools write the same non-zero byte: thin storage may
# treat writes of zeros specially)
declare -A T=(
	[rr4k]="-c 100000 -d 64 -s 4096 -S $STRIDE"
	[rw4k]="-w --pattern=165 -c 30000 -d 64 -s 4096 -S $STRIDE"
	[sr64k]="-c 16384 -d 64 -s 65536"
	[sw64k]="-w --pattern=165 -c 16384 -d 64 -s 65536"
	[sr64k-used]="-c 16384 -d 64 -s 65536"
)
# reads of a fresh overlay (the issue's scenario), writes, and (overlays
# only) sr64k-used: 64 KiB sequential reads of the overlay the last rw4k run
# left, 30,000 scattered 4 KiB pieces over the base, as a clone gets them
ORDER=${ORDER:-rr4k sr64k rw4k sr64k-used sw64k}
SCENARIOS=${SCENARIOS:-full overlay overlay-xl chain16 raw raw-new}

secs() { sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Overlays for write runs are new files (ov-N.qcow2); the ones used are
# deleted after each test's runs, then the disk is left to settle, so no
# timed run overlaps the discards of a deleted file. Reads use a fresh
# overlay that no write touches (.fresh.SCENARIO); *-used tests the overlay
# the last write run left (.cur.SCENARIO).
NOV=0
prep() {   # SCENARIO TEST -> sets F: the file to use
	case $1 in
	full) F=full.qcow2 ;;
	raw) F=base.raw ;;
	chain16) F=c15.qcow2 ;;
	overlay|overlay-xl|overlay-pre|raw-new)
		local cur=".cur.$1"
		[[ $2 == *-used ]] || [[ $2 == *w* ]] || cur=".fresh.$1"
		if [[ $2 == *w* ]] || [ ! -f "$(cat "$cur" 2>/dev/null)" ]; then
			NOV=$((NOV + 1))
			F="ov-$NOV.qcow2"
			if [ "$1" = overlay ]; then
				qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$F"
			elif [ "$1" = overlay-pre ]; then
				"$COWVM" image create "$F" -b base.qcow2 -F qcow2 --preallocation full
				sync
			elif [ "$1" = raw-new ]; then
				# a new sparse raw file: its writes allocate blocks
				# (and page cache) like those of a fresh overlay
				truncate -s 1G "$F"
			else
				"$COWVM" image create "$F" -b base.qcow2 -F qcow2
			fi
			echo "$F" > "$cur"
		else
			F=$(cat "$cur")
		fi ;;
	esac
}

# Page-cache state, the same for every file whatever wrote or read it
# before: a read test's files (the image and its backing layers) are
# evicted and read back once with cat before the test's runs, so all are
# cached in the same folio sizes (a file cached in 4 KiB pages costs ~30%
# more per 4 KiB read in the kernel's page-cache lookup than one in 2 MiB
# folios, as perf shows); before every write run into a preallocated file
# (full, raw) the file is evicted and not read back, so each run's writes
# need new page cache as those into a new overlay or raw file do (and a
# 4 KiB write does not dirty a whole 2 MiB folio a cat left), and no run
# finds the pages the other tool's run left.
recache() {   # SCENARIO TEST
	local files
	prep "$1" "$2"
	case $1 in
	overlay|overlay-xl|overlay-pre) files="$F base.qcow2" ;;
	chain16) files=$(ls c*.qcow2) ;;
	*) files=$F ;;
	esac
	sync
	for f in $files; do dd if="$f" iflag=nocache count=0 status=none; done
	# shellcheck disable=SC2086
	[[ $2 == *w* ]] || cat $files >/dev/null
}

# drop the overlays of finished write runs (not the current read overlays)
cleanup_overlays() {
	local keep
	keep=" $(cat .cur.* .fresh.* 2>/dev/null | tr '\n' ' ') "
	for f in ov-*.qcow2; do
		[ -e "$f" ] || continue
		[[ $keep == *" $f "* ]] || rm -f "$f"
	done
	sync
	sleep 2
	settle
}

run_one() {   # TOOL MODE SCENARIO TEST (TOOL: qemu, cowvm or cowvm-pages)
	local f fmt
	prep "$3" "$4"
	f=$F
	fmt=qcow2
	case $3 in raw|raw-new) fmt=raw ;; esac
	case $4/$3 in *w*/full|*w*/raw) recache "$3" "$4" ;; esac
	# the preallocated overlay was written (zeros) at creation: evicted
	# like the preallocated files, so its writes need new page cache too
	case $4/$3 in *w*/overlay-pre) sync; dd if="$f" iflag=nocache count=0 status=none ;; esac
	settle
	case $2/$4 in writeback/*w*) hot_pages ;; esac
	# shellcheck disable=SC2086
	if [ "$1" = qemu ]; then
		case $2 in
		writeback) qemu-img bench -f $fmt -t writeback ${T[$4]} "$f" 2>&1 | secs ;;
		none) qemu-img bench -f $fmt -t none -i io_uring ${T[$4]} "$f" 2>&1 | secs ;;
		threads) qemu-img bench -f $fmt -t none -i threads ${T[$4]} "$f" 2>&1 | secs ;;
		esac
	else
		case $2 in
		writeback) "$COWVM" image bench -f $fmt ${T[$4]} "$f" 2>&1 | secs ;;
		none)
			local b=huge
			[ "$1" = cowvm-pages ] && b=pages
			"$COWVM" image bench -f $fmt -t none -i io_uring --buffers $b ${T[$4]} "$f" 2>&1 | secs ;;
		threads)
			"$COWVM" image bench -f $fmt -t none -i threads --buffers pages ${T[$4]} "$f" 2>&1 | secs ;;
		esac
	fi
}

for mode in $MODES; do
	declare -A RES=()
	echo
	echo "== cache mode: $mode =="
	pages=0
	[ "$mode" = none ] && [ "$PAGES" = 1 ] && pages=1
	printf '%-10s %-10s %12s %12s %10s %10s %7s %5s' scenario test qemu-IOPS cowvm-IOPS qemu-MB/s cowvm-MB/s ratio won
	[ $pages = 1 ] && printf ' %7s' pages
	echo
	for sc in $SCENARIOS; do
		for t in $ORDER; do
			case $sc in chain16) case $t in rw4k|sw64k) continue ;; esac ;; esac
			case $t in *-used) case $sc in overlay|overlay-xl) ;; *) continue ;; esac ;; esac
			qs=() cs=() ps=()
			[[ $t == *w* ]] || recache "$sc" "$t"
			for ((r = 0; r < RUNS; r++)); do
				run_one qemu "$mode" "$sc" "$t" > .t
				qs+=("$(cat .t)")
				run_one cowvm "$mode" "$sc" "$t" > .t
				cs+=("$(cat .t)")
				if [ $pages = 1 ]; then
					run_one cowvm-pages "$mode" "$sc" "$t" > .t
					ps+=("$(cat .t)")
				fi
			done
			cleanup_overlays
			q=$(printf '%s\n' "${qs[@]}" | median)
			c=$(printf '%s\n' "${cs[@]}" | median)
			p=""
			[ $pages = 1 ] && p=$(printf '%s\n' "${ps[@]}" | median)
			# pairs (run r of each tool) in which cowvm was faster
			won=0
			for ((r = 0; r < RUNS; r++)); do
				awk -v q="${qs[r]}" -v c="${cs[r]}" 'BEGIN { exit !(q != "" && c != "" && c < q) }' &&
					won=$((won + 1))
			done
			n=$(echo "${T[$t]}" | sed 's/.*-c \([0-9]*\).*/\1/')
			bs=$(echo "${T[$t]}" | sed 's/.*-s \([0-9]*\).*/\1/')
			RES[$sc.$t]=$c
			RES[q.$sc.$t]=$q
			awk -v sc="$sc" -v t="$t" -v q="$q" -v c="$c" -v p="$p" -v pages=$pages \
			    -v n="$n" -v bs="$bs" -v won="$won/$RUNS" 'BEGIN {
				if (q == "" || c == "" || (pages && p == "")) { printf "%-10s %-10s   (a run failed)\n", sc, t; exit }
				printf "%-10s %-10s %12.0f %12.0f %10.1f %10.1f %6.2fx %5s", sc, t, n / q, n / c,
					n * bs / q / 1e6, n * bs / c / 1e6, q / c, won
				if (pages)
					printf "  %6.2fx", q / p
				printf "\n" }'
		done
	done
	echo
	if [[ " $SCENARIOS " == *" overlay-pre "* ]]; then
		echo
		echo "$mode: preallocated overlay (cowvm-made, --preallocation full) vs preallocated raw, cowvm [qemu-img]:"
		for t in $ORDER; do
			[[ $t == *-used ]] && continue
			awk -v t="$t" -v x="${RES[overlay-pre.$t]:-}" -v r="${RES[raw.$t]:-}" \
			    -v qx="${RES[q.overlay-pre.$t]:-}" -v qr="${RES[q.raw.$t]:-}" '
			function r2(a, b) { return (a == "" || b == "" || b == 0) ? "    -" : sprintf("%5.2fx", a / b) }
			BEGIN { printf "  %-10s %s [%s]\n", t, r2(r, x), r2(qr, qx) }'
		done
	fi
	echo
	echo "$mode: overlay vs raw, cowvm (target >= 0.9x) [qemu-img on the same files]:"
	echo "  (raw = preallocated raw file; new raw = a new sparse raw file, whose writes"
	echo "   allocate blocks and page cache as those into a fresh overlay do)"
	for t in $ORDER; do
		# the raw file has one state: sr64k-used compares with sr64k
		awk -v t="$t" -v o="${RES[overlay.$t]:-}" -v x="${RES[overlay-xl.$t]:-}" \
		    -v r="${RES[raw.${t%-used}]:-}" -v n="${RES[raw-new.$t]:-}" \
		    -v qo="${RES[q.overlay.$t]:-}" -v qx="${RES[q.overlay-xl.$t]:-}" \
		    -v qr="${RES[q.raw.${t%-used}]:-}" -v qn="${RES[q.raw-new.$t]:-}" '
		function r2(a, b) { return (a == "" || b == "" || b == 0) ? "    -" : sprintf("%5.2fx", a / b) }
		BEGIN {
			printf "  %-10s vs raw:     qemu-img-made overlay %s [%s]   cowvm-made overlay (extended L2) %s [%s]\n",
				t, r2(r, o), r2(qr, qo), r2(r, x), r2(qr, qx)
			# reads of a new raw file are reads of holes: no peer for reads
			if (t ~ /^.w/)
				printf "  %-10s vs new raw: qemu-img-made overlay %s [%s]   cowvm-made overlay (extended L2) %s [%s]\n",
					t, r2(n, o), r2(qn, qo), r2(n, x), r2(qn, qx) }'
	done
	unset RES
done
