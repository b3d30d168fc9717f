//! The pages: each handler asks the read models one question and renders the answer; lists can
//! also be exported (`format=csv` / `format=json`) with the same filters.

use super::html::{self, esc, href, status, time, Nav};
use super::{check_post, error_page, local_target, refused, respond, Form, Ui, Viewer};
use crate::api::{ApiError, Role};
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;
use taskledger_domain::{operator_report, ExecutionId, Op, Outcome, Report, TaskId, Timestamp};
use taskledger_projections::models::{DlqItem, QueueStats};
use taskledger_projections::query::{self, DlqQuery};
use taskledger_projections::{history, load_task};

type Params = HashMap<String, String>;

/// Items of one DLQ screen unless the link says otherwise.
const DLQ_PAGE_ITEMS: usize = 50;
/// Items one export holds at most (it follows the listing's cursor page by page).
const EXPORT_ITEMS_MAX: usize = 10_000;
/// Seconds between reloads of a list page while auto-refresh is on.
const REFRESH_SECONDS: u32 = 15;

fn now_ms() -> i64 {
    taskledger_ingest::now().millis()
}

fn param<'a>(params: &'a Params, name: &str) -> &'a str {
    params.get(name).map(|v| v.trim()).unwrap_or("")
}

fn instant(params: &Params, name: &str) -> Result<Option<Timestamp>, ApiError> {
    let text = param(params, name);
    if text.is_empty() {
        return Ok(None);
    }
    Timestamp::parse(text).map(Some).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("{name}: {text:?} is not an RFC 3339 instant (e.g. 2026-01-21T10:00:00Z)"),
        )
    })
}

/// The viewer who may read, or the response that refuses them.
fn reader(ui: &Ui, headers: &HeaderMap, uri: &OriginalUri) -> Result<Viewer, Box<Response>> {
    let target = uri
        .0
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/ui/".into());
    ui.reader(headers)
        .map_err(|refusal| Box::new(refused(refusal, &target)))
}

/// A listing page (DLQ, stuck, due): its body, the CSV/JSON export the query asked for
/// instead, or the error page.
/// Builds a page that reads the models on the blocking pool (a scan never holds an async
/// worker thread), handing the viewer back.
async fn off_thread<T: Send + 'static>(
    ui: &Arc<Ui>,
    viewer: Viewer,
    build: impl FnOnce(&Ui, &Viewer) -> T + Send + 'static,
) -> (Viewer, Result<T, ApiError>) {
    let ui = ui.clone();
    let shared = Arc::new(viewer);
    let inside = shared.clone();
    let built = tokio::task::spawn_blocking(move || build(&ui, &inside))
        .await
        .map_err(ApiError::internal);
    let viewer = Arc::try_unwrap(shared).unwrap_or_else(|shared| (*shared).clone());
    (viewer, built)
}

fn listing(
    viewer: &Viewer,
    title: &str,
    nav: Nav,
    body: Result<Result<String, Response>, ApiError>,
) -> Response {
    match body {
        Ok(Ok(body)) => show(viewer, title, nav, true, &body),
        Ok(Err(export)) => export,
        Err(error) => error_page(Some(viewer), error),
    }
}

fn show(viewer: &Viewer, title: &str, nav: Nav, refresh: bool, body: &str) -> Response {
    respond(
        Some(viewer),
        StatusCode::OK,
        html::page(title, nav, viewer, refresh.then_some(REFRESH_SECONDS), body),
    )
}

/// The outcome of one operator action on one execution, shown on the next page.
#[derive(Debug, Clone)]
pub struct ActionOutcome {
    action: &'static str,
    task_id: String,
    execution_id: String,
    new_execution_id: Option<String>,
    accepted: bool,
    detail: String,
}

fn outcomes_html(outcomes: &[ActionOutcome]) -> String {
    let accepted = outcomes.iter().filter(|o| o.accepted).count();
    let mut out = format!(
        "<section class=\"outcomes\" role=\"status\" aria-live=\"polite\"><h2>Outcome: {accepted} of {} accepted</h2><ul>",
        outcomes.len()
    );
    for o in outcomes {
        let mark = if o.accepted {
            status("completed")
        } else {
            status("rejected")
        };
        let new = o
            .new_execution_id
            .as_ref()
            .map(|id| format!(" → new execution <code>{}</code>", esc(id)))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<li class=\"outcome\" data-accepted=\"{}\">{mark} {} of <a href=\"{}\">{}</a> <code>{}</code>{new}: {}</li>",
            o.accepted,
            o.action,
            esc(&html::task_href(&o.task_id)),
            esc(&o.task_id),
            esc(&o.execution_id),
            esc(&o.detail)
        );
    }
    out.push_str("</ul></section>");
    out
}

fn flash(ui: &Ui, viewer: &Viewer) -> String {
    ui.take_flash(viewer)
        .map(|outcomes| outcomes_html(&outcomes))
        .unwrap_or_default()
}

fn export(format: &str, name: &str, json: serde_json::Value, csv: String) -> Option<Response> {
    let (content_type, body, extension) = match format {
        "json" => (
            "application/json",
            serde_json::to_string_pretty(&json).unwrap_or_default(),
            "json",
        ),
        "csv" => ("text/csv; charset=utf-8", csv, "csv"),
        _ => return None,
    };
    Some(
        (
            [
                (header::CONTENT_TYPE, content_type.to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"taskledger-{name}.{extension}\""),
                ),
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
            body,
        )
            .into_response(),
    )
}

fn csv_row(out: &mut String, fields: &[String]) {
    let row: Vec<String> = fields.iter().map(|f| html::csv_field(f)).collect();
    out.push_str(&row.join(","));
    out.push('\n');
}

