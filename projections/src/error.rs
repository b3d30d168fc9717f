//! The projections' one error type.

use taskledger_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Reading events failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be decoded.
    #[error("stream {stream:?} version {version}: {message}")]
    Codec {
        stream: String,
        version: u64,
        message: String,
    },
    /// The models' own storage failed or holds something undecodable.
    #[error("read models: {0}")]
    Models(String),
    /// The models' file fails redb's integrity check (changed outside redb: damage). Models
    /// are derived data: the binary moves the file aside and rebuilds them from the ledger.
    #[error("the read models in {file} are damaged: {detail}")]
    ModelsDamaged { file: String, detail: String },
    /// A query parameter is unusable (bad cursor...).
    #[error("{0}")]
    Query(String),
}
