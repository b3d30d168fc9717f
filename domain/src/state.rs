//! The per-task state `decide` needs, and `apply`, which folds events into it. `apply` holds no
//! rules: it records what the events say, and never fails.

use crate::event::{Event, Outcome};
use crate::ids::{ExecutionId, ReportKey};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Execution statuses of seeds/001.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExecutionStatus {
    Queued,
    Processing,
    Completed,
    Failed,
    Dlq,
    Archived,
}

impl ExecutionStatus {
    pub const ALL: [ExecutionStatus; 6] = [
        ExecutionStatus::Queued,
        ExecutionStatus::Processing,
        ExecutionStatus::Completed,
        ExecutionStatus::Failed,
        ExecutionStatus::Dlq,
        ExecutionStatus::Archived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Queued => "queued",
            ExecutionStatus::Processing => "processing",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Dlq => "dlq",
            ExecutionStatus::Archived => "archived",
        }
    }

    /// `queued` or `processing`: what the dedup rule and manual retry look for.
    pub fn is_active(self) -> bool {
        matches!(self, ExecutionStatus::Queued | ExecutionStatus::Processing)
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One execution, as far as the rules need it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionState {
    pub execution_id: ExecutionId,
    pub queue: String,
    pub status: ExecutionStatus,
    pub retry_count: u32,
    pub max_retries: u32,
    pub enqueued_at: Timestamp,
    pub claims: u32,
    /// When the latest claim was accepted (the running attempt's start, while `processing`).
    pub processing_started_at: Option<Timestamp>,
    pub message_version: Option<String>,
    /// Shared: a manual retry inherits it, and cached states are cloned per decision batch.
    pub metadata: Arc<Map<String, Value>>,
}

/// The state of one task stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskState {
    /// In enqueue order.
    pub executions: Vec<ExecutionState>,
    /// Every report decided in this stream and its outcome: the idempotency record.
    pub reports: HashMap<ReportKey, Outcome>,
    /// Number of events applied (the stream's length).
    pub events: u64,
}

impl TaskState {
    /// Whether any event was ever recorded for this task.
    pub fn exists(&self) -> bool {
        self.events > 0
    }

    pub fn execution(&self, execution_id: ExecutionId) -> Option<&ExecutionState> {
        self.executions
            .iter()
            .find(|execution| execution.execution_id == execution_id)
    }

    fn execution_mut(&mut self, execution_id: ExecutionId) -> Option<&mut ExecutionState> {
        self.executions
            .iter_mut()
            .find(|execution| execution.execution_id == execution_id)
    }

    pub fn latest(&self) -> Option<&ExecutionState> {
        self.executions.last()
    }

    /// Folds one event in. Never fails: an event naming an execution this state does not hold
    /// (impossible for events `decide` produced) changes nothing but the counters.
    pub fn apply(&mut self, event: &Event) {
        self.events += 1;
        self.reports
            .entry(event.report_key())
            .or_insert_with(|| event.outcome());
        match event {
            Event::ExecutionEnqueued(e) => self.executions.push(ExecutionState {
                execution_id: e.execution_id,
                queue: e.queue.clone(),
                status: ExecutionStatus::Queued,
                retry_count: 0,
                max_retries: e.max_retries,
                enqueued_at: e.at,
                claims: 0,
                processing_started_at: None,
                message_version: e.message_version.clone(),
                metadata: Arc::new(e.metadata.clone()),
            }),
            Event::ExecutionClaimed(e) => {
                if let Some(execution) = self.execution_mut(e.execution_id) {
                    execution.status = ExecutionStatus::Processing;
                    execution.claims = e.attempt;
                    execution.processing_started_at = Some(e.at);
                }
            }
            Event::ExecutionSucceeded(e) => {
                if let Some(execution) = self.execution_mut(e.execution_id) {
                    execution.status = ExecutionStatus::Completed;
                }
            }
            Event::ExecutionFailed(e) => {
                if let Some(execution) = self.execution_mut(e.execution_id) {
                    execution.status = e.status;
                    execution.retry_count = e.retry_count;
                }
            }
            Event::ExecutionArchived(e) => {
                if let Some(execution) = self.execution_mut(e.execution_id) {
                    execution.status = ExecutionStatus::Archived;
                }
            }
            Event::ReportRejected(_) => {}
        }
    }
}
