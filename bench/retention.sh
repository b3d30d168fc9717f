#!/usr/bin/env bash
# Retention on a simulated workload: hot-store bytes before and after `taskledger retain`, the
# cold segments' bytes, and the checks that nothing changed (export byte for byte, digest,
# verify --digest, rebuild --verify).
#
#   bench/retention.sh [TASKS] [DIR]      (defaults: 100000, /tmp/tl-retain)
#   TASKLEDGER_BIN=target/release/taskledger (default) picks the binary.
#
# The simulated workload spans 2026-01-21T08:00Z..2026-01-24T08:36Z: a first run moves what
# ended before 2026-01-23T00:00Z, a second everything that ended.
set -euo pipefail
tasks=${1:-100000}
dir=${2:-/tmp/tl-retain}
bin=${TASKLEDGER_BIN:-target/release/taskledger}
data=$dir/data
mkdir -p "$dir"
if [ ! -f "$dir/sim/reports.ndjson" ]; then
  "$bin" simulate --tasks "$tasks" --seed 42 --out "$dir/sim" >/dev/null
fi
rm -rf "$data"
sizes() { # hot: sled's files; log: the write-ahead log files (preallocated); cold: segments
  local events=$data/events
  local sled log cold
  sled=$(find "$events" -maxdepth 2 \( -name db -o -name conf -o -name 'snap.*' -o -path '*/blobs/*' \) -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
  log=$(find "$events" -maxdepth 1 -name '*.wal' -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
  cold=$({ find "$events/segments" -name '*.seg' -type f -printf '%s\n' 2>/dev/null || true; } | awk '{s+=$1} END {print s+0}')
  echo "$1: sled files $sled bytes, write-ahead log $log bytes, cold segments $cold bytes"
}
timed() { local start end; start=$(date +%s.%N); "$@"; end=$(date +%s.%N); echo "  ($(echo "$end - $start" | bc) s: ${*:2:3})" >&2; }
timed "$bin" --data-dir "$data" ingest "$dir/sim/reports.ndjson" --json
digest=$("$bin" --data-dir "$data" digest)
echo "digest before: $digest"
"$bin" --data-dir "$data" export "$dir/before.ndjson"
sizes "ingested"
timed "$bin" --data-dir "$data" retain --before 2026-01-23T00:00:00Z --no-compact --json
sizes "retained before 2026-01-23, not compacted"
timed "$bin" --data-dir "$data" retain --before 2099-01-01T00:00:00Z --json
sizes "retained every ended stream, compacted"
"$bin" --data-dir "$data" export "$dir/after.ndjson"
cmp "$dir/before.ndjson" "$dir/after.ndjson" && echo "export byte-identical"
[ "$("$bin" --data-dir "$data" digest)" = "$digest" ] && echo "digest unchanged"
timed "$bin" --data-dir "$data" verify --digest "$digest" >/dev/null && echo "verify --digest passes"
timed "$bin" --data-dir "$data" rebuild --verify | tail -1
timed "$bin" --data-dir "$data" rebuild --json
