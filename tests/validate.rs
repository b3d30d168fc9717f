//! `validate` and `simulate` end to end: for several seeds, validation finds every injected fault
//! and nothing else (TaskTracker export and PartnerLogTracker mapping); hand-written exports in
//! both Extended JSON forms give the expected report; bad input exits 2 naming the line; the HTML
//! report parses and shows every mismatch.

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
    // Each mismatching task shows its retry chain beside the legacy document.
    let headings = scraper::Selector::parse("h3").unwrap();
    let tasks: BTreeSet<String> = page.select(&headings).map(|h| h.text().collect()).collect();
    for mismatch in mismatches {
        assert!(tasks.contains(mismatch["taskId"].as_str().unwrap()));
    }
}
