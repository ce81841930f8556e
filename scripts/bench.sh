#!/usr/bin/env bash
# make bench: release builds, a throwaway cluster, and side-by-side figures:
#   1. drain throughput of a 1,000,000-row backlog: rowcast tail vs pg_recvlogical with
#      pgoutput (the floor) vs pg_recvlogical with wal2json format 2;
#   2. fan-out: rowcast serve vs a bare Hummingbird broadcaster (rowcast-bench baseline),
#      measured by one load-client process (rowcast-bench load);
#   3. trigger mode's cost on the writer (pgbench);
#   4. peak RSS of rowcast during 1 and 2, and with a 64 MB row;
#   5. several nodes: drain time and walsender CPU with 1, 2 and 3 slots, and the WAL
#      a slot keeps for serve's resume window;
#   6. connections: serve's memory per idle client, and a burst of 1,000 arrivals.
# Prints a table and writes Docs/benchmarks.md. Times are measured here, never in tests.
#
# BENCH_ROWS (default 1000000), BENCH_RUNS (3) and BENCH_SECONDS (10) shorten a trial run;
# BENCH_SECTIONS (e.g. "1 2") runs only those sections and prints them without writing
# Docs/benchmarks.md, whose figures all come from one full run.
set -euo pipefail
cd "$(dirname "$0")/.."

rows=${BENCH_ROWS:-1000000}
sections=${BENCH_SECTIONS:-1 2 3 4 5 6}
want() { case " $sections " in *" $1 "*) return 0 ;; esac; return 1; }
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

# ---------------------------------------------------------------- 1. drain
if want 1; then
out "## 1. Drain throughput: a backlog per table shape (median of ${runs} runs)"
out ""
out "| table | rows | tool | seconds | rows/s | × floor | tool CPU | peak RSS |"
out "| --- | --- | --- | --- | --- | --- | --- | --- |"

drain_table() { # name, CREATE TABLE body, SELECT list for generate_series g, [rows]
    local name=$1 columns=$2 select=$3 rows=${4:-$rows}
    q "CREATE TABLE $name ($columns)"
    q "CREATE PUBLICATION pub_$name FOR TABLE $name" >/dev/null
    for run in $(seq "$runs"); do
        for plugin in pgoutput:rc pgoutput:pg wal2json:wj; do
            q "SELECT pg_create_logical_replication_slot('${plugin#*:}_${name}_$run', '${plugin%%:*}')" >/dev/null
        done
    done
    local batch=10000 start=1
    while [ "$start" -le "$rows" ]; do
        local end=$((start + batch - 1)); [ "$end" -gt "$rows" ] && end=$rows
        q "INSERT INTO $name SELECT $select FROM generate_series($start, $end) g"
        start=$((end + 1))
    done
    local endpos; endpos=$(q "SELECT pg_current_wal_lsn()")
    for tool in rc pg wj; do : >"$work/$name.$tool"; done
    for run in $(seq "$runs"); do
        for tool in rc pg wj; do
            local slot=${tool}_${name}_$run
            case $tool in
            rc) /usr/bin/time -f "%e %M %U %S" -o "$work/t" "$bin" tail --mode replication --slot "$slot" \
                    --publication "pub_$name" --endpos "$endpos" --db "$url" --log-level warning >/dev/null ;;
            pg) /usr/bin/time -f "%e %M %U %S" -o "$work/t" "$pgbin/pg_recvlogical" -d "$url" --slot "$slot" --start \
                    --endpos "$endpos" -o proto_version=1 -o "publication_names=pub_$name" -f /dev/null ;;
            wj) /usr/bin/time -f "%e %M %U %S" -o "$work/t" "$pgbin/pg_recvlogical" -d "$url" --slot "$slot" --start \
                    --endpos "$endpos" -o format-version=2 -o "add-tables=public.$name" -f /dev/null ;;
            esac
            tail -1 "$work/t" >>"$work/$name.$tool"
        done
    done
    local floor; floor=$(awk '{ print $1 }' "$work/$name.pg" | median)
    for tool in pg rc wj; do
        local secs rss cpu label
        secs=$(awk '{ print $1 }' "$work/$name.$tool" | median)
        rss=$(awk '{ print $2 }' "$work/$name.$tool" | sort -n | tail -1)
        cpu=$(awk '{ print $3 + $4 }' "$work/$name.$tool" | median)
        case $tool in rc) label="rowcast tail";; pg) label="pg_recvlogical pgoutput (floor)";; wj) label="pg_recvlogical wal2json 2";; esac
        out "| $name | $rows | $label | $secs | $(awk -v r="$rows" -v s="$secs" 'BEGIN { printf "%.0f", r / s }') | $(awk -v a="$secs" -v b="$floor" 'BEGIN { printf "%.2f", a / b }') | $cpu s | $((rss / 1024)) MB |"
    done
    q "DROP TABLE $name" >/dev/null
    for run in $(seq "$runs"); do
        for tool in rc pg wj; do q "SELECT pg_drop_replication_slot('${tool}_${name}_$run')" >/dev/null; done
    done
}

