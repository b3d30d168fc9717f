//! The what-if report as one self-contained HTML page (`whatif --html FILE`): the totals, the
//! status changes, and every changed execution before and after, each task linked to its page in
//! the web UI. Deterministic: the page holds no clock.

use super::{ExecutionChange, ExecutionOutcome, WhatIfReport};
use crate::html::{escape, task_link, ui_base};
use std::fmt::Write;

/// Changed executions listed at most: keeps the page of a sweeping policy change readable in a
/// browser (the JSON report has them all).
pub const CHANGE_ROWS_MAX: usize = 20_000;

fn instant(t: Option<taskledger_domain::Timestamp>) -> String {
    t.map_or_else(|| "—".into(), |t| t.to_string())
}

fn outcome_cells(out: &mut String, outcome: Option<&ExecutionOutcome>) {
    match outcome {
        None => out.push_str("<td colspan=\"4\" class=\"absent\">not enqueued</td>"),
        Some(o) => {
            let schedule: Vec<String> = o.retry_schedule.iter().map(|t| t.to_string()).collect();
            let _ = write!(
                out,
                "<td class=\"status {status}\">{status}</td><td>{retry_count}</td><td>{dlq_at}</td><td>{schedule}</td>",
                status = o.status.as_str(),
                retry_count = o.retry_count,
                dlq_at = instant(o.dlq_at),
                schedule = if schedule.is_empty() {
                    "—".into()
                } else {
                    schedule.join("<br>")
                },
            );
        }
    }
}

fn change_row(out: &mut String, base: &str, change: &ExecutionChange) {
    let _ = write!(
        out,
        "<tr><td><a href=\"{link}\"><code>{task}</code></a></td><td><code>{execution}</code></td><td>{queue}</td><td>{fields}</td>",
        link = escape(&task_link(base, &change.task_id)),
        task = escape(&change.task_id),
        execution = change.execution_id,
        queue = escape(&change.queue),
        fields = change.fields.join(", "),
    );
    outcome_cells(out, change.before.as_ref());
    outcome_cells(out, change.after.as_ref());
    let beyond = match change.beyond_history_at {
        Some(at) => format!("<td class=\"beyond\">from {at}</td>"),
        None => "<td>—</td>".into(),
    };
    let _ = writeln!(out, "{beyond}</tr>");
}

/// The page for `report`; `config` names the configuration replayed under.
pub fn render(report: &WhatIfReport, config: &str) -> String {
    let base = ui_base();
    let mut out = String::new();
    let filters = match (&report.queue, report.since) {
        (None, None) => "every execution".to_owned(),
        (queue, since) => {
            let mut parts = Vec::new();
            if let Some(queue) = queue {
                parts.push(format!("queue {}", escape(queue)));
            }
            if let Some(since) = since {
                parts.push(format!("enqueued at or after {since}"));
            }
            parts.join(", ")
        }
    };
    let _ = write!(
        out,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>taskledger what-if — {config}</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1d2430}}
h1{{font-size:1.5em}} h2{{margin-top:2em;border-bottom:1px solid #ccd}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #ccd;padding:.25em .6em;text-align:left;vertical-align:top}}
th{{background:#eef1f6}} code{{font:12px ui-monospace,monospace}}
.summary td:first-child{{font-weight:600}} .status.dlq{{color:#a3211b}} .status.completed{{color:#176c2f}}
.beyond{{color:#8a5a00}} .absent{{color:#667}}
</style></head><body>
<h1>What if the ledger had decided under <code>{config}</code></h1>
<p>Every recorded report replayed through the rules under this configuration and compared with
what the ledger recorded. Covered: {filters}. Where the new configuration waits for reports that
were never made, the outcome is marked <span class="beyond">beyond history</span>, not guessed.</p>
<table class="summary">
<tr><td>events replayed</td><td>{events}</td></tr>
<tr><td>reports</td><td>{reports}</td></tr>
<tr><td>tasks</td><td>{tasks}</td></tr>
<tr><td>executions compared</td><td>{executions}</td></tr>
<tr><td>executions changed</td><td>{changed}</td></tr>
<tr><td>reached the DLQ (recorded → what-if)</td><td>{dlq_before} → {dlq_after}</td></tr>
<tr><td>in the DLQ at the end</td><td>{in_dlq_before} → {in_dlq_after}</td></tr>
<tr><td>retries granted</td><td>{retries_before} → {retries_after} ({saved} saved, {added} added)</td></tr>
<tr><td>beyond history</td><td>{beyond}</td></tr>
</table>
"#,
        config = escape(config),
        events = report.events,
        reports = report.reports,
        tasks = report.tasks,
        executions = report.executions,
        changed = report.changed,
        dlq_before = report.dlq.before,
        dlq_after = report.dlq.after,
        in_dlq_before = report.in_dlq.before,
        in_dlq_after = report.in_dlq.after,
        retries_before = report.retries.before,
        retries_after = report.retries.after,
        saved = report.retries.saved,
        added = report.retries.added,
        beyond = report.beyond_history,
    );
    let _ = writeln!(
        out,
        "<h2>Final status, recorded → what-if</h2><table><tr><th>change</th><th>executions</th></tr>"
    );
    for (change, count) in &report.status_changes {
        let _ = writeln!(out, "<tr><td>{}</td><td>{count}</td></tr>", escape(change));
    }
    let _ = writeln!(
        out,
        "</table>\n<h2>Changed fields</h2><table><tr><th>field</th><th>executions</th></tr>"
    );
    for (field, count) in &report.by_field {
        let _ = writeln!(out, "<tr><td>{field}</td><td>{count}</td></tr>");
    }
    let _ = writeln!(
        out,
        "</table>\n<h2>Changed executions</h2>\n<table><tr><th rowspan=\"2\">task</th><th rowspan=\"2\">execution</th><th rowspan=\"2\">queue</th><th rowspan=\"2\">differs</th><th colspan=\"4\">recorded</th><th colspan=\"4\">what-if</th><th rowspan=\"2\">beyond history</th></tr>\n<tr><th>status</th><th>retryCount</th><th>DLQ at</th><th>retries at</th><th>status</th><th>retryCount</th><th>DLQ at</th><th>retries at</th></tr>"
    );
    for change in report.changes.iter().take(CHANGE_ROWS_MAX) {
        change_row(&mut out, &base, change);
    }
    let _ = writeln!(out, "</table>");
    if report.changes.len() > CHANGE_ROWS_MAX {
        let _ = writeln!(
            out,
            "<p>… and {} more changed executions (the JSON report, <code>--json</code>, lists every one).</p>",
            report.changes.len() - CHANGE_ROWS_MAX
        );
    }
    out.push_str("</body></html>\n");
    out
}
