//! The write-ahead log that makes the sled backend's commits durable.
//!
//! sled 0.34's `flush` is not enough to acknowledge on: it ends in `sync_file_range`, which flushes
//! neither the device's write cache nor the file's metadata, its blob files are never synced, and
//! it hands every write to a pool thread and waits to be woken back (two thread wake-ups per
//! commit, which a busy machine pays in milliseconds). So the committer writes each commit — the
//! exact key/value pairs of its sled batch — as one checksummed record into this log, calls
//! `fdatasync` itself, and only then applies the batch to sled, which flushes at checkpoints only.
//!
//! The log's blocks are written with zeros before records use them (in
//! [`PREPARE_STEP_BYTES`] steps, once), so a record overwrites allocated blocks and `fdatasync`
//! has no file metadata to journal: on this machine's disk that halves the flush (PostgreSQL's
//! `wal_init_zero` does the same for the same reason). A thread of the log's own does it ahead
//! of the records, once they have used half a step, so no commit waits for a step's 4–15 ms; a
//! commit that outruns it waits for it, and one that finds it failed prepares the step itself.
//!
//! Every `checkpoint_bytes` of records, a checkpoint flushes sled, `fsync`s its files, and starts
//! a new generation of the log from the top: the header names the generation, each record carries
//! it, and a scan stops at the first record that is not of the header's generation, fails its
//! checksum or runs past the file (a torn write: never acknowledged). On open, the records of the
//! current generation that sled lacks (sled recovers a prefix of its commits: an atomic batch is
//! there whole or not at all) are applied again, in order.

use crate::StoreError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The log's file name, inside sled's directory (sled leaves files it does not own alone).
pub const WAL_FILE_NAME: &str = "taskledger.wal";
const HEADER_MAGIC: &[u8; 8] = b"TLWAL001";
/// magic, generation, CRC-32 of both.
const HEADER_LEN: usize = 8 + 8 + 4;
/// The header owns the first page; records start after it.
const HEADER_BYTES: u64 = 4096;
const RECORD_MAGIC: u32 = 0x544C_5752;
/// magic, payload length, CRC-32 (of everything after it), reserved, generation, first and next
/// global position of the commit.
const RECORD_HEADER_BYTES: usize = 4 + 4 + 4 + 4 + 8 + 8 + 8;
/// The log grows by this many zeroed (written, synced) bytes ahead of its records.
pub const PREPARE_STEP_BYTES: u64 = 4 * 1024 * 1024;
/// One record's payload at most. The committer's own limits keep commits far below it.
pub const WAL_RECORD_BYTES_MAX: usize = 1 << 30;

/// One commit as logged: sled's key/value pairs, and the global positions it covers.
pub(crate) struct WalRecord {
    pub first_position: u64,
    pub next_position: u64,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

pub(crate) struct Wal {
    file: File,
    /// The thread that zeroes the next step ahead of the records (`None`: commits do it).
    ahead: Option<Ahead>,
    path: PathBuf,
    /// sled's directory, whose files a checkpoint syncs.
    sled_dir: PathBuf,
    generation: u64,
    /// Where the next record goes.
    offset: u64,
    /// Bytes of the file already written (zeros or records) and synced: records go below it.
    prepared: u64,
    /// Bytes the zeroing thread has been asked to prepare.
    requested: u64,
    checkpoint_bytes: u64,
    buffer: Vec<u8>,
}

fn io_error(path: &Path, doing: &str, error: std::io::Error) -> StoreError {
    StoreError::Io(format!("{doing} {}: {error}", path.display()))
}

impl Wal {
    /// Opens the log in `sled_dir` (creating it if missing) and returns the records of its
    /// current generation, oldest first.
    pub fn open(
        sled_dir: &Path,
        checkpoint_bytes: u64,
    ) -> Result<(Wal, Vec<WalRecord>), StoreError> {
        let path = sled_dir.join(WAL_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error(&path, "cannot open", e))?;
        let length = file
            .metadata()
            .map_err(|e| io_error(&path, "cannot stat", e))?
            .len();
        let mut wal = Wal {
            file,
            ahead: None,
            requested: 0,
            path,
            sled_dir: sled_dir.to_owned(),
            generation: 0,
            offset: HEADER_BYTES,
            prepared: 0,
            checkpoint_bytes: checkpoint_bytes.max(HEADER_BYTES + 1),
            buffer: Vec::new(),
        };
        let mut header = [0u8; HEADER_LEN];
        let present = length.min(HEADER_LEN as u64) as usize;
        wal.file
            .read_exact_at(&mut header[..present], 0)
            .map_err(|e| io_error(&wal.path, "cannot read", e))?;
        wal.prepared = length;
        let records = if header.iter().all(|&byte| byte == 0) {
            // New, or its creation was cut short before any commit could use it.
            wal.prepare(HEADER_BYTES + PREPARE_STEP_BYTES)?;
            wal.write_header(1)?;
            sync_dir(sled_dir)?;
            Vec::new()
        } else {
            wal.generation = read_header(&header).ok_or_else(|| StoreError::Corrupt {
                location: wal.path.display().to_string(),
                detail: "the log's header fails its checksum".into(),
            })?;
            scan(&wal.file, length, wal.generation)
                .map_err(|e| io_error(&wal.path, "cannot read", e))?
        };
        let file = wal
            .file
            .try_clone()
            .map_err(|e| io_error(&wal.path, "cannot reopen", e))?;
        wal.ahead = Some(Ahead::start(file, wal.path.clone(), wal.prepared)?);
        wal.requested = wal.prepared;
        Ok((wal, records))
    }

