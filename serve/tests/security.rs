//! The service against hostile clients, over real sockets (issue "security"): authorization
//! per operation, the authenticated principal in every event, authentication before any body
//! byte, the no-token service's loopback and same-origin rules, key validation, bounded
//! responses, the sign-in limits and the error shape. Each case is one attack and what the
//! service must answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;
use taskledger_domain::Policy;
use taskledger_ingest::{Ledger, LedgerConfig, SystemClock};
use taskledger_projections::{Kv, MemoryKv};
use taskledger_serve::{app, serve_with, AppState, Limits, ListenLimits, Role, TokenSpec, Tokens};
use taskledger_store::{MemoryStore, SharedStore};

const TASK: &str = "partner_tasks:SATLOC:1";
const X1: &str = "00000000-0000-4000-8000-000000000001";
const X2: &str = "00000000-0000-4000-8000-000000000002";

fn token(name: &str, roles: &[Role]) -> TokenSpec {
    TokenSpec {
        source: format!("test token {name}"),
        name: name.into(),
        secret: format!("{name}-secret"),
        roles: roles.to_vec(),
    }
}

/// A service on a real socket. `tokens` empty: the open, loopback-only service.
fn service(tokens: Vec<TokenSpec>, limits: Limits) -> (SocketAddr, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let address = runtime.block_on(async move {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let ledger = Arc::new(Ledger::new(
            store.clone(),
            Policy::default(),
            Arc::new(SystemClock),
            LedgerConfig::default(),
        ));
        let models: Arc<dyn Kv> = Arc::new(MemoryKv::new());
        let (sender, projected) = tokio::sync::watch::channel(0u64);
        let (stop_sender, stop) = tokio::sync::watch::channel(false);
        std::mem::forget(stop_sender);
        // The live models follow the store, as in `serve` (the lists and /metrics read them).
        tokio::spawn(taskledger_serve::follow(
            store.clone(),
            models.clone(),
            sender,
            stop,
            taskledger_serve::FollowerOptions::default(),
        ));
        let tokens = Tokens::new(tokens, limits.principal_requests_max).unwrap();
        let state = Arc::new(AppState {
            ledger,
            store,
            models,
            tokens: Arc::new(tokens),
            limits,
            projected,
            // A recorder of its own (not installed globally): /metrics renders it and the
            // per-queue series from the models.
            metrics: Some(
                metrics_exporter_prometheus::PrometheusBuilder::new()
                    .build_recorder()
                    .handle(),
            ),
            commit_stats: None,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve_with(
            listener,
            app(state),
            std::future::pending::<()>(),
            ListenLimits::default(),
        ));
        address
    });
    (address, runtime)
}

fn guarded() -> (SocketAddr, tokio::runtime::Runtime) {
    service(
        vec![
            token("w1", &[Role::Reporter]),
            token("dash", &[Role::Reader]),
            token("ops", &[Role::Operator, Role::Reader]),
        ],
        Limits::default(),
    )
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// Sends one request (`Connection: close`) and reads the whole answer.
fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("Host: {address}\r\n"));
    }
    for (key, value) in headers {
        text.push_str(&format!("{key}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(text.as_bytes()).unwrap();
    read_answer(&mut stream)
}

fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn bearer(name: &str) -> String {
    format!("Bearer {name}-secret")
}

fn post(address: SocketAddr, who: &str, path: &str, body: &str) -> Answer {
    let auth = bearer(who);
    request(
        address,
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-ndjson"),
        ],
        body,
    )
}

fn get(address: SocketAddr, who: &str, path: &str) -> Answer {
    let auth = bearer(who);
    request(address, "GET", path, &[("Authorization", &auth)], "")
}

fn enqueue(execution: &str, queue: &str) -> String {
    format!(
        r#"{{"op":"enqueue","taskId":"{TASK}","executionId":"{execution}","queue":"{queue}","at":"2026-01-21T10:00:00Z","maxRetries":0}}"#
    )
}

fn to_dlq() -> String {
    [
        enqueue(X1, "partner_tasks"),
        format!(r#"{{"op":"claim","taskId":"{TASK}","executionId":"{X1}","worker":"w","at":"2026-01-21T10:00:01Z"}}"#),
        format!(r#"{{"op":"fail","taskId":"{TASK}","executionId":"{X1}","at":"2026-01-21T10:00:02Z","error":"ETIMEDOUT"}}"#),
    ]
    .join("\n")
}

#[test]
fn a_reporter_token_cannot_archive_or_retry_and_nothing_is_appended() {
    let (address, _runtime) = guarded();
    assert_eq!(post(address, "w1", "/v1/reports", &to_dlq()).status, 200);
    let before = get(address, "ops", &format!("/v1/tasks/{TASK}/history")).json();
    let forged = [
        format!(
            r#"{{"op":"archive","taskId":"{TASK}","executionId":"{X1}","at":"2026-01-21T10:01:00Z","reason":"x","by":"ops@acme"}}"#
        ),
        format!(
            r#"{{"op":"retry","taskId":"{TASK}","executionId":"{X2}","at":"2026-01-21T10:01:00Z","by":"ops@acme"}}"#
        ),
    ];
    for line in &forged {
        // Alone, and as line 2 of a batch whose line 1 the reporter may send.
        let claim = format!(
            r#"{{"op":"claim","taskId":"{TASK}","executionId":"{X1}","worker":"w2","at":"2026-01-21T10:00:03Z"}}"#
        );
        let batch = format!("{claim}\n{line}");
        for (body, line_number) in [(line.clone(), 1), (batch, 2)] {
            let answer = post(address, "w1", "/v1/reports", &body);
            assert_eq!(answer.status, 403, "{}", answer.body);
            let error = &answer.json()["error"];
            assert_eq!(error["code"], "forbidden");
            assert_eq!(error["place"]["line"], line_number);
            assert!(error["message"].as_str().unwrap().contains("operator"));
        }
    }
    // The dedicated endpoints as well.
    let archive = post(
        address,
        "w1",
        &format!("/v1/tasks/{TASK}/executions/{X1}/archive"),
        r#"{"reason":"x"}"#,
    );
    assert_eq!(archive.status, 403);
    let after = get(address, "ops", &format!("/v1/tasks/{TASK}/history")).json();
    assert_eq!(before, after, "nothing was appended");
    // A reader token may not report at all.
    assert_eq!(
        post(address, "dash", "/v1/reports", &enqueue(X2, "q")).status,
        403
    );
}

#[test]
fn every_event_records_the_authenticated_principal_not_the_bodys_by() {
    let (address, _runtime) = guarded();
    assert_eq!(post(address, "w1", "/v1/reports", &to_dlq()).status, 200);
    let archive = format!(
        r#"{{"op":"archive","taskId":"{TASK}","executionId":"{X1}","at":"2026-01-21T10:01:00Z","reason":"dead","by":"mallory"}}"#
    );
    let answer = post(address, "ops", "/v1/reports", &archive);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let retry = request(
        address,
        "POST",
        &format!("/v1/tasks/{TASK}/retry"),
        &[
            ("Authorization", &bearer("ops")),
            ("Content-Type", "application/json"),
        ],
        &format!(r#"{{"executionId":"{X2}","by":"mallory","at":"2026-01-21T10:02:00Z"}}"#),
    );
    assert_eq!(retry.status, 200, "{}", retry.body);
    let history = get(address, "dash", &format!("/v1/tasks/{TASK}/history")).json();
    let events = history.as_array().unwrap();
    assert_eq!(events.len(), 5);
    for event in &events[..3] {
        assert_eq!(event["data"]["principal"], "w1", "{event}");
    }
    let archived = &events[3]["data"];
    assert_eq!(events[3]["type"], "ExecutionArchived");
    assert_eq!(archived["principal"], "ops");
    assert_eq!(
        archived["by"], "mallory",
        "the body's by is kept as the caller's note"
    );
    assert_eq!(events[4]["data"]["principal"], "ops");
    assert_eq!(events[4]["data"]["manualRetry"]["by"], "mallory");
    // The chain says it too: who enqueued, claimed and archived, beside the caller's notes.
    let chain = get(address, "dash", &format!("/v1/tasks/{TASK}/chain")).json();
    let first = &chain["executions"][0];
    assert_eq!(first["principal"], "w1");
    assert_eq!(first["attempts"][0]["principal"], "w1");
    assert_eq!(first["archivedPrincipal"], "ops");
    assert_eq!(first["archivedBy"], "mallory");
    assert_eq!(chain["executions"][1]["principal"], "ops");
}

#[test]
fn a_large_declared_body_without_a_token_is_answered_401_before_it_is_sent() {
    let (address, _runtime) = guarded();
    for expect in [false, true] {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut head = format!(
            "POST /v1/reports HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-ndjson\r\nContent-Length: 4000000\r\n"
        );
        if expect {
            head.push_str("Expect: 100-continue\r\n");
        }
        head.push_str("\r\n0123456789");
        stream.write_all(head.as_bytes()).unwrap();
        let started = std::time::Instant::now();
        // The rest of the body never comes: the answer must not wait for it.
        let answer = read_answer(&mut stream);
        assert_eq!(answer.status, 401, "{}", answer.head);
        assert!(!answer.head.contains("100 Continue"));
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(
            answer.header("www-authenticate").as_deref(),
            Some("Bearer realm=\"taskledger\"")
        );
    }
}

#[test]
fn the_bearer_scheme_is_matched_in_any_case_and_a_wrong_scheme_is_401() {
    let (address, _runtime) = guarded();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme} dash-secret");
        let answer = request(address, "GET", "/v1/dlq", &[("Authorization", &auth)], "");
        assert_eq!(answer.status, 200, "{scheme}: {}", answer.body);
    }
    let answer = request(
        address,
        "GET",
        "/v1/dlq",
        &[("Authorization", "Basic ZGFzaA==")],
        "",
    );
    assert_eq!(answer.status, 401);
    let answer = request(
        address,
        "GET",
        "/v1/dlq",
        &[("Authorization", "Bearer dash")],
        "",
    );
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"]["message"], "unknown token");
}

#[test]
fn without_tokens_only_loopback_hosts_same_origin_and_json_change_state() {
    let (address, _runtime) = service(Vec::new(), Limits::default());
    let json = [("Content-Type", "application/json")];
    // DNS rebinding: the browser sends the attacker's name as Host.
    let answer = request(
        address,
        "GET",
        "/v1/dlq",
        &[("Host", "evil.example:7070")],
        "",
    );
    assert_eq!(answer.status, 421);
    assert_eq!(answer.json()["error"]["code"], "misdirected");
    // A page's form or fetch without a preflight: text/plain, a form type, or none at all.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let answer = request(
            address,
            "POST",
            "/v1/reports",
            &[("Content-Type", content_type)],
            &enqueue(X1, "q"),
        );
        assert_eq!(answer.status, 403, "{content_type}");
    }
    let answer = request(address, "POST", &format!("/v1/tasks/{TASK}/retry"), &[], "");
    assert_eq!(answer.status, 403, "a POST with no content type");
    // JSON from a foreign origin (a CORS request the browser would send after all).
    let answer = request(
        address,
        "POST",
        "/v1/reports",
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example"),
        ],
        &enqueue(X1, "q"),
    );
    assert_eq!(answer.status, 403);
    // Nothing of the above was recorded; the loopback client's JSON is.
    let history = request(
        address,
        "GET",
        &format!("/v1/tasks/{TASK}/history"),
        &[],
        "",
    );
    assert_eq!(history.status, 404);
    let answer = request(address, "POST", "/v1/reports", &json, &enqueue(X1, "q"));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let history = request(
        address,
        "GET",
        &format!("/v1/tasks/{TASK}/history"),
        &[],
        "",
    )
    .json();
    assert_eq!(history[0]["data"]["principal"], "loopback");
    for host in ["localhost:7070", "127.0.0.1", "[::1]:7070"] {
        let answer = request(address, "GET", "/v1/dlq", &[("Host", host)], "");
        assert_eq!(answer.status, 200, "{host}");
    }
}

