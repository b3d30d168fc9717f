//! One function per command: open what it needs, call the library, print.

use crate::cli::*;
use crate::{config, render, Failure};
use anyhow::{anyhow, Context};
use std::io::{BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use taskledger_domain::{operator_report, Op, Outcome, Report, TaskId, Timestamp};
use taskledger_ingest::{ingest_ndjson, now, IngestError, IngestOptions};
use taskledger_projections::query::{self, DlqQuery};
use taskledger_projections::{catch_up, CatchUpOptions, Kv, MemoryKv, Projector};
use taskledger_store::SharedStore;

pub async fn run(cli: Cli) -> Result<u8, Failure> {
    let mut config = config::load(cli.config.as_deref())?;
    if let Some(url) = cli.store {
        config.store.url = Some(url);
    }
    let data_dir = cli.data_dir.as_path();
    match cli.command {
        Command::Ingest(args) => ingest(data_dir, &config, args).await,
        Command::Task(args) => task(data_dir, &config, args, View::Status).await,
        Command::Chain(args) => task(data_dir, &config, args, View::Chain).await,
        Command::History(args) => task(data_dir, &config, args, View::History).await,
        Command::Dlq(args) => dlq(data_dir, &config, args).await,
        Command::Stats(args) => stats(data_dir, &config, args).await,
        Command::Stuck(args) => stuck(data_dir, &config, args).await,
        Command::Due(args) => due(data_dir, &config, args).await,
        Command::Archive(args) => archive(data_dir, &config, args).await,
        Command::Retry(args) => retry(data_dir, &config, args).await,
        Command::Rebuild(args) => rebuild(data_dir, &config, args).await,
        Command::Export(args) => export(data_dir, &config, args).await,
        Command::Import(args) => import(data_dir, &config, args).await,
        Command::Digest(args) => digest(data_dir, &config, args).await,
        Command::Verify(args) => verify(data_dir, &config, args).await,
        Command::Validate(args) => validate(data_dir, &config, args).await,
        Command::Simulate(args) => simulate(args),
        Command::Whatif(args) => whatif(data_dir, &config, cli.config.as_deref(), args).await,
        Command::Retain(args) => retain(data_dir, &config, args).await,
        Command::Demo(args) => demo(&config, args).await,
        Command::Serve(args) => serve(data_dir, &config, args).await,
    }
}

fn instant(flag: &str, text: &str) -> Result<Timestamp, Failure> {
    Timestamp::parse(text).ok_or_else(|| {
        anyhow!("{flag}: {text:?} is not an RFC 3339 instant such as 2026-01-21T10:00:00Z").into()
    })
}

fn optional_instant(flag: &str, text: &Option<String>) -> Result<Option<Timestamp>, Failure> {
    text.as_deref().map(|text| instant(flag, text)).transpose()
}

/// `30m`, `2h`, `90s`, `1500ms`, `1d` → milliseconds.
fn duration_ms(flag: &str, text: &str) -> Result<i64, Failure> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(n) if scale > 0 => Ok(n.saturating_mul(scale)),
        _ => {
            Err(anyhow!("{flag}: {text:?} is not a duration such as 30m, 2h, 90s or 1500ms").into())
        }
    }
}

fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// The live models, brought up to the ledger's head first.
async fn live_models(
    store: SharedStore,
    data_dir: &Path,
    config: &config::Config,
) -> Result<Arc<dyn Kv>, Failure> {
    let kv: Arc<dyn Kv> = config::open_models(data_dir, config)?;
    let mut projector = Projector::new(kv.clone());
    let bar = progress_bar(
        0,
        "{spinner} updating read models [{bar:30}] {pos}/{len} events {per_sec} eta {eta}",
    );
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    catch_up(
        store,
        &mut projector,
        &config::catch_up_options(),
        &progress,
    )
    .await?;
    bar.finish_and_clear();
    Ok(kv)
}

