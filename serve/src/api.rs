//! The JSON API (SPEC section 7): reports in, read models out, bearer tokens with roles.
//!
//! `app(state)` builds the router, so tests can drive it over a real socket or in process.
//! Every error leaves through [`ApiError`]: a stable code, a message naming the place of the
//! problem (line, field), and never an internal detail.

use crate::auth::{Principal, Tokens};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use taskledger_domain::{operator_report, DomainError, Op, Outcome, Report, TaskId, Timestamp};
use taskledger_ingest::{now, IngestError, Ledger};
use taskledger_projections::query::{self, DlqQuery};
use taskledger_projections::{history_page, load_task, Kv};
use taskledger_store::{SharedStore, StoreError};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// POST reports.
    Reporter,
    /// GET anything.
    Reader,
    /// Archive and retry.
    Operator,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Reporter => "reporter",
            Role::Reader => "reader",
            Role::Operator => "operator",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "reporter" => Some(Role::Reporter),
            "reader" => Some(Role::Reader),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

/// Limits of the service, each named with its unit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request body: a batch of 1,000 reports of a few hundred bytes fits many times over;
    /// a runaway client cannot make the server buffer more.
    pub body_bytes_max: usize,
    /// Reports in one NDJSON batch.
    pub batch_reports_max: usize,
    /// Requests of one principal in flight at once (429 beyond).
    pub principal_requests_max: usize,
    /// Requests in flight at once from callers without a valid token (429 beyond).
    pub unauthenticated_requests_max: usize,
    /// Queues with their own series on `/metrics` (those with the most dead letters and
    /// rejections); the rest are summed under `queue="_other"`.
    pub metrics_queues_max: usize,
    /// `/metrics` needs a token with the reader role.
    pub metrics_token_required: bool,
    /// Behind tokens, the host names (with or without a port) requests may be addressed to;
    /// empty: any. (Without tokens only loopback names are answered, whatever this says.)
    pub allowed_hosts: Vec<String>,
}

/// Events in one page of a task's history or timeline, and executions in one page of its
/// chain, unless the request asks for fewer.
pub const PAGE_EVENTS_MAX: usize = 1000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 4 * 1024 * 1024,
            batch_reports_max: 10_000,
            principal_requests_max: crate::auth::PRINCIPAL_REQUESTS_MAX,
            unauthenticated_requests_max: crate::auth::UNAUTHENTICATED_REQUESTS_MAX,
            metrics_queues_max: 100,
            metrics_token_required: false,
            allowed_hosts: Vec::new(),
        }
    }
}

/// Everything the handlers share.
pub struct AppState {
    pub ledger: Arc<Ledger>,
    pub store: SharedStore,
    /// The live read models, followed by the projection runner.
    pub models: Arc<dyn Kv>,
    /// The bearer tokens and their principals. Empty: no authentication (only allowed on
    /// loopback; `serve` enforces it, and the guard answers only loopback `Host`s then).
    pub tokens: Arc<Tokens>,
    pub limits: Limits,
    /// The models' checkpoint, published by the projection follower.
    pub projected: tokio::sync::watch::Receiver<u64>,
    /// Renders `/metrics`; `None` serves no metrics (tests building several apps in one process).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The embedded store's group-commit counters, when it has them.
    pub commit_stats: Option<Arc<taskledger_store::CommitStats>>,
}

/// An error as the API returns it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    line: Option<u64>,
    field: Option<String>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            line: None,
            field: None,
        }
    }

    fn invalid_report(line: Option<u64>, error: DomainError) -> ApiError {
        let field = match &error {
            DomainError::InvalidField { field, .. } if !field.is_empty() => Some(field.clone()),
            _ => None,
        };
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_report",
            message: error.to_string(),
            line,
            field,
        }
    }

    /// The event store cannot be reached (a database down or failing over): 503, so clients
    /// retry later. Nothing of the request was acknowledged; the backend's detail (host names,
    /// driver messages) goes to the log only.
    fn unavailable(error: &dyn std::fmt::Display) -> ApiError {
        tracing::warn!(%error, "event store unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the event store is unavailable right now; nothing was recorded, retry later",
        )
    }

    /// The ledger's disk is full: 503, so clients retry; the embedded store reopens itself once
    /// space returns. Which file, on which disk, goes to the log only.
    fn storage_full(error: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(%error, "the event store's file system is full");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_full",
            "the ledger's storage is full; nothing was recorded, retry later",
        )
    }

    pub(crate) fn internal(error: impl std::fmt::Display) -> ApiError {
        // The detail goes to the log, never to the client.
        tracing::error!(%error, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request could not be completed",
        )
    }
}

