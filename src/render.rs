//! Human-readable output of the read commands (`--json` prints the library's types instead).

use std::fmt::Write;
use taskledger_domain::{TaskId, Timestamp};
use taskledger_ingest::IngestSummary;
use taskledger_projections::models::DueItem;
use taskledger_projections::query::{DlqPage, Items, StatsView, StuckItem};
use taskledger_projections::{ChainView, HistoryEntry, TaskStatusView};
use taskledger_replay::Verification;

fn time(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "-".into(), |t| t.to_string())
}

pub fn ingest_summary(summary: &IngestSummary) -> String {
    let mut out = String::new();
    let rejected: u64 = summary.rejected.values().sum();
    let _ = writeln!(out, "reports            {}", summary.reports);
    let _ = writeln!(out, "accepted           {}", summary.accepted);
    let _ = writeln!(out, "rejected           {rejected}");
    for (reason, count) in &summary.rejected {
        if *count > 0 {
            let _ = writeln!(out, "  {reason:<17}{count}");
        }
    }
    let _ = writeln!(out, "duplicates ignored {}", summary.duplicates_ignored);
    let _ = writeln!(out, "invalid            {}", summary.invalid);
    let _ = writeln!(out, "events appended    {}", summary.events_appended);
    out
}

pub fn task(view: &TaskStatusView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "task        {}", view.task_id);
    let _ = writeln!(
        out,
        "status      {}",
        view.status.map_or("-", |status| status.as_str())
    );
    if let Some(execution_id) = view.execution_id {
        let _ = writeln!(
            out,
            "execution   {execution_id} (latest of {})",
            view.executions
        );
    }
    let _ = writeln!(out, "queue       {}", view.queue.as_deref().unwrap_or("-"));
    let _ = writeln!(
        out,
        "retries     {} of {}",
        view.retry_count, view.max_retries
    );
    let _ = writeln!(out, "attempts    {}", view.attempts);
    match &view.last_error {
        Some(error) => {
            let _ = writeln!(out, "last error  [{}] {}", error.category, error.message);
        }
        None => {
            let _ = writeln!(out, "last error  -");
        }
    }
    let flags = if view.flags.is_empty() {
        "-".to_owned()
    } else {
        view.flags.join(", ")
    };
    let _ = writeln!(out, "flags       {flags}");
    if !view.rejected.is_empty() {
        let rejected: Vec<String> = view
            .rejected
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "rejected    {}", rejected.join(", "));
    }
    let _ = writeln!(out, "updated at  {}", time(view.updated_at));
    out
}

