//! The TOML configuration file and opening the data directory.

use anyhow::Context;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use taskledger_domain::Policy;
use taskledger_ingest::{Ledger, LedgerConfig, SystemClock};
use taskledger_projections::SledKv;
use taskledger_store::{SharedStore, SledConfig, SledStore};

/// Everything the configuration file may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub store: StoreSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub cache_capacity_bytes: u64,
    pub commit_events_max: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        let defaults = SledConfig::new(".");
        StoreSettings {
            cache_capacity_bytes: defaults.cache_capacity_bytes,
            commit_events_max: defaults.commit_events_max,
        }
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
    Ok(config)
}

/// Where the event store lives inside a data directory.
pub fn events_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("events")
}

pub fn open_store(data_dir: &Path, config: &Config) -> anyhow::Result<Arc<SledStore>> {
    let mut settings = SledConfig::new(events_dir(data_dir));
    settings.cache_capacity_bytes = config.store.cache_capacity_bytes;
    settings.commit_events_max = config.store.commit_events_max;
    let store = SledStore::open(settings)
        .with_context(|| format!("opening the data directory {}", data_dir.display()))?;
    Ok(Arc::new(store))
}

/// The stored read models of a data directory.
pub fn open_models(data_dir: &Path) -> anyhow::Result<Arc<SledKv>> {
    let models = SledKv::open(&data_dir.join("models"), MODELS_CACHE_BYTES)
        .with_context(|| format!("opening the read models in {}", data_dir.display()))?;
    Ok(Arc::new(models))
}

/// sled's page cache for the read models: the hot tasks' records and the indexes.
pub const MODELS_CACHE_BYTES: u64 = 128 * 1024 * 1024;

pub fn ledger(store: SharedStore, config: &Config) -> Ledger {
    Ledger::new(
        store,
        config.policy.clone(),
        Arc::new(SystemClock),
        LedgerConfig::default(),
    )
}
