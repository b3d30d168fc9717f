//! The validation report as one self-contained HTML page: the summary, mismatches by kind and by
//! field, and for each mismatching task its retry chain from the ledger beside the legacy
//! documents.

use crate::validate::{Mismatch, ValidationReport};
use std::collections::BTreeMap;
use std::fmt::Write;
use taskledger_projections::ChainView;

/// Tasks shown in detail at most; the mismatch table lists up to this many rows. Keeps a report
/// of a bad migration readable in a browser.
pub const TASKS_DETAILED_MAX: usize = 500;
pub const MISMATCH_ROWS_MAX: usize = 20_000;

/// Evidence for one mismatching task.
pub struct TaskEvidence {
    pub task_id: String,
    pub chain: Option<ChainView>,
    pub legacy: Vec<serde_json::Value>,
}

/// Escapes text for HTML content and quoted attribute values (`&`, `<`, `>`, `"`, `'`).
pub fn escape(text: &str) -> String {
    html_escape::encode_quoted_attribute(text).into_owned()
}

fn value(v: &Option<serde_json::Value>) -> String {
    v.as_ref()
        .map_or_else(|| "—".into(), |v| escape(&v.to_string()))
}

/// Where each mismatch links to: the task's page of taskledger's web UI, `/ui/tasks/{taskId}`
/// under `TASKLEDGER_UI_URL` (the service's base URL), by default the local `taskledger serve`
/// at its default address. An empty `TASKLEDGER_UI_URL` makes the links relative
/// (`/ui/tasks/…`), for a report served beside the UI.
pub const DEFAULT_UI_URL: &str = "http://127.0.0.1:7070";

