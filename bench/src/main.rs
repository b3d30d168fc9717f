//! Benchmarks and crash-test workloads for the write path (not tests: nothing here asserts a
//! time). `taskledger-bench ingest` prints acknowledged reports/s and latency percentiles;
//! `taskledger-bench ack-writer` is the child the crash tests kill.

mod failover;
mod faults;
mod peers;

use anyhow::Context;

/// mimalloc: glibc's malloc serialises the projection pipeline's threads on its arena locks and
/// fragments under sled's many small allocations; built with `no_thp` because zeroing fresh
/// transparent huge pages cost a quarter of a validation run (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_domain::{Policy, Report};
use taskledger_ingest::{Ledger, LedgerConfig, SystemClock};
use taskledger_store::{EventStore, SharedStore};
use taskledger_store_sled::{SledConfig, SledStore};

#[derive(Parser)]
#[command(name = "taskledger-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Durable acknowledged reports/s and latency for concurrent writers on the sled backend.
    Ingest {
        /// Writer counts to run, one fresh store each.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 64])]
        writers: Vec<usize>,
        /// Reports per run.
        #[arg(long, default_value_t = 200_000)]
        reports: usize,
        /// Where the temporary stores go (default: the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Writes the benchmark workload as NDJSON (tasks of `streams` writers interleaved), for
    /// timing `taskledger ingest` on a large file.
    Workload {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        reports: usize,
        #[arg(long, default_value_t = 64)]
        streams: usize,
    },
    /// Fills a data directory with the benchmark workload through the ledger (batched, durable).
    Populate {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 5_000_000)]
        reports: usize,
        #[arg(long, default_value_t = 64)]
        streams: usize,
    },
    /// Rebuilds the read models of a populated data directory into a fresh store and prints
    /// events/s, memory, and task/chain query latency over the stored models.
    Rebuild {
        #[arg(long)]
        data_dir: PathBuf,
        /// Events per atomic model write.
        #[arg(long, default_value_t = 65_536)]
        chunk_events: usize,
        /// Task/chain queries to time.
        #[arg(long, default_value_t = 20_000)]
        queries: usize,
        /// Only read and decode the events (no models): the read side's share.
        #[arg(long)]
        read_only: bool,
    },
    /// Opens the models a `rebuild` run left in DATA_DIR/bench-models in a fresh process, queries
    /// tasks spread over the whole key space, and prints resident memory per tracked task.
    ModelsMemory {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 20_000)]
        queries: usize,
    },
    /// Times opening the read models of a taskledger data directory (DATA_DIR/models) with and
    /// without redb's integrity check (every page's checksum read: what every command and
    /// `serve` pay at open), `runs` times each, alternating; with `--drop-caches` the kernel's
    /// page cache is dropped before each open (root), for a cold disk.
    ModelsOpen {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long)]
        drop_caches: bool,
    },
    /// Writes the legacy TaskTracker export the ledger in DATA_DIR implies (relaxed Extended
    /// JSON), with every 1000th document's status changed, for timing `taskledger validate`.
    LegacyExport {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// The HTTP load generator: the service on a fresh data directory (in this process, on
    /// loopback) and N workers each looping enqueue → claim → succeed (every fifth task: fail,
    /// claim, succeed), one report per request, waiting for each response.
    HttpLoad {
        #[arg(long, default_value_t = 100)]
        workers: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Use a running service instead (e.g. http://127.0.0.1:7070, token via TASKLEDGER_TOKEN).
        #[arg(long)]
        url: Option<String>,
    },
    /// taskledger beside the legacy tracker's design on PostgreSQL and seeds/004's Redis dedup
    /// check: the enqueue race, the worker loop, queries at 100 k and 1 M tasks, and a validation
    /// of the PostgreSQL table. Needs the peers running: use `bench/peers.sh`.
    Peers(peers::PeersArgs),
    /// The enqueue race alone (no PostgreSQL or Redis): `concurrent` enqueues of one taskId, all
    /// released together, against the ledger on sled and on the in-memory store; `rounds` times.
    Race {
        #[arg(long, default_value_t = 1000)]
        concurrent: usize,
        #[arg(long, default_value_t = 5)]
        rounds: u64,
    },
    /// Two `taskledger serve` on a PostgreSQL primary with a synchronous standby; the primary
    /// SIGKILLed `kills` times under load and the standby promoted: nothing acknowledged lost,
    /// nothing duplicated, models equal a rebuild; failover times. Starts its own servers.
    Failover(failover::FailoverArgs),
    /// The storage-fault simulation over many seeds (bench/faults.sh): appends through the sled
    /// store over a disk that tears, drops and fails writes, fails syncs and reads, fills up and
    /// loses power; every acknowledged append checked after every reopen.
    Faults(faults::FaultsArgs),
    /// The read models' storage-fault simulation over many seeds (bench/faults.sh --models): the
    /// projection runner keeps redb models on a disk that tears, drops and fails writes, fails
    /// syncs and reads, fills up and loses power; every entry checked against a rebuild.
    ModelsFaults(faults::ModelsFaultsArgs),
    /// Submits reports from concurrent writers and prints `ACK <taskId> <eventId>...` after each
    /// acknowledgement, for the crash tests.
    AckWriter {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 16)]
        writers: usize,
        #[arg(long, default_value_t = 1_000_000)]
        reports: usize,
        /// Distinguishes runs into the same directory (task ids include it).
        #[arg(long, default_value_t = 0)]
        run: u64,
        /// Log bytes between checkpoints (small: many turns of the log, each checkpoint on its
        /// own thread, for the kills to land in).
        #[arg(long)]
        wal_checkpoint_bytes: Option<u64>,
    },
}

