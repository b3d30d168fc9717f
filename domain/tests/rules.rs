//! Given reports → expected outcomes and events, one fixture per rule of SPEC section 4
//! (`fixtures/rules/*.case`). Each `>` line is a report; the `<` lines after it are what it must
//! decide: its outcome, then its events. `$` lines at the end give every execution's final state.
//! `UPDATE_EXPECT=1 cargo test` rewrites the `<`/`$` lines; review the diff before committing it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use taskledger_domain::event::{CategorySource, Reclaim};
use taskledger_domain::{decide, Event, ExecutionId, Outcome, Policy, Report, TaskState};

fn short(id: ExecutionId) -> String {
    let text = id.to_string();
    text[text.len() - 4..].to_owned()
}

fn describe(event: &Event) -> String {
    match event {
        Event::ExecutionEnqueued(e) => {
            let mut line = format!(
                "ExecutionEnqueued e={} queue={} maxRetries={} at={}",
                short(e.execution_id),
                e.queue,
                e.max_retries,
                e.at
            );
            if !e.metadata.is_empty() {
                let _ = write!(line, " metadata={}", serde_json::Value::Object(e.metadata.clone()));
            }
            if let Some(retry) = &e.manual_retry {
                let _ = write!(
                    line,
                    " manualRetry(from={} by={} reason={:?})",
                    retry.previous_execution_id.map(short).unwrap_or_default(),
                    retry.by.as_deref().unwrap_or("-"),
                    retry.reason.as_deref().unwrap_or("-")
                );
            }
            line
        }
        Event::ExecutionClaimed(e) => format!(
            "ExecutionClaimed e={} worker={} attempt={} at={}{}",
            short(e.execution_id),
            e.worker,
            e.attempt,
            e.at,
            match e.reclaim {
                None => String::new(),
                Some(Reclaim::Redelivered) => " reclaim=redelivered".into(),
                Some(Reclaim::LeaseExpired { lease_ms }) => format!(" reclaim=leaseExpired({lease_ms})"),
            }
        ),
        Event::ExecutionSucceeded(e) => format!(
            "ExecutionSucceeded e={} at={}{}",
            short(e.execution_id),
            e.at,
            if e.unclaimed_success { " unclaimedSuccess" } else { "" }
        ),
        Event::ExecutionFailed(e) => format!(
            "ExecutionFailed e={} status={} retryCount={} category={}({}) backoffMs={} nextRetryAt={} message={:?}",
            short(e.execution_id),
            e.status,
            e.retry_count,
            e.category,
            match e.category_source {
                CategorySource::Reported => "reported",
                CategorySource::Classified => "classified",
            },
            e.backoff_ms.map_or("-".into(), |ms| ms.to_string()),
            e.next_retry_at.map_or("-".into(), |t| t.to_string()),
            e.error_message
        ),
        Event::ExecutionArchived(e) => format!(
            "ExecutionArchived e={} from={} reason={:?} by={}",
            short(e.execution_id),
            e.from_status,
            e.reason.as_deref().unwrap_or("-"),
            e.by.as_deref().unwrap_or("-")
        ),
        Event::ReportRejected(e) => format!(
            "ReportRejected op={} e={} {}",
            e.op.as_str(),
            short(e.execution_id),
            serde_json::to_string(&e.reason).unwrap()
        ),
    }
}

fn describe_outcome(outcome: &Outcome, duplicate: bool) -> String {
    let text = match outcome {
        Outcome::Accepted => "accepted".to_owned(),
        Outcome::Rejected(reason) => format!("rejected {}", reason.name()),
    };
    if duplicate {
        format!("duplicate (first outcome: {text})")
    } else {
        text
    }
}

/// Runs one case file; returns the file as read and as it should be.
fn run_case(path: &Path) -> (String, String) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut policy = Policy::default();
    let mut states: BTreeMap<String, TaskState> = BTreeMap::new();
    let mut expected_file = String::new();
    for line in text.lines() {
        if let Some(json) = line.strip_prefix("policy: ") {
            policy = serde_json::from_str::<Policy>(json)
                .unwrap()
                .compiled()
                .unwrap();
        }
        if line.starts_with('<') || line.starts_with('$') {
            continue;
        }
        expected_file.push_str(line);
        expected_file.push('\n');
        if let Some(json) = line.strip_prefix("> ") {
            let report = Report::from_json(json)
                .unwrap_or_else(|e| panic!("{}: {e}: {json}", path.display()));
            let state = states.entry(report.task_id.to_string()).or_default();
            let decision = decide(state, &report, &policy);
            // Deciding is pure: the same state and report decide the same again.
            assert_eq!(decision, decide(state, &report, &policy));
            let _ = writeln!(
                expected_file,
                "< = {}",
                describe_outcome(&decision.outcome, decision.duplicate)
            );
            for event in &decision.events {
                let _ = writeln!(expected_file, "< {}", describe(event));
                // Every event survives its stored encoding unchanged.
                let decoded = Event::decode(
                    event.type_name(),
                    taskledger_domain::event::EVENT_SCHEMA_VERSION,
                    &event.encode_data(),
                )
                .unwrap();
                assert_eq!(&decoded, event);
                state.apply(event);
            }
        }
    }
    for (task_id, state) in &states {
        for execution in &state.executions {
            let _ = writeln!(
                expected_file,
                "$ {task_id} e={} {} retryCount={}/{}",
                short(execution.execution_id),
                execution.status,
                execution.retry_count,
                execution.max_retries
            );
        }
    }
    (text, expected_file)
}

#[test]
fn every_rule_fixture_decides_as_written() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/rules");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "case"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 10, "the rule fixtures are missing");
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut failures = Vec::new();
    for path in paths {
        let (actual, expected) = run_case(&path);
        if actual != expected {
            if update {
                std::fs::write(&path, &expected).unwrap();
            } else {
                failures.push(format!(
                    "{}:\n--- file\n{actual}\n+++ decided\n{expected}",
                    path.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