/// `TASKLEDGER_UI_URL` (default [`DEFAULT_UI_URL`]) without its trailing `/`.
pub fn ui_base() -> String {
    std::env::var("TASKLEDGER_UI_URL")
        .unwrap_or_else(|_| DEFAULT_UI_URL.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// The link to a task's page in the web UI.
pub fn task_link(base: &str, task_id: &str) -> String {
    let encoded: String = task_id
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    format!("{base}/ui/tasks/{encoded}")
}

fn task_cell(base: &str, task_id: Option<&str>) -> String {
    match task_id {
        Some(task_id) => format!(
            "<a href=\"{}\"><code>{}</code></a>",
            escape(&task_link(base, task_id)),
            escape(task_id)
        ),
        None => "<code>—</code>".into(),
    }
}

fn mismatch_row(out: &mut String, base: &str, m: &Mismatch) {
    let _ = writeln!(
        out,
        "<tr class=\"{}\"><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
        m.kind,
        m.kind,
        task_cell(base, m.task_id.as_deref()),
        escape(m.execution_id.as_deref().unwrap_or("—")),
        escape(m.field.as_deref().unwrap_or("—")),
        value(&m.legacy),
        value(&m.ledger)
    );
}

pub fn render(report: &ValidationReport, evidence: &[TaskEvidence]) -> String {
    let base = ui_base();
    let mut out = String::new();
    let verdict = if report.mismatches.is_empty() {
        "consistent"
    } else {
        "inconsistent"
    };
    let _ = write!(
        out,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>taskledger validation — {tracker}</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1d2430}}
h1{{font-size:1.5em}} h2{{margin-top:2em;border-bottom:1px solid #ccd}} h3{{margin-bottom:.3em}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #ccd;padding:.25em .6em;text-align:left;vertical-align:top}}
th{{background:#eef1f6}} code,pre{{font:12px ui-monospace,monospace}} pre{{background:#f6f7f9;padding:.6em;overflow:auto;max-height:28em}}
.summary td:first-child{{font-weight:600}} .consistent{{color:#176c2f}} .inconsistent{{color:#a3211b}}
.side{{display:grid;grid-template-columns:1fr 1fr;gap:1em}} tr.field td:first-child{{color:#8a5a00}}
tr.missingInLegacy td:first-child,tr.missingInLedger td:first-child{{color:#a3211b}}
</style></head><body>
<h1>Validation of the ledger against {tracker}: <span class="{verdict}">{verdict}</span></h1>
<table class="summary">
<tr><td>as of</td><td>{as_of}</td></tr>
<tr><td>legacy documents</td><td>{legacy}</td></tr>
<tr><td>ledger executions</td><td>{ledger}</td></tr>
<tr><td>compared</td><td>{compared}</td></tr>
<tr><td>consistent</td><td>{consistent}</td></tr>
<tr><td>consistency</td><td>{consistency:.5}</td></tr>
<tr><td>fields compared</td><td>{fields} (instants within {tolerance} ms)</td></tr>
</table>
"#,
        tracker = escape(&report.tracker),
        as_of = report.as_of,
        legacy = report.legacy_documents,
        ledger = report.ledger_executions,
        compared = report.compared,
        consistent = report.consistent,
        consistency = report.consistency,
        fields = escape(&report.fields.join(", ")),
        tolerance = report.time_tolerance_ms,
    );
    let invariants = &report.invariants;
    let _ = writeln!(
        out,
        "<h2>Invariants of the ledger</h2><table><tr><th>duplicate executions</th><th>double processing</th><th>broken chains</th><th>stuck</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        invariants.duplicate_executions, invariants.double_processing, invariants.broken_chains, invariants.stuck
    );
    let _ = writeln!(
        out,
        "<h2>Mismatches by kind</h2><table><tr><th>kind</th><th>count</th></tr>"
    );
    for (kind, count) in &report.by_kind {
        let _ = writeln!(out, "<tr><td>{kind}</td><td>{count}</td></tr>");
    }
    let _ = writeln!(
        out,
        "</table><h2>Field mismatches by field</h2><table><tr><th>field</th><th>count</th></tr>"
    );
    for (field, count) in &report.by_field {
        let _ = writeln!(out, "<tr><td>{}</td><td>{count}</td></tr>", escape(field));
    }
    let _ = writeln!(out, "</table>");
    let _ = writeln!(
        out,
        "<h2>Every mismatch</h2><table id=\"mismatches\"><tr><th>kind</th><th>task</th><th>execution</th><th>field</th><th>legacy</th><th>ledger</th></tr>"
    );
    for mismatch in report.mismatches.iter().take(MISMATCH_ROWS_MAX) {
        mismatch_row(&mut out, &base, mismatch);
    }
    let _ = writeln!(out, "</table>");
    if report.mismatches.len() > MISMATCH_ROWS_MAX {
        let _ = writeln!(
            out,
            "<p>{} more in the JSON report.</p>",
            report.mismatches.len() - MISMATCH_ROWS_MAX
        );
    }
    let mut by_task: BTreeMap<&str, Vec<&Mismatch>> = BTreeMap::new();
    for mismatch in &report.mismatches {
        if let Some(task) = mismatch.task_id.as_deref() {
            by_task.entry(task).or_default().push(mismatch);
        }
    }
    let _ = writeln!(
        out,
        "<h2>Mismatching tasks: the ledger's retry chain beside the legacy documents</h2>"
    );
    for item in evidence.iter().take(TASKS_DETAILED_MAX) {
        let _ = writeln!(out, "<h3 id=\"task-{0}\">{0}</h3><p><a href=\"{1}\">Open in the UI</a></p><table><tr><th>kind</th><th>task</th><th>execution</th><th>field</th><th>legacy</th><th>ledger</th></tr>", escape(&item.task_id), escape(&task_link(&base, &item.task_id)));
        for mismatch in by_task
            .get(item.task_id.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            mismatch_row(&mut out, &base, mismatch);
        }
        let _ = writeln!(
            out,
            "</table><div class=\"side\"><div><b>ledger: retry chain</b>"
        );
        match &item.chain {
            Some(chain) => {
                let _ = writeln!(out, "<table><tr><th>execution</th><th>status</th><th>retries</th><th>attempt: worker, claimed → outcome at, error</th></tr>");
                for execution in &chain.executions {
                    let attempts: Vec<String> = execution
                        .attempts
                        .iter()
                        .map(|a| {
                            format!(
                                "{} {} → {} {}{}",
                                escape(a.worker.as_deref().unwrap_or("-")),
                                a.claimed_at.map_or("-".into(), |t| t.to_string()),
                                a.outcome,
                                a.ended_at.map_or(String::new(), |t| t.to_string()),
                                a.error.as_ref().map_or(String::new(), |e| format!(
                                    " [{}] {}",
                                    escape(&e.category),
                                    escape(&e.message)
                                ))
                            )
                        })
                        .collect();
                    let _ = writeln!(
                        out,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}/{}</td><td>{}</td></tr>",
                        execution.execution_id,
                        execution.status,
                        execution.retry_count,
                        execution.max_retries,
                        attempts.join("<br>")
                    );
                }
                let _ = writeln!(out, "</table>");
            }
            None => {
                let _ = writeln!(out, "<p>The ledger has no such task.</p>");
            }
        }
        let _ = writeln!(out, "</div><div><b>legacy</b>");
        if item.legacy.is_empty() {
            let _ = writeln!(out, "<p>No legacy document.</p>");
        }
        for doc in &item.legacy {
            let pretty = serde_json::to_string_pretty(doc).unwrap_or_default();
            let _ = writeln!(out, "<pre>{}</pre>", escape(&pretty));
        }
        let _ = writeln!(out, "</div></div>");
    }
    if evidence.len() > TASKS_DETAILED_MAX {
        let _ = writeln!(
            out,
            "<p>{} more mismatching tasks in the JSON report.</p>",
            evidence.len() - TASKS_DETAILED_MAX
        );
    }
    let _ = writeln!(out, "</body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_link_points_at_the_ui_page_with_the_id_encoded() {
        assert_eq!(
            task_link(
                "http://127.0.0.1:7070",
                "partner_tasks:SATLOC:695d:02220710"
            ),
            "http://127.0.0.1:7070/ui/tasks/partner_tasks:SATLOC:695d:02220710"
        );
        assert_eq!(task_link("", "q:a b/c#d"), "/ui/tasks/q:a%20b%2Fc%23d");
        assert_eq!(
            task_cell("", Some("q:<x>")),
            "<a href=\"/ui/tasks/q:%3Cx%3E\"><code>q:&lt;x&gt;</code></a>"
        );
    }
}
