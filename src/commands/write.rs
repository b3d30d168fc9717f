//! The commands that append: `ingest`, `archive`, `retry` (all recorded under the CLI's principal, `local:<OS user>`).

use super::*;

pub(super) async fn ingest(
    data_dir: &Path,
    config: &config::Config,
    args: IngestArgs,
) -> Result<u8, Failure> {
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

pub(super) fn operator() -> String {
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
pub(super) async fn submit_operator_report(
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

pub(super) async fn archive(
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

pub(super) async fn retry(
    data_dir: &Path,
    config: &config::Config,
    args: RetryArgs,
) -> Result<u8, Failure> {
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
