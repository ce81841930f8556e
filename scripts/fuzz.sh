#!/usr/bin/env bash
# make fuzz: coverage-guided fuzzing (libFuzzer, through swiftc -sanitize=fuzzer,address)
# of what rowcast reads from outside: the pgoutput decoder and replication session,
# the trigger payload reader, the client frame parser, the Socket.IO packet parser,
# the Engine.IO session state machine driven by event sequences, and the /events
# request, built from the modules' own sources. Each target runs for FUZZ_SECONDS
# (default 60), seeded from the test fixtures; its corpus grows in
# .build/fuzz/corpus/TARGET and crashing inputs land in .build/fuzz/crashes/TARGET.
# FUZZ_TARGETS="engineio-session http" builds and runs only those (default: all).
# Exit 1 when any target found a crash: turn each into a fixture test.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-pgoutput trigger-payload client-message socketio engineio-session http}
# Each target's harness; an unknown name stops the run before anything is built.
harness() {
    case $1 in
        pgoutput) echo Fuzz/PgOutputFuzz.swift ;;
        trigger-payload) echo Fuzz/TriggerPayloadFuzz.swift ;;
        client-message) echo Fuzz/ClientMessageFuzz.swift ;;
        socketio) echo Fuzz/SocketIOFuzz.swift ;;
        engineio-session) echo Fuzz/EngineIOSessionFuzz.swift ;;
        http) echo Fuzz/HTTPFuzz.swift ;;
        *) echo "fuzz: no target $1 (FUZZ_TARGETS takes pgoutput trigger-payload client-message socketio engineio-session http)" >&2; exit 2 ;;
    esac
}
for target in $targets; do harness "$target" > /dev/null; done

out=.build/fuzz
mkdir -p "$out/src"

# RowcastCore and the part of RowcastWire that needs nothing but RowcastCore (the rest
# imports NIOCore) as the modules they are, instrumented; each harness imports them:
# Parse/ (the parsers), EngineIO/ (the session state machine, for its sequences) and
# ServerMessage.swift (the `subscribed` echo the http target reads back).
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
module RowcastWire Sources/RowcastWire/Parse/*.swift Sources/RowcastWire/EngineIO/*.swift Sources/RowcastWire/ServerMessage.swift

build() {
    local name=$1; shift
    echo "fuzz: building $name" >&2
    swiftc -O -sanitize=fuzzer,address -parse-as-library -package-name rowcast -module-name "Fuzz_${name//-/_}" \
        -I "$mods" -L "$mods" -lRowcastWire -lRowcastCore "$@" -o "$out/$name" 2> "$out/$name.build.log" \
        || { cat "$out/$name.build.log" >&2; exit 2; }
}
for target in $targets; do build "$target" "$(harness "$target")"; done

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

# engineio-session: EngineIOSessionTests' scenarios in the harness's encoding (its
# `switch`): a first byte for the transport (1: WebSocket), then opcodes. Packets go
# as raw text (opcode 3) rather than by index into the harness's table, which may change.
def raw(text, expiry=0):
    return bytes([3, expiry, len(text)]) + text
def body(text, expiry=0):
    return bytes([4, expiry, len(text) >> 8, len(text) & 0xFF]) + text
FIRE_FIRST, FIRE_SECOND = bytes([0, 0]), bytes([0, 1])  # the first or second held timer, in Timer order
POLL, ANSWERED, PROBED, UPGRADED, PROBE_CLOSED, CARRIER_CLOSED = b"\x05", b"\x06", b"\x07", b"\x08", b"\x09", b"\x0a"
join = raw(b'40{"token":"t"}', expiry=70)  # a credential of 5.9 s
QUEUE_ENDED, CLOSE_SERVER = b"\x0b\x64", b"\x0c\x06"  # a grace of 5 s; the server closes it
seeds("engineio-session", [
    # The heartbeat, then no pong; a client's ping answered, then no CONNECT in time.
    b"\x00" + FIRE_FIRST + raw(b"3") + raw(b"3") + FIRE_FIRST + FIRE_FIRST,
    b"\x00" + raw(b"2probe") + FIRE_SECOND,
    # The credential expires; the socket leaves, joins again, and the client closes.
    b"\x00" + join + FIRE_SECOND + raw(b"41") + join + raw(b"1"),
    # Two long-polls at once, then one racing the end.
    b"\x00" + POLL + ANSWERED + POLL + POLL + POLL,
    # A probe given up, another that completes, a poll after the move, the carrier closing.
    b"\x00" + POLL + PROBED + ANSWERED + POLL + PROBE_CLOSED + PROBED + UPGRADED + POLL + UPGRADED + CARRIER_CLOSED,
    # The queue ends: on WebSocket, and on polling where its grace passes (the `ended` timer).
    b"\x01" + join + QUEUE_ENDED + CARRIER_CLOSED,
    b"\x00" + POLL + QUEUE_ENDED + ANSWERED + bytes([0, 2]) + CLOSE_SERVER,
    # One POST body of several packets.
    b"\x00" + body(b'40{"token":"t"}\x1e42["subscribe",{"tables":["orders"],"filter":"id=gt.1"}]\x1e3\x1e2\x1e1'),
])

# http: a first byte naming the fields present (bit 0 tables, 1 ops, 2 filter, 3 since,
# 4 last, 5 Last-Event-ID), then their values, one per line; filters from the tests.
tests = "".join(open(os.path.join(d, f)).read() for d, _, fs in os.walk("Tests") for f in fs if f.endswith(".swift"))
filters = sorted(set(re.findall(r'"([a-z_]+=(?:eq|neq|lt|lte|gt|gte|in)\.[^"\\]*)"', tests)))
cursor = b"t0000000000000001.00000000000000ff"
seeds("http", [
    b"\x3f" + b"\n".join([b"orders,public.items", b"insert,update", b"id=gt.1", cursor, b"10", b""]),
    b"\x28" + b"\n".join([cursor, b"r00000000016b3748.0000000000000003"]),
    b"\x05" + "public.ñame,,x\nname=in.(\"a\",é,\\)".encode(),
    b"\x10" + b"10001",
] + [b"\x04" + f.encode() for f in filters])
PY

# A trap's report is libFuzzer's and the Swift message: Swift's own backtracer, run
# under ASan, reports a stack-buffer-underflow of its own that hides the cause.
export SWIFT_BACKTRACE=enable=no
status=0
for target in $targets; do
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
