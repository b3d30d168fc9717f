//! Where read models live: an ordered key-value space, on redb (the live models) or in memory
//! (as-of views, scratch rebuilds in tests).

use crate::models::{decode_record, parse_stream, TASK_PREFIX};
use crate::models_io::{HandleBackend, Health, Watched};
use crate::{ProjectionError, TaskRecord};
use redb::ReadableDatabase;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use taskledger_domain::TaskId;
use taskledger_store::{LogHandle, LogIo, RealLogIo};

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
    /// Makes the models usable again after one of their operations failed (a model follower
    /// calls it before it tries again).
    fn recover(&self) -> Result<Recovery, ProjectionError> {
        Ok(Recovery::Kept)
    }
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
        visit(parse_stream(&stream)?, record);
        Ok(true)
    })
}

/// The live models: one table of a redb database (a copy-on-write B-tree in one file,
/// `models.redb`). Every batch is one write transaction committed durably (fsync), so a crash
/// keeps a prefix of the batches; each carries its checkpoint, so the models never run ahead of or
/// behind their checkpoint. Commits record the allocator state (redb's quick repair), so reopening
/// after a crash does not walk the whole file.
///
/// Why not sled, which holds the ledger: the models are derived data whose big job is a rebuild
/// (about a million records written once each), and sled 0.34 copies a leaf node on every insert
/// (~10 µs per 550-byte record here, against ~4 µs for redb; BENCHMARKS.md).
pub struct RedbKv {
    /// The open database (`None` only after a [`Kv::recover`] that could not open it again).
    open: RwLock<Option<Open>>,
    place: Place,
    cache_bytes: usize,
}

/// An open database and what its file went through.
struct Open {
    db: redb::Database,
    health: Arc<Health>,
}

/// Where the models' file is.
enum Place {
    /// `models.redb` on the real file system, through redb's file backend (with its locks).
    File(PathBuf),
    /// A file of a [`LogIo`] (the models' fault simulation's disk).
    Device { io: Arc<dyn LogIo>, file: PathBuf },
}

impl Place {
    fn file(&self) -> &Path {
        match self {
            Place::File(file) | Place::Device { file, .. } => file,
        }
    }

    /// A plain handle of the file (beside redb's), for its length and for emptying it.
    fn handle(&self) -> std::io::Result<Box<dyn LogHandle>> {
        match self {
            Place::File(file) => RealLogIo.open(file),
            Place::Device { io, file } => io.open(file),
        }
    }
}

/// What [`Kv::recover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing to do (models in memory).
    Kept,
    /// The file was closed and opened again (redb's repair, and the integrity check, ran).
    Reopened,
    /// The file could not be trusted (`why`): the models start over, empty, from position 0.
    Recreated { why: String },
}

const MODELS_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("models");

/// The models' file inside their directory.
pub const MODELS_FILE: &str = "models.redb";

/// The layout of the records this build writes. postcard is not self-describing, so a record of
/// another layout would not decode, or decode wrong: models of another layout (or of none, from
/// before the marker) are cleared when opened, and the next catch-up replays them from the ledger
/// (they are derived data). 2: attempts may end `abandoned`, executions count their reclaims.
/// 3: the executionId index (`X`). 4: the ledger's running digest (`Mdigest`). 5: each
/// execution's and attempt's principal (who the ledger authenticated).
pub const MODELS_FORMAT: u32 = 5;
/// Where the layout is recorded (an `M` key: not part of any model's digest).
pub const MODELS_FORMAT_KEY: &[u8] = b"Mformat";

/// Where a new `models.redb` is made whole before it is renamed in.
const STAGING_FILE: &str = "models.redb.creating";

fn redb_error(error: impl Into<redb::Error>) -> ProjectionError {
    ProjectionError::Models(error.into().to_string())
}

/// A write transaction of the models: committed durably, with the allocator state (quick repair).
fn begin_write(db: &redb::Database) -> Result<redb::WriteTransaction, ProjectionError> {
    let mut transaction = db.begin_write().map_err(redb_error)?;
    transaction.set_quick_repair(true);
    Ok(transaction)
}

fn io_error(path: &Path, error: std::io::Error) -> ProjectionError {
    ProjectionError::Models(format!("{}: {error}", path.display()))
}

fn lock_poisoned() -> ProjectionError {
    ProjectionError::Models("the read models' lock is poisoned".into())
}

/// Empties the table and records this build's layout in it, in one transaction.
fn reset_table(db: &redb::Database) -> Result<(), ProjectionError> {
    let transaction = begin_write(db)?;
    transaction.delete_table(MODELS_TABLE).map_err(redb_error)?;
    transaction
        .open_table(MODELS_TABLE)
        .map_err(redb_error)?
        .insert(MODELS_FORMAT_KEY, MODELS_FORMAT.to_be_bytes().as_slice())
        .map_err(redb_error)?;
    transaction.commit().map_err(redb_error)
}

