//! Retention on the sled backend: moving whole streams into cold segments ([`crate::segment`]).
//!
//! [`SledStore::retain`] plans the move from the streams' hot index entries, writes the segment
//! (temporary name, fsync, rename, directory fsync) and hands the committer one [`Move`]. The
//! committer, in line with the commits so it never races one, registers the segment in the cold
//! index, then applies ONE atomic sled batch — every block holding a moved event rewritten with a
//! stub in its place (block format 4), the moved streams' `S` entries deleted, the segment
//! recorded under its meta key — and checkpoints (sled flushed and its files fsynced, the log
//! emptied) before it answers. A crash before the batch leaves a segment no key refers to
//! (ignored on open); after it, the checkpoint or sled's own recovery keeps the batch whole or
//! not at all, with every commit before it.

use super::{block_holding, cold_index, read_positions, Committer, Job, SledStore};
use crate::encoding::*;
use crate::segment::{self, Cold, ColdRef, Segment, SegmentSeal, SegmentWriter};
use std::path::Path;
use std::sync::{Arc, RwLock};
use taskledger_store::{check_stream_name, EventStore, RecordedEvent, Retained, StoreError};
use tokio::sync::oneshot;

/// Events read from the hot blocks per step of writing a segment (between progress reports).
const READ_STEP_EVENTS: usize = 16_384;

/// A failure injection point for the crash tests (`taskledger_store::failpoints`, only in a
/// build with the `failpoints` feature): `TASKLEDGER_FAILPOINT=<name>` aborts the process there
/// (as a power cut or SIGKILL would stop it). Names: `retain-before-batch` (the segment is
/// written, nothing refers to it yet), `retain-after-batch` (sled holds the batch, not yet
/// checkpointed).
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn failpoint(name: &str) {
    #[cfg(feature = "failpoints")]
    if taskledger_store::failpoints::armed(name) {
        eprintln!("taskledger: failpoint {name}: aborting");
        std::process::abort();
    }
}

/// A retention move for the committer: the segment (written and synced), the `S` entries its
/// streams leave (key and value, checked unchanged), and the moved positions (ascending).
pub(super) struct Move {
    segment: Arc<Segment>,
    deletes: Vec<(Vec<u8>, Vec<u8>)>,
    positions: Vec<u64>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// One stream's hot part, as planned.
struct Planned {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    positions: Vec<u64>,
}

/// Loads the cold index of the segments sled refers to; sweeps the segments' directory.
pub(super) fn open_cold(db: &sled::Db, store_dir: &Path) -> Result<Cold, StoreError> {
    let dir = store_dir.join(segment::SEGMENTS_DIR);
    let mut cold = Cold::default();
    for entry in db.scan_prefix(segment::SEGMENT_META_PREFIX) {
        let (key, value) = entry?;
        let id = segment::meta_key_id(&key)?;
        let seal = SegmentSeal::decode(id, &value)?;
        cold.insert(Arc::new(Segment::open(&dir, id, seal)?));
    }
    segment::sweep(&dir, &cold)?;
    Ok(cold)
}

/// `read_stream` of a stream with cold parts: the cold versions and the hot ones merged by
/// version (a version in both, during a move, is the same event: the cold copy is read).
pub(super) fn read_stream_merged(
    store: &SledStore,
    stream: &str,
    from_version: u64,
    max: usize,
    cold: Vec<(u64, u64, u32)>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut versions: std::collections::BTreeMap<u64, (u64, Option<u32>)> = cold
        .into_iter()
        .filter(|(version, _, _)| *version >= from_version)
        .map(|(version, position, segment)| (version, (position, Some(segment))))
        .collect();
    let durable = store.head_position();
    for entry in store.db.scan_prefix(stream_prefix(stream)) {
        let (key, value) = entry?;
        let first_version = stream_key_version(&key)?;
        for (offset, position) in decode_positions(stream, &value)?.into_iter().enumerate() {
            let version = first_version + offset as u64;
            if version >= from_version && position < durable {
                versions.entry(version).or_insert((position, None));
            }
        }
    }
    let mut out = Vec::new();
    let mut refs = Vec::new();
    let (mut hot, mut hot_slots) = (Vec::new(), Vec::new());
    for (index, (_, (position, segment))) in versions.into_iter().take(max).enumerate() {
        match segment {
            Some(segment) => refs.push(ColdRef {
                index,
                position,
                segment,
            }),
            None => {
                hot.push(position);
                hot_slots.push(index);
            }
        }
        out.push(placeholder(position));
    }
    for (slot, event) in hot_slots
        .into_iter()
        .zip(read_positions(&store.db, &store.cold, &hot)?)
    {
        out[slot] = event;
    }
    cold_index(&store.cold).fill(&mut out, &refs)?;
    Ok(out)
}

impl SledStore {
    /// Events held in cold segments.
    pub fn cold_events(&self) -> u64 {
        cold_index(&self.cold).events()
    }

