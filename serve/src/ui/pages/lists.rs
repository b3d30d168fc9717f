//! ui/stuck and /ui/due

use super::*;

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
    let body = off_thread(&ui, &viewer, move |ui, viewer| {
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
    let body = off_thread(&ui, &viewer, move |ui, viewer| {
        due_body(ui, viewer, &params)
    })
    .await;
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
