#!/bin/bash
# timeout: 720
# tests/linux/boot-debian.sh — boot Debian's cloud kernel under cowvm, both as
# the bzImage (64-bit boot protocol) and as the vmlinux that
# `cowvm extract-vmlinux` takes out of it (PVH entry), and check its early
# console against what cowvm says it built (`cowvm run --verbose`):
#   - "Linux version", and "Command line: CMDLINE" exactly (a unique marker in it)
#   - the "BIOS-e820:" lines equal the map computed here from the layout rules
#     (core/layout.h), and equal cowvm's own "cowvm: e820" lines
#   - "RAMDISK: [mem 0xA-0xB]" at the initrd address cowvm printed
#   - "Memory: ...K/NNNK available" with NNN within 3% below --mem
# Where ring 0 runs natively (vmx/svm in /proc/cpuinfo) it also requires the
# initramfs's "cowvm-linux: init ok" and cowvm exiting 0 after the guest's
# reboot -f. Under nested PVM (no vmx/svm) the kernel stops at an instruction
# KVM's emulator lacks, after the early console; the VM is then killed.
# The two boots run in parallel (one vCPU each). Seconds from start to each
# line are printed. Skips (77) without the kernel, busybox-static or /dev/kvm.
set -u

skip() { echo "skip: $*"; exit 77; }

COWVM=${COWVM:-$PWD/build/cowvm}
COWVM_BUILD=${COWVM_BUILD:-build}
COWVM_SRC=${COWVM_SRC:-$PWD}
MEM_MIB=512
WAIT_NATIVE=120           # per boot, with hardware virtualization
WAIT_NESTED=600           # per boot under PVM: bzImage decompression alone ~94 s idle, x2-3 when busy

kernel=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || skip "no Debian cloud kernel (/boot/vmlinuz-*-cloud-amd64; apt-get install linux-image-cloud-amd64)"
[ -r "$kernel" ] || skip "$kernel is not readable"
[ -x /bin/busybox ] || skip "no /bin/busybox (apt-get install busybox-static)"
command -v cpio >/dev/null || skip "no cpio (apt-get install cpio)"
[ -x "$COWVM" ] || { echo "FAIL: no cowvm binary at $COWVM"; exit 1; }
( exec 3<>/dev/kvm ) 2>/dev/null || skip "cannot open /dev/kvm"

