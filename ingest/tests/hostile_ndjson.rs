//! The fast slice of the fuzzing (RELIABILITY.md; the long runs are `bench/fuzz.sh`): NDJSON
//! ingest of arbitrary and mutated files into an in-memory store never panics, and strict mode
//! appends nothing when any line is bad.

use proptest::prelude::*;
use std::sync::Arc;
use taskledger_domain::Policy;
use taskledger_ingest::{
    ingest_ndjson, FixedClock, IngestError, IngestOptions, Ledger, LedgerConfig,
};
use taskledger_store::{EventStore, MemoryStore, SharedStore};

const FIXTURE: &str = include_str!("../../fixtures/partner_pipeline.ndjson");

fn mutated_file() -> impl Strategy<Value = Vec<u8>> {
    (
        1usize..40,
        proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 0..8),
    )
        .prop_map(|(lines, edits)| {
            let text: Vec<&str> = FIXTURE.lines().take(lines).collect();
            let mut bytes = text.join("\n").into_bytes();
            for (at, byte, kind) in edits {
                let at = usize::from(at) % (bytes.len() + 1);
                match kind {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            bytes
        })
}

fn ingest(bytes: &[u8], skip_invalid: bool) -> (Result<(), IngestError>, u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Arc::new(MemoryStore::new());
        let ledger = Ledger::new(
            store.clone() as SharedStore,
            Policy::default(),
            Arc::new(FixedClock(1_767_000_000_000)),
            LedgerConfig::default(),
        );
        let options = IngestOptions {
            skip_invalid,
            batch_reports_max: 5,
            principal: None,
        };
        let result = ingest_ndjson(
            &ledger,
            || Ok(std::io::Cursor::new(bytes)),
            "hostile.ndjson",
            &options,
            &|_| {},
        )
        .await
        .map(|_| ());
        (result, store.head_position())
    })
}

fn check(bytes: &[u8]) {
    for skip_invalid in [false, true] {
        let (result, head) = ingest(bytes, skip_invalid);
        if let Err(IngestError::Invalid(bad)) = &result {
            assert!(!skip_invalid, "--skip-invalid never fails on bad lines");
            assert!(!bad.is_empty());
            assert_eq!(head, 0, "strict mode appended despite bad lines");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_ingest(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        check(&bytes);
    }

    #[test]
    fn mutated_files_never_panic_ingest(bytes in mutated_file()) {
        check(&bytes);
    }
}

/// A control: one bad line fails strict mode with nothing appended; the clean file appends.
#[test]
fn strict_mode_refuses_a_file_with_a_bad_line() {
    let (clean, head) = ingest(FIXTURE.as_bytes(), false);
    assert!(clean.is_ok());
    assert!(head > 0);
    let broken = format!("{FIXTURE}\n{{\"op\":\n");
    let (result, head) = ingest(broken.as_bytes(), false);
    assert!(matches!(result, Err(IngestError::Invalid(_))));
    assert_eq!(head, 0);
}
