//! Lifecycle reports, the input (SPEC section 3): parsed and validated, with errors that name the
//! field at fault.

use crate::error::DomainError;
use crate::ids::{ExecutionId, ReportKey, TaskId};
use crate::limits::*;
use crate::time::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};

/// The kind of a report.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum Op {
    Enqueue,
    Claim,
    Succeed,
    Fail,
    Archive,
    Retry,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Enqueue,
        Op::Claim,
        Op::Succeed,
        Op::Fail,
        Op::Archive,
        Op::Retry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Enqueue => "enqueue",
            Op::Claim => "claim",
            Op::Succeed => "succeed",
            Op::Fail => "fail",
            Op::Archive => "archive",
            Op::Retry => "retry",
        }
    }

    /// Archive and retry are operators' actions wherever they arrive (SPEC section 3); the
    /// other four are what workers report.
    pub fn is_operator_action(self) -> bool {
        matches!(self, Op::Archive | Op::Retry)
    }

    fn parse(text: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == text)
    }
}

/// An error as a worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportedError {
    pub message: String,
    /// The worker's own classification; `None` lets the ledger's classifier decide.
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub stack: Option<String>,
}

/// What a report says happened, by op.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum ReportBody {
    Enqueue {
        execution_id: ExecutionId,
        queue: String,
        max_retries: Option<u32>,
        message_version: Option<String>,
        metadata: Option<Map<String, Value>>,
    },
    Claim {
        execution_id: ExecutionId,
        worker: String,
        /// The queue redelivered the message (a worker died holding it): the claim may take a
        /// `processing` execution over (a reclaim). Left out of the canonical content when
        /// false, so a claim without the field keeps the key it always had.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        redelivered: bool,
    },
    Succeed {
        execution_id: ExecutionId,
        worker: Option<String>,
    },
    Fail {
        execution_id: ExecutionId,
        worker: Option<String>,
        error: ReportedError,
    },
    Archive {
        execution_id: ExecutionId,
        reason: Option<String>,
        by: Option<String>,
    },
    Retry {
        execution_id: ExecutionId,
        by: Option<String>,
        reason: Option<String>,
        queue: Option<String>,
        max_retries: Option<u32>,
        message_version: Option<String>,
        metadata: Option<Map<String, Value>>,
    },
}

/// One validated lifecycle report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Optional idempotency key. Not part of the canonical content.
    #[serde(skip)]
    pub report_id: Option<String>,
    pub task_id: TaskId,
    /// When it happened, on the reporter's clock.
    pub at: Timestamp,
    #[serde(flatten)]
    pub body: ReportBody,
    /// Who sent it, as the ledger authenticated them (a token's name, `local:<OS user>`): set by
    /// the caller that authenticated the sender, never read from the report's own text. Not
    /// part of the canonical content (the same report from two senders is one report); recorded
    /// in every event decided from it.
    #[serde(skip)]
    pub principal: Option<String>,
}

impl Report {
    /// Parses one report from its JSON text (one NDJSON line).
    pub fn from_json(text: &str) -> Result<Report, DomainError> {
        if text.len() > REPORT_BYTES_MAX {
            return Err(DomainError::field(
                "",
                format!(
                    "report is {} bytes, more than the limit of {REPORT_BYTES_MAX}",
                    text.len()
                ),
            ));
        }
        // The common case straight into typed fields (borrowed where the text allows); anything
        // that does not fit them — a wrong type, a duplicate field, bad JSON — goes the general
        // way, which names the problem. Both ways validate with the same `build`.
        if let Ok(mut fields) = serde_json::from_str::<TypedFields>(text) {
            return build(&mut fields);
        }
        let value: Value = serde_json::from_str(text).map_err(|error| DomainError::Json {
            message: error.to_string(),
        })?;
        Report::from_value(value)
    }

    /// Validates a report already parsed as JSON.
    pub fn from_value(value: Value) -> Result<Report, DomainError> {
        let Value::Object(mut fields) = value else {
            return Err(DomainError::field("", "a report must be a JSON object"));
        };
        build(&mut fields)
    }