/// The models to query: live, or replayed as of an instant into memory.
async fn models(
    data_dir: &Path,
    config: &config::Config,
    as_of: Option<Timestamp>,
) -> Result<Arc<dyn Kv>, Failure> {
    let store: SharedStore = config::open_store(data_dir, config).await?;
    match as_of {
        None => live_models(store, data_dir, config).await,
        Some(as_of) => {
            let kv: Arc<dyn Kv> = Arc::new(MemoryKv::new());
            let mut projector = Projector::new(kv.clone());
            let options = CatchUpOptions {
                as_of: Some(as_of),
                ..config::catch_up_options()
            };
            catch_up(store, &mut projector, &options, &|_, _| {}).await?;
            Ok(kv)
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

async fn ingest(data_dir: &Path, config: &config::Config, args: IngestArgs) -> Result<u8, Failure> {
    let store = config::open_store(data_dir, config).await?;
    // Standard input is spooled to a file first: strict mode reads its input twice (validate,
    // then append), and a pipe can be read only once.
    let spool;
    let (path, source_name) = if args.file.as_os_str() == "-" {
        let mut file =
            tempfile::NamedTempFile::new_in(data_dir).context("spooling standard input")?;
        std::io::copy(&mut std::io::stdin().lock(), &mut file).context("reading standard input")?;
        file.flush()?;
        spool = file;
        (spool.path().to_path_buf(), "standard input".to_owned())
    } else {
        (args.file.clone(), args.file.display().to_string())
    };
    let size = std::fs::metadata(&path)
        .with_context(|| format!("reading {source_name}"))?
        .len();
    let bar = progress_bar(
        size,
        "{spinner} ingesting [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    );
    let ledger = config::ledger(store.clone() as SharedStore, config);
    let options = IngestOptions {
        skip_invalid: args.skip_invalid,
        batch_reports_max: args.batch.max(1),
        principal: Some(local_principal()),
    };
    let open = || std::fs::File::open(&path).map(|file| BufReader::with_capacity(1 << 20, file));
    let progress = |bytes: u64| bar.set_position(bytes);
    let result = ingest_ndjson(&ledger, open, &source_name, &options, &progress).await;
    bar.finish_and_clear();
    let (summary, bad_lines) = match result {
        Ok(done) => done,
        Err(IngestError::Invalid(bad_lines)) => {
            for bad in &bad_lines {
                eprintln!("{source_name}:{}: {}", bad.line, bad.error);
            }
            return Err(Failure {
                code: 2,
                error: anyhow!(
                    "{} malformed line(s) in {source_name}; nothing was appended (use --skip-invalid to append the valid lines)",
                    bad_lines.len()
                ),
            });
        }
        Err(other) => return Err(other.into()),
    };
    for bad in &bad_lines {
        eprintln!("{source_name}:{}: skipped: {}", bad.line, bad.error);
    }
    if let Some(rejects) = &args.rejects {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(rejects)
                .with_context(|| format!("creating {}", rejects.display()))?,
        );
        for bad in &bad_lines {
            writeln!(out, "{}", bad.text)?;
        }
        out.flush()?;
    }
    // Leave the read models current, so the next query answers at once.
    live_models(store as SharedStore, data_dir, config).await?;
    if args.json {
        print_json(&summary)?;
    } else {
        print!("{}", render::ingest_summary(&summary));
    }
    Ok(0)
}

enum View {
    Status,
    Chain,
    History,
}

async fn task(
    data_dir: &Path,
    config: &config::Config,
    args: TaskArgs,
    view: View,
) -> Result<u8, Failure> {
    let task_id = TaskId::parse(&args.task_id).map_err(|problem| anyhow!("taskId: {problem}"))?;
    let as_of = optional_instant("--as-of", &args.as_of)?;
    let store: SharedStore = config::open_store(data_dir, config).await?;
    let not_found = || Failure {
        code: 1,
        error: anyhow!(
            "no task {task_id}{}",
            as_of.map(|t| format!(" as of {t}")).unwrap_or_default()
        ),
    };
    if let View::History = view {
        let entries = taskledger_projections::history(store.as_ref(), &task_id, as_of).await?;
        if entries.is_empty() {
            return Err(not_found());
        }
        if args.json {
            print_json(&entries)?;
        } else {
            print!("{}", render::history(&task_id, &entries));
        }
        return Ok(0);
    }
    let record = match as_of {
        // As of an instant: fold the task's own stream up to it.
        Some(_) => taskledger_projections::load_task(store.as_ref(), &task_id, as_of).await?,
        None => {
            let kv = live_models(store, data_dir, config).await?;
            query::stored_task(kv.as_ref(), &task_id)?
        }
    };
    let record = record.ok_or_else(not_found)?;
    match (view, args.json) {
        (View::Status, true) => print_json(&record.status_view(&task_id))?,
        (View::Status, false) => print!("{}", render::task(&record.status_view(&task_id))),
        (_, true) => print_json(&record.chain_view(&task_id))?,
        (_, false) => print!("{}", render::chain(&record.chain_view(&task_id))),
    }
    Ok(0)
}

async fn dlq(data_dir: &Path, config: &config::Config, args: DlqArgs) -> Result<u8, Failure> {
    let query = DlqQuery {
        queue: args.queue,
        category: args.category,
        since: optional_instant("--since", &args.since)?,
        until: optional_instant("--until", &args.until)?,
        archived: args.archived,
        limit: args.limit,
        cursor: args.cursor,
    };
    let as_of = optional_instant("--as-of", &args.read.as_of)?;
    let kv = models(data_dir, config, as_of).await?;
    let page = query::dlq_page(kv.as_ref(), &query)?;
    if args.read.json {
        print_json(&page)?;
    } else {
        print!("{}", render::dlq(&page, query.archived));
    }
    Ok(0)
}

async fn stats(data_dir: &Path, config: &config::Config, args: StatsArgs) -> Result<u8, Failure> {
    let as_of = optional_instant("--as-of", &args.read.as_of)?;
    let kv = models(data_dir, config, as_of).await?;
    let stats = query::queue_stats(kv.as_ref(), args.queue.as_deref())?;
    if args.read.json {
        print_json(&stats)?;
    } else {
        print!("{}", render::stats(&stats));
    }
    Ok(0)
}

async fn stuck(data_dir: &Path, config: &config::Config, args: StuckArgs) -> Result<u8, Failure> {
    let as_of = optional_instant("--as-of", &args.read.as_of)?;
    let at = optional_instant("--at", &args.at)?
        .or(as_of)
        .unwrap_or_else(now);
    let older_than = duration_ms("--older-than", &args.older_than)?;
    let kv = models(data_dir, config, as_of).await?;
    let items = query::stuck(kv.as_ref(), at, older_than, args.queue.as_deref())?;
    if args.read.json {
        print_json(&items)?;
    } else {
        print!("{}", render::stuck(&items, at));
    }
    Ok(0)
}

async fn due(data_dir: &Path, config: &config::Config, args: DueArgs) -> Result<u8, Failure> {
    let as_of = optional_instant("--as-of", &args.read.as_of)?;
    let at = optional_instant("--at", &args.at)?
        .or(as_of)
        .unwrap_or_else(now);
    let kv = models(data_dir, config, as_of).await?;
    let items = query::due(kv.as_ref(), at, args.queue.as_deref())?;
    if args.read.json {
        print_json(&items)?;
    } else {
        print!("{}", render::due(&items, at));
    }
    Ok(0)
}

fn operator() -> String {
    std::env::var("USER").unwrap_or_else(|_| "operator".into())
}

/// The principal of every event the CLI appends (SPEC section 3): `local:` and the OS user the
/// process runs as (from the user database, not the environment).
pub(crate) fn local_principal() -> String {
    let user = whoami::username();
    let user: String = user.chars().filter(|c| !c.is_control()).take(256).collect();
    format!("local:{user}")
}

/// Submits an operator's report; exit 1 when the rules reject it.
async fn submit_operator_report(
    data_dir: &Path,
    config: &config::Config,
    report: serde_json::Value,
    json: bool,
) -> Result<u8, Failure> {
    let mut report = Report::from_value(report)?;
    report.principal = Some(local_principal());
    let store = config::open_store(data_dir, config).await?;
    let ledger = config::ledger(store.clone() as SharedStore, config);
    let submitted = ledger.submit(report.clone()).await?;
    live_models(store as SharedStore, data_dir, config).await?;
    let output = serde_json::json!({
        "taskId": report.task_id,
        "executionId": report.execution_id(),
        "op": report.op(),
        "outcome": submitted.outcome,
        "duplicate": submitted.duplicate,
        "eventIds": submitted.event_ids,
    });
    if json {
        print_json(&output)?;
    } else {
        match &submitted.outcome {
            Outcome::Accepted => println!(
                "{} {} of {}: accepted{}",
                report.op().as_str(),
                report.execution_id(),
                report.task_id,
                if submitted.duplicate {
                    " (already recorded)"
                } else {
                    ""
                }
            ),
            Outcome::Rejected(reason) => println!(
                "{} {} of {}: rejected: {}",
                report.op().as_str(),
                report.execution_id(),
                report.task_id,
                serde_json::to_string(reason)?
            ),
        }
    }
    Ok(match submitted.outcome {
        Outcome::Accepted => 0,
        Outcome::Rejected(_) => 1,
    })
}

async fn archive(
    data_dir: &Path,
    config: &config::Config,
    args: ArchiveArgs,
) -> Result<u8, Failure> {
    let at = optional_instant("--at", &args.at)?.unwrap_or_else(now);
    let by = args.by.unwrap_or_else(operator);
    let report = operator_report(
        Op::Archive,
        &args.task_id,
        &args.execution_id,
        at,
        args.reason.as_deref(),
        Some(&by),
    );
    submit_operator_report(data_dir, config, report, args.json).await
}

async fn retry(data_dir: &Path, config: &config::Config, args: RetryArgs) -> Result<u8, Failure> {
    let at = optional_instant("--at", &args.at)?.unwrap_or_else(now);
    let execution_id = args
        .execution_id
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let reason = args.reason.unwrap_or_else(|| "manual retry".into());
    let by = args.by.unwrap_or_else(operator);
    let report = operator_report(
        Op::Retry,
        &args.task_id,
        &execution_id,
        at,
        Some(&reason),
        Some(&by),
    );
    submit_operator_report(data_dir, config, report, args.json).await
}

async fn rebuild(
    data_dir: &Path,
    config: &config::Config,
    args: RebuildArgs,
) -> Result<u8, Failure> {
    let store: SharedStore = config::open_store(data_dir, config).await?;
    let bar = progress_bar(
        0,
        "{spinner} replaying [{bar:30}] {pos}/{len} events {per_sec} eta {eta}",
    );
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let started = std::time::Instant::now();
    if !args.verify {
        let done = config::rebuild_models(data_dir, config, |kv| async move {
            let kv: Arc<dyn Kv> = kv;
            Ok(
                taskledger_replay::rebuild(store, kv, &config::catch_up_options(), &progress)
                    .await?,
            )
        })
        .await?;
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        let summary = serde_json::json!({
            "events": done.to, "seconds": seconds,
            "eventsPerSecond": done.to as f64 / seconds.max(1e-9),
        });
        if args.json {
            print_json(&summary)?;
        } else {
            println!(
                "rebuilt every read model from {} events in {seconds:.2}s",
                done.to
            );
        }
        return Ok(0);
    }
    let live: Arc<dyn Kv> = config::open_models(data_dir, config)?;
    let scratch_dir = tempfile::Builder::new()
        .prefix("verify-")
        .tempdir_in(data_dir)
        .context("creating the scratch store")?;
    let scratch: Arc<dyn Kv> = Arc::new(taskledger_projections::RedbKv::open(
        scratch_dir.path(),
        config.models.cache_capacity_bytes,
    )?);
    let verification = taskledger_replay::verify(store, live, scratch, &progress).await?;
    bar.finish_and_clear();
    if args.json {
        print_json(&verification)?;
    } else {
        print!("{}", render::verification(&verification));
    }
    if verification.differing.is_empty() {
        Ok(0)
    } else {
        Err(Failure {
            code: 1,
            error: anyhow!(
                "models differ from a rebuild: {}",
                verification.differing.join(", ")
            ),
        })
    }
}

async fn export(data_dir: &Path, config: &config::Config, args: ExportArgs) -> Result<u8, Failure> {
    let store: SharedStore = config::open_store(data_dir, config).await?;
    let bar = progress_bar(0, "{spinner} exporting [{bar:30}] {pos}/{len} events");
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let count = match &args.file {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            taskledger_replay::export(&store, &mut out, &progress).await?
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            taskledger_replay::export(&store, &mut out, &progress).await?
        }
    };
    bar.finish_and_clear();
    if args.file.is_some() {
        eprintln!("exported {count} events");
    }
    Ok(0)
}

async fn import(data_dir: &Path, config: &config::Config, args: ImportArgs) -> Result<u8, Failure> {
    let store: SharedStore = config::open_store(data_dir, config).await?;
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let bar = progress_bar(0, "{spinner} importing {pos} events {per_sec}");
    let result = taskledger_replay::import(&store, &mut input, &|n| bar.set_position(n)).await;
    bar.finish_and_clear();
    let summary = result.map_err(|error| match error {
        taskledger_replay::ReplayError::Input { .. }
        | taskledger_replay::ReplayError::Conflict { .. } => {
            anyhow!("{}: {error}", args.file.display())
        }
        other => other.into(),
    })?;
    live_models(store, data_dir, config).await?;
    if args.json {
        print_json(&summary)?;
    } else {
        println!(
            "imported {} events: {} appended, {} already present",
            summary.events, summary.appended, summary.already_present
        );
    }
    Ok(0)
}

/// `digest`: the read models follow the ledger and fold every event's hash into the running
/// digest, so the head's digest costs only the catch-up.
async fn digest(data_dir: &Path, config: &config::Config, args: DigestArgs) -> Result<u8, Failure> {
    let store: SharedStore = config::open_store(data_dir, config).await?;
    let kv = live_models(store, data_dir, config).await?;
    let (position, digest) = taskledger_projections::runner::read_ledger_digest(kv.as_ref())?;
    let _ = args.json; // one output: the JSON object an auditor keeps
    print_json(&taskledger_replay::LedgerDigest::new(position, &digest))?;
    Ok(0)
}

/// `verify`: every chain and the running digest recomputed, from the store or an export.
async fn verify(data_dir: &Path, config: &config::Config, args: VerifyArgs) -> Result<u8, Failure> {
    let claimed = args
        .digest
        .as_deref()
        .map(taskledger_replay::LedgerDigest::parse)
        .transpose()
        .map_err(|problem| anyhow!("--digest: {problem}"))?;
    let verification = match &args.export {
        Some(path) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut input = BufReader::with_capacity(1 << 20, file);
            let bar = progress_bar(0, "{spinner} verifying {pos} lines {per_sec}");
            let result = taskledger_replay::verify_export(&mut input, claimed.as_ref(), &|n| {
                bar.set_position(n)
            });
            bar.finish_and_clear();
            result.map_err(|error| match error {
                taskledger_replay::ReplayError::Input { .. } => {
                    anyhow!("{}: {error}", path.display())
                }
                other => other.into(),
            })?
        }
        None => {
            let store: SharedStore = config::open_store(data_dir, config).await?;
            let bar = progress_bar(
                0,
                "{spinner} verifying [{bar:30}] {pos}/{len} events {per_sec} eta {eta}",
            );
            let progress = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
            };
            let result = taskledger_replay::verify_store(&store, claimed.as_ref(), &progress).await;
            bar.finish_and_clear();
            result?
        }
    };
    if args.json {
        print_json(&verification)?;
    } else {
        print!("{}", render::chain_verification(&verification));
    }
    if verification.ok() {
        return Ok(0);
    }
    let reason = match (&verification.broken, &verification.digest) {
        (Some(broken), _) => format!("the hash chain breaks at {broken}"),
        (None, Some(check)) => match &check.found {
            Some(found) => format!(
                "the ledger at position {} has digest {found}, not {}: it does not extend the \
                 ledger that digest was taken of",
                check.position, check.expected
            ),
            None => format!(
                "the ledger holds {} events, fewer than the digest's position {}",
                verification.events, check.position
            ),
        },
        (None, None) => "verification failed".into(),
    };
    Err(Failure {
        code: 1,
        error: anyhow!(reason),
    })
}

