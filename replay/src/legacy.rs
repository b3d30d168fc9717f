//! Reading legacy tracker exports: TaskTracker `mongoexport` files (relaxed or canonical Extended
//! JSON, one document per line or a JSON array) through the bson crate, and any other tracker
//! (PartnerLogTracker, Celery's result backend dumped as JSON lines…) through a TOML mapping onto
//! the ledger's fields, whose names are paths into nested documents and arrays (`meta.status`,
//! `args[0]`). Instants may be `$date`, RFC 3339 strings with any offset, or epoch milliseconds.

use crate::ReplayError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::BufRead;
use taskledger_domain::ExecutionStatus;

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
    /// A mapped legacy status that stands for any of these ledger statuses (Celery's `FAILURE`
    /// is the ledger's `failed` or `dlq`: Celery gave up, whatever retries the ledger's policy
    /// would still allow).
    OneOf(Vec<String>),
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
            FieldValue::OneOf(texts) => serde_json::Value::String(texts.join("|")),
        }
    }

    /// Equal, with instants within `tolerance_ms`.
    pub fn matches(&self, other: &FieldValue, tolerance_ms: i64) -> bool {
        match (self, other) {
            (FieldValue::Time(a), FieldValue::Time(b)) => (a - b).abs() <= tolerance_ms,
            (FieldValue::Number(a), FieldValue::Number(b)) => a == b,
            (FieldValue::OneOf(texts), FieldValue::Text(text)) => texts.contains(text),
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

/// A value of a time field as an instant: `$date` already is one; an RFC 3339 string (any
/// offset; one without an offset, as Python's `datetime.utcnow().isoformat()` writes it, is UTC)
/// and an epoch-millisecond number become one. Anything else stays as it is, and so differs from
/// the ledger's instant visibly.
fn as_instant(value: FieldValue) -> FieldValue {
    match &value {
        FieldValue::Text(text) => parse_instant(text).map_or(value, FieldValue::Time),
        FieldValue::Number(ms) if ms.is_finite() && ms.fract() == 0.0 && ms.abs() < 9e15 => {
            FieldValue::Time(*ms as i64)
        }
        _ => value,
    }
}

fn parse_instant(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(instant) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(instant.timestamp_millis());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc().timestamp_millis())
}

/// Converts every time field of `fields` (in [`KNOWN_FIELDS`] order) with [`as_instant`], and
/// returns the latest instant among them.
fn instants(fields: &mut [FieldValue]) -> Option<i64> {
    let mut latest = None;
    for (index, value) in fields.iter_mut().enumerate() {
        if is_time_field(KNOWN_FIELDS[index]) {
            *value = as_instant(std::mem::replace(value, FieldValue::Null));
            if let FieldValue::Time(ms) = value {
                latest = Some(latest.map_or(*ms, |l: i64| l.max(*ms)));
            }
        }
    }
    latest
}

/// One step of a mapping path: a field of a document, or an element of an array.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
}

/// Parses `meta.status`, `args[0]`, `result.exc_message[0]`: dotted field names, each followed
/// by any number of `[index]`.
fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let bad = |why: &str| format!("path {path:?}: {why}");
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if name.is_empty() {
            return Err(bad("every step needs a field name"));
        }
        steps.push(Step::Field(name.to_owned()));
        while !rest.is_empty() {
            let close = rest.find(']').ok_or_else(|| bad("unclosed ["))?;
            let index = rest[1..close]
                .parse::<usize>()
                .map_err(|_| bad("an index is a number, as in args[0]"))?;
            steps.push(Step::Index(index));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(bad("a field name cannot follow ] without a ."));
            }
        }
    }
    Ok(steps)
}

/// The value at a parsed path, if the document has one there.
fn lookup<'a>(document: &'a bson::Document, steps: &[Step]) -> Option<&'a bson::Bson> {
    let (Step::Field(first), rest) = steps.split_first()? else {
        return None;
    };
    let mut value = document.get(first)?;
    for step in rest {
        value = match (step, value) {
            (Step::Field(name), bson::Bson::Document(inner)) => inner.get(name)?,
            (Step::Index(index), bson::Bson::Array(items)) => items.get(*index)?,
            _ => return None,
        };
    }
    Some(value)
}