    pub fn op(&self) -> Op {
        match self.body {
            ReportBody::Enqueue { .. } => Op::Enqueue,
            ReportBody::Claim { .. } => Op::Claim,
            ReportBody::Succeed { .. } => Op::Succeed,
            ReportBody::Fail { .. } => Op::Fail,
            ReportBody::Archive { .. } => Op::Archive,
            ReportBody::Retry { .. } => Op::Retry,
        }
    }

    pub fn execution_id(&self) -> ExecutionId {
        match &self.body {
            ReportBody::Enqueue { execution_id, .. }
            | ReportBody::Claim { execution_id, .. }
            | ReportBody::Succeed { execution_id, .. }
            | ReportBody::Fail { execution_id, .. }
            | ReportBody::Archive { execution_id, .. }
            | ReportBody::Retry { execution_id, .. } => *execution_id,
        }
    }

    /// The canonical content: the validated report re-encoded with a fixed field order and
    /// normalised values (instants in milliseconds, UUIDs lower-case), so that two texts of the
    /// same report have the same key whatever their spacing or key order.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serializing plain structs of strings, numbers and JSON maps cannot fail.
        serde_json::to_vec(self).expect("a validated report always serializes")
    }

    /// The idempotency key: from `reportId` when given, else from the canonical content.
    pub fn key(&self) -> ReportKey {
        match &self.report_id {
            Some(report_id) => ReportKey::from_report_id(&self.task_id, report_id),
            None => ReportKey::from_canonical_content(&self.canonical_bytes()),
        }
    }
}

