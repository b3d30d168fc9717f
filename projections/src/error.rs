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
    /// A query parameter is unusable (bad cursor...).
    #[error("{0}")]
    Query(String),
}
