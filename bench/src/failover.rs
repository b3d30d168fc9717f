//! The failover loop (issue "scale-out"): two `taskledger serve` on one PostgreSQL primary with a
//! synchronous standby, load through both, the primary SIGKILLed at random moments, the standby
//! promoted and a new standby built from it (`pg_basebackup`) on the dead one's port. The
//! instances' URL lists both ports with `target_session_attrs=read-write`, so they find the new
//! primary by themselves. At the end: every acknowledged report's events are stored, no
//! execution is duplicated or processed twice, and each instance's read models equal a rebuild.

use anyhow::{bail, Context};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use taskledger_store::EventStore;
use taskledger_store_postgres::{PostgresConfig, PostgresStore};
use taskledger_testkit::pg_cluster::{self, PgServer};

#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// Primary kills.
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Concurrent reporters, spread over the two instances.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// The load runs between kills for a random time in this range (ms).
    #[arg(long, default_value_t = 700)]
    pub between_min_ms: u64,
    #[arg(long, default_value_t = 2_500)]
    pub between_max_ms: u64,
    /// Seeds the kill moments and the workload's outcomes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the summary as Markdown here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One acknowledged report and what the ledger answered.
struct Acked {
    task: String,
    event_ids: Vec<uuid::Uuid>,
    /// Answered as a duplicate: an earlier send of it was stored though its answer was lost
    /// (the ledger found it in the stream), so it appended nothing now.
    duplicate: bool,
}

pub(crate) struct Instance {
    pub(crate) child: Child,
    pub(crate) base: String,
    data_dir: PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn serve(bin: &Path, data_dir: &Path, url: &str) -> anyhow::Result<Instance> {
    let mut child = std::process::Command::new(bin)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--store", url, "serve", "--listen", "127.0.0.1:0"])
        .env_remove("TASKLEDGER_TOKENS")
        .env_remove("TASKLEDGER_CONFIG")
        .stdout(Stdio::piped())
        // Its log (a 503 per refused request while the primary is down) beside its data.
        .stderr(std::fs::File::create(data_dir.with_extension("log"))?)
        .spawn()
        .context("starting taskledger serve")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("serve's stdout")?).read_line(&mut line)?;
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("serve printed {line:?}"))?
        .to_owned();
    Ok(Instance {
        child,
        base: format!("http://{address}"),
        data_dir: data_dir.to_path_buf(),
    })
}

