//! Queries over the read models. Per-task queries read the task's stored record (or, as of an
//! instant, fold its stream); the DLQ, stuck and due queries scan their ordered indexes.

use crate::kv::{try_scan, Kv};
use crate::models::*;
use crate::record::TaskRecord;
use crate::runner::decode;
use crate::ProjectionError;
use serde::Serialize;
use std::collections::BTreeMap;
use taskledger_domain::event::JSON_SCHEMA_VERSION;
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
    Ok(history_page(store, task_id, as_of, 0, usize::MAX).await?.0)
}

/// Events read from the store per call while a page of history is gathered.
const HISTORY_READ_EVENTS_MAX: usize = 1024;

/// At most `limit` of the task's stored events from stream version `from` on (those with `at ≤
/// as_of` when given), and the version the next page starts at when there are more. Reads the
/// stream in slices, so a page of a long stream costs its own size, not the stream's.
pub async fn history_page(
    store: &dyn EventStore,
    task_id: &TaskId,
    as_of: Option<Timestamp>,
    from: u64,
    limit: usize,
) -> Result<(Vec<HistoryEntry>, Option<u64>), ProjectionError> {
    let mut entries = Vec::new();
    let mut next = from;
    loop {
        let want = limit
            .saturating_sub(entries.len())
            .saturating_add(1)
            .min(HISTORY_READ_EVENTS_MAX);
        let records = store.read_stream(task_id.as_str(), next, want).await?;
        let read = records.len();
        for record in records {
            if entries.len() == limit {
                return Ok((entries, Some(record.version)));
            }
            next = record.version + 1;
            if let Some(entry) = history_entry(record, as_of)? {
                entries.push(entry);
            }
        }
        if read < want {
            return Ok((entries, None));
        }
    }
}

