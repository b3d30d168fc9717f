//! End-to-end tests of `taskledger whatif`: every `fixtures/whatif/*.args` case through the
//! binary (reports ingested under `recorded.toml`, then `whatif` under the case's configuration
//! gives the case's `.expected.json`, the same the library test checks), byte-identical output
//! run after run, the HTML report, errors that name the place at fault with exit status 2, and the
//! same report from a PostgreSQL store (`--store`; skipped with a message without PostgreSQL).

mod common;

use common::{command, ok, ok_json};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn cases_dir() -> PathBuf {
    common::fixture("whatif")
}

/// A data directory holding `fixtures/whatif/reports.ndjson`, recorded under `recorded.toml`.
fn recorded_ledger() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let summary = ok_json(
        command(dir.path())
            .arg("--config")
            .arg(cases_dir().join("recorded.toml"))
            .args(["ingest", "--json"])
            .arg(cases_dir().join("reports.ndjson"))
            .output()
            .unwrap(),
    );
    assert_eq!(summary["reports"], 54, "{summary}");
    dir
}

/// `taskledger whatif` with a case's arguments (its `--config` resolved in fixtures/whatif/).
fn whatif(data_dir: &Path, case_args: &str, extra: &[&str]) -> Output {
    let mut run = command(data_dir);
    let mut words = case_args.split_whitespace();
    let mut rest = Vec::new();
    while let Some(word) = words.next() {
        if word == "--config" {
            run.arg("--config")
                .arg(cases_dir().join(words.next().unwrap()));
        } else {
            rest.push(word.to_owned());
        }
    }
    run.arg("whatif").args(rest).args(extra).output().unwrap()
}

#[test]
fn every_fixture_case_through_the_binary() {
    let ledger = recorded_ledger();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "args"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 5);
    for case in cases {
        let args = std::fs::read_to_string(&case).unwrap();
        let actual = ok_json(whatif(ledger.path(), &args, &["--json"]));
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(case.with_extension("expected.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(actual, expected, "{}", case.display());
    }
}

#[test]
fn the_output_is_byte_identical_run_after_run() {
    let ledger = recorded_ledger();
    let dir = tempfile::tempdir().unwrap();
    let (first_html, second_html) = (dir.path().join("1.html"), dir.path().join("2.html"));
    let run = |html: &Path| {
        ok(whatif(
            ledger.path(),
            "--config more_retries.toml",
            &["--json", "--html", html.to_str().unwrap()],
        ))
        .stdout
    };
    let first = run(&first_html);
    let second = run(&second_html);
    assert_eq!(first, second);
    let page = std::fs::read(&first_html).unwrap();
    assert_eq!(page, std::fs::read(&second_html).unwrap());
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("beyond history"), "{page}");
    assert!(
        page.contains("/ui/tasks/partner_tasks:SATLOC:695d:00000007"),
        "{page}"
    );
    let human =
        String::from_utf8(ok(whatif(ledger.path(), "--config zero_retries.toml", &[])).stdout)
            .unwrap();
    assert!(human.contains("executions changed 7"), "{human}");
    assert!(human.contains("reached the DLQ 5 -> 8"), "{human}");
    assert!(
        human.contains("retries granted 11 -> 0 (11 saved, 0 added)"),
        "{human}"
    );
}

#[test]
fn errors_name_the_place_at_fault() {
    let ledger = recorded_ledger();
    let dir = tempfile::tempdir().unwrap();
    let refused = |output: Output, needle: &str| {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    // No configuration to replay under.
    refused(
        command(ledger.path()).arg("whatif").output().unwrap(),
        "whatif needs --config FILE",
    );
    // A bad --since.
    refused(
        whatif(
            ledger.path(),
            "--config recorded.toml --since yesterday",
            &[],
        ),
        "--since: \"yesterday\" is not an RFC 3339 instant",
    );
    // A configuration with a bad setting: the file and the setting.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[policy.retry.default]\nmultiplier = 0.5\n").unwrap();
    let output = command(ledger.path())
        .arg("--config")
        .arg(&bad)
        .arg("whatif")
        .output()
        .unwrap();
    refused(output, "policy `retry.default.multiplier`: must be ≥ 1");
    let output = command(ledger.path())
        .arg("--config")
        .arg(&bad)
        .arg("whatif")
        .output()
        .unwrap();
    refused(output, "bad.toml");
    // An unknown setting: toml names it.
    std::fs::write(&bad, "[policy.retry.default]\nmax_retry = 0\n").unwrap();
    let output = command(ledger.path())
        .arg("--config")
        .arg(&bad)
        .arg("whatif")
        .output()
        .unwrap();
    refused(output, "max_retry");
}

#[test]
fn the_same_report_from_a_postgresql_store() {
    use taskledger_testkit::pg_cluster::{self, PgServer};
    if !taskledger_testkit::runs(
        "postgres",
        "the_same_report_from_a_postgresql_store",
        pg_cluster::unavailable_reason(),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = PgServer::start_primary(
        &dir.path().join("pg"),
        pg_cluster::free_port().unwrap(),
        false,
    )
    .unwrap();
    server.create_database("ledger").unwrap();
    let url = server.url("ledger");
    let data = dir.path().join("data");
    ok(command(&data)
        .arg("--config")
        .arg(cases_dir().join("recorded.toml"))
        .args(["--store", &url, "ingest"])
        .arg(cases_dir().join("reports.ndjson"))
        .output()
        .unwrap());
    let sled = recorded_ledger();
    for case in ["more_retries.args", "zero_retries.args"] {
        let args = std::fs::read_to_string(cases_dir().join(case)).unwrap();
        let from_postgres = ok(whatif(&data, &args, &["--json", "--store", &url])).stdout;
        let from_sled = ok(whatif(sled.path(), &args, &["--json"])).stdout;
        assert_eq!(
            String::from_utf8(from_postgres).unwrap(),
            String::from_utf8(from_sled).unwrap(),
            "{case}"
        );
    }
}
