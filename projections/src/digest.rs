//! A digest per read model, to compare a live model with a rebuild (`rebuild --verify`) or two
//! data directories. Each digest covers the model's logical content in key order.

use crate::kv::{for_each_task, Kv};
use crate::models::*;
use crate::ProjectionError;
use std::collections::BTreeMap;

/// The models, by the names `rebuild --verify` reports.
pub const MODEL_NAMES: [&str; 8] = [
    "taskStatus",
    "retryChains",
    "executions",
    "dlq",
    "archived",
    "queueStats",
    "stuck",
    "due",
];

/// The digest (BLAKE3, hex) of every model, and how many entries each holds.
pub fn digests(kv: &dyn Kv) -> Result<BTreeMap<&'static str, (String, u64)>, ProjectionError> {
    let mut hashers: BTreeMap<&'static str, (blake3::Hasher, u64)> = MODEL_NAMES
        .iter()
        .map(|name| (*name, (blake3::Hasher::new(), 0)))
        .collect();
    let mut add = |name: &'static str, key: &[u8], value: &[u8]| {
        if let Some((hasher, count)) = hashers.get_mut(name) {
            hasher.update(&(key.len() as u64).to_le_bytes());
            hasher.update(key);
            hasher.update(&(value.len() as u64).to_le_bytes());
            hasher.update(value);
            *count += 1;
        }
    };
    for_each_task(kv, &mut |task_id, record| {
        let key = task_key(task_id.as_str());
        let json = |value: &dyn erased::Json| value.bytes();
        add("taskStatus", &key, &json(&record.status_view(&task_id)));
        add("retryChains", &key, &json(&record.chain_view(&task_id)));
        add(
            "executions",
            &key,
            &json(&record.legacy_documents(&task_id)),
        );
    })?;
    for (prefix, name) in [
        (DLQ_PREFIX, "dlq"),
        (ARCHIVED_PREFIX, "archived"),
        (STATS_PREFIX, "queueStats"),
        (PROCESSING_PREFIX, "stuck"),
        (DUE_PREFIX, "due"),
    ] {
        kv.scan(&[prefix], &[prefix], &mut |key, value| {
            add(name, key, value);
            true
        })?;
    }
    Ok(hashers
        .into_iter()
        .map(|(name, (hasher, count))| (name, (hasher.finalize().to_hex().to_string(), count)))
        .collect())
}

mod erased {
    /// Serializes any view to JSON bytes (views are plain data; this cannot fail).
    pub trait Json {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn bytes(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("views always serialize")
        }
    }
}