    /// Logs one commit durably: returns once `fdatasync` has, with the record's length in bytes.
    pub fn append(
        &mut self,
        first_position: u64,
        next_position: u64,
        entries: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<u64, StoreError> {
        self.buffer.clear();
        self.buffer.resize(RECORD_HEADER_BYTES, 0);
        self.buffer
            .extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for (key, value) in entries {
            self.buffer
                .extend_from_slice(&(key.len() as u32).to_le_bytes());
            self.buffer.extend_from_slice(key);
            self.buffer
                .extend_from_slice(&(value.len() as u32).to_le_bytes());
            self.buffer.extend_from_slice(value);
        }
        let payload = self.buffer.len() - RECORD_HEADER_BYTES;
        if payload > WAL_RECORD_BYTES_MAX {
            return Err(StoreError::LimitExceeded {
                what: "bytes in one commit's log record",
                actual: payload,
                limit: WAL_RECORD_BYTES_MAX,
            });
        }
        self.buffer[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        self.buffer[4..8].copy_from_slice(&(payload as u32).to_le_bytes());
        self.buffer[16..24].copy_from_slice(&self.generation.to_le_bytes());
        self.buffer[24..32].copy_from_slice(&first_position.to_le_bytes());
        self.buffer[32..40].copy_from_slice(&next_position.to_le_bytes());
        let crc = crc32fast::hash(&self.buffer[12..]);
        self.buffer[8..12].copy_from_slice(&crc.to_le_bytes());
        let end = self.offset + self.buffer.len() as u64;
        if end + PREPARE_STEP_BYTES / 2 > self.requested {
            // Half a step left (or none): have the next one zeroed while records fill this one.
            let target = step_ceil(end) + PREPARE_STEP_BYTES;
            if self
                .ahead
                .as_ref()
                .is_some_and(|ahead| ahead.request(target))
            {
                self.requested = target;
            }
        }
        if end > self.prepared {
            self.wait_prepared(end)?;
        }
        self.file
            .write_all_at(&self.buffer, self.offset)
            .map_err(|e| io_error(&self.path, "cannot write", e))?;
        self.file
            .sync_data()
            .map_err(|e| io_error(&self.path, "cannot fdatasync", e))?;
        let length = end - self.offset;
        self.offset = end;
        if self.buffer.capacity() > 4 * PREPARE_STEP_BYTES as usize {
            // One huge commit must not pin its buffer for good.
            self.buffer = Vec::new();
        }
        Ok(length)
    }

    /// No record since the last checkpoint.
    pub fn is_empty(&self) -> bool {
        self.offset == HEADER_BYTES
    }

    /// The records since the last checkpoint have reached `checkpoint_bytes`.
    pub fn wants_checkpoint(&self) -> bool {
        self.offset >= self.checkpoint_bytes
    }

    /// Makes everything applied to `db` durable in sled itself, then empties the log.
    pub fn checkpoint(&mut self, db: &sled::Db) -> Result<(), StoreError> {
        db.flush()?;
        sync_sled_files(&self.sled_dir)?;
        self.write_header(self.generation + 1)?;
        self.offset = HEADER_BYTES;
        Ok(())
    }

    /// Makes `prepared` reach `end`: waits for the zeroing thread, which [`Wal::append`] has
    /// asked that far. Only once the thread has failed — it writes nothing more then — does this
    /// thread zero the steps itself, so the two never write the same bytes.
    fn wait_prepared(&mut self, end: u64) -> Result<(), StoreError> {
        if let Some(ahead) = &self.ahead {
            match ahead.wait_for(end) {
                Ok(prepared) => {
                    self.prepared = self.prepared.max(prepared);
                    return Ok(());
                }
                Err(prepared) => self.prepared = self.prepared.max(prepared),
            }
        }
        self.prepare(step_ceil(end))
    }

    /// Writes zeros up to `target` bytes and syncs them (data and the file's new size).
    fn prepare(&mut self, target: u64) -> Result<(), StoreError> {
        if target <= self.prepared {
            return Ok(());
        }
        zero(&self.file, self.prepared, target)
            .map_err(|e| io_error(&self.path, "cannot extend", e))?;
        self.prepared = target;
        Ok(())
    }

    fn write_header(&mut self, generation: u64) -> Result<(), StoreError> {
        let mut header = [0u8; HEADER_LEN];
        header[0..8].copy_from_slice(HEADER_MAGIC);
        header[8..16].copy_from_slice(&generation.to_le_bytes());
        let crc = crc32fast::hash(&header[..16]);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        self.file
            .write_all_at(&header, 0)
            .map_err(|e| io_error(&self.path, "cannot write the header of", e))?;
        self.file
            .sync_data()
            .map_err(|e| io_error(&self.path, "cannot fdatasync", e))?;
        self.generation = generation;
        Ok(())
    }
}

/// The end of the step that holds byte `bytes - 1` (at least the first step's).
fn step_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(PREPARE_STEP_BYTES).max(1) * PREPARE_STEP_BYTES
}

/// Writes zeros over `from..to` of `file` and syncs them (data and the file's new size).
fn zero(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut at = from;
    while at < to {
        let length = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..length], at)?;
        at += length as u64;
    }
    file.sync_all()
}

