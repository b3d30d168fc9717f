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

mod loops;
mod pg_backend;
mod queries;
mod race;
mod systems;
mod tracker;
mod workload;

use loops::*;
use pg_backend::*;
use queries::*;
pub(crate) use race::race_only;
use race::*;
use systems::*;
use tracker::*;
use workload::*;

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
