//! Validation and its helpers: `validate`, `whatif`, `simulate`, `demo` (the evidence a validation run assembles: the ledger replayed to the export's instant, the mismatches, the invariants).

use super::*;

pub(super) fn simulate(args: SimulateArgs) -> Result<u8, Failure> {
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
pub(super) async fn whatif(
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
pub(super) async fn run_validation(
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

pub(super) async fn validate(
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

pub(super) async fn demo(config: &config::Config, args: DemoArgs) -> Result<u8, Failure> {
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
