//! [`Ledger`]: decides reports against their streams and appends the events, with per-stream
//! serialisation inside the process and optimistic concurrency against everything else.

use crate::combiner::{lock_queue, QueuedGuard, Slot, SlotRef, Waiter};
use crate::IngestError;
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use taskledger_domain::event::EVENT_SCHEMA_VERSION;
use taskledger_domain::{decide_keyed, Event, Outcome, Policy, Report, ReportKey, TaskState};
use taskledger_store::{ExpectedVersion, NewEvent, SharedStore, StreamAppend, APPEND_EVENTS_MAX};

/// Where `recordedAt` comes from. Injected so tests can pin it; decisions never read it.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// The wall clock's instant, for what an operator reports without an `at` (never for decisions).
pub fn now() -> taskledger_domain::Timestamp {
    taskledger_domain::Timestamp(SystemClock.now_ms())
}

/// A clock that always says the same instant (tests, deterministic fixtures).
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0
    }
}

/// Settings of the write path.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Task states kept decided-and-ready in memory. A miss costs one stream read; 100k states of
    /// a few hundred bytes each is tens of MB.
    pub task_states_cached_max: usize,
    /// Re-decisions after an optimistic-concurrency conflict before giving up. Conflicts happen
    /// with other writers of a shared store (several instances on PostgreSQL or KurrentDB) or a
    /// cache eviction race; 64 with the backoff below spans seconds of a hot stream's contention.
    pub conflict_retries_max: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            task_states_cached_max: 100_000,
            conflict_retries_max: 64,
        }
    }
}

/// A report's result as returned to its reporter.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub outcome: Outcome,
    /// Seen before: nothing was appended and `outcome` is the first one.
    pub duplicate: bool,
    /// The events appended for it (empty for a duplicate).
    pub event_ids: Vec<uuid::Uuid>,
    /// The global position of its first event, when it appended any.
    pub position: Option<u64>,
}

/// Where a report's events went in a planned append: (report index, its stream append, offset
/// of its first event in that append).
pub(crate) type AppendedFor = (usize, usize, u64);

/// A report to decide with its key (computed once, by whoever queued it): what [`Inner::plan`]
/// and [`settle`] read, whichever way the reports came (a batch, or the combiner's waiters).
pub(crate) trait Keyed {
    fn report(&self) -> &Report;
    fn key(&self) -> ReportKey;
}

/// A report of a batch beside its key.
pub(crate) struct KeyedReport<'a> {
    pub(crate) report: &'a Report,
    pub(crate) key: ReportKey,
}

impl Keyed for KeyedReport<'_> {
    fn report(&self) -> &Report {
        self.report
    }
    fn key(&self) -> ReportKey {
        self.key
    }
}

/// The appends decided for some reports.
pub(crate) struct Plan {
    pub(crate) appends: Vec<StreamAppend>,
    pub(crate) appended_for: Vec<AppendedFor>,
}

/// The longest pause between two re-decisions of one report after conflicts: 50 ms.
const CONFLICT_BACKOFF_US_MAX: u64 = 50_000;

/// The write path. Cheap to clone and share.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: SharedStore,
    pub(crate) policy: Arc<Policy>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: LedgerConfig,
    pub(crate) slots: Mutex<lru::LruCache<String, SlotRef>>,
    pub(crate) next_waiter: std::sync::atomic::AtomicU64,
}

