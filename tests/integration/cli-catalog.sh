#!/bin/bash
# tests/integration/cli-catalog.sh — the catalog commands as a user runs them
# (no KVM needed): create, list, show, dumpxml, define, rm, help; exit codes
# 0/1/2 and messages; JSON output; a VM whose VMM died shows as crashed;
# parallel cowvm processes never lose a VM nor print "locked" or "busy".
# timeout: 120
set -u
COWVM=${COWVM:-build/cowvm}
HELPER=${COWVM_BUILD:-build}/tests/helpers/cat_state
T=$(mktemp -d /tmp/cowvm-cli-XXXXXX)
trap 'kill $SLEEPER 2>/dev/null; rm -rf "$T"' EXIT
export COWVM_HOME=$T/home
unset XDG_RUNTIME_DIR
SLEEPER=
fails=0

fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# expect RC CMD... : run, keep stdout in $T/out and stderr in $T/err
expect() {
	local want=$1; shift
	"$@" >"$T/out" 2>"$T/err"
	local rc=$?
	[ "$rc" -eq "$want" ] || fail "'$*' exited $rc, want $want: $(head -c 300 "$T/err")"
}
has() { grep -qF -- "$2" "$T/$1" || fail "$1 of the last command lacks '$2': $(head -c 300 "$T/$1")"; }

echo kernel >"$T/vmlinuz"
truncate -s 64M "$T/root.raw"
truncate -s 16M "$T/data.raw"

expect 0 "$COWVM" --version;               has out "cowvm "
expect 0 "$COWVM" help;                    has out "create"; has out "dumpxml"
expect 0 "$COWVM" help create;             has out "usage: cowvm create NAME"
cp "$T/out" "$T/help1"
expect 0 "$COWVM" create --help
cmp -s "$T/out" "$T/help1" || fail "create --help differs from help create"
# `cowvm image --help`, and --help/-h of every image subcommand (anywhere
# before "--", even after other arguments): the usage on stdout, nothing on
# stderr, exit 0, nothing done
expect 0 "$COWVM" help image;               has out "usage: cowvm image create"
cp "$T/out" "$T/help1"
for h in --help -h; do
	expect 0 "$COWVM" image $h
	cmp -s "$T/out" "$T/help1" || fail "image $h differs from help image"
	[ -s "$T/err" ] && fail "image $h wrote to stderr: $(head -c 300 "$T/err")"
	for sub in create resize info check convert rebase commit map bench compare measure bitmap; do
		expect 0 "$COWVM" image $sub $h
		has out "usage: cowvm image $sub "
		has out "See 'cowvm help image'."
		[ -s "$T/err" ] && fail "image $sub $h wrote to stderr: $(head -c 300 "$T/err")"
	done
done
expect 0 "$COWVM" image create "$T/new.qcow2" 1G --help;   has out "usage: cowvm image create"
[ -e "$T/new.qcow2" ] && fail "image create ... --help created the image"
expect 0 "$COWVM" image resize "$T/none.qcow2" -h +1G;    has out "usage: cowvm image resize"
expect 2 "$COWVM" image frobnicate --help;  has err "unknown subcommand 'frobnicate'"
expect 2 "$COWVM" frobnicate;              has err "unknown command 'frobnicate'"
expect 2 "$COWVM" help frobnicate

# create
expect 0 "$COWVM" create vm1 --kernel "$T/vmlinuz" --append "console=ttyS0 quiet" \
	--disk "$T/root.raw" --disk "$T/data.raw,ro" --mem 512M --cpus 2 \
	--nic tap=tap-vm1,mac=52:54:00:00:00:01
has out "created VM 'vm1'"
expect 1 "$COWVM" create vm1 --kernel "$T/vmlinuz";       has err "a VM named 'vm1' already exists"
expect 2 "$COWVM" create a/b --kernel "$T/vmlinuz";       has err "contains '/'"
expect 2 "$COWVM" create $'a\tb' --kernel "$T/vmlinuz";   has err "control character"
expect 2 "$COWVM" create "$(printf 'x%.0s' {1..65})" --kernel "$T/vmlinuz"; has err "too long"
expect 2 "$COWVM" create "" --kernel "$T/vmlinuz";        has err "cannot be empty"
expect 2 "$COWVM" create vm2;                             has err "--kernel is required"
expect 2 "$COWVM" create vm2 --kernel "$T/vmlinuz" --cpus 0;  has err "invalid --cpus"
expect 2 "$COWVM" create vm2 --kernel "$T/vmlinuz" --mem 12Q; has err "invalid --mem"
expect 1 "$COWVM" create vm2 --kernel "$T/nope";          has err "No such file"
expect 1 "$COWVM" create vm2 --kernel "$T/vmlinuz" --disk "$T/root.raw"
has err "is already used by VM 'vm1'"
expect 1 "$COWVM" create vm2 --kernel "$T/vmlinuz" --nic mac=52:54:00:00:00:01
has err "MAC address 52:54:00:00:00:01 is already used by VM 'vm1'"
expect 1 "$COWVM" create vm2 --kernel "$T/vmlinuz" --disk "$T/data.raw,cache=bogus"; has err "cache=none|writeback"
expect 1 "$COWVM" create vm2 --kernel "$T/vmlinuz" --disk "$T/data.raw,aio=native"; has err "aio=io_uring|threads"
expect 0 "$COWVM" create vm2 --kernel "$T/vmlinuz" --disk "$T/data.raw,ro,format=raw,cache=none,aio=threads" --no-serial

