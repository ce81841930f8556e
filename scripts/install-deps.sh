#!/usr/bin/env bash
# Installs what building and testing rowcast needs, from the system packages, when
# it is missing: PostgreSQL's server binaries, libpq-dev and pkg-config. Idempotent.
set -euo pipefail

missing=()
have_initdb=false
for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && have_initdb=true
done
command -v initdb >/dev/null 2>&1 && have_initdb=true
$have_initdb || missing+=(postgresql postgresql-contrib)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists libpq 2>/dev/null || missing+=(libpq-dev)
for extra in "$@"; do
    dpkg -s "$extra" >/dev/null 2>&1 || missing+=("$extra")
done

[ ${#missing[@]} -eq 0 ] && exit 0

echo "rowcast: installing ${missing[*]} from the system packages" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
