//! The projector's durable fold state: when to write a snapshot, whether a stored one is
//! usable, and how an election resumed (the statements on `projection_snapshots` and
//! `projector_elections`, schema/V84, are [`crate::store::projector::snapshots`]').
//!
//! A snapshot is the whole in-memory fold ([`Ledger::to_snapshot`]) at a checkpoint this
//! projector had committed. A newly elected leader loads the latest one and folds only the
//! events after it, instead of the whole log. It is only ever a cache: a missing one, one of
//! another [`PROJECTION_VERSION`] or [`SNAPSHOT_FORMAT`], of the other mode, ahead of the
//! checkpoint or that does not parse means a full fold of the log, logged with the reason. It
//! must never make rows differ from a fold of the log.
//!
//! Writes never hold up the checkpoint's transaction: the state is serialized between two
//! batches (on a blocking thread) and written by a task of its own on a connection of its own;
//! the live loop folds on meanwhile. A rebuild deletes the snapshot in its swap transaction and
//! writes a fresh one right after the swap.

use super::{Live, PROJECTION_NAME, PROJECTION_VERSION};
use crate::store::projector::snapshots;
use deadpool_postgres::Pool;
use projections::{Ledger, SNAPSHOT_FORMAT};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Events folded after the latest snapshot before the live projector writes a new one: bounds
/// what a new leader folds after loading it (at the rebuild benchmark's rate, about 0.25 s).
pub const SNAPSHOT_EVERY_EVENTS: i64 = 50_000;
/// Wait after a failed snapshot write before trying again (serializing costs the whole state).
pub const SNAPSHOT_RETRY: Duration = Duration::from_secs(30);

/// The reason given when no snapshot is stored (a new deployment, or after an invalidation):
/// an expected state, logged as information; every other reason is a warning.
pub const NO_SNAPSHOT: &str = "no snapshot";

/// The live projector's snapshot bookkeeping.
pub(super) struct Snapshots {
    /// Events folded after the latest snapshot before writing the next.
    pub(super) every_events: i64,
    /// Position of the latest snapshot loaded or written (0: none).
    position: i64,
    /// The write in flight, with the position it writes.
    writing: Option<(i64, JoinHandle<anyhow::Result<()>>)>,
    /// When the last write failed.
    failed_at: Option<Instant>,
}

impl Snapshots {
    /// Bookkeeping for a fold whose latest snapshot is at `position` (0: none).
    pub(super) fn at(position: i64) -> Snapshots {
        Snapshots {
            every_events: SNAPSHOT_EVERY_EVENTS,
            position,
            writing: None,
            failed_at: None,
        }
    }
}

impl Live {
    /// Called between batches: collects a finished write, and starts one when the checkpoint
    /// has passed the next multiple of `every_events` ([`SNAPSHOT_EVERY_EVENTS`] by default)
    /// since the latest snapshot.
    pub(super) async fn maybe_snapshot(&mut self, pool: &Pool) -> anyhow::Result<()> {
        if let Some((_, writing)) = &self.snapshots.writing {
            if !writing.is_finished() {
                return Ok(());
            }
            self.collect_snapshot().await;
        }
        // Due when the checkpoint has passed a multiple of `every_events` the latest snapshot had
        // not reached: snapshots stay at most about `every_events` behind however many events
        // each batch folds (a batch may end past the multiple).
        let every = self.snapshots.every_events.max(1);
        let due = self.checkpoint / every > self.snapshots.position / every;
        let resting = (self.snapshots.failed_at).is_some_and(|at| at.elapsed() < SNAPSHOT_RETRY);
        if due && !resting {
            let state = self.serialize().await?;
            let (pool, livemode, position) =
                (pool.clone(), self.ledger.livemode(), self.checkpoint);
            let writing =
                tokio::spawn(async move { write(&pool, livemode, position, state).await });
            self.snapshots.writing = Some((position, writing));
        }
        Ok(())
    }

