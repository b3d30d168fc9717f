//! The read-model commands end to end: dlq / stats / stuck / due shapes, operator archive and
//! retry, rebuild --verify (and that it names a model that differs), determinism across data
//! directories, and export → import.

mod common;

use common::{fixture, ok_json as json, taskledger};
use serde_json::Value;
use std::path::Path;

const TASK: &str = "partner_tasks:SATLOC:695d:02220710";

fn ingested() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    json(taskledger(
        dir.path(),
        &[
            "ingest",
            fixture("partner_pipeline.ndjson").to_str().unwrap(),
            "--json",
        ],
    ));
    dir
}

fn live_digests(dir: &Path) -> Value {
    let verification = json(taskledger(dir, &["rebuild", "--verify", "--json"]));
    assert_eq!(verification["differing"], serde_json::json!([]));
    let mut digests = serde_json::Map::new();
    for model in verification["models"].as_array().unwrap() {
        digests.insert(
            model["model"].as_str().unwrap().to_owned(),
            model["live"].clone(),
        );
    }
    Value::Object(digests)
}

#[test]
fn dlq_stats_stuck_and_due_have_the_spec_shapes() {
    let dir = ingested();
    // As of 11:00 two executions sat in the DLQ (both were archived later).
    let page = json(taskledger(
        dir.path(),
        &[
            "dlq",
            "--json",
            "--as-of",
            "2026-01-21T11:00:00Z",
            "--limit",
            "1",
        ],
    ));
    let item = &page["items"][0];
    for field in [
        "taskId",
        "executionId",
        "queue",
        "errorCategory",
        "errorMessage",
        "failedAt",
        "retryCount",
    ] {
        assert!(item.get(field).is_some(), "{field} missing in {item}");
    }
    let next = page["next"].as_str().expect("a second page").to_owned();
    let second = json(taskledger(
        dir.path(),
        &[
            "dlq",
            "--json",
            "--as-of",
            "2026-01-21T11:00:00Z",
            "--limit",
            "1",
            "--cursor",
            &next,
        ],
    ));
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_ne!(second["items"][0]["executionId"], item["executionId"]);
    assert_eq!(second["next"], Value::Null);
    // Filters.
    let validation = json(taskledger(
        dir.path(),
        &[
            "dlq",
            "--json",
            "--as-of",
            "2026-01-21T11:00:00Z",
            "--category",
            "validation",
        ],
    ));
    assert_eq!(validation["items"].as_array().unwrap().len(), 1);
    assert_eq!(validation["items"][0]["taskId"], TASK);
    let none = json(taskledger(
        dir.path(),
        &["dlq", "--json", "--queue", "other"],
    ));
    assert_eq!(none["items"], serde_json::json!([]));
    let archived = json(taskledger(dir.path(), &["dlq", "--archived", "--json"]));
    assert_eq!(archived["items"].as_array().unwrap().len(), 2);
    // A cursor from elsewhere is bad input.
    assert_eq!(
        taskledger(dir.path(), &["dlq", "--cursor", "zz"])
            .status
            .code(),
        Some(2)
    );

    let stats = json(taskledger(dir.path(), &["stats", "--json"]));
    let queue = &stats["queues"]["partner_tasks"];
    for (field, expected) in [
        ("queued", 0),
        ("processing", 1),
        ("completed", 3),
        ("failed", 0),
        ("dlq", 0),
        ("archived", 2),
    ] {
        assert_eq!(queue[field], expected, "{field}");
    }
    assert_eq!(queue["rejected"]["duplicateEnqueue"], 1);
    assert_eq!(queue["failuresByCategory"]["partner_api"], 1);

    let stuck = json(taskledger(
        dir.path(),
        &["stuck", "--json", "--at", "2026-01-21T12:00:00Z"],
    ));
    assert_eq!(stuck["items"].as_array().unwrap().len(), 1);
    assert_eq!(stuck["items"][0]["worker"], "sync-2");
    let not_yet = json(taskledger(
        dir.path(),
        &["stuck", "--json", "--at", "2026-01-21T10:20:00Z"],
    ));
    assert_eq!(not_yet["items"], serde_json::json!([]));
    let shorter = json(taskledger(
        dir.path(),
        &[
            "stuck",
            "--json",
            "--at",
            "2026-01-21T10:20:00Z",
            "--older-than",
            "10m",
        ],
    ));
    assert_eq!(shorter["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        taskledger(dir.path(), &["stuck", "--older-than", "soon"])
            .status
            .code(),
        Some(2)
    );

    // The first failure (10:00:09.412) scheduled its retry one minute later.
    let due = json(taskledger(
        dir.path(),
        &["due", "--json", "--as-of", "2026-01-21T10:01:09.500Z"],
    ));
    assert_eq!(due["items"].as_array().unwrap().len(), 1);
    assert_eq!(due["items"][0]["nextRetryAt"], "2026-01-21T10:01:09.412Z");
    let early = json(taskledger(
        dir.path(),
        &["due", "--json", "--as-of", "2026-01-21T10:01:00Z"],
    ));
    assert_eq!(early["items"], serde_json::json!([]));
}

#[test]
fn operators_archive_and_retry_through_the_same_rules() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("dead.ndjson");
    std::fs::write(
        &input,
        concat!(
            r#"{"op":"enqueue","taskId":"q:dead","executionId":"00000000-0000-4000-8000-000000000001","queue":"q","maxRetries":0,"at":"2026-01-21T10:00:00Z"}"#, "\n",
            r#"{"op":"claim","taskId":"q:dead","executionId":"00000000-0000-4000-8000-000000000001","worker":"w","at":"2026-01-21T10:00:01Z"}"#, "\n",
            r#"{"op":"fail","taskId":"q:dead","executionId":"00000000-0000-4000-8000-000000000001","at":"2026-01-21T10:00:02Z","error":{"message":"boom"}}"#, "\n",
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    json(taskledger(
        &data,
        &["ingest", input.to_str().unwrap(), "--json"],
    ));
    assert_eq!(
        json(taskledger(&data, &["dlq", "--json"]))["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let retried = json(taskledger(
        &data,
        &[
            "retry",
            "q:dead",
            "--execution-id",
            "00000000-0000-4000-8000-000000000002",
            "--reason",
            "fixed",
            "--at",
            "2026-01-21T11:00:00Z",
            "--json",
        ],
    ));
    assert_eq!(retried["outcome"]["outcome"], "accepted");
    assert_eq!(retried["eventIds"].as_array().unwrap().len(), 2);
    let chain = json(taskledger(&data, &["chain", "q:dead", "--json"]));
    assert_eq!(chain["executions"][0]["status"], "archived");
    assert_eq!(
        chain["executions"][0]["archivedReason"],
        "Manual retry initiated"
    );
    assert_eq!(chain["executions"][0]["archivedBy"], "tester");
    assert_eq!(chain["executions"][1]["status"], "queued");
    assert_eq!(chain["executions"][1]["manualRetry"]["reason"], "fixed");
    assert_eq!(
        json(taskledger(&data, &["dlq", "--json"]))["items"],
        serde_json::json!([])
    );
    // A second retry while the new execution is queued is rejected (exit 1), and recorded.
    let again = taskledger(&data, &["retry", "q:dead", "--json"]);
    assert_eq!(again.status.code(), Some(1));
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["outcome"]["reason"], "duplicateEnqueue");
    // Archiving a queued execution is an invalid transition.
    let archive = taskledger(
        &data,
        &[
            "archive",
            "q:dead",
            "00000000-0000-4000-8000-000000000002",
            "--reason",
            "no",
        ],
    );
    assert_eq!(archive.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&archive.stdout).contains("invalidTransition"));
    let task = json(taskledger(&data, &["task", "q:dead", "--json"]));
    assert_eq!(task["rejected"]["duplicateEnqueue"], 1);
    assert_eq!(task["rejected"]["invalidTransition"], 1);
}