#[test]
fn every_key_is_validated_naming_the_field_and_line() {
    let (address, _runtime) = guarded();
    let long = "w".repeat(513);
    let cases = [
        (enqueue(X1, "victim\\u0000evil"), "queue"),
        (enqueue(X1, "line\\nbreak"), "queue"),
        (enqueue(X1, &"q".repeat(513)), "queue"),
        (
            format!(
                r#"{{"op":"claim","taskId":"{TASK}","executionId":"{X1}","worker":"{long}","at":"2026-01-21T10:00:01Z"}}"#
            ),
            "worker",
        ),
        (
            format!(
                r#"{{"op":"claim","taskId":"{TASK}","executionId":"{X1}","worker":"a\u0007b","at":"2026-01-21T10:00:01Z"}}"#
            ),
            "worker",
        ),
        (
            format!(
                r#"{{"op":"enqueue","taskId":"q:a\u0001","executionId":"{X1}","at":"2026-01-21T10:00:00Z"}}"#
            ),
            "taskId",
        ),
    ];
    for (line, field) in cases {
        let body = format!("{}\n{line}", enqueue(X2, "fine"));
        let answer = post(address, "w1", "/v1/reports", &body);
        assert_eq!(answer.status, 400, "{line}: {}", answer.body);
        let error = &answer.json()["error"];
        assert_eq!(error["place"]["field"], field, "{line}");
        assert_eq!(error["place"]["line"], 2, "{line}");
    }
    // Nothing of those batches was appended (their first line was valid).
    assert_eq!(
        get(address, "dash", &format!("/v1/tasks/{TASK}/history")).status,
        404
    );
}

