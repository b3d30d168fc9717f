//! `decide`: every rule of SPEC section 4. Given a task's state, one report and the policy, it
//! returns the events to record and the report's outcome. Pure: no clock, no randomness.

use crate::event::*;
use crate::ids::ReportKey;
use crate::policy::Policy;
use crate::report::{Report, ReportBody};
use crate::state::{ExecutionState, ExecutionStatus, TaskState};
use crate::time::Timestamp;

/// What a report becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The report's idempotency key; event ids derive from it.
    pub report_key: ReportKey,
    /// Events to append, atomically, in order. Empty for a duplicate report.
    pub events: Vec<Event>,
    /// Accepted or rejected (with its reason). For a duplicate, the first outcome.
    pub outcome: Outcome,
    /// The report was seen before: nothing is appended.
    pub duplicate: bool,
}

/// Decides one report against the state of its task.
pub fn decide(state: &TaskState, report: &Report, policy: &Policy) -> Decision {
    decide_keyed(state, report, report.key(), policy)
}

/// [`decide`] for a report whose key (`report.key()`) the caller already computed: the ingest
/// path computes it on the submitting task, outside the stream's lock.
pub fn decide_keyed(
    state: &TaskState,
    report: &Report,
    report_key: ReportKey,
    policy: &Policy,
) -> Decision {
    debug_assert_eq!(report_key, report.key());
    decide_recorded(state, report, report_key, policy)
}

/// [`decide`] for a report rebuilt from the events it was once decided into (a what-if replay,
/// `taskledger whatif`), under the key it was recorded with. The rebuilt report holds only what
/// those events kept, so its own canonical key may differ from the original's; the recorded key
/// keeps the replay's idempotency record, event ids and backoff jitter those of the original.
pub fn decide_recorded(
    state: &TaskState,
    report: &Report,
    report_key: ReportKey,
    policy: &Policy,
) -> Decision {
    if let Some(first) = state.reports.get(&report_key) {
        return Decision {
            report_key,
            events: Vec::new(),
            outcome: first.clone(),
            duplicate: true,
        };
    }
    let events = decide_events(state, report, report_key, policy);
    let outcome = events
        .iter()
        .map(Event::outcome)
        .find(|outcome| *outcome != Outcome::Accepted)
        .unwrap_or(Outcome::Accepted);
    Decision {
        report_key,
        events,
        outcome,
        duplicate: false,
    }
}

