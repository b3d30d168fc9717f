//! End-to-end tests of the `taskledger` binary: ingest (strict, skip-invalid, stdin, idempotent
//! re-ingest), the task/chain/history queries and their JSON shapes, `--as-of`, determinism.

mod common;

use common::{fixture, ok_json, taskledger};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

const TASK: &str = "partner_tasks:SATLOC:695d:02220710";

fn ingest_fixture(data_dir: &Path) -> Value {
    ok_json(taskledger(
        data_dir,
        &[
            "ingest",
            fixture("partner_pipeline.ndjson").to_str().unwrap(),
            "--json",
        ],
    ))
}

#[test]
fn ingest_summarises_in_the_spec_shape_and_reingest_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = ingest_fixture(dir.path());
    assert_eq!(first["reports"], 25);
    assert_eq!(first["accepted"], 21);
    assert_eq!(
        first["rejected"],
        serde_json::json!({"duplicateEnqueue":1,"notClaimable":1,"unknownExecution":1,"invalidTransition":0})
    );
    assert_eq!(first["duplicatesIgnored"], 1);
    assert_eq!(first["invalid"], 0);
    let history_before = ok_json(taskledger(dir.path(), &["history", TASK, "--json"]));
    let second = ingest_fixture(dir.path());
    assert_eq!(second["accepted"], 0);
    assert_eq!(second["duplicatesIgnored"], 25);
    assert_eq!(second["eventsAppended"], 0);
    let history_after = ok_json(taskledger(dir.path(), &["history", TASK, "--json"]));
    assert_eq!(history_before, history_after);
}