#[test]
fn rebuild_verify_names_a_model_that_differs() {
    let dir = ingested();
    json(taskledger(dir.path(), &["rebuild", "--json"]));
    live_digests(dir.path());
    // Damage the live models behind the runner's back: drop one archived entry.
    {
        let models =
            taskledger_projections::RedbKv::open(&dir.path().join("models"), 1 << 20).unwrap();
        use taskledger_projections::Kv;
        let mut victim = None;
        models
            .scan(b"A", b"A", &mut |key, _| {
                victim = Some(key.to_vec());
                false
            })
            .unwrap();
        models.apply(vec![(victim.unwrap(), None)]).unwrap();
        models.flush().unwrap();
    }
    let output = taskledger(dir.path(), &["rebuild", "--verify", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let verification: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(verification["differing"], serde_json::json!(["archived"]));
    assert!(String::from_utf8_lossy(&output.stderr).contains("archived"));
    // A rebuild repairs it.
    json(taskledger(dir.path(), &["rebuild", "--json"]));
    live_digests(dir.path());
}

#[test]
fn models_left_by_an_older_build_in_sled_are_rebuilt() {
    let dir = ingested();
    let expected = json(taskledger(dir.path(), &["stats", "--json"]));
    let models = dir.path().join("models");
    std::fs::remove_dir_all(&models).unwrap();
    {
        // What an older build left: the models in a sled database, here with a bogus checkpoint
        // far ahead that must not be trusted.
        let old = sled::open(&models).unwrap();
        old.insert(b"C", &u64::MAX.to_be_bytes()).unwrap();
        old.flush().unwrap();
    }
    let stats = json(taskledger(dir.path(), &["stats", "--json"]));
    assert_eq!(stats, expected);
    assert!(
        models
            .join(taskledger_projections::kv::MODELS_FILE)
            .exists(),
        "the models were not rebuilt in place"
    );
    assert!(
        !models.join("conf").exists() && !models.join("db").exists(),
        "the older build's sled files were left behind"
    );
    live_digests(dir.path());
}

/// Records of another layout (postcard: they would not decode, or decode wrong) are cleared on
/// open and replayed from the ledger: here a model file marked with the layout before reclaims,
/// holding a bogus record and a checkpoint far ahead.
#[test]
fn models_of_another_layout_are_replayed() {
    use taskledger_projections::kv::{Kv, RedbKv, MODELS_FORMAT, MODELS_FORMAT_KEY};
    let dir = ingested();
    let expected = json(taskledger(dir.path(), &["chain", TASK, "--json"]));
    let models = dir.path().join("models");
    {
        let kv = RedbKv::open(&models, 1 << 20).unwrap();
        assert_eq!(
            kv.get(MODELS_FORMAT_KEY).unwrap(),
            Some(MODELS_FORMAT.to_be_bytes().to_vec())
        );
        let mut task_key = vec![b'T'];
        task_key.extend_from_slice(TASK.as_bytes());
        kv.apply(vec![
            (
                MODELS_FORMAT_KEY.to_vec(),
                Some(1u32.to_be_bytes().to_vec()),
            ),
            (task_key, Some(vec![7; 40])),
            (b"C".to_vec(), Some(u64::MAX.to_be_bytes().to_vec())),
        ])
        .unwrap();
    }
    let chain = json(taskledger(dir.path(), &["chain", TASK, "--json"]));
    assert_eq!(chain, expected);
    live_digests(dir.path());
}

#[test]
fn same_reports_same_digests_and_export_import_round_trips() {
    let (a, b) = (ingested(), ingested());
    let digests = live_digests(a.path());
    assert_eq!(digests, live_digests(b.path()));
    let export = a.path().join("ledger.ndjson");
    let output = taskledger(a.path(), &["export", export.to_str().unwrap()]);
    assert!(output.status.success());
    let lines = std::fs::read_to_string(&export).unwrap();
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    for field in [
        "stream",
        "version",
        "position",
        "eventId",
        "type",
        "recordedAt",
        "data",
    ] {
        assert!(first.get(field).is_some(), "{field} missing in {first}");
    }
    let restored = tempfile::tempdir().unwrap();
    let summary = json(taskledger(
        restored.path(),
        &["import", export.to_str().unwrap(), "--json"],
    ));
    assert_eq!(summary["appended"], 25);
    assert_eq!(live_digests(restored.path()), digests);
    let again = json(taskledger(
        restored.path(),
        &["import", export.to_str().unwrap(), "--json"],
    ));
    assert_eq!(
        (again["appended"].as_u64(), again["alreadyPresent"].as_u64()),
        (Some(0), Some(25))
    );
    // The same export, re-exported, is byte for byte the same file.
    let export_again = restored.path().join("again.ndjson");
    assert!(
        taskledger(restored.path(), &["export", export_again.to_str().unwrap()])
            .status
            .success()
    );
    assert_eq!(
        std::fs::read(&export).unwrap(),
        std::fs::read(&export_again).unwrap()
    );
    // A damaged export names its line.
    let bad = a.path().join("bad.ndjson");
    std::fs::write(
        &bad,
        format!("{}\n{{\"stream\":1}}\n", lines.lines().next().unwrap()),
    )
    .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let output = taskledger(fresh.path(), &["import", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("line 2"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// SPEC section 4's reclaim, end to end: a redelivered claim and a claim after the queue's
/// lease take a processing execution over; the running attempt shows `abandoned`, retryCount is
/// unchanged, the task is flagged `redelivered`; a claim before the lease stays notClaimable.
#[test]
fn a_reclaim_abandons_the_running_attempt_and_flags_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let config = fixture("redelivery/config.toml");
    let with_config = |args: &[&str]| {
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        json(taskledger(dir.path(), &all))
    };
    let summary = with_config(&[
        "ingest",
        fixture("redelivery/reports.ndjson").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(summary["accepted"], 7, "{summary}");
    assert_eq!(summary["rejected"]["notClaimable"], 1, "{summary}");

    let task = with_config(&["task", "celery:tasks.add:1", "--json"]);
    assert_eq!(task["status"], "completed");
    assert_eq!(task["retryCount"], 0);
    assert!(
        task["flags"]
            .as_array()
            .unwrap()
            .contains(&"redelivered".into()),
        "{task}"
    );
    let chain = with_config(&["chain", "celery:tasks.add:1", "--json"]);
    let attempts = chain["executions"][0]["attempts"].as_array().unwrap();
    let outcomes: Vec<(&str, &str)> = attempts
        .iter()
        .map(|a| {
            (
                a["worker"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [("celery@a", "abandoned"), ("celery@b", "completed")]
    );
    assert_eq!(attempts[0]["endedAt"], "2026-01-21T10:00:31.000Z");
    assert_eq!(chain["executions"][0]["retryCount"], 0);

    let leased = with_config(&["chain", "leased:job:2", "--json"]);
    let execution = &leased["executions"][0];
    assert_eq!(execution["status"], "processing");
    assert_eq!(execution["processingStartedAt"], "2026-01-21T10:10:02.000Z");
    let outcomes: Vec<&str> = execution["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["abandoned", "processing"]);
    // The stuck model follows the new attempt: 31 minutes after the reclaim, not the first claim.
    let stuck = |at: &str| {
        with_config(&["stuck", "--at", at, "--json"])["items"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(stuck("2026-01-21T10:35:00Z"), 0);
    assert_eq!(stuck("2026-01-21T10:41:00Z"), 1);

    // Without the lease (no configuration) the same reports reclaim only the redelivered one.
    let plain = tempfile::tempdir().unwrap();
    let summary = json(taskledger(
        plain.path(),
        &[
            "ingest",
            fixture("redelivery/reports.ndjson").to_str().unwrap(),
            "--json",
        ],
    ));
    assert_eq!(summary["accepted"], 6, "{summary}");
    assert_eq!(summary["rejected"]["notClaimable"], 2, "{summary}");
}