    /// Moves every hot event of `streams` into cold segments ([`taskledger_store::EventStore::retain`]).
    /// Streams without hot events (already moved, or unknown) are skipped; events at or past the
    /// durable head stay hot (a later run moves them).
    pub async fn retain(
        &self,
        streams: Vec<String>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Retained, StoreError> {
        let _one_at_a_time = self.retaining.lock().await;
        let hot_bytes_before = self.size_on_disk();
        let mut streams = streams;
        streams.sort_unstable();
        streams.dedup();
        let durable = self.head_position();
        let mut planned = Vec::new();
        for stream in &streams {
            check_stream_name(stream)?;
            let mut part = Planned {
                entries: Vec::new(),
                positions: Vec::new(),
            };
            for entry in self.db.scan_prefix(stream_prefix(stream)) {
                let (key, value) = entry?;
                let positions = decode_positions(stream, &value)?;
                // A prefix of the stream's hot versions, all durable: the cold part of a stream
                // is always a run of versions before its hot part.
                if positions.iter().any(|&position| position >= durable) {
                    break;
                }
                part.positions.extend_from_slice(&positions);
                part.entries.push((key.to_vec(), value.to_vec()));
            }
            if !part.positions.is_empty() {
                planned.push(part);
            }
        }
        let total: u64 = planned.iter().map(|p| p.positions.len() as u64).sum();
        let mut retained = Retained {
            streams: planned.len() as u64,
            hot_bytes_before,
            ..Retained::default()
        };
        progress(0, total);
        // Whole streams per segment, each segment at most SEGMENT_EVENTS_MAX events (one stream
        // larger than that gets a segment of its own).
        let mut groups: Vec<Vec<Planned>> = Vec::new();
        let mut in_group = 0usize;
        for part in planned {
            if groups.is_empty() || in_group + part.positions.len() > segment::SEGMENT_EVENTS_MAX {
                groups.push(Vec::new());
                in_group = 0;
            }
            in_group += part.positions.len();
            if let Some(group) = groups.last_mut() {
                group.push(part);
            }
        }
        let dir = self.path.join(segment::SEGMENTS_DIR);
        for group in groups {
            let id = {
                let highest_on_disk = segment::sweep(&dir, &cold_index(&self.cold))?;
                cold_index(&self.cold).next_id().max(highest_on_disk + 1)
            };
            let mut positions: Vec<u64> = group
                .iter()
                .flat_map(|part| part.positions.iter().copied())
                .collect();
            positions.sort_unstable();
            let deletes: Vec<_> = group.into_iter().flat_map(|part| part.entries).collect();
            let mut writer = SegmentWriter::create(&dir, id)?;
            for step in positions.chunks(READ_STEP_EVENTS) {
                let moved = step.len() as u64;
                let (db, cold, step) = (self.db.clone(), self.cold.clone(), step.to_vec());
                let handed = tokio::task::spawn_blocking(move || {
                    let written = write_step(&db, &cold, &step, &mut writer);
                    (writer, written)
                })
                .await
                .map_err(|e| StoreError::Io(format!("the segment writer stopped: {e}")))?;
                writer = handed.0;
                handed.1?;
                retained.events += moved;
                progress(retained.events, total);
            }
            let segment = tokio::task::spawn_blocking(move || writer.finish())
                .await
                .map_err(|e| StoreError::Io(format!("the segment writer stopped: {e}")))??;
            failpoint("retain-before-batch");
            retained.segment_bytes += segment.seal.file_bytes;
            retained.segments.push(segment.path.clone());
            let (reply, answer) = oneshot::channel();
            let job = Move {
                segment: Arc::new(segment),
                deletes,
                positions,
                reply,
            };
            let sender = self
                .sender
                .lock()
                .map_err(|_| StoreError::Closed)?
                .clone()
                .ok_or(StoreError::Closed)?;
            sender
                .send(Job::Retain(job))
                .await
                .map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)??;
        }
        retained.hot_bytes_after = self.size_on_disk();
        Ok(retained)
    }
}

/// Reads the events at `positions` (ascending, all hot) and adds them to the segment.
fn write_step(
    db: &sled::Db,
    cold: &RwLock<Cold>,
    positions: &[u64],
    writer: &mut SegmentWriter,
) -> Result<(), StoreError> {
    let events = read_positions(db, cold, positions)?;
    if events.len() != positions.len() {
        return Err(StoreError::Corrupt {
            location: format!("positions {:?}..", positions.first()),
            detail: "indexed events missing from their blocks".into(),
        });
    }
    for event in &events {
        writer.push(event)?;
    }
    Ok(())
}

impl Committer {
    /// Applies a retention move (see the module docs) and answers it.
    pub(super) fn retain(&mut self, job: Move) {
        let Move {
            segment,
            deletes,
            positions,
            reply,
        } = job;
        if let Some(reason) = &self.poisoned {
            let _ = reply.send(Err(StoreError::Poisoned(reason.clone())));
            return;
        }
        let id = segment.id;
        // In the cold index before any stub refers to it, and before any hot entry is gone.
        self.cold
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(segment.clone());
        let batch = match self.retention_batch(&segment, &deletes, &positions) {
            Ok(batch) => batch,
            Err(error) => {
                self.cold
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(id);
                let _ = reply.send(Err(error));
                return;
            }
        };
        // A checkpoint follows in line: none may be running beside it.
        let ended = self.wal.wait_checkpoint();
        self.checkpointed(ended);
        if let Some(reason) = &self.poisoned {
            let _ = reply.send(Err(StoreError::Poisoned(reason.clone())));
            return;
        }
        let started = std::time::Instant::now();
        let written = self
            .db
            .apply_batch(batch)
            .map_err(StoreError::from)
            .and_then(|()| {
                failpoint("retain-after-batch");
                self.wal.checkpoint(&self.db)
            });
        match written {
            Ok(()) => {
                self.checkpointed(Ok(Some(started.elapsed())));
                tracing::info!(
                    segment = %segment.path.display(),
                    events = positions.len(),
                    streams = segment.stream_count(),
                    "moved streams into a cold segment"
                );
                let _ = reply.send(Ok(()));
            }
            Err(error) => {
                // What reached the disk is unknown: like a failed commit, refuse further writes.
                let reason = error.to_string();
                tracing::error!(%reason, "retention's batch failed; the store refuses further writes");
                self.poison(reason);
                let _ = reply.send(Err(error));
            }
        }
    }

