//! Bit rot in the read models' file (`models/models.redb`). A plain redb open trusts the file:
//! measured here, most flipped bytes were served as other data without an error (and one
//! panicked). `RedbKv::open_verified` has redb check every page's checksum first, and the binary
//! (`config::open_models`) moves a damaged file aside and rebuilds the models from the ledger by
//! itself.

mod common;

use common::{fixture, ok, ok_json, taskledger};
use std::panic::AssertUnwindSafe;
use taskledger_projections::{Kv, ProjectionError, RedbKv};

const RECORDS: usize = 3000;
/// Flips, spread over the file.
const FLIPS: usize = 64;

fn write_models(dir: &std::path::Path) {
    let kv = RedbKv::open(dir, 1 << 20).unwrap();
    for chunk in 0..10 {
        let writes = (0..RECORDS / 10)
            .map(|i| {
                let n = chunk * (RECORDS / 10) + i;
                (
                    format!("T{n:08}").into_bytes(),
                    Some(format!("record {n} {}", "x".repeat(n % 200)).into_bytes()),
                )
            })
            .collect();
        kv.apply(writes).unwrap();
    }
}

/// Every (key, value) of the models.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

fn read_all(kv: &RedbKv) -> Result<Entries, String> {
    let mut out = Vec::new();
    kv.scan(b"T", b"T", &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        true
    })
    .map_err(|e| e.to_string())?;
    Ok(out)
}

#[derive(Debug, Default)]
struct Outcomes {
    same: usize,
    damaged: usize,
    other_error: usize,
    panicked: usize,
    wrong: usize,
}

/// Each flip on a copy of the file, opened with `open`, read whole.
fn flip_each(open: fn(&std::path::Path) -> Result<RedbKv, ProjectionError>) -> Outcomes {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("models");
    write_models(&original);
    let bytes = std::fs::read(original.join("models.redb")).unwrap();
    let expected = read_all(&RedbKv::open(&original, 1 << 20).unwrap()).unwrap();
    let mut outcomes = Outcomes::default();
    for flip in 0..FLIPS {
        let offset = bytes.len() * flip / FLIPS + 17;
        let copy = dir.path().join(format!("copy{flip}"));
        std::fs::create_dir_all(&copy).unwrap();
        let mut damaged = bytes.clone();
        damaged[offset] ^= 0x10;
        std::fs::write(copy.join("models.redb"), &damaged).unwrap();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| match open(&copy) {
            Ok(kv) => read_all(&kv).map(Some),
            Err(ProjectionError::ModelsDamaged { .. }) => Ok(None),
            Err(other) => Err(other.to_string()),
        }));
        match result {
            Ok(Ok(Some(found))) if found == expected => outcomes.same += 1,
            Ok(Ok(Some(_))) => outcomes.wrong += 1,
            Ok(Ok(None)) => outcomes.damaged += 1,
            Ok(Err(_)) => outcomes.other_error += 1,
            Err(_) => outcomes.panicked += 1,
        }
    }
    outcomes
}

/// The control: a plain open serves damage (else the verified open would be tested against
/// nothing).
#[test]
fn a_plain_open_serves_flipped_bytes_as_data() {
    let outcomes = flip_each(|dir| RedbKv::open(dir, 1 << 20));
    eprintln!("plain open: {outcomes:?}");
    assert!(outcomes.wrong > 0, "{outcomes:?}");
}

#[test]
fn a_verified_open_refuses_every_flipped_byte_it_would_serve() {
    let outcomes = flip_each(|dir| RedbKv::open_verified(dir, 1 << 20));
    eprintln!("verified open: {outcomes:?}");
    assert_eq!(
        (outcomes.wrong, outcomes.panicked, outcomes.other_error),
        (0, 0, 0),
        "{outcomes:?}"
    );
    assert!(outcomes.damaged > FLIPS / 2, "{outcomes:?}");
}

/// End to end: damage the models of an ingested data directory; the next command rebuilds them
/// from the ledger by itself, answers as before, and keeps the damaged file aside.
#[test]
fn damaged_models_are_moved_aside_and_rebuilt_from_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(taskledger(
        data,
        &[
            "ingest",
            fixture("partner_pipeline.ndjson").to_str().unwrap(),
        ],
    ));
    let before = ok_json(taskledger(data, &["stats", "--json"]));
    let dlq_before = ok_json(taskledger(data, &["dlq", "--json"]));
    let file = data.join("models").join("models.redb");
    let bytes = std::fs::read(&file).unwrap();
    // Damage the first page that the check refuses (most are; RELIABILITY.md).
    let mut damaged_at = None;
    for flip in 0..FLIPS {
        let offset = bytes.len() * flip / FLIPS + 17;
        let copy = dir.path().join("probe");
        let _ = std::fs::remove_dir_all(&copy);
        std::fs::create_dir_all(&copy).unwrap();
        let mut damaged = bytes.clone();
        damaged[offset] ^= 0x10;
        std::fs::write(copy.join("models.redb"), &damaged).unwrap();
        if matches!(
            RedbKv::open_verified(&copy, 1 << 20),
            Err(ProjectionError::ModelsDamaged { .. })
        ) {
            std::fs::write(&file, &damaged).unwrap();
            damaged_at = Some(offset);
            break;
        }
    }
    assert!(damaged_at.is_some(), "no flip was refused");
    let after = ok_json(taskledger(data, &["stats", "--json"]));
    assert_eq!(
        after, before,
        "the rebuilt models answer as the old ones did"
    );
    assert_eq!(ok_json(taskledger(data, &["dlq", "--json"])), dlq_before);
    let aside: Vec<_> = std::fs::read_dir(data)
        .unwrap()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("models.damaged-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the damaged models are kept aside");
    ok(taskledger(data, &["rebuild", "--verify"]));
}