impl ApiError {
    /// Status, code and message: what a page of the UI may show (never more than the JSON body).
    pub(crate) fn parts(&self) -> (StatusCode, &'static str, &str) {
        (self.status, self.code, &self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut place = serde_json::Map::new();
        if let Some(line) = self.line {
            place.insert("line".into(), line.into());
        }
        if let Some(field) = self.field {
            place.insert("field".into(), field.into());
        }
        let mut error = serde_json::json!({"code": self.code, "message": self.message});
        if !place.is_empty() {
            error["place"] = serde_json::Value::Object(place);
        }
        (self.status, Json(serde_json::json!({ "error": error }))).into_response()
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match &error {
            IngestError::Store(StoreError::Unavailable(_)) => ApiError::unavailable(&error),
            IngestError::Store(StoreError::NoSpace(_)) => ApiError::storage_full(&error),
            IngestError::Contention { .. } => {
                tracing::warn!(%error, "report refused after repeated conflicts");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "contention",
                    "the task's stream kept changing under this report; nothing was recorded, retry",
                )
            }
            IngestError::Shared(shared)
                if matches!(
                    shared.as_ref(),
                    IngestError::Store(StoreError::Unavailable(_))
                ) =>
            {
                ApiError::unavailable(&error)
            }
            IngestError::Shared(shared)
                if matches!(shared.as_ref(), IngestError::Store(StoreError::NoSpace(_))) =>
            {
                ApiError::storage_full(&error)
            }
            _ => ApiError::internal(error),
        }
    }
}

impl From<taskledger_projections::ProjectionError> for ApiError {
    fn from(error: taskledger_projections::ProjectionError) -> Self {
        match error {
            taskledger_projections::ProjectionError::Query(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
            }
            taskledger_projections::ProjectionError::Store(StoreError::Unavailable(_)) => {
                ApiError::unavailable(&error)
            }
            other => ApiError::internal(other),
        }
    }
}

/// Checks that the authenticated principal (the guard put it in the request) has `role`.
fn authorize(principal: &Principal, role: Role) -> Result<(), ApiError> {
    if principal.can(role) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token lacks the {} role", role.name()),
        ))
    }
}

/// Runs a read of the models on the blocking pool: a scan of a large model never holds an
/// async worker thread.
pub(crate) async fn read_models<T: Send + 'static>(
    state: &AppState,
    read: impl FnOnce(&dyn Kv) -> Result<T, taskledger_projections::ProjectionError> + Send + 'static,
) -> Result<T, ApiError> {
    let models = state.models.clone();
    tokio::task::spawn_blocking(move || read(models.as_ref()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// Bytes of an oversized body the server still reads (and drops) before it answers 413 and
/// closes: a client that sends its whole body before reading (Python's urllib, curl without
/// `Expect`) then reads the 413 instead of a broken pipe. Beyond this the server answers at once
/// and closes, so a runaway client cannot keep it reading.
pub const DRAIN_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Reads every body up to `body_limit` before the handlers see it; an oversized one is read and
/// dropped up to [`DRAIN_BYTES_MAX`] and answered 413 with `Connection: close`.
async fn bounded_body(
    State(body_limit): State<usize>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use http_body_util::BodyExt;
    // The guard lowers the limit for some requests (a sign-in form).
    let body_limit = request
        .extensions()
        .get::<crate::auth::BodyLimit>()
        .map_or(body_limit, |limit| limit.0.min(body_limit));
    let too_large = || {
        let mut response = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {body_limit} bytes"),
        )
        .into_response();
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        response
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > DRAIN_BYTES_MAX as u64) {
        return too_large();
    }
    let (parts, mut body) = request.into_parts();
    let mut kept = Vec::new();
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "the body could not be read",
            )
            .into_response();
        };
        if let Ok(data) = frame.into_data() {
            read += data.len();
            if read > DRAIN_BYTES_MAX {
                break;
            }
            if read <= body_limit {
                kept.extend_from_slice(&data);
            }
        }
    }
    if read > body_limit {
        return too_large();
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(kept),
    ))
    .await
}

