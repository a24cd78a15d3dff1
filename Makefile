# orderd — the two commands a new machine needs: `make run` and `make test`.
# Both install what is missing (RocksDB's build needs libclang-dev) and keep cargo's target
# directory outside the clone, so CI does not rebuild RocksDB on every run.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/orderd/target
export CARGO_TERM_COLOR ?= never
# One profile for everything (clippy, tests, run, benches): RocksDB is built once.
PROFILE := --release
BIN := $(CARGO_TARGET_DIR)/release
# Tests (and clippy, so that it checks the same code) are built with the test-only failpoints
# (engine/src/failpoint.rs); `make run` and `make bench` build without them.
TEST_FEATURES := --features orderd-gateway/failpoints

.PHONY: deps test-deps build dist run shellcheck test test-only console-test lint contract openapi s3-test bench compare simulate fmt clean-data

# Installs what is missing with one `apt-get update`: libclang-dev (RocksDB's build) always,
# and for the tests promtool (Debian package `prometheus`), which checks /metrics and the alert
# rules in the e2e suite.
deps:
	@./ops/install-deps.sh libclang-dev

test-deps:
	@./ops/install-deps.sh libclang-dev prometheus

build: deps
	cargo build $(PROFILE) --bin orderd

## The binary to deploy: the `dist` profile (LTO, one codegen unit, stripped), into
## $(CARGO_TARGET_DIR)/dist/orderd. Its first build compiles RocksDB once more (20-30 minutes).
dist: deps
	cargo build --profile dist --workspace --bins
	@ls -l $(CARGO_TARGET_DIR)/dist/orderd $(CARGO_TARGET_DIR)/dist/orderctl | awk '{ printf "%-60s %6.1f MB\n", $$9, $$5 / 1e6 }'

## Build and start orderd on the embedded default config (data in ./data, HTTP on 127.0.0.1:8080).
run: build
	$(BIN)/orderd

## Every shell script under ops/ and .ci/ (found by its #! line) passes shellcheck (Debian's
## package) at its default severity; `make test` runs it with the lint.
SCRIPTS := $(shell grep -rlE '^#!.*\b(ba)?sh\b' ops .ci | sort)
shellcheck:
	@./ops/install-deps.sh shellcheck
	shellcheck $(SCRIPTS)

lint: deps shellcheck
	cargo fmt --all -- --check
	cargo clippy $(PROFILE) --workspace --all-targets $(TEST_FEATURES) -- -D warnings

## Everything CI checks: format, clippy (warnings are errors), the OpenAPI contract test
## (schemathesis against the real server), every test (the runner's summary), then the
## operations console in a real browser.
test: lint contract test-only console-test

## schemathesis (pinned, from PyPI, in a venv under ~/.cache/orderd) against a real orderd.
contract: deps
	./ops/contract-test.sh

# The e2e tests are a test target of orderd-gateway, so the runner builds `orderd` itself; the
# other binaries they run (`orderctl`, from tools/) belong to other packages and are built here
# first, into the same profile directory.
test-only: test-deps
	cargo build $(PROFILE) --workspace $(TEST_FEATURES) --bins
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run $(PROFILE) --workspace $(TEST_FEATURES) --no-fail-fast; \
	else \
		cargo test $(PROFILE) --workspace --tests $(TEST_FEATURES) --no-fail-fast; \
	fi

## The operations console (GET /console) in headless Chromium, driven by Selenium against the
## release orderd: tests/console/test_console.py. Debian's chromium, chromium-driver and
## python3-selenium are installed when missing (Debian's own python3 runs it, which has them);
## screenshots go to $(CARGO_TARGET_DIR)/console.
console-test:
	@./ops/install-deps.sh libclang-dev chromium chromium-driver python3-selenium
	cargo build $(PROFILE) --workspace $(TEST_FEATURES) --bin orderd
	CONSOLE_OUT=$(CARGO_TARGET_DIR)/console /usr/bin/python3 tests/console/test_console.py

## The deterministic simulator (engine/src/sim.rs): seed after seed until stopped, or one seed
## replayed exactly: make simulate SEED=1234 STEPS=20000 (ASYNC=1: `async` durability, where a crash
## loses what was not synced). `make test` runs a fixed budget of
## seeds (engine/tests/sim.rs). Built as the tests are (the whole workspace's features): a build of
## the engine alone resolves other features and would build RocksDB a second time.
SEED ?=
STEPS ?= 20000
simulate: deps
	cargo build $(PROFILE) --workspace $(TEST_FEATURES) --bin orderd-simulate
	$(BIN)/orderd-simulate $(if $(SEED),--seed $(SEED)) --steps $(STEPS) $(if $(ASYNC),--async)