    /// The move's sled batch: the blocks of `positions` with stubs, the `S` entries deleted, the
    /// segment recorded.
    fn retention_batch(
        &self,
        segment: &Segment,
        deletes: &[(Vec<u8>, Vec<u8>)],
        positions: &[u64],
    ) -> Result<sled::Batch, StoreError> {
        let mut batch = sled::Batch::default();
        for (key, value) in deletes {
            // Written once by a commit, removed only by a move (one at a time): a change means
            // the plan is stale.
            if self.db.get(key)?.as_deref() != Some(value.as_slice()) {
                return Err(StoreError::Corrupt {
                    location: format!("stream index entry {:?}", String::from_utf8_lossy(key)),
                    detail: "changed while a retention was being written".into(),
                });
            }
            batch.remove(key.as_slice());
        }
        let mut next = 0;
        while next < positions.len() {
            let position = positions[next];
            let (first, value) = block_holding(&self.db, position)?;
            let mut events = Vec::new();
            let mut stubs = Vec::new();
            let count = decode_block(first, &value, first, &mut events, &mut stubs, usize::MAX)?;
            let end = first + count;
            if position >= end {
                return Err(StoreError::Corrupt {
                    location: format!("position {position}"),
                    detail: "indexed beyond the end of its log block".into(),
                });
            }
            let mut slots: Vec<Slot> = events.into_iter().map(Slot::Event).collect();
            for stub in stubs {
                slots[stub.index] = Slot::Cold(stub.segment);
            }
            while next < positions.len() && positions[next] < end {
                let at = (positions[next] - first) as usize;
                if !matches!(slots.get(at), Some(Slot::Event(_))) {
                    return Err(StoreError::Corrupt {
                        location: format!("position {}", positions[next]),
                        detail: "to be moved, but not a hot event of its block".into(),
                    });
                }
                slots[at] = Slot::Cold(segment.id);
                next += 1;
            }
            batch.insert(&log_key(first), encode_stubbed_block(&slots));
        }
        batch.insert(segment::meta_key(segment.id), segment.seal.encode());
        Ok(batch)
    }
}

/// Where [`SledStore::compact`] builds the new sled files, inside the store's directory.
const COMPACTING_DIR: &str = "compacting";
/// Written (and synced) in [`COMPACTING_DIR`] once the new files are whole: the names to move in.
const COMPACTED_MARKER: &str = "COMPLETE";
/// Entries copied per sled batch while compacting.
const COMPACT_BATCH_ENTRIES: usize = 8192;

/// What [`SledStore::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

fn sled_files(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)
        .map_err(|e| StoreError::Io(format!("cannot list {}: {e}", dir.display())))?
    {
        let entry =
            entry.map_err(|e| StoreError::Io(format!("cannot list {}: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "conf" || name == "db" || name == "blobs" || name.starts_with("snap.") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn remove_path(path: &Path) -> Result<(), StoreError> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StoreError::Io(format!(
            "cannot remove {}: {error}",
            path.display()
        ))),
    }
}

