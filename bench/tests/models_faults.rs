//! The read models' storage-fault simulation's fast slice (the long run: `bench/faults.sh
//! --models`): a few seeds of the projection runner keeping redb models on a disk that tears,
//! drops and fails writes, fails syncs and reads, fills up and loses power; every entry of the
//! models compared with a rebuild after every step.

use std::process::Command;

/// Seeds of the fast slice, steps per seed and the ledger's tasks: a few seconds in all.
const SEEDS: &str = "6";
const STEPS_PER_SEED: &str = "80";
const TASKS: &str = "300";

#[test]
fn the_models_survive_every_injected_fault_equal_to_a_rebuild() {
    let first = std::env::var("TASKLEDGER_FAULT_SEED").unwrap_or_else(|_| "0".into());
    let dir = tempfile::tempdir().unwrap();
    let figures_file = dir.path().join("figures.json");
    let output = Command::new(env!("CARGO_BIN_EXE_taskledger-bench"))
        .args(["models-faults", "--seeds", SEEDS, "--steps", STEPS_PER_SEED])
        .args(["--tasks", TASKS, "--first-seed", &first, "--json"])
        .arg(&figures_file)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&figures_file).unwrap()).unwrap();
    eprintln!("{figures:#}");
    // The slice must have met what it is there to meet (else it would check nothing).
    let at_least = |path: &str, minimum: u64| {
        let value = figures.pointer(path).and_then(|v| v.as_u64()).unwrap_or(0);
        assert!(
            value >= minimum,
            "{path} = {value} < {minimum}: {figures:#}"
        );
    };
    at_least("/faults/powerLosses", 20);
    at_least("/faults/syncFailures", 2);
    at_least("/faults/writeFailures", 2);
    at_least("/faults/readFailures", 2);
    at_least("/catchUpsAcknowledged", 50);
    at_least("/recoveriesStartedOver", 1);
    at_least("/acknowledgedCheckpointsConfirmedAfterPowerLoss", 10);
    at_least("/entriesChecked", 10_000);
}
