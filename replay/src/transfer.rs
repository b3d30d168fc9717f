//! `export` / `import`: the stored events as NDJSON (SPEC section 7), for backup, restore and
//! moving between backends. Import appends each event at its recorded stream version with its
//! own event id, so importing the same file twice appends nothing the second time.

use crate::ReplayError;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::io::{BufRead, Write};
use taskledger_domain::{Event, Timestamp};
use taskledger_store::{ExpectedVersion, NewEvent, SharedStore, StreamAppend};

/// Events read per store call while exporting, and appended per call while importing.
const TRANSFER_EVENTS_BATCH: usize = 8192;

/// One exported event.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportedEvent {
    pub stream: String,
    pub version: u64,
    pub position: u64,
    pub event_id: uuid::Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default = "first_schema")]
    pub schema_version: u16,
    pub recorded_at: Timestamp,
    pub data: Box<RawValue>,
    /// The event's chain hash (hex, [`taskledger_store::chain`]). Exports of builds before the
    /// hash chains have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

fn first_schema() -> u16 {
    taskledger_domain::event::JSON_SCHEMA_VERSION
}

/// An event's payload as an export shows it: JSON. A version-1 payload is JSON already and is
/// written as stored; a version-2 (binary) one as its JSON rendering, from which
/// [`stored_payload`] gives the stored bytes back.
fn exported_data(record: &taskledger_store::RecordedEvent) -> Result<Box<RawValue>, ReplayError> {
    let at = |problem: String| {
        ReplayError::Io(format!("event at position {}: {problem}", record.position))
    };
    let text = if record.schema_version == taskledger_domain::event::JSON_SCHEMA_VERSION {
        String::from_utf8(record.data.clone()).map_err(|_| at("not UTF-8 JSON".into()))?
    } else {
        let event = Event::decode(&record.event_type, record.schema_version, &record.data)
            .map_err(|error| at(error.to_string()))?;
        event.to_json().to_string()
    };
    RawValue::from_string(text).map_err(|error| at(error.to_string()))
}

/// The event an exported line holds, and its payload as stored at the line's schema version
/// (the canonical encoding of that version: an import keeps each event's version, so its bytes
/// and its hash are what they were).
pub(crate) fn stored_payload(exported: &ExportedEvent) -> Result<(Event, Vec<u8>), String> {
    let event = Event::from_json(&exported.event_type, exported.data.get().as_bytes())
        .map_err(|error| error.to_string())?;
    let data = event
        .encode_version(exported.schema_version)
        .ok_or_else(|| {
            format!(
                "schema version {} is not one this build writes (1..={})",
                exported.schema_version,
                taskledger_domain::event::EVENT_SCHEMA_VERSION
            )
        })?;
    Ok((event, data))
}

