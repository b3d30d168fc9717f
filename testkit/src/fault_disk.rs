//! A simulated disk under the write-ahead log, for the storage-fault simulation
//! ([`crate::simulation`]): the log's files live in memory, as Linux would hold them, and a
//! seeded random source decides what a fault or a power loss does to them.
//!
//! The model, per file: the bytes the device holds (`disk`), the bytes the page cache holds
//! (`cache`: what reads return), and the writes since the last successful sync (`dirty`, in
//! order). A sync copies the dirty writes to the device. The faults:
//!
//! - **power loss** ([`FaultDisk::power_loss`]): every write not yet synced is, each on its own,
//!   dropped, kept, or torn at a random byte (written only up to it); the cache then holds what
//!   the device holds, and a file whose name no directory sync covered is gone;
//! - **a failed sync** ([`Fault::SyncFails`]): `EIO`, and — as Linux does since it stopped
//!   keeping failed pages dirty (PostgreSQL's "fsyncgate") — the dirty writes are marked clean
//!   without reaching the device (each lost or torn), while the cache keeps serving them. The
//!   error is reported once to every open file description that was open when it happened
//!   (`errseq_t`), never again: a second sync succeeds and proves nothing. `dup`ed handles
//!   ([`LogHandle::try_clone`]) share one description, so only the first of them to sync hears
//!   of it;
//! - **a failed write** ([`Fault::WriteFails`]): `EIO` after a random prefix of it was written
//!   (a torn write);
//! - **a full disk** ([`FaultDisk::set_free_bytes`]): a write that would grow the files past the
//!   space left writes what fits and fails with `ENOSPC`;
//! - **a failed read** ([`Fault::ReadFails`]): `EIO`;
//! - **a failed sled sync** ([`Fault::SledSyncFails`]): the checkpoint's `fsync` of sled's files
//!   fails.
//!
//! sled cannot be put on this disk (it does its own file I/O), so it stays on the real file
//! system and is modelled at the one point its durability matters: a checkpoint. Acknowledgements
//! rest on the log alone, and sled's files are made durable only by [`LogIo::sync_sled`] (flush,
//! then `fsync`), after which the log file it covers is retired. So at each completed sled sync
//! the disk copies sled's directory aside, and a power loss puts that copy back: sled "as of the
//! last completed checkpoint", the least a power loss can leave if sled recovers at least what
//! it had `fsync`ed (ARCHITECTURE.md, store, says why that is the assumption).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use taskledger_store::wal_io::{LogHandle, LogIo};
use taskledger_store::StoreError;

/// `EIO` and `ENOSPC` on Linux.
const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// A fault armed to strike the next operation of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next sync of a log file fails with `EIO`; its dirty writes are lost or torn.
    SyncFails,
    /// The next write fails with `EIO`; `torn`: after a random prefix of it was written.
    WriteFails { torn: bool },
    /// The next read fails with `EIO`.
    ReadFails,
    /// The next `fsync` of sled's files (a checkpoint) fails.
    SledSyncFails,
}

/// What the disk did, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Power losses (each drops, keeps or tears every unsynced write).
    pub power_losses: u64,
    /// Unsynced writes a power loss dropped.
    pub writes_dropped: u64,
    /// Unsynced writes a power loss kept whole.
    pub writes_kept: u64,
    /// Unsynced writes a power loss tore at a random byte.
    pub writes_torn: u64,
    /// Syncs failed with `EIO` (their dirty writes lost or torn).
    pub sync_failures: u64,
    /// Writes failed with `EIO` (`torn_write_failures` of them after a part was written).
    pub write_failures: u64,
    pub torn_write_failures: u64,
    /// Writes refused with `ENOSPC`.
    pub no_space: u64,
    /// Reads failed with `EIO`.
    pub read_failures: u64,
    /// Checkpoints whose `fsync` of sled's files failed.
    pub sled_sync_failures: u64,
    /// Completed sled syncs (each copies sled's directory aside).
    pub sled_snapshots: u64,
    /// Operations refused because the power was off.
    pub refused_powered_off: u64,
}