/// The router: the API and the web UI, behind the guard ([`crate::auth::guard`]: host, origin,
/// authentication and concurrency, before any body is read). `state.limits.body_bytes_max`
/// bounds every body (413 beyond, after reading it: see [`DRAIN_BYTES_MAX`]).
pub fn app(state: Arc<AppState>) -> Router {
    let body_limit = state.limits.body_bytes_max;
    let (ui, ui_state) = crate::ui::router(state.clone());
    let guard = Arc::new(crate::auth::Guard {
        tokens: state.tokens.clone(),
        metrics_public: !state.limits.metrics_token_required,
        allowed_hosts: state.limits.allowed_hosts.clone(),
        unauthenticated: Arc::new(tokio::sync::Semaphore::new(
            state.limits.unauthenticated_requests_max.max(1),
        )),
        logins: Default::default(),
        has_session: Box::new(move |headers| ui_state.has_session(headers)),
    });
    Router::new()
        .route("/v1/reports", post(post_reports))
        .route("/v1/tasks/{task_id}", get(get_task))
        .route("/v1/tasks/{task_id}/chain", get(get_chain))
        .route("/v1/tasks/{task_id}/history", get(get_history))
        .route(
            "/v1/tasks/{task_id}/executions/{execution_id}/archive",
            post(post_archive),
        )
        .route("/v1/tasks/{task_id}/retry", post(post_retry))
        .route("/v1/dlq", get(get_dlq))
        .route("/v1/queues/{queue}/stats", get(get_stats))
        .route("/v1/stuck", get(get_stuck))
        .route("/v1/due", get(get_due))
        .route("/v1/digest", get(get_digest))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .with_state(state)
        .merge(ui)
        .fallback(crate::ui::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(body_limit, bounded_body))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            crate::auth::guard,
        ))
        .layer(axum::middleware::map_response_with_state(
            (),
            error_shape,
        ))
        .layer(
            tower::ServiceBuilder::new()
                .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
                    tower_http::request_id::MakeRequestUuid,
                ))
                .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(
                    |request: &axum::http::Request<axum::body::Body>| {
                        let id = request
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("request", method = %request.method(), uri = %request.uri(), request_id = %id)
                    },
                ))
                .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id()),
        )
}

/// Every error leaves in the service's own shape: the framework's rejections (a bad query
/// string or path, a wrong method) are plain text, and become the JSON error — or, under
/// `/ui`, keep their status with an HTML page.
async fn error_shape(State(()): State<()>, uri: axum::http::Uri, response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let plain = match response.headers().get(axum::http::header::CONTENT_TYPE) {
        None => true,
        Some(value) => value.to_str().map_or(true, |v| v.starts_with("text/plain")),
    };
    if !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    // A rejection's text is at most a line or two; anything longer is cut.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        s if s.is_server_error() => "internal",
        _ => "refused",
    };
    let message = if status.is_server_error() {
        // Never a detail of the server's own failure.
        "the request could not be completed".to_owned()
    } else if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("refused")
            .to_ascii_lowercase()
    } else {
        text
    };
    let error = ApiError::new(status, code, message);
    let path = uri.path();
    let mut shaped = if crate::ui::is_ui_path(path) {
        crate::ui::error_page(None, error)
    } else {
        error.into_response()
    };
    for name in [axum::http::header::ALLOW, axum::http::header::CONNECTION] {
        if let Some(value) = parts.headers.get(&name) {
            shaped.headers_mut().insert(name, value.clone());
        }
    }
    shaped
}