/// How a value appears inside a taskId: as Python's `str()` prints it, since the trackers that
/// need a template (Celery's) build their identities in Python (`str(args[0])`).
fn template_text(value: &bson::Bson) -> Option<String> {
    use bson::Bson;
    Some(match value {
        Bson::String(text) => text.clone(),
        Bson::Int32(n) => n.to_string(),
        Bson::Int64(n) => n.to_string(),
        Bson::Double(n) if n.is_finite() && n.fract() == 0.0 => format!("{n:.1}"),
        Bson::Double(n) => n.to_string(),
        Bson::Boolean(true) => "True".into(),
        Bson::Boolean(false) => "False".into(),
        Bson::ObjectId(id) => id.to_hex(),
        _ => return None,
    })
}

/// Which of the ledger's models a mapped tracker is compared with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CompareWith {
    /// The TaskTracker document seeds/000's code would have written from the same reports (its
    /// looser rules applied to every report): for trackers written by that code's logic, such
    /// as the PartnerLogTracker beside it.
    #[default]
    LegacyShape,
    /// The ledger's own decisions (status, retryCount, timestamps of each execution): for
    /// trackers the queue software writes itself, such as Celery's result backend.
    Ledger,
}

/// A `[status]` entry: one ledger status, or several any of which agrees.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StatusTarget {
    One(String),
    AnyOf(Vec<String>),
}

impl StatusTarget {
    fn statuses(&self) -> &[String] {
        match self {
            StatusTarget::One(status) => std::slice::from_ref(status),
            StatusTarget::AnyOf(statuses) => statuses,
        }
    }

    fn value(&self) -> FieldValue {
        match self {
            StatusTarget::One(status) => FieldValue::Text(status.clone()),
            StatusTarget::AnyOf(statuses) if statuses.len() == 1 => {
                FieldValue::Text(statuses[0].clone())
            }
            StatusTarget::AnyOf(statuses) => FieldValue::OneOf(statuses.clone()),
        }
    }
}

/// Mapping of another tracker onto the ledger (TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub tracker: TrackerMapping,
    /// Ledger field name (TaskTracker spelling) → the path of the tracker's field
    /// (`status`, `meta.status`, `args[0]`).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// The tracker's status → ledger status (or a list of ledger statuses, any of which agrees).
    #[serde(default)]
    pub status: BTreeMap<String, StatusTarget>,
    /// `fields`, `tracker.task_id`'s placeholders, `tracker.execution_id` and
    /// `tracker.updated_at` parsed once.
    #[serde(skip)]
    paths: Paths,
}

#[derive(Debug, Clone, Default)]
struct Paths {
    /// By ledger field, in [`KNOWN_FIELDS`] order.
    fields: Vec<(usize, Vec<Step>)>,
    /// The template's literal text and placeholders, in order.
    task_id: Vec<Piece>,
    execution_id: Option<Vec<Step>>,
    updated_at: Option<Vec<Step>>,
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Placeholder { path: String, steps: Vec<Step> },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerMapping {
    #[serde(default = "default_tracker_name")]
    pub name: String,
    /// How to build the taskId from a document, e.g. `partner_tasks:{partnerCode}:{aircraftId}:{logId}`
    /// or `{queue}:{name}:{args[0]}`: placeholders are paths into the document.
    pub task_id: String,
    /// The path of the field holding the executionId: documents are then joined per execution
    /// (the taskId is only shown); without it, per task against the task's latest execution.
    #[serde(default)]
    pub execution_id: Option<String>,
    /// The path of the field holding when the document last changed; with the mapped time
    /// fields, the latest of them is the default `--as-of`.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// Only ledger executions of this queue are expected in the tracker.
    pub queue: Option<String>,
    /// Which model of the ledger the documents are compared with.
    #[serde(default)]
    pub compare: CompareWith,
    /// Ledger statuses the tracker keeps no document for (Celery's backend stores nothing for a
    /// task still queued): a ledger execution in one of them that the export lacks is not a
    /// mismatch.
    #[serde(default)]
    pub unrecorded: Vec<String>,
}

fn default_tracker_name() -> String {
    "tracker".into()
}

impl Mapping {
    pub fn parse(text: &str, source: &str) -> Result<Mapping, ReplayError> {
        let mut mapping: Mapping = toml::from_str(text).map_err(|error| ReplayError::Input {
            line: error
                .span()
                .map_or(0, |span| text[..span.start].lines().count() as u64),
            problem: format!("{source}: {error}"),
        })?;
        let bad = |problem: String| ReplayError::Input {
            line: 0,
            problem: format!("{source}: {problem}"),
        };
        if !mapping.tracker.task_id.contains('{') {
            return Err(bad("tracker.task_id needs {field} placeholders".into()));
        }
        for field in mapping.fields.keys() {
            if !KNOWN_FIELDS.contains(&field.as_str()) {
                return Err(bad(format!(
                    "[fields] {field:?} is not a ledger field (one of {})",
                    KNOWN_FIELDS.join(", ")
                )));
            }
        }
        let statuses = mapping
            .status
            .iter()
            .flat_map(|(legacy, target)| {
                target
                    .statuses()
                    .iter()
                    .map(move |status| (format!("[status] {legacy:?}"), status))
            })
            .chain(
                mapping
                    .tracker
                    .unrecorded
                    .iter()
                    .map(|status| ("tracker.unrecorded".to_owned(), status)),
            );
        for (setting, status) in statuses {
            if !ExecutionStatus::ALL.iter().any(|s| s.as_str() == status) {
                return Err(bad(format!(
                    "{setting}: {status:?} is not a ledger status (one of queued, processing, completed, failed, dlq, archived)"
                )));
            }
        }
        let mut fields = Vec::with_capacity(mapping.fields.len());
        for (ledger_field, path) in &mapping.fields {
            let steps =
                parse_path(path).map_err(|p| bad(format!("[fields] {ledger_field}: {p}")))?;
            if let Some(index) = field_index(ledger_field) {
                fields.push((index, steps));
            }
        }
        fields.sort_by_key(|(index, _)| *index);
        let optional = |path: &Option<String>, setting: &str| {
            path.as_deref()
                .map(|path| parse_path(path).map_err(|p| bad(format!("tracker.{setting}: {p}"))))
                .transpose()
        };
        mapping.paths = Paths {
            fields,
            task_id: template(&mapping.tracker.task_id)
                .map_err(|p| bad(format!("tracker.task_id: {p}")))?,
            execution_id: optional(&mapping.tracker.execution_id, "execution_id")?,
            updated_at: optional(&mapping.tracker.updated_at, "updated_at")?,
        };
        Ok(mapping)
    }

