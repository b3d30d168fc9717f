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

mod audit;
mod read;
mod retention;
mod serve;
mod validate;
mod write;

use audit::*;
use read::*;
use retention::*;
use serve::*;
use validate::*;
use write::*;

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
