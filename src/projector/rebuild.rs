//! The rebuild queue and the rebuild itself: fold the whole log, then swap every read-model row
//! and the checkpoint in one transaction, or (a preview) compare and roll back.
//!
//! Control flow only; the rows are written by [`crate::store::read_models`] and
//! [`crate::store::money`], the comparison is [`super::preview`]'s. The caller holds the
//! projector lock, so nothing else writes the read models meanwhile.

use super::preview::{self, Diff};
use super::status::{RebuildStatus, READ_MODELS};
use super::{fold, stream_log, Live, RecordedError, FOLD_BATCH_EVENTS, READ_AHEAD_BATCHES};
use super::{PROJECTION_NAME, PROJECTION_VERSION};
use crate::store::read_models;
use deadpool_postgres::{Pool, Transaction};
use projections::{Changes, Ledger};
use uuid::Uuid;

/// The oldest rebuild waiting to run, if any.
pub(super) async fn pending_rebuild(pool: &Pool) -> anyhow::Result<Option<Uuid>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT rebuild_id FROM rebuilds WHERE status = $1 ORDER BY requested_at LIMIT 1",
            &[&RebuildStatus::Pending.as_str()],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Queues a rebuild; `None` when a rebuild or preview is already pending or running.
pub async fn request_rebuild(pool: &Pool) -> anyhow::Result<Option<Uuid>> {
    queue(pool, false).await
}

/// Queues a preview (a rebuild that reports instead of swapping); `None` when a rebuild or
/// preview is already pending or running.
pub async fn request_preview(pool: &Pool) -> anyhow::Result<Option<Uuid>> {
    queue(pool, true).await
}

/// Advisory lock key ("billprev") a `billing-ledger rebuild --preview` command holds, on a
/// connection of its own, while it runs its preview: a `running` command preview whose lock is
/// free belongs to a process that ended, and is marked failed before the next request.
pub const PREVIEW_LOCK_KEY: i64 = 0x6269_6c6c_7072_6576;

/// Records a preview that this process runs itself, already `running`, so no projector picks
/// it up; `None` when a rebuild or preview is already pending or running. This is how
/// `billing-ledger rebuild --preview` previews the fold of its own binary (a changed fold,
/// before it is deployed) while the service keeps projecting with the deployed one. The caller
/// holds [`PREVIEW_LOCK_KEY`] (see [`try_preview_lock`]).
pub async fn claim_preview(pool: &Pool) -> anyhow::Result<Option<Uuid>> {
    let client = pool.get().await?;
    client
        .execute(
            &format!("UPDATE rebuilds SET {ABANDONED} WHERE status = $1 AND by_command"),
            &[
                &RebuildStatus::Running.as_str(),
                &RebuildStatus::Failed.as_str(),
            ],
        )
        .await?;
    drop(client);
    insert(pool, true, RebuildStatus::Running).await
}

/// One non-blocking attempt at [`PREVIEW_LOCK_KEY`] on `client` (a connection of the caller's
/// own, kept open while the preview runs).
pub async fn try_preview_lock(client: &tokio_postgres::Client) -> anyhow::Result<bool> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&PREVIEW_LOCK_KEY])
        .await?;
    Ok(row.get(0))
}

/// How an abandoned command preview is closed (`$2`: the failed status).
const ABANDONED: &str = "status = $2, finished_at = now(),
    error = 'abandoned: the rebuild --preview command running it ended'";

async fn queue(pool: &Pool, preview: bool) -> anyhow::Result<Option<Uuid>> {
    // A command preview whose process ended would hold the queue forever: close it when its
    // lock is free (a transaction-level try, released at once).
    pool.get()
        .await?
        .execute(
            &format!(
                "WITH free AS (SELECT pg_try_advisory_xact_lock($3) AS yes)
                 UPDATE rebuilds SET {ABANDONED}
                 WHERE status = $1 AND by_command AND (SELECT yes FROM free)"
            ),
            &[
                &RebuildStatus::Running.as_str(),
                &RebuildStatus::Failed.as_str(),
                &PREVIEW_LOCK_KEY,
            ],
        )
        .await?;
    insert(pool, preview, RebuildStatus::Pending).await
}

