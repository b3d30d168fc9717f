//! Bit rot: a byte flipped anywhere in any file of a sled store directory — the write-ahead
//! log's two files, sled's log (`db`), its configuration, snapshots and blob files — is either
//! harmless (the store serves exactly the events it held), repaired (from the log), or detected
//! (opening or reading fails with an error that says what is damaged). Never a store that opens
//! and serves other events, or fewer, without a word.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use taskledger_store::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamAppend};
use taskledger_store_sled::{SledConfig, SledStore};

/// Flips per file (spread over the bytes that are not all zeros, and the first page).
const FLIPS_PER_FILE: usize = 24;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn event(index: usize, length: usize) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::from_u128(index as u128 + 1),
        event_type: "TaskEnqueued".into(),
        schema_version: 1,
        recorded_at_ms: 1_767_000_000_000 + index as i64,
        data: (0..length).map(|i| (i * 31 + index) as u8).collect(),
    }
}

/// Events of one commit of [`fill`].
const COMMIT_EVENTS: usize = 3;

/// Appends 60 events over 6 streams in 20 commits, one of them big enough for a sled blob.
fn fill(store: &SledStore) {
    runtime().block_on(async {
        for commit in 0..20 {
            let appends = (0..COMMIT_EVENTS)
                .map(|i| StreamAppend {
                    stream: format!("task-{}", (commit + i) % 6),
                    expected: ExpectedVersion::Any,
                    events: vec![event(
                        commit * 3 + i,
                        if commit == 7 && i == 0 {
                            300_000
                        } else {
                            40 + commit * 13
                        },
                    )],
                })
                .collect();
            store.append(appends).await.unwrap();
        }
    });
}

/// Everything the store serves: all events, and each stream's.
fn config(dir: &Path) -> SledConfig {
    let mut config = SledConfig::new(dir);
    config.cache_capacity_bytes = 4 * 1024 * 1024;
    // Small: the log turns every few commits, so both its files hold records.
    config.wal_checkpoint_bytes = 8 * 1024;
    config
}

fn served(dir: &Path) -> Result<(Vec<RecordedEvent>, Vec<Vec<RecordedEvent>>), String> {
    let config = config(dir);
    let store = SledStore::open(config).map_err(|e| format!("open: {e}"))?;
    let result = runtime().block_on(async {
        let all = store
            .read_all(0, usize::MAX)
            .await
            .map_err(|e| format!("read_all: {e}"))?;
        let mut streams = Vec::new();
        for stream in 0..6 {
            streams.push(
                store
                    .read_stream(&format!("task-{stream}"), 0, usize::MAX)
                    .await
                    .map_err(|e| format!("read_stream: {e}"))?,
            );
        }
        Ok((all, streams))
    });
    let _ = store.close();
    result
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// The kind of a store file, for the table.
fn kind(path: &Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    if path.parent().is_some_and(|p| p.ends_with("blobs")) {
        "blobs/*".into()
    } else if name.starts_with("snap.") {
        "snap.*".into()
    } else {
        name
    }
}

/// Offsets to flip in `bytes`: the first 64 bytes, then spread over the rest up to the last
/// byte that is not zero (the log files are zeroed ahead of their records).
fn offsets(bytes: &[u8]) -> Vec<usize> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let mut chosen: Vec<usize> = (0..64.min(end)).step_by(8).collect();
    let spread = FLIPS_PER_FILE - chosen.len();
    for i in 0..spread {
        chosen.push(64 + (end.saturating_sub(64)) * i / spread.max(1));
    }
    chosen.retain(|&offset| offset < bytes.len());
    chosen.sort_unstable();
    chosen.dedup();
    chosen
}

#[derive(Default, Debug)]
struct Outcomes {
    harmless: usize,
    detected: usize,
    /// Flips in the last record of a live log: indistinguishable from a torn write (it was the
    /// last written), so dropped like one, with the commit it held.
    torn_like: usize,
    silent: Vec<String>,
    messages: BTreeMap<String, usize>,
}

