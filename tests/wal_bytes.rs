//! The fast slice of the `wal_open` fuzz target (RELIABILITY.md; the long run is
//! `bench/fuzz.sh`): a fresh store directory whose write-ahead log files hold arbitrary or
//! mutated bytes opens or fails with an error, never a panic. Here rather than in store/tests
//! because store/ is another engineer's; it only uses the store's public API.

use proptest::prelude::*;
use std::sync::Arc;
use taskledger_domain::{Policy, Report};
use taskledger_ingest::{FixedClock, Ledger, LedgerConfig};
use taskledger_store::{EventStore, SharedStore};
use taskledger_store_sled::{SledConfig, SledStore, WAL_FILE_NAMES};

const FIXTURE: &str = include_str!("../fixtures/partner_pipeline.ndjson");
const HEADER_BYTES: usize = 4096;
const RECORD_MAGIC: u32 = 0x544C_5752;
const RECORD_HEADER_BYTES: usize = 40;

/// Real log files of a store that holds the fixture, copied while it is open (live records),
/// trailing zeros cut.
fn real_logs() -> &'static [Vec<u8>; 2] {
    static LOGS: std::sync::OnceLock<[Vec<u8>; 2]> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events");
        // The default checkpoint size: no turn, so the live file holds every commit from 0.
        let store = Arc::new(SledStore::open(SledConfig::new(&events)).unwrap());
        let ledger = Ledger::new(
            store.clone() as SharedStore,
            Policy::default(),
            Arc::new(FixedClock(1_767_000_000_000)),
            LedgerConfig::default(),
        );
        let reports: Vec<Report> = FIXTURE
            .lines()
            .filter_map(|l| Report::from_json(l).ok())
            .collect();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                for chunk in reports.chunks(4) {
                    ledger.submit_batch(chunk.to_vec()).await.unwrap();
                }
            });
        let logs = WAL_FILE_NAMES.map(|name| {
            let mut bytes = std::fs::read(events.join(name)).unwrap_or_default();
            let end = bytes.iter().rposition(|&b| b != 0).map_or(20, |i| i + 1);
            bytes.truncate(end.max(20));
            bytes
        });
        store.close().unwrap();
        logs
    })
}

fn fix_checksums(file: &mut [u8]) {
    // The header: magic, generation, synced position, CRC-32 of the three.
    if file.len() >= 28 {
        let crc = crc32fast::hash(&file[..24]);
        file[24..28].copy_from_slice(&crc.to_le_bytes());
    }
    let mut at = HEADER_BYTES;
    while at + RECORD_HEADER_BYTES <= file.len() {
        let word = |i: usize| u32::from_le_bytes(file[at + i..at + i + 4].try_into().unwrap());
        if word(0) != RECORD_MAGIC {
            break;
        }
        let end = at + RECORD_HEADER_BYTES + word(4) as usize;
        if end > file.len() {
            break;
        }
        let crc = crc32fast::hash(&file[at + 12..end]);
        file[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
}

fn open_with(logs: [Option<Vec<u8>>; 2]) -> Result<u64, String> {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events");
    std::fs::create_dir_all(&events).unwrap();
    for (name, bytes) in WAL_FILE_NAMES.iter().zip(logs) {
        if let Some(bytes) = bytes {
            std::fs::write(events.join(name), bytes).unwrap();
        }
    }
    let mut config = SledConfig::new(&events);
    config.cache_capacity_bytes = 4 * 1024 * 1024;
    match SledStore::open(config) {
        Ok(store) => {
            let head = store.head_position();
            store.close().map_err(|e| format!("close: {e}"))?;
            Ok(head)
        }
        Err(error) => Err(error.to_string()),
    }
}

/// Edits in the records' part of a real log (past the header page most of the time).
fn mutated_logs() -> impl Strategy<Value = ([Option<Vec<u8>>; 2], bool)> {
    (
        proptest::collection::vec((any::<u8>(), any::<u32>(), any::<u8>(), 0u8..4), 1..6),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(edits, both, fix)| {
            let mut logs = real_logs().clone();
            for (which, at, byte, kind) in edits {
                let file = &mut logs[usize::from(which & 1)];
                let at = at as usize % (file.len() + 1);
                match kind {
                    0 if at < file.len() => file[at] = byte,
                    1 => file.insert(at, byte),
                    2 if at < file.len() => {
                        file.remove(at);
                    }
                    _ if at > 0 => file.truncate(at),
                    _ => {}
                }
            }
            let [first, second] = logs;
            ([Some(first), both.then_some(second)], fix)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_log_bytes_open_or_fail_never_panic(
        first in proptest::collection::vec(any::<u8>(), 0..6000),
        second in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        fix in any::<bool>(),
    ) {
        let mut first = first;
        if fix {
            fix_checksums(&mut first);
        }
        let _ = open_with([Some(first), second]);
    }

    #[test]
    fn mutated_real_logs_open_or_fail_never_panic((logs, fix) in mutated_logs()) {
        let logs = logs.map(|log| log.map(|mut bytes| {
            if fix {
                fix_checksums(&mut bytes);
            }
            bytes
        }));
        let _ = open_with(logs);
    }
}

/// A control: the real logs alone (sled's own files absent) replay the whole fixture; so do they
/// when the header fails its checksum (a torn header write, or damage: the records are read by
/// their own checksums, store-sled/src/wal.rs); a log whose first record does not start where sled
/// ends is refused, not half-applied.
#[test]
fn real_logs_replay_even_under_a_bad_header() {
    let [first, second] = real_logs().clone();
    let head = open_with([Some(first.clone()), Some(second)]).expect("the real logs open");
    assert!(head > 0, "the logs' records were replayed");
    let mut broken = first;
    broken[9] ^= 0xff;
    let replayed = open_with([Some(broken), None]).expect("a broken header's records");
    assert_eq!(
        replayed, head,
        "every record of the file under the broken header"
    );
    let mut gap = real_logs()[0].clone();
    gap[HEADER_BYTES + 24] ^= 1; // the first record's first position
    fix_checksums(&mut gap);
    let error = open_with([Some(gap), None]).expect_err("a gap before the first record");
    assert!(error.contains("sled ends at 0"), "{error}");
}
