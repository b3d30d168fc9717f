"""schemathesis hooks for taskledger (bench/hostile-http.sh, tests/hostile_http.rs): POST
/v1/reports takes NDJSON, which schemathesis has no serializer for; generated values are sent as
one JSON document per line (a list: one line per item), strings and bytes as they are."""
import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, list):
        return "\n".join(json.dumps(item) for item in value).encode()
    return json.dumps(value).encode()