/// Flips bytes of every file of `original` (one copy per flip) and sorts what each did.
fn flip_every_file(original: &Path, scratch: &Path) -> BTreeMap<String, Outcomes> {
    let expected = served(&copy_of(original, &scratch.join("control"))).expect("the control opens");
    let last_commit = &expected.0[expected.0.len() - COMMIT_EVENTS..];
    let mut table: BTreeMap<String, Outcomes> = BTreeMap::new();
    for file in files(original) {
        let relative = file.strip_prefix(original).unwrap().to_owned();
        let bytes = std::fs::read(&file).unwrap();
        for offset in offsets(&bytes) {
            let copy = copy_of(original, &scratch.join("flip"));
            let mut damaged = bytes.clone();
            damaged[offset] ^= 0x10;
            std::fs::write(copy.join(&relative), &damaged).unwrap();
            let outcomes = table.entry(kind(&file)).or_default();
            match served(&copy) {
                Ok(found) if found == expected => outcomes.harmless += 1,
                Ok((all, _))
                    if last_record_start(&bytes).is_some_and(|start| offset >= start)
                        && all[..] == expected.0[..expected.0.len() - last_commit.len()] =>
                {
                    outcomes.torn_like += 1
                }
                Ok((all, _)) => outcomes.silent.push(format!(
                    "{} byte {offset}: serves {} events, held {}",
                    relative.display(),
                    all.len(),
                    expected.0.len()
                )),
                Err(message) => {
                    outcomes.detected += 1;
                    *outcomes.messages.entry(shorten(&message)).or_default() += 1;
                }
            }
        }
    }
    table
}

/// Where the last record of the newest generation starts in a log file's bytes (records:
/// magic, payload length, CRC, reserved, generation, ...; after the header page).
fn last_record_start(bytes: &[u8]) -> Option<usize> {
    const HEADER_BYTES: usize = 4096;
    const RECORD_HEADER_BYTES: usize = 40;
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let generation = |at: usize| u64::from_le_bytes(bytes[at + 16..at + 24].try_into().unwrap());
    let mut at = HEADER_BYTES;
    let mut last = None;
    while at + RECORD_HEADER_BYTES <= bytes.len()
        && word(at) == 0x544C_5752
        && last.is_none_or(|start| generation(start) == generation(at))
    {
        last = Some(at);
        at += RECORD_HEADER_BYTES + word(at + 4) as usize;
    }
    last
}

fn shorten(message: &str) -> String {
    message
        .split(['/', ':'])
        .filter(|part| !part.starts_with("tmp"))
        .collect::<Vec<_>>()
        .join(":")
        .chars()
        .take(160)
        .collect()
}

fn copy_of(original: &Path, to: &Path) -> PathBuf {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    copy_dir(original, to);
    to.to_owned()
}

fn report(state: &str, table: &BTreeMap<String, Outcomes>) {
    for (kind, outcomes) in table {
        eprintln!(
            "{state} {kind}: {} harmless, {} detected, {} torn-like, {} silent {:?}",
            outcomes.harmless,
            outcomes.detected,
            outcomes.torn_like,
            outcomes.silent.len(),
            outcomes.messages
        );
        for silent in &outcomes.silent {
            eprintln!("  SILENT {silent}");
        }
    }
}

#[test]
fn a_flipped_byte_in_a_closed_store_is_harmless_or_detected() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("events");
    let store = SledStore::open(config(&original)).unwrap();
    fill(&store);
    store.close().unwrap();
    drop(store);
    let table = flip_every_file(&original, dir.path());
    report("closed", &table);
    let silent: usize = table.values().map(|o| o.silent.len()).sum();
    assert_eq!(silent, 0, "damage served as if nothing were wrong");
}

/// The state a crash leaves: the log holds every commit since the store opened, sled's files
/// what sled wrote of them.
#[test]
fn a_flipped_byte_in_a_crashed_store_is_harmless_repaired_or_detected() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("events");
    let store = SledStore::open(config(&original)).unwrap();
    fill(&store);
    let crashed = dir.path().join("crashed");
    copy_dir(&original, &crashed);
    store.close().unwrap();
    drop(store);
    let table = flip_every_file(&crashed, dir.path());
    report("crashed", &table);
    let silent: usize = table.values().map(|o| o.silent.len()).sum();
    assert_eq!(silent, 0, "damage served as if nothing were wrong");
}
