//! The projection runner: follows the store's global order and applies each event to every read
//! model. A chunk of events is applied in memory, then all the models' changes and the new
//! checkpoint are written in one atomic batch, so after a crash the models resume from their
//! checkpoint with nothing applied twice or skipped.

use crate::kv::{Kv, Write};
use crate::models::*;
use crate::record::{rejection_index, TaskRecord};
use crate::ProjectionError;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use taskledger_domain::event::RejectionReason;
use taskledger_domain::{Event, TaskId, Timestamp};
use taskledger_store::{EventStore, RecordedEvent};

/// An event decoded for projection, with where it sits.
pub struct Decoded {
    pub stream: String,
    pub version: u64,
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
        event,
    })
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
}

impl Projector {
    pub fn new(kv: Arc<dyn Kv>) -> Projector {
        Projector { kv, stats: None }
    }

    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    fn load_stats(&mut self) -> Result<&mut BTreeMap<String, QueueStats>, ProjectionError> {
        if self.stats.is_none() {
            let mut stats = BTreeMap::new();
            let mut failure = None;
            self.kv.scan(
                &[STATS_PREFIX],
                &[],
                &mut |key, value| match decode_json::<QueueStats>(key, value) {
                    Ok(queue_stats) => {
                        stats.insert(String::from_utf8_lossy(&key[1..]).into_owned(), queue_stats);
                        true
                    }
                    Err(error) => {
                        failure = Some(error);
                        false
                    }
                },
            )?;
            if let Some(error) = failure {
                return Err(error);
            }
            self.stats = Some(stats);
        }
        Ok(self.stats.get_or_insert_with(BTreeMap::new))
    }

    /// Applies `events` (consecutive in global order) and moves the checkpoint to
    /// `next_position`, in one atomic write.
    pub fn apply_chunk(
        &mut self,
        events: &[Decoded],
        next_position: u64,
    ) -> Result<(), ProjectionError> {
        let kv = self.kv.clone();
        let stats = self.load_stats()?;
        let mut records: HashMap<&str, TaskRecord> = HashMap::new();
        let mut index: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let mut dirty_queues: BTreeSet<String> = BTreeSet::new();
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for decoded in events {
            let stream = decoded.stream.as_str();
            if !records.contains_key(stream) {
                // The first event of a stream (version 0) needs no read: nothing is stored yet.
                let record = match decoded.version {
                    0 => TaskRecord::default(),
                    _ => match kv.get(&task_key(stream))? {
                        Some(bytes) => decode_record(stream, &bytes)?,
                        None => TaskRecord::default(),
                    },
                };
                records.insert(stream, record);
            }
            let record = records.get_mut(stream).expect("inserted above");
            let task_id = TaskId::parse(stream).map_err(|problem| {
                ProjectionError::Models(format!("stream {stream:?} is not a taskId: {problem}"))
            })?;
            let event = &decoded.event;
            let execution_id = event.execution_id();
            before.clear();
            after.clear();
            let old = record.execution(execution_id).map(|x| {
                index_entries(&task_id, x, &mut before);
                (x.queue.clone(), x.status)
            });
            let rejected_queue = match event {
                Event::ReportRejected(_) => Some(record.queue_of(execution_id, &task_id)),
                _ => None,
            };
            record.apply(event);
            let new = record.execution(execution_id).map(|x| {
                index_entries(&task_id, x, &mut after);
                (x.queue.clone(), x.status)
            });
            for (key, _) in &before {
                if !after.iter().any(|(k, _)| k == key) {
                    index.insert(key.clone(), None);
                }
            }
            for (key, value) in after.drain(..) {
                if !before.iter().any(|(k, v)| *k == key && *v == value) {
                    index.insert(key, Some(value));
                }
            }
            let mut bump = |queue: &str, change: &mut dyn FnMut(&mut QueueStats)| {
                dirty_queues.insert(queue.to_owned());
                change(stats.entry(queue.to_owned()).or_default());
            };
            if old != new {
                if let Some((queue, status)) = &old {
                    bump(queue, &mut |s| {
                        *s.count_mut(*status) = s.count_mut(*status).saturating_sub(1)
                    });
                }
                if let Some((queue, status)) = &new {
                    bump(queue, &mut |s| *s.count_mut(*status) += 1);
                }
            }
            match (event, &new) {
                (Event::ExecutionEnqueued(e), _) => bump(&e.queue, &mut |s| s.enqueued += 1),
                (Event::ExecutionSucceeded(e), Some((queue, _))) => bump(queue, &mut |s| {
                    s.succeeded += 1;
                    s.first_success_at = Some(s.first_success_at.map_or(e.at, |t| t.min(e.at)));
                    s.last_success_at = Some(s.last_success_at.map_or(e.at, |t| t.max(e.at)));
                }),
                (Event::ExecutionFailed(e), Some((queue, _))) => bump(queue, &mut |s| {
                    s.failures += 1;
                    *s.failures_by_category
                        .entry(e.category.clone())
                        .or_default() += 1;
                }),
                (Event::ReportRejected(e), _) => {
                    if let Some(queue) = &rejected_queue {
                        let name = RejectionReason::NAMES[rejection_index(&e.reason)];
                        bump(queue, &mut |s| {
                            *s.rejected.entry(name.to_owned()).or_default() += 1
                        });
                    }
                }
                _ => {}
            }
        }
        let mut writes: Vec<Write> =
            Vec::with_capacity(records.len() + index.len() + dirty_queues.len() + 1);
        for (stream, record) in &records {
            writes.push((task_key(stream), Some(encode_record(record))));
        }
        writes.extend(index);
        for queue in dirty_queues {
            if let Some(queue_stats) = stats.get(&queue) {
                let bytes = serde_json::to_vec(queue_stats).expect("stats always serialize");
                writes.push((stats_key(&queue), Some(bytes)));
            }
        }
        writes.push((
            CHECKPOINT_KEY.to_vec(),
            Some(next_position.to_be_bytes().to_vec()),
        ));
        kv.apply(writes)
    }
}

/// Settings of a catch-up run.
#[derive(Debug, Clone)]
pub struct CatchUpOptions {
    /// Events per chunk (one atomic model write each). Large chunks touch each task once and
    /// amortise sled's per-batch cost; 65,536 events keep a chunk's working set to tens of MB.
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
pub async fn catch_up(
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
    let mut position = from;
    while let Some(message) = receiver.recv().await {
        let (events, next) = message?;
        let mut owned = std::mem::replace(projector, Projector::new(projector.kv().clone()));
        let (result, returned) = tokio::task::spawn_blocking(move || {
            let result = owned.apply_chunk(&events, next);
            (result, owned)
        })
        .await
        .map_err(|error| ProjectionError::Models(format!("projector failed: {error}")))?;
        *projector = returned;
        result?;
        position = next;
        progress(position - from, until - from);
    }
    let _ = reader.await;
    projector.kv().flush()?;
    Ok(CatchUp { from, to: position })
}