/// The zeroing thread's bytes synced, published a MiB at a time (a commit waits for less).
const ZERO_PUBLISH_BYTES: u64 = 1024 * 1024;

/// The zeroing thread, and the channel that asks it for more.
struct Ahead {
    shared: std::sync::Arc<AheadShared>,
    /// Targets to prepare up to; taken on drop, which ends the thread.
    requests: Option<std::sync::mpsc::Sender<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct AheadShared {
    state: std::sync::Mutex<AheadState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct AheadState {
    /// Bytes of the file zeroed and synced (data and size) by the thread.
    prepared: u64,
    /// The thread has ended (an I/O error, a panic, or the log dropped): it writes no more.
    ended: bool,
}

impl AheadShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, AheadState> {
        // Only a number and a flag change under it; a poisoned one still holds valid ones.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Ahead {
    /// Starts the thread over its own handle of the log, which is zeroed and synced up to
    /// `prepared`; it zeroes further when asked.
    fn start(file: File, path: PathBuf, prepared: u64) -> Result<Ahead, StoreError> {
        let shared = std::sync::Arc::new(AheadShared::default());
        shared.lock().prepared = prepared;
        let (sender, receiver) = std::sync::mpsc::channel::<u64>();
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("taskledger-wal-zero".into())
            .spawn(move || zero_ahead(&file, &path, prepared, &theirs, &receiver))
            .map_err(|e| StoreError::Io(format!("cannot start the log's zeroing thread: {e}")))?;
        Ok(Ahead {
            shared,
            requests: Some(sender),
            thread: Some(thread),
        })
    }

    /// Asks the thread to prepare up to `target`; false when it has ended.
    fn request(&self, target: u64) -> bool {
        self.requests
            .as_ref()
            .is_some_and(|requests| requests.send(target).is_ok())
    }

    /// Waits until the thread has prepared `end` bytes: `Ok` with how far it got, or `Err` with
    /// how far it got before it ended.
    fn wait_for(&self, end: u64) -> Result<u64, u64> {
        let mut state = self.shared.lock();
        loop {
            if state.prepared >= end {
                return Ok(state.prepared);
            }
            if state.ended {
                return Err(state.prepared);
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The zeroing thread: prepares up to each target asked for, [`ZERO_PUBLISH_BYTES`] at a time,
/// each synced and then published, until the log drops its end of the channel.
fn zero_ahead(
    file: &File,
    path: &Path,
    mut prepared: u64,
    shared: &AheadShared,
    requests: &std::sync::mpsc::Receiver<u64>,
) {
    /// However the thread ends (a panic too), a commit waiting for it stops waiting.
    struct Ended<'a>(&'a AheadShared);
    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            self.0.lock().ended = true;
            self.0.changed.notify_all();
        }
    }
    let _ended = Ended(shared);
    while let Ok(mut target) = requests.recv() {
        while let Ok(further) = requests.try_recv() {
            target = target.max(further);
        }
        while prepared < target {
            let to = target.min(prepared + ZERO_PUBLISH_BYTES);
            if let Err(error) = zero(file, prepared, to) {
                let reason = io_error(path, "cannot extend", error);
                tracing::warn!(%reason, "the log's zeroing thread stopped; commits prepare the log themselves");
                return;
            }
            prepared = to;
            shared.lock().prepared = prepared;
            shared.changed.notify_all();
        }
    }
}

fn read_header(header: &[u8; HEADER_LEN]) -> Option<u64> {
    if &header[0..8] != HEADER_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(header[16..20].try_into().ok()?);
    (crc32fast::hash(&header[..16]) == crc).then(|| u64_at(header, 8))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The valid records of `generation` from the top of the log, up to the first that is not. Reads
/// record by record: after a clean close the first record is already of an older generation, so
/// opening reads a page, not the whole (up to `checkpoint_bytes`) file.
fn scan(file: &File, length: u64, generation: u64) -> std::io::Result<Vec<WalRecord>> {
    let mut records = Vec::new();
    let mut header = [0u8; RECORD_HEADER_BYTES];
    let mut payload = Vec::new();
    let mut at = HEADER_BYTES;
    while at + RECORD_HEADER_BYTES as u64 <= length {
        file.read_exact_at(&mut header, at)?;
        if u32_at(&header, 0) != RECORD_MAGIC || u64_at(&header, 16) != generation {
            break;
        }
        let size = u32_at(&header, 4) as usize;
        let end = at + (RECORD_HEADER_BYTES + size) as u64;
        if size > WAL_RECORD_BYTES_MAX || end > length {
            break;
        }
        payload.resize(size, 0);
        file.read_exact_at(&mut payload, at + RECORD_HEADER_BYTES as u64)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[12..]);
        crc.update(&payload);
        if crc.finalize() != u32_at(&header, 8) {
            break;
        }
        let Some(entries) = decode_entries(&payload) else {
            break;
        };
        records.push(WalRecord {
            first_position: u64_at(&header, 24),
            next_position: u64_at(&header, 32),
            entries,
        });
        at = end;
    }
    Ok(records)
}

fn decode_entries(mut payload: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    fn take<'a>(payload: &mut &'a [u8], length: usize) -> Option<&'a [u8]> {
        if payload.len() < length {
            return None;
        }
        let (taken, rest) = payload.split_at(length);
        *payload = rest;
        Some(taken)
    }
    let count = u32_at(take(&mut payload, 4)?, 0) as usize;
    let mut entries = Vec::with_capacity(count.min(payload.len() / 8));
    for _ in 0..count {
        let key_length = u32_at(take(&mut payload, 4)?, 0) as usize;
        let key = take(&mut payload, key_length)?.to_vec();
        let value_length = u32_at(take(&mut payload, 4)?, 0) as usize;
        let value = take(&mut payload, value_length)?.to_vec();
        entries.push((key, value));
    }
    payload.is_empty().then_some(entries)
}

/// `fsync`s what sled wrote: its log (`db`), its configuration and its blob files (sled syncs
/// blobs never, and its log only with `sync_file_range`).
fn sync_sled_files(sled_dir: &Path) -> Result<(), StoreError> {
    for name in ["db", "conf"] {
        sync_file(&sled_dir.join(name))?;
    }
    let blobs = sled_dir.join("blobs");
    if let Ok(entries) = std::fs::read_dir(&blobs) {
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&blobs, "cannot list", e))?;
            sync_file(&entry.path())?;
        }
        sync_dir(&blobs)?;
    }
    sync_dir(sled_dir)
}

