#!/bin/sh
# mk/deps.sh — install the Debian packages cowvm needs, only those missing.
# Usage: mk/deps.sh build|test|all
# Runs apt-get as root (or through sudo). Prints what it installs.
set -eu

build_pkgs="gcc make pkg-config liburing-dev zlib1g-dev libzstd-dev libsqlite3-dev
libxml2-dev libjson-c-dev liblz4-dev liblzma-dev libxxhash-dev"
test_pkgs="qemu-utils qemu-system-x86 libvirt-clients busybox-static cpio acpica-tools
linux-image-cloud-amd64 jq"

case "${1:-all}" in
build) want="$build_pkgs" ;;
test|all) want="$build_pkgs $test_pkgs" ;;
fuzz) want="clang libclang-rt-14-dev" ;;
*) echo "usage: $0 build|test|all|fuzz" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
	if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed'; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
	SUDO=""
elif command -v sudo >/dev/null 2>&1; then
	SUDO="sudo"
else
	echo "cowvm: missing packages:$missing (run as root or install them)" >&2
	exit 1
fi
echo "cowvm: installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
