//! Tamper evidence end to end: `digest`, `verify` of the store and of exports (one event altered,
//! removed or reordered fails at that event), a digest taken earlier still verifying after more
//! reports, and exports that carry their hashes through import (an export of an earlier build,
//! without hashes, and one at schema version 1 import and read identically).

mod common;

use std::path::{Path, PathBuf};

fn ingest(data_dir: &Path, file: &Path) {
    common::ok(common::taskledger(
        data_dir,
        &["ingest", file.to_str().unwrap()],
    ));
}

fn digest(data_dir: &Path) -> serde_json::Value {
    common::ok_json(common::taskledger(data_dir, &["digest"]))
}

fn export(data_dir: &Path, to: &Path) -> Vec<String> {
    common::ok(common::taskledger(
        data_dir,
        &["export", to.to_str().unwrap()],
    ));
    std::fs::read_to_string(to)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) -> PathBuf {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    path.to_owned()
}

/// `verify --export FILE --json`: (exit code, verification).
fn verify_export(data_dir: &Path, file: &Path) -> (i32, serde_json::Value) {
    let output = common::taskledger(
        data_dir,
        &["verify", "--export", file.to_str().unwrap(), "--json"],
    );
    let value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "verify printed no JSON: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap(), value)
}

fn field(line: &str, name: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(line).unwrap()[name].clone()
}

#[test]
fn the_same_reports_give_the_same_digest_and_a_verified_export() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = common::fixture("partner_pipeline.ndjson");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ingest(&a, &fixture);
    ingest(&b, &fixture);
    let digest_a = digest(&a);
    assert_eq!(digest_a, digest(&b), "same reports, same digest");
    assert!(digest_a["position"].as_u64().unwrap() > 10, "{digest_a}");
    assert_eq!(digest_a["digest"].as_str().unwrap().len(), 64);
    // The store verifies, and agrees with the digest the models keep.
    let verified = common::ok_json(common::taskledger(&a, &["verify", "--json"]));
    assert_eq!(verified["head"], digest_a, "{verified}");
    assert!(verified.get("broken").is_none(), "{verified}");
    // And so does its export.
    let file = dir.path().join("a.ndjson");
    let lines = export(&a, &file);
    assert!(lines.iter().all(|line| field(line, "hash").is_string()));
    let (code, verified) = verify_export(&a, &file);
    assert_eq!(code, 0, "{verified}");
    assert_eq!(verified["head"], digest_a);
}

#[test]
fn an_altered_removed_or_reordered_event_fails_verify_at_that_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ingest(&data, &common::fixture("partner_pipeline.ndjson"));
    let lines = export(&data, &dir.path().join("export.ndjson"));
    // An event in the middle of a stream (not its first), so each tampering has a witness.
    let target = (1..lines.len())
        .find(|&n| field(&lines[n], "version").as_u64() == Some(1))
        .unwrap();
    let (stream, version, position) = (
        field(&lines[target], "stream"),
        field(&lines[target], "version"),
        field(&lines[target], "position"),
    );

    // Altered: one byte of its payload (a data field, JSON still valid).
    let mut altered = lines.clone();
    let mut event: serde_json::Value = serde_json::from_str(&altered[target]).unwrap();
    event["data"]["at"] = serde_json::json!("2020-01-01T00:00:00.000Z");
    altered[target] = event.to_string();
    let (code, verified) =
        verify_export(&data, &write_lines(&dir.path().join("altered"), &altered));
    assert_eq!(code, 1, "{verified}");
    let broken = &verified["broken"];
    assert_eq!(broken["stream"], stream, "{verified}");
    assert_eq!(broken["version"], version);
    assert_eq!(broken["line"], target as u64 + 1);
    assert!(broken["problem"].as_str().unwrap().contains("altered"));

    // Removed: the stream's next version stands where this one was (or, if it was the
    // stream's last, the next event's position does).
    let mut removed = lines.clone();
    removed.remove(target);
    let (code, verified) =
        verify_export(&data, &write_lines(&dir.path().join("removed"), &removed));
    assert_eq!(code, 1, "{verified}");
    assert_eq!(
        verified["broken"]["position"],
        position.as_u64().unwrap() + 1
    );
    assert_eq!(verified["events"], position);

    // Reordered: swapped with the event before it.
    let mut reordered = lines.clone();
    reordered.swap(target - 1, target);
    let (code, verified) = verify_export(
        &data,
        &write_lines(&dir.path().join("reordered"), &reordered),
    );
    assert_eq!(code, 1, "{verified}");
    assert_eq!(verified["broken"]["line"], target as u64);

    // The altered export is refused by import too, at that line, naming the stream.
    let output = common::taskledger(
        &dir.path().join("elsewhere"),
        &["import", dir.path().join("altered").to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("line {}", target + 1)) && stderr.contains("altered"),
        "{stderr}"
    );
}

