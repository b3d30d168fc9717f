//! The projections' one error type.

use taskledger_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be decoded.
    #[error("stream {stream:?} version {version}: {message}")]
    Codec {
        stream: String,
        version: u64,
        message: String,
    },
}
