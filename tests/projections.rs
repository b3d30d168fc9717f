//! The read models against a naive model: random report sequences (races, duplicates, invalid
//! transitions, manual retries, unknown tasks) are ingested and projected in random chunk sizes,
//! in several rounds; the stored models must equal what a plain fold of the same events says,
//! and a rebuild must give the same digests.

mod common;

use common::{step, to_report};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use taskledger_domain::{Event, ExecutionStatus, Policy, Report, TaskId, Timestamp};
use taskledger_ingest::{FixedClock, Ledger, LedgerConfig};
use taskledger_projections::digest::digests;
use taskledger_projections::query::{self, DlqQuery};
use taskledger_projections::record::AttemptOutcome;
use taskledger_projections::{catch_up, CatchUpOptions, Kv, MemoryKv, Projector};
use taskledger_store::{MemoryStore, SharedStore};

type ExecutionsByKey = BTreeMap<(String, String), Naive>;
type RejectionsByQueue = BTreeMap<String, BTreeMap<&'static str, u64>>;

/// The naive model: the latest facts of every execution, straight from the events.
#[derive(Debug, Default, Clone, PartialEq)]
struct Naive {
    queue: String,
    status: Option<ExecutionStatus>,
    retry_count: u32,
    category: Option<String>,
    next_retry_at: Option<Timestamp>,
    /// Claims that took the execution over while it was processing.
    reclaims: u32,
}

fn naive(events: &[(String, Event)]) -> (ExecutionsByKey, RejectionsByQueue) {
    let mut executions: BTreeMap<(String, String), Naive> = BTreeMap::new();
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    let mut rejected: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for (stream, event) in events {
        let key = (stream.clone(), event.execution_id().to_string());
        match event {
            Event::ExecutionEnqueued(e) => {
                order.entry(stream.clone()).or_default().push(key.1.clone());
                executions.insert(
                    key,
                    Naive {
                        queue: e.queue.clone(),
                        status: Some(ExecutionStatus::Queued),
                        ..Naive::default()
                    },
                );
            }
            Event::ExecutionClaimed(e) => {
                let x = executions.get_mut(&key).unwrap();
                x.status = Some(ExecutionStatus::Processing);
                x.reclaims += u32::from(e.reclaim.is_some());
            }
            Event::ExecutionSucceeded(_) => {
                let x = executions.get_mut(&key).unwrap();
                x.status = Some(ExecutionStatus::Completed);
                x.next_retry_at = None;
            }
            Event::ExecutionFailed(e) => {
                let x = executions.get_mut(&key).unwrap();
                x.status = Some(e.status);
                x.retry_count = e.retry_count;
                x.category = Some(e.category.clone());
                x.next_retry_at = e.next_retry_at;
            }
            Event::ExecutionArchived(_) => {
                let x = executions.get_mut(&key).unwrap();
                x.status = Some(ExecutionStatus::Archived);
                x.next_retry_at = None;
            }
            Event::ReportRejected(e) => {
                let queue = executions
                    .get(&key)
                    .or_else(|| {
                        order
                            .get(stream)
                            .and_then(|o| o.last())
                            .and_then(|last| executions.get(&(stream.clone(), last.clone())))
                    })
                    .map_or_else(
                        || stream.split(':').next().unwrap().to_owned(),
                        |x| x.queue.clone(),
                    );
                *rejected
                    .entry(queue)
                    .or_default()
                    .entry(e.reason.name())
                    .or_default() += 1;
            }
        }
    }
    (executions, rejected)
}

fn set_of(
    executions: &BTreeMap<(String, String), Naive>,
    status: ExecutionStatus,
) -> BTreeSet<(String, String)> {
    executions
        .iter()
        .filter(|(_, x)| x.status == Some(status))
        .map(|(k, _)| k.clone())
        .collect()
}

