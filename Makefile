# The entry points a newcomer types. `make demo` and `make test` install what they
# need from the system packages (PostgreSQL, libpq-dev; Chromium for the tests)
# when it is missing.

SWIFT ?= swift

.PHONY: demo nodes test bench fuzz build install deps clean

PREFIX ?= /usr/local

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build --product rowcast

# A throwaway PostgreSQL, the demo table captured in replication mode (MODE=trigger
# for trigger mode), a writer inserting a row every second, and the live page; Ctrl-C
# removes everything. Builds only the rowcast binary.
demo: build
	.build/debug/rowcast demo $(if $(MODE),--mode $(MODE))

# Three serve nodes behind HAProxy on 8080 (Docs/operations.md); Ctrl-C stops them.
nodes: build
	scripts/nodes.sh

# A release build of rowcast in $(PREFIX)/bin (default /usr/local/bin).
install: deps
	$(SWIFT) build -c release --product rowcast
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 .build/release/rowcast $(DESTDIR)$(PREFIX)/bin/rowcast

# The whole suite against its own throwaway cluster (wal_level=logical); the page is
# tested in headless Chromium and several nodes behind HAProxy, both installed from
# the system packages when missing, and /socket.io/ with the official socket.io-client
# bundle and python-socketio, fetched from the Python package index when missing. A
# watchdog ends a run in which no test finished for 300 s, with gdb's stacks in the log
# (Docs/development.md, "The watchdog"); the last step shows it still does, on a test
# that hangs on purpose (about 40 s).
test:
	@scripts/install-deps.sh chromium haproxy gdb
	@scripts/socketio-clients.sh
	$(SWIFT) build --build-tests
	scripts/test.sh
	scripts/watchdog-check.sh

# Release builds, side by side with pg_recvlogical, wal2json and a bare WebSocket
# broadcaster, driven by rowcast-bench (Sources/RowcastBench): every measurement as a
# line of JSON in .build/bench/results.jsonl, then the tables of Docs/benchmarks.md
# rewritten from it (the hand-written reading beside them is left alone). About 25
# minutes here after the release build; BENCH_SECTIONS="2 6" runs some sections and
# only prints their tables, BENCH_ROWS, BENCH_RUNS, BENCH_SECONDS and
# BENCH_IDLE_CLIENTS shorten a trial (scripts/bench.sh).
bench: deps
	scripts/bench.sh

# Coverage-guided fuzzing (libFuzzer) of the pgoutput decoder, the trigger payload
# reader, the client frame parser, the Socket.IO packet parser, the Engine.IO session
# state machine (event sequences) and the /events request; FUZZ_SECONDS per target
# (default 60), FUZZ_TARGETS="engineio-session http" for some of them.
fuzz: deps
	scripts/fuzz.sh

clean:
	rm -rf .build
