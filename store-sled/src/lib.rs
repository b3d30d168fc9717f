//! The embedded default backend on sled 0.34, with group commit: `taskledger-store-sled`.
//! Its byte formats (write-ahead log records, commit blocks, index entries, cold segments) are
//! in `docs/formats.md`.
//!
//! One committer thread owns every write. Appends queue up while it commits; it then takes all of
//! them (up to [`SledConfig::commit_events_max`] events and [`COMMIT_BYTES_MAX`]), checks each
//! against its expected version, and builds one atomic sled batch (commit blocks plus one small
//! index entry per stream the commit touches: a stream's appends of one commit share it). It
//! logs the batch in the write-ahead log ([`crate::wal`]: one record, `fdatasync`), applies it
//! to sled, and only then answers. sled's own background flush is switched off: sled is flushed
//! (and its files fsynced) at the log's checkpoints, and durability never rests on it. A
//! checkpoint runs on a thread of its own while the committer goes on into the log's other file
//! ([`crate::wal::Wal::turn`]); on open and close it runs in line.
//!
//! If a write or sync fails, the committer cannot know what reached the disk, so the store
//! poisons itself (every later append fails) rather than guess; reopening recovers from disk.
//!
//! Retention ([`retention`]) moves whole streams into cold segment files ([`crate::segment`]);
//! every read here merges the stubs it leaves in the blocks with the segments' records.

mod encoding;
mod recovering;
mod retention;
pub mod segment;
mod wal;

pub use recovering::{RecoveringStore, RecoveryConfig, REOPEN_FREE_BYTES_MIN, REOPEN_PAUSE_MILLIS};
pub use retention::Compacted;
pub use taskledger_store::CommitStats;
pub use wal::WAL_FILE_NAMES;

use crate::encoding::*;
use crate::segment::{Cold, ColdRef};
use crate::wal::{Wal, WalRecord};
use async_trait::async_trait;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use std::time::Instant;
use taskledger_store::chain::{event_hash, Hash, GENESIS};
use taskledger_store::{
    check_stream_name, AppendFence, AppendReply, Appended, Conflict, EventStore, ExpectedVersion,
    QueuedAppend, RecordedEvent, StoreError, StreamAppend, APPEND_BYTES_MAX, APPEND_EVENTS_MAX,
    EVENT_BYTES_MAX,
};
use tokio::sync::{mpsc, oneshot, watch};

/// Settings of the sled backend.
#[derive(Debug, Clone)]
pub struct SledConfig {
    pub path: PathBuf,
    /// sled's page cache. 256 MiB keeps the hot part of millions of streams' indexes in memory
    /// without taking the machine.
    pub cache_capacity_bytes: u64,
    /// Events written by one group commit at most: bounds the commit block (and so the latency
    /// of the writers waiting on it) while letting a bulk ingest amortise one fsync over many.
    pub commit_events_max: usize,
    /// Append calls waiting for the committer at most; beyond, callers wait to enqueue
    /// (backpressure instead of unbounded memory).
    pub queued_appends_max: usize,
    /// Stream lengths the committer keeps in memory to check expected versions without a read.
    pub stream_heads_cached_max: usize,
    /// Bytes of write-ahead log records after which the log turns to its other file and a
    /// checkpoint (sled flushed, its files fsynced, the file left behind retired) runs on its own
    /// thread. Bounds the log's size and the replay on open.
    pub wal_checkpoint_bytes: u64,
    /// The write-ahead log's file operations: the real files, or the storage-fault simulation's
    /// faulty disk ([`taskledger_testkit::fault_disk`]).
    pub wal_io: Arc<dyn taskledger_store::wal_io::LogIo>,
    /// The counters the store adds to. A store opened again with a clone of this config (as
    /// [`crate::RecoveringStore`] reopens it) goes on counting where the last one stopped, so
    /// `/metrics` does not freeze on the first store's counters.
    pub stats: Arc<CommitStats>,
}

impl SledConfig {
    pub fn new(path: impl Into<PathBuf>) -> SledConfig {
        SledConfig {
            path: path.into(),
            cache_capacity_bytes: 256 * 1024 * 1024,
            commit_events_max: 8192,
            queued_appends_max: 16_384,
            stream_heads_cached_max: 1 << 20,
            wal_checkpoint_bytes: 64 * 1024 * 1024,
            wal_io: taskledger_store::wal_io::RealLogIo::shared(),
            stats: Arc::new(CommitStats::default()),
        }
    }
}