/// The OpenAPI description of every route, generated from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "taskledger",
        description = "Event-sourced tracking ledger for background-task queues"
    ),
    paths(
        post_reports,
        get_task,
        get_chain,
        get_history,
        post_archive,
        post_retry,
        get_dlq,
        get_stats,
        get_stuck,
        get_due,
        get_digest,
        healthz,
        readyz,
        metrics_text,
        openapi
    )
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "This document")))]
async fn openapi() -> Response {
    use utoipa::OpenApi;
    Json(ApiDoc::openapi()).into_response()
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "The process is up")))]
async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Prometheus text: reports by op and outcome, acknowledgement latency, group commits, projection
/// lag, DLQ size and rejections per queue.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
async fn metrics_text(
    State(state): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
) -> Response {
    if state.limits.metrics_token_required
        && !principal.is_some_and(|Extension(p)| p.can(Role::Reader))
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "metrics need a token with the reader role",
        )
        .into_response();
    }
    let Some(handle) = &state.metrics else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "metrics are off")
            .into_response();
    };
    let head = state.store.head_position();
    metrics::gauge!("taskledger_projection_lag_events")
        .set(head.saturating_sub(*state.projected.borrow()) as f64);
    metrics::gauge!("taskledger_ledger_events").set(head as f64);
    if let Some(stats) = &state.commit_stats {
        use std::sync::atomic::Ordering::Relaxed;
        metrics::gauge!("taskledger_group_commits").set(stats.commits.load(Relaxed) as f64);
        metrics::gauge!("taskledger_group_commit_events").set(stats.events.load(Relaxed) as f64);
        metrics::gauge!("taskledger_group_commit_appends").set(stats.requests.load(Relaxed) as f64);
    }
    let queues_max = state.limits.metrics_queues_max;
    let read = read_models(&state, move |models| {
        let digest = taskledger_projections::runner::read_ledger_digest(models).ok();
        let queues = query::queue_stats(models, None)
            .map(|stats| queue_series(stats, queues_max))
            .unwrap_or_default();
        Ok((digest, queues))
    })
    .await;
    let (digest, queues) = match read {
        Ok(read) => read,
        Err(error) => return error.into_response(),
    };
    if let Some((position, digest)) = &digest {
        metrics::gauge!("taskledger_ledger_digest_position").set(*position as f64);
        // The digest's first 48 bits: exact in a float, one series however often it changes.
        let mut head48 = [0u8; 8];
        head48[2..].copy_from_slice(&digest[..6]);
        metrics::gauge!("taskledger_ledger_digest_head48").set(u64::from_be_bytes(head48) as f64);
    }
    let mut text = handle.render();
    text.push_str(&queues);
    if let Some((position, digest)) = &digest {
        // The whole digest, as a comment (no series per value): what /v1/digest answers.
        text.push_str(&format!(
            "# taskledger ledger digest position={position} digest={}\n",
            taskledger_store::chain::to_hex(digest)
        ));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}

/// The queue name under which every queue past `[server] metrics_queues_max` is summed.
pub const OTHER_QUEUES_LABEL: &str = "_other";

/// The per-queue series of `/metrics`, rendered here rather than kept in the metrics registry
/// (which would keep a series for every queue name ever seen): the `queues_max` queues with the
/// most dead letters and rejections by name, the rest summed under [`OTHER_QUEUES_LABEL`].
fn queue_series(stats: query::StatsView, queues_max: usize) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let mut queues: Vec<(String, u64, BTreeMap<String, u64>)> = stats
        .queues
        .into_iter()
        .map(|(queue, s)| (queue, s.dlq, s.rejected))
        .collect();
    let weight = |q: &(String, u64, BTreeMap<String, u64>)| q.1 + q.2.values().sum::<u64>();
    queues.sort_by(|a, b| weight(b).cmp(&weight(a)).then_with(|| a.0.cmp(&b.0)));
    let total = queues.len();
    if total > queues_max {
        let mut other = (OTHER_QUEUES_LABEL.to_owned(), 0u64, BTreeMap::new());
        for (_, dlq, rejected) in queues.drain(queues_max..) {
            other.1 += dlq;
            for (reason, n) in rejected {
                *other.2.entry(reason).or_insert(0) += n;
            }
        }
        queues.push(other);
    }
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# TYPE taskledger_queues gauge\ntaskledger_queues {total}"
    );
    text.push_str("# TYPE taskledger_dlq_size gauge\n");
    for (queue, dlq, _) in &queues {
        let _ = writeln!(
            text,
            "taskledger_dlq_size{{queue=\"{}\"}} {dlq}",
            label(queue)
        );
    }
    text.push_str("# TYPE taskledger_rejections gauge\n");
    for (queue, _, rejected) in &queues {
        for (reason, n) in rejected {
            let _ = writeln!(
                text,
                "taskledger_rejections{{queue=\"{}\",reason=\"{}\"}} {n}",
                label(queue),
                label(reason)
            );
        }
    }
    text
}

