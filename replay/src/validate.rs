//! `validate` (SPEC section 6): the ledger replayed to the export's instant, compared document by
//! document with a legacy tracker's export, plus the seeds' invariants on the ledger itself.

use crate::legacy::{
    field_index, is_time_field, CompareWith, FieldValue, LegacyDoc, Mapping, DEFAULT_FIELDS,
    KNOWN_FIELDS,
};
use crate::ReplayError;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use taskledger_domain::{ExecutionId, ExecutionStatus, TaskId, Timestamp};
use taskledger_projections::{record::ExecutionRecord, Kv, TaskRecord};
use taskledger_store::SharedStore;

/// Mismatches listed in a report at most: the counts cover everything, the list is for people.
pub const MISMATCHES_LISTED_MAX: usize = 100_000;
/// seeds/000 alerts on processing > 30 minutes.
pub const STUCK_AFTER_MS: i64 = 30 * 60 * 1000;

#[derive(Debug, Clone)]
pub struct ValidateOptions {
    pub fields: Vec<String>,
    pub time_tolerance_ms: i64,
    pub as_of: Option<Timestamp>,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            fields: DEFAULT_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
            time_tolerance_ms: 1000,
            as_of: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mismatch {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    pub task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invariants {
    /// Tasks that had two executions queued/processing at once.
    pub duplicate_executions: u64,
    /// Executions a second worker tried to claim while one held them.
    pub double_processing: u64,
    /// Reports about executions (or tasks) the ledger never saw.
    pub broken_chains: u64,
    /// Executions processing for more than 30 minutes at the instant.
    pub stuck: u64,
}

/// SPEC section 6's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationReport {
    pub as_of: Timestamp,
    pub tracker: String,
    pub legacy_documents: u64,
    pub ledger_executions: u64,
    pub compared: u64,
    pub consistent: u64,
    pub consistency: f64,
    pub mismatches: Vec<Mismatch>,
    pub by_kind: BTreeMap<&'static str, u64>,
    pub by_field: BTreeMap<String, u64>,
    pub invariants: Invariants,
    /// Documents about executions (tasks) the ledger holds under another queue than the
    /// mapping's `tracker.queue`: neither compared nor missing.
    pub outside_queue: u64,
    pub fields: Vec<String>,
    pub time_tolerance_ms: i64,
}

/// How a legacy document joins the ledger: by executionId (a UUID, as 128 bits, when it parses)
/// or by the mapped taskId.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Execution(u128),
    Text(String),
}

impl Key {
    fn of(key: &str, by_execution: bool) -> Key {
        match (by_execution, uuid::Uuid::parse_str(key)) {
            (true, Ok(uuid)) => Key::Execution(uuid.as_u128()),
            _ => Key::Text(key.to_owned()),
        }
    }
}

/// The legacy-shape document of one execution as comparable values, in [`KNOWN_FIELDS`] order.
fn ledger_values(x: &ExecutionRecord) -> Vec<FieldValue> {
    let l = &x.legacy;
    let text = |t: &Option<String>| {
        t.as_ref()
            .map_or(FieldValue::Null, |t| FieldValue::Text(t.clone()))
    };
    let time = |t: Option<i64>| t.map_or(FieldValue::Null, FieldValue::Time);
    let values = vec![
        FieldValue::Text(l.status.as_str().to_owned()),
        FieldValue::Number(f64::from(l.retry_count)),
        FieldValue::Number(f64::from(l.max_retries)),
        FieldValue::Text(x.queue.clone()),
        time(Some(l.created_at)),
        time(l.processing_started_at),
        time(l.completed_at),
        time(l.failed_at),
        time(l.archived_at),
        text(&l.error_category),
        text(&l.error_message),
        text(&l.error_stack),
        FieldValue::Text(l.message_version.clone()),
        text(&l.archived_reason),
        text(&l.archived_by),
        time(Some(l.created_at)),
    ];
    debug_assert_eq!(values.len(), KNOWN_FIELDS.len());
    values
}

