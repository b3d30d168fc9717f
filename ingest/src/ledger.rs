//! [`Ledger`]: decides reports against their streams and appends the events, with per-stream
//! serialisation inside the process and optimistic concurrency against everything else.

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
    /// Re-decisions after an optimistic-concurrency conflict before giving up. Conflicts only
    /// happen with another writer process (EventStoreDB) or a cache eviction race.
    pub conflict_retries_max: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            task_states_cached_max: 100_000,
            conflict_retries_max: 16,
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

/// The in-memory state of one stream: `None` until loaded (or after a failed append).
#[derive(Default)]
struct Slot {
    state: Option<TaskState>,
}

/// A report waiting for its stream, and where its result goes.
struct Waiter {
    id: u64,
    report: Report,
    /// `report.key()`, computed by the submitter before it queues (in parallel with the others,
    /// not in the combiner's serial loop).
    key: ReportKey,
    reply: tokio::sync::oneshot::Sender<Result<Submitted, IngestError>>,
}

/// One stream's lock, and the single reports queued for it.
#[derive(Default)]
struct SlotCell {
    lock: Arc<tokio::sync::Mutex<Slot>>,
    queue: Mutex<Queue>,
}

/// Reports submitted one at a time are combined per stream: each joins its stream's queue, and
/// one combiner task per busy stream decides everything queued, in arrival order, and appends it
/// together (one commit), so a hot stream — a thousand producers enqueueing one taskId — costs a
/// few commits, not a thousand in a row. The combiner is a task of its own: a submitter that
/// gives up never strands the reports it would otherwise have carried.
#[derive(Default)]
struct Queue {
    waiters: std::collections::VecDeque<Waiter>,
    /// A combiner task is running for this stream.
    combining: bool,
}

type SlotRef = Arc<SlotCell>;

/// Reports a combiner decides and appends together at most.
const COMBINED_REPORTS_MAX: usize = 4096;

/// Takes a queued report back out if its submitter gives up before the combiner took it, so a
/// cancelled request is never appended later.
struct QueuedGuard<'a> {
    slot: &'a SlotCell,
    id: u64,
    armed: bool,
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut queue = lock_queue(self.slot);
            queue.waiters.retain(|waiter| waiter.id != self.id);
        }
    }
}

/// Marks the combiner gone however it ends; if it ends abnormally (a panic), the reports still
/// queued are answered `Unanswered` rather than left waiting.
struct Vacate<'a> {
    slot: &'a SlotCell,
    clean: bool,
}

impl Drop for Vacate<'_> {
    fn drop(&mut self) {
        if !self.clean {
            let mut queue = lock_queue(self.slot);
            queue.combining = false;
            queue.waiters.clear();
        }
    }
}

