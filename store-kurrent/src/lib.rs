//! The KurrentDB (EventStoreDB) backend, through the owner's client (`kurrentdb`, published
//! before as `eventstore`): a stream per taskId, appends with the stream's expected revision,
//! the ledger's deterministic event ids as KurrentDB's event ids, and the `$all` subscription for
//! the global order.
//!
//! **Not run here:** no KurrentDB server can be installed on the machines this project is built
//! on. The conformance suite runs against a server when `TASKLEDGER_KURRENTDB_URL` names one
//! (testkit/tests/conformance.rs) and otherwise says it skipped.
//!
//! The trait's global positions are dense (0, 1, 2, …) while `$all`'s are log positions with
//! holes (other streams' and system records). The store keeps, in memory, the `$all` position of
//! each of the ledger's events in order (16 bytes per event): built by one read of `$all` on open
//! and extended by a catch-up subscription, the same for every instance because `$all`'s order is
//! the server's. Position `n` is the n-th non-system event of `$all`. An append answers once the
//! subscription has seen its events, so `first_position` is known and the appender reads its own
//! writes. The client has no atomic multi-stream append (its PR #208 is open): each stream
//! append is atomic on its own, which is all the trait promises.

use async_trait::async_trait;
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, EventData, Position, ReadAllOptions,
    ReadStreamOptions, StreamPosition, StreamState, SubscribeToAllOptions, SubscriptionFilter,
};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use taskledger_store::{
    check_stream_name, Appended, Conflict, EventStore, ExpectedVersion, RecordedEvent, StoreError,
    StreamAppend, EVENT_BYTES_MAX,
};
use tokio::sync::watch;

/// An append waits at most this long for the subscription to see its own events.
const OWN_EVENTS_WAIT_S: u64 = 30;
/// Events read per `$all` page while building the index on open.
const INDEX_PAGE_EVENTS: usize = 4_096;

/// `$all` positions of the ledger's events, in order.
#[derive(Default)]
struct Index {
    positions: RwLock<Vec<Position>>,
}

fn key(position: &Position) -> (u64, u64) {
    (position.commit, position.prepare)
}

impl Index {
    fn len(&self) -> u64 {
        self.positions.read().map_or(0, |p| p.len() as u64)
    }

    /// Adds `position` if it is past the last one (a subscription may repeat the tail).
    fn push(&self, position: Position) -> u64 {
        let Ok(mut positions) = self.positions.write() else {
            return 0;
        };
        if positions
            .last()
            .is_none_or(|last| key(last) < key(&position))
        {
            positions.push(position);
        }
        positions.len() as u64
    }

    /// The dense position of the event at `$all` position `position`, if indexed.
    fn find(&self, position: &Position) -> Option<u64> {
        let positions = self.positions.read().ok()?;
        let at = positions.partition_point(|p| key(p) < key(position));
        (positions.get(at).map(key) == Some(key(position))).then_some(at as u64)
    }

    fn get(&self, index: u64) -> Option<Position> {
        self.positions.read().ok()?.get(index as usize).copied()
    }
}

/// The ledger's events only: system records (`$`-types) are the server's; with a namespace,
/// only the streams under it.
fn filter(namespace: &str) -> SubscriptionFilter {
    if namespace.is_empty() {
        SubscriptionFilter::on_event_type().exclude_system_events()
    } else {
        SubscriptionFilter::on_stream_name().add_prefix(namespace)
    }
}

fn classify(error: kurrentdb::Error, target: &str) -> StoreError {
    use kurrentdb::Error;
    match error {
        Error::ConnectionClosed
        | Error::GrpcConnectionError(_)
        | Error::DeadlineExceeded
        | Error::NotLeaderException(_) => {
            StoreError::Unavailable(format!("KurrentDB at {target}: {error}"))
        }
        other => StoreError::Io(format!("KurrentDB at {target}: {other}")),
    }
}

/// The metadata each event carries beside its bytes.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    schema_version: u16,
    recorded_at_ms: i64,
    /// The event's chain hash ([`taskledger_store::chain`]), hex.
    #[serde(default)]
    hash: Option<String>,
}

/// Attempts of an `ExpectedVersion::Any` append whose stream moved between reading its last
/// hash and appending (the hash chain needs the exact previous event).
const ANY_APPEND_ATTEMPTS_MAX: usize = 16;

