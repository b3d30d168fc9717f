//! Every backend passes the same suite; sled also survives reopening.

use std::sync::Arc;
use taskledger_store::{
    conformance, EventStore, ExpectedVersion, MemoryStore, NewEvent, SledConfig, SledStore,
    StreamAppend,
};

#[tokio::test]
async fn memory_backend_conforms() {
    conformance::run_all(|| async { Arc::new(MemoryStore::new()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_backend_conforms() {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_all(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
        dirs.lock().unwrap().push(dir);
        async { Arc::new(store) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_reopens_with_the_same_events_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
        for n in 0..20u128 {
            store
                .append(vec![StreamAppend {
                    stream: format!("s{}", n % 3),
                    expected: ExpectedVersion::Any,
                    events: vec![NewEvent {
                        event_id: uuid::Uuid::from_u128(n),
                        event_type: "T".into(),
                        schema_version: 1,
                        recorded_at_ms: 0,
                        data: vec![n as u8; 10],
                    }],
                }])
                .await
                .unwrap();
        }
        store.read_all(0, 100).await.unwrap()
    };
    let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
    assert_eq!(store.head_position(), 20);
    assert_eq!(store.read_all(0, 100).await.unwrap(), before);
    // Stream heads are recovered from disk, so expected versions still hold.
    let result = store
        .append(vec![StreamAppend {
            stream: "s0".into(),
            expected: ExpectedVersion::Length(7),
            events: vec![],
        }])
        .await
        .unwrap();
    assert!(result[0].is_ok());
}

#[tokio::test]
async fn a_directory_of_something_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        // No background flusher: it would hold the directory's lock a moment after the drop.
        let db = sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .unwrap();
        db.insert("x", "y").unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(
        SledStore::open(SledConfig::new(dir.path())),
        Err(taskledger_store::StoreError::Format { .. })
    ));
}
