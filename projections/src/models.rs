//! The key layout of the stored read models and their small index records.
//!
//! - `C`                                    → checkpoint: the next global position to apply
//! - `T` + taskId                           → the task's record (postcard): status, chain, legacy docs
//! - `D` + queue + 0 + failedAt + execId    → DLQ entry (JSON)
//! - `A` + queue + 0 + archivedAt + execId  → archived entry (JSON), "archived ones apart"
//! - `P` + processingStartedAt + execId     → processing entry (stuck candidates)
//! - `R` + nextRetryAt + execId             → failed entry with a retry due (due retries)
//! - `Q` + queue                            → queue statistics (JSON)
//!
//! Instants in keys are big-endian with the sign bit flipped, so byte order is time order.

use crate::record::{ExecutionRecord, TaskRecord};
use crate::ProjectionError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use taskledger_domain::event::RejectionReason;
use taskledger_domain::{ExecutionId, ExecutionStatus, TaskId, Timestamp};

pub const CHECKPOINT_KEY: &[u8] = b"C";
/// The latest `at` of any event applied (i64 big-endian), to tell whether an as-of instant is
/// at or after everything the models hold.
pub const LATEST_AT_KEY: &[u8] = b"Mlatest_at";
/// The ledger's running digest as far as the models have applied it: the next position (u64
/// big-endian) and the digest of the events before it (32 bytes).
pub const LEDGER_DIGEST_KEY: &[u8] = b"Mdigest";
pub const TASK_PREFIX: u8 = b'T';
pub const DLQ_PREFIX: u8 = b'D';
pub const ARCHIVED_PREFIX: u8 = b'A';
pub const PROCESSING_PREFIX: u8 = b'P';
pub const DUE_PREFIX: u8 = b'R';
pub const STATS_PREFIX: u8 = b'Q';
/// executionId → taskId: what a search by executionId looks up.
pub const EXECUTION_PREFIX: u8 = b'X';

pub fn execution_key(execution_id: ExecutionId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(EXECUTION_PREFIX);
    key.extend_from_slice(execution_id.0.as_bytes());
    key
}

pub fn sortable(millis: i64) -> [u8; 8] {
    ((millis as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn task_key(task_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(task_id.len() + 1);
    key.push(TASK_PREFIX);
    key.extend_from_slice(task_id.as_bytes());
    key
}

fn queue_time_key(prefix: u8, queue: &str, at: i64, execution_id: ExecutionId) -> Vec<u8> {
    let mut key = Vec::with_capacity(queue.len() + 26);
    key.push(prefix);
    key.extend_from_slice(queue.as_bytes());
    key.push(0);
    key.extend_from_slice(&sortable(at));
    key.extend_from_slice(execution_id.0.as_bytes());
    key
}

/// `D` + queue + 0: the DLQ of one queue.
pub fn queue_prefix(prefix: u8, queue: &str) -> Vec<u8> {
    let mut key = vec![prefix];
    key.extend_from_slice(queue.as_bytes());
    key.push(0);
    key
}

fn time_key(prefix: u8, at: i64, execution_id: ExecutionId) -> Vec<u8> {
    let mut key = Vec::with_capacity(25);
    key.push(prefix);
    key.extend_from_slice(&sortable(at));
    key.extend_from_slice(execution_id.0.as_bytes());
    key
}

pub fn stats_key(queue: &str) -> Vec<u8> {
    let mut key = vec![STATS_PREFIX];
    key.extend_from_slice(queue.as_bytes());
    key
}

/// A DLQ (or archived) entry: SPEC section 7's `dlq` item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DlqItem {
    pub task_id: TaskId,
    pub execution_id: ExecutionId,
    pub queue: String,
    pub error_category: Option<String>,
    pub error_message: Option<String>,
    pub failed_at: Option<Timestamp>,
    pub retry_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_reason: Option<String>,
}

/// An execution in `processing`: a stuck candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessingItem {
    pub task_id: TaskId,
    pub execution_id: ExecutionId,
    pub queue: String,
    pub worker: Option<String>,
    pub processing_started_at: Timestamp,
    pub retry_count: u32,
}

/// A `failed` execution and when its retry is due.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DueItem {
    pub task_id: TaskId,
    pub execution_id: ExecutionId,
    pub queue: String,
    pub next_retry_at: Timestamp,
    pub retry_count: u32,
    pub max_retries: u32,
    pub error_category: Option<String>,
}

/// Queue statistics: seeds/001 `getQueueStats` counts by status, plus rejections, failures by
/// category and lifetime counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    pub queued: u64,
    pub processing: u64,
    pub completed: u64,
    pub failed: u64,
    pub dlq: u64,
    pub archived: u64,
    /// Rejected reports by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Failure reports by error category.
    pub failures_by_category: BTreeMap<String, u64>,
    /// Lifetime counts: executions enqueued, successes and failures recorded.
    pub enqueued: u64,
    pub succeeded: u64,
    pub failures: u64,
    /// `at` of the first and latest success, for throughput.
    pub first_success_at: Option<Timestamp>,
    pub last_success_at: Option<Timestamp>,
}

impl Default for QueueStats {
    fn default() -> Self {
        QueueStats {
            queued: 0,
            processing: 0,
            completed: 0,
            failed: 0,
            dlq: 0,
            archived: 0,
            rejected: RejectionReason::NAMES
                .iter()
                .map(|n| ((*n).to_owned(), 0))
                .collect(),
            failures_by_category: BTreeMap::new(),
            enqueued: 0,
            succeeded: 0,
            failures: 0,
            first_success_at: None,
            last_success_at: None,
        }
    }
}