fn history_entry(
    record: taskledger_store::RecordedEvent,
    as_of: Option<Timestamp>,
) -> Result<Option<HistoryEntry>, ProjectionError> {
    let codec = |message: String| ProjectionError::Codec {
        stream: record.stream.clone(),
        version: record.version,
        message,
    };
    let event = Event::decode(&record.event_type, record.schema_version, &record.data)
        .map_err(|error| codec(error.to_string()))?;
    if as_of.is_some_and(|as_of| event.at() > as_of) {
        return Ok(None);
    }
    // A version-1 payload is JSON already: shown as stored. Others as their JSON rendering.
    let data: serde_json::Value = if record.schema_version == JSON_SCHEMA_VERSION {
        serde_json::from_slice(&record.data).map_err(|error| codec(error.to_string()))?
    } else {
        event.to_json()
    };
    Ok(Some(HistoryEntry {
        position: record.position,
        version: record.version,
        event_id: record.event_id,
        event_type: record.event_type,
        recorded_at: Timestamp(record.recorded_at_ms),
        data,
    }))
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
    let mut from = from;
    // The index is ordered by queue, then time: entries of a queue before `since` are skipped
    // by seeking to `since`, and those from `until` on by seeking to the next queue, instead of
    // being read one by one (a time range deep in a million entries costs a few seeks).
    loop {
        let mut seek: Option<Vec<u8>> = None;
        try_scan(kv, &prefix, &from, &mut |key, value| {
            scanned += 1;
            if items.len() == limit || scanned > SCAN_ENTRIES_MAX {
                next = Some(hex(&last_key));
                return Ok(false);
            }
            if let Some((queue_end, time)) = entry_queue_time(key) {
                if let Some(since) = query.since.filter(|since| time < since.millis()) {
                    let mut target = key[..=queue_end].to_vec();
                    target.extend_from_slice(&sortable(since.millis()));
                    seek = Some(target);
                    return Ok(false);
                }
                if query.until.is_some_and(|until| time >= until.millis()) {
                    let mut target = key[..queue_end].to_vec();
                    target.push(1); // past every key of this queue (`queue` + 0 + …)
                    seek = Some(target);
                    return Ok(false);
                }
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
        match seek {
            Some(target) if next.is_none() => from = target,
            _ => break,
        }
    }
    Ok(DlqPage { items, next })
}

/// Where the queue name of a DLQ / archived index key ends (its 0 separator) and the key's
/// instant (`kind` + queue + 0 + instant + executionId).
fn entry_queue_time(key: &[u8]) -> Option<(usize, i64)> {
    let queue_end = 1 + key.get(1..)?.iter().position(|b| *b == 0)?;
    let time: [u8; 8] = key.get(queue_end + 1..queue_end + 9)?.try_into().ok()?;
    Some((queue_end, (u64::from_be_bytes(time) ^ (1 << 63)) as i64))
}

/// The text of a string field in an index entry's JSON, when it holds no escape (then the
/// caller decodes the entry properly): the chart reads one field of many thousand entries.
/// `field` is the quoted name with its colon and opening quote: `"errorCategory":"`.
fn json_text_field<'a>(value: &'a [u8], field: &[u8]) -> Option<&'a str> {
    let first = field.first()?;
    let mut at = 0;
    let start = loop {
        // Jump from quote to quote rather than compare at every byte.
        at += value.get(at..)?.iter().position(|b| b == first)?;
        if value.get(at..at + field.len())? == field {
            break at + field.len();
        }
        at += 1;
    };
    let length = value[start..].iter().position(|b| *b == b'"')?;
    let text = std::str::from_utf8(&value[start..start + length]).ok()?;
    (!text.contains('\\')).then_some(text)
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
    // Saturating: the threshold comes from the caller (`olderThanMs`), any i64.
    scan_before(
        kv,
        PROCESSING_PREFIX,
        at.millis().saturating_sub(older_than_ms),
        |item: ProcessingItem| {
            if queue.is_some_and(|q| q != item.queue) {
                return false;
            }
            let stuck_for_ms = at
                .millis()
                .saturating_sub(item.processing_started_at.millis());
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

/// Tasks a search lists at most: one screen of matches.
pub const SEARCH_ITEMS_MAX: usize = 100;
/// The tasks whose taskId starts with `prefix`, in taskId order (an ordered index walk from the
/// prefix, so it costs the matches, not the ledger's size).
pub fn tasks_with_prefix(
    kv: &dyn Kv,
    prefix: &str,
    limit: usize,
) -> Result<Vec<crate::TaskStatusView>, ProjectionError> {
    let limit = limit.clamp(1, SEARCH_ITEMS_MAX);
    let key = task_key(prefix);
    let mut found = Vec::new();
    try_scan(kv, &key, &key, &mut |key, value| {
        let task_id = parse_stream(&String::from_utf8_lossy(&key[1..]))?;
        let record = decode_record(task_id.as_str(), value)?;
        found.push(record.status_view(&task_id));
        Ok(found.len() < limit)
    })?;
    Ok(found)
}

/// The task an execution belongs to: one lookup in the executionId index (`X`).
pub fn task_of_execution(
    kv: &dyn Kv,
    execution_id: taskledger_domain::ExecutionId,
) -> Result<Option<TaskId>, ProjectionError> {
    match kv.get(&crate::models::execution_key(execution_id))? {
        Some(value) => Ok(Some(parse_stream(&String::from_utf8_lossy(&value))?)),
        None => Ok(None),
    }
}

/// [`dlq_page`] with one more filter: entries whose error message contains `error_text`
/// (case-insensitive). The scan stays on the DLQ index from the cursor and within
/// [`SCAN_ENTRIES_MAX`] entries per page, like the other filters.
pub fn dlq_page_matching(
    kv: &dyn Kv,
    query: &DlqQuery,
    error_text: Option<&str>,
) -> Result<DlqPage, ProjectionError> {
    let Some(text) = error_text.map(str::to_lowercase).filter(|t| !t.is_empty()) else {
        return dlq_page(kv, query);
    };
    let limit = query.limit.clamp(1, PAGE_ITEMS_MAX);
    let mut items = Vec::new();
    let mut cursor = query.cursor.clone();
    let mut scanned = 0usize;
    // Each inner page keeps the other filters; the text filter drops what does not match, and
    // the walk goes on from the inner page's cursor until the page is full or the scan bound is
    // reached.
    loop {
        let inner = dlq_page(
            kv,
            &DlqQuery {
                limit: PAGE_ITEMS_MAX,
                cursor: cursor.clone(),
                ..query.clone()
            },
        )?;
        scanned += PAGE_ITEMS_MAX;
        let mut inner_items = inner.items.into_iter();
        for item in inner_items.by_ref() {
            let matches = item
                .error_message
                .as_ref()
                .is_some_and(|m| m.to_lowercase().contains(&text));
            if matches {
                items.push(item);
                if items.len() == limit {
                    break;
                }
            }
        }
        if items.len() == limit {
            // The page ends at its last item: the next page starts right after it.
            let more = inner_items.next().is_some() || inner.next.is_some();
            let next = items
                .last()
                .filter(|_| more)
                .map(|last| dlq_cursor(query, last));
            return Ok(DlqPage { items, next });
        }
        match inner.next {
            Some(next) if scanned < SCAN_ENTRIES_MAX => cursor = Some(next),
            next => return Ok(DlqPage { items, next }),
        }
    }
}

/// The cursor that continues a DLQ listing right after `item`.
fn dlq_cursor(query: &DlqQuery, item: &DlqItem) -> String {
    let (kind, at) = if query.archived {
        (ARCHIVED_PREFIX, item.archived_at)
    } else {
        (DLQ_PREFIX, item.failed_at)
    };
    let mut key = queue_prefix(kind, &item.queue);
    key.extend_from_slice(&sortable(at.map_or(0, Timestamp::millis)));
    key.extend_from_slice(item.execution_id.0.as_bytes());
    // A cursor of a listing of all queues must keep the listing's prefix (just the kind byte),
    // which this key has too.
    hex(&key)
}

/// Dead-lettered executions by error category over time: one count per category per bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureSeries {
    pub since: Timestamp,
    pub bucket_ms: i64,
    pub buckets: usize,
    /// category → a count per bucket.
    pub counts: BTreeMap<String, Vec<u64>>,
    /// Index entries read; `truncated` when the bound stopped the walk first.
    pub scanned: usize,
    pub truncated: bool,
}

/// Index entries one failure chart reads at most, so a wide window cannot walk a huge index.
pub const SERIES_ENTRIES_MAX: usize = 100_000;
/// Buckets of one failure chart at most.
pub const SERIES_BUCKETS_MAX: usize = 200;

/// The executions that dead-lettered (now in the DLQ, or archived since) with their last failure
/// in `[since, until)`, by category, in `buckets` equal slices of the window. Reads the DLQ index
/// of each queue from `since` (an ordered walk, not a scan of the ledger), and the archived index
/// from `since` too (an execution is archived after it failed).
pub fn dead_letters_by_category(
    kv: &dyn Kv,
    queue: Option<&str>,
    since: Timestamp,
    until: Timestamp,
    buckets: usize,
) -> Result<FailureSeries, ProjectionError> {
    let buckets = buckets.clamp(1, SERIES_BUCKETS_MAX);
    let span = (until.millis() - since.millis()).max(1);
    let bucket_ms = (span + buckets as i64 - 1) / buckets as i64;
    let queues: Vec<String> = match queue {
        Some(queue) => vec![queue.to_owned()],
        None => queue_stats(kv, None)?.queues.into_keys().collect(),
    };
    let mut series = FailureSeries {
        since,
        bucket_ms,
        buckets,
        counts: BTreeMap::new(),
        scanned: 0,
        truncated: false,
    };
    for kind in [DLQ_PREFIX, ARCHIVED_PREFIX] {
        for queue in &queues {
            let prefix = queue_prefix(kind, queue);
            let mut from = prefix.clone();
            from.extend_from_slice(&sortable(since.millis()));
            try_scan(kv, &prefix, &from, &mut |key, value| {
                if series.scanned >= SERIES_ENTRIES_MAX {
                    series.truncated = true;
                    return Ok(false);
                }
                series.scanned += 1;
                let time = entry_queue_time(key).map_or(i64::MAX, |(_, time)| time);
                // The DLQ index is in failure order: past the window, it is done.
                if kind == DLQ_PREFIX && time >= until.millis() {
                    return Ok(false);
                }
                // Only the two fields the chart needs: read straight from the JSON when plain
                // (a DLQ key's instant is its failedAt), else decoded.
                #[derive(serde::Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Entry {
                    failed_at: Option<Timestamp>,
                    error_category: Option<String>,
                }
                let fast = json_text_field(value, br#""errorCategory":""#).and_then(|category| {
                    let failed_at = match kind {
                        DLQ_PREFIX => Some(Timestamp(time)),
                        _ => json_text_field(value, br#""failedAt":""#).and_then(Timestamp::parse),
                    }?;
                    Some((failed_at, category))
                });
                let decoded: Entry;
                let (failed_at, category) = match fast {
                    Some(fast) => fast,
                    None => {
                        decoded = decode_json(key, value)?;
                        let Some(failed_at) = decoded.failed_at else {
                            return Ok(true);
                        };
                        (
                            failed_at,
                            decoded.error_category.as_deref().unwrap_or("unknown"),
                        )
                    }
                };
                if failed_at < since || failed_at >= until {
                    return Ok(true);
                }
                let bucket = ((failed_at.millis() - since.millis()) / bucket_ms) as usize;
                let bucket = bucket.min(buckets - 1);
                match series.counts.get_mut(category) {
                    Some(counts) => counts[bucket] += 1,
                    None => {
                        let mut counts = vec![0; buckets];
                        counts[bucket] = 1;
                        series.counts.insert(category.to_owned(), counts);
                    }
                }
                Ok(true)
            })?;
        }
    }
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryKv;
    use taskledger_domain::ExecutionId;

    /// 3 queues × 40 DLQ entries a minute apart, categories and messages cycling.
    fn dlq_models() -> (MemoryKv, Vec<DlqItem>) {
        let kv = MemoryKv::new();
        let mut items = Vec::new();
        let mut writes = Vec::new();
        for (q, queue) in ["a", "b", "c"].into_iter().enumerate() {
            for n in 0..40u64 {
                let at = 1_000_000 + (n as i64) * 60_000 + q as i64;
                let item = DlqItem {
                    task_id: TaskId::parse(&format!("{queue}:{n}")).unwrap(),
                    execution_id: ExecutionId(uuid::Uuid::from_u64_pair(q as u64, n)),
                    queue: queue.into(),
                    error_category: Some(
                        ["transient", "validation", "unknown"][n as usize % 3].into(),
                    ),
                    error_message: Some(format!(
                        "{} #{n}",
                        ["ETIMEDOUT", "Invalid \"x\"", "boom"][n as usize % 3]
                    )),
                    failed_at: Some(Timestamp(at)),
                    retry_count: 1,
                    archived_at: None,
                    archived_by: None,
                    archived_reason: None,
                };
                let mut key = queue_prefix(DLQ_PREFIX, queue);
                key.extend_from_slice(&sortable(at));
                key.extend_from_slice(item.execution_id.0.as_bytes());
                writes.push((key, Some(serde_json::to_vec(&item).unwrap())));
                items.push(item);
            }
        }
        kv.apply(writes).unwrap();
        (kv, items)
    }

    fn all_pages(kv: &MemoryKv, query: &DlqQuery, text: Option<&str>) -> Vec<DlqItem> {
        let mut listed = Vec::new();
        let mut query = query.clone();
        loop {
            let page = dlq_page_matching(kv, &query, text).unwrap();
            assert!(page.items.len() <= query.limit);
            listed.extend(page.items);
            match page.next {
                Some(next) => query.cursor = Some(next),
                None => return listed,
            }
        }
    }

    #[test]
    fn time_ranges_seek_and_every_filter_pages_like_a_naive_filter() {
        let (kv, items) = dlq_models();
        let at = |minute: i64| Some(Timestamp(1_000_000 + minute * 60_000));
        for queue in [None, Some("b")] {
            for (since, until) in [
                (None, None),
                (at(10), None),
                (None, at(7)),
                (at(12), at(30)),
                (at(50), None),
            ] {
                for (category, text) in [
                    (None, None),
                    (Some("validation"), None),
                    (None, Some("etimedout")),
                    (None, Some("\"x\"")),
                ] {
                    for limit in [1, 4, 50] {
                        let query = DlqQuery {
                            queue: queue.map(str::to_owned),
                            category: category.map(str::to_owned),
                            since,
                            until,
                            limit,
                            ..DlqQuery::default()
                        };
                        let expected: Vec<&DlqItem> = items
                            .iter()
                            .filter(|i| queue.is_none_or(|q| i.queue == q))
                            .filter(|i| {
                                category.is_none_or(|c| i.error_category.as_deref() == Some(c))
                            })
                            .filter(|i| since.is_none_or(|s| i.failed_at.unwrap() >= s))
                            .filter(|i| until.is_none_or(|u| i.failed_at.unwrap() < u))
                            .filter(|i| {
                                text.is_none_or(|t| {
                                    i.error_message.as_ref().unwrap().to_lowercase().contains(t)
                                })
                            })
                            .collect();
                        let listed = all_pages(&kv, &query, text);
                        assert_eq!(
                            listed.iter().collect::<Vec<_>>(),
                            expected,
                            "{queue:?} {since:?}..{until:?} {category:?} {text:?} by {limit}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dead_letters_by_category_counts_the_window() {
        let (kv, items) = dlq_models();
        let since = Timestamp(1_000_000 + 6 * 60_000);
        let until = Timestamp(1_000_000 + 18 * 60_000);
        let series = dead_letters_by_category(&kv, Some("a"), since, until, 4).unwrap();
        assert_eq!(series.bucket_ms, 3 * 60_000);
        let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for item in items.iter().filter(|i| i.queue == "a") {
            let t = item.failed_at.unwrap();
            if t >= since && t < until {
                let bucket = ((t.millis() - since.millis()) / series.bucket_ms) as usize;
                expected
                    .entry(item.error_category.clone().unwrap())
                    .or_insert_with(|| vec![0; 4])[bucket] += 1;
            }
        }
        assert_eq!(series.counts, expected);
        assert!(!series.truncated);
        assert_eq!(
            json_text_field(br#"{"a":"x\"y","b":"z"}"#, br#""a":""#),
            None
        );
        assert_eq!(
            json_text_field(br#"{"a":null,"b":"z"}"#, br#""b":""#),
            Some("z")
        );
    }
}
