#!/usr/bin/env bash
# make test: starts a throwaway PostgreSQL with wal_level=logical, runs the whole
# suite against it, and stops it however the suite ends.
#
# A watchdog guards the run: when no test has finished for ROWCAST_TEST_WATCHDOG
# seconds (default 300, the longest time limit a suite sets), it writes what was
# running, every thread's stack of the test process and of rowcast's children (gdb),
# and the last output of each child still alive into the log, ends the whole run, and
# exits 124. A hung suite then fails in minutes with its evidence, instead of at CI's
# time limit with none. Docs/development.md, "The watchdog".
set -euo pipefail
cd "$(dirname "$0")/.."

bin=.build/debug/rowcast
watchdog=${ROWCAST_TEST_WATCHDOG:-300}
[[ $watchdog =~ ^[1-9][0-9]*$ ]] || { echo "rowcast: ROWCAST_TEST_WATCHDOG must be a number of seconds, not \"$watchdog\"" >&2; exit 2; }
logs=.build/test-logs/$(date -u +%Y%m%dT%H%M%SZ)-$$
mkdir -p "$logs/children"
log=$logs/run.log
# The logs of the last 20 runs are kept.
ls -1d .build/test-logs/*/ 2>/dev/null | sort | head -n -20 | xargs -r rm -rf

# Everything the run makes in the temporary folder (clusters that tests start, browser
# profiles) goes in one of its own, so that what a killed run leaves there can be found
# and removed: a test's own PostgreSQL runs in a session of its own, out of reach of
# the kill below. Short, for the clusters' socket paths; readable by postgres.
TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/rowcast-test.XXXXXX")
chmod 755 "$TMPDIR"
export TMPDIR

cluster=""
session=""
guardian=""
cleanup() {
    local status=$?
    # The run is a session of its own (swift test puts the test process in a process
    # group of its own, within the session): end whatever is left of it.
    [ -n "$session" ] && pkill -KILL -s "$session" 2>/dev/null || true
    [ -n "$guardian" ] && kill "$guardian" 2>/dev/null || true
    [ -n "$cluster" ] && { "$bin" dev-cluster stop "${cluster%% *}" || true; }
    stop_leftovers
    exit "$status"
}

# Clusters a killed test left running (a postmaster whose command line names the data
# folder of its pid file, not whatever process has that pid now), then their folder.
stop_leftovers() {
    local pidfile pid
    for pidfile in "$TMPDIR"/*/postmaster.pid "$TMPDIR"/*/*/postmaster.pid; do
        [ -e "$pidfile" ] || continue
        pid=$(head -n 1 "$pidfile")
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$(dirname "$pidfile")" && kill -KILL "$pid" 2>/dev/null
    done
    rm -rf "$TMPDIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cluster=$("$bin" dev-cluster start --wal-level logical)