impl Ledger {
    pub fn new(
        store: SharedStore,
        policy: Policy,
        clock: Arc<dyn Clock>,
        config: LedgerConfig,
    ) -> Ledger {
        let capacity =
            NonZeroUsize::new(config.task_states_cached_max.max(1)).unwrap_or(NonZeroUsize::MIN);
        Ledger {
            inner: Arc::new(Inner {
                store,
                policy: Arc::new(policy),
                clock,
                config,
                slots: Mutex::new(lru::LruCache::new(capacity)),
                next_waiter: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    pub fn store(&self) -> &SharedStore {
        &self.inner.store
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Decides and appends one report; returns once its events are durable.
    ///
    /// Concurrent reports of one stream are combined (see [`Queue`]): the result is the one the
    /// report would have had submitted alone, in its place in the stream's arrival order.
    pub async fn submit(&self, report: Report) -> Result<Submitted, IngestError> {
        let key = report.key();
        let inner = &self.inner;
        let slot = inner.slot(report.task_id.as_str());
        let id = inner
            .next_waiter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let start = {
            let mut queue = lock_queue(&slot);
            queue.waiters.push_back(Waiter {
                id,
                report,
                key,
                reply,
            });
            !std::mem::replace(&mut queue.combining, true)
        };
        let mut queued = QueuedGuard {
            slot: &slot,
            id,
            armed: true,
        };
        if start {
            // Outside tokio's cooperative budget: a combiner that runs out of it goes to the back
            // of its worker's queue, behind every submitter of the burst, while all of them wait
            // for it. It yields on its own instead
            // ([`crate::combiner::COMBINED_REPORTS_MAX`]).
            tokio::spawn(tokio::task::unconstrained(
                inner.clone().combine(slot.clone()),
            ));
        } else {
            slot.arrived.notify_one();
        }
        let result = answer.await;
        // Answered or dropped by the combiner: it took the report out of the queue.
        queued.armed = false;
        result.unwrap_or(Err(IngestError::Unanswered))
    }

    /// Decides reports in the order given (as if submitted one after another) and appends all
    /// their events in one store call, so a batch shares one flush. Returns once durable.
    pub async fn submit_batch(&self, reports: Vec<Report>) -> Result<Vec<Submitted>, IngestError> {
        self.inner.submit_batch(reports).await
    }
}

impl Inner {
    /// [`Ledger::submit_batch`] for reports of the one stream whose lock is `guard`.
    pub(crate) async fn decide_locked(
        &self,
        reports: &[impl Keyed + Sync],
        guard: tokio::sync::OwnedMutexGuard<Slot>,
    ) -> (
        tokio::sync::OwnedMutexGuard<Slot>,
        Result<Vec<Submitted>, IngestError>,
    ) {
        let stream = reports[0].report().task_id.as_str();
        let mut guards = BTreeMap::from([(stream, guard)]);
        let result = self.decide_all(reports, &mut guards).await;
        let guard = guards.remove(stream).expect("the guard stays in the map");
        (guard, result)
    }

    async fn submit_batch(&self, reports: Vec<Report>) -> Result<Vec<Submitted>, IngestError> {
        // Lock every stream involved, in name order (no deadlock between batches).
        let streams: std::collections::BTreeSet<&str> = reports
            .iter()
            .map(|report| report.task_id.as_str())
            .collect();
        let mut guards: BTreeMap<&str, tokio::sync::OwnedMutexGuard<Slot>> = BTreeMap::new();
        for stream in streams {
            let guard = self.slot(stream).lock.clone().lock_owned().await;
            guards.insert(stream, guard);
        }
        let keyed: Vec<KeyedReport<'_>> = reports
            .iter()
            .map(|report| KeyedReport {
                report,
                key: report.key(),
            })
            .collect();
        self.decide_all(&keyed, &mut guards).await
    }

    /// Decides and appends `reports` with their streams' locks held, re-deciding after conflicts.
    async fn decide_all<'r>(
        &self,
        reports: &'r [impl Keyed + Sync],
        guards: &mut BTreeMap<&'r str, tokio::sync::OwnedMutexGuard<Slot>>,
    ) -> Result<Vec<Submitted>, IngestError> {
        let mut results: Vec<Option<Submitted>> = vec![None; reports.len()];
        let mut pending: Vec<usize> = (0..reports.len()).collect();
        let mut attempts = 0;
        while !pending.is_empty() {
            let conflicted = self
                .try_batch(reports, &pending, &mut results, guards)
                .await?;
            if conflicted.is_empty() {
                break;
            }
            attempts += 1;
            if attempts > self.config.conflict_retries_max {
                return Err(IngestError::Contention {
                    stream: reports[conflicted[0]].report().task_id.to_string(),
                    attempts,
                });
            }
            tracing::debug!(
                reports = conflicted.len(),
                attempts,
                "re-deciding after a conflict"
            );
            // Another writer (another instance on a shared store) appended meanwhile: give it
            // room before deciding again, so two writers of one hot stream do not keep
            // refusing each other. Exponential with jitter, the jitter from the clock's
            // nanoseconds (this is the write path, not the domain).
            if attempts > 1 {
                let cap_us = CONFLICT_BACKOFF_US_MAX.min(100u64 << attempts.min(16));
                let jitter = u64::from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |elapsed| elapsed.subsec_nanos()),
                );
                tokio::time::sleep(std::time::Duration::from_micros(jitter % cap_us.max(1))).await;
            }
            pending = conflicted;
        }
        Ok(results
            .into_iter()
            .map(|result| result.expect("every report decided"))
            .collect())
    }

    pub(crate) fn slot(&self, stream: &str) -> SlotRef {
        // The map's mutex guards a few pointer moves; a poisoned one only means a panic elsewhere
        // mid-update, and the LRU is still a valid map.
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(slot) = slots.get(stream) {
            return slot.clone();
        }
        let slot = SlotRef::default();
        slots.put(stream.to_owned(), slot.clone());
        slot
    }

    /// One attempt at the reports `indices` (in order). Returns the indices whose append hit a
    /// conflict and must be decided again against the stream as it now is.
    async fn try_batch<'r>(
        &self,
        reports: &'r [impl Keyed + Sync],
        indices: &[usize],
        results: &mut [Option<Submitted>],
        guards: &mut BTreeMap<&'r str, tokio::sync::OwnedMutexGuard<Slot>>,
    ) -> Result<Vec<usize>, IngestError> {
        for (stream, guard) in guards.iter_mut() {
            if guard.state.needs_load() {
                let state = self.load(stream).await?;
                guard.state.load(state);
            }
        }
        let plan = {
            let mut states: BTreeMap<&str, &mut TaskState> = guards
                .iter_mut()
                .map(|(stream, guard)| (*stream, guard.state.loaded_mut().expect("loaded above")))
                .collect();
            self.plan(reports, indices, results, &mut states)
        };
        if plan.appends.is_empty() {
            return Ok(Vec::new());
        }
        let outcomes = match self.store.append(plan.appends).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                // The states above include events that may not be stored: forget them.
                for guard in guards.values_mut() {
                    guard.state.forget();
                }
                return Err(error.into());
            }
        };
        let conflicted = settle(reports, indices, &plan.appended_for, outcomes, results)?;
        for &index in &conflicted {
            if let Some(guard) = guards.get_mut(reports[index].report().task_id.as_str()) {
                guard.state.forget();
            }
        }
        Ok(conflicted)
    }

    /// Decides the reports `indices` (in order) against their streams' `states`, advancing each
    /// state past the events, and builds the appends; `results` get each decision (positions come
    /// with the store's answer).
    pub(crate) fn plan(
        &self,
        reports: &[impl Keyed],
        indices: &[usize],
        results: &mut [Option<Submitted>],
        states: &mut BTreeMap<&str, &mut TaskState>,
    ) -> Plan {
        let recorded_at_ms = self.clock.now_ms();
        let mut appends: Vec<StreamAppend> = Vec::with_capacity(indices.len());
        let mut appended_for: Vec<AppendedFor> = Vec::with_capacity(indices.len());
        for &index in indices {
            let report = reports[index].report();
            let state = states
                .get_mut(report.task_id.as_str())
                .expect("every report's stream is locked and loaded");
            let decision = decide_keyed(state, report, reports[index].key(), &self.policy);
            let event_ids: Vec<uuid::Uuid> = (0..decision.events.len())
                .map(|n| decision.report_key.event_id(n))
                .collect();
            results[index] = Some(Submitted {
                outcome: decision.outcome,
                duplicate: decision.duplicate,
                event_ids: event_ids.clone(),
                position: None,
            });
            if decision.events.is_empty() {
                continue;
            }
            let expected = ExpectedVersion::Length(state.events);
            let events: Vec<NewEvent> = decision
                .events
                .iter()
                .zip(event_ids)
                .map(|(event, event_id)| encode(event, event_id, recorded_at_ms))
                .collect();
            for event in &decision.events {
                state.apply(event);
            }
            // Consecutive reports of one stream share one stream append (one index entry in the
            // store): a combined batch of a hot stream is one append, not one per report.
            let count = appends.len();
            match appends.last_mut() {
                Some(last)
                    if last.stream == report.task_id.as_str()
                        && last.events.len() + events.len() <= APPEND_EVENTS_MAX =>
                {
                    appended_for.push((index, count - 1, last.events.len() as u64));
                    last.events.extend(events);
                }
                _ => {
                    appended_for.push((index, count, 0));
                    appends.push(StreamAppend {
                        stream: report.task_id.to_string(),
                        expected,
                        events,
                    });
                }
            }
        }
        Plan {
            appends,
            appended_for,
        }
    }

    /// Folds a stream from the store.
    pub(crate) async fn load(&self, stream: &str) -> Result<TaskState, IngestError> {
        let mut state = TaskState::default();
        for record in self.store.read_stream(stream, 0, usize::MAX).await? {
            let event = Event::decode(&record.event_type, record.schema_version, &record.data)
                .map_err(|error| IngestError::Codec {
                    stream: stream.to_owned(),
                    version: record.version,
                    message: error.to_string(),
                })?;
            state.apply(&event);
        }
        Ok(state)
    }
}

