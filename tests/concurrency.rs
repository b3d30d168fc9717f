//! Decisions are atomic per stream under many concurrent writers in one process (sled backend).

use std::sync::Arc;
use taskledger_domain::event::RejectionReason;
use taskledger_domain::{Outcome, Policy, Report, TaskId};
use taskledger_ingest::{FixedClock, Ledger, LedgerConfig};
use taskledger_store::SharedStore;
use taskledger_store_sled::{SledConfig, SledStore};

fn ledger(store: SharedStore) -> Arc<Ledger> {
    Arc::new(Ledger::new(
        store,
        Policy::default(),
        Arc::new(FixedClock(0)),
        LedgerConfig::default(),
    ))
}

fn report(json: String) -> Report {
    Report::from_json(&json).unwrap()
}

fn execution(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// `count` enqueues of `task_id`, each its own execution, spread over `ledgers` in turn and
/// released together (a barrier); their answers, in submission order.
async fn gated_enqueues(
    ledgers: &[Arc<Ledger>],
    task_id: &str,
    count: u32,
) -> Vec<taskledger_ingest::Submitted> {
    let gate = Arc::new(tokio::sync::Barrier::new(count as usize));
    let mut tasks = Vec::new();
    for n in 0..count {
        let (ledger, gate) = (ledgers[n as usize % ledgers.len()].clone(), gate.clone());
        let enqueue = report(format!(
            r#"{{"op":"enqueue","taskId":"{task_id}","executionId":"{}","queue":"q","at":"2026-01-21T10:00:00.000Z"}}"#,
            execution(n),
        ));
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            ledger.submit(enqueue).await.unwrap()
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_enqueues_of_one_task_make_exactly_one_execution() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SledStore::open(SledConfig::new(dir.path())).unwrap());
    let ledger = ledger(store.clone());
    let mut tasks = Vec::new();
    for n in 0..1000u32 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let enqueue = report(format!(
                r#"{{"op":"enqueue","taskId":"q:race","executionId":"{}","queue":"q","at":"2026-01-21T10:00:{:02}.{:03}Z"}}"#,
                execution(n),
                n / 1000,
                n % 1000
            ));
            ledger.submit(enqueue).await.unwrap().outcome
        }));
    }
    let mut accepted = 0;
    let mut duplicates = 0;
    for task in tasks {
        match task.await.unwrap() {
            Outcome::Accepted => accepted += 1,
            Outcome::Rejected(RejectionReason::DuplicateEnqueue { .. }) => duplicates += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((accepted, duplicates), (1, 999));
    // The stream agrees: one enqueue, 999 recorded rejections, and a fresh fold says one execution.
    let projection =
        taskledger_projections::load_task(store.as_ref(), &TaskId::parse("q:race").unwrap(), None)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(projection.executions.len(), 1);
    let view = projection.status_view(&TaskId::parse("q:race").unwrap());
    assert_eq!(view.rejected.get("duplicateEnqueue"), Some(&999));
    assert_eq!(store.head_position(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_claims_of_one_execution_make_exactly_one_processing() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SledStore::open(SledConfig::new(dir.path())).unwrap());
    let ledger = ledger(store.clone());
    let id = execution(1);
    ledger
        .submit(report(format!(
            r#"{{"op":"enqueue","taskId":"q:claim","executionId":"{id}","queue":"q","at":"2026-01-21T10:00:00Z"}}"#
        )))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for worker in 0..100 {
        let ledger = ledger.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let claim = report(format!(
                r#"{{"op":"claim","taskId":"q:claim","executionId":"{id}","worker":"w{worker}","at":"2026-01-21T10:00:01Z"}}"#
            ));
            ledger.submit(claim).await.unwrap().outcome
        }));
    }
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Outcome::Accepted => winners += 1,
            Outcome::Rejected(RejectionReason::NotClaimable { status }) => {
                assert_eq!(status.as_str(), "processing")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners, 1);
    let projection =
        taskledger_projections::load_task(store.as_ref(), &TaskId::parse("q:claim").unwrap(), None)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(projection.executions[0].attempts.len(), 1);
    let view = projection.status_view(&TaskId::parse("q:claim").unwrap());
    assert_eq!(view.rejected.get("notClaimable"), Some(&99));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ledgers_on_one_store_stay_consistent_through_conflicts() {
    // Two writers that do not share a cache (as two processes on EventStoreDB would) race on one
    // stream: optimistic concurrency makes them re-decide instead of both winning.
    let store: SharedStore = Arc::new(taskledger_store::MemoryStore::new());
    let (a, b) = (ledger(store.clone()), ledger(store.clone()));
    let id = execution(1);
    a.submit(report(format!(
        r#"{{"op":"enqueue","taskId":"q:two","executionId":"{id}","queue":"q","at":"2026-01-21T10:00:00Z"}}"#
    )))
    .await
    .unwrap();
    // b has cached nothing yet; warm it so its state is stale after a's claim.
    b.submit(report(format!(
        r#"{{"op":"enqueue","taskId":"q:two","executionId":"{}","queue":"q","at":"2026-01-21T10:00:01Z"}}"#,
        execution(2)
    )))
    .await
    .unwrap();
    let claim = |worker: &str| {
        report(format!(
            r#"{{"op":"claim","taskId":"q:two","executionId":"{id}","worker":"{worker}","at":"2026-01-21T10:00:02Z"}}"#
        ))
    };
    let first = a.submit(claim("a")).await.unwrap();
    let second = b.submit(claim("b")).await.unwrap();
    assert_eq!(first.outcome, Outcome::Accepted);
    assert!(matches!(
        second.outcome,
        Outcome::Rejected(RejectionReason::NotClaimable { .. })
    ));
}

