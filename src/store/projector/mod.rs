//! The projector's bookkeeping: the only code issuing SQL on `projections` (checkpoint, owner,
//! failure), `projection_errors` (reads and the swap's reset; the inserts are
//! [`crate::store::projection_errors`]), `rebuilds` ([`rebuilds`]), `read_model_versions` ([`swap`],
//! [`status`]), `projection_snapshots` and `projector_elections` ([`snapshots`]),
//! `projector_standbys` ([`standbys`]); also the
//! statements a rebuild's swap runs on the read-model tables as a whole ([`swap`]) and a
//! preview's comparison of them ([`diff`]). The advisory lock keys are here, once.
//!
//! It decides nothing: which version is stale, when to snapshot, when to rebuild is the
//! projector's ([`crate::projector`]); it passes the fold version it runs where a row records
//! one.

pub mod diff;
pub mod rebuilds;
pub mod snapshots;
pub mod standbys;
pub mod status;
pub mod swap;

pub use rebuilds::{RebuildRecord, RebuildStatus};
pub use status::{FoldFailure, Lag, ProjectionFacts, ReadModelFacts, RowCountMethod};

use crate::store::log::position;
use deadpool_postgres::{GenericClient, Pool};
use projections::{FoldError, LogPosition};

/// The projection's name, the key of its rows in `projections`, `rebuilds`,
/// `projection_errors` and `projection_snapshots`: one fold renders every read model together,
/// because they share the tenant links learned from each other.
pub const PROJECTION_NAME: &str = "billing";

/// Advisory lock key of the projector ("billproj"), held for a session by the leader on a
/// connection of its own.
pub const PROJECTOR_LOCK_KEY: i64 = 0x6269_6c6c_7072_6f6a;

/// Advisory lock key ("billprev") a `billing-ledger rebuild --preview` command holds, on a
/// connection of its own, while it runs its preview: a `running` command preview whose lock is
/// free belongs to a process that ended, and is marked failed before the next request.
pub const PREVIEW_LOCK_KEY: i64 = 0x6269_6c6c_7072_6576;

/// A fold failure with the position of its event (a row of `projection_errors`).
pub struct RecordedError {
    pub position: i64,
    pub error: FoldError,
}

/// One non-blocking attempt at [`PROJECTOR_LOCK_KEY`] on `client` (a session lock: it lasts
/// until released or until the connection closes).
pub async fn try_projector_lock(client: &tokio_postgres::Client) -> anyhow::Result<bool> {
    try_lock(client, PROJECTOR_LOCK_KEY).await
}

/// Waits for [`PROJECTOR_LOCK_KEY`] on `client` (a connection of the caller's own) until the
/// holder's session ends. The connection's `statement_timeout` and `lock_timeout` are lifted
/// first (the wait lasts as long as the leader does, and `lock_timeout` applies to advisory
/// locks too), which is why it must never be a pooled one.
pub async fn wait_projector_lock(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    client
        .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")
        .await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&PROJECTOR_LOCK_KEY])
        .await?;
    Ok(())
}

/// One non-blocking attempt at [`PREVIEW_LOCK_KEY`] on `client` (a connection of the caller's
/// own, kept open while the preview runs).
pub async fn try_preview_lock(client: &tokio_postgres::Client) -> anyhow::Result<bool> {
    try_lock(client, PREVIEW_LOCK_KEY).await
}

async fn try_lock(client: &tokio_postgres::Client, key: i64) -> anyhow::Result<bool> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await?;
    Ok(row.get(0))
}

/// Names the session (`application_name`, shown in `pg_stat_activity`).
pub async fn name_session(client: &tokio_postgres::Client, name: &str) -> anyhow::Result<()> {
    client
        .execute("SELECT set_config('application_name', $1, false)", &[&name])
        .await?;
    Ok(())
}

/// Records `owner` as the projection's owner, creating its row at `version` (checkpoint 0)
/// when none exists; returns the fold version the stored rows were written by.
pub async fn claim(pool: &Pool, owner: &str, version: i32) -> anyhow::Result<i32> {
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO projections (name, version) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&PROJECTION_NAME, &version],
        )
        .await?;
    let row = client
        .query_one(
            "UPDATE projections SET owner = $2 WHERE name = $1 RETURNING version",
            &[&PROJECTION_NAME, &owner],
        )
        .await?;
    Ok(row.get(0))
}

/// Records why the projector stopped (cleared by its next checkpoint).
pub async fn record_failure(pool: &Pool, error: &str) -> anyhow::Result<()> {
    pool.get()
        .await?
        .execute(
            "UPDATE projections SET last_failure = $2, last_failure_at = now() WHERE name = $1",
            &[&PROJECTION_NAME, &error],
        )
        .await?;
    Ok(())
}

/// The stored checkpoint: the last position folded into the read models.
pub async fn checkpoint(pool: &Pool) -> anyhow::Result<LogPosition> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT position FROM projections WHERE name = $1",
            &[&PROJECTION_NAME],
        )
        .await?;
    Ok(position(row.get(0)))
}

/// Advances the checkpoint from `from` to `to` in the batch's transaction, by compare-and-set:
/// `false` when the stored checkpoint is not `from` or `owner` no longer owns the projection
/// (a deposed leader). Clears the recorded failure.
pub async fn advance(
    tx: &deadpool_postgres::Transaction<'_>,
    owner: &str,
    from: LogPosition,
    to: LogPosition,
) -> anyhow::Result<bool> {
    let advance = tx
        .prepare_cached(
            "UPDATE projections SET position = $3, updated_at = now(), last_failure = NULL,
                 last_failure_at = NULL
             WHERE name = $1 AND position = $2 AND owner = $4",
        )
        .await?;
    let advanced = tx
        .execute(
            &advance,
            &[&PROJECTION_NAME, &from.get(), &to.get(), &owner],
        )
        .await?;
    Ok(advanced == 1)
}

/// The log head and the checkpoint as `client`'s server sees them (the read API's
/// `X-Ledger-Position` and `X-Ledger-Checkpoint`; a replica's may trail the primary's).
pub async fn head_and_checkpoint(
    client: &impl GenericClient,
) -> anyhow::Result<(LogPosition, LogPosition)> {
    let statement = client
        .prepare_cached(
            "SELECT (SELECT position FROM log_head),
                 coalesce((SELECT position FROM projections WHERE name = $1), 0)",
        )
        .await?;
    let row = client.query_one(&statement, &[&PROJECTION_NAME]).await?;
    Ok((position(row.get(0)), position(row.get(1))))
}

/// The figures the metrics refresh besides the lag: fold errors recorded, unresolved events,
/// and the active rebuild's progress (0 to 1; `None` when none is active).
pub async fn gauges(client: &impl GenericClient) -> anyhow::Result<(i64, i64, Option<f64>)> {
    let active = [
        RebuildStatus::Pending.as_str(),
        RebuildStatus::Running.as_str(),
    ];
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM projection_errors),
                (SELECT count(*) FROM unresolved_events),
                (SELECT CASE WHEN coalesce(position_target, 0) = 0 THEN 0
                             ELSE position_done::float8 / position_target END
                 FROM rebuilds WHERE status = ANY($1) LIMIT 1)",
            &[&&active[..]],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}