async fn project(store: SharedStore, kv: Arc<dyn Kv>, chunk: usize) {
    let mut projector = Projector::new(kv);
    let options = CatchUpOptions {
        chunk_events: chunk,
        ..CatchUpOptions::default()
    };
    catch_up(store, &mut projector, &options, &|_, _| {})
        .await
        .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn stored_models_equal_a_naive_fold(
        steps in prop::collection::vec(step(), 1..150),
        rounds in 1usize..4,
        chunk in 1usize..40,
        rebuild_chunk in 1usize..1000,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store: SharedStore = Arc::new(MemoryStore::new());
            let ledger = Ledger::new(store.clone(), Policy::default(), Arc::new(FixedClock(0)), LedgerConfig::default());
            let kv: Arc<dyn Kv> = Arc::new(MemoryKv::new());
            // Ingest in rounds, projecting after each: the runner resumes from its checkpoint.
            let reports: Vec<Report> = steps.iter().map(to_report).collect();
            let per_round = reports.len().div_ceil(rounds);
            for round in reports.chunks(per_round) {
                ledger.submit_batch(round.to_vec()).await.unwrap();
                project(store.clone(), kv.clone(), chunk).await;
            }
            let all: Vec<(String, Event)> = store
                .read_all(0, usize::MAX)
                .await
                .unwrap()
                .into_iter()
                .map(|r| {
                    let event = Event::decode(&r.event_type, r.schema_version, &r.data).unwrap();
                    (r.stream, event)
                })
                .collect();
            let (executions, rejected) = naive(&all);

            // DLQ and archived: exactly the executions in those statuses.
            for (status, archived) in [(ExecutionStatus::Dlq, false), (ExecutionStatus::Archived, true)] {
                let mut listed = BTreeSet::new();
                let mut cursor = None;
                loop {
                    let page = query::dlq_page(kv.as_ref(), &DlqQuery { archived, limit: 3, cursor: cursor.clone(), ..DlqQuery::default() }).unwrap();
                    for item in &page.items {
                        let key = (item.task_id.to_string(), item.execution_id.to_string());
                        prop_assert_eq!(item.retry_count, executions[&key].retry_count);
                        prop_assert!(listed.insert(key), "listed twice");
                    }
                    match page.next { Some(next) => cursor = Some(next), None => break }
                }
                prop_assert_eq!(listed, set_of(&executions, status));
            }
            // Stuck (everything processing, judged far in the future) and due retries.
            let far = Timestamp::parse("2030-01-01T00:00:00Z").unwrap();
            let stuck: BTreeSet<_> = query::stuck(kv.as_ref(), far, 0, None).unwrap().items.into_iter()
                .map(|s| (s.item.task_id.to_string(), s.item.execution_id.to_string())).collect();
            prop_assert_eq!(stuck, set_of(&executions, ExecutionStatus::Processing));
            let due: BTreeSet<_> = query::due(kv.as_ref(), far, None).unwrap().items.into_iter()
                .map(|d| (d.task_id.to_string(), d.execution_id.to_string())).collect();
            let expected_due: BTreeSet<_> = executions.iter()
                .filter(|(_, x)| x.status == Some(ExecutionStatus::Failed) && x.next_retry_at.is_some())
                .map(|(k, _)| k.clone()).collect();
            prop_assert_eq!(due, expected_due);
            // Queue stats: counts by status and rejections by reason.
            let stats = query::queue_stats(kv.as_ref(), None).unwrap();
            for (queue, queue_stats) in &stats.queues {
                for status in ExecutionStatus::ALL {
                    let expected = executions.values().filter(|x| &x.queue == queue && x.status == Some(status)).count() as u64;
                    let mut copy = queue_stats.clone();
                    prop_assert_eq!(*copy.count_mut(status), expected, "{} {}", queue, status);
                }
                for (reason, count) in &queue_stats.rejected {
                    let expected = rejected.get(queue).and_then(|r| r.get(reason.as_str())).copied().unwrap_or(0);
                    prop_assert_eq!(*count, expected, "{} {}", queue, reason);
                }
            }
            // Every task's stored record equals a fold of its stream.
            let streams: BTreeSet<&String> = all.iter().map(|(s, _)| s).collect();
            for stream in streams {
                let task_id = TaskId::parse(stream).unwrap();
                let stored = query::stored_task(kv.as_ref(), &task_id).unwrap();
                let folded = taskledger_projections::load_task(store.as_ref(), &task_id, None).await.unwrap();
                prop_assert_eq!(&stored, &folded);
                // Each reclaim abandoned exactly one attempt, and flags the task.
                let record = stored.unwrap();
                for x in &record.executions {
                    let naive = &executions[&(stream.clone(), x.execution_id.to_string())];
                    let abandoned = x.attempts.iter().filter(|a| a.outcome == AttemptOutcome::Abandoned).count();
                    prop_assert_eq!(x.reclaims, naive.reclaims);
                    prop_assert_eq!(abandoned as u32, naive.reclaims);
                }
                let flagged = record.status_view(&task_id).flags.contains(&"redelivered");
                prop_assert_eq!(flagged, record.executions.iter().any(|x| x.reclaims > 0));
            }
            // A rebuild in one go, with other chunk boundaries, gives the same digests.
            let rebuilt: Arc<dyn Kv> = Arc::new(MemoryKv::new());
            project(store.clone(), rebuilt.clone(), rebuild_chunk).await;
            prop_assert_eq!(digests(kv.as_ref()).unwrap(), digests(rebuilt.as_ref()).unwrap());
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn as_of_replays_only_what_had_happened() {
    let store: SharedStore = Arc::new(MemoryStore::new());
    let ledger = Ledger::new(
        store.clone(),
        Policy::default(),
        Arc::new(FixedClock(0)),
        LedgerConfig::default(),
    );
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/partner_pipeline.ndjson"
    ))
    .unwrap();
    let reports: Vec<Report> = text
        .lines()
        .map(|l| Report::from_json(l).unwrap())
        .collect();
    ledger.submit_batch(reports).await.unwrap();
    let at = |t: &str| {
        let kv: Arc<dyn Kv> = Arc::new(MemoryKv::new());
        let options = CatchUpOptions {
            as_of: Timestamp::parse(t),
            ..CatchUpOptions::default()
        };
        (kv, options)
    };
    // At 11:00 two executions were in the DLQ; by 12:00 both had been archived.
    let (kv, options) = at("2026-01-21T11:00:00Z");
    catch_up(
        store.clone(),
        &mut Projector::new(kv.clone()),
        &options,
        &|_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(
        query::dlq_page(
            kv.as_ref(),
            &DlqQuery {
                limit: 10,
                ..DlqQuery::default()
            }
        )
        .unwrap()
        .items
        .len(),
        2
    );
    let (kv, options) = at("2026-01-21T12:00:00Z");
    catch_up(
        store.clone(),
        &mut Projector::new(kv.clone()),
        &options,
        &|_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(
        query::dlq_page(
            kv.as_ref(),
            &DlqQuery {
                limit: 10,
                ..DlqQuery::default()
            }
        )
        .unwrap()
        .items
        .len(),
        0
    );
    let stats = query::queue_stats(kv.as_ref(), Some("partner_tasks")).unwrap();
    assert_eq!(stats.queues["partner_tasks"].archived, 2);
}
