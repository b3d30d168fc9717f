//! Stored-record decoders: an event's payload (`Event::decode`, every type and schema version),
//! the projection runner's decode of a recorded event, and a read model's task record
//! (`decode_record`, postcard). An error, never a panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use taskledger_domain::Event;
use taskledger_store::RecordedEvent;

const TYPES: [&str; 7] = [
    "ExecutionEnqueued",
    "ExecutionClaimed",
    "ExecutionSucceeded",
    "ExecutionFailed",
    "ExecutionArchived",
    "ReportRejected",
    "Bogus",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let event_type = TYPES[(selector as usize) % TYPES.len()];
    let schema_version = u16::from(selector >> 5);
    let _ = Event::decode(event_type, schema_version, rest);
    let _ = taskledger_projections::runner::decode(RecordedEvent {
        stream: "fuzz:1".into(),
        version: 0,
        position: 0,
        event_id: uuid_of(rest),
        event_type: event_type.into(),
        schema_version,
        recorded_at_ms: 0,
        data: rest.to_vec(),
        hash: [0; 32],
    });
    let _ = taskledger_projections::models::decode_record("fuzz:1", rest);
});

fn uuid_of(bytes: &[u8]) -> uuid::Uuid {
    let mut raw = [0u8; 16];
    for (slot, byte) in raw.iter_mut().zip(bytes) {
        *slot = *byte;
    }
    uuid::Uuid::from_bytes(raw)
}