fn opt<T: ToString>(value: &Option<T>) -> String {
    value.as_ref().map(ToString::to_string).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// /ui/ — search and the queues at a glance

pub async fn home(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    uri: OriginalUri,
    Query(params): Query<Params>,
) -> Response {
    let viewer = match reader(&ui, &headers, &uri) {
        Ok(viewer) => viewer,
        Err(response) => return *response,
    };
    match home_body(&ui, &viewer, &params).await {
        Ok(Ok(body)) => show(&viewer, "Search", Nav::Search, true, &body),
        Ok(Err(redirect)) => redirect,
        Err(error) => error_page(Some(&viewer), error),
    }
}

async fn home_body(
    ui: &Ui,
    viewer: &Viewer,
    params: &Params,
) -> Result<Result<String, Response>, ApiError> {
    let q = param(params, "q");
    let now = now_ms();
    let mut body = flash(ui, viewer);
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/ui/\" class=\"search\" role=\"search\">\
<label for=\"q\">taskId (or its beginning) or executionId</label>\
<input id=\"q\" name=\"q\" value=\"{}\" placeholder=\"partner_tasks:SATLOC:695d\" data-search autofocus>\
<button type=\"submit\">Search</button></form>",
        esc(q)
    );
    if !q.is_empty() {
        if let Ok(execution_id) = ExecutionId::parse(q) {
            let models = ui.api.models.clone();
            let found = tokio::task::spawn_blocking(move || {
                query::task_of_execution(models.as_ref(), execution_id)
            })
            .await
            .map_err(ApiError::internal)??;
            match found {
                Some(task_id) => {
                    let target =
                        format!("{}#x-{}", html::task_href(task_id.as_str()), execution_id.0);
                    return Ok(Err(axum::response::Redirect::to(&target).into_response()));
                }
                None => {
                    let _ = write!(
                        body,
                        "<p class=\"empty\">No execution <code>{}</code> in the read models.</p>",
                        esc(q)
                    );
                }
            }
        } else {
            let (models, prefix) = (ui.api.models.clone(), q.to_owned());
            let found = tokio::task::spawn_blocking(move || {
                query::tasks_with_prefix(models.as_ref(), &prefix, query::SEARCH_ITEMS_MAX)
            })
            .await
            .map_err(ApiError::internal)??;
            if found.is_empty() {
                let _ = write!(
                    body,
                    "<p class=\"empty\">No task whose taskId starts with <code>{}</code>.</p>",
                    esc(q)
                );
            } else {
                let more = if found.len() == query::SEARCH_ITEMS_MAX {
                    " (the first ones; type more of the taskId to narrow)"
                } else {
                    ""
                };
                let _ = write!(
                    body,
                    "<h2>{} task(s) starting with <code>{}</code>{more}</h2><table class=\"list\"><thead><tr><th>taskId</th><th>status</th><th>queue</th><th>executions</th><th>retries</th><th>last error</th><th>updated</th></tr></thead><tbody>",
                    found.len(),
                    esc(q)
                );
                for task in &found {
                    let _ = write!(
                        body,
                        "<tr data-row tabindex=\"-1\"><td><a data-primary href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&html::task_href(task.task_id.as_str())),
                        esc(task.task_id.as_str()),
                        status(task.status.map_or("—", |s| s.as_str())),
                        esc(task.queue.as_deref().unwrap_or("—")),
                        task.executions,
                        task.retry_count,
                        task.max_retries,
                        esc(&task
                            .last_error
                            .as_ref()
                            .map(|e| format!("{}: {}", e.category, e.message))
                            .unwrap_or_default()),
                        time(task.updated_at, now)
                    );
                }
                body.push_str("</tbody></table>");
            }
        }
    }
    let models = ui.api.models.clone();
    let stats = tokio::task::spawn_blocking(move || query::queue_stats(models.as_ref(), None))
        .await
        .map_err(ApiError::internal)??;
    let (queues, next) = queue_page(stats.queues, "");
    body.push_str("<h2>Queues</h2>");
    body.push_str(&queue_table(&queues));
    body.push_str(&next_queues_link(next));
    Ok(Ok(body))
}

/// Queues shown on one page: the page stays bounded however many queue names reporters used.
pub const QUEUES_SHOWN_MAX: usize = 200;

/// The queues of one page, by name, after `after`; and the name the next page starts after.
fn queue_page(
    queues: BTreeMap<String, QueueStats>,
    after: &str,
) -> (BTreeMap<String, QueueStats>, Option<String>) {
    let mut page: BTreeMap<String, QueueStats> = queues
        .into_iter()
        .filter(|(name, _)| after.is_empty() || name.as_str() > after)
        .take(QUEUES_SHOWN_MAX + 1)
        .collect();
    let next = (page.len() > QUEUES_SHOWN_MAX)
        .then(|| page.pop_last().map(|_| ()))
        .flatten()
        .and_then(|()| page.last_key_value().map(|(name, _)| name.clone()));
    (page, next)
}

fn next_queues_link(next: Option<String>) -> String {
    next.map(|after| {
        format!(
            "<p class=\"pager\"><a id=\"next-queues\" href=\"{}\">More queues</a></p>",
            esc(&href("/ui/queues", &[("after", &after)]))
        )
    })
    .unwrap_or_default()
}

fn queue_table(queues: &BTreeMap<String, QueueStats>) -> String {
    if queues.is_empty() {
        return "<p class=\"empty\">No queue has reported yet.</p>".into();
    }
    let mut out = String::from(
        "<table class=\"list numbers\"><thead><tr><th>queue</th><th>◷ queued</th><th>▶ processing</th><th>✔ completed</th><th>⚠ failed</th><th>✖ dlq</th><th>▣ archived</th><th>⊘ rejected reports</th></tr></thead><tbody>",
    );
    for (queue, s) in queues {
        let rejected: u64 = s.rejected.values().sum();
        let _ = write!(
            out,
            "<tr data-row tabindex=\"-1\"><td><a data-primary href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            esc(&href("/ui/queues", &[("queue", queue)])),
            esc(queue),
            s.queued,
            s.processing,
            s.completed,
            s.failed,
            esc(&href("/ui/dlq", &[("queue", queue)])),
            s.dlq,
            s.archived,
            rejected
        );
    }
    out.push_str("</tbody></table>");
    out
}

// ---------------------------------------------------------------------------------------------
// /ui/tasks/{taskId} — timeline, retry chain, as of any instant

pub async fn task(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    uri: OriginalUri,
    Path(raw): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    let viewer = match reader(&ui, &headers, &uri) {
        Ok(viewer) => viewer,
        Err(response) => return *response,
    };
    match task_body(&ui, &viewer, &raw, &params).await {
        Ok((title, body)) => show(&viewer, &title, Nav::None, false, &body),
        Err(error) => error_page(Some(&viewer), error),
    }
}

fn event_at(data: &serde_json::Value) -> Option<Timestamp> {
    data.get("at")
        .and_then(|v| v.as_str())
        .and_then(Timestamp::parse)
}

fn text_of<'a>(data: &'a serde_json::Value, field: &str) -> Option<&'a str> {
    data.get(field).and_then(|v| v.as_str())
}

/// What one event says, in a line.
fn event_summary(event_type: &str, data: &serde_json::Value) -> (String, String) {
    let field = |name: &str| text_of(data, name).map(esc).unwrap_or_default();
    match event_type {
        "ExecutionEnqueued" => (
            status("queued"),
            format!(
                "enqueued on <code>{}</code>, maxRetries {}{}",
                field("queue"),
                data.get("maxRetries")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                data.get("manualRetry")
                    .map(|m| format!(
                        " — manual retry by {} ({})",
                        text_of(m, "by").map(esc).unwrap_or_else(|| "?".into()),
                        text_of(m, "reason").map(esc).unwrap_or_default()
                    ))
                    .unwrap_or_default()
            ),
        ),
        "ExecutionClaimed" => (
            status("processing"),
            format!(
                "claimed by <code>{}</code>{}{}",
                field("worker"),
                data.get("attempt")
                    .map(|a| format!(", attempt {a}"))
                    .unwrap_or_default(),
                data.get("reclaim")
                    .map(|r| format!(", reclaim ({})", esc(text_of(r, "cause").unwrap_or("?"))))
                    .unwrap_or_default()
            ),
        ),
        "ExecutionSucceeded" => (
            status("completed"),
            if data.get("unclaimedSuccess").and_then(|v| v.as_bool()) == Some(true) {
                "succeeded without a claim (unclaimedSuccess)".into()
            } else {
                "succeeded".into()
            },
        ),
        "ExecutionFailed" => {
            let next = text_of(data, "nextRetryAt")
                .map(|t| format!(", next retry {}", esc(t)))
                .unwrap_or_default();
            (
                status(text_of(data, "status").unwrap_or("failed")),
                format!(
                    "<span class=\"category\">{}</span> {}{} (retryCount {})",
                    field("category"),
                    field("errorMessage"),
                    next,
                    data.get("retryCount")
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                ),
            )
        }
        "ExecutionArchived" => (
            status("archived"),
            format!(
                "archived from {} by {}: {}",
                field("fromStatus"),
                text_of(data, "by").map(esc).unwrap_or_else(|| "—".into()),
                text_of(data, "reason")
                    .map(esc)
                    .unwrap_or_else(|| "—".into())
            ),
        ),
        "ReportRejected" => {
            let reason = text_of(data, "reason").unwrap_or("?");
            let detail = match reason {
                "duplicateEnqueue" => format!(
                    " (active execution <code>{}</code>)",
                    field("activeExecutionId")
                ),
                "notClaimable" | "invalidTransition" => {
                    format!(" (status {})", field("status"))
                }
                _ => String::new(),
            };
            let worker = text_of(data, "worker")
                .map(|w| format!(" from <code>{}</code>", esc(w)))
                .unwrap_or_default();
            (
                status("rejected"),
                format!(
                    "<strong>{}</strong> rejected: <span class=\"reason\">{}</span>{detail}{worker}",
                    field("op"),
                    esc(reason)
                ),
            )
        }
        other => (status("event"), esc(other)),
    }
}

