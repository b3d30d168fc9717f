//! A full disk, for real: the store on a tmpfs of a few MiB mounted for the test, filled up
//! while it takes appends. The append that meets the full disk fails with a clear error
//! (`No space left on device`), nothing of it is acknowledged, the store
//! refuses further appends (it cannot vouch for a log it failed to write), and once space is back
//! and it is reopened every acknowledged event is there and it takes appends again — reopened by
//! hand, or by itself (`RecoveringStore`, what `serve` runs on).
//!
//! Mounting needs root: elsewhere the test says so and passes without running (the simulated
//! full disk of `fault_simulation.rs` runs everywhere).

use std::path::{Path, PathBuf};
use std::process::Command;
use taskledger_store::{EventStore, ExpectedVersion, NewEvent, StreamAppend};
use taskledger_store_sled::{RecoveringStore, RecoveryConfig, SledConfig, SledStore};

/// The file system's size: the log's first zeroed step (4 MiB) and sled's files fit, with room
/// for a filler that leaves too little for the log's next step.
const TMPFS_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes of one event (incompressible: commit blocks are LZ4-compressed).
const EVENT_BYTES: usize = 4 * 1024;
/// Appends tried before the disk must have filled up.
const APPENDS_MAX: usize = 8000;

/// A tmpfs mounted at a path, unmounted when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path) -> Option<Mounted> {
    std::fs::create_dir_all(at).ok()?;
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_BYTES}"), "tmpfs"])
        .arg(at)
        .status()
        .ok()?;
    status.success().then(|| Mounted(at.to_owned()))
}

fn event(index: usize) -> NewEvent {
    let mut state = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data = (0..EVENT_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    NewEvent {
        event_id: uuid::Uuid::from_u128(index as u128 + 1),
        event_type: "TaskEnqueued".into(),
        schema_version: 1,
        recorded_at_ms: index as i64,
        data,
    }
}

fn append(
    store: &dyn EventStore,
    runtime: &tokio::runtime::Runtime,
    index: usize,
) -> Result<(), String> {
    runtime
        .block_on(store.append(vec![StreamAppend {
            stream: format!("task-{}", index % 7),
            expected: ExpectedVersion::Any,
            events: vec![event(index)],
        }]))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Fills the file system with `path` until it is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

/// How long the test may take: sled 0.34 can block for good after a failed write of its own, and
/// a test that hangs would hang the suite.
const TEST_SECONDS_MAX: u64 = 120;

/// Runs `check` on a fresh tmpfs, within [`TEST_SECONDS_MAX`].
fn on_small_tmpfs(check: fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    let mounted = mount_tmpfs(&mount);
    let missing = mounted.is_none().then(|| {
        "cannot mount a tmpfs here (needs root); fault_simulation.rs covers ENOSPC on the simulated disk".to_owned()
    });
    if !taskledger_testkit::runs("tmpfs", "no_space", missing) {
        return;
    }
    let _mounted = mounted;
    let (done, outcome) = std::sync::mpsc::channel();
    let at = mount.clone();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(|| check(&at));
        let _ = done.send(result.map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        }));
    });
    match outcome.recv_timeout(std::time::Duration::from_secs(TEST_SECONDS_MAX)) {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => panic!("{panic}"),
        Err(_) => panic!("the store hung on the full file system for {TEST_SECONDS_MAX} s"),
    }
}

#[test]
fn a_full_file_system_is_a_clear_error_and_the_store_recovers_when_space_returns() {
    on_small_tmpfs(fill_and_recover);
}

#[test]
fn a_recovering_store_takes_writes_again_once_space_returns_without_a_restart() {
    on_small_tmpfs(fill_and_heal);
}

/// Appends until the disk is full: how many were acknowledged, and the error that stopped them.
fn fill_up(
    store: &dyn EventStore,
    runtime: &tokio::runtime::Runtime,
    filler: &Path,
) -> (usize, String) {
    append(store, runtime, 0).unwrap();
    fill(filler);
    let mut acknowledged = 1;
    let error = loop {
        match append(store, runtime, acknowledged) {
            Ok(()) => acknowledged += 1,
            Err(error) => break error,
        }
        assert!(acknowledged < APPENDS_MAX, "the disk never filled up");
    };
    eprintln!("{acknowledged} appends acknowledged, then: {error}");
    assert!(error.contains("No space left on device"), "{error}");
    (acknowledged, error)
}

/// Every one of the first `acknowledged` events is there, byte for byte.
fn all_there(store: &dyn EventStore, runtime: &tokio::runtime::Runtime, acknowledged: usize) {
    let events = runtime.block_on(store.read_all(0, usize::MAX)).unwrap();
    assert!(
        events.len() >= acknowledged,
        "{} events, {acknowledged} acknowledged",
        events.len()
    );
    for (index, stored) in events.iter().take(acknowledged).enumerate() {
        assert_eq!(stored.position, index as u64);
        assert_eq!(stored.data, event(index).data, "event {index}");
    }
}

fn small_config(mount: &Path) -> SledConfig {
    let mut config = SledConfig::new(mount.join("events"));
    config.cache_capacity_bytes = 4 * 1024 * 1024;
    config
}

fn fill_and_heal(mount: &Path) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Reopen attempts as soon as 2 MiB are free (the default waits for 64 MiB).
    let recovery = RecoveryConfig {
        pause: std::time::Duration::ZERO,
        free_bytes_min: 2 * 1024 * 1024,
    };
    let store = RecoveringStore::open(small_config(mount), recovery).unwrap();
    let filler = mount.join("filler");
    let (acknowledged, _) = fill_up(&store, &runtime, &filler);
    // Still full: no reopen is attempted, and writes stay refused.
    let refused = append(&store, &runtime, acknowledged + 1).unwrap_err();
    assert!(refused.contains("refused further writes"), "{refused}");
    assert_eq!(store.reopens(), 0);
    // Space comes back: the next append reopens the store by itself and is taken.
    std::fs::remove_file(&filler).unwrap();
    append(&store, &runtime, APPENDS_MAX).expect("appends are taken again");
    assert_eq!(store.reopens(), 1);
    all_there(&store, &runtime, acknowledged);
    // The reopened store counts on from the first one's counters (what /metrics shows).
    let stats = store
        .commit_stats()
        .expect("the embedded store counts its commits");
    let counted = stats.events.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        counted > acknowledged as u64,
        "{counted} events counted, {acknowledged} acknowledged before the reopen and 1 after"
    );
    store.close().unwrap();
}

fn fill_and_recover(mount: &Path) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = small_config(mount);
    let store = SledStore::open(config.clone()).unwrap();
    let filler = mount.join("filler");
    let (acknowledged, _) = fill_up(&store, &runtime, &filler);
    // Which write meets the full disk first is sled's (it writes its buffers to its own files
    // as they fill; the log's next 4 MiB step is zeroed ahead) or the log's: the log's error
    // names its file, sled's names none (sled 0.34 does not say).
    let refused = append(&store, &runtime, acknowledged + 1).unwrap_err();
    assert!(refused.contains("refused further writes"), "{refused}");
    store.close().ok();
    drop(store);
    eprintln!("closed after the failure");
    // Space comes back.
    std::fs::remove_file(&filler).unwrap();
    let store = SledStore::reopen(config, std::time::Duration::from_secs(5)).unwrap();
    eprintln!("reopened");
    all_there(&store, &runtime, acknowledged);
    append(&store, &runtime, APPENDS_MAX).expect("appends are taken again");
    store.close().unwrap();
}
