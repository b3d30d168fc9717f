//! The embedded store, reopened by itself after a failed write.
//!
//! After a write or sync of its log or of sled fails, a [`SledStore`] refuses every later write:
//! it cannot vouch for what reached the disk (after a failed `fsync` Linux marks the pages clean
//! whether or not they were written, so a retry would prove nothing). Reopening is what recovers:
//! the open replays the log's checksummed records into sled, exactly as after a crash. A
//! [`RecoveringStore`] does that reopen by itself, the way PostgreSQL restarts into crash recovery
//! after an `fsync` failure, so a full disk heals once space returns, without restarting `serve`:
//!
//! - the next append after the store started refusing (at most every
//!   [`RecoveryConfig::pause`]) closes it and opens it again, once the file system has
//!   [`RecoveryConfig::free_bytes_min`] free (a reopen onto a disk still full would fail, and
//!   reads would stop meanwhile);
//! - appends meanwhile get the old store's refusal (`Poisoned`, nothing acknowledged); reads go
//!   on through the refusing store until the reopen starts; during it, and after a reopen that
//!   failed until the next one succeeds, reads and writes are `Unavailable` (a 503);
//! - nothing acknowledged is at stake: an append is acknowledged only after its log record was
//!   synced, and the reopen recovers every synced record.

use crate::{SledConfig, SledStore};
use async_trait::async_trait;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use taskledger_store::{
    AppendFence, Appended, CommitStats, Conflict, EventStore, QueuedAppend, RecordedEvent,
    Retained, StoreError, StreamAppend,
};

/// When a [`RecoveringStore`] tries to reopen.
#[derive(Debug, Clone, Copy)]
pub struct RecoveryConfig {
    /// Between two attempts at least.
    pub pause: Duration,
    /// Free bytes the store's file system must have for an attempt.
    pub free_bytes_min: u64,
}

/// Pause between reopen attempts.
pub const REOPEN_PAUSE_MILLIS: u64 = 1_000;
/// Free space a reopen waits for: two of the log's 4 MiB zeroed steps and room for sled.
pub const REOPEN_FREE_BYTES_MIN: u64 = 64 * 1024 * 1024;
/// How long a reopen waits for reads still running on the old store to end.
const READS_DRAIN_MILLIS_MAX: u64 = 5_000;
/// How long a reopen waits for sled to let go of the old store's lock.
const LOCK_WAIT_MILLIS_MAX: u64 = 5_000;
/// How long an append waits for a reopen before it is answered `Unavailable`.
const REOPEN_MILLIS_MAX: u64 = 30_000;

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            pause: Duration::from_millis(REOPEN_PAUSE_MILLIS),
            free_bytes_min: REOPEN_FREE_BYTES_MIN,
        }
    }
}

/// A [`SledStore`] that reopens itself after it starts refusing writes (see the module).
pub struct RecoveringStore {
    config: SledConfig,
    recovery: RecoveryConfig,
    current: Arc<RwLock<Option<Arc<SledStore>>>>,
    /// The last attempt (a reopen, or a failed one).
    attempted: Mutex<Option<Instant>>,
    /// The head as last seen, for [`EventStore::head_position`] while no store is open.
    last_head: AtomicU64,
    reopens: AtomicU64,
}

impl RecoveringStore {
    pub fn open(config: SledConfig, recovery: RecoveryConfig) -> Result<Self, StoreError> {
        let store = SledStore::open(config.clone())?;
        Ok(RecoveringStore {
            last_head: AtomicU64::new(store.head_position()),
            config,
            recovery,
            current: Arc::new(RwLock::new(Some(Arc::new(store)))),
            attempted: Mutex::new(None),
            reopens: AtomicU64::new(0),
        })
    }