#[test]
fn history_and_chain_are_paged_with_a_cursor() {
    let (address, _runtime) = guarded();
    assert_eq!(
        post(address, "w1", "/v1/reports", &enqueue(X1, "q")).status,
        200
    );
    // 2,400 rejected reports about the task: its stream grows, every response stays bounded.
    let rejected: Vec<String> = (0..2400)
        .map(|n| {
            format!(r#"{{"op":"succeed","taskId":"{TASK}","executionId":"{X2}","at":"2026-01-21T10:00:{:02}Z","reportId":"r{n}"}}"#, n % 60)
        })
        .collect();
    let answer = post(address, "w1", "/v1/reports", &rejected.join("\n"));
    assert_eq!(answer.status, 200);
    let mut path = format!("/v1/tasks/{TASK}/history");
    let mut pages = Vec::new();
    loop {
        let answer = get(address, "dash", &path);
        assert_eq!(answer.status, 200, "{}", answer.body);
        pages.push(answer.json().as_array().unwrap().len());
        match answer.header("x-next-cursor") {
            Some(next) => {
                let link = answer.header("link").unwrap();
                assert!(link.contains(&format!("cursor={next}")), "{link}");
                path = format!("/v1/tasks/{TASK}/history?cursor={next}");
            }
            None => break,
        }
    }
    assert_eq!(pages, [1000, 1000, 401]);
    let answer = get(
        address,
        "dash",
        &format!("/v1/tasks/{TASK}/history?limit=1001"),
    );
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"]["place"]["field"], "limit");
    let chain = get(address, "dash", &format!("/v1/tasks/{TASK}/chain?limit=1")).json();
    assert_eq!(chain["executions"].as_array().unwrap().len(), 1);
    assert!(chain.get("next").is_none(), "one execution: no next page");
}

#[test]
fn framework_rejections_are_the_json_error_shape() {
    let (address, _runtime) = guarded();
    let answer = get(address, "dash", "/v1/dlq?limit=abc");
    assert_eq!(answer.status, 400);
    assert!(answer
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "invalid_request");
    assert!(
        error["message"].as_str().unwrap().contains("limit"),
        "{error}"
    );
    let answer = request(
        address,
        "DELETE",
        "/v1/dlq",
        &[("Authorization", &bearer("ops"))],
        "",
    );
    assert_eq!(answer.status, 405);
    assert_eq!(answer.json()["error"]["code"], "method_not_allowed");
}

#[test]
fn requests_in_flight_are_bounded_per_principal() {
    let (address, _runtime) = service(
        vec![
            token("w1", &[Role::Reporter]),
            token("w2", &[Role::Reporter]),
        ],
        Limits {
            principal_requests_max: 2,
            ..Limits::default()
        },
    );
    // Two requests of w1 whose bodies never finish hold w1's two slots.
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(address).unwrap();
            let head = format!(
                "POST /v1/reports HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer w1-secret\r\nContent-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n{{"
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let answer = post(address, "w1", "/v1/reports", &enqueue(X1, "q"));
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert_eq!(answer.header("retry-after").as_deref(), Some("1"));

    // Another principal is not held up by w1.
    assert_eq!(
        post(address, "w2", "/v1/reports", &enqueue(X1, "q")).status,
        200
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        post(address, "w1", "/v1/reports", &enqueue(X1, "q")).status,
        200
    );
}

/// Signs in through the UI's form; the session cookie, or the status when refused.
fn sign_in(address: SocketAddr, secret: &str) -> Result<String, u16> {
    let origin = format!("http://{address}");
    let answer = request(
        address,
        "POST",
        "/ui/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &origin),
        ],
        &format!("token={secret}&next=%2Fui%2Fdlq"),
    );
    if answer.status != 303 {
        return Err(answer.status);
    }
    let cookie = answer.header("set-cookie").unwrap();
    Ok(cookie.split(';').next().unwrap().to_owned())
}

#[test]
fn sign_ins_are_limited_per_address_and_never_evict_another_principal() {
    let (address, _runtime) = guarded();
    let operator = sign_in(address, "ops-secret").unwrap();
    // A reader signs in again and again: its own oldest sessions go, never the operator's.
    for _ in 0..17 {
        sign_in(address, "dash-secret").unwrap();
    }
    let page = request(address, "GET", "/ui/dlq", &[("Cookie", &operator)], "");
    assert_eq!(page.status, 200, "the operator's session lives on");
    assert_eq!(sign_in(address, "wrong").unwrap_err(), 401);
    sign_in(address, "dash-secret").expect("the 20th attempt in a minute");
    assert_eq!(
        sign_in(address, "dash-secret").unwrap_err(),
        429,
        "the 21st attempt in a minute"
    );
}

#[test]
fn metrics_cap_their_queue_series_and_may_require_a_token() {
    let (address, _runtime) = service(
        vec![
            token("w1", &[Role::Reporter]),
            token("dash", &[Role::Reader]),
        ],
        Limits {
            metrics_queues_max: 3,
            metrics_token_required: true,
            ..Limits::default()
        },
    );
    let lines: Vec<String> = (0..10)
        .map(|n| {
            format!(
                r#"{{"op":"enqueue","taskId":"q{n}:1","executionId":"{X1}","queue":"queue-{n}","at":"2026-01-21T10:00:00Z"}}"#
            )
        })
        .collect();
    assert_eq!(
        post(address, "w1", "/v1/reports", &lines.join("\n")).status,
        200
    );
    // Without a token, and with a reporter's: refused.
    assert_eq!(request(address, "GET", "/metrics", &[], "").status, 401);
    assert_eq!(get(address, "w1", "/metrics").status, 403);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let answer = get(address, "dash", "/metrics");
        assert_eq!(answer.status, 200);
        if answer.body.contains("taskledger_queues 10") {
            break answer.body;
        }
        assert!(std::time::Instant::now() < deadline, "{}", answer.body);
        std::thread::sleep(Duration::from_millis(100));
    };
    let series: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("taskledger_dlq_size{"))
        .collect();
    assert_eq!(series.len(), 4, "3 queues and _other: {series:?}");
    assert!(series.iter().any(|s| s.contains("queue=\"_other\"")));
}

