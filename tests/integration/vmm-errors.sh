# Bad input to `cowvm run` gets a clear message and a non-zero status; a
# guest that triple-faults ends the run with the exit reason, RIP and code.
# timeout: 60
. "$(dirname "$0")/../lib.sh"

expect_err() {   # expected-status regex -- args...
	local want=$1 re=$2; shift 2
	timeout 20 "$COWVM" "$@" >"$T/out" 2>"$T/err"; RC=$?
	[ "$RC" -eq "$want" ] || { cat "$T/err"; fail "cowvm $*: status $RC, expected $want"; }
	[ -z "$re" ] || grep -Eq -- "$re" "$T/err" || { cat "$T/err"; fail "cowvm $*: message does not match '$re'"; }
}

expect_err 2 'run: --kernel FILE \(or --restore FILE\) is required' run
expect_err 2 "--mem 'lots': not a size" run --kernel x --mem lots
expect_err 2 'must be a multiple of 2 MiB' run --kernel x --mem 3M
expect_err 2 "--cpus '0'" run --kernel x --cpus 0
expect_err 2 "unknown or incomplete option '--bogus'" run --kernel x --bogus
expect_err 2 "--disk 'a,what': expected" run --kernel x --disk a,what
expect_err 2 "unknown command 'frobnicate'" frobnicate
expect_err 0 '' --version

need_kvm
expect_err 1 "unable to load '/nonexistent': .*No such file" run --kernel /nonexistent
expect_err 1 "'/etc/hostname': not a Linux bzImage or PVH ELF kernel" run --kernel /etc/hostname
"$HELPERS/mkpvh" no-note "$T/nn.elf" || fail "mkpvh"
expect_err 1 "without a Xen PVH entry note" run --kernel "$T/nn.elf"
"$HELPERS/mkpvh" bad-phdr "$T/bp.elf" || fail "mkpvh"
expect_err 1 "lies beyond the end of the file" run --kernel "$T/bp.elf"
expect_err 1 "unable to open '$T/missing.img'" run --kernel "$TESTGUEST" --disk "$T/missing.img"
"$HELPERS/mkpvh" triple-fault "$T/tf.elf" || fail "mkpvh"
expect_err 1 'vCPU 0: triple fault \(KVM_EXIT_SHUTDOWN\), RIP 0x100007 \(code at 0x100007: 0f 0b f4' \
	run --kernel "$T/tf.elf" --console none
echo "ok"
