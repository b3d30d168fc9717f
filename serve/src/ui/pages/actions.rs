//! POST /ui/actions — archive / retry, with a confirmation for what cannot be undone

use super::*;

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
    if selected.len() > crate::ui::ACTION_ITEMS_MAX {
        return error_page(
            Some(&viewer),
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many",
                format!(
                    "at most {} executions per action",
                    crate::ui::ACTION_ITEMS_MAX
                ),
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
        std::time::Duration::from_millis(crate::ui::ACTION_PROJECTION_WAIT_MS),
        projected.wait_for(|p| *p >= head),
    )
    .await;
    if ui.set_flash(&viewer, outcomes.clone()) {
        let mut response = axum::response::Redirect::to(&back).into_response();
        crate::ui::decorate(Some(&viewer), &mut response);
        return response;
    }
    let body = format!(
        "{}<p><a href=\"{}\">Back</a></p>",
        outcomes_html(&outcomes),
        esc(&back)
    );
    show(&viewer, "Outcome", Nav::Dlq, false, &body)
}
