//! Replay: rebuilding read models, as-of views, verification and validation against legacy
//! exports (SPEC sections 5 and 6).
//!
//! Not built yet: the core ledger (issue "Core ledger") comes first. Per-task as-of queries live
//! in `taskledger-projections` for now; this crate gains `rebuild`, `rebuild --verify` and
//! `validate` with the projections and validation issues.
