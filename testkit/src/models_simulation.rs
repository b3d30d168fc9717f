//! The read models' storage-fault simulation: the real projection runner ([`catch_up`]) keeps the
//! real [`RedbKv`] up to date with a ledger, while the models' file sits on the store's simulated
//! disk ([`FaultDisk`]) and takes its faults — power loss (every unsynced write dropped, kept or
//! torn), torn and failed writes, failed syncs (Linux's "fsyncgate" semantics), failed reads and a
//! full disk — under redb itself. After a failed catch-up the simulation does what the follower in
//! `serve` does ([`Kv::recover`], a fresh [`Projector`]); after a power loss, what a restarted
//! process does (an integrity-checked open; damage means the models start over).
//!
//! Checked, against a reference built in memory from the same ledger:
//!
//! - **nothing wrong is served:** whenever the models answer, every entry of them (every task
//!   record, index entry, queue statistic, the running digest, the checkpoint) equals the
//!   reference's at the checkpoint they hold, after every catch-up, failed or not, every reopen
//!   and every power loss;
//! - **nothing acknowledged is lost:** a catch-up that returned `Ok` made its checkpoint durable:
//!   after any later power loss the models hold at least that checkpoint — unless they had to
//!   start over (a failed sync, or damage found by the integrity check), which is counted;
//! - a catch-up run after any fault reaches the ledger's head.
//!
//! One seed decides everything: the ledger's chunks, each fault and its kind, when power goes off
//! and what survives. A failure names its seed and step, and replays exactly.

use crate::fault_disk::{Fault, FaultCounts, FaultDisk};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use taskledger_projections::kv::{Kv, MemoryKv, Recovery, RedbKv, MODELS_FORMAT_KEY};
use taskledger_projections::runner::{catch_up, read_checkpoint, CatchUpOptions, Projector};
use taskledger_projections::ProjectionError;
use taskledger_store::{EventStore, LogIo};

/// The models' page cache in the simulation: small, so redb reads pages from the disk (and meets
/// its read faults) rather than serving everything from memory.
const CACHE_BYTES: u64 = 64 * 1024;
/// Events a catch-up step moves the models by at most, and events per chunk at most.
const STEP_EVENTS_MAX: u64 = 400;
const CHUNK_EVENTS_MAX: usize = 120;
/// Bytes a full disk leaves at most when one is simulated.
const FREE_BYTES_MAX: u64 = 256 * 1024;

/// One run.
#[derive(Debug, Clone)]
pub struct ModelsSimulationOptions {
    pub seed: u64,
    /// Steps (a catch-up, with or without a fault; a reopen; a power loss).
    pub steps: usize,
}

/// What a run did and checked.
#[derive(Debug, Clone, Default)]
pub struct ModelsSimulationReport {
    pub runs: u64,
    pub steps: u64,
    pub faults: FaultCounts,
    /// Catch-ups that returned `Ok` (their checkpoint acknowledged) and that failed.
    pub catch_ups_ok: u64,
    pub catch_ups_failed: u64,
    /// Events the acknowledged catch-ups moved the models by.
    pub events_projected: u64,
    /// Recoveries after a failed catch-up: the file reopened, or started over (its sync had
    /// failed, or it failed the integrity check).
    pub recoveries_reopened: u64,
    pub recoveries_recreated: u64,
    /// Opens after a power loss or a clean close, and of them those the integrity check refused
    /// (the models then start over).
    pub reopens: u64,
    pub damaged_at_open: u64,
    /// Comparisons of every entry of the models with the reference, and the entries compared.
    pub checks: u64,
    pub entries_checked: u64,
    /// Acknowledged checkpoints confirmed after a power loss.
    pub checkpoints_confirmed: u64,
}

impl ModelsSimulationReport {
    /// Adds `other`'s figures to these.
    pub fn add(&mut self, other: &ModelsSimulationReport) {
        self.runs += other.runs;
        self.steps += other.steps;
        self.faults.add(&other.faults);
        self.catch_ups_ok += other.catch_ups_ok;
        self.catch_ups_failed += other.catch_ups_failed;
        self.events_projected += other.events_projected;
        self.recoveries_reopened += other.recoveries_reopened;
        self.recoveries_recreated += other.recoveries_recreated;
        self.reopens += other.reopens;
        self.damaged_at_open += other.damaged_at_open;
        self.checks += other.checks;
        self.entries_checked += other.entries_checked;
        self.checkpoints_confirmed += other.checkpoints_confirmed;
    }
}

