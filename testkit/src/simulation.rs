//! The storage-fault simulation: a seeded workload of appends through the real [`SledStore`],
//! whose write-ahead log sits on a [`FaultDisk`], with injected faults, power losses and
//! reopens. After every reopen it checks, against a model of what was acknowledged:
//!
//! - every acknowledged append is there, at the position and stream version it was given, with
//!   identical bytes;
//! - nothing else is served but events of appends that failed (an append that failed may or may
//!   not have reached the disk), each such append whole or not at all, in order;
//! - positions are contiguous from 0 and every stream's versions dense from 0, through
//!   `read_all` and `read_stream` alike;
//! - a store that failed a write refuses the next one (it poisons itself rather than
//!   acknowledge on a log it can no longer vouch for);
//! - a full disk is a clear error (`No space left on device`, naming the file), and the store
//!   takes appends again once space is back and it is reopened.
//!
//! One seed decides everything the workload does: the appends, each fault and its kind, when
//! power goes off and what it leaves. Half the seeds run the log without its threads (the
//! committer zeroes and checkpoints in line): those replay exactly, operation for operation.
//! The other half run the zeroing and checkpoint threads beside concurrent appends: the same
//! workload and faults, but thread timing decides which operation a fault strikes, so a failure
//! there may take a few replays to show again.

use crate::fault_disk::{Fault, FaultCounts, FaultDisk};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use taskledger_store::{
    EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamAppend, EVENT_BYTES_MAX,
};
use taskledger_store_sled::{SledConfig, SledStore};

/// Streams the workload appends to.
const STREAMS: usize = 12;
/// Requests of one batch at most (concurrent with the log's threads, one after the other
/// without).
const BATCH_REQUESTS_MAX: usize = 6;
/// Opens of one store attempted before a store that will not open is a failure.
const OPEN_ATTEMPTS_MAX: usize = 4;
/// How long an open waits for sled's lock of its directory at most.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Events of a bulk append at most (each up to [`EVENT_BYTES_MAX`]): a few of the log's zeroed
/// steps, so a full disk meets a commit.
const BULK_EVENTS_MAX: usize = 8;

/// One run.
#[derive(Debug, Clone)]
pub struct SimulationOptions {
    pub seed: u64,
    /// Workload steps (a batch of appends, with or without a fault; a reopen; a power loss).
    pub steps: usize,
    /// A scratch directory for sled's files and their copies (emptied, then used).
    pub dir: PathBuf,
}

/// What a run did and checked.
#[derive(Debug, Clone, Default)]
pub struct SimulationReport {
    /// Runs summed into this report.
    pub runs: u64,
    pub steps: u64,
    /// Runs with the log's zeroing and checkpoint threads (the others replay exactly).
    pub runs_with_threads: u64,
    pub faults: FaultCounts,
    /// Stream appends answered `Ok` (each checked after every later reopen).
    pub appends_acknowledged: u64,
    pub events_acknowledged: u64,
    /// Stream appends answered with an error (not acknowledged).
    pub appends_failed: u64,
    /// Of the failed appends' events: found after the next reopen, and not.
    pub failed_events_present: u64,
    pub failed_events_absent: u64,
    /// Stream appends refused for a wrong expected version (nothing written; checked).
    pub conflicts: u64,
    pub reopens: u64,
    /// Verifications (after each reopen and at the end) and the events they compared.
    pub checks: u64,
    pub events_checked: u64,
    /// Appends checked to be refused by a store after one of its writes failed.
    pub refusals_checked: u64,
    /// Opens that failed (a read fault) with an error naming the file.
    pub open_errors: u64,
    /// Appends refused with `No space left on device`, and stores that took appends again once
    /// space was back.
    pub no_space_errors: u64,
    pub no_space_recoveries: u64,
}

impl SimulationReport {
    /// Adds `other` to this report.
    pub fn add(&mut self, other: &SimulationReport) {
        self.runs += other.runs;
        self.steps += other.steps;
        self.runs_with_threads += other.runs_with_threads;
        self.faults.add(&other.faults);
        self.appends_acknowledged += other.appends_acknowledged;
        self.events_acknowledged += other.events_acknowledged;
        self.appends_failed += other.appends_failed;
        self.failed_events_present += other.failed_events_present;
        self.failed_events_absent += other.failed_events_absent;
        self.conflicts += other.conflicts;
        self.reopens += other.reopens;
        self.checks += other.checks;
        self.events_checked += other.events_checked;
        self.refusals_checked += other.refusals_checked;
        self.open_errors += other.open_errors;
        self.no_space_errors += other.no_space_errors;
        self.no_space_recoveries += other.no_space_recoveries;
    }
}

