//! Scenario 4: taskledger on the PostgreSQL backend, on the same server as the tracker.

use super::*;

/// A `postgres://` URL of database `dbname` on the server `conninfo` (key=value) names, for
/// `--store`.
pub(super) fn store_url(conninfo: &str, dbname: &str) -> String {
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

pub(super) async fn pg_backend_section(
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
