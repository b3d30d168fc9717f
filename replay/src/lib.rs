//! Replay: rebuilding the read models from the ledger, verifying live models against a rebuild,
//! moving the ledger as NDJSON (export / import), validating it against legacy tracker exports,
//! and simulating a faulty legacy tracker beside a realistic workload.
//!
//! **Architecture invariant:** everything here goes through the `EventStore` trait and the
//! projection runner; nothing reads a backend's files directly.

mod audit;
mod error;
pub mod html;
pub mod legacy;
mod retain;
pub mod simulate;
mod transfer;
pub mod validate;
mod verify;
pub mod whatif;

pub use audit::{
    verify_export, verify_store, ChainBreak, ChainVerification, LedgerDigest, PrefixCheck,
};
pub use error::ReplayError;
pub use retain::{retain, RetentionReport};
pub use transfer::{export, import, ExportedEvent, ImportSummary};
pub use verify::{rebuild, verify, ModelComparison, Verification};
