//! `taskledger-bench peers`: taskledger side by side with the design it replaces — the TaskTracker
//! of seeds/000–001 on PostgreSQL and seeds/004's idempotency check on Redis — with the same
//! generated workload, in one run, on one machine. `bench/peers.sh` installs and starts the peers.
//!
//! Nothing here asserts a time; it prints what it measured as a Markdown report.

use crate::{rss_of, start_service, Service};
use anyhow::{bail, Context};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_domain::{ExecutionStatus, Policy, Report, TaskId, Timestamp};
use taskledger_ingest::{Ledger, LedgerConfig, SystemClock};
use taskledger_projections::{query, Kv};
use taskledger_store::{EventStore, SharedStore};
use taskledger_store_sled::{SledConfig, SledStore};
use tokio_postgres::types::{ToSql, Type};

#[derive(Debug, clap::Args)]
pub struct PeersArgs {
    /// libpq connection string of the PostgreSQL peer.
    #[arg(
        long,
        default_value = "host=127.0.0.1 port=55432 user=bench dbname=postgres"
    )]
    pg: String,
    /// URL of the Redis peer.
    #[arg(long, default_value = "redis://127.0.0.1:56379/")]
    redis: String,
    /// URL of a second Redis running with `appendfsync always` (the dedup check at equal
    /// durability), if any.
    #[arg(long)]
    redis_durable: Option<String>,
    /// Workers in the worker-loop scenario (and the PostgreSQL pool size).
    #[arg(long, default_value_t = 100)]
    workers: usize,
    /// Seconds each system runs the worker loop.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent enqueues of one taskId in the race.
    #[arg(long, default_value_t = 1000)]
    race: usize,
    /// Rounds of the race for taskledger in-process and Redis, interleaved (a new taskId or key
    /// each): their latencies are pooled, and each round's p99 is reported too.
    #[arg(long, default_value_t = 10)]
    race_rounds: u64,
    /// Stored task counts for the query scenario.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000usize, 1_000_000])]
    tasks: Vec<usize>,
    /// Status and chain queries per system and size (DLQ pages and stats: a tenth, at least 50).
    #[arg(long, default_value_t = 10_000)]
    queries: usize,
    /// The `taskledger` binary used for the validation step (default: beside this one).
    #[arg(long)]
    taskledger: Option<PathBuf>,
    /// Scenarios to run (race, loop, queries, pg: taskledger on the PostgreSQL backend).
    #[arg(long, value_delimiter = ',', default_values_t = ["race".to_string(), "loop".to_string(), "queries".to_string(), "pg".to_string()])]
    scenarios: Vec<String>,
    /// Where temporary data directories go.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the Markdown report here.
    #[arg(long)]
    out: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// The workload: the same steps for every system.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Enqueue,
    Claim,
    Succeed,
    Fail,
    Retry,
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    task_id: String,
    execution_id: uuid::Uuid,
    /// Milliseconds since the epoch: the report's `at`, and the legacy code's `new Date()`.
    at: i64,
    worker: usize,
    /// Only on enqueue and retry (the legacy row's metadata).
    log_id: u64,
}

const QUEUE: &str = "bench_tasks";
const TRANSIENT: &str = "ETIMEDOUT calling partner api";
const STACK: &str = "Error: ETIMEDOUT\n    at download (partner.js:42)";
const OPERATOR: &str = "ops@acme";
/// seeds/000's dedup window.
const DEDUP_WINDOW_MS: i64 = 5 * 60_000;

/// One task of `worker`, as the seeds' load tests run it: 80 % enqueue → claim → succeed; 15 %
/// fail once (a timeout), are redelivered and succeed; 2.5 % fail six times into the DLQ (the
/// legacy tracker's maxRetries is 5) and stay there; 2.5 % do that and are retried by an operator
/// (the old execution archived, a new one enqueued), claimed and succeed.
fn task_steps(run: u64, worker: usize, task: u64) -> Vec<Step> {
    let base = 1_769_000_000_000i64 + task as i64 * 60_000; // 2026-01-21
    let task_id = format!("{QUEUE}:r{run}:w{worker}:{task}");
    let execution =
        |n: u64| uuid::Uuid::from_u64_pair((run << 32) | worker as u64, (task << 8) | n);
    let mut steps = Vec::with_capacity(16);
    let mut push = |op: Op, execution_id: uuid::Uuid| {
        let at = base + steps.len() as i64 * 100;
        steps.push(Step {
            op,
            task_id: task_id.clone(),
            execution_id,
            at,
            worker,
            log_id: task,
        });
    };
    let first = execution(1);
    push(Op::Enqueue, first);
    push(Op::Claim, first);
    match task % 40 {
        19 | 39 => {
            push(Op::Fail, first);
            for _ in 0..5 {
                push(Op::Claim, first);
                push(Op::Fail, first);
            }
            if task % 40 == 19 {
                let second = execution(2);
                push(Op::Retry, second);
                push(Op::Claim, second);
                push(Op::Succeed, second);
            }
        }
        n if n % 5 == 4 => {
            push(Op::Fail, first);
            push(Op::Claim, first);
            push(Op::Succeed, first);
        }
        _ => push(Op::Succeed, first),
    }
    steps
}

fn iso(millis: i64) -> String {
    taskledger_domain::Timestamp(millis).to_string()
}

impl Step {
    /// The taskledger report of this step.
    fn json(&self) -> String {
        let (task, execution, at, worker) =
            (&self.task_id, self.execution_id, iso(self.at), self.worker);
        match self.op {
            Op::Enqueue => format!(
                r#"{{"op":"enqueue","taskId":"{task}","executionId":"{execution}","queue":"{QUEUE}","at":"{at}","metadata":{{"partnerCode":"SATLOC","logId":"{}"}}}}"#,
                self.log_id
            ),
            Op::Claim => format!(
                r#"{{"op":"claim","taskId":"{task}","executionId":"{execution}","worker":"w{worker}","at":"{at}"}}"#
            ),
            Op::Succeed => format!(
                r#"{{"op":"succeed","taskId":"{task}","executionId":"{execution}","worker":"w{worker}","at":"{at}"}}"#
            ),
            Op::Fail => format!(
                r#"{{"op":"fail","taskId":"{task}","executionId":"{execution}","worker":"w{worker}","at":"{at}","error":{{"message":"{TRANSIENT}","stack":{}}}}}"#,
                serde_json::Value::from(STACK)
            ),
            Op::Retry => format!(
                r#"{{"op":"retry","taskId":"{task}","executionId":"{execution}","by":"{OPERATOR}","reason":"bench","at":"{at}"}}"#
            ),
        }
    }

    fn report(&self) -> anyhow::Result<Report> {
        Report::from_json(&self.json()).map_err(|error| anyhow::anyhow!("{error}"))
    }
}

// ---------------------------------------------------------------------------------------------
// The PostgreSQL peer: seeds/001's table and indexes, seeds/000's statements.

const CREATE_TABLE: &str = "
CREATE TABLE task_tracker (
    id bigserial PRIMARY KEY,
    task_id text NOT NULL,
    execution_id text NOT NULL,
    queue_name text NOT NULL,
    message_version text NOT NULL DEFAULT '1.0',
    status text NOT NULL DEFAULT 'queued',
    enqueued_at timestamptz NOT NULL,
    processing_started_at timestamptz,
    completed_at timestamptz,
    failed_at timestamptz,
    archived_at timestamptz,
    retry_count integer NOT NULL DEFAULT 0,
    max_retries integer NOT NULL DEFAULT 5,
    last_retry_at timestamptz,
    error_message text,
    error_category text,
    error_stack text,
    metadata jsonb NOT NULL DEFAULT '{}',
    archived_reason text,
    archived_by text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
)";

/// seeds/001: the field indexes (`index: true`, executionId unique) and the compound ones.
const INDEXES: &[&str] = &[
    "CREATE INDEX ON task_tracker (task_id)",
    "CREATE UNIQUE INDEX ON task_tracker (execution_id)",
    "CREATE INDEX ON task_tracker (queue_name)",
    "CREATE INDEX ON task_tracker (status)",
    "CREATE INDEX ON task_tracker (enqueued_at)",
    "CREATE INDEX ON task_tracker (processing_started_at)",
    "CREATE INDEX ON task_tracker (retry_count)",
    "CREATE INDEX ON task_tracker (error_category)",
    "CREATE INDEX ON task_tracker (created_at)",
    "CREATE UNIQUE INDEX ON task_tracker (task_id, execution_id)",
    "CREATE INDEX ON task_tracker (task_id, status, enqueued_at DESC)",
    "CREATE INDEX ON task_tracker (queue_name, status, enqueued_at DESC)",
    "CREATE INDEX ON task_tracker (status, processing_started_at)",
    "CREATE INDEX ON task_tracker (error_category, failed_at DESC)",
    "CREATE INDEX ON task_tracker (task_id, created_at)",
    "CREATE INDEX ON task_tracker (status, updated_at DESC)",
];

const COLUMNS: &str = "task_id, execution_id, queue_name, message_version, status, enqueued_at, \
    processing_started_at, completed_at, failed_at, archived_at, retry_count, max_retries, \
    error_message, error_category, error_stack, metadata, archived_reason, archived_by, \
    created_at, updated_at";

async fn pg_pool(conninfo: &str, size: usize) -> anyhow::Result<deadpool_postgres::Pool> {
    let config: tokio_postgres::Config = conninfo.parse().context("--pg")?;
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .build()?;
    let client = pool.get().await.context("connecting to PostgreSQL")?;
    let row = client
        .query_one(
            "SELECT current_setting('synchronous_commit'), current_setting('fsync'), version()",
            &[],
        )
        .await?;
    let (sync, fsync): (String, String) = (row.get(0), row.get(1));
    // Open every connection now, so no scenario pays for connecting.
    let warm = futures_util::future::join_all((1..size).map(|_| pool.get())).await;
    for client in warm {
        drop(client?);
    }
    if sync != "on" || fsync != "on" {
        bail!("the PostgreSQL peer must run with synchronous_commit = on and fsync = on (has {sync}/{fsync})");
    }
    Ok(pool)
}

async fn pg_reset(pool: &deadpool_postgres::Pool, with_indexes: bool) -> anyhow::Result<()> {
    let client = pool.get().await?;
    client
        .batch_execute("DROP TABLE IF EXISTS task_tracker")
        .await?;
    client.batch_execute(CREATE_TABLE).await?;
    if with_indexes {
        pg_indexes(&client).await?;
    }
    Ok(())
}

