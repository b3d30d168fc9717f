#!/usr/bin/env bash
# Storage-fault simulations (RELIABILITY.md):
#   bench/faults.sh SEEDS [--first-seed S] [--steps N]            the write-ahead log and sled
#   bench/faults.sh --models SEEDS [--first-seed S] [--steps N] [--tasks T]   the read models
#
# The log: `taskledger-bench faults` (release): per seed, a workload of appends through the sled
# store whose write-ahead log sits on a simulated disk (testkit/src/fault_disk.rs) that drops, keeps
# or tears unsynced writes at power losses, fails syncs (fsyncgate semantics), writes (torn) and
# reads, and fills up; sled is put back as of its last checkpoint at each power loss. After every
# reopen: every acknowledged append present with identical bytes, nothing never appended served,
# positions contiguous, stream versions dense, a store that failed a write refusing the next.
# Figures: target/faults/figures.json.
#
# The models: `taskledger-bench models-faults` (release): per seed, the projection runner keeps
# the redb read models, whose file sits on the same simulated disk, up to date with a simulated
# ledger through the same faults, recovering as serve's follower does; after every step every
# entry of the models equals a rebuild at their checkpoint, and no acknowledged checkpoint is
# lost to a power loss. Figures: target/faults/models.json.
#
# Exit 1 (with the replay command) on a failing seed.
set -euo pipefail
cd "$(dirname "$0")/.."
command=faults
figures=target/faults/figures.json
if [ "${1:-}" = "--models" ]; then
    command=models-faults
    figures=target/faults/models.json
    shift
fi
seeds=${1:?usage: bench/faults.sh [--models] SEEDS [--first-seed S] [--steps N]}
shift
cargo build --release -p taskledger-bench >&2
mkdir -p target/faults
nice -n 10 target/release/taskledger-bench "$command" --seeds "$seeds" --json "$figures" "$@"