## Engine benchmark (sync durability, in process); results go to docs/PERFORMANCE.md by hand.
## Built in the same (release) profile and features as the tests, so nothing is built a second time
## (the failpoints feature adds only hooks on SKUs named FAILPOINT-..., which no bench places).
BENCH_ORDERS ?= 1000000
## The longevity step (issue 18): orders placed and ended with the cold tier on; 20M is the goal's size.
LONGEVITY_ORDERS ?= 20000000
## The event-recording step (issue 19): orders per run, three rounds of events on and off.
EVENTS_BENCH_ORDERS ?= 1000000
## Webhook delivery throughput (issue 19): orders whose order.confirmed events go to a receiver on loopback.
WEBHOOK_BENCH_ORDERS ?= 5000
## Off-site backups to S3: an S3 server (moto, PyPI, pinned) on loopback, backup, drill and restore.
s3-test: deps
	./ops/s3-test.sh

bench: deps
	cargo build $(PROFILE) --workspace $(TEST_FEATURES) --bins
	cargo test $(PROFILE) --workspace $(TEST_FEATURES) --bench engine -- --orders $(BENCH_ORDERS)
	cargo test $(PROFILE) --workspace $(TEST_FEATURES) --bench window
	cargo test $(PROFILE) --workspace $(TEST_FEATURES) --bench list
	cargo test $(PROFILE) --workspace $(TEST_FEATURES) --bench events -- --orders $(EVENTS_BENCH_ORDERS)
	python3 benches/scripts/webhook_throughput.py $(WEBHOOK_BENCH_ORDERS)
	cargo test $(PROFILE) --workspace $(TEST_FEATURES) --bench longevity -- --orders $(LONGEVITY_ORDERS)

## orderd against PostgreSQL 15 and Redis 7 (tools/orderd-bench): ops/peers.sh installs and starts
## them on loopback, the bench runs every target and workload, and the peers are stopped (and
## their data removed) however the bench ends. Every workload, closed loop, unless COMPARE_ARGS says
## otherwise: make compare COMPARE_ARGS="--duration-s 30 --workloads flash-sale,catalog".
## Three passes: every target with 64 clients of one request each (what HTTP and SQL clients
## do; tcp-batch's requests are PLACE_ORDERS frames of 1,000 orders); the pipelining targets
## (inproc, tcp, redis) with 4 connections of 256 in flight; and
## an open loop at OPEN_RATE orders/s (about half the tcp closed-loop rate) for latency. Every
## row has the server's CPU per operation (from /proc). Then, with the peers stopped,
## ops/wrk-compare.sh: wrk (WRK_CONNECTIONS connections, 2 threads, WRK_DURATION_S seconds)
## against orderd's POST /v1/orders and against the bare actix-web handler, one table with
## orderd ÷ bare and the server CPU per request.
COMPARE_ARGS ?= --duration-s 20 --warmup-s 3
PIPELINED_ARGS ?= --targets inproc,tcp,redis --connections 4 --in-flight 256 --duration-s 20 --warmup-s 3
OPEN_ARGS ?= --duration-s 20 --warmup-s 3
OPEN_RATE ?= 20000
WRK_DURATION_S ?= 20
WRK_CONNECTIONS ?= 256
compare: deps
	cargo build $(PROFILE) --workspace $(TEST_FEATURES) --bins
	trap './ops/peers.sh stop' EXIT; urls="$$(./ops/peers.sh start)" && eval "$$urls" && \
		$(BIN)/orderd-bench $(COMPARE_ARGS) && \
		$(BIN)/orderd-bench $(PIPELINED_ARGS) && \
		$(BIN)/orderd-bench --targets inproc,tcp,redis --workloads flash-sale --mode open \
			--rate $(OPEN_RATE) --connections 4 --in-flight 256 $(OPEN_ARGS)
	./ops/wrk-compare.sh --duration-s $(WRK_DURATION_S) --connections $(WRK_CONNECTIONS) --threads 2

fmt:
	cargo fmt --all

clean-data:
	rm -rf ./data ./backups ./offsite

## Rewrites docs/openapi.json from the code (a test holds the two equal; commit the file with the
## change that changed the API).
openapi:
	UPDATE_OPENAPI=1 cargo test $(PROFILE) --workspace $(TEST_FEATURES) --lib -p orderd-gateway -- committed_openapi_document
