//! The stored read model of one task: every execution with its attempts (status, retry chain) and
//! the legacy TaskTracker document each execution would have in the legacy tracker. Folded from
//! the task's events in stream order; stored compactly (postcard), one record per task.

use serde::{Deserialize, Serialize};
use taskledger_domain::event::{ManualRetry, RejectionReason};
use taskledger_domain::report::Op;
use taskledger_domain::{Event, ExecutionId, ExecutionStatus, Policy, TaskId};

/// seeds/001's schema default of `maxRetries`: the tracker document of an enqueue that named
/// none has it, whatever default the ledger's policy gives (SPEC section 5). One that named one
/// has that (the tracker is created with it). seeds/000 creates documents without
/// `messageVersion`, so the schema default applies to it whatever the message said.
pub const LEGACY_MAX_RETRIES: u32 = 5;
pub const LEGACY_MESSAGE_VERSION: &str = "1.0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub message: String,
    pub category: String,
}

/// How an attempt (a claim) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttemptOutcome {
    /// Still running.
    Processing,
    Completed,
    Failed,
    Dlq,
    /// Another worker reclaimed the execution (a redelivery, or the claim lease ran out): this
    /// attempt's worker is presumed dead. No failure was counted.
    Abandoned,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Processing => "processing",
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Dlq => "dlq",
            AttemptOutcome::Abandoned => "abandoned",
        }
    }

    /// The outcome of an attempt that ended with the execution in `status` (`failed` or
    /// `dlq` after a failure, `completed` after a success).
    pub fn of_status(status: ExecutionStatus) -> AttemptOutcome {
        match status {
            ExecutionStatus::Completed => AttemptOutcome::Completed,
            ExecutionStatus::Failed => AttemptOutcome::Failed,
            ExecutionStatus::Dlq => AttemptOutcome::Dlq,
            // A failure event only ever says failed or dlq; anything else leaves it open.
            ExecutionStatus::Queued | ExecutionStatus::Processing | ExecutionStatus::Archived => {
                AttemptOutcome::Processing
            }
        }
    }
}

impl std::fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub worker: Option<String>,
    /// Who sent the claim (or the success of an unclaimed attempt), as the ledger authenticated
    /// them; `None` for events recorded before principals.
    pub principal: Option<String>,
    pub claimed_at: Option<i64>,
    /// `processing` while open, then `completed`, `failed`, `dlq` or `abandoned`.
    pub outcome: AttemptOutcome,
    pub ended_at: Option<i64>,
    pub error: Option<ErrorRecord>,
    pub backoff_ms: Option<u64>,
    pub next_retry_at: Option<i64>,
    pub unclaimed_success: bool,
}

/// The TaskTracker document (seeds/001) of one execution, as seeds/000's code would have written
/// it from the same reports: it has no rejections, so it applies its own (looser) conditions to
/// every report, accepted by the ledger or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyRecord {
    pub status: ExecutionStatus,
    pub retry_count: u32,
    pub max_retries: u32,
    pub message_version: String,
    pub created_at: i64,
    pub processing_started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub archived_at: Option<i64>,
    pub archived_reason: Option<String>,
    pub archived_by: Option<String>,
    pub error_message: Option<String>,
    pub error_category: Option<String>,
    pub error_stack: Option<String>,
    /// The metadata object, as JSON text (postcard cannot hold arbitrary JSON values).
    pub metadata_json: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub execution_id: ExecutionId,
    pub queue: String,
    pub status: ExecutionStatus,
    pub retry_count: u32,
    pub max_retries: u32,
    pub enqueued_at: i64,
    pub processing_started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub archived_at: Option<i64>,
    pub archived_reason: Option<String>,
    pub archived_by: Option<String>,
    pub next_retry_at: Option<i64>,
    pub last_error: Option<ErrorRecord>,
    pub manual_retry: Option<ManualRetry>,
    pub attempts: Vec<AttemptRecord>,
    /// Who enqueued it (or retried it, for a manual retry's execution), as authenticated.
    pub principal: Option<String>,
    /// Who archived it, as authenticated (`archived_by` is the caller's own note).
    pub archived_principal: Option<String>,
    /// Claims refused because another worker held the execution: a claim race the ledger
    /// stopped, and that a non-atomic tracker would have let through (double processing).
    pub contested_claims: u32,
    /// Claims that took the execution over from a running attempt (SPEC section 4's reclaim).
    pub reclaims: u32,
    pub legacy: LegacyRecord,
}

