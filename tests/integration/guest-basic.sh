# The test guest's hello and info under cowvm, with 1 and 2 vCPUs.
# timeout: 60
. "$(dirname "$0")/../lib.sh"
need_kvm

for cpus in 1 2; do
	run_guest 20 "$T/hello$cpus" "cowvm.test=hello" --cpus $cpus
	expect_rc 0 "$T/hello$cpus" "hello with $cpus vCPUs"
	expect_line "$T/hello$cpus" '^cowvm-guest: hello'

	truncate -s 8M "$T/disk.raw"
	run_guest 20 "$T/info$cpus" "cowvm.test=info" --cpus $cpus --mem 128M --rng --disk "$T/disk.raw"
	expect_rc 0 "$T/info$cpus" "info with $cpus vCPUs"
	expect_line "$T/info$cpus" "^cowvm-guest: cpus count=$cpus\$"
	expect_line "$T/info$cpus" '^cowvm-guest: pci 00:00.0 1b36:0008'
	expect_line "$T/info$cpus" '^cowvm-guest: pci 00:01.0 1af4:1042'   # virtio-blk
	expect_line "$T/info$cpus" '^cowvm-guest: pci 00:02.0 1af4:1044'   # virtio-rng
	expect_line "$T/info$cpus" '^cowvm-guest: memmap 0x0000000000100000-0x0000000007ffffff ram'
done

# An unknown command is an error exit from the guest, passed through.
run_guest 20 "$T/unknown" "cowvm.test=no-such-test"
[ "$RC" -ne 0 ] || fail "an unknown guest command exited 0"

# RAM above 4 GiB: the map must show the split around the MMIO hole.
run_guest 30 "$T/high" "cowvm.test=info" --mem 4200M
expect_rc 0 "$T/high" "info with 4200M"
expect_line "$T/high" '^cowvm-guest: memmap 0x0000000000100000-0x00000000bfffffff ram'
expect_line "$T/high" '^cowvm-guest: memmap 0x0000000100000000-0x00000001467fffff ram'
echo "ok"
