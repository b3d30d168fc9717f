//! Replay: rebuilding the read models from the ledger, verifying live models against a rebuild,
//! and moving the ledger as NDJSON (export / import).
//!
//! **Architecture invariant:** everything here goes through the `EventStore` trait and the
//! projection runner; nothing reads a backend's files directly.

mod error;
mod transfer;
mod verify;

pub use error::ReplayError;
pub use transfer::{export, import, ExportedEvent, ImportSummary};
pub use verify::{rebuild, verify, ModelComparison, Verification};
