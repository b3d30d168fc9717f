//! The shared, replicated backend: every taskledger instance of a deployment appends to one
//! PostgreSQL database (a primary with a synchronous standby for HA; SPEC §8).
//!
//! Layout (schema `taskledger`, created and migrated by [`PostgresStore::open`], versioned in
//! `taskledger.meta`; see [`MIGRATIONS`]):
//! - `events(position PK, stream, version, event_id UNIQUE, event_type, schema_version,
//!   recorded_at_ms, data)`, unique `(stream, version)`;
//! - a stream's length is its highest version + 1 (an index-only read of `(stream, version)`);
//!   a transaction-scoped advisory lock per stream makes the expected-length check atomic across
//!   instances without writing a row;
//! - `head(id = 1, position)`: the next global position, one row.
//!
//! **Architecture invariant: the global order has no holes any reader can see.** A commit takes
//! the `head` row lock as its last step before inserting its events, so commits that append
//! events hold it one at a time and commit in position order: the next one cannot allocate its
//! positions until the previous one has committed and become visible (PostgreSQL releases row
//! locks after the commit is visible). A reader's snapshot therefore always holds a prefix of the
//! positions, and `read_all(from)` never skips an event that commits later with a lower position
//! — the bug Marten, Eventuous and message-db's `$all` shipped with sequences. The price is one
//! commit in flight per database for the time of its insert and commit; group commit (one
//! transaction per batch of concurrent appends, per instance) makes that one commit carry many
//! events. ARCHITECTURE.md says why this over `pg_snapshot_xmin` ordering.
//!
//! Followers learn of new events from `LISTEN taskledger_events` (a wake-up only: the payload is
//! never read) and poll as the safety net; the listener reconnects with backoff.

pub mod pg_tls;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use taskledger_store::{
    check_stream_name, Appended, Conflict, EventStore, ExpectedVersion, RecordedEvent, StoreError,
    StreamAppend, APPEND_BYTES_MAX, APPEND_EVENTS_MAX, EVENT_BYTES_MAX,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

/// The versioned schema: each entry runs once, in order, in one transaction under an advisory
/// lock (several instances may start at once). The version reached is `meta.schema_version`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the ledger.
    "CREATE TABLE taskledger.events (
        position bigint PRIMARY KEY,
        stream text NOT NULL,
        version bigint NOT NULL,
        event_id uuid NOT NULL UNIQUE,
        event_type text NOT NULL,
        schema_version smallint NOT NULL,
        recorded_at_ms bigint NOT NULL,
        data bytea NOT NULL,
        UNIQUE (stream, version)
    );
    CREATE TABLE taskledger.head (id int PRIMARY KEY CHECK (id = 1), position bigint NOT NULL);
    INSERT INTO taskledger.head VALUES (1, 0);",
    // 2: every event's chain hash (taskledger_store::chain); the events already stored get theirs from
    // `add_chain_hashes`, run right after this step in the same transaction.
    "ALTER TABLE taskledger.events ADD COLUMN hash bytea;",
    // 3: and it is never missing.
    "ALTER TABLE taskledger.events ALTER COLUMN hash SET NOT NULL;",
];

/// The migration after which the stored events get their chain hashes.
const HASH_COLUMN_MIGRATION: usize = 1;
/// Events read and updated per statement while the stored events get their hashes.
const HASH_BACKFILL_EVENTS_BATCH: i64 = 10_000;

/// The channel commits notify on (a wake-up; followers read the head themselves).
const CHANNEL: &str = "taskledger_events";
const NOTIFY_SQL: &str = "NOTIFY taskledger_events";

/// How to reach the database and how hard to use it.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// A libpq URL or key=value string; several hosts and `target_session_attrs=read-write`
    /// make reconnects find the primary after a failover.
    pub url: String,
    /// Connections in the pool: one for the committer, the rest for reads.
    pub pool_connections_max: usize,
    /// Applied when the URL sets none: an unreachable server is an error, never a hang.
    pub connect_timeout: Duration,
    /// How long a caller waits for a pooled connection before the store is `Unavailable`.
    pub pool_wait_timeout: Duration,
    /// Followers read the head at least this often even when no notification comes.
    pub poll_interval: Duration,
    /// Events in one group commit: bounds one transaction's size and lock time.
    pub commit_events_max: usize,
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            pool_connections_max: 8,
            connect_timeout: Duration::from_secs(5),
            pool_wait_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(250),
            commit_events_max: 16_384,
        }
    }
}

