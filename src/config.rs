//! The TOML configuration file and opening the data directory.

use anyhow::Context;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use taskledger_domain::Policy;
use taskledger_ingest::{Ledger, LedgerConfig, SystemClock};
use taskledger_projections::{CatchUpOptions, ProjectionError, RedbKv};
use taskledger_store::SharedStore;
use taskledger_store_sled::{RecoveringStore, RecoveryConfig, SledConfig, SledStore};

/// Everything the configuration file may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub ledger: LedgerSettings,
    #[serde(default)]
    pub models: ModelsSettings,
    /// `[retention]`: when present, `serve` moves ended streams into cold segments periodically.
    #[serde(default)]
    pub retention: Option<RetentionSettings>,
}

/// `[retention]`: what `serve` moves into cold segments, and how often it looks
/// (`taskledger retain --before <now - age_ms>` every `interval_ms`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Streams whose every execution ended and whose last event is older than this move.
    pub age_ms: u64,
    /// Time between two runs (the first runs one interval after the start).
    #[serde(default = "RetentionSettings::default_interval_ms")]
    pub interval_ms: u64,
}

impl RetentionSettings {
    fn default_interval_ms() -> u64 {
        3_600_000
    }

    /// Refuses a setting outside its bounds, naming it.
    fn check(&self) -> anyhow::Result<()> {
        within("retention.age_ms", self.age_ms, 0, RETENTION_AGE_MS_MAX)?;
        within(
            "retention.interval_ms",
            self.interval_ms,
            RETENTION_INTERVAL_MS_MIN,
            RETENTION_INTERVAL_MS_MAX,
        )
    }
}

/// The bounds `[retention]` accepts: a run scans every task record, so not more than once a
/// second; at least once a week; an age up to a century.
const RETENTION_INTERVAL_MS_MIN: u64 = 1_000;
const RETENTION_INTERVAL_MS_MAX: u64 = 7 * 86_400_000;
const RETENTION_AGE_MS_MAX: u64 = 100 * 365 * 86_400_000;

/// `[server]`: the HTTP service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub listen: String,
    /// Bearer tokens and their roles (`reporter`, `reader`, `operator`). Also from
    /// `TASKLEDGER_TOKENS="token1=reporter+reader,token2=operator"`.
    pub tokens: Vec<TokenSettings>,
    pub body_bytes_max: usize,
    pub batch_reports_max: usize,
    /// Requests of one principal in flight at once (429 beyond).
    pub principal_requests_max: usize,
    /// Requests in flight at once from callers without a valid token (429 beyond).
    pub unauthenticated_requests_max: usize,
    /// Queues with their own series on `/metrics`; the rest are summed under `_other`.
    pub metrics_queues_max: usize,
    /// `/metrics` needs a token with the reader role (off: anyone who reaches it may read it).
    pub metrics_token_required: bool,
    /// Behind tokens, the host names requests may be addressed to (421 otherwise; a defence
    /// against DNS rebinding for the UI). Empty: any.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// The principal recorded in the events this token appends. Without it, the token's text
    /// is its name (SPEC section 3) — and then appears in every event it appends, where every
    /// reader sees it: name production tokens.
    #[serde(default)]
    pub name: Option<String>,
    pub token: String,
    pub roles: Vec<taskledger_serve::Role>,
}

/// The bounds `[server]` accepts: a body must hold at least a small report (a larger one gets
/// 413), and no request may ask the store for more than one append can take.
const BODY_BYTES_MIN: usize = 1024;
const BODY_BYTES_MAX: usize = taskledger_store::APPEND_BYTES_MAX;
const BATCH_REPORTS_MIN: usize = 1;
const BATCH_REPORTS_MAX: usize = taskledger_store::APPEND_EVENTS_MAX;

