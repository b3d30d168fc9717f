//! What the read commands print (`--json`; the HTTP API returns the same objects), built from the
//! stored records.

use crate::record::{AttemptOutcome, AttemptRecord, ErrorRecord, ExecutionRecord, TaskRecord};
use serde::Serialize;
use std::collections::BTreeMap;
use taskledger_domain::event::{ManualRetry, RejectionReason};
use taskledger_domain::{ExecutionId, ExecutionStatus, TaskId, Timestamp};

fn ts(millis: Option<i64>) -> Option<Timestamp> {
    millis.map(Timestamp)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorView {
    pub message: String,
    pub category: String,
}

impl From<&ErrorRecord> for ErrorView {
    fn from(error: &ErrorRecord) -> Self {
        ErrorView {
            message: error.message.clone(),
            category: error.category.clone(),
        }
    }
}

/// One attempt: a claim and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub worker: Option<String>,
    /// Who sent the claim, as the ledger authenticated them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// `None` for an outcome reported without a claim.
    pub claimed_at: Option<Timestamp>,
    /// `processing` while open, then `completed`, `failed`, `dlq` or `abandoned` (reclaimed by
    /// another worker).
    pub outcome: AttemptOutcome,
    pub ended_at: Option<Timestamp>,
    pub duration_ms: Option<i64>,
    pub error: Option<ErrorView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unclaimed_success: bool,
}

impl From<&AttemptRecord> for AttemptView {
    fn from(a: &AttemptRecord) -> Self {
        AttemptView {
            worker: a.worker.clone(),
            principal: a.principal.clone(),
            claimed_at: ts(a.claimed_at),
            outcome: a.outcome,
            ended_at: ts(a.ended_at),
            duration_ms: a.claimed_at.zip(a.ended_at).map(|(from, to)| to - from),
            error: a.error.as_ref().map(ErrorView::from),
            backoff_ms: a.backoff_ms,
            next_retry_at: ts(a.next_retry_at),
            unclaimed_success: a.unclaimed_success,
        }
    }
}

/// One execution in a retry chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionView {
    pub execution_id: ExecutionId,
    pub queue: String,
    pub status: ExecutionStatus,
    pub retry_count: u32,
    pub max_retries: u32,
    pub enqueued_at: Timestamp,
    pub processing_started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub failed_at: Option<Timestamp>,
    pub archived_at: Option<Timestamp>,
    pub archived_reason: Option<String>,
    pub archived_by: Option<String>,
    pub next_retry_at: Option<Timestamp>,
    pub last_error: Option<ErrorView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manual_retry: Option<ManualRetry>,
    pub attempts: Vec<AttemptView>,
    /// Who enqueued (or retried) it, as the ledger authenticated them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Who archived it, as the ledger authenticated them (`archivedBy` is their own note).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_principal: Option<String>,
    /// Attempts left out of a page ([`TaskRecord::chain_page`] keeps the latest ones).
    #[serde(skip_serializing_if = "is_zero")]
    pub attempts_omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl From<&ExecutionRecord> for ExecutionView {
    fn from(x: &ExecutionRecord) -> Self {
        ExecutionView {
            execution_id: x.execution_id,
            queue: x.queue.clone(),
            status: x.status,
            retry_count: x.retry_count,
            max_retries: x.max_retries,
            enqueued_at: Timestamp(x.enqueued_at),
            processing_started_at: ts(x.processing_started_at),
            completed_at: ts(x.completed_at),
            failed_at: ts(x.failed_at),
            archived_at: ts(x.archived_at),
            archived_reason: x.archived_reason.clone(),
            archived_by: x.archived_by.clone(),
            next_retry_at: ts(x.next_retry_at),
            last_error: x.last_error.as_ref().map(ErrorView::from),
            manual_retry: x.manual_retry.clone(),
            attempts: x.attempts.iter().map(AttemptView::from).collect(),
            principal: x.principal.clone(),
            archived_principal: x.archived_principal.clone(),
            attempts_omitted: 0,
        }
    }
}

/// `chain --json` (SPEC section 7): executions in enqueue order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainView {
    pub task_id: TaskId,
    pub executions: Vec<ExecutionView>,
    /// A page of a long chain ([`TaskRecord::chain_page`]): where the next page starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `task --json` (SPEC section 7).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatusView {
    pub task_id: TaskId,
    pub status: Option<ExecutionStatus>,
    /// The latest execution.
    pub execution_id: Option<ExecutionId>,
    /// How many executions the task has had.
    pub executions: usize,
    pub retry_count: u32,
    pub max_retries: u32,
    pub queue: Option<String>,
    pub attempts: usize,
    pub enqueued_at: Option<Timestamp>,
    pub next_retry_at: Option<Timestamp>,
    pub last_error: Option<ErrorView>,
    pub flags: Vec<&'static str>,
    /// Rejected reports about this task, by reason (non-zero only).
    pub rejected: BTreeMap<&'static str, u64>,
    /// The `at` of the latest event folded in.
    pub updated_at: Option<Timestamp>,
}