/// A check that failed: what, at which step of which seed.
#[derive(Debug, Clone)]
pub struct SimulationFailure {
    pub seed: u64,
    pub step: usize,
    pub threads: bool,
    pub message: String,
}

impl std::fmt::Display for SimulationFailure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "seed {} step {} ({}): {}",
            self.seed,
            self.step,
            if self.threads {
                "with the log's threads"
            } else {
                "deterministic"
            },
            self.message
        )
    }
}

/// An acknowledged (or, after a reopen, found) event and where it is.
#[derive(Debug, Clone)]
struct Stored {
    stream: String,
    version: u64,
    event: NewEvent,
}

/// What the store must hold.
#[derive(Default)]
struct Model {
    /// By global position.
    events: Vec<Stored>,
    lengths: HashMap<String, u64>,
    /// Appends answered with an I/O error, per stream in order: on the disk or not.
    uncertain: HashMap<String, Vec<Vec<NewEvent>>>,
}

/// Runs one seed.
pub fn run(options: &SimulationOptions) -> Result<SimulationReport, SimulationFailure> {
    let mut random = ChaCha8Rng::seed_from_u64(options.seed);
    let threads = random.gen_bool(0.5);
    let fail = |step: usize, message: String| SimulationFailure {
        seed: options.seed,
        step,
        threads,
        message,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(0, format!("cannot start a runtime: {e}")))?;
    let sled_dir = options.dir.join("events");
    let copy_dir = options.dir.join("events.synced");
    for dir in [&sled_dir, &copy_dir] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| fail(0, format!("cannot empty {}: {e}", dir.display())))?;
        }
    }
    let disk = FaultDisk::new(random.gen(), threads);
    disk.model_sled(&sled_dir, &copy_dir);
    let mut config = SledConfig::new(&sled_dir);
    config.cache_capacity_bytes = 8 * 1024 * 1024;
    // Small enough that the log turns (and checkpoints) every few dozen commits.
    config.wal_checkpoint_bytes = [8 * 1024, 32 * 1024, 128 * 1024][random.gen_range(0..3)];
    config.wal_io = Arc::new(disk.clone());
    let mut simulation = Simulation {
        random,
        disk,
        config,
        store: None,
        model: Model::default(),
        report: SimulationReport {
            runs: 1,
            runs_with_threads: u64::from(threads),
            ..SimulationReport::default()
        },
        runtime,
        threads,
        streams: (0..STREAMS)
            .map(|index| format!("stream-{index}"))
            .collect(),
        bulk: false,
    };
    let result = (|| {
        simulation.open().map_err(|message| (0, message))?;
        for step in 0..options.steps {
            simulation.step().map_err(|message| (step, message))?;
            simulation.report.steps += 1;
        }
        simulation.close();
        simulation
            .open()
            .map_err(|message| (options.steps, message))?;
        simulation.close();
        Ok(())
    })();
    simulation.close();
    simulation.report.faults = simulation.disk.counts();
    for dir in [&sled_dir, &copy_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
    result.map_err(|(step, message)| fail(step, message))?;
    Ok(simulation.report)
}

struct Simulation {
    random: ChaCha8Rng,
    disk: FaultDisk,
    config: SledConfig,
    store: Option<SledStore>,
    model: Model,
    report: SimulationReport,
    runtime: tokio::runtime::Runtime,
    threads: bool,
    streams: Vec<String>,
    /// The next batch adds a bulk append (megabytes: the log must grow).
    bulk: bool,
}

/// What a batch met.
#[derive(Default)]
struct Outcome {
    /// Some append failed: the store must refuse the next one.
    failed: bool,
    no_space: bool,
}

impl Simulation {
    fn store(&self) -> Result<&SledStore, String> {
        self.store
            .as_ref()
            .ok_or_else(|| "no store open".to_string())
    }