/// Payload bytes the committer takes into one commit before it stops taking more requests
/// (one request alone may exceed it, up to [`taskledger_store::APPEND_BYTES_MAX`]).
pub const COMMIT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A commit block is closed once it holds this many bytes and the next event starts a new one
/// (under its own key, in the same atomic batch). Small enough to stay inside sled's pages rather
/// than becoming a separate blob file, and to make reading one event cheap; large enough that a
/// block key costs little per event.
const BLOCK_BYTES_MAX: usize = 32 * 1024;

/// The commit blocks of one group commit.
struct Blocks {
    current: BlockWriter,
    current_first: u64,
    finished: Vec<(u64, Vec<u8>)>,
}

impl Blocks {
    fn new(first_position: u64) -> Blocks {
        Blocks {
            current: BlockWriter::new(),
            current_first: first_position,
            finished: Vec::new(),
        }
    }

    fn push(
        &mut self,
        position: u64,
        stream: &str,
        version: u64,
        event: &taskledger_store::NewEvent,
        hash: &Hash,
    ) {
        if self.current.len() >= BLOCK_BYTES_MAX {
            let full = std::mem::replace(&mut self.current, BlockWriter::new());
            self.finished.push((self.current_first, full.finish()));
            self.current_first = position;
        }
        self.current.push(stream, version, event, hash);
    }

    fn is_empty(&self) -> bool {
        self.current.is_empty() && self.finished.is_empty()
    }

    /// The commit's sled entries: each block under its log key.
    fn into_entries(mut self, entries: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        if !self.current.is_empty() {
            self.finished
                .push((self.current_first, self.current.finish()));
        }
        for (first, bytes) in self.finished {
            entries.push((log_key(first).to_vec(), bytes));
        }
    }
}

type Reply = AppendReply;

struct Request {
    appends: Vec<StreamAppend>,
    reply: oneshot::Sender<Reply>,
    /// Settled when the request is staged (so a request behind it in the same commit sees it).
    fence: AppendFence,
    /// Refused if this one was.
    after: Option<AppendFence>,
}

/// What the committer takes, in order: appends, and the moves of retention (which rewrite
/// blocks, so they must never race a commit).
enum Job {
    Append(Request),
    Retain(retention::Move),
}

/// The sled-backed [`EventStore`].
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    /// The cold segments the blocks' stubs refer to.
    cold: Arc<RwLock<Cold>>,
    /// One retention at a time.
    retaining: tokio::sync::Mutex<()>,
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    head: watch::Receiver<u64>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
    stats: Arc<CommitStats>,
    /// Set by the committer when it starts refusing writes (after a failed write or sync).
    refusing: Arc<AtomicBool>,
}

/// Pause between two tries of [`SledStore::reopen`].
const LOCK_RETRY_MILLIS: u64 = 10;

/// How long [`SledStore::open`] waits out a lock on its directory before refusing it.
pub const OPEN_LOCK_WAIT_MILLIS: u64 = 3_000;

impl SledStore {
    /// [`SledStore::open`] in a process that has just closed or dropped the same store: sled lets
    /// go of its directory's lock a moment after its last handle is dropped (its I/O threads
    /// hold the file), so a lock conflict is waited out, for `wait` at most.
    pub fn reopen(config: SledConfig, wait: std::time::Duration) -> Result<SledStore, StoreError> {
        let started = Instant::now();
        loop {
            match SledStore::open_once(config.clone()) {
                Err(error) if is_lock_conflict(&error) && started.elapsed() < wait => {
                    std::thread::sleep(std::time::Duration::from_millis(LOCK_RETRY_MILLIS));
                }
                other => return other,
            }
        }
    }

    /// Opens (or creates) the store in `config.path`. A directory locked by a store that this
    /// process has just dropped is waited out (for [`OPEN_LOCK_WAIT_MILLIS`] at most: sled lets
    /// go of its lock a moment after its last handle is dropped); one held by another process
    /// is refused after that wait, saying so.
    pub fn open(config: SledConfig) -> Result<SledStore, StoreError> {
        let path = config.path.clone();
        match SledStore::reopen(config, std::time::Duration::from_millis(OPEN_LOCK_WAIT_MILLIS)) {
            Err(error) if is_lock_conflict(&error) => Err(StoreError::Locked(format!(
                "{} is in use (its lock was held for {} ms: is another taskledger running on it?): {error}",
                path.display(),
                OPEN_LOCK_WAIT_MILLIS
            ))),
            other => other,
        }
    }