/// Gives the reports of a planned append their positions from the store's `outcomes`. Returns
/// the reports to decide again, in order: per stream, every report from its first refused one
/// on (a later one, even one that appended nothing, was decided on the refused events).
pub(crate) fn settle(
    reports: &[impl Keyed],
    indices: &[usize],
    appended_for: &[AppendedFor],
    outcomes: Vec<Result<taskledger_store::Appended, taskledger_store::Conflict>>,
    results: &mut [Option<Submitted>],
) -> Result<Vec<usize>, IngestError> {
    let mut first_refused: BTreeMap<&str, usize> = BTreeMap::new();
    for &(index, append, offset) in appended_for {
        let stream = reports[index].report().task_id.as_str();
        match outcomes.get(append).ok_or(IngestError::Unanswered)? {
            Ok(appended) => {
                if let Some(result) = results[index].as_mut() {
                    result.position = Some(appended.first_position + offset);
                }
            }
            Err(conflict) => {
                tracing::debug!(stream, ?conflict, "append conflict");
                first_refused.entry(stream).or_insert(index);
            }
        }
    }
    if first_refused.is_empty() {
        return Ok(Vec::new());
    }
    let conflicted: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&index| {
            first_refused
                .get(reports[index].report().task_id.as_str())
                .is_some_and(|&first| index >= first)
        })
        .collect();
    for &index in &conflicted {
        results[index] = None;
    }
    Ok(conflicted)
}