async fn task_body(
    ui: &Ui,
    viewer: &Viewer,
    raw: &str,
    params: &Params,
) -> Result<(String, String), ApiError> {
    let task_id = TaskId::parse(raw).map_err(|problem| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_task_id",
            format!("taskId {problem}"),
        )
    })?;
    let as_of = instant(params, "asOf")?;
    let store = ui.api.store.as_ref();
    let entries = history(store, &task_id, None).await?;
    if entries.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no task {task_id}"),
        ));
    }
    let record = load_task(store, &task_id, as_of).await?;
    let now = now_ms();
    // The instants the as-of control steps through: each event's, in time order.
    let mut instants: Vec<Timestamp> = entries.iter().filter_map(|e| event_at(&e.data)).collect();
    instants.sort();
    instants.dedup();
    // The slider steps through the latest instants only: the page stays bounded however many
    // reports the task received.
    if instants.len() > crate::PAGE_EVENTS_MAX {
        instants.drain(..instants.len() - crate::PAGE_EVENTS_MAX);
    }
    let shown = entries
        .iter()
        .filter(|e| as_of.is_none_or(|t| event_at(&e.data).is_none_or(|at| at <= t)))
        .count();
    let step = match as_of {
        None => instants.len().saturating_sub(1),
        Some(t) => instants.iter().rposition(|i| *i <= t).unwrap_or(0),
    };
    let mut body = flash(ui, viewer);
    let self_path = html::task_href(task_id.as_str());

    // The as-of control: a slider over the task's event instants (script), and a plain field.
    let _ = write!(
        body,
        "<form method=\"get\" action=\"{path}\" class=\"asof\" id=\"asof-form\">\
<label for=\"asof-step\">As of</label>\
<input type=\"range\" id=\"asof-step\" min=\"0\" max=\"{max}\" value=\"{step}\" step=\"1\" data-instants=\"{instants}\" aria-describedby=\"asof-label\">\
<output id=\"asof-label\">{label}</output>\
<input type=\"text\" name=\"asOf\" id=\"asof\" value=\"{value}\" placeholder=\"RFC 3339 instant\" aria-label=\"As-of instant (UTC)\">\
<button type=\"submit\">Show</button> <a href=\"{path}\">Latest</a></form>",
        path = esc(&self_path),
        max = instants.len().saturating_sub(1),
        instants = esc(&instants
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")),
        label = esc(&instants.get(step).map(ToString::to_string).unwrap_or_default()),
        value = esc(&as_of.map(|t| t.to_string()).unwrap_or_default()),
    );
    if let Some(t) = as_of {
        let _ = write!(
            body,
            "<p class=\"banner\" role=\"note\" id=\"asof-banner\">As of {} — {shown} of {} events; later events are hidden. <a href=\"{}\">Show the latest state</a></p>",
            time(Some(t), now),
            entries.len(),
            esc(&self_path)
        );
    }

    // Summary.
    match &record {
        None => body.push_str("<p class=\"empty\" id=\"task-status\">Nothing had been reported about this task yet at that instant.</p>"),
        Some(record) => {
            let view = record.status_view(&task_id);
            let rejected: Vec<String> = view
                .rejected
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            let _ = write!(
                body,
                "<dl class=\"summary\"><dt>status</dt><dd id=\"task-status\">{}</dd><dt>latest execution</dt><dd><code>{}</code></dd><dt>queue</dt><dd>{}</dd><dt>executions</dt><dd>{}</dd><dt>retries (latest)</dt><dd>{}/{}</dd><dt>last error</dt><dd>{}</dd><dt>next retry</dt><dd>{}</dd><dt>flags</dt><dd>{}</dd><dt>rejected reports</dt><dd>{}</dd><dt>updated</dt><dd>{}</dd></dl>",
                status(view.status.map_or("—", |s| s.as_str())),
                esc(&opt(&view.execution_id.map(|x| x.0))),
                esc(view.queue.as_deref().unwrap_or("—")),
                view.executions,
                view.retry_count,
                view.max_retries,
                esc(&view.last_error.as_ref().map(|e| format!("{}: {}", e.category, e.message)).unwrap_or_else(|| "—".into())),
                time(view.next_retry_at, now),
                esc(&if view.flags.is_empty() { "—".into() } else { view.flags.join(", ") }),
                esc(&if rejected.is_empty() { "none".into() } else { rejected.join(", ") }),
                time(view.updated_at, now),
            );
            // Operator actions, on the present state only.
            if as_of.is_none() && viewer.can(Role::Operator) {
                let chain = record.chain_view(&task_id);
                let active = chain.executions.iter().any(|x| {
                    matches!(x.status.as_str(), "queued" | "processing")
                });
                let mut forms = String::new();
                for x in &chain.executions {
                    if matches!(x.status.as_str(), "dlq" | "failed") {
                        let _ = write!(
                            forms,
                            "<form method=\"post\" action=\"/ui/actions\" class=\"inline\">{}<input type=\"hidden\" name=\"action\" value=\"archive\"><input type=\"hidden\" name=\"sel\" value=\"{}|{}\"><input type=\"hidden\" name=\"back\" value=\"{}\"><button type=\"submit\">▣ Archive execution {}…</button></form> ",
                            html::csrf_field(viewer),
                            esc(task_id.as_str()),
                            x.execution_id.0,
                            esc(&self_path),
                            &x.execution_id.0.to_string()[..8]
                        );
                    }
                }
                if !active {
                    if let Some(latest) = chain.executions.last() {
                        let _ = write!(
                            forms,
                            "<form method=\"post\" action=\"/ui/actions\" class=\"inline\">{}<input type=\"hidden\" name=\"action\" value=\"retry\"><input type=\"hidden\" name=\"sel\" value=\"{}|{}\"><input type=\"hidden\" name=\"back\" value=\"{}\"><button type=\"submit\">↻ Retry task</button></form>",
                            html::csrf_field(viewer),
                            esc(task_id.as_str()),
                            latest.execution_id.0,
                            esc(&self_path)
                        );
                    }
                }
                if !forms.is_empty() {
                    let _ = write!(body, "<div class=\"actions\">{forms}</div>");
                }
            }
        }
    }

    // Retry chain: executions → attempts (the latest page of a very long chain).
    body.push_str("<h2>Retry chain</h2>");
    if let Some(record) = &record {
        let from = record
            .executions
            .len()
            .saturating_sub(crate::PAGE_EVENTS_MAX);
        let chain = record.chain_page(&task_id, from, crate::PAGE_EVENTS_MAX);
        if from > 0 {
            let _ = write!(
                body,
                "<p class=\"banner\" role=\"note\">The latest {} of {} executions; the whole chain: <code>/v1/tasks/…/chain</code>.</p>",
                crate::PAGE_EVENTS_MAX,
                record.executions.len()
            );
        }
        for (n, x) in chain.executions.iter().enumerate() {
            let n = n + from;
            let manual = x
                .manual_retry
                .as_ref()
                .and_then(|m| serde_json::to_value(m).ok())
                .map(|m| {
                    format!(
                        " · manual retry by {} ({})",
                        esc(text_of(&m, "by").unwrap_or("?")),
                        esc(text_of(&m, "reason").unwrap_or(""))
                    )
                })
                .unwrap_or_default();
            let archived = x
                .archived_at
                .map(|at| {
                    format!(
                        " · archived {} by {}: {}",
                        time(Some(at), now),
                        esc(x.archived_by.as_deref().unwrap_or("—")),
                        esc(x.archived_reason.as_deref().unwrap_or("—"))
                    )
                })
                .unwrap_or_default();
            let _ = write!(
                body,
                "<section class=\"execution\" id=\"x-{id}\"><h3>Execution {num} <code>{id}</code> {st}</h3>\
<p class=\"meta\">queue <code>{queue}</code> · enqueued {enq} · retries {rc}/{mr}{manual}{archived}</p>",
                id = x.execution_id.0,
                num = n + 1,
                st = status(x.status.as_str()),
                queue = esc(&x.queue),
                enq = time(Some(x.enqueued_at), now),
                rc = x.retry_count,
                mr = x.max_retries,
            );
            if x.attempts_omitted > 0 {
                let _ = write!(
                    body,
                    "<p class=\"meta\">{} earlier attempt(s) not shown.</p>",
                    x.attempts_omitted
                );
            }
            if x.attempts.is_empty() {
                body.push_str("<p class=\"empty\">No attempt yet.</p>");
            } else {
                body.push_str("<table class=\"list attempts\"><thead><tr><th>#</th><th>worker</th><th>claimed</th><th>outcome</th><th>ended</th><th>duration</th><th>error</th><th>next retry</th></tr></thead><tbody>");
                for (i, a) in x.attempts.iter().enumerate() {
                    let i = i + x.attempts_omitted;
                    let backoff = a
                        .backoff_ms
                        .map(|ms| format!(" (backoff {})", html::duration(Some(ms as i64))))
                        .unwrap_or_default();
                    let _ = write!(
                        body,
                        "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
                        i + 1,
                        esc(a.worker.as_deref().unwrap_or("—")),
                        time(a.claimed_at, now),
                        status(a.outcome.as_str()),
                        time(a.ended_at, now),
                        html::duration(a.duration_ms),
                        esc(&a.error.as_ref().map(|e| format!("{}: {}", e.category, e.message)).unwrap_or_else(|| "—".into())),
                        time(a.next_retry_at, now),
                        backoff
                    );
                }
                body.push_str("</tbody></table>");
            }
            body.push_str("</section>");
        }
    }

    // Timeline: every event, rejections included, raw JSON on demand; the latest page of them
    // (`before` pages back to older events).
    let before = param(params, "before").parse::<u64>().ok();
    let visible: Vec<&taskledger_projections::HistoryEntry> = entries
        .iter()
        .filter(|e| before.is_none_or(|b| e.version < b))
        .filter(|e| as_of.is_none_or(|t| event_at(&e.data).is_none_or(|at| at <= t)))
        .collect();
    let skipped = visible.len().saturating_sub(crate::PAGE_EVENTS_MAX);
    let page = &visible[skipped..];
    let _ = write!(
        body,
        "<h2>Timeline <span class=\"count\">({shown} event(s))</span></h2>"
    );
    let as_of_text = as_of.map(|t| t.to_string()).unwrap_or_default();
    if before.is_some() {
        let _ = write!(
            body,
            "<p class=\"pager\"><a id=\"newer-events\" href=\"{}\">Latest events</a></p>",
            esc(&html::href(&self_path, &[("asOf", &as_of_text)]))
        );
    }
    body.push_str("<table class=\"list timeline\"><thead><tr><th>v</th><th>at</th><th>event</th><th>execution</th><th>what</th></tr></thead><tbody>");
    let first_at = instants.first().copied();
    for entry in page.iter().copied() {
        let at = event_at(&entry.data);
        let since_first = at
            .zip(first_at)
            .map(|(at, first)| {
                format!(
                    "<span class=\"since\">+{}</span>",
                    html::duration(Some(at.millis() - first.millis()))
                )
            })
            .unwrap_or_default();
        let (badge, mut what) = event_summary(&entry.event_type, &entry.data);
        if let Some(principal) = text_of(&entry.data, "principal") {
            let _ = write!(
                what,
                " <span class=\"principal\">· sent by <code>{}</code></span>",
                esc(principal)
            );
        }
        let execution = text_of(&entry.data, "executionId").unwrap_or("");
        let raw = serde_json::to_string_pretty(&serde_json::json!({
            "position": entry.position,
            "version": entry.version,
            "eventId": entry.event_id,
            "type": entry.event_type,
            "recordedAt": entry.recorded_at,
            "data": entry.data,
        }))
        .unwrap_or_default();
        let _ = write!(
            body,
            "<tr data-row tabindex=\"-1\" class=\"ev ev-{ty}\" data-type=\"{ty}\"><td>{v}</td><td>{at}{since_first}</td><td>{badge} <span class=\"type\">{ty}</span></td><td><a href=\"#x-{x}\"><code>{xs}</code></a></td><td>{what}<details><summary>raw JSON</summary><pre>{raw}</pre></details></td></tr>",
            ty = esc(&entry.event_type),
            v = entry.version,
            at = time(at, now),
            x = esc(execution),
            xs = esc(execution.get(..8).unwrap_or(execution)),
            raw = esc(&raw),
        );
    }
    body.push_str("</tbody></table>");
    if skipped > 0 {
        let oldest = page.first().map_or(0, |e| e.version);
        let _ = write!(
            body,
            "<p class=\"pager\"><a id=\"older-events\" href=\"{}\">Older events ({skipped})</a></p>",
            esc(&html::href(
                &self_path,
                &[("asOf", &as_of_text), ("before", &oldest.to_string())]
            ))
        );
    }
    Ok((format!("Task {task_id}"), body))
}

