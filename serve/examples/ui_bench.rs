//! Server-side time of the UI's pages on a large ledger: the task page, DLQ pages (first, deep
//! by cursor, filtered, error text) and the queues page, each rendered through the service's own
//! router in process (`app(state)` + `oneshot`: routing, auth, the queries and the HTML, no
//! socket), p50/p99/max over many requests.
//!
//! ```sh
//! cargo run --release -p taskledger-serve --example ui_bench -- /tmp/tl-ui-bench 1000000 300
//! ```
//!
//! Arguments: data directory (filled on the first run: N tasks over 4 queues through the ledger,
//! half of them dead-lettered, then the read models built), N tasks (default 1,000,000),
//! requests per page (default 300). A benchmark, never a test: figures go to BENCHMARKS.md.

use axum::body::Body;
use axum::http::Request;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use taskledger_domain::{Policy, Report};
use taskledger_ingest::{Ledger, LedgerConfig, SystemClock};
use taskledger_projections::{catch_up, CatchUpOptions, Kv, Projector, RedbKv};
use taskledger_serve::{app, AppState, Limits};
use taskledger_store::{EventStore, SharedStore};
use taskledger_store_sled::{SledConfig, SledStore};
use tower::ServiceExt;

const QUEUES: [&str; 4] = ["partner_tasks", "mail", "billing", "thumbnails"];
const ERRORS: [&str; 5] = [
    "ETIMEDOUT calling partner api",
    "Invalid log header",
    "parse error in body",
    "database write failed",
    "connection reset by peer",
];
/// The models' page cache, as `taskledger serve` gives them (src/config.rs).
const MODELS_CACHE_BYTES: u64 = 128 * 1024 * 1024;

fn at(millis: i64) -> String {
    taskledger_domain::Timestamp(millis).to_string()
}

fn task_id(n: usize) -> String {
    format!("{}:bench:{n:07}", QUEUES[n % QUEUES.len()])
}

