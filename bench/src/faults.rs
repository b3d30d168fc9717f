//! `taskledger-bench faults`: the storage-fault simulation ([`taskledger_testkit::simulation`])
//! over many seeds, with the figures by kind. `bench/faults.sh` runs it; a failing seed prints
//! the command that replays it. `taskledger-bench models-faults`: the read models' simulation
//! ([`taskledger_testkit::models_simulation`]), the same way.

use std::path::PathBuf;
use std::time::Instant;
use taskledger_domain::{Policy, Report};
use taskledger_ingest::{FixedClock, Ledger, LedgerConfig};
use taskledger_store::{EventStore, MemoryStore, SharedStore};
use taskledger_testkit::fault_disk::FaultCounts;
use taskledger_testkit::models_simulation::{
    run as run_models_seed, ModelsSimulationOptions, ModelsSimulationReport,
};
use taskledger_testkit::simulation::{run as run_seed, SimulationOptions, SimulationReport};

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
        None => tempfile::tempdir_in(taskledger_testkit::fault_disk::scratch_parent())?,
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
                let replay = format!(
                    "faults --first-seed {seed} --seeds 1 --steps {}",
                    args.steps
                );
                return Err(seed_failed(&failure, seed, &replay, total.runs));
            }
        }
        progress(total.runs, &total.faults, started);
    }
    let faults = &total.faults;
    let figures = serde_json::json!({
        "seeds": total.runs,
        "firstSeed": args.first_seed,
        "stepsPerSeed": args.steps,
        "seedsWithLogThreads": total.runs_with_threads,
        "seconds": started.elapsed().as_secs_f64(),
        "faults": fault_figures(faults, true),
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
    emit(&figures, args.json.as_deref())
}

/// `taskledger-bench models-faults`: the read models' storage-fault simulation
/// ([`taskledger_testkit::models_simulation`]) over many seeds, on a ledger the simulator makes.
#[derive(clap::Args)]
pub struct ModelsFaultsArgs {
    /// Seeds to run.
    #[arg(long, default_value_t = 200)]
    pub seeds: u64,
    /// The first seed (seeds run from it upwards).
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Steps per seed.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Tasks of the simulated ledger the models follow (about five events each).
    #[arg(long, default_value_t = 600)]
    pub tasks: usize,
    /// Writes the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The simulator's reports for `tasks` tasks, decided into a ledger in memory.
async fn simulated_ledger(tasks: usize) -> anyhow::Result<std::sync::Arc<MemoryStore>> {
    let simulation = taskledger_replay::simulate::simulate(tasks, 7)?;
    let store = std::sync::Arc::new(MemoryStore::new());
    let ledger = Ledger::new(
        store.clone() as SharedStore,
        Policy::default(),
        std::sync::Arc::new(FixedClock(0)),
        LedgerConfig::default(),
    );
    let reports = simulation
        .reports
        .iter()
        .map(|line| Report::from_json(line))
        .collect::<Result<Vec<_>, _>>()?;
    for batch in reports.chunks(256) {
        ledger.submit_batch(batch.to_vec()).await?;
    }
    Ok(store)
}

pub async fn run_models(args: ModelsFaultsArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = simulated_ledger(args.tasks).await?;
    let events = store.head_position();
    let mut total = ModelsSimulationReport::default();
    for seed in args.first_seed..args.first_seed + args.seeds {
        let options = ModelsSimulationOptions {
            seed,
            steps: args.steps,
        };
        match run_models_seed(&options, store.clone() as SharedStore).await {
            Ok(report) => total.add(&report),
            Err(failure) => {
                let replay = format!(
                    "models-faults --first-seed {seed} --seeds 1 --steps {} --tasks {}",
                    args.steps, args.tasks
                );
                return Err(seed_failed(&failure, seed, &replay, total.runs));
            }
        }
        progress(total.runs, &total.faults, started);
    }
    let faults = &total.faults;
    let figures = serde_json::json!({
        "seeds": total.runs,
        "firstSeed": args.first_seed,
        "stepsPerSeed": args.steps,
        "ledgerEvents": events,
        "seconds": started.elapsed().as_secs_f64(),
        "faults": fault_figures(faults, false),
        "catchUpsAcknowledged": total.catch_ups_ok,
        "catchUpsFailed": total.catch_ups_failed,
        "eventsProjected": total.events_projected,
        "recoveriesReopened": total.recoveries_reopened,
        "recoveriesStartedOver": total.recoveries_recreated,
        "reopens": total.reopens,
        "damagedAtOpen": total.damaged_at_open,
        "checks": total.checks,
        "entriesChecked": total.entries_checked,
        "acknowledgedCheckpointsConfirmedAfterPowerLoss": total.checkpoints_confirmed,
    });
    emit(&figures, args.json.as_deref())
}

/// Says which seed failed and how to replay it; the error to return.
fn seed_failed(
    failure: &dyn std::fmt::Display,
    seed: u64,
    replay: &str,
    passed: u64,
) -> anyhow::Error {
    eprintln!("FAILED: {failure}");
    eprintln!("replay: cargo run --release -p taskledger-bench -- {replay}");
    anyhow::anyhow!("seed {seed} failed after {passed} seeds passed")
}

/// A progress line every ten seeds.
fn progress(runs: u64, faults: &FaultCounts, started: Instant) {
    if runs.is_multiple_of(10) {
        eprintln!(
            "{runs} seeds, {} power losses, {} faults injected, {:.0} s",
            faults.power_losses,
            faults.injected(),
            started.elapsed().as_secs_f64()
        );
    }
}

/// Prints the figures, and writes them to `json` if given.
fn emit(figures: &serde_json::Value, json: Option<&std::path::Path>) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(figures)?;
    println!("{text}");
    if let Some(path) = json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// The disk's counts by kind (`sled`: with sled's, which only the log's simulation has).
fn fault_figures(faults: &FaultCounts, sled: bool) -> serde_json::Value {
    let mut figures = serde_json::json!({
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
    });
    if sled {
        figures["sledSyncFailures"] = faults.sled_sync_failures.into();
        figures["sledCopiesAtCheckpoints"] = faults.sled_snapshots.into();
        figures["operationsRefusedPoweredOff"] = faults.refused_powered_off.into();
    }
    figures
}
