//! TOML mapping files (`replay::legacy::Mapping::parse`): a mapping or an error naming the line,
//! never a panic; a mapping that parses is then used to read a small export.
#![no_main]
use libfuzzer_sys::fuzz_target;
use taskledger_replay::legacy::{read_export, Mapping};

const EXPORT: &str = concat!(
    r#"{"_id":{"$oid":"65a000000000000000000001"},"partnerCode":"SATLOC","aircraftId":"695d","logId":"1","meta":{"partner":"x"},"args":["a",1],"status":"completed","retryCount":{"$numberLong":"2"},"createdAt":{"$date":"2026-01-21T10:00:00.000Z"},"updatedAt":1767000000000,"task_id":"0b6f0000-0000-4000-8000-000000000000","date_done":"2026-01-21T10:00:00+01:00"}"#,
    "\n"
);

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(mapping) = Mapping::parse(text, "fuzz.toml") {
            let _ = mapping.per_execution();
            let _ = read_export(&mut EXPORT.as_bytes(), "export", Some(&mapping), true);
        }
    }
});
