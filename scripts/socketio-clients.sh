#!/usr/bin/env bash
# Fetches the two real Socket.IO clients the tests drive, when missing (npm is not
# needed): the official socket.io-client 4.8.1 browser bundle, which the Python
# package nicegui 3.18.0 ships as nicegui/static/socket.io.min.js, and python-socketio
# 5.18.1 with its client transports (requests, websocket-client), installed into
# .build/socketio-clients (outside the system's Python). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=.build/socketio-clients
bundle=$dir/socket.io.min.js
python=$dir/python

if [ ! -s "$bundle" ]; then
    echo "rowcast: fetching the socket.io-client 4.8.1 bundle (from the nicegui 3.18.0 wheel)" >&2
    download=$(mktemp -d)
    trap 'rm -rf "$download"' EXIT
    python3 -m pip download -q --no-deps --disable-pip-version-check nicegui==3.18.0 -d "$download"
    mkdir -p "$dir"
    python3 - "$download"/nicegui-3.18.0-*.whl "$bundle" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    data = wheel.read("nicegui/static/socket.io.min.js")
open(sys.argv[2], "wb").write(data)
PY
fi

if [ ! -f "$python/socketio/__init__.py" ]; then
    echo "rowcast: installing python-socketio 5.18.1 into $python" >&2
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$python" \
        "python-socketio[client]==5.18.1" "python-engineio==4.15.1"
fi