    fn open_once(config: SledConfig) -> Result<SledStore, StoreError> {
        std::fs::create_dir_all(&config.path).map_err(|e| {
            StoreError::from_io(format_args!("cannot create {}", config.path.display()), &e)
        })?;
        retention::recover_compaction(&config.path)?;
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None)
            .open()
            // sled's own errors (a damaged file among them) do not say where.
            .map_err(|e| {
                let message = format!("cannot open sled's files in {}: {e}", config.path.display());
                // The variant sled's error maps to (a held lock stays `Locked`), with the place.
                match StoreError::from(e) {
                    StoreError::Locked(_) => StoreError::Locked(message),
                    StoreError::NoSpace(_) => StoreError::NoSpace(message),
                    _ => StoreError::Io(message),
                }
            })?;
        let mut upgrade = false;
        let mut format_key_outdated = false;
        match db.get(META_FORMAT_KEY)? {
            Some(found) if found.as_ref() == DIRECTORY_FORMAT.as_bytes() => {}
            // Before cold segments: nothing to rewrite (format-3 blocks are read as they are).
            Some(found) if found.as_ref() == DIRECTORY_FORMAT_BEFORE_SEGMENTS.as_bytes() => {
                format_key_outdated = true;
            }
            // Written before the write-ahead log (everything is in sled, flushed at its close),
            // or before the chain hashes: the blocks get their hashes below.
            Some(found)
                if found.as_ref() == DIRECTORY_FORMAT_BEFORE_WAL.as_bytes()
                    || found.as_ref() == DIRECTORY_FORMAT_BEFORE_HASHES.as_bytes() =>
            {
                upgrade = true;
            }
            Some(found) => {
                return Err(StoreError::Format {
                    found: String::from_utf8_lossy(&found).into_owned(),
                    expected: DIRECTORY_FORMAT.into(),
                })
            }
            None if db.is_empty() => {
                db.insert(META_FORMAT_KEY, DIRECTORY_FORMAT.as_bytes())?;
                db.flush()?;
            }
            None => {
                return Err(StoreError::Format {
                    found: "none (not a taskledger directory)".into(),
                    expected: DIRECTORY_FORMAT.into(),
                })
            }
        }
        // Where sled's files end: the log checks it against the position its checkpoints synced
        // them to (damage to sled's files shows as less).
        let sled_head = recover_head(&db)?;
        let (mut wal, records) = Wal::open(
            &config.path,
            config.wal_checkpoint_bytes,
            sled_head,
            config.wal_io.clone(),
        )?;
        let stats = config.stats.clone();
        let logged = records.len();
        let (next_position, replayed) = replay(&db, sled_head, records)?;
        if upgrade {
            // The log's records are in sled now; the rewrite is idempotent (a crash before the
            // format key is written runs it again from the start).
            let rewritten = add_chain_hashes(&db)?;
            if rewritten > 0 {
                tracing::info!(
                    blocks = rewritten,
                    "gave the events of a store from before the hash chains their hashes"
                );
            }
            db.insert(META_FORMAT_KEY, DIRECTORY_FORMAT.as_bytes())?;
        }
        if format_key_outdated {
            db.insert(META_FORMAT_KEY, DIRECTORY_FORMAT.as_bytes())?;
        }
        let cold = Arc::new(RwLock::new(retention::open_cold(&db, &config.path)?));
        if logged > 0 || upgrade || format_key_outdated {
            wal.checkpoint(&db)?;
        }
        if replayed > 0 {
            tracing::info!(
                commits = replayed,
                from = sled_head,
                to = next_position,
                "applied again the commits the write-ahead log held and sled did not"
            );
        }
        stats
            .replayed_commits
            .store(replayed as u64, Ordering::Relaxed);
        let (head_sender, head) = watch::channel(next_position);
        let (sender, receiver) = mpsc::channel(config.queued_appends_max.max(1));
        let refusing = Arc::new(AtomicBool::new(false));
        let committer = Committer {
            refusing: refusing.clone(),
            stats: stats.clone(),
            db: db.clone(),
            cold: cold.clone(),
            next_position,
            heads: lru::LruCache::new(
                NonZeroUsize::new(config.stream_heads_cached_max.max(1))
                    .unwrap_or(NonZeroUsize::MIN),
            ),
            commit_events_max: config.commit_events_max.max(1),
            poisoned: None,
            head: head_sender,
            wal,
        };
        let thread = std::thread::Builder::new()
            .name("taskledger-committer".into())
            .spawn(move || committer.run(receiver))
            .map_err(|e| StoreError::Io(format!("cannot start the committer thread: {e}")))?;
        Ok(SledStore {
            db,
            path: config.path.clone(),
            cold,
            retaining: tokio::sync::Mutex::new(()),
            sender: Mutex::new(Some(sender)),
            head,
            committer: Mutex::new(Some(thread)),
            stats,
            refusing,
        })
    }

    /// Whether the store refuses writes: a write or sync of its log or of sled failed, so it can
    /// no longer vouch for what is on disk. Only a reopen (which recovers from the disk) takes
    /// writes again ([`crate::RecoveringStore`] does it by itself).
    pub fn refusing_writes(&self) -> bool {
        self.refusing.load(Ordering::SeqCst)
    }

    /// Stops the committer after it has answered every queued append (its closing checkpoint
    /// leaves sled holding everything).
    pub fn close(&self) -> Result<(), StoreError> {
        let sender = self.sender.lock().map_err(|_| StoreError::Closed)?.take();
        drop(sender);
        if let Some(thread) = self
            .committer
            .lock()
            .map_err(|_| StoreError::Closed)?
            .take()
        {
            let _ = thread.join();
        }
        // No flush of sled here: the committer's closing checkpoint made it hold everything
        // (and every other write to sled checkpoints in line); after a failure, nothing rests on
        // sled, and sled 0.34's flush never returns once one of its own writes failed (found by
        // store-sled/tests/no_space.rs: on a full disk, close hung for good).
        Ok(())
    }

    /// The committer's counters.
    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    /// The committer's counters, to keep beyond the store's borrow (metrics).
    pub fn stats_handle(&self) -> Arc<CommitStats> {
        self.stats.clone()
    }

    /// Bytes on disk: sled's files and the write-ahead log.
    pub fn size_on_disk(&self) -> u64 {
        let log: u64 = crate::wal::WAL_FILE_NAMES
            .iter()
            .filter_map(|name| std::fs::metadata(self.path.join(name)).ok())
            .map(|metadata| metadata.len())
            .sum();
        self.db.size_on_disk().unwrap_or(0) + log
    }

    fn read_positions(&self, positions: &[u64]) -> Result<Vec<RecordedEvent>, StoreError> {
        read_positions(&self.db, &self.cold, positions)
    }
}

