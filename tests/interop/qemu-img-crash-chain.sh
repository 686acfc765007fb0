#!/bin/bash
# Crash test for the chain commands: `cowvm image commit` and `cowvm image
# rebase` (safe mode) killed with kill -9 at random points, 30 times each.
# After each kill:
#  - `qemu-img check` reports no corruption in any layer (leaks allowed);
#  - the top image still reads exactly as before the command (qemu-img
#    compare against a raw copy): commit fills the backing before it empties
#    the top, rebase copies what differs before it switches the backing;
#  - running the command again completes it: after commit the backing reads
#    as the top did, after rebase the top names the new backing.
# Every 5th kill `cowvm image check --repair leaks` runs on each layer and
# `qemu-img check` reports no leaks afterwards. The kill delays are drawn
# from the command's own measured run time, and at least 8 of the 30 kills
# of each command must land before it finished.
# timeout: 300
. "$COWVM_SRC/tests/lib/cow.sh"
need_qemu_img
cow_tmpdir

# a 128 MiB base with data everywhere, a top with 1,200 scattered writes of
# 12..60 KiB, and a new backing for rebase that differs from the base in
# half of its clusters
qemu-img create -q -f qcow2 base0.qcow2 128M
qemu-io -c "write -P 0x11 0 128M" base0.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base0.qcow2 -F qcow2 top0.qcow2
cmds=()
for i in $(seq 0 1199); do
	cmds+=(-c "write -P $((i % 200 + 20)) $(((i * 7919 % 2000) * 64))k $(((i % 5 + 1) * 12))k")
done
qemu-io "${cmds[@]}" top0.qcow2 >/dev/null
qemu-img create -q -f qcow2 nb0.qcow2 128M
cmds=()
for s in $(seq 0 2 127); do cmds+=(-c "write -P 0x11 ${s}M 1M"); done
qemu-io "${cmds[@]}" nb0.qcow2 >/dev/null
qemu-img convert -O raw top0.qcow2 expect.raw

fresh() {
	cp base0.qcow2 base.qcow2
	cp nb0.qcow2 nb.qcow2
	cp top0.qcow2 top.qcow2
	qemu-img rebase -q -u -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
}

OPARGS_commit="commit top.qcow2"
OPARGS_rebase="rebase top.qcow2 -b nb.qcow2 -F qcow2"
run_op() {   # commit | rebase
	local a="OPARGS_$1"
	# shellcheck disable=SC2086
	"$COWVM" image ${!a}
}

# the command's run time in ms, the median of three
measure() {
	local a=() t0 t1 i
	for i in 1 2 3; do
		fresh
		t0=$(date +%s%N)
		run_op "$1" >/dev/null || fail "$1 without a kill failed"
		t1=$(date +%s%N)
		a+=($(((t1 - t0) / 1000000)))
	done
	printf '%s\n' "${a[@]}" | sort -n | sed -n 2p
}

crash_op() {   # commit | rebase
	local op=$1 ms mid=0 i pid rc d a
	ms=$(measure "$op")
	[ "$ms" -ge 5 ] || ms=5
	for ((i = 1; i <= 30; i++)); do
		fresh
		d=$((RANDOM % (ms * 9 / 10) + 1))
		a="OPARGS_$op"
		# a simple command in the background: $! is cowvm itself
		# shellcheck disable=SC2086
		"$COWVM" image ${!a} >op.out 2>&1 &
		pid=$!
		sleep "$(printf '0.%03d' "$d")"
		kill -9 "$pid" 2>/dev/null
		wait "$pid"
		rc=$?
		case $rc in
		137) mid=$((mid + 1)) ;;
		0) ;;
		*) cat op.out; fail "$op ended with exit $rc (kill $i)" ;;
		esac
		for f in base.qcow2 top.qcow2 nb.qcow2; do qcheck "$f" leaks; done
		qemu-img compare -q top.qcow2 expect.raw ||
			fail "$op killed after ${d} ms: the top image no longer reads as before"
		if ((i % 5 == 0)); then
			for f in base.qcow2 top.qcow2 nb.qcow2; do
				"$COWVM" image check --repair leaks "$f" >repair.out ||
					{ cat repair.out; fail "repair leaks of $f after $op"; }
				qcheck "$f"
			done
		fi
		# run it again: it completes, and the result is right
		run_op "$op" >op.out 2>&1 || { cat op.out; fail "$op after a kill ($d ms) failed"; }
		qemu-img compare -q top.qcow2 expect.raw || fail "$op rerun: top changed"
		case $op in
		commit) qemu-img compare -q base.qcow2 expect.raw ||
				fail "commit rerun after a kill at ${d} ms: the base does not read as the top" ;;
		rebase) [ "$(qemu-img info --output=json top.qcow2 | jq -r '."backing-filename"')" = nb.qcow2 ] ||
				fail "rebase rerun: backing is not nb.qcow2" ;;
		esac
		for f in base.qcow2 top.qcow2 nb.qcow2; do qcheck "$f" leaks; done
	done
	[ "$mid" -ge 8 ] || fail "$op: only $mid of 30 kills landed before it finished (run time ${ms} ms)"
	echo "ok: $op (${ms} ms): 30 kills, $mid mid-way; top unchanged, rerun completes"
}

crash_op commit
crash_op rebase
