//! Per-task queries read straight from the task's stream: a stream is short, so a fold per query
//! is cheap and always current.

use crate::{ProjectionError, TaskProjection};
use serde::Serialize;
use taskledger_domain::{Event, TaskId, Timestamp};
use taskledger_store::{EventStore, RecordedEvent};

/// One stored event, as `history` prints it (SPEC section 7).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub position: u64,
    pub version: u64,
    pub event_id: uuid::Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub recorded_at: Timestamp,
    pub data: serde_json::Value,
}

async fn decoded(
    store: &dyn EventStore,
    task_id: &TaskId,
) -> Result<Vec<(RecordedEvent, Event)>, ProjectionError> {
    let records = store.read_stream(task_id.as_str(), 0, usize::MAX).await?;
    records
        .into_iter()
        .map(|record| {
            let event = Event::decode(&record.event_type, record.schema_version, &record.data)
                .map_err(|error| ProjectionError::Codec {
                    stream: record.stream.clone(),
                    version: record.version,
                    message: error.to_string(),
                })?;
            Ok((record, event))
        })
        .collect()
}

/// The task's projection from the events with `at ≤ as_of` (all of them without `as_of`);
/// `None` when there are none.
pub async fn load_task(
    store: &dyn EventStore,
    task_id: &TaskId,
    as_of: Option<Timestamp>,
) -> Result<Option<TaskProjection>, ProjectionError> {
    let mut projection = TaskProjection::new(task_id.clone());
    for (_, event) in decoded(store, task_id).await? {
        if as_of.is_none_or(|as_of| event.at() <= as_of) {
            projection.apply(&event);
        }
    }
    Ok((projection.events > 0).then_some(projection))
}

/// The task's stored events in stream order, those with `at ≤ as_of` when given.
pub async fn history(
    store: &dyn EventStore,
    task_id: &TaskId,
    as_of: Option<Timestamp>,
) -> Result<Vec<HistoryEntry>, ProjectionError> {
    let mut entries = Vec::new();
    for (record, event) in decoded(store, task_id).await? {
        if as_of.is_some_and(|as_of| event.at() > as_of) {
            continue;
        }
        let data =
            serde_json::from_slice(&record.data).map_err(|error| ProjectionError::Codec {
                stream: record.stream.clone(),
                version: record.version,
                message: error.to_string(),
            })?;
        entries.push(HistoryEntry {
            position: record.position,
            version: record.version,
            event_id: record.event_id,
            event_type: record.event_type,
            recorded_at: Timestamp(record.recorded_at_ms),
            data,
        });
    }
    Ok(entries)
}
