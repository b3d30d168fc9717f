//! The conformance suite every backend passes. Each check takes a fresh, empty store; a backend's
//! tests call [`run_all`] with a constructor.

use taskledger_store::{EventStore, ExpectedVersion, NewEvent, StoreError, StreamAppend};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn event(n: u128) -> NewEvent {
    NewEvent {
        event_id: Uuid::from_u128(n),
        event_type: "TestEvent".into(),
        schema_version: 1,
        recorded_at_ms: n as i64,
        data: format!("{{\"n\":{n}}}").into_bytes(),
    }
}

fn append(stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> StreamAppend {
    StreamAppend {
        stream: stream.into(),
        expected,
        events,
    }
}

/// Runs every check, each on a store from `make`.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: EventStore,
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<S>>,
{
    appends_get_versions_and_positions(make().await).await;
    every_event_carries_its_stream_chain_hash(make().await).await;
    wrong_expected_version_is_a_conflict_and_appends_nothing(make().await).await;
    one_conflict_does_not_refuse_the_rest_of_a_call(make().await).await;
    reads_respect_from_and_max(make().await).await;
    concurrent_writers_expecting_the_same_length_exactly_one_wins(make().await).await;
    wait_for_wakes_on_append(make().await).await;
    bad_stream_names_are_refused(make().await).await;
    large_appends_read_back_from_any_position(make().await).await;
    queued_appends_commit_in_order_and_fall_with_their_fence(make().await).await;
    reappending_stored_events_writes_nothing(make().await).await;
    a_follower_sees_the_global_order_without_gaps_while_writers_append(make().await).await;
    a_subscription_resumes_from_its_checkpoint(make().await).await;
}

/// A writer that lost its answer and sends the same events again (same ids, same expected
/// length) is refused and stores nothing twice: event ids stay unique in the store.
/// Each event's hash chains on its stream's previous event (whatever the interleaving of streams,
/// the calls' grouping, or `Any` vs exact expectations), and equals the hash every other backend
/// gives the same events: the chain is computed from the events alone ([`taskledger_store::chain`]).
pub async fn every_event_carries_its_stream_chain_hash<S: EventStore>(store: Arc<S>) {
    use taskledger_store::chain::{event_hash, GENESIS};
    store
        .append(vec![
            append(
                "hash:a",
                ExpectedVersion::Length(0),
                vec![event(1), event(2)],
            ),
            append("hash:b", ExpectedVersion::Any, vec![event(3)]),
        ])
        .await
        .unwrap();
    store
        .append(vec![append("hash:a", ExpectedVersion::Any, vec![event(4)])])
        .await
        .unwrap();
    store
        .append(vec![
            append("hash:b", ExpectedVersion::Length(1), vec![event(5)]),
            append("hash:a", ExpectedVersion::Length(3), vec![event(6)]),
        ])
        .await
        .unwrap();
    let mut expected: std::collections::HashMap<&str, taskledger_store::chain::Hash> =
        Default::default();
    let all = store.read_all(0, usize::MAX).await.unwrap();
    assert_eq!(all.len(), 6);
    for (stream, numbers) in [("hash:a", vec![1, 2, 4, 6]), ("hash:b", vec![3, 5])] {
        let mut previous = GENESIS;
        let events = store.read_stream(stream, 0, usize::MAX).await.unwrap();
        for (version, (stored, n)) in events.iter().zip(numbers).enumerate() {
            let hash = event_hash(&previous, stream, version as u64, &event(n));
            assert_eq!(stored.hash, hash, "{stream} version {version}");
            previous = hash;
        }
        expected.insert(stream, previous);
    }
    for stored in &all {
        let from_stream = store
            .read_stream(&stored.stream, stored.version, 1)
            .await
            .unwrap();
        assert_eq!(
            from_stream[0].hash, stored.hash,
            "read_all and read_stream agree"
        );
    }
    // A conflict appends nothing, so the chain goes on from the last stored event.
    let refused = store
        .append(vec![append(
            "hash:a",
            ExpectedVersion::Length(9),
            vec![event(7)],
        )])
        .await
        .unwrap();
    assert!(refused[0].is_err());
    store
        .append(vec![append(
            "hash:a",
            ExpectedVersion::Length(4),
            vec![event(8)],
        )])
        .await
        .unwrap();
    let last = store.read_stream("hash:a", 4, 1).await.unwrap();
    assert_eq!(
        last[0].hash,
        event_hash(&expected["hash:a"], "hash:a", 4, &event(8))
    );
}

pub async fn reappending_stored_events_writes_nothing<S: EventStore>(store: Arc<S>) {
    let events = vec![event(1), event(2)];
    store
        .append(vec![append(
            "r",
            ExpectedVersion::Length(0),
            events.clone(),
        )])
        .await
        .unwrap()[0]
        .unwrap();
    let again = store
        .append(vec![append("r", ExpectedVersion::Length(0), events)])
        .await
        .unwrap();
    assert_eq!(again[0].unwrap_err().actual, 2);
    let all = store.read_all(0, usize::MAX).await.unwrap();
    let ids: Vec<Uuid> = all.iter().map(|record| record.event_id).collect();
    assert_eq!(ids, [1, 2].map(Uuid::from_u128));
    assert_eq!(store.head_position(), 2);
}

/// Many writers append at once while a follower tails the global order from 0: every batch it
/// reads starts exactly where it asked and is contiguous, and it ends with every event, in the
/// order a fresh read gives. A backend whose positions can become visible out of order (a
/// later commit's event before an earlier one's) fails here, as a follower would skip.
pub async fn a_follower_sees_the_global_order_without_gaps_while_writers_append<S: EventStore>(
    store: Arc<S>,
) {
    const WRITERS: u128 = 8;
    const APPENDS: u128 = 40;
    let total = (WRITERS * APPENDS) as u64;
    let follower = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut from = 0u64;
            while from < total {
                store.wait_for(from, Duration::from_secs(10)).await;
                let batch = store.read_all(from, 16).await.unwrap();
                for (offset, record) in batch.iter().enumerate() {
                    assert_eq!(record.position, from + offset as u64, "a gap in the order");
                }
                from += batch.len() as u64;
                seen.extend(batch);
            }
            seen
        })
    };
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..APPENDS {
                let stream = format!("w{writer}");
                store
                    .append(vec![append(
                        &stream,
                        ExpectedVersion::Length(n as u64),
                        vec![event(writer * 1000 + n)],
                    )])
                    .await
                    .unwrap()[0]
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .expect("the follower saw every event")
        .unwrap();
    assert_eq!(seen, store.read_all(0, usize::MAX).await.unwrap());
    // Each stream's events are in its version order inside the global order.
    for writer in 0..WRITERS {
        let versions: Vec<u64> = seen
            .iter()
            .filter(|record| record.stream == format!("w{writer}"))
            .map(|record| record.version)
            .collect();
        assert_eq!(versions, (0..APPENDS as u64).collect::<Vec<_>>());
    }
}

