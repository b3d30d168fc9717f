//! Queries over the read models. Per-task queries read the task's stored record (or, as of an
//! instant, fold its stream); the DLQ, stuck and due queries scan their ordered indexes.

use crate::kv::{try_scan, Kv};
use crate::models::*;
use crate::record::TaskRecord;
use crate::runner::decode;
use crate::ProjectionError;
use serde::Serialize;
use std::collections::BTreeMap;
use taskledger_domain::{Event, TaskId, Timestamp};
use taskledger_store::EventStore;

/// DLQ pages hold at most this many items: a page is one HTTP response or one screen.
pub const PAGE_ITEMS_MAX: usize = 1000;
/// A filtered scan looks at most this many index entries per page, so a filter matching nothing
/// cannot walk a huge index; the page then ends early with a `next` cursor.
pub const SCAN_ENTRIES_MAX: usize = 200_000;
/// Stuck/due listings return at most this many items.
pub const LIST_ITEMS_MAX: usize = 10_000;

/// One stored event, as `history` prints it (SPEC section 7).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub position: u64,
    pub version: u64,
    pub event_id: uuid::Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub recorded_at: Timestamp,
    pub data: serde_json::Value,
}

/// The task's record as stored by the projection runner.
pub fn stored_task(kv: &dyn Kv, task_id: &TaskId) -> Result<Option<TaskRecord>, ProjectionError> {
    kv.get(&task_key(task_id.as_str()))?
        .map(|bytes| decode_record(task_id.as_str(), &bytes))
        .transpose()
}

/// The task's record folded from its stream, from the events with `at ≤ as_of` (all without);
/// `None` when there are none.
pub async fn load_task(
    store: &dyn EventStore,
    task_id: &TaskId,
    as_of: Option<Timestamp>,
) -> Result<Option<TaskRecord>, ProjectionError> {
    let mut record = TaskRecord::default();
    for stored in store.read_stream(task_id.as_str(), 0, usize::MAX).await? {
        let decoded = decode(stored)?;
        if as_of.is_none_or(|as_of| decoded.event.at() <= as_of) {
            record.apply(&decoded.event);
        }
    }
    Ok((record.events > 0).then_some(record))
}

/// The task's stored events in stream order, those with `at ≤ as_of` when given.
pub async fn history(
    store: &dyn EventStore,
    task_id: &TaskId,
    as_of: Option<Timestamp>,
) -> Result<Vec<HistoryEntry>, ProjectionError> {
    let mut entries = Vec::new();
    for record in store.read_stream(task_id.as_str(), 0, usize::MAX).await? {
        let data: serde_json::Value =
            serde_json::from_slice(&record.data).map_err(|error| ProjectionError::Codec {
                stream: record.stream.clone(),
                version: record.version,
                message: error.to_string(),
            })?;
        if let Some(as_of) = as_of {
            let event = Event::decode(&record.event_type, record.schema_version, &record.data)
                .map_err(|error| ProjectionError::Codec {
                    stream: record.stream.clone(),
                    version: record.version,
                    message: error.to_string(),
                })?;
            if event.at() > as_of {
                continue;
            }
        }
        entries.push(HistoryEntry {
            position: record.position,
            version: record.version,
            event_id: record.event_id,
            event_type: record.event_type,
            recorded_at: Timestamp(record.recorded_at_ms),
            data,
        });
    }
    Ok(entries)
}