impl ServerSettings {
    /// Refuses a setting outside its bounds, naming it.
    fn check(&self) -> anyhow::Result<()> {
        within(
            "server.body_bytes_max",
            self.body_bytes_max,
            BODY_BYTES_MIN,
            BODY_BYTES_MAX,
        )?;
        within(
            "server.batch_reports_max",
            self.batch_reports_max,
            BATCH_REPORTS_MIN,
            BATCH_REPORTS_MAX,
        )?;
        within(
            "server.principal_requests_max",
            self.principal_requests_max,
            1,
            1_000_000,
        )?;
        within(
            "server.unauthenticated_requests_max",
            self.unauthenticated_requests_max,
            1,
            1_000_000,
        )?;
        within(
            "server.metrics_queues_max",
            self.metrics_queues_max,
            1,
            100_000,
        )
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        let limits = taskledger_serve::Limits::default();
        ServerSettings {
            listen: "127.0.0.1:7070".into(),
            tokens: Vec::new(),
            body_bytes_max: limits.body_bytes_max,
            batch_reports_max: limits.batch_reports_max,
            principal_requests_max: limits.principal_requests_max,
            unauthenticated_requests_max: limits.unauthenticated_requests_max,
            metrics_queues_max: limits.metrics_queues_max,
            metrics_token_required: limits.metrics_token_required,
            allowed_hosts: limits.allowed_hosts,
        }
    }
}

impl ServerSettings {
    /// The service's limits from these settings.
    pub fn limits(&self) -> taskledger_serve::Limits {
        taskledger_serve::Limits {
            body_bytes_max: self.body_bytes_max,
            batch_reports_max: self.batch_reports_max,
            principal_requests_max: self.principal_requests_max,
            unauthenticated_requests_max: self.unauthenticated_requests_max,
            metrics_queues_max: self.metrics_queues_max,
            metrics_token_required: self.metrics_token_required,
            allowed_hosts: self.allowed_hosts.clone(),
        }
    }
}

/// The tokens of the configuration plus those of `TASKLEDGER_TOKENS`
/// (`name=role+role` — the name is the token, as SPEC section 3 has it — or
/// `name:token=role+role`, which keeps the token out of the events), each checked: an empty,
/// duplicate or badly named token refuses the start, naming its setting.
pub fn tokens(settings: &ServerSettings) -> anyhow::Result<taskledger_serve::Tokens> {
    let mut specs = Vec::new();
    for (index, entry) in settings.tokens.iter().enumerate() {
        specs.push(taskledger_serve::TokenSpec {
            source: format!("[server] tokens[{index}]"),
            name: entry.name.clone().unwrap_or_else(|| entry.token.clone()),
            secret: entry.token.clone(),
            roles: entry.roles.clone(),
        });
    }
    if let Some(text) = std::env::var("TASKLEDGER_TOKENS")
        .ok()
        .filter(|text| !text.trim().is_empty())
    {
        let items: Vec<&str> = text.split(',').collect();
        let last = items.len();
        for (index, item) in items.into_iter().enumerate() {
            let source = format!("TASKLEDGER_TOKENS entry {}", index + 1);
            if item.trim().is_empty() {
                // A trailing comma is a habit, not a token.
                if index + 1 == last && index > 0 {
                    continue;
                }
                anyhow::bail!("{source}: the entry is empty");
            }
            let (token, roles) = item
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("{source}: {item:?} is not token=role+role"))?;
            let roles = roles
                .split('+')
                .map(|role| {
                    taskledger_serve::Role::parse(role.trim()).ok_or_else(|| {
                        anyhow::anyhow!(
                            "{source}: unknown role {role:?} (reporter, reader, operator)"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let token = token.trim();
            let (name, secret) = match token.split_once(':') {
                Some((name, secret)) => (name.trim(), secret.trim()),
                None => (token, token),
            };
            specs.push(taskledger_serve::TokenSpec {
                source,
                name: name.to_owned(),
                secret: secret.to_owned(),
                roles,
            });
        }
    }
    let unnamed = specs.iter().any(|spec| spec.name == spec.secret);
    let tokens = taskledger_serve::Tokens::new(specs, settings.principal_requests_max)?;
    if unnamed {
        tracing::warn!("a token without its own name is recorded as the principal of every event it appends: name it (name:token=roles, or name = \"…\" in [server] tokens)");
    }
    Ok(tokens)
}

/// `[store]`: where the ledger lives (`url`; `--store` and `TASKLEDGER_STORE` override it) and
/// the embedded sled store's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `postgres://…` / `postgresql://…` (PostgreSQL), `kurrentdb://…` / `esdb://…`
    /// (KurrentDB); unset: the embedded sled store in the data directory.
    pub url: Option<String>,
    pub cache_capacity_bytes: u64,
    pub commit_events_max: usize,
    /// Write-ahead log bytes between checkpoints: bounds the log file and the replay on open.
    pub wal_checkpoint_bytes: u64,
    /// Stream lengths (and last hashes) the committer keeps in memory, ~170 bytes each by their
    /// layout (the LRU node, its map slot, the name).
    pub stream_heads_cached_max: usize,
}

/// `[ledger]`: the write path's memory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    /// Task states kept decided-and-ready in memory (a miss costs one stream read).
    pub task_states_cached_max: usize,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            task_states_cached_max: LedgerConfig::default().task_states_cached_max,
        }
    }
}

