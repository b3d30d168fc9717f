//! The read commands: `task`/`chain`/`history`, `dlq`, `stats`, `stuck`, `due`.

use super::*;

/// What `task`, `chain` and `history` show of one task.
pub(super) enum View {
    Status,
    Chain,
    History,
}

pub(super) async fn task(
    data_dir: &Path,
    config: &config::Config,
    args: TaskArgs,
    view: View,
) -> Result<u8, Failure> {
    let task_id = TaskId::parse(&args.task_id).map_err(|problem| anyhow!("taskId: {problem}"))?;
    let as_of = optional_instant("--as-of", &args.as_of)?;
    let store: SharedStore = config::open_store(data_dir, config).await?;
    let not_found = || Failure {
        code: 1,
        error: anyhow!(
            "no task {task_id}{}",
            as_of.map(|t| format!(" as of {t}")).unwrap_or_default()
        ),
    };
    if let View::History = view {
        let entries = taskledger_projections::history(store.as_ref(), &task_id, as_of).await?;
        if entries.is_empty() {
            return Err(not_found());
        }
        if args.json {
            print_json(&entries)?;
        } else {
            print!("{}", render::history(&task_id, &entries));
        }
        return Ok(0);
    }
    let record = match as_of {
        // As of an instant: fold the task's own stream up to it.
        Some(_) => taskledger_projections::load_task(store.as_ref(), &task_id, as_of).await?,
        None => {
            let kv = live_models(store, data_dir, config).await?;
            query::stored_task(kv.as_ref(), &task_id)?
        }
    };
    let record = record.ok_or_else(not_found)?;
    match (view, args.json) {
        (View::Status, true) => print_json(&record.status_view(&task_id))?,
        (View::Status, false) => print!("{}", render::task(&record.status_view(&task_id))),
        (_, true) => print_json(&record.chain_view(&task_id))?,
        (_, false) => print!("{}", render::chain(&record.chain_view(&task_id))),
    }
    Ok(0)
}

pub(super) async fn dlq(
    data_dir: &Path,
    config: &config::Config,
    args: DlqArgs,
) -> Result<u8, Failure> {
    let query = DlqQuery {
        queue: args.queue,
        category: args.category,
        since: optional_instant("--since", &args.since)?,
        until: optional_instant("--until", &args.until)?,
        archived: args.archived,
        limit: args.limit,
        cursor: args.cursor,
    };
    let as_of = optional_instant("--as-of", &args.read.as_of)?;
    let kv = models(data_dir, config, as_of).await?;
    let page = query::dlq_page(kv.as_ref(), &query)?;
    if args.read.json {
        print_json(&page)?;
    } else {
        print!("{}", render::dlq(&page, query.archived));
    }
    Ok(0)
}

pub(super) async fn stats(
    data_dir: &Path,
    config: &config::Config,
    args: StatsArgs,
) -> Result<u8, Failure> {
    let as_of = optional_instant("--as-of", &args.read.as_of)?;
    let kv = models(data_dir, config, as_of).await?;
    let stats = query::queue_stats(kv.as_ref(), args.queue.as_deref())?;
    if args.read.json {
        print_json(&stats)?;
    } else {
        print!("{}", render::stats(&stats));
    }
    Ok(0)
}

pub(super) async fn stuck(
    data_dir: &Path,
    config: &config::Config,
    args: StuckArgs,
) -> Result<u8, Failure> {
    let as_of = optional_instant("--as-of", &args.read.as_of)?;
    let at = optional_instant("--at", &args.at)?
        .or(as_of)
        .unwrap_or_else(now);
    let older_than = duration_ms("--older-than", &args.older_than)?;
    let kv = models(data_dir, config, as_of).await?;
    let items = query::stuck(kv.as_ref(), at, older_than, args.queue.as_deref())?;
    if args.read.json {
        print_json(&items)?;
    } else {
        print!("{}", render::stuck(&items, at));
    }
    Ok(0)
}

pub(super) async fn due(
    data_dir: &Path,
    config: &config::Config,
    args: DueArgs,
) -> Result<u8, Failure> {
    let as_of = optional_instant("--as-of", &args.read.as_of)?;
    let at = optional_instant("--at", &args.at)?
        .or(as_of)
        .unwrap_or_else(now);
    let kv = models(data_dir, config, as_of).await?;
    let items = query::due(kv.as_ref(), at, args.queue.as_deref())?;
    if args.read.json {
        print_json(&items)?;
    } else {
        print!("{}", render::due(&items, at));
    }
    Ok(0)
}
