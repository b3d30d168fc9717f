//! The HTTP service (SPEC section 7): the JSON API over the write path (`ingest`) and the read
//! models (`projections`), and the web UI under `/ui/`.
//!
//! **Architecture invariant:** this crate holds no rule and no model: reports go through
//! `ingest::Ledger`, reads through `projections` (per-task folds of the stream, the live models
//! for lists). Every error leaves through one `ApiError` mapping, never with internal detail.

mod api;
pub mod auth;
mod follow;
mod listen;
mod ui;

pub use api::{
    app, ApiDoc, ApiError, AppState, Limits, Role, DRAIN_BYTES_MAX, OTHER_QUEUES_LABEL,
    PAGE_EVENTS_MAX, READY_LAG_EVENTS_MAX,
};
pub use auth::{Principal, TokenError, TokenSpec, Tokens};
pub use follow::{follow, FollowerCrashes, FollowerOptions, FollowerStats, FOLLOWER_RETRY_MILLIS};
pub use listen::{
    serve, serve_with, ListenLimits, ACCEPT_ERROR_PAUSE_MILLIS, CONNECTIONS_MAX,
    CONNECTION_IDLE_SECONDS, HEADERS_MAX, HEADER_BYTES_MAX, HEADER_READ_TIMEOUT_SECONDS,
    SHUTDOWN_GRACE_SECONDS,
};
pub use ui::{SESSIONS_MAX, SESSIONS_PER_PRINCIPAL_MAX, SESSION_SECONDS_MAX};
