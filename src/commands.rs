//! One function per command: open what it needs, call the library, print.

use crate::cli::{Cli, Command, IngestArgs, TaskArgs};
use crate::{config, render, Failure};
use anyhow::{anyhow, Context};
use std::io::{BufReader, Write};
use taskledger_domain::{TaskId, Timestamp};
use taskledger_ingest::{ingest_ndjson, IngestError, IngestOptions};
use taskledger_store::SharedStore;

pub async fn run(cli: Cli) -> Result<u8, Failure> {
    let config = config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Ingest(args) => ingest(&cli.data_dir, &config, args).await,
        Command::Task(args) => task(&cli.data_dir, &config, args, View::Status).await,
        Command::Chain(args) => task(&cli.data_dir, &config, args, View::Chain).await,
        Command::History(args) => task(&cli.data_dir, &config, args, View::History).await,
    }
}

async fn ingest(
    data_dir: &std::path::Path,
    config: &config::Config,
    args: IngestArgs,
) -> Result<u8, Failure> {
    let store = config::open_store(data_dir, config)?;
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
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} ingesting [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let ledger = config::ledger(store.clone() as SharedStore, config);
    let options = IngestOptions {
        skip_invalid: args.skip_invalid,
        batch_reports_max: args.batch.max(1),
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
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
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
    data_dir: &std::path::Path,
    config: &config::Config,
    args: TaskArgs,
    view: View,
) -> Result<u8, Failure> {
    let task_id = TaskId::parse(&args.task_id).map_err(|problem| anyhow!("taskId: {problem}"))?;
    let as_of = match &args.as_of {
        Some(text) => Some(Timestamp::parse(text).ok_or_else(|| {
            anyhow!("--as-of: {text:?} is not an RFC 3339 instant such as 2026-01-21T10:00:00Z")
        })?),
        None => None,
    };
    let store = config::open_store(data_dir, config)?;
    let not_found = || Failure {
        code: 1,
        error: anyhow!(
            "no task {task_id}{}",
            as_of.map(|t| format!(" as of {t}")).unwrap_or_default()
        ),
    };
    match view {
        View::History => {
            let entries = taskledger_projections::history(store.as_ref(), &task_id, as_of).await?;
            if entries.is_empty() {
                return Err(not_found());
            }
            if args.json {
                println!("{}", serde_json::to_string(&entries)?);
            } else {
                print!("{}", render::history(&task_id, &entries));
            }
        }
        View::Status | View::Chain => {
            let projection = taskledger_projections::load_task(store.as_ref(), &task_id, as_of)
                .await?
                .ok_or_else(not_found)?;
            match (view, args.json) {
                (View::Status, true) => {
                    println!("{}", serde_json::to_string(&projection.status_view())?)
                }
                (View::Status, false) => print!("{}", render::task(&projection.status_view())),
                (_, true) => println!("{}", serde_json::to_string(&projection.chain_view())?),
                (_, false) => print!("{}", render::chain(&projection)),
            }
        }
    }
    Ok(0)
}
