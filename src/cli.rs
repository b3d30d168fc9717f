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