fn simulate(args: SimulateArgs) -> Result<u8, Failure> {
    let simulation = taskledger_replay::simulate::simulate(args.tasks, args.seed)?;
    taskledger_replay::simulate::write(&simulation, &args.out)?;
    println!(
        "simulated {} tasks (seed {}) → {}: reports.ndjson ({} reports), legacy-tasktracker.json ({} documents), legacy-partnerlog.json ({} documents), mapping.toml, faults.json ({} faults)",
        args.tasks,
        args.seed,
        args.out.display(),
        simulation.reports.len(),
        simulation.legacy_tasktracker.len(),
        simulation.legacy_partnerlog.len(),
        simulation.faults.len()
    );
    Ok(0)
}

/// `whatif`: the recorded reports replayed under `--config`'s policy, compared per execution.
async fn whatif(
    data_dir: &Path,
    config: &config::Config,
    config_path: Option<&Path>,
    args: WhatifArgs,
) -> Result<u8, Failure> {
    use taskledger_replay::whatif::{html, what_if_store, WhatIfOptions};
    let Some(config_path) = config_path else {
        return Err(anyhow!(
            "whatif needs --config FILE: the configuration to replay the recorded reports under"
        )
        .into());
    };
    let options = WhatIfOptions {
        queue: args.queue.clone(),
        since: optional_instant("--since", &args.since)?,
    };
    let store = config::open_store(data_dir, config).await?;
    let bar = progress_bar(
        0,
        "{spinner} replaying [{bar:30}] {pos}/{len} events {per_sec} eta {eta}",
    );
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let started = std::time::Instant::now();
    let report = what_if_store(store, config.policy.clone(), options, &progress).await?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        events = report.events,
        seconds,
        events_per_second = report.events as f64 / seconds.max(1e-9),
        "what-if replayed"
    );
    let config_name = config_path.display().to_string();
    if let Some(path) = &args.html {
        std::fs::write(path, html::render(&report, &config_name))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", render::whatif(&report, &config_name));
        if let Some(path) = &args.html {
            println!("HTML report: {}", path.display());
        }
    }
    Ok(0)
}

