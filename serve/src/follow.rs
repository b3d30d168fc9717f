//! The projection follower: applies new events to the live models as they become durable and
//! publishes their checkpoint (what `/readyz` and the lag gauge compare with the ledger's head).
//!
//! When a catch-up fails — the models' file failed a write or a sync, a read of the store failed
//! — the follower starts again the way a restarted process would: the projector's memory is
//! dropped (`catch_up` leaves it empty), the models are closed and opened again
//! ([`Kv::recover`]: redb's repair and the integrity check; a file whose sync failed, or that
//! fails the check, starts over empty and is rebuilt from the ledger), and the next catch-up
//! resumes from the checkpoint the models hold, after [`FOLLOWER_RETRY_MILLIS`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_projections::kv::Write;
use taskledger_projections::runner::read_checkpoint;
use taskledger_projections::{catch_up, CatchUpOptions, Kv, ProjectionError, Projector, Recovery};
use taskledger_store::SharedStore;

/// The pause before a catch-up that follows a failed one.
pub const FOLLOWER_RETRY_MILLIS: u64 = 1_000;

/// Events per batch of a catch-up the follower is made to crash in ([`FollowerCrashes`]): small,
/// so the crash comes after some batches were stored and before others.
const CRASH_CHUNK_EVENTS: usize = 64;

/// Crashes of the follower on purpose, for the soak (RELIABILITY.md): a period `every` after the last
/// crash's recovery, the next catch-up runs in batches of [`CRASH_CHUNK_EVENTS`] and its `n`-th model write fails
/// (`n` cycles through 1, 2, 3), as a process killed mid-catch-up would stop; the follower then
/// recovers as from any failure. Set by `TASKLEDGER_FAILPOINT=follower-crash-every:SECONDS`.
#[derive(Debug, Clone, Copy)]
pub struct FollowerCrashes {
    pub every: Duration,
}

impl FollowerCrashes {
    /// The crashes `TASKLEDGER_FAILPOINT` asks for, if any: only in a build with the
    /// `failpoints` feature (never a release); otherwise none.
    pub fn from_env() -> Option<FollowerCrashes> {
        #[cfg(feature = "failpoints")]
        {
            let seconds: f64 = taskledger_store::failpoints::argument("follower-crash-every")?
                .parse()
                .ok()?;
            (seconds.is_finite() && seconds > 0.0).then(|| FollowerCrashes {
                every: Duration::from_secs_f64(seconds),
            })
        }
        #[cfg(not(feature = "failpoints"))]
        None
    }
}

/// Models whose `n`-th write fails (the crash of [`FollowerCrashes`]).
struct CrashingKv {
    inner: Arc<dyn Kv>,
    writes_left: AtomicUsize,
}

impl Kv for CrashingKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        self.inner.get(key)
    }
    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), ProjectionError> {
        self.inner.scan(prefix, from, visit)
    }
    fn apply(&self, writes: Vec<Write>) -> Result<(), ProjectionError> {
        if self.writes_left.fetch_sub(1, Ordering::SeqCst) <= 1 {
            return Err(ProjectionError::Models(
                "the follower crashed (TASKLEDGER_FAILPOINT)".into(),
            ));
        }
        self.inner.apply(writes)
    }
    fn clear(&self) -> Result<(), ProjectionError> {
        self.inner.clear()
    }
    fn flush(&self) -> Result<(), ProjectionError> {
        self.inner.flush()
    }
}

/// What a follower went through, when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowerStats {
    /// Catch-ups that failed (each followed by a recovery), and of them the crashes made on
    /// purpose ([`FollowerCrashes`]).
    pub failures: u64,
    pub crashes: u64,
}

/// How a follower runs.
#[derive(Debug, Clone, Copy)]
pub struct FollowerOptions {
    /// The pause after a failed catch-up (default [`FOLLOWER_RETRY_MILLIS`]).
    pub retry_pause: Duration,
    pub crashes: Option<FollowerCrashes>,
}

impl Default for FollowerOptions {
    fn default() -> Self {
        FollowerOptions {
            retry_pause: Duration::from_millis(FOLLOWER_RETRY_MILLIS),
            crashes: None,
        }
    }
}

