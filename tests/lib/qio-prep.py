#!/usr/bin/env python3
# tests/lib/qio-prep.py — print qemu-io commands (one a line, for qemu-io -c)
# that leave a qcow2 image with a mix of normal, zero-with-host-offset
# (write -z), unmapped zero (write -z -u), discarded, partially written
# (subclusters with extended L2) and compressed (write -c) clusters, for
# tests to start from (tests/interop/storage-stress.sh).
#
# Usage: qio-prep.py SIZE CLUSTER_SIZE SEED   (same seed, same commands)
# Exit 0; 1 on a usage error.
import random
import sys

if len(sys.argv) != 4:
    sys.exit("usage: qio-prep.py SIZE CLUSTER_SIZE SEED")
size, cs, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
cmds = []
nclu = size // cs
for i in range(400):
    k = r.randrange(100)
    c = r.randrange(nclu)
    off = c * cs
    if k < 35:
        ln = cs * r.randint(1, 4)
        cmds.append(f"write -P {r.randrange(1, 256)} {off} {min(ln, size - off)}")
    elif k < 50:   # partial / subcluster writes
        o = off + 512 * r.randrange(cs // 512)
        ln = 512 * r.randint(1, max(1, cs // 512 // 4))
        if o + ln <= size:
            cmds.append(f"write -P {r.randrange(1, 256)} {o} {ln}")
    elif k < 62:   # zero, keep allocation
        ln = cs * r.randint(1, 3)
        cmds.append(f"write -z {off} {min(ln, size - off)}")
    elif k < 70:   # zero subcluster-ish, keep allocation
        o = off + 512 * r.randrange(cs // 512)
        ln = 512 * r.randint(1, max(1, cs // 512 // 2))
        if o + ln <= size:
            cmds.append(f"write -z {o} {ln}")
    elif k < 78:   # zero, unmapped
        ln = cs * r.randint(1, 3)
        cmds.append(f"write -z -u {off} {min(ln, size - off)}")
    elif k < 86:
        ln = cs * r.randint(1, 3)
        cmds.append(f"discard {off} {min(ln, size - off)}")
    else:
        if off + cs <= size:
            cmds.append(f"write -c -P {r.randrange(1, 256)} {off} {cs}")
for c in cmds:
    print(c)
