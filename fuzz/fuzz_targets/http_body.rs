//! HTTP request bodies and query strings through the whole router (`serve::app`), in process
//! with tower's `oneshot`, on a fresh in-memory ledger per input. The first byte picks the
//! request; the rest is its body (or query / path). Any client input gets an answer below 500.
#![no_main]
use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use taskledger_domain::Policy;
use taskledger_ingest::{Ledger, LedgerConfig, SystemClock};
use taskledger_projections::{Kv, MemoryKv};
use taskledger_serve::{app, AppState, Limits};
use taskledger_store::{MemoryStore, SharedStore};
use tower::ServiceExt;

const TASK: &str = "partner_tasks:SATLOC:695d:02220710";
const EXECUTION: &str = "0b6f3a52-6c1e-4c39-9f0f-6f3d0e0b6f3a";
const PRELUDE: &str = concat!(
    r#"{"op":"enqueue","taskId":"partner_tasks:SATLOC:695d:02220710","executionId":"0b6f3a52-6c1e-4c39-9f0f-6f3d0e0b6f3a","queue":"partner_tasks","at":"2026-01-21T10:00:00.000Z","maxRetries":1}"#,
    "\n",
    r#"{"op":"claim","taskId":"partner_tasks:SATLOC:695d:02220710","executionId":"0b6f3a52-6c1e-4c39-9f0f-6f3d0e0b6f3a","worker":"w","at":"2026-01-21T10:00:01.000Z"}"#,
    "\n",
    r#"{"op":"fail","taskId":"partner_tasks:SATLOC:695d:02220710","executionId":"0b6f3a52-6c1e-4c39-9f0f-6f3d0e0b6f3a","at":"2026-01-21T10:00:02.000Z","error":{"message":"ETIMEDOUT"}}"#,
    "\n"
);

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fn state() -> Arc<AppState> {
    let store = Arc::new(MemoryStore::new());
    let ledger = Arc::new(Ledger::new(
        store.clone() as SharedStore,
        Policy::default(),
        Arc::new(SystemClock),
        LedgerConfig::default(),
    ));
    let models: Arc<dyn Kv> = Arc::new(MemoryKv::new());
    let (_sender, projected) = tokio::sync::watch::channel(0u64);
    Arc::new(AppState {
        ledger,
        store: store as SharedStore,
        models,
        tokens: Default::default(),
        limits: Limits {
            body_bytes_max: 64 * 1024,
            batch_reports_max: 100,
            ..Limits::default()
        },
        projected,
        metrics: None,
        commit_stats: None,
    })
}

fn percent(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~:".contains(b) {
                (*b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn send(
    state: &Arc<AppState>,
    method: Method,
    uri: &str,
    content_type: &str,
    body: Vec<u8>,
) -> u16 {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .header("host", "127.0.0.1")
        .body(Body::from(body))
        .expect("a request");
    let response = app(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status().as_u16();
    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
    status
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    runtime().block_on(async {
        let state = state();
        if selector & 0x80 != 0 {
            let status = send(
                &state,
                Method::POST,
                "/v1/reports",
                "application/x-ndjson",
                PRELUDE.into(),
            )
            .await;
            assert_eq!(status, 200, "the prelude is accepted");
        }
        let json = "application/json";
        let (method, uri, content_type, body) = match selector & 0x0f {
            0 => (
                Method::POST,
                "/v1/reports".to_owned(),
                "application/x-ndjson",
                rest.to_vec(),
            ),
            1 => (Method::POST, "/v1/reports".to_owned(), json, rest.to_vec()),
            2 => (
                Method::POST,
                format!("/v1/tasks/{TASK}/executions/{EXECUTION}/archive"),
                json,
                rest.to_vec(),
            ),
            3 => (
                Method::POST,
                format!("/v1/tasks/{TASK}/retry"),
                json,
                rest.to_vec(),
            ),
            4 => (
                Method::GET,
                format!("/v1/dlq?{}", String::from_utf8_lossy(rest)),
                json,
                Vec::new(),
            ),
            5 => (
                Method::GET,
                format!("/v1/tasks/{}", percent(rest)),
                json,
                Vec::new(),
            ),
            6 => (
                Method::GET,
                format!("/v1/tasks/{}/chain?asOf={}", TASK, percent(rest)),
                json,
                Vec::new(),
            ),
            7 => (
                Method::GET,
                format!("/v1/tasks/{}/history", percent(rest)),
                json,
                Vec::new(),
            ),
            8 => (
                Method::GET,
                format!("/v1/stuck?{}", String::from_utf8_lossy(rest)),
                json,
                Vec::new(),
            ),
            9 => (
                Method::GET,
                format!("/v1/due?{}", String::from_utf8_lossy(rest)),
                json,
                Vec::new(),
            ),
            10 => (
                Method::GET,
                format!("/v1/queues/{}/stats", percent(rest)),
                json,
                Vec::new(),
            ),
            11 => (
                Method::POST,
                "/ui/login".to_owned(),
                "application/x-www-form-urlencoded",
                rest.to_vec(),
            ),
            12 => (
                Method::POST,
                "/ui/actions".to_owned(),
                "application/x-www-form-urlencoded",
                rest.to_vec(),
            ),
            13 => (
                Method::GET,
                format!("/ui/dlq?{}", String::from_utf8_lossy(rest)),
                json,
                Vec::new(),
            ),
            14 => (
                Method::GET,
                format!("/ui/tasks/{}", percent(rest)),
                json,
                Vec::new(),
            ),
            _ => (
                Method::GET,
                format!("/ui/?{}", String::from_utf8_lossy(rest)),
                json,
                Vec::new(),
            ),
        };
        // A URI hyper itself would refuse never reaches the router.
        if uri.parse::<axum::http::Uri>().is_err() {
            return;
        }
        let status = send(&state, method, &uri, content_type, body).await;
        assert!(status < 500, "{uri}: {status} for client input");
    })
});