url=${cluster#* }
echo "rowcast: test cluster at $url; log in $log" >&2
export ROWCAST_TEST_DATABASE_URL="$url"
export ROWCAST_BIN="$PWD/$bin"
export ROWCAST_TEST_CHILD_LOGS="$PWD/$logs/children"
export ROWCAST_TEST_WAITS="$PWD/$logs/waits"
# serve keeps its resume window under XDG_STATE_HOME: the run's own, removed with it.
# Its log is not flushed to the disk, as the test clusters run with fsync = off: a
# flush per catch-up in every serve of the suite, beside the WAL some tests write,
# once stalled every process on the machine (tests that need it pass --window-fsync).
export XDG_STATE_HOME="$TMPDIR/state"
export ROWCAST_WINDOW_FSYNC=never

# The suite in its own session (so the watchdog can end all of it), its output in the
# log, shown as it comes: line-buffered, or a file would receive it in blocks and the
# watchdog would count finished tests late.
: >"$log"
# With no filter, the heavy CLI suites run after the rest, alone (SnapshotLoadTests:
# writers at full speed beside fifty clients, a million rows; SnapshotTests: tables of
# 10 MB rows, browsers; RowRuleServeTests: two hundred clients per mode; a 60,000-row
# transaction to a reader beside a stalled one): beside the rest they starved tests
# whose deadlines are minutes long (or, the last, were starved).
runs=1
if [ $# -eq 0 ]; then
    runs=2
    setsid stdbuf -oL -eL bash -c '
        heavy="RowcastCLITests\.(Snapshot(Load)?Tests|RowRuleServeTests|ServeFaultTests/aLargeTransaction)"
        swift test --skip-build --skip "$heavy"; first=$?
        swift test --skip-build --filter "$heavy"; second=$?
        [ "$first" -ne 0 ] && exit "$first"; exit "$second"
    ' >"$log" 2>&1 </dev/null &
else
    setsid stdbuf -oL -eL swift test --skip-build "$@" >"$log" 2>&1 </dev/null &
fi
session=$!
tail -n +1 -f --pid="$session" "$log" &
shown=$!

# If this script is killed outright (SIGKILL: no trap runs), the session it started
# would run on for ever, out of reach of a kill of this script's process group. A
# guardian in a session of its own ends it, and the clusters, once this script is gone.
setsid bash -c '
    while kill -0 "$1" 2>/dev/null; do
        kill -0 "$2" 2>/dev/null || exit 0
        sleep 2
    done
    pkill -KILL -s "$2"
    for pidfile in "$3"/*/postmaster.pid "$3"/*/*/postmaster.pid; do
        [ -e "$pidfile" ] || continue
        pid=$(head -n 1 "$pidfile")
        tr "\\0" " " <"/proc/$pid/cmdline" | grep -qF -- "$(dirname "$pidfile")" && kill -KILL "$pid"
    done
    rm -rf "$3"
' guardian "$$" "$session" "$TMPDIR" </dev/null >/dev/null 2>&1 &
guardian=$!

# Tests finish with "✔ Test … passed", "✘ Test … failed" or "… skipped" (Swift
# Testing) or "Test Case '…' passed/failed" (XCTest).
finished() { grep -cE "Test .*(passed|failed|skipped)|Test Case .*(passed|failed)" "$log" || true; }

alive() { [ -d "/proc/$1" ] && [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# Every thread's stack of a process, or, when gdb cannot attach, the kernel's view.
stacks() {
    local pid=$1 depth=$2 out=""
    command -v gdb >/dev/null && out=$(timeout -k 10 120 gdb -p "$pid" -batch -iex "set debuginfod enabled off" \
        -ex "thread apply all bt $depth" 2>&1 | grep -E "^Thread |^#|^$|ptrace|[Cc]ould not attach|not permitted" | cat -s || true)
    if grep -q "^Thread " <<<"$out"; then
        echo "$out"
    else
        echo "$out"
        echo "  (no stacks from gdb; each thread's name and kernel wait channel)"
        for task in /proc/"$pid"/task/*; do echo "  $(cat "$task/comm" 2>/dev/null) $(cat "$task/wchan" 2>/dev/null)"; done
    fi
}

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
    if [ "$(grep -cE "Test run with .* (passed|failed)" "$log")" -ge "$runs" ]; then
        echo "  (none: every test ended; a process that holds the run's output keeps swift test waiting)"
    fi
    echo "rowcast: watchdog: waits in progress in the test process (age, what, what was seen):"
    cat "$logs/waits" 2>/dev/null || echo "  (no record: the process wrote none)"
    echo "rowcast: watchdog: processes of the run:"
    ps -o pid,ppid,etimes,stat,args -s "$session" | cut -c1-200
    local pid
    for pid in $(pgrep -s "$session" -f 'PackageTests\.xctest' || true); do
        echo "rowcast: watchdog: every thread of the test process $pid:"
        stacks "$pid" ""
    done
    local file child
    for file in "$logs"/children/*.log; do
        [ -e "$file" ] || continue
        child=$(basename "$file" .log)
        alive "$child" || continue
        echo "rowcast: watchdog: child $child, still running: $(head -c 300 "$file" | head -n 1)"
        echo "  its last output:"
        tail -n 25 "$file" | cut -c1-300 | sed 's/^/    /'
        if [ "$(basename "$(readlink "/proc/$child/exe" 2>/dev/null)")" = rowcast ]; then
            echo "  its threads:"
            stacks "$child" 12 | cut -c1-200 | sed 's/^/    /'
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