/// A broken promise (or a simulation that could not go on), with where to replay it.
#[derive(Debug, Clone)]
pub struct ModelsSimulationFailure {
    pub seed: u64,
    pub step: usize,
    pub message: String,
}

impl std::fmt::Display for ModelsSimulationFailure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "models simulation seed {} step {}: {}",
            self.seed, self.step, self.message
        )
    }
}

/// Every entry of a [`Kv`], in key order.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Every entry but the file's layout marker (a property of the file, not of the models).
fn entries(kv: &dyn Kv) -> Result<Entries, ProjectionError> {
    let mut out = Vec::new();
    kv.scan(&[], &[], &mut |key, value| {
        if key != MODELS_FORMAT_KEY {
            out.push((key.to_vec(), value.to_vec()));
        }
        true
    })?;
    Ok(out)
}

/// The models built in memory, without faults, to any checkpoint.
struct Reference {
    store: Arc<dyn EventStore>,
    kv: Arc<MemoryKv>,
    projector: Projector,
    position: u64,
}

impl Reference {
    fn new(store: Arc<dyn EventStore>) -> Reference {
        let kv = Arc::new(MemoryKv::new());
        Reference {
            store,
            projector: Projector::new(kv.clone()),
            kv,
            position: 0,
        }
    }

    /// The reference's entries at `checkpoint`.
    async fn at(&mut self, checkpoint: u64) -> Result<Entries, ProjectionError> {
        if checkpoint < self.position {
            *self = Reference::new(self.store.clone());
        }
        if checkpoint > self.position {
            let options = CatchUpOptions {
                until: Some(checkpoint),
                ..CatchUpOptions::default()
            };
            catch_up(
                self.store.clone(),
                &mut self.projector,
                &options,
                &|_, _| {},
            )
            .await?;
            self.position = checkpoint;
        }
        entries(self.kv.as_ref())
    }
}

struct Simulation {
    seed: u64,
    step: usize,
    store: Arc<dyn EventStore>,
    head: u64,
    disk: FaultDisk,
    file: PathBuf,
    random: ChaCha8Rng,
    models: Option<Arc<RedbKv>>,
    projector: Option<Projector>,
    reference: Reference,
    /// The checkpoint of the last catch-up that returned `Ok` (0 after the models start over).
    acknowledged: u64,
    report: ModelsSimulationReport,
}

/// Runs one seed over the events of `store` (a ledger of a few thousand events is plenty).
pub async fn run(
    options: &ModelsSimulationOptions,
    store: Arc<dyn EventStore>,
) -> Result<ModelsSimulationReport, ModelsSimulationFailure> {
    let disk = FaultDisk::new(options.seed, false);
    let mut simulation = Simulation {
        seed: options.seed,
        step: 0,
        head: store.head_position(),
        reference: Reference::new(store.clone()),
        store,
        disk,
        file: PathBuf::from("/models/models.redb"),
        random: ChaCha8Rng::seed_from_u64(options.seed ^ 0x6d6f_6465_6c73),
        models: None,
        projector: None,
        acknowledged: 0,
        report: ModelsSimulationReport {
            runs: 1,
            ..ModelsSimulationReport::default()
        },
    };
    simulation.open().await?;
    for step in 0..options.steps {
        simulation.step = step;
        simulation.report.steps += 1;
        match simulation.random.gen_range(0..100) {
            0..=64 => simulation.catch_up_step().await?,
            65..=79 => simulation.power_loss().await?,
            80..=89 => {
                simulation.close();
                simulation.open().await?;
            }
            _ => simulation.read_step().await?,
        }
    }
    // The end: faults off, the models caught up to the head and equal to the reference there.
    simulation.step = options.steps;
    simulation.catch_up_clean().await?;
    simulation.report.faults = simulation.disk.counts();
    Ok(simulation.report)
}

