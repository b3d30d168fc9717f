//! The HTTP service over a real socket: roles (401/403), body limits (413), bad input (400 naming
//! the line and field), 1,000 concurrent enqueues of one task, read-your-writes after a 2xx,
//! loopback-only without tokens, graceful shutdown on SIGTERM, and SIGKILL under load losing no
//! acknowledged report.

mod common;

use common::Server;

use std::path::Path;

const TOKENS: &str = "rep=reporter,read=reader,ops=operator+reader";

fn start(data_dir: &Path, extra_env: &[(&str, &str)]) -> Server {
    let mut command = common::command(data_dir);
    command.env("TASKLEDGER_TOKENS", TOKENS);
    for (key, value) in extra_env {
        command.env(key, value);
    }
    common::serve(command)
}

/// The position of the digest `/metrics` names in its comment line.
fn metrics_digest_position(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("# taskledger ledger digest position="))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|position| position.parse().ok())
}

fn enqueue(task: &str, n: u32) -> String {
    format!(
        r#"{{"op":"enqueue","taskId":"{task}","executionId":"00000000-0000-4000-8000-{n:012}","queue":"q","at":"2026-01-21T10:00:{:02}.{:03}Z"}}"#,
        n / 1000 % 60,
        n % 1000
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_limits_errors_and_read_your_writes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("taskledger.toml");
    std::fs::write(&config, "[server]\nbody_bytes_max = 65536\n").unwrap();
    let server = start(
        &dir.path().join("data"),
        &[("TASKLEDGER_CONFIG", config.to_str().unwrap())],
    );
    let client = reqwest::Client::new();
    let post = |token: Option<&str>, body: String| {
        let mut request = client
            .post(format!("{}/v1/reports", server.base))
            .header("content-type", "application/x-ndjson")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(post(None, enqueue("q:1", 1)).await.unwrap().status(), 401);
    assert_eq!(
        post(Some("nope"), enqueue("q:1", 1))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(Some("read"), enqueue("q:1", 1))
            .await
            .unwrap()
            .status(),
        403
    );
    let accepted = post(Some("rep"), enqueue("q:1", 1)).await.unwrap();
    assert_eq!(accepted.status(), 200);
    let body: serde_json::Value = accepted.json().await.unwrap();
    assert_eq!(body["outcome"], "accepted");
    // Visible right after the 2xx.
    let task: serde_json::Value = client
        .get(format!("{}/v1/tasks/q:1", server.base))
        .bearer_auth("read")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(task["status"], "queued");
    let forbidden = client
        .get(format!("{}/v1/tasks/q:1", server.base))
        .bearer_auth("rep")
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    // The same report again: a duplicate with the first outcome.
    let again: serde_json::Value = post(Some("rep"), enqueue("q:1", 1))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (again["outcome"].as_str(), again["duplicate"].as_bool()),
        (Some("accepted"), Some(true))
    );
    // 413 beyond the body limit.
    let big = (0..700)
        .map(|n| enqueue("q:big", n))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(big.len() > 65536);
    assert_eq!(post(Some("rep"), big).await.unwrap().status(), 413);
    // 400 naming the line and the field; nothing of the batch appended.
    let batch = format!(
        "{}\n{}\n",
        enqueue("q:2", 2),
        r#"{"op":"claim","taskId":"q:2","executionId":"00000000-0000-4000-8000-000000000002","at":"2026-01-21T10:00:00Z"}"#
    );
    let bad = post(Some("rep"), batch).await.unwrap();
    assert_eq!(bad.status(), 400);
    let error: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_report");
    assert_eq!(error["error"]["place"]["line"], 2);
    assert_eq!(error["error"]["place"]["field"], "worker");
    let missing = client
        .get(format!("{}/v1/tasks/q:2", server.base))
        .bearer_auth("read")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let not_json = post(Some("rep"), "{nope".into()).await.unwrap();
    assert_eq!(not_json.status(), 400);
    let text = not_json.text().await.unwrap();
    assert!(
        !text.contains("serde") && !text.contains("panicked"),
        "{text}"
    );
    // Operators archive and retry; readers may not.
    let retry = client
        .post(format!("{}/v1/tasks/q:1/retry", server.base))
        .bearer_auth("read")
        .json(&serde_json::json!({"executionId": "00000000-0000-4000-8000-000000000009"}))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 403);
    let retry = client
        .post(format!("{}/v1/tasks/q:1/retry", server.base))
        .bearer_auth("ops")
        .json(&serde_json::json!({"executionId": "00000000-0000-4000-8000-000000000009", "by": "ops@acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        retry.status(),
        409,
        "an execution is still queued: the rules refuse"
    );
    // The read models follow the ledger live.
    let mut lag = u64::MAX;
    for _ in 0..100 {
        let ready: serde_json::Value = client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        lag = ready["lagEvents"].as_u64().unwrap();
        if lag == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(lag, 0);
    let stats: serde_json::Value = client
        .get(format!("{}/v1/queues/q/stats", server.base))
        .bearer_auth("read")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["queues"]["q"]["queued"], 1);
    assert_eq!(stats["queues"]["q"]["rejected"]["duplicateEnqueue"], 1);
    // Prometheus metrics and the OpenAPI document, covering every route.
    let metrics = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"taskledger_reports_total{op="enqueue",outcome="accepted"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("taskledger_ack_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"taskledger_dlq_size{queue="q"} 0"#),
        "{metrics}"
    );
    // The ledger's digest, as far as the models have followed: readers only; /metrics names it.
    let unauthorized = client
        .get(format!("{}/v1/digest", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let digest: serde_json::Value = client
        .get(format!("{}/v1/digest", server.base))
        .bearer_auth("read")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hex = digest["digest"].as_str().unwrap();
    assert_eq!(hex.len(), 64, "{digest}");
    assert!(digest["position"].as_u64().unwrap() >= 2, "{digest}");
    assert!(
        metrics.contains(&format!(
            "# taskledger ledger digest position={} digest={hex}",
            digest["position"]
        )) || digest["position"].as_u64() > metrics_digest_position(&metrics),
        "{metrics}"
    );
    assert!(
        metrics.contains("taskledger_ledger_digest_position"),
        "{metrics}"
    );
    let openapi: serde_json::Value = client
        .get(format!("{}/openapi.json", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = openapi["paths"].as_object().unwrap();
    for route in [
        "/v1/reports",
        "/v1/tasks/{task_id}",
        "/v1/tasks/{task_id}/chain",
        "/v1/tasks/{task_id}/history",
        "/v1/tasks/{task_id}/executions/{execution_id}/archive",
        "/v1/tasks/{task_id}/retry",
        "/v1/dlq",
        "/v1/queues/{queue}/stats",
        "/v1/stuck",
        "/v1/due",
        "/v1/digest",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(
            paths.contains_key(route),
            "{route} missing from /openapi.json"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_http_enqueues_make_one_execution() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), &[]);
    let client = reqwest::Client::new();
    let mut requests = Vec::new();
    for n in 0..1000u32 {
        let request = client
            .post(format!("{}/v1/reports", server.base))
            .header("content-type", "application/x-ndjson")
            .bearer_auth("rep")
            .body(enqueue("q:race", n));
        requests.push(tokio::spawn(async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            let body: serde_json::Value = response.json().await.unwrap();
            body["outcome"].as_str().unwrap().to_owned()
        }));
    }
    let mut accepted = 0;
    for request in requests {
        accepted += usize::from(request.await.unwrap() == "accepted");
    }
    assert_eq!(accepted, 1);
    let chain: serde_json::Value = client
        .get(format!("{}/v1/tasks/q:race/chain", server.base))
        .bearer_auth("read")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(chain["executions"].as_array().unwrap().len(), 1);
}

#[test]
fn without_tokens_only_loopback_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let output = common::command(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("TASKLEDGER_TOKENS")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("only binds loopback"));

    let mut server = start(dir.path(), &[]);
    // SIGTERM: stop accepting, finish, flush, exit 0.
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, &[]);
    let base = server.base.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let acknowledged: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for worker in 0..16u32 {
        let (base, acknowledged, stop) = (base.clone(), acknowledged.clone(), stop.clone());
        clients.push(runtime.spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let task = format!("load:w{worker}:{n}");
                let sent = client
                    .post(format!("{base}/v1/reports"))
                    .header("content-type", "application/x-ndjson")
                    .bearer_auth("rep")
                    .body(enqueue(&task, worker * 100_000 + n))
                    .send()
                    .await;
                if let Ok(response) = sent {
                    if response.status() == 200 {
                        if let Ok(body) = response.json::<serde_json::Value>().await {
                            let event = body["eventIds"][0].as_str().unwrap_or_default().to_owned();
                            acknowledged.lock().unwrap().push((task, event));
                        }
                    }
                }
                n += 1;
            }
        }));
    }
    std::thread::sleep(std::time::Duration::from_millis(700));
    drop(server); // SIGKILL
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        let _ = runtime.block_on(client);
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 50,
        "the load did not get going: {}",
        acknowledged.len()
    );
    // Every acknowledged report is in the ledger after a restart…
    let stored: std::collections::HashMap<String, String> = {
        use taskledger_store::EventStore;
        let store = taskledger_store_sled::SledStore::open(taskledger_store_sled::SledConfig::new(
            data.join("events"),
        ))
        .unwrap();
        runtime
            .block_on(store.read_all(0, usize::MAX))
            .unwrap()
            .into_iter()
            .map(|record| (record.stream, record.event_id.to_string()))
            .collect()
    };
    for (task, event) in &acknowledged {
        assert_eq!(
            stored.get(task),
            Some(event),
            "{task} was acknowledged and lost"
        );
    }
    // …and the read models equal a rebuild.
    let verification = common::ok_json(common::taskledger(
        &data,
        &["rebuild", "--verify", "--json"],
    ));
    assert_eq!(verification["differing"], serde_json::json!([]));
}