/// Opens the database at `place` (creating it in an empty file). With `check`, redb checks every
/// page's checksum first: damage is [`ProjectionError::ModelsDamaged`], where a plain open may
/// serve it, wrong, or panic (measured in tests/models_rot.rs).
fn connect(place: &Place, cache_bytes: usize, check: bool) -> Result<Open, ProjectionError> {
    let file = place.file();
    let health = Arc::new(Health::default());
    let builder = {
        let mut builder = redb::Database::builder();
        builder
            .set_cache_size(cache_bytes)
            .set_check_integrity_on_open(check);
        builder
    };
    // redb 4.6 promises an error rather than a panic with the check on; a panic is caught all
    // the same (the file is what is wrong, never the caller).
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match place {
        Place::File(file) => {
            let handle = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(file)?;
            let inner = redb::backends::FileBackend::new(handle)?;
            builder.create_with_backend(Watched {
                inner,
                health: health.clone(),
            })
        }
        Place::Device { io, file } => builder.create_with_backend(Watched {
            inner: HandleBackend(io.open(file)?),
            health: health.clone(),
        }),
    }));
    let damaged = |detail: String| ProjectionError::ModelsDamaged {
        file: file.display().to_string(),
        detail,
    };
    let db = match opened {
        Err(_) => return Err(damaged("the integrity check panicked".into())),
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)))) => {
            return Err(damaged(detail))
        }
        Ok(Err(error)) => {
            return Err(ProjectionError::Models(format!(
                "{}: {}",
                file.display(),
                redb::Error::from(error)
            )))
        }
    };
    let open = Open { db, health };
    let format = get(&open.db, MODELS_FORMAT_KEY)?
        .and_then(|bytes| <[u8; 4]>::try_from(bytes.as_slice()).ok())
        .map(u32::from_be_bytes);
    if format != Some(MODELS_FORMAT) {
        if format.is_some() {
            tracing::warn!(
                file = %file.display(),
                found = ?format,
                expected = MODELS_FORMAT,
                "read models of another layout: clearing them to replay them from the ledger"
            );
        }
        reset_table(&open.db)?;
    }
    Ok(open)
}

fn get(db: &redb::Database, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
    let transaction = db.begin_read().map_err(redb_error)?;
    let table = match transaction.open_table(MODELS_TABLE) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(redb_error(error)),
    };
    let value = table.get(key).map_err(redb_error)?;
    Ok(value.map(|value| value.value().to_vec()))
}

impl RedbKv {
    /// Opens (or creates) the models in directory `dir`, with a page cache of
    /// `cache_capacity_bytes`. A new database is made whole in a staging file and then renamed
    /// in, so a crash while creating never leaves a half-made `models.redb`.
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<RedbKv, ProjectionError> {
        RedbKv::open_checked(dir, cache_capacity_bytes, false)
    }

    /// [`RedbKv::open`], after redb has checked the checksum of every page of the file (one read
    /// of the whole file): a byte changed outside redb is
    /// [`ProjectionError::ModelsDamaged`], where a plain open may serve it, wrong, or panic
    /// (measured in tests/models_rot.rs).
    pub fn open_verified(dir: &Path, cache_capacity_bytes: u64) -> Result<RedbKv, ProjectionError> {
        RedbKv::open_checked(dir, cache_capacity_bytes, true)
    }

    fn open_checked(
        dir: &Path,
        cache_capacity_bytes: u64,
        check: bool,
    ) -> Result<RedbKv, ProjectionError> {
        let file = dir.join(MODELS_FILE);
        let cache_bytes = usize::try_from(cache_capacity_bytes).unwrap_or(usize::MAX);
        if !file.exists() {
            std::fs::create_dir_all(dir).map_err(|error| io_error(dir, error))?;
            let staging = dir.join(STAGING_FILE);
            if staging.exists() {
                std::fs::remove_file(&staging).map_err(|error| io_error(&staging, error))?;
            }
            let db = redb::Database::builder()
                .set_cache_size(cache_bytes)
                .create(&staging)
                .map_err(redb_error)?;
            reset_table(&db)?;
            drop(db);
            std::fs::rename(&staging, &file).map_err(|error| io_error(&file, error))?;
            std::fs::File::open(dir)
                .and_then(|handle| handle.sync_all())
                .map_err(|error| io_error(dir, error))?;
        }
        let place = Place::File(file);
        let open = connect(&place, cache_bytes, check)?;
        Ok(RedbKv {
            open: RwLock::new(Some(open)),
            place,
            cache_bytes,
        })
    }