/// Runs a validation and writes its reports; returns the report.
async fn run_validation(
    data_dir: &Path,
    config: &config::Config,
    args: &ValidateArgs,
) -> Result<taskledger_replay::validate::ValidationReport, Failure> {
    use taskledger_replay::legacy::{read_export, Mapping, KNOWN_FIELDS};
    use taskledger_replay::validate::{compare, latest_instant, ValidateOptions};
    let mapping = match &args.mapping {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(Mapping::parse(&text, &path.display().to_string())?)
        }
        None => None,
    };
    let mut options = ValidateOptions {
        time_tolerance_ms: duration_ms("--time-tolerance", &args.time_tolerance)?,
        ..ValidateOptions::default()
    };
    if !args.fields.is_empty() {
        options.fields = args.fields.clone();
    }
    options.fields.retain(|field| !args.ignore.contains(field));
    for field in options.fields.iter().chain(&args.ignore) {
        if !KNOWN_FIELDS.contains(&field.as_str()) {
            return Err(anyhow!(
                "--fields/--ignore: {field:?} is not a compared field (one of {})",
                KNOWN_FIELDS.join(", ")
            )
            .into());
        }
    }
    let source = args.legacy.display().to_string();
    let file = std::fs::File::open(&args.legacy).with_context(|| format!("opening {source}"))?;
    let bar = progress_bar(0, "{spinner} {msg}");
    bar.set_message(format!("reading {source}"));
    let phase = std::time::Instant::now();
    let legacy = read_export(
        &mut BufReader::with_capacity(1 << 20, file),
        &source,
        mapping.as_ref(),
        args.html.is_some(),
    )?;
    let as_of = match optional_instant("--as-of", &args.as_of)? {
        Some(t) => t,
        None => latest_instant(&legacy).unwrap_or_else(now),
    };
    tracing::info!(
        seconds = phase.elapsed().as_secs_f64(),
        documents = legacy.len(),
        "read the export"
    );
    let store: SharedStore = config::open_store(data_dir, config).await?;
    // Brings the live models to the ledger's head.
    let live = live_models(store.clone(), data_dir, config).await?;
    bar.set_message(format!("comparing {} documents", legacy.len()));
    let mut raw_by_task: std::collections::HashMap<String, Vec<serde_json::Value>> =
        std::collections::HashMap::new();
    if args.html.is_some() {
        for doc in &legacy {
            if let Some(task) = &doc.task_id {
                raw_by_task
                    .entry(task.clone())
                    .or_default()
                    .push(doc.raw.clone());
            }
        }
    }
    let phase = std::time::Instant::now();
    let report = compare(
        &store,
        live.as_ref(),
        legacy,
        mapping.as_ref(),
        &options,
        as_of,
    )
    .await?;
    tracing::info!(seconds = phase.elapsed().as_secs_f64(), "compared");
    bar.finish_and_clear();
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        let mut tasks: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for mismatch in &report.mismatches {
            if let Some(task) = &mismatch.task_id {
                if seen.insert(task.clone()) {
                    tasks.push(task.clone());
                }
            }
        }
        let mut evidence = Vec::new();
        for task in tasks
            .into_iter()
            .take(taskledger_replay::html::TASKS_DETAILED_MAX)
        {
            let chain = match TaskId::parse(&task) {
                Ok(task_id) => {
                    taskledger_projections::load_task(store.as_ref(), &task_id, Some(as_of))
                        .await?
                        .map(|record| record.chain_view(&task_id))
                }
                Err(_) => None,
            };
            let legacy = raw_by_task.remove(&task).unwrap_or_default();
            evidence.push(taskledger_replay::html::TaskEvidence {
                task_id: task,
                chain,
                legacy,
            });
        }
        let html = taskledger_replay::html::render(&report, &evidence);
        std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

