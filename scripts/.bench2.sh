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

# ---------------------------------------------------------------- 2. fan-out
out "## 2. Fan-out: frames delivered per second and commit-to-client latency (${seconds} s each)"
out ""
out "| server | clients | rows/s | frames/s | p50 ms | p99 ms | max ms | server CPU | load-client CPU | server peak RSS |"
out "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
q "CHECKPOINT"  # not in the middle of a fan-out run
q "CREATE TABLE fanout (id bigserial PRIMARY KEY, title text)"
"$bin" setup --mode replication --table fanout --slot fanout --publication fanout --db "$url" >/dev/null
echo "INSERT INTO fanout (title) VALUES ('row from pgbench, about as long as a title');" >"$work/fanout.sql"

measure() { # label, pid, clients, rate, load arguments...
    local label=$1 pid=$2 clients=$3 rate=$4; shift 4
    local before after start end result
    before=$(cpu_ticks "$pid"); start=$(date +%s.%N)
    result=$("$bench" load --clients "$clients" --seconds "$seconds" "$@")
    after=$(cpu_ticks "$pid"); end=$(date +%s.%N)
    local cpu; cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f%%", t / hz / (e - s) * 100 }')
    echo "$result" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
label, clients, rate, cpu, rss = sys.argv[1:6]
print("| %s | %s | %s | %s | %s | %s | %s | %s | %s%% | %s MB |" % (label, r["clients"], rate, r["frames_per_s"],
      r["p50_ms"], r["p99_ms"], r["max_ms"], cpu, r["cpu_percent"], rss))
' "$label" "$clients" "$rate" "$cpu" "$(hwm_mb "$pid")" | tee -a "$report"
}

for load in ${LOADS:-1:100 100:100 1000:100 100:2000}; do
    clients=${load%%:*} rate=${load#*:}
    "$bench" baseline --port 8090 --rate "$rate" >/dev/null 2>&1 &
    base=$!; pids+=("$base"); sleep 1
    measure "baseline" "$base" "$clients" "$rate" --url ws://127.0.0.1:8090/ws
    kill "$base"; wait "$base" 2>/dev/null || true

    "$bin" serve --mode replication --table fanout --slot fanout --publication fanout --port 8091 --db "$url" --log-level warning &
    serve=$!; pids+=("$serve"); sleep 1
    "$pgbin/pgbench" -n -R "$rate" -T 600 -c 2 -j 1 -f "$work/fanout.sql" "$url" >/dev/null 2>&1 &
    writer=$!; pids+=("$writer")
    measure "rowcast" "$serve" "$clients" "$rate" --url ws://127.0.0.1:8091/ws --subscribe
    kill "$writer" "$serve"; wait "$writer" "$serve" 2>/dev/null || true
done
out ""

