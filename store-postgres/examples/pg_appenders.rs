//! Raw appends/s of the PostgreSQL store: N tasks, each appending one event at a time to its own
//! stream, for S seconds. `cargo run --release -p taskledger-store --example pg_appenders -- URL N S`
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_store::{EventStore, ExpectedVersion, NewEvent, StreamAppend};
use taskledger_store_postgres::{PostgresConfig, PostgresStore};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("URL").clone();
    let writers: u64 = args.get(2).map_or(100, |n| n.parse().unwrap());
    let seconds: u64 = args.get(3).map_or(5, |n| n.parse().unwrap());
    let store = Arc::new(PostgresStore::open(PostgresConfig::new(url)).await.unwrap());
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let (store, done) = (store.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let stream = format!("bench-{}-{writer}", std::process::id());
            let mut n = 0u64;
            while Instant::now() < deadline {
                store
                    .append(vec![StreamAppend {
                        stream: stream.clone(),
                        expected: ExpectedVersion::Length(n),
                        events: vec![NewEvent {
                            event_id: uuid::Uuid::from_u64_pair(
                                ((std::process::id() as u64) << 32) | writer,
                                n,
                            ),
                            event_type: "T".into(),
                            schema_version: 1,
                            recorded_at_ms: 0,
                            data: vec![7; 300],
                        }],
                    }])
                    .await
                    .unwrap()[0]
                    .unwrap();
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total = done.load(Ordering::Relaxed);
    println!(
        "{writers} writers: {total} appends in {:.1} s = {:.0}/s",
        started.elapsed().as_secs_f64(),
        total as f64 / started.elapsed().as_secs_f64()
    );
}
