//! Benchmarks and crash-test workloads for the write path (not tests: nothing here asserts a
//! time). `taskledger-bench ingest` prints acknowledged reports/s and latency percentiles;
//! `taskledger-bench ack-writer` is the child the crash tests kill.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_domain::{Policy, Report};
use taskledger_ingest::{Ledger, LedgerConfig, SystemClock};
use taskledger_store::{EventStore, SharedStore, SledConfig, SledStore};

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
    },
}

/// The reports writer `writer` sends, in order: per task an enqueue → claim → succeed, and every
/// fifth task fails twice into the DLQ and is retried by an operator (a two-event decision).
fn workload(run: u64, writer: usize, reports: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(reports + 8);
    let mut task = 0u64;
    let base = 1_769_000_000_000i64; // 2026-01-21
    while out.len() < reports {
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
        task += 1;
    }
    out.truncate(reports);
    out
}

fn parse_all(lines: Vec<String>) -> anyhow::Result<Vec<Report>> {
    lines
        .iter()
        .map(|line| Report::from_json(line).with_context(|| line.clone()))
        .collect()
}

fn open_ledger(dir: &std::path::Path) -> anyhow::Result<(Arc<SledStore>, Arc<Ledger>)> {
    let store = Arc::new(SledStore::open(SledConfig::new(dir))?);
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
    Ok(())
}

async fn ack_writer(
    data_dir: PathBuf,
    writers: usize,
    reports: usize,
    run: u64,
) -> anyhow::Result<()> {
    let (_store, ledger) = open_ledger(&data_dir)?;
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
            Command::AckWriter { data_dir, writers, reports, run } => ack_writer(data_dir, writers, reports, run).await,
        }
    })
}