impl QueueStats {
    pub fn count_mut(&mut self, status: ExecutionStatus) -> &mut u64 {
        match status {
            ExecutionStatus::Queued => &mut self.queued,
            ExecutionStatus::Processing => &mut self.processing,
            ExecutionStatus::Completed => &mut self.completed,
            ExecutionStatus::Failed => &mut self.failed,
            ExecutionStatus::Dlq => &mut self.dlq,
            ExecutionStatus::Archived => &mut self.archived,
        }
    }

    /// Successes per hour between the first and the latest success (`at`), when measurable.
    pub fn throughput_per_hour(&self) -> Option<f64> {
        let (first, last) = (self.first_success_at?, self.last_success_at?);
        let span = (last.millis() - first.millis()) as f64 / 3_600_000.0;
        (span > 0.0).then(|| self.succeeded as f64 / span)
    }
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Index items are plain structs of strings and numbers.
    serde_json::to_vec(value).expect("index items always serialize")
}

pub fn decode_json<T: serde::de::DeserializeOwned>(
    key: &[u8],
    value: &[u8],
) -> Result<T, ProjectionError> {
    serde_json::from_slice(value).map_err(|error| {
        ProjectionError::Models(format!("entry {:?}: {error}", String::from_utf8_lossy(key)))
    })
}

/// A task's id, parsed from its stream name the first time it is needed: most tasks end
/// `completed`, with no index entry, and never need it.
pub struct LazyTaskId<'a> {
    stream: &'a str,
    parsed: Option<TaskId>,
}

impl<'a> LazyTaskId<'a> {
    pub fn new(stream: &'a str) -> LazyTaskId<'a> {
        LazyTaskId {
            stream,
            parsed: None,
        }
    }

    pub fn get(&mut self) -> Result<&TaskId, ProjectionError> {
        match &mut self.parsed {
            Some(task_id) => Ok(task_id),
            empty => Ok(empty.insert(parse_stream(self.stream)?)),
        }
    }
}

/// The taskId a stream is named after.
pub fn parse_stream(stream: &str) -> Result<TaskId, ProjectionError> {
    TaskId::parse(stream).map_err(|problem| {
        ProjectionError::Models(format!("stream {stream:?} is not a taskId: {problem}"))
    })
}

/// The index entries an execution contributes, by its current state.
pub fn index_entries(
    task_id: &mut LazyTaskId<'_>,
    x: &ExecutionRecord,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), ProjectionError> {
    let dlq_item = |task_id: &TaskId, archived: bool| DlqItem {
        task_id: task_id.clone(),
        execution_id: x.execution_id,
        queue: x.queue.clone(),
        error_category: x.last_error.as_ref().map(|e| e.category.clone()),
        error_message: x.last_error.as_ref().map(|e| e.message.clone()),
        failed_at: x.failed_at.map(Timestamp),
        retry_count: x.retry_count,
        archived_at: if archived {
            x.archived_at.map(Timestamp)
        } else {
            None
        },
        archived_by: if archived {
            x.archived_by.clone()
        } else {
            None
        },
        archived_reason: if archived {
            x.archived_reason.clone()
        } else {
            None
        },
    };
    // Every execution, whatever its state: the entry never changes, so the diff writes it once.
    out.push((
        execution_key(x.execution_id),
        task_id.get()?.as_str().as_bytes().to_vec(),
    ));
    match x.status {
        ExecutionStatus::Dlq => out.push((
            queue_time_key(
                DLQ_PREFIX,
                &x.queue,
                x.failed_at.unwrap_or(0),
                x.execution_id,
            ),
            json(&dlq_item(task_id.get()?, false)),
        )),
        ExecutionStatus::Archived => out.push((
            queue_time_key(
                ARCHIVED_PREFIX,
                &x.queue,
                x.archived_at.unwrap_or(0),
                x.execution_id,
            ),
            json(&dlq_item(task_id.get()?, true)),
        )),
        ExecutionStatus::Processing => {
            let started = x.processing_started_at.unwrap_or(x.enqueued_at);
            out.push((
                time_key(PROCESSING_PREFIX, started, x.execution_id),
                json(&ProcessingItem {
                    task_id: task_id.get()?.clone(),
                    execution_id: x.execution_id,
                    queue: x.queue.clone(),
                    worker: x.current_worker().map(str::to_owned),
                    processing_started_at: Timestamp(started),
                    retry_count: x.retry_count,
                }),
            ));
        }
        ExecutionStatus::Failed => {
            if let Some(next) = x.next_retry_at {
                out.push((
                    time_key(DUE_PREFIX, next, x.execution_id),
                    json(&DueItem {
                        task_id: task_id.get()?.clone(),
                        execution_id: x.execution_id,
                        queue: x.queue.clone(),
                        next_retry_at: Timestamp(next),
                        retry_count: x.retry_count,
                        max_retries: x.max_retries,
                        error_category: x.last_error.as_ref().map(|e| e.category.clone()),
                    }),
                ));
            }
        }
        ExecutionStatus::Queued | ExecutionStatus::Completed => {}
    }
    Ok(())
}

pub fn encode_record(record: &TaskRecord) -> Vec<u8> {
    postcard::to_allocvec(record).expect("task records always serialize")
}

pub fn decode_record(task_id: &str, bytes: &[u8]) -> Result<TaskRecord, ProjectionError> {
    postcard::from_bytes(bytes)
        .map_err(|error| ProjectionError::Models(format!("task record {task_id:?}: {error}")))
}
