#!/bin/bash
# bench/boot/phases.sh [BUILD_DIR] [RUNS] — where cowvm's `hello` boot spends
# its wall time, from strace timestamps of the syscalls that mark each phase
# (strace --seccomp-bpf stops only at those, so the overhead is small but not
# zero: the total is a little above run.sh's).  Prints the median of each
# phase over RUNS runs (default 9).  Needs strace.
set -u
BUILD=${1:-build}
RUNS=${2:-9}
MEM=${BENCH_MEM:-256M}
COWVM=$BUILD/cowvm
ELF=$BUILD/testguest.elf
[ -x "$COWVM" ] && [ -r "$ELF" ] || { echo "phases: $COWVM or $ELF missing" >&2; exit 2; }
command -v strace >/dev/null || { echo "phases: strace not found" >&2; exit 2; }
W=$(mktemp -d /tmp/cowvm-bench-phases.XXXXXX) || exit 2
trap 'rm -rf "$W"' EXIT

for ((i = 1; i <= RUNS; i++)); do
	timeout 30 strace --seccomp-bpf -f -ttt -T -o "$W/trace.$i" \
		-e trace=execve,openat,ioctl,close,memfd_create,munmap,exit_group \
		"$COWVM" run --kernel "$ELF" --append cowvm.test=hello --mem "$MEM" \
		--console file:"$W/serial" >/dev/null 2>&1 </dev/null
	grep -q 'cowvm-guest: hello' "$W/serial" || { echo "phases: run $i failed" >&2; exit 1; }
	# One line per run: the phase durations in ms.
	awk '
	function end_of(line,   d) {	# timestamp + duration of a finished call
		d = line; sub(/.*</, "", d); sub(/>.*/, "", d)
		return $2 + d
	}
	/<unfinished/ || /resumed>/ { next }
	NR == 1 { t0 = $2 }
	/openat\(.*"\/dev\/kvm"/ && !kvm { kvm = $2 }
	/KVM_CREATE_VM/ { vm0 = $2; if (match($0, /\) = [0-9]+/)) vmfd = substr($0, RSTART + 4, RLENGTH - 4) }
	/memfd_create\("cowvm-ram"/ { mem0 = $2 }
	/KVM_SET_USER_MEMORY_REGION/ { mem1 = end_of($0) }
	/KVM_CREATE_VCPU/ && !vcpu0 { vcpu0 = $2 }
	/KVM_SET_REGS/ && !run0 { regs = end_of($0) }
	/KVM_RUN/ { if (!run0) run0 = $2; run1 = end_of($0) }
	/ close\(/ && vmfd != "" && $0 ~ ("close\\(" vmfd "\\)") { cl0 = $2; cl1 = end_of($0) }
	/exit_group/ { eg = $2 }
	/\+\+\+ exited/ { ex = $2 }
	END {
		printf "%.3f %.3f %.3f %.3f %.3f %.3f %.3f %.3f %.3f %.3f\n",
		    (kvm - t0) * 1e3, (mem0 - vm0) * 1e3, (mem1 - mem0) * 1e3,
		    (regs - vcpu0) * 1e3, (run0 - regs) * 1e3, (run1 - run0) * 1e3, (cl0 - run1) * 1e3,
		    (cl1 - cl0) * 1e3, (ex - cl1) * 1e3, (ex - t0) * 1e3
	}' "$W/trace.$i" >>"$W/phases"
done

names=("process start, dynamic linking, option parsing (exec to open /dev/kvm)"
       "KVM_CREATE_VM + IRQCHIP + PIT2 + GSI routing"
       "guest RAM: memfd, mmap, KVM_SET_USER_MEMORY_REGION"
       "vCPU creation, CPUID, devices, ELF load, registers"
       "vCPU thread start (last KVM_SET_REGS to first KVM_RUN)"
       "guest run (first KVM_RUN to last exit)"
       "stop: vCPU thread join, device teardown"
       "close(VM fd): KVM VM destruction"
       "munmap guest RAM, close fds, process exit"
       "total, exec to exit (under strace)")
echo "cowvm hello boot ($COWVM), median ms over $RUNS runs, from strace timestamps"
for ((f = 1; f <= ${#names[@]}; f++)); do
	m=$(cut -d' ' -f$f "$W/phases" | sort -n | awk '{ a[NR] = $1 } END {
		printf "%.2f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
	printf '  %8s  %s\n' "$m" "${names[f - 1]}"
done
