//! Event payload encodings, by schema version.
//!
//! - **Version 1** (builds before 2026-12-01): the event as JSON (`serde_json` of the structs in
//!   [`crate::event`]). Still read (upcast on read: decoded into today's events), still written
//!   when an export of version-1 events is imported, so their bytes — and hashes — never change.
//! - **Version 2** (this build): the same fields in a compact binary layout, postcard over the
//!   mirror structs below: UUIDs as 16 bytes, instants as zig-zag varint milliseconds, enums as
//!   variant indexes, no field names; the free-form `metadata` map as its JSON text. Deterministic:
//!   the same event always gives the same bytes, so version-2 payloads can be checked against a
//!   JSON rendering of them (an export) by encoding that rendering again.
//!
//! - **Version 3** (this build): the version-2 bytes of the event followed by its `principal`
//!   (postcard `Option<String>`: `00`, or `01`, a varint length and the UTF-8 name). Version 2
//!   upcasts to it with no principal: an event recorded before the ledger knew who sent it.
//!
//! **The version-2 layout is fixed forever**: the mirror structs' field order and the variant
//! order of every enum they use (`ExecutionStatus`, `Op`, `CategorySource` and the mirrors' own)
//! are part of it. `tests::version_2_bytes_are_pinned` fails if either moves. A change is a
//! version 3 with an upcaster from 2.

use crate::event::*;
use crate::ids::{ExecutionId, ReportKey};
use crate::report::{Op, ReportedError};
use crate::state::ExecutionStatus;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The payload of `event` at schema `version` (1, 2 or 3).
pub(crate) fn encode(event: &Event, version: u16) -> Vec<u8> {
    if version == 1 {
        return encode_json(event);
    }
    let mut bytes = encode_v2(event);
    if version >= 3 {
        let principal = event.principal();
        let trailer = postcard::to_stdvec(&principal).expect("a string always encodes");
        bytes.extend_from_slice(&trailer);
    }
    bytes
}

/// The version-2 body: the mirror structs, without the principal.
fn encode_v2(event: &Event) -> Vec<u8> {
    let encoded = match event {
        Event::ExecutionEnqueued(e) => postcard::to_stdvec(&EnqueuedV2::from(e)),
        Event::ExecutionClaimed(e) => postcard::to_stdvec(&ClaimedV2::from(e)),
        Event::ExecutionSucceeded(e) => postcard::to_stdvec(&SucceededV2::from(e)),
        Event::ExecutionFailed(e) => postcard::to_stdvec(&FailedV2::from(e)),
        Event::ExecutionArchived(e) => postcard::to_stdvec(&ArchivedV2::from(e)),
        Event::ReportRejected(e) => postcard::to_stdvec(&RejectedV2::from(e)),
    };
    // Plain structs of integers, strings and byte strings: postcard cannot fail on them.
    encoded.expect("event payloads always encode")
}

/// The version-1 payload: the event as JSON.
pub(crate) fn encode_json(event: &Event) -> Vec<u8> {
    // Plain structs of strings, numbers and JSON maps: serialization cannot fail.
    let encoded = match event {
        Event::ExecutionEnqueued(e) => serde_json::to_vec(e),
        Event::ExecutionClaimed(e) => serde_json::to_vec(e),
        Event::ExecutionSucceeded(e) => serde_json::to_vec(e),
        Event::ExecutionFailed(e) => serde_json::to_vec(e),
        Event::ExecutionArchived(e) => serde_json::to_vec(e),
        Event::ReportRejected(e) => serde_json::to_vec(e),
    };
    encoded.expect("event payloads always serialize")
}

fn payload_error(event_type: &str, message: impl std::fmt::Display) -> EventCodecError {
    EventCodecError::Payload {
        event_type: event_type.to_owned(),
        message: message.to_string(),
    }
}