drain_table seed "id bigint PRIMARY KEY, title text" "g, 'row number ' || g"
drain_table wide "id bigint PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
    n numeric(20,6), b boolean, d date, ts timestamp, tz timestamptz, iv interval, u uuid, j jsonb,
    a integer[], ta text[], by bytea, ip inet, t1 text, t2 text" \
    "g, (g % 30000)::smallint, g::int, g * 1000, g / 7.0, g / 3.0, g / 11.0, g % 2 = 0, date '2026-01-01' + (g % 365),
    timestamp '2026-01-01' + g * interval '1 second', timestamptz '2026-01-01 UTC' + g * interval '1 second',
    g * interval '1 minute', md5(g::text)::uuid, jsonb_build_object('k', g, 'tags', jsonb_build_array('a', 'b')),
    ARRAY[g, g + 1, g + 2], ARRAY['x' || g, 'y'], decode(md5(g::text), 'hex'), '10.0.0.1'::inet,
    repeat(md5(g::text), 28), repeat('é', 100)"
# The shape of the performance issue: 20 typed columns, five 300-byte texts.
drain_table wide20 "id bigint PRIMARY KEY, i1 int, i2 int, i3 int, i4 int, t1 text, t2 text, t3 text, t4 text, t5 text,
    n1 numeric, n2 numeric, n3 numeric, tz timestamptz, j jsonb, b boolean, u uuid, f float8, d date, a int[]" \
    "g, g::int, (g * 7)::int, (g % 1000)::int, -g::int, repeat(md5(g::text), 9) || 'abcdefghijkl',
    repeat(md5((g + 1)::text), 9) || 'abcdefghijkl', repeat(md5((g + 2)::text), 9) || 'abcdefghijkl',
    repeat(md5((g + 3)::text), 9) || 'abcdefghijkl', repeat(md5((g + 4)::text), 9) || 'abcdefghijkl',
    g / 7.0, g * 1.25, g / 3.0, timestamptz '2026-01-01 UTC' + g * interval '1 second',
    jsonb_build_object('k', g, 'tags', jsonb_build_array('a', 'b'), 'name', 'n' || g), g % 2 = 0,
    md5(g::text)::uuid, g / 3.0::float8, date '2026-01-01' + (g % 365), ARRAY[g, g + 1, g + 2]::int[]" $((rows / 5))
# Long text (4 kB, with quotes and newlines to escape) and a 2 kB jsonb document.
drain_table long "id bigint PRIMARY KEY, body text, doc jsonb" \
    "g, repeat(md5(g::text) || E' \"quoted\"\\n', 96),
    (SELECT jsonb_object_agg('key' || k, md5((g * k)::text)) FROM generate_series(1, 40) k)" $((rows / 20))
out ""

fi

# ---------------------------------------------------------------- 2. fan-out
if want 2; then
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

for load in 1:100 100:100 1000:100 100:2000; do
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
    if [ "$clients" -ge 100 ]; then
        # The same server and writer, Socket.IO clients over WebSocket.
        measure "rowcast, Socket.IO" "$serve" "$clients" "$rate" --socketio --subscribe \
            --url "ws://127.0.0.1:8091/socket.io/?EIO=4&transport=websocket"
    fi
    kill "$writer" "$serve"; wait "$writer" "$serve" 2>/dev/null || true
done
out ""

fi

