#!/usr/bin/env bash
# HTTP with wrk, the client that costs the server's cores least: the real orderd's
# `POST /v1/orders` (sync durability, the flash sale: one SKU with plenty of stock, one
# customer created first) against the bare actix-web handler of orderd-bench's http-bare
# target (`orderd-bench serve-bare`, the same body parsed, no storage), in the same run, with
# the same wrk command (ops/wrk-order.lua sends the body and the Authorization header).
# Each server is started on loopback for its own run (warm-up, then the measured run) and
# stopped after it, so that only one server runs at a time; everything it started is stopped
# however the script ends. Prints one markdown table: requests/s, latency p50/p99 (wrk
# --latency), the server's CPU per request from /proc (user + system of the server process,
# before and after the measured run), and orderd ÷ bare.
#
#   ops/wrk-compare.sh [--duration-s S] [--warmup-s W] [--connections C] [--threads T]
#
# Defaults: 20 s measured, 3 s of warm-up, 256 connections, 2 threads (or WRK_DURATION_S,
# WRK_WARMUP_S, WRK_CONNECTIONS, WRK_THREADS). The binaries come from
# $CARGO_TARGET_DIR/release (default ~/.cache/orderd/target): build them first with
# `cargo build --release --workspace --bins` (`make compare` does).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$HOME/.cache/orderd/target}/release"
DURATION_S="${WRK_DURATION_S:-20}"
WARMUP_S="${WRK_WARMUP_S:-3}"
CONNECTIONS="${WRK_CONNECTIONS:-256}"
THREADS="${WRK_THREADS:-2}"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --duration-s) DURATION_S="$2"; shift 2 ;;
        --warmup-s) WARMUP_S="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "wrk-compare: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for value in "$DURATION_S" "$CONNECTIONS" "$THREADS"; do
    [[ "$value" =~ ^[1-9][0-9]*$ ]] || { echo "wrk-compare: durations, connections and threads are whole numbers > 0" >&2; exit 2; }
done
[[ "$WARMUP_S" =~ ^[0-9]+$ ]] || { echo "wrk-compare: --warmup-s is a whole number" >&2; exit 2; }

log() { echo "wrk-compare: $*" >&2; }

"$ROOT/ops/install-deps.sh" wrk >&2
for exe in orderd orderd-bench; do
    [ -x "$BIN/$exe" ] || { log "no $BIN/$exe: build with \`cargo build --release --workspace --bins\` (make compare does)"; exit 1; }
done

CORES="$(nproc)"
TICKS="$(getconf CLK_TCK)"
SKU=FLASH-1
WORK="$(mktemp -d "${TMPDIR:-/tmp}/orderd-wrk-XXXXXX")"
PID=""

stop_server() {
    if [ -n "$PID" ]; then
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
        PID=""
    fi
}
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_ready() { # url, name
    for _ in $(seq 1 300); do
        curl -fs "$1" >/dev/null 2>&1 && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    log "$2 did not answer $1; its log ends with:"
    tail -n 20 "$WORK/$2.log" >&2 || true
    exit 1
}

# User + system clock ticks of a process, with those of the children it has reaped. The command
# name (field 2) may hold spaces, so the fields are counted after its closing parenthesis:
# utime, stime, cutime, cstime are fields 14 to 17 of /proc/PID/stat.
cpu_ticks() {
    local stat rest
    stat="$(cat "/proc/$1/stat")"
    rest="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $rest
    echo $(( ${12} + ${13} + ${14} + ${15} ))
}

# The numbers of the summary line of ops/wrk-order.lua: requests duration_us p50_us p99_us
# non2xx socket_errors.
summary() { # wrk's output
    local line
    line="$(grep '^wrk-compare: ' <<<"$1")" || { log "no summary line from wrk:"; echo "$1" >&2; return 1; }
    sed 's/^wrk-compare: //; s/[a-z0-9_]*=//g' <<<"$line"
}

# Runs wrk (warm-up, then measured, sampling the server's CPU around the measured run) and
# prints one line: requests duration_us p50_us p99_us non2xx socket_errors cpu_ticks
# warmup_2xx.
measure() { # name, base URL
    local name="$1" url="$2" before after out warm=0 numbers
    if [ "$WARMUP_S" -gt 0 ]; then
        out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP_S}s" --timeout 10s \
            -s "$ROOT/ops/wrk-order.lua" "$url/v1/orders")"
        echo "$out" >"$WORK/$name.warmup.txt"
        numbers="$(summary "$out")"
        # shellcheck disable=SC2086
        set -- $numbers
        warm=$(($1 - $5))
    fi
    before="$(cpu_ticks "$PID")"
    out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION_S}s" --timeout 10s --latency \
        -s "$ROOT/ops/wrk-order.lua" "$url/v1/orders")"
    after="$(cpu_ticks "$PID")"
    echo "$out" >"$WORK/$name.wrk.txt"
    log "$name: $(awk '/Requests\/sec/ {print $2 " requests/s"}' <<<"$out")"
    numbers="$(summary "$out")"
    echo "$numbers $((after - before)) $warm"
}

# --- orderd -----------------------------------------------------------------------------
# The configuration orderd-bench's http target uses: everything in the work directory,
# loopback only, sync durability, a shard per core, no scheduled backups or drills.
HTTP_PORT="$(free_port)"
TCP_PORT="$(free_port)"
cat >"$WORK/orderd.toml" <<TOML
# Written by ops/wrk-compare.sh for one run.
[http]
listen = "127.0.0.1:$HTTP_PORT"

