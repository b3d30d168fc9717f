//! `simulate`: a realistic workload shaped like seeds/003's partner-data pipeline, the export a
//! faulty legacy TaskTracker running seeds/000's code would hold beside it, a PartnerLogTracker
//! export with its mapping, and the ground truth of the faults injected. Same seed, same files.
//!
//! The legacy documents come from the legacy-shape fold (`TaskRecord::legacy_documents`) over the
//! reports as the legacy tracker saw them; each fault perturbs that input (a lost write, a crash
//! in the failure path, a skewed worker clock, a claim race) or the export itself (a missing or a
//! stray document). A fault that leaves no visible trace is not listed.

use crate::ReplayError;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use taskledger_domain::{decide, Policy, Report, TaskId, TaskState};
use taskledger_projections::{LegacyDocument, TaskRecord};

/// The simulated tracker's workers write `new Date()` a little after the report's instant.
const LEGACY_WRITE_LATENCY_MS_MAX: i64 = 400;
/// The skewed worker's clock runs this far ahead.
const CLOCK_SKEW_MS: i64 = 45_000;
const SKEWED_WORKER: &str = "sync-4";
/// 2026-01-21T08:00:00Z.
const START_MS: i64 = 1_768_982_400_000;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    pub kind: &'static str,
    pub execution_id: String,
    pub task_id: String,
    /// Which exports show it: `taskTracker`, and `partnerLog` when it touches a partner task's
    /// latest execution.
    pub trackers: Vec<&'static str>,
}

pub struct Simulation {
    pub reports: Vec<String>,
    pub legacy_tasktracker: Vec<String>,
    pub legacy_partnerlog: Vec<String>,
    pub mapping_toml: String,
    pub faults: Vec<Fault>,
    pub tasks: usize,
}

#[derive(Clone)]
struct Planned {
    at: i64,
    seq: u64,
    task_id: String,
    execution_id: String,
    worker: Option<String>,
    json: serde_json::Value,
}

struct World {
    /// Seeded: the same seed gives the same workload (fastrand's WyRand).
    rng: fastrand::Rng,
    reports: Vec<Planned>,
    seq: u64,
    /// Executions by scenario, for choosing faults.
    successes: Vec<(String, String, i64, i64, String)>, // task, execution, claim at, succeed at, worker
    failed_once: Vec<(String, String)>,
    all_executions: Vec<(String, String)>,
    partner_tasks: HashMap<String, (String, String, String)>,
}

/// An instant as reports write it (RFC 3339, milliseconds, UTC): the domain's own rendering.
fn iso(ms: i64) -> String {
    taskledger_domain::Timestamp(ms).to_string()
}

impl World {
    fn uuid(&mut self) -> String {
        let mut bytes = [0u8; 16];
        self.rng.fill(&mut bytes);
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    fn push(
        &mut self,
        at: i64,
        task_id: &str,
        execution_id: &str,
        worker: Option<&str>,
        json: serde_json::Value,
    ) {
        self.seq += 1;
        self.reports.push(Planned {
            at,
            seq: self.seq,
            task_id: task_id.to_owned(),
            execution_id: execution_id.to_owned(),
            worker: worker.map(str::to_owned),
            json,
        });
    }

    fn enqueue(
        &mut self,
        at: i64,
        task_id: &str,
        execution_id: &str,
        queue: &str,
        metadata: &serde_json::Value,
    ) {
        self.push(
            at,
            task_id,
            execution_id,
            None,
            serde_json::json!({
                "op": "enqueue", "taskId": task_id, "executionId": execution_id, "queue": queue,
                "at": iso(at), "messageVersion": "1.0", "metadata": metadata,
            }),
        );
        self.all_executions
            .push((task_id.to_owned(), execution_id.to_owned()));
    }

    fn claim(&mut self, at: i64, task_id: &str, execution_id: &str, worker: &str) {
        self.push(at, task_id, execution_id, Some(worker), serde_json::json!({
            "op": "claim", "taskId": task_id, "executionId": execution_id, "worker": worker, "at": iso(at),
        }));
    }

    fn succeed(&mut self, at: i64, task_id: &str, execution_id: &str, worker: &str) {
        self.push(at, task_id, execution_id, Some(worker), serde_json::json!({
            "op": "succeed", "taskId": task_id, "executionId": execution_id, "worker": worker, "at": iso(at),
        }));
    }

    fn fail(&mut self, at: i64, task_id: &str, execution_id: &str, worker: &str, message: &str) {
        self.push(at, task_id, execution_id, Some(worker), serde_json::json!({
            "op": "fail", "taskId": task_id, "executionId": execution_id, "worker": worker, "at": iso(at),
            "error": {"message": message, "category": null, "stack": format!("Error: {message}\n    at processPartnerLog (workers/partner_sync_worker.js:412:11)")},
        }));
    }

    fn between(&mut self, low: i64, high: i64) -> i64 {
        self.rng.i64(low..=high)
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.rng.usize(0..options.len())]
    }

