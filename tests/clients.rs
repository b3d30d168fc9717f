//! The worker clients' own suites, run against this build's binary: the Python client with its
//! Celery and TaskiQ integrations (pytest in `target/venv`, real `redis-server`, real workers)
//! and the Node client (`node --test`). Each suite starts its own servers on free loopback ports.
//!
//! A suite whose tools are missing is skipped, saying exactly what is missing
//! (`.ci/install/00-apt.sh` installs redis-server, `.ci/install/20-clients.sh` the virtualenv).
//! A suite that fails fails this test.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

/// A suite that cannot run here: skipped saying why, or a failure when `TASKLEDGER_REQUIRE`
/// names `clients` (CI).
fn skip(suite: &str, why: &str) {
    taskledger_testkit::runs("clients", suite, Some(why.to_owned()));
}

fn run(suite: &str, command: &mut Command) {
    let binary = Path::new(env!("CARGO_BIN_EXE_taskledger"));
    let status = command
        .current_dir(repo())
        .env("TASKLEDGER_BIN", binary)
        .env_remove("TASKLEDGER_URL")
        .env_remove("TASKLEDGER_TOKEN")
        .env_remove("TASKLEDGER_TOKENS")
        .status()
        .unwrap_or_else(|error| panic!("{suite}: could not start {command:?}: {error}"));
    assert!(status.success(), "{suite} failed ({status}): {command:?}");
}

#[test]
fn python_client_celery_and_taskiq_against_real_workers() {
    let python = repo().join("target/venv/bin/python");
    if !python.is_file() {
        return skip(
            "python client suite",
            &format!(
                "{} is missing (run .ci/install/20-clients.sh)",
                python.display()
            ),
        );
    }
    if on_path("redis-server").is_none() {
        return skip(
            "python client suite",
            "redis-server is not on PATH (run .ci/install/00-apt.sh)",
        );
    }
    // The client is ruff-clean (lint and format), as the house style asks of the Rust side.
    run(
        "ruff check",
        Command::new(&python).args(["-m", "ruff", "check", "clients/python", "clients/bench"]),
    );
    run(
        "ruff format --check",
        Command::new(&python).args([
            "-m",
            "ruff",
            "format",
            "--check",
            "clients/python",
            "clients/bench",
        ]),
    );
    run(
        "python client suite",
        Command::new(&python).args([
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rsx",
            "clients/python/tests",
        ]),
    );
}

#[test]
fn node_client_against_a_real_ledger() {
    let Some(node) = on_path("node") else {
        return skip(
            "node client suite",
            "node is not on PATH (Node >= 20 is needed)",
        );
    };
    run(
        "node client suite",
        Command::new(node).args(["--test", "clients/node/test/"]),
    );
}
