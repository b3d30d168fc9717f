#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo-fuzz, on the stable toolchain with
# `--sanitizer none`: the code is safe Rust, so a panic, an abort, a timeout or running out of
# memory is what a target finds) of every decoder that meets outside bytes. RELIABILITY.md lists
# the targets and the latest figures.
#
#   bench/fuzz.sh SECONDS [TARGET...]     run each target (default: all) for SECONDS, niced
#
# Corpora live in fuzz/corpus/TARGET (kept between runs, seeded from fixtures/ each time);
# crashing inputs land in fuzz/artifacts/TARGET. Prints, per target, the inputs executed and the
# crashes found, and exits 1 if any target crashed. cargo-fuzz is installed if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: bench/fuzz.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(report ingest_ndjson legacy_export mapping_toml stored_records wal_open http_body)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# --sanitizer none: no nightly-only flags, so the stable toolchain builds the targets.
nice -n 19 cargo fuzz build -s none -O >&2
corpus=fuzz/corpus
mkdir -p "$corpus" fuzz/artifacts
# Seeds: fixture lines and files; real write-ahead logs and stored events of the fixtures.
python3 fuzz/seeds.py "$corpus"
(cd fuzz && nice -n 19 cargo run -q --release --example wal_seeds -- "../$corpus") >&2
# Per target: a bigger input limit where whole files are the unit.
max_len() {
    case "$1" in
        wal_open) echo 262144 ;;
        ingest_ndjson | legacy_export | http_body) echo 65536 ;;
        *) echo 8192 ;;
    esac
}
status=0
printf '%-16s %14s %10s %8s %s\n' target inputs exec/s crashes corpus
for target in "${targets[@]}"; do
    log=fuzz/artifacts/$target.log
    mkdir -p "fuzz/artifacts/$target"
    before=$(find "fuzz/artifacts/$target" -type f | wc -l)
    # -rss_limit_mb: a decoder that allocates without bound counts as a crash.
    nice -n 19 "fuzz/target/x86_64-unknown-linux-gnu/release/$target" \
        -max_total_time="$seconds" -max_len="$(max_len "$target")" -rss_limit_mb=2048 \
        -timeout=20 -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" \
        "$corpus/$target" >"$log" 2>&1 || true
    after=$(find "fuzz/artifacts/$target" -type f | wc -l)
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    crashes=$((after - before))
    [ "$crashes" -eq 0 ] || status=1
    printf '%-16s %14s %10s %8s %s\n' "$target" "${runs:-?}" "${rate:-?}" "$crashes" \
        "$(find "$corpus/$target" -type f | wc -l) files"
done
exit $status
