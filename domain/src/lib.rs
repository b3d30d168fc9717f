//! The pure rules of taskledger: lifecycle reports, the events they become, and the per-task
//! state machine that decides between them.
//!
//! **Architecture invariant:** nothing in this crate reads the clock, a random source, the file
//! system or the network. Time and identities arrive inside reports, so the same reports decided in
//! the same order always give the same events (`decide`) and the same state (`apply`).

mod codec;
pub mod decide;
pub mod error;
pub mod event;
pub mod ids;
pub mod limits;
pub mod policy;
pub mod report;
pub mod state;
pub mod time;

pub use decide::{decide, decide_keyed, decide_recorded, Decision};
pub use error::DomainError;
pub use event::{Event, EventCodecError, Outcome, RejectionReason};
pub use ids::{ExecutionId, ReportKey, TaskId};
pub use policy::Policy;
pub use report::{check_key, operator_report, Op, Report, ReportBody};
pub use state::{ExecutionState, ExecutionStatus, TaskState};
pub use time::Timestamp;
