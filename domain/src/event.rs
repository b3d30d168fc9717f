//! Events: what the ledger decided, as past-tense facts. Each carries the key of the report it was
//! decided from, so the stream alone answers "was this report seen, and what was its outcome".

use crate::ids::{ExecutionId, ReportKey};
use crate::report::Op;
pub use crate::report::ReportedError;
use crate::state::ExecutionStatus;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The schema version of the event payloads written by this build. Older versions are upcast in
/// [`Event::decode`].
/// The schema version this build writes: 3, the compact binary layout ([`crate::codec`]) with
/// the authenticated principal. Versions 1 (JSON) and 2 (binary, no principal) are still read,
/// and kept where they are stored.
pub const EVENT_SCHEMA_VERSION: u16 = 3;
/// The binary layout before the principal.
pub const BINARY_V2_SCHEMA_VERSION: u16 = 2;
/// The JSON schema of the builds before version 2.
pub const JSON_SCHEMA_VERSION: u16 = 1;

/// A manual retry's provenance, on the execution it created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManualRetry {
    /// The task's latest execution when the retry was requested.
    pub previous_execution_id: Option<ExecutionId>,
    pub by: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionEnqueued {
    pub report_key: ReportKey,
    /// Who the ledger authenticated as the sender of the report (SPEC section 3): a token's name
    /// over HTTP, `local:<OS user>` from the CLI. Absent in events recorded before schema
    /// version 3. Part of the event's content, so of its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub execution_id: ExecutionId,
    pub at: Timestamp,
    pub queue: String,
    pub max_retries: u32,
    /// The enqueue report named no maxRetries: `max_retries` is the policy's default. (The
    /// legacy tracker then has the schema's own default, whatever the policy says.) Only
    /// written when true, so events of reports that named one encode as they always did.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub max_retries_defaulted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_version: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_retry: Option<ManualRetry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionClaimed {
    pub report_key: ReportKey,
    /// Who the ledger authenticated as the sender of the report (SPEC section 3): a token's name
    /// over HTTP, `local:<OS user>` from the CLI. Absent in events recorded before schema
    /// version 3. Part of the event's content, so of its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub execution_id: ExecutionId,
    pub at: Timestamp,
    pub worker: String,
    /// 1 for the first claim of this execution, 2 for the redelivery after its first failure...
    pub attempt: u32,
    /// The claim took the execution over while it was `processing`: the running attempt ended
    /// `abandoned` (retryCount unchanged). Absent for an ordinary claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim: Option<Reclaim>,
}

/// Why a claim of a `processing` execution was accepted (SPEC section 4, a reclaim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "cause",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Reclaim {
    /// The claim report said `redelivered`: the queue gave the message to another worker.
    Redelivered,
    /// The running attempt started at least the queue's claim lease before the claim.
    LeaseExpired {
        /// The lease in force when the claim was decided.
        lease_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSucceeded {
    pub report_key: ReportKey,
    /// Who the ledger authenticated as the sender of the report (SPEC section 3): a token's name
    /// over HTTP, `local:<OS user>` from the CLI. Absent in events recorded before schema
    /// version 3. Part of the event's content, so of its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub execution_id: ExecutionId,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The success arrived while the execution was not `processing`: nobody claimed this attempt.
    #[serde(default)]
    pub unclaimed_success: bool,
}

/// How the failure's category was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CategorySource {
    /// The worker said so.
    Reported,
    /// The ledger's classifier matched the message.
    Classified,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionFailed {
    pub report_key: ReportKey,
    /// Who the ledger authenticated as the sender of the report (SPEC section 3): a token's name
    /// over HTTP, `local:<OS user>` from the CLI. Absent in events recorded before schema
    /// version 3. Part of the event's content, so of its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub execution_id: ExecutionId,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    pub error_message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_stack: Option<String>,
    pub category: String,
    pub category_source: CategorySource,
    /// retryCount after this failure (the legacy `$inc: {retryCount: 1}`).
    pub retry_count: u32,
    /// `failed` (a retry is due at `nextRetryAt`) or `dlq`.
    pub status: ExecutionStatus,
    /// The backoff decided once, here, so replays never recompute it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionArchived {
    pub report_key: ReportKey,
    /// Who the ledger authenticated as the sender of the report (SPEC section 3): a token's name
    /// over HTTP, `local:<OS user>` from the CLI. Absent in events recorded before schema
    /// version 3. Part of the event's content, so of its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub execution_id: ExecutionId,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The status it was archived from (`dlq` or `failed`).
    pub from_status: ExecutionStatus,
}

/// Why a report was not accepted. Recorded, so rejection rates are projections like any other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "reason",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum RejectionReason {
    /// An execution of the task is already active (inside the dedup window), or the executionId
    /// already exists.
    DuplicateEnqueue { active_execution_id: ExecutionId },
    /// A claim of an execution that is not `queued` or `failed`.
    NotClaimable { status: ExecutionStatus },
    /// A report about an execution (or task) the ledger has never seen.
    UnknownExecution,
    /// A transition the rules do not allow from the execution's status.
    InvalidTransition { status: ExecutionStatus },
}

