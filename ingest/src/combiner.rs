//! The per-stream combiner of [`crate::Ledger::submit`]: reports submitted one at a time join
//! their stream's queue, and one combiner task per busy stream decides what is queued, in
//! arrival order, and queues it at the store as one append — pipelined: the next batch is
//! decided on top of the ones still flushing and queued behind them, fenced, and each batch is
//! answered, in order, only once the store answered it.
//!
//! The stream's in-memory state is a [`SlotState`]: `Unloaded` (never read, or evicted),
//! `Loaded` (it holds the events of every flight in the air, ahead of the store), or `Stale`
//! (an append was refused or failed: the state held events the store may not have, the
//! flights behind it come back refused, and the stream is read again before the next
//! decision). Every transition is a method of `SlotState`, tested below.

use crate::ledger::{settle, AppendedFor, Inner, Keyed};
use crate::{IngestError, Submitted};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use taskledger_domain::{Report, ReportKey, TaskState};
use taskledger_store::{AppendFence, AppendReply, QueuedAppend};

/// What the process holds of one stream.
#[derive(Default)]
pub(crate) enum SlotState {
    /// Nothing: the next decision reads the stream from the store.
    #[default]
    Unloaded,
    /// The stream folded, including the events of the flights still in the air.
    Loaded(TaskState),
    /// An append was refused (a conflict) or failed: the state held events the store may not
    /// have. Every flight queued behind the refused one comes back refused too (fenced); the
    /// stream is read again before the next decision.
    Stale,
}

impl SlotState {
    /// The state to decide on, when there is one.
    pub(crate) fn loaded_mut(&mut self) -> Option<&mut TaskState> {
        match self {
            SlotState::Loaded(state) => Some(state),
            SlotState::Unloaded | SlotState::Stale => None,
        }
    }

    /// Whether a decision must read the stream first.
    pub(crate) fn needs_load(&self) -> bool {
        !matches!(self, SlotState::Loaded(_))
    }

    /// Whether a refusal or failure made the state stale (flights behind it are refused).
    pub(crate) fn is_stale(&self) -> bool {
        matches!(self, SlotState::Stale)
    }

    /// The stream as just read from the store.
    pub(crate) fn load(&mut self, state: TaskState) -> &mut TaskState {
        *self = SlotState::Loaded(state);
        self.loaded_mut().expect("just loaded")
    }

    /// Forgets the state after a refused or failed append.
    pub(crate) fn forget(&mut self) {
        *self = SlotState::Stale;
    }
}

/// One stream's in-memory state, behind its lock.
#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) state: SlotState,
}

/// A report waiting for its stream, and where its result goes.
pub(crate) struct Waiter {
    pub(crate) id: u64,
    pub(crate) report: Report,
    /// `report.key()`, computed by the submitter before it queues (in parallel with the others,
    /// not in the combiner's serial loop).
    pub(crate) key: ReportKey,
    pub(crate) reply: tokio::sync::oneshot::Sender<Result<Submitted, IngestError>>,
}

/// One stream's lock, and the single reports queued for it.
#[derive(Default)]
pub(crate) struct SlotCell {
    pub(crate) lock: Arc<tokio::sync::Mutex<Slot>>,
    pub(crate) queue: Mutex<Queue>,
    /// Wakes a combiner that waits on the store when a report joins the queue.
    pub(crate) arrived: tokio::sync::Notify,
}

/// Reports submitted one at a time are combined per stream: each joins its stream's queue, and
/// one combiner task per busy stream decides everything queued, in arrival order, and appends it
/// together (one commit), so a hot stream — a thousand producers enqueueing one taskId — costs a
/// few commits, not a thousand in a row. The combiner is a task of its own: a submitter that
/// gives up never strands the reports it would otherwise have carried.
#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) waiters: std::collections::VecDeque<Waiter>,
    /// A combiner task is running for this stream.
    pub(crate) combining: bool,
}

pub(crate) type SlotRef = Arc<SlotCell>;

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
/// `results[i]` is the decision of `waiters[i]`; both shrink from the front as reports are
/// answered ([`Flight::answer_before`]).
struct Flight {
    waiters: Vec<Waiter>,
    results: Vec<Option<Submitted>>,
    appended_for: Vec<AppendedFor>,
    queued: Option<QueuedAppend>,
}

impl Flight {
    fn new(waiters: Vec<Waiter>) -> Flight {
        Flight {
            results: vec![None; waiters.len()],
            waiters,
            appended_for: Vec::new(),
            queued: None,
        }
    }

