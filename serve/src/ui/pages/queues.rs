//! ui/queues — counts, rates, failures by category over time, throughput

use super::*;

/// Queues shown on one page: the page stays bounded however many queue names reporters used.
pub const QUEUES_SHOWN_MAX: usize = 200;

/// The queues of one page, by name, after `after`; and the name the next page starts after.
pub(super) fn queue_page(
    queues: BTreeMap<String, QueueStats>,
    after: &str,
) -> (BTreeMap<String, QueueStats>, Option<String>) {
    let mut page: BTreeMap<String, QueueStats> = queues
        .into_iter()
        .filter(|(name, _)| after.is_empty() || name.as_str() > after)
        .take(QUEUES_SHOWN_MAX + 1)
        .collect();
    let next = (page.len() > QUEUES_SHOWN_MAX)
        .then(|| page.pop_last().map(|_| ()))
        .flatten()
        .and_then(|()| page.last_key_value().map(|(name, _)| name.clone()));
    (page, next)
}

pub(super) fn next_queues_link(next: Option<String>) -> String {
    next.map(|after| {
        format!(
            "<p class=\"pager\"><a id=\"next-queues\" href=\"{}\">More queues</a></p>",
            esc(&href("/ui/queues", &[("after", &after)]))
        )
    })
    .unwrap_or_default()
}

pub(super) fn queue_table(queues: &BTreeMap<String, QueueStats>) -> String {
    if queues.is_empty() {
        return "<p class=\"empty\">No queue has reported yet.</p>".into();
    }
    let mut out = String::from(
        "<table class=\"list numbers\"><thead><tr><th>queue</th><th>◷ queued</th><th>▶ processing</th><th>✔ completed</th><th>⚠ failed</th><th>✖ dlq</th><th>▣ archived</th><th>⊘ rejected reports</th></tr></thead><tbody>",
    );
    for (queue, s) in queues {
        let rejected: u64 = s.rejected.values().sum();
        let _ = write!(
            out,
            "<tr data-row tabindex=\"-1\"><td><a data-primary href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            esc(&href("/ui/queues", &[("queue", queue)])),
            esc(queue),
            s.queued,
            s.processing,
            s.completed,
            s.failed,
            esc(&href("/ui/dlq", &[("queue", queue)])),
            s.dlq,
            s.archived,
            rejected
        );
    }
    out.push_str("</tbody></table>");
    out
}

pub async fn queues(
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
        queues_body(ui, viewer, &params)
    })
    .await;
    match body.and_then(|body| body) {
        Ok(body) => show(&viewer, "Queues", Nav::Queues, true, &body),
        Err(error) => error_page(Some(&viewer), error),
    }
}

fn rate(part: u64, whole: u64) -> String {
    if whole == 0 {
        "—".into()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

/// The chart's windows, by their link label.
const WINDOWS: [(&str, i64); 5] = [
    ("1 h", 3_600_000),
    ("6 h", 6 * 3_600_000),
    ("24 h", 24 * 3_600_000),
    ("7 d", 7 * 24 * 3_600_000),
    ("30 d", 30 * 24 * 3_600_000),
];
const CHART_BUCKETS: usize = 24;
/// Category colours (the legend, each bar's tooltip and the table below carry the same facts
/// as text).
const PALETTE: [&str; 8] = [
    "#d1495b", "#edae49", "#00798c", "#30638e", "#8d6a9f", "#66a182", "#b5651d", "#6c757d",
];

fn queues_body(ui: &Ui, viewer: &Viewer, params: &Params) -> Result<String, ApiError> {
    let models = ui.api.models.as_ref();
    let queue = Some(param(params, "queue")).filter(|q| !q.is_empty());
    let stats = query::queue_stats(models, queue)?;
    let (shown, next) = queue_page(stats.queues, param(params, "after"));
    let stats = query::StatsView { queues: shown };
    let now = now_ms();
    let mut body = flash(ui, viewer);
    if let Some(queue) = queue {
        let _ = write!(
            body,
            "<p>Queue <code>{}</code> · <a href=\"/ui/queues\">all queues</a></p>",
            esc(queue)
        );
    }
    body.push_str(&queue_table(&stats.queues));
    body.push_str(&next_queues_link(next));
    body.push_str("<h2>Rates and throughput</h2><table class=\"list numbers\"><thead><tr><th>queue</th><th>enqueued</th><th>succeeded</th><th>failure reports</th><th>failure rate<br><small>failures / outcomes</small></th><th>rejected reports</th><th>rejection rate<br><small>rejected / (enqueued + rejected)</small></th><th>rejected by reason</th><th>throughput<br><small>successes / hour</small></th><th>last success</th></tr></thead><tbody>");
    for (name, s) in &stats.queues {
        let rejected: u64 = s.rejected.values().sum();
        let reasons: Vec<String> = s
            .rejected
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            s.enqueued,
            s.succeeded,
            s.failures,
            rate(s.failures, s.failures + s.succeeded),
            rejected,
            rate(rejected, s.enqueued + rejected),
            esc(&if reasons.is_empty() { "—".into() } else { reasons.join(", ") }),
            s.throughput_per_hour().map_or("—".into(), |t| format!("{t:.1}")),
            time(s.last_success_at, now)
        );
    }
    body.push_str("</tbody></table>");

    // Failures by category over time.
    let latest = taskledger_projections::runner::read_latest_at(models)?.unwrap_or(Timestamp(now));
    let window_ms = match param(params, "window") {
        "" => 24 * 3_600_000,
        label => WINDOWS
            .iter()
            .find(|(l, _)| l.replace(' ', "") == label)
            .map(|(_, ms)| *ms)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "window: 1h, 6h, 24h, 7d or 30d",
                )
            })?,
    };
    let until = instant(params, "until")?.unwrap_or(latest.plus_millis(1));
    let since = instant(params, "since")?.unwrap_or(until.minus_millis(window_ms));
    if since >= until {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "since must be before until",
        ));
    }
    let series = query::dead_letters_by_category(models, queue, since, until, CHART_BUCKETS)?;
    let _ = write!(
        body,
        "<h2>Dead-lettered executions by error category over time</h2><p class=\"meta\">Executions whose last failure put them in the DLQ (still there or archived since), by the time of that failure, from {} to {} in {} slices of {}.{}</p><p class=\"views\">Window: ",
        time(Some(since), now),
        time(Some(until), now),
        series.buckets,
        html::duration(Some(series.bucket_ms)),
        if series.truncated {
            format!(" Only the first {} index entries of the window were read; narrow the window.", series.scanned)
        } else {
            String::new()
        }
    );
    for (label, _) in WINDOWS {
        let compact = label.replace(' ', "");
        let _ = write!(
            body,
            "<a href=\"{}\">{}</a> ",
            esc(&href(
                "/ui/queues",
                &[("queue", queue.unwrap_or("")), ("window", &compact)]
            )),
            label
        );
    }
    body.push_str("</p>");
    body.push_str(&chart(&series, now));

    body.push_str("<h2>Failure reports by category (all time)</h2><table class=\"list numbers\"><thead><tr><th>queue</th><th>category</th><th>failure reports</th></tr></thead><tbody>");
    for (name, s) in &stats.queues {
        for (category, n) in &s.failures_by_category {
            let _ = write!(
                body,
                "<tr><td>{}</td><td><a href=\"{}\">{}</a></td><td>{n}</td></tr>",
                esc(name),
                esc(&href("/ui/dlq", &[("queue", name), ("category", category)])),
                esc(category)
            );
        }
    }
    body.push_str("</tbody></table>");
    Ok(body)
}