pub struct KurrentStore {
    client: Client,
    /// Prefixed to every stream name: several ledgers (or test runs) on one server.
    namespace: String,
    index: Arc<Index>,
    head: Arc<watch::Sender<u64>>,
    follower: tokio::task::JoinHandle<()>,
    target: String,
}

impl Drop for KurrentStore {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl KurrentStore {
    /// Connects to `url` (`kurrentdb://…`, `esdb://…`, `…+discover`), indexes `$all` and starts
    /// the subscription.
    pub async fn open(url: &str) -> Result<KurrentStore, StoreError> {
        KurrentStore::open_namespaced(url, "").await
    }

    /// [`KurrentStore::open`] seeing only the streams named `namespace` + a stream name; the
    /// conformance suite runs each check in a fresh namespace of one server.
    pub async fn open_namespaced(url: &str, namespace: &str) -> Result<KurrentStore, StoreError> {
        let settings: ClientSettings = url.parse().map_err(|error| {
            StoreError::Config(format!("the KurrentDB URL is not valid: {error}"))
        })?;
        let target = settings
            .hosts()
            .iter()
            .map(|host| format!("{}:{}", host.host, host.port))
            .collect::<Vec<_>>()
            .join(",");
        let client = Client::new(settings)
            .map_err(|error| StoreError::Config(format!("KurrentDB client: {error}")))?;
        let index = Arc::new(Index::default());
        let mut from = StreamPosition::Start;
        loop {
            let options = ReadAllOptions::default()
                .forwards()
                .position(from)
                .filter(filter(namespace))
                .max_count(INDEX_PAGE_EVENTS);
            let mut stream = client
                .read_all(&options)
                .await
                .map_err(|error| classify(error, &target))?;
            let before = index.len();
            while let Some(event) = stream
                .next()
                .await
                .map_err(|error| classify(error, &target))?
            {
                index.push(event.get_original_event().position);
            }
            let Some(last) = index.get(index.len().saturating_sub(1)) else {
                break;
            };
            if index.len() == before {
                break;
            }
            from = StreamPosition::Position(last);
        }
        let head = Arc::new(watch::channel(index.len()).0);
        let follower = tokio::spawn(follow(
            client.clone(),
            index.clone(),
            head.clone(),
            namespace.to_string(),
        ));
        Ok(KurrentStore {
            client,
            namespace: namespace.to_string(),
            index,
            head,
            follower,
            target,
        })
    }

    /// The server's name of the ledger's stream `stream` (under the namespace).
    fn server_stream(&self, stream: &str) -> String {
        format!("{}{stream}", self.namespace)
    }

    /// The dense position of `position`, waiting for the subscription to index it.
    async fn dense(&self, position: &Position) -> Result<u64, StoreError> {
        let mut head = self.head.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(OWN_EVENTS_WAIT_S);
        loop {
            if let Some(found) = self.index.find(position) {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, head.changed())
                .await
                .is_err()
            {
                return Err(StoreError::Unavailable(format!(
                    "KurrentDB at {}: the $all subscription did not reach {position} within {OWN_EVENTS_WAIT_S} s",
                    self.target
                )));
            }
        }
    }

    fn recorded(&self, event: &kurrentdb::RecordedEvent, position: u64) -> RecordedEvent {
        let meta: Option<Meta> = serde_json::from_slice(&event.custom_metadata).ok();
        let hash = meta
            .as_ref()
            .and_then(|m| m.hash.as_deref())
            .and_then(taskledger_store::chain::from_hex)
            .unwrap_or(taskledger_store::chain::GENESIS);
        RecordedEvent {
            stream: event
                .stream_id()
                .strip_prefix(self.namespace.as_str())
                .unwrap_or(event.stream_id())
                .to_string(),
            version: event.revision,
            position,
            event_id: event.id,
            event_type: event.event_type.clone(),
            schema_version: meta.as_ref().map_or(1, |m| m.schema_version),
            recorded_at_ms: meta.map_or(0, |m| m.recorded_at_ms),
            data: event.data.to_vec(),
            hash,
        }
    }

    /// The stream's length.
    async fn stream_length(&self, stream: &str) -> Result<u64, StoreError> {
        Ok(self.stream_head(stream).await?.0)
    }