/// A Prometheus label value: backslash, double quote and line feed escaped.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The ledger's digest as far as this instance's read models have followed it: the running hash
/// of every event's chain hash in global order (`taskledger digest` prints the same object).
#[utoipa::path(get, path = "/v1/digest", responses((status = 200, description = "{\"position\", \"digest\"}: the digest of the events at positions 0..position")))]
async fn get_digest(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ApiError> {
    authorize(&principal, Role::Reader)?;
    let (position, digest) = read_models(&state, |models| {
        taskledger_projections::runner::read_ledger_digest(models)
    })
    .await?;
    Ok(Json(serde_json::json!({
        "position": position,
        "digest": taskledger_store::chain::to_hex(&digest),
    }))
    .into_response())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportResult {
    line: u64,
    #[serde(flatten)]
    outcome: Outcome,
    duplicate: bool,
    event_ids: Vec<uuid::Uuid>,
}

/// One report (a JSON object) or an NDJSON batch. Every line is validated first: one bad line
/// refuses the whole request (400, naming the line and field) and appends nothing. The response
/// is sent only once every accepted report is durable.
#[utoipa::path(post, path = "/v1/reports", request_body(content = String, description = "One report (JSON object) or an NDJSON batch", content_type = "application/x-ndjson"), responses((status = 200, description = "Per-report outcomes, sent once durable"), (status = 400, description = "A malformed report; nothing appended"), (status = 401, description = "No or unknown token"), (status = 403, description = "Token without the reporter role"), (status = 413, description = "Body or batch too large")))]
async fn post_reports(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !(principal.can(Role::Reporter) || principal.can(Role::Operator)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token lacks the reporter role",
        ));
    }
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body is not UTF-8",
        )
    })?;
    let mut reports = Vec::new();
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if reports.len() == state.limits.batch_reports_max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                format!(
                    "at most {} reports per request",
                    state.limits.batch_reports_max
                ),
            ));
        }
        let number = index as u64 + 1;
        let mut report = Report::from_json(line)
            .map_err(|error| ApiError::invalid_report(Some(number), error))?;
        // Authorization per operation: one line this token may not send refuses the whole
        // request, before anything is appended.
        if !principal.may_send(report.op()) {
            let mut error = ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "line {number}: {} is an operation of the {} role, which this token lacks; nothing was recorded",
                    report.op().as_str(),
                    Principal::role_for(report.op()).name()
                ),
            );
            error.line = Some(number);
            error.field = Some("op".into());
            return Err(error);
        }
        report.principal = Some(principal.name.to_string());
        reports.push(report);
        lines.push(number);
    }
    if reports.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "no report in the body",
        ));
    }
    let single = reports.len() == 1
        && text.trim_start().starts_with('{')
        && text.trim().lines().count() == 1;
    let ops: Vec<&'static str> = reports.iter().map(|r| r.op().as_str()).collect();
    let started = std::time::Instant::now();
    // A lone report joins the other reports of its stream in flight (one shared commit).
    let submitted = if reports.len() == 1 {
        let report = reports.pop().expect("one report");
        vec![state.ledger.submit(report).await?]
    } else {
        state.ledger.submit_batch(reports).await?
    };
    metrics::histogram!("taskledger_ack_seconds").record(started.elapsed().as_secs_f64());
    for (op, submitted) in ops.iter().zip(&submitted) {
        let outcome = match (&submitted.outcome, submitted.duplicate) {
            (_, true) => "duplicate",
            (Outcome::Accepted, false) => "accepted",
            (Outcome::Rejected(reason), false) => reason.name(),
        };
        metrics::counter!("taskledger_reports_total", "op" => *op, "outcome" => outcome)
            .increment(1);
    }
    let results: Vec<ReportResult> = submitted
        .into_iter()
        .zip(lines)
        .map(|(submitted, line)| ReportResult {
            line,
            outcome: submitted.outcome,
            duplicate: submitted.duplicate,
            event_ids: submitted.event_ids,
        })
        .collect();
    if single {
        return Ok(Json(results.into_iter().next()).into_response());
    }
    Ok(Json(serde_json::json!({ "results": results })).into_response())
}

