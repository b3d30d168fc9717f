//! Reading legacy tracker exports: TaskTracker `mongoexport` files (relaxed or canonical Extended
//! JSON, one document per line or a JSON array) through the bson crate, and any other tracker
//! through a TOML mapping onto the ledger's fields.

use crate::ReplayError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::BufRead;

/// Every field name the comparison knows, by its TaskTracker name: first the ones compared by
/// default (SPEC section 6), then the rest of seeds/001.
pub const KNOWN_FIELDS: [&str; 16] = [
    "status",
    "retryCount",
    "maxRetries",
    "queueName",
    "enqueuedAt",
    "processingStartedAt",
    "completedAt",
    "failedAt",
    "archivedAt",
    "errorCategory",
    "errorMessage",
    "errorStack",
    "messageVersion",
    "archivedReason",
    "archivedBy",
    "createdAt",
];

/// The fields compared by default (SPEC section 6): the first eleven of [`KNOWN_FIELDS`].
pub const DEFAULT_FIELDS: &[&str] = KNOWN_FIELDS.split_at(11).0;

/// The position of a field in [`KNOWN_FIELDS`] (and in [`LegacyDoc::fields`]).
pub fn field_index(field: &str) -> Option<usize> {
    KNOWN_FIELDS.iter().position(|known| *known == field)
}

pub fn is_time_field(field: &str) -> bool {
    field.ends_with("At")
}

/// One field's value, normalised across Extended JSON spellings.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Null,
    Text(String),
    Number(f64),
    /// Milliseconds since the epoch.
    Time(i64),
}

impl FieldValue {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::Null => serde_json::Value::Null,
            FieldValue::Text(text) => serde_json::Value::String(text.clone()),
            FieldValue::Number(n) if n.fract() == 0.0 && n.abs() < 9e15 => (*n as i64).into(),
            FieldValue::Number(n) => serde_json::json!(n),
            FieldValue::Time(ms) => {
                serde_json::Value::String(taskledger_domain::Timestamp(*ms).to_string())
            }
        }
    }

    /// Equal, with instants within `tolerance_ms`.
    pub fn matches(&self, other: &FieldValue, tolerance_ms: i64) -> bool {
        match (self, other) {
            (FieldValue::Time(a), FieldValue::Time(b)) => (a - b).abs() <= tolerance_ms,
            (FieldValue::Number(a), FieldValue::Number(b)) => a == b,
            (a, b) => a == b,
        }
    }
}

/// A legacy document reduced to what the comparison needs.
#[derive(Debug, Clone)]
pub struct LegacyDoc {
    /// 1-based line (or array index) in the export.
    pub line: u64,
    /// executionId (TaskTracker) or the taskId built by the mapping.
    pub key: String,
    pub task_id: Option<String>,
    /// By ledger (TaskTracker) field, in [`KNOWN_FIELDS`] order; absent is `Null`.
    pub fields: Vec<FieldValue>,
    /// The document as exported, for the HTML report.
    pub raw: serde_json::Value,
    /// The latest instant anywhere in the document's top-level fields.
    pub latest_instant: Option<i64>,
}

fn value_of(bson: &bson::Bson) -> FieldValue {
    use bson::Bson;
    match bson {
        Bson::Null | Bson::Undefined => FieldValue::Null,
        Bson::String(text) => FieldValue::Text(text.clone()),
        Bson::Int32(n) => FieldValue::Number(f64::from(*n)),
        Bson::Int64(n) => FieldValue::Number(*n as f64),
        Bson::Double(n) => FieldValue::Number(*n),
        Bson::Decimal128(d) => d
            .to_string()
            .parse::<f64>()
            .map_or_else(|_| FieldValue::Text(d.to_string()), FieldValue::Number),
        Bson::DateTime(instant) => FieldValue::Time(instant.timestamp_millis()),
        Bson::Boolean(b) => FieldValue::Text(b.to_string()),
        Bson::ObjectId(id) => FieldValue::Text(id.to_hex()),
        other => FieldValue::Text(other.to_string()),
    }
}

/// Mapping of another tracker onto the ledger (TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub tracker: TrackerMapping,
    /// Ledger field name (TaskTracker spelling) → the tracker's field name.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// The tracker's status → ledger status.
    #[serde(default)]
    pub status: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerMapping {
    #[serde(default = "default_tracker_name")]
    pub name: String,
    /// How to build the taskId from a document, e.g. `partner_tasks:{partnerCode}:{aircraftId}:{logId}`.
    pub task_id: String,
    /// Only ledger tasks of this queue are expected in the tracker.
    pub queue: Option<String>,
}

fn default_tracker_name() -> String {
    "tracker".into()
}

