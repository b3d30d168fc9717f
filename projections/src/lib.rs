//! Read models: projections of the event streams.
//!
//! [`TaskProjection`] folds one task's events into its status and retry chain (the `task` and
//! `chain` queries); [`history`] lists a stream's raw events.
//!
//! **Architecture invariant:** read models are built from each event's `at`, never from
//! `recordedAt`, so a rebuild anywhere gives byte-identical models.

mod error;
mod query;
mod task;

pub use error::ProjectionError;
pub use query::{history, load_task, HistoryEntry};
pub use task::{AttemptView, ChainView, ErrorView, ExecutionView, TaskProjection, TaskStatusView};
