#!/usr/bin/env bash
# make bench: installs wal2json and GNU time, builds the release binaries and runs rowcast-bench
# (Sources/RowcastBench). `rowcast-bench run` starts a throwaway cluster, runs the
# sections and writes every measurement as a JSON line to .build/bench/results.jsonl;
# `rowcast-bench report` prints their tables and, after a run of every section,
# rewrites the generated regions of Docs/benchmarks.md (the hand-written reading of
# the figures beside them is left alone). Times are measured here, never in tests.
#
# BENCH_ROWS (default 1000000), BENCH_RUNS (3), BENCH_SECONDS (10) and
# BENCH_IDLE_CLIENTS (10000) shorten a trial run; BENCH_SECTIONS (e.g. "1 2", or
# "drain fanout") runs only those sections and prints them without writing
# Docs/benchmarks.md, whose figures all come from one full run. The servers listen on
# BENCH_PORT (8090) and the five ports after it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh time  # GNU time: the drained tools' peak RSS
major=$("$(pg_config --bindir)/postgres" --version | awk '{ split($3, v, "."); print v[1] }')
scripts/install-deps.sh "postgresql-$major-wal2json"

echo "bench: building release binaries" >&2
swift build -c release >&2

sections=${BENCH_SECTIONS:-1 2 3 4 5 6 7 8 9}
results=.build/bench/results.jsonl
.build/release/rowcast-bench run --sections "$sections" --output "$results" \
    --rows "${BENCH_ROWS:-1000000}" --runs "${BENCH_RUNS:-3}" --seconds "${BENCH_SECONDS:-10}" \
    --idle-clients "${BENCH_IDLE_CLIENTS:-10000}" --base-port "${BENCH_PORT:-8090}"
.build/release/rowcast-bench report --results "$results"

# shellcheck disable=SC2086 # the words of the list, whatever their spacing
set -- $sections
if [ "$*" != "1 2 3 4 5 6 7 8 9" ]; then
    echo "bench: sections $* only; Docs/benchmarks.md left as it is" >&2
    exit 0
fi
.build/release/rowcast-bench report --results "$results" --doc Docs/benchmarks.md
echo "bench: wrote the tables of Docs/benchmarks.md; read the prose beside them again" >&2
