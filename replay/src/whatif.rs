//! Policy what-if (`taskledger whatif`): the recorded reports replayed through `decide` under
//! another policy, and compared, execution by execution, with what the ledger recorded — final
//! status, retryCount, when it reached the DLQ, the retry schedule — with totals.
//!
//! **The reports come from the events.** Every event carries the key of the report it was decided
//! from, and rejections are events too, so the stream holds every report the ledger decided, in
//! order: the consecutive events of one stream with one report key are one report (a manual retry
//! is an `ExecutionArchived` and an `ExecutionEnqueued` under one key). Each is rebuilt from its
//! events and decided again with `decide_recorded` under its recorded key, so event ids and
//! backoff jitter are the original's and a replay under the recording's own policy gives back
//! exactly the recorded decisions. A failure whose category the classifier chose is rebuilt
//! without a category (the new classifier decides); an enqueue that named no maxRetries is
//! rebuilt without one (the new default applies).
//!
//! What the events do not keep, the rebuilt report cannot have: a rejected enqueue (that the new
//! policy might accept) takes its queue, maxRetries and metadata from the execution its rejection
//! named; a rejected archive or retry has no reason or `by`; a claim that did not reclaim is
//! rebuilt as not `redelivered`; a manual retry's queue and maxRetries, when they equal those of
//! the execution it retried, are taken as inherited (and inherit what the new policy gave it).
//! None of these change a status, a retryCount or a schedule except through a rule that depends
//! on them, and the tests pin the replay under the recording's own policy to the recording.
//!
//! **Where history runs out.** The recorded reports are the only evidence: the replay never
//! invents a report. When the new policy leaves an execution waiting for work nobody reported —
//! a retry scheduled (`failed`) that no later claim took, a claim or an enqueue with nothing
//! after it — while the recording did not leave it waiting at the same point, its outcome is
//! marked `beyondHistory` (with the instant from which history is missing) instead of guessed.
//!
//! Pure over events and a policy ([`WhatIf`], [`what_if`]); [`what_if_store`] feeds it from any
//! `EventStore` in global order, reading and decoding the next chunk while the current one is
//! replayed. No clock: the same events and policy give byte-identical reports. Every stream's
//! state is held until the end (about 1.5 KB per task), since a stream can continue anywhere in
//! the global order.

pub mod html;

use crate::ReplayError;
use serde::Serialize;
use std::collections::BTreeMap;
use taskledger_domain::event::{CategorySource, Reclaim, RejectionReason, ReportedError};
use taskledger_domain::{
    decide_recorded, Event, ExecutionId, ExecutionStatus, Op, Policy, Report, ReportBody, TaskId,
    TaskState, Timestamp,
};
use taskledger_store::SharedStore;

/// Keyed by stream names the ledger accepted: a fast non-keyed hash will do.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Events read (and decoded) per store call: two chunks in flight hold a few tens of MB.
pub const WHATIF_CHUNK_EVENTS: usize = 65_536;

/// Which executions the comparison covers. The replay itself always decides every stream from
/// its first event: each decision depends on the whole stream before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WhatIfOptions {
    /// Only executions of this queue.
    pub queue: Option<String>,
    /// Only executions enqueued at or after this instant.
    pub since: Option<Timestamp>,
}

/// What happened to one execution, on one side of the comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionOutcome {
    /// Its status after the last report.
    pub status: ExecutionStatus,
    pub retry_count: u32,
    /// Retries the policy granted: failures decided `failed` (with a nextRetryAt).
    pub retries: u32,
    /// When a failure sent it to the DLQ.
    pub dlq_at: Option<Timestamp>,
    /// The retry it waits for, while `failed`.
    pub next_retry_at: Option<Timestamp>,
    /// Every nextRetryAt the policy scheduled for it, in order.
    pub retry_schedule: Vec<Timestamp>,
}

/// One execution whose outcome differs under the new policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionChange {
    pub task_id: String,
    pub execution_id: ExecutionId,
    pub queue: String,
    pub enqueued_at: Timestamp,
    /// As recorded; `null` when the recording rejected its enqueue.
    pub before: Option<ExecutionOutcome>,
    /// Under the new policy; `null` when it would reject its enqueue.
    pub after: Option<ExecutionOutcome>,
    /// What differs, of `exists`, `status`, `retryCount`, `dlqAt`, `retrySchedule`.
    pub fields: Vec<&'static str>,
    /// The new policy leaves it waiting for reports history does not hold (`after` is its state
    /// when history ran out, not an outcome).
    pub beyond_history: bool,
    /// From when history is missing: the unreported retry's nextRetryAt, or the last report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beyond_history_at: Option<Timestamp>,
}