/// Concurrent reports of one stream are decided together (combined into shared appends): more of
/// them than one holder takes at once still each get their own answer and their own event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_concurrent_reports_of_one_stream_each_get_their_own_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SledStore::open(SledConfig::new(dir.path())).unwrap());
    let ledgers = [ledger(store.clone())];
    let mut positions = std::collections::BTreeSet::new();
    let mut accepted = Vec::new();
    for submitted in gated_enqueues(&ledgers, "q:hot", 5000).await {
        assert!(!submitted.duplicate);
        assert_eq!(submitted.event_ids.len(), 1);
        assert!(positions.insert(submitted.position.expect("appended")));
        if submitted.outcome == Outcome::Accepted {
            accepted.push(submitted.position.unwrap());
        }
    }
    assert_eq!(positions.len(), 5000);
    // The accepted one is the first in the stream: every later enqueue saw it and was refused.
    assert_eq!(accepted, vec![*positions.first().unwrap()]);
    assert_eq!(store.head_position(), 5000);
}

/// Two ledgers (two caches, as two processes would have) pipeline batches of one hot stream into
/// one sled store: each one's batches in flight conflict with the other's, are refused with the
/// batch before them (fenced), and are decided again. Every report still gets one answer and one
/// event, and exactly one enqueue wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_refused_by_a_conflict_are_decided_again() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SledStore::open(SledConfig::new(dir.path())).unwrap());
    let ledgers = [ledger(store.clone()), ledger(store.clone())];
    let mut positions = std::collections::BTreeSet::new();
    let mut accepted = 0;
    for submitted in gated_enqueues(&ledgers, "q:contended", 2000).await {
        assert_eq!(submitted.event_ids.len(), 1);
        assert!(positions.insert(submitted.position.expect("appended")));
        accepted += usize::from(submitted.outcome == Outcome::Accepted);
    }
    assert_eq!(accepted, 1);
    assert_eq!(store.head_position(), 2000);
    let projection = taskledger_projections::load_task(
        store.as_ref(),
        &TaskId::parse("q:contended").unwrap(),
        None,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(projection.executions.len(), 1);
}