fn sync_file(path: &Path) -> Result<(), StoreError> {
    match File::open(path) {
        Ok(file) => file
            .sync_all()
            .map_err(|e| io_error(path, "cannot fsync", e)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error(path, "cannot open", error)),
    }
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io_error(path, "cannot fsync the directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u8) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| (vec![b'k', i], vec![i; i as usize]))
            .collect()
    }

    #[test]
    fn records_of_the_current_generation_come_back_and_a_torn_tail_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, records) = Wal::open(dir.path(), 1 << 20).unwrap();
        assert!(records.is_empty());
        let first = wal.append(0, 3, &entries(3)).unwrap();
        // Header, entry count, then per entry: key length, key (2 bytes), value length, value.
        assert_eq!(
            first,
            (RECORD_HEADER_BYTES + 4 + (4 + 2 + 4) * 3 + 3) as u64
        );
        wal.append(3, 5, &entries(2)).unwrap();
        let torn_at = wal.offset;
        wal.append(5, 9, &entries(40)).unwrap();
        drop(wal);
        let (_, records) = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spans(&records), [(0, 3), (3, 5), (5, 9)]);
        assert_eq!(records[1].entries, entries(2));
        // Tear the last record: flip one byte of its payload.
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join(WAL_FILE_NAME))
            .unwrap();
        file.write_all_at(&[0xff], torn_at + RECORD_HEADER_BYTES as u64 + 20)
            .unwrap();
        let (_, records) = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(records.len(), 2, "the torn record is not returned");
    }

    /// The global positions each record covers.
    fn spans(records: &[WalRecord]) -> Vec<(u64, u64)> {
        records
            .iter()
            .map(|r| (r.first_position, r.next_position))
            .collect()
    }

    /// Appends records of `record_bytes` until the log passes `past` bytes; returns the spans.
    fn fill(wal: &mut Wal, record_bytes: usize, past: u64) -> Vec<(u64, u64)> {
        let value = vec![7u8; record_bytes];
        let mut spans = Vec::new();
        let mut position = 0;
        while wal.offset < past {
            wal.append(position, position + 1, &[(b"k".to_vec(), value.clone())])
                .unwrap();
            spans.push((position, position + 1));
            position += 1;
        }
        spans
    }

    #[test]
    fn records_across_several_steps_come_back_however_the_log_is_zeroed() {
        for zeroing in ["thread", "none", "failing thread"] {
            let dir = tempfile::tempdir().unwrap();
            let (mut wal, _) = Wal::open(dir.path(), 1 << 30).unwrap();
            match zeroing {
                // Never started: commits prepare the steps themselves.
                "none" => wal.ahead = None,
                // A read-only handle: its first write fails, and commits take over.
                "failing thread" => {
                    let read_only = File::open(&wal.path).unwrap();
                    wal.ahead =
                        Some(Ahead::start(read_only, wal.path.clone(), wal.prepared).unwrap());
                }
                _ => {}
            }
            let filled = fill(&mut wal, 300 * 1024, 3 * PREPARE_STEP_BYTES + 1);
            assert!(
                wal.prepared >= wal.offset,
                "{zeroing}: records past the zeroed bytes"
            );
            match zeroing {
                "thread" => assert!(wal.requested > wal.offset, "asked ahead of the records"),
                "failing thread" => {
                    assert!(wal.ahead.as_ref().unwrap().shared.lock().ended)
                }
                _ => {}
            }
            drop(wal);
            let (_, records) = Wal::open(dir.path(), 1 << 30).unwrap();
            assert_eq!(spans(&records), filled, "{zeroing}");
        }
    }

    #[test]
    fn a_checkpoint_starts_a_new_generation_that_hides_the_old_records() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("sled"))
            .open()
            .unwrap();
        let sled_dir = dir.path().join("sled");
        let (mut wal, _) = Wal::open(&sled_dir, 1 << 20).unwrap();
        wal.append(0, 2, &entries(2)).unwrap();
        wal.append(2, 4, &entries(4)).unwrap();
        wal.checkpoint(&db).unwrap();
        wal.append(4, 5, &entries(1)).unwrap();
        drop(wal);
        let (wal, records) = Wal::open(&sled_dir, 1 << 20).unwrap();
        assert_eq!(wal.generation, 2);
        assert_eq!(
            spans(&records),
            [(4, 5)],
            "the first generation's records are gone"
        );
    }

    #[test]
    fn a_damaged_header_is_an_error_not_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        drop(Wal::open(dir.path(), 1 << 20).unwrap());
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join(WAL_FILE_NAME))
            .unwrap();
        file.write_all_at(&[0x55], 9).unwrap();
        match Wal::open(dir.path(), 1 << 20) {
            Err(StoreError::Corrupt { detail, .. }) => assert!(detail.contains("header")),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a damaged header was taken as valid"),
        }
    }
}
