#!/usr/bin/env bash
# Off-site backups to S3, end to end: starts an S3-compatible server (moto, from PyPI, pinned, in
# a venv under the cache directory) on loopback with an empty bucket, runs the real orderd with
# `backup.offsite = s3://<bucket>/<prefix>`, places orders, takes a backup, waits for its copy,
# deletes the local backup directory, runs a restore drill (it must come from the S3 copy),
# stops orderd, restores the node from S3 with `orderctl backup restore --from offsite`, starts
# orderd on the restored directory and checks every order. Stops everything at the end.
#
# moto keeps objects in memory and stands in for S3's API only: this checks that orderd speaks
# S3 (signing, paths, listing, multipart-free puts, deletes), not S3's durability.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/orderd/target}"
BIN="$CARGO_TARGET_DIR/release"
VENV="${ORDERD_MOTO_VENV:-$HOME/.cache/orderd/moto-venv}"
MOTO_VERSION="5.2.5"
BUCKET="orderd-backups"
ORDERS=40

if ! "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    echo "Installing moto $MOTO_VERSION into $VENV ..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "moto[server]==$MOTO_VERSION"
fi
(cd "$ROOT" && cargo build --release --bin orderd --bin orderctl)

WORK="$(mktemp -d /tmp/orderd-s3-XXXXXX)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S3_PORT="$(free_port)"
HTTP_PORT="$(free_port)"
stop() {
    local pid="$1"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
cleanup() {
    stop "${ORDERD_PID:-}"
    stop "${MOTO_PID:-}"
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
    echo "s3-test: FAILED: $*" >&2
    echo "----- orderd log -----" >&2
    tail -50 "$WORK/orderd.log" >&2 || true
    exit 1
}

"$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$S3_PORT/" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs -X PUT "http://127.0.0.1:$S3_PORT/$BUCKET" >/dev/null || fail "cannot create the bucket"

export AWS_ACCESS_KEY_ID=orderd-test AWS_SECRET_ACCESS_KEY=orderd-test AWS_REGION=us-east-1
export AWS_ENDPOINT="http://127.0.0.1:$S3_PORT" AWS_ALLOW_HTTP=true
OFFSITE="s3://$BUCKET/node-1"
# The master key lives beside the data directories, outside both, and is shared by the restore.
start_orderd() {
    (
        cd "$WORK"
        ORDERD__HTTP__LISTEN="127.0.0.1:$HTTP_PORT" ORDERD__TCP__LISTEN="127.0.0.1:0" \
        ORDERD__STORAGE__DATA_DIR="$1" ORDERD__ENGINE__SHARDS=2 \
        ORDERD__BACKUP__DIR="$WORK/backups" ORDERD__BACKUP__OFFSITE="$OFFSITE" \
        ORDERD__BACKUP__INTERVAL_S=0 ORDERD__BACKUP__OFFSITE_RETRY_BASE_MS=100 \
            exec "$BIN/orderd"
    ) >>"$WORK/orderd.log" 2>&1 &
    ORDERD_PID=$!
    for _ in $(seq 1 300); do
        curl -fs "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "orderd not ready on $1"
}
api() { curl -fsS -H "Authorization: Bearer $KEY" -H 'content-type: application/json' "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

start_orderd "$WORK/data"
KEY="$(cat "$WORK/data/admin.key")"
URL="http://127.0.0.1:$HTTP_PORT"
api -X POST "$URL/v1/stock/S3-SKU/adjustments" -d '{"delta": 1000, "reason": "s3 test"}' >/dev/null
CUSTOMER="$(api -X POST "$URL/v1/customers" -d '{"name": "S3 Test", "email": "s3@example.com"}' | json 'd["id"]')"
: >"$WORK/orders"
for _ in $(seq 1 "$ORDERS"); do
    api -X POST "$URL/v1/orders" \
        -d "{\"customer_id\": \"$CUSTOMER\", \"lines\": [{\"sku\": \"S3-SKU\", \"qty\": 1, \"unit_price\": 100}]}" \
        | json 'd["id"]' >>"$WORK/orders"
done

export ORDERD_KEY="$KEY"
ID="$("$BIN/orderctl" --server "$URL" --output json backup create | json 'd["id"]')"
echo "s3-test: backup $ID taken" >&2
STATE=pending
for _ in $(seq 1 300); do
    STATE="$(api "$URL/v1/ops/backups" | json "[b['offsite'] for b in d['items'] if b['id'] == '$ID'][0]")"
    [[ "$STATE" != pending ]] && break
    sleep 0.1
done
[[ "$STATE" == copied ]] || fail "off-site copy is $STATE: $(api "$URL/v1/ops/backups")"
LISTED="$(curl -fs "http://127.0.0.1:$S3_PORT/$BUCKET?list-type=2&prefix=node-1/manifests/")"
[[ "$LISTED" == *"$ID.manifest"* ]] || fail "the manifest is not in the bucket: $LISTED"
echo "s3-test: copied to $OFFSITE" >&2

rm -rf "$WORK/backups"
DRILL="$("$BIN/orderctl" --server "$URL" --output json backup verify "$ID")" || fail "drill from S3: $DRILL"
[[ "$(echo "$DRILL" | json 'd["source"]')" == offsite ]] || fail "the drill did not use the S3 copy: $DRILL"
echo "s3-test: restore drill from S3 passed" >&2

stop "$ORDERD_PID"
ORDERD_PID=""
"$BIN/orderctl" backup restore "$ID" --from offsite --data-dir "$WORK/restored" \
    --backup-dir "$WORK/backups" --offsite "$OFFSITE" || fail "restore from S3"
cp "$WORK/data/admin.key" "$WORK/restored/admin.key"
start_orderd "$WORK/restored"
while read -r order; do
    api "$URL/v1/orders/$order" >/dev/null || fail "order $order missing after the restore from S3"
done <"$WORK/orders"
echo "s3-test: restored from S3 alone; all $ORDERS orders present" >&2