/// Follows the store until `shutdown` changes (see the module's documentation).
pub async fn follow(
    store: SharedStore,
    models: Arc<dyn Kv>,
    projected: tokio::sync::watch::Sender<u64>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    follower: FollowerOptions,
) -> FollowerStats {
    let crashes = follower.crashes;
    let mut stats = FollowerStats::default();
    let mut projector = Projector::new(models.clone());
    let options = CatchUpOptions::default();
    let mut next_crash = crashes.map(|crashes| Instant::now() + crashes.every);
    loop {
        let crash_now = next_crash.is_some_and(|at| Instant::now() >= at);
        let outcome = if crash_now {
            let crashing: Arc<dyn Kv> = Arc::new(CrashingKv {
                inner: models.clone(),
                writes_left: AtomicUsize::new(1 + (stats.crashes % 3) as usize),
            });
            projector = Projector::new(crashing);
            let options = CatchUpOptions {
                chunk_events: CRASH_CHUNK_EVENTS,
                ..CatchUpOptions::default()
            };
            next_crash = crashes.map(|crashes| Instant::now() + crashes.every);
            catch_up(store.clone(), &mut projector, &options, &|_, _| {}).await
        } else {
            catch_up(store.clone(), &mut projector, &options, &|_, _| {}).await
        };
        match outcome {
            Ok(done) => {
                projected.send_replace(done.to);
            }
            Err(error) => {
                stats.failures += 1;
                stats.crashes += u64::from(crash_now);
                metrics::counter!("taskledger_projection_failures_total").increment(1);
                eprintln!("taskledger: projection follower failed ({error}); reopening the read models, resuming from their checkpoint");
                tracing::error!(%error, "projection follower failed: reopening the read models, then resuming from their checkpoint");
                recover(&models, &projected).await;
                projector = Projector::new(models.clone());
                tokio::select! {
                    _ = tokio::time::sleep(follower.retry_pause) => {}
                    _ = shutdown.changed() => return stats,
                }
                if crash_now {
                    // The next crash comes a period after this one's recovery.
                    next_crash = crashes.map(|crashes| Instant::now() + crashes.every);
                }
                continue;
            }
        }
        // The checkpoint is the next position to apply: wait until the head passes it.
        let checkpoint = *projected.borrow();
        tokio::select! {
            _ = store.wait_for(checkpoint, Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return stats,
        }
    }
}

/// Reopens the models after a failure and publishes the checkpoint they hold.
async fn recover(models: &Arc<dyn Kv>, projected: &tokio::sync::watch::Sender<u64>) {
    let kv = models.clone();
    let recovered = tokio::task::spawn_blocking(move || {
        let recovery = kv.recover()?;
        Ok::<_, ProjectionError>((recovery, read_checkpoint(kv.as_ref())?))
    })
    .await;
    match recovered {
        Ok(Ok((recovery, checkpoint))) => {
            if let Recovery::Recreated { why } = &recovery {
                eprintln!("taskledger: the read models start over from the ledger: {why}");
            }
            tracing::info!(?recovery, checkpoint, "read models recovered");
            projected.send_replace(checkpoint);
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "the read models could not be reopened; trying again")
        }
        Err(error) => tracing::error!(%error, "reopening the read models failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskledger_domain::{Policy, Report};
    use taskledger_ingest::{FixedClock, Ledger, LedgerConfig};
    use taskledger_projections::digest::digests;
    use taskledger_projections::MemoryKv;
    use taskledger_store::{EventStore, MemoryStore};

    /// A task's lifecycle: enqueued, claimed, failed, claimed again, succeeded.
    fn lifecycle(task: usize) -> Vec<Report> {
        let execution = format!("5a1e0000-0000-4000-8000-{task:012}");
        let id = format!("celery:tasks.add:{task}");
        let minute =
            |second: usize| format!("2026-01-21T10:{:02}:{:02}.000Z", task / 60 % 60, second);
        [
            format!(r#"{{"op":"enqueue","taskId":"{id}","executionId":"{execution}","at":"{}","queue":"celery","maxRetries":3}}"#, minute(0)),
            format!(r#"{{"op":"claim","taskId":"{id}","executionId":"{execution}","at":"{}","worker":"w"}}"#, minute(1)),
            format!(r#"{{"op":"fail","taskId":"{id}","executionId":"{execution}","at":"{}","worker":"w","error":"boom"}}"#, minute(2)),
            format!(r#"{{"op":"claim","taskId":"{id}","executionId":"{execution}","at":"{}","worker":"w"}}"#, minute(3)),
            format!(r#"{{"op":"succeed","taskId":"{id}","executionId":"{execution}","at":"{}","worker":"w"}}"#, minute(4)),
        ]
        .iter()
        .map(|line| Report::from_json(line).expect("a valid report"))
        .collect()
    }

    /// The follower made to crash mid-catch-up every 150 ms, while reports keep coming: it
    /// recovers each time, and its models end equal to a rebuild (a follower that kept its memory
    /// across a failure stored a wrong running digest and double-counted queue statistics).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_crashed_mid_catch_up_ends_with_the_models_of_a_rebuild() {
        let store = Arc::new(MemoryStore::new());
        let ledger = Ledger::new(
            store.clone() as SharedStore,
            Policy::default(),
            Arc::new(FixedClock(0)),
            LedgerConfig::default(),
        );
        let models: Arc<dyn Kv> = Arc::new(MemoryKv::new());
        let (sender, mut projected) = tokio::sync::watch::channel(0u64);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let follower = tokio::spawn(follow(
            store.clone() as SharedStore,
            models.clone(),
            sender,
            stopped,
            FollowerOptions {
                retry_pause: Duration::from_millis(20),
                crashes: Some(FollowerCrashes {
                    every: Duration::from_millis(150),
                }),
            },
        ));
        for wave in 0..12 {
            let reports = (wave * 60..(wave + 1) * 60).flat_map(lifecycle).collect();
            ledger.submit_batch(reports).await.expect("accepted");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let head = store.head_position();
        tokio::time::timeout(
            Duration::from_secs(60),
            projected.wait_for(|checkpoint| *checkpoint == head),
        )
        .await
        .expect("the follower catches up")
        .expect("the follower runs");
        stop.send_replace(true);
        let stats = follower.await.expect("the follower stops");
        assert!(stats.crashes >= 3, "{stats:?}");
        let rebuilt: Arc<dyn Kv> = Arc::new(MemoryKv::new());
        let mut projector = Projector::new(rebuilt.clone());
        catch_up(
            store.clone(),
            &mut projector,
            &CatchUpOptions::default(),
            &|_, _| {},
        )
        .await
        .expect("a rebuild");
        assert_eq!(
            digests(models.as_ref()).unwrap(),
            digests(rebuilt.as_ref()).unwrap()
        );
        assert_eq!(
            taskledger_projections::runner::read_ledger_digest(models.as_ref()).unwrap(),
            taskledger_projections::runner::read_ledger_digest(rebuilt.as_ref()).unwrap()
        );
    }
}