    fn step(&mut self) -> Result<(), String> {
        match self.random.gen_range(0..100) {
            0..=49 => self.batch_then_recover(None),
            50..=61 => {
                let operations = self.random.gen_range(0..16);
                self.disk.cut_power_after(operations);
                self.batch_then_recover(None)
            }
            62..=69 => self.batch_then_recover(Some(Fault::SyncFails)),
            70..=75 => {
                let torn = self.random.gen_bool(0.5);
                self.batch_then_recover(Some(Fault::WriteFails { torn }))
            }
            76..=79 => {
                // With a bulk append big enough to need the log's next zeroed step.
                let free = self.random.gen_range(0..6 * 1024 * 1024);
                self.disk.set_free_bytes(Some(free));
                self.bulk = true;
                self.batch_then_recover(None)
            }
            80..=83 => {
                // Strikes the next checkpoint: at a turn, or the closing one.
                self.disk.arm(Fault::SledSyncFails);
                self.batch_then_recover(None)?;
                self.reopen()
            }
            84..=89 => {
                self.disk.cut_power();
                self.power_loss()
            }
            90..=94 => self.reopen(),
            _ => {
                self.close();
                self.disk.arm(Fault::ReadFails);
                self.open()
            }
        }
    }

    /// A batch of appends (with `fault` armed), then whatever the faults call for: a power loss
    /// if the power went off, a check that a store that failed refuses, and a recovery.
    fn batch_then_recover(&mut self, fault: Option<Fault>) -> Result<(), String> {
        if let Some(fault) = fault {
            self.disk.arm(fault);
        }
        let bulk = std::mem::take(&mut self.bulk);
        let outcome = self.batch(bulk)?;
        self.disk.disarm();
        self.disk.cancel_cut();
        if self.disk.powered_off() {
            self.disk.set_free_bytes(None);
            return self.power_loss();
        }
        if outcome.failed {
            self.check_refuses()?;
        }
        self.disk.set_free_bytes(None);
        if outcome.failed {
            if self.random.gen_bool(0.5) {
                self.disk.cut_power();
                self.power_loss()?;
            } else {
                self.reopen()?;
            }
            if outcome.no_space {
                self.check_takes_appends()?;
                self.report.no_space_recoveries += 1;
            }
        }
        Ok(())
    }

    fn new_event(&mut self) -> NewEvent {
        const TYPES: [&str; 5] = [
            "TaskEnqueued",
            "ExecutionClaimed",
            "ExecutionSucceeded",
            "ExecutionFailed",
            "ReportRejected",
        ];
        let length = match self.random.gen_range(0..100) {
            0..=79 => self.random.gen_range(0..200),
            80..=97 => self.random.gen_range(200..4000),
            _ => self.random.gen_range(30_000..70_000),
        };
        let mut data = vec![0u8; length];
        self.random.fill(data.as_mut_slice());
        NewEvent {
            event_id: uuid::Builder::from_random_bytes(self.random.gen()).into_uuid(),
            event_type: TYPES[self.random.gen_range(0..TYPES.len())].to_string(),
            schema_version: self.random.gen_range(1..4),
            recorded_at_ms: self.random.gen_range(0..4_000_000_000_000),
            data,
        }
    }

