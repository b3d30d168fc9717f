//! The write path's one error type.

use taskledger_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The store failed; nothing of the failed call was acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be decoded while loading a task's state.
    #[error("stream {stream:?} version {version}: {message}")]
    Codec {
        stream: String,
        version: u64,
        message: String,
    },
    /// A stream kept moving under the ledger (another writer) beyond the retry limit.
    #[error("stream {stream:?} changed concurrently {attempts} times in a row; giving up")]
    Contention { stream: String, attempts: usize },
    /// Strict ingest found malformed lines; nothing was appended.
    #[error("{} malformed line(s); nothing was appended", .0.len())]
    Invalid(Vec<crate::BadLine>),
    /// The failure of a combined append, seen by each report that shared it.
    #[error(transparent)]
    Shared(std::sync::Arc<IngestError>),
    /// A report's combined append ended without an answer (its decider panicked); whether it
    /// was appended is unknown, so resubmit it (idempotent).
    #[error("the report's combined append ended without an answer; resubmit it")]
    Unanswered,
    /// Reading the input failed.
    #[error("reading {source_name}: {message}")]
    Read {
        source_name: String,
        message: String,
    },
}