    /// Reopens that succeeded so far.
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::SeqCst)
    }

    fn current(&self) -> Option<Arc<SledStore>> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn unavailable(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "the store in {} is being reopened after a failed write",
            self.config.path.display()
        ))
    }

    /// The store to write to: reopened first if it refuses writes and an attempt is due.
    async fn writable(&self) -> Result<Arc<SledStore>, StoreError> {
        match self.current() {
            Some(store) if !store.refusing_writes() => return Ok(store),
            _ => {}
        }
        {
            let mut attempted = self
                .attempted
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let due = attempted.is_none_or(|at| at.elapsed() >= self.recovery.pause);
            if !due || free_bytes(&self.config.path) < self.recovery.free_bytes_min {
                drop(attempted);
                return self.current().ok_or_else(|| self.unavailable());
            }
            *attempted = Some(Instant::now());
        }
        let (current, config) = (self.current.clone(), self.config.clone());
        let reopening = tokio::task::spawn_blocking(move || reopen(&current, config));
        // A reopen that does not end (sled's flush can block for good after its own write
        // failed) keeps going on its own thread; this caller gets an answer.
        let reopened =
            match tokio::time::timeout(Duration::from_millis(REOPEN_MILLIS_MAX), reopening).await {
                Ok(Ok(reopened)) => reopened,
                Ok(Err(_)) => Err(StoreError::Io("the reopen panicked".into())),
                Err(_) => Err(self.unavailable()),
            };
        match reopened {
            Ok(store) => {
                self.reopens.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(path = %self.config.path.display(), "the store was reopened after a failed write and takes writes again");
                eprintln!(
                    "taskledger: the store in {} was reopened after a failed write; it takes writes again",
                    self.config.path.display()
                );
                Ok(store)
            }
            Err(error) => {
                tracing::error!(%error, "reopening the store failed; trying again later");
                self.current().ok_or(error)
            }
        }
    }

    /// `store`'s head, kept for when no store is open.
    fn note_head(&self, store: &SledStore) -> u64 {
        let head = store.head_position();
        self.last_head.store(head, Ordering::SeqCst);
        head
    }
}

/// Closes the refusing store (once its reads have drained) and opens it again in its place. The
/// slot is empty meanwhile (reads are `Unavailable`), never locked for longer than a swap.
fn reopen(
    current: &RwLock<Option<Arc<SledStore>>>,
    config: SledConfig,
) -> Result<Arc<SledStore>, StoreError> {
    let slot = || {
        current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    let taken = {
        let mut slot = slot();
        match slot.as_ref() {
            // Another caller reopened it meanwhile.
            Some(store) if !store.refusing_writes() => return Ok(store.clone()),
            _ => slot.take(),
        }
    };
    if let Some(mut old) = taken {
        old.close()?;
        // sled allows one open of a directory: every read still running on the old store
        // must end before it is dropped.
        let started = Instant::now();
        loop {
            match Arc::try_unwrap(old) {
                Ok(store) => {
                    drop(store);
                    break;
                }
                Err(shared) => {
                    if started.elapsed() >= Duration::from_millis(READS_DRAIN_MILLIS_MAX) {
                        *slot() = Some(shared);
                        return Err(StoreError::Io(
                            "reads kept the refusing store open; reopening later".into(),
                        ));
                    }
                    old = shared;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    let store = Arc::new(SledStore::reopen(
        config,
        Duration::from_millis(LOCK_WAIT_MILLIS_MAX),
    )?);
    *slot() = Some(store.clone());
    Ok(store)
}

/// Free bytes (for unprivileged writers) of the file system holding `path`, or of its nearest
/// existing parent; the maximum when it cannot be told.
fn free_bytes(path: &Path) -> u64 {
    path.ancestors()
        .find(|at| at.exists())
        .and_then(|at| fs2::available_space(at).ok())
        .unwrap_or(u64::MAX)
}

#[async_trait]
impl EventStore for RecoveringStore {
    async fn append(
        &self,
        appends: Vec<StreamAppend>,
    ) -> Result<Vec<Result<Appended, Conflict>>, StoreError> {
        let store = self.writable().await?;
        let appended = store.append(appends).await;
        self.note_head(&store);
        appended
    }

    async fn queue_append(
        &self,
        appends: Vec<StreamAppend>,
        after: Option<AppendFence>,
    ) -> QueuedAppend {
        match self.writable().await {
            Ok(store) => store.queue_append(appends, after).await,
            Err(error) => QueuedAppend::ready(Err(error)),
        }
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let store = self.current().ok_or_else(|| self.unavailable())?;
        store.read_stream(stream, from_version, max).await
    }

    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let store = self.current().ok_or_else(|| self.unavailable())?;
        store.read_all(from_position, max).await
    }

    fn head_position(&self) -> u64 {
        match self.current() {
            Some(store) => self.note_head(&store),
            None => self.last_head.load(Ordering::SeqCst),
        }
    }

    async fn wait_for(&self, position: u64, timeout: Duration) -> u64 {
        match self.current() {
            Some(store) => store.wait_for(position, timeout).await,
            None => {
                tokio::time::sleep(timeout).await;
                self.head_position()
            }
        }
    }

    fn backend(&self) -> &'static str {
        "sled"
    }

    fn close(&self) -> Result<(), StoreError> {
        match self.current() {
            Some(store) => store.close(),
            None => Ok(()),
        }
    }

    fn commit_stats(&self) -> Option<Arc<CommitStats>> {
        self.current().map(|store| store.stats_handle())
    }

    async fn retain(
        &self,
        streams: Vec<String>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Retained, StoreError> {
        let store = self.writable().await?;
        store.retain(streams, progress).await
    }
}
