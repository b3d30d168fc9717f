#!/usr/bin/env bash
# The long crash loop: SIGKILL a durable writer at random moments N times (default 200) and check,
# after each restart, that every acknowledged report is present, no decision is half-visible and
# every record passes its checksum. Release build, so each trial writes far more than in CI.
# Replay a failing run with TASKLEDGER_CRASH_SEED=<seed printed at the start>. The second argument
# is the kill window in ms (default 400); a few seconds lets each writer run past the log's first
# zeroed steps, so kills also land while its zeroing thread works ahead. Every other trial turns
# the log every 4 KiB, so kills also land in checkpoints running beside the commits.
set -euo pipefail
cd "$(dirname "$0")/.."
TASKLEDGER_CRASH_TRIALS="${1:-200}" TASKLEDGER_CRASH_KILL_MS_MAX="${2:-400}" \
    cargo test --release -p taskledger-bench --test crash -- --nocapture