async fn pg_indexes(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    for index in INDEXES {
        client.batch_execute(index).await?;
    }
    client.batch_execute("ANALYZE task_tracker").await?;
    Ok(())
}

fn pg_time(millis: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

/// seeds/000's enqueue: look for a recent queued/processing execution of the taskId, then insert.
async fn pg_enqueue(client: &deadpool_postgres::Client, step: &Step) -> anyhow::Result<bool> {
    let find = client
        .prepare_cached(
            "SELECT execution_id FROM task_tracker WHERE task_id = $1 \
             AND status IN ('queued', 'processing') AND enqueued_at > $2 LIMIT 1",
        )
        .await?;
    if client
        .query_opt(&find, &[&step.task_id, &pg_time(step.at - DEDUP_WINDOW_MS)])
        .await?
        .is_some()
    {
        return Ok(false);
    }
    let insert = client
        .prepare_cached(
            "INSERT INTO task_tracker (task_id, execution_id, queue_name, status, enqueued_at, \
             metadata, created_at, updated_at) VALUES ($1, $2, $3, 'queued', $4, $5, $4, $4)",
        )
        .await?;
    let metadata = serde_json::json!({"partnerCode": "SATLOC", "logId": step.log_id.to_string()});
    let at = pg_time(step.at);
    match client
        .execute(
            &insert,
            &[
                &step.task_id,
                &step.execution_id.to_string(),
                &QUEUE,
                &at,
                &metadata,
            ],
        )
        .await
    {
        Ok(_) => Ok(true),
        // The unique index refuses a second row of one executionId (`TaskTracker.create` throws).
        Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

/// One step on the PostgreSQL tracker, as seeds/000 writes it. True when the step took effect.
async fn pg_step(client: &deadpool_postgres::Client, step: &Step) -> anyhow::Result<bool> {
    let at = pg_time(step.at);
    let execution = step.execution_id.to_string();
    Ok(match step.op {
        Op::Enqueue => pg_enqueue(client, step).await?,
        Op::Claim => {
            let claim = client
                .prepare_cached(
                    "UPDATE task_tracker SET status = 'processing', processing_started_at = $3 \
                     WHERE task_id = $1 AND execution_id = $2 AND status IN ('queued', 'failed') \
                     RETURNING *",
                )
                .await?;
            client
                .query_opt(&claim, &[&step.task_id, &execution, &at])
                .await?
                .is_some()
        }
        Op::Succeed => {
            let succeed = client
                .prepare_cached(
                    "UPDATE task_tracker SET status = 'completed', completed_at = $2 \
                     WHERE execution_id = $1",
                )
                .await?;
            client.execute(&succeed, &[&execution, &at]).await? > 0
        }
        Op::Fail => {
            let read = client
                .prepare_cached(
                    "SELECT retry_count, max_retries FROM task_tracker WHERE execution_id = $1",
                )
                .await?;
            let can_retry = client
                .query_opt(&read, &[&execution])
                .await?
                .is_some_and(|row| row.get::<_, i32>(0) < row.get::<_, i32>(1));
            let fail = client
                .prepare_cached(
                    "UPDATE task_tracker SET status = $2, error_message = $3, error_category = $4, \
                     error_stack = $5, failed_at = $6, retry_count = retry_count + 1 \
                     WHERE execution_id = $1",
                )
                .await?;
            let status = if can_retry { "failed" } else { "dlq" };
            let category = legacy_category(TRANSIENT);
            client
                .execute(
                    &fail,
                    &[&execution, &status, &TRANSIENT, &category, &STACK, &at],
                )
                .await?
                > 0
        }
        Op::Retry => {
            // The operator's manual retry from the DLQ: archive the dead execution, enqueue anew.
            let archive = client
                .prepare_cached(
                    "UPDATE task_tracker SET status = 'archived', archived_at = $2, \
                     archived_reason = 'Manual retry initiated', archived_by = $3 \
                     WHERE task_id = $1 AND status IN ('dlq', 'failed')",
                )
                .await?;
            client
                .execute(&archive, &[&step.task_id, &at, &OPERATOR])
                .await?;
            pg_enqueue(client, step).await?
        }
    })
}

fn legacy_category(message: &str) -> String {
    Policy::default().classify(message).to_owned()
}

/// The table as `mongoexport` would have written the collection: TaskTracker documents in relaxed
/// Extended JSON, one per line.
async fn pg_export(pool: &deadpool_postgres::Pool, out: &Path) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!("SELECT id, {COLUMNS} FROM task_tracker ORDER BY id"),
            &[],
        )
        .await?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let millis =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| Timestamp(t.timestamp_millis()));
    for row in &rows {
        let status: String = row.get("status");
        let doc = taskledger_projections::LegacyDocument {
            task_id: TaskId::parse(row.get("task_id")).map_err(anyhow::Error::msg)?,
            execution_id: taskledger_domain::ExecutionId::parse(row.get("execution_id"))
                .map_err(anyhow::Error::msg)?,
            queue_name: row.get("queue_name"),
            message_version: row.get("message_version"),
            status: serde_json::from_value::<ExecutionStatus>(status.into())?,
            enqueued_at: Timestamp(
                row.get::<_, chrono::DateTime<chrono::Utc>>("enqueued_at")
                    .timestamp_millis(),
            ),
            processing_started_at: millis(row.get("processing_started_at")),
            completed_at: millis(row.get("completed_at")),
            failed_at: millis(row.get("failed_at")),
            archived_at: millis(row.get("archived_at")),
            retry_count: row.get::<_, i32>("retry_count") as u32,
            max_retries: row.get::<_, i32>("max_retries") as u32,
            error_message: row.get("error_message"),
            error_category: row.get("error_category"),
            error_stack: row.get("error_stack"),
            metadata: row.get("metadata"),
            archived_reason: row.get("archived_reason"),
            archived_by: row.get("archived_by"),
            created_at: Timestamp(
                row.get::<_, chrono::DateTime<chrono::Utc>>("created_at")
                    .timestamp_millis(),
            ),
            updated_at: Timestamp(
                row.get::<_, chrono::DateTime<chrono::Utc>>("updated_at")
                    .timestamp_millis(),
            ),
        };
        let mut oid = [0u8; 12];
        oid[4..].copy_from_slice(&(row.get::<_, i64>("id") as u64).to_be_bytes());
        writeln!(
            file,
            "{}",
            taskledger_replay::simulate::tasktracker_line(&doc, oid)
        )?;
    }
    file.flush()?;
    Ok(rows.len() as u64)
}

// ---------------------------------------------------------------------------------------------
// Systems under test.

#[derive(Clone)]
enum Target {
    Ledger(Arc<Ledger>),
    Http {
        client: reqwest::Client,
        base: String,
    },
    Postgres(deadpool_postgres::Pool),
    /// Several `taskledger serve` on one store: worker w sends to instance w mod n (as a worker
    /// keeps its connection behind a load balancer).
    HttpSpread {
        client: reqwest::Client,
        bases: Vec<String>,
    },
    /// No system: each caller yields once where it would wait for an answer. The race's load
    /// generator alone (tasks, barrier, report texts, timing), whose CPU every system's round
    /// also pays.
    Generator,
}

impl Target {
    /// Sends one step and waits for its durable answer. True when it took effect.
    async fn send(
        &self,
        step: &Step,
        pg: Option<&deadpool_postgres::Client>,
    ) -> anyhow::Result<bool> {
        self.send_text(step, step.json(), pg).await
    }

    /// [`Target::send`] of a step whose report text (`step.json()`) the producer already has:
    /// taskledger still parses and validates it inside the measured call; PostgreSQL takes the
    /// step's fields.
    async fn send_text(
        &self,
        step: &Step,
        text: String,
        pg: Option<&deadpool_postgres::Client>,
    ) -> anyhow::Result<bool> {
        match self {
            Target::Ledger(ledger) => {
                let report =
                    Report::from_json(&text).map_err(|error| anyhow::anyhow!("{error}"))?;
                let submitted = ledger.submit(report).await?;
                Ok(submitted.outcome == taskledger_domain::Outcome::Accepted)
            }
            Target::HttpSpread { client, bases } => {
                post_report(client, &bases[step.worker % bases.len()], text).await
            }
            Target::Http { client, base } => post_report(client, base, text).await,
            Target::Postgres(pool) => match pg {
                Some(client) => pg_step(client, step).await,
                None => pg_step(&pool.get().await?, step).await,
            },
            Target::Generator => {
                tokio::task::yield_now().await;
                Ok(step.worker == 0)
            }
        }
    }
}

/// POSTs one report to `base` and tells whether the ledger accepted it.
async fn post_report(client: &reqwest::Client, base: &str, text: String) -> anyhow::Result<bool> {
    let response = client
        .post(format!("{base}/v1/reports"))
        .header("content-type", "application/x-ndjson")
        .body(text)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("HTTP {}", response.status());
    }
    let body = response.bytes().await?;
    Ok(memchr_accepted(&body))
}

fn memchr_accepted(body: &[u8]) -> bool {
    body.windows(10).any(|w| w == b"\"accepted\"")
}

fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Latency (recorded in nanoseconds) and throughput of one system in one scenario.
#[derive(Default, Clone)]
struct Figures {
    count: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    peak_memory: u64,
    disk: u64,
    errors: u64,
}

impl Figures {
    fn from(h: &hdrhistogram::Histogram<u64>, seconds: f64) -> Figures {
        Figures {
            count: h.len(),
            seconds,
            p50_us: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
            ..Figures::default()
        }
    }
    fn rate(&self) -> f64 {
        self.count as f64 / self.seconds.max(1e-9)
    }
}