impl LedgerSettings {
    /// Refuses a setting outside its bounds, naming it.
    fn check(&self) -> anyhow::Result<()> {
        within(
            "ledger.task_states_cached_max",
            self.task_states_cached_max,
            CACHED_ENTRIES_MIN,
            CACHED_ENTRIES_MAX,
        )
    }
}

const CACHED_ENTRIES_MIN: usize = 1;
const CACHED_ENTRIES_MAX: usize = 1 << 26;

/// The bounds `[store]` accepts: below them a store thrashes (a checkpoint per commit, a cache
/// that holds nothing), above them it replays for minutes or exhausts memory.
const CACHE_CAPACITY_BYTES_MIN: u64 = 1 << 20;
const CACHE_CAPACITY_BYTES_MAX: u64 = 64 << 30;
const COMMIT_EVENTS_MIN: usize = 1;
const COMMIT_EVENTS_MAX: usize = taskledger_store::APPEND_EVENTS_MAX;
const WAL_CHECKPOINT_BYTES_MIN: u64 = 1 << 20;
const WAL_CHECKPOINT_BYTES_MAX: u64 = 4 << 30;

impl Default for StoreSettings {
    fn default() -> Self {
        let defaults = SledConfig::new(".");
        StoreSettings {
            url: None,
            cache_capacity_bytes: defaults.cache_capacity_bytes,
            commit_events_max: defaults.commit_events_max,
            wal_checkpoint_bytes: defaults.wal_checkpoint_bytes,
            stream_heads_cached_max: defaults.stream_heads_cached_max,
        }
    }
}

/// Refuses `value` outside `min..=max`, naming the setting.
fn within<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
    min: T,
    max: T,
) -> anyhow::Result<()> {
    if value < min || value > max {
        anyhow::bail!("{name} = {value} is outside {min}..={max}");
    }
    Ok(())
}

impl StoreSettings {
    /// Refuses a setting outside its bounds, naming it.
    fn check(&self) -> anyhow::Result<()> {
        within(
            "store.cache_capacity_bytes",
            self.cache_capacity_bytes,
            CACHE_CAPACITY_BYTES_MIN,
            CACHE_CAPACITY_BYTES_MAX,
        )?;
        within(
            "store.commit_events_max",
            self.commit_events_max,
            COMMIT_EVENTS_MIN,
            COMMIT_EVENTS_MAX,
        )?;
        within(
            "store.wal_checkpoint_bytes",
            self.wal_checkpoint_bytes,
            WAL_CHECKPOINT_BYTES_MIN,
            WAL_CHECKPOINT_BYTES_MAX,
        )?;
        within(
            "store.stream_heads_cached_max",
            self.stream_heads_cached_max,
            CACHED_ENTRIES_MIN,
            CACHED_ENTRIES_MAX,
        )
    }
}

pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration {}", path.display()))?;
    let mut config: Config =
        toml::from_str(&text).with_context(|| format!("configuration {}", path.display()))?;
    config.policy = config
        .policy
        .compiled()
        .with_context(|| format!("configuration {}", path.display()))?;
    config
        .store
        .check()
        .and_then(|()| config.server.check())
        .and_then(|()| config.models.check())
        .and_then(|()| config.ledger.check())
        .and_then(|()| {
            config
                .retention
                .as_ref()
                .map_or(Ok(()), RetentionSettings::check)
        })
        .with_context(|| format!("configuration {}", path.display()))?;
    Ok(config)
}

/// Where the event store lives inside a data directory.
pub fn events_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("events")
}