impl RejectionReason {
    pub const NAMES: [&'static str; 4] = [
        "duplicateEnqueue",
        "notClaimable",
        "unknownExecution",
        "invalidTransition",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            RejectionReason::DuplicateEnqueue { .. } => "duplicateEnqueue",
            RejectionReason::NotClaimable { .. } => "notClaimable",
            RejectionReason::UnknownExecution => "unknownExecution",
            RejectionReason::InvalidTransition { .. } => "invalidTransition",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportRejected {
    pub report_key: ReportKey,
    /// Who the ledger authenticated as the sender of the report (SPEC section 3): a token's name
    /// over HTTP, `local:<OS user>` from the CLI. Absent in events recorded before schema
    /// version 3. Part of the event's content, so of its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub op: Op,
    pub execution_id: ExecutionId,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The error of a rejected `fail`: what the legacy tracker, which has no such rule, would
    /// still have written (the legacy-shape read model needs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::report::ReportedError>,
    #[serde(flatten)]
    pub reason: RejectionReason,
}

/// Every fact the ledger records.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    ExecutionEnqueued(ExecutionEnqueued),
    ExecutionClaimed(ExecutionClaimed),
    ExecutionSucceeded(ExecutionSucceeded),
    ExecutionFailed(ExecutionFailed),
    ExecutionArchived(ExecutionArchived),
    ReportRejected(ReportRejected),
}

/// The outcome of a report, as returned to its reporter (and again on every resubmission).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Outcome {
    Accepted,
    Rejected(RejectionReason),
}

/// A stored payload that cannot be turned back into an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventCodecError {
    /// A type name this build does not know.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// A schema version newer than this build, or one with no upcaster.
    #[error("event type {event_type} has schema version {version}, this build reads up to {EVENT_SCHEMA_VERSION}")]
    UnsupportedVersion { event_type: String, version: u16 },
    /// The payload does not match the type.
    #[error("event type {event_type}: {message}")]
    Payload { event_type: String, message: String },
}

impl Event {
    pub const TYPE_NAMES: [&'static str; 6] = [
        "ExecutionEnqueued",
        "ExecutionClaimed",
        "ExecutionSucceeded",
        "ExecutionFailed",
        "ExecutionArchived",
        "ReportRejected",
    ];