    fn worker_for(&mut self, queue: &str) -> &'static str {
        match queue {
            "partner_tasks" => match self.rng.u32(0..100) {
                0..=31 => "sync-1",
                32..=63 => "sync-2",
                64..=94 => "sync-3",
                _ => SKEWED_WORKER,
            },
            "jobs" => {
                if self.rng.bool() {
                    "job-1"
                } else {
                    "job-2"
                }
            }
            _ => "notify-1",
        }
    }

    /// One task's whole life.
    fn task(&mut self, index: usize) {
        let start = START_MS + index as i64 * 2500 + self.between(0, 2000);
        let queue = match self.rng.u32(0..100) {
            0..=69 => "partner_tasks",
            70..=89 => "jobs",
            _ => "notifications",
        };
        let (task_id, metadata) = match queue {
            "partner_tasks" => {
                let partner = self
                    .pick(&["SATLOC", "SATLOC", "AGNAV", "TRIMBLE"])
                    .to_owned();
                let aircraft = format!("{:04x}", self.rng.u32(0..0xffff));
                let log = format!("{:08}", 2_220_000 + index);
                let task_id = format!("partner_tasks:{partner}:{aircraft}:{log}");
                self.partner_tasks.insert(
                    task_id.clone(),
                    (partner.clone(), aircraft.clone(), log.clone()),
                );
                (
                    task_id,
                    serde_json::json!({"partnerCode": partner, "aircraftId": aircraft, "logId": log, "logFileName": format!("{log}.bin")}),
                )
            }
            "jobs" => {
                let user = self.rng.u32(1000..9999);
                (
                    format!("jobs:{}:user{user}:process", 50_000 + index),
                    serde_json::json!({"jobId": 50_000 + index, "userId": format!("user{user}")}),
                )
            }
            _ => {
                let user = self.rng.u32(1000..9999);
                let tag: u32 = self.rng.u32(..);
                (
                    format!("notifications:user{user}:EMAIL:{tag:08x}"),
                    serde_json::json!({"userId": format!("user{user}"), "notificationType": "EMAIL"}),
                )
            }
        };
        let first = self.uuid();
        self.enqueue(start, &task_id, &first, queue, &metadata);
        let worker = self.worker_for(queue);
        let claimed = start + self.between(800, 4000);
        let transient = [
            "ETIMEDOUT calling partner api",
            "Request timeout after 30000ms",
            "connect ECONNREFUSED 10.0.3.17:443",
        ];
        match self.rng.u32(0..100) {
            0..=59 => {
                self.claim(claimed, &task_id, &first, worker);
                let done = claimed + self.between(500, 15_000);
                self.succeed(done, &task_id, &first, worker);
                self.successes.push((
                    task_id.clone(),
                    first.clone(),
                    claimed,
                    done,
                    worker.to_owned(),
                ));
            }
            60..=79 => {
                // Transient, partner-API or infrastructure failures, then success.
                let messages: &[&str] = match self.rng.u32(0..3) {
                    0 => &transient,
                    1 => &["Partner API returned 503", "SatLoc service unavailable"],
                    _ => &[
                        "database write failed: WriteConflict",
                        "fs write error: ENOSPC",
                    ],
                };
                let failures = self.between(1, 3);
                let mut at = claimed;
                let mut worker = worker;
                self.claim(at, &task_id, &first, worker);
                for _ in 0..failures {
                    at += self.between(200, 8000);
                    let message = self.pick(messages);
                    self.fail(at, &task_id, &first, worker, message);
                    at += self.between(61_000, 180_000);
                    worker = self.worker_for(queue);
                    self.claim(at, &task_id, &first, worker);
                }
                at += self.between(500, 9000);
                self.succeed(at, &task_id, &first, worker);
                self.failed_once.push((task_id.clone(), first.clone()));
            }
            80..=89 => {
                // A poison message: fails every time until the DLQ (maxRetries 5 → 6 failures).
                let message = self.pick(&[
                    "Invalid log header: missing aircraftId",
                    "Cannot parse binary record 17",
                    "required field logFileName missing",
                ]);
                let mut at = claimed;
                for attempt in 0..6 {
                    let worker = self.worker_for(queue);
                    self.claim(at, &task_id, &first, worker);
                    at += self.between(200, 3000);
                    self.fail(at, &task_id, &first, worker, message);
                    if attempt < 5 {
                        at += self.between(61_000, 400_000);
                    }
                }
                match self.rng.u32(0..10) {
                    0..=3 => {
                        let at = at + self.between(3_600_000, 10_800_000);
                        self.push(at, &task_id, &first, None, serde_json::json!({
                            "op": "archive", "taskId": task_id, "executionId": first, "at": iso(at),
                            "reason": "Non-recoverable error", "by": "ops@acme",
                        }));
                    }
                    4..=7 => {
                        let at = at + self.between(3_600_000, 7_200_000);
                        let second = self.uuid();
                        self.push(at, &task_id, &second, None, serde_json::json!({
                            "op": "retry", "taskId": task_id, "executionId": second, "at": iso(at),
                            "by": "ops@acme", "reason": "upstream file fixed",
                        }));
                        self.all_executions.push((task_id.clone(), second.clone()));
                        let worker = self.worker_for(queue);
                        let claimed = at + self.between(1000, 5000);
                        self.claim(claimed, &task_id, &second, worker);
                        let done = claimed + self.between(500, 9000);
                        self.succeed(done, &task_id, &second, worker);
                    }
                    _ => {}
                }
            }
            90..=92 => {
                // Stuck: claimed, then the worker died.
                self.claim(claimed, &task_id, &first, worker);
            }
            93..=95 => {
                // A duplicate enqueue inside the dedup window: refused by both trackers.
                self.claim(claimed, &task_id, &first, worker);
                let duplicate = self.uuid();
                let at = claimed + self.between(500, 2000);
                self.push(at, &task_id, &duplicate, None, serde_json::json!({
                    "op": "enqueue", "taskId": task_id, "executionId": duplicate, "queue": queue,
                    "at": iso(at), "messageVersion": "1.0", "metadata": metadata,
                }));
                let done = claimed + self.between(5000, 20_000);
                self.succeed(done, &task_id, &first, worker);
            }
            96..=97 => {
                // The message was lost; the poller enqueues again after the window: two active
                // executions (the legacy tracker creates both documents too).
                let second = self.uuid();
                let again = start + self.between(360_000, 900_000);
                self.enqueue(again, &task_id, &second, queue, &metadata);
                let claimed = again + self.between(800, 4000);
                self.claim(claimed, &task_id, &second, worker);
                let done = claimed + self.between(500, 9000);
                self.succeed(done, &task_id, &second, worker);
            }
            _ => {
                // A success reported by a worker that skipped its claim.
                let done = claimed + self.between(500, 5000);
                self.succeed(done, &task_id, &first, worker);
            }
        }
    }
}