async fn validate(
    data_dir: &Path,
    config: &config::Config,
    args: ValidateArgs,
) -> Result<u8, Failure> {
    let report = match run_validation(data_dir, config, &args).await {
        Ok(report) => report,
        Err(failure) => return Err(Failure { code: 2, ..failure }),
    };
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", render::validation(&report));
        if let Some(path) = &args.report {
            println!("JSON report: {}", path.display());
        }
        if let Some(path) = &args.html {
            println!("HTML report: {}", path.display());
        }
    }
    Ok(if report.consistency >= args.min_consistency {
        0
    } else {
        1
    })
}

async fn demo(config: &config::Config, args: DemoArgs) -> Result<u8, Failure> {
    let started = std::time::Instant::now();
    let dir = &args.dir;
    let marker = dir.join(".taskledger-demo");
    if dir.exists() {
        if !marker.exists()
            && std::fs::read_dir(dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(anyhow!(
                "{} exists and is not a taskledger demo directory; choose another --dir",
                dir.display()
            )
            .into());
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        &marker,
        "taskledger demo directory: `taskledger demo` empties it on every run\n",
    )?;
    let simulated = dir.join("simulated");
    let data_dir = dir.join("data");
    println!("1/4 simulating {} tasks of a partner-data pipeline (seed {}) with a faulty legacy tracker …", args.tasks, args.seed);
    let simulation = taskledger_replay::simulate::simulate(args.tasks, args.seed)?;
    taskledger_replay::simulate::write(&simulation, &simulated)?;
    println!(
        "    {} reports, {} legacy TaskTracker documents, {} faults injected ({})",
        simulation.reports.len(),
        simulation.legacy_tasktracker.len(),
        simulation.faults.len(),
        simulated.join("faults.json").display()
    );
    println!(
        "2/4 ingesting the reports into a fresh ledger ({}) …",
        data_dir.display()
    );
    std::fs::create_dir_all(&data_dir)?;
    let store = config::open_store(&data_dir, config).await?;
    let ledger = config::ledger(store.clone() as SharedStore, config);
    let reports = simulated.join("reports.ndjson");
    let open = || std::fs::File::open(&reports).map(|file| BufReader::with_capacity(1 << 20, file));
    let (summary, _) = ingest_ndjson(
        &ledger,
        open,
        "reports.ndjson",
        &IngestOptions {
            principal: Some(local_principal()),
            ..IngestOptions::default()
        },
        &|_| {},
    )
    .await?;
    let rejected: u64 = summary.rejected.values().sum();
    println!(
        "    {} accepted, {} rejected (recorded as events), {} events appended",
        summary.accepted, rejected, summary.events_appended
    );
    drop(ledger);
    drop(store);
    println!("3/4 building the read models …");
    let args_validate = ValidateArgs {
        legacy: simulated.join("legacy-tasktracker.json"),
        mapping: None,
        fields: Vec::new(),
        ignore: Vec::new(),
        time_tolerance: "1s".into(),
        as_of: None,
        min_consistency: 1.0,
        report: Some(dir.join("report.json")),
        html: Some(dir.join("report.html")),
        json: false,
    };
    println!("4/4 validating the ledger against the legacy TaskTracker export …\n");
    let report = run_validation(&data_dir, config, &args_validate).await?;
    print!("{}", render::validation(&report));
    // Score the run against the ground truth.
    let flagged: std::collections::BTreeSet<String> = report
        .mismatches
        .iter()
        .filter_map(|m| m.execution_id.clone())
        .collect();
    let injected: std::collections::BTreeSet<String> = simulation
        .faults
        .iter()
        .filter(|f| f.trackers.contains(&"taskTracker"))
        .map(|f| f.execution_id.clone())
        .collect();
    let found = flagged.intersection(&injected).count();
    println!(
        "\nInjected faults found: {found} of {} (recall {:.0}%); executions flagged that were not injected: {}.",
        injected.len(),
        100.0 * found as f64 / injected.len().max(1) as f64,
        flagged.difference(&injected).count()
    );
    println!("HTML report: {}", dir.join("report.html").display());
    println!("JSON report: {}", dir.join("report.json").display());
    println!(
        "Try: taskledger --data-dir {} dlq   |   stats   |   chain <taskId from the report>",
        data_dir.display()
    );
    println!("(demo took {:.1}s)", started.elapsed().as_secs_f64());
    Ok(0)
}

/// `--before`: an RFC 3339 instant, or an age (`30d`: that long before now).
fn cutoff(flag: &str, text: &str) -> Result<Timestamp, Failure> {
    if let Some(instant) = Timestamp::parse(text) {
        return Ok(instant);
    }
    duration_ms(flag, text)
        .map(|age| now().minus_millis(age))
        .map_err(|_| {
            anyhow!("{flag}: {text:?} is neither an RFC 3339 instant nor an age such as 30d or 12h")
                .into()
        })
}

/// A retention the store cannot do (a server backend) says so plainly.
fn retention_error(error: taskledger_replay::ReplayError) -> Failure {
    match error {
        taskledger_replay::ReplayError::Store(taskledger_store::StoreError::Unsupported(
            message,
        )) => anyhow!(message).into(),
        other => other.into(),
    }
}

/// `retain`: the models (caught up first) pick the streams whose every execution ended before
/// the cut-off, the store moves them into cold segments; then sled's files are compacted (this
/// command holds the data directory alone, which `serve` cannot).
async fn retain(data_dir: &Path, config: &config::Config, args: RetainArgs) -> Result<u8, Failure> {
    let before = cutoff("--before", &args.before)?;
    let embedded = config
        .store
        .url
        .as_deref()
        .map(str::trim)
        .is_none_or(str::is_empty);
    let sled = if embedded {
        Some(config::open_sled(data_dir, config)?)
    } else {
        None
    };
    let store: SharedStore = match &sled {
        Some(sled) => sled.clone(),
        None => config::open_store(data_dir, config).await?,
    };
    let kv = live_models(store.clone(), data_dir, config).await?;
    if args.dry_run {
        let (ended, tasks) = taskledger_projections::retention::ended_before(kv.as_ref(), before)?;
        if args.json {
            print_json(&serde_json::json!({
                "before": before, "tasks": tasks, "ended": ended.len(), "dryRun": true,
            }))?;
        } else {
            println!(
                "{} of {tasks} tasks ended before {before} (every execution completed, dlq or \
                 archived) and would move; nothing moved (--dry-run)",
                ended.len()
            );
        }
        return Ok(0);
    }
    let bar = progress_bar(
        0,
        "{spinner} moving to cold segments [{bar:30}] {pos}/{len} events {per_sec} eta {eta}",
    );
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let report = taskledger_replay::retain(store.as_ref(), kv, before, &progress).await;
    bar.finish_and_clear();
    let report = report.map_err(retention_error)?;
    store.close()?;
    drop(store);
    let mut compacted = None;
    if let Some(sled) = sled {
        if !args.no_compact && report.events > 0 {
            // The store must be closed (every handle dropped) before its files are rewritten.
            match Arc::try_unwrap(sled) {
                Ok(sled) => {
                    sled.close()?;
                    drop(sled);
                    let spinner = progress_bar(0, "{spinner} compacting the hot store {elapsed}");
                    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
                    let settings = config::sled_config(data_dir, config);
                    let done = tokio::task::spawn_blocking(move || {
                        taskledger_store_sled::SledStore::compact(settings)
                    })
                    .await
                    .context("compacting the hot store")?;
                    spinner.finish_and_clear();
                    compacted = Some(done.with_context(|| {
                        format!("compacting the hot store in {}", data_dir.display())
                    })?);
                }
                Err(_) => eprintln!(
                    "taskledger: the store is still in use, so its files were not compacted (the \
                     move is done; sled reuses the space)"
                ),
            }
        }
    }
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["hotBytesCompacted"] =
            compacted.map_or(serde_json::Value::Null, |c| c.bytes_after.into());
        print_json(&value)?;
    } else {
        println!(
            "moved {} streams ({} events) of the {} tasks that ended before {before} into {} cold \
             segment(s) of {} bytes; hot store {} bytes before, {} after{}",
            report.streams,
            report.events,
            report.ended,
            report.segments.len(),
            report.segment_bytes,
            report.hot_bytes_before,
            report.hot_bytes_after,
            compacted.map_or_else(String::new, |c| format!(", {} compacted", c.bytes_after)),
        );
    }
    Ok(0)
}