/// A count before and after.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BeforeAfter {
    pub before: u64,
    pub after: u64,
}

/// Retries granted, before and after, and per execution the difference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetryTotals {
    pub before: u64,
    pub after: u64,
    /// Sum over executions of the retries the new policy would not grant.
    pub saved: u64,
    /// Sum over executions of the retries the new policy would grant beyond the recorded ones.
    pub added: u64,
}

/// The comparison (the JSON of `whatif --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhatIfReport {
    pub queue: Option<String>,
    pub since: Option<Timestamp>,
    /// Events replayed (all of them, whatever the filters).
    pub events: u64,
    /// Reports they were decided from.
    pub reports: u64,
    /// Task streams replayed.
    pub tasks: u64,
    /// Executions compared (those the filters keep, on either side).
    pub executions: u64,
    pub changed: u64,
    /// Changed executions per differing field.
    pub by_field: BTreeMap<&'static str, u64>,
    /// Changed executions per `before -> after` final status (`absent` for no execution).
    pub status_changes: BTreeMap<String, u64>,
    /// Executions that reached the DLQ.
    pub dlq: BeforeAfter,
    /// Executions whose final status is `dlq`.
    pub in_dlq: BeforeAfter,
    pub retries: RetryTotals,
    /// Changed executions whose outcome history cannot tell (see [`ExecutionChange`]).
    pub beyond_history: u64,
    /// Every changed execution, by taskId, then enqueue order.
    pub changes: Vec<ExecutionChange>,
}

/// One execution as a side of the replay folds it.
#[derive(Debug, Clone)]
struct Tracked {
    execution_id: ExecutionId,
    queue: String,
    max_retries: u32,
    enqueued_at: Timestamp,
    /// The `at` of the last event that changed it.
    last_at: Timestamp,
    outcome: ExecutionOutcome,
    beyond_history_at: Option<Timestamp>,
}

impl Tracked {
    fn waiting(&self) -> bool {
        matches!(
            self.outcome.status,
            ExecutionStatus::Queued | ExecutionStatus::Processing | ExecutionStatus::Failed
        )
    }

    /// From when an execution left waiting has no history: its retry's time, else its last
    /// report's.
    fn history_ends_at(&self) -> Timestamp {
        self.outcome.next_retry_at.unwrap_or(self.last_at)
    }
}

fn find(side: &mut [Tracked], execution_id: ExecutionId) -> Option<&mut Tracked> {
    side.iter_mut()
        .find(|tracked| tracked.execution_id == execution_id)
}

/// Folds one event into a side's executions: the facts the comparison needs, no rule.
fn fold(side: &mut Vec<Tracked>, event: &Event) {
    let at = event.at();
    if let Event::ExecutionEnqueued(e) = event {
        side.push(Tracked {
            execution_id: e.execution_id,
            queue: e.queue.clone(),
            max_retries: e.max_retries,
            enqueued_at: e.at,
            last_at: e.at,
            outcome: ExecutionOutcome {
                status: ExecutionStatus::Queued,
                retry_count: 0,
                retries: 0,
                dlq_at: None,
                next_retry_at: None,
                retry_schedule: Vec::new(),
            },
            beyond_history_at: None,
        });
        return;
    }
    if matches!(event, Event::ReportRejected(_)) {
        return;
    }
    let Some(tracked) = find(side, event.execution_id()) else {
        return;
    };
    tracked.last_at = at;
    let outcome = &mut tracked.outcome;
    outcome.next_retry_at = None;
    match event {
        Event::ExecutionClaimed(_) => outcome.status = ExecutionStatus::Processing,
        Event::ExecutionSucceeded(_) => outcome.status = ExecutionStatus::Completed,
        Event::ExecutionArchived(_) => outcome.status = ExecutionStatus::Archived,
        Event::ExecutionFailed(e) => {
            outcome.status = e.status;
            outcome.retry_count = e.retry_count;
            if e.status == ExecutionStatus::Dlq && outcome.dlq_at.is_none() {
                outcome.dlq_at = Some(e.at);
            }
            if let Some(next) = e.next_retry_at {
                outcome.retries += 1;
                outcome.retry_schedule.push(next);
                outcome.next_retry_at = Some(next);
            }
        }
        Event::ExecutionEnqueued(_) | Event::ReportRejected(_) => {}
    }
}

