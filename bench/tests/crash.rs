//! Crash safety of the write path: a child process writing reports from concurrent writers is
//! killed with SIGKILL at random moments. After reopening, every report whose acknowledgement the
//! parent saw is present, no decision is half-visible, every record passes its checksum, and the
//! store accepts writes again.
//!
//! 20 trials here; `bench/crash-loop.sh N` runs N (`TASKLEDGER_CRASH_TRIALS`).

#[path = "../../tests/common/mod.rs"]
mod common;

use common::next;
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use taskledger_domain::{Event, ReportKey};
use taskledger_store::EventStore;
use taskledger_store_sled::{SledConfig, SledStore};

struct Acked {
    /// Event ids of every acknowledged report.
    event_ids: Vec<uuid::Uuid>,
    reports: usize,
}

fn run_and_kill(
    dir: &std::path::Path,
    run: u64,
    kill_after: Duration,
    wal_checkpoint_bytes: u64,
) -> Acked {
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskledger-bench"))
        .args([
            "ack-writer",
            "--writers",
            "8",
            "--reports",
            "400000",
            "--run",
        ])
        .arg(run.to_string())
        .arg("--wal-checkpoint-bytes")
        .arg(wal_checkpoint_bytes.to_string())
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let ready = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let reader = {
        let (lines, ready) = (lines.clone(), ready.clone());
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    // A line cut by the kill has no newline: it was never fully acknowledged.
                    Ok(_) if !line.ends_with('\n') => break,
                    Ok(_) if line == "READY\n" => {
                        *ready.0.lock().unwrap() = true;
                        ready.1.notify_all();
                    }
                    Ok(_) => lines.lock().unwrap().push(line.trim_end().to_owned()),
                }
            }
        })
    };
    {
        let (flag, signal) = &*ready;
        let guard = signal
            .wait_timeout_while(flag.lock().unwrap(), Duration::from_secs(60), |ready| {
                !*ready
            })
            .unwrap();
        assert!(*guard.0, "the writer never became ready");
    }
    std::thread::sleep(kill_after);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    let lines = lines.lock().unwrap();
    let mut acked = Acked {
        event_ids: Vec::new(),
        reports: 0,
    };
    for line in lines.iter() {
        let mut words = line.split(' ');
        if words.next() != Some("ACK") {
            continue;
        }
        acked.reports += 1;
        let _task = words.next();
        acked
            .event_ids
            .extend(words.map(|id| uuid::Uuid::parse_str(id).unwrap()));
    }
    acked
}

/// The log file's header magic, if it has one.
fn log_magic(dir: &std::path::Path, file: usize) -> Option<[u8; 8]> {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(dir.join(taskledger_store_sled::WAL_FILE_NAMES[file]))
        .ok()?
        .read_exact(&mut magic)
        .ok()?;
    Some(magic)
}

/// How many of the log's files say live (as the kill left them).
fn live_log_files(dir: &std::path::Path) -> usize {
    (0..2)
        .filter(|&file| log_magic(dir, file) == Some(*b"TLWAL001"))
        .count()
}

/// The log file has been used (its header is not zeros).
fn live_or_retired(dir: &std::path::Path, file: usize) -> bool {
    log_magic(dir, file).is_some_and(|magic| magic.iter().any(|&byte| byte != 0))
}

