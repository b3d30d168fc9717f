#!/usr/bin/env bash
# Soak (RELIABILITY.md):
#   bench/soak.sh MINUTES [--kill-every SECONDS] [--follower-crash-every SECONDS] [--reporters N] [--readers N] [--config FILE]
# Mixed load (reporters running task lifecycles with reportIds, readers querying every model)
# against a release `taskledger serve` on the embedded store, SIGKILLed and restarted every
# ~20 s (the projection follower runs inside serve, so it dies with it); with
# --follower-crash-every, the follower is also made to crash mid-catch-up inside a running serve
# (TASKLEDGER_FAILPOINT=follower-crash-every:S) and recovers by itself; RSS and open files
# (/proc/PID/fd) sampled every 2 s. At the end: every acknowledged event stored exactly once,
# contiguous positions, every task served with the status its lifecycle gives, and
# `rebuild --verify` equal. Figures: target/soak/figures.json; exit 1 on any problem.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:?usage: bench/soak.sh MINUTES [--kill-every SECONDS] [--follower-crash-every SECONDS] [--reporters N] [--readers N]}
shift
# --follower-crash-every needs TASKLEDGER_FAILPOINT, which only a `failpoints` build reads.
features=()
case " $* " in *" --follower-crash-every "*) features=(--features failpoints) ;; esac
cargo build --release --bin taskledger "${features[@]}" >&2
mkdir -p target/soak
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 bench/soak.py --bin target/release/taskledger --data-dir "$dir/data" --minutes "$minutes" \
    --json target/soak/figures.json "$@"