/// One task stream, replayed.
struct StreamReplay {
    task_id: TaskId,
    /// A recorded `ExecutionArchived` not yet replayed: an archive report, or the first event of
    /// a manual retry (then the next event, under the same key, is its `ExecutionEnqueued`).
    pending: Option<Event>,
    /// The new policy's state of the stream: what `decide` reads.
    replayed: TaskState,
    before: Vec<Tracked>,
    after: Vec<Tracked>,
}

impl StreamReplay {
    /// Replays one report — its recorded events (`archived`, a manual retry's first, then
    /// `last`) into `before`, its new decision into `after`.
    fn settle(&mut self, policy: &Policy, archived: Option<Event>, last: Event) {
        let key = last.report_key();
        // The recording's state of each execution just before this report, for the operator
        // actions (archive, retry) that may end a retry the new policy scheduled.
        let operator = match &last {
            Event::ExecutionArchived(_) => true,
            Event::ExecutionEnqueued(e) => e.manual_retry.is_some(),
            Event::ReportRejected(r) => matches!(r.op, Op::Archive | Op::Retry),
            _ => false,
        };
        let recorded_before: Vec<(ExecutionId, ExecutionStatus, u32)> = if operator {
            self.before
                .iter()
                .map(|t| (t.execution_id, t.outcome.status, t.outcome.retry_count))
                .collect()
        } else {
            Vec::new()
        };
        for event in archived.iter().chain(std::iter::once(&last)) {
            fold(&mut self.before, event);
        }
        let report = self.rebuild(last);
        let decision = decide_recorded(&self.replayed, &report, key, policy);
        for event in &decision.events {
            if let Event::ExecutionArchived(archived) = event {
                if archived.from_status == ExecutionStatus::Failed {
                    // A retry the new policy scheduled ends without a claim: unless the
                    // recording waited for the same retry here, nobody reported what it did.
                    let same = recorded_before.iter().any(|(id, status, retry_count)| {
                        *id == archived.execution_id
                            && *status == ExecutionStatus::Failed
                            && Some(*retry_count)
                                == self
                                    .replayed
                                    .execution(archived.execution_id)
                                    .map(|e| e.retry_count)
                    });
                    if !same {
                        if let Some(tracked) = find(&mut self.after, archived.execution_id) {
                            let at = tracked.history_ends_at();
                            tracked.beyond_history_at.get_or_insert(at);
                        }
                    }
                }
            }
            self.replayed.apply(event);
            fold(&mut self.after, event);
        }
    }

