//! Policy what-if (`replay::whatif`). Data-driven: each `fixtures/whatif/*.args` names a
//! configuration (and filters) to replay `fixtures/whatif/reports.ndjson` under, recorded under
//! `fixtures/whatif/recorded.toml`; the report must equal `<case>.expected.json`
//! (`UPDATE_EXPECT=1 cargo test -p taskledger-replay --test whatif` rewrites them; review the
//! diff). Then properties over a simulated workload: the recording's own policy changes nothing,
//! zero retries send every failed execution to the DLQ at its first failure, more retries than
//! were reported are beyond history, the filters select, the output is deterministic, and the
//! store-fed replay equals the in-memory one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use taskledger_domain::event::ExecutionFailed;
use taskledger_domain::{
    decide, Event, ExecutionId, ExecutionStatus, Policy, Report, TaskState, Timestamp,
};
use taskledger_replay::whatif::{what_if, what_if_store, WhatIfOptions, WhatIfReport};
use taskledger_store::{EventStore, ExpectedVersion, MemoryStore, NewEvent, StreamAppend};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("replay/ sits in the workspace")
        .join("fixtures/whatif")
}

/// The `[policy]` of a configuration file, as the binary reads it.
fn policy(path: &Path) -> Policy {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        policy: Policy,
    }
    let text = std::fs::read_to_string(path).unwrap();
    let file: File = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.policy.compiled().unwrap()
}

