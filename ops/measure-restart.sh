#!/usr/bin/env bash
# Measures orderd's restart time with the real binary, on loopback: kill -9 to `/readyz` 200.
#
#   ops/measure-restart.sh [ORDERS]                (default 1000000, every order in memory)
#   ops/measure-restart.sh --longevity [ORDERS]    (default 20000000, the cold tier on)
#
# The orders are placed in process by a benchmark into a kept data directory (HTTP placement
# of millions of orders would take minutes and measure the wrong thing), then the real `orderd`
# is started on it, killed with SIGKILL, and started again.
# Plain: the engine benchmark's flash sale, every order in memory (snapshot plus log replay).
# --longevity: the longevity benchmark places and ends ORDERS orders with the cold tier on
# (hot_retention_s = 1) and exits without a clean stop, as a crash leaves the store (RocksDB's
# write-ahead log unflushed). The first start of `orderd` on it is the restart after that crash;
# two more kill -9 restarts follow. Issue 18's goal: ready within 3 s whatever the history.
# CARGO_FEATURES (e.g. "--features orderd-gateway/failpoints") is passed to cargo, so the
# script can reuse the test build's profile instead of building RocksDB a second time.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/orderd/target}
longevity=0
if [ "${1:-}" = "--longevity" ]; then
  longevity=1
  shift
fi
if [ "$longevity" = 1 ]; then orders=${1:-20000000}; else orders=${1:-1000000}; fi
features=${CARGO_FEATURES:-}
work=$(mktemp -d)
trap 'kill -9 ${pid:-} 2>/dev/null || true; rm -rf "$work"' EXIT
shards=$(nproc)
port=18187

# shellcheck disable=SC2086 # $features is zero or more words
cargo build --release --workspace $features --bin orderd >&2
start() {
  ORDERD__STORAGE__DATA_DIR="$work/data" ORDERD__ENGINE__SHARDS="$shards" \
  ORDERD__HTTP__LISTEN="127.0.0.1:$port" ORDERD__BACKUP__DIR="$work/backups" \
  ORDERD__BACKUP__OFFSITE="$work/offsite" RUST_LOG=warn \
    "$CARGO_TARGET_DIR/release/orderd" >>"$work/orderd.log" 2>&1 &
  pid=$!
}
wait_ready() {
  for _ in $(seq 1 6000); do
    if curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.01
  done
  echo "orderd did not become ready; log:" >&2; cat "$work/orderd.log" >&2; return 1
}

if [ "$longevity" = 1 ]; then
  # The server makes the store first (its keys and the personal-data marker), so that the
  # measured start does only what a restart does, not a first start's one-time work.
  start; wait_ready
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  # shellcheck disable=SC2086
  cargo test --release --workspace $features --bench longevity -- --orders "$orders" \
    --keep-dir "$work/data" --crash >&2
else
  # shellcheck disable=SC2086
  cargo test --release --workspace $features --bench engine -- --orders "$orders" \
    --keep-dir "$work/data" | grep -E '^\| (flash-sale|recovery)' >&2
fi

report() {
  printf '| restart | %s: kill -9 to /readyz 200 in %.2f s, %s orders placed in total (real orderd, %s shards) |\n' \
    "$1" "$(echo "$3 - $2" | bc -l)" "$orders" "$shards"
}
if [ "$longevity" = 1 ]; then
  # The store is as the crashed writer left it: this start replays RocksDB's write-ahead log.
  t0=$(date +%s.%N)
  start; wait_ready
  report "after the writer's crash" "$t0" "$(date +%s.%N)"
  rounds=2
else
  start; wait_ready
  rounds=1
fi
for _ in $(seq 1 "$rounds"); do
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  t0=$(date +%s.%N)
  start; wait_ready
  report "after kill -9 of orderd" "$t0" "$(date +%s.%N)"
done
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
