//! The report parser: `Report::from_json` on any text, `Report::from_value` on any JSON value.
//! Either a report or an error, never a panic; an accepted report's canonical bytes parse back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use taskledger_domain::Report;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(report) = Report::from_json(text) {
            let _ = report.key();
            let canonical = report.canonical_bytes();
            let _ = serde_json::from_slice::<serde_json::Value>(&canonical);
        }
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = Report::from_value(value);
    }
});
