//! Where the read API reads: the primary, or a streaming replica (`LEDGER_READ_DATABASE_URL`),
//! and what each answer reflects.
//!
//! Webhooks, the projector and admin routes always use the primary pool; only the finance read
//! routes ask [`ReadPools::choose`]. A replica that fails (refused connection, or a query
//! error) is left alone for [`REPLICA_RETRY_AFTER`], during which reads fall back to the
//! primary or answer 503, as `LEDGER_READ_FALLBACK` says. Every read answer carries the log
//! position it reflects, read from the same server before the answer's own queries (a replica
//! only moves forward, so the answer holds at least that much): see [`Reflected`]. This module
//! never writes.

use deadpool_postgres::Pool;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a failed replica is skipped before reads try it again.
pub const REPLICA_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Longest wait for a replica connection before falling back (a replica that is down but
/// not refusing, say).
pub const REPLICA_WAIT_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest a replica read waits for the primary's head to report its lag; past it the
/// answer goes without `X-Ledger-Replica-Lag-Events`, so a slow or unreachable primary never
/// slows reads the replica can serve.
pub const PRIMARY_HEAD_TIMEOUT: Duration = Duration::from_millis(250);

/// What reads do while the replica is down (`LEDGER_READ_FALLBACK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFallback {
    /// Read from the primary.
    Primary,
    /// Answer 503, keeping every read load off the primary.
    Unavailable,
}

/// Which server answered a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSource {
    Primary,
    Replica,
}

impl ReadSource {
    /// The `X-Ledger-Read-Source` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadSource::Primary => "primary",
            ReadSource::Replica => "replica",
        }
    }
}

/// What a read answer reflects, sent as response headers (see `http::read_headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reflected {
    pub source: ReadSource,
    /// The log head on the answering server before the answer was read: the answer includes
    /// every event up to this position (`X-Ledger-Position`).
    pub position: i64,
    /// The projection checkpoint there, which the read models reflect (`X-Ledger-Checkpoint`).
    pub checkpoint: i64,
    /// Events the replica is behind the primary's head (`X-Ledger-Replica-Lag-Events`); `None`
    /// on the primary, or when the primary did not answer within [`PRIMARY_HEAD_TIMEOUT`].
    pub lag_events: Option<i64>,
}

/// Why no read pool could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The replica is down and `LEDGER_READ_FALLBACK` is `unavailable`.
    #[error("the read replica is unavailable")]
    ReplicaDown,
    /// The chosen server did not answer.
    #[error("the database is unavailable")]
    Database(#[source] anyhow::Error),
}

/// The read API's pools.
pub struct ReadPools {
    primary: Pool,
    replica: Option<Pool>,
    fallback: ReadFallback,
    /// Until when the replica is skipped after a failure.
    replica_down_until: Mutex<Option<Instant>>,
}

impl ReadPools {
    /// Reads from `primary` alone, or from `replica` when given.
    pub fn new(primary: Pool, replica: Option<Pool>, fallback: ReadFallback) -> ReadPools {
        ReadPools {
            primary,
            replica,
            fallback,
            replica_down_until: Mutex::new(None),
        }
    }

    /// The pool this read uses, and what its answer reflects. Errors: the replica is down and
    /// the fallback is `unavailable`, or the primary does not answer.
    pub async fn choose(&self) -> Result<(Pool, Reflected), ReadError> {
        if let Some(replica) = self.replica_up() {
            match position(replica).await {
                Ok((position, checkpoint)) => {
                    let primary_head =
                        tokio::time::timeout(PRIMARY_HEAD_TIMEOUT, position_of(&self.primary));
                    let lag_events = match primary_head.await {
                        Ok(Ok((head, _))) => Some((head - position).max(0)),
                        _ => None,
                    };
                    let reflected = Reflected {
                        source: ReadSource::Replica,
                        position,
                        checkpoint,
                        lag_events,
                    };
                    return Ok((replica.clone(), reflected));
                }
                Err(error) => self.replica_failed(error),
            }
        }
        if self.replica.is_some() && self.fallback == ReadFallback::Unavailable {
            return Err(ReadError::ReplicaDown);
        }
        let (position, checkpoint) = position_of(&self.primary)
            .await
            .map_err(ReadError::Database)?;
        let reflected = Reflected {
            source: ReadSource::Primary,
            position,
            checkpoint,
            lag_events: None,
        };
        Ok((self.primary.clone(), reflected))
    }

    /// The replica, unless none is configured or it failed within [`REPLICA_RETRY_AFTER`].
    fn replica_up(&self) -> Option<&Pool> {
        let replica = self.replica.as_ref()?;
        let mut down_until = self.replica_down_until.lock().expect("not poisoned");
        match *down_until {
            Some(until) if Instant::now() < until => None,
            Some(_) => {
                *down_until = None;
                Some(replica)
            }
            None => Some(replica),
        }
    }

    fn replica_failed(&self, error: anyhow::Error) {
        let mut down_until = self.replica_down_until.lock().expect("not poisoned");
        if down_until.is_none() {
            tracing::warn!(error = format!("{error:#}"), fallback = ?self.fallback,
                retry_after_s = REPLICA_RETRY_AFTER.as_secs(), "read replica unavailable");
        }
        *down_until = Some(Instant::now() + REPLICA_RETRY_AFTER);
    }
}

/// The replica's position, its connection wait bounded by [`REPLICA_WAIT_TIMEOUT`].
async fn position(replica: &Pool) -> anyhow::Result<(i64, i64)> {
    tokio::time::timeout(REPLICA_WAIT_TIMEOUT, position_of(replica))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {REPLICA_WAIT_TIMEOUT:?}"))?
}

/// (log head, projection checkpoint) as `pool`'s server sees them.
async fn position_of(pool: &Pool) -> anyhow::Result<(i64, i64)> {
    let client = pool.get().await?;
    let (head, checkpoint) = crate::store::projector::head_and_checkpoint(&client).await?;
    Ok((head.get(), checkpoint.get()))
}