# ---------------------------------------------------------------- 3. trigger cost
if want 3; then
out "## 3. Trigger mode's cost on the writer: pgbench, 4 clients, ${seconds} s per figure (median of ${runs})"
out ""
out "Transactions/s of three statement shapes, and the ratio to the same table without a trigger."
out ""
out "| trigger | single-row INSERT | × none | INSERT … SELECT of 1,000 rows | × none | UPDATE of 1,000 rows | × none |"
out "| --- | --- | --- | --- | --- | --- | --- |"
# Each table its own sequence: ids 1..100,000 in every one of them.
for variant in none classic rowcast quiet; do q "CREATE TABLE trig_$variant (id bigserial PRIMARY KEY, title text)"; done
# 100,000 rows to update, loaded before any trigger exists.
for variant in none classic rowcast quiet; do
    q "INSERT INTO trig_$variant (title) SELECT 'a title of some forty characters or so' FROM generate_series(1, 100000)"
done
q "CREATE FUNCTION classic_notify() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN PERFORM pg_notify('bench_classic', NEW.title); RETURN NEW; END \$\$"
q "CREATE TRIGGER classic AFTER INSERT OR UPDATE ON trig_classic FOR EACH ROW EXECUTE FUNCTION classic_notify()"
"$bin" setup --mode trigger --table trig_rowcast --table trig_quiet --db "$url" >/dev/null
# Every notification has a listener, as in production; trig_quiet's has none (rowcast
# is stopped), which shows what listening itself costs.
"$bin" tail --mode trigger --channel bench_classic --db "$url" --log-level warning >/dev/null &
pids+=($!)
"$bin" tail --mode trigger --table trig_rowcast --db "$url" --log-level warning >/dev/null &
pids+=($!)
sleep 1
cat >"$work/trig.one" <<'SQL'
INSERT INTO trig_VARIANT (title) VALUES ('a title of some forty characters or so');
SQL
cat >"$work/trig.many" <<'SQL'
INSERT INTO trig_VARIANT (title) SELECT 'a title of some forty characters or so' FROM generate_series(1, 1000);
SQL
# Each client updates its own quarter of the table: no lock waits between clients.
cat >"$work/trig.update" <<'SQL'
\set first :client_id * 25000 + random(1, 24000)
UPDATE trig_VARIANT SET title = title WHERE id BETWEEN :first AND :first + 999;
SQL
for variant in none classic rowcast quiet; do
    for shape in one many update; do : >"$work/trig.$variant.$shape"; done
done
for run in $(seq "$runs"); do
    for variant in none classic rowcast quiet; do
        for shape in one many update; do
            sed "s/VARIANT/$variant/" "$work/trig.$shape" >"$work/trig.sql"
            "$pgbin/pgbench" -n -c 4 -j 2 -T "$seconds" -f "$work/trig.sql" "$url" 2>/dev/null \
                | awk '/^tps/ { print $3 }' >>"$work/trig.$variant.$shape"
        done
    done
done
declare -A label=([none]="none" [classic]="classic \`pg_notify(NEW.title)\`, per row" [rowcast]="rowcast, listening" [quiet]="rowcast, nobody listening")
for variant in none classic rowcast quiet; do
    line="| ${label[$variant]} |"
    for shape in one many update; do
        tps=$(median <"$work/trig.$variant.$shape")
        base=$(median <"$work/trig.none.$shape")
        line="$line $(printf "%.0f" "$tps") | $(awk -v a="$tps" -v b="$base" 'BEGIN { printf "%.2f", a / b }') |"
    done
    out "$line"
done
out ""

fi

# ---------------------------------------------------------------- 4. a 64 MB row
if want 4; then
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

fi

# ---------------------------------------------------------------- 5. several nodes
if want 5; then
nodes_rows=$((rows / 5))
out "## 5. Several nodes: each with its own slot (${nodes_rows}-row backlog)"
out ""
out "k \`rowcast tail\` processes drain the same backlog at once, each from its own slot, as k"
out "\`serve\` nodes would: wall time until all are done, and the CPU the walsenders used."
out ""
out "| slots | seconds | rows/s per slot | walsender CPU s (all) | per slot |"
out "| --- | --- | --- | --- | --- |"
q "CREATE TABLE nodes_t (id bigint PRIMARY KEY, title text)"
q "CREATE PUBLICATION pub_nodes FOR TABLE nodes_t" >/dev/null
for k in 1 2 3; do
    for i in $(seq "$k"); do q "SELECT pg_create_logical_replication_slot('nodes_${k}_$i', 'pgoutput')" >/dev/null; done