/// Decodes a version-1 (JSON) payload.
pub(crate) fn decode_json(event_type: &str, data: &[u8]) -> Result<Event, EventCodecError> {
    fn payload<T: serde::de::DeserializeOwned>(
        event_type: &str,
        data: &[u8],
    ) -> Result<T, EventCodecError> {
        serde_json::from_slice(data).map_err(|error| payload_error(event_type, error))
    }
    Ok(match event_type {
        "ExecutionEnqueued" => Event::ExecutionEnqueued(payload(event_type, data)?),
        "ExecutionClaimed" => Event::ExecutionClaimed(payload(event_type, data)?),
        "ExecutionSucceeded" => Event::ExecutionSucceeded(payload(event_type, data)?),
        "ExecutionFailed" => Event::ExecutionFailed(payload(event_type, data)?),
        "ExecutionArchived" => Event::ExecutionArchived(payload(event_type, data)?),
        "ReportRejected" => Event::ReportRejected(payload(event_type, data)?),
        other => return Err(EventCodecError::UnknownType(other.to_owned())),
    })
}

/// Decodes a version-3 payload: the version-2 body, then the principal. Trailing bytes are an
/// error: a payload is exactly one event.
pub(crate) fn decode_v3(event_type: &str, data: &[u8]) -> Result<Event, EventCodecError> {
    let (mut event, rest) = decode_body(event_type, data)?;
    let (principal, rest): (Option<String>, &[u8]) =
        postcard::take_from_bytes(rest).map_err(|error| payload_error(event_type, error))?;
    if !rest.is_empty() {
        return Err(payload_error(
            event_type,
            format!("{} bytes after the event", rest.len()),
        ));
    }
    event.set_principal(principal);
    Ok(event)
}

/// Decodes a version-2 (binary) payload. Trailing bytes are an error: a payload is exactly one
/// event.
pub(crate) fn decode_binary(event_type: &str, data: &[u8]) -> Result<Event, EventCodecError> {
    let (event, rest) = decode_body(event_type, data)?;
    if !rest.is_empty() {
        return Err(payload_error(
            event_type,
            format!("{} bytes after the event", rest.len()),
        ));
    }
    Ok(event)
}

/// The version-2 body at the start of `data`, and the bytes after it.
fn decode_body<'a>(event_type: &str, data: &'a [u8]) -> Result<(Event, &'a [u8]), EventCodecError> {
    let mut tail: &'a [u8] = &[];
    fn take<'a, T: Deserialize<'a>>(
        event_type: &str,
        data: &'a [u8],
        tail: &mut &'a [u8],
    ) -> Result<T, EventCodecError> {
        let (value, rest) =
            postcard::take_from_bytes(data).map_err(|error| payload_error(event_type, error))?;
        *tail = rest;
        Ok(value)
    }
    let event = match event_type {
        "ExecutionEnqueued" => Event::ExecutionEnqueued(
            take::<EnqueuedV2>(event_type, data, &mut tail)?.into_event(event_type)?,
        ),
        "ExecutionClaimed" => {
            Event::ExecutionClaimed(take::<ClaimedV2>(event_type, data, &mut tail)?.into())
        }
        "ExecutionSucceeded" => {
            Event::ExecutionSucceeded(take::<SucceededV2>(event_type, data, &mut tail)?.into())
        }
        "ExecutionFailed" => {
            Event::ExecutionFailed(take::<FailedV2>(event_type, data, &mut tail)?.into())
        }
        "ExecutionArchived" => {
            Event::ExecutionArchived(take::<ArchivedV2>(event_type, data, &mut tail)?.into())
        }
        "ReportRejected" => {
            Event::ReportRejected(take::<RejectedV2>(event_type, data, &mut tail)?.into())
        }
        other => return Err(EventCodecError::UnknownType(other.to_owned())),
    };
    Ok((event, tail))
}

