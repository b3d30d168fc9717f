#!/usr/bin/env bash
# Storage-fault simulation (RELIABILITY.md):  bench/faults.sh SEEDS [--first-seed S] [--steps N]
# Runs `taskledger-bench faults` (release): per seed, a workload of appends through the sled
# store whose write-ahead log sits on a simulated disk (store/src/fault_disk.rs) that drops, keeps
# or tears unsynced writes at power losses, fails syncs (fsyncgate semantics), writes (torn) and
# reads, and fills up; sled is put back as of its last checkpoint at each power loss. After every
# reopen: every acknowledged append present with identical bytes, nothing never appended served,
# positions contiguous, stream versions dense, a store that failed a write refusing the next.
# Figures: target/faults/figures.json; exit 1 (with the replay command) on a failing seed.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:?usage: bench/faults.sh SEEDS [--first-seed S] [--steps N]}
shift
cargo build --release -p taskledger-bench >&2
mkdir -p target/faults
nice -n 10 target/release/taskledger-bench faults --seeds "$seeds" --json target/faults/figures.json "$@"