async fn insert(pool: &Pool, preview: bool, status: RebuildStatus) -> anyhow::Result<Option<Uuid>> {
    let rebuild_id = Uuid::new_v4();
    let by_command = status == RebuildStatus::Running;
    let client = pool.get().await?;
    let inserted = client
        .execute(
            "INSERT INTO rebuilds (rebuild_id, projection, status, preview, by_command)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[
                &rebuild_id,
                &PROJECTION_NAME,
                &status.as_str(),
                &preview,
                &by_command,
            ],
        )
        .await?;
    Ok((inserted == 1).then_some(rebuild_id))
}

/// The pending or running rebuild, if any.
pub async fn active_rebuild(pool: &Pool) -> anyhow::Result<Option<Uuid>> {
    let client = pool.get().await?;
    let active = [
        RebuildStatus::Pending.as_str(),
        RebuildStatus::Running.as_str(),
    ];
    let row = client
        .query_opt(
            "SELECT rebuild_id FROM rebuilds WHERE status = ANY($1)",
            &[&&active[..]],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// How far a rebuild has come, in log positions.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub position_done: i64,
    pub position_target: i64,
}

/// Runs rebuild `rebuild_id` (the caller holds the projector lock): folds the log up to its
/// head, then swaps every read-model row and the checkpoint in one transaction and returns the
/// new live state; a preview stores its [`Diff`] instead, swaps nothing and returns `None`.
pub async fn rebuild(
    pool: &Pool,
    livemode: bool,
    rebuild_id: Uuid,
    owner: &str,
    mut progress: impl FnMut(Progress),
) -> anyhow::Result<Option<Live>> {
    let result = rebuild_inner(pool, livemode, rebuild_id, owner, &mut progress).await;
    if let Err(error) = &result {
        let client = pool.get().await?;
        client
            .execute(
                "UPDATE rebuilds SET status = $3, finished_at = now(), error = $2
                 WHERE rebuild_id = $1",
                &[
                    &rebuild_id,
                    &format!("{error:#}"),
                    &RebuildStatus::Failed.as_str(),
                ],
            )
            .await?;
    }
    let Some(mut live) = result? else {
        return Ok(None); // a preview: nothing swapped, the snapshot stays
    };
    // The snapshot is a cache: a rebuild that swapped stays done when writing it fails.
    if let Err(error) = live.snapshot_now(pool).await {
        tracing::warn!(
            projection.name = PROJECTION_NAME,
            error = format!("{error:#}"),
            "projector snapshot after the rebuild not written; the next election folds the log"
        );
    }
    Ok(Some(live))
}

/// The table a rebuild stages `event_tenants` in, renamed into place by the swap (the table is
/// not in the change feed, so no capture trigger is bound to its oid).
const STAGING: &str = "event_tenants_rebuild";

/// What a rebuild swaps in.
struct Rebuilt {
    ledger: Ledger,
    changes: Changes,
    errors: Vec<RecordedError>,
}

async fn rebuild_inner(
    pool: &Pool,
    livemode: bool,
    rebuild_id: Uuid,
    owner: &str,
    progress: &mut impl FnMut(Progress),
) -> anyhow::Result<Option<Live>> {
    let started = std::time::Instant::now();
    let (target, is_preview) = start(pool, rebuild_id).await?;
    let mut rebuilt = fold_into_staging(pool, livemode, rebuild_id, target, progress).await?;
    let folded_ms = started.elapsed().as_millis() as u64;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = write_rows(&tx, &mut rebuilt, is_preview);
    tokio::try_join!(read_models::index_staged_event_tenants(pool, STAGING), rows)?;
    if is_preview {
        let diff = preview::compare(&tx, STAGING).await?;
        tx.rollback().await?;
        finish_preview(pool, rebuild_id, target, &diff).await?;
        tracing::info!(projection.name = PROJECTION_NAME, rebuild.id = %rebuild_id,
            events = target, rows_changed = diff.total(),
            duration_ms = started.elapsed().as_millis() as u64, "rebuild preview finished");
        return Ok(None);
    }
    finish_swap(&tx, rebuild_id, target, owner, &rebuilt.errors).await?;
    tx.commit().await?;
    analyze(&client).await?;
    tracing::info!(projection.name = PROJECTION_NAME, rebuild.id = %rebuild_id,
        events = target, fold_ms = folded_ms, duration_ms = started.elapsed().as_millis() as u64,
        "rebuild swapped in");
    Ok(Some(Live {
        ledger: rebuilt.ledger,
        checkpoint: target,
        owner: owner.to_owned(),
        snapshots: super::snapshot::Snapshots::at(0),
    }))
}

/// Marks the rebuild running at the log's head; returns that head and whether it is a preview.
async fn start(pool: &Pool, rebuild_id: Uuid) -> anyhow::Result<(i64, bool)> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "UPDATE rebuilds SET status = $2, started_at = now(),
                 position_target = (SELECT position FROM log_head)
             WHERE rebuild_id = $1 RETURNING position_target, preview",
            &[&rebuild_id, &RebuildStatus::Running.as_str()],
        )
        .await?;
    let (target, is_preview): (i64, bool) = (row.get(0), row.get(1));
    tracing::info!(projection.name = PROJECTION_NAME, rebuild.id = %rebuild_id,
        position_target = target, preview = is_preview, "rebuild started");
    Ok((target, is_preview))
}