/// The event store the configuration names: sled in the data directory by default, else the
/// server of `[store] url` / `--store`. A URL that does not parse or names an unknown scheme, and
/// a server that cannot be reached within its connect timeout, are errors naming it.
pub async fn open_store(data_dir: &Path, config: &Config) -> anyhow::Result<SharedStore> {
    match config.store.url.as_deref().map(str::trim) {
        None | Some("") => Ok(open_sled(data_dir, config)? as SharedStore),
        Some(url) => open_url(url).await,
    }
}

/// The store `serve` runs on: [`open_store`]'s, except that the embedded one reopens itself after
/// a failed write or sync once its file system has room again (`RecoveringStore`), so a full
/// disk heals without a restart.
pub async fn open_service_store(data_dir: &Path, config: &Config) -> anyhow::Result<SharedStore> {
    match config.store.url.as_deref().map(str::trim) {
        None | Some("") => {
            let store =
                RecoveringStore::open(sled_config(data_dir, config), RecoveryConfig::default())
                    .with_context(|| {
                        format!("opening the data directory {}", data_dir.display())
                    })?;
            Ok(Arc::new(store))
        }
        Some(url) => open_url(url).await,
    }
}

async fn open_url(url: &str) -> anyhow::Result<SharedStore> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("postgres" | "postgresql") => open_postgres(url).await,
        Some("kurrentdb" | "esdb" | "kurrentdb+discover" | "esdb+discover") => {
            open_kurrentdb(url).await
        }
        _ => anyhow::bail!(
            "--store {}: not a store URL this build knows (postgres://…, postgresql://…, kurrentdb://…, esdb://…; \
             leave it unset for the embedded sled store)",
            redact(url)
        ),
    }
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> anyhow::Result<SharedStore> {
    use taskledger_store_postgres::{PostgresConfig, PostgresStore};
    let store = PostgresStore::open(PostgresConfig::new(url))
        .await
        .with_context(|| format!("opening the event store {}", redact(url)))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(url: &str) -> anyhow::Result<SharedStore> {
    anyhow::bail!(
        "--store {}: this build has no PostgreSQL backend (build with the default features, or `--features postgres`)",
        redact(url)
    )
}

#[cfg(not(feature = "kurrentdb"))]
async fn open_kurrentdb(url: &str) -> anyhow::Result<SharedStore> {
    anyhow::bail!(
        "--store {}: this build has no KurrentDB backend (build with `--features kurrentdb`)",
        redact(url)
    )
}

#[cfg(feature = "kurrentdb")]
async fn open_kurrentdb(url: &str) -> anyhow::Result<SharedStore> {
    let store = taskledger_store_kurrent::KurrentStore::open(url)
        .await
        .with_context(|| format!("opening the event store {}", redact(url)))?;
    Ok(Arc::new(store))
}

/// A URL with its password (between `:` and `@` of the authority) replaced, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// The embedded store's settings for a data directory.
pub fn sled_config(data_dir: &Path, config: &Config) -> SledConfig {
    let mut settings = SledConfig::new(events_dir(data_dir));
    settings.cache_capacity_bytes = config.store.cache_capacity_bytes;
    settings.commit_events_max = config.store.commit_events_max;
    settings.wal_checkpoint_bytes = config.store.wal_checkpoint_bytes;
    settings.stream_heads_cached_max = config.store.stream_heads_cached_max;
    settings
}

pub fn open_sled(data_dir: &Path, config: &Config) -> anyhow::Result<Arc<SledStore>> {
    let settings = sled_config(data_dir, config);
    let store = SledStore::open(settings)
        .with_context(|| format!("opening the data directory {}", data_dir.display()))?;
    Ok(Arc::new(store))
}

fn models_dirs(data_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        data_dir.join("models"),
        data_dir.join("models.rebuild"),
        data_dir.join("models.old"),
    )
}

/// Finishes or undoes a `rebuild` that a crash interrupted: a half-built `models.rebuild` is
/// dropped; if the crash fell between the two renames, the previous models come back (they are
/// complete, with their own checkpoint, and catch up from it).
fn recover_models_dir(data_dir: &Path) -> anyhow::Result<()> {
    let (live, fresh, old) = models_dirs(data_dir);
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh).with_context(|| format!("removing {}", fresh.display()))?;
    }
    if old.exists() {
        if live.exists() {
            std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        } else {
            std::fs::rename(&old, &live)
                .with_context(|| format!("restoring {}", live.display()))?;
        }
    }
    Ok(())
}

