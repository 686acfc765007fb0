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

# settle: sync, then wait (up to 10 s) until the disk of the current
# directory has no request in flight (deleting a 1 GiB overlay makes ext4
# "discard" its blocks, which otherwise lands in the next timed run)
settle() {
	local n=0 z=0 DEV
	DEV=$(basename "$(df --output=source . | tail -1)")
	sync
	[ -r "/sys/class/block/$DEV/inflight" ] || return 0
	while [ $n -lt 200 ] && [ $z -lt 3 ]; do
		if [ "$(tr -s ' ' < "/sys/class/block/$DEV/inflight" | sed 's/^ //')" = "0 0" ]; then
			z=$((z + 1))
		else
			z=0
		fi
		n=$((n + 1))
		sleep 0.05
	done
}

# Free memory, the same for every write run under the page cache: this
# machine returns freed memory to its hypervisor (free page reporting,
# trickling, ~150 MiB per 2 s, starting about a second after the free), and
# the first touch of such memory costs a fault there (~9 us per 4 KiB page):
# 1 GiB of 64 KiB writes into page cache took 3.1-3.3 s with memory freed
# long before and 0.2-0.4 s with memory freed just before, for the
# preallocated raw file and a new sparse one alike. The raw file, evicted
# before each run, got the second; new files and overlays mostly the first.
# So before every write run in writeback mode, after settle and just before
# the timed run, 1.25 GiB of anonymous memory in transparent huge pages is
# touched and freed: every run then writes into memory freed an instant
# before, as on a host without free page reporting. (Freed in 2 MiB blocks:
# the same freed as 4 KiB pages through tmpfs left half the runs cold.)
hot_pages() {
	python3 -c '
import mmap
n = 1280 << 20
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_HUGEPAGE)
for off in range(0, n, 4096):
    m[off] = 1
m.close()' 2>/dev/null
}