/// The ledger's own record of one execution as comparable values, in [`KNOWN_FIELDS`] order: what
/// a tracker written by the queue software itself (not by seeds/000's code) should agree with.
fn own_values(x: &ExecutionRecord) -> Vec<FieldValue> {
    let text = |t: Option<&String>| t.map_or(FieldValue::Null, |t| FieldValue::Text(t.clone()));
    let time = |t: Option<i64>| t.map_or(FieldValue::Null, FieldValue::Time);
    let error = x.last_error.as_ref();
    let values = vec![
        FieldValue::Text(x.status.as_str().to_owned()),
        FieldValue::Number(f64::from(x.retry_count)),
        FieldValue::Number(f64::from(x.max_retries)),
        FieldValue::Text(x.queue.clone()),
        time(Some(x.enqueued_at)),
        time(x.processing_started_at),
        time(x.completed_at),
        time(x.failed_at),
        time(x.archived_at),
        text(error.map(|e| &e.category)),
        text(error.map(|e| &e.message)),
        // The read models keep no stack and no message version of their own.
        FieldValue::Null,
        FieldValue::Null,
        text(x.archived_reason.as_ref()),
        text(x.archived_by.as_ref()),
        time(Some(x.enqueued_at)),
    ];
    debug_assert_eq!(values.len(), KNOWN_FIELDS.len());
    values
}