/// Where a report's fields come from: a parsed JSON object ([`Map`]) or the typed fields of
/// [`TypedFields`]. Each field is taken once.
trait Fields {
    /// A string field: `None` when absent or null; an error when not a string or over the limit.
    fn string(
        &mut self,
        name: &'static str,
        bytes_max: usize,
    ) -> Result<Option<String>, DomainError>;
    fn max_retries(&mut self) -> Result<Option<u32>, DomainError>;
    /// A boolean field: `None` when absent or null; an error when not a boolean.
    fn boolean(&mut self, name: &'static str) -> Result<Option<bool>, DomainError>;
    fn metadata(&mut self) -> Result<Option<Map<String, Value>>, DomainError>;
    /// `error` as it came: absent, null, a string or an object.
    fn error(&mut self) -> Option<Value>;
}

/// Every rule of a report's shape, whichever way its fields were parsed.
fn build(fields: &mut impl Fields) -> Result<Report, DomainError> {
    let op_text = required_string(fields, "op", NAME_BYTES_MAX)?;
    let op = Op::parse(&op_text).ok_or_else(|| {
        DomainError::field(
            "op",
            format!(
                "unknown op {op_text:?} (expected one of enqueue, claim, succeed, fail, archive, retry)"
            ),
        )
    })?;
    let task_id = TaskId::parse(&required_string(fields, "taskId", TASK_ID_BYTES_MAX)?)
        .map_err(|problem| DomainError::field("taskId", problem))?;
    let at_text = required_string(fields, "at", NAME_BYTES_MAX)?;
    let at = Timestamp::parse(&at_text).ok_or_else(|| {
        DomainError::field(
            "at",
            format!("{at_text:?} is not an RFC 3339 instant such as 2026-01-21T10:00:00.000Z"),
        )
    })?;
    let report_id = fields.string("reportId", REPORT_ID_BYTES_MAX)?;
    let execution_id = {
        let text = required_string(fields, "executionId", NAME_BYTES_MAX)?;
        ExecutionId::parse(&text).map_err(|problem| DomainError::field("executionId", problem))?
    };
    let body = match op {
        Op::Enqueue => ReportBody::Enqueue {
            execution_id,
            queue: key_string(fields, "queue")?
                .unwrap_or_else(|| task_id.queue_prefix().to_owned()),
            max_retries: fields.max_retries()?,
            message_version: fields.string("messageVersion", NAME_BYTES_MAX)?,
            metadata: fields.metadata()?,
        },
        Op::Claim => ReportBody::Claim {
            execution_id,
            worker: {
                let worker = required_string(fields, "worker", KEY_BYTES_MAX)?;
                check_key("worker", &worker)?;
                worker
            },
            redelivered: fields.boolean("redelivered")?.unwrap_or(false),
        },
        Op::Succeed => ReportBody::Succeed {
            execution_id,
            worker: key_string(fields, "worker")?,
        },
        Op::Fail => ReportBody::Fail {
            execution_id,
            worker: key_string(fields, "worker")?,
            error: reported_error(fields.error())?,
        },
        Op::Archive => ReportBody::Archive {
            execution_id,
            reason: fields.string("reason", MESSAGE_BYTES_MAX)?,
            by: key_string(fields, "by")?,
        },
        Op::Retry => ReportBody::Retry {
            execution_id,
            by: key_string(fields, "by")?,
            reason: fields.string("reason", MESSAGE_BYTES_MAX)?,
            queue: key_string(fields, "queue")?,
            max_retries: fields.max_retries()?,
            message_version: fields.string("messageVersion", NAME_BYTES_MAX)?,
            metadata: fields.metadata()?,
        },
    };
    Ok(Report {
        report_id,
        task_id,
        at,
        body,
        principal: None,
    })
}

/// A key field (queue, worker, operator note): at most [`KEY_BYTES_MAX`] bytes, no control
/// characters (SPEC section 3). A NUL in a queue name would otherwise collide with the read
/// models' index separator.
fn key_string(fields: &mut impl Fields, name: &'static str) -> Result<Option<String>, DomainError> {
    let text = fields.string(name, KEY_BYTES_MAX)?;
    if let Some(text) = &text {
        check_key(name, text)?;
    }
    Ok(text)
}

/// The rule of [`key_string`], for keys that arrive another way (a principal's name).
pub fn check_key(name: &str, text: &str) -> Result<(), DomainError> {
    match crate::ids::key_problem(text) {
        Some(problem) => Err(DomainError::field(name, problem)),
        None => Ok(()),
    }
}

/// A string field's limit.
fn checked_string(
    name: &str,
    text: String,
    bytes_max: usize,
) -> Result<Option<String>, DomainError> {
    if text.len() > bytes_max {
        Err(DomainError::field(
            name,
            format!(
                "is {} bytes, more than the limit of {bytes_max}",
                text.len()
            ),
        ))
    } else {
        Ok(Some(text))
    }
}

fn checked_max_retries(
    number: Option<u64>,
    shown: impl std::fmt::Display,
) -> Result<Option<u32>, DomainError> {
    match number {
        Some(n) if n <= u64::from(MAX_RETRIES_MAX) => Ok(Some(n as u32)),
        _ => Err(DomainError::field(
            "maxRetries",
            format!("expected an integer from 0 to {MAX_RETRIES_MAX}, found {shown}"),
        )),
    }
}

fn checked_metadata(map: Map<String, Value>) -> Result<Option<Map<String, Value>>, DomainError> {
    let size = serde_json::to_vec(&map)
        .map(|bytes| bytes.len())
        .unwrap_or(0);
    if size > METADATA_BYTES_MAX {
        return Err(DomainError::field(
            "metadata",
            format!("is {size} bytes, more than the limit of {METADATA_BYTES_MAX}"),
        ));
    }
    Ok(Some(map))
}

/// The general way: a parsed JSON object, every field checked for its type.
impl Fields for Map<String, Value> {
    fn string(
        &mut self,
        name: &'static str,
        bytes_max: usize,
    ) -> Result<Option<String>, DomainError> {
        match self.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => checked_string(name, text, bytes_max),
            Some(other) => Err(DomainError::field(
                name,
                format!("expected a string, found {}", json_kind(&other)),
            )),
        }
    }

    fn max_retries(&mut self) -> Result<Option<u32>, DomainError> {
        match self.remove("maxRetries") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(number)) => checked_max_retries(number.as_u64(), number),
            Some(other) => Err(DomainError::field(
                "maxRetries",
                format!("expected an integer, found {}", json_kind(&other)),
            )),
        }
    }

    fn boolean(&mut self, name: &'static str) -> Result<Option<bool>, DomainError> {
        match self.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(flag)),
            Some(other) => Err(DomainError::field(
                name,
                format!("expected a boolean, found {}", json_kind(&other)),
            )),
        }
    }

    fn metadata(&mut self) -> Result<Option<Map<String, Value>>, DomainError> {
        match self.remove("metadata") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => checked_metadata(map),
            Some(other) => Err(DomainError::field(
                "metadata",
                format!("expected an object, found {}", json_kind(&other)),
            )),
        }
    }

    fn error(&mut self) -> Option<Value> {
        self.remove("error")
    }
}

