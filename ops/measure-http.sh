#!/usr/bin/env bash
# HTTP throughput of the real orderd (sync durability), measured with wrk from this machine:
# GET /livez (no key, no engine: the HTTP ceiling, the baseline), GET /v1/stock/{sku} (key
# check + a shard read), POST /v1/customers (PII sealed + fsync + audit fsync) and POST
# /v1/orders (key check + reservation + group-committed fsync + audit entry fsync). Prints a
# table with each figure as a ratio of the baseline run in the same command.
# Usage: ops/measure-http.sh [seconds per run, default 10] [connections, default 64]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/orderd/target}"
TARGET="$CARGO_TARGET_DIR"
SECONDS_PER_RUN="${1:-10}"
CONNECTIONS="${2:-64}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
(cd "$ROOT" && cargo build --release --bin orderd)
WORK="$(mktemp -d /tmp/orderd-http-XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cleanup() { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
(cd "$WORK" && ORDERD__HTTP__LISTEN="127.0.0.1:$PORT" ORDERD__TCP__LISTEN="127.0.0.1:0" \
    ORDERD__STORAGE__DATA_DIR="$WORK/data" RUST_LOG=warn exec "$TARGET/release/orderd") >"$WORK/log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
BASE="http://127.0.0.1:$PORT"
KEY="$(cat "$WORK/data/admin.key")"
AUTH="Authorization: Bearer $KEY"
curl -fs -X POST "$BASE/v1/stock/BENCH-1/adjustments" -H "$AUTH" -d '{"delta": 1000000000000, "reason": "bench"}' >/dev/null
CUSTOMER="$(curl -fs -X POST "$BASE/v1/customers" -H "$AUTH" -d '{"name": "Bench", "email": "bench@example.com"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
cat >"$WORK/order.lua" <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"customer_id": "$CUSTOMER", "lines": [{"sku": "BENCH-1", "qty": 1, "unit_price": 1999}]}'
LUA
cat >"$WORK/customer.lua" <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"name": "Jo Bench", "email": "jo@example.com", "phone": "+1 555 0100", "address": "1 Bench Road"}'
LUA
run() { # name, then wrk arguments; prints "name rps p50 p99"
    local name="$1"; shift
    local out
    out="$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency "$@")"
    local rps p50 p99 non2xx
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
    p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
    non2xx="$(awk '/Non-2xx/ {print $5}' <<<"$out")"
    echo "$name ${rps:-0} ${p50:-?} ${p99:-?} ${non2xx:-0}"
}
echo "# orderd HTTP: sync durability, $(nproc) cores shared by wrk and orderd, $CONNECTIONS connections, ${SECONDS_PER_RUN}s per run"
echo "# command: ops/measure-http.sh $SECONDS_PER_RUN $CONNECTIONS"
{
    run "GET /livez (baseline)" "$BASE/livez"
    run "GET /v1/stock/{sku}" -H "$AUTH" "$BASE/v1/stock/BENCH-1"
    run "POST /v1/customers" -s "$WORK/customer.lua" "$BASE/v1/customers"
    run "POST /v1/orders" -s "$WORK/order.lua" "$BASE/v1/orders"
} | python3 -c '
import sys
rows = [l.rsplit(" ", 4) for l in sys.stdin.read().splitlines()]
base = float(rows[0][1])
print("| request | requests/s | p50 | p99 | non-2xx | vs baseline |")
print("|---|---|---|---|---|---|")
for name, rps, p50, p99, bad in rows:
    print(f"| {name} | {float(rps):,.0f} | {p50} | {p99} | {bad} | {float(rps)/base:.2f} |")
'
ORDERS="$(curl -fs "$BASE/v1/stock/BENCH-1" -H "$AUTH" | python3 -c 'import json,sys; print(json.load(sys.stdin)["reserved"])')"
echo "# orders confirmed during the run (reserved units of BENCH-1): $ORDERS"
