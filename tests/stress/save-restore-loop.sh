#!/bin/bash
# tests/stress/save-restore-loop.sh [N] — not part of `make check`.
# Saves a 2-vCPU counter guest at a random early tick and restores it, N
# times (default 40); a restore that prints no tick within 3 s is a failure
# and its state file is kept as /var/tmp/save-restore-fail-I.st. It found
# (2026-11-21) a bug fixed in core/state.c: the RAM writer's final reap waited
# for one io_uring write only, then tore the ring down with the others in
# flight, so some runs of guest pages never reached the file (3-40% of saves
# of this guest lost its stack or code pages; every restore of such a file
# faulted). 0 failures in 160 runs after the fix.
set -u
B=${COWVM_BUILD:-build}
C=$(realpath "$B/cowvm"); G=$(realpath "$B/testguest.elf")
D=$(mktemp -d "${TMPDIR:-/var/tmp}/srloop.XXXXXX")
trap 'pkill -f "$D" 2>/dev/null; rm -rf "$D"' EXIT
fails=0
for i in $(seq 1 "${1:-40}"); do
	"$C" run --kernel "$G" --append "cowvm.test=counter" --cpus 2 --mem 128M \
		--save-on-signal "$D/s.st" --console "file:$D/a.log" 2>"$D/a.err" &
	p=$!
	for _ in $(seq 1 100); do grep -q "^tick $((2 + RANDOM % 4))$" "$D/a.log" 2>/dev/null && break; sleep 0.05; done
	kill -USR2 "$p"; wait "$p"
	"$C" run --restore "$D/s.st" --console "file:$D/b.log" 2>"$D/b.err" &
	q=$!
	ok=0
	for _ in $(seq 1 60); do grep -q "^tick" "$D/b.log" 2>/dev/null && { ok=1; break; }; sleep 0.05; done
	kill "$q" 2>/dev/null; wait "$q" 2>/dev/null
	if [ $ok = 0 ]; then
		fails=$((fails + 1))
		cp "$D/s.st" "/var/tmp/save-restore-fail-$i.st"
		echo "run $i: no tick after restore: $(grep -h exception "$D/b.log" | head -1) $(head -2 "$D/b.err")"
	fi
	rm -f "$D/a.log" "$D/b.log" "$D/s.st"
done
echo "$fails failed of ${1:-40}"
[ "$fails" -eq 0 ]