/// Writes every stored event, in global order. Returns how many.
pub async fn export(
    store: &SharedStore,
    out: &mut dyn Write,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<u64, ReplayError> {
    let head = store.head_position();
    let mut position = 0;
    while position < head {
        let records = store.read_all(position, TRANSFER_EVENTS_BATCH).await?;
        if records.is_empty() {
            break;
        }
        for record in records {
            let data = exported_data(&record)?;
            let line = ExportedEvent {
                stream: record.stream,
                version: record.version,
                position: record.position,
                event_id: record.event_id,
                event_type: record.event_type,
                schema_version: record.schema_version,
                recorded_at: Timestamp(record.recorded_at_ms),
                data,
                hash: Some(taskledger_store::chain::to_hex(&record.hash)),
            };
            serde_json::to_writer(&mut *out, &line).map_err(|e| ReplayError::Io(e.to_string()))?;
            out.write_all(b"\n")
                .map_err(|e| ReplayError::Io(e.to_string()))?;
            position = line.position + 1;
        }
        progress(position, head);
    }
    out.flush().map_err(|e| ReplayError::Io(e.to_string()))?;
    Ok(position)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportSummary {
    pub events: u64,
    pub appended: u64,
    /// Already present with the same event id (a re-import).
    pub already_present: u64,
}

struct Pending {
    line: u64,
    stream: String,
    version: u64,
    event_id: uuid::Uuid,
}

/// Imports an export. Every line is validated (and its payload decoded, then re-encoded in this
/// build's canonical form) before it is appended; a bad line stops the import with its number.
/// A line's hash, when the export carries them, must be the one the event gets here (its
/// content after its stream's previous line): an altered export is refused at the line that
/// breaks, and an import gives every event the hash it had.
pub async fn import(
    store: &SharedStore,
    input: &mut dyn BufRead,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ImportSummary, ReplayError> {
    let mut summary = ImportSummary::default();
    let mut batch: Vec<(Pending, StreamAppend)> = Vec::new();
    let mut text = String::new();
    let mut line = 0u64;
    // Per stream: the version and hash of its previous line.
    let mut chains: std::collections::HashMap<String, (u64, taskledger_store::chain::Hash)> =
        std::collections::HashMap::new();
    loop {
        text.clear();
        let read = input
            .read_line(&mut text)
            .map_err(|e| ReplayError::Io(e.to_string()))?;
        if read > 0 {
            line += 1;
        }
        if read > 0 && !text.trim().is_empty() {
            let exported: ExportedEvent =
                serde_json::from_str(&text).map_err(|error| ReplayError::Input {
                    line,
                    problem: error.to_string(),
                })?;
            let (event, data) = stored_payload(&exported)
                .map_err(|problem| ReplayError::Input { line, problem })?;
            let new = NewEvent {
                event_id: exported.event_id,
                event_type: event.type_name().to_owned(),
                schema_version: exported.schema_version,
                recorded_at_ms: exported.recorded_at.millis(),
                data,
            };
            if let Some(hex) = &exported.hash {
                check_line_hash(&mut chains, &exported, &new, hex, line)?;
            }
            summary.events += 1;
            batch.push((
                Pending {
                    line,
                    stream: exported.stream.clone(),
                    version: exported.version,
                    event_id: exported.event_id,
                },
                StreamAppend {
                    stream: exported.stream,
                    expected: ExpectedVersion::Length(exported.version),
                    events: vec![new],
                },
            ));
        }
        if batch.len() >= TRANSFER_EVENTS_BATCH || (read == 0 && !batch.is_empty()) {
            flush(store, std::mem::take(&mut batch), &mut summary).await?;
            progress(summary.events);
        }
        if read == 0 {
            return Ok(summary);
        }
    }
}

/// Checks an exported line's hash against the hash its event gets on import. The previous hash
/// is the stream's previous line's (version 0: the chain's start); a stream whose earlier events
/// are not in the file is checked from its second line on.
fn check_line_hash(
    chains: &mut std::collections::HashMap<String, (u64, taskledger_store::chain::Hash)>,
    exported: &ExportedEvent,
    new: &NewEvent,
    hex: &str,
    line: u64,
) -> Result<(), ReplayError> {
    use taskledger_store::chain::{event_hash, from_hex, GENESIS};
    let stated = from_hex(hex).ok_or_else(|| ReplayError::Input {
        line,
        problem: format!("hash {hex:?} is not 64 hex digits"),
    })?;
    let previous = match (exported.version, chains.get(&exported.stream)) {
        (0, _) => Some(GENESIS),
        (version, Some((before, hash))) if *before + 1 == version => Some(*hash),
        _ => None,
    };
    if let Some(previous) = previous {
        if event_hash(&previous, &exported.stream, exported.version, new) != stated {
            return Err(ReplayError::Input {
                line,
                problem: format!(
                    "stream {:?} version {}: its hash does not match its content after the \
                     stream's previous event (the export was altered)",
                    exported.stream, exported.version
                ),
            });
        }
    }
    chains.insert(exported.stream.clone(), (exported.version, stated));
    Ok(())
}

async fn flush(
    store: &SharedStore,
    batch: Vec<(Pending, StreamAppend)>,
    summary: &mut ImportSummary,
) -> Result<(), ReplayError> {
    let (pending, appends): (Vec<Pending>, Vec<StreamAppend>) = batch.into_iter().unzip();
    let results = store.append(appends.clone()).await?;
    for ((pending, append), result) in pending.into_iter().zip(appends).zip(results) {
        match result {
            Ok(_) => summary.appended += 1,
            Err(_) => {
                // Already imported? Then the stream holds this very event at this version.
                let present = store
                    .read_stream(&pending.stream, pending.version, 1)
                    .await?
                    .first()
                    .is_some_and(|stored| stored.event_id == pending.event_id);
                if present {
                    summary.already_present += 1;
                    continue;
                }
                // Refused only because an earlier append of its stream in this call was (a
                // partial earlier import): on its own it may fit.
                match store.append(vec![append]).await?.pop() {
                    Some(Ok(_)) => summary.appended += 1,
                    _ => {
                        return Err(ReplayError::Conflict {
                            line: pending.line,
                            stream: pending.stream,
                            version: pending.version,
                        })
                    }
                }
            }
        }
    }
    Ok(())
}