/// Queued appends of one committer turn wait for at most this many requests.
const GROUP_REQUESTS_MAX: usize = 4_096;
/// A transaction that lost a deadlock or a serialization check is tried again this many times.
const TRANSACTION_ATTEMPTS_MAX: u32 = 5;
/// The listener's reconnect backoff: doubles from the first to the last.
const RECONNECT_BACKOFF_MS: (u64, u64) = (100, 5_000);

struct Request {
    appends: Vec<StreamAppend>,
    reply: oneshot::Sender<Result<Vec<Result<Appended, Conflict>>, StoreError>>,
}

/// The PostgreSQL [`EventStore`].
pub struct PostgresStore {
    pool: Pool,
    committer: mpsc::Sender<Request>,
    head: Arc<watch::Sender<u64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    target: String,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `host:port/dbname` of a configuration, for messages: never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let name = match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            let port = config
                .get_ports()
                .get(index)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            format!("{name}:{port}")
        })
        .collect();
    format!(
        "postgres://{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// What a driver error means to the caller: the server gone (retry later, nothing was
/// acknowledged) or a plain failure.
fn classify(error: tokio_postgres::Error, target: &str) -> StoreError {
    let unavailable = match error.code() {
        None => true,
        Some(code) => [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::READ_ONLY_SQL_TRANSACTION,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::CONNECTION_FAILURE,
            SqlState::CONNECTION_DOES_NOT_EXIST,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code),
    };
    let detail = match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            // The driver's own words, then its causes ("connection refused").
            let mut text = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    };
    if unavailable {
        StoreError::Unavailable(format!("PostgreSQL at {target}: {detail}"))
    } else {
        StoreError::Io(format!("PostgreSQL at {target}: {detail}"))
    }
}

fn retryable(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

fn pool_error(error: deadpool_postgres::PoolError, target: &str) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => classify(error, target),
        other => StoreError::Unavailable(format!("PostgreSQL at {target}: {other}")),
    }
}

impl PostgresStore {
    /// Connects, creates or migrates the schema, reads the head and starts the committer and
    /// the listener. A bad URL is [`StoreError::Config`]; an unreachable server,
    /// [`StoreError::Unavailable`] after `connect_timeout`.
    pub async fn open(config: PostgresConfig) -> Result<PostgresStore, StoreError> {
        let url = config
            .url
            .strip_prefix("postgres+")
            .unwrap_or(&config.url)
            .to_string();
        // sslmode and sslrootcert as libpq reads them (pg_tls.rs); the driver gets the rest.
        let (url, tls) = crate::pg_tls::split_tls(&url)?;
        let tls = crate::pg_tls::connector(&tls)?;
        let mut pg = tokio_postgres::Config::from_str(&url).map_err(|error| {
            StoreError::Config(format!("the PostgreSQL URL is not valid: {error}"))
        })?;
        if pg.get_hosts().is_empty() {
            return Err(StoreError::Config(
                "the PostgreSQL URL names no host".into(),
            ));
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.connect_timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("taskledger");
        }
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(10));
        let target = describe(&pg);
        let manager = Manager::from_config(
            pg.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_connections_max.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.pool_wait_timeout))
            .create_timeout(Some(config.connect_timeout + Duration::from_secs(1)))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|error| StoreError::Config(format!("PostgreSQL pool: {error}")))?;
        migrate(&pool, &target).await?;
        let head_now = read_head(&pool, &target).await?;
        let head = Arc::new(watch::channel(head_now).0);
        let (committer, receiver) = mpsc::channel(GROUP_REQUESTS_MAX);
        let committer_task = tokio::spawn(run_committer(
            pool.clone(),
            receiver,
            head.clone(),
            target.clone(),
            config.commit_events_max.clamp(1, APPEND_EVENTS_MAX),
        ));
        let listener_task = tokio::spawn(run_listener(
            pg,
            tls,
            pool.clone(),
            head.clone(),
            target.clone(),
            config.poll_interval,
        ));
        Ok(PostgresStore {
            pool,
            committer,
            head,
            tasks: vec![committer_task, listener_task],
            target,
        })
    }

    /// The server this store talks to (`postgres://host:port/db`, never a password).
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|error| pool_error(error, &self.target))
    }
}