// ---------------------------------------------------------------------------------------------
// /ui/dlq — filters, cursor paging, select + archive / retry, the archived view

pub async fn dlq(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    uri: OriginalUri,
    Query(params): Query<Params>,
) -> Response {
    let viewer = match reader(&ui, &headers, &uri) {
        Ok(viewer) => viewer,
        Err(response) => return *response,
    };
    let title = if param(&params, "archived") == "1" {
        "Archived executions"
    } else {
        "Dead-letter queue"
    };
    let (viewer, body) = off_thread(&ui, viewer, move |ui, viewer| {
        dlq_body(ui, viewer, &params, &uri)
    })
    .await;
    listing(&viewer, title, Nav::Dlq, body.and_then(|body| body))
}

fn dlq_query(params: &Params) -> Result<DlqQuery, ApiError> {
    let text_or_none = |name: &str| Some(param(params, name).to_owned()).filter(|v| !v.is_empty());
    let limit = match param(params, "limit") {
        "" => DLQ_PAGE_ITEMS,
        text => text.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "limit: not a number",
            )
        })?,
    };
    Ok(DlqQuery {
        queue: text_or_none("queue"),
        category: text_or_none("category"),
        since: instant(params, "since")?,
        until: instant(params, "until")?,
        archived: param(params, "archived") == "1",
        limit,
        cursor: text_or_none("cursor"),
    })
}

