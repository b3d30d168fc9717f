//! The fast slice of the fuzzing (RELIABILITY.md; the long runs are `bench/fuzz.sh`): arbitrary
//! and mutated bytes never make the report parser or the stored-event decoder panic.

use proptest::prelude::*;
use taskledger_domain::{Event, Report};

const FIXTURE: &str = include_str!("../../fixtures/partner_pipeline.ndjson");

/// A fixture line with a few bytes flipped, inserted, removed or cut: near-valid input reaches
/// deeper than random bytes.
fn mutated_line() -> impl Strategy<Value = Vec<u8>> {
    let lines: Vec<&'static str> = FIXTURE.lines().filter(|l| !l.is_empty()).collect();
    (
        proptest::sample::select(lines),
        proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 1..6),
    )
        .prop_map(|(line, edits)| {
            let mut bytes = line.as_bytes().to_vec();
            for (at, byte, kind) in edits {
                let at = usize::from(at) % (bytes.len() + 1);
                match kind {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    2 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
            }
            bytes
        })
}

fn parse(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(report) = Report::from_json(text) {
            // An accepted report has canonical bytes that are JSON again.
            let canonical = report.canonical_bytes();
            assert!(serde_json::from_slice::<serde_json::Value>(&canonical).is_ok());
        }
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        let _ = Report::from_value(value);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_report_parser(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse(&bytes);
    }

    #[test]
    fn mutated_reports_never_panic_the_report_parser(bytes in mutated_line()) {
        parse(&bytes);
    }

    #[test]
    fn arbitrary_payloads_never_panic_the_event_decoder(
        kind in 0usize..7,
        version in 0u16..3,
        bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..256), mutated_line()],
    ) {
        let types = ["ExecutionEnqueued", "ExecutionClaimed", "ExecutionSucceeded", "ExecutionFailed",
                     "ExecutionArchived", "ReportRejected", "Bogus"];
        let _ = Event::decode(types[kind], version, &bytes);
    }
}

/// The decoders do refuse what they must: a control that the properties above test real code.
#[test]
fn bad_input_is_an_error_not_a_report() {
    assert!(Report::from_json("{\"op\":\"enqueue\"}").is_err());
    assert!(Report::from_json("\u{0}").is_err());
    assert!(Event::decode("ExecutionEnqueued", 1, b"{").is_err());
    let line = FIXTURE.lines().next().expect("a fixture line");
    assert!(Report::from_json(line).is_ok());
}