/// Folds reports (already in decision order) with the ledger's rules and the legacy-shape fold.
fn fold(reports: &[Planned]) -> Result<(BTreeMap<String, TaskRecord>, Vec<String>), ReplayError> {
    let policy = Policy::default();
    let mut states: HashMap<String, TaskState> = HashMap::new();
    let mut records: BTreeMap<String, TaskRecord> = BTreeMap::new();
    let mut lines = Vec::with_capacity(reports.len());
    for planned in reports {
        let line = planned.json.to_string();
        let report = Report::from_json(&line)
            .map_err(|e| ReplayError::Io(format!("simulated report: {e}: {line}")))?;
        let state = states.entry(planned.task_id.clone()).or_default();
        let decision = decide(state, &report, &policy);
        let record = records.entry(planned.task_id.clone()).or_default();
        for event in &decision.events {
            state.apply(event);
            record.apply(event);
        }
        lines.push(line);
    }
    Ok((records, lines))
}

fn documents(records: &BTreeMap<String, TaskRecord>) -> BTreeMap<String, LegacyDocument> {
    let mut out = BTreeMap::new();
    for (task_id, record) in records {
        let task_id = TaskId::parse(task_id).expect("simulated taskIds are valid");
        for doc in record.legacy_documents(&task_id) {
            out.insert(doc.execution_id.to_string(), doc);
        }
    }
    out
}