/// The fast way: the fields a report may have, typed, strings borrowed from the text unless
/// escaped. Unknown fields are ignored, as the general way ignores them; a field of another type
/// fails the whole parse, and the text goes the general way for its error.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypedFields<'a> {
    #[serde(borrow)]
    op: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    task_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    at: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    report_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    execution_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    queue: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    message_version: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    worker: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    by: Option<std::borrow::Cow<'a, str>>,
    max_retries: Option<u64>,
    redelivered: Option<bool>,
    metadata: Option<Map<String, Value>>,
    error: Option<Value>,
}

impl Fields for TypedFields<'_> {
    fn string(
        &mut self,
        name: &'static str,
        bytes_max: usize,
    ) -> Result<Option<String>, DomainError> {
        let field = match name {
            "op" => &mut self.op,
            "taskId" => &mut self.task_id,
            "at" => &mut self.at,
            "reportId" => &mut self.report_id,
            "executionId" => &mut self.execution_id,
            "queue" => &mut self.queue,
            "messageVersion" => &mut self.message_version,
            "worker" => &mut self.worker,
            "reason" => &mut self.reason,
            "by" => &mut self.by,
            // Every string field `build` asks for is above; a new one must be added there too
            // (the tests' fixtures would otherwise lose it on the fast way).
            _ => {
                debug_assert!(false, "{name} is not one of the typed fields");
                return Ok(None);
            }
        };
        match field.take() {
            None => Ok(None),
            Some(text) => checked_string(name, text.into_owned(), bytes_max),
        }
    }

    fn max_retries(&mut self) -> Result<Option<u32>, DomainError> {
        match self.max_retries.take() {
            None => Ok(None),
            Some(n) => checked_max_retries(Some(n), n),
        }
    }

    fn boolean(&mut self, name: &'static str) -> Result<Option<bool>, DomainError> {
        match name {
            "redelivered" => Ok(self.redelivered.take()),
            // As for `string`: every boolean field `build` asks for is above.
            _ => {
                debug_assert!(false, "{name} is not one of the typed fields");
                Ok(None)
            }
        }
    }

    fn metadata(&mut self) -> Result<Option<Map<String, Value>>, DomainError> {
        match self.metadata.take() {
            None => Ok(None),
            Some(map) => checked_metadata(map),
        }
    }

    fn error(&mut self) -> Option<Value> {
        self.error.take()
    }
}

fn required_string(
    fields: &mut impl Fields,
    name: &'static str,
    bytes_max: usize,
) -> Result<String, DomainError> {
    match fields.string(name, bytes_max)? {
        Some(text) if !text.is_empty() => Ok(text),
        Some(_) => Err(DomainError::field(name, "must not be empty")),
        None => Err(DomainError::field(name, "is required")),
    }
}

fn reported_error(value: Option<Value>) -> Result<ReportedError, DomainError> {
    let mut error = match value {
        Some(Value::Object(map)) => map,
        // A bare string is how many workers report an error: accept it as the message.
        Some(Value::String(message)) => {
            let mut map = Map::new();
            map.insert("message".into(), Value::String(message));
            map
        }
        None | Some(Value::Null) => return Err(DomainError::field("error", "is required")),
        Some(other) => {
            return Err(DomainError::field(
                "error",
                format!("expected an object, found {}", json_kind(&other)),
            ))
        }
    };
    let message = error
        .string("message", MESSAGE_BYTES_MAX)
        .map_err(|e| nest("error", e))?
        .unwrap_or_default();
    let category = error
        .string("category", NAME_BYTES_MAX)
        .map_err(|e| nest("error", e))?;
    if let Some(category) = &category {
        let valid = !category.is_empty()
            && category
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(DomainError::field(
                "error.category",
                format!("{category:?} is not a category name (lower-case letters, digits, _)"),
            ));
        }
    }
    let stack = error
        .string("stack", STACK_BYTES_MAX)
        .map_err(|e| nest("error", e))?;
    Ok(ReportedError {
        message,
        category,
        stack,
    })
}