kver=${kernel#/boot/vmlinuz-}
out=$COWVM_BUILD/linux
mkdir -p "$out"
out=$(cd "$out" && pwd)
initrd=$out/initramfs.cpio.gz
vmlinux=$out/vmlinux-$kver

native=0
grep -qwE 'vmx|svm' /proc/cpuinfo && native=1
wait_max=$WAIT_NESTED
[ $native = 1 ] && wait_max=$WAIT_NATIVE

bash "$COWVM_SRC/tests/linux/mkinitramfs.bash" "$initrd" "$kver" || { echo "FAIL: mkinitramfs"; exit 1; }
if ! "$COWVM" extract-vmlinux "$kernel" "$vmlinux"; then
	echo "FAIL: cowvm extract-vmlinux $kernel"
	exit 1
fi

# The E820 map cowvm must build for MEM_MIB of RAM (core/layout.h rules),
# in Linux's "BIOS-e820: [mem 0x%016llx-0x%016llx] type" form.
expected_e820() {
	local mem=$(( MEM_MIB << 20 )) hole=$(( 0xC0000000 )) low high
	low=$(( mem < hole ? mem : hole ))
	high=$(( mem - low ))
	printf 'BIOS-e820: [mem 0x%016x-0x%016x] usable\n' 0 $(( 0x9FC00 - 1 ))
	printf 'BIOS-e820: [mem 0x%016x-0x%016x] reserved\n' $(( 0x9FC00 )) $(( 0x100000 - 1 ))
	printf 'BIOS-e820: [mem 0x%016x-0x%016x] usable\n' $(( 0x100000 )) $(( low - 1 ))
	[ $high -gt 0 ] && printf 'BIOS-e820: [mem 0x%016x-0x%016x] usable\n' $(( 1 << 32 )) $(( (1 << 32) + high - 1 ))
	return 0
}

# Strip "[    1.234567] " timestamps and carriage returns from a console log.
clean_log() { sed -e 's/\r$//' -e 's/^\[ *[0-9]*\.[0-9]*\] //' "$1" 2>/dev/null; }

# boot FORMAT KERNEL: run one VM, write FORMAT.result ("ok" or failure lines)
# and FORMAT.times. Runs in a subshell in the background.
boot() {
	local fmt=$1 k=$2 marker cmdline log err pid t0 now elapsed status= w
	local -A seen=()
	marker="cowvm.check=$fmt-$$-$RANDOM"
	cmdline="console=ttyS0 earlyprintk=serial,ttyS0,115200 $marker"
	log=$out/$fmt.console.log
	err=$out/$fmt.stderr.log
	rm -f "$log" "$err" "$out/$fmt.result" "$out/$fmt.times"
	echo "$cmdline" >"$out/$fmt.cmdline"
	t0=$(date +%s%N)
	"$COWVM" run --kernel "$k" --initrd "$initrd" --append "$cmdline" --mem ${MEM_MIB}M \
		--console "file:$log" --verbose 2>"$err" &
	pid=$!
	local want="version cmdline e820 ramdisk memory"
	[ $native = 1 ] && want="$want init"
	while :; do
		local c
		c=$(clean_log "$log")
		now=$(( ($(date +%s%N) - t0) / 100000000 ))     # tenths of a second
		elapsed=$(( now / 10 )).$(( now % 10 ))
		grep -q '^Linux version ' <<<"$c" && [ -z "${seen[version]:-}" ] && seen[version]=$elapsed
		grep -qxF "Command line: $cmdline" <<<"$c" && [ -z "${seen[cmdline]:-}" ] && seen[cmdline]=$elapsed
		[ "$(grep -c '^BIOS-e820: ' <<<"$c")" -ge 3 ] && [ -z "${seen[e820]:-}" ] && seen[e820]=$elapsed
		grep -q '^RAMDISK: \[mem ' <<<"$c" && [ -z "${seen[ramdisk]:-}" ] && seen[ramdisk]=$elapsed
		grep -q '^Memory: [0-9]*K/[0-9]*K available' <<<"$c" && [ -z "${seen[memory]:-}" ] && seen[memory]=$elapsed
		grep -q '^cowvm-linux: init ok' <<<"$c" && [ -z "${seen[init]:-}" ] && seen[init]=$elapsed
		local all=1
		for w in $want; do [ -n "${seen[$w]:-}" ] || all=0; done
		if ! kill -0 $pid 2>/dev/null; then
			wait $pid; status=$?
			break
		fi
		[ $all = 1 ] && [ $native = 0 ] && break
		if [ "${elapsed%.*}" -ge $wait_max ]; then
			echo "timed out after ${wait_max}s" >>"$out/$fmt.result"
			break
		fi
		sleep 0.5
	done
	if [ -z "$status" ]; then
		kill $pid 2>/dev/null
		wait $pid 2>/dev/null
		status=killed
	fi
	for w in version cmdline e820 ramdisk memory init; do
		echo "$w ${seen[$w]:--}"
	done >"$out/$fmt.times"
	echo "exit $status" >>"$out/$fmt.times"
	check "$fmt" "$cmdline" "$status" >>"$out/$fmt.result"
}

# check FORMAT CMDLINE STATUS: print one line per failed assertion.
check() {
	local fmt=$1 cmdline=$2 status=$3 c e v a b mem
	c=$(clean_log "$out/$fmt.console.log")
	e=$out/$fmt.stderr.log
	local kfmt=$fmt; [ $fmt = vmlinux ] && kfmt=pvh
	grep -qE "^cowvm: kernel .* format $kfmt entry 0x[0-9a-f]+$" "$e" ||
		echo "cowvm --verbose did not print 'cowvm: kernel ... format $kfmt entry 0x...'"
	grep -q '^Linux version ' <<<"$c" || echo "no 'Linux version' line"
	grep -qxF "Command line: $cmdline" <<<"$c" || echo "no exact 'Command line: $cmdline' line"

	# e820: guest's view == expected == cowvm's --verbose view.
	local want got mine
	want=$(expected_e820)
	got=$(grep '^BIOS-e820: ' <<<"$c")
	mine=$(sed -n 's/^cowvm: e820 0x\([0-9a-f]*\)-0x\([0-9a-f]*\) \([a-z]*\)$/\1 \2 \3/p' "$e" |
		while read -r s t ty; do printf 'BIOS-e820: [mem 0x%016x-0x%016x] %s\n' 0x$s 0x$t $ty; done)
	[ "$got" = "$want" ] || { echo "BIOS-e820 lines differ from the expected map:"; diff <(echo "$want") <(echo "$got") | sed 's/^/    /'; }
	[ "$mine" = "$want" ] || { echo "cowvm's e820 lines differ from the expected map:"; diff <(echo "$want") <(echo "$mine") | sed 's/^/    /'; }

	# RAMDISK: Linux prints [start, PAGE_ALIGN(start + size) - 1].
	v=$(sed -n 's/^cowvm: initrd 0x\([0-9a-f]*\)-0x\([0-9a-f]*\)$/\1 \2/p' "$e")
	if [ -z "$v" ]; then
		echo "cowvm --verbose did not print 'cowvm: initrd 0xSTART-0xEND'"
	else
		read -r a b <<<"$v"
		local size=$(( 0x$b - 0x$a + 1 )) isize
		isize=$(stat -c %s "$initrd")
		[ $size = "$isize" ] || echo "cowvm's initrd range is $size bytes, the file $isize"
		(( (0x$a & 0xFFF) == 0 )) || echo "initrd 0x$a is not page aligned"
		(( 0x$b < (MEM_MIB << 20) )) || echo "initrd end 0x$b beyond RAM"
		local rd
		rd=$(printf 'RAMDISK: [mem 0x%08x-0x%08x]' 0x$a $(( ((0x$b + 1 + 4095) & ~4095) - 1 )))
		grep -qxF "$rd" <<<"$c" || echo "no '$rd' line (got: $(grep '^RAMDISK' <<<"$c" | head -n 1))"
	fi

	# Memory: ...K/NNNK available, NNN within 3% below --mem.
	mem=$(sed -n 's/^Memory: [0-9]*K\/\([0-9]*\)K available.*/\1/p' <<<"$c" | head -n 1)
	if [ -z "$mem" ]; then
		echo "no 'Memory: ...K/NNNK available' line"
	elif (( mem > MEM_MIB * 1024 || mem < MEM_MIB * 1024 * 97 / 100 )); then
		echo "Memory: total ${mem}K is not within 3% below ${MEM_MIB} MiB"
	fi

	if [ $native = 1 ]; then
		grep -q '^cowvm-linux: init ok' <<<"$c" || echo "no 'cowvm-linux: init ok' line from /init"
		[ "$status" = 0 ] || echo "cowvm exited with '$status', expected 0 after the guest's reboot -f"
	fi
}

echo "kernel $kernel, initramfs $initrd, native ring 0: $native, wait up to ${wait_max}s"
boot bzimage "$kernel" &
bz_job=$!
boot vmlinux "$vmlinux" &
vm_job=$!
wait $bz_job $vm_job

rc=0
for fmt in bzimage vmlinux; do
	echo "== $fmt: $(cat "$out/$fmt.cmdline")"
	sed 's/^/   seconds to /' "$out/$fmt.times"
	sed -n 's/^/   /p' "$out/$fmt.stderr.log" | head -n 8
	if [ -s "$out/$fmt.result" ]; then
		rc=1
		echo "FAIL $fmt:"
		sed 's/^/   /' "$out/$fmt.result"
		echo "   console log tail ($out/$fmt.console.log):"
		clean_log "$out/$fmt.console.log" | tail -n 15 | sed 's/^/   | /'
	else
		echo "PASS $fmt"
	fi
done
exit $rc