    /// Builds and submits a batch: requests on distinct streams (so each one's expected
    /// version is known), checks every answer and adds the acknowledged ones to the model.
    fn batch(&mut self, bulk: bool) -> Result<Outcome, String> {
        let mut streams = self.streams.clone();
        streams.shuffle(&mut self.random);
        let mut requests: Vec<Vec<(StreamAppend, bool)>> = Vec::new();
        let request_count = self.random.gen_range(1..=BATCH_REQUESTS_MAX);
        for _ in 0..request_count {
            let mut request = Vec::new();
            for _ in 0..self.random.gen_range(1..=3) {
                let Some(stream) = streams.pop() else { break };
                let length = self.model.lengths.get(&stream).copied().unwrap_or(0);
                let (expected, conflicts) = match self.random.gen_range(0..20) {
                    0 => (ExpectedVersion::Length(length + 1), true),
                    1 | 2 => (ExpectedVersion::Any, false),
                    _ => (ExpectedVersion::Length(length), false),
                };
                let events = (0..self.random.gen_range(1..=3))
                    .map(|_| self.new_event())
                    .collect();
                request.push((
                    StreamAppend {
                        stream,
                        expected,
                        events,
                    },
                    conflicts,
                ));
            }
            if !request.is_empty() {
                requests.push(request);
            }
        }
        if let (true, Some(stream)) = (bulk, streams.pop()) {
            let length = self.model.lengths.get(&stream).copied().unwrap_or(0);
            let events = (0..self.random.gen_range(2..=BULK_EVENTS_MAX))
                .map(|_| {
                    let mut event = self.new_event();
                    event.data = incompressible(
                        self.random.gen_range(512 * 1024..=EVENT_BYTES_MAX),
                        &mut self.random,
                    );
                    event
                })
                .collect();
            requests.push(vec![(
                StreamAppend {
                    stream,
                    expected: ExpectedVersion::Length(length),
                    events,
                },
                false,
            )]);
        }
        let store = self.store()?;
        let submitted: Vec<Vec<StreamAppend>> = requests
            .iter()
            .map(|request| request.iter().map(|(append, _)| append.clone()).collect())
            .collect();
        if self.threads {
            self.disk.set_quiet(false);
        }
        let replies = self.runtime.block_on(async {
            if self.threads {
                futures_util::future::join_all(
                    submitted.into_iter().map(|appends| store.append(appends)),
                )
                .await
            } else {
                let mut replies = Vec::new();
                for appends in submitted {
                    replies.push(store.append(appends).await);
                }
                replies
            }
        });
        if self.threads {
            self.disk.set_quiet(true);
        }
        let mut outcome = Outcome::default();
        let mut acknowledged: Vec<(u64, Stored)> = Vec::new();
        for (request, reply) in requests.into_iter().zip(replies) {
            match reply {
                Ok(results) => {
                    if results.len() != request.len() {
                        return Err(format!(
                            "{} results for {} stream appends",
                            results.len(),
                            request.len()
                        ));
                    }
                    for ((append, conflicts), result) in request.into_iter().zip(results) {
                        let length = self.model.lengths.get(&append.stream).copied().unwrap_or(0);
                        match result {
                            Ok(appended) => {
                                if conflicts {
                                    return Err(format!(
                                        "an append to {} expecting length {} was accepted at length {length}",
                                        append.stream,
                                        length + 1
                                    ));
                                }
                                let added = append.events.len() as u64;
                                if appended.stream_length != length + added {
                                    return Err(format!(
                                        "{} acknowledged at length {}, expected {}",
                                        append.stream,
                                        appended.stream_length,
                                        length + added
                                    ));
                                }
                                self.report.appends_acknowledged += 1;
                                self.report.events_acknowledged += added;
                                for (offset, event) in append.events.into_iter().enumerate() {
                                    acknowledged.push((
                                        appended.first_position + offset as u64,
                                        Stored {
                                            stream: append.stream.clone(),
                                            version: length + offset as u64,
                                            event,
                                        },
                                    ));
                                }
                                self.model.lengths.insert(append.stream, length + added);
                            }
                            Err(conflict) => {
                                if !conflicts || conflict.actual != length {
                                    return Err(format!(
                                        "{}: a conflict ({conflict:?}) with the stream at length {length}",
                                        append.stream
                                    ));
                                }
                                self.report.conflicts += 1;
                            }
                        }
                    }
                }
                Err(error) => {
                    self.report.appends_failed += request.len() as u64;
                    outcome.failed = true;
                    match &error {
                        StoreError::Io(message) | StoreError::NoSpace(message) => {
                            if matches!(error, StoreError::NoSpace(_)) {
                                if !message.contains("taskledger") {
                                    return Err(format!(
                                        "a full disk's error does not name the file: {message}"
                                    ));
                                }
                                self.report.no_space_errors += 1;
                                outcome.no_space = true;
                            }
                            // It may or may not have reached the disk.
                            for (append, conflicts) in request {
                                if !conflicts {
                                    self.model
                                        .uncertain
                                        .entry(append.stream)
                                        .or_default()
                                        .push(append.events);
                                }
                            }
                        }
                        // Refused before anything was written.
                        StoreError::Poisoned(_) | StoreError::Fenced | StoreError::Closed => {}
                        other => return Err(format!("an append failed unexpectedly: {other}")),
                    }
                }
            }
        }
        // Acknowledged appends fill the positions after the model's, without a gap: the
        // failed commit (if any) came after them, and nothing was committed after it.
        acknowledged.sort_by_key(|(position, _)| *position);
        for (position, stored) in acknowledged {
            if position != self.model.events.len() as u64 {
                return Err(format!(
                    "acknowledged at position {position}, but the store held {} acknowledged events before it",
                    self.model.events.len()
                ));
            }
            self.model.events.push(stored);
        }
        Ok(outcome)
    }