    /// The stream's length and its last event's chain hash.
    async fn stream_head(
        &self,
        stream: &str,
    ) -> Result<(u64, taskledger_store::chain::Hash), StoreError> {
        let options = ReadStreamOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(1);
        let name = self.server_stream(stream);
        let mut read = match self.client.read_stream(name.as_str(), &options).await {
            Ok(read) => read,
            Err(kurrentdb::Error::ResourceNotFound) => {
                return Ok((0, taskledger_store::chain::GENESIS))
            }
            Err(error) => return Err(classify(error, &self.target)),
        };
        match read.next().await {
            Ok(Some(event)) => {
                let last = self.recorded(event.get_original_event(), 0);
                Ok((last.version + 1, last.hash))
            }
            Ok(None) | Err(kurrentdb::Error::ResourceNotFound) => {
                Ok((0, taskledger_store::chain::GENESIS))
            }
            Err(error) => Err(classify(error, &self.target)),
        }
    }

    /// Appends one stream's events after its current head, with their chain hashes: `Ok` with
    /// where they landed, or `Err` with the stream's actual length when it was not `expected`.
    async fn append_one(&self, append: &StreamAppend) -> Result<Result<Appended, u64>, StoreError> {
        for _ in 0..ANY_APPEND_ATTEMPTS_MAX {
            let (length, mut previous) = self.stream_head(&append.stream).await?;
            if let ExpectedVersion::Length(expected) = append.expected {
                if expected != length {
                    return Ok(Err(length));
                }
            }
            // The exact revision read, whatever the caller expected: the hashes chain on it.
            let state = match length {
                0 => StreamState::NoStream,
                length => StreamState::StreamRevision(length - 1),
            };
            let count = append.events.len() as u64;
            let mut events = Vec::with_capacity(append.events.len());
            for (offset, event) in append.events.iter().enumerate() {
                let hash = taskledger_store::chain::event_hash(
                    &previous,
                    &append.stream,
                    length + offset as u64,
                    event,
                );
                previous = hash;
                let meta = serde_json::to_vec(&Meta {
                    schema_version: event.schema_version,
                    recorded_at_ms: event.recorded_at_ms,
                    hash: Some(taskledger_store::chain::to_hex(&hash)),
                })
                .map_err(|error| StoreError::Io(error.to_string()))?;
                events.push(
                    EventData::binary(event.event_type.clone(), event.data.clone().into())
                        .id(event.event_id)
                        .metadata(meta.into()),
                );
            }
            let options = AppendToStreamOptions::default().stream_state(state);
            match self
                .client
                .append_to_stream(
                    self.server_stream(&append.stream).as_str(),
                    &options,
                    events,
                )
                .await
            {
                Ok(written) => {
                    let last = self.dense(&written.position).await?;
                    return Ok(Ok(Appended {
                        first_position: last + 1 - count,
                        stream_length: written.next_expected_version + 1,
                    }));
                }
                Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
                    let actual = match current {
                        kurrentdb::CurrentRevision::Current(revision) => revision + 1,
                        kurrentdb::CurrentRevision::NoStream => 0,
                    };
                    if append.expected != ExpectedVersion::Any {
                        return Ok(Err(actual));
                    }
                    // Another writer appended between the read and the append: chain again.
                }
                Err(error) => return Err(classify(error, &self.target)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "KurrentDB at {}: stream {:?} kept moving over {ANY_APPEND_ATTEMPTS_MAX} attempts",
            self.target, append.stream
        )))
    }
}

/// The catch-up subscription that extends the index (it retries by itself on disconnects).
async fn follow(
    client: Client,
    index: Arc<Index>,
    head: Arc<watch::Sender<u64>>,
    namespace: String,
) {
    let from = match index.get(index.len().saturating_sub(1)) {
        Some(last) if index.len() > 0 => StreamPosition::Position(last),
        _ => StreamPosition::Start,
    };
    let options = SubscribeToAllOptions::default()
        .position(from)
        .filter(filter(&namespace));
    let mut subscription = client.subscribe_to_all(&options).await;
    loop {
        match subscription.next().await {
            Ok(event) => {
                let length = index.push(event.get_original_event().position);
                head.send_if_modified(|current| {
                    let changed = *current != length;
                    *current = length;
                    changed
                });
            }
            Err(error) => {
                tracing::warn!(%error, "KurrentDB subscription failed; resubscribing");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let from = match index.get(index.len().saturating_sub(1)) {
                    Some(last) => StreamPosition::Position(last),
                    None => StreamPosition::Start,
                };
                subscription = client
                    .subscribe_to_all(
                        &SubscribeToAllOptions::default()
                            .position(from)
                            .filter(filter(&namespace)),
                    )
                    .await;
            }
        }
    }
}