/// Folds the log through `target` in memory, streaming the attributions (one row per event)
/// into [`STAGING`] on their own task so the fold never waits on them.
async fn fold_into_staging(
    pool: &Pool,
    livemode: bool,
    rebuild_id: Uuid,
    target: i64,
    progress: &mut impl FnMut(Progress),
) -> anyhow::Result<Rebuilt> {
    pool.get()
        .await?
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {STAGING};
             CREATE TABLE {STAGING} (LIKE event_tenants INCLUDING DEFAULTS INCLUDING CONSTRAINTS);"
        ))
        .await?;
    let (stage, staged) = tokio::sync::mpsc::channel(READ_AHEAD_BATCHES);
    let stager = tokio::spawn({
        let pool = pool.clone();
        async move { read_models::copy_event_tenants(&pool, STAGING, staged).await }
    });
    let mut ledger = Ledger::new(livemode);
    let errors = fold_log_reporting(pool, &mut ledger, rebuild_id, target, &stage, progress).await;
    let errors = errors?;
    ledger.mark_all_changed();
    // Money rows are rendered and written a chunk at a time at the swap (`write_deferred`).
    let mut changes = ledger.take_changes_deferring_money();
    let last = std::mem::take(&mut changes.event_tenants);
    let _ = stage.send(last).await;
    drop(stage);
    stager.await??;
    Ok(Rebuilt {
        ledger,
        changes,
        errors,
    })
}

/// The fold loop: every batch through `target`, its attributions sent to `stage`, progress
/// reported (and stored) every 1% of the log and at the end.
async fn fold_log_reporting(
    pool: &Pool,
    ledger: &mut Ledger,
    rebuild_id: Uuid,
    target: i64,
    stage: &tokio::sync::mpsc::Sender<read_models::Attributions>,
    progress: &mut impl FnMut(Progress),
) -> anyhow::Result<Vec<RecordedError>> {
    let client = pool.get().await?;
    let mut errors = Vec::new();
    let mut batches = stream_log(pool.clone(), target);
    let mut reported = 0;
    while let Some(batch) = batches.recv().await {
        let batch = batch?;
        let position_done = batch.last().map_or(0, |e| e.position);
        errors.extend(fold(ledger, batch, false));
        if stage.send(ledger.take_attributions()).await.is_err() {
            break; // the stager failed; its error is reported by the caller
        }
        if position_done - reported >= (target / 100).max(FOLD_BATCH_EVENTS)
            || position_done == target
        {
            reported = position_done;
            progress(Progress {
                position_done,
                position_target: target,
            });
            client
                .execute(
                    "UPDATE rebuilds SET position_done = $2 WHERE rebuild_id = $1",
                    &[&rebuild_id, &position_done],
                )
                .await?;
        }
    }
    Ok(errors)
}

