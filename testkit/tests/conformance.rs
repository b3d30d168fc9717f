//! Every backend passes the same suite; sled also survives reopening.

use std::sync::Arc;
use taskledger_store::{EventStore, ExpectedVersion, MemoryStore, NewEvent, StreamAppend};
use taskledger_store_sled::{SledConfig, SledStore};
use taskledger_testkit::conformance;

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

/// sled itself on `dir`. No background flusher: it would hold the directory's lock a moment
/// after the drop.
/// sled's own database in `dir`, waiting out the lock of one this test has just dropped (sled
/// lets go of it a moment later).
fn raw_sled(dir: &std::path::Path) -> sled::Db {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new().path(dir).flush_every_ms(None).open() {
            Err(error)
                if error.to_string().contains("could not acquire lock")
                    && started.elapsed() < std::time::Duration::from_secs(5) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
}

/// A sled directory holding one key, flushed and closed.
fn sled_with(dir: &std::path::Path, key: &str, value: &str) {
    let db = raw_sled(dir);
    db.insert(key, value).unwrap();
    db.flush().unwrap();
}

#[tokio::test]
async fn a_directory_of_something_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    sled_with(dir.path(), "x", "y");
    assert!(matches!(
        SledStore::open(SledConfig::new(dir.path())),
        Err(taskledger_store::StoreError::Format { .. })
    ));
}

fn event(n: u128) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::from_u128(n),
        event_type: "T".into(),
        schema_version: 1,
        recorded_at_ms: 0,
        data: vec![n as u8; 100],
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// What a crash leaves: the directory as it is on disk while the store is open. sled is flushed
/// only at checkpoints, so it lacks the latest commits; the write-ahead log holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_taken_while_open_holds_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
    for n in 0..40u128 {
        store
            .append(vec![StreamAppend {
                stream: format!("s{}", n % 4),
                expected: ExpectedVersion::Length((n / 4) as u64 * 2),
                events: vec![event(n), event(1000 + n)],
            }])
            .await
            .unwrap()[0]
            .unwrap();
    }
    let acknowledged = store.read_all(0, 1000).await.unwrap();
    copy_dir(dir.path(), crashed.path());
    drop(store);
    let reopened = SledStore::open(SledConfig::new(crashed.path())).unwrap();
    assert!(
        reopened
            .stats()
            .replayed_commits
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "sled alone held every commit: the log was not needed, so this test proves nothing"
    );
    assert_eq!(reopened.head_position(), 80);
    assert_eq!(reopened.read_all(0, 1000).await.unwrap(), acknowledged);
    // The stream heads came back too: the next append conflicts exactly where it should.
    let result = reopened
        .append(vec![StreamAppend {
            stream: "s1".into(),
            expected: ExpectedVersion::Length(19),
            events: vec![event(5000)],
        }])
        .await
        .unwrap();
    assert_eq!(result[0].unwrap_err().actual, 20);
}

#[tokio::test]
async fn a_directory_from_before_the_write_ahead_log_opens_and_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    sled_with(dir.path(), "Mformat", "taskledger-sled-1");
    {
        let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
        assert_eq!(store.head_position(), 0);
        store
            .append(vec![StreamAppend {
                stream: "s".into(),
                expected: ExpectedVersion::Length(0),
                events: vec![event(1)],
            }])
            .await
            .unwrap()[0]
            .unwrap();
    }
    let db = raw_sled(dir.path());
    assert_eq!(
        db.get("Mformat").unwrap().as_deref(),
        Some(&b"taskledger-sled-4"[..])
    );
}

/// Appends `event(4)` to stream `a` of an upgraded store that holds `stored` (in global order),
/// then checks that every event has the hash a fresh store gives the same appends.
async fn chains_as_a_fresh_store_after_one_more(
    upgraded: &dyn EventStore,
    stored: [(&str, u64, NewEvent); 3],
) {
    let appended = ("a", 2, event(4));
    upgraded
        .append(vec![StreamAppend {
            stream: appended.0.into(),
            expected: ExpectedVersion::Length(appended.1),
            events: vec![appended.2.clone()],
        }])
        .await
        .unwrap()[0]
        .unwrap();
    let fresh = MemoryStore::new();
    for (stream, version, event) in stored.into_iter().chain([appended]) {
        fresh
            .append(vec![StreamAppend {
                stream: stream.into(),
                expected: ExpectedVersion::Length(version),
                events: vec![event],
            }])
            .await
            .unwrap()[0]
            .unwrap();
    }
    let hashes = |events: Vec<taskledger_store::RecordedEvent>| -> Vec<_> {
        events
            .into_iter()
            .map(|e| (e.stream, e.version, e.hash))
            .collect()
    };
    assert_eq!(
        hashes(upgraded.read_all(0, 100).await.unwrap()),
        hashes(fresh.read_all(0, 100).await.unwrap())
    );
}