/// xorshift64*: the kill moments of a run, replayable from its seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// The reports of task `task` of worker `worker`: enqueue, claim, then success or (one in
/// four) a failure.
fn task_reports(worker: usize, task: u64) -> Vec<String> {
    let task_id = format!("fo:w{worker}t{task}");
    let execution = uuid::Uuid::from_u64_pair(worker as u64 + 1, task).to_string();
    let at = |step: u64| {
        chrono::DateTime::from_timestamp_millis(
            1_768_989_600_000 + task as i64 * 1_000 + step as i64,
        )
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
    };
    let base = format!(r#""taskId":"{task_id}","executionId":"{execution}","queue":"fo""#);
    let outcome = if task % 4 == 3 {
        format!(
            r#"{{"op":"fail",{base},"at":"{}","error":{{"message":"ETIMEDOUT"}}}}"#,
            at(2)
        )
    } else {
        format!(r#"{{"op":"succeed",{base},"at":"{}"}}"#, at(2))
    };
    vec![
        format!(r#"{{"op":"enqueue",{base},"at":"{}"}}"#, at(0)),
        format!(
            r#"{{"op":"claim",{base},"at":"{}","worker":"w{worker}"}}"#,
            at(1)
        ),
        outcome,
    ]
}

struct Shared {
    acked: Mutex<Vec<Acked>>,
    acked_count: AtomicU64,
    /// Milliseconds since the start of the run of the latest acknowledgement.
    last_ack_ms: AtomicU64,
    refusals: AtomicU64,
    stop: AtomicBool,
    started: Instant,
}

async fn reporter(
    worker: usize,
    bases: Arc<Vec<String>>,
    client: reqwest::Client,
    shared: Arc<Shared>,
) {
    let mut task = 0u64;
    let mut attempt = worker;
    while !shared.stop.load(Ordering::Relaxed) {
        let task_id = format!("fo:w{worker}t{task}");
        for report in task_reports(worker, task) {
            // Each report is retried until acknowledged (the worker's side of the protocol: the
            // next report only after the acknowledgement), through either instance.
            loop {
                let base = &bases[attempt % bases.len()];
                let sent = client
                    .post(format!("{base}/v1/reports"))
                    .header("content-type", "application/x-ndjson")
                    .body(report.clone())
                    .send()
                    .await;
                let answered = match sent {
                    Ok(response) if response.status() == 200 => {
                        response.json::<serde_json::Value>().await.ok()
                    }
                    _ => None,
                };
                match answered {
                    Some(body) => {
                        let event_ids = body["eventIds"]
                            .as_array()
                            .map(|ids| {
                                ids.iter()
                                    .filter_map(|id| id.as_str()?.parse().ok())
                                    .collect()
                            })
                            .unwrap_or_default();
                        if let Ok(mut acked) = shared.acked.lock() {
                            acked.push(Acked {
                                task: task_id.clone(),
                                event_ids,
                                duplicate: body["duplicate"] == true,
                            });
                        }
                        shared.acked_count.fetch_add(1, Ordering::Relaxed);
                        shared.last_ack_ms.store(
                            shared.started.elapsed().as_millis() as u64,
                            Ordering::Relaxed,
                        );
                        break;
                    }
                    None => {
                        shared.refusals.fetch_add(1, Ordering::Relaxed);
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                }
            }
        }
        task += 1;
    }
}

use taskledger_testkit::percentile;

pub async fn run(args: FailoverArgs) -> anyhow::Result<()> {
    if let Some(reason) = pg_cluster::unavailable_reason() {
        bail!("the failover loop needs PostgreSQL: {reason}");
    }
    let bin = crate::taskledger_bin()?;
    let temp = tempfile::tempdir()?;
    let ports = [pg_cluster::free_port()?, pg_cluster::free_port()?];
    let mut primary = PgServer::start_primary(&temp.path().join("pg-0"), ports[0], true)?;
    let mut standby = PgServer::start_standby(&primary, &temp.path().join("pg-1"), ports[1])?;
    // After the standby is up: with a synchronous standby required, a commit waits for one.
    primary.create_database("ledger")?;
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/ledger?target_session_attrs=read-write",
        ports[0], ports[1]
    );
    let instances = [
        serve(&bin, &temp.path().join("instance-a"), &url)?,
        serve(&bin, &temp.path().join("instance-b"), &url)?,
    ];
    println!(
        "failover: primary :{} with synchronous standby :{}, 2 instances, {} reporters, {} kills",
        ports[0], ports[1], args.workers, args.kills
    );
    let bases = Arc::new(instances.iter().map(|i| i.base.clone()).collect::<Vec<_>>());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let shared = Arc::new(Shared {
        acked: Mutex::new(Vec::new()),
        acked_count: AtomicU64::new(0),
        last_ack_ms: AtomicU64::new(0),
        refusals: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        started: Instant::now(),
    });
    let reporters: Vec<_> = (0..args.workers.max(1))
        .map(|worker| {
            tokio::spawn(reporter(
                worker,
                bases.clone(),
                client.clone(),
                shared.clone(),
            ))
        })
        .collect();

    let mut state = args.seed.max(1);
    let mut failover_ms = Vec::new();
    // Of each failover, the part after the new standby was up: the instances' reconnect and
    // the first commit on two servers.
    let mut after_standby_ms = Vec::new();
    for kill in 0..args.kills {
        let span = args
            .between_max_ms
            .saturating_sub(args.between_min_ms)
            .max(1);
        let wait = args.between_min_ms + next(&mut state) % span;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let before = shared.acked_count.load(Ordering::Relaxed);
        let killed_at = shared.started.elapsed().as_millis() as u64;
        let dead_port = primary.port;
        primary.kill()?;
        let promoted = Instant::now();
        standby.promote()?;
        let promote_ms = promoted.elapsed().as_millis();
        // The promoted server waits for a synchronous standby of its own before it
        // acknowledges anything: build one on the dead server's port.
        let dir = temp.path().join(format!("pg-{}", kill + 2));
        let rebuilt = Instant::now();
        let new_standby = PgServer::start_standby(&standby, &dir, dead_port)?;
        let rebuild_ms = rebuilt.elapsed().as_millis();
        let old = std::mem::replace(&mut primary, standby);
        standby = new_standby;
        let _ = std::fs::remove_dir_all(&old.dir);
        drop(old);
        // Failover time: the kill to the first acknowledgement after it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if shared.last_ack_ms.load(Ordering::Relaxed) > killed_at
                && shared.acked_count.load(Ordering::Relaxed) > before
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("no acknowledgement within 60 s of kill {}", kill + 1);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = shared.last_ack_ms.load(Ordering::Relaxed) - killed_at;
        failover_ms.push(took as f64);
        after_standby_ms.push(took.saturating_sub((promote_ms + rebuild_ms) as u64) as f64);
        println!(
            "kill {:>2}: primary :{dead_port} killed after {wait} ms of load; promoted in {promote_ms} ms, new standby in {rebuild_ms} ms; first acknowledgement {took} ms after the kill ({} acknowledged so far)",
            kill + 1,
            shared.acked_count.load(Ordering::Relaxed)
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.stop.store(true, Ordering::Relaxed);
    for reporter in reporters {
        let _ = tokio::time::timeout(Duration::from_secs(60), reporter).await;
    }
    let acked = std::mem::take(&mut *shared.acked.lock().map_err(|_| anyhow::anyhow!("lock"))?);

    // Every acknowledged report's events are stored; no execution twice; one claim each.
    let store = PostgresStore::open(PostgresConfig::new(&url)).await?;
    let events = store.read_all(0, usize::MAX).await?;
    let stored: std::collections::HashSet<uuid::Uuid> =
        events.iter().map(|event| event.event_id).collect();
    let lost = acked
        .iter()
        .filter(|report| report.event_ids.iter().any(|id| !stored.contains(id)))
        .count();
    let without_ids = acked
        .iter()
        .filter(|r| r.event_ids.is_empty() && !r.duplicate)
        .count();
    let recovered = acked.iter().filter(|r| r.duplicate).count();
    let mut enqueued: std::collections::HashMap<&str, usize> = Default::default();
    let mut claimed: std::collections::HashMap<&str, usize> = Default::default();
    for event in &events {
        match event.event_type.as_str() {
            "ExecutionEnqueued" => *enqueued.entry(&event.stream).or_default() += 1,
            "ExecutionClaimed" => *claimed.entry(&event.stream).or_default() += 1,
            _ => {}
        }
    }
    let duplicated = enqueued.values().filter(|&&n| n > 1).count();
    let claimed_twice = claimed.values().filter(|&&n| n > 1).count();
    let tasks: std::collections::HashSet<&str> = acked.iter().map(|r| r.task.as_str()).collect();
    let positions_contiguous = events
        .iter()
        .enumerate()
        .all(|(index, event)| event.position == index as u64);
    drop(store);

    // Each instance's models, caught up and stopped, against a rebuild from the ledger.
    let mut verified = Vec::new();
    for mut instance in instances {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(instance.child.id().to_string())
            .status();
        let _ = instance.child.wait();
        let output = std::process::Command::new(&bin)
            .arg("--data-dir")
            .arg(&instance.data_dir)
            .args(["--store", &url, "rebuild", "--verify"])
            .output()?;
        verified.push(output.status.success());
        if !output.status.success() {
            eprintln!(
                "rebuild --verify of {}: {}{}",
                instance.data_dir.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    failover_ms.sort_by(f64::total_cmp);
    after_standby_ms.sort_by(f64::total_cmp);
    let summary = format!(
        "| measure | value |\n|---|---|\n\
         | primary kills (SIGKILL) under load | {kills} |\n\
         | reports acknowledged | {acked} ({tasks} tasks) |\n\
         | acknowledged reports whose events are missing | {lost} |\n\
         | executions stored twice | {duplicated} |\n\
         | executions claimed twice | {claimed_twice} |\n\
         | global positions contiguous | {positions_contiguous} ({events} events) |\n\
         | refused or failed sends, retried by the reporters | {refusals} |\n\
         | retries answered as duplicates (stored, answer lost) | {recovered} |\n\
         | acknowledged new reports without events | {without_ids} |\n\
         | instances whose models equal a rebuild | {equal} of 2 |\n\
         | failover (kill → first acknowledgement) p50 / p90 / max | {p50:.0} / {p90:.0} / {max:.0} ms |\n\
         | of which after the new standby was up, p50 / max | {after50:.0} / {after_max:.0} ms |\n",
        kills = failover_ms.len(),
        acked = acked.len(),
        tasks = tasks.len(),
        events = events.len(),
        refusals = shared.refusals.load(Ordering::Relaxed),
        equal = verified.iter().filter(|ok| **ok).count(),
        p50 = percentile(&failover_ms, 0.5),
        p90 = percentile(&failover_ms, 0.9),
        max = failover_ms.last().copied().unwrap_or(0.0),
        after50 = percentile(&after_standby_ms, 0.5),
        after_max = after_standby_ms.last().copied().unwrap_or(0.0),
    );
    println!("\n{summary}");
    if let Some(out) = &args.out {
        std::fs::write(out, &summary)?;
    }
    if lost > 0
        || without_ids > 0
        || duplicated > 0
        || claimed_twice > 0
        || !positions_contiguous
        || verified.iter().any(|ok| !ok)
    {
        bail!("the failover loop found a loss, a duplicate or a model that differs (above)");
    }
    Ok(())
}