/// Sends `head` and then the whole `body` before reading anything (as Python's urllib does),
/// then reads the response to its end.
fn send_all_then_read(base: &str, head: &str, body: &[u8]) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let address = base.strip_prefix("http://").expect("an http base");
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// Regression: a client that sends a whole oversized body before reading got a reset (a broken
/// pipe in urllib) instead of the 413; the service now reads and drops the body, then answers
/// and closes. With a declared length and chunked.
#[test]
fn an_oversized_body_sent_whole_still_gets_its_413() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("taskledger.toml");
    std::fs::write(&config, "[server]\nbody_bytes_max = 65536\n").unwrap();
    let server = start(
        &dir.path().join("data"),
        &[("TASKLEDGER_CONFIG", config.to_str().unwrap())],
    );
    let body = vec![b'x'; 4 * 1024 * 1024];
    let head = format!(
        "POST /v1/reports HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer rep\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let response = send_all_then_read(&server.base, &head, &body).expect("no broken pipe");
    assert!(response.starts_with("HTTP/1.1 413"), "{response:.200}");
    assert!(response.contains("body_too_large"), "{response:.400}");
    assert!(response.to_ascii_lowercase().contains("connection: close"));
    let mut chunked = Vec::new();
    for _ in 0..64 {
        chunked.extend_from_slice(format!("{:x}\r\n", 65536).as_bytes());
        chunked.extend_from_slice(&[b'y'; 65536]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = "POST /v1/reports HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer rep\r\nTransfer-Encoding: chunked\r\n\r\n";
    let response = send_all_then_read(&server.base, head, &chunked).expect("no broken pipe");
    assert!(response.starts_with("HTTP/1.1 413"), "{response:.200}");
    // A body within the limit still goes through.
    let report = enqueue("q:small", 1);
    let head = format!(
        "POST /v1/reports HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer rep\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        report.len()
    );
    let response = send_all_then_read(&server.base, &head, report.as_bytes()).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response:.300}");
}
