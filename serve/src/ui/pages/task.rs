//! ui/tasks/{taskId} — timeline, retry chain, as of any instant

use super::*;

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
                        " · archived {} by {}{}: {}",
                        time(Some(at), now),
                        esc(x.archived_by.as_deref().unwrap_or("—")),
                        principal_note(x.archived_principal.as_deref()),
                        esc(x.archived_reason.as_deref().unwrap_or("—"))
                    )
                })
                .unwrap_or_default();
            let _ = write!(
                body,
                "<section class=\"execution\" id=\"x-{id}\"><h3>Execution {num} <code>{id}</code> {st}</h3>\
<p class=\"meta\">queue <code>{queue}</code> · enqueued {enq}{sender} · retries {rc}/{mr}{manual}{archived}</p>",
                id = x.execution_id.0,
                num = n + 1,
                st = status(x.status.as_str()),
                queue = esc(&x.queue),
                enq = time(Some(x.enqueued_at), now),
                sender = principal_note(x.principal.as_deref()),
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

/// ` (sent by <principal>)`: who the ledger authenticated, beside a caller's own note.
fn principal_note(principal: Option<&str>) -> String {
    principal
        .map(|p| {
            format!(
                " <span class=\"principal\">(sent by <code>{}</code>)</span>",
                esc(p)
            )
        })
        .unwrap_or_default()
}