async fn migrate(pool: &Pool, target: &str) -> Result<(), StoreError> {
    let mut client = pool
        .get()
        .await
        .map_err(|error| pool_error(error, target))?;
    let transaction = client
        .transaction()
        .await
        .map_err(|error| classify(error, target))?;
    transaction
        .batch_execute(
            "SELECT pg_advisory_xact_lock(hashtext('taskledger.migrate'));
             CREATE SCHEMA IF NOT EXISTS taskledger;
             CREATE TABLE IF NOT EXISTS taskledger.meta (key text PRIMARY KEY, value text NOT NULL);",
        )
        .await
        .map_err(|error| classify(error, target))?;
    let found: Option<String> = transaction
        .query_opt(
            "SELECT value FROM taskledger.meta WHERE key = 'schema_version'",
            &[],
        )
        .await
        .map_err(|error| classify(error, target))?
        .map(|row| row.get(0));
    let current: usize = match &found {
        None => 0,
        Some(text) => text.parse().map_err(|_| StoreError::Format {
            found: text.clone(),
            expected: MIGRATIONS.len().to_string(),
        })?,
    };
    if current > MIGRATIONS.len() {
        return Err(StoreError::Format {
            found: format!("taskledger schema version {current}"),
            expected: format!("at most {}", MIGRATIONS.len()),
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current) {
        transaction
            .batch_execute(migration)
            .await
            .map_err(|error| classify(error, target))?;
        if index == HASH_COLUMN_MIGRATION {
            add_chain_hashes(&transaction, target).await?;
        }
        tracing::info!(version = index + 1, "PostgreSQL schema migrated");
    }
    transaction
        .execute(
            "INSERT INTO taskledger.meta VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&MIGRATIONS.len().to_string()],
        )
        .await
        .map_err(|error| classify(error, target))?;
    transaction
        .commit()
        .await
        .map_err(|error| classify(error, target))
}

/// Gives every stored event its chain hash, in global order (a database from before the hashes).
async fn add_chain_hashes(
    transaction: &deadpool_postgres::Transaction<'_>,
    target: &str,
) -> Result<(), StoreError> {
    let mut last: HashMap<String, taskledger_store::chain::Hash> = HashMap::new();
    let mut from: i64 = 0;
    loop {
        let rows = transaction
            .query(
                "SELECT position, stream, version, event_id, event_type, schema_version,
                        recorded_at_ms, data
                 FROM taskledger.events WHERE position >= $1 ORDER BY position LIMIT $2",
                &[&from, &HASH_BACKFILL_EVENTS_BATCH],
            )
            .await
            .map_err(|error| classify(error, target))?;
        let Some(end) = rows.last().map(|row| row.get::<_, i64>(0) + 1) else {
            return Ok(());
        };
        let mut positions: Vec<i64> = Vec::with_capacity(rows.len());
        let mut hashes: Vec<Vec<u8>> = Vec::with_capacity(rows.len());
        for row in &rows {
            let stream: String = row.get(1);
            let previous = last
                .get(&stream)
                .copied()
                .unwrap_or(taskledger_store::chain::GENESIS);
            let hash = taskledger_store::chain::chain_hash(
                &previous,
                &taskledger_store::chain::content_hash(
                    &stream,
                    row.get::<_, i64>(2) as u64,
                    &row.get::<_, Uuid>(3),
                    row.get::<_, &str>(4),
                    row.get::<_, i16>(5) as u16,
                    row.get::<_, &[u8]>(7),
                ),
            );
            positions.push(row.get(0));
            hashes.push(hash.to_vec());
            last.insert(stream, hash);
        }
        transaction
            .execute(
                "UPDATE taskledger.events e SET hash = u.hash
                 FROM unnest($1::bigint[], $2::bytea[]) AS u(position, hash)
                 WHERE e.position = u.position",
                &[&positions, &hashes],
            )
            .await
            .map_err(|error| classify(error, target))?;
        from = end;
    }
}

async fn read_head(pool: &Pool, target: &str) -> Result<u64, StoreError> {
    let client = pool
        .get()
        .await
        .map_err(|error| pool_error(error, target))?;
    let row = client
        .query_one(READ_HEAD_SQL, &[])
        .await
        .map_err(|error| classify(error, target))?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Raises the watched head (never lowers it: a follower's poll may read an older value than
/// a commit this instance just made).
fn raise(head: &watch::Sender<u64>, to: u64) {
    head.send_if_modified(|current| {
        if to > *current {
            *current = to;
            true
        } else {
            false
        }
    });
}

/// The group committer: takes every request waiting (up to the limits) and commits them in one
/// transaction, in arrival order.
async fn run_committer(
    pool: Pool,
    mut receiver: mpsc::Receiver<Request>,
    head: Arc<watch::Sender<u64>>,
    target: String,
    commit_events_max: usize,
) {
    while let Some(first) = receiver.recv().await {
        let mut events: usize = first.appends.iter().map(|a| a.events.len()).sum();
        let mut group = vec![first];
        while events < commit_events_max && group.len() < GROUP_REQUESTS_MAX {
            match receiver.try_recv() {
                Ok(request) => {
                    events += request
                        .appends
                        .iter()
                        .map(|a| a.events.len())
                        .sum::<usize>();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        let calls: Vec<&[StreamAppend]> = group.iter().map(|r| r.appends.as_slice()).collect();
        let answers = match commit_with_retries(&pool, &calls, &target).await {
            Ok((answers, end)) => {
                raise(&head, end);
                answers.into_iter().map(Ok).collect::<Vec<_>>()
            }
            Err(error) if group.len() > 1 && !matches!(error, StoreError::Unavailable(_)) => {
                // One call's content failed the group (an event id stored elsewhere): commit
                // each alone, so only that one is refused.
                let mut answers = Vec::with_capacity(group.len());
                for call in &calls {
                    let answer = commit_with_retries(&pool, &[call], &target).await;
                    if let Ok((_, end)) = &answer {
                        raise(&head, *end);
                    }
                    answers.push(answer.map(|(mut answer, _)| answer.remove(0)));
                }
                answers
            }
            Err(error) => vec![Err(error); group.len()],
        };
        for (request, answer) in group.into_iter().zip(answers) {
            let _ = request.reply.send(answer);
        }
    }
}

/// Per call, per stream append, where it landed or its conflict; and the head after the commit.
type GroupAnswer = (Vec<Vec<Result<Appended, Conflict>>>, u64);

async fn commit_with_retries(
    pool: &Pool,
    calls: &[&[StreamAppend]],
    target: &str,
) -> Result<GroupAnswer, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match commit_group(pool, calls, target).await {
            Ok(answers) => return Ok(answers),
            Err(Attempt::Retry(error)) if attempt < TRANSACTION_ATTEMPTS_MAX => {
                tracing::debug!(%error, attempt, "PostgreSQL transaction retried");
            }
            Err(Attempt::Retry(error)) => return Err(classify(error, target)),
            Err(Attempt::Failed(error)) => return Err(error),
        }
    }
}

enum Attempt {
    /// A deadlock or serialization failure: nothing was written; try again.
    Retry(tokio_postgres::Error),
    Failed(StoreError),
}

/// One planned event row.
struct Row<'a> {
    stream: &'a str,
    version: u64,
    event: &'a taskledger_store::NewEvent,
    hash: taskledger_store::chain::Hash,
}

/// The advisory-lock key of a stream: the first 8 bytes of its name's BLAKE3 hash. Two streams
/// sharing a key only wait for each other.
fn stream_lock_key(stream: &str) -> i64 {
    let hash = blake3::hash(stream.as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_le_bytes(key)
}

/// The statements of a commit, prepared once per connection (deadpool's statement cache).
/// One transaction-scoped advisory lock per stream (its name's 64-bit hash), taken in ascending
/// order so two instances' groups wait for each other rather than deadlock. Writes no row.
const LOCK_STREAMS_SQL: &str = "SELECT count(pg_advisory_xact_lock(key))
     FROM (SELECT DISTINCT key FROM unnest($1::bigint[]) AS key ORDER BY key) AS keys";
/// Each stream's length (its highest version + 1) and its last event's hash, from the
/// `(stream, version)` index.
const READ_STREAMS_SQL: &str = "SELECT s.stream, last.version + 1, last.hash
     FROM unnest($1::text[]) AS s(stream)
     LEFT JOIN LATERAL (SELECT e.version, e.hash FROM taskledger.events e
                        WHERE e.stream = s.stream ORDER BY e.version DESC LIMIT 1) AS last ON true";
/// Takes the head row lock and inserts the events in one statement: the lock is held from here
/// to the commit only. Returns the first position.
const INSERT_EVENTS_SQL: &str = "WITH head AS (
        UPDATE taskledger.head SET position = position + $1 WHERE id = 1
        RETURNING position - $1 AS first
     ), inserted AS (
        INSERT INTO taskledger.events
        (position, stream, version, event_id, event_type, schema_version, recorded_at_ms, data,
         hash)
        SELECT head.first + e.ord - 1, e.stream, e.version, e.event_id, e.event_type,
               e.schema_version, e.recorded_at_ms, e.data, e.hash
        FROM head, unnest($2::text[], $3::bigint[], $4::uuid[], $5::text[], $6::smallint[],
                          $7::bigint[], $8::bytea[], $9::bytea[])
             WITH ORDINALITY AS e(stream, version, event_id, event_type, schema_version,
                                  recorded_at_ms, data, hash, ord)
        RETURNING 1
     )
     SELECT first, (SELECT count(*) FROM inserted) FROM head";
const READ_HEAD_SQL: &str = "SELECT position FROM taskledger.head WHERE id = 1";

/// Commits `calls` in one transaction: per call the answer of [`EventStore::append`], and the
/// head after the commit.
///
/// Two round trips, each a pipeline of prepared statements: `BEGIN` + lock the streams and read
/// their lengths; then, once the appends are planned against those lengths, the head lock + the
/// events' insert + the streams' new lengths + the wake-up + `COMMIT`. The second pipeline's
/// answers are all checked: a failed statement fails the call even though PostgreSQL turns the
/// `COMMIT` of an aborted transaction into a rollback without an error.
async fn commit_group(
    pool: &Pool,
    calls: &[&[StreamAppend]],
    target: &str,
) -> Result<GroupAnswer, Attempt> {
    let fail = |error: tokio_postgres::Error| {
        if retryable(&error) {
            Attempt::Retry(error)
        } else {
            Attempt::Failed(classify(error, target))
        }
    };
    let client = pool
        .get()
        .await
        .map_err(|error| Attempt::Failed(pool_error(error, target)))?;
    let mut streams: Vec<&str> = calls
        .iter()
        .flat_map(|call| call.iter().map(|append| append.stream.as_str()))
        .collect();
    streams.sort_unstable();
    streams.dedup();
    let (lock_streams, read_streams, insert_events, read_head) = futures_util::try_join!(
        client.prepare_cached(LOCK_STREAMS_SQL),
        client.prepare_cached(READ_STREAMS_SQL),
        client.prepare_cached(INSERT_EVENTS_SQL),
        client.prepare_cached(READ_HEAD_SQL),
    )
    .map_err(fail)?;
    let keys: Vec<i64> = streams
        .iter()
        .map(|stream| stream_lock_key(stream))
        .collect();
    let lock_params: [&(dyn ToSql + Sync); 1] = [&keys];
    let stream_params: [&(dyn ToSql + Sync); 1] = [&streams];
    let first_trip = futures_util::try_join!(
        client.batch_execute("BEGIN"),
        client.query_one(&lock_streams, &lock_params),
        client.query(&read_streams, &stream_params),
    );
    let rows = match first_trip {
        Ok((_, _, rows)) => rows,
        Err(error) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(fail(error));
        }
    };
    let mut heads: HashMap<String, (u64, taskledger_store::chain::Hash)> = HashMap::new();
    for row in &rows {
        let length: Option<i64> = row.get(1);
        let hash: Option<&[u8]> = row.get(2);
        let hash = match hash {
            None => taskledger_store::chain::GENESIS,
            Some(bytes) => bytes.try_into().map_err(|_| {
                Attempt::Failed(StoreError::Corrupt {
                    location: format!("PostgreSQL at {target}: stream {:?}", row.get::<_, &str>(0)),
                    detail: format!("a chain hash of {} bytes", bytes.len()),
                })
            })?,
        };
        heads.insert(row.get::<_, String>(0), (length.unwrap_or(0) as u64, hash));
    }

    // Plan every call in order against the lengths as the calls before it leave them.
    let mut planned: Vec<Row> = Vec::new();
    // Per call, per append: Ok(index of its first planned row, stream length after) or conflict.
    let mut plans: Vec<Vec<Result<(usize, u64), Conflict>>> = Vec::with_capacity(calls.len());
    for call in calls {
        let mut conflicted: Vec<&str> = Vec::new();
        let mut plan = Vec::with_capacity(call.len());
        for append in call.iter() {
            let (length, mut previous) = heads
                .get(&append.stream)
                .copied()
                .unwrap_or((0, taskledger_store::chain::GENESIS));
            if let ExpectedVersion::Length(expected) = append.expected {
                if expected != length || conflicted.contains(&append.stream.as_str()) {
                    conflicted.push(&append.stream);
                    plan.push(Err(Conflict {
                        expected: append.expected,
                        actual: length,
                    }));
                    continue;
                }
            }
            let first = planned.len();
            for (offset, event) in append.events.iter().enumerate() {
                let version = length + offset as u64;
                let hash =
                    taskledger_store::chain::event_hash(&previous, &append.stream, version, event);
                previous = hash;
                planned.push(Row {
                    stream: &append.stream,
                    version,
                    event,
                    hash,
                });
            }
            let after = length + append.events.len() as u64;
            heads.insert(append.stream.clone(), (after, previous));
            plan.push(Ok((first, after)));
        }
        plans.push(plan);
    }

    let total = planned.len() as i64;
    let first_position: u64 = if total > 0 {
        let row_streams: Vec<&str> = planned.iter().map(|row| row.stream).collect();
        let versions: Vec<i64> = planned.iter().map(|row| row.version as i64).collect();
        let ids: Vec<Uuid> = planned.iter().map(|row| row.event.event_id).collect();
        let types: Vec<&str> = planned
            .iter()
            .map(|row| row.event.event_type.as_str())
            .collect();
        let schema_versions: Vec<i16> = planned
            .iter()
            .map(|row| row.event.schema_version as i16)
            .collect();
        let recorded: Vec<i64> = planned.iter().map(|row| row.event.recorded_at_ms).collect();
        let data: Vec<&[u8]> = planned
            .iter()
            .map(|row| row.event.data.as_slice())
            .collect();
        let hashes: Vec<&[u8]> = planned.iter().map(|row| row.hash.as_slice()).collect();
        let event_params: [&(dyn ToSql + Sync); 9] = [
            &total,
            &row_streams,
            &versions,
            &ids,
            &types,
            &schema_versions,
            &recorded,
            &data,
            &hashes,
        ];
        let second_trip = futures_util::try_join!(
            client.query_one(&insert_events, &event_params),
            client.batch_execute(NOTIFY_SQL),
            client.batch_execute("COMMIT"),
        );
        match second_trip {
            Ok((row, _, _)) => {
                let inserted: i64 = row.get(1);
                if inserted != total {
                    return Err(Attempt::Failed(StoreError::Io(format!(
                        "PostgreSQL at {target}: inserted {inserted} of {total} events"
                    ))));
                }
                row.get::<_, i64>(0) as u64
            }
            Err(error) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(fail(error));
            }
        }
    } else {
        let second_trip = futures_util::try_join!(
            client.query_one(&read_head, &[]),
            client.batch_execute("COMMIT")
        );
        match second_trip {
            Ok((row, _)) => row.get::<_, i64>(0) as u64,
            Err(error) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(fail(error));
            }
        }
    };
    let end = first_position + total as u64;
    let answers = plans
        .into_iter()
        .map(|plan| {
            plan.into_iter()
                .map(|step| {
                    step.map(|(first, stream_length)| Appended {
                        first_position: first_position + first as u64,
                        stream_length,
                    })
                })
                .collect()
        })
        .collect();
    Ok((answers, end))
}

/// Keeps the watched head current: `LISTEN` for wake-ups, poll as the safety net, reconnect
/// with backoff when the connection drops.
async fn run_listener(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    pool: Pool,
    head: Arc<watch::Sender<u64>>,
    target: String,
    poll_interval: Duration,
) {
    let mut backoff = RECONNECT_BACKOFF_MS.0;
    loop {
        match listen_once(&config, tls.clone(), &head, poll_interval).await {
            Ok(()) => backoff = RECONNECT_BACKOFF_MS.0,
            Err(error) => {
                tracing::warn!(%target, %error, "PostgreSQL listener disconnected; reconnecting");
                // Meanwhile poll through the pool, so waiters still see new events.
                if let Ok(now) = read_head(&pool, &target).await {
                    raise(&head, now);
                }
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MS.1);
            }
        }
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    tls: MakeRustlsConnect,
    head: &watch::Sender<u64>,
    poll_interval: Duration,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls).await?;
    let (wake, mut woken) = mpsc::unbounded_channel::<()>();
    let driver = tokio::spawn(async move {
        let mut messages =
            futures_util::stream::poll_fn(move |context| connection.poll_message(context));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                    if wake.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let outcome = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        loop {
            let row = client.query_one(READ_HEAD_SQL, &[]).await?;
            raise(head, row.get::<_, i64>(0) as u64);
            tokio::select! {
                woke = woken.recv() => {
                    if woke.is_none() {
                        // The connection ended; the next query reports why.
                        client.query_one("SELECT 1", &[]).await?;
                    }
                    // Take every wake-up queued meanwhile: one read covers them all.
                    while woken.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(poll_interval) => {}
            }
        }
    }
    .await;
    driver.abort();
    outcome
}

/// An event row; a hash column of the wrong length is damage, named by position.
fn recorded(row: &tokio_postgres::Row) -> Result<RecordedEvent, StoreError> {
    let position = row.get::<_, i64>(0) as u64;
    let hash = row
        .get::<_, &[u8]>(8)
        .try_into()
        .map_err(|_| StoreError::Corrupt {
            location: format!("position {position}"),
            detail: "the event's hash is not 32 bytes".into(),
        })?;
    Ok(RecordedEvent {
        position,
        stream: row.get(1),
        version: row.get::<_, i64>(2) as u64,
        event_id: row.get(3),
        event_type: row.get(4),
        schema_version: row.get::<_, i16>(5) as u16,
        recorded_at_ms: row.get(6),
        data: row.get(7),
        hash,
    })
}

fn limit(max: usize) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(
        &self,
        appends: Vec<StreamAppend>,
    ) -> Result<Vec<Result<Appended, Conflict>>, StoreError> {
        let mut bytes = 0usize;
        let mut events = 0usize;
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
                bytes += event.data.len();
            }
            events += append.events.len();
        }
        if events > APPEND_EVENTS_MAX {
            return Err(StoreError::LimitExceeded {
                what: "events in one append",
                actual: events,
                limit: APPEND_EVENTS_MAX,
            });
        }
        if bytes > APPEND_BYTES_MAX {
            return Err(StoreError::LimitExceeded {
                what: "bytes in one append",
                actual: bytes,
                limit: APPEND_BYTES_MAX,
            });
        }
        let (reply, answer) = oneshot::channel();
        self.committer
            .send(Request { appends, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        // The committer raised the head to the commit's end before it answered.
        answer.await.map_err(|_| StoreError::Closed)?
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
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT position, stream, version, event_id, event_type, schema_version,
                        recorded_at_ms, data, hash
                 FROM taskledger.events WHERE stream = $1 AND version >= $2
                 ORDER BY version LIMIT $3",
                &[
                    &stream,
                    &i64::try_from(from_version).unwrap_or(i64::MAX),
                    &limit(max),
                ],
            )
            .await
            .map_err(|error| classify(error, &self.target))?;
        rows.iter().map(recorded).collect()
    }

    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT position, stream, version, event_id, event_type, schema_version,
                        recorded_at_ms, data, hash
                 FROM taskledger.events WHERE position >= $1
                 ORDER BY position LIMIT $2",
                &[
                    &i64::try_from(from_position).unwrap_or(i64::MAX),
                    &limit(max),
                ],
            )
            .await
            .map_err(|error| classify(error, &self.target))?;
        let events = rows.iter().map(recorded).collect::<Result<Vec<_>, _>>()?;
        if let Some(last) = events.last() {
            raise(&self.head, last.position + 1);
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
        "postgres"
    }
}