fn lock_queue(slot: &SlotCell) -> std::sync::MutexGuard<'_, Queue> {
    // Only pushes, drains and a flag happen under it; a poisoned queue is still a valid queue.
    slot.queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The write path. Cheap to clone and share.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    store: SharedStore,
    policy: Arc<Policy>,
    clock: Arc<dyn Clock>,
    config: LedgerConfig,
    slots: Mutex<lru::LruCache<String, SlotRef>>,
    next_waiter: std::sync::atomic::AtomicU64,
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
            tokio::spawn(inner.clone().combine(slot.clone()));
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
    /// The combiner of one stream: takes what is queued (at most [`COMBINED_REPORTS_MAX`] at a
    /// time), decides and appends it with the stream's lock held, answers each waiter, and ends
    /// when the queue is empty.
    async fn combine(self: Arc<Self>, slot: SlotRef) {
        let mut vacate = Vacate {
            slot: &slot,
            clean: false,
        };
        // Let the submitters that are already runnable join the queue before the first drain: a
        // burst on one taskId (a thousand producers released together) then shares the first
        // commit instead of waiting behind a commit that carries its first report alone. Not a
        // timed wait: a lone report pays one pass of the scheduler.
        tokio::task::yield_now().await;
        loop {
            let guard = slot.lock.clone().lock_owned().await;
            let waiters: Vec<Waiter> = {
                let mut queue = lock_queue(&slot);
                if queue.waiters.is_empty() {
                    queue.combining = false;
                    vacate.clean = true;
                    return;
                }
                let take = queue.waiters.len().min(COMBINED_REPORTS_MAX);
                queue.waiters.drain(..take).collect()
            };
            let mut reports = Vec::with_capacity(waiters.len());
            let mut keys = Vec::with_capacity(waiters.len());
            let mut replies = Vec::with_capacity(waiters.len());
            for waiter in waiters {
                reports.push(waiter.report);
                keys.push(waiter.key);
                replies.push(waiter.reply);
            }
            let (guard, outcome) = self.decide_locked(&reports, &keys, guard).await;
            drop(guard);
            match outcome {
                Ok(results) => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(result));
                    }
                }
                Err(error) => {
                    let shared = Arc::new(error);
                    for reply in replies {
                        let _ = reply.send(Err(IngestError::Shared(shared.clone())));
                    }
                }
            }
        }
    }

    /// [`Ledger::submit_batch`] for reports of the one stream whose lock is `guard`.
    async fn decide_locked(
        &self,
        reports: &[Report],
        keys: &[ReportKey],
        guard: tokio::sync::OwnedMutexGuard<Slot>,
    ) -> (
        tokio::sync::OwnedMutexGuard<Slot>,
        Result<Vec<Submitted>, IngestError>,
    ) {
        let stream = reports[0].task_id.as_str();
        let mut guards = BTreeMap::from([(stream, guard)]);
        let result = self.decide_all(reports, keys, &mut guards).await;
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
        let keys: Vec<ReportKey> = reports.iter().map(Report::key).collect();
        self.decide_all(&reports, &keys, &mut guards).await
    }

    /// Decides and appends `reports` with their streams' locks held, re-deciding after conflicts.
    async fn decide_all<'r>(
        &self,
        reports: &'r [Report],
        keys: &[ReportKey],
        guards: &mut BTreeMap<&'r str, tokio::sync::OwnedMutexGuard<Slot>>,
    ) -> Result<Vec<Submitted>, IngestError> {
        let mut results: Vec<Option<Submitted>> = vec![None; reports.len()];
        let mut pending: Vec<usize> = (0..reports.len()).collect();
        let mut attempts = 0;
        while !pending.is_empty() {
            let conflicted = self
                .try_batch(reports, keys, &pending, &mut results, guards)
                .await?;
            if conflicted.is_empty() {
                break;
            }
            attempts += 1;
            if attempts > self.config.conflict_retries_max {
                return Err(IngestError::Contention {
                    stream: reports[conflicted[0]].task_id.to_string(),
                    attempts,
                });
            }
            tracing::debug!(
                reports = conflicted.len(),
                attempts,
                "re-deciding after a conflict"
            );
            pending = conflicted;
        }
        Ok(results
            .into_iter()
            .map(|result| result.expect("every report decided"))
            .collect())
    }

    fn slot(&self, stream: &str) -> SlotRef {
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
        reports: &'r [Report],
        keys: &[ReportKey],
        indices: &[usize],
        results: &mut [Option<Submitted>],
        guards: &mut BTreeMap<&'r str, tokio::sync::OwnedMutexGuard<Slot>>,
    ) -> Result<Vec<usize>, IngestError> {
        for (stream, guard) in guards.iter_mut() {
            if guard.state.is_none() {
                guard.state = Some(self.load(stream).await?);
            }
        }

        let recorded_at_ms = self.clock.now_ms();
        let mut appends: Vec<StreamAppend> = Vec::with_capacity(indices.len());
        // (report index, its append, offset of its first event in that append)
        let mut appended_for: Vec<(usize, usize, u64)> = Vec::with_capacity(indices.len());
        for &index in indices {
            let report = &reports[index];
            let guard = guards
                .get_mut(report.task_id.as_str())
                .expect("locked above");
            let state = guard.state.as_mut().expect("loaded above");
            let decision = decide_keyed(state, report, keys[index], &self.policy);
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
        if appends.is_empty() {
            return Ok(Vec::new());
        }
        let outcomes = match self.store.append(appends).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                // The states above include events that may not be stored: forget them.
                for guard in guards.values_mut() {
                    guard.state = None;
                }
                return Err(error.into());
            }
        };
        let mut conflicted = Vec::new();
        for (index, append, offset) in appended_for {
            let Some(outcome) = outcomes.get(append) else {
                return Err(IngestError::Unanswered);
            };
            match outcome {
                Ok(appended) => {
                    if let Some(result) = results[index].as_mut() {
                        result.position = Some(appended.first_position + offset);
                    }
                }
                Err(conflict) => {
                    tracing::debug!(stream = %reports[index].task_id, ?conflict, "append conflict");
                    if let Some(guard) = guards.get_mut(reports[index].task_id.as_str()) {
                        guard.state = None;
                    }
                    results[index] = None;
                    conflicted.push(index);
                }
            }
        }
        Ok(conflicted)
    }

    /// Folds a stream from the store.
    async fn load(&self, stream: &str) -> Result<TaskState, IngestError> {
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
