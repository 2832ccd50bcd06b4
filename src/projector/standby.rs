//! A follower's warm standby: while another instance leads, a follower keeps the fold state in
//! memory at the leader's checkpoint, so that when it is elected it folds only the events the
//! old leader checkpointed since its last look (about [`STANDBY_INTERVAL`] of traffic) and goes
//! live at once, however long the log is.
//!
//! The standby reads only what the leader has committed: the checkpoint (`projections.position`)
//! and the events up to it. The fold is deterministic, so its state at the checkpoint is the
//! state behind the stored rows, as when a leader resumes from a snapshot ([`super::snapshot`]).
//! A rebuild's swap replaces the rows (and stamps `read_model_versions.rebuilt_at`); a standby
//! that sees a new stamp or fold version drops its state and loads again, from the latest
//! snapshot, in the background.
//!
//! Costs: a follower holds the same fold state in memory as the leader, and reads the log a
//! second time (the leader's batches, once, about a second late). A follower that has not yet
//! loaded when it is elected resumes as a cold leader does.

use super::tail::{fold_after, state_at, Live};
use super::{snapshot, PROJECTION_NAME, PROJECTION_VERSION};
use crate::store::projector::standbys::{self, Generation};
use deadpool_postgres::Pool;
use projections::Ledger;
use std::time::{Duration, Instant};

/// How often a standby folds what the leader has checkpointed since its last look.
pub const STANDBY_INTERVAL: Duration = Duration::from_secs(1);

/// The leader's checkpoint and the rows' generation (see [`standbys::checkpoint`]).
async fn checkpoint(pool: &Pool) -> anyhow::Result<(i64, Generation)> {
    let (position, generation) = standbys::checkpoint(pool, PROJECTION_VERSION).await?;
    Ok((position.get(), generation))
}

/// A follower's fold state at (or a little behind) the leader's checkpoint.
pub struct Standby {
    ledger: Ledger,
    /// Every event through this position is folded.
    position: i64,
    /// Where the state came from: the snapshot's position, or why none was used.
    origin: Result<i64, String>,
    generation: Generation,
}

impl Standby {
    /// Loads the latest usable snapshot and folds the events after it up to the leader's
    /// checkpoint (the whole log without a snapshot). Errors: the database.
    pub async fn load(pool: &Pool, livemode: bool) -> anyhow::Result<Standby> {
        let (checkpoint, generation) = checkpoint(pool).await?;
        let (ledger, origin) = state_at(pool, livemode, checkpoint).await?;
        Ok(Standby {
            ledger,
            position: checkpoint,
            origin,
            generation,
        })
    }

    /// Folds what the leader has checkpointed since the last call. Returns `false` when the
    /// rows were rebuilt (or are of another fold version) since the state was loaded: the
    /// caller drops this standby.
    pub async fn catch_up(&mut self, pool: &Pool) -> anyhow::Result<bool> {
        let (checkpoint, generation) = checkpoint(pool).await?;
        if generation != self.generation || checkpoint < self.position {
            return Ok(false);
        }
        fold_after(pool, &mut self.ledger, self.position, checkpoint).await?;
        self.ledger.take_changes();
        self.position = checkpoint;
        Ok(true)
    }

    /// The elected follower's live state: the standby caught up to the checkpoint it now owns.
    /// `None` when the standby is out of date (a rebuild swapped the rows): the caller resumes
    /// as a cold leader.
    pub(super) async fn into_live(
        mut self,
        pool: &Pool,
        owner: &str,
    ) -> anyhow::Result<Option<Live>> {
        let started = Instant::now();
        let from = self.position;
        report(pool, owner, None).await?;
        if !self.catch_up(pool).await? {
            return Ok(None);
        }
        let snapshot_at = *self.origin.as_ref().unwrap_or(&0);
        // Recorded as every election is: the events folded on top of the snapshot (here while
        // standing by and at election alike), and the time from the grant of the lock to live.
        let election = snapshot::Election {
            instance_id: owner,
            snapshot: self.origin.clone(),
            checkpoint: self.position,
            events_folded: self.position - snapshot_at,
            duration: started.elapsed(),
            standby_position: Some(from),
        };
        tracing::info!(
            projection.name = PROJECTION_NAME,
            checkpoint = self.position,
            events_folded = self.position - from,
            duration_ms = election.duration.as_millis() as u64,
            "projector elected with its standby state; tailing the log"
        );
        if let Err(error) = snapshot::record(pool, &election).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "projector election not recorded"
            );
        }
        Ok(Some(Live {
            ledger: self.ledger,
            checkpoint: self.position,
            owner: owner.to_owned(),
            snapshots: snapshot::Snapshots::at(snapshot_at),
        }))
    }
}

/// Records where `instance_id`'s standby stands (see [`standbys::record`]).
async fn report(pool: &Pool, instance_id: &str, position: Option<i64>) -> anyhow::Result<()> {
    standbys::record(pool, instance_id, position.map(crate::store::log::position)).await
}

/// The standby a waiting follower keeps: loads it when missing, catches it up otherwise, and
/// drops it when the rows were rebuilt under it; then records where it stands. Failures are
/// logged and retried at the next interval (a standby is an optimisation: without one,
/// election resumes cold).
pub async fn tend(standby: &mut Option<Standby>, pool: &Pool, livemode: bool, instance_id: &str) {
    let result = match standby {
        Some(state) => match state.catch_up(pool).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::info!(
                    projection.name = PROJECTION_NAME,
                    "read models rebuilt: the standby fold state is loaded again"
                );
                *standby = None;
                Ok(())
            }
            Err(error) => Err(error),
        },
        None => Standby::load(pool, livemode)
            .await
            .map(|state| *standby = Some(state)),
    };
    if let Err(error) = result {
        *standby = None;
        tracing::warn!(
            error = format!("{error:#}"),
            "standby fold state not kept up"
        );
    }
    let position = standby.as_ref().map(|s| s.position);
    if let Err(error) = report(pool, instance_id, position).await {
        tracing::debug!(
            error = format!("{error:#}"),
            "standby position not recorded"
        );
    }
}
