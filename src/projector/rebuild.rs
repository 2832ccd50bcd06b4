//! The rebuild queue and the rebuild itself: fold the whole log, then swap every read-model row
//! and the checkpoint in one transaction, or (a preview) compare and roll back.
//!
//! Control flow only; the rows are written by [`crate::store::read_models`] and
//! [`crate::store::money`], the comparison is [`super::preview`]'s. The caller holds the
//! projector lock, so nothing else writes the read models meanwhile.

use super::preview::{self, Diff};
use super::status::READ_MODELS;
use super::{fold, stream_log, Live, RecordedError, FOLD_BATCH_EVENTS, READ_AHEAD_BATCHES};
use super::{PROJECTION_NAME, PROJECTION_VERSION};
use crate::store::log::position;
use crate::store::projector::{rebuilds, snapshots, swap, RebuildStatus};
use crate::store::read_models;
use deadpool_postgres::{Pool, Transaction};
use projections::{Changes, Ledger};
use uuid::Uuid;

/// The oldest rebuild waiting to run, if any.
pub(super) async fn pending_rebuild(pool: &Pool) -> anyhow::Result<Option<Uuid>> {
    rebuilds::oldest_pending(pool).await
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

/// Records a preview that this process runs itself, already `running`, so no projector picks
/// it up; `None` when a rebuild or preview is already pending or running. This is how
/// `billing-ledger rebuild --preview` previews the fold of its own binary (a changed fold,
/// before it is deployed) while the service keeps projecting with the deployed one. The caller
/// holds [`crate::store::projector::PREVIEW_LOCK_KEY`] (see
/// [`crate::store::projector::try_preview_lock`]).
pub async fn claim_preview(pool: &Pool) -> anyhow::Result<Option<Uuid>> {
    rebuilds::close_abandoned_previews(pool).await?;
    rebuilds::insert(pool, true, RebuildStatus::Running).await
}

async fn queue(pool: &Pool, preview: bool) -> anyhow::Result<Option<Uuid>> {
    rebuilds::close_unlocked_previews(pool).await?;
    rebuilds::insert(pool, preview, RebuildStatus::Pending).await
}

/// The pending or running rebuild, if any.
pub async fn active_rebuild(pool: &Pool) -> anyhow::Result<Option<Uuid>> {
    rebuilds::active(pool).await
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
        rebuilds::fail(pool, rebuild_id, &format!("{error:#}")).await?;
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
    let (target, is_preview) = rebuilds::start(pool, rebuild_id).await?;
    let target = target.get();
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
    swap::create_staging(pool, STAGING).await?;
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
            rebuilds::record_progress(&client, rebuild_id, position(position_done)).await?;
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
    swap::suspend_capture(tx).await?;
    swap::clear_read_models(tx).await?;
    crate::store::money::clear(tx).await?;
    read_models::write(tx, &rebuilt.changes).await?;
    crate::store::money::write_deferred(tx, &mut rebuilt.ledger).await?;
    crate::entitlements::refresh(tx, crate::entitlements::Scope::All).await?;
    if !is_preview {
        swap::resume_capture(tx).await?;
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
    swap::clear_errors(tx).await?;
    crate::store::projection_errors::record_errors(tx, errors).await?;
    snapshots::invalidate(tx).await?;
    swap::set_checkpoint(tx, position(target), PROJECTION_VERSION, owner).await?;
    let names: Vec<&str> = READ_MODELS.iter().map(|m| m.name).collect();
    swap::record_versions(tx, &names, PROJECTION_VERSION).await?;
    rebuilds::finish(tx, rebuild_id, position(target), None).await?;
    swap::rename_staging(tx, STAGING).await?;
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
    swap::drop_staging(&client, STAGING).await?;
    let diff = serde_json::to_value(diff)?;
    rebuilds::finish(&client, rebuild_id, position(target), Some(&diff)).await?;
    Ok(())
}

/// A bulk reload leaves the planner's statistics stale until autovacuum comes by
/// (event_tenants was analyzed while staged; statistics follow the rename).
async fn analyze(client: &deadpool_postgres::Client) -> anyhow::Result<()> {
    swap::analyze(client).await?;
    client
        .batch_execute(&crate::store::money::analyze_sql())
        .await?;
    Ok(())
}
