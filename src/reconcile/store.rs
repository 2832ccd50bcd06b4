//! The reconciliation's SQL: what the log holds for a page of Stripe's event IDs, the
//! `reconcile_runs` history, and the advisory lock that lets one run at a time. Appending
//! goes through [`crate::event_log::append_batch`], never through this module; nothing here
//! writes to `events` or `deliveries`.

use super::{Difference, Report, Trigger};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use std::collections::HashMap;

/// Advisory lock key held by a running reconciliation ("billreco"); any 64-bit constant unique
/// to this service.
pub const RECONCILE_LOCK_KEY: i64 = 0x6269_6c6c_7265_636f;

/// What the log says an event means: the fields compared with Stripe's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meaning {
    pub event_type: String,
    /// Stripe's `created`, Unix seconds.
    pub created: i64,
    pub object_id: Option<String>,
    pub livemode: bool,
    /// Stripe's `account` (Connect).
    pub account: Option<String>,
}

/// The stored meaning of each of `ids` the log holds.
pub async fn meanings(pool: &Pool, ids: &[&str]) -> anyhow::Result<HashMap<String, Meaning>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT event_id, type, extract(epoch FROM created)::bigint, object_id, livemode,
                    account
             FROM events WHERE event_id = ANY($1::text[])",
            &[&ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let meaning = Meaning {
                event_type: row.get(1),
                created: row.get(2),
                object_id: row.get(3),
                livemode: row.get(4),
                account: row.get(5),
            };
            (row.get(0), meaning)
        })
        .collect())
}

/// Checks that the database holds a ledger (for a dry run, which neither creates the
/// database nor applies migrations). Errors name what to do.
pub async fn check_schema(pool: &Pool) -> anyhow::Result<()> {
    use anyhow::Context;
    let client = pool
        .get()
        .await
        .context("opening the database (a dry run never creates it)")?;
    client
        .query("SELECT 1 FROM events LIMIT 0", &[])
        .await
        .context("the database holds no ledger yet (a dry run applies no migrations; run billing-ledger migrate)")?;
    Ok(())
}

/// Takes the reconciliation lock on a dedicated connection (PostgreSQL frees it when the
/// connection ends, so a crashed runner never holds it). `None` when another runner holds it.
pub async fn try_lock(database_url: &str) -> anyhow::Result<Option<tokio_postgres::Client>> {
    let client = crate::db::connect(database_url).await?;
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RECONCILE_LOCK_KEY])
        .await?;
    Ok(row.get::<_, bool>(0).then_some(client))
}

/// Records a run as started; returns its ID.
pub async fn start_run(
    pool: &Pool,
    trigger: Trigger,
    instance_id: &str,
    window: &crate::stripe::events_api::Window,
) -> anyhow::Result<i64> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "INSERT INTO reconcile_runs (trigger, instance_id, started_at, status, window_since,
                 window_until)
             VALUES ($1, $2, now(), 'running', $3, $4) RETURNING run_id",
            &[
                &trigger.as_str(),
                &instance_id,
                &window.since,
                &window.until,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Records a run's end: its report, and the error that stopped it, if one did.
pub async fn finish_run(
    pool: &Pool,
    run_id: i64,
    report: &Report,
    error: Option<&str>,
) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let status = if error.is_some() {
        "failed"
    } else if report.has_problems() {
        "succeeded_with_problems"
    } else {
        "succeeded"
    };
    client
        .execute(
            "UPDATE reconcile_runs SET finished_at = clock_timestamp(), status = $2,
                 listed_events = $3, present_events = $4, appended_events = $5,
                 appended_by_type = $6, differences = $7, unreadable = $8, error = $9,
                 unreadable_events = $10, out_of_scope = $11, out_of_scope_events = $12
             WHERE run_id = $1 AND status = 'running'",
            &[
                &run_id,
                &status,
                &(report.listed as i64),
                &(report.present as i64),
                &(report.appended as i64),
                &serde_json::to_value(&report.appended_by_type)?,
                &serde_json::to_value(&report.differences)?,
                &serde_json::to_value(&report.unreadable)?,
                &error,
                &(report.unreadable_events as i64),
                &serde_json::to_value(&report.out_of_scope)?,
                &(report.out_of_scope_events as i64),
            ],
        )
        .await?;
    Ok(())
}

