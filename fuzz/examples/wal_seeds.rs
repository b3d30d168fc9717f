//! Seeds for the `wal_open` target: real write-ahead logs, copied while their store is still
//! open (so their records are live, not yet retired by a checkpoint), trailing zeros cut.
//! Also the `stored_records` seeds: every stored event's payload behind its selector byte.
//! `cargo run --example wal_seeds -- CORPUS_DIR` (bench/fuzz.sh runs it).
use std::sync::Arc;
use taskledger_domain::{Policy, Report};
use taskledger_ingest::{FixedClock, Ledger, LedgerConfig};
use taskledger_store::SharedStore;
use taskledger_store_sled::{SledConfig, SledStore, WAL_FILE_NAMES};

fn trimmed(mut bytes: Vec<u8>) -> Vec<u8> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes.truncate(end.max(20));
    bytes
}

fn main() {
    let corpus = std::path::PathBuf::from(std::env::args().nth(1).expect("CORPUS_DIR"));
    let out = corpus.join("wal_open");
    let records = corpus.join("stored_records");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&records).unwrap();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures");
    let mut reports = Vec::new();
    for name in [
        "partner_pipeline.ndjson",
        "redelivery/reports.ndjson",
        "ui_dlq.ndjson",
    ] {
        let text = std::fs::read_to_string(format!("{fixtures}/{name}")).unwrap();
        reports.extend(text.lines().filter_map(|line| Report::from_json(line).ok()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // checkpoint_bytes: the default (one file) and small (turns: both files live or retired).
    for (seed, checkpoint_bytes) in [(0, 64 << 20), (1, 6000), (2, 20_000)] {
        for take in [3usize, 40, reports.len()] {
            let dir = tempfile::tempdir().unwrap();
            let events = dir.path().join("events");
            let mut config = SledConfig::new(&events);
            config.wal_checkpoint_bytes = checkpoint_bytes;
            let store = Arc::new(SledStore::open(config).unwrap());
            let ledger = Ledger::new(
                store.clone() as SharedStore,
                Policy::default(),
                Arc::new(FixedClock(1_767_000_000_000)),
                LedgerConfig::default(),
            );
            runtime.block_on(async {
                for chunk in reports[..take.min(reports.len())].chunks(5) {
                    ledger.submit_batch(chunk.to_vec()).await.unwrap();
                }
            });
            let files: Vec<Vec<u8>> = WAL_FILE_NAMES
                .iter()
                .map(|name| trimmed(std::fs::read(events.join(name)).unwrap_or_default()))
                .collect();
            for mode in [0u8, 1] {
                let mut input = vec![mode];
                input.extend_from_slice(&files[0]);
                std::fs::write(out.join(format!("seed-{seed}-{take}-{mode}-one")), &input).unwrap();
                input.extend_from_slice(b"--WAL1--");
                input.extend_from_slice(&files[1]);
                std::fs::write(out.join(format!("seed-{seed}-{take}-{mode}-both")), &input)
                    .unwrap();
            }
            if seed == 0 && take == reports.len() {
                use taskledger_store::EventStore as _;
                let events = runtime.block_on(store.read_all(0, 100_000)).unwrap();
                for (index, event) in events.iter().enumerate() {
                    // The target's selector: type index (mod 7) and schema version (top 3 bits).
                    let types = [
                        "ExecutionEnqueued",
                        "ExecutionClaimed",
                        "ExecutionSucceeded",
                        "ExecutionFailed",
                        "ExecutionArchived",
                        "ReportRejected",
                    ];
                    let Some(kind) = types.iter().position(|t| *t == event.event_type) else {
                        continue;
                    };
                    let selector = (32u8..64).find(|s| usize::from(*s) % 7 == kind).unwrap();
                    let mut input = vec![selector];
                    input.extend_from_slice(&event.data);
                    std::fs::write(records.join(format!("seed-event-{index}")), input).unwrap();
                }
            }
            store.close().unwrap();
        }
    }
}
