//! The storage-fault simulation's fast slice (the long run: `bench/faults.sh`): a few seeds of
//! appends through the sled store over a disk that tears, drops and fails writes, fails syncs and
//! reads, fills up and loses power; every acknowledged append checked after every reopen.

use taskledger_testkit::simulation::{run, SimulationOptions, SimulationReport};

/// Seeds of the fast slice, and steps per seed: a few seconds in all.
const SEEDS: u64 = 4;
const STEPS_PER_SEED: usize = 50;

#[test]
fn acknowledged_appends_survive_every_injected_fault() {
    let first: u64 = std::env::var("TASKLEDGER_FAULT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0);
    let dir = tempfile::tempdir_in(taskledger_testkit::fault_disk::scratch_parent()).unwrap();
    let mut total = SimulationReport::default();
    for seed in first..first + SEEDS {
        let options = SimulationOptions {
            seed,
            steps: STEPS_PER_SEED,
            dir: dir.path().join(format!("seed-{seed}")),
        };
        match run(&options) {
            Ok(report) => total.add(&report),
            Err(failure) => panic!(
                "{failure}\nreplay: cargo run --release -p taskledger-bench -- faults --first-seed {seed} --seeds 1 --steps {STEPS_PER_SEED}"
            ),
        }
    }
    eprintln!("{total:#?}");
    // The slice must have met what it is there to meet (else it would check nothing).
    assert!(total.faults.power_losses >= 5, "{total:#?}");
    assert!(total.events_acknowledged > 100, "{total:#?}");
    assert!(total.refusals_checked > 0, "{total:#?}");
    assert!(total.faults.sync_failures > 0, "{total:#?}");
}
