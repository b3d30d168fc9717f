//! The fast slice of the fuzzing (RELIABILITY.md; the long runs are `bench/fuzz.sh`): arbitrary
//! and mutated legacy exports (Extended JSON lines or arrays) and TOML mapping files never make
//! the reader or the mapping parser panic.

use proptest::prelude::*;
use taskledger_replay::legacy::{read_export, Mapping};

const RELAXED: &str = include_str!("../../fixtures/legacy/tasktracker-relaxed.json");
const CANONICAL: &str = include_str!("../../fixtures/legacy/tasktracker-canonical.json");
const CELERY: &str = include_str!("../../fixtures/legacy/celery-redis.jsonl");
const PARTNERLOG: &str = include_str!("../../fixtures/mappings/partnerlog.toml");
const CELERY_MAPPING: &str = include_str!("../../fixtures/mappings/celery-redis.toml");

fn mutate(text: &'static str) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 1..8).prop_map(move |edits| {
        let mut bytes = text.as_bytes().to_vec();
        for (at, byte, kind) in edits {
            let at = usize::from(at) % (bytes.len() + 1);
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ if at > 0 => bytes.truncate(at),
                _ => {}
            }
        }
        bytes
    })
}

fn mappings() -> Vec<Mapping> {
    vec![
        Mapping::parse(PARTNERLOG, "partnerlog.toml").expect("the shipped mapping"),
        Mapping::parse(CELERY_MAPPING, "celery-redis.toml").expect("the shipped mapping"),
    ]
}

fn read_all_ways(bytes: &[u8], mappings: &[Mapping]) {
    for keep_raw in [false, true] {
        let _ = read_export(&mut &bytes[..], "hostile.json", None, keep_raw);
        for mapping in mappings {
            let _ = read_export(&mut &bytes[..], "hostile.json", Some(mapping), keep_raw);
        }
    }
}

fn export() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        mutate(RELAXED),
        mutate(CANONICAL),
        mutate(CELERY),
        proptest::collection::vec(any::<u8>(), 0..512),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hostile_exports_never_panic_the_reader(bytes in export()) {
        read_all_ways(&bytes, &mappings());
    }

    #[test]
    fn hostile_mappings_never_panic_the_parser(
        bytes in prop_oneof![mutate(PARTNERLOG), mutate(CELERY_MAPPING),
                             proptest::collection::vec(any::<u8>(), 0..256)],
    ) {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            if let Ok(mapping) = Mapping::parse(text, "hostile.toml") {
                let _ = read_export(&mut CELERY.as_bytes(), "celery.jsonl", Some(&mapping), true);
            }
        }
    }
}

/// A control: the fixtures read, and broken input is an error.
#[test]
fn fixtures_read_and_broken_input_is_an_error() {
    assert!(
        !read_export(&mut RELAXED.as_bytes(), "relaxed", None, false)
            .expect("the fixture reads")
            .is_empty()
    );
    assert!(read_export(&mut &b"{\"_id\":"[..], "broken", None, false).is_err());
    assert!(Mapping::parse("[tracker", "broken.toml").is_err());
}