/// The reports writer `writer` sends, in order: per task an enqueue → claim → succeed, and every
/// fifth task fails twice into the DLQ and is retried by an operator (a two-event decision).
fn workload(run: u64, writer: usize, reports: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(reports + 8);
    let mut task = 0u64;
    while out.len() < reports {
        task_reports(run, writer, task, &mut out);
        task += 1;
    }
    out.truncate(reports);
    out
}

/// The reports of one task of writer `writer`, in order.
fn task_reports(run: u64, writer: usize, task: u64, out: &mut Vec<String>) {
    let base = 1_769_000_000_000i64; // 2026-01-21
    let task_id = format!("bench_tasks:r{run}:w{writer}:{task}");
    let execution = |n: u64| {
        uuid::Uuid::from_u64_pair((run << 32) | writer as u64, (task << 8) | n).to_string()
    };
    let at = |step: i64| {
        chrono::DateTime::from_timestamp_millis(base + task as i64 * 60_000 + step * 100)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default()
    };
    let first = execution(1);
    out.push(format!(r#"{{"op":"enqueue","taskId":"{task_id}","executionId":"{first}","queue":"bench_tasks","maxRetries":1,"at":"{}","metadata":{{"partnerCode":"SATLOC","logId":"{task}"}}}}"#, at(0)));
    out.push(format!(r#"{{"op":"claim","taskId":"{task_id}","executionId":"{first}","worker":"w{writer}","at":"{}"}}"#, at(1)));
    if task % 5 == 4 {
        out.push(format!(r#"{{"op":"fail","taskId":"{task_id}","executionId":"{first}","worker":"w{writer}","at":"{}","error":{{"message":"ETIMEDOUT calling partner api","stack":"Error: ETIMEDOUT\n    at download (partner.js:42)"}}}}"#, at(2)));
        out.push(format!(r#"{{"op":"claim","taskId":"{task_id}","executionId":"{first}","worker":"w{writer}","at":"{}"}}"#, at(3)));
        out.push(format!(r#"{{"op":"fail","taskId":"{task_id}","executionId":"{first}","worker":"w{writer}","at":"{}","error":{{"message":"Invalid log header"}}}}"#, at(4)));
        let second = execution(2);
        out.push(format!(r#"{{"op":"retry","taskId":"{task_id}","executionId":"{second}","by":"ops@acme","reason":"bench","at":"{}"}}"#, at(5)));
        out.push(format!(r#"{{"op":"claim","taskId":"{task_id}","executionId":"{second}","worker":"w{writer}","at":"{}"}}"#, at(6)));
        out.push(format!(
            r#"{{"op":"succeed","taskId":"{task_id}","executionId":"{second}","at":"{}"}}"#,
            at(7)
        ));
    } else {
        out.push(format!(
            r#"{{"op":"succeed","taskId":"{task_id}","executionId":"{first}","at":"{}"}}"#,
            at(2)
        ));
    }
}

fn parse_all(lines: Vec<String>) -> anyhow::Result<Vec<Report>> {
    lines
        .iter()
        .map(|line| Report::from_json(line).with_context(|| line.clone()))
        .collect()
}

fn open_ledger(dir: &std::path::Path) -> anyhow::Result<(Arc<SledStore>, Arc<Ledger>)> {
    open_ledger_with(SledConfig::new(dir))
}

fn open_ledger_with(config: SledConfig) -> anyhow::Result<(Arc<SledStore>, Arc<Ledger>)> {
    let store = Arc::new(SledStore::open(config)?);
    let ledger = Arc::new(Ledger::new(
        store.clone() as SharedStore,
        Policy::default(),
        Arc::new(SystemClock),
        LedgerConfig::default(),
    ));
    Ok((store, ledger))
}

async fn bench_ingest(writers: usize, reports: usize, dir: &std::path::Path) -> anyhow::Result<()> {
    let (store, ledger) = open_ledger(dir)?;
    let per_writer = reports.div_ceil(writers);
    let mut prepared = Vec::with_capacity(writers);
    for writer in 0..writers {
        prepared.push(parse_all(workload(0, writer, per_writer))?);
    }
    let started = Instant::now();
    let mut handles = Vec::with_capacity(writers);
    for batch in prepared {
        let ledger = ledger.clone();
        handles.push(tokio::spawn(async move {
            let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            for report in batch {
                let sent = Instant::now();
                ledger.submit(report).await?;
                histogram.record(sent.elapsed().as_micros().max(1) as u64)?;
            }
            anyhow::Ok(histogram)
        }));
    }
    let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for handle in handles {
        histogram.add(handle.await??)?;
    }
    let elapsed = started.elapsed();
    let acknowledged = histogram.len();
    let stats = store.stats();
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    let commits = load(&stats.commits).max(1);
    println!(
        "sled durable  writers={writers:<3} reports={acknowledged:<8} {:>9.0} reports/s  p50={:.2}ms p99={:.2}ms p999={:.2}ms max={:.2}ms  events={} disk={:.1}MiB",
        acknowledged as f64 / elapsed.as_secs_f64(),
        histogram.value_at_quantile(0.50) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.value_at_quantile(0.999) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0,
        store.head_position(),
        store.size_on_disk() as f64 / (1024.0 * 1024.0),
    );
    let busy =
        (load(&stats.stage_nanos) + load(&stats.apply_nanos) + load(&stats.flush_nanos)) as f64;
    println!(
        "              group commits={commits} avg {:.1} reports/commit; committer time: stage {:.0}% apply_batch {:.0}% flush {:.0}%; per commit: apply {:.0}µs flush {:.0}µs; committer busy {:.0}% of wall time",
        load(&stats.requests) as f64 / commits as f64,
        100.0 * load(&stats.stage_nanos) as f64 / busy,
        100.0 * load(&stats.apply_nanos) as f64 / busy,
        100.0 * load(&stats.flush_nanos) as f64 / busy,
        load(&stats.apply_nanos) as f64 / commits as f64 / 1000.0,
        load(&stats.flush_nanos) as f64 / commits as f64 / 1000.0,
        100.0 * busy / elapsed.as_nanos() as f64,
    );
    println!(
        "              checkpoints={} ({:.1} ms in all, on their own thread: sled flushed and synced while commits go on)",
        load(&stats.checkpoints),
        load(&stats.checkpoint_nanos) as f64 / 1e6,
    );
    Ok(())
}

async fn ack_writer(
    data_dir: PathBuf,
    writers: usize,
    reports: usize,
    run: u64,
    wal_checkpoint_bytes: Option<u64>,
) -> anyhow::Result<()> {
    let mut config = SledConfig::new(&data_dir);
    if let Some(bytes) = wal_checkpoint_bytes {
        config.wal_checkpoint_bytes = bytes;
    }
    let (_store, ledger) = open_ledger_with(config)?;
    let per_writer = reports.div_ceil(writers.max(1));
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    println!("READY");
    std::io::stdout().flush()?;
    let mut handles = Vec::new();
    for writer in 0..writers {
        let ledger = ledger.clone();
        let stdout = stdout.clone();
        let lines = workload(run, writer, per_writer);
        handles.push(tokio::spawn(async move {
            for line in lines {
                // Parsed one at a time so the child starts writing at once.
                let report = Report::from_json(&line)?;
                let task_id = report.task_id.to_string();
                let submitted = ledger.submit(report).await?;
                let ids: Vec<String> = submitted
                    .event_ids
                    .iter()
                    .map(|id| id.to_string())
                    .collect();
                let mut out = stdout
                    .lock()
                    .map_err(|_| anyhow::anyhow!("stdout poisoned"))?;
                // Written only after `submit` returned: the report is durable.
                writeln!(out, "ACK {task_id} {}", ids.join(" "))?;
                out.flush()?;
            }
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    println!("DONE");
    Ok(())
}

fn rss_bytes() -> u64 {
    rss_of(std::process::id())
}

/// VmRSS of a process, in bytes (0 when it cannot be read).
pub(crate) fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

async fn populate(data_dir: PathBuf, reports: usize, streams: usize) -> anyhow::Result<()> {
    let (store, ledger) = open_ledger(&data_dir.join("events"))?;
    let per = reports.div_ceil(streams.max(1));
    let started = Instant::now();
    let mut done = 0usize;
    // Interleave the streams in rounds so tasks of all writers mix in the global order.
    // 190 tasks of ~5.25 reports each: about 1,000 reports per writer per round.
    let rounds = per.div_ceil(1000);
    for round in 0..rounds {
        let mut lines = Vec::with_capacity(streams * 1100);
        for writer in 0..streams {
            for task in (round * 190)..((round + 1) * 190) {
                task_reports(0, writer, task as u64, &mut lines);
            }
        }
        let batch = parse_all(lines)?;
        done += batch.len();
        for chunk in batch.chunks(8192) {
            ledger.submit_batch(chunk.to_vec()).await?;
        }
        if round % 10 == 0 {
            eprint!("\r{done} reports, {} events", store.head_position());
        }
    }
    eprintln!();
    println!(
        "populated {} with {done} reports → {} events in {:.1}s",
        data_dir.display(),
        store.head_position(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn events_config(data_dir: &std::path::Path) -> SledConfig {
    let mut config = SledConfig::new(data_dir.join("events"));
    if let Some(mib) = std::env::var("BENCH_EVENTS_CACHE_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        config.cache_capacity_bytes = mib * 1024 * 1024;
    }
    config
}

async fn legacy_export(data_dir: PathBuf, out: PathBuf) -> anyhow::Result<()> {
    use taskledger_projections::{catch_up, CatchUpOptions, Kv, Projector, RedbKv};
    let store: SharedStore = Arc::new(SledStore::open(events_config(&data_dir))?);
    let kv: Arc<dyn Kv> = Arc::new(RedbKv::open(&data_dir.join("models"), MODELS_CACHE_BYTES)?);
    catch_up(
        store,
        &mut Projector::new(kv.clone()),
        &CatchUpOptions::default(),
        &|_, _| {},
    )
    .await?;
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
    let (mut documents, mut changed) = (0u64, 0u64);
    let mut failure = None;
    taskledger_projections::kv::for_each_task(kv.as_ref(), &mut |task_id, record| {
        for mut doc in record.legacy_documents(&task_id) {
            documents += 1;
            if documents.is_multiple_of(1000) {
                doc.status = taskledger_domain::ExecutionStatus::Processing;
                changed += 1;
            }
            let mut oid = [0u8; 12];
            oid[4..].copy_from_slice(&documents.to_be_bytes());
            let line = taskledger_replay::simulate::tasktracker_line(&doc, oid);
            if let Err(error) = writeln!(file, "{line}") {
                failure = Some(error);
            }
        }
    })?;
    if let Some(error) = failure {
        return Err(error.into());
    }
    file.flush()?;
    println!(
        "{documents} legacy documents ({changed} with a changed status) → {}",
        out.display()
    );
    Ok(())
}

/// The HTTP service over a data directory (events/ and models/), in this process on loopback,
/// with its live projection follower: what `taskledger serve` runs.
pub(crate) struct Service {
    pub base: String,
    pub ledger: Arc<Ledger>,
    pub store: Arc<SledStore>,
    pub models: Arc<dyn taskledger_projections::Kv>,
    projected: tokio::sync::watch::Receiver<u64>,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Service {
    /// Waits until the models have applied every event the store holds now.
    pub async fn caught_up(&self) -> anyhow::Result<()> {
        let head = self.store.head_position();
        let mut projected = self.projected.clone();
        while *projected.borrow_and_update() < head {
            projected
                .changed()
                .await
                .map_err(|_| anyhow::anyhow!("the projection follower stopped"))?;
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.server.abort();
    }
}

pub(crate) async fn start_service(dir: &std::path::Path) -> anyhow::Result<Service> {
    use taskledger_projections::{Kv, RedbKv};
    use taskledger_serve::{app, follow, AppState, Limits};
    let store = Arc::new(SledStore::open(SledConfig::new(dir.join("events")))?);
    let models: Arc<dyn Kv> = Arc::new(RedbKv::open(&dir.join("models"), MODELS_CACHE_BYTES)?);
    let ledger = Arc::new(Ledger::new(
        store.clone() as SharedStore,
        Policy::default(),
        Arc::new(SystemClock),
        LedgerConfig::default(),
    ));
    let (projected_sender, projected) = tokio::sync::watch::channel(0u64);
    let (stop, stop_receiver) = tokio::sync::watch::channel(false);
    tokio::spawn(follow(
        store.clone() as SharedStore,
        models.clone(),
        projected_sender,
        stop_receiver,
        Default::default(),
    ));
    let state = Arc::new(AppState {
        ledger: ledger.clone(),
        store: store.clone() as SharedStore,
        models: models.clone(),
        tokens: Default::default(),
        limits: Limits::default(),
        projected: projected.clone(),
        metrics: None,
        commit_stats: Some(store.stats_handle()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app(state)).await });
    Ok(Service {
        base: format!("http://{address}"),
        ledger,
        store,
        models,
        projected,
        stop,
        server,
    })
}

async fn http_load(workers: usize, seconds: u64, url: Option<String>) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let mut _service = None;
    let base = match url {
        Some(url) => url,
        None => {
            let service = start_service(temp.path()).await?;
            let base = service.base.clone();
            _service = Some(service);
            base
        }
    };
    let token = std::env::var("TASKLEDGER_TOKEN").ok();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut handles = Vec::new();
    for worker in 0..workers {
        let (base, token) = (base.clone(), token.clone());
        handles.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            let mut task = 0u64;
            'outer: while Instant::now() < deadline {
                let mut lines = Vec::new();
                task_reports(1, worker, task, &mut lines);
                task += 1;
                for line in lines {
                    let sent = Instant::now();
                    let mut request = client
                        .post(format!("{base}/v1/reports"))
                        .header("content-type", "application/x-ndjson")
                        .body(line);
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    match request.send().await {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.bytes().await;
                            histogram.record(sent.elapsed().as_micros().max(1) as u64)?;
                        }
                        _ => errors += 1,
                    }
                    if Instant::now() >= deadline {
                        break 'outer;
                    }
                }
            }
            anyhow::Ok((histogram, errors))
        }));
    }
    let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for handle in handles {
        let (h, e) = handle.await??;
        histogram.add(h)?;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "HTTP {workers} workers, {seconds}s, one report per request, durable 2xx: {} reports, {:.0} reports/s, p50 {:.2}ms p99 {:.2}ms p99.9 {:.2}ms max {:.2}ms, {errors} errors",
        histogram.len(),
        histogram.len() as f64 / elapsed,
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.value_at_quantile(0.999) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0,
    );
    Ok(())
}

/// The models' redb cache in these benchmarks: the binary's own setting.
const MODELS_CACHE_BYTES: u64 = 128 * 1024 * 1024;

fn models_open(data_dir: PathBuf, runs: usize, drop_caches: bool) -> anyhow::Result<()> {
    use taskledger_projections::RedbKv;
    let dir = data_dir.join("models");
    let file = dir.join(taskledger_projections::kv::MODELS_FILE);
    let size = std::fs::metadata(&file)
        .map_err(|e| anyhow::anyhow!("{} holds no read models: {e}", dir.display()))?
        .len();
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..runs.max(1) {
        for (index, verified) in [false, true].into_iter().enumerate() {
            if drop_caches {
                std::fs::write("/proc/sys/vm/drop_caches", "3")
                    .map_err(|e| anyhow::anyhow!("dropping the page cache (needs root): {e}"))?;
            }
            let started = Instant::now();
            // Kept open until timed: closing is not part of the open.
            let _models = if verified {
                RedbKv::open_verified(&dir, MODELS_CACHE_BYTES)?
            } else {
                RedbKv::open(&dir, MODELS_CACHE_BYTES)?
            };
            times[index].push(started.elapsed().as_secs_f64());
        }
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (plain, verified) = (median(&mut times[0]), median(&mut times[1]));
    println!(
        "models.redb {:.1} MiB, {} page cache, median of {} opens: plain {:.3} s, with the integrity check {:.3} s ({:.0} MiB/s checked)",
        size as f64 / 1048576.0,
        if drop_caches { "cold" } else { "warm" },
        runs.max(1),
        plain,
        verified,
        size as f64 / 1048576.0 / (verified - plain).max(1e-6)
    );
    Ok(())
}

fn models_memory(data_dir: PathBuf, queries: usize) -> anyhow::Result<()> {
    use taskledger_projections::{query, Kv, RedbKv};
    let baseline = rss_bytes();
    let kv = RedbKv::open(&data_dir.join("bench-models"), MODELS_CACHE_BYTES)?;
    let opened = rss_bytes();
    // Task ids spread over the whole key space (every Nth key), then queried in random order.
    let mut tasks = 0u64;
    kv.scan(b"T", b"T", &mut |_, _| {
        tasks += 1;
        true
    })?;
    let step = (tasks / queries.max(1) as u64).max(1);
    let mut task_ids = Vec::with_capacity(queries);
    let mut seen = 0u64;
    kv.scan(b"T", b"T", &mut |key, _| {
        seen += 1;
        if seen.is_multiple_of(step) {
            task_ids.push(String::from_utf8_lossy(&key[1..]).into_owned());
        }
        true
    })?;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..task_ids.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        task_ids.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task_id in &task_ids {
        let task_id = taskledger_domain::TaskId::parse(task_id).map_err(anyhow::Error::msg)?;
        let sent = Instant::now();
        let record =
            query::stored_task(&kv, &task_id)?.ok_or_else(|| anyhow::anyhow!("missing"))?;
        std::hint::black_box(serde_json::to_vec(&record.chain_view(&task_id))?);
        histogram.record(sent.elapsed().as_nanos().max(1) as u64)?;
    }
    let after = rss_bytes();
    println!(
        "models of {tasks} tasks ({:.0} MiB on disk), fresh process: RSS {:.0} MiB at start, {:.0} MiB after opening, {:.0} MiB after a full scan and {} random chain queries (p50 {:.1}µs p99 {:.1}µs); resident memory beyond the start: {:.0} bytes per task (models' redb cache capacity {} MiB)",
        kv.size_on_disk() as f64 / 1048576.0,
        baseline as f64 / 1048576.0,
        opened as f64 / 1048576.0,
        after as f64 / 1048576.0,
        histogram.len(),
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        after.saturating_sub(baseline) as f64 / tasks.max(1) as f64,
        MODELS_CACHE_BYTES / 1048576,
    );
    Ok(())
}

async fn bench_read(data_dir: PathBuf, chunk_events: usize) -> anyhow::Result<()> {
    let store: SharedStore = Arc::new(SledStore::open(events_config(&data_dir))?);
    let rss_before = rss_bytes();
    let started = Instant::now();
    let (mut position, mut read_seconds) = (0u64, 0.0);
    while position < store.head_position() {
        let read_started = Instant::now();
        let records = store.read_all(position, chunk_events).await?;
        read_seconds += read_started.elapsed().as_secs_f64();
        position += records.len() as u64;
        for record in records {
            std::hint::black_box(taskledger_projections::runner::decode(record)?);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "read+decode only: {position} events in {seconds:.2}s = {:.0} events/s on one core (reading {:.2}s, decoding {:.2}s); RSS {:.0} → {:.0} MiB",
        position as f64 / seconds,
        read_seconds,
        seconds - read_seconds,
        rss_before as f64 / 1048576.0,
        rss_bytes() as f64 / 1048576.0
    );
    Ok(())
}

async fn bench_rebuild(
    data_dir: PathBuf,
    chunk_events: usize,
    queries: usize,
) -> anyhow::Result<()> {
    use taskledger_projections::{catch_up, query, CatchUpOptions, Kv, Projector, RedbKv};
    let store: SharedStore = Arc::new(SledStore::open(events_config(&data_dir))?);
    let events = store.head_position();
    let models_dir = data_dir.join("bench-models");
    if models_dir.exists() {
        std::fs::remove_dir_all(&models_dir)?;
    }
    let cache_bytes = MODELS_CACHE_BYTES;
    let kv = Arc::new(RedbKv::open(&models_dir, cache_bytes)?);
    let rss_before = rss_bytes();
    let started = Instant::now();
    let mut projector = Projector::new(kv.clone() as Arc<dyn Kv>);
    let options = CatchUpOptions {
        chunk_events,
        ..CatchUpOptions::default()
    };
    catch_up(store.clone(), &mut projector, &options, &|done, total| {
        if done % (chunk_events as u64 * 8) < chunk_events as u64 {
            eprint!("\r{done}/{total} events");
        }
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!();
    let rss_after = rss_bytes();
    let (fold, write) = (
        projector.fold_nanos as f64 / 1e9,
        projector.write_nanos as f64 / 1e9,
    );
    let mut tasks = 0u64;
    let mut task_ids = Vec::new();
    kv.scan(b"T", b"T", &mut |key, _| {
        tasks += 1;
        if tasks.is_multiple_of(37) && task_ids.len() < queries {
            task_ids.push(String::from_utf8_lossy(&key[1..]).into_owned());
        }
        true
    })?;
    println!(
        "rebuild: {events} events, {tasks} tasks in {seconds:.2}s = {:.0} events/s (chunk {chunk_events} events, 2 cores); applier thread: folding {fold:.2}s, writing models {write:.2}s",
        events as f64 / seconds
    );
    println!(
        "memory: RSS {:.0} MiB before the rebuild, {:.0} MiB after (models' redb cache capacity {} MiB, event store cache 256 MiB); growth {:.0} bytes per task; models on disk {:.0} MiB",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        cache_bytes / 1048576,
        rss_after.saturating_sub(rss_before) as f64 / tasks.max(1) as f64,
        kv.size_on_disk() as f64 / 1048576.0
    );
    for (name, chain) in [("task", false), ("chain", true)] {
        let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for task_id in &task_ids {
            let task_id = taskledger_domain::TaskId::parse(task_id).map_err(anyhow::Error::msg)?;
            let sent = Instant::now();
            let record = query::stored_task(kv.as_ref(), &task_id)?
                .ok_or_else(|| anyhow::anyhow!("missing {task_id}"))?;
            let json = if chain {
                serde_json::to_vec(&record.chain_view(&task_id))?
            } else {
                serde_json::to_vec(&record.status_view(&task_id))?
            };
            std::hint::black_box(json);
            histogram.record(sent.elapsed().as_nanos().max(1) as u64)?;
        }
        println!(
            "{name} query over stored models ({tasks} tasks, {} samples, in-process, JSON included): p50 {:.1}µs p99 {:.1}µs max {:.1}µs",
            histogram.len(),
            histogram.value_at_quantile(0.5) as f64 / 1000.0,
            histogram.value_at_quantile(0.99) as f64 / 1000.0,
            histogram.max() as f64 / 1000.0
        );
    }
    Ok(())
}

/// The `taskledger` binary built beside this one (same target directory and profile).
pub(crate) fn taskledger_bin() -> anyhow::Result<PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("taskledger");
    if !bin.exists() {
        anyhow::bail!(
            "{} is missing: build it (cargo build --release --bin taskledger)",
            bin.display()
        );
    }
    Ok(bin)
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    cli.command = match cli.command {
        // The simulation runs a runtime of its own per seed, outside any other.
        Command::Faults(args) => return faults::run(args),
        command => command,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Ingest { writers, reports, dir } => {
                println!(
                    "machine: {} cores; each run: a fresh sled store, every report acknowledged only after fsync",
                    std::thread::available_parallelism().map_or(0, |n| n.get())
                );
                for count in writers {
                    let temp = match &dir {
                        Some(dir) => tempfile::tempdir_in(dir)?,
                        None => tempfile::tempdir()?,
                    };
                    bench_ingest(count.max(1), reports, temp.path()).await?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(())
            }
            Command::Populate { data_dir, reports, streams } => populate(data_dir, reports, streams).await,
            Command::Rebuild { data_dir, chunk_events, queries, read_only } => {
                if read_only {
                    bench_read(data_dir, chunk_events).await
                } else {
                    bench_rebuild(data_dir, chunk_events, queries).await
                }
            }
            Command::ModelsMemory { data_dir, queries } => models_memory(data_dir, queries),
            Command::ModelsOpen { data_dir, runs, drop_caches } => models_open(data_dir, runs, drop_caches),
            Command::HttpLoad { workers, seconds, url } => http_load(workers, seconds, url).await,
            Command::LegacyExport { data_dir, out } => legacy_export(data_dir, out).await,
            Command::Workload { out, reports, streams } => {
                let per = reports.div_ceil(streams.max(1));
                let all: Vec<Vec<String>> = (0..streams.max(1)).map(|w| workload(0, w, per)).collect();
                let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
                let mut written = 0;
                'outer: for index in 0..per {
                    for lines in &all {
                        if written == reports {
                            break 'outer;
                        }
                        writeln!(file, "{}", lines[index])?;
                        written += 1;
                    }
                }
                file.flush()?;
                println!("{written} reports → {}", out.display());
                Ok(())
            }
            Command::Peers(args) => peers::run(args).await,
            Command::Failover(args) => failover::run(args).await,
            Command::ModelsFaults(args) => faults::run_models(args).await,
            Command::Race { concurrent, rounds } => peers::race_only(concurrent, rounds).await,
            // Run before the runtime is built: each seed runs a runtime of its own.
            Command::Faults(_) => unreachable!("handled before the runtime starts"),
            Command::AckWriter { data_dir, writers, reports, run, wal_checkpoint_bytes } => {
                ack_writer(data_dir, writers, reports, run, wal_checkpoint_bytes).await
            }
        }
    })
}
