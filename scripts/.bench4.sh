#!/usr/bin/env bash
# make bench: release builds, a throwaway cluster, and side-by-side figures:
#   1. drain throughput of a 1,000,000-row backlog: rowcast tail vs pg_recvlogical with
#      pgoutput (the floor) vs pg_recvlogical with wal2json format 2;
#   2. fan-out: rowcast serve vs a bare Hummingbird broadcaster (rowcast-bench baseline),
#      measured by one load-client process (rowcast-bench load);
#   3. trigger mode's cost on the writer (pgbench);
#   4. peak RSS of rowcast during 1 and 2, and with a 64 MB row;
#   5. several nodes: drain time and walsender CPU with 1, 2 and 3 slots, and the WAL
#      a slot keeps for serve's resume window.
# Prints a table and writes Docs/benchmarks.md. Times are measured here, never in tests.
#
# BENCH_ROWS (default 1000000), BENCH_RUNS (3) and BENCH_SECONDS (10) shorten a trial run.
set -euo pipefail
cd "$(dirname "$0")/.."

rows=${BENCH_ROWS:-1000000}
runs=${BENCH_RUNS:-3}
seconds=${BENCH_SECONDS:-10}

pgver=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
scripts/install-deps.sh "postgresql-${pgver:-15}-wal2json"
pgver=$(ls /usr/lib/postgresql | sort -n | tail -1)
pgbin=/usr/lib/postgresql/$pgver/bin

echo "bench: building release binaries" >&2
swift build -c release >&2
bin=$PWD/.build/release/rowcast
bench=$PWD/.build/release/rowcast-bench

cluster=$("$bin" dev-cluster start --wal-level logical)
dir=${cluster%% *}
url=${cluster#* }
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    "$bin" dev-cluster stop "$dir" >/dev/null 2>&1 || true
}
trap cleanup EXIT
work=$(mktemp -d)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

q() { psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$url" -c "$1"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hwm_mb() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

q "ALTER SYSTEM SET max_wal_size = '8GB'" >/dev/null
q "ALTER SYSTEM SET checkpoint_timeout = '30min'" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null

report=$work/report.md
: >"$report"
out() { echo "$*" | tee -a "$report"; }

# ---------------------------------------------------------------- 4. a 64 MB row
out "## 4. Peak RSS with one 64 MB row"
out ""
q "CREATE TABLE huge (id int PRIMARY KEY, body text)"
"$bin" setup --mode replication --table huge --slot huge --publication huge --db "$url" >/dev/null
q "INSERT INTO huge VALUES (1, repeat('x', 64 * 1024 * 1024))"
endpos=$(q "SELECT pg_current_wal_lsn()")
/usr/bin/time -f "%e %M %U %S" -o "$work/t" "$bin" tail --mode replication --slot huge --publication huge --endpos "$endpos" --db "$url" --log-level warning >/dev/null
out "- \`rowcast tail\`: peak RSS $(awk '{ printf "%.0f", $2 / 1024 }' "$work/t") MB ($(awk '{ print $1 }' "$work/t") s)"
# serve, with one subscribed client receiving the row.
"$bin" serve --mode replication --table huge --slot huge --publication huge --port 8092 --db "$url" --log-level warning &
serve=$!; pids+=("$serve"); sleep 1
"$bench" load --clients 1 --seconds 4 --url ws://127.0.0.1:8092/ws --subscribe >"$work/load" &
load=$!; sleep 2
q "INSERT INTO huge VALUES (2, repeat('y', 64 * 1024 * 1024))"
wait "$load"
out "- \`rowcast serve\` sending it to one client: peak RSS $(hwm_mb "$serve") MB, $(awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$serve/status") MB afterwards (the frame stays in the resume window)"
kill "$serve"; wait "$serve" 2>/dev/null || true
out ""

