//! The event store: an append-only log of streams (one per taskId) with a global order.
//!
//! [`EventStore`] is the seam between the ledger and its backends, each its own crate:
//! `taskledger-store-sled` (embedded, the default), `taskledger-store-postgres`,
//! `taskledger-store-kurrent`; [`MemoryStore`] (tests and models) lives here. Its shape follows
//! EventStoreDB's: stream per taskId, appends with an expected stream length, a global position,
//! caller-chosen (deterministic) event ids.
//!
//! **Architecture invariant:** the store knows events as bytes with a type name and a schema
//! version. It never decodes a payload, so it cannot depend on `domain`.
//!
//! **Architecture invariant:** `append` returns only when its events are durable; an append that
//! returned `Ok` survives any crash.

pub mod chain;
mod error;
#[cfg(feature = "failpoints")]
pub mod failpoints;
mod memory;
pub mod wal_io;

pub use error::StoreError;
pub use memory::MemoryStore;
pub use wal_io::{LogHandle, LogIo, RealLogIo};

use async_trait::async_trait;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use uuid::Uuid;

/// An event to append, already encoded by its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Chosen by the caller, deterministically: the same report always yields the same id.
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u16,
    /// The ledger's own clock when it decided the event (milliseconds since the epoch).
    pub recorded_at_ms: i64,
    pub data: Vec<u8>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub stream: String,
    /// 0-based index of the event in its stream.
    pub version: u64,
    /// 0-based index of the event in the store's global order.
    pub position: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u16,
    pub recorded_at_ms: i64,
    pub data: Vec<u8>,
    /// The event's place in its stream's hash chain ([`chain`]): it commits to the stream's
    /// previous event's hash and to this event's content (everything but `recorded_at_ms` and
    /// `position`). Computed by the store as part of the append.
    pub hash: chain::Hash,
}

/// Optimistic concurrency: what the caller believes the stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream holds.
    Any,
    /// The stream holds exactly this many events (0: the stream does not exist yet).
    Length(u64),
}

/// One stream's part of an append: all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAppend {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// Where an accepted stream append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Global position of its first event (of the next event, when it had none).
    pub first_position: u64,
    /// The stream's length after the append.
    pub stream_length: u64,
}

/// A stream append refused because the stream moved under the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    pub expected: ExpectedVersion,
    /// The stream's actual length.
    pub actual: u64,
}

/// What [`EventStore::append`] answers: per stream append, where it landed or its conflict.
pub type AppendReply = Result<Vec<Result<Appended, Conflict>>, StoreError>;