/// `[retention]` in `serve`: every `interval_ms`, the streams whose every execution ended more
/// than `age_ms` ago move into cold segments (the live models pick them). A failed run is logged
/// and tried again at the next interval; nothing of it was acknowledged to anyone.
async fn retention_loop(
    store: SharedStore,
    models: Arc<dyn Kv>,
    settings: config::RetentionSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let interval = std::time::Duration::from_millis(settings.interval_ms);
    let age_ms = i64::try_from(settings.age_ms).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let before = now().minus_millis(age_ms);
        match taskledger_replay::retain(store.as_ref(), models.clone(), before, &|_, _| {}).await {
            Ok(report) if report.events > 0 => {
                tracing::info!(streams = report.streams, events = report.events, %before, "retention");
                eprintln!(
                    "taskledger: retention moved {} streams ({} events) that ended before {before} into cold segments",
                    report.streams, report.events
                );
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, "retention failed; trying again at the next interval");
                eprintln!(
                    "taskledger: retention failed (trying again at the next interval): {error}"
                );
            }
        }
    }
}

async fn serve(data_dir: &Path, config: &config::Config, args: ServeArgs) -> Result<u8, Failure> {
    use taskledger_serve::{app, follow, AppState, FollowerCrashes, FollowerOptions};
    let listen = args.listen.unwrap_or_else(|| config.server.listen.clone());
    let tokens = config::tokens(&config.server)?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    if tokens.is_empty() && !address.ip().is_loopback() {
        return Err(anyhow!(
            "no bearer tokens are configured, so the service only binds loopback addresses, not {address}; configure [server] tokens or TASKLEDGER_TOKENS"
        )
        .into());
    }
    if tokens.is_empty() {
        tracing::warn!("no bearer tokens configured: every request is allowed (loopback only)");
        eprintln!(
            "taskledger: no bearer tokens configured: every request is allowed (loopback only)"
        );
    }
    let store = config::open_service_store(data_dir, config).await?;
    let models: Arc<dyn Kv> = config::open_models(data_dir, config)?;
    let ledger = Arc::new(config::ledger(store.clone() as SharedStore, config));
    let (projected_sender, projected) = tokio::sync::watch::channel(0u64);
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(follow(
        store.clone() as SharedStore,
        models.clone(),
        projected_sender,
        stop.clone(),
        FollowerOptions {
            crashes: FollowerCrashes::from_env(),
            ..FollowerOptions::default()
        },
    ));
    let retention = match &config.retention {
        Some(settings) if store.backend() == "sled" => Some(tokio::spawn(retention_loop(
            store.clone() as SharedStore,
            models.clone(),
            settings.clone(),
            stop.clone(),
        ))),
        Some(_) => {
            eprintln!(
                "taskledger: [retention] moves streams into the embedded sled store's cold segments; the {} store keeps every event itself, so nothing is moved",
                store.backend()
            );
            None
        }
        None => None,
    };
    let state = Arc::new(AppState {
        ledger,
        store: store.clone() as SharedStore,
        models,
        tokens: Arc::new(tokens),
        limits: config.server.limits(),
        projected,
        metrics: Some(
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
                ])
                .context("metrics buckets")?
                .install_recorder()
                .context("installing the metrics recorder")?,
        ),
        commit_stats: store.commit_stats(),
    });
    // Signal handlers are installed before the address is announced: a SIGTERM that arrives
    // right after it still shuts down gracefully.
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    println!("listening on {address}");
    std::io::stdout().flush()?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutting down: finishing in-flight requests");
    };
    // The accept loop with the connection, header size and header read time limits.
    taskledger_serve::serve(listener, app(state), shutdown)
        .await
        .context("serving")?;
    let _ = stop_sender.send(true);
    let _ = follower.await;
    if let Some(retention) = retention {
        let _ = retention.await;
    }
    // Every acknowledged report was flushed before its response; close flushes what is left.
    store.close()?;
    eprintln!("taskledger: stopped");
    Ok(0)
}
