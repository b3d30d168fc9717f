//! Retention end to end: `taskledger retain` moves ended streams into cold segments and every
//! reader still sees every event, byte for byte — `history --json` of every task, `export`,
//! as-of queries, `validate`, `digest`, `verify --digest` (a digest taken before),
//! `rebuild --verify`; a late
//! report to a retained stream is decided on its whole history (a duplicate is recognised, a new
//! execution chains on); the hot store shrinks; `serve` with `[retention]` applies it; a crash at
//! each step of the move (failpoints) leaves a store that reads the same and retains again.

mod common;

use std::path::{Path, PathBuf};

/// A simulated workload (seeded): its reports file.
fn workload(dir: &Path, tasks: usize) -> PathBuf {
    let out = dir.join("sim");
    common::ok(
        common::command(dir)
            .args([
                "simulate",
                "--tasks",
                &tasks.to_string(),
                "--seed",
                "7",
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
    );
    out.join("reports.ndjson")
}

fn ingest(data_dir: &Path, file: &Path) -> serde_json::Value {
    common::ok_json(common::taskledger(
        data_dir,
        &["ingest", file.to_str().unwrap(), "--json"],
    ))
}

/// A data directory that ingested a simulated workload, and what it came from.
struct Recorded {
    dir: tempfile::TempDir,
    /// The workload's reports file.
    reports: PathBuf,
    data: PathBuf,
    /// `ingest --json`'s summary.
    ingested: serde_json::Value,
}

fn recorded(tasks: usize) -> Recorded {
    let dir = tempfile::tempdir().unwrap();
    let reports = workload(dir.path(), tasks);
    let data = dir.path().join("data");
    let ingested = ingest(&data, &reports);
    Recorded {
        dir,
        reports,
        data,
        ingested,
    }
}

/// `taskledger digest`'s output.
fn digest_of(data_dir: &Path) -> String {
    String::from_utf8(common::ok(common::taskledger(data_dir, &["digest"])).stdout).unwrap()
}

fn export(data_dir: &Path, to: &Path) -> Vec<u8> {
    common::ok(common::taskledger(
        data_dir,
        &["export", to.to_str().unwrap()],
    ));
    std::fs::read(to).unwrap()
}

/// Every stream of an export, in first-seen order.
fn streams(export: &[u8]) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(export).lines() {
        let stream = serde_json::from_str::<serde_json::Value>(line).unwrap()["stream"]
            .as_str()
            .unwrap()
            .to_owned();
        if seen.insert(stream.clone()) {
            out.push(stream);
        }
    }
    out
}

/// What the ledger shows, as bytes: every task's `history --json`, one as-of view, the digest.
fn views(data_dir: &Path, tasks: &[String]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for task in tasks {
        let history = common::ok(common::taskledger(data_dir, &["history", task, "--json"]));
        out.push((format!("history {task}"), history.stdout));
    }
    for task in tasks.iter().take(5) {
        let chain = common::ok(common::taskledger(data_dir, &["chain", task, "--json"]));
        out.push((format!("chain {task}"), chain.stdout));
    }
    let as_of = common::ok(common::taskledger(
        data_dir,
        &["stats", "--as-of", "2026-01-21T12:00:00Z", "--json"],
    ));
    out.push(("stats --as-of".into(), as_of.stdout));
    let digest = common::ok(common::taskledger(data_dir, &["digest"]));
    out.push(("digest".into(), digest.stdout));
    out
}

fn assert_same_views(before: &[(String, Vec<u8>)], after: &[(String, Vec<u8>)]) {
    assert_eq!(before.len(), after.len());
    for ((what, old), (_, new)) in before.iter().zip(after) {
        assert!(
            old == new,
            "{what} changed:\n{}\n{}",
            String::from_utf8_lossy(old),
            String::from_utf8_lossy(new)
        );
    }
}

fn retain(data_dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["retain", "--before", "2099-01-01T00:00:00Z", "--json"];
    args.extend_from_slice(extra);
    common::ok_json(common::taskledger(data_dir, &args))
}

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let dir = data_dir.join("events").join("segments");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn checks_pass(data_dir: &Path, digest: &str) {
    let verified = common::ok_json(common::taskledger(
        data_dir,
        &["verify", "--digest", digest, "--json"],
    ));
    assert_eq!(verified["digest"]["prefix"], true, "{verified}");
    common::ok(common::taskledger(data_dir, &["rebuild", "--verify"]));
}

#[test]
fn retained_streams_read_byte_for_byte_as_before() {
    let Recorded {
        dir, reports, data, ..
    } = recorded(150);
    let digest = digest_of(&data);
    let exported = export(&data, &dir.path().join("before.ndjson"));
    let tasks = streams(&exported);
    let before = views(&data, &tasks);
    let legacy = reports.with_file_name("legacy-tasktracker.json");
    let validate = || {
        common::ok(common::taskledger(
            &data,
            &[
                "validate",
                "--legacy",
                legacy.to_str().unwrap(),
                "--min-consistency",
                "0",
                "--json",
            ],
        ))
        .stdout
    };
    let validated = validate();
    // Nothing has ended before the workload started.
    let none = common::ok_json(common::taskledger(
        &data,
        &["retain", "--before", "2000-01-01T00:00:00Z", "--json"],
    ));
    assert_eq!(
        (none["ended"].as_u64(), none["events"].as_u64()),
        (Some(0), Some(0))
    );
    let dry = common::ok_json(common::taskledger(
        &data,
        &[
            "retain",
            "--before",
            "2099-01-01T00:00:00Z",
            "--dry-run",
            "--json",
        ],
    ));
    assert!(segments(&data).is_empty(), "a dry run moves nothing");

    let moved = retain(&data, &[]);
    assert_eq!(moved["ended"], dry["ended"], "{moved}");
    let ended = moved["streams"].as_u64().unwrap();
    assert!(
        ended > 100 && ended < tasks.len() as u64,
        "most tasks ended, some are still running or waiting for a retry: {moved}"
    );
    assert!(moved["events"].as_u64().unwrap() > ended * 3, "{moved}");
    assert_eq!(segments(&data).len(), 1);
    assert_eq!(
        export(&data, &dir.path().join("after.ndjson")),
        exported,
        "the export is byte-identical"
    );
    assert_same_views(&before, &views(&data, &tasks));
    assert!(
        validate() == validated,
        "validate's report is byte-identical"
    );
    checks_pass(&data, digest.trim());
    // Again: nothing left to move.
    let again = retain(&data, &[]);
    assert_eq!(again["events"], 0, "{again}");
}

/// Loosely (sled's fixed overheads and the log's preallocation stay; BENCHMARKS.md has the
/// figures on 100,000 tasks): the hot store after retention and compaction is smaller.
#[test]
fn the_hot_store_shrinks() {
    let Recorded { dir, data, .. } = recorded(3000);
    let exported = export(&data, &dir.path().join("before.ndjson"));
    let moved = retain(&data, &[]);
    let (hot_before, compacted) = (
        moved["hotBytesBefore"].as_u64().unwrap(),
        moved["hotBytesCompacted"].as_u64().unwrap(),
    );
    assert!(compacted < hot_before, "{moved}");
    assert!(
        moved["segmentBytes"].as_u64().unwrap() < hot_before - compacted,
        "{moved}"
    );
    assert_eq!(export(&data, &dir.path().join("after.ndjson")), exported);
}

#[test]
fn a_late_report_to_a_retained_stream_is_decided_on_its_whole_history() {
    let Recorded {
        dir,
        reports,
        data,
        ingested: first,
        ..
    } = recorded(60);
    let moved = retain(&data, &["--no-compact"]);
    assert!(moved["streams"].as_u64().unwrap() > 30, "{moved}");
    // The same reports again: every one a duplicate, decided from the cold streams.
    let again = ingest(&data, &reports);
    assert_eq!(again["reports"], first["reports"], "{again}");
    assert_eq!(again["accepted"], 0, "{again}");
    assert_eq!(again["eventsAppended"], 0, "{again}");
    // A new execution of a retained (completed) task chains on from its cold history.
    let exported = export(&data, &dir.path().join("before.ndjson"));
    let task = String::from_utf8_lossy(&exported)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|event| event["type"] == "ExecutionSucceeded")
        .map(|event| event["stream"].as_str().unwrap().to_owned())
        .unwrap();
    let history_before: serde_json::Value =
        common::ok_json(common::taskledger(&data, &["history", &task, "--json"]));
    let length = history_before.as_array().unwrap().len();
    let status: serde_json::Value =
        common::ok_json(common::taskledger(&data, &["task", &task, "--json"]));
    assert_eq!(status["status"], "completed", "{status}");
    let late = dir.path().join("late.ndjson");
    let execution = "7d8f6a3e-0000-4000-8000-00000000c01d";
    std::fs::write(
        &late,
        format!(
            "{{\"op\":\"enqueue\",\"taskId\":{task:?},\"executionId\":\"{execution}\",\"queue\":\"partner_tasks\",\"at\":\"2026-06-01T00:00:00Z\"}}\n\
             {{\"op\":\"enqueue\",\"taskId\":{task:?},\"executionId\":\"{execution}\",\"queue\":\"partner_tasks\",\"at\":\"2026-06-01T00:00:00Z\"}}\n"
        ),
    )
    .unwrap();
    let outcome = ingest(&data, &late);
    assert_eq!(
        outcome["accepted"], 1,
        "the second is a duplicate: {outcome}"
    );
    assert_eq!(outcome["duplicatesIgnored"], 1, "{outcome}");
    let history: serde_json::Value =
        common::ok_json(common::taskledger(&data, &["history", &task, "--json"]));
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), length + 1);
    assert_eq!(
        &history[..length],
        history_before.as_array().unwrap().as_slice()
    );
    assert_eq!(history[length]["version"], length as u64);
    assert_eq!(history[length]["type"], "ExecutionEnqueued");
    // The chain verifies across the cold part and the hot event after it; the models agree.
    common::ok(common::taskledger(&data, &["verify"]));
    common::ok(common::taskledger(&data, &["rebuild", "--verify"]));
    let status: serde_json::Value =
        common::ok_json(common::taskledger(&data, &["task", &task, "--json"]));
    assert_eq!(status["status"], "queued", "{status}");
    // Its new execution is queued, not ended: it stays where it is.
    let second = retain(&data, &[]);
    assert_eq!(
        second["events"], 0,
        "a queued execution has not ended: {second}"
    );
}