/// Samples the summed proportional set size (PSS) of some processes until stopped; the peak.
struct MemorySampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl MemorySampler {
    fn start(pids: Vec<u32>) -> MemorySampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let total: u64 = pids.iter().map(|pid| pss_bytes(*pid)).sum();
                p.fetch_max(total, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        MemorySampler {
            stop,
            peak,
            handle: Some(handle),
        }
    }
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn pss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("Pss:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(|| rss_of(pid), |kb| kb * 1024)
}

/// The postmaster and all its children, found from one backend's pid.
async fn pg_pids(pool: &deadpool_postgres::Pool) -> anyhow::Result<Vec<u32>> {
    let client = pool.get().await?;
    let backend: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .get(0);
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = stat.rsplit_once(')')?.1;
        after.split_whitespace().nth(1)?.parse().ok()
    };
    let postmaster = parent(backend as u32).context("the PostgreSQL backend's parent")?;
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc")?.flatten() {
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        {
            if parent(pid) == Some(postmaster) {
                pids.push(pid);
            }
        }
    }
    Ok(pids)
}

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => total += dir_bytes(&entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// A ledger data directory's bytes: (the event store without its write-ahead log, the log, the
/// read models). The log is bounded (two files of at most `wal_checkpoint_bytes` of records,
/// zero-written ahead) and retired at checkpoints, like PostgreSQL's WAL: reported beside, not
/// per task.
fn ledger_disk(dir: &Path) -> (u64, u64, u64) {
    let events = dir.join("events");
    let wal: u64 = taskledger_store_sled::WAL_FILE_NAMES
        .iter()
        .filter_map(|name| std::fs::metadata(events.join(name)).ok())
        .map(|meta| meta.len())
        .sum();
    (
        dir_bytes(&events) - wal,
        wal,
        dir_bytes(&dir.join("models")),
    )
}

async fn pg_table_bytes(pool: &deadpool_postgres::Pool) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    let bytes: i64 = client
        .query_one("SELECT pg_total_relation_size('task_tracker')", &[])
        .await?
        .get(0);
    Ok(bytes as u64)
}

async fn pg_wal_lsn(pool: &deadpool_postgres::Pool) -> anyhow::Result<String> {
    let client = pool.get().await?;
    let lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    Ok(lsn)
}

async fn pg_wal_since(pool: &deadpool_postgres::Pool, lsn: &str) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    let bytes: f64 = client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8",
            &[&lsn],
        )
        .await?
        .get(0);
    Ok(bytes as u64)
}

fn open_ledger(dir: &Path) -> anyhow::Result<(Arc<SledStore>, Arc<Ledger>)> {
    let store = Arc::new(SledStore::open(SledConfig::new(dir.join("events")))?);
    let ledger = Arc::new(Ledger::new(
        store.clone() as SharedStore,
        Policy::default(),
        Arc::new(SystemClock),
        LedgerConfig::default(),
    ));
    Ok((store, ledger))
}