impl Mapping {
    pub fn parse(text: &str, source: &str) -> Result<Mapping, ReplayError> {
        let mapping: Mapping = toml::from_str(text).map_err(|error| ReplayError::Input {
            line: error
                .span()
                .map_or(0, |span| text[..span.start].lines().count() as u64),
            problem: format!("{source}: {error}"),
        })?;
        if !mapping.tracker.task_id.contains('{') {
            return Err(ReplayError::Input {
                line: 0,
                problem: format!("{source}: tracker.task_id needs {{field}} placeholders"),
            });
        }
        for field in mapping.fields.keys() {
            if !KNOWN_FIELDS.contains(&field.as_str()) {
                return Err(ReplayError::Input {
                    line: 0,
                    problem: format!(
                        "{source}: [fields] {field:?} is not a ledger field (one of {})",
                        KNOWN_FIELDS.join(", ")
                    ),
                });
            }
        }
        Ok(mapping)
    }

    fn render_task_id(&self, document: &bson::Document) -> Result<String, String> {
        let template = &self.tracker.task_id;
        let mut out = String::with_capacity(template.len() + 32);
        let mut rest = template.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..]
                .find('}')
                .ok_or("unclosed { in tracker.task_id")?
                + open;
            let name = &rest[open + 1..close];
            match document.get(name) {
                Some(bson::Bson::String(text)) => out.push_str(text),
                Some(other @ (bson::Bson::Int32(_) | bson::Bson::Int64(_))) => {
                    out.push_str(&other.to_string())
                }
                _ => {
                    return Err(format!(
                        "field `{name}` (in tracker.task_id) is missing or not a string"
                    ))
                }
            }
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

enum DocumentSource<'a> {
    Text(&'a str),
    Value(serde_json::Value),
}

/// Reads an export: one Extended JSON document per line, or one JSON array.
/// `keep_raw` keeps each document as exported (for the HTML report); without it only the
/// compared fields are held, so a million documents fit in a few hundred MB.
pub fn read_export(
    input: &mut dyn BufRead,
    source: &str,
    mapping: Option<&Mapping>,
    keep_raw: bool,
) -> Result<Vec<LegacyDoc>, ReplayError> {
    let mut docs = Vec::new();
    let first = input
        .fill_buf()
        .map_err(|error| ReplayError::Io(format!("{source}: {error}")))?;
    let array = first.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let bad = |line: u64, problem: String| ReplayError::Input {
        line,
        problem: format!("{source}: {problem}"),
    };
    if array {
        let mut text = String::new();
        input
            .read_to_string(&mut text)
            .map_err(|error| ReplayError::Io(format!("{source}: {error}")))?;
        let values: Vec<serde_json::Value> = serde_json::from_str(&text)
            .map_err(|e| bad(e.line() as u64, format!("not a JSON array: {e}")))?;
        for (index, value) in values.into_iter().enumerate() {
            docs.push(
                document(
                    DocumentSource::Value(value),
                    index as u64 + 1,
                    mapping,
                    keep_raw,
                )
                .map_err(|p| bad(index as u64 + 1, p))?,
            );
        }
    } else {
        // Lines are read in batches and parsed on every core; results keep line order.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        let mut lines = input.lines();
        let mut number = 0u64;
        loop {
            let mut batch: Vec<(u64, String)> = Vec::with_capacity(PARSE_BATCH_LINES);
            for line in lines.by_ref().take(PARSE_BATCH_LINES) {
                number += 1;
                let line = line.map_err(|error| bad(number, error.to_string()))?;
                if !line.trim().is_empty() {
                    batch.push((number, line));
                }
            }
            if batch.is_empty() {
                break;
            }
            let share = batch.len().div_ceil(threads);
            let parsed: Vec<Result<Vec<LegacyDoc>, ReplayError>> = std::thread::scope(|scope| {
                let workers: Vec<_> = batch
                    .chunks(share)
                    .map(|part| {
                        scope.spawn(move || {
                            part.iter()
                                .map(|(number, line)| {
                                    document(DocumentSource::Text(line), *number, mapping, keep_raw)
                                        .map_err(|p| bad(*number, p))
                                })
                                .collect::<Result<Vec<_>, _>>()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|worker| {
                        worker.join().unwrap_or_else(|_| {
                            Err(ReplayError::Io("an export parser thread panicked".into()))
                        })
                    })
                    .collect()
            });
            for part in parsed {
                docs.extend(part?);
            }
        }
    }
    Ok(docs)
}

/// Lines parsed per round of the parallel parser: big enough to keep every core busy, small
/// enough that the raw lines of one round stay a few tens of MB.
const PARSE_BATCH_LINES: usize = 65_536;

/// The fields of a TaskTracker line, each read by the bson crate's Extended JSON deserializer;
/// everything else (metadata, `_id`, `__v`) is skipped without being built.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskTrackerLine {
    execution_id: Option<bson::Bson>,
    task_id: Option<bson::Bson>,
    // In KNOWN_FIELDS order.
    status: Option<bson::Bson>,
    retry_count: Option<bson::Bson>,
    max_retries: Option<bson::Bson>,
    queue_name: Option<bson::Bson>,
    enqueued_at: Option<bson::Bson>,
    processing_started_at: Option<bson::Bson>,
    completed_at: Option<bson::Bson>,
    failed_at: Option<bson::Bson>,
    archived_at: Option<bson::Bson>,
    error_category: Option<bson::Bson>,
    error_message: Option<bson::Bson>,
    error_stack: Option<bson::Bson>,
    message_version: Option<bson::Bson>,
    archived_reason: Option<bson::Bson>,
    archived_by: Option<bson::Bson>,
    created_at: Option<bson::Bson>,
    updated_at: Option<bson::Bson>,
}

fn tasktracker_line(text: &str, line: u64, keep_raw: bool) -> Result<LegacyDoc, String> {
    let parsed: TaskTrackerLine =
        serde_json::from_str(text).map_err(|e| format!("not an Extended JSON document: {e}"))?;
    let string = |value: &Option<bson::Bson>| match value {
        Some(bson::Bson::String(text)) => Some(text.clone()),
        _ => None,
    };
    let key =
        string(&parsed.execution_id).ok_or("field `executionId` is missing or not a string")?;
    let known = [
        &parsed.status,
        &parsed.retry_count,
        &parsed.max_retries,
        &parsed.queue_name,
        &parsed.enqueued_at,
        &parsed.processing_started_at,
        &parsed.completed_at,
        &parsed.failed_at,
        &parsed.archived_at,
        &parsed.error_category,
        &parsed.error_message,
        &parsed.error_stack,
        &parsed.message_version,
        &parsed.archived_reason,
        &parsed.archived_by,
        &parsed.created_at,
    ];
    let fields: Vec<FieldValue> = known
        .iter()
        .map(|value| value.as_ref().map_or(FieldValue::Null, value_of))
        .collect();
    let latest_instant = known
        .iter()
        .copied()
        .chain(std::iter::once(&parsed.updated_at))
        .filter_map(|value| match value {
            Some(bson::Bson::DateTime(instant)) => Some(instant.timestamp_millis()),
            _ => None,
        })
        .max();
    Ok(LegacyDoc {
        line,
        key,
        task_id: string(&parsed.task_id),
        fields,
        raw: if keep_raw {
            serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
        } else {
            serde_json::Value::Null
        },
        latest_instant,
    })
}

fn document(
    value: DocumentSource<'_>,
    line: u64,
    mapping: Option<&Mapping>,
    keep_raw: bool,
) -> Result<LegacyDoc, String> {
    if let (None, DocumentSource::Text(text)) = (mapping, &value) {
        return tasktracker_line(text, line, keep_raw);
    }
    // Extended JSON ($date, $numberLong, $oid…, relaxed or canonical) is read by the bson crate
    // itself: `Document`'s deserializer understands it, straight from the JSON text.
    let (document, raw) = match value {
        DocumentSource::Text(text) => {
            let document: bson::Document =
                serde_json::from_str(text).map_err(|e| format!("not Extended JSON: {e}"))?;
            let raw = if keep_raw {
                serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
            } else {
                serde_json::Value::Null
            };
            (document, raw)
        }
        DocumentSource::Value(value) => {
            let raw = if keep_raw {
                value.clone()
            } else {
                serde_json::Value::Null
            };
            match bson::Bson::try_from(value).map_err(|e| format!("not Extended JSON: {e}"))? {
                bson::Bson::Document(document) => (document, raw),
                _ => return Err("a document must be a JSON object".into()),
            }
        }
    };
    let latest_instant = document
        .values()
        .filter_map(|value| match value {
            bson::Bson::DateTime(instant) => Some(instant.timestamp_millis()),
            _ => None,
        })
        .max();
    let text_of = |name: &str| match document.get(name) {
        Some(bson::Bson::String(text)) => Some(text.clone()),
        _ => None,
    };
    let mut fields = vec![FieldValue::Null; KNOWN_FIELDS.len()];
    match mapping {
        None => {
            let key =
                text_of("executionId").ok_or("field `executionId` is missing or not a string")?;
            for (index, field) in KNOWN_FIELDS.iter().enumerate() {
                if let Some(value) = document.get(field) {
                    fields[index] = value_of(value);
                }
            }
            Ok(LegacyDoc {
                line,
                key,
                task_id: text_of("taskId"),
                fields,
                raw,
                latest_instant,
            })
        }
        Some(mapping) => {
            let key = mapping.render_task_id(&document)?;
            for (ledger_field, tracker_field) in &mapping.fields {
                let mut value = document
                    .get(tracker_field)
                    .map_or(FieldValue::Null, value_of);
                if ledger_field == "status" {
                    if let FieldValue::Text(status) = &value {
                        let mapped = mapping.status.get(status).ok_or_else(|| {
                            format!(
                                "status {status:?} has no entry in the mapping's [status] table"
                            )
                        })?;
                        value = FieldValue::Text(mapped.clone());
                    }
                }
                if let Some(index) = field_index(ledger_field) {
                    fields[index] = value;
                }
            }
            Ok(LegacyDoc {
                line,
                key: key.clone(),
                task_id: Some(key),
                fields,
                raw,
                latest_instant,
            })
        }
    }
}
