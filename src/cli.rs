//! Command-line arguments (clap).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// taskledger: an event-sourced tracking ledger for background-task queues.
#[derive(Debug, Parser)]
#[command(name = "taskledger", version, about, long_about = None)]
pub struct Cli {
    /// Data directory of the embedded store.
    #[arg(
        long,
        global = true,
        env = "TASKLEDGER_DATA_DIR",
        default_value = "./taskledger-data"
    )]
    pub data_dir: PathBuf,
    /// The event store: `postgres://…` / `postgresql://…` (PostgreSQL), `kurrentdb://…` /
    /// `esdb://…` (KurrentDB); unset: the embedded sled store in the data directory. Read models
    /// always live in the data directory.
    #[arg(long, global = true, env = "TASKLEDGER_STORE")]
    pub store: Option<String>,
    /// TOML configuration (policies: dedup window, classifier, retry policies).
    #[arg(long, global = true, env = "TASKLEDGER_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append lifecycle reports from an NDJSON file (or - for standard input), in line order.
    Ingest(IngestArgs),
    /// Current status of one task.
    Task(TaskArgs),
    /// Retry chain of one task: every execution and attempt.
    Chain(TaskArgs),
    /// Raw events of one task, in stream order.
    History(TaskArgs),
    /// The dead-letter queue (or, with --archived, the archived executions), paged.
    Dlq(DlqArgs),
    /// Per-queue statistics: executions by status, rejections, failures by category.
    Stats(StatsArgs),
    /// Executions processing for longer than a threshold.
    Stuck(StuckArgs),
    /// Failed executions whose retry is due.
    Due(DueArgs),
    /// Archive a dlq/failed execution (an operator report, same rules as the reports).
    Archive(ArchiveArgs),
    /// Re-run a task: archive its dlq/failed execution and enqueue a new one.
    Retry(RetryArgs),
    /// Rebuild every read model by replay; --verify compares a scratch rebuild with the live ones.
    Rebuild(RebuildArgs),
    /// Write every stored event as NDJSON (to FILE, or standard output).
    Export(ExportArgs),
    /// Append the events of an export (idempotent: re-importing appends nothing).
    Import(ImportArgs),
    /// The ledger's digest at its head: {"position","digest"} (keep it; `verify --digest` proves
    /// later ledgers extend it).
    Digest(DigestArgs),
    /// Recompute every stream's hash chain (of the store, or of an export) and the digest; exit 1
    /// naming the first stream and version that fails.
    Verify(VerifyArgs),
    /// Compare the ledger, replayed to the export's instant, with a legacy tracker's export.
    Validate(ValidateArgs),
    /// Write a realistic workload, the export of a faulty legacy tracker, and the faults injected.
    Simulate(SimulateArgs),
    /// Replay the recorded reports under another configuration (--config FILE) and compare each
    /// execution's outcome with the recorded one.
    Whatif(WhatifArgs),
    /// Move the streams whose every execution ended (completed, dlq, archived) before --before
    /// into cold segment files; every command still reads them, nothing is erased.
    Retain(RetainArgs),
    /// Simulate, ingest, project and validate in a fresh directory: the one-command tour.
    Demo(DemoArgs),
    /// The HTTP service: reports in, read models out (bearer tokens with roles).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the chosen address is printed).
    #[arg(long, env = "TASKLEDGER_LISTEN")]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The legacy export: mongoexport JSON lines (relaxed or canonical Extended JSON) or an array.
    #[arg(long)]
    pub legacy: PathBuf,
    /// A TOML mapping, for trackers other than TaskTracker (compared per task).
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// Compare only these fields (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub fields: Vec<String>,
    /// Leave these fields out (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub ignore: Vec<String>,
    /// Instants are equal within this (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s")]
    pub time_tolerance: String,
    /// The instant to compare at (default: the latest instant in the export).
    #[arg(long)]
    pub as_of: Option<String>,
    /// Exit 1 when consistency is below this.
    #[arg(long, default_value_t = 1.0)]
    pub min_consistency: f64,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Print the JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// `whatif`: the configuration to replay under is the global `--config FILE` (its `[store]`
