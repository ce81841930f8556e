#!/usr/bin/env bash
# make fuzz: coverage-guided fuzzing (libFuzzer, through swiftc -sanitize=fuzzer,address)
# of what rowcast reads from outside: the pgoutput decoder and replication session,
# the trigger payload reader, the client frame parser and the Socket.IO packet
# parser, built from the modules' own sources. Each target runs for FUZZ_SECONDS (default 60), seeded from the test
# fixtures; its corpus grows in .build/fuzz/corpus/TARGET and crashing inputs land in
# .build/fuzz/crashes/TARGET.
# Exit 1 when any target found a crash: turn each into a fixture test.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
out=.build/fuzz
mkdir -p "$out/src"

# RowcastCore and RowcastWire's parsers (Sources/RowcastWire/Parse, which need nothing
# but RowcastCore) as the modules they are, instrumented; each harness imports them.
mods=$out/modules
mkdir -p "$mods"
module() {
    local name=$1; shift
    echo "fuzz: building module $name" >&2
    swiftc -O -sanitize=fuzzer,address -parse-as-library -package-name rowcast -module-name "$name" -I "$mods" \
        -emit-library -static -emit-module -emit-module-path "$mods/$name.swiftmodule" -o "$mods/lib$name.a" \
        "$@" 2> "$out/$name.build.log" || { cat "$out/$name.build.log" >&2; exit 2; }
}
module RowcastCore $(find Sources/RowcastCore -name '*.swift' | sort)
module RowcastWire Sources/RowcastWire/Parse/*.swift

build() {
    local name=$1; shift
    echo "fuzz: building $name" >&2
    swiftc -O -sanitize=fuzzer,address -parse-as-library -package-name rowcast -module-name "Fuzz_${name//-/_}" \
        -I "$mods" -L "$mods" -lRowcastWire -lRowcastCore "$@" -o "$out/$name" 2> "$out/$name.build.log" \
        || { cat "$out/$name.build.log" >&2; exit 2; }
}
build pgoutput Fuzz/PgOutputFuzz.swift
build trigger-payload Fuzz/TriggerPayloadFuzz.swift
build client-message Fuzz/ClientMessageFuzz.swift
build socketio Fuzz/SocketIOFuzz.swift

# Seeds: the fixtures captured from PostgreSQL, payloads and frames from the tests.
python3 - "$out/corpus" <<'PY'
import os, re, sys
root = sys.argv[1]
def seeds(target, items):
    os.makedirs(os.path.join(root, target), exist_ok=True)
    for i, data in enumerate(items):
        with open(os.path.join(root, target, "seed-%03d" % i), "wb") as f:
            f.write(data)
fixtures = open("Tests/RowcastCoreTests/PgOutputFixtures.swift").read()
seeds("pgoutput", [bytes.fromhex(h) for h in re.findall(r'"([0-9a-f]{8,})"', fixtures)])
payloads = re.findall(r'#"(\{.*?\})"#', open("Tests/RowcastCoreTests/TriggerPayloadTests.swift").read())
seeds("trigger-payload", [p.encode() for p in payloads] or [b'{"op":"insert","schema":"public","table":"t","xid":1,"i":1,"row":{"id":1}}'])
frames = re.findall(r'#"(\{"event".*?\})"#', open("Tests/RowcastWireTests/ClientMessageTests.swift").read())
seeds("client-message", [f.encode() for f in frames])
packets = re.findall(r'parse\((#?)"(.*?)"\1\)', open("Tests/RowcastWireTests/SocketIOPacketTests.swift").read())
seeds("socketio", [p[1].encode() for p in packets] + [b'40{"token":"t"}\x1e42["subscribe",{"tables":["orders"],"filter":"id=gt.1"}]\x1e3'])
PY

status=0
for target in pgoutput trigger-payload client-message socketio; do
    mkdir -p "$out/crashes/$target"
    echo "fuzz: $target for ${seconds}s" >&2
    if ! "$out/$target" -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$out/crashes/$target/" "$out/corpus/$target" > "$out/$target.log" 2>&1; then
        status=1
        echo "fuzz: $target CRASHED; inputs in $out/crashes/$target (make each a fixture test)" >&2
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/$target.log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$out/$target.log" | tail -1 | grep -o '[0-9]*' || echo "?")
    echo "fuzz: $target: $runs executions, coverage $cov edges, corpus $(ls "$out/corpus/$target" | wc -l) inputs" >&2
done
exit $status