impl FaultCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &FaultCounts) {
        self.power_losses += other.power_losses;
        self.writes_dropped += other.writes_dropped;
        self.writes_kept += other.writes_kept;
        self.writes_torn += other.writes_torn;
        self.sync_failures += other.sync_failures;
        self.write_failures += other.write_failures;
        self.torn_write_failures += other.torn_write_failures;
        self.no_space += other.no_space;
        self.read_failures += other.read_failures;
        self.sled_sync_failures += other.sled_sync_failures;
        self.sled_snapshots += other.sled_snapshots;
        self.refused_powered_off += other.refused_powered_off;
    }

    /// Faults injected, power losses included.
    pub fn injected(&self) -> u64 {
        self.power_losses
            + self.sync_failures
            + self.write_failures
            + self.no_space
            + self.read_failures
            + self.sled_sync_failures
    }
}

/// One file: the device's bytes, the page cache's, and the writes not yet synced.
#[derive(Default)]
struct Inode {
    disk: Vec<u8>,
    cache: Vec<u8>,
    /// (offset, length) of each write since the last sync, in order.
    dirty: Vec<(usize, usize)>,
    /// The length was set ([`LogHandle::set_len`]) since the last sync.
    length_dirty: bool,
    /// Writeback errors so far (Linux's `errseq_t` counter) and whether one was reported.
    errors: u64,
    seen: bool,
    /// A directory sync covered its name: it survives a power loss.
    named: bool,
}

impl Inode {
    /// Copies `cache[offset..offset + length]` to the device (what of it the cache still holds:
    /// a later `set_len` may have cut it).
    fn persist(&mut self, offset: usize, length: usize) {
        let end = (offset + length).min(self.cache.len());
        if end <= offset {
            return;
        }
        if self.disk.len() < end {
            self.disk.resize(end, 0);
        }
        self.disk[offset..end].copy_from_slice(&self.cache[offset..end]);
    }
}

struct State {
    files: HashMap<PathBuf, Inode>,
    /// Bumped at each power loss: handles of an earlier boot fail.
    boot: u64,
    /// The power is off (cut, not yet restored by [`FaultDisk::power_loss`]).
    off: bool,
    /// Write and sync operations left before the power goes off.
    cut_after_ops: Option<u64>,
    /// Bytes the files may still grow by (`None`: no limit).
    free_bytes: Option<u64>,
    armed: Option<Fault>,
    random: ChaCha8Rng,
    counts: FaultCounts,
    /// sled's directory and where its copy as of the last completed sync is kept.
    sled: Option<(PathBuf, PathBuf)>,
    /// Write and sync operations so far.
    operations: u64,
}

struct Shared {
    state: Mutex<State>,
    /// The simulation's workload is between operations (nothing in flight): sled may be copied.
    quiet: Mutex<bool>,
    quiet_changed: Condvar,
    threads: bool,
}

/// The simulated disk; clones share it.
#[derive(Clone)]
pub struct FaultDisk {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FaultDisk {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("FaultDisk")
    }
}