fn differs(a: &LegacyDocument, b: &LegacyDocument) -> bool {
    let time = |x: Option<taskledger_domain::Timestamp>,
                y: Option<taskledger_domain::Timestamp>| match (x, y) {
        (Some(x), Some(y)) => (x.millis() - y.millis()).abs() > 1000,
        (x, y) => x.is_some() != y.is_some(),
    };
    a.status != b.status
        || a.retry_count != b.retry_count
        || a.error_message != b.error_message
        || a.error_category != b.error_category
        || time(Some(a.enqueued_at), Some(b.enqueued_at))
        || time(a.processing_started_at, b.processing_started_at)
        || time(a.completed_at, b.completed_at)
        || time(a.failed_at, b.failed_at)
        || time(a.archived_at, b.archived_at)
}

/// Runs the simulation.
pub fn simulate(tasks: usize, seed: u64) -> Result<Simulation, ReplayError> {
    let mut world = World {
        rng: fastrand::Rng::with_seed(seed),
        reports: Vec::new(),
        seq: 0,
        successes: Vec::new(),
        failed_once: Vec::new(),
        all_executions: Vec::new(),
        partner_tasks: HashMap::new(),
    };
    for index in 0..tasks {
        world.task(index);
    }
    let per_kind = (tasks / 400).max(1);
    let mut used: HashSet<String> = HashSet::new();
    let mut choose =
        |world: &mut World, pool: Vec<(String, String)>, count: usize| -> Vec<(String, String)> {
            let mut chosen = Vec::new();
            let mut candidates = pool;
            while chosen.len() < count && !candidates.is_empty() {
                let index = world.rng.usize(0..candidates.len());
                let candidate = candidates.swap_remove(index);
                if used.insert(candidate.1.clone()) {
                    chosen.push(candidate);
                }
            }
            chosen
        };
    // Claim races happen in the world: both trackers hear both workers.
    let successes: Vec<(String, String)> = world
        .successes
        .iter()
        .map(|s| (s.0.clone(), s.1.clone()))
        .collect();
    let races = choose(&mut world, successes.clone(), per_kind);
    let mut race_claims: HashMap<String, i64> = HashMap::new();
    for (task_id, execution_id) in &races {
        let (_, _, claimed, done, worker) = world
            .successes
            .iter()
            .find(|s| &s.1 == execution_id)
            .cloned()
            .expect("chosen from successes");
        let rival = if worker == "sync-1" {
            "sync-2"
        } else {
            "sync-1"
        };
        let at = claimed + world.between(1500, 2500);
        world.claim(at, task_id, execution_id, rival);
        world.succeed(done.max(at) + 1000, task_id, execution_id, rival);
        race_claims.insert(execution_id.clone(), at);
    }
    world.reports.sort_by_key(|r| (r.at, r.seq));
    let (clean_records, report_lines) = fold(&world.reports)?;
    let clean = documents(&clean_records);

    // What the legacy tracker heard.
    let lost = choose(&mut world, successes, per_kind);
    let failed_once = world.failed_once.clone();
    let crashed = choose(&mut world, failed_once, per_kind);
    let lost_set: HashSet<&String> = lost.iter().map(|l| &l.1).collect();
    let crashed_set: HashSet<&String> = crashed.iter().map(|c| &c.1).collect();
    let mut crash_started: HashSet<String> = HashSet::new();
    let mut heard = Vec::with_capacity(world.reports.len());
    for planned in &world.reports {
        let op = planned.json["op"].as_str().unwrap_or_default();
        if lost_set.contains(&planned.execution_id) && op == "succeed" {
            continue;
        }
        if crashed_set.contains(&planned.execution_id)
            && (crash_started.contains(&planned.execution_id) || op == "fail")
        {
            crash_started.insert(planned.execution_id.clone());
            continue;
        }
        let mut planned = planned.clone();
        if planned.worker.as_deref() == Some(SKEWED_WORKER) {
            planned.at += CLOCK_SKEW_MS;
            planned.json["at"] = serde_json::Value::String(iso(planned.at));
        }
        heard.push(planned);
    }
    let (legacy_records, _) = fold(&heard)?;
    let mut legacy = documents(&legacy_records);
    for (execution_id, at) in &race_claims {
        if let Some(doc) = legacy.get_mut(execution_id) {
            doc.processing_started_at = Some(taskledger_domain::Timestamp(*at));
        }
    }
    let missing = {
        let pool: Vec<(String, String)> = world.all_executions.clone();
        choose(&mut world, pool, per_kind)
    };
    for (_, execution_id) in &missing {
        legacy.remove(execution_id);
    }
    let mut faults = Vec::new();
    let kind_of = |execution_id: &String| -> &'static str {
        if race_claims.contains_key(execution_id) {
            "claimRace"
        } else if lost_set.contains(execution_id) {
            "lostUpdate"
        } else if crashed_set.contains(execution_id) {
            "crashInFailurePath"
        } else {
            "clockSkew"
        }
    };
    let latest_of: HashMap<String, String> = clean_records
        .iter()
        .filter_map(|(task_id, record)| {
            record
                .latest()
                .map(|x| (task_id.clone(), x.execution_id.to_string()))
        })
        .collect();
    let trackers = |task_id: &str, execution_id: &str| -> Vec<&'static str> {
        if task_id.starts_with("partner_tasks:")
            && latest_of.get(task_id).is_some_and(|l| l == execution_id)
        {
            vec!["taskTracker", "partnerLog"]
        } else {
            vec!["taskTracker"]
        }
    };
    for (execution_id, clean_doc) in &clean {
        match legacy.get(execution_id) {
            None => faults.push(Fault {
                kind: "missingDocument",
                execution_id: execution_id.clone(),
                task_id: clean_doc.task_id.to_string(),
                trackers: trackers(clean_doc.task_id.as_str(), execution_id),
            }),
            Some(doc) if differs(doc, clean_doc) => faults.push(Fault {
                kind: kind_of(execution_id),
                execution_id: execution_id.clone(),
                task_id: clean_doc.task_id.to_string(),
                trackers: trackers(clean_doc.task_id.as_str(), execution_id),
            }),
            Some(_) => {}
        }
    }
    // A stray document: an execution the ledger never heard of.
    let stray_execution = world.uuid();
    let stray_task = "partner_tasks:SATLOC:dead:99999999".to_owned();
    faults.push(Fault {
        kind: "strayDocument",
        execution_id: stray_execution.clone(),
        task_id: stray_task.clone(),
        trackers: vec!["taskTracker", "partnerLog"],
    });
    faults.sort();

    // The exports, with the legacy write latency on every instant.
    let mut tasktracker = Vec::with_capacity(legacy.len() + 1);
    let mut latest_docs: BTreeMap<String, LegacyDocument> = BTreeMap::new();
    let mut docs: Vec<LegacyDocument> = legacy.into_values().collect();
    docs.push(stray_document(&clean, &stray_execution, &stray_task));
    docs.sort_by_key(|doc| (doc.created_at, doc.execution_id));
    for mut doc in docs {
        let mut jitter = |t: &mut Option<taskledger_domain::Timestamp>| {
            if let Some(t) = t {
                t.0 += world.rng.i64(0..LEGACY_WRITE_LATENCY_MS_MAX);
            }
        };
        let mut created = Some(doc.created_at);
        jitter(&mut created);
        doc.created_at = created.unwrap_or(doc.created_at);
        doc.enqueued_at = doc.created_at;
        doc.updated_at = doc.created_at;
        jitter(&mut doc.processing_started_at);
        jitter(&mut doc.completed_at);
        jitter(&mut doc.failed_at);
        jitter(&mut doc.archived_at);
        let mut oid = [0u8; 12];
        world.rng.fill(&mut oid);
        tasktracker.push(tasktracker_line(&doc, oid));
        let task = doc.task_id.to_string();
        let is_latest = latest_of
            .get(&task)
            .is_some_and(|l| *l == doc.execution_id.to_string())
            || task == stray_task;
        if task.starts_with("partner_tasks:") && is_latest {
            latest_docs.insert(task, doc);
        }
    }
    let mut partnerlog = Vec::new();
    for (task_id, doc) in &latest_docs {
        let (partner, aircraft, log) = world
            .partner_tasks
            .get(task_id)
            .cloned()
            .unwrap_or_else(|| ("SATLOC".into(), "dead".into(), "99999999".into()));
        let mut oid = [0u8; 12];
        world.rng.fill(&mut oid);
        partnerlog.push(partnerlog_line(doc, &partner, &aircraft, &log, oid));
    }
    Ok(Simulation {
        reports: report_lines,
        legacy_tasktracker: tasktracker,
        legacy_partnerlog: partnerlog,
        mapping_toml: MAPPING_TOML.to_owned(),
        faults,
        tasks,
    })
}

