#!/usr/bin/env bash
# Measures orderd's restart time after SIGKILL with 1,000,000 orders in state:
# kill -9 to `/readyz` 200, with the real binary, on loopback.
#
#   ops/measure-restart.sh [ORDERS]      (default 1000000)
#
# The orders are placed by the engine benchmark into a kept data directory (HTTP placement of a
# million orders would take minutes and measure the wrong thing), then the real `orderd` is
# started on it, killed with SIGKILL, and started again.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/orderd/target}
orders=${1:-1000000}
work=$(mktemp -d)
trap 'kill -9 ${pid:-} 2>/dev/null || true; rm -rf "$work"' EXIT
shards=$(nproc)
port=18187

cargo build --release --bin orderd >&2
cargo test --release --workspace --bench engine -- --orders "$orders" --keep-dir "$work/data" \
  | grep -E '^\| (flash-sale|recovery)' >&2

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

start; wait_ready
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
t0=$(date +%s.%N)
start; wait_ready
t1=$(date +%s.%N)
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
printf '| restart | kill -9 to /readyz 200 in %.2f s with %s orders in state (real orderd, %s shards) |\n' \
  "$(echo "$t1 - $t0" | bc -l)" "$orders" "$shards"
