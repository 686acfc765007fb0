#!/bin/bash
# tests/integration/cli-list-probe.sh — `cowvm list` / `show` ask each running
# VM's VMM for its state (query-status, cli/cmd-list.c vm_probe), against fake
# VMMs (no KVM needed): 200 VMs paused on a disk error with few descriptors
# (RLIMIT_NOFILE 48: every one still asked, in turns; one VMM stuck among
# them does not keep the others from being asked), VMMs that send half a
# reply, answer "running" for a VM the catalog says is paused, garble the
# reply, close at once or say shutting-down (a VMM ending), a stale socket (ECONNREFUSED), a
# control path that is a file, a directory or a FIFO. list never hangs
# (bounded by its half second), never shows a running VM as paused, and a VM
# whose VMM does not answer shows as the catalog says.
# timeout: 120
. "$(dirname "$0")/../lib.sh"
need_cmd python3
export COWVM_HOME=$T/home
unset XDG_RUNTIME_DIR
N=200
echo kernel >"$T/vmlinuz"
"$HELPERS/cat_fill" $N "$T/vmlinuz" "$T/disks" >/dev/null || fail "cat_fill"
sleep 600 &
SL=$!
cleanup_pids+=("$SL")
ctl() { echo "$COWVM_HOME/run/bench-$(printf %05d "$1").ctl"; }
for ((i = 0; i < N; i++)); do
	"$HELPERS/cat_state" "bench-$(printf %05d $i)" running "$SL" || fail "cat_state $i"
done
mkdir -p "$COWVM_HOME/run"

# fake VMM: MODE READYFILE PATH...; answers query-status on every PATH
cat >"$T/fake.py" <<'EOF'
import json, selectors, socket, sys
mode, ready, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
sel = selectors.DefaultSelector()
for p in paths:
    s = socket.socket(socket.AF_UNIX)
    s.bind(p); s.listen(128); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, None)
if mode == "stale":          # bound, then gone: ECONNREFUSED
    sys.exit(0)
open(ready, "w").close()
status = {"status": "paused", "running": False, "reason": "io-error",
          "io-error": "disk 'x.qcow2': write failed: No space left on device"}
if mode == "running":
    status = {"status": "running", "running": True}
if mode == "stopping":       # cowvm stop under way
    status = {"status": "shutting-down", "running": False}
line = (json.dumps({"return": status}) + "\n").encode()
if mode == "garbage":
    line = b'{"return": "paused", "status": "paused"}\n'