fn stray_document(
    clean: &BTreeMap<String, LegacyDocument>,
    execution_id: &str,
    task_id: &str,
) -> LegacyDocument {
    let template = clean.values().next().cloned();
    let at = template
        .as_ref()
        .map_or(START_MS, |d| d.created_at.millis());
    LegacyDocument {
        task_id: TaskId::parse(task_id).expect("valid"),
        execution_id: taskledger_domain::ExecutionId::parse(execution_id).expect("a UUID"),
        queue_name: "partner_tasks".into(),
        message_version: "1.0".into(),
        status: taskledger_domain::ExecutionStatus::Queued,
        enqueued_at: taskledger_domain::Timestamp(at),
        processing_started_at: None,
        completed_at: None,
        failed_at: None,
        archived_at: None,
        retry_count: 0,
        max_retries: 5,
        error_message: None,
        error_category: None,
        error_stack: None,
        metadata: serde_json::json!({"partnerCode": "SATLOC", "aircraftId": "dead", "logId": "99999999"}),
        archived_reason: None,
        archived_by: None,
        created_at: taskledger_domain::Timestamp(at),
        updated_at: taskledger_domain::Timestamp(at),
    }
}

fn date(t: taskledger_domain::Timestamp) -> bson::Bson {
    bson::Bson::DateTime(bson::DateTime::from_millis(t.millis()))
}