pub fn chain(projection: &ChainView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} execution(s)",
        projection.task_id,
        projection.executions.len()
    );
    for (number, execution) in projection.executions.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n#{} {}  {}  retries {}/{}  queue {}  enqueued {}",
            number + 1,
            execution.execution_id,
            execution.status,
            execution.retry_count,
            execution.max_retries,
            execution.queue,
            execution.enqueued_at
        );
        if let Some(retry) = &execution.manual_retry {
            let _ = writeln!(
                out,
                "   manual retry by {} ({})",
                retry.by.as_deref().unwrap_or("?"),
                retry.reason.as_deref().unwrap_or("no reason given")
            );
        }
        if let Some(archived) = execution.archived_at {
            let _ = writeln!(
                out,
                "   archived {archived} by {}: {}",
                execution.archived_by.as_deref().unwrap_or("?"),
                execution.archived_reason.as_deref().unwrap_or("-")
            );
        }
        if execution.attempts.is_empty() {
            let _ = writeln!(out, "   (never claimed)");
            continue;
        }
        let _ = writeln!(
            out,
            "   {:<3} {:<14} {:<26} {:<11} {:>9}  error / next retry",
            "#", "worker", "claimed", "outcome", "took"
        );
        for (index, attempt) in execution.attempts.iter().enumerate() {
            let took = attempt
                .duration_ms
                .map_or_else(|| "-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
            let mut detail = attempt
                .error
                .as_ref()
                .map(|e| format!("[{}] {}", e.category, e.message))
                .unwrap_or_default();
            if let Some(next) = attempt.next_retry_at {
                let _ = write!(detail, "  → retry at {next}");
            }
            if attempt.unclaimed_success {
                detail.push_str("(success without a claim)");
            }
            let line = format!(
                "   {:<3} {:<14} {:<26} {:<11} {:>9}  {}",
                index + 1,
                attempt.worker.as_deref().unwrap_or("-"),
                time(attempt.claimed_at),
                attempt.outcome.as_str(),
                took,
                detail
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    out
}

pub fn history(task_id: &TaskId, entries: &[HistoryEntry]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{task_id}: {} event(s)", entries.len());
    let _ = writeln!(
        out,
        "{:>8} {:>4}  {:<19} {:<26} detail",
        "position", "ver", "type", "at"
    );
    for entry in entries {
        let data = &entry.data;
        let at = data.get("at").and_then(|v| v.as_str()).unwrap_or("-");
        let execution = data
            .get("executionId")
            .and_then(|v| v.as_str())
            .map(|id| id.get(..8).unwrap_or(id))
            .unwrap_or("-");
        let mut detail = format!("execution {execution}…");
        for key in [
            "worker",
            "status",
            "reason",
            "category",
            "errorMessage",
            "op",
            "by",
        ] {
            if let Some(value) = data.get(key).and_then(|v| v.as_str()) {
                let _ = write!(detail, "  {key}={value}");
            }
        }
        let _ = writeln!(
            out,
            "{:>8} {:>4}  {:<19} {:<26} {}",
            entry.position, entry.version, entry.event_type, at, detail
        );
    }
    out
}

fn cut(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(chars.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

pub fn dlq(page: &DlqPage, archived: bool) -> String {
    let mut out = String::new();
    let what = if archived { "archived" } else { "in the DLQ" };
    let _ = writeln!(out, "{} execution(s) {what} on this page", page.items.len());
    if !page.items.is_empty() {
        let _ = writeln!(
            out,
            "{:<40} {:<36} {:<15} {:<24} {:>7}  error",
            "task",
            "execution",
            "category",
            if archived { "archived" } else { "failed" },
            "retries"
        );
    }
    for item in &page.items {
        let at = if archived {
            item.archived_at
        } else {
            item.failed_at
        };
        let _ = writeln!(
            out,
            "{:<40} {:<36} {:<15} {:<24} {:>7}  {}",
            cut(item.task_id.as_str(), 40),
            item.execution_id,
            item.error_category.as_deref().unwrap_or("-"),
            time(at),
            item.retry_count,
            cut(item.error_message.as_deref().unwrap_or("-"), 60)
        );
    }
    if let Some(next) = &page.next {
        let _ = writeln!(out, "more: --cursor {next}");
    }
    out
}

pub fn stats(stats: &StatsView) -> String {
    let mut out = String::new();
    if stats.queues.is_empty() {
        let _ = writeln!(out, "no queues yet");
    }
    for (queue, s) in &stats.queues {
        let _ = writeln!(out, "{queue}");
        let _ = writeln!(
            out,
            "  queued {}  processing {}  completed {}  failed {}  dlq {}  archived {}",
            s.queued, s.processing, s.completed, s.failed, s.dlq, s.archived
        );
        let rejected: Vec<String> = s.rejected.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "  rejected: {}", rejected.join(", "));
        if !s.failures_by_category.is_empty() {
            let failures: Vec<String> = s
                .failures_by_category
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(out, "  failures by category: {}", failures.join(", "));
        }
        let _ = write!(
            out,
            "  lifetime: {} enqueued, {} successes, {} failures",
            s.enqueued, s.succeeded, s.failures
        );
        if let Some(per_hour) = s.throughput_per_hour() {
            let _ = write!(out, "; {per_hour:.1} successes/hour");
        }
        let _ = writeln!(out);
    }
    out
}

pub fn stuck(items: &Items<StuckItem>, at: Timestamp) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} stuck execution(s) at {at}", items.items.len());
    for stuck in &items.items {
        let item = &stuck.item;
        let _ = writeln!(
            out,
            "{:<40} {}  worker {:<12} since {}  ({:.1} min)",
            cut(item.task_id.as_str(), 40),
            item.execution_id,
            item.worker.as_deref().unwrap_or("-"),
            item.processing_started_at,
            stuck.stuck_for_ms as f64 / 60_000.0
        );
    }
    out
}

pub fn due(items: &Items<DueItem>, at: Timestamp) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} retr(ies) due at {at}", items.items.len());
    for item in &items.items {
        let _ = writeln!(
            out,
            "{:<40} {}  due {}  retries {}/{}  [{}]",
            cut(item.task_id.as_str(), 40),
            item.execution_id,
            item.next_retry_at,
            item.retry_count,
            item.max_retries,
            item.error_category.as_deref().unwrap_or("-")
        );
    }
    out
}

pub fn verification(verification: &Verification) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "compared at position {}", verification.position);
    for model in &verification.models {
        let _ = writeln!(
            out,
            "{:<12} {:>9} entries  {}  {}",
            model.model,
            model.entries,
            &model.live[..16],
            if model.equal {
                "equal"
            } else {
                "DIFFERS from the rebuild"
            }
        );
    }
    out
}

pub fn chain_verification(verification: &taskledger_replay::ChainVerification) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "checked {} events of {} streams: digest {} at position {}",
        verification.events,
        verification.streams,
        verification.head.digest,
        verification.head.position
    );
    match &verification.broken {
        None => {
            let _ = writeln!(out, "every hash chain holds");
        }
        Some(broken) => {
            let _ = writeln!(out, "BROKEN: {broken}");
        }
    }
    if let Some(check) = &verification.digest {
        let _ = match (&check.found, check.prefix) {
            (_, true) => writeln!(
                out,
                "the ledger at position {} has digest {}: this ledger extends it",
                check.position, check.expected
            ),
            (Some(found), false) => writeln!(
                out,
                "NOT A PREFIX: at position {} the digest is {found}, not {}",
                check.position, check.expected
            ),
            (None, false) => writeln!(
                out,
                "NOT A PREFIX: the digest's position {} is beyond the {} events checked",
                check.position, verification.events
            ),
        };
    }
    out
}

