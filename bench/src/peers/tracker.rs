//! The PostgreSQL peer: seeds/001's table and indexes, seeds/000's statements.

use super::*;

pub(super) const CREATE_TABLE: &str = "
CREATE TABLE task_tracker (
    id bigserial PRIMARY KEY,
    task_id text NOT NULL,
    execution_id text NOT NULL,
    queue_name text NOT NULL,
    message_version text NOT NULL DEFAULT '1.0',
    status text NOT NULL DEFAULT 'queued',
    enqueued_at timestamptz NOT NULL,
    processing_started_at timestamptz,
    completed_at timestamptz,
    failed_at timestamptz,
    archived_at timestamptz,
    retry_count integer NOT NULL DEFAULT 0,
    max_retries integer NOT NULL DEFAULT 5,
    last_retry_at timestamptz,
    error_message text,
    error_category text,
    error_stack text,
    metadata jsonb NOT NULL DEFAULT '{}',
    archived_reason text,
    archived_by text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
)";

/// seeds/001: the field indexes (`index: true`, executionId unique) and the compound ones.
pub(super) const INDEXES: &[&str] = &[
    "CREATE INDEX ON task_tracker (task_id)",
    "CREATE UNIQUE INDEX ON task_tracker (execution_id)",
    "CREATE INDEX ON task_tracker (queue_name)",
    "CREATE INDEX ON task_tracker (status)",
    "CREATE INDEX ON task_tracker (enqueued_at)",
    "CREATE INDEX ON task_tracker (processing_started_at)",
    "CREATE INDEX ON task_tracker (retry_count)",
    "CREATE INDEX ON task_tracker (error_category)",
    "CREATE INDEX ON task_tracker (created_at)",
    "CREATE UNIQUE INDEX ON task_tracker (task_id, execution_id)",
    "CREATE INDEX ON task_tracker (task_id, status, enqueued_at DESC)",
    "CREATE INDEX ON task_tracker (queue_name, status, enqueued_at DESC)",
    "CREATE INDEX ON task_tracker (status, processing_started_at)",
    "CREATE INDEX ON task_tracker (error_category, failed_at DESC)",
    "CREATE INDEX ON task_tracker (task_id, created_at)",
    "CREATE INDEX ON task_tracker (status, updated_at DESC)",
];

pub(super) const COLUMNS: &str =
    "task_id, execution_id, queue_name, message_version, status, enqueued_at, \
    processing_started_at, completed_at, failed_at, archived_at, retry_count, max_retries, \
    error_message, error_category, error_stack, metadata, archived_reason, archived_by, \
    created_at, updated_at";

pub(super) async fn pg_pool(
    conninfo: &str,
    size: usize,
) -> anyhow::Result<deadpool_postgres::Pool> {
    let config: tokio_postgres::Config = conninfo.parse().context("--pg")?;
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .build()?;
    let client = pool.get().await.context("connecting to PostgreSQL")?;
    let row = client
        .query_one(
            "SELECT current_setting('synchronous_commit'), current_setting('fsync'), version()",
            &[],
        )
        .await?;
    let (sync, fsync): (String, String) = (row.get(0), row.get(1));
    // Open every connection now, so no scenario pays for connecting.
    let warm = futures_util::future::join_all((1..size).map(|_| pool.get())).await;
    for client in warm {
        drop(client?);
    }
    if sync != "on" || fsync != "on" {
        bail!("the PostgreSQL peer must run with synchronous_commit = on and fsync = on (has {sync}/{fsync})");
    }
    Ok(pool)
}

pub(super) async fn pg_reset(
    pool: &deadpool_postgres::Pool,
    with_indexes: bool,
) -> anyhow::Result<()> {
    let client = pool.get().await?;
    client
        .batch_execute("DROP TABLE IF EXISTS task_tracker")
        .await?;
    client.batch_execute(CREATE_TABLE).await?;
    if with_indexes {
        pg_indexes(&client).await?;
    }
    Ok(())
}

pub(super) async fn pg_indexes(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    for index in INDEXES {
        client.batch_execute(index).await?;
    }
    client.batch_execute("ANALYZE task_tracker").await?;
    Ok(())
}