#[test]
fn a_task_page_shows_the_latest_events_and_links_to_older_ones() {
    let (address, _runtime) = guarded();
    assert_eq!(
        post(address, "w1", "/v1/reports", &enqueue(X1, "q")).status,
        200
    );
    let rejected: Vec<String> = (0..1500)
        .map(|n| {
            format!(r#"{{"op":"succeed","taskId":"{TASK}","executionId":"{X2}","at":"2026-01-21T10:00:01Z","reportId":"r{n}"}}"#)
        })
        .collect();
    assert_eq!(
        post(address, "w1", "/v1/reports", &rejected.join("\n")).status,
        200
    );
    let page = get(address, "dash", &format!("/ui/tasks/{TASK}"));
    assert_eq!(page.status, 200);
    let rows = page.body.matches("class=\"ev ev-").count();
    assert_eq!(rows, 1000, "the latest 1,000 events");
    assert!(
        page.body.contains("id=\"older-events\""),
        "a link to the older ones"
    );
    assert!(page.body.contains("sent by <code>w1</code>"));
    let older = get(address, "dash", &format!("/ui/tasks/{TASK}?before=501"));
    assert_eq!(older.body.matches("class=\"ev ev-").count(), 501);
    assert!(!older.body.contains("id=\"older-events\""));
}

#[test]
fn unauthenticated_requests_in_flight_are_bounded_and_health_checks_still_answer() {
    let (address, _runtime) = service(
        vec![token("dash", &[Role::Reader])],
        Limits {
            unauthenticated_requests_max: 1,
            ..Limits::default()
        },
    );
    // A sign-in whose form never finishes holds the one unauthenticated slot.
    let mut held = TcpStream::connect(address).unwrap();
    let head = format!(
        "POST /ui/login HTTP/1.1\r\nHost: {address}\r\nOrigin: http://{address}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken="
    );
    held.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(request(address, "GET", "/ui/login", &[], "").status, 429);
    assert_eq!(request(address, "GET", "/healthz", &[], "").status, 200);
    assert_eq!(request(address, "GET", "/readyz", &[], "").status, 200);
    // A caller with a token is not held up by it.
    assert_eq!(get(address, "dash", "/v1/dlq").status, 200);
    drop(held);
}

#[test]
fn behind_tokens_only_the_configured_host_names_are_answered() {
    let (address, _runtime) = service(
        vec![token("dash", &[Role::Reader])],
        Limits {
            allowed_hosts: vec!["ledger.test".into()],
            ..Limits::default()
        },
    );
    let auth = bearer("dash");
    let to = |host: &str| {
        request(
            address,
            "GET",
            "/v1/dlq",
            &[("Host", host), ("Authorization", &auth)],
            "",
        )
        .status
    };
    assert_eq!(to("ledger.test"), 200);
    assert_eq!(to("ledger.test:7070"), 200);
    assert_eq!(to("evil.example"), 421, "a rebinding name");
    assert_eq!(to(&address.to_string()), 421, "not a configured name");
}
