#!/usr/bin/env bash
# Client overhead per report on loopback: starts `taskledger serve` (TASKLEDGER_BIN, else
# target/release/taskledger, else target/debug/taskledger) on a free port in a temporary data
# directory, runs the Python and the Node measurement against it, stops it. Figures: BENCHMARKS.md.
#   clients/bench/run.sh [--claims 2000]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${TASKLEDGER_BIN:-}
[ -n "$bin" ] || { [ -x target/release/taskledger ] && bin=target/release/taskledger; } || true
[ -n "$bin" ] || bin=target/debug/taskledger
python=${PYTHON:-target/venv/bin/python}
[ -x "$python" ] || python=python3
dir=$(mktemp -d)
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --data-dir "$dir/data" --listen "127.0.0.1:$port" >"$dir/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
echo "server: $bin ($("$bin" --version 2>/dev/null || echo unknown)), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
export TASKLEDGER_URL="http://127.0.0.1:$port"
"$python" clients/bench/claim_overhead.py "$@"
node clients/bench/claim_overhead.mjs "$@"