fn decide_events(
    state: &TaskState,
    report: &Report,
    key: ReportKey,
    policy: &Policy,
) -> Vec<Event> {
    let at = report.at;
    let execution_id = report.execution_id();
    let rejected_error = match &report.body {
        ReportBody::Fail { error, .. } => Some(error.clone()),
        _ => None,
    };
    let reject = |reason: RejectionReason, worker: Option<&String>| {
        vec![Event::ReportRejected(ReportRejected {
            report_key: key,
            principal: report.principal.clone(),
            op: report.op(),
            execution_id,
            at,
            worker: worker.cloned(),
            error: rejected_error.clone(),
            reason,
        })]
    };
    match &report.body {
        ReportBody::Enqueue {
            queue,
            max_retries,
            message_version,
            metadata,
            ..
        } => {
            if state.execution(execution_id).is_some() {
                return reject(
                    RejectionReason::DuplicateEnqueue {
                        active_execution_id: execution_id,
                    },
                    None,
                );
            }
            let rule = policy.dedup.rule_for(queue);
            // seeds/000: `status in [queued, processing] and enqueuedAt > now - window`.
            let window_start = at.minus_millis(i64::try_from(rule.window_ms).unwrap_or(i64::MAX));
            let active = state.executions.iter().find(|execution| {
                execution.status.is_active()
                    && (rule.while_active || execution.enqueued_at > window_start)
            });
            if let Some(active) = active {
                return reject(
                    RejectionReason::DuplicateEnqueue {
                        active_execution_id: active.execution_id,
                    },
                    None,
                );
            }
            vec![Event::ExecutionEnqueued(ExecutionEnqueued {
                report_key: key,
                principal: report.principal.clone(),
                execution_id,
                at,
                queue: queue.clone(),
                max_retries: max_retries.unwrap_or(policy.default_max_retries),
                max_retries_defaulted: max_retries.is_none(),
                message_version: message_version.clone(),
                metadata: metadata.clone().unwrap_or_default(),
                manual_retry: None,
            })]
        }
        ReportBody::Claim {
            worker,
            redelivered,
            ..
        } => {
            let Some(execution) = state.execution(execution_id) else {
                return reject(RejectionReason::UnknownExecution, Some(worker));
            };
            let reclaim = match execution.status {
                ExecutionStatus::Queued | ExecutionStatus::Failed => None,
                ExecutionStatus::Processing => {
                    match reclaim_cause(execution, *redelivered, at, policy) {
                        Some(cause) => Some(cause),
                        None => {
                            return reject(
                                RejectionReason::NotClaimable {
                                    status: ExecutionStatus::Processing,
                                },
                                Some(worker),
                            )
                        }
                    }
                }
                status => return reject(RejectionReason::NotClaimable { status }, Some(worker)),
            };
            vec![Event::ExecutionClaimed(ExecutionClaimed {
                report_key: key,
                principal: report.principal.clone(),
                execution_id,
                at,
                worker: worker.clone(),
                attempt: execution.claims + 1,
                reclaim,
            })]
        }
        ReportBody::Succeed { worker, .. } => {
            let Some(execution) = state.execution(execution_id) else {
                return reject(RejectionReason::UnknownExecution, worker.as_ref());
            };
            match execution.status {
                status @ (ExecutionStatus::Completed
                | ExecutionStatus::Dlq
                | ExecutionStatus::Archived) => reject(
                    RejectionReason::InvalidTransition { status },
                    worker.as_ref(),
                ),
                status => vec![Event::ExecutionSucceeded(ExecutionSucceeded {
                    report_key: key,
                    principal: report.principal.clone(),
                    execution_id,
                    at,
                    worker: worker.clone(),
                    unclaimed_success: status != ExecutionStatus::Processing,
                })],
            }
        }
        ReportBody::Fail { worker, error, .. } => {
            let Some(execution) = state.execution(execution_id) else {
                return reject(RejectionReason::UnknownExecution, worker.as_ref());
            };
            if let status @ (ExecutionStatus::Completed
            | ExecutionStatus::Dlq
            | ExecutionStatus::Archived) = execution.status
            {
                return reject(
                    RejectionReason::InvalidTransition { status },
                    worker.as_ref(),
                );
            }
            let (category, category_source) = match &error.category {
                Some(category) => (category.clone(), CategorySource::Reported),
                None => (
                    policy.classify(&error.message).to_owned(),
                    CategorySource::Classified,
                ),
            };
            let retry_policy = policy.retry.for_category(&category);
            let allowed_retries = retry_policy
                .max_retries
                .map_or(execution.max_retries, |cap| cap.min(execution.max_retries));
            // seeds/000: `canRetry = retryCount < maxRetries`, read before the increment.
            let can_retry = execution.retry_count < allowed_retries;
            let backoff_ms = can_retry.then(|| retry_policy.backoff_ms(execution.retry_count, key));
            vec![Event::ExecutionFailed(ExecutionFailed {
                report_key: key,
                principal: report.principal.clone(),
                execution_id,
                at,
                worker: worker.clone(),
                error_message: error.message.clone(),
                error_stack: error.stack.clone(),
                category,
                category_source,
                retry_count: execution.retry_count.saturating_add(1),
                status: if can_retry {
                    ExecutionStatus::Failed
                } else {
                    ExecutionStatus::Dlq
                },
                backoff_ms,
                next_retry_at: backoff_ms
                    .map(|ms| at.plus_millis(i64::try_from(ms).unwrap_or(i64::MAX))),
            })]
        }
        ReportBody::Archive { reason, by, .. } => {
            let Some(execution) = state.execution(execution_id) else {
                return reject(RejectionReason::UnknownExecution, None);
            };
            match execution.status {
                from_status @ (ExecutionStatus::Dlq | ExecutionStatus::Failed) => {
                    vec![Event::ExecutionArchived(ExecutionArchived {
                        report_key: key,
                        principal: report.principal.clone(),
                        execution_id,
                        at,
                        reason: reason.clone(),
                        by: by.clone(),
                        from_status,
                    })]
                }
                status => reject(RejectionReason::InvalidTransition { status }, None),
            }
        }
        ReportBody::Retry {
            by,
            reason,
            queue,
            max_retries,
            message_version,
            metadata,
            ..
        } => {
            let Some(latest) = state.latest() else {
                return reject(RejectionReason::UnknownExecution, None);
            };
            if let Some(active) = state.executions.iter().find(|e| e.status.is_active()) {
                return reject(
                    RejectionReason::DuplicateEnqueue {
                        active_execution_id: active.execution_id,
                    },
                    None,
                );
            }
            if state.execution(execution_id).is_some() {
                return reject(
                    RejectionReason::DuplicateEnqueue {
                        active_execution_id: execution_id,
                    },
                    None,
                );
            }
            let mut events = Vec::with_capacity(2);
            if matches!(
                latest.status,
                ExecutionStatus::Dlq | ExecutionStatus::Failed
            ) {
                events.push(Event::ExecutionArchived(ExecutionArchived {
                    report_key: key,
                    principal: report.principal.clone(),
                    execution_id: latest.execution_id,
                    at,
                    // The legacy tracker's own wording (seeds/001 archivedReason examples).
                    reason: Some("Manual retry initiated".into()),
                    by: by.clone(),
                    from_status: latest.status,
                }));
            }
            events.push(Event::ExecutionEnqueued(ExecutionEnqueued {
                report_key: key,
                principal: report.principal.clone(),
                execution_id,
                at,
                queue: queue.clone().unwrap_or_else(|| latest.queue.clone()),
                max_retries: max_retries.unwrap_or(latest.max_retries),
                // Inherited, not the policy's default: an operator's retry carries it over.
                max_retries_defaulted: false,
                message_version: message_version
                    .clone()
                    .or_else(|| latest.message_version.clone()),
                metadata: metadata
                    .clone()
                    .unwrap_or_else(|| latest.metadata.as_ref().clone()),
                manual_retry: Some(ManualRetry {
                    previous_execution_id: Some(latest.execution_id),
                    by: by.clone(),
                    reason: reason.clone(),
                }),
            }));
            events
        }
    }
}

/// Whether a claim of a `processing` execution takes it over (SPEC section 4, a reclaim): the
/// report says the queue redelivered the message, or the running attempt has held it for at least
/// the queue's claim lease. The report's word comes first: it is what the queue itself knows.
fn reclaim_cause(
    execution: &ExecutionState,
    redelivered: bool,
    at: Timestamp,
    policy: &Policy,
) -> Option<Reclaim> {
    if redelivered {
        return Some(Reclaim::Redelivered);
    }
    let lease_ms = policy.claim.rule_for(&execution.queue).lease_ms?;
    let started = execution.processing_started_at?;
    let lease_end = started.plus_millis(i64::try_from(lease_ms).unwrap_or(i64::MAX));
    (at >= lease_end).then_some(Reclaim::LeaseExpired { lease_ms })
}
