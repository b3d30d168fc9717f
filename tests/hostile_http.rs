//! The schemathesis slice of `bench/hostile-http.sh` (RELIABILITY.md): a real `taskledger serve`
//! with a token per role, and schemathesis (target/venv, from .ci/install/40-reliability.sh)
//! generating requests from `/openapi.json` with each token and with none: no 5xx for any of
//! them. A few examples per operation here; the long run uses 200.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn schemathesis_finds_no_server_error_for_any_role() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let schemathesis = root.join("target/venv/bin/schemathesis");
    // .ci/install/40-reliability.sh installs it; a developer without it is told.
    let missing = (!schemathesis.exists()).then(|| {
        format!(
            "{} is missing (bash .ci/install/40-reliability.sh)",
            schemathesis.display()
        )
    });
    if !taskledger_testkit::runs(
        "schemathesis",
        "schemathesis_finds_no_server_error_for_any_role",
        missing,
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_taskledger"))
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env(
            "TASKLEDGER_TOKENS",
            "rep=reporter,read=reader,op=operator,all=reporter+reader+operator",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let mut failures = Vec::new();
    for token in ["all", "rep", "read", "op", ""] {
        let mut command = Command::new(&schemathesis);
        command
            .current_dir(dir.path())
            // NDJSON for POST /v1/reports (bench/schemathesis_hooks.py).
            .env("PYTHONPATH", root.join("bench"))
            .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
            .arg("run")
            .arg(format!("http://{address}/openapi.json"))
            .args(["--checks", "not_a_server_error", "--max-examples", "5"])
            .args(["--seed", "20", "--no-color"]);
        if !token.is_empty() {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let output = command.output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let summary = text
            .lines()
            .rfind(|l| l.contains("generated"))
            .unwrap_or("")
            .to_owned();
        eprintln!("schemathesis token {token:?}: {summary}");
        if !output.status.success() {
            failures.push(format!("token {token:?}:\n{text}"));
        }
    }
    let alive = serve.try_wait().unwrap().is_none();
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(alive, "serve died under schemathesis");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