fn nest(parent: &str, error: DomainError) -> DomainError {
    match error {
        DomainError::InvalidField { field, problem } => DomainError::InvalidField {
            field: format!("{parent}.{field}"),
            problem,
        },
        other => other,
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The report an operator's `archive` or `retry` makes, as the CLI's commands and the HTTP
/// service's routes both build it; parse it with [`Report::from_value`] (which checks it).
pub fn operator_report(
    op: Op,
    task_id: &str,
    execution_id: &str,
    at: Timestamp,
    reason: Option<&str>,
    by: Option<&str>,
) -> Value {
    serde_json::json!({
        "op": op,
        "taskId": task_id,
        "executionId": execution_id,
        "at": at.to_string(),
        "reason": reason,
        "by": by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENQUEUE: &str = r#"{"op":"enqueue","taskId":"partner_tasks:SATLOC:695d:02220710","executionId":"0b6f1a2e-7c1d-4e8a-9f00-000000000001","queue":"partner_tasks","at":"2026-01-21T10:00:00.000Z","maxRetries":5}"#;

    fn field_of(text: &str) -> String {
        match Report::from_json(text) {
            Err(DomainError::InvalidField { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn parses_an_enqueue() {
        let report = Report::from_json(ENQUEUE).unwrap();
        assert_eq!(report.op(), Op::Enqueue);
        assert_eq!(
            report.task_id.as_str(),
            "partner_tasks:SATLOC:695d:02220710"
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"op":"dance"}"#), "op");
        assert_eq!(
            field_of(&ENQUEUE.replace("2026-01-21T10:00:00.000Z", "yesterday")),
            "at"
        );
        assert_eq!(field_of(&ENQUEUE.replace("0b6f1a2e-", "zz")), "executionId");
        assert_eq!(
            field_of(&ENQUEUE.replace("\"maxRetries\":5", "\"maxRetries\":-1")),
            "maxRetries"
        );
        assert_eq!(
            field_of(
                r#"{"op":"fail","taskId":"q:1","executionId":"0b6f1a2e-7c1d-4e8a-9f00-000000000001","at":"2026-01-21T10:00:00Z","error":{"message":7}}"#
            ),
            "error.message"
        );
        assert_eq!(
            field_of(
                r#"{"op":"claim","taskId":"q:1","executionId":"0b6f1a2e-7c1d-4e8a-9f00-000000000001","at":"2026-01-21T10:00:00Z"}"#
            ),
            "worker"
        );
    }

    #[test]
    fn canonical_key_ignores_spacing_key_order_and_instant_spelling() {
        let a = Report::from_json(ENQUEUE).unwrap();
        let b = Report::from_json(r#"{ "at":"2026-01-21T11:00:00+01:00", "maxRetries":5, "queue":"partner_tasks", "executionId":"0B6F1A2E-7C1D-4E8A-9F00-000000000001", "taskId":"partner_tasks:SATLOC:695d:02220710", "op":"enqueue" }"#).unwrap();
        assert_eq!(a.key(), b.key());
        let c = Report::from_json(&ENQUEUE.replace("10:00:00.000Z", "10:00:00.001Z")).unwrap();
        assert_ne!(a.key(), c.key());
    }

    const CLAIM: &str = r#"{"op":"claim","taskId":"q:1","executionId":"0b6f1a2e-7c1d-4e8a-9f00-000000000001","worker":"w1","at":"2026-01-21T10:00:00.000Z"}"#;

    /// `redelivered` came after reports were keyed: a claim without it, or with `false`, keeps
    /// the canonical content (so the key and every event id) it had before the field existed.
    #[test]
    fn redelivered_false_or_absent_keeps_the_canonical_content() {
        let plain = Report::from_json(CLAIM).unwrap();
        assert_eq!(
            String::from_utf8(plain.canonical_bytes()).unwrap(),
            r#"{"taskId":"q:1","at":"2026-01-21T10:00:00.000Z","op":"claim","executionId":"0b6f1a2e-7c1d-4e8a-9f00-000000000001","worker":"w1"}"#
        );
        let with = |flag: &str| {
            Report::from_json(&CLAIM.replace("\"at\"", &format!("\"redelivered\":{flag},\"at\"")))
                .unwrap()
        };
        assert_eq!(with("false").key(), plain.key());
        assert_eq!(with("null").key(), plain.key());
        let redelivered = with("true");
        assert_ne!(redelivered.key(), plain.key());
        assert!(matches!(
            redelivered.body,
            ReportBody::Claim {
                redelivered: true,
                ..
            }
        ));
        assert_eq!(
            field_of(&CLAIM.replace("\"at\"", "\"redelivered\":\"yes\",\"at\"")),
            "redelivered"
        );
    }

    #[test]
    fn report_id_decides_the_key() {
        let a =
            Report::from_json(&ENQUEUE.replace("{\"op\"", "{\"reportId\":\"r-1\",\"op\"")).unwrap();
        let b = Report::from_json(
            &ENQUEUE
                .replace("{\"op\"", "{\"reportId\":\"r-1\",\"op\"")
                .replace("10:00:00.000Z", "10:00:09.000Z"),
        )
        .unwrap();
        assert_eq!(a.key(), b.key());
    }

    /// The general way alone, as `from_json` was before it had a fast way.
    fn general(text: &str) -> Result<Report, DomainError> {
        let value: Value = serde_json::from_str(text).map_err(|error| DomainError::Json {
            message: error.to_string(),
        })?;
        Report::from_value(value)
    }

    /// The fast way gives exactly the general way's report (key included) or error, for every
    /// report in the fixtures and for variants that put each field of each op to the test.
    #[test]
    fn the_fast_way_agrees_with_the_general_way() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures");
        let mut texts: Vec<String> = Vec::new();
        let mut files = vec![std::path::PathBuf::from(fixtures).join("partner_pipeline.ndjson")];
        for entry in std::fs::read_dir(format!("{fixtures}/rules")).unwrap() {
            files.push(entry.unwrap().path());
        }
        for file in files {
            for line in std::fs::read_to_string(&file).unwrap().lines() {
                let line = line.strip_prefix("> ").unwrap_or(line);
                if line.starts_with('{') {
                    texts.push(line.to_owned());
                }
            }
        }
        assert!(texts.len() > 50, "fixtures found: {}", texts.len());
        for text in &texts {
            assert!(
                serde_json::from_str::<TypedFields>(text).is_ok(),
                "the fast way takes every valid fixture: {text}"
            );
        }
        let base = texts.clone();
        for text in &base {
            let object: Map<String, Value> = serde_json::from_str(text).unwrap();
            for name in object.keys() {
                let mut without = object.clone();
                without.remove(name);
                texts.push(Value::Object(without).to_string());
                for odd in [
                    Value::Null,
                    Value::from(""),
                    Value::from(7),
                    Value::from(-1),
                    Value::from(2.5),
                    Value::from(true),
                    Value::from("x".repeat(300)),
                    serde_json::json!({"message": 7}),
                    serde_json::json!({"message": "boom", "category": "Bad Name"}),
                    serde_json::json!(["a"]),
                ] {
                    let mut changed = object.clone();
                    changed.insert(name.clone(), odd);
                    texts.push(Value::Object(changed).to_string());
                }
            }
            // Escapes, unknown and duplicate fields, spacing, and what is not a report at all.
            texts.push(text.replacen("\"taskId\":\"", "\"taskId\":\"\\u0071", 1));
            texts.push(text.replacen('{', "{\"extra\":{\"deep\":[1,2]},", 1));
            texts.push(text.replacen('{', "{\"op\":\"claim\",", 1));
            texts.push(text.replace(',', " ,\n "));
            texts.push(format!("{text} trailing"));
            texts.push(format!("[{text}]"));
        }
        for text in &texts {
            let (fast, general) = (Report::from_json(text), general(text));
            assert_eq!(fast, general, "{text}");
            if let (Ok(fast), Ok(general)) = (&fast, &general) {
                assert_eq!(fast.key(), general.key(), "{text}");
            }
        }
    }
}