fn task_id(text: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(text).map_err(|problem| {
        let mut error = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_task_id",
            format!("taskId {problem}"),
        );
        error.field = Some("taskId".into());
        error
    })
}

fn instant(field: &str, text: Option<&String>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|text| {
        Timestamp::parse(text).ok_or_else(|| {
            let mut error = ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("{field}: {text:?} is not an RFC 3339 instant"),
            );
            error.field = Some(field.into());
            error
        })
    })
    .transpose()
}

fn not_found(what: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AsOf {
    as_of: Option<String>,
}

/// Per-task reads fold the task's stream: always current, right after a report's 2xx.
async fn task_record(
    state: &AppState,
    raw_task_id: &str,
    as_of: Option<&String>,
) -> Result<(TaskId, taskledger_projections::TaskRecord), ApiError> {
    let task_id = task_id(raw_task_id)?;
    let as_of = instant("asOf", as_of)?;
    let record = load_task(state.store.as_ref(), &task_id, as_of)
        .await?
        .ok_or_else(|| not_found(format!("no task {task_id}")))?;
    Ok((task_id, record))
}

#[utoipa::path(get, path = "/v1/tasks/{task_id}", params(("task_id" = String, Path, description = "taskId"), ("asOf" = Option<String>, Query, description = "RFC 3339 instant")), responses((status = 200, description = "Task status"), (status = 404, description = "No such task")))]
async fn get_task(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
    Query(params): Query<AsOf>,
) -> Result<Response, ApiError> {
    authorize(&principal, Role::Reader)?;
    let (task_id, record) = task_record(&state, &raw, params.as_of.as_ref()).await?;
    Ok(Json(record.status_view(&task_id)).into_response())
}

#[utoipa::path(get, path = "/v1/tasks/{task_id}/chain", params(("task_id" = String, Path, description = "taskId"), ("asOf" = Option<String>, Query, description = "RFC 3339 instant"), ("limit" = Option<usize>, Query, description = "executions per page, at most 1000 (the default)"), ("cursor" = Option<String>, Query, description = "the next page (`next` of the previous one)")), responses((status = 200, description = "Retry chain; `next` when more executions follow"), (status = 404, description = "No such task")))]
async fn get_chain(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<Response, ApiError> {
    authorize(&principal, Role::Reader)?;
    let (from, limit) = page_of(&params)?;
    let (task_id, record) = task_record(&state, &raw, params.as_of.as_ref()).await?;
    let from = usize::try_from(from).unwrap_or(usize::MAX);
    Ok(Json(record.chain_page(&task_id, from, limit)).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageParams {
    as_of: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// A page's size and start from its query: `limit` 1..=[`PAGE_EVENTS_MAX`] (default the
/// maximum), `cursor` the number a previous page gave as its next.
fn page_of(params: &PageParams) -> Result<(u64, usize), ApiError> {
    let limit = params.limit.unwrap_or(PAGE_EVENTS_MAX);
    if !(1..=PAGE_EVENTS_MAX).contains(&limit) {
        let mut error = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit: from 1 to {PAGE_EVENTS_MAX}"),
        );
        error.field = Some("limit".into());
        return Err(error);
    }
    let from = match &params.cursor {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            let mut error = ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "cursor: not one this service gave",
            );
            error.field = Some("cursor".into());
            error
        })?,
    };
    Ok((from, limit))
}

#[utoipa::path(get, path = "/v1/tasks/{task_id}/history", params(("task_id" = String, Path, description = "taskId"), ("asOf" = Option<String>, Query, description = "RFC 3339 instant"), ("limit" = Option<usize>, Query, description = "events per page, at most 1000 (the default)"), ("cursor" = Option<String>, Query, description = "the next page (X-Next-Cursor of the previous one)")), responses((status = 200, description = "Stored events in stream order; when more follow, X-Next-Cursor and a Link rel=next header say where"), (status = 404, description = "No such task")))]
async fn get_history(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<Response, ApiError> {
    authorize(&principal, Role::Reader)?;
    let task_id = task_id(&raw)?;
    let as_of = instant("asOf", params.as_of.as_ref())?;
    let (from, limit) = page_of(&params)?;
    let (entries, next) = history_page(state.store.as_ref(), &task_id, as_of, from, limit).await?;
    if entries.is_empty() && from == 0 && next.is_none() {
        return Err(not_found(format!("no task {task_id}")));
    }
    let mut response = Json(entries).into_response();
    if let Some(next) = next {
        let mut link = format!(
            "</v1/tasks/{}/history?cursor={next}&limit={limit}",
            crate::ui::html::enc(task_id.as_str())
        );
        if let Some(as_of) = &params.as_of {
            link.push_str("&asOf=");
            link.push_str(&crate::ui::html::enc(as_of));
        }
        link.push_str(">; rel=\"next\"");
        let headers = response.headers_mut();
        if let Ok(value) = axum::http::HeaderValue::from_str(&link) {
            headers.insert(axum::http::header::LINK, value);
        }
        headers.insert("x-next-cursor", axum::http::HeaderValue::from(next));
    }
    Ok(response)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DlqParams {
    queue: Option<String>,
    category: Option<String>,
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    archived: bool,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/dlq", params(("queue" = Option<String>, Query, description = "queue"), ("category" = Option<String>, Query, description = "error category"), ("since" = Option<String>, Query, description = "failedAt at or after"), ("until" = Option<String>, Query, description = "failedAt before"), ("archived" = Option<bool>, Query, description = "archived executions instead"), ("limit" = Option<usize>, Query, description = "page size"), ("cursor" = Option<String>, Query, description = "next page")), responses((status = 200, description = "A page of the DLQ")))]
async fn get_dlq(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<DlqParams>,
) -> Result<Response, ApiError> {
    authorize(&principal, Role::Reader)?;
    let query = DlqQuery {
        queue: params.queue,
        category: params.category,
        since: instant("since", params.since.as_ref())?,
        until: instant("until", params.until.as_ref())?,
        archived: params.archived,
        limit: params.limit.unwrap_or(50),
        cursor: params.cursor,
    };
    Ok(
        Json(read_models(&state, move |models| query::dlq_page(models, &query)).await?)
            .into_response(),
    )
}

#[utoipa::path(get, path = "/v1/queues/{queue}/stats", params(("queue" = String, Path, description = "queue")), responses((status = 200, description = "Queue statistics")))]
async fn get_stats(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(queue): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&principal, Role::Reader)?;
    let stats = read_models(&state, move |models| {
        query::queue_stats(models, Some(&queue))
    })
    .await?;
    Ok(Json(stats).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    queue: Option<String>,
    at: Option<String>,
    older_than_ms: Option<i64>,
}

#[utoipa::path(get, path = "/v1/stuck", params(("queue" = Option<String>, Query, description = "queue"), ("at" = Option<String>, Query, description = "instant"), ("olderThanMs" = Option<i64>, Query, description = "threshold")), responses((status = 200, description = "Stuck executions")))]
async fn get_stuck(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    authorize(&principal, Role::Reader)?;
    let at = instant("at", params.at.as_ref())?.unwrap_or_else(now);
    let older_than = params.older_than_ms.unwrap_or(30 * 60 * 1000);
    let queue = params.queue;
    let stuck = read_models(&state, move |models| {
        query::stuck(models, at, older_than, queue.as_deref())
    })
    .await?;
    Ok(Json(stuck).into_response())
}

#[utoipa::path(get, path = "/v1/due", params(("queue" = Option<String>, Query, description = "queue"), ("at" = Option<String>, Query, description = "instant")), responses((status = 200, description = "Due retries")))]
async fn get_due(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    authorize(&principal, Role::Reader)?;
    let at = instant("at", params.at.as_ref())?.unwrap_or_else(now);
    let queue = params.queue;
    let due = read_models(&state, move |models| {
        query::due(models, at, queue.as_deref())
    })
    .await?;
    Ok(Json(due).into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OperatorBody {
    reason: Option<String>,
    by: Option<String>,
    at: Option<String>,
    execution_id: Option<String>,
}

/// Submits an operator's `archive` or `retry` of `execution_id` with the body's reason and by.
async fn submit_operator_report(
    state: &AppState,
    principal: &Principal,
    op: Op,
    raw_task: &str,
    execution_id: &str,
    at: Timestamp,
    body: &OperatorBody,
) -> Result<Response, ApiError> {
    let report = operator_report(
        op,
        raw_task,
        execution_id,
        at,
        body.reason.as_deref(),
        body.by.as_deref(),
    );
    let mut report =
        Report::from_value(report).map_err(|error| ApiError::invalid_report(None, error))?;
    report.principal = Some(principal.name.to_string());
    let submitted = state.ledger.submit(report).await?;
    let status = match submitted.outcome {
        Outcome::Accepted => StatusCode::OK,
        Outcome::Rejected(_) => StatusCode::CONFLICT,
    };
    let body = serde_json::json!({
        "outcome": submitted.outcome,
        "duplicate": submitted.duplicate,
        "eventIds": submitted.event_ids,
    });
    Ok((status, Json(body)).into_response())
}

fn operator_body(body: &Bytes) -> Result<OperatorBody, ApiError> {
    if body.is_empty() {
        return Ok(OperatorBody::default());
    }
    serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("not a JSON object of reason/by/at: {error}"),
        )
    })
}

#[utoipa::path(post, path = "/v1/tasks/{task_id}/executions/{execution_id}/archive", params(("task_id" = String, Path, description = "taskId"), ("execution_id" = String, Path, description = "executionId")), request_body(content = String, description = "{\"reason\", \"by\", \"at\"}", content_type = "application/json"), responses((status = 200, description = "Archived"), (status = 409, description = "Refused by the rules (recorded)")))]
async fn post_archive(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path((raw_task, execution_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&principal, Role::Operator)?;
    let body = operator_body(&body)?;
    let at = instant("at", body.at.as_ref())?.unwrap_or_else(now);
    submit_operator_report(
        &state,
        &principal,
        Op::Archive,
        &raw_task,
        &execution_id,
        at,
        &body,
    )
    .await
}

#[utoipa::path(post, path = "/v1/tasks/{task_id}/retry", params(("task_id" = String, Path, description = "taskId")), request_body(content = String, description = "{\"executionId\", \"reason\", \"by\", \"at\"}", content_type = "application/json"), responses((status = 200, description = "Retried"), (status = 409, description = "Refused by the rules (recorded)")))]
async fn post_retry(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw_task): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&principal, Role::Operator)?;
    let body = operator_body(&body)?;
    let at = instant("at", body.at.as_ref())?.unwrap_or_else(now);
    let execution_id = body.execution_id.clone().ok_or_else(|| {
        let mut error = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "executionId (the new execution's UUID) is required",
        );
        error.field = Some("executionId".into());
        error
    })?;
    submit_operator_report(
        &state,
        &principal,
        Op::Retry,
        &raw_task,
        &execution_id,
        at,
        &body,
    )
    .await
}

/// Ready when the read models have caught up with the ledger; reports the lag either way.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "Read models caught up"), (status = 503, description = "Projection lag too high")))]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let head = state.store.head_position();
    let projected = *state.projected.borrow();
    let lag = head.saturating_sub(projected);
    let body = Json(serde_json::json!({"head": head, "projected": projected, "lagEvents": lag}));
    // A lag of a few chunks is normal under load; only a stalled follower is not ready.
    if lag <= READY_LAG_EVENTS_MAX {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// Projection lag beyond which `/readyz` says not ready.
pub const READY_LAG_EVENTS_MAX: u64 = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(error: ApiError) -> (StatusCode, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = futures_bytes(response);
        (
            status,
            serde_json::from_slice(&bytes).expect("a JSON error body"),
        )
    }

    fn futures_bytes(response: Response) -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("the body")
                .to_vec()
        })
    }

    #[test]
    fn an_unavailable_store_is_a_503_without_its_detail() {
        let detail = "connection refused: db-primary.internal:5432";
        let cases = [
            ApiError::from(IngestError::Store(StoreError::Unavailable(detail.into()))),
            ApiError::from(IngestError::Shared(Arc::new(IngestError::Store(
                StoreError::Unavailable(detail.into()),
            )))),
            ApiError::from(taskledger_projections::ProjectionError::Store(
                StoreError::Unavailable(detail.into()),
            )),
        ];
        for error in cases {
            let (status, body) = body_of(error);
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body["error"]["code"], "store_unavailable");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("unavailable"), "{message}");
            assert!(!message.contains("db-primary"), "{message}");
        }
        // Any other store failure stays a 500 without detail.
        let (status, body) = body_of(ApiError::from(IngestError::Store(StoreError::Io(
            detail.into(),
        ))));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("db-primary"));
    }
}
