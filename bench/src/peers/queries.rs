//! Scenario 3: queries over N stored tasks.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Query {
    Status,
    Chain,
    DlqPage,
    Stats,
}

impl Query {
    pub(super) const ALL: [Query; 4] = [Query::Status, Query::Chain, Query::DlqPage, Query::Stats];
    pub(super) fn name(self) -> &'static str {
        match self {
            Query::Status => "status of one task",
            Query::Chain => "retry chain",
            Query::DlqPage => "DLQ page (50)",
            Query::Stats => "queue stats",
        }
    }
}

pub(super) async fn run_queries(
    what: Query,
    count: usize,
    task_ids: &[String],
    mut one: impl FnMut(
        Query,
        &str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = anyhow::Result<usize>> + Send>,
    >,
) -> anyhow::Result<Figures> {
    let mut h = histogram();
    let started = Instant::now();
    for n in 0..count {
        let task_id = &task_ids[(n * 7919) % task_ids.len()];
        let sent = Instant::now();
        let found = one(what, task_id).await?;
        if found == 0 && matches!(what, Query::Status | Query::Chain) {
            bail!("{}: nothing found for {task_id}", what.name());
        }
        h.record(sent.elapsed().as_nanos().max(1) as u64)?;
    }
    Ok(nanos_figures(&h, started.elapsed().as_secs_f64()))
}

/// Fills a fresh taskledger data directory with `tasks` tasks of the workload (64 producer
/// streams, durable batches), projects them, and returns the service over it.
pub(super) async fn populate(dir: &Path, tasks: usize) -> anyhow::Result<(Service, Vec<String>)> {
    let streams = 64usize;
    {
        let (store, ledger) = open_ledger(dir)?;
        let per_stream = tasks.div_ceil(streams);
        let started = Instant::now();
        let mut made = 0usize;
        let mut task = 0u64;
        while made < tasks {
            let mut batch = Vec::with_capacity(8192);
            for _ in 0..64 {
                for worker in 0..streams {
                    if made < tasks && (task as usize) < per_stream {
                        for step in task_steps(0, worker, task) {
                            batch.push(step.report()?);
                        }
                        made += 1;
                    }
                }
                task += 1;
            }
            for chunk in batch.chunks(8192) {
                ledger.submit_batch(chunk.to_vec()).await?;
            }
            if made == tasks || made % (tasks / 10).max(1) < 4096 {
                eprintln!("  taskledger: {made}/{tasks} tasks");
            }
        }
        eprintln!(
            "  taskledger: {tasks} tasks, {} events, ingested in {:.1}s",
            store.head_position(),
            started.elapsed().as_secs_f64()
        );
    }
    let started = Instant::now();
    let service = start_service(dir).await?;
    service.caught_up().await?;
    eprintln!(
        "  taskledger: projected in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut task_ids = Vec::new();
    let mut n = 0u64;
    taskledger_projections::kv::for_each_task(service.models.as_ref(), &mut |task_id, _| {
        n += 1;
        if n.is_multiple_of(13) {
            task_ids.push(task_id.as_str().to_owned());
        }
    })?;
    Ok((service, task_ids))
}

/// Loads the legacy documents of the ledger's models into a fresh PostgreSQL table (COPY, then
/// the seeds' indexes): the same executions, as the legacy tracker would hold them.
pub(super) async fn pg_load(
    pool: &deadpool_postgres::Pool,
    models: &dyn Kv,
) -> anyhow::Result<u64> {
    pg_reset(pool, false).await?;
    let client = pool.get().await?;
    let sink = client
        .copy_in(&format!("COPY task_tracker ({COLUMNS}) FROM STDIN BINARY"))
        .await?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::INT4,
        Type::INT4,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::JSONB,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
    ];
    let mut writer = std::pin::pin!(tokio_postgres::binary_copy::BinaryCopyInWriter::new(
        sink, &types
    ));
    let mut documents = Vec::new();
    taskledger_projections::kv::for_each_task(models, &mut |task_id, record| {
        documents.extend(record.legacy_documents(&task_id));
    })?;
    let time = |t: Option<Timestamp>| t.map(|t| pg_time(t.millis()));
    for doc in &documents {
        let (task_id, execution_id, status) = (
            doc.task_id.as_str(),
            doc.execution_id.to_string(),
            doc.status.as_str(),
        );
        let (enqueued, created, updated) = (
            pg_time(doc.enqueued_at.millis()),
            pg_time(doc.created_at.millis()),
            pg_time(doc.updated_at.millis()),
        );
        let (started, completed, failed, archived) = (
            time(doc.processing_started_at),
            time(doc.completed_at),
            time(doc.failed_at),
            time(doc.archived_at),
        );
        let (retries, max) = (doc.retry_count as i32, doc.max_retries as i32);
        let values: [&(dyn ToSql + Sync); 20] = [
            &task_id,
            &execution_id,
            &doc.queue_name,
            &doc.message_version,
            &status,
            &enqueued,
            &started,
            &completed,
            &failed,
            &archived,
            &retries,
            &max,
            &doc.error_message,
            &doc.error_category,
            &doc.error_stack,
            &doc.metadata,
            &doc.archived_reason,
            &doc.archived_by,
            &created,
            &updated,
        ];
        writer.as_mut().write(&values).await?;
    }
    let rows = writer.as_mut().finish().await?;
    pg_indexes(&client).await?;
    Ok(rows)
}

pub(super) async fn pg_query(
    client: &deadpool_postgres::Client,
    what: Query,
    task_id: &str,
) -> anyhow::Result<usize> {
    let sql = match what {
        // The current execution: the latest of the taskId.
        Query::Status => "SELECT * FROM task_tracker WHERE task_id = $1 ORDER BY created_at DESC LIMIT 1",
        // seeds/001 findRetryChain.
        Query::Chain => "SELECT * FROM task_tracker WHERE task_id = $1 ORDER BY created_at",
        // The DLQ of a queue, newest first (the (queueName, status, enqueuedAt) index).
        Query::DlqPage => "SELECT * FROM task_tracker WHERE queue_name = $1 AND status = 'dlq' ORDER BY enqueued_at DESC LIMIT 50",
        // seeds/001 getQueueStats.
        Query::Stats => "SELECT status, count(*) FROM task_tracker WHERE queue_name = $1 GROUP BY status",
    };
    let statement = client.prepare_cached(sql).await?;
    let parameter = match what {
        Query::Status | Query::Chain => task_id,
        Query::DlqPage | Query::Stats => QUEUE,
    };
    Ok(client.query(&statement, &[&parameter]).await?.len())
}

pub(super) fn ledger_query(models: &dyn Kv, what: Query, task_id: &str) -> anyhow::Result<usize> {
    let json = match what {
        Query::Status | Query::Chain => {
            let id = TaskId::parse(task_id).map_err(anyhow::Error::msg)?;
            let Some(record) = query::stored_task(models, &id)? else {
                return Ok(0);
            };
            if what == Query::Status {
                serde_json::to_vec(&record.status_view(&id))?
            } else {
                serde_json::to_vec(&record.chain_view(&id))?
            }
        }
        Query::DlqPage => serde_json::to_vec(&query::dlq_page(
            models,
            &query::DlqQuery {
                queue: Some(QUEUE.into()),
                limit: 50,
                ..Default::default()
            },
        )?)?,
        Query::Stats => serde_json::to_vec(&query::queue_stats(models, Some(QUEUE))?)?,
    };
    Ok(json.len())
}

pub(super) async fn http_query(
    client: &reqwest::Client,
    base: &str,
    what: Query,
    task_id: &str,
) -> anyhow::Result<usize> {
    let url = match what {
        Query::Status => format!("{base}/v1/tasks/{task_id}"),
        Query::Chain => format!("{base}/v1/tasks/{task_id}/chain"),
        Query::DlqPage => format!("{base}/v1/dlq?queue={QUEUE}&limit=50"),
        Query::Stats => format!("{base}/v1/queues/{QUEUE}/stats"),
    };
    let response = client.get(url).send().await?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(0);
    }
    if !response.status().is_success() {
        bail!("HTTP {}", response.status());
    }
    Ok(response.bytes().await?.len())
}