/// A format-1 commit block (before compression and hashes), as earlier builds wrote it.
fn block_without_hashes(events: &[(&str, u64, &NewEvent)]) -> Vec<u8> {
    let mut body = (events.len() as u32).to_le_bytes().to_vec();
    for (stream, version, event) in events {
        body.extend_from_slice(&(stream.len() as u16).to_le_bytes());
        body.extend_from_slice(stream.as_bytes());
        body.extend_from_slice(&version.to_le_bytes());
        body.extend_from_slice(event.event_id.as_bytes());
        body.push(event.event_type.len() as u8);
        body.extend_from_slice(event.event_type.as_bytes());
        body.extend_from_slice(&event.schema_version.to_le_bytes());
        body.extend_from_slice(&event.recorded_at_ms.to_le_bytes());
        body.extend_from_slice(&(event.data.len() as u32).to_le_bytes());
        body.extend_from_slice(&event.data);
    }
    let mut value = vec![1u8];
    value.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    value.extend_from_slice(&body);
    value
}

fn index_value(positions: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = positions.iter().flat_map(|p| p.to_le_bytes()).collect();
    let mut value = vec![1u8];
    value.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    value.extend_from_slice(&body);
    value
}

fn index_key(stream: &str, first_version: u64) -> Vec<u8> {
    let mut key = vec![b'S'];
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&first_version.to_be_bytes());
    key
}

/// A store written before the hash chains (`taskledger-sled-2`, blocks without hashes) opens
/// with every event given the hash a store of this build gives the same appends, and its
/// streams' chains go on from them.
#[tokio::test]
async fn a_directory_from_before_the_hash_chains_gets_them_on_open() {
    let old = tempfile::tempdir().unwrap();
    let (a0, a1, b0) = (event(1), event(2), event(3));
    {
        let db = raw_sled(old.path());
        db.insert("Mformat", "taskledger-sled-2").unwrap();
        let mut key = vec![b'L'];
        key.extend_from_slice(&0u64.to_be_bytes());
        db.insert(key, block_without_hashes(&[("a", 0, &a0), ("b", 0, &b0)]))
            .unwrap();
        let mut key = vec![b'L'];
        key.extend_from_slice(&2u64.to_be_bytes());
        db.insert(key, block_without_hashes(&[("a", 1, &a1)]))
            .unwrap();
        db.insert(index_key("a", 0), index_value(&[0])).unwrap();
        db.insert(index_key("b", 0), index_value(&[1])).unwrap();
        db.insert(index_key("a", 1), index_value(&[2])).unwrap();
        db.flush().unwrap();
    }
    let upgraded = SledStore::open(SledConfig::new(old.path())).unwrap();
    assert_eq!(upgraded.head_position(), 3);
    chains_as_a_fresh_store_after_one_more(&upgraded, [("a", 0, a0), ("b", 0, b0), ("a", 1, a1)])
        .await;
    drop(upgraded);
    let db = raw_sled(old.path());
    assert_eq!(
        db.get("Mformat").unwrap().as_deref(),
        Some(&b"taskledger-sled-4"[..])
    );
}