pub fn validation(report: &taskledger_replay::validate::ValidationReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "validation against {} as of {}",
        report.tracker, report.as_of
    );
    let _ = writeln!(
        out,
        "  legacy documents {}   ledger executions {}   compared {}   consistent {}",
        report.legacy_documents, report.ledger_executions, report.compared, report.consistent
    );
    let _ = writeln!(out, "  consistency {:.5}", report.consistency);
    if report.outside_queue > 0 {
        let _ = writeln!(
            out,
            "  documents of other queues (not compared) {}",
            report.outside_queue
        );
    }
    let kinds: Vec<String> = report
        .by_kind
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(out, "  mismatches: {}", kinds.join(", "));
    if !report.by_field.is_empty() {
        let fields: Vec<String> = report
            .by_field
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "  by field: {}", fields.join(", "));
    }
    let i = &report.invariants;
    let _ = writeln!(
        out,
        "  ledger invariants: duplicate executions {}, double processing {}, broken chains {}, stuck {}",
        i.duplicate_executions, i.double_processing, i.broken_chains, i.stuck
    );
    for mismatch in report.mismatches.iter().take(10) {
        let _ = writeln!(
            out,
            "    {} {} {} {} legacy={} ledger={}",
            mismatch.kind,
            mismatch.task_id.as_deref().unwrap_or("-"),
            mismatch.execution_id.as_deref().unwrap_or("-"),
            mismatch.field.as_deref().unwrap_or(""),
            mismatch
                .legacy
                .as_ref()
                .map_or("-".into(), |v| v.to_string()),
            mismatch
                .ledger
                .as_ref()
                .map_or("-".into(), |v| v.to_string()),
        );
    }
    if report.mismatches.len() > 10 {
        let _ = writeln!(
            out,
            "    … {} more in the reports",
            report.mismatches.len() - 10
        );
    }
    out
}

/// Changed executions the terminal summary lists; the JSON and HTML reports have them all.
const WHATIF_CHANGES_SHOWN_MAX: usize = 10;

pub fn whatif(report: &taskledger_replay::whatif::WhatIfReport, config: &str) -> String {
    use taskledger_replay::whatif::ExecutionOutcome;
    let mut out = String::new();
    let _ = writeln!(out, "what-if under {config}");
    let mut filters = Vec::new();
    if let Some(queue) = &report.queue {
        filters.push(format!("queue {queue}"));
    }
    if let Some(since) = report.since {
        filters.push(format!("enqueued since {since}"));
    }
    if !filters.is_empty() {
        let _ = writeln!(out, "  only {}", filters.join(", "));
    }
    let _ = writeln!(
        out,
        "  events {}   reports {}   tasks {}   executions compared {}",
        report.events, report.reports, report.tasks, report.executions
    );
    let _ = writeln!(out, "  executions changed {}", report.changed);
    let _ = writeln!(
        out,
        "  reached the DLQ {} -> {}   in the DLQ at the end {} -> {}",
        report.dlq.before, report.dlq.after, report.in_dlq.before, report.in_dlq.after
    );
    let r = &report.retries;
    let _ = writeln!(
        out,
        "  retries granted {} -> {} ({} saved, {} added)",
        r.before, r.after, r.saved, r.added
    );
    let _ = writeln!(
        out,
        "  beyond history {} (the new configuration waits for reports that were never made)",
        report.beyond_history
    );
    if !report.status_changes.is_empty() {
        let changes: Vec<String> = report
            .status_changes
            .iter()
            .map(|(change, count)| format!("{change} {count}"))
            .collect();
        let _ = writeln!(out, "  final status: {}", changes.join(", "));
    }
    let side = |outcome: &Option<ExecutionOutcome>| match outcome {
        None => "absent".to_owned(),
        Some(o) => format!(
            "{} retryCount={}{}",
            o.status,
            o.retry_count,
            o.dlq_at.map(|t| format!(" dlqAt={t}")).unwrap_or_default()
        ),
    };
    for change in report.changes.iter().take(WHATIF_CHANGES_SHOWN_MAX) {
        let _ = writeln!(
            out,
            "    {} {} [{}] {} -> {}{}",
            change.task_id,
            change.execution_id,
            change.fields.join(","),
            side(&change.before),
            side(&change.after),
            change
                .beyond_history_at
                .map(|t| format!(" (beyond history from {t})"))
                .unwrap_or_default()
        );
    }
    if report.changes.len() > WHATIF_CHANGES_SHOWN_MAX {
        let _ = writeln!(
            out,
            "    … {} more (--json, --html)",
            report.changes.len() - WHATIF_CHANGES_SHOWN_MAX
        );
    }
    out
}