/// also names the ledger, unless `--store` does).
#[derive(Debug, Args)]
pub struct WhatifArgs {
    /// Compare only the executions of this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Compare only the executions enqueued at or after this instant (RFC 3339); the replay still
    /// decides every stream from its start.
    #[arg(long)]
    pub since: Option<String>,
    /// Print the JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Write the HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RetainArgs {
    /// The cut-off: an RFC 3339 instant, or an age (30d, 12h: that long before now). Streams
    /// whose last event is before it, every execution ended, move.
    #[arg(long)]
    pub before: String,
    /// List what would move, move nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Leave sled's files as they are after the move (by default they are compacted, giving the
    /// moved events' space back to the file system).
    #[arg(long)]
    pub no_compact: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[arg(long, default_value_t = 1000)]
    pub tasks: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[arg(long, default_value_t = 2000)]
    pub tasks: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where the demo writes (its data directory, the simulated files and the reports). Emptied
    /// first when it holds an earlier demo.
    #[arg(long, default_value = "./taskledger-demo")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub category: Option<String>,
    /// failedAt at or after this instant (archivedAt with --archived).
    #[arg(long)]
    pub since: Option<String>,
    /// failedAt before this instant.
    #[arg(long)]
    pub until: Option<String>,
    /// List archived executions instead.
    #[arg(long)]
    pub archived: bool,
    /// Items per page (at most 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// The `next` cursor of the previous page.
    #[arg(long)]
    pub cursor: Option<String>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The models as they were at this instant (RFC 3339): a replay of the events with `at` ≤ it.
    #[arg(long)]
    pub as_of: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[arg(long)]
    pub queue: Option<String>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Args)]
pub struct StuckArgs {
    #[arg(long)]
    pub queue: Option<String>,
    /// Processing for longer than this (e.g. 30m, 2h, 90s).
    #[arg(long, default_value = "30m")]
    pub older_than: String,
    /// The instant to judge at (default: --as-of, else now).
    #[arg(long)]
    pub at: Option<String>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Args)]
pub struct DueArgs {
    #[arg(long)]
    pub queue: Option<String>,
    /// The instant to judge at (default: --as-of, else now).
    #[arg(long)]
    pub at: Option<String>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    pub task_id: String,
    pub execution_id: String,
    #[arg(long)]
    pub reason: Option<String>,
    /// Who archives (default: $USER).
    #[arg(long)]
    pub by: Option<String>,
    /// When (default: now).
    #[arg(long)]
    pub at: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    pub task_id: String,
    /// The new execution's id (default: a new UUID).
    #[arg(long)]
    pub execution_id: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
    /// Who retries (default: $USER).
    #[arg(long)]
    pub by: Option<String>,
    /// When (default: now).
    #[arg(long)]
    pub at: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Rebuild into a scratch store and compare a digest per model with the live models
    /// (exit 1 naming any model that differs).
    #[arg(long)]
    pub verify: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output file (default: standard output).
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DigestArgs {
    /// Print the digest and its position as {"position","digest"} (the default output is the
    /// same object; this flag is accepted like every read command's).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A digest taken earlier (`taskledger digest`'s output, or POSITION:HEX): prove the ledger
    /// at that position is a prefix of this one.
    #[arg(long)]
    pub digest: Option<String>,
    /// Verify an export (NDJSON from `taskledger export`) instead of the store.
    #[arg(long)]
    pub export: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// NDJSON reports, one per line; - reads standard input.
    pub file: PathBuf,
    /// Append the valid lines even if some are malformed (default: any malformed line appends
    /// nothing).
    #[arg(long)]
    pub skip_invalid: bool,
    /// With --skip-invalid: write the malformed lines here, as read.
    #[arg(long, requires = "skip_invalid")]
    pub rejects: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Reports per store call (one flush each).
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
}

#[derive(Debug, Args)]
pub struct TaskArgs {
    /// The taskId, e.g. partner_tasks:SATLOC:695d:02220710.
    pub task_id: String,
    /// Show the task as it was at this instant (RFC 3339): only events with `at` ≤ it.
    #[arg(long)]
    pub as_of: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