#[test]
fn a_digest_taken_earlier_verifies_after_more_reports_and_a_forged_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let reports = std::fs::read_to_string(common::fixture("partner_pipeline.ndjson")).unwrap();
    let lines: Vec<&str> = reports.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let first_file = write_lines(
        &dir.path().join("first.ndjson"),
        &first.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
    );
    let second_file = write_lines(
        &dir.path().join("second.ndjson"),
        &second.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
    );
    ingest(&data, &first_file);
    let earlier = digest(&data);
    ingest(&data, &second_file);
    let later = digest(&data);
    assert!(later["position"].as_u64() > earlier["position"].as_u64());
    let earlier_text = earlier.to_string();
    let verified = common::ok_json(common::taskledger(
        &data,
        &["verify", "--digest", &earlier_text, "--json"],
    ));
    assert_eq!(verified["digest"]["prefix"], true, "{verified}");
    // POSITION:HEX is accepted too, and an export proves the same.
    let short = format!(
        "{}:{}",
        earlier["position"],
        earlier["digest"].as_str().unwrap()
    );
    let file = dir.path().join("export.ndjson");
    export(&data, &file);
    common::ok(common::taskledger(
        &data,
        &[
            "verify",
            "--export",
            file.to_str().unwrap(),
            "--digest",
            &short,
        ],
    ));
    // A digest of another history at the same position: not a prefix, exit 1.
    let mut forged = earlier.clone();
    let mut hex = forged["digest"].as_str().unwrap().to_owned();
    let flipped = if hex.starts_with('0') { "1" } else { "0" };
    hex.replace_range(0..1, flipped);
    forged["digest"] = serde_json::json!(hex);
    let output = common::taskledger(&data, &["verify", "--digest", &forged.to_string()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not extend"), "{stderr}");
    // A position beyond the ledger: not a prefix either.
    let beyond = format!("999999:{}", earlier["digest"].as_str().unwrap());
    let output = common::taskledger(&data, &["verify", "--digest", &beyond]);
    assert_eq!(output.status.code(), Some(1));
    // A malformed digest is bad input (exit 2), naming the flag.
    let output = common::taskledger(&data, &["verify", "--digest", "12:nothex"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--digest"));
}

/// An export as the builds before schema version 2 wrote it: JSON payloads at version 1, no
/// hashes. It imports (each event stays at version 1, upcast on read), reads exactly as the
/// version-2 ledger it came from, verifies, and keeps its bytes and digest through another
/// export and import.
#[test]
fn a_version_1_export_imports_and_reads_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    ingest(&a, &common::fixture("partner_pipeline.ndjson"));
    let lines = export(&a, &dir.path().join("export.ndjson"));
    assert!(lines.iter().all(|line| field(line, "schemaVersion") == 3));
    let version_1: Vec<String> = lines
        .iter()
        .map(|line| {
            let mut event: serde_json::Value = serde_json::from_str(line).unwrap();
            let object = event.as_object_mut().unwrap();
            object.remove("hash");
            object.insert("schemaVersion".into(), serde_json::json!(1));
            event.to_string()
        })
        .collect();
    let old = write_lines(&dir.path().join("v1.ndjson"), &version_1);
    common::ok(common::taskledger(&b, &["import", old.to_str().unwrap()]));
    let reexported = export(&b, &dir.path().join("b.ndjson"));
    assert!(reexported
        .iter()
        .all(|line| field(line, "schemaVersion") == 1));
    for (v2, v1) in lines.iter().zip(&reexported) {
        assert_eq!(
            field(v2, "data"),
            field(v1, "data"),
            "the same payload, shown alike"
        );
        assert_eq!(field(v2, "eventId"), field(v1, "eventId"));
    }
    common::ok(common::taskledger(&b, &["verify"]));
    let mut tasks: Vec<String> = lines
        .iter()
        .map(|line| field(line, "stream").as_str().unwrap().to_owned())
        .collect();
    tasks.dedup();
    for task in &tasks {
        for view in ["task", "chain", "history"] {
            let of = |data_dir: &Path| {
                let mut value =
                    common::ok_json(common::taskledger(data_dir, &[view, task, "--json"]));
                if let Some(events) = value.as_array_mut() {
                    for event in events {
                        event.as_object_mut().unwrap().remove("recordedAt");
                    }
                }
                value
            };
            assert_eq!(of(&a), of(&b), "{view} {task}");
        }
    }
    common::ok(common::taskledger(
        &c,
        &["import", dir.path().join("b.ndjson").to_str().unwrap()],
    ));
    assert_eq!(
        digest(&b),
        digest(&c),
        "version-1 events keep their bytes and hashes"
    );
    assert_eq!(export(&c, &dir.path().join("c.ndjson")), reexported);
}

#[test]
fn an_export_without_hashes_imports_and_reads_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ingest(&a, &common::fixture("partner_pipeline.ndjson"));
    let lines = export(&a, &dir.path().join("export.ndjson"));
    // Today's export without the hashes: the format of the builds before them.
    let without: Vec<String> = lines
        .iter()
        .map(|line| {
            let mut event: serde_json::Value = serde_json::from_str(line).unwrap();
            event.as_object_mut().unwrap().remove("hash");
            event.to_string()
        })
        .collect();
    let old = write_lines(&dir.path().join("old.ndjson"), &without);
    // verify cannot check an export without hashes, and says why.
    let output = common::taskledger(&a, &["verify", "--export", old.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no hash"));
    common::ok(common::taskledger(&b, &["import", old.to_str().unwrap()]));
    assert_eq!(digest(&a), digest(&b));
    assert_eq!(export(&b, &dir.path().join("again.ndjson")), lines);
    let task = field(&lines[0], "stream");
    let task = task.as_str().unwrap();
    for view in ["task", "chain", "history"] {
        assert_eq!(
            common::ok_json(common::taskledger(&a, &[view, task, "--json"])),
            common::ok_json(common::taskledger(&b, &[view, task, "--json"])),
            "{view} {task}"
        );
    }
}
