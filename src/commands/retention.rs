//! Retention: `retain` and the loop `serve` runs for `[retention]`.

use super::*;

/// `--before`: an RFC 3339 instant, or an age (`30d`: that long before now).
pub(super) fn cutoff(flag: &str, text: &str) -> Result<Timestamp, Failure> {
    if let Some(instant) = Timestamp::parse(text) {
        return Ok(instant);
    }
    duration_ms(flag, text)
        .map(|age| now().minus_millis(age))
        .map_err(|_| {
            anyhow!("{flag}: {text:?} is neither an RFC 3339 instant nor an age such as 30d or 12h")
                .into()
        })
}

/// A retention the store cannot do (a server backend) says so plainly.
pub(super) fn retention_error(error: taskledger_replay::ReplayError) -> Failure {
    match error {
        taskledger_replay::ReplayError::Store(taskledger_store::StoreError::Unsupported(
            message,
        )) => anyhow!(message).into(),
        other => other.into(),
    }
}

/// `retain`: the models (caught up first) pick the streams whose every execution ended before
/// the cut-off, the store moves them into cold segments; then sled's files are compacted (this
/// command holds the data directory alone, which `serve` cannot).
pub(super) async fn retain(
    data_dir: &Path,
    config: &config::Config,
    args: RetainArgs,
) -> Result<u8, Failure> {
    let before = cutoff("--before", &args.before)?;
    let embedded = config
        .store
        .url
        .as_deref()
        .map(str::trim)
        .is_none_or(str::is_empty);
    let sled = if embedded {
        Some(config::open_sled(data_dir, config)?)
    } else {
        None
    };
    let store: SharedStore = match &sled {
        Some(sled) => sled.clone(),
        None => config::open_store(data_dir, config).await?,
    };
    let kv = live_models(store.clone(), data_dir, config).await?;
    if args.dry_run {
        let (ended, tasks) = taskledger_projections::retention::ended_before(kv.as_ref(), before)?;
        if args.json {
            print_json(&serde_json::json!({
                "before": before, "tasks": tasks, "ended": ended.len(), "dryRun": true,
            }))?;
        } else {
            println!(
                "{} of {tasks} tasks ended before {before} (every execution completed, dlq or \
                 archived) and would move; nothing moved (--dry-run)",
                ended.len()
            );
        }
        return Ok(0);
    }
    let bar = progress_bar(
        0,
        "{spinner} moving to cold segments [{bar:30}] {pos}/{len} events {per_sec} eta {eta}",
    );
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let report = taskledger_replay::retain(store.as_ref(), kv, before, &progress).await;
    bar.finish_and_clear();
    let report = report.map_err(retention_error)?;
    store.close()?;
    drop(store);
    let mut compacted = None;
    if let Some(sled) = sled {
        if !args.no_compact && report.events > 0 {
            // The store must be closed (every handle dropped) before its files are rewritten.
            match Arc::try_unwrap(sled) {
                Ok(sled) => {
                    sled.close()?;
                    drop(sled);
                    let spinner = progress_bar(0, "{spinner} compacting the hot store {elapsed}");
                    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
                    let settings = config::sled_config(data_dir, config);
                    let done = tokio::task::spawn_blocking(move || {
                        taskledger_store_sled::SledStore::compact(settings)
                    })
                    .await
                    .context("compacting the hot store")?;
                    spinner.finish_and_clear();
                    compacted = Some(done.with_context(|| {
                        format!("compacting the hot store in {}", data_dir.display())
                    })?);
                }
                Err(_) => eprintln!(
                    "taskledger: the store is still in use, so its files were not compacted (the \
                     move is done; sled reuses the space)"
                ),
            }
        }
    }
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["hotBytesCompacted"] =
            compacted.map_or(serde_json::Value::Null, |c| c.bytes_after.into());
        print_json(&value)?;
    } else {
        println!(
            "moved {} streams ({} events) of the {} tasks that ended before {before} into {} cold \
             segment(s) of {} bytes; hot store {} bytes before, {} after{}",
            report.streams,
            report.events,
            report.ended,
            report.segments.len(),
            report.segment_bytes,
            report.hot_bytes_before,
            report.hot_bytes_after,
            compacted.map_or_else(String::new, |c| format!(", {} compacted", c.bytes_after)),
        );
    }
    Ok(0)
}

/// `[retention]` in `serve`: every `interval_ms`, the streams whose every execution ended more
/// than `age_ms` ago move into cold segments (the live models pick them). A failed run is logged
/// and tried again at the next interval; nothing of it was acknowledged to anyone.
pub(super) async fn retention_loop(
    store: SharedStore,
    models: Arc<dyn Kv>,
    settings: config::RetentionSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let interval = std::time::Duration::from_millis(settings.interval_ms);
    let age_ms = i64::try_from(settings.age_ms).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let before = now().minus_millis(age_ms);
        match taskledger_replay::retain(store.as_ref(), models.clone(), before, &|_, _| {}).await {
            Ok(report) if report.events > 0 => {
                tracing::info!(streams = report.streams, events = report.events, %before, "retention");
                eprintln!(
                    "taskledger: retention moved {} streams ({} events) that ended before {before} into cold segments",
                    report.streams, report.events
                );
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, "retention failed; trying again at the next interval");
                eprintln!(
                    "taskledger: retention failed (trying again at the next interval): {error}"
                );
            }
        }
    }
}
