//! The only SQL of outgoing webhooks: endpoints (`webhook_endpoints`) and attempts
//! (`webhook_attempts`), schema/V62.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;
use uuid::Uuid;

/// An endpoint as stored (its secret included: only the dispatcher and creation see it).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub endpoint_id: Uuid,
    pub url: String,
    pub secret: String,
    pub read_models: Option<Vec<String>>,
    pub source: String,
    pub cursor: i64,
    pub failed_attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

const ENDPOINT_COLUMNS: &str = "endpoint_id, url, secret, read_models, source, cursor,
    failed_attempts, next_attempt_at, disabled_at, disabled_reason, created_at";

impl Endpoint {
    fn from_row(row: &Row) -> Endpoint {
        Endpoint {
            endpoint_id: row.get(0),
            url: row.get(1),
            secret: row.get(2),
            read_models: row.get(3),
            source: row.get(4),
            cursor: row.get(5),
            failed_attempts: row.get(6),
            next_attempt_at: row.get(7),
            disabled_at: row.get(8),
            disabled_reason: row.get(9),
            created_at: row.get(10),
        }
    }
}

/// What a new endpoint is made of.
pub struct NewEndpoint<'a> {
    pub url: &'a str,
    pub secret: &'a str,
    pub read_models: Option<Vec<String>>,
    /// Where it starts; `None`: the feed's head (only changes from now on).
    pub after: Option<i64>,
}

/// Stores an endpoint registered by the admin API.
pub async fn create(pool: &Pool, new: NewEndpoint<'_>) -> anyhow::Result<Endpoint> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            &format!(
                "INSERT INTO webhook_endpoints (endpoint_id, url, secret, read_models, source, cursor)
                 VALUES ($1, $2, $3, $4, 'api', coalesce($5, (SELECT id FROM change_head)))
                 RETURNING {ENDPOINT_COLUMNS}"
            ),
            &[&Uuid::new_v4(), &new.url, &new.secret, &new.read_models, &new.after],
        )
        .await?;
    Ok(Endpoint::from_row(&row))
}

/// Makes the endpoints of `LEDGER_WEBHOOK_ENDPOINTS` exist (keyed by URL; a changed secret is
/// updated); a new one starts at the feed's head. Endpoints no longer configured are removed.
pub async fn sync_config(pool: &Pool, configured: &[(String, String)]) -> anyhow::Result<()> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let urls: Vec<&str> = configured.iter().map(|(url, _)| url.as_str()).collect();
    tx.execute(
        "DELETE FROM webhook_endpoints WHERE source = 'config' AND url <> ALL($1)",
        &[&urls],
    )
    .await?;
    for (url, secret) in configured {
        tx.execute(
            "INSERT INTO webhook_endpoints (endpoint_id, url, secret, source, cursor)
             VALUES ($1, $2, $3, 'config', (SELECT id FROM change_head))
             ON CONFLICT (url) WHERE source = 'config' DO UPDATE SET secret = excluded.secret",
            &[&Uuid::new_v4(), url, secret],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Every endpoint, oldest first.
pub async fn list(client: &impl GenericClient) -> anyhow::Result<Vec<Endpoint>> {
    let rows = client
        .query(
            &format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, endpoint_id"
            ),
            &[],
        )
        .await?;
    Ok(rows.iter().map(Endpoint::from_row).collect())
}

/// One endpoint.
pub async fn get(pool: &Pool, endpoint_id: Uuid) -> anyhow::Result<Option<Endpoint>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = $1"),
            &[&endpoint_id],
        )
        .await?;
    Ok(row.as_ref().map(Endpoint::from_row))
}

/// Removes an endpoint and its attempts; whether it existed.
pub async fn delete(pool: &Pool, endpoint_id: Uuid) -> anyhow::Result<bool> {
    let client = pool.get().await?;
    let deleted = client
        .execute(
            "DELETE FROM webhook_endpoints WHERE endpoint_id = $1",
            &[&endpoint_id],
        )
        .await?;
    Ok(deleted == 1)
}

/// Moves an endpoint's cursor to `after` (a replay, or skipping ahead), enables it and clears
/// its retry state; whether it existed.
pub async fn replay(pool: &Pool, endpoint_id: Uuid, after: i64) -> anyhow::Result<bool> {
    let client = pool.get().await?;
    let updated = client
        .execute(
            "UPDATE webhook_endpoints SET cursor = $2, failed_attempts = 0, next_attempt_at = NULL,
                 disabled_at = NULL, disabled_reason = NULL
             WHERE endpoint_id = $1",
            &[&endpoint_id, &after],
        )
        .await?;
    Ok(updated == 1)
}

/// One attempt to send one message.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub attempt_id: i64,
    pub change_id: i64,
    pub message_id: String,
    pub attempted_at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    pub error: Option<String>,
}

/// An endpoint's attempts, newest first, before `before` (a page of at most `limit`).
pub async fn attempts(
    pool: &Pool,
    endpoint_id: Uuid,
    before: i64,
    limit: i64,
) -> anyhow::Result<Vec<Attempt>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT attempt_id, change_id, message_id, attempted_at, status_code, duration_ms, error
             FROM webhook_attempts WHERE endpoint_id = $1 AND attempt_id < $2
             ORDER BY attempt_id DESC LIMIT $3",
            &[&endpoint_id, &before, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Attempt {
            attempt_id: row.get(0),
            change_id: row.get(1),
            message_id: row.get(2),
            attempted_at: row.get(3),
            status_code: row.get(4),
            duration_ms: row.get(5),
            error: row.get(6),
        })
        .collect())
}