    /// The report a recorded decision was made from, as far as its events tell (module doc),
    /// from its last event (a manual retry's `ExecutionEnqueued` says all of it). What no rule
    /// reads — metadata, stacks — is left out: the replay compares outcomes, and copying them
    /// would cost more than every rule together.
    fn rebuild(&self, last: Event) -> Report {
        let principal = last.principal().map(str::to_owned);
        let (at, body) = match last {
            Event::ExecutionEnqueued(e) => {
                let body = match e.manual_retry {
                    Some(retry) => {
                        // What the new execution shares with the one retried was most likely
                        // inherited (the report named none): inherited again, so it follows
                        // what the new policy gave that one (a new default maxRetries).
                        let previous = retry
                            .previous_execution_id
                            .and_then(|id| self.before.iter().find(|t| t.execution_id == id));
                        ReportBody::Retry {
                            execution_id: e.execution_id,
                            by: retry.by,
                            reason: retry.reason,
                            queue: (previous.map(|p| &p.queue) != Some(&e.queue))
                                .then_some(e.queue),
                            max_retries: (previous.map(|p| p.max_retries) != Some(e.max_retries))
                                .then_some(e.max_retries),
                            message_version: e.message_version,
                            metadata: Some(serde_json::Map::new()),
                        }
                    }
                    None => ReportBody::Enqueue {
                        execution_id: e.execution_id,
                        queue: e.queue,
                        max_retries: (!e.max_retries_defaulted).then_some(e.max_retries),
                        message_version: e.message_version,
                        metadata: None,
                    },
                };
                (e.at, body)
            }
            Event::ExecutionClaimed(e) => (
                e.at,
                ReportBody::Claim {
                    execution_id: e.execution_id,
                    worker: e.worker,
                    redelivered: e.reclaim == Some(Reclaim::Redelivered),
                },
            ),
            Event::ExecutionSucceeded(e) => (
                e.at,
                ReportBody::Succeed {
                    execution_id: e.execution_id,
                    worker: e.worker,
                },
            ),
            Event::ExecutionFailed(e) => (
                e.at,
                ReportBody::Fail {
                    execution_id: e.execution_id,
                    worker: e.worker,
                    error: ReportedError {
                        message: e.error_message,
                        category: match e.category_source {
                            CategorySource::Reported => Some(e.category),
                            CategorySource::Classified => None,
                        },
                        stack: None,
                    },
                },
            ),
            Event::ExecutionArchived(e) => (
                e.at,
                ReportBody::Archive {
                    execution_id: e.execution_id,
                    reason: e.reason,
                    by: e.by,
                },
            ),
            Event::ReportRejected(r) => {
                let execution_id = r.execution_id;
                let body = match r.op {
                    Op::Enqueue => self.rejected_enqueue(execution_id, &r.reason),
                    Op::Claim => ReportBody::Claim {
                        execution_id,
                        worker: r.worker.unwrap_or_default(),
                        // A claim of a processing execution that said `redelivered` reclaims
                        // it; any other rejected claim's flag changed nothing.
                        redelivered: false,
                    },
                    Op::Succeed => ReportBody::Succeed {
                        execution_id,
                        worker: r.worker,
                    },
                    Op::Fail => ReportBody::Fail {
                        execution_id,
                        worker: r.worker,
                        error: r.error.map_or_else(
                            || ReportedError {
                                message: String::new(),
                                category: None,
                                stack: None,
                            },
                            |error| ReportedError {
                                stack: None,
                                ..error
                            },
                        ),
                    },
                    Op::Archive => ReportBody::Archive {
                        execution_id,
                        reason: None,
                        by: None,
                    },
                    Op::Retry => ReportBody::Retry {
                        execution_id,
                        by: None,
                        reason: None,
                        queue: None,
                        max_retries: None,
                        message_version: None,
                        metadata: None,
                    },
                };
                (r.at, body)
            }
        };
        Report {
            report_id: None,
            task_id: self.task_id.clone(),
            at,
            body,
            principal,
        }
    }

    /// A rejected enqueue keeps no queue, maxRetries or metadata: it takes those of the
    /// execution its rejection named (the task's active one), as a re-enqueue of the same task.
    fn rejected_enqueue(&self, execution_id: ExecutionId, reason: &RejectionReason) -> ReportBody {
        let named = match reason {
            RejectionReason::DuplicateEnqueue {
                active_execution_id,
            } => Some(*active_execution_id),
            _ => None,
        };
        let replayed = named.and_then(|id| self.replayed.execution(id));
        let recorded_queue = named
            .and_then(|id| self.before.iter().find(|t| t.execution_id == id))
            .map(|t| t.queue.clone());
        match replayed {
            Some(execution) => ReportBody::Enqueue {
                execution_id,
                queue: execution.queue.clone(),
                max_retries: Some(execution.max_retries),
                message_version: execution.message_version.clone(),
                metadata: None,
            },
            None => ReportBody::Enqueue {
                execution_id,
                queue: recorded_queue.unwrap_or_else(|| self.task_id.queue_prefix().to_owned()),
                max_retries: None,
                message_version: None,
                metadata: None,
            },
        }
    }
}

/// The replay: feed it every event in stream order ([`WhatIf::push`]; streams may interleave, as
/// in the global order), then [`WhatIf::finish`].
pub struct WhatIf {
    policy: Policy,
    options: WhatIfOptions,
    /// Boxed: a stream's state is a few hundred bytes, and the map grows and the finish sorts.
    streams: HashMap<String, Box<StreamReplay>>,
    events: u64,
    reports: u64,
}

impl WhatIf {
    pub fn new(policy: Policy, options: WhatIfOptions) -> WhatIf {
        WhatIf {
            policy,
            options,
            streams: HashMap::default(),
            events: 0,
            reports: 0,
        }
    }

