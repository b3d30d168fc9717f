//! Where read models live: an ordered key-value space, on sled (the live models) or in memory
//! (as-of views, scratch rebuilds in tests).

use crate::models::{decode_record, TASK_PREFIX};
use crate::{ProjectionError, TaskRecord};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;
use taskledger_domain::TaskId;

/// One write of a batch: a value to put, or `None` to delete.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// An ordered key-value space. `apply` is atomic: all of a batch or none of it.
pub trait Kv: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError>;
    /// Visits the entries starting with `prefix` whose key is ≥ `from`, in key order, until the
    /// visitor returns `false`.
    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), ProjectionError>;
    fn apply(&self, writes: Vec<Write>) -> Result<(), ProjectionError>;
    /// Removes everything.
    fn clear(&self) -> Result<(), ProjectionError>;
    /// Makes the applied batches durable (the checkpoint with them).
    fn flush(&self) -> Result<(), ProjectionError>;
}

/// A scan visitor that can fail: `Ok(false)` stops, `Err` stops and is returned.
pub type TryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, ProjectionError> + 'a;

/// [`Kv::scan`] for a visitor that can fail: the first error stops the scan and is returned.
pub fn try_scan(
    kv: &dyn Kv,
    prefix: &[u8],
    from: &[u8],
    visit: &mut TryVisitor<'_>,
) -> Result<(), ProjectionError> {
    let mut failure = None;
    kv.scan(prefix, from, &mut |key, value| match visit(key, value) {
        Ok(go_on) => go_on,
        Err(error) => {
            failure = Some(error);
            false
        }
    })?;
    failure.map_or(Ok(()), Err)
}

/// Visits every task record of the models, in taskId order.
pub fn for_each_task(
    kv: &dyn Kv,
    visit: &mut dyn FnMut(TaskId, TaskRecord),
) -> Result<(), ProjectionError> {
    let prefix = [TASK_PREFIX];
    try_scan(kv, &prefix, &prefix, &mut |key, value| {
        let stream = String::from_utf8_lossy(&key[1..]);
        let record = decode_record(&stream, value)?;
        let task_id = TaskId::parse(&stream)
            .map_err(|problem| ProjectionError::Models(format!("stream {stream:?}: {problem}")))?;
        visit(task_id, record);
        Ok(true)
    })
}

/// The live models: one sled tree. Batches are atomic; a crash keeps a prefix of them, and each
/// carries its checkpoint, so the models never run ahead of or behind their checkpoint.
pub struct SledKv {
    db: sled::Db,
}

impl SledKv {
    pub fn open(
        path: &std::path::Path,
        cache_capacity_bytes: u64,
    ) -> Result<SledKv, ProjectionError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        Ok(SledKv { db })
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        Ok(self.db.get(key)?.map(|value| value.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), ProjectionError> {
        let start = if from > prefix { from } else { prefix };
        for entry in self.db.range(start..) {
            let (key, value) = entry?;
            if !key.starts_with(prefix) || !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, writes: Vec<Write>) -> Result<(), ProjectionError> {
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        Ok(self.db.apply_batch(batch)?)
    }

    fn clear(&self) -> Result<(), ProjectionError> {
        self.db.clear()?;
        Ok(())
    }

    fn flush(&self) -> Result<(), ProjectionError> {
        self.db.flush()?;
        Ok(())
    }
}

/// Models in a `BTreeMap`.
#[derive(Default)]
pub struct MemoryKv {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryKv {
    pub fn new() -> MemoryKv {
        MemoryKv::default()
    }
}

fn poisoned() -> ProjectionError {
    ProjectionError::Models("in-memory models lock poisoned".into())
}

impl Kv for MemoryKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        Ok(self.map.read().map_err(|_| poisoned())?.get(key).cloned())
    }

    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), ProjectionError> {
        let start = if from > prefix { from } else { prefix };
        let map = self.map.read().map_err(|_| poisoned())?;
        for (key, value) in map.range::<[u8], _>((Bound::Included(start), Bound::Unbounded)) {
            if !key.starts_with(prefix) || !visit(key, value) {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, writes: Vec<Write>) -> Result<(), ProjectionError> {
        let mut map = self.map.write().map_err(|_| poisoned())?;
        for (key, value) in writes {
            match value {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
        Ok(())
    }

    fn clear(&self) -> Result<(), ProjectionError> {
        self.map.write().map_err(|_| poisoned())?.clear();
        Ok(())
    }

    fn flush(&self) -> Result<(), ProjectionError> {
        Ok(())
    }
}