impl Simulation {
    fn failure(&self, message: impl Into<String>) -> ModelsSimulationFailure {
        ModelsSimulationFailure {
            seed: self.seed,
            step: self.step,
            message: message.into(),
        }
    }

    fn models(&self) -> Arc<RedbKv> {
        self.models
            .clone()
            .expect("the models are open between steps")
    }

    fn io(&self) -> Arc<dyn LogIo> {
        Arc::new(self.disk.clone())
    }

    /// Opens the models as a starting process does: checked page by page; damaged models start
    /// over empty. The models' file is named in its directory once, as the staging rename of a
    /// real open makes it.
    async fn open(&mut self) -> Result<(), ModelsSimulationFailure> {
        self.report.reopens += 1;
        let opened = match RedbKv::open_on(self.io(), &self.file, CACHE_BYTES) {
            Err(ProjectionError::ModelsDamaged { .. }) => {
                self.report.damaged_at_open += 1;
                self.acknowledged = 0;
                self.empty_file()?;
                RedbKv::open_on(self.io(), &self.file, CACHE_BYTES)
            }
            other => other,
        }
        .map_err(|error| self.failure(format!("the models did not open: {error}")))?;
        self.disk
            .sync_dir(Path::new("/models"))
            .map_err(|error| self.failure(format!("directory sync: {error}")))?;
        let models = Arc::new(opened);
        self.projector = Some(Projector::new(models.clone()));
        self.models = Some(models);
        self.check("after an open", false).await
    }

    fn empty_file(&self) -> Result<(), ModelsSimulationFailure> {
        self.disk
            .open(&self.file)
            .and_then(|handle| {
                handle.set_len(0)?;
                handle.sync_all()
            })
            .map_err(|error| self.failure(format!("emptying the models' file: {error}")))
    }

    fn close(&mut self) {
        self.projector = None;
        self.models = None;
    }

    /// Every entry of the models equals the reference's at their checkpoint, which is at least
    /// the acknowledged one.
    /// `may_refuse`: an error is allowed (a fault was armed, or one struck and the models were
    /// not recovered yet): it is not a wrong answer.
    async fn check(&mut self, when: &str, may_refuse: bool) -> Result<(), ModelsSimulationFailure> {
        let models = self.models();
        let found = entries(models.as_ref());
        let checkpoint = read_checkpoint(models.as_ref());
        let (found, checkpoint) = match (found, checkpoint) {
            (Ok(found), Ok(checkpoint)) => (found, checkpoint),
            (Err(error), _) | (_, Err(error)) if !may_refuse => {
                return Err(self.failure(format!("{when}: the models refused a read: {error}")))
            }
            _ => return Ok(()),
        };
        if checkpoint < self.acknowledged {
            return Err(self.failure(format!(
                "{when}: the models' checkpoint is {checkpoint}, behind the acknowledged {}",
                self.acknowledged
            )));
        }
        if checkpoint > self.head {
            return Err(self.failure(format!(
                "{when}: the models' checkpoint {checkpoint} is past the ledger's head {}",
                self.head
            )));
        }
        let expected = self
            .reference
            .at(checkpoint)
            .await
            .map_err(|error| self.failure(format!("the reference: {error}")))?;
        if found != expected {
            let first = found
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(found.len().min(expected.len()));
            let key = |entries: &Entries| {
                entries
                    .get(first)
                    .map(|(key, _)| String::from_utf8_lossy(key).into_owned())
            };
            return Err(self.failure(format!(
                "{when}: the models at checkpoint {checkpoint} differ from a rebuild: {} entries against {}; first difference at entry {first} (found key {:?}, expected key {:?})",
                found.len(),
                expected.len(),
                key(&found),
                key(&expected),
            )));
        }
        self.report.checks += 1;
        self.report.entries_checked += found.len() as u64;
        Ok(())
    }

