#!/usr/bin/env bash
# The projection crash loop: runs tests/projection_crash.rs N times (default 20), each with a new
# seed. Every run SIGKILLs 12 catch-ups and 6 rebuilds of the read models at random moments and
# checks that the checkpoint never goes back and that the models equal a full rebuild (digests).
# Stops at the first failure; replay it with TASKLEDGER_CRASH_SEED=<seed printed by that run>.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
cargo build --release --bin taskledger && cargo test --release -p taskledger-bench --test projection_crash --no-run
for ((i = 1; i <= runs; i++)); do
    if ! output=$(cargo test --release -p taskledger-bench --test projection_crash -- --nocapture 2>&1); then
        echo "$output" | grep -E "TASKLEDGER_CRASH_SEED|panicked|trial" >&2 || true
        echo "run $i of $runs failed" >&2
        exit 1
    fi
    echo "run $i of $runs: ok ($(echo "$output" | grep -o 'TASKLEDGER_CRASH_SEED=[0-9]*'))"
done
