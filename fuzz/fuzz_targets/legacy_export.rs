//! The legacy export reader (`replay::legacy::read_export`): Extended JSON lines or one array,
//! as TaskTracker documents and through the shipped mappings. Documents or an error, never a
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use taskledger_replay::legacy::{read_export, Mapping};

fn mappings() -> &'static [Mapping] {
    static MAPPINGS: std::sync::OnceLock<Vec<Mapping>> = std::sync::OnceLock::new();
    MAPPINGS.get_or_init(|| {
        ["partnerlog.toml", "celery-redis.toml"]
            .iter()
            .map(|name| {
                let path = format!("{}/../fixtures/mappings/{name}", env!("CARGO_MANIFEST_DIR"));
                let text = std::fs::read_to_string(&path).expect("the shipped mapping");
                Mapping::parse(&text, name).expect("the shipped mapping parses")
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let keep_raw = data.first().is_some_and(|b| b & 1 == 1);
    let _ = read_export(&mut &data[..], "fuzz", None, keep_raw);
    for mapping in mappings() {
        let _ = read_export(&mut &data[..], "fuzz", Some(mapping), keep_raw);
    }
});
