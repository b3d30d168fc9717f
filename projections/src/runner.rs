//! The projection runner: follows the store's global order and applies each event to every read
//! model. A chunk of events is applied in memory, then all the models' changes and the new
//! checkpoint are written in one atomic batch, so after a crash the models resume from their
//! checkpoint with nothing applied twice or skipped.

use crate::kv::{try_scan, Kv, Write};
use crate::models::*;
use crate::record::{rejection_index, TaskRecord};
use crate::ProjectionError;
use std::collections::BTreeMap;
use std::sync::Arc;
use taskledger_domain::event::RejectionReason;
use taskledger_domain::{Event, ExecutionStatus, Timestamp};
use taskledger_store::chain::{digest_step, Hash, GENESIS};
use taskledger_store::{EventStore, RecordedEvent};

/// The fold's hash maps: keyed by taskIds the ledger accepted, so a fast non-keyed hash will do.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Task records a folded chunk no longer needs, handed to whoever applies its batch to free them
/// there (off the folding thread): dropping it is its whole use.
pub type Retired = HashMap<String, TaskRecord>;

/// An event decoded for projection, with where it sits and its chain hash (folded into the
/// ledger's running digest, [`taskledger_store::chain`]).
pub struct Decoded {
    pub stream: String,
    pub version: u64,
    pub position: u64,
    pub hash: Hash,
    pub event: Event,
}

pub fn decode(record: RecordedEvent) -> Result<Decoded, ProjectionError> {
    let event = Event::decode(&record.event_type, record.schema_version, &record.data).map_err(
        |error| ProjectionError::Codec {
            stream: record.stream.clone(),
            version: record.version,
            message: error.to_string(),
        },
    )?;
    Ok(Decoded {
        stream: record.stream,
        version: record.version,
        position: record.position,
        hash: record.hash,
        event,
    })
}

/// The ledger's running digest as far as the models have applied it: `(position, digest)`, the
/// digest of the events at positions `0..position` ([`taskledger_store::chain`]).
pub fn read_ledger_digest(kv: &dyn Kv) -> Result<(u64, Hash), ProjectionError> {
    match kv.get(LEDGER_DIGEST_KEY)? {
        None if read_checkpoint(kv)? == 0 => Ok((0, GENESIS)),
        None => Err(ProjectionError::Models(
            "these models hold no ledger digest (replayed as of an instant): the live models do"
                .into(),
        )),
        Some(bytes) if bytes.len() == 40 => {
            let mut position = [0u8; 8];
            position.copy_from_slice(&bytes[..8]);
            let mut digest = GENESIS;
            digest.copy_from_slice(&bytes[8..]);
            Ok((u64::from_be_bytes(position), digest))
        }
        Some(bytes) => Err(ProjectionError::Models(format!(
            "the ledger digest entry is {} bytes, not 40",
            bytes.len()
        ))),
    }
}

/// The latest `at` the models have applied, if any.
pub fn read_latest_at(kv: &dyn Kv) -> Result<Option<Timestamp>, ProjectionError> {
    Ok(kv
        .get(LATEST_AT_KEY)?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map(|bytes| Timestamp(i64::from_be_bytes(bytes))))
}

pub fn read_checkpoint(kv: &dyn Kv) -> Result<u64, ProjectionError> {
    match kv.get(CHECKPOINT_KEY)? {
        None => Ok(0),
        Some(bytes) => {
            let bytes: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| ProjectionError::Models("checkpoint is not 8 bytes".into()))?;
            Ok(u64::from_be_bytes(bytes))
        }
    }
}

/// Applies chunks of events to the models in a [`Kv`]. Keeps the queue statistics (a few per
/// queue) in memory between chunks; everything else is read and written per chunk.
pub struct Projector {
    kv: Arc<dyn Kv>,
    stats: Option<BTreeMap<String, QueueStats>>,
    /// Time spent folding events into records and diffing indexes, and writing batches.
    pub fold_nanos: u64,
    pub write_nanos: u64,
    /// The records of the last two chunks folded: their batches may still be on their way to
    /// the store (the writer runs one batch behind), so the next chunk reads them from here.
    carry: [HashMap<String, TaskRecord>; 2],
    latest_at: Option<i64>,
    /// The running digest after the last event folded: (next position, digest).
    digest: Option<(u64, Hash)>,
    /// Every event since position 0 was folded (false once an as-of replay skipped one).
    digest_whole: bool,
}