    /// A store whose write failed must refuse the next append.
    fn check_refuses(&mut self) -> Result<(), String> {
        let store = self.store()?;
        let probe = vec![StreamAppend {
            stream: "probe".into(),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent {
                event_id: uuid::Uuid::nil(),
                event_type: "Probe".into(),
                schema_version: 1,
                recorded_at_ms: 0,
                data: Vec::new(),
            }],
        }];
        match self.runtime.block_on(store.append(probe)) {
            Ok(_) => Err("a store whose write had failed acknowledged the next append".into()),
            Err(_) => {
                self.report.refusals_checked += 1;
                Ok(())
            }
        }
    }

    /// After space came back (and a reopen), the store takes an append.
    fn check_takes_appends(&mut self) -> Result<(), String> {
        let outcome = self.batch(true)?;
        if outcome.failed {
            return Err("the store refused appends after space came back and it reopened".into());
        }
        Ok(())
    }

    fn close(&mut self) {
        if let Some(store) = self.store.take() {
            let _ = store.close();
        }
    }

    fn reopen(&mut self) -> Result<(), String> {
        self.close();
        self.open()
    }

    /// The power goes (went) off: the store dies with it, the disk keeps what it keeps, and the
    /// store opens again.
    fn power_loss(&mut self) -> Result<(), String> {
        self.disk.cut_power();
        self.close();
        self.disk.power_loss().map_err(|e| e.to_string())?;
        self.open()
    }

    /// Opens the store (retrying after a failed open that named its file: an injected read
    /// fault) and checks it.
    fn open(&mut self) -> Result<(), String> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            // The last open of the store, failed or closed, may still hold sled's lock a moment:
            // reopen waits it out.
            match SledStore::reopen(self.config.clone(), LOCK_WAIT) {
                Ok(store) => {
                    self.store = Some(store);
                    break;
                }
                Err(error) => {
                    let message = error.to_string();
                    let named = taskledger_store_sled::WAL_FILE_NAMES
                        .iter()
                        .any(|name| message.contains(name));
                    if !named || attempts >= OPEN_ATTEMPTS_MAX {
                        return Err(format!("the store does not open: {message}"));
                    }
                    self.report.open_errors += 1;
                    self.disk.disarm();
                }
            }
        }
        self.report.reopens += 1;
        self.verify()
    }

    /// Compares the store with the model, then takes in what failed appends left.
    fn verify(&mut self) -> Result<(), String> {
        let store = self.store()?;
        let (events, head) = self
            .runtime
            .block_on(async { (store.read_all(0, usize::MAX).await, store.head_position()) });
        let events = events.map_err(|e| format!("read_all fails: {e}"))?;
        if events.len() as u64 != head {
            return Err(format!(
                "read_all gives {} events, the head is {head}",
                events.len()
            ));
        }
        if events.len() < self.model.events.len() {
            let lost = &self.model.events[events.len()];
            return Err(format!(
                "acknowledged events lost: the store ends at position {}, {} were acknowledged (the first lost: {} version {})",
                events.len(),
                self.model.events.len(),
                lost.stream,
                lost.version
            ));
        }
        let mut lengths = self.model.lengths.clone();
        let mut found: HashMap<String, usize> = HashMap::new();
        for (position, event) in events.iter().enumerate() {
            if event.position != position as u64 {
                return Err(format!(
                    "position {} served at index {position}: positions are not contiguous",
                    event.position
                ));
            }
            match self.model.events.get(position) {
                Some(expected) => {
                    if !same(event, expected) {
                        return Err(format!(
                            "position {position} holds {} version {} ({} bytes), acknowledged was {} version {} ({} bytes)",
                            event.stream,
                            event.version,
                            event.data.len(),
                            expected.stream,
                            expected.version,
                            expected.event.data.len()
                        ));
                    }
                }
                None => {
                    // Only a failed append's event, next in its stream.
                    let length = lengths.entry(event.stream.clone()).or_insert(0);
                    let index = found.entry(event.stream.clone()).or_insert(0);
                    let candidate = self
                        .model
                        .uncertain
                        .get(&event.stream)
                        .and_then(|appends| appends.iter().flatten().nth(*index));
                    let expected = candidate.map(|candidate| Stored {
                        stream: event.stream.clone(),
                        version: *length,
                        event: candidate.clone(),
                    });
                    if !expected
                        .as_ref()
                        .is_some_and(|expected| same(event, expected))
                    {
                        return Err(format!(
                            "position {position} serves {} version {} that was never appended",
                            event.stream, event.version
                        ));
                    }
                    *length += 1;
                    *index += 1;
                }
            }
        }
        // A failed append is there whole or not at all.
        for (stream, count) in &found {
            let mut whole = 0;
            for append in self.model.uncertain.get(stream).into_iter().flatten() {
                if whole < *count {
                    whole += append.len();
                }
            }
            if whole != *count {
                return Err(format!(
                    "{stream}: {count} events of failed appends are there, not a whole number of appends"
                ));
            }
        }
        // read_stream agrees with read_all, stream by stream, versions dense from 0.
        let mut by_stream: HashMap<&str, Vec<&RecordedEvent>> = HashMap::new();
        for event in &events {
            by_stream.entry(&event.stream).or_default().push(event);
        }
        for stream in self
            .streams
            .iter()
            .chain(std::iter::once(&"probe".to_string()))
        {
            let served = self
                .runtime
                .block_on(store.read_stream(stream, 0, usize::MAX))
                .map_err(|e| format!("read_stream {stream} fails: {e}"))?;
            let expected = by_stream.get(stream.as_str()).cloned().unwrap_or_default();
            if served.len() != expected.len()
                || served
                    .iter()
                    .zip(&expected)
                    .enumerate()
                    .any(|(version, (a, b))| {
                        a.version != version as u64 || a.position != b.position || a.data != b.data
                    })
            {
                return Err(format!(
                    "read_stream {stream} serves {} events, read_all {} (or they differ)",
                    served.len(),
                    expected.len()
                ));
            }
        }
        if by_stream.contains_key("probe") {
            return Err("a probe append that must have been refused is stored".into());
        }
        // Take in what the failed appends left.
        let present = events.len() - self.model.events.len();
        let uncertain: usize = self.model.uncertain.values().flatten().map(Vec::len).sum();
        self.report.failed_events_present += present as u64;
        self.report.failed_events_absent += (uncertain - present) as u64;
        for event in &events[self.model.events.len()..] {
            self.model.events.push(Stored {
                stream: event.stream.clone(),
                version: event.version,
                event: NewEvent {
                    event_id: event.event_id,
                    event_type: event.event_type.clone(),
                    schema_version: event.schema_version,
                    recorded_at_ms: event.recorded_at_ms,
                    data: event.data.clone(),
                },
            });
        }
        self.model.lengths = lengths;
        self.model.uncertain.clear();
        self.report.checks += 1;
        self.report.events_checked += events.len() as u64;
        Ok(())
    }
}

fn same(event: &RecordedEvent, expected: &Stored) -> bool {
    event.stream == expected.stream
        && event.version == expected.version
        && event.event_id == expected.event.event_id
        && event.event_type == expected.event.event_type
        && event.schema_version == expected.event.schema_version
        && event.recorded_at_ms == expected.event.recorded_at_ms
        && event.data == expected.event.data
}

/// `length` bytes LZ4 cannot shrink (commit blocks are compressed): a random run longer than
/// LZ4's 64 KiB match window, repeated (cheaper than drawing every byte).
fn incompressible(length: usize, random: &mut ChaCha8Rng) -> Vec<u8> {
    let mut run = vec![0u8; 70_000];
    random.fill(run.as_mut_slice());
    run.iter().copied().cycle().take(length).collect()
}