fn injected(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl FaultDisk {
    /// An empty disk whose random choices follow `seed`. `threads`: whether the log runs its
    /// zeroing and checkpoint threads over it ([`LogIo::threads`]).
    pub fn new(seed: u64, threads: bool) -> FaultDisk {
        FaultDisk {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    files: HashMap::new(),
                    boot: 0,
                    off: false,
                    cut_after_ops: None,
                    free_bytes: None,
                    armed: None,
                    random: ChaCha8Rng::seed_from_u64(seed),
                    counts: FaultCounts::default(),
                    sled: None,
                    operations: 0,
                }),
                quiet: Mutex::new(true),
                quiet_changed: Condvar::new(),
                threads,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Keeps a copy of `sled_dir` (in `copy_dir`) as of each completed sled sync, for
    /// [`FaultDisk::power_loss`] to put back.
    pub fn model_sled(&self, sled_dir: &Path, copy_dir: &Path) {
        self.state().sled = Some((sled_dir.to_owned(), copy_dir.to_owned()));
    }

    /// Arms `fault` for the next operation of its kind (replacing one armed before).
    pub fn arm(&self, fault: Fault) {
        self.state().armed = Some(fault);
    }

    /// Disarms the armed fault; whether one was still armed.
    pub fn disarm(&self) -> bool {
        self.state().armed.take().is_some()
    }

    /// The power goes off after `operations` more writes and syncs (0: at the next one).
    pub fn cut_power_after(&self, operations: u64) {
        self.state().cut_after_ops = Some(operations);
    }

    /// The power goes off now.
    pub fn cut_power(&self) {
        self.state().off = true;
    }

    /// Whether the power is off.
    pub fn powered_off(&self) -> bool {
        self.state().off
    }

    /// Forgets a pending [`FaultDisk::cut_power_after`].
    pub fn cancel_cut(&self) {
        self.state().cut_after_ops = None;
    }

    /// The files may grow by `free_bytes` more (`None`: space is back).
    pub fn set_free_bytes(&self, free_bytes: Option<u64>) {
        self.state().free_bytes = free_bytes;
    }

    /// What the disk did so far.
    pub fn counts(&self) -> FaultCounts {
        self.state().counts.clone()
    }

    /// Write and sync operations so far.
    pub fn operations(&self) -> u64 {
        self.state().operations
    }

    /// Says whether the workload is between operations; a checkpoint's sled copy waits for it
    /// (with the log's threads, a checkpoint runs beside the commits, and copying sled's files
    /// while a commit writes them would copy a state sled never had). Setting it false waits
    /// for a copy under way.
    pub fn set_quiet(&self, quiet: bool) {
        *lock(&self.shared.quiet) = quiet;
        self.shared.quiet_changed.notify_all();
    }

    /// The power comes back after a loss: every unsynced write is dropped, kept or torn at a
    /// random byte (each on its own: the device may have written them in any order), files no
    /// directory sync named are gone, sled's directory is put back as of its last completed sync
    /// (empty if none), and handles of before fail. Call with the store closed.
    pub fn power_loss(&self) -> Result<(), StoreError> {
        let mut state = self.state();
        let State {
            files,
            random,
            counts,
            ..
        } = &mut *state;
        files.retain(|_, inode| inode.named);
        let mut paths: Vec<&PathBuf> = files.keys().collect();
        paths.sort();
        let paths: Vec<PathBuf> = paths.into_iter().cloned().collect();
        for path in paths {
            let Some(inode) = files.get_mut(&path) else {
                continue;
            };
            // A length set since the last sync reached the device, or not.
            if std::mem::take(&mut inode.length_dirty) && random.gen_bool(0.5) {
                inode.disk.resize(inode.cache.len(), 0);
            }
            for (offset, length) in std::mem::take(&mut inode.dirty) {
                match random.gen_range(0..3) {
                    0 => counts.writes_dropped += 1,
                    1 => {
                        inode.persist(offset, length);
                        counts.writes_kept += 1;
                    }
                    _ => {
                        inode.persist(offset, random.gen_range(0..length.max(1)));
                        counts.writes_torn += 1;
                    }
                }
            }
            inode.cache = inode.disk.clone();
            inode.errors = 0;
            inode.seen = true;
        }
        counts.power_losses += 1;
        state.boot += 1;
        state.off = false;
        state.cut_after_ops = None;
        state.armed = None;
        if let Some((sled_dir, copy_dir)) = state.sled.clone() {
            let failed = |doing: &str, error: io::Error| {
                StoreError::Io(format!("simulation: cannot {doing}: {error}"))
            };
            if sled_dir.exists() {
                std::fs::remove_dir_all(&sled_dir)
                    .map_err(|e| failed("remove sled's directory", e))?;
            }
            if copy_dir.exists() {
                copy_tree(&copy_dir, &sled_dir).map_err(|e| failed("put sled's copy back", e))?;
            }
        }
        Ok(())
    }

    /// Bytes of a log file as the page cache holds them (tests).
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        self.state()
            .files
            .get(path)
            .map(|inode| inode.cache.clone())
    }

    /// Flips bits of byte `offset` of a file, in the cache and on the device (bit rot).
    pub fn damage(&self, path: &Path, offset: usize, bits: u8) {
        if let Some(inode) = self.state().files.get_mut(path) {
            if let Some(byte) = inode.cache.get_mut(offset) {
                *byte ^= bits;
            }
            if let Some(byte) = inode.disk.get_mut(offset) {
                *byte ^= bits;
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The simulation's state stays consistent under every lock (no half-done update panics).
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Copies directory `from` to `to` (created), files and subdirectories; sled's blob files are
/// hard-linked instead (sled writes each once, under a name of its own, and only ever deletes
/// it), which keeps a checkpoint's copy cheap when the store holds megabytes of big values.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    let blobs = from.file_name().is_some_and(|name| name == "blobs");
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if blobs {
            std::fs::hard_link(entry.path(), target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Where the simulation's scratch directories go: memory when the machine has a `/dev/shm`
/// (sled's files are copied at every checkpoint), else the system temp dir.
pub fn scratch_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

impl State {
    /// Refuses an operation of an earlier boot or while the power is off.
    fn powered(&mut self, boot: u64) -> io::Result<()> {
        if self.off || boot != self.boot {
            self.counts.refused_powered_off += 1;
            return Err(injected(EIO));
        }
        Ok(())
    }

    /// Counts a write or sync, and cuts the power when it is the one [`FaultDisk::cut_power_after`]
    /// named.
    fn tick(&mut self, boot: u64) -> io::Result<()> {
        self.powered(boot)?;
        self.operations += 1;
        match self.cut_after_ops {
            Some(0) => {
                self.cut_after_ops = None;
                self.off = true;
                self.counts.refused_powered_off += 1;
                Err(injected(EIO))
            }
            Some(left) => {
                self.cut_after_ops = Some(left - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn take_armed(&mut self, matches: impl Fn(Fault) -> bool) -> Option<Fault> {
        match self.armed {
            Some(fault) if matches(fault) => self.armed.take(),
            _ => None,
        }
    }
}

/// An open file description of the simulated disk. Clones share the description (its
/// writeback-error sample), as `dup` does.
struct FaultHandle {
    shared: Arc<Shared>,
    path: PathBuf,
    boot: u64,
    /// The writeback errors this description has been told of.
    sample: Arc<Mutex<u64>>,
}

impl FaultHandle {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.state();
        state.tick(self.boot)?;
        let fails = state
            .take_armed(|fault| fault == Fault::SyncFails)
            .is_some();
        let State {
            files,
            random,
            counts,
            ..
        } = &mut *state;
        let inode = files.entry(self.path.clone()).or_default();
        let mut sample = lock(&self.sample);
        if fails {
            // Writeback fails: the pages are marked clean, the device got some of them or none.
            for (offset, length) in std::mem::take(&mut inode.dirty) {
                if random.gen_bool(0.5) {
                    inode.persist(offset, random.gen_range(0..length.max(1)));
                }
            }
            if std::mem::take(&mut inode.length_dirty) && random.gen_bool(0.5) {
                inode.disk.resize(inode.cache.len(), 0);
            }
            inode.errors += 1;
            counts.sync_failures += 1;
        } else {
            for (offset, length) in std::mem::take(&mut inode.dirty) {
                inode.persist(offset, length);
            }
            if std::mem::take(&mut inode.length_dirty) {
                inode.disk.resize(inode.cache.len(), 0);
            }
        }
        if *sample != inode.errors {
            // Reported to this description once; the next sync of it succeeds.
            *sample = inode.errors;
            inode.seen = true;
            return Err(injected(EIO));
        }
        Ok(())
    }
}

impl LogHandle for FaultHandle {
    fn size(&self) -> io::Result<u64> {
        let mut state = self.state();
        state.powered(self.boot)?;
        Ok(state
            .files
            .get(&self.path)
            .map_or(0, |inode| inode.cache.len() as u64))
    }

    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        let mut state = self.state();
        state.powered(self.boot)?;
        if state
            .take_armed(|fault| fault == Fault::ReadFails)
            .is_some()
        {
            state.counts.read_failures += 1;
            return Err(injected(EIO));
        }
        let inode = state.files.entry(self.path.clone()).or_default();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(buffer.len());
        if end > inode.cache.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            ));
        }
        buffer.copy_from_slice(&inode.cache[start..end]);
        Ok(())
    }

    fn write_all_at(&self, buffer: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.state();
        state.tick(self.boot)?;
        let offset = usize::try_from(offset).map_err(|_| injected(EIO))?;
        let mut length = buffer.len();
        let mut error = None;
        if let Some(Fault::WriteFails { torn }) =
            state.take_armed(|fault| matches!(fault, Fault::WriteFails { .. }))
        {
            length = if torn {
                state.counts.torn_write_failures += 1;
                state.random.gen_range(0..length.max(1))
            } else {
                0
            };
            state.counts.write_failures += 1;
            error = Some(injected(EIO));
        }
        let current = state
            .files
            .get(&self.path)
            .map_or(0, |inode| inode.cache.len());
        if let Some(free) = state.free_bytes {
            let growth = (offset + length).saturating_sub(current);
            let room = usize::try_from(free).unwrap_or(usize::MAX);
            if growth > room {
                // What fits is written; the rest is refused.
                length = (current + room).saturating_sub(offset).min(length);
                state.counts.no_space += 1;
                error = Some(injected(ENOSPC));
            }
            let grown = (offset + length).saturating_sub(current) as u64;
            state.free_bytes = Some(free.saturating_sub(grown));
        }
        let inode = state.files.entry(self.path.clone()).or_default();
        if length > 0 {
            let end = offset + length;
            if inode.cache.len() < end {
                inode.cache.resize(end, 0);
            }
            inode.cache[offset..end].copy_from_slice(&buffer[..length]);
            inode.dirty.push((offset, length));
        }
        match error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        let mut state = self.state();
        state.tick(self.boot)?;
        let length = usize::try_from(length).map_err(|_| injected(EIO))?;
        let current = state
            .files
            .get(&self.path)
            .map_or(0, |inode| inode.cache.len());
        if let Some(free) = state.free_bytes {
            // Growing takes space (as `fallocate` would); nothing changes when it does not fit.
            let growth = length.saturating_sub(current) as u64;
            if growth > free {
                state.counts.no_space += 1;
                return Err(injected(ENOSPC));
            }
            state.free_bytes = Some(free - growth);
        }
        let inode = state.files.entry(self.path.clone()).or_default();
        inode.cache.resize(length, 0);
        inode.dirty.retain(|(offset, _)| *offset < length);
        inode.length_dirty = true;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn try_clone(&self) -> io::Result<Box<dyn LogHandle>> {
        self.state().powered(self.boot)?;
        Ok(Box::new(FaultHandle {
            shared: self.shared.clone(),
            path: self.path.clone(),
            boot: self.boot,
            sample: self.sample.clone(),
        }))
    }
}

impl LogIo for FaultDisk {
    fn open(&self, path: &Path) -> io::Result<Box<dyn LogHandle>> {
        let mut state = self.state();
        let boot = state.boot;
        state.powered(boot)?;
        let inode = state.files.entry(path.to_owned()).or_default();
        // A new description hears of an error no one has been told of yet.
        let sample = if inode.seen || inode.errors == 0 {
            inode.errors
        } else {
            inode.errors - 1
        };
        Ok(Box::new(FaultHandle {
            shared: self.shared.clone(),
            path: path.to_owned(),
            boot,
            sample: Arc::new(Mutex::new(sample)),
        }))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        let boot = state.boot;
        state.tick(boot)?;
        for (file, inode) in state.files.iter_mut() {
            if file.parent() == Some(path) {
                inode.named = true;
            }
        }
        Ok(())
    }

    fn sync_sled(
        &self,
        flush: &dyn Fn() -> Result<(), StoreError>,
        sled_dir: &Path,
    ) -> Result<(), StoreError> {
        let mut quiet = lock(&self.shared.quiet);
        while self.shared.threads && !*quiet {
            if self.state().off {
                break;
            }
            quiet = self
                .shared
                .quiet_changed
                .wait_timeout(quiet, std::time::Duration::from_millis(50))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        // Held through the copy: the power cannot go off half-way through it.
        let mut state = self.state();
        let fsync_failed = |path: &Path| {
            StoreError::Io(format!(
                "cannot fsync {}: {}",
                path.join("db").display(),
                injected(EIO)
            ))
        };
        let boot = state.boot;
        if state.tick(boot).is_err() {
            return Err(fsync_failed(sled_dir));
        }
        if state
            .take_armed(|fault| fault == Fault::SledSyncFails)
            .is_some()
        {
            state.counts.sled_sync_failures += 1;
            return Err(fsync_failed(sled_dir));
        }
        flush()?;
        if let Some((modelled, copy_dir)) = state.sled.clone() {
            if modelled == sled_dir {
                let copied = (|| {
                    if copy_dir.exists() {
                        std::fs::remove_dir_all(&copy_dir)?;
                    }
                    copy_tree(sled_dir, &copy_dir)
                })();
                copied.map_err(|e| {
                    StoreError::Io(format!("simulation: cannot copy sled's directory: {e}"))
                })?;
            }
        }
        state.counts.sled_snapshots += 1;
        drop(quiet);
        Ok(())
    }

    fn threads(&self) -> bool {
        self.shared.threads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> PathBuf {
        PathBuf::from("/simulated/taskledger.wal")
    }

    /// Linux reports a writeback error once per open file description: `dup`ed handles share
    /// one, so a second one's sync succeeds though the write it covers never reached the device.
    #[test]
    fn a_failed_sync_is_reported_once_per_description_and_dup_shares_one() {
        for second_open in ["dup", "open"] {
            let disk = FaultDisk::new(1, false);
            let writer = disk.open(&path()).unwrap();
            let other = match second_open {
                "dup" => writer.try_clone().unwrap(),
                _ => disk.open(&path()).unwrap(),
            };
            writer.write_all_at(b"record", 0).unwrap();
            disk.arm(Fault::SyncFails);
            assert!(other.sync_data().is_err(), "the failing sync reports EIO");
            let writer_sync = writer.sync_data();
            match second_open {
                "dup" => assert!(
                    writer_sync.is_ok(),
                    "the shared description heard it already"
                ),
                _ => assert!(writer_sync.is_err(), "its own description hears it"),
            }
            assert!(
                writer.sync_data().is_ok(),
                "a retried sync succeeds and proves nothing"
            );
            let mut cached = [0u8; 6];
            writer.read_exact_at(&mut cached, 0).unwrap();
            assert_eq!(&cached, b"record", "the cache still serves the lost write");
        }
    }

    #[test]
    fn a_power_loss_keeps_synced_writes_and_drops_or_tears_the_others() {
        let disk = FaultDisk::new(7, false);
        let mut kept = 0;
        for round in 0..64u8 {
            let file = disk.open(&path()).unwrap();
            disk.sync_dir(Path::new("/simulated")).unwrap();
            file.write_all_at(&[round; 512], 0).unwrap();
            file.sync_data().unwrap();
            file.write_all_at(&[0xEE; 512], 512).unwrap();
            disk.cut_power();
            assert!(
                file.sync_data().is_err(),
                "nothing works with the power off"
            );
            disk.power_loss().unwrap();
            let file = disk.open(&path()).unwrap();
            let bytes = disk.file_bytes(&path()).unwrap();
            assert_eq!(&bytes[..512], &[round; 512], "a synced write survives");
            let tail = &bytes[512..];
            assert!(tail.iter().all(|&byte| byte == 0xEE));
            kept += usize::from(tail.len() == 512);
            drop(file);
        }
        assert!(kept > 0 && kept < 64, "kept whole {kept} times of 64");
    }

    #[test]
    fn a_file_no_directory_sync_named_is_gone_after_a_power_loss() {
        let disk = FaultDisk::new(3, false);
        let file = disk.open(&path()).unwrap();
        file.write_all_at(b"x", 0).unwrap();
        file.sync_all().unwrap();
        disk.power_loss().unwrap();
        assert_eq!(disk.file_bytes(&path()), None);
    }

    #[test]
    fn a_full_disk_writes_what_fits_and_refuses_the_rest() {
        let disk = FaultDisk::new(3, false);
        let file = disk.open(&path()).unwrap();
        disk.set_free_bytes(Some(10));
        let error = file.write_all_at(&[1; 16], 0).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(ENOSPC));
        assert_eq!(disk.file_bytes(&path()).unwrap().len(), 10);
        // Overwriting what exists needs no space.
        file.write_all_at(&[2; 10], 0).unwrap();
        disk.set_free_bytes(None);
        file.write_all_at(&[3; 16], 0).unwrap();
    }
}