#[test]
fn serve_applies_the_configured_retention() {
    let Recorded { dir, data, .. } = recorded(80);
    let exported = export(&data, &dir.path().join("before.ndjson"));
    let tasks = streams(&exported);
    let before = views(&data, &tasks[..10]);
    let config = dir.path().join("taskledger.toml");
    std::fs::write(&config, "[retention]\nage_ms = 0\ninterval_ms = 1000\n").unwrap();
    let mut command = common::command(&data);
    command.arg("--config").arg(&config);
    let server = common::serve(command);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while segments(&data).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "serve wrote no cold segment within a minute"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Served from the cold segment while serve runs: the same history.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let served = runtime.block_on(async {
        reqwest::get(format!("{}/v1/tasks/{}/history", server.base, tasks[0]))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    let cli: serde_json::Value = serde_json::from_slice(&before[0].1).unwrap();
    assert_eq!(served, cli);
    drop(server); // SIGKILL: the next commands open the store as a crash left it
    assert_eq!(export(&data, &dir.path().join("after.ndjson")), exported);
    assert_same_views(&before, &views(&data, &tasks[..10]));
}

#[test]
fn a_crash_at_any_step_of_the_move_leaves_the_ledger_whole() {
    let Recorded { dir, data, .. } = recorded(60);
    let digest = digest_of(&data);
    let exported = export(&data, &dir.path().join("before.ndjson"));
    let tasks = streams(&exported);
    let before = views(&data, &tasks[..10]);
    for failpoint in [
        "retain-before-batch",
        "retain-after-batch",
        "compact-before-swap",
    ] {
        let crashed = common::command(&data)
            .args(["retain", "--before", "2099-01-01T00:00:00Z"])
            .env("TASKLEDGER_FAILPOINT", failpoint)
            .output()
            .unwrap();
        assert!(
            !crashed.status.success(),
            "{failpoint}: the failpoint stops it"
        );
        assert_eq!(
            export(&data, &dir.path().join("after.ndjson")),
            exported,
            "after a crash at {failpoint}"
        );
        assert_same_views(&before, &views(&data, &tasks[..10]));
        checks_pass(&data, digest.trim());
    }
    // The segment the first crash left is ignored (nothing referred to it), and a retention
    // run after the crashes completes.
    retain(&data, &[]);
    assert_eq!(export(&data, &dir.path().join("final.ndjson")), exported);
    assert_same_views(&before, &views(&data, &tasks[..10]));
    checks_pass(&data, digest.trim());
}

#[test]
fn bit_rot_in_a_segment_is_reported_naming_the_file() {
    let Recorded {
        dir: _dir, data, ..
    } = recorded(40);
    retain(&data, &[]);
    let segment = segments(&data).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[100] ^= 0x04;
    std::fs::write(&segment, &bytes).unwrap();
    for args in [&["verify"][..], &["export", "/dev/null"][..]] {
        let output = common::taskledger(&data, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&segment.display().to_string()) && stderr.contains("checksum"),
            "{args:?}: {stderr}"
        );
    }
}
