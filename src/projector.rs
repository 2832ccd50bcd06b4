//! The projector: folds the log into the read models, on exactly one instance at a time.
//! This module is the wiring: [`run`] competes for leadership and, once elected, runs the
//! leader's loop (tail, run queued rebuilds, expire grace periods). The parts:
//!
//! - `election`: a session-level advisory lock taken on a dedicated connection (never a pooled
//!   one, whose session outlives its borrower); PostgreSQL releases it when that connection
//!   ends, so a dead leader's lock frees itself and a waiting follower is granted it at once.
//!   The elected leader claims the projection.
//! - [`standby`](mod@standby): while it waits, a follower keeps a warm standby, the fold state
//!   at the leader's checkpoint, so that once elected it folds only the last second's events.
//! - `tail` ([`Live`]): on election the leader loads the latest fold-state snapshot
//!   (`snapshot`) and folds only the events between it and the stored checkpoint (without a
//!   usable snapshot, the whole log up to the checkpoint: the fold is deterministic, so either
//!   reproduces the state behind the rows), then tails `position > checkpoint`, writing a new
//!   snapshot every [`SNAPSHOT_EVERY_EVENTS`] events. Each batch's rows and the new checkpoint
//!   commit in one transaction, and the checkpoint advances only by compare-and-set from the
//!   value this leader read, so a deposed leader's write rolls back. Positions are dense and
//!   commit in order (`event_log`), so tailing never skips an event.
//! - `stream`: the log as the fold reads it (batches, or one COPY stream parsed ahead).
//! - [`rebuild`](mod@rebuild): folds the whole log into a fresh ledger and replaces every
//!   row and the checkpoint in one transaction: readers see the old rows until the commit, and
//!   the live loop resumes from the rebuilt checkpoint, so events appended meanwhile are folded
//!   right after. A preview ([`preview`]) does the same and rolls back, keeping what would
//!   change.
//! - [`status`]: what the projector reports (lag, typed states, read models' sizes).
//!
//! None of these issues SQL: the statements are [`crate::store::log`]'s (reading the log) and
//! [`crate::store::projector`]'s (the bookkeeping), and the rows are written by the read
//! models' stores.

pub mod preview;
pub mod rebuild;
pub mod status;

pub use rebuild::{
    active_rebuild, claim_preview, rebuild, request_preview, request_rebuild, Progress,
};
pub use status::{lag, Lag};

mod election;
mod snapshot;
mod standby;
mod stream;
mod tail;

pub use snapshot::SNAPSHOT_EVERY_EVENTS;
pub use stream::{read_events, Stored};
pub use tail::Live;

use deadpool_postgres::Pool;
use election::{acquire_lock, claim, record_failure};
use rebuild::pending_rebuild;
use std::sync::Arc;
use std::time::Duration;
use stream::{fold, stream_log};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use crate::store::projector::{
    try_preview_lock, RecordedError, PROJECTION_NAME, PROJECTOR_LOCK_KEY,
};

/// Bump when the fold's logic changes; the status then reports the stored rows as stale.
/// Version 3: a failed payment infers `incomplete` until the subscription has been live, and a
/// paid invoice infers `active` after `incomplete`, `past_due` or `unpaid`. Version 4: money
/// (invoices, payments, refunds, disputes, credit notes) and money events' tenants.
/// Version 5: `tenant_pricing.product_id`, the product of the price. Version 6: the revenue
/// read model (`revenue_streams`, `revenue_movements`). Version 7: the tenant Stripe names on
/// an object itself outranks an admin link.
pub const PROJECTION_VERSION: i32 = 7;
/// Events read and folded per transaction.
pub const FOLD_BATCH_EVENTS: i64 = 1_000;
/// Batches a rebuild reads ahead of its fold.
pub const READ_AHEAD_BATCHES: usize = 4;
/// How long a woken projector waits for more appends before folding (adds this to lag).
pub const LINGER: Duration = Duration::from_millis(5);
/// Shortest time between the starts of two passes that each folded less than a full batch:
/// under steady ingest every append would otherwise start a pass of its own (a read, a
/// transaction of read-model writes, a commit) for the few events it brought; pacing them
/// took a quarter to a third of PostgreSQL's CPU per event off at concurrency 4 and 16
/// (README, Performance, ingest). Adds at most this much to the projection's lag while events keep arriving.
pub const PASS_INTERVAL_MIN: Duration = Duration::from_millis(50);
/// How often an idle projector looks for new events when no wake-up arrives.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a projector that stopped on an error waits before competing for the lock again.
pub const ELECTION_RETRY: Duration = Duration::from_secs(1);

