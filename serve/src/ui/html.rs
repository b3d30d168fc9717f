//! HTML building blocks of the UI: escaping, links, times, statuses, and the page around them.
//!
//! Pages are plain strings built on the server (STYLE habit 12: data first); the stylesheet and
//! the small script are compiled into the binary.

use super::Viewer;
use std::fmt::Write;
use taskledger_domain::Timestamp;

/// Escapes text for HTML content and quoted attribute values (`&`, `<`, `>`, `"`, `'`).
pub fn esc(text: &str) -> String {
    html_escape::encode_quoted_attribute(text).into_owned()
}

/// Percent-encodes a query value or a path segment.
pub fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The page of one task.
pub fn task_href(task_id: &str) -> String {
    format!("/ui/tasks/{}", enc(task_id))
}

/// A URL of `path` with the non-empty `params` as its query string.
pub fn href(path: &str, params: &[(&str, &str)]) -> String {
    let query: Vec<String> = params
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| format!("{key}={}", enc(value)))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// "3 min ago" / "in 2 h": the distance from `now`, coarse on purpose (the exact instant is on
/// hover).
pub fn relative(at_ms: i64, now_ms: i64) -> String {
    let delta = now_ms - at_ms;
    let (past, span) = (delta >= 0, delta.unsigned_abs() / 1000);
    let text = match span {
        0..=4 => return "just now".into(),
        5..=59 => format!("{span} s"),
        60..=3599 => format!("{} min", span / 60),
        3600..=86_399 => format!("{} h", span / 3600),
        86_400..=2_591_999 => format!("{} d", span / 86_400),
        2_592_000..=31_535_999 => format!("{} mo", span / 2_592_000),
        _ => format!("{} y", span / 31_536_000),
    };
    if past {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

/// A time shown relative to now, with the exact UTC instant on hover and in `datetime`.
pub fn time(at: Option<Timestamp>, now_ms: i64) -> String {
    match at {
        Some(at) => {
            let exact = at.to_string();
            format!(
                "<time datetime=\"{exact}\" title=\"{exact} (UTC)\">{}</time>",
                relative(at.millis(), now_ms)
            )
        }
        None => "<span class=\"none\">—</span>".into(),
    }
}

/// A duration in the largest sensible unit.
pub fn duration(ms: Option<i64>) -> String {
    match ms {
        None => "—".into(),
        Some(ms) if ms.abs() < 1000 => format!("{ms} ms"),
        Some(ms) if ms.abs() < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) if ms.abs() < 3_600_000 => format!("{:.1} min", ms as f64 / 60_000.0),
        Some(ms) => format!("{:.1} h", ms as f64 / 3_600_000.0),
    }
}

/// A status by icon and text (never by colour alone); the class only adds colour.
pub fn status(name: &str) -> String {
    let icon = match name {
        "queued" => "◷",
        "processing" => "▶",
        "completed" => "✔",
        "failed" => "⚠",
        "dlq" => "✖",
        "archived" => "▣",
        "abandoned" => "↯",
        "rejected" => "⊘",
        _ => "•",
    };
    format!(
        "<span class=\"status s-{name}\"><span aria-hidden=\"true\">{icon}</span> {}</span>",
        esc(name)
    )
}

/// Which entry of the navigation a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Search,
    Queues,
    Dlq,
    Stuck,
    Due,
    None,
}

/// The page around `body`: navigation, sign-out, the auto-refresh switch (lists only).
pub fn page(
    title: &str,
    nav: Nav,
    viewer: &Viewer,
    refresh_seconds: Option<u32>,
    body: &str,
) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let refresh = refresh_seconds
        .map(|s| format!(" data-refresh=\"{s}\""))
        .unwrap_or_default();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"color-scheme\" content=\"light dark\">{csrf_meta}\
<title>{title} · taskledger</title><link rel=\"stylesheet\" href=\"/ui/assets/ui.css\">\
<script src=\"/ui/assets/ui.js\" defer></script></head><body{refresh}>\
<a class=\"skip\" href=\"#main\">Skip to content</a><header><nav aria-label=\"Main\"><a class=\"brand\" href=\"/ui/\">taskledger</a>",
        title = esc(title),
        // The session's CSRF token, for scripts and tests; forms carry it in a hidden field.
        csrf_meta = viewer
            .csrf
            .as_ref()
            .map(|t| format!("<meta name=\"csrf\" content=\"{}\">", esc(t)))
            .unwrap_or_default(),
    );
    for (entry, path, label) in [
        (Nav::Search, "/ui/", "Search"),
        (Nav::Queues, "/ui/queues", "Queues"),
        (Nav::Dlq, "/ui/dlq", "DLQ"),
        (Nav::Stuck, "/ui/stuck", "Stuck"),
        (Nav::Due, "/ui/due", "Due"),
    ] {
        let current = if entry == nav {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(out, "<a href=\"{path}\"{current}>{label}</a>");
    }
    out.push_str("</nav><div class=\"tools\">");
    if refresh_seconds.is_some() {
        out.push_str(
            "<button type=\"button\" id=\"refresh-toggle\" aria-pressed=\"false\" title=\"Reload this page every few seconds\">⏸ Pause auto-refresh</button>",
        );
    }
    if viewer.signed_in {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/ui/logout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form>",
            esc(viewer.csrf.as_deref().unwrap_or(""))
        );
    }
    let _ = write!(
        out,
        "</div></header><main id=\"main\"><h1>{}</h1>{body}</main>\
<footer><kbd>j</kbd>/<kbd>k</kbd> or <kbd>↓</kbd>/<kbd>↑</kbd> move · <kbd>Enter</kbd> open · <kbd>x</kbd> select · <kbd>/</kbd> search</footer></body></html>",
        esc(title)
    );
    out
}

/// A hidden CSRF field for a POST form of this viewer.
pub fn csrf_field(viewer: &Viewer) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(viewer.csrf.as_deref().unwrap_or(""))
    )
}

/// Links to the same list as CSV and JSON.
pub fn export_links(path: &str, params: &[(&str, &str)]) -> String {
    let mut csv: Vec<(&str, &str)> = params.to_vec();
    csv.push(("format", "csv"));
    let mut json: Vec<(&str, &str)> = params.to_vec();
    json.push(("format", "json"));
    format!(
        "<p class=\"export\">Export this list: <a href=\"{}\" download>CSV</a> · <a href=\"{}\" download>JSON</a></p>",
        esc(&href(path, &csv)),
        esc(&href(path, &json))
    )
}

/// One CSV field.
/// One CSV cell. A cell a spreadsheet would take for a formula (it starts with `=`, `+`, `-`,
/// `@`, a tab or a carriage return: OWASP's CSV injection rule) is neutralised with a leading
/// `'`, so `=HYPERLINK(…)` reported as an error message stays text.
pub fn csv_field(text: &str) -> String {
    let neutral;
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        neutral = format!("'{text}");
        neutral.as_str()
    } else {
        text
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}