fn dlq_body(
    ui: &Ui,
    viewer: &Viewer,
    params: &Params,
    uri: &OriginalUri,
) -> Result<Result<String, Response>, ApiError> {
    let query = dlq_query(params)?;
    let text = param(params, "text");
    let models = ui.api.models.as_ref();
    let filters: Vec<(&str, &str)> = [
        "queue", "category", "since", "until", "text", "archived", "limit",
    ]
    .into_iter()
    .map(|name| (name, param(params, name)))
    .collect();
    let format = param(params, "format");
    if !format.is_empty() {
        // The whole filtered list from the cursor on, page by page, up to the export bound.
        let mut items: Vec<DlqItem> = Vec::new();
        let mut page_query = DlqQuery {
            limit: query::PAGE_ITEMS_MAX,
            ..query.clone()
        };
        let next = loop {
            let page = query::dlq_page_matching(models, &page_query, Some(text))?;
            items.extend(page.items);
            let next = page.next;
            match &next {
                Some(cursor) if items.len() < EXPORT_ITEMS_MAX => {
                    page_query.cursor = Some(cursor.clone())
                }
                _ => break next,
            }
        };
        items.truncate(EXPORT_ITEMS_MAX);
        let mut csv = String::new();
        csv_row(
            &mut csv,
            &[
                "taskId",
                "executionId",
                "queue",
                "errorCategory",
                "errorMessage",
                "failedAt",
                "retryCount",
                "archivedAt",
                "archivedBy",
                "archivedReason",
            ]
            .map(String::from),
        );
        for i in &items {
            csv_row(
                &mut csv,
                &[
                    i.task_id.as_str().to_owned(),
                    i.execution_id.0.to_string(),
                    i.queue.clone(),
                    opt(&i.error_category),
                    opt(&i.error_message),
                    opt(&i.failed_at),
                    i.retry_count.to_string(),
                    opt(&i.archived_at),
                    opt(&i.archived_by),
                    opt(&i.archived_reason),
                ],
            );
        }
        let json = serde_json::json!({"items": items, "next": next});
        if let Some(response) = export(format, "dlq", json, csv) {
            return Ok(Err(response));
        }
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "format: csv or json",
        ));
    }
    let page = query::dlq_page_matching(models, &query, Some(text))?;
    let now = now_ms();
    let stats = query::queue_stats(models, None)?;
    let mut body = flash(ui, viewer);

    // Views and filters: a GET form, so every filter is a deep link.
    let archived = query.archived;
    // The size of the listing before the other filters, from the queue statistics (no count
    // of the index).
    let total: u64 = stats
        .queues
        .iter()
        .filter(|(name, _)| query.queue.as_deref().is_none_or(|q| q == name.as_str()))
        .map(|(_, s)| if archived { s.archived } else { s.dlq })
        .sum();
    let _ = write!(
        body,
        "<p class=\"meta\" id=\"dlq-total\">{total} execution(s) {} {}.</p>",
        if archived {
            "archived in"
        } else {
            "in the DLQ of"
        },
        query
            .queue
            .as_deref()
            .map(|q| format!("queue <code>{}</code>", esc(q)))
            .unwrap_or_else(|| "all queues".into())
    );
    let _ = write!(
        body,
        "<p class=\"views\"><a href=\"{}\"{}>✖ In the DLQ</a> · <a href=\"{}\"{}>▣ Archived</a></p>",
        esc(&href("/ui/dlq", &[("queue", param(params, "queue"))])),
        if archived { "" } else { " aria-current=\"true\"" },
        esc(&href("/ui/dlq", &[("queue", param(params, "queue")), ("archived", "1")])),
        if archived { " aria-current=\"true\"" } else { "" },
    );
    let mut queue_options = String::from("<option value=\"\">all queues</option>");
    for queue in stats.queues.keys() {
        let _ = write!(
            queue_options,
            "<option{}>{}</option>",
            if query.queue.as_deref() == Some(queue) {
                " selected"
            } else {
                ""
            },
            esc(queue)
        );
    }
    let mut categories: Vec<&String> = stats
        .queues
        .values()
        .flat_map(|s| s.failures_by_category.keys())
        .collect();
    categories.sort();
    categories.dedup();
    let mut category_options = String::from("<option value=\"\">all categories</option>");
    for category in categories {
        let _ = write!(
            category_options,
            "<option{}>{}</option>",
            if query.category.as_deref() == Some(category) {
                " selected"
            } else {
                ""
            },
            esc(category)
        );
    }
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/ui/dlq\" class=\"filters\" id=\"dlq-filters\">\
<label>queue <select name=\"queue\">{queue_options}</select></label>\
<label>category <select name=\"category\">{category_options}</select></label>\
<label>{what} since <input name=\"since\" value=\"{since}\" placeholder=\"2026-01-21T00:00:00Z\" size=\"22\"></label>\
<label>before <input name=\"until\" value=\"{until}\" placeholder=\"2026-01-22T00:00:00Z\" size=\"22\"></label>\
<label>error text <input name=\"text\" value=\"{text}\" placeholder=\"ETIMEDOUT\"></label>\
{archived_field}<button type=\"submit\">Filter</button> <a href=\"{clear}\">Clear</a></form>",
        what = if archived { "archived" } else { "failed" },
        since = esc(param(params, "since")),
        until = esc(param(params, "until")),
        text = esc(text),
        archived_field = if archived { "<input type=\"hidden\" name=\"archived\" value=\"1\">" } else { "" },
        clear = if archived { "/ui/dlq?archived=1" } else { "/ui/dlq" },
    );

    if page.items.is_empty() {
        body.push_str("<p class=\"empty\" id=\"dlq-empty\">No execution matches these filters on this page.</p>");
    } else {
        let operator = viewer.can(Role::Operator);
        let back = uri
            .0
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/ui/dlq".into());
        if operator {
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/ui/actions\" id=\"dlq-actions\">{}<input type=\"hidden\" name=\"back\" value=\"{}\">",
                html::csrf_field(viewer),
                esc(&back)
            );
        }
        let _ = write!(
            body,
            "<table class=\"list\" id=\"dlq-table\"><thead><tr>{}<th>taskId</th><th>execution</th><th>queue</th><th>category</th><th>error</th><th>failed</th><th>retries</th>{}</tr></thead><tbody>",
            if operator { "<th><span class=\"sr\">select</span></th>" } else { "" },
            if archived { "<th>archived</th><th>by</th><th>reason</th>" } else { "" }
        );
        for item in &page.items {
            let select = if operator {
                format!(
                    "<td><input type=\"checkbox\" name=\"sel\" value=\"{}|{}\" aria-label=\"select {}\"></td>",
                    esc(item.task_id.as_str()),
                    item.execution_id.0,
                    esc(item.task_id.as_str())
                )
            } else {
                String::new()
            };
            let archived_cells = if archived {
                format!(
                    "<td>{}</td><td>{}</td><td>{}</td>",
                    time(item.archived_at, now),
                    esc(item.archived_by.as_deref().unwrap_or("—")),
                    esc(item.archived_reason.as_deref().unwrap_or("—"))
                )
            } else {
                String::new()
            };
            let _ = write!(
                body,
                "<tr data-row tabindex=\"-1\">{select}<td><a data-primary href=\"{}\">{}</a></td><td><code>{}</code></td><td>{}</td><td><span class=\"category\">{}</span></td><td class=\"message\">{}</td><td>{}</td><td>{}</td>{archived_cells}</tr>",
                esc(&format!("{}#x-{}", html::task_href(item.task_id.as_str()), item.execution_id.0)),
                esc(item.task_id.as_str()),
                item.execution_id.0,
                esc(&item.queue),
                esc(item.error_category.as_deref().unwrap_or("—")),
                esc(item.error_message.as_deref().unwrap_or("—")),
                time(item.failed_at, now),
                item.retry_count,
            );
        }
        body.push_str("</tbody></table>");
        if operator {
            body.push_str("<div class=\"actions\"><label>reason <input name=\"reason\" placeholder=\"non-recoverable\"></label> <label>by <input name=\"by\" placeholder=\"ops@example\"></label> ");
            if !archived {
                body.push_str("<button type=\"submit\" name=\"action\" value=\"archive\" id=\"archive-selected\">▣ Archive selected…</button> ");
            }
            body.push_str("<button type=\"submit\" name=\"action\" value=\"retry\" id=\"retry-selected\">↻ Retry selected</button></div></form>");
        }
    }
    // Cursor paging on the index: each page starts where the last one ended.
    body.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
    if query.cursor.is_some() {
        let _ = write!(
            body,
            "<a href=\"{}\">⇤ First page</a> ",
            esc(&href("/ui/dlq", &filters))
        );
    }
    if let Some(next) = &page.next {
        let mut with_cursor = filters.clone();
        with_cursor.push(("cursor", next));
        let _ = write!(
            body,
            "<a href=\"{}\" rel=\"next\" id=\"next-page\">Next page →</a>",
            esc(&href("/ui/dlq", &with_cursor))
        );
    }
    body.push_str("</nav>");
    let mut export_params = filters.clone();
    if let Some(cursor) = &query.cursor {
        export_params.push(("cursor", cursor));
    }
    body.push_str(&html::export_links("/ui/dlq", &export_params));
    Ok(Ok(body))
}