while True:
    for key, _ in sel.select():
        if key.data is None:
            c, _ = key.fileobj.accept()
            if mode == "close":
                c.close(); continue
            c.sendall(b'{"QMP": {"version": "fake"}}\n')
            sel.register(c, selectors.EVENT_READ, "c")
            continue
        c = key.fileobj
        try:
            d = c.recv(4096)
        except OSError:
            d = b""
        if d and mode == "half":
            c.sendall(line[:len(line) // 2]); continue
        if d:
            c.sendall(line)
        sel.unregister(c); c.close()
EOF
# fake MODE FIRST LAST: serve VMs FIRST..LAST; sets FAKE
fake() {
	local paths=() i
	for ((i = $2; i <= $3; i++)); do rm -f "$(ctl $i)"; paths+=("$(ctl $i)"); done
	rm -f "$T/ready"
	python3 "$T/fake.py" "$1" "$T/ready" "${paths[@]}" &
	FAKE=$!
	cleanup_pids+=("$FAKE")
	[ "$1" = stale ] && { wait "$FAKE"; return; }
	for ((i = 0; i < 100; i++)); do [ -e "$T/ready" ] && return; sleep 0.1; done
	fail "fake VMM ($1) did not start"
}
# list_ms [LIMIT]: cowvm list (RLIMIT_NOFILE LIMIT) into $T/out; sets MS
list_ms() {
	local t0 rc
	t0=$(date +%s%N)
	(ulimit -n "${1:-1024}"; timeout 20 "$COWVM" list) >"$T/out" 2>"$T/err"
	rc=$?
	MS=$((($(date +%s%N) - t0) / 1000000))
	[ $rc -eq 0 ] || fail "list exited $rc: $(head -c 300 "$T/err")"
	[ "$MS" -lt 5000 ] || fail "list took $MS ms"
}
count() { grep -c -- "$1" "$T/out"; }

# 200 VMs paused on a disk error, 48 descriptors: each one asked
fake ioerror 0 $((N - 1))
# (up to 3 tries: a loaded machine may spend the half second elsewhere)
for try in 1 2 3; do
	list_ms 48
	[ "$(count 'paused (I/O error)')" -eq $N ] && break
done
[ "$(count 'paused (I/O error)')" -eq $N ] ||
	fail "RLIMIT_NOFILE 48: $(count 'paused (I/O error)') of $N VMs shown paused (I/O error), $(count ' running ') running"
note "200 VMs paused on a disk error, RLIMIT_NOFILE 48: all shown so in $MS ms"
list_ms
[ "$(count 'paused (I/O error)')" -eq $N ] || fail "$(count 'paused (I/O error)') of $N shown paused (I/O error)"
note "200 VMs, RLIMIT_NOFILE 1024: $MS ms"
expect_show() {
	(ulimit -n 48; timeout 20 "$COWVM" show "$1") >"$T/out" 2>&1 || fail "show $1: $(cat "$T/out")"
	grep -q "$2" "$T/out" || fail "show $1 lacks '$2': $(head -5 "$T/out")"
}
expect_show bench-00199 "^state: *paused (I/O error)"
expect_show bench-00199 "^io-error: *disk 'x.qcow2': write failed: No space left on device"
kill "$FAKE"; wait "$FAKE" 2>/dev/null

# one VMM that never finishes its reply among them: it costs the half
# second, the 199 others are still asked (and with 48 descriptors)
fake half 0 0
HALF=$FAKE
fake ioerror 1 $((N - 1))
for lim in 1024 48; do
	for try in 1 2 3; do
		list_ms $lim
		[ "$(count 'paused (I/O error)')" -eq $((N - 1)) ] && break
	done
	[ "$(count 'paused (I/O error)')" -eq $((N - 1)) ] ||
		fail "one stuck VMM, RLIMIT_NOFILE $lim: $(count 'paused (I/O error)') of $((N - 1)) shown paused (I/O error)"
	grep -q "^bench-00000 *running " "$T/out" || fail "the stuck VMM's VM: $(grep bench-00000 "$T/out")"
	note "one stuck VMM among 200, RLIMIT_NOFILE $lim: the 199 others shown paused (I/O error), $MS ms"
done
kill "$FAKE" "$HALF"; wait "$FAKE" "$HALF" 2>/dev/null

# each misbehaving VMM costs at most the half second; the VMs show as the
# catalog says (running), never paused
for mode in half garbage close stale stopping; do
	fake $mode 0 19
	list_ms
	[ "$(count ' running ')" -eq $N ] || fail "$mode: $(count ' running ') of $N shown running: $(grep -v ' running ' "$T/out" | head -3)"
	[ "$(count paused)" -eq 0 ] || fail "$mode: a VM shown paused"
	note "VMMs that $mode: $MS ms"
	[ "$mode" = stale ] || kill "$FAKE"
	wait "$FAKE" 2>/dev/null
done
# a control path that is no socket
rm -f "$(ctl 0)" "$(ctl 1)" "$(ctl 2)"
echo x >"$(ctl 0)"; mkdir "$(ctl 1)"; mkfifo "$(ctl 2)"
list_ms
[ "$(count ' running ')" -eq $N ] || fail "not a socket: $(count ' running ') of $N shown running"
note "control paths that are a file, a directory, a FIFO: $MS ms"
rm -rf "$(ctl 0)" "$(ctl 1)" "$(ctl 2)"

# the catalog says paused (cowvm pause), the VMM says running: running
"$HELPERS/cat_state" bench-00005 paused "$SL" || fail "cat_state paused"
fake running 5 5
list_ms
grep -q "^bench-00005 *running " "$T/out" || fail "VMM running, catalog paused: $(grep bench-00005 "$T/out")"
kill "$FAKE"; wait "$FAKE" 2>/dev/null
list_ms
grep -q "^bench-00005 *paused (user) " "$T/out" || fail "no VMM, catalog paused: $(grep bench-00005 "$T/out")"
echo "ok"