fn encode(event: &Event, event_id: uuid::Uuid, recorded_at_ms: i64) -> NewEvent {
    NewEvent {
        event_id,
        event_type: event.type_name().to_owned(),
        schema_version: EVENT_SCHEMA_VERSION,
        recorded_at_ms,
        data: event.encode_data(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use taskledger_store::{EventStore, MemoryStore};

    /// A submitter that gives up while its report is queued behind the stream's lock takes the
    /// report back: nothing is appended for it later.
    #[tokio::test]
    async fn a_cancelled_submit_is_never_appended() {
        let store = Arc::new(MemoryStore::new());
        let ledger = Ledger::new(
            store.clone(),
            Policy::default(),
            Arc::new(FixedClock(0)),
            LedgerConfig::default(),
        );
        let enqueue = |n: u32| {
            Report::from_json(&format!(
                r#"{{"op":"enqueue","taskId":"q:1","executionId":"00000000-0000-4000-8000-{n:012}","queue":"q","at":"2026-01-21T10:00:00.000Z"}}"#
            ))
            .unwrap()
        };
        let slot = ledger.inner.slot("q:1");
        let held = slot.lock.clone().lock_owned().await;
        {
            let mut submit = std::pin::pin!(ledger.submit(enqueue(1)));
            let waker = std::task::Waker::noop();
            let mut context = std::task::Context::from_waker(waker);
            assert!(submit.as_mut().poll(&mut context).is_pending());
            assert_eq!(lock_queue(&slot).waiters.len(), 1, "queued behind the lock");
        }
        assert_eq!(
            lock_queue(&slot).waiters.len(),
            0,
            "taken back when dropped"
        );
        drop(held);
        let second = ledger.submit(enqueue(2)).await.unwrap();
        assert_eq!(second.outcome, Outcome::Accepted);
        assert_eq!(store.head_position(), 1);
    }
}
