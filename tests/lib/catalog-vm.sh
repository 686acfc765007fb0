# tests/lib/catalog-vm.sh — helpers for integration tests that drive VMs
# through the catalog (`cowvm create/start/list`) and its control sockets
# (sourced after tests/lib.sh). Sets COWVM_HOME and XDG_RUNTIME_DIR under
# $T, RUN (the control sockets' directory) and DB (the catalog).
export COWVM_HOME="$T/home"
export XDG_RUNTIME_DIR="$T/run"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
RUN="$XDG_RUNTIME_DIR/cowvm"
DB="$COWVM_HOME/catalog.db"
trap 'exit 1' TERM INT   # so that lib.sh's EXIT trap kills the VMMs

cv() { timeout 30 "$COWVM" "$@"; }
# expect STATUS ARGS...: `cowvm ARGS` exits STATUS (output in $T/out, $T/err)
expect() {
	local want=$1; shift
	cv "$@" >"$T/out" 2>"$T/err"; RC=$?
	[ "$RC" -eq "$want" ] || fail "'$*' exited $RC, want $want: $(cat "$T/out" "$T/err" | head -c 600)"
}
# the VMM that `cowvm start` reported in $T/out ("... (pid N)") killed at
# exit
track_started() { cleanup_pids+=("$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' "$T/out")"); }
state() { "$COWVM" list | awk -v n="$1" '$1 == n { print $2 }'; }
# wait_state VM STATE SECONDS
wait_state() {
	local i
	for ((i = 0; i < $3 * 10; i++)); do [ "$(state "$1")" = "$2" ] && return 0; sleep 0.1; done
	fail "$1 is '$(state "$1")' after $3 s, want '$2'"
}
# the catalog's lock held by sqlite3 for 9 s, from when this returns
# (the holder's pid in HOLDER, killed at exit)
lock_catalog() {
	local i
	{ echo "BEGIN EXCLUSIVE;"; echo "UPDATE vms SET name = name WHERE 0;"; sleep 9; echo "COMMIT;"; } |
		timeout 20 sqlite3 -cmd ".timeout 5000" "$DB" >"$T/holder.out" 2>&1 &
	HOLDER=$!
	cleanup_pids+=("$HOLDER")
	for ((i = 0; i < 50; i++)); do
		sqlite3 -cmd ".timeout 0" "$DB" "BEGIN IMMEDIATE; ROLLBACK;" >/dev/null 2>&1 || break
		sleep 0.05
	done
	[ "$i" -lt 50 ] || { cat "$T/holder.out"; fail "the catalog's lock was not taken by the sqlite3 holder"; }
}
