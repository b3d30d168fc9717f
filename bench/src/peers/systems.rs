//! Systems under test.

use super::*;

#[derive(Clone)]
pub(super) enum Target {
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
    pub(super) async fn send(
        &self,
        step: &Step,
        pg: Option<&deadpool_postgres::Client>,
    ) -> anyhow::Result<bool> {
        self.send_text(step, step.json(), pg).await
    }

    /// [`Target::send`] of a step whose report text (`step.json()`) the producer already has:
    /// taskledger still parses and validates it inside the measured call; PostgreSQL takes the
    /// step's fields.
    pub(super) async fn send_text(
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
pub(super) async fn post_report(
    client: &reqwest::Client,
    base: &str,
    text: String,
) -> anyhow::Result<bool> {
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

pub(super) fn memchr_accepted(body: &[u8]) -> bool {
    body.windows(10).any(|w| w == b"\"accepted\"")
}

pub(super) fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Latency (recorded in nanoseconds) and throughput of one system in one scenario.
#[derive(Default, Clone)]
pub(super) struct Figures {
    pub(super) count: u64,
    pub(super) seconds: f64,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    pub(super) peak_memory: u64,
    pub(super) disk: u64,
    pub(super) errors: u64,
}

impl Figures {
    pub(super) fn from(h: &hdrhistogram::Histogram<u64>, seconds: f64) -> Figures {
        Figures {
            count: h.len(),
            seconds,
            p50_us: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
            ..Figures::default()
        }
    }
    pub(super) fn rate(&self) -> f64 {
        self.count as f64 / self.seconds.max(1e-9)
    }
}

/// Samples the summed proportional set size (PSS) of some processes until stopped; the peak.
pub(super) struct MemorySampler {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) peak: Arc<AtomicU64>,
    pub(super) handle: Option<std::thread::JoinHandle<()>>,
}

impl MemorySampler {
    pub(super) fn start(pids: Vec<u32>) -> MemorySampler {
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
    pub(super) fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

pub(super) fn pss_bytes(pid: u32) -> u64 {
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
pub(super) async fn pg_pids(pool: &deadpool_postgres::Pool) -> anyhow::Result<Vec<u32>> {
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

pub(super) fn dir_bytes(path: &Path) -> u64 {
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
pub(super) fn ledger_disk(dir: &Path) -> (u64, u64, u64) {
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

pub(super) async fn pg_table_bytes(pool: &deadpool_postgres::Pool) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    let bytes: i64 = client
        .query_one("SELECT pg_total_relation_size('task_tracker')", &[])
        .await?
        .get(0);
    Ok(bytes as u64)
}

pub(super) async fn pg_wal_lsn(pool: &deadpool_postgres::Pool) -> anyhow::Result<String> {
    let client = pool.get().await?;
    let lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    Ok(lsn)
}

pub(super) async fn pg_wal_since(pool: &deadpool_postgres::Pool, lsn: &str) -> anyhow::Result<u64> {
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

pub(super) fn open_ledger(dir: &Path) -> anyhow::Result<(Arc<SledStore>, Arc<Ledger>)> {
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
pub(super) fn memory_ledger() -> Arc<Ledger> {
    Arc::new(Ledger::new(
        Arc::new(taskledger_store::MemoryStore::new()) as SharedStore,
        Policy::default(),
        Arc::new(SystemClock),
        LedgerConfig::default(),
    ))
}