    /// Answers the reports before `end` with their results.
    fn answer_before(&mut self, end: usize) {
        for (waiter, result) in self.waiters.drain(..end).zip(self.results.drain(..end)) {
            let _ = waiter.reply.send(result.ok_or(IngestError::Unanswered));
        }
    }

    /// Answers every report with `error`.
    fn fail(self, error: IngestError) {
        let shared = Arc::new(error);
        for waiter in self.waiters {
            let _ = waiter.reply.send(Err(IngestError::Shared(shared.clone())));
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
        self.waiters
    }
}

impl Keyed for Waiter {
    fn report(&self) -> &Report {
        &self.report
    }
    fn key(&self) -> ReportKey {
        self.key
    }
}

/// Reports a combiner decides and appends together at most.
pub(crate) const COMBINED_REPORTS_MAX: usize = 4096;

/// Takes a queued report back out if its submitter gives up before the combiner took it, so a
/// cancelled request is never appended later.
pub(crate) struct QueuedGuard<'a> {
    pub(crate) slot: &'a SlotCell,
    pub(crate) id: u64,
    pub(crate) armed: bool,
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

pub(crate) fn lock_queue(slot: &SlotCell) -> std::sync::MutexGuard<'_, Queue> {
    // Only pushes, drains and a flag happen under it; a poisoned queue is still a valid queue.
    slot.queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    pub(crate) async fn combine(self: Arc<Self>, slot: SlotRef) {
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
            } else if held.as_ref().is_some_and(|guard| guard.state.is_stale()) {
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
        let stream = flight.waiters[0].report.task_id.to_string();
        if guard.state.needs_load() {
            match self.load(&stream).await {
                Ok(state) => {
                    guard.state.load(state);
                }
                Err(error) => {
                    flight.fail(error);
                    return None;
                }
            }
        }
        let state = guard.state.loaded_mut().expect("loaded above");
        let indices: Vec<usize> = (0..flight.waiters.len()).collect();
        let mut states = BTreeMap::from([(stream.as_str(), state)]);
        let plan = self.plan(&flight.waiters, &indices, &mut flight.results, &mut states);
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
        if guard.state.is_stale() {
            // A flight before it was refused: it was decided on events the store does not hold,
            // and the store refused it with that one (its fence).
            debug_assert!(
                !matches!(&reply, Some(Ok(outcomes)) if outcomes.iter().any(Result::is_ok)),
                "an append queued after a refused one was accepted"
            );
            redo.extend(flight.into_waiters());
            return;
        }
        let indices: Vec<usize> = (0..flight.waiters.len()).collect();
        let settled = match reply {
            None => Ok(Vec::new()),
            Some(Ok(outcomes)) => settle(
                &flight.waiters,
                &indices,
                &flight.appended_for,
                outcomes,
                &mut flight.results,
            ),
            Some(Err(error)) => Err(error.into()),
        };
        match settled {
            Ok(conflicted) => {
                let first_refused = conflicted.first().copied().unwrap_or(flight.waiters.len());
                if first_refused < flight.waiters.len() {
                    tracing::debug!(
                        stream = %flight.waiters[0].report.task_id,
                        reports = flight.waiters.len() - first_refused,
                        "re-deciding after a conflict"
                    );
                    guard.state.forget();
                }
                flight.answer_before(first_refused);
                redo.extend(flight.into_waiters());
            }
            Err(error) => {
                guard.state.forget();
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
        let (guard, outcome) = self.decide_locked(&flight.waiters, guard).await;
        match outcome {
            Ok(results) => {
                for (waiter, result) in flight.waiters.into_iter().zip(results) {
                    let _ = waiter.reply.send(Ok(result));
                }
            }
            Err(error) => flight.fail(error),
        }
        guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_read_once_kept_while_loaded_and_read_again_after_a_refusal() {
        let mut state = SlotState::default();
        assert!(state.needs_load() && !state.is_stale() && state.loaded_mut().is_none());
        let loaded = state.load(TaskState::default());
        loaded.events = 3;
        assert!(!state.needs_load());
        assert_eq!(state.loaded_mut().map(|s| s.events), Some(3));
        state.forget();
        assert!(state.needs_load() && state.is_stale() && state.loaded_mut().is_none());
        state.load(TaskState::default());
        assert!(!state.is_stale() && state.loaded_mut().map(|s| s.events) == Some(0));
    }
}