    /// The models in file `file` of `io` (the models' fault simulation's disk), created if the
    /// file is empty, checked page by page when not.
    pub fn open_on(
        io: Arc<dyn LogIo>,
        file: &Path,
        cache_capacity_bytes: u64,
    ) -> Result<RedbKv, ProjectionError> {
        let place = Place::Device {
            io,
            file: file.to_owned(),
        };
        let cache_bytes = usize::try_from(cache_capacity_bytes).unwrap_or(usize::MAX);
        let open = connect(&place, cache_bytes, true)?;
        Ok(RedbKv {
            open: RwLock::new(Some(open)),
            place,
            cache_bytes,
        })
    }

    /// Whether `dir` holds something other than models this build can open: an older build kept
    /// them in sled (its files, and no `models.redb`). A staging file alone is ours: `open`
    /// starts it over.
    pub fn is_foreign(dir: &Path) -> bool {
        !dir.join(MODELS_FILE).exists()
            && std::fs::read_dir(dir).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|entry| entry.file_name() != STAGING_FILE)
            })
    }

    pub fn size_on_disk(&self) -> u64 {
        self.place
            .handle()
            .and_then(|handle| handle.size())
            .unwrap_or(0)
    }

    /// Runs `work` on the open database.
    fn with<T>(
        &self,
        work: impl FnOnce(&redb::Database) -> Result<T, ProjectionError>,
    ) -> Result<T, ProjectionError> {
        let open = self.open.read().map_err(|_| lock_poisoned())?;
        match open.as_ref() {
            Some(open) => work(&open.db),
            None => Err(ProjectionError::Models(format!(
                "{} is closed: it could not be opened again after an error",
                self.place.file().display()
            ))),
        }
    }

    /// Empties the file and creates the models anew in it (derived data: the next catch-up
    /// replays them from position 0).
    fn recreate(&self) -> Result<Open, ProjectionError> {
        self.place
            .handle()
            .and_then(|handle| {
                handle.set_len(0)?;
                handle.sync_all()
            })
            .map_err(|error| io_error(self.place.file(), error))?;
        connect(&self.place, self.cache_bytes, false)
    }
}

impl Kv for RedbKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        self.with(|db| get(db, key))
    }

    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), ProjectionError> {
        let start = if from > prefix { from } else { prefix };
        self.with(|db| {
            let transaction = db.begin_read().map_err(redb_error)?;
            let table = transaction.open_table(MODELS_TABLE).map_err(redb_error)?;
            for entry in table.range(start..).map_err(redb_error)? {
                let (key, value) = entry.map_err(redb_error)?;
                if !key.value().starts_with(prefix) || !visit(key.value(), value.value()) {
                    break;
                }
            }
            Ok(())
        })
    }

    fn apply(&self, writes: Vec<Write>) -> Result<(), ProjectionError> {
        self.with(|db| {
            let transaction = begin_write(db)?;
            {
                let mut table = transaction.open_table(MODELS_TABLE).map_err(redb_error)?;
                for (key, value) in writes {
                    match value {
                        Some(value) => table.insert(key.as_slice(), value.as_slice()),
                        None => table.remove(key.as_slice()),
                    }
                    .map_err(redb_error)?;
                }
            }
            transaction.commit().map_err(redb_error)
        })
    }

    fn clear(&self) -> Result<(), ProjectionError> {
        self.with(reset_table)
    }

    /// Every batch is already durable when `apply` returns.
    fn flush(&self) -> Result<(), ProjectionError> {
        Ok(())
    }

    /// After an I/O error, redb refuses every later write (and every read that reaches the file)
    /// until the database is opened again (`PreviousIo`): this closes it and opens it again, with redb's repair and the integrity
    /// check. A file whose sync failed (its bytes on the device unknown) or that fails the check
    /// is emptied and the models start over from position 0, as they would be rebuilt.
    fn recover(&self) -> Result<Recovery, ProjectionError> {
        let mut open = self.open.write().map_err(|_| lock_poisoned())?;
        let sync_failed = open.as_ref().is_some_and(|open| open.health.sync_failed());
        // Closed first: redb's file lock allows one open database per file.
        drop(open.take());
        let file = self.place.file().display().to_string();
        let (reopened, recovery) = if sync_failed {
            let why = format!("a sync of {file} failed: what its device holds is unknown");
            (self.recreate()?, Recovery::Recreated { why })
        } else {
            match connect(&self.place, self.cache_bytes, true) {
                Ok(reopened) => (reopened, Recovery::Reopened),
                Err(damage @ ProjectionError::ModelsDamaged { .. }) => (
                    self.recreate()?,
                    Recovery::Recreated {
                        why: damage.to_string(),
                    },
                ),
                Err(other) => return Err(other),
            }
        };
        if let Recovery::Recreated { why } = &recovery {
            tracing::error!(%why, "the read models start over from the ledger");
        }
        *open = Some(reopened);
        Ok(recovery)
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
