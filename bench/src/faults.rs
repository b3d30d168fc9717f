//! `taskledger-bench faults`: the storage-fault simulation ([`taskledger_store::simulation`])
//! over many seeds, with the figures by kind. `bench/faults.sh` runs it; a failing seed prints
//! the command that replays it.

use std::path::PathBuf;
use std::time::Instant;
use taskledger_store::simulation::{run as run_seed, SimulationOptions, SimulationReport};

#[derive(clap::Args)]
pub struct FaultsArgs {
    /// Seeds to run.
    #[arg(long, default_value_t = 200)]
    pub seeds: u64,
    /// The first seed (seeds run from it upwards).
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Workload steps per seed.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Scratch directory for sled's files (default: /dev/shm if there is one, else the system
    /// temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Writes the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(args: FaultsArgs) -> anyhow::Result<()> {
    let scratch = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir_in(taskledger_store::fault_disk::scratch_parent())?,
    };
    let started = Instant::now();
    let mut total = SimulationReport::default();
    for seed in args.first_seed..args.first_seed + args.seeds {
        let options = SimulationOptions {
            seed,
            steps: args.steps,
            dir: scratch.path().join("run"),
        };
        match run_seed(&options) {
            Ok(report) => total.add(&report),
            Err(failure) => {
                eprintln!("FAILED: {failure}");
                eprintln!(
                    "replay: cargo run --release -p taskledger-bench -- faults --first-seed {seed} --seeds 1 --steps {}",
                    args.steps
                );
                anyhow::bail!("seed {seed} failed after {} seeds passed", total.runs);
            }
        }
        if total.runs.is_multiple_of(10) {
            eprintln!(
                "{} seeds, {} power losses, {} faults injected, {:.0} s",
                total.runs,
                total.faults.power_losses,
                total.faults.injected(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let faults = &total.faults;
    let figures = serde_json::json!({
        "seeds": total.runs,
        "firstSeed": args.first_seed,
        "stepsPerSeed": args.steps,
        "seedsWithLogThreads": total.runs_with_threads,
        "seconds": started.elapsed().as_secs_f64(),
        "faults": {
            "injected": faults.injected(),
            "powerLosses": faults.power_losses,
            "unsyncedWritesDropped": faults.writes_dropped,
            "unsyncedWritesKept": faults.writes_kept,
            "unsyncedWritesTorn": faults.writes_torn,
            "syncFailures": faults.sync_failures,
            "writeFailures": faults.write_failures,
            "tornWriteFailures": faults.torn_write_failures,
            "noSpace": faults.no_space,
            "readFailures": faults.read_failures,
            "sledSyncFailures": faults.sled_sync_failures,
            "sledCopiesAtCheckpoints": faults.sled_snapshots,
            "operationsRefusedPoweredOff": faults.refused_powered_off,
        },
        "appendsAcknowledged": total.appends_acknowledged,
        "eventsAcknowledged": total.events_acknowledged,
        "appendsFailed": total.appends_failed,
        "failedEventsFoundAfterRecovery": total.failed_events_present,
        "failedEventsAbsentAfterRecovery": total.failed_events_absent,
        "conflictsChecked": total.conflicts,
        "reopens": total.reopens,
        "checks": total.checks,
        "eventsChecked": total.events_checked,
        "refusalsAfterFailureChecked": total.refusals_checked,
        "openErrorsNamingTheFile": total.open_errors,
        "noSpaceErrors": total.no_space_errors,
        "noSpaceRecoveries": total.no_space_recoveries,
        "acknowledgedLost": 0,
        "wrongEventsServed": 0,
    });
    println!("{}", serde_json::to_string_pretty(&figures)?);
    if let Some(path) = &args.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
    }
    Ok(())
}
