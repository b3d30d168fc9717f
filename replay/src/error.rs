//! The replay crate's one error type.

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] taskledger_store::StoreError),
    #[error(transparent)]
    Projection(#[from] taskledger_projections::ProjectionError),
    /// A line of an import file is not an exported event.
    #[error("line {line}: {problem}")]
    Input { line: u64, problem: String },
    /// The import conflicts with what the store already holds.
    #[error("line {line}: stream {stream:?} version {version} already holds a different event")]
    Conflict {
        line: u64,
        stream: String,
        version: u64,
    },
    #[error("{0}")]
    Io(String),
    /// A stream whose name is not a taskId, so its events cannot be decided again (what-if).
    #[error("stream {stream:?} is not a taskId: {problem}")]
    NotATask { stream: String, problem: String },
}
