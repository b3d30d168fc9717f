//! The write path: a report is decided against its task's stream and its events appended; a
//! report is acknowledged only when the store says they are durable.
//!
//! **Architecture invariant:** the rules live in `domain::decide`; this crate only loads state,
//! calls `decide`, appends and retries on conflicts. It reads the clock only for `recordedAt`,
//! which no decision or read model depends on.

mod combiner;
mod error;
mod file;
mod ledger;

pub use error::IngestError;
pub use file::{ingest_ndjson, scan_ndjson, BadLine, IngestOptions, IngestSummary};
pub use ledger::{now, Clock, FixedClock, Ledger, LedgerConfig, Submitted, SystemClock};