/// The ledger on the in-memory store: its own share of a scenario, without the disk.
fn memory_ledger() -> Arc<Ledger> {
    Arc::new(Ledger::new(
        Arc::new(taskledger_store::MemoryStore::new()) as SharedStore,
        Policy::default(),
        Arc::new(SystemClock),
        LedgerConfig::default(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: 1,000 concurrent enqueues of one taskId.

struct Race {
    figures: Figures,
    /// Executions (or keys) the system let in: 1 is right.
    let_in: u64,
    latencies: hdrhistogram::Histogram<u64>,
    /// The CPU time the round cost.
    cpu: Cpu,
    /// Bytes the round made durable: taskledger's log records, Redis' AOF growth, PostgreSQL's
    /// WAL (`None`: not measured; Redis without an AOF writes nothing per command).
    durable_bytes: Option<u64>,
}

/// CPU time spent on a piece of work, from each thread's `/proc/…/schedstat` (ns on a CPU).
#[derive(Clone, Copy, Default)]
struct Cpu {
    /// This process: the callers, the Redis or PostgreSQL client, and taskledger in-process (the
    /// HTTP service runs in this process too).
    here_ns: u64,
    /// The peer's server processes (Redis, PostgreSQL's backends), when there are any.
    server_ns: u64,
}

/// Nanoseconds that the threads of `pid` (this process: `None`) have spent on a CPU. Threads
/// that start or end in between are missed; a round's threads are the runtime's, which live on.
fn cpu_ns(pid: Option<u32>) -> u64 {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/task"),
        None => "/proc/self/task".to_owned(),
    };
    let Ok(threads) = std::fs::read_dir(dir) else {
        return 0;
    };
    threads
        .flatten()
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Measures the CPU the work between [`CpuMeter::start`] and [`CpuMeter::stop`] costs.
struct CpuMeter {
    servers: Vec<u32>,
    here: u64,
    there: u64,
}

impl CpuMeter {
    /// `servers`: the peer's server processes (none for taskledger).
    fn start(servers: &[u32]) -> CpuMeter {
        CpuMeter {
            servers: servers.to_vec(),
            here: cpu_ns(None),
            there: servers.iter().map(|&pid| cpu_ns(Some(pid))).sum(),
        }
    }

    fn stop(self) -> Cpu {
        let there: u64 = self.servers.iter().map(|&pid| cpu_ns(Some(pid))).sum();
        Cpu {
            here_ns: cpu_ns(None).saturating_sub(self.here),
            server_ns: there.saturating_sub(self.there),
        }
    }
}

/// The mean of `of` over `races`; `None` if any round lacks it.
fn mean(races: &[Race], of: impl Fn(&Race) -> Option<u64>) -> Option<u64> {
    let total: u64 = races.iter().map(of).sum::<Option<u64>>()?;
    Some(total / races.len().max(1) as u64)
}

/// Rounds of one system's race, pooled.
struct Rounds {
    /// Every caller of every round.
    pooled: Figures,
    /// Each round's p99, in µs.
    round_p99_us: Vec<f64>,
    /// Rounds that let in exactly one.
    right: u64,
    /// Executions (or keys) let in beyond the first, over all rounds.
    duplicates: u64,
    /// The mean round's CPU time.
    cpu: Cpu,
    /// The mean round's durable bytes, when measured.
    durable_bytes: Option<u64>,
}

impl Rounds {
    fn of(races: &[Race]) -> anyhow::Result<Rounds> {
        let mut pooled = histogram();
        for race in races {
            pooled.add(&race.latencies)?;
        }
        Ok(Rounds {
            pooled: Figures::from(&pooled, races.iter().map(|race| race.figures.seconds).sum()),
            round_p99_us: races.iter().map(|race| race.figures.p99_us).collect(),
            right: races.iter().filter(|race| race.let_in == 1).count() as u64,
            duplicates: races.iter().map(|race| race.let_in.saturating_sub(1)).sum(),
            cpu: Cpu {
                here_ns: mean(races, |race| Some(race.cpu.here_ns)).unwrap_or(0),
                server_ns: mean(races, |race| Some(race.cpu.server_ns)).unwrap_or(0),
            },
            durable_bytes: mean(races, |race| race.durable_bytes),
        })
    }

    /// The median round's p99, in µs.
    fn median_round_p99_us(&self) -> f64 {
        let mut sorted = self.round_p99_us.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
    }

    fn round_range_ms(&self) -> String {
        let lowest = self
            .round_p99_us
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let highest = self.round_p99_us.iter().copied().fold(0.0, f64::max);
        format!("{:.2}–{:.2} ms", lowest / 1000.0, highest / 1000.0)
    }
}

/// The race's enqueues: one taskId, each caller its own executionId.
fn race_steps(race: usize, run: u64) -> Vec<Step> {
    let task_id = format!("{QUEUE}:race{run}:SATLOC:695d:02220710");
    (0..race)
        .map(|n| Step {
            op: Op::Enqueue,
            task_id: task_id.clone(),
            execution_id: uuid::Uuid::from_u64_pair(0xace, (run << 32) | n as u64),
            at: 1_769_000_000_000,
            worker: n,
            log_id: 2_220_710,
        })
        .collect()
}

/// taskledger's own work per report of the race, measured on one thread with nothing else
/// running, no I/O and no waiting: what a durable answer costs at least, before the log, sled
/// and the scheduling of a thousand callers.
struct Floor {
    /// `Report::from_json` of the report text.
    parse_ns: f64,
    /// `Report::key` (canonical JSON + SHA-1).
    key_ns: f64,
    /// `decide_keyed`, the event ids, each event's data encoded, the state advanced.
    decide_ns: f64,
}

impl Floor {
    fn total_ns(&self) -> f64 {
        self.parse_ns + self.key_ns + self.decide_ns
    }
}

/// [`Floor`] over `rounds` races of `race` reports (after one round to warm up).
fn ledger_floor(race: usize, rounds: u64) -> anyhow::Result<Floor> {
    let policy = Policy::default();
    let mut spent = [Duration::ZERO; 3];
    for round in 0..=rounds {
        let texts: Vec<String> = race_steps(race, 1_000 + round)
            .iter()
            .map(Step::json)
            .collect();
        let started = Instant::now();
        let reports = texts
            .iter()
            .map(|text| Report::from_json(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let parsed = Instant::now();
        let keys: Vec<_> = reports.iter().map(Report::key).collect();
        let keyed = Instant::now();
        let mut state = taskledger_domain::TaskState::default();
        let mut bytes = 0usize;
        for (report, &key) in reports.iter().zip(&keys) {
            let decision = taskledger_domain::decide_keyed(&state, report, key, &policy);
            for (n, event) in decision.events.iter().enumerate() {
                let id = decision.report_key.event_id(n);
                bytes += event.encode_data().len() + id.as_bytes().len();
            }
            for event in &decision.events {
                state.apply(event);
            }
        }
        let decided = Instant::now();
        std::hint::black_box(bytes);
        if round > 0 {
            spent[0] += parsed - started;
            spent[1] += keyed - parsed;
            spent[2] += decided - keyed;
        }
    }
    let per_report =
        |spent: Duration| spent.as_nanos() as f64 / (race as u64 * rounds.max(1)) as f64;
    Ok(Floor {
        parse_ns: per_report(spent[0]),
        key_ns: per_report(spent[1]),
        decide_ns: per_report(spent[2]),
    })
}

/// `servers`: the peer's server processes, whose CPU the round counts too.
async fn race_target(
    target: &Target,
    race: usize,
    run: u64,
    servers: &[u32],
) -> anyhow::Result<Race> {
    let steps = race_steps(race, run);
    let gate = Arc::new(tokio::sync::Barrier::new(race));
    let meter = CpuMeter::start(servers);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(race);
    for step in steps {
        let (target, gate) = (target.clone(), gate.clone());
        // The message as the producer holds it, like the Redis key below: built before the gate.
        let text = step.json();
        handles.push(tokio::spawn(async move {
            gate.wait().await;
            let sent = Instant::now();
            let accepted = target.send_text(&step, text, None).await?;
            anyhow::Ok((accepted, sent.elapsed()))
        }));
    }
    let mut h = histogram();
    let mut let_in = 0;
    for handle in handles {
        let (accepted, took) = handle.await??;
        let_in += accepted as u64;
        h.record(took.as_nanos().max(1) as u64)?;
    }
    Ok(Race {
        figures: Figures::from(&h, started.elapsed().as_secs_f64()),
        let_in,
        latencies: h,
        cpu: meter.stop(),
        durable_bytes: None,
    })
}

/// `taskledger-bench race`: the race of [`race_section`] without the peers, round after round,
/// on sled (durable answers) and on the in-memory store (the ledger's own share).
pub(crate) async fn race_only(race: usize, rounds: u64) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let (store, ledger) = open_ledger(temp.path())?;
    let memory = memory_ledger();
    println!("{race} concurrent enqueues of one taskId, {rounds} rounds (a new taskId each)");
    for round in 0..rounds {
        let stats = store.stats();
        let snapshot = || {
            [
                &stats.commits,
                &stats.stage_nanos,
                &stats.apply_nanos,
                &stats.flush_nanos,
            ]
            .map(|counter| counter.load(Ordering::Relaxed))
        };
        let before = snapshot();
        let on_sled = race_target(&Target::Ledger(ledger.clone()), race, 100 + round, &[]).await?;
        let after = snapshot();
        let commits = after[0] - before[0];
        let [stage, apply, flush] = [1, 2, 3].map(|n| (after[n] - before[n]) as f64 / 1e6);
        let in_memory =
            race_target(&Target::Ledger(memory.clone()), race, 200 + round, &[]).await?;
        println!(
            "round {round}: sled let in {}, p50 {:.2} ms p99 {:.2} ms, all in {:.2} ms, CPU {:.1} ms, {commits} commits (stage {stage:.2} + apply {apply:.2} + flush {flush:.2} ms) | in-memory p50 {:.2} ms p99 {:.2} ms, CPU {:.1} ms",
            on_sled.let_in,
            on_sled.figures.p50_us / 1000.0,
            on_sled.figures.p99_us / 1000.0,
            on_sled.figures.seconds * 1000.0,
            on_sled.cpu.here_ns as f64 / 1e6,
            in_memory.figures.p50_us / 1000.0,
            in_memory.figures.p99_us / 1000.0,
            in_memory.cpu.here_ns as f64 / 1e6,
        );
    }
    let generator = race_target(&Target::Generator, race, 300, &[]).await?;
    let floor = ledger_floor(race, 20)?;
    println!(
        "the load generator alone: p99 {:.2} ms, CPU {:.1} ms; taskledger's own work per report on one thread (no I/O, no waiting): parse {:.2} + key {:.2} + decide and encode {:.2} = {:.2} µs",
        generator.figures.p99_us / 1000.0,
        generator.cpu.here_ns as f64 / 1e6,
        floor.parse_ns / 1000.0,
        floor.key_ns / 1000.0,
        floor.decide_ns / 1000.0,
        floor.total_ns() / 1000.0,
    );
    Ok(())
}

/// seeds/004's check with what taskledger keeps besides: every call, won or refused, also
/// appends its outcome to an audit list, so a Redis with `appendfsync always` makes each answer
/// durable, as taskledger's rejection events are.
const AUDITED_SET_NX: &str =
    "local won = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) \
     redis.call('RPUSH', KEYS[2], ARGV[1] .. (won and ':accepted' or ':duplicateEnqueue')) \
     if won then return 1 else return 0 end";

/// The race on Redis: `SET NX` per caller, or (`audited`) [`AUDITED_SET_NX`]. Also returns, for
/// the first round of plain `SET NX`, one caller at a time.
async fn race_redis(
    url: &str,
    race: usize,
    round: u64,
    audited: bool,
) -> anyhow::Result<(Race, Race)> {
    let client = redis::Client::open(url).context("--redis")?;
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let key = format!(
        "idempotency:{QUEUE}:race{round}{}:SATLOC:695d:02220710:{}",
        if audited { "a" } else { "" },
        std::process::id()
    );
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut connection.clone())
        .await?;
    let servers: Vec<u32> = redis_pid(&mut connection.clone())
        .await
        .into_iter()
        .collect();
    let aof_before = redis_aof_bytes(&mut connection.clone()).await;
    let gate = Arc::new(tokio::sync::Barrier::new(race));
    let meter = CpuMeter::start(&servers);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(race);
    for n in 0..race {
        let (mut connection, gate, key) = (connection.clone(), gate.clone(), key.clone());
        handles.push(tokio::spawn(async move {
            gate.wait().await;
            let sent = Instant::now();
            let won = if audited {
                let won: i64 = redis::cmd("EVAL")
                    .arg(AUDITED_SET_NX)
                    .arg(2)
                    .arg(&key)
                    .arg(format!("{key}:audit"))
                    .arg(n)
                    .arg(4 * 3600)
                    .query_async(&mut connection)
                    .await?;
                won == 1
            } else {
                // seeds/004: `SET key value NX EX ttl` — the first caller wins.
                let reply: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(n)
                    .arg("NX")
                    .arg("EX")
                    .arg(4 * 3600)
                    .query_async(&mut connection)
                    .await?;
                reply.is_some()
            };
            anyhow::Ok((won, sent.elapsed()))
        }));
    }
    let mut h = histogram();
    let mut let_in = 0;
    for handle in handles {
        let (won, took) = handle.await??;
        let_in += won as u64;
        h.record(took.as_nanos().max(1) as u64)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = meter.stop();
    let aof_after = redis_aof_bytes(&mut connection.clone()).await;
    let concurrent = Race {
        figures: nanos_figures(&h, seconds),
        let_in,
        latencies: h,
        cpu,
        durable_bytes: aof_before
            .zip(aof_after)
            .map(|(before, after)| after.saturating_sub(before)),
    };
    if round > 0 || audited {
        let sequential = Race {
            figures: Figures::default(),
            let_in: 0,
            latencies: histogram(),
            cpu: Cpu::default(),
            durable_bytes: None,
        };
        return Ok((concurrent, sequential));
    }
    // And one client at a time: each SET NX on a fresh key, the latency of a lone dedup check.
    let mut connection = connection;
    let mut h = histogram();
    let started = Instant::now();
    for n in 0..race * 10 {
        let sent = Instant::now();
        let _: Option<String> = redis::cmd("SET")
            .arg(format!("{key}:{n}"))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(60)
            .query_async(&mut connection)
            .await?;
        h.record(sent.elapsed().as_nanos().max(1) as u64)?;
    }
    let sequential = Race {
        figures: nanos_figures(&h, started.elapsed().as_secs_f64()),
        let_in: 0,
        latencies: h,
        cpu: Cpu::default(),
        durable_bytes: None,
    };
    Ok((concurrent, sequential))
}

/// The Redis server's pid (`INFO server`) when it runs on this machine, for its CPU time.
async fn redis_pid(connection: &mut redis::aio::MultiplexedConnection) -> Option<u32> {
    let info = redis_info(connection, "server").await?;
    let pid: u32 = info_field(&info, "process_id")?.parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// The Redis server's AOF size (`INFO persistence`), when it keeps one.
async fn redis_aof_bytes(connection: &mut redis::aio::MultiplexedConnection) -> Option<u64> {
    let info = redis_info(connection, "persistence").await?;
    if info_field(&info, "aof_enabled")? != "1" {
        return None;
    }
    info_field(&info, "aof_current_size")?.parse().ok()
}

/// One section of Redis' `INFO`.
async fn redis_info(
    connection: &mut redis::aio::MultiplexedConnection,
    section: &str,
) -> Option<String> {
    redis::cmd("INFO")
        .arg(section)
        .query_async(connection)
        .await
        .ok()
}

/// The value of `field` in an `INFO` text.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

fn nanos_figures(h: &hdrhistogram::Histogram<u64>, seconds: f64) -> Figures {
    Figures::from(h, seconds)
}

/// One taskledger enqueue at a time, each a new task: a lone dedup decision, durable.
async fn sequential_ledger(ledger: &Ledger, count: usize) -> anyhow::Result<Figures> {
    let mut h = histogram();
    let started = Instant::now();
    for n in 0..count {
        let step = Step {
            op: Op::Enqueue,
            task_id: format!("{QUEUE}:lone:{n}"),
            execution_id: uuid::Uuid::from_u64_pair(0x10e, n as u64),
            at: 1_769_000_000_000,
            worker: 0,
            log_id: n as u64,
        };
        let report = step.report()?;
        let sent = Instant::now();
        ledger.submit(report).await?;
        h.record(sent.elapsed().as_nanos().max(1) as u64)?;
    }
    Ok(nanos_figures(&h, started.elapsed().as_secs_f64()))
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: N workers looping enqueue → claim → succeed/fail.

struct Loop {
    figures: Figures,
    /// Steps each worker completed (a prefix of its workload).
    done: Vec<usize>,
    tasks: u64,
}

async fn worker_loop(
    target: &Target,
    workers: usize,
    seconds: u64,
    run: u64,
    pids: Vec<u32>,
) -> anyhow::Result<Loop> {
    let sampler = MemorySampler::start(pids);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let gate = Arc::new(tokio::sync::Barrier::new(workers));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(workers);
    for worker in 0..workers {
        let (target, gate) = (target.clone(), gate.clone());
        handles.push(tokio::spawn(async move {
            let pg = match &target {
                Target::Postgres(pool) => Some(pool.get().await?),
                _ => None,
            };
            gate.wait().await;
            let mut h = histogram();
            let (mut done, mut tasks, mut errors) = (0usize, 0u64, 0u64);
            'tasks: for task in 0.. {
                for step in task_steps(run, worker, task) {
                    if Instant::now() >= deadline {
                        break 'tasks;
                    }
                    let sent = Instant::now();
                    match target.send(&step, pg.as_ref()).await {
                        Ok(_) => {
                            h.record(sent.elapsed().as_nanos().max(1) as u64)?;
                            done += 1;
                        }
                        Err(error) => {
                            errors += 1;
                            if errors == 1 {
                                eprintln!("worker {worker}: {error:#}");
                            }
                            break 'tasks;
                        }
                    }
                }
                tasks += 1;
            }
            anyhow::Ok((h, done, tasks, errors))
        }));
    }
    let mut h = histogram();
    let mut done = Vec::with_capacity(workers);
    let (mut tasks, mut errors) = (0, 0);
    for handle in handles {
        let (worker_h, worker_done, worker_tasks, worker_errors) = handle.await??;
        h.add(worker_h)?;
        done.push(worker_done);
        tasks += worker_tasks;
        errors += worker_errors;
    }
    let mut figures = Figures::from(&h, started.elapsed().as_secs_f64());
    figures.peak_memory = sampler.finish();
    figures.errors = errors;
    Ok(Loop {
        figures,
        done,
        tasks,
    })
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: queries over N stored tasks.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Query {
    Status,
    Chain,
    DlqPage,
    Stats,
}

impl Query {
    const ALL: [Query; 4] = [Query::Status, Query::Chain, Query::DlqPage, Query::Stats];
    fn name(self) -> &'static str {
        match self {
            Query::Status => "status of one task",
            Query::Chain => "retry chain",
            Query::DlqPage => "DLQ page (50)",
            Query::Stats => "queue stats",
        }
    }
}

async fn run_queries(
    what: Query,
    count: usize,
    task_ids: &[String],
    mut one: impl FnMut(
        Query,
        &str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = anyhow::Result<usize>> + Send>,
    >,
) -> anyhow::Result<Figures> {
    let mut h = histogram();
    let started = Instant::now();
    for n in 0..count {
        let task_id = &task_ids[(n * 7919) % task_ids.len()];
        let sent = Instant::now();
        let found = one(what, task_id).await?;
        if found == 0 && matches!(what, Query::Status | Query::Chain) {
            bail!("{}: nothing found for {task_id}", what.name());
        }
        h.record(sent.elapsed().as_nanos().max(1) as u64)?;
    }
    Ok(nanos_figures(&h, started.elapsed().as_secs_f64()))
}

/// Fills a fresh taskledger data directory with `tasks` tasks of the workload (64 producer
/// streams, durable batches), projects them, and returns the service over it.
async fn populate(dir: &Path, tasks: usize) -> anyhow::Result<(Service, Vec<String>)> {
    let streams = 64usize;
    {
        let (store, ledger) = open_ledger(dir)?;
        let per_stream = tasks.div_ceil(streams);
        let started = Instant::now();
        let mut made = 0usize;
        let mut task = 0u64;
        while made < tasks {
            let mut batch = Vec::with_capacity(8192);
            for _ in 0..64 {
                for worker in 0..streams {
                    if made < tasks && (task as usize) < per_stream {
                        for step in task_steps(0, worker, task) {
                            batch.push(step.report()?);
                        }
                        made += 1;
                    }
                }
                task += 1;
            }
            for chunk in batch.chunks(8192) {
                ledger.submit_batch(chunk.to_vec()).await?;
            }
            if made == tasks || made % (tasks / 10).max(1) < 4096 {
                eprintln!("  taskledger: {made}/{tasks} tasks");
            }
        }
        eprintln!(
            "  taskledger: {tasks} tasks, {} events, ingested in {:.1}s",
            store.head_position(),
            started.elapsed().as_secs_f64()
        );
    }
    let started = Instant::now();
    let service = start_service(dir).await?;
    service.caught_up().await?;
    eprintln!(
        "  taskledger: projected in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut task_ids = Vec::new();
    let mut n = 0u64;
    taskledger_projections::kv::for_each_task(service.models.as_ref(), &mut |task_id, _| {
        n += 1;
        if n.is_multiple_of(13) {
            task_ids.push(task_id.as_str().to_owned());
        }
    })?;
    Ok((service, task_ids))
}

/// Loads the legacy documents of the ledger's models into a fresh PostgreSQL table (COPY, then
/// the seeds' indexes): the same executions, as the legacy tracker would hold them.
async fn pg_load(pool: &deadpool_postgres::Pool, models: &dyn Kv) -> anyhow::Result<u64> {
    pg_reset(pool, false).await?;
    let client = pool.get().await?;
    let sink = client
        .copy_in(&format!("COPY task_tracker ({COLUMNS}) FROM STDIN BINARY"))
        .await?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::INT4,
        Type::INT4,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::JSONB,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
    ];
    let mut writer = std::pin::pin!(tokio_postgres::binary_copy::BinaryCopyInWriter::new(
        sink, &types
    ));
    let mut documents = Vec::new();
    taskledger_projections::kv::for_each_task(models, &mut |task_id, record| {
        documents.extend(record.legacy_documents(&task_id));
    })?;
    let time = |t: Option<Timestamp>| t.map(|t| pg_time(t.millis()));
    for doc in &documents {
        let (task_id, execution_id, status) = (
            doc.task_id.as_str(),
            doc.execution_id.to_string(),
            doc.status.as_str(),
        );
        let (enqueued, created, updated) = (
            pg_time(doc.enqueued_at.millis()),
            pg_time(doc.created_at.millis()),
            pg_time(doc.updated_at.millis()),
        );
        let (started, completed, failed, archived) = (
            time(doc.processing_started_at),
            time(doc.completed_at),
            time(doc.failed_at),
            time(doc.archived_at),
        );
        let (retries, max) = (doc.retry_count as i32, doc.max_retries as i32);
        let values: [&(dyn ToSql + Sync); 20] = [
            &task_id,
            &execution_id,
            &doc.queue_name,
            &doc.message_version,
            &status,
            &enqueued,
            &started,
            &completed,
            &failed,
            &archived,
            &retries,
            &max,
            &doc.error_message,
            &doc.error_category,
            &doc.error_stack,
            &doc.metadata,
            &doc.archived_reason,
            &doc.archived_by,
            &created,
            &updated,
        ];
        writer.as_mut().write(&values).await?;
    }
    let rows = writer.as_mut().finish().await?;
    pg_indexes(&client).await?;
    Ok(rows)
}

async fn pg_query(
    client: &deadpool_postgres::Client,
    what: Query,
    task_id: &str,
) -> anyhow::Result<usize> {
    let sql = match what {
        // The current execution: the latest of the taskId.
        Query::Status => "SELECT * FROM task_tracker WHERE task_id = $1 ORDER BY created_at DESC LIMIT 1",
        // seeds/001 findRetryChain.
        Query::Chain => "SELECT * FROM task_tracker WHERE task_id = $1 ORDER BY created_at",
        // The DLQ of a queue, newest first (the (queueName, status, enqueuedAt) index).
        Query::DlqPage => "SELECT * FROM task_tracker WHERE queue_name = $1 AND status = 'dlq' ORDER BY enqueued_at DESC LIMIT 50",
        // seeds/001 getQueueStats.
        Query::Stats => "SELECT status, count(*) FROM task_tracker WHERE queue_name = $1 GROUP BY status",
    };
    let statement = client.prepare_cached(sql).await?;
    let parameter = match what {
        Query::Status | Query::Chain => task_id,
        Query::DlqPage | Query::Stats => QUEUE,
    };
    Ok(client.query(&statement, &[&parameter]).await?.len())
}

fn ledger_query(models: &dyn Kv, what: Query, task_id: &str) -> anyhow::Result<usize> {
    let json = match what {
        Query::Status | Query::Chain => {
            let id = TaskId::parse(task_id).map_err(anyhow::Error::msg)?;
            let Some(record) = query::stored_task(models, &id)? else {
                return Ok(0);
            };
            if what == Query::Status {
                serde_json::to_vec(&record.status_view(&id))?
            } else {
                serde_json::to_vec(&record.chain_view(&id))?
            }
        }
        Query::DlqPage => serde_json::to_vec(&query::dlq_page(
            models,
            &query::DlqQuery {
                queue: Some(QUEUE.into()),
                limit: 50,
                ..Default::default()
            },
        )?)?,
        Query::Stats => serde_json::to_vec(&query::queue_stats(models, Some(QUEUE))?)?,
    };
    Ok(json.len())
}

async fn http_query(
    client: &reqwest::Client,
    base: &str,
    what: Query,
    task_id: &str,
) -> anyhow::Result<usize> {
    let url = match what {
        Query::Status => format!("{base}/v1/tasks/{task_id}"),
        Query::Chain => format!("{base}/v1/tasks/{task_id}/chain"),
        Query::DlqPage => format!("{base}/v1/dlq?queue={QUEUE}&limit=50"),
        Query::Stats => format!("{base}/v1/queues/{QUEUE}/stats"),
    };
    let response = client.get(url).send().await?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(0);
    }
    if !response.status().is_success() {
        bail!("HTTP {}", response.status());
    }
    Ok(response.bytes().await?.len())
}

// ---------------------------------------------------------------------------------------------
// The run.

pub async fn run(args: PeersArgs) -> anyhow::Result<()> {
    let temp = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let taskledger_bin = match &args.taskledger {
        Some(path) => path.clone(),
        None => crate::taskledger_bin()?,
    };
    if !taskledger_bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release --bins) or pass --taskledger",
            taskledger_bin.display()
        );
    }
    let pool = pg_pool(&args.pg, args.workers.max(1)).await?;
    let pg_version: String = pool
        .get()
        .await?
        .query_one("SHOW server_version", &[])
        .await?
        .get(0);
    let mut redis_connection = redis::Client::open(args.redis.as_str())?
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let redis_server = redis_info(&mut redis_connection, "server")
        .await
        .context("Redis' INFO server")?;
    let redis_version = info_field(&redis_server, "redis_version").unwrap_or("?");
    let mut report = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    writeln!(report, "Machine: {cores} cores, {}; PostgreSQL {pg_version} (synchronous_commit = on, fsync = on, pool of {} connections) and Redis {redis_version}, both on loopback, started by `bench/peers.sh`; taskledger on sled in this process, acknowledging after fsync.\n", machine_memory(), args.workers)?;

    for scenario in &args.scenarios {
        if !["race", "loop", "queries", "pg"].contains(&scenario.as_str()) {
            bail!("--scenarios: unknown {scenario:?} (race, loop, queries, pg)");
        }
    }
    let wants = |name: &str| args.scenarios.iter().any(|s| s == name);
    if wants("race") {
        race_section(&args, &pool, temp.path(), &mut report).await?;
    }
    if wants("loop") {
        loop_section(&args, &pool, temp.path(), &taskledger_bin, &mut report).await?;
    }
    if wants("queries") {
        query_sections(&args, &pool, temp.path(), &mut report).await?;
    }
    if wants("pg") {
        pg_backend_section(&args, &pool, temp.path(), &taskledger_bin, &mut report).await?;
    }
    if let Some(out) = &args.out {
        std::fs::write(out, &report)?;
        eprintln!("report → {}", out.display());
    }
    Ok(())
}

async fn race_section(
    args: &PeersArgs,
    pool: &deadpool_postgres::Pool,
    temp: &Path,
    out: &mut String,
) -> anyhow::Result<()> {
    let mut report = String::new();
    let pool = pool.clone();
    let rounds = args.race_rounds.max(1);
    eprintln!(
        "race: {} concurrent enqueues of one taskId, {rounds} rounds (taskledger and Redis interleaved)",
        args.race
    );
    let race_dir = temp.join("race");
    let (race_store, race_ledger) = open_ledger(&race_dir)?;
    let (mut ledger_races, mut redis_races, mut durable_races, mut generator_races) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut audited_races = Vec::new();
    let (mut redis_lone, mut durable_lone) = (None, None);
    let logged = || race_store.stats().logged_bytes.load(Ordering::Relaxed);
    for round in 0..rounds {
        let before = logged();
        let mut race = race_target(
            &Target::Ledger(race_ledger.clone()),
            args.race,
            10 + round,
            &[],
        )
        .await?;
        race.durable_bytes = Some(logged() - before);
        ledger_races.push(race);
        let (race, lone) = race_redis(&args.redis, args.race, round, false).await?;
        redis_races.push(race);
        redis_lone.get_or_insert(lone);
        if let Some(url) = &args.redis_durable {
            let (race, lone) = race_redis(url, args.race, round, false).await?;
            durable_races.push(race);
            durable_lone.get_or_insert(lone);
            audited_races.push(race_redis(url, args.race, round, true).await?.0);
        }
        generator_races.push(race_target(&Target::Generator, args.race, 30 + round, &[]).await?);
    }
    let generator = Rounds::of(&generator_races)?;
    let floor = ledger_floor(args.race, 20)?;
    let stats = race_store.stats();
    eprintln!(
        "  taskledger in-process: {} group commits; committer stage {:.1} ms, apply_batch {:.1} ms, flush {:.1} ms",
        stats.commits.load(Ordering::Relaxed),
        stats.stage_nanos.load(Ordering::Relaxed) as f64 / 1e6,
        stats.apply_nanos.load(Ordering::Relaxed) as f64 / 1e6,
        stats.flush_nanos.load(Ordering::Relaxed) as f64 / 1e6
    );
    {
        // The ledger's own share, without the disk: the same race on the in-memory store.
        let memory = memory_ledger();
        let in_memory = race_target(&Target::Ledger(memory), args.race, 5, &[]).await?;
        eprintln!(
            "  taskledger on the in-memory store (diagnostic): p50 {:.2} ms p99 {:.2} ms, all answered in {:.1} ms",
            in_memory.figures.p50_us / 1000.0,
            in_memory.figures.p99_us / 1000.0,
            in_memory.figures.seconds * 1000.0
        );
    }
    let lone = sequential_ledger(&race_ledger, args.race * 2).await?;
    drop(race_ledger);
    let http_race = {
        let service = start_service(&temp.join("race-http")).await?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(args.race)
            .build()?;
        // Open the connections first, as the PostgreSQL pool and the Redis connection are.
        let warm = (0..args.race).map(|_| client.get(format!("{}/healthz", service.base)).send());
        for response in futures_util::future::join_all(warm).await {
            response?.bytes().await?;
        }
        let target = Target::Http {
            client,
            base: service.base.clone(),
        };
        let logged = || service.store.stats().logged_bytes.load(Ordering::Relaxed);
        let before = logged();
        let mut race = race_target(&target, args.race, 2, &[]).await?;
        race.durable_bytes = Some(logged() - before);
        race
    };
    pg_reset(&pool, true).await?;
    let pg_servers = pg_pids(&pool).await?;
    let wal = pg_wal_lsn(&pool).await?;
    let mut pg_race =
        race_target(&Target::Postgres(pool.clone()), args.race, 3, &pg_servers).await?;
    pg_race.durable_bytes = Some(pg_wal_since(&pool, &wal).await?);
    let ledger = Rounds::of(&ledger_races)?;
    let redis = Rounds::of(&redis_races)?;
    let durable = (!durable_races.is_empty())
        .then(|| Rounds::of(&durable_races))
        .transpose()?;
    let audited = (!audited_races.is_empty())
        .then(|| Rounds::of(&audited_races))
        .transpose()?;
    let once = |race: &Race| Rounds::of(std::slice::from_ref(race));
    writeln!(
        report,
        "### {} concurrent enqueues of one taskId (seeds/000's load test)\n",
        args.race
    )?;
    writeln!(report, "Each enqueue has its own executionId; all start together (a barrier). \"Let in\" counts the executions (or keys) created: 1 is right. Latency is each caller's wait for its answer: durable for taskledger (fsync) and PostgreSQL (synchronous commit); Redis answers from memory unless run with `appendfsync always`. taskledger in-process and Redis run {rounds} rounds each, interleaved (a new taskId or key each round): p50 and p99 are over every caller of every round, and each round's own p99 is shown as its median and range; HTTP and PostgreSQL run one round. CPU per round is the time every thread spent on a CPU (`/proc/…/schedstat`) from the first task's spawn to the last answer: this process holds the 1,000 callers, the clients, and taskledger itself (in-process, or its HTTP service); the server column is the peer's own processes. Bytes made durable per round: taskledger's write-ahead log records (1 accepted event and 999 rejection events, the audit trail), Redis' AOF growth with `appendfsync always` (the default keeps no AOF), PostgreSQL's WAL.\n")?;
    writeln!(
        report,
        "| system | rounds | rounds letting in exactly 1 | duplicates let in | p50 | p99 (all rounds) | round p99: median (range) | CPU per round: this process + server | bytes made durable per round |"
    )?;
    writeln!(report, "|---|---|---|---|---|---|---|---|---|")?;
    let mut rows: Vec<(&str, Rounds)> = vec![
        ("taskledger, in-process", ledger),
        ("taskledger, HTTP", once(&http_race)?),
        ("PostgreSQL tracker (find, then insert)", once(&pg_race)?),
        ("Redis `SET NX EX` (seeds/004), default persistence", redis),
    ];
    if let Some(durable) = durable {
        rows.push(("Redis `SET NX EX`, `appendfsync always`", durable));
    }
    if let Some(audited) = audited {
        rows.push((
            "Redis `SET NX EX` + `RPUSH` of each outcome to an audit list (one script), `appendfsync always`",
            audited,
        ));
    }
    for (name, rounds) in &rows {
        writeln!(
            report,
            "| {name} | {} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms ({}) | {:.1} + {:.1} ms | {} |",
            rounds.round_p99_us.len(),
            rounds.right,
            rounds.duplicates,
            rounds.pooled.p50_us / 1000.0,
            rounds.pooled.p99_us / 1000.0,
            rounds.median_round_p99_us() / 1000.0,
            rounds.round_range_ms(),
            rounds.cpu.here_ns as f64 / 1e6,
            rounds.cpu.server_ns as f64 / 1e6,
            rounds
                .durable_bytes
                .map_or_else(|| "—".to_owned(), |bytes| format!("{bytes} B")),
        )?;
    }
    let (ledger, redis) = (&rows[0].1, &rows[3].1);
    writeln!(
        report,
        "\nDedup decision p99, {} concurrent callers, over {rounds} rounds: taskledger in-process {:.2} ms (durable) vs Redis {:.2} ms (from memory): ratio {:.2} (median round: {:.2} vs {:.2} ms, ratio {:.2}).",
        args.race,
        ledger.pooled.p99_us / 1000.0,
        redis.pooled.p99_us / 1000.0,
        ledger.pooled.p99_us / redis.pooled.p99_us.max(1e-9),
        ledger.median_round_p99_us() / 1000.0,
        redis.median_round_p99_us() / 1000.0,
        ledger.median_round_p99_us() / redis.median_round_p99_us().max(1e-9),
    )?;
    let (ledger_cpu, redis_cpu) = (
        ledger.cpu.here_ns + ledger.cpu.server_ns,
        redis.cpu.here_ns + redis.cpu.server_ns,
    );
    writeln!(
        report,
        "CPU per round on the machine's {} cores: taskledger {:.1} ms, Redis {:.1} ms (client {:.1} + server {:.1}): {:.1}× — with every core busy for the whole burst, the last answer waits for roughly that work divided by the cores.",
        std::thread::available_parallelism().map_or(1, usize::from),
        ledger_cpu as f64 / 1e6,
        redis_cpu as f64 / 1e6,
        redis.cpu.here_ns as f64 / 1e6,
        redis.cpu.server_ns as f64 / 1e6,
        ledger_cpu as f64 / redis_cpu.max(1) as f64,
    )?;
    let beside = |what: &str, peer: &Rounds| {
        format!(
            "{what}: {:.2} ms vs {:.2} ms, ratio {:.2} (median round: {:.2} vs {:.2} ms).",
            ledger.pooled.p99_us / 1000.0,
            peer.pooled.p99_us / 1000.0,
            ledger.pooled.p99_us / peer.pooled.p99_us.max(1e-9),
            ledger.median_round_p99_us() / 1000.0,
            peer.median_round_p99_us() / 1000.0,
        )
    };
    if let Some((_, audited)) = rows.get(5) {
        writeln!(report, "{}", beside("At equal durability and audit (Redis answering each call only once its outcome is appended and fsynced, as taskledger's rejection events are)", audited))?;
    }
    if let Some((_, durable)) = rows.get(4) {
        writeln!(
            report,
            "{}",
            beside("At equal durability (Redis `appendfsync always`)", durable)
        )?;
    }
    let own_us = |rounds: &Rounds| {
        (rounds.cpu.here_ns + rounds.cpu.server_ns).saturating_sub(generator.cpu.here_ns) as f64
            / args.race.max(1) as f64
            / 1000.0
    };
    writeln!(
        report,
        "The load generator alone (the same callers, barrier and report texts, each caller yielding once where it would wait; {rounds} rounds interleaved with the others): p99 {:.2} ms, CPU {:.1} ms per round. Beyond it, each system's own CPU per enqueue: taskledger {:.2} µs, Redis {:.2} µs (client and server). taskledger's own work per report on one thread, with no I/O and no waiting — the least its durable answer costs: parse {:.2} µs, key {:.2} µs, decide and encode the event {:.2} µs: {:.2} µs, {:.1}× Redis' whole cost per enqueue.",
        generator.pooled.p99_us / 1000.0,
        generator.cpu.here_ns as f64 / 1e6,
        own_us(ledger),
        own_us(redis),
        floor.parse_ns / 1000.0,
        floor.key_ns / 1000.0,
        floor.decide_ns / 1000.0,
        floor.total_ns() / 1000.0,
        floor.total_ns() / 1000.0 / own_us(redis).max(1e-9),
    )?;
    let redis_lone = redis_lone.context("at least one round")?;
    write!(
        report,
        "One caller at a time: taskledger ({} new taskIds, each an fsync'd commit) p50 {:.0} µs p99 {:.0} µs; Redis `SET NX` ({} keys) p50 {:.0} µs p99 {:.0} µs",
        lone.count,
        lone.p50_us,
        lone.p99_us,
        redis_lone.figures.count,
        redis_lone.figures.p50_us,
        redis_lone.figures.p99_us,
    )?;
    if let Some(lone) = &durable_lone {
        write!(
            report,
            ", with `appendfsync always` p50 {:.0} µs p99 {:.0} µs",
            lone.figures.p50_us, lone.figures.p99_us
        )?;
    }
    writeln!(report, ".\n")?;
    println!("{report}");
    out.push_str(&report);
    Ok(())
}

async fn loop_section(
    args: &PeersArgs,
    pool: &deadpool_postgres::Pool,
    temp: &Path,
    taskledger_bin: &Path,
    report: &mut String,
) -> anyhow::Result<()> {
    let me = vec![std::process::id()];
    let pool = pool.clone();
    let mut section = String::new();
    eprintln!(
        "worker loop: {} workers, {}s per system",
        args.workers, args.seconds
    );
    let loop_dir = temp.join("loop-ledger");
    let ledger_loop = {
        let service = start_service(&loop_dir).await?;
        let mut result = worker_loop(
            &Target::Ledger(service.ledger.clone()),
            args.workers,
            args.seconds,
            10,
            me.clone(),
        )
        .await?;
        let lag_started = Instant::now();
        service.caught_up().await?;
        eprintln!(
            "  models caught up {:.2}s after the last acknowledgement",
            lag_started.elapsed().as_secs_f64()
        );
        result.figures.disk = dir_bytes(&loop_dir);
        result
    };
    let http_dir = temp.join("loop-http");
    let http_loop = {
        let service = start_service(&http_dir).await?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(args.workers)
            .build()?;
        let target = Target::Http {
            client,
            base: service.base.clone(),
        };
        let mut result = worker_loop(&target, args.workers, args.seconds, 11, me.clone()).await?;
        service.caught_up().await?;
        result.figures.disk = dir_bytes(&http_dir);
        result
    };
    pg_reset(&pool, true).await?;
    let pids = pg_pids(&pool).await?;
    let wal = pg_wal_lsn(&pool).await?;
    let pg_loop = {
        let mut result = worker_loop(
            &Target::Postgres(pool.clone()),
            args.workers,
            args.seconds,
            12,
            pids.clone(),
        )
        .await?;
        result.figures.disk = pg_table_bytes(&pool).await?;
        result
    };
    let pg_wal = pg_wal_since(&pool, &wal).await?;
    writeln!(
        section,
        "### {} workers, each looping enqueue → claim → succeed/fail ({} s per system)\n",
        args.workers, args.seconds
    )?;
    writeln!(section, "Per task: 80 % succeed at once, 15 % fail once (a timeout), are redelivered and succeed, 2.5 % fail six times into the DLQ, 2.5 % do that and are retried by an operator. Each report waits for its durable answer before the next. taskledger keeps its read models live (the projection follower) during the run; the PostgreSQL table is its own read model, with seeds/001's 16 indexes.\n")?;
    writeln!(
        section,
        "| system | reports/s | tasks | p50 | p99 | peak memory (PSS) | bytes on disk | per task | errors |"
    )?;
    writeln!(section, "|---|---|---|---|---|---|---|---|---|")?;
    for (name, result, disk_note) in [
        ("taskledger, in-process", &ledger_loop, "events + models"),
        ("taskledger, HTTP", &http_loop, "events + models"),
        ("PostgreSQL tracker", &pg_loop, "table + indexes"),
    ] {
        let f = &result.figures;
        writeln!(
            section,
            "| {name} | {:.0} | {} | {:.2} ms | {:.2} ms | {:.0} MiB | {:.1} MiB ({disk_note}) | {:.0} B | {} |",
            f.rate(),
            result.tasks,
            f.p50_us / 1000.0,
            f.p99_us / 1000.0,
            f.peak_memory as f64 / 1048576.0,
            f.disk as f64 / 1048576.0,
            f.disk as f64 / result.tasks.max(1) as f64,
            f.errors
        )?;
    }
    let ratio = |a: &Figures, b: &Figures| a.rate() / b.rate().max(1e-9);
    writeln!(
        section,
        "\nRatios taskledger / PostgreSQL: throughput in-process **{:.1}×**, over HTTP **{:.1}×**; p99 in-process {:.2} ms vs {:.2} ms, over HTTP {:.2} ms. PostgreSQL also wrote {:.1} MiB of WAL besides its table. Memory: taskledger's figure is this whole process (the load generator and the HTTP client included); PostgreSQL's is the postmaster and its backends.\n",
        ratio(&ledger_loop.figures, &pg_loop.figures),
        ratio(&http_loop.figures, &pg_loop.figures),
        ledger_loop.figures.p99_us / 1000.0,
        pg_loop.figures.p99_us / 1000.0,
        http_loop.figures.p99_us / 1000.0,
        pg_wal as f64 / 1048576.0
    )?;

    // Correctness: the PostgreSQL table, exported as mongoexport would, validated against a
    // ledger fed exactly the reports the PostgreSQL workers completed.
    eprintln!("validation: the PostgreSQL table against taskledger");
    let check_dir = temp.join("check");
    {
        let (_store, ledger) = open_ledger(&check_dir)?;
        for (worker, &done) in pg_loop.done.iter().enumerate() {
            let mut reports = Vec::with_capacity(done);
            'tasks: for task in 0.. {
                for step in task_steps(12, worker, task) {
                    if reports.len() == done {
                        break 'tasks;
                    }
                    reports.push(step.report()?);
                }
            }
            ledger.submit_batch(reports).await?;
        }
    }
    let export = check_dir.join("pg-export.json");
    let exported = pg_export(&pool, &export).await?;
    let verdict = validate(taskledger_bin, &check_dir, &export).await?;
    writeln!(section, "Correctness in the same run: the PostgreSQL table exported as Extended JSON ({exported} documents) and checked with `taskledger validate` against a ledger given exactly the reports the PostgreSQL workers completed: {verdict}.\n")?;
    // And the race: the duplicates PostgreSQL let in, as validation sees them.
    pg_reset(&pool, true).await?;
    let race_check = temp.join("race-check");
    let race_again_ledger = {
        let (_store, ledger) = open_ledger(&race_check)?;
        race_target(&Target::Ledger(ledger), args.race, 4, &[]).await?
    };
    let pg_again = race_target(&Target::Postgres(pool.clone()), args.race, 4, &[]).await?;
    let race_export = race_check.join("pg-export.json");
    pg_export(&pool, &race_export).await?;
    let race_verdict = validate(taskledger_bin, &race_check, &race_export).await?;
    writeln!(section, "The race again, both systems given the same {} enqueues: taskledger let in {}, PostgreSQL {}; `taskledger validate` on PostgreSQL's table: {race_verdict}.\n", args.race, race_again_ledger.let_in, pg_again.let_in)?;
    println!("{section}");
    report.push_str(&section);
    Ok(())
}

async fn query_sections(
    args: &PeersArgs,
    pool: &deadpool_postgres::Pool,
    temp: &Path,
    report: &mut String,
) -> anyhow::Result<()> {
    let me = vec![std::process::id()];
    let pool = pool.clone();
    for &tasks in &args.tasks {
        let mut section = String::new();
        eprintln!("queries over {tasks} tasks");
        let dir = temp.join(format!("query-{tasks}"));
        let (service, task_ids) = populate(&dir, tasks).await?;
        let load_started = Instant::now();
        let rows = pg_load(&pool, service.models.as_ref()).await?;
        eprintln!(
            "  PostgreSQL: {rows} rows loaded and indexed in {:.1}s",
            load_started.elapsed().as_secs_f64()
        );
        let pg_bytes = pg_table_bytes(&pool).await?;
        let ledger_bytes = dir_bytes(&dir);
        let (events_bytes, wal_bytes, models_bytes) = ledger_disk(&dir);
        let per_task = |bytes: u64| bytes as f64 / tasks.max(1) as f64;
        let pg_pids = pg_pids(&pool).await?;
        writeln!(
            section,
            "### Queries with {tasks} tasks stored ({rows} executions)\n"
        )?;
        writeln!(section, "One client, one query at a time, over random taskIds. taskledger reads its stored models (JSON encoding included; over HTTP the whole request); PostgreSQL runs the seeds' queries on the table with the seeds' indexes (rows fetched, not encoded). taskledger's memory is its whole process, which has just ingested and projected these tasks itself (the event store's sled cache and the models' redb cache included). On disk: taskledger {:.0} MiB (events + models), PostgreSQL {:.0} MiB (table + indexes). Per task: taskledger {:.0} B (events {:.0} B + read models {:.0} B; the write-ahead log, {:.0} MiB, bounded and beside), PostgreSQL {:.0} B.\n", ledger_bytes as f64 / 1048576.0, pg_bytes as f64 / 1048576.0, per_task(events_bytes + models_bytes), per_task(events_bytes), per_task(models_bytes), wal_bytes as f64 / 1048576.0, per_task(pg_bytes))?;
        writeln!(section, "| query | taskledger in-process p50 / p99 | taskledger HTTP p50 / p99 | PostgreSQL p50 / p99 | p99 ratio PostgreSQL / taskledger in-process | peak memory: taskledger process / PostgreSQL |")?;
        writeln!(section, "|---|---|---|---|---|---|")?;
        let pg_client = pool.get().await?;
        let http = reqwest::Client::new();
        for what in Query::ALL {
            let count = match what {
                Query::Status | Query::Chain => args.queries,
                Query::DlqPage => (args.queries / 10).max(50),
                Query::Stats => 50,
            };
            let sampler = MemorySampler::start(me.clone());
            let models = service.models.clone();
            let inproc = run_queries(what, count, &task_ids, |what, id| {
                let (models, id) = (models.clone(), id.to_owned());
                Box::pin(async move { ledger_query(models.as_ref(), what, &id) })
            })
            .await?;
            let base = service.base.clone();
            let over_http = run_queries(what, count, &task_ids, |what, id| {
                let (http, base, id) = (http.clone(), base.clone(), id.to_owned());
                Box::pin(async move { http_query(&http, &base, what, &id).await })
            })
            .await?;
            let own_peak = sampler.finish();
            let sampler = MemorySampler::start(pg_pids.clone());
            let client = &pg_client;
            let mut pg_h = histogram();
            let started = Instant::now();
            for n in 0..count {
                let id = &task_ids[(n * 7919) % task_ids.len()];
                let sent = Instant::now();
                let found = pg_query(client, what, id).await?;
                if found == 0 && matches!(what, Query::Status | Query::Chain) {
                    bail!("PostgreSQL: nothing found for {id}");
                }
                pg_h.record(sent.elapsed().as_nanos().max(1) as u64)?;
            }
            let pg = nanos_figures(&pg_h, started.elapsed().as_secs_f64());
            let pg_peak = sampler.finish();
            writeln!(
                section,
                "| {} ({count}×) | {} / {} | {} / {} | {} / {} | {:.0}× | {:.0} MiB / {:.0} MiB |",
                what.name(),
                micros(inproc.p50_us),
                micros(inproc.p99_us),
                micros(over_http.p50_us),
                micros(over_http.p99_us),
                micros(pg.p50_us),
                micros(pg.p99_us),
                pg.p99_us / inproc.p99_us.max(1e-9),
                own_peak as f64 / 1048576.0,
                pg_peak as f64 / 1048576.0
            )?;
        }
        println!("{section}");
        report.push_str(&section);
        report.push('\n');
        drop(service);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn micros(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn machine_memory() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(
            || "? memory".into(),
            |kb| format!("{:.0} GiB", kb as f64 / 1048576.0),
        )
}

/// Runs `taskledger validate` on DIR against EXPORT; a one-line verdict from its JSON report.
async fn validate(bin: &Path, dir: &Path, export: &Path) -> anyhow::Result<String> {
    let report_path = dir.join("validation.json");
    let output = tokio::process::Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .arg("validate")
        .arg("--legacy")
        .arg(export)
        .arg("--report")
        .arg(&report_path)
        .output()
        .await?;
    let code = output.status.code().unwrap_or(-1);
    if code == 2 || !report_path.exists() {
        bail!(
            "taskledger validate failed (exit {code}): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path)?)?;
    Ok(format!(
        "exit {code}: {} of {} compared executions consistent ({} legacy documents, {} ledger executions; mismatches by kind: {})",
        report["consistent"],
        report["compared"],
        report["legacyDocuments"],
        report["ledgerExecutions"],
        report["byKind"]
    ))
}

// ---------------------------------------------------------------------------------------------
// Scenario 4: taskledger on the PostgreSQL backend, on the same server as the tracker.

/// A `postgres://` URL of database `dbname` on the server `conninfo` (key=value) names, for
/// `--store`.
fn store_url(conninfo: &str, dbname: &str) -> String {
    let field = |key: &str, default: &str| {
        conninfo
            .split_whitespace()
            .find_map(|word| word.strip_prefix(&format!("{key}=")).map(str::to_owned))
            .unwrap_or_else(|| default.to_owned())
    };
    format!(
        "postgres://{}@{}:{}/{dbname}",
        field("user", "postgres"),
        field("host", "127.0.0.1"),
        field("port", "5432")
    )
}

async fn pg_backend_section(
    args: &PeersArgs,
    pool: &deadpool_postgres::Pool,
    temp: &Path,
    taskledger_bin: &Path,
    report: &mut String,
) -> anyhow::Result<()> {
    use taskledger_store_postgres::{PostgresConfig, PostgresStore};
    let me = vec![std::process::id()];
    let mut section = String::new();
    eprintln!(
        "PostgreSQL backend: {} workers, {}s per system",
        args.workers, args.seconds
    );
    let reset = || async {
        let admin = pool.get().await?;
        admin
            .batch_execute("DROP DATABASE IF EXISTS taskledger_bench")
            .await?;
        admin
            .batch_execute("CREATE DATABASE taskledger_bench")
            .await?;
        anyhow::Ok(())
    };
    let url = store_url(&args.pg, "taskledger_bench");
    let open = || {
        let mut config = PostgresConfig::new(url.clone());
        config.pool_connections_max = 16;
        PostgresStore::open(config)
    };
    let pids = pg_pids(pool).await?;

    // In this process: the ledger (combiner, group commit) on the PostgreSQL store.
    reset().await?;
    let store: SharedStore = Arc::new(open().await?);
    let ledger = Arc::new(Ledger::new(
        store.clone(),
        Policy::default(),
        Arc::new(SystemClock),
        LedgerConfig::default(),
    ));
    let wal = pg_wal_lsn(pool).await?;
    let mut all_pids = pids.clone();
    all_pids.extend(&me);
    let in_process = worker_loop(
        &Target::Ledger(ledger.clone()),
        args.workers,
        args.seconds,
        30,
        all_pids.clone(),
    )
    .await?;
    let ledger_wal = pg_wal_since(pool, &wal).await?;
    let events = store.head_position();
    let ledger_bytes: i64 = pool
        .get()
        .await?
        .query_one("SELECT pg_database_size('taskledger_bench')", &[])
        .await?
        .get(0);

    // The rebuild rate from PostgreSQL: every read model from the events just written.
    let models_dir = temp.join("pg-rebuild");
    let kv = Arc::new(taskledger_projections::RedbKv::open(
        &models_dir,
        crate::MODELS_CACHE_BYTES,
    )?);
    let mut projector = taskledger_projections::Projector::new(kv.clone() as Arc<dyn Kv>);
    let rebuild_started = Instant::now();
    taskledger_projections::catch_up(
        store.clone(),
        &mut projector,
        &taskledger_projections::CatchUpOptions::default(),
        &|_, _| {},
    )
    .await?;
    let rebuild_s = rebuild_started.elapsed().as_secs_f64();
    drop((ledger, store, kv, projector));

    // Over HTTP: one `taskledger serve`, then two, each its own process on the same database.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.workers)
        .build()?;
    let mut http = Vec::new();
    for (run, instances) in [(31u64, 1usize), (32, 2)] {
        reset().await?;
        let servers: Vec<crate::failover::Instance> = (0..instances)
            .map(|n| {
                crate::failover::serve(
                    taskledger_bin,
                    &temp.join(format!("pg-serve-{run}-{n}")),
                    &url,
                )
            })
            .collect::<anyhow::Result<_>>()?;
        let mut watched = pids.clone();
        watched.extend(servers.iter().map(|server| server.child.id()));
        let target = Target::HttpSpread {
            client: client.clone(),
            bases: servers.iter().map(|server| server.base.clone()).collect(),
        };
        let result = worker_loop(&target, args.workers, args.seconds, run, watched).await?;
        http.push((instances, result));
    }

    // The tracker's statements, on the same server, in the same run.
    pg_reset(pool, true).await?;
    let tracker_wal = pg_wal_lsn(pool).await?;
    let tracker = worker_loop(
        &Target::Postgres(pool.clone()),
        args.workers,
        args.seconds,
        33,
        pids.clone(),
    )
    .await?;
    let tracker_wal = pg_wal_since(pool, &tracker_wal).await?;
    let tracker_bytes = pg_table_bytes(pool).await?;

    writeln!(
        section,
        "### taskledger on the PostgreSQL backend beside the tracker, one server ({} workers, {} s per system)\n",
        args.workers, args.seconds
    )?;
    writeln!(section, "The same worker loop as above. taskledger appends every report (rejections included) as an event to `taskledger.events` in the database `taskledger_bench` (one transaction per group commit, `synchronous_commit = on`), keeping the whole history; the tracker overwrites one row per execution. Over HTTP each instance is its own `taskledger serve --store` process with its own read models; worker w talks to instance w mod n.\n")?;
    writeln!(
        section,
        "| system | reports/s | tasks | p50 | p99 | errors |"
    )?;
    writeln!(section, "|---|---|---|---|---|---|")?;
    let mut rows: Vec<(String, &Loop)> =
        vec![("taskledger on PostgreSQL, in-process".into(), &in_process)];
    for (instances, result) in &http {
        rows.push((
            format!("taskledger on PostgreSQL, HTTP, {instances} instance(s)"),
            result,
        ));
    }
    rows.push(("PostgreSQL tracker (seeds' statements)".into(), &tracker));
    for (name, result) in &rows {
        let f = &result.figures;
        writeln!(
            section,
            "| {name} | {:.0} | {} | {:.2} ms | {:.2} ms | {} |",
            f.rate(),
            result.tasks,
            f.p50_us / 1000.0,
            f.p99_us / 1000.0,
            f.errors
        )?;
    }
    let ratio = |a: &Figures| a.rate() / tracker.figures.rate().max(1e-9);
    let (one, two) = (&http[0].1.figures, &http[1].1.figures);
    writeln!(
        section,
        "\nRatios to the tracker: in-process **{:.1}×** (p99 {:.2} vs {:.2} ms), HTTP one instance **{:.1}×**, two instances **{:.1}×**. Two instances vs one: {:.2}× the throughput, p99 {:.2} vs {:.2} ms. WAL written: taskledger {:.1} MiB for {events} events, the tracker {:.1} MiB. Database size after the in-process run: {:.1} MiB (events + indexes), the tracker's table {:.1} MiB.\n",
        ratio(&in_process.figures),
        in_process.figures.p99_us / 1000.0,
        tracker.figures.p99_us / 1000.0,
        ratio(one),
        ratio(two),
        two.rate() / one.rate().max(1e-9),
        two.p99_us / 1000.0,
        one.p99_us / 1000.0,
        ledger_wal as f64 / 1048576.0,
        tracker_wal as f64 / 1048576.0,
        ledger_bytes as f64 / 1048576.0,
        tracker_bytes as f64 / 1048576.0,
    )?;
    writeln!(
        section,
        "Rebuild from PostgreSQL: every read model from {events} events in {rebuild_s:.2} s = **{:.0} events/s** (read in chunks through the store's pool, folded and written to redb).\n",
        events as f64 / rebuild_s.max(1e-9)
    )?;
    println!("{section}");
    report.push_str(&section);
    Ok(())
}