done
q "INSERT INTO nodes_t SELECT g, 'row number ' || g FROM generate_series(1, $nodes_rows) g"
endpos=$(q "SELECT pg_current_wal_lsn()")
postmaster=$(head -1 "$dir/data/postmaster.pid")
# A walsender's CPU reaches the postmaster's children total when it exits.
children_ticks() { awk '{ print $16 + $17 }' "/proc/$postmaster/stat"; }
for k in 1 2 3; do
    before=$(children_ticks)
    start=$(date +%s.%N)
    tails=()
    for i in $(seq "$k"); do
        "$bin" tail --mode replication --slot "nodes_${k}_$i" --publication pub_nodes --endpos "$endpos" \
            --db "$url" --log-level warning >/dev/null &
        tails+=($!)
    done
    wait "${tails[@]}"
    secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')
    sleep 1
    cpu=$(awk -v a="$before" -v b="$(children_ticks)" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')
    out "| $k | $secs | $(awk -v r="$nodes_rows" -v s="$secs" 'BEGIN { printf "%.0f", r / s }') | $cpu | $(awk -v c="$cpu" -v k="$k" 'BEGIN { printf "%.2f", c / k }') |"
done
for k in 1 2 3; do
    for i in $(seq "$k"); do q "SELECT pg_drop_replication_slot('nodes_${k}_$i')" >/dev/null; done
done
out ""
# WAL a slot keeps for a resume window of a given age at a steady write rate.
out "WAL kept by \`serve\`'s slot for its resume window: 200 single-row transactions/s for 70 s,"
out "\`--resume-window 100000 --resume-window-age 60\` (so age is the bound):"
"$bin" setup --mode replication --table nodes_t --slot nodes_wal --publication pub_nodes --db "$url" >/dev/null
"$bin" serve --mode replication --table nodes_t --slot nodes_wal --publication pub_nodes --port 8093 \
    --resume-window 100000 --resume-window-age 60 --status-interval 1 --db "$url" --log-level warning &
serve=$!; pids+=("$serve"); sleep 1
echo "INSERT INTO nodes_t VALUES (1000000000 + (random() * 1000000000)::bigint, 'steady') ON CONFLICT DO NOTHING;" >"$work/nodes.sql"
"$pgbin/pgbench" -n -R 200 -T 70 -c 1 -f "$work/nodes.sql" "$url" >/dev/null 2>&1
sleep 2
status=$(curl -s http://127.0.0.1:8093/status)
lag=$(echo "$status" | sed -n 's/.*"lag_bytes":\([0-9]*\).*/\1/p')
records=$(echo "$status" | sed -n 's/.*"window_records":\([0-9]*\).*/\1/p')
out "- window: ${records} records; slot holds back $(awk -v b="${lag:-0}" 'BEGIN { printf "%.1f", b / 1048576 }') MB of WAL (\`lag_bytes\`), about $(awk -v b="${lag:-0}" 'BEGIN { printf "%.0f", b / 60 / 1024 }') KB per second of window at this rate"
kill "$serve"; wait "$serve" 2>/dev/null || true
"$bin" slot drop nodes_wal --force --db "$url" >/dev/null 2>&1 || true
out ""

fi

# ---------------------------------------------------------------- 6. connections
if want 6; then
out "## 6. Connections: idle clients' memory, and a burst of arrivals"
out ""
q "CREATE TABLE idle (id int PRIMARY KEY)"
"$bin" setup --mode replication --table idle --slot idle --publication idle --db "$url" >/dev/null
"$bin" serve --mode replication --table idle --slot idle --publication idle --port 8094 --db "$url" --log-level warning &
serve=$!; pids+=("$serve"); sleep 1
curl -s http://127.0.0.1:8094/status >/dev/null
idle_clients=${BENCH_IDLE_CLIENTS:-10000}
# Resident memory of a server before and with idle_clients idle clients, and per client:
# "MB-before MB-with KB-per-client".
idle_memory() { # pid, port, load output file, load arguments...
    local pid=$1 port=$2 output=$3; shift 3
    local before after load
    before=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status")
    "$bench" load --clients "$idle_clients" --seconds 10 --url "ws://127.0.0.1:$port/ws" "$@" >"$output" &
    load=$!
    for _ in $(seq 600); do
        [ "$(ss -Htn state established "( sport = :$port )" | wc -l)" -ge "$idle_clients" ] && break
        sleep 0.1
    done
    sleep 2  # the last subscriptions answered, the clients idle
    after=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status")
    wait "$load"
    echo "$((before / 1024)) $((after / 1024)) $(( (after - before) / idle_clients ))"
}
read -r before with per_client < <(idle_memory "$serve" 8094 "$work/idle" --subscribe)
out "- ${idle_clients} idle WebSocket clients, each subscribed (\`rowcast-bench load --clients ${idle_clients} --subscribe\`, $(sed -n 's/.*"subscribed":\([0-9]*\).*/\1/p' "$work/idle") subscribed): serve's RSS $before MB before, $with MB with them, **$per_client KB per client**; all subscribed $(sed -n 's/.*"all_subscribed_s":\([0-9.]*\).*/\1/p' "$work/idle") s after the first connect"
kill "$serve"; wait "$serve" 2>/dev/null || true
# The same idle clients on the bare Hummingbird WebSocket server: the stack's own cost.
"$bench" baseline --port 8095 --rate 0.1 >/dev/null 2>&1 &
base=$!; pids+=("$base"); sleep 1
read -r before with per_client < <(idle_memory "$base" 8095 "$work/idle_base")
out "- the same ${idle_clients} idle clients on the bare Hummingbird WebSocket server (\`rowcast-bench baseline\`): $before MB before, $with MB with them, **$per_client KB per client**"
kill "$base"; wait "$base" 2>/dev/null || true
"$bin" serve --mode replication --table idle --slot idle --publication idle --port 8094 --db "$url" --log-level warning &
serve=$!; pids+=("$serve"); sleep 1
curl -s http://127.0.0.1:8094/status >/dev/null
"$bench" load --clients 1000 --seconds 1 --url ws://127.0.0.1:8094/ws --subscribe >"$work/burst"
out "- 1,000 clients connecting at once: all upgraded $(sed -n 's/.*"all_connected_s":\([0-9.]*\).*/\1/p' "$work/burst") s and all \`subscribed\` $(sed -n 's/.*"all_subscribed_s":\([0-9.]*\).*/\1/p' "$work/burst") s after the first connect"
kill "$serve"; wait "$serve" 2>/dev/null || true
out ""

fi

# ---------------------------------------------------------------- Docs/benchmarks.md
if [ "$sections" != "1 2 3 4 5 6" ]; then
    echo "bench: sections $sections only; Docs/benchmarks.md left as it is" >&2
    exit 0
fi
{
    echo "# Benchmarks"
    echo ""
    echo "Written by \`make bench\` (scripts/bench.sh) on $(date -u +%Y-%m-%d). Release builds;"
    echo "one throwaway PostgreSQL $pgver cluster with \`wal_level=logical\` on the same machine."
    echo ""
    echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)),"
    echo "$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) memory, Linux $(uname -r)."
    echo ""
    echo "Commands (see scripts/bench.sh for the exact flags): \`rowcast tail --mode replication"
    echo "--endpos LSN > /dev/null\`; \`pg_recvlogical --start --endpos LSN -o proto_version=1 -o"
    echo "publication_names=P -f /dev/null\` (pgoutput) and \`-o format-version=2\` (wal2json);"
    echo "\`rowcast serve --mode replication\` fed by \`pgbench -R RATE\`, against"
    echo "\`rowcast-bench baseline --rate RATE\`; \`rowcast-bench load --clients N\` measures both."
    echo "Each drain run uses its own slot, created before the backlog was loaded."
    echo ""
    cat "$report"
    cat <<'NOTES'
## Reading the figures

- **Drain.** Every tool waits on the same walsender, which decodes the WAL and runs
  the output plugin: that is the floor. rowcast finishes before `pg_recvlogical`
  with pgoutput on every shape, from one-column rows to 4 kB texts full of characters
  to escape, and on the wide shapes with no more CPU than `pg_recvlogical` spends
  writing to /dev/null. Two things got it there. It writes JSON with fewer steps:
  text escaped eight bytes at a time, clean runs copied whole and escapes through a
  stack buffer; column names escaped once per relation; cursors and LSNs written as
  hex into the output, no `String`s. And it reads the stream in large pieces: after a
  wakeup with data it waits half a millisecond and takes what came in up to 32 reads.
  Read the moment each message arrived, the stream came a message per wakeup, and
  the system calls on both ends of the socket slowed the walsender itself (1M
  one-column rows spent 2 s of `tail`'s 4 s of CPU in the kernel). Where `tail`'s time
  goes now (`perf record`, 200,000 `wide20` rows): rowcast's own code 51 % (row
  conversion 8 %, escaping 6 %, array appends 4 %, pgoutput decoding 8 %), reference
  counting 14 %, mostly the slice each column value keeps of its message, copies and
  allocation 12 %, the kernel 12 %. Next steps: column values as offsets into the
  message (no reference count per column), and the row's JSON written into the output
  buffer instead of built first.
- **Fan-out.** rowcast writes each client's queued frames on the connection's event
  loop, all at once with one flush (`ChannelFrameWriter`): a burst of records costs a
  client one system call, and no task runs per frame. The baseline is the bare
  Hummingbird broadcaster, which writes every frame through the WebSocket writer (a
  task switch and a flush per frame). At 1,000 clients and more its ticker is starved:
  it delivers a fraction of the frames it should (frames/s column) at full CPU, so its
  latency there is measured on a fraction of the load. rowcast carries the whole
  load, every row to every client, at under one core; its latency there adds the
  walsender's decoding to the time one record takes to reach 1,000 sockets (a
  `writev` each, on two event loops). pgbench `-R` draws arrivals at random, so
  rowcast's rows/s sits a few percent under the baseline's exact tick at the same
  nominal rate.