    /// Waits for the write in flight, if any, and records how it ended (a failed write is
    /// logged here, once, and retried after [`SNAPSHOT_RETRY`]).
    pub(super) async fn collect_snapshot(&mut self) {
        let Some((position, writing)) = self.snapshots.writing.take() else {
            return;
        };
        match writing.await.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(()) => {
                self.snapshots.position = position;
                self.snapshots.failed_at = None;
            }
            Err(error) => {
                tracing::warn!(
                    projection.name = PROJECTION_NAME,
                    log.position = position,
                    error = format!("{error:#}"),
                    "projector snapshot write failed; the next election folds more"
                );
                self.snapshots.failed_at = Some(Instant::now());
            }
        }
    }

    /// Serializes the fold on a blocking thread (the ledger moves there and back, so it is
    /// never copied); the live loop waits for it, the runtime does not.
    async fn serialize(&mut self) -> anyhow::Result<Vec<u8>> {
        let ledger = std::mem::take(&mut self.ledger);
        let (ledger, state) = tokio::task::spawn_blocking(move || {
            let state = ledger.to_snapshot();
            (ledger, state)
        })
        .await?;
        self.ledger = ledger;
        Ok(state)
    }

    /// Writes a snapshot at the checkpoint now and waits for it (after a rebuild's swap).
    pub(super) async fn snapshot_now(&mut self, pool: &Pool) -> anyhow::Result<()> {
        self.collect_snapshot().await;
        let started = Instant::now();
        let state = self.serialize().await?;
        let bytes = state.len();
        write(pool, self.ledger.livemode(), self.checkpoint, state).await?;
        self.snapshots.position = self.checkpoint;
        tracing::info!(
            projection.name = PROJECTION_NAME,
            log.position = self.checkpoint,
            bytes,
            duration_ms = started.elapsed().as_millis() as u64,
            "projector snapshot written"
        );
        Ok(())
    }
}

/// Stores `state`, the fold through `position`, at this build's version and format (see
/// [`snapshots::write`] for which stored snapshot it replaces).
async fn write(pool: &Pool, livemode: bool, position: i64, state: Vec<u8>) -> anyhow::Result<()> {
    let snapshot = snapshots::StoredSnapshot {
        version: PROJECTION_VERSION,
        format: SNAPSHOT_FORMAT,
        livemode,
        position: crate::store::log::position(position),
        state,
    };
    snapshots::write(pool, snapshot).await
}

/// A fold state loaded from a snapshot, and the position it was taken at.
pub(super) struct Loaded {
    pub ledger: Ledger,
    pub position: i64,
}

/// The latest snapshot, when it is usable for a fold in `livemode` resuming at `checkpoint`;
/// otherwise why not (the caller folds the log from its start). Errors: the database.
pub(super) async fn load(
    pool: &Pool,
    livemode: bool,
    checkpoint: i64,
) -> anyhow::Result<Result<Loaded, String>> {
    let Some(stored) = snapshots::latest(pool).await? else {
        return Ok(Err(NO_SNAPSHOT.into()));
    };
    let (version, format, mode) = (stored.version, stored.format, stored.livemode);
    let position = stored.position.get();
    let refused = if version != PROJECTION_VERSION {
        Some(format!(
            "snapshot of fold version {version}, this is {PROJECTION_VERSION}"
        ))
    } else if format != SNAPSHOT_FORMAT {
        Some(format!(
            "snapshot format {format}, this reads {SNAPSHOT_FORMAT}"
        ))
    } else if mode != livemode {
        Some(format!("snapshot of livemode {mode}"))
    } else if position > checkpoint {
        Some(format!(
            "snapshot at {position} is ahead of the checkpoint {checkpoint}"
        ))
    } else {
        None
    };
    if let Some(reason) = refused {
        return Ok(Err(reason));
    }
    let state = stored.state;
    let ledger = tokio::task::spawn_blocking(move || Ledger::from_snapshot(&state)).await?;
    Ok(ledger
        .map(|ledger| Loaded { ledger, position })
        .map_err(|error| error.to_string()))
}

/// How an election's leader got its fold state (a row of `projector_elections`).
pub(super) struct Election<'a> {
    pub instance_id: &'a str,
    /// The snapshot's position, or why none was loaded.
    pub snapshot: Result<i64, String>,
    pub checkpoint: i64,
    pub events_folded: i64,
    pub duration: Duration,
    /// Where the follower's warm standby was when the lock was granted; `None` for a cold
    /// resume.
    pub standby_position: Option<i64>,
}

/// Records an election (best effort for the caller: it is bookkeeping, not state).
pub(super) async fn record(pool: &Pool, election: &Election<'_>) -> anyhow::Result<()> {
    let row = snapshots::ElectionRow {
        instance_id: election.instance_id,
        snapshot: match &election.snapshot {
            Ok(position) => Ok(crate::store::log::position(*position)),
            Err(reason) => Err(reason.as_str()),
        },
        checkpoint: crate::store::log::position(election.checkpoint),
        events_folded: election.events_folded,
        duration_ms: election.duration.as_millis() as i64,
        standby_position: election.standby_position.map(crate::store::log::position),
    };
    snapshots::record_election(pool, &row).await
}
