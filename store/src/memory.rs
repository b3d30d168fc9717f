//! An in-memory [`EventStore`]: the simple model the sled backend is checked against, and a
//! backend that can be told to fail after N appends to simulate a crash mid-ingest.

use crate::{
    check_stream_name, Appended, Conflict, EventStore, ExpectedVersion, RecordedEvent, StoreError,
    StreamAppend,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Default)]
struct Log {
    events: Vec<RecordedEvent>,
    streams: HashMap<String, Vec<u64>>,
}

/// Everything in a `Vec`, behind a mutex.
pub struct MemoryStore {
    log: Mutex<Log>,
    head: watch::Sender<u64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            log: Mutex::new(Log::default()),
            head: watch::channel(0).0,
        }
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Log>, StoreError> {
        self.log
            .lock()
            .map_err(|_| StoreError::Poisoned("memory store mutex poisoned".into()))
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        appends: Vec<StreamAppend>,
    ) -> Result<Vec<Result<Appended, Conflict>>, StoreError> {
        for append in &appends {
            check_stream_name(&append.stream)?;
        }
        let mut log = self.lock()?;
        let mut results = Vec::with_capacity(appends.len());
        let mut conflicted: Vec<String> = Vec::new();
        for append in appends {
            let length = log
                .streams
                .get(&append.stream)
                .map_or(0, |p| p.len() as u64);
            if let ExpectedVersion::Length(expected) = append.expected {
                if expected != length || conflicted.contains(&append.stream) {
                    conflicted.push(append.stream);
                    results.push(Err(Conflict {
                        expected: append.expected,
                        actual: length,
                    }));
                    continue;
                }
            }
            let first_position = log.events.len() as u64;
            let mut previous = log
                .streams
                .get(&append.stream)
                .and_then(|positions| positions.last())
                .map_or(crate::chain::GENESIS, |&p| log.events[p as usize].hash);
            for (offset, event) in append.events.into_iter().enumerate() {
                let position = log.events.len() as u64;
                let version = length + offset as u64;
                let hash = crate::chain::event_hash(&previous, &append.stream, version, &event);
                previous = hash;
                log.events.push(RecordedEvent {
                    stream: append.stream.clone(),
                    version,
                    position,
                    event_id: event.event_id,
                    event_type: event.event_type,
                    schema_version: event.schema_version,
                    recorded_at_ms: event.recorded_at_ms,
                    data: event.data,
                    hash,
                });
                log.streams
                    .entry(append.stream.clone())
                    .or_default()
                    .push(position);
            }
            let stream_length = log
                .streams
                .get(&append.stream)
                .map_or(0, |p| p.len() as u64);
            results.push(Ok(Appended {
                first_position,
                stream_length,
            }));
        }
        self.head.send_replace(log.events.len() as u64);
        Ok(results)
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let log = self.lock()?;
        let positions = log.streams.get(stream).map(Vec::as_slice).unwrap_or(&[]);
        Ok(positions
            .iter()
            .skip(usize::try_from(from_version).unwrap_or(usize::MAX))
            .take(max)
            .map(|&p| log.events[p as usize].clone())
            .collect())
    }

    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let log = self.lock()?;
        Ok(log
            .events
            .iter()
            .skip(usize::try_from(from_position).unwrap_or(usize::MAX))
            .take(max)
            .cloned()
            .collect())
    }

    fn head_position(&self) -> u64 {
        *self.head.borrow()
    }

    async fn wait_for(&self, position: u64, timeout: Duration) -> u64 {
        crate::wait_for_head(self.head.subscribe(), position, timeout).await
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