- **Socket.IO.** The `rowcast, Socket.IO` rows are the same server and writer as the
  `rowcast` row above them, with `rowcast-bench load --socketio`: each client opens
  `/socket.io/?EIO=4&transport=websocket`, joins the default namespace and sends
  `ready for data`, and counts the `42["update",…]` packets. They keep pace with `/ws`
  at every load: the broadcaster builds one Socket.IO packet per record, shared by
  every Socket.IO client, and writes it through the same event-loop writer. The
  frames/s of the two rows differ by what pgbench's random arrivals delivered in
  each 10 s; the server peak RSS is the process's peak so far, `/ws` run included.
- **Trigger mode** costs the writer, per statement, one INSERT of the statement's
  rows (as `to_json`) into the unlogged `rowcast.changes`, and one NOTIFY per
  transaction carrying only its id. The classic trigger sends a title, not the row,
  and writes nothing; rowcast writes every row a second time, which is what keeps
  rows away from roles that may not read them (LISTEN needs no privilege). Where the
  time goes, measured with variants of the function: not the `SET` clauses,
  `SECURITY DEFINER` or the per-transaction counter (each within noise), but the
  INSERT itself, one heap and one index tuple per change. Next steps: one
  `rowcast.changes` row per statement chunk (`json_agg`; a prototype reached 1.1× the
  classic trigger on 1,000-row INSERTs) with chunks bounded by size so no statement
  can exceed PostgreSQL's 1 GB per value, and the table's oid in place of two name
  columns.
- **A 64 MB row.** libpq grows its input buffer to the largest message and never
  shrinks it, and `PQgetCopyData` returns a second copy, which rowcast copies once
  more into the array it decodes: at that moment `tail` holds the row three times.
  The message is released before its record reaches the sink, so `serve` holds it as
  libpq's buffer, the row's JSON and the frame every client shares (it was four times
  before). Under the row plus 64 MB needs decoding straight from libpq's copy and
  writing the row's JSON to the output as it is converted; under libpq's own buffer
  needs reading the replication stream without libpq's COPY API.
- **Connections.** An idle subscribed client costs serve about what a connection of
  the bare Hummingbird WebSocket server costs (the line below it): the channel and
  its handlers, the connection's task and the WebSocket session's reader. Getting
  under 30 KB means fewer tasks per connection than the stack gives each, and a
  smaller receive buffer per idle socket. A burst of 1,000 arrivals is served well
  inside a second.
NOTES
} >Docs/benchmarks.md
echo "bench: wrote Docs/benchmarks.md" >&2
