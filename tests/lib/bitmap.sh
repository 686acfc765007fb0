# tests/lib/bitmap.sh — persistent dirty bitmaps as QEMU reads them (sourced
# by tests/lib/cow.sh and by integration tests; needs qemu-nbd, qemu-img, jq).

# bm_dirty IMG NAME: the dirty areas of bitmap NAME as QEMU reads them
# (qemu-nbd exports it, qemu-img map shows it as "data": false); in the
# current directory (nbd.sock, nbd.log)
bm_dirty() {
	local sock=$PWD/nbd.sock p i
	rm -f "$sock"
	timeout 30 qemu-nbd -r -f qcow2 -k "$sock" -B "$2" -t "$1" >nbd.log 2>&1 &
	p=$!
	for ((i = 0; i < 100; i++)); do
		[ -S "$sock" ] && break
		sleep 0.05
	done
	timeout 30 qemu-img map --output=json --image-opts \
		"driver=nbd,server.type=unix,server.path=$sock,x-dirty-bitmap=qemu:dirty-bitmap:$2" |
		jq -c '[.[] | select(.data == false) | [.start, .length]]'
	kill "$p" 2>/dev/null
	wait "$p" 2>/dev/null
	return 0
}
