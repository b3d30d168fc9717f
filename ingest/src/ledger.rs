//! [`Ledger`]: decides reports against their streams and appends the events, with per-stream
//! serialisation inside the process and optimistic concurrency against everything else.

use crate::IngestError;
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use taskledger_domain::event::EVENT_SCHEMA_VERSION;
use taskledger_domain::{decide_keyed, Event, Outcome, Policy, Report, ReportKey, TaskState};
use taskledger_store::{
    AppendFence, AppendReply, ExpectedVersion, NewEvent, QueuedAppend, SharedStore, StreamAppend,
    APPEND_EVENTS_MAX,
};

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
    /// Wakes a combiner that waits on the store when a report joins the queue.
    arrived: tokio::sync::Notify,
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

/// A combiner's batches in the air, oldest first, and the reports to decide again.
#[derive(Default)]
struct Pipeline {
    flights: std::collections::VecDeque<Flight>,
    /// Reports of refused flights, in arrival order: decided again before anything newer.
    redo: Vec<Waiter>,
}

impl Pipeline {
    /// The fence of the newest append in the air: the next one is queued behind it.
    fn fence(&self) -> Option<AppendFence> {
        self.flights
            .iter()
            .rev()
            .find_map(|flight| flight.queued.as_ref().map(QueuedAppend::fence))
    }
}

/// One combined batch, decided, its append queued at the store (`None`: nothing to append).
struct Flight {
    ids: Vec<u64>,
    reports: Vec<Report>,
    keys: Vec<ReportKey>,
    replies: Vec<tokio::sync::oneshot::Sender<Result<Submitted, IngestError>>>,
    results: Vec<Option<Submitted>>,
    appended_for: Vec<AppendedFor>,
    queued: Option<QueuedAppend>,
}

impl Flight {
    fn new(waiters: Vec<Waiter>) -> Flight {
        let count = waiters.len();
        let mut flight = Flight {
            ids: Vec::with_capacity(count),
            reports: Vec::with_capacity(count),
            keys: Vec::with_capacity(count),
            replies: Vec::with_capacity(count),
            results: vec![None; count],
            appended_for: Vec::new(),
            queued: None,
        };
        for waiter in waiters {
            flight.ids.push(waiter.id);
            flight.reports.push(waiter.report);
            flight.keys.push(waiter.key);
            flight.replies.push(waiter.reply);
        }
        flight
    }

    /// Answers the reports before `end` with their results.
    fn answer_before(&mut self, end: usize) {
        for (reply, result) in self.replies.drain(..end).zip(self.results.drain(..end)) {
            let _ = reply.send(result.ok_or(IngestError::Unanswered));
        }
    }

    /// Answers every report with `error`.
    fn fail(self, error: IngestError) {
        let shared = Arc::new(error);
        for reply in self.replies {
            let _ = reply.send(Err(IngestError::Shared(shared.clone())));
        }
    }

    /// The store's answer to its append (`None`: it appended nothing).
    async fn answer(&mut self) -> Option<AppendReply> {
        match self.queued.as_mut() {
            Some(queued) => Some(queued.await),
            None => None,
        }
    }

    /// The reports not answered yet ([`Flight::answer_before`]), as waiters again.
    fn into_waiters(self) -> Vec<Waiter> {
        let answered = self.ids.len() - self.replies.len();
        self.ids
            .into_iter()
            .zip(self.reports)
            .zip(self.keys)
            .skip(answered)
            .zip(self.replies)
            .map(|(((id, report), key), reply)| Waiter {
                id,
                report,
                key,
                reply,
            })
            .collect()
    }
}

/// Where a report's events went in a planned append: (report index, its stream append, offset
/// of its first event in that append).
type AppendedFor = (usize, usize, u64);

/// The appends decided for some reports.
struct Plan {
    appends: Vec<StreamAppend>,
    appended_for: Vec<AppendedFor>,
}

/// Reports a combiner decides and appends together at most.
const COMBINED_REPORTS_MAX: usize = 4096;

