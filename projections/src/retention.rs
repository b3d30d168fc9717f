//! Which streams retention may move to cold storage: the domain's half of `taskledger retain`
//! (the store moves whatever it is given and knows nothing of executions).
//!
//! A task's stream may move when **every execution of it has ended** — `completed`, `dlq` or
//! `archived` — and its last event's `at` is before the cut-off. `queued`, `processing` and
//! `failed` (a retry is still due) executions have not ended. `dlq` counts as ended: nothing
//! automatic follows it, and an operator's later `retry` of it still works (it appends to the
//! stream, whose head the store keeps, and the new events are hot). A stream of rejected reports
//! only (no execution) has nothing running and moves too. Moving is never a loss: every read
//! still sees every event, so a stream moved "too early" costs a slower read, never a wrong one.

use crate::kv::for_each_task;
use crate::{Kv, ProjectionError, TaskRecord};
use taskledger_domain::{ExecutionStatus, TaskId, Timestamp};

/// Whether an execution in `status` has ended (see the module docs).
pub fn has_ended(status: ExecutionStatus) -> bool {
    matches!(
        status,
        ExecutionStatus::Completed | ExecutionStatus::Dlq | ExecutionStatus::Archived
    )
}

/// Whether `record`'s stream may move: every execution ended, the last event before `before`.
pub fn may_retain(record: &TaskRecord, before: Timestamp) -> bool {
    record.events > 0
        && record.updated_at.is_some_and(|at| at < before.millis())
        && record.executions.iter().all(|x| has_ended(x.status))
}

/// The tasks of the stored models whose streams may move (in taskId order), and how many tasks
/// the models hold.
pub fn ended_before(kv: &dyn Kv, before: Timestamp) -> Result<(Vec<TaskId>, u64), ProjectionError> {
    let mut tasks = Vec::new();
    let mut seen = 0u64;
    for_each_task(kv, &mut |task_id, record| {
        seen += 1;
        if may_retain(&record, before) {
            tasks.push(task_id);
        }
    })?;
    Ok((tasks, seen))
}
