//! Opening a data directory whose write-ahead log holds arbitrary bytes: the input becomes
//! `taskledger.wal` (and, after the separator `--WAL1--`, `taskledger.1.wal`) of a fresh store
//! directory, then `SledStore::open` runs on it (it replays what the log holds into sled). It
//! must open or return an error, never panic; a store that opens must also close cleanly.
//!
//! Mode byte (the input's first): with bit 0 set the checksums are fixed up before writing —
//! the file header's CRC and every record's whose header and length fit — so that mutated
//! payloads reach the record decoder and the replay instead of stopping at the checksum.
#![no_main]
use libfuzzer_sys::fuzz_target;
use taskledger_store_sled::{SledConfig, SledStore, WAL_FILE_NAMES};

const SEPARATOR: &[u8] = b"--WAL1--";
const HEADER_BYTES: usize = 4096;
const RECORD_MAGIC: u32 = 0x544C_5752;
const RECORD_HEADER_BYTES: usize = 40;

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
        let mut crc = crc32fast::Hasher::new();
        crc.update(&file[at + 12..end]);
        let crc = crc.finalize();
        file[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
}

fn root() -> &'static std::path::Path {
    static ROOT: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("a scratch directory")
    })
    .path()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        Some(at) => (&rest[..at], Some(&rest[at + SEPARATOR.len()..])),
        None => (rest, None),
    };
    let dir = tempfile::tempdir_in(root()).expect("a store directory");
    let events = dir.path().join("events");
    std::fs::create_dir_all(&events).unwrap();
    for (name, bytes) in WAL_FILE_NAMES.iter().zip([Some(first), second]) {
        if let Some(bytes) = bytes {
            let mut bytes = bytes.to_vec();
            if mode & 1 == 1 {
                fix_checksums(&mut bytes);
            }
            std::fs::write(events.join(name), bytes).unwrap();
        }
    }
    let mut config = SledConfig::new(&events);
    config.cache_capacity_bytes = 4 * 1024 * 1024;
    config.queued_appends_max = 16;
    config.stream_heads_cached_max = 64;
    if let Ok(store) = SledStore::open(config) {
        store.close().expect("a store that opened closes");
    }
});