/// What the ledger records for `lines`, decided in line order under `policy`: (stream, event).
fn record(lines: &[String], policy: &Policy) -> Vec<(String, Event)> {
    let mut states: HashMap<String, TaskState> = HashMap::new();
    let mut events = Vec::new();
    for line in lines {
        let report = Report::from_json(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let stream = report.task_id.as_str().to_owned();
        let state = states.entry(stream.clone()).or_default();
        for event in decide(state, &report, policy).events {
            state.apply(&event);
            events.push((stream.clone(), event));
        }
    }
    events
}

fn fixture_events() -> Vec<(String, Event)> {
    let text = std::fs::read_to_string(fixtures().join("reports.ndjson")).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    record(&lines, &policy(&fixtures().join("recorded.toml")))
}

fn simulated(tasks: usize, recorded: &Policy) -> Vec<(String, Event)> {
    let simulation = taskledger_replay::simulate::simulate(tasks, 7).unwrap();
    record(&simulation.reports, recorded)
}

/// `--config FILE [--queue Q] [--since T]`, as the binary takes them.
fn parse_args(text: &str) -> (PathBuf, WhatIfOptions) {
    let mut words = text.split_whitespace();
    let (mut config, mut options) = (None, WhatIfOptions::default());
    while let Some(flag) = words.next() {
        let value = words.next().expect("every flag has a value");
        match flag {
            "--config" => config = Some(fixtures().join(value)),
            "--queue" => options.queue = Some(value.to_owned()),
            "--since" => options.since = Some(Timestamp::parse(value).unwrap()),
            other => panic!("unknown flag {other}"),
        }
    }
    (config.expect("--config"), options)
}

fn json(report: &WhatIfReport) -> String {
    serde_json::to_string_pretty(report).unwrap() + "\n"
}

#[test]
fn fixture_cases() {
    let events = fixture_events();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "args"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "{cases:?}");
    let mut failures = Vec::new();
    for case in cases {
        let (config, options) = parse_args(&std::fs::read_to_string(&case).unwrap());
        let report = what_if(events.clone(), policy(&config), options).unwrap();
        let actual = json(&report);
        let expected_path = case.with_extension("expected.json");
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}: expected {}\n--- got ---\n{actual}",
                case.display(),
                expected_path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_fixture_cases_show_what_they_are_named_for() {
    let events = fixture_events();
    let run = |config: &str, options: WhatIfOptions| {
        what_if(events.clone(), policy(&fixtures().join(config)), options).unwrap()
    };
    let same = run("recorded.toml", WhatIfOptions::default());
    assert_eq!((same.changed, same.executions), (0, 10), "{same:#?}");

    let zero = run("zero_retries.toml", WhatIfOptions::default());
    assert!(zero.changed > 0);
    assert_eq!(zero.retries.after, 0);
    assert_eq!(zero.beyond_history, 0, "{zero:#?}");
    for change in &zero.changes {
        let after = change.after.as_ref().unwrap();
        assert_eq!(after.retry_count, 1, "{change:?}");
        assert!(after.dlq_at.is_some(), "{change:?}");
    }

    let more = run("more_retries.toml", WhatIfOptions::default());
    let beyond: Vec<&str> = more
        .changes
        .iter()
        .filter(|change| change.beyond_history)
        .map(|change| change.task_id.as_str())
        .collect();
    assert_eq!(
        beyond,
        [
            "partner_tasks:SATLOC:695d:00000002",
            "partner_tasks:SATLOC:695d:00000007",
            // Both executions: the manual retry inherits the new default maxRetries too.
            "partner_tasks:SATLOC:695d:00000008",
            "partner_tasks:SATLOC:695d:00000008"
        ],
        "{more:#?}"
    );
    assert_eq!(more.retries.added, 4);

    let window = run("short_dedup_window.toml", WhatIfOptions::default());
    assert_eq!(window.changed, 1);
    let change = &window.changes[0];
    assert_eq!(
        (change.fields.as_slice(), change.before.is_none()),
        (&["exists"][..], true)
    );
    assert_eq!(
        change.after.as_ref().unwrap().status,
        ExecutionStatus::Queued
    );
    assert!(change.beyond_history);
}

/// Each execution's recorded failures, in order.
fn failures(events: &[(String, Event)]) -> HashMap<ExecutionId, Vec<ExecutionFailed>> {
    let mut out: HashMap<ExecutionId, Vec<ExecutionFailed>> = HashMap::new();
    for (_, event) in events {
        if let Event::ExecutionFailed(failed) = event {
            out.entry(failed.execution_id)
                .or_default()
                .push(failed.clone());
        }
    }
    out
}

#[test]
fn the_recording_s_own_policy_changes_nothing() {
    for recorded in [Policy::default(), policy(&fixtures().join("recorded.toml"))] {
        let events = simulated(2000, &recorded);
        let report = what_if(events.clone(), recorded.clone(), WhatIfOptions::default()).unwrap();
        assert_eq!(
            report.changed,
            0,
            "{:#?}",
            &report.changes[..report.changes.len().min(3)]
        );
        assert_eq!(report.events, events.len() as u64);
        assert!(report.executions > 2000);
        assert!(
            report.dlq.before > 0 && report.retries.before > 0,
            "{report:#?}"
        );
        assert_eq!(report.dlq.before, report.dlq.after);
        assert_eq!((report.retries.saved, report.retries.added), (0, 0));
    }
}

#[test]
fn zero_retries_send_every_failed_execution_to_the_dlq_at_its_first_failure() {
    let events = simulated(2000, &Policy::default());
    let zero = policy(&fixtures().join("zero_retries.toml"));
    let report = what_if(events.clone(), zero, WhatIfOptions::default()).unwrap();
    let failures = failures(&events);
    let changed: HashMap<ExecutionId, _> = report
        .changes
        .iter()
        .map(|change| (change.execution_id, change))
        .collect();
    let mut checked = 0;
    for (execution_id, failed) in &failures {
        let first = &failed[0];
        if first.status == ExecutionStatus::Dlq {
            continue; // recorded at the DLQ at its first failure already: nothing changes
        }
        let change = changed
            .get(execution_id)
            .unwrap_or_else(|| panic!("{execution_id} retried under the recording: must change"));
        let after = change.after.as_ref().unwrap();
        assert_eq!(after.dlq_at, Some(first.at), "{change:?}");
        assert_eq!((after.retry_count, after.retries), (1, 0), "{change:?}");
        assert!(after.retry_schedule.is_empty());
        assert!(!change.beyond_history, "{change:?}");
        checked += 1;
    }
    assert!(checked > 100, "{checked}");
    // Nothing else changes: executions that never failed keep their outcome.
    for change in &report.changes {
        assert!(failures.contains_key(&change.execution_id), "{change:?}");
    }
    assert_eq!(report.changed, checked);
    assert_eq!(report.retries.after, 0);
    assert_eq!(report.retries.saved, report.retries.before);
    assert_eq!(report.dlq.after, failures.len() as u64);
}

#[test]
fn more_retries_than_were_reported_are_beyond_history() {
    let recorded = Policy::default();
    let events = simulated(2000, &recorded);
    let mut generous = Policy::default();
    generous.default_max_retries = 8;
    let report = what_if(events.clone(), generous, WhatIfOptions::default()).unwrap();
    // The simulated poison messages fail 6 times: the recording's maxRetries 5 sent them to the
    // DLQ; with 8 the sixth failure schedules a seventh attempt nobody reported.
    let exhausted: Vec<ExecutionId> = failures(&events)
        .into_iter()
        .filter(|(_, failed)| {
            failed
                .last()
                .is_some_and(|f| f.status == ExecutionStatus::Dlq)
        })
        .map(|(id, _)| id)
        .collect();
    assert!(exhausted.len() > 50, "{}", exhausted.len());
    for execution_id in &exhausted {
        let change = report
            .changes
            .iter()
            .find(|change| change.execution_id == *execution_id)
            .unwrap_or_else(|| panic!("{execution_id} must change"));
        assert!(change.beyond_history, "{change:?}");
        let after = change.after.as_ref().unwrap();
        assert_eq!(after.dlq_at, None);
        assert_eq!(after.retries, 6);
        assert!(change.beyond_history_at.is_some());
    }
    assert_eq!(report.beyond_history, exhausted.len() as u64);
    assert_eq!(report.dlq.after, 0);
    assert_eq!(report.retries.added, exhausted.len() as u64);
}

#[test]
fn queue_and_since_select_the_executions_compared() {
    let events = simulated(2000, &Policy::default());
    let zero = policy(&fixtures().join("zero_retries.toml"));
    let all = what_if(events.clone(), zero.clone(), WhatIfOptions::default()).unwrap();
    let queue = all.changes[0].queue.clone();
    let by_queue = what_if(
        events.clone(),
        zero.clone(),
        WhatIfOptions {
            queue: Some(queue.clone()),
            since: None,
        },
    )
    .unwrap();
    let expected: Vec<_> = all
        .changes
        .iter()
        .filter(|c| c.queue == queue)
        .cloned()
        .collect();
    assert!(!expected.is_empty() && expected.len() < all.changes.len());
    assert_eq!(by_queue.changes, expected);
    assert!(by_queue.executions < all.executions);
    assert_eq!(
        by_queue.events, all.events,
        "the replay still reads everything"
    );

    let since = all.changes[all.changes.len() / 2].enqueued_at;
    let recent = what_if(
        events,
        zero,
        WhatIfOptions {
            queue: None,
            since: Some(since),
        },
    )
    .unwrap();
    let expected: Vec<_> = all
        .changes
        .iter()
        .filter(|c| c.enqueued_at >= since)
        .cloned()
        .collect();
    assert!(!expected.is_empty() && expected.len() < all.changes.len());
    assert_eq!(recent.changes, expected);
}

#[test]
fn the_report_is_deterministic_whatever_the_streams_interleaving() {
    let events = simulated(1000, &Policy::default());
    let zero = policy(&fixtures().join("zero_retries.toml"));
    let first = json(&what_if(events.clone(), zero.clone(), WhatIfOptions::default()).unwrap());
    let again = json(&what_if(events.clone(), zero.clone(), WhatIfOptions::default()).unwrap());
    assert_eq!(first, again);
    // Another global order with the same order inside each stream: grouped by stream.
    let mut regrouped = events;
    regrouped.sort_by(|a, b| b.0.cmp(&a.0));
    let regrouped = json(&what_if(regrouped, zero, WhatIfOptions::default()).unwrap());
    assert_eq!(first, regrouped);
}

#[tokio::test]
async fn the_store_fed_replay_equals_the_in_memory_one() {
    let events = simulated(500, &Policy::default());
    let store = Arc::new(MemoryStore::new());
    let mut versions: HashMap<String, u64> = HashMap::new();
    for (stream, event) in &events {
        let version = versions.entry(stream.clone()).or_default();
        let appended = store
            .append(vec![StreamAppend {
                stream: stream.clone(),
                expected: ExpectedVersion::Length(*version),
                events: vec![NewEvent {
                    event_id: event
                        .report_key()
                        .event_id(usize::try_from(*version).unwrap()),
                    event_type: event.type_name().to_owned(),
                    schema_version: taskledger_domain::event::EVENT_SCHEMA_VERSION,
                    recorded_at_ms: 0,
                    data: event.encode_data(),
                }],
            }])
            .await
            .unwrap();
        assert!(appended[0].is_ok());
        *version += 1;
    }
    let zero = policy(&fixtures().join("zero_retries.toml"));
    let from_store = what_if_store(store, zero.clone(), WhatIfOptions::default(), &|_, _| {})
        .await
        .unwrap();
    let in_memory = what_if(events, zero, WhatIfOptions::default()).unwrap();
    assert!(from_store.changed > 0);
    assert_eq!(from_store, in_memory);
}
