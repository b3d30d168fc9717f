//! NDJSON ingest (`ingest::ingest_ndjson`) into a fresh in-memory store, strict and with
//! `--skip-invalid`: a summary or an error, never a panic; strict mode appends nothing when any
//! line is bad.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use taskledger_domain::Policy;
use taskledger_ingest::{
    ingest_ndjson, FixedClock, IngestError, IngestOptions, Ledger, LedgerConfig,
};
use taskledger_store::{MemoryStore, SharedStore};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        for skip_invalid in [false, true] {
            let store = Arc::new(MemoryStore::new());
            let ledger = Ledger::new(
                store.clone() as SharedStore,
                Policy::default(),
                Arc::new(FixedClock(1_767_000_000_000)),
                LedgerConfig::default(),
            );
            let options = IngestOptions {
                principal: None,
                skip_invalid,
                batch_reports_max: 7,
            };
            let result = ingest_ndjson(
                &ledger,
                || Ok(std::io::Cursor::new(data)),
                "fuzz",
                &options,
                &|_| {},
            )
            .await;
            if let Err(IngestError::Invalid(bad)) = &result {
                assert!(!skip_invalid, "skip-invalid never fails on bad lines");
                assert!(!bad.is_empty());
                use taskledger_store::EventStore as _;
                assert_eq!(
                    store.head_position(),
                    0,
                    "strict mode appended despite bad lines"
                );
            }
        }
    })
});
