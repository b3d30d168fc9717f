//! `taskledger retain`: move the streams whose every execution ended before an instant into the
//! store's cold storage. The read models say which streams ([`taskledger_projections::retention`]);
//! the store moves them ([`taskledger_store::EventStore::retain`]). Nothing is erased, so the
//! models, the digests and every read stay as they were.

use crate::ReplayError;
use serde::Serialize;
use std::sync::Arc;
use taskledger_domain::Timestamp;
use taskledger_projections::Kv;
use taskledger_store::EventStore;

/// What a retention run did (`retain --json`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionReport {
    /// The cut-off: streams whose last event is before it (and every execution ended) move.
    pub before: Timestamp,
    /// Tasks the models hold.
    pub tasks: u64,
    /// Tasks whose every execution ended before the cut-off (moved now or earlier).
    pub ended: u64,
    /// Streams moved now (the others were cold already).
    pub streams: u64,
    /// Events moved now.
    pub events: u64,
    /// Segment files written.
    pub segments: Vec<String>,
    pub segment_bytes: u64,
    /// The hot store's bytes on disk (sled's files and the write-ahead log) before and after the
    /// move (before any compaction).
    pub hot_bytes_before: u64,
    pub hot_bytes_after: u64,
}

/// Moves the streams the models `kv` (caught up by the caller) say have ended before `before`.
/// `progress(done, total)` counts events moved.
pub async fn retain(
    store: &dyn EventStore,
    kv: Arc<dyn Kv>,
    before: Timestamp,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<RetentionReport, ReplayError> {
    // Every task record is read: a million take seconds, off the async threads.
    let (ended, tasks) = tokio::task::spawn_blocking(move || {
        taskledger_projections::retention::ended_before(kv.as_ref(), before)
    })
    .await
    .map_err(|error| ReplayError::Io(format!("the scan of the task records stopped: {error}")))??;
    let ended_count = ended.len() as u64;
    let streams = ended
        .into_iter()
        .map(|task| task.as_str().to_owned())
        .collect();
    let moved = store.retain(streams, progress).await?;
    Ok(RetentionReport {
        before,
        tasks,
        ended: ended_count,
        streams: moved.streams,
        events: moved.events,
        segments: moved
            .segments
            .iter()
            .map(|path| path.display().to_string())
            .collect(),
        segment_bytes: moved.segment_bytes,
        hot_bytes_before: moved.hot_bytes_before,
        hot_bytes_after: moved.hot_bytes_after,
    })
}
