//! Tailing the log: the leader's in-memory fold ([`Live`]), how it is resumed on election (the
//! latest usable snapshot plus the events after it, or else the whole log up to the
//! checkpoint), and each batch's step: fold, write the rows, advance the checkpoint by
//! compare-and-set in the same transaction.

use super::snapshot;
use super::stream::{fold, read_events, stream_log, RecordedError};
use super::{FOLD_BATCH_EVENTS, PROJECTION_NAME};
use crate::store;
use crate::store::read_models;
use deadpool_postgres::Pool;
use projections::Ledger;

/// The leader's in-memory fold and the checkpoint its rows are at.
pub struct Live {
    pub(super) ledger: Ledger,
    pub(super) checkpoint: i64,
    pub(super) owner: String,
    pub(super) snapshots: snapshot::Snapshots,
}

impl Live {
    /// Rebuilds the in-memory state behind the stored rows: the latest usable snapshot plus
    /// the events after it, or else the whole log up to the checkpoint. Records the election
    /// (`projector_elections`) and logs how it resumed.
    pub(super) async fn resume(pool: &Pool, livemode: bool, owner: &str) -> anyhow::Result<Live> {
        let started = std::time::Instant::now();
        let checkpoint = store::projector::checkpoint(pool).await?.get();
        let (ledger, from) = state_at(pool, livemode, checkpoint).await?;
        let after = *from.as_ref().unwrap_or(&0);
        let election = snapshot::Election {
            instance_id: owner,
            snapshot: from,
            checkpoint,
            events_folded: checkpoint - after,
            duration: started.elapsed(),
            standby_position: None,
        };
        log_resumed(&election);
        if let Err(error) = snapshot::record(pool, &election).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "projector election not recorded"
            );
        }
        Ok(Live {
            ledger,
            checkpoint,
            owner: owner.to_owned(),
            snapshots: snapshot::Snapshots::at(after),
        })
    }

    /// Folds and writes the next batch; returns how many events it folded.
    pub(super) async fn step(&mut self, pool: &Pool) -> anyhow::Result<usize> {
        let batch = read_events(pool, self.checkpoint, FOLD_BATCH_EVENTS).await?;
        let Some(last) = batch.last().map(|e| e.position) else {
            return Ok(0);
        };
        let folded = batch.len();
        let errors = fold(&mut self.ledger, batch, true);
        let changes = self.ledger.take_changes();
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        read_models::write(&tx, &changes).await?;
        let tenants = changes.tenant_pricing.keys().map(String::as_str).collect();
        crate::entitlements::refresh(&tx, crate::entitlements::Scope::Tenants(tenants)).await?;
        store::projection_errors::record_errors(&tx, &errors).await?;
        let (from, to) = (
            store::log::position(self.checkpoint),
            store::log::position(last),
        );
        let advanced = store::projector::advance(&tx, &self.owner, from, to).await?;
        anyhow::ensure!(advanced, "checkpoint moved under this projector");
        tx.commit().await?;
        assert!(last > self.checkpoint, "positions only move forward");
        self.checkpoint = last;
        Ok(folded)
    }
}

/// Logs how an elected projector got its fold state, once.
fn log_resumed(election: &snapshot::Election<'_>) {
    let duration_ms = election.duration.as_millis() as u64;
    match &election.snapshot {
        Ok(position) => tracing::info!(
            projection.name = PROJECTION_NAME,
            checkpoint = election.checkpoint,
            snapshot.position = position,
            events_folded = election.events_folded,
            duration_ms,
            "projector state loaded from a snapshot; tailing the log"
        ),
        Err(reason) if reason == snapshot::NO_SNAPSHOT => tracing::info!(
            projection.name = PROJECTION_NAME,
            checkpoint = election.checkpoint,
            events_folded = election.events_folded,
            duration_ms,
            "no projector snapshot stored: whole log folded; tailing the log"
        ),
        Err(reason) => tracing::warn!(projection.name = PROJECTION_NAME,
            checkpoint = election.checkpoint, reason = %reason,
            events_folded = election.events_folded, duration_ms,
            "projector snapshot not usable: whole log re-folded; tailing the log"),
    }
}

/// The fold state behind the rows at `checkpoint`: the latest usable snapshot plus the events
/// after it, or else the whole log up to the checkpoint; with the snapshot's position, or why
/// none was used. Changes are taken (the rows already hold them).
pub(super) async fn state_at(
    pool: &Pool,
    livemode: bool,
    checkpoint: i64,
) -> anyhow::Result<(Ledger, Result<i64, String>)> {
    let (mut ledger, from) = match snapshot::load(pool, livemode, checkpoint).await? {
        Ok(loaded) => (loaded.ledger, Ok(loaded.position)),
        Err(reason) => (Ledger::new(livemode), Err(reason)),
    };
    fold_after(pool, &mut ledger, *from.as_ref().unwrap_or(&0), checkpoint).await?;
    ledger.take_changes();
    Ok((ledger, from))
}

/// Folds the events after `after` through `up_to` into `ledger`: from the log's start by one
/// streamed read ([`fold_log`]), after a snapshot by batched reads (at most about
/// [`snapshot::SNAPSHOT_EVERY_EVENTS`] events).
pub(super) async fn fold_after(
    pool: &Pool,
    ledger: &mut Ledger,
    after: i64,
    up_to: i64,
) -> anyhow::Result<()> {
    if after == 0 {
        fold_log(pool, ledger, up_to).await?;
        return Ok(());
    }
    let mut position = after;
    while position < up_to {
        let batch = read_events(pool, position, FOLD_BATCH_EVENTS.min(up_to - position)).await?;
        let Some(last) = batch.last().map(|e| e.position) else {
            break;
        };
        fold(ledger, batch, false);
        position = last;
    }
    Ok(())
}

/// Folds every event with position `<= up_to` into `ledger`, in batches (never the whole log
/// in memory). Returns the fold errors.
async fn fold_log(
    pool: &Pool,
    ledger: &mut Ledger,
    up_to: i64,
) -> anyhow::Result<Vec<RecordedError>> {
    let mut errors = Vec::new();
    let mut batches = stream_log(pool.clone(), up_to);
    while let Some(batch) = batches.recv().await {
        errors.extend(fold(ledger, batch?, false));
    }
    Ok(errors)
}
