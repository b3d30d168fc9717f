//! Read models: projections of the event streams (SPEC section 5).
//!
//! The projection runner ([`catch_up`], [`Projector`]) follows the store's global order and keeps
//! the stored models in a [`Kv`] — per task its record (status, retry chain, legacy TaskTracker
//! documents), and ordered indexes for the DLQ, archived executions, processing (stuck) and due
//! retries, plus per-queue statistics — each chunk written atomically with its checkpoint.
//! Queries ([`query`]) read those stored models; as-of views replay into a [`MemoryKv`].
//!
//! **Architecture invariant:** read models are built from each event's `at`, never from
//! `recordedAt`, so a rebuild anywhere gives byte-identical models.
//!
//! **Architecture invariant:** the runner only reads events below the store's durable head, so a
//! model never contains what a crash could take back.

pub mod digest;
mod error;
pub mod kv;
pub mod models;
mod models_io;
pub mod query;
pub mod record;
pub mod retention;
pub mod runner;
pub mod views;

pub use error::ProjectionError;
pub use kv::{Kv, MemoryKv, Recovery, RedbKv};
pub use query::{history, history_page, load_task, stored_task, HistoryEntry};
pub use record::TaskRecord;
pub use runner::{catch_up, CatchUp, CatchUpOptions, Projector};
pub use views::{ChainView, LegacyDocument, TaskStatusView};