/// Returns the head, and the commits the write-ahead log gave back that sled had lost.
async fn verify(dir: &std::path::Path, acked: &Acked, seed: u64) -> (u64, u64) {
    let store = SledStore::open(SledConfig::new(dir))
        .unwrap_or_else(|e| panic!("seed {seed}: the store does not reopen: {e}"));
    let head = store.head_position();
    let replayed = store
        .stats()
        .replayed_commits
        .load(std::sync::atomic::Ordering::Relaxed);
    let records = store
        .read_all(0, usize::MAX)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: a record fails to read back: {e}"));
    assert_eq!(
        records.len() as u64,
        head,
        "seed {seed}: positions have holes"
    );
    let mut present = HashSet::with_capacity(records.len());
    let mut next_version: HashMap<&str, u64> = HashMap::new();
    // Per stream, the events of one report: they must be consecutive and complete.
    let mut decisions: HashMap<(&str, ReportKey), Vec<Event>> = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.position, index as u64, "seed {seed}");
        let expected = next_version.entry(&record.stream).or_default();
        assert_eq!(
            record.version, *expected,
            "seed {seed}: stream {} skips a version",
            record.stream
        );
        *expected += 1;
        present.insert(record.event_id);
        let event = Event::decode(&record.event_type, record.schema_version, &record.data)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        decisions
            .entry((&record.stream, event.report_key()))
            .or_default()
            .push(event);
    }
    for id in &acked.event_ids {
        assert!(
            present.contains(id),
            "seed {seed}: acknowledged event {id} was lost"
        );
    }
    for ((stream, _), events) in &decisions {
        let manual_retry = events.iter().any(|e| {
            matches!(e, Event::ExecutionArchived(a) if a.reason.as_deref() == Some("Manual retry initiated"))
        });
        if manual_retry {
            assert_eq!(
                events.len(),
                2,
                "seed {seed}: half a manual retry in {stream}"
            );
            assert!(
                matches!(events[1], Event::ExecutionEnqueued(_)),
                "seed {seed}"
            );
        } else {
            assert_eq!(events.len(), 1, "seed {seed}: {stream}");
        }
    }
    (head, replayed)
}

#[test]
fn acknowledged_reports_survive_sigkill() {
    let trials: u64 = std::env::var("TASKLEDGER_CRASH_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    // Kills land within this many ms of the writer's start; a longer window writes past the
    // log's first zeroed steps (`bench/crash-loop.sh N MS`).
    let kill_ms_max: u64 = std::env::var("TASKLEDGER_CRASH_KILL_MS_MAX")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400)
        .max(1);
    let seed = common::crash_seed();
    eprintln!(
        "crash test: {trials} trials, kills within {kill_ms_max} ms, TASKLEDGER_CRASH_SEED={seed}"
    );
    let mut state = seed;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (mut total_acked, mut kills_with_acks, mut kills_replayed) = (0usize, 0u64, 0u64);
    let (mut kills_mid_checkpoint, mut turned) = (0u64, false);
    for trial in 0..trials {
        // The same directory across trials: each restart recovers what the last crash left and
        // the next writer appends after it.
        let kill_after = Duration::from_millis(next(&mut state) % kill_ms_max);
        // Every other trial turns the log every 4 KiB, so kills land in checkpoints running
        // on their own thread while commits go on into the log's other file.
        let checkpoint_bytes = if trial % 2 == 1 { 4 * 1024 } else { 64 << 20 };
        let acked = run_and_kill(dir.path(), trial, kill_after, checkpoint_bytes);
        let live = live_log_files(dir.path());
        kills_mid_checkpoint += u64::from(live == 2);
        turned |= live_or_retired(dir.path(), 1);
        let (head, replayed) = runtime.block_on(verify(dir.path(), &acked, seed));
        total_acked += acked.reports;
        kills_with_acks += u64::from(acked.reports > 0);
        kills_replayed += u64::from(replayed > 0);
        eprintln!(
            "trial {trial}: killed after {kill_after:?} (log turning every {checkpoint_bytes} B), {} reports acknowledged, {head} events stored, {replayed} commits applied again from the write-ahead log, {live} live log files",
            acked.reports
        );
    }
    eprintln!(
        "{trials} kills in {:.1}s, {total_acked} acknowledged reports all present; {kills_mid_checkpoint} kills left both log files live (a checkpoint cut short)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        turned,
        "the log never turned to its second file: the small checkpoints never ran"
    );
    // The test must have killed writers in the middle of writing, not before they began.
    assert!(
        kills_with_acks >= trials / 2,
        "too few kills landed mid-write"
    );
    // And sled, flushed only at checkpoints, must have lost commits the log gave back: the
    // recovery path is what this test is for.
    assert!(
        kills_replayed >= kills_with_acks / 2,
        "only {kills_replayed} of {kills_with_acks} restarts needed the write-ahead log"
    );
}