    /// One catch-up by up to [`STEP_EVENTS_MAX`] events, perhaps with a fault armed.
    async fn catch_up_step(&mut self) -> Result<(), ModelsSimulationFailure> {
        let models = self.models();
        let Ok(from) = read_checkpoint(models.as_ref()) else {
            return self.recover().await;
        };
        let until = (from + self.random.gen_range(1..=STEP_EVENTS_MAX)).min(self.head);
        let chunk = self.random.gen_range(1..=CHUNK_EVENTS_MAX);
        match self.random.gen_range(0..100) {
            0..=11 => self.disk.arm(Fault::WriteFails {
                torn: self.random.gen_bool(0.5),
            }),
            12..=21 => self.disk.arm(Fault::SyncFails),
            22..=29 => self.disk.arm(Fault::ReadFails),
            30..=41 => self.disk.cut_power_after(self.random.gen_range(0..24)),
            42..=47 => self
                .disk
                .set_free_bytes(Some(self.random.gen_range(0..=FREE_BYTES_MAX))),
            _ => {}
        }
        let options = CatchUpOptions {
            chunk_events: chunk,
            until: Some(until),
            as_of: None,
        };
        let mut projector = self.projector.take().expect("a projector between steps");
        let outcome = catch_up(self.store.clone(), &mut projector, &options, &|_, _| {}).await;
        self.projector = Some(projector);
        self.disk.disarm();
        self.disk.cancel_cut();
        self.disk.set_free_bytes(None);
        match outcome {
            Ok(done) => {
                if done.to != until {
                    return Err(
                        self.failure(format!("a catch-up to {until} answered Ok at {}", done.to))
                    );
                }
                self.report.catch_ups_ok += 1;
                self.report.events_projected += done.to - done.from;
                self.acknowledged = done.to;
                self.check("after a catch-up", false).await
            }
            Err(_) => {
                self.report.catch_ups_failed += 1;
                if self.disk.powered_off() {
                    self.power_loss().await
                } else {
                    self.check("after a failed catch-up", true).await?;
                    self.recover().await
                }
            }
        }
    }

    /// What the follower does after a failure: the models reopened (or started over), a fresh
    /// projector.
    async fn recover(&mut self) -> Result<(), ModelsSimulationFailure> {
        let models = self.models();
        match models.recover() {
            Ok(Recovery::Recreated { .. }) => {
                self.report.recoveries_recreated += 1;
                self.acknowledged = 0;
            }
            Ok(_) => self.report.recoveries_reopened += 1,
            Err(error) if self.disk.powered_off() => {
                let _ = error;
                return self.power_loss().await;
            }
            Err(error) => return Err(self.failure(format!("recovery failed: {error}"))),
        }
        self.projector = Some(Projector::new(models));
        self.check("after a recovery", false).await
    }

    /// A read of the models with a read fault armed: an error or the right answer.
    async fn read_step(&mut self) -> Result<(), ModelsSimulationFailure> {
        self.disk.arm(Fault::ReadFails);
        let checked = self.check("under a read fault", true).await;
        self.disk.disarm();
        checked?;
        self.recover().await
    }

    /// The power goes off (now, if it is not off already), comes back, and the models are
    /// opened as a restarted process opens them.
    async fn power_loss(&mut self) -> Result<(), ModelsSimulationFailure> {
        let acknowledged = self.acknowledged;
        self.disk.cut_power();
        self.close();
        self.disk
            .power_loss()
            .map_err(|error| self.failure(format!("power loss: {error}")))?;
        self.open().await?;
        if self.acknowledged == acknowledged && acknowledged > 0 {
            self.report.checkpoints_confirmed += 1;
        }
        Ok(())
    }

    /// The end: the models reach the head without faults and equal the reference there.
    async fn catch_up_clean(&mut self) -> Result<(), ModelsSimulationFailure> {
        let mut projector = self.projector.take().expect("a projector between steps");
        let outcome = catch_up(
            self.store.clone(),
            &mut projector,
            &CatchUpOptions::default(),
            &|_, _| {},
        )
        .await;
        self.projector = Some(projector);
        match outcome {
            Ok(done) if done.to == self.head => {
                self.acknowledged = done.to;
                self.check("at the end", false).await
            }
            Ok(done) => Err(self.failure(format!(
                "the last catch-up stopped at {}, not the head {}",
                done.to, self.head
            ))),
            Err(error) => Err(self.failure(format!("a catch-up without faults failed: {error}"))),
        }
    }
}
