#!/usr/bin/env python3
"""Webhook delivery throughput (docs/PERFORMANCE.md, "Events and webhooks").

Starts the release `orderd` on a scratch directory with a webhook receiver on 127.0.0.1 (so
`webhooks.allow_private = true`), places N orders with one bulk import and measures how fast
their `order.confirmed` events reach the receiver (events/s), first delivery to last.

    python3 benches/scripts/webhook_throughput.py [N]   # N orders, default 5000
"""
import http.server, json, os, shutil, socket, subprocess, sys, tempfile, threading, time, urllib.request

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/orderd/target"))
binary = os.path.join(target, "release", "orderd")

got = []
lock = threading.Lock()

class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        with lock:
            got.append(time.monotonic())
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass

receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

# Everything the server writes (data, backups, its master key) stays in one scratch directory,
# removed at the end.
work = tempfile.mkdtemp(prefix="orderd-whk-bench-")
data = os.path.join(work, "data")
port = free_port()
env = dict(os.environ,
           ORDERD__HTTP__LISTEN=f"127.0.0.1:{port}",
           ORDERD__TCP__LISTEN=f"127.0.0.1:{free_port()}",
           ORDERD__STORAGE__DATA_DIR=data,
           ORDERD__BACKUP__DIR=os.path.join(work, "backups"),
           ORDERD__BACKUP__OFFSITE=os.path.join(work, "offsite"),
           ORDERD__WEBHOOKS__ALLOW_PRIVATE="true",
           ORDERD__ORDERS__BULK_MAX=str(max(N, 10000)))
if not os.access(binary, os.X_OK):
    sys.exit(f"{binary} is missing: build it first (make bench does)")
server = subprocess.Popen([binary], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
base = f"http://127.0.0.1:{port}"
try:
    for _ in range(200):
        try:
            urllib.request.urlopen(base + "/readyz", timeout=1)
            break
        except Exception:
            time.sleep(0.1)
    key = open(os.path.join(data, "admin.key")).read().strip()

    def call(method, path, body=None, ctype="application/json"):
        req = urllib.request.Request(base + path, method=method, data=body,
                                     headers={"Authorization": f"Bearer {key}", "content-type": ctype})
        with urllib.request.urlopen(req, timeout=600) as resp:
            return resp.read()

    hook_url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    call("POST", "/v1/webhooks", json.dumps({"url": hook_url, "types": ["order.confirmed"]}).encode())
    customer = json.loads(call("POST", "/v1/customers", json.dumps(
        {"name": "Bench", "email": "bench@example.com"}).encode()))["id"]
    call("POST", "/v1/stock/BENCH-1/adjustments", json.dumps({"delta": N * 2, "reason": "bench"}).encode())
    lines = "\n".join(json.dumps({"customer_id": customer, "idempotency_key": f"k{i}",
                                  "lines": [{"sku": "BENCH-1", "qty": 1, "unit_price": 100}]})
                      for i in range(N))
    placed = time.monotonic()
    call("POST", "/v1/orders/bulk", lines.encode(), "application/x-ndjson")
    deadline = time.monotonic() + 600
    while len(got) < N and time.monotonic() < deadline:
        time.sleep(0.05)
    with lock:
        count, first, last = len(got), got[0], got[-1]
    print(f"{count} of {N} events delivered; {count / (last - first):.0f} events/s "
          f"(first to last delivery, {last - first:.2f} s; {last - placed:.2f} s after the import began)")
finally:
    server.terminate()
    server.wait()
    shutil.rmtree(work, ignore_errors=True)
