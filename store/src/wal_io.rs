//! The file operations under the write-ahead log, behind a trait: the real files
//! ([`RealLogIo`]) or, in the storage-fault simulation, a disk that tears, drops and fails
//! (`taskledger_testkit::fault_disk::FaultDisk`).
//!
//! The log only ever needs positioned reads and writes, `fdatasync`/`fsync`, the length, a
//! second handle of an open file, a directory sync, and — at a checkpoint — "make sled durable".
//! Keeping that set small is what lets the simulation model each of them exactly as Linux
//! behaves, fsync errors included (see `FaultDisk`).

use crate::StoreError;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Where the log's files live and how sled is made durable.
pub trait LogIo: std::fmt::Debug + Send + Sync + 'static {
    /// Opens `path` for reading and writing, creating it if missing. Every call is a new open
    /// file description: on Linux each has its own view of writeback errors (an `fsync` error is
    /// reported once to every description open when it happened), unlike
    /// [`LogHandle::try_clone`]'s, which share one.
    fn open(&self, path: &Path) -> io::Result<Box<dyn LogHandle>>;
    /// `fsync`s the directory `path` (the names of files created in it).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes everything the embedded engine (sled) applied durable in its own files: `flush`
    /// (the engine's own flush), then `fsync` its files in `sled_dir` (a checkpoint's first
    /// half; the log file it covers is retired only after this returns).
    fn sync_sled(
        &self,
        flush: &dyn Fn() -> Result<(), StoreError>,
        sled_dir: &Path,
    ) -> Result<(), StoreError>;
    /// Whether the log runs its zeroing and checkpoint threads. Without them (the simulation's
    /// deterministic mode) the committer zeroes the steps and runs checkpoints itself, in line,
    /// so one seed always issues the same operations in the same order.
    fn threads(&self) -> bool {
        true
    }
}

/// One open file of the log.
pub trait LogHandle: Send + Sync {
    fn size(&self) -> io::Result<u64>;
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_all_at(&self, buffer: &[u8], offset: u64) -> io::Result<()>;
    /// `ftruncate`: shortens the file, or lengthens it with zeros. (The log never calls it; the
    /// read models' file does, in the models' fault simulation.)
    fn set_len(&self, length: u64) -> io::Result<()>;
    /// `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`.
    fn sync_all(&self) -> io::Result<()>;
    /// A second handle of the same open file description (`dup`).
    fn try_clone(&self) -> io::Result<Box<dyn LogHandle>>;
}

/// The log's files on the real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealLogIo;

impl RealLogIo {
    pub fn shared() -> Arc<dyn LogIo> {
        Arc::new(RealLogIo)
    }
}

struct RealHandle(File);

impl LogHandle for RealHandle {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buffer, offset)
    }
    fn write_all_at(&self, buffer: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buffer, offset)
    }
    fn set_len(&self, length: u64) -> io::Result<()> {
        self.0.set_len(length)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn try_clone(&self) -> io::Result<Box<dyn LogHandle>> {
        Ok(Box::new(RealHandle(self.0.try_clone()?)))
    }
}

impl LogIo for RealLogIo {
    fn open(&self, path: &Path) -> io::Result<Box<dyn LogHandle>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Box::new(RealHandle(file)))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn sync_sled(
        &self,
        flush: &dyn Fn() -> Result<(), StoreError>,
        sled_dir: &Path,
    ) -> Result<(), StoreError> {
        flush()?;
        sync_sled_files(sled_dir)
    }
}

fn io_error(path: &Path, doing: &str, error: io::Error) -> StoreError {
    StoreError::from_io(format_args!("{doing} {}", path.display()), &error)
}

/// `fsync`s what sled wrote: its log (`db`), its configuration and its blob files (sled syncs
/// blobs never, and its log only with `sync_file_range`).
///
/// These are opened anew to be synced. A new description sees a writeback error only if no one
/// has seen it yet; sled's own flush (`sync_file_range`, which reports writeback errors on
/// Linux ≥ 4.13) sees it first and fails, which fails the checkpoint: an error sled saw and
/// then ignored would be missed here (ARCHITECTURE.md, store).
pub fn sync_sled_files(sled_dir: &Path) -> Result<(), StoreError> {
    for name in ["db", "conf"] {
        sync_file(&sled_dir.join(name))?;
    }
    let blobs = sled_dir.join("blobs");
    if let Ok(entries) = std::fs::read_dir(&blobs) {
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&blobs, "cannot list", e))?;
            sync_file(&entry.path())?;
        }
        File::open(&blobs)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_error(&blobs, "cannot fsync the directory", e))?;
    }
    File::open(sled_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io_error(sled_dir, "cannot fsync the directory", e))
}

fn sync_file(path: &Path) -> Result<(), StoreError> {
    match File::open(path) {
        Ok(file) => file
            .sync_all()
            .map_err(|e| io_error(path, "cannot fsync", e)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error(path, "cannot open", error)),
    }
}
