//! The workload: the same steps for every system.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Enqueue,
    Claim,
    Succeed,
    Fail,
    Retry,
}

#[derive(Debug, Clone)]
pub(super) struct Step {
    pub(super) op: Op,
    pub(super) task_id: String,
    pub(super) execution_id: uuid::Uuid,
    /// Milliseconds since the epoch: the report's `at`, and the legacy code's `new Date()`.
    pub(super) at: i64,
    pub(super) worker: usize,
    /// Only on enqueue and retry (the legacy row's metadata).
    pub(super) log_id: u64,
}

pub(super) const QUEUE: &str = "bench_tasks";
pub(super) const TRANSIENT: &str = "ETIMEDOUT calling partner api";
pub(super) const STACK: &str = "Error: ETIMEDOUT\n    at download (partner.js:42)";
pub(super) const OPERATOR: &str = "ops@acme";
/// seeds/000's dedup window.
pub(super) const DEDUP_WINDOW_MS: i64 = 5 * 60_000;

/// One task of `worker`, as the seeds' load tests run it: 80 % enqueue → claim → succeed; 15 %
/// fail once (a timeout), are redelivered and succeed; 2.5 % fail six times into the DLQ (the
/// legacy tracker's maxRetries is 5) and stay there; 2.5 % do that and are retried by an operator
/// (the old execution archived, a new one enqueued), claimed and succeed.
pub(super) fn task_steps(run: u64, worker: usize, task: u64) -> Vec<Step> {
    let base = 1_769_000_000_000i64 + task as i64 * 60_000; // 2026-01-21
    let task_id = format!("{QUEUE}:r{run}:w{worker}:{task}");
    let execution =
        |n: u64| uuid::Uuid::from_u64_pair((run << 32) | worker as u64, (task << 8) | n);
    let mut steps = Vec::with_capacity(16);
    let mut push = |op: Op, execution_id: uuid::Uuid| {
        let at = base + steps.len() as i64 * 100;
        steps.push(Step {
            op,
            task_id: task_id.clone(),
            execution_id,
            at,
            worker,
            log_id: task,
        });
    };
    let first = execution(1);
    push(Op::Enqueue, first);
    push(Op::Claim, first);
    match task % 40 {
        19 | 39 => {
            push(Op::Fail, first);
            for _ in 0..5 {
                push(Op::Claim, first);
                push(Op::Fail, first);
            }
            if task % 40 == 19 {
                let second = execution(2);
                push(Op::Retry, second);
                push(Op::Claim, second);
                push(Op::Succeed, second);
            }
        }
        n if n % 5 == 4 => {
            push(Op::Fail, first);
            push(Op::Claim, first);
            push(Op::Succeed, first);
        }
        _ => push(Op::Succeed, first),
    }
    steps
}

pub(super) fn iso(millis: i64) -> String {
    taskledger_domain::Timestamp(millis).to_string()
}

impl Step {
    /// The taskledger report of this step.
    pub(super) fn json(&self) -> String {
        let (task, execution, at, worker) =
            (&self.task_id, self.execution_id, iso(self.at), self.worker);
        match self.op {
            Op::Enqueue => format!(
                r#"{{"op":"enqueue","taskId":"{task}","executionId":"{execution}","queue":"{QUEUE}","at":"{at}","metadata":{{"partnerCode":"SATLOC","logId":"{}"}}}}"#,
                self.log_id
            ),
            Op::Claim => format!(
                r#"{{"op":"claim","taskId":"{task}","executionId":"{execution}","worker":"w{worker}","at":"{at}"}}"#
            ),
            Op::Succeed => format!(
                r#"{{"op":"succeed","taskId":"{task}","executionId":"{execution}","worker":"w{worker}","at":"{at}"}}"#
            ),
            Op::Fail => format!(
                r#"{{"op":"fail","taskId":"{task}","executionId":"{execution}","worker":"w{worker}","at":"{at}","error":{{"message":"{TRANSIENT}","stack":{}}}}}"#,
                serde_json::Value::from(STACK)
            ),
            Op::Retry => format!(
                r#"{{"op":"retry","taskId":"{task}","executionId":"{execution}","by":"{OPERATOR}","reason":"bench","at":"{at}"}}"#
            ),
        }
    }

    pub(super) fn report(&self) -> anyhow::Result<Report> {
        Report::from_json(&self.json()).map_err(|error| anyhow::anyhow!("{error}"))
    }
}