/// Filters and paging of the DLQ.
#[derive(Debug, Clone, Default)]
pub struct DlqQuery {
    pub queue: Option<String>,
    pub category: Option<String>,
    /// failedAt ≥ since (archivedAt for the archived list).
    pub since: Option<Timestamp>,
    /// failedAt < until.
    pub until: Option<Timestamp>,
    /// The archived executions instead of the DLQ.
    pub archived: bool,
    pub limit: usize,
    /// `next` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DlqPage {
    pub items: Vec<DlqItem>,
    /// Cursor of the next page; `null` on the last.
    pub next: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 4096 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn dlq_page(kv: &dyn Kv, query: &DlqQuery) -> Result<DlqPage, ProjectionError> {
    let kind = if query.archived {
        ARCHIVED_PREFIX
    } else {
        DLQ_PREFIX
    };
    let prefix = match &query.queue {
        Some(queue) => queue_prefix(kind, queue),
        None => vec![kind],
    };
    let from = match &query.cursor {
        Some(cursor) => {
            let mut key = unhex(cursor)
                .filter(|key| key.starts_with(&prefix))
                .ok_or_else(|| {
                    ProjectionError::Query(format!(
                        "cursor {cursor:?} is not a cursor of this listing"
                    ))
                })?;
            key.push(0); // strictly after the last item of the previous page
            key
        }
        None => prefix.clone(),
    };
    let limit = query.limit.clamp(1, PAGE_ITEMS_MAX);
    let mut items = Vec::new();
    let mut next = None;
    let mut scanned = 0usize;
    let mut last_key = Vec::new();
    try_scan(kv, &prefix, &from, &mut |key, value| {
        scanned += 1;
        if items.len() == limit || scanned > SCAN_ENTRIES_MAX {
            next = Some(hex(&last_key));
            return Ok(false);
        }
        last_key = key.to_vec();
        let item: DlqItem = decode_json(key, value)?;
        let at = if query.archived {
            item.archived_at
        } else {
            item.failed_at
        };
        let keep = query
            .category
            .as_ref()
            .is_none_or(|c| item.error_category.as_ref() == Some(c))
            && query
                .since
                .is_none_or(|since| at.is_some_and(|t| t >= since))
            && query
                .until
                .is_none_or(|until| at.is_some_and(|t| t < until));
        if keep {
            items.push(item);
        }
        Ok(true)
    })?;
    Ok(DlqPage { items, next })
}

/// `stats --json` (SPEC section 7).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsView {
    pub queues: BTreeMap<String, QueueStats>,
}

pub fn queue_stats(kv: &dyn Kv, queue: Option<&str>) -> Result<StatsView, ProjectionError> {
    let prefix = match queue {
        Some(queue) => stats_key(queue),
        None => vec![STATS_PREFIX],
    };
    let mut queues = BTreeMap::new();
    try_scan(kv, &prefix, &prefix, &mut |key, value| {
        let name = String::from_utf8_lossy(&key[1..]).into_owned();
        // The prefix of queue "q" also matches queue "q2".
        if queue.is_none_or(|q| q == name) {
            queues.insert(name, decode_json::<QueueStats>(key, value)?);
        }
        Ok(true)
    })?;
    Ok(StatsView { queues })
}

/// A stuck execution: processing since longer than the threshold at the given instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StuckItem {
    #[serde(flatten)]
    pub item: ProcessingItem,
    pub stuck_for_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Items<T> {
    pub items: Vec<T>,
}

fn scan_before<T: serde::de::DeserializeOwned>(
    kv: &dyn Kv,
    prefix: u8,
    before: i64,
    mut keep: impl FnMut(T) -> bool,
) -> Result<(), ProjectionError> {
    let mut count = 0;
    try_scan(kv, &[prefix], &[prefix], &mut |key, value| {
        let Some(time) = key.get(1..9) else {
            return Ok(false);
        };
        if time >= &sortable(before)[..] || count >= LIST_ITEMS_MAX {
            return Ok(false);
        }
        if keep(decode_json::<T>(key, value)?) {
            count += 1;
        }
        Ok(true)
    })
}

/// Executions `processing` since before `at - older_than_ms`, oldest first.
pub fn stuck(
    kv: &dyn Kv,
    at: Timestamp,
    older_than_ms: i64,
    queue: Option<&str>,
) -> Result<Items<StuckItem>, ProjectionError> {
    let mut items = Vec::new();
    // Strictly older than the threshold (seeds/001 `processingStartedAt < now - timeout`).
    scan_before(
        kv,
        PROCESSING_PREFIX,
        at.millis() - older_than_ms,
        |item: ProcessingItem| {
            if queue.is_some_and(|q| q != item.queue) {
                return false;
            }
            let stuck_for_ms = at.millis() - item.processing_started_at.millis();
            items.push(StuckItem { item, stuck_for_ms });
            true
        },
    )?;
    Ok(Items { items })
}

/// `failed` executions whose `nextRetryAt` is at or before `at`, earliest first.
pub fn due(
    kv: &dyn Kv,
    at: Timestamp,
    queue: Option<&str>,
) -> Result<Items<DueItem>, ProjectionError> {
    let mut items = Vec::new();
    scan_before(
        kv,
        DUE_PREFIX,
        at.millis().saturating_add(1),
        |item: DueItem| {
            if queue.is_some_and(|q| q != item.queue) {
                return false;
            }
            items.push(item);
            true
        },
    )?;
    Ok(Items { items })
}