/// How long ago (by the database's clock, shared by every instance) the latest run of
/// `trigger` started, if any did.
pub async fn since_last_start(
    pool: &Pool,
    trigger: Trigger,
) -> anyhow::Result<Option<std::time::Duration>> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT extract(epoch FROM now() - max(started_at))::float8 FROM reconcile_runs
             WHERE trigger = $1",
            &[&trigger.as_str()],
        )
        .await?;
    Ok(row
        .get::<_, Option<f64>>(0)
        .map(|seconds| std::time::Duration::from_secs_f64(seconds.max(0.0))))
}

/// Records how many events a running run has listed so far (shown by the admin route).
pub async fn progress(pool: &Pool, run_id: i64, listed: u64) -> anyhow::Result<()> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE reconcile_runs SET listed_events = $2 WHERE run_id = $1 AND status = 'running'",
            &[&run_id, &(listed as i64)],
        )
        .await?;
    Ok(())
}

/// The end of the window of the latest successful run of `trigger` (with problems or not:
/// listing it again would not make an unreadable event readable), if any succeeded.
pub async fn last_success_until(
    pool: &Pool,
    trigger: Trigger,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT max(window_until) FROM reconcile_runs
             WHERE trigger = $1 AND status IN ('succeeded', 'succeeded_with_problems')",
            &[&trigger.as_str()],
        )
        .await?;
    Ok(row.get(0))
}

/// Marks runs left `running` by a runner that died (its lock is gone, so none is running) as
/// failed. Call only while holding the lock.
pub async fn close_abandoned(pool: &Pool) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    Ok(client
        .execute(
            "UPDATE reconcile_runs SET status = 'failed', finished_at = clock_timestamp(),
                 error = 'abandoned: the runner stopped before finishing'
             WHERE status = 'running'",
            &[],
        )
        .await?)
}

/// A recorded run, as the admin route shows it.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub run_id: i64,
    pub trigger: String,
    pub instance_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: String,
    pub window_since: DateTime<Utc>,
    pub window_until: DateTime<Utc>,
    pub listed_events: i64,
    pub present_events: i64,
    pub appended_events: i64,
    pub appended_by_type: serde_json::Value,
    pub differences: Vec<Difference>,
    pub unreadable: serde_json::Value,
    pub error: Option<String>,
    pub unreadable_events: i64,
    pub out_of_scope: serde_json::Value,
    pub out_of_scope_events: i64,
}

/// The latest `limit` runs, newest first.
pub async fn recent_runs(pool: &Pool, limit: i64) -> anyhow::Result<Vec<RunRow>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT run_id, trigger, instance_id, started_at, finished_at, status, window_since,
                    window_until, listed_events, present_events, appended_events,
                    appended_by_type, differences, unreadable, error, unreadable_events,
                    out_of_scope, out_of_scope_events
             FROM reconcile_runs ORDER BY started_at DESC, run_id DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(RunRow {
                run_id: row.get(0),
                trigger: row.get(1),
                instance_id: row.get(2),
                started_at: row.get(3),
                finished_at: row.get(4),
                status: row.get(5),
                window_since: row.get(6),
                window_until: row.get(7),
                listed_events: row.get(8),
                present_events: row.get(9),
                appended_events: row.get(10),
                appended_by_type: row.get(11),
                differences: serde_json::from_value(row.get(12))?,
                unreadable: row.get(13),
                error: row.get(14),
                unreadable_events: row.get(15),
                out_of_scope: row.get(16),
                out_of_scope_events: row.get(17),
            })
        })
        .collect()
}
