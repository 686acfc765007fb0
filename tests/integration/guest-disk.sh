# disk-write / disk-verify over a raw disk through virtio-blk, 1 and 2 vCPUs;
# a wrong seed is caught at sector 0; a read-only disk refuses writes;
# ,cache=none (O_DIRECT) and ,aio=threads write and read the same data as
# the default.
# timeout: 120
. "$(dirname "$0")/../lib.sh"
need_kvm

for cpus in 1 2; do
	rm -f "$T/disk.raw"; truncate -s 48M "$T/disk.raw"
	run_guest 60 "$T/w$cpus" "cowvm.test=disk-write seed=$cpus" --cpus $cpus --disk "$T/disk.raw"
	expect_rc 0 "$T/w$cpus" "disk-write"
	expect_line "$T/w$cpus" '^cowvm-guest: disk-write ok sectors=98304$'
	run_guest 60 "$T/v$cpus" "cowvm.test=disk-verify seed=$cpus" --cpus $cpus --disk "$T/disk.raw"
	expect_rc 0 "$T/v$cpus" "disk-verify"
	expect_line "$T/v$cpus" '^cowvm-guest: disk-verify ok sectors=98304$'
done

# cache=none: O_DIRECT on the host file (needs a file system with real
# O_DIRECT; tmpfs is refused with a clear message)
if [ "$(stat -f -c %T "$T")" = tmpfs ]; then
	run_guest 60 "$T/dtmp" "cowvm.test=disk-verify seed=2" --disk "$T/disk.raw,cache=none"
	[ "$RC" -ne 0 ] || fail "cache=none on tmpfs was accepted"
	grep -q "does not support O_DIRECT (cache=none)" "$T/dtmp.err" ||
		fail "cache=none on tmpfs: no clear message"
	note "$T is on tmpfs: cache=none guest runs skipped"
else
	for cpus in 1 2; do
		run_guest 60 "$T/dv$cpus" "cowvm.test=disk-verify seed=2" --cpus $cpus --disk "$T/disk.raw,cache=none"
		expect_rc 0 "$T/dv$cpus" "disk-verify with cache=none"
		rm -f "$T/direct.raw"; truncate -s 48M "$T/direct.raw"
		run_guest 60 "$T/dw$cpus" "cowvm.test=disk-write seed=$((cpus + 20))" --cpus $cpus --disk "$T/direct.raw,cache=none"
		expect_rc 0 "$T/dw$cpus" "disk-write with cache=none"
		run_guest 60 "$T/dvb$cpus" "cowvm.test=disk-verify seed=$((cpus + 20))" --cpus $cpus --disk "$T/direct.raw"
		expect_rc 0 "$T/dvb$cpus" "disk-verify (buffered) of what cache=none wrote"
	done
	run_guest 20 "$T/dbad" "cowvm.test=disk-verify seed=2" --disk "$T/disk.raw,cache=bogus"
	[ "$RC" -ne 0 ] || fail "--disk ...,cache=bogus was accepted"
	echo "ok: cache=none"
fi

# aio=threads: the disk's I/O on worker threads (2 vCPUs: requests from
# both queues' notifications in flight together); the same data both ways
rm -f "$T/thr.raw"; truncate -s 48M "$T/thr.raw"
run_guest 60 "$T/tw" "cowvm.test=disk-write seed=31" --cpus 2 --disk "$T/thr.raw,aio=threads"
expect_rc 0 "$T/tw" "disk-write with aio=threads"
run_guest 60 "$T/tv" "cowvm.test=disk-verify seed=31" --disk "$T/thr.raw"
expect_rc 0 "$T/tv" "disk-verify (io_uring) of what aio=threads wrote"
run_guest 60 "$T/tv2" "cowvm.test=disk-verify seed=2" --cpus 2 --disk "$T/disk.raw,aio=threads,ro"
expect_rc 0 "$T/tv2" "disk-verify with aio=threads"
run_guest 20 "$T/tbad" "cowvm.test=disk-verify seed=2" --disk "$T/disk.raw,aio=native"
[ "$RC" -ne 0 ] || fail "--disk ...,aio=native was accepted"
echo "ok: aio=threads"

# The data really is on the host file: sector 0 must not be zeroes.
[ "$(head -c 512 "$T/disk.raw" | tr -d '\0' | wc -c)" -gt 0 ] || fail "disk-write left sector 0 empty"

run_guest 60 "$T/bad" "cowvm.test=disk-verify seed=99" --disk "$T/disk.raw"
[ "$RC" -ne 0 ] || fail "disk-verify with the wrong seed passed"
expect_line "$T/bad" '^cowvm-guest: disk-verify mismatch at sector 0$'

# Corrupt one sector in the middle on the host: verify names exactly it.
printf 'XXXXXXXX' | dd of="$T/disk.raw" bs=512 seek=12345 conv=notrunc status=none
run_guest 60 "$T/bad2" "cowvm.test=disk-verify seed=2" --disk "$T/disk.raw"
[ "$RC" -ne 0 ] || fail "disk-verify passed over a corrupted sector"
expect_line "$T/bad2" '^cowvm-guest: disk-verify mismatch at sector 12345$'

# Read-only: writes fail in the guest, the file is unchanged.
sum=$(md5sum < "$T/disk.raw")
run_guest 60 "$T/ro" "cowvm.test=disk-write seed=5" --disk "$T/disk.raw,ro"
[ "$RC" -ne 0 ] || fail "disk-write on a read-only disk succeeded"
[ "$(md5sum < "$T/disk.raw")" = "$sum" ] || fail "a read-only disk was modified"

# No disk at all: a clear failure, not a hang.
run_guest 20 "$T/none" "cowvm.test=disk-write seed=1"
[ "$RC" -ne 0 ] || fail "disk-write without a disk exited 0"
echo "ok"
