//! ui/dlq — filters, cursor paging, select + archive / retry, the archived view

use super::*;

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
    let body = off_thread(&ui, &viewer, move |ui, viewer| {
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
