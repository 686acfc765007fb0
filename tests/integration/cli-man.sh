#!/bin/bash
# tests/integration/cli-man.sh — man/cowvm.1 is exactly what `cowvm help
# --man` prints (the same texts as `cowvm help CMD`), every command has a
# section, and the page renders without warnings.
# If this fails after a command was added or its help changed, regenerate:
#   build/cowvm help --man > man/cowvm.1
# timeout: 30
set -u
COWVM=${COWVM:-build/cowvm}
SRC=${COWVM_SRC:-.}
fails=0
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

"$COWVM" help --man >"$tmp" || { echo "help --man failed"; exit 1; }
if ! cmp -s "$tmp" "$SRC/man/cowvm.1"; then
	echo "FAIL: man/cowvm.1 is out of date; regenerate with: build/cowvm help --man > man/cowvm.1"
	diff "$SRC/man/cowvm.1" "$tmp" | head -20
	fails=$((fails + 1))
fi
for cmd in $("$COWVM" help | awk '/^commands:/ {on = 1; next} on && !NF {exit} on {print $1}'); do
	grep -qxF ".SS \"cowvm ${cmd//-/\\-}\"" "$SRC/man/cowvm.1" || {
		echo "FAIL: no section for '$cmd' in man/cowvm.1"; fails=$((fails + 1)); }
	"$COWVM" help "$cmd" >/dev/null || { echo "FAIL: help $cmd"; fails=$((fails + 1)); }
done
if command -v man >/dev/null 2>&1; then
	warn=$(MANWIDTH=80 man --warnings=all -l "$SRC/man/cowvm.1" 2>&1 >/dev/null)
	[ -z "$warn" ] || { echo "FAIL: man warnings: $warn"; fails=$((fails + 1)); }
fi
[ "$fails" -eq 0 ] || exit 1
echo "man page matches the help texts"
