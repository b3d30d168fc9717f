//! `Kv::recover` on the read models' file, on the store's simulated disk: after an I/O error redb
//! refuses every later write (and read that reaches the file) until reopened, and a file whose sync failed starts over.

use std::path::Path;
use std::sync::Arc;
use taskledger_projections::{Kv, Recovery, RedbKv};
use taskledger_store::LogIo;
use taskledger_testkit::fault_disk::{Fault, FaultDisk};

fn models(disk: &FaultDisk) -> RedbKv {
    let io: Arc<dyn LogIo> = Arc::new(disk.clone());
    let kv = RedbKv::open_on(io, Path::new("/models/models.redb"), 1 << 20).unwrap();
    // Its name survives a power loss (a real open renames it in and syncs the directory).
    disk.sync_dir(Path::new("/models")).unwrap();
    kv
}

fn put(kv: &RedbKv, key: &str) -> Result<(), taskledger_projections::ProjectionError> {
    kv.apply(vec![(key.as_bytes().to_vec(), Some(b"value".to_vec()))])
}

#[test]
fn after_a_failed_write_the_models_refuse_until_recovered_and_keep_what_was_committed() {
    let disk = FaultDisk::new(1, false);
    let kv = models(&disk);
    put(&kv, "Tkept").unwrap();
    disk.arm(Fault::WriteFails { torn: true });
    assert!(put(&kv, "Tlost").is_err());
    // redb latches the error: the next write is refused until the database is reopened.
    let refused = put(&kv, "Tagain").unwrap_err().to_string();
    assert!(refused.contains("Previous I/O error"), "{refused}");
    assert_eq!(kv.recover().unwrap(), Recovery::Reopened);
    assert_eq!(kv.get(b"Tkept").unwrap(), Some(b"value".to_vec()));
    assert_eq!(kv.get(b"Tlost").unwrap(), None);
    assert_eq!(kv.get(b"Tagain").unwrap(), None);
    put(&kv, "Tafter").unwrap();
    assert_eq!(kv.get(b"Tafter").unwrap(), Some(b"value".to_vec()));
}

#[test]
fn after_a_failed_sync_the_models_start_over_empty() {
    let disk = FaultDisk::new(2, false);
    let kv = models(&disk);
    put(&kv, "Tbefore").unwrap();
    disk.arm(Fault::SyncFails);
    assert!(put(&kv, "Tduring").is_err());
    match kv.recover().unwrap() {
        Recovery::Recreated { why } => assert!(why.contains("sync"), "{why}"),
        other => panic!("expected the models to start over, got {other:?}"),
    }
    // Derived data: nothing of before is trusted; the next catch-up replays from position 0.
    assert_eq!(kv.get(b"Tbefore").unwrap(), None);
    put(&kv, "Tafter").unwrap();
    // And the new file survives a power loss.
    drop(kv);
    disk.cut_power();
    disk.power_loss().unwrap();
    let kv = models(&disk);
    assert_eq!(kv.get(b"Tafter").unwrap(), Some(b"value".to_vec()));
}