/// A subscriber that stopped at a checkpoint resumes from it: it reads exactly the events after
/// it, and waiting returns at once when there are some.
pub async fn a_subscription_resumes_from_its_checkpoint<S: EventStore>(store: Arc<S>) {
    for n in 0..10u128 {
        store
            .append(vec![append("c", ExpectedVersion::Any, vec![event(n)])])
            .await
            .unwrap();
    }
    let checkpoint = 6u64;
    let started = std::time::Instant::now();
    assert_eq!(store.wait_for(checkpoint, Duration::from_secs(5)).await, 10);
    assert!(started.elapsed() < Duration::from_secs(1));
    let rest = store.read_all(checkpoint, usize::MAX).await.unwrap();
    let ids: Vec<Uuid> = rest.iter().map(|record| record.event_id).collect();
    assert_eq!(ids, (6..10).map(Uuid::from_u128).collect::<Vec<_>>());
}

/// Appends queued one after another land in that order, each decided on top of the one before
/// while it may still be in flight; once one is refused, every one queued after it is refused
/// too, even one whose expected length happens to match the stream.
pub async fn queued_appends_commit_in_order_and_fall_with_their_fence<S: EventStore>(
    store: Arc<S>,
) {
    let first = store
        .queue_append(
            vec![append("p", ExpectedVersion::Length(0), vec![event(1)])],
            None,
        )
        .await;
    let second = store
        .queue_append(
            vec![append(
                "p",
                ExpectedVersion::Length(1),
                vec![event(2), event(3)],
            )],
            Some(first.fence()),
        )
        .await;
    let second_fence = second.fence();
    let answers = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(answers.0[0].unwrap().stream_length, 1);
    assert_eq!(answers.1[0].unwrap().stream_length, 3);
    assert!(!second_fence.refused());

    // A refused append (it expects 5; "p" holds 3), then one built on it that expects 3 + 2 = 5:
    // another writer makes "p" 5 long in between, so only the fence stops it.
    let refused = store
        .queue_append(
            vec![append("p", ExpectedVersion::Length(5), vec![event(4)])],
            Some(second_fence),
        )
        .await;
    let other = store
        .queue_append(
            vec![append(
                "p",
                ExpectedVersion::Length(3),
                vec![event(5), event(6)],
            )],
            None,
        )
        .await;
    let fenced = store
        .queue_append(
            vec![append("p", ExpectedVersion::Length(5), vec![event(7)])],
            Some(refused.fence()),
        )
        .await;
    let fenced_fence = fenced.fence();
    assert!(refused.await.unwrap()[0].is_err(), "a conflict");
    assert_eq!(other.await.unwrap()[0].unwrap().stream_length, 5);
    assert_eq!(fenced.await, Err(StoreError::Fenced));
    assert!(fenced_fence.refused(), "and appends after it fall too");
    let ids: Vec<Uuid> = store
        .read_stream("p", 0, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|record| record.event_id)
        .collect();
    assert_eq!(ids, [1, 2, 3, 5, 6].map(Uuid::from_u128));
}

