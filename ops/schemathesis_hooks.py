"""schemathesis hooks for ops/contract-test.sh: NDJSON request bodies (POST /v1/orders/bulk), and
an Idempotency-Key unique to each request.

The bulk import's body is declared as a string of NDJSON. A generated string is sent as it is
(each of its lines is then one order line, answered in a 200 NDJSON body, a bad one with its
own error). A value that is not a string (schemathesis's negative data) has no NDJSON form:
it is sent as an empty body, which the server refuses whole (400 invalid_request).
"""

import re
import uuid

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return None


# What the document allows for `Idempotency-Key` (IDEMPOTENCY_KEY_PATTERN in
# gateway/src/http/openapi.rs).
_KEY = re.compile(r"^[\x21-\x7e]([\t\x20-\x7e]*[\x21-\x7e])?$")


@schemathesis.hook
def before_call(ctx, case, kwargs):
    """Makes every valid generated Idempotency-Key unique to its request.

    Generated cases share a few short keys; a key reused with another body is refused by design
    (422 idempotency_conflict), which would hide the operation behind it. A valid key stays
    valid (at most 200 + 33 characters of the same alphabet); an invalid one (a negative case)
    is left as generated.
    """
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    # The coverage phase's probes that leave a header out are sent as generated: editing the
    # case makes schemathesis rebuild it, the left-out `Authorization` included.
    data = getattr(getattr(getattr(case, "meta", None), "phase", None), "data", None)
    scenario = getattr(data, "scenario", None)
    if getattr(scenario, "value", scenario) == "missing_parameter":
        return
    if isinstance(key, str) and len(key) <= 200 and _KEY.match(key):
        headers["Idempotency-Key"] = f"{key}-{uuid.uuid4().hex}"