/// Compares `legacy` with the ledger's models (already at the instant) and checks the invariants.
///
/// The ledger side at `as_of`: each task's stored record when nothing in it happened after
/// `as_of`, else its stream folded up to `as_of`. So an instant in the past costs a stream read
/// per task it changes, not a replay of the whole ledger into memory.
pub async fn compare(
    store: &SharedStore,
    models: &dyn Kv,
    legacy: Vec<LegacyDoc>,
    mapping: Option<&Mapping>,
    options: &ValidateOptions,
    as_of: Timestamp,
) -> Result<ValidationReport, ReplayError> {
    // The ledger side, keyed like the legacy side: executionId, or taskId for a mapped tracker.
    // key → (taskId, executionId, values)
    let mut ledger: HashMap<Key, (std::rc::Rc<str>, ExecutionId, Vec<FieldValue>)> =
        HashMap::with_capacity(legacy.len() + legacy.len() / 2);
    let mut invariants = Invariants::default();
    let mut ledger_executions = 0u64;
    let stuck_before = as_of.millis() - STUCK_AFTER_MS;
    let mut later: Vec<TaskId> = Vec::new();
    // Executions (or tasks) the ledger holds under another queue than the mapping's: a document
    // about one is not compared, and not missing either (the tracker is shared by other queues).
    let mut elsewhere: std::collections::HashSet<Key> = std::collections::HashSet::new();
    let mut add = |task_id: TaskId, record: TaskRecord| {
        invariants.duplicate_executions += u64::from(record.concurrent_executions);
        invariants.broken_chains += record.rejected[2];
        for execution in &record.executions {
            invariants.double_processing += u64::from(execution.contested_claims > 0);
            if execution.status == ExecutionStatus::Processing
                && execution
                    .processing_started_at
                    .is_some_and(|t| t < stuck_before)
            {
                invariants.stuck += 1;
            }
        }
        ledger_executions += record.executions.len() as u64;
        let task: std::rc::Rc<str> = task_id.as_str().into();
        match mapping {
            None => {
                for x in &record.executions {
                    ledger.insert(
                        Key::Execution(x.execution_id.0.as_u128()),
                        (task.clone(), x.execution_id, ledger_values(x)),
                    );
                }
            }
            Some(mapping) => {
                let values = match mapping.tracker.compare {
                    CompareWith::LegacyShape => ledger_values,
                    CompareWith::Ledger => own_values,
                };
                let covered = |x: &ExecutionRecord| {
                    mapping
                        .tracker
                        .queue
                        .as_ref()
                        .is_none_or(|queue| &x.queue == queue)
                };
                if mapping.per_execution() {
                    for x in &record.executions {
                        let key = Key::Execution(x.execution_id.0.as_u128());
                        if covered(x) {
                            ledger.insert(key, (task.clone(), x.execution_id, values(x)));
                        } else {
                            elsewhere.insert(key);
                        }
                    }
                } else if let Some(x) = record.latest() {
                    let key = Key::Text(task_id.to_string());
                    if covered(x) {
                        ledger.insert(key, (task.clone(), x.execution_id, values(x)));
                    } else {
                        elsewhere.insert(key);
                    }
                }
            }
        }
    };
    taskledger_projections::kv::for_each_task(models, &mut |task_id, record| {
        if record.updated_at.is_some_and(|t| t > as_of.millis()) {
            later.push(task_id);
        } else {
            add(task_id, record);
        }
    })?;
    for task_id in later {
        if let Some(record) =
            taskledger_projections::load_task(store.as_ref(), &task_id, Some(as_of)).await?
        {
            add(task_id, record);
        }
    }
    let fields: Vec<String> = match mapping {
        None => options.fields.clone(),
        Some(mapping) => options
            .fields
            .iter()
            .filter(|field| mapping.fields.contains_key(*field))
            .cloned()
            .collect(),
    };
    let mut report = ValidationReport {
        as_of,
        tracker: mapping.map_or("TaskTracker".into(), |m| m.tracker.name.clone()),
        legacy_documents: legacy.len() as u64,
        ledger_executions,
        compared: 0,
        consistent: 0,
        consistency: 1.0,
        mismatches: Vec::new(),
        by_kind: BTreeMap::from([("field", 0), ("missingInLegacy", 0), ("missingInLedger", 0)]),
        by_field: BTreeMap::new(),
        invariants,
        outside_queue: 0,
        fields: fields.clone(),
        time_tolerance_ms: options.time_tolerance_ms,
    };
    let push = |report: &mut ValidationReport, mismatch: Mismatch| {
        *report.by_kind.entry(mismatch.kind).or_default() += 1;
        if let Some(field) = &mismatch.field {
            *report.by_field.entry(field.clone()).or_default() += 1;
        }
        if report.mismatches.len() < MISMATCHES_LISTED_MAX {
            report.mismatches.push(mismatch);
        }
    };
    let keyed_by_execution = mapping.is_none_or(Mapping::per_execution);
    let indexed: Vec<(usize, &String, bool)> = fields
        .iter()
        .filter_map(|field| field_index(field).map(|index| (index, field, is_time_field(field))))
        .collect();
    let mut seen = std::collections::HashSet::with_capacity(legacy.len());
    for doc in &legacy {
        let key = Key::of(&doc.key, keyed_by_execution);
        if elsewhere.contains(&key) {
            report.outside_queue += 1;
            continue;
        }
        let Some((task_id, execution_id, ledger_values)) = ledger.get(&key) else {
            push(
                &mut report,
                Mismatch {
                    kind: "missingInLedger",
                    execution_id: keyed_by_execution.then(|| doc.key.clone()),
                    task_id: doc.task_id.clone(),
                    field: None,
                    legacy: None,
                    ledger: None,
                },
            );
            continue;
        };
        seen.insert(key);
        report.compared += 1;
        let mut consistent = true;
        for &(index, field, time) in &indexed {
            let (legacy_value, ledger_value) = (&doc.fields[index], &ledger_values[index]);
            let tolerance = if time { options.time_tolerance_ms } else { 0 };
            if !legacy_value.matches(ledger_value, tolerance) {
                consistent = false;
                push(
                    &mut report,
                    Mismatch {
                        kind: "field",
                        execution_id: Some(execution_id.to_string()),
                        task_id: Some(task_id.to_string()),
                        field: Some(field.clone()),
                        legacy: Some(legacy_value.to_json()),
                        ledger: Some(ledger_value.to_json()),
                    },
                );
            }
        }
        report.consistent += u64::from(consistent);
    }
    // Statuses the tracker keeps no document for: their executions are not missing from it.
    let unrecorded: Vec<FieldValue> = mapping
        .map(|m| {
            m.tracker
                .unrecorded
                .iter()
                .map(|s| FieldValue::Text(s.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut missing: Vec<(&Key, &std::rc::Rc<str>, &ExecutionId)> = ledger
        .iter()
        .filter(|(key, _)| !seen.contains(*key))
        .filter(|(_, (_, _, values))| !unrecorded.contains(&values[0]))
        .map(|(key, (task_id, execution_id, _))| (key, task_id, execution_id))
        .collect();
    missing.sort_by(|a, b| a.0.cmp(b.0));
    for (_, task_id, execution_id) in missing {
        push(
            &mut report,
            Mismatch {
                kind: "missingInLegacy",
                execution_id: Some(execution_id.to_string()),
                task_id: Some(task_id.to_string()),
                field: None,
                legacy: None,
                ledger: None,
            },
        );
    }
    let denominator =
        report.compared + report.by_kind["missingInLegacy"] + report.by_kind["missingInLedger"];
    report.consistency = if denominator == 0 {
        1.0
    } else {
        report.consistent as f64 / denominator as f64
    };
    Ok(report)
}

/// The latest instant found anywhere in an export's documents: the default `--as-of`.
pub fn latest_instant(legacy: &[LegacyDoc]) -> Option<Timestamp> {
    legacy
        .iter()
        .filter_map(|doc| doc.latest_instant)
        .max()
        .map(Timestamp)
}
