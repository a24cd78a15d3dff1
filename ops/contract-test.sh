#!/usr/bin/env bash
# Contract test: runs schemathesis (from PyPI, pinned, in a venv under the cache directory)
# against a real orderd serving its own OpenAPI document at /v1/openapi.json, with every check
# but `positive_data_acceptance` (some valid-looking requests are refused by rules that depend
# on state, such as an unknown customer or an on_hand overflow; see gateway/README.md).
# Fails on any 5xx, any response that does not match the document, any undocumented status.
# Arguments are passed on to `schemathesis run` (e.g. `--report ndjson`, `--include-path ...`).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/orderd/target}"
TARGET="$CARGO_TARGET_DIR"
VENV="${ORDERD_ST_VENV:-$HOME/.cache/orderd/st-venv}"
ST_VERSION="4.32.5"
MAX_EXAMPLES="${ST_MAX_EXAMPLES:-25}"

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$ST_VERSION"; then
    echo "Installing schemathesis $ST_VERSION into $VENV ..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "schemathesis==$ST_VERSION"
fi

# Built with the test suite's features (Makefile's TEST_FEATURES), so that this build and the
# tests' are one build in the same target directory (another feature set rebuilds RocksDB and
# every crate above it). The failpoints are disarmed below (ORDERD_FAILPOINTS=off): a generated
# SKU starting with FAILPOINT- is then an ordinary SKU.
read -r -a CARGO_FEATURES <<<"${ORDERD_CONTRACT_FEATURES:---features orderd-gateway/failpoints}"
cargo build --release --workspace "${CARGO_FEATURES[@]}" --bin orderd
WORK="$(mktemp -d /tmp/orderd-contract-XXXXXX)"
# shellcheck disable=SC2317  # called by the EXIT trap, which shellcheck does not follow
cleanup() {
    if [[ -n "${PID:-}" ]] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
(
    cd "$WORK"
    ORDERD__HTTP__LISTEN="127.0.0.1:0" ORDERD__TCP__LISTEN="127.0.0.1:0" \
    ORDERD__STORAGE__DATA_DIR="$WORK/data" ORDERD__ENGINE__SHARDS=2 \
    ORDERD__BACKUP__DIR="$WORK/backups" ORDERD__BACKUP__OFFSITE="$WORK/offsite" \
    ORDERD_FAILPOINTS=off RUST_LOG=info \
        exec "$TARGET/release/orderd"
) >"$WORK/orderd.log" 2>&1 &
PID=$!
# The server binds port 0 and logs the address it got: a port picked here and handed to it
# could be taken meanwhile by another server on the machine (a test suite running beside this
# one once answered this script's requests with its own, older API).
ADDR=""
for _ in $(seq 1 300); do
    if [[ -z "$ADDR" ]]; then
        ADDR="$(grep -o 'listening addr=[0-9.:]* protocol="http"' "$WORK/orderd.log" 2>/dev/null \
            | head -n1 | sed -e 's/^listening addr=//' -e 's/ protocol.*//' || true)"
    fi
    [[ -n "$ADDR" ]] && curl -fs "http://$ADDR/readyz" >/dev/null 2>&1 && break
    kill -0 "$PID" 2>/dev/null || { echo "orderd exited; its log:" >&2; cat "$WORK/orderd.log" >&2; exit 1; }
    sleep 0.1
done
[[ -n "$ADDR" ]] || { echo "orderd logged no HTTP address; its log:" >&2; cat "$WORK/orderd.log" >&2; exit 1; }
PORT="${ADDR##*:}"
KEY="$(cat "$WORK/data/admin.key")"
BASE="http://127.0.0.1:$PORT"
# Test data (ops/schemathesis.toml): a customer for placements, and stock of the SKUs they name.
api() {
    curl -fsS -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" "$@"
}
ORDERD_ST_CUSTOMER="$(api -X POST "$BASE/v1/customers" \
    -d '{"name": "Contract Test", "email": "contract-test@example.com"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')"
export ORDERD_ST_CUSTOMER
for i in $(seq 0 15); do
    api -X POST "$BASE/v1/stock/CT-$i/adjustments" \
        -d '{"delta": 1000000000000, "reason": "contract test stock"}' >/dev/null
done
set +e
# ops/schemathesis_hooks.py: the NDJSON serializer of POST /v1/orders/bulk.
PYTHONPATH="$ROOT/ops" SCHEMATHESIS_HOOKS=schemathesis_hooks \
"$VENV/bin/schemathesis" --config-file "$ROOT/ops/schemathesis.toml" \
    run "$BASE/v1/openapi.json" \
    -H "Authorization: Bearer $KEY" \
    --checks all --exclude-checks positive_data_acceptance \
    --phases examples,coverage,fuzzing,stateful --max-examples "$MAX_EXAMPLES" \
    --seed 1 -w 1 --no-color "$@"
STATUS=$?
set -e
if grep -q "panicked" "$WORK/orderd.log"; then
    echo "orderd panicked during the contract test:" >&2
    grep -A5 "panicked" "$WORK/orderd.log" >&2
    STATUS=1
fi
if ! kill -0 "$PID" 2>/dev/null; then
    echo "orderd died during the contract test" >&2
    STATUS=1
fi
exit "$STATUS"
