#!/bin/bash
# tests/linux/mkinitramfs.bash — build the Linux boot check's initramfs.
#
# Usage: mkinitramfs.bash OUTPUT.cpio.gz [KERNEL_VERSION]
#
# A gzip'd cpio (newc) archive with Debian's static busybox as the only
# program, an /init that mounts /proc and /sys, prints "cowvm-linux: init ok",
# loads the virtio modules of KERNEL_VERSION (copied from /lib/modules with
# their dependencies when present), and ends the VM: `poweroff -f` when the
# guest has ACPI, else `reboot -f`, which resets through the i8042 (port 0x64,
# 0xFE): cowvm then exits 0 (core/layout.h). Without ACPI, Linux cannot power
# off; `poweroff -f` would return to a panic ("Attempted to kill init").
# Not a test itself (tests/run.sh only runs *.sh).
set -euo pipefail

out=${1:?usage: mkinitramfs.bash OUTPUT.cpio.gz [KERNEL_VERSION]}
kver=${2:-}
busybox=${BUSYBOX:-/bin/busybox}

[ -x "$busybox" ] || { echo "mkinitramfs: no $busybox (apt-get install busybox-static)" >&2; exit 2; }
if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
	# `file` may be missing; ldd says "not a dynamic executable" for static ones.
	if ldd "$busybox" >/dev/null 2>&1; then
		echo "mkinitramfs: $busybox is dynamically linked; need busybox-static" >&2
		exit 2
	fi
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/cowvm-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,lib/modules}
cp "$busybox" "$stage/bin/busybox"
# The kernel opens /dev/console for init before /init runs; make the node when
# we can (root), and /init also mounts devtmpfs as a fallback.
mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || true

mods="virtio_pci virtio_blk virtio_net virtio-rng"
if [ -n "$kver" ] && [ -f "/lib/modules/$kver/modules.dep" ]; then
	src=/lib/modules/$kver
	dst=$stage/lib/modules/$kver
	mkdir -p "$dst"
	: >"$dst/modules.dep"
	declare -A seen=()
	for m in $mods; do
		# modules.dep line: "kernel/.../name.ko[.xz]: dep1 dep2 ..."
		line=$(grep -E "/${m}\.ko(\.[a-z]+)?:" "$src/modules.dep" | head -n 1 || true)
		[ -n "$line" ] || continue
		for f in ${line%%:*} ${line#*:}; do
			[ -n "${seen[$f]:-}" ] && continue
			seen[$f]=1
			mkdir -p "$dst/$(dirname "$f")"
			cp "$src/$f" "$dst/$f"
			grep -E "^${f}:" "$src/modules.dep" >>"$dst/modules.dep"
		done
	done
fi

cat >"$stage/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev 2>/dev/null
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "cowvm-linux: init ok (kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpu(s))"
loaded=
if [ -d "/lib/modules/$(uname -r)" ]; then
	for m in virtio_pci virtio_blk virtio_net virtio_rng; do
		modprobe "$m" 2>/dev/null && loaded="$loaded $m"
	done
	echo "cowvm-linux: modules loaded:${loaded:- none}"
else
	echo "cowvm-linux: no modules for $(uname -r) in the initramfs"
fi
echo "cowvm-linux: powering off"
[ -d /sys/firmware/acpi ] && poweroff -f
reboot -f
sleep 5
echo "cowvm-linux: still running after reboot -f"
INIT
chmod 755 "$stage/init"

mkdir -p "$(dirname "$out")"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) |
	gzip -9n >"$out.tmp"
mv "$out.tmp" "$out"
echo "mkinitramfs: $out ($(stat -c %s "$out") bytes, modules for ${kver:-none})"