/// The longest pause between two re-decisions of one report after conflicts: 50 ms.
const CONFLICT_BACKOFF_US_MAX: u64 = 50_000;

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
            // Outside tokio's cooperative budget: a combiner that runs out of it goes to the back
            // of its worker's queue, behind every submitter of the burst, while all of them wait
            // for it. It yields on its own instead ([`COMBINED_REPORTS_MAX`]).
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
    /// The combiner of one stream: takes what is queued (at most [`COMBINED_REPORTS_MAX`] at a
    /// time), decides it with the stream's lock held and queues its append at the store, and ends
    /// when the queue is empty and every batch is answered.
    ///
    /// Batches are pipelined: the next one is decided on top of the ones still flushing and
    /// queued behind them (fenced: the store refuses it if one before it is refused), so a hot
    /// stream's decisions overlap its commits. Each batch is answered, in order, only once the
    /// store answered it — a duplicate's answer too, since it rests on the batches before. After
    /// a refusal, the batches behind it are decided again the unpipelined way.
    async fn combine(self: Arc<Self>, slot: SlotRef) {
        let mut vacate = Vacate {
            slot: &slot,
            clean: false,
        };
        let mut pipeline = Pipeline::default();
        // Reports decided since this task last gave its worker up.
        let mut decided_unyielding = 0usize;
        // Held while batches are in flight (the state holds their events before the store does);
        // let go between bursts, so `submit_batch` on this stream gets its turn.
        let mut held: Option<tokio::sync::OwnedMutexGuard<Slot>> = None;
        loop {
            if let Some(guard) = held.as_mut() {
                self.land_answered(&mut pipeline, guard);
            }
            if pipeline.flights.is_empty() {
                if let Some(guard) = held.take() {
                    if pipeline.redo.is_empty() {
                        drop(guard);
                    } else {
                        // Every flight landed: decide the refused ones again, from the store.
                        let redo = std::mem::take(&mut pipeline.redo);
                        held = Some(self.decide_unpipelined(redo, guard).await);
                        continue;
                    }
                }
            } else if held.as_ref().is_some_and(|guard| guard.state.is_none()) {
                // The flights left were decided on events the store refused: they come back
                // refused too (fenced); wait for them before deciding anything new.
                if let (Some(guard), Some(flight)) = (held.as_mut(), pipeline.flights.front_mut()) {
                    let reply = flight.answer().await;
                    self.land_front(&mut pipeline, reply, guard);
                }
                continue;
            }
            let waiters: Vec<Waiter> = {
                let mut queue = lock_queue(&slot);
                if queue.waiters.is_empty() && pipeline.flights.is_empty() {
                    queue.combining = false;
                    vacate.clean = true;
                    return;
                }
                let take = queue.waiters.len().min(COMBINED_REPORTS_MAX);
                queue.waiters.drain(..take).collect()
            };
            if waiters.is_empty() {
                // Nothing new: wait for the oldest flight's answer or a new report.
                decided_unyielding = 0;
                if let (Some(guard), Some(flight)) = (held.as_mut(), pipeline.flights.front_mut()) {
                    tokio::select! {
                        reply = flight.answer() => self.land_front(&mut pipeline, reply, guard),
                        _ = slot.arrived.notified() => {}
                    }
                }
                continue;
            }
            let guard = match held.as_mut() {
                Some(guard) => guard,
                None => held.insert(slot.lock.clone().lock_owned().await),
            };
            decided_unyielding += waiters.len();
            if let Some(flight) = self.launch(waiters, guard, pipeline.fence()).await {
                pipeline.flights.push_back(flight);
            }
            if decided_unyielding >= COMBINED_REPORTS_MAX {
                // A stream that never runs dry must not keep this worker from its other tasks.
                decided_unyielding = 0;
                tokio::task::yield_now().await;
            }
        }
    }

    /// Lands, oldest first, the flights the store has already answered.
    fn land_answered(&self, pipeline: &mut Pipeline, guard: &mut Slot) {
        while let Some(flight) = pipeline.flights.front_mut() {
            let reply = match flight.queued.as_mut() {
                Some(queued) => match queued.try_answer() {
                    Some(reply) => Some(reply),
                    None => return,
                },
                None => None,
            };
            self.land_front(pipeline, reply, guard);
        }
    }

    /// Lands the oldest flight with `reply`, its answer.
    fn land_front(&self, pipeline: &mut Pipeline, reply: Option<AppendReply>, guard: &mut Slot) {
        if let Some(flight) = pipeline.flights.pop_front() {
            self.land(flight, reply, &mut pipeline.redo, guard);
        }
    }

    /// Decides `waiters` on the stream's state (which already holds the flights in the air) and
    /// queues their append behind `after`. Answers them at once only when the state cannot be
    /// loaded.
    async fn launch(
        &self,
        waiters: Vec<Waiter>,
        guard: &mut Slot,
        after: Option<AppendFence>,
    ) -> Option<Flight> {
        let mut flight = Flight::new(waiters);
        let stream = flight.reports[0].task_id.to_string();
        if guard.state.is_none() {
            match self.load(&stream).await {
                Ok(state) => guard.state = Some(state),
                Err(error) => {
                    flight.fail(error);
                    return None;
                }
            }
        }
        let state = guard.state.as_mut().expect("loaded above");
        let indices: Vec<usize> = (0..flight.reports.len()).collect();
        let mut states = BTreeMap::from([(stream.as_str(), state)]);
        let plan = self.plan(
            &flight.reports,
            &flight.keys,
            &indices,
            &mut flight.results,
            &mut states,
        );
        flight.appended_for = plan.appended_for;
        if !plan.appends.is_empty() {
            flight.queued = Some(self.store.queue_append(plan.appends, after).await);
        }
        Some(flight)
    }

    /// Answers a flight from its store answer (`None`: it appended nothing). A refused one (or
    /// any after a refusal) goes to `redo`, from its first refused report on, and the state is
    /// forgotten; an error answers its reports with it.
    fn land(
        &self,
        mut flight: Flight,
        reply: Option<AppendReply>,
        redo: &mut Vec<Waiter>,
        guard: &mut Slot,
    ) {
        if guard.state.is_none() {
            // A flight before it was refused: it was decided on events the store does not hold,
            // and the store refused it with that one (its fence).
            debug_assert!(
                !matches!(&reply, Some(Ok(outcomes)) if outcomes.iter().any(Result::is_ok)),
                "an append queued after a refused one was accepted"
            );
            redo.extend(flight.into_waiters());
            return;
        }
        let indices: Vec<usize> = (0..flight.reports.len()).collect();
        let settled = match reply {
            None => Ok(Vec::new()),
            Some(Ok(outcomes)) => settle(
                &flight.reports,
                &indices,
                &flight.appended_for,
                outcomes,
                &mut flight.results,
            ),
            Some(Err(error)) => Err(error.into()),
        };
        match settled {
            Ok(conflicted) => {
                let first_refused = conflicted.first().copied().unwrap_or(flight.reports.len());
                if first_refused < flight.reports.len() {
                    tracing::debug!(
                        stream = %flight.reports[0].task_id,
                        reports = flight.reports.len() - first_refused,
                        "re-deciding after a conflict"
                    );
                    guard.state = None;
                }
                flight.answer_before(first_refused);
                redo.extend(flight.into_waiters());
            }
            Err(error) => {
                guard.state = None;
                flight.fail(error);
            }
        }
    }

    /// Decides `waiters` the way [`Ledger::submit_batch`] does (reload, re-decide on conflicts)
    /// and answers them.
    async fn decide_unpipelined(
        &self,
        waiters: Vec<Waiter>,
        guard: tokio::sync::OwnedMutexGuard<Slot>,
    ) -> tokio::sync::OwnedMutexGuard<Slot> {
        let flight = Flight::new(waiters);
        let (guard, outcome) = self
            .decide_locked(&flight.reports, &flight.keys, guard)
            .await;
        match outcome {
            Ok(results) => {
                for (reply, result) in flight.replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(error) => flight.fail(error),
        }
        guard
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
        let plan = {
            let mut states: BTreeMap<&str, &mut TaskState> = guards
                .iter_mut()
                .map(|(stream, guard)| (*stream, guard.state.as_mut().expect("loaded above")))
                .collect();
            self.plan(reports, keys, indices, results, &mut states)
        };
        if plan.appends.is_empty() {
            return Ok(Vec::new());
        }
        let outcomes = match self.store.append(plan.appends).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                // The states above include events that may not be stored: forget them.
                for guard in guards.values_mut() {
                    guard.state = None;
                }
                return Err(error.into());
            }
        };
        let conflicted = settle(reports, indices, &plan.appended_for, outcomes, results)?;
        for &index in &conflicted {
            if let Some(guard) = guards.get_mut(reports[index].task_id.as_str()) {
                guard.state = None;
            }
        }
        Ok(conflicted)
    }

    /// Decides the reports `indices` (in order) against their streams' `states`, advancing each
    /// state past the events, and builds the appends; `results` get each decision (positions come
    /// with the store's answer).
    fn plan(
        &self,
        reports: &[Report],
        keys: &[ReportKey],
        indices: &[usize],
        results: &mut [Option<Submitted>],
        states: &mut BTreeMap<&str, &mut TaskState>,
    ) -> Plan {
        let recorded_at_ms = self.clock.now_ms();
        let mut appends: Vec<StreamAppend> = Vec::with_capacity(indices.len());
        let mut appended_for: Vec<AppendedFor> = Vec::with_capacity(indices.len());
        for &index in indices {
            let report = &reports[index];
            let state = states
                .get_mut(report.task_id.as_str())
                .expect("every report's stream is locked and loaded");
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
        Plan {
            appends,
            appended_for,
        }
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

/// Gives the reports of a planned append their positions from the store's `outcomes`. Returns
/// the reports to decide again, in order: per stream, every report from its first refused one
/// on (a later one, even one that appended nothing, was decided on the refused events).
fn settle(
    reports: &[Report],
    indices: &[usize],
    appended_for: &[AppendedFor],
    outcomes: Vec<Result<taskledger_store::Appended, taskledger_store::Conflict>>,
    results: &mut [Option<Submitted>],
) -> Result<Vec<usize>, IngestError> {
    let mut first_refused: BTreeMap<&str, usize> = BTreeMap::new();
    for &(index, append, offset) in appended_for {
        let stream = reports[index].task_id.as_str();
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
                .get(reports[index].task_id.as_str())
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
