//! Property test against a simple model: random report sequences (races, duplicates, invalid
//! transitions, manual retries, unknown tasks) submitted through the ledger on sled, in random
//! batch sizes, give exactly the events a plain in-memory fold of `decide`/`apply` gives, the
//! same outcomes, and survive reopening; submitting them all again appends nothing.

mod common;

use common::{step, to_report};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use taskledger_domain::{decide, Event, Policy, Report, TaskState};
use taskledger_ingest::{FixedClock, Ledger, LedgerConfig};
use taskledger_store::SharedStore;
use taskledger_store_sled::{SledConfig, SledStore};

fn leased_policy() -> Policy {
    let policy: Policy =
        serde_json::from_str(r#"{"claim":{"queues":{"alpha":{"lease_ms":600000}}}}"#).unwrap();
    policy.compiled().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_ledger_on_sled_equals_a_plain_fold(
        steps in prop::collection::vec(step(), 1..120),
        batch in 1usize..17,
    ) {
        let reports: Vec<Report> = steps.iter().map(to_report).collect();
        // The model: decide and apply in order, in memory. Queue alpha has a 10-minute claim
        // lease, so lease reclaims happen beside the redelivered ones.
        let policy = leased_policy();
        let mut model: HashMap<String, TaskState> = HashMap::new();
        let mut model_events: HashMap<String, Vec<(uuid::Uuid, Vec<u8>)>> = HashMap::new();
        let mut model_outcomes = Vec::new();
        for report in &reports {
            let state = model.entry(report.task_id.to_string()).or_default();
            let decision = decide(state, report, &policy);
            for (index, event) in decision.events.iter().enumerate() {
                state.apply(event);
                model_events
                    .entry(report.task_id.to_string())
                    .or_default()
                    .push((decision.report_key.event_id(index), event.encode_data()));
            }
            model_outcomes.push((decision.outcome, decision.duplicate));
        }

        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        runtime.block_on(async {
            let open = || {
                let store: SharedStore = Arc::new(SledStore::open(SledConfig::new(dir.path())).unwrap());
                let ledger = Ledger::new(store.clone(), leased_policy(), Arc::new(FixedClock(7)), LedgerConfig::default());
                (store, ledger)
            };
            let (store, ledger) = open();
            let mut outcomes = Vec::new();
            for chunk in reports.chunks(batch) {
                for submitted in ledger.submit_batch(chunk.to_vec()).await.unwrap() {
                    outcomes.push((submitted.outcome, submitted.duplicate));
                }
            }
            prop_assert_eq!(&outcomes, &model_outcomes);
            let head = store.head_position();
            drop(ledger);
            drop(store);

            // Reopened: the same streams, byte for byte, and a second submission is all duplicates.
            let (store, ledger) = open();
            prop_assert_eq!(store.head_position(), head);
            for (stream, expected) in &model_events {
                let stored: Vec<(uuid::Uuid, Vec<u8>)> = store
                    .read_stream(stream, 0, usize::MAX)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|record| (record.event_id, record.data))
                    .collect();
                prop_assert_eq!(&stored, expected);
            }
            for submitted in ledger.submit_batch(reports.clone()).await.unwrap() {
                prop_assert!(submitted.duplicate);
            }
            prop_assert_eq!(store.head_position(), head);
            // Every stored event decodes back to what the model applied.
            for record in store.read_all(0, usize::MAX).await.unwrap() {
                let event = Event::decode(&record.event_type, record.schema_version, &record.data).unwrap();
                prop_assert_eq!(event.encode_data(), record.data);
            }
            Ok(())
        })?;
    }
}