[tcp]
listen = "127.0.0.1:$TCP_PORT"

[storage]
data_dir = "$WORK/data"
durability = "sync"

[engine]
shards = $CORES

[backup]
dir = "$WORK/backups"
offsite = "$WORK/offsite"
interval_s = 0
verify_interval_s = 0

[security]
master_key_file = "$WORK/master.key"

[log]
level = "warn"
TOML
# The file is the whole configuration: no ORDERD_ variable of the caller's environment counts.
unset_orderd=()
while IFS= read -r name; do unset_orderd+=(-u "$name"); done < <(env | sed -n 's/^\(ORDERD_[A-Za-z0-9_]*\)=.*/\1/p')
(cd "$WORK" && exec env "${unset_orderd[@]}" "$BIN/orderd" --config "$WORK/orderd.toml") >"$WORK/orderd.log" 2>&1 &
PID=$!
BASE="http://127.0.0.1:$HTTP_PORT"
wait_ready "$BASE/readyz" orderd
KEY="$(tr -d '[:space:]' <"$WORK/data/admin.key")"
AUTH="Authorization: Bearer $KEY"
curl -fsS -X POST "$BASE/v1/stock/$SKU/adjustments" -H "$AUTH" -H 'Content-Type: application/json' \
    -d '{"delta": 1000000000000, "reason": "wrk-compare set-up"}' >/dev/null
CUSTOMER="$(curl -fsS -X POST "$BASE/v1/customers" -H "$AUTH" -H 'Content-Type: application/json' \
    -d '{"name": "Bench Customer 0", "email": "bench0@example.com"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
export WRK_KEY="$KEY" WRK_CUSTOMER="$CUSTOMER" WRK_SKU="$SKU"
log "orderd pid $PID on $BASE: ${WARMUP_S} s warm-up, ${DURATION_S} s measured"
ORDERD_RESULT="$(measure orderd "$BASE")"
CONFIRMED="$(curl -fsS "$BASE/v1/stock/$SKU" -H "$AUTH" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["reserved"])')"
stop_server

# --- the bare handler ------------------------------------------------------------------------
BARE_PORT="$(free_port)"
"$BIN/orderd-bench" serve-bare --listen "127.0.0.1:$BARE_PORT" --workers "$CORES" >"$WORK/bare.log" 2>&1 &
PID=$!
wait_ready "http://127.0.0.1:$BARE_PORT/readyz" bare
log "bare handler pid $PID on 127.0.0.1:$BARE_PORT: ${WARMUP_S} s warm-up, ${DURATION_S} s measured"
BARE_RESULT="$(measure bare "http://127.0.0.1:$BARE_PORT")"
stop_server

# --- the table -------------------------------------------------------------------------------
# (`wrk --version` prints its usage too and exits 1.)
WRK_VERSION="$( (wrk --version 2>&1 || true) | awk 'NR == 1 {print $2}')"
python3 - "$ORDERD_RESULT" "$BARE_RESULT" "$TICKS" "$CONFIRMED" <<PY
import sys
ticks = int(sys.argv[3])
confirmed = int(sys.argv[4])
rows = []
for name, durability, result in (
    ("orderd", "fsync per group commit (sync)", sys.argv[1]),
    ("http-bare", "none (no storage)", sys.argv[2]),
):
    requests, duration_us, p50, p99, non2xx, socket_errors, cpu, warm = (int(v) for v in result.split())
    rows.append(dict(warm=warm,
        name=name, durability=durability, requests=requests,
        rate=requests / (duration_us / 1e6), p50=p50 / 1000, p99=p99 / 1000,
        non2xx=non2xx, socket_errors=socket_errors,
        cpu_us=(cpu / ticks) * 1e6 / requests if requests else float("nan")))
def ms(v):
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"
print(f"wrk ($WRK_VERSION) on orderd and the bare handler, $CORES cores shared by wrk and the server, one server at a time\n")
print("\`\`\`sh\nwrk -t$THREADS -c$CONNECTIONS -d${DURATION_S}s --timeout 10s --latency -s ops/wrk-order.lua http://127.0.0.1:PORT/v1/orders\n\`\`\`\n")
print("| server | durability | connections | requests/s | requests | non-2xx / socket errors | p50 ms | p99 ms | server CPU µs/request | × http-bare |")
print("|---|---|---|---|---|---|---|---|---|---|")
bare = rows[1]["rate"]
for row in rows:
    ratio = f" {row['rate'] / bare:.2f} " if row["name"] != "http-bare" else " "
    print(f"| {row['name']} | {row['durability']} | {$CONNECTIONS} | {row['rate']:,.0f} | {row['requests']:,} "
          f"| {row['non2xx']:,} / {row['socket_errors']:,} | {ms(row['p50'])} | {ms(row['p99'])} "
          f"| {row['cpu_us']:.1f} |{ratio}|")
print(f"\nserver CPU µs/request: user + system time of the server process (/proc/PID/stat, {ticks} ticks/s) "
      f"during the measured run, divided by the requests wrk counted. ${WARMUP_S} s of warm-up before each run, not measured.")
ok = rows[0]["warm"] + rows[0]["requests"] - rows[0]["non2xx"]
print(f"- orderd: {confirmed:,} orders confirmed (reserved units of $SKU after the run); wrk counted {ok:,} "
      f"answers 2xx (warm-up {rows[0]['warm']:,}, measured {rows[0]['requests'] - rows[0]['non2xx']:,}); "
      f"the difference, {confirmed - ok:,}, is the requests still in flight when wrk stopped "
      f"(at most $CONNECTIONS per wrk run).")
PY