# list / show
expect 0 "$COWVM" list
has out "NAME"; has out "vm1"; has out "512 MiB"
[ "$(grep -c stopped "$T/out")" -eq 2 ] || fail "list: want 2 stopped VMs"
expect 0 "$COWVM" list --json
has out '"name": "vm1"'; has out '"memory": 536870912'; has out '"state": "stopped"'
if command -v python3 >/dev/null 2>&1; then
	python3 -m json.tool <"$T/out" >/dev/null || fail "list --json is not valid JSON"
fi
expect 0 "$COWVM" show vm1
has out "disk vda"; has out "root.raw (raw, 64 MiB)"; has out "read-only"; has out "tap=tap-vm1"
expect 0 "$COWVM" show vm2;        has out "cache=none"
expect 0 "$COWVM" show vm2 --json; has out '"cache": "none"'
expect 0 "$COWVM" dumpxml vm2;     has out 'cache="none"'; has out 'io="threads"'
expect 0 "$COWVM" show vm2;        has out "aio=threads"
expect 0 "$COWVM" show vm2 --json; has out '"aio": "threads"'
expect 0 "$COWVM" show vm1 --json
has out '"cmdline": "console=ttyS0 quiet"'; has out '"virtual_size": 67108864'
if command -v python3 >/dev/null 2>&1; then
	python3 -m json.tool <"$T/out" >/dev/null || fail "show --json is not valid JSON"
fi
expect 1 "$COWVM" show nosuch;   has err "no VM named 'nosuch'"
expect 2 "$COWVM" show;          has err "one NAME expected"
expect 2 "$COWVM" list --bogus

# dumpxml -> define elsewhere -> the same VM
expect 0 "$COWVM" dumpxml vm1;   has out "<domain type=\"kvm\">"
cp "$T/out" "$T/vm1.xml"
# the definition, not its history: drop timestamps and the event log
"$COWVM" show vm1 --json | sed '/"events"/,$d' | grep -v -e '"created"' -e '"updated"' >"$T/show1"
COWVM_HOME=$T/home2 "$COWVM" define "$T/vm1.xml" >/dev/null || fail "define of dumpxml output"
COWVM_HOME=$T/home2 "$COWVM" show vm1 --json | sed '/"events"/,$d' | grep -v -e '"created"' -e '"updated"' >"$T/show2"
cmp -s "$T/show1" "$T/show2" || fail "define(dumpxml) differs: $(diff "$T/show1" "$T/show2")"
# define over the same VM (same name and uuid) is a redefinition
expect 0 "$COWVM" define "$T/vm1.xml"; has out "defined VM 'vm1'"
sed 's/<vcpu placement="static">2</<vcpu placement="static">3</' "$T/vm1.xml" >"$T/vm1b.xml"
expect 0 "$COWVM" define "$T/vm1b.xml"
expect 0 "$COWVM" show vm1 --json; has out '"vcpus": 3'
expect 0 "$COWVM" define - <"$T/vm1.xml"
expect 1 "$COWVM" define "$COWVM_SRC/tests/xml/unsupported/graphics.xml"
has err "unsupported by cowvm"; has err "/domain/devices/graphics (line 13)"; has err "--ignore-unsupported"
expect 0 "$COWVM" define --ignore-unsupported "$COWVM_SRC/tests/xml/unsupported/graphics.xml"
has err "warning: ignored unsupported /domain/devices/graphics (line 13)"

