//! One task's read model: every execution and attempt, folded from its events.

use serde::Serialize;
use std::collections::BTreeMap;
use taskledger_domain::event::ManualRetry;
use taskledger_domain::{Event, ExecutionId, ExecutionStatus, TaskId, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorView {
    pub message: String,
    pub category: String,
}

/// One attempt: a claim and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub worker: Option<String>,
    /// `None` for an outcome reported without a claim.
    pub claimed_at: Option<Timestamp>,
    /// `processing` while open, then `completed`, `failed` or `dlq`.
    pub outcome: ExecutionStatus,
    pub ended_at: Option<Timestamp>,
    pub duration_ms: Option<i64>,
    pub error: Option<ErrorView>,
    /// The backoff decided at this failure, and when the retry is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unclaimed_success: bool,
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
}

/// `chain --json` (SPEC section 7).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainView<'a> {
    pub task_id: &'a TaskId,
    pub executions: &'a [ExecutionView],
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
    pub last_error: Option<ErrorView>,
    pub flags: Vec<&'static str>,
    /// Rejected reports about this task, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// The `at` of the latest event folded in.
    pub updated_at: Option<Timestamp>,
}

/// Everything the per-task queries show, folded from the task's events in stream order.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskProjection {
    pub task_id: TaskId,
    pub executions: Vec<ExecutionView>,
    pub rejected: BTreeMap<&'static str, u64>,
    pub events: u64,
    pub updated_at: Option<Timestamp>,
    /// Two executions were queued/processing at the same time (a dedup-window leak).
    pub concurrent_executions: bool,
}

impl TaskProjection {
    pub fn new(task_id: TaskId) -> TaskProjection {
        TaskProjection {
            task_id,
            executions: Vec::new(),
            rejected: BTreeMap::new(),
            events: 0,
            updated_at: None,
            concurrent_executions: false,
        }
    }

    fn execution_mut(&mut self, execution_id: ExecutionId) -> Option<&mut ExecutionView> {
        self.executions
            .iter_mut()
            .find(|execution| execution.execution_id == execution_id)
    }

    /// Folds one event in.
    pub fn apply(&mut self, event: &Event) {
        self.events += 1;
        self.updated_at = Some(self.updated_at.map_or(event.at(), |t| t.max(event.at())));
        match event {
            Event::ExecutionEnqueued(e) => {
                if self.executions.iter().any(|x| x.status.is_active()) {
                    self.concurrent_executions = true;
                }
                self.executions.push(ExecutionView {
                    execution_id: e.execution_id,
                    queue: e.queue.clone(),
                    status: ExecutionStatus::Queued,
                    retry_count: 0,
                    max_retries: e.max_retries,
                    enqueued_at: e.at,
                    processing_started_at: None,
                    completed_at: None,
                    failed_at: None,
                    archived_at: None,
                    archived_reason: None,
                    archived_by: None,
                    next_retry_at: None,
                    last_error: None,
                    manual_retry: e.manual_retry.clone(),
                    attempts: Vec::new(),
                });
            }
            Event::ExecutionClaimed(e) => {
                if let Some(x) = self.execution_mut(e.execution_id) {
                    x.status = ExecutionStatus::Processing;
                    x.processing_started_at = Some(e.at);
                    x.next_retry_at = None;
                    x.attempts.push(AttemptView {
                        worker: Some(e.worker.clone()),
                        claimed_at: Some(e.at),
                        outcome: ExecutionStatus::Processing,
                        ended_at: None,
                        duration_ms: None,
                        error: None,
                        backoff_ms: None,
                        next_retry_at: None,
                        unclaimed_success: false,
                    });
                }
            }
            Event::ExecutionSucceeded(e) => {
                if let Some(x) = self.execution_mut(e.execution_id) {
                    x.status = ExecutionStatus::Completed;
                    x.completed_at = Some(e.at);
                    x.next_retry_at = None;
                    let attempt = open_attempt(x, e.worker.as_ref(), e.unclaimed_success);
                    attempt.outcome = ExecutionStatus::Completed;
                    close(attempt, e.at);
                    attempt.unclaimed_success = e.unclaimed_success;
                }
            }
            Event::ExecutionFailed(e) => {
                if let Some(x) = self.execution_mut(e.execution_id) {
                    let error = ErrorView {
                        message: e.error_message.clone(),
                        category: e.category.clone(),
                    };
                    x.status = e.status;
                    x.retry_count = e.retry_count;
                    x.failed_at = Some(e.at);
                    x.next_retry_at = e.next_retry_at;
                    x.last_error = Some(error.clone());
                    let attempt = open_attempt(x, e.worker.as_ref(), false);
                    attempt.outcome = e.status;
                    close(attempt, e.at);
                    attempt.error = Some(error);
                    attempt.backoff_ms = e.backoff_ms;
                    attempt.next_retry_at = e.next_retry_at;
                }
            }
            Event::ExecutionArchived(e) => {
                if let Some(x) = self.execution_mut(e.execution_id) {
                    x.status = ExecutionStatus::Archived;
                    x.archived_at = Some(e.at);
                    x.archived_reason = e.reason.clone();
                    x.archived_by = e.by.clone();
                    x.next_retry_at = None;
                }
            }
            Event::ReportRejected(e) => {
                *self.rejected.entry(e.reason.name()).or_default() += 1;
            }
        }
    }

    pub fn latest(&self) -> Option<&ExecutionView> {
        self.executions.last()
    }

    pub fn status_view(&self) -> TaskStatusView {
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
        if self.concurrent_executions {
            flags.push("concurrentExecutions");
        }
        if !self.rejected.is_empty() {
            flags.push("rejectedReports");
        }
        TaskStatusView {
            task_id: self.task_id.clone(),
            status: latest.map(|x| x.status),
            execution_id: latest.map(|x| x.execution_id),
            executions: self.executions.len(),
            retry_count: latest.map_or(0, |x| x.retry_count),
            max_retries: latest.map_or(0, |x| x.max_retries),
            queue: latest.map(|x| x.queue.clone()),
            attempts: latest.map_or(0, |x| x.attempts.len()),
            last_error: latest.and_then(|x| x.last_error.clone()),
            flags,
            rejected: self.rejected.clone(),
            updated_at: self.updated_at,
        }
    }

    pub fn chain_view(&self) -> ChainView<'_> {
        ChainView {
            task_id: &self.task_id,
            executions: &self.executions,
        }
    }
}

/// The attempt an outcome closes: the open one, or a new claimless one.
fn open_attempt<'a>(
    execution: &'a mut ExecutionView,
    worker: Option<&String>,
    unclaimed: bool,
) -> &'a mut AttemptView {
    let has_open = execution
        .attempts
        .last()
        .is_some_and(|a| a.outcome == ExecutionStatus::Processing);
    if unclaimed || !has_open {
        execution.attempts.push(AttemptView {
            worker: worker.cloned(),
            claimed_at: None,
            outcome: ExecutionStatus::Processing,
            ended_at: None,
            duration_ms: None,
            error: None,
            backoff_ms: None,
            next_retry_at: None,
            unclaimed_success: false,
        });
    }
    execution
        .attempts
        .last_mut()
        .expect("an attempt was pushed when none was open")
}

fn close(attempt: &mut AttemptView, at: Timestamp) {
    attempt.ended_at = Some(at);
    attempt.duration_ms = attempt
        .claimed_at
        .map(|claimed| at.millis() - claimed.millis());
}
