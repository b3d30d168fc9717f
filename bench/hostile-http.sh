#!/usr/bin/env bash
# Hostile HTTP against a real `taskledger serve` (RELIABILITY.md):
#   bench/hostile-http.sh [--quick]
# 1. schemathesis (PyPI, into target/venv) against /openapi.json with each role's token and with
#    none: no 5xx for any generated input (--checks not_a_server_error);
# 3. bench/hostile_security.py: the security attacks (a reporter's archive, forged principals,
#    unauthenticated bodies, cross-origin and rebinding requests, reporter-controlled sizes,
#    CSV formulas, sign-in floods, bad token settings) against serves of its own.
# 2. bench/hostile_http.py: idle and half-sent connections, slowloris, oversized heads, garbage,
#    10,000 concurrent connections, while a well-behaved client keeps being answered; RSS and
#    open files sampled. --quick runs smaller counts (what the test suite's slice does in
#    process is in tests/hostile_http.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
bash .ci/install/40-reliability.sh
cargo build --release --bin taskledger >&2
dir=$(mktemp -d)
log=$dir/serve.log
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
export TASKLEDGER_TOKENS="rep-token=reporter,read-token=reader,op-token=operator,all-token=reporter+reader+operator"
target/release/taskledger --data-dir "$dir/data" serve --listen 127.0.0.1:0 >"$log" 2>"$dir/serve.err" &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
address=$(sed -n 's/^listening on //p' "$log")
[ -n "$address" ] || { cat "$dir/serve.err"; exit 1; }
url=http://$address
logs=$PWD/target/hostile-http
mkdir -p "$logs"
venv_bin=$PWD/target/venv/bin
hooks=$PWD/bench
echo "hostile-http: serve pid $pid on $url" >&2
status=0
# schemathesis: every operation, each role (and no token: 401s must not be 5xx either).
examples=200
[ $quick -eq 1 ] && examples=25
for token in all-token rep-token read-token op-token none; do
    header=()
    [ "$token" != none ] && header=(-H "Authorization: Bearer $token")
    # From the scratch directory: schemathesis leaves its cache (.schemathesis/) where it runs.
    # The hooks teach schemathesis to send NDJSON (POST /v1/reports).
    if ! (cd "$dir" && PYTHONPATH="$hooks" SCHEMATHESIS_HOOKS=schemathesis_hooks "$venv_bin/schemathesis" run "$url/openapi.json" "${header[@]}" \
        --checks not_a_server_error --max-examples "$examples" \
        --seed 20 --no-color >"$logs/schemathesis-$token.log" 2>&1); then
        echo "hostile-http: schemathesis with $token found server errors:" >&2
        tail -40 "$logs/schemathesis-$token.log" >&2
        status=1
    fi
    echo "hostile-http: schemathesis $token: $(grep -E 'generated' "$logs/schemathesis-$token.log" | tail -1)"
done
kill -0 "$pid" || { echo "hostile-http: serve died during schemathesis" >&2; exit 1; }
counts=()
[ $quick -eq 1 ] && counts=(--idle 300 --half 300 --drip 30 --concurrent 2000)
target/venv/bin/python bench/hostile_http.py --url "$url" --pid "$pid" \
    --token-reporter all-token --token-reader all-token "${counts[@]}" \
    --json "$logs/figures.json" || status=1
kill -0 "$pid" || { echo "hostile-http: serve died" >&2; exit 1; }
security_counts=()
[ $quick -eq 1 ] && security_counts=(--queues 1000 --rejections 5000 --logins 100)
target/venv/bin/python bench/hostile_security.py --bin target/release/taskledger \
    "${security_counts[@]}" --json "$logs/security.json" || status=1
grep -c " 5[0-9][0-9] \| panicked" "$dir/serve.err" >/dev/null && { echo "hostile-http: serve's log:" >&2; grep -m5 "panicked" "$dir/serve.err" >&2 || true; }
exit $status
