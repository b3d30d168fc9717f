//! Crash safety of the projection runner: the runner (a read command catching the models up, and
//! `rebuild`) is killed with SIGKILL at random points, many checkpoints in. After each restart the
//! models resume from their checkpoint; at the end every model equals a full rebuild (digests).

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{next, ok};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use taskledger_projections::{runner::read_checkpoint, RedbKv};

fn taskledger(data_dir: &Path) -> Command {
    let mut command = common::command(data_dir);
    command.env("TASKLEDGER_PROJECTION_CHUNK_EVENTS", "100");
    command
}

fn kill_after(mut command: Command, delay: Duration) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill(); // SIGKILL (it may have finished already)
    child.wait().unwrap();
}

fn checkpoint(data_dir: &Path) -> u64 {
    let models = RedbKv::open(&data_dir.join("models"), 1 << 20).unwrap();
    read_checkpoint(&models).unwrap()
}

#[test]
fn killed_projections_resume_and_equal_a_rebuild() {
    let seed = common::crash_seed();
    eprintln!("TASKLEDGER_CRASH_SEED={seed}");
    let mut state = seed;
    let dir = tempfile::tempdir().unwrap();
    let workload = dir.path().join("workload.ndjson");
    ok(Command::new(env!("CARGO_BIN_EXE_taskledger-bench"))
        .args(["workload", "--reports", "12000", "--streams", "16", "--out"])
        .arg(&workload)
        .output()
        .unwrap());
    let data = dir.path().join("data");
    let output = ok(taskledger(&data)
        .args(["ingest", "--json"])
        .arg(&workload)
        .output()
        .unwrap());
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let head = summary["eventsAppended"].as_u64().unwrap();
    // How long a whole catch-up from nothing takes here (process start included): kills are
    // spread over that span, so they land mid-way on a fast machine (or a release build) too.
    std::fs::remove_dir_all(data.join("models")).unwrap();
    let started = std::time::Instant::now();
    ok(taskledger(&data)
        .args(["stats", "--json"])
        .output()
        .unwrap());
    let span_ms = u64::try_from(started.elapsed().as_millis()).unwrap().max(2);
    eprintln!("a whole catch-up took {span_ms} ms");
    // Start the models over, then let a reader catch them up and kill it, again and again.
    std::fs::remove_dir_all(data.join("models")).unwrap();
    let mut mid_way = 0;
    let mut previous = 0;
    for trial in 0..12 {
        let delay = Duration::from_millis(next(&mut state) % span_ms);
        let mut command = taskledger(&data);
        command.args(["stats", "--json"]);
        kill_after(command, delay);
        let reached = checkpoint(&data);
        eprintln!("catch-up trial {trial}: killed after {delay:?} at checkpoint {reached}/{head}");
        assert!(reached >= previous, "the checkpoint went backwards");
        previous = reached;
        if reached > 0 && reached < head {
            mid_way += 1;
        }
        if reached == head {
            // Caught up: start over, so later kills land mid-way too.
            std::fs::remove_dir_all(data.join("models")).unwrap();
            previous = 0;
        }
    }
    assert!(
        mid_way >= 1,
        "no kill landed in the middle of a catch-up; the test proved nothing"
    );
    // Kill rebuilds too: the live models stay whole (the rebuild swaps in a complete set).
    for trial in 0..6 {
        let delay = Duration::from_millis(next(&mut state) % 500);
        let mut command = taskledger(&data);
        command.arg("rebuild");
        kill_after(command, delay);
        eprintln!("rebuild trial {trial}: killed after {delay:?}");
    }
    let output = taskledger(&data)
        .args(["rebuild", "--verify", "--json"])
        .output()
        .unwrap();
    let verification: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        verification["differing"],
        serde_json::json!([]),
        "seed {seed}"
    );
    assert_eq!(verification["position"], head);
    assert!(output.status.success());
}
