//! The PostgreSQL backend end to end, on a throwaway server from Debian's packages: several
//! `taskledger serve` on one database (dedup and claim races spread over two instances), appenders
//! in several processes against a follower that must never skip, export / import sled →
//! PostgreSQL → sled with identical events and digests, and 503 while the database is down.
//! Each test prints why it skipped when this machine has no PostgreSQL.

mod common;

use common::Server;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use taskledger_store::EventStore;
use taskledger_store_postgres::{PostgresConfig, PostgresStore};
use taskledger_testkit::pg_cluster::{self, PgServer};

const TOKENS: &str = "rep=reporter,read=reader,ops=operator+reader";

/// A fresh server with database `ledger`, or `None` (the reason printed).
fn postgres(dir: &Path) -> Option<PgServer> {
    if !taskledger_testkit::runs(
        "postgres",
        "PostgreSQL tests",
        pg_cluster::unavailable_reason(),
    ) {
        return None;
    }
    let server =
        PgServer::start_primary(&dir.join("pg"), pg_cluster::free_port().unwrap(), false).unwrap();
    server.create_database("ledger").unwrap();
    Some(server)
}

fn serve(data_dir: &Path, store: &str) -> Server {
    let mut command = common::command(data_dir);
    command
        .args(["--store", store])
        .env("TASKLEDGER_TOKENS", TOKENS);
    common::serve(command)
}

fn report(op: &str, task: &str, execution: u32, extra: &str, second: u32) -> String {
    format!(
        r#"{{"op":"{op}","taskId":"{task}","executionId":"00000000-0000-4000-8000-{execution:012}","queue":"q","at":"2026-01-21T10:{:02}:{:02}.000Z"{extra}}}"#,
        second / 60 % 60,
        second % 60
    )
}

/// Posts one report, retrying a 503 as a client does (a report is idempotent): under heavy
/// contention of two instances on one stream the ledger may refuse, record nothing, and ask
/// for a retry.
async fn post(client: &reqwest::Client, base: &str, body: String) -> serde_json::Value {
    for _ in 0..50 {
        let response = client
            .post(format!("{base}/v1/reports"))
            .header("content-type", "application/x-ndjson")
            .bearer_auth("rep")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if response.status() == 503 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(response.status(), 200);
        return response.json().await.unwrap();
    }
    panic!("still 503 after 50 tries");
}

