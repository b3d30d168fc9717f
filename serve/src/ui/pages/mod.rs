//! The pages: each handler asks the read models one question and renders the answer; lists can
//! also be exported (`format=csv` / `format=json`) with the same filters. One file per page
//! (`home`, `task`, `dlq`, `actions`, `queues`, `lists`); what they share is here.

mod actions;
mod dlq;
mod home;
mod lists;
mod queues;
mod task;

pub use actions::action;
pub use dlq::dlq;
pub use home::home;
pub use lists::{due, stuck};
pub use queues::queues;
pub use task::task;

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
    viewer: &Viewer,
    build: impl FnOnce(&Ui, &Viewer) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let (ui, viewer) = (ui.clone(), viewer.clone());
    tokio::task::spawn_blocking(move || build(&ui, &viewer))
        .await
        .map_err(ApiError::internal)
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