    /// The stored type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::ExecutionEnqueued(_) => "ExecutionEnqueued",
            Event::ExecutionClaimed(_) => "ExecutionClaimed",
            Event::ExecutionSucceeded(_) => "ExecutionSucceeded",
            Event::ExecutionFailed(_) => "ExecutionFailed",
            Event::ExecutionArchived(_) => "ExecutionArchived",
            Event::ReportRejected(_) => "ReportRejected",
        }
    }

    pub fn report_key(&self) -> ReportKey {
        match self {
            Event::ExecutionEnqueued(e) => e.report_key,
            Event::ExecutionClaimed(e) => e.report_key,
            Event::ExecutionSucceeded(e) => e.report_key,
            Event::ExecutionFailed(e) => e.report_key,
            Event::ExecutionArchived(e) => e.report_key,
            Event::ReportRejected(e) => e.report_key,
        }
    }

    pub fn execution_id(&self) -> ExecutionId {
        match self {
            Event::ExecutionEnqueued(e) => e.execution_id,
            Event::ExecutionClaimed(e) => e.execution_id,
            Event::ExecutionSucceeded(e) => e.execution_id,
            Event::ExecutionFailed(e) => e.execution_id,
            Event::ExecutionArchived(e) => e.execution_id,
            Event::ReportRejected(e) => e.execution_id,
        }
    }

    /// When the reported thing happened (reporter's clock). Read models are built from this.
    pub fn at(&self) -> Timestamp {
        match self {
            Event::ExecutionEnqueued(e) => e.at,
            Event::ExecutionClaimed(e) => e.at,
            Event::ExecutionSucceeded(e) => e.at,
            Event::ExecutionFailed(e) => e.at,
            Event::ExecutionArchived(e) => e.at,
            Event::ReportRejected(e) => e.at,
        }
    }

    /// Who the ledger authenticated as the report's sender (`None` before schema version 3).
    pub fn principal(&self) -> Option<&str> {
        match self {
            Event::ExecutionEnqueued(e) => e.principal.as_deref(),
            Event::ExecutionClaimed(e) => e.principal.as_deref(),
            Event::ExecutionSucceeded(e) => e.principal.as_deref(),
            Event::ExecutionFailed(e) => e.principal.as_deref(),
            Event::ExecutionArchived(e) => e.principal.as_deref(),
            Event::ReportRejected(e) => e.principal.as_deref(),
        }
    }

    /// Sets the principal (decoding: the version-3 trailer).
    pub fn set_principal(&mut self, principal: Option<String>) {
        let slot = match self {
            Event::ExecutionEnqueued(e) => &mut e.principal,
            Event::ExecutionClaimed(e) => &mut e.principal,
            Event::ExecutionSucceeded(e) => &mut e.principal,
            Event::ExecutionFailed(e) => &mut e.principal,
            Event::ExecutionArchived(e) => &mut e.principal,
            Event::ReportRejected(e) => &mut e.principal,
        };
        *slot = principal;
    }

    /// The payload at [`EVENT_SCHEMA_VERSION`] (binary).
    pub fn encode_data(&self) -> Vec<u8> {
        crate::codec::encode(self, EVENT_SCHEMA_VERSION)
    }

    /// The payload at schema `version` (1: JSON, 2: binary, 3: binary with the principal): an
    /// import keeps an exported
    /// event's version, so its bytes and its hash stay what they were. `None` for a version this
    /// build cannot write.
    pub fn encode_version(&self, version: u16) -> Option<Vec<u8>> {
        (1..=EVENT_SCHEMA_VERSION)
            .contains(&version)
            .then(|| crate::codec::encode(self, version))
    }

    /// The payload as JSON: how `history`, exports and the UI show an event of any version (the
    /// version-1 payload, parsed).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::from_slice(&crate::codec::encode_json(self))
            .expect("an event's JSON encoding parses")
    }

    /// Decodes a stored payload, upcasting older schema versions: version 1 (JSON), version 2
    /// (binary) and version 3 (binary with the principal) decode into the same events.
    pub fn decode(
        event_type: &str,
        schema_version: u16,
        data: &[u8],
    ) -> Result<Event, EventCodecError> {
        match schema_version {
            JSON_SCHEMA_VERSION => crate::codec::decode_json(event_type, data),
            BINARY_V2_SCHEMA_VERSION => crate::codec::decode_binary(event_type, data),
            EVENT_SCHEMA_VERSION => crate::codec::decode_v3(event_type, data),
            _ => Err(EventCodecError::UnsupportedVersion {
                event_type: event_type.to_owned(),
                version: schema_version,
            }),
        }
    }

    /// Decodes an event's JSON rendering (an export's `data`) as an event of schema `version`:
    /// version 1 is its own payload; version 2 was rendered from the binary payload.
    pub fn from_json(event_type: &str, data: &[u8]) -> Result<Event, EventCodecError> {
        crate::codec::decode_json(event_type, data)
    }

    /// The outcome of the report this event was decided from.
    pub fn outcome(&self) -> Outcome {
        match self {
            Event::ReportRejected(rejected) => Outcome::Rejected(rejected.reason.clone()),
            _ => Outcome::Accepted,
        }
    }
}