// ---------------------------------------------------------------------------------------------
// POST /ui/actions — archive / retry, with a confirmation for what cannot be undone

pub async fn action(State(ui): State<Arc<Ui>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let viewer = match ui.viewer(&headers) {
        Ok(viewer) => viewer,
        Err(refusal) => return refused(refusal, "/ui/dlq"),
    };
    if let Err(why) = check_post(&viewer, &headers, &form) {
        return error_page(
            Some(&viewer),
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", why),
        );
    }
    if !viewer.can(Role::Operator) {
        return error_page(
            Some(&viewer),
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "archive and retry need the operator role",
            ),
        );
    }
    let back = local_target(form.get("back"));
    let op = match form.get("action") {
        Some("archive") => Op::Archive,
        Some("retry") => Op::Retry,
        _ => {
            return error_page(
                Some(&viewer),
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "action: archive or retry",
                ),
            )
        }
    };
    let selected: Vec<(String, String)> = form
        .all("sel")
        .filter_map(|sel| sel.rsplit_once('|'))
        .map(|(task, execution)| (task.to_owned(), execution.to_owned()))
        .collect();
    if selected.is_empty() {
        return error_page(
            Some(&viewer),
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "select at least one execution",
            ),
        );
    }
    if selected.len() > super::ACTION_ITEMS_MAX {
        return error_page(
            Some(&viewer),
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many",
                format!("at most {} executions per action", super::ACTION_ITEMS_MAX),
            ),
        );
    }
    let reason = form.get("reason").map(str::trim).filter(|r| !r.is_empty());
    let by = form
        .get("by")
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .unwrap_or("taskledger-ui");
    // Archiving cannot be undone: ask once, listing what will be archived. A retry adds a new
    // execution and changes nothing recorded, so it runs at once.
    if op == Op::Archive && form.get("confirmed") != Some("yes") {
        let mut hidden = String::new();
        for (name, value) in form.pairs() {
            if name != "confirmed" {
                let _ = write!(
                    hidden,
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                    esc(name),
                    esc(value)
                );
            }
        }
        let mut list = String::new();
        for (task, execution) in &selected {
            let _ = write!(
                list,
                "<li><a href=\"{}\">{}</a> <code>{}</code></li>",
                esc(&html::task_href(task)),
                esc(task),
                esc(execution)
            );
        }
        let body = format!(
            "<p>Archiving cannot be undone: each execution leaves the DLQ for good (a retry can still start a new execution of its task).</p><ul>{list}</ul>\
<form method=\"post\" action=\"/ui/actions\" id=\"confirm-form\">{hidden}<input type=\"hidden\" name=\"confirmed\" value=\"yes\">\
<button type=\"submit\" id=\"confirm\" autofocus>▣ Archive {} execution(s)</button> <a href=\"{}\">Cancel</a></form>",
            selected.len(),
            esc(&back)
        );
        return show(&viewer, "Archive — confirm", Nav::Dlq, false, &body);
    }
    let at = taskledger_ingest::now();
    let mut outcomes = Vec::with_capacity(selected.len());
    for (task, execution) in selected {
        let new_execution = (op == Op::Retry).then(|| uuid::Uuid::new_v4().to_string());
        let default_reason = if op == Op::Retry {
            "manual retry from the UI"
        } else {
            "archived from the UI"
        };
        let report = operator_report(
            op,
            &task,
            new_execution.as_deref().unwrap_or(&execution),
            at,
            Some(reason.unwrap_or(default_reason)),
            Some(by),
        );
        let report = Report::from_value(report).map(|mut report| {
            report.principal = Some(viewer.principal.to_string());
            report
        });
        let (accepted, detail) = match report {
            Err(error) => (false, format!("not a valid report: {error}")),
            Ok(report) => match ui.api.ledger.submit(report).await {
                Ok(submitted) => match submitted.outcome {
                    Outcome::Accepted if submitted.duplicate => (true, "already done".into()),
                    Outcome::Accepted => (true, "accepted".into()),
                    Outcome::Rejected(reason) => (false, format!("rejected: {}", reason.name())),
                },
                Err(error) => (false, ApiError::from(error).parts().2.to_owned()),
            },
        };
        outcomes.push(ActionOutcome {
            action: if op == Op::Retry { "retry" } else { "archive" },
            task_id: task,
            execution_id: execution,
            new_execution_id: new_execution.filter(|_| accepted),
            accepted,
            detail,
        });
    }
    // The lists read the models: let the follower apply these events before showing them.
    let head = ui.api.store.head_position();
    let mut projected = ui.api.projected.clone();
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(super::ACTION_PROJECTION_WAIT_MS),
        projected.wait_for(|p| *p >= head),
    )
    .await;
    if ui.set_flash(&viewer, outcomes.clone()) {
        let mut response = axum::response::Redirect::to(&back).into_response();
        super::decorate(Some(&viewer), &mut response);
        return response;
    }
    let body = format!(
        "{}<p><a href=\"{}\">Back</a></p>",
        outcomes_html(&outcomes),
        esc(&back)
    );
    show(&viewer, "Outcome", Nav::Dlq, false, &body)
}

// ---------------------------------------------------------------------------------------------
// /ui/queues — counts, rates, failures by category over time, throughput

pub async fn queues(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    uri: OriginalUri,
    Query(params): Query<Params>,
) -> Response {
    let viewer = match reader(&ui, &headers, &uri) {
        Ok(viewer) => viewer,
        Err(response) => return *response,
    };
    let (viewer, body) = off_thread(&ui, viewer, move |ui, viewer| {
        queues_body(ui, viewer, &params)
    })
    .await;
    match body.and_then(|body| body) {
        Ok(body) => show(&viewer, "Queues", Nav::Queues, true, &body),
        Err(error) => error_page(Some(&viewer), error),
    }
}

