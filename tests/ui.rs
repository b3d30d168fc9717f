//! The web UI in a real browser: starts `taskledger serve` on a fresh data directory holding two
//! fixtures, with bearer tokens, and runs `serve/ui-tests/ui.test.mjs` (node's test runner,
//! playwright-core driving Debian's headless Chromium): sign-in, search, a task's chain and
//! timeline, the as-of control, DLQ filters and paging, archive (confirmed) and retry with their
//! outcomes and new events, keyboard-only navigation, CSRF refusals, queues/stuck/due, dark mode.
//! Screenshots land in `target/ui-screenshots/`.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM`), `node`, and `serve/ui-tests/node_modules`
//! (`.ci/install/00-apt.sh` and `30-ui.sh` install them). Without them the test says why and
//! passes — except under CI (`CI` set), where a missing piece fails it.

mod common;

use common::Server;

use std::path::{Path, PathBuf};
use std::process::Command;

const TOKENS: &str = "ui-reader=reader,ui-ops=operator+reader,ui-rep=reporter";

fn start(data_dir: &Path) -> Server {
    let mut command = common::command(data_dir);
    command.env("TASKLEDGER_TOKENS", TOKENS);
    common::serve(command)
}

/// What the browser tests need, or why they cannot run here.
fn prerequisites() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "{} is missing (run .ci/install/00-apt.sh)",
            chromium.display()
        ));
    }
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        return Err("node is missing (run .ci/install/30-ui.sh)".into());
    }
    let tests = common::workspace().join("serve/ui-tests");
    if !tests
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Err(format!(
            "{}/node_modules has no playwright-core (run .ci/install/30-ui.sh)",
            tests.display()
        ));
    }
    Ok((chromium, tests))
}

#[test]
fn the_ui_in_headless_chromium() {
    let (chromium, tests) = match prerequisites() {
        Ok(found) => found,
        Err(why) => {
            // CI (`CI` set, or TASKLEDGER_REQUIRE naming `ui`) must run them.
            let why = if std::env::var_os("CI").is_some() {
                panic!("the browser tests cannot run under CI: {why}")
            } else {
                why
            };
            taskledger_testkit::runs("ui", "the_ui_in_headless_chromium", Some(why));
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for fixture in ["partner_pipeline.ndjson", "ui_dlq.ndjson"] {
        let output = common::taskledger(
            &data,
            &["ingest", common::fixture(fixture).to_str().unwrap()],
        );
        assert!(output.status.success(), "ingest {fixture}: {output:?}");
    }
    let server = start(&data);
    let screenshots = common::workspace().join("target/ui-screenshots");
    let output = Command::new("node")
        .args(["--test", "--test-concurrency=1", "ui.test.mjs"])
        .current_dir(&tests)
        .env("TASKLEDGER_UI_BASE", &server.base)
        .env("TASKLEDGER_UI_OPERATOR_TOKEN", "ui-ops")
        .env("TASKLEDGER_UI_READER_TOKEN", "ui-reader")
        .env("TASKLEDGER_UI_SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "the browser tests failed ({}); their output is above",
        output.status
    );
    // The runner's own count, so a run that ran nothing cannot pass.
    assert!(
        stdout.contains("# pass 8") && stdout.contains("# fail 0"),
        "expected 8 passing browser tests:\n{stdout}"
    );
    for page in [
        "login",
        "search",
        "task",
        "task-as-of",
        "dlq",
        "dlq-keyboard",
        "queues",
        "stuck",
        "due",
    ] {
        assert!(
            screenshots.join(format!("{page}.png")).exists(),
            "screenshot {page}.png"
        );
    }
}