# a VMM that dies is seen as crashed; an active VM cannot be removed
sleep 300 &
SLEEPER=$!
expect 0 "$HELPER" vm2 running "$SLEEPER"
touch "$COWVM_HOME/run/vm2.ctl"
expect 0 "$COWVM" list;          grep -q "^vm2 .*running .*$SLEEPER" "$T/out" || fail "vm2 not running: $(cat "$T/out")"
expect 1 "$COWVM" rm vm2;        has err "is running: stop it first"
kill -9 "$SLEEPER"; wait "$SLEEPER" 2>/dev/null
expect 0 "$COWVM" list;          grep -q "^vm2 .*crashed" "$T/out" || fail "vm2 not crashed: $(cat "$T/out")"
[ ! -e "$COWVM_HOME/run/vm2.ctl" ] || fail "stale control socket left behind"
expect 0 "$COWVM" show vm2 --json; has out '"state": "crashed"'; has out '"pid": null'
has out '"action": "crash-detected"'
expect 0 "$HELPER" vm2 running "$$"   # "started again"
expect 0 "$COWVM" list;          grep -q "^vm2 .*running" "$T/out" || fail "vm2 not running again"
# list asks each running VM's VMM for its state (query-status): one that
# never answers (it listens, never accepts; it accepts, never replies) or
# whose socket is not one costs list at most its half second, and the VM
# shows as the catalog says; a paused one shows why
for mode in listen accept; do
	rm -f "$COWVM_HOME/run/vm2.ctl"
	python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
c = s.accept() if sys.argv[2] == "accept" else None
time.sleep(30)' "$COWVM_HOME/run/vm2.ctl" $mode &
	STUCK=$!
	for ((i = 0; i < 50; i++)); do [ -S "$COWVM_HOME/run/vm2.ctl" ] && break; sleep 0.1; done
	t0=$(date +%s%N)
	expect 0 timeout 10 "$COWVM" list
	ms=$((($(date +%s%N) - t0) / 1000000))
	grep -q "^vm2 .*running" "$T/out" || fail "stuck VMM ($mode): vm2 not shown running: $(cat "$T/out")"
	[ "$ms" -lt 3000 ] || fail "list took $ms ms with a VMM that does not answer ($mode)"
	expect 0 timeout 10 "$COWVM" show vm2 --json; has out '"state": "running"'
	echo "ok: list with a VMM that does not answer ($mode): $ms ms"
	kill "$STUCK"; wait "$STUCK" 2>/dev/null
done
expect 0 "$HELPER" vm2 paused "$$"
expect 0 "$COWVM" list;          grep -q "^vm2 *paused (user) .*$$\$" "$T/out" || fail "vm2 not paused (user): $(cat "$T/out")"
[ "$("$COWVM" list | awk '$1 == "vm2" { print $2 }')" = paused ] || fail "list: column 2 of a paused VM"
expect 0 "$COWVM" list --json
grep -q '"name": "vm2", "uuid": "[0-9a-f-]*", "state": "paused", "reason": "user"' "$T/out" ||
	fail "list --json: vm2 not paused (user): $(cat "$T/out")"
expect 0 "$COWVM" show vm2;      grep -q "^state: *paused (user) (pid $$)" "$T/out" || fail "show vm2: $(cat "$T/out")"
rm -f "$COWVM_HOME/run/vm2.ctl"
expect 0 "$HELPER" vm2 stopped

# rm
expect 1 "$COWVM" rm nosuch;     has err "no VM named 'nosuch'"
expect 0 "$COWVM" rm vm2;        has out "removed VM 'vm2'"
[ -e "$T/data.raw" ] || fail "rm without --with-disks deleted a disk"
expect 0 "$COWVM" rm vm1 --with-disks
has out "deleted disk '$T/root.raw'"; has out "deleted disk '$T/data.raw'"
[ ! -e "$T/root.raw" ] || fail "rm --with-disks kept root.raw"
expect 0 "$COWVM" rm graphics

# parallel cowvm processes: 4 x 25 create + rm of every other one
for p in 1 2 3 4; do
	(
		for i in $(seq 1 25); do
			"$COWVM" create "p$p-$i" --kernel "$T/vmlinuz" --mem 64 >/dev/null || exit 1
			if [ $((i % 2)) -eq 1 ]; then "$COWVM" rm "p$p-$i" >/dev/null || exit 1; fi
		done
	) 2>"$T/par$p.err" &
done
wait
cat "$T"/par*.err >"$T/par.err"
[ ! -s "$T/par.err" ] || fail "parallel runs printed errors: $(head -5 "$T/par.err")"
grep -qi -e locked -e busy "$T/par.err" && fail "'locked' or 'busy' reached the user"
n=$("$COWVM" list | grep -c '^p[0-9]-')
[ "$n" -eq 48 ] || fail "after parallel create/rm: $n VMs, want 48"

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all CLI catalog checks passed"