/// Reads the cold index; a poisoned lock (a panic elsewhere) still holds a valid index, since
/// it is only ever changed by whole-segment inserts and removals.
fn cold_index(cold: &RwLock<Cold>) -> std::sync::RwLockReadGuard<'_, Cold> {
    cold.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The events at `positions` (ascending), from their commit blocks (and, for the stubs there,
/// from the cold segments).
fn read_positions(
    db: &sled::Db,
    cold: &RwLock<Cold>,
    positions: &[u64],
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut out = Vec::with_capacity(positions.len());
    let mut refs: Vec<ColdRef> = Vec::new();
    // The block last read, verified and decompressed.
    let mut block: Option<(u64, BlockRecords<'static>)> = None;
    for &position in positions {
        let cached = matches!(&block, Some((first, records)) if position >= *first && position < first + u64::from(records.count));
        if !cached {
            let (first, value) = block_holding(db, position)?;
            let records = block_records(first, &value)?;
            let owned = BlockRecords {
                count: records.count,
                records: std::borrow::Cow::Owned(records.records.into_owned()),
                hashed: records.hashed,
                stubbed: records.stubbed,
            };
            block = Some((first, owned));
        }
        let Some((first, records)) = &block else {
            unreachable!("set just above")
        };
        if position >= first + u64::from(records.count) {
            return Err(StoreError::Corrupt {
                location: format!("position {position}"),
                detail: "indexed beyond the end of its log block".into(),
            });
        }
        let before = out.len();
        decode_records(*first, records, position, &mut out, &mut refs, before + 1)?;
    }
    if !refs.is_empty() {
        cold_index(cold).fill(&mut out, &refs)?;
    }
    Ok(out)
}

impl Drop for SledStore {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Whether `error` is sled finding its directory locked (by another process, or by this one's
/// store that was just dropped).
pub(crate) fn is_lock_conflict(error: &StoreError) -> bool {
    matches!(error, StoreError::Locked(_))
}

/// The commit block holding `position` (an indexed one): its first position and its bytes.
pub(crate) fn block_holding(db: &sled::Db, position: u64) -> Result<(u64, sled::IVec), StoreError> {
    let (key, value) = db
        .range(log_key(0)..=log_key(position))
        .next_back()
        .transpose()?
        .ok_or_else(|| StoreError::Corrupt {
            location: format!("position {position}"),
            detail: "indexed but no log block holds it".into(),
        })?;
    Ok((log_key_position(&key)?, value))
}

/// A request's events and payload bytes.
fn request_size(request: &Request) -> (usize, usize) {
    request
        .appends
        .iter()
        .fold((0, 0), |(events, bytes), append| {
            (
                events + append.events.len(),
                bytes + append.events.iter().map(|e| e.data.len()).sum::<usize>(),
            )
        })
}

fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One commit's entries (as logged) as sled's atomic batch.
fn sled_batch(entries: Vec<(Vec<u8>, Vec<u8>)>) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (key, value) in entries {
        batch.insert(key, value);
    }
    batch
}

/// Applies, in order, the logged commits sled lacks; returns the head and how many it applied.
fn replay(
    db: &sled::Db,
    mut head: u64,
    records: Vec<WalRecord>,
) -> Result<(u64, usize), StoreError> {
    let mut replayed = 0;
    for (index, record) in records.into_iter().enumerate() {
        if record.next_position <= head {
            continue;
        }
        if record.first_position != head {
            return Err(StoreError::Corrupt {
                location: format!("the write-ahead log's record {index} (of those kept)"),
                detail: format!(
                    "it holds positions {}..{} but sled ends at {head}",
                    record.first_position, record.next_position
                ),
            });
        }
        db.apply_batch(sled_batch(record.entries))?;
        head = record.next_position;
        replayed += 1;
    }
    Ok((head, replayed))
}

fn recover_head(db: &sled::Db) -> Result<u64, StoreError> {
    match db
        .range(log_key(0)..=log_key(u64::MAX))
        .next_back()
        .transpose()?
    {
        None => Ok(0),
        Some((key, value)) => {
            let first = log_key_position(&key)?;
            Ok(first + block_count(first, &value)?)
        }
    }
}

/// A stream's length and the hash of its last event ([`GENESIS`] for an empty stream): its last
/// hot index entry, else the cold segments (a retained stream).
fn stream_head(
    db: &sled::Db,
    cold: &RwLock<Cold>,
    stream: &str,
) -> Result<(u64, Hash), StoreError> {
    match db
        .scan_prefix(stream_prefix(stream))
        .next_back()
        .transpose()?
    {
        None => Ok(cold_index(cold).head(stream).unwrap_or((0, GENESIS))),
        Some((key, value)) => {
            let first_version = stream_key_version(&key)?;
            let positions = decode_positions(stream, &value)?;
            let Some(&last) = positions.last() else {
                return Err(StoreError::Corrupt {
                    location: format!("stream index of {stream:?}"),
                    detail: "an entry without positions".into(),
                });
            };
            let hash = read_positions(db, cold, &[last])?
                .pop()
                .map_or(GENESIS, |event| event.hash);
            Ok((first_version + positions.len() as u64, hash))
        }
    }
}

/// Blocks rewritten per sled batch by [`add_chain_hashes`].
const UPGRADE_BLOCKS_PER_BATCH: usize = 256;

/// Rewrites every commit block of a store from before the chain hashes (formats 1 and 2) as
/// format 3, computing each stream's chain in global order. Returns how many blocks it rewrote.
fn add_chain_hashes(db: &sled::Db) -> Result<u64, StoreError> {
    let mut last: HashMap<String, Hash> = HashMap::new();
    let mut batch = sled::Batch::default();
    let mut in_batch = 0usize;
    let mut rewritten = 0u64;
    for entry in db.range(log_key(0)..=log_key(u64::MAX)) {
        let (key, value) = entry?;
        let first = log_key_position(&key)?;
        let mut events = Vec::new();
        let mut stubs = Vec::new();
        decode_block(first, &value, 0, &mut events, &mut stubs, usize::MAX)?;
        if !stubs.is_empty() {
            return Err(StoreError::Corrupt {
                location: format!("log block {first}"),
                detail: "a stub of a cold event in a directory from before cold segments".into(),
            });
        }
        let mut writer = BlockWriter::new();
        for event in events {
            let previous = last.get(&event.stream).copied().unwrap_or(GENESIS);
            let new = taskledger_store::NewEvent {
                event_id: event.event_id,
                event_type: event.event_type,
                schema_version: event.schema_version,
                recorded_at_ms: event.recorded_at_ms,
                data: event.data,
            };
            let hash = event_hash(&previous, &event.stream, event.version, &new);
            writer.push(&event.stream, event.version, &new, &hash);
            last.insert(event.stream, hash);
        }
        batch.insert(key, writer.finish());
        in_batch += 1;
        rewritten += 1;
        if in_batch >= UPGRADE_BLOCKS_PER_BATCH {
            db.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        db.apply_batch(batch)?;
    }
    Ok(rewritten)
}

struct Committer {
    db: sled::Db,
    cold: Arc<RwLock<Cold>>,
    next_position: u64,
    /// Per stream: its length and its last event's hash.
    heads: lru::LruCache<String, (u64, Hash)>,
    commit_events_max: usize,
    poisoned: Option<String>,
    refusing: Arc<AtomicBool>,
    head: watch::Sender<u64>,
    stats: Arc<CommitStats>,
    wal: Wal,
}

impl Committer {
    fn run(mut self, mut receiver: mpsc::Receiver<Job>) {
        // A retention move taken while gathering a commit: it runs after that commit.
        let mut held: Option<retention::Move> = None;
        loop {
            let first = match held.take().map(Job::Retain) {
                Some(job) => job,
                None => match receiver.blocking_recv() {
                    Some(job) => job,
                    None => break,
                },
            };
            let first = match first {
                Job::Append(request) => request,
                Job::Retain(job) => {
                    self.retain(job);
                    continue;
                }
            };
            let (mut events, mut bytes) = request_size(&first);
            let mut requests = vec![first];
            while events < self.commit_events_max && bytes < COMMIT_BYTES_MAX {
                match receiver.try_recv() {
                    Ok(Job::Append(request)) => {
                        let (more_events, more_bytes) = request_size(&request);
                        events += more_events;
                        bytes += more_bytes;
                        requests.push(request);
                    }
                    Ok(Job::Retain(job)) => {
                        held = Some(job);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit(requests);
            if self.poisoned.is_none() {
                let ended = self.wal.poll_checkpoint();
                self.checkpointed(ended);
            }
            if self.poisoned.is_none() && self.wal.wants_checkpoint() {
                // The checkpoint runs on its own thread; commits go on into the log's other file.
                if let Err(error) = self.wal.turn(&self.db) {
                    self.checkpointed(Err(error));
                }
            }
        }
        // Closing: leave sled holding everything, so the next open has nothing to apply again
        // (nothing to do for a store that wrote nothing since: a read-only command's).
        if self.poisoned.is_none() {
            let ended = self.wal.wait_checkpoint();
            self.checkpointed(ended);
        }
        if self.poisoned.is_none() && !self.wal.is_empty() {
            let started = Instant::now();
            let done = self
                .wal
                .checkpoint(&self.db)
                .map(|()| Some(started.elapsed()));
            self.checkpointed(done);
        }
    }

    /// Counts a checkpoint that ended (`Ok(None)`: none did); after a failed one, the store
    /// refuses further writes.
    fn checkpointed(&mut self, ended: Result<Option<std::time::Duration>, StoreError>) {
        match ended {
            Ok(None) => {}
            Ok(Some(took)) => {
                self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .checkpoint_nanos
                    .fetch_add(nanos(took), Ordering::Relaxed);
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::error!(%reason, "checkpoint failed; the store refuses further writes");
                self.poison(reason);
            }
        }
    }

    /// From now on every write is refused, with `reason`.
    fn poison(&mut self, reason: String) {
        self.refusing.store(true, Ordering::SeqCst);
        self.poisoned = Some(reason);
    }

    fn commit(&mut self, requests: Vec<Request>) {
        if let Some(reason) = &self.poisoned {
            for request in requests {
                request.fence.refuse();
                let _ = request
                    .reply
                    .send(Err(StoreError::Poisoned(reason.clone())));
            }
            return;
        }
        let started = Instant::now();
        let request_count = requests.len() as u64;
        let first_position = self.next_position;
        let mut position = first_position;
        let mut block = Blocks::new(first_position);
        // Per stream: the version of its first event in this commit, and every position after it.
        // One index entry per stream, however many appends (a hot stream's pipelined batches)
        // the commit holds: each sled insert costs microseconds.
        let mut index: HashMap<String, (u64, Vec<u64>)> = HashMap::new();
        // Stream lengths as this commit leaves them, before they are durable.
        let mut overlay: HashMap<String, (u64, Hash)> = HashMap::new();
        let mut replies: Vec<(oneshot::Sender<Reply>, AppendFence, Reply)> =
            Vec::with_capacity(requests.len());
        for request in requests {
            let reply = if request.after.as_ref().is_some_and(AppendFence::refused) {
                Err(StoreError::Fenced)
            } else {
                self.stage(
                    request.appends,
                    &mut overlay,
                    &mut position,
                    &mut block,
                    &mut index,
                )
            };
            request.fence.settle(&reply);
            replies.push((request.reply, request.fence, reply));
        }
        if !block.is_empty() {
            let mut entries = Vec::with_capacity(index.len() + 1);
            block.into_entries(&mut entries);
            for (stream, (first_version, positions)) in index {
                entries.push((
                    stream_key(&stream, first_version),
                    encode_positions(&positions),
                ));
            }
            let staged = Instant::now();
            // Durable first (the log), then visible (sled, then the head).
            let logged = self.wal.append(first_position, position, &entries);
            let logged_at = Instant::now();
            let written = logged.and_then(|length| {
                self.stats.logged_bytes.fetch_add(length, Ordering::Relaxed);
                Ok(self.db.apply_batch(sled_batch(entries))?)
            });
            let stats = &self.stats;
            stats
                .stage_nanos
                .fetch_add(nanos(staged - started), Ordering::Relaxed);
            stats
                .flush_nanos
                .fetch_add(nanos(logged_at - staged), Ordering::Relaxed);
            stats
                .apply_nanos
                .fetch_add(nanos(logged_at.elapsed()), Ordering::Relaxed);
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats
                .events
                .fetch_add(position - first_position, Ordering::Relaxed);
            if let Err(error) = written {
                let reason = error.to_string();
                tracing::error!(%reason, "sled write failed; the store refuses further writes");
                self.poison(reason.clone());
                for (reply, fence, _) in replies {
                    fence.refuse();
                    // The failure itself, typed (a full disk stays `NoSpace`).
                    let _ = reply.send(Err(error.clone()));
                }
                return;
            }
            self.next_position = position;
            for (stream, length) in overlay {
                self.heads.put(stream, length);
            }
            self.head.send_replace(position);
        }
        self.stats
            .requests
            .fetch_add(request_count, Ordering::Relaxed);
        for (reply, _, result) in replies {
            let _ = reply.send(result);
        }
    }

    /// Checks one request's appends and adds the accepted ones to the commit.
    fn stage(
        &mut self,
        appends: Vec<StreamAppend>,
        overlay: &mut HashMap<String, (u64, Hash)>,
        position: &mut u64,
        block: &mut Blocks,
        index: &mut HashMap<String, (u64, Vec<u64>)>,
    ) -> Reply {
        // Validate everything first: a request with bad input stages nothing.
        let bytes: usize = appends
            .iter()
            .flat_map(|append| &append.events)
            .map(|event| event.data.len())
            .sum();
        if bytes > APPEND_BYTES_MAX {
            return Err(StoreError::LimitExceeded {
                what: "payload bytes in one append call",
                actual: bytes,
                limit: APPEND_BYTES_MAX,
            });
        }
        for append in &appends {
            check_stream_name(&append.stream)?;
            if append.events.len() > APPEND_EVENTS_MAX {
                return Err(StoreError::LimitExceeded {
                    what: "events in one stream append",
                    actual: append.events.len(),
                    limit: APPEND_EVENTS_MAX,
                });
            }
            for event in &append.events {
                if event.data.len() > EVENT_BYTES_MAX {
                    return Err(StoreError::LimitExceeded {
                        what: "event payload bytes",
                        actual: event.data.len(),
                        limit: EVENT_BYTES_MAX,
                    });
                }
                if event.event_type.is_empty() || event.event_type.len() > u8::MAX as usize {
                    return Err(StoreError::LimitExceeded {
                        what: "event type name bytes",
                        actual: event.event_type.len(),
                        limit: u8::MAX as usize,
                    });
                }
            }
        }
        let mut results = Vec::with_capacity(appends.len());
        // A stream that conflicted once in this call refuses its later appends of the call too:
        // they were built on top of the refused one.
        let mut conflicted: Vec<String> = Vec::new();
        for append in appends {
            if conflicted.contains(&append.stream) {
                results.push(Err(Conflict {
                    expected: append.expected,
                    actual: overlay.get(&append.stream).map_or(0, |(length, _)| *length),
                }));
                continue;
            }
            let (length, mut previous) = match overlay.get(&append.stream) {
                Some(head) => *head,
                None => match self.heads.get(&append.stream) {
                    Some(head) => *head,
                    None => stream_head(&self.db, &self.cold, &append.stream)?,
                },
            };
            if let ExpectedVersion::Length(expected) = append.expected {
                if expected != length {
                    results.push(Err(Conflict {
                        expected: append.expected,
                        actual: length,
                    }));
                    overlay
                        .entry(append.stream.clone())
                        .or_insert((length, previous));
                    conflicted.push(append.stream);
                    continue;
                }
            }
            let first = *position;
            if append.events.is_empty() {
                results.push(Ok(Appended {
                    first_position: first,
                    stream_length: length,
                }));
                continue;
            }
            let (_, positions) = index
                .entry(append.stream.clone())
                .or_insert_with(|| (length, Vec::new()));
            for (offset, event) in append.events.iter().enumerate() {
                let version = length + offset as u64;
                let hash = event_hash(&previous, &append.stream, version, event);
                block.push(*position, &append.stream, version, event, &hash);
                previous = hash;
                positions.push(*position);
                *position += 1;
            }
            let new_length = length + append.events.len() as u64;
            overlay.insert(append.stream, (new_length, previous));
            results.push(Ok(Appended {
                first_position: first,
                stream_length: new_length,
            }));
        }
        Ok(results)
    }
}

#[async_trait]
impl EventStore for SledStore {
    async fn append(&self, appends: Vec<StreamAppend>) -> Reply {
        self.queue_append(appends, None).await.await
    }

    /// In line once it is in the committer's channel, which the committer takes in order.
    async fn queue_append(
        &self,
        appends: Vec<StreamAppend>,
        after: Option<AppendFence>,
    ) -> QueuedAppend {
        let sender = match self.sender.lock() {
            Ok(sender) => sender.clone(),
            Err(_) => None,
        };
        let Some(sender) = sender else {
            return QueuedAppend::ready(Err(StoreError::Closed));
        };
        let fence = AppendFence::default();
        let (reply, answer) = oneshot::channel();
        let request = Request {
            appends,
            reply,
            fence: fence.clone(),
            after,
        };
        if sender.send(Job::Append(request)).await.is_err() {
            return QueuedAppend::ready(Err(StoreError::Closed));
        }
        QueuedAppend::waiting(answer, fence)
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        check_stream_name(stream)?;
        // The hot index first, then the cold one: retention adds a segment to the cold index
        // before its batch deletes the stream's hot entries, so a read that misses the entries
        // finds the segment.
        let mut positions = Vec::new();
        for entry in self.db.scan_prefix(stream_prefix(stream)) {
            let (key, value) = entry?;
            let first_version = stream_key_version(&key)?;
            for (offset, position) in decode_positions(stream, &value)?.into_iter().enumerate() {
                if first_version + offset as u64 >= from_version && positions.len() < max {
                    positions.push(position);
                }
            }
            if positions.len() >= max {
                break;
            }
        }
        // Only durable events: a block is visible in sled between `apply_batch` and its flush.
        let durable = self.head_position();
        positions.retain(|&position| position < durable);
        let cold = {
            let index = cold_index(&self.cold);
            if index.is_empty() {
                Vec::new()
            } else {
                index.stream_positions(stream)
            }
        };
        if cold.is_empty() {
            return self.read_positions(&positions);
        }
        retention::read_stream_merged(self, stream, from_version, max, cold)
    }

    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let start = match self
            .db
            .range(log_key(0)..=log_key(from_position))
            .next_back()
            .transpose()?
        {
            Some((key, _)) => log_key_position(&key)?,
            None => 0,
        };
        // Only durable events: a block is visible in sled between `apply_batch` and its flush,
        // and a projection must never apply what a crash could take back.
        let durable = self.head_position();
        let max =
            max.min(usize::try_from(durable.saturating_sub(from_position)).unwrap_or(usize::MAX));
        let mut out = Vec::with_capacity(max.min(65_536));
        let mut refs = Vec::new();
        for entry in self.db.range(log_key(start)..=log_key(u64::MAX)) {
            if out.len() >= max {
                break;
            }
            let (key, value) = entry?;
            decode_block(
                log_key_position(&key)?,
                &value,
                from_position,
                &mut out,
                &mut refs,
                max,
            )?;
        }
        if !refs.is_empty() {
            cold_index(&self.cold).fill(&mut out, &refs)?;
        }
        Ok(out)
    }

    fn head_position(&self) -> u64 {
        *self.head.borrow()
    }

    async fn wait_for(&self, position: u64, timeout: Duration) -> u64 {
        taskledger_store::wait_for_head(self.head.clone(), position, timeout).await
    }

    fn backend(&self) -> &'static str {
        "sled"
    }

    fn close(&self) -> Result<(), StoreError> {
        SledStore::close(self)
    }

    fn commit_stats(&self) -> Option<Arc<CommitStats>> {
        Some(self.stats_handle())
    }

    async fn retain(
        &self,
        streams: Vec<String>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<taskledger_store::Retained, StoreError> {
        SledStore::retain(self, streams, progress).await
    }
}
