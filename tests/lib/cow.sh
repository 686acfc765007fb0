# tests/lib/cow.sh — shared helpers for the qcow2 interop tests (sourced).
set -u
: "${COWVM:=$PWD/build/cowvm}"
: "${COWVM_BUILD:=build}"
COWIO="${COWIO:-$(dirname "$COWVM")/tests/helpers/cowio}"

skip() { echo "$*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

need_qemu_img() {
	command -v qemu-img >/dev/null 2>&1 || skip "qemu-img not installed (Debian qemu-utils)"
	[ -x "$COWIO" ] || skip "test helper $COWIO not built"
}

# need_powercut DEFAULT_CUTS: the power-cut recorder (iolog.so, LD_PRELOAD)
# and replayer (powercut) in SHIM and PC, or skip; SEED (POWERCUT_SEED or
# random, printed) and CUTS (POWERCUT_CUTS or DEFAULT_CUTS); an ASan-built
# program must tolerate the recorder loaded before its runtime
need_powercut() {
	SHIM="$(dirname "$COWIO")/iolog.so"
	PC="$(dirname "$COWIO")/powercut"
	[ -f "$SHIM" ] && [ -x "$PC" ] || skip "power-cut helpers not built"
	export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
	SEED=${POWERCUT_SEED:-$RANDOM}
	echo "POWERCUT_SEED=$SEED"
	CUTS=${POWERCUT_CUTS:-$1}
}

# pc_cut BASE CUT WHAT: replay the writes recorded in io.log over BASE into
# crash.qcow2 up to a power cut (seed SEED*1000+CUT; odd cuts whole, even
# ones tearing the last write at 512 bytes; what was cut in pc.out), then
# qemu-img check must find no corruption (leaks allowed; a failing image is
# kept as test-logs/pc-fail.qcow2). WHAT names the case in a failure.
pc_cut() {
	local base=$1 cut=$2 what=$3 rc
	if ((cut % 2)); then
		"$PC" io.log "$base" crash.qcow2 clog $((SEED * 1000 + cut)) >pc.out
	else
		POWERCUT_TEAR=512 "$PC" io.log "$base" crash.qcow2 clog $((SEED * 1000 + cut)) >pc.out
	fi || fail "$what: powercut"
	qemu-img check -q crash.qcow2 >check.out 2>&1
	rc=$?
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
		head -5 check.out
		cp crash.qcow2 "$COWVM_SRC/$COWVM_BUILD/test-logs/pc-fail.qcow2" 2>/dev/null
		fail "$what, cut $cut ($(cat pc.out)): qemu-img check exited $rc"
	fi
}

cow_tmpdir() {
	T=$(mktemp -d "${TMPDIR:-/tmp}/cowtest.XXXXXX")
	trap 'rm -rf "$T"' EXIT
	cd "$T" || exit 1
}

# qemu-img check must report no corruption (exit 0; 3 = leaks only allowed when $2=leaks)
qcheck() {
	local rc
	qemu-img check -q "$1" >check.out 2>&1
	rc=$?
	if [ "$rc" -eq 0 ]; then return 0; fi
	if [ "$rc" -eq 3 ] && [ "${2:-}" = leaks ]; then return 0; fi
	cat check.out
	fail "qemu-img check $1 exited $rc"
}

# jq_true FILTER CMD...: CMD succeeds and prints JSON for which FILTER is
# true (jq -e alone passes on empty input, e.g. when CMD failed)
jq_true() {
	local filter=$1 out
	shift
	out=$("$@") || return 1
	[ -n "$out" ] || return 1
	printf '%s' "$out" | jq -e "$filter" >/dev/null
}

qcompare() {   # REF IMG
	qemu-img compare -q "$1" "$2" || fail "qemu-img compare $1 $2: content differs"
}

# random_writes IMG REF SEED COUNT WHAT [compress]: COUNT random writes,
# write-zeroes and discards (and compressed writes) through cow/ into IMG
# (cowio random), mirrored into the raw REF; then qemu-img check finds no
# corruption and IMG reads as REF. WHAT names the case in a failure.
random_writes() {
	"$COWIO" random "$1" "$2" "$3" "$4" ${6:+"$6"} || fail "$5: random writes"
	qcheck "$1"
	qcompare "$2" "$1"
}

# wait_locked FILE: until some process holds byte 101 (QEMU's write
# permission) of FILE, by /proc/locks, at most 10 s; 1 if none did.
# (Probing with qemu-img info would lock too, and could make the starting
# holder fail.)
wait_locked() {
	local i ino
	ino=$(stat -c %i "$1") || return 1
	for ((i = 0; i < 100; i++)); do
		awk -v ino="$ino" '{ n = split($(NF - 2), a, ":") }
			a[n] == ino && $(NF - 1) <= 101 && ($NF == "EOF" || $NF >= 101) { f = 1 }
			END { exit !f }' /proc/locks && return 0
		sleep 0.1
	done
	return 1
}

# write a big-endian integer of $3 bytes at offset $2 of file $1
put_be() {
	local f=$1 off=$2 n=$3 v=$4 i s=""
	for ((i = n - 1; i >= 0; i--)); do
		s+=$(printf '\\x%02x' $(((v >> (8 * i)) & 0xff)))
	done
	printf "$s" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
}
get_be() {   # FILE OFF N
	od -An -tx1 -j "$2" -N "$3" "$1" | tr -d ' \n' | sed 's/^/0x/'
}

# bm_dirty IMG NAME (tests/lib/bitmap.sh)
. "$(dirname "${BASH_SOURCE[0]}")/bitmap.sh"