#[async_trait]
impl EventStore for KurrentStore {
    async fn append(
        &self,
        appends: Vec<StreamAppend>,
    ) -> Result<Vec<Result<Appended, Conflict>>, StoreError> {
        for append in &appends {
            check_stream_name(&append.stream)?;
            for event in &append.events {
                if event.data.len() > EVENT_BYTES_MAX {
                    return Err(StoreError::LimitExceeded {
                        what: "an event's bytes",
                        actual: event.data.len(),
                        limit: EVENT_BYTES_MAX,
                    });
                }
            }
        }
        let mut results = Vec::with_capacity(appends.len());
        let mut conflicted: Vec<String> = Vec::new();
        for append in appends {
            if conflicted.contains(&append.stream) {
                let actual = self.stream_length(&append.stream).await?;
                results.push(Err(Conflict {
                    expected: append.expected,
                    actual,
                }));
                continue;
            }
            if append.events.is_empty() {
                let length = self.stream_length(&append.stream).await?;
                match append.expected {
                    ExpectedVersion::Length(expected) if expected != length => {
                        conflicted.push(append.stream);
                        results.push(Err(Conflict {
                            expected: append.expected,
                            actual: length,
                        }));
                    }
                    _ => results.push(Ok(Appended {
                        first_position: self.head_position(),
                        stream_length: length,
                    })),
                }
                continue;
            }
            match self.append_one(&append).await? {
                Ok(appended) => results.push(Ok(appended)),
                Err(actual) => {
                    conflicted.push(append.stream);
                    results.push(Err(Conflict {
                        expected: append.expected,
                        actual,
                    }));
                }
            }
        }
        Ok(results)
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let options = ReadStreamOptions::default()
            .forwards()
            .position(StreamPosition::Position(from_version))
            .max_count(max);
        let name = self.server_stream(stream);
        let mut read = match self.client.read_stream(name.as_str(), &options).await {
            Ok(read) => read,
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
            Err(error) => return Err(classify(error, &self.target)),
        };
        let mut events = Vec::new();
        loop {
            match read.next().await {
                Ok(Some(resolved)) => {
                    let event = resolved.get_original_event();
                    let position = self.dense(&event.position).await?;
                    events.push(self.recorded(event, position));
                }
                Ok(None) | Err(kurrentdb::Error::ResourceNotFound) => break,
                Err(error) => return Err(classify(error, &self.target)),
            }
        }
        Ok(events)
    }

    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let available = self.index.len().saturating_sub(from_position);
        let count = (max as u64).min(available) as usize;
        let Some(first) = self.index.get(from_position).filter(|_| count > 0) else {
            return Ok(Vec::new());
        };
        let options = ReadAllOptions::default()
            .forwards()
            .position(StreamPosition::Position(first))
            .filter(filter(&self.namespace))
            .max_count(count);
        let mut read = self
            .client
            .read_all(&options)
            .await
            .map_err(|error| classify(error, &self.target))?;
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            match read.next().await {
                Ok(Some(resolved)) => {
                    let event = resolved.get_original_event();
                    let position = from_position + events.len() as u64;
                    if self.index.get(position).map(|p| key(&p)) != Some(key(&event.position)) {
                        return Err(StoreError::Corrupt {
                            location: format!("KurrentDB $all at {}", event.position),
                            detail: format!("not the indexed event {position}"),
                        });
                    }
                    events.push(self.recorded(event, position));
                }
                Ok(None) => break,
                Err(error) => return Err(classify(error, &self.target)),
            }
        }
        Ok(events)
    }

    fn head_position(&self) -> u64 {
        *self.head.borrow()
    }

    async fn wait_for(&self, position: u64, timeout: Duration) -> u64 {
        taskledger_store::wait_for_head(self.head.subscribe(), position, timeout).await
    }

    fn backend(&self) -> &'static str {
        "kurrentdb"
    }
}