impl ExecutionRecord {
    /// The worker of the open attempt (for the stuck model).
    pub fn current_worker(&self) -> Option<&str> {
        self.attempts
            .last()
            .filter(|a| a.outcome == AttemptOutcome::Processing)
            .and_then(|a| a.worker.as_deref())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub executions: Vec<ExecutionRecord>,
    /// Rejected reports by reason, in `RejectionReason::NAMES` order.
    pub rejected: [u64; 4],
    /// Events folded in.
    pub events: u64,
    /// Latest `at` folded in.
    pub updated_at: Option<i64>,
    /// Two executions were queued/processing at once (a dedup-window leak).
    pub concurrent_executions: bool,
}

/// The classifier the legacy code used: seeds/000's rules, whatever the ledger is configured with.
fn legacy_category(message: &str) -> String {
    thread_local! {
        // `Policy::default()` carries seeds/000's classifier.
        static LEGACY: Policy = Policy::default();
    }
    LEGACY.with(|policy| policy.classify(message).to_owned())
}

pub fn rejection_index(reason: &RejectionReason) -> usize {
    match reason {
        RejectionReason::DuplicateEnqueue { .. } => 0,
        RejectionReason::NotClaimable { .. } => 1,
        RejectionReason::UnknownExecution => 2,
        RejectionReason::InvalidTransition { .. } => 3,
    }
}

impl TaskRecord {
    pub fn execution(&self, execution_id: ExecutionId) -> Option<&ExecutionRecord> {
        self.executions
            .iter()
            .find(|x| x.execution_id == execution_id)
    }

    pub fn latest(&self) -> Option<&ExecutionRecord> {
        self.executions.last()
    }

    /// The queue a report about `execution_id` counts under: its execution's, else the task's
    /// latest, else the taskId's prefix.
    pub fn queue_of(&self, execution_id: ExecutionId, task_id: &TaskId) -> String {
        self.execution(execution_id)
            .or_else(|| self.latest())
            .map_or_else(|| task_id.queue_prefix().to_owned(), |x| x.queue.clone())
    }