impl Projector {
    pub fn new(kv: Arc<dyn Kv>) -> Projector {
        Projector {
            kv,
            stats: None,
            fold_nanos: 0,
            write_nanos: 0,
            carry: [HashMap::default(), HashMap::default()],
            latest_at: None,
            digest: None,
            digest_whole: true,
        }
    }

    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    fn load_stats(&mut self) -> Result<&mut BTreeMap<String, QueueStats>, ProjectionError> {
        if self.stats.is_none() {
            let mut stats = BTreeMap::new();
            try_scan(self.kv.as_ref(), &[STATS_PREFIX], &[], &mut |key, value| {
                let name = String::from_utf8_lossy(&key[1..]).into_owned();
                stats.insert(name, decode_json::<QueueStats>(key, value)?);
                Ok(true)
            })?;
            self.stats = Some(stats);
        }
        Ok(self.stats.get_or_insert_with(BTreeMap::new))
    }

    /// Folds `events` into the models and returns the batch that stores the result with the
    /// checkpoint `next_position`. Batches must be applied in the order they were folded.
    pub fn fold_chunk(
        &mut self,
        events: &[Decoded],
        next_position: u64,
    ) -> Result<(Vec<Write>, Retired), ProjectionError> {
        struct Touched {
            record: TaskRecord,
            /// Index entries and (queue, status) of every execution when loaded.
            index: Vec<(Vec<u8>, Vec<u8>)>,
            statuses: Vec<(String, ExecutionStatus)>,
        }
        let started = std::time::Instant::now();
        let kv = self.kv.clone();
        let [mut carry_old, mut carry_new] = std::mem::take(&mut self.carry);
        let mut digest_whole = self.digest_whole;
        let (mut digest_position, mut digest) = match self.digest {
            Some(digest) => digest,
            None if digest_whole => read_ledger_digest(kv.as_ref())?,
            None => (0, GENESIS),
        };
        let stats = self.load_stats()?;
        let mut touched: HashMap<&str, Touched> =
            HashMap::with_capacity_and_hasher(events.len() / 2, Default::default());
        let mut latest_at: Option<i64> = None;
        for decoded in events {
            // Models replayed as of an instant skip later events: they hold no ledger digest.
            digest_whole &= decoded.position == digest_position;
            if digest_whole {
                digest = digest_step(&digest, decoded.position, &decoded.hash);
                digest_position += 1;
            }
            let at = decoded.event.at().millis();
            latest_at = Some(latest_at.map_or(at, |t| t.max(at)));
            let stream = decoded.stream.as_str();
            let entry = match touched.entry(stream) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    // The first event of a stream (version 0) needs no read: nothing is stored.
                    let carried = match decoded.version {
                        0 => None,
                        _ => carry_new
                            .remove(stream)
                            .or_else(|| carry_old.remove(stream)),
                    };
                    let record = match (decoded.version, carried) {
                        (0, _) => TaskRecord::default(),
                        (_, Some(record)) => record,
                        _ => match kv.get(&task_key(stream))? {
                            Some(bytes) => decode_record(stream, &bytes)?,
                            None => TaskRecord::default(),
                        },
                    };
                    let mut index = Vec::new();
                    let mut statuses = Vec::with_capacity(record.executions.len());
                    let mut task_id = LazyTaskId::new(stream);
                    for execution in &record.executions {
                        index_entries(&mut task_id, execution, &mut index)?;
                        statuses.push((execution.queue.clone(), execution.status));
                    }
                    entry.insert(Touched {
                        record,
                        index,
                        statuses,
                    })
                }
            };
            let record = &mut entry.record;
            let event = &decoded.event;
            // Lifetime counters, by the queue the event counts under.
            match event {
                Event::ExecutionEnqueued(e) => bump(stats, &e.queue, |s| s.enqueued += 1),
                Event::ReportRejected(e) => {
                    let queue = match record.execution(e.execution_id) {
                        Some(execution) => execution.queue.clone(),
                        None => record.queue_of(e.execution_id, &parse_stream(stream)?),
                    };
                    let name = RejectionReason::NAMES[rejection_index(&e.reason)];
                    bump(stats, &queue, |s| match s.rejected.get_mut(name) {
                        Some(count) => *count += 1,
                        None => {
                            s.rejected.insert(name.to_owned(), 1);
                        }
                    });
                }
                _ => {}
            }
            record.apply(event);
            match event {
                Event::ExecutionSucceeded(e) => {
                    if let Some(execution) = record.execution(e.execution_id) {
                        bump(stats, &execution.queue, |s| {
                            s.succeeded += 1;
                            s.first_success_at =
                                Some(s.first_success_at.map_or(e.at, |t| t.min(e.at)));
                            s.last_success_at =
                                Some(s.last_success_at.map_or(e.at, |t| t.max(e.at)));
                        });
                    }
                }
                Event::ExecutionFailed(e) => {
                    if let Some(execution) = record.execution(e.execution_id) {
                        bump(stats, &execution.queue, |s| {
                            s.failures += 1;
                            match s.failures_by_category.get_mut(&e.category) {
                                Some(count) => *count += 1,
                                None => {
                                    s.failures_by_category.insert(e.category.clone(), 1);
                                }
                            }
                        });
                    }
                }
                _ => {}
            }
        }
        let mut writes: Vec<Write> = Vec::with_capacity(touched.len() * 2 + stats.len() + 1);
        let mut next_carry: HashMap<String, TaskRecord> =
            HashMap::with_capacity_and_hasher(touched.len(), Default::default());
        let mut after = Vec::new();
        for (stream, entry) in touched {
            let mut task_id = LazyTaskId::new(stream);
            after.clear();
            for (index, execution) in entry.record.executions.iter().enumerate() {
                index_entries(&mut task_id, execution, &mut after)?;
                let now = (&execution.queue, execution.status);
                match entry.statuses.get(index) {
                    Some((queue, status)) if (queue, *status) == now => {}
                    old => {
                        if let Some((queue, status)) = old {
                            bump(stats, queue, |s| {
                                *s.count_mut(*status) = s.count_mut(*status).saturating_sub(1)
                            });
                        }
                        bump(stats, &execution.queue, |s| {
                            *s.count_mut(execution.status) += 1
                        });
                    }
                }
            }
            for (key, _) in &entry.index {
                if !after.iter().any(|(k, _)| k == key) {
                    writes.push((key.clone(), None));
                }
            }
            for (key, value) in after.drain(..) {
                if !entry.index.iter().any(|(k, v)| *k == key && *v == value) {
                    writes.push((key, Some(value)));
                }
            }
            writes.push((task_key(stream), Some(encode_record(&entry.record))));
            next_carry.insert(stream.to_owned(), entry.record);
        }
        for (queue, queue_stats) in stats.iter() {
            let bytes = serde_json::to_vec(queue_stats).expect("stats always serialize");
            writes.push((stats_key(queue), Some(bytes)));
        }
        if let Some(at) = latest_at {
            let previous = match self.latest_at {
                Some(t) => Some(t),
                None => kv.get(LATEST_AT_KEY)?.and_then(|bytes| {
                    <[u8; 8]>::try_from(bytes.as_slice())
                        .ok()
                        .map(i64::from_be_bytes)
                }),
            };
            let latest = previous.map_or(at, |t| t.max(at));
            self.latest_at = Some(latest);
            writes.push((LATEST_AT_KEY.to_vec(), Some(latest.to_be_bytes().to_vec())));
        }
        if digest_whole {
            let mut digest_entry = digest_position.to_be_bytes().to_vec();
            digest_entry.extend_from_slice(&digest);
            writes.push((LEDGER_DIGEST_KEY.to_vec(), Some(digest_entry)));
        } else {
            writes.push((LEDGER_DIGEST_KEY.to_vec(), None));
        }
        self.digest = Some((digest_position, digest));
        self.digest_whole = digest_whole;
        writes.push((
            CHECKPOINT_KEY.to_vec(),
            Some(next_position.to_be_bytes().to_vec()),
        ));
        // The previous chunk's batch may still be in flight: keep its records one more chunk.
        self.carry = [carry_new, next_carry];
        self.fold_nanos += nanos(started.elapsed());
        Ok((writes, carry_old))
    }
}

fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Changes one queue's statistics (allocating its name only the first time).
fn bump(
    stats: &mut BTreeMap<String, QueueStats>,
    queue: &str,
    change: impl FnOnce(&mut QueueStats),
) {
    match stats.get_mut(queue) {
        Some(queue_stats) => change(queue_stats),
        None => change(stats.entry(queue.to_owned()).or_default()),
    }
}

/// Settings of a catch-up run.
#[derive(Debug, Clone)]
pub struct CatchUpOptions {
    /// Events per chunk (one atomic model write each). Large chunks touch each task once and
    /// amortise the per-batch cost; 65,536 events keep a chunk's working set to tens of MB.
    pub chunk_events: usize,
    /// Stop at this position (default: the store's head when the run starts).
    pub until: Option<u64>,
    /// Only events with `at` ≤ this instant (as-of views, into a scratch [`Kv`]).
    pub as_of: Option<Timestamp>,
}

impl Default for CatchUpOptions {
    fn default() -> Self {
        CatchUpOptions {
            chunk_events: 65_536,
            until: None,
            as_of: None,
        }
    }
}

/// What a catch-up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    pub from: u64,
    pub to: u64,
}

/// Brings the models in `projector` up to the store's head (or `until`), from their checkpoint.
/// Reading and decoding the next chunk overlaps applying the current one (two cores).
///
/// On an error, the projector is left empty, as [`Projector::new`] makes it: what it kept in
/// memory (queue statistics, the records of the last chunks, the running digest) may be ahead of
/// what was stored, and a run after the error must start from what the models hold.
pub async fn catch_up(
    store: Arc<dyn EventStore>,
    projector: &mut Projector,
    options: &CatchUpOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<CatchUp, ProjectionError> {
    let result = run_catch_up(store, projector, options, progress).await;
    if result.is_err() {
        *projector = Projector::new(projector.kv().clone());
    }
    result
}

async fn run_catch_up(
    store: Arc<dyn EventStore>,
    projector: &mut Projector,
    options: &CatchUpOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<CatchUp, ProjectionError> {
    let from = read_checkpoint(projector.kv().as_ref())?;
    let until = options.until.unwrap_or_else(|| store.head_position());
    if from >= until {
        return Ok(CatchUp { from, to: from });
    }
    let chunk = options.chunk_events.max(1);
    let as_of = options.as_of;
    let (sender, mut receiver) =
        tokio::sync::mpsc::channel::<Result<(Vec<Decoded>, u64), ProjectionError>>(2);
    let reader = tokio::spawn(async move {
        let mut position = from;
        while position < until {
            let want = usize::try_from(until - position)
                .unwrap_or(usize::MAX)
                .min(chunk);
            let records = match store.read_all(position, want).await {
                Ok(records) => records,
                Err(error) => {
                    let _ = sender.send(Err(error.into())).await;
                    return;
                }
            };
            if records.is_empty() {
                let _ = sender
                    .send(Err(ProjectionError::Models(format!(
                        "the store ends at {position}, before {until}"
                    ))))
                    .await;
                return;
            }
            let next = position + records.len() as u64;
            let decoded = tokio::task::spawn_blocking(move || {
                let mut out = Vec::with_capacity(records.len());
                for record in records {
                    let decoded = decode(record)?;
                    if as_of.is_none_or(|t| decoded.event.at() <= t) {
                        out.push(decoded);
                    }
                }
                Ok(out)
            })
            .await
            .unwrap_or_else(|error| {
                Err(ProjectionError::Models(format!("decoder failed: {error}")))
            });
            let failed = decoded.is_err();
            if sender
                .send(decoded.map(|events| (events, next)))
                .await
                .is_err()
                || failed
            {
                return;
            }
            position = next;
        }
    });
    // The writer stage: applies the folded batches in order, one batch behind the folding.
    let (batches, pending) = std::sync::mpsc::sync_channel::<(Vec<Write>, Retired, u64)>(1);
    let writer = {
        let kv = projector.kv().clone();
        tokio::task::spawn_blocking(move || -> Result<(u64, u64), ProjectionError> {
            let (mut written_to, mut write_nanos) = (from, 0);
            for (writes, retired, next) in pending {
                let started = std::time::Instant::now();
                kv.apply(writes)?;
                drop(retired);
                write_nanos += nanos(started.elapsed());
                written_to = next;
            }
            Ok((written_to, write_nanos))
        })
    };
    let mut folded: Result<(), ProjectionError> = Ok(());
    while let Some(message) = receiver.recv().await {
        let (events, next) = match message {
            Ok(chunk) => chunk,
            Err(error) => {
                folded = Err(error);
                break;
            }
        };
        let placeholder = Projector::new(projector.kv().clone());
        let mut owned = std::mem::replace(projector, placeholder);
        let batches = batches.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let result = owned
                .fold_chunk(&events, next)
                .and_then(|(writes, retired)| {
                    batches
                        .send((writes, retired, next))
                        .map_err(|_| ProjectionError::Models("the model writer stopped".into()))
                });
            (result, owned)
        })
        .await;
        let (result, returned) = match joined {
            Ok(done) => done,
            Err(error) => {
                folded = Err(ProjectionError::Models(format!(
                    "projector failed: {error}"
                )));
                break;
            }
        };
        *projector = returned;
        if let Err(error) = result {
            folded = Err(error);
            break;
        }
        progress(next - from, until - from);
    }
    drop(batches);
    drop(receiver);
    let _ = reader.await;
    let written = writer
        .await
        .map_err(|error| ProjectionError::Models(format!("model writer failed: {error}")))?;
    // A write error explains a fold error ("the model writer stopped"): report it first.
    let (position, write_nanos) = written?;
    folded?;
    projector.write_nanos += write_nanos;
    projector.kv().flush()?;
    Ok(CatchUp { from, to: position })
}
