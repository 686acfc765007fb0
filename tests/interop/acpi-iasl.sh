# cowvm's ACPI tables, disassembled by ACPICA's iasl (Debian acpica-tools):
# no errors, and the objects Linux relies on are there.
# timeout: 60
. "$(dirname "$0")/../lib.sh"
need_cmd iasl

"$HELPERS/dumpacpi" 3 "$T" || fail "dumpacpi"
for t in dsdt facp apic xsdt; do
	(cd "$T" && iasl -d "$t.dat" >"$t.log" 2>&1) || { cat "$T/$t.log"; fail "iasl -d $t.dat failed"; }
	grep -qiE '(^|[^a-z])(error|warning)' "$T/$t.log" && { cat "$T/$t.log"; fail "iasl reports problems in $t"; }
	[ -s "$T/$t.dsl" ] || fail "iasl wrote no $t.dsl"
done
d="$T/dsdt.dsl"
grep -q 'Device (PCI0)' "$d" || fail "DSDT: no PCI0"
grep -q 'EisaId ("PNP0A03")' "$d" || fail "DSDT: PCI0 is not PNP0A03"
grep -q 'Name (_PRT, Package (0x20)' "$d" || fail "DSDT: _PRT does not have 32 entries"
grep -q '0xFEBFFFFF' "$d" || fail "DSDT: MMIO window end missing"
grep -q 'Name (\\_S5, Package (0x02)' "$d" || fail "DSDT: no _S5"
grep -q 'EisaId ("PNP0C0C")' "$d" || fail "DSDT: no power button"
grep -q 'Name (_HID, "ACPI0013"' "$d" || fail "DSDT: no generic event device"
grep -q 'Notify (\\_SB.PWRB, 0x80)' "$d" || fail "DSDT: GED _EVT does not notify the power button"
[ "$(grep -c 'Subtable Type : 00 \[Processor Local APIC\]' "$T/apic.dsl")" -eq 3 ] || fail "MADT: not 3 local APICs"
grep -q 'Subtable Type : 01 \[I/O APIC\]' "$T/apic.dsl" || fail "MADT: no I/O APIC"
grep -qE 'Hardware Reduced \((V5|ACPI 5)\) : 1' "$T/facp.dsl" || fail "FADT: not hardware-reduced"
grep -q 'Sleep Control Register' "$T/facp.dsl" || fail "FADT: no sleep control register"
echo "ok"
