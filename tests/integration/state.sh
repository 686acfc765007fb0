# VM state: save on SIGUSR2, restore (lazy RAM), N independent restores,
# 2 vCPUs, a busy disk, zstd, and refusal of bad state files.
# timeout: 240
. "$(dirname "$0")/../lib.sh"
need_kvm

last_tick() { grep -E '^tick [0-9]+$' "$1" | tail -1 | cut -d' ' -f2; }
first_tick() { grep -E '^tick [0-9]+$' "$1" | head -1 | cut -d' ' -f2; }

# save FILE LOG: SIGUSR2 the running VM ($PID), expect a clean exit with the file.
save() {
	kill -USR2 "$PID"
	wait_exit "$PID" 20
	[ "$RC" -eq 0 ] || { cat "$2.err"; fail "save: exit status $RC"; }
	[ -s "$1" ] || fail "no state file written"
}

# --- counter: ticks resume at K or K+1 and keep their pace (1 and 2 vCPUs)
for cpus in 1 2; do
	start_guest "$T/c$cpus" "cowvm.test=counter" --cpus $cpus --save-on-signal "$T/c$cpus.st"
	wait_for "$T/c$cpus" '^tick 5$' 10
	save "$T/c$cpus.st" "$T/c$cpus"
	k=$(last_tick "$T/c$cpus")
	sleep 2   # a gap: a restored clock must neither jump over it nor go back
	start_vmm "$T/r$cpus" --restore "$T/c$cpus.st"
	wait_for "$T/r$cpus" '^tick [0-9]+$' 5
	f=$(first_tick "$T/r$cpus")
	note "$cpus vCPU(s): saved after tick $k, restored VM's first tick $f"
	[ "$f" -eq "$k" ] || [ "$f" -eq $((k + 1)) ] || fail "first tick after restore $f, saved at $k"
	t0=$(date +%s%N)
	wait_for "$T/r$cpus" "^tick $((f + 10))\$" 5
	ms=$(( ($(date +%s%N) - t0) / 1000000 ))
	note "10 ticks in $ms ms after restore"
	[ "$ms" -ge 700 ] && [ "$ms" -le 1600 ] || fail "10 ticks took $ms ms after restore"
	kill -TERM "$PID"; wait_exit "$PID" 10
done

# --- memfill: save, then 4 restores at once all keep passing their checks;
# the state file never changes
start_guest "$T/m" "cowvm.test=memfill seed=5" --mem 256M --save-on-signal "$T/m.st"
wait_for "$T/m" '^memcheck ok 1$' 60
save "$T/m.st" "$T/m"
sum=$(md5sum < "$T/m.st")
pids=()
for i in 1 2 3 4; do
	start_vmm "$T/mr$i" --restore "$T/m.st"
	pids+=("$PID")
done
for i in 1 2 3 4; do
	# two full verify passes after the restore
	n=$(grep -c '^memcheck ok' "$T/mr$i" 2>/dev/null || true)
	wait_for "$T/mr$i" "^memcheck ok [0-9]+\$" 60
	start=$(grep '^memcheck ok' "$T/mr$i" | head -1 | cut -d' ' -f3)
	wait_for "$T/mr$i" "^memcheck ok $((start + 2))\$" 90
	grep -q 'memcheck bad' "$T/mr$i" && fail "restore $i found a bad word"
done
for p in "${pids[@]}"; do kill -TERM "$p"; wait_exit "$p" 10; done
[ "$(md5sum < "$T/m.st")" = "$sum" ] || fail "the state file changed while restored VMs ran"

# --- two restores of a writing guest compute the same sums: independent RAM
start_guest "$T/d" "cowvm.test=dirty mb=16" --save-on-signal "$T/d.st"
wait_for "$T/d" '^cowvm-guest: dirty pass 3 ' 20
save "$T/d.st" "$T/d"
start_vmm "$T/da" --restore "$T/d.st"; pa=$PID
start_vmm "$T/db" --restore "$T/d.st"; pb=$PID
wait_for "$T/da" '^cowvm-guest: dirty pass [0-9]+ ' 20
first=$(grep -m1 '^cowvm-guest: dirty pass' "$T/da" | cut -d' ' -f4)
# (pass first+6 begun: the lines compared below are whole, not cut by the kill)
wait_for "$T/da" "^cowvm-guest: dirty pass $((first + 6)) " 30
wait_for "$T/db" "^cowvm-guest: dirty pass $((first + 6)) " 30
kill -TERM "$pa" "$pb"; wait_exit "$pa" 10; wait_exit "$pb" 10
for n in 0 1 2 3 4 5; do
	a=$(grep "^cowvm-guest: dirty pass $((first + n)) " "$T/da")
	b=$(grep "^cowvm-guest: dirty pass $((first + n)) " "$T/db")
	[ -n "$a" ] && [ "$a" = "$b" ] || fail "restored copies diverged: '$a' vs '$b'"