pub(super) fn pg_time(millis: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

/// seeds/000's enqueue: look for a recent queued/processing execution of the taskId, then insert.
pub(super) async fn pg_enqueue(
    client: &deadpool_postgres::Client,
    step: &Step,
) -> anyhow::Result<bool> {
    let find = client
        .prepare_cached(
            "SELECT execution_id FROM task_tracker WHERE task_id = $1 \
             AND status IN ('queued', 'processing') AND enqueued_at > $2 LIMIT 1",
        )
        .await?;
    if client
        .query_opt(&find, &[&step.task_id, &pg_time(step.at - DEDUP_WINDOW_MS)])
        .await?
        .is_some()
    {
        return Ok(false);
    }
    let insert = client
        .prepare_cached(
            "INSERT INTO task_tracker (task_id, execution_id, queue_name, status, enqueued_at, \
             metadata, created_at, updated_at) VALUES ($1, $2, $3, 'queued', $4, $5, $4, $4)",
        )
        .await?;
    let metadata = serde_json::json!({"partnerCode": "SATLOC", "logId": step.log_id.to_string()});
    let at = pg_time(step.at);
    match client
        .execute(
            &insert,
            &[
                &step.task_id,
                &step.execution_id.to_string(),
                &QUEUE,
                &at,
                &metadata,
            ],
        )
        .await
    {
        Ok(_) => Ok(true),
        // The unique index refuses a second row of one executionId (`TaskTracker.create` throws).
        Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

/// One step on the PostgreSQL tracker, as seeds/000 writes it. True when the step took effect.
pub(super) async fn pg_step(
    client: &deadpool_postgres::Client,
    step: &Step,
) -> anyhow::Result<bool> {
    let at = pg_time(step.at);
    let execution = step.execution_id.to_string();
    Ok(match step.op {
        Op::Enqueue => pg_enqueue(client, step).await?,
        Op::Claim => {
            let claim = client
                .prepare_cached(
                    "UPDATE task_tracker SET status = 'processing', processing_started_at = $3 \
                     WHERE task_id = $1 AND execution_id = $2 AND status IN ('queued', 'failed') \
                     RETURNING *",
                )
                .await?;
            client
                .query_opt(&claim, &[&step.task_id, &execution, &at])
                .await?
                .is_some()
        }
        Op::Succeed => {
            let succeed = client
                .prepare_cached(
                    "UPDATE task_tracker SET status = 'completed', completed_at = $2 \
                     WHERE execution_id = $1",
                )
                .await?;
            client.execute(&succeed, &[&execution, &at]).await? > 0
        }
        Op::Fail => {
            let read = client
                .prepare_cached(
                    "SELECT retry_count, max_retries FROM task_tracker WHERE execution_id = $1",
                )
                .await?;
            let can_retry = client
                .query_opt(&read, &[&execution])
                .await?
                .is_some_and(|row| row.get::<_, i32>(0) < row.get::<_, i32>(1));
            let fail = client
                .prepare_cached(
                    "UPDATE task_tracker SET status = $2, error_message = $3, error_category = $4, \
                     error_stack = $5, failed_at = $6, retry_count = retry_count + 1 \
                     WHERE execution_id = $1",
                )
                .await?;
            let status = if can_retry { "failed" } else { "dlq" };
            let category = legacy_category(TRANSIENT);
            client
                .execute(
                    &fail,
                    &[&execution, &status, &TRANSIENT, &category, &STACK, &at],
                )
                .await?
                > 0
        }
        Op::Retry => {
            // The operator's manual retry from the DLQ: archive the dead execution, enqueue anew.
            let archive = client
                .prepare_cached(
                    "UPDATE task_tracker SET status = 'archived', archived_at = $2, \
                     archived_reason = 'Manual retry initiated', archived_by = $3 \
                     WHERE task_id = $1 AND status IN ('dlq', 'failed')",
                )
                .await?;
            client
                .execute(&archive, &[&step.task_id, &at, &OPERATOR])
                .await?;
            pg_enqueue(client, step).await?
        }
    })
}

pub(super) fn legacy_category(message: &str) -> String {
    Policy::default().classify(message).to_owned()
}

/// The table as `mongoexport` would have written the collection: TaskTracker documents in relaxed
/// Extended JSON, one per line.
pub(super) async fn pg_export(pool: &deadpool_postgres::Pool, out: &Path) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!("SELECT id, {COLUMNS} FROM task_tracker ORDER BY id"),
            &[],
        )
        .await?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let millis =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| Timestamp(t.timestamp_millis()));
    for row in &rows {
        let status: String = row.get("status");
        let doc = taskledger_projections::LegacyDocument {
            task_id: TaskId::parse(row.get("task_id")).map_err(anyhow::Error::msg)?,
            execution_id: taskledger_domain::ExecutionId::parse(row.get("execution_id"))
                .map_err(anyhow::Error::msg)?,
            queue_name: row.get("queue_name"),
            message_version: row.get("message_version"),
            status: serde_json::from_value::<ExecutionStatus>(status.into())?,
            enqueued_at: Timestamp(
                row.get::<_, chrono::DateTime<chrono::Utc>>("enqueued_at")
                    .timestamp_millis(),
            ),
            processing_started_at: millis(row.get("processing_started_at")),
            completed_at: millis(row.get("completed_at")),
            failed_at: millis(row.get("failed_at")),
            archived_at: millis(row.get("archived_at")),
            retry_count: row.get::<_, i32>("retry_count") as u32,
            max_retries: row.get::<_, i32>("max_retries") as u32,
            error_message: row.get("error_message"),
            error_category: row.get("error_category"),
            error_stack: row.get("error_stack"),
            metadata: row.get("metadata"),
            archived_reason: row.get("archived_reason"),
            archived_by: row.get("archived_by"),
            created_at: Timestamp(
                row.get::<_, chrono::DateTime<chrono::Utc>>("created_at")
                    .timestamp_millis(),
            ),
            updated_at: Timestamp(
                row.get::<_, chrono::DateTime<chrono::Utc>>("updated_at")
                    .timestamp_millis(),
            ),
        };
        let mut oid = [0u8; 12];
        oid[4..].copy_from_slice(&(row.get::<_, i64>("id") as u64).to_be_bytes());
        writeln!(
            file,
            "{}",
            taskledger_replay::simulate::tasktracker_line(&doc, oid)
        )?;
    }
    file.flush()?;
    Ok(rows.len() as u64)
}
