//! Helpers shared by the end-to-end tests: running the binary, fixtures, the random report
//! sequences of the property tests, and the seeded randomness of the crash tests.
// Each test crate uses a different subset of these.
#![allow(dead_code)]

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use taskledger_domain::Report;

/// The workspace's root (these helpers serve the root package's tests and the bench's).
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("fixtures").is_dir())
        .expect("the workspace holds fixtures/")
}

pub fn fixture(name: &str) -> PathBuf {
    workspace().join("fixtures").join(name)
}

/// The `taskledger` binary: cargo's own path in the root package's tests; beside the test's
/// executable's directory (`target/<profile>/`) in the bench's, where `cargo test --workspace`
/// has built it too.
pub fn taskledger_bin() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_taskledger") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("taskledger"))
        .expect("target/<profile>/deps/<test>");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --bin taskledger`, or run `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// The `taskledger` binary on `data_dir`, without the caller's configuration.
pub fn command(data_dir: &Path) -> Command {
    let mut command = Command::new(taskledger_bin());
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("TASKLEDGER_CONFIG")
        .env_remove("TASKLEDGER_STORE")
        .env("USER", "tester");
    command
}

pub fn taskledger(data_dir: &Path, args: &[&str]) -> Output {
    command(data_dir).args(args).output().unwrap()
}

/// A running `taskledger serve`, killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    /// `http://address` it listens on.
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve --listen 127.0.0.1:0` from `command` (the binary on a data directory, with
/// whatever else the test sets) and waits for the address it announces.
pub fn serve(mut command: Command) -> Server {
    use std::io::BufRead;
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the address line, got {line:?}"))
        .to_owned();
    Server {
        child,
        base: format!("http://{address}"),
    }
}

/// The output of a run that must have succeeded.
pub fn ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The JSON printed by a run that must have succeeded.
pub fn ok_json(output: Output) -> serde_json::Value {
    serde_json::from_slice(&ok(output).stdout).unwrap()
}

/// xorshift64*: random kill moments that a failing run can replay from its seed.
pub fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// `TASKLEDGER_CRASH_SEED`, else one from the clock (printed by the caller).
pub fn crash_seed() -> u64 {
    std::env::var("TASKLEDGER_CRASH_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// One random report of a small world: four tasks on two queues, four executions each.
#[derive(Debug, Clone)]
pub struct Step {
    op: u8,
    task: u8,
    execution: u8,
    second: u16,
    category: Option<&'static str>,
}

pub fn step() -> impl Strategy<Value = Step> {
    (
        0u8..6,
        0u8..4,
        0u8..4,
        0u16..3600,
        prop::option::of(prop::sample::select(vec!["transient", "validation"])),
    )
        .prop_map(|(op, task, execution, second, category)| Step {
            op,
            task,
            execution,
            second,
            category,
        })
}

/// Races, duplicates, invalid transitions, manual retries, unknown tasks and reclaims (every
/// fourth claim says `redelivered`) all come out of these few choices; every third enqueue
/// names no maxRetries (the policy's default).
pub fn to_report(step: &Step) -> Report {
    let queue = if step.task.is_multiple_of(2) {
        "alpha"
    } else {
        "beta"
    };
    let task_id = format!("{queue}:{}", step.task);
    let execution_id = format!(
        "00000000-0000-4000-8000-0000000000{}{}",
        step.task, step.execution
    );
    let at = format!(
        "2026-01-21T10:{:02}:{:02}.000Z",
        step.second / 60,
        step.second % 60
    );
    let json = match step.op {
        0 if step.second.is_multiple_of(3) => format!(
            r#"{{"op":"enqueue","taskId":"{task_id}","executionId":"{execution_id}","queue":"{queue}","at":"{at}"}}"#
        ),
        0 => format!(
            r#"{{"op":"enqueue","taskId":"{task_id}","executionId":"{execution_id}","queue":"{queue}","maxRetries":2,"at":"{at}"}}"#
        ),
        1 => format!(
            r#"{{"op":"claim","taskId":"{task_id}","executionId":"{execution_id}","worker":"w{}","at":"{at}"{}}}"#,
            step.second % 3,
            if step.second.is_multiple_of(4) {
                r#","redelivered":true"#
            } else {
                ""
            }
        ),
        2 => format!(
            r#"{{"op":"succeed","taskId":"{task_id}","executionId":"{execution_id}","at":"{at}"}}"#
        ),
        3 => format!(
            r#"{{"op":"fail","taskId":"{task_id}","executionId":"{execution_id}","at":"{at}","error":{{"message":"partner api timeout","category":{}}}}}"#,
            step.category
                .map_or("null".to_owned(), |c| format!("\"{c}\""))
        ),
        4 => format!(
            r#"{{"op":"archive","taskId":"{task_id}","executionId":"{execution_id}","at":"{at}","by":"ops"}}"#
        ),
        _ => format!(
            r#"{{"op":"retry","taskId":"{task_id}","executionId":"{execution_id}","at":"{at}","by":"ops"}}"#
        ),
    };
    Report::from_json(&json).unwrap()
}
