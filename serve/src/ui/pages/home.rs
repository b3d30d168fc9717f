//! ui/ — search and the queues at a glance

use super::queues::{next_queues_link, queue_page, queue_table};
use super::*;
use crate::api::read_models;

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
            let found = read_models(&ui.api, move |models| {
                query::task_of_execution(models, execution_id)
            })
            .await?;
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
            let prefix = q.to_owned();
            let found = read_models(&ui.api, move |models| {
                query::tasks_with_prefix(models, &prefix, query::SEARCH_ITEMS_MAX)
            })
            .await?;
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
    let stats = read_models(&ui.api, |models| query::queue_stats(models, None)).await?;
    let (queues, next) = queue_page(stats.queues, "");
    body.push_str("<h2>Queues</h2>");
    body.push_str(&queue_table(&queues));
    body.push_str(&next_queues_link(next));
    Ok(Ok(body))
}