/// Whether a queued append was refused (an error, or a conflict on any of its stream appends).
/// Appends queued `after` it ([`EventStore::queue_append`]) are refused with it, so a caller may
/// decide its next appends on top of ones still in flight without risking that they land on a
/// stream its refused ones never reached.
#[derive(Debug, Clone, Default)]
pub struct AppendFence(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl AppendFence {
    /// Records the answer: refused when it is an error or holds a conflict.
    pub fn settle(&self, reply: &AppendReply) {
        let refused = match reply {
            Ok(results) => results.iter().any(Result::is_err),
            Err(_) => true,
        };
        if refused {
            self.refuse();
        }
    }

    pub fn refuse(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn refused(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// An append [`EventStore::queue_append`] has put in line: await it for the answer
/// [`EventStore::append`] would give (durable when `Ok`).
#[derive(Debug)]
pub struct QueuedAppend {
    fence: AppendFence,
    answer: Answer,
}

#[derive(Debug)]
enum Answer {
    Ready(Option<AppendReply>),
    Waiting(tokio::sync::oneshot::Receiver<AppendReply>),
}

impl QueuedAppend {
    /// An append already answered.
    pub fn ready(reply: AppendReply) -> QueuedAppend {
        let fence = AppendFence::default();
        fence.settle(&reply);
        QueuedAppend {
            fence,
            answer: Answer::Ready(Some(reply)),
        }
    }

    /// An append whose answer comes through `answer`; the store settles `fence` by then.
    pub fn waiting(
        answer: tokio::sync::oneshot::Receiver<AppendReply>,
        fence: AppendFence,
    ) -> QueuedAppend {
        QueuedAppend {
            fence,
            answer: Answer::Waiting(answer),
        }
    }

    /// The fence to queue later appends `after`.
    pub fn fence(&self) -> AppendFence {
        self.fence.clone()
    }

    /// The answer if it has come, without waiting.
    pub fn try_answer(&mut self) -> Option<AppendReply> {
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(self).poll(&mut context) {
            std::task::Poll::Ready(reply) => Some(reply),
            std::task::Poll::Pending => None,
        }
    }
}

impl Future for QueuedAppend {
    type Output = AppendReply;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<AppendReply> {
        match &mut self.get_mut().answer {
            Answer::Ready(reply) => {
                std::task::Poll::Ready(reply.take().unwrap_or(Err(StoreError::Closed)))
            }
            Answer::Waiting(receiver) => std::pin::Pin::new(receiver)
                .poll(context)
                .map(|answer| answer.unwrap_or(Err(StoreError::Closed))),
        }
    }
}

/// The storage seam. Every method is safe to call from many tasks at once.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends each [`StreamAppend`] atomically, in the order given, each checked against its own
    /// expected version (a conflict refuses that one, and the later appends of the same stream in
    /// this call, which were built on it). Returns when every accepted append is
    /// durable. Concurrent calls may share one flush (group commit); appends of one call are
    /// never interleaved with another call's.
    async fn append(
        &self,
        appends: Vec<StreamAppend>,
    ) -> Result<Vec<Result<Appended, Conflict>>, StoreError>;

    /// Puts `appends` in line and returns once they are ordered: everything queued or appended
    /// before this returned commits before them, everything after, after. Await the
    /// [`QueuedAppend`] for the answer `append` would give. With `after` (the fence of an
    /// append this store queued earlier), they are refused ([`StoreError::Fenced`]) if that one
    /// was. A caller can so decide its next appends while the ones before are still flushing.
    ///
    /// The default waits for the whole append before it returns: the same answers, no overlap.
    async fn queue_append(
        &self,
        appends: Vec<StreamAppend>,
        after: Option<AppendFence>,
    ) -> QueuedAppend {
        if after.as_ref().is_some_and(AppendFence::refused) {
            return QueuedAppend::ready(Err(StoreError::Fenced));
        }
        QueuedAppend::ready(self.append(appends).await)
    }

    /// Up to `max` events of `stream` from `from_version`, in stream order.
    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `max` events from global `from_position`, in global order.
    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The position the next appended event will get: every position below it is durable.
    fn head_position(&self) -> u64;

    /// Waits until `head_position() > position` or `timeout` passes; returns the head.
    async fn wait_for(&self, position: u64, timeout: std::time::Duration) -> u64;

    /// A short name for messages: `sled`, `memory`, `postgres`, `kurrentdb`.
    fn backend(&self) -> &'static str;

    /// Finishes what the store still holds in memory (answers queued appends, flushes) before
    /// the process exits. Acknowledged appends are durable already; a store with nothing to
    /// finish does nothing.
    fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The group committer's counters, for a backend that keeps them (sled).
    fn commit_stats(&self) -> Option<std::sync::Arc<CommitStats>> {
        None
    }

    /// Moves `streams` (every event each holds now) out of the hot store into cold storage,
    /// erasing nothing: every read answers as before, hashes and digests included, and appends
    /// to a moved stream go on from its head. Which streams may move is the caller's (domain)
    /// decision. `progress(done, total)` counts events. Only the embedded sled store keeps a
    /// hot/cold split ([`crate::segment`]); the servers keep every event in their own storage
    /// and say so.
    async fn retain(
        &self,
        streams: Vec<String>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Retained, StoreError> {
        let _ = (streams, progress);
        Err(StoreError::Unsupported(format!(
            "retention into cold segments is for the embedded sled store; the {} backend keeps \
             every event in its own storage (use the server's own tiering or partitioning)",
            self.backend()
        )))
    }
}

/// What [`EventStore::retain`] moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retained {
    /// Streams moved (those with events still hot).
    pub streams: u64,
    /// Events moved.
    pub events: u64,
    /// The segment files written, in the store's directory.
    pub segments: Vec<std::path::PathBuf>,
    /// Bytes of the segment files written.
    pub segment_bytes: u64,
    /// The hot store's bytes on disk before and after (sled's files and the write-ahead log).
    pub hot_bytes_before: u64,
    pub hot_bytes_after: u64,
}

/// [`EventStore::wait_for`] over a backend's watched head.
/// Waits until the head (the number of stored events) passes `after`, or `timeout`: the
/// backends' `wait_for` share it.
pub async fn wait_for_head(
    mut head: tokio::sync::watch::Receiver<u64>,
    position: u64,
    timeout: std::time::Duration,
) -> u64 {
    let _ = tokio::time::timeout(timeout, head.wait_for(|head| *head > position)).await;
    let now = *head.borrow();
    now
}

/// One store shared by the ledger, the projections and the queries.
pub type SharedStore = std::sync::Arc<dyn EventStore>;

/// Rejects stream names the key encodings cannot hold.
/// A stream name's rule, for every backend: not empty, at most [`STREAM_BYTES_MAX`] bytes.
pub fn check_stream_name(stream: &str) -> Result<(), StoreError> {
    if stream.is_empty() || stream.len() > STREAM_BYTES_MAX || stream.contains('\0') {
        return Err(StoreError::InvalidStream {
            stream: stream.chars().take(80).collect(),
            problem: format!("must be 1..={STREAM_BYTES_MAX} bytes without NUL"),
        });
    }
    Ok(())
}

/// Stream names: taskIds are limited to 512 bytes; the store allows a little more for prefixes.
pub const STREAM_BYTES_MAX: usize = 1024;
/// One event's payload. Reports are limited to 256 KiB, so an event never comes near this.
pub const EVENT_BYTES_MAX: usize = 1024 * 1024;
/// Events in one stream append: a decision writes at most two; batches of decisions more.
pub const APPEND_EVENTS_MAX: usize = 65_536;
/// Payload bytes in one append call (all its stream appends): one commit's log record stays far
/// below [`wal`]'s record limit.
pub const APPEND_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Counters of the committer, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Group commits written (one `apply_batch` + one flush each).
    pub commits: AtomicU64,
    /// Events written.
    pub events: AtomicU64,
    /// Append calls answered.
    pub requests: AtomicU64,
    /// Time spent encoding and checking expected versions.
    pub stage_nanos: AtomicU64,
    /// Time spent in `apply_batch`.
    pub apply_nanos: AtomicU64,
    /// Time spent logging commits durably (write-ahead log record + `fdatasync`).
    pub flush_nanos: AtomicU64,
    /// Bytes of write-ahead log records made durable (what acknowledging the commits wrote).
    pub logged_bytes: AtomicU64,
    /// Checkpoints of the write-ahead log.
    pub checkpoints: AtomicU64,
    /// Time spent in checkpoints (sled flush, fsyncs).
    pub checkpoint_nanos: AtomicU64,
    /// Commits the log held that sled did not, applied again when the store opened.
    pub replayed_commits: AtomicU64,
}