/// One `mongoexport` line (relaxed Extended JSON) in seeds/001's field order.
pub fn tasktracker_line(doc: &LegacyDocument, oid: [u8; 12]) -> String {
    let mut d = bson::Document::new();
    d.insert("_id", bson::oid::ObjectId::from_bytes(oid));
    d.insert("taskId", doc.task_id.as_str());
    d.insert("executionId", doc.execution_id.to_string());
    d.insert("queueName", doc.queue_name.clone());
    d.insert("messageVersion", doc.message_version.clone());
    d.insert("status", doc.status.as_str());
    d.insert("enqueuedAt", date(doc.enqueued_at));
    for (name, value) in [
        ("processingStartedAt", doc.processing_started_at),
        ("completedAt", doc.completed_at),
        ("failedAt", doc.failed_at),
        ("archivedAt", doc.archived_at),
    ] {
        if let Some(t) = value {
            d.insert(name, date(t));
        }
    }
    d.insert("retryCount", doc.retry_count as i32);
    d.insert("maxRetries", doc.max_retries as i32);
    for (name, value) in [
        ("errorMessage", &doc.error_message),
        ("errorCategory", &doc.error_category),
        ("errorStack", &doc.error_stack),
    ] {
        if let Some(text) = value {
            d.insert(name, text.clone());
        }
    }
    d.insert(
        "metadata",
        bson::Bson::try_from(doc.metadata.clone())
            .unwrap_or(bson::Bson::Document(bson::Document::new())),
    );
    if let Some(reason) = &doc.archived_reason {
        d.insert("archivedReason", reason.clone());
    }
    if let Some(by) = &doc.archived_by {
        d.insert("archivedBy", by.clone());
    }
    d.insert("createdAt", date(doc.created_at));
    d.insert("updatedAt", date(doc.updated_at));
    d.insert("__v", 0i32);
    bson::Bson::Document(d).into_relaxed_extjson().to_string()
}

