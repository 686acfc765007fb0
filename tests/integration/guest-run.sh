# Long-running guest workloads: counter pace, dirty, memfill, rng; SIGTERM and
# SIGINT end the VM promptly with 128+signal.
# timeout: 120
. "$(dirname "$0")/../lib.sh"
need_kvm

for cpus in 1 2; do
	start_guest "$T/c$cpus" "cowvm.test=counter" --cpus $cpus
	wait_for "$T/c$cpus" '^tick 0$' 10
	t0=$(date +%s%N)
	wait_for "$T/c$cpus" '^tick 10$' 10
	t1=$(date +%s%N)
	ms=$(( (t1 - t0) / 1000000 ))
	note "10 ticks in ${ms} ms with $cpus vCPUs"
	[ "$ms" -ge 700 ] && [ "$ms" -le 1600 ] || fail "10 ticks took ${ms} ms (expected about 1000)"
	kill -TERM "$PID"; t0=$(date +%s%N)
	wait "$PID"; RC=$?
	t1=$(date +%s%N)
	[ "$RC" -eq 143 ] || fail "SIGTERM: exit status $RC, expected 143"
	[ $(( (t1 - t0) / 1000000 )) -lt 2000 ] || fail "SIGTERM took more than 2 s"
done

start_guest "$T/d" "cowvm.test=dirty mb=32" --cpus 2
wait_for "$T/d" '^cowvm-guest: dirty pass 3 sum=0x[0-9a-f]+$' 20
kill -INT "$PID"; wait "$PID"; RC=$?
[ "$RC" -eq 130 ] || fail "SIGINT: exit status $RC, expected 130"

start_guest "$T/m" "cowvm.test=memfill seed=11" --mem 256M --cpus 2
wait_for "$T/m" '^memcheck ok 2$' 40
kill -TERM "$PID"; wait "$PID"
grep -q 'memcheck bad' "$T/m" && fail "memfill found a bad word"

run_guest 20 "$T/r" "cowvm.test=rng" --rng
expect_rc 0 "$T/r" "rng"
expect_line "$T/r" '^cowvm-guest: rng ok bytes=64 [0-9a-f]{128}$'
run_guest 20 "$T/r2" "cowvm.test=rng"
[ "$RC" -ne 0 ] || fail "rng without a virtio-rng device exited 0"
echo "ok"