done

# --- save while the disk is busy, restore, finish, verify
# (1 GiB: the guest needs well over 0.3 s to write it; it prints only at the end)
truncate -s 1G "$T/disk.raw"
start_guest "$T/w" "cowvm.test=disk-write seed=9" --disk "$T/disk.raw" --save-on-signal "$T/w.st"
sleep 0.3
kill -USR2 "$PID"; wait_exit "$PID" 20
grep -q "disk-write" "$T/w" && { cat "$T/w"; fail "disk-write ended before the save at 0.3 s"; }
[ -s "$T/w.st" ] || fail "no state saved during disk-write"
start_vmm "$T/w2" --restore "$T/w.st"
wait_exit "$PID" 60
[ "$RC" -eq 0 ] || { tail -3 "$T/w2" "$T/w2.err"; fail "restored disk-write: status $RC"; }
grep -q '^cowvm-guest: disk-write ok sectors=2097152$' "$T/w2" || fail "disk-write did not finish"
run_guest 60 "$T/v" "cowvm.test=disk-verify seed=9" --disk "$T/disk.raw"
expect_rc 0 "$T/v" "disk-verify after a restored disk-write"

# --- a machine without a PIT saves and restores without one
start_guest "$T/np" "cowvm.test=counter" --no-pit --save-on-signal "$T/np.st"
wait_for "$T/np" '^tick 2$' 10
save "$T/np.st" "$T/np"
start_vmm "$T/npr" --restore "$T/np.st"
wait_for "$T/npr" "^tick $(( $(last_tick "$T/np") + 2 ))\$" 5
kill -TERM "$PID"; wait_exit "$PID" 10

# --- zstd-compressed state
start_guest "$T/z" "cowvm.test=counter" --save-on-signal "$T/z.st" --save-compress
wait_for "$T/z" '^tick 3$' 10
save "$T/z.st" "$T/z"
start_vmm "$T/zr" --restore "$T/z.st"
wait_for "$T/zr" "^tick $(( $(last_tick "$T/z") + 3 ))\$" 5
kill -TERM "$PID"; wait_exit "$PID" 10

# --- bad state files are refused with a clear message
bad() {   # file regex [options]
	local f=$1 re=$2; shift 2
	timeout 20 "$COWVM" run --restore "$f" --console none "$@" >"$T/bad.out" 2>&1; RC=$?
	[ "$RC" -eq 1 ] || { cat "$T/bad.out"; fail "restore of $(basename "$f"): status $RC"; }
	grep -Eq -- "$re" "$T/bad.out" || { cat "$T/bad.out"; fail "restore of $(basename "$f"): message does not match '$re'"; }
}
cp "$T/c1.st" "$T/trunc.st"; truncate -s -100 "$T/trunc.st"
bad "$T/trunc.st" 'truncated or corrupt'
cp "$T/c1.st" "$T/flip.st"; printf '\xff' | dd of="$T/flip.st" bs=1 seek=300 conv=notrunc status=none
bad "$T/flip.st" 'checksum mismatch in the state records'
cp "$T/c1.st" "$T/ver.st"; printf '\x02' | dd of="$T/ver.st" bs=1 seek=8 conv=notrunc status=none
bad "$T/ver.st" 'state file version 2; this cowvm reads version 1'
bad /etc/hostname 'not a cowvm state file'
bad "$T/nonexistent.st" "unable to open state file"
# RAM corruption: caught by --verify-ram (raw) and always for zstd
ram_off=$(od -An -t u8 -j 24 -N 8 "$T/m.st" | tr -d ' ')
cp "$T/m.st" "$T/ram.st"; printf '\x55' | dd of="$T/ram.st" bs=1 seek=$((ram_off + 5000000)) conv=notrunc status=none
bad "$T/ram.st" 'RAM checksum mismatch' --verify-ram
cp "$T/z.st" "$T/zram.st"; sz=$(stat -c %s "$T/zram.st")
printf '\x55\x55\x55\x55' | dd of="$T/zram.st" bs=1 seek=$((sz - 200)) conv=notrunc status=none
bad "$T/zram.st" 'RAM chunk|RAM checksum'
timeout 20 "$COWVM" run --restore "$T/c1.st" --mem 1G >"$T/bad.out" 2>&1; RC=$?
[ "$RC" -eq 2 ] || fail "--restore with --mem: status $RC"
echo "ok"