/// Replaces every read-model row (not `event_tenants`, staged apart) in `tx`. The swap writes
/// every row at once: no per-statement limit. DELETE, not TRUNCATE, so readers keep the old
/// rows until the commit instead of waiting on a lock.
///
/// The change feed gets only what the rebuild really changed, with cause `rebuild`: capture
/// is suspended while every row is rewritten, then the tables are compared with their
/// snapshots at once (schema/V60). A preview snapshots the tables for its own comparison
/// instead and never resumes capture (its transaction rolls back).
async fn write_rows(
    tx: &Transaction<'_>,
    rebuilt: &mut Rebuilt,
    is_preview: bool,
) -> anyhow::Result<()> {
    crate::entitlements::set_cause(tx, "rebuild").await?;
    if is_preview {
        preview::snapshot(tx).await?;
    }
    tx.batch_execute("SELECT capture_suspend()").await?;
    tx.batch_execute(
        "SET LOCAL statement_timeout = 0;
         SET LOCAL lock_timeout = '30s';
         DELETE FROM tenant_pricing; DELETE FROM checkout_sessions; DELETE FROM customers;
         DELETE FROM unresolved_events;",
    )
    .await?;
    crate::store::money::clear(tx).await?;
    read_models::write(tx, &rebuilt.changes).await?;
    crate::store::money::write_deferred(tx, &mut rebuilt.ledger).await?;
    crate::entitlements::refresh(tx, crate::entitlements::Scope::All).await?;
    if !is_preview {
        tx.batch_execute("SELECT capture_resume()").await?;
    }
    Ok(())
}

/// The swap's bookkeeping, in its transaction: fold errors, checkpoint, versions, the rebuild's
/// end, and `event_tenants` renamed into place last, so its readers wait on its lock only for
/// the renames and the commit. The names match schema/V2__read_models.sql.
async fn finish_swap(
    tx: &Transaction<'_>,
    rebuild_id: Uuid,
    target: i64,
    owner: &str,
    errors: &[RecordedError],
) -> anyhow::Result<()> {
    tx.execute(
        "DELETE FROM projection_errors WHERE projection = $1",
        &[&PROJECTION_NAME],
    )
    .await?;
    crate::store::projection_errors::record_errors(tx, errors).await?;
    super::snapshot::invalidate(tx).await?;
    tx.execute(
        "INSERT INTO projections (name, version, position, owner) VALUES ($1, $3, $2, $4)
         ON CONFLICT (name) DO UPDATE SET position = $2, version = $3, owner = $4,
             updated_at = now(), last_failure = NULL, last_failure_at = NULL",
        &[&PROJECTION_NAME, &target, &PROJECTION_VERSION, &owner],
    )
    .await?;
    let names: Vec<&str> = READ_MODELS.iter().map(|m| m.name).collect();
    tx.execute(
        "INSERT INTO read_model_versions (read_model, version, rebuilt_at)
         SELECT name, $2, now() FROM unnest($1::text[]) AS name
         ON CONFLICT (read_model) DO UPDATE SET version = $2, rebuilt_at = now()",
        &[&names, &PROJECTION_VERSION],
    )
    .await?;
    tx.execute(
        "UPDATE rebuilds SET status = $3, finished_at = now(), position_done = $2
         WHERE rebuild_id = $1",
        &[&rebuild_id, &target, &RebuildStatus::Done.as_str()],
    )
    .await?;
    tx.batch_execute(&format!(
        "DROP TABLE event_tenants;
         ALTER TABLE {STAGING} RENAME TO event_tenants;
         ALTER INDEX {STAGING}_pkey RENAME TO event_tenants_pkey;
         ALTER INDEX {STAGING}_event RENAME TO event_tenants_event;"
    ))
    .await?;
    Ok(())
}

/// Records a preview's diff and end, and drops its staged attributions.
async fn finish_preview(
    pool: &Pool,
    rebuild_id: Uuid,
    target: i64,
    diff: &Diff,
) -> anyhow::Result<()> {
    let client = pool.get().await?;
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS {STAGING}"))
        .await?;
    client
        .execute(
            "UPDATE rebuilds SET status = $3, finished_at = now(), position_done = $2, diff = $4
             WHERE rebuild_id = $1",
            &[
                &rebuild_id,
                &target,
                &RebuildStatus::Done.as_str(),
                &serde_json::to_value(diff)?,
            ],
        )
        .await?;
    Ok(())
}

/// A bulk reload leaves the planner's statistics stale until autovacuum comes by
/// (event_tenants was analyzed while staged; statistics follow the rename).
async fn analyze(client: &deadpool_postgres::Client) -> anyhow::Result<()> {
    client
        .batch_execute("ANALYZE tenant_pricing, checkout_sessions, customers, unresolved_events;")
        .await?;
    client
        .batch_execute(&crate::store::money::analyze_sql())
        .await?;
    Ok(())
}