/// One task's reports: half dead-letter (maxRetries 0, one failure), 2 in 5 complete, the rest
/// stay processing or failed with a retry due.
fn task_reports(n: usize, out: &mut Vec<String>) {
    let task = task_id(n);
    let queue = QUEUES[n % QUEUES.len()];
    let execution = uuid::Uuid::from_u64_pair(0x5e_77e, n as u64);
    let base = 1_769_000_000_000i64 + n as i64 * 1000;
    let max_retries = if n.is_multiple_of(2) { 0 } else { 3 };
    out.push(format!(r#"{{"op":"enqueue","taskId":"{task}","executionId":"{execution}","queue":"{queue}","maxRetries":{max_retries},"at":"{}"}}"#, at(base)));
    out.push(format!(r#"{{"op":"claim","taskId":"{task}","executionId":"{execution}","worker":"w{}","at":"{}"}}"#, n % 16, at(base + 100)));
    match n % 10 {
        0 | 2 | 4 | 6 | 8 => out.push(format!(r#"{{"op":"fail","taskId":"{task}","executionId":"{execution}","at":"{}","error":{{"message":"{} #{n}"}}}}"#, at(base + 900), ERRORS[(n / 2) % ERRORS.len()])),
        9 => out.push(format!(r#"{{"op":"fail","taskId":"{task}","executionId":"{execution}","at":"{}","error":{{"message":"{} #{n}"}}}}"#, at(base + 900), ERRORS[n % ERRORS.len()])),
        7 => {}
        _ => out.push(format!(r#"{{"op":"succeed","taskId":"{task}","executionId":"{execution}","at":"{}"}}"#, at(base + 700))),
    }
}

async fn populate(store: &Arc<SledStore>, tasks: usize) -> Result<(), Box<dyn std::error::Error>> {
    let ledger = Ledger::new(
        store.clone() as SharedStore,
        Policy::default(),
        Arc::new(SystemClock),
        LedgerConfig::default(),
    );
    let started = Instant::now();
    let mut lines = Vec::new();
    for chunk in (0..tasks).collect::<Vec<_>>().chunks(5000) {
        lines.clear();
        for n in chunk {
            task_reports(*n, &mut lines);
        }
        let reports = lines
            .iter()
            .map(|line| Report::from_json(line))
            .collect::<Result<Vec<_>, _>>()?;
        ledger.submit_batch(reports).await?;
        if chunk[0] % 100_000 == 0 {
            eprint!("\r{} tasks, {} events", chunk[0], store.head_position());
        }
    }
    eprintln!(
        "\rpopulated {tasks} tasks → {} events in {:.1}s",
        store.head_position(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The URI of a page's i-th request.
type PageUri = Box<dyn Fn(usize) -> String>;

/// The executionId search reads the task records (the models have no executionId index): timed
/// over fewer requests.
const SCAN_PAGE: &str = "search by executionId (a scan of the task records, last tenth)";
const SCAN_REQUESTS: usize = 10;

use taskledger_testkit::percentile;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "/tmp/tl-ui-bench".into()));
    let tasks: usize = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let requests: usize = args.next().map_or(Ok(300), |a| a.parse())?;
    let fresh = !dir.join("events").exists();
    let store = Arc::new(SledStore::open(SledConfig::new(dir.join("events")))?);
    if fresh {
        populate(&store, tasks).await?;
    }
    let models: Arc<dyn Kv> = Arc::new(RedbKv::open(&dir.join("models"), MODELS_CACHE_BYTES)?);
    let mut projector = Projector::new(models.clone());
    let started = Instant::now();
    let done = catch_up(
        store.clone(),
        &mut projector,
        &CatchUpOptions::default(),
        &|_, _| {},
    )
    .await?;
    eprintln!(
        "models at position {} ({:.1}s)",
        done.to,
        started.elapsed().as_secs_f64()
    );
    let (_sender, projected) = tokio::sync::watch::channel(done.to);
    let state = Arc::new(AppState {
        ledger: Arc::new(Ledger::new(
            store.clone() as SharedStore,
            Policy::default(),
            Arc::new(SystemClock),
            LedgerConfig::default(),
        )),
        store: store.clone() as SharedStore,
        models: models.clone(),
        tokens: Arc::new(
            taskledger_serve::Tokens::new(
                vec![taskledger_serve::TokenSpec {
                    source: "ui_bench".into(),
                    name: "bench".into(),
                    secret: "bench".into(),
                    roles: vec![taskledger_serve::Role::Reader],
                }],
                1024,
            )
            .expect("one token"),
        ),
        limits: Limits::default(),
        projected,
        metrics: None,
        commit_stats: None,
    });
    let router = app(state);
    let get = |uri: String| {
        let router = router.clone();
        async move {
            let request = Request::get(&uri)
                .header("authorization", "Bearer bench")
                .header("host", "bench")
                .body(Body::empty())
                .expect("a request");
            let started = Instant::now();
            let response = router.oneshot(request).await.expect("infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("a body");
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            assert!(
                status.is_success() || status.is_redirection(),
                "{uri}: {status} {}",
                String::from_utf8_lossy(&body)
            );
            (ms, body)
        }
    };
    // A cursor deep into the DLQ: follow `next` from the API for 200 pages of 1,000.
    let mut cursor = String::new();
    for _ in 0..200 {
        let uri = if cursor.is_empty() {
            "/v1/dlq?limit=1000".to_owned()
        } else {
            format!("/v1/dlq?limit=1000&cursor={cursor}")
        };
        let (_, body) = get(uri).await;
        let page: serde_json::Value = serde_json::from_slice(&body)?;
        match page["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let dlq_total: u64 = {
        let (_, body) = get("/v1/queues/partner_tasks/stats".into()).await;
        let _ = body;
        let stats = taskledger_projections::query::queue_stats(models.as_ref(), None)?;
        stats.queues.values().map(|s| s.dlq).sum()
    };
    println!(
        "ledger: {tasks} tasks, {} events; DLQ entries: {dlq_total}; {requests} requests per page",
        store.head_position()
    );
    let pages: Vec<(&str, PageUri)> = vec![
        (
            "task page (/ui/tasks/{id}, a DLQ'd task)",
            Box::new(move |i: usize| format!("/ui/tasks/{}", task_id((i * 7919 * 2) % tasks))),
        ),
        (
            "task page as of an instant",
            Box::new(move |i: usize| {
                let n = (i * 7919 * 2) % tasks;
                format!(
                    "/ui/tasks/{}?asOf={}",
                    task_id(n),
                    at(1_769_000_000_000 + n as i64 * 1000 + 150)
                )
            }),
        ),
        ("DLQ, first page (50)", Box::new(|_| "/ui/dlq".to_owned())),
        (
            "DLQ, 200,000 entries deep (cursor)",
            Box::new(move |_| format!("/ui/dlq?cursor={cursor}")),
        ),
        (
            "DLQ, queue + category filter",
            Box::new(|_| "/ui/dlq?queue=billing&category=validation".to_owned()),
        ),
        (
            "DLQ, error-text filter",
            Box::new(|_| "/ui/dlq?text=connection%20reset".to_owned()),
        ),
        (
            "DLQ, time range in the middle",
            Box::new(move |_| {
                format!(
                    "/ui/dlq?since={}",
                    at(1_769_000_000_000 + tasks as i64 * 500)
                )
            }),
        ),
        (
            "queues page (counts, rates, chart of the last 24 h)",
            Box::new(|_| "/ui/queues".to_owned()),
        ),
        (
            "search by taskId prefix",
            Box::new(|_| "/ui/?q=mail:bench:00012".to_owned()),
        ),
        (
            SCAN_PAGE,
            Box::new(move |i: usize| {
                let n = tasks - 1 - (i * 7919) % (tasks / 10).max(1);
                format!("/ui/?q={}", uuid::Uuid::from_u64_pair(0x5e_77e, n as u64))
            }),
        ),
    ];
    println!("| page | p50 ms | p99 ms | max ms | bytes |");
    println!("|---|---|---|---|---|");
    for (name, uri) in &pages {
        // Warm-up: the first requests fill redb's cache.
        for i in 0..3 {
            get(uri(i)).await;
        }
        let mut times = Vec::with_capacity(requests);
        let mut bytes = 0;
        let requests = if *name == SCAN_PAGE {
            SCAN_REQUESTS
        } else {
            requests
        };
        for i in 0..requests {
            let (ms, body) = get(uri(i + 10)).await;
            times.push(ms);
            bytes = body.len();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {bytes} |",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1]
        );
    }
    store.close()?;
    Ok(())
}