    /// The next event of `stream` (its events in stream order).
    pub fn push(&mut self, stream: &str, event: Event) -> Result<(), ReplayError> {
        self.events += 1;
        let replay = match self.streams.get_mut(stream) {
            Some(replay) => replay,
            None => {
                let task_id = TaskId::parse(stream).map_err(|problem| ReplayError::NotATask {
                    stream: stream.chars().take(80).collect(),
                    problem,
                })?;
                self.streams.entry(stream.to_owned()).or_insert_with(|| {
                    Box::new(StreamReplay {
                        task_id,
                        pending: None,
                        replayed: TaskState::default(),
                        before: Vec::new(),
                        after: Vec::new(),
                    })
                })
            }
        };
        if let Some(archived) = replay.pending.take() {
            self.reports += 1;
            let retry = archived.report_key() == event.report_key()
                && matches!(&event, Event::ExecutionEnqueued(e) if e.manual_retry.is_some());
            if retry {
                replay.settle(&self.policy, Some(archived), event);
                return Ok(());
            }
            replay.settle(&self.policy, None, archived);
        }
        if matches!(event, Event::ExecutionArchived(_)) {
            replay.pending = Some(event);
        } else {
            self.reports += 1;
            replay.settle(&self.policy, None, event);
        }
        Ok(())
    }

    /// Replays what is still gathered and compares both sides.
    pub fn finish(self) -> WhatIfReport {
        self.finish_split(WHATIF_PARALLEL_STREAMS_MIN)
    }

    /// [`WhatIf::finish`], on two threads from `parallel_streams_min` streams.
    fn finish_split(self, parallel_streams_min: usize) -> WhatIfReport {
        let mut streams: Vec<(String, Box<StreamReplay>)> = self.streams.into_iter().collect();
        streams.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let empty = WhatIfReport {
            queue: self.options.queue.clone(),
            since: self.options.since,
            events: self.events,
            reports: self.reports,
            tasks: streams.len() as u64,
            executions: 0,
            changed: 0,
            by_field: BTreeMap::new(),
            status_changes: BTreeMap::new(),
            dlq: BeforeAfter::default(),
            in_dlq: BeforeAfter::default(),
            retries: RetryTotals::default(),
            beyond_history: 0,
            changes: Vec::new(),
        };
        let (policy, options) = (&self.policy, &self.options);
        let compare_all = |streams: Vec<(String, Box<StreamReplay>)>, mut report: WhatIfReport| {
            for (name, mut replay) in streams {
                if let Some(archived) = replay.pending.take() {
                    replay.settle(policy, None, archived);
                    report.reports += 1;
                }
                compare_stream(&name, &mut replay, options, &mut report);
            }
            report
        };
        if streams.len() < parallel_streams_min {
            return compare_all(streams, empty);
        }
        // Two halves on two threads (each also frees its streams), in taskId order: the second
        // half's changes follow the first's.
        let second_half = streams.split_off(streams.len() / 2);
        let second_empty = WhatIfReport {
            events: 0,
            reports: 0,
            tasks: 0,
            ..empty.clone()
        };
        let (mut report, second) = std::thread::scope(|scope| {
            let second = scope.spawn(|| compare_all(second_half, second_empty));
            let first = compare_all(streams, empty);
            (
                first,
                second
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            )
        });
        report.add(second);
        report
    }
}

/// Streams from which [`WhatIf::finish`] compares on two threads: below, a thread costs more
/// than it saves.
pub const WHATIF_PARALLEL_STREAMS_MIN: usize = 4096;

impl WhatIfReport {
    /// Adds the counts and the changes of a report over later streams.
    fn add(&mut self, other: WhatIfReport) {
        self.events += other.events;
        self.reports += other.reports;
        self.tasks += other.tasks;
        self.executions += other.executions;
        self.changed += other.changed;
        for (field, count) in other.by_field {
            *self.by_field.entry(field).or_default() += count;
        }
        for (change, count) in other.status_changes {
            *self.status_changes.entry(change).or_default() += count;
        }
        self.dlq.before += other.dlq.before;
        self.dlq.after += other.dlq.after;
        self.in_dlq.before += other.in_dlq.before;
        self.in_dlq.after += other.in_dlq.after;
        self.retries.before += other.retries.before;
        self.retries.after += other.retries.after;
        self.retries.saved += other.retries.saved;
        self.retries.added += other.retries.added;
        self.beyond_history += other.beyond_history;
        self.changes.extend(other.changes);
    }
}

