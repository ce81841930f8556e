"""python-socketio 5 (an independent Socket.IO implementation) against rowcast serve.

Connects over the given transports, subscribes, and prints one line per milestone for
SocketIOTests to wait on:
  connected mode=M                    the `connected` event
  subscribed cursor=C                 the `subscribed` reply (insert rows after this)
  connect_error MESSAGE               CONNECT refused (the script then exits 0)
  error CODE MESSAGE                  an `error` event
  done ids=[...] tables=[...] transport=T   after --count updates
"""
import argparse
import json
import sys
import threading

import socketio

parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("--transports", default="polling,websocket")
parser.add_argument("--auth-token")
parser.add_argument("--subscribe", help="the subscribe event's data, JSON; without it, ready for data")
parser.add_argument("--count", type=int, default=0)
parser.add_argument("--origin")
parser.add_argument("--mint-jwt", metavar="SECRET", help="send an HS256 JWT signed with SECRET as the auth token")
parser.add_argument("--jwt-tables", help="the JWT's tables claim, comma-separated")
args = parser.parse_args()


def mint_jwt(secret, tables):
    import base64, hashlib, hmac, time

    def part(data):
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {"exp": int(time.time()) + 3600}
    if tables is not None:
        claims["tables"] = tables.split(",")
    signing = part({"alg": "HS256", "typ": "JWT"}) + "." + part(claims)
    signature = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + part(signature)


if args.mint_jwt:
    args.auth_token = mint_jwt(args.mint_jwt, args.jwt_tables)


def say(line):
    print(line, flush=True)


client = socketio.Client(reconnection=False)
# python-engineio runs each message's handler on a thread of its own, so handlers may
# run out of order; the tests check the order the server sent, so run them in turn.
_trigger = client.eio._trigger_event


def _in_order(event, *args, **kwargs):
    kwargs["run_async"] = False
    return _trigger(event, *args, **kwargs)


client.eio._trigger_event = _in_order
updates = []
finished = threading.Event()


@client.on("connected")
def on_connected(data):
    say(f"connected mode={data['mode']}")
    if args.subscribe:
        client.emit("subscribe", json.loads(args.subscribe))
    else:
        client.emit("ready for data", {})


@client.on("subscribed")
def on_subscribed(data, offset=None):
    say(f"subscribed cursor={data.get('cursor')}")
    if args.count == 0:
        finished.set()


# The last argument is the record's cursor: socket.io-client keeps it as its recovery offset.
@client.on("update")
def on_update(record, cursor):
    assert cursor == record["cursor"], (cursor, record["cursor"])
    updates.append(record)
    if len(updates) >= args.count:
        finished.set()


@client.on("error")
def on_error(data):
    say(f"error {data['code']} {data['message']}")


@client.event
def connect_error(data):
    message = data.get("message") if isinstance(data, dict) else data
    say(f"connect_error {message}")
    finished.set()


headers = {"Origin": args.origin} if args.origin else {}
try:
    client.connect(
        args.url,
        transports=args.transports.split(","),
        auth={"token": args.auth_token} if args.auth_token else None,
        headers=headers,
        wait_timeout=30,
    )
except socketio.exceptions.ConnectionError as error:
    say(f"connect_failed {error}")
    sys.exit(0)

if not finished.wait(60):
    say(f"timeout after {len(updates)} updates")
    sys.exit(1)
if updates or args.count == 0:
    # An upgrade from polling happens in the background: give it its time (up to 60 s).
    for _ in range(600):
        if client.transport() == args.transports.split(",")[-1]:
            break
        threading.Event().wait(0.1)
    ids = [record["row"]["id"] for record in updates]
    tables = sorted({record["table"] for record in updates})
    say(f"done ids={json.dumps(ids)} tables={json.dumps(tables)} transport={client.transport()}")
client.disconnect()