#[derive(Serialize, Deserialize)]
struct ManualRetryV2 {
    previous_execution_id: Option<Uuid>,
    by: Option<String>,
    reason: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct EnqueuedV2 {
    report_key: Uuid,
    execution_id: Uuid,
    at: i64,
    queue: String,
    max_retries: u32,
    max_retries_defaulted: bool,
    message_version: Option<String>,
    /// The metadata map as JSON text; empty for an empty map.
    metadata: Vec<u8>,
    manual_retry: Option<ManualRetryV2>,
}

impl From<&ExecutionEnqueued> for EnqueuedV2 {
    fn from(e: &ExecutionEnqueued) -> Self {
        EnqueuedV2 {
            report_key: e.report_key.0,
            execution_id: e.execution_id.0,
            at: e.at.0,
            queue: e.queue.clone(),
            max_retries: e.max_retries,
            max_retries_defaulted: e.max_retries_defaulted,
            message_version: e.message_version.clone(),
            metadata: if e.metadata.is_empty() {
                Vec::new()
            } else {
                serde_json::to_vec(&e.metadata).expect("a JSON map always serializes")
            },
            manual_retry: e.manual_retry.as_ref().map(|m| ManualRetryV2 {
                previous_execution_id: m.previous_execution_id.map(|id| id.0),
                by: m.by.clone(),
                reason: m.reason.clone(),
            }),
        }
    }
}

impl EnqueuedV2 {
    fn into_event(self, event_type: &str) -> Result<ExecutionEnqueued, EventCodecError> {
        let metadata: Map<String, Value> = if self.metadata.is_empty() {
            Map::new()
        } else {
            serde_json::from_slice(&self.metadata)
                .map_err(|error| payload_error(event_type, format!("metadata: {error}")))?
        };
        Ok(ExecutionEnqueued {
            report_key: ReportKey(self.report_key),
            principal: None,
            execution_id: ExecutionId(self.execution_id),
            at: Timestamp(self.at),
            queue: self.queue,
            max_retries: self.max_retries,
            max_retries_defaulted: self.max_retries_defaulted,
            message_version: self.message_version,
            metadata,
            manual_retry: self.manual_retry.map(|m| ManualRetry {
                previous_execution_id: m.previous_execution_id.map(ExecutionId),
                by: m.by,
                reason: m.reason,
            }),
        })
    }
}

#[derive(Serialize, Deserialize)]
enum ReclaimV2 {
    Redelivered,
    LeaseExpired { lease_ms: u64 },
}

#[derive(Serialize, Deserialize)]
struct ClaimedV2 {
    report_key: Uuid,
    execution_id: Uuid,
    at: i64,
    worker: String,
    attempt: u32,
    reclaim: Option<ReclaimV2>,
}

impl From<&ExecutionClaimed> for ClaimedV2 {
    fn from(e: &ExecutionClaimed) -> Self {
        ClaimedV2 {
            report_key: e.report_key.0,
            execution_id: e.execution_id.0,
            at: e.at.0,
            worker: e.worker.clone(),
            attempt: e.attempt,
            reclaim: e.reclaim.map(|reclaim| match reclaim {
                Reclaim::Redelivered => ReclaimV2::Redelivered,
                Reclaim::LeaseExpired { lease_ms } => ReclaimV2::LeaseExpired { lease_ms },
            }),
        }
    }
}

impl From<ClaimedV2> for ExecutionClaimed {
    fn from(e: ClaimedV2) -> Self {
        ExecutionClaimed {
            report_key: ReportKey(e.report_key),
            principal: None,
            execution_id: ExecutionId(e.execution_id),
            at: Timestamp(e.at),
            worker: e.worker,
            attempt: e.attempt,
            reclaim: e.reclaim.map(|reclaim| match reclaim {
                ReclaimV2::Redelivered => Reclaim::Redelivered,
                ReclaimV2::LeaseExpired { lease_ms } => Reclaim::LeaseExpired { lease_ms },
            }),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SucceededV2 {
    report_key: Uuid,
    execution_id: Uuid,
    at: i64,
    worker: Option<String>,
    unclaimed_success: bool,
}

impl From<&ExecutionSucceeded> for SucceededV2 {
    fn from(e: &ExecutionSucceeded) -> Self {
        SucceededV2 {
            report_key: e.report_key.0,
            execution_id: e.execution_id.0,
            at: e.at.0,
            worker: e.worker.clone(),
            unclaimed_success: e.unclaimed_success,
        }
    }
}

impl From<SucceededV2> for ExecutionSucceeded {
    fn from(e: SucceededV2) -> Self {
        ExecutionSucceeded {
            report_key: ReportKey(e.report_key),
            principal: None,
            execution_id: ExecutionId(e.execution_id),
            at: Timestamp(e.at),
            worker: e.worker,
            unclaimed_success: e.unclaimed_success,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct FailedV2 {
    report_key: Uuid,
    execution_id: Uuid,
    at: i64,
    worker: Option<String>,
    error_message: String,
    error_stack: Option<String>,
    category: String,
    category_source: CategorySource,
    retry_count: u32,
    status: ExecutionStatus,
    backoff_ms: Option<u64>,
    next_retry_at: Option<i64>,
}

impl From<&ExecutionFailed> for FailedV2 {
    fn from(e: &ExecutionFailed) -> Self {
        FailedV2 {
            report_key: e.report_key.0,
            execution_id: e.execution_id.0,
            at: e.at.0,
            worker: e.worker.clone(),
            error_message: e.error_message.clone(),
            error_stack: e.error_stack.clone(),
            category: e.category.clone(),
            category_source: e.category_source,
            retry_count: e.retry_count,
            status: e.status,
            backoff_ms: e.backoff_ms,
            next_retry_at: e.next_retry_at.map(|t| t.0),
        }
    }
}

impl From<FailedV2> for ExecutionFailed {
    fn from(e: FailedV2) -> Self {
        ExecutionFailed {
            report_key: ReportKey(e.report_key),
            principal: None,
            execution_id: ExecutionId(e.execution_id),
            at: Timestamp(e.at),
            worker: e.worker,
            error_message: e.error_message,
            error_stack: e.error_stack,
            category: e.category,
            category_source: e.category_source,
            retry_count: e.retry_count,
            status: e.status,
            backoff_ms: e.backoff_ms,
            next_retry_at: e.next_retry_at.map(Timestamp),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ArchivedV2 {
    report_key: Uuid,
    execution_id: Uuid,
    at: i64,
    reason: Option<String>,
    by: Option<String>,
    from_status: ExecutionStatus,
}

impl From<&ExecutionArchived> for ArchivedV2 {
    fn from(e: &ExecutionArchived) -> Self {
        ArchivedV2 {
            report_key: e.report_key.0,
            execution_id: e.execution_id.0,
            at: e.at.0,
            reason: e.reason.clone(),
            by: e.by.clone(),
            from_status: e.from_status,
        }
    }
}

impl From<ArchivedV2> for ExecutionArchived {
    fn from(e: ArchivedV2) -> Self {
        ExecutionArchived {
            report_key: ReportKey(e.report_key),
            principal: None,
            execution_id: ExecutionId(e.execution_id),
            at: Timestamp(e.at),
            reason: e.reason,
            by: e.by,
            from_status: e.from_status,
        }
    }
}

#[derive(Serialize, Deserialize)]
enum RejectionReasonV2 {
    DuplicateEnqueue { active_execution_id: Uuid },
    NotClaimable { status: ExecutionStatus },
    UnknownExecution,
    InvalidTransition { status: ExecutionStatus },
}

#[derive(Serialize, Deserialize)]
struct ReportedErrorV2 {
    message: String,
    category: Option<String>,
    stack: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct RejectedV2 {
    report_key: Uuid,
    op: Op,
    execution_id: Uuid,
    at: i64,
    worker: Option<String>,
    error: Option<ReportedErrorV2>,
    reason: RejectionReasonV2,
}

impl From<&ReportRejected> for RejectedV2 {
    fn from(e: &ReportRejected) -> Self {
        RejectedV2 {
            report_key: e.report_key.0,
            op: e.op,
            execution_id: e.execution_id.0,
            at: e.at.0,
            worker: e.worker.clone(),
            error: e.error.as_ref().map(|error| ReportedErrorV2 {
                message: error.message.clone(),
                category: error.category.clone(),
                stack: error.stack.clone(),
            }),
            reason: match &e.reason {
                RejectionReason::DuplicateEnqueue {
                    active_execution_id,
                } => RejectionReasonV2::DuplicateEnqueue {
                    active_execution_id: active_execution_id.0,
                },
                RejectionReason::NotClaimable { status } => {
                    RejectionReasonV2::NotClaimable { status: *status }
                }
                RejectionReason::UnknownExecution => RejectionReasonV2::UnknownExecution,
                RejectionReason::InvalidTransition { status } => {
                    RejectionReasonV2::InvalidTransition { status: *status }
                }
            },
        }
    }
}

impl From<RejectedV2> for ReportRejected {
    fn from(e: RejectedV2) -> Self {
        ReportRejected {
            report_key: ReportKey(e.report_key),
            principal: None,
            op: e.op,
            execution_id: ExecutionId(e.execution_id),
            at: Timestamp(e.at),
            worker: e.worker,
            error: e.error.map(|error| ReportedError {
                message: error.message,
                category: error.category,
                stack: error.stack,
            }),
            reason: match e.reason {
                RejectionReasonV2::DuplicateEnqueue {
                    active_execution_id,
                } => RejectionReason::DuplicateEnqueue {
                    active_execution_id: ExecutionId(active_execution_id),
                },
                RejectionReasonV2::NotClaimable { status } => {
                    RejectionReason::NotClaimable { status }
                }
                RejectionReasonV2::UnknownExecution => RejectionReason::UnknownExecution,
                RejectionReasonV2::InvalidTransition { status } => {
                    RejectionReason::InvalidTransition { status }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn every_kind() -> Vec<Event> {
        let mut metadata = Map::new();
        // In key order: the JSON text is then the same with or without serde_json's
        // `preserve_order` (another crate of the workspace may turn it on).
        metadata.insert("n".into(), serde_json::json!([1, 2.5, {"deep": null}]));
        metadata.insert("partnerCode".into(), Value::String("SATLOC".into()));
        vec![
            Event::ExecutionEnqueued(ExecutionEnqueued {
                report_key: ReportKey(id(1)),
                principal: None,
                execution_id: ExecutionId(id(2)),
                at: Timestamp(1_768_989_600_000),
                queue: "partner_tasks".into(),
                max_retries: 2,
                max_retries_defaulted: true,
                message_version: Some("1.0".into()),
                metadata,
                manual_retry: Some(ManualRetry {
                    previous_execution_id: Some(ExecutionId(id(3))),
                    by: Some("ops".into()),
                    reason: None,
                }),
            }),
            Event::ExecutionClaimed(ExecutionClaimed {
                report_key: ReportKey(id(4)),
                principal: None,
                execution_id: ExecutionId(id(2)),
                at: Timestamp(1_768_989_601_000),
                worker: "w-1".into(),
                attempt: 3,
                reclaim: Some(Reclaim::LeaseExpired { lease_ms: 60_000 }),
            }),
            Event::ExecutionSucceeded(ExecutionSucceeded {
                report_key: ReportKey(id(5)),
                principal: None,
                execution_id: ExecutionId(id(2)),
                at: Timestamp(-5),
                worker: None,
                unclaimed_success: true,
            }),
            Event::ExecutionFailed(ExecutionFailed {
                report_key: ReportKey(id(6)),
                principal: None,
                execution_id: ExecutionId(id(2)),
                at: Timestamp(1_768_989_602_000),
                worker: Some("w-1".into()),
                error_message: "timeout".into(),
                error_stack: Some("at x\nat y".into()),
                category: "network".into(),
                category_source: CategorySource::Classified,
                retry_count: 1,
                status: ExecutionStatus::Failed,
                backoff_ms: Some(30_000),
                next_retry_at: Some(Timestamp(1_768_989_632_000)),
            }),
            Event::ExecutionArchived(ExecutionArchived {
                report_key: ReportKey(id(7)),
                principal: None,
                execution_id: ExecutionId(id(2)),
                at: Timestamp(1_768_989_603_000),
                reason: Some("manual".into()),
                by: None,
                from_status: ExecutionStatus::Dlq,
            }),
            Event::ReportRejected(ReportRejected {
                report_key: ReportKey(id(8)),
                principal: None,
                op: Op::Fail,
                execution_id: ExecutionId(id(2)),
                at: Timestamp(1_768_989_604_000),
                worker: None,
                error: Some(ReportedError {
                    message: "late".into(),
                    category: None,
                    stack: None,
                }),
                reason: RejectionReason::InvalidTransition {
                    status: ExecutionStatus::Archived,
                },
            }),
            Event::ReportRejected(ReportRejected {
                report_key: ReportKey(id(9)),
                principal: None,
                op: Op::Enqueue,
                execution_id: ExecutionId(id(10)),
                at: Timestamp(0),
                worker: None,
                error: None,
                reason: RejectionReason::DuplicateEnqueue {
                    active_execution_id: ExecutionId(id(2)),
                },
            }),
        ]
    }

    #[test]
    fn both_versions_round_trip_and_version_2_is_smaller() {
        for event in every_kind() {
            let json = encode(&event, 1);
            let binary = encode(&event, 2);
            assert_eq!(decode_json(event.type_name(), &json).unwrap(), event);
            assert_eq!(decode_binary(event.type_name(), &binary).unwrap(), event);
            assert!(
                binary.len() * 2 < json.len(),
                "{} vs {}",
                binary.len(),
                json.len()
            );
        }
    }

    #[test]
    fn truncated_or_padded_version_2_payloads_are_errors() {
        for event in every_kind() {
            let binary = encode(&event, 2);
            for cut in [0, 1, binary.len() / 2, binary.len() - 1] {
                assert!(decode_binary(event.type_name(), &binary[..cut]).is_err());
            }
            let mut padded = binary.clone();
            padded.push(0);
            assert!(decode_binary(event.type_name(), &padded).is_err());
        }
    }

    /// Every kind of event of [`every_kind`], at version 2.
    const PINNED: [&str; 7] = [
        "1000000000000000000000000000000001100000000000000000000000000000000280a4f9fffb660d706172746e65725f7461736b7302010103312e30327b226e223a5b312c322e352c7b2264656570223a6e756c6c7d5d2c22706172746e6572436f6465223a225341544c4f43227d0101100000000000000000000000000000000301036f707300",
        "10000000000000000000000000000000041000000000000000000000000000000002d0b3f9fffb6603772d31030101e0d403",
        "10000000000000000000000000000000051000000000000000000000000000000002090001",
        "10000000000000000000000000000000061000000000000000000000000000000002a0c3f9fffb660103772d310774696d656f75740109617420780a61742079076e6574776f726b01010301b0ea01018098fdfffb66",
        "10000000000000000000000000000000071000000000000000000000000000000002f0d2f9fffb6601066d616e75616c0004",
        "1000000000000000000000000000000008031000000000000000000000000000000002c0e2f9fffb660001046c61746500000305",
        "100000000000000000000000000000000900100000000000000000000000000000000a000000001000000000000000000000000000000002",
    ];

    /// The layout is fixed forever (module docs): these bytes must never change.
    #[test]
    fn version_2_bytes_are_pinned() {
        let hashed: Vec<String> = every_kind()
            .iter()
            .map(|event| {
                let bytes = encode(event, 2);
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            })
            .collect();
        assert_eq!(hashed, PINNED);
    }

    /// Version 3 is the version-2 body and the principal after it; version 2 upcasts to it with
    /// no principal, and a principal survives every version that can hold it.
    #[test]
    fn version_3_adds_the_principal_to_the_version_2_body() {
        for mut event in every_kind() {
            let v2 = encode(&event, 2);
            let mut expected = v2.clone();
            expected.push(0);
            assert_eq!(
                encode(&event, 3),
                expected,
                "no principal: one 00 byte after the body"
            );
            assert_eq!(
                decode_binary(event.type_name(), &v2).unwrap().principal(),
                None
            );
            event.set_principal(Some("w1".into()));
            let v3 = encode(&event, 3);
            assert_eq!(&v3[..v2.len()], &v2[..], "the body is the version-2 layout");
            assert_eq!(&v3[v2.len()..], b"\x01\x02w1");
            assert_eq!(decode_v3(event.type_name(), &v3).unwrap(), event);
            let json = encode(&event, 1);
            assert!(String::from_utf8_lossy(&json).contains(r#""principal":"w1""#));
            assert_eq!(decode_json(event.type_name(), &json).unwrap(), event);
            for cut in [v2.len(), v3.len() - 1] {
                assert!(decode_v3(event.type_name(), &v3[..cut]).is_err());
            }
            let mut padded = v3.clone();
            padded.push(0);
            assert!(decode_v3(event.type_name(), &padded).is_err());
        }
    }
}