/// One call big enough to span many of a backend's internal blocks reads back whole, from any
/// position and any stream version.
pub async fn large_appends_read_back_from_any_position<S: EventStore>(store: Arc<S>) {
    let big = |n: u128| NewEvent {
        data: vec![b'x'; 700 + (n as usize % 300)],
        ..event(n)
    };
    let appends: Vec<StreamAppend> = (0..600u128)
        .map(|n| append(&format!("s{}", n % 7), ExpectedVersion::Any, vec![big(n)]))
        .collect();
    store.append(appends).await.unwrap();
    let all = store.read_all(0, usize::MAX).await.unwrap();
    assert_eq!(all.len(), 600);
    for (index, record) in all.iter().enumerate() {
        assert_eq!(record.position, index as u64);
        assert_eq!(record.event_id, Uuid::from_u128(index as u128));
        assert_eq!(record.data.len(), 700 + index % 300);
    }
    for from in [1u64, 57, 299, 598] {
        let tail = store.read_all(from, 3).await.unwrap();
        assert_eq!(tail[0].position, from);
    }
    let stream = store.read_stream("s3", 40, 5).await.unwrap();
    let versions: Vec<u64> = stream.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![40, 41, 42, 43, 44]);
    assert_eq!(stream[0].event_id, Uuid::from_u128(3 + 40 * 7));
}

pub async fn appends_get_versions_and_positions<S: EventStore>(store: Arc<S>) {
    let result = store
        .append(vec![append(
            "a",
            ExpectedVersion::Length(0),
            vec![event(1), event(2)],
        )])
        .await
        .unwrap();
    let appended = result[0].unwrap();
    assert_eq!((appended.first_position, appended.stream_length), (0, 2));
    let result = store
        .append(vec![
            append("b", ExpectedVersion::Any, vec![event(3)]),
            append("a", ExpectedVersion::Length(2), vec![event(4)]),
        ])
        .await
        .unwrap();
    assert_eq!(result[1].unwrap().first_position, 3);
    assert_eq!(store.head_position(), 4);
    let a = store.read_stream("a", 0, usize::MAX).await.unwrap();
    let summary: Vec<_> = a
        .iter()
        .map(|e| (e.version, e.position, e.event_id))
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, 0, Uuid::from_u128(1)),
            (1, 1, Uuid::from_u128(2)),
            (2, 3, Uuid::from_u128(4))
        ]
    );
    assert_eq!(a[2].data, b"{\"n\":4}");
    assert_eq!(a[2].recorded_at_ms, 4);
    let all = store.read_all(0, usize::MAX).await.unwrap();
    let streams: Vec<_> = all
        .iter()
        .map(|e| (e.stream.as_str(), e.position))
        .collect();
    assert_eq!(streams, vec![("a", 0), ("a", 1), ("b", 2), ("a", 3)]);
}

