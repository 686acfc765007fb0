# The test guest's irq command under cowvm: virtio-rng completions reach the
# guest's local APIC as MSI-X messages (irqfd) and as a level INTx through the
# in-kernel IOAPIC; MSI-X masking, the PBA and the ISR read are checked too.
# timeout: 60
. "$(dirname "$0")/../lib.sh"
need_kvm

check_irq() {   # LOG PIN
	expect_line "$1" '^cowvm-guest: irq msix vector=0x51 pending$'
	expect_line "$1" '^cowvm-guest: irq msix masked vector=0x61 held in pba, delivered on unmask$'
	expect_line "$1" '^cowvm-guest: irq msix vector=0x64 held while disabled, delivered on enable$'
	expect_line "$1" "^cowvm-guest: irq intx vector=0x52 pending pin=$2\$"
	expect_line "$1" '^cowvm-guest: irq intx isr=1 deasserted$'
	expect_line "$1" '^cowvm-guest: irq ok$'
}

# virtio-rng in slot 1: INTx on GSI VMM_PCI_IRQ_BASE + 1 = 6
for cpus in 1 2; do
	run_guest 20 "$T/irq$cpus" "cowvm.test=irq" --cpus $cpus --rng
	expect_rc 0 "$T/irq$cpus" "irq with $cpus vCPUs"
	check_irq "$T/irq$cpus" 6
done

# behind a virtio-blk disk, virtio-rng is in slot 2: GSI 7
truncate -s 1M "$T/disk.raw"
run_guest 20 "$T/irq-slot2" "cowvm.test=irq" --disk "$T/disk.raw" --rng
expect_rc 0 "$T/irq-slot2" "irq with the rng in slot 2"
check_irq "$T/irq-slot2" 7

# without the device: the guest's own "no device" status
run_guest 20 "$T/irq-none" "cowvm.test=irq"
expect_rc 4 "$T/irq-none" "irq without virtio-rng"
echo "ok"