/// Compares one replayed stream's executions and adds them to the report.
fn compare_stream(
    task_id: &str,
    replay: &mut StreamReplay,
    options: &WhatIfOptions,
    report: &mut WhatIfReport,
) {
    // History ends here: an execution the new policy leaves waiting, where the recording did not
    // wait at the same point, has no recorded outcome.
    for tracked in &mut replay.after {
        if !tracked.waiting() {
            continue;
        }
        let recorded = replay
            .before
            .iter()
            .find(|t| t.execution_id == tracked.execution_id);
        let same_wait = recorded.is_some_and(|recorded| {
            recorded.outcome.status == tracked.outcome.status
                && recorded.outcome.retry_count == tracked.outcome.retry_count
        });
        if !same_wait {
            let at = tracked.history_ends_at();
            tracked.beyond_history_at.get_or_insert(at);
        }
    }
    let mut pairs: Vec<(Option<&Tracked>, Option<&Tracked>)> = replay
        .before
        .iter()
        .map(|before| {
            let after = replay
                .after
                .iter()
                .find(|t| t.execution_id == before.execution_id);
            (Some(before), after)
        })
        .collect();
    pairs.extend(
        replay
            .after
            .iter()
            .filter(|after| {
                !replay
                    .before
                    .iter()
                    .any(|t| t.execution_id == after.execution_id)
            })
            .map(|after| (None, Some(after))),
    );
    for (before, after) in pairs {
        let Some(any) = after.or(before) else {
            continue;
        };
        if options.queue.as_deref().is_some_and(|q| q != any.queue)
            || options.since.is_some_and(|since| any.enqueued_at < since)
        {
            continue;
        }
        report.executions += 1;
        let (b, a) = (before.map(|t| &t.outcome), after.map(|t| &t.outcome));
        let count = |outcome: Option<&ExecutionOutcome>, test: fn(&ExecutionOutcome) -> bool| {
            u64::from(outcome.is_some_and(test))
        };
        report.dlq.before += count(b, |o| o.dlq_at.is_some());
        report.dlq.after += count(a, |o| o.dlq_at.is_some());
        report.in_dlq.before += count(b, |o| o.status == ExecutionStatus::Dlq);
        report.in_dlq.after += count(a, |o| o.status == ExecutionStatus::Dlq);
        let (retries_before, retries_after) = (
            u64::from(b.map_or(0, |o| o.retries)),
            u64::from(a.map_or(0, |o| o.retries)),
        );
        report.retries.before += retries_before;
        report.retries.after += retries_after;
        report.retries.saved += retries_before.saturating_sub(retries_after);
        report.retries.added += retries_after.saturating_sub(retries_before);
        let fields: Vec<&'static str> = match (b, a) {
            (Some(b), Some(a)) => [
                ("status", b.status != a.status),
                ("retryCount", b.retry_count != a.retry_count),
                ("dlqAt", b.dlq_at != a.dlq_at),
                ("retrySchedule", b.retry_schedule != a.retry_schedule),
            ]
            .into_iter()
            .filter(|(_, differs)| *differs)
            .map(|(field, _)| field)
            .collect(),
            _ => vec!["exists"],
        };
        let beyond_history_at = after.and_then(|t| t.beyond_history_at);
        if fields.is_empty() && beyond_history_at.is_none() {
            continue;
        }
        report.changed += 1;
        for field in &fields {
            *report.by_field.entry(field).or_default() += 1;
        }
        let status = |o: Option<&ExecutionOutcome>| o.map_or("absent", |o| o.status.as_str());
        *report
            .status_changes
            .entry(format!("{} -> {}", status(b), status(a)))
            .or_default() += 1;
        report.beyond_history += u64::from(beyond_history_at.is_some());
        report.changes.push(ExecutionChange {
            task_id: task_id.to_owned(),
            execution_id: any.execution_id,
            queue: any.queue.clone(),
            enqueued_at: any.enqueued_at,
            before: b.cloned(),
            after: a.cloned(),
            fields,
            beyond_history: beyond_history_at.is_some(),
            beyond_history_at,
        });
    }
}

