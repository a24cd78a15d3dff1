"""schemathesis hooks for ops/contract-test.sh: NDJSON request bodies (POST /v1/orders/bulk).

The bulk import's body is declared as a string of NDJSON. A generated string is sent as it is
(each of its lines is then one order line, answered in a 200 NDJSON body, a bad one with its
own error). A value that is not a string (schemathesis's negative data) has no NDJSON form:
it is sent as an empty body, which the server refuses whole (400 invalid_request).
"""

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return None