pub async fn wrong_expected_version_is_a_conflict_and_appends_nothing<S: EventStore>(
    store: Arc<S>,
) {
    store
        .append(vec![append(
            "a",
            ExpectedVersion::Length(0),
            vec![event(1)],
        )])
        .await
        .unwrap();
    let result = store
        .append(vec![append(
            "a",
            ExpectedVersion::Length(0),
            vec![event(2)],
        )])
        .await
        .unwrap();
    let conflict = result[0].unwrap_err();
    assert_eq!(conflict.actual, 1);
    assert_eq!(store.read_stream("a", 0, 10).await.unwrap().len(), 1);
    assert_eq!(store.head_position(), 1);
}

pub async fn one_conflict_does_not_refuse_the_rest_of_a_call<S: EventStore>(store: Arc<S>) {
    let result = store
        .append(vec![
            append("a", ExpectedVersion::Length(5), vec![event(1)]),
            append("b", ExpectedVersion::Length(0), vec![event(2)]),
            // Appends of one call see the ones before them.
            append("b", ExpectedVersion::Length(1), vec![event(3)]),
        ])
        .await
        .unwrap();
    assert!(result[0].is_err());
    assert_eq!(result[2].unwrap().stream_length, 2);
    assert!(store.read_stream("a", 0, 10).await.unwrap().is_empty());
    // After a conflict, the stream's later appends in the same call are refused too, even when
    // their expected length happens to match: they were built on the refused one.
    let result = store
        .append(vec![
            append("b", ExpectedVersion::Length(1), vec![event(4)]),
            append("b", ExpectedVersion::Length(2), vec![event(5)]),
        ])
        .await
        .unwrap();
    assert!(result[0].is_err() && result[1].is_err());
    assert_eq!(store.read_stream("b", 0, 10).await.unwrap().len(), 2);
}

pub async fn reads_respect_from_and_max<S: EventStore>(store: Arc<S>) {
    for n in 0..50u128 {
        let stream = if n % 2 == 0 { "even" } else { "odd" };
        store
            .append(vec![append(stream, ExpectedVersion::Any, vec![event(n)])])
            .await
            .unwrap();
    }
    let odd = store.read_stream("odd", 10, 5).await.unwrap();
    assert_eq!(
        odd.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![10, 11, 12, 13, 14]
    );
    assert_eq!(odd[0].event_id, Uuid::from_u128(21));
    let all = store.read_all(47, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![47, 48, 49]
    );
    assert!(store.read_all(50, 10).await.unwrap().is_empty());
    assert!(store.read_stream("none", 0, 10).await.unwrap().is_empty());
}

pub async fn concurrent_writers_expecting_the_same_length_exactly_one_wins<S: EventStore>(
    store: Arc<S>,
) {
    let mut tasks = Vec::new();
    for n in 0..100u128 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(vec![append(
                    "race",
                    ExpectedVersion::Length(0),
                    vec![event(n)],
                )])
                .await
                .unwrap()[0]
                .is_ok()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(store.read_stream("race", 0, 1000).await.unwrap().len(), 1);
}

pub async fn wait_for_wakes_on_append<S: EventStore>(store: Arc<S>) {
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.wait_for(0, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    store
        .append(vec![append("a", ExpectedVersion::Any, vec![event(1)])])
        .await
        .unwrap();
    assert_eq!(waiter.await.unwrap(), 1);
    assert_eq!(store.wait_for(5, Duration::from_millis(10)).await, 1);
}

pub async fn bad_stream_names_are_refused<S: EventStore>(store: Arc<S>) {
    let result = store
        .append(vec![append("a\0b", ExpectedVersion::Any, vec![event(1)])])
        .await;
    assert!(matches!(result, Err(StoreError::InvalidStream { .. })));
    assert_eq!(store.head_position(), 0);
}
