#!/usr/bin/env bash
# make test: starts a throwaway PostgreSQL with wal_level=logical, runs the whole
# suite against it, and stops it however the suite ends.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=.build/debug/rowcast
cluster=$("$bin" dev-cluster start --wal-level logical)
dir=${cluster%% *}
url=${cluster#* }
trap '"$bin" dev-cluster stop "$dir"' EXIT

echo "rowcast: test cluster at $url" >&2
export ROWCAST_TEST_DATABASE_URL="$url"
export ROWCAST_BIN="$PWD/$bin"
swift test --skip-build "$@"
