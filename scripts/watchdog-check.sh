#!/usr/bin/env bash
# Shows that make test's watchdog ends a hung run: runs WatchdogTests' test that hangs
# for good with a 20-second watchdog, and checks that scripts/test.sh ended it with exit
# 124, named the test and the wait it was in, and wrote the test process's stacks (gdb).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
started=$SECONDS
status=0
ROWCAST_TEST_HANG=1 ROWCAST_TEST_WATCHDOG=${ROWCAST_TEST_WATCHDOG:-20} scripts/test.sh --filter WatchdogTests >"$out" 2>&1 || status=$?
fail() { echo "watchdog-check: $1"; tail -n 40 "$out"; exit 1; }
[ "$status" -eq 124 ] || fail "scripts/test.sh exited $status, not 124"
grep -q "^  awaitsAContinuationThatIsNeverResumed()" "$out" || fail "the report does not name the hung test"
grep -q "^Thread 1 " "$out" || fail "the report has no thread stacks"
# (What the wait had seen is written once it is 10 s old: not asserted, it may be younger.)
grep -qE "^  [0-9]+ s: a continuation that nobody resumes" "$out" || fail "the report does not show the wait the test was in"
echo "watchdog-check: the watchdog ended the hung run after $((SECONDS - started)) s with exit 124, naming the test and its wait, with $(grep -c '^Thread ' "$out") thread stacks"
