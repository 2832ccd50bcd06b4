//! Leader election: the projector's session advisory lock, taken on a dedicated connection
//! (never a pooled one, whose session outlives its borrower), and the claim an elected leader
//! records. PostgreSQL releases the lock when that connection ends, so a dead leader's lock
//! frees itself and a waiting follower is granted it at once.

use super::{standby, Settings, APPEND_CHANNEL, PROJECTION_NAME, PROJECTION_VERSION};
use crate::store;
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

/// Takes the lock on a fresh listening connection, waiting for it; returns the connection
/// holding it and its append notifications. While it waits, the follower keeps `standby` at
/// the leader's checkpoint every [`standby::STANDBY_INTERVAL`] (unless `settings.standby` is
/// off).
///
/// The wait is PostgreSQL's own (`pg_advisory_lock` blocks until the holder's session ends),
/// so a follower is granted the lock the moment a dead leader's connection closes.
pub(super) async fn acquire_lock(
    pool: &Pool,
    settings: &Settings,
    standby: &mut Option<standby::Standby>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(tokio_postgres::Client, tokio::sync::mpsc::Receiver<()>)> {
    let (client, notifications) =
        crate::db::connect_listening(&settings.database_url, APPEND_CHANNEL).await?;
    let name = format!("billing-ledger projector {}", settings.instance_id);
    store::projector::name_session(&client, &name).await?;
    if try_lock(&client).await? {
        return Ok((client, notifications));
    }
    {
        let locked = store::projector::wait_projector_lock(&client);
        let mut locked = std::pin::pin!(locked);
        loop {
            // Polled first, so the lock request is queued while the standby folds.
            tokio::select! {
                result = &mut locked => {
                    result?;
                    break;
                }
                () = tokio::time::sleep(standby::STANDBY_INTERVAL) => {}
                () = shutdown.cancelled() => anyhow::bail!("shutting down"),
            }
            if settings.standby {
                standby::tend(standby, pool, settings.livemode, &settings.instance_id).await;
            }
        }
    }
    Ok((client, notifications))
}

/// One non-blocking attempt at the projector lock.
pub async fn try_lock(client: &tokio_postgres::Client) -> anyhow::Result<bool> {
    store::projector::try_projector_lock(client).await
}

/// Makes a projector failure visible in the status (best effort: the database may be the
/// cause).
pub(super) async fn record_failure(pool: &Pool, error: &str) {
    let _ = store::projector::record_failure(pool, error).await;
}

/// Records this instance as the projection's owner; returns the stored fold version.
pub(super) async fn claim(pool: &Pool, owner: &str) -> anyhow::Result<i32> {
    let version = store::projector::claim(pool, owner, PROJECTION_VERSION).await?;
    // Only the leader runs queued rebuilds (and previews), so one still `running` when a
    // leader is elected was left by a leader that died: queue it again, or it would block
    // every later request (409) for good.
    if store::projector::rebuilds::requeue_orphaned(pool).await? > 0 {
        tracing::warn!(
            projection.name = PROJECTION_NAME,
            "a rebuild left running by a stopped projector is queued again"
        );
    }
    Ok(version)
}
