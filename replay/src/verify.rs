//! `rebuild` and `rebuild --verify`.

use crate::ReplayError;
use serde::Serialize;
use std::sync::Arc;
use taskledger_projections::digest::digests;
use taskledger_projections::{catch_up, CatchUp, CatchUpOptions, Kv, Projector};
use taskledger_store::SharedStore;

/// Replays every event into fresh models in `kv` (emptied first).
pub async fn rebuild(
    store: SharedStore,
    kv: Arc<dyn Kv>,
    options: &CatchUpOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<CatchUp, ReplayError> {
    kv.clear()?;
    let mut projector = Projector::new(kv);
    Ok(catch_up(store, &mut projector, options, progress).await?)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelComparison {
    pub model: &'static str,
    pub live: String,
    pub rebuilt: String,
    pub entries: u64,
    pub equal: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Both sides were compared at this global position.
    pub position: u64,
    pub models: Vec<ModelComparison>,
    /// Names of the models that differ.
    pub differing: Vec<&'static str>,
}

/// Brings the live models to the store's current head, rebuilds into `scratch` up to the same
/// position, and compares a digest per model.
pub async fn verify(
    store: SharedStore,
    live: Arc<dyn Kv>,
    scratch: Arc<dyn Kv>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Verification, ReplayError> {
    let position = store.head_position();
    let options = CatchUpOptions {
        until: Some(position),
        ..CatchUpOptions::default()
    };
    let mut live_projector = Projector::new(live.clone());
    catch_up(store.clone(), &mut live_projector, &options, &|_, _| {}).await?;
    rebuild(store, scratch.clone(), &options, progress).await?;
    let (live_digests, rebuilt_digests) = (digests(live.as_ref())?, digests(scratch.as_ref())?);
    let mut models = Vec::new();
    for (model, (live_hash, entries)) in live_digests {
        let rebuilt = rebuilt_digests
            .get(model)
            .map(|(hash, _)| hash.clone())
            .unwrap_or_default();
        models.push(ModelComparison {
            model,
            equal: rebuilt == live_hash,
            live: live_hash,
            rebuilt,
            entries,
        });
    }
    let differing = models
        .iter()
        .filter(|m| !m.equal)
        .map(|m| m.model)
        .collect();
    Ok(Verification {
        position,
        models,
        differing,
    })
}