fn rate(part: u64, whole: u64) -> String {
    if whole == 0 {
        "—".into()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

/// The chart's windows, by their link label.
const WINDOWS: [(&str, i64); 5] = [
    ("1 h", 3_600_000),
    ("6 h", 6 * 3_600_000),
    ("24 h", 24 * 3_600_000),
    ("7 d", 7 * 24 * 3_600_000),
    ("30 d", 30 * 24 * 3_600_000),
];
const CHART_BUCKETS: usize = 24;
/// Category colours (the legend, each bar's tooltip and the table below carry the same facts
/// as text).
const PALETTE: [&str; 8] = [
    "#d1495b", "#edae49", "#00798c", "#30638e", "#8d6a9f", "#66a182", "#b5651d", "#6c757d",
];

fn queues_body(ui: &Ui, viewer: &Viewer, params: &Params) -> Result<String, ApiError> {
    let models = ui.api.models.as_ref();
    let queue = Some(param(params, "queue")).filter(|q| !q.is_empty());
    let stats = query::queue_stats(models, queue)?;
    let (shown, next) = queue_page(stats.queues, param(params, "after"));
    let stats = query::StatsView { queues: shown };
    let now = now_ms();
    let mut body = flash(ui, viewer);
    if let Some(queue) = queue {
        let _ = write!(
            body,
            "<p>Queue <code>{}</code> · <a href=\"/ui/queues\">all queues</a></p>",
            esc(queue)
        );
    }
    body.push_str(&queue_table(&stats.queues));
    body.push_str(&next_queues_link(next));
    body.push_str("<h2>Rates and throughput</h2><table class=\"list numbers\"><thead><tr><th>queue</th><th>enqueued</th><th>succeeded</th><th>failure reports</th><th>failure rate<br><small>failures / outcomes</small></th><th>rejected reports</th><th>rejection rate<br><small>rejected / (enqueued + rejected)</small></th><th>rejected by reason</th><th>throughput<br><small>successes / hour</small></th><th>last success</th></tr></thead><tbody>");
    for (name, s) in &stats.queues {
        let rejected: u64 = s.rejected.values().sum();
        let reasons: Vec<String> = s
            .rejected
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            s.enqueued,
            s.succeeded,
            s.failures,
            rate(s.failures, s.failures + s.succeeded),
            rejected,
            rate(rejected, s.enqueued + rejected),
            esc(&if reasons.is_empty() { "—".into() } else { reasons.join(", ") }),
            s.throughput_per_hour().map_or("—".into(), |t| format!("{t:.1}")),
            time(s.last_success_at, now)
        );
    }
    body.push_str("</tbody></table>");

    // Failures by category over time.
    let latest = taskledger_projections::runner::read_latest_at(models)?.unwrap_or(Timestamp(now));
    let window_ms = match param(params, "window") {
        "" => 24 * 3_600_000,
        label => WINDOWS
            .iter()
            .find(|(l, _)| l.replace(' ', "") == label)
            .map(|(_, ms)| *ms)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "window: 1h, 6h, 24h, 7d or 30d",
                )
            })?,
    };
    let until = instant(params, "until")?.unwrap_or(latest.plus_millis(1));
    let since = instant(params, "since")?.unwrap_or(until.minus_millis(window_ms));
    if since >= until {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "since must be before until",
        ));
    }
    let series = query::dead_letters_by_category(models, queue, since, until, CHART_BUCKETS)?;
    let _ = write!(
        body,
        "<h2>Dead-lettered executions by error category over time</h2><p class=\"meta\">Executions whose last failure put them in the DLQ (still there or archived since), by the time of that failure, from {} to {} in {} slices of {}.{}</p><p class=\"views\">Window: ",
        time(Some(since), now),
        time(Some(until), now),
        series.buckets,
        html::duration(Some(series.bucket_ms)),
        if series.truncated {
            format!(" Only the first {} index entries of the window were read; narrow the window.", series.scanned)
        } else {
            String::new()
        }
    );
    for (label, _) in WINDOWS {
        let compact = label.replace(' ', "");
        let _ = write!(
            body,
            "<a href=\"{}\">{}</a> ",
            esc(&href(
                "/ui/queues",
                &[("queue", queue.unwrap_or("")), ("window", &compact)]
            )),
            label
        );
    }
    body.push_str("</p>");
    body.push_str(&chart(&series, now));

    body.push_str("<h2>Failure reports by category (all time)</h2><table class=\"list numbers\"><thead><tr><th>queue</th><th>category</th><th>failure reports</th></tr></thead><tbody>");
    for (name, s) in &stats.queues {
        for (category, n) in &s.failures_by_category {
            let _ = write!(
                body,
                "<tr><td>{}</td><td><a href=\"{}\">{}</a></td><td>{n}</td></tr>",
                esc(name),
                esc(&href("/ui/dlq", &[("queue", name), ("category", category)])),
                esc(category)
            );
        }
    }
    body.push_str("</tbody></table>");
    Ok(body)
}