/// Finishes or undoes a compaction a crash interrupted (before sled opens the directory): with
/// the marker, the new files are whole and are moved in (again: each move is idempotent); without
/// it, the half-built copy is dropped and the old files, untouched, stay.
pub(super) fn recover_compaction(store_dir: &Path) -> Result<(), StoreError> {
    let staging = store_dir.join(COMPACTING_DIR);
    if !staging.exists() {
        return Ok(());
    }
    let marker = staging.join(COMPACTED_MARKER);
    let names = match std::fs::read_to_string(&marker) {
        Ok(text) => text.lines().map(str::to_owned).collect::<Vec<_>>(),
        Err(_) => return remove_path(&staging),
    };
    for old in sled_files(store_dir)? {
        if !names.contains(&old) {
            remove_path(&store_dir.join(&old))?;
        }
    }
    for name in &names {
        let from = staging.join(name);
        if from.exists() {
            let to = store_dir.join(name);
            if to.is_dir() {
                remove_path(&to)?;
            }
            std::fs::rename(&from, &to).map_err(|e| {
                StoreError::Io(format!("cannot move {} into place: {e}", from.display()))
            })?;
        }
    }
    segment::sync_dir(store_dir)?;
    remove_path(&staging)?;
    tracing::info!(dir = %store_dir.display(), "installed the compacted hot store");
    Ok(())
}

impl SledStore {
    /// Rewrites the hot store's sled files with only their live entries, offline (no store open
    /// on `store_dir`). sled 0.34 is log-structured: the blocks retention rewrote leave their
    /// old versions behind, which its cleaner reuses for later writes but never gives back to
    /// the file system; this gives them back. The copy is built beside the live files and moved
    /// in after a synced marker, so a crash at any point leaves the old files or the new ones.
    pub fn compact(config: crate::SledConfig) -> Result<Compacted, StoreError> {
        // Opening replays the log into sled and closing checkpoints it: sled holds everything.
        let store = SledStore::open(config.clone())?;
        let bytes_before = store.size_on_disk();
        store.close()?;
        drop(store);
        let dir = &config.path;
        let staging = dir.join(COMPACTING_DIR);
        remove_path(&staging)?;
        {
            let old = sled::Config::new()
                .path(dir)
                .cache_capacity(config.cache_capacity_bytes)
                .open()?;
            let new = sled::Config::new()
                .path(&staging)
                .cache_capacity(config.cache_capacity_bytes)
                .mode(sled::Mode::HighThroughput)
                .flush_every_ms(None)
                .open()?;
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            for entry in old.iter() {
                let (key, value) = entry?;
                batch.insert(key, value);
                in_batch += 1;
                if in_batch >= COMPACT_BATCH_ENTRIES {
                    new.apply_batch(std::mem::take(&mut batch))?;
                    in_batch = 0;
                }
            }
            new.apply_batch(batch)?;
            new.flush()?;
            if old.len() != new.len() {
                return Err(StoreError::Io(format!(
                    "compacting {}: copied {} entries of {}",
                    dir.display(),
                    new.len(),
                    old.len()
                )));
            }
        }
        let names = sled_files(&staging)?;
        for name in &names {
            let path = staging.join(name);
            if path.is_file() {
                std::fs::File::open(&path)
                    .and_then(|file| file.sync_all())
                    .map_err(|e| StoreError::Io(format!("cannot fsync {}: {e}", path.display())))?;
            }
        }
        let marker = staging.join(COMPACTED_MARKER);
        std::fs::write(&marker, names.join("\n"))
            .and_then(|()| std::fs::File::open(&marker)?.sync_all())
            .map_err(|e| StoreError::Io(format!("cannot write {}: {e}", marker.display())))?;
        segment::sync_dir(&staging)?;
        failpoint("compact-before-swap");
        recover_compaction(dir)?;
        let store = SledStore::open(config)?;
        let bytes_after = store.size_on_disk();
        store.close()?;
        Ok(Compacted {
            bytes_before,
            bytes_after,
        })
    }
}