    /// Whether documents join the ledger per execution (`tracker.execution_id`).
    pub fn per_execution(&self) -> bool {
        self.tracker.execution_id.is_some()
    }

    fn render_task_id(&self, document: &bson::Document) -> Result<String, String> {
        let mut out = String::with_capacity(self.tracker.task_id.len() + 32);
        for piece in &self.paths.task_id {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Placeholder { path, steps } => {
                    let text = lookup(document, steps).and_then(template_text).ok_or_else(|| {
                        format!("field `{path}` (in tracker.task_id) is missing or not a string or number")
                    })?;
                    out.push_str(&text);
                }
            }
        }
        Ok(out)
    }
}

/// Splits a taskId template into its literal text and its placeholders' paths.
fn template(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let close = rest[open..].find('}').ok_or("unclosed {")? + open;
        let path = &rest[open + 1..close];
        pieces.push(Piece::Placeholder {
            path: path.to_owned(),
            steps: parse_path(path)?,
        });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Ok(pieces)
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
    let mut fields: Vec<FieldValue> = known
        .iter()
        .map(|value| value.as_ref().map_or(FieldValue::Null, value_of))
        .collect();
    let updated_at = parsed
        .updated_at
        .as_ref()
        .map(|value| as_instant(value_of(value)));
    let latest_instant = instants(&mut fields).max(match updated_at {
        Some(FieldValue::Time(ms)) => Some(ms),
        _ => None,
    });
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
    let top_level_instant = document
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
            let latest_instant = instants(&mut fields).max(top_level_instant);
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
            for (index, steps) in &mapping.paths.fields {
                let mut value = lookup(&document, steps).map_or(FieldValue::Null, value_of);
                if KNOWN_FIELDS[*index] == "status" {
                    if let FieldValue::Text(status) = &value {
                        let mapped = mapping.status.get(status).ok_or_else(|| {
                            format!(
                                "status {status:?} has no entry in the mapping's [status] table"
                            )
                        })?;
                        value = mapped.value();
                    }
                }
                fields[*index] = value;
            }
            let updated_at = mapping
                .paths
                .updated_at
                .as_ref()
                .and_then(|steps| lookup(&document, steps))
                .map(|value| as_instant(value_of(value)));
            let latest_instant =
                instants(&mut fields)
                    .max(top_level_instant)
                    .max(match updated_at {
                        Some(FieldValue::Time(ms)) => Some(ms),
                        _ => None,
                    });
            let (key, task_id) = match &mapping.paths.execution_id {
                // Per execution: the executionId joins; the taskId is only shown, when the
                // template can be built from this document.
                Some(steps) => {
                    let key = match lookup(&document, steps) {
                        Some(bson::Bson::String(text)) => text.clone(),
                        _ => {
                            return Err(format!(
                                "field `{}` (tracker.execution_id) is missing or not a string",
                                mapping.tracker.execution_id.as_deref().unwrap_or_default()
                            ))
                        }
                    };
                    (key, mapping.render_task_id(&document).ok())
                }
                None => {
                    let key = mapping.render_task_id(&document)?;
                    (key.clone(), Some(key))
                }
            };
            Ok(LegacyDoc {
                line,
                key,
                task_id,
                fields,
                raw,
                latest_instant,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_fields_and_array_elements() {
        assert_eq!(
            parse_path("result.exc_message[0]").unwrap(),
            [
                Step::Field("result".into()),
                Step::Field("exc_message".into()),
                Step::Index(0)
            ]
        );
        assert_eq!(
            parse_path("grid[1][2]").unwrap(),
            [Step::Field("grid".into()), Step::Index(1), Step::Index(2)]
        );
        for bad in ["", "a..b", "a[", "a[x]", "a[0]b", ".a"] {
            assert!(parse_path(bad).is_err(), "{bad:?}");
        }
        let document: bson::Document = serde_json::from_str(
            r#"{"meta":{"status":"ok"},"args":[7,"x",[true]],"result":{"exc_message":["boom"]}}"#,
        )
        .unwrap();
        let at = |path: &str| lookup(&document, &parse_path(path).unwrap()).cloned();
        assert_eq!(at("meta.status"), Some(bson::Bson::String("ok".into())));
        assert_eq!(at("args[1]"), Some(bson::Bson::String("x".into())));
        assert_eq!(at("args[2][0]"), Some(bson::Bson::Boolean(true)));
        assert_eq!(
            at("result.exc_message[0]"),
            Some(bson::Bson::String("boom".into()))
        );
        assert_eq!(at("args[3]"), None);
        assert_eq!(at("meta.status.deeper"), None);
        assert_eq!(at("args.0"), None);
    }

    /// Placeholders print as Python's `str()`, as the Celery integration builds its taskIds.
    #[test]
    fn template_values_print_as_python_does() {
        use bson::Bson;
        assert_eq!(template_text(&Bson::Int64(12)).as_deref(), Some("12"));
        assert_eq!(template_text(&Bson::Double(2.0)).as_deref(), Some("2.0"));
        assert_eq!(template_text(&Bson::Double(2.5)).as_deref(), Some("2.5"));
        assert_eq!(template_text(&Bson::Boolean(true)).as_deref(), Some("True"));
        assert_eq!(template_text(&Bson::Null), None);
    }

    #[test]
    fn instants_in_every_spelling() {
        let expected = 1_768_989_632_120; // 2026-01-21T10:00:32.120Z
        for text in [
            "2026-01-21T10:00:32.120Z",
            "2026-01-21T10:00:32.120315+00:00",
            "2026-01-21T11:00:32.120+01:00",
            "2026-01-21T05:00:32.12-05:00",
            // Python's naive `datetime.utcnow().isoformat()`: UTC.
            "2026-01-21T10:00:32.120315",
            "2026-01-21 10:00:32.120",
        ] {
            assert_eq!(parse_instant(text), Some(expected), "{text}");
        }
        assert_eq!(
            as_instant(FieldValue::Number(expected as f64)),
            FieldValue::Time(expected)
        );
        assert_eq!(
            as_instant(FieldValue::Text("yesterday".into())),
            FieldValue::Text("yesterday".into())
        );
        assert_eq!(as_instant(FieldValue::Number(1.5)), FieldValue::Number(1.5));
    }

    #[test]
    fn a_status_may_stand_for_several_ledger_statuses() {
        let mapping = Mapping::parse(
            "[tracker]\ntask_id = \"{queue}:{name}\"\nexecution_id = \"task_id\"\n[fields]\nstatus = \"status\"\n[status]\nFAILURE = [\"dlq\", \"failed\"]\nSUCCESS = \"completed\"\n",
            "test",
        )
        .unwrap();
        let FieldValue::OneOf(statuses) = mapping.status["FAILURE"].value() else {
            panic!("FAILURE is one of several");
        };
        assert!(FieldValue::OneOf(statuses.clone()).matches(&FieldValue::Text("dlq".into()), 0));
        assert!(!FieldValue::OneOf(statuses).matches(&FieldValue::Text("completed".into()), 0));
        let bad = Mapping::parse(
            "[tracker]\ntask_id = \"{a}\"\n[status]\nX = \"done\"\n",
            "test",
        );
        assert!(
            matches!(&bad, Err(ReplayError::Input { problem, .. }) if problem.contains("\"done\" is not a ledger status")),
            "{bad:?}"
        );
    }
}