/// A throwaway PostgreSQL server for one test, or `None` (with the reason printed) when this
/// machine has none.
fn postgres_server(dir: &std::path::Path) -> Option<taskledger_testkit::pg_cluster::PgServer> {
    use taskledger_testkit::pg_cluster;
    if !taskledger_testkit::runs(
        "postgres",
        "PostgreSQL conformance",
        pg_cluster::unavailable_reason(),
    ) {
        return None;
    }
    let port = pg_cluster::free_port().unwrap();
    Some(pg_cluster::PgServer::start_primary(&dir.join("primary"), port, false).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_conforms() {
    use taskledger_store_postgres::{PostgresConfig, PostgresStore};
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = postgres_server(dir.path()) else {
        return;
    };
    let databases = std::sync::atomic::AtomicU32::new(0);
    conformance::run_all(|| {
        let name = format!(
            "conformance{}",
            databases.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        server.create_database(&name).unwrap();
        let url = server.url(&name);
        async move { Arc::new(PostgresStore::open(PostgresConfig::new(url)).await.unwrap()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reopens_with_the_same_events_and_head() {
    use taskledger_store_postgres::{PostgresConfig, PostgresStore};
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = postgres_server(dir.path()) else {
        return;
    };
    server.create_database("reopen").unwrap();
    let url = server.url("reopen");
    let before = {
        let store = PostgresStore::open(PostgresConfig::new(&url))
            .await
            .unwrap();
        for n in 0..20u128 {
            store
                .append(vec![StreamAppend {
                    stream: format!("s{}", n % 3),
                    expected: ExpectedVersion::Any,
                    events: vec![event(n)],
                }])
                .await
                .unwrap();
        }
        store.read_all(0, 100).await.unwrap()
    };
    // The server killed (SIGKILL, no shutdown) and started again: what was acknowledged was on
    // disk.
    server.kill().unwrap();
    server.start().unwrap();
    let store = PostgresStore::open(PostgresConfig::new(&url))
        .await
        .unwrap();
    assert_eq!(store.head_position(), 20);
    assert_eq!(store.read_all(0, 100).await.unwrap(), before);
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

/// Against a real KurrentDB when `TASKLEDGER_KURRENTDB_URL` names one (each check in a fresh
/// stream namespace of that server); otherwise it says why it did not run.
#[cfg(feature = "kurrentdb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kurrentdb_backend_conforms() {
    let url = std::env::var("TASKLEDGER_KURRENTDB_URL").ok();
    let missing = url.is_none().then(|| {
        "TASKLEDGER_KURRENTDB_URL is not set (no KurrentDB server can be installed on this machine)"
            .to_owned()
    });
    if !taskledger_testkit::runs("kurrentdb", "kurrentdb_backend_conforms", missing) {
        return;
    }
    let url = url.expect("checked above");
    // A namespace no earlier run used: this process and the time it started.
    let run = format!(
        "{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis())
    );
    let checks = std::sync::atomic::AtomicU32::new(0);
    conformance::run_all(|| {
        let namespace = format!(
            "tl{run}c{}-",
            checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let url = url.clone();
        async move {
            Arc::new(
                taskledger_store_kurrent::KurrentStore::open_namespaced(&url, &namespace)
                    .await
                    .unwrap(),
            )
        }
    })
    .await;
}

/// A database at schema version 1 (before the hash chains), holding events: opening it migrates
/// the schema and gives every stored event the hash a store of this build gives the same
/// appends; the chains go on from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_from_before_the_hash_chains_gets_them_on_open() {
    use taskledger_store_postgres::{PostgresConfig, PostgresStore};
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = postgres_server(dir.path()) else {
        return;
    };
    server.create_database("old").unwrap();
    let row = |position: u64, stream: &str, version: u64, event: &NewEvent| {
        format!(
            "({position}, '{stream}', {version}, '{}', '{}', {}, {}, '\\x{}')",
            event.event_id,
            event.event_type,
            event.schema_version,
            event.recorded_at_ms,
            event
                .data
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    };
    let (a0, b0, a1) = (event(1), event(2), event(3));
    server
        .psql(
            "old",
            &format!(
                "CREATE SCHEMA taskledger;
                 CREATE TABLE taskledger.meta (key text PRIMARY KEY, value text NOT NULL);
                 {}
                 INSERT INTO taskledger.meta VALUES ('schema_version', '1');
                 INSERT INTO taskledger.events VALUES {}, {}, {};
                 UPDATE taskledger.head SET position = 3;",
                taskledger_store_postgres::MIGRATIONS[0],
                row(0, "a", 0, &a0),
                row(1, "b", 0, &b0),
                row(2, "a", 1, &a1),
            ),
        )
        .unwrap();
    let store = PostgresStore::open(PostgresConfig::new(server.url("old")))
        .await
        .unwrap();
    chains_as_a_fresh_store_after_one_more(&store, [("a", 0, a0), ("b", 0, b0), ("a", 1, a1)])
        .await;
}