/// PostgreSQL NOTIFY channel every append signals (payload: the new head position).
pub const APPEND_CHANNEL: &str = "ledger_events";

/// How this instance's projector runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    pub livemode: bool,
    /// Identifies this process in `projections.owner` and the lock connection's
    /// `application_name`.
    pub instance_id: String,
    /// Queue a rebuild on election when the stored rows come from another fold version.
    pub rebuild_stale: bool,
    /// Events folded between two snapshots of the fold state (default
    /// [`SNAPSHOT_EVERY_EVENTS`]).
    pub snapshot_every_events: i64,
    /// Keep a warm standby of the fold state while following ([`standby`]).
    pub standby: bool,
}

/// Runs until `shutdown`: competes for the lock, projects while holding it, and competes again
/// after losing it. `wake` is notified by local appends; appends by other instances arrive by
/// LISTEN on the lock connection. Returning releases the lock (its connection closes).
pub async fn run(pool: Pool, settings: Settings, wake: Arc<Notify>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let led = tokio::select! {
            result = lead(&pool, &settings, &wake, &shutdown) => result,
            () = shutdown.cancelled() => Ok(()),
        };
        if let Err(error) = led {
            if shutdown.is_cancelled() {
                // A follower waiting for the lock is told to stop: a normal shutdown.
                break;
            }
            let error = format!("{error:#}");
            tracing::warn!(%error, "projector stopped; competing again");
            record_failure(&pool, &error).await;
        }
        tokio::select! {
            () = tokio::time::sleep(ELECTION_RETRY) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// One non-blocking attempt at the projector lock.
pub async fn try_lock(client: &tokio_postgres::Client) -> anyhow::Result<bool> {
    crate::store::projector::try_projector_lock(client).await
}

/// Leads while this instance holds the lock: claims the projection, resumes the fold, then
/// alternates queued rebuilds and tailing steps until the lock connection is lost or a step
/// fails.
async fn lead(
    pool: &Pool,
    settings: &Settings,
    wake: &Notify,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut standby = None;
    let (lock, mut appended) = acquire_lock(pool, settings, &mut standby, shutdown).await?;
    tracing::info!(projection.name = PROJECTION_NAME, instance.id = %settings.instance_id, "projector elected");
    let owner = settings.instance_id.as_str();
    let stored_version = claim(pool, owner).await?;
    if settings.rebuild_stale && stored_version != PROJECTION_VERSION {
        if let Some(rebuild_id) = request_rebuild(pool).await? {
            tracing::info!(rebuild.id = %rebuild_id, stored_version, "stale projection: rebuild queued");
        }
    }
    let warm = match standby {
        Some(standby) => standby.into_live(pool, owner).await?,
        None => None,
    };
    let mut live = match warm {
        Some(live) => live,
        None => Live::resume(pool, settings.livemode, owner).await?,
    };
    live.snapshots.every_events = settings.snapshot_every_events;
    let mut last_expiry = std::time::Instant::now();
    loop {
        anyhow::ensure!(!lock.is_closed(), "lost the projector lock connection");
        if let Some(rebuild_id) = pending_rebuild(pool).await? {
            live.collect_snapshot().await;
            if let Some(rebuilt) =
                rebuild(pool, settings.livemode, rebuild_id, owner, |_| {}).await?
            {
                live = rebuilt;
                live.snapshots.every_events = settings.snapshot_every_events;
            }
            continue;
        }
        if last_expiry.elapsed() >= crate::entitlements::EXPIRY_INTERVAL {
            crate::entitlements::expire_grace(pool).await?;
            last_expiry = std::time::Instant::now();
        }
        let pass_started = tokio::time::Instant::now();
        let folded = live.step(pool).await?;
        live.maybe_snapshot(pool).await?;
        if folded > 0 && (folded as i64) < FOLD_BATCH_EVENTS {
            // Events are still trickling in: let them gather into the next pass.
            tokio::time::sleep_until(pass_started + PASS_INTERVAL_MIN).await;
        } else if folded == 0 {
            tokio::select! {
                () = wake.notified() => {}
                _ = appended.recv() => {}
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            // Let a burst gather, so one transaction folds many events instead of one each.
            tokio::time::sleep(LINGER).await;
        }
    }
}
