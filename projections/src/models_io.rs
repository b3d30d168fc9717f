//! What lies under the read models' redb file ([`crate::RedbKv`]).
//!
//! - On the real file system: redb's own [`redb::backends::FileBackend`] (its locks included),
//!   wrapped in [`Watched`], which remembers whether a sync of the file ever failed. After a
//!   failed `fsync` Linux marks the pages clean whether or not they reached the device
//!   (PostgreSQL's "fsyncgate"), so the file's bytes on the device can no longer be vouched for,
//!   even though the page cache still serves them; [`crate::Kv::recover`] then starts the models
//!   over from the ledger instead of trusting the file.
//! - In the models' fault simulation (`taskledger_testkit::models_simulation`): a file of the store's simulated
//!   disk ([`taskledger_testkit::fault_disk::FaultDisk`]), through [`HandleBackend`], so power
//!   loss, torn and failed writes, failed syncs and reads, and a full disk strike redb itself.

use redb::{BackendError, StorageBackend};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use taskledger_store::LogHandle;

/// What the file went through while open.
#[derive(Debug, Default)]
pub(crate) struct Health {
    sync_failed: AtomicBool,
}

impl Health {
    /// A sync of the file failed: what the device holds is unknown.
    pub(crate) fn sync_failed(&self) -> bool {
        self.sync_failed.load(Ordering::SeqCst)
    }
}

/// A backend that remembers a failed sync in its [`Health`].
#[derive(Debug)]
pub(crate) struct Watched<B> {
    pub(crate) inner: B,
    pub(crate) health: Arc<Health>,
}

impl<B: StorageBackend> StorageBackend for Watched<B> {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        let synced = self.inner.sync_data();
        if synced.is_err() {
            self.health.sync_failed.store(true, Ordering::SeqCst);
        }
        synced
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// One open file of a [`taskledger_store::LogIo`] as redb's storage. It takes no locks: it is
/// for the simulation, where one process opens the file at a time.
pub(crate) struct HandleBackend(pub(crate) Box<dyn LogHandle>);

impl std::fmt::Debug for HandleBackend {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("HandleBackend")
    }
}

impl StorageBackend for HandleBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.size()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read_exact_at(out, offset)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write_all_at(data, offset)
    }
}
