-- wrk script of ops/wrk-compare.sh: every request is the flash sale's order of orderd-bench
-- (one line of one unit of one SKU), `POST /v1/orders` with a bearer key, sent unchanged to
-- orderd and to the bare actix-web handler (`orderd-bench serve-bare`), which parses the same
-- body. Set by the caller:
--   WRK_KEY       the bearer key (orderd's admin key; the bare handler takes any key)
--   WRK_CUSTOMER  the customer id (created in orderd first)
--   WRK_SKU       the SKU (stocked in orderd first), default FLASH-1
-- At the end, one machine-readable line for the caller (latencies in microseconds):
--   wrk-compare: requests=N duration_us=D p50_us=X p99_us=Y non2xx=Z socket_errors=E

local key = os.getenv("WRK_KEY") or error("WRK_KEY is not set")
local customer = os.getenv("WRK_CUSTOMER") or error("WRK_CUSTOMER is not set")
local sku = os.getenv("WRK_SKU") or "FLASH-1"

wrk.method = "POST"
wrk.path = "/v1/orders"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format(
  '{"customer_id":"%s","lines":[{"sku":"%s","qty":1,"unit_price":1999}]}', customer, sku)

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "wrk-compare: requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