/// What came of one attempt, as the dispatcher records it.
pub struct Outcome<'a> {
    pub change_id: i64,
    pub message_id: &'a str,
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    pub error: Option<&'a str>,
}

/// What the endpoint's state becomes after an attempt.
pub enum Next {
    /// Delivered (or skipped): the cursor moves to the change, the retry state clears.
    Advance,
    /// Failed: try again at this time.
    RetryAt(DateTime<Utc>),
    /// Disabled (410 Gone, or retries exhausted), with the reason.
    Disable(String),
}

/// Records an attempt and the endpoint's next state in one transaction. The endpoint moves
/// only from the cursor the dispatcher read (compare-and-set), so a stale dispatcher's write
/// changes nothing; returns whether it applied.
pub async fn record(
    pool: &Pool,
    endpoint: &Endpoint,
    outcome: &Outcome<'_>,
    next: Next,
    instance: &str,
) -> anyhow::Result<bool> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let updated = match next {
        Next::Advance => {
            tx.execute(
                "UPDATE webhook_endpoints SET cursor = $3, failed_attempts = 0,
                     next_attempt_at = NULL
                 WHERE endpoint_id = $1 AND cursor = $2",
                &[&endpoint.endpoint_id, &endpoint.cursor, &outcome.change_id],
            )
            .await?
        }
        Next::RetryAt(at) => {
            tx.execute(
                "UPDATE webhook_endpoints SET failed_attempts = failed_attempts + 1,
                     next_attempt_at = $3
                 WHERE endpoint_id = $1 AND cursor = $2",
                &[&endpoint.endpoint_id, &endpoint.cursor, &at],
            )
            .await?
        }
        Next::Disable(reason) => {
            tx.execute(
                "UPDATE webhook_endpoints SET failed_attempts = failed_attempts + 1,
                     disabled_at = now(), disabled_reason = $3, next_attempt_at = NULL
                 WHERE endpoint_id = $1 AND cursor = $2",
                &[&endpoint.endpoint_id, &endpoint.cursor, &reason],
            )
            .await?
        }
    };
    if outcome.status_code.is_some() || outcome.error.is_some() {
        tx.execute(
            "INSERT INTO webhook_attempts (endpoint_id, change_id, message_id, status_code,
                 duration_ms, error, instance)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &endpoint.endpoint_id,
                &outcome.change_id,
                &outcome.message_id,
                &outcome.status_code,
                &outcome.duration_ms,
                &outcome.error,
                &instance,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(updated == 1)
}

/// Records a round of attempts in one transaction: the cursor moves from `endpoint.cursor` to
/// `cursor_to` (compare-and-set, as [`record`]; a move clears the retry state) and each attempt
/// becomes a row. The commit is not waited on (`synchronous_commit = off`): a crash may lose
/// the last cursor moves, and those messages are sent again, which at-least-once delivery
/// allows. Returns whether it applied.
pub async fn record_round(
    pool: &Pool,
    endpoint: &Endpoint,
    cursor_to: i64,
    attempts: &[Outcome<'_>],
    instance: &str,
) -> anyhow::Result<bool> {
    assert!(
        cursor_to >= endpoint.cursor,
        "an endpoint's cursor never moves back in a round"
    );
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    let updated = tx
        .execute(
            "UPDATE webhook_endpoints
             SET cursor = $3,
                 failed_attempts = CASE WHEN $3 > $2 THEN 0 ELSE failed_attempts END,
                 next_attempt_at = CASE WHEN $3 > $2 THEN NULL ELSE next_attempt_at END
             WHERE endpoint_id = $1 AND cursor = $2",
            &[&endpoint.endpoint_id, &endpoint.cursor, &cursor_to],
        )
        .await?;
    if updated == 1 && !attempts.is_empty() {
        let change_ids: Vec<i64> = attempts.iter().map(|d| d.change_id).collect();
        let message_ids: Vec<&str> = attempts.iter().map(|d| d.message_id).collect();
        let statuses: Vec<Option<i32>> = attempts.iter().map(|d| d.status_code).collect();
        let durations: Vec<i32> = attempts.iter().map(|d| d.duration_ms).collect();
        let errors: Vec<Option<&str>> = attempts.iter().map(|d| d.error).collect();
        tx.execute(
            "INSERT INTO webhook_attempts (endpoint_id, change_id, message_id, status_code,
                 duration_ms, error, instance)
             SELECT $1, *, $7
             FROM unnest($2::bigint[], $3::text[], $4::int[], $5::int[], $6::text[])",
            &[
                &endpoint.endpoint_id,
                &change_ids,
                &message_ids,
                &statuses,
                &durations,
                &errors,
                &instance,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(updated == 1)
}

/// Endpoint health for the metrics: `(enabled and failing, disabled, changes not yet
/// delivered to enabled endpoints)`.
pub async fn health(client: &impl GenericClient) -> anyhow::Result<(i64, i64, i64)> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE disabled_at IS NULL AND failed_attempts > 0),
                    count(*) FILTER (WHERE disabled_at IS NOT NULL),
                    coalesce(sum((SELECT id FROM change_head) - cursor)
                        FILTER (WHERE disabled_at IS NULL), 0)::bigint
             FROM webhook_endpoints",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}