#[test]
fn strict_ingest_names_every_bad_line_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.ndjson");
    let good = std::fs::read_to_string(fixture("partner_pipeline.ndjson")).unwrap();
    let mut lines: Vec<&str> = good.lines().take(4).collect();
    lines.insert(1, r#"{"op":"claim","taskId":"q:1","executionId":"00000000-0000-4000-8000-000000000001","worker":"w","at":"yesterday"}"#);
    lines.insert(3, "{not json");
    lines.push(r#"{"op":"fail","taskId":"q:1","executionId":"00000000-0000-4000-8000-000000000001","at":"2026-01-21T10:00:00Z","error":{"message":7}}"#);
    std::fs::write(&input, lines.join("\n")).unwrap();
    let data = dir.path().join("data");
    let output = taskledger(&data, &["ingest", input.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.ndjson:2: field `at`"), "{stderr}");
    assert!(stderr.contains("bad.ndjson:4: not valid JSON"), "{stderr}");
    assert!(
        stderr.contains("bad.ndjson:7: field `error.message`"),
        "{stderr}"
    );
    assert!(stderr.contains("3 malformed line(s)"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Nothing was appended: the good first line's task is unknown.
    assert_eq!(taskledger(&data, &["task", TASK]).status.code(), Some(1));

    // --skip-invalid appends the good lines and writes the bad ones, as read, to --rejects.
    let rejects = dir.path().join("rejects.ndjson");
    let summary = ok_json(taskledger(
        &data,
        &[
            "ingest",
            input.to_str().unwrap(),
            "--skip-invalid",
            "--rejects",
            rejects.to_str().unwrap(),
            "--json",
        ],
    ));
    assert_eq!(summary["invalid"], 3);
    assert_eq!(summary["reports"], 4);
    let rejected = std::fs::read_to_string(&rejects).unwrap();
    assert_eq!(rejected.lines().count(), 3);
    assert!(rejected.contains("{not json"));
    assert_eq!(taskledger(&data, &["task", TASK]).status.code(), Some(0));
}

#[test]
fn ingest_reads_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskledger"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["ingest", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = std::fs::read(fixture("partner_pipeline.ndjson")).unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &input).unwrap();
    let summary = ok_json(child.wait_with_output().unwrap());
    assert_eq!(summary["accepted"], 21);
}

#[test]
fn task_chain_and_history_have_the_spec_shapes() {
    let dir = tempfile::tempdir().unwrap();
    ingest_fixture(dir.path());
    let task = ok_json(taskledger(dir.path(), &["task", TASK, "--json"]));
    assert_eq!(task["taskId"], TASK);
    assert_eq!(task["status"], "completed");
    assert_eq!(task["executionId"], "0b6f0000-0000-4000-8000-000000000003");
    assert_eq!(task["executions"], 2);
    assert_eq!(task["retryCount"], 0);
    assert_eq!(task["lastError"], Value::Null);
    assert_eq!(
        task["flags"],
        serde_json::json!(["manualRetry", "rejectedReports"])
    );

    let chain = ok_json(taskledger(dir.path(), &["chain", TASK, "--json"]));
    let executions = chain["executions"].as_array().unwrap();
    assert_eq!(executions.len(), 2);
    let first = &executions[0];
    assert_eq!(first["status"], "archived");
    assert_eq!(first["retryCount"], 3);
    assert_eq!(first["maxRetries"], 2);
    assert_eq!(first["enqueuedAt"], "2026-01-21T10:00:00.000Z");
    let attempts = first["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["worker"], "sync-1");
    assert_eq!(attempts[0]["claimedAt"], "2026-01-21T10:00:02.000Z");
    assert_eq!(attempts[0]["outcome"], "failed");
    assert_eq!(attempts[0]["endedAt"], "2026-01-21T10:00:09.412Z");
    assert_eq!(attempts[0]["error"]["category"], "partner_api");
    assert_eq!(attempts[2]["outcome"], "dlq");
    assert_eq!(executions[1]["attempts"][0]["outcome"], "completed");

    let history = ok_json(taskledger(dir.path(), &["history", TASK, "--json"]));
    let events = history.as_array().unwrap();
    for (version, event) in events.iter().enumerate() {
        for field in [
            "position",
            "version",
            "eventId",
            "type",
            "recordedAt",
            "data",
        ] {
            assert!(event.get(field).is_some(), "{field} missing in {event}");
        }
        assert_eq!(event["version"], version);
    }
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.iter().filter(|t| **t == "ReportRejected").count(), 2);
    assert_eq!(types.iter().filter(|t| **t == "ExecutionFailed").count(), 3);

    // Human output is a table, not JSON.
    let human = taskledger(dir.path(), &["chain", TASK]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("manual retry by ops@acme"));
}

#[test]
fn as_of_shows_the_task_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    ingest_fixture(dir.path());
    // After the first failure, before the redelivery.
    let task = ok_json(taskledger(
        dir.path(),
        &["task", TASK, "--json", "--as-of", "2026-01-21T10:00:30Z"],
    ));
    assert_eq!(task["status"], "failed");
    assert_eq!(task["retryCount"], 1);
    assert_eq!(task["executions"], 1);
    assert_eq!(
        task["lastError"]["message"],
        "ETIMEDOUT calling partner api"
    );
    // In the DLQ, before the operator's retry.
    let chain = ok_json(taskledger(
        dir.path(),
        &["chain", TASK, "--json", "--as-of", "2026-01-21T11:00:00Z"],
    ));
    assert_eq!(chain["executions"].as_array().unwrap().len(), 1);
    assert_eq!(chain["executions"][0]["status"], "dlq");
    let history = ok_json(taskledger(
        dir.path(),
        &["history", TASK, "--json", "--as-of", "2026-01-21T10:00:02Z"],
    ));
    // enqueue 10:00:00, claim 10:00:02 (the duplicate enqueue at 10:01:30 is later).
    assert_eq!(history.as_array().unwrap().len(), 2);
    // Before the task existed: not found, exit 1.
    let before = taskledger(
        dir.path(),
        &["task", TASK, "--as-of", "2026-01-20T00:00:00Z"],
    );
    assert_eq!(before.status.code(), Some(1));
    let bad = taskledger(dir.path(), &["task", TASK, "--as-of", "noon"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--as-of"));
}

#[test]
fn the_same_reports_give_the_same_events_in_two_data_directories() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    ingest_fixture(a.path());
    ingest_fixture(b.path());
    for task in [
        TASK,
        "partner_tasks:SATLOC:7a1c:02230001",
        "partner_tasks:SATLOC:0000:00000000",
    ] {
        let strip = |mut history: Value| {
            for event in history.as_array_mut().unwrap() {
                event.as_object_mut().unwrap().remove("recordedAt");
            }
            history
        };
        let left = strip(ok_json(taskledger(a.path(), &["history", task, "--json"])));
        let right = strip(ok_json(taskledger(b.path(), &["history", task, "--json"])));
        assert_eq!(left, right, "{task}");
        let left = ok_json(taskledger(a.path(), &["chain", task, "--json"]));
        let right = ok_json(taskledger(b.path(), &["chain", task, "--json"]));
        assert_eq!(left, right, "{task}");
    }
}

#[test]
fn a_bad_configuration_is_refused_with_its_setting() {
    let cases = [
        (
            "[policy]\n[[policy.classifier]]\ncategory = \"x\"\nregex = \"(\"\n",
            "classifier[0].regex",
        ),
        (
            "[store]\nwal_checkpoint_bytes = 4096\n",
            "store.wal_checkpoint_bytes = 4096 is outside",
        ),
        (
            "[store]\ncommit_events_max = 0\n",
            "store.commit_events_max = 0 is outside",
        ),
        (
            "[store]\ncache_capacity_bytes = 1\n",
            "store.cache_capacity_bytes = 1 is outside",
        ),
        (
            "[store]\nstream_heads_cached_max = 0\n",
            "store.stream_heads_cached_max = 0 is outside",
        ),
        (
            "[models]\ncache_capacity_bytes = 1\n",
            "models.cache_capacity_bytes = 1 is outside",
        ),
        (
            "[ledger]\ntask_states_cached_max = 0\n",
            "ledger.task_states_cached_max = 0 is outside",
        ),
        ("[store]\nwal_bytes = 1\n", "unknown field `wal_bytes`"),
        (
            "[server]\nbody_bytes_max = 0\n",
            "server.body_bytes_max = 0 is outside",
        ),
        (
            "[server]\nbatch_reports_max = 1000000\n",
            "server.batch_reports_max = 1000000 is outside",
        ),
    ];
    for (text, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("taskledger.toml");
        std::fs::write(&config, text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_taskledger"))
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--config")
            .arg(&config)
            .args(["task", TASK])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(
            !dir.path().join("events").exists(),
            "{text}: nothing is created before the configuration is checked"
        );
    }
}

#[test]
fn the_example_configuration_loads_and_applies() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_taskledger"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--config")
        .arg(fixture("config.example.toml"))
        .args([
            "ingest",
            fixture("partner_pipeline.ndjson").to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    let summary = ok_json(output);
    assert_eq!(summary["reports"], 25);
}

/// An empty, duplicate or badly named token refuses the start: exit 2, naming the setting.
#[test]
fn serve_refuses_empty_or_duplicate_tokens_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    for (tokens, named) in [
        (", =reader", "TASKLEDGER_TOKENS entry 1"),
        ("a=reader, =operator", "TASKLEDGER_TOKENS entry 2"),
        ("a=reader,a=operator", "TASKLEDGER_TOKENS entry 2"),
        ("w1:s1=reporter,w2:s1=reporter", "TASKLEDGER_TOKENS entry 2"),
    ] {
        let output = common::command(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("TASKLEDGER_TOKENS", tokens)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{tokens:?}: {stderr}");
        assert!(stderr.contains(named), "{tokens:?}: {stderr}");
    }
}

/// The CLI records `local:<OS user>` as the principal of every event it appends (SPEC
/// section 3), and a report's own text cannot name another.
#[test]
fn the_cli_records_its_local_principal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let reports = dir.path().join("r.ndjson");
    std::fs::write(
        &reports,
        r#"{"op":"enqueue","taskId":"q:1","executionId":"00000000-0000-4000-8000-000000000001","at":"2026-01-21T10:00:00Z","principal":"ops"}
"#,
    )
    .unwrap();
    common::ok(common::taskledger(
        &data,
        &["ingest", reports.to_str().unwrap()],
    ));
    let history = common::ok_json(common::taskledger(&data, &["history", "q:1", "--json"]));
    let principal = history[0]["data"]["principal"].as_str().unwrap().to_owned();
    assert!(principal.starts_with("local:"), "{principal}");
    assert_ne!(principal, "local:", "the OS user is named");
}