fn partnerlog_line(
    doc: &LegacyDocument,
    partner: &str,
    aircraft: &str,
    log: &str,
    oid: [u8; 12],
) -> String {
    use taskledger_domain::ExecutionStatus::*;
    let status = match doc.status {
        Queued => "PENDING",
        Processing => "PROCESSING",
        Completed => "PROCESSED",
        Failed => "RETRY_WAIT",
        Dlq => "DEAD",
        Archived => "ARCHIVED",
    };
    let mut d = bson::Document::new();
    d.insert("_id", bson::oid::ObjectId::from_bytes(oid));
    d.insert("partnerCode", partner);
    d.insert("aircraftId", aircraft);
    d.insert("logId", log);
    d.insert("status", status);
    d.insert("retryCount", doc.retry_count as i64);
    d.insert("createdAt", date(doc.created_at));
    if let Some(t) = doc.processing_started_at {
        d.insert("processingStartedAt", date(t));
    }
    if let Some(t) = doc.completed_at {
        d.insert("processedAt", date(t));
    }
    if let Some(t) = doc.failed_at {
        d.insert("lastFailedAt", date(t));
    }
    if let Some(message) = &doc.error_message {
        d.insert("lastError", message.clone());
    }
    if let Some(t) = doc.archived_at {
        d.insert("archivedAt", date(t));
    }
    bson::Bson::Document(d).into_relaxed_extjson().to_string()
}

/// How the PartnerLogTracker maps onto the ledger: the ready mapping of `fixtures/mappings/`.
pub const MAPPING_TOML: &str = include_str!("../../fixtures/mappings/partnerlog.toml");

/// Writes the simulation's files into `dir`.
pub fn write(simulation: &Simulation, dir: &std::path::Path) -> Result<(), ReplayError> {
    let io = |error: std::io::Error| ReplayError::Io(format!("{}: {error}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let lines = |lines: &[String]| {
        let mut text = lines.join("\n");
        text.push('\n');
        text
    };
    std::fs::write(dir.join("reports.ndjson"), lines(&simulation.reports)).map_err(io)?;
    std::fs::write(
        dir.join("legacy-tasktracker.json"),
        lines(&simulation.legacy_tasktracker),
    )
    .map_err(io)?;
    std::fs::write(
        dir.join("legacy-partnerlog.json"),
        lines(&simulation.legacy_partnerlog),
    )
    .map_err(io)?;
    std::fs::write(dir.join("mapping.toml"), &simulation.mapping_toml).map_err(io)?;
    let faults = serde_json::to_string_pretty(&simulation.faults)
        .map_err(|e| ReplayError::Io(e.to_string()))?;
    std::fs::write(dir.join("faults.json"), faults + "\n").map_err(io)?;
    Ok(())
}