/// The legacy TaskTracker document of seeds/001, as seeds/000's code would hold it. Fields the
/// legacy code never set are absent, as in a `mongoexport`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyDocument {
    pub task_id: TaskId,
    pub execution_id: ExecutionId,
    pub queue_name: String,
    pub message_version: String,
    pub status: ExecutionStatus,
    pub enqueued_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processing_started_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Timestamp>,
    pub retry_count: u32,
    pub max_retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_stack: Option<String>,
    pub metadata: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_by: Option<String>,
    pub created_at: Timestamp,
    /// seeds/000 only uses `findOneAndUpdate`/`updateOne`, which skip the `pre('save')` hook:
    /// `updatedAt` keeps its creation default.
    pub updated_at: Timestamp,
}

impl TaskRecord {
    pub fn status_view(&self, task_id: &TaskId) -> TaskStatusView {
        let latest = self.latest();
        let mut flags = Vec::new();
        if self
            .executions
            .iter()
            .any(|x| x.attempts.iter().any(|a| a.unclaimed_success))
        {
            flags.push("unclaimedSuccess");
        }
        if self.executions.iter().any(|x| x.manual_retry.is_some()) {
            flags.push("manualRetry");
        }
        // A worker died holding an execution and another took it over (SPEC section 4).
        if self.executions.iter().any(|x| x.reclaims > 0) {
            flags.push("redelivered");
        }
        if self.concurrent_executions {
            flags.push("concurrentExecutions");
        }
        if self.rejected.iter().any(|n| *n > 0) {
            flags.push("rejectedReports");
        }
        TaskStatusView {
            task_id: task_id.clone(),
            status: latest.map(|x| x.status),
            execution_id: latest.map(|x| x.execution_id),
            executions: self.executions.len(),
            retry_count: latest.map_or(0, |x| x.retry_count),
            max_retries: latest.map_or(0, |x| x.max_retries),
            queue: latest.map(|x| x.queue.clone()),
            attempts: latest.map_or(0, |x| x.attempts.len()),
            enqueued_at: latest.map(|x| Timestamp(x.enqueued_at)),
            next_retry_at: latest.and_then(|x| ts(x.next_retry_at)),
            last_error: latest.and_then(|x| x.last_error.as_ref().map(ErrorView::from)),
            flags,
            rejected: RejectionReason::NAMES
                .iter()
                .zip(self.rejected)
                .filter(|(_, n)| *n > 0)
                .map(|(name, n)| (*name, n))
                .collect(),
            updated_at: ts(self.updated_at),
        }
    }

    pub fn chain_view(&self, task_id: &TaskId) -> ChainView {
        ChainView {
            task_id: task_id.clone(),
            executions: self.executions.iter().map(ExecutionView::from).collect(),
            next: None,
        }
    }

    /// At most `limit` executions from the `from`-th on (enqueue order), each with at most
    /// `limit` of its attempts (the latest; `attemptsOmitted` counts the rest), and where the
    /// next page starts: a response's size is bounded however long the chain grew.
    pub fn chain_page(&self, task_id: &TaskId, from: usize, limit: usize) -> ChainView {
        let limit = limit.max(1);
        let executions = self
            .executions
            .iter()
            .skip(from)
            .take(limit)
            .map(|x| {
                let mut view = ExecutionView::from(x);
                if view.attempts.len() > limit {
                    view.attempts_omitted = view.attempts.len() - limit;
                    view.attempts.drain(..view.attempts_omitted);
                }
                view
            })
            .collect();
        let end = from.saturating_add(limit);
        ChainView {
            task_id: task_id.clone(),
            executions,
            next: (end < self.executions.len()).then(|| end.to_string()),
        }
    }

    pub fn legacy_documents(&self, task_id: &TaskId) -> Vec<LegacyDocument> {
        self.executions
            .iter()
            .map(|x| {
                let l = &x.legacy;
                LegacyDocument {
                    task_id: task_id.clone(),
                    execution_id: x.execution_id,
                    queue_name: x.queue.clone(),
                    message_version: l.message_version.clone(),
                    status: l.status,
                    enqueued_at: Timestamp(l.created_at),
                    processing_started_at: ts(l.processing_started_at),
                    completed_at: ts(l.completed_at),
                    failed_at: ts(l.failed_at),
                    archived_at: ts(l.archived_at),
                    retry_count: l.retry_count,
                    max_retries: l.max_retries,
                    error_message: l.error_message.clone(),
                    error_category: l.error_category.clone(),
                    error_stack: l.error_stack.clone(),
                    metadata: serde_json::from_str(&l.metadata_json)
                        .unwrap_or(serde_json::Value::Object(Default::default())),
                    archived_reason: l.archived_reason.clone(),
                    archived_by: l.archived_by.clone(),
                    created_at: Timestamp(l.created_at),
                    updated_at: Timestamp(l.created_at),
                }
            })
            .collect()
    }
}
