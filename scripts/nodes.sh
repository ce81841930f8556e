#!/usr/bin/env bash
# make nodes: three `rowcast serve` nodes behind HAProxy on one machine, to try what
# Docs/operations.md describes. A throwaway PostgreSQL cluster (wal_level=logical),
# table `items` with a row written every second, one slot per node, nodes on ports
# 8081-8083 and HAProxy on 8080. Open http://127.0.0.1:8080/, kill a node
# (`kill -9 PID`, printed below) and watch the page carry on. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh haproxy
bin=.build/debug/rowcast
[ -x "$bin" ] || swift build --product rowcast >&2

cluster=$("$bin" dev-cluster start --wal-level logical)
dir=${cluster%% *}
url=${cluster#* }
pids=()
work=$(mktemp -d)
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$bin" dev-cluster stop "$dir" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

psql -X -q -d "$url" -c "CREATE TABLE items (id bigserial PRIMARY KEY, note text, at timestamptz DEFAULT now())"
for n in 1 2 3; do
    "$bin" setup --mode replication --table items --slot "node$n" --publication items --db "$url" >/dev/null
done
for n in 1 2 3; do
    "$bin" serve --mode replication --table items --slot "node$n" --publication items \
        --port "808$n" --db "$url" --log-level warning \
        --max-connections-per-address 0 --requests-per-second-per-address 0 &  # every client comes through HAProxy: one address
    pids+=($!)
    echo "node $n: http://127.0.0.1:808$n/ (pid $!)"
done

servers=$(for n in 1 2 3; do echo "    server node$n 127.0.0.1:808$n check inter 200 fall 1 rise 2"; done)
awk -v servers="$servers" '$0 == "SERVERS" { print servers; next } { sub("FRONT_PORT", "8080"); print }' \
    scripts/haproxy-nodes.cfg >"$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" &
pids+=($!)
echo "HAProxy: http://127.0.0.1:8080/ (Ctrl-C stops everything)"

n=0
while true; do
    n=$((n + 1))
    psql -X -q -d "$url" -c "INSERT INTO items (note) VALUES ('row $n')" || true
    sleep 1
done
