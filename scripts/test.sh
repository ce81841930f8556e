#!/usr/bin/env bash
# make test: starts a throwaway PostgreSQL with wal_level=logical, runs the whole
# suite against it, and stops it however the suite ends.
#
# A watchdog guards the run: when no test has finished for ROWCAST_TEST_WATCHDOG
# seconds (default 240), it writes what was running, every thread's stack of the test
# process and of rowcast's children (gdb), and the last output of each child still
# alive into the log, ends the whole run, and exits 124. A hung suite then fails in
# minutes with its evidence, instead of at CI's time limit with none.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=.build/debug/rowcast
watchdog=${ROWCAST_TEST_WATCHDOG:-240}
logs=.build/test-logs/$(date -u +%Y%m%dT%H%M%SZ)-$$
mkdir -p "$logs/children"
log=$logs/run.log

cluster=$("$bin" dev-cluster start --wal-level logical)
dir=${cluster%% *}
url=${cluster#* }
session=""
cleanup() {
    # The run is a session of its own (swift test puts the test process in a process
    # group of its own, within the session): end whatever is left of it.
    [ -n "$session" ] && pkill -KILL -s "$session" 2>/dev/null || true
    "$bin" dev-cluster stop "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "rowcast: test cluster at $url; log in $log" >&2
export ROWCAST_TEST_DATABASE_URL="$url"
export ROWCAST_BIN="$PWD/$bin"
export ROWCAST_TEST_CHILD_LOGS="$PWD/$logs/children"

# The suite in its own session (so the watchdog can end all of it), its output in the
# log, shown as it comes: line-buffered, or a file would receive it in blocks and the
# watchdog would count finished tests late.
: >"$log"
setsid stdbuf -oL -eL swift test --skip-build "$@" >"$log" 2>&1 </dev/null &
session=$!
tail -n +1 -f --pid="$session" "$log" &
shown=$!

# Tests finish with "✔ Test … passed", "✘ Test … failed" or "… skipped" (Swift
# Testing) or "Test Case '…' passed/failed" (XCTest).
finished() { grep -cE "Test .*(passed|failed|skipped)|Test Case .*(passed|failed)" "$log" || true; }

# What the watchdog writes before it ends the run.
report() {
    echo
    echo "rowcast: watchdog: no test finished for ${watchdog} s; ending the run"
    echo "rowcast: watchdog: started and not finished:"
    # "◇ Test name() started." without a later "✔ Test name() passed …" (or failed,
    # skipped; "with N test cases" when parameterised, whose cases end unannounced).
    # Counted, not matched: two suites may have a test of the same name.
    awk '/^[^ ]+ Test [^ ]+\) started\.$/ { started[$3]++ }
         /^[^ ]+ Test [^ ]+\)( with [0-9]+ test cases?)? (passed|failed|skipped)/ { ended[$3]++ }
         END { for (name in started) if (started[name] > ended[name]) print "  " name }' "$log" | sort
    echo "rowcast: watchdog: processes of the run:"
    ps -o pid,ppid,etimes,stat,args -s "$session" | cut -c1-200
    local tests
    tests=$(pgrep -s "$session" -f 'PackageTests\.xctest' || true)
    for pid in $tests; do
        echo "rowcast: watchdog: every thread of the test process $pid:"
        if command -v gdb >/dev/null; then
            timeout 120 gdb -p "$pid" -batch -iex "set debuginfod enabled off" -ex "thread apply all bt" 2>&1 | grep -E "^Thread |^#|^$" | cat -s || true
        else
            echo "  (no gdb; the kernel's view of each thread)"
            for task in /proc/"$pid"/task/*; do echo "  $(cat "$task"/comm) $(cat "$task"/wchan 2>/dev/null)"; done
        fi
    done
    for file in "$logs"/children/*.log; do
        [ -e "$file" ] || continue
        local child
        child=$(basename "$file" .log)
        kill -0 "$child" 2>/dev/null || continue
        echo "rowcast: watchdog: child $child, still running: $(head -c 300 "$file" | head -n 1)"
        echo "  its last output:"
        tail -n 25 "$file" | cut -c1-300 | sed 's/^/    /'
        if command -v gdb >/dev/null && [ "$(basename "$(readlink "/proc/$child/exe" 2>/dev/null)")" = rowcast ]; then
            echo "  its threads:"
            timeout 60 gdb -p "$child" -batch -iex "set debuginfod enabled off" -ex "thread apply all bt 12" 2>&1 | grep -E "^Thread|^#" | cut -c1-200 | sed 's/^/    /' || true
        fi
    done
}

count=$(finished)
last=$SECONDS
while kill -0 "$session" 2>/dev/null; do
    sleep 5
    now=$(finished)
    if [ "$now" != "$count" ]; then
        count=$now
        last=$SECONDS
    elif [ $((SECONDS - last)) -ge "$watchdog" ]; then
        kill -STOP "$shown" 2>/dev/null || true
        report >"$logs/watchdog" 2>&1 || true
        pkill -KILL -s "$session" 2>/dev/null || true
        kill -CONT "$shown" 2>/dev/null || true
        wait "$shown" 2>/dev/null || true
        cat "$logs/watchdog" >&2
        echo "rowcast: watchdog: the run was ended; the report is also in $logs/watchdog" >&2
        exit 124
    fi
done
status=0
wait "$session" || status=$?
wait "$shown" 2>/dev/null || true
exit "$status"