fn chart(series: &query::FailureSeries, now: i64) -> String {
    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 180.0;
    const LEFT: f64 = 40.0;
    let buckets = series.buckets;
    let totals: Vec<u64> = (0..buckets)
        .map(|b| series.counts.values().map(|c| c[b]).sum())
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let bar = (WIDTH - LEFT) / buckets as f64;
    let mut out = format!(
        "<figure class=\"chart\"><svg id=\"failure-chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"chart-title\" xmlns=\"http://www.w3.org/2000/svg\"><title id=\"chart-title\">Dead-lettered executions per slice, stacked by category (peak {max})</title>\
<line x1=\"{LEFT}\" y1=\"{HEIGHT}\" x2=\"{WIDTH}\" y2=\"{HEIGHT}\" class=\"axis\"/><text x=\"{tx}\" y=\"12\" class=\"tick\" text-anchor=\"end\">{max}</text><text x=\"{tx}\" y=\"{HEIGHT}\" class=\"tick\" text-anchor=\"end\">0</text>",
        w = WIDTH,
        h = HEIGHT + 20.0,
        tx = LEFT - 4.0,
    );
    for b in 0..buckets {
        let mut y = HEIGHT;
        let start = Timestamp(series.since.millis() + b as i64 * series.bucket_ms);
        for (index, (category, counts)) in series.counts.iter().enumerate() {
            let n = counts[b];
            if n == 0 {
                continue;
            }
            let h = HEIGHT * n as f64 / max as f64;
            y -= h;
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}: {n} from {start}</title></rect>",
                LEFT + b as f64 * bar + 1.0,
                (bar - 2.0).max(1.0),
                PALETTE[index % PALETTE.len()],
                esc(category)
            );
        }
    }
    let _ = write!(
        out,
        "<text x=\"{LEFT}\" y=\"{}\" class=\"tick\">{}</text><text x=\"{WIDTH}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">{}</text></svg>",
        HEIGHT + 16.0,
        esc(&series.since.to_string()),
        HEIGHT + 16.0,
        esc(&Timestamp(series.since.millis() + series.bucket_ms * buckets as i64).to_string())
    );
    out.push_str("<figcaption><ul class=\"legend\">");
    if series.counts.is_empty() {
        out.push_str("<li>No execution dead-lettered in this window.</li>");
    }
    for (index, (category, counts)) in series.counts.iter().enumerate() {
        let _ = write!(
            out,
            "<li><svg width=\"12\" height=\"12\" aria-hidden=\"true\"><rect width=\"12\" height=\"12\" fill=\"{}\"/></svg> {}: {}</li>",
            PALETTE[index % PALETTE.len()],
            esc(category),
            counts.iter().sum::<u64>()
        );
    }
    out.push_str("</ul></figcaption></figure>");
    // The same numbers as a table, for reading and for screen readers.
    out.push_str("<details><summary>The chart's numbers</summary><table class=\"list numbers\"><thead><tr><th>from</th>");
    for category in series.counts.keys() {
        let _ = write!(out, "<th>{}</th>", esc(category));
    }
    out.push_str("</tr></thead><tbody>");
    for b in 0..buckets {
        let start = Timestamp(series.since.millis() + b as i64 * series.bucket_ms);
        let _ = write!(out, "<tr><td>{}</td>", time(Some(start), now));
        for counts in series.counts.values() {
            let _ = write!(out, "<td>{}</td>", counts[b]);
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></details>");
    out
}

// ---------------------------------------------------------------------------------------------
// /ui/stuck and /ui/due

pub async fn stuck(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    uri: OriginalUri,
    Query(params): Query<Params>,
) -> Response {
    let viewer = match reader(&ui, &headers, &uri) {
        Ok(viewer) => viewer,
        Err(response) => return *response,
    };
    let (viewer, body) = off_thread(&ui, viewer, move |ui, viewer| {
        stuck_body(ui, viewer, &params)
    })
    .await;
    listing(
        &viewer,
        "Stuck executions",
        Nav::Stuck,
        body.and_then(|body| body),
    )
}

fn list_filters(path: &str, params: &Params, extra: &str) -> String {
    format!(
        "<form method=\"get\" action=\"{path}\" class=\"filters\"><label>queue <input name=\"queue\" value=\"{}\"></label><label>at <input name=\"at\" value=\"{}\" placeholder=\"now\" size=\"22\"></label>{extra}<button type=\"submit\">Filter</button> <a href=\"{path}\">Clear</a></form>",
        esc(param(params, "queue")),
        esc(param(params, "at"))
    )
}

fn stuck_body(
    ui: &Ui,
    viewer: &Viewer,
    params: &Params,
) -> Result<Result<String, Response>, ApiError> {
    let now = now_ms();
    let at = instant(params, "at")?.unwrap_or(Timestamp(now));
    let older_than_min: i64 = match param(params, "olderThan") {
        "" => 30,
        text => text.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "olderThan: minutes, a whole number",
            )
        })?,
    };
    let queue = Some(param(params, "queue")).filter(|q| !q.is_empty());
    let items = query::stuck(ui.api.models.as_ref(), at, older_than_min * 60_000, queue)?.items;
    let format = param(params, "format");
    if !format.is_empty() {
        let mut csv = String::new();
        csv_row(
            &mut csv,
            &[
                "taskId",
                "executionId",
                "queue",
                "worker",
                "processingStartedAt",
                "stuckForMs",
                "retryCount",
            ]
            .map(String::from),
        );
        for s in &items {
            csv_row(
                &mut csv,
                &[
                    s.item.task_id.as_str().to_owned(),
                    s.item.execution_id.0.to_string(),
                    s.item.queue.clone(),
                    opt(&s.item.worker),
                    s.item.processing_started_at.to_string(),
                    s.stuck_for_ms.to_string(),
                    s.item.retry_count.to_string(),
                ],
            );
        }
        let json = serde_json::json!({"items": items});
        return export(format, "stuck", json, csv).map(Err).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "format: csv or json",
            )
        });
    }
    let mut body = flash(ui, viewer);
    body.push_str(&list_filters(
        "/ui/stuck",
        params,
        &format!(
            "<label>processing for more than <input name=\"olderThan\" value=\"{older_than_min}\" size=\"4\"> min</label>"
        ),
    ));
    let _ = write!(
        body,
        "<p class=\"meta\">{} execution(s) processing since before {} (at {}).</p>",
        items.len(),
        time(Some(at.minus_millis(older_than_min * 60_000)), now),
        time(Some(at), now)
    );
    if !items.is_empty() {
        body.push_str("<table class=\"list\"><thead><tr><th>taskId</th><th>execution</th><th>queue</th><th>worker</th><th>processing since</th><th>stuck for</th><th>retries</th></tr></thead><tbody>");
        for s in &items {
            let _ = write!(
                body,
                "<tr data-row tabindex=\"-1\"><td><a data-primary href=\"{}\">{}</a></td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&html::task_href(s.item.task_id.as_str())),
                esc(s.item.task_id.as_str()),
                s.item.execution_id.0,
                esc(&s.item.queue),
                esc(s.item.worker.as_deref().unwrap_or("—")),
                time(Some(s.item.processing_started_at), now),
                html::duration(Some(s.stuck_for_ms)),
                s.item.retry_count
            );
        }
        body.push_str("</tbody></table>");
    }
    let exports: Vec<(&str, &str)> = ["queue", "at", "olderThan"]
        .into_iter()
        .map(|n| (n, param(params, n)))
        .collect();
    body.push_str(&html::export_links("/ui/stuck", &exports));
    Ok(Ok(body))
}

pub async fn due(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    uri: OriginalUri,
    Query(params): Query<Params>,
) -> Response {
    let viewer = match reader(&ui, &headers, &uri) {
        Ok(viewer) => viewer,
        Err(response) => return *response,
    };
    let (viewer, body) =
        off_thread(&ui, viewer, move |ui, viewer| due_body(ui, viewer, &params)).await;
    listing(&viewer, "Due retries", Nav::Due, body.and_then(|body| body))
}

fn due_body(
    ui: &Ui,
    viewer: &Viewer,
    params: &Params,
) -> Result<Result<String, Response>, ApiError> {
    let now = now_ms();
    let at = instant(params, "at")?.unwrap_or(Timestamp(now));
    let queue = Some(param(params, "queue")).filter(|q| !q.is_empty());
    let items = query::due(ui.api.models.as_ref(), at, queue)?.items;
    let format = param(params, "format");
    if !format.is_empty() {
        let mut csv = String::new();
        csv_row(
            &mut csv,
            &[
                "taskId",
                "executionId",
                "queue",
                "nextRetryAt",
                "retryCount",
                "maxRetries",
                "errorCategory",
            ]
            .map(String::from),
        );
        for d in &items {
            csv_row(
                &mut csv,
                &[
                    d.task_id.as_str().to_owned(),
                    d.execution_id.0.to_string(),
                    d.queue.clone(),
                    d.next_retry_at.to_string(),
                    d.retry_count.to_string(),
                    d.max_retries.to_string(),
                    opt(&d.error_category),
                ],
            );
        }
        let json = serde_json::json!({"items": items});
        return export(format, "due", json, csv).map(Err).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "format: csv or json",
            )
        });
    }
    let mut body = flash(ui, viewer);
    body.push_str(&list_filters("/ui/due", params, ""));
    let _ = write!(
        body,
        "<p class=\"meta\">{} failed execution(s) with a retry due at or before {}.</p>",
        items.len(),
        time(Some(at), now)
    );
    if !items.is_empty() {
        body.push_str("<table class=\"list\"><thead><tr><th>taskId</th><th>execution</th><th>queue</th><th>retry due</th><th>retries</th><th>category</th></tr></thead><tbody>");
        for d in &items {
            let _ = write!(
                body,
                "<tr data-row tabindex=\"-1\"><td><a data-primary href=\"{}\">{}</a></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td></tr>",
                esc(&html::task_href(d.task_id.as_str())),
                esc(d.task_id.as_str()),
                d.execution_id.0,
                esc(&d.queue),
                time(Some(d.next_retry_at), now),
                d.retry_count,
                d.max_retries,
                esc(d.error_category.as_deref().unwrap_or("—"))
            );
        }
        body.push_str("</tbody></table>");
    }
    let exports: Vec<(&str, &str)> = ["queue", "at"]
        .into_iter()
        .map(|n| (n, param(params, n)))
        .collect();
    body.push_str(&html::export_links("/ui/due", &exports));
    Ok(Ok(body))
}