fn chart(series: &query::FailureSeries, now: i64) -> String {
    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 180.0;
    const LEFT: f64 = 40.0;
    let buckets = series.buckets;
    let totals: Vec<u64> = (0..buckets)
        .map(|b| series.counts.values().map(|c| c[b]).sum())
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let bar = (WIDTH - LEFT) / buckets as f64;
    let mut out = format!(
        "<figure class=\"chart\"><svg id=\"failure-chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"chart-title\" xmlns=\"http://www.w3.org/2000/svg\"><title id=\"chart-title\">Dead-lettered executions per slice, stacked by category (peak {max})</title>\
<line x1=\"{LEFT}\" y1=\"{HEIGHT}\" x2=\"{WIDTH}\" y2=\"{HEIGHT}\" class=\"axis\"/><text x=\"{tx}\" y=\"12\" class=\"tick\" text-anchor=\"end\">{max}</text><text x=\"{tx}\" y=\"{HEIGHT}\" class=\"tick\" text-anchor=\"end\">0</text>",
        w = WIDTH,
        h = HEIGHT + 20.0,
        tx = LEFT - 4.0,
    );
    for b in 0..buckets {
        let mut y = HEIGHT;
        let start = Timestamp(series.since.millis() + b as i64 * series.bucket_ms);
        for (index, (category, counts)) in series.counts.iter().enumerate() {
            let n = counts[b];
            if n == 0 {
                continue;
            }
            let h = HEIGHT * n as f64 / max as f64;
            y -= h;
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}: {n} from {start}</title></rect>",
                LEFT + b as f64 * bar + 1.0,
                (bar - 2.0).max(1.0),
                PALETTE[index % PALETTE.len()],
                esc(category)
            );
        }
    }
    let _ = write!(
        out,
        "<text x=\"{LEFT}\" y=\"{}\" class=\"tick\">{}</text><text x=\"{WIDTH}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">{}</text></svg>",
        HEIGHT + 16.0,
        esc(&series.since.to_string()),
        HEIGHT + 16.0,
        esc(&Timestamp(series.since.millis() + series.bucket_ms * buckets as i64).to_string())
    );
    out.push_str("<figcaption><ul class=\"legend\">");
    if series.counts.is_empty() {
        out.push_str("<li>No execution dead-lettered in this window.</li>");
    }
    for (index, (category, counts)) in series.counts.iter().enumerate() {
        let _ = write!(
            out,
            "<li><svg width=\"12\" height=\"12\" aria-hidden=\"true\"><rect width=\"12\" height=\"12\" fill=\"{}\"/></svg> {}: {}</li>",
            PALETTE[index % PALETTE.len()],
            esc(category),
            counts.iter().sum::<u64>()
        );
    }
    out.push_str("</ul></figcaption></figure>");
    // The same numbers as a table, for reading and for screen readers.
    out.push_str("<details><summary>The chart's numbers</summary><table class=\"list numbers\"><thead><tr><th>from</th>");
    for category in series.counts.keys() {
        let _ = write!(out, "<th>{}</th>", esc(category));
    }
    out.push_str("</tr></thead><tbody>");
    for b in 0..buckets {
        let start = Timestamp(series.since.millis() + b as i64 * series.bucket_ms);
        let _ = write!(out, "<tr><td>{}</td>", time(Some(start), now));
        for counts in series.counts.values() {
            let _ = write!(out, "<td>{}</td>", counts[b]);
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></details>");
    out
}