/// Rebuilds the models into `models.rebuild` with `build`, then swaps it in for `models`.
/// Queries never see a half-built model set, and a crash at any point leaves a complete one.
pub async fn rebuild_models<F, Fut, T>(
    data_dir: &Path,
    config: &Config,
    build: F,
) -> anyhow::Result<T>
where
    F: FnOnce(Arc<RedbKv>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    recover_models_dir(data_dir)?;
    let (live, fresh, old) = models_dirs(data_dir);
    let started = std::time::Instant::now();
    let kv = Arc::new(RedbKv::open(&fresh, config.models.cache_capacity_bytes)?);
    let result = build(kv.clone()).await?;
    let built = started.elapsed();
    // redb made every batch durable as it was applied: closing is all that is left.
    drop(kv);
    tracing::info!(
        built_s = built.as_secs_f64(),
        closed_s = (started.elapsed() - built).as_secs_f64(),
        "models rebuilt"
    );
    if live.exists() {
        std::fs::rename(&live, &old).with_context(|| format!("moving {} aside", live.display()))?;
    }
    std::fs::rename(&fresh, &live).with_context(|| format!("installing {}", live.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(result)
}

/// How the projection runner chunks its work: `TASKLEDGER_PROJECTION_CHUNK_EVENTS` events per
/// atomic model write (default 65,536; small values make many checkpoints, for crash tests).
pub fn catch_up_options() -> CatchUpOptions {
    let mut options = CatchUpOptions::default();
    if let Some(chunk) = std::env::var("TASKLEDGER_PROJECTION_CHUNK_EVENTS")
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
    {
        options.chunk_events = chunk.max(1);
    }
    options
}

/// The stored read models of a data directory.
pub fn open_models(data_dir: &Path, config: &Config) -> anyhow::Result<Arc<RedbKv>> {
    let cache_bytes = config.models.cache_capacity_bytes;
    recover_models_dir(data_dir)?;
    let live = models_dirs(data_dir).0;
    if RedbKv::is_foreign(&live) {
        // Models are derived data: an older build's (sled) are dropped and rebuilt from the
        // ledger by the next catch-up.
        tracing::warn!(dir = %live.display(), "read models from an older build: rebuilding them");
        std::fs::remove_dir_all(&live).with_context(|| format!("removing {}", live.display()))?;
    }
    let models = match RedbKv::open_verified(&live, cache_bytes) {
        Ok(models) => Ok(models),
        Err(damage @ ProjectionError::ModelsDamaged { .. }) => {
            // Derived data: keep the damaged file for a look, start empty (no checkpoint), and
            // the next catch-up replays every model from the ledger.
            let aside = data_dir.join(format!(
                "models.damaged-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis())
            ));
            tracing::error!(
                %damage,
                moved_to = %aside.display(),
                "the read models are damaged: moved aside; rebuilding them from the ledger"
            );
            std::fs::rename(&live, &aside).with_context(|| {
                format!("moving the damaged models aside to {}", aside.display())
            })?;
            RedbKv::open(&live, cache_bytes)
        }
        Err(other) => Err(other),
    }
    .with_context(|| format!("opening the read models in {}", data_dir.display()))?;
    Ok(Arc::new(models))
}

/// redb's page cache for the read models by default: the hot tasks' records and the indexes.
pub const MODELS_CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// `[models]`: the read models' memory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsSettings {
    /// redb's page cache for the models (the integrity check at open fills it too).
    pub cache_capacity_bytes: u64,
}

impl ModelsSettings {
    /// Refuses a setting outside its bounds, naming it.
    fn check(&self) -> anyhow::Result<()> {
        within(
            "models.cache_capacity_bytes",
            self.cache_capacity_bytes,
            CACHE_CAPACITY_BYTES_MIN,
            CACHE_CAPACITY_BYTES_MAX,
        )
    }
}

impl Default for ModelsSettings {
    fn default() -> Self {
        ModelsSettings {
            cache_capacity_bytes: MODELS_CACHE_BYTES,
        }
    }
}

pub fn ledger(store: SharedStore, config: &Config) -> Ledger {
    Ledger::new(
        store,
        config.policy.clone(),
        Arc::new(SystemClock),
        LedgerConfig {
            task_states_cached_max: config.ledger.task_states_cached_max,
            ..LedgerConfig::default()
        },
    )
}