    /// Folds one event in (in stream order). Never fails.
    pub fn apply(&mut self, event: &Event) {
        self.events += 1;
        let at = event.at().millis();
        self.updated_at = Some(self.updated_at.map_or(at, |t| t.max(at)));
        match event {
            Event::ExecutionEnqueued(e) => {
                if self.executions.iter().any(|x| x.status.is_active()) {
                    self.concurrent_executions = true;
                }
                self.executions.push(ExecutionRecord {
                    execution_id: e.execution_id,
                    queue: e.queue.clone(),
                    status: ExecutionStatus::Queued,
                    retry_count: 0,
                    max_retries: e.max_retries,
                    enqueued_at: at,
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
                    principal: e.principal.clone(),
                    archived_principal: None,
                    contested_claims: 0,
                    reclaims: 0,
                    legacy: LegacyRecord {
                        status: ExecutionStatus::Queued,
                        retry_count: 0,
                        max_retries: if e.max_retries_defaulted {
                            LEGACY_MAX_RETRIES
                        } else {
                            e.max_retries
                        },
                        message_version: LEGACY_MESSAGE_VERSION.to_owned(),
                        created_at: at,
                        processing_started_at: None,
                        completed_at: None,
                        failed_at: None,
                        archived_at: None,
                        archived_reason: None,
                        archived_by: None,
                        error_message: None,
                        error_category: None,
                        error_stack: None,
                        // The same compact text as `Value::Object(..).to_string()`, without cloning
                        // the map; a map of JSON values always serializes.
                        metadata_json: serde_json::to_string(&e.metadata).unwrap_or_default(),
                    },
                });
            }
            Event::ExecutionClaimed(e) => {
                let Some(x) = self.execution_mut(e.execution_id) else {
                    return;
                };
                if e.reclaim.is_some() {
                    // The running attempt's worker is presumed dead; nothing counts as a failure.
                    x.reclaims += 1;
                    if let Some(running) = x
                        .attempts
                        .last_mut()
                        .filter(|a| a.outcome == AttemptOutcome::Processing)
                    {
                        running.outcome = AttemptOutcome::Abandoned;
                        running.ended_at = Some(at);
                    }
                }
                x.status = ExecutionStatus::Processing;
                x.processing_started_at = Some(at);
                x.next_retry_at = None;
                x.attempts.push(AttemptRecord {
                    worker: Some(e.worker.clone()),
                    principal: e.principal.clone(),
                    claimed_at: Some(at),
                    outcome: AttemptOutcome::Processing,
                    ended_at: None,
                    error: None,
                    backoff_ms: None,
                    next_retry_at: None,
                    unclaimed_success: false,
                });
                // A reclaim too: the legacy claim filter refuses a processing document, so it
                // keeps the first claim (SPEC section 5), as seeds/000 would.
                legacy_claim(&mut x.legacy, at);
            }
            Event::ExecutionSucceeded(e) => {
                let Some(x) = self.execution_mut(e.execution_id) else {
                    return;
                };
                x.status = ExecutionStatus::Completed;
                x.completed_at = Some(at);
                x.next_retry_at = None;
                let attempt = open_attempt(x, e.worker.as_ref(), e.unclaimed_success);
                if attempt.principal.is_none() {
                    attempt.principal.clone_from(&e.principal);
                }
                attempt.outcome = AttemptOutcome::Completed;
                attempt.ended_at = Some(at);
                attempt.unclaimed_success = e.unclaimed_success;
                legacy_succeed(&mut x.legacy, at);
            }
            Event::ExecutionFailed(e) => {
                let Some(x) = self.execution_mut(e.execution_id) else {
                    return;
                };
                let error = ErrorRecord {
                    message: e.error_message.clone(),
                    category: e.category.clone(),
                };
                x.status = e.status;
                x.retry_count = e.retry_count;
                x.failed_at = Some(at);
                x.next_retry_at = e.next_retry_at.map(|t| t.millis());
                x.last_error = Some(error.clone());
                let attempt = open_attempt(x, e.worker.as_ref(), false);
                attempt.outcome = AttemptOutcome::of_status(e.status);
                attempt.ended_at = Some(at);
                attempt.error = Some(error);
                attempt.backoff_ms = e.backoff_ms;
                attempt.next_retry_at = e.next_retry_at.map(|t| t.millis());
                legacy_fail(&mut x.legacy, at, &e.error_message, e.error_stack.as_ref());
            }
            Event::ExecutionArchived(e) => {
                let Some(x) = self.execution_mut(e.execution_id) else {
                    return;
                };
                x.status = ExecutionStatus::Archived;
                x.archived_at = Some(at);
                x.archived_reason = e.reason.clone();
                x.archived_by = e.by.clone();
                x.archived_principal.clone_from(&e.principal);
                x.next_retry_at = None;
                let legacy = &mut x.legacy;
                legacy.status = ExecutionStatus::Archived;
                legacy.archived_at = Some(at);
                legacy.archived_reason = e.reason.clone();
                legacy.archived_by = e.by.clone();
            }
            Event::ReportRejected(e) => {
                self.rejected[rejection_index(&e.reason)] += 1;
                // The legacy tracker had no such rejection: replay what its code would have done.
                let Some(x) = self.execution_mut(e.execution_id) else {
                    return;
                };
                if let RejectionReason::NotClaimable {
                    status: ExecutionStatus::Processing,
                } = e.reason
                {
                    x.contested_claims += 1;
                }
                match e.op {
                    Op::Claim => legacy_claim(&mut x.legacy, at),
                    Op::Succeed => legacy_succeed(&mut x.legacy, at),
                    Op::Fail => {
                        let (message, stack) =
                            e.error.as_ref().map_or((String::new(), None), |err| {
                                (err.message.clone(), err.stack.clone())
                            });
                        legacy_fail(&mut x.legacy, at, &message, stack.as_ref());
                    }
                    // Enqueue of an existing executionId: the unique index refuses the insert.
                    // Archive and retry are operator tooling with the ledger's own conditions.
                    Op::Enqueue | Op::Archive | Op::Retry => {}
                }
            }
        }
    }

