#!/usr/bin/env python3
"""bench/snapshot/snapq.py — the timing client of bench/snapshot/run.sh.

Connects to a VMM's control socket (QEMU's QMP or cowvm's, which has QMP's
shape), waits until the guest is in the state to measure, then sends
COUNT blockdev-snapshot-sync commands in a row, each into a new overlay
PREFIX-I.qcow2 (a chain growing one layer per command), and prints one line
per command:

    snap I us=MICROSECONDS state=busy|idle|late dirty_kb=KIB

us: wall time from just before the command is written to the socket until
its reply line has been read (the same client code for both VMMs).
state: for --wait busy, "busy" if the guest had not finished its write pass
when the reply came (--end-regex not on the console yet), else "late";
for --wait idle, "idle" if the reply came within --gap-ms of the last
console poll before the guest's --start-regex line (so surely inside the
guest's pause) and --end-regex is not on the console yet, else "late".
dirty_kb: /proc/meminfo's Dirty just before the command was sent (the
whole host's dirty page cache: what a flush may have to write).

Every wait is bounded (--timeout seconds for the whole run); any error
(no socket, an error reply, a timeout) is one line on stderr and exit 1.
Standard library only.
"""
import argparse
import json
import os
import re
import socket
import sys
import time


def die(msg):
    print("snapq: " + msg, file=sys.stderr)
    sys.exit(1)


class Gone(Exception):
    """The connection broke (the VMM exited or closed it)."""


class Conn:
    def __init__(self, path, deadline):
        self.deadline = deadline
        self.buf = b""
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except OSError as e:
                self.s.close()
                if time.monotonic() > deadline:
                    die("cannot connect to %s: %s" % (path, e))
                time.sleep(0.01)

    def line(self):
        """The next line that is not an event, as a dict."""
        while True:
            while b"\n" not in self.buf:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    die("timed out waiting for a reply")
                self.s.settimeout(left)
                try:
                    d = self.s.recv(65536)
                except socket.timeout:
                    die("timed out waiting for a reply")
                except OSError as e:
                    raise Gone("reading the socket: %s" % e)
                if not d:
                    raise Gone("the VMM closed the socket")
                self.buf += d
            ln, self.buf = self.buf.split(b"\n", 1)
            if not ln.strip():
                continue
            try:
                msg = json.loads(ln)
            except ValueError as e:
                die("not a JSON line (%s): %r" % (e, ln[:200]))
            if "event" in msg:
                continue
            return msg

    def send(self, obj):
        try:
            self.s.sendall((json.dumps(obj) + "\n").encode())
        except OSError as e:
            raise Gone("writing the socket: %s" % e)


def console_has(path, rx):
    try:
        with open(path, "rb") as f:
            return rx.search(f.read().decode("utf-8", "replace")) is not None
    except OSError:
        return False


def dirty_kb():
    """The host's dirty page cache (/proc/meminfo Dirty, whole machine)."""
    try:
        with open("/proc/meminfo") as f:
            for ln in f:
                if ln.startswith("Dirty:"):
                    return int(ln.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return -1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--kind", choices=["qemu", "cowvm"], required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, required=True)
    ap.add_argument("--console", required=True)
    ap.add_argument("--wait", choices=["idle", "busy"], required=True)
    ap.add_argument("--start-regex", default="phase 1 done")
    ap.add_argument("--end-regex", required=True)
    ap.add_argument("--gap-ms", type=int, default=0, help="idle: the guest's pause")
    ap.add_argument("--base", help="busy: the image whose allocation shows the writes started")
    ap.add_argument("--busy-bytes", type=int, default=32 << 20)
    a = ap.parse_args()

    deadline = time.monotonic() + a.timeout
    start = re.compile(a.start_regex, re.M)
    end = re.compile(a.end_regex, re.M)
    try:
        return run(a, deadline, start, end)
    except Gone as e:
        if console_has(a.console, end):
            die("%s, after the guest's '%s' line: the guest ended and its VMM with it"
                " before every snapshot was answered (the guest must write, or hold,"
                " longer)" % (e, a.end_regex))
        die(str(e))


def run(a, deadline, start, end):
    c = Conn(a.socket, deadline)
    greet = c.line()
    if a.kind == "qemu":
        if "QMP" not in greet:
            die("unexpected QMP greeting: %s" % greet)
        c.send({"execute": "qmp_capabilities"})
        r = c.line()
        if "return" not in r:
            die("qmp_capabilities: %s" % r)
    elif "cowvm" not in greet:
        die("unexpected cowvm greeting: %s" % greet)

    pause_end = None
    if a.wait == "idle":
        # the guest wrote its disk, flushed, and now spins without I/O for
        # --gap-ms; its pause began after the last poll that did not see
        # the line, so it may end --gap-ms after that poll: snapshots
        # answered later count as late
        # (if the first poll sees it, when the pause began is unknown:
        # every snapshot counts as late)
        last_miss = None
        while True:
            before = time.monotonic_ns()
            if console_has(a.console, start):
                break
            last_miss = before
            if time.monotonic() > deadline:
                die("no line matching '%s' on the console" % a.start_regex)
            time.sleep(0.01)
        pause_end = 0 if last_miss is None else last_miss + a.gap_ms * 1000000
    else:
        # the guest is writing: its disk image has grown
        while True:
            try:
                st = os.stat(a.base)
                if st.st_blocks * 512 >= a.busy_bytes:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                die("%s did not grow to %d bytes: the guest is not writing" % (a.base, a.busy_bytes))
            time.sleep(0.005)

    for i in range(1, a.count + 1):
        cmd = {"execute": "blockdev-snapshot-sync",
               "arguments": {"device": a.device,
                             "snapshot-file": "%s-%d.qcow2" % (a.prefix, i),
                             "format": "qcow2"}}
        dirty = dirty_kb()
        t0 = time.monotonic_ns()
        c.send(cmd)
        r = c.line()
        t1 = time.monotonic_ns()
        if "return" not in r:
            die("snapshot %d: %s" % (i, json.dumps(r)))
        late = console_has(a.console, end) or (pause_end is not None and t1 > pause_end)
        print("snap %d us=%d state=%s dirty_kb=%d" % (i, (t1 - t0) // 1000,
                                                      "late" if late else a.wait, dirty),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
