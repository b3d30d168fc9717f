//! `validate` and `simulate` end to end: for several seeds, validation finds every injected fault
//! and nothing else (TaskTracker export and PartnerLogTracker mapping); hand-written exports in
//! both Extended JSON forms give the expected report; bad input exits 2 naming the line; the HTML
//! report parses and shows every mismatch; Celery's Redis result backend through its ready
//! mapping (per execution, JSON lines, RFC 3339 instants in any offset); mapping paths into
//! nested documents and arrays.

mod common;

use common::{fixture, ok, taskledger};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn report(data: &Path, args: &[&str]) -> (Option<i32>, Value) {
    let output = taskledger(data, args);
    let code = output.status.code();
    assert!(
        code == Some(0) || code == Some(1),
        "exit {code:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (code, serde_json::from_slice(&output.stdout).unwrap())
}

#[test]
fn validation_finds_exactly_the_injected_faults() {
    for seed in [1u64, 7, 2026] {
        let dir = tempfile::tempdir().unwrap();
        let sim = dir.path().join("sim");
        let data = dir.path().join("data");
        ok(taskledger(
            &data,
            &[
                "simulate",
                "--tasks",
                "800",
                "--seed",
                &seed.to_string(),
                "--out",
                sim.to_str().unwrap(),
            ],
        ));
        ok(taskledger(
            &data,
            &[
                "ingest",
                sim.join("reports.ndjson").to_str().unwrap(),
                "--json",
            ],
        ));
        let faults: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(sim.join("faults.json")).unwrap())
                .unwrap();
        let kinds: BTreeSet<&str> = faults.iter().map(|f| f["kind"].as_str().unwrap()).collect();
        for kind in [
            "lostUpdate",
            "claimRace",
            "crashInFailurePath",
            "missingDocument",
            "clockSkew",
            "strayDocument",
        ] {
            assert!(
                kinds.contains(kind),
                "seed {seed}: no {kind} fault was injected: {kinds:?}"
            );
        }

        // TaskTracker: every injected execution flagged, nothing else.
        let (code, tasktracker) = report(
            &data,
            &[
                "validate",
                "--legacy",
                sim.join("legacy-tasktracker.json").to_str().unwrap(),
                "--json",
            ],
        );
        assert_eq!(code, Some(1), "below the default --min-consistency of 1.0");
        let flagged: BTreeSet<String> = tasktracker["mismatches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["executionId"].as_str().unwrap().to_owned())
            .collect();
        let injected: BTreeSet<String> = faults
            .iter()
            .map(|f| f["executionId"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            flagged, injected,
            "seed {seed}: TaskTracker precision/recall"
        );

        // PartnerLogTracker through the mapping: per task, against its latest execution.
        let (_, partnerlog) = report(
            &data,
            &[
                "validate",
                "--legacy",
                sim.join("legacy-partnerlog.json").to_str().unwrap(),
                "--mapping",
                sim.join("mapping.toml").to_str().unwrap(),
                "--json",
            ],
        );
        assert_eq!(partnerlog["tracker"], "PartnerLogTracker");
        let flagged: BTreeSet<String> = partnerlog["mismatches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["taskId"].as_str().unwrap().to_owned())
            .collect();
        let injected: BTreeSet<String> = faults
            .iter()
            .filter(|f| {
                f["trackers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t == "partnerLog")
            })
            .map(|f| f["taskId"].as_str().unwrap().to_owned())
            .collect();
        assert!(!injected.is_empty());
        assert_eq!(
            flagged, injected,
            "seed {seed}: PartnerLogTracker precision/recall"
        );

        // Accepting the measured consistency makes the same run pass.
        let consistency = tasktracker["consistency"].as_f64().unwrap();
        let (code, _) = report(
            &data,
            &[
                "validate",
                "--legacy",
                sim.join("legacy-tasktracker.json").to_str().unwrap(),
                "--json",
                "--min-consistency",
                &format!("{}", consistency - 1e-9),
            ],
        );
        assert_eq!(code, Some(0));
    }
}

#[test]
fn the_same_seed_writes_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    for out in ["a", "b"] {
        ok(taskledger(
            dir.path(),
            &[
                "simulate",
                "--tasks",
                "300",
                "--seed",
                "9",
                "--out",
                dir.path().join(out).to_str().unwrap(),
            ],
        ));
    }
    for file in [
        "reports.ndjson",
        "legacy-tasktracker.json",
        "legacy-partnerlog.json",
        "faults.json",
        "mapping.toml",
    ] {
        assert_eq!(
            std::fs::read(dir.path().join("a").join(file)).unwrap(),
            std::fs::read(dir.path().join("b").join(file)).unwrap(),
            "{file}"
        );
    }
    ok(taskledger(
        dir.path(),
        &[
            "simulate",
            "--tasks",
            "300",
            "--seed",
            "10",
            "--out",
            dir.path().join("c").to_str().unwrap(),
        ],
    ));
    assert_ne!(
        std::fs::read(dir.path().join("a/reports.ndjson")).unwrap(),
        std::fs::read(dir.path().join("c/reports.ndjson")).unwrap()
    );
}

#[test]
fn hand_written_exports_in_both_extended_json_forms_give_the_expected_report() {
    let data = tempfile::tempdir().unwrap();
    ok(taskledger(
        data.path(),
        &[
            "ingest",
            fixture("partner_pipeline.ndjson").to_str().unwrap(),
        ],
    ));
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("legacy/expected-report.json")).unwrap(),
    )
    .unwrap();
    for form in ["tasktracker-relaxed.json", "tasktracker-canonical.json"] {
        let (code, actual) = report(
            data.path(),
            &[
                "validate",
                "--legacy",
                fixture(&format!("legacy/{form}")).to_str().unwrap(),
                "--json",
            ],
        );
        assert_eq!(code, Some(1), "{form}");
        for key in [
            "asOf",
            "legacyDocuments",
            "ledgerExecutions",
            "compared",
            "consistent",
            "byKind",
            "byField",
            "mismatches",
            "invariants",
        ] {
            assert_eq!(actual[key], expected[key], "{form}: {key}");
        }
        assert!((actual["consistency"].as_f64().unwrap() - 4.0 / 7.0).abs() < 1e-12);
    }
    // --ignore and --fields change what is compared; --time-tolerance what counts as equal.
    let relaxed = fixture("legacy/tasktracker-relaxed.json");
    let (_, ignoring) = report(
        data.path(),
        &[
            "validate",
            "--legacy",
            relaxed.to_str().unwrap(),
            "--json",
            "--ignore",
            "status,completedAt",
        ],
    );
    assert_eq!(ignoring["byKind"]["field"], 0);
    let (_, strict) = report(
        data.path(),
        &[
            "validate",
            "--legacy",
            relaxed.to_str().unwrap(),
            "--json",
            "--time-tolerance",
            "100ms",
        ],
    );
    assert!(
        strict["byField"]["enqueuedAt"].as_u64().unwrap() >= 1,
        "{}",
        strict["byField"]
    );
    let (_, only) = report(
        data.path(),
        &[
            "validate",
            "--legacy",
            relaxed.to_str().unwrap(),
            "--json",
            "--fields",
            "retryCount",
        ],
    );
    assert_eq!(only["byKind"]["field"], 0);
    // An earlier --as-of replays the ledger to that instant.
    let (_, earlier) = report(
        data.path(),
        &[
            "validate",
            "--legacy",
            relaxed.to_str().unwrap(),
            "--json",
            "--as-of",
            "2026-01-21T10:30:00Z",
        ],
    );
    assert_eq!(earlier["asOf"], "2026-01-21T10:30:00.000Z");
    assert!(
        earlier["byField"]["status"].as_u64().unwrap() >= 2,
        "{}",
        earlier["byField"]
    );
}

#[test]
fn a_malformed_export_is_bad_input_with_its_line() {
    let data = tempfile::tempdir().unwrap();
    ok(taskledger(
        data.path(),
        &[
            "ingest",
            fixture("partner_pipeline.ndjson").to_str().unwrap(),
        ],
    ));
    let text = std::fs::read_to_string(fixture("legacy/tasktracker-relaxed.json")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = r#"{"executionId": "x", "enqueuedAt": {"$date": 12"#;
    let broken = data.path().join("broken.json");
    std::fs::write(&broken, lines.join("\n")).unwrap();
    let output = taskledger(
        data.path(),
        &["validate", "--legacy", broken.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 3"), "{stderr}");
    let no_id = data.path().join("no-id.json");
    std::fs::write(&no_id, "{\"taskId\":\"q:1\"}\n").unwrap();
    let output = taskledger(
        data.path(),
        &["validate", "--legacy", no_id.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("executionId"));
    let output = taskledger(data.path(), &["validate", "--legacy", "/nonexistent.json"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn the_html_report_parses_and_shows_every_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let data = dir.path().join("data");
    ok(taskledger(
        &data,
        &[
            "simulate",
            "--tasks",
            "400",
            "--seed",
            "3",
            "--out",
            sim.to_str().unwrap(),
        ],
    ));
    ok(taskledger(
        &data,
        &["ingest", sim.join("reports.ndjson").to_str().unwrap()],
    ));
    let html = dir.path().join("report.html");
    let json = dir.path().join("report.json");
    let output = taskledger(
        &data,
        &[
            "validate",
            "--legacy",
            sim.join("legacy-tasktracker.json").to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
            "--report",
            json.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let page = scraper::Html::parse_document(&std::fs::read_to_string(&html).unwrap());
    assert!(
        page.errors.is_empty(),
        "HTML parse errors: {:?}",
        page.errors
    );
    let rows = scraper::Selector::parse("table#mismatches tr").unwrap();
    let table: Vec<String> = page
        .select(&rows)
        .map(|row| row.text().collect::<String>())
        .collect();
    let mismatches = report["mismatches"].as_array().unwrap();
    assert!(!mismatches.is_empty());
    assert_eq!(
        table.len(),
        mismatches.len() + 1,
        "one row per mismatch plus the header"
    );
    for mismatch in mismatches {
        let execution = mismatch["executionId"].as_str().unwrap();
        let field = mismatch["field"].as_str().unwrap_or("");
        assert!(
            table
                .iter()
                .any(|row| row.contains(execution) && row.contains(field)),
            "{mismatch} missing"
        );
    }
    // Each row links its task to the task's page of the web UI.
    let links = scraper::Selector::parse("table#mismatches tr td a").unwrap();
    let hrefs: BTreeSet<String> = page
        .select(&links)
        .filter_map(|a| a.value().attr("href").map(str::to_owned))
        .collect();
    for mismatch in mismatches {
        let task = mismatch["taskId"].as_str().unwrap();
        assert!(
            hrefs.contains(&format!("http://127.0.0.1:7070/ui/tasks/{task}")),
            "no link to {task}'s page"
        );
    }
    // Each mismatching task shows its retry chain beside the legacy document.
    let headings = scraper::Selector::parse("h3").unwrap();
    let tasks: BTreeSet<String> = page.select(&headings).map(|h| h.text().collect()).collect();
    for mismatch in mismatches {
        assert!(tasks.contains(mismatch["taskId"].as_str().unwrap()));
    }
}

fn celery_ledger() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    ok(taskledger(
        data.path(),
        &["ingest", fixture("celery/reports.ndjson").to_str().unwrap()],
    ));
    data
}

fn report_with(data: &Path, export: &Path, mapping: &Path) -> (Option<i32>, Value) {
    report(
        data,
        &[
            "validate",
            "--legacy",
            export.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
            "--json",
        ],
    )
}

fn celery_validate(data: &Path, export: &Path, extra: &[&str]) -> (Option<i32>, Value) {
    let mapping = fixture("mappings/celery-redis.toml");
    let mut args = vec![
        "validate",
        "--legacy",
        export.to_str().unwrap(),
        "--mapping",
        mapping.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    report(data, &args)
}

/// Celery's Redis result backend (result_extended), dumped as JSON lines: joined per execution
/// (task_id), compared on status with the ledger's own decisions — a success, a retried success,
/// a final failure into the DLQ, a failure without retries (ledger `failed`), a revocation, a
/// redelivery after a lost worker, a retry in progress; the execution still queued has no key
/// and is not missing. `date_done` in four spellings: with `updated_at` the latest (+01:00) is
/// the default as-of.
#[test]
fn celery_redis_export_agrees_per_execution_on_status() {
    let data = celery_ledger();
    let export = fixture("legacy/celery-redis.jsonl");
    let (code, report) = celery_validate(data.path(), &export, &[]);
    assert_eq!(code, Some(0), "{report}");
    // No instant mapped: the default as-of is now, the ledger's head.
    assert!(report["asOf"].as_str().unwrap() > "2026-06", "{report}");
    assert_eq!(report["tracker"], "Celery (Redis result backend)");
    assert_eq!(report["legacyDocuments"], 7);
    assert_eq!(report["ledgerExecutions"], 8);
    assert_eq!(report["compared"], 7);
    assert_eq!(report["consistent"], 7);
    assert_eq!(report["consistency"], 1.0);
    assert_eq!(report["fields"], serde_json::json!(["status"]));
    assert_eq!(report["outsideQueue"], 0);

    // `updated_at` makes the latest date_done (written with a +01:00 offset) the default as-of.
    let mapping_text = std::fs::read_to_string(fixture("mappings/celery-redis.toml")).unwrap();
    let variant = |name: &str, extra: &str| {
        let path = data.path().join(name);
        let text = mapping_text.replacen("[tracker]\n", &format!("[tracker]\n{extra}\n"), 1);
        std::fs::write(&path, text).unwrap();
        path
    };
    let by_date_done = variant("by-date-done.toml", "updated_at = \"date_done\"");
    let (code, report) = report_with(data.path(), &export, &by_date_done);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["asOf"], "2026-01-21T10:09:51.400Z");
    // `queue`: documents about executions of other queues are neither compared nor missing.
    for (queue, compared, outside) in [("celery", 7, 0), ("nightly", 0, 7)] {
        let scoped = variant("scoped.toml", &format!("queue = \"{queue}\""));
        let (code, report) = report_with(data.path(), &export, &scoped);
        assert_eq!(code, Some(0), "{report}");
        assert_eq!(report["compared"], compared, "{queue}: {report}");
        assert_eq!(report["outsideQueue"], outside, "{queue}: {report}");
        assert_eq!(report["byKind"]["missingInLedger"], 0, "{queue}: {report}");
        assert_eq!(report["byKind"]["missingInLegacy"], 0, "{queue}: {report}");
    }

    // Differences are found and named: a status that disagrees (with the taskId the template
    // builds from the document), a document missing, a stray one.
    let text = std::fs::read_to_string(&export).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[1] = lines[1].replace("\"SUCCESS\"", "\"FAILURE\"");
    lines.remove(0);
    lines.push(lines[0].replace(
        "5a1e0000-0000-4000-8000-000000000002",
        "5a1e0000-0000-4000-8000-0000000000ff",
    ));
    let changed = data.path().join("changed.jsonl");
    std::fs::write(&changed, lines.join("\n") + "\n").unwrap();
    let (code, report) = celery_validate(data.path(), &changed, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(
        report["byKind"],
        serde_json::json!({"field": 1, "missingInLedger": 1, "missingInLegacy": 1})
    );
    let mismatches = report["mismatches"].as_array().unwrap();
    let field = mismatches.iter().find(|m| m["kind"] == "field").unwrap();
    assert_eq!(field["executionId"], "5a1e0000-0000-4000-8000-000000000002");
    assert_eq!(field["taskId"], "celery:tasks.flaky:2");
    assert_eq!(field["field"], "status");
    assert_eq!(field["legacy"], "dlq|failed");
    assert_eq!(field["ledger"], "completed");
    let missing_in_legacy = mismatches
        .iter()
        .find(|m| m["kind"] == "missingInLegacy")
        .unwrap();
    assert_eq!(
        missing_in_legacy["executionId"],
        "5a1e0000-0000-4000-8000-000000000001"
    );
    let stray = mismatches
        .iter()
        .find(|m| m["kind"] == "missingInLedger")
        .unwrap();
    assert_eq!(stray["executionId"], "5a1e0000-0000-4000-8000-0000000000ff");
    assert_eq!(stray["taskId"], "celery:tasks.flaky:2");
}

/// A mapping's taskId template and field names are paths into nested documents and arrays, and
/// its instants may be `$date`, epoch milliseconds or RFC 3339 in any offset: a nested tracker
/// (per task, legacy shape) agrees with the partner pipeline where the TaskTracker export does.
#[test]
fn mapping_paths_reach_into_nested_documents_and_arrays() {
    let data = tempfile::tempdir().unwrap();
    ok(taskledger(
        data.path(),
        &[
            "ingest",
            fixture("partner_pipeline.ndjson").to_str().unwrap(),
        ],
    ));
    let mapping = data.path().join("nested.toml");
    std::fs::write(
        &mapping,
        r#"[tracker]
name = "NestedLogTracker"
task_id = "partner_tasks:{log.partner}:{log.aircraft}:{log.ids[0]}"
queue = "partner_tasks"
[fields]
status = "state.name"
retryCount = "state.retries"
enqueuedAt = "times.created"
completedAt = "times.done"
failedAt = "times.failed[1]"
[status]
PROCESSED = "completed"
DEAD = "dlq"
"#,
    )
    .unwrap();
    let export = data.path().join("nested.jsonl");
    std::fs::write(
        &export,
        concat!(
            r#"{"log":{"partner":"SATLOC","aircraft":"695d","ids":["02220710","x"]},"state":{"name":"PROCESSED","retries":0},"times":{"created":1768995000200,"done":"2026-01-21T12:30:04.900+01:00"}}"#,
            "\n",
            r#"{"log":{"partner":"SATLOC","aircraft":"7a1c","ids":["02230002"]},"state":{"name":"PROCESSED","retries":{"$numberLong":"0"}},"times":{"created":{"$date":"2026-01-21T10:04:00.010Z"},"done":"2026-01-21T10:04:02.500Z"}}"#,
            "\n",
            r#"{"log":{"partner":"SATLOC","aircraft":"7a1c","ids":["02230001"]},"state":{"name":"DEAD","retries":1},"times":{"created":"2026-01-21T05:02:00.050-05:00","failed":[null,"2026-01-21T10:02:03.400Z"]}}"#,
            "\n"
        ),
    )
    .unwrap();
    let (code, report) = report(
        data.path(),
        &[
            "validate",
            "--legacy",
            export.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, Some(1), "{report}");
    // The latest instant of the export: an RFC 3339 string with an offset.
    assert_eq!(report["asOf"], "2026-01-21T11:30:04.900Z");
    assert_eq!(report["compared"], 3, "{report}");
    assert_eq!(report["consistent"], 3, "{report}");
    // The two partner tasks this export lacks.
    assert_eq!(
        report["byKind"],
        serde_json::json!({"field": 0, "missingInLedger": 0, "missingInLegacy": 2})
    );
    // A path that names nothing in the document is null, and differs (at the same instant: the
    // export's latest is now an earlier one).
    std::fs::write(
        &mapping,
        std::fs::read_to_string(&mapping)
            .unwrap()
            .replace("times.done", "times.finished"),
    )
    .unwrap();
    let (_, report) = report_of(&data, &export, &mapping);
    assert_eq!(report["byField"], serde_json::json!({"completedAt": 2}));
    // A bad path is bad input, named.
    std::fs::write(
        &mapping,
        std::fs::read_to_string(&mapping)
            .unwrap()
            .replace("log.ids[0]", "log.ids[first]"),
    )
    .unwrap();
    let output = taskledger(
        data.path(),
        &[
            "validate",
            "--legacy",
            export.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("log.ids[first]"), "{stderr}");
}

fn report_of(data: &tempfile::TempDir, export: &Path, mapping: &Path) -> (Option<i32>, Value) {
    report(
        data.path(),
        &[
            "validate",
            "--legacy",
            export.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
            "--json",
            "--as-of",
            "2026-01-21T11:30:04.900Z",
        ],
    )
}