    fn execution_mut(&mut self, execution_id: ExecutionId) -> Option<&mut ExecutionRecord> {
        self.executions
            .iter_mut()
            .find(|x| x.execution_id == execution_id)
    }
}

/// seeds/000 claim: `findOneAndUpdate({status: {$in: [queued, failed]}}, {status: processing,
/// processingStartedAt})`.
fn legacy_claim(legacy: &mut LegacyRecord, at: i64) {
    if matches!(
        legacy.status,
        ExecutionStatus::Queued | ExecutionStatus::Failed
    ) {
        legacy.status = ExecutionStatus::Processing;
        legacy.processing_started_at = Some(at);
    }
}

/// seeds/000 success: `updateOne({executionId}, {status: completed, completedAt})`, whatever the
/// status was.
fn legacy_succeed(legacy: &mut LegacyRecord, at: i64) {
    legacy.status = ExecutionStatus::Completed;
    legacy.completed_at = Some(at);
}

/// seeds/000 failure: read retryCount, then set failed/dlq, the error fields and failedAt, and
/// `$inc` retryCount.
fn legacy_fail(legacy: &mut LegacyRecord, at: i64, message: &str, stack: Option<&String>) {
    let can_retry = legacy.retry_count < legacy.max_retries;
    legacy.status = if can_retry {
        ExecutionStatus::Failed
    } else {
        ExecutionStatus::Dlq
    };
    legacy.error_message = Some(message.to_owned());
    legacy.error_category = Some(legacy_category(message));
    legacy.error_stack = stack.cloned();
    legacy.failed_at = Some(at);
    legacy.retry_count = legacy.retry_count.saturating_add(1);
}

/// The attempt an outcome closes: the open one, or a new claimless one.
fn open_attempt<'a>(
    execution: &'a mut ExecutionRecord,
    worker: Option<&String>,
    unclaimed: bool,
) -> &'a mut AttemptRecord {
    let has_open = execution
        .attempts
        .last()
        .is_some_and(|a| a.outcome == AttemptOutcome::Processing);
    if unclaimed || !has_open {
        execution.attempts.push(AttemptRecord {
            worker: worker.cloned(),
            principal: None,
            claimed_at: None,
            outcome: AttemptOutcome::Processing,
            ended_at: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use taskledger_domain::event::{ExecutionClaimed, ExecutionEnqueued, Reclaim};
    use taskledger_domain::{ReportKey, Timestamp};

    fn enqueued(max_retries: u32, defaulted: bool) -> Event {
        Event::ExecutionEnqueued(ExecutionEnqueued {
            report_key: ReportKey(uuid::Uuid::from_u128(1)),
            principal: None,
            execution_id: ExecutionId(uuid::Uuid::from_u128(7)),
            at: Timestamp(1_000),
            queue: "q".into(),
            max_retries,
            max_retries_defaulted: defaulted,
            message_version: None,
            metadata: Default::default(),
            manual_retry: None,
        })
    }

    fn claimed(at: i64, worker: &str, attempt: u32, reclaim: Option<Reclaim>) -> Event {
        Event::ExecutionClaimed(ExecutionClaimed {
            report_key: ReportKey(uuid::Uuid::from_u128(u128::from(attempt) + 1)),
            principal: None,
            execution_id: ExecutionId(uuid::Uuid::from_u128(7)),
            at: Timestamp(at),
            worker: worker.into(),
            attempt,
            reclaim,
        })
    }

    /// SPEC section 5: the tracker is created with the report's maxRetries; without one it has
    /// the schema's 5, whatever default the ledger's policy applied.
    #[test]
    fn the_legacy_max_retries_is_the_reports_else_the_schemas() {
        for (max_retries, defaulted, legacy) in [(9, true, 5), (9, false, 9), (0, false, 0)] {
            let mut record = TaskRecord::default();
            record.apply(&enqueued(max_retries, defaulted));
            assert_eq!(record.executions[0].max_retries, max_retries);
            assert_eq!(record.executions[0].legacy.max_retries, legacy);
        }
    }

    /// A reclaim abandons the running attempt in the ledger's models; the legacy document, whose
    /// claim filter refuses a processing document, keeps the first claim.
    #[test]
    fn a_reclaim_abandons_the_attempt_and_the_legacy_document_keeps_the_first_claim() {
        let mut record = TaskRecord::default();
        record.apply(&enqueued(5, true));
        record.apply(&claimed(2_000, "w1", 1, None));
        record.apply(&claimed(9_000, "w2", 2, Some(Reclaim::Redelivered)));
        let x = &record.executions[0];
        assert_eq!(x.reclaims, 1);
        assert_eq!(x.processing_started_at, Some(9_000));
        let outcomes: Vec<_> = x.attempts.iter().map(|a| (a.outcome, a.ended_at)).collect();
        assert_eq!(
            outcomes,
            [
                (AttemptOutcome::Abandoned, Some(9_000)),
                (AttemptOutcome::Processing, None)
            ]
        );
        assert_eq!(x.current_worker(), Some("w2"));
        assert_eq!(x.retry_count, 0);
        assert_eq!(x.legacy.status, ExecutionStatus::Processing);
        assert_eq!(x.legacy.processing_started_at, Some(2_000));
    }
}