async fn get(client: &reqwest::Client, url: String) -> serde_json::Value {
    client
        .get(url)
        .bearer_auth("read")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_database_decide_each_stream_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pg) = postgres(dir.path()) else {
        return;
    };
    let url = pg.url("ledger");
    let instances = [
        serve(&dir.path().join("a"), &url),
        serve(&dir.path().join("b"), &url),
    ];
    let client = reqwest::Client::new();

    // 1,000 enqueues of one taskId, each a different execution, alternating between instances.
    let mut requests = Vec::new();
    for n in 0..1000u32 {
        let base = instances[n as usize % 2].base.clone();
        let client = client.clone();
        let body = report("enqueue", "q:race", n, "", 0);
        requests.push(tokio::spawn(
            async move { post(&client, &base, body).await },
        ));
    }
    let mut accepted = Vec::new();
    let mut duplicate_enqueues = 0;
    for (n, request) in requests.into_iter().enumerate() {
        let body = request.await.unwrap();
        match body["outcome"].as_str() {
            Some("accepted") => accepted.push(n as u32),
            Some("rejected") if body["reason"] == "duplicateEnqueue" => duplicate_enqueues += 1,
            other => panic!("unexpected outcome {other:?}: {body}"),
        }
    }
    assert_eq!(accepted.len(), 1, "exactly one execution");
    assert_eq!(duplicate_enqueues, 999);

    // 100 workers racing to claim it, over both instances.
    let execution = accepted[0];
    let mut claims = Vec::new();
    for worker in 0..100u32 {
        let base = instances[worker as usize % 2].base.clone();
        let client = client.clone();
        let body = report(
            "claim",
            "q:race",
            execution,
            &format!(r#","worker":"w{worker}""#),
            1,
        );
        claims.push(tokio::spawn(
            async move { post(&client, &base, body).await },
        ));
    }
    let mut claimed = 0;
    for claim in claims {
        let body = claim.await.unwrap();
        claimed += usize::from(body["outcome"] == "accepted");
    }
    assert_eq!(claimed, 1, "exactly one processing");

    // Per-task reads fold the stream from the database: the same on both instances at once.
    for instance in &instances {
        let task = get(&client, format!("{}/v1/tasks/q:race", instance.base)).await;
        assert_eq!(task["status"], "processing");
        assert_eq!(task["executions"], 1);
    }
    // Each instance's own read models follow the shared order to the same counts.
    for instance in &instances {
        let mut stats = serde_json::Value::Null;
        for _ in 0..100 {
            stats = get(&client, format!("{}/v1/queues/q/stats", instance.base)).await;
            if stats["queues"]["q"]["rejected"]["notClaimable"] == 99 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let queue = &stats["queues"]["q"];
        assert_eq!(queue["processing"], 1, "{stats}");
        assert_eq!(queue["rejected"]["duplicateEnqueue"], 999, "{stats}");
        assert_eq!(queue["rejected"]["notClaimable"], 99, "{stats}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appenders_in_several_processes_never_make_a_follower_skip() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pg) = postgres(dir.path()) else {
        return;
    };
    let url = pg.url("ledger");
    const PROCESSES: u32 = 4;
    const TASKS: u32 = 150;
    let store = Arc::new(
        PostgresStore::open(PostgresConfig::new(&url))
            .await
            .unwrap(),
    );
    // Each process ingests its own tasks: enqueue, claim, succeed — one append per report.
    let mut children = Vec::new();
    for process in 0..PROCESSES {
        let file = dir.path().join(format!("reports{process}.ndjson"));
        let mut lines = String::new();
        for task in 0..TASKS {
            let id = process * 10_000 + task;
            let task_id = format!("q:p{process}t{task}");
            lines.push_str(&report("enqueue", &task_id, id, "", 0));
            lines.push('\n');
            lines.push_str(&report("claim", &task_id, id, r#","worker":"w""#, 1));
            lines.push('\n');
            lines.push_str(&report("succeed", &task_id, id, "", 2));
            lines.push('\n');
        }
        std::fs::write(&file, lines).unwrap();
        children.push(
            common::command(&dir.path().join(format!("data{process}")))
                .args(["--store", &url, "ingest", "--batch", "2"])
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    let total = u64::from(PROCESSES * TASKS * 3);
    let follower = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut from = 0;
            while from < total {
                store.wait_for(from, Duration::from_secs(30)).await;
                let batch = store.read_all(from, 37).await.unwrap();
                for (offset, event) in batch.iter().enumerate() {
                    assert_eq!(event.position, from + offset as u64, "the follower skipped");
                }
                from += batch.len() as u64;
                seen.extend(batch);
            }
            seen
        })
    };
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .expect("the follower saw every event")
        .unwrap();
    let stored = store.read_all(0, usize::MAX).await.unwrap();
    assert_eq!(seen.len() as u64, total);
    assert_eq!(seen, stored);
    // The processes really interleaved: the global order switches between them many times.
    let switches = stored
        .windows(2)
        .filter(|pair| pair[0].stream[..4] != pair[1].stream[..4])
        .count();
    assert!(switches > 10, "only {switches} switches between processes");
}

/// Events of an export without `recordedAt` and `position` (which the target assigns).
fn exported(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let mut event: serde_json::Value = serde_json::from_str(line).unwrap();
            let object = event.as_object_mut().unwrap();
            object.remove("position");
            event
        })
        .collect()
}

/// The digest lines `rebuild --verify` prints (model, entries, digest).
fn digests(data_dir: &Path, store: Option<&str>) -> Vec<String> {
    let mut command = common::command(data_dir);
    if let Some(store) = store {
        command.args(["--store", store]);
    }
    let output = common::ok(command.args(["rebuild", "--verify"]).output().unwrap());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|line| line.ends_with("equal"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn export_and_import_move_a_ledger_sled_to_postgres_to_sled() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pg) = postgres(dir.path()) else {
        return;
    };
    let url = pg.url("ledger");
    let (sled_a, on_pg, sled_b) = (
        dir.path().join("sled-a"),
        dir.path().join("pg-models"),
        dir.path().join("sled-b"),
    );
    let fixture = common::fixture("partner_pipeline.ndjson");
    common::ok(common::taskledger(
        &sled_a,
        &["ingest", fixture.to_str().unwrap()],
    ));
    let files: Vec<_> = (0..3)
        .map(|n| dir.path().join(format!("export{n}.ndjson")))
        .collect();
    let path = |n: usize| files[n].to_str().unwrap().to_owned();
    common::ok(common::taskledger(&sled_a, &["export", &path(0)]));
    common::ok(common::taskledger(
        &on_pg,
        &["--store", &url, "import", &path(0)],
    ));
    // Importing again appends nothing.
    common::ok(common::taskledger(
        &on_pg,
        &["--store", &url, "import", &path(0)],
    ));
    common::ok(common::taskledger(
        &on_pg,
        &["--store", &url, "export", &path(1)],
    ));
    common::ok(common::taskledger(&sled_b, &["import", &path(1)]));
    common::ok(common::taskledger(&sled_b, &["export", &path(2)]));
    let first = exported(&files[0]);
    assert!(!first.is_empty());
    assert_eq!(first, exported(&files[1]), "sled → PostgreSQL");
    assert_eq!(first, exported(&files[2]), "PostgreSQL → sled");
    let digests_a = digests(&sled_a, None);
    assert_eq!(digests_a.len(), 8, "{digests_a:?}");
    assert_eq!(digests_a, digests(&on_pg, Some(&url)));
    assert_eq!(digests_a, digests(&sled_b, None));
}

/// The same reports give the same digest on sled and on PostgreSQL; an event altered in the
/// database behind the ledger's back fails `verify`, naming its stream and version.
#[test]
fn the_same_reports_give_the_same_digest_on_sled_and_postgres_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pg) = postgres(dir.path()) else {
        return;
    };
    let url = pg.url("ledger");
    let (on_sled, on_pg) = (dir.path().join("sled"), dir.path().join("pg-models"));
    let fixture = common::fixture("partner_pipeline.ndjson");
    let fixture = fixture.to_str().unwrap();
    common::ok(common::taskledger(&on_sled, &["ingest", fixture]));
    common::ok(common::taskledger(
        &on_pg,
        &["--store", &url, "ingest", fixture],
    ));
    let sled_digest = common::ok_json(common::taskledger(&on_sled, &["digest"]));
    let pg_digest = common::ok_json(common::taskledger(&on_pg, &["--store", &url, "digest"]));
    assert_eq!(sled_digest, pg_digest);
    let verified = common::ok_json(common::taskledger(
        &on_pg,
        &["--store", &url, "verify", "--json"],
    ));
    assert_eq!(verified["head"], sled_digest, "{verified}");
    pg.psql(
        "ledger",
        "UPDATE taskledger.events SET data = set_byte(data, 20, get_byte(data, 20) # 1) \
         WHERE position = 3",
    )
    .unwrap();
    let output = common::taskledger(&on_pg, &["--store", &url, "verify", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let verified: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(verified["broken"]["position"], 3, "{verified}");
    assert!(verified["broken"]["stream"].is_string());
    let output = common::taskledger(
        &on_pg,
        &[
            "--store",
            &url,
            "verify",
            "--digest",
            &sled_digest.to_string(),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_503_while_the_database_is_down_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pg) = postgres(dir.path()) else {
        return;
    };
    let server = serve(&dir.path().join("data"), &pg.url("ledger"));
    let client = reqwest::Client::new();
    let send = |body: String| {
        client
            .post(format!("{}/v1/reports", server.base))
            .header("content-type", "application/x-ndjson")
            .bearer_auth("rep")
            .body(body)
            .send()
    };
    let first = send(report("enqueue", "q:down", 1, "", 0)).await.unwrap();
    assert_eq!(first.status(), 200);
    pg.kill().unwrap();
    let refused = send(report("enqueue", "q:down2", 2, "", 0)).await.unwrap();
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("127.0.0.1") && !message.contains("postgres"),
        "no internal detail: {message}"
    );
    pg.start().unwrap();
    // The service reconnects by itself: the same report, retried, is accepted.
    let mut status = 0;
    for _ in 0..100 {
        status = send(report("enqueue", "q:down2", 2, "", 0))
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the service came back");
    // Nothing was acknowledged twice or lost: one event per accepted report.
    for task in ["q:down", "q:down2"] {
        let history = get(&client, format!("{}/v1/tasks/{task}/history", server.base)).await;
        assert_eq!(history.as_array().unwrap().len(), 1, "{task}: {history}");
    }
    // The projection follower lost its connection too, and reconnected: the models hold both.
    let mut queued = serde_json::Value::Null;
    for _ in 0..100 {
        let stats = get(&client, format!("{}/v1/queues/q/stats", server.base)).await;
        queued = stats["queues"]["q"]["queued"].clone();
        if queued == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(queued, 2, "the follower caught up after the outage");
}