/// [`WhatIf`] over events given in order: `(stream, event)`.
pub fn what_if(
    events: impl IntoIterator<Item = (String, Event)>,
    policy: Policy,
    options: WhatIfOptions,
) -> Result<WhatIfReport, ReplayError> {
    let mut replay = WhatIf::new(policy, options);
    for (stream, event) in events {
        replay.push(&stream, event)?;
    }
    Ok(replay.finish())
}

/// [`what_if`] over every event of `store`, up to its head when called, in global order. The
/// next chunk is read and decoded while the current one is replayed (two cores).
pub async fn what_if_store(
    store: SharedStore,
    policy: Policy,
    options: WhatIfOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<WhatIfReport, ReplayError> {
    let until = store.head_position();
    let (sender, mut receiver) =
        tokio::sync::mpsc::channel::<Result<Vec<(String, Event)>, ReplayError>>(2);
    let reader = tokio::spawn(async move {
        let mut position = 0;
        while position < until {
            let want = usize::try_from(until - position)
                .unwrap_or(usize::MAX)
                .min(WHATIF_CHUNK_EVENTS);
            let records = match store.read_all(position, want).await {
                Ok(records) if records.is_empty() => Err(ReplayError::Io(format!(
                    "the store ends at position {position}, before its head {until}"
                ))),
                Ok(records) => Ok(records),
                Err(error) => Err(error.into()),
            };
            let records = match records {
                Ok(records) => records,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            position += records.len() as u64;
            let decoded = tokio::task::spawn_blocking(move || {
                let mut decoded = Vec::with_capacity(records.len());
                for record in records {
                    decoded.push(decode_recorded(record)?);
                }
                Ok::<_, ReplayError>(decoded)
            })
            .await
            .unwrap_or_else(|error| Err(ReplayError::Io(format!("decoder failed: {error}"))));
            let failed = decoded.is_err();
            if sender.send(decoded).await.is_err() || failed {
                return;
            }
        }
    });
    let mut replay = WhatIf::new(policy, options);
    let mut done = 0u64;
    let mut outcome = Ok(());
    while let Some(chunk) = receiver.recv().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => {
                outcome = Err(error);
                break;
            }
        };
        done += chunk.len() as u64;
        let (returned, pushed) = tokio::task::spawn_blocking(move || {
            let pushed = chunk
                .into_iter()
                .try_for_each(|(stream, event)| replay.push(&stream, event));
            (replay, pushed)
        })
        .await
        .map_err(|error| ReplayError::Io(format!("what-if replay failed: {error}")))?;
        replay = returned;
        if let Err(error) = pushed {
            outcome = Err(error);
            break;
        }
        progress(done, until);
    }
    drop(receiver);
    let _ = reader.await;
    outcome?;
    tokio::task::spawn_blocking(move || replay.finish())
        .await
        .map_err(|error| ReplayError::Io(format!("what-if replay failed: {error}")))
}

/// One stored event for the replay: its stream and the event (every schema version through
/// `Event::decode`, the one decoder).
fn decode_recorded(
    record: taskledger_store::RecordedEvent,
) -> Result<(String, Event), ReplayError> {
    match Event::decode(&record.event_type, record.schema_version, &record.data) {
        Ok(event) => Ok((record.stream, event)),
        Err(error) => Err(taskledger_projections::ProjectionError::Codec {
            stream: record.stream,
            version: record.version,
            message: error.to_string(),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two-thread comparison gives the one-thread report.
    #[test]
    fn finishing_on_two_threads_changes_nothing() {
        let simulation = crate::simulate::simulate(300, 5).unwrap();
        let recorded = Policy::default();
        let mut zero = Policy::default();
        zero.retry.default.max_retries = Some(0);
        let mut states = std::collections::HashMap::new();
        let (mut serial, mut parallel) = (
            WhatIf::new(zero.clone(), WhatIfOptions::default()),
            WhatIf::new(zero, WhatIfOptions::default()),
        );
        for line in &simulation.reports {
            let report = Report::from_json(line).unwrap();
            let state: &mut TaskState = states.entry(report.task_id.clone()).or_default();
            for event in taskledger_domain::decide(state, &report, &recorded).events {
                state.apply(&event);
                serial.push(report.task_id.as_str(), event.clone()).unwrap();
                parallel.push(report.task_id.as_str(), event).unwrap();
            }
        }
        let serial = serial.finish_split(usize::MAX);
        assert!(serial.changed > 50, "{}", serial.changed);
        assert_eq!(parallel.finish_split(1), serial);
    }
}
