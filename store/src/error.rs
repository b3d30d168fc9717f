//! The store's one error type.

/// What can go wrong below the domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend failed to read or write (disk, network). Nothing of the failed call was
    /// acknowledged.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// A stored record failed its checksum or could not be decoded.
    #[error("corrupt record at {location}: {detail}")]
    Corrupt { location: String, detail: String },
    /// A write failed earlier and the store can no longer vouch for its state; reopen it.
    #[error("the store refused further writes after an earlier write failure: {0}")]
    Poisoned(String),
    /// A stream name the backend cannot hold.
    #[error("invalid stream name {stream:?}: {problem}")]
    InvalidStream { stream: String, problem: String },
    /// An input beyond one of the store's limits.
    #[error("{what} is {actual}, more than the limit of {limit}")]
    LimitExceeded {
        what: &'static str,
        actual: usize,
        limit: usize,
    },
    /// The data directory was written by an incompatible format version.
    #[error("data directory format {found} is not supported by this build (expects {expected})")]
    Format { found: String, expected: String },
    /// Queued after an append that was refused ([`crate::EventStore::queue_append`]): nothing
    /// of it was written.
    #[error("refused: an append it was queued after was refused")]
    Fenced,
    /// The backend cannot be reached right now (a database server down or failing over).
    /// Nothing of the failed call was acknowledged; the same call may be retried later. The HTTP
    /// service answers 503.
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    /// The store's settings are wrong (a URL that does not parse, an unknown scheme).
    #[error("{0}")]
    Config(String),
    /// The backend does not do what was asked (retention outside the embedded store).
    #[error("{0}")]
    Unsupported(String),
    /// The file system is full (`ENOSPC`): nothing of the failed call was acknowledged; the
    /// embedded store refuses writes until reopened, which `serve` does by itself once space
    /// returns. The message names the file.
    #[error("storage full: {0}")]
    NoSpace(String),
    /// The data directory is in use by another store (sled's lock is held).
    #[error("the data directory is in use: {0}")]
    Locked(String),
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
}

/// sled's errors convert with `?` inside `taskledger-store-sled`; the impl must live here (the
/// orphan rule), so it comes with the `sled` feature, which only that crate turns on.
#[cfg(feature = "sled")]
impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        let text = error.to_string();
        match &error {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                StoreError::NoSpace(text)
            }
            // sled says a held lock only in words (an `Other` error it formats itself): the one
            // place its text is read, so everything after matches the variant.
            sled::Error::Io(_) if text.contains("could not acquire lock") => {
                StoreError::Locked(text)
            }
            _ => StoreError::Io(text),
        }
    }
}

impl StoreError {
    /// An I/O error with its context (what was done, to which file): [`StoreError::NoSpace`]
    /// for a full file system, [`StoreError::Io`] otherwise.
    pub fn from_io(context: impl std::fmt::Display, error: &std::io::Error) -> StoreError {
        let message = format!("{context}: {error}");
        if error.kind() == std::io::ErrorKind::StorageFull {
            StoreError::NoSpace(message)
        } else {
            StoreError::Io(message)
        }
    }
}
