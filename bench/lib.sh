# bench/lib.sh — sourced by the bench scripts that run cowvm beside QEMU.
# The caller defines die(), BUILD and QEMU.

# bench_need_vmms: set COWVM and ELF from $BUILD and check that both VMMs,
# /dev/kvm, a C compiler (the timing helpers are C) and timeout are there.
bench_need_vmms() {
	COWVM=$BUILD/cowvm
	ELF=$BUILD/testguest.elf
	[ -x "$COWVM" ] || die "$COWVM not found (run make first)"
	[ -r "$ELF" ] || die "$ELF not found (run make first)"
	{ : <>/dev/kvm; } 2>/dev/null || die "/dev/kvm cannot be opened; nothing to measure"
	command -v "$QEMU" >/dev/null || die "$QEMU not found (Debian: apt-get install qemu-system-x86)"
	command -v cc >/dev/null || die "cc not found (the timing helpers are C)"
	command -v timeout >/dev/null || die "timeout (coreutils) not found"
}
