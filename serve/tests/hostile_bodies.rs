//! The fast slice of the fuzzing of HTTP input (RELIABILITY.md; the long run is `bench/fuzz.sh`
//! target `http_body`): arbitrary and mutated bodies, paths and query strings through the whole
//! router, in process, always get an answer below 500.

use axum::body::Body;
use axum::http::{Method, Request};
use proptest::prelude::*;
use std::sync::Arc;
use taskledger_domain::Policy;
use taskledger_ingest::{Ledger, LedgerConfig, SystemClock};
use taskledger_projections::{Kv, MemoryKv};
use taskledger_serve::{app, AppState, Limits};
use taskledger_store::{MemoryStore, SharedStore};
use tower::ServiceExt;

const FIXTURE: &str = include_str!("../../fixtures/partner_pipeline.ndjson");
const TASK: &str = "partner_tasks:SATLOC:695d:02220710";

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

async fn send(state: &Arc<AppState>, method: Method, uri: &str, body: Vec<u8>) -> u16 {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost")
        .header("content-type", "application/json")
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

fn mutated_body() -> impl Strategy<Value = Vec<u8>> {
    (
        1usize..12,
        proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 0..6),
    )
        .prop_map(|(lines, edits)| {
            let text: Vec<&str> = FIXTURE.lines().take(lines).collect();
            let mut bytes = text.join("\n").into_bytes();
            for (at, byte, kind) in edits {
                let at = usize::from(at) % (bytes.len() + 1);
                match kind {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            bytes
        })
}

fn check(route: u8, bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let state = state();
        let seeded = send(&state, Method::POST, "/v1/reports", FIXTURE.into()).await;
        prop_assert_eq!(seeded, 200);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let (method, uri, body) = match route % 8 {
            0 => (Method::POST, "/v1/reports".to_owned(), bytes),
            1 => (
                Method::POST,
                format!(
                    "/v1/tasks/{TASK}/executions/{}/archive",
                    percent(&bytes[..bytes.len().min(40)])
                ),
                bytes,
            ),
            2 => (Method::POST, format!("/v1/tasks/{TASK}/retry"), bytes),
            3 => (Method::GET, format!("/v1/dlq?{text}"), Vec::new()),
            4 => (
                Method::GET,
                format!(
                    "/v1/tasks/{}/chain?asOf={}",
                    percent(&bytes),
                    percent(&bytes)
                ),
                Vec::new(),
            ),
            5 => (Method::GET, format!("/v1/stuck?{text}"), Vec::new()),
            6 => (Method::POST, "/ui/login".to_owned(), bytes),
            _ => (Method::GET, format!("/ui/dlq?{text}"), Vec::new()),
        };
        if uri.parse::<axum::http::Uri>().is_err() {
            // hyper refuses it before the router.
            return Ok(());
        }
        let status = send(&state, method, &uri, body).await;
        prop_assert!(status < 500, "{}: {} for client input", uri, status);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_never_gets_a_5xx(route in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check(route, bytes)?;
    }

    #[test]
    fn mutated_reports_never_get_a_5xx(route in any::<u8>(), bytes in mutated_body()) {
        check(route, bytes)?;
    }
}

/// A control: a broken batch is a 400 naming its line, a good one is accepted.
#[test]
fn a_broken_batch_is_a_400_and_a_good_one_a_200() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let state = state();
        assert_eq!(
            send(&state, Method::POST, "/v1/reports", b"{\"op\":".to_vec()).await,
            400
        );
        assert_eq!(
            send(&state, Method::POST, "/v1/reports", FIXTURE.into()).await,
            200
        );
    });
}

/// Regression (found by schemathesis): an extreme `olderThanMs` overflowed the stuck threshold,
/// dropping the connection without an answer in debug builds.
#[test]
fn an_extreme_stuck_threshold_is_answered() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let state = state();
        for threshold in ["-9223372036854775808", "9223372036854775807", "-1"] {
            let uri = format!("/v1/stuck?olderThanMs={threshold}");
            assert_eq!(
                send(&state, Method::GET, &uri, Vec::new()).await,
                200,
                "{uri}"
            );
        }
    });
}
